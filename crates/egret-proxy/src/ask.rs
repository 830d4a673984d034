//! Asking instead of denying (`--ask`): a connection or request to a destination no rule
//! decides (the policy's default deny, or a host outside `allowed_hosts`) is held while
//! someone is asked. The proxy only holds and waits: who is asked, for how long, and what an
//! approval changes beyond the one connection or request (the policy of the run, the policy
//! file) is the [`Asker`]'s business (egret-app implements it).
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// What is asked about: a destination, with the request when it is known (plain or
/// intercepted HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Host name or IP literal.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// HTTP method, when asked about a request.
    pub method: Option<String>,
    /// HTTP path (query masked), when asked about a request.
    pub path: Option<String>,
}

/// Who decided a connection or request (the audit event's `decided_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// The policy, without asking anyone.
    Policy,
    /// A person at egret's controlling terminal.
    Terminal,
    /// A supervisor through the admin API (`egret ctl approve|deny`).
    Admin,
    /// Nobody answered within `--ask-timeout`: denied.
    Timeout,
}

impl DecidedBy {
    /// The audit label.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Policy => "policy",
            DecidedBy::Terminal => "terminal",
            DecidedBy::Admin => "admin",
            DecidedBy::Timeout => "timeout",
        }
    }
}

/// The answer to a [`Question`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Whether the connection or request may go on.
    pub allow: bool,
    /// Who said so.
    pub by: DecidedBy,
}

/// Whoever answers questions about undecided destinations.
pub trait Asker: Send + Sync + 'static {
    /// Ask, and resolve with the answer (a deny at the latest when the asker's timeout ends).
    fn ask(&self, question: Question) -> BoxFuture<'static, Answer>;
}

impl crate::Proxy {
    /// Ask about `host:port` (and the request, when known) if asking is on; `None` when it is
    /// not, so the caller's denial stands as the policy's.
    pub(crate) async fn ask(
        &self,
        host: &str,
        port: u16,
        request: Option<(&str, &str)>,
    ) -> Option<Answer> {
        let asker = self.asker.as_ref()?;
        let question = Question {
            host: Arc::from(host),
            port,
            method: request.map(|(m, _)| m.to_string()),
            path: request.map(|(_, p)| crate::audit::mask_query(p).into_owned()),
        };
        Some(asker.ask(question).await)
    }
}

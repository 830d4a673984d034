//! `--ask` over the admin API: the questions a running egret holds connections for, and the
//! supervisor's answers (`GET /v1/pending`, `POST /v1/pending/{id}/approve?scope=…`,
//! `POST /v1/pending/{id}/deny`; `egret ctl pending|approve|deny`).
use serde::{Deserialize, Serialize};

/// How far an approval reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AskScope {
    /// The one connection or request.
    Once,
    /// The host, until egret exits (added to the running policy).
    Run,
    /// The host, for good: also written into the policy file.
    Always,
}

impl AskScope {
    /// The query value (`?scope=`).
    pub fn as_str(self) -> &'static str {
        match self {
            AskScope::Once => "once",
            AskScope::Run => "run",
            AskScope::Always => "always",
        }
    }

    /// From the query value.
    pub fn parse(s: &str) -> Option<AskScope> {
        match s {
            "once" => Some(AskScope::Once),
            "run" => Some(AskScope::Run),
            "always" => Some(AskScope::Always),
            _ => None,
        }
    }
}

/// One held connection or request, waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingQuestion {
    /// What `approve` and `deny` name.
    pub id: u64,
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// HTTP method, when a request is held (else `null`).
    pub method: Option<String>,
    /// HTTP path with the query masked, when a request is held (else `null`).
    pub path: Option<String>,
}

/// `GET /v1/pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingList {
    /// Oldest first.
    pub pending: Vec<PendingQuestion>,
}

/// The answer to `approve` / `deny`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decided {
    /// The question.
    pub id: u64,
    /// `approved` or `denied`.
    pub decision: String,
    /// The approval's scope (`null` for a denial).
    pub scope: Option<AskScope>,
}

//! The boundary between the admin API and the running proxy: the [`Control`] trait egret-app
//! implements, the [`Change`]s it is asked to apply, and the read-only views it hands back.
//!
//! This crate never touches the proxy itself; everything it knows about the running policy comes
//! through these types, which keeps the HTTP layer testable with a mock.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use egret_policy::{
    BindingConfig, HandlerConfig, PolicyConfig, PolicyError, RouteConfig, RuntimeLayer,
};
use serde::{Deserialize, Deserializer, Serialize};

/// A boxed, `Send` future: what [`Control`]'s async methods return so the trait stays usable as
/// `Arc<dyn Control>` (async fns in traits are not dyn-compatible).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the admin server needs from the running proxy.
///
/// # Concurrency
/// The server handles connections concurrently and calls [`Control::apply`] and
/// [`Control::upload_module`] without any locking of its own: two admins (or one script running
/// commands in parallel) may have two changes in flight at once. **Serialising changes is the
/// implementation's job**: validate and swap under one lock (or a single writer task), and check
/// `if_generation` inside that same critical section so that the precondition is atomic with the
/// swap. The read methods (`status`, `policy`, ...) are synchronous and should be cheap (an
/// `ArcSwap` load, a counter read).
pub trait Control: Send + Sync + 'static {
    /// Identity, generation, uptime and counters for `GET /v1/status`.
    fn status(&self) -> Status;

    /// The policy in force for `GET /v1/policy` (secret names only, never values).
    fn policy(&self) -> PolicyView;

    /// Validates `change` and, if valid, swaps it in atomically, returning the new generation.
    ///
    /// `if_generation` is the client's precondition: when `Some(n)` and the current generation
    /// is not `n`, nothing changes and the result is [`ControlError::Conflict`]. An invalid
    /// change must leave the old policy in force and answer [`ControlError::Invalid`] listing
    /// every problem.
    fn apply(
        &self,
        change: Change,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>>;

    /// Stores (and typically precompiles) a handler module under `name`, referenced from a
    /// handler as `module = "uploaded:NAME"`. Replacing a module that a handler uses should
    /// recompile that handler, i.e. behave like a change.
    fn upload_module(
        &self,
        name: String,
        bytes: Bytes,
    ) -> BoxFuture<'_, Result<ModuleInfo, ControlError>>;

    /// The uploaded modules.
    fn modules(&self) -> Vec<ModuleInfo>;

    /// The per-sandbox CA certificate, PEM.
    fn ca_pem(&self) -> String;

    /// Prometheus text exposition (format 0.0.4), produced by egret-app's registry.
    fn metrics(&self) -> String;

    /// A feed of audit events, one JSON object per item (no trailing newline), for `ctl tail`.
    /// `None` when this process does not publish them.
    fn subscribe_audit(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>>;

    /// `--ask`: the questions connections are held for, oldest first (none when egret does
    /// not ask).
    fn pending(&self) -> Vec<crate::ask::PendingQuestion> {
        Vec::new()
    }

    /// Answer question `id`: approve with a scope, or deny (`None`). `NotFound` when it is not
    /// pending (answered, timed out, or egret does not ask).
    fn decide(
        &self,
        id: u64,
        approve: Option<crate::ask::AskScope>,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        let _ = approve;
        Box::pin(async move {
            Err(ControlError::NotFound(format!(
                "no pending question {id}: egret runs without --ask"
            )))
        })
    }

    /// Loads `policy` as the shadow candidate (replacing any other, with an empty report),
    /// validated exactly like [`Change::ReplacePolicy`]; an invalid one is refused with every
    /// problem and nothing changes. The live policy and its generation stay. The default
    /// answers that this server has no shadow support.
    fn shadow_load(
        &self,
        policy: PolicyConfig,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        let _ = (policy, if_generation);
        Box::pin(async { Err(crate::shadow::no_shadow()) })
    }

    /// The shadow candidate's report ([`crate::shadow::no_shadow`] when none is loaded).
    fn shadow_report(&self) -> Result<crate::shadow::ShadowView, ControlError> {
        Err(crate::shadow::no_shadow())
    }

    /// Makes the candidate the live policy, atomically and as the next generation, like
    /// [`Change::ReplacePolicy`], and removes it.
    fn shadow_promote(
        &self,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        let _ = if_generation;
        Box::pin(async { Err(crate::shadow::no_shadow()) })
    }

    /// Removes the candidate, answering its last report.
    fn shadow_drop(&self) -> BoxFuture<'_, Result<crate::shadow::ShadowView, ControlError>> {
        Box::pin(async { Err(crate::shadow::no_shadow()) })
    }
}

/// One change to the running policy. Each admin endpoint that mutates maps to exactly one.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Sets (`Some`) or clears (`None`) the runtime catch-all handler (`setOutboundHandler`).
    SetOutbound(Option<BindingConfig>),
    /// Adds runtime per-host routes; a runtime route with the same host pattern is replaced.
    SetOutboundByHost(Vec<RouteConfig>),
    /// Removes the runtime routes for these host patterns.
    RemoveOutboundByHost(Vec<String>),
    /// Edits `allowed_hosts`: `remove` first, then `add`.
    AllowedHosts {
        /// Patterns to add.
        add: Vec<String>,
        /// Patterns to remove.
        remove: Vec<String>,
    },
    /// Edits `denied_hosts`: `remove` first, then `add`.
    DeniedHosts {
        /// Patterns to add.
        add: Vec<String>,
        /// Patterns to remove.
        remove: Vec<String>,
    },
    /// Sets the `internet` flag (default egress when no rule matches).
    SetInternet(bool),
    /// Defines or replaces a named handler. `config.module` is a path or `uploaded:NAME`.
    SetHandler {
        /// Handler name.
        name: String,
        /// Its configuration.
        config: Box<HandlerConfig>,
    },
    /// Removes a named handler (refused while a route or catch-all still uses it).
    RemoveHandler(String),
    /// Sets a secret's value (held by the egret process only).
    SetSecret {
        /// Secret name as referenced by handler grants.
        name: String,
        /// The value; redacted in `Debug`, never serialised.
        value: SecretValue,
    },
    /// Forgets a runtime secret.
    RemoveSecret(String),
    /// Replaces the whole static policy (the runtime layer stays).
    ReplacePolicy(Box<PolicyConfig>),
}

impl Change {
    /// A short stable name for logs and metrics (never includes values).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::SetOutbound(Some(_)) => "set_outbound",
            Change::SetOutbound(None) => "clear_outbound",
            Change::SetOutboundByHost(_) => "set_outbound_by_host",
            Change::RemoveOutboundByHost(_) => "remove_outbound_by_host",
            Change::AllowedHosts { .. } => "allowed_hosts",
            Change::DeniedHosts { .. } => "denied_hosts",
            Change::SetInternet(_) => "set_internet",
            Change::SetHandler { .. } => "set_handler",
            Change::RemoveHandler(_) => "remove_handler",
            Change::SetSecret { .. } => "set_secret",
            Change::RemoveSecret(_) => "remove_secret",
            Change::ReplacePolicy(_) => "replace_policy",
        }
    }
}

/// A secret value. `Debug` prints `SecretValue(<redacted>)`; there is deliberately no
/// `Serialize`, `Display` or `PartialEq` against strings, so a value cannot leak into a
/// response, a log line or an error by accident. Read it with [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The value in clear; call only where it is handed to the handler host.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretValue)
    }
}

/// The outcome of an accepted change; also the JSON body of every successful mutation:
/// `{"generation": 8, "warnings": []}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// Generation of the policy now in force.
    pub generation: u64,
    /// Things that are allowed but probably not intended (e.g. a granted secret with no value
    /// yet). Empty when all is well.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Why a change was refused. Each variant maps to one stable error code and HTTP status:
///
/// | variant    | code             | status |
/// |------------|------------------|--------|
/// | `Invalid`  | `invalid_policy` | 422    |
/// | `Conflict` | `conflict`       | 409    |
/// | `NotFound` | `not_found`      | 404    |
/// | `Internal` | `internal`       | 500    |
///
/// Messages must never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The change would produce an invalid policy; the old one stays in force.
    #[error("invalid change ({} problem{})", .problems.len(), if .problems.len() == 1 { "" } else { "s" })]
    Invalid {
        /// Every problem found, each saying where and what to fix.
        problems: Vec<String>,
    },
    /// The `if-generation` precondition failed.
    #[error("the policy is at generation {current}, not {expected}")]
    Conflict {
        /// The generation the client asked for.
        expected: u64,
        /// The generation actually in force.
        current: u64,
    },
    /// The thing to change or remove does not exist (handler, secret, route, module).
    #[error("{0}")]
    NotFound(String),
    /// Anything else (I/O, compilation crashed, ...).
    #[error("{0}")]
    Internal(String),
}

impl From<PolicyError> for ControlError {
    /// Lets the implementor `?` a policy compile error: every problem becomes one line.
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(problems) => ControlError::Invalid {
                problems: problems.iter().map(ToString::to_string).collect(),
            },
            e @ PolicyError::Parse { .. } => ControlError::Invalid {
                problems: vec![e.to_string()],
            },
            PolicyError::Serialize(m) => ControlError::Internal(m),
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The sandbox this egret serves (`--sandbox-id`).
    pub sandbox_id: String,
    /// Generation of the policy in force.
    pub generation: u64,
    /// Seconds since the process started.
    pub uptime_secs: u64,
    /// Named counters (requests, denied, errors, connections, ...), chosen by egret-app.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// `GET /v1/policy`: the policy in force, as two layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyView {
    /// Generation of the policy in force.
    pub generation: u64,
    /// The static layer: the policy file as loaded (or last replaced), with the admin's edits
    /// to `allowed_hosts`, `denied_hosts`, `internet` and `handlers` applied. Its `secrets`
    /// table names sources (env var, file), never values.
    pub policy: PolicyConfig,
    /// The runtime layer (catch-all and per-host routes set through the API), consulted
    /// before the static one.
    #[serde(default)]
    pub runtime: RuntimeLayer,
    /// Names of every secret that has a value (file sources and runtime `secret set`), sorted.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// An uploaded handler module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleInfo {
    /// Name it was uploaded under (`uploaded:NAME` in a handler's `module`).
    pub name: String,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was loaded, seconds since the Unix epoch (UTC).
    pub loaded_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_value_is_redacted_everywhere_it_can_be_printed() {
        let c = Change::SetSecret {
            name: "TOKEN".into(),
            value: SecretValue::new("hunter2"),
        };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("TOKEN"));
        assert_eq!(c.kind(), "set_secret");
    }

    #[test]
    fn policy_errors_convert() {
        let e = PolicyConfig::from_toml("bogus = 1", "p.toml").unwrap_err();
        let ControlError::Invalid { problems } = ControlError::from(e) else {
            panic!()
        };
        assert!(problems[0].contains("p.toml:1:1"), "{problems:?}");
    }
}

//! Routing: method and path to the operation asked for, and the query strings that refine
//! some of them.
//!
//! Paths are matched as received, before any decoding, so a name segment can never become
//! `..` or a second segment: a percent-escape in a name is refused as an invalid name. Every
//! refusal says what would have been accepted (the endpoint list on a 404, the `allow` header
//! on a 405), since the client is often a person at `egret ctl` or curl.

use http::Method;

use super::Rejection;
use crate::api::{is_valid_name, percent_decode, AuditFilter, ErrorCode};

/// The endpoint and method, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Health,
    Status,
    GetPolicy,
    PutPolicy,
    SetOutbound,
    ClearOutbound,
    SetOutboundByHost,
    RemoveOutboundByHost,
    AllowedHosts,
    DeniedHosts,
    Internet,
    SetHandler(String),
    RemoveHandler(String),
    Modules,
    UploadModule(String),
    Secrets,
    SetSecret(String),
    RemoveSecret(String),
    Ca,
    Metrics,
    Audit,
    Pending,
    Approve(u64),
    Deny(u64),
    Shadow(ShadowOp),
}

/// What a shadow request asks for, before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShadowOp {
    Load,
    Report,
    Promote,
    Drop,
}

/// The endpoints, as listed in a `not_found` answer.
const ENDPOINTS: &[&str] = &[
    "GET /v1/health",
    "GET /v1/status",
    "GET|PUT /v1/policy",
    "GET|PUT|DELETE /v1/policy/shadow",
    "POST /v1/policy/shadow/promote",
    "PUT|DELETE /v1/outbound",
    "PUT|DELETE /v1/outbound-by-host",
    "POST /v1/allowed-hosts",
    "POST /v1/denied-hosts",
    "PUT /v1/internet",
    "PUT|DELETE /v1/handlers/{name}",
    "GET /v1/modules",
    "PUT /v1/modules/{name}",
    "GET /v1/secrets",
    "PUT|DELETE /v1/secrets/{name}",
    "GET /v1/ca",
    "GET /v1/metrics",
    "GET /metrics",
    "GET /v1/audit?sandbox=ID&deny_only=true",
    "GET /v1/pending",
    "POST /v1/pending/{id}/approve?scope=once|run|always",
    "POST /v1/pending/{id}/deny",
];

/// An endpoint, with the name in its path where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Health,
    Status,
    Policy,
    Outbound,
    OutboundByHost,
    AllowedHosts,
    DeniedHosts,
    Internet,
    Handler(&'a str),
    Modules,
    Module(&'a str),
    Secrets,
    Secret(&'a str),
    Ca,
    Metrics,
    Audit,
    Pending,
    Decide(u64, bool),
    Shadow,
    ShadowPromote,
}

impl Route<'_> {
    /// The methods the endpoint takes, as in an `allow` header.
    fn allow(self) -> &'static str {
        match self {
            Route::Health
            | Route::Status
            | Route::Modules
            | Route::Secrets
            | Route::Ca
            | Route::Metrics
            | Route::Audit
            | Route::Pending => "GET",
            Route::Decide(..) => "POST",
            Route::Policy => "GET, PUT",
            Route::Outbound | Route::OutboundByHost | Route::Handler(_) | Route::Secret(_) => {
                "PUT, DELETE"
            }
            Route::AllowedHosts | Route::DeniedHosts => "POST",
            Route::Internet | Route::Module(_) => "PUT",
            Route::Shadow => "GET, PUT, DELETE",
            Route::ShadowPromote => "POST",
        }
    }

    /// The operation `method` asks for on this endpoint; `path` is only shown in the refusal.
    pub(super) fn operation(self, method: &Method, path: &str) -> Result<Op, Rejection> {
        let m = method;
        let named = |n: &str| n.to_owned();
        let op = match self {
            Route::Health if m == Method::GET => Op::Health,
            Route::Status if m == Method::GET => Op::Status,
            Route::Policy if m == Method::GET => Op::GetPolicy,
            Route::Policy if m == Method::PUT => Op::PutPolicy,
            Route::Outbound if m == Method::PUT => Op::SetOutbound,
            Route::Outbound if m == Method::DELETE => Op::ClearOutbound,
            Route::OutboundByHost if m == Method::PUT => Op::SetOutboundByHost,
            Route::OutboundByHost if m == Method::DELETE => Op::RemoveOutboundByHost,
            Route::AllowedHosts if m == Method::POST => Op::AllowedHosts,
            Route::DeniedHosts if m == Method::POST => Op::DeniedHosts,
            Route::Internet if m == Method::PUT => Op::Internet,
            Route::Handler(n) if m == Method::PUT => Op::SetHandler(named(n)),
            Route::Handler(n) if m == Method::DELETE => Op::RemoveHandler(named(n)),
            Route::Modules if m == Method::GET => Op::Modules,
            Route::Module(n) if m == Method::PUT => Op::UploadModule(named(n)),
            Route::Secrets if m == Method::GET => Op::Secrets,
            Route::Secret(n) if m == Method::PUT => Op::SetSecret(named(n)),
            Route::Secret(n) if m == Method::DELETE => Op::RemoveSecret(named(n)),
            Route::Ca if m == Method::GET => Op::Ca,
            Route::Metrics if m == Method::GET => Op::Metrics,
            Route::Audit if m == Method::GET => Op::Audit,
            Route::Pending if m == Method::GET => Op::Pending,
            Route::Decide(id, true) if m == Method::POST => Op::Approve(id),
            Route::Decide(id, false) if m == Method::POST => Op::Deny(id),
            Route::Shadow if m == Method::PUT => Op::Shadow(ShadowOp::Load),
            Route::Shadow if m == Method::GET => Op::Shadow(ShadowOp::Report),
            Route::Shadow if m == Method::DELETE => Op::Shadow(ShadowOp::Drop),
            Route::ShadowPromote if m == Method::POST => Op::Shadow(ShadowOp::Promote),
            _ => {
                let mut f = Rejection::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{m} is not allowed on {path}; allowed: {}", self.allow()),
                );
                f.allow = Some(self.allow());
                return Err(f);
            }
        };
        Ok(op)
    }
}

/// The endpoint `path` names: the URI's path as received (not decoded, so a percent-escape
/// in a name is refused, never decoded into `..`).
pub(super) fn route(path: &str) -> Result<Route<'_>, Rejection> {
    let not_found = || {
        // The path comes from the client: echo it only when it is short and printable.
        let shown = if path.len() <= 200 && path.bytes().all(|b| b.is_ascii_graphic()) {
            path
        } else {
            "(path not shown)"
        };
        let mut f = Rejection::new(
            ErrorCode::NotFound,
            format!("no such endpoint: {shown}; see the endpoints listed here"),
        );
        f.error.endpoints = ENDPOINTS.iter().map(|s| (*s).to_owned()).collect();
        f
    };
    if path == "/metrics" {
        return Ok(Route::Metrics);
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(not_found());
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let r = match segs.as_slice() {
        ["health"] => Route::Health,
        ["status"] => Route::Status,
        ["policy"] => Route::Policy,
        ["policy", "shadow"] => Route::Shadow,
        ["policy", "shadow", "promote"] => Route::ShadowPromote,
        ["outbound"] => Route::Outbound,
        ["outbound-by-host"] => Route::OutboundByHost,
        ["allowed-hosts"] => Route::AllowedHosts,
        ["denied-hosts"] => Route::DeniedHosts,
        ["internet"] => Route::Internet,
        ["modules"] => Route::Modules,
        ["secrets"] => Route::Secrets,
        ["ca"] => Route::Ca,
        ["metrics"] => Route::Metrics,
        ["audit"] => Route::Audit,
        ["pending"] => Route::Pending,
        ["pending", id, verb @ ("approve" | "deny")] => match id.parse::<u64>() {
            Ok(id) => Route::Decide(id, *verb == "approve"),
            Err(_) => {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    "the question id in /v1/pending/{id}/… is a number (see GET /v1/pending)",
                ))
            }
        },
        [kind @ ("handlers" | "modules" | "secrets"), name] => {
            if !is_valid_name(name) {
                let mut f = Rejection::new(
                    ErrorCode::InvalidName,
                    format!(
                        "invalid {} name in the path: names are 1-64 characters of A-Z a-z 0-9 _ . - and not \".\" or \"..\"",
                        kind.trim_end_matches('s')
                    ),
                );
                // Echo the name only when it is printable and short: it comes from the client.
                if name.len() <= 80 && name.bytes().all(|b| b.is_ascii_graphic()) {
                    f.error.problems = vec![format!("{kind}/{name}")];
                }
                return Err(f);
            }
            match *kind {
                "handlers" => Route::Handler(name),
                "modules" => Route::Module(name),
                _ => Route::Secret(name),
            }
        }
        _ => return Err(not_found()),
    };
    Ok(r)
}

/// `key=value` pairs of a query string, values percent-decoded (`None` where that fails).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.to_owned(), percent_decode(v))
    })
}

/// `POST /v1/pending/{id}/approve`'s query: the scope (`once` when not given).
pub(super) fn scope_query(query: &str) -> Result<crate::ask::AskScope, Rejection> {
    let mut scope = crate::ask::AskScope::Once;
    for (k, v) in query_pairs(query) {
        match (
            k.as_str(),
            v.as_deref().and_then(crate::ask::AskScope::parse),
        ) {
            ("scope", Some(s)) => scope = s,
            _ => {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    "the only query is scope=once|run|always",
                ))
            }
        }
    }
    Ok(scope)
}

/// `GET /v1/policy`'s query: whether TOML was asked for.
pub(super) fn policy_query(query: &str) -> Result<bool, Rejection> {
    let mut toml = false;
    for (k, v) in query_pairs(query) {
        match (k.as_str(), v.as_deref()) {
            ("format", Some("toml")) => toml = true,
            ("format", Some("json")) => toml = false,
            _ => {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    "unknown query parameter; the only one is format=json|toml",
                ))
            }
        }
    }
    Ok(toml)
}

/// `GET /v1/audit`'s query: which events to follow.
pub(super) fn audit_query(query: &str) -> Result<AuditFilter, Rejection> {
    let mut filter = AuditFilter::default();
    for (k, v) in query_pairs(query) {
        match (k.as_str(), v) {
            ("sandbox", Some(s)) if !s.is_empty() => filter.sandbox = Some(s),
            ("deny_only", Some(v)) if v == "true" || v == "1" => filter.deny_only = true,
            ("deny_only", Some(v)) if v == "false" || v == "0" => filter.deny_only = false,
            _ => {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    "bad query parameter; valid: sandbox=ID, deny_only=true|false",
                ))
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v1/health").unwrap(), Route::Health);
        assert_eq!(route("/metrics").unwrap(), Route::Metrics);
        assert_eq!(route("/v1/handlers/x").unwrap(), Route::Handler("x"));
        assert_eq!(route("/v1/modules").unwrap(), Route::Modules);
        assert_eq!(route("/v1/policy/shadow").unwrap(), Route::Shadow);
        assert_eq!(
            route("/v1/policy/shadow/promote").unwrap(),
            Route::ShadowPromote
        );
        assert_eq!(
            Route::ShadowPromote
                .operation(&Method::GET, "/v1/policy/shadow/promote")
                .unwrap_err()
                .allow,
            Some("POST")
        );
        assert_eq!(
            route("/v1/modules/m.wasm").unwrap(),
            Route::Module("m.wasm")
        );
        for bad in [
            "/v1/handlers/..",
            "/v1/secrets/.",
            "/v1/modules/%2e%2e",
            "/v1/secrets/",
        ] {
            assert_eq!(
                route(bad).unwrap_err().error.code,
                ErrorCode::InvalidName,
                "{bad}"
            );
        }
        for missing in ["/", "/v2/health", "/v1/handlers/a/b", "/v1/nope", "/v1"] {
            let f = route(missing).unwrap_err();
            assert_eq!(f.error.code, ErrorCode::NotFound, "{missing}");
            assert!(!f.error.endpoints.is_empty());
        }
    }
}

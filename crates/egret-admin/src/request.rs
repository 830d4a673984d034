//! Request parsing and validation, kept free of I/O so that the server and the fuzzer
//! (`fuzz/fuzz_targets/admin_request.rs`) run the same code: method and path routing (names in
//! paths, `..`, percent-escapes), the `if-generation` precondition, query strings and every
//! endpoint's body. What needs the running proxy (the precondition check, the change itself) is
//! left to [`Control`](crate::Control).
//!
//! The server calls [`parse_head`] once the headers are in, reads at most
//! [`BodyKind::limit`] bytes of body, then calls [`RequestHead::command`];
//! [`parse_request`] does the three steps on a request already in memory.

use bytes::Bytes;
use egret_policy::{BindingConfig, HandlerConfig, PolicyConfig, PolicyError};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{
    is_valid_name, percent_decode, ApiError, AuditFilter, ErrorCode, HostListChange,
    InternetRequest, OutboundByHostRequest, RemoveHostsRequest, SecretRequest, IF_GENERATION,
};
use crate::control::{Change, ControlError};
use crate::server::ServerOptions;

/// A refused request: the status, the JSON error body and how to answer.
#[derive(Debug)]
pub struct Rejection {
    /// HTTP status (normally `error.code.status()`; 400 for a TOML parse error, 408 for a body
    /// timeout).
    pub status: StatusCode,
    /// The `error` object of the answer. Boxed: the error path is cold and this keeps every
    /// `Result<_, Rejection>` small.
    pub error: Box<ApiError>,
    /// The `allow` header of a `405`.
    pub allow: Option<&'static str>,
    /// Whether the connection must be closed afterwards (the body was not drained).
    pub close: bool,
}

impl Rejection {
    /// A rejection with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            status: code.status(),
            error: Box::new(ApiError::new(code, message)),
            allow: None,
            close: false,
        }
    }

    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<ControlError> for Rejection {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid { problems } => {
                let mut f = Rejection::new(
                    ErrorCode::InvalidPolicy,
                    format!(
                        "the change was refused and the previous policy stays in force; fix {}",
                        if problems.len() == 1 {
                            "this problem"
                        } else {
                            "these problems"
                        }
                    ),
                );
                f.error.problems = problems;
                f
            }
            ControlError::Conflict { expected, current } => {
                let mut f = Rejection::new(
                    ErrorCode::Conflict,
                    format!(
                        "the policy is at generation {current}, not {expected} as required by if-generation; re-read it (GET /v1/policy) and retry"
                    ),
                );
                f.error.expected = Some(expected);
                f.error.current = Some(current);
                f
            }
            ControlError::NotFound(m) => Rejection::new(ErrorCode::NotFound, m),
            ControlError::Internal(m) => Rejection::new(ErrorCode::Internal, m),
        }
    }
}

/// What one admin request asks for, validated as far as is possible without the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `GET /v1/health`.
    Health,
    /// `GET /v1/status`.
    Status,
    /// `GET /v1/policy`, as TOML when `toml`.
    GetPolicy {
        /// `?format=toml`.
        toml: bool,
    },
    /// Every mutating endpoint but module uploads: one change under an optional precondition.
    Apply {
        /// The change.
        change: Change,
        /// The `if-generation` header.
        if_generation: Option<u64>,
    },
    /// `PUT /v1/modules/{name}`: the bytes start with `\0asm` and are within the limit.
    UploadModule {
        /// Module name (a valid name).
        name: String,
        /// The module's bytes.
        bytes: Bytes,
        /// The `if-generation` header (advisory for uploads).
        if_generation: Option<u64>,
    },
    /// `GET /v1/modules`.
    Modules,
    /// `GET /v1/secrets`.
    Secrets,
    /// `GET /v1/ca`.
    Ca,
    /// `GET /metrics`, `GET /v1/metrics`.
    Metrics,
    /// `GET /v1/audit`.
    Audit(AuditFilter),
}

/// Which body an endpoint reads, and so which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// None: the body, if any, is ignored and never read.
    None,
    /// JSON or TOML, at most [`ServerOptions::json_body_limit`].
    Text,
    /// A module upload, at most [`ServerOptions::module_body_limit`].
    Module,
}

impl BodyKind {
    /// The largest body accepted, 0 for [`BodyKind::None`].
    pub fn limit(self, opts: &ServerOptions) -> usize {
        match self {
            BodyKind::None => 0,
            BodyKind::Text => opts.json_body_limit,
            BodyKind::Module => opts.module_body_limit,
        }
    }
}

/// The endpoint and method, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
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
}

/// A request whose method, path and headers are valid; the body is still to be read.
#[derive(Debug, Clone)]
pub struct RequestHead {
    op: Op,
    query: String,
    if_generation: Option<u64>,
    toml: Option<bool>,
}

impl RequestHead {
    /// Which body to read for this request.
    pub fn body_kind(&self) -> BodyKind {
        match self.op {
            Op::PutPolicy
            | Op::SetOutbound
            | Op::SetOutboundByHost
            | Op::RemoveOutboundByHost
            | Op::AllowedHosts
            | Op::DeniedHosts
            | Op::Internet
            | Op::SetHandler(_)
            | Op::SetSecret(_) => BodyKind::Text,
            Op::UploadModule(_) => BodyKind::Module,
            _ => BodyKind::None,
        }
    }

    /// Validates the body (and the query) and says what to do. The body's size is the
    /// caller's to bound ([`BodyKind::limit`]).
    pub fn command(self, body: Bytes) -> Result<Command, Rejection> {
        let ifg = self.if_generation;
        let apply = |change| {
            Ok(Command::Apply {
                change,
                if_generation: ifg,
            })
        };
        match self.op {
            Op::Health => Ok(Command::Health),
            Op::Status => Ok(Command::Status),
            Op::GetPolicy => policy_query(&self.query).map(|toml| Command::GetPolicy { toml }),
            Op::PutPolicy => apply(Change::ReplacePolicy(Box::new(parse_policy(
                &body, self.toml,
            )?))),
            Op::SetOutbound => apply(Change::SetOutbound(Some(parse_json::<BindingConfig>(
                &body,
            )?))),
            Op::ClearOutbound => apply(Change::SetOutbound(None)),
            Op::SetOutboundByHost => {
                let b: OutboundByHostRequest = parse_json(&body)?;
                if b.routes.is_empty() {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "routes is empty; give at least one {\"hosts\": [...], \"handler\": \"...\"}",
                    ));
                }
                apply(Change::SetOutboundByHost(b.routes))
            }
            Op::RemoveOutboundByHost => {
                let b: RemoveHostsRequest = parse_json(&body)?;
                if b.hosts.is_empty() {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "hosts is empty; name the host patterns whose routes to remove",
                    ));
                }
                apply(Change::RemoveOutboundByHost(b.hosts))
            }
            op @ (Op::AllowedHosts | Op::DeniedHosts) => {
                let b: HostListChange = parse_json(&body)?;
                if b.add.is_empty() && b.remove.is_empty() {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "nothing to change: give \"add\" and/or \"remove\" host patterns",
                    ));
                }
                let (add, remove) = (b.add, b.remove);
                apply(if op == Op::AllowedHosts {
                    Change::AllowedHosts { add, remove }
                } else {
                    Change::DeniedHosts { add, remove }
                })
            }
            Op::Internet => {
                let b: InternetRequest = parse_json(&body)?;
                apply(Change::SetInternet(b.enabled))
            }
            Op::SetHandler(name) => {
                let config: HandlerConfig = parse_json(&body)?;
                apply(Change::SetHandler { name, config })
            }
            Op::RemoveHandler(name) => apply(Change::RemoveHandler(name)),
            Op::Modules => Ok(Command::Modules),
            Op::UploadModule(name) => {
                if !body.starts_with(b"\0asm") {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "the body is not a WebAssembly module (it must start with \\0asm); send the .wasm file's bytes with content-type application/wasm",
                    ));
                }
                Ok(Command::UploadModule {
                    name,
                    bytes: body,
                    if_generation: ifg,
                })
            }
            Op::Secrets => Ok(Command::Secrets),
            Op::SetSecret(name) => {
                let b = parse_secret(&body)?;
                apply(Change::SetSecret {
                    name,
                    value: b.value,
                })
            }
            Op::RemoveSecret(name) => apply(Change::RemoveSecret(name)),
            Op::Ca => Ok(Command::Ca),
            Op::Metrics => Ok(Command::Metrics),
            Op::Audit => audit_query(&self.query).map(Command::Audit),
        }
    }
}

/// Routes a request by method and path and reads its headers. `path` is the URI's path as
/// received (not decoded: a percent-escape in a name is refused, never decoded into `..`).
pub fn parse_head(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<RequestHead, Rejection> {
    let r = route(path)?;
    let if_generation = if_generation(headers)?;
    let m = method;
    let named = |n: &str| n.to_owned();
    let op = match r {
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
        _ => {
            let mut f = Rejection::new(
                ErrorCode::MethodNotAllowed,
                format!("{m} is not allowed on {path}; allowed: {}", r.allow()),
            );
            f.allow = Some(r.allow());
            return Err(f);
        }
    };
    Ok(RequestHead {
        op,
        query: query.unwrap_or("").to_owned(),
        if_generation,
        toml: is_toml(headers),
    })
}

/// [`parse_head`], the size limit and [`RequestHead::command`] on a request held in memory.
pub fn parse_request(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    opts: &ServerOptions,
) -> Result<Command, Rejection> {
    let head = parse_head(method, path, query, headers)?;
    let kind = head.body_kind();
    let body = match kind {
        BodyKind::None => Bytes::new(),
        _ if body.len() > kind.limit(opts) => return Err(payload_too_large(kind.limit(opts))),
        _ => Bytes::copy_from_slice(body),
    };
    head.command(body)
}

/// The answer to a body over `limit`; the connection is closed since the rest is not drained.
pub(crate) fn payload_too_large(limit: usize) -> Rejection {
    let mut f = Rejection::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than this endpoint's limit of {limit} bytes"),
    );
    f.close = true;
    f
}

/// The endpoints, as listed in a `not_found` answer.
const ENDPOINTS: &[&str] = &[
    "GET /v1/health",
    "GET /v1/status",
    "GET|PUT /v1/policy",
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
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
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
}

impl Route<'_> {
    fn allow(self) -> &'static str {
        match self {
            Route::Health
            | Route::Status
            | Route::Modules
            | Route::Secrets
            | Route::Ca
            | Route::Metrics
            | Route::Audit => "GET",
            Route::Policy => "GET, PUT",
            Route::Outbound | Route::OutboundByHost | Route::Handler(_) | Route::Secret(_) => {
                "PUT, DELETE"
            }
            Route::AllowedHosts | Route::DeniedHosts => "POST",
            Route::Internet | Route::Module(_) => "PUT",
        }
    }
}

fn route(path: &str) -> Result<Route<'_>, Rejection> {
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

fn if_generation(headers: &HeaderMap) -> Result<Option<u64>, Rejection> {
    let Some(v) = headers.get(IF_GENERATION) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Rejection::new(
                ErrorCode::BadRequest,
                "if-generation must be a non-negative integer (the generation from GET /v1/status)",
            )
        })
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.to_owned(), percent_decode(v))
    })
}

/// `GET /v1/policy`'s query: whether TOML was asked for.
fn policy_query(query: &str) -> Result<bool, Rejection> {
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

fn audit_query(query: &str) -> Result<AuditFilter, Rejection> {
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

fn is_toml(headers: &HeaderMap) -> Option<bool> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(essence == "application/toml" || essence == "text/toml" || essence == "text/x-toml")
}

fn json_failure(e: &serde_json::Error, message: String) -> Rejection {
    let mut f = Rejection::new(ErrorCode::InvalidJson, message);
    f.error.line = Some(e.line().max(1));
    f.error.column = Some(e.column().max(1));
    f
}

/// serde's derived structs also accept the sequence form (`[true]` for `{"enabled": true}`);
/// the API documents objects only, so arrays are refused up front.
fn refuse_array(body: &[u8]) -> Result<(), Rejection> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let mut f = Rejection::new(
            ErrorCode::InvalidJson,
            "expected a JSON object, found an array",
        );
        f.error.line = Some(1);
        f.error.column = Some(1);
        return Err(f);
    }
    Ok(())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    refuse_array(body)?;
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty; this endpoint expects a JSON object".to_owned()
        } else {
            format!("invalid request body: {e}")
        };
        json_failure(&e, what)
    })
}

/// Like [`parse_json`] but never repeats serde's message: for some inputs (a bare string, a
/// value of the wrong type) that message quotes the value, which here is the secret.
fn parse_secret(body: &[u8]) -> Result<SecretRequest, Rejection> {
    refuse_array(body)?;
    serde_json::from_slice(body).map_err(|e| {
        json_failure(
            &e,
            format!(
                "invalid request body ({:?} error); expected {{\"value\": \"...\"}} with a string value and no other field",
                e.classify()
            )
            .to_lowercase(),
        )
    })
}

fn parse_policy(body: &[u8], toml: Option<bool>) -> Result<PolicyConfig, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Rejection::new(ErrorCode::BadRequest, "the policy is not UTF-8 text"))?;
    // Without a content-type, a body starting with `{` is JSON (TOML cannot start with one).
    let toml = toml.unwrap_or_else(|| !text.trim_start().starts_with('{'));
    let parsed = if toml {
        PolicyConfig::from_toml(text, "request body")
    } else {
        PolicyConfig::from_json(text, "request body")
    };
    parsed.map_err(|e| match e {
        PolicyError::Parse {
            line,
            column,
            message,
            hint,
            ..
        } => {
            let code = if toml {
                ErrorCode::InvalidPolicy
            } else {
                ErrorCode::InvalidJson
            };
            let mut f = Rejection::new(
                code,
                format!("invalid policy at line {line} column {column}: {message}"),
            )
            .status(StatusCode::BAD_REQUEST);
            f.error.line = Some(line);
            f.error.column = Some(column);
            f.error.hint = hint;
            f
        }
        other => ControlError::from(other).into(),
    })
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

    #[test]
    fn secret_parse_errors_do_not_quote_the_value() {
        for body in [
            r#""hunter2""#,
            r#"{"value": "hunter2", "x": 1}"#,
            r#"{"value": ["hunter2"]}"#,
        ] {
            let f = parse_secret(body.as_bytes()).unwrap_err();
            let shown = serde_json::to_string(&f.error).unwrap();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert_eq!(f.error.code, ErrorCode::InvalidJson);
        }
    }

    fn req(
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Command, Rejection> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let opts = ServerOptions {
            json_body_limit: 64,
            ..ServerOptions::default()
        };
        parse_request(&method, path, query, &h, body.as_bytes(), &opts)
    }

    #[test]
    fn requests_become_commands() {
        assert_eq!(
            req(
                Method::PUT,
                "/v1/internet",
                &[("if-generation", " 7 ")],
                r#"{"enabled":false}"#
            )
            .unwrap(),
            Command::Apply {
                change: Change::SetInternet(false),
                if_generation: Some(7)
            }
        );
        assert_eq!(
            req(
                Method::GET,
                "/v1/audit?sandbox=agent%2047&deny_only=1",
                &[],
                ""
            )
            .unwrap(),
            Command::Audit(AuditFilter {
                sandbox: Some("agent 47".into()),
                deny_only: true
            })
        );
        assert_eq!(
            req(Method::GET, "/v1/policy?format=toml", &[], "ignored").unwrap(),
            Command::GetPolicy { toml: true }
        );
        assert_eq!(
            req(Method::DELETE, "/v1/outbound", &[], "").unwrap(),
            Command::Apply {
                change: Change::SetOutbound(None),
                if_generation: None
            }
        );
    }

    /// Method, target, headers, body, expected code and status.
    type Case<'a> = (
        Method,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        ErrorCode,
        u16,
    );

    #[test]
    fn refusals_name_the_problem() {
        let cases: &[Case] = &[
            (
                Method::GET,
                "/v1/internet",
                &[],
                "",
                ErrorCode::MethodNotAllowed,
                405,
            ),
            (
                Method::PUT,
                "/v1/internet",
                &[("if-generation", "-1")],
                "",
                ErrorCode::BadRequest,
                400,
            ),
            (
                Method::PUT,
                "/v1/internet",
                &[],
                "[true]",
                ErrorCode::InvalidJson,
                400,
            ),
            (
                Method::PUT,
                "/v1/internet",
                &[],
                r#"{"enabled":true"#,
                ErrorCode::InvalidJson,
                400,
            ),
            (
                Method::POST,
                "/v1/allowed-hosts",
                &[],
                "{}",
                ErrorCode::BadRequest,
                400,
            ),
            (
                Method::PUT,
                "/v1/modules/m",
                &[],
                "PK\u{3}\u{4}zip",
                ErrorCode::BadRequest,
                400,
            ),
            (
                Method::PUT,
                "/v1/policy",
                &[("content-type", "application/toml")],
                "x = ",
                ErrorCode::InvalidPolicy,
                400,
            ),
            (
                Method::PUT,
                "/v1/policy",
                &[],
                &"#".repeat(65),
                ErrorCode::PayloadTooLarge,
                413,
            ),
            (
                Method::GET,
                "/v1/audit?deny_only=maybe",
                &[],
                "",
                ErrorCode::BadRequest,
                400,
            ),
            (
                Method::GET,
                "/v1/audit?sandbox=%e9",
                &[],
                "",
                ErrorCode::BadRequest,
                400,
            ),
            (
                Method::GET,
                "/v1/audit?sandbox=%+1",
                &[],
                "",
                ErrorCode::BadRequest,
                400,
            ),
            (
                Method::DELETE,
                "/v1/handlers/%2e%2e",
                &[],
                "",
                ErrorCode::InvalidName,
                400,
            ),
        ];
        for (m, target, headers, body, code, status) in cases {
            let f = req(m.clone(), target, headers, body).unwrap_err();
            assert_eq!(
                (f.error.code, f.status.as_u16()),
                (*code, *status),
                "{m} {target}"
            );
            assert!(!f.error.message.is_empty());
            assert_eq!(f.allow.is_some(), *code == ErrorCode::MethodNotAllowed);
        }
    }
}

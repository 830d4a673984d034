//! Request parsing and validation, kept free of I/O so that the server and the fuzzer
//! (`fuzz/fuzz_targets/admin_request.rs`) run the same code: method and path routing (names in
//! paths, `..`, percent-escapes), the `if-generation` precondition, query strings and every
//! endpoint's body. What needs the running proxy (the precondition check, the change itself) is
//! left to [`Control`](crate::Control).
//!
//! The server calls [`parse_head`] once the headers are in, reads at most
//! [`BodyKind::limit`] bytes of body, then calls [`RequestHead::command`];
//! [`parse_request`] does the three steps on a request already in memory. Routing and query
//! strings are in `route`, bodies and their limits in `body`.

mod body;
mod route;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};

use crate::api::{ApiError, AuditFilter, ErrorCode, IF_GENERATION};
use crate::control::{Change, ControlError};
use crate::server::ServerOptions;

pub(crate) use body::payload_too_large;
pub use body::BodyKind;
use route::Op;

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
    /// `GET /v1/pending`.
    Pending,
    /// `POST /v1/pending/{id}/approve` (with the scope) or `…/deny` (`None`).
    Decide {
        /// The question.
        id: u64,
        /// The approval's scope; `None` denies.
        approve: Option<crate::ask::AskScope>,
    },
    /// `/v1/policy/shadow[/promote]`: the shadow candidate.
    Shadow {
        /// What to do with it.
        op: crate::shadow::ShadowOp,
        /// The `if-generation` header (loading and promoting check it).
        if_generation: Option<u64>,
    },
}

/// A request whose method, path and headers are valid; the body is still to be read.
#[derive(Debug, Clone)]
pub struct RequestHead {
    op: Op,
    query: String,
    if_generation: Option<u64>,
    toml: Option<bool>,
}

/// Routes a request by method and path and reads its headers. `path` is the URI's path as
/// received (not decoded: a percent-escape in a name is refused, never decoded into `..`).
pub fn parse_head(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<RequestHead, Rejection> {
    let route = route::route(path)?;
    let if_generation = if_generation(headers)?;
    let op = route.operation(method, path)?;
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

/// The `if-generation` precondition, if given.
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

/// Whether the content-type names TOML; `None` without a readable content-type.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pending_questions_are_listed_and_answered() {
        use crate::ask::AskScope;
        assert_eq!(
            req(Method::GET, "/v1/pending", &[], "").unwrap(),
            Command::Pending
        );
        assert_eq!(
            req(Method::POST, "/v1/pending/3/approve?scope=run", &[], "").unwrap(),
            Command::Decide {
                id: 3,
                approve: Some(AskScope::Run)
            }
        );
        assert_eq!(
            req(Method::POST, "/v1/pending/3/approve", &[], "").unwrap(),
            Command::Decide {
                id: 3,
                approve: Some(AskScope::Once)
            }
        );
        assert_eq!(
            req(Method::POST, "/v1/pending/4/deny", &[], "").unwrap(),
            Command::Decide {
                id: 4,
                approve: None
            }
        );
        for (m, path) in [
            (Method::POST, "/v1/pending/x/deny"),
            (Method::POST, "/v1/pending/3/approve?scope=maybe"),
            (Method::GET, "/v1/pending/3/deny"),
            (Method::POST, "/v1/pending"),
        ] {
            assert!(req(m.clone(), path, &[], "").is_err(), "{m} {path}");
        }
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

//! The offline runner behind `egret handler run`: run a handler component
//! once against a request given on the command line and print what it would
//! do, with secret values masked.

use std::fmt::Write as _;
use std::sync::Arc;

use http::Uri;

use crate::action::{
    describe_masked, describe_response_action, resolve_action, resolve_response_action,
    ResolvedAction, ResolvedResponseAction,
};
use crate::host::{EventAction, HandlerHost, RequestHead, Session, SessionSpec};
use crate::kv::KvStore;
use crate::secrets::{Grants, SecretStore, SecretValue};
use crate::state::{redact_with, truncate};
use crate::{HandlerError, WasmError};

/// Why an offline run failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The request line is not `METHOD absolute-URL`.
    #[error("bad request line {line:?}: {reason} (expected e.g. \"GET https://api.test/x\")")]
    RequestLine {
        /// What was given.
        line: String,
        /// What is wrong.
        reason: String,
    },
    /// A header is not valid.
    #[error("bad header {name:?}: {reason}")]
    Header {
        /// The header name given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The component could not be loaded.
    #[error(transparent)]
    Load(#[from] WasmError),
    /// The handler failed (trap, timeout, out of memory, ...).
    #[error(transparent)]
    Handler(HandlerError),
    /// The handler ran but its action would be refused; `printed` shows the
    /// (masked) action it returned.
    #[error("{error}\n{printed}")]
    Rejected {
        /// The masked action and request, for display.
        printed: String,
        /// Why the action is invalid.
        error: HandlerError,
    },
}

fn parse_request_line(line: &str) -> Result<(String, String, String, String), OfflineError> {
    let bad = |reason: &str| OfflineError::RequestLine {
        line: line.to_owned(),
        reason: reason.to_owned(),
    };
    let (method, url) = line
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("missing URL"))?;
    let method = method.trim();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad("the method must be letters only"));
    }
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| bad(&format!("invalid URL: {e}")))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| bad("the URL must be absolute (http:// or https://)"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("the URL has no host"))?
        .to_string();
    let pq = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let pq = if pq.is_empty() { "/".to_owned() } else { pq };
    Ok((
        method.to_ascii_uppercase(),
        scheme.to_owned(),
        authority,
        pq,
    ))
}

/// A response to run the response phase on, offline.
#[derive(Debug, Clone)]
pub struct OfflineResponse {
    /// Status.
    pub status: u16,
    /// Headers (`name`, `value`).
    pub headers: Vec<(String, String)>,
    /// The body; given to the guest when `buffer` (the binding's `response.mode = "buffer"`),
    /// otherwise shown to an observer (`on_chunk`, `on_end`) in one chunk when `observe`.
    pub body: Vec<u8>,
    /// Buffered mode (the guest sees the body) rather than head-only.
    pub buffer: bool,
    /// Observe mode: the body goes to `on_chunk` then `on_end`.
    pub observe: bool,
    /// Stream mode: the body cut as the proxy cuts it (whole events of an event stream, else
    /// chunks), each given to `on_event` before it would be sent, then `on_end`.
    pub pieces: Option<Vec<Vec<u8>>>,
}

/// One offline run: a request (and optionally a response) through a handler.
pub struct OfflineRun<'a> {
    /// `METHOD absolute-URL`.
    pub request_line: &'a str,
    /// Request headers.
    pub headers: &'a [(String, String)],
    /// The request body, given to the guest as a buffering binding's would be.
    pub body: Option<Vec<u8>>,
    /// Handler params (JSON).
    pub params_json: &'a str,
    /// `NAME=VALUE` secrets, granted for use and reveal (the author's own machine); values are
    /// never printed.
    pub secrets: Vec<(String, String)>,
    /// Names the guest may set with `set-secret`.
    pub mint: Vec<String>,
    /// `fetch` and its bounds; `Services::default()` grants none.
    pub services: crate::services::Services,
    /// Sandbox id given to the handler.
    pub sandbox_id: &'a str,
    /// A response for the response phase, if any.
    pub response: Option<OfflineResponse>,
}

/// Runs `bytes` once on one request and returns a printable report: the
/// request, the (masked) action, and what egret would do with it.
///
/// `headers` are `(name, value)` pairs; every secret in `secrets` is granted
/// to the handler for use and reveal (it is the developer's own machine), but
/// no value is ever printed: actions show `secret(NAME)`, and any secret
/// value that appears in literal output is replaced with `[REDACTED]`.
pub async fn run_offline(
    host: &HandlerHost,
    bytes: &[u8],
    request_line: &str,
    headers: &[(String, String)],
    params_json: &str,
    secrets: Vec<(String, String)>,
    sandbox_id: &str,
) -> Result<String, OfflineError> {
    run(
        host,
        bytes,
        OfflineRun {
            request_line,
            headers,
            body: None,
            params_json,
            secrets,
            mint: Vec::new(),
            services: Default::default(),
            sandbox_id,
            response: None,
        },
    )
    .await
}

/// [`run_offline`] with everything `egret handler run` can give: a request body, fetch,
/// minted secrets and the response phase.
pub async fn run(
    host: &HandlerHost,
    bytes: &[u8],
    r: OfflineRun<'_>,
) -> Result<String, OfflineError> {
    let request = request_head(r.request_line, r.headers)?;
    let (store, grants, values) = offline_secrets(r.secrets, &r.mint);
    let kv = KvStore::new();
    let handler = host.load("offline", bytes).await?;
    let params = if r.params_json.trim().is_empty() {
        "{}"
    } else {
        r.params_json
    };
    let mut services = r.services;
    services.mint = Some(store.clone());

    let mut report = Report {
        out: String::new(),
        values,
    };
    let out = &mut report.out;
    let _ = writeln!(out, "handler sha256 {}", handler.sha256_hex);
    let _ = writeln!(out, "world {}", handler.wit_version().world());
    let _ = writeln!(
        out,
        "request {} {}://{}{} (sandbox {})",
        request.method, request.scheme, request.authority, request.path_with_query, r.sandbox_id
    );
    if let Some(b) = &r.body {
        let _ = writeln!(out, "request body: {} bytes", b.len());
    }
    let body_buffered = r.body.is_some();
    let mut session = host
        .session(
            &handler,
            SessionSpec {
                handler_name: "offline",
                sandbox_id: r.sandbox_id,
                params_json: params,
                grants: &grants,
                secrets: &*store,
                kv: &kv,
                limits: host.config().default_limits,
                services,
                reuse: false,
            },
        )
        .await
        .map_err(OfflineError::Handler)?;
    let action = session
        .decide(request, r.body.map(bytes::Bytes::from))
        .await
        .map_err(OfflineError::Handler)?;
    report.out.push_str(&describe_masked(&action));
    // Minted secrets are masked like the given ones.
    report
        .values
        .extend(r.mint.iter().filter_map(|name| store.get(name)));
    let resolved = resolve_action("offline", action, &grants, &*store, body_buffered)
        .map_err(|error| report.rejected(error))?;
    if !describe_request_result(&mut report.out, resolved) {
        return Ok(report.finish());
    }
    if let Some(resp) = r.response {
        response_phase(&mut session, &resp, &mut report).await?;
    }
    let kv_entries = kv.snapshot();
    if !kv_entries.is_empty() {
        let keys: Vec<&str> = kv_entries.iter().map(|e| e.key.as_str()).collect();
        let _ = writeln!(report.out, "kv written: {}", keys.join(", "));
    }
    Ok(report.finish())
}

/// The request head from the request line and the headers, each header checked.
fn request_head(line: &str, headers: &[(String, String)]) -> Result<RequestHead, OfflineError> {
    let (method, scheme, authority, path_with_query) = parse_request_line(line)?;
    let mut head_headers = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let bad = |reason: String| OfflineError::Header {
            name: name.clone(),
            reason,
        };
        let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        http::HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
        head_headers.push((n.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    Ok(RequestHead {
        method,
        scheme,
        authority,
        path_with_query,
        headers: head_headers,
    })
}

/// The given `NAME=VALUE` secrets in a store, granted for use and reveal (and `mint` for
/// setting), and their values, to be masked in the report.
fn offline_secrets(
    secrets: Vec<(String, String)>,
    mint: &[String],
) -> (Arc<SecretStore>, Grants, Vec<SecretValue>) {
    let store = Arc::new(SecretStore::new());
    let mut names = Vec::with_capacity(secrets.len());
    let mut values: Vec<SecretValue> = Vec::with_capacity(secrets.len());
    for (name, value) in secrets {
        values.push(SecretValue::new(value.as_bytes()));
        store.set(name.clone(), value.into_bytes());
        names.push(name);
    }
    let grants = Grants::new(names.clone(), names).with_mint(mint.to_vec());
    (store, grants, values)
}

/// What the run printed so far, and the secret values it must never show.
struct Report {
    out: String,
    values: Vec<SecretValue>,
}

impl Report {
    /// The report, secret values masked.
    fn finish(self) -> String {
        redact_with(&self.out, self.values.iter())
    }

    /// The run's error when the guest's action is refused, with the report so far.
    fn rejected(&self, error: HandlerError) -> OfflineError {
        OfflineError::Rejected {
            printed: redact_with(&self.out, self.values.iter()),
            error,
        }
    }
}

/// Prints what egret would do with the request; `true` when it would go upstream (so there
/// is a response to run the response phase on).
fn describe_request_result(out: &mut String, resolved: ResolvedAction) -> bool {
    match resolved {
        ResolvedAction::Forward {
            injected_secret_headers,
            body,
            ..
        } => {
            let injected: Vec<&str> = injected_secret_headers.iter().map(|h| h.as_str()).collect();
            if injected.is_empty() {
                out.push_str("result: would forward upstream\n");
            } else {
                let _ = writeln!(
                    out,
                    "result: would forward upstream with secrets injected into: {}",
                    injected.join(", ")
                );
            }
            if let Some(b) = body {
                let _ = writeln!(out, "request body replaced: {} bytes", b.len());
            }
            true
        }
        ResolvedAction::Respond { status, .. } => {
            let _ = writeln!(
                out,
                "result: would respond {status} locally (nothing sent upstream)"
            );
            false
        }
    }
}

/// The response phase on `resp`, then, when the response was passed on, the observer or
/// the stream phase on its body.
async fn response_phase(
    session: &mut Session,
    resp: &OfflineResponse,
    report: &mut Report,
) -> Result<(), OfflineError> {
    let headers: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let body = resp.buffer.then(|| bytes::Bytes::from(resp.body.clone()));
    let action = session
        .respond_raw(resp.status, headers, body)
        .await
        .map_err(OfflineError::Handler)?;
    let _ = write!(report.out, "response {}: ", resp.status);
    report.out.push_str(&describe_response_action(&action));
    let passed = match resolve_response_action("offline", action, resp.buffer) {
        Ok(r) => matches!(r, ResolvedResponseAction::Pass { .. }),
        Err(error) => return Err(report.rejected(error)),
    };
    if !passed {
        return Ok(());
    }
    // Observing, the body that was passed on goes by the observer, in one chunk.
    if resp.observe {
        session
            .chunk(&resp.body)
            .await
            .map_err(OfflineError::Handler)?;
        session.end().await.map_err(OfflineError::Handler)?;
        let _ = writeln!(
            report.out,
            "response body observed: {} bytes passed on unchanged",
            resp.body.len()
        );
    }
    if let Some(pieces) = &resp.pieces {
        stream_phase(session, pieces, &mut report.out).await?;
    }
    Ok(())
}

/// The stream phase on each piece of the body, then its end.
async fn stream_phase(
    session: &mut Session,
    pieces: &[Vec<u8>],
    out: &mut String,
) -> Result<(), OfflineError> {
    let mut sent = 0;
    for (i, piece) in pieces.iter().enumerate() {
        let action = session.event(piece).await.map_err(OfflineError::Handler)?;
        let _ = match action {
            EventAction::Pass => {
                sent += piece.len();
                writeln!(out, "event {i}: pass ({} bytes)", piece.len())
            }
            EventAction::Replace(b) => {
                sent += b.len();
                writeln!(
                    out,
                    "event {i}: replace with {} bytes: {:?}",
                    b.len(),
                    truncate(String::from_utf8_lossy(&b).into_owned(), 512)
                )
            }
            EventAction::Drop => writeln!(out, "event {i}: drop"),
        };
    }
    session.end().await.map_err(OfflineError::Handler)?;
    let _ = writeln!(
        out,
        "response body streamed: {} pieces, {sent} bytes sent",
        pieces.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let (m, s, a, p) = parse_request_line("get https://api.test:8443/x?y=1").unwrap();
        assert_eq!(
            (m.as_str(), s.as_str(), a.as_str(), p.as_str()),
            ("GET", "https", "api.test:8443", "/x?y=1")
        );
        assert_eq!(parse_request_line("GET http://h").unwrap().3, "/");
        for bad in ["GET", "GET /relative", "GET ftp://h/x", "G3T https://h/"] {
            assert!(parse_request_line(bad).is_err(), "{bad}");
        }
    }
}

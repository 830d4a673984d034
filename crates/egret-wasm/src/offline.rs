//! The offline runner behind `egret handler run`: run a handler component
//! once against a request given on the command line and print what it would
//! do, with secret values masked.

use std::fmt::Write as _;

use http::Uri;

use crate::action::{describe_masked, resolve_action, ResolvedAction};
use crate::host::{HandlerHost, Invocation, RequestHead};
use crate::kv::KvStore;
use crate::secrets::{Grants, SecretStore, SecretValue};
use crate::state::redact_with;
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
    let (method, scheme, authority, path_with_query) = parse_request_line(request_line)?;
    let mut head_headers = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let n =
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| OfflineError::Header {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        http::HeaderValue::from_str(value).map_err(|e| OfflineError::Header {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        head_headers.push((n.as_str().to_owned(), value.as_bytes().to_vec()));
    }
    let request = RequestHead {
        method,
        scheme,
        authority,
        path_with_query,
        headers: head_headers,
    };

    let store = SecretStore::new();
    let mut names = Vec::with_capacity(secrets.len());
    let mut values: Vec<SecretValue> = Vec::with_capacity(secrets.len());
    for (name, value) in secrets {
        values.push(SecretValue::new(value.as_bytes()));
        store.set(name.clone(), value.into_bytes());
        names.push(name);
    }
    let grants = Grants::new(names.clone(), names);
    let kv = KvStore::new();
    let handler = host.load("offline", bytes).await?;
    let params = if params_json.trim().is_empty() {
        "{}"
    } else {
        params_json
    };

    let mut out = String::new();
    let _ = writeln!(out, "handler sha256 {}", handler.sha256_hex);
    let _ = writeln!(
        out,
        "request {} {}://{}{} (sandbox {sandbox_id})",
        request.method, request.scheme, request.authority, request.path_with_query
    );
    let inv = Invocation {
        handler_name: &handler.name,
        sandbox_id,
        params_json: params,
        request: &request,
        grants: &grants,
        secrets: &store,
        kv: &kv,
        limits: host.config().default_limits,
    };
    let action = host
        .invoke(&handler, inv)
        .await
        .map_err(OfflineError::Handler)?;
    out.push_str(&describe_masked(&action));
    match resolve_action(&handler.name, action, &grants, &store, false) {
        Ok(ResolvedAction::Forward {
            injected_secret_headers,
            ..
        }) => {
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
        }
        Ok(ResolvedAction::Respond { status, .. }) => {
            let _ = writeln!(
                out,
                "result: would respond {status} locally (nothing sent upstream)"
            );
        }
        Err(error) => {
            return Err(OfflineError::Rejected {
                printed: redact_with(&out, values.iter()),
                error,
            })
        }
    }
    Ok(redact_with(&out, values.iter()))
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

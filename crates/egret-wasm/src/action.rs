//! Turning what a guest returned into something the proxy can apply.
//!
//! The guest's [`GuestAction`] is untrusted data: [`resolve_action`] validates
//! every header name and value, refuses edits of `host` and connection-level
//! headers, checks the path rewrite is origin-form, enforces size limits, and
//! fills in secret references (only for secrets granted to the handler).
//! [`describe_masked`] prints an action for humans without any secret value.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::StatusCode;

#[cfg(feature = "runtime")]
use crate::bindings::egret::handler::types as wit;
use crate::secrets::{fill_template, Grants, SecretSource};
#[cfg(not(feature = "runtime"))]
use crate::wit_types as wit;
use crate::HandlerError;

/// The action a guest returned, before validation (generated from the WIT).
pub use wit::Action as GuestAction;
/// Forward edits as returned by the guest.
pub use wit::ForwardSpec;
/// One header edit as returned by the guest.
pub use wit::HeaderOp;
/// A header value as returned by the guest: literal or a secret reference.
pub use wit::HeaderValue as GuestHeaderValue;
/// A local response as returned by the guest.
pub use wit::ResponseSpec;

/// At most this many header operations (set + remove, or response headers).
pub const MAX_HEADER_OPS: usize = 100;
/// At most this many bytes of header names plus values, after secrets are
/// filled in.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Largest local response body.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest rewritten path-and-query.
pub const MAX_PATH_BYTES: usize = 8 << 10;

/// A validated action, ready to apply.
#[derive(Debug)]
pub enum ResolvedAction {
    /// Forward upstream with these edits (apply `remove` first, then `set`
    /// in order, each replacing earlier values of the same name).
    Forward {
        /// Headers to set; values that came from a secret are marked
        /// sensitive (`HeaderValue::is_sensitive`), so they are not logged by
        /// `Debug` and HTTP/2 does not index them.
        set: Vec<(HeaderName, HeaderValue)>,
        /// Headers to remove.
        remove: Vec<HeaderName>,
        /// New path and query, if rewritten.
        path_and_query: Option<PathAndQuery>,
        /// Names of the headers whose value contains a secret (for audit logs).
        injected_secret_headers: Vec<HeaderName>,
    },
    /// Answer the client directly.
    Respond {
        /// Status code (100..=599, not 101).
        status: StatusCode,
        /// Response headers.
        headers: HeaderMap,
        /// Response body.
        body: Bytes,
    },
}

/// Headers a handler may not set or remove: the destination and the message
/// framing belong to egret.
fn forbidden_request_header(lower: &str) -> bool {
    matches!(lower, "host" | ":authority") || forbidden_framing_header(lower)
}

/// Connection-level (hop-by-hop) headers and framing: never end-to-end.
fn forbidden_framing_header(lower: &str) -> bool {
    matches!(
        lower,
        "connection"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
            | "keep-alive"
    ) || lower.starts_with("proxy-")
        || lower.starts_with(':')
}

/// A guest-controlled string made safe and short for an error message.
fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    format!("`{out}`")
}

struct Resolver<'a> {
    handler: &'a str,
    grants: &'a Grants,
    secrets: &'a dyn SecretSource,
}

impl Resolver<'_> {
    fn invalid(&self, reason: String) -> HandlerError {
        HandlerError::InvalidAction {
            handler: self.handler.to_owned(),
            reason,
        }
    }

    fn header_name(
        &self,
        name: &str,
        forbidden: fn(&str) -> bool,
    ) -> Result<HeaderName, HandlerError> {
        let lower = name.to_ascii_lowercase();
        if forbidden(&lower) {
            return Err(self.invalid(format!(
                "header {} may not be edited by a handler (destination and connection-level \
                 headers are controlled by egret)",
                quoted(name)
            )));
        }
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            self.invalid(format!(
                "header name {} is not a valid HTTP header name",
                quoted(name)
            ))
        })
    }

    /// Materializes a header value; returns it and whether it holds a secret.
    fn header_value(
        &self,
        name: &HeaderName,
        value: &GuestHeaderValue,
    ) -> Result<(HeaderValue, bool), HandlerError> {
        match value {
            GuestHeaderValue::Literal(bytes) => HeaderValue::from_bytes(bytes)
                .map(|v| (v, false))
                .map_err(|_| {
                    self.invalid(format!(
                        "value of header `{name}` contains CR, LF, NUL or another byte not \
                         allowed in a header value"
                    ))
                }),
            GuestHeaderValue::Secret(secret) => self.secret_value(name, "{}", secret),
            GuestHeaderValue::SecretTemplate((template, secret)) => {
                if !template.contains("{}") {
                    return Err(self.invalid(format!(
                        "template for header `{name}` has no `{{}}` placeholder for secret {}",
                        quoted(secret)
                    )));
                }
                self.secret_value(name, template, secret)
            }
        }
    }

    fn secret_value(
        &self,
        name: &HeaderName,
        template: &str,
        secret: &str,
    ) -> Result<(HeaderValue, bool), HandlerError> {
        if !self.grants.may_use(secret) {
            return Err(self.invalid(format!(
                "header `{name}` uses secret {s}, which is not granted to handler `{h}` \
                 (add {s} to the handler's secret grants)",
                s = quoted(secret),
                h = self.handler,
            )));
        }
        let Some(value) = self.secrets.get(secret) else {
            return Err(self.invalid(format!(
                "header `{name}` uses secret {}, which is granted but not set",
                quoted(secret)
            )));
        };
        let filled = fill_template(template, &value);
        // Never echo the value: the message names only header and secret.
        let mut hv = HeaderValue::from_bytes(filled.expose()).map_err(|_| {
            self.invalid(format!(
                "value of header `{name}` built from secret {} contains CR, LF, NUL or another \
                 byte not allowed in a header value",
                quoted(secret)
            ))
        })?;
        hv.set_sensitive(true);
        Ok((hv, true))
    }

    fn path(&self, p: &str) -> Result<PathAndQuery, HandlerError> {
        let bad = |why: &str| self.invalid(format!("path rewrite {} {why}", quoted(p)));
        if p.len() > MAX_PATH_BYTES {
            return Err(bad(&format!("is longer than {MAX_PATH_BYTES} bytes")));
        }
        if !p.starts_with('/') {
            return Err(bad(
                "must start with `/` (origin-form; scheme and authority cannot be changed)",
            ));
        }
        if p.starts_with("//") {
            // "//host/x" would read as an authority to some parsers.
            return Err(bad(
                "must not start with `//` (scheme and authority cannot be changed)",
            ));
        }
        if p.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#')
        {
            return Err(bad(
                "contains whitespace, a control character or a fragment",
            ));
        }
        p.parse::<PathAndQuery>()
            .map_err(|_| bad("is not a valid origin-form path and query"))
    }
}

/// Validates a guest's action and materializes it for the proxy.
///
/// Fails with [`HandlerError::InvalidAction`] naming what is wrong, never
/// including a secret value. Rules: header names must be valid HTTP header
/// names and values valid header values (no CR, LF, NUL); `host`,
/// `:authority`, `connection`, `transfer-encoding`, `content-length`, `te`,
/// `trailer`, `upgrade`, `keep-alive` and `proxy-*` may not be set or removed
/// upstream (and only `host` is allowed in a local response); referenced
/// secrets must be granted and present, and `{}` in a template is replaced by
/// the value; a path rewrite must be origin-form (`/…`, not `//…`, no
/// whitespace); at most [`MAX_HEADER_OPS`] header operations and
/// [`MAX_HEADER_BYTES`] header bytes; a local response has status 100..=599
/// except 101 and a body of at most [`MAX_BODY_BYTES`].
pub fn resolve_action(
    handler: &str,
    action: GuestAction,
    grants: &Grants,
    secrets: &dyn SecretSource,
) -> Result<ResolvedAction, HandlerError> {
    let r = Resolver {
        handler,
        grants,
        secrets,
    };
    match action {
        GuestAction::Forward(spec) => {
            let ops = spec.set_headers.len() + spec.remove_headers.len();
            if ops > MAX_HEADER_OPS {
                return Err(r.invalid(format!(
                    "{ops} header operations, the limit is {MAX_HEADER_OPS}"
                )));
            }
            let mut total = 0usize;
            let mut remove = Vec::with_capacity(spec.remove_headers.len());
            for name in &spec.remove_headers {
                let n = r.header_name(name, forbidden_request_header)?;
                total += n.as_str().len();
                remove.push(n);
            }
            let mut set = Vec::with_capacity(spec.set_headers.len());
            let mut injected = Vec::new();
            for op in &spec.set_headers {
                let n = r.header_name(&op.name, forbidden_request_header)?;
                let (v, from_secret) = r.header_value(&n, &op.value)?;
                total += n.as_str().len() + v.len();
                if from_secret && !injected.contains(&n) {
                    injected.push(n.clone());
                }
                set.push((n, v));
            }
            if total > MAX_HEADER_BYTES {
                return Err(r.invalid(format!(
                    "header edits total {total} bytes, the limit is {MAX_HEADER_BYTES}"
                )));
            }
            let path_and_query = spec
                .path_with_query
                .as_deref()
                .map(|p| r.path(p))
                .transpose()?;
            Ok(ResolvedAction::Forward {
                set,
                remove,
                path_and_query,
                injected_secret_headers: injected,
            })
        }
        GuestAction::Respond(spec) => {
            let status = match StatusCode::from_u16(spec.status) {
                Ok(s) if (100..=599).contains(&spec.status) && spec.status != 101 => s,
                _ => {
                    return Err(r.invalid(format!(
                        "response status {} is not allowed (use 100..=599, not 101)",
                        spec.status
                    )))
                }
            };
            if spec.headers.len() > MAX_HEADER_OPS {
                return Err(r.invalid(format!(
                    "{} response headers, the limit is {MAX_HEADER_OPS}",
                    spec.headers.len()
                )));
            }
            if spec.body.len() > MAX_BODY_BYTES {
                return Err(r.invalid(format!(
                    "response body is {} bytes, the limit is {MAX_BODY_BYTES}",
                    spec.body.len()
                )));
            }
            let mut headers = HeaderMap::with_capacity(spec.headers.len());
            let mut total = 0usize;
            for (name, value) in &spec.headers {
                let n = r.header_name(name, forbidden_framing_header)?;
                let (v, _) = r.header_value(&n, &GuestHeaderValue::Literal(value.clone()))?;
                total += n.as_str().len() + v.len();
                headers.append(n, v);
            }
            if total > MAX_HEADER_BYTES {
                return Err(r.invalid(format!(
                    "response headers total {total} bytes, the limit is {MAX_HEADER_BYTES}"
                )));
            }
            Ok(ResolvedAction::Respond {
                status,
                headers,
                body: Bytes::from(spec.body),
            })
        }
    }
}

/// Renders bytes for humans: UTF-8 text escaped and quoted, truncated.
fn printable(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let text = String::from_utf8_lossy(shown);
    let mut out = format!("\"{}\"", text.escape_debug());
    if bytes.len() > max {
        let _ = write!(out, "… ({} bytes)", bytes.len());
    }
    out
}

/// Prints an action for humans (e.g. `egret handler run`). Secret references
/// appear as `secret(NAME)`; secret values never appear, since a guest action
/// only holds names.
pub fn describe_masked(action: &GuestAction) -> String {
    let mut out = String::new();
    match action {
        GuestAction::Forward(spec) => {
            out.push_str("forward\n");
            for name in &spec.remove_headers {
                let _ = writeln!(out, "  remove {}", name.escape_debug());
            }
            for op in &spec.set_headers {
                let value = match &op.value {
                    GuestHeaderValue::Literal(v) => printable(v, 200),
                    GuestHeaderValue::Secret(s) => format!("secret({})", s.escape_debug()),
                    GuestHeaderValue::SecretTemplate((t, s)) => printable(t.as_bytes(), 200)
                        .replace("{}", &format!("{{secret({})}}", s.escape_debug())),
                };
                let _ = writeln!(out, "  set {}: {value}", op.name.escape_debug());
            }
            if let Some(p) = &spec.path_with_query {
                let _ = writeln!(out, "  path {}", printable(p.as_bytes(), 200));
            }
        }
        GuestAction::Respond(spec) => {
            let _ = writeln!(out, "respond {}", spec.status);
            for (name, value) in &spec.headers {
                let _ = writeln!(
                    out,
                    "  header {}: {}",
                    name.escape_debug(),
                    printable(value, 200)
                );
            }
            let _ = writeln!(
                out,
                "  body ({} bytes): {}",
                spec.body.len(),
                printable(&spec.body, 400)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretStore;

    fn forward(set: Vec<(&str, GuestHeaderValue)>) -> GuestAction {
        GuestAction::Forward(ForwardSpec {
            set_headers: set
                .into_iter()
                .map(|(n, v)| HeaderOp {
                    name: n.into(),
                    value: v,
                })
                .collect(),
            remove_headers: vec![],
            path_with_query: None,
        })
    }

    fn store() -> SecretStore {
        let s = SecretStore::new();
        s.set("tok", "s3cr3t-value");
        s.set("crlf", "a\r\nb");
        s
    }

    fn resolve(a: GuestAction, grants: &Grants) -> Result<ResolvedAction, HandlerError> {
        resolve_action("h", a, grants, &store())
    }

    fn reason(r: Result<ResolvedAction, HandlerError>) -> String {
        match r {
            Err(e @ HandlerError::InvalidAction { .. }) => e.to_string(),
            other => panic!("expected InvalidAction, got {other:?}"),
        }
    }

    #[test]
    fn secret_template_is_filled_and_sensitive() {
        let g = Grants::use_only(["tok"]);
        let a = forward(vec![(
            "authorization",
            GuestHeaderValue::SecretTemplate(("Bearer {}".into(), "tok".into())),
        )]);
        let ResolvedAction::Forward {
            set,
            injected_secret_headers,
            ..
        } = resolve(a, &g).unwrap()
        else {
            panic!("forward expected")
        };
        assert_eq!(set[0].1.as_bytes(), b"Bearer s3cr3t-value");
        assert!(set[0].1.is_sensitive());
        assert_eq!(
            injected_secret_headers,
            vec![HeaderName::from_static("authorization")]
        );
        let dbg = format!("{set:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn ungranted_and_missing_secrets() {
        let a = forward(vec![("x-k", GuestHeaderValue::Secret("tok".into()))]);
        let msg = reason(resolve(a, &Grants::default()));
        assert!(
            msg.contains("`tok`") && msg.contains("not granted"),
            "{msg}"
        );
        let a = forward(vec![("x-k", GuestHeaderValue::Secret("nope".into()))]);
        let msg = reason(resolve(a, &Grants::use_only(["nope"])));
        assert!(msg.contains("not set"), "{msg}");
    }

    #[test]
    fn crlf_rejected_without_echoing_secret() {
        let a = forward(vec![(
            "x-a",
            GuestHeaderValue::Literal(b"ok\r\nevil: 1".to_vec()),
        )]);
        assert!(reason(resolve(a, &Grants::default())).contains("`x-a`"));
        let a = forward(vec![("x-b", GuestHeaderValue::Secret("crlf".into()))]);
        let msg = reason(resolve(a, &Grants::use_only(["crlf"])));
        assert!(msg.contains("x-b") && !msg.contains("a\r\nb"), "{msg}");
    }

    #[test]
    fn forbidden_and_invalid_names() {
        for name in [
            "Host",
            "connection",
            "Content-Length",
            "proxy-authorization",
            ":authority",
            "te",
        ] {
            let a = forward(vec![(name, GuestHeaderValue::Literal(b"x".to_vec()))]);
            let msg = reason(resolve(a, &Grants::default()));
            assert!(msg.contains("may not be edited"), "{name}: {msg}");
        }
        let a = forward(vec![("bad name", GuestHeaderValue::Literal(b"x".to_vec()))]);
        assert!(reason(resolve(a, &Grants::default())).contains("`bad name`"));
        let mut a = forward(vec![]);
        if let GuestAction::Forward(f) = &mut a {
            f.remove_headers.push("host".into());
        }
        assert!(reason(resolve(a, &Grants::default())).contains("`host`"));
    }

    #[test]
    fn paths() {
        let with_path = |p: &str| {
            GuestAction::Forward(ForwardSpec {
                set_headers: vec![],
                remove_headers: vec![],
                path_with_query: Some(p.into()),
            })
        };
        let ok = resolve(with_path("/v1/x?y=https://z"), &Grants::default()).unwrap();
        assert!(
            matches!(ok, ResolvedAction::Forward { path_and_query: Some(p), .. } if p == "/v1/x?y=https://z")
        );
        for bad in [
            "v1",
            "//evil.test/x",
            "https://evil.test/",
            "/a b",
            "/a\r\nb",
            "/#frag",
            "",
        ] {
            reason(resolve(with_path(bad), &Grants::default()));
        }
    }

    #[test]
    fn limits_and_status() {
        let many: Vec<_> = (0..101)
            .map(|i| {
                (
                    Box::leak(format!("x-{i}").into_boxed_str()) as &str,
                    GuestHeaderValue::Literal(vec![b'a']),
                )
            })
            .collect();
        assert!(reason(resolve(forward(many), &Grants::default())).contains("limit"));
        let big = forward(vec![(
            "x-big",
            GuestHeaderValue::Literal(vec![b'a'; MAX_HEADER_BYTES]),
        )]);
        assert!(reason(resolve(big, &Grants::default())).contains("limit"));
        let respond = |status, body: Vec<u8>| {
            GuestAction::Respond(ResponseSpec {
                status,
                headers: vec![("content-type".into(), b"text/plain".to_vec())],
                body,
            })
        };
        for s in [99, 101, 600, 0] {
            reason(resolve(respond(s, vec![]), &Grants::default()));
        }
        reason(resolve(
            respond(200, vec![0; MAX_BODY_BYTES + 1]),
            &Grants::default(),
        ));
        let ok = resolve(respond(403, b"no".to_vec()), &Grants::default()).unwrap();
        assert!(matches!(ok, ResolvedAction::Respond { status, .. } if status == 403));
    }

    #[test]
    fn masked_description() {
        let a = forward(vec![
            (
                "authorization",
                GuestHeaderValue::SecretTemplate(("Bearer {}".into(), "tok".into())),
            ),
            (
                "x-egret-handler",
                GuestHeaderValue::Literal(b"inject-header".to_vec()),
            ),
        ]);
        let d = describe_masked(&a);
        assert!(
            d.contains("set authorization: \"Bearer {secret(tok)}\""),
            "{d}"
        );
        assert!(!d.contains("s3cr3t"));
    }
}

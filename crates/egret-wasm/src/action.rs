//! Turning what a guest returned into something the proxy can apply.
//!
//! The guest's [`GuestAction`] is untrusted data: [`resolve_action`] validates
//! every header name and value, refuses edits of `host` and connection-level
//! headers, checks the path rewrite is origin-form, enforces size limits, and
//! fills in secret references (only for secrets granted to the handler), in the
//! encoding the guest asked for. Everything a secret was filled into is listed
//! ([`Filled`]) so the proxy can mask it where it echoes back.
//! [`resolve_response_action`] does the same for the response phase.
//! [`describe_masked`] prints an action for humans without any secret value.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::StatusCode;

use crate::secrets::{fill_template, Grants, SecretSource, SecretValue};
use crate::wit_types as wit;
use crate::HandlerError;

/// The action a guest returned, before validation.
pub use wit::Action as GuestAction;
/// Forward edits as returned by the guest.
pub use wit::ForwardSpec;
/// One header edit as returned by the guest.
pub use wit::HeaderOp;
/// A header value as returned by the guest: literal or a secret reference.
pub use wit::HeaderValue as GuestHeaderValue;
/// What a guest returned from the response phase, before validation.
pub use wit::ResponseAction as GuestResponseAction;
/// Response edits as returned by the guest.
pub use wit::ResponseEdits;
/// A local response as returned by the guest.
pub use wit::ResponseSpec;
pub use wit::{BasicCredentials, Encoding, SecretRef, ValuePart};

/// At most this many header operations (set + remove, or response headers).
pub const MAX_HEADER_OPS: usize = 100;
/// At most this many bytes of header names plus values, after secrets are
/// filled in.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Largest local response body.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest rewritten path-and-query.
pub const MAX_PATH_BYTES: usize = 8 << 10;
/// Largest replacement body a guest may return (request or response).
pub const MAX_REPLACEMENT_BODY_BYTES: usize = 16 << 20;

/// The bytes a secret was written as, wherever it was filled in: each secret's raw value,
/// every encoded form written, and whole materialized values that encode a secret (HTTP Basic
/// credentials). The proxy masks each of them in the response the sandbox gets.
#[derive(Debug, Default, Clone)]
pub struct Filled(pub Vec<SecretValue>);

impl Filled {
    fn add(&mut self, v: SecretValue) {
        if !v.expose().is_empty() && !self.0.iter().any(|x| x.expose() == v.expose()) {
            self.0.push(v);
        }
    }

    /// Whether nothing secret was filled in.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

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
        /// A replacement request body (secrets filled in).
        body: Option<Bytes>,
        /// What secrets were written as, for the echo guard.
        filled: Filled,
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

/// A validated response-phase decision.
#[derive(Debug)]
pub enum ResolvedResponseAction {
    /// Pass the response on: remove, then set these headers; replace the body when given.
    Pass {
        /// Headers to set.
        set: Vec<(HeaderName, HeaderValue)>,
        /// Headers to remove.
        remove: Vec<HeaderName>,
        /// A replacement body (buffered responses only).
        body: Option<Bytes>,
    },
    /// Replace the response.
    Replace {
        /// Status code (100..=599, not 101).
        status: StatusCode,
        /// Headers.
        headers: HeaderMap,
        /// Body.
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

/// Writes `value` in `encoding`; `None` when it cannot be (a JSON string needs UTF-8).
pub fn encode_secret(value: &[u8], encoding: Encoding) -> Option<Vec<u8>> {
    use base64::Engine;
    Some(match encoding {
        Encoding::Raw => value.to_vec(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .encode(value)
            .into_bytes(),
        Encoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(value)
            .into_bytes(),
        Encoding::Percent => {
            let mut out = Vec::with_capacity(value.len() * 3);
            for &b in value {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b);
                } else {
                    let _ = write!(VecWriter(&mut out), "%{b:02X}");
                }
            }
            out
        }
        Encoding::JsonString => {
            let text = std::str::from_utf8(value).ok()?;
            let quoted = serde_json::to_string(text).ok()?;
            quoted.as_bytes()[1..quoted.len() - 1].to_vec()
        }
        Encoding::Hex => {
            let mut out = Vec::with_capacity(value.len() * 2);
            for &b in value {
                let _ = write!(VecWriter(&mut out), "{b:02x}");
            }
            out
        }
    })
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Fills secrets into guest-provided bytes, checking grants; shared by actions and `fetch`.
pub(crate) struct Resolver<'a> {
    pub(crate) handler: &'a str,
    pub(crate) grants: &'a Grants,
    pub(crate) secrets: &'a dyn SecretSource,
}

impl Resolver<'_> {
    pub(crate) fn invalid(&self, reason: String) -> HandlerError {
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

    /// The value of a granted secret; `what` names where it is used, for errors.
    fn secret(&self, what: &str, name: &str) -> Result<SecretValue, HandlerError> {
        if !self.grants.may_use(name) {
            return Err(self.invalid(format!(
                "{what} uses secret {s}, which is not granted to handler `{h}` \
                 (add {s} to the handler's secret grants)",
                s = quoted(name),
                h = self.handler,
            )));
        }
        self.secrets.get(name).ok_or_else(|| {
            self.invalid(format!(
                "{what} uses secret {}, which is granted but not set",
                quoted(name)
            ))
        })
    }

    /// Concatenates `parts`, filling in secrets (recorded in `filled`).
    pub(crate) fn parts(
        &self,
        what: &str,
        parts: &[ValuePart],
        filled: &mut Filled,
    ) -> Result<SecretValue, HandlerError> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                ValuePart::Literal(b) => out.extend_from_slice(b),
                ValuePart::Secret(r) => {
                    let v = self.secret(what, &r.name)?;
                    let enc = encode_secret(v.expose(), r.encoding).ok_or_else(|| {
                        self.invalid(format!(
                            "{what}: secret {} is not UTF-8 and cannot be written as a JSON string",
                            quoted(&r.name)
                        ))
                    })?;
                    out.extend_from_slice(&enc);
                    filled.add(SecretValue::new(enc));
                    filled.add(v);
                }
            }
        }
        Ok(SecretValue::new(out))
    }

    /// Materializes a header value; returns it and whether it holds a secret.
    pub(crate) fn header_value(
        &self,
        name: &HeaderName,
        value: &GuestHeaderValue,
        filled: &mut Filled,
    ) -> Result<(HeaderValue, bool), HandlerError> {
        let what = format!("header `{name}`");
        let (bytes, secret) = match value {
            GuestHeaderValue::Literal(bytes) => {
                return HeaderValue::from_bytes(bytes)
                    .map(|v| (v, false))
                    .map_err(|_| {
                        self.invalid(format!(
                            "value of header `{name}` contains CR, LF, NUL or another byte not \
                             allowed in a header value"
                        ))
                    })
            }
            GuestHeaderValue::Secret(secret) => {
                let v = self.secret(&what, secret)?;
                filled.add(v.clone());
                (v, secret.clone())
            }
            GuestHeaderValue::SecretTemplate((template, secret)) => {
                if !template.contains("{}") {
                    return Err(self.invalid(format!(
                        "template for header `{name}` has no `{{}}` placeholder for secret {}",
                        quoted(secret)
                    )));
                }
                let v = self.secret(&what, secret)?;
                filled.add(v.clone());
                (fill_template(template, &v), secret.clone())
            }
            GuestHeaderValue::Parts(parts) => {
                let before = filled.0.len();
                let v = self.parts(&what, parts, filled)?;
                let secret = if filled.0.len() > before {
                    "in its parts"
                } else {
                    ""
                };
                (v, secret.to_string())
            }
            GuestHeaderValue::BasicAuth(c) => {
                use base64::Engine;
                let mut pair = self.parts(&what, &c.user, filled)?.expose().to_vec();
                pair.push(b':');
                pair.extend_from_slice(self.parts(&what, &c.password, filled)?.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
                filled.add(SecretValue::new(encoded.as_bytes().to_vec()));
                (
                    SecretValue::new(format!("Basic {encoded}").into_bytes()),
                    "in its credentials".to_string(),
                )
            }
        };
        // Never echo the value: the message names only header and secret.
        let mut hv = HeaderValue::from_bytes(bytes.expose()).map_err(|_| {
            self.invalid(format!(
                "value of header `{name}` built from secret {} contains CR, LF, NUL or another \
                 byte not allowed in a header value",
                quoted(&secret)
            ))
        })?;
        let from_secret = !secret.is_empty();
        hv.set_sensitive(from_secret);
        Ok((hv, from_secret))
    }

    /// A header name a guest's `fetch` may set (not the destination nor framing).
    #[cfg(feature = "runtime")]
    pub(crate) fn fetch_header_name(&self, name: &str) -> Result<HeaderName, HandlerError> {
        self.header_name(name, forbidden_request_header)
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

    fn status(&self, status: u16) -> Result<StatusCode, HandlerError> {
        match StatusCode::from_u16(status) {
            Ok(s) if (100..=599).contains(&status) && status != 101 => Ok(s),
            _ => Err(self.invalid(format!(
                "response status {status} is not allowed (use 100..=599, not 101)"
            ))),
        }
    }

    /// Literal headers of a response, validated.
    fn response_headers(
        &self,
        headers: &[(String, Vec<u8>)],
        what: &str,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, HandlerError> {
        if headers.len() > MAX_HEADER_OPS {
            return Err(self.invalid(format!(
                "{} {what}, the limit is {MAX_HEADER_OPS}",
                headers.len()
            )));
        }
        let mut out = Vec::with_capacity(headers.len());
        let mut total = 0usize;
        let mut unused = Filled::default();
        for (name, value) in headers {
            let n = self.header_name(name, forbidden_framing_header)?;
            let (v, _) =
                self.header_value(&n, &GuestHeaderValue::Literal(value.clone()), &mut unused)?;
            total += n.as_str().len() + v.len();
            out.push((n, v));
        }
        if total > MAX_HEADER_BYTES {
            return Err(self.invalid(format!(
                "{what} total {total} bytes, the limit is {MAX_HEADER_BYTES}"
            )));
        }
        Ok(out)
    }

    fn respond(&self, spec: ResponseSpec) -> Result<(StatusCode, HeaderMap, Bytes), HandlerError> {
        let status = self.status(spec.status)?;
        if spec.body.len() > MAX_BODY_BYTES {
            return Err(self.invalid(format!(
                "response body is {} bytes, the limit is {MAX_BODY_BYTES}",
                spec.body.len()
            )));
        }
        let mut headers = HeaderMap::with_capacity(spec.headers.len());
        for (n, v) in self.response_headers(&spec.headers, "response headers")? {
            headers.append(n, v);
        }
        Ok((status, headers, Bytes::from(spec.body)))
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
/// except 101 and a body of at most [`MAX_BODY_BYTES`]; a replacement request
/// body is allowed only when `body_buffered` (the binding opted in) and is at most
/// [`MAX_REPLACEMENT_BODY_BYTES`].
pub fn resolve_action(
    handler: &str,
    action: GuestAction,
    grants: &Grants,
    secrets: &dyn SecretSource,
    body_buffered: bool,
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
            let mut filled = Filled::default();
            let mut set = Vec::with_capacity(spec.set_headers.len());
            let mut injected = Vec::new();
            for op in &spec.set_headers {
                let n = r.header_name(&op.name, forbidden_request_header)?;
                let (v, from_secret) = r.header_value(&n, &op.value, &mut filled)?;
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
            let body = match &spec.body {
                None => None,
                Some(_) if !body_buffered => {
                    return Err(r.invalid(
                        "returned a request body, but the binding does not buffer request bodies \
                         (set `body = { max_bytes = N }` on the handler)"
                            .into(),
                    ))
                }
                Some(parts) => {
                    let b = r.parts("the request body", parts, &mut filled)?;
                    if b.expose().len() > MAX_REPLACEMENT_BODY_BYTES {
                        return Err(r.invalid(format!(
                            "replacement body is {} bytes, the limit is {MAX_REPLACEMENT_BODY_BYTES}",
                            b.expose().len()
                        )));
                    }
                    Some(Bytes::copy_from_slice(b.expose()))
                }
            };
            Ok(ResolvedAction::Forward {
                set,
                remove,
                path_and_query,
                injected_secret_headers: injected,
                body,
                filled,
            })
        }
        GuestAction::Respond(spec) => {
            let (status, headers, body) = r.respond(spec)?;
            Ok(ResolvedAction::Respond {
                status,
                headers,
                body,
            })
        }
    }
}

/// Validates a response-phase decision: headers as in a local response (no framing
/// headers); a replacement body only when `body_buffered`; a replacement response as
/// [`resolve_action`]'s `respond`.
pub fn resolve_response_action(
    handler: &str,
    action: GuestResponseAction,
    body_buffered: bool,
) -> Result<ResolvedResponseAction, HandlerError> {
    let grants = Grants::default();
    let none = crate::secrets::SecretStore::new();
    let r = Resolver {
        handler,
        grants: &grants,
        secrets: &none,
    };
    match action {
        GuestResponseAction::Pass(edits) => {
            let set = r.response_headers(&edits.set_headers, "response header edits")?;
            let mut remove = Vec::with_capacity(edits.remove_headers.len());
            for name in &edits.remove_headers {
                remove.push(r.header_name(name, forbidden_framing_header)?);
            }
            let body = match edits.body {
                None => None,
                Some(_) if !body_buffered => {
                    return Err(r.invalid(
                        "returned a response body, but the binding does not buffer responses \
                         (set `response = { mode = \"buffer\", max_bytes = N }` on the handler)"
                            .into(),
                    ))
                }
                Some(b) if b.len() > MAX_REPLACEMENT_BODY_BYTES => {
                    return Err(r.invalid(format!(
                        "replacement response body is {} bytes, the limit is {MAX_REPLACEMENT_BODY_BYTES}",
                        b.len()
                    )))
                }
                Some(b) => Some(Bytes::from(b)),
            };
            Ok(ResolvedResponseAction::Pass { set, remove, body })
        }
        GuestResponseAction::Replace(spec) => {
            let (status, headers, body) = r.respond(spec)?;
            Ok(ResolvedResponseAction::Replace {
                status,
                headers,
                body,
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

/// Literal parts printed, secret parts as `{secret(NAME):encoding}`.
fn describe_parts(parts: &[ValuePart]) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            ValuePart::Literal(b) => out.push_str(&printable(b, 400)),
            ValuePart::Secret(r) => {
                let enc = format!("{:?}", r.encoding).to_ascii_lowercase();
                let _ = write!(out, "{{secret({}):{enc}}}", r.name.escape_debug());
            }
        }
    }
    if out.is_empty() {
        out.push_str("\"\"");
    }
    out
}

/// Prints a response-phase decision for humans (no secret can be in one).
pub fn describe_response_action(action: &GuestResponseAction) -> String {
    let mut out = String::new();
    match action {
        GuestResponseAction::Pass(e) => {
            out.push_str("pass\n");
            for name in &e.remove_headers {
                let _ = writeln!(out, "  remove {}", name.escape_debug());
            }
            for (name, value) in &e.set_headers {
                let _ = writeln!(
                    out,
                    "  set {}: {}",
                    name.escape_debug(),
                    printable(value, 200)
                );
            }
            if let Some(b) = &e.body {
                let _ = writeln!(out, "  body ({} bytes): {}", b.len(), printable(b, 400));
            }
        }
        GuestResponseAction::Replace(spec) => {
            let _ = writeln!(out, "replace {}", spec.status);
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
                    GuestHeaderValue::Parts(parts) => describe_parts(parts),
                    GuestHeaderValue::BasicAuth(c) => format!(
                        "basic-auth({} : {})",
                        describe_parts(&c.user),
                        describe_parts(&c.password)
                    ),
                };
                let _ = writeln!(out, "  set {}: {value}", op.name.escape_debug());
            }
            if let Some(p) = &spec.path_with_query {
                let _ = writeln!(out, "  path {}", printable(p.as_bytes(), 200));
            }
            if let Some(parts) = &spec.body {
                let _ = writeln!(out, "  body {}", describe_parts(parts));
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
            body: None,
        })
    }

    fn store() -> SecretStore {
        let s = SecretStore::new();
        s.set("tok", "s3cr3t-value");
        s.set("crlf", "a\r\nb");
        s
    }

    fn resolve(a: GuestAction, grants: &Grants) -> Result<ResolvedAction, HandlerError> {
        resolve_action("h", a, grants, &store(), false)
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
                body: None,
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

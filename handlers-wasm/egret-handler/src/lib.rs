//! # egret-handler: write egret request handlers in Rust
//!
//! An egret handler is a WebAssembly component that sees one outbound HTTP
//! request made by a sandboxed agent and decides what happens to it. It can
//!
//! * **forward** the request upstream with header edits (set / remove), an
//!   optional new path, a new body (bindings that buffer bodies:
//!   [`Request::body`], [`Action::set_body`]), and credentials injected *by
//!   reference* ([`Action::set_header_secret`], [`Value`]): egret fills in the
//!   secret value after the handler returns, so the handler never holds it; or
//! * **respond** locally ([`Action::respond`], [`Action::deny`]): nothing
//!   reaches upstream.
//!
//! Bindings that opt in also see the response ([`export!`] with `on_response`,
//! `on_chunk`/`on_end` to observe a streamed body after it was sent, or
//! `on_event` to pass, replace or drop each chunk — each whole server-sent
//! event of a `text/event-stream` — before it is sent; [`sse`] reads and
//! writes such events).
//!
//! The handler never chooses the destination (scheme and authority are those
//! of the original request) and has no sockets, files or environment
//! variables. What it can call is listed in this crate: [`log()`],
//! [`audit_field`] (a few key/values on the request's audit event),
//! [`has_secret`], [`reveal_secret`] (only for secrets the admin granted with
//! `reveal`), [`set_secret`] (names the admin lists in `mint_secrets`),
//! [`fetch()`] (hosts in `fetch_hosts`), [`hmac_sha256`] keyed by a secret it
//! never sees, [`sha256`], and a per-sandbox key-value store in [`kv`] with
//! expiry and atomic counters.
//!
//! A handler is one plain function registered with [`export!`]:
//!
//! ```no_run
//! use egret_handler::{Action, Context, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Params {
//!     header: String,
//!     secret: String,
//! }
//!
//! fn handle(ctx: Context, req: Request) -> Action {
//!     let p: Params = match ctx.params() {
//!         Ok(p) => p,
//!         Err(e) => return Action::deny(500, &format!("bad params: {e}")),
//!     };
//!     if req.method() != "GET" {
//!         egret_handler::log::info!("refusing {} {}", req.method(), req.path());
//!         return Action::deny(405, "only GET is allowed");
//!     }
//!     // "{}" in the template is replaced by the secret's value, by egret.
//!     Action::forward().set_header_secret(&p.header, "Bearer {}", &p.secret)
//! }
//!
//! egret_handler::export!(handle);
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! The result (`target/wasm32-wasip2/release/<crate>.wasm`) is a component
//! egret can load. The contract is the WIT world `egret:handler/handler@0.2.0`
//! in `handlers-wasm/wit/handler.wit`.
//!
//! ## Limits enforced by egret
//!
//! Each request runs in a fresh instance with a memory cap (default 16 MiB)
//! and a deadline (default 50 ms). A panic, trap, timeout or out-of-memory
//! fails the request closed: it is not forwarded and the client gets an error
//! naming the handler. Actions are validated after return: header names and
//! values must be valid HTTP (no CR, LF or NUL), `host`, `:authority` and
//! connection-level headers cannot be edited, a rewritten path must be
//! origin-form (`/...`), and referenced secrets must be granted to the handler.

extern crate self as egret_handler;

/// Raw bindings generated from the WIT world. Not a stable API: use the types
/// of this crate instead.
#[doc(hidden)]
#[allow(clippy::all)] // generated code: lints are for the hand-written API
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "egret_handler::bindings",
        runtime_path: "egret_handler::__private::wit_bindgen::rt",
    });
}

use bindings::egret::handler::host as wit_host;
use bindings::egret::handler::streaming as wit_streaming;
use bindings::egret::handler::types as wit;

/// Per-request information about who is asking and how the handler is
/// configured.
pub struct Context {
    inner: wit::Context,
}

impl Context {
    /// Identity of the sandbox that made the request.
    pub fn sandbox_id(&self) -> &str {
        &self.inner.sandbox_id
    }

    /// Name of this handler binding, as configured by the admin.
    pub fn handler_name(&self) -> &str {
        &self.inner.handler_name
    }

    /// The admin-provided params as raw JSON (`"{}"` when none were set).
    pub fn params_json(&self) -> &str {
        &self.inner.params_json
    }

    /// Deserializes the admin-provided params.
    ///
    /// Empty or `null` params (a binding without params) are treated as `{}`, so a params
    /// struct whose fields all have defaults works without configuration.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let json = self.inner.params_json.trim();
        serde_json::from_str(if json.is_empty() || json == "null" {
            "{}"
        } else {
            json
        })
    }
}

/// The request being decided: method, target, headers and — when the binding
/// buffers request bodies (`body = { max_bytes = N }`) — the body.
pub struct Request {
    inner: wit::RequestHead,
    body: Option<Vec<u8>>,
}

impl Request {
    /// The whole body, when the binding buffers request bodies (`None`
    /// otherwise: it streams past the handler).
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// The body parsed as JSON (an error when there is none or it is not JSON).
    pub fn body_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let body = self.body().ok_or(
            "the request body is not buffered for this handler (set `body = { max_bytes = N }`)",
        )?;
        serde_json::from_slice(body)
            .map_err(|e| format!("the request body is not the expected JSON: {e}"))
    }

    /// The method, e.g. `"GET"`.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// `"http"` or `"https"`.
    pub fn scheme(&self) -> &str {
        &self.inner.scheme
    }

    /// Host and optional port as addressed by the client, e.g.
    /// `"api.example.com"` or `"api.example.com:8443"`.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// The authority without its port (brackets kept for IPv6 literals).
    pub fn host(&self) -> &str {
        let a = self.authority();
        if a.starts_with('[') {
            // IPv6 literal: the port, if any, follows the closing bracket.
            return match a.find(']') {
                Some(end) => &a[..=end],
                None => a,
            };
        }
        match a.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => a,
        }
    }

    /// The path without the query, e.g. `"/v1/items"`.
    pub fn path(&self) -> &str {
        let pq = self.path_with_query();
        pq.split_once('?').map_or(pq, |(p, _)| p)
    }

    /// The query string without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query().split_once('?').map(|(_, q)| q)
    }

    /// Path and query as sent, e.g. `"/v1/items?limit=10"`.
    pub fn path_with_query(&self) -> &str {
        &self.inner.path_with_query
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of a header as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in order; names are lower-case, repeated headers repeat.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.inner
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// What the handler decided: forward (with edits) or respond locally.
///
/// Build one with [`Action::forward`], [`Action::respond`] or
/// [`Action::deny`] and chain the builder methods. Forward-only methods
/// ([`set_header`](Action::set_header), [`set_header_secret`](Action::set_header_secret),
/// [`remove_header`](Action::remove_header), [`path`](Action::path)) called
/// on a respond action, or respond-only methods ([`header`](Action::header),
/// [`body`](Action::body)) called on a forward action, are a handler bug: the
/// action turns into a `500` response that says so, rather than silently doing
/// something else.
pub struct Action {
    inner: ActionInner,
}

enum ActionInner {
    Forward(wit::ForwardSpec),
    Respond(wit::ResponseSpec),
    Misuse(String),
}

impl Action {
    /// Forward the request upstream unchanged; chain edits onto it.
    pub fn forward() -> Action {
        Action {
            inner: ActionInner::Forward(wit::ForwardSpec {
                set_headers: Vec::new(),
                remove_headers: Vec::new(),
                path_with_query: None,
                body: None,
            }),
        }
    }

    /// Respond locally with `status` and an empty body; chain
    /// [`header`](Action::header) / [`body`](Action::body) onto it.
    pub fn respond(status: u16) -> Action {
        Action {
            inner: ActionInner::Respond(wit::ResponseSpec {
                status,
                headers: Vec::new(),
                body: Vec::new(),
            }),
        }
    }

    /// Respond locally with `status` and `msg` as a `text/plain` body.
    pub fn deny(status: u16, msg: &str) -> Action {
        let mut body = msg.as_bytes().to_vec();
        body.push(b'\n');
        Action::respond(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }

    /// Whether this action forwards the request upstream.
    pub fn is_forward(&self) -> bool {
        matches!(self.inner, ActionInner::Forward(_))
    }

    /// Whether this action answers locally.
    pub fn is_respond(&self) -> bool {
        matches!(self.inner, ActionInner::Respond(_))
    }

    fn edit_forward(mut self, what: &str, f: impl FnOnce(&mut wit::ForwardSpec)) -> Action {
        match &mut self.inner {
            ActionInner::Forward(spec) => f(spec),
            ActionInner::Respond(_) => {
                self.inner = ActionInner::Misuse(format!("{what} called on a respond action"))
            }
            ActionInner::Misuse(_) => {}
        }
        self
    }

    fn edit_respond(mut self, what: &str, f: impl FnOnce(&mut wit::ResponseSpec)) -> Action {
        match &mut self.inner {
            ActionInner::Respond(spec) => f(spec),
            ActionInner::Forward(_) => {
                self.inner = ActionInner::Misuse(format!("{what} called on a forward action"))
            }
            ActionInner::Misuse(_) => {}
        }
        self
    }

    /// Forward: set (replace) an upstream request header to a literal value.
    pub fn set_header(self, name: &str, value: impl AsRef<[u8]>) -> Action {
        let op = wit::HeaderOp {
            name: name.to_owned(),
            value: wit::HeaderValue::Literal(value.as_ref().to_vec()),
        };
        self.edit_forward("set_header", |s| s.set_headers.push(op))
    }

    /// Forward: set an upstream request header from a secret the handler never
    /// sees. Every `{}` in `template` is replaced by the value of the secret
    /// named `secret` (e.g. `"Bearer {}"`); egret does that after the handler
    /// returns, and only if the secret is granted to this handler.
    pub fn set_header_secret(self, name: &str, template: &str, secret: &str) -> Action {
        let op = wit::HeaderOp {
            name: name.to_owned(),
            value: if template == "{}" {
                wit::HeaderValue::Secret(secret.to_owned())
            } else {
                wit::HeaderValue::SecretTemplate((template.to_owned(), secret.to_owned()))
            },
        };
        self.edit_forward("set_header_secret", |s| s.set_headers.push(op))
    }

    /// Forward: set an upstream request header assembled from [`Value`] parts
    /// (literals and secrets in any [`Encoding`]).
    pub fn set_header_value(self, name: &str, value: Value) -> Action {
        let op = wit::HeaderOp {
            name: name.to_owned(),
            value: wit::HeaderValue::Parts(value.parts),
        };
        self.edit_forward("set_header_value", |s| s.set_headers.push(op))
    }

    /// Forward: set an upstream request header to `Basic base64(user:password)`,
    /// assembled by egret (either part may hold secrets).
    pub fn set_header_basic_auth(self, name: &str, user: Value, password: Value) -> Action {
        let op = wit::HeaderOp {
            name: name.to_owned(),
            value: wit::HeaderValue::BasicAuth(wit::BasicCredentials {
                user: user.parts,
                password: password.parts,
            }),
        };
        self.edit_forward("set_header_basic_auth", |s| s.set_headers.push(op))
    }

    /// Forward: replace the request body (bindings that buffer bodies; egret
    /// sets `content-length`).
    pub fn set_body(self, body: impl Into<Vec<u8>>) -> Action {
        let parts = vec![wit::ValuePart::Literal(body.into())];
        self.edit_forward("set_body", |s| s.body = Some(parts))
    }

    /// Forward: replace the request body with parts that may hold secrets.
    pub fn set_body_value(self, body: Value) -> Action {
        self.edit_forward("set_body_value", |s| s.body = Some(body.parts))
    }

    /// Forward: remove a header from the upstream request.
    pub fn remove_header(self, name: &str) -> Action {
        let name = name.to_owned();
        self.edit_forward("remove_header", |s| s.remove_headers.push(name))
    }

    /// Forward: replace path and query (origin-form, must start with `/`).
    pub fn path(self, path_with_query: &str) -> Action {
        let p = path_with_query.to_owned();
        self.edit_forward("path", |s| s.path_with_query = Some(p))
    }

    /// Respond: add a response header (repeatable).
    pub fn header(self, name: &str, value: impl AsRef<[u8]>) -> Action {
        let h = (name.to_owned(), value.as_ref().to_vec());
        self.edit_respond("header", |s| s.headers.push(h))
    }

    /// Respond: set the response body (at most 1 MiB).
    pub fn body(self, body: impl Into<Vec<u8>>) -> Action {
        let body = body.into();
        self.edit_respond("body", |s| s.body = body)
    }

    fn into_wit(self) -> wit::Action {
        match self.inner {
            ActionInner::Forward(f) => wit::Action::Forward(f),
            ActionInner::Respond(r) => wit::Action::Respond(r),
            ActionInner::Misuse(what) => {
                log(Level::Error, &format!("handler bug: {what}"));
                wit::Action::Respond(wit::ResponseSpec {
                    status: 500,
                    headers: vec![(
                        "content-type".to_owned(),
                        b"text/plain; charset=utf-8".to_vec(),
                    )],
                    body: format!("egret handler bug: {what}\n").into_bytes(),
                })
            }
        }
    }
}

/// How a secret's value is written where egret fills it in.
pub use wit::Encoding;

/// Bytes egret assembles after the handler returns: literals and secrets it
/// never sees, each secret in an [`Encoding`] (raw, base64, percent, JSON
/// string, hex). Chain [`Value::text`], [`Value::bytes`], [`Value::secret`].
#[derive(Clone, Default)]
pub struct Value {
    parts: Vec<wit::ValuePart>,
}

impl Value {
    /// An empty value.
    pub fn new() -> Value {
        Value::default()
    }

    /// Append text.
    pub fn text(mut self, text: &str) -> Value {
        self.parts
            .push(wit::ValuePart::Literal(text.as_bytes().to_vec()));
        self
    }

    /// Append bytes.
    pub fn bytes(mut self, bytes: impl Into<Vec<u8>>) -> Value {
        self.parts.push(wit::ValuePart::Literal(bytes.into()));
        self
    }

    /// Append the value of secret `name` as it is.
    pub fn secret(self, name: &str) -> Value {
        self.secret_as(name, Encoding::Raw)
    }

    /// Append the value of secret `name` in `encoding` (e.g. [`Encoding::Percent`]
    /// in a form body, [`Encoding::JsonString`] inside a JSON string).
    pub fn secret_as(mut self, name: &str, encoding: Encoding) -> Value {
        self.parts.push(wit::ValuePart::Secret(wit::SecretRef {
            name: name.to_owned(),
            encoding,
        }));
        self
    }
}

/// The response the upstream sent, in the response phase.
pub struct Response {
    inner: wit::Response,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of a header as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All headers in order; names are lower-case.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.inner
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The whole body, when the binding buffers responses
    /// (`response = { mode = "buffer" }`).
    pub fn body(&self) -> Option<&[u8]> {
        self.inner.body.as_deref()
    }
}

/// What the response phase decided: pass the response on (with edits) or
/// replace it.
pub struct ResponseAction {
    inner: wit::ResponseAction,
}

impl ResponseAction {
    /// Pass the response on unchanged; chain edits onto it.
    pub fn pass() -> ResponseAction {
        ResponseAction {
            inner: wit::ResponseAction::Pass(wit::ResponseEdits {
                set_headers: Vec::new(),
                remove_headers: Vec::new(),
                body: None,
            }),
        }
    }

    /// Replace the response with `status` and `msg` as a `text/plain` body.
    pub fn replace(status: u16, msg: &str) -> ResponseAction {
        let mut body = msg.as_bytes().to_vec();
        body.push(b'\n');
        ResponseAction {
            inner: wit::ResponseAction::Replace(wit::ResponseSpec {
                status,
                headers: vec![(
                    "content-type".to_owned(),
                    b"text/plain; charset=utf-8".to_vec(),
                )],
                body,
            }),
        }
    }

    fn edits(mut self, f: impl FnOnce(&mut wit::ResponseEdits)) -> ResponseAction {
        if let wit::ResponseAction::Pass(e) = &mut self.inner {
            f(e);
        }
        self
    }

    /// Pass: set (replace) a response header.
    pub fn set_header(self, name: &str, value: impl AsRef<[u8]>) -> ResponseAction {
        let h = (name.to_owned(), value.as_ref().to_vec());
        self.edits(|e| e.set_headers.push(h))
    }

    /// Pass: remove a response header.
    pub fn remove_header(self, name: &str) -> ResponseAction {
        let n = name.to_owned();
        self.edits(|e| e.remove_headers.push(n))
    }

    /// Pass: replace the body (buffered responses; egret sets `content-length`).
    pub fn body(self, body: impl Into<Vec<u8>>) -> ResponseAction {
        let b = body.into();
        self.edits(|e| e.body = Some(b))
    }
}

/// An HTTP request the handler makes itself with [`fetch()`].
pub struct FetchRequest {
    inner: wit::FetchRequest,
}

impl FetchRequest {
    /// A request with `method` to the absolute `url` (its host must be in the
    /// handler's `fetch_hosts`).
    pub fn new(method: &str, url: &str) -> FetchRequest {
        FetchRequest {
            inner: wit::FetchRequest {
                method: method.to_owned(),
                url: url.to_owned(),
                headers: Vec::new(),
                body: Vec::new(),
            },
        }
    }

    /// A GET.
    pub fn get(url: &str) -> FetchRequest {
        FetchRequest::new("GET", url)
    }

    /// A POST.
    pub fn post(url: &str) -> FetchRequest {
        FetchRequest::new("POST", url)
    }

    /// Add a header with a literal value.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> FetchRequest {
        self.inner.headers.push(wit::HeaderOp {
            name: name.to_owned(),
            value: wit::HeaderValue::Literal(value.as_ref().to_vec()),
        });
        self
    }

    /// Add a header assembled from parts (secrets filled in by egret).
    pub fn header_value(mut self, name: &str, value: Value) -> FetchRequest {
        self.inner.headers.push(wit::HeaderOp {
            name: name.to_owned(),
            value: wit::HeaderValue::Parts(value.parts),
        });
        self
    }

    /// Add `authorization: Basic base64(user:password)`, assembled by egret.
    pub fn basic_auth(mut self, user: Value, password: Value) -> FetchRequest {
        self.inner.headers.push(wit::HeaderOp {
            name: "authorization".to_owned(),
            value: wit::HeaderValue::BasicAuth(wit::BasicCredentials {
                user: user.parts,
                password: password.parts,
            }),
        });
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> FetchRequest {
        self.inner.body = vec![wit::ValuePart::Literal(body.into())];
        self
    }

    /// Set the body from parts (secrets filled in by egret).
    pub fn body_value(mut self, body: Value) -> FetchRequest {
        self.inner.body = body.parts;
        self
    }
}

/// What a [`fetch()`] got back.
pub struct FetchResponse {
    inner: wit::FetchResponse,
}

impl FetchResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.inner
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.inner.body)
            .map_err(|e| format!("fetch response is not the expected JSON: {e}"))
    }
}

/// Make an HTTP request through egret: only to hosts the handler's binding
/// grants (`fetch_hosts`), certificate-verified, bounded in count, size and
/// time; every call is audited. The error says why it failed.
pub fn fetch(req: FetchRequest) -> Result<FetchResponse, String> {
    wit_host::fetch(&req.inner).map(|inner| FetchResponse { inner })
}

/// HMAC-SHA256 keyed by the secret `key` (optionally inside a template such as
/// `"AWS4{}"`) that the handler never sees. With several messages the HMAC is
/// chained — each output keys the next — and only the last is returned: AWS
/// Signature V4's signing-key derivation and signature in one call.
pub fn hmac_sha256(
    key: &str,
    template: Option<&str>,
    messages: &[&[u8]],
) -> Result<Vec<u8>, String> {
    let key = wit::SecretKey {
        name: key.to_owned(),
        template: template.map(str::to_owned),
    };
    let messages: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec()).collect();
    wit_host::hmac_sha256(&key, &messages)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    wit_host::sha256(data)
}

/// Lower-case hex of `bytes` (digests, signatures).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Store a secret the handler obtained itself (e.g. an access token from a
/// [`fetch()`]) under a name its binding lists in `mint_secrets`, optionally
/// expiring after `ttl_ms`. It can then be filled in by name like any granted
/// secret, and egret masks it where a response echoes it.
pub fn set_secret(name: &str, value: impl AsRef<[u8]>, ttl_ms: Option<u64>) -> Result<(), String> {
    wit_host::set_secret(name, value.as_ref(), ttl_ms)
}

/// Severity of a [`log()`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Emit a log line. egret tags it with the handler and sandbox, truncates
/// long messages and redacts any granted secret value that appears in it.
pub fn log(level: Level, msg: &str) {
    let level = match level {
        Level::Debug => wit_host::LogLevel::Debug,
        Level::Info => wit_host::LogLevel::Info,
        Level::Warn => wit_host::LogLevel::Warn,
        Level::Error => wit_host::LogLevel::Error,
    };
    wit_host::log(level, msg);
}

/// `format!`-style logging macros: `egret_handler::log::info!("x = {x}")`.
pub mod log {
    pub use crate::{debug, error, info, warn};
}

/// Log at debug level, `format!`-style.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)*)) };
}

/// Log at info level, `format!`-style.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &::std::format!($($arg)*)) };
}

/// Log at warn level, `format!`-style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)*)) };
}

/// Log at error level, `format!`-style.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, &::std::format!($($arg)*)) };
}

/// Attach a short key/value to this request's audit event (egret writes them under
/// `handler_fields`), e.g. `audit_field("mcp.tool", "delete_repo")`. At most 8 per request;
/// a key is 1 to 32 characters of `a-z A-Z 0-9 . _ -`, a value at most 128 bytes (a longer one
/// is cut) and any granted secret value in it is redacted. Setting a key again replaces it.
pub fn audit_field(key: &str, value: &str) -> Result<(), String> {
    wit_host::audit_field(key, value)
}

/// Whether this binding edits responses as they stream (`response = { mode = "stream" }`):
/// then `on_event` (see [`export!`]) sees each chunk or server-sent event before it is sent.
pub fn response_streams() -> bool {
    wit_host::response_streams()
}

/// Whether a secret of that name exists and is granted to this handler.
pub fn has_secret(name: &str) -> bool {
    wit_host::has_secret(name)
}

/// The value of a secret. Only works if the admin granted `reveal` for it;
/// otherwise the error says which grant is needed. Prefer
/// [`Action::set_header_secret`], which never exposes the value.
pub fn reveal_secret(name: &str) -> Result<String, String> {
    wit_host::reveal_secret(name)
}

/// The key-value store of the requesting sandbox (each sandbox has its own).
pub mod kv {
    use super::wit_host;

    /// Read a value.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        wit_host::kv_get(key)
    }

    /// Read a value as text, if it exists and is valid UTF-8.
    pub fn get_string(key: &str) -> Option<String> {
        get(key).and_then(|v| String::from_utf8(v).ok())
    }

    /// Write a value (key at most 256 bytes, value at most 64 KiB, at most
    /// 10000 entries per sandbox).
    pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
        wit_host::kv_set(key, value.as_ref(), None)
    }

    /// Write a value that is gone after `ttl_ms` milliseconds.
    pub fn set_with_ttl(key: &str, value: impl AsRef<[u8]>, ttl_ms: u64) -> Result<(), String> {
        wit_host::kv_set(key, value.as_ref(), Some(ttl_ms))
    }

    /// Remove a key; whether it was there.
    pub fn delete(key: &str) -> bool {
        wit_host::kv_delete(key)
    }

    /// Add `delta` to the integer under `key` (absent: 0) atomically and return
    /// the new value; `ttl_ms` sets the expiry when the key is created (a budget
    /// window that does not slide).
    pub fn incr(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, String> {
        wit_host::kv_incr(key, delta, ttl_ms)
    }

    /// Set `key` to `new` only if its value is `expected` (`None`: only if
    /// absent); whether it was set.
    pub fn compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, String> {
        wit_host::kv_compare_and_set(key, expected, new.as_ref(), ttl_ms)
    }
}

/// Registers `fn(Context, Request) -> Action` as this component's handler,
/// and optionally the response phase: `on_response = fn(Context, Response) ->
/// ResponseAction` (bindings with any `response` mode; in `head`, `observe` and
/// `stream` the response's body is `None`), `on_chunk = fn(Context, &[u8])`
/// (`response = { mode = "observe" }`: after `on_response` passed the response
/// on, the body's chunks as they were sent), `on_event = fn(Context, &[u8]) ->
/// EventAction` (`response = { mode = "stream" }`: each chunk, or each whole
/// server-sent event, before it is sent) and `on_end = fn(Context)` (the end of
/// an observed or streamed body). Phases not given pass the response on
/// unchanged.
///
/// Use it exactly once, at the crate root of a `cdylib` crate:
///
/// ```no_run
/// use egret_handler::{Action, Context, Request, Response, ResponseAction};
/// fn handle(_ctx: Context, _req: Request) -> Action {
///     Action::forward()
/// }
/// fn strip(_ctx: Context, _resp: Response) -> ResponseAction {
///     ResponseAction::pass().remove_header("server")
/// }
/// egret_handler::export!(handle, on_response = strip);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($handler:path $(, $phase:ident = $f:path)* $(,)?) => {
        #[doc(hidden)]
        struct __EgretHandlerExport;

        impl $crate::__private::Guest for __EgretHandlerExport {
            fn handle(
                ctx: $crate::__private::WitContext,
                req: $crate::__private::WitRequest,
            ) -> $crate::__private::WitAction {
                $crate::__private::run($handler, ctx, req)
            }

            // All phases given leaves nothing for `..NONE` to fill.
            #[allow(clippy::needless_update)]
            fn on_response(
                ctx: $crate::__private::WitContext,
                resp: $crate::__private::WitResponse,
            ) -> $crate::__private::WitResponseAction {
                let phases = $crate::__private::Phases {
                    $($phase: Some($f),)*
                    ..$crate::__private::Phases::NONE
                };
                $crate::__private::on_response(phases.on_response, ctx, resp)
            }

            // All phases given leaves nothing for `..NONE` to fill.
            #[allow(clippy::needless_update)]
            fn on_response_chunk(ctx: $crate::__private::WitContext, chunk: ::std::vec::Vec<u8>) {
                let phases = $crate::__private::Phases {
                    $($phase: Some($f),)*
                    ..$crate::__private::Phases::NONE
                };
                $crate::__private::on_chunk(phases.on_chunk, ctx, chunk)
            }

            // All phases given leaves nothing for `..NONE` to fill.
            #[allow(clippy::needless_update)]
            fn on_response_event(
                ctx: $crate::__private::WitContext,
                event: ::std::vec::Vec<u8>,
            ) -> $crate::__private::WitEventAction {
                let phases = $crate::__private::Phases {
                    $($phase: Some($f),)*
                    ..$crate::__private::Phases::NONE
                };
                $crate::__private::on_event(phases.on_event, ctx, event)
            }

            // All phases given leaves nothing for `..NONE` to fill.
            #[allow(clippy::needless_update)]
            fn on_response_end(ctx: $crate::__private::WitContext) {
                let phases = $crate::__private::Phases {
                    $($phase: Some($f),)*
                    ..$crate::__private::Phases::NONE
                };
                $crate::__private::on_end(phases.on_end, ctx)
            }
        }

        $crate::bindings::__export_handler_world!(__EgretHandlerExport with_types_in $crate::bindings);
    };
}

/// What the stream phase (`on_event`) does with one chunk or server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Send it on unchanged.
    Pass,
    /// Send these bytes instead (for an event stream: whole events, each ending in a blank
    /// line; [`sse::Event::to_bytes`] writes one).
    Replace(Vec<u8>),
    /// Send nothing for it.
    Drop,
}

impl EventAction {
    fn into_wit(self) -> wit_streaming::EventAction {
        match self {
            EventAction::Pass => wit_streaming::EventAction::Pass,
            EventAction::Replace(b) => wit_streaming::EventAction::Replace(b),
            EventAction::Drop => wit_streaming::EventAction::Drop,
        }
    }
}

pub mod sse;

/// Support for [`export!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
    pub use wit_bindgen;

    pub type WitContext = super::wit::Context;
    pub type WitRequest = super::wit::Request;
    pub type WitAction = super::wit::Action;
    pub type WitResponse = super::wit::Response;
    pub type WitResponseAction = super::wit::ResponseAction;
    pub type WitEventAction = super::wit_streaming::EventAction;

    /// The optional phases named in `export!`.
    pub struct Phases {
        pub on_response: Option<fn(super::Context, super::Response) -> super::ResponseAction>,
        pub on_chunk: Option<fn(super::Context, &[u8])>,
        pub on_event: Option<fn(super::Context, &[u8]) -> super::EventAction>,
        pub on_end: Option<fn(super::Context)>,
    }

    impl Phases {
        pub const NONE: Phases = Phases {
            on_response: None,
            on_chunk: None,
            on_event: None,
            on_end: None,
        };
    }

    pub fn on_event(
        f: Option<fn(super::Context, &[u8]) -> super::EventAction>,
        ctx: WitContext,
        event: Vec<u8>,
    ) -> WitEventAction {
        match f {
            Some(f) => f(super::Context { inner: ctx }, &event).into_wit(),
            None => WitEventAction::Pass,
        }
    }

    /// Adapts the WIT types to the SDK types around the user's function.
    pub fn run(
        f: impl FnOnce(super::Context, super::Request) -> super::Action,
        ctx: WitContext,
        req: WitRequest,
    ) -> WitAction {
        let request = super::Request {
            inner: req.head,
            body: req.body,
        };
        f(super::Context { inner: ctx }, request).into_wit()
    }

    pub fn on_response(
        f: Option<fn(super::Context, super::Response) -> super::ResponseAction>,
        ctx: WitContext,
        resp: WitResponse,
    ) -> WitResponseAction {
        match f {
            Some(f) => {
                f(
                    super::Context { inner: ctx },
                    super::Response { inner: resp },
                )
                .inner
            }
            None => super::ResponseAction::pass().inner,
        }
    }

    pub fn on_chunk(f: Option<fn(super::Context, &[u8])>, ctx: WitContext, chunk: Vec<u8>) {
        if let Some(f) = f {
            f(super::Context { inner: ctx }, &chunk)
        }
    }

    pub fn on_end(f: Option<fn(super::Context)>, ctx: WitContext) {
        if let Some(f) = f {
            f(super::Context { inner: ctx })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authority: &str, pq: &str) -> Request {
        Request {
            inner: wit::RequestHead {
                method: "GET".into(),
                scheme: "https".into(),
                authority: authority.into(),
                path_with_query: pq.into(),
                headers: vec![("x-a".into(), b"1".to_vec()), ("x-a".into(), b"2".to_vec())],
            },
            body: Some(br#"{"model":"m"}"#.to_vec()),
        }
    }

    #[test]
    fn body_and_values() {
        #[derive(serde::Deserialize)]
        struct B {
            model: String,
        }
        let r = request("api.test", "/");
        assert_eq!(r.body_json::<B>().unwrap().model, "m");
        let a = Action::forward()
            .set_body_value(Value::new().text("k=").secret_as("S", Encoding::Percent))
            .set_header_basic_auth(
                "authorization",
                Value::new().text("id"),
                Value::new().secret("S"),
            );
        match a.into_wit() {
            wit::Action::Forward(f) => {
                assert_eq!(f.body.unwrap().len(), 2);
                assert!(matches!(
                    f.set_headers[0].value,
                    wit::HeaderValue::BasicAuth(_)
                ));
            }
            wit::Action::Respond(_) => panic!("expected forward"),
        }
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }

    #[test]
    fn request_accessors() {
        let r = request("api.test:8443", "/v1/x?y=1");
        assert_eq!(r.host(), "api.test");
        assert_eq!(r.path(), "/v1/x");
        assert_eq!(r.query(), Some("y=1"));
        assert_eq!(r.header("X-A"), Some(&b"1"[..]));
        assert_eq!(request("[::1]:80", "/").host(), "[::1]");
        assert_eq!(request("api.test", "/").host(), "api.test");
    }

    #[test]
    fn builders() {
        let a = Action::forward()
            .set_header("x-k", "v")
            .set_header_secret("authorization", "Bearer {}", "tok")
            .remove_header("cookie")
            .path("/new");
        match a.into_wit() {
            wit::Action::Forward(f) => {
                assert_eq!(f.set_headers.len(), 2);
                assert_eq!(f.remove_headers, vec!["cookie".to_string()]);
                assert_eq!(f.path_with_query.as_deref(), Some("/new"));
            }
            wit::Action::Respond(_) => panic!("expected forward"),
        }
        match Action::deny(403, "no").into_wit() {
            wit::Action::Respond(r) => {
                assert_eq!(r.status, 403);
                assert_eq!(r.body, b"no\n");
            }
            wit::Action::Forward(_) => panic!("expected respond"),
        }
    }

    #[test]
    fn misuse_is_detected() {
        let a = Action::respond(200).set_header("x", "y");
        assert!(matches!(a.inner, ActionInner::Misuse(_)));
    }

    #[test]
    fn params_default_to_empty_object() {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(default)]
            x: Option<u32>,
        }
        let ctx = Context {
            inner: wit::Context {
                handler_name: "h".into(),
                sandbox_id: "s".into(),
                params_json: String::new(),
            },
        };
        let p: P = ctx.params().unwrap();
        assert!(p.x.is_none());
    }
}

//! # egret-handler: write egret request handlers in Rust
//!
//! An egret handler is a WebAssembly component that sees the *head* of one
//! outbound HTTP request made by a sandboxed agent and decides what happens to
//! it. It can
//!
//! * **forward** the request upstream with header edits (set / remove), an
//!   optional new path, and credentials injected *by reference*
//!   ([`Action::set_header_secret`]): egret fills in the secret value after the
//!   handler returns, so the handler never holds it; or
//! * **respond** locally ([`Action::respond`], [`Action::deny`]): nothing
//!   reaches upstream.
//!
//! The handler never chooses the destination (scheme and authority are those
//! of the original request), never sees the body, and has no sockets, files or
//! environment variables. What it can call is listed in this crate: [`log()`],
//! [`has_secret`], [`reveal_secret`] (only for secrets the admin granted with
//! `reveal`), and a per-sandbox key-value store in [`kv`].
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
//! egret can load. The contract is the WIT world `egret:handler/handler@0.1.0`
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
        serde_json::from_str(if json.is_empty() || json == "null" { "{}" } else { json })
    }
}

/// The head of the request being decided: method, target and headers. The
/// body is never available to handlers.
pub struct Request {
    inner: wit::RequestHead,
}

impl Request {
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
        wit_host::kv_set(key, value.as_ref())
    }
}

/// Registers `fn(Context, Request) -> Action` as this component's handler.
///
/// Use it exactly once, at the crate root of a `cdylib` crate:
///
/// ```no_run
/// fn handle(_ctx: egret_handler::Context, _req: egret_handler::Request) -> egret_handler::Action {
///     egret_handler::Action::forward()
/// }
/// egret_handler::export!(handle);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        #[doc(hidden)]
        struct __EgretHandlerExport;

        impl $crate::__private::Guest for __EgretHandlerExport {
            fn handle(
                ctx: $crate::__private::WitContext,
                req: $crate::__private::WitRequestHead,
            ) -> $crate::__private::WitAction {
                $crate::__private::run($handler, ctx, req)
            }
        }

        $crate::bindings::__export_handler_world!(__EgretHandlerExport with_types_in $crate::bindings);
    };
}

/// Support for [`export!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
    pub use wit_bindgen;

    pub type WitContext = super::wit::Context;
    pub type WitRequestHead = super::wit::RequestHead;
    pub type WitAction = super::wit::Action;

    /// Adapts the WIT types to the SDK types around the user's function.
    pub fn run(
        f: impl FnOnce(super::Context, super::Request) -> super::Action,
        ctx: WitContext,
        req: WitRequestHead,
    ) -> WitAction {
        f(super::Context { inner: ctx }, super::Request { inner: req }).into_wit()
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
        }
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

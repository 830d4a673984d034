//! The request phase of a handler route: what the handler sees and answers, and how the
//! engine carries its decision out.
use super::response::{ResponseMode, ResponsePhase};
use super::{
    fail, guard, read_limited, response, text_response, upgrade, Exchange, Outcome, ReadError,
};
use crate::body::{boxed, full, ProxyBody, RequestBody};
use crate::echo_guard::Patterns;
use crate::headers::strip_hop_by_hop;
use crate::metrics::Decision;
use crate::Proxy;
use bytes::Bytes;
use egret_policy::Binding;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use std::sync::Arc;

/// The request head a handler sees.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    /// Method.
    pub method: &'a Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The host (and port when not the default) the request is for.
    pub authority: String,
    /// Path and query.
    pub path_and_query: &'a str,
    /// Request headers (hop-by-hop already removed).
    pub headers: &'a http::HeaderMap,
}

/// What a handler decided, validated and with secrets filled in.
pub enum HandlerAction {
    /// Forward upstream with these edits.
    Forward {
        /// Headers to set (replace).
        set: Vec<(HeaderName, HeaderValue)>,
        /// Headers to remove.
        remove: Vec<HeaderName>,
        /// New path and query.
        path_and_query: Option<PathAndQuery>,
        /// A replacement body (bindings that buffer the request body).
        body: Option<Bytes>,
        /// Every form a secret was written in, for the echo guard (never logged).
        filled: Vec<Bytes>,
    },
    /// Answer without contacting the upstream.
    Respond(Response<Bytes>),
}

/// A handler's decision, and — when its binding opted into the response phase — the same
/// handler instance, to see the response.
pub struct Dispatched {
    /// The decision.
    pub action: HandlerAction,
    /// The response phase, when opted in.
    pub response: Option<Box<dyn ResponsePhase>>,
    /// How long the request waited for a handler instance, when every one was taken.
    pub instance_wait: Option<std::time::Duration>,
    /// What the handler attached to the request's audit event (bounded, redacted).
    pub audit_fields: Vec<(String, String)>,
}

/// A handler failed: the request is not forwarded (fail closed).
#[derive(Debug, Clone)]
pub struct HandlerFailure {
    /// Status for the client (502 unless the engine says otherwise).
    pub status: StatusCode,
    /// What failed; its text is the metric label and the audit event's error prefix.
    pub kind: crate::metrics::HandlerFailureKind,
    /// Safe to show the client: names the handler and the reason, never a secret.
    pub message: String,
    /// Seconds for a `Retry-After` header: the failure is the sidecar's load, not the
    /// request's (no handler instance came free).
    pub retry_after: Option<u32>,
    /// How long the request waited for a handler instance before it failed, if it did.
    pub instance_wait: Option<std::time::Duration>,
}

impl HandlerFailure {
    /// The answer for the client, and the failure in the request's audit outcome.
    pub(super) fn answer(&self, outcome: &mut Outcome) -> Response<ProxyBody> {
        outcome.failed(
            Decision::Error,
            format!("{}: {}", self.kind.as_str(), self.message),
        );
        let mut resp = text_response(
            self.status,
            Decision::Error,
            format!("egret: {}\n", self.message),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The bridge to the handler engine (egret-wasm, adapted in egret-app's glue).
pub trait HandlerDispatch: Send + Sync {
    /// Run the handler bound by `binding` on a request (and its buffered body, when the
    /// binding opted in), with the handler versions of policy `generation` (the one the
    /// request started on).
    fn dispatch<'a>(
        &'a self,
        binding: &'a Binding,
        generation: u64,
        head: RequestHead<'a>,
        body: Option<Bytes>,
    ) -> BoxFuture<'a, Result<Dispatched, HandlerFailure>>;

    /// Lower-case hex sha256 of the module that handler `handler` runs on policy `generation`
    /// (for the audit event), if it is loaded.
    fn module_sha256(&self, _handler: &str, _generation: u64) -> Option<Arc<str>> {
        None
    }
}

/// A request's body while its handler decides: buffered for the guest when the binding asks
/// for it, else still unread (it streams past the handler).
enum HeldBody {
    Buffered(Bytes),
    Unread(Incoming),
}

impl Proxy {
    /// Run the request's handler on its head and carry out what it returns.
    pub(super) async fn through_handler(
        &self,
        cx: &Exchange<'_>,
        req: Request<Incoming>,
        binding: &Binding,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let Some(engine) = &self.handlers else {
            let msg = format!(
                "handler {} cannot run: no handler engine in this build",
                binding.handler
            );
            return fail(StatusCode::BAD_GATEWAY, Decision::Error, msg, outcome);
        };
        let (mut parts, body) = req.into_parts();
        // An upload a handler or egret answers before reading is read on after the answer
        // (see `answer_before_body`), unless the client waits for `100 Continue`.
        let drain = crate::body::drains_after_answer(parts.version, &parts.headers);
        // An HTTP/1.1 Upgrade (WebSocket) survives the hop-by-hop cleanup: the handler sees
        // `upgrade` (so it can deny it) and forward() re-establishes it upstream.
        let upgrade = upgrade::protocol(&parts);
        strip_hop_by_hop(&mut parts.headers, true);
        if let Some(proto) = &upgrade {
            parts.headers.insert(http::header::UPGRADE, proto.clone());
        }
        let body = match hold_body(body, binding, drain, outcome).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let dispatched = match dispatch(&**engine, cx, binding, &parts, &body, outcome).await {
            Ok(d) => d,
            Err(failed) => return failed,
        };
        let (set, remove, path_and_query, replacement, filled) = match dispatched.action {
            HandlerAction::Respond(resp) => {
                outcome.decision = Decision::Respond;
                return answered(resp, body, drain);
            }
            HandlerAction::Forward {
                set,
                remove,
                path_and_query,
                body,
                filled,
            } => (set, remove, path_and_query, body, filled),
        };
        let back = WayBack::new(binding, dispatched.response, &filled);
        edit_head(&mut parts, set, remove, path_and_query);
        if back.needs_identity() {
            parts.headers.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        let body = upstream_body(&mut parts.headers, replacement, body);
        let resp = self
            .forward(cx, Request::from_parts(parts, body), upgrade, outcome)
            .await;
        if outcome.decision != Decision::Forward || resp.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            return resp;
        }
        back.carry(resp, &cx.target.host, outcome).await
    }
}

/// Hand the request's head (and its buffered body) to the handler engine, on the policy
/// generation the request runs on; a failure is the answer.
async fn dispatch(
    engine: &dyn HandlerDispatch,
    cx: &Exchange<'_>,
    binding: &Binding,
    parts: &http::request::Parts,
    body: &HeldBody,
    outcome: &mut Outcome,
) -> Result<Dispatched, Response<ProxyBody>> {
    let buffered = match body {
        HeldBody::Buffered(b) => Some(b.clone()),
        HeldBody::Unread(_) => None,
    };
    let head = handler_head(cx, parts);
    match engine
        .dispatch(binding, cx.policy.generation(), head, buffered)
        .await
    {
        Ok(mut d) => {
            outcome.instance_wait = d.instance_wait;
            outcome.handler_fields = std::mem::take(&mut d.audit_fields);
            Ok(d)
        }
        Err(f) => {
            tracing::warn!(handler = %binding.handler, kind = f.kind.as_str(), "handler failed; request not forwarded");
            outcome.instance_wait = f.instance_wait;
            Err(f.answer(outcome))
        }
    }
}

/// The way back of a response to a request its handler forwarded: the handler's response
/// phase (when its binding opted in), then the echo guard (when secrets were filled in).
struct WayBack<'b> {
    handler: &'b str,
    phase: Option<Box<dyn ResponsePhase>>,
    guard: Option<Arc<Patterns>>,
}

impl<'b> WayBack<'b> {
    fn new(
        binding: &'b Binding,
        phase: Option<Box<dyn ResponsePhase>>,
        filled: &[Bytes],
    ) -> WayBack<'b> {
        let guard = (binding.echo_guard && !filled.is_empty()).then(|| guard::patterns(filled));
        WayBack {
            handler: &binding.handler,
            phase,
            guard,
        }
    }

    /// Whether the upstream must answer identity-encoded: to be checked for an echoed secret,
    /// or split into events for a stream phase.
    fn needs_identity(&self) -> bool {
        self.guard.is_some()
            || matches!(
                self.phase.as_ref().map(|p| p.mode()),
                Some(ResponseMode::Stream(_))
            )
    }

    async fn carry(
        self,
        resp: Response<ProxyBody>,
        host: &str,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let resp = match self.phase {
            Some(phase) => response::phase(resp, phase, self.handler, outcome).await,
            None => resp,
        };
        match self.guard {
            Some(p) => guard::response(resp, p, host, outcome),
            None => resp,
        }
    }
}

/// The handler's edits of the request head: remove, then set headers; a new path and query.
fn edit_head(
    parts: &mut http::request::Parts,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
    path_and_query: Option<PathAndQuery>,
) {
    for name in remove {
        parts.headers.remove(name);
    }
    for (name, value) in set {
        parts.headers.insert(name, value);
    }
    if let Some(pq) = path_and_query {
        let uri = std::mem::take(&mut parts.uri);
        parts.uri = Uri::builder().path_and_query(pq).build().unwrap_or(uri);
    }
}

/// The body for the guest, when the binding buffers it (refusing one over its bound); else
/// the body as it is, to stream past.
async fn hold_body(
    body: Incoming,
    binding: &Binding,
    drain: bool,
    outcome: &mut Outcome,
) -> Result<HeldBody, Response<ProxyBody>> {
    let Some(max) = binding.body_max else {
        return Ok(HeldBody::Unread(body));
    };
    match read_limited(boxed(body), max).await {
        Ok(b) => Ok(HeldBody::Buffered(b)),
        Err(ReadError::TooLarge(unread)) => {
            let msg = format!(
                "handler {} buffers request bodies up to {max} bytes (body.max_bytes); \
                 this request's body is larger",
                binding.handler
            );
            let resp = fail(StatusCode::PAYLOAD_TOO_LARGE, Decision::Deny, msg, outcome);
            let (p, b) = resp.into_parts();
            let b = crate::body::answer_before_body(b, unread, drain);
            Err(Response::from_parts(p, b))
        }
        Err(ReadError::Body(e)) => {
            let msg = format!("reading the request body failed: {e}");
            Err(fail(StatusCode::BAD_REQUEST, Decision::Error, msg, outcome))
        }
    }
}

/// The head as the handler sees it: the authority the request named, the scheme of the
/// connection.
fn handler_head<'a>(cx: &Exchange<'_>, parts: &'a http::request::Parts) -> RequestHead<'a> {
    let target = cx.target;
    let authority = match (target.port, target.host.contains(':')) {
        (Some(p), true) => format!("[{}]:{p}", target.host),
        (Some(p), false) => format!("{}:{p}", target.host),
        (None, true) => format!("[{}]", target.host),
        (None, false) => target.host.clone(),
    };
    RequestHead {
        method: &parts.method,
        scheme: if cx.info.tls { "https" } else { "http" },
        authority,
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
    }
}

/// The handler answered itself: its response, with an upload still unread held (and with
/// `drain` read on) so the client sees the answer rather than a reset stream or a closed
/// connection.
fn answered(resp: Response<Bytes>, body: HeldBody, drain: bool) -> Response<ProxyBody> {
    let (p, b) = resp.into_parts();
    let b = match body {
        HeldBody::Unread(unread) => crate::body::answer_before_body(full(b), boxed(unread), drain),
        HeldBody::Buffered(_) => full(b),
    };
    Response::from_parts(p, b)
}

/// The body that goes upstream: the handler's replacement, else the buffered body (either with
/// its length), else the unread body streaming through.
fn upstream_body(
    headers: &mut http::HeaderMap,
    replacement: Option<Bytes>,
    body: HeldBody,
) -> RequestBody {
    let whole = match (replacement, body) {
        (Some(b), _) | (None, HeldBody::Buffered(b)) => b,
        (None, HeldBody::Unread(stream)) => {
            return RequestBody::Stream(crate::body::Upload::new(stream, headers))
        }
    };
    headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(whole.len() as u64),
    );
    RequestBody::Bytes(http_body_util::Full::new(whole))
}

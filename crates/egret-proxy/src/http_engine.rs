//! The HTTP engine: hyper serves the sandbox side (HTTP/1.1 with keep-alive, h2 and h2c), every
//! request is evaluated against the policy generation current when it began, optionally
//! decided by a handler, and forwarded to the name it carries with bodies streamed.
use crate::authority::{request_target, AuthorityError, Target};
use crate::body::{boxed, full, ProxyBody, RequestBody};
use crate::conn::ConnInfo;
use crate::headers::{strip_h3_alt_svc, strip_hop_by_hop};
use crate::metrics::Decision;
use crate::upstream::ConnectError;
use crate::Proxy;
use bytes::Bytes;
use egret_policy::{Binding, CompiledPolicy, Destination, RequestAction};
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

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

/// What a response phase decided.
pub enum ResponseDecision {
    /// Pass the response on: remove, then set these headers, replace the body when given.
    Pass {
        /// Headers to set.
        set: Vec<(HeaderName, HeaderValue)>,
        /// Headers to remove.
        remove: Vec<HeaderName>,
        /// A replacement body (buffered responses only).
        body: Option<Bytes>,
    },
    /// Replace the response.
    Replace(Response<Bytes>),
}

/// How a response phase sees the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// The head.
    Head,
    /// The head and the whole body, up to this many bytes.
    Buffer(u64),
    /// The body's chunks after they were sent.
    Observe,
    /// Each chunk (for `text/event-stream`, each whole event) of at most this many bytes,
    /// before it is sent.
    Stream(u64),
}

/// What the stream phase decided for one piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDecision {
    /// Send it on unchanged.
    Pass,
    /// Send these bytes instead.
    Replace(Bytes),
    /// Send nothing for it.
    Drop,
}

/// The response phase of one request's handler instance.
pub trait ResponsePhase: Send + 'static {
    /// What it sees.
    fn mode(&self) -> ResponseMode;
    /// Decide on the response (head and buffered modes).
    fn decide<'a>(
        &'a mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<Bytes>,
    ) -> BoxFuture<'a, Result<ResponseDecision, HandlerFailure>>;
    /// A body chunk, after it was sent (observe mode). A failure is logged; bytes already
    /// went out.
    fn chunk<'a>(&'a mut self, chunk: Bytes) -> BoxFuture<'a, Result<(), HandlerFailure>>;
    /// The body ended (observe and stream modes).
    fn end<'a>(&'a mut self) -> BoxFuture<'a, Result<(), HandlerFailure>>;
    /// One piece of the body before it is sent (stream mode): a chunk, or a whole
    /// server-sent event.
    fn event<'a>(
        &'a mut self,
        event: Bytes,
    ) -> BoxFuture<'a, Result<EventDecision, HandlerFailure>>;
    /// What the handler attached to the request's audit event so far, in every phase.
    fn audit_fields(&self) -> Vec<(String, String)> {
        Vec::new()
    }
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

fn text_response(status: StatusCode, decision: Decision, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-egret-decision",
        HeaderValue::from_static(decision.as_str()),
    );
    r
}

/// The outcome of one request, for the audit event.
pub(crate) struct Outcome {
    pub decision: Decision,
    pub rule: Arc<str>,
    pub handler: Option<Arc<str>>,
    pub error: Option<String>,
    /// Occurrences of filled secrets the echo guard masked (set when it was on).
    pub masked: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// How long the request waited for a handler instance, when it had to.
    pub instance_wait: Option<std::time::Duration>,
    /// What the handler attached (`handler_fields`).
    pub handler_fields: Vec<(String, String)>,
    /// What it had attached when its stream phase ended (response mode "stream"): set
    /// before the body ends, so the audit event, written then, carries them.
    pub stream_fields: Option<crate::body::LateFields>,
    /// Who decided (someone asked, when no rule did: `--ask`).
    pub decided_by: crate::ask::DecidedBy,
    /// The shadow candidate's decision, when it differs from the live policy's.
    pub shadow: Option<egret_policy::DryRun>,
}

/// A request decided: the response for the sandbox, the destination it named (when it got
/// that far) and what to audit.
struct Decided {
    resp: Response<ProxyBody>,
    target: Option<Target>,
    outcome: Outcome,
}

impl Decided {
    /// Refused or failed before any rule matched: `msg` is the body and the audit reason.
    fn failed(
        status: StatusCode,
        decision: Decision,
        msg: String,
        target: Option<Target>,
    ) -> Decided {
        Decided {
            resp: text_response(status, decision, format!("egret: {msg}\n")),
            target,
            outcome: Outcome {
                decision,
                rule: Arc::from("-"),
                handler: None,
                error: Some(msg),
                masked: None,
                instance_wait: None,
                handler_fields: Vec::new(),
                stream_fields: None,
                decided_by: crate::ask::DecidedBy::Policy,
                shadow: None,
            },
        }
    }
}

impl Proxy {
    pub(crate) async fn serve_http<I>(self: Arc<Self>, io: I, info: Arc<ConnInfo>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let svc_info = info.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            let info = svc_info.clone();
            async move { Ok::<_, Infallible>(this.handle_request(req, &info).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.cfg.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .enable_connect_protocol();
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .await
        {
            tracing::debug!(error = %e, "sandbox HTTP connection ended with an error");
        }
    }

    pub(crate) async fn handle_request(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let started_at = std::time::SystemTime::now();
        // Counted where the body is handed upstream (forward), reported in the audit event.
        let req_bytes = crate::audit::ReqBytes::default();
        req.extensions_mut().insert(req_bytes.clone());
        let proto = crate::audit::http_proto(info.tls, req.version());
        // The generation this request runs on, whatever happens to the policy meanwhile.
        let policy = self.policy.load_full();
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let Decided {
            resp,
            target,
            outcome,
        } = self.decide_and_forward(req, info, &policy).await;
        let start = crate::audit::RequestStart {
            info,
            policy: &policy,
            method,
            path,
            proto,
            start,
            started_at,
            req_bytes,
        };
        crate::audit::request(self, start, target.as_ref(), outcome, resp)
    }

    /// Decide one request on `policy` and carry the decision out: refuse it, hand it to its
    /// handler, or forward it.
    async fn decide_and_forward(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
        policy: &CompiledPolicy,
    ) -> Decided {
        let target = match self.request_destination(&mut req, info) {
            Ok(t) => t,
            Err(refused) => return *refused,
        };
        let port = target.port.unwrap_or(info.orig.port());
        let dest = Destination::named(&target.host, port);
        let verdict = policy.evaluate_request(
            &dest,
            req.method().as_str(),
            req.uri().path(),
            req.uri().query(),
        );
        let shadow = self.shadow_decision(
            policy,
            &verdict,
            &crate::shadow::Seen {
                dest: &dest,
                tls: info.tls,
                host: &target.host,
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query(),
            },
        );
        let outcome = |decision, handler| Outcome {
            decision,
            rule: verdict.rule.clone(),
            handler,
            error: None,
            masked: None,
            instance_wait: None,
            handler_fields: Vec::new(),
            stream_fields: None,
            decided_by: crate::ask::DecidedBy::Policy,
            shadow: shadow.clone(),
        };
        // No rule decides (`--ask`): an approval of the connection covers its requests,
        // otherwise the request itself is asked about.
        let mut asked = None;
        if matches!(verdict.action, RequestAction::Deny { .. })
            && policy.is_undecided(&verdict.rule)
        {
            asked = match info.asked {
                Some(a) if a.allow => Some(a),
                _ => {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    self.ask(&target.host, port, Some((req.method().as_str(), path)))
                        .await
                }
            };
        }
        let approved = asked.is_some_and(|a| a.allow);
        let mut decided = match &verdict.action {
            RequestAction::Deny { status, message } if !approved => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN);
                let because = message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                let body = format!(
                    "egret: {} {} to {}:{} denied by rule {}{because} (sandbox {}, policy generation {})\n",
                    req.method(),
                    crate::audit::mask_query(req.uri().path_and_query().map_or("/", |p| p.as_str())),
                    target.host,
                    port,
                    verdict.rule,
                    self.cfg.sandbox_id,
                    policy.generation()
                );
                // Answered before the upload is read: it is held (and over h2 drained) so the
                // client sees the denial rather than a reset stream.
                let h2 = req.version() == Version::HTTP_2;
                let (head, denial) = text_response(status, Decision::Deny, body).into_parts();
                let unread = boxed(req.into_body());
                let denial = crate::body::answer_before_body(denial, unread, h2);
                Decided {
                    resp: Response::from_parts(head, denial),
                    target: Some(target),
                    outcome: outcome(Decision::Deny, None),
                }
            }
            RequestAction::Allow | RequestAction::Deny { .. } => {
                let (resp, outcome) = self
                    .forward(
                        req.map(RequestBody::Stream),
                        info,
                        &target,
                        port,
                        None,
                        outcome(Decision::Forward, None),
                    )
                    .await;
                Decided {
                    resp,
                    target: Some(target),
                    outcome,
                }
            }
            RequestAction::Handler(id) => {
                let binding = policy.binding(*id);
                let outcome = outcome(Decision::Forward, Some(binding.handler.clone()));
                let (resp, outcome) = self
                    .through_handler(req, info, policy, binding, &target, port, outcome)
                    .await;
                Decided {
                    resp,
                    target: Some(target),
                    outcome,
                }
            }
        };
        if let Some(a) = asked {
            decided.outcome.decided_by = a.by;
        }
        // Report-only: carried out as decided above, audited as what the policy would have
        // done, naming the rule that would have denied it.
        if let Some(rule) = &verdict.would_deny {
            let o = &mut decided.outcome;
            if matches!(o.decision, Decision::Forward | Decision::Respond) {
                o.decision = Decision::WouldDeny;
                o.rule = rule.clone();
            }
        }
        decided
    }

    /// The shadow candidate's decision on a request, when one is loaded and decides it
    /// otherwise than the live `policy` did (`verdict`).
    fn shadow_decision(
        &self,
        policy: &CompiledPolicy,
        verdict: &egret_policy::RequestVerdict,
        req: &crate::shadow::Seen<'_>,
    ) -> Option<egret_policy::DryRun> {
        let slot = self.shadow.load();
        let differs = slot.as_ref()?.observe(policy, verdict, req)?;
        self.metrics.shadow_difference();
        Some(differs)
    }

    /// The host and port a request is for (refusing requests egret cannot or will not carry):
    /// its authority, else the connection's name, else the dialled address; a synthetic
    /// address stands for the name egret gave out for it.
    fn request_destination(
        &self,
        req: &mut Request<Incoming>,
        info: &ConnInfo,
    ) -> Result<Target, Box<Decided>> {
        let mut target = match request_target(req) {
            Ok(t) => t,
            Err(AuthorityError::Missing) => Target {
                host: info
                    .conn_name()
                    .map(str::to_string)
                    .unwrap_or_else(|| info.orig.ip().to_string()),
                port: None,
            },
            Err(e) => {
                return Err(Box::new(Decided::failed(
                    StatusCode::BAD_REQUEST,
                    Decision::Error,
                    e.to_string(),
                    None,
                )))
            }
        };
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            if self.dns.is_synthetic(ip) {
                match self.dns.lookup(ip) {
                    Some(n) => target.host = n.to_string(),
                    None => {
                        return Err(Box::new(Decided::failed(
                            StatusCode::BAD_GATEWAY,
                            Decision::Error,
                            format!("{ip} is an expired egret DNS answer; resolve the name again"),
                            Some(target),
                        )))
                    }
                }
            }
        }
        if let Some(sni) = info.sni.as_ref().filter(|_| info.tls) {
            if !target.host.eq_ignore_ascii_case(sni) {
                let msg = format!(
                    "request for {} on a TLS connection for {sni}: open a new connection for that host",
                    target.host
                );
                return Err(Box::new(Decided::failed(
                    StatusCode::MISDIRECTED_REQUEST,
                    Decision::Deny,
                    msg,
                    Some(target),
                )));
            }
        }
        if let Err(msg) = normalize_extended_connect(req) {
            return Err(Box::new(Decided::failed(
                StatusCode::NOT_IMPLEMENTED,
                Decision::Deny,
                msg,
                Some(target),
            )));
        }
        if req.method() == Method::CONNECT {
            let msg = if info.explicit {
                "CONNECT must be the first request on a connection to egret's proxy: open a new connection for it"
            } else {
                "CONNECT is not supported: egret is a transparent proxy, connect to the destination directly"
            };
            return Err(Box::new(Decided::failed(
                StatusCode::METHOD_NOT_ALLOWED,
                Decision::Deny,
                msg.into(),
                Some(target),
            )));
        }
        if info.explicit && !info.tls && req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            // Carried as plain HTTP it would reach the host unencrypted.
            return Err(Box::new(Decided::failed(
                StatusCode::BAD_REQUEST,
                Decision::Error,
                crate::explicit::HTTPS_NEEDS_CONNECT.into(),
                Some(target),
            )));
        }
        Ok(target)
    }

    /// Run the request's handler on its head and carry out what it returns.
    #[allow(clippy::too_many_arguments)]
    async fn through_handler(
        &self,
        req: Request<Incoming>,
        info: &ConnInfo,
        policy: &CompiledPolicy,
        binding: &Binding,
        target: &Target,
        port: u16,
        mut outcome: Outcome,
    ) -> (Response<ProxyBody>, Outcome) {
        let Some(engine) = &self.handlers else {
            let msg = format!(
                "handler {} cannot run: no handler engine in this build",
                binding.handler
            );
            outcome.decision = Decision::Error;
            outcome.error = Some(msg.clone());
            return (
                text_response(
                    StatusCode::BAD_GATEWAY,
                    Decision::Error,
                    format!("egret: {msg}\n"),
                ),
                outcome,
            );
        };
        let (mut parts, body) = req.into_parts();
        let h2 = parts.version == Version::HTTP_2;
        // An HTTP/1.1 Upgrade (WebSocket) survives the hop-by-hop cleanup: the handler sees
        // `upgrade` (so it can deny it) and forward() re-establishes it upstream.
        let upgrade = upgrade_protocol(&parts);
        strip_hop_by_hop(&mut parts.headers, true);
        if let Some(proto) = &upgrade {
            parts.headers.insert(http::header::UPGRADE, proto.clone());
        }
        // The body for the guest, when the binding buffers it; else it streams past.
        let (buffered, body) = match binding.body_max {
            None => (None, Some(body)),
            Some(max) => match read_limited(boxed(body), max).await {
                Ok(b) => (Some(b), None),
                Err(ReadError::TooLarge(unread)) => {
                    let msg = format!(
                        "handler {} buffers request bodies up to {max} bytes (body.max_bytes); \
                         this request's body is larger",
                        binding.handler
                    );
                    let (resp, outcome) =
                        fail(StatusCode::PAYLOAD_TOO_LARGE, Decision::Deny, msg, outcome);
                    let (p, b) = resp.into_parts();
                    let b = crate::body::answer_before_body(b, unread, h2);
                    return (Response::from_parts(p, b), outcome);
                }
                Err(ReadError::Body(e)) => {
                    let msg = format!("reading the request body failed: {e}");
                    return fail(StatusCode::BAD_REQUEST, Decision::Error, msg, outcome);
                }
            },
        };
        let authority = match (target.port, target.host.contains(':')) {
            (Some(p), true) => format!("[{}]:{p}", target.host),
            (Some(p), false) => format!("{}:{p}", target.host),
            (None, true) => format!("[{}]", target.host),
            (None, false) => target.host.clone(),
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let head = RequestHead {
            method: &parts.method,
            scheme: if info.tls { "https" } else { "http" },
            authority,
            path_and_query: path,
            headers: &parts.headers,
        };
        let dispatched = engine
            .dispatch(binding, policy.generation(), head, buffered.clone())
            .await;
        let (action, phase) = match dispatched {
            Ok(d) => {
                outcome.instance_wait = d.instance_wait;
                outcome.handler_fields = d.audit_fields;
                (d.action, d.response)
            }
            Err(f) => {
                tracing::warn!(handler = %binding.handler, kind = f.kind.as_str(), "handler failed; request not forwarded");
                outcome.error = Some(format!("{}: {}", f.kind.as_str(), f.message));
                outcome.decision = Decision::Error;
                outcome.instance_wait = f.instance_wait;
                let mut resp =
                    text_response(f.status, Decision::Error, format!("egret: {}\n", f.message));
                if let Some(secs) = f.retry_after {
                    resp.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return (resp, outcome);
            }
        };
        match action {
            HandlerAction::Respond(resp) => {
                outcome.decision = Decision::Respond;
                let (p, b) = resp.into_parts();
                let b = match body {
                    Some(unread) => crate::body::answer_before_body(full(b), boxed(unread), h2),
                    None => full(b),
                };
                (Response::from_parts(p, b), outcome)
            }
            HandlerAction::Forward {
                set,
                remove,
                path_and_query,
                body: replacement,
                filled,
            } => {
                for name in remove {
                    parts.headers.remove(name);
                }
                for (name, value) in set {
                    parts.headers.insert(name, value);
                }
                if let Some(pq) = path_and_query {
                    parts.uri = Uri::builder()
                        .path_and_query(pq)
                        .build()
                        .unwrap_or(parts.uri);
                }
                let guard =
                    (binding.echo_guard && !filled.is_empty()).then(|| echo_patterns(&filled));
                let streams = matches!(
                    phase.as_ref().map(|p| p.mode()),
                    Some(ResponseMode::Stream(_))
                );
                if guard.is_some() || streams {
                    // Only an identity-encoded response can be checked for an echoed secret
                    // or split into events for the stream phase.
                    parts.headers.insert(
                        http::header::ACCEPT_ENCODING,
                        HeaderValue::from_static("identity"),
                    );
                }
                let out = match (replacement, buffered, body) {
                    (Some(b), _, _) | (None, Some(b), _) => {
                        parts.headers.insert(
                            http::header::CONTENT_LENGTH,
                            HeaderValue::from(b.len() as u64),
                        );
                        RequestBody::Bytes(http_body_util::Full::new(b))
                    }
                    (None, None, Some(stream)) => RequestBody::Stream(stream),
                    (None, None, None) => RequestBody::Bytes(Default::default()),
                };
                let req = Request::from_parts(parts, out);
                let (resp, outcome) = self
                    .forward(req, info, target, port, upgrade, outcome)
                    .await;
                if outcome.decision != Decision::Forward
                    || resp.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    return (resp, outcome);
                }
                let (resp, outcome) = match phase {
                    Some(phase) => response_phase(resp, phase, &binding.handler, outcome).await,
                    None => (resp, outcome),
                };
                match guard {
                    Some(p) => guard_response(resp, p, &target.host, outcome),
                    None => (resp, outcome),
                }
            }
        }
    }

    async fn forward(
        &self,
        req: Request<RequestBody>,
        info: &ConnInfo,
        target: &Target,
        port: u16,
        upgrade_hint: Option<HeaderValue>,
        mut outcome: Outcome,
    ) -> (Response<ProxyBody>, Outcome) {
        let (mut parts, body) = req.into_parts();
        // HTTP/1.1 Upgrade (WebSocket): the one hop-by-hop exchange a proxy must carry over.
        // (a handler path has already removed `Connection` and passes the protocol as a hint)
        let upgrade = upgrade_hint.or_else(|| upgrade_protocol(&parts));
        let downstream_upgrade = if upgrade.is_some() {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        strip_hop_by_hop(&mut parts.headers, true);
        if let Some(proto) = &upgrade {
            parts.headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            parts.headers.insert(http::header::UPGRADE, proto.clone());
        }
        // RFC 8441 carries no key (the h2 stream is the handshake); the HTTP/1.1 leg needs one
        // of its own, and its answer is checked before the h2 client is told 200.
        let ws_key = parts
            .extensions
            .get::<ExtendedConnect>()
            .map(|_| fresh_websocket_key());
        if let Some(key) = &ws_key {
            parts
                .headers
                .insert(http::header::SEC_WEBSOCKET_KEY, key.clone());
            parts
                .headers
                .entry(http::header::SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        // hyper-util sets Host from the URI (h1) or :authority (h2).
        parts.headers.remove(http::header::HOST);
        let scheme = if info.tls { "https" } else { "http" };
        let host_part = if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // The default port stays implicit: HTTP/2 sends the URI authority verbatim.
        let default_port = if info.tls { 443 } else { 80 };
        let authority = if port == default_port {
            host_part
        } else {
            format!("{host_part}:{port}")
        };
        let uri: Uri = match format!("{scheme}://{authority}{pq}").parse() {
            Ok(u) => u,
            Err(e) => {
                outcome.decision = Decision::Error;
                outcome.error = Some(e.to_string());
                return (
                    text_response(
                        StatusCode::BAD_REQUEST,
                        Decision::Error,
                        format!("egret: bad request URI: {e}\n"),
                    ),
                    outcome,
                );
            }
        };
        let downstream_h2 = parts.version == Version::HTTP_2;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        // An HTTP/1.1 request goes upstream as HTTP/1.1: an h2 upstream connection would add
        // framing, flow control and a second connection task to every request on a
        // keep-alive connection, for multiplexing that one sandbox connection cannot use.
        let clients = self.clients();
        let client = if upgrade.is_some() || !downstream_h2 {
            &clients.h1
        } else if !info.tls {
            &clients.h2c
        } else {
            &clients.auto
        };
        let body = crate::audit::counted(body, parts.extensions.get());
        let upstream_req = Request::from_parts(parts, body);
        match client.request(upstream_req).await {
            Ok(mut resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    return match (downstream_upgrade, upgrade) {
                        (Some(down), Some(proto)) => {
                            if let Some(key) = &ws_key {
                                let want = websocket_accept(key.as_bytes());
                                let got = resp.headers().get(http::header::SEC_WEBSOCKET_ACCEPT);
                                if got.map(|g| g.as_bytes()) != Some(want.as_bytes()) {
                                    outcome.decision = Decision::Error;
                                    outcome.error = Some("upstream WebSocket handshake: wrong or missing Sec-WebSocket-Accept".into());
                                    return (
                                        text_response(StatusCode::BAD_GATEWAY, Decision::Error, format!("egret: upstream {}:{port} answered the WebSocket upgrade with a wrong or missing Sec-WebSocket-Accept\n", target.host)),
                                        outcome,
                                    );
                                }
                            }
                            let up = hyper::upgrade::on(&mut resp);
                            tokio::spawn(splice_upgraded(down, up));
                            let (mut p, _) = resp.into_parts();
                            strip_hop_by_hop(&mut p.headers, false);
                            if ws_key.is_some() {
                                // RFC 8441 §5: the h2 client is answered 200 on its stream; the
                                // accept value belonged to egret's HTTP/1.1 handshake only.
                                p.status = StatusCode::OK;
                                p.headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
                            } else {
                                p.headers.insert(
                                    http::header::CONNECTION,
                                    HeaderValue::from_static("upgrade"),
                                );
                                p.headers.insert(http::header::UPGRADE, proto);
                            }
                            (Response::from_parts(p, crate::body::empty()), outcome)
                        }
                        _ => {
                            outcome.decision = Decision::Error;
                            outcome.error =
                                Some("upstream switched protocols without being asked".into());
                            (
                                text_response(StatusCode::BAD_GATEWAY, Decision::Error, "egret: upstream answered 101 to a request that did not ask to upgrade\n".into()),
                                outcome,
                            )
                        }
                    };
                }
                let (mut p, b) = resp.into_parts();
                strip_hop_by_hop(&mut p.headers, false);
                if !self.cfg.keep_alt_svc {
                    strip_h3_alt_svc(&mut p.headers);
                }
                (Response::from_parts(p, boxed(b)), outcome)
            }
            Err(e) => {
                let (reason, refused) = describe_client_error(&e);
                // A non-public address the policy does not allow is the policy's answer, not
                // the network's: audited as a denial with the reason.
                let decision = if refused {
                    Decision::Deny
                } else {
                    Decision::Error
                };
                outcome.decision = decision;
                outcome.error = Some(reason.clone());
                (
                    text_response(
                        StatusCode::BAD_GATEWAY,
                        decision,
                        format!("egret: upstream {}:{port} failed: {reason}\n", target.host),
                    ),
                    outcome,
                )
            }
        }
    }
}

/// An egret answer for a request that never reached the upstream: `msg` is the body and the
/// audit reason.
fn fail(
    status: StatusCode,
    decision: Decision,
    msg: String,
    mut outcome: Outcome,
) -> (Response<ProxyBody>, Outcome) {
    outcome.decision = decision;
    outcome.error = Some(msg.clone());
    (
        text_response(status, decision, format!("egret: {msg}\n")),
        outcome,
    )
}

/// Why a body could not be buffered.
enum ReadError {
    /// Longer than the bound; the rest of the body, unread.
    TooLarge(ProxyBody),
    /// The stream failed.
    Body(String),
}

/// Read a whole body of at most `max` bytes (a declared larger length is refused before
/// anything is read).
async fn read_limited(mut body: ProxyBody, max: u64) -> Result<Bytes, ReadError> {
    // By hand rather than with `http_body_util::Limited`: its `Into<BoxError>` bound on a body
    // that already has a boxed error fails rustc's higher-ranked `Send` check of the
    // connection future that awaits this.
    use http_body_util::BodyExt;
    if http_body::Body::size_hint(&body).lower() > max {
        return Err(ReadError::TooLarge(body));
    }
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Body(e.to_string()))?;
        if let Some(d) = frame.data_ref() {
            if (out.len() + d.len()) as u64 > max {
                return Err(ReadError::TooLarge(body));
            }
            out.extend_from_slice(d);
        }
    }
    Ok(out.freeze())
}

/// The echo guard's patterns for the secret values filled into a request, built once per
/// distinct set of values per connection thread: a route fills the same secrets request
/// after request, and building the automaton and the forms (~1.1 µs for one secret,
/// `cargo bench -p egret-proxy --bench echo_guard`) was the guard's largest per-request cost.
/// A rotated or minted value builds anew.
fn echo_patterns(filled: &[Bytes]) -> Arc<crate::echo_guard::Patterns> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Vec<Bytes>, Arc<crate::echo_guard::Patterns>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((values, patterns)) = &*last {
            if values.as_slice() == filled {
                return patterns.clone();
            }
        }
        let patterns = Arc::new(crate::echo_guard::Patterns::new(filled));
        *last = Some((filled.to_vec(), patterns.clone()));
        patterns
    })
}

/// Whether a response's body is sent as it is (no `content-encoding`, or `identity`).
fn identity_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// The echo guard on a response to a request egret filled secrets into: every form of them is
/// masked in the headers and, as it streams, in the body (length-preserving). An encoded body
/// cannot be checked, so one is refused although identity encoding was asked for.
fn guard_response(
    resp: Response<ProxyBody>,
    patterns: Arc<crate::echo_guard::Patterns>,
    host: &str,
    mut outcome: Outcome,
) -> (Response<ProxyBody>, Outcome) {
    let (mut p, b) = resp.into_parts();
    if let Some(enc) = p
        .headers
        .get(http::header::CONTENT_ENCODING)
        .filter(|_| !identity_encoded(&p.headers))
    {
        let msg = format!(
            "upstream {host} answered with content-encoding {} to a request carrying a \
             credential, although egret asked for identity encoding; egret cannot check an \
             encoded body for the credential echoing back (echo_guard = false on the handler \
             turns this check off)",
            String::from_utf8_lossy(enc.as_bytes())
        );
        return fail(StatusCode::BAD_GATEWAY, Decision::Error, msg, outcome);
    }
    let masked = crate::echo_guard::mask_headers(&patterns, &mut p.headers) as u64;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(masked));
    outcome.masked = Some(counter.clone());
    let body = crate::echo_guard::MaskedBody::new(b, patterns, counter);
    (Response::from_parts(p, boxed(body)), outcome)
}

/// The response phase of a handler that opted in: decide on the head (and, buffering, the
/// body); observing, also see the body's chunks as they go out.
async fn response_phase(
    resp: Response<ProxyBody>,
    mut phase: Box<dyn ResponsePhase>,
    handler: &str,
    mut outcome: Outcome,
) -> (Response<ProxyBody>, Outcome) {
    let mode = phase.mode();
    let (mut p, b) = resp.into_parts();
    let (buffered, stream) = match mode {
        ResponseMode::Buffer(max) => match read_limited(b, max).await {
            Ok(bytes) => (Some(bytes), None),
            Err(ReadError::TooLarge(_)) => {
                let msg = format!(
                    "handler {handler} buffers responses up to {max} bytes (response.max_bytes); \
                     the upstream's response is larger"
                );
                return fail(StatusCode::BAD_GATEWAY, Decision::Error, msg, outcome);
            }
            Err(ReadError::Body(e)) => {
                let msg = format!("the upstream's response body failed: {e}");
                return fail(StatusCode::BAD_GATEWAY, Decision::Error, msg, outcome);
            }
        },
        ResponseMode::Stream(_) if !identity_encoded(&p.headers) => {
            let msg = format!(
                "handler {handler} edits the response as it streams (response mode \"stream\") \
                 but the upstream answered with content-encoding {:?} although egret asked for \
                 identity",
                String::from_utf8_lossy(
                    p.headers
                        .get(http::header::CONTENT_ENCODING)
                        .map(|v| v.as_bytes())
                        .unwrap_or_default()
                )
            );
            return fail(StatusCode::BAD_GATEWAY, Decision::Error, msg, outcome);
        }
        _ => (None, Some(b)),
    };
    let headers = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let decided = phase
        .decide(p.status.as_u16(), headers, buffered.clone())
        .await;
    let fields = phase.audit_fields();
    if !fields.is_empty() {
        outcome.handler_fields = fields;
    }
    match decided {
        Ok(ResponseDecision::Pass { set, remove, body }) => {
            for name in remove {
                p.headers.remove(name);
            }
            for (name, value) in set {
                p.headers.insert(name, value);
            }
            let body = match (body.or(buffered), stream) {
                (Some(b), _) => {
                    p.headers.remove(http::header::TRANSFER_ENCODING);
                    p.headers.insert(
                        http::header::CONTENT_LENGTH,
                        HeaderValue::from(b.len() as u64),
                    );
                    full(b)
                }
                // Observe: the guest decided on the head; the chunks follow as they go out.
                (None, Some(s)) if mode == ResponseMode::Observe => crate::body::observed(s, phase),
                // Stream: each piece goes through the guest before it goes out, so the length
                // the upstream announced no longer holds.
                (None, Some(s)) => match mode {
                    ResponseMode::Stream(max) => {
                        p.headers.remove(http::header::CONTENT_LENGTH);
                        let fields = crate::body::LateFields::default();
                        outcome.stream_fields = Some(fields.clone());
                        crate::body::streamed(
                            s,
                            phase,
                            crate::body::StreamSpec {
                                handler: handler.into(),
                                sse: crate::sse::is_event_stream(
                                    p.headers
                                        .get(http::header::CONTENT_TYPE)
                                        .map(|v| v.as_bytes()),
                                ),
                                max_event: usize::try_from(max).unwrap_or(usize::MAX),
                                fields,
                            },
                        )
                    }
                    _ => s,
                },
                (None, None) => crate::body::empty(),
            };
            (Response::from_parts(p, body), outcome)
        }
        Ok(ResponseDecision::Replace(r)) => {
            outcome.decision = Decision::Respond;
            (r.map(full), outcome)
        }
        Err(f) => {
            tracing::warn!(
                handler,
                kind = f.kind.as_str(),
                "handler failed in the response phase; response not passed"
            );
            outcome.decision = Decision::Error;
            outcome.error = Some(format!("{}: {}", f.kind.as_str(), f.message));
            (
                text_response(f.status, Decision::Error, format!("egret: {}\n", f.message)),
                outcome,
            )
        }
    }
}

/// Marks a request that arrived as an RFC 8441 extended CONNECT (`:protocol websocket` on h2)
/// and was rewritten into the HTTP/1.1 WebSocket form.
#[derive(Clone, Copy, Debug)]
struct ExtendedConnect;

/// RFC 8441: an h2 `CONNECT` with `:protocol websocket` becomes, for the policy, the handler and
/// the upstream, the same request an HTTP/1.1 client sends: `GET` with `Upgrade: websocket`
/// (so one handler decides both forms the same way). The upstream leg is always an HTTP/1.1
/// Upgrade. Other `:protocol` values are refused: egret could not check their handshake.
fn normalize_extended_connect(req: &mut Request<Incoming>) -> Result<(), String> {
    if req.method() != Method::CONNECT {
        return Ok(());
    }
    let Some(proto) = req.extensions_mut().remove::<hyper::ext::Protocol>() else {
        return Ok(());
    };
    if !proto.as_str().eq_ignore_ascii_case("websocket") {
        return Err(format!(
            "extended CONNECT with :protocol {:?} is not supported: egret carries only websocket (RFC 8441)",
            proto.as_str()
        ));
    }
    *req.method_mut() = Method::GET;
    req.extensions_mut().insert(ExtendedConnect);
    req.headers_mut()
        .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    Ok(())
}

fn fresh_websocket_key() -> HeaderValue {
    use base64::Engine;
    let mut nonce = [0u8; 16];
    // No OS randomness is a broken host; a predictable key would only weaken the upstream's
    // cache-poisoning defence, yet better to say so than to go on quietly.
    getrandom::getrandom(&mut nonce).expect("OS random number generator");
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&key).expect("base64 is a valid header value")
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The protocol a request asks to upgrade to: HTTP/1.1 `Connection: upgrade` + `Upgrade`, or a
/// WebSocket extended CONNECT already rewritten by [`normalize_extended_connect`].
fn upgrade_protocol(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.extensions.get::<ExtendedConnect>().is_some() {
        return Some(HeaderValue::from_static("websocket"));
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        parts.headers.get(http::header::UPGRADE).cloned()
    } else {
        None
    }
}

/// After a 101 on both legs, copy bytes both ways until either side closes.
async fn splice_upgraded(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

/// Find the most useful reason in a hyper-util client error chain, and whether it is a
/// refusal by policy (an address egret does not dial) rather than a failure.
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> (String, bool) {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return (c.to_string(), c.is_refusal());
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return (h.to_string(), false);
        }
        src = s.source();
    }
    (e.to_string(), false)
}

#[cfg(test)]
mod tests {
    /// The per-thread pattern cache answers the same values with the same patterns and
    /// rebuilds for new ones (a rotated secret is masked, the old value no longer is).
    #[test]
    fn echo_patterns_are_reused_for_the_same_values_only() {
        use bytes::Bytes;
        use http::{HeaderMap, HeaderValue};
        let old = [Bytes::from_static(b"first-secret-value")];
        let a = super::echo_patterns(&old);
        let b = super::echo_patterns(&old);
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let new = [Bytes::from_static(b"rotated-secret-value")];
        let c = super::echo_patterns(&new);
        assert!(!std::sync::Arc::ptr_eq(&a, &c));
        let mut h = HeaderMap::new();
        h.insert("x-new", HeaderValue::from_static("rotated-secret-value"));
        h.insert("x-old", HeaderValue::from_static("first-secret-value"));
        assert_eq!(crate::echo_guard::mask_headers(&c, &mut h), 1);
        assert_eq!(h["x-new"], "********************");
        assert_eq!(h["x-old"], "first-secret-value");
    }

    #[test]
    fn websocket_accept_matches_rfc6455_example() {
        // RFC 6455 §1.3
        assert_eq!(
            super::websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn fresh_websocket_keys_are_16_byte_nonces_and_differ() {
        use base64::Engine;
        let a = super::fresh_websocket_key();
        let b = super::fresh_websocket_key();
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.as_bytes())
            .unwrap();
        assert_eq!(raw.len(), 16);
    }
}

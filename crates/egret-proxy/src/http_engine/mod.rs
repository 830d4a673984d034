//! The HTTP engine: hyper serves the sandbox side (HTTP/1.1 with keep-alive, h2 and h2c), every
//! request is evaluated against the policy generation current when it began, optionally
//! decided by a handler, and forwarded to the name it carries with bodies streamed.
//!
//! One request goes: [`Proxy::handle_request`] (audit around it) → `decide_and_forward` (the
//! destination, the policy's verdict, `--ask`) → a denial, [`handler`] (the handler's request
//! phase) or straight to [`forward`] (upstream dispatch, [`upgrade`]s) → [`response`] (the
//! handler's response phase) and [`guard`] (the echo guard) on the way back.
mod forward;
mod guard;
mod handler;
mod response;
mod upgrade;

pub use handler::{Dispatched, HandlerAction, HandlerDispatch, HandlerFailure, RequestHead};
pub use response::{EventDecision, ResponseDecision, ResponseMode, ResponsePhase};

use crate::audit::ReqBytes;
use crate::authority::{request_target, AuthorityError, Target};
use crate::body::{boxed, full, ProxyBody, RequestBody};
use crate::conn::ConnInfo;
use crate::metrics::Decision;
use crate::Proxy;
use bytes::Bytes;
use egret_policy::{CompiledPolicy, Destination, RequestAction, RequestVerdict};
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

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

/// An egret answer for a request that never reached the upstream: `msg` is the body and the
/// audit reason.
fn fail(
    status: StatusCode,
    decision: Decision,
    msg: String,
    outcome: &mut Outcome,
) -> Response<ProxyBody> {
    let body = format!("egret: {msg}\n");
    outcome.failed(decision, msg);
    text_response(status, decision, body)
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

impl Outcome {
    /// Decided by `rule`, so far without a handler's say or an error.
    fn by_rule(decision: Decision, rule: Arc<str>) -> Outcome {
        Outcome {
            decision,
            rule,
            handler: None,
            error: None,
            masked: None,
            instance_wait: None,
            handler_fields: Vec::new(),
            stream_fields: None,
            decided_by: crate::ask::DecidedBy::Policy,
            shadow: None,
        }
    }

    /// Not carried out as decided: `error` is the audit reason.
    fn failed(&mut self, decision: Decision, error: String) {
        self.decision = decision;
        self.error = Some(error);
    }
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
        let mut outcome = Outcome::by_rule(decision, Arc::from("-"));
        let resp = fail(status, decision, msg, &mut outcome);
        Decided {
            resp,
            target,
            outcome,
        }
    }
}

/// One request past its destination check: what every step that carries it out needs to know.
pub(super) struct Exchange<'a> {
    /// The sandbox connection it came on.
    info: &'a ConnInfo,
    /// The policy generation it runs on.
    policy: &'a CompiledPolicy,
    /// The name it is for.
    target: &'a Target,
    /// The port it goes to (the request's, else the connection's).
    port: u16,
    /// Its body's bytes, counted where the body is handed upstream.
    req_bytes: &'a ReqBytes,
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
        req: Request<Incoming>,
        info: &ConnInfo,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let started_at = std::time::SystemTime::now();
        // Counted where the body is handed upstream (forward), reported in the audit event.
        let req_bytes = ReqBytes::default();
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
        } = self
            .decide_and_forward(req, info, &policy, &req_bytes)
            .await;
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
        crate::audit::request(self, start, target, outcome, resp)
    }

    /// Decide one request on `policy` and carry the decision out: refuse it, hand it to its
    /// handler, or forward it.
    async fn decide_and_forward(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
        policy: &CompiledPolicy,
        req_bytes: &ReqBytes,
    ) -> Decided {
        let target = match self.request_destination(&mut req, info) {
            Ok(t) => t,
            Err(refused) => return *refused,
        };
        let port = target.port.unwrap_or(info.orig.port());
        let dest = Destination::named(&target.host, port);
        let (method, path, query) = (req.method().as_str(), req.uri().path(), req.uri().query());
        let verdict = policy.evaluate_request(&dest, method, path, query);
        let seen = crate::shadow::Seen {
            dest: &dest,
            tls: info.tls,
            host: &target.host,
            method,
            path,
            query,
        };
        let mut outcome = Outcome::by_rule(Decision::Forward, verdict.rule.clone());
        outcome.shadow = self.shadow_decision(policy, &verdict, &seen);
        let cx = Exchange {
            info,
            policy,
            target: &target,
            port,
            req_bytes,
        };
        let asked = self.ask_if_undecided(&cx, &verdict, &req).await;
        let approved = asked.is_some_and(|a| a.allow);
        let resp = match &verdict.action {
            RequestAction::Deny { status, message } if !approved => {
                outcome.decision = Decision::Deny;
                self.denial(&cx, req, &verdict.rule, *status, message.as_deref())
            }
            RequestAction::Allow | RequestAction::Deny { .. } => {
                let (parts, body) = req.into_parts();
                let body = RequestBody::Stream(crate::body::Upload::new(body, &parts.headers));
                self.forward(&cx, Request::from_parts(parts, body), None, &mut outcome)
                    .await
            }
            RequestAction::Handler(id) => {
                let binding = policy.binding(*id);
                outcome.handler = Some(binding.handler.clone());
                self.through_handler(&cx, req, binding, &mut outcome).await
            }
        };
        if let Some(a) = asked {
            outcome.decided_by = a.by;
        }
        // Report-only: carried out as decided above, audited as what the policy would have
        // done, naming the rule that would have denied it.
        if let Some(rule) = &verdict.would_deny {
            if matches!(outcome.decision, Decision::Forward | Decision::Respond) {
                outcome.decision = Decision::WouldDeny;
                outcome.rule = rule.clone();
            }
        }
        Decided {
            resp,
            target: Some(target),
            outcome,
        }
    }

    /// No rule decides (`--ask`): an approval of the connection covers its requests, otherwise
    /// the request itself is asked about. `None` when no one was asked.
    async fn ask_if_undecided(
        &self,
        cx: &Exchange<'_>,
        verdict: &RequestVerdict,
        req: &Request<Incoming>,
    ) -> Option<crate::ask::Answer> {
        if !matches!(verdict.action, RequestAction::Deny { .. })
            || !cx.policy.is_undecided(&verdict.rule)
        {
            return None;
        }
        match cx.info.asked {
            Some(a) if a.allow => Some(a),
            _ => {
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                self.ask(
                    &cx.target.host,
                    cx.port,
                    Some((req.method().as_str(), path)),
                )
                .await
            }
        }
    }

    /// The answer to a request a rule denies, naming the rule (and its message). Answered
    /// before the upload is read: it is held (and over h2 drained) so the client sees the
    /// denial rather than a reset stream.
    fn denial(
        &self,
        cx: &Exchange<'_>,
        req: Request<Incoming>,
        rule: &str,
        status: u16,
        message: Option<&str>,
    ) -> Response<ProxyBody> {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        let because = message.map(|m| format!(": {m}")).unwrap_or_default();
        let body = format!(
            "egret: {} {} to {}:{} denied by rule {rule}{because} (sandbox {}, policy generation {})\n",
            req.method(),
            crate::audit::mask_query(req.uri().path_and_query().map_or("/", |p| p.as_str())),
            cx.target.host,
            cx.port,
            self.cfg.sandbox_id,
            cx.policy.generation()
        );
        let drain = crate::body::drains_after_answer(req.version(), req.headers());
        let (head, denial) = text_response(status, Decision::Deny, body).into_parts();
        let unread = boxed(req.into_body());
        let denial = crate::body::answer_before_body(denial, unread, drain);
        Response::from_parts(head, denial)
    }

    /// The shadow candidate's decision on a request, when one is loaded and decides it
    /// otherwise than the live `policy` did (`verdict`).
    fn shadow_decision(
        &self,
        policy: &CompiledPolicy,
        verdict: &RequestVerdict,
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
        if let Err(msg) = upgrade::normalize_extended_connect(req) {
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

//! The response phase: a handler that opted in sees the upstream's response (its head, the
//! whole body, or each piece as it goes) and passes, edits or replaces it.
use super::guard::identity_encoded;
use super::handler::HandlerFailure;
use super::{fail, read_limited, Outcome, ReadError};
use crate::body::{full, ProxyBody};
use crate::metrics::Decision;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

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

/// The upstream's body as the response phase takes it.
enum Seen {
    /// Read whole (buffer mode).
    Buffered(Bytes),
    /// Still to come (the other modes).
    Streaming(ProxyBody),
}

/// The response phase of a handler that opted in: decide on the head (and, buffering, the
/// body); observing, also see the body's chunks as they go out.
pub(super) async fn phase(
    resp: Response<ProxyBody>,
    mut phase: Box<dyn ResponsePhase>,
    handler: &str,
    outcome: &mut Outcome,
) -> Response<ProxyBody> {
    let mode = phase.mode();
    let (mut p, b) = resp.into_parts();
    let seen = match take_body(mode, &p.headers, b, handler).await {
        Ok(seen) => seen,
        Err(msg) => return fail(StatusCode::BAD_GATEWAY, Decision::Error, msg, outcome),
    };
    let headers = p
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let buffered = match &seen {
        Seen::Buffered(b) => Some(b.clone()),
        Seen::Streaming(_) => None,
    };
    let decided = phase.decide(p.status.as_u16(), headers, buffered).await;
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
            let body = match (body, seen) {
                (Some(b), _) | (None, Seen::Buffered(b)) => {
                    p.headers.remove(http::header::TRANSFER_ENCODING);
                    p.headers.insert(
                        http::header::CONTENT_LENGTH,
                        HeaderValue::from(b.len() as u64),
                    );
                    full(b)
                }
                (None, Seen::Streaming(s)) => {
                    passed_on(s, phase, mode, &mut p.headers, handler, outcome)
                }
            };
            Response::from_parts(p, body)
        }
        Ok(ResponseDecision::Replace(r)) => {
            outcome.decision = Decision::Respond;
            r.map(full)
        }
        Err(f) => {
            tracing::warn!(
                handler,
                kind = f.kind.as_str(),
                "handler failed in the response phase; response not passed"
            );
            f.answer(outcome)
        }
    }
}

/// The body as `mode` needs it before the phase decides: read whole up to its bound, or left
/// streaming (refused when a stream phase would see an encoded body). `Err` is the reason the
/// response is not passed.
async fn take_body(
    mode: ResponseMode,
    headers: &http::HeaderMap,
    body: ProxyBody,
    handler: &str,
) -> Result<Seen, String> {
    match mode {
        ResponseMode::Buffer(max) => match read_limited(body, max).await {
            Ok(bytes) => Ok(Seen::Buffered(bytes)),
            Err(ReadError::TooLarge(_)) => Err(format!(
                "handler {handler} buffers responses up to {max} bytes (response.max_bytes); \
                 the upstream's response is larger"
            )),
            Err(ReadError::Body(e)) => Err(format!("the upstream's response body failed: {e}")),
        },
        ResponseMode::Stream(_) if !identity_encoded(headers) => Err(format!(
            "handler {handler} edits the response as it streams (response mode \"stream\") \
             but the upstream answered with content-encoding {:?} although egret asked for \
             identity",
            String::from_utf8_lossy(
                headers
                    .get(http::header::CONTENT_ENCODING)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default()
            )
        )),
        _ => Ok(Seen::Streaming(body)),
    }
}

/// A body the phase did not replace, on its way out: observed after each chunk is sent, or
/// (stream mode) each piece through the guest before it is sent — so the length the upstream
/// announced no longer holds; as it is in head mode.
fn passed_on(
    body: ProxyBody,
    phase: Box<dyn ResponsePhase>,
    mode: ResponseMode,
    headers: &mut http::HeaderMap,
    handler: &str,
    outcome: &mut Outcome,
) -> ProxyBody {
    match mode {
        ResponseMode::Observe => crate::body::observed(body, phase),
        ResponseMode::Stream(max) => {
            headers.remove(http::header::CONTENT_LENGTH);
            let fields = crate::body::LateFields::default();
            outcome.stream_fields = Some(fields.clone());
            let sse = crate::sse::is_event_stream(
                headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
            );
            let spec = crate::body::StreamSpec {
                handler: handler.into(),
                sse,
                max_event: usize::try_from(max).unwrap_or(usize::MAX),
                fields,
            };
            crate::body::streamed(body, phase, spec)
        }
        ResponseMode::Head | ResponseMode::Buffer(_) => body,
    }
}

//! The body type flowing through egret in both directions: whatever hyper gives us, boxed,
//! streamed frame by frame (never collected).
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Boxed error type for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Box any body.
pub fn boxed<B>(b: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// A complete body from bytes.
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into())
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| -> BoxError { match never {} })
        .boxed_unsync()
}

/// How much of an unread HTTP/2 upload egret reads and discards after an early answer, so
/// the stream ends cleanly (see [`answer_before_body`]); a longer upload is reset.
pub const DRAIN_MAX: u64 = 16 << 20;

/// A response body that answers a request before its body was read (a denial, a 413, a
/// handler's own answer), keeping that request body alive until the response has been sent.
///
/// Dropping the request body first would reset its HTTP/2 stream ahead of the response's
/// DATA, and clients then report an empty reply. Holding it lets h2 finish the response and
/// then reset the upload with NO_ERROR (RFC 9113 §8.1) — but clients still uploading treat even
/// that reset as a failed transfer (curl 7.88: "Stream error in the HTTP/2 framing layer",
/// without showing the answer). So with `drain` (HTTP/2), once the response's data is out its
/// end waits while the rest of the upload is read and discarded, up to [`DRAIN_MAX`] bytes: the
/// client finishes sending, reads the answer, and the stream closes cleanly; an upload declared
/// or found larger is reset as above. Over HTTP/1.1 the same read keeps the connection usable
/// for the client's next request (hyper closes it when an upload's receiver goes unread);
/// it starts only after the answer is written, so hyper sends no `100 Continue` for it.
/// Without `drain` (a client that waits for `100 Continue`, which will not send the upload)
/// the body is never polled and the connection closes after the answer.
pub fn answer_before_body(resp: ProxyBody, unread: ProxyBody, drain: bool) -> ProxyBody {
    let budget = if drain && http_body::Body::size_hint(&unread).lower() <= DRAIN_MAX {
        DRAIN_MAX
    } else {
        0
    };
    HeldBody {
        inner: resp,
        held: Some(unread),
        budget,
        inner_done: false,
    }
    .boxed_unsync()
}

struct HeldBody {
    inner: ProxyBody,
    held: Option<ProxyBody>,
    /// Bytes of the held body still to read and discard before the end; 0: just hold it.
    budget: u64,
    inner_done: bool,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        if !this.inner_done {
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.inner_done = true,
                other => return other,
            }
        }
        while let Some(held) = this.held.as_mut().filter(|_| this.budget > 0) {
            match std::pin::Pin::new(held).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    this.budget = this.budget.saturating_sub(n);
                }
                // The upload ended (or failed): nothing is left to reset.
                Poll::Ready(_) => this.held = None,
            }
        }
        // Past the bound the upload stays held until hyper drops this body, after the end.
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && (self.held.is_none() || self.budget == 0)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP/1.1 response with a length ends, and hyper drops its body, as soon as its last byte
/// is written, before the poll that would read the held upload: the upload is read on from here.
impl Drop for HeldBody {
    fn drop(&mut self) {
        if let Some(held) = self
            .held
            .take()
            .filter(|h| self.budget > 0 && !http_body::Body::is_end_stream(h))
        {
            drain_later(held, self.budget);
        }
    }
}

/// A response body whose chunks are shown to a handler's observe phase as they go out: each
/// data chunk is handed to the phase (on a task of its own, in order) when it is yielded to
/// the connection, then the end. The bytes sent are never held or changed, so streaming
/// responses (SSE) keep their timing.
pub fn observed(body: ProxyBody, phase: Box<dyn crate::ResponsePhase>) -> ProxyBody {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut phase = phase;
        while let Some(chunk) = rx.recv().await {
            if let Err(f) = phase.chunk(chunk).await {
                tracing::warn!(kind = f.kind.as_str(), error = %f.message, "handler failed observing a response; the rest of the body goes unobserved");
                return;
            }
        }
        if let Err(f) = phase.end().await {
            tracing::warn!(kind = f.kind.as_str(), error = %f.message, "handler failed at the end of an observed response");
        }
    });
    Observed {
        inner: body,
        tx: Some(tx),
    }
    .boxed_unsync()
}

/// How [`streamed`] cuts a response body for the stream phase.
pub struct StreamSpec {
    /// The handler's name (for the errors that end the stream).
    pub handler: std::sync::Arc<str>,
    /// `text/event-stream`: hand the guest whole events, however the bytes were split.
    pub sse: bool,
    /// Largest piece (`max_event_bytes`).
    pub max_event: usize,
    /// Where the handler's audit fields go when the stream phase ends.
    pub fields: LateFields,
}

/// A handler's audit fields as they stood when its stream phase ended: set by the task that
/// runs the phase before the body it feeds ends, read when the request's audit event is
/// written (at the body's end).
pub type LateFields = std::sync::Arc<std::sync::OnceLock<Vec<(String, String)>>>;

/// A response body whose every piece — a chunk, or for an event stream a whole event — goes
/// through a handler's stream phase before it is sent: passed, replaced or dropped. A task of
/// its own reads the upstream body and calls the guest; one piece at a time waits for the
/// connection, so memory stays within the splitter's bound plus one piece. An event past the
/// bound, a guest failure or a broken upstream body ends the body with an error naming it
/// (the request's audit event carries it); the guest then sees no end.
pub fn streamed(
    body: ProxyBody,
    phase: Box<dyn crate::ResponsePhase>,
    spec: StreamSpec,
) -> ProxyBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(1);
    tokio::spawn(async move {
        let mut phase = phase;
        let ended = pump_stream(body, &mut phase, &spec, &tx).await;
        // Before the sender goes: the body's end (and the audit event) comes after.
        let _ = spec.fields.set(phase.audit_fields());
        match ended {
            Ok(()) | Err(StreamEnd::Gone) => {}
            Err(e) => {
                tracing::warn!(handler = %spec.handler, error = %e, "stream phase ended the response");
                let _ = tx.send(Err(e.into())).await;
            }
        }
    });
    Streamed { rx }.boxed_unsync()
}

/// Why a streamed response ended early.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("handler {handler}: {source} (response.max_event_bytes); the response was cut there")]
    TooLarge {
        handler: std::sync::Arc<str>,
        source: crate::sse::EventTooLarge,
    },
    #[error("handler {handler} failed in the stream phase ({kind}): {message}")]
    Handler {
        handler: std::sync::Arc<str>,
        kind: &'static str,
        message: String,
    },
    #[error("the upstream's response body failed: {0}")]
    Upstream(BoxError),
    /// The client went away: nothing to report to it.
    #[error("the client went away")]
    Gone,
}

async fn pump_stream(
    mut body: ProxyBody,
    phase: &mut Box<dyn crate::ResponsePhase>,
    spec: &StreamSpec,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), StreamEnd> {
    let mut splitter = spec
        .sse
        .then(|| crate::sse::SseSplitter::new(spec.max_event));
    let mut pieces = Vec::new();
    let too_large = |source| StreamEnd::TooLarge {
        handler: spec.handler.clone(),
        source,
    };
    loop {
        let frame = match body.frame().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(StreamEnd::Upstream(e)),
            None => break,
        };
        // Trailers carry no body bytes; HTTP/1.1 clients of a chunked stream cannot be sent
        // them through a channel of data anyway.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut splitter {
            Some(s) => s.push(&data, &mut pieces).map_err(too_large)?,
            None => pieces.extend(crate::sse::pieces(data, spec.max_event)),
        }
        for piece in pieces.drain(..) {
            send_through(phase, piece, spec, tx).await?;
        }
    }
    if let Some(rest) = splitter.as_mut().and_then(|s| s.finish()) {
        send_through(phase, rest, spec, tx).await?;
    }
    phase.end().await.map_err(|f| StreamEnd::Handler {
        handler: spec.handler.clone(),
        kind: f.kind.as_str(),
        message: f.message,
    })
}

async fn send_through(
    phase: &mut Box<dyn crate::ResponsePhase>,
    piece: Bytes,
    spec: &StreamSpec,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), StreamEnd> {
    if tx.is_closed() {
        return Err(StreamEnd::Gone);
    }
    let out = match phase.event(piece.clone()).await {
        Ok(crate::http_engine::EventDecision::Pass) => piece,
        Ok(crate::http_engine::EventDecision::Replace(b)) => b,
        Ok(crate::http_engine::EventDecision::Drop) => return Ok(()),
        Err(f) => {
            return Err(StreamEnd::Handler {
                handler: spec.handler.clone(),
                kind: f.kind.as_str(),
                message: f.message,
            })
        }
    };
    if out.is_empty() {
        return Ok(());
    }
    tx.send(Ok(out)).await.map_err(|_| StreamEnd::Gone)
}

struct Streamed {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|r| r.map(|r| r.map(http_body::Frame::data)))
    }
}

struct Observed {
    inner: ProxyBody,
    tx: Option<tokio::sync::mpsc::UnboundedSender<Bytes>>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(tx)) = (f.data_ref(), &self.tx) {
                    let _ = tx.send(d.clone());
                }
            }
            // The end (or a failure) closes the channel: the phase sees its end.
            std::task::Poll::Ready(_) => self.tx = None,
            std::task::Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the client waits for `100 Continue` before it sends the body (`Expect:
/// 100-continue`). Answered early, such a client does not send what it was told to keep, so
/// an unread upload of its is never waited for.
pub fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The `drain` of [`answer_before_body`] for a request of `version` with `headers`: over h2
/// always (a reset upload reads as a failed transfer to clients), over HTTP/1.1 unless the
/// client waits for `100 Continue`.
pub fn drains_after_answer(version: http::Version, headers: &http::HeaderMap) -> bool {
    version == http::Version::HTTP_2 || !expects_continue(headers)
}

/// How long an upload the upstream answered before reading is read on after the exchange
/// (see [`Upload`]).
pub const UNREAD_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The sandbox's request body streaming upstream. An upstream may answer before it read the
/// upload (an early 401 or 413, a server that ignores bodies); the upstream client then drops
/// the body unread, and hyper, finding the upload's receiver gone, closes the sandbox's
/// HTTP/1.1 connection after the response without saying so (`Connection: close` went out
/// with no head), so a keep-alive client fails its next request on a dead connection. Dropped
/// unread, an `Upload` therefore reads and discards the rest on a task of its own, up to
/// [`DRAIN_MAX`] bytes within [`UNREAD_DRAIN_TIME`], so the connection takes its next request
/// (and an HTTP/2 stream ends cleanly rather than reset); past either bound it is dropped as
/// before. Not when the client waits for `100 Continue`: it will not send the rest.
pub struct Upload {
    body: Option<hyper::body::Incoming>,
    drain: bool,
}

impl Upload {
    /// `body`, from a request with `headers`.
    pub fn new(body: hyper::body::Incoming, headers: &http::HeaderMap) -> Upload {
        Upload {
            body: Some(body),
            drain: !expects_continue(headers),
        }
    }
}

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let body = self.get_mut().body.as_mut().expect("taken only by drop");
        std::pin::Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(http_body::SizeHint::default, |b| b.size_hint())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        if !self.drain || http_body::Body::is_end_stream(&body) {
            return;
        }
        drain_later(body, DRAIN_MAX);
    }
}

/// Reads `body` to its end and discards it on a task of its own, up to `budget` bytes within
/// [`UNREAD_DRAIN_TIME`]; past either, it is dropped. Dropped outside a runtime (nothing of
/// egret's is) it is only dropped.
fn drain_later<B>(mut body: B, budget: u64)
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
{
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut left = budget;
        let _ = tokio::time::timeout(UNREAD_DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n >= left {
                    break;
                }
                left -= n;
            }
        })
        .await;
    });
}

/// A request body on its way upstream: the sandbox's stream as it is, or bytes egret holds
/// (a buffered body, a handler's replacement). One concrete type, so the forwarding path
/// stays free of a box per request.
pub enum RequestBody {
    /// Streamed from the sandbox.
    Stream(Upload),
    /// Held whole.
    Bytes(Full<Bytes>),
}

// The error type is hyper's own (held bytes cannot fail): a boxed trait-object error here
// makes the futures that forward it fail rustc's higher-ranked `Send` check.
impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Stream(b) => std::pin::Pin::new(b).poll_frame(cx),
            RequestBody::Bytes(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(b) => b.is_end_stream(),
            RequestBody::Bytes(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Stream(b) => b.size_hint(),
            RequestBody::Bytes(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A request body fed by the test: (sender, body, bytes the body has yielded so far).
    fn upload(
        declared: Option<u64>,
    ) -> (
        tokio::sync::mpsc::Sender<Bytes>,
        ProxyBody,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = read.clone();
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|o| {
                o.map(|b| {
                    counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, BoxError>(http_body::Frame::data(b))
                })
            })
        });
        let body = StreamBody::new(stream);
        let body = match declared {
            Some(n) => Declared(body, n).boxed_unsync(),
            None => body.boxed_unsync(),
        };
        (tx, body, read)
    }

    /// A body that declares its length (as a content-length does).
    struct Declared<B>(B, u64);
    impl<B: http_body::Body + Unpin> http_body::Body for Declared<B> {
        type Data = B::Data;
        type Error = B::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
            std::pin::Pin::new(&mut self.0).poll_frame(cx)
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.1)
        }
    }

    #[tokio::test]
    async fn an_early_answer_goes_out_then_waits_for_the_upload_to_end() {
        let (tx, unread, read) = upload(None);
        let mut resp = answer_before_body(full("denied"), unread, true);
        let first = resp.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "denied");
        assert!(
            !http_body::Body::is_end_stream(&resp),
            "the end must wait for the upload"
        );
        let end = tokio::spawn(async move { resp.frame().await.is_none() });
        tx.send(Bytes::from(vec![0u8; 1000])).await.unwrap();
        tx.send(Bytes::from(vec![0u8; 24])).await.unwrap();
        drop(tx);
        assert!(end.await.unwrap());
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 1024);
    }

    #[tokio::test]
    async fn an_upload_beyond_the_drain_bound_is_not_read_on() {
        let (tx, unread, read) = upload(None);
        let mut resp = answer_before_body(full("denied"), unread, true);
        resp.frame().await.unwrap().unwrap();
        let end = tokio::spawn(async move { resp.frame().await.is_none() });
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        // The drain stops at the bound although the upload goes on.
        for _ in 0..(DRAIN_MAX >> 20) {
            tx.send(chunk.clone()).await.unwrap();
        }
        assert!(end.await.unwrap());
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), DRAIN_MAX);
        assert!(tx.send(chunk).await.is_err(), "the upload is dropped");
    }

    #[tokio::test]
    async fn a_declared_oversized_upload_or_http1_is_only_held() {
        for (declared, drain) in [(Some(DRAIN_MAX + 1), true), (None, false)] {
            let (tx, unread, read) = upload(declared);
            let mut resp = answer_before_body(full("denied"), unread, drain);
            resp.frame().await.unwrap().unwrap();
            assert!(http_body::Body::is_end_stream(&resp));
            assert!(resp.frame().await.is_none());
            assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 0);
            assert!(!tx.is_closed(), "held until the response body is dropped");
            drop(resp);
            assert!(tx.is_closed());
        }
    }
}

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

/// A response body that keeps the request body it answers alive (unread) until the response
/// has been sent completely. An HTTP/2 request stream whose body is dropped before an early
/// response (a denial, a handler's own answer) goes out is reset ahead of the response's DATA,
/// and clients then report an empty reply; holding it lets h2 finish the response first and
/// then reset the upload with NO_ERROR (RFC 9113 §8.1). The request body is never polled, so
/// no `100 Continue` is sent for it.
pub fn hold_request_body<H: Send + Unpin + 'static>(resp: ProxyBody, held: H) -> ProxyBody {
    HeldBody {
        inner: resp,
        _held: Some(held),
    }
    .boxed_unsync()
}

struct HeldBody<H> {
    inner: ProxyBody,
    _held: Option<H>,
}

impl<H: Unpin> http_body::Body for HeldBody<H> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
                tracing::warn!(kind = f.kind, error = %f.message, "handler failed observing a response; the rest of the body goes unobserved");
                return;
            }
        }
        if let Err(f) = phase.end().await {
            tracing::warn!(kind = f.kind, error = %f.message, "handler failed at the end of an observed response");
        }
    });
    Observed {
        inner: body,
        tx: Some(tx),
    }
    .boxed_unsync()
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

/// A request body on its way upstream: the sandbox's stream as it is, or bytes egret holds
/// (a buffered body, a handler's replacement). One concrete type, so the forwarding path
/// stays free of a box per request.
pub enum RequestBody {
    /// Streamed from the sandbox.
    Stream(hyper::body::Incoming),
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

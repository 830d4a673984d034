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

//! The echo guard's side of the engine: a response to a request egret filled secrets into has
//! every form of them masked.
use super::{fail, Outcome};
use crate::body::{boxed, ProxyBody};
use crate::echo_guard::{mask_headers, MaskedBody, Patterns};
use crate::metrics::Decision;
use bytes::Bytes;
use http::{Response, StatusCode};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The echo guard's patterns for the secret values filled into a request, built once per
/// distinct set of values per connection thread: a route fills the same secrets request
/// after request, and building the automaton and the forms (~1.1 µs for one secret,
/// `cargo bench -p egret-proxy --bench echo_guard`) was the guard's largest per-request cost.
/// A rotated or minted value builds anew.
pub(super) fn patterns(filled: &[Bytes]) -> Arc<Patterns> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Vec<Bytes>, Arc<Patterns>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((values, patterns)) = &*last {
            if values.as_slice() == filled {
                return patterns.clone();
            }
        }
        let patterns = Arc::new(Patterns::new(filled));
        *last = Some((filled.to_vec(), patterns.clone()));
        patterns
    })
}

/// Whether a response's body is sent as it is (no `content-encoding`, or `identity`).
pub(super) fn identity_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_ENCODING)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// The echo guard on a response to a request egret filled secrets into: every form of them is
/// masked in the headers and, as it streams, in the body (length-preserving). An encoded body
/// cannot be checked, so one is refused although identity encoding was asked for.
pub(super) fn response(
    resp: Response<ProxyBody>,
    patterns: Arc<Patterns>,
    host: &str,
    outcome: &mut Outcome,
) -> Response<ProxyBody> {
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
    let masked = mask_headers(&patterns, &mut p.headers) as u64;
    let counter = Arc::new(AtomicU64::new(masked));
    outcome.masked = Some(counter.clone());
    let body = MaskedBody::new(b, patterns, counter);
    Response::from_parts(p, boxed(body))
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
        let a = super::patterns(&old);
        let b = super::patterns(&old);
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let new = [Bytes::from_static(b"rotated-secret-value")];
        let c = super::patterns(&new);
        assert!(!std::sync::Arc::ptr_eq(&a, &c));
        let mut h = HeaderMap::new();
        h.insert("x-new", HeaderValue::from_static("rotated-secret-value"));
        h.insert("x-old", HeaderValue::from_static("first-secret-value"));
        assert_eq!(crate::echo_guard::mask_headers(&c, &mut h), 1);
        assert_eq!(h["x-new"], "********************");
        assert_eq!(h["x-old"], "first-secret-value");
    }
}

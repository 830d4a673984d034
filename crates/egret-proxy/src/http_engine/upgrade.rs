//! Protocol upgrades through the engine: an HTTP/1.1 `Upgrade` (WebSocket) carried over, and an
//! RFC 8441 WebSocket extended CONNECT on h2 turned into the HTTP/1.1 form upstream.
use crate::headers::strip_hop_by_hop;
use http::header::HeaderValue;
use http::{Method, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Marks a request that arrived as an RFC 8441 extended CONNECT (`:protocol websocket` on h2)
/// and was rewritten into the HTTP/1.1 WebSocket form.
#[derive(Clone, Copy, Debug)]
struct ExtendedConnect;

/// RFC 8441: an h2 `CONNECT` with `:protocol websocket` becomes, for the policy, the handler and
/// the upstream, the same request an HTTP/1.1 client sends: `GET` with `Upgrade: websocket`
/// (so one handler decides both forms the same way). The upstream leg is always an HTTP/1.1
/// Upgrade. Other `:protocol` values are refused: egret could not check their handshake.
pub(super) fn normalize_extended_connect(req: &mut Request<Incoming>) -> Result<(), String> {
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

/// The protocol a request asks to upgrade to: HTTP/1.1 `Connection: upgrade` + `Upgrade`, or a
/// WebSocket extended CONNECT already rewritten by [`normalize_extended_connect`].
pub(super) fn protocol(parts: &http::request::Parts) -> Option<HeaderValue> {
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

/// An upgrade a request asks for, as egret carries it: the protocol, the client's side of the
/// connection once it switches, and the key of egret's own HTTP/1.1 handshake when the
/// client's was an extended CONNECT (which carries none).
pub(super) struct Upgrade {
    pub(super) proto: HeaderValue,
    pub(super) downstream: Option<hyper::upgrade::OnUpgrade>,
    pub(super) ws_key: Option<HeaderValue>,
}

/// Clean the hop-by-hop headers of a request going upstream, carrying over the one hop-by-hop
/// exchange a proxy must: an upgrade to `proto` (`hint`: the protocol a handler path found
/// before it removed `Connection`).
pub(super) fn prepare(
    parts: &mut http::request::Parts,
    hint: Option<HeaderValue>,
) -> Option<Upgrade> {
    let proto = hint.or_else(|| protocol(parts));
    strip_hop_by_hop(&mut parts.headers, true);
    let proto = proto?;
    let downstream = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    parts.headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    parts.headers.insert(http::header::UPGRADE, proto.clone());
    // RFC 8441 carries no key (the h2 stream is the handshake); the HTTP/1.1 leg needs one of
    // its own, and its answer is checked before the h2 client is told 200.
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
    Some(Upgrade {
        proto,
        downstream,
        ws_key,
    })
}

impl Upgrade {
    /// Whether the upstream's 101 completes egret's own handshake (always, but for an extended
    /// CONNECT, whose `Sec-WebSocket-Accept` must answer egret's key).
    pub(super) fn accepted(&self, upstream: &http::HeaderMap) -> bool {
        let Some(key) = &self.ws_key else {
            return true;
        };
        let want = websocket_accept(key.as_bytes());
        let got = upstream.get(http::header::SEC_WEBSOCKET_ACCEPT);
        got.map(|g| g.as_bytes()) == Some(want.as_bytes())
    }

    /// The head of the client's 101 (for an extended CONNECT, its 200): the upstream's, with
    /// the upgrade headers of the client's own hop.
    pub(super) fn downstream_head(&self, p: &mut http::response::Parts) {
        strip_hop_by_hop(&mut p.headers, false);
        if self.ws_key.is_some() {
            // RFC 8441 §5: the h2 client is answered 200 on its stream; the accept value
            // belonged to egret's HTTP/1.1 handshake only.
            p.status = StatusCode::OK;
            p.headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
        } else {
            p.headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            p.headers.insert(http::header::UPGRADE, self.proto.clone());
        }
    }
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

/// After a 101 on both legs, copy bytes both ways until either side closes.
pub(super) async fn splice(down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
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

#[cfg(test)]
mod tests {
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

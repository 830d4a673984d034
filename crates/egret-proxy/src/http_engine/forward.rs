//! Upstream dispatch: a request decided to go on is sent to the name it carries, over the
//! client that fits its protocol, and the upstream's answer (or failure) comes back.
use super::upgrade::{self, Upgrade};
use super::{text_response, Exchange, Outcome};
use crate::body::{boxed, ProxyBody, RequestBody};
use crate::headers::{strip_h3_alt_svc, strip_hop_by_hop};
use crate::metrics::Decision;
use crate::upstream::ConnectError;
use crate::Proxy;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

impl Proxy {
    /// Send `req` upstream and answer with what comes back. `upgrade_hint`: the protocol a
    /// handler path found the request asking to upgrade to (it removed `Connection` since).
    pub(super) async fn forward(
        &self,
        cx: &Exchange<'_>,
        req: Request<RequestBody>,
        upgrade_hint: Option<HeaderValue>,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let upgrade = upgrade::prepare(&mut parts, upgrade_hint);
        // hyper-util sets Host from the URI (h1) or :authority (h2).
        parts.headers.remove(http::header::HOST);
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match upstream_uri(cx, pq) {
            Ok(u) => u,
            Err(e) => {
                outcome.failed(Decision::Error, e.to_string());
                return text_response(
                    StatusCode::BAD_REQUEST,
                    Decision::Error,
                    format!("egret: bad request URI: {e}\n"),
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
        } else if !cx.info.tls {
            &clients.h2c
        } else {
            &clients.auto
        };
        let body = crate::audit::counted(body, cx.req_bytes);
        match client.request(Request::from_parts(parts, body)).await {
            Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                switched(cx, resp, upgrade, outcome)
            }
            Ok(resp) => {
                let (mut p, b) = resp.into_parts();
                strip_hop_by_hop(&mut p.headers, false);
                if !self.cfg.keep_alt_svc {
                    strip_h3_alt_svc(&mut p.headers);
                }
                Response::from_parts(p, boxed(b))
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
                let body = format!(
                    "egret: upstream {}:{} failed: {reason}\n",
                    cx.target.host, cx.port
                );
                outcome.failed(decision, reason);
                text_response(StatusCode::BAD_GATEWAY, decision, body)
            }
        }
    }
}

/// The URI a request goes upstream with: the scheme of the sandbox's connection, the name the
/// request is for, `pq`. The default port stays implicit: HTTP/2 sends the URI authority
/// verbatim.
fn upstream_uri(cx: &Exchange<'_>, pq: &str) -> Result<Uri, http::uri::InvalidUri> {
    let (scheme, default_port) = if cx.info.tls {
        ("https", 443)
    } else {
        ("http", 80)
    };
    let host = &cx.target.host;
    let (open, close) = if host.contains(':') {
        ("[", "]")
    } else {
        ("", "")
    };
    // Built as one string the URI then owns (no second copy when it is parsed).
    let uri = if cx.port == default_port {
        format!("{scheme}://{open}{host}{close}{pq}")
    } else {
        format!("{scheme}://{open}{host}{close}:{}{pq}", cx.port)
    };
    Uri::try_from(uri)
}

/// The upstream switched protocols: when the request asked to, the client is answered 101
/// (an extended CONNECT 200) and both upgraded connections are spliced.
fn switched(
    cx: &Exchange<'_>,
    mut resp: Response<Incoming>,
    upgrade: Option<Upgrade>,
    outcome: &mut Outcome,
) -> Response<ProxyBody> {
    let (upgrade, down) = match upgrade {
        Some(mut u) => match u.downstream.take() {
            Some(down) => (u, down),
            None => return unasked(outcome),
        },
        None => return unasked(outcome),
    };
    if !upgrade.accepted(resp.headers()) {
        outcome.failed(
            Decision::Error,
            "upstream WebSocket handshake: wrong or missing Sec-WebSocket-Accept".into(),
        );
        return text_response(
            StatusCode::BAD_GATEWAY,
            Decision::Error,
            format!(
                "egret: upstream {}:{} answered the WebSocket upgrade with a wrong or missing Sec-WebSocket-Accept\n",
                cx.target.host, cx.port
            ),
        );
    }
    let up = hyper::upgrade::on(&mut resp);
    tokio::spawn(upgrade::splice(down, up));
    let (mut p, _) = resp.into_parts();
    upgrade.downstream_head(&mut p);
    Response::from_parts(p, crate::body::empty())
}

/// A 101 to a request that did not ask to upgrade (or whose client cannot switch).
fn unasked(outcome: &mut Outcome) -> Response<ProxyBody> {
    outcome.failed(
        Decision::Error,
        "upstream switched protocols without being asked".into(),
    );
    text_response(
        StatusCode::BAD_GATEWAY,
        Decision::Error,
        "egret: upstream answered 101 to a request that did not ask to upgrade\n".into(),
    )
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

//! egret as an explicit HTTP proxy, for programs that are not captured transparently but
//! honour `HTTP_PROXY`/`HTTPS_PROXY` (`egret exec --proxy-env`, `egret run --explicit-proxy`).
//!
//! Only the way in differs from a captured connection: the destination comes from the first
//! request instead of the capture.
//! * `CONNECT host:port`: the policy is asked about the target first, so a denied one is
//!   answered `403` with egret's reason (a client shows the proxy's answer; a reset would only
//!   say the proxy failed); otherwise `200`, and the tunnel's bytes are classified and served
//!   exactly like a captured connection to that name (TLS intercepted with the sandbox CA,
//!   HTTP through the engine, anything else opaque TCP).
//! * an absolute-form request (`GET http://host/…`): handed to the HTTP engine, which takes
//!   the destination from each request's authority as it does for captured traffic.
//!
//! Names are never resolved here: like a name the sandbox looked up through egret's DNS, the
//! target is resolved by egret's upstream resolver (pins, address checks) when it is dialled.
use crate::audit::ConnEnd;
use crate::authority::{parse_authority, AuthorityError, Target};
use crate::conn::{conn_destination, Classified, ConnInfo};
use crate::metrics::{Decision, TunnelProto};
use crate::upstream::canonical_ip;
use crate::Proxy;
use bytes::BytesMut;
use egret_policy::VerdictAction;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest first request head the explicit proxy reads.
const HEAD_MAX: usize = 16 * 1024;

/// Header lines a first request head may have.
const HEADERS_MAX: usize = 100;

/// The answer to an `https://` URL sent as a plain request.
pub(crate) const HTTPS_NEEDS_CONNECT: &str = "an https:// URL must be requested through a CONNECT tunnel, not as a plain request to egret's proxy (it would travel unencrypted)";

/// What a client asks egret's proxy for with its first request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `CONNECT host:port`: a tunnel to there.
    Connect {
        /// The target, lower-cased (IPv6 without brackets).
        host: String,
        /// Its port.
        port: u16,
    },
    /// A request in absolute form (`http://…`): served by the HTTP engine.
    Forward,
}

/// Why a first request cannot be served; answered `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AskError {
    /// Not an HTTP/1 request head.
    #[error("not an HTTP/1.x request: {0}")]
    Malformed(String),
    /// The head did not end within [`HEAD_MAX`] bytes.
    #[error("the request head is longer than {HEAD_MAX} bytes")]
    TooLong,
    /// A CONNECT target that is not `host:port`.
    #[error("CONNECT needs host:port: {0}")]
    ConnectTarget(AuthorityError),
    /// A plain request for an `https://` URL.
    #[error("{HTTPS_NEEDS_CONNECT}")]
    Https,
    /// A plain request without an absolute `http://` URL.
    #[error("the request target {0:?} is not an absolute http:// URL: egret's proxy takes CONNECT host:port or GET http://host/path")]
    NotAbsolute(String),
}

/// Parse the first request head in `buf`: `Ok(None)` while it is incomplete, else what is
/// asked and the head's length (the bytes after it belong to the tunnel or the request body).
pub(crate) fn parse_ask(buf: &[u8]) -> Result<Option<(Ask, usize)>, AskError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= HEAD_MAX => return Err(AskError::TooLong),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(AskError::Malformed(e.to_string())),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(AskError::Malformed("no request line".into()));
    };
    if method == "CONNECT" {
        let Target { host, port } = parse_authority(target).map_err(AskError::ConnectTarget)?;
        let port = port.ok_or_else(|| {
            AskError::ConnectTarget(AuthorityError::Invalid(format!("{target} (no port)")))
        })?;
        return Ok(Some((Ask::Connect { host, port }, len)));
    }
    let shown = || target.chars().take(100).collect::<String>();
    let uri: http::Uri = target.parse().map_err(|_| AskError::NotAbsolute(shown()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(_)) if s.eq_ignore_ascii_case("http") => Ok(Some((Ask::Forward, len))),
        (Some(s), Some(_)) if s.eq_ignore_ascii_case("https") => Err(AskError::Https),
        _ => Err(AskError::NotAbsolute(shown())),
    }
}

/// Why the first request could not be read.
enum ReadError {
    /// The client closed or the connection failed before a whole head arrived.
    Gone,
    /// The head is not one egret's proxy serves.
    Bad(AskError),
}

/// Read until `buf` holds a whole first request head.
async fn read_ask(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(Ask, usize), ReadError> {
    loop {
        if let Some(ask) = parse_ask(buf).map_err(ReadError::Bad)? {
            return Ok(ask);
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ReadError::Gone),
            Ok(_) => {}
        }
    }
}

/// A complete HTTP/1.1 answer that closes the connection.
fn answer(status: &str, decision: Decision, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nx-egret-decision: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        decision.as_str(),
        body.len()
    )
    .into_bytes()
}

impl Proxy {
    /// Audit a first request egret does not carry (`detail`: the rule of a `deny`, the reason
    /// of an `error`) and answer it with `status` and `body`, closing the connection.
    async fn answer_refused(
        &self,
        mut stream: TcpStream,
        info: &ConnInfo,
        (status, decision, detail, body): (&str, Decision, &str, &str),
    ) {
        let name = info.dns_name.as_deref();
        let end = ConnEnd::unopened(decision, detail);
        crate::audit::connection(self, info, name, TunnelProto::Tcp, end);
        let _ = stream.write_all(&answer(status, decision, body)).await;
        let _ = stream.shutdown().await;
    }

    /// One connection to the explicit proxy listener.
    pub(crate) async fn explicit_connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        client: SocketAddr,
        id: u64,
        started: std::time::Instant,
    ) {
        let _ = stream.set_nodelay(true);
        let mut info = ConnInfo {
            id,
            client,
            // A plain request's port when its URL has none; replaced by a CONNECT's target.
            orig: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
            dns_name: None,
            sni: None,
            tls: false,
            started,
            classified: Classified::ClientFirst,
            first_byte: None,
            explicit: true,
            asked: None,
        };
        let mut buf = BytesMut::with_capacity(1024);
        let read =
            tokio::time::timeout(self.cfg.handshake_timeout, read_ask(&mut stream, &mut buf)).await;
        let (ask, head_len) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(ReadError::Gone)) => return,
            Ok(Err(ReadError::Bad(e))) => {
                let why = e.to_string();
                let body = format!("egret: {why}\n");
                let refusal = ("400 Bad Request", Decision::Error, why.as_str(), &*body);
                return self.answer_refused(stream, &info, refusal).await;
            }
            Err(_) => {
                info.classified = Classified::Incomplete;
                let why = format!(
                    "no complete proxy request within {:?}",
                    self.cfg.handshake_timeout
                );
                return self.abandon(stream, &info, None, TunnelProto::Tcp, &why);
            }
        };
        match ask {
            Ask::Forward => self.classify_and_serve(stream, buf, info).await,
            Ask::Connect { host, port } => {
                let rest = buf.split_off(head_len);
                self.serve_connect(stream, rest, info, (&host, port)).await
            }
        }
    }

    /// `CONNECT host:port`: refused with egret's reason when the policy denies the target (and
    /// whoever was asked did not approve it), else answered `200` and served as a captured
    /// connection to it, `rest` (what followed the head) first.
    async fn serve_connect(
        self: Arc<Self>,
        mut stream: TcpStream,
        rest: BytesMut,
        mut info: ConnInfo,
        (host, port): (&str, u16),
    ) {
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = canonical_ip(ip);
                info.orig = SocketAddr::new(ip, port);
                info.dns_name = self.dns.lookup(ip);
            }
            Err(_) => {
                info.orig = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                info.dns_name = Some(Arc::from(host));
            }
        }
        let policy = self.policy.load_full();
        let verdict = policy.evaluate(&conn_destination(info.dns_name.as_deref(), info.orig));
        if let VerdictAction::Deny = verdict.action {
            if policy.is_undecided(&verdict.rule) {
                info.asked = self.ask(host, port, None).await;
            }
        }
        if verdict.is_deny() && !info.asked.is_some_and(|a| a.allow) {
            let asked = match info.asked {
                Some(a) => format!("; asked, not approved ({})", a.by.as_str()),
                None => String::new(),
            };
            let body = format!(
                "egret: CONNECT to {host}:{port} denied by rule {}{asked} (sandbox {}, policy generation {})\n",
                verdict.rule,
                self.cfg.sandbox_id,
                policy.generation()
            );
            let refusal = ("403 Forbidden", Decision::Deny, &*verdict.rule, &*body);
            return self.answer_refused(stream, &info, refusal).await;
        }
        drop(policy);
        if stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        self.classify_and_serve(stream, rest, info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(head: &str) -> Result<Option<(Ask, usize)>, AskError> {
        parse_ask(head.as_bytes())
    }

    #[test]
    fn connect_names_host_and_port() {
        let head = "CONNECT API.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n";
        assert_eq!(
            ask(&format!("{head}\x16\x03\x01")).unwrap(),
            Some((
                Ask::Connect {
                    host: "api.example.test".into(),
                    port: 443
                },
                head.len()
            ))
        );
        let v6 = ask("CONNECT [fd00::2]:22 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            v6.0,
            Ask::Connect {
                host: "fd00::2".into(),
                port: 22
            }
        );
        for bad in [
            "CONNECT api.example.test HTTP/1.1\r\n\r\n",
            "CONNECT user@host:443 HTTP/1.1\r\n\r\n",
            "CONNECT host:0 HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(ask(bad), Err(AskError::ConnectTarget(_))), "{bad}");
        }
    }

    #[test]
    fn plain_requests_need_an_absolute_http_url() {
        let head = "GET http://api.example.test/x?y HTTP/1.1\r\nHost: api.example.test\r\n\r\n";
        assert_eq!(ask(head).unwrap(), Some((Ask::Forward, head.len())));
        assert_eq!(
            ask("POST HTTP://h:8080/ HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .0,
            Ask::Forward
        );
        assert_eq!(ask("GET https://h/ HTTP/1.1\r\n\r\n"), Err(AskError::Https));
        assert!(matches!(
            ask("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Err(AskError::NotAbsolute(_))
        ));
        assert!(matches!(
            ask("GET ftp://h/ HTTP/1.1\r\n\r\n"),
            Err(AskError::NotAbsolute(_))
        ));
    }

    #[test]
    fn an_incomplete_head_waits_and_a_bad_or_endless_one_is_refused() {
        assert_eq!(ask("CONNECT h:443 HTTP/1.1\r\nHost: h"), Ok(None));
        assert_eq!(ask(""), Ok(None));
        assert!(matches!(
            ask("\x16\x03\x01\x02\x00"),
            Err(AskError::Malformed(_))
        ));
        let endless = format!("GET http://h/ HTTP/1.1\r\nX: {}", "a".repeat(HEAD_MAX));
        assert_eq!(ask(&endless), Err(AskError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_ask(&b);
        }
    }
}

//! One sandbox connection: loop guard, attribution to a looked-up name, classification of the
//! first bytes, then the TLS, HTTP or opaque path.
use crate::classify::{classify, Class};
use crate::upstream::canonical_ip;
use crate::Proxy;
use bytes::{Bytes, BytesMut};
use egret_policy::{Destination, TlsDecision};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::Instrument;

/// What egret knows about a sandbox connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Connection id (per egret process).
    pub id: u64,
    /// The sandbox-side address.
    pub client: SocketAddr,
    /// The original destination the sandbox dialled.
    pub orig: SocketAddr,
    /// The name the sandbox looked up for `orig` (via egret's DNS), if any.
    pub dns_name: Option<Arc<str>>,
    /// SNI, for intercepted TLS.
    pub sni: Option<Arc<str>>,
    /// Whether the connection is intercepted TLS.
    pub tls: bool,
    /// When egret accepted the connection (for the audit event's duration).
    pub started: std::time::Instant,
}

impl ConnInfo {
    /// The name of the destination as known at connection level (SNI, else DNS name).
    pub fn conn_name(&self) -> Option<&str> {
        self.sni.as_deref().or(self.dns_name.as_deref())
    }
}

/// Close with a TCP reset (SO_LINGER 0), so a refused client fails at once.
pub(crate) fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// The destination of a connection as the policy sees it: the name when there is one (SNI or
/// the name the sandbox looked up), otherwise the dialled IP.
pub(crate) fn conn_destination(name: Option<&str>, orig: SocketAddr) -> Destination<'_> {
    Destination {
        host: name,
        ip: if name.is_none() {
            Some(orig.ip())
        } else {
            None
        },
        port: orig.port(),
    }
}

impl Proxy {
    /// Refuse a connection: count it, write its audit event, reset it.
    pub(crate) fn refuse(
        &self,
        stream: TcpStream,
        info: &ConnInfo,
        name: Option<&str>,
        proto: &'static str,
        rule: &str,
    ) {
        self.stats.denied.fetch_add(1, Ordering::Relaxed);
        crate::audit::connection(self, info, name, proto, "deny", rule, 0, 0);
        reset(stream);
    }
}

/// Largest prefix read while classifying (a ClientHello may be longer; TLS reads on).
const CLASSIFY_MAX: usize = 64;

impl Proxy {
    pub(crate) async fn handle_connection(self: Arc<Self>, stream: TcpStream, client: SocketAddr) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", sandbox = %self.cfg.sandbox_id, conn = id);
        self.clone()
            .connection_inner(stream, client, id, std::time::Instant::now())
            .instrument(span)
            .await;
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }

    async fn connection_inner(
        self: Arc<Self>,
        mut stream: TcpStream,
        client: SocketAddr,
        id: u64,
        started: std::time::Instant,
    ) {
        let _ = stream.set_nodelay(true);
        let orig = match stream.local_addr() {
            Ok(a) => SocketAddr::new(canonical_ip(a.ip()), a.port()),
            Err(_) => return,
        };
        // Loop guard: the ruleset never sends loopback traffic here, so such a connection was
        // forced (forged mark or a direct connect to the listener).
        if orig.ip().is_loopback() || orig.ip().is_unspecified() {
            tracing::warn!(%orig, "refused a connection addressed to egret's own listener");
            reset(stream);
            return;
        }
        if orig.port() == 53 {
            self.dns.serve_tcp(stream).await;
            return;
        }
        let dns_name = self.dns.lookup(orig.ip());
        let info = ConnInfo {
            id,
            client,
            orig,
            dns_name,
            sni: None,
            tls: false,
            started,
        };
        if info.dns_name.is_none() && self.dns.is_synthetic(orig.ip()) {
            crate::audit::connection(
                &self,
                &info,
                None,
                "tcp",
                "deny",
                "unknown synthetic address (its DNS answer expired: resolve the name again)",
                0,
                0,
            );
            reset(stream);
            return;
        }
        let mut buf = BytesMut::with_capacity(CLASSIFY_MAX);
        let class = tokio::time::timeout(self.cfg.classify_timeout, async {
            loop {
                match classify(&buf) {
                    Class::NeedMore if buf.len() < CLASSIFY_MAX => {}
                    Class::NeedMore => return Class::Opaque,
                    c => return c,
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return Class::Opaque,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(Class::Opaque);
        let prefix = buf.freeze();
        match class {
            Class::Tls => self.handle_tls(stream, prefix, info).await,
            Class::Http1 | Class::H2Prior => {
                let io = egret_tls::peek::Rewind::new(prefix, stream);
                self.serve_http(io, Arc::new(info)).await
            }
            Class::Opaque | Class::NeedMore => self.tunnel(stream, prefix, info, "tcp").await,
        }
    }

    async fn handle_tls(self: Arc<Self>, mut stream: TcpStream, prefix: Bytes, mut info: ConnInfo) {
        let mut buf = prefix.to_vec();
        let hello = tokio::time::timeout(
            self.cfg.handshake_timeout,
            egret_tls::peek::read_client_hello(&mut stream, &mut buf, 64 * 1024),
        )
        .await;
        let hello = match hello {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "not a usable TLS ClientHello; connection closed");
                crate::audit::connection(
                    &self,
                    &info,
                    info.dns_name.as_deref(),
                    "tls",
                    "error",
                    &format!("bad ClientHello: {e}"),
                    0,
                    0,
                );
                reset(stream);
                return;
            }
            Err(_) => {
                crate::audit::connection(
                    &self,
                    &info,
                    info.dns_name.as_deref(),
                    "tls",
                    "error",
                    "ClientHello timed out",
                    0,
                    0,
                );
                reset(stream);
                return;
            }
        };
        let prefix = Bytes::from(buf);
        // The name is the SNI; without SNI, the name the sandbox looked up; else the IP.
        let name: Option<Arc<str>> = hello
            .sni
            .as_deref()
            .map(Arc::from)
            .or(info.dns_name.clone());
        let policy = self.policy.load_full();
        let dest = conn_destination(name.as_deref(), info.orig);
        match policy.tls_decision(&dest) {
            TlsDecision::Refuse(v) => {
                self.refuse(stream, &info, name.as_deref(), "tls", &v.rule);
            }
            TlsDecision::Passthrough(_) if hello.ech_offered => {
                // With Encrypted Client Hello the SNI is only a public front name: splicing
                // would let the hidden inner name decide where the bytes go.
                self.refuse(
                    stream,
                    &info,
                    name.as_deref(),
                    "tls",
                    "ECH hides the destination; pass-through refused",
                );
            }
            TlsDecision::Passthrough(_) => {
                info.sni = name;
                let io = stream;
                self.passthrough(io, prefix, info).await
            }
            TlsDecision::Intercept(_) => {
                let Some(tls) = &self.tls else {
                    crate::audit::connection(
                        &self,
                        &info,
                        name.as_deref(),
                        "tls",
                        "error",
                        "TLS interception is not configured",
                        0,
                        0,
                    );
                    reset(stream);
                    return;
                };
                let leaf = match &name {
                    Some(n) => egret_tls::LeafName::Dns(n.to_string()),
                    None => egret_tls::LeafName::Ip(info.orig.ip()),
                };
                let config = match tls.leaves.get_or_mint(&leaf).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "leaf certificate could not be minted");
                        reset(stream);
                        return;
                    }
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let io = egret_tls::peek::Rewind::new(prefix, stream);
                let tls_stream =
                    match tokio::time::timeout(self.cfg.handshake_timeout, acceptor.accept(io))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "downstream TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!("downstream TLS handshake timed out");
                            return;
                        }
                    };
                info.sni = Some(name.unwrap_or_else(|| Arc::from(info.orig.ip().to_string())));
                info.tls = true;
                self.serve_http(tls_stream, Arc::new(info)).await
            }
        }
    }
}

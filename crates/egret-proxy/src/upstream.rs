//! Upstream side: resolving the name the policy evaluated (never the address the sandbox
//! dialled), connecting with a timeout, optional TLS with verification, and the hyper-util
//! connection pools built on top.
use crate::body::ProxyBody;
use arc_swap::ArcSwap;
use egret_policy::CompiledPolicy;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why an upstream connection could not be made. The Display text is shown to the sandbox's
/// client in a 502 body, so it names the host and the reason, and nothing secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Name resolution failed.
    #[error("could not resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The name resolved only to addresses egret refuses to dial on the sandbox's behalf.
    #[error("{host} resolves to {addr}, a local or reserved address egret does not dial for a sandbox; pin it with --resolve or [resolve] if that is intended")]
    Forbidden {
        /// The host.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// TCP connect failed or timed out.
    #[error("could not connect to {host} ({addr}): {reason}")]
    Connect {
        /// The host.
        host: String,
        /// The address tried last.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with the upstream failed (including certificate verification).
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls {
        /// The host.
        host: String,
        /// Why (e.g. the certificate verification error).
        reason: String,
    },
    /// The URI had no host (a bug in egret, not user input).
    #[error("upstream request has no host")]
    NoHost,
}

/// Addresses egret refuses to dial unless an operator pinned them.
pub fn is_forbidden_upstream(ip: IpAddr, synthetic: &dyn Fn(IpAddr) -> bool) -> bool {
    let ip = canonical_ip(ip);
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || synthetic(ip)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || synthetic(ip)
        }
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; everything else unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Name resolution for upstream connections: pins (`--resolve`, `[resolve]`) first, then the
/// system resolver of egret's own namespace.
#[derive(Clone)]
pub struct Resolver {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    synthetic: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl Resolver {
    /// A resolver reading pins from the current policy.
    pub fn new(
        policy: Arc<ArcSwap<CompiledPolicy>>,
        synthetic: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    ) -> Self {
        Resolver { policy, synthetic }
    }

    /// Resolve `host` for `port`. IP literals are used as they are (after the forbidden check).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if is_forbidden_upstream(ip, &*self.synthetic) {
                return Err(ConnectError::Forbidden {
                    host: host.to_string(),
                    addr: ip,
                });
            }
            return Ok(vec![SocketAddr::new(canonical_ip(ip), port)]);
        }
        if let Some(pins) = self.policy.load().pinned(host) {
            if !pins.is_empty() {
                return Ok(pins.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
            }
        }
        let looked =
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ConnectError::Resolve {
                    host: host.to_string(),
                    reason: e.to_string(),
                })?;
        let mut out = Vec::new();
        let mut refused = None;
        for a in looked {
            if is_forbidden_upstream(a.ip(), &*self.synthetic) {
                refused = Some(a.ip());
            } else {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(match refused {
                Some(addr) => ConnectError::Forbidden {
                    host: host.to_string(),
                    addr,
                },
                None => ConnectError::Resolve {
                    host: host.to_string(),
                    reason: "no addresses".into(),
                },
            });
        }
        Ok(out)
    }
}

/// Connect to the first address that answers, each attempt bounded by `timeout`.
pub async fn connect_any(
    host: &str,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some((*addr, e.to_string())),
            Err(_) => last = Some((*addr, format!("timed out after {timeout:?}"))),
        }
    }
    let (addr, reason) = last.unwrap_or_else(|| {
        (
            SocketAddr::from(([0, 0, 0, 0], 0)),
            "no address to try".to_string(),
        )
    });
    Err(ConnectError::Connect {
        host: host.to_string(),
        addr,
        reason,
    })
}

/// A connected upstream stream, plain or TLS.
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The stream handed to hyper's client: hyper I/O traits plus connection metadata (whether
/// ALPN chose h2, so the pool multiplexes).
pub struct UpstreamConn {
    io: TokioIo<UpstreamIo>,
    h2: bool,
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// hyper-util connector: resolves via [`Resolver`], connects, and for `https` URIs performs a
/// verified TLS handshake using the URI host as the server name.
#[derive(Clone)]
pub struct Connector {
    resolver: Resolver,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Connector {
    /// A connector; `tls` is the client config used for `https` URIs.
    pub fn new(
        resolver: Resolver,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Connector {
            resolver,
            tls,
            timeout,
            metrics,
        }
    }

    /// Resolve and connect (plain TCP).
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let start = std::time::Instant::now();
        let result = async {
            let addrs = self.resolver.resolve(host, port).await?;
            connect_any(host, &addrs, self.timeout).await
        }
        .await;
        match &result {
            Ok(_) => self.metrics.upstream_connect.observe(start.elapsed()),
            Err(_) => self.metrics.connect_failed(),
        }
        result
    }

    async fn connect_uri(self, uri: Uri) -> Result<UpstreamConn, ConnectError> {
        let host = uri.host().ok_or(ConnectError::NoHost)?.to_string();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tcp = self.connect_tcp(&bare, port).await?;
        if !https {
            return Ok(UpstreamConn {
                io: TokioIo::new(UpstreamIo::Plain(tcp)),
                h2: false,
            });
        }
        let cfg = self.tls.clone().ok_or_else(|| ConnectError::Tls {
            host: bare.clone(),
            reason: "upstream TLS is not configured".into(),
        })?;
        let name = rustls::pki_types::ServerName::try_from(bare.clone()).map_err(|e| {
            ConnectError::Tls {
                host: bare.clone(),
                reason: format!("invalid server name: {e}"),
            }
        })?;
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let start = std::time::Instant::now();
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Tls {
                host: bare.clone(),
                reason: format!("handshake timed out after {:?}", self.timeout),
            })
            .and_then(|r| {
                r.map_err(|e| ConnectError::Tls {
                    host: bare.clone(),
                    reason: describe_tls_io_error(&e),
                })
            });
        let tls = match tls {
            Ok(t) => {
                self.metrics.upstream_tls.observe(start.elapsed());
                t
            }
            Err(e) => {
                self.metrics.connect_failed();
                return Err(e);
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(UpstreamConn {
            io: TokioIo::new(UpstreamIo::Tls(Box::new(tls))),
            h2,
        })
    }
}

/// Turn the io::Error tokio-rustls returns into the verification reason when there is one.
pub fn describe_tls_io_error(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return egret_tls::describe_verify_error(tls);
        }
    }
    e.to_string()
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamConn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamConn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect_uri(uri))
    }
}

/// The upstream HTTP clients (one pool each).
#[derive(Clone)]
pub struct Clients {
    /// HTTP/1.1 for `http`, ALPN (h2 or http/1.1) for `https`.
    pub auto: Client<Connector, ProxyBody>,
    /// HTTP/1.1 only (upgrades such as WebSocket need it).
    pub h1: Client<Connector, ProxyBody>,
    /// h2c with prior knowledge (used when the sandbox spoke h2c to us).
    pub h2c: Client<Connector, ProxyBody>,
}

impl Clients {
    /// Build the pools.
    pub fn new(
        resolver: Resolver,
        tls_auto: Option<Arc<rustls::ClientConfig>>,
        tls_h1: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let mk = |tls: Option<Arc<rustls::ClientConfig>>, h2only: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(64)
                .http2_only(h2only)
                .http2_adaptive_window(true);
            b.build(Connector::new(
                resolver.clone(),
                tls,
                timeout,
                metrics.clone(),
            ))
        };
        Clients {
            auto: mk(tls_auto, false),
            h1: mk(tls_h1, false),
            h2c: mk(None, true),
        }
    }
}

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
    /// The name resolved only to addresses egret does not dial for a sandbox (non-public ones
    /// the policy does not allow, egret's synthetic DNS addresses, egret's own host).
    #[error("{}", forbidden_text(.host, .addr, .what, *.pin_only))]
    Forbidden {
        /// The host.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// What the address is, e.g. `private (RFC 1918) (10.0.0.0/8)`.
        what: String,
        /// Only a pin can allow it (egret's synthetic addresses).
        pin_only: bool,
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

fn forbidden_text(host: &str, addr: &IpAddr, what: &str, pin_only: bool) -> String {
    let subject = if host.trim_start_matches('[').trim_end_matches(']') == addr.to_string() {
        format!("{addr} is {what}")
    } else {
        format!("{host} resolves to {addr}, {what}")
    };
    if pin_only {
        format!("{subject}, which egret does not dial for a sandbox; pin {host} with --resolve or [resolve] if that is intended")
    } else {
        format!("{subject}, which egret does not dial for a sandbox unless allowed: add it to allowed_upstream_cidrs (e.g. \"{addr}\") or pin {host} with --resolve or [resolve]")
    }
}

impl ConnectError {
    /// Whether the policy, not the network, stopped the connection (audited as `deny`).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ConnectError::Forbidden { .. })
    }
}

/// The policy's canonical form of an address: the proxy compares, checks and dials addresses in
/// the same form the policy matched them in.
pub use egret_policy::canonical_ip;

/// An address to dial for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// The operator asked for this address (a pin, `allowed_upstream_cidrs`, an address
    /// pattern of the policy), so it is dialled even when it is egret's own host.
    pub named: bool,
}

/// Name resolution for upstream connections: pins (`--resolve`, `[resolve]`) first, then the
/// system resolver of egret's own namespace. Every address a name resolves to is checked
/// before it is dialled: egret's synthetic addresses and non-public addresses the policy does
/// not allow are dropped (see [`CompiledPolicy::upstream_refusal`]); a name left with none is
/// refused. The addresses returned are the ones dialled, so nothing can change between the
/// check and the connect.
#[derive(Clone)]
pub struct Resolver {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    synthetic: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl Resolver {
    /// A resolver reading pins and allowances from the current policy.
    pub fn new(
        policy: Arc<ArcSwap<CompiledPolicy>>,
        synthetic: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    ) -> Self {
        Resolver { policy, synthetic }
    }

    /// Why egret may not dial `ip` for `host`, if it may not.
    fn refusal(
        &self,
        policy: &CompiledPolicy,
        host: &str,
        ip: IpAddr,
        port: u16,
    ) -> Option<ConnectError> {
        if (self.synthetic)(ip) {
            return Some(ConnectError::Forbidden {
                host: host.to_string(),
                addr: ip,
                what: "an address of egret's synthetic DNS pool".into(),
                pin_only: true,
            });
        }
        policy
            .upstream_refusal(ip, port)
            .map(|range| ConnectError::Forbidden {
                host: host.to_string(),
                addr: ip,
                what: range.to_string(),
                pin_only: false,
            })
    }

    /// Resolve `host` for `port` into the addresses egret may dial. IP literals are used as
    /// they are (after the same check).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<Candidate>, ConnectError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let ip = canonical_ip(ip);
            let policy = self.policy.load();
            if let Some(e) = self.refusal(&policy, host, ip, port) {
                return Err(e);
            }
            let named = policy.upstream_named(ip, port);
            return Ok(vec![Candidate {
                addr: SocketAddr::new(ip, port),
                named,
            }]);
        }
        if let Some(pins) = self.policy.load().pinned(host) {
            if !pins.is_empty() {
                return Ok(pins
                    .iter()
                    .map(|ip| Candidate {
                        addr: SocketAddr::new(*ip, port),
                        named: true,
                    })
                    .collect());
            }
        }
        let looked =
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ConnectError::Resolve {
                    host: host.to_string(),
                    reason: e.to_string(),
                })?;
        // Read after the lookup: a swap during it applies to its answer.
        let policy = self.policy.load();
        let mut out = Vec::new();
        let mut refused = None;
        for a in looked {
            let ip = canonical_ip(a.ip());
            match self.refusal(&policy, host, ip, port) {
                Some(e) => {
                    refused.get_or_insert(e);
                }
                None => out.push(Candidate {
                    addr: SocketAddr::new(ip, port),
                    named: policy.upstream_named(ip, port),
                }),
            }
        }
        if out.is_empty() {
            return Err(refused.unwrap_or_else(|| ConnectError::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            }));
        }
        Ok(out)
    }
}

/// Whether a connected socket reached the egret host itself: the kernel routes a connection to
/// one of the host's own addresses through its local table, whose routes use that very address
/// as the source.
fn reached_own_host(s: &TcpStream) -> bool {
    match (s.local_addr(), s.peer_addr()) {
        (Ok(l), Ok(p)) => canonical_ip(l.ip()) == canonical_ip(p.ip()),
        _ => false,
    }
}

/// Connect to the first candidate that answers, each attempt bounded by `timeout`. A
/// connection that turns out to reach egret's own host (not named by the operator) is closed
/// before a byte is sent and the next candidate tried.
pub async fn connect_any(
    host: &str,
    addrs: &[Candidate],
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    let mut refused = None;
    for c in addrs {
        let addr = c.addr;
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                if !c.named && reached_own_host(&s) {
                    crate::conn::reset(s);
                    refused = Some(ConnectError::Forbidden {
                        host: host.to_string(),
                        addr: addr.ip(),
                        what: "an address of egret's own host".into(),
                        pin_only: false,
                    });
                    continue;
                }
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some((addr, e.to_string())),
            Err(_) => last = Some((addr, format!("timed out after {timeout:?}"))),
        }
    }
    if let (Some(e), None) = (refused, &last) {
        return Err(e);
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
            Ok(_) => self.metrics.upstream_connected(start.elapsed()),
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
                self.metrics.upstream_tls_done(start.elapsed());
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

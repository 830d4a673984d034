//! egret's data path.
//!
//! Every connection the sandbox makes arrives on the transparent listener with its original
//! destination as the local address. [`Proxy::serve`] accepts it and the connection handler
//! classifies the first bytes:
//!
//! * TLS → ClientHello (SNI, ALPN) → policy: intercept (mint/cached leaf, rustls server, then
//!   HTTP as below), pass through untouched (splice), or refuse,
//! * HTTP/1.x or the h2 preface → the HTTP engine (hyper): per request, the host the request
//!   names is evaluated against the current policy generation, optionally handed to a
//!   handler, and forwarded to that name (resolved by egret) with bodies streamed,
//! * anything else → opaque TCP, allowed or refused by destination (the name the sandbox
//!   looked up via egret's DNS, or the IP).
//!
//! The client's first bytes decide whenever they come: waiting never turns an interceptable
//! connection into a tunnel. A client silent for `classify_timeout` may be talking to a
//! server-speaks-first protocol: where the destination may be opaque TCP, egret then connects
//! upstream and, if the server speaks first, the connection is opaque for good. Every other
//! silent connection is held until the handshake time runs out, then refused.
//!
//! The policy is read through an `ArcSwap`: a request pins the generation it started with, and
//! the next request on the same connection sees the newest one.
#![forbid(unsafe_code)]

pub mod ask;
pub mod audit;
pub mod authority;
pub mod body;
pub mod classify;
mod conn;
pub mod echo_guard;
mod explicit;
pub mod fetch;
pub mod headers;
mod http_engine;
pub mod metrics;
pub mod shadow;
mod shard;
mod splice;
pub mod sse;
mod tunnel;
pub mod upstream;

pub use ask::{Answer, Asker, DecidedBy, Question};
pub use audit::{AuditError, AuditOutput, AuditSink};
pub use conn::{Classified, ConnInfo};
pub use http_engine::{
    Dispatched, EventDecision, HandlerAction, HandlerDispatch, HandlerFailure, RequestHead,
    ResponseDecision, ResponseMode, ResponsePhase,
};
pub use shadow::{Shadow, ShadowSlot};
pub use shard::Shards;

use arc_swap::ArcSwap;
use egret_policy::CompiledPolicy;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Tunables of the data path. Defaults are documented in the README.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Sandbox id, on every log line and audit event.
    pub sandbox_id: Arc<str>,
    /// The transparent listener port (connections whose original destination is this port on
    /// a local address are refused: loop guard).
    pub listen_port: u16,
    /// How long a client may stay silent before egret also listens for a server greeting
    /// (server-speaks-first protocols) where the destination may be opaque TCP.
    pub classify_timeout: Duration,
    /// Upstream TCP connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// How long a client may take, from accept, to send first bytes that decide the connection
    /// when no server greeting is possible; and the downstream TLS handshake timeout
    /// (ClientHello and handshake).
    pub handshake_timeout: Duration,
    /// HTTP/1 request header read timeout (slowloris guard).
    pub header_read_timeout: Duration,
    /// Maximum simultaneous sandbox connections; further ones are reset.
    pub max_connections: usize,
    /// Pass `Alt-Svc` HTTP/3 advertisements to the sandbox (by default they are stripped:
    /// UDP/443 is refused, so QUIC could only fail).
    pub keep_alt_svc: bool,
    /// Connection threads: the runtime calling [`Proxy::serve_sharded`] plus `workers - 1`
    /// started by [`Proxy::start_shards`], each with its own upstream pools.
    pub workers: usize,
}

impl ProxyConfig {
    /// Defaults for a sandbox.
    pub fn new(sandbox_id: &str) -> Self {
        ProxyConfig {
            sandbox_id: sandbox_id.into(),
            listen_port: 15001,
            classify_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 16384,
            keep_alt_svc: false,
            workers: 1,
        }
    }
}

/// What the data path needs from the sandbox's DNS (implemented over `egret-dns` by the
/// binary): the synthetic address → name map, and DNS over TCP for connections to port 53.
pub trait SandboxDns: Send + Sync + 'static {
    /// The name egret answered with this synthetic address, if it still remembers it.
    fn lookup(&self, ip: std::net::IpAddr) -> Option<Arc<str>>;
    /// Whether the address is in egret's synthetic pools.
    fn is_synthetic(&self, ip: std::net::IpAddr) -> bool;
    /// Serve DNS over TCP on a connection the sandbox made to some resolver's port 53.
    fn serve_tcp(
        &self,
        stream: tokio::net::TcpStream,
    ) -> futures_util::future::BoxFuture<'static, ()>;
}

/// TLS interception state for one sandbox.
pub struct TlsState {
    /// Leaf certificates (and their server configs) per SNI.
    pub leaves: Arc<egret_tls::LeafCache>,
}

/// The proxy for one sandbox.
pub struct Proxy {
    pub(crate) cfg: ProxyConfig,
    pub(crate) policy: Arc<ArcSwap<CompiledPolicy>>,
    /// The shadow candidate, when one is loaded.
    pub(crate) shadow: ShadowSlot,
    pub(crate) dns: Arc<dyn SandboxDns>,
    /// Upstream pools, one set per connection thread (`cfg.workers`): the main runtime's
    /// first (see [`Proxy::clients`]).
    pub(crate) clients: Vec<upstream::Clients>,
    pub(crate) connector: upstream::Connector,
    pub(crate) tls: Option<TlsState>,
    pub(crate) handlers: Option<Arc<dyn HandlerDispatch>>,
    /// `--ask`: who is asked about destinations no rule decides (None: they are denied).
    pub(crate) asker: Option<Arc<dyn Asker>>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) audit: Arc<AuditSink>,
    pub(crate) next_conn: AtomicU64,
    /// `max_connections`, shared by every accept loop.
    pub(crate) limit: Arc<tokio::sync::Semaphore>,
    /// Bumped by [`Proxy::policy_changed`]; long-lived tunnels re-check their destination.
    pub(crate) generation_tx: tokio::sync::watch::Sender<u64>,
}

/// Everything needed to build a [`Proxy`].
pub struct ProxyParts {
    /// Tunables.
    pub cfg: ProxyConfig,
    /// The policy, swappable at runtime.
    pub policy: Arc<ArcSwap<CompiledPolicy>>,
    /// The shadow candidate policy, loaded and dropped by the control plane.
    pub shadow: ShadowSlot,
    /// The sandbox's DNS (synthetic address map + DNS over TCP).
    pub dns: Arc<dyn SandboxDns>,
    /// Upstream TLS client config offering h2 and http/1.1.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Upstream TLS client config offering http/1.1 only.
    pub upstream_tls_h1: Option<Arc<rustls::ClientConfig>>,
    /// TLS interception (None: TLS is only ever passed through or refused).
    pub tls: Option<TlsState>,
    /// Handler engine (None: handler routes fail closed with a 502).
    pub handlers: Option<Arc<dyn HandlerDispatch>>,
    /// Who is asked about destinations no rule decides (`--ask`); None: they are denied.
    pub asker: Option<Arc<dyn Asker>>,
    /// Where audit events go (one JSON line per request and per tunnel connection).
    pub audit: Arc<AuditSink>,
    /// Data-path metrics (shared with whoever renders `/metrics`).
    pub metrics: Arc<metrics::Metrics>,
}

impl Proxy {
    /// Build the proxy.
    pub fn new(parts: ProxyParts) -> Arc<Proxy> {
        let dns = parts.dns.clone();
        let map = dns.clone();
        let synthetic: Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync> =
            Arc::new(move |ip| map.is_synthetic(ip));
        let resolver = upstream::Resolver::new(parts.policy.clone(), synthetic);
        let clients = (0..parts.cfg.workers.max(1))
            .map(|_| {
                upstream::Clients::new(
                    resolver.clone(),
                    parts.upstream_tls.clone(),
                    parts.upstream_tls_h1.clone(),
                    parts.cfg.connect_timeout,
                    parts.metrics.clone(),
                )
            })
            .collect();
        let connector = upstream::Connector::new(
            resolver,
            parts.upstream_tls,
            parts.cfg.connect_timeout,
            parts.metrics.clone(),
        );
        let limit = Arc::new(tokio::sync::Semaphore::new(parts.cfg.max_connections));
        Arc::new(Proxy {
            cfg: parts.cfg,
            policy: parts.policy,
            shadow: parts.shadow,
            dns,
            clients,
            connector,
            tls: parts.tls,
            handlers: parts.handlers,
            asker: parts.asker,
            metrics: parts.metrics,
            audit: parts.audit,
            next_conn: AtomicU64::new(1),
            limit,
            generation_tx: tokio::sync::watch::channel(0).0,
        })
    }

    /// Tell open tunnels (opaque TCP, TLS pass-through) that the policy changed: each one
    /// re-evaluates its destination and is closed if the new policy denies it. HTTP
    /// connections need no notice: every request is evaluated on the generation current when
    /// it starts.
    pub fn policy_changed(&self) {
        let generation = self.policy.load().generation();
        tracing::debug!(
            generation,
            tunnels = self.generation_tx.receiver_count(),
            "policy changed: open tunnels re-check"
        );
        self.generation_tx.send_replace(generation);
    }

    /// Data-path metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The audit sink.
    pub fn audit(&self) -> &Arc<AuditSink> {
        &self.audit
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.load_full()
    }

    /// Accept connections forever (until the future is dropped), all served on this runtime.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        self.serve_sharded(listener, None).await
    }

    /// Accept connections forever, each served on the least busy of this runtime and the
    /// shard threads (see [`Proxy::start_shards`]). Every accept loop shares the connection
    /// limit.
    pub async fn serve_sharded(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shards: Option<Arc<Shards>>,
    ) {
        self.accept_loop(listener, shards, Entry::Transparent).await
    }

    /// Serve egret as an explicit HTTP proxy on `listener` (CONNECT, and absolute-form
    /// `http://` requests): each connection then goes through the same classification,
    /// policy, interception, handlers and audit as a captured one, its destination taken from
    /// the CONNECT target or the request instead of the capture. Shares the connection limit
    /// and the shard threads with the transparent listeners.
    pub async fn serve_explicit(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shards: Option<Arc<Shards>>,
    ) {
        self.accept_loop(listener, shards, Entry::Explicit).await
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shards: Option<Arc<Shards>>,
        entry: Entry,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                self.metrics.overload_reset();
                conn::reset(stream);
                continue;
            };
            match &shards {
                Some(shards) => shards.dispatch(&self, stream, peer, permit, entry),
                None => self.clone().spawn_connection(stream, peer, permit, entry),
            }
        }
    }

    /// Keeps a timer pending on the calling thread's runtime, always due before any
    /// header-read deadline hyper can set, while a guard returned here is alive: every open
    /// connection holds one, so the timer runs exactly while its thread serves connections.
    ///
    /// hyper arms a fresh `header_read_timeout` sleep for every keep-alive request. If tokio's
    /// time driver parked with no timer pending (the usual case between a request and its
    /// upstream's answer), registering that sleep makes the driver wake itself through its
    /// eventfd: a write and an extra `epoll_wait` per request (seen with strace). With an
    /// earlier timer already pending, registering a later one costs nothing. The price is one
    /// wake-up every few seconds per thread with connections open; an idle sidecar has no
    /// timer at all (at 1,000 idle sidecars per host the always-armed timers cost 2.8% of a
    /// core: `BENCH_ONLY=density BENCH_DENSITY_MAX=1000 egret-bench`).
    pub(crate) fn keep_timer_armed(&self) -> Arc<AbortOnDrop> {
        thread_local! {
            static ARMED: std::cell::RefCell<std::sync::Weak<AbortOnDrop>> =
                const { std::cell::RefCell::new(std::sync::Weak::new()) };
        }
        ARMED.with(|armed| {
            if let Some(guard) = armed.borrow().upgrade() {
                return guard;
            }
            let period = (self.cfg.header_read_timeout / 3)
                .clamp(Duration::from_secs(1), Duration::from_secs(10));
            let guard = Arc::new(AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                }
            })));
            *armed.borrow_mut() = Arc::downgrade(&guard);
            guard
        })
    }

    /// Serves one accepted connection on the current runtime; `hold` (its connection-limit
    /// permit, its thread's load count) is released when the connection ends.
    pub(crate) fn spawn_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        hold: impl Send + 'static,
        entry: Entry,
    ) {
        let armed = self.keep_timer_armed();
        tokio::spawn(async move {
            self.handle_connection(stream, peer, entry).await;
            drop(hold);
            drop(armed);
        });
    }
}

/// The listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The transparent capture: the original destination is the socket's local address.
    Transparent,
    /// The explicit proxy: the destination is what the client asks for.
    Explicit,
}

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

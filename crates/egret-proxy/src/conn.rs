//! One sandbox connection: loop guard, attribution to a looked-up name, classification of the
//! first bytes, then the TLS, HTTP or opaque path.
use crate::audit::ConnEnd;
use crate::classify::{classify, Class};
use crate::metrics::{Decision, TunnelProto};
use crate::tunnel::Owed;
use crate::upstream::canonical_ip;
use crate::Proxy;
use bytes::{Bytes, BytesMut};
use egret_policy::{CompiledPolicy, Destination, TlsDecision, Verdict, VerdictAction};
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
    /// Which side's bytes decided how the connection is served.
    pub classified: Classified,
    /// When (after accept) the bytes that decided it arrived.
    pub first_byte: Option<Duration>,
    /// Whether the connection came through the explicit proxy listener (CONNECT or an
    /// absolute-form request) rather than the transparent capture; `orig` is then the
    /// CONNECT target (the unspecified address when it named a host: nothing was dialled).
    pub explicit: bool,
    /// The answer of whoever was asked about this connection's destination (`--ask`), when
    /// someone was: an approval covers the requests on it.
    pub asked: Option<crate::ask::Answer>,
}

/// How a connection was classified (the audit event's `classified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// By the client's first bytes (TLS, HTTP, or neither: opaque), whenever they came.
    ClientFirst,
    /// The client was silent for the classify timeout and the server spoke first: opaque.
    ServerFirst,
    /// Nobody spoke before the handshake time ran out: refused.
    Silent,
    /// The client's first bytes could still have been TLS or HTTP when the handshake time ran
    /// out: refused.
    Incomplete,
    /// The client closed its side before sending anything.
    Eof,
}

impl Classified {
    /// The audit label.
    pub fn as_str(self) -> &'static str {
        match self {
            Classified::ClientFirst => "client-first",
            Classified::ServerFirst => "server-first",
            Classified::Silent => "silent",
            Classified::Incomplete => "incomplete",
            Classified::Eof => "eof",
        }
    }
}

impl ConnInfo {
    /// The name of the destination as known at connection level (SNI, else DNS name).
    pub fn conn_name(&self) -> Option<&str> {
        self.sni.as_deref().or(self.dns_name.as_deref())
    }

    /// The address the client dialled, for the audit event: none for an explicit-proxy
    /// connection to a host name.
    pub fn dst(&self) -> Option<SocketAddr> {
        (!(self.explicit && self.orig.ip().is_unspecified())).then_some(self.orig)
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
        proto: TunnelProto,
        rule: &str,
    ) {
        let end = ConnEnd::unopened(Decision::Deny, rule);
        crate::audit::connection(self, info, name, proto, end);
        reset(stream);
    }

    /// Give up on a connection egret cannot serve: count it, write its audit event (`why`, an
    /// error), reset it.
    pub(crate) fn abandon(
        &self,
        stream: TcpStream,
        info: &ConnInfo,
        name: Option<&str>,
        proto: TunnelProto,
        why: &str,
    ) {
        let end = ConnEnd::unopened(Decision::Error, why);
        crate::audit::connection(self, info, name, proto, end);
        reset(stream);
    }
}

/// Read a server's greeting from a connection that is readable: `Ok(None)` when it was not
/// after all; `Err` when the server closed or failed (with the reason, when there is one to
/// tell).
fn read_greeting(up: &TcpStream) -> Result<Option<Bytes>, Option<String>> {
    let mut greeting = BytesMut::with_capacity(4096);
    match up.try_read_buf(&mut greeting) {
        Ok(0) => Err(Some("the upstream closed without sending anything".into())),
        Ok(_) => Ok(Some(greeting.freeze())),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(Some(format!("the upstream connection failed: {e}"))),
    }
}

/// Largest prefix read while classifying (a ClientHello may be longer; TLS reads on).
const CLASSIFY_MAX: usize = 64;

/// Read until the prefix is classified (a prefix of `CLASSIFY_MAX` bytes that is still
/// ambiguous is opaque; so is end of stream). `None` on a read error.
async fn read_class(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Class> {
    loop {
        match classify(buf) {
            Class::NeedMore if buf.len() < CLASSIFY_MAX => {}
            Class::NeedMore => return Some(Class::Opaque),
            c => return Some(c),
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Some(Class::Opaque),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

impl Proxy {
    pub(crate) async fn handle_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        entry: crate::Entry,
    ) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.metrics.connection_opened();
        let span = tracing::info_span!("conn", sandbox = %self.cfg.sandbox_id, conn = id);
        let started = std::time::Instant::now();
        match entry {
            crate::Entry::Transparent => {
                self.clone()
                    .connection_inner(stream, client, id, started)
                    .instrument(span)
                    .await
            }
            crate::Entry::Explicit => {
                self.clone()
                    .explicit_connection(stream, client, id, started)
                    .instrument(span)
                    .await
            }
        }
        self.metrics.connection_closed();
    }

    async fn connection_inner(
        self: Arc<Self>,
        stream: TcpStream,
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
            classified: Classified::ClientFirst,
            first_byte: None,
            explicit: false,
            asked: None,
        };
        if info.dns_name.is_none() && self.dns.is_synthetic(orig.ip()) {
            let why = "unknown synthetic address (its DNS answer expired: resolve the name again)";
            self.refuse(stream, &info, None, TunnelProto::Tcp, why);
            return;
        }
        self.classify_and_serve(stream, BytesMut::with_capacity(CLASSIFY_MAX), info)
            .await
    }

    /// Classify a connection by its first bytes (`buf`: those already read, as the explicit
    /// proxy has after a CONNECT) and serve it on its path. Every connection, captured or
    /// through the explicit proxy, goes through here.
    pub(crate) async fn classify_and_serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut buf: BytesMut,
        mut info: ConnInfo,
    ) {
        let started = info.started;
        // The client has `classify_timeout` to speak before egret also listens for a
        // server-speaks-first protocol; whenever the client's bytes come, they decide.
        let prompt =
            tokio::time::timeout(self.cfg.classify_timeout, read_class(&mut stream, &mut buf))
                .await;
        match prompt {
            Ok(Some(class)) => {
                info.classified = Classified::ClientFirst;
                info.first_byte = Some(started.elapsed());
                self.dispatch(stream, buf.freeze(), info, class).await
            }
            Ok(None) => {}
            Err(_) if !buf.is_empty() => {
                // The client spoke, but not yet enough to tell: it is client-first, so no
                // server bytes are waited for; the rest must come within the handshake time.
                info.first_byte = Some(started.elapsed());
                self.finish_classifying(stream, buf, info).await
            }
            Err(_) => self.after_silence(stream, buf, info).await,
        }
    }

    /// Hand a classified connection to its path.
    async fn dispatch(
        self: Arc<Self>,
        stream: TcpStream,
        prefix: Bytes,
        info: ConnInfo,
        class: Class,
    ) {
        match class {
            Class::Tls => self.handle_tls(stream, prefix, info).await,
            Class::Http1 | Class::H2Prior => {
                let io = egret_tls::peek::Rewind::new(prefix, stream);
                self.serve_http(io, Arc::new(info)).await
            }
            Class::Opaque | Class::NeedMore => {
                self.tunnel(stream, prefix, info, TunnelProto::Tcp).await
            }
        }
    }

    /// When the handshake time since accept runs out (at least `classify_timeout` from now).
    fn hold_deadline(&self, info: &ConnInfo) -> tokio::time::Instant {
        let by_handshake =
            tokio::time::Instant::from_std(info.started) + self.cfg.handshake_timeout;
        by_handshake.max(tokio::time::Instant::now() + self.cfg.classify_timeout)
    }

    /// The client sent a prefix that could still be TLS or HTTP: read until it is decided. If
    /// it never is, the connection is refused — a prefix left hanging must not turn into an
    /// opaque tunnel (that would skip interception by waiting).
    async fn finish_classifying(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut buf: BytesMut,
        mut info: ConnInfo,
    ) {
        let deadline = self.hold_deadline(&info);
        match tokio::time::timeout_at(deadline, read_class(&mut stream, &mut buf)).await {
            Ok(Some(class)) => {
                info.classified = Classified::ClientFirst;
                self.dispatch(stream, buf.freeze(), info, class).await
            }
            Ok(None) => {}
            Err(_) => {
                info.classified = Classified::Incomplete;
                let why = format!(
                    "the client's first {} bytes could still be TLS or HTTP but nothing more came within {:?}",
                    buf.len(),
                    self.cfg.handshake_timeout
                );
                self.abandon(
                    stream,
                    &info,
                    info.dns_name.as_deref(),
                    TunnelProto::Tcp,
                    &why,
                );
            }
        }
    }

    /// The client said nothing for `classify_timeout`. Its first bytes still decide whenever
    /// they come; meanwhile, where the policy lets the destination be opaque TCP, egret
    /// connects upstream so a server-speaks-first protocol (SSH, SMTP, a database greeting)
    /// can start. Once the server has spoken the connection is opaque for good. Destinations
    /// that can only be served as HTTP (denied ones, whose requests might still name an allowed
    /// host, and handler routes) are held until the handshake time runs out, then refused.
    async fn after_silence(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut buf: BytesMut,
        info: ConnInfo,
    ) {
        let policy = self.policy.load_full();
        let verdict = policy.evaluate(&conn_destination(info.dns_name.as_deref(), info.orig));
        let mut connecting = matches!(verdict.action, VerdictAction::Allow).then(|| {
            let (this, target) = (self.clone(), info.clone());
            Box::pin(async move { this.connect_opaque(&target).await })
        });
        let mut upstream: Option<TcpStream> = None;
        let mut failure: Option<String> = None;
        let hold = tokio::time::sleep_until(self.hold_deadline(&info));
        tokio::pin!(hold);
        loop {
            tokio::select! {
                r = stream.read_buf(&mut buf) => {
                    match r {
                        Ok(0) => return self.closed_silent(stream, upstream, &verdict, info).await,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    // The client spoke first, however late: its bytes decide; an upstream
                    // connection opened for a server greeting is not used.
                    drop(upstream.take());
                    drop(connecting.take());
                    return self.spoke_late(stream, buf, info).await;
                }
                r = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    connecting = None;
                    match r {
                        Ok(up) => upstream = Some(up),
                        Err(e) => failure = Some(e.to_string()),
                    }
                }
                r = async { upstream.as_ref().expect("guarded").readable().await }, if upstream.is_some() => {
                    let greeting = match r {
                        Ok(()) => read_greeting(upstream.as_ref().expect("guarded")),
                        Err(_) => Err(None),
                    };
                    match greeting {
                        Ok(Some(greeting)) => {
                            let up = upstream.take().expect("guarded");
                            return self.server_first(stream, up, greeting, info).await;
                        }
                        Ok(None) => {}
                        Err(why) => {
                            failure = why.or(failure);
                            upstream = None;
                        }
                    }
                }
                _ = &mut hold, if upstream.is_none() => {
                    return self.held_silent(stream, &verdict, &policy, failure, info);
                }
            }
        }
    }

    /// The silent client closed (or half-closed) without a byte: nothing to intercept. A
    /// server that connected is spliced to, for what it may still say.
    async fn closed_silent(
        self: Arc<Self>,
        stream: TcpStream,
        upstream: Option<TcpStream>,
        verdict: &Verdict,
        mut info: ConnInfo,
    ) {
        info.classified = Classified::Eof;
        let name = info.dns_name.as_deref();
        match (upstream, &verdict.action) {
            (Some(up), _) => {
                let (decision, rule) = crate::tunnel::carried(verdict);
                self.splice(
                    stream,
                    up,
                    Owed::default(),
                    info,
                    TunnelProto::Tcp,
                    (decision, &rule),
                )
                .await
            }
            (None, VerdictAction::Deny) => {
                self.refuse(stream, &info, name, TunnelProto::Tcp, &verdict.rule)
            }
            (None, _) => {
                let why = "the client closed before sending anything";
                let end = ConnEnd::unopened(Decision::Error, why);
                crate::audit::connection(&self, &info, name, TunnelProto::Tcp, end);
            }
        }
    }

    /// The client spoke after all: classified by its bytes like any client-first connection.
    async fn spoke_late(self: Arc<Self>, stream: TcpStream, buf: BytesMut, mut info: ConnInfo) {
        info.first_byte = Some(info.started.elapsed());
        match classify(&buf) {
            Class::NeedMore if buf.len() < CLASSIFY_MAX => {
                self.finish_classifying(stream, buf, info).await
            }
            class => {
                info.classified = Classified::ClientFirst;
                let class = if class == Class::NeedMore {
                    Class::Opaque
                } else {
                    class
                };
                self.dispatch(stream, buf.freeze(), info, class).await
            }
        }
    }

    /// The server spoke first: opaque for good, if the policy still allows it.
    async fn server_first(
        self: Arc<Self>,
        stream: TcpStream,
        up: TcpStream,
        greeting: Bytes,
        mut info: ConnInfo,
    ) {
        info.classified = Classified::ServerFirst;
        info.first_byte = Some(info.started.elapsed());
        let now = self.policy.load();
        let v = now.evaluate(&conn_destination(info.dns_name.as_deref(), info.orig));
        drop(now);
        if !matches!(v.action, VerdictAction::Allow) {
            let name = info.dns_name.as_deref();
            return self.refuse(stream, &info, name, TunnelProto::Tcp, &v.rule);
        }
        let (decision, rule) = crate::tunnel::carried(&v);
        let owed = Owed {
            to_down: greeting,
            ..Owed::default()
        };
        self.splice(stream, up, owed, info, TunnelProto::Tcp, (decision, &rule))
            .await
    }

    /// Nobody spoke within the handshake time: refused, naming why the destination could not
    /// be carried as silent opaque TCP.
    fn held_silent(
        &self,
        stream: TcpStream,
        verdict: &Verdict,
        policy: &CompiledPolicy,
        failure: Option<String>,
        mut info: ConnInfo,
    ) {
        info.classified = Classified::Silent;
        let name = info.dns_name.as_deref();
        let waited = self.cfg.handshake_timeout;
        let why = match verdict.action {
            VerdictAction::Deny => {
                return self.refuse(stream, &info, name, TunnelProto::Tcp, &verdict.rule)
            }
            VerdictAction::Handler(id) => format!(
                "{} routes to handler {}, which needs HTTP; the client sent nothing within {waited:?}",
                verdict.rule,
                policy.binding(id).handler
            ),
            VerdictAction::Rules(_) => format!(
                "{} decide HTTP requests, which need HTTP; the client sent nothing within {waited:?}",
                verdict.rule
            ),
            VerdictAction::Allow => {
                let why = match failure {
                    Some(f) => format!("the client sent nothing within {waited:?} and the upstream did not greet: {f}"),
                    None => format!("the client sent nothing within {waited:?} and the upstream did not answer in time"),
                };
                return self.abandon(stream, &info, name, TunnelProto::Tcp, &why);
            }
        };
        self.refuse(stream, &info, name, TunnelProto::Tcp, &why)
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
                let why = format!("bad ClientHello: {e}");
                self.abandon(
                    stream,
                    &info,
                    info.dns_name.as_deref(),
                    TunnelProto::Tls,
                    &why,
                );
                return;
            }
            Err(_) => {
                let name = info.dns_name.as_deref();
                self.abandon(
                    stream,
                    &info,
                    name,
                    TunnelProto::Tls,
                    "ClientHello timed out",
                );
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
                let undecided = policy.is_undecided(&v.rule);
                drop(policy);
                if undecided {
                    // A CONNECT already approved is not asked about twice.
                    if !info.asked.is_some_and(|a| a.allow) {
                        let host = name
                            .as_deref()
                            .map_or_else(|| info.orig.ip().to_string(), str::to_string);
                        info.asked = self.ask(&host, info.orig.port(), None).await;
                    }
                    if info.asked.is_some_and(|a| a.allow) {
                        // Intercepted, so that the requests are seen (and audited).
                        return self.intercept(stream, prefix, info, name).await;
                    }
                }
                self.refuse(stream, &info, name.as_deref(), TunnelProto::Tls, &v.rule);
            }
            TlsDecision::Passthrough(_) if hello.ech_offered => {
                // With Encrypted Client Hello the SNI is only a public front name: splicing
                // would let the hidden inner name decide where the bytes go.
                self.refuse(
                    stream,
                    &info,
                    name.as_deref(),
                    TunnelProto::Tls,
                    "ECH hides the destination; pass-through refused",
                );
            }
            TlsDecision::Passthrough(v) => {
                info.sni = name;
                let io = stream;
                self.passthrough(io, prefix, info, v.would_deny).await
            }
            TlsDecision::Intercept(_) => {
                drop(policy);
                self.intercept(stream, prefix, info, name).await
            }
        }
    }

    /// Terminate TLS with a leaf from the sandbox CA and serve the requests inside.
    async fn intercept(
        self: Arc<Self>,
        stream: TcpStream,
        prefix: Bytes,
        mut info: ConnInfo,
        name: Option<Arc<str>>,
    ) {
        let Some(tls) = &self.tls else {
            let why = "TLS interception is not configured";
            self.abandon(stream, &info, name.as_deref(), TunnelProto::Tls, why);
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
            match tokio::time::timeout(self.cfg.handshake_timeout, acceptor.accept(io)).await {
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

//! Serving: the UDP socket nft redirects every udp/53 to, and DNS over TCP (RFC 7766 framing,
//! several queries per connection, idle timeout, bounded concurrency).
//!
//! Nothing here outlives the future that runs it: [`serve_tcp`] keeps its connections in a
//! `JoinSet`, which aborts them when the future is dropped.
use crate::{answer, DnsConfig, NamePolicy, SyntheticMap};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// A snapshot of the resolver's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received (UDP datagrams and TCP frames).
    pub queries: u64,
    /// Responses sent back (any response code).
    pub answered: u64,
    /// Of those, NXDOMAIN responses (denied or unknown names).
    pub nxdomain: u64,
    /// Messages not answered: no header, a response, or the reply could not be sent.
    pub dropped: u64,
    /// DNS-over-TCP connections closed at once because `max_tcp_connections` were busy.
    pub tcp_rejected: u64,
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    answered: AtomicU64,
    nxdomain: AtomicU64,
    dropped: AtomicU64,
    tcp_rejected: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The policy behind an `ArcSwap` (which needs a sized type, hence the wrapper).
struct PolicySlot(Arc<dyn NamePolicy>);

/// The sandbox's resolver: the synthetic map, the (swappable) name policy, the settings and
/// counters. Share it as `Arc<Resolver>` between [`serve_udp`], [`serve_tcp`] and the proxy.
pub struct Resolver {
    map: Arc<SyntheticMap>,
    policy: ArcSwap<PolicySlot>,
    cfg: DnsConfig,
    tcp_slots: Arc<Semaphore>,
    counters: Counters,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("map", &self.map)
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver answering from `map` and asking `policy` about every name.
    /// A `max_tcp_connections` of 0 is treated as 1.
    pub fn new(map: Arc<SyntheticMap>, policy: Arc<dyn NamePolicy>, cfg: DnsConfig) -> Resolver {
        Resolver {
            map,
            policy: ArcSwap::from_pointee(PolicySlot(policy)),
            tcp_slots: Arc::new(Semaphore::new(cfg.max_tcp_connections.max(1))),
            cfg,
            counters: Counters::default(),
        }
    }

    /// The synthetic address map (for attributing connections: `resolver.map().lookup(ip)`).
    pub fn map(&self) -> &Arc<SyntheticMap> {
        &self.map
    }

    /// The settings.
    pub fn config(&self) -> &DnsConfig {
        &self.cfg
    }

    /// Replace the name policy; queries after this call use the new one. Names already in
    /// the map keep their addresses (the proxy checks the policy again on every connection).
    pub fn set_policy(&self, policy: Arc<dyn NamePolicy>) {
        self.policy.store(Arc::new(PolicySlot(policy)));
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            queries: get(&c.queries),
            answered: get(&c.answered),
            nxdomain: get(&c.nxdomain),
            dropped: get(&c.dropped),
            tcp_rejected: get(&c.tcp_rejected),
        }
    }

    /// Answer one query (see [`answer()`](crate::answer)), counting it. `None` means drop.
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        bump(&self.counters.queries);
        let policy = self.policy.load();
        let r = answer(query, &self.map, &*policy.0, &self.cfg);
        match &r {
            // The response code is the low nibble of byte 3 (NXDOMAIN = 3).
            Some(resp) if resp.get(3).is_some_and(|b| b & 0x0f == 3) => {
                bump(&self.counters.nxdomain)
            }
            Some(_) => {}
            None => bump(&self.counters.dropped),
        }
        r
    }

    /// Serve DNS over TCP on one stream (RFC 7766: each message preceded by its 2-byte
    /// length, several per connection, answered in order) until the client closes it, sends
    /// something that is not a query, or stalls for `tcp_idle_timeout`. For the proxy, which
    /// receives sandbox connections to port 53 on its transparent listener.
    ///
    /// Counts against `max_tcp_connections`: when all are busy the stream is closed at once.
    pub async fn handle_tcp_stream<S: AsyncRead + AsyncWrite>(&self, stream: S) {
        let Ok(permit) = self.tcp_slots.clone().try_acquire_owned() else {
            bump(&self.counters.tcp_rejected);
            tracing::warn!(
                limit = self.cfg.max_tcp_connections,
                "too many DNS-over-TCP connections: closing one"
            );
            return;
        };
        self.serve_stream(stream, permit).await;
    }

    async fn serve_stream<S: AsyncRead + AsyncWrite>(
        &self,
        stream: S,
        _permit: OwnedSemaphorePermit,
    ) {
        let mut stream = pin!(stream);
        let idle = self.cfg.tcp_idle_timeout;
        let max = self.cfg.max_query_len.clamp(512, usize::from(u16::MAX));
        let mut buf = Vec::new();
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return, // closed (or reset) between queries: the normal end
                Err(_) => {
                    tracing::debug!("DNS-over-TCP connection idle: closing");
                    return;
                }
            }
            let n = usize::from(u16::from_be_bytes(len));
            if n > max {
                tracing::debug!(len = n, max, "DNS-over-TCP query too large: closing");
                bump(&self.counters.dropped);
                return;
            }
            buf.resize(n, 0);
            if !matches!(
                tokio::time::timeout(idle, stream.read_exact(&mut buf)).await,
                Ok(Ok(_))
            ) {
                return;
            }
            // Garbage that is not even a query ends the connection: there is no way to
            // resynchronise a byte stream with a client that does not speak DNS.
            let Some(resp) = self.answer(&buf) else {
                return;
            };
            let Ok(rlen) = u16::try_from(resp.len()) else {
                return;
            };
            let mut out = Vec::with_capacity(resp.len() + 2);
            out.extend_from_slice(&rlen.to_be_bytes());
            out.extend_from_slice(&resp);
            // A client that pipelines queries but never reads would block us here forever.
            let write = async {
                stream.write_all(&out).await?;
                stream.flush().await
            };
            match tokio::time::timeout(idle, write).await {
                Ok(Ok(())) => bump(&self.counters.answered),
                _ => {
                    bump(&self.counters.dropped);
                    return;
                }
            }
        }
    }
}

/// Serve DNS on a UDP socket until the future is dropped.
///
/// Each datagram is answered inline: the answer is pure computation (microseconds, no I/O,
/// no waiting on anyone), so there is nothing a slow client could hold up and no per-query
/// task to leak; the only await is handing the reply to the kernel. Replies go out from the
/// same socket, which is what un-NATs them for clients whose query nft redirected here.
pub async fn serve_udp(socket: UdpSocket, resolver: Arc<Resolver>) {
    let mut buf = vec![0u8; resolver.cfg.max_query_len.clamp(512, usize::from(u16::MAX))];
    let mut errors = 0u32;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => {
                errors = 0;
                x
            }
            Err(e) => {
                // Typically ECONNREFUSED left over from an ICMP error for an earlier reply;
                // harmless. Back off if errors persist so a broken socket cannot spin a core.
                errors = errors.saturating_add(1);
                tracing::debug!(error = %e, "DNS recv failed");
                if errors >= 100 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        if let Some(resp) = resolver.answer(&buf[..n]) {
            send_reply(&socket, &resp, peer, &resolver).await;
        }
    }
}

async fn send_reply(socket: &UdpSocket, resp: &[u8], peer: SocketAddr, resolver: &Resolver) {
    match socket.send_to(resp, peer).await {
        Ok(_) => bump(&resolver.counters.answered),
        Err(e) => {
            bump(&resolver.counters.dropped);
            tracing::debug!(error = %e, %peer, "DNS reply not sent");
        }
    }
}

/// Serve DNS over TCP on a listener until the future is dropped (which also closes every
/// connection it accepted). At most `max_tcp_connections` are served at once (together with
/// [`Resolver::handle_tcp_stream`]); beyond that, new connections wait in the listen backlog
/// until a slot frees up, so a flood costs kernel backlog, not memory.
pub async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>) {
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set holds only live ones.
        while conns.try_join_next().is_some() {}
        let Ok(permit) = resolver.tcp_slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed; nothing sensible to do if it were
        };
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE and friends: wait instead of spinning, the condition may pass.
                tracing::warn!(error = %e, "DNS-over-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let r = resolver.clone();
        conns.spawn(async move { r.serve_stream(stream, permit).await });
    }
}

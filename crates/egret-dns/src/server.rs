//! Serving: UDP (the socket nft redirects every udp/53 to) and DNS over TCP (RFC 7766 framing,
//! several queries per connection, idle timeout, bounded concurrency).
use crate::{answer, DnsConfig, NamePolicy, SyntheticMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries received.
    pub queries: AtomicU64,
    /// Responses sent.
    pub answered: AtomicU64,
    /// Queries dropped (unparseable, or responses).
    pub dropped: AtomicU64,
}

/// The sandbox's resolver: map, policy and settings.
pub struct Resolver {
    map: Arc<SyntheticMap>,
    policy: Arc<dyn NamePolicy>,
    cfg: DnsConfig,
    tcp_slots: Arc<Semaphore>,
    stats: Stats,
}

impl Resolver {
    /// A resolver over `map`, asking `policy` for every name.
    pub fn new(map: Arc<SyntheticMap>, policy: Arc<dyn NamePolicy>, cfg: DnsConfig) -> Resolver {
        Resolver {
            map,
            policy,
            tcp_slots: Arc::new(Semaphore::new(cfg.max_tcp_connections.max(1))),
            cfg,
            stats: Stats::default(),
        }
    }

    /// The synthetic address map.
    pub fn map(&self) -> Arc<SyntheticMap> {
        self.map.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Answer one query.
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let r = answer(query, &self.map, &*self.policy, &self.cfg);
        match r {
            Some(_) => self.stats.answered.fetch_add(1, Ordering::Relaxed),
            None => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    /// Serve DNS over TCP on one stream until the client closes or goes idle.
    pub async fn handle_tcp_stream<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) {
        let Ok(_slot) = self.tcp_slots.clone().try_acquire_owned() else {
            tracing::warn!("too many DNS-over-TCP connections; closing one");
            return;
        };
        let mut buf = vec![0u8; 65535];
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(self.cfg.tcp_idle_timeout, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let n = usize::from(u16::from_be_bytes(len));
            if n < 12 {
                return;
            }
            match tokio::time::timeout(self.cfg.tcp_idle_timeout, stream.read_exact(&mut buf[..n])).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let Some(resp) = self.answer(&buf[..n]) else { return };
            let Ok(rlen) = u16::try_from(resp.len()) else { return };
            let mut out = Vec::with_capacity(resp.len() + 2);
            out.extend_from_slice(&rlen.to_be_bytes());
            out.extend_from_slice(&resp);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// Serve DNS on a UDP socket forever (until the future is dropped). Answers are computed
/// inline: they need no I/O, so a slow client cannot hold anything up.
pub async fn serve_udp(socket: UdpSocket, resolver: Arc<Resolver>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "dns recv failed");
                continue;
            }
        };
        if let Some(resp) = resolver.answer(&buf[..n]) {
            let _ = socket.send_to(&resp, peer).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NameDecision;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    struct All;
    impl NamePolicy for All {
        fn decide(&self, _: &str) -> NameDecision {
            NameDecision::Answer
        }
    }

    fn q(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn resolver() -> Arc<Resolver> {
        let cfg = DnsConfig::default();
        Arc::new(Resolver::new(Arc::new(SyntheticMap::new(cfg.clone())), Arc::new(All), cfg))
    }

    #[tokio::test]
    async fn udp_round_trip() {
        let r = resolver();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let task = tokio::spawn(serve_udp(server, r.clone()));
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(&q("a.test."), addr).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = c.recv_from(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.answers().len(), 1);
        assert_eq!(r.stats().answered.load(Ordering::Relaxed), 1);
        task.abort();
    }

    #[tokio::test]
    async fn tcp_two_queries_on_one_connection() {
        let r = resolver();
        let (mut client, server) = tokio::io::duplex(4096);
        let rr = r.clone();
        let task = tokio::spawn(async move { rr.handle_tcp_stream(server).await });
        for name in ["a.test.", "b.test."] {
            let query = q(name);
            client.write_all(&(query.len() as u16).to_be_bytes()).await.unwrap();
            client.write_all(&query).await.unwrap();
            let mut len = [0u8; 2];
            client.read_exact(&mut len).await.unwrap();
            let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
            client.read_exact(&mut resp).await.unwrap();
            assert_eq!(Message::from_vec(&resp).unwrap().answers().len(), 1);
        }
        drop(client);
        task.await.unwrap();
        assert_eq!(r.map().len(), 2);
    }
}

//! The servers over real sockets on 127.0.0.1: UDP, TCP framing with several queries per
//! connection, the connection limit, idle timeout, shutdown, and `dig` when it is installed.
use egret_dns::{
    serve_tcp, serve_udp, DnsConfig, NameDecision, NamePolicy, Resolver, SyntheticMap,
};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Allow everything except `*.denied.test`.
struct Policy(&'static str);
impl NamePolicy for Policy {
    fn decide(&self, name: &str) -> NameDecision {
        if name.ends_with(self.0) {
            NameDecision::NxDomain {
                rule: Arc::from(format!("deny {}", self.0)),
            }
        } else {
            NameDecision::Answer
        }
    }
}

fn resolver(cfg: DnsConfig) -> Arc<Resolver> {
    let map = Arc::new(SyntheticMap::new(cfg.clone()));
    Arc::new(Resolver::new(map, Arc::new(Policy("denied.test")), cfg))
}

fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.set_edns(Edns::new());
    m.to_vec().unwrap()
}

async fn udp_server(r: Arc<Resolver>) -> (SocketAddr, JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    (addr, tokio::spawn(serve_udp(s, r)))
}

async fn tcp_server(r: Arc<Resolver>) -> (SocketAddr, JoinHandle<()>) {
    tcp_server_on("127.0.0.1:0", r).await
}

async fn tcp_server_on(bind: &str, r: Arc<Resolver>) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    (addr, tokio::spawn(serve_tcp(l, r)))
}

async fn udp_ask(server: SocketAddr, q: &[u8]) -> Message {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(q, server).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, server);
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp_send(c: &mut TcpStream, q: &[u8]) {
    c.write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    c.write_all(q).await.unwrap();
}

async fn tcp_recv(c: &mut TcpStream) -> Message {
    let read = async {
        let mut len = [0u8; 2];
        c.read_exact(&mut len).await.unwrap();
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut resp).await.unwrap();
        Message::from_vec(&resp).unwrap()
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap()
}

/// Whether the server closed the connection (EOF or reset) within `within`.
async fn closed(c: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, c.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn a_of(m: &Message) -> Ipv4Addr {
    match m.answers().first().map(|r| r.data()) {
        Some(RData::A(a)) => a.0,
        other => panic!("no A answer: {other:?}"),
    }
}

#[tokio::test]
async fn udp_answers_a_aaaa_and_nxdomain() {
    let r = resolver(DnsConfig::default());
    let (addr, task) = udp_server(r.clone()).await;
    let m = udp_ask(addr, &query(1, "api.test.", RecordType::A)).await;
    assert_eq!(m.id(), 1);
    let a = a_of(&m);
    assert!(m.extensions().is_some());
    assert_eq!(r.map().lookup(IpAddr::V4(a)).as_deref(), Some("api.test"));
    let m = udp_ask(addr, &query(2, "API.test.", RecordType::AAAA)).await;
    assert!(matches!(m.answers()[0].data(), RData::AAAA(_)));
    let m = udp_ask(addr, &query(3, "x.denied.test.", RecordType::A)).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    // Garbage without a header is dropped; the server keeps serving.
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(b"junk", addr).await.unwrap();
    let m = udp_ask(addr, &query(4, "api.test.", RecordType::A)).await;
    assert_eq!(a_of(&m), a);
    let s = r.stats();
    assert_eq!((s.queries, s.answered, s.nxdomain, s.dropped), (5, 4, 1, 1));
    task.abort();
}

#[tokio::test]
async fn udp_serves_many_clients_concurrently() {
    let r = resolver(DnsConfig::default());
    let (addr, task) = udp_server(r.clone()).await;
    let clients: Vec<_> = (0..50u16)
        .map(|i| {
            tokio::spawn(async move {
                udp_ask(addr, &query(i, &format!("n{i}.test."), RecordType::A)).await
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let m = c.await.unwrap();
        assert_eq!(usize::from(m.id()), i);
        assert_eq!(
            r.map().lookup(a_of(&m).into()).as_deref(),
            Some(format!("n{i}.test").as_str())
        );
    }
    task.abort();
}

#[tokio::test]
async fn tcp_two_queries_on_one_connection() {
    let r = resolver(DnsConfig::default());
    let (addr, task) = tcp_server(r.clone()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut c, &query(10, "a.test.", RecordType::A)).await;
    let first = tcp_recv(&mut c).await;
    assert_eq!(first.id(), 10);
    tcp_send(&mut c, &query(11, "b.test.", RecordType::A)).await;
    let second = tcp_recv(&mut c).await;
    assert_eq!(second.id(), 11);
    assert_ne!(a_of(&first), a_of(&second));
    // Pipelined: both queries written before reading; answers come in order.
    let mut both = Vec::new();
    for (id, n) in [(12, "a.test."), (13, "c.denied.test.")] {
        let q = query(id, n, RecordType::A);
        both.extend_from_slice(&u16::try_from(q.len()).unwrap().to_be_bytes());
        both.extend_from_slice(&q);
    }
    c.write_all(&both).await.unwrap();
    let m = tcp_recv(&mut c).await;
    assert_eq!((m.id(), a_of(&m)), (12, a_of(&first)));
    let m = tcp_recv(&mut c).await;
    assert_eq!((m.id(), m.response_code()), (13, ResponseCode::NXDomain));
    drop(c);
    assert_eq!(r.map().len(), 2);
    task.abort();
}

#[tokio::test]
async fn tcp_closes_idle_oversized_and_non_dns_connections() {
    let cfg = DnsConfig {
        tcp_idle_timeout: Duration::from_millis(200),
        max_query_len: 600,
        ..DnsConfig::default()
    };
    let r = resolver(cfg);
    let (addr, task) = tcp_server(r.clone()).await;
    // Idle: nothing sent.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed(&mut idle, Duration::from_secs(5)).await,
        "idle connection kept open"
    );
    // Half a length prefix, then silence.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0]).await.unwrap();
    assert!(closed(&mut half, Duration::from_secs(5)).await);
    // A frame larger than max_query_len.
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(&[0x10, 0x00]).await.unwrap();
    assert!(closed(&mut big, Duration::from_secs(5)).await);
    // Not DNS at all (a frame shorter than a header).
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(b"\x00\x04GET ").await.unwrap();
    assert!(closed(&mut junk, Duration::from_secs(5)).await);
    // The server is still fine.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut ok, &query(1, "fine.test.", RecordType::A)).await;
    assert_eq!(tcp_recv(&mut ok).await.id(), 1);
    task.abort();
}

#[tokio::test]
async fn tcp_connections_are_bounded() {
    let cfg = DnsConfig {
        max_tcp_connections: 2,
        ..DnsConfig::default()
    };
    let r = resolver(cfg);
    let (addr, task) = tcp_server(r.clone()).await;
    let mut c1 = TcpStream::connect(addr).await.unwrap();
    let mut c2 = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut c1, &query(1, "a.test.", RecordType::A)).await;
    tcp_send(&mut c2, &query(2, "a.test.", RecordType::A)).await;
    assert_eq!(tcp_recv(&mut c1).await.id(), 1);
    assert_eq!(tcp_recv(&mut c2).await.id(), 2);
    // The third connection completes in the kernel but is not served while two are open.
    let mut c3 = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut c3, &query(3, "a.test.", RecordType::A)).await;
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c3.read(&mut b))
            .await
            .is_err(),
        "served beyond the limit"
    );
    // The proxy's entry point refuses outright when the slots are taken.
    let (mut client, server) = tokio::io::duplex(1024);
    r.handle_tcp_stream(server).await;
    assert_eq!(client.read(&mut b).await.unwrap(), 0);
    assert_eq!(r.stats().tcp_rejected, 1);
    // Once a slot frees, the waiting connection is served.
    drop(c1);
    assert_eq!(tcp_recv(&mut c3).await.id(), 3);
    task.abort();
}

#[tokio::test]
async fn handle_tcp_stream_serves_any_stream() {
    let r = resolver(DnsConfig::default());
    let (mut client, server) = tokio::io::duplex(4096);
    let rr = r.clone();
    let task = tokio::spawn(async move { rr.handle_tcp_stream(server).await });
    for (id, name) in [(1u16, "a.test."), (2, "b.test.")] {
        let q = query(id, name, RecordType::A);
        client
            .write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        client.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        client.read_exact(&mut len).await.unwrap();
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
        client.read_exact(&mut resp).await.unwrap();
        let m = Message::from_vec(&resp).unwrap();
        assert_eq!((m.id(), m.answers().len()), (id, 1));
    }
    drop(client);
    task.await.unwrap();
    assert_eq!(r.map().len(), 2);
    assert_eq!(r.stats().answered, 2);
}

#[tokio::test]
async fn dropping_serve_tcp_closes_its_connections() {
    let r = resolver(DnsConfig::default());
    // An address no other test binds: on 127.0.0.1 a parallel test can be handed the freed
    // port for a listener of its own. (The connect's source is 127.0.0.1, so it cannot be a
    // TCP self-connection either.)
    let (addr, task) = tcp_server_on("127.53.0.1:0", r.clone()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut c, &query(1, "a.test.", RecordType::A)).await;
    tcp_recv(&mut c).await;
    task.abort();
    let _ = task.await;
    assert!(
        closed(&mut c, Duration::from_secs(5)).await,
        "connection outlived serve_tcp"
    );
    // A test that spawns a process (the dig test) forks this process: the child holds a copy
    // of every descriptor, the listener's too, until its exec closes them. So a listener may
    // still accept for a moment after serve_tcp dropped it; one that outlived serve_tcp would
    // still be accepting when the deadline passes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let reached_a_listener = loop {
        if TcpStream::connect(addr).await.is_err() {
            break false;
        }
        if tokio::time::Instant::now() > deadline {
            break true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!reached_a_listener, "listener outlived serve_tcp");
}

#[tokio::test]
async fn policy_swap_applies_to_later_queries() {
    let r = resolver(DnsConfig::default());
    let (addr, task) = udp_server(r.clone()).await;
    let m = udp_ask(addr, &query(1, "x.other.test.", RecordType::A)).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    r.set_policy(Arc::new(Policy("other.test")));
    let m = udp_ask(addr, &query(2, "x.other.test.", RecordType::A)).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    task.abort();
}

/// Runs `dig` against both servers when it is installed; otherwise prints why it did nothing
/// (the name says so: this is not a pass for dig compatibility on machines without dig).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_udp_and_tcp_if_dig_installed() {
    let has_dig = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_dig {
        eprintln!("SKIPPED: `dig` is not installed; dig compatibility was not tested");
        return;
    }
    let r = resolver(DnsConfig::default());
    let (udp, t1) = udp_server(r.clone()).await;
    let tcp_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tcp_l.local_addr().unwrap();
    let t2 = tokio::spawn(serve_tcp(tcp_l, r.clone()));
    let dig = |port: u16, args: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("dig")
                .args(["@127.0.0.1", "-p", &port.to_string(), "+time=3", "+tries=1"])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let short = dig(udp.port(), vec!["+short", "Dig.Example.test", "A"])
        .await
        .unwrap();
    let a: Ipv4Addr = short
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("dig said {short:?}"));
    assert_eq!(
        r.map().lookup(a.into()).as_deref(),
        Some("dig.example.test")
    );
    let short = dig(tcp.port(), vec!["+tcp", "+short", "dig.example.test", "A"])
        .await
        .unwrap();
    assert_eq!(
        short.trim().parse::<Ipv4Addr>().ok(),
        Some(a),
        "dig +tcp said {short:?}"
    );
    let short = dig(udp.port(), vec!["+short", "dig.example.test", "AAAA"])
        .await
        .unwrap();
    assert!(short.trim().starts_with("fd65:6772:6574::"), "{short:?}");
    let full = dig(udp.port(), vec!["x.denied.test", "A"]).await.unwrap();
    assert!(full.contains("status: NXDOMAIN"), "{full}");
    let full = dig(tcp.port(), vec!["+tcp", "dig.example.test", "TXT"])
        .await
        .unwrap();
    assert!(
        full.contains("status: NOERROR") && full.contains("ANSWER: 0"),
        "{full}"
    );
    let rev = dig(udp.port(), vec!["+short", "-x", "198.18.0.1"])
        .await
        .unwrap();
    assert_eq!(rev.trim(), "dig.example.test.");
    t1.abort();
    t2.abort();
}

/// The proxy boxes these futures as `BoxFuture<'static, ()>` and spawns them: they must be
/// `Send` (a compile-time check; the body never runs).
#[allow(dead_code, unreachable_code, clippy::diverging_sub_expression)]
fn futures_are_send_and_static(r: Arc<Resolver>, udp: UdpSocket, tcp: TcpListener, s: TcpStream) {
    fn send_static<T: Send + 'static>(_: T) {}
    send_static(serve_udp(udp, r.clone()));
    send_static(serve_tcp(tcp, r.clone()));
    send_static(async move { r.handle_tcp_stream(s).await });
}

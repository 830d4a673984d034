//! The TLS hot paths of an intercepted connection: peeking the ClientHello (SNI + ALPN) and
//! getting the leaf's `ServerConfig` from the cache, on a hit (every connection after the
//! first to a name) and on a miss (mint: key pair + one ECDSA signature + two configs).
//! `cargo bench -p egret-tls`.
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use egret_tls::peek::parse_client_hello;
use egret_tls::{LeafCache, LeafName, SandboxCa};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::ServerName;

fn main() {
    divan::main();
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The bytes a real rustls client sends first, offering h2 and http/1.1.
fn client_hello(name: &str) -> Vec<u8> {
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

#[divan::bench]
fn peek_client_hello(bencher: divan::Bencher) {
    let wire = client_hello("api.github.test");
    bencher.bench(|| parse_client_hello(black_box(&wire)).unwrap());
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[divan::bench]
fn leaf_cache_hit(bencher: divan::Bencher) {
    let rt = rt();
    let cache = LeafCache::new(Arc::new(SandboxCa::generate("bench", DAY).unwrap()));
    let name = LeafName::dns("api.github.test").unwrap();
    rt.block_on(cache.get_or_mint(&name)).unwrap();
    bencher.bench_local(|| rt.block_on(cache.get_or_mint(black_box(&name))).unwrap());
}

/// A miss per iteration: every name is new, so each call mints (the LRU evicts beyond its
/// capacity, as in a long-running egret).
#[divan::bench(sample_count = 50)]
fn leaf_cache_miss(bencher: divan::Bencher) {
    let rt = rt();
    let cache = LeafCache::new(Arc::new(SandboxCa::generate("bench", DAY).unwrap()));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    bencher
        .with_inputs(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            LeafName::dns(&format!("h{n}.bench.test")).unwrap()
        })
        .bench_local_refs(|name| rt.block_on(cache.get_or_mint(name)).unwrap());
}

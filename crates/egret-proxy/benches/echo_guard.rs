//! The echo guard's per-request cost on a response to a request egret filled one secret into:
//! building the patterns for the filled values, masking the headers, and masking a 1 KiB
//! body in one chunk. `cargo bench -p egret-proxy --bench echo_guard`.
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use egret_proxy::echo_guard::{mask_headers, Masker, Patterns};

const SECRET: &str = "bench-token-value-0123456789";

fn main() {
    divan::main();
}

/// Patterns for one filled secret (its raw, base64 and percent-encoded forms).
#[divan::bench]
fn patterns_one_secret() -> Patterns {
    Patterns::new(black_box(&[SECRET]))
}

/// Masking a typical response head (nothing to mask).
#[divan::bench]
fn mask_response_headers(bencher: divan::Bencher) {
    let p = Patterns::new(&[SECRET]);
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("date", "Wed, 02 Dec 2026 12:00:00 GMT"),
        ("server", "bench"),
    ] {
        headers.insert(k, http::HeaderValue::from_static(v));
    }
    bencher.bench_local(|| mask_headers(&p, black_box(&mut headers)));
}

/// A 1 KiB body without the secret, in one chunk, through a fresh masker.
#[divan::bench]
fn mask_1k_body(bencher: divan::Bencher) {
    let p = Arc::new(Patterns::new(&[SECRET]));
    let body = Bytes::from(vec![b'a'; 1024]);
    bencher.bench_local(|| {
        let mut m = Masker::new(p.clone());
        let out = m.push(black_box(body.clone()));
        (out, m.finish())
    });
}

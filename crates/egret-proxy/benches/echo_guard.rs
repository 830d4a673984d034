//! The echo guard's per-request cost on a response to a request egret filled one secret into:
//! building the patterns for the filled values, masking the headers, and masking a 1 KiB
//! body in one chunk; and the scanning throughput on 64 KiB chunks of JSON lines (a streamed
//! answer). `cargo bench -p egret-proxy --bench echo_guard`.
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

/// Throughput on a stream: 64 KiB chunks of JSON lines without the secret, one masker.
#[divan::bench]
fn mask_64k_json_chunks(bencher: divan::Bencher) {
    const CHUNK: usize = 64 * 1024;
    let p = Arc::new(Patterns::new(&[SECRET]));
    let mut text = Vec::with_capacity(CHUNK);
    let mut i = 0u64;
    while text.len() < CHUNK {
        let line = format!(
            "{{\"seq\": {i}, \"role\": \"assistant\", \"delta\": \"Sure, see {}\"}}\n",
            i * 7919
        );
        text.extend_from_slice(line.as_bytes());
        i += 1;
    }
    text.truncate(CHUNK);
    let chunk = Bytes::from(text);
    let mut m = Masker::new(p);
    bencher
        .counter(divan::counter::BytesCount::new(CHUNK))
        .bench_local(|| m.push(black_box(chunk.clone())));
}

//! Live memory per in-flight handler: 100 instances of a guest that loops until its deadline
//! run at once; the resident set grows by what those live instances hold. Prints the figure
//! (for the issue notes and docs/benchmarks.md) and checks it stays far below the 16 MiB cap.

mod common;

use std::time::Duration;

use common::*;
use egret_wasm::{KvStore, Limits, SecretStore};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn live_memory_per_in_flight_handler() {
    const N: usize = 100;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let h = load("loop-forever").await;
        // warm up: one instance slot used and released
        let secrets = SecretStore::new();
        let kv = KvStore::new();
        let mut warm = Call::new("loop-forever", &secrets, &kv);
        warm.limits = Limits { timeout: Duration::from_millis(20), memory_bytes: 16 << 20 };
        let _ = warm.invoke(&h).await;
        let before = rss_kib();
        let mut tasks = Vec::new();
        for _ in 0..N {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let secrets = SecretStore::new();
                let kv = KvStore::new();
                let mut call = Call::new("loop-forever", &secrets, &kv);
                call.limits = Limits { timeout: Duration::from_millis(1500), memory_bytes: 16 << 20 };
                call.invoke(&h).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let during = rss_kib();
        for t in tasks {
            assert!(t.await.unwrap().is_err(), "loop-forever must time out");
        }
        let per = (during.saturating_sub(before)) as f64 / N as f64;
        println!("live memory per in-flight handler: {per:.1} KiB ({N} in flight: RSS {before} -> {during} KiB)");
        assert!(per < 2048.0, "{per} KiB per in-flight instance");
    });
}

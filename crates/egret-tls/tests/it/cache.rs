//! Leaf cache: single-flight minting, bounds, counters, and mint cost.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret_tls::{LeafCache, LeafName, LeafStats, SandboxCa, DEFAULT_LEAF_CACHE_CAPACITY};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca() -> Arc<SandboxCa> {
    Arc::new(SandboxCa::generate("cache", DAY).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_first_requests_mint_once() {
    let cache = Arc::new(LeafCache::new(ca()));
    let name = LeafName::dns("burst.test").unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, name, barrier) = (cache.clone(), name.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache.get_or_mint(&name).await.unwrap()
            })
        })
        .collect();
    let mut configs = Vec::new();
    for task in tasks {
        configs.push(task.await.unwrap());
    }
    assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
    assert_eq!(
        cache.stats(),
        LeafStats {
            mints: 1,
            hits: 99,
            evictions: 0,
            mint_failures: 0,
            entries: 1
        }
    );
}

#[tokio::test]
async fn names_are_normalised_before_lookup() {
    let cache = LeafCache::new(ca());
    let a = cache
        .get_or_mint(&LeafName::Dns("A.Test.".into()))
        .await
        .unwrap();
    let b = cache
        .get_or_mint(&LeafName::dns("a.test").unwrap())
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(cache.stats().mints, 1);
    assert_eq!(cache.stats().hits, 1);
    assert!(cache
        .get_or_mint(&LeafName::Dns("*.test".into()))
        .await
        .is_err());
    assert_eq!(cache.stats().mints, 1);
}

#[tokio::test]
async fn capacity_bound_holds() {
    let cache = LeafCache::new(ca());
    assert_eq!(cache.capacity(), DEFAULT_LEAF_CACHE_CAPACITY);
    for i in 0..5000 {
        let name = LeafName::dns(&format!("host-{i}.test")).unwrap();
        cache.get_or_mint(&name).await.unwrap();
        assert!(cache.stats().entries <= DEFAULT_LEAF_CACHE_CAPACITY as u64);
    }
    let stats = cache.stats();
    assert_eq!(stats.mints, 5000);
    assert_eq!(stats.entries, 1024);
    assert_eq!(stats.evictions, 5000 - 1024);

    // The most recent names are still cached; the first ones were evicted.
    cache
        .get_or_mint(&LeafName::dns("host-4999.test").unwrap())
        .await
        .unwrap();
    assert_eq!(cache.stats().mints, 5000);
    cache
        .get_or_mint(&LeafName::dns("host-0.test").unwrap())
        .await
        .unwrap();
    assert_eq!(cache.stats().mints, 5001);
}

#[tokio::test]
async fn small_cache_is_lru() {
    let cache = LeafCache::with_capacity(ca(), NonZeroUsize::new(2).unwrap());
    let n = |s: &str| LeafName::dns(s).unwrap();
    cache.get_or_mint(&n("a.test")).await.unwrap();
    cache.get_or_mint(&n("b.test")).await.unwrap();
    cache.get_or_mint(&n("a.test")).await.unwrap(); // a is now most recent
    cache.get_or_mint(&n("c.test")).await.unwrap(); // evicts b
    cache.get_or_mint(&n("a.test")).await.unwrap();
    assert_eq!(cache.stats().mints, 3);
    cache.get_or_mint(&n("b.test")).await.unwrap();
    assert_eq!(cache.stats().mints, 4);
    assert_eq!(cache.stats().evictions, 2);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Not a benchmark, a sanity ratio plus a printed figure (`--nocapture`) for the design notes.
#[tokio::test]
async fn mint_cost() {
    let ca = ca();
    let issue: Vec<Duration> = (0..100)
        .map(|i| {
            let name = LeafName::dns(&format!("m{i}.test")).unwrap();
            let start = Instant::now();
            ca.issue_leaf(&name).unwrap();
            start.elapsed()
        })
        .collect();

    let cache = LeafCache::new(ca);
    let mut miss = Vec::new();
    let mut hit = Vec::new();
    for i in 0..100 {
        let name = LeafName::dns(&format!("c{i}.test")).unwrap();
        let start = Instant::now();
        cache.get_or_mint(&name).await.unwrap();
        miss.push(start.elapsed());
        let start = Instant::now();
        cache.get_or_mint(&name).await.unwrap();
        hit.push(start.elapsed());
    }
    let (issue, miss, hit) = (median(issue), median(miss), median(hit));
    println!("median of 100: issue_leaf {issue:?}, get_or_mint miss {miss:?}, hit {hit:?}");
    // A ratio within one run, not a wall-clock bound: a hit is a map lookup,
    // a mint is a key generation and a signature (three orders of magnitude
    // apart here), so a factor of 10 survives any load the machine is under.
    assert!(hit * 10 < issue, "hit {hit:?} vs issue {issue:?}");
    assert!(hit * 10 < miss, "hit {hit:?} vs miss {miss:?}");
}

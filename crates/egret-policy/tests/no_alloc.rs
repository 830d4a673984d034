//! Proves the per-request claim: `evaluate`, `tls_decision`, `dns_decision` on normalized names
//! and `HostSet::find` allocate nothing. A counting global allocator needs `unsafe impl`; it only
//! forwards to the system allocator, and lives in this test binary, not in the library.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use egret_policy::{CompiledPolicy, Destination, PolicyConfig, RuntimeLayer};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn evaluation_does_not_allocate() {
    let mut src = String::from(
        r#"
allowed_hosts = ["*.github.test", "10.0.0.0/8", "fd00::/16", "api-*.svc.test", "*:8443"]
denied_hosts = ["evil.github.test", "10.66.0.0/16:22"]
passthrough_hosts = ["pinned.github.test"]
[handlers.h]
module = "h.wasm"
[[routes]]
hosts = ["vcs.github.test", "*.vcs.github.test"]
handler = "h"
[[routes]]
host = "git.github.test"
methods = ["GET", "POST"]
paths = ["/**/info/refs", "/**/git-upload-pack"]
"#,
    );
    src.push_str("[[routes]]\nhandler = \"h\"\nhosts = [");
    for i in 0..10_000 {
        src.push_str(&format!("\"svc{i}.github.test\","));
    }
    src.push_str("]\n");
    let cfg = PolicyConfig::from_toml(&src, "p.toml").unwrap();
    let policy = CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1).unwrap();
    let dests = [
        Destination::host("vcs.github.test", 443),
        Destination::host("a.b.vcs.github.test", 443),
        Destination::host("svc9999.github.test", 443),
        Destination::host("evil.github.test", 443),
        Destination::host("pinned.github.test", 443),
        Destination::host("api-7.svc.test", 443),
        Destination::host("nope.test", 443),
        Destination::host("nope.test", 8443),
        Destination::host("10.66.1.1", 22),
        Destination::ip("::ffff:10.1.1.1".parse().unwrap(), 80),
        Destination::ip("fd00::5".parse().unwrap(), 80),
    ];
    let names = ["vcs.github.test", "nope.test", "evil.github.test"];
    // Warm up anything lazily initialised (none expected, but it must not count).
    for d in &dests {
        black_box(policy.tls_decision(d));
    }

    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..100 {
        for d in &dests {
            black_box(policy.evaluate(black_box(d)));
            black_box(policy.tls_decision(black_box(d)));
        }
        for n in names {
            black_box(policy.dns_decision(black_box(n)));
        }
        let git = Destination::host("git.github.test", 443);
        for (m, p) in [
            ("GET", "/r.git/info/refs"),
            ("POST", "/r.git/git-receive-pack"),
        ] {
            black_box(policy.evaluate_request(black_box(&git), m, p, Some("service=x")));
        }
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "allocations during evaluation");

    // And the counter works: a decision on a non-normalized name allocates its lowercase copy.
    let before = ALLOCS.load(Ordering::SeqCst);
    black_box(policy.dns_decision(black_box("NOPE.test")));
    assert!(ALLOCS.load(Ordering::SeqCst) > before);
}

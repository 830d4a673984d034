//! Loading: precise errors for things that are not handlers, compile-once
//! caching in memory and on disk, `check`, and a rough timing print.

mod common;

use std::time::{Duration, Instant};

use common::*;
use egret_wasm::{HandlerHost, HostConfig, KvStore, ResolvedAction, SecretStore, WasmError};

fn small_host(cache_dir: Option<std::path::PathBuf>) -> HandlerHost {
    HandlerHost::new(HostConfig {
        max_instances: 8,
        cache_dir,
        ..HostConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn not_wasm_core_module_and_missing_export() {
    let host = host();
    let err = host
        .load("junk", b"this is not wasm at all")
        .await
        .unwrap_err();
    assert!(matches!(err, WasmError::NotWasm { .. }));
    assert!(
        err.to_string()
            .starts_with("handler `junk`: not a WebAssembly component: "),
        "{err}"
    );

    let err = host.load("core", b"\0asm\x01\0\0\0").await.unwrap_err();
    assert!(matches!(err, WasmError::CoreModule { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("core wasm module") && msg.contains("--target wasm32-wasip2"),
        "{msg}"
    );

    let empty_component = b"\0asm\x0d\0\x01\0";
    let err = host.load("empty", empty_component).await.unwrap_err();
    assert!(matches!(err, WasmError::MissingExport { .. }), "{err:?}");
    assert!(err.to_string().contains("missing export `handle`"), "{err}");

    let truncated = &wasm("no-http")[..100];
    let err = host.load("cut", truncated).await.unwrap_err();
    assert!(matches!(err, WasmError::Compile { .. }), "{err:?}");
}

const WRONG_SIGNATURE: &str = r#"
(component
  (core module $m (func (export "f") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $f (result u32) (canon lift (core func $i "f")))
  (export "handle" (func $f))
)"#;

const UNKNOWN_IMPORT: &str = r#"
(component
  (import "egret:evil/exfil@1.0.0" (instance (export "send" (func))))
  (core module $m (func (export "f") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $f (result u32) (canon lift (core func $i "f")))
  (export "handle" (func $f))
)"#;

#[tokio::test]
async fn wrong_signature_and_unknown_import() {
    let host = host();
    let err = host
        .load("wrong-sig", &wat::parse_str(WRONG_SIGNATURE).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, WasmError::WrongExport { .. }), "{err:?}");
    assert!(err.to_string().contains("wrong signature"), "{err}");

    let err = host
        .load("evil", &wat::parse_str(UNKNOWN_IMPORT).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WasmError::UnknownImport { import, .. } if import == "egret:evil/exfil@1.0.0"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`egret:evil/exfil@1.0.0`"),
        "{err}"
    );
}

#[tokio::test]
async fn same_bytes_compile_once() {
    let host = small_host(None);
    let bytes = wasm("get-only");
    let a = host.load("a", &bytes).await.unwrap();
    let b = host.load("b", &bytes).await.unwrap();
    assert_eq!(a.sha256_hex, b.sha256_hex);
    assert_eq!(b.name, "b");
    let stats = host.stats();
    assert_eq!(stats.compiled, 1, "{stats:?}");
    assert_eq!(stats.memory_cache_hits, 1, "{stats:?}");

    // Concurrent loads of new bytes also compile once.
    let other = wasm("no-http");
    let (x, y) = tokio::join!(host.load("x", &other), host.load("y", &other));
    x.unwrap();
    y.unwrap();
    assert_eq!(host.stats().compiled, 2);
}

#[tokio::test]
async fn disk_cache_round_trip() {
    let dir = std::env::temp_dir().join(format!("egret-wasm-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bytes = wasm("no-http");
    {
        let host = small_host(Some(dir.clone()));
        host.load("n", &bytes).await.unwrap();
        assert_eq!(host.stats().compiled, 1);
    }
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // Only the owner may read the artifact: loading it runs its native code.
    use std::os::unix::fs::PermissionsExt;
    let artifact = files[0].as_ref().unwrap().metadata().unwrap();
    assert_eq!(artifact.permissions().mode() & 0o777, 0o600);
    let host = small_host(Some(dir.clone()));
    let h = host.load("n", &bytes).await.unwrap();
    let stats = host.stats();
    assert_eq!(
        (stats.compiled, stats.loaded_from_disk),
        (0, 1),
        "{stats:?}"
    );
    // The deserialized handler works.
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let inv = egret_wasm::Invocation {
        handler_name: "n",
        sandbox_id: "s",
        params_json: "{}",
        request: &request("GET", "a.test", "/"),
        grants: &Grants::default(),
        secrets: &secrets,
        kv: &kv,
        limits: egret_wasm::Limits {
            timeout: Duration::from_secs(2),
            memory_bytes: 16 << 20,
        },
    };
    assert!(matches!(
        host.handle(&h, inv).await.unwrap(),
        ResolvedAction::Respond { .. }
    ));

    // A group-writable directory is refused.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = HandlerHost::new(HostConfig {
        max_instances: 8,
        cache_dir: Some(dir.clone()),
        ..HostConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, WasmError::CacheDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_reports_imports_and_exports() {
    let info = host().check(&wasm("inject-header")).unwrap();
    assert_eq!(
        info.exports,
        [
            "handle",
            "on-response",
            "on-response-chunk",
            "on-response-end",
            "on-response-event"
        ]
    );
    assert!(
        info.imports
            .iter()
            .any(|i| i.starts_with("egret:handler/host@0.3.0")),
        "{:?}",
        info.imports
    );
    assert_eq!(info.wit_version, egret_wasm::WitVersion::V0_3);
    let v2 = host().check(&wasm("v2-observe")).unwrap();
    assert_eq!(v2.wit_version, egret_wasm::WitVersion::V0_2);
    let v1 = host().check(&wasm("v1-inject-header")).unwrap();
    assert_eq!(v1.exports, vec!["handle".to_string()]);
    assert_eq!(v1.wit_version, egret_wasm::WitVersion::V0_1);
    assert_eq!(info.sha256_hex.len(), 64);
    println!("inject-header imports: {:?}", info.imports);
    assert!(matches!(
        host().check(b"\0asm\x01\0\0\0"),
        Err(WasmError::CoreModule { .. })
    ));
}

/// Rough per-request cost (instantiate + call + resolve) of inject-header.
/// Printed, not asserted: the machine is shared.
#[test]
fn timing_print() {
    const N: usize = 2000;
    let bytes = wasm("inject-header");
    let run = |label: &str, rt: tokio::runtime::Runtime| {
        rt.block_on(async {
            let h = host().load("inject-header", &bytes).await.unwrap();
            let secrets = SecretStore::new();
            secrets.set("gh", "timing-secret");
            let kv = KvStore::new();
            let mut call = Call::new("inject-header", &secrets, &kv);
            call.params = r#"{"header":"authorization","secret":"gh","template":"Bearer {}"}"#;
            call.grants = Grants::use_only(["gh"]);
            for _ in 0..50 {
                call.handle(&h).await.unwrap(); // warm up
            }
            let mut samples = Vec::with_capacity(N);
            for _ in 0..N {
                let t = Instant::now();
                call.handle(&h).await.unwrap();
                samples.push(t.elapsed());
            }
            samples.sort();
            println!(
                "timing {label}: {N} sequential calls, median {:?}, p99 {:?}, max {:?}",
                samples[N / 2],
                samples[N * 99 / 100],
                samples[N - 1]
            );
        });
    };
    run(
        "current_thread",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(host().load("inject-header", &bytes)).unwrap();
    run("multi_thread(2)", rt);

    // Throughput with two concurrent callers on two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move {
                    let secrets = SecretStore::new();
                    secrets.set("gh", "timing-secret");
                    let kv = KvStore::new();
                    let mut call = Call::new("inject-header", &secrets, &kv);
                    call.params = r#"{"header":"authorization","secret":"gh"}"#;
                    call.grants = Grants::use_only(["gh"]);
                    for _ in 0..N / 2 {
                        call.handle(&h).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        println!(
            "timing multi_thread(2), 2 concurrent callers: {N} calls in {elapsed:?} = {:.0} calls/s",
            N as f64 / elapsed.as_secs_f64()
        );
    });
}

/// Each request runs on an instance nobody ran before: `count-calls` counts calls in a guest
/// global, so any reuse of an instance (or of its memory without a reset) shows as a count
/// above 1 — in sequence and in a concurrent burst that cycles the pool's slots.
#[tokio::test]
async fn every_request_runs_on_a_fresh_instance() {
    let h = load("count-calls").await;
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let call = Call::new("count-calls", &secrets, &kv);
    for i in 0..20 {
        let action = call.handle(&h).await.unwrap();
        assert_eq!(
            set_value(&action, "x-instance-calls").as_deref(),
            Some(&b"1"[..]),
            "call {i} ran on a used instance"
        );
    }
    let burst = (0..32).map(|_| call.handle(&h));
    for action in futures_util::future::join_all(burst).await {
        let action = action.unwrap();
        assert_eq!(
            set_value(&action, "x-instance-calls").as_deref(),
            Some(&b"1"[..])
        );
    }
}

fn calls(action: &ResolvedAction) -> u32 {
    let v = set_value(action, "x-instance-calls").expect("count-calls sets x-instance-calls");
    String::from_utf8(v).unwrap().parse().unwrap()
}

/// `instances = "reuse"`: one instance serves the requests of its sandbox one after another
/// (the guest's global counts up), a fresh-instance binding of the same handler never sees
/// it, another sandbox gets its own, and retiring the generation drops it.
#[tokio::test]
async fn a_reusing_binding_serves_requests_on_one_instance() {
    let h = load("count-calls").await;
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let call = Call::new("count-calls", &secrets, &kv);
    for i in 1..=5 {
        assert_eq!(calls(&call.handle_reusing(&h).await.unwrap()), i);
    }
    assert_eq!(h.idle_instances(), 1);
    // The default binding still gets a fresh instance.
    assert_eq!(calls(&call.handle(&h).await.unwrap()), 1);
    let other = Call {
        sandbox: "sb-2",
        ..Call::new("count-calls", &secrets, &kv)
    };
    assert_eq!(calls(&other.handle_reusing(&h).await.unwrap()), 1);
    assert_eq!(calls(&call.handle_reusing(&h).await.unwrap()), 6);
    h.retire_instances();
    assert_eq!(h.idle_instances(), 0);
    assert_eq!(calls(&call.handle_reusing(&h).await.unwrap()), 1);
    assert_eq!(h.idle_instances(), 0, "a retired pool keeps nothing");
}

/// A reused instance is recycled after REUSE_MAX_REQUESTS requests.
#[tokio::test]
async fn a_reused_instance_is_recycled_after_its_request_bound() {
    let h = load("count-calls").await;
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let call = Call::new("count-calls", &secrets, &kv);
    let max = egret_wasm::REUSE_MAX_REQUESTS;
    for i in 1..=max {
        assert_eq!(calls(&call.handle_reusing(&h).await.unwrap()), i);
    }
    assert_eq!(calls(&call.handle_reusing(&h).await.unwrap()), 1);
}

/// An instance that trapped, ran out of memory or out of time is never reused: the next
/// request of the binding starts on a fresh one.
#[tokio::test]
async fn a_failed_instance_is_not_reused() {
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    for (name, kind) in [
        ("trap", "trap"),
        ("alloc-1gib", "oom"),
        ("loop-forever", "timeout"),
    ] {
        let h = load(name).await;
        let call = Call {
            limits: egret_wasm::Limits {
                timeout: Duration::from_millis(50),
                memory_bytes: 16 << 20,
            },
            ..Call::new(name, &secrets, &kv)
        };
        let err = call.handle_reusing(&h).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert_eq!(h.idle_instances(), 0, "{name}: a failed instance went back");
    }
    // A request cancelled while its guest runs leaves nothing behind either.
    let h = load("loop-forever").await;
    let call = Call::new("loop-forever", &secrets, &kv);
    let cancelled = tokio::time::timeout(Duration::from_millis(20), call.handle_reusing(&h)).await;
    assert!(cancelled.is_err(), "loop-forever returned");
    assert_eq!(h.idle_instances(), 0);
}

/// Idle instances of all handlers together hold at most a quarter of the pool's slots: with
/// 8 slots, two reusing handlers keep 2 idle between them, and fresh instantiations of a third
/// handler still find slots.
#[tokio::test]
async fn idle_instances_never_hold_more_than_a_quarter_of_the_pool() {
    let host = small_host(None);
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let a = host
        .load("count-calls", &wasm("count-calls"))
        .await
        .unwrap();
    let b = host
        .load("count-calls", &wasm("count-calls"))
        .await
        .unwrap();
    let fresh = host
        .load("inject-header", &wasm("inject-header"))
        .await
        .unwrap();
    let call = Call::new("count-calls", &secrets, &kv);
    // Four sessions at once on each handler, then all back.
    for h in [&a, &b] {
        let mut sessions = Vec::new();
        for _ in 0..4 {
            sessions.push(host.session(h, call.spec_reusing()).await.unwrap());
        }
        for s in &mut sessions {
            s.handle(call.request.clone(), None).await.unwrap();
        }
    }
    assert_eq!(a.idle_instances() + b.idle_instances(), 2);
    let inject = Call::new("inject-header", &secrets, &kv);
    for _ in 0..6 {
        host.handle(&fresh, inject.invocation()).await.unwrap();
    }
    drop(a);
    // Dropping a handler gives its share back: b may now keep more.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(host.session(&b, call.spec_reusing()).await.unwrap());
    }
    drop(sessions);
    assert_eq!(b.idle_instances(), 2);
}

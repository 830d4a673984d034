//! Hostile handlers: loops, memory bombs, traps, invalid actions and stack
//! overflows must each fail closed with the right error kind, and must not
//! stall well-behaved handlers running at the same time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use egret_wasm::{HandlerError, KvStore, Limits, ResolvedAction, SecretStore};

#[tokio::test]
async fn loop_forever_times_out_at_the_deadline() {
    let h = load("loop-forever").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let mut call = Call::new("loop-forever", &secrets, &kv);
    call.limits = Limits::default(); // 50 ms
    let start = Instant::now();
    let err = call.invoke(&h).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), "timeout");
    assert_eq!(
        err.to_string(),
        "handler `loop-forever` timed out after 50 ms"
    );
    // Not before the deadline; the upper bound only catches a deadline that is
    // not enforced at all (a loaded 2-core CI machine can lag by a lot).
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test]
async fn alloc_bomb_is_out_of_memory() {
    let h = load("alloc-1gib").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let call = Call::new("alloc-1gib", &secrets, &kv);
    let err = call.invoke(&h).await.unwrap_err();
    assert!(
        matches!(err, HandlerError::OutOfMemory { limit_bytes, .. } if limit_bytes == 16 << 20),
        "{err:?}"
    );
    assert_eq!(err.kind(), "oom");
    assert!(err.to_string().contains("alloc-1gib") && err.to_string().contains("out of memory"));
}

#[tokio::test]
async fn panic_is_a_trap() {
    let h = load("trap").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let call = Call::new("trap", &secrets, &kv);
    let err = call.invoke(&h).await.unwrap_err();
    let HandlerError::Trap {
        message, detail, ..
    } = &err
    else {
        panic!("expected a trap, got {err:?}")
    };
    assert_eq!(err.kind(), "trap");
    assert!(message.contains("panicked"), "{message}");
    // The panic message and a backtrace are in the log-only detail.
    assert!(detail.contains("handler exploded on purpose"), "{detail}");
    assert!(detail.contains("wasm backtrace"), "{detail}");
    assert!(
        !err.to_string().contains("exploded"),
        "detail must stay out of Display"
    );
}

#[tokio::test]
async fn bad_headers_are_invalid_actions() {
    let h = load("bad-header").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let mut call = Call::new("bad-header", &secrets, &kv);
    let cases = [
        ("{}", "`bad name`"),
        (r#"{"mode":"crlf"}"#, "`x-injected`"),
        (r#"{"mode":"host"}"#, "`host` may not be edited"),
        (r#"{"mode":"path"}"#, "must not start with `//`"),
    ];
    for (params, expected) in cases {
        call.params = params;
        // The guest itself runs fine; resolution rejects its action.
        assert!(call.invoke(&h).await.is_ok());
        let err = call.handle(&h).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_action");
        let msg = err.to_string();
        assert!(
            msg.contains("bad-header") && msg.contains(expected),
            "{params}: {msg}"
        );
    }
}

#[tokio::test]
async fn deep_recursion_traps_and_host_survives() {
    let h = load("deep-recursion").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let call = Call::new("deep-recursion", &secrets, &kv);
    for _ in 0..3 {
        let err = call.invoke(&h).await.unwrap_err();
        let HandlerError::Trap { message, .. } = &err else {
            panic!("expected a trap, got {err:?}")
        };
        assert!(message.contains("stack"), "{message}");
    }
    // Still serving.
    let ok = load("no-http").await;
    let call = Call::new("no-http", &secrets, &kv);
    assert_eq!(response(&call.handle(&ok).await.unwrap()).0, 403);
}

/// One looping guest must not hold up others, even on a single-threaded
/// runtime: the epoch callback yields to the scheduler every tick. The loop's
/// deadline is far beyond what the good calls need even on a loaded machine,
/// so "the loop is still running when they are done" is the proof they were
/// not queued behind it; no wall-clock bound is asserted.
#[test]
fn looping_handler_does_not_stall_others() {
    for workers in [0usize, 2] {
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .unwrap()
        };
        rt.block_on(async {
            let looping = load("loop-forever").await;
            let good = load("inject-header").await;
            let secrets = SecretStore::new();
            secrets.set("gh", "v");
            let kv = KvStore::new();
            let loop_task = {
                let looping = looping.clone();
                tokio::spawn(async move {
                    let secrets = SecretStore::new();
                    let kv = KvStore::new();
                    let mut call = Call::new("loop-forever", &secrets, &kv);
                    call.limits.timeout = Duration::from_secs(60);
                    call.invoke(&looping).await
                })
            };
            // Let the loop get going first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let start = Instant::now();
            let mut call = Call::new("inject-header", &secrets, &kv);
            call.params = r#"{"header":"authorization","secret":"gh"}"#;
            call.grants = Grants::use_only(["gh"]);
            for _ in 0..20 {
                let r = call.handle(&good).await.unwrap();
                assert!(matches!(r, ResolvedAction::Forward { .. }));
            }
            assert!(
                !loop_task.is_finished(),
                "the loop ended before 20 good calls did ({workers} workers, {:?})",
                start.elapsed()
            );
            // Dropping the call future cancels the guest and frees its slot.
            loop_task.abort();
            assert!(loop_task.await.unwrap_err().is_cancelled());
            let r = call.handle(&good).await.unwrap();
            assert!(matches!(r, ResolvedAction::Forward { .. }));
        });
    }
}

#[tokio::test]
async fn memory_cap_below_initial_memory_is_oom() {
    // A memory cap below the guest's initial memory fails at instantiation,
    // reported as out-of-memory rather than a generic failure.
    let h = load("no-http").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let mut call = Call::new("no-http", &secrets, &kv);
    call.limits.memory_bytes = 64 << 10;
    let err = call.invoke(&h).await.unwrap_err();
    assert_eq!(err.kind(), "oom", "{err:?}");
}

/// The epoch ticker parks once no guest has run for a while; the next invocation must wake it,
/// or a looping guest would never reach its deadline (and this test would hang, hence the
/// watchdog).
#[test]
fn loop_forever_times_out_after_the_host_was_idle() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async {
            let host = egret_wasm::HandlerHost::new(egret_wasm::HostConfig {
                max_instances: 4,
                ..egret_wasm::HostConfig::default()
            })
            .unwrap();
            let h = host
                .load("loop-forever", &wasm("loop-forever"))
                .await
                .unwrap();
            // Well past the idle ticks after which the ticker parks.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let secrets = SecretStore::new();
            let kv = KvStore::new();
            let mut call = Call::new("loop-forever", &secrets, &kv);
            call.limits = Limits::default(); // 50 ms
            host.invoke(&h, call.invocation()).await.map(|_| ())
        });
        let _ = tx.send(result);
    });
    let result = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a looping guest ran past its deadline after the host had been idle");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err:?}");
}

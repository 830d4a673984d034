//! The pool's instance slots under pressure: a session that finds every slot taken waits for
//! one in arrival order, bounded in time and in waiters, then fails as `busy`; idle reused
//! instances give their slots up to a waiter.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use egret_wasm::{HandlerError, HandlerHost, HostConfig, KvStore, SecretStore, SlotStats};

fn host_with(max_instances: u32, wait: Duration, waiters: usize) -> Arc<HandlerHost> {
    Arc::new(
        HandlerHost::new(HostConfig {
            max_instances,
            instance_wait: wait,
            max_instance_waiters: waiters,
            ..HostConfig::default()
        })
        .unwrap(),
    )
}

/// A session of a fresh-instance binding (it holds its slot until dropped).
fn fresh<'a>(call: &'a Call<'_>) -> egret_wasm::SessionSpec<'a> {
    let mut spec = call.spec_reusing();
    spec.reuse = false;
    spec
}

/// Waits until `n` sessions wait for a slot.
async fn until_waiting(host: &HandlerHost, n: u32) {
    for _ in 0..2000 {
        if host.slot_stats().waiting == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never {n} waiting: {:?}", host.slot_stats());
}

#[tokio::test]
async fn a_full_pool_waits_then_refuses_as_busy_and_recovers() {
    let host = host_with(1, Duration::from_millis(150), 8);
    let h = host.load("no-http", &wasm("no-http")).await.unwrap();
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let call = Call::new("no-http", &secrets, &kv);
    let held = host.session(&h, fresh(&call)).await.unwrap();
    assert_eq!(held.waited(), None);
    assert_eq!(
        host.slot_stats(),
        SlotStats {
            max: 1,
            in_use: 1,
            idle: 0,
            waiting: 0
        }
    );
    let err = host.session(&h, fresh(&call)).await.unwrap_err();
    assert_eq!(err.kind(), "busy", "{err:?}");
    let HandlerError::Busy {
        limit,
        waited,
        queue_full,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*limit, *queue_full), (1, None));
    assert_eq!(*waited, Duration::from_millis(150));
    assert_eq!(
        err.to_string(),
        "handler `no-http` has no free instance: all 1 instance slots stayed in use for 150 ms"
    );
    assert_eq!(host.slot_stats().waiting, 0);
    // A slot freed within the wait goes to the waiter.
    let waiter = {
        let (host, h) = (host.clone(), h.clone());
        tokio::spawn(async move {
            let (secrets, kv) = (SecretStore::new(), KvStore::new());
            let call = Call::new("no-http", &secrets, &kv);
            let mut s = host.session(&h, fresh(&call)).await?;
            let waited = s.waited();
            s.handle(call.request.clone(), None).await?;
            Ok::<_, HandlerError>(waited)
        })
    };
    until_waiting(&host, 1).await;
    drop(held);
    let waited = waiter.await.unwrap().unwrap();
    assert!(waited.is_some(), "the session did not wait");
    assert_eq!(host.slot_stats().in_use, 0);
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order_and_bounded_in_number() {
    let host = host_with(1, Duration::from_secs(20), 3);
    let h = host.load("no-http", &wasm("no-http")).await.unwrap();
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let call = Call::new("no-http", &secrets, &kv);
    let held = host.session(&h, fresh(&call)).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3u32 {
        let (host2, h, order) = (host.clone(), h.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let (secrets, kv) = (SecretStore::new(), KvStore::new());
            let call = Call::new("no-http", &secrets, &kv);
            let s = host2.session(&h, fresh(&call)).await.unwrap();
            order.lock().unwrap().push(i);
            drop(s);
        }));
        until_waiting(&host, i + 1).await;
    }
    // A fourth is refused at once: three already wait.
    let err = host.session(&h, fresh(&call)).await.unwrap_err();
    match &err {
        HandlerError::Busy {
            queue_full: Some(3),
            waited,
            ..
        } if waited.is_zero() => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "handler `no-http` has no free instance: all 1 instance slots are in use and 3 \
         requests already wait for one"
    );
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    let s = host.slot_stats();
    assert_eq!((s.in_use, s.waiting), (0, 0));
}

/// An instance idle for reuse holds a slot; a session waiting for one takes it over instead
/// of waiting for the wait bound, and instances given back while someone waits are dropped.
#[tokio::test]
async fn idle_reused_instances_give_their_slot_to_a_waiter() {
    let host = host_with(1, Duration::from_secs(20), 8);
    let counting = host
        .load("count-calls", &wasm("count-calls"))
        .await
        .unwrap();
    let other = host.load("no-http", &wasm("no-http")).await.unwrap();
    let (secrets, kv) = (SecretStore::new(), KvStore::new());
    let call = Call::new("count-calls", &secrets, &kv);
    {
        let mut s = host.session(&counting, call.spec_reusing()).await.unwrap();
        s.handle(call.request.clone(), None).await.unwrap();
    }
    assert_eq!(counting.idle_instances(), 1);
    assert_eq!(host.slot_stats().idle, 1);
    assert_eq!(host.slot_stats().in_use, 1);
    let plain = Call::new("no-http", &secrets, &kv);
    let s = tokio::time::timeout(Duration::from_secs(5), host.session(&other, fresh(&plain)))
        .await
        .expect("the waiter was starved by an idle instance")
        .unwrap();
    assert!(s.waited().is_some());
    assert_eq!(counting.idle_instances(), 0);
    // The reusing binding now waits for the slot, and its instance, given back while another
    // session waits, is not kept.
    let reuser = {
        let (host, counting) = (host.clone(), counting.clone());
        tokio::spawn(async move {
            let (secrets, kv) = (SecretStore::new(), KvStore::new());
            let call = Call::new("count-calls", &secrets, &kv);
            let mut s = host.session(&counting, call.spec_reusing()).await.unwrap();
            s.handle(call.request.clone(), None).await.unwrap();
        })
    };
    until_waiting(&host, 1).await;
    let third = {
        let (host, other) = (host.clone(), other.clone());
        tokio::spawn(async move {
            let (secrets, kv) = (SecretStore::new(), KvStore::new());
            let call = Call::new("no-http", &secrets, &kv);
            let mut s = host.session(&other, fresh(&call)).await.unwrap();
            s.handle(call.request.clone(), None).await.unwrap();
        })
    };
    until_waiting(&host, 2).await;
    drop(s);
    reuser.await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the second waiter was starved")
        .unwrap();
    assert_eq!(
        counting.idle_instances(),
        0,
        "given back while a session waited"
    );
    // With nobody waiting an instance is kept again.
    let mut s = host.session(&counting, call.spec_reusing()).await.unwrap();
    assert_eq!(s.waited(), None);
    s.handle(call.request.clone(), None).await.unwrap();
    drop(s);
    assert_eq!(counting.idle_instances(), 1);
}

//! The instance pool: the host-wide slots (a fair semaphore in front of wasmtime's pooling
//! allocator) and, per loaded handler, the instances kept idle for reuse.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

use crate::config::HostConfig;
use crate::state::StoreState;
use crate::HandlerError;

use super::Instance;

/// Requests one reused instance serves before it is discarded (`instances = "reuse"`).
pub const REUSE_MAX_REQUESTS: u32 = 1_000;
/// Growth of a reused instance's linear memory past its size after instantiation at which it
/// is discarded instead of serving another request.
pub const REUSE_MAX_GROWTH_BYTES: usize = 4 << 20;
/// Idle instances kept per loaded handler: enough for every worker thread to find one; more
/// would only hold pool slots and memory.
const REUSE_MAX_IDLE: usize = 8;

/// Idle instances of all handlers together may hold at most this share (1/4) of the instance
/// pool's slots, so handlers that reuse can never starve the fresh instantiations of others.
fn idle_budget(max_instances: u32) -> usize {
    (max_instances as usize / 4).max(1)
}

/// The pool's instance slots, host-wide: who holds one (live sessions and idle instances,
/// each with a permit of `sem`), who waits for one, and the idle instances' share.
///
/// wasmtime's pooling allocator fails an instantiation outright when its slots are taken;
/// the semaphore in front of it turns that into a wait, in arrival order (tokio's semaphore
/// is fair: a permit given back goes to the oldest waiter, and `try_acquire` cannot overtake
/// one), bounded in time (`wait`) and in waiters (`max_waiters`).
pub(super) struct Slots {
    sem: Arc<Semaphore>,
    /// The pool's slots.
    max: u32,
    wait: Duration,
    max_waiters: usize,
    /// Sessions waiting for a slot now.
    waiting: AtomicUsize,
    /// Idle instances now, against `idle_max` ([`idle_budget`]).
    idle: AtomicUsize,
    idle_max: usize,
    /// Every loaded handler's idle instances, so a waiter can free a slot one of them holds.
    pools: Mutex<Vec<Weak<InstancePool>>>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("max", &self.max)
            .field("waiting", &self.waiting)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// Counts a waiting session for as long as it waits (also when its request is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slots {
    /// The slots of a host made with `cfg` ([`HostConfig::max_instances`] and the waits).
    pub(super) fn new(cfg: &HostConfig) -> Slots {
        let max = cfg.max_instances.max(1);
        Slots {
            sem: Arc::new(Semaphore::new(max as usize)),
            max,
            wait: cfg.instance_wait,
            max_waiters: cfg.max_instance_waiters,
            waiting: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            idle_max: idle_budget(max),
            pools: Mutex::new(Vec::new()),
        }
    }

    /// Slots in use and sessions waiting, now.
    pub(super) fn stats(&self) -> SlotStats {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        SlotStats {
            max: self.max,
            in_use: self.max.saturating_sub(clamp(self.sem.available_permits())),
            idle: clamp(self.idle.load(Ordering::Relaxed)),
            waiting: clamp(self.waiting.load(Ordering::Relaxed)),
        }
    }

    /// A slot for a new instance of `handler`: at once when one is free, else after waiting
    /// behind earlier waiters; `Some(waited)` when it had to wait.
    pub(super) async fn admit(
        &self,
        handler: &str,
    ) -> Result<(OwnedSemaphorePermit, Option<Duration>), HandlerError> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Ok((p, None));
        }
        let busy = |waited, queue_full| HandlerError::Busy {
            handler: handler.to_owned(),
            limit: self.max,
            waited,
            queue_full,
        };
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        if before >= self.max_waiters {
            return Err(busy(Duration::ZERO, Some(before)));
        }
        // An instance idle for reuse must not keep a waiting request out: free its slot (the
        // freed permit goes to the oldest waiter). Instances given back while anyone waits
        // are dropped too (`InstancePool::give_back`).
        self.evict_idle();
        let start = Instant::now();
        match tokio::time::timeout(self.wait, self.sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok((p, Some(start.elapsed()))),
            // The whole bound (the semaphore is never closed, so that is the only way here).
            Ok(Err(_)) | Err(_) => Err(busy(self.wait, None)),
        }
    }

    /// Drop one idle instance of any handler, if there is one.
    fn evict_idle(&self) {
        if self.idle.load(Ordering::Relaxed) == 0 {
            return;
        }
        let victim = {
            let mut pools = self.pools.lock();
            pools.retain(|p| p.strong_count() > 0);
            pools
                .iter()
                .filter_map(Weak::upgrade)
                .find_map(|p| p.evict())
        };
        drop(victim);
    }

    /// Remember `pool` for [`Slots::evict_idle`].
    fn register(&self, pool: &Arc<InstancePool>) {
        let mut pools = self.pools.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }
}

/// Instance slots in use and sessions waiting for one, now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// The pool's slots ([`HostConfig::max_instances`]).
    pub max: u32,
    /// Slots held by live sessions and idle instances.
    pub in_use: u32,
    /// Of those, held by instances idle for reuse.
    pub idle: u32,
    /// Sessions waiting for a slot.
    pub waiting: u32,
}

/// An instance that served a request cleanly and waits for the next one.
pub(super) struct Idle {
    pub(super) store: Store<StoreState>,
    pub(super) instance: Instance,
    pub(super) ticks: Arc<AtomicU64>,
    pub(super) uses: u32,
    pub(super) base_memory: usize,
    pub(super) timeout: Duration,
    /// Its pool slot (released after the store, which is declared first, is dropped).
    pub(super) permit: OwnedSemaphorePermit,
}

/// The idle instances of one loaded handler (one handler version of one policy generation).
pub(super) struct InstancePool {
    idle: Mutex<Vec<Idle>>,
    /// Set when the generation is superseded: instances coming back are dropped.
    retired: AtomicBool,
    slots: Arc<Slots>,
}

impl Drop for InstancePool {
    fn drop(&mut self) {
        self.clear();
    }
}

impl InstancePool {
    /// An empty pool drawing on `slots` (which may evict from it).
    pub(super) fn new(slots: &Arc<Slots>) -> Arc<InstancePool> {
        let pool = Arc::new(InstancePool {
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            slots: slots.clone(),
        });
        slots.register(&pool);
        pool
    }

    /// An idle instance of `sandbox` made for `timeout` (the epoch budget is built in).
    pub(super) fn take(&self, sandbox: &str, timeout: Duration) -> Option<Idle> {
        let mut idle = self.idle.lock();
        let i = idle
            .iter()
            .rposition(|e| e.timeout == timeout && e.store.data().sandbox() == sandbox)?;
        self.slots.idle.fetch_sub(1, Ordering::Relaxed);
        Some(idle.swap_remove(i))
    }

    /// The least recently given back idle instance, taken out to be dropped.
    fn evict(&self) -> Option<Idle> {
        let mut idle = self.idle.lock();
        if idle.is_empty() {
            return None;
        }
        self.slots.idle.fetch_sub(1, Ordering::Relaxed);
        Some(idle.remove(0))
    }

    /// Drops every idle instance.
    fn clear(&self) {
        let mut idle = self.idle.lock();
        self.slots.idle.fetch_sub(idle.len(), Ordering::Relaxed);
        idle.clear();
    }

    /// Drops the idle instances and every one that comes back from now on.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.clear();
    }

    /// Instances idle now.
    pub(super) fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }

    /// Keep `e` for the next request unless it is used up, grew too much, the pool is
    /// retired or full, or a session waits for its slot.
    pub(super) fn give_back(&self, e: Idle) {
        let grown = e
            .store
            .data()
            .limiter
            .memory_bytes
            .saturating_sub(e.base_memory);
        if e.uses >= REUSE_MAX_REQUESTS
            || grown > REUSE_MAX_GROWTH_BYTES
            || e.store.data().limiter.memory_denied
            || self.slots.waiting.load(Ordering::Relaxed) > 0
        {
            return;
        }
        let mut idle = self.idle.lock();
        // Checked under the lock `retire` clears with, so an instance coming back while the
        // pool is retired can never stay behind.
        if self.retired.load(Ordering::Relaxed) || idle.len() >= REUSE_MAX_IDLE {
            return;
        }
        if self.slots.idle.fetch_add(1, Ordering::Relaxed) >= self.slots.idle_max {
            self.slots.idle.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        idle.push(e);
    }
}

/// What a session of a reusing binding carries back to the pool.
pub(super) struct Reuse {
    pub(super) pool: Arc<InstancePool>,
    pub(super) uses: u32,
    pub(super) base_memory: usize,
}

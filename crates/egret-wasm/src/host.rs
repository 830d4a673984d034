//! The handler host: one wasmtime `Engine` per process with a pooling
//! allocator and an epoch ticker, loading (compile + link + pre-instantiate)
//! and per-request invocation under memory and time limits.
//!
//! Loading and invoking stay together because they share the engine, the
//! linker and the in-memory cache of compiled components. The ticker that
//! moves the epoch is in [`crate::epoch`]; compiled artifacts kept across
//! restarts are in [`crate::artifact_cache`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};

use crate::action::{
    resolve_action, resolve_response_action, GuestAction, GuestResponseAction, ResolvedAction,
    ResolvedResponseAction, MAX_REPLACEMENT_BODY_BYTES,
};
use crate::artifact_cache::{self, ArtifactCache};
use crate::bindings::{v1, v2, v3};
use crate::config::{HostConfig, Limits};
use crate::epoch::EpochTicker;
use crate::kv::KvStore;
use crate::secrets::{Grants, SecretSource};
use crate::services::Services;
use crate::state::{truncate, StateInit, StoreState};
use crate::{HandlerError, WasmError};

/// The head of the request a handler decides on (generated from the WIT):
/// `method`, `scheme`, `authority`, `path_with_query` and `headers` as
/// `(lower-case name, raw value)` pairs.
pub use v2::egret::handler::types::RequestHead;

/// The WIT version a component was built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WitVersion {
    /// `egret:handler@0.1.0`: head-only decisions.
    V0_1,
    /// `egret:handler@0.2.0`: bodies, the response phase, fetch, signing, kv counters.
    V0_2,
    /// `egret:handler@0.3.0`: the stream phase (`on-response-event`).
    V0_3,
}

impl WitVersion {
    /// The world, as WIT names it.
    pub fn world(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "egret:handler/handler@0.1.0",
            WitVersion::V0_2 => "egret:handler/handler@0.2.0",
            WitVersion::V0_3 => "egret:handler/handler@0.3.0",
        }
    }
}

/// The pre-instantiated component, by WIT version.
enum Pre {
    V1(v1::HandlerPre<StoreState>),
    V2(v2::HandlerPre<StoreState>),
    V3(v3::HandlerPre<StoreState>),
}

/// A live instance, by WIT version.
enum Instance {
    V1(v1::Handler),
    V2(v2::Handler),
    V3(v3::Handler),
}

/// Extra time the wall-clock backstop allows beyond twice the epoch budget. The epoch
/// callback (guest running time) normally fires first; the tokio timer only matters if a host
/// call stalled or the guest waits on a clock, and must leave room for a loaded host's
/// scheduling delays so a quick guest is never cut off by them.
const TOKIO_GRACE: Duration = Duration::from_millis(250);
/// Longest detail string kept for a trap.
const MAX_TRAP_DETAIL: usize = 8 << 10;

/// Marker error returned by the epoch callback when the deadline passed.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("handler deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// What `egret handler check` reports about a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerInfo {
    /// Lower-case hex sha256 of the component bytes.
    pub sha256_hex: String,
    /// Size of the component in bytes.
    pub size_bytes: usize,
    /// Names of the component's imports (interfaces), sorted.
    pub imports: Vec<String>,
    /// Names of the component's exports, sorted.
    pub exports: Vec<String>,
    /// The WIT version it was built against.
    pub wit_version: WitVersion,
}

/// A compiled, linked and pre-instantiated component, shared by every
/// [`LoadedHandler`] with the same bytes.
struct Compiled {
    pre: Pre,
    info: HandlerInfo,
}

/// A handler ready to run: cheap to clone via `Arc`. Each invocation gets a fresh instance,
/// unless its binding opted into reuse ([`SessionSpec::reuse`]): then instances that served
/// a request cleanly wait in this handler's pool for the next one.
pub struct LoadedHandler {
    /// Name given to [`HandlerHost::load`] (used in errors and logs).
    pub name: String,
    /// Lower-case hex sha256 of the component bytes (shared: every audit event of a request
    /// this handler ran on carries it).
    pub sha256_hex: Arc<str>,
    compiled: Arc<Compiled>,
    pool: Arc<InstancePool>,
}

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
struct Slots {
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
    /// A slot for a new instance of `handler`: at once when one is free, else after waiting
    /// behind earlier waiters; `Some(waited)` when it had to wait.
    async fn admit(
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
struct Idle {
    store: Store<StoreState>,
    instance: Instance,
    ticks: Arc<AtomicU64>,
    uses: u32,
    base_memory: usize,
    timeout: Duration,
    /// Its pool slot (released after the store, which is declared first, is dropped).
    permit: OwnedSemaphorePermit,
}

/// The idle instances of one loaded handler (one handler version of one policy generation).
struct InstancePool {
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
    /// An idle instance of `sandbox` made for `timeout` (the epoch budget is built in).
    fn take(&self, sandbox: &str, timeout: Duration) -> Option<Idle> {
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

    /// Keep `e` for the next request unless it is used up, grew too much, the pool is
    /// retired or full, or a session waits for its slot.
    fn give_back(&self, e: Idle) {
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
        // Checked under the lock `retire_instances` clears with, so an instance coming back
        // while the pool is retired can never stay behind.
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
struct Reuse {
    pool: Arc<InstancePool>,
    uses: u32,
    base_memory: usize,
}

impl std::fmt::Debug for LoadedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedHandler")
            .field("name", &self.name)
            .field("sha256_hex", &self.sha256_hex)
            .finish()
    }
}

impl LoadedHandler {
    /// What the component imports and exports.
    pub fn info(&self) -> &HandlerInfo {
        &self.compiled.info
    }

    /// The WIT version it was built against.
    pub fn wit_version(&self) -> WitVersion {
        match self.compiled.pre {
            Pre::V1(_) => WitVersion::V0_1,
            Pre::V2(_) => WitVersion::V0_2,
            Pre::V3(_) => WitVersion::V0_3,
        }
    }

    /// Drops the idle instances and every one that comes back from now on: called when a
    /// newer policy generation took over, so its pool slots and memory are freed.
    pub fn retire_instances(&self) {
        self.pool.retired.store(true, Ordering::Relaxed);
        self.pool.clear();
    }

    /// Instances waiting in the reuse pool.
    pub fn idle_instances(&self) -> usize {
        self.pool.idle.lock().len()
    }
}

/// Everything one invocation needs besides the handler.
pub struct Invocation<'a> {
    /// Name of the handler binding (shown to the guest and in errors).
    pub handler_name: &'a str,
    /// The sandbox that made the request (kv namespace, logs).
    pub sandbox_id: &'a str,
    /// Admin-provided params, passed to the guest verbatim.
    pub params_json: &'a str,
    /// The request head.
    pub request: &'a RequestHead,
    /// Secrets this binding may use / reveal.
    pub grants: &'a Grants,
    /// Where secret values come from.
    pub secrets: &'a dyn SecretSource,
    /// The kv store (namespaced by `sandbox_id` inside).
    pub kv: &'a KvStore,
    /// Time and memory limits; memory is clamped to
    /// [`HostConfig::max_memory_bytes`].
    pub limits: Limits,
}

/// Everything a [`Session`] needs besides the handler; read when it starts.
pub struct SessionSpec<'a> {
    /// Name of the handler binding (shown to the guest and in errors).
    pub handler_name: &'a str,
    /// The sandbox that made the request (kv namespace, logs).
    pub sandbox_id: &'a str,
    /// Admin-provided params, passed to the guest verbatim.
    pub params_json: &'a str,
    /// Secrets this binding may use / reveal / set.
    pub grants: &'a Grants,
    /// Where secret values come from (read once, when the session starts).
    pub secrets: &'a dyn SecretSource,
    /// The kv store.
    pub kv: &'a KvStore,
    /// Time (per phase) and memory limits.
    pub limits: Limits,
    /// fetch and set-secret, when granted.
    pub services: Services,
    /// Take an idle instance of this handler if there is one, and give the instance back
    /// after a clean request (`instances = "reuse"`); otherwise a fresh instance is made and
    /// discarded when the session ends.
    pub reuse: bool,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Components compiled from source bytes.
    pub compiled: u64,
    /// Components loaded from the on-disk artifact cache.
    pub loaded_from_disk: u64,
    /// Loads answered by the in-memory cache (same bytes already compiled).
    pub memory_cache_hits: u64,
}

/// One cached compilation; shared while in flight so waiters reuse it.
type CompileCell = Arc<OnceCell<Arc<Compiled>>>;

struct HostInner {
    engine: Engine,
    linker: Linker<StoreState>,
    config: HostConfig,
    /// Compiled components by sha256. A cell is shared while a compile is in
    /// flight so concurrent loads of the same bytes compile once.
    cache: Mutex<HashMap<[u8; 32], CompileCell>>,
    /// Compiled artifacts on disk, when [`HostConfig::cache_dir`] is set.
    artifacts: Option<ArtifactCache>,
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    memory_cache_hits: AtomicU64,
    /// The pool's slots: holders, waiters, idle instances.
    slots: Arc<Slots>,
}

/// Loads and runs WebAssembly handlers. Create one per process and share it
/// (e.g. in an `Arc`); it owns the engine, the instance pool and the epoch
/// ticker thread (stopped when the host is dropped).
pub struct HandlerHost {
    inner: Arc<HostInner>,
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for HandlerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerHost")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

fn engine_config(cfg: &HostConfig) -> Config {
    let n = cfg.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        // A Rust wasip2 component instantiates a few core modules (the
        // program plus shims for indirect lowering).
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n)
        .total_tables(n.saturating_mul(2))
        .total_stacks(n)
        .max_memory_size(cfg.max_memory_bytes)
        .linear_memory_keep_resident(cfg.keep_resident_bytes)
        .table_keep_resident(cfg.keep_resident_bytes)
        .async_stack_keep_resident(cfg.keep_resident_bytes)
        // Lets the pool reset only the pages a guest dirtied (Linux 6.7+).
        .pagemap_scan(Enabled::Auto);

    let mut c = Config::new();
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(cfg.max_wasm_stack)
        // Host functions run on the same fiber stack: leave them 1 MiB.
        .async_stack_size(cfg.max_wasm_stack + (1 << 20))
        // Reserve only what the largest allowed memory needs (not 4 GiB per
        // slot); bounds checks become explicit, which is cheap for handlers.
        .memory_reservation(cfg.max_memory_bytes as u64)
        .memory_reservation_for_growth(0)
        .memory_guard_size(64 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

impl HandlerHost {
    /// Creates the engine (component model, epoch interruption, pooling
    /// allocator sized from `cfg`), the linker with WASI p2 and the egret host
    /// imports, and starts the epoch ticker thread.
    pub fn new(cfg: HostConfig) -> Result<HandlerHost, WasmError> {
        if let Some(dir) = &cfg.cache_dir {
            artifact_cache::prepare_dir(dir)?;
        }
        let engine =
            Engine::new(&engine_config(&cfg)).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let mut linker: Linker<StoreState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| WasmError::Engine(format!("linking WASI: {e:#}")))?;
        v1::Handler::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| WasmError::Engine(format!("linking egret host imports: {e:#}")))?;
        v2::Handler::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| WasmError::Engine(format!("linking egret host imports: {e:#}")))?;
        v3::Handler::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(|e| WasmError::Engine(format!("linking egret host imports: {e:#}")))?;
        let artifacts = cfg
            .cache_dir
            .clone()
            .map(|dir| ArtifactCache::new(dir, &engine));
        let ticker = Arc::new(EpochTicker::start(&engine, cfg.epoch_tick)?);
        let max = cfg.max_instances.max(1);
        let slots = Arc::new(Slots {
            sem: Arc::new(Semaphore::new(max as usize)),
            max,
            wait: cfg.instance_wait,
            max_waiters: cfg.max_instance_waiters,
            waiting: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            idle_max: idle_budget(max),
            pools: Mutex::new(Vec::new()),
        });
        Ok(HandlerHost {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config: cfg,
                cache: Mutex::new(HashMap::new()),
                artifacts,
                compiled: AtomicU64::new(0),
                loaded_from_disk: AtomicU64::new(0),
                memory_cache_hits: AtomicU64::new(0),
                slots,
            }),
            ticker,
        })
    }

    /// The configuration the host was created with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Instance slots in use and sessions waiting for one (read at metrics scrape time).
    pub fn slot_stats(&self) -> SlotStats {
        let s = &self.inner.slots;
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        SlotStats {
            max: s.max,
            in_use: s.max.saturating_sub(clamp(s.sem.available_permits())),
            idle: clamp(s.idle.load(Ordering::Relaxed)),
            waiting: clamp(s.waiting.load(Ordering::Relaxed)),
        }
    }

    /// Compile / cache counters.
    pub fn stats(&self) -> HostStats {
        HostStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            loaded_from_disk: self.inner.loaded_from_disk.load(Ordering::Relaxed),
            memory_cache_hits: self.inner.memory_cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Loads a handler component: hashes it, reuses an already compiled copy
    /// of the same bytes (or the on-disk artifact cache), otherwise compiles
    /// it on the blocking thread pool; then links and pre-instantiates it.
    ///
    /// Compiled copies stay in memory while some [`LoadedHandler`] uses them;
    /// unused ones are dropped at the next load.
    pub async fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedHandler>, WasmError> {
        let (hash, sha256_hex) = sha256(bytes);
        let cell = self.inner.cache.lock().entry(hash).or_default().clone();
        let mut hit = true;
        let compiled = cell
            .get_or_try_init(|| {
                hit = false;
                let inner = self.inner.clone();
                let owned = bytes.to_vec();
                let handler = name.to_owned();
                let hex = sha256_hex.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        inner.compile(&handler, &owned, &hex).map(Arc::new)
                    })
                    .await
                    .map_err(|e| WasmError::Task {
                        handler: name.to_owned(),
                        reason: e.to_string(),
                    })?
                }
            })
            .await?
            .clone();
        if hit {
            self.inner.memory_cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        self.prune_cache(&hash);
        let pool = Arc::new(InstancePool {
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            slots: self.inner.slots.clone(),
        });
        self.inner.slots.register(&pool);
        Ok(Arc::new(LoadedHandler {
            name: name.to_owned(),
            sha256_hex: sha256_hex.into(),
            compiled,
            pool,
        }))
    }

    /// Drops cached compilations nobody uses any more (and failed ones).
    fn prune_cache(&self, keep: &[u8; 32]) {
        self.inner.cache.lock().retain(|hash, cell| {
            if hash == keep || Arc::strong_count(cell) > 1 {
                return true; // current, or a load is in flight
            }
            cell.get().is_some_and(|c| Arc::strong_count(c) > 1)
        });
    }

    /// Validates a component without keeping it: what `egret handler check`
    /// runs. Compiles synchronously (this blocks; do not call it on an async
    /// worker thread).
    pub fn check(&self, bytes: &[u8]) -> Result<HandlerInfo, WasmError> {
        let (_, sha256_hex) = sha256(bytes);
        self.inner
            .compile("check", bytes, &sha256_hex)
            .map(|c| c.info)
    }

    /// Starts a session of `h` for one request: a fresh instance from the pool with its own
    /// memory cap, living until the session is dropped, so the request's phases (decision,
    /// response, observed body chunks) run on the same instance and nothing crosses requests.
    /// When every slot of the pool is taken it waits for one (see [`HostConfig::max_instances`];
    /// [`Session::waited`] tells how long) or fails with [`HandlerError::Busy`].
    /// With [`SessionSpec::reuse`] an idle instance of `h` that served earlier requests of
    /// this sandbox is taken instead when there is one (its guest memory carries over; its
    /// per-request state — secrets, grants, limits, log budget — is read anew).
    pub async fn session(
        &self,
        h: &LoadedHandler,
        spec: SessionSpec<'_>,
    ) -> Result<Session, HandlerError> {
        let handler = spec.handler_name;
        let memory_limit = spec
            .limits
            .memory_bytes
            .min(self.inner.config.max_memory_bytes);
        let timeout = spec.limits.timeout;
        // A guest blocked in `fetch` is not running and not charged ticks; the wall-clock
        // backstop allows for its fetches.
        let backstop = timeout * 2 + TOKIO_GRACE + spec.services.fetch_allowance();
        let reuse = spec.reuse;
        let init = StateInit {
            handler,
            sandbox: spec.sandbox_id,
            grants: spec.grants,
            secrets: spec.secrets,
            kv: spec.kv,
            memory_limit,
            services: spec.services,
        };
        let session = |store, instance, ticks, reuse, permit, waited| Session {
            store: Some(store),
            instance,
            ctx: v2::egret::handler::types::Context {
                handler_name: handler.to_owned(),
                sandbox_id: spec.sandbox_id.to_owned(),
                params_json: spec.params_json.to_owned(),
            },
            ticker: self.ticker.clone(),
            ticks,
            timeout,
            backstop,
            memory_limit,
            body_buffered: false,
            response_buffered: false,
            in_call: false,
            reuse,
            waited,
            permit: Some(permit),
        };
        if reuse {
            if let Some(mut idle) = h.pool.take(spec.sandbox_id, timeout) {
                idle.store.data_mut().renew(init);
                idle.store.set_epoch_deadline(1);
                let reuse = Reuse {
                    pool: h.pool.clone(),
                    uses: idle.uses,
                    base_memory: idle.base_memory,
                };
                return Ok(session(
                    idle.store,
                    Some(idle.instance),
                    idle.ticks,
                    Some(reuse),
                    idle.permit,
                    None,
                ));
            }
        }
        let (permit, waited) = self.inner.slots.admit(handler).await?;
        let state = StoreState::new(init);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // The budget counts ticks the guest was running for, not wall-clock time: when the
        // thread is descheduled (a busy 2-core host) or the task waits behind others after a
        // yield, the epoch moves on by many ticks but the guest sees one callback on resuming.
        // A wall-clock deadline made 10 µs handlers time out under load.
        let tick = self.inner.config.epoch_tick.max(Duration::from_micros(100));
        let budget = timeout.as_micros().div_ceil(tick.as_micros()).max(1) as u64;
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if counter.fetch_add(1, Ordering::Relaxed) + 1 > budget {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let mut session = session(store, None, ticks, None, permit, waited);
        let instance = {
            let _running = self.ticker.running();
            let store = session.store.as_mut().expect("a session holds its store");
            let run = async {
                match &h.compiled.pre {
                    Pre::V1(pre) => pre.instantiate_async(store).await.map(Instance::V1),
                    Pre::V2(pre) => pre.instantiate_async(store).await.map(Instance::V2),
                    Pre::V3(pre) => pre.instantiate_async(store).await.map(Instance::V3),
                }
                .map_err(Failure::Instantiate)
            };
            match tokio::time::timeout(backstop, run).await {
                Ok(r) => r,
                Err(_) => Err(Failure::TokioTimeout),
            }
        };
        match instance {
            Ok(i) => {
                session.instance = Some(i);
                if reuse {
                    session.reuse = Some(Reuse {
                        pool: h.pool.clone(),
                        uses: 0,
                        base_memory: session.store().data().limiter.memory_bytes,
                    });
                }
                Ok(session)
            }
            Err(f) => Err(session.failed(f)),
        }
    }

    /// Runs the handler once on a request head, in a fresh instance, and returns the
    /// guest's raw action (use [`resolve_action`] or [`HandlerHost::handle`] to validate it).
    ///
    /// The guest runs via `call_async` on a fiber; every epoch tick (1 ms by default) the
    /// store's epoch callback either stops it with [`HandlerError::Timeout`] once the deadline
    /// has passed or yields to the tokio scheduler. So a looping guest never holds a tokio
    /// worker for more than about one tick at a time, and a `tokio::time::timeout` slightly
    /// beyond the deadline backs this up.
    pub async fn invoke(
        &self,
        h: &LoadedHandler,
        inv: Invocation<'_>,
    ) -> Result<GuestAction, HandlerError> {
        let request = inv.request.clone();
        let mut session = self.session(h, spec_of(&inv)).await?;
        session.decide(request, None).await
    }

    /// [`invoke`](HandlerHost::invoke) followed by [`resolve_action`]: a head-only decision.
    pub async fn handle(
        &self,
        h: &LoadedHandler,
        inv: Invocation<'_>,
    ) -> Result<ResolvedAction, HandlerError> {
        let request = inv.request.clone();
        let mut session = self.session(h, spec_of(&inv)).await?;
        session.handle(request, None).await
    }
}

fn spec_of<'a>(inv: &Invocation<'a>) -> SessionSpec<'a> {
    SessionSpec {
        handler_name: inv.handler_name,
        sandbox_id: inv.sandbox_id,
        params_json: inv.params_json,
        grants: inv.grants,
        secrets: inv.secrets,
        kv: inv.kv,
        limits: inv.limits,
        services: Services::default(),
        reuse: false,
    }
}

/// One request's instance of a handler: its phases run here, in order. Dropping it returns
/// the instance's slot to wasmtime's pool, or — for a reusing binding, after a request that
/// ended cleanly — the instance itself to the handler's pool of idle instances.
pub struct Session {
    /// Always `Some` until the session is dropped (taken then to go back to the pool).
    store: Option<Store<StoreState>>,
    instance: Option<Instance>,
    ctx: v2::egret::handler::types::Context,
    ticker: Arc<EpochTicker>,
    /// Epoch ticks the current call has run (reset per call: each phase has the budget).
    ticks: Arc<AtomicU64>,
    timeout: Duration,
    backstop: Duration,
    memory_limit: usize,
    body_buffered: bool,
    response_buffered: bool,
    /// A guest call is under way: set while one runs, so a session dropped in the middle of
    /// one (its request cancelled) is never reused.
    in_call: bool,
    reuse: Option<Reuse>,
    /// How long the session waited for a pool slot, when it had to.
    waited: Option<Duration>,
    /// Its pool slot: released after the store (declared earlier) is dropped, or handed on
    /// with the instance to the idle pool.
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(reuse) = self.reuse.take() else {
            return;
        };
        if self.in_call {
            return;
        }
        if let (Some(store), Some(instance), Some(permit)) =
            (self.store.take(), self.instance.take(), self.permit.take())
        {
            reuse.pool.give_back(Idle {
                store,
                instance,
                ticks: self.ticks.clone(),
                uses: reuse.uses + 1,
                base_memory: reuse.base_memory,
                timeout: self.timeout,
                permit,
            });
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handler", &self.ctx.handler_name)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The WIT version of the instance.
    pub fn wit_version(&self) -> WitVersion {
        match self.instance {
            Some(Instance::V1(_)) => WitVersion::V0_1,
            Some(Instance::V2(_)) => WitVersion::V0_2,
            _ => WitVersion::V0_3,
        }
    }

    /// How long the session waited for a free instance slot, if every slot was taken when
    /// it started.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    fn store(&self) -> &Store<StoreState> {
        self.store.as_ref().expect("a session holds its store")
    }

    /// The key/values the guest attached to the request's audit event so far
    /// (`audit-field`), redacted and bounded.
    pub fn audit_fields(&self) -> &[(String, String)] {
        self.store().data().audit.as_slice()
    }

    /// Run one call of the guest under the phase's budget, logging its output.
    async fn call<T, F>(&mut self, f: F) -> Result<T, HandlerError>
    where
        F: for<'s> FnOnce(
            &'s Instance,
            &'s mut Store<StoreState>,
            &'s v2::egret::handler::types::Context,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 's>,
        >,
    {
        self.ticks.store(0, Ordering::Relaxed);
        let store = self.store.as_mut().expect("a session holds its store");
        store.data_mut().fetches = 0;
        self.in_call = true;
        let outcome = {
            let _running = self.ticker.running();
            let instance = self.instance.as_ref().expect("started");
            let run = f(instance, store, &self.ctx);
            match tokio::time::timeout(self.backstop, run).await {
                Ok(r) => r.map_err(Failure::Call),
                Err(_) => Err(Failure::TokioTimeout),
            }
        };
        self.in_call = false;
        let state = self
            .store
            .as_ref()
            .expect("a session holds its store")
            .data();
        let output = state.output.take();
        if !output.is_empty() {
            let text = truncate(state.redact(&String::from_utf8_lossy(&output)), 4096);
            tracing::debug!(target: "egret_wasm::guest", handler = state.handler(), sandbox = state.sandbox(), "guest output: {text}");
        }
        match outcome {
            Ok(v) => Ok(v),
            Err(f) => {
                // After a trap the instance may not be entered again.
                self.instance = None;
                let e = classify(f, state, self.timeout, self.memory_limit, &output);
                tracing::warn!(
                    handler = state.handler(),
                    sandbox = state.sandbox(),
                    kind = e.kind(),
                    detail = e.detail().unwrap_or(""),
                    "handler invocation failed: {e}"
                );
                Err(e)
            }
        }
    }

    fn failed(&self, f: Failure) -> HandlerError {
        let state = self.store().data();
        let e = classify(f, state, self.timeout, self.memory_limit, &[]);
        tracing::warn!(
            handler = state.handler(),
            sandbox = state.sandbox(),
            kind = e.kind(),
            "handler instantiation failed: {e}"
        );
        e
    }

    fn closed(&self) -> HandlerError {
        HandlerError::Trap {
            handler: self.ctx.handler_name.clone(),
            message: "the handler failed earlier in this request".into(),
            detail: String::new(),
        }
    }

    /// The decision on a request: the guest's raw action. `body` is given when the binding
    /// buffers request bodies (0.1.0 components never see it).
    pub async fn decide(
        &mut self,
        head: RequestHead,
        body: Option<bytes::Bytes>,
    ) -> Result<GuestAction, HandlerError> {
        if self.instance.is_none() {
            return Err(self.closed());
        }
        self.body_buffered = body.is_some();
        let result = match self.instance.as_ref() {
            Some(Instance::V1(_)) => {
                let head = crate::convert::head_v1(head);
                self.call(move |i, store, ctx| {
                    let Instance::V1(h) = i else { unreachable!() };
                    let ctx = crate::convert::context_v1(ctx.clone());
                    Box::pin(async move {
                        h.call_handle(store, &ctx, &head)
                            .await
                            .map(GuestAction::from)
                    })
                })
                .await
            }
            _ => {
                let req = v2::egret::handler::types::Request {
                    head,
                    body: body.map(|b| b.to_vec()),
                };
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_handle(store, ctx, &req).await,
                            Instance::V3(h) => h.call_handle(store, ctx, &req).await,
                            Instance::V1(_) => unreachable!("handled above"),
                        }
                        .map(GuestAction::from)
                    })
                })
                .await
            }
        };
        if let Some(state) = Some(self.store().data()) {
            if state.logs_dropped > 0 {
                tracing::warn!(
                    target: "egret_wasm::guest",
                    handler = state.handler(),
                    sandbox = state.sandbox(),
                    dropped = state.logs_dropped,
                    "handler exceeded its log line budget; lines dropped"
                );
            }
        }
        result
    }

    /// [`Session::decide`] followed by [`resolve_action`] against the secrets granted to the
    /// binding (including any the guest set in this request).
    pub async fn handle(
        &mut self,
        head: RequestHead,
        body: Option<bytes::Bytes>,
    ) -> Result<ResolvedAction, HandlerError> {
        let action = self.decide(head, body).await?;
        let state = self.store().data();
        let granted = state.granted();
        resolve_action(
            &self.ctx.handler_name,
            action,
            state.grants(),
            &granted,
            self.body_buffered,
        )
    }

    /// The response phase: the guest's raw decision on the response. `body` is given when
    /// the binding buffers responses. A 0.1.0 component passes every response unchanged.
    pub async fn respond_raw(
        &mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<bytes::Bytes>,
    ) -> Result<GuestResponseAction, HandlerError> {
        self.response_buffered = body.is_some();
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V1(_)) => Ok(GuestResponseAction::Pass(Default::default())),
            Some(_) => {
                let resp = v2::egret::handler::types::Response {
                    status,
                    headers,
                    body: body.map(|b| b.to_vec()),
                };
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_on_response(store, ctx, &resp).await,
                            Instance::V3(h) => h.call_on_response(store, ctx, &resp).await,
                            Instance::V1(_) => unreachable!("matched above"),
                        }
                        .map(GuestResponseAction::from)
                    })
                })
                .await
            }
        }
    }

    /// [`Session::respond_raw`] validated.
    pub async fn on_response(
        &mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<bytes::Bytes>,
    ) -> Result<ResolvedResponseAction, HandlerError> {
        let action = self.respond_raw(status, headers, body).await?;
        resolve_response_action(&self.ctx.handler_name, action, self.response_buffered)
    }

    /// The observe phase: a response body chunk, after it was sent.
    pub async fn chunk(&mut self, chunk: &[u8]) -> Result<(), HandlerError> {
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V1(_)) => Ok(()),
            Some(_) => {
                let chunk = chunk.to_vec();
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_on_response_chunk(store, ctx, &chunk).await,
                            Instance::V3(h) => h.call_on_response_chunk(store, ctx, &chunk).await,
                            Instance::V1(_) => unreachable!("matched above"),
                        }
                    })
                })
                .await
            }
        }
    }

    /// The observe phase: the response body ended.
    pub async fn end(&mut self) -> Result<(), HandlerError> {
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V1(_)) => Ok(()),
            Some(_) => {
                self.call(move |i, store, ctx| {
                    Box::pin(async move {
                        match i {
                            Instance::V2(h) => h.call_on_response_end(store, ctx).await,
                            Instance::V3(h) => h.call_on_response_end(store, ctx).await,
                            Instance::V1(_) => unreachable!("matched above"),
                        }
                    })
                })
                .await
            }
        }
    }

    /// The stream phase: one piece of the response body (a chunk, or a whole server-sent
    /// event) before it is sent. Only components of 0.3.0 have it; the binding's policy is
    /// checked against the component's version when the handler set is installed, so an
    /// earlier component here is the caller's mistake and is reported as one.
    pub async fn event(&mut self, event: &[u8]) -> Result<EventAction, HandlerError> {
        match self.instance.as_ref() {
            None => Err(self.closed()),
            Some(Instance::V3(_)) => {
                let event = event.to_vec();
                let action = self
                    .call(move |i, store, ctx| {
                        let Instance::V3(h) = i else {
                            unreachable!("matched above")
                        };
                        Box::pin(async move {
                            h.call_on_response_event(store, ctx, &event)
                                .await
                                .map(EventAction::from)
                        })
                    })
                    .await?;
                match action {
                    EventAction::Replace(b) if b.len() > MAX_REPLACEMENT_BODY_BYTES => {
                        Err(HandlerError::InvalidAction {
                            handler: self.ctx.handler_name.clone(),
                            reason: format!(
                                "a replaced stream event is {} bytes; at most {MAX_REPLACEMENT_BODY_BYTES}",
                                b.len()
                            ),
                        })
                    }
                    a => Ok(a),
                }
            }
            Some(_) => Err(HandlerError::InvalidAction {
                handler: self.ctx.handler_name.clone(),
                reason: format!(
                    "the stream phase needs a component of {}; this one is {}",
                    WitVersion::V0_3.world(),
                    self.wit_version().world()
                ),
            }),
        }
    }
}

/// What the stream phase decided for one piece of a response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Send it on unchanged.
    Pass,
    /// Send these bytes instead.
    Replace(bytes::Bytes),
    /// Send nothing for it.
    Drop,
}

impl From<v3::egret::handler::streaming::EventAction> for EventAction {
    fn from(a: v3::egret::handler::streaming::EventAction) -> Self {
        use v3::egret::handler::streaming::EventAction as A;
        match a {
            A::Pass => EventAction::Pass,
            A::Replace(b) => EventAction::Replace(b.into()),
            A::Drop => EventAction::Drop,
        }
    }
}

/// How an invocation went wrong, before classification.
enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
    TokioTimeout,
}

fn classify(
    f: Failure,
    state: &StoreState,
    timeout: Duration,
    memory_limit: usize,
    output: &[u8],
) -> HandlerError {
    let handler = state.handler().to_owned();
    let (err, instantiating) = match f {
        Failure::TokioTimeout => return HandlerError::Timeout { handler, timeout },
        Failure::Instantiate(e) => (e, true),
        Failure::Call(e) => (e, false),
    };
    if err.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        )
    {
        return HandlerError::Timeout { handler, timeout };
    }
    if state.limiter.memory_denied {
        return HandlerError::OutOfMemory {
            handler,
            limit_bytes: memory_limit,
        };
    }
    if instantiating {
        return HandlerError::Instantiate {
            handler,
            reason: state.redact(&format!("{err:#}")),
        };
    }
    let message = if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        match trap {
            wasmtime::Trap::StackOverflow => {
                "wasm trap: call stack exhausted (stack overflow)".to_owned()
            }
            wasmtime::Trap::UnreachableCodeReached if !output.is_empty() => {
                "wasm trap: the handler panicked or aborted".to_owned()
            }
            other => format!("wasm trap: {other}"),
        }
    } else if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!("the handler called exit({})", exit.0)
    } else {
        truncate(state.redact(&err.root_cause().to_string()), 256)
    };
    let mut detail = format!("{err:?}");
    if !output.is_empty() {
        detail.push_str("\nguest output:\n");
        detail.push_str(&String::from_utf8_lossy(output));
    }
    HandlerError::Trap {
        handler,
        message,
        detail: truncate(state.redact(&detail), MAX_TRAP_DETAIL),
    }
}

/// The sha256 of `bytes`: the key of the compiled-component caches, and as lower-case hex
/// what handlers are known by in audit events and `egret handler check`.
fn sha256(bytes: &[u8]) -> ([u8; 32], String) {
    let digest = Sha256::digest(bytes);
    (digest.into(), format!("{digest:x}"))
}

/// Interfaces egret's linker provides (versions `@0.2.x` for WASI, `@0.1.x` to `@0.3.x`
/// for egret); anything else is reported as an unknown import by name.
fn is_provided_interface(import: &str) -> bool {
    let (iface, version) = import.split_once('@').unwrap_or((import, ""));
    if iface == "egret:handler/host" || iface == "egret:handler/types" {
        return ["0.1.", "0.2.", "0.3."]
            .iter()
            .any(|v| version.starts_with(v));
    }
    if iface == "egret:handler/streaming" {
        return version.starts_with("0.3.");
    }
    let wasi = [
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:cli/",
        "wasi:filesystem/",
        "wasi:sockets/",
    ];
    wasi.iter().any(|p| iface.starts_with(p)) && version.starts_with("0.2.")
}

impl HostInner {
    /// Validates, compiles (or loads from the disk cache), links and
    /// pre-instantiates one component. Blocking.
    fn compile(
        &self,
        handler: &str,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> Result<Compiled, WasmError> {
        check_header(handler, bytes)?;
        let from_disk = self
            .artifacts
            .as_ref()
            .and_then(|a| a.load(&self.engine, sha256_hex));
        let component = match from_disk {
            Some(c) => {
                self.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => {
                let c = Component::new(&self.engine, bytes).map_err(|e| WasmError::Compile {
                    handler: handler.to_owned(),
                    reason: format!("{e:#}"),
                })?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                if let Some(a) = &self.artifacts {
                    a.store(sha256_hex, &c);
                }
                c
            }
        };
        let ty = component.component_type();
        let mut imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let mut exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        imports.sort();
        exports.sort();
        match ty.get_export(&self.engine, "handle").map(|e| e.ty) {
            None => {
                return Err(WasmError::MissingExport {
                    handler: handler.to_owned(),
                })
            }
            Some(ComponentItem::ComponentFunc(_)) => {}
            Some(_) => {
                return Err(WasmError::WrongExport {
                    handler: handler.to_owned(),
                    reason: "`handle` is not a function".into(),
                })
            }
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let reason = format!("{e:#}");
            match imports.iter().find(|i| !is_provided_interface(i)) {
                Some(import) => WasmError::UnknownImport {
                    handler: handler.to_owned(),
                    import: import.clone(),
                },
                None => match imports.iter().find(|i| reason.contains(i.as_str())) {
                    Some(import) => WasmError::ImportMismatch {
                        handler: handler.to_owned(),
                        import: import.clone(),
                        reason,
                    },
                    None => WasmError::Link {
                        handler: handler.to_owned(),
                        reason,
                    },
                },
            }
        })?;
        // A component of 0.3.0 exports the stream phase too, one of 0.2.0 the response
        // phase, one of 0.1.0 only `handle`.
        let pre = match v3::HandlerPre::new(instance_pre.clone()) {
            Ok(p) => Pre::V3(p),
            Err(e3) => match v2::HandlerPre::new(instance_pre.clone()) {
                Ok(p) => Pre::V2(p),
                Err(e2) => match v1::HandlerPre::new(instance_pre) {
                    Ok(p) => Pre::V1(p),
                    Err(e1) => {
                        return Err(WasmError::WrongExport {
                            handler: handler.to_owned(),
                            reason: format!(
                                "as egret:handler@0.3.0: {e3:#}; as egret:handler@0.2.0: {e2:#}; \
                                 as egret:handler@0.1.0: {e1:#}"
                            ),
                        })
                    }
                },
            },
        };
        let wit_version = match pre {
            Pre::V1(_) => WitVersion::V0_1,
            Pre::V2(_) => WitVersion::V0_2,
            Pre::V3(_) => WitVersion::V0_3,
        };
        Ok(Compiled {
            pre,
            info: HandlerInfo {
                sha256_hex: sha256_hex.to_owned(),
                size_bytes: bytes.len(),
                imports,
                exports,
                wit_version,
            },
        })
    }
}

/// Distinguishes "not wasm", "core module" and "component" from the header
/// before handing the bytes to the compiler, for precise messages.
fn check_header(handler: &str, bytes: &[u8]) -> Result<(), WasmError> {
    let not_wasm = |reason: String| WasmError::NotWasm {
        handler: handler.to_owned(),
        reason,
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_wasm(format!(
            "the {} bytes do not start with the WebAssembly magic `\\0asm`",
            bytes.len()
        )));
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        [1, 0, 0, 0] => Err(WasmError::CoreModule {
            handler: handler.to_owned(),
        }),
        [_, _, 1, 0] => Ok(()),
        [a, b, c, d] => Err(not_wasm(format!(
            "unsupported WebAssembly version/layer bytes {a:02x} {b:02x} {c:02x} {d:02x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_64_lower_case_digits() {
        let (hash, hex) = sha256(b"abc");
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash[..4], [0xba, 0x78, 0x16, 0xbf]);
        let (_, hex) = sha256(&[0xff; 1000]);
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}

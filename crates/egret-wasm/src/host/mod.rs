//! The handler host: one wasmtime `Engine` per process with a pooling allocator and an
//! epoch ticker; loading (compile + link + pre-instantiate) and per-request sessions under
//! memory and time limits.
//!
//! The parts, by concept: [`compile`] (component bytes to a pre-instantiated component, the
//! compiled-component caches), [`pool`] (the instance slots and the idle instances kept for
//! reuse), [`session`] (one request's instance and its phases) and [`failure`] (what went
//! wrong, as a [`HandlerError`]). The ticker that moves the epoch is in [`crate::epoch`];
//! compiled artifacts kept across restarts are in [`crate::artifact_cache`].

mod compile;
mod failure;
mod pool;
mod session;

use std::sync::Arc;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use crate::action::{GuestAction, ResolvedAction};
use crate::artifact_cache;
use crate::bindings::{v1, v2, v3};
use crate::config::{HostConfig, Limits};
use crate::epoch::EpochTicker;
use crate::kv::KvStore;
use crate::secrets::{Grants, SecretSource};
use crate::services::Services;
use crate::state::StoreState;
use crate::{HandlerError, WasmError};

pub use compile::{HandlerInfo, HostStats};
pub use pool::{SlotStats, REUSE_MAX_GROWTH_BYTES, REUSE_MAX_REQUESTS};
pub use session::{EventAction, Session};

use compile::{Compiled, Compiler};
use pool::{InstancePool, Slots};

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

impl Pre {
    fn version(&self) -> WitVersion {
        match self {
            Pre::V1(_) => WitVersion::V0_1,
            Pre::V2(_) => WitVersion::V0_2,
            Pre::V3(_) => WitVersion::V0_3,
        }
    }

    async fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Instance> {
        match self {
            Pre::V1(pre) => pre.instantiate_async(store).await.map(Instance::V1),
            Pre::V2(pre) => pre.instantiate_async(store).await.map(Instance::V2),
            Pre::V3(pre) => pre.instantiate_async(store).await.map(Instance::V3),
        }
    }
}

impl Instance {
    fn version(&self) -> WitVersion {
        match self {
            Instance::V1(_) => WitVersion::V0_1,
            Instance::V2(_) => WitVersion::V0_2,
            Instance::V3(_) => WitVersion::V0_3,
        }
    }
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
        self.compiled.pre.version()
    }

    /// Drops the idle instances and every one that comes back from now on: called when a
    /// newer policy generation took over, so its pool slots and memory are freed.
    pub fn retire_instances(&self) {
        self.pool.retire();
    }

    /// Instances waiting in the reuse pool.
    pub fn idle_instances(&self) -> usize {
        self.pool.idle_len()
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

/// Loads and runs WebAssembly handlers. Create one per process and share it
/// (e.g. in an `Arc`); it owns the engine, the instance pool and the epoch
/// ticker thread (stopped when the host is dropped).
pub struct HandlerHost {
    config: HostConfig,
    compiler: Arc<Compiler>,
    /// The pool's slots: holders, waiters, idle instances.
    slots: Arc<Slots>,
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for HandlerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerHost")
            .field("config", &self.config)
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
        let compiler = Arc::new(Compiler::new(engine, cfg.cache_dir.clone())?);
        let ticker = Arc::new(EpochTicker::start(&compiler.engine, cfg.epoch_tick)?);
        Ok(HandlerHost {
            slots: Arc::new(Slots::new(&cfg)),
            config: cfg,
            compiler,
            ticker,
        })
    }

    /// The configuration the host was created with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Instance slots in use and sessions waiting for one (read at metrics scrape time).
    pub fn slot_stats(&self) -> SlotStats {
        self.slots.stats()
    }

    /// Compile / cache counters.
    pub fn stats(&self) -> HostStats {
        self.compiler.stats()
    }

    /// Loads a handler component: hashes it, reuses an already compiled copy
    /// of the same bytes (or the on-disk artifact cache), otherwise compiles
    /// it on the blocking thread pool; then links and pre-instantiates it.
    ///
    /// Compiled copies stay in memory while some [`LoadedHandler`] uses them;
    /// unused ones are dropped at the next load.
    pub async fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedHandler>, WasmError> {
        let (compiled, sha256_hex) = self.compiler.load(name, bytes).await?;
        Ok(Arc::new(LoadedHandler {
            name: name.to_owned(),
            sha256_hex: sha256_hex.into(),
            compiled,
            pool: InstancePool::new(&self.slots),
        }))
    }

    /// Validates a component without keeping it: what `egret handler check`
    /// runs. Compiles synchronously (this blocks; do not call it on an async
    /// worker thread).
    pub fn check(&self, bytes: &[u8]) -> Result<HandlerInfo, WasmError> {
        self.compiler.check(bytes)
    }

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
        Session::start(self, h, spec).await
    }

    /// Runs the handler once on a request head, in a fresh instance, and returns the
    /// guest's raw action (use [`resolve_action`](crate::resolve_action) or [`HandlerHost::handle`] to validate it).
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

    /// [`invoke`](HandlerHost::invoke) followed by [`resolve_action`](crate::resolve_action): a head-only decision.
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

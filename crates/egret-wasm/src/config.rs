//! Host configuration and per-invocation limits.

use std::path::PathBuf;
use std::time::Duration;

/// Per-invocation limits. The defaults (50 ms, 16 MiB) suit handlers that
/// only inspect headers; the admin may raise them per handler up to the
/// host-wide [`HostConfig::max_memory_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget for instantiation plus the `handle` call.
    pub timeout: Duration,
    /// Cap on the guest's linear memory.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(50),
            memory_bytes: 16 << 20,
        }
    }
}

/// Instance slots of the pool unless configured otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// How long a session waits for a slot unless configured otherwise: long enough for slots
/// held by long responses (an LLM answer streaming for seconds) to come free, short enough
/// that a client's own timeout (typically 60 s or more) sees the refusal and its
/// `Retry-After`.
pub const DEFAULT_INSTANCE_WAIT: Duration = Duration::from_secs(30);

/// Configuration of a [`HandlerHost`](crate::HandlerHost), fixed for the
/// life of the process (the engine and its instance pool are sized from it).
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// How many handler instances may be live at once (pool size; idle instances kept for
    /// reuse count too). A session that finds every slot taken waits for one, in arrival
    /// order, up to [`HostConfig::instance_wait`]; then, or when
    /// [`HostConfig::max_instance_waiters`] already wait, it fails with
    /// [`HandlerError::Busy`](crate::HandlerError::Busy).
    pub max_instances: u32,
    /// Longest a session waits for a free instance slot.
    pub instance_wait: Duration,
    /// Sessions that may wait for a slot at once; one more is refused without waiting.
    pub max_instance_waiters: usize,
    /// Upper bound for any handler's memory cap; the pool reserves this much
    /// address space per instance slot (not 4 GiB), so keep it modest.
    pub max_memory_bytes: usize,
    /// Bound on wasm stack use: deeper recursion traps cleanly.
    pub max_wasm_stack: usize,
    /// How much of a linear memory / table the pool keeps resident (zeroed in
    /// place instead of unmapped) when a slot is reused. Small values avoid
    /// the page-table churn of `madvise` on 2+ cores without holding much RSS.
    pub keep_resident_bytes: usize,
    /// Epoch tick period: the resolution of timeouts and how often a running
    /// guest yields to the tokio scheduler.
    pub epoch_tick: Duration,
    /// Limits used by [`run_offline`](crate::run_offline) and as a reference
    /// default for callers.
    pub default_limits: Limits,
    /// Optional directory for compiled artifacts, keyed by the module's
    /// sha256 and the engine's compatibility hash.
    ///
    /// **Trust assumption:** loading a compiled artifact runs native code
    /// without validation, so the directory must be writable only by the
    /// egret process owner. [`HandlerHost::new`](crate::HandlerHost::new)
    /// creates it with mode `0700` and refuses a directory that is not owned
    /// by the current user or is group/world-writable; every artifact file is
    /// checked the same way before it is loaded. Only files written by egret
    /// itself should ever be there.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_instances: DEFAULT_MAX_INSTANCES,
            instance_wait: DEFAULT_INSTANCE_WAIT,
            max_instance_waiters: DEFAULT_MAX_INSTANCES as usize,
            max_memory_bytes: 64 << 20,
            max_wasm_stack: 512 << 10,
            keep_resident_bytes: 64 << 10,
            epoch_tick: Duration::from_millis(1),
            default_limits: Limits::default(),
            cache_dir: None,
        }
    }
}

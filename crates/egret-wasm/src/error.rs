//! Error types: [`WasmError`] for loading handlers, [`HandlerError`] for
//! running them. Every message names the handler and is safe to show to a
//! client or write to a log: no secret value ever appears in one.

use std::path::PathBuf;
use std::time::Duration;

/// Why a handler could not be loaded (or the host could not be created).
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The wasmtime engine rejected the configuration.
    #[error("creating the WebAssembly engine failed: {0}")]
    Engine(String),
    /// The compiled-artifact cache directory is unusable or untrusted.
    #[error("compiled-artifact cache directory {}: {reason}", path.display())]
    CacheDir {
        /// The configured directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The bytes are not WebAssembly at all.
    #[error("handler `{handler}`: not a WebAssembly component: {reason}")]
    NotWasm {
        /// Handler name given to `load`/`check`.
        handler: String,
        /// What was found instead.
        reason: String,
    },
    /// A core module was given where a component is required.
    #[error(
        "handler `{handler}`: not a WebAssembly component: this is a core wasm module; \
         build the handler with `cargo build --release --target wasm32-wasip2` \
         (or wrap a core module with `wasm-tools component new`)"
    )]
    CoreModule {
        /// Handler name.
        handler: String,
    },
    /// The component failed validation or compilation.
    #[error("handler `{handler}`: invalid WebAssembly component: {reason}")]
    Compile {
        /// Handler name.
        handler: String,
        /// The validator's or compiler's message.
        reason: String,
    },
    /// The component does not export `handle`.
    #[error(
        "handler `{handler}`: missing export `handle`: the component must implement the \
         world egret:handler/handler@0.1.0 (with the Rust SDK: `egret_handler::export!(my_fn)`)"
    )]
    MissingExport {
        /// Handler name.
        handler: String,
    },
    /// `handle` exists but does not have the signature of the WIT world.
    #[error(
        "handler `{handler}`: export `handle` has the wrong signature (expected \
         `handle: func(ctx: context, req: request-head) -> action` from egret:handler@0.1.0): {reason}"
    )]
    WrongExport {
        /// Handler name.
        handler: String,
        /// The type checker's message.
        reason: String,
    },
    /// The policy asks for a phase the component's WIT version does not have.
    #[error(
        "handler `{handler}`: response = {{ mode = \"{mode}\" }} needs a component of \
         egret:handler/handler@0.3.0 (it exports `on-response-event`); this one is {world}: \
         rebuild it with the current SDK, or choose another response mode"
    )]
    PhaseUnsupported {
        /// Handler name.
        handler: String,
        /// The response mode the policy asks for.
        mode: &'static str,
        /// The component's world.
        world: &'static str,
    },
    /// The component imports something egret does not provide.
    #[error(
        "handler `{handler}`: imports `{import}`, which egret does not provide (handlers may \
         import egret:handler/host@0.1.0 and the WASI 0.2 interfaces that Rust's std uses, \
         with nothing granted)"
    )]
    UnknownImport {
        /// Handler name.
        handler: String,
        /// The import's name.
        import: String,
    },
    /// The component imports a known interface with a different shape.
    #[error("handler `{handler}`: import `{import}` does not match what egret provides: {reason}")]
    ImportMismatch {
        /// Handler name.
        handler: String,
        /// The import's name.
        import: String,
        /// The linker's message.
        reason: String,
    },
    /// Linking failed for another reason.
    #[error("handler `{handler}`: cannot link the component: {reason}")]
    Link {
        /// Handler name.
        handler: String,
        /// The linker's message.
        reason: String,
    },
    /// The background compilation task died.
    #[error("handler `{handler}`: compilation task failed: {reason}")]
    Task {
        /// Handler name.
        handler: String,
        /// The join error.
        reason: String,
    },
}

/// Why one invocation of a handler failed. In every case the request must not
/// be forwarded (fail closed); `Display` is suitable for the client.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The guest trapped (panic, `unreachable`, stack overflow, exit, ...).
    #[error("handler `{handler}` failed: {message}")]
    Trap {
        /// Handler name.
        handler: String,
        /// Short reason, e.g. "wasm trap: call stack exhausted".
        message: String,
        /// Full error chain, wasm backtrace and captured guest stderr, for
        /// logs only (secret values granted to the handler are redacted).
        detail: String,
    },
    /// The guest exceeded its time budget.
    #[error("handler `{handler}` timed out after {} ms", timeout.as_millis())]
    Timeout {
        /// Handler name.
        handler: String,
        /// The budget it exceeded.
        timeout: Duration,
    },
    /// The guest tried to use more memory than its cap.
    #[error("handler `{handler}` ran out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory {
        /// Handler name.
        handler: String,
        /// The cap it hit.
        limit_bytes: usize,
    },
    /// The guest returned an action egret refuses to carry out.
    #[error("handler `{handler}` returned an invalid action: {reason}")]
    InvalidAction {
        /// Handler name.
        handler: String,
        /// Which part is invalid and why (never a secret value).
        reason: String,
    },
    /// Every instance slot stayed taken: the session waited
    /// [`HostConfig::instance_wait`](crate::HostConfig::instance_wait) (or found
    /// [`HostConfig::max_instance_waiters`](crate::HostConfig::max_instance_waiters) already
    /// waiting) and got none. Unlike the other failures this is the host's load, not the
    /// handler's fault: the request may be retried.
    #[error("{}", busy_message(handler, *limit, *waited, *queue_full))]
    Busy {
        /// Handler name.
        handler: String,
        /// The pool's slots ([`HostConfig::max_instances`](crate::HostConfig::max_instances)).
        limit: u32,
        /// How long the session waited: the whole wait bound, or zero when refused at once.
        waited: Duration,
        /// Refused without waiting: this many sessions were already waiting.
        queue_full: Option<usize>,
    },
    /// A fresh instance could not be created (e.g. the instance pool is
    /// exhausted).
    #[error("handler `{handler}` could not be instantiated: {reason}")]
    Instantiate {
        /// Handler name.
        handler: String,
        /// The instantiation error.
        reason: String,
    },
}

impl HandlerError {
    /// Stable short label for metrics: `trap`, `timeout`, `oom`,
    /// `invalid_action`, `instantiate` or `busy`.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Trap { .. } => "trap",
            HandlerError::Timeout { .. } => "timeout",
            HandlerError::OutOfMemory { .. } => "oom",
            HandlerError::InvalidAction { .. } => "invalid_action",
            HandlerError::Instantiate { .. } => "instantiate",
            HandlerError::Busy { .. } => "busy",
        }
    }

    /// The handler this error is about.
    pub fn handler(&self) -> &str {
        match self {
            HandlerError::Trap { handler, .. }
            | HandlerError::Timeout { handler, .. }
            | HandlerError::OutOfMemory { handler, .. }
            | HandlerError::InvalidAction { handler, .. }
            | HandlerError::Instantiate { handler, .. }
            | HandlerError::Busy { handler, .. } => handler,
        }
    }

    /// Log-only detail (backtrace, guest stderr) when there is any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            HandlerError::Trap { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

fn busy_message(handler: &str, limit: u32, waited: Duration, queue_full: Option<usize>) -> String {
    match queue_full {
        Some(n) => format!(
            "handler `{handler}` has no free instance: all {limit} instance slots are in use \
             and {n} requests already wait for one"
        ),
        None => format!(
            "handler `{handler}` has no free instance: all {limit} instance slots stayed in \
             use for {} ms",
            waited.as_millis()
        ),
    }
}

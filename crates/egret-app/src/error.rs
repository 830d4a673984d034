//! Why a sidecar could not be built or stopped cleanly. Each message names the thing at fault
//! (flag, file, handler) and, where it can, what to do about it: it is what an operator reads.
use std::path::PathBuf;

/// Building or running an [`crate::App`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `--sandbox-id` is not usable.
    #[error("invalid --sandbox-id {0:?}: use 1-45 characters from A-Z a-z 0-9 - _ . : @")]
    SandboxId(String),
    /// `--watch-pid` names no running process.
    #[error("--watch-pid {pid}: cannot watch that process: {source}")]
    WatchPid {
        /// The pid.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// A `--resolve` pin is malformed.
    #[error("invalid --resolve {item:?}: {why}")]
    Resolve {
        /// The flag's value.
        item: String,
        /// What is wrong with it.
        why: String,
    },
    /// The policy file could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    PolicyRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy is invalid (every problem listed, with file, line and column where known).
    #[error(transparent)]
    Policy(#[from] egret_policy::PolicyError),
    /// The `[kv]` seed of the policy is refused by the key-value store.
    #[error("invalid [kv] seed in the policy: {0}")]
    KvSeed(String),
    /// `--state-dir` cannot be used or read back.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A handler module could not be read.
    #[error(transparent)]
    Module(#[from] crate::modules::ModuleError),
    /// A handler module was refused by the handler host.
    #[error("handler {handler}: module {module} was refused: {source}")]
    Handler {
        /// The handler's name.
        handler: String,
        /// The module as the policy names it.
        module: String,
        /// Why.
        source: egret_wasm::WasmError,
    },
    /// The handler host could not be started.
    #[error("cannot start the handler host: {0}")]
    Host(egret_wasm::WasmError),
    /// Attaching to (or detaching from) the sandbox namespace failed.
    #[error(transparent)]
    Capture(#[from] egret_capture::CaptureError),
    /// The upstream trust store or the sandbox CA could not be set up.
    #[error(transparent)]
    Tls(#[from] egret_tls::TlsError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] egret_proxy::AuditError),
    /// The admin socket could not be served.
    #[error("cannot serve the admin API on {}: {source}", path.display())]
    Admin {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: egret_admin::AdminError,
    },
    /// A file egret writes for the operator (`--ca-out`, `--ready-file`, ...) failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--explicit-proxy` could not listen on its address.
    #[error("--explicit-proxy {addr}: cannot listen there: {source}")]
    ExplicitProxy {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime, a worker thread, a listener or a signal handler could not be set up.
    #[error("cannot {what}: {source}")]
    Runtime {
        /// What was being set up.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl AppError {
    pub(crate) fn runtime(what: &'static str) -> impl Fn(std::io::Error) -> AppError {
        move |source| AppError::Runtime { what, source }
    }
}

//! # egret-wasm: WebAssembly request handlers for egret
//!
//! egret lets an admin attach a *handler* to outbound HTTP traffic of a
//! sandbox: a WebAssembly component (world `egret:handler/handler@0.1.0`,
//! `handlers-wasm/wit/handler.wit`) that sees the request head and decides to
//! forward it (with header edits, secret injection by reference, a path
//! rewrite) or to answer locally. This crate is the host side:
//!
//! * [`HandlerHost`]: one wasmtime engine per process (component model,
//!   pooling allocator, epoch interruption with a 1 ms ticker thread);
//!   [`HandlerHost::load`] compiles (once per distinct module, off the async
//!   threads) and pre-instantiates; [`HandlerHost::invoke`] runs one request
//!   in a fresh instance with a memory cap and a deadline.
//! * [`resolve_action`]: validates what the guest returned and fills in
//!   secrets ([`ResolvedAction`]); [`describe_masked`] prints an action
//!   without secret values.
//! * [`SecretStore`] / [`SecretSource`], [`Grants`], [`KvStore`]: the data
//!   handlers may use through their host imports.
//! * [`run_offline`]: the logic of `egret handler run`.
//!
//! Guests get no files, no environment, no arguments, no network: only the
//! egret host imports (`log`, `has-secret`, `reveal-secret`, `kv-get`,
//! `kv-set`) and the WASI 0.2 interfaces Rust's std links against, of which
//! the wall and monotonic clocks and random numbers work; stdout/stderr are
//! captured (bounded) into debug logs; sockets and name lookup are denied.
//! Any trap, timeout or out-of-memory is a [`HandlerError`]: fail closed.
//!
//! ```no_run
//! use egret_wasm::{
//!     Grants, HandlerHost, HostConfig, Invocation, KvStore, Limits, RequestHead,
//!     ResolvedAction, SecretStore,
//! };
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let host = HandlerHost::new(HostConfig::default())?;
//! let bytes = std::fs::read("handlers-wasm/dist/inject-header.wasm")?;
//! let handler = host.load("github-auth", &bytes).await?;
//!
//! let secrets = SecretStore::new();
//! secrets.set("github-token", "ghp_example");
//! let grants = Grants::use_only(["github-token"]);
//! let kv = KvStore::new();
//! let request = RequestHead {
//!     method: "GET".into(),
//!     scheme: "https".into(),
//!     authority: "api.github.com".into(),
//!     path_with_query: "/user".into(),
//!     headers: vec![],
//! };
//! let resolved = host
//!     .handle(
//!         &handler,
//!         Invocation {
//!             handler_name: "github-auth",
//!             sandbox_id: "sb-1",
//!             params_json: r#"{"header":"authorization","secret":"github-token","template":"Bearer {}"}"#,
//!             request: &request,
//!             grants: &grants,
//!             secrets: &secrets,
//!             kv: &kv,
//!             limits: Limits::default(),
//!         },
//!     )
//!     .await?;
//! match resolved {
//!     ResolvedAction::Forward { set, .. } => { /* apply `set` to the upstream request */ }
//!     ResolvedAction::Respond { status, .. } => { /* answer the client with `status` */ }
//! }
//! # Ok(())
//! # }
//! ```

mod action;
#[cfg(feature = "runtime")]
mod artifact_cache;
/// Key/values a handler attaches to its request's audit event.
pub mod audit_fields;
#[cfg(feature = "runtime")]
mod bindings;
mod config;
#[cfg(feature = "runtime")]
mod convert;
#[cfg(feature = "runtime")]
mod epoch;
mod error;
#[cfg(feature = "runtime")]
mod host;
#[cfg(feature = "runtime")]
mod imports;
mod kv;
#[cfg(feature = "runtime")]
mod offline;
mod secrets;
mod services;
#[cfg(feature = "runtime")]
mod state;
#[cfg(feature = "runtime")]
pub mod toolchain;
mod wit_types;

pub use action::{
    describe_masked, describe_response_action, encode_secret, resolve_action,
    resolve_response_action, BasicCredentials, Encoding, Filled, ForwardSpec, GuestAction,
    GuestHeaderValue, GuestResponseAction, HeaderOp, ResolvedAction, ResolvedResponseAction,
    ResponseEdits, ResponseSpec, SecretRef, ValuePart, MAX_BODY_BYTES, MAX_HEADER_BYTES,
    MAX_HEADER_OPS, MAX_PATH_BYTES, MAX_REPLACEMENT_BODY_BYTES,
};
pub use config::{HostConfig, Limits, DEFAULT_INSTANCE_WAIT, DEFAULT_MAX_INSTANCES};
pub use error::{HandlerError, WasmError};
#[cfg(feature = "runtime")]
pub use host::{
    EventAction, HandlerHost, HandlerInfo, HostStats, Invocation, LoadedHandler, RequestHead,
    Session, SessionSpec, SlotStats, WitVersion, REUSE_MAX_GROWTH_BYTES, REUSE_MAX_REQUESTS,
};
pub use kv::{
    Clock, KvError, KvStore, SavedEntry, MAX_ENTRIES_PER_SANDBOX, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
#[cfg(feature = "runtime")]
pub use offline::{
    run as run_offline_with, run_offline, OfflineError, OfflineResponse, OfflineRun,
};
pub use secrets::{Grants, SecretSource, SecretStore, SecretValue};
pub use services::{FetchCall, FetchFuture, FetchReply, Fetcher, Services};

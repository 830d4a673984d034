//! egret's admin API: an HTTP/1.1 + JSON server on a root-only Unix socket, its typed client,
//! and the `egret ctl` command line — everything up to the [`Control`] trait, which egret-app
//! implements to apply changes to the running proxy.
//!
//! ```
//! use std::sync::Arc;
//! use egret_admin::*;
//!
//! /// A proxy that only knows its generation.
//! struct Proxy(std::sync::Mutex<u64>);
//!
//! impl Control for Proxy {
//!     fn status(&self) -> Status {
//!         Status { sandbox_id: "agent-47".into(), generation: *self.0.lock().unwrap(),
//!                  uptime_secs: 1, counters: Default::default() }
//!     }
//!     fn policy(&self) -> PolicyView {
//!         PolicyView { generation: *self.0.lock().unwrap(), policy: Default::default(),
//!                      runtime: Default::default(), secrets: vec![] }
//!     }
//!     fn apply(&self, change: Change, if_generation: Option<u64>)
//!         -> BoxFuture<'_, Result<Applied, ControlError>> {
//!         Box::pin(async move {
//!             // Validate, check the precondition and swap under one lock.
//!             let mut g = self.0.lock().unwrap();
//!             if let Some(expected) = if_generation.filter(|e| *e != *g) {
//!                 return Err(ControlError::Conflict { expected, current: *g });
//!             }
//!             let _ = change;
//!             *g += 1;
//!             Ok(Applied { generation: *g, warnings: vec![] })
//!         })
//!     }
//!     fn upload_module(&self, _: String, _: bytes::Bytes)
//!         -> BoxFuture<'_, Result<ModuleInfo, ControlError>> {
//!         Box::pin(async { Err(ControlError::Internal("no modules here".into())) })
//!     }
//!     fn modules(&self) -> Vec<ModuleInfo> { vec![] }
//!     fn ca_pem(&self) -> String { String::new() }
//!     fn metrics(&self) -> String { String::new() }
//!     fn subscribe_audit(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> { None }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("egret-admin-doc-{}", std::process::id()));
//! let socket = dir.join("sbx.sock"); // e.g. /run/egret/agent-47.sock
//! let server = serve(&socket, Arc::new(Proxy(1.into())), ServerOptions::default()).await?;
//!
//! let client = AdminClient::new(&socket);
//! let applied = client.set_internet(true, Some(1)).await?;
//! assert_eq!(applied.generation, 2);
//!
//! // A stale precondition is refused with both generations.
//! let err = client.set_internet(false, Some(1)).await.unwrap_err();
//! assert_eq!(err.code(), Some(ErrorCode::Conflict));
//!
//! server.stop().await;
//! assert!(!socket.exists());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! The endpoints are documented in `API.md` next to this crate's `Cargo.toml`; `ctl`'s exit
//! codes in [`ctl`].
//!
//! # Security
//! - The socket is `0600` from the moment it exists, and peers must be uid 0 or the server's
//!   own uid (`SO_PEERCRED`), so loosening the file mode does not open it up.
//! - Secret values are accepted (`PUT /v1/secrets/{name}`) but never returned, logged or
//!   shown in `Debug` output ([`SecretValue`]).
//! - Bodies are bounded (1 MiB JSON, 64 MiB modules) and a declared oversize body is refused
//!   before it is read.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod ask;
pub mod client;
pub mod control;
pub mod ctl;
pub mod request;
pub mod server;
pub mod shadow;

pub use api::{
    is_valid_name, ApiError, AuditFilter, ErrorCode, ErrorResponse, Health, HostListChange,
    InternetRequest, ModuleList, OutboundByHostRequest, RemoveHostsRequest, SecretList,
    SecretRequest, SecretSet,
};
pub use ask::{AskScope, Decided, PendingList, PendingQuestion};
pub use client::{AdminClient, AdminClientError, AuditStream, RawResponse};
pub use control::{
    Applied, BoxFuture, Change, Control, ControlError, ModuleInfo, PolicyView, SecretValue, Status,
};
pub use ctl::{run_ctl, CtlArgs, CtlCommand};
pub use request::{parse_head, parse_request, BodyKind, Command, Rejection, RequestHead};
pub use server::{serve, AdminError, ServerHandle, ServerOptions};
pub use shadow::{ShadowOp, ShadowView};

//! egret assembled. A [`Config`] (what `egret run` is told) is built into an [`App`]: the
//! policy loaded and compiled, the sandbox CA minted, the handlers compiled, the data path,
//! DNS and admin API set up, and the capture attached to the sandbox's network namespace.
//! [`App::run`] serves until SIGINT/SIGTERM and removes exactly what was installed.
//!
//! The library crates each own one concept (capture, DNS, TLS, policy, wasm, proxy, admin) and
//! know nothing of each other; this crate wires them: [`glue`] adapts them to each other's
//! traits, [`control`] applies admin changes as transactions, [`state`] keeps what survives a
//! restart, [`telemetry`] is the one metrics registry.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod app;
pub mod ask;
mod config;
pub mod control;
mod error;
pub mod glue;
pub mod handlers;
pub mod modules;
mod parts;
pub mod policy_source;
pub mod secrets;
pub mod state;
pub mod telemetry;

pub use app::{validate_sandbox_id, App, SANDBOX_ID_MAX};
pub use config::{
    default_workers, defaults, CaptureConfig, Config, HandlerInstances, HandlersConfig,
    PolicyInputs, ProxyConfig, TlsConfig,
};
pub use error::AppError;
pub use policy_source::{load_policy_file, DEFAULT_POLICY};

//! TLS building blocks for egret: the per-sandbox CA, the leaf certificate cache, the
//! ClientHello peek, and the rustls configurations for both sides of an intercepted connection.
//!
//! ```
//! use std::time::Duration;
//! use egret_tls::{LeafCache, LeafName, SandboxCa};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), egret_tls::TlsError> {
//! // One CA per sandbox, minted at start; the private key never leaves this process.
//! let ca = SandboxCa::generate("agent-47", Duration::from_secs(24 * 3600))?;
//! let ca_pem = ca.cert_pem(); // what the operator installs in the sandbox's trust store
//! assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//!
//! // Leaves are minted on first use and cached; a burst of connections mints once.
//! let cache = LeafCache::new(ca.into());
//! let server_config = cache.get_or_mint(&LeafName::dns("api.example.com")?).await?;
//! assert_eq!(server_config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
//!
//! // On the accept path: peek at the ClientHello without consuming it.
//! let mut sandbox_side = &b"GET / HTTP/1.1\r\n\r\n"[..];
//! let mut seen = Vec::new();
//! let peeked = egret_tls::peek::read_client_hello(&mut sandbox_side, &mut seen, 64 * 1024).await;
//! assert!(matches!(peeked, Err(egret_tls::peek::PeekError::NotTls)));
//! # Ok(())
//! # }
//! ```
//!
//! Everything here uses the *ring* crypto provider explicitly (see [`crypto_provider`]); the
//! process-wide default provider is neither consulted nor installed. The crate performs no
//! filesystem writes: it only reads CA files it is pointed at and the system trust store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bundle;
mod ca;
mod cache;
mod error;
pub mod peek;
mod roots;
mod upstream;

use std::sync::{Arc, OnceLock};

pub use bundle::{ca_bundle_pem, ca_bundle_pem_from};
pub use ca::{validate_sandbox_id, LeafName, SandboxCa, LEAF_MAX_VALIDITY, SANDBOX_ID_MAX};
pub use cache::{
    server_config_with_alpn, DownstreamAlpn, LeafCache, LeafStats, DEFAULT_LEAF_CACHE_CAPACITY,
};
pub use error::TlsError;
pub use upstream::{describe_verify_error, UpstreamAlpn, UpstreamTls};

/// ALPN protocol id for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider every config in this crate is built with: rustls' *ring* provider.
///
/// Built once and shared, so configs do not each carry a fresh copy of the cipher-suite tables.
/// It is passed explicitly to every builder rather than installed as the process default,
/// because another crate in the process may install (or already have installed) its own.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

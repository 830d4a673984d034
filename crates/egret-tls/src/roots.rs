//! The upstream trust anchors, with the system store read on first need.
//!
//! Reading the system store (`rustls-native-certs`: the bundle file, then every file of the
//! hashed directory, ~150 certificates parsed twice on Debian) was the largest piece of a
//! sidecar's start-up: ~5 ms of the ~15 ms before the attach in a release build, and 8–28 ms in
//! a debug one. Nothing needs it before the first upstream TLS handshake, so the store is read
//! once, by whichever comes first: the warm-up egret runs right after it reports ready
//! ([`crate::UpstreamTls::load_system_roots`]) or a handshake. A handshake that arrives while the
//! warm-up reads waits for it ([`OnceLock`]), so no connection is ever verified against a
//! partial store.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::TlsError;

/// The anchors: the operator's, known at start, and the system's, added when first needed.
pub(crate) struct Roots {
    /// From the operator's CA files (or all of [`crate::UpstreamTls::from_root_store`]'s).
    extra: RootCertStore,
    /// Whether the system store belongs in the set.
    with_system: bool,
    provider: Arc<CryptoProvider>,
    loaded: OnceLock<Loaded>,
}

/// The store once complete, and the verifier over it.
pub(crate) struct Loaded {
    pub store: Arc<RootCertStore>,
    pub system: usize,
    /// `Err` when the set is empty, so no upstream can be verified: why the system store gave
    /// nothing (the `details` of [`TlsError::NoRootCertificates`]).
    pub verifier: Result<Arc<WebPkiServerVerifier>, String>,
}

impl Roots {
    /// `extra`, and with `with_system` the system store, read on first need.
    pub(crate) fn new(
        extra: RootCertStore,
        with_system: bool,
        provider: Arc<CryptoProvider>,
    ) -> Roots {
        Roots {
            extra,
            with_system,
            provider,
            loaded: OnceLock::new(),
        }
    }

    /// The anchors that are not the system's.
    pub(crate) fn extra_count(&self) -> usize {
        self.extra.len()
    }

    /// The complete set, reading the system store if no one has yet.
    pub(crate) fn get(&self) -> &Loaded {
        self.loaded.get_or_init(|| self.load())
    }

    fn load(&self) -> Loaded {
        let mut store = self.extra.clone();
        let mut details = String::from("no certificates found");
        let mut system = 0;
        if self.with_system {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "problem loading system root certificates");
            }
            if !native.errors.is_empty() {
                details = native
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            let (added, ignored) = store.add_parsable_certificates(native.certs);
            if ignored > 0 {
                tracing::debug!(
                    ignored,
                    "system root certificates not usable as trust anchors"
                );
            }
            system = added;
        }
        let store = Arc::new(store);
        let verifier = if store.is_empty() {
            Err(details)
        } else {
            WebPkiServerVerifier::builder_with_provider(store.clone(), self.provider.clone())
                .build()
                .map_err(|e| e.to_string())
        };
        Loaded {
            store,
            system,
            verifier,
        }
    }
}

/// Verifies upstream certificates exactly as rustls' WebPKI verifier over [`Roots`] does, once
/// they are complete. Signatures on the handshake need no anchors, so they are checked with the
/// provider's algorithms (what `WebPkiServerVerifier` does too) without waiting for the store.
#[derive(Clone)]
pub(crate) struct LazyVerifier(pub Arc<Roots>);

impl std::fmt::Debug for LazyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyVerifier")
            .field("loaded", &self.0.loaded.get().is_some())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.0.get().verifier {
            Ok(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Err(details) => {
                let why = TlsError::NoRootCertificates {
                    details: details.clone(),
                };
                Err(rustls::Error::General(format!(
                    "{why}; name a CA file with --upstream-ca or install the system's CA \
                     certificates"
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

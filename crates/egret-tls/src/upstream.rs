//! Client-side TLS for egret's own connections to the real servers.
//!
//! Upstream certificates are always verified against the system roots plus any CA files the
//! operator names; there is deliberately no way to turn verification off, because the proxy
//! fills in credentials on these connections.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::error::TlsError;
use crate::roots::{LazyVerifier, Roots};
use crate::{ALPN_H2, ALPN_HTTP11};

/// Which ALPN protocols egret offers to an upstream server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamAlpn {
    /// `h2`, then `http/1.1` (the default).
    #[default]
    H2AndHttp11,
    /// `http/1.1` only, e.g. to forward an HTTP/1.1-only feature such as an `Upgrade`.
    Http11Only,
}

/// Verified client configs for upstream connections, built once at start.
///
/// The system roots are read when first needed (see [`UpstreamTls::load_system_roots`]); the
/// configs exist from the start and verify against the complete set.
#[derive(Clone)]
pub struct UpstreamTls {
    roots: Arc<Roots>,
    h2_and_http11: Arc<ClientConfig>,
    http11_only: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Trusts the system roots plus every certificate in `extra_ca_files` (PEM).
    ///
    /// The extra files are read and checked now: one that cannot be read, holds no
    /// certificate, or holds one that is not a usable trust anchor is an error naming the file.
    /// The system roots come from `rustls-native-certs`, which honours `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` like OpenSSL does, and are read by [`UpstreamTls::load_system_roots`] or
    /// the first upstream handshake, whichever comes first. Problems with individual system
    /// certificates are only logged: a distro bundle with one odd entry must not stop the proxy.
    pub fn new(extra_ca_files: &[PathBuf]) -> Result<UpstreamTls, TlsError> {
        let mut extra = RootCertStore::empty();
        for path in extra_ca_files {
            for (i, cert) in read_pem_certificates(path)?.into_iter().enumerate() {
                extra.add(cert).map_err(|e| TlsError::BadTrustAnchor {
                    path: path.clone(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
            }
        }
        Self::build(Roots::new(extra, true, crate::crypto_provider()))
    }

    /// Trusts exactly `roots` (no system roots); for embedding and tests.
    pub fn from_root_store(roots: RootCertStore) -> Result<UpstreamTls, TlsError> {
        if roots.is_empty() {
            return Err(TlsError::NoRootCertificates {
                details: "the given root store is empty".to_owned(),
            });
        }
        Self::build(Roots::new(roots, false, crate::crypto_provider()))
    }

    fn build(roots: Roots) -> Result<UpstreamTls, TlsError> {
        let roots = Arc::new(roots);
        let verifier = Arc::new(LazyVerifier(roots.clone()));
        let config = |alpn: UpstreamAlpn| -> Result<Arc<ClientConfig>, TlsError> {
            // `dangerous` only because the verifier is ours: it is rustls' WebPKI verifier,
            // built once the roots are complete (see `roots.rs`).
            let mut config = ClientConfig::builder_with_provider(crate::crypto_provider())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = match alpn {
                UpstreamAlpn::H2AndHttp11 => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
                UpstreamAlpn::Http11Only => vec![ALPN_HTTP11.to_vec()],
            };
            Ok(Arc::new(config))
        };
        Ok(UpstreamTls {
            h2_and_http11: config(UpstreamAlpn::H2AndHttp11)?,
            http11_only: config(UpstreamAlpn::Http11Only)?,
            roots,
        })
    }

    /// Reads the system roots now, if no handshake has yet, and says how many it found; the
    /// error says there is no root at all, so no upstream certificate can be verified.
    /// Blocks for the read (~5 ms): call it off the paths that serve.
    pub fn load_system_roots(&self) -> Result<usize, TlsError> {
        let loaded = self.roots.get();
        match &loaded.verifier {
            Ok(_) => Ok(loaded.system),
            Err(details) => Err(TlsError::NoRootCertificates {
                details: details.clone(),
            }),
        }
    }

    /// The client config offering the given ALPN protocols (an `Arc` clone).
    pub fn client_config(&self, alpn: UpstreamAlpn) -> Arc<ClientConfig> {
        match alpn {
            UpstreamAlpn::H2AndHttp11 => self.h2_and_http11.clone(),
            UpstreamAlpn::Http11Only => self.http11_only.clone(),
        }
    }

    /// The trusted roots (reads the system store if no one has yet).
    pub fn root_store(&self) -> &Arc<RootCertStore> {
        &self.roots.get().store
    }

    /// How many roots came from the system store (reads it if no one has yet).
    pub fn system_root_count(&self) -> usize {
        self.roots.get().system
    }

    /// How many roots came from the extra CA files (or [`UpstreamTls::from_root_store`]).
    pub fn extra_root_count(&self) -> usize {
        self.roots.extra_count()
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("extra_roots", &self.roots.extra_count())
            .field("roots", &LazyVerifier(self.roots.clone()))
            .finish_non_exhaustive()
    }
}

/// Reads every `CERTIFICATE` block of the PEM file at `path`; other blocks (keys, CRLs) are
/// skipped. An unreadable file, undecodable PEM, or a file without certificates is an error
/// naming `path`.
pub(crate) fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificatesInFile {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A one-line, human-readable reason for a failed upstream handshake, for logs and for the
/// error response the sandbox gets (e.g. "certificate is self-signed or issued by an unknown CA").
pub fn describe_verify_error(error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(cert_error) = error else {
        return match error {
            rustls::Error::NoCertificatesPresented => "server presented no certificate".into(),
            rustls::Error::AlertReceived(alert) => format!("server sent TLS alert {alert:?}"),
            rustls::Error::NoApplicationProtocol => {
                "server supports none of the offered ALPN protocols".into()
            }
            rustls::Error::PeerIncompatible(why) => format!("server is incompatible: {why:?}"),
            rustls::Error::PeerMisbehaved(why) => format!("server misbehaved: {why:?}"),
            rustls::Error::General(why) => why.clone(),
            other => format!("TLS error: {other}"),
        };
    };
    match cert_error {
        CertificateError::UnknownIssuer => {
            "certificate is self-signed or issued by an unknown CA (not in the trusted roots)"
                .into()
        }
        CertificateError::NotValidForName => "certificate not valid for the requested name".into(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let expected = expected.to_str();
            if presented.is_empty() {
                format!("certificate not valid for name {expected} (it names no host)")
            } else {
                format!(
                    "certificate not valid for name {expected} (it is valid for {})",
                    presented.join(", ")
                )
            }
        }
        CertificateError::Expired => "certificate has expired".into(),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "certificate expired at {} (now {})",
            utc(*not_after),
            utc(*time)
        ),
        CertificateError::NotValidYet => "certificate is not valid yet".into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "certificate is not valid until {} (now {}; check the clock)",
            utc(*not_before),
            utc(*time)
        ),
        CertificateError::Revoked => "certificate has been revoked".into(),
        CertificateError::BadSignature => "certificate signature is invalid".into(),
        CertificateError::BadEncoding => "certificate is malformed".into(),
        CertificateError::UnhandledCriticalExtension => {
            "certificate has an unsupported critical extension".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not valid for TLS server authentication (extended key usage)".into()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "certificate uses an unsupported signature algorithm".into()
        }
        other => format!("invalid certificate: {other}"),
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a certificate time.
fn utc(t: UnixTime) -> String {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        ),
        Err(_) => format!("{secs} s after the Unix epoch"),
    }
}

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
#[derive(Clone)]
pub struct UpstreamTls {
    roots: Arc<RootCertStore>,
    h2_and_http11: Arc<ClientConfig>,
    http11_only: Arc<ClientConfig>,
    system_roots: usize,
    extra_roots: usize,
}

impl UpstreamTls {
    /// Trusts the system roots plus every certificate in `extra_ca_files` (PEM).
    ///
    /// System roots come from `rustls-native-certs`, which honours `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` like OpenSSL does. An extra file that cannot be read, holds no
    /// certificate, or holds one that is not a usable trust anchor is an error naming the file.
    /// Problems with individual system certificates are only logged: a distro bundle with one
    /// odd entry must not stop the proxy.
    pub fn new(extra_ca_files: &[PathBuf]) -> Result<UpstreamTls, TlsError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "problem loading system root certificates");
        }
        let (system_roots, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!(
                ignored,
                "system root certificates not usable as trust anchors"
            );
        }

        let mut extra_roots = 0;
        for path in extra_ca_files {
            for (i, cert) in read_pem_certificates(path)?.into_iter().enumerate() {
                roots.add(cert).map_err(|e| TlsError::BadTrustAnchor {
                    path: path.clone(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
                extra_roots += 1;
            }
        }

        if roots.is_empty() {
            let details = if native.errors.is_empty() {
                "no certificates found".to_owned()
            } else {
                native
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(TlsError::NoRootCertificates { details });
        }
        tracing::debug!(system_roots, extra_roots, "upstream trust store loaded");
        Self::build(roots, system_roots, extra_roots)
    }

    /// Trusts exactly `roots` (no system roots); for embedding and tests.
    pub fn from_root_store(roots: RootCertStore) -> Result<UpstreamTls, TlsError> {
        if roots.is_empty() {
            return Err(TlsError::NoRootCertificates {
                details: "the given root store is empty".to_owned(),
            });
        }
        let extra = roots.len();
        Self::build(roots, 0, extra)
    }

    fn build(
        roots: RootCertStore,
        system_roots: usize,
        extra_roots: usize,
    ) -> Result<UpstreamTls, TlsError> {
        let roots = Arc::new(roots);
        let config = |alpn: UpstreamAlpn| -> Result<Arc<ClientConfig>, TlsError> {
            let mut config = ClientConfig::builder_with_provider(crate::crypto_provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
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
            system_roots,
            extra_roots,
        })
    }

    /// The client config offering the given ALPN protocols (an `Arc` clone).
    pub fn client_config(&self, alpn: UpstreamAlpn) -> Arc<ClientConfig> {
        match alpn {
            UpstreamAlpn::H2AndHttp11 => self.h2_and_http11.clone(),
            UpstreamAlpn::Http11Only => self.http11_only.clone(),
        }
    }

    /// The trusted roots.
    pub fn root_store(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// How many roots came from the system store.
    pub fn system_root_count(&self) -> usize {
        self.system_roots
    }

    /// How many roots came from the extra CA files (or [`UpstreamTls::from_root_store`]).
    pub fn extra_root_count(&self) -> usize {
        self.extra_roots
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("system_roots", &self.system_roots)
            .field("extra_roots", &self.extra_roots)
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

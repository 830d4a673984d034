//! The error type shared by the CA, the leaf cache and the upstream configs.
//!
//! Variants are precise on purpose (in the style of `rustls::Error`): the binary turns them into
//! operator-facing startup errors, and the proxy into per-connection log lines, so each one must
//! say what was wrong and with which input (path, name, index) without further context.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Errors from building the CA, minting leaves, or loading trust anchors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The requested CA validity is too short to be usable.
    #[error("invalid CA validity {0:?}: must be at least one minute")]
    InvalidValidity(Duration),

    /// The sandbox id cannot be put in the CA subject.
    #[error("invalid sandbox id {id:?}: {reason}")]
    InvalidSandboxId {
        /// The id as given.
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A leaf was requested for a name that cannot appear in a certificate SAN.
    #[error("invalid leaf name {name:?}: {reason}")]
    InvalidLeafName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The CA's validity period has ended, so no more leaves can be issued under it.
    #[error("sandbox CA expired; no leaf can be issued under it")]
    CaExpired,

    /// rcgen failed to generate a key or to build/sign a certificate.
    #[error("certificate generation failed: {0}")]
    CertGeneration(#[from] rcgen::Error),

    /// rustls refused a key, certificate or configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),

    /// A CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    ReadCaFile {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A CA file was read but contained no certificate.
    #[error(
        "no certificates found in {}: expected PEM 'BEGIN CERTIFICATE' blocks",
        path.display()
    )]
    NoCertificatesInFile {
        /// The file without certificates.
        path: PathBuf,
    },

    /// A CA file contained a PEM section that could not be decoded.
    #[error("invalid PEM in {}: {reason}", path.display())]
    InvalidPem {
        /// The offending file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },

    /// A certificate from a CA file was decoded but cannot serve as a trust anchor.
    #[error(
        "certificate #{index} in {} cannot be used as a trust anchor: {reason}",
        path.display()
    )]
    BadTrustAnchor {
        /// The offending file.
        path: PathBuf,
        /// 1-based position of the certificate within the file.
        index: usize,
        /// Why webpki refused it.
        reason: String,
    },

    /// There is not a single trusted root: upstream verification could never succeed.
    #[error("no trusted root certificates: system store gave none ({details}) and no extra CA files were given")]
    NoRootCertificates {
        /// What the system store loader reported.
        details: String,
    },
}

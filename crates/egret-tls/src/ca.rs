//! The per-sandbox certificate authority and leaf issuance.
//!
//! Each sandbox gets its own CA, generated in memory at start and never written anywhere, so a
//! certificate minted for one sandbox is meaningless to every other one. Leaves are minted on
//! demand for the names the sandbox connects to (see [`crate::LeafCache`] for caching).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::error::TlsError;

/// Upper bound on a leaf's validity, whatever the CA's.
///
/// 397 days stays under the 398-day cap that Chrome and Safari apply to server certificates, so
/// a long-lived CA never produces a leaf some client refuses for its lifetime alone. Cached leaves
/// are re-minted before they expire (see [`crate::LeafCache`]).
pub const LEAF_MAX_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

/// Backdating of `notBefore`: a sandbox clock slightly behind ours must not see "not yet valid".
const CLOCK_SKEW: time::Duration = time::Duration::hours(1);

/// Shortest CA validity accepted by [`SandboxCa::generate`].
const MIN_CA_VALIDITY: Duration = Duration::from_secs(60);

/// The longest sandbox id: `"egret sandbox CA ("` + id + `")"` must fit X.509's 64-character
/// limit on a common name.
pub const SANDBOX_ID_MAX: usize = 64 - "egret sandbox CA ()".len();

/// The name a leaf certificate is issued for: a DNS name or an IP address.
///
/// Use [`LeafName::dns`] or [`LeafName::parse`] to build one from untrusted input; they validate
/// and normalise (lowercase, no trailing dot). Names built directly with the variants are
/// normalised and validated again when a leaf is issued, so the cache never holds two entries for
/// `Example.COM` and `example.com`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name; becomes a `dNSName` SAN.
    Dns(String),
    /// An IP address (connections without SNI); becomes an `iPAddress` SAN.
    Ip(IpAddr),
}

impl LeafName {
    /// Validates and normalises a DNS name: one trailing dot is dropped, ASCII is lowercased,
    /// wildcards and IP literals are refused.
    pub fn dns(name: &str) -> Result<Self, TlsError> {
        let invalid = |reason| TlsError::InvalidLeafName {
            name: name.to_owned(),
            reason,
        };
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Err(invalid("empty name"));
        }
        if trimmed.contains('*') {
            return Err(invalid("wildcards are not issued"));
        }
        if trimmed.parse::<IpAddr>().is_ok() {
            return Err(invalid("an IP literal is not a DNS name; use LeafName::Ip"));
        }
        let lower = trimmed.to_ascii_lowercase();
        if rustls_pki_types::DnsName::try_from(lower.as_str()).is_err() {
            return Err(invalid("not a valid DNS name"));
        }
        Ok(LeafName::Dns(lower))
    }

    /// Parses an IP literal (bare, or an IPv6 literal in brackets) or else a DNS name.
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        match unbracketed.parse::<IpAddr>() {
            Ok(ip) => Ok(LeafName::Ip(ip.to_canonical())),
            Err(_) => LeafName::dns(name),
        }
    }

    /// Returns the canonical form of this name, or why it cannot be put in a certificate.
    ///
    /// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports for an
    /// IPv4 peer) become plain IPv4: the client dialled the IPv4 address and verifies against it.
    pub fn normalized(&self) -> Result<LeafName, TlsError> {
        match self {
            LeafName::Dns(name) => LeafName::dns(name),
            LeafName::Ip(ip) => Ok(LeafName::Ip(ip.to_canonical())),
        }
    }
}

impl From<IpAddr> for LeafName {
    fn from(ip: IpAddr) -> Self {
        LeafName::Ip(ip)
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafName::Dns(name) => f.write_str(name),
            LeafName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// An ephemeral certificate authority for one sandbox.
///
/// The private keys (the CA's and the shared leaf key) exist only inside this value and the
/// [`CertifiedKey`]s it issues: there is no supported accessor for them, nothing here writes
/// them anywhere, and `Debug` redacts them.
pub struct SandboxCa {
    sandbox_id: String,
    /// The CA's distinguished name and signing key, as rcgen needs them to sign leaves.
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// One key pair for every leaf of this CA.
    ///
    /// Minting is on the connection path (first connection to a new name waits for it), so it
    /// should be one signature, not a key generation plus a private-key parse. Sharing the key
    /// loses nothing: all leaves already stand or fall with the CA key next to it in the same
    /// memory, and no leaf outlives the process. Distinct random serials keep the leaves
    /// distinguishable (rcgen would otherwise derive the serial from the public key, giving every
    /// leaf the same issuer+serial, which Firefox/NSS rejects).
    leaf_key: KeyPair,
    leaf_signing_key: Arc<dyn SigningKey>,
}

impl SandboxCa {
    /// Generates a CA for `sandbox_id`, valid from one hour ago (clock skew) until `validity`
    /// from now.
    ///
    /// The certificate is ECDSA P-256 with subject `CN=egret sandbox CA (<sandbox_id>), O=egret`,
    /// `basicConstraints` CA with path length 0 (it can sign leaves, never intermediates), key
    /// usage keyCertSign + cRLSign + digitalSignature and a random serial.
    pub fn generate(sandbox_id: &str, validity: Duration) -> Result<SandboxCa, TlsError> {
        validate_sandbox_id(sandbox_id)?;
        if validity < MIN_CA_VALIDITY {
            return Err(TlsError::InvalidValidity(validity));
        }
        let now = now_utc_seconds();
        let not_after = time::Duration::try_from(validity)
            .ok()
            .and_then(|v| now.checked_add(v))
            // X.509 GeneralizedTime stops at year 9999.
            .filter(|t| t.year() <= 9999)
            .ok_or(TlsError::InvalidValidity(validity))?;
        let not_before = now - CLOCK_SKEW;

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            DnValue::Utf8String(format!("egret sandbox CA ({sandbox_id})")),
        );
        dn.push(
            DnType::OrganizationName,
            DnValue::Utf8String("egret".to_owned()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&ca_key)?;
        let cert_der = cert.der().clone();
        let cert_pem = cert.pem();
        let issuer = Issuer::new(params, ca_key);

        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf_signing_key =
            crate::crypto_provider()
                .key_provider
                .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    leaf_key.serialize_der(),
                )))?;

        Ok(SandboxCa {
            sandbox_id: sandbox_id.to_owned(),
            issuer,
            cert_der,
            cert_pem,
            not_before,
            not_after,
            leaf_key,
            leaf_signing_key,
        })
    }

    /// The sandbox this CA belongs to.
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    /// The CA certificate, PEM-encoded (what goes into the sandbox's trust store).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Start of the CA's validity (one hour before generation).
    pub fn not_before(&self) -> SystemTime {
        self.not_before.into()
    }

    /// End of the CA's validity; no leaf is valid past it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after.into()
    }

    /// Issues a leaf certificate for `name`, signed by this CA, with the shared leaf key.
    ///
    /// The leaf has a single SAN (`dNSName` or `iPAddress`), extended key usage serverAuth,
    /// `basicConstraints` CA:false, a random serial, and a validity inside the CA's (at most
    /// [`LEAF_MAX_VALIDITY`]). The chain holds the leaf only: clients trust the CA directly.
    pub fn issue_leaf(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, TlsError> {
        self.issue_leaf_until(name).map(|(key, _)| key)
    }

    /// Like [`SandboxCa::issue_leaf`], also returning the leaf's `notAfter` so the cache knows
    /// when to re-mint.
    pub(crate) fn issue_leaf_until(
        &self,
        name: &LeafName,
    ) -> Result<(Arc<CertifiedKey>, SystemTime), TlsError> {
        let name = name.normalized()?;
        let now = now_utc_seconds();
        if now >= self.not_after {
            return Err(TlsError::CaExpired);
        }
        let not_before = (now - CLOCK_SKEW).max(self.not_before);
        let not_after = time::Duration::try_from(LEAF_MAX_VALIDITY)
            .ok()
            .and_then(|v| now.checked_add(v))
            .map_or(self.not_after, |t| t.min(self.not_after));

        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        // Replace rcgen's default "rcgen self signed cert" subject. Clients match on the SAN;
        // the CN is only for humans reading the certificate, and must fit 64 characters.
        let mut dn = DistinguishedName::new();
        let display = name.to_string();
        if display.len() <= 64 {
            dn.push(DnType::CommonName, DnValue::Utf8String(display));
        }
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match &name {
            LeafName::Dns(dns) => SanType::DnsName(dns.clone().try_into()?),
            LeafName::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(&self.leaf_key, &self.issuer)?;
        let key = CertifiedKey::new(vec![cert.der().clone()], self.leaf_signing_key.clone());
        Ok((Arc::new(key), not_after.into()))
    }

    /// The CA private key as PKCS#8 PEM, **for leak tests only**: end-to-end tests search logs,
    /// files and traffic for this string to prove the key never leaves the process. Not part of
    /// the supported API; never call it from product code.
    #[doc(hidden)]
    pub fn key_pem_for_leak_tests(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The shared leaf private key as PKCS#8 PEM, **for leak tests only** (see
    /// [`SandboxCa::key_pem_for_leak_tests`]).
    #[doc(hidden)]
    pub fn leaf_key_pem_for_leak_tests(&self) -> String {
        self.leaf_key.serialize_pem()
    }
}

impl fmt::Debug for SandboxCa {
    // Hand-written so that no derive can ever print the key pairs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxCa")
            .field("sandbox_id", &self.sandbox_id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("keys", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Checks a sandbox id: 1 to [`SANDBOX_ID_MAX`] characters from `A-Z a-z 0-9 - _ . : @`.
///
/// The one rule for every entry point (`--sandbox-id`, the OCI annotation, the CA subject):
/// the length comes from the CA's common name, the character set keeps the id safe in log
/// fields, file names (`/run/egret/<id>`) and the nft table comment.
pub fn validate_sandbox_id(id: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidSandboxId {
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("empty"));
    }
    if id.len() > SANDBOX_ID_MAX {
        return Err(invalid(
            "longer than 45 characters (the CA common name is limited to 64)",
        ));
    }
    if !id
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.:@".contains(&c))
    {
        return Err(invalid("use only the characters A-Z a-z 0-9 - _ . : @"));
    }
    Ok(())
}

/// Current UTC time truncated to whole seconds, the resolution X.509 stores, so the validity
/// we compare against is exactly the one in the certificate.
fn now_utc_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - time::Duration::nanoseconds(i64::from(now.nanosecond()))
}

/// A random, positive, 16-byte serial number from the ring RNG.
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    crate::crypto_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Rustls(rustls::Error::FailedToGetRandomBytes))?;
    // Positive and without a leading zero octet, so the DER INTEGER is exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    Ok(SerialNumber::from_slice(&bytes))
}

//! The CA bundle handed to the sandbox: the system roots followed by the egret CA.
//!
//! Tools that take a single bundle file (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//! `NODE_EXTRA_CA_CERTS` aside) replace the system store rather than extend it; giving them
//! system roots + egret CA keeps hosts that are spliced (not intercepted) verifiable. This module
//! only builds the text: writing it is the caller's job (egret-app, egret-oci).

use std::path::Path;

use crate::ca::SandboxCa;

/// Where Debian, Ubuntu, Alpine and Arch keep the system bundle.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The system roots as PEM, followed by the egret CA certificate.
///
/// The system part is the first that works of: the file named by `SSL_CERT_FILE`, then
/// `/etc/ssl/certs/ca-certificates.crt`, then the certificates `rustls-native-certs` finds,
/// PEM-encoded. If none yields anything, the bundle holds the egret CA alone.
pub fn ca_bundle_pem(ca: &SandboxCa) -> String {
    let env_file = std::env::var_os("SSL_CERT_FILE");
    let candidates = env_file
        .as_deref()
        .map(Path::new)
        .into_iter()
        .chain([Path::new(SYSTEM_BUNDLE)]);
    for path in candidates {
        if let Some(bundle) = read_bundle(path) {
            return ca_bundle_pem_from(&bundle, ca);
        }
    }
    let native = rustls_native_certs::load_native_certs();
    let mut system = String::new();
    for cert in &native.certs {
        system.push_str(&pem_encode("CERTIFICATE", cert));
    }
    ca_bundle_pem_from(&system, ca)
}

/// `system_pem` followed by the egret CA certificate, with exactly one newline between them.
pub fn ca_bundle_pem_from(system_pem: &str, ca: &SandboxCa) -> String {
    let mut bundle = String::with_capacity(system_pem.len() + ca.cert_pem().len() + 64);
    bundle.push_str(system_pem);
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(&format!("# egret sandbox CA ({})\n", ca.sandbox_id()));
    bundle.push_str(ca.cert_pem());
    if !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle
}

/// A readable, UTF-8 bundle file containing at least one certificate.
fn read_bundle(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.contains("-----BEGIN CERTIFICATE-----").then_some(text)
}

/// RFC 7468 PEM: base64 in 64-column lines.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextet = |shift: u32| ALPHABET[((n >> shift) & 63) as usize];
        b64.push(sextet(18));
        b64.push(sextet(12));
        b64.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        b64.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // The alphabet is ASCII, so each line is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use std::time::Duration;

    #[test]
    fn pem_encoding_round_trips() {
        let ca = SandboxCa::generate("bundle", Duration::from_secs(3600)).unwrap();
        let pem = pem_encode("CERTIFICATE", ca.cert_der());
        assert_eq!(pem, ca.cert_pem().replace("\r\n", "\n"));
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(&back, ca.cert_der());
        for len in 0..8 {
            let der: Vec<u8> = (0..len).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            let back = CertificateDer::from_pem_slice(pem.as_bytes());
            if len > 0 {
                assert_eq!(back.unwrap().as_ref(), &der[..]);
            }
        }
    }

    #[test]
    fn bundle_ends_with_the_egret_ca() {
        let ca = SandboxCa::generate("bundle", Duration::from_secs(3600)).unwrap();
        let system = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let bundle = ca_bundle_pem_from(system, &ca);
        assert!(bundle.starts_with(system));
        assert!(bundle.ends_with(ca.cert_pem()));
        assert!(bundle.contains("-----END CERTIFICATE-----\n# egret sandbox CA (bundle)\n"));

        let full = ca_bundle_pem(&ca);
        assert!(full.ends_with(ca.cert_pem()));
        assert!(!full.contains("PRIVATE KEY"));
    }
}

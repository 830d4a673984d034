//! Upstream client configs: extra CA files, error messages, verification.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{CertificateError, RootCertStore};

use egret_tls::{
    describe_verify_error, LeafCache, LeafName, SandboxCa, TlsError, UpstreamAlpn, UpstreamTls,
};

use crate::common::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A file under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "egret-tls-test-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn extra_ca_file_is_trusted() {
    // An "internal" upstream whose certificate chains to a private CA.
    let internal = Arc::new(SandboxCa::generate("internal-ca", DAY).unwrap());
    let server = LeafCache::new(internal.clone())
        .get_or_mint(&LeafName::dns("git.internal.test").unwrap())
        .await
        .unwrap();

    let file = TempFile::new(internal.cert_pem().as_bytes());
    let upstream = UpstreamTls::new(std::slice::from_ref(&file.0)).unwrap();
    assert_eq!(upstream.extra_root_count(), 1);

    // The first handshakes come before anything read the system store: they read it.
    let client = upstream.client_config(UpstreamAlpn::H2AndHttp11);
    assert_eq!(
        client.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let outcome = handshake(server.clone(), client, dns("git.internal.test"))
        .await
        .unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(&b"h2"[..]));

    let http11 = upstream.client_config(UpstreamAlpn::Http11Only);
    assert_eq!(http11.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let outcome = handshake(server, http11, dns("git.internal.test"))
        .await
        .unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(&b"http/1.1"[..]));

    assert_eq!(
        upstream.root_store().len(),
        upstream.system_root_count() + 1
    );
    assert_eq!(
        upstream.load_system_roots().unwrap(),
        upstream.system_root_count()
    );
}

#[tokio::test]
async fn without_the_extra_ca_the_server_is_refused() {
    let internal = Arc::new(SandboxCa::generate("internal-ca", DAY).unwrap());
    let server = LeafCache::new(internal)
        .get_or_mint(&LeafName::dns("git.internal.test").unwrap())
        .await
        .unwrap();
    // Trust some unrelated CA only, so the test does not depend on the machine's store.
    let unrelated = SandboxCa::generate("unrelated", DAY).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(unrelated.cert_der().clone()).unwrap();
    let upstream = UpstreamTls::from_root_store(roots).unwrap();
    let err = handshake(
        server,
        upstream.client_config(UpstreamAlpn::H2AndHttp11),
        dns("git.internal.test"),
    )
    .await
    .err()
    .unwrap();
    let reason = describe_verify_error(rustls_error(&err));
    assert!(
        reason.contains("self-signed or issued by an unknown CA"),
        "{reason}"
    );
}

#[test]
fn file_errors_name_the_path() {
    let missing = PathBuf::from("/nonexistent/egret/ca.pem");
    let err = UpstreamTls::new(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(err, TlsError::ReadCaFile { .. }));
    assert!(
        err.to_string().contains("/nonexistent/egret/ca.pem"),
        "{err}"
    );

    for contents in [
        &b""[..],
        b"just some text\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ] {
        let file = TempFile::new(contents);
        let err = UpstreamTls::new(std::slice::from_ref(&file.0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no certificates found in {}: expected PEM 'BEGIN CERTIFICATE' blocks",
                file.0.display()
            )
        );
    }

    let file = TempFile::new(b"-----BEGIN CERTIFICATE-----\nAAAA\n");
    let err = UpstreamTls::new(std::slice::from_ref(&file.0)).unwrap_err();
    assert!(matches!(err, TlsError::InvalidPem { .. }), "{err}");
    assert!(err.to_string().contains(&*file.0.to_string_lossy()));

    // Decodes as PEM, but is not a certificate.
    let file = TempFile::new(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let err = UpstreamTls::new(std::slice::from_ref(&file.0)).unwrap_err();
    assert!(
        matches!(err, TlsError::BadTrustAnchor { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&*file.0.to_string_lossy()));

    assert!(matches!(
        UpstreamTls::from_root_store(RootCertStore::empty()),
        Err(TlsError::NoRootCertificates { .. })
    ));
}

#[test]
fn verify_errors_read_well() {
    use rustls::Error;
    let cases = [
        (
            Error::InvalidCertificate(CertificateError::Expired),
            "expired",
        ),
        (
            Error::InvalidCertificate(CertificateError::ExpiredContext {
                time: rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                    1_700_000_000,
                )),
                not_after: rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                    1_600_000_000,
                )),
            }),
            "expired at 2020-09-13 12:26:40 UTC",
        ),
        (
            Error::InvalidCertificate(CertificateError::NotValidYet),
            "not valid yet",
        ),
        (
            Error::InvalidCertificate(CertificateError::BadSignature),
            "signature",
        ),
        (
            Error::InvalidCertificate(CertificateError::InvalidPurpose),
            "server authentication",
        ),
        (Error::NoCertificatesPresented, "no certificate"),
        (Error::General("boom".into()), "boom"),
    ];
    for (error, expected) in cases {
        let text = describe_verify_error(&error);
        assert!(text.contains(expected), "{error:?} -> {text}");
    }
}

//! Real TLS handshakes against leaves from the cache, over in-memory pipes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::CertificateError;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use egret_tls::peek::{read_client_hello, PrefixedIo, DEFAULT_MAX_CLIENT_HELLO};
use egret_tls::{describe_verify_error, DownstreamAlpn, LeafCache, LeafName, SandboxCa};

use crate::common::*;

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn cache(id: &str) -> LeafCache {
    LeafCache::new(Arc::new(SandboxCa::generate(id, DAY).unwrap()))
}

#[tokio::test]
async fn client_trusting_the_ca_verifies_and_gets_h2() {
    let cache = cache("sbx-1");
    let server = cache
        .get_or_mint(&LeafName::dns("a.test").unwrap())
        .await
        .unwrap();
    let client = client_trusting(cache.ca(), &[H2, H1]);
    let outcome = handshake(server.clone(), client, dns("a.test"))
        .await
        .unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(H2));
    assert_eq!(outcome.peer_certs.len(), 1);

    // A client that only speaks HTTP/1.1 gets it; one without ALPN gets none.
    let outcome = handshake(
        server.clone(),
        client_trusting(cache.ca(), &[H1]),
        dns("a.test"),
    )
    .await
    .unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(H1));
    let outcome = handshake(server, client_trusting(cache.ca(), &[]), dns("a.test"))
        .await
        .unwrap();
    assert_eq!(outcome.alpn, None);
}

#[tokio::test]
async fn http11_only_config_never_negotiates_h2() {
    let cache = cache("sbx-1");
    let server = cache
        .get_or_mint_with(
            &LeafName::dns("a.test").unwrap(),
            DownstreamAlpn::Http11Only,
        )
        .await
        .unwrap();
    assert_eq!(server.alpn_protocols, vec![H1.to_vec()]);
    let outcome = handshake(
        server,
        client_trusting(cache.ca(), &[H2, H1]),
        dns("a.test"),
    )
    .await
    .unwrap();
    assert_eq!(outcome.alpn.as_deref(), Some(H1));
    assert_eq!(
        cache.stats().mints,
        1,
        "both ALPN variants come from one mint"
    );
}

#[tokio::test]
async fn another_sandboxs_ca_is_not_trusted() {
    let ours = cache("sbx-1");
    let theirs = SandboxCa::generate("sbx-2", DAY).unwrap();
    let server = ours
        .get_or_mint(&LeafName::dns("a.test").unwrap())
        .await
        .unwrap();
    let err = handshake(server, client_trusting(&theirs, &[H2]), dns("a.test"))
        .await
        .err()
        .expect("a client of another sandbox's CA must reject the leaf");
    let rustls_err = rustls_error(&err);
    assert!(matches!(
        rustls_err,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    ));
    assert!(describe_verify_error(rustls_err).contains("unknown CA"));
}

#[tokio::test]
async fn leaf_is_only_valid_for_its_name() {
    let cache = cache("sbx-1");
    let server = cache
        .get_or_mint(&LeafName::dns("a.test").unwrap())
        .await
        .unwrap();
    let err = handshake(server, client_trusting(cache.ca(), &[H2]), dns("b.test"))
        .await
        .err()
        .unwrap();
    let reason = describe_verify_error(rustls_error(&err));
    assert!(reason.contains("not valid for name b.test"), "{reason}");
    assert!(reason.contains("a.test"), "{reason}");
}

#[tokio::test]
async fn ip_leaf_verifies_as_ip_address() {
    let cache = cache("sbx-1");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let server = cache.get_or_mint(&LeafName::Ip(ip)).await.unwrap();
    let name = ServerName::IpAddress(ip.into());
    let outcome = handshake(server.clone(), client_trusting(cache.ca(), &[H2, H1]), name)
        .await
        .unwrap();
    let (_, cert) = X509Certificate::from_der(&outcome.peer_certs[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::IPAddress(&[127, 0, 0, 1])]
    );

    // The same leaf is not valid for another address.
    let other = ServerName::IpAddress(Ipv4Addr::new(127, 0, 0, 2).into());
    assert!(handshake(server, client_trusting(cache.ca(), &[]), other)
        .await
        .is_err());
}

/// The proxy's accept path end to end: peek the hello, mint for its SNI, replay the peeked bytes
/// into the TLS server.
#[tokio::test]
async fn peek_then_intercept() {
    let cache = Arc::new(cache("sbx-1"));
    let client_config = client_trusting(cache.ca(), &[H2, H1]);
    let (client_io, mut server_io) = tokio::io::duplex(64 * 1024);

    let proxy = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let hello = read_client_hello(&mut server_io, &mut buf, DEFAULT_MAX_CLIENT_HELLO)
                .await
                .unwrap();
            let sni = hello.sni.clone().unwrap();
            let config = cache
                .get_or_mint(&LeafName::dns(&sni).unwrap())
                .await
                .unwrap();
            let io = PrefixedIo::new(Bytes::from(buf), server_io);
            let mut tls = TlsAcceptor::from(config).accept(io).await.unwrap();
            let mut req = [0u8; 5];
            tls.read_exact(&mut req).await.unwrap();
            tls.write_all(b"hello").await.unwrap();
            tls.shutdown().await.unwrap();
            (hello, tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        })
    };

    let mut tls = TlsConnector::from(client_config)
        .connect(dns("Svc.Example.test"), client_io)
        .await
        .unwrap();
    tls.write_all(b"howdy").await.unwrap();
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp).await.unwrap();
    assert_eq!(resp, b"hello");

    let (hello, alpn) = proxy.await.unwrap();
    assert_eq!(hello.sni.as_deref(), Some("svc.example.test"));
    assert_eq!(alpn.as_deref(), Some(H2));
}

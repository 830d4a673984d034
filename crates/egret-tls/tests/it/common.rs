//! Shared helpers: real rustls ClientHellos, crafted ClientHellos, and in-memory handshakes.

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use egret_tls::SandboxCa;

/// A client config trusting exactly `roots`, offering `alpn`.
pub(crate) fn client_config(
    roots: &[&CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(egret_tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config trusting only `ca`.
pub(crate) fn client_trusting(ca: &SandboxCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config(&[ca.cert_der()], alpn)
}

/// The first flight of a real rustls client: the ClientHello, as bytes on the wire.
pub(crate) fn rustls_client_hello(name: ServerName<'static>, alpn: &[&[u8]]) -> Vec<u8> {
    let ca = SandboxCa::generate("hello", std::time::Duration::from_secs(3600)).unwrap();
    let mut conn = ClientConnection::new(client_trusting(&ca, alpn), name).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

pub(crate) fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

/// Re-frames the handshake bytes carried by `wire` into records of at most `chunk` bytes.
pub(crate) fn reframe(wire: &[u8], chunk: usize) -> Vec<u8> {
    let mut handshake = Vec::new();
    let mut pos = 0;
    while pos + 5 <= wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[pos + 3], wire[pos + 4]]));
        handshake.extend_from_slice(&wire[pos + 5..pos + 5 + len]);
        pos += 5 + len;
    }
    records(&handshake, chunk)
}

/// Wraps handshake bytes in handshake records of at most `chunk` bytes each.
pub(crate) fn records(handshake: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in handshake.chunks(chunk) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn with_u16_len(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// `server_name` extension data with the given host_name entries.
pub(crate) fn sni_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(0);
        list.extend_from_slice(&with_u16_len(name));
    }
    with_u16_len(&list)
}

/// ALPN extension data.
pub(crate) fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend_from_slice(p);
    }
    with_u16_len(&list)
}

/// A syntactically valid ClientHello handshake message (no record header) with `extensions`.
pub(crate) fn crafted_hello_message(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    let mut exts = Vec::new();
    for (typ, data) in extensions {
        exts.extend_from_slice(&typ.to_be_bytes());
        exts.extend_from_slice(&with_u16_len(data));
    }
    body.extend_from_slice(&with_u16_len(&exts));
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// A crafted ClientHello in a single record.
pub(crate) fn crafted_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    records(&crafted_hello_message(extensions), 1 << 14)
}

/// What the client saw after a handshake.
pub(crate) struct ClientOutcome {
    pub alpn: Option<Vec<u8>>,
    pub peer_certs: Vec<CertificateDer<'static>>,
}

/// Runs a handshake over an in-memory pipe and exchanges one message each way. Returns the
/// client's view, or the client's error.
pub(crate) async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<ClientOutcome, std::io::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_task = tokio::spawn(async move {
        let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(buf)
    });
    let client_result = async {
        let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        let (_, conn) = tls.get_ref();
        Ok::<_, std::io::Error>(ClientOutcome {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certs: conn
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        })
    }
    .await;
    let server_result = server_task.await.unwrap();
    if client_result.is_ok() {
        assert_eq!(&server_result.unwrap(), b"ping");
    }
    client_result
}

/// The rustls error inside an I/O error from tokio-rustls.
pub(crate) fn rustls_error(e: &std::io::Error) -> &rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {e:?}"))
}

//! An RFC 8441 WebSocket client for tests/tests/e2e/protocols/websocket.rs: TLS with ALPN h2
//! only, one h2 `CONNECT` stream with `:protocol websocket`, then RFC 6455 frames on that stream.
//! It prints one line per step (`STATUS`, `FIRST`, `PINGPONG-OK`, ...) for the test to check.
use bytes::Bytes;
use clap::Parser;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Parser, Debug)]
struct Args {
    /// CA certificate (PEM) to trust: egret's `--ca-out`.
    #[arg(long)]
    ca: std::path::PathBuf,
    /// Host to connect to (port 443) and to put in `:authority`.
    #[arg(long)]
    host: String,
    #[arg(long, default_value = "/ws")]
    path: String,
    /// client-close (end the stream without a close frame), server-close (ask the server to
    /// close) or close-frame (send a close frame and wait for the echo).
    #[arg(long)]
    mode: String,
    /// The `:protocol` pseudo-header.
    #[arg(long, default_value = "websocket")]
    protocol: String,
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, op: u8, payload: &[u8]) -> std::io::Result<()> {
    // Clients mask every frame (RFC 6455 §5.3); the mask need not be secret here.
    let mask: [u8; 4] = [0x5a, 0x13, 0xc4, 0x7e];
    let mut h = vec![0x80 | op];
    match payload.len() {
        n if n < 126 => h.push(0x80 | n as u8),
        n if n < 65536 => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            h.push(0x80 | 127);
            h.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    h.extend_from_slice(&mask);
    h.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    w.write_all(&h).await?;
    w.flush().await
}

async fn recv<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await?;
    let len = match h[1] & 0x7f {
        126 => r.read_u16().await? as u64,
        127 => r.read_u64().await?,
        n => n as u64,
    };
    check_len(len)?;
    let mut p = vec![0u8; len as usize];
    r.read_exact(&mut p).await?;
    Ok((h[0] & 0x0f, p))
}

fn check_len(len: u64) -> std::io::Result<()> {
    if len > 64 << 20 {
        return Err(std::io::Error::other("frame too large"));
    }
    Ok(())
}

/// Whether the stream ends (EOF) within 5 s, as text for the test.
async fn eof_within<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut b = [0u8; 16];
    let t = Instant::now();
    match tokio::time::timeout(Duration::from_secs(5), r.read(&mut b)).await {
        Ok(Ok(0)) => "true".to_string(),
        Ok(Ok(n)) => format!("false: {n} more bytes"),
        Ok(Err(e)) => format!("false: {e}"),
        Err(_) => format!("timeout after {:?}", t.elapsed()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect((args.host.as_str(), 443)).await?;
    let name = rustls_pki_types::ServerName::try_from(args.host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    anyhow::ensure!(
        tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        "the server did not choose h2"
    );
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("h2 connection: {e}");
        }
    });
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{}{}", args.host, args.path))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())?;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from(args.protocol.as_str()));
    let resp = sender.send_request(req).await?;
    println!("STATUS {}", resp.status().as_u16());
    if !resp.status().is_success() {
        let body = resp.into_body().collect().await?.to_bytes();
        println!("BODY {}", String::from_utf8_lossy(&body).trim());
        return Ok(());
    }
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await?);
    let (op, p) = recv(&mut ws).await?;
    println!("FIRST {op} {}", String::from_utf8_lossy(&p));
    // ping-pong: each message must come back before the next is sent (no buffering either way)
    for i in 0..20 {
        let m = format!("msg {i}");
        send(&mut ws, 1, m.as_bytes()).await?;
        let (op, p) = recv(&mut ws).await?;
        anyhow::ensure!(op == 1 && p == m.as_bytes(), "echo {i}: op {op} {p:?}");
    }
    println!("PINGPONG-OK");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    send(&mut ws, 2, &big).await?;
    let (op, p) = recv(&mut ws).await?;
    println!("BIG-OK {}", op == 2 && p == big);
    send(&mut ws, 9, b"are you there").await?;
    let (op, p) = recv(&mut ws).await?;
    println!("PONG {op} {}", String::from_utf8_lossy(&p));
    match args.mode.as_str() {
        "client-close" => {
            // END_STREAM on this stream only; the h2 connection stays up, so what the upstream
            // sees next is the stream's close, not the TCP connection's.
            ws.shutdown().await?;
            println!("CLIENT-CLOSED");
            println!("EOF-AFTER-CLOSE {}", eof_within(&mut ws).await);
        }
        "server-close" => {
            send(&mut ws, 1, b"close-from-server").await?;
            let (op, p) = recv(&mut ws).await?;
            println!("SERVER-CLOSE {op} {}", u16::from_be_bytes([p[0], p[1]]));
            println!("EOF-AFTER-CLOSE {}", eof_within(&mut ws).await);
        }
        "close-frame" => {
            send(&mut ws, 8, &1000u16.to_be_bytes()).await?;
            let (op, p) = recv(&mut ws).await?;
            println!("CLOSE-ECHO {op} {}", u16::from_be_bytes([p[0], p[1]]));
            println!("EOF-AFTER-CLOSE {}", eof_within(&mut ws).await);
        }
        m => anyhow::bail!("unknown --mode {m}"),
    }
    // A second stream on the same connection still works: closing one WebSocket did not take
    // the h2 connection down.
    let req = Request::builder()
        .uri(format!("https://{}/echo", args.host))
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    println!("SAME-CONN-AFTER {}", resp.status().as_u16());
    Ok(())
}

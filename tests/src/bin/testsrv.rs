//! The upstream test server the end-to-end tests run inside the upstream namespace: HTTP/1.1
//! (keep-alive), h2c with prior knowledge, and TLS (h2 + http/1.1) on the ports it is given,
//! with an access log the tests read to prove what did, or did not, reach the upstream.
//!
//! Routes: `/echo` (JSON of method, path, host, version, headers), `/bytes/N` (N bytes of a
//! deterministic stream), `/sha/N` (sha256 of that stream), `/upload` (sha256 and length of the
//! body), `/slow/MS` (answers after MS milliseconds), `/status/N`.
use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Parser, Debug)]
struct Args {
    /// Plain HTTP listen addresses (h1 + h2c).
    #[arg(long)]
    http: Vec<SocketAddr>,
    /// TLS listen addresses (needs --cert/--key).
    #[arg(long)]
    https: Vec<SocketAddr>,
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// Access log file.
    #[arg(long)]
    log: std::path::PathBuf,
    /// Server-speaks-first TCP listeners: send a banner line, then echo (ssh/db-like).
    #[arg(long)]
    banner: Vec<SocketAddr>,
    /// Name reported in /echo.
    #[arg(long, default_value = "upstream")]
    name: String,
    /// Written once every listener is bound.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

type Body = BoxBody<Bytes, std::io::Error>;

struct State {
    log: Mutex<std::fs::File>,
    name: String,
}

/// The deterministic byte stream served by /bytes/N: block i is sha256(i) repeated.
fn block(i: u64) -> Vec<u8> {
    let d = Sha256::digest(i.to_le_bytes());
    d.iter().cycle().take(64 * 1024).copied().collect()
}

fn stream_bytes(n: u64) -> Body {
    let s = futures_util::stream::unfold((0u64, n), |(i, left)| async move {
        if left == 0 {
            return None;
        }
        let mut b = block(i);
        b.truncate(left.min(b.len() as u64) as usize);
        let len = b.len() as u64;
        Some((
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(b))),
            (i + 1, left - len),
        ))
    });
    StreamBody::new(s).boxed()
}

fn sha_of_stream(n: u64) -> String {
    let mut h = Sha256::new();
    let (mut i, mut left) = (0u64, n);
    while left > 0 {
        let mut b = block(i);
        b.truncate(left.min(b.len() as u64) as usize);
        left -= b.len() as u64;
        h.update(&b);
        i += 1;
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<State>,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
) -> Result<Response<Body>, std::io::Error> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    {
        let mut f = st.log.lock().unwrap();
        let _ = writeln!(
            f,
            "{} {} {} host={} peer={} tls={} version={:?}",
            st.name,
            req.method(),
            req.uri().path(),
            host,
            peer,
            tls,
            req.version()
        );
        let _ = f.flush();
    }
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp = match parts.as_slice() {
        ["echo", ..] => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "server": st.name, "method": req.method().as_str(), "path": req.uri().path_and_query().map(|p| p.as_str()),
                "host": host, "version": format!("{:?}", req.version()), "headers": headers, "peer": peer.to_string(), "local": local.ip().to_canonical().to_string(), "tls": tls,
            });
            let mut r = text(StatusCode::OK, body.to_string());
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        ["bytes", n] => match n.parse::<u64>() {
            Ok(n) => {
                let mut r = Response::new(stream_bytes(n));
                r.headers_mut().insert("content-length", n.into());
                r
            }
            Err(_) => text(StatusCode::BAD_REQUEST, "bad n".into()),
        },
        ["sha", n] => match n.parse::<u64>() {
            Ok(n) => text(StatusCode::OK, sha_of_stream(n)),
            Err(_) => text(StatusCode::BAD_REQUEST, "bad n".into()),
        },
        ["upload", ..] => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(std::io::Error::other)?;
                if let Ok(d) = frame.into_data() {
                    len += d.len() as u64;
                    h.update(&d);
                }
            }
            text(StatusCode::OK, format!("{} {len}", hex(&h.finalize())))
        }
        ["slow", ms] => {
            let ms: u64 = ms.parse().unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms}\n"))
        }
        ["status", n] => text(
            StatusCode::from_u16(n.parse().unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            String::new(),
        ),
        _ => text(StatusCode::OK, format!("hello from {}\n", st.name)),
    };
    Ok(resp)
}

async fn serve_conn<I>(io: I, st: Arc<State>, peer: SocketAddr, local: SocketAddr, tls: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(req, st.clone(), peer, local, tls));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let st = Arc::new(State {
        log: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&args.log)?,
        ),
        name: args.name.clone(),
    });
    let mut tasks = Vec::new();
    for a in &args.http {
        let l = bind(*a)?;
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let local = s.local_addr().unwrap_or(peer);
                tokio::spawn(serve_conn(s, st.clone(), peer, local, false));
            }
        }));
    }
    if !args.https.is_empty() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs =
            rustls_pki_types::CertificateDer::pem_file_iter(args.cert.as_ref().expect("--cert"))?
                .collect::<Result<Vec<_>, _>>()?;
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_file(args.key.as_ref().expect("--key"))?;
        use rustls_pki_types::pem::PemObject;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        for a in &args.https {
            let l = bind(*a)?;
            let st = st.clone();
            let acceptor = acceptor.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, peer)) = l.accept().await else {
                        continue;
                    };
                    // Small TLS records + Nagle + delayed ACK would add ~40 ms per handshake.
                    let _ = s.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let st = st.clone();
                    let local = s.local_addr().unwrap_or(peer);
                    tokio::spawn(async move {
                        if let Ok(t) = acceptor.accept(s).await {
                            serve_conn(t, st, peer, local, true).await;
                        }
                    });
                }
            }));
        }
    }
    for a in &args.banner {
        let l = bind(*a)?;
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, peer)) = l.accept().await else {
                    continue;
                };
                {
                    let mut f = st.log.lock().unwrap();
                    let _ = writeln!(f, "{} BANNER-CONN peer={}", st.name, peer);
                }
                tokio::spawn(async move {
                    let _ = s.write_all(b"SSH-2.0-egret-test-banner\r\n").await;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }));
    }
    if let Some(r) = &args.ready_file {
        std::fs::write(r, b"ready")?;
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

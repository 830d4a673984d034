//! The upstream test server the end-to-end tests run inside the upstream namespace: HTTP/1.1
//! (keep-alive), h2c with prior knowledge, and TLS (h2 + http/1.1) on the ports it is given,
//! with an access log the tests read to prove what did, or did not, reach the upstream.
//!
//! Routes: `/echo` (JSON of method, path, host, version, headers), `/bytes/N` (N bytes of a
//! deterministic stream), `/sha/N` (sha256 of that stream), `/upload` (sha256 and length of the
//! body), `/slow/MS` (answers after MS milliseconds), `/status/N`, `/redirect/HOST` (302 to
//! `http://HOST/redirected`), `/echo-split?header=NAME&enc=raw|base64|percent` (the request
//! header NAME, encoded, reflected in the body `reflected=VALUE;` sent in two writes that cut
//! the value in the middle, with a `content-length`: the echo guard's cross-chunk case).
//!
//! Protocol routes (tests/tests/e2e/protocols/): `/ws` (WebSocket echo; needs `x-auth-token`,
//! sends `auth=VALUE` first; `close-from-server` makes it close; `/ws/bad-accept` answers a wrong
//! `Sec-WebSocket-Accept`), `/sse/COUNT/MS` (an event every MS
//! with the send time in µs), `/barrier/KEY/N` (answers once N requests for KEY are in flight),
//! `/grpc/{unary,stream/N,error}` (gRPC framing with trailers), `/chunked/N`, `/etag`,
//! `/altsvc/{mixed,h3only}`, `/gzip/N` (the /bytes/N stream gzip-encoded).
//!
//! Service routes (the real services that handler examples talk to; each logs a line a test can
//! count, never a secret or a token value):
//! * `POST /oauth/token`: OAuth 2.0 token endpoint ([`oauth`]); `client_credentials` (RFC 6749
//!   §4.4) and token exchange (RFC 8693) for the `--oauth-client ID:SECRET` clients, by HTTP
//!   Basic or form fields; tokens live `--oauth-expires-in` seconds. `/oauth/resource[/…]` (any
//!   method) takes only a live `Bearer` token; `POST /oauth/revoke-all` revokes every token.
//!   Logs `TOKEN-ISSUED n=K client=ID grant=G`, `TOKEN-DENIED error=E client=ID`,
//!   `RESOURCE-OK n=K client=ID`, `RESOURCE-401 reason=expired|revoked|unknown|missing`,
//!   `TOKENS-REVOKED count=N`; the token values only go to `--oauth-token-file`, if given.
//! * `POST /v1/chat/completions`: an OpenAI-style chat API ([`llm`]) that echoes the last user
//!   message, with deterministic `usage` (prompt tokens: whitespace-separated words of every
//!   message's text; completion tokens: min(max_tokens or 16, 16)); `stream: true` answers SSE,
//!   one event a write every `--sse-delay-ms`, the usage in the last chunk before `[DONE]`.
//!   Logs `LLM model=M prompt_tokens=P completion_tokens=C stream=B max_tokens=N|none
//!   include_usage=B` (`LLM-REJECTED status=S reason=R` for a refused request).
//! * `PUT|GET|HEAD|DELETE /s3/BUCKET/KEY`: an S3 object store ([`s3`]) that verifies AWS
//!   Signature V4 (`Authorization` header; signed or `UNSIGNED-PAYLOAD` payload) for the
//!   `--s3-key ID:SECRET` keys in `--s3-region`. Logs `S3-OK method=M key=BUCKET/KEY status=S
//!   bytes=N payload=signed|unsigned` and `S3-DENIED reason=R method=M key=BUCKET/KEY`.
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

// The service routes' modules, in testsrv/: without a path they would be looked for in src/bin/,
// where every file is a binary of its own.
#[path = "testsrv/llm.rs"]
mod llm;
#[path = "testsrv/oauth.rs"]
mod oauth;
#[path = "testsrv/s3.rs"]
mod s3;

#[derive(Parser, Debug)]
struct Args {
    /// Plain HTTP listen addresses (h1 + h2c).
    #[arg(long)]
    http: Vec<SocketAddr>,
    /// TLS listen addresses (needs --cert/--key, or --pki-dir).
    #[arg(long)]
    https: Vec<SocketAddr>,
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// Instead of --cert/--key: make a throw-away CA and a leaf for --name in this directory
    /// (NAME-ca.pem is what egret's --upstream-ca must trust), so that a script needs no
    /// certificate tooling of its own (scripts/demo.sh).
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    pki_dir: Option<std::path::PathBuf>,
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
    /// Add ` NAME=present|absent` to each request's access-log line (tests/tests/e2e/security/
    /// crash.rs: proves every request that reached the upstream passed the injecting handler).
    #[arg(long)]
    log_header: Option<String>,
    /// An OAuth client `/oauth/token` accepts (repeatable).
    #[arg(long, value_name = "ID:SECRET", value_parser = id_secret)]
    oauth_client: Vec<(String, String)>,
    /// Lifetime of the access tokens `/oauth/token` issues.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    oauth_expires_in: u64,
    /// Append every access token `/oauth/token` issues to this file (`N TOKEN` lines), so a
    /// test can prove a client never saw one.
    #[arg(long, value_name = "PATH")]
    oauth_token_file: Option<std::path::PathBuf>,
    /// Pause between the events of a streamed `/v1/chat/completions` answer.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    sse_delay_ms: u64,
    /// `/v1/chat/completions` requires `Authorization: Bearer KEY` (by default, no key).
    #[arg(long, value_name = "KEY")]
    llm_api_key: Option<String>,
    /// An S3 access key `/s3/` accepts Signature V4 requests from (repeatable).
    #[arg(long, value_name = "ACCESS_KEY_ID:SECRET", value_parser = id_secret)]
    s3_key: Vec<(String, String)>,
    /// The region `/s3/` expects in the credential scope.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    s3_region: String,
}

/// `ID:SECRET` (split at the first colon).
fn id_secret(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((id, secret)) if !id.is_empty() => Ok((id.to_string(), secret.to_string())),
        _ => Err(format!("expected ID:SECRET, got {s:?}")),
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

struct State {
    log: Mutex<std::fs::File>,
    name: String,
    barriers: Mutex<std::collections::HashMap<String, usize>>,
    barrier_notify: tokio::sync::Notify,
    log_header: Option<String>,
    oauth: oauth::OAuth,
    llm: llm::Llm,
    s3: s3::S3,
}

impl State {
    fn log_line(&self, line: &str) {
        let mut f = self.log.lock().unwrap();
        let _ = writeln!(f, "{} {line}", self.name);
        let _ = f.flush();
    }
}

/// The deterministic byte stream served by /bytes/N: block i is sha256(i) repeated.
/// Built with slice copies: a byte iterator here is unoptimised in the tests' debug build and
/// made hashing 1 GiB take ~15 s on a loaded machine (the client's timeout).
fn block(i: u64) -> Vec<u8> {
    let d = Sha256::digest(i.to_le_bytes());
    let mut b = Vec::with_capacity(64 * 1024);
    while b.len() < 64 * 1024 {
        b.extend_from_slice(&d);
    }
    b
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
    format!("{:x}", h.finalize())
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// A JSON response.
fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = text(status, v.to_string());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// The whole request body.
async fn read_body(body: Incoming) -> Result<Bytes, std::io::Error> {
    Ok(body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes())
}

/// RFC 3986 percent-decoding; with `plus`, `+` is a space too (form bodies). A `%` not followed
/// by two hex digits stays as it is.
fn percent_decode(s: &str, plus: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_at = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match b[i] {
            b'%' => match (hex_at(i + 1), hex_at(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `application/x-www-form-urlencoded` pairs, decoded, in order (a name without `=` has an
/// empty value).
fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| String::from_utf8_lossy(&percent_decode(x, true)).into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

/// `n` random bytes (the kernel's) as unpadded url-safe base64.
fn random_id(n: usize) -> String {
    use base64::Engine;
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A value for an access-log field: white space and control characters become `_`, so that a
/// line still splits on spaces.
fn log_value(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A request header as text (lossy), if present.
fn header_str(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
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
        let marker = st.log_header.as_deref().map_or(String::new(), |h| {
            let seen = if req.headers().contains_key(h) {
                "present"
            } else {
                "absent"
            };
            format!(" {h}={seen}")
        });
        let _ = writeln!(
            f,
            "{} {} {} host={} peer={} tls={} version={:?}{marker}",
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
    let head = req.method() == http::Method::HEAD;
    let resp = if is_protocol_route(&parts) {
        protocol_route(&parts, req, &st).await?
    } else if let Some(r) = service_route(&parts) {
        match r {
            Service::OAuth => oauth::route(&parts, req, &st).await?,
            Service::Llm => llm::route(req, &st).await?,
            Service::S3 => s3::route(&parts, req, &st, &host).await?,
        }
    } else {
        basic_route(&parts, req, &st, host, peer, local, tls).await?
    };
    if head {
        // HEAD: the headers of the GET (Content-Length included), no body. hyper's h2 server
        // would send the body otherwise.
        let (p, _) = resp.into_parts();
        return Ok(Response::from_parts(
            p,
            http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
        ));
    }
    Ok(resp)
}

/// The service routes (see the module doc), each in its own module.
enum Service {
    OAuth,
    Llm,
    S3,
}

fn service_route(parts: &[&str]) -> Option<Service> {
    match parts {
        ["oauth", ..] => Some(Service::OAuth),
        ["v1", "chat", "completions"] => Some(Service::Llm),
        ["s3", ..] => Some(Service::S3),
        _ => None,
    }
}

async fn basic_route(
    parts: &[&str],
    req: Request<Incoming>,
    st: &Arc<State>,
    host: String,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
) -> Result<Response<Body>, std::io::Error> {
    let resp = match *parts {
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
            // What arrived, as digests: the echo guard masks credentials in `headers`, so tests
            // prove the upstream got the right value through these.
            let headers_sha256: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        format!("{:x}", Sha256::digest(v.as_bytes())).into(),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "server": st.name, "method": req.method().as_str(), "path": req.uri().path_and_query().map(|p| p.as_str()),
                "host": host, "version": format!("{:?}", req.version()), "headers": headers,
                "headers_sha256": headers_sha256, "peer": peer.to_string(),
                "local": local.ip().to_canonical().to_string(), "tls": tls,
            });
            let echoed_token = req.headers().get("x-auth-token").cloned();
            let mut r = text(StatusCode::OK, body.to_string());
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            // Echo an injected credential back in a response header too (redaction tests).
            if let Some(v) = echoed_token {
                r.headers_mut().insert("x-echoed-token", v);
            }
            r
        }
        ["echo-split"] => echo_split(&req),
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
            text(StatusCode::OK, format!("{:x} {len}", h.finalize()))
        }
        ["slow", ms] => {
            let ms: u64 = ms.parse().unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms}\n"))
        }
        ["redirect", target] => {
            // 302 to another host: a proxy that followed it would request /redirected there.
            let mut r = text(StatusCode::FOUND, String::new());
            if let Ok(v) = format!("http://{target}/redirected").parse() {
                r.headers_mut().insert("location", v);
            }
            r
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

/// `/echo-split?header=NAME&enc=raw|base64|percent`: the header's value (encoded: standard
/// base64, or percent-encoded with RFC 3986 unreserved bytes kept) reflected as
/// `reflected=VALUE;`, in two body writes 30 ms apart that split VALUE in its middle, with a
/// `content-length` for the whole.
fn echo_split(req: &Request<Incoming>) -> Response<Body> {
    use base64::Engine;
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        form_pairs(query)
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    };
    let header = param("header").unwrap_or_else(|| "x-auth-token".into());
    let value = req
        .headers()
        .get(header.as_str())
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let encoded = match param("enc").as_deref().unwrap_or("raw") {
        "base64" => base64::engine::general_purpose::STANDARD
            .encode(&value)
            .into_bytes(),
        "percent" => value
            .iter()
            .flat_map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    vec![b]
                } else {
                    format!("%{b:02X}").into_bytes()
                }
            })
            .collect(),
        _ => value,
    };
    let mut body = b"reflected=".to_vec();
    let cut = body.len() + encoded.len() / 2;
    body.extend_from_slice(&encoded);
    body.push(b';');
    let len = body.len();
    let second = Bytes::from(body.split_off(cut));
    let first = Bytes::from(body);
    let s = futures_util::stream::unfold(0u8, move |i| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            match i {
                0 => Some((Frame::data(first), 1)),
                1 => {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    Some((Frame::data(second), 2))
                }
                _ => None,
            }
        }
    });
    let mut r = Response::new(frames_body(s));
    r.headers_mut().insert("content-length", len.into());
    r.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    r
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
        barriers: Mutex::new(Default::default()),
        barrier_notify: tokio::sync::Notify::new(),
        log_header: args.log_header.clone(),
        oauth: match &args.oauth_token_file {
            Some(path) => oauth::OAuth::new(&args.oauth_client, args.oauth_expires_in)
                .with_token_file(path)?,
            None => oauth::OAuth::new(&args.oauth_client, args.oauth_expires_in),
        },
        llm: llm::Llm::new(args.sse_delay_ms, args.llm_api_key.clone()),
        s3: s3::S3::new(&args.s3_key, &args.s3_region),
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
        let (cert, key) = match &args.pki_dir {
            Some(dir) => {
                let pki = egret_e2e::upstream_pki(dir, &args.name, &[&args.name]);
                (pki.cert, pki.key)
            }
            None => (
                args.cert.clone().expect("--cert"),
                args.key.clone().expect("--key"),
            ),
        };
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&cert)?
            .collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key)?;
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

// ---------------------------------------------------------------------------------------------
// Protocol routes (tests/tests/e2e/protocols/)

fn is_protocol_route(parts: &[&str]) -> bool {
    matches!(
        parts.first().copied(),
        Some(
            "ws" | "sse"
                | "barrier"
                | "grpc"
                | "chunked"
                | "etag"
                | "altsvc"
                | "gzip"
                | "gzip-always"
        )
    )
}

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn frames_body(s: impl futures_util::Stream<Item = Frame<Bytes>> + Send + Sync + 'static) -> Body {
    use futures_util::StreamExt;
    BodyExt::boxed(StreamBody::new(s.map(Ok::<_, std::io::Error>)))
}

async fn protocol_route(
    parts: &[&str],
    req: Request<Incoming>,
    st: &Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    let resp = match *parts {
        ["ws"] => ws_upgrade(req, st.clone()),
        ["ws", "bad-accept"] => {
            // A broken server: 101 with an accept value for some other key.
            let mut r = ws_upgrade(req, st.clone());
            if r.status() == StatusCode::SWITCHING_PROTOCOLS {
                r.headers_mut().insert(
                    "sec-websocket-accept",
                    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
                );
            }
            r
        }
        ["sse", count, ms] => {
            let count: u64 = count.parse().unwrap_or(10);
            let ms: u64 = ms.parse().unwrap_or(500);
            let s = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= count {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                let ev = format!("id: {i}\ndata: {}\n\n", now_micros());
                Some((Frame::data(Bytes::from(ev)), i + 1))
            });
            let mut r = Response::new(frames_body(s));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r.headers_mut()
                .insert("cache-control", "no-cache".parse().unwrap());
            r
        }
        ["barrier", key, n] => {
            // Answers once N requests with this key are in flight at the same time: proof of
            // concurrency that does not depend on timing.
            let n: usize = n.parse().unwrap_or(1);
            let key = key.to_string();
            let arrived = {
                let mut b = st.barriers.lock().unwrap();
                let c = b.entry(key.clone()).or_insert(0);
                *c += 1;
                *c
            };
            st.barrier_notify.notify_waiters();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut seen = arrived;
            while seen < n {
                let notified = st.barrier_notify.notified();
                seen = *st.barriers.lock().unwrap().get(&key).unwrap_or(&0);
                if seen >= n {
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(text(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("only {seen} of {n} arrived\n"),
                    ));
                }
            }
            text(StatusCode::OK, format!("released {key} {n}\n"))
        }
        ["grpc", ..] => grpc(parts, req).await?,
        ["chunked", n] => {
            let n: u64 = n.parse().unwrap_or(5);
            let s = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Some((Frame::data(Bytes::from(format!("chunk {i}\n"))), i + 1))
            });
            Response::new(frames_body(s))
        }
        ["etag"] => {
            let matches = req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == b"\"v1\"");
            let mut r = if matches {
                text(StatusCode::NOT_MODIFIED, String::new())
            } else {
                text(StatusCode::OK, "versioned body\n".into())
            };
            r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
            r
        }
        ["altsvc", kind] => {
            let v = match kind {
                "h3only" => r#"h3=":443"; ma=86400"#,
                _ => r#"h3=":443"; ma=86400, h2="alt.test:443"; ma=60, h3-29=":443"; ma=86400"#,
            };
            let mut r = text(StatusCode::OK, "alternatives\n".into());
            r.headers_mut().insert("alt-svc", v.parse().unwrap());
            r
        }
        // `/gzip/N` encodes only for a client that accepts gzip (as servers do); `/gzip-always/N`
        // ignores `accept-encoding` (a broken server).
        [route @ ("gzip" | "gzip-always"), n] => {
            let accepts = req.headers().get_all("accept-encoding").iter().any(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .to_ascii_lowercase()
                    .contains("gzip")
            });
            let n: u64 = n.parse().unwrap_or(1000);
            let mut plain = Vec::with_capacity(n as usize);
            let mut i = 0;
            while (plain.len() as u64) < n {
                let b = block(i);
                let take = (n - plain.len() as u64).min(b.len() as u64) as usize;
                plain.extend_from_slice(&b[..take]);
                i += 1;
            }
            if route == "gzip" && !accepts {
                let mut r = text(StatusCode::OK, String::new());
                r.headers_mut().insert(
                    "x-sha256-plain",
                    egret_e2e::sha256_hex(&plain).parse().unwrap(),
                );
                *r.body_mut() = Full::new(Bytes::from(plain))
                    .map_err(|e| match e {})
                    .boxed();
                return Ok(r);
            }
            let gz = gzip_stored(&plain);
            let mut r = Response::new(
                Full::new(Bytes::from(gz.clone()))
                    .map_err(|e| match e {})
                    .boxed(),
            );
            let h = r.headers_mut();
            h.insert("content-encoding", "gzip".parse().unwrap());
            h.insert("content-type", "application/octet-stream".parse().unwrap());
            h.insert(
                "x-sha256-encoded",
                egret_e2e::sha256_hex(&gz).parse().unwrap(),
            );
            h.insert(
                "x-sha256-plain",
                egret_e2e::sha256_hex(&plain).parse().unwrap(),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "no such protocol route\n".into()),
    };
    Ok(resp)
}

/// A gzip member with "stored" deflate blocks: valid gzip (any client decodes it), no deps.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// gRPC framing over HTTP/2: 5-byte prefix (compressed flag + big-endian length) per message,
/// status in trailers. `unary` answers `pong:<request message>`, `stream/N` sends N messages,
/// `error` sends none and grpc-status 7.
async fn grpc(parts: &[&str], req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let is_grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let te = req
        .headers()
        .get("te")
        .is_some_and(|v| v.as_bytes() == b"trailers");
    let auth = req
        .headers()
        .get("x-auth-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if !is_grpc || !te || req.version() != http::Version::HTTP_2 {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            format!(
                "not gRPC: content-type ok={is_grpc} te:trailers={te} version={:?}\n",
                req.version()
            ),
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    let body = body.to_bytes();
    let request_msg = if body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body[5..(5 + len).min(body.len())].to_vec()
    } else {
        Vec::new()
    };
    let msg = |m: &[u8]| -> Frame<Bytes> {
        let mut v = vec![0u8];
        v.extend_from_slice(&(m.len() as u32).to_be_bytes());
        v.extend_from_slice(m);
        Frame::data(Bytes::from(v))
    };
    let trailers = |status: &str, message: &str| -> Frame<Bytes> {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", status.parse().unwrap());
        t.insert("grpc-message", message.parse().unwrap());
        t.insert(
            "x-custom-trailer",
            format!("auth-len-{}", auth.len()).parse().unwrap(),
        );
        Frame::trailers(t)
    };
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    match parts {
        ["grpc", "unary"] => {
            let mut m = b"pong:".to_vec();
            m.extend_from_slice(&request_msg);
            frames.push(msg(&m));
            frames.push(trailers("0", "ok"));
        }
        ["grpc", "stream", n] => {
            let n: usize = n.parse().unwrap_or(3);
            for i in 0..n {
                frames.push(msg(format!("item-{i}").as_bytes()));
            }
            frames.push(trailers("0", "streamed"));
        }
        _ => frames.push(trailers("7", "permission denied by upstream")),
    }
    let s = futures_util::stream::unfold(frames.into_iter(), |mut it| async move {
        let f = it.next()?;
        // space the messages so a buffering proxy would show up as one lump
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        Some((f, it))
    });
    let mut r = Response::new(frames_body(s));
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    Ok(r)
}

/// WebSocket (RFC 6455) upgrade: requires `x-auth-token` (the credential egret injects).
fn ws_upgrade(mut req: Request<Incoming>, st: Arc<State>) -> Response<Body> {
    use base64::Engine;
    use sha1::Digest as _;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "no sec-websocket-key\n".into());
    };
    let Some(auth) = req
        .headers()
        .get("x-auth-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    else {
        st.log_line("WS-REFUSED no x-auth-token");
        return text(StatusCode::UNAUTHORIZED, "missing x-auth-token\n".into());
    };
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on.await {
            Ok(up) => ws_echo(TokioIo::new(up), auth, &st).await,
            Err(e) => st.log_line(&format!("WS-UPGRADE-FAILED {e}")),
        }
    });
    let mut r = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    r
}

async fn ws_write<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    fin: bool,
    op: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut h = vec![(u8::from(fin) << 7) | op];
    match payload.len() {
        n if n < 126 => h.push(n as u8),
        n if n < 65536 => {
            h.push(126);
            h.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            h.push(127);
            h.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    w.write_all(&h).await?;
    w.write_all(payload).await?;
    w.flush().await
}

async fn ws_read<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(bool, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await?;
    let fin = h[0] & 0x80 != 0;
    let op = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => r.read_u16().await? as u64,
        127 => r.read_u64().await?,
        n => n as u64,
    };
    if len > 64 << 20 {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut p = vec![0u8; len as usize];
    r.read_exact(&mut p).await?;
    if masked {
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((fin, op, p))
}

async fn ws_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    auth: String,
    st: &State,
) {
    use tokio::io::AsyncWriteExt;
    st.log_line("WS-OPEN");
    if ws_write(&mut s, true, 1, format!("auth={auth}").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    loop {
        match ws_read(&mut s).await {
            Ok((_, 8, p)) => {
                let _ = ws_write(&mut s, true, 8, &p).await;
                let _ = s.shutdown().await;
                st.log_line("WS-CLOSE-FRAME");
                return;
            }
            Ok((_, 9, p)) => {
                if ws_write(&mut s, true, 10, &p).await.is_err() {
                    break;
                }
            }
            Ok((_, 1, p)) if p == b"close-from-server" => {
                let _ = ws_write(&mut s, true, 8, &1000u16.to_be_bytes()).await;
                let _ = s.shutdown().await;
                drop(s);
                st.log_line("WS-SERVER-CLOSED");
                return;
            }
            Ok((fin, op, p)) => {
                if ws_write(&mut s, fin, op, &p).await.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    st.log_line("WS-EOF");
}

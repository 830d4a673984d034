//! The admin server: a root-only Unix socket speaking HTTP/1.1 (keep-alive) with JSON bodies.
//!
//! Security model: the socket file is `0600` from the moment it exists (it is bound inside a
//! private `0700` directory, chmod-ed, then renamed into place), and every connection's
//! `SO_PEERCRED` uid must be 0 or the server's own uid — the second check still holds if an
//! operator loosens the file mode by mistake. Bodies are bounded before they are read.

use std::convert::Infallible;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use egret_policy::{BindingConfig, HandlerConfig, PolicyConfig, PolicyError};
use futures_util::stream;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::api::{
    is_valid_name, percent_decode, ApiError, AuditFilter, ErrorCode, ErrorResponse, Health,
    HostListChange, InternetRequest, ModuleList, OutboundByHostRequest, RemoveHostsRequest,
    SecretList, SecretRequest, SecretSet, GENERATION_HEADER, IF_GENERATION, METRICS_CONTENT_TYPE,
};
use crate::control::{Change, Control, ControlError};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Tunables of [`serve`]. `Default` gives the documented limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest JSON/TOML body (default 1 MiB).
    pub json_body_limit: usize,
    /// Largest module upload (default 64 MiB).
    pub module_body_limit: usize,
    /// Time allowed for a request's headers, counted from the first byte (default 10 s);
    /// also bounds how long an idle keep-alive connection is held.
    pub header_read_timeout: Duration,
    /// Time allowed to receive a whole body once the headers are in (default 60 s).
    pub body_read_timeout: Duration,
    /// How long [`ServerHandle::stop`] waits for in-flight requests before dropping them
    /// (default 5 s).
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            json_body_limit: 1 << 20,
            module_body_limit: 64 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Something that is not a socket sits at the path; it is never deleted.
    #[error("{}: exists and is not a socket; refusing to replace it (remove it or choose another --admin-socket)", .path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process answers on the socket.
    #[error("{}: another process is already serving on this socket (is another egret running for this sandbox?)", .path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path has no file name or parent directory.
    #[error("{}: not a usable socket path", .path.display())]
    BadPath {
        /// The socket path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running server. [`ServerHandle::stop`] stops it gracefully; dropping the handle without
/// calling `stop` also stops it, without waiting.
#[derive(Debug)]
pub struct ServerHandle {
    path: PathBuf,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, removes the socket file, lets in-flight requests finish (up to
    /// [`ServerOptions::shutdown_grace`]; audit streams end at once) and returns when every
    /// connection is closed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts the admin server on `path` and returns once it accepts connections.
///
/// A stale socket at `path` (nobody listening) is replaced; anything else there is an error.
/// A missing parent directory is created with mode `0700`.
pub async fn serve(
    path: &Path,
    control: Arc<dyn Control>,
    opts: ServerOptions,
) -> Result<ServerHandle, AdminError> {
    let std_listener = bind_private(path)?;
    let ident = std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(io_err(path, "stat"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(io_err(path, "set_nonblocking"))?;
    let listener = UnixListener::from_std(std_listener).map_err(io_err(path, "register"))?;

    let (tx, rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        control,
        opts,
        shutdown: rx.clone(),
        own_uid: nix::unistd::geteuid().as_raw(),
    });
    let task = tokio::spawn(accept_loop(listener, ctx, rx, path.to_owned(), ident));
    tracing::info!(target: "egret::admin", socket = %path.display(), "admin API listening");
    Ok(ServerHandle {
        path: path.to_owned(),
        shutdown: tx,
        task: Some(task),
    })
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> AdminError + 'a {
    move |source| AdminError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Binds the socket so that it is never reachable by anyone but us: bind inside a fresh 0700
/// directory, chmod 0600, then rename over the final path. A process-wide umask change would
/// race with other threads creating files, so it is avoided.
fn bind_private(path: &Path) -> Result<std::os::unix::net::UnixListener, AdminError> {
    let (Some(parent), Some(_)) = (path.parent(), path.file_name()) else {
        return Err(AdminError::BadPath {
            path: path.to_owned(),
        });
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err(parent, "create directory"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(AdminError::InUse {
                    path: path.to_owned(),
                });
            }
            // Stale: a previous egret died without cleaning up. The rename below replaces it.
        }
        Ok(_) => {
            return Err(AdminError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, "stat")(e)),
    }

    static SEQ: AtomicU64 = AtomicU64::new(0);
    // Short names: sun_path holds 108 bytes and the temporary path must fit too.
    let tmp_dir = parent.join(format!(
        ".egret-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp_dir)
        .map_err(io_err(&tmp_dir, "create directory"))?;
    let tmp_sock = tmp_dir.join("s");
    let result = (|| {
        let l =
            std::os::unix::net::UnixListener::bind(&tmp_sock).map_err(io_err(&tmp_sock, "bind"))?;
        std::fs::set_permissions(&tmp_sock, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&tmp_sock, "chmod"))?;
        std::fs::rename(&tmp_sock, path).map_err(io_err(path, "rename into place"))?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp_sock);
    let _ = std::fs::remove_dir(&tmp_dir);
    result
}

/// Resolves once shutdown is requested (or the handle is gone). The `watch::Ref` guard is not
/// `Send`, so it must not live in a connection task's state.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

struct Ctx {
    control: Arc<dyn Control>,
    opts: ServerOptions,
    shutdown: watch::Receiver<bool>,
    own_uid: u32,
}

async fn accept_loop(
    listener: UnixListener,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    path: PathBuf,
    ident: (u64, u64),
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, ctx.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(target: "egret::admin", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    remove_if_ours(&path, ident);
    let grace = ctx.opts.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(target: "egret::admin", "admin connections still open after the grace period; closing them");
        conns.shutdown().await;
    }
    tracing::info!(target: "egret::admin", socket = %path.display(), "admin API stopped");
}

/// Removes the socket file unless someone else has replaced it since (e.g. a new egret).
fn remove_if_ours(path: &Path, ident: (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == ident {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn serve_conn(stream: UnixStream, ctx: Arc<Ctx>) {
    let cred = stream.peer_cred();
    let allowed = match &cred {
        Ok(c) => c.uid() == 0 || c.uid() == ctx.own_uid,
        Err(_) => false,
    };
    if !allowed {
        let (uid, pid) = cred
            .as_ref()
            .map(|c| (Some(c.uid()), c.pid()))
            .unwrap_or((None, None));
        tracing::warn!(target: "egret::admin", ?uid, ?pid, "refused admin connection from a foreign uid");
    }
    let mut shutdown = ctx.shutdown.clone();
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req| {
        let ctx = svc_ctx.clone();
        async move {
            if allowed {
                Ok::<_, Infallible>(handle(req, ctx).await)
            } else {
                let mut resp = error_response(&Failure::new(
                    ErrorCode::Forbidden,
                    "this socket is for root (or the egret process's own user) only",
                ));
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                Ok(resp)
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.opts.header_read_timeout)
        .keep_alive(allowed);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(target: "egret::admin", error = %e, "admin connection ended with an error");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// An error answer under construction.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    // Boxed: the error path is cold and this keeps every `Result<_, Failure>` small.
    error: Box<ApiError>,
    allow: Option<&'static str>,
    close: bool,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            status: code.status(),
            error: Box::new(ApiError::new(code, message)),
            allow: None,
            close: false,
        }
    }

    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid { problems } => {
                let mut f = Failure::new(
                    ErrorCode::InvalidPolicy,
                    format!(
                        "the change was refused and the previous policy stays in force; fix {}",
                        if problems.len() == 1 {
                            "this problem"
                        } else {
                            "these problems"
                        }
                    ),
                );
                f.error.problems = problems;
                f
            }
            ControlError::Conflict { expected, current } => {
                let mut f = Failure::new(
                    ErrorCode::Conflict,
                    format!(
                        "the policy is at generation {current}, not {expected} as required by if-generation; re-read it (GET /v1/policy) and retry"
                    ),
                );
                f.error.expected = Some(expected);
                f.error.current = Some(current);
                f
            }
            ControlError::NotFound(m) => Failure::new(ErrorCode::NotFound, m),
            ControlError::Internal(m) => Failure::new(ErrorCode::Internal, m),
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(mut b) => {
            b.push(b'\n');
            text_response(status, "application/json", b)
        }
        Err(e) => error_response(&Failure::new(
            ErrorCode::Internal,
            format!("could not encode the response: {e}"),
        )),
    }
}

fn text_response(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn error_response(f: &Failure) -> Response<Body> {
    let mut r = json_response(
        f.status,
        &ErrorResponse {
            error: (*f.error).clone(),
        },
    );
    if let Some(allow) = f.allow {
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    if f.close {
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The endpoints, as listed in a `not_found` answer.
const ENDPOINTS: &[&str] = &[
    "GET /v1/health",
    "GET /v1/status",
    "GET|PUT /v1/policy",
    "PUT|DELETE /v1/outbound",
    "PUT|DELETE /v1/outbound-by-host",
    "POST /v1/allowed-hosts",
    "POST /v1/denied-hosts",
    "PUT /v1/internet",
    "PUT|DELETE /v1/handlers/{name}",
    "GET /v1/modules",
    "PUT /v1/modules/{name}",
    "GET /v1/secrets",
    "PUT|DELETE /v1/secrets/{name}",
    "GET /v1/ca",
    "GET /v1/metrics",
    "GET /metrics",
    "GET /v1/audit?sandbox=ID&deny_only=true",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Status,
    Policy,
    Outbound,
    OutboundByHost,
    AllowedHosts,
    DeniedHosts,
    Internet,
    Handler(&'a str),
    Modules,
    Module(&'a str),
    Secrets,
    Secret(&'a str),
    Ca,
    Metrics,
    Audit,
}

impl Route<'_> {
    fn allow(self) -> &'static str {
        match self {
            Route::Health
            | Route::Status
            | Route::Modules
            | Route::Secrets
            | Route::Ca
            | Route::Metrics
            | Route::Audit => "GET",
            Route::Policy => "GET, PUT",
            Route::Outbound | Route::OutboundByHost | Route::Handler(_) | Route::Secret(_) => {
                "PUT, DELETE"
            }
            Route::AllowedHosts | Route::DeniedHosts => "POST",
            Route::Internet | Route::Module(_) => "PUT",
        }
    }
}

fn route(path: &str) -> Result<Route<'_>, Failure> {
    let not_found = || {
        let mut f = Failure::new(
            ErrorCode::NotFound,
            format!("no such endpoint: {path}; see the endpoints listed here"),
        );
        f.error.endpoints = ENDPOINTS.iter().map(|s| (*s).to_owned()).collect();
        f
    };
    if path == "/metrics" {
        return Ok(Route::Metrics);
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(not_found());
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let r = match segs.as_slice() {
        ["health"] => Route::Health,
        ["status"] => Route::Status,
        ["policy"] => Route::Policy,
        ["outbound"] => Route::Outbound,
        ["outbound-by-host"] => Route::OutboundByHost,
        ["allowed-hosts"] => Route::AllowedHosts,
        ["denied-hosts"] => Route::DeniedHosts,
        ["internet"] => Route::Internet,
        ["modules"] => Route::Modules,
        ["secrets"] => Route::Secrets,
        ["ca"] => Route::Ca,
        ["metrics"] => Route::Metrics,
        ["audit"] => Route::Audit,
        [kind @ ("handlers" | "modules" | "secrets"), name] => {
            if !is_valid_name(name) {
                let mut f = Failure::new(
                    ErrorCode::InvalidName,
                    format!(
                        "invalid {} name in the path: names are 1-64 characters of A-Z a-z 0-9 _ . - and not \".\" or \"..\"",
                        kind.trim_end_matches('s')
                    ),
                );
                // Echo the name only when it is printable and short: it comes from the client.
                if name.len() <= 80 && name.bytes().all(|b| b.is_ascii_graphic()) {
                    f.error.problems = vec![format!("{kind}/{name}")];
                }
                return Err(f);
            }
            match *kind {
                "handlers" => Route::Handler(name),
                "modules" => Route::Module(name),
                _ => Route::Secret(name),
            }
        }
        _ => return Err(not_found()),
    };
    Ok(r)
}

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match dispatch(req, &ctx).await {
        Ok(r) => r,
        Err(f) => {
            tracing::debug!(target: "egret::admin", %method, path, code = %f.error.code, "admin request refused");
            error_response(&f)
        }
    }
}

fn if_generation(headers: &HeaderMap) -> Result<Option<u64>, Failure> {
    let Some(v) = headers.get(IF_GENERATION) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::BadRequest,
                "if-generation must be a non-negative integer (the generation from GET /v1/status)",
            )
        })
}

async fn dispatch(req: Request<Incoming>, ctx: &Ctx) -> Result<Response<Body>, Failure> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let r = route(&path)?;
    let m = req.method().clone();
    let is = |want: &Method| m == want;
    let bad_method = || {
        let mut f = Failure::new(
            ErrorCode::MethodNotAllowed,
            format!("{m} is not allowed on {path}; allowed: {}", r.allow()),
        );
        f.allow = Some(r.allow());
        Err(f)
    };
    let ifg = if_generation(req.headers())?;
    let c = &ctx.control;
    let limit = ctx.opts.json_body_limit;
    match r {
        Route::Health if is(&Method::GET) => Ok(json_response(
            StatusCode::OK,
            &Health {
                status: "ok".into(),
            },
        )),
        Route::Status if is(&Method::GET) => Ok(json_response(StatusCode::OK, &c.status())),
        Route::Policy if is(&Method::GET) => get_policy(ctx, &query),
        Route::Policy if is(&Method::PUT) => {
            let toml = is_toml(req.headers());
            let body = read_body(req, limit, ctx).await?;
            let cfg = parse_policy(&body, toml)?;
            apply(ctx, Change::ReplacePolicy(cfg), ifg).await
        }
        Route::Outbound if is(&Method::PUT) => {
            let b: BindingConfig = parse_json(&read_body(req, limit, ctx).await?)?;
            apply(ctx, Change::SetOutbound(Some(b)), ifg).await
        }
        Route::Outbound if is(&Method::DELETE) => apply(ctx, Change::SetOutbound(None), ifg).await,
        Route::OutboundByHost if is(&Method::PUT) => {
            let b: OutboundByHostRequest = parse_json(&read_body(req, limit, ctx).await?)?;
            if b.routes.is_empty() {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "routes is empty; give at least one {\"hosts\": [...], \"handler\": \"...\"}",
                ));
            }
            apply(ctx, Change::SetOutboundByHost(b.routes), ifg).await
        }
        Route::OutboundByHost if is(&Method::DELETE) => {
            let b: RemoveHostsRequest = parse_json(&read_body(req, limit, ctx).await?)?;
            if b.hosts.is_empty() {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "hosts is empty; name the host patterns whose routes to remove",
                ));
            }
            apply(ctx, Change::RemoveOutboundByHost(b.hosts), ifg).await
        }
        Route::AllowedHosts | Route::DeniedHosts if is(&Method::POST) => {
            let b: HostListChange = parse_json(&read_body(req, limit, ctx).await?)?;
            if b.add.is_empty() && b.remove.is_empty() {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "nothing to change: give \"add\" and/or \"remove\" host patterns",
                ));
            }
            let change = if r == Route::AllowedHosts {
                Change::AllowedHosts {
                    add: b.add,
                    remove: b.remove,
                }
            } else {
                Change::DeniedHosts {
                    add: b.add,
                    remove: b.remove,
                }
            };
            apply(ctx, change, ifg).await
        }
        Route::Internet if is(&Method::PUT) => {
            let b: InternetRequest = parse_json(&read_body(req, limit, ctx).await?)?;
            apply(ctx, Change::SetInternet(b.enabled), ifg).await
        }
        Route::Handler(name) if is(&Method::PUT) => {
            let config: HandlerConfig = parse_json(&read_body(req, limit, ctx).await?)?;
            let name = name.to_owned();
            apply(ctx, Change::SetHandler { name, config }, ifg).await
        }
        Route::Handler(name) if is(&Method::DELETE) => {
            apply(ctx, Change::RemoveHandler(name.to_owned()), ifg).await
        }
        Route::Modules if is(&Method::GET) => Ok(json_response(
            StatusCode::OK,
            &ModuleList {
                modules: c.modules(),
            },
        )),
        Route::Module(name) if is(&Method::PUT) => {
            let name = name.to_owned();
            let body = read_body(req, ctx.opts.module_body_limit, ctx).await?;
            if !body.starts_with(b"\0asm") {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "the body is not a WebAssembly module (it must start with \\0asm); send the .wasm file's bytes with content-type application/wasm",
                ));
            }
            // Uploading does not go through `apply`, so the precondition is checked here; it
            // is advisory (not atomic with the upload), which is documented in API.md.
            if let Some(expected) = ifg {
                let current = c.status().generation;
                if current != expected {
                    return Err(ControlError::Conflict { expected, current }.into());
                }
            }
            let size = body.len();
            let info = c.upload_module(name.clone(), body).await?;
            tracing::info!(target: "egret::admin", module = %name, size, sha256 = %info.sha256, "module uploaded");
            Ok(json_response(StatusCode::OK, &info))
        }
        Route::Secrets if is(&Method::GET) => Ok(json_response(
            StatusCode::OK,
            &SecretList {
                secrets: c.policy().secrets,
            },
        )),
        Route::Secret(name) if is(&Method::PUT) => {
            let body = read_body(req, limit, ctx).await?;
            let b: SecretRequest = parse_secret(&body)?;
            let name = name.to_owned();
            let change = Change::SetSecret {
                name: name.clone(),
                value: b.value,
            };
            let applied = c.apply(change, ifg).await?;
            tracing::info!(target: "egret::admin", change = "set_secret", secret = %name, generation = applied.generation, "change applied");
            Ok(json_response(
                StatusCode::OK,
                &SecretSet {
                    name,
                    generation: applied.generation,
                    warnings: applied.warnings,
                },
            ))
        }
        Route::Secret(name) if is(&Method::DELETE) => {
            apply(ctx, Change::RemoveSecret(name.to_owned()), ifg).await
        }
        Route::Ca if is(&Method::GET) => Ok(text_response(
            StatusCode::OK,
            "application/x-pem-file",
            c.ca_pem(),
        )),
        Route::Metrics if is(&Method::GET) => Ok(text_response(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            c.metrics(),
        )),
        Route::Audit if is(&Method::GET) => audit(ctx, &query),
        _ => bad_method(),
    }
}

async fn apply(ctx: &Ctx, change: Change, ifg: Option<u64>) -> Result<Response<Body>, Failure> {
    let kind = change.kind();
    let applied = ctx.control.apply(change, ifg).await?;
    tracing::info!(target: "egret::admin", change = kind, generation = applied.generation, "change applied");
    Ok(json_response(StatusCode::OK, &applied))
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.to_owned(), percent_decode(v))
    })
}

fn get_policy(ctx: &Ctx, query: &str) -> Result<Response<Body>, Failure> {
    let mut toml = false;
    for (k, v) in query_pairs(query) {
        match (k.as_str(), v.as_deref()) {
            ("format", Some("toml")) => toml = true,
            ("format", Some("json")) => toml = false,
            _ => {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "unknown query parameter; the only one is format=json|toml",
                ))
            }
        }
    }
    let view = ctx.control.policy();
    if !toml {
        return Ok(json_response(StatusCode::OK, &view));
    }
    let body = view.policy.to_toml_string().map_err(|e| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("{e}; read the policy as JSON instead (GET /v1/policy)"),
        )
    })?;
    let mut out = format!(
        "# egret policy, generation {} (static layer; PUT it to /v1/policy to replace the policy)\n",
        view.generation
    );
    if !view.runtime.is_empty() {
        out.push_str(&format!(
            "# not included: runtime overrides ({}{} route(s)); see GET /v1/policy\n",
            view.runtime
                .outbound
                .as_ref()
                .map(|b| format!("outbound = {:?}, ", b.handler))
                .unwrap_or_default(),
            view.runtime.routes.len()
        ));
    }
    out.push('\n');
    out.push_str(&body);
    let mut r = text_response(StatusCode::OK, "application/toml", out);
    r.headers_mut()
        .insert(GENERATION_HEADER, HeaderValue::from(view.generation));
    Ok(r)
}

fn audit(ctx: &Ctx, query: &str) -> Result<Response<Body>, Failure> {
    let mut filter = AuditFilter::default();
    for (k, v) in query_pairs(query) {
        match (k.as_str(), v) {
            ("sandbox", Some(s)) if !s.is_empty() => filter.sandbox = Some(s),
            ("deny_only", Some(v)) if v == "true" || v == "1" => filter.deny_only = true,
            ("deny_only", Some(v)) if v == "false" || v == "0" => filter.deny_only = false,
            _ => {
                return Err(Failure::new(
                    ErrorCode::BadRequest,
                    "bad query parameter; valid: sandbox=ID, deny_only=true|false",
                ))
            }
        }
    }
    let Some(rx) = ctx.control.subscribe_audit() else {
        return Err(Failure::new(
            ErrorCode::NotFound,
            "this egret does not publish audit events over the admin socket",
        ));
    };
    let shutdown = ctx.shutdown.clone();
    // One line per event; a lagging reader is told how many it missed rather than silently
    // losing them.
    let lines = stream::unfold(
        (rx, shutdown, filter),
        |(mut rx, mut shutdown, filter)| async move {
            loop {
                let item = tokio::select! {
                    _ = stopped(&mut shutdown) => return None,
                    item = rx.recv() => item,
                };
                let line = match item {
                    Ok(ev) if filter.matches(&ev) => format!("{ev}\n"),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        format!("{{\"type\":\"lagged\",\"skipped\":{n}}}\n")
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                let frame = Ok::<_, Infallible>(Frame::data(Bytes::from(line)));
                return Some((frame, (rx, shutdown, filter)));
            }
        },
    );
    let mut r = Response::new(StreamBody::new(lines).boxed_unsync());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}

fn is_toml(headers: &HeaderMap) -> Option<bool> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(essence == "application/toml" || essence == "text/toml" || essence == "text/x-toml")
}

/// Reads a whole body of at most `limit` bytes. A declared `content-length` over the limit is
/// refused before a byte of the body is read; a chunked body is cut off at the limit. Either
/// way the connection is closed afterwards, since the rest of the body is never drained.
async fn read_body(req: Request<Incoming>, limit: usize, ctx: &Ctx) -> Result<Bytes, Failure> {
    let too_large = || {
        let mut f = Failure::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than this endpoint's limit of {limit} bytes"),
        );
        f.close = true;
        f
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        ctx.opts.body_read_timeout,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    match collected {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => {
            let mut f = Failure::new(
                ErrorCode::BadRequest,
                format!("could not read the request body: {e}"),
            );
            f.close = true;
            Err(f)
        }
        Err(_) => {
            let mut f = Failure::new(ErrorCode::BadRequest, "timed out reading the request body")
                .status(StatusCode::REQUEST_TIMEOUT);
            f.close = true;
            Err(f)
        }
    }
}

fn json_failure(e: &serde_json::Error, message: String) -> Failure {
    let mut f = Failure::new(ErrorCode::InvalidJson, message);
    f.error.line = Some(e.line().max(1));
    f.error.column = Some(e.column().max(1));
    f
}

/// serde's derived structs also accept the sequence form (`[true]` for `{"enabled": true}`);
/// the API documents objects only, so arrays are refused up front.
fn refuse_array(body: &[u8]) -> Result<(), Failure> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let mut f = Failure::new(
            ErrorCode::InvalidJson,
            "expected a JSON object, found an array",
        );
        f.error.line = Some(1);
        f.error.column = Some(1);
        return Err(f);
    }
    Ok(())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    refuse_array(body)?;
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            "the body is empty; this endpoint expects a JSON object".to_owned()
        } else {
            format!("invalid request body: {e}")
        };
        json_failure(&e, what)
    })
}

/// Like [`parse_json`] but never repeats serde's message: for some inputs (a bare string, a
/// value of the wrong type) that message quotes the value, which here is the secret.
fn parse_secret(body: &[u8]) -> Result<SecretRequest, Failure> {
    refuse_array(body)?;
    serde_json::from_slice(body).map_err(|e| {
        json_failure(
            &e,
            format!(
                "invalid request body ({:?} error); expected {{\"value\": \"...\"}} with a string value and no other field",
                e.classify()
            )
            .to_lowercase(),
        )
    })
}

fn parse_policy(body: &[u8], toml: Option<bool>) -> Result<PolicyConfig, Failure> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Failure::new(ErrorCode::BadRequest, "the policy is not UTF-8 text"))?;
    // Without a content-type, a body starting with `{` is JSON (TOML cannot start with one).
    let toml = toml.unwrap_or_else(|| !text.trim_start().starts_with('{'));
    let parsed = if toml {
        PolicyConfig::from_toml(text, "request body")
    } else {
        PolicyConfig::from_json(text, "request body")
    };
    parsed.map_err(|e| match e {
        PolicyError::Parse {
            line,
            column,
            message,
            hint,
            ..
        } => {
            let (code, status) = if toml {
                (ErrorCode::InvalidPolicy, StatusCode::BAD_REQUEST)
            } else {
                (ErrorCode::InvalidJson, StatusCode::BAD_REQUEST)
            };
            let mut f = Failure::new(
                code,
                format!("invalid policy at line {line} column {column}: {message}"),
            )
            .status(status);
            f.error.line = Some(line);
            f.error.column = Some(column);
            f.error.hint = hint;
            f
        }
        other => ControlError::from(other).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v1/health").unwrap(), Route::Health);
        assert_eq!(route("/metrics").unwrap(), Route::Metrics);
        assert_eq!(route("/v1/handlers/x").unwrap(), Route::Handler("x"));
        assert_eq!(route("/v1/modules").unwrap(), Route::Modules);
        assert_eq!(
            route("/v1/modules/m.wasm").unwrap(),
            Route::Module("m.wasm")
        );
        for bad in [
            "/v1/handlers/..",
            "/v1/secrets/.",
            "/v1/modules/%2e%2e",
            "/v1/secrets/",
        ] {
            assert_eq!(
                route(bad).unwrap_err().error.code,
                ErrorCode::InvalidName,
                "{bad}"
            );
        }
        for missing in ["/", "/v2/health", "/v1/handlers/a/b", "/v1/nope", "/v1"] {
            let f = route(missing).unwrap_err();
            assert_eq!(f.error.code, ErrorCode::NotFound, "{missing}");
            assert!(!f.error.endpoints.is_empty());
        }
    }

    #[test]
    fn secret_parse_errors_do_not_quote_the_value() {
        for body in [
            r#""hunter2""#,
            r#"{"value": "hunter2", "x": 1}"#,
            r#"{"value": ["hunter2"]}"#,
        ] {
            let f = parse_secret(body.as_bytes()).unwrap_err();
            let shown = serde_json::to_string(&f.error).unwrap();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert_eq!(f.error.code, ErrorCode::InvalidJson);
        }
    }
}

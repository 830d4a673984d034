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
use futures_util::stream;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::api::{
    AuditFilter, ErrorCode, ErrorResponse, Health, ModuleList, SecretList, SecretSet,
    GENERATION_HEADER, METRICS_CONTENT_TYPE,
};
use crate::control::{Change, Control, ControlError, SecretValue};
use crate::request::{parse_head, payload_too_large, BodyKind, Command, Rejection as Failure};

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

async fn dispatch(req: Request<Incoming>, ctx: &Ctx) -> Result<Response<Body>, Failure> {
    let head = parse_head(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    )?;
    let body = match head.body_kind() {
        BodyKind::None => Bytes::new(),
        kind => read_body(req, kind.limit(&ctx.opts), ctx).await?,
    };
    let c = &ctx.control;
    match head.command(body)? {
        Command::Health => Ok(json_response(
            StatusCode::OK,
            &Health {
                status: "ok".into(),
            },
        )),
        Command::Status => Ok(json_response(StatusCode::OK, &c.status())),
        Command::GetPolicy { toml } => get_policy(ctx, toml),
        Command::Apply {
            change: Change::SetSecret { name, value },
            if_generation,
        } => set_secret(ctx, name, value, if_generation).await,
        Command::Apply {
            change,
            if_generation,
        } => apply(ctx, change, if_generation).await,
        Command::Modules => Ok(json_response(
            StatusCode::OK,
            &ModuleList {
                modules: c.modules(),
            },
        )),
        Command::UploadModule {
            name,
            bytes,
            if_generation,
        } => upload_module(ctx, name, bytes, if_generation).await,
        Command::Secrets => Ok(json_response(
            StatusCode::OK,
            &SecretList {
                secrets: c.policy().secrets,
            },
        )),
        Command::Ca => Ok(text_response(
            StatusCode::OK,
            "application/x-pem-file",
            c.ca_pem(),
        )),
        Command::Metrics => Ok(text_response(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            c.metrics(),
        )),
        Command::Audit(filter) => audit(ctx, filter),
        Command::Pending => Ok(json_response(
            StatusCode::OK,
            &crate::ask::PendingList {
                pending: c.pending(),
            },
        )),
        Command::Decide { id, approve } => decide(ctx, id, approve).await,
        Command::Shadow { op, if_generation } => {
            let answer = crate::shadow::carry_out(c.as_ref(), op, if_generation).await?;
            Ok(json_response(StatusCode::OK, &answer))
        }
    }
}

/// `PUT /v1/secrets/NAME`: applied like any change, answered with the name (never the value).
async fn set_secret(
    ctx: &Ctx,
    name: String,
    value: SecretValue,
    ifg: Option<u64>,
) -> Result<Response<Body>, Failure> {
    let change = Change::SetSecret {
        name: name.clone(),
        value,
    };
    let applied = ctx.control.apply(change, ifg).await?;
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

/// `PUT /v1/modules/NAME`.
async fn upload_module(
    ctx: &Ctx,
    name: String,
    bytes: Bytes,
    ifg: Option<u64>,
) -> Result<Response<Body>, Failure> {
    // Uploading does not go through `apply`, so the precondition is checked here; it
    // is advisory (not atomic with the upload), which is documented in API.md.
    if let Some(expected) = ifg {
        let current = ctx.control.status().generation;
        if current != expected {
            return Err(ControlError::Conflict { expected, current }.into());
        }
    }
    let size = bytes.len();
    let info = ctx.control.upload_module(name.clone(), bytes).await?;
    tracing::info!(target: "egret::admin", module = %name, size, sha256 = %info.sha256, "module uploaded");
    Ok(json_response(StatusCode::OK, &info))
}

/// `POST /v1/pending/ID/approve|deny`.
async fn decide(
    ctx: &Ctx,
    id: u64,
    approve: Option<crate::ask::AskScope>,
) -> Result<Response<Body>, Failure> {
    ctx.control.decide(id, approve).await?;
    tracing::info!(target: "egret::admin", id, scope = approve.map(|s| s.as_str()), "question answered");
    Ok(json_response(
        StatusCode::OK,
        &crate::ask::Decided {
            id,
            decision: if approve.is_some() {
                "approved"
            } else {
                "denied"
            }
            .into(),
            scope: approve,
        },
    ))
}

async fn apply(ctx: &Ctx, change: Change, ifg: Option<u64>) -> Result<Response<Body>, Failure> {
    let kind = change.kind();
    let applied = ctx.control.apply(change, ifg).await?;
    tracing::info!(target: "egret::admin", change = kind, generation = applied.generation, "change applied");
    Ok(json_response(StatusCode::OK, &applied))
}

fn get_policy(ctx: &Ctx, toml: bool) -> Result<Response<Body>, Failure> {
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

fn audit(ctx: &Ctx, filter: AuditFilter) -> Result<Response<Body>, Failure> {
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

/// Reads a whole body of at most `limit` bytes. A declared `content-length` over the limit is
/// refused before a byte of the body is read; a chunked body is cut off at the limit. Either
/// way the connection is closed afterwards, since the rest of the body is never drained.
async fn read_body(req: Request<Incoming>, limit: usize, ctx: &Ctx) -> Result<Bytes, Failure> {
    let too_large = || payload_too_large(limit);
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

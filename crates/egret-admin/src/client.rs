//! A typed client for the admin API, used by `egret ctl` and by tests.
//!
//! One request per connection: the admin API is low-volume and this keeps the client free of
//! pooling state; a connect to a local Unix socket costs microseconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use egret_policy::{BindingConfig, HandlerConfig, PolicyConfig, RouteConfig};
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::api::{
    is_valid_name, percent_encode, ApiError, AuditFilter, ErrorCode, ErrorResponse, Health,
    HostListChange, InternetRequest, ModuleList, OutboundByHostRequest, RemoveHostsRequest,
    SecretList, SecretRequest, SecretSet, IF_GENERATION,
};
use crate::control::{Applied, ModuleInfo, PolicyView, SecretValue, Status};

/// What can go wrong talking to the admin socket. The three kinds are deliberately distinct
/// so that `egret ctl` can exit with distinct codes.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// Nobody answers on the socket (missing, stale, or not permitted).
    #[error("cannot connect to the admin socket {}: {source}\n  hint: {}", .path.display(), unreachable_hint(.path, .source))]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error: the change was refused (or the request was bad).
    #[error("{}", refused_text(*.status, .error))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error body (boxed: it is large and this is the cold path).
        error: Box<ApiError>,
    },
    /// The conversation broke: connection reset, unparseable answer, timeout.
    #[error("protocol error on the admin socket: {0}")]
    Protocol(String),
    /// The request was not sent because an argument is unusable (e.g. an invalid name).
    #[error("{0}")]
    Usage(String),
}

impl AdminClientError {
    /// The stable error code of a [`AdminClientError::Refused`] answer.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminClientError::Refused { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// The problems listed by a refused change (empty otherwise).
    pub fn problems(&self) -> &[String] {
        match self {
            AdminClientError::Refused { error, .. } => &error.problems,
            _ => &[],
        }
    }
}

fn unreachable_hint(path: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        PermissionDenied => "the admin socket is root-only (mode 0600); run egret ctl as root".into(),
        ConnectionRefused => format!(
            "the socket file exists but nothing listens: egret has stopped; is egret running with --admin-socket {}?",
            path.display()
        ),
        _ => format!("is egret running with --admin-socket {}?", path.display()),
    }
}

fn refused_text(status: u16, e: &ApiError) -> String {
    let mut s = format!("refused ({}, HTTP {status}): {}", e.code, e.message);
    for p in &e.problems {
        s.push_str("\n  - ");
        s.push_str(p);
    }
    if let Some(h) = &e.hint {
        s.push_str("\n  hint: ");
        s.push_str(h);
    }
    s
}

/// A client for one admin socket. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct AdminClient {
    path: PathBuf,
    timeout: Duration,
}

/// The raw answer to a request, for callers that print it as is.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl AdminClient {
    /// A client for the socket at `path`, with a 30 s per-request timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AdminClient {
            path: path.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets the per-request timeout (not applied to [`AdminClient::audit`] streams).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
        if_generation: Option<u64>,
    ) -> Result<Response<Incoming>, AdminClientError> {
        let stream = UnixStream::connect(&self.path).await.map_err(|source| {
            AdminClientError::Unreachable {
                path: self.path.clone(),
                source,
            }
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AdminClientError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, "egret");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(g) = if_generation {
            req = req.header(IF_GENERATION, g);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| AdminClientError::Usage(format!("cannot build the request: {e}")))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| AdminClientError::Protocol(e.to_string()))
    }

    /// Sends a request and returns the whole answer whatever its status (no error mapping).
    pub async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
        if_generation: Option<u64>,
    ) -> Result<RawResponse, AdminClientError> {
        let fut = async {
            let resp = self
                .send(method, path_and_query, content_type, body, if_generation)
                .await?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| AdminClientError::Protocol(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(RawResponse {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            AdminClientError::Protocol(format!("no answer within {:?}", self.timeout))
        })?
    }

    /// Sends and returns the body of a 2xx answer; maps error answers to `Refused`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Bytes,
        if_generation: Option<u64>,
    ) -> Result<Bytes, AdminClientError> {
        let r = self
            .raw(method, path, content_type, body, if_generation)
            .await?;
        if StatusCode::from_u16(r.status).is_ok_and(|s| s.is_success()) {
            return Ok(r.body);
        }
        match serde_json::from_slice::<ErrorResponse>(&r.body) {
            Ok(e) => Err(AdminClientError::Refused {
                status: r.status,
                error: Box::new(e.error),
            }),
            Err(_) => Err(AdminClientError::Protocol(format!(
                "HTTP {} with a body that is not an admin API error: {}",
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
            ))),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminClientError> {
        let b = self
            .call(Method::GET, path, None, Bytes::new(), None)
            .await?;
        decode(&b)
    }

    pub(crate) async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        if_generation: Option<u64>,
    ) -> Result<T, AdminClientError> {
        let (ct, bytes) = match body {
            Some(b) => (
                Some("application/json"),
                Bytes::from(serde_json::to_vec(b).map_err(|e| {
                    AdminClientError::Usage(format!("cannot encode the request: {e}"))
                })?),
            ),
            None => (None, Bytes::new()),
        };
        let b = self.call(method, path, ct, bytes, if_generation).await?;
        decode(&b)
    }

    async fn get_text(&self, path: &str) -> Result<String, AdminClientError> {
        let b = self
            .call(Method::GET, path, None, Bytes::new(), None)
            .await?;
        String::from_utf8(b.to_vec())
            .map_err(|_| AdminClientError::Protocol(format!("{path}: answer is not UTF-8")))
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, AdminClientError> {
        self.get_json("/v1/health").await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, AdminClientError> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/policy`.
    pub async fn policy(&self) -> Result<PolicyView, AdminClientError> {
        self.get_json("/v1/policy").await
    }

    /// `GET /v1/policy?format=toml`: the static layer as TOML, ready to edit and put back.
    pub async fn policy_toml(&self) -> Result<String, AdminClientError> {
        self.get_text("/v1/policy?format=toml").await
    }

    /// `PUT /v1/policy` with a JSON body.
    pub async fn replace_policy(
        &self,
        policy: &PolicyConfig,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.send_json(Method::PUT, "/v1/policy", Some(policy), if_generation)
            .await
    }

    /// `PUT /v1/policy` with a TOML body (as read from a file; the server parses it and
    /// reports errors with line and column).
    pub async fn replace_policy_toml(
        &self,
        toml: String,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.replace_policy_text(toml, "application/toml", if_generation)
            .await
    }

    /// `PUT /v1/policy` with a policy as text in the given content type
    /// (`application/toml` or `application/json`), sent as is so that parse errors come back
    /// with the server's line and column.
    pub async fn replace_policy_text(
        &self,
        text: String,
        content_type: &'static str,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.put_policy_text("/v1/policy", text, content_type, if_generation)
            .await
    }

    /// `PUT path` with a policy as text, sent as is; the answer decoded.
    pub(crate) async fn put_policy_text(
        &self,
        path: &str,
        text: String,
        content_type: &'static str,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let b = self
            .call(
                Method::PUT,
                path,
                Some(content_type),
                Bytes::from(text),
                if_generation,
            )
            .await?;
        decode(&b)
    }

    /// `PUT /v1/outbound`: sets the runtime catch-all handler.
    pub async fn set_outbound(
        &self,
        binding: &BindingConfig,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        // Always the table form, so that the body reads `{"handler": ...}` as documented.
        let mut body = serde_json::Map::new();
        body.insert("handler".into(), binding.handler.clone().into());
        if let Some(p) = &binding.params {
            body.insert("params".into(), p.clone());
        }
        self.send_json(Method::PUT, "/v1/outbound", Some(&body), if_generation)
            .await
    }

    /// `DELETE /v1/outbound`.
    pub async fn clear_outbound(
        &self,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.send_json::<(), _>(Method::DELETE, "/v1/outbound", None, if_generation)
            .await
    }

    /// `PUT /v1/outbound-by-host`.
    pub async fn set_outbound_by_host(
        &self,
        routes: Vec<RouteConfig>,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let body = OutboundByHostRequest { routes };
        self.send_json(
            Method::PUT,
            "/v1/outbound-by-host",
            Some(&body),
            if_generation,
        )
        .await
    }

    /// `DELETE /v1/outbound-by-host`.
    pub async fn remove_outbound_by_host(
        &self,
        hosts: Vec<String>,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let body = RemoveHostsRequest { hosts };
        self.send_json(
            Method::DELETE,
            "/v1/outbound-by-host",
            Some(&body),
            if_generation,
        )
        .await
    }

    /// `POST /v1/allowed-hosts`.
    pub async fn allowed_hosts(
        &self,
        change: &HostListChange,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.send_json(
            Method::POST,
            "/v1/allowed-hosts",
            Some(change),
            if_generation,
        )
        .await
    }

    /// `POST /v1/denied-hosts`.
    pub async fn denied_hosts(
        &self,
        change: &HostListChange,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        self.send_json(
            Method::POST,
            "/v1/denied-hosts",
            Some(change),
            if_generation,
        )
        .await
    }

    /// `GET /v1/pending`: the questions `--ask` holds connections for.
    pub async fn pending(&self) -> Result<Vec<crate::ask::PendingQuestion>, AdminClientError> {
        let l: crate::ask::PendingList = self.get_json("/v1/pending").await?;
        Ok(l.pending)
    }

    /// `POST /v1/pending/{id}/approve?scope=…` (`Some`) or `POST /v1/pending/{id}/deny`.
    pub async fn decide(
        &self,
        id: u64,
        approve: Option<crate::ask::AskScope>,
    ) -> Result<crate::ask::Decided, AdminClientError> {
        let path = match approve {
            Some(s) => format!("/v1/pending/{id}/approve?scope={}", s.as_str()),
            None => format!("/v1/pending/{id}/deny"),
        };
        self.send_json::<(), _>(Method::POST, &path, None, None)
            .await
    }

    /// `PUT /v1/internet`.
    pub async fn set_internet(
        &self,
        enabled: bool,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let body = InternetRequest { enabled };
        self.send_json(Method::PUT, "/v1/internet", Some(&body), if_generation)
            .await
    }

    /// `PUT /v1/handlers/{name}`.
    pub async fn set_handler(
        &self,
        name: &str,
        config: &HandlerConfig,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let path = named("handlers", name)?;
        self.send_json(Method::PUT, &path, Some(config), if_generation)
            .await
    }

    /// `DELETE /v1/handlers/{name}`.
    pub async fn remove_handler(
        &self,
        name: &str,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let path = named("handlers", name)?;
        self.send_json::<(), _>(Method::DELETE, &path, None, if_generation)
            .await
    }

    /// `PUT /v1/modules/{name}` with the module's bytes.
    pub async fn upload_module(
        &self,
        name: &str,
        bytes: Bytes,
        if_generation: Option<u64>,
    ) -> Result<ModuleInfo, AdminClientError> {
        let path = named("modules", name)?;
        let b = self
            .call(
                Method::PUT,
                &path,
                Some("application/wasm"),
                bytes,
                if_generation,
            )
            .await?;
        decode(&b)
    }

    /// `GET /v1/modules`.
    pub async fn modules(&self) -> Result<Vec<ModuleInfo>, AdminClientError> {
        Ok(self.get_json::<ModuleList>("/v1/modules").await?.modules)
    }

    /// `PUT /v1/secrets/{name}`. The answer carries the name and generation, never the value.
    pub async fn set_secret(
        &self,
        name: &str,
        value: SecretValue,
        if_generation: Option<u64>,
    ) -> Result<SecretSet, AdminClientError> {
        let path = named("secrets", name)?;
        let body = SecretRequest { value };
        self.send_json(Method::PUT, &path, Some(&body), if_generation)
            .await
    }

    /// `DELETE /v1/secrets/{name}`.
    pub async fn remove_secret(
        &self,
        name: &str,
        if_generation: Option<u64>,
    ) -> Result<Applied, AdminClientError> {
        let path = named("secrets", name)?;
        self.send_json::<(), _>(Method::DELETE, &path, None, if_generation)
            .await
    }

    /// `GET /v1/secrets`: names only.
    pub async fn secrets(&self) -> Result<Vec<String>, AdminClientError> {
        Ok(self.get_json::<SecretList>("/v1/secrets").await?.secrets)
    }

    /// `GET /v1/ca`: the CA certificate, PEM.
    pub async fn ca_pem(&self) -> Result<String, AdminClientError> {
        self.get_text("/v1/ca").await
    }

    /// `GET /v1/metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, AdminClientError> {
        self.get_text("/v1/metrics").await
    }

    /// `GET /v1/audit`: a stream of audit events (one JSON object per line) until the server
    /// stops or the stream is dropped.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<AuditStream, AdminClientError> {
        let q = filter.to_query();
        let path = if q.is_empty() {
            "/v1/audit".to_owned()
        } else {
            format!("/v1/audit?{q}")
        };
        let resp = tokio::time::timeout(
            self.timeout,
            self.send(Method::GET, &path, None, Bytes::new(), None),
        )
        .await
        .map_err(|_| {
            AdminClientError::Protocol(format!("no answer within {:?}", self.timeout))
        })??;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| AdminClientError::Protocol(e.to_string()))?
                .to_bytes();
            return Err(match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => AdminClientError::Refused {
                    status,
                    error: Box::new(e.error),
                },
                Err(_) => AdminClientError::Protocol(format!("HTTP {status} on {path}")),
            });
        }
        Ok(AuditStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

fn named(kind: &str, name: &str) -> Result<String, AdminClientError> {
    // Checked here too so that a bad name is a usage error before anything is sent, and so
    // that a name can never smuggle extra path segments or a query.
    if !is_valid_name(name) {
        return Err(AdminClientError::Usage(format!(
            "invalid name {:?}: names are 1-64 characters of A-Z a-z 0-9 _ . - and not \".\" or \"..\"",
            name
        )));
    }
    Ok(format!("/v1/{kind}/{}", percent_encode(name)))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminClientError> {
    serde_json::from_slice(body).map_err(|e| {
        AdminClientError::Protocol(format!(
            "unexpected answer ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}

/// Lines of `GET /v1/audit`, as they arrive.
#[derive(Debug)]
pub struct AuditStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl AuditStream {
    /// The next event line (without the newline), or `None` when the server ends the stream.
    pub async fn next_line(&mut self) -> Option<Result<String, AdminClientError>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line[..i]).into_owned();
                return Some(Ok(text));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Some(Err(AdminClientError::Protocol(e.to_string()))),
                None if self.buf.is_empty() => return None,
                None => {
                    let rest = std::mem::take(&mut self.buf);
                    return Some(Ok(String::from_utf8_lossy(&rest).into_owned()));
                }
            }
        }
    }
}

//! Adapters that connect the library crates to each other. Each crate stays ignorant of the
//! others; this is the one place where DNS → HTTP → handlers are wired.
use arc_swap::ArcSwap;
use egret_policy::CompiledPolicy;
use futures_util::future::BoxFuture;
use std::net::IpAddr;
use std::sync::Arc;

/// The policy as the DNS server sees it: one question, may this name be answered.
pub struct PolicyNames {
    /// The policy.
    pub policy: Arc<ArcSwap<CompiledPolicy>>,
    /// `--ask`: a name no rule decides is answered, so that its connection comes and can be
    /// asked about.
    pub ask: bool,
}

impl egret_dns::NamePolicy for PolicyNames {
    fn decide(&self, name: &str) -> egret_dns::NameDecision {
        let policy = self.policy.load();
        match policy.dns_decision(name) {
            egret_policy::DnsDecision::Answer => egret_dns::NameDecision::Answer,
            egret_policy::DnsDecision::NxDomain { rule }
                if self.ask && policy.is_undecided(&rule) =>
            {
                egret_dns::NameDecision::Answer
            }
            egret_policy::DnsDecision::NxDomain { rule } => {
                egret_dns::NameDecision::NxDomain { rule }
            }
        }
    }
}

/// The sandbox DNS as the data path sees it.
pub struct DnsGlue(pub Arc<egret_dns::Resolver>);

impl egret_proxy::SandboxDns for DnsGlue {
    fn lookup(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.0.map().lookup(ip)
    }
    fn is_synthetic(&self, ip: IpAddr) -> bool {
        self.0.map().is_synthetic(ip)
    }
    fn serve_tcp(&self, stream: tokio::net::TcpStream) -> BoxFuture<'static, ()> {
        let r = self.0.clone();
        Box::pin(async move { r.handle_tcp_stream(stream).await })
    }
}

/// The handlers of one policy generation, compiled and pre-instantiated, by handler name.
pub type HandlerSet = std::collections::HashMap<String, Arc<egret_wasm::LoadedHandler>>;

/// The handler engine as the data path sees it: wasmtime host, secrets, kv, fetch.
pub struct WasmDispatch {
    /// The one wasmtime host of the process.
    pub host: Arc<egret_wasm::HandlerHost>,
    /// Loaded handlers per policy generation (newest last; a few old ones are kept so a
    /// request finishes with the handler versions of the generation it started on).
    pub handlers: ArcSwap<Vec<(u64, Arc<HandlerSet>)>>,
    /// Secret values (never logged).
    pub secrets: Arc<egret_wasm::SecretStore>,
    /// Handler key-value store.
    pub kv: Arc<egret_wasm::KvStore>,
    /// This sandbox.
    pub sandbox_id: Arc<str>,
    /// Handler invocations, failures by kind and run times are counted here.
    pub metrics: Arc<egret_proxy::metrics::Metrics>,
    /// Sends handlers' `fetch` calls.
    pub fetch: Arc<egret_proxy::fetch::FetchClient>,
}

use egret_proxy::metrics::HandlerFailureKind;

/// The engine's failure as the proxy counts and audits it.
fn failure_kind(e: &egret_wasm::HandlerError) -> HandlerFailureKind {
    use egret_wasm::HandlerError as E;
    match e {
        E::Trap { .. } => HandlerFailureKind::Trap,
        E::Timeout { .. } => HandlerFailureKind::Timeout,
        E::OutOfMemory { .. } => HandlerFailureKind::Oom,
        E::InvalidAction { .. } => HandlerFailureKind::InvalidAction,
        E::Instantiate { .. } => HandlerFailureKind::Instantiate,
        E::Busy { .. } => HandlerFailureKind::Busy,
    }
}

fn failure(
    status: http::StatusCode,
    kind: HandlerFailureKind,
    message: String,
) -> egret_proxy::HandlerFailure {
    egret_proxy::HandlerFailure {
        status,
        kind,
        message,
        retry_after: None,
        instance_wait: None,
    }
}

/// `Retry-After` of a request refused because no handler instance came free: slots free as
/// responses end, at no time egret could predict; a second lets a client's own backoff take
/// over without hammering.
const BUSY_RETRY_AFTER_SECS: u32 = 1;

fn handler_failure(e: egret_wasm::HandlerError) -> egret_proxy::HandlerFailure {
    match e {
        egret_wasm::HandlerError::Busy {
            waited, queue_full, ..
        } => {
            // The flags are named so the operator who reads the body knows what to size.
            let flags = match queue_full {
                Some(_) => "--max-handler-instances, --max-handler-instance-waiters",
                None => "--max-handler-instances, --handler-instance-wait-ms",
            };
            egret_proxy::HandlerFailure {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                kind: HandlerFailureKind::Busy,
                message: format!("{e} (egret run {flags}); retry later"),
                retry_after: Some(BUSY_RETRY_AFTER_SECS),
                instance_wait: Some(waited),
            }
        }
        e => failure(
            http::StatusCode::BAD_GATEWAY,
            failure_kind(&e),
            e.to_string(),
        ),
    }
}

/// Handler sets kept for generations older than the newest.
const KEEP_GENERATIONS: usize = 8;

/// The parts of a dispatcher that are not the handler sets.
pub struct DispatchParts {
    /// The one wasmtime host of the process.
    pub host: Arc<egret_wasm::HandlerHost>,
    /// Secret values.
    pub secrets: Arc<egret_wasm::SecretStore>,
    /// Handler key-value store.
    pub kv: Arc<egret_wasm::KvStore>,
    /// This sandbox.
    pub sandbox_id: Arc<str>,
    /// Handler metrics.
    pub metrics: Arc<egret_proxy::metrics::Metrics>,
    /// Sends handlers' `fetch` calls.
    pub fetch: Arc<egret_proxy::fetch::FetchClient>,
}

impl WasmDispatch {
    /// A dispatcher whose first handler set belongs to `generation`.
    pub fn new(parts: DispatchParts, generation: u64, set: HandlerSet) -> WasmDispatch {
        WasmDispatch {
            host: parts.host,
            handlers: ArcSwap::from_pointee(vec![(generation, Arc::new(set))]),
            secrets: parts.secrets,
            kv: parts.kv,
            sandbox_id: parts.sandbox_id,
            metrics: parts.metrics,
            fetch: parts.fetch,
        }
    }

    /// Make `set` the handlers of `generation` (call before the policy itself is swapped).
    /// Instances the older generations keep for reuse are dropped: requests still running
    /// on them finish, later ones run the new handler versions.
    pub fn install(&self, generation: u64, set: HandlerSet) {
        let mut sets: Vec<(u64, Arc<HandlerSet>)> = self.handlers.load().as_ref().clone();
        for (_, old) in &sets {
            for h in old.values() {
                h.retire_instances();
            }
        }
        sets.push((generation, Arc::new(set)));
        let excess = sets.len().saturating_sub(KEEP_GENERATIONS);
        sets.drain(..excess);
        self.handlers.store(Arc::new(sets));
    }

    fn handler(&self, generation: u64, name: &str) -> Option<Arc<egret_wasm::LoadedHandler>> {
        let sets = self.handlers.load();
        let set = sets
            .iter()
            .rev()
            .find(|(g, _)| *g <= generation)
            .or(sets.last())
            .map(|(_, s)| s)?;
        set.get(name).cloned()
    }

    /// What `binding` may call besides its secrets and kv.
    fn services(&self, binding: &egret_policy::Binding) -> egret_wasm::Services {
        let fetch = binding.fetch.clone().map(|grant| {
            Arc::new(BoundFetcher {
                client: self.fetch.clone(),
                grant,
            }) as Arc<dyn egret_wasm::Fetcher>
        });
        let (max_fetches, fetch_timeout) = binding
            .fetch
            .as_ref()
            .map_or((0, std::time::Duration::ZERO), |g| (g.max_calls, g.timeout));
        egret_wasm::Services {
            fetch,
            max_fetches,
            fetch_timeout,
            mint: (!binding.mint.is_empty()).then(|| self.secrets.clone()),
            response_streams: matches!(
                binding.response,
                Some((egret_policy::ResponseMode::Stream, _))
            ),
        }
    }

    async fn run(
        &self,
        binding: &egret_policy::Binding,
        generation: u64,
        head: egret_proxy::RequestHead<'_>,
        body: Option<bytes::Bytes>,
    ) -> Result<egret_proxy::Dispatched, egret_proxy::HandlerFailure> {
        let Some(loaded) = self.handler(generation, &binding.handler) else {
            return Err(failure(
                http::StatusCode::BAD_GATEWAY,
                HandlerFailureKind::NotLoaded,
                format!("handler `{}` is not loaded", binding.handler),
            ));
        };
        let grants = egret_wasm::Grants {
            secrets: binding.grants.clone(),
            reveal: binding.reveal.clone(),
            mint: binding.mint.clone(),
        };
        let spec = egret_wasm::SessionSpec {
            handler_name: &binding.handler,
            sandbox_id: &self.sandbox_id,
            params_json: &binding.params_json,
            grants: &grants,
            secrets: &*self.secrets,
            kv: &self.kv,
            limits: egret_wasm::Limits {
                timeout: binding.timeout,
                memory_bytes: binding.memory_bytes as usize,
            },
            services: self.services(binding),
            reuse: binding.reuse_instances,
        };
        let mut session = self
            .host
            .session(&loaded, spec)
            .await
            .map_err(handler_failure)?;
        let instance_wait = session.waited();
        let resolved = session.handle(wasm_head(head), body).await.map_err(|e| {
            egret_proxy::HandlerFailure {
                instance_wait,
                ..handler_failure(e)
            }
        })?;
        let action = proxy_action(resolved);
        let audit_fields = session.audit_fields().to_vec();
        let response = match (&action, binding.response) {
            // A local answer has no response phase.
            (egret_proxy::HandlerAction::Respond(_), _) | (_, None) => None,
            (_, Some((mode, max))) => Some(Box::new(SessionPhase {
                session,
                mode: proxy_response_mode(mode, max),
                metrics: self.metrics.clone(),
            }) as Box<dyn egret_proxy::ResponsePhase>),
        };
        Ok(egret_proxy::Dispatched {
            action,
            response,
            instance_wait,
            audit_fields,
        })
    }
}

/// The request head as the guest sees it.
fn wasm_head(head: egret_proxy::RequestHead<'_>) -> egret_wasm::RequestHead {
    egret_wasm::RequestHead {
        method: head.method.as_str().to_string(),
        scheme: head.scheme.to_string(),
        authority: head.authority,
        path_with_query: head.path_and_query.to_string(),
        headers: head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
    }
}

/// The guest's validated decision as the proxy carries it out.
fn proxy_action(resolved: egret_wasm::ResolvedAction) -> egret_proxy::HandlerAction {
    match resolved {
        egret_wasm::ResolvedAction::Forward {
            set,
            remove,
            path_and_query,
            body,
            filled,
            ..
        } => egret_proxy::HandlerAction::Forward {
            set,
            remove,
            path_and_query,
            body,
            filled: filled
                .0
                .iter()
                .map(|v| bytes::Bytes::copy_from_slice(v.expose()))
                .collect(),
        },
        egret_wasm::ResolvedAction::Respond {
            status,
            headers,
            body,
        } => egret_proxy::HandlerAction::Respond(local_response(status, headers, body)),
    }
}

/// A response a handler made: a local answer, or the one that replaces the upstream's.
fn local_response(
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> http::Response<bytes::Bytes> {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A binding's response phase (`max`: its buffer or event bound) in the proxy's terms.
fn proxy_response_mode(mode: egret_policy::ResponseMode, max: u64) -> egret_proxy::ResponseMode {
    match mode {
        egret_policy::ResponseMode::Head => egret_proxy::ResponseMode::Head,
        egret_policy::ResponseMode::Buffer => egret_proxy::ResponseMode::Buffer(max),
        egret_policy::ResponseMode::Observe => egret_proxy::ResponseMode::Observe,
        egret_policy::ResponseMode::Stream => egret_proxy::ResponseMode::Stream(max),
    }
}

impl egret_proxy::HandlerDispatch for WasmDispatch {
    fn dispatch<'a>(
        &'a self,
        binding: &'a egret_policy::Binding,
        generation: u64,
        head: egret_proxy::RequestHead<'a>,
        body: Option<bytes::Bytes>,
    ) -> BoxFuture<'a, Result<egret_proxy::Dispatched, egret_proxy::HandlerFailure>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let result = self.run(binding, generation, head, body).await;
            let (waited, failure) = match &result {
                Ok(d) => (d.instance_wait, None),
                Err(f) => (f.instance_wait, Some(f.kind)),
            };
            let refused = failure == Some(HandlerFailureKind::Busy);
            self.metrics.instance_wait(waited, refused);
            // The run time is the handler's: the wait for a slot is counted on its own.
            let took = start.elapsed().saturating_sub(waited.unwrap_or_default());
            self.metrics.handler(took, failure);
            result
        })
    }

    fn module_sha256(&self, handler: &str, generation: u64) -> Option<Arc<str>> {
        self.handler(generation, handler)
            .map(|h| h.sha256_hex.clone())
    }
}

/// A request's handler instance, kept for its response phase.
struct SessionPhase {
    session: egret_wasm::Session,
    mode: egret_proxy::ResponseMode,
    metrics: Arc<egret_proxy::metrics::Metrics>,
}

impl SessionPhase {
    fn count<T>(
        &self,
        start: std::time::Instant,
        r: Result<T, egret_wasm::HandlerError>,
    ) -> Result<T, egret_proxy::HandlerFailure> {
        let r = r.map_err(handler_failure);
        let failure = r.as_ref().err().map(|f| f.kind);
        self.metrics.handler(start.elapsed(), failure);
        r
    }
}

impl egret_proxy::ResponsePhase for SessionPhase {
    fn mode(&self) -> egret_proxy::ResponseMode {
        self.mode
    }

    fn audit_fields(&self) -> Vec<(String, String)> {
        self.session.audit_fields().to_vec()
    }

    fn decide<'a>(
        &'a mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Option<bytes::Bytes>,
    ) -> BoxFuture<'a, Result<egret_proxy::ResponseDecision, egret_proxy::HandlerFailure>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let r = self.session.on_response(status, headers, body).await;
            Ok(match self.count(start, r)? {
                egret_wasm::ResolvedResponseAction::Pass { set, remove, body } => {
                    egret_proxy::ResponseDecision::Pass { set, remove, body }
                }
                egret_wasm::ResolvedResponseAction::Replace {
                    status,
                    headers,
                    body,
                } => egret_proxy::ResponseDecision::Replace(local_response(status, headers, body)),
            })
        })
    }

    fn chunk<'a>(
        &'a mut self,
        chunk: bytes::Bytes,
    ) -> BoxFuture<'a, Result<(), egret_proxy::HandlerFailure>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let r = self.session.chunk(&chunk).await;
            self.count(start, r)
        })
    }

    fn end<'a>(&'a mut self) -> BoxFuture<'a, Result<(), egret_proxy::HandlerFailure>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let r = self.session.end().await;
            self.count(start, r)
        })
    }

    fn event<'a>(
        &'a mut self,
        event: bytes::Bytes,
    ) -> BoxFuture<'a, Result<egret_proxy::EventDecision, egret_proxy::HandlerFailure>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let r = self.session.event(&event).await;
            Ok(match self.count(start, r)? {
                egret_wasm::EventAction::Pass => egret_proxy::EventDecision::Pass,
                egret_wasm::EventAction::Replace(b) => egret_proxy::EventDecision::Replace(b),
                egret_wasm::EventAction::Drop => egret_proxy::EventDecision::Drop,
            })
        })
    }
}

/// `fetch` for one binding: its host grant over the sandbox's fetch client.
struct BoundFetcher {
    client: Arc<egret_proxy::fetch::FetchClient>,
    grant: Arc<egret_policy::FetchGrant>,
}

impl egret_wasm::Fetcher for BoundFetcher {
    fn fetch(&self, call: egret_wasm::FetchCall) -> egret_wasm::FetchFuture {
        let (client, grant) = (self.client.clone(), self.grant.clone());
        Box::pin(async move {
            let req = egret_proxy::fetch::FetchRequest {
                handler: call.handler,
                method: call.method,
                url: call.url,
                headers: call.headers,
                body: call.body,
            };
            let resp = client.fetch(&grant, req).await?;
            Ok(egret_wasm::FetchReply {
                status: resp.status,
                headers: resp
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                body: resp.body,
            })
        })
    }
}

/// `fetch` for `egret handler run`: the author's own machine, outside any sandbox, so every
/// address may be dialled (a local test server on loopback included); the host grant,
/// certificate verification and the bounds still apply. Each call's audit line is published
/// on the returned sink's live feed, for the runner to print.
pub fn offline_fetcher(
    hosts: &[String],
    limits: egret_policy::FetchConfig,
    upstream_ca: &[std::path::PathBuf],
) -> Result<(Arc<dyn egret_wasm::Fetcher>, Arc<egret_proxy::AuditSink>), crate::AppError> {
    let mut cfg = egret_policy::PolicyConfig {
        allowed_upstream_cidrs: vec!["0.0.0.0/0".into(), "::/0".into()],
        ..egret_policy::PolicyConfig::default()
    };
    let mut handler = egret_policy::HandlerConfig::new("offline.wasm");
    handler.fetch_hosts = hosts.to_vec();
    handler.fetch = Some(limits);
    cfg.handlers.insert("offline".into(), handler);
    cfg.outbound = Some(egret_policy::BindingConfig::new("offline"));
    let compiled = CompiledPolicy::compile(&cfg, &egret_policy::RuntimeLayer::default(), 1)?;
    let grant = compiled
        .bindings()
        .first()
        .and_then(|b| b.fetch.clone())
        .expect("a binding with fetch_hosts has a fetch grant");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = egret_tls::UpstreamTls::new(upstream_ca)?;
    let audit = egret_proxy::AuditSink::start(egret_proxy::AuditOutput::Discard)?;
    let client = Arc::new(egret_proxy::fetch::FetchClient::new(
        "offline",
        Arc::new(ArcSwap::from_pointee(compiled)),
        Arc::new(|_| false),
        Some(tls.client_config(egret_tls::UpstreamAlpn::H2AndHttp11)),
        limits_timeout(&limits),
        audit.clone(),
        Arc::new(egret_proxy::metrics::Metrics::default()),
    ));
    Ok((Arc::new(BoundFetcher { client, grant }), audit))
}

fn limits_timeout(l: &egret_policy::FetchConfig) -> std::time::Duration {
    std::time::Duration::from_millis(l.timeout_ms)
}

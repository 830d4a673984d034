//! Adapters that connect the library crates to each other. Each crate stays ignorant of the
//! others; this is the one place where DNS → HTTP → handlers are wired.
use arc_swap::ArcSwap;
use egret_policy::CompiledPolicy;
use futures_util::future::BoxFuture;
use std::net::IpAddr;
use std::sync::Arc;

/// The policy as the DNS server sees it: one question, may this name be answered.
pub struct PolicyNames(pub Arc<ArcSwap<CompiledPolicy>>);

impl egret_dns::NamePolicy for PolicyNames {
    fn decide(&self, name: &str) -> egret_dns::NameDecision {
        match self.0.load().dns_decision(name) {
            egret_policy::DnsDecision::Answer => egret_dns::NameDecision::Answer,
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

/// The handler engine as the data path sees it: wasmtime host, secrets, kv.
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
}

fn failure(
    status: http::StatusCode,
    kind: &'static str,
    message: String,
) -> egret_proxy::HandlerFailure {
    egret_proxy::HandlerFailure {
        status,
        kind,
        message,
    }
}

/// Handler sets kept for generations older than the newest.
const KEEP_GENERATIONS: usize = 8;

impl WasmDispatch {
    /// A dispatcher whose first handler set belongs to `generation`.
    pub fn new(
        host: Arc<egret_wasm::HandlerHost>,
        generation: u64,
        set: HandlerSet,
        secrets: Arc<egret_wasm::SecretStore>,
        kv: Arc<egret_wasm::KvStore>,
        sandbox_id: Arc<str>,
        metrics: Arc<egret_proxy::metrics::Metrics>,
    ) -> WasmDispatch {
        WasmDispatch {
            host,
            handlers: ArcSwap::from_pointee(vec![(generation, Arc::new(set))]),
            secrets,
            kv,
            sandbox_id,
            metrics,
        }
    }

    /// Make `set` the handlers of `generation` (call before the policy itself is swapped).
    pub fn install(&self, generation: u64, set: HandlerSet) {
        let mut sets: Vec<(u64, Arc<HandlerSet>)> = self.handlers.load().as_ref().clone();
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
}

impl egret_proxy::HandlerDispatch for WasmDispatch {
    fn dispatch<'a>(
        &'a self,
        binding: &'a egret_policy::Binding,
        generation: u64,
        head: egret_proxy::RequestHead<'a>,
    ) -> BoxFuture<'a, Result<egret_proxy::HandlerAction, egret_proxy::HandlerFailure>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let result = self.run(binding, generation, head).await;
            let failure = result
                .as_ref()
                .err()
                .map(|f| egret_proxy::metrics::HandlerFailureKind::from_kind(f.kind));
            self.metrics.handler(start.elapsed(), failure);
            result
        })
    }

    fn module_sha256(&self, handler: &str, generation: u64) -> Option<Arc<str>> {
        self.handler(generation, handler)
            .map(|h| h.sha256_hex.clone())
    }
}

impl WasmDispatch {
    async fn run(
        &self,
        binding: &egret_policy::Binding,
        generation: u64,
        head: egret_proxy::RequestHead<'_>,
    ) -> Result<egret_proxy::HandlerAction, egret_proxy::HandlerFailure> {
        {
            let Some(loaded) = self.handler(generation, &binding.handler) else {
                return Err(failure(
                    http::StatusCode::BAD_GATEWAY,
                    "not_loaded",
                    format!("handler `{}` is not loaded", binding.handler),
                ));
            };
            let request = egret_wasm::RequestHead {
                method: head.method.as_str().to_string(),
                scheme: head.scheme.to_string(),
                authority: head.authority,
                path_with_query: head.path_and_query.to_string(),
                headers: head
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect(),
            };
            let grants = egret_wasm::Grants {
                secrets: binding.grants.clone(),
                reveal: binding.reveal.clone(),
            };
            let inv = egret_wasm::Invocation {
                handler_name: &binding.handler,
                sandbox_id: &self.sandbox_id,
                params_json: &binding.params_json,
                request: &request,
                grants: &grants,
                secrets: &*self.secrets,
                kv: &self.kv,
                limits: egret_wasm::Limits {
                    timeout: binding.timeout,
                    memory_bytes: binding.memory_bytes as usize,
                },
            };
            match self.host.handle(&loaded, inv).await {
                Ok(egret_wasm::ResolvedAction::Forward {
                    set,
                    remove,
                    path_and_query,
                    ..
                }) => Ok(egret_proxy::HandlerAction::Forward {
                    set,
                    remove,
                    path_and_query,
                }),
                Ok(egret_wasm::ResolvedAction::Respond {
                    status,
                    headers,
                    body,
                }) => {
                    let mut resp = http::Response::new(body);
                    *resp.status_mut() = status;
                    *resp.headers_mut() = headers;
                    Ok(egret_proxy::HandlerAction::Respond(resp))
                }
                Err(e) => Err(failure(
                    http::StatusCode::BAD_GATEWAY,
                    e.kind(),
                    e.to_string(),
                )),
            }
        }
    }
}

//! The control plane: applies admin changes to the running proxy as transactions. Every change
//! is validated completely (policy compiled, patterns parsed, handler names resolved, modules
//! compiled) before anything is swapped; then the handler set and the policy are swapped and
//! the generation goes up by one. Changes are serialised by one async mutex. With
//! `--state-dir`, the accepted state is saved so a restarted egret comes back with the rules
//! it had.
use crate::glue::{HandlerSet, WasmDispatch};
use crate::modules::{uses_uploaded, ModuleSource};
use crate::policy_source::{compile, sha256_hex};
use crate::state::{State, StateDir};
use crate::telemetry::Telemetry;
use arc_swap::ArcSwap;
use bytes::Bytes;
use egret_admin::{Applied, Change, Control, ControlError, ModuleInfo, PolicyView, Status};
use egret_policy::{CompiledPolicy, PolicyConfig, RuntimeLayer};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

mod shadow;

/// Everything the control plane works on.
pub struct ControlParts {
    /// This sandbox.
    pub sandbox_id: String,
    /// The policy the data path reads.
    pub policy: Arc<ArcSwap<CompiledPolicy>>,
    /// The shadow candidate the data path also asks, when one is loaded.
    pub shadow: egret_proxy::ShadowSlot,
    /// The handler engine (host, handler sets, secrets, kv).
    pub dispatch: Arc<WasmDispatch>,
    /// The data path (told about every swap, so open tunnels re-check).
    pub proxy: Arc<egret_proxy::Proxy>,
    /// `/metrics` and the status counters.
    pub telemetry: Arc<Telemetry>,
    /// The audit log (its live feed serves `GET /v1/audit`).
    pub audit: Arc<egret_proxy::AuditSink>,
    /// `--resolve` pins, applied to every compiled generation.
    pub pins: Vec<(String, IpAddr)>,
    /// Relative module paths start here.
    pub policy_dir: PathBuf,
    /// `--state-dir`.
    pub state_dir: Option<StateDir>,
    /// The sandbox CA certificate, PEM.
    pub ca_pem: String,
    /// The state in force at start.
    pub state: State,
    /// Modules uploaded before start (restored from `--state-dir`).
    pub uploaded: BTreeMap<String, Bytes>,
    /// `--ask`: the questions a supervisor may answer.
    pub ask: Option<Arc<crate::ask::AskBroker>>,
}

/// What a change reads and replaces; kept under the mutex.
struct Guarded {
    state: State,
    /// The shadow candidate's static layer, while one is loaded.
    shadow_cfg: Option<PolicyConfig>,
    uploaded: BTreeMap<String, Bytes>,
    infos: BTreeMap<String, ModuleInfo>,
}

/// The control plane of one egret.
pub struct ControlPlane {
    sandbox_id: String,
    started: Instant,
    policy: Arc<ArcSwap<CompiledPolicy>>,
    shadow: egret_proxy::ShadowSlot,
    dispatch: Arc<WasmDispatch>,
    proxy: Arc<egret_proxy::Proxy>,
    telemetry: Arc<Telemetry>,
    audit: Arc<egret_proxy::AuditSink>,
    pins: Vec<(String, IpAddr)>,
    policy_dir: PathBuf,
    state_dir: Option<StateDir>,
    ca_pem: String,
    guarded: tokio::sync::Mutex<Guarded>,
    /// The uploaded modules as `GET /v1/modules` lists them (readable without the mutex).
    module_list: std::sync::Mutex<Vec<ModuleInfo>>,
    ask: Option<Arc<crate::ask::AskBroker>>,
}

fn invalid(msg: impl Into<String>) -> ControlError {
    ControlError::Invalid {
        problems: vec![msg.into()],
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn module_info(name: &str, bytes: &Bytes) -> ModuleInfo {
    ModuleInfo {
        name: name.to_string(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        loaded_at: now_secs(),
    }
}

impl ControlPlane {
    /// A control plane over `parts`.
    pub fn new(parts: ControlParts) -> ControlPlane {
        let infos: BTreeMap<String, ModuleInfo> = parts
            .uploaded
            .iter()
            .map(|(name, bytes)| (name.clone(), module_info(name, bytes)))
            .collect();
        ControlPlane {
            sandbox_id: parts.sandbox_id,
            started: Instant::now(),
            policy: parts.policy,
            shadow: parts.shadow,
            dispatch: parts.dispatch,
            proxy: parts.proxy,
            telemetry: parts.telemetry,
            audit: parts.audit,
            pins: parts.pins,
            policy_dir: parts.policy_dir,
            state_dir: parts.state_dir,
            ca_pem: parts.ca_pem,
            module_list: std::sync::Mutex::new(infos.values().cloned().collect()),
            ask: parts.ask,
            guarded: tokio::sync::Mutex::new(Guarded {
                state: parts.state,
                shadow_cfg: None,
                uploaded: parts.uploaded,
                infos,
            }),
        }
    }

    /// Validate `cfg`+`rt` completely as `generation`: the policy compiled, every module it
    /// names read and compiled. Nothing is installed.
    async fn prepare(
        &self,
        g: &Guarded,
        cfg: &PolicyConfig,
        rt: &RuntimeLayer,
        generation: u64,
    ) -> Result<(CompiledPolicy, HandlerSet), ControlError> {
        let compiled = compile(cfg, rt, generation, &self.pins)?;
        let source = ModuleSource {
            policy_dir: &self.policy_dir,
            uploaded: &g.uploaded,
        };
        let modules = source.read(cfg).map_err(|e| invalid(e.to_string()))?;
        let set = crate::handlers::load(&self.dispatch.host, modules)
            .await
            .map_err(|refused| ControlError::Invalid {
                problems: refused
                    .iter()
                    .map(|r| format!("handlers.{}.module ({}): {}", r.handler, r.module, r.error))
                    .collect(),
            })?;
        Ok((compiled, set))
    }

    /// Validate `cfg`+`rt` completely, then swap it in as the next generation.
    async fn commit(
        &self,
        g: &mut Guarded,
        cfg: PolicyConfig,
        rt: RuntimeLayer,
        kind: &'static str,
    ) -> Result<Applied, ControlError> {
        let generation = g.state.generation + 1;
        let (compiled, set) = self.prepare(g, &cfg, &rt, generation).await?;
        let mut warnings: Vec<String> = compiled
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect();
        // Handlers first, then the policy that refers to them.
        self.dispatch.install(generation, set);
        self.policy.store(Arc::new(compiled));
        self.telemetry.swapped();
        self.proxy.policy_changed();
        warnings.extend(self.reshadow(g, &rt, generation));
        g.state.cfg = cfg;
        g.state.runtime = rt;
        g.state.generation = generation;
        tracing::info!(generation, change = kind, "policy swapped");
        self.persist(g);
        Ok(Applied {
            generation,
            warnings,
        })
    }

    /// Save the state when `--state-dir` is set. A failure is logged: the change is in force
    /// either way.
    fn persist(&self, g: &Guarded) {
        let Some(dir) = &self.state_dir else { return };
        let secrets: BTreeMap<String, String> = self
            .dispatch
            .secrets
            .names()
            .into_iter()
            .filter_map(|n| {
                let v = self.dispatch.secrets.get(&n)?;
                Some((n, String::from_utf8_lossy(v.expose()).into_owned()))
            })
            .collect();
        if let Err(e) = dir.save(&g.state, &g.uploaded, &secrets) {
            tracing::error!(error = %e, dir = %dir.path().display(), "could not persist runtime state");
        }
    }

    async fn apply_inner(
        &self,
        change: Change,
        if_generation: Option<u64>,
    ) -> Result<Applied, ControlError> {
        let mut guard = self.guarded.lock().await;
        let g = &mut *guard;
        check_generation(g, if_generation)?;
        let kind = change.kind();
        let mut cfg = g.state.cfg.clone();
        let mut rt = g.state.runtime.clone();
        match change {
            Change::SetOutbound(b) => rt.outbound = b,
            Change::SetOutboundByHost(routes) => {
                // The routes given replace every runtime route of their hosts, as a set: several
                // request rules for one host stay together, in the order given.
                for existing in rt.routes.iter_mut() {
                    existing
                        .hosts
                        .retain(|h| !routes.iter().any(|r| r.hosts.contains(h)));
                }
                rt.routes.retain(|x| !x.hosts.is_empty());
                rt.routes.extend(routes);
            }
            Change::RemoveOutboundByHost(hosts) => {
                let before: usize = rt.routes.iter().map(|r| r.hosts.len()).sum();
                for r in rt.routes.iter_mut() {
                    r.hosts.retain(|h| !hosts.contains(h));
                }
                rt.routes.retain(|x| !x.hosts.is_empty());
                let after: usize = rt.routes.iter().map(|r| r.hosts.len()).sum();
                if before == after {
                    return Err(ControlError::NotFound(format!(
                        "no runtime route for {}",
                        hosts.join(", ")
                    )));
                }
            }
            Change::AllowedHosts { add, remove } => edit_list(&mut cfg.allowed_hosts, add, remove),
            Change::DeniedHosts { add, remove } => edit_list(&mut cfg.denied_hosts, add, remove),
            Change::SetInternet(on) => cfg.internet = on,
            Change::SetHandler { name, config } => {
                cfg.handlers.insert(name, *config);
            }
            Change::RemoveHandler(name) => {
                if cfg.handlers.remove(&name).is_none() {
                    return Err(ControlError::NotFound(format!("no handler named {name:?}")));
                }
            }
            Change::SetSecret { name, value } => {
                if !egret_policy::is_valid_name(&name) {
                    return Err(invalid(format!(
                        "invalid secret name {name:?}: use [A-Za-z0-9_.-], 1-64 characters"
                    )));
                }
                self.dispatch
                    .secrets
                    .set(name.clone(), value.expose().as_bytes().to_vec());
                tracing::info!(secret = %name, "secret set");
                self.persist(g);
                return Ok(Applied {
                    generation: g.state.generation,
                    warnings: vec![],
                });
            }
            Change::RemoveSecret(name) => {
                if !self.dispatch.secrets.remove(&name) {
                    return Err(ControlError::NotFound(format!("no secret named {name:?}")));
                }
                tracing::info!(secret = %name, "secret removed");
                self.persist(g);
                return Ok(Applied {
                    generation: g.state.generation,
                    warnings: vec![],
                });
            }
            Change::ReplacePolicy(new) => cfg = *new,
        }
        self.commit(g, cfg, rt, kind).await
    }

    async fn upload_inner(&self, name: String, bytes: Bytes) -> Result<ModuleInfo, ControlError> {
        if !egret_policy::is_valid_name(&name) {
            return Err(invalid(format!(
                "invalid module name {name:?}: use [A-Za-z0-9_.-], 1-64 characters"
            )));
        }
        // Compile first: a module that is not a valid handler is refused with nothing changed.
        self.dispatch
            .host
            .load(&name, &bytes)
            .await
            .map_err(|e| invalid(format!("module {name}: {e}")))?;
        let mut guard = self.guarded.lock().await;
        let g = &mut *guard;
        let info = module_info(&name, &bytes);
        let previous = g.uploaded.insert(name.clone(), bytes);
        if let Some(dir) = &self.state_dir {
            dir.forget_module(&name);
        }
        if uses_uploaded(&g.state.cfg, &name) {
            let (cfg, rt) = (g.state.cfg.clone(), g.state.runtime.clone());
            if let Err(e) = self.commit(g, cfg, rt, "upload_module").await {
                match previous {
                    Some(p) => g.uploaded.insert(name, p),
                    None => g.uploaded.remove(&name),
                };
                return Err(e);
            }
        } else {
            self.persist(g);
        }
        g.infos.insert(name, info.clone());
        if let Ok(mut list) = self.module_list.lock() {
            *list = g.infos.values().cloned().collect();
        }
        Ok(info)
    }
}

/// The `if-generation` precondition, checked under the mutex so it is atomic with the change.
fn check_generation(g: &Guarded, if_generation: Option<u64>) -> Result<(), ControlError> {
    match if_generation {
        Some(expected) if expected != g.state.generation => Err(ControlError::Conflict {
            expected,
            current: g.state.generation,
        }),
        _ => Ok(()),
    }
}

fn edit_list(list: &mut Vec<String>, add: Vec<String>, remove: Vec<String>) {
    list.retain(|x| !remove.contains(x));
    for a in add {
        if !list.contains(&a) {
            list.push(a);
        }
    }
}

impl Control for ControlPlane {
    fn status(&self) -> Status {
        Status {
            sandbox_id: self.sandbox_id.clone(),
            generation: self.policy.load().generation(),
            uptime_secs: self.started.elapsed().as_secs(),
            counters: self.telemetry.status_counters(),
        }
    }

    fn policy(&self) -> PolicyView {
        let p = self.policy.load();
        PolicyView {
            generation: p.generation(),
            policy: p.config().clone(),
            runtime: p.runtime().clone(),
            secrets: self.dispatch.secrets.names(),
        }
    }

    fn apply(
        &self,
        change: Change,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        Box::pin(self.apply_inner(change, if_generation))
    }

    fn upload_module(
        &self,
        name: String,
        bytes: Bytes,
    ) -> BoxFuture<'_, Result<ModuleInfo, ControlError>> {
        Box::pin(self.upload_inner(name, bytes))
    }

    fn modules(&self) -> Vec<ModuleInfo> {
        self.module_list
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    fn metrics(&self) -> String {
        self.telemetry.render()
    }

    fn subscribe_audit(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        Some(self.audit.subscribe())
    }

    fn pending(&self) -> Vec<egret_admin::PendingQuestion> {
        let Some(ask) = &self.ask else {
            return Vec::new();
        };
        ask.pending()
            .into_iter()
            .map(|(id, q)| egret_admin::PendingQuestion {
                id,
                host: q.host.to_string(),
                port: q.port,
                method: q.method,
                path: q.path,
            })
            .collect()
    }

    fn decide(
        &self,
        id: u64,
        approve: Option<egret_admin::AskScope>,
    ) -> egret_admin::BoxFuture<'_, Result<(), ControlError>> {
        use crate::ask::{Reply, Scope};
        Box::pin(async move {
            let Some(ask) = &self.ask else {
                return Err(ControlError::NotFound(format!(
                    "no pending question {id}: egret runs without --ask"
                )));
            };
            let reply = match approve {
                None => Reply::Deny,
                Some(egret_admin::AskScope::Once) => Reply::Approve(Scope::Once),
                Some(egret_admin::AskScope::Run) => Reply::Approve(Scope::Run),
                Some(egret_admin::AskScope::Always) => Reply::Approve(Scope::Always),
            };
            match ask.decide(id, reply, egret_proxy::DecidedBy::Admin).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ControlError::NotFound(format!(
                    "no pending question {id}: it was answered or timed out (see egret ctl pending)"
                ))),
                Err(e) => Err(ControlError::Internal(e)),
            }
        })
    }

    fn shadow_load(
        &self,
        policy: PolicyConfig,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        Box::pin(self.shadow_load_inner(policy, if_generation))
    }

    fn shadow_report(&self) -> Result<egret_admin::ShadowView, ControlError> {
        let slot = self.shadow.load();
        let shadow = slot.as_deref().ok_or_else(egret_admin::shadow::no_shadow)?;
        Ok(self.shadow_view(shadow))
    }

    fn shadow_promote(
        &self,
        if_generation: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, ControlError>> {
        Box::pin(self.shadow_promote_inner(if_generation))
    }

    fn shadow_drop(&self) -> BoxFuture<'_, Result<egret_admin::ShadowView, ControlError>> {
        Box::pin(self.shadow_drop_inner())
    }
}

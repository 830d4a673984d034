//! The control plane: applies admin changes to the running proxy. Every change is validated
//! completely (policy compiled, patterns parsed, handler names resolved, modules compiled)
//! before anything is swapped; then the handler set and the policy are swapped atomically and
//! the generation goes up by one. Changes are serialised by one async mutex. With
//! `--state-dir`, the accepted state is written atomically (0600) so a restarted egret comes
//! back with the rules it had.
use crate::glue::{HandlerSet, WasmDispatch};
use arc_swap::ArcSwap;
use bytes::Bytes;
use egret_admin::{Applied, Change, Control, ControlError, ModuleInfo, PolicyView, Status};
use egret_policy::{CompiledPolicy, PolicyConfig, RuntimeLayer};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Reads the data path's named counters.
pub type CounterFn = Arc<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// Prefix of a handler `module` that names an uploaded module.
pub const UPLOADED: &str = "uploaded:";

/// What a change replaces; kept under the mutex.
#[derive(Clone, Serialize, Deserialize)]
pub struct State {
    /// Static layer (file + admin edits).
    pub cfg: PolicyConfig,
    /// Runtime layer.
    pub runtime: RuntimeLayer,
    /// Generation in force.
    pub generation: u64,
    /// sha256 of the policy file this state started from (to detect an edited file).
    #[serde(default)]
    pub policy_file_sha256: String,
}

struct Uploaded {
    bytes: Bytes,
    info: ModuleInfo,
}

/// The control plane of one egret.
pub struct ControlPlane {
    pub sandbox_id: String,
    started: Instant,
    policy: Arc<ArcSwap<CompiledPolicy>>,
    dispatch: Arc<WasmDispatch>,
    pins: Vec<(String, IpAddr)>,
    policy_dir: PathBuf,
    state_dir: Option<PathBuf>,
    ca_pem: String,
    state: tokio::sync::Mutex<(State, BTreeMap<String, Uploaded>)>,
    module_infos: std::sync::Mutex<Vec<ModuleInfo>>,
    swaps: AtomicU64,
    /// Called after every swap (tells open tunnels to re-check), set once the proxy exists.
    pub on_swap: OnceLock<Arc<dyn Fn() + Send + Sync>>,
    /// Counters of the data path, set once the proxy exists.
    pub metrics: OnceLock<CounterFn>,
    /// What `/metrics` renders besides the policy families, set once the proxy exists.
    pub exposition: OnceLock<crate::metrics::Sources>,
    /// The audit sink (feeds `GET /v1/audit`), set once it exists.
    pub audit: OnceLock<Arc<egret_proxy::AuditSink>>,
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

/// sha256 hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compile a policy from its two layers plus the CLI pins.
pub fn compile(
    cfg: &PolicyConfig,
    rt: &RuntimeLayer,
    generation: u64,
    pins: &[(String, IpAddr)],
) -> Result<CompiledPolicy, egret_policy::PolicyError> {
    CompiledPolicy::compile(cfg, rt, generation)?.with_extra_pins(pins.iter().cloned())
}

impl ControlPlane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sandbox_id: &str,
        policy: Arc<ArcSwap<CompiledPolicy>>,
        dispatch: Arc<WasmDispatch>,
        pins: Vec<(String, IpAddr)>,
        policy_dir: PathBuf,
        state_dir: Option<PathBuf>,
        ca_pem: String,
        state: State,
        uploaded: Vec<(String, Bytes)>,
    ) -> ControlPlane {
        let modules: BTreeMap<String, Uploaded> = uploaded
            .into_iter()
            .map(|(name, bytes)| {
                let info = ModuleInfo {
                    name: name.clone(),
                    sha256: sha256_hex(&bytes),
                    size: bytes.len() as u64,
                    loaded_at: now_secs(),
                };
                (name, Uploaded { bytes, info })
            })
            .collect();
        let infos = modules.values().map(|u| u.info.clone()).collect();
        ControlPlane {
            sandbox_id: sandbox_id.to_string(),
            started: Instant::now(),
            policy,
            dispatch,
            pins,
            policy_dir,
            state_dir,
            ca_pem,
            state: tokio::sync::Mutex::new((state, modules)),
            module_infos: std::sync::Mutex::new(infos),
            swaps: AtomicU64::new(0),
            metrics: OnceLock::new(),
            exposition: OnceLock::new(),
            audit: OnceLock::new(),
            on_swap: OnceLock::new(),
        }
    }

    /// Module bytes for every handler of `cfg`: uploaded ones by name, files relative to the
    /// policy file.
    fn module_bytes(
        &self,
        cfg: &PolicyConfig,
        uploaded: &BTreeMap<String, Uploaded>,
    ) -> Result<Vec<(String, String, Bytes)>, ControlError> {
        let mut out = Vec::new();
        for (name, h) in &cfg.handlers {
            if let Some(m) = h.module.strip_prefix(UPLOADED) {
                let u = uploaded.get(m).ok_or_else(|| {
                    invalid(format!(
                        "handlers.{name}.module: no uploaded module named {m:?}; upload it first (egret ctl module upload {m} FILE)"
                    ))
                })?;
                out.push((name.clone(), h.module.clone(), u.bytes.clone()));
            } else {
                let path = if Path::new(&h.module).is_absolute() {
                    PathBuf::from(&h.module)
                } else {
                    self.policy_dir.join(&h.module)
                };
                let bytes = std::fs::read(&path).map_err(|e| {
                    invalid(format!(
                        "handlers.{name}.module: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                out.push((name.clone(), h.module.clone(), Bytes::from(bytes)));
            }
        }
        Ok(out)
    }

    async fn load_set(
        &self,
        modules: Vec<(String, String, Bytes)>,
    ) -> Result<HandlerSet, ControlError> {
        let mut set = HandlerSet::new();
        let mut problems = Vec::new();
        let compiled_before = self.dispatch.host.stats().compiled;
        for (name, module, bytes) in modules {
            match self.dispatch.host.load(&name, &bytes).await {
                Ok(h) => {
                    set.insert(name, h);
                }
                Err(e) => problems.push(format!("handlers.{name}.module ({module}): {e}")),
            }
        }
        if self.dispatch.host.stats().compiled != compiled_before {
            crate::run::release_free_heap();
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(ControlError::Invalid { problems })
        }
    }

    /// Validate `cfg`+`rt` completely, then swap it in as the next generation.
    async fn commit(
        &self,
        st: &mut State,
        uploaded: &BTreeMap<String, Uploaded>,
        cfg: PolicyConfig,
        rt: RuntimeLayer,
        kind: &'static str,
    ) -> Result<Applied, ControlError> {
        let generation = st.generation + 1;
        let compiled = compile(&cfg, &rt, generation, &self.pins)?;
        let warnings: Vec<String> = compiled
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect();
        let set = self.load_set(self.module_bytes(&cfg, uploaded)?).await?;
        // Handlers first, then the policy that refers to them.
        self.dispatch.install(generation, set);
        self.policy.store(Arc::new(compiled));
        self.swaps.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.on_swap.get() {
            f();
        }
        st.cfg = cfg;
        st.runtime = rt;
        st.generation = generation;
        tracing::info!(generation, change = kind, "policy swapped");
        self.persist(st, uploaded);
        Ok(Applied {
            generation,
            warnings,
        })
    }

    /// Write the state atomically (0600) when `--state-dir` is set. A failure is logged: the
    /// change is in force either way.
    fn persist(&self, st: &State, uploaded: &BTreeMap<String, Uploaded>) {
        let Some(dir) = &self.state_dir else { return };
        let result = (|| -> anyhow::Result<()> {
            let json = serde_json::to_vec_pretty(st)?;
            crate::run::write_file(&dir.join("state.json"), &json, 0o600)?;
            let mdir = dir.join("modules");
            std::fs::create_dir_all(&mdir)?;
            for (name, u) in uploaded {
                let p = mdir.join(format!("{name}.wasm"));
                if !p.exists() {
                    crate::run::write_file(&p, &u.bytes, 0o600)?;
                }
            }
            let names = self.dispatch.secrets.names();
            let mut secrets = BTreeMap::new();
            for n in names {
                if let Some(v) = self.dispatch.secrets.get(&n) {
                    secrets.insert(n, String::from_utf8_lossy(v.expose()).into_owned());
                }
            }
            crate::run::write_file(
                &dir.join("secrets.json"),
                &serde_json::to_vec(&secrets)?,
                0o600,
            )?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, dir = %dir.display(), "could not persist runtime state");
        }
    }

    async fn apply_inner(
        &self,
        change: Change,
        if_generation: Option<u64>,
    ) -> Result<Applied, ControlError> {
        let mut guard = self.state.lock().await;
        let (st, uploaded) = &mut *guard;
        if let Some(expected) = if_generation {
            if expected != st.generation {
                return Err(ControlError::Conflict {
                    expected,
                    current: st.generation,
                });
            }
        }
        let kind = change.kind();
        let mut cfg = st.cfg.clone();
        let mut rt = st.runtime.clone();
        match change {
            Change::SetOutbound(b) => rt.outbound = b,
            Change::SetOutboundByHost(routes) => {
                for r in routes {
                    for existing in rt.routes.iter_mut() {
                        existing.hosts.retain(|h| !r.hosts.contains(h));
                    }
                    rt.routes.retain(|x| !x.hosts.is_empty());
                    rt.routes.push(r);
                }
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
                cfg.handlers.insert(name, config);
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
                self.persist(st, uploaded);
                return Ok(Applied {
                    generation: st.generation,
                    warnings: vec![],
                });
            }
            Change::RemoveSecret(name) => {
                if !self.dispatch.secrets.remove(&name) {
                    return Err(ControlError::NotFound(format!("no secret named {name:?}")));
                }
                tracing::info!(secret = %name, "secret removed");
                self.persist(st, uploaded);
                return Ok(Applied {
                    generation: st.generation,
                    warnings: vec![],
                });
            }
            Change::ReplacePolicy(new) => cfg = *new,
        }
        self.commit(st, uploaded, cfg, rt, kind).await
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
        let mut guard = self.state.lock().await;
        let (st, uploaded) = &mut *guard;
        let info = ModuleInfo {
            name: name.clone(),
            sha256: sha256_hex(&bytes),
            size: bytes.len() as u64,
            loaded_at: now_secs(),
        };
        let previous = uploaded.insert(
            name.clone(),
            Uploaded {
                bytes,
                info: info.clone(),
            },
        );
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_file(dir.join("modules").join(format!("{name}.wasm")));
        }
        let used = st
            .cfg
            .handlers
            .values()
            .any(|h| h.module.strip_prefix(UPLOADED) == Some(name.as_str()));
        if used {
            let (cfg, rt) = (st.cfg.clone(), st.runtime.clone());
            if let Err(e) = self.commit(st, uploaded, cfg, rt, "upload_module").await {
                match previous {
                    Some(p) => uploaded.insert(name, p),
                    None => uploaded.remove(&name),
                };
                return Err(e);
            }
        } else {
            self.persist(st, uploaded);
        }
        if let Ok(mut m) = self.module_infos.lock() {
            *m = uploaded.values().map(|u| u.info.clone()).collect();
        }
        Ok(info)
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
        let mut counters = BTreeMap::new();
        if let Some(m) = self.metrics.get() {
            for (k, v) in m() {
                counters.insert(k, v);
            }
        }
        counters.insert("swaps".into(), self.swaps.load(Ordering::Relaxed));
        Status {
            sandbox_id: self.sandbox_id.clone(),
            generation: self.policy.load().generation(),
            uptime_secs: self.started.elapsed().as_secs(),
            counters,
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
        self.module_infos
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    fn metrics(&self) -> String {
        use egret_proxy::metrics::single;
        let mut out = String::with_capacity(8 * 1024);
        single(
            &mut out,
            "egret_policy_generation",
            "Generation of the policy in force.",
            "gauge",
            self.policy.load().generation(),
        );
        single(
            &mut out,
            "egret_policy_swaps_total",
            "Policy swaps since start.",
            "counter",
            self.swaps.load(Ordering::Relaxed),
        );
        if let Some(src) = self.exposition.get() {
            src.render(&mut out);
        }
        out
    }

    fn subscribe_audit(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        self.audit.get().map(|a| a.subscribe())
    }
}

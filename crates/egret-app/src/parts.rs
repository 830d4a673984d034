//! Each part of a [`crate::Config`] builds its piece of the sidecar; [`crate::App`]'s build
//! only orders them and wires them together.
use crate::config::{CaptureConfig, HandlersConfig, PolicyInputs, ProxyConfig, TlsConfig};
use crate::modules::ModuleSource;
use crate::policy_source::{compile, parse_pins, PolicySource};
use crate::state::{write_atomic, State, StateDir};
use crate::AppError;
use arc_swap::ArcSwap;
use egret_policy::RuntimeLayer;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Write a file egret hands to others (the CA, the ready file), replacing it atomically.
pub(crate) fn write_run_file(path: &std::path::Path, content: &[u8]) -> Result<(), AppError> {
    write_atomic(path, content, 0o644, false).map_err(|source| AppError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The policy as it starts: the file (or the embedded default), the saved runtime state
/// over it, compiled, with the secrets, the kv store and the handler modules it names.
pub(crate) struct LoadedPolicy {
    pub policy: Arc<ArcSwap<egret_policy::CompiledPolicy>>,
    /// The two layers the compiled policy came from, for the control plane's edits.
    pub state: State,
    /// Relative module paths start here.
    pub dir: PathBuf,
    pub pins: Vec<(String, IpAddr)>,
    pub secrets: Arc<egret_wasm::SecretStore>,
    pub kv: Arc<egret_wasm::KvStore>,
    /// Modules uploaded at runtime (restored from `--state-dir`), by name.
    pub uploaded: BTreeMap<String, bytes::Bytes>,
}

impl PolicyInputs {
    /// Load, restore and compile the policy of `sandbox_id`; with it, the modules its
    /// handlers name, read.
    pub(crate) fn load(
        &self,
        sandbox_id: &str,
        state_dir: Option<&StateDir>,
    ) -> Result<(LoadedPolicy, Vec<crate::modules::HandlerModule>), AppError> {
        if self.file.is_none() {
            if self.allow.is_empty() {
                tracing::warn!(
                    "no --policy given: using the embedded default policy (all egress denied)"
                );
            } else {
                tracing::info!(allow = ?self.allow, "no --policy given: the embedded default policy denies all egress but the --allow hosts");
            }
        }
        let mut source = PolicySource::load(self.file.as_deref())?;
        source
            .config
            .allowed_hosts
            .extend(self.allow.iter().cloned());
        let pins = parse_pins(&self.resolve)?;
        let restored = match state_dir {
            Some(d) => d.restore(&source.sha256)?,
            None => Default::default(),
        };
        let mut state = State {
            cfg: source.config.clone(),
            runtime: RuntimeLayer::default(),
            generation: 1,
            policy_file_sha256: source.sha256.clone(),
        };
        if let Some(saved) = restored.state {
            if saved.policy_file_sha256 == source.sha256 {
                state.cfg = saved.cfg;
            }
            state.runtime = saved.runtime;
            state.generation = saved.generation + 1;
            tracing::info!(
                generation = state.generation,
                "restored runtime state from --state-dir"
            );
        }
        let compiled = compile(&state.cfg, &state.runtime, state.generation, &pins)?;
        for w in compiled.warnings() {
            tracing::warn!(warning = %w, "policy");
        }
        let secrets = Arc::new(egret_wasm::SecretStore::new());
        crate::secrets::load(&compiled, &secrets);
        for (name, value) in &restored.secrets {
            secrets.set(name.clone(), value.clone().into_bytes());
        }
        let kv = Arc::new(egret_wasm::KvStore::new());
        // The saved store first: a [kv] seed in the policy file sets its keys anew.
        kv.restore(restored.kv)
            .map_err(|e| AppError::KvSeed(format!("--state-dir kv.json: {e}")))?;
        kv.seed(
            sandbox_id,
            compiled
                .kv_seed()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        )
        .map_err(|e| AppError::KvSeed(e.to_string()))?;
        let modules = ModuleSource {
            policy_dir: &source.dir,
            uploaded: &restored.modules,
        }
        .read(&state.cfg)?;
        let loaded = LoadedPolicy {
            policy: Arc::new(ArcSwap::from_pointee(compiled)),
            state,
            dir: source.dir,
            pins,
            secrets,
            kv,
            uploaded: restored.modules,
        };
        Ok((loaded, modules))
    }
}

impl CaptureConfig {
    /// Start attaching to `netns` on a thread of its own.
    pub(crate) fn start(
        &self,
        netns: &str,
        sandbox_id: &str,
    ) -> Result<egret_capture::Attaching, AppError> {
        let netns = egret_capture::NetnsRef::parse(netns)?;
        let mut cap = egret_capture::CaptureConfig::new(netns, sandbox_id);
        cap.tcp_port = self.listen_port;
        cap.dns_port = self.dns_port;
        cap.mark = self.mark;
        cap.route_table = self.route_table;
        Ok(egret_capture::start_attach(cap)?)
    }
}

/// The TLS side of a sidecar.
pub(crate) struct Tls {
    pub upstream: egret_tls::UpstreamTls,
    pub ca: Arc<egret_tls::SandboxCa>,
    pub leaves: Arc<egret_tls::LeafCache>,
}

impl TlsConfig {
    /// Read the upstream roots, mint the sandbox CA (and write it where asked), make the
    /// leaf cache.
    pub(crate) fn build(&self, sandbox_id: &str) -> Result<Tls, AppError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let upstream = egret_tls::UpstreamTls::new(&self.upstream_ca)?;
        let ca = Arc::new(egret_tls::SandboxCa::generate(
            sandbox_id,
            self.ca_validity.max(Duration::from_secs(3600)),
        )?);
        if let Some(p) = &self.ca_out {
            write_run_file(p, ca.cert_pem().as_bytes())?;
        }
        if let Some(p) = &self.ca_bundle_out {
            write_run_file(p, egret_tls::ca_bundle_pem(&ca).as_bytes())?;
        }
        let leaves = Arc::new(egret_tls::LeafCache::with_capacity(
            ca.clone(),
            std::num::NonZeroUsize::new(self.leaf_cache_size.max(1)).expect("max(1)"),
        ));
        Ok(Tls {
            upstream,
            ca,
            leaves,
        })
    }
}

impl HandlersConfig {
    /// The process's one wasmtime host.
    pub(crate) fn build(&self) -> Result<Arc<egret_wasm::HandlerHost>, AppError> {
        let host = egret_wasm::HandlerHost::new(egret_wasm::HostConfig {
            cache_dir: self.cache_dir.clone(),
            max_instances: self.instances.max,
            instance_wait: self.instances.wait,
            max_instance_waiters: self.instances.max_waiters,
            ..egret_wasm::HostConfig::default()
        })
        .map_err(AppError::Host)?;
        Ok(Arc::new(host))
    }
}

impl ProxyConfig {
    /// The proxy's own configuration for `sandbox_id`, listening on `listen_port`.
    pub(crate) fn to_proxy(&self, sandbox_id: &str, listen_port: u16) -> egret_proxy::ProxyConfig {
        let mut pcfg = egret_proxy::ProxyConfig::new(sandbox_id);
        pcfg.listen_port = listen_port;
        pcfg.classify_timeout = self.classify_timeout;
        pcfg.connect_timeout = self.connect_timeout;
        pcfg.handshake_timeout = self.tls_handshake_timeout;
        pcfg.max_connections = self.max_connections;
        pcfg.keep_alt_svc = self.keep_alt_svc;
        pcfg.workers = self.workers.max(1);
        pcfg
    }
}

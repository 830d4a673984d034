//! `egret run`: load and compile the policy, mint the sandbox CA, attach to the sandbox
//! namespace, serve until SIGINT/SIGTERM, then remove exactly what was installed.
use crate::cli::{LogFormat, PolicyCheckArgs, RunArgs};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use egret_policy::{CompiledPolicy, PolicyConfig, RuntimeLayer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The policy used when `--policy` is not given: nothing leaves the sandbox.
pub const DEFAULT_POLICY: &str = include_str!("../../../examples/default-policy.toml");

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Sandbox ids end up in log lines, the CA subject and the nft comment: keep them plain.
fn validate_sandbox_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 45
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if !ok {
        bail!("invalid --sandbox-id {id:?}: use 1-45 characters from A-Z a-z 0-9 - _ . : @");
    }
    Ok(())
}

/// Read and parse a policy file; errors name the file (and line/column for syntax errors).
pub fn load_policy_file(path: &Path) -> Result<PolicyConfig> {
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    let origin = path.display().to_string();
    let cfg = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        PolicyConfig::from_json(&src, &origin)?
    } else {
        PolicyConfig::from_toml(&src, &origin)?
    };
    Ok(cfg)
}

/// Parse `--resolve host=addr[,addr]`.
fn parse_resolve(items: &[String]) -> Result<Vec<(String, Vec<IpAddr>)>> {
    let mut out = Vec::new();
    for item in items {
        let Some((host, addrs)) = item.split_once('=') else {
            bail!("invalid --resolve {item:?}: expected HOST=ADDR (e.g. api.internal=10.0.0.5)");
        };
        let mut ips = Vec::new();
        for a in addrs.split(',') {
            let a = a.trim().trim_start_matches('[').trim_end_matches(']');
            ips.push(a.parse::<IpAddr>().with_context(|| {
                format!("invalid --resolve {item:?}: {a:?} is not an IP address")
            })?);
        }
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            bail!("invalid --resolve {item:?}: empty host name");
        }
        out.push((host, ips));
    }
    Ok(out)
}

fn compile(
    cfg: &PolicyConfig,
    pins: Vec<(String, Vec<IpAddr>)>,
    generation: u64,
) -> Result<CompiledPolicy> {
    let compiled = CompiledPolicy::compile(cfg, &RuntimeLayer::default(), generation)?;
    let flat = pins
        .into_iter()
        .flat_map(|(h, ips)| ips.into_iter().map(move |ip| (h.clone(), ip)));
    Ok(compiled.with_extra_pins(flat)?)
}

/// Write `content` to `path` atomically with `mode`, and durably (state that must survive a
/// crash).
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    write_file_with(path, content, mode, true)
}

/// Like [`write_file`] without the fsync: for files that only mean something while this
/// process runs (ready file, the CA minted for this run), where an fsync on ext4 costs
/// milliseconds of start-up for nothing.
fn write_run_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    write_file_with(path, content, mode, false)
}

fn write_file_with(path: &Path, content: &[u8], mode: u32, durable: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(content)?;
    if durable {
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `egret policy check FILE`.
pub fn policy_check(args: PolicyCheckArgs) -> Result<ExitCode> {
    let cfg = load_policy_file(&args.file)?;
    let compiled = compile(&cfg, Vec::new(), 1)?;
    for w in compiled.warnings() {
        println!("warning: {w}");
    }
    println!("{}: ok", args.file.display());
    Ok(ExitCode::SUCCESS)
}

/// Secrets named in the policy, read from egret's environment or files. A missing one is a
/// warning, not an error: it can be set later over the admin socket, and until then a handler
/// that needs it fails closed naming it.
fn load_secrets(policy: &CompiledPolicy, store: &egret_wasm::SecretStore) {
    for (name, source) in policy.secrets() {
        let value = match source {
            egret_policy::SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            egret_policy::SecretSource::File(path) => std::fs::read(path)
                .map(|mut v| {
                    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        v.pop();
                    }
                    String::from_utf8_lossy(&v).into_owned()
                })
                .map_err(|e| format!("cannot read {path}: {e}")),
        };
        match value {
            Ok(v) => store.set(name.clone(), v.into_bytes()),
            Err(why) => {
                tracing::warn!(secret = %name, reason = %why, "secret is not available; handlers that need it will fail closed")
            }
        }
    }
}

/// Read every handler module named by the policy: `uploaded:NAME` from the restored uploads,
/// other paths relative to the policy file.
pub fn read_modules_with_uploads(
    policy: &CompiledPolicy,
    dir: &Path,
    uploaded: &[(String, bytes::Bytes)],
) -> Result<Vec<(String, PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for (name, h) in &policy.config().handlers {
        if let Some(m) = h.module.strip_prefix(crate::control::UPLOADED) {
            let Some((_, b)) = uploaded.iter().find(|(n, _)| n == m) else {
                bail!(
                    "handler {name}: uploaded module {m:?} is not in --state-dir; upload it again"
                );
            };
            out.push((name.clone(), PathBuf::from(&h.module), b.to_vec()));
            continue;
        }
        let path = if Path::new(&h.module).is_absolute() {
            PathBuf::from(&h.module)
        } else {
            dir.join(&h.module)
        };
        let bytes = std::fs::read(&path).with_context(|| {
            format!("handler {name}: cannot read module {} (build the example handlers with scripts/build-handlers.sh)", path.display())
        })?;
        out.push((name.clone(), path, bytes));
    }
    Ok(out)
}

/// Compile and pre-instantiate modules (in parallel, off the async workers).
pub async fn load_handlers(
    host: &egret_wasm::HandlerHost,
    modules: Vec<(String, PathBuf, Vec<u8>)>,
) -> Result<crate::glue::HandlerSet> {
    let mut set = crate::glue::HandlerSet::new();
    for (name, path, bytes) in modules {
        let loaded = host
            .load(&name, &bytes)
            .await
            .with_context(|| format!("handler {name}: module {} was refused", path.display()))?;
        set.insert(name, loaded);
    }
    Ok(set)
}

/// Compiling handlers leaves megabytes of freed memory in the allocator's per-thread arenas
/// (the compiler threads'); give it back so the idle process stays small.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages to the OS; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What `--state-dir` restores: the saved state (when usable), uploaded modules, runtime secrets.
struct Restored {
    state: Option<crate::control::State>,
    modules: Vec<(String, bytes::Bytes)>,
    secrets: Vec<(String, String)>,
}

fn restore(dir: &Path, file_sha: &str) -> Result<Restored> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create --state-dir {}", dir.display()))?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "--state-dir {} is accessible to other users (mode {:o}); it holds secrets: chmod 700 it",
            dir.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let mut out = Restored {
        state: None,
        modules: Vec::new(),
        secrets: Vec::new(),
    };
    let state_path = dir.join("state.json");
    if state_path.exists() {
        let raw = std::fs::read(&state_path)?;
        let mut st: crate::control::State = serde_json::from_slice(&raw).with_context(|| {
            format!(
                "corrupt {}: remove it to start from the policy file",
                state_path.display()
            )
        })?;
        if st.policy_file_sha256 != file_sha {
            tracing::warn!(
                "the policy file changed since the saved state was written: using the file, keeping the saved runtime routes"
            );
            st.cfg = PolicyConfig::default();
            st.policy_file_sha256 = String::new();
        }
        out.state = Some(st);
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("modules")) {
        for e in rd.flatten() {
            let p = e.path();
            if let (Some(stem), Some("wasm")) = (
                p.file_stem().and_then(|s| s.to_str()),
                p.extension().and_then(|s| s.to_str()),
            ) {
                out.modules
                    .push((stem.to_string(), bytes::Bytes::from(std::fs::read(&p)?)));
            }
        }
    }
    let sp = dir.join("secrets.json");
    if sp.exists() {
        let m: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(&sp)?)
                .with_context(|| format!("corrupt {}", sp.display()))?;
        out.secrets = m.into_iter().collect();
    }
    Ok(out)
}

/// Milliseconds since start at the end of each start-up phase, logged at debug level once
/// egret is ready (start-up time is a target: this shows where it goes).
struct Phases(Instant, Vec<(&'static str, f64)>);

impl Phases {
    fn mark(&mut self, phase: &'static str) {
        self.1
            .push((phase, self.0.elapsed().as_secs_f64() * 1000.0));
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut phases = Phases(t0, Vec::new());
    init_tracing(args.log_format);
    validate_sandbox_id(&args.sandbox_id)?;
    let (file_cfg, file_sha) = match &args.policy {
        Some(p) => {
            let raw = std::fs::read(p)
                .with_context(|| format!("cannot read policy file {}", p.display()))?;
            (load_policy_file(p)?, crate::control::sha256_hex(&raw))
        }
        None => {
            tracing::warn!(
                "no --policy given: using the embedded default policy (all egress denied)"
            );
            (
                PolicyConfig::from_toml(DEFAULT_POLICY, "<embedded default policy>")?,
                crate::control::sha256_hex(DEFAULT_POLICY.as_bytes()),
            )
        }
    };
    let pins: Vec<(String, IpAddr)> = parse_resolve(&args.resolve)?
        .into_iter()
        .flat_map(|(h, ips)| ips.into_iter().map(move |ip| (h.clone(), ip)))
        .collect();
    let restored = match &args.state_dir {
        Some(d) => Some(restore(d, &file_sha)?),
        None => None,
    };
    let mut state = crate::control::State {
        cfg: file_cfg.clone(),
        runtime: RuntimeLayer::default(),
        generation: 1,
        policy_file_sha256: file_sha.clone(),
    };
    if let Some(saved) = restored.as_ref().and_then(|r| r.state.clone()) {
        if saved.policy_file_sha256 == file_sha {
            state.cfg = saved.cfg;
        }
        state.runtime = saved.runtime;
        state.generation = saved.generation + 1;
        tracing::info!(
            generation = state.generation,
            "restored runtime state from --state-dir"
        );
    }
    let compiled = crate::control::compile(&state.cfg, &state.runtime, state.generation, &pins)?;
    for w in compiled.warnings() {
        tracing::warn!(warning = %w, "policy");
    }
    let policy_dir = args
        .policy
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let secrets = Arc::new(egret_wasm::SecretStore::new());
    load_secrets(&compiled, &secrets);
    if let Some(r) = &restored {
        for (name, value) in &r.secrets {
            secrets.set(name.clone(), value.clone().into_bytes());
        }
    }
    let kv = Arc::new(egret_wasm::KvStore::new());
    kv.seed(
        &args.sandbox_id,
        compiled
            .kv_seed()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    )
    .context("invalid [kv] seed in the policy")?;
    let uploaded: Vec<(String, bytes::Bytes)> = restored
        .as_ref()
        .map(|r| r.modules.clone())
        .unwrap_or_default();
    let module_bytes = read_modules_with_uploads(&compiled, &policy_dir, &uploaded)?;
    let generation = compiled.generation();
    let policy = Arc::new(ArcSwap::from_pointee(compiled));
    let netns = egret_capture::NetnsRef::parse(&args.netns)?;
    let mut cap = egret_capture::CaptureConfig::new(netns, &args.sandbox_id);
    cap.tcp_port = args.listen_port;
    cap.dns_port = args.dns_port;
    cap.mark = args.mark;
    cap.route_table = args.route_table;
    phases.mark("policy");
    // Attaching is mostly waiting for `nft` and `ip`: it runs while the rest starts up. If
    // anything below fails, dropping `attaching` undoes the attach before egret exits.
    let attaching = egret_capture::start_attach(cap)?;
    phases.mark("attach_started");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = egret_tls::UpstreamTls::new(&args.upstream_ca)?;
    phases.mark("upstream_roots");
    let ca = Arc::new(egret_tls::SandboxCa::generate(
        &args.sandbox_id,
        Duration::from_secs(args.ca_validity_hours.max(1) * 3600),
    )?);
    if let Some(p) = &args.ca_out {
        write_run_file(p, ca.cert_pem().as_bytes(), 0o644)?;
    }
    if let Some(p) = &args.ca_bundle_out {
        write_run_file(p, egret_tls::ca_bundle_pem(&ca).as_bytes(), 0o644)?;
    }
    phases.mark("sandbox_ca");
    let leaves = Arc::new(egret_tls::LeafCache::with_capacity(
        ca.clone(),
        std::num::NonZeroUsize::new(args.leaf_cache_size.max(1)).expect("max(1)"),
    ));
    // The main runtime: admin API, DNS, swaps, and the first share of sandbox connections.
    // `--workers` above 1 adds connection threads of their own (egret_proxy::Shards).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("egret-worker")
        .build()
        .context("cannot start the async runtime")?;
    phases.mark("runtime");
    let host = Arc::new(egret_wasm::HandlerHost::new(egret_wasm::HostConfig {
        cache_dir: args.handler_cache_dir.clone(),
        ..egret_wasm::HostConfig::default()
    })?);
    phases.mark("wasm_engine");
    let handler_set = rt.block_on(load_handlers(&host, module_bytes))?;
    release_free_heap();
    phases.mark("handlers");
    let metrics = Arc::new(egret_proxy::metrics::Metrics::default());
    let audit = egret_proxy::AuditSink::start(match &args.audit_log {
        Some(p) => egret_proxy::AuditOutput::File(p.clone()),
        None => egret_proxy::AuditOutput::Stdout,
    })?;
    let dispatch = Arc::new(crate::glue::WasmDispatch::new(
        host.clone(),
        generation,
        handler_set,
        secrets.clone(),
        kv.clone(),
        Arc::from(args.sandbox_id.as_str()),
        metrics.clone(),
    ));
    let control = Arc::new(crate::control::ControlPlane::new(
        &args.sandbox_id,
        policy.clone(),
        dispatch.clone(),
        pins,
        policy_dir,
        args.state_dir.clone(),
        ca.cert_pem().to_string(),
        state,
        uploaded,
    ));
    let _ = control.audit.set(audit.clone());
    let admin = match &args.admin_socket {
        Some(path) => Some(
            rt.block_on(egret_admin::serve(
                path,
                control.clone(),
                egret_admin::ServerOptions::default(),
            ))
            .with_context(|| format!("cannot serve the admin API on {}", path.display()))?,
        ),
        None => None,
    };

    phases.mark("admin");
    let attached = attaching.wait()?;
    phases.mark("attach");
    let guard = attached.guard;
    let listeners = attached.listeners;

    let result: Result<()> = rt.block_on(async {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;

        let map = Arc::new(egret_dns::SyntheticMap::new(Default::default()));
        let dns = Arc::new(egret_dns::Resolver::new(
            map,
            Arc::new(crate::glue::PolicyNames(policy.clone())),
            Default::default(),
        ));
        let mut pcfg = egret_proxy::ProxyConfig::new(&args.sandbox_id);
        pcfg.listen_port = args.listen_port;
        pcfg.classify_timeout = Duration::from_millis(args.classify_timeout_ms);
        pcfg.connect_timeout = Duration::from_millis(args.connect_timeout_ms);
        pcfg.max_connections = args.max_connections;
        pcfg.keep_alt_svc = args.keep_alt_svc;
        pcfg.workers = workers(args.workers);
        pcfg.handshake_timeout = Duration::from_millis(args.tls_handshake_timeout_ms);
        let proxy = egret_proxy::Proxy::new(egret_proxy::ProxyParts {
            cfg: pcfg,
            policy: policy.clone(),
            dns: Arc::new(crate::glue::DnsGlue(dns.clone())),
            upstream_tls: Some(upstream.client_config(egret_tls::UpstreamAlpn::H2AndHttp11)),
            upstream_tls_h1: Some(upstream.client_config(egret_tls::UpstreamAlpn::Http11Only)),
            tls: Some(egret_proxy::TlsState { leaves: leaves.clone() }),
            handlers: Some(dispatch.clone()),
            audit: audit.clone(),
            metrics: metrics.clone(),
        });
        {
            let p = proxy.clone();
            let _ = control.on_swap.set(Arc::new(move || p.policy_changed()));
        }
        let _ = control.exposition.set(crate::metrics::Sources {
            proxy: proxy.clone(),
            leaves: leaves.clone(),
            dns: dns.clone(),
        });
        {
            let (proxy, leaves, dns) = (proxy.clone(), leaves.clone(), dns.clone());
            let _ = control.metrics.set(Arc::new(move || {
                use std::sync::atomic::Ordering::Relaxed;
                let ps = proxy.stats();
                let ls = leaves.stats();
                let ds = dns.stats();
                vec![
                    ("connections_total".into(), ps.connections.load(Relaxed)),
                    ("connections_active".into(), ps.active.load(Relaxed)),
                    ("requests_total".into(), ps.requests.load(Relaxed)),
                    ("denied_total".into(), ps.denied.load(Relaxed)),
                    ("overload_resets_total".into(), ps.overload.load(Relaxed)),
                    ("leaf_mints_total".into(), ls.mints),
                    ("leaf_cache_hits_total".into(), ls.hits),
                    ("leaf_cache_entries".into(), ls.entries),
                    ("dns_queries_total".into(), ds.queries),
                    ("dns_nxdomain_total".into(), ds.nxdomain),
                ]
            }));
        }

        let shards = proxy
            .start_shards()
            .context("cannot start the worker threads (--workers)")?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(proxy.clone().serve_sharded(
            tokio::net::TcpListener::from_std(listeners.tcp4)?,
            Some(shards.clone()),
        ));
        if let Some(l) = listeners.tcp6 {
            tasks.spawn(
                proxy
                    .clone()
                    .serve_sharded(tokio::net::TcpListener::from_std(l)?, Some(shards.clone())),
            );
        }
        tasks.spawn(egret_dns::serve_udp(tokio::net::UdpSocket::from_std(listeners.dns4)?, dns.clone()));
        if let Some(s) = listeners.dns6 {
            tasks.spawn(egret_dns::serve_udp(tokio::net::UdpSocket::from_std(s)?, dns.clone()));
        }

        phases.mark("serve");
        tracing::debug!(phases = ?phases.1, "start-up phases (ms since start)");
        tracing::info!(
            sandbox = %args.sandbox_id,
            netns = %args.netns,
            generation = policy.load().generation(),
            startup_ms = t0.elapsed().as_secs_f64() * 1000.0,
            "intercepting"
        );
        if let Some(p) = &args.ready_file {
            write_run_file(p, format!("{}\n", std::process::id()).as_bytes(), 0o644)?;
        }
        loop {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM: detaching"),
                _ = sigint.recv() => tracing::info!("SIGINT: detaching"),
                // logrotate's postrotate: the audit file is reopened at its path.
                _ = sighup.recv() => {
                    audit.reopen();
                    continue;
                }
                r = tasks.join_next() => tracing::error!(?r, "a server task ended unexpectedly"),
            }
            break;
        }
        tasks.abort_all();
        if let Some(a) = admin {
            a.stop().await;
        }
        // Once the aborted accept loops have dropped their handles this one is the last, and
        // dropping it stops the worker threads, closing what they still serve (as the
        // runtime's shutdown does here).
        while tasks.join_next().await.is_some() {}
        drop(shards);
        let st = leaves.stats();
        let ps = proxy.stats();
        tracing::info!(
            "leaf cache mints={} hits={} evictions={} entries={} ; connections={} requests={} denied={}",
            st.mints,
            st.hits,
            st.evictions,
            st.entries,
            ps.connections.load(std::sync::atomic::Ordering::Relaxed),
            ps.requests.load(std::sync::atomic::Ordering::Relaxed),
            ps.denied.load(std::sync::atomic::Ordering::Relaxed),
        );
        Ok(())
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    // The audit writer batches under load: write out what is queued before the process ends.
    audit.flush(Duration::from_secs(1));
    let detach = guard.detach();
    if let Some(p) = &args.ready_file {
        let _ = std::fs::remove_file(p);
    }
    result?;
    detach?;
    tracing::info!("detached; the sandbox namespace holds nothing of egret's");
    Ok(ExitCode::SUCCESS)
}

/// `--workers`, or its default: two connection threads, one on a single-CPU machine (a
/// second thread there only takes turns with the first).
fn workers(flag: Option<u16>) -> usize {
    flag.map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2)))
}

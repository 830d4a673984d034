//! Building a sidecar from its [`Config`] and running it: attach to the sandbox namespace,
//! serve until SIGINT/SIGTERM, then remove exactly what was installed.
use crate::control::{ControlParts, ControlPlane};
use crate::glue::{DispatchParts, DnsGlue, PolicyNames, WasmDispatch};
use crate::parts::{write_run_file, LoadedPolicy, Tls};
use crate::state::StateDir;
use crate::telemetry::Telemetry;
use crate::{AppError, Config};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Milliseconds since start at the end of each start-up phase, logged at debug level once
/// egret is ready (start-up time is a target: this shows where it goes).
struct Phases(Instant, Vec<(&'static str, f64)>);

impl Phases {
    fn mark(&mut self, phase: &'static str) {
        self.1
            .push((phase, self.0.elapsed().as_secs_f64() * 1000.0));
    }
}

pub use egret_tls::SANDBOX_ID_MAX;

/// Checks `--sandbox-id` (and the OCI annotation) by egret-tls's rule, the one every entry
/// point shares.
pub fn validate_sandbox_id(id: &str) -> Result<(), AppError> {
    egret_tls::validate_sandbox_id(id).map_err(|_| AppError::SandboxId(id.to_string()))
}

/// A sidecar, built and attached to its sandbox, not yet serving.
pub struct App {
    cfg: Config,
    phases: Phases,
    rt: tokio::runtime::Runtime,
    /// The sandbox's transparent listeners; `None` when only the explicit proxy serves.
    listeners: Option<egret_capture::Listeners>,
    /// The `--explicit-proxy` listener, in egret's own namespace.
    explicit: Option<std::net::TcpListener>,
    /// The control plane: held for the run (`--ask` approvals change the policy through it
    /// even when no admin socket serves it).
    control: Arc<ControlPlane>,
    /// What `attach` installed; `None` for listeners made elsewhere (`egret exec`).
    guard: Option<egret_capture::CaptureGuard>,
    ca: Arc<egret_tls::SandboxCa>,
    upstream: egret_tls::UpstreamTls,
    policy: Arc<ArcSwap<egret_policy::CompiledPolicy>>,
    proxy: Arc<egret_proxy::Proxy>,
    dns: Arc<egret_dns::Resolver>,
    leaves: Arc<egret_tls::LeafCache>,
    audit: Arc<egret_proxy::AuditSink>,
    admin: Option<egret_admin::ServerHandle>,
    /// The kv store and where it is saved (`--state-dir`).
    kv_saver: Option<KvSaver>,
    /// A descriptor of the `--watch-pid` process: readable once it exited.
    watched: Option<std::os::fd::OwnedFd>,
}

/// Open a pidfd for `pid`: it cannot be confused with a later process reusing the number.
fn open_pidfd(pid: u32) -> Result<std::os::fd::OwnedFd, AppError> {
    let err = |source: std::io::Error| AppError::WatchPid { pid, source };
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|e| err(e.into()))
}

/// The pidfd on the runtime's reactor.
#[allow(unsafe_code)]
fn register_pidfd(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd stays open and returns the same descriptor until it is dropped, which
    // only the AsyncFd that owns it does.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// Resolves when the watched process exited (never without one).
async fn exited(watched: Option<&tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>) {
    match watched {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// Saves the handlers' kv store to `--state-dir` when it changed: at most once a second (a
/// counter bumped per request must not cost a file write per request; a crash loses at most
/// the last second), and once more when egret stops.
struct KvSaver {
    dir: StateDir,
    kv: Arc<egret_wasm::KvStore>,
}

impl KvSaver {
    fn save_if_changed(&self) {
        if self.kv.take_dirty() {
            if let Err(e) = self.dir.save_kv(&self.kv.snapshot()) {
                tracing::error!(error = %e, dir = %self.dir.path().display(), "could not save the kv store");
            }
        }
    }
}

/// The explicit proxy's listener, bound before anything starts so a taken port fails early.
fn bind_explicit(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, AppError> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|source| AppError::ExplicitProxy { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| AppError::ExplicitProxy { addr, source })?;
    Ok(l)
}

/// What [`Config::wire`] makes.
struct Wired {
    policy: Arc<ArcSwap<egret_policy::CompiledPolicy>>,
    proxy: Arc<egret_proxy::Proxy>,
    dns: Arc<egret_dns::Resolver>,
    audit: Arc<egret_proxy::AuditSink>,
    control: Arc<ControlPlane>,
    kv_saver: Option<KvSaver>,
}

/// Where the sandbox's listeners come from.
enum Capture {
    /// Attach to `Config::netns`.
    Attach,
    /// Made in the sandbox's namespace by someone else (`egret exec`'s helper), which also
    /// installed the ruleset.
    Given(egret_capture::Listeners),
    /// The attach, running on a thread of its own.
    Attaching(egret_capture::Attaching),
    /// No sandbox namespace: only the explicit proxy serves.
    Without,
}

impl Config {
    /// Load the policy (and the saved state), mint the sandbox CA, compile the handlers, start
    /// the admin API and attach to the sandbox namespace — the attach runs on a thread of its
    /// own meanwhile, and is undone if anything after it fails.
    pub fn build(self) -> Result<App, AppError> {
        self.build_capture(Capture::Attach)
    }

    /// [`Config::build`] serving `listeners`, made and wired inside the sandbox's namespace
    /// already (`egret_capture::attach_here`); `netns` is only named in log lines.
    pub fn build_with_listeners(
        self,
        listeners: egret_capture::Listeners,
    ) -> Result<App, AppError> {
        self.build_capture(Capture::Given(listeners))
    }

    /// [`Config::build`] without a sandbox namespace: egret serves only its explicit proxy
    /// (`explicit_proxy` must be set), for programs that honour proxy variables.
    pub fn build_without_capture(self) -> Result<App, AppError> {
        self.build_capture(Capture::Without)
    }

    fn build_capture(self, capture: Capture) -> Result<App, AppError> {
        let mut phases = Phases(Instant::now(), Vec::new());
        validate_sandbox_id(&self.sandbox_id)?;
        let explicit = self.proxy.explicit_proxy.map(bind_explicit).transpose()?;
        let watched = self.watch_pid.map(open_pidfd).transpose()?;
        let state_dir = self.state_dir.as_deref().map(StateDir::open).transpose()?;
        let (loaded, modules) = self.policy.load(&self.sandbox_id, state_dir.as_ref())?;
        phases.mark("policy");
        // Attaching is mostly waiting for the kernel: it runs while the rest starts up. If
        // anything below fails, dropping `attaching` undoes the attach before egret exits.
        let attaching = match capture {
            Capture::Attach => {
                Capture::Attaching(self.capture.start(&self.netns, &self.sandbox_id)?)
            }
            given => given,
        };
        phases.mark("attach_started");
        let tls = self.tls.build(&self.sandbox_id)?;
        phases.mark("sandbox_ca");
        // The main runtime: admin API, DNS, swaps, and the first share of sandbox connections.
        // More workers add connection threads of their own (egret_proxy::Shards).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("egret-worker")
            .build()
            .map_err(AppError::runtime("start the async runtime"))?;
        let _in_runtime = rt.enter();
        phases.mark("runtime");
        let host = self.handlers.build()?;
        phases.mark("wasm_engine");
        let handler_set =
            rt.block_on(crate::handlers::load(&host, modules))
                .map_err(|mut refused| {
                    let r = refused.remove(0);
                    AppError::Handler {
                        handler: r.handler,
                        module: r.module,
                        source: r.error,
                    }
                })?;
        phases.mark("handlers");
        let Wired {
            policy,
            proxy,
            dns,
            audit,
            control,
            kv_saver,
        } = self.wire(loaded, &tls, host, handler_set, state_dir)?;
        let admin = match &self.admin_socket {
            Some(path) => Some(
                rt.block_on(egret_admin::serve(
                    path,
                    control.clone(),
                    egret_admin::ServerOptions::default(),
                ))
                .map_err(|source| AppError::Admin {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        phases.mark("admin");
        let (listeners, guard) = match attaching {
            Capture::Given(listeners) => (Some(listeners), None),
            Capture::Without => (None, None),
            Capture::Attaching(attaching) => {
                let attached = attaching.wait()?;
                (Some(attached.listeners), Some(attached.guard))
            }
            Capture::Attach => unreachable!("the attach was started above"),
        };
        phases.mark("attach");
        drop(_in_runtime);
        Ok(App {
            cfg: self,
            phases,
            rt,
            listeners,
            explicit,
            control,
            guard,
            ca: tls.ca,
            upstream: tls.upstream,
            policy,
            proxy,
            dns,
            leaves: tls.leaves,
            audit,
            admin,
            kv_saver,
            watched,
        })
    }

    /// The serving parts around the policy, the TLS side and the handlers: audit, DNS,
    /// `fetch`, the handler dispatch, the proxy and the control plane.
    fn wire(
        &self,
        loaded: LoadedPolicy,
        tls: &Tls,
        host: Arc<egret_wasm::HandlerHost>,
        handler_set: crate::glue::HandlerSet,
        state_dir: Option<StateDir>,
    ) -> Result<Wired, AppError> {
        let policy = loaded.policy;
        let metrics = Arc::new(egret_proxy::metrics::Metrics::default());
        let audit = egret_proxy::AuditSink::start(match &self.audit_log {
            Some(p) => egret_proxy::AuditOutput::File(p.clone()),
            None => egret_proxy::AuditOutput::Stdout,
        })?;
        let dns = self.resolver(&policy);
        let upstream_tls = tls
            .upstream
            .client_config(egret_tls::UpstreamAlpn::H2AndHttp11);
        let fetch = self.fetch_client(&policy, &dns, &upstream_tls, &audit, &metrics);
        let kv_saver = state_dir.clone().map(|dir| KvSaver {
            dir,
            kv: loaded.kv.clone(),
        });
        let dispatch = Arc::new(WasmDispatch::new(
            DispatchParts {
                host: host.clone(),
                secrets: loaded.secrets,
                kv: loaded.kv,
                sandbox_id: Arc::from(self.sandbox_id.as_str()),
                metrics: metrics.clone(),
                fetch,
            },
            policy.load().generation(),
            handler_set,
        ));
        let broker = self.proxy.ask_timeout.map(|timeout| {
            crate::ask::AskBroker::new(
                timeout,
                self.admin_socket.is_some(),
                policy.clone(),
                self.policy.file.clone(),
            )
        });
        let shadow = egret_proxy::ShadowSlot::default();
        let proxy = egret_proxy::Proxy::new(egret_proxy::ProxyParts {
            cfg: self
                .proxy
                .to_proxy(&self.sandbox_id, self.capture.listen_port),
            policy: policy.clone(),
            shadow: shadow.clone(),
            dns: Arc::new(DnsGlue(dns.clone())),
            upstream_tls: Some(upstream_tls),
            upstream_tls_h1: Some(
                tls.upstream
                    .client_config(egret_tls::UpstreamAlpn::Http11Only),
            ),
            tls: Some(egret_proxy::TlsState {
                leaves: tls.leaves.clone(),
            }),
            handlers: Some(dispatch.clone()),
            asker: broker
                .clone()
                .map(|b| Arc::new(crate::ask::Asking(b)) as Arc<dyn egret_proxy::Asker>),
            audit: audit.clone(),
            metrics: metrics.clone(),
        });
        let telemetry = Arc::new(Telemetry::new(
            metrics,
            tls.leaves.clone(),
            dns.clone(),
            audit.clone(),
            policy.clone(),
            host,
        ));
        let control = Arc::new(ControlPlane::new(ControlParts {
            sandbox_id: self.sandbox_id.clone(),
            policy: policy.clone(),
            shadow,
            dispatch,
            proxy: proxy.clone(),
            telemetry,
            audit: audit.clone(),
            pins: loaded.pins,
            policy_dir: loaded.dir,
            state_dir,
            ca_pem: tls.ca.cert_pem().to_string(),
            state: loaded.state,
            uploaded: loaded.uploaded,
            ask: broker.clone(),
        }));
        if let Some(b) = &broker {
            b.set_control(&control);
        }
        Ok(Wired {
            policy,
            proxy,
            dns,
            audit,
            control,
            kv_saver,
        })
    }

    /// The sandbox's DNS: synthetic answers for the names the policy may allow.
    fn resolver(
        &self,
        policy: &Arc<ArcSwap<egret_policy::CompiledPolicy>>,
    ) -> Arc<egret_dns::Resolver> {
        Arc::new(egret_dns::Resolver::new(
            Arc::new(egret_dns::SyntheticMap::new(Default::default())),
            Arc::new(PolicyNames {
                policy: policy.clone(),
                ask: self.proxy.ask_timeout.is_some(),
            }),
            Default::default(),
        ))
    }

    /// The client handlers' `fetch` calls go out through: the sandbox's policy, its upstream
    /// TLS, its audit and metrics; never to one of the resolver's synthetic addresses.
    fn fetch_client(
        &self,
        policy: &Arc<ArcSwap<egret_policy::CompiledPolicy>>,
        dns: &Arc<egret_dns::Resolver>,
        upstream_tls: &Arc<rustls::ClientConfig>,
        audit: &Arc<egret_proxy::AuditSink>,
        metrics: &Arc<egret_proxy::metrics::Metrics>,
    ) -> Arc<egret_proxy::fetch::FetchClient> {
        let synthetic: Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync> = {
            let dns = dns.clone();
            Arc::new(move |ip| dns.map().is_synthetic(ip))
        };
        Arc::new(egret_proxy::fetch::FetchClient::new(
            &self.sandbox_id,
            policy.clone(),
            synthetic,
            Some(upstream_tls.clone()),
            self.proxy.connect_timeout,
            audit.clone(),
            metrics.clone(),
        ))
    }
}

impl App {
    /// Where the explicit proxy listens (`Config::explicit_proxy` with its port chosen).
    pub fn explicit_proxy_addr(&self) -> Option<std::net::SocketAddr> {
        self.explicit.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Detach and end [`App::run`] when the process `pid` exits (as `Config::watch_pid`, for
    /// a process started after egret was built).
    pub fn watch_pid(&mut self, pid: u32) -> Result<(), AppError> {
        self.watched = Some(open_pidfd(pid)?);
        self.cfg.watch_pid = Some(pid);
        Ok(())
    }

    /// The system roots followed by this sandbox's CA (PEM), for the sandbox to trust.
    pub fn ca_bundle_pem(&self) -> String {
        egret_tls::ca_bundle_pem(&self.ca)
    }

    /// The environment variables the policy reads secrets from (`[secrets]` `env = …`):
    /// a program egret runs itself (`egret exec`) must not inherit them.
    pub fn secret_env_vars(&self) -> Vec<String> {
        self.policy
            .load()
            .secrets()
            .values()
            .filter_map(|source| match source {
                egret_policy::SecretSource::Env(var) => Some(var.clone()),
                egret_policy::SecretSource::File(_) => None,
            })
            .collect()
    }

    /// Serve the sandbox until SIGINT or SIGTERM (SIGHUP reopens the audit log), then stop
    /// serving and remove exactly what was installed in the sandbox namespace.
    pub fn run(self) -> Result<(), AppError> {
        let App {
            cfg,
            mut phases,
            rt,
            listeners,
            explicit,
            control,
            guard,
            ca: _,
            upstream,
            policy,
            proxy,
            dns,
            leaves,
            audit,
            admin,
            kv_saver,
            watched,
        } = self;
        let explicit_addr = explicit.as_ref().and_then(|l| l.local_addr().ok());
        let result: Result<(), AppError> = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let sig = AppError::runtime("install signal handlers");
            let mut sigterm = signal(SignalKind::terminate()).map_err(&sig)?;
            let mut sigint = signal(SignalKind::interrupt()).map_err(&sig)?;
            let mut sighup = signal(SignalKind::hangup()).map_err(&sig)?;
            let watched = watched
                .map(register_pidfd)
                .transpose()
                .map_err(AppError::runtime("watch the --watch-pid process"))?;
            let shards = proxy
                .start_shards()
                .map_err(AppError::runtime("start the worker threads (--workers)"))?;
            let mut tasks = spawn_servers(&proxy, &shards, listeners, explicit, &dns)?;

            ready(&cfg, &mut phases, explicit_addr, policy.load().generation())?;
            after_ready(&upstream);
            let mut save_tick = tokio::time::interval(Duration::from_secs(1));
            save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = save_tick.tick(), if kv_saver.is_some() => {
                        if let Some(s) = &kv_saver {
                            s.save_if_changed();
                        }
                        continue;
                    }
                    _ = sigterm.recv() => tracing::info!("SIGTERM: detaching"),
                    _ = sigint.recv() => tracing::info!("SIGINT: detaching"),
                    _ = exited(watched.as_ref()) => tracing::info!(pid = ?cfg.watch_pid, "the --watch-pid process exited: detaching"),
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
            // Once the aborted accept loops have dropped their handles this one is the last,
            // and dropping it stops the worker threads, closing what they still serve (as the
            // runtime's shutdown does here).
            while tasks.join_next().await.is_some() {}
            drop(shards);
            if let Some(s) = &kv_saver {
                s.save_if_changed();
            }
            log_summary(&leaves, &proxy);
            Ok(())
        });
        drop(control);
        rt.shutdown_timeout(Duration::from_millis(200));
        // The audit writer batches under load: write out what is queued before the process
        // ends.
        audit.flush(Duration::from_secs(1));
        let detach = guard.map_or(Ok(()), egret_capture::CaptureGuard::detach);
        if let Some(p) = &cfg.ready_file {
            let _ = std::fs::remove_file(p);
        }
        result?;
        detach?;
        tracing::info!("detached; the sandbox namespace holds nothing of egret's");
        Ok(())
    }
}

/// Says egret serves (the log line, the ready file), then gives back start-up's heap.
fn ready(
    cfg: &Config,
    phases: &mut Phases,
    explicit_addr: Option<std::net::SocketAddr>,
    generation: u64,
) -> Result<(), AppError> {
    phases.mark("serve");
    tracing::debug!(phases = ?phases.1, "start-up phases (ms since start)");
    tracing::info!(
        sandbox = %cfg.sandbox_id,
        netns = %cfg.netns,
        explicit_proxy = ?explicit_addr,
        generation,
        startup_ms = phases.0.elapsed().as_secs_f64() * 1000.0,
        "intercepting"
    );
    if let Some(p) = &cfg.ready_file {
        write_run_file(p, format!("{}\n", std::process::id()).as_bytes())?;
    }
    Ok(())
}

/// What start-up leaves for after the ready file, so readiness does not wait for it: the
/// upstream trust store read (~5 ms in a release build; a handshake that comes first waits for
/// it rather than reading it again), then start-up's heap given back. This runs on the main
/// thread while the worker and connection threads already serve.
fn after_ready(upstream: &egret_tls::UpstreamTls) {
    let started = Instant::now();
    match upstream.load_system_roots() {
        Ok(system_roots) => tracing::debug!(
            system_roots,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "upstream trust store read"
        ),
        Err(error) => tracing::error!(
            %error,
            "no upstream TLS certificate can be verified: name a CA file with --upstream-ca or \
             install the system's CA certificates"
        ),
    }
    // Start-up's transient allocations (the system root store parsed, the policy compiled)
    // leave ~170 KiB of free heap pages behind: with one sidecar per sandbox that is 8% of
    // each idle one's private memory.
    crate::handlers::release_free_heap();
}

/// The accept loops and DNS servers on the sandbox's listeners, and the explicit proxy's.
fn spawn_servers(
    proxy: &Arc<egret_proxy::Proxy>,
    shards: &Arc<egret_proxy::Shards>,
    listeners: Option<egret_capture::Listeners>,
    explicit: Option<std::net::TcpListener>,
    dns: &Arc<egret_dns::Resolver>,
) -> Result<tokio::task::JoinSet<()>, AppError> {
    let listener = AppError::runtime("use the sandbox listeners");
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listeners) = listeners {
        let tcp4 = tokio::net::TcpListener::from_std(listeners.tcp4).map_err(&listener)?;
        tasks.spawn(proxy.clone().serve_sharded(tcp4, Some(shards.clone())));
        if let Some(l) = listeners.tcp6 {
            let tcp6 = tokio::net::TcpListener::from_std(l).map_err(&listener)?;
            tasks.spawn(proxy.clone().serve_sharded(tcp6, Some(shards.clone())));
        }
        let dns4 = tokio::net::UdpSocket::from_std(listeners.dns4).map_err(&listener)?;
        tasks.spawn(egret_dns::serve_udp(dns4, dns.clone()));
        if let Some(s) = listeners.dns6 {
            let dns6 = tokio::net::UdpSocket::from_std(s).map_err(&listener)?;
            tasks.spawn(egret_dns::serve_udp(dns6, dns.clone()));
        }
    }
    if let Some(l) = explicit {
        let l = tokio::net::TcpListener::from_std(l)
            .map_err(AppError::runtime("use the --explicit-proxy listener"))?;
        tasks.spawn(proxy.clone().serve_explicit(l, Some(shards.clone())));
    }
    Ok(tasks)
}

/// The counters an operator reads in the last lines of the log.
fn log_summary(leaves: &egret_tls::LeafCache, proxy: &egret_proxy::Proxy) {
    let st = leaves.stats();
    let ps = proxy.metrics().snapshot();
    tracing::info!(
        "leaf cache mints={} hits={} evictions={} entries={} ; connections={} requests={} denied={}",
        st.mints,
        st.hits,
        st.evictions,
        st.entries,
        ps.connections,
        ps.requests,
        ps.denied,
    );
}

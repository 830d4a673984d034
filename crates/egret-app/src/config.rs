//! What one `egret run` is told: everything needed to build its [`crate::App`]. The command
//! line fills it in; defaults are the README's.
use std::path::PathBuf;
use std::time::Duration;

/// The configuration of one sidecar.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sandbox's network namespace: a name (`ip netns`), a path, or a pid.
    pub netns: String,
    /// Identifier of the sandbox, on every log line, audit event and in the CA subject.
    pub sandbox_id: String,
    /// Policy file (TOML, JSON when it ends in `.json`); `None`: the embedded deny-all policy.
    pub policy: Option<PathBuf>,
    /// `--resolve HOST=ADDR[,ADDR]` pins, as given.
    pub resolve: Vec<String>,
    /// Written (with egret's pid) once intercepting.
    pub ready_file: Option<PathBuf>,
    /// Where to write the sandbox CA certificate (PEM).
    pub ca_out: Option<PathBuf>,
    /// Where to write system roots + the sandbox CA (PEM).
    pub ca_bundle_out: Option<PathBuf>,
    /// Extra CA files trusted for upstream TLS besides the system roots.
    pub upstream_ca: Vec<PathBuf>,
    /// Lifetime of the sandbox CA.
    pub ca_validity: Duration,
    /// Leaf certificates kept.
    pub leaf_cache_size: usize,
    /// Transparent TCP listener port inside the sandbox.
    pub listen_port: u16,
    /// DNS port inside the sandbox.
    pub dns_port: u16,
    /// Firewall mark used for interception.
    pub mark: u32,
    /// Routing table used for interception.
    pub route_table: u32,
    /// Client silence after which egret also listens for a server greeting.
    pub classify_timeout: Duration,
    /// Upstream connect / TLS handshake timeout.
    pub connect_timeout: Duration,
    /// First bytes (when no greeting is possible), ClientHello and downstream handshake.
    pub tls_handshake_timeout: Duration,
    /// Simultaneous sandbox connections.
    pub max_connections: usize,
    /// Pass `h3` `Alt-Svc` advertisements through.
    pub keep_alt_svc: bool,
    /// Audit events to this file instead of stdout.
    pub audit_log: Option<PathBuf>,
    /// Connection threads.
    pub workers: usize,
    /// Serve the admin API on this Unix socket.
    pub admin_socket: Option<PathBuf>,
    /// Persist runtime changes here and restore them at start.
    pub state_dir: Option<PathBuf>,
    /// Keep compiled handler artifacts here.
    pub handler_cache_dir: Option<PathBuf>,
    /// How many handler instances may be live at once, and how requests wait for one.
    pub handler_instances: HandlerInstances,
    /// Detach and exit when this process exits (a container's first process: the OCI hook
    /// passes it, so a sidecar never outlives its container).
    pub watch_pid: Option<u32>,
    /// Hosts allowed besides the policy's `allowed_hosts` (`egret exec --allow`).
    pub allow: Vec<String>,
    /// Also serve an explicit HTTP proxy (CONNECT and absolute-form requests) on this address
    /// in egret's own namespace (`--explicit-proxy`; port 0 picks a free one, see
    /// [`crate::App::explicit_proxy_addr`]).
    pub explicit_proxy: Option<std::net::SocketAddr>,
}

impl Config {
    /// A configuration with the README's defaults for the sandbox `sandbox_id` in `netns`.
    pub fn new(netns: impl Into<String>, sandbox_id: impl Into<String>) -> Config {
        Config {
            netns: netns.into(),
            sandbox_id: sandbox_id.into(),
            policy: None,
            resolve: Vec::new(),
            ready_file: None,
            ca_out: None,
            ca_bundle_out: None,
            upstream_ca: Vec::new(),
            ca_validity: Duration::from_secs(168 * 3600),
            leaf_cache_size: 1024,
            listen_port: 15001,
            dns_port: 15053,
            mark: 0x1,
            route_table: 100,
            classify_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 16384,
            keep_alt_svc: false,
            audit_log: None,
            workers: default_workers(),
            admin_socket: None,
            state_dir: None,
            handler_cache_dir: None,
            handler_instances: HandlerInstances::default(),
            watch_pid: None,
            allow: Vec::new(),
            explicit_proxy: None,
        }
    }
}

/// The handler instance pool of one sidecar (one sandbox): its slots, and the bounded,
/// first-come-first-served wait of a request that finds them all taken (then `503` with
/// `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerInstances {
    /// Instance slots (`--max-handler-instances`). Each reserves address space, not memory,
    /// until an instance uses it.
    pub max: u32,
    /// Longest a request waits for a slot (`--handler-instance-wait-ms`).
    pub wait: Duration,
    /// Requests that may wait at once (`--max-handler-instance-waiters`); more are refused
    /// at once.
    pub max_waiters: usize,
}

impl Default for HandlerInstances {
    fn default() -> HandlerInstances {
        HandlerInstances {
            max: egret_wasm::DEFAULT_MAX_INSTANCES,
            wait: egret_wasm::DEFAULT_INSTANCE_WAIT,
            max_waiters: egret_wasm::DEFAULT_MAX_INSTANCES as usize,
        }
    }
}

/// Two connection threads, one on a single-CPU machine (a second thread there only takes
/// turns with the first).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

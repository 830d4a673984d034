//! What one `egret run` is told: everything needed to build its [`crate::App`]. The command
//! line fills it in; [`defaults`] holds the defaults both show.
use std::path::PathBuf;
use std::time::Duration;

/// The defaults of `egret run` and `egret exec`, owned here: the command line shows these.
pub mod defaults {
    /// Validity of the sandbox CA, hours.
    pub const CA_VALIDITY_HOURS: u64 = 168;
    /// Leaf certificates kept.
    pub const LEAF_CACHE_SIZE: usize = 1024;
    /// Transparent TCP listener port inside the sandbox.
    pub const LISTEN_PORT: u16 = 15001;
    /// DNS port inside the sandbox.
    pub const DNS_PORT: u16 = 15053;
    /// Firewall mark used for interception.
    pub const MARK: u32 = 0x1;
    /// Routing table used for interception.
    pub const ROUTE_TABLE: u32 = 100;
    /// Client silence after which egret also listens for a server greeting, milliseconds.
    pub const CLASSIFY_TIMEOUT_MS: u64 = 300;
    /// Upstream connect / TLS handshake timeout, milliseconds.
    pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
    /// First bytes, ClientHello and downstream handshake timeout, milliseconds.
    pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
    /// Simultaneous sandbox connections.
    pub const MAX_CONNECTIONS: usize = 16384;
}

/// The configuration of one sidecar: the sandbox, and one part per concern, each of which
/// builds its own piece of the [`crate::App`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The sandbox's network namespace: a name (`ip netns`), a path, or a pid.
    pub netns: String,
    /// Identifier of the sandbox, on every log line, audit event and in the CA subject.
    pub sandbox_id: String,
    /// The policy, and what is allowed and pinned besides it.
    pub policy: PolicyInputs,
    /// The listeners and rules in the sandbox's namespace.
    pub capture: CaptureConfig,
    /// The sandbox CA, its leaves, and upstream trust.
    pub tls: TlsConfig,
    /// How sandbox connections are served.
    pub proxy: ProxyConfig,
    /// The handler engine.
    pub handlers: HandlersConfig,
    /// Written (with egret's pid) once intercepting.
    pub ready_file: Option<PathBuf>,
    /// Audit events to this file instead of stdout.
    pub audit_log: Option<PathBuf>,
    /// Serve the admin API on this Unix socket.
    pub admin_socket: Option<PathBuf>,
    /// Persist runtime changes here and restore them at start.
    pub state_dir: Option<PathBuf>,
    /// Detach and exit when this process exits (a container's first process: the OCI hook
    /// passes it, so a sidecar never outlives its container).
    pub watch_pid: Option<u32>,
}

/// The policy file, and what the command line adds to it.
#[derive(Debug, Clone, Default)]
pub struct PolicyInputs {
    /// Policy file (TOML, JSON when it ends in `.json`); `None`: the embedded deny-all policy.
    pub file: Option<PathBuf>,
    /// Hosts allowed besides the policy's `allowed_hosts` (`egret exec --allow`).
    pub allow: Vec<String>,
    /// `--resolve HOST=ADDR[,ADDR]` pins, as given.
    pub resolve: Vec<String>,
}

/// Where and how traffic is captured in the sandbox's namespace.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Transparent TCP listener port inside the sandbox.
    pub listen_port: u16,
    /// DNS port inside the sandbox.
    pub dns_port: u16,
    /// Firewall mark used for interception.
    pub mark: u32,
    /// Routing table used for interception.
    pub route_table: u32,
}

impl Default for CaptureConfig {
    fn default() -> CaptureConfig {
        CaptureConfig {
            listen_port: defaults::LISTEN_PORT,
            dns_port: defaults::DNS_PORT,
            mark: defaults::MARK,
            route_table: defaults::ROUTE_TABLE,
        }
    }
}

/// The sandbox CA and the trust toward upstreams.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Lifetime of the sandbox CA.
    pub ca_validity: Duration,
    /// Leaf certificates kept.
    pub leaf_cache_size: usize,
    /// Extra CA files trusted for upstream TLS besides the system roots.
    pub upstream_ca: Vec<PathBuf>,
    /// Where to write the sandbox CA certificate (PEM).
    pub ca_out: Option<PathBuf>,
    /// Where to write system roots + the sandbox CA (PEM).
    pub ca_bundle_out: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            ca_validity: Duration::from_secs(defaults::CA_VALIDITY_HOURS * 3600),
            leaf_cache_size: defaults::LEAF_CACHE_SIZE,
            upstream_ca: Vec::new(),
            ca_out: None,
            ca_bundle_out: None,
        }
    }
}

/// How sandbox connections are served.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
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
    /// Connection threads.
    pub workers: usize,
    /// Also serve an explicit HTTP proxy (CONNECT and absolute-form requests) on this address
    /// in egret's own namespace (`--explicit-proxy`; port 0 picks a free one, see
    /// [`crate::App::explicit_proxy_addr`]).
    pub explicit_proxy: Option<std::net::SocketAddr>,
    /// `--ask`: hold a connection to a destination no rule decides and ask about it, denying
    /// after this long (None: such connections are denied at once).
    pub ask_timeout: Option<Duration>,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            classify_timeout: Duration::from_millis(defaults::CLASSIFY_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(defaults::CONNECT_TIMEOUT_MS),
            tls_handshake_timeout: Duration::from_millis(defaults::TLS_HANDSHAKE_TIMEOUT_MS),
            max_connections: defaults::MAX_CONNECTIONS,
            keep_alt_svc: false,
            workers: default_workers(),
            explicit_proxy: None,
            ask_timeout: None,
        }
    }
}

/// The handler engine.
#[derive(Debug, Clone, Default)]
pub struct HandlersConfig {
    /// Keep compiled handler artifacts here.
    pub cache_dir: Option<PathBuf>,
    /// How many handler instances may be live at once, and how requests wait for one.
    pub instances: HandlerInstances,
}

impl Config {
    /// A configuration with the README's defaults for the sandbox `sandbox_id` in `netns`.
    pub fn new(netns: impl Into<String>, sandbox_id: impl Into<String>) -> Config {
        Config {
            netns: netns.into(),
            sandbox_id: sandbox_id.into(),
            policy: PolicyInputs::default(),
            capture: CaptureConfig::default(),
            tls: TlsConfig::default(),
            proxy: ProxyConfig::default(),
            handlers: HandlersConfig::default(),
            ready_file: None,
            audit_log: None,
            admin_socket: None,
            state_dir: None,
            watch_pid: None,
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

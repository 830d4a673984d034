//! Command-line interface (clap). Flag names are the interface operators script against: keep
//! them, add aliases if needed, and document every one in the README.
use clap::{Args, Parser, Subcommand, ValueEnum};
use egret_app::defaults;
use std::path::PathBuf;

/// egret — transparent egress proxy for sandboxed AI agents.
#[derive(Parser, Debug)]
#[command(name = "egret", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Attach to a sandbox's network namespace and proxy all of its traffic.
    Run(RunArgs),
    /// Run one command behind egret, as an ordinary user: it gets network, user and mount
    /// namespaces of its own, captured transparently, and trusts the sandbox CA.
    Exec(ExecArgs),
    /// Policy file tools.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Handler module tools for authors (no sandbox, no root needed).
    #[command(subcommand)]
    Handler(HandlerCmd),
    /// Change rules at runtime over a running egret's admin socket.
    Ctl(CtlCli),
    /// OCI runtime hook (podman, CRI-O): reads the container state on stdin, starts the
    /// container's egret before it runs and stops it after. Install it with
    /// `egret oci-hook hooks-json > /etc/containers/oci/hooks.d/egret.json`.
    OciHook(OciHookCli),
    /// OCI runtime shim for runtimes that do not read hooks.d (Docker, containerd,
    /// Kubernetes on containerd): run in place of runc, it adds egret's hooks to the bundle
    /// of containers that are egret's, then runs the real runc with the same arguments. Also
    /// runnable as `egret-runc` (a symlink), which reads its options from `egret-runc.args`
    /// next to it. Print the runtimes' configuration with `egret runc docker-config` and
    /// `egret runc containerd-config`.
    Runc(RuncCli),
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct OciHookCli {
    #[command(subcommand)]
    pub cmd: Option<OciHookCmd>,
    /// The hook stage; by default the state's status tells it (`creating` or `created`:
    /// createRuntime, `stopped`: poststop).
    #[arg(value_enum)]
    pub stage: Option<StageArg>,
    #[command(flatten)]
    pub opts: OciHookOpts,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OciHookCmd {
    /// Print the hooks.d JSON that runs this binary (its absolute path) with these options at
    /// createRuntime and poststop, for containers annotated with io.egret.policy.
    HooksJson(OciHookOpts),
}

/// `egret oci-hook` stages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StageArg {
    /// Start the sidecar (the container's namespaces exist, its process has not started).
    #[value(name = "createRuntime")]
    CreateRuntime,
    /// Stop the sidecar (the container stopped).
    #[value(name = "poststop")]
    Poststop,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct OciHookOpts {
    #[command(flatten)]
    pub hook: HookFlags,
    /// More `egret run` flags for every container, after `--` (e.g. `--handler-cache-dir D`).
    #[arg(last = true, value_name = "EGRET_RUN_FLAGS")]
    pub run_args: Vec<String>,
}

impl OciHookOpts {
    /// The library's options.
    pub(crate) fn to_options(&self) -> egret_oci::HookOptions {
        self.hook.to_options(&self.run_args)
    }

    /// These options as `egret oci-hook` arguments (for the hooks.d file).
    pub(crate) fn to_args(&self) -> Vec<String> {
        self.hook.to_args(&self.run_args)
    }
}

/// The hook's options, shared by `egret oci-hook` and `egret runc` (which writes the hook).
#[derive(Args, Debug, Clone)]
pub(crate) struct HookFlags {
    /// Each container's run directory (record, ready file, CA, logs) is made under this one;
    /// an io.egret.admin-socket annotation must name a path under it.
    #[arg(long, default_value = "/run/egret")]
    pub run_root: PathBuf,
    /// Accept io.egret.policy only for files under this directory (set it when whoever
    /// creates containers is not the host's administrator, e.g. Kubernetes pod authors).
    #[arg(long)]
    pub policy_dir: Option<PathBuf>,
    /// An io.egret.state-dir annotation must name a directory under this one.
    #[arg(long, default_value = "/var/lib/egret")]
    pub state_root: PathBuf,
    /// Keep each container's egret log and audit events here (ID.log, ID.audit.jsonl); by
    /// default they are in its run directory, removed at poststop.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The egret binary started as the sidecar (default: this one).
    #[arg(long, value_name = "PATH")]
    pub egret_bin: Option<PathBuf>,
    /// How long the sidecar may take to intercept before the container is refused.
    #[arg(long, default_value_t = 30_000)]
    pub ready_timeout_ms: u64,
    /// Compiled handlers shared by every sidecar (`egret run --handler-cache-dir`), so a
    /// container start loads its handlers instead of compiling them.
    #[arg(long, value_name = "DIR", default_value = egret_oci::DEFAULT_HANDLER_CACHE_DIR)]
    pub handler_cache_dir: PathBuf,
    /// Give the sidecars no handler cache: each compiles its handlers at start.
    #[arg(long)]
    pub no_handler_cache: bool,
    /// Handler instance slots of every sidecar (`egret run --max-handler-instances`), and the
    /// most a container's io.egret.max-handler-instances annotation may ask for (default:
    /// egret's, 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_handler_instances: Option<u32>,
}

impl HookFlags {
    /// The library's options, with `run_args` for every sidecar.
    pub(crate) fn to_options(&self, run_args: &[String]) -> egret_oci::HookOptions {
        egret_oci::HookOptions {
            run_root: self.run_root.clone(),
            policy_dir: self.policy_dir.clone(),
            state_root: self.state_root.clone(),
            log_dir: self.log_dir.clone(),
            egret: self.egret_bin.clone(),
            ready_timeout: std::time::Duration::from_millis(self.ready_timeout_ms),
            handler_cache_dir: (!self.no_handler_cache).then(|| self.handler_cache_dir.clone()),
            max_handler_instances: self.max_handler_instances,
            run_args: run_args.to_vec(),
        }
    }

    /// These options as `egret oci-hook` arguments, `run_args` after `--`.
    pub(crate) fn to_args(&self, run_args: &[String]) -> Vec<String> {
        let mut a = Vec::new();
        let mut push = |flag: &str, v: String| {
            a.push(flag.to_string());
            a.push(v);
        };
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        push("--run-root", path(&self.run_root));
        if let Some(p) = &self.policy_dir {
            push("--policy-dir", path(p));
        }
        push("--state-root", path(&self.state_root));
        if let Some(p) = &self.log_dir {
            push("--log-dir", path(p));
        }
        if let Some(p) = &self.egret_bin {
            push("--egret-bin", path(p));
        }
        push("--ready-timeout-ms", self.ready_timeout_ms.to_string());
        if self.no_handler_cache {
            a.push("--no-handler-cache".into());
        } else {
            a.push("--handler-cache-dir".into());
            a.push(path(&self.handler_cache_dir));
        }
        if let Some(n) = self.max_handler_instances {
            a.push("--max-handler-instances".into());
            a.push(n.to_string());
        }
        if !run_args.is_empty() {
            a.push("--".into());
            a.extend(run_args.iter().cloned());
        }
        a
    }
}

/// `egret runc`: the runtime shim.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RuncCli {
    #[command(subcommand)]
    pub cmd: Option<RuncCmd>,
    #[command(flatten)]
    pub opts: RuncOpts,
    /// runc's own arguments, after `--`, handed to the real runc unchanged.
    #[arg(last = true, value_name = "RUNC_ARGS")]
    pub runc_args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RuncCmd {
    /// Print the daemon.json fragment that registers this binary (its absolute path) with
    /// these options as Docker's runtime `egret` (`docker run --runtime egret ...`).
    DockerConfig(RuncOpts),
    /// Print containerd's runtime handler `egret` (runc v2 shim with egret-runc as its
    /// binary, pod annotations io.egret.* passed to the container) for a containerd config
    /// drop-in; the shim's options go into the options file this prints the path of.
    ContainerdConfig(ContainerdConfigArgs),
    /// Print these options as the contents of egret-runc's options file (one argument a
    /// line): `egret runc args-file OPTIONS > /opt/egret/bin/egret-runc.args`.
    ArgsFile(RuncOpts),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ContainerdConfigArgs {
    #[command(flatten)]
    pub opts: RuncOpts,
    /// The shim's path containerd runs (`BinaryName`): a symlink named egret-runc to this
    /// egret; default egret-runc next to this binary.
    #[arg(long, value_name = "PATH")]
    pub binary_name: Option<PathBuf>,
}

/// The shim's options: the hook's, and which containers are egret's and which runc runs them.
#[derive(Args, Debug, Clone)]
pub(crate) struct RuncOpts {
    #[command(flatten)]
    pub hook: HookFlags,
    /// The policy of containers that carry no io.egret.policy annotation (Docker 20.10 passes
    /// none): every container run with this runtime is then egret's.
    #[arg(long, value_name = "FILE")]
    pub default_policy: Option<PathBuf>,
    /// The real runc (default: the first runc on PATH that is not this binary).
    #[arg(long, value_name = "PATH")]
    pub runc: Option<PathBuf>,
    /// One more `egret run` flag (or value) for every sidecar, in order; repeat it
    /// (`--run-arg=--upstream-ca --run-arg=/etc/egret/ca.pem`).
    #[arg(long = "run-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub run_args: Vec<String>,
}

impl RuncOpts {
    /// These options as `egret runc` arguments (Docker's runtimeArgs, egret-runc's options
    /// file).
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut a = self.hook.to_args(&[]);
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        if let Some(p) = &self.default_policy {
            a.extend(["--default-policy".into(), path(p)]);
        }
        if let Some(p) = &self.runc {
            a.extend(["--runc".into(), path(p)]);
        }
        for r in &self.run_args {
            a.push(format!("--run-arg={r}"));
        }
        a
    }
}

#[derive(Args, Debug)]
pub(crate) struct CtlCli {
    /// The admin socket of the egret to talk to (`egret run --admin-socket`).
    #[arg(
        long,
        env = "EGRET_ADMIN_SOCKET",
        default_value = "/run/egret/admin.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Print the raw JSON answers.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub args: egret_admin::ctl::CtlArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum HandlerCmd {
    /// Build a handler written in JavaScript, TypeScript or Python into a component (needs the
    /// language's toolchain: componentize-js + esbuild from npm, or componentize-py from PyPI).
    Build(HandlerBuildArgs),
    /// Validate a module against egret's handler world (imports, exports, signature).
    Check(HandlerCheckArgs),
    /// Run a module once on a request, offline, and print its action (secrets masked).
    Run(Box<HandlerRunArgs>),
}

#[derive(Args, Debug)]
pub(crate) struct HandlerBuildArgs {
    /// The handler source: FILE.js, FILE.ts or FILE.py.
    pub file: PathBuf,
    /// Where to write the component (default: the source's name with `.wasm`).
    #[arg(short = 'o', long = "out", value_name = "OUT.wasm")]
    pub out: Option<PathBuf>,
    /// The npm prefix holding componentize-js and esbuild (default:
    /// ~/.cache/egret/toolchain).
    #[arg(long, env = "EGRET_TOOLCHAIN_DIR", value_name = "DIR")]
    pub toolchain_dir: Option<PathBuf>,
    /// Keep the compiled artifact here, as `egret run --handler-cache-dir` does: an egret
    /// sharing the directory then loads the module without compiling it again.
    #[arg(long, value_name = "DIR")]
    pub handler_cache_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct HandlerCheckArgs {
    /// The component (.wasm built with --target wasm32-wasip2).
    pub module: PathBuf,
    /// Keep the compiled artifact here, as `egret run --handler-cache-dir` does: an egret
    /// sharing the directory then loads the module without compiling it again.
    #[arg(long, value_name = "DIR")]
    pub handler_cache_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct HandlerRunArgs {
    /// The component (.wasm).
    pub module: PathBuf,
    /// The request line: METHOD URL, e.g. 'GET https://api.test/x?y=1'.
    #[arg(long)]
    pub request: String,
    /// A request header NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Handler params (JSON).
    #[arg(long, default_value = "null")]
    pub params: String,
    /// A secret NAME=VALUE available to the handler (repeatable; values are never printed).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// Sandbox id given to the handler.
    #[arg(long, default_value = "offline")]
    pub sandbox_id: String,
    /// A request body (given to the handler as a binding with `body = {...}` would).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from this file.
    #[arg(long, value_name = "PATH")]
    pub body_file: Option<PathBuf>,
    /// Grant `fetch` to these hosts (host patterns, repeatable). Fetches go out for real from
    /// this machine (a local test server is fine): certificate-verified, bounded.
    #[arg(long = "fetch-host", value_name = "PATTERN")]
    pub fetch_hosts: Vec<String>,
    /// Time for one fetch, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub fetch_timeout_ms: u64,
    /// Extra CA certificates (PEM) trusted for fetch, besides the system roots (repeatable).
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// A secret name the handler may set with set-secret (repeatable; values never printed).
    #[arg(long = "mint-secret", value_name = "NAME")]
    pub mint_secrets: Vec<String>,
    /// Run the response phase on a response with this status, after the request decision.
    #[arg(long, value_name = "STATUS")]
    pub response: Option<u16>,
    /// A response header NAME:VALUE (repeatable).
    #[arg(
        long = "response-header",
        value_name = "NAME:VALUE",
        requires = "response"
    )]
    pub response_headers: Vec<String>,
    /// The response body.
    #[arg(long, requires = "response", conflicts_with = "response_body_file")]
    pub response_body: Option<String>,
    /// Read the response body from this file.
    #[arg(long, value_name = "PATH", requires = "response")]
    pub response_body_file: Option<PathBuf>,
    /// How the handler sees the response: `head`, `buffer` (with the body), `observe`
    /// (the body as chunks after it was sent) or `stream` (each server-sent event of a
    /// `text/event-stream` body, else the body in one piece, before it would be sent).
    /// Default: `buffer` when a body is given, else `head`.
    #[arg(long, value_enum, requires = "response")]
    pub response_mode: Option<ResponseModeArg>,
}

/// `--response-mode`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ResponseModeArg {
    /// The head only.
    Head,
    /// The head and the body.
    Buffer,
    /// The body's chunks after they were sent.
    Observe,
    /// Each event (or chunk) before it would be sent: pass, replace or drop.
    Stream,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Validate a policy file and print what it allows (no root needed).
    Check(PolicyCheckArgs),
    /// Print what egret would do with each URL: decision, rule, handler. Exit 0 when all
    /// are allowed, 1 otherwise. No root, no network.
    Test(PolicyTestArgs),
    /// Write a least-privilege policy from audit logs (TOML on stdout, commented with
    /// request counts and first/last time seen).
    Suggest(PolicySuggestArgs),
}

#[derive(Args, Debug)]
pub(crate) struct PolicyTestArgs {
    /// The policy file (TOML, or JSON when it ends in .json).
    pub file: PathBuf,
    /// URLs (http:// or https://); without any, one per line on stdin (a line may start with
    /// its method: `POST https://...`).
    pub urls: Vec<String>,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The sandbox the decisions are for (printed with them).
    #[arg(long)]
    pub sandbox_id: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct PolicySuggestArgs {
    /// Audit logs (JSON lines, as `egret run --audit-log` writes them).
    #[arg(required = true)]
    pub audit: Vec<PathBuf>,
    /// Keep this policy's settings, handlers and rules and add only what it does not allow.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Also write routes with the methods and path prefixes seen per host.
    #[arg(long)]
    pub paths: bool,
    /// Collapse two or more subdomains of one domain into `*.domain`.
    #[arg(long)]
    pub wildcards: bool,
    /// Write the policy here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct PolicyCheckArgs {
    /// The policy file (TOML, or JSON when it ends in .json).
    pub file: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// The sandbox's network namespace: a name (ip netns), a path, or a pid. Without it
    /// (only with --explicit-proxy) egret captures nothing and serves only its explicit proxy.
    #[arg(long, required_unless_present = "explicit_proxy")]
    pub netns: Option<String>,
    /// Also serve an explicit HTTP proxy on this address in egret's own namespace (e.g.
    /// 127.0.0.1:3128): CONNECT for HTTPS and any TCP, absolute-form `GET http://…` for plain
    /// HTTP, under the same policy, handlers, sandbox CA and audit as captured traffic. Only
    /// programs that are told to use it (HTTPS_PROXY, `curl -x`) go through it.
    #[arg(long, value_name = "ADDR")]
    pub explicit_proxy: Option<std::net::SocketAddr>,
    /// Identifier of the sandbox (letters, digits, `-_.:@`), on every log line and in the CA.
    #[arg(long)]
    pub sandbox_id: String,
    /// Policy file (TOML; JSON when it ends in .json). Without it egret denies all egress.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Pin a name to an address, like curl's --resolve (repeatable): host=addr[,addr...].
    #[arg(long, value_name = "HOST=ADDR")]
    pub resolve: Vec<String>,
    /// Written once egret is intercepting (for scripts and tests).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Write the sandbox CA certificate (PEM) here.
    #[arg(long)]
    pub ca_out: Option<PathBuf>,
    /// Write system roots + the sandbox CA (PEM bundle) here.
    #[arg(long)]
    pub ca_bundle_out: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for upstream TLS, in addition to the system roots
    /// (repeatable).
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// Validity of the sandbox CA, in hours.
    #[arg(long, default_value_t = defaults::CA_VALIDITY_HOURS)]
    pub ca_validity_hours: u64,
    /// Leaf certificate cache size.
    #[arg(long, default_value_t = defaults::LEAF_CACHE_SIZE)]
    pub leaf_cache_size: usize,
    /// Transparent listener port inside the sandbox namespace.
    #[arg(long, default_value_t = defaults::LISTEN_PORT)]
    pub listen_port: u16,
    /// DNS port inside the sandbox namespace (udp/53 is redirected to it).
    #[arg(long, default_value_t = defaults::DNS_PORT)]
    pub dns_port: u16,
    /// Firewall mark used for interception (change it if it collides with the platform's).
    #[arg(long, default_value_t = defaults::MARK, value_parser = parse_u32)]
    pub mark: u32,
    /// Routing table used for interception.
    #[arg(long, default_value_t = defaults::ROUTE_TABLE)]
    pub route_table: u32,
    /// Milliseconds of client silence after which egret also listens for a server greeting
    /// (server-speaks-first protocols), where the destination may be opaque TCP. The
    /// client's first bytes still decide whenever they come.
    #[arg(long, default_value_t = defaults::CLASSIFY_TIMEOUT_MS)]
    pub classify_timeout_ms: u64,
    /// Upstream connect timeout, milliseconds.
    #[arg(long, default_value_t = defaults::CONNECT_TIMEOUT_MS)]
    pub connect_timeout_ms: u64,
    /// How long a client may take to send first bytes that decide its connection when no
    /// server greeting is possible, and the downstream TLS timeout (ClientHello and
    /// handshake), milliseconds.
    #[arg(long, default_value_t = defaults::TLS_HANDSHAKE_TIMEOUT_MS)]
    pub tls_handshake_timeout_ms: u64,
    /// Maximum simultaneous sandbox connections.
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Pass HTTP/3 (`h3`) advertisements in `Alt-Svc` response headers through to the sandbox
    /// (by default they are removed: UDP/443 is refused, so clients should not try QUIC).
    #[arg(long)]
    pub keep_alt_svc: bool,
    /// Write audit events (one JSON object per line) to this file instead of stdout; the file
    /// is reopened on SIGHUP (log rotation).
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Threads serving sandbox connections (default: 2, or 1 on a single-CPU machine). Each
    /// has its own event loop and upstream connection pools; a new connection goes to the
    /// thread with the fewest open ones (the first on a tie, so a lone connection costs no
    /// hand-off) and stays there. 1 keeps egret to one core of the machine it shares with its
    /// sandbox; more only helps with many busy connections.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Serve the admin API (HTTP/1.1 + JSON) on this Unix socket (created 0600).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Keep runtime changes (policy edits, uploaded modules, secrets) here, root-only, and
    /// restore them at start.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Keep compiled handler artifacts here (created 0700, keyed by module sha256): restarts
    /// skip compilation. Only egret may write to it (it holds native code).
    #[arg(long)]
    pub handler_cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub handler_instances: HandlerInstanceArgs,
    #[command(flatten)]
    pub ask: AskArgs,
    /// Detach and exit when the process with this pid exits (a container's first process:
    /// `egret oci-hook` passes it so that a sidecar never outlives its container).
    #[arg(long, value_name = "PID")]
    pub watch_pid: Option<u32>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `egret exec`: the flags of `egret run` that make sense for one command, and the command.
#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// Policy file (TOML; JSON when it ends in .json). Without it egret denies all egress.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Allow this host (a pattern as in `allowed_hosts`) besides the policy (repeatable).
    #[arg(long = "allow", value_name = "HOST")]
    pub allow: Vec<String>,
    /// Identifier of the sandbox (letters, digits, `-_.:@`; default `exec-PID`).
    #[arg(long)]
    pub sandbox_id: Option<String>,
    /// Pin a name to an address, like curl's --resolve (repeatable): host=addr[,addr...].
    #[arg(long, value_name = "HOST=ADDR")]
    pub resolve: Vec<String>,
    /// Extra CA certificates (PEM) trusted for upstream TLS, in addition to the system roots
    /// (repeatable).
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// Write audit events (one JSON object per line) to this file (default: none; the
    /// command's standard output stays its own).
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Serve the admin API (HTTP/1.1 + JSON) on this Unix socket (created 0600).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Keep compiled handler artifacts here (default: $XDG_CACHE_HOME/egret/handlers, or
    /// ~/.cache/egret/handlers), so the next `egret exec` loads handlers without compiling.
    #[arg(long)]
    pub handler_cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub handler_instances: HandlerInstanceArgs,
    #[command(flatten)]
    pub ask: AskArgs,
    /// Threads serving the command's connections (default: 2, 1 on a single-CPU machine).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Upstream connect timeout, milliseconds.
    #[arg(long, default_value_t = defaults::CONNECT_TIMEOUT_MS)]
    pub connect_timeout_ms: u64,
    /// Transparent listener port inside the sandbox.
    #[arg(long, default_value_t = defaults::LISTEN_PORT)]
    pub listen_port: u16,
    /// DNS port inside the sandbox (udp/53 is redirected to it).
    #[arg(long, default_value_t = defaults::DNS_PORT)]
    pub dns_port: u16,
    /// Log format on stderr (egret logs warnings and errors only, unless RUST_LOG says more).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The weaker mode, for machines that refuse user namespaces: no namespaces; egret serves
    /// an explicit HTTP proxy on a loopback port and sets HTTP_PROXY, HTTPS_PROXY, ALL_PROXY
    /// (and the lower-case ones), an empty NO_PROXY and the CA variables for the command. A
    /// program that ignores proxy variables is not captured: it connects directly.
    #[arg(long)]
    pub proxy_env: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

impl ExecArgs {
    /// The configuration of the egret serving the command.
    pub(crate) fn into_config(self, sandbox_id: String) -> egret_app::Config {
        let mut c = egret_app::Config::new("egret-exec", sandbox_id);
        c.policy = egret_app::PolicyInputs {
            file: self.policy,
            allow: self.allow,
            resolve: self.resolve,
        };
        c.tls.upstream_ca = self.upstream_ca;
        c.capture.listen_port = self.listen_port;
        c.capture.dns_port = self.dns_port;
        c.proxy.connect_timeout = std::time::Duration::from_millis(self.connect_timeout_ms);
        if let Some(w) = self.workers {
            c.proxy.workers = usize::from(w);
        }
        c.proxy.ask_timeout = self.ask.timeout();
        c.handlers = egret_app::HandlersConfig {
            cache_dir: self.handler_cache_dir.or_else(default_handler_cache),
            instances: self.handler_instances.to_config(),
        };
        c.audit_log = Some(self.audit_log.unwrap_or_else(|| PathBuf::from("/dev/null")));
        c.admin_socket = self.admin_socket;
        c
    }
}

/// `$XDG_CACHE_HOME/egret/handlers` or `~/.cache/egret/handlers`.
fn default_handler_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("egret").join("handlers"))
}

/// `--ask`: asking instead of denying.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub(crate) struct AskArgs {
    /// Hold a connection (or request) to a destination no rule decides and ask about it on
    /// the controlling terminal (allow once, for this run, always — written into the policy
    /// file — or deny), and on the admin socket (`egret ctl pending|approve|deny`) when there
    /// is one. Without a terminal and an admin socket such connections are denied at once.
    #[arg(long)]
    pub ask: bool,
    /// How long a question waits for an answer before the connection is denied (`30s`,
    /// `500ms`, or seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ask_timeout: std::time::Duration,
}

impl AskArgs {
    /// The question timeout when asking is on.
    pub(crate) fn timeout(&self) -> Option<std::time::Duration> {
        self.ask.then_some(self.ask_timeout)
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}")),
    }
}

/// The handler instance pool of a sidecar: shared by every command that runs one.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandlerInstanceArgs {
    /// Handler instances live at once in this sidecar (running requests, and idle instances
    /// of `instances = "reuse"` bindings). A request that finds all taken waits for one, in
    /// arrival order. Each slot reserves address space for the largest handler memory, not
    /// memory; an instance in use costs its guest's memory.
    #[arg(long, value_name = "N", default_value_t = egret_wasm::DEFAULT_MAX_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_handler_instances: u32,
    /// Longest a request waits for a handler instance before it is answered `503` with
    /// `Retry-After`, milliseconds.
    #[arg(long, value_name = "MS",
          default_value_t = egret_wasm::DEFAULT_INSTANCE_WAIT.as_millis() as u64)]
    pub handler_instance_wait_ms: u64,
    /// Requests that may wait for a handler instance at once; one more is answered `503` at
    /// once (default: as many as --max-handler-instances).
    #[arg(long, value_name = "N")]
    pub max_handler_instance_waiters: Option<usize>,
}

impl HandlerInstanceArgs {
    /// The sidecar's instance pool these flags describe.
    pub(crate) fn to_config(&self) -> egret_app::HandlerInstances {
        egret_app::HandlerInstances {
            max: self.max_handler_instances,
            wait: std::time::Duration::from_millis(self.handler_instance_wait_ms),
            max_waiters: self
                .max_handler_instance_waiters
                .unwrap_or(self.max_handler_instances as usize),
        }
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a number: {e}"))
}

impl RunArgs {
    /// The sidecar configuration these flags describe.
    pub(crate) fn into_config(self) -> egret_app::Config {
        use std::time::Duration;
        let mut c =
            egret_app::Config::new(self.netns.unwrap_or_else(|| "none".into()), self.sandbox_id);
        c.policy = egret_app::PolicyInputs {
            file: self.policy,
            allow: Vec::new(),
            resolve: self.resolve,
        };
        c.capture = egret_app::CaptureConfig {
            listen_port: self.listen_port,
            dns_port: self.dns_port,
            mark: self.mark,
            route_table: self.route_table,
        };
        c.tls = egret_app::TlsConfig {
            ca_validity: Duration::from_secs(self.ca_validity_hours.max(1) * 3600),
            leaf_cache_size: self.leaf_cache_size,
            upstream_ca: self.upstream_ca,
            ca_out: self.ca_out,
            ca_bundle_out: self.ca_bundle_out,
        };
        c.proxy = egret_app::ProxyConfig {
            classify_timeout: Duration::from_millis(self.classify_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            max_connections: self.max_connections,
            keep_alt_svc: self.keep_alt_svc,
            workers: self
                .workers
                .map_or_else(egret_app::default_workers, usize::from),
            explicit_proxy: self.explicit_proxy,
            ask_timeout: self.ask.timeout(),
        };
        c.handlers = egret_app::HandlersConfig {
            cache_dir: self.handler_cache_dir,
            instances: self.handler_instances.to_config(),
        };
        c.ready_file = self.ready_file;
        c.audit_log = self.audit_log;
        c.admin_socket = self.admin_socket;
        c.state_dir = self.state_dir;
        c.watch_pid = self.watch_pid;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook_opts(args: &[&str]) -> OciHookCli {
        let mut argv = vec!["egret", "oci-hook"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::OciHook(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hooks_json_arguments_give_the_hook_the_same_options() {
        let h = hook_opts(&[
            "hooks-json",
            "--policy-dir",
            "/etc/egret/policies",
            "--log-dir",
            "/var/log/egret",
            "--max-handler-instances",
            "64",
            "--",
            "--handler-cache-dir",
            "/var/cache/egret",
        ]);
        let Some(OciHookCmd::HooksJson(opts)) = h.cmd else {
            panic!("hooks-json")
        };
        let args = opts.to_args();
        let again = hook_opts(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(again.cmd.is_none() && again.stage.is_none());
        assert_eq!(again.opts.to_options(), opts.to_options());
        assert_eq!(
            again.opts.run_args,
            ["--handler-cache-dir", "/var/cache/egret"]
        );
    }

    #[test]
    fn exec_sizes_its_handler_instances_like_run() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["egret", "exec"];
            argv.extend_from_slice(args);
            argv.extend_from_slice(&["--", "true"]);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Exec(e) => e.into_config("t".into()).handlers.instances,
                other => panic!("{other:?}"),
            }
        };
        let d = parse(&[]);
        assert_eq!(d.max, egret_wasm::DEFAULT_MAX_INSTANCES);
        assert_eq!(d.max_waiters, d.max as usize);
        let c = parse(&[
            "--max-handler-instances",
            "7",
            "--handler-instance-wait-ms",
            "250",
        ]);
        assert_eq!(
            (c.max, c.wait, c.max_waiters),
            (7, std::time::Duration::from_millis(250), 7)
        );
    }

    #[test]
    fn ask_and_proxy_flags_reach_the_config() {
        let exec = |args: &[&str]| {
            let mut argv = vec!["egret", "exec"];
            argv.extend_from_slice(args);
            argv.extend_from_slice(&["--", "true"]);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Exec(e) => e,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(exec(&[]).into_config("t".into()).proxy.ask_timeout, None);
        let e = exec(&["--ask", "--proxy-env"]);
        assert!(e.proxy_env);
        assert_eq!(
            e.into_config("t".into()).proxy.ask_timeout,
            Some(std::time::Duration::from_secs(30))
        );
        let c = exec(&["--ask", "--ask-timeout", "1500ms"]).into_config("t".into());
        assert_eq!(
            c.proxy.ask_timeout,
            Some(std::time::Duration::from_millis(1500))
        );
        let c = exec(&["--ask", "--ask-timeout", "2"]).into_config("t".into());
        assert_eq!(c.proxy.ask_timeout, Some(std::time::Duration::from_secs(2)));
        assert!(
            Cli::try_parse_from(["egret", "exec", "--ask-timeout", "soon", "--", "true"]).is_err()
        );
        // egret run: --netns may be left out only for an explicit proxy of its own.
        assert!(Cli::try_parse_from(["egret", "run", "--sandbox-id", "s"]).is_err());
        let run = Cli::try_parse_from([
            "egret",
            "run",
            "--sandbox-id",
            "s",
            "--explicit-proxy",
            "127.0.0.1:3128",
        ])
        .unwrap();
        let Command::Run(r) = run.command else {
            panic!("run")
        };
        assert!(r.netns.is_none());
        assert_eq!(
            r.into_config().proxy.explicit_proxy,
            Some("127.0.0.1:3128".parse().unwrap())
        );
    }

    #[test]
    fn sidecars_share_a_handler_cache_unless_told_not_to() {
        let cache = |args: &[&str]| hook_opts(args).opts.to_options().handler_cache_dir;
        assert_eq!(
            cache(&[]),
            Some(PathBuf::from(egret_oci::DEFAULT_HANDLER_CACHE_DIR))
        );
        assert_eq!(
            cache(&["--handler-cache-dir", "/srv/c"]),
            Some(PathBuf::from("/srv/c"))
        );
        assert_eq!(cache(&["--no-handler-cache"]), None);
        let off = hook_opts(&["--no-handler-cache"]).opts.to_args();
        assert!(off.contains(&"--no-handler-cache".to_string()));
        assert!(!off.contains(&"--handler-cache-dir".to_string()));
    }

    /// The OCI hook starts its sidecars with a command line it writes itself: every flag of
    /// it must be one `egret run` takes, with the value the plan says.
    #[test]
    fn the_hooks_sidecar_command_line_is_one_egret_run_takes() {
        let plan = egret_oci::Plan {
            container_id: "c1".into(),
            sandbox_id: "sb-1".into(),
            policy: PathBuf::from("/etc/egret/policies/p.toml"),
            pid: 4242,
            run_dir: PathBuf::from("/run/egret/c1"),
            admin_socket: Some(PathBuf::from("/run/egret/c1/admin.sock")),
            state_dir: Some(PathBuf::from("/var/lib/egret/c1")),
            max_handler_instances: Some(64),
        };
        let opts = egret_oci::HookOptions {
            run_args: vec!["--workers".into(), "1".into()],
            ..egret_oci::HookOptions::default()
        };
        let argv =
            egret_oci::sidecar::run_argv(&plan, &opts, std::path::Path::new("/log/c1.audit.jsonl"));
        let cli = Cli::try_parse_from(
            [std::ffi::OsString::from("egret"), "run".into()]
                .into_iter()
                .chain(argv),
        )
        .unwrap_or_else(|e| panic!("the hook's `egret run` line does not parse: {e}"));
        let Command::Run(run) = cli.command else {
            panic!("not a run")
        };
        let c = run.into_config();
        assert_eq!(c.netns, "/proc/4242/ns/net");
        assert_eq!(c.sandbox_id, "sb-1");
        assert_eq!(c.policy.file, Some(plan.policy.clone()));
        assert_eq!(c.ready_file, Some(plan.run_dir.join("ready")));
        assert_eq!(c.tls.ca_out, Some(plan.run_dir.join("ca.pem")));
        assert_eq!(c.audit_log, Some(PathBuf::from("/log/c1.audit.jsonl")));
        assert_eq!(c.watch_pid, Some(4242));
        assert_eq!(c.admin_socket, plan.admin_socket);
        assert_eq!(c.state_dir, plan.state_dir);
        assert_eq!(c.handlers.cache_dir, opts.handler_cache_dir);
        assert_eq!(c.handlers.instances.max, 64);
        assert_eq!(c.proxy.workers, 1);
    }

    #[test]
    fn the_stage_may_be_given() {
        assert_eq!(
            hook_opts(&["createRuntime"]).stage,
            Some(StageArg::CreateRuntime)
        );
        assert_eq!(hook_opts(&["poststop"]).stage, Some(StageArg::Poststop));
        assert!(Cli::try_parse_from(["egret", "oci-hook", "prestart"]).is_err());
    }
}

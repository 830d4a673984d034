//! The compiled policy: validation of a (file, runtime layer) pair into matchers and handler
//! bindings, and the evaluation order every connection and request goes through.
//!
//! Everything that can be computed at load time is (pattern indexes, serialized params, rule
//! labels), so per-request evaluation is lookups and `Arc` clones only.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::address::{special_range, SpecialRange};
use crate::config::{
    self, BindingConfig, HandlerConfig, PolicyConfig, ResponseMode, RuntimeLayer, SecretSource,
    MEMORY_MB_RANGE, TIMEOUT_MS_RANGE,
};
use crate::error::{PolicyError, Problem};
use crate::matcher::HostSet;
use crate::pattern::{
    canonical_ip, is_valid_name, normalize_host, Destination, Pattern, PatternKind, PortSpec,
};

mod rules;

pub use rules::{RequestAction, RulesId};
use rules::{RouteTable, RuleGroup};

const NAME_RULE: &str = "names use only A-Z a-z 0-9 `_` `.` `-`, 1 to 64 characters";

/// Index of a [`Binding`] in a [`CompiledPolicy`]; valid only for the policy that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId(u32);

impl BindingId {
    /// Position in [`CompiledPolicy::bindings`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A handler ready to run: which module, with which params and grants and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Handler name (key in `[handlers]`).
    pub handler: Arc<str>,
    /// Module path as written in the policy.
    pub module: Arc<str>,
    /// Params as JSON, serialized once at compile: the route's or catch-all's params if given,
    /// else the handler's defaults, else `null`.
    pub params_json: Arc<str>,
    /// Secret names this handler may use.
    pub grants: Arc<[Arc<str>]>,
    /// Secret names the guest may read in clear (a subset of `grants`).
    pub reveal: Arc<[Arc<str>]>,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Memory cap in bytes.
    pub memory_bytes: u64,
    /// Largest request body buffered for the guest (`body.max_bytes`), when opted in.
    pub body_max: Option<u64>,
    /// The response phase, when opted in: what the guest sees and the buffer bound
    /// (`max_bytes` buffering, `max_event_bytes` streaming).
    pub response: Option<(ResponseMode, u64)>,
    /// What the guest may `fetch`, when granted.
    pub fetch: Option<Arc<FetchGrant>>,
    /// Secret names the guest may set (and then use).
    pub mint: Arc<[Arc<str>]>,
    /// Mask every secret value filled into a request where the response echoes it.
    pub echo_guard: bool,
    /// `instances = "reuse"`: idle instances serve later requests of the binding's handler.
    pub reuse_instances: bool,
}

/// The hosts one handler may `fetch` and the bounds of its calls.
#[derive(Debug, Clone)]
pub struct FetchGrant {
    hosts: HostSet,
    sources: Vec<String>,
    /// Calls per invocation.
    pub max_calls: u32,
    /// Largest response body read.
    pub max_response_bytes: u64,
    /// Time for one call.
    pub timeout: Duration,
}

impl PartialEq for FetchGrant {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources
            && self.max_calls == other.max_calls
            && self.max_response_bytes == other.max_response_bytes
            && self.timeout == other.timeout
    }
}

impl Eq for FetchGrant {}

impl FetchGrant {
    /// Whether `host` (a name or an IP literal) on `port` is granted.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let dest = match bare.parse::<IpAddr>() {
            Ok(ip) => Destination::ip(canonical_ip(ip), port),
            Err(_) => Destination::host(bare, port),
        };
        self.hosts.find(&dest).is_some()
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.sources
    }
}

/// What to do with a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictAction {
    /// Refuse.
    Deny,
    /// Forward unchanged.
    Allow,
    /// Hand each request to this handler binding.
    Handler(BindingId),
    /// Decide each request by these request rules ([`CompiledPolicy::evaluate_request`]);
    /// HTTP only.
    Rules(RulesId),
}

/// A decision and the rule that made it (pre-formatted; printed in denial bodies and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The decision.
    pub action: VerdictAction,
    /// The rule, e.g. `denied_hosts "evil.test"` or `default deny (internet = false)`.
    pub rule: Arc<str>,
    /// The first rule that would have denied this, when report-only (`enforce = false`, a
    /// `report_only` route) let it through.
    pub would_deny: Option<Arc<str>>,
}

impl Verdict {
    /// Whether the destination is denied.
    pub fn is_deny(&self) -> bool {
        self.action == VerdictAction::Deny
    }
}

/// The decision on one HTTP request ([`CompiledPolicy::evaluate_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestVerdict {
    /// The decision.
    pub action: RequestAction,
    /// The rule that made it.
    pub rule: Arc<str>,
    /// The first rule that would have denied the request, when report-only let it through.
    pub would_deny: Option<Arc<str>>,
}

impl RequestVerdict {
    fn new(action: RequestAction, v: Verdict) -> RequestVerdict {
        RequestVerdict {
            action,
            rule: v.rule,
            would_deny: v.would_deny,
        }
    }

    /// Whether the request is refused.
    pub fn is_deny(&self) -> bool {
        matches!(self.action, RequestAction::Deny { .. })
    }
}

/// What to do with a TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsDecision {
    /// Terminate TLS with a leaf from the sandbox CA and evaluate each request.
    Intercept(Verdict),
    /// Splice the bytes through untouched.
    Passthrough(Verdict),
    /// Close the connection.
    Refuse(Verdict),
}

impl TlsDecision {
    /// The verdict behind the decision.
    pub fn verdict(&self) -> &Verdict {
        match self {
            TlsDecision::Intercept(v) | TlsDecision::Passthrough(v) | TlsDecision::Refuse(v) => v,
        }
    }
}

/// What the sandbox's resolver answers for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsDecision {
    /// Answer (with a synthetic address): some connection to the name could be allowed.
    Answer,
    /// NXDOMAIN: every connection to the name would be denied, by `rule`.
    NxDomain {
        /// The rule that denies every port of the name.
        rule: Arc<str>,
    },
}

/// A validated, compiled policy: immutable, cheap to share behind an `Arc`, swapped whole.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    generation: u64,
    config: PolicyConfig,
    runtime: RuntimeLayer,
    denied: HostSet,
    denied_rules: Vec<Arc<str>>,
    allowed: HostSet,
    allowed_rules: Vec<Arc<str>>,
    passthrough: HostSet,
    runtime_routes: RouteTable,
    static_routes: RouteTable,
    groups: Vec<RuleGroup>,
    runtime_outbound: Option<(BindingId, Arc<str>)>,
    static_outbound: Option<(BindingId, Arc<str>)>,
    bindings: Vec<Binding>,
    pins: HashMap<Box<str>, Vec<IpAddr>>,
    /// `allowed_upstream_cidrs`.
    upstream_cidrs: Vec<IpNet>,
    /// The IP and CIDR patterns of `allowed_hosts` and of the routes: naming an address there
    /// allows egret to dial it even when it is not public.
    upstream_nets: HostSet,
    warnings: Vec<Problem>,
    rule_not_allowed: Arc<str>,
    rule_internet: Arc<str>,
    rule_default_deny: Arc<str>,
}

/// Collects problems and warnings while compiling.
struct Compiler<'a> {
    cfg: &'a PolicyConfig,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    bindings: Vec<Binding>,
}

fn handler_path(name: &str) -> String {
    if is_valid_name(name) {
        format!("handlers.{name}")
    } else {
        format!("handlers.{name:?}")
    }
}

impl Compiler<'_> {
    /// Compiles a host list; invalid entries become problems and are left out.
    fn patterns(&mut self, path: &str, sources: &[String]) -> Vec<(usize, Pattern)> {
        let mut out = Vec::with_capacity(sources.len());
        for (i, src) in sources.iter().enumerate() {
            match Pattern::parse(src) {
                Ok(p) => out.push((i, p)),
                Err(e) => self.problems.push(Problem {
                    path: format!("{path}[{i}]"),
                    value: src.clone(),
                    message: format!("invalid host pattern `{}`: {}", e.pattern, e.kind),
                    hint: e.hint(),
                }),
            }
        }
        out
    }

    fn host_list(&mut self, path: &str, sources: &[String]) -> (HostSet, Vec<Arc<str>>) {
        let pats = self.patterns(path, sources);
        let rules = pats
            .iter()
            .map(|(_, p)| Arc::from(format!("{path} {:?}", p.as_str())))
            .collect();
        (
            HostSet::new(pats.into_iter().map(|(_, p)| p).collect()),
            rules,
        )
    }

    fn check_handlers(&mut self) {
        let cfg = self.cfg;
        for (name, h) in &cfg.handlers {
            let path = handler_path(name);
            if !is_valid_name(name) {
                self.problems.push(
                    Problem::new(&path, name.as_str(), "invalid handler name")
                        .hint(NAME_RULE.to_owned()),
                );
            }
            if h.module.trim().is_empty() {
                self.problems.push(
                    Problem::new(
                        format!("{path}.module"),
                        h.module.as_str(),
                        "module is empty",
                    )
                    .hint("set the path of the handler's .wasm component"),
                );
            }
            if !TIMEOUT_MS_RANGE.contains(&h.timeout_ms) {
                self.problems.push(
                    Problem::new(
                        format!("{path}.timeout_ms"),
                        h.timeout_ms.to_string(),
                        "timeout_ms is out of range",
                    )
                    .hint("use 1..=10000 milliseconds (default 50)"),
                );
            }
            if !MEMORY_MB_RANGE.contains(&h.memory_mb) {
                self.problems.push(
                    Problem::new(
                        format!("{path}.memory_mb"),
                        h.memory_mb.to_string(),
                        "memory_mb is out of range",
                    )
                    .hint("use 1..=1024 MiB (default 16)"),
                );
            }
            for (i, s) in h.secrets.iter().enumerate() {
                let p = format!("{path}.secrets[{i}]");
                if !is_valid_name(s) {
                    self.problems
                        .push(Problem::new(p, s.as_str(), "invalid secret name").hint(NAME_RULE));
                } else if !cfg.secrets.contains_key(s) {
                    // Secrets may be provided at runtime, so this is not fatal.
                    self.warnings.push(
                        Problem::new(p, s.as_str(), "the secret is not defined in [secrets]").hint(
                            format!(
                                "add `{s} = {{ env = \"...\" }}` to [secrets], or set it at \
                                 runtime before the handler uses it"
                            ),
                        ),
                    );
                }
            }
            for (i, r) in h.reveal.iter().enumerate() {
                if !h.secrets.contains(r) {
                    self.problems.push(
                        Problem::new(
                            format!("{path}.reveal[{i}]"),
                            r.as_str(),
                            "a revealed secret must also be granted",
                        )
                        .hint(format!(
                            "add {r:?} to {path}.secrets, or remove it from {path}.reveal"
                        )),
                    );
                }
            }
            self.check_capabilities(&path, h);
        }
        for (name, src) in &cfg.secrets {
            let path = if is_valid_name(name) {
                format!("secrets.{name}")
            } else {
                format!("secrets.{name:?}")
            };
            if !is_valid_name(name) {
                self.problems.push(
                    Problem::new(&path, name.as_str(), "invalid secret name").hint(NAME_RULE),
                );
            }
            let (field, value) = match src {
                SecretSource::Env(v) => ("env", v),
                SecretSource::File(v) => ("file", v),
            };
            if value.trim().is_empty() {
                self.problems.push(
                    Problem::new(
                        format!("{path}.{field}"),
                        value.as_str(),
                        "the source is empty",
                    )
                    .hint(format!("name the {field} the secret is read from")),
                );
            }
        }
    }

    /// Resolves a binding to a handler; a missing handler is a problem (and `None`).
    fn bind(&mut self, path: &str, b: &BindingConfig) -> Option<BindingId> {
        let Some(h) = self.cfg.handlers.get(&b.handler) else {
            let names: Vec<&str> = self.cfg.handlers.keys().map(String::as_str).collect();
            let hint = if names.is_empty() {
                format!(
                    "no handlers are defined; add a [handlers.{}] table with a module",
                    b.handler
                )
            } else {
                format!("defined handlers: {}", names.join(", "))
            };
            self.problems.push(
                Problem::new(path, b.handler.as_str(), "no handler has this name").hint(hint),
            );
            return None;
        };
        let params = b.params.as_ref().or(h.params.as_ref());
        let params_json = match params {
            Some(p) => serde_json::to_string(p).expect("JSON values always serialize"),
            None => "null".to_owned(),
        };
        let list =
            |v: &[String]| -> Arc<[Arc<str>]> { v.iter().map(|s| Arc::from(&**s)).collect() };
        let id = BindingId(u32::try_from(self.bindings.len()).expect("too many bindings"));
        self.bindings.push(Binding {
            handler: Arc::from(b.handler.as_str()),
            module: Arc::from(h.module.as_str()),
            params_json: Arc::from(params_json),
            grants: list(&h.secrets),
            reveal: list(&h.reveal),
            timeout: Duration::from_millis(h.timeout_ms),
            memory_bytes: h.memory_mb.saturating_mul(1024 * 1024),
            body_max: h.body.map(|b| b.max_bytes),
            response: h.response.map(|r| {
                let max = match r.mode {
                    ResponseMode::Stream => {
                        r.max_event_bytes.unwrap_or(config::DEFAULT_EVENT_BYTES)
                    }
                    _ => r.max_bytes.unwrap_or(config::DEFAULT_RESPONSE_BYTES),
                };
                (r.mode, max)
            }),
            fetch: (!h.fetch_hosts.is_empty()).then(|| {
                let limits = h.fetch.unwrap_or_default();
                Arc::new(FetchGrant {
                    hosts: HostSet::new(
                        h.fetch_hosts
                            .iter()
                            .filter_map(|p| Pattern::parse(p).ok())
                            .collect(),
                    ),
                    sources: h.fetch_hosts.clone(),
                    max_calls: limits.max_calls,
                    max_response_bytes: limits.max_response_bytes,
                    timeout: Duration::from_millis(limits.timeout_ms),
                })
            }),
            mint: list(&h.mint_secrets),
            echo_guard: h.echo_guard,
            reuse_instances: h.instances == config::Instances::Reuse,
        });
        Some(id)
    }

    fn outbound(&mut self, path: &str, b: Option<&BindingConfig>) -> Option<(BindingId, Arc<str>)> {
        let b = b?;
        let id = self.bind(path, b)?;
        Some((id, Arc::from(format!("{path} -> {}", b.handler))))
    }

    fn pins(&mut self) -> HashMap<Box<str>, Vec<IpAddr>> {
        let mut pins = HashMap::new();
        for (host, addrs) in &self.cfg.resolve {
            let path = format!("resolve.{host:?}");
            let key = match pin_host(host) {
                Ok(k) => Some(k),
                Err(msg) => {
                    self.problems.push(
                        Problem::new(&path, host.as_str(), msg)
                            .hint("write a plain host name such as `api.example.com`"),
                    );
                    None
                }
            };
            let addrs = addrs.as_slice();
            if addrs.is_empty() {
                self.problems.push(
                    Problem::new(&path, "[]", "no addresses given")
                        .hint("give one address or a list of addresses"),
                );
            }
            let mut ips = Vec::with_capacity(addrs.len());
            for (j, a) in addrs.iter().enumerate() {
                match parse_ip(a) {
                    Some(ip) => ips.push(ip),
                    None => self.problems.push(
                        Problem::new(format!("{path}[{j}]"), a.as_str(), "not an IP address")
                            .hint("write IPv4 like `10.0.0.2` or IPv6 like `fd00::2`"),
                    ),
                }
            }
            if let Some(k) = key {
                pins.insert(k, ips);
            }
        }
        pins
    }
}

impl Compiler<'_> {
    /// The opt-ins of handler `h` at `path`: body and response buffering, fetch, minted
    /// secrets.
    fn check_capabilities(&mut self, path: &str, h: &HandlerConfig) {
        use crate::config::{ResponseMode, MAX_BUFFER_BYTES};
        let mut range = |field: String, v: u64, lo: u64, hi: u64, unit: &str| {
            if !(lo..=hi).contains(&v) {
                self.problems.push(
                    Problem::new(field, v.to_string(), "out of range")
                        .hint(format!("use {lo}..={hi} {unit}")),
                );
            }
        };
        if let Some(b) = h.body {
            range(
                format!("{path}.body.max_bytes"),
                b.max_bytes,
                1,
                MAX_BUFFER_BYTES,
                "bytes",
            );
        }
        if let Some(r) = h.response {
            if let Some(m) = r.max_bytes {
                range(
                    format!("{path}.response.max_bytes"),
                    m,
                    1,
                    MAX_BUFFER_BYTES,
                    "bytes",
                );
            }
            if let Some(m) = r.max_event_bytes {
                range(
                    format!("{path}.response.max_event_bytes"),
                    m,
                    1,
                    MAX_BUFFER_BYTES,
                    "bytes",
                );
            }
        }
        if let Some(f) = h.fetch {
            range(
                format!("{path}.fetch.max_calls"),
                f.max_calls.into(),
                1,
                64,
                "calls",
            );
            range(
                format!("{path}.fetch.max_response_bytes"),
                f.max_response_bytes,
                1,
                MAX_BUFFER_BYTES,
                "bytes",
            );
            range(
                format!("{path}.fetch.timeout_ms"),
                f.timeout_ms,
                1,
                60_000,
                "milliseconds",
            );
        }
        if let Some(r) = h.response {
            if r.max_bytes.is_some() && r.mode != ResponseMode::Buffer {
                self.warnings.push(
                    Problem::new(
                        format!("{path}.response.max_bytes"),
                        "",
                        "only a buffered response phase buffers the body",
                    )
                    .hint("remove max_bytes, or use mode = \"buffer\""),
                );
            }
            if r.max_event_bytes.is_some() && r.mode != ResponseMode::Stream {
                self.warnings.push(
                    Problem::new(
                        format!("{path}.response.max_event_bytes"),
                        "",
                        "only a streamed response phase splits the body into events",
                    )
                    .hint("remove max_event_bytes, or use mode = \"stream\""),
                );
            }
        }
        for (i, p) in h.fetch_hosts.iter().enumerate() {
            if let Err(e) = Pattern::parse(p) {
                self.problems.push(Problem {
                    path: format!("{path}.fetch_hosts[{i}]"),
                    value: p.clone(),
                    message: format!("invalid host pattern `{}`: {}", e.pattern, e.kind),
                    hint: e.hint(),
                });
            }
        }
        if h.fetch.is_some() && h.fetch_hosts.is_empty() {
            self.warnings.push(
                Problem::new(
                    format!("{path}.fetch"),
                    "",
                    "fetch limits without fetch_hosts",
                )
                .hint("list the hosts the handler may call in fetch_hosts"),
            );
        }
        for (i, m) in h.mint_secrets.iter().enumerate() {
            let field = format!("{path}.mint_secrets[{i}]");
            if !is_valid_name(m) {
                self.problems
                    .push(Problem::new(field, m.as_str(), "invalid secret name").hint(NAME_RULE));
            } else if self.cfg.secrets.contains_key(m) {
                self.problems.push(
                    Problem::new(
                        field,
                        m.as_str(),
                        "a minted secret must not be one of [secrets]",
                    )
                    .hint("choose another name: the handler would overwrite the admin's value"),
                );
            }
        }
    }

    fn upstream_cidrs(&mut self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, src) in self.cfg.allowed_upstream_cidrs.iter().enumerate() {
            let text = src.trim();
            let parsed = text
                .parse::<IpNet>()
                .ok()
                .or_else(|| parse_ip(text).map(IpNet::from));
            match parsed {
                Some(net) => out.push(net.trunc()),
                None => self.problems.push(
                    Problem::new(
                        format!("allowed_upstream_cidrs[{i}]"),
                        src.as_str(),
                        "not an IP address or CIDR network",
                    )
                    .hint("write e.g. `10.0.0.0/8`, `10.1.2.3` or `fd00::/8` (no names, no ports)"),
                ),
            }
        }
        out
    }
}

/// Checks that `host` is a plain name (or IP literal) usable as a pin key; returns its
/// normalized form.
fn pin_host(host: &str) -> Result<Box<str>, String> {
    match Pattern::parse(host) {
        Ok(p) if p.port() == PortSpec::Any => match p.kind() {
            PatternKind::Exact(h) => Ok(h.clone()),
            _ => Err("only a plain host name can be pinned (no `*`, IP or CIDR)".to_owned()),
        },
        Ok(_) => Err("only a plain host name can be pinned (no port)".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Parses a command-line pin `HOST=ADDR[,ADDR...]` (each ADDR IPv4, IPv6, or `[IPv6]`) into one
/// (host, address) pair per address, the host normalised as the policy matches it. The one
/// parser of `--resolve` (egret run, egret exec, the OCI hook's sidecars).
pub fn parse_pin_arg(arg: &str) -> Result<Vec<(String, IpAddr)>, PolicyError> {
    let invalid = |msg: &str, hint: &str| {
        PolicyError::Invalid(vec![Problem::new("--resolve", arg, msg).hint(hint)])
    };
    let Some((host, addrs)) = arg.split_once('=') else {
        return Err(invalid(
            "expected HOST=ADDR",
            "e.g. --resolve api.example.com=10.0.0.2",
        ));
    };
    if host.trim().is_empty() {
        return Err(invalid(
            "empty host name",
            "e.g. --resolve api.example.com=10.0.0.2",
        ));
    }
    let host = pin_host(host.trim()).map_err(|m| invalid(&m, "write a plain host name"))?;
    addrs
        .split(',')
        .map(|a| {
            parse_ip(a).map(|ip| (host.to_string(), ip)).ok_or_else(|| {
                invalid(
                    &format!("{:?} is not an IP address", a.trim()),
                    "write IPv4 like `10.0.0.2` or IPv6 like `fd00::2`",
                )
            })
        })
        .collect()
}

impl CompiledPolicy {
    /// Validates and compiles a policy file with a runtime layer over it.
    ///
    /// Every problem is collected and returned at once as [`PolicyError::Invalid`]; problems
    /// that do not stop the policy from working (e.g. a granted secret not in `[secrets]`,
    /// which may be set at runtime) are kept as [`CompiledPolicy::warnings`].
    pub fn compile(
        cfg: &PolicyConfig,
        rt: &RuntimeLayer,
        generation: u64,
    ) -> Result<CompiledPolicy, PolicyError> {
        let mut c = Compiler {
            cfg,
            problems: Vec::new(),
            warnings: Vec::new(),
            bindings: Vec::new(),
        };
        c.check_handlers();
        let (denied, denied_rules) = c.host_list("denied_hosts", &cfg.denied_hosts);
        let (allowed, allowed_rules) = c.host_list("allowed_hosts", &cfg.allowed_hosts);
        let passthrough_pats = c.patterns("passthrough_hosts", &cfg.passthrough_hosts);
        let mut groups = Vec::new();
        let runtime_routes = c.routes("runtime.routes", &rt.routes, &mut groups);
        let static_routes = c.routes("routes", &cfg.routes, &mut groups);
        let runtime_outbound = c.outbound("runtime.outbound", rt.outbound.as_ref());
        let static_outbound = c.outbound("outbound", cfg.outbound.as_ref());
        let pins = c.pins();
        let upstream_cidrs = c.upstream_cidrs();
        let upstream_nets = HostSet::new(
            allowed
                .patterns()
                .iter()
                .chain(runtime_routes.set.patterns())
                .chain(static_routes.set.patterns())
                .filter(|p| matches!(p.kind(), PatternKind::Net(_)))
                .cloned()
                .collect(),
        );

        for (i, p) in &passthrough_pats {
            for (table, prefix) in [
                (&runtime_routes, "runtime.routes"),
                (&static_routes, "routes"),
            ] {
                for (k, q) in table.set.patterns().iter().enumerate() {
                    if !q.same_as(p) {
                        continue;
                    }
                    if let VerdictAction::Rules(_) = table.targets[k].0 {
                        c.problems.push(
                            Problem::new(
                                format!("passthrough_hosts[{i}]"),
                                p.as_str(),
                                format!(
                                    "has request rules in {prefix} ({}); TLS to it is spliced, \
                                     so they could not be applied to its HTTPS requests",
                                    table.targets[k].1
                                ),
                            )
                            .hint("remove it from passthrough_hosts or from the routes"),
                        );
                    } else if let VerdictAction::Handler(id) = table.targets[k].0 {
                        let handler = &c.bindings[id.index()].handler;
                        c.warnings.push(
                            Problem::new(
                                format!("passthrough_hosts[{i}]"),
                                p.as_str(),
                                format!(
                                    "also routed to handler `{handler}` by {prefix}; TLS to it is \
                                     spliced, so the handler never sees its HTTPS requests"
                                ),
                            )
                            .hint("remove it from passthrough_hosts or from the route"),
                        );
                    }
                }
            }
        }

        if !c.problems.is_empty() {
            return Err(PolicyError::Invalid(c.problems));
        }
        Ok(CompiledPolicy {
            generation,
            config: cfg.clone(),
            runtime: rt.clone(),
            denied,
            denied_rules,
            allowed,
            allowed_rules,
            passthrough: HostSet::new(passthrough_pats.into_iter().map(|(_, p)| p).collect()),
            runtime_routes,
            static_routes,
            groups,
            runtime_outbound,
            static_outbound,
            bindings: c.bindings,
            pins,
            upstream_cidrs,
            upstream_nets,
            warnings: c.warnings,
            rule_not_allowed: Arc::from("not in allowed_hosts"),
            rule_internet: Arc::from("internet = true"),
            rule_default_deny: Arc::from("default deny (internet = false)"),
        })
    }

    /// Decides what happens to `dest`, in this order: `denied_hosts` → the `allowed_hosts`
    /// gate → runtime route → static route → runtime catch-all → static catch-all →
    /// `allowed_hosts` match → `internet = true` → deny.
    ///
    /// With `enforce = false` a step that would deny is noted in [`Verdict::would_deny`] and
    /// the evaluation goes on as if it had not matched; what is left at the end is allowed.
    pub fn evaluate(&self, dest: &Destination<'_>) -> Verdict {
        let mut would: Option<Arc<str>> = None;
        let routed = |(action, rule): &(VerdictAction, Arc<str>), would| Verdict {
            action: *action,
            rule: rule.clone(),
            would_deny: would,
        };
        if let Some(m) = self.denied.find(dest) {
            if let Some(v) = self.refuse(&self.denied_rules[m.index], &mut would) {
                return v;
            }
        }
        let allowed = self.allowed.find(dest);
        if allowed.is_none() && !self.allowed.is_empty() {
            if let Some(v) = self.refuse(&self.rule_not_allowed, &mut would) {
                return v;
            }
        }
        if let Some(t) = self.runtime_routes.find(dest) {
            return routed(t, would);
        }
        if let Some(t) = self.static_routes.find(dest) {
            return routed(t, would);
        }
        if let Some((id, rule)) = self.catch_all() {
            return Verdict {
                action: VerdictAction::Handler(id),
                rule: rule.clone(),
                would_deny: would,
            };
        }
        if let Some(m) = allowed {
            return Verdict {
                action: VerdictAction::Allow,
                rule: self.allowed_rules[m.index].clone(),
                would_deny: would,
            };
        }
        if self.config.internet {
            return Verdict {
                action: VerdictAction::Allow,
                rule: self.rule_internet.clone(),
                would_deny: would,
            };
        }
        if let Some(v) = self.refuse(&self.rule_default_deny, &mut would) {
            return v;
        }
        Verdict {
            action: VerdictAction::Allow,
            rule: self.rule_default_deny.clone(),
            would_deny: would,
        }
    }

    /// A denial by `rule`: the verdict when the policy enforces, else `None` with the rule
    /// noted as the first that would have denied.
    fn refuse(&self, rule: &Arc<str>, would: &mut Option<Arc<str>>) -> Option<Verdict> {
        if self.config.enforce {
            return Some(Verdict {
                action: VerdictAction::Deny,
                rule: rule.clone(),
                would_deny: None,
            });
        }
        would.get_or_insert_with(|| rule.clone());
        None
    }

    /// The catch-all handler in force (runtime before static).
    fn catch_all(&self) -> Option<(BindingId, &Arc<str>)> {
        self.runtime_outbound
            .as_ref()
            .or(self.static_outbound.as_ref())
            .map(|(id, rule)| (*id, rule))
    }

    /// Decides one HTTP request: the destination's [`CompiledPolicy::evaluate`], then, when it
    /// has request rules, its routes in file order — the first whose method and path match
    /// decides; a request none matches is denied. `path` is the request's path as sent (made
    /// canonical here, see [`crate::request::canonical_path`]) and `query` its query, if any.
    ///
    /// A denial that is report-only (`enforce = false`, a `report_only` route, or a request
    /// no route matches when every route of the host is `report_only`) is noted in
    /// [`RequestVerdict::would_deny`] and the following routes are tried; when none decides,
    /// the request goes to the catch-all handler if there is one, else it is allowed.
    pub fn evaluate_request(
        &self,
        dest: &Destination<'_>,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> RequestVerdict {
        let v = self.evaluate(dest);
        let (id, mut would) = match v.action {
            VerdictAction::Rules(id) => (id, v.would_deny),
            VerdictAction::Allow => return RequestVerdict::new(RequestAction::Allow, v),
            VerdictAction::Handler(b) => return RequestVerdict::new(RequestAction::Handler(b), v),
            VerdictAction::Deny => {
                let deny = RequestAction::Deny {
                    status: config::DEFAULT_DENY_STATUS,
                    message: None,
                };
                return RequestVerdict::new(deny, v);
            }
        };
        let group = &self.groups[id.0 as usize];
        let path = crate::request::canonical_path(path);
        let bit = crate::request::method_bit(method);
        for r in &group.rules {
            if !r.when.matches_with(bit, method, &path, query) {
                continue;
            }
            if matches!(r.then, RequestAction::Deny { .. })
                && (r.report_only || !self.config.enforce)
            {
                would.get_or_insert_with(|| r.rule.clone());
                continue;
            }
            return RequestVerdict {
                action: r.then.clone(),
                rule: r.rule.clone(),
                would_deny: would,
            };
        }
        if self.config.enforce && !group.report_only && would.is_none() {
            return RequestVerdict {
                action: RequestAction::Deny {
                    status: config::DEFAULT_DENY_STATUS,
                    message: None,
                },
                rule: group.no_match.clone(),
                would_deny: None,
            };
        }
        let would = would.unwrap_or_else(|| group.no_match.clone());
        let (action, rule) = match self.catch_all() {
            Some((b, rule)) => (RequestAction::Handler(b), rule.clone()),
            None => (RequestAction::Allow, would.clone()),
        };
        RequestVerdict {
            action,
            rule,
            would_deny: Some(would),
        }
    }

    /// Whether a denial by `rule` means that no rule names the destination: the default deny,
    /// or the `allowed_hosts` gate of a host the list does not hold (`--ask` asks about those;
    /// a `denied_hosts` entry or a request rule is a decision).
    pub fn is_undecided(&self, rule: &Arc<str>) -> bool {
        Arc::ptr_eq(rule, &self.rule_default_deny) || Arc::ptr_eq(rule, &self.rule_not_allowed)
    }

    /// Whether denials are carried out (`enforce`).
    pub fn enforces(&self) -> bool {
        self.config.enforce
    }

    /// Whether egret may dial `ip` on `port` for the sandbox: `None` when it may (a public
    /// address, or a non-public one the operator allowed), else the non-public range that
    /// stops it. Allowed are addresses covered by `allowed_upstream_cidrs`, and — except for
    /// loopback, link-local, multicast and "this network" — addresses an IP or CIDR pattern of
    /// `allowed_hosts` or of a route names. Pinned names are not asked about at all.
    pub fn upstream_refusal(&self, ip: IpAddr, port: u16) -> Option<&'static SpecialRange> {
        let ip = canonical_ip(ip);
        let range = special_range(ip)?;
        if self.upstream_cidrs.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        if !range.local
            && self
                .upstream_nets
                .find(&Destination::ip(ip, port))
                .is_some()
        {
            return None;
        }
        Some(range)
    }

    /// Whether `allowed_upstream_cidrs` or an IP/CIDR pattern of the policy names `ip` (so
    /// dialling it was asked for, even if it turns out to be egret's own address).
    pub fn upstream_named(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical_ip(ip);
        self.upstream_cidrs.iter().any(|n| n.contains(&ip))
            || self
                .upstream_nets
                .find(&Destination::ip(ip, port))
                .is_some()
    }

    /// Decides what to do with a TLS connection: refuse what is denied, splice
    /// `passthrough_hosts` (even when a handler route matched), intercept when
    /// `intercept_https` is on or a handler must see the requests, splice otherwise.
    pub fn tls_decision(&self, dest: &Destination<'_>) -> TlsDecision {
        let v = self.evaluate(dest);
        match v.action {
            VerdictAction::Deny => TlsDecision::Refuse(v),
            _ if self.passthrough.find(dest).is_some() => TlsDecision::Passthrough(v),
            VerdictAction::Handler(_) | VerdictAction::Rules(_) => TlsDecision::Intercept(v),
            VerdictAction::Allow if self.config.intercept_https => TlsDecision::Intercept(v),
            VerdictAction::Allow => TlsDecision::Passthrough(v),
        }
    }

    /// Decides whether the sandbox's resolver answers `name`: NXDOMAIN only when no connection
    /// to the name, on any port, could be anything but denied.
    ///
    /// `name` is normalized here (case, trailing dot), since resolvers pass names as asked.
    pub fn dns_decision(&self, name: &str) -> DnsDecision {
        if !self.config.enforce {
            return DnsDecision::Answer;
        }
        let name = normalize_host(name);
        let name = name.as_ref();
        if let Some(m) = self.denied.find_every_port(name) {
            return DnsDecision::NxDomain {
                rule: self.denied_rules[m.index].clone(),
            };
        }
        let allowed = self.allowed.find_any_port(name).is_some();
        if !allowed && !self.allowed.is_empty() {
            return DnsDecision::NxDomain {
                rule: self.rule_not_allowed.clone(),
            };
        }
        let reachable = self.config.internet
            || allowed
            || self.runtime_routes.set.find_any_port(name).is_some()
            || self.static_routes.set.find_any_port(name).is_some()
            || self.runtime_outbound.is_some()
            || self.static_outbound.is_some();
        if reachable {
            DnsDecision::Answer
        } else {
            DnsDecision::NxDomain {
                rule: self.rule_default_deny.clone(),
            }
        }
    }

    /// Addresses `host` (normalized) is pinned to by `[resolve]` or extra pins.
    pub fn pinned(&self, host: &str) -> Option<&[IpAddr]> {
        self.pins.get(host).map(Vec::as_slice)
    }

    /// Every pin, in no particular order.
    pub fn pins(&self) -> impl Iterator<Item = (&str, &[IpAddr])> {
        self.pins.iter().map(|(h, a)| (&**h, a.as_slice()))
    }

    /// Merges pins from the command line (`--resolve host=addr`, see [`parse_pin_arg`]).
    /// They win: a host given here replaces its `[resolve]` entry; several pins of the same
    /// host accumulate in order.
    pub fn with_extra_pins<I, S>(mut self, pins: I) -> Result<CompiledPolicy, PolicyError>
    where
        I: IntoIterator<Item = (S, IpAddr)>,
        S: AsRef<str>,
    {
        let mut extra: HashMap<Box<str>, Vec<IpAddr>> = HashMap::new();
        let mut problems = Vec::new();
        for (i, (host, ip)) in pins.into_iter().enumerate() {
            match pin_host(host.as_ref()) {
                Ok(k) => extra.entry(k).or_default().push(ip),
                Err(m) => problems.push(
                    Problem::new(format!("--resolve[{i}]"), host.as_ref(), m)
                        .hint("write a plain host name"),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }
        self.pins.extend(extra);
        Ok(self)
    }

    /// The handler binding a [`VerdictAction::Handler`] names.
    ///
    /// # Panics
    /// If `id` came from another policy and is out of range.
    pub fn binding(&self, id: BindingId) -> &Binding {
        &self.bindings[id.index()]
    }

    /// All bindings (e.g. to precompile their modules before swapping the policy in).
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Non-fatal problems found while compiling.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The generation number, logged with every decision.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The static configuration this was compiled from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The runtime layer this was compiled from.
    pub fn runtime(&self) -> &RuntimeLayer {
        &self.runtime
    }

    /// Whether TLS to allowed hosts is terminated.
    pub fn intercept_https(&self) -> bool {
        self.config.intercept_https
    }

    /// Seed values for the handlers' key-value store.
    pub fn kv_seed(&self) -> &BTreeMap<String, String> {
        &self.config.kv
    }

    /// Where each secret's value comes from.
    pub fn secrets(&self) -> &BTreeMap<String, SecretSource> {
        &self.config.secrets
    }
}

#[cfg(test)]
mod tests;

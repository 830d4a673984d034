//! The compiled policy and the evaluation order every connection and request goes through.
//!
//! Compiling and validating a (file, runtime layer) pair is in [`compile`] (with
//! [`validate`] for the handler tables, [`pins`] for `[resolve]` / `--resolve` and [`rules`]
//! for the routes). Everything that can be computed at load time is (pattern indexes,
//! serialized params, rule labels), so per-request evaluation is lookups and `Arc` clones only.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::address::{special_range, SpecialRange};
use crate::config::{self, PolicyConfig, ResponseMode, RuntimeLayer, SecretSource};
use crate::error::Problem;
use crate::matcher::HostSet;
use crate::pattern::{canonical_ip, normalize_host, Destination};

mod compile;
mod pins;
mod rules;
mod validate;

pub use pins::parse_pin_arg;
pub use rules::{RequestAction, RulesId};
use rules::{RouteTable, RuleGroup};

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

impl CompiledPolicy {
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

//! Compiling a (policy file, runtime layer) pair into a [`CompiledPolicy`]: host lists,
//! routes ([`super::rules`]), handler bindings, pins ([`super::pins`]), upstream networks,
//! all problems collected at once ([`super::validate`] checks the handler tables).

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{self, BindingConfig, PolicyConfig, ResponseMode, RuntimeLayer};
use crate::error::{PolicyError, Problem};
use crate::matcher::HostSet;
use crate::pattern::{Pattern, PatternKind};

use super::pins::parse_ip;
use super::rules::RouteTable;
use super::{Binding, BindingId, CompiledPolicy, FetchGrant, VerdictAction};

/// Collects problems and warnings while compiling.
pub(super) struct Compiler<'a> {
    pub(super) cfg: &'a PolicyConfig,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
    pub(super) bindings: Vec<Binding>,
}

impl Compiler<'_> {
    /// Compiles a host list; invalid entries become problems and are left out.
    pub(super) fn patterns(&mut self, path: &str, sources: &[String]) -> Vec<(usize, Pattern)> {
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

    /// Resolves a binding to a handler; a missing handler is a problem (and `None`).
    pub(super) fn bind(&mut self, path: &str, b: &BindingConfig) -> Option<BindingId> {
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

    /// Routes naming a host of `passthrough_hosts`: request rules there are a problem (they
    /// could never apply to spliced TLS), a handler a warning.
    fn check_passthrough(
        &mut self,
        passthrough: &[(usize, Pattern)],
        tables: [(&RouteTable, &str); 2],
    ) {
        for (i, p) in passthrough {
            for (table, prefix) in tables {
                for (k, q) in table.set.patterns().iter().enumerate() {
                    if !q.same_as(p) {
                        continue;
                    }
                    if let VerdictAction::Rules(_) = table.targets[k].0 {
                        self.problems.push(
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
                        let handler = &self.bindings[id.index()].handler;
                        self.warnings.push(
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

        c.check_passthrough(
            &passthrough_pats,
            [
                (&runtime_routes, "runtime.routes"),
                (&static_routes, "routes"),
            ],
        );

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
}

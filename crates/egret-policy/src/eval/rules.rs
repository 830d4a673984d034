//! Routes compiled per host pattern: the routes naming the same pattern form a group, tried in
//! file order against a request's method and path.

use std::sync::Arc;

use crate::config::{RouteAction, RouteConfig, DEFAULT_DENY_STATUS};
use crate::error::Problem;
use crate::matcher::HostSet;
use crate::pattern::{Destination, Pattern};
use crate::request::{PathGlob, RequestMatch};

use super::compile::Compiler;
use super::{BindingId, VerdictAction};

/// Index of a [`RuleGroup`] in a [`super::CompiledPolicy`]; valid only for the policy that
/// issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RulesId(pub(super) u32);

/// What a matching route does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAction {
    /// Forward it unchanged.
    Allow,
    /// Refuse it.
    Deny {
        /// The status the client gets.
        status: u16,
        /// The route's `message`, if it has one.
        message: Option<Arc<str>>,
    },
    /// Hand it to this handler binding.
    Handler(BindingId),
}

/// One route of a group.
#[derive(Debug, Clone)]
pub(super) struct RequestRule {
    pub(super) when: RequestMatch,
    pub(super) then: RequestAction,
    pub(super) report_only: bool,
    pub(super) rule: Arc<str>,
}

/// The routes of one host pattern, in file order.
#[derive(Debug, Clone)]
pub(super) struct RuleGroup {
    pub(super) rules: Vec<RequestRule>,
    /// Every route of the group is `report_only`: a request none matches is reported, not
    /// refused.
    pub(super) report_only: bool,
    /// The rule of a request no route matches, naming the group's routes.
    pub(super) no_match: Arc<str>,
}

/// Route patterns of one layer and, per pattern, what it selects: a handler or an allow for
/// every request (decided per connection), or a group of request rules.
#[derive(Debug, Clone, Default)]
pub(super) struct RouteTable {
    pub(super) set: HostSet,
    pub(super) targets: Vec<(VerdictAction, Arc<str>)>,
}

impl RouteTable {
    pub(super) fn find(&self, dest: &Destination<'_>) -> Option<&(VerdictAction, Arc<str>)> {
        self.set.find(dest).map(|m| &self.targets[m.index])
    }
}

/// A route being compiled: its request condition, action and label.
struct Compiled {
    path: String,
    when: RequestMatch,
    then: RequestAction,
    report_only: bool,
    label: String,
}

impl Compiler<'_> {
    /// Compiles the routes of one layer (`prefix` is `routes` or `runtime.routes`) into
    /// groups appended to `groups`.
    pub(super) fn routes(
        &mut self,
        prefix: &str,
        routes: &[RouteConfig],
        groups: &mut Vec<RuleGroup>,
    ) -> RouteTable {
        // Unique patterns in first-seen order, each with its routes.
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut members: Vec<Vec<(usize, String)>> = Vec::new();
        let mut compiled: Vec<Option<Compiled>> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let path = format!("{prefix}[{i}]");
            if r.hosts.is_empty() {
                self.problems.push(
                    Problem::new(
                        format!("{path}.hosts"),
                        "[]",
                        "a route needs at least one host",
                    )
                    .hint("list host patterns, or `*` for everything"),
                );
            }
            let pats = self.patterns(&format!("{path}.hosts"), &r.hosts);
            compiled.push(self.route(&path, r));
            for (j, p) in pats {
                let here = format!("{path}.hosts[{j}]");
                match patterns.iter().position(|q| q.same_as(&p)) {
                    Some(k) => members[k].push((i, here)),
                    None => {
                        patterns.push(p);
                        members.push(vec![(i, here)]);
                    }
                }
            }
        }
        let targets = patterns
            .iter()
            .zip(&members)
            .map(|(p, member)| {
                let (rules, names) = self.group_rules(p, member, &compiled);
                target(p, rules, &names, groups)
            })
            .collect();
        RouteTable {
            set: HostSet::new(patterns),
            targets,
        }
    }

    /// The rules of pattern `p` from its routes (`member`: index into `compiled`, path of
    /// the host entry), in file order, and their paths; routes after one that takes every
    /// request are unreachable (a warning) and left out.
    fn group_rules<'c>(
        &mut self,
        p: &Pattern,
        member: &[(usize, String)],
        compiled: &'c [Option<Compiled>],
    ) -> (Vec<RequestRule>, Vec<&'c str>) {
        let mut rules: Vec<RequestRule> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        // The route before which every later one is unreachable, if any.
        let mut catch_all: Option<&str> = None;
        for (i, here) in member {
            let Some(c) = &compiled[*i] else { continue };
            if let Some(first) = catch_all {
                self.warnings.push(
                    Problem::new(
                        here,
                        p.as_str(),
                        format!("{first} matches every request to this host and comes first"),
                    )
                    .hint("remove one of them, or narrow the first with methods or paths; this one never matches"),
                );
                continue;
            }
            if c.when.is_everything() && !c.report_only {
                catch_all = Some(here);
            }
            names.push(&c.path);
            rules.push(RequestRule {
                when: c.when.clone(),
                then: c.then.clone(),
                report_only: c.report_only,
                rule: Arc::from(format!("{} {:?}{}", c.path, p.as_str(), c.label)),
            });
        }
        (rules, names)
    }
}

/// What pattern `p` selects, given its rules (and their routes' `names`): a handler or an
/// allow decided per connection when the first rule takes every request, else a new group
/// of request rules appended to `groups`.
fn target(
    p: &Pattern,
    rules: Vec<RequestRule>,
    names: &[&str],
    groups: &mut Vec<RuleGroup>,
) -> (VerdictAction, Arc<str>) {
    let Some(first) = rules.first() else {
        // Every route of the pattern was invalid (already reported).
        return (VerdictAction::Deny, Arc::from("-"));
    };
    // A first route that takes every request is decided per connection, as a plain
    // handler route always was: tunnels and pass-through keep working for it.
    let whole = first.when.is_everything() && !first.report_only;
    match (&first.then, whole) {
        (RequestAction::Handler(id), true) => {
            return (VerdictAction::Handler(*id), first.rule.clone());
        }
        (RequestAction::Allow, true) => return (VerdictAction::Allow, first.rule.clone()),
        _ => {}
    }
    let id = RulesId(u32::try_from(groups.len()).expect("too many route groups"));
    let report_only = rules.iter().all(|r| r.report_only);
    groups.push(RuleGroup {
        report_only,
        no_match: Arc::from(format!(
            "no route for {:?} matches the request ({})",
            p.as_str(),
            names.join(", ")
        )),
        rules,
    });
    (
        VerdictAction::Rules(id),
        Arc::from(format!(
            "routes for {:?} ({})",
            p.as_str(),
            names.join(", ")
        )),
    )
}

impl Compiler<'_> {
    /// One route's request condition and action; `None` (with problems) when it is invalid.
    fn route(&mut self, path: &str, r: &RouteConfig) -> Option<Compiled> {
        let mut globs = Vec::with_capacity(r.paths.len());
        let mut ok = true;
        for (k, g) in r.paths.iter().enumerate() {
            match PathGlob::parse(g) {
                Ok(g) => globs.push(g),
                Err(e) => {
                    // The parser refuses these in files; routes built in code land here.
                    self.problems.push(
                        Problem::new(format!("{path}.paths[{k}]"), g.as_str(), e.to_string())
                            .hint(e.hint()),
                    );
                    ok = false;
                }
            }
        }
        for (k, m) in r.methods.iter().enumerate() {
            if !crate::request::is_method_token(m) {
                self.problems.push(
                    Problem::new(
                        format!("{path}.methods[{k}]"),
                        m.as_str(),
                        "not an HTTP method",
                    )
                    .hint("write one method per string, e.g. \"GET\""),
                );
                ok = false;
            }
        }
        if let Some(s) = r.status.filter(|s| !(400..=599).contains(s)) {
            self.problems.push(
                Problem::new(
                    format!("{path}.status"),
                    s.to_string(),
                    "not an error status",
                )
                .hint("use 400..=599 (default 403)"),
            );
            ok = false;
        }
        let then = match (&r.handler, r.action) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    Problem::new(
                        format!("{path}.action"),
                        "",
                        "a route takes `handler` or `action`, not both",
                    )
                    .hint("remove one of them"),
                );
                return None;
            }
            (Some(_), None) => {
                let b = r.binding().expect("has a handler");
                RequestAction::Handler(self.bind(&format!("{path}.handler"), &b)?)
            }
            (None, Some(RouteAction::Deny)) => RequestAction::Deny {
                status: r.status.unwrap_or(DEFAULT_DENY_STATUS),
                message: r.message.as_deref().map(Arc::from),
            },
            (None, _) => RequestAction::Allow,
        };
        if !ok {
            return None;
        }
        let when = RequestMatch::new(
            r.methods.iter().map(|m| Box::from(m.as_str())).collect(),
            globs,
            r.query,
        );
        let then_label = match &then {
            RequestAction::Allow => "allow".to_owned(),
            RequestAction::Deny { .. } => "deny".to_owned(),
            RequestAction::Handler(_) => r.handler.clone().unwrap_or_default(),
        };
        Some(Compiled {
            path: path.to_owned(),
            label: format!("{when} -> {then_label}"),
            when,
            then,
            report_only: r.report_only,
        })
    }
}

//! `egret policy suggest`: a least-privilege policy from audit events — the hosts (and ports
//! other than 80/443) the sandbox reached, and with `paths` the methods and path prefixes per
//! host — written as TOML commented with request counts and the first and last time seen.
//! Deterministic: the same events give the same text, whatever their order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::config::{PolicyConfig, RouteConfig};
use crate::error::PolicyError;
use crate::eval::CompiledPolicy;
use crate::pattern::Destination;

/// The fields of an audit event the suggestion reads (the rest are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 time.
    pub ts: String,
    /// The name the request or connection was for.
    #[serde(default)]
    pub host: Option<String>,
    /// The address the sandbox dialled (its port is the destination port).
    #[serde(default)]
    pub dst: Option<SocketAddr>,
    /// `http/1.1`, `h2`, `tcp`, `tls`, `tls-passthrough`, ...
    pub proto: String,
    /// HTTP method (requests only).
    #[serde(default)]
    pub method: Option<String>,
    /// Path (query masked; requests only).
    #[serde(default)]
    pub path: Option<String>,
    /// `forward`, `respond`, `deny`, `error`, `revoked`, `would_deny`.
    pub decision: String,
}

impl AuditEvent {
    /// Parses one JSON line.
    pub fn from_line(line: &str) -> Result<AuditEvent, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    /// Whether the sandbox got through (or would have, had the policy enforced nothing):
    /// what a policy must allow for the session to work.
    fn carried(&self) -> bool {
        matches!(self.decision.as_str(), "forward" | "respond" | "would_deny")
    }
}

/// What to suggest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SuggestOptions {
    /// Per host, routes with the methods and path prefixes seen.
    pub paths: bool,
    /// Collapse two or more subdomains of one domain into `*.domain`.
    pub wildcards: bool,
}

/// Counts and times of one thing seen.
#[derive(Debug, Clone, Default)]
struct Seen {
    count: u64,
    first: String,
    last: String,
}

impl Seen {
    fn add(&mut self, ts: &str) {
        self.count += 1;
        if self.first.is_empty() || ts < self.first.as_str() {
            self.first = ts.to_owned();
        }
        if ts > self.last.as_str() {
            self.last = ts.to_owned();
        }
    }

    fn merge(&mut self, o: &Seen) {
        self.count += o.count;
        if self.first.is_empty() || o.first < self.first {
            self.first.clone_from(&o.first);
        }
        if o.last > self.last {
            self.last.clone_from(&o.last);
        }
    }

    fn comment(&self, what: &str) -> String {
        let s = if self.count == 1 { "" } else { "s" };
        format!(
            "{} {what}{s}, first {}, last {}",
            self.count, self.first, self.last
        )
    }
}

/// `/first-segment/**`, or `/` for the root: the prefix a path is allowed by.
pub(crate) fn path_prefix(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let canon = crate::request::canonical_path(path);
    match canon.trim_start_matches('/').split('/').next() {
        Some("") | None => "/".to_owned(),
        Some(seg) if seg.contains('*') => "/**".to_owned(),
        Some(seg) => format!("/{seg}/**"),
    }
}

/// The pattern of a host and port: ports 80 and 443 are left out.
fn host_pattern(host: &str, port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        80 | 443 => {
            if host.contains(':') {
                host.to_owned()
            } else {
                h
            }
        }
        p => format!("{h}:{p}"),
    }
}

/// Writes the suggested policy. With `base`, its settings, handlers and rules are kept and
/// only what it does not already allow is added; the result always enforces.
pub fn suggest(
    events: &[AuditEvent],
    sources: &[String],
    base: Option<&PolicyConfig>,
    opts: SuggestOptions,
) -> Result<String, PolicyError> {
    let mut base_cfg = base.cloned().unwrap_or_default();
    base_cfg.enforce = true;
    let base_policy = match base {
        Some(_) => Some(CompiledPolicy::compile(
            &base_cfg,
            &crate::RuntimeLayer::default(),
            1,
        )?),
        None => None,
    };
    let traffic = Traffic::tally(events, base_policy.as_ref());
    let collapsed = if opts.wildcards {
        wildcards(traffic.hosts.keys())
    } else {
        BTreeMap::new()
    };
    let pattern = |h: &String, port: u16| {
        collapsed
            .get(&(h.clone(), port))
            .cloned()
            .unwrap_or_else(|| host_pattern(h, port))
    };
    // allowed_hosts entries: pattern -> seen.
    let mut allowed: BTreeMap<String, Seen> = BTreeMap::new();
    for ((h, port), seen) in &traffic.hosts {
        allowed.entry(pattern(h, *port)).or_default().merge(seen);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `egret policy suggest` from {} of {} audit events in {}.",
        traffic.used,
        events.len(),
        if sources.is_empty() {
            "-".to_owned()
        } else {
            sources.join(", ")
        }
    );
    if traffic.used > 0 {
        let _ = writeln!(
            out,
            "# Traffic from {} to {}.",
            traffic.span.first, traffic.span.last
        );
    }
    out.push_str("# Review it before use: it allows what was seen, nothing else.\n");
    let base_allowed = std::mem::take(&mut base_cfg.allowed_hosts);
    let base_routes = std::mem::take(&mut base_cfg.routes);
    write_allowed_hosts(&mut out, &base_allowed, &allowed);
    let rest = base_cfg.to_toml_string()?;
    if !rest.trim().is_empty() {
        out.push_str(&rest);
        if !rest.ends_with('\n') {
            out.push('\n');
        }
    }
    for r in &base_routes {
        out.push_str("\n[[routes]]  # from the base policy\n");
        out.push_str(&route_body(r)?);
    }
    if opts.paths {
        for ((h, port), prefixes) in &traffic.http {
            write_routes(&mut out, &pattern(h, *port), prefixes);
        }
    }
    Ok(out)
}

/// What the events show the sandbox used, beyond what the base policy allows.
#[derive(Default)]
struct Traffic {
    /// (host, port) -> seen.
    hosts: BTreeMap<(String, u16), Seen>,
    /// (host, port) -> path prefix -> method -> seen.
    http: BTreeMap<(String, u16), BTreeMap<String, BTreeMap<String, Seen>>>,
    /// Events counted.
    used: u64,
    /// When they were.
    span: Seen,
}

impl Traffic {
    /// The events that got through, less those `base` already allows.
    fn tally(events: &[AuditEvent], base: Option<&CompiledPolicy>) -> Traffic {
        let mut t = Traffic::default();
        for e in events.iter().filter(|e| e.carried()) {
            let Some(port) = e.dst.map(|d| d.port()) else {
                continue;
            };
            let host = match (&e.host, e.dst) {
                (Some(h), _) => h.trim_end_matches('.').to_ascii_lowercase(),
                (None, Some(d)) => d.ip().to_string(),
                (None, None) => continue,
            };
            // `https-h1`, `https-h2`, `tls`, `tls-passthrough`: the connection was TLS.
            let tls = e.proto.starts_with("https") || e.proto.starts_with("tls");
            let method = e.method.as_deref();
            if base.is_some_and(|p| allows(p, &host, port, tls, method, e.path.as_deref())) {
                continue;
            }
            t.used += 1;
            t.span.add(&e.ts);
            t.hosts.entry((host.clone(), port)).or_default().add(&e.ts);
            if let (Some(m), Some(p)) = (&e.method, &e.path) {
                t.http
                    .entry((host, port))
                    .or_default()
                    .entry(path_prefix(p))
                    .or_default()
                    .entry(m.to_ascii_uppercase())
                    .or_default()
                    .add(&e.ts);
            }
        }
        t
    }
}

/// Whether policy `p` lets the request (`method` given) or connection through.
fn allows(
    p: &CompiledPolicy,
    host: &str,
    port: u16,
    tls: bool,
    method: Option<&str>,
    path: Option<&str>,
) -> bool {
    let url = crate::dry_run::UrlParts {
        tls,
        host: host.to_owned(),
        port,
        path: path
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap_or("/")
            .to_owned(),
        query: None,
    };
    match method {
        Some(m) => p.dry_run(&url, m).decision != crate::DryDecision::Deny,
        None => p.evaluate(&Destination::named(host, port)).action == crate::VerdictAction::Allow,
    }
}

/// `*.parent` for every host name (with its port) that shares its parent domain (itself
/// more than one label) with another host seen on that port.
fn wildcards<'a>(
    hosts: impl Iterator<Item = &'a (String, u16)>,
) -> BTreeMap<(String, u16), String> {
    let mut by_parent: BTreeMap<(String, u16), Vec<String>> = BTreeMap::new();
    for (h, port) in hosts {
        if h.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        if let Some((_, parent)) = h.split_once('.') {
            if parent.contains('.') {
                by_parent
                    .entry((parent.to_owned(), *port))
                    .or_default()
                    .push(h.clone());
            }
        }
    }
    let mut collapsed = BTreeMap::new();
    for ((parent, port), members) in by_parent {
        if members.len() >= 2 {
            for m in members {
                collapsed.insert((m, port), host_pattern(&format!("*.{parent}"), port));
            }
        }
    }
    collapsed
}

/// The `allowed_hosts` list: the base policy's entries, then what was seen.
fn write_allowed_hosts(out: &mut String, base: &[String], seen: &BTreeMap<String, Seen>) {
    // Without a base the hosts are only reachable through allowed_hosts (or the routes).
    if seen.is_empty() && base.is_empty() {
        return;
    }
    out.push_str("allowed_hosts = [\n");
    for h in base {
        let _ = writeln!(out, "    {},  # from the base policy", toml_str(h));
    }
    for (pat, seen) in seen {
        if base.contains(pat) {
            continue;
        }
        let _ = writeln!(out, "    {},  # {}", toml_str(pat), seen.comment("event"));
    }
    out.push_str("]\n");
}

/// One `[[routes]]` table per path prefix seen on `host`, with the methods seen there.
fn write_routes(out: &mut String, host: &str, prefixes: &BTreeMap<String, BTreeMap<String, Seen>>) {
    for (prefix, methods) in prefixes {
        let mut seen = Seen::default();
        for s in methods.values() {
            seen.merge(s);
        }
        let _ = writeln!(out, "\n[[routes]]  # {}", seen.comment("request"));
        let _ = writeln!(out, "host = {}", toml_str(host));
        let list: BTreeSet<&str> = methods.keys().map(String::as_str).collect();
        let list: Vec<String> = list.iter().map(|m| toml_str(m)).collect();
        let _ = writeln!(out, "methods = [{}]", list.join(", "));
        let _ = writeln!(out, "paths = [{}]", toml_str(prefix));
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The keys of one `[[routes]]` table.
fn route_body(r: &RouteConfig) -> Result<String, PolicyError> {
    toml::to_string(r).map_err(|e| PolicyError::Serialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dry_run::parse_url;
    use crate::{DryDecision, RuntimeLayer};

    fn ev(
        ts: &str,
        host: &str,
        port: u16,
        proto: &str,
        mp: Option<(&str, &str)>,
        d: &str,
    ) -> AuditEvent {
        AuditEvent {
            ts: ts.into(),
            host: Some(host.into()),
            dst: Some(SocketAddr::from(([198, 18, 0, 1], port))),
            proto: proto.into(),
            method: mp.map(|m| m.0.into()),
            path: mp.map(|m| m.1.into()),
            decision: d.into(),
        }
    }

    fn session() -> Vec<AuditEvent> {
        vec![
            ev(
                "2026-01-01T00:00:02Z",
                "git.test",
                443,
                "https-h1",
                Some(("GET", "/r.git/info/refs?[masked]")),
                "forward",
            ),
            ev(
                "2026-01-01T00:00:01Z",
                "git.test",
                443,
                "https-h1",
                Some(("POST", "/r.git/git-upload-pack")),
                "would_deny",
            ),
            ev(
                "2026-01-01T00:00:03Z",
                "a.cdn.test",
                443,
                "https-h2",
                Some(("GET", "/x/y")),
                "forward",
            ),
            ev(
                "2026-01-01T00:00:04Z",
                "b.cdn.test",
                443,
                "https-h2",
                Some(("GET", "/")),
                "respond",
            ),
            ev(
                "2026-01-01T00:00:05Z",
                "db.test",
                5432,
                "tcp",
                None,
                "forward",
            ),
            ev(
                "2026-01-01T00:00:06Z",
                "evil.test",
                443,
                "tls",
                None,
                "deny",
            ),
        ]
    }

    fn compile_text(text: &str) -> CompiledPolicy {
        let cfg = PolicyConfig::from_toml(text, "suggested.toml")
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1)
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
    }

    fn replay(p: &CompiledPolicy, events: &[AuditEvent]) {
        for e in events.iter().filter(|e| e.carried()) {
            let port = e.dst.unwrap().port();
            let host = e.host.as_deref().unwrap();
            match (&e.method, &e.path) {
                (Some(m), Some(path)) => {
                    let url = parse_url(&format!("https://{host}:{port}{path}")).unwrap();
                    let d = p.dry_run(&url, m);
                    assert_eq!(d.decision, DryDecision::Allow, "{m} {host}{path}: {d:?}");
                }
                _ => {
                    let v = p.evaluate(&Destination::host(host, port));
                    assert_eq!(v.action, crate::VerdictAction::Allow, "{host}:{port}");
                }
            }
        }
    }

    #[test]
    fn hosts_only_replays_and_refuses_the_rest() {
        let events = session();
        let text = suggest(
            &events,
            &["a.jsonl".into()],
            None,
            SuggestOptions::default(),
        )
        .unwrap();
        assert!(
            text.contains(
                "\"git.test\",  # 2 events, first 2026-01-01T00:00:01Z, last 2026-01-01T00:00:02Z"
            ),
            "{text}"
        );
        assert!(text.contains("\"db.test:5432\""), "{text}");
        assert!(
            !text.contains("evil.test"),
            "denied traffic is not learnt: {text}"
        );
        assert!(!text.contains("*.cdn.test"), "{text}");
        let p = compile_text(&text);
        replay(&p, &events);
        assert!(p.evaluate(&Destination::host("new.test", 443)).is_deny());
        assert!(p.evaluate(&Destination::host("db.test", 5433)).is_deny());
        // Deterministic, whatever the order of the events.
        let mut rev = events.clone();
        rev.reverse();
        assert_eq!(
            suggest(&rev, &["a.jsonl".into()], None, SuggestOptions::default()).unwrap(),
            text
        );
    }

    #[test]
    fn paths_and_wildcards() {
        let events = session();
        let opts = SuggestOptions {
            paths: true,
            wildcards: true,
        };
        let text = suggest(&events, &[], None, opts).unwrap();
        assert!(text.contains("\"*.cdn.test\",  # 2 events"), "{text}");
        assert!(
            text.contains(
                "host = \"git.test\"\nmethods = [\"GET\", \"POST\"]\npaths = [\"/r.git/**\"]"
            ),
            "{text}"
        );
        let p = compile_text(&text);
        replay(&p, &events);
        let other = p.dry_run(&parse_url("https://git.test/other/x").unwrap(), "GET");
        assert_eq!(other.decision, DryDecision::Deny);
        let put = p.dry_run(&parse_url("https://git.test/r.git/x").unwrap(), "PUT");
        assert_eq!(put.decision, DryDecision::Deny);
    }

    #[test]
    fn a_base_keeps_its_rules_and_only_gains_what_it_lacks() {
        let base = PolicyConfig::from_toml(
            "enforce = false\nallowed_hosts = [\"git.test\"]\n[handlers.h]\nmodule = \"h.wasm\"\n\
             [[routes]]\nhost = \"git.test\"\nhandler = \"h\"\n",
            "base.toml",
        )
        .unwrap();
        let text = suggest(&session(), &[], Some(&base), SuggestOptions::default()).unwrap();
        assert!(
            text.contains("\"git.test\",  # from the base policy"),
            "{text}"
        );
        assert!(!text.contains("\"git.test\",  # 2"), "{text}");
        assert!(text.contains("\"a.cdn.test\""), "{text}");
        let p = compile_text(&text);
        assert!(p.enforces());
        assert_eq!(p.bindings().len(), 1);
        replay(&p, &session());
    }

    #[test]
    fn prefixes_and_patterns() {
        assert_eq!(path_prefix("/"), "/");
        assert_eq!(path_prefix("/a/b?x"), "/a/**");
        assert_eq!(path_prefix("//a/./b"), "/a/**");
        assert_eq!(host_pattern("fd00::1", 8080), "[fd00::1]:8080");
        assert_eq!(host_pattern("fd00::1", 443), "fd00::1");
        assert_eq!(host_pattern("a.test", 80), "a.test");
    }

    #[test]
    fn audit_lines_parse() {
        let e = AuditEvent::from_line(r#"{"ts":"t","sandbox":"s","host":"a.test","dst":"198.18.0.1:443","proto":"h2","method":"GET","path":"/","decision":"forward","extra":1}"#).unwrap();
        assert_eq!(e.dst.unwrap().port(), 443);
        assert!(AuditEvent::from_line("{").is_err());
    }
}

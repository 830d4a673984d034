//! What egret would do with one URL (`egret policy test`): the same decisions, in the same
//! order, as the proxy makes for a connection and its request — the TLS decision for `https`,
//! then the request's.

use std::sync::Arc;

use crate::eval::{CompiledPolicy, RequestAction, RequestVerdict, TlsDecision};
use crate::pattern::Destination;

/// A URL split into what the policy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// `https`.
    pub tls: bool,
    /// Host name (lower-case) or IP literal (without brackets).
    pub host: String,
    /// Port, explicit or the scheme's.
    pub port: u16,
    /// Path (`/` when empty).
    pub path: String,
    /// Query, without `?`.
    pub query: Option<String>,
}

/// Splits `http[s]://host[:port][/path][?query]` (a fragment is dropped).
pub fn parse_url(url: &str) -> Result<UrlParts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL; write e.g. https://example.com/path"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        other => return Err(format!("{url:?}: scheme {other:?} is not http or https")),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, pq) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed `[` in the host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?}: port {p:?} is not a number 0-65535"))?,
        None if tls => 443,
        None => 80,
    };
    let (path, query) = match pq.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (pq, None),
    };
    Ok(UrlParts {
        tls,
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
        path: if path.is_empty() { "/" } else { path }.to_owned(),
        query,
    })
}

/// How a request would be carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DryDecision {
    /// Forwarded (by egret, or through the handler).
    Allow,
    /// Refused (TLS refused, or the request denied with a status).
    Deny,
    /// Forwarded, but the policy reports it would deny it.
    WouldDeny,
    /// TLS spliced untouched: no request rule or handler sees it.
    Passthrough,
}

impl DryDecision {
    /// `allow`, `deny`, `would_deny` or `passthrough`.
    pub fn as_str(self) -> &'static str {
        match self {
            DryDecision::Allow => "allow",
            DryDecision::Deny => "deny",
            DryDecision::WouldDeny => "would_deny",
            DryDecision::Passthrough => "passthrough",
        }
    }
}

/// The outcome of [`CompiledPolicy::dry_run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// The decision.
    pub decision: DryDecision,
    /// The rule that decided (for `would_deny`, the rule that would have denied).
    pub rule: Arc<str>,
    /// The handler the request would go to.
    pub handler: Option<Arc<str>>,
    /// The status a denied request gets (`None` when TLS is refused: there is no request).
    pub status: Option<u16>,
}

impl CompiledPolicy {
    /// What egret would do with a `method` request to `url`.
    pub fn dry_run(&self, url: &UrlParts, method: &str) -> DryRun {
        let dest = Destination::named(&url.host, url.port);
        self.decide(&dest, url.tls, method, &url.path, url.query.as_deref())
    }

    /// What egret would do with a `method` request for `path` (and `query`) to `dest`, over
    /// TLS when `tls`: the TLS decision first, then the request's. The proxy asks this of a
    /// shadow candidate for every request it carries.
    pub fn decide(
        &self,
        dest: &Destination<'_>,
        tls: bool,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> DryRun {
        if tls {
            match self.tls_decision(dest) {
                TlsDecision::Refuse(v) => {
                    return DryRun {
                        decision: DryDecision::Deny,
                        rule: v.rule,
                        handler: None,
                        status: None,
                    }
                }
                TlsDecision::Passthrough(v) => {
                    let (decision, rule) = match v.would_deny {
                        Some(r) => (DryDecision::WouldDeny, r),
                        None => (DryDecision::Passthrough, Arc::from("passthrough_hosts")),
                    };
                    return DryRun {
                        decision,
                        rule,
                        handler: None,
                        status: None,
                    };
                }
                TlsDecision::Intercept(_) => {}
            }
        }
        self.describe(self.evaluate_request(dest, method, path, query))
    }

    /// A request verdict of this policy as a [`DryRun`]: the decision as audited (`deny`,
    /// `would_deny` naming the rule that would have denied, else `allow`) and the handler.
    pub fn describe(&self, v: RequestVerdict) -> DryRun {
        let handler = match v.action {
            RequestAction::Handler(id) => Some(self.binding(id).handler.clone()),
            _ => None,
        };
        match (v.action, v.would_deny) {
            (RequestAction::Deny { status, .. }, _) => DryRun {
                decision: DryDecision::Deny,
                rule: v.rule,
                handler,
                status: Some(status),
            },
            (_, Some(would)) => DryRun {
                decision: DryDecision::WouldDeny,
                rule: would,
                handler,
                status: None,
            },
            _ => DryRun {
                decision: DryDecision::Allow,
                rule: v.rule,
                handler,
                status: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PolicyConfig, RuntimeLayer};

    #[test]
    fn urls_split() {
        let u = parse_url("https://Git.Test/r.git/info/refs?service=x#frag").unwrap();
        assert_eq!(
            u,
            UrlParts {
                tls: true,
                host: "git.test".into(),
                port: 443,
                path: "/r.git/info/refs".into(),
                query: Some("service=x".into()),
            }
        );
        let u = parse_url("http://[fd00::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("fd00::1", 8080, "/")
        );
        let u = parse_url("http://user@h.test:81?x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.query.as_deref()),
            ("h.test", 81, Some("x"))
        );
        assert!(parse_url("git.test/x").unwrap_err().contains("not a URL"));
        assert!(parse_url("ftp://x")
            .unwrap_err()
            .contains("not http or https"));
        assert!(parse_url("http://x:99999").unwrap_err().contains("port"));
        assert!(parse_url("http:///x").unwrap_err().contains("no host"));
    }

    #[test]
    fn dry_runs_follow_tls_then_request() {
        let cfg = PolicyConfig::from_toml(
            r#"
allowed_hosts = ["open.test", "git.test", "ro.test"]
passthrough_hosts = ["open.test"]
[[routes]]
host = "git.test"
paths = ["/**/info/refs", "/**/git-upload-pack"]
[[routes]]
host = "ro.test"
paths = ["/**"]
methods = ["POST"]
action = "deny"
status = 405
report_only = true
[[routes]]
host = "ro.test"
"#,
            "p",
        )
        .unwrap();
        let p = CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1).unwrap();
        let run = |url: &str, m: &str| p.dry_run(&parse_url(url).unwrap(), m);
        assert_eq!(
            run("https://git.test/r/info/refs", "GET").decision,
            DryDecision::Allow
        );
        let d = run("https://git.test/r/git-receive-pack", "POST");
        assert_eq!((d.decision, d.status), (DryDecision::Deny, Some(403)));
        let d = run("https://nope.test/", "GET");
        assert_eq!((d.decision, d.status), (DryDecision::Deny, None));
        assert_eq!(&*d.rule, "not in allowed_hosts");
        assert_eq!(
            run("https://open.test/", "GET").decision,
            DryDecision::Passthrough
        );
        assert_eq!(run("http://open.test/", "GET").decision, DryDecision::Allow);
        let d = run("https://ro.test/x", "POST");
        assert_eq!(d.decision, DryDecision::WouldDeny);
        assert!(d.rule.starts_with("routes[1]"), "{}", d.rule);
    }
}

//! A shadow candidate's differences from the live policy: what counts as a difference
//! ([`differs`]) and the bounded summary of them ([`ShadowReport`]) that `egret ctl policy
//! shadow report` shows.
//!
//! Both policies decide every request ([`crate::CompiledPolicy::decide`]); the live one is
//! carried out. They differ when a promoted candidate would treat the request otherwise: a
//! different decision (`allow`, `deny`, `would_deny`, `passthrough`), another handler, or
//! another status for a denial. The rule alone is no difference: two policies may allow the
//! same request by differently written rules.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dry_run::{DryDecision, DryRun};

/// Distinct rows a report keeps by default; further differences are only counted.
pub const DEFAULT_MAX_ROWS: usize = 1000;

/// Longest path glob a row keeps; a longer first segment is reported as `/**`.
const MAX_GLOB: usize = 128;

/// Longest method a row keeps; a longer (extension) method is reported as `(long method)`.
const MAX_METHOD: usize = 32;

/// Whether a candidate that decided `shadow` would treat the request otherwise than the live
/// policy that decided `live`.
pub fn differs(live: &DryRun, shadow: &DryRun) -> bool {
    live.decision != shadow.decision
        || live.handler != shadow.handler
        || (live.decision == DryDecision::Deny && live.status != shadow.status)
}

/// What identifies a row: where the request went and what each policy did with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RowKey {
    host: Box<str>,
    method: Box<str>,
    path: Box<str>,
    live: DryDecision,
    live_rule: Arc<str>,
    live_handler: Option<Arc<str>>,
    shadow: DryDecision,
    shadow_rule: Arc<str>,
    shadow_handler: Option<Arc<str>>,
    shadow_status: Option<u16>,
}

/// How often a row was seen, and when (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    count: u64,
    first: u64,
    last: u64,
}

/// The differences seen since a candidate was loaded, one row per host, method, path glob
/// and pair of decisions, at most `max_rows` rows: memory is bounded whatever the sandbox
/// sends, and differences past the cap are counted in [`ShadowSummary::overflow`].
#[derive(Debug, Clone)]
pub struct ShadowReport {
    rows: HashMap<RowKey, Seen>,
    max_rows: usize,
    differences: u64,
    overflow: u64,
}

impl Default for ShadowReport {
    fn default() -> Self {
        ShadowReport::new(DEFAULT_MAX_ROWS)
    }
}

impl ShadowReport {
    /// An empty report keeping at most `max_rows` rows.
    pub fn new(max_rows: usize) -> ShadowReport {
        ShadowReport {
            rows: HashMap::new(),
            max_rows,
            differences: 0,
            overflow: 0,
        }
    }

    /// Counts one difference: a `method` request for `path` to `host`, decided `live` by the
    /// live policy and `shadow` by the candidate, at `now` (seconds since the Unix epoch).
    /// The path is reported as the glob of its first segment (`/repo.git/**`).
    pub fn record(
        &mut self,
        host: &str,
        method: &str,
        path: &str,
        live: &DryRun,
        shadow: &DryRun,
        now: u64,
    ) {
        self.differences += 1;
        let mut glob = crate::suggest::path_prefix(path);
        if glob.len() > MAX_GLOB {
            glob = "/**".to_owned();
        }
        let method = if method.len() > MAX_METHOD {
            "(long method)"
        } else {
            method
        };
        let key = RowKey {
            host: host.to_ascii_lowercase().into(),
            method: method.into(),
            path: glob.into(),
            live: live.decision,
            live_rule: live.rule.clone(),
            live_handler: live.handler.clone(),
            shadow: shadow.decision,
            shadow_rule: shadow.rule.clone(),
            shadow_handler: shadow.handler.clone(),
            shadow_status: shadow.status,
        };
        let full = self.rows.len() >= self.max_rows;
        match self.rows.get_mut(&key) {
            Some(seen) => {
                seen.count += 1;
                seen.first = seen.first.min(now);
                seen.last = seen.last.max(now);
            }
            None if full => self.overflow += 1,
            None => {
                self.rows.insert(
                    key,
                    Seen {
                        count: 1,
                        first: now,
                        last: now,
                    },
                );
            }
        }
    }

    /// The rows, most frequent first (then by host, method and path), with the totals.
    pub fn summary(&self) -> ShadowSummary {
        let mut rows: Vec<ShadowRow> = self
            .rows
            .iter()
            .map(|(k, s)| ShadowRow {
                host: k.host.to_string(),
                method: k.method.to_string(),
                path: k.path.to_string(),
                live: k.live.as_str().to_owned(),
                live_rule: k.live_rule.to_string(),
                live_handler: k.live_handler.as_deref().map(str::to_owned),
                shadow: k.shadow.as_str().to_owned(),
                shadow_rule: k.shadow_rule.to_string(),
                shadow_handler: k.shadow_handler.as_deref().map(str::to_owned),
                shadow_status: k.shadow_status,
                count: s.count,
                first_seen: s.first,
                last_seen: s.last,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.host, &a.method, &a.path).cmp(&(&b.host, &b.method, &b.path)))
                .then_with(|| (&a.shadow, &a.shadow_rule).cmp(&(&b.shadow, &b.shadow_rule)))
                .then_with(|| (&a.live, &a.live_rule).cmp(&(&b.live, &b.live_rule)))
        });
        ShadowSummary {
            differences: self.differences,
            overflow: self.overflow,
            max_rows: self.max_rows as u64,
            rows,
        }
    }
}

/// The differences of a shadow candidate, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowSummary {
    /// Requests the two policies decided differently.
    pub differences: u64,
    /// Of those, the ones not in a row because the report already had `max_rows` rows.
    pub overflow: u64,
    /// The most rows the report keeps.
    pub max_rows: u64,
    /// One row per host, method, path glob and pair of decisions, most frequent first.
    pub rows: Vec<ShadowRow>,
}

/// One kind of difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRow {
    /// The request's host.
    pub host: String,
    /// Its method.
    pub method: String,
    /// Its path, as the glob of the first segment (`/repo.git/**`, `/` for the root).
    pub path: String,
    /// What the live policy did: `allow`, `deny`, `would_deny` or `passthrough`.
    pub live: String,
    /// The live policy's rule.
    pub live_rule: String,
    /// The live policy's handler, if the request went to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_handler: Option<String>,
    /// What the candidate would do.
    pub shadow: String,
    /// The candidate's rule.
    pub shadow_rule: String,
    /// The candidate's handler, if it would send the request to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_handler: Option<String>,
    /// The status the candidate would deny with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_status: Option<u16>,
    /// How many requests.
    pub count: u64,
    /// The first one, seconds since the Unix epoch.
    pub first_seen: u64,
    /// The last one, seconds since the Unix epoch.
    pub last_seen: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dry_run::parse_url;
    use crate::{CompiledPolicy, PolicyConfig, RuntimeLayer};

    fn compile(text: &str) -> CompiledPolicy {
        let cfg = PolicyConfig::from_toml(text, "p.toml").unwrap();
        CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1).unwrap()
    }

    const LIVE: &str = r#"
allowed_hosts = ["git.test", "api.test", "open.test"]
[handlers.inject]
module = "inject.wasm"
[[routes]]
host = "api.test"
handler = "inject"
"#;

    /// A candidate that refuses pushes, sends api.test to another handler, passes open.test
    /// through, and denies POSTs to open.test with 405 (the live policy allows them).
    const CANDIDATE: &str = r#"
allowed_hosts = ["git.test", "api.test", "open.test"]
passthrough_hosts = ["pass.test"]
[handlers.inject]
module = "inject.wasm"
[handlers.other]
module = "other.wasm"
[[routes]]
host = "git.test"
paths = ["/**/info/refs", "/**/git-upload-pack"]
[[routes]]
host = "api.test"
handler = "other"
[[routes]]
host = "open.test"
methods = ["POST"]
action = "deny"
status = 405
[[routes]]
host = "open.test"
"#;

    fn both(live: &CompiledPolicy, cand: &CompiledPolicy, url: &str, m: &str) -> (DryRun, DryRun) {
        let u = parse_url(url).unwrap();
        (live.dry_run(&u, m), cand.dry_run(&u, m))
    }

    #[test]
    fn differences_are_decisions_handlers_and_deny_statuses_not_rules() {
        let (live, cand) = (compile(LIVE), compile(CANDIDATE));
        let differ = |url, m| {
            let (l, s) = both(&live, &cand, url, m);
            differs(&l, &s)
        };
        // Allowed by both, by different rules: the same treatment.
        assert!(!differ("https://git.test/r.git/info/refs", "GET"));
        assert!(!differ("https://open.test/x", "GET"));
        // Refused by the candidate only.
        assert!(differ("https://git.test/r.git/git-receive-pack", "POST"));
        assert!(differ("https://open.test/x", "POST"));
        // Another handler.
        assert!(differ("https://api.test/", "GET"));
        // Denied by both with the same status: no difference.
        assert!(!differ("https://nope.test/", "GET"));

        // The same decision with another status is a difference.
        let deny = |status| DryRun {
            decision: DryDecision::Deny,
            rule: Arc::from("r"),
            handler: None,
            status: Some(status),
        };
        assert!(differs(&deny(403), &deny(405)));
        assert!(!differs(&deny(403), &deny(403)));
        // Report-only live vs an enforcing candidate.
        let would = DryRun {
            decision: DryDecision::WouldDeny,
            ..deny(403)
        };
        assert!(differs(&would, &deny(403)));
    }

    #[test]
    fn rows_group_by_host_method_glob_and_decisions() {
        let (live, cand) = (compile(LIVE), compile(CANDIDATE));
        let mut r = ShadowReport::default();
        let (l, s) = both(
            &live,
            &cand,
            "https://git.test/r.git/git-receive-pack",
            "POST",
        );
        r.record("git.test", "POST", "/r.git/git-receive-pack", &l, &s, 100);
        r.record("Git.Test", "POST", "/r.git/other?q=1", &l, &s, 90);
        r.record("git.test", "POST", "/r.git/x", &l, &s, 120);
        let (l2, s2) = both(&live, &cand, "https://api.test/v1", "GET");
        r.record("api.test", "GET", "/v1", &l2, &s2, 110);
        let sum = r.summary();
        assert_eq!((sum.differences, sum.overflow), (4, 0));
        assert_eq!(sum.rows.len(), 2);
        let push = &sum.rows[0];
        assert_eq!(
            (
                push.host.as_str(),
                push.method.as_str(),
                push.path.as_str(),
                push.count,
                push.first_seen,
                push.last_seen
            ),
            ("git.test", "POST", "/r.git/**", 3, 90, 120)
        );
        assert_eq!(
            (push.live.as_str(), push.shadow.as_str()),
            ("allow", "deny")
        );
        assert_eq!(push.shadow_status, Some(403));
        assert!(
            push.shadow_rule.contains("no route for \"git.test\""),
            "{push:?}"
        );
        let api = &sum.rows[1];
        assert_eq!(
            (api.live_handler.as_deref(), api.shadow_handler.as_deref()),
            (Some("inject"), Some("other"))
        );
        // JSON round trip: the admin API sends this as is.
        let json = serde_json::to_string(&sum).unwrap();
        assert_eq!(serde_json::from_str::<ShadowSummary>(&json).unwrap(), sum);
    }

    #[test]
    fn rows_are_capped_and_the_rest_counted() {
        let (live, cand) = (compile(LIVE), compile(CANDIDATE));
        let (l, s) = both(&live, &cand, "https://git.test/a/git-receive-pack", "POST");
        let mut r = ShadowReport::new(3);
        for i in 0..10 {
            r.record(&format!("h{i}.test"), "POST", "/a", &l, &s, i);
        }
        // A row already kept still counts once the cap is reached.
        r.record("h0.test", "POST", "/a/b", &l, &s, 50);
        let sum = r.summary();
        assert_eq!(sum.rows.len(), 3);
        assert_eq!((sum.differences, sum.overflow, sum.max_rows), (11, 7, 3));
        assert_eq!(sum.rows[0].host, "h0.test");
        assert_eq!((sum.rows[0].count, sum.rows[0].last_seen), (2, 50));
        // Long methods and first segments are cut to a bounded form.
        let mut r = ShadowReport::new(10);
        r.record(
            "h",
            &"X".repeat(100),
            &format!("/{}", "a".repeat(500)),
            &l,
            &s,
            1,
        );
        let row = &r.summary().rows[0];
        assert_eq!(
            (row.method.as_str(), row.path.as_str()),
            ("(long method)", "/**")
        );
    }
}

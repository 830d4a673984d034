//! A shadow candidate policy (`egret ctl policy shadow FILE`): compiled once when loaded, it
//! decides every HTTP request next to the live policy, which alone is carried out. A request
//! the two decide differently (see [`egret_policy::differs`]) is counted
//! (`egret_shadow_differences_total`), carries the candidate's decision in its audit event
//! (`"shadow"`), and is summarised in a bounded report.
//!
//! The control plane owns the slot ([`ShadowSlot`]); the data path only loads it, so a request
//! with no candidate loaded pays one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use egret_policy::{
    differs, CompiledPolicy, Destination, DryRun, RequestVerdict, ShadowReport, ShadowSummary,
};

/// Where the candidate lives: empty when none is loaded.
pub type ShadowSlot = Arc<ArcSwapOption<Shadow>>;

/// A loaded candidate and what it has seen.
#[derive(Debug)]
pub struct Shadow {
    policy: CompiledPolicy,
    /// Shared with the candidate recompiled after a live swap, so the report goes on.
    report: Arc<Mutex<ShadowReport>>,
    requests: Arc<AtomicU64>,
    loaded_at: u64,
}

/// One request, as the data path hands it to the candidate.
pub(crate) struct Seen<'a> {
    pub dest: &'a Destination<'a>,
    pub tls: bool,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Shadow {
    /// A candidate loaded at `loaded_at` (seconds since the Unix epoch), with an empty report
    /// of at most `max_rows` rows.
    pub fn new(policy: CompiledPolicy, loaded_at: u64, max_rows: usize) -> Shadow {
        Shadow {
            policy,
            report: Arc::new(Mutex::new(ShadowReport::new(max_rows))),
            requests: Arc::new(AtomicU64::new(0)),
            loaded_at,
        }
    }

    /// The same candidate compiled anew (after the live policy's runtime layer changed),
    /// keeping the report and counters.
    pub fn recompiled(&self, policy: CompiledPolicy) -> Shadow {
        Shadow {
            policy,
            report: self.report.clone(),
            requests: self.requests.clone(),
            loaded_at: self.loaded_at,
        }
    }

    /// The compiled candidate.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// When it was loaded, seconds since the Unix epoch.
    pub fn loaded_at(&self) -> u64 {
        self.loaded_at
    }

    /// Requests both policies decided since it was loaded.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The differences so far.
    pub fn summary(&self) -> ShadowSummary {
        match self.report.lock() {
            Ok(r) => r.summary(),
            Err(p) => p.into_inner().summary(),
        }
    }

    /// Decides `req` with the candidate; `Some(its decision)` when it differs from `live`'s
    /// `verdict`, which is then recorded in the report.
    pub(crate) fn observe(
        &self,
        live: &CompiledPolicy,
        verdict: &RequestVerdict,
        req: &Seen<'_>,
    ) -> Option<DryRun> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let shadow = self
            .policy
            .decide(req.dest, req.tls, req.method, req.path, req.query);
        let live = live.describe(verdict.clone());
        if !differs(&live, &shadow) {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut report = match self.report.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        report.record(req.host, req.method, req.path, &live, &shadow, now);
        Some(shadow)
    }
}

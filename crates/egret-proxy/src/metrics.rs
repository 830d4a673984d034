//! Data-path metrics: plain atomics and fixed-bucket histograms, rendered in the Prometheus
//! text exposition format. Every label set is fixed at compile time (decisions, status
//! classes, failure kinds): a sandbox cannot grow the metric space by choosing host names.
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Decisions an audit event can carry, in label order.
pub const DECISIONS: [&str; 5] = ["forward", "respond", "deny", "error", "revoked"];
/// Status classes (`none` for connections, which have no HTTP status).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
/// Handler failure kinds; anything else a dispatcher reports is counted as `other`.
pub const HANDLER_FAILURES: [&str; 6] = [
    "trap",
    "timeout",
    "oom",
    "invalid_action",
    "instantiate",
    "other",
];
/// Connection protocols of tunnel events.
pub const TUNNEL_PROTOS: [&str; 3] = ["tcp", "tls-passthrough", "tls"];

/// Upper bounds (seconds) for handler run times: handlers are budgeted in milliseconds.
const HANDLER_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Upper bounds (seconds) for upstream connects and TLS handshakes.
const CONNECT_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with fixed upper bounds; observing is a handful of relaxed atomic adds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Write the `# HELP` and `# TYPE` lines of a metric family.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A family with a single unlabelled sample.
pub fn single(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

fn index(set: &[&str], v: &str) -> Option<usize> {
    set.iter().position(|x| *x == v)
}

/// Counters and histograms of one proxy.
#[derive(Debug)]
pub struct Metrics {
    /// HTTP requests by decision × status class.
    requests: [[AtomicU64; STATUS_CLASSES.len()]; DECISIONS.len()],
    /// Tunnel connections by protocol × decision.
    tunnels: [[AtomicU64; DECISIONS.len()]; TUNNEL_PROTOS.len()],
    handler_invocations: AtomicU64,
    handler_failures: [AtomicU64; HANDLER_FAILURES.len()],
    /// How long handlers took (successful or not).
    pub handler_duration: Histogram,
    /// Upstream TCP connect time (name resolution included).
    pub upstream_connect: Histogram,
    /// Upstream TLS handshake time.
    pub upstream_tls: Histogram,
    upstream_connect_failures: AtomicU64,
    /// Bytes received from the sandbox (request bodies, tunnel bytes).
    bytes_in: AtomicU64,
    /// Bytes sent to the sandbox (response bodies, tunnel bytes).
    bytes_out: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            tunnels: Default::default(),
            handler_invocations: AtomicU64::new(0),
            handler_failures: Default::default(),
            handler_duration: Histogram::new(HANDLER_BUCKETS),
            upstream_connect: Histogram::new(CONNECT_BUCKETS),
            upstream_tls: Histogram::new(CONNECT_BUCKETS),
            upstream_connect_failures: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// A finished HTTP request.
    pub fn request(&self, decision: &str, status: Option<u16>, bytes_in: u64, bytes_out: u64) {
        let d = index(&DECISIONS, decision).unwrap_or(3);
        let s = match status {
            Some(s @ 100..=599) => (s / 100 - 1) as usize,
            _ => STATUS_CLASSES.len() - 1,
        };
        self.requests[d][s].fetch_add(1, Relaxed);
        self.bytes(bytes_in, bytes_out);
    }

    /// A finished (or refused) opaque / pass-through connection.
    pub fn tunnel(&self, proto: &str, decision: &str, bytes_in: u64, bytes_out: u64) {
        let p = index(&TUNNEL_PROTOS, proto).unwrap_or(0);
        let d = index(&DECISIONS, decision).unwrap_or(3);
        self.tunnels[p][d].fetch_add(1, Relaxed);
        self.bytes(bytes_in, bytes_out);
    }

    fn bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// A handler ran for `took`; `failure` is its failure kind when it failed.
    pub fn handler(&self, took: Duration, failure: Option<&str>) {
        self.handler_invocations.fetch_add(1, Relaxed);
        self.handler_duration.observe(took);
        if let Some(kind) = failure {
            let i = index(&HANDLER_FAILURES, kind).unwrap_or(HANDLER_FAILURES.len() - 1);
            self.handler_failures[i].fetch_add(1, Relaxed);
        }
    }

    /// An upstream connect attempt that failed (resolution, refusal, connect or TLS).
    pub fn connect_failed(&self) {
        self.upstream_connect_failures.fetch_add(1, Relaxed);
    }

    /// Append every family to `out` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "egret_requests_total",
            "HTTP requests finished, by decision and status class.",
            "counter",
        );
        for (d, row) in DECISIONS.iter().zip(&self.requests) {
            for (s, c) in STATUS_CLASSES.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "egret_requests_total{{decision=\"{d}\",status_class=\"{s}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }
        header(
            out,
            "egret_tunnels_total",
            "Opaque TCP and TLS pass-through connections finished or refused, by protocol and decision.",
            "counter",
        );
        for (p, row) in TUNNEL_PROTOS.iter().zip(&self.tunnels) {
            for (d, c) in DECISIONS.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "egret_tunnels_total{{proto=\"{p}\",decision=\"{d}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }
        single(
            out,
            "egret_handler_invocations_total",
            "Handler invocations.",
            "counter",
            self.handler_invocations.load(Relaxed),
        );
        header(
            out,
            "egret_handler_failures_total",
            "Handler invocations that failed (request not forwarded), by kind.",
            "counter",
        );
        for (k, c) in HANDLER_FAILURES.iter().zip(&self.handler_failures) {
            let _ = writeln!(
                out,
                "egret_handler_failures_total{{kind=\"{k}\"}} {}",
                c.load(Relaxed)
            );
        }
        self.handler_duration.render(
            out,
            "egret_handler_duration_seconds",
            "Handler run time (instantiate + call).",
        );
        self.upstream_connect.render(
            out,
            "egret_upstream_connect_duration_seconds",
            "Upstream TCP connect time, name resolution included (successful connects).",
        );
        self.upstream_tls.render(
            out,
            "egret_upstream_tls_handshake_duration_seconds",
            "Upstream TLS handshake time (successful handshakes).",
        );
        single(
            out,
            "egret_upstream_connect_failures_total",
            "Upstream connects that failed (resolution, refused address, TCP or TLS).",
            "counter",
            self.upstream_connect_failures.load(Relaxed),
        );
        single(
            out,
            "egret_received_bytes_total",
            "Bytes received from the sandbox: request bodies and tunnel bytes, counted when the request or connection ends.",
            "counter",
            self.bytes_in.load(Relaxed),
        );
        single(
            out,
            "egret_sent_bytes_total",
            "Bytes sent to the sandbox: response bodies and tunnel bytes, counted when the request or connection ends.",
            "counter",
            self.bytes_out.load(Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_every_observation() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.01\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn unknown_labels_fall_into_bounded_slots() {
        let m = Metrics::default();
        m.request("weird", Some(999), 1, 2);
        m.handler(Duration::ZERO, Some("not-a-kind"));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("egret_requests_total{decision=\"error\",status_class=\"none\"} 1"));
        assert!(out.contains("egret_handler_failures_total{kind=\"other\"} 1"));
        assert!(out.contains("egret_received_bytes_total 1"));
    }
}

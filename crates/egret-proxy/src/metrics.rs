//! Data-path metrics on `prometheus-client`: typed label sets, registered in the process's one
//! registry ([`Metrics::register`]), which `/metrics` encodes and `/v1/status` reads
//! ([`Metrics::snapshot`]).
//!
//! Every label value is an enum fixed at compile time (decisions, status classes, protocols,
//! failure kinds): a sandbox cannot grow the metric space by choosing host names. The counter
//! of every label combination is looked up once, when [`Metrics`] is built, so counting on the
//! data path is one atomic add, never a label-set hash.
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::time::Duration;

/// Defines a label-value enum: its variants in label order, their label text, `ALL`, and its
/// Prometheus encoding.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label text (also the audit event's text where the value appears there).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// What happened to a request or connection (the audit event's `decision`).
    Decision {
        /// Sent upstream.
        Forward => "forward",
        /// A handler answered it.
        Respond => "respond",
        /// The policy refused it.
        Deny => "deny",
        /// It failed (handler failure, upstream failure, bad request).
        Error => "error",
        /// A tunnel closed because a policy swap denied its destination.
        Revoked => "revoked",
        /// The policy would have refused it, but reports only (`enforce = false`, a
        /// `report_only` route): it was carried out.
        WouldDeny => "would_deny",
    }
}

label_enum! {
    /// The class of an HTTP status (`none` for connections, which have none).
    StatusClass {
        /// 1xx.
        Informational => "1xx",
        /// 2xx.
        Success => "2xx",
        /// 3xx.
        Redirection => "3xx",
        /// 4xx.
        ClientError => "4xx",
        /// 5xx.
        ServerError => "5xx",
        /// No HTTP status.
        None => "none",
    }
}

impl StatusClass {
    /// The class of `status` (`None` for no status or one outside 100-599).
    pub fn of(status: Option<u16>) -> StatusClass {
        match status {
            Some(100..=199) => StatusClass::Informational,
            Some(200..=299) => StatusClass::Success,
            Some(300..=399) => StatusClass::Redirection,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..=599) => StatusClass::ServerError,
            _ => StatusClass::None,
        }
    }
}

label_enum! {
    /// How a connection that is not intercepted HTTP was carried (the audit event's `proto`).
    TunnelProto {
        /// Opaque TCP.
        Tcp => "tcp",
        /// TLS spliced untouched.
        TlsPassthrough => "tls-passthrough",
        /// A TLS connection refused before interception or pass-through.
        Tls => "tls",
    }
}

label_enum! {
    /// Why a handler invocation failed (request not forwarded).
    HandlerFailureKind {
        /// The guest trapped.
        Trap => "trap",
        /// It ran past its deadline.
        Timeout => "timeout",
        /// It ran out of its memory cap.
        Oom => "oom",
        /// It returned an action egret refuses.
        InvalidAction => "invalid_action",
        /// It could not be instantiated.
        Instantiate => "instantiate",
        /// No instance slot came free within the wait (answered 503).
        Busy => "busy",
        /// The binding names a handler the request's policy generation has not loaded.
        NotLoaded => "not_loaded",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    decision: Decision,
    status_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TunnelLabels {
    proto: TunnelProto,
    decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FetchLabels {
    decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    kind: HandlerFailureKind,
}

/// Upper bounds (seconds) for handler run times: handlers are budgeted in milliseconds.
const HANDLER_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Upper bounds (seconds) for waits for a handler instance slot (up to the default 30 s bound).
const INSTANCE_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
/// Upper bounds (seconds) for upstream connects and TLS handshakes.
const CONNECT_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Resolve the counter of every label combination of `family` once.
fn resolve<L, const N: usize>(
    family: &Family<L, Counter>,
    labels: impl Fn(usize) -> L,
) -> [Counter; N]
where
    L: Clone + Eq + std::hash::Hash,
{
    std::array::from_fn(|i| family.get_or_create_owned(&labels(i)))
}

/// The data path's counters, gauges and histograms.
#[derive(Debug)]
pub struct Metrics {
    requests_family: Family<RequestLabels, Counter>,
    /// `[decision][status class]`.
    requests: [[Counter; 6]; DECISIONS],
    tunnels_family: Family<TunnelLabels, Counter>,
    /// `[proto][decision]`.
    tunnels: [[Counter; DECISIONS]; 3],
    failures_family: Family<FailureLabels, Counter>,
    failures: [Counter; 7],
    handler_invocations: Counter,
    fetches_family: Family<FetchLabels, Counter>,
    /// `[decision]`.
    fetches: [Counter; DECISIONS],
    handler_duration: Histogram,
    instance_wait: Histogram,
    instance_refused: Counter,
    upstream_connect: Histogram,
    upstream_tls: Histogram,
    upstream_connect_failures: Counter,
    received_bytes: Counter,
    sent_bytes: Counter,
    connections: Counter,
    connections_active: Gauge,
    overload_resets: Counter,
    would_deny: Counter,
    shadow_differences: Counter,
}

const DECISIONS: usize = Decision::ALL.len();

impl Default for Metrics {
    fn default() -> Self {
        let requests_family = Family::<RequestLabels, Counter>::default();
        let requests = std::array::from_fn(|d| {
            resolve(&requests_family, |s| RequestLabels {
                decision: Decision::ALL[d],
                status_class: StatusClass::ALL[s],
            })
        });
        let tunnels_family = Family::<TunnelLabels, Counter>::default();
        let tunnels = std::array::from_fn(|p| {
            resolve(&tunnels_family, |d| TunnelLabels {
                proto: TunnelProto::ALL[p],
                decision: Decision::ALL[d],
            })
        });
        let failures_family = Family::<FailureLabels, Counter>::default();
        let failures = resolve(&failures_family, |k| FailureLabels {
            kind: HandlerFailureKind::ALL[k],
        });
        let fetches_family = Family::<FetchLabels, Counter>::default();
        let fetches = resolve(&fetches_family, |d| FetchLabels {
            decision: Decision::ALL[d],
        });
        Metrics {
            fetches_family,
            fetches,
            requests_family,
            requests,
            tunnels_family,
            tunnels,
            failures_family,
            failures,
            handler_invocations: Counter::default(),
            handler_duration: Histogram::new(HANDLER_BUCKETS.iter().copied()),
            instance_wait: Histogram::new(INSTANCE_WAIT_BUCKETS.iter().copied()),
            instance_refused: Counter::default(),
            upstream_connect: Histogram::new(CONNECT_BUCKETS.iter().copied()),
            upstream_tls: Histogram::new(CONNECT_BUCKETS.iter().copied()),
            upstream_connect_failures: Counter::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            connections: Counter::default(),
            connections_active: Gauge::default(),
            overload_resets: Counter::default(),
            would_deny: Counter::default(),
            shadow_differences: Counter::default(),
        }
    }
}

/// The counters `/v1/status` shows, read from the same metrics `/metrics` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Sandbox connections accepted.
    pub connections: u64,
    /// Sandbox connections open now.
    pub connections_active: u64,
    /// HTTP requests finished.
    pub requests: u64,
    /// Requests and connections denied.
    pub denied: u64,
    /// Connections reset because the connection limit was reached.
    pub overload_resets: u64,
}

impl Metrics {
    /// Register every family in `registry` (names prefixed `egret_`; counters get `_total`
    /// from the encoder).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "egret_connections",
            "Sandbox connections accepted",
            self.connections.clone(),
        );
        registry.register(
            "egret_connections_active",
            "Sandbox connections open now",
            self.connections_active.clone(),
        );
        registry.register(
            "egret_overload_resets",
            "Connections reset because --max-connections was reached",
            self.overload_resets.clone(),
        );
        registry.register(
            "egret_would_deny",
            "Requests and connections the policy would have refused but only reported (enforce = false, report_only routes)",
            self.would_deny.clone(),
        );
        registry.register(
            "egret_shadow_differences",
            "Requests a shadow candidate policy (egret ctl policy shadow) would have decided otherwise than the live policy",
            self.shadow_differences.clone(),
        );
        registry.register(
            "egret_requests",
            "HTTP requests finished, by decision and status class",
            self.requests_family.clone(),
        );
        registry.register(
            "egret_tunnels",
            "Opaque TCP and TLS pass-through connections finished or refused, by protocol and decision",
            self.tunnels_family.clone(),
        );
        registry.register(
            "egret_handler_invocations",
            "Handler invocations",
            self.handler_invocations.clone(),
        );
        registry.register(
            "egret_handler_failures",
            "Handler invocations that failed (request not forwarded), by kind",
            self.failures_family.clone(),
        );
        registry.register(
            "egret_handler_fetches",
            "HTTP requests handlers made themselves (fetch), by decision",
            self.fetches_family.clone(),
        );
        registry.register(
            "egret_handler_duration_seconds",
            "Handler run time (instantiate + call)",
            self.handler_duration.clone(),
        );
        registry.register(
            "egret_handler_instance_wait_seconds",
            "Time requests waited for a handler instance slot because every one was in use (requests that got one and requests refused)",
            self.instance_wait.clone(),
        );
        registry.register(
            "egret_handler_instance_refused",
            "Requests refused with 503 because no handler instance slot came free (--max-handler-instances, --handler-instance-wait-ms, --max-handler-instance-waiters)",
            self.instance_refused.clone(),
        );
        registry.register(
            "egret_upstream_connect_duration_seconds",
            "Upstream TCP connect time, name resolution included (successful connects)",
            self.upstream_connect.clone(),
        );
        registry.register(
            "egret_upstream_tls_handshake_duration_seconds",
            "Upstream TLS handshake time (successful handshakes)",
            self.upstream_tls.clone(),
        );
        registry.register(
            "egret_upstream_connect_failures",
            "Upstream connects that failed (resolution, refused address, TCP or TLS)",
            self.upstream_connect_failures.clone(),
        );
        registry.register(
            "egret_received_bytes",
            "Bytes received from the sandbox: request bodies and tunnel bytes, counted when the request or connection ends",
            self.received_bytes.clone(),
        );
        registry.register(
            "egret_sent_bytes",
            "Bytes sent to the sandbox: response bodies and tunnel bytes, counted when the request or connection ends",
            self.sent_bytes.clone(),
        );
    }

    /// A finished HTTP request.
    pub fn request(&self, decision: Decision, status: Option<u16>, bytes_in: u64, bytes_out: u64) {
        self.requests[decision.index()][StatusClass::of(status).index()].inc();
        self.count_would_deny(decision);
        self.bytes(bytes_in, bytes_out);
    }

    /// A finished (or refused) opaque / pass-through connection.
    pub fn tunnel(&self, proto: TunnelProto, decision: Decision, bytes_in: u64, bytes_out: u64) {
        self.tunnels[proto.index()][decision.index()].inc();
        self.count_would_deny(decision);
        self.bytes(bytes_in, bytes_out);
    }

    /// A request the shadow candidate decided otherwise than the live policy.
    pub fn shadow_difference(&self) {
        self.shadow_differences.inc();
    }

    fn count_would_deny(&self, decision: Decision) {
        if decision == Decision::WouldDeny {
            self.would_deny.inc();
        }
    }

    fn bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.received_bytes.inc_by(bytes_in);
        self.sent_bytes.inc_by(bytes_out);
    }

    /// A handler ran for `took`; `failure` is its failure kind when it failed.
    pub fn handler(&self, took: Duration, failure: Option<HandlerFailureKind>) {
        self.handler_invocations.inc();
        self.handler_duration.observe(took.as_secs_f64());
        if let Some(kind) = failure {
            self.failures[kind.index()].inc();
        }
    }

    /// A request waited `waited` for a handler instance slot; `refused` when none came free.
    pub fn instance_wait(&self, waited: Option<Duration>, refused: bool) {
        if let Some(w) = waited {
            self.instance_wait.observe(w.as_secs_f64());
        }
        if refused {
            self.instance_refused.inc();
        }
    }

    /// A handler's fetch ended.
    pub fn fetch(&self, decision: Decision) {
        self.fetches[decision.index()].inc();
    }

    /// A successful upstream TCP connect (resolution included) that took `took`.
    pub fn upstream_connected(&self, took: Duration) {
        self.upstream_connect.observe(took.as_secs_f64());
    }

    /// A successful upstream TLS handshake that took `took`.
    pub fn upstream_tls_done(&self, took: Duration) {
        self.upstream_tls.observe(took.as_secs_f64());
    }

    /// An upstream connect attempt that failed (resolution, refusal, connect or TLS).
    pub fn connect_failed(&self) {
        self.upstream_connect_failures.inc();
    }

    /// A sandbox connection was accepted (and is open until [`Metrics::connection_closed`]).
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_active.inc();
    }

    /// A sandbox connection ended.
    pub fn connection_closed(&self) {
        self.connections_active.dec();
    }

    /// A connection was reset because the connection limit was reached.
    pub fn overload_reset(&self) {
        self.overload_resets.inc();
    }

    /// The counters `/v1/status` shows.
    pub fn snapshot(&self) -> Snapshot {
        let deny = Decision::Deny.index();
        Snapshot {
            connections: self.connections.get(),
            connections_active: self.connections_active.get().max(0) as u64,
            requests: self.requests.iter().flatten().map(Counter::get).sum(),
            denied: self.requests[deny].iter().map(Counter::get).sum::<u64>()
                + self.tunnels.iter().map(|row| row[deny].get()).sum::<u64>(),
            overload_resets: self.overload_resets.get(),
        }
    }
}

/// Encode `registry` in the Prometheus text format (0.0.4), the format `/metrics` serves.
pub fn encode_text(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(m: &Metrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        encode_text(&registry)
    }

    #[test]
    fn every_label_combination_is_rendered_and_counted_once() {
        let m = Metrics::default();
        m.request(Decision::Forward, Some(204), 1, 2);
        m.request(Decision::Deny, Some(403), 0, 10);
        m.tunnel(TunnelProto::TlsPassthrough, Decision::Deny, 0, 0);
        m.handler(Duration::from_micros(30), Some(HandlerFailureKind::Trap));
        let out = rendered(&m);
        assert!(
            out.contains("egret_requests_total{decision=\"forward\",status_class=\"2xx\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("egret_requests_total{decision=\"deny\",status_class=\"4xx\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("egret_requests_total{decision=\"revoked\",status_class=\"none\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("egret_tunnels_total{proto=\"tls-passthrough\",decision=\"deny\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("egret_handler_failures_total{kind=\"trap\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("egret_handler_failures_total{kind=\"not_loaded\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("egret_handler_invocations_total 1\n"), "{out}");
        assert!(out.contains("egret_received_bytes_total 1\n"), "{out}");
        assert!(out.contains("egret_sent_bytes_total 12\n"), "{out}");
        assert!(
            out.contains("# TYPE egret_requests_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE egret_handler_duration_seconds histogram\n"),
            "{out}"
        );
        assert!(
            out.contains("egret_handler_duration_seconds_count 1\n"),
            "{out}"
        );
        assert_eq!(out.matches("egret_requests_total{").count(), 36);
        assert_eq!(out.matches("egret_tunnels_total{").count(), 18);
        assert!(out.contains("egret_would_deny_total 0\n"), "{out}");
        assert!(out.contains("egret_shadow_differences_total 0\n"), "{out}");
        m.shadow_difference();
        assert!(rendered(&m).contains("egret_shadow_differences_total 1\n"));
        m.request(Decision::WouldDeny, Some(200), 0, 0);
        m.tunnel(TunnelProto::Tcp, Decision::WouldDeny, 0, 0);
        let out = rendered(&m);
        assert!(out.contains("egret_would_deny_total 2\n"), "{out}");
        assert!(
            out.contains("egret_requests_total{decision=\"would_deny\",status_class=\"2xx\"} 1\n"),
            "{out}"
        );
        assert!(!out.contains("# EOF"), "{out}");
    }

    #[test]
    fn the_status_snapshot_reads_the_same_counters() {
        let m = Metrics::default();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.request(Decision::Forward, Some(200), 0, 0);
        m.request(Decision::Deny, Some(403), 0, 0);
        m.request(Decision::Deny, Some(502), 0, 0);
        m.tunnel(TunnelProto::Tcp, Decision::Deny, 0, 0);
        m.tunnel(TunnelProto::Tcp, Decision::Forward, 0, 0);
        m.overload_reset();
        assert_eq!(
            m.snapshot(),
            Snapshot {
                connections: 2,
                connections_active: 1,
                requests: 3,
                denied: 3,
                overload_resets: 1,
            }
        );
    }

    #[test]
    fn statuses_are_classed() {
        assert_eq!(StatusClass::of(Some(999)), StatusClass::None);
        assert_eq!(StatusClass::of(None), StatusClass::None);
        assert_eq!(StatusClass::of(Some(101)), StatusClass::Informational);
        assert_eq!(StatusClass::of(Some(599)), StatusClass::ServerError);
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }
}

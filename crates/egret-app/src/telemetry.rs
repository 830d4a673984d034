//! One metrics registry per egret. `/metrics` encodes it; `/v1/status` reads its counters from
//! the same sources. The data path registers its own families
//! ([`egret_proxy::metrics::Metrics`]); the pieces that live in other crates (leaf cache, DNS,
//! audit writer, policy) are read at scrape time by a collector, so they keep plain atomics
//! and no dependency on the metrics library. No label carries a host name or any other value
//! the sandbox chooses.
use arc_swap::ArcSwap;
use egret_policy::CompiledPolicy;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the collector reads at scrape time.
struct Sources {
    leaves: Arc<egret_tls::LeafCache>,
    dns: Arc<egret_dns::Resolver>,
    audit: Arc<egret_proxy::AuditSink>,
    policy: Arc<ArcSwap<CompiledPolicy>>,
    host: Arc<egret_wasm::HandlerHost>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        gauge(
            &mut enc,
            "egret_policy_generation",
            "Generation of the policy in force",
            self.policy.load().generation(),
        )?;
        let ls = self.leaves.stats();
        counter(
            &mut enc,
            "egret_leaf_mints",
            "Leaf certificates minted (signatures made)",
            ls.mints,
        )?;
        counter(
            &mut enc,
            "egret_leaf_cache_hits",
            "Leaf certificate requests answered without minting",
            ls.hits,
        )?;
        counter(
            &mut enc,
            "egret_leaf_mint_failures",
            "Leaf certificate mints that failed",
            ls.mint_failures,
        )?;
        gauge(
            &mut enc,
            "egret_leaf_cache_entries",
            "Leaf certificates cached now",
            ls.entries,
        )?;
        let ds = self.dns.stats();
        counter(
            &mut enc,
            "egret_dns_queries",
            "DNS messages received from the sandbox",
            ds.queries,
        )?;
        counter(
            &mut enc,
            "egret_dns_nxdomain",
            "DNS answers that were NXDOMAIN (denied or unknown names)",
            ds.nxdomain,
        )?;
        let slots = self.host.slot_stats();
        gauge(
            &mut enc,
            "egret_handler_instance_slots",
            "Handler instance slots of the pool (--max-handler-instances)",
            slots.max.into(),
        )?;
        gauge(
            &mut enc,
            "egret_handler_instances_in_use",
            "Handler instance slots held now (running requests and idle reused instances)",
            slots.in_use.into(),
        )?;
        gauge(
            &mut enc,
            "egret_handler_instances_idle",
            "Handler instances kept idle for reuse now (instances = \"reuse\")",
            slots.idle.into(),
        )?;
        gauge(
            &mut enc,
            "egret_handler_instance_waiting",
            "Requests waiting for a handler instance slot now",
            slots.waiting.into(),
        )?;
        counter(
            &mut enc,
            "egret_audit_dropped",
            "Audit events dropped because the audit writer fell behind",
            self.audit.dropped(),
        )
    }
}

/// The registry of one egret and the readings `/v1/status` shows.
pub struct Telemetry {
    registry: Registry,
    proxy: Arc<egret_proxy::metrics::Metrics>,
    swaps: Counter,
    sources: Arc<Sources>,
}

impl Telemetry {
    /// Register the data path's metrics and the collector over the other crates' counters.
    pub fn new(
        proxy: Arc<egret_proxy::metrics::Metrics>,
        leaves: Arc<egret_tls::LeafCache>,
        dns: Arc<egret_dns::Resolver>,
        audit: Arc<egret_proxy::AuditSink>,
        policy: Arc<ArcSwap<CompiledPolicy>>,
        host: Arc<egret_wasm::HandlerHost>,
    ) -> Telemetry {
        let mut registry = Registry::default();
        let swaps = Counter::default();
        registry.register(
            "egret_policy_swaps",
            "Policy swaps since start",
            swaps.clone(),
        );
        proxy.register(&mut registry);
        let sources = Arc::new(Sources {
            leaves,
            dns,
            audit,
            policy,
            host,
        });
        registry.register_collector(Box::new(sources.clone()));
        Telemetry {
            registry,
            proxy,
            swaps,
            sources,
        }
    }

    /// A policy swap happened.
    pub fn swapped(&self) {
        self.swaps.inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        egret_proxy::metrics::encode_text(&self.registry)
    }

    /// The counters of `/v1/status` (names are part of the admin API).
    pub fn status_counters(&self) -> BTreeMap<String, u64> {
        let p = self.proxy.snapshot();
        let ls = self.sources.leaves.stats();
        let ds = self.sources.dns.stats();
        [
            ("connections_total", p.connections),
            ("connections_active", p.connections_active),
            ("requests_total", p.requests),
            ("denied_total", p.denied),
            ("overload_resets_total", p.overload_resets),
            ("leaf_mints_total", ls.mints),
            ("leaf_cache_hits_total", ls.hits),
            ("leaf_cache_entries", ls.entries),
            ("dns_queries_total", ds.queries),
            ("dns_nxdomain_total", ds.nxdomain),
            ("swaps", self.swaps.get()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

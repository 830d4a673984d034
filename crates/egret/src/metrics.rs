//! `GET /metrics`: the Prometheus text exposition of one egret. The data path renders its own
//! families ([`egret_proxy::metrics::Metrics`]); this adds the pieces that live in other crates
//! (leaf cache, DNS, connection gauges, audit writer). No label carries a host name or any
//! other value the sandbox chooses.
use egret_proxy::metrics::single;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Everything `/metrics` reads besides the control plane's own counters.
pub struct Sources {
    /// The data path.
    pub proxy: Arc<egret_proxy::Proxy>,
    /// Leaf certificate cache.
    pub leaves: Arc<egret_tls::LeafCache>,
    /// The sandbox's DNS.
    pub dns: Arc<egret_dns::Resolver>,
}

impl Sources {
    /// Append every family to `out`.
    pub fn render(&self, out: &mut String) {
        let ps = self.proxy.stats();
        single(
            out,
            "egret_connections_total",
            "Sandbox connections accepted.",
            "counter",
            ps.connections.load(Relaxed),
        );
        single(
            out,
            "egret_connections_active",
            "Sandbox connections open now.",
            "gauge",
            ps.active.load(Relaxed),
        );
        single(
            out,
            "egret_overload_resets_total",
            "Connections reset because --max-connections was reached.",
            "counter",
            ps.overload.load(Relaxed),
        );
        self.proxy.metrics().render(out);
        let ls = self.leaves.stats();
        single(
            out,
            "egret_leaf_mints_total",
            "Leaf certificates minted (signatures made).",
            "counter",
            ls.mints,
        );
        single(
            out,
            "egret_leaf_cache_hits_total",
            "Leaf certificate requests answered without minting.",
            "counter",
            ls.hits,
        );
        single(
            out,
            "egret_leaf_mint_failures_total",
            "Leaf certificate mints that failed.",
            "counter",
            ls.mint_failures,
        );
        single(
            out,
            "egret_leaf_cache_entries",
            "Leaf certificates cached now.",
            "gauge",
            ls.entries,
        );
        let ds = self.dns.stats();
        single(
            out,
            "egret_dns_queries_total",
            "DNS messages received from the sandbox.",
            "counter",
            ds.queries,
        );
        single(
            out,
            "egret_dns_nxdomain_total",
            "DNS answers that were NXDOMAIN (denied or unknown names).",
            "counter",
            ds.nxdomain,
        );
        single(
            out,
            "egret_audit_dropped_total",
            "Audit events dropped because the audit writer fell behind.",
            "counter",
            self.proxy.audit().dropped(),
        );
    }
}

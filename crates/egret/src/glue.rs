//! Adapters that connect the library crates to each other. Each crate stays ignorant of the
//! others; this is the one place where capture → DNS → TLS → HTTP → handlers are wired.
use arc_swap::ArcSwap;
use egret_policy::CompiledPolicy;
use futures_util::future::BoxFuture;
use std::net::IpAddr;
use std::sync::Arc;

/// The policy as the DNS server sees it: one question, may this name be answered.
pub struct PolicyNames(pub Arc<ArcSwap<CompiledPolicy>>);

impl egret_dns::NamePolicy for PolicyNames {
    fn decide(&self, name: &str) -> egret_dns::NameDecision {
        match self.0.load().dns_decision(name) {
            egret_policy::DnsDecision::Answer => egret_dns::NameDecision::Answer,
            egret_policy::DnsDecision::NxDomain { rule } => {
                egret_dns::NameDecision::NxDomain { rule }
            }
        }
    }
}

/// The sandbox DNS as the data path sees it.
pub struct DnsGlue(pub Arc<egret_dns::Resolver>);

impl egret_proxy::SandboxDns for DnsGlue {
    fn lookup(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.0.map().lookup(ip)
    }
    fn is_synthetic(&self, ip: IpAddr) -> bool {
        self.0.map().is_synthetic(ip)
    }
    fn serve_tcp(&self, stream: tokio::net::TcpStream) -> BoxFuture<'static, ()> {
        let r = self.0.clone();
        Box::pin(async move { r.handle_tcp_stream(stream).await })
    }
}

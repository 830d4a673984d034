//! The sandbox's resolver.
//!
//! **No query ever leaves egret.** Every A/AAAA question the sandbox asks (to any resolver
//! address: the capture layer redirects all of udp/53 here, and TCP/53 connections are handed
//! over by the proxy) is answered by egret itself with a *synthetic address* from a reserved
//! pool, remembered as address → name. Real resolution happens only later, when the proxy
//! connects upstream for a name the policy allowed. So a query cannot carry data out, and an
//! opaque TCP connection to a synthetic address is attributed to the name that was looked up.
//!
//! ```
//! use egret_dns::{answer, DnsConfig, NameDecision, NamePolicy, SyntheticMap};
//! use hickory_proto::op::{Message, Query};
//! use hickory_proto::rr::{Name, RecordType};
//!
//! struct AllowAll;
//! impl NamePolicy for AllowAll {
//!     fn decide(&self, _name: &str) -> NameDecision { NameDecision::Answer }
//! }
//! let map = SyntheticMap::new(DnsConfig::default());
//! let mut q = Message::new();
//! q.add_query(Query::query(Name::from_ascii("api.test.").unwrap(), RecordType::A));
//! let reply = answer(&q.to_vec().unwrap(), &map, &AllowAll, &DnsConfig::default()).unwrap();
//! let reply = Message::from_vec(&reply).unwrap();
//! assert_eq!(reply.answers().len(), 1);
//! assert_eq!(map.lookup("198.18.0.1".parse().unwrap()).as_deref(), Some("api.test"));
//! ```
#![forbid(unsafe_code)]

mod answer;
mod map;
mod server;

pub use answer::answer;
pub use map::SyntheticMap;
pub use server::{serve_udp, Resolver, Stats};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

/// What the policy says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameDecision {
    /// Answer with synthetic addresses.
    Answer,
    /// NXDOMAIN; `rule` is logged.
    NxDomain {
        /// The policy rule that denied it.
        rule: Arc<str>,
    },
}

/// The policy question the resolver asks for every name.
pub trait NamePolicy: Send + Sync {
    /// May `name` (lower case, no trailing dot) be answered?
    fn decide(&self, name: &str) -> NameDecision;
}

/// Resolver settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// IPv4 pool (a /15 by default: 131,072 addresses).
    pub pool_v4: (Ipv4Addr, u8),
    /// IPv6 pool (a /64); addresses use the same index as the IPv4 pool.
    pub pool_v6: (Ipv6Addr, u8),
    /// Names remembered at once (LRU beyond that).
    pub capacity: usize,
    /// TTL of answers: short, so clients ask again and egret sees it.
    pub ttl: Duration,
    /// DNS-over-TCP connections served at once.
    pub max_tcp_connections: usize,
    /// Idle timeout of a DNS-over-TCP connection.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            pool_v4: (Ipv4Addr::new(198, 18, 0, 0), 15),
            pool_v6: (Ipv6Addr::new(0xfd65, 0x6772, 0x6574, 0, 0, 0, 0, 0), 64),
            capacity: 65_536,
            ttl: Duration::from_secs(5),
            max_tcp_connections: 256,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

//! The sandbox's resolver.
//!
//! **No query ever leaves egret.** Every A/AAAA question the sandbox asks (to any resolver
//! address: the capture layer redirects all of udp/53 to a socket served by [`serve_udp`], and
//! TCP/53 connections reach [`serve_tcp`] or [`Resolver::handle_tcp_stream`]) is answered by egret
//! itself with a *synthetic address* from a reserved pool, remembered as address → name in a
//! [`SyntheticMap`]. Real resolution happens only later, when the proxy connects upstream for a
//! name the policy allowed. So a query cannot carry data out, and an opaque TCP connection to a
//! synthetic address is attributed to the name that was looked up.
//!
//! Names the [`NamePolicy`] denies get NXDOMAIN. Types other than A/AAAA get an empty answer
//! (NODATA), so nothing but an address ever comes back: no TXT data channel, no HTTPS/SVCB
//! records advertising h3 or ECH.
//!
//! ```
//! use egret_dns::{answer, DnsConfig, NameDecision, NamePolicy, SyntheticMap};
//! use hickory_proto::op::{Message, Query};
//! use hickory_proto::rr::{Name, RecordType};
//!
//! struct AllowAll;
//! impl NamePolicy for AllowAll {
//!     fn decide(&self, _name: &str) -> NameDecision {
//!         NameDecision::Answer
//!     }
//! }
//!
//! let cfg = DnsConfig::default();
//! let map = SyntheticMap::new(cfg.clone());
//! let mut q = Message::new();
//! q.add_query(Query::query(Name::from_ascii("API.example.com.").unwrap(), RecordType::A));
//! let reply = answer(&q.to_vec().unwrap(), &map, &AllowAll, &cfg).expect("a query is answered");
//! let reply = Message::from_vec(&reply).unwrap();
//! assert_eq!(reply.answers().len(), 1);
//! // The address egret handed out maps back to the (normalised) name.
//! assert_eq!(map.lookup("198.18.0.1".parse().unwrap()).as_deref(), Some("api.example.com"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod map;
mod name;
mod server;

pub use answer::answer;
pub use map::SyntheticMap;
pub use name::{normalize_name, NameError};
pub use server::{serve_tcp, serve_udp, Resolver, Stats};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

/// What the policy says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameDecision {
    /// Answer with synthetic addresses.
    Answer,
    /// Answer NXDOMAIN; `rule` is logged with the decision.
    NxDomain {
        /// The policy rule that denied the name.
        rule: Arc<str>,
    },
}

/// The policy question the resolver asks for every (valid, non-`localhost`) name.
pub trait NamePolicy: Send + Sync {
    /// May `name` be answered? `name` is lower case, without a trailing dot, and consists of
    /// LDH/underscore labels only (see [`normalize_name`]).
    fn decide(&self, name: &str) -> NameDecision;
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The IPv4 pool prefix must be between /8 and /30.
    #[error("IPv4 pool prefix /{0} out of range (must be /8 to /30)")]
    PoolV4Prefix(u8),
    /// The IPv6 pool prefix must leave at least 32 host bits.
    #[error("IPv6 pool prefix /{0} out of range (must be /1 to /96)")]
    PoolV6Prefix(u8),
    /// The map must hold at least one name, and at most half the pool (so that an address is
    /// not reused right after its name was evicted).
    #[error("capacity {capacity} out of range (must be 1 to {max} for this pool)")]
    Capacity {
        /// The configured capacity.
        capacity: usize,
        /// The largest capacity the IPv4 pool allows.
        max: usize,
    },
    /// A limit that must be positive was zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
}

/// Resolver settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// IPv4 pool as (network, prefix length); 198.18.0.0/15 (RFC 2544 benchmarking space) by
    /// default: 131,072 addresses.
    pub pool_v4: (Ipv4Addr, u8),
    /// IPv6 pool as (network, prefix length); `fd65:6772:6574::/64` by default. An address uses
    /// the same index as its IPv4 sibling, so both families of a name look alike in logs.
    pub pool_v6: (Ipv6Addr, u8),
    /// Names remembered at once (least recently used forgotten beyond that).
    pub capacity: usize,
    /// TTL of answers: short, so clients ask again and egret sees each use of a name.
    pub ttl: Duration,
    /// DNS-over-TCP connections served at once (shared by [`serve_tcp`] and
    /// [`Resolver::handle_tcp_stream`]).
    pub max_tcp_connections: usize,
    /// A DNS-over-TCP connection is closed when a read or write makes no progress for this long.
    pub tcp_idle_timeout: Duration,
    /// Largest query accepted (bytes); a larger TCP frame closes the connection, a larger UDP
    /// datagram is truncated by the receive buffer and answered FORMERR.
    pub max_query_len: usize,
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
            max_query_len: 4096,
        }
    }
}

impl DnsConfig {
    /// Check that the settings can work. [`SyntheticMap::new`] and [`Resolver::new`] clamp
    /// out-of-range values instead; call this (or [`SyntheticMap::try_new`]) to reject them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p4 = self.pool_v4.1;
        if !(8..=30).contains(&p4) {
            return Err(ConfigError::PoolV4Prefix(p4));
        }
        let p6 = self.pool_v6.1;
        if !(1..=96).contains(&p6) {
            return Err(ConfigError::PoolV6Prefix(p6));
        }
        let max = map::max_capacity(p4);
        if self.capacity == 0 || self.capacity > max {
            return Err(ConfigError::Capacity {
                capacity: self.capacity,
                max,
            });
        }
        if self.max_tcp_connections == 0 {
            return Err(ConfigError::Zero("max_tcp_connections"));
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(ConfigError::Zero("tcp_idle_timeout"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_ones_are_named() {
        assert_eq!(DnsConfig::default().validate(), Ok(()));
        let bad = DnsConfig {
            pool_v4: (Ipv4Addr::new(10, 0, 0, 0), 31),
            ..DnsConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::PoolV4Prefix(31)));
        let bad = DnsConfig {
            pool_v6: (Ipv6Addr::UNSPECIFIED, 120),
            ..DnsConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::PoolV6Prefix(120)));
        let bad = DnsConfig {
            pool_v4: (Ipv4Addr::new(10, 0, 0, 0), 24),
            ..DnsConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Capacity { max: 128, .. })
        ));
        let bad = DnsConfig {
            max_tcp_connections: 0,
            ..DnsConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::Zero("max_tcp_connections"))
        );
    }
}

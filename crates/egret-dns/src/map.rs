//! The synthetic address map: name ↔ (IPv4, IPv6), bounded by an LRU, no I/O.
//!
//! A name gets an *index* into the pools; its IPv4 and IPv6 addresses are `pool + index` in
//! each family. Indices are handed out round-robin over the whole pool, and an index is
//! reused only after its name was evicted **and** the allocator has come all the way around.
//!
//! The trade-off: the map is bounded (a sandbox resolving millions of names must not exhaust
//! memory), so a name can be forgotten while a client still holds its address. A connection to
//! a forgotten address is then not attributed to any name (the proxy treats it as a bare IP,
//! which a name policy does not allow). Worse would be attributing it to a *different* name,
//! which happens only if the address was reused; round-robin allocation delays that until the
//! pool wraps, i.e. at least `pool size - 2` new names later (131,070 with the default /15,
//! which at the default 5 s TTL is far beyond the life of a cached answer).
use crate::name::log_name;
use crate::{ConfigError, DnsConfig};
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::Arc;

/// The largest capacity a /`prefix` IPv4 pool allows: half the pool, so at least half of it is
/// free and the allocator finds a free index after a short scan.
pub(crate) fn max_capacity(prefix: u8) -> usize {
    let prefix = prefix.clamp(8, 30);
    1usize << (31 - u32::from(prefix))
}

struct Inner {
    /// Name → index, in recency order (the LRU). Unbounded for `lru`, bounded by `capacity`
    /// here: `LruCache::new(cap)` allocates its table for `cap` names up front (2.2 MiB, 150 KiB
    /// of it touched, at the default 65536) in every sidecar, before a single name is seen.
    by_name: LruCache<Arc<str>, u32>,
    /// Most names remembered at once.
    capacity: NonZeroUsize,
    /// Index → name, for reverse lookups.
    by_index: HashMap<u32, Arc<str>>,
    /// Where the round-robin allocator continues.
    next: u32,
}

/// Thread-safe, bounded, bidirectional map between names and synthetic addresses.
///
/// Names are stored as given: pass them normalised ([`crate::normalize_name`]); the resolver
/// does. Lookups accept IPv4, IPv6 and IPv4-mapped IPv6 (`::ffff:198.18.0.1`) addresses.
pub struct SyntheticMap {
    /// First address of the IPv4 pool.
    base4: u32,
    /// Addresses in the IPv4 pool (a power of two, at most 2^24).
    size: u32,
    /// First address of the IPv6 pool.
    base6: u128,
    /// Host bits of the IPv6 pool.
    mask6: u128,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SyntheticMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticMap")
            .field("pool_v4", &Ipv4Addr::from(self.base4))
            .field("pool_v6", &Ipv6Addr::from(self.base6))
            .field("len", &self.len())
            .finish()
    }
}

impl SyntheticMap {
    /// An empty map over the configured pools. Out-of-range settings are clamped (IPv4 prefix
    /// to /8../30, IPv6 prefix to at most /96, capacity to 1..=half the IPv4 pool) and host
    /// bits of the pool addresses are ignored; use [`SyntheticMap::try_new`] to reject them.
    pub fn new(cfg: DnsConfig) -> SyntheticMap {
        let p4 = cfg.pool_v4.1.clamp(8, 30);
        let mask4 = u32::MAX >> p4;
        let base4 = u32::from(cfg.pool_v4.0) & !mask4;
        let p6 = cfg.pool_v6.1.min(96);
        let mask6 = u128::MAX >> p6;
        let base6 = u128::from(cfg.pool_v6.0) & !mask6;
        let capacity = cfg.capacity.clamp(1, max_capacity(p4));
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SyntheticMap {
            base4,
            size: mask4 + 1,
            base6,
            mask6,
            inner: Mutex::new(Inner {
                by_name: LruCache::unbounded(),
                capacity,
                by_index: HashMap::new(),
                next: 1,
            }),
        }
    }

    /// An empty map, or why the configuration cannot work.
    pub fn try_new(cfg: DnsConfig) -> Result<SyntheticMap, ConfigError> {
        cfg.validate()?;
        Ok(SyntheticMap::new(cfg))
    }

    fn v4(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base4 | index)
    }

    fn v6(&self, index: u32) -> Ipv6Addr {
        Ipv6Addr::from(self.base6 | u128::from(index))
    }

    /// The addresses of `name`, assigning them if the name is new (and forgetting the least
    /// recently used name if the map is full). The same name keeps its addresses while it is
    /// remembered.
    pub fn assign(&self, name: &str) -> (Ipv4Addr, Ipv6Addr) {
        let index = {
            let mut g = self.inner.lock();
            match g.by_name.get(name) {
                Some(&i) => i,
                None => self.insert(&mut g, Arc::from(name)),
            }
        };
        (self.v4(index), self.v6(index))
    }

    fn insert(&self, g: &mut Inner, name: Arc<str>) -> u32 {
        if g.by_name.len() >= g.capacity.get() {
            if let Some((old, i)) = g.by_name.pop_lru() {
                g.by_index.remove(&i);
                tracing::debug!(name = %log_name(&old), "synthetic address map full: forgot the least recently used name");
            }
        }
        // Usable indices are 1..=size-2: the all-zeros and all-ones ends look like network and
        // broadcast addresses to some software. At most half the pool is occupied, so the scan
        // is short, and `next` moves on past every index it sees occupied.
        let mut i = g.next;
        loop {
            if i == 0 || i > self.size - 2 {
                i = 1;
            }
            if !g.by_index.contains_key(&i) {
                break;
            }
            i += 1;
        }
        g.next = i + 1;
        g.by_index.insert(i, name.clone());
        g.by_name.put(name, i);
        i
    }

    fn index_of(&self, ip: IpAddr) -> Option<u32> {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let x = u32::from(v4);
                (x & !(self.size - 1) == self.base4).then_some(x & (self.size - 1))
            }
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                let host = x & self.mask6;
                if x & !self.mask6 == self.base6 && host < u128::from(self.size) {
                    u32::try_from(host).ok()
                } else {
                    None
                }
            }
        }
    }

    /// Whether `ip` is in one of the synthetic pools (IPv4-mapped IPv6 included), whether or
    /// not it is currently assigned.
    pub fn is_synthetic(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => u32::from(v4) & !(self.size - 1) == self.base4,
            IpAddr::V6(v6) => u128::from(v6) & !self.mask6 == self.base6,
        }
    }

    /// The name `ip` was handed out for, if it is still remembered. Counts as a use of the name
    /// (it becomes most recently used), so names with live traffic are not evicted first.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<str>> {
        let i = self.index_of(ip)?;
        let mut g = self.inner.lock();
        let name = g.by_index.get(&i)?.clone();
        g.by_name.promote(&name);
        Some(name)
    }

    /// Names currently remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().by_name.len()
    }

    /// Whether no name is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most names remembered at once.
    pub fn capacity(&self) -> usize {
        self.inner.lock().capacity.get()
    }
}

/// IPv4-mapped IPv6 (what a dual-stack socket reports for an IPv4 peer) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small(prefix: u8, capacity: usize) -> SyntheticMap {
        SyntheticMap::new(DnsConfig {
            pool_v4: (Ipv4Addr::new(10, 9, 0, 0), prefix),
            capacity,
            ..DnsConfig::default()
        })
    }

    #[test]
    fn same_name_same_addresses_and_reverse_lookup() {
        let m = SyntheticMap::new(DnsConfig::default());
        let (a, b) = m.assign("api.test");
        assert_eq!(a, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(b, "fd65:6772:6574::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(m.assign("api.test"), (a, b));
        assert_eq!(m.lookup(a.into()).as_deref(), Some("api.test"));
        assert_eq!(m.lookup(b.into()).as_deref(), Some("api.test"));
        let mapped: IpAddr = "::ffff:198.18.0.1".parse().unwrap();
        assert_eq!(m.lookup(mapped).as_deref(), Some("api.test"));
        assert!(m.is_synthetic(mapped));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn pool_membership() {
        let m = SyntheticMap::new(DnsConfig::default());
        for (ip, yes) in [
            ("198.18.0.0", true),
            ("198.19.255.255", true),
            ("198.17.255.255", false),
            ("198.20.0.0", false),
            ("10.0.0.1", false),
            ("fd65:6772:6574::abcd", true),
            ("fd65:6772:6574:0:ffff:ffff:ffff:ffff", true),
            ("fd65:6772:6574:1::1", false),
            ("::ffff:198.19.0.7", true),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(m.is_synthetic(ip.parse().unwrap()), yes, "{ip}");
        }
        // In the pool but never handed out, or beyond the indices IPv4 can mirror.
        assert!(m.lookup("198.18.0.2".parse().unwrap()).is_none());
        assert!(m.lookup("fd65:6772:6574:0:1::1".parse().unwrap()).is_none());
    }

    #[test]
    fn bounded_and_never_reuses_an_address_before_wrapping() {
        let m = small(16, 100);
        let (first, _) = m.assign("n0.test");
        for i in 1..1000 {
            m.assign(&format!("n{i}.test"));
        }
        assert_eq!(m.len(), 100);
        assert!(
            m.lookup(first.into()).is_none(),
            "evicted name still attributed"
        );
        let (latest, _) = m.assign("fresh.test");
        assert_eq!(u32::from(latest) - u32::from(first), 1000);
    }

    #[test]
    fn wraps_around_skipping_live_addresses_and_the_pool_ends() {
        // A /28 has 16 addresses: indices 1..=14 usable, at most 8 names.
        let m = small(28, 8);
        assert_eq!(m.capacity(), 8);
        let (keep, _) = m.assign("keep.test");
        let mut seen = Vec::new();
        for i in 0..40 {
            // Looking `keep` up keeps it most recently used, so it is never evicted.
            assert_eq!(m.lookup(keep.into()).as_deref(), Some("keep.test"));
            let (a, _) = m.assign(&format!("n{i}.test"));
            assert_ne!(a, keep);
            let last = u32::from(a) & 0xf;
            assert!((1..=14).contains(&last), "{a}");
            seen.push(a);
        }
        // Every live address belongs to exactly the name that was last given it.
        for (i, a) in seen.iter().enumerate().skip(33) {
            assert_eq!(
                m.lookup((*a).into()).as_deref(),
                Some(format!("n{i}.test").as_str())
            );
        }
        assert_eq!(m.len(), 8);
    }

    #[test]
    fn eviction_is_least_recently_used() {
        let m = small(24, 3);
        let (a, _) = m.assign("a.test");
        m.assign("b.test");
        m.assign("c.test");
        m.assign("a.test"); // a is now the most recently used
        m.assign("d.test"); // evicts b
        assert_eq!(m.lookup(a.into()).as_deref(), Some("a.test"));
        let names: Vec<_> = ["a.test", "c.test", "d.test"]
            .iter()
            .map(|n| m.lookup(m.assign(n).0.into()))
            .collect();
        assert!(names.iter().all(Option::is_some));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn configured_pools_and_clamping() {
        let m = SyntheticMap::new(DnsConfig {
            pool_v4: (Ipv4Addr::new(100, 64, 7, 7), 10), // host bits ignored
            pool_v6: ("fd00:1:2:3:4:5::".parse().unwrap(), 96),
            capacity: usize::MAX,
            ..DnsConfig::default()
        });
        let (a, b) = m.assign("x.test");
        assert_eq!(a, Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(b, "fd00:1:2:3:4:5:0:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(m.capacity(), 1 << 21);
        assert!(SyntheticMap::try_new(DnsConfig {
            capacity: 0,
            ..DnsConfig::default()
        })
        .is_err());
        assert!(SyntheticMap::try_new(DnsConfig::default()).is_ok());
    }

    #[test]
    fn stays_bounded_under_200k_names() {
        let m = SyntheticMap::new(DnsConfig {
            capacity: 1000,
            ..DnsConfig::default()
        });
        for i in 0..200_000 {
            let (a, b) = m.assign(&format!("x{i}.test"));
            assert!(m.is_synthetic(a.into()) && m.is_synthetic(b.into()));
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.inner.lock().by_index.len(), 1000);
        // The pool (131,070 usable) wrapped once; the newest names still map back.
        let (a, _) = m.assign("x199999.test");
        assert_eq!(m.lookup(a.into()).as_deref(), Some("x199999.test"));
    }

    #[test]
    fn concurrent_use() {
        let m = Arc::new(SyntheticMap::new(DnsConfig {
            capacity: 500,
            ..DnsConfig::default()
        }));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let name = format!("t{t}-{}.test", i % 700);
                        let (a, b) = m.assign(&name);
                        // Another thread may evict it in between, but never remap it to
                        // someone else's name this quickly (the pool is far from wrapping).
                        for ip in [IpAddr::V4(a), IpAddr::V6(b)] {
                            if let Some(n) = m.lookup(ip) {
                                assert_eq!(&*n, name.as_str());
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.len(), 500);
    }

    proptest! {
        #[test]
        fn lookup_of_assign_round_trips(names in proptest::collection::vec("[a-z0-9-]{1,20}(\\.[a-z]{1,10}){0,3}", 1..60)) {
            let m = SyntheticMap::new(DnsConfig::default());
            for n in &names {
                let (a, b) = m.assign(n);
                let mapped = IpAddr::V6(a.to_ipv6_mapped());
                for ip in [IpAddr::V4(a), IpAddr::V6(b), mapped] {
                    let got = m.lookup(ip);
                    prop_assert_eq!(got.as_deref(), Some(n.as_str()));
                }
                prop_assert_eq!(m.assign(n), (a, b));
            }
        }

        #[test]
        fn bounded_for_any_capacity(cap in 1usize..64, n in 0usize..500) {
            let m = small(24, cap);
            for i in 0..n {
                let name = format!("n{i}");
                let (a, _) = m.assign(&name);
                let got = m.lookup(a.into());
                prop_assert_eq!(got.as_deref(), Some(name.as_str()));
            }
            prop_assert_eq!(m.len(), n.min(cap));
            prop_assert_eq!(m.inner.lock().by_index.len(), n.min(cap));
        }
    }
}

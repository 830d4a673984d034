//! The synthetic address map: name ↔ (IPv4, IPv6) with the same index in both pools, bounded
//! by an LRU. Addresses are handed out round-robin over the whole pool and an index is reused
//! only after its name was evicted *and* the allocator wrapped around, so a stale connection to
//! an old address is very unlikely to be attributed to a new name. (With the default /15 pool
//! and 65,536 names, an address is reused at the earliest after 131,072 new names.)
use crate::DnsConfig;
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::Arc;

struct Inner {
    by_name: LruCache<Arc<str>, u32>,
    by_index: HashMap<u32, Arc<str>>,
    next: u32,
}

/// Thread-safe bidirectional map between names and synthetic addresses.
pub struct SyntheticMap {
    base4: u32,
    size: u32,
    base6: u128,
    mask6: u128,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SyntheticMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticMap").field("len", &self.len()).finish()
    }
}

impl SyntheticMap {
    /// An empty map over the configured pools.
    pub fn new(cfg: DnsConfig) -> SyntheticMap {
        let (a4, p4) = cfg.pool_v4;
        let p4 = p4.clamp(8, 30);
        let size = 1u32 << (32 - p4);
        let base4 = u32::from(a4) & !(size - 1);
        let (a6, p6) = cfg.pool_v6;
        let p6 = p6.clamp(64, 96);
        let mask6 = (1u128 << (128 - p6)) - 1;
        let base6 = u128::from(a6) & !mask6;
        // Usable indices 1..size-1 (skip the network and broadcast-looking ends).
        let capacity = cfg.capacity.clamp(1, (size as usize).saturating_sub(2) / 2 + 1);
        SyntheticMap {
            base4,
            size,
            base6,
            mask6,
            inner: Mutex::new(Inner {
                by_name: LruCache::new(NonZeroUsize::new(capacity).expect("clamped >= 1")),
                by_index: HashMap::new(),
                next: 1,
            }),
        }
    }

    fn v4(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base4 + index)
    }

    fn v6(&self, index: u32) -> Ipv6Addr {
        Ipv6Addr::from(self.base6 | u128::from(index))
    }

    /// The addresses for `name` (lower case, no trailing dot), assigning them if new.
    pub fn assign(&self, name: &str) -> (Ipv4Addr, Ipv6Addr) {
        let mut g = self.inner.lock();
        if let Some(&i) = g.by_name.get(name) {
            return (self.v4(i), self.v6(i));
        }
        let name: Arc<str> = Arc::from(name);
        if g.by_name.len() == g.by_name.cap().get() {
            if let Some((old, i)) = g.by_name.pop_lru() {
                g.by_index.remove(&i);
                tracing::debug!(name = %truncate(&old), "synthetic address map full; forgot the least recently used name");
            }
        }
        // Find the next free index (capacity < pool size/2, so this terminates quickly).
        let mut i = g.next;
        loop {
            if i == 0 || i >= self.size - 1 {
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
        (self.v4(i), self.v6(i))
    }

    fn index_of(&self, ip: IpAddr) -> Option<u32> {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let x = u32::from(v4);
                (x & !(self.size - 1) == self.base4).then_some(x - self.base4)
            }
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                if x & !self.mask6 == self.base6 && (x & self.mask6) < u128::from(self.size) {
                    Some((x & self.mask6) as u32)
                } else {
                    None
                }
            }
        }
    }

    /// Whether `ip` is in one of the synthetic pools (IPv4-mapped IPv6 included).
    pub fn is_synthetic(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => u32::from(v4) & !(self.size - 1) == self.base4,
            IpAddr::V6(v6) => u128::from(v6) & !self.mask6 == self.base6,
        }
    }

    /// The name an address was given out for, if still remembered (and marks it recently used).
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<str>> {
        let i = self.index_of(ip)?;
        let mut g = self.inner.lock();
        let name = g.by_index.get(&i)?.clone();
        g.by_name.get(&name);
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
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Names can be 253 characters of exfiltration payload: log a bounded prefix.
pub(crate) fn truncate(name: &str) -> String {
    if name.len() <= 120 {
        name.to_string()
    } else {
        let mut end = 120;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &name[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert!(!m.is_synthetic("10.0.0.1".parse().unwrap()));
        assert!(m.lookup("198.18.0.2".parse().unwrap()).is_none());
        assert!(m.is_synthetic("198.19.255.255".parse().unwrap()));
        assert!(!m.is_synthetic("198.20.0.0".parse().unwrap()));
    }

    #[test]
    fn bounded_and_never_reuses_an_address_before_wrapping() {
        let cfg = DnsConfig { capacity: 100, ..DnsConfig::default() };
        let m = SyntheticMap::new(cfg);
        let (first, _) = m.assign("n0.test");
        for i in 1..1000 {
            m.assign(&format!("n{i}.test"));
        }
        assert_eq!(m.len(), 100);
        assert!(m.lookup(first.into()).is_none(), "evicted name still attributed");
        let (latest, _) = m.assign("fresh.test");
        assert_eq!(u32::from(latest) - u32::from(first), 1000);
    }

    proptest! {
        #[test]
        fn round_trips(names in proptest::collection::vec("[a-z]{1,10}\\.test", 1..50)) {
            let m = SyntheticMap::new(DnsConfig::default());
            for n in &names {
                let (a, b) = m.assign(n);
                let (x, y) = (m.lookup(a.into()), m.lookup(b.into()));
                prop_assert_eq!(x.as_deref(), Some(n.as_str()));
                prop_assert_eq!(y.as_deref(), Some(n.as_str()));
            }
        }
    }

    #[test]
    fn stays_bounded_under_many_names() {
        let m = SyntheticMap::new(DnsConfig { capacity: 1000, ..DnsConfig::default() });
        for i in 0..200_000 {
            m.assign(&format!("x{i}.test"));
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.inner.lock().by_index.len(), 1000);
    }
}

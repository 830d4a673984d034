//! The compiled multi-pattern index: answers "which pattern of this list matches this
//! destination" with the most specific match, in time independent of the number of exact and
//! `*.suffix` patterns and without allocating per lookup.
//!
//! Built once per policy load or swap; [`crate::pattern::Pattern::matches`] is the reference
//! semantics it must agree with (property-tested in `tests/properties.rs`).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::pattern::{
    better, canonical_ip, is_glob_char, mask4, mask6, Destination, NetKey, Pattern, PatternError,
    PatternKind, PortSpec, Specificity,
};

/// Which ports a lookup asks about.
#[derive(Debug, Clone, Copy)]
enum PortQuery {
    /// A concrete destination port.
    Is(u16),
    /// Any pattern, whatever its port (could some port of this name match?).
    Some,
    /// Only patterns that cover every port (does every port of this name match?).
    Every,
}

impl PortQuery {
    #[inline]
    fn accepts(self, spec: PortSpec) -> bool {
        match self {
            PortQuery::Is(p) => spec.contains(p),
            PortQuery::Some => true,
            PortQuery::Every => spec.covers_all(),
        }
    }
}

/// A pattern that matched: its position in the list it was compiled from, and the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    /// Index into the list the set was built from.
    pub index: usize,
    /// The matching pattern.
    pub pattern: &'a Pattern,
}

/// A compiled list of host patterns.
///
/// Lookups return the most specific matching pattern: exact host > glob (longer literal part
/// first) > IP/CIDR (longer prefix first) > `*`; a single port beats a port range beats no port
/// within the same class and length; remaining ties go to the earlier pattern.
#[derive(Debug, Clone, Default)]
pub struct HostSet {
    patterns: Vec<Pattern>,
    specs: Vec<Specificity>,
    /// Exact host → pattern indices, best first.
    exact: HashMap<Box<str>, Vec<u32>>,
    /// `*.suffix` keyed by `suffix` → indices, best first.
    subdomain: HashMap<Box<str>, Vec<u32>>,
    /// Other globs, best first (checked linearly; expected to be few).
    globs: Vec<u32>,
    /// IPv4 networks grouped by prefix length, longest first.
    v4: Vec<(u8, HashMap<u32, Vec<u32>>)>,
    /// IPv6 networks grouped by prefix length, longest first.
    v6: Vec<(u8, HashMap<u128, Vec<u32>>)>,
    /// `*` patterns, best first.
    any: Vec<u32>,
}

impl HostSet {
    /// Builds the index over already-compiled patterns (their order sets tie-breaking).
    ///
    /// # Panics
    /// If there are more than `u32::MAX` patterns.
    pub fn new(patterns: Vec<Pattern>) -> HostSet {
        assert!(u32::try_from(patterns.len()).is_ok(), "too many patterns");
        let specs: Vec<Specificity> = patterns.iter().map(Pattern::specificity).collect();
        let mut set = HostSet {
            specs,
            ..HostSet::default()
        };
        let mut v4: HashMap<u8, HashMap<u32, Vec<u32>>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, Vec<u32>>> = HashMap::new();
        for (i, p) in patterns.iter().enumerate() {
            let i = i as u32;
            match p.kind() {
                PatternKind::Any => set.any.push(i),
                PatternKind::Exact(h) => set.exact.entry(h.clone()).or_default().push(i),
                PatternKind::Subdomain(s) => set.subdomain.entry(s.clone()).or_default().push(i),
                PatternKind::Glob(_) => set.globs.push(i),
                PatternKind::Net(_) => match p.net_key().expect("Net patterns carry a key") {
                    NetKey::V4 { addr, len } => {
                        v4.entry(len).or_default().entry(addr).or_default().push(i)
                    }
                    NetKey::V6 { addr, len } => {
                        v6.entry(len).or_default().entry(addr).or_default().push(i)
                    }
                },
            }
        }
        let specs = &set.specs;
        let order = |v: &mut Vec<u32>| {
            v.sort_by(|&a, &b| specs[b as usize].cmp(&specs[a as usize]).then(a.cmp(&b)))
        };
        set.exact.values_mut().for_each(order);
        set.subdomain.values_mut().for_each(order);
        order(&mut set.globs);
        order(&mut set.any);
        let mut v4: Vec<_> = v4.into_iter().collect();
        v4.iter_mut()
            .for_each(|(_, m)| m.values_mut().for_each(order));
        v4.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        let mut v6: Vec<_> = v6.into_iter().collect();
        v6.iter_mut()
            .for_each(|(_, m)| m.values_mut().for_each(order));
        v6.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        set.v4 = v4;
        set.v6 = v6;
        set.patterns = patterns;
        set
    }

    /// Compiles pattern strings; on failure returns every error with the index of its pattern.
    pub fn compile<S: AsRef<str>>(sources: &[S]) -> Result<HostSet, Vec<(usize, PatternError)>> {
        let mut patterns = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            match Pattern::parse(s.as_ref()) {
                Ok(p) => patterns.push(p),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            Ok(HostSet::new(patterns))
        } else {
            Err(errors)
        }
    }

    /// The patterns, in their original order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether the set has no pattern (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The most specific pattern matching `dest`.
    pub fn find(&self, dest: &Destination<'_>) -> Option<Match<'_>> {
        self.lookup(dest.host, dest.ip, PortQuery::Is(dest.port))
    }

    /// The most specific pattern that matches the name `host` on at least one port (ports of
    /// patterns are ignored). For DNS: "could a connection to this name match?".
    pub fn find_any_port(&self, host: &str) -> Option<Match<'_>> {
        self.lookup(Some(host), None, PortQuery::Some)
    }

    /// Whether some pattern matches the name `host` on at least one port.
    pub fn matches_any_port(&self, host: &str) -> bool {
        self.find_any_port(host).is_some()
    }

    /// The most specific pattern that matches the name `host` on every port (port-less
    /// patterns, or a range spanning 1..=65535). For DNS: "is every connection to this name
    /// matched?".
    pub fn find_every_port(&self, host: &str) -> Option<Match<'_>> {
        self.lookup(Some(host), None, PortQuery::Every)
    }

    fn hit(&self, i: u32) -> Match<'_> {
        Match {
            index: i as usize,
            pattern: &self.patterns[i as usize],
        }
    }

    #[inline]
    fn first_in(&self, bucket: &[u32], q: PortQuery) -> Option<u32> {
        bucket
            .iter()
            .copied()
            .find(|&i| q.accepts(self.patterns[i as usize].port()))
    }

    #[inline]
    fn keep_better(&self, best: &mut Option<u32>, cand: Option<u32>) {
        if let Some(c) = cand {
            match *best {
                Some(b) if !better((self.specs[c as usize], c), (self.specs[b as usize], b)) => {}
                _ => *best = Some(c),
            }
        }
    }

    fn lookup(&self, host: Option<&str>, ip: Option<IpAddr>, q: PortQuery) -> Option<Match<'_>> {
        // Classes are strictly ordered, so the first class with a match holds the answer.
        if let Some(h) = host {
            if let Some(i) = self.exact.get(h).and_then(|b| self.first_in(b, q)) {
                return Some(self.hit(i));
            }
            let mut best = None;
            if !self.subdomain.is_empty() {
                // Candidate suffixes start after each dot; the part before the dot must be glob
                // characters, so stop at the first byte that is not one.
                for (i, &b) in h.as_bytes().iter().enumerate() {
                    if b == b'.' && i > 0 {
                        let cand = self.subdomain.get(&h[i + 1..]);
                        self.keep_better(&mut best, cand.and_then(|v| self.first_in(v, q)));
                    } else if !is_glob_char(b) {
                        break;
                    }
                }
            }
            for &g in &self.globs {
                if let Some(b) = best {
                    if !better((self.specs[g as usize], g), (self.specs[b as usize], b)) {
                        break; // sorted best first: nothing further can win
                    }
                }
                let p = &self.patterns[g as usize];
                if q.accepts(p.port()) && p.matches_target(Some(h), None) {
                    best = Some(g);
                    break;
                }
            }
            if let Some(i) = best {
                return Some(self.hit(i));
            }
        }
        if !self.v4.is_empty() || !self.v6.is_empty() {
            let mut best = None;
            let host_ip = host.and_then(|h| h.parse::<IpAddr>().ok());
            for addr in [ip, host_ip].into_iter().flatten() {
                self.keep_better(&mut best, self.lookup_ip(canonical_ip(addr), q));
            }
            if let Some(i) = best {
                return Some(self.hit(i));
            }
        }
        self.first_in(&self.any, q).map(|i| self.hit(i))
    }

    fn lookup_ip(&self, ip: IpAddr, q: PortQuery) -> Option<u32> {
        match ip {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                self.v4
                    .iter()
                    .find_map(|(len, m)| m.get(&mask4(a, *len)).and_then(|b| self.first_in(b, q)))
            }
            IpAddr::V6(v6) => {
                let a = u128::from(v6);
                self.v6
                    .iter()
                    .find_map(|(len, m)| m.get(&mask6(a, *len)).and_then(|b| self.first_in(b, q)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(srcs: &[&str]) -> HostSet {
        HostSet::compile(srcs).unwrap()
    }

    fn idx(s: &HostSet, host: &str, port: u16) -> Option<usize> {
        s.find(&Destination::host(host, port)).map(|m| m.index)
    }

    fn idx_ip(s: &HostSet, ip: &str, port: u16) -> Option<usize> {
        s.find(&Destination::ip(ip.parse().unwrap(), port))
            .map(|m| m.index)
    }

    #[test]
    fn most_specific_wins_across_classes() {
        let s = set(&[
            "*",
            "10.0.0.0/8",
            "*.example.com",
            "api.example.com",
            "*.api.example.com",
            "api-*.example.com",
        ]);
        assert_eq!(idx(&s, "api.example.com", 443), Some(3));
        assert_eq!(idx(&s, "x.api.example.com", 443), Some(4));
        assert_eq!(idx(&s, "api-2.example.com", 443), Some(5));
        assert_eq!(idx(&s, "www.example.com", 443), Some(2));
        assert_eq!(idx(&s, "other.test", 443), Some(0));
        assert_eq!(idx_ip(&s, "10.1.1.1", 22), Some(1));
        assert_eq!(idx_ip(&s, "11.1.1.1", 22), Some(0));
        assert_eq!(idx(&s, "10.1.1.1", 22), Some(1));
    }

    #[test]
    fn longer_prefix_wins_and_ports_break_ties() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/16:22", "10.1.2.3"]);
        assert_eq!(idx_ip(&s, "10.1.2.3", 80), Some(3));
        assert_eq!(idx_ip(&s, "10.1.2.4", 22), Some(2));
        assert_eq!(idx_ip(&s, "10.1.2.4", 80), Some(1));
        assert_eq!(idx_ip(&s, "10.2.0.1", 22), Some(0));
        assert_eq!(idx_ip(&s, "::ffff:10.2.0.1", 22), Some(0));
        let s = set(&["fd00::/8", "fd00::/64", "[fd00::/64]:443"]);
        assert_eq!(idx_ip(&s, "fd00::1", 443), Some(2));
        assert_eq!(idx_ip(&s, "fd00::1", 80), Some(1));
        assert_eq!(idx_ip(&s, "fd01::1", 80), Some(0));
        assert_eq!(idx_ip(&s, "10.0.0.1", 80), None);
    }

    #[test]
    fn port_specific_beats_portless_and_ties_go_to_earlier() {
        let s = set(&[
            "a.test",
            "a.test:443",
            "a.test:400-500",
            "a.test:443",
            "A.test.",
        ]);
        assert_eq!(idx(&s, "a.test", 443), Some(1));
        assert_eq!(idx(&s, "a.test", 450), Some(2));
        assert_eq!(idx(&s, "a.test", 80), Some(0));
        let s = set(&["*.test", "*.test:443"]);
        assert_eq!(idx(&s, "a.test", 443), Some(1));
        assert_eq!(idx(&s, "a.test", 80), Some(0));
        let s = set(&["*:443", "*"]);
        assert_eq!(idx(&s, "a.test", 443), Some(0));
        assert_eq!(idx(&s, "a.test", 80), Some(1));
    }

    #[test]
    fn longer_glob_literal_wins() {
        let s = set(&["*.test", "*.b.test", "a*.test", "*-x.b.test"]);
        assert_eq!(idx(&s, "q.b.test", 1), Some(1));
        assert_eq!(idx(&s, "q-x.b.test", 1), Some(3));
        assert_eq!(idx(&s, "ab.test", 1), Some(2));
        assert_eq!(idx(&s, "zz.test", 1), Some(0));
        assert_eq!(idx(&s, "test", 1), None);
    }

    #[test]
    fn subdomain_walk_stops_at_non_glob_bytes() {
        let s = set(&["*.test"]);
        assert_eq!(idx(&s, "a!b.test", 1), None);
        assert_eq!(idx(&s, "A.test", 1), None);
        assert_eq!(idx(&s, ".test", 1), None);
        assert_eq!(idx(&s, "x.y.test", 1), Some(0));
    }

    #[test]
    fn any_port_and_every_port_queries() {
        let s = set(&["db.test:5432", "*.all.test", "r.test:1-65535"]);
        assert_eq!(s.find_any_port("db.test").map(|m| m.index), Some(0));
        assert_eq!(s.find_every_port("db.test").map(|m| m.index), None);
        assert_eq!(s.find_every_port("x.all.test").map(|m| m.index), Some(1));
        assert_eq!(s.find_every_port("r.test").map(|m| m.index), Some(2));
        assert!(s.find_any_port("nothing.test").is_none());
        assert!(s.matches_any_port("db.test"));
        assert!(!s.matches_any_port("nothing.test"));
    }

    #[test]
    fn empty_set_matches_nothing() {
        let s = HostSet::default();
        assert!(s.is_empty());
        assert_eq!(idx(&s, "a", 1), None);
        assert_eq!(idx_ip(&s, "10.0.0.1", 1), None);
    }

    #[test]
    fn compile_reports_every_bad_pattern() {
        let errs = HostSet::compile(&["ok.test", "a..b", "x:0"]).unwrap_err();
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn ten_thousand_exact_names() {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("host{i}.example.test"))
            .collect();
        let s = HostSet::compile(&names).unwrap();
        for i in [0usize, 1, 4999, 9999] {
            assert_eq!(idx(&s, &names[i], 443), Some(i));
        }
        assert_eq!(idx(&s, "host10000.example.test", 443), None);
    }
}

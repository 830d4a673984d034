//! Which addresses are public. egret dials an address outside the public internet for a
//! sandbox only when the operator allowed that address: otherwise any name under an allowed
//! wildcard (a tenant subdomain, a CNAME, a rebinding DNS server) could lead the sandbox into
//! the operator's own network.
//!
//! The ranges are those of the IANA IPv4 and IPv6 special-purpose address registries that are
//! not globally reachable, plus the IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4),
//! which are judged by the address they embed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A range of addresses egret does not dial for a sandbox unless the operator allowed it.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecialRange {
    /// The range as written in the registry, e.g. `10.0.0.0/8`.
    pub cidr: &'static str,
    /// What the range is, e.g. `private (RFC 1918)`.
    pub what: &'static str,
    /// Addresses of the egret host itself or of its link (loopback, link-local, multicast,
    /// broadcast, "this network"): only `allowed_upstream_cidrs` or a pin allow them, not a
    /// CIDR in `allowed_hosts` (a wide CIDR such as `0.0.0.0/0` must not open the metadata
    /// service or the host's own ports).
    pub local: bool,
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.what, self.cidr)
    }
}

const fn r(cidr: &'static str, what: &'static str, local: bool) -> SpecialRange {
    SpecialRange { cidr, what, local }
}

/// IPv4: (network, prefix length, range). Most specific first where ranges nest.
static V4: &[(u32, u8, SpecialRange)] = &[
    (0xffff_ffff, 32, r("255.255.255.255/32", "broadcast", true)),
    (0x0000_0000, 8, r("0.0.0.0/8", "\"this network\"", true)),
    (0x0a00_0000, 8, r("10.0.0.0/8", "private (RFC 1918)", false)),
    (
        0x6440_0000,
        10,
        r(
            "100.64.0.0/10",
            "shared address space (CGNAT, RFC 6598)",
            false,
        ),
    ),
    (0x7f00_0000, 8, r("127.0.0.0/8", "loopback", true)),
    (0xa9fe_0000, 16, r("169.254.0.0/16", "link-local", true)),
    (
        0xac10_0000,
        12,
        r("172.16.0.0/12", "private (RFC 1918)", false),
    ),
    (
        0xc000_0000,
        24,
        r("192.0.0.0/24", "IETF protocol assignments", false),
    ),
    (
        0xc000_0200,
        24,
        r("192.0.2.0/24", "documentation (TEST-NET-1)", false),
    ),
    (
        0xc058_6300,
        24,
        r("192.88.99.0/24", "6to4 relay anycast (deprecated)", false),
    ),
    (
        0xc0a8_0000,
        16,
        r("192.168.0.0/16", "private (RFC 1918)", false),
    ),
    (
        0xc612_0000,
        15,
        r("198.18.0.0/15", "benchmarking (RFC 2544)", false),
    ),
    (
        0xc633_6400,
        24,
        r("198.51.100.0/24", "documentation (TEST-NET-2)", false),
    ),
    (
        0xcb00_7100,
        24,
        r("203.0.113.0/24", "documentation (TEST-NET-3)", false),
    ),
    (0xe000_0000, 4, r("224.0.0.0/4", "multicast", true)),
    (0xf000_0000, 4, r("240.0.0.0/4", "reserved", false)),
];

/// How an IPv6 range is judged.
enum V6Rule {
    /// Non-public as a whole.
    Range(SpecialRange),
    /// Judged by the IPv4 address in its last 32 bits (IPv4-mapped, NAT64 well-known prefix).
    EmbedsLow32,
    /// 6to4 (`2002::/16`): judged by the IPv4 address in bits 16..48.
    Embeds6to4,
}

/// IPv6: (network, prefix length, rule). Most specific first where ranges nest.
static V6: &[(u128, u8, V6Rule)] = &[
    (0, 128, V6Rule::Range(r("::/128", "unspecified", true))),
    (1, 128, V6Rule::Range(r("::1/128", "loopback", true))),
    (0xffff_0000_0000, 96, V6Rule::EmbedsLow32),
    (
        0,
        96,
        V6Rule::Range(r("::/96", "IPv4-compatible IPv6 (deprecated)", false)),
    ),
    (0x0064_ff9b << 96, 96, V6Rule::EmbedsLow32),
    (
        0x0064_ff9b_0001 << 80,
        48,
        V6Rule::Range(r("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)", false)),
    ),
    (
        0x0100 << 112,
        64,
        V6Rule::Range(r("100::/64", "discard-only (RFC 6666)", false)),
    ),
    (
        0x2001_0db8 << 96,
        32,
        V6Rule::Range(r("2001:db8::/32", "documentation", false)),
    ),
    (
        0x2001 << 112,
        23,
        V6Rule::Range(r("2001::/23", "IETF protocol assignments", false)),
    ),
    (0x2002 << 112, 16, V6Rule::Embeds6to4),
    (
        0x3fff << 112,
        20,
        V6Rule::Range(r("3fff::/20", "documentation (RFC 9637)", false)),
    ),
    (
        0x5f00 << 112,
        16,
        V6Rule::Range(r("5f00::/16", "SRv6 SIDs (RFC 9602)", false)),
    ),
    (
        0xfc00 << 112,
        7,
        V6Rule::Range(r("fc00::/7", "unique local (ULA)", false)),
    ),
    (
        0xfe80 << 112,
        10,
        V6Rule::Range(r("fe80::/10", "link-local", true)),
    ),
    (
        0xfec0 << 112,
        10,
        V6Rule::Range(r("fec0::/10", "site-local (deprecated)", false)),
    ),
    (
        0xff00 << 112,
        8,
        V6Rule::Range(r("ff00::/8", "multicast", true)),
    ),
];

fn in_v4(ip: u32, net: u32, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == net
}

fn in_v6(ip: u128, net: u128, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    ip & mask == net
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static SpecialRange> {
    let ip = u32::from(ip);
    V4.iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, range)| range)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static SpecialRange> {
    let bits = u128::from(ip);
    let (_, _, rule) = V6.iter().find(|(net, len, _)| in_v6(bits, *net, *len))?;
    match rule {
        V6Rule::Range(range) => Some(range),
        V6Rule::EmbedsLow32 => special_v4(Ipv4Addr::from(bits as u32)),
        V6Rule::Embeds6to4 => special_v4(Ipv4Addr::from((bits >> 80) as u32)),
    }
}

/// The non-public range `ip` is in, or `None` for a public address. IPv6 forms that embed an
/// IPv4 address (`::ffff:10.0.0.1`, `64:ff9b::a00:1`, `2002:a00:1::`) are judged by that
/// address.
pub fn special_range(ip: IpAddr) -> Option<&'static SpecialRange> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Option<&'static str> {
        special_range(s.parse().unwrap()).map(|r| r.cidr)
    }

    #[test]
    fn private_and_reserved_ipv4() {
        for (ip, want) in [
            ("10.231.0.2", "10.0.0.0/8"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.127.255.255", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("0.0.0.0", "0.0.0.0/8"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("255.255.255.255", "255.255.255.255/32"),
            ("240.0.0.1", "240.0.0.0/4"),
            ("192.0.2.7", "192.0.2.0/24"),
            ("198.51.100.7", "198.51.100.0/24"),
            ("203.0.113.7", "203.0.113.0/24"),
            ("198.18.0.1", "198.18.0.0/15"),
            ("198.19.255.1", "198.18.0.0/15"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.88.99.1", "192.88.99.0/24"),
        ] {
            assert_eq!(cidr(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_stays_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "11.200.0.2",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(cidr(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        for (ip, want) in [
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("fd00:200::2", "fc00::/7"),
            ("fc00::1", "fc00::/7"),
            ("fe80::1", "fe80::/10"),
            ("fec0::1", "fec0::/10"),
            ("ff02::1", "ff00::/8"),
            ("2001:db8::1", "2001:db8::/32"),
            ("2001::1", "2001::/23"),
            ("100::1", "100::/64"),
            ("64:ff9b:1::1", "64:ff9b:1::/48"),
            ("3fff::1", "3fff::/20"),
            ("5f00::1", "5f00::/16"),
            ("::10.0.0.1", "::/96"),
            // embedded IPv4: judged by the address inside
            ("::ffff:10.231.0.2", "10.0.0.0/8"),
            ("::ffff:127.0.0.1", "127.0.0.0/8"),
            ("::ffff:169.254.169.254", "169.254.0.0/16"),
            ("64:ff9b::10.1.2.3", "10.0.0.0/8"),
            ("64:ff9b::a9fe:a9fe", "169.254.0.0/16"),
            ("2002:c0a8:0101::1", "192.168.0.0/16"),
            ("2002:7f00:1::", "127.0.0.0/8"),
        ] {
            assert_eq!(cidr(ip), Some(want), "{ip}");
        }
        for ip in [
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:0101:0101::1",
        ] {
            assert_eq!(cidr(ip), None, "{ip}");
        }
    }

    #[test]
    fn loopback_link_local_and_multicast_are_local() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(special_range(ip.parse().unwrap()).unwrap().local, "{ip}");
        }
        for ip in ["10.0.0.1", "100.64.0.1", "fd00::1", "192.0.2.1"] {
            assert!(!special_range(ip.parse().unwrap()).unwrap().local, "{ip}");
        }
    }

    #[test]
    fn the_tables_are_well_formed() {
        for (net, len, range) in V4 {
            let (addr, plen) = range.cidr.split_once('/').unwrap();
            assert_eq!(
                u32::from(addr.parse::<Ipv4Addr>().unwrap()),
                *net,
                "{}",
                range.cidr
            );
            assert_eq!(plen.parse::<u8>().unwrap(), *len, "{}", range.cidr);
            assert!(in_v4(*net, *net, *len));
        }
        for (net, len, rule) in V6 {
            if let V6Rule::Range(range) = rule {
                let (addr, plen) = range.cidr.split_once('/').unwrap();
                assert_eq!(
                    u128::from(addr.parse::<Ipv6Addr>().unwrap()),
                    *net,
                    "{}",
                    range.cidr
                );
                assert_eq!(plen.parse::<u8>().unwrap(), *len, "{}", range.cidr);
            }
            assert!(in_v6(*net, *net, *len));
        }
    }

    proptest! {
        #[test]
        fn mapped_ipv6_is_judged_like_its_ipv4(a in any::<u32>()) {
            let v4 = Ipv4Addr::from(a);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(special_range(IpAddr::V4(v4)), special_range(mapped));
        }

        #[test]
        fn every_rfc1918_address_is_private(a in any::<u32>()) {
            let v4 = Ipv4Addr::from(a);
            if v4.is_private() {
                prop_assert_eq!(special_range(IpAddr::V4(v4)).map(|r| r.what), Some("private (RFC 1918)"));
            }
            if v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast() {
                prop_assert!(special_range(IpAddr::V4(v4)).unwrap().local);
            }
        }

        #[test]
        fn every_ula_and_link_local_v6_is_special(a in any::<u128>()) {
            let v6 = Ipv6Addr::from(a);
            if v6.is_unique_local() || v6.is_unicast_link_local() || v6.is_multicast() || v6.is_loopback() {
                prop_assert!(special_range(IpAddr::V6(v6)).is_some());
            }
        }
    }
}

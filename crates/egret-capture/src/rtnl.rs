//! Links, addresses, routes and rules over rtnetlink, from the calling thread.
//!
//! A netlink socket belongs to the network namespace of the thread that opens it, so the
//! thread inside the sandbox namespace talks to the sandbox's kernel tables directly: no `ip`
//! process (1–2 ms each, and following the host's load), no runtime and no thread (the
//! `egret exec` helper calls this single-threaded after `fork()`). One request is one round
//! trip; the kernel answers before `send` returns.
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;

/// The kernel's main routing table (`RT_TABLE_MAIN`), where `ip route` looks by default.
pub(crate) const MAIN_TABLE: u32 = 254;

/// IPv4 or IPv6: the two families egret installs rules and routes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    fn af(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }

    /// `-4` / `-6`, as in the `ip` command the error messages show.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// `ip rule … fwmark MARK/MASK lookup TABLE pref PREF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FwmarkRule {
    pub mark: u32,
    pub mask: u32,
    pub table: u32,
    pub pref: u32,
}

/// A network device: its index and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
}

/// A route-table header field holds 8 bits; larger table ids go in `RTA_TABLE` only.
fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(0)
}

/// `ip link set INDEX up`.
pub(crate) fn link_up(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// `ip link add NAME type veth peer name PEER`.
pub(crate) fn veth_pair(name: &str, peer: &str) -> RouteNetlinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes.push(LinkAttribute::IfName(peer.into()));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// `ip link del INDEX` (a veth's peer goes with it, and every route through either).
pub(crate) fn link_del(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    RouteNetlinkMessage::DelLink(m)
}

/// `ip addr replace ADDR/LEN dev INDEX` (`nodad` for IPv6: the address must be usable at
/// once, and there is nobody on the other end to collide with).
pub(crate) fn address(index: u32, addr: IpAddr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.header.scope = AddressScope::Universe;
    if addr.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    RouteNetlinkMessage::NewAddress(m)
}

/// A default route (`0.0.0.0/0` or `::/0`) of `kind` through device `oif` in `table`.
/// Deleting takes scope `nowhere`, which matches a route of any scope (as `ip route del`).
fn default_route(
    family: Family,
    kind: RouteType,
    oif: u32,
    table: u32,
    delete: bool,
) -> RouteMessage {
    let scope = match (delete, kind) {
        (true, _) => RouteScope::NoWhere,
        (false, RouteType::Local) => RouteScope::Host,
        // No gateway: the destination is on the link, as `ip route` decides.
        (false, _) => RouteScope::Link,
    };
    let mut m = RouteMessage::default();
    m.header.address_family = family.af();
    m.header.destination_prefix_length = 0;
    m.header.table = table_byte(table);
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = scope;
    m.header.kind = kind;
    m.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(oif)];
    m
}

/// `ip route replace default dev OIF` in the main table.
pub(crate) fn default_via(family: Family, oif: u32) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRoute(default_route(
        family,
        RouteType::Unicast,
        oif,
        MAIN_TABLE,
        false,
    ))
}

/// `ip route replace|del local default dev LO table TABLE`: turns marked packets around.
pub(crate) fn local_default(
    family: Family,
    lo: u32,
    table: u32,
    delete: bool,
) -> RouteNetlinkMessage {
    let m = default_route(family, RouteType::Local, lo, table, delete);
    if delete {
        RouteNetlinkMessage::DelRoute(m)
    } else {
        RouteNetlinkMessage::NewRoute(m)
    }
}

/// `ip rule add|del fwmark MARK/MASK lookup TABLE pref PREF`.
pub(crate) fn fwmark_rule(family: Family, r: FwmarkRule, delete: bool) -> RouteNetlinkMessage {
    let mut m = RuleMessage::default();
    m.header.family = family.af();
    m.header.table = table_byte(r.table);
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::FwMark(r.mark),
        RuleAttribute::FwMask(r.mask),
        RuleAttribute::Priority(r.pref),
        RuleAttribute::Table(r.table),
    ];
    if delete {
        RouteNetlinkMessage::DelRule(m)
    } else {
        RouteNetlinkMessage::NewRule(m)
    }
}

/// Whether a dumped route is a default route of the main table (what `ip route show default`
/// lists).
fn is_main_default(r: &RouteMessage) -> bool {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    table == MAIN_TABLE && r.header.destination_prefix_length == 0
}

fn link_of(m: &LinkMessage) -> Option<Link> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(Link {
            index: m.header.index,
            name: n.clone(),
        }),
        _ => None,
    })
}

/// The netlink flags for a change: create, and replace what is there or refuse if it exists.
pub(crate) enum Create {
    /// `ip … add`: fails with EEXIST if it exists.
    Exclusive,
    /// `ip … replace`.
    Replace,
    /// Deletions and `link set`.
    No,
}

/// A route netlink socket in the calling thread's network namespace.
pub(crate) struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    pub(crate) fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // The kernel answers at once; the timeout only guards against a reply that never comes.
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: vec![0; 32 << 10],
        })
    }

    /// Send `msg` with `flags` and hand every message of the answer to `each` until the
    /// acknowledgement (or the end of a dump); a refusal is the kernel's errno.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let reply = <NetlinkMessage<RouteNetlinkMessage>>::deserialize(&self.buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(()),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }

    /// Make a change; `Ok` once the kernel acknowledged it.
    pub(crate) fn change(&mut self, msg: RouteNetlinkMessage, create: Create) -> io::Result<()> {
        let flags = NLM_F_ACK
            | match create {
                Create::Exclusive => NLM_F_CREATE | NLM_F_EXCL,
                Create::Replace => NLM_F_CREATE | NLM_F_REPLACE,
                Create::No => 0,
            };
        self.exchange(msg, flags, |_| {})
    }

    /// Every network device of the namespace.
    pub(crate) fn links(&mut self) -> io::Result<Vec<Link>> {
        let mut out = Vec::new();
        let req = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.exchange(req, NLM_F_DUMP, |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                out.extend(link_of(&l));
            }
        })?;
        Ok(out)
    }

    /// The device called `name`.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Link> {
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.into()));
        let mut found = None;
        self.exchange(RouteNetlinkMessage::GetLink(req), NLM_F_ACK, |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                found = link_of(&l);
            }
        })?;
        found.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Whether the main table of `family` has a default route.
    pub(crate) fn has_default_route(&mut self, family: Family) -> io::Result<bool> {
        let mut req = RouteMessage::default();
        req.header.address_family = family.af();
        let mut found = false;
        self.exchange(RouteNetlinkMessage::GetRoute(req), NLM_F_DUMP, |m| {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                found |= is_main_default(&r);
            }
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn bytes(m: &RouteNetlinkMessage) -> Vec<u8> {
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    const RULE: FwmarkRule = FwmarkRule {
        mark: 1,
        mask: 0xff,
        table: 100,
        pref: 100,
    };

    #[test]
    fn the_fwmark_rule_names_mark_mask_table_and_priority() {
        let RouteNetlinkMessage::NewRule(m) = fwmark_rule(Family::V6, RULE, false) else {
            panic!("not a new rule")
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.action, RuleAction::ToTable);
        assert_eq!(m.header.table, 100);
        for a in [
            RuleAttribute::FwMark(1),
            RuleAttribute::FwMask(0xff),
            RuleAttribute::Priority(100),
            RuleAttribute::Table(100),
        ] {
            assert!(m.attributes.contains(&a), "{a:?} missing");
        }
        // Deleting names the same rule.
        let RouteNetlinkMessage::DelRule(d) = fwmark_rule(Family::V6, RULE, true) else {
            panic!("not a rule deletion")
        };
        assert_eq!(d, m);
    }

    #[test]
    fn large_table_ids_go_in_the_attribute_only() {
        let big = FwmarkRule {
            table: 1000,
            ..RULE
        };
        let RouteNetlinkMessage::NewRule(m) = fwmark_rule(Family::V4, big, false) else {
            panic!()
        };
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RuleAttribute::Table(1000)));
        let RouteNetlinkMessage::NewRoute(r) = local_default(Family::V4, 1, 1000, false) else {
            panic!()
        };
        assert_eq!(r.header.table, 0);
        assert!(r.attributes.contains(&RouteAttribute::Table(1000)));
    }

    #[test]
    fn the_local_route_is_a_host_scoped_local_default_through_lo() {
        let RouteNetlinkMessage::NewRoute(r) = local_default(Family::V4, 1, 100, false) else {
            panic!()
        };
        assert_eq!(r.header.kind, RouteType::Local);
        assert_eq!(r.header.scope, RouteScope::Host);
        assert_eq!(r.header.destination_prefix_length, 0);
        assert!(r.attributes.contains(&RouteAttribute::Oif(1)));
        let RouteNetlinkMessage::DelRoute(d) = local_default(Family::V4, 1, 100, true) else {
            panic!()
        };
        assert_eq!(d.header.scope, RouteScope::NoWhere);
        assert_eq!(d.header.kind, RouteType::Local);
        let RouteNetlinkMessage::NewRoute(v) = default_via(Family::V6, 7) else {
            panic!()
        };
        assert_eq!(v.header.address_family, AddressFamily::Inet6);
        assert_eq!(v.header.kind, RouteType::Unicast);
        assert_eq!(v.header.table, 254);
        assert!(v.attributes.contains(&RouteAttribute::Oif(7)));
    }

    #[test]
    fn ipv6_addresses_skip_duplicate_detection() {
        let RouteNetlinkMessage::NewAddress(a) = address(3, "fd00::1".parse().unwrap(), 128) else {
            panic!()
        };
        assert_eq!(a.header.flags, AddressHeaderFlags::Nodad);
        assert_eq!(a.header.prefix_len, 128);
        assert_eq!(a.header.index, 3);
        let RouteNetlinkMessage::NewAddress(a) = address(3, "169.254.42.1".parse().unwrap(), 32)
        else {
            panic!()
        };
        assert_eq!(a.header.flags, AddressHeaderFlags::empty());
        assert_eq!(a.header.family, AddressFamily::Inet);
    }

    #[test]
    fn the_veth_request_names_both_ends() {
        let b = bytes(&veth_pair("egret-bh0", "egret-bh1"));
        let find = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"egret-bh0\0"));
        assert!(find(b"egret-bh1\0"));
        assert!(find(b"veth"));
    }

    #[test]
    fn only_main_table_default_routes_count() {
        let route = |table: u32, len: u8| {
            let mut m = RouteMessage::default();
            m.header.destination_prefix_length = len;
            m.header.table = table_byte(table);
            m.attributes = vec![RouteAttribute::Table(table)];
            m
        };
        assert!(is_main_default(&route(254, 0)));
        assert!(!is_main_default(&route(254, 8)));
        assert!(!is_main_default(&route(100, 0)));
        let mut no_attr = route(254, 0);
        no_attr.attributes.clear();
        assert!(is_main_default(&no_attr));
    }
}

//! The pure answer function: one query in, one response out (or nothing), no I/O.
use crate::map::truncate;
use crate::{DnsConfig, NameDecision, NamePolicy, SyntheticMap};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const EDNS_PAYLOAD: u16 = 1232;

fn base_response(id: u16, op: OpCode, rd: bool, rc: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(op)
        .set_recursion_desired(rd)
        .set_recursion_available(true)
        .set_response_code(rc);
    m
}

/// A FORMERR built from the raw header when the rest does not parse.
fn formerr_from_raw(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None; // no header, or a response: never answer those (no reflection loops)
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let rd = query[2] & 0x01 != 0;
    base_response(id, OpCode::Query, rd, ResponseCode::FormErr).to_vec().ok()
}

/// Lower case, no trailing dot.
fn normalize(name: &Name) -> String {
    let s = name.to_lowercase().to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_string()
}

/// The name a PTR query for one of our synthetic addresses asks about, if it is one.
fn ptr_target(name: &str, map: &SyntheticMap) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut parts: Vec<u8> = Vec::with_capacity(4);
        for p in rest.split('.').rev() {
            parts.push(p.parse().ok()?);
        }
        if parts.len() != 4 {
            return None;
        }
        let ip = IpAddr::V4(Ipv4Addr::new(parts[0], parts[1], parts[2], parts[3]));
        return map.is_synthetic(ip).then_some(ip);
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').rev().collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut x: u128 = 0;
        for n in nibbles {
            x = (x << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
        }
        let ip = IpAddr::V6(Ipv6Addr::from(x));
        return map.is_synthetic(ip).then_some(ip);
    }
    None
}

/// Answer one DNS query. `None` means drop it (not a query at all, or a response).
pub fn answer(
    query: &[u8],
    map: &SyntheticMap,
    policy: &dyn NamePolicy,
    cfg: &DnsConfig,
) -> Option<Vec<u8>> {
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return formerr_from_raw(query),
    };
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let id = msg.id();
    let rd = msg.recursion_desired();
    let edns = msg.extensions().is_some();
    let finish = |mut m: Message| {
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            m.set_edns(e);
        }
        m.to_vec().ok()
    };
    if msg.op_code() != OpCode::Query {
        return finish(base_response(id, msg.op_code(), rd, ResponseCode::NotImp));
    }
    if msg.queries().len() != 1 {
        return finish(base_response(id, OpCode::Query, rd, ResponseCode::FormErr));
    }
    let q: &Query = &msg.queries()[0];
    let mut resp = base_response(id, OpCode::Query, rd, ResponseCode::NoError);
    resp.add_query(q.clone());
    if q.query_class() != DNSClass::IN {
        resp.set_response_code(ResponseCode::Refused);
        return finish(resp);
    }
    let name = normalize(q.name());
    let qtype = q.query_type();
    let ttl = cfg.ttl.as_secs().min(u64::from(u32::MAX)) as u32;
    // localhost never leaves the sandbox and needs no policy.
    if name == "localhost" || name.ends_with(".localhost") {
        match qtype {
            RecordType::A => {
                resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::A(A(Ipv4Addr::LOCALHOST))));
            }
            RecordType::AAAA => {
                resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))));
            }
            _ => {}
        }
        return finish(resp);
    }
    if qtype == RecordType::PTR {
        if let Some(ip) = ptr_target(&name, map) {
            if let Some(target) = map.lookup(ip) {
                if let Ok(n) = Name::from_ascii(format!("{target}.")) {
                    resp.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::PTR(PTR(n))));
                }
                return finish(resp);
            }
        }
        resp.set_response_code(ResponseCode::NXDomain);
        return finish(resp);
    }
    match policy.decide(&name) {
        NameDecision::NxDomain { rule } => {
            tracing::info!(name = %truncate(&name), qtype = %qtype, decision = "nxdomain", rule = %rule, "dns");
            resp.set_response_code(ResponseCode::NXDomain);
        }
        NameDecision::Answer => {
            // Only A/AAAA get addresses; every other type (TXT, MX, HTTPS/SVCB, ...) is NODATA,
            // so nothing (no h3/ECH hints, no data channel) comes back but an address.
            match qtype {
                RecordType::A | RecordType::AAAA => {
                    let (v4, v6) = map.assign(&name);
                    let rdata = if qtype == RecordType::A {
                        RData::A(A(v4))
                    } else {
                        RData::AAAA(AAAA(v6))
                    };
                    resp.add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
                    tracing::debug!(name = %truncate(&name), qtype = %qtype, decision = "answer", "dns");
                }
                _ => {
                    tracing::debug!(name = %truncate(&name), qtype = %qtype, decision = "nodata", "dns");
                }
            }
        }
    }
    finish(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    struct Policy;
    impl NamePolicy for Policy {
        fn decide(&self, name: &str) -> NameDecision {
            if name.ends_with("denied.test") {
                NameDecision::NxDomain { rule: Arc::from("denied_hosts \"denied.test\"") }
            } else {
                NameDecision::Answer
            }
        }
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0xbeef).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    fn ask(q: &[u8], map: &SyntheticMap) -> Message {
        Message::from_vec(&answer(q, map, &Policy, &DnsConfig::default()).unwrap()).unwrap()
    }

    #[test]
    fn a_and_aaaa_get_stable_synthetic_addresses() {
        let map = SyntheticMap::new(DnsConfig::default());
        let r = ask(&query("API.Test.", RecordType::A, false), &map);
        assert_eq!(r.id(), 0xbeef);
        assert!(r.recursion_desired() && r.recursion_available());
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(r.queries().len(), 1);
        let a = match r.answers()[0].data() {
            RData::A(a) => a.0,
            other => panic!("{other:?}"),
        };
        assert_eq!(map.lookup(a.into()).as_deref(), Some("api.test"));
        let r2 = ask(&query("api.test", RecordType::A, false), &map);
        assert_eq!(r2.answers()[0].data(), &RData::A(A(a)));
        let r6 = ask(&query("api.test", RecordType::AAAA, true), &map);
        assert!(matches!(r6.answers()[0].data(), RData::AAAA(_)));
        assert!(r6.extensions().is_some(), "EDNS not echoed");
        assert_eq!(r.answers()[0].ttl(), 5);
    }

    #[test]
    fn denied_names_get_nxdomain_and_no_address() {
        let map = SyntheticMap::new(DnsConfig::default());
        let r = ask(&query("x.denied.test", RecordType::A, false), &map);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert!(r.answers().is_empty());
        assert!(map.is_empty());
    }

    #[test]
    fn other_types_are_nodata() {
        let map = SyntheticMap::new(DnsConfig::default());
        for t in [RecordType::TXT, RecordType::MX, RecordType::ANY, RecordType::HTTPS, RecordType::SVCB, RecordType::SRV] {
            let r = ask(&query("api.test", t, false), &map);
            assert_eq!(r.response_code(), ResponseCode::NoError, "{t}");
            assert!(r.answers().is_empty(), "{t}");
        }
    }

    #[test]
    fn ptr_for_synthetic_addresses_and_localhost() {
        let map = SyntheticMap::new(DnsConfig::default());
        map.assign("api.test");
        let r = ask(&query("1.0.18.198.in-addr.arpa.", RecordType::PTR, false), &map);
        assert_eq!(r.answers()[0].data(), &RData::PTR(PTR(Name::from_ascii("api.test.").unwrap())));
        let r = ask(&query("9.9.9.9.in-addr.arpa.", RecordType::PTR, false), &map);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        let r = ask(&query("localhost.", RecordType::A, false), &map);
        assert_eq!(r.answers()[0].data(), &RData::A(A(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn malformed_and_odd_queries() {
        let map = SyntheticMap::new(DnsConfig::default());
        // class CH -> REFUSED
        let mut m = Message::new();
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        assert_eq!(ask(&m.to_vec().unwrap(), &map).response_code(), ResponseCode::Refused);
        // no question / two questions -> FORMERR
        let m = Message::new();
        assert_eq!(ask(&m.to_vec().unwrap(), &map).response_code(), ResponseCode::FormErr);
        let mut m = Message::new();
        m.add_query(Query::query(Name::from_ascii("a.test.").unwrap(), RecordType::A));
        m.add_query(Query::query(Name::from_ascii("b.test.").unwrap(), RecordType::A));
        assert_eq!(ask(&m.to_vec().unwrap(), &map).response_code(), ResponseCode::FormErr);
        // truncated packet with a header -> FORMERR with the id; shorter -> dropped
        let full = query("api.test", RecordType::A, false);
        let r = Message::from_vec(&answer(&full[..14], &map, &Policy, &DnsConfig::default()).unwrap()).unwrap();
        assert_eq!((r.id(), r.response_code()), (0xbeef, ResponseCode::FormErr));
        assert!(answer(&full[..5], &map, &Policy, &DnsConfig::default()).is_none());
        // a response is never answered
        let mut resp = Message::new();
        resp.set_message_type(MessageType::Response);
        assert!(answer(&resp.to_vec().unwrap(), &map, &Policy, &DnsConfig::default()).is_none());
        // opcode other than QUERY -> NOTIMP
        let mut m = Message::from_vec(&full).unwrap();
        m.set_op_code(OpCode::Status);
        assert_eq!(ask(&m.to_vec().unwrap(), &map).response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn long_names() {
        let map = SyntheticMap::new(DnsConfig::default());
        let label = "a".repeat(63);
        let name = format!("{label}.{label}.{label}.{}.", "b".repeat(61)); // 253 chars
        let r = ask(&query(&name, RecordType::A, false), &map);
        assert_eq!(r.answers().len(), 1);
        assert!(Name::from_ascii(format!("{label}.{label}.{label}.{label}.{label}.")).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let map = SyntheticMap::new(DnsConfig::default());
            let _ = answer(&data, &map, &Policy, &DnsConfig::default());
        }
    }
}

//! The pure answer function: one query in, one response out (or nothing), no I/O.
//!
//! Order of checks, cheapest first, so garbage costs little: no header → drop; a response →
//! drop (never answer answers: no reflection loops); opcode ≠ QUERY → NOTIMP; qdcount ≠ 1 or
//! record counts the packet cannot hold → FORMERR (before hickory allocates for them); then the
//! full parse (failure → FORMERR), EDNS version, class, name, type, policy.
use crate::name::{log_name, normalize_labels, NameError};
use crate::{DnsConfig, NameDecision, NamePolicy, SyntheticMap};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The UDP payload size we advertise (the DNS flag day 2020 value: no IP fragmentation).
const EDNS_PAYLOAD: u16 = 1232;
/// The UDP response limit without EDNS (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;
const HEADER_LEN: usize = 12;
/// Smallest question on the wire: root name, type, class.
const MIN_QUESTION_LEN: usize = 5;
/// Smallest resource record on the wire: root name, type, class, TTL, rdlength.
const MIN_RECORD_LEN: usize = 11;
/// The rule logged for names refused for their syntax alone (no policy rule was consulted).
const SYNTAX_RULE: &str = "name syntax";

/// Answer one DNS query from the sandbox. `None` means drop it: fewer than 12 bytes, a
/// response rather than a query, or a response that could not be encoded.
///
/// A and AAAA for names the policy allows get one synthetic address each (assigned in `map`);
/// names it denies get NXDOMAIN; other types get NOERROR without answers, except PTR for an
/// address in `map`, which answers its name. `localhost` and `*.localhost` are 127.0.0.1 / ::1
/// without asking the policy. Responses fit in 512 bytes (or the client's EDNS size, at most
/// 1232), with TC set if they ever did not; in practice they are far smaller.
pub fn answer(
    query: &[u8],
    map: &SyntheticMap,
    policy: &dyn NamePolicy,
    cfg: &DnsConfig,
) -> Option<Vec<u8>> {
    let header = query.get(..HEADER_LEN)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (header[2] >> 3) & 0x0f;
    if opcode != u8::from(OpCode::Query) {
        return Some(raw_error(header, ResponseCode::NotImp));
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let (qd, records) = (count(4), count(6) + count(8) + count(10));
    if qd != 1 || qd * MIN_QUESTION_LEN + records * MIN_RECORD_LEN > query.len() - HEADER_LEN {
        return Some(raw_error(header, ResponseCode::FormErr));
    }
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "unparseable DNS query");
            return Some(raw_error(header, ResponseCode::FormErr));
        }
    };
    let client_edns = msg.extensions().as_ref();
    let limit = match client_edns {
        Some(e) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        None => PLAIN_UDP_LIMIT,
    };
    let mut resp = Message::new();
    resp.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true);
    if client_edns.is_some() {
        // RFC 6891: a query with OPT gets OPT back. Client options (cookies, padding) are not
        // echoed: none of them means anything to a resolver that never forwards.
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD).set_version(0);
        resp.set_edns(e);
    }
    let q: &Query = &msg.queries()[0];
    // Echo the question as asked (case included: 0x20-randomising clients check it).
    resp.add_query(q.clone());
    let rcode = respond(q, &mut resp, client_edns, map, policy, cfg);
    resp.set_response_code(rcode);
    encode(resp, limit)
}

/// Fill in the answers for question `q`; returns the response code.
fn respond(
    q: &Query,
    resp: &mut Message,
    client_edns: Option<&Edns>,
    map: &SyntheticMap,
    policy: &dyn NamePolicy,
    cfg: &DnsConfig,
) -> ResponseCode {
    if client_edns.is_some_and(|e| e.version() > 0) {
        return ResponseCode::BADVERS;
    }
    if q.query_class() != DNSClass::IN {
        return ResponseCode::Refused;
    }
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return ResponseCode::Refused;
    }
    if q.name().is_root() {
        // The root exists but has no address.
        return ResponseCode::NoError;
    }
    let name = match normalize_labels(q.name().iter()) {
        Ok(n) => n,
        Err(e) => return bad_name(q, &e),
    };
    let ttl = u32::try_from(cfg.ttl.as_secs()).unwrap_or(u32::MAX);
    let add = |resp: &mut Message, rdata: RData| {
        resp.add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
    };

    // localhost never leaves the sandbox and needs no policy (RFC 6761).
    if name == "localhost" || name.ends_with(".localhost") {
        match qtype {
            RecordType::A => add(resp, RData::A(A(Ipv4Addr::LOCALHOST))),
            RecordType::AAAA => add(resp, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            _ => {}
        }
        return ResponseCode::NoError;
    }

    // Reverse lookups: we know exactly the names of our own synthetic addresses, and nothing
    // else (egret never asks anyone), so everything else is NXDOMAIN.
    if qtype == RecordType::PTR && (name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa"))
    {
        let target = reverse_name_to_ip(&name)
            .filter(|ip| map.is_synthetic(*ip))
            .and_then(|ip| map.lookup(ip))
            .and_then(|n| Name::from_ascii(format!("{n}.")).ok());
        let found = target.is_some();
        if let Some(t) = target {
            add(resp, RData::PTR(PTR(t)));
        }
        tracing::debug!(name = %log_name(&name), qtype = %qtype, decision = if found { "answer" } else { "nxdomain" }, "dns reverse lookup");
        return if found {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
    }

    match policy.decide(&name) {
        NameDecision::NxDomain { rule } => {
            tracing::info!(name = %log_name(&name), qtype = %qtype, decision = "nxdomain", rule = %rule, "dns name denied");
            ResponseCode::NXDomain
        }
        NameDecision::Answer => {
            // Only A/AAAA get data; every other type (TXT, MX, SRV, HTTPS/SVCB, ANY, ...) is
            // NODATA, so no data channel comes back and no HTTPS record advertises h3 or ECH.
            let decision = match qtype {
                RecordType::A => {
                    add(resp, RData::A(A(map.assign(&name).0)));
                    "answer"
                }
                RecordType::AAAA => {
                    add(resp, RData::AAAA(AAAA(map.assign(&name).1)));
                    "answer"
                }
                _ => "nodata",
            };
            tracing::debug!(name = %log_name(&name), qtype = %qtype, decision, "dns name answered");
            ResponseCode::NoError
        }
    }
}

/// A name that parsed but is not a host name we serve.
fn bad_name(q: &Query, e: &NameError) -> ResponseCode {
    // The escaped ASCII form: the raw labels may hold control bytes.
    let shown = q.name().to_ascii();
    match e {
        // Cannot come off the wire through hickory's decoder (it enforces 255 octets and
        // 63-byte labels), but a structurally impossible name is a format error.
        NameError::TooLong(_) | NameError::LabelTooLong(_) | NameError::Empty => {
            tracing::debug!(name = %log_name(&shown), error = %e, "malformed DNS name");
            ResponseCode::FormErr
        }
        // A well-formed name with characters no host name has: it does not exist here.
        NameError::EmptyLabel | NameError::InvalidChar(_) => {
            tracing::info!(name = %log_name(&shown), qtype = %q.query_type(), decision = "nxdomain", rule = SYNTAX_RULE, error = %e, "dns name denied");
            ResponseCode::NXDomain
        }
    }
}

/// Encode, setting TC and dropping the answers if the response exceeds `limit`.
fn encode(mut resp: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = match resp.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "could not encode DNS response");
            return None;
        }
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    resp.take_answers();
    resp.set_truncated(true);
    resp.to_vec().ok()
}

/// A bare error response built from the raw header, for queries that do not parse (or need
/// no parsing): id, opcode and RD copied, RA set, no sections.
fn raw_error(header: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&header[..2]);
    out[2] = 0x80 | (header[2] & 0x78) | (header[2] & 0x01); // QR, opcode, RD
    out[3] = 0x80 | (rcode.low() & 0x0f); // RA, rcode
    out
}

/// The address a reverse name (`d.c.b.a.in-addr.arpa`, 32 nibbles `.ip6.arpa`) stands for.
fn reverse_name_to_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut parts = rest.split('.');
        for o in octets.iter_mut().rev() {
            let p = parts.next()?;
            // Decimal, no sign or leading zeros: one spelling per address.
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if p.len() > 1 && p.starts_with('0') {
                return None;
            }
            *o = p.parse().ok()?;
        }
        return parts
            .next()
            .is_none()
            .then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let mut x: u128 = 0;
    let mut n = 0;
    for nibble in rest.split('.').rev() {
        let [c] = nibble.as_bytes() else { return None };
        x = (x << 4) | u128::from(char::from(*c).to_digit(16)?);
        n += 1;
        if n > 32 {
            return None;
        }
    }
    (n == 32).then(|| IpAddr::V6(Ipv6Addr::from(x)))
}

#[cfg(test)]
mod tests;

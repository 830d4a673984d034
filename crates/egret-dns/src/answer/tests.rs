//! Unit tests of [`answer`] with hickory-built queries, and a capture of its log events.
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

struct Policy;
impl NamePolicy for Policy {
    fn decide(&self, name: &str) -> NameDecision {
        if name == "denied.test" || name.ends_with(".denied.test") {
            NameDecision::NxDomain {
                rule: Arc::from("deny \"*.denied.test\""),
            }
        } else {
            NameDecision::Answer
        }
    }
}

fn query_msg(name: &str, t: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(0xbeef).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    query_msg(name, t).to_vec().unwrap()
}

fn ask_raw(q: &[u8], map: &SyntheticMap) -> Option<Vec<u8>> {
    answer(q, map, &Policy, &DnsConfig::default())
}

fn ask(q: &[u8], map: &SyntheticMap) -> Message {
    Message::from_vec(&ask_raw(q, map).expect("answered")).expect("our response parses")
}

fn new_map() -> SyntheticMap {
    SyntheticMap::new(DnsConfig::default())
}

fn only_a(r: &Message) -> Ipv4Addr {
    assert_eq!(r.answers().len(), 1, "{r:?}");
    match r.answers()[0].data() {
        RData::A(a) => a.0,
        other => panic!("not an A record: {other:?}"),
    }
}

fn only_aaaa(r: &Message) -> Ipv6Addr {
    assert_eq!(r.answers().len(), 1, "{r:?}");
    match r.answers()[0].data() {
        RData::AAAA(a) => a.0,
        other => panic!("not an AAAA record: {other:?}"),
    }
}

#[test]
fn a_gets_a_synthetic_address_with_header_copied() {
    let map = new_map();
    let r = ask(&query("api.test.", RecordType::A), &map);
    assert_eq!(r.id(), 0xbeef);
    assert_eq!(r.message_type(), MessageType::Response);
    assert!(r.recursion_desired() && r.recursion_available());
    assert!(!r.truncated());
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(r.queries(), query_msg("api.test.", RecordType::A).queries());
    let a = only_a(&r);
    assert_eq!(a, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(r.answers()[0].ttl(), 5);
    assert_eq!(
        r.answers()[0].name(),
        &Name::from_ascii("api.test.").unwrap()
    );
    assert_eq!(map.lookup(a.into()).as_deref(), Some("api.test"));
    assert!(r.extensions().is_none(), "OPT without one in the query");
}

#[test]
fn rd_clear_is_copied_too() {
    let map = new_map();
    let mut m = query_msg("api.test.", RecordType::A);
    m.set_recursion_desired(false).set_id(1);
    let r = ask(&m.to_vec().unwrap(), &map);
    assert!(!r.recursion_desired());
    assert_eq!(r.id(), 1);
}

#[test]
fn aaaa_and_same_name_keeps_its_addresses() {
    let map = new_map();
    let v6 = only_aaaa(&ask(&query("api.test.", RecordType::AAAA), &map));
    assert_eq!(v6, "fd65:6772:6574::1".parse::<Ipv6Addr>().unwrap());
    let v4 = only_a(&ask(&query("api.test.", RecordType::A), &map));
    assert_eq!(v4, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(
        only_aaaa(&ask(&query("api.test.", RecordType::AAAA), &map)),
        v6
    );
    let other = only_a(&ask(&query("other.test.", RecordType::A), &map));
    assert_ne!(other, v4);
    assert_eq!(map.len(), 2);
}

#[test]
fn names_are_normalised() {
    let map = new_map();
    let a = only_a(&ask(&query("API.Test.", RecordType::A), &map));
    let b = only_a(&ask(&query("api.test", RecordType::A), &map));
    assert_eq!(a, b);
    assert_eq!(map.lookup(a.into()).as_deref(), Some("api.test"));
    // The question and the owner name keep the client's spelling (0x20 randomisation).
    let r = ask(&query("aPi.TeSt.", RecordType::A), &map);
    assert_eq!(r.queries()[0].name().to_ascii(), "aPi.TeSt.");
    assert_eq!(r.answers()[0].name().to_ascii(), "aPi.TeSt.");
    // IP-literal-looking names are just names.
    let ip = only_a(&ask(&query("10.0.0.1.", RecordType::A), &map));
    assert!(map.is_synthetic(ip.into()));
    assert_eq!(map.lookup(ip.into()).as_deref(), Some("10.0.0.1"));
}

#[test]
fn denied_names_get_nxdomain_and_no_address() {
    let map = new_map();
    for t in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::HTTPS,
    ] {
        let r = ask(&query("x.Denied.test.", t), &map);
        assert_eq!(r.response_code(), ResponseCode::NXDomain, "{t}");
        assert!(r.answers().is_empty());
        assert_eq!(r.queries().len(), 1);
    }
    assert!(map.is_empty());
}

#[test]
fn denied_names_are_logged_with_rule_and_bounded_name() {
    let map = new_map();
    let long_label = "e".repeat(60);
    let name = format!("{long_label}.{long_label}.{long_label}.denied.test.");
    let events = capture(|| {
        ask(&query(&name, RecordType::TXT), &map);
    });
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.get("decision").map(String::as_str) == Some("nxdomain"))
        .collect();
    assert_eq!(denied.len(), 1, "{events:?}");
    let e = denied[0];
    assert_eq!(e["rule"], "deny \"*.denied.test\"");
    assert_eq!(e["qtype"], "TXT");
    let logged = &e["name"];
    assert!(logged.ends_with('…'), "{logged}");
    assert_eq!(logged.chars().count(), 121);
    assert!(name.starts_with(logged.trim_end_matches('…')));
}

#[test]
fn other_types_are_nodata_and_never_carry_data() {
    let map = new_map();
    for t in [
        RecordType::TXT,
        RecordType::MX,
        RecordType::ANY,
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::SRV,
        RecordType::CNAME,
        RecordType::NS,
        RecordType::SOA,
        RecordType::CAA,
        RecordType::Unknown(65000),
    ] {
        let r = ask(&query("api.test.", t), &map);
        assert_eq!(r.response_code(), ResponseCode::NoError, "{t}");
        assert!(r.answers().is_empty() && r.name_servers().is_empty(), "{t}");
        assert!(r.additionals().is_empty(), "{t}");
    }
    // NODATA assigns nothing: only address queries create map entries.
    assert!(map.is_empty());
    // PTR for a name that is not a reverse name is just another NODATA type.
    assert_eq!(
        ask(&query("api.test.", RecordType::PTR), &map).response_code(),
        ResponseCode::NoError
    );
    // Zone transfers are refused.
    assert_eq!(
        ask(&query("api.test.", RecordType::AXFR), &map).response_code(),
        ResponseCode::Refused
    );
}

#[test]
fn ptr_answers_synthetic_addresses_only() {
    let map = new_map();
    let v4 = only_a(&ask(&query("api.test.", RecordType::A), &map));
    assert_eq!(v4, Ipv4Addr::new(198, 18, 0, 1));
    let r = ask(&query("1.0.18.198.IN-ADDR.ARPA.", RecordType::PTR), &map);
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(
        r.answers()[0].data(),
        &RData::PTR(PTR(Name::from_ascii("api.test.").unwrap()))
    );
    let v6_rev = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.7.5.6.2.7.7.6.5.6.d.f.ip6.arpa.";
    let r = ask(&query(v6_rev, RecordType::PTR), &map);
    assert_eq!(
        r.answers()[0].data(),
        &RData::PTR(PTR(Name::from_ascii("api.test.").unwrap()))
    );
    for unknown in [
        "2.0.18.198.in-addr.arpa.",   // synthetic but not handed out
        "9.9.9.9.in-addr.arpa.",      // not ours
        "01.0.18.198.in-addr.arpa.",  // not the canonical spelling
        "1.0.18.198.1.in-addr.arpa.", // too many octets
        "256.0.18.198.in-addr.arpa.", // not an octet
        "0.18.198.in-addr.arpa.",     // too few
        "10.0.0.0.ip6.arpa.",         // too few nibbles
    ] {
        let r = ask(&query(unknown, RecordType::PTR), &map);
        assert_eq!(r.response_code(), ResponseCode::NXDomain, "{unknown}");
        assert!(r.answers().is_empty());
    }
}

#[test]
fn localhost_is_loopback_without_policy() {
    struct DenyAll;
    impl NamePolicy for DenyAll {
        fn decide(&self, _: &str) -> NameDecision {
            NameDecision::NxDomain {
                rule: Arc::from("deny all"),
            }
        }
    }
    let map = new_map();
    let cfg = DnsConfig::default();
    let go = |n: &str, t| {
        Message::from_vec(&answer(&query(n, t), &map, &DenyAll, &cfg).unwrap()).unwrap()
    };
    assert_eq!(
        only_a(&go("localhost.", RecordType::A)),
        Ipv4Addr::LOCALHOST
    );
    assert_eq!(only_a(&go("LocalHost", RecordType::A)), Ipv4Addr::LOCALHOST);
    assert_eq!(
        only_aaaa(&go("app.localhost.", RecordType::AAAA)),
        Ipv6Addr::LOCALHOST
    );
    let r = go("localhost.", RecordType::MX);
    assert_eq!(
        (r.response_code(), r.answers().len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(
        go("notlocalhost.", RecordType::A).response_code(),
        ResponseCode::NXDomain
    );
    assert!(map.is_empty());
}

#[test]
fn non_in_class_is_refused() {
    let map = new_map();
    for class in [DNSClass::CH, DNSClass::HS, DNSClass::ANY] {
        let mut m = Message::new();
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(class);
        m.add_query(q);
        let r = ask(&m.to_vec().unwrap(), &map);
        assert_eq!(r.response_code(), ResponseCode::Refused, "{class}");
        assert_eq!(r.queries().len(), 1);
    }
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let map = new_map();
    let mut m = Message::new();
    m.set_id(42).set_recursion_desired(true);
    let r = ask(&m.to_vec().unwrap(), &map);
    assert_eq!((r.id(), r.response_code()), (42, ResponseCode::FormErr));
    assert!(r.recursion_desired());
    m.add_query(Query::query(
        Name::from_ascii("a.test.").unwrap(),
        RecordType::A,
    ));
    m.add_query(Query::query(
        Name::from_ascii("b.test.").unwrap(),
        RecordType::A,
    ));
    let r = ask(&m.to_vec().unwrap(), &map);
    assert_eq!((r.id(), r.response_code()), (42, ResponseCode::FormErr));
    assert!(r.answers().is_empty());
    assert!(map.is_empty());
}

#[test]
fn truncated_and_bogus_packets() {
    let map = new_map();
    let full = query("api.test.", RecordType::A);
    // Every strict prefix with a header: FORMERR with the id; without a header: dropped.
    for n in 0..full.len() {
        match ask_raw(&full[..n], &map) {
            None => assert!(n < 12, "dropped a {n}-byte prefix"),
            Some(r) => {
                let r = Message::from_vec(&r).unwrap();
                assert_eq!(
                    (r.id(), r.response_code()),
                    (0xbeef, ResponseCode::FormErr),
                    "prefix {n}"
                );
            }
        }
    }
    // A response is never answered (no loops between two resolvers).
    let mut resp = query_msg("api.test.", RecordType::A);
    resp.set_message_type(MessageType::Response);
    assert!(ask_raw(&resp.to_vec().unwrap(), &map).is_none());
    // Counts the packet cannot possibly hold are FORMERR before any parsing.
    let mut huge = full.clone();
    huge[10] = 0xff;
    huge[11] = 0xff;
    assert_eq!(ask(&huge, &map).response_code(), ResponseCode::FormErr);
    // A compression pointer loop.
    let mut bad = full[..12].to_vec();
    bad.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(ask(&bad, &map).response_code(), ResponseCode::FormErr);
    assert!(map.is_empty());
}

#[test]
fn other_opcodes_are_notimp() {
    let map = new_map();
    for op in [
        OpCode::Status,
        OpCode::Notify,
        OpCode::Update,
        OpCode::Unknown(9),
    ] {
        let mut m = query_msg("api.test.", RecordType::A);
        m.set_op_code(op);
        let r = ask(&m.to_vec().unwrap(), &map);
        assert_eq!(r.response_code(), ResponseCode::NotImp, "{op:?}");
        assert_eq!(r.op_code(), op);
        assert_eq!(r.id(), 0xbeef);
    }
    assert!(map.is_empty());
}

#[test]
fn name_length_limits() {
    let map = new_map();
    let label = "a".repeat(63);
    let name253 = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(name253.len(), 253);
    let r = ask(&query(&format!("{name253}."), RecordType::A), &map);
    let a = only_a(&r);
    assert_eq!(map.lookup(a.into()).as_deref(), Some(name253.as_str()));

    // hickory refuses to build longer names, so encode a 300-character one by hand.
    let mut q = query("x.", RecordType::A);
    q.truncate(12);
    for _ in 0..5 {
        q.push(59);
        q.extend_from_slice(&[b'c'; 59]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let r = ask(&q, &map);
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    assert!(r.answers().is_empty());
    // A 64-byte label is not even a label (0x40 is a reserved label type).
    let mut q = query("x.", RecordType::A);
    q.truncate(12);
    q.push(64);
    q.extend_from_slice(&[b'c'; 64]);
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(ask(&q, &map).response_code(), ResponseCode::FormErr);
    assert_eq!(map.len(), 1);
}

#[test]
fn names_no_host_has_are_nxdomain() {
    let map = new_map();
    // Labels with a space, a dot inside a label, a control byte: valid DNS, not host names.
    for label in [&b"a b"[..], b"a.b", b"\x00x", b"\xff"] {
        let mut q = query("x.", RecordType::A);
        q.truncate(12);
        q.push(label.len() as u8);
        q.extend_from_slice(label);
        q.extend_from_slice(&[4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
        let r = ask(&q, &map);
        assert_eq!(r.response_code(), ResponseCode::NXDomain, "{label:?}");
    }
    // The root has no address, and is not a policy question.
    let r = ask(&query(".", RecordType::A), &map);
    assert_eq!(
        (r.response_code(), r.answers().len()),
        (ResponseCode::NoError, 0)
    );
    assert!(map.is_empty());
}

#[test]
fn edns_is_echoed() {
    let map = new_map();
    let mut m = query_msg("api.test.", RecordType::AAAA);
    let mut e = Edns::new();
    e.set_max_payload(4096).set_dnssec_ok(true);
    m.set_edns(e);
    let r = ask(&m.to_vec().unwrap(), &map);
    let opt = r.extensions().as_ref().expect("OPT echoed");
    assert_eq!(opt.max_payload(), 1232);
    assert_eq!(opt.version(), 0);
    assert_eq!(r.answers().len(), 1);
    // Error responses carry OPT too, when the query parsed.
    let mut m = query_msg("x.denied.test.", RecordType::A);
    m.set_edns(Edns::new());
    assert!(ask(&m.to_vec().unwrap(), &map).extensions().is_some());
}

#[test]
fn unknown_edns_version_is_badvers() {
    let map = new_map();
    let mut m = query_msg("api.test.", RecordType::A);
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let r = ask(&m.to_vec().unwrap(), &map);
    // 16 is both BADVERS and BADSIG; hickory decodes it as the latter.
    assert_eq!(u16::from(r.response_code()), 16);
    assert_eq!(r.extensions().as_ref().map(Edns::version), Some(0));
    assert!(r.answers().is_empty() && map.is_empty());
}

#[test]
fn largest_responses_fit_in_512_bytes() {
    let map = new_map();
    let label = "a".repeat(63);
    let longest = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
    for t in [RecordType::A, RecordType::AAAA] {
        let r = ask_raw(&query(&longest, t), &map).unwrap();
        assert!(r.len() <= 512, "{t}: {}", r.len());
    }
    let v6 = map.assign(longest.trim_end_matches('.')).1;
    let rev: String = format!("{:032x}", u128::from(v6))
        .chars()
        .rev()
        .flat_map(|c| [c, '.'])
        .collect();
    let r = ask_raw(&query(&format!("{rev}ip6.arpa."), RecordType::PTR), &map).unwrap();
    assert!(r.len() <= 512, "PTR: {}", r.len());
    assert_eq!(Message::from_vec(&r).unwrap().answers().len(), 1);
}

#[test]
fn oversized_responses_are_truncated() {
    let mut m = Message::new();
    m.add_query(Query::query(
        Name::from_ascii("api.test.").unwrap(),
        RecordType::A,
    ));
    for i in 0..100u8 {
        m.add_answer(Record::from_rdata(
            Name::from_ascii("api.test.").unwrap(),
            5,
            RData::A(A(Ipv4Addr::new(198, 18, 0, i))),
        ));
    }
    let r = Message::from_vec(&encode(m, 512).unwrap()).unwrap();
    assert!(r.truncated());
    assert!(r.answers().is_empty());
}

#[test]
fn reverse_names_parse_one_spelling_only() {
    assert_eq!(
        reverse_name_to_ip("4.3.2.1.in-addr.arpa"),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(
        reverse_name_to_ip("0.0.0.0.in-addr.arpa"),
        Some("0.0.0.0".parse().unwrap())
    );
    assert_eq!(reverse_name_to_ip("+4.3.2.1.in-addr.arpa"), None);
    let nibbles = "f.".repeat(32);
    assert_eq!(
        reverse_name_to_ip(&format!("{nibbles}ip6.arpa")),
        Some(IpAddr::V6(Ipv6Addr::from(u128::MAX)))
    );
    assert_eq!(
        reverse_name_to_ip(&format!("ff.{}ip6.arpa", "f.".repeat(31))),
        None
    );
    assert_eq!(reverse_name_to_ip(&format!("0.{nibbles}ip6.arpa")), None);
    assert_eq!(reverse_name_to_ip("example.com"), None);
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let map = new_map();
        if let Some(r) = ask_raw(&data, &map) {
            prop_assert!(r.len() <= 512);
            prop_assert_eq!(&r[..2], &data[..2]);
            prop_assert!(r[2] & 0x80 != 0, "not a response");
        }
    }

    #[test]
    fn never_panics_on_mutated_queries(
        name in "[a-zA-Z0-9][a-zA-Z0-9-]{0,19}(\\.[a-z]{1,10}){0,4}\\.",
        t in any::<u16>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        edns in any::<bool>(),
    ) {
        let map = new_map();
        let mut m = query_msg(&name, RecordType::from(t));
        if edns {
            m.set_edns(Edns::new());
        }
        let mut q = m.to_vec().unwrap();
        for (i, b) in flips {
            let i = i.index(q.len());
            q[i] ^= b;
        }
        let cut = cut.index(q.len() + 1);
        let _ = ask_raw(&q[..cut], &map);
        let _ = ask_raw(&q, &map);
    }

    #[test]
    fn valid_names_always_get_a_mapped_address(name in "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,29}(\\.[a-zA-Z0-9][a-zA-Z0-9-]{0,19}){0,5}") {
        let map = new_map();
        let r = ask(&query(&format!("{name}."), RecordType::A), &map);
        let lower = name.to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") || lower == "denied.test" || lower.ends_with(".denied.test") {
            return Ok(());
        }
        let got = map.lookup(only_a(&r).into());
        prop_assert_eq!(got.as_deref(), Some(lower.as_str()));
    }
}

/// Log events as field → value maps, captured while `f` runs on this thread.
///
/// The capturing subscriber is the binary's global default rather than a scoped one: tracing
/// caches each call site's interest process-wide, and a call site first reached by another
/// test thread while no subscriber listened could stay cached as "never" even inside a scoped
/// subscriber (seen once in CI: the denied-name event went missing).
fn capture(f: impl FnOnce()) -> Vec<BTreeMap<String, String>> {
    use std::cell::RefCell;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record as SpanRecord};
    use tracing::{Event, Metadata, Subscriber};

    type Captured = Vec<BTreeMap<String, String>>;
    thread_local! {
        static CAPTURED: RefCell<Option<Captured>> = const { RefCell::new(None) };
    }
    struct Capture;
    struct Fields(BTreeMap<String, String>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .insert(field.name().to_string(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_string(), value.to_string());
        }
    }
    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &SpanRecord<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            CAPTURED.with(|c| {
                if let Some(events) = c.borrow_mut().as_mut() {
                    let mut v = Fields(BTreeMap::new());
                    event.record(&mut v);
                    events.push(v.0);
                }
            });
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Capture)
            .expect("no other global subscriber in this test binary");
    });
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    f();
    CAPTURED.with(|c| c.borrow_mut().take().unwrap_or_default())
}

//! The sandbox's resolver answers raw datagrams: it must never panic, never answer with anything
//! but A/AAAA/PTR data, and never produce a response larger than the client can take.
#![no_main]
use egret_dns::{answer, DnsConfig, NameDecision, NamePolicy, SyntheticMap};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

struct Policy;
impl NamePolicy for Policy {
    fn decide(&self, name: &str) -> NameDecision {
        if name.contains("deny") {
            NameDecision::NxDomain {
                rule: Arc::from("fuzz"),
            }
        } else {
            NameDecision::Answer
        }
    }
}

fn state() -> &'static (DnsConfig, SyntheticMap) {
    static S: OnceLock<(DnsConfig, SyntheticMap)> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = DnsConfig::default();
        (cfg.clone(), SyntheticMap::new(cfg))
    })
}

fuzz_target!(|data: &[u8]| {
    let (cfg, map) = state();
    if let Some(reply) = answer(data, map, &Policy, cfg) {
        assert!(reply.len() >= 12, "short reply");
        assert!(reply.len() <= 1232, "reply of {} bytes", reply.len());
        assert_eq!(reply[..2], data[..2], "reply id differs from the query's");
        assert!(reply[2] & 0x80 != 0, "reply without QR");
    }
});

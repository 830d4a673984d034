//! Host patterns: parsing never panics, a parsed pattern prints back to something that parses
//! to the same pattern, and matching arbitrary destinations never panics.
#![no_main]
use egret_policy::{Destination, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, u16)| {
    let (src, host, port) = input;
    if let Ok(p) = Pattern::parse(src) {
        let again = Pattern::parse(&p.to_string()).unwrap_or_else(|e| {
            panic!("{src:?} printed as {:?} does not parse: {e}", p.to_string())
        });
        assert_eq!(
            again.to_string(),
            p.to_string(),
            "unstable display for {src:?}"
        );
        let _ = p.matches(&Destination::host(host, port));
        if let Ok(ip) = host.parse() {
            let _ = p.matches(&Destination::ip(ip, port));
        }
    }
});

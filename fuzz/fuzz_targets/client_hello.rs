//! The ClientHello peek runs on raw bytes from the sandbox before anything else: it must never
//! panic, and whatever it accepts must be self-consistent.
#![no_main]
use egret_tls::peek::{parse_client_hello, parse_client_hello_with_limit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let full = parse_client_hello(data);
    if let Ok(info) = &full {
        // An SNI is a DNS name, never an IP literal (RFC 6066 §3), and never empty.
        if let Some(sni) = info.sni.as_deref() {
            assert!(!sni.is_empty());
            assert!(
                sni.parse::<std::net::IpAddr>().is_err(),
                "IP literal SNI {sni:?}"
            );
        }
    }
    // Feeding the same bytes in prefixes (as a trickling client does) never yields a different
    // result than the whole buffer once the parser says it is complete.
    for cut in [1usize, 5, 6, 9, data.len() / 2] {
        if cut >= data.len() {
            continue;
        }
        if let Ok(early) = parse_client_hello(&data[..cut]) {
            assert_eq!(
                Some(&early),
                full.as_ref().ok(),
                "prefix {cut} parsed differently"
            );
        }
    }
    let _ = parse_client_hello_with_limit(data, 512);
});

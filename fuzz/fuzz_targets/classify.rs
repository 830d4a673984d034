//! Protocol classification of a connection's first bytes: never panics, looks only at a short
//! prefix, and is stable once it has decided.
#![no_main]
use egret_proxy::classify::{classify, Class};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = classify(data);
    if c != Class::NeedMore {
        // More bytes never change a decision already taken.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\x16\x03\x01");
        assert_eq!(
            classify(&longer),
            c,
            "classification changed with more bytes"
        );
    }
});

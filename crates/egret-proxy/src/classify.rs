//! Protocol classification from the first bytes a client sends. Pure and cheap: it looks at
//! no more than the first few bytes and never allocates.

/// What the first bytes of a connection look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A TLS handshake record (ClientHello follows).
    Tls,
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    H2Prior,
    /// Something else: an opaque TCP protocol.
    Opaque,
    /// Not enough bytes yet to tell.
    NeedMore,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method token we accept as HTTP (longer ones are treated as opaque data).
const MAX_METHOD: usize = 24;

/// Classify a connection prefix. `NeedMore` is returned only while the prefix could still be
/// HTTP or TLS; callers bound the wait with a timeout and treat silence as opaque.
pub fn classify(buf: &[u8]) -> Class {
    if buf.is_empty() {
        return Class::NeedMore;
    }
    // TLS record: handshake (22), major version 3.
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => Class::NeedMore,
            Some(3) => Class::Tls,
            Some(_) => Class::Opaque,
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Class::H2Prior
        } else {
            Class::NeedMore
        };
    }
    // HTTP/1: a method token (RFC 9110 tchar, we accept upper-case letters and '-') then SP.
    for (i, &b) in buf.iter().enumerate().take(MAX_METHOD + 1) {
        if b == b' ' {
            return if i > 0 { Class::Http1 } else { Class::Opaque };
        }
        if !(b.is_ascii_uppercase() || b == b'-' || b == b'_') {
            return Class::Opaque;
        }
    }
    if buf.len() > MAX_METHOD {
        Class::Opaque
    } else {
        Class::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recognises_protocols() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Class::Http1);
        assert_eq!(classify(b"POST /x HTTP/1.1\r\n"), Class::Http1);
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Class::Http1);
        assert_eq!(classify(H2_PREFACE), Class::H2Prior);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Class::Tls);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Class::Opaque);
        assert_eq!(classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), Class::Opaque);
        assert_eq!(classify(b"get / HTTP/1.1"), Class::Opaque);
        assert_eq!(classify(b" GET"), Class::Opaque);
        assert_eq!(classify(b"\x16\x01"), Class::Opaque);
    }

    #[test]
    fn waits_for_more_while_ambiguous() {
        assert_eq!(classify(b""), Class::NeedMore);
        assert_eq!(classify(b"\x16"), Class::NeedMore);
        assert_eq!(classify(b"GE"), Class::NeedMore);
        assert_eq!(classify(b"PRI * HTTP/2"), Class::NeedMore);
        assert_eq!(classify(&[b'A'; MAX_METHOD + 1]), Class::Opaque);
    }

    proptest! {
        #[test]
        fn never_panics_and_is_prefix_stable(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let c = classify(&data);
            // Once a prefix is decided, longer inputs decide the same way.
            if c != Class::NeedMore {
                for i in 0..=data.len() {
                    let p = classify(&data[..i]);
                    prop_assert!(p == Class::NeedMore || p == c, "{:?} vs {:?}", p, c);
                }
            }
        }
    }
}

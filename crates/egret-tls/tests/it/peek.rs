//! ClientHello peek against real rustls hellos, fragmented hellos, crafted and hostile input.

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use egret_tls::peek::{
    looks_like_tls, parse_client_hello, parse_client_hello_with_limit, read_client_hello,
    PeekError, PrefixedIo, DEFAULT_MAX_CLIENT_HELLO,
};

use crate::common::*;

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// One real rustls hello per test binary (making it generates a CA).
fn real_hello() -> Vec<u8> {
    static HELLO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    HELLO
        .get_or_init(|| rustls_client_hello(dns("a.test"), &[H2, H1]))
        .clone()
}

#[test]
fn parses_a_real_rustls_client_hello() {
    let wire = real_hello();
    let info = parse_client_hello(&wire).unwrap();
    assert_eq!(info.sni.as_deref(), Some("a.test"));
    assert_eq!(info.alpn, vec![H2.to_vec(), H1.to_vec()]);
    assert_eq!(info.legacy_version, 0x0303);
    assert_eq!(info.record_version >> 8, 3);
    assert!(!info.ech_offered);
    assert!(looks_like_tls(&wire));
}

#[test]
fn hello_without_sni_or_alpn() {
    let wire = rustls_client_hello(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), &[]);
    let info = parse_client_hello(&wire).unwrap();
    assert_eq!(info.sni, None);
    assert!(info.alpn.is_empty());
}

#[test]
fn every_truncation_is_incomplete() {
    let wire = real_hello();
    for cut in 0..wire.len() {
        match parse_client_hello(&wire[..cut]) {
            Err(PeekError::Incomplete { needed }) => {
                assert!(
                    needed >= 1 && cut + needed <= wire.len(),
                    "cut {cut}: {needed}"
                )
            }
            other => panic!("prefix of {cut} bytes gave {other:?}"),
        }
    }
}

#[test]
fn hello_split_into_one_byte_records() {
    let wire = real_hello();
    let expected = parse_client_hello(&wire).unwrap();
    for chunk in [1, 2, 3, 7, 100] {
        let split = reframe(&wire, chunk);
        assert_eq!(
            parse_client_hello(&split).unwrap(),
            expected,
            "chunk {chunk}"
        );
        // And every prefix of the fragmented form is still just incomplete.
        if chunk == 1 {
            for cut in 0..split.len() {
                assert!(
                    matches!(
                        parse_client_hello(&split[..cut]),
                        Err(PeekError::Incomplete { .. })
                    ),
                    "cut {cut}"
                );
            }
        }
    }
}

#[test]
fn trailing_bytes_after_the_hello_are_ignored() {
    let mut wire = real_hello();
    wire.extend_from_slice(b"\x17\x03\x03\x00\x05early");
    assert_eq!(
        parse_client_hello(&wire).unwrap().sni.as_deref(),
        Some("a.test")
    );
}

#[test]
fn garbage_is_not_tls() {
    assert!(matches!(
        parse_client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Err(PeekError::NotTls)
    ));
    assert!(matches!(
        parse_client_hello(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Err(PeekError::NotTls)
    ));
    assert!(matches!(
        parse_client_hello(b"SSH-2.0-OpenSSH_9.6\r\n"),
        Err(PeekError::NotTls)
    ));
    assert!(matches!(parse_client_hello(b"G"), Err(PeekError::NotTls)));
    // SSLv2-compatible hello: not something we intercept.
    assert!(matches!(
        parse_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
        Err(PeekError::NotTls)
    ));
    // Handshake content type but not version 3.x.
    assert!(matches!(
        parse_client_hello(&[22, 2, 0]),
        Err(PeekError::NotTls)
    ));
    assert!(matches!(
        parse_client_hello(&[22, 3, 9, 0, 1]),
        Err(PeekError::NotTls)
    ));
    assert!(!looks_like_tls(b""));
    assert!(!looks_like_tls(b"GET"));
    assert!(looks_like_tls(&[22]));
    assert!(looks_like_tls(&[22, 3, 1]));
}

#[test]
fn malformed_records_and_hellos() {
    let malformed = |bytes: &[u8]| match parse_client_hello(bytes) {
        Err(PeekError::Malformed(_)) => {}
        other => panic!("{bytes:?} gave {other:?}"),
    };
    // Empty record, oversized record.
    malformed(&[22, 3, 1, 0, 0]);
    malformed(&[22, 3, 1, 0x40, 0x01]);
    // A ServerHello where a ClientHello should be.
    malformed(&records(&[2, 0, 0, 0], 100));
    // Hello body too short for its fields.
    malformed(&records(&[1, 0, 0, 2, 3, 3], 100));
    // A non-handshake record in the middle of a fragmented hello.
    let mut split = reframe(&real_hello(), 10);
    split[15] = 23;
    malformed(&split);
    // Random flipped into a length field: truncated extension.
    let mut msg = crafted_hello_message(&[(0, sni_ext(&[b"a.test"]))]);
    let last = msg.len() - 1;
    msg.truncate(last);
    msg[3] -= 1;
    malformed(&records(&msg, 100));
}

#[test]
fn sni_is_lowercased_and_validated() {
    let parse = |name: &[u8]| parse_client_hello(&crafted_hello(&[(0, sni_ext(&[name]))]));
    assert_eq!(
        parse(b"API.Example.COM").unwrap().sni.as_deref(),
        Some("api.example.com")
    );
    assert_eq!(parse(b"a.test.").unwrap().sni.as_deref(), Some("a.test"));
    for bad in [
        &b"10.0.0.1"[..],
        b"::1",
        b"[::1]",
        b"a..test",
        b"a test",
        b"-a.test",
        b"caf\xc3\xa9.test",
        b"a.test\0.evil",
        b"",
    ] {
        assert!(
            matches!(parse(bad), Err(PeekError::Malformed(_))),
            "{bad:?}"
        );
    }
    // Two host names, two server_name extensions: refuse rather than guess.
    let two = crafted_hello(&[(0, sni_ext(&[b"a.test", b"b.test"]))]);
    assert!(matches!(
        parse_client_hello(&two),
        Err(PeekError::Malformed(_))
    ));
    let dup = crafted_hello(&[(0, sni_ext(&[b"a.test"])), (0, sni_ext(&[b"b.test"]))]);
    assert!(matches!(
        parse_client_hello(&dup),
        Err(PeekError::Malformed(_))
    ));
}

#[test]
fn alpn_and_ech_are_reported() {
    let hello = crafted_hello(&[
        (16, alpn_ext(&[b"h2", b"http/1.1", b"acme-tls/1"])),
        (0xfe0d, vec![0, 1, 2, 3]),
    ]);
    let info = parse_client_hello(&hello).unwrap();
    assert_eq!(info.sni, None);
    assert_eq!(info.alpn.len(), 3);
    assert!(info.ech_offered);
    for bad in [alpn_ext(&[]), alpn_ext(&[b""]), vec![0, 5, 2, b'h', b'2']] {
        let hello = crafted_hello(&[(16, bad.clone())]);
        assert!(
            matches!(parse_client_hello(&hello), Err(PeekError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn size_limit() {
    let wire = real_hello();
    assert!(matches!(
        parse_client_hello_with_limit(&wire, wire.len() - 1),
        Err(PeekError::TooLarge)
    ));
    assert!(parse_client_hello_with_limit(&wire, wire.len()).is_ok());
    // A hello announcing 1 MiB is refused from its header alone.
    let huge = [22, 3, 1, 0, 4, 1, 0x10, 0, 0];
    assert!(matches!(
        parse_client_hello(&huge),
        Err(PeekError::TooLarge)
    ));
    // So is one that trickles in as 1-byte records past the limit.
    let big = crafted_hello_message(&[(0xaaaa, vec![0; 20_000])]);
    assert!(matches!(
        parse_client_hello(&records(&big, 1)),
        Err(PeekError::TooLarge)
    ));
    assert!(parse_client_hello(&records(&big, 1 << 14)).is_ok());
    assert_eq!(DEFAULT_MAX_CLIENT_HELLO, 64 * 1024);
}

/// Hands out one byte per read, like the slowest possible network.
struct OneByteAtATime {
    data: Vec<u8>,
    pos: usize,
}

impl AsyncRead for OneByteAtATime {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(&b) = self.data.get(self.pos) {
            buf.put_slice(&[b]);
            self.pos += 1;
        }
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn reads_a_hello_arriving_one_byte_at_a_time() {
    let wire = reframe(&real_hello(), 50);
    let mut io = OneByteAtATime {
        data: wire.clone(),
        pos: 0,
    };
    let mut buf = Vec::new();
    let info = read_client_hello(&mut io, &mut buf, DEFAULT_MAX_CLIENT_HELLO)
        .await
        .unwrap();
    assert_eq!(info.sni.as_deref(), Some("a.test"));
    assert_eq!(buf, wire);
}

#[tokio::test]
async fn read_keeps_every_byte_and_the_stream_replays_unchanged() {
    let wire = real_hello();
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    client.write_all(&wire).await.unwrap();
    client.write_all(b"after the hello").await.unwrap();
    client.shutdown().await.unwrap();

    let mut buf = Vec::new();
    let info = read_client_hello(&mut server, &mut buf, DEFAULT_MAX_CLIENT_HELLO)
        .await
        .unwrap();
    assert_eq!(info.sni.as_deref(), Some("a.test"));
    assert!(buf.starts_with(&wire));

    let mut replay = PrefixedIo::new(Bytes::from(buf), server);
    let mut all = Vec::new();
    replay.read_to_end(&mut all).await.unwrap();
    let mut expected = wire.clone();
    expected.extend_from_slice(b"after the hello");
    assert_eq!(all, expected);
}

#[tokio::test]
async fn read_reports_eof_not_tls_and_keeps_partial_bytes_on_timeout() {
    let wire = real_hello();

    let mut truncated = &wire[..40];
    let mut buf = Vec::new();
    let err = read_client_hello(&mut truncated, &mut buf, DEFAULT_MAX_CLIENT_HELLO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PeekError::UnexpectedEof { received: 40 }),
        "{err:?}"
    );
    assert_eq!(buf, &wire[..40]);

    let mut http = &b"GET / HTTP/1.1\r\n\r\n"[..];
    let mut buf = Vec::new();
    let err = read_client_hello(&mut http, &mut buf, DEFAULT_MAX_CLIENT_HELLO)
        .await
        .unwrap_err();
    assert!(matches!(err, PeekError::NotTls));
    assert_eq!(buf, b"GET / HTTP/1.1\r\n\r\n");

    // A client that stalls mid-hello: the caller's timeout fires, the bytes stay in `buf`.
    let (mut client, mut server) = tokio::io::duplex(1 << 16);
    client.write_all(&wire[..100]).await.unwrap();
    let mut buf = Vec::new();
    let read = read_client_hello(&mut server, &mut buf, DEFAULT_MAX_CLIENT_HELLO);
    assert!(tokio::time::timeout(Duration::from_millis(50), read)
        .await
        .is_err());
    assert_eq!(buf, &wire[..100]);
    // ...and reading can resume where it stopped.
    client.write_all(&wire[100..]).await.unwrap();
    let info = read_client_hello(&mut server, &mut buf, DEFAULT_MAX_CLIENT_HELLO)
        .await
        .unwrap();
    assert_eq!(info.sni.as_deref(), Some("a.test"));
    assert_eq!(buf, wire);
}

#[tokio::test]
async fn read_stops_at_the_limit() {
    let big = records(&crafted_hello_message(&[(0xaaaa, vec![0; 3000])]), 1);
    let mut io = &big[..];
    let mut buf = Vec::new();
    let err = read_client_hello(&mut io, &mut buf, 4096)
        .await
        .unwrap_err();
    assert!(matches!(err, PeekError::TooLarge), "{err:?}");
    assert!(buf.len() <= 4096);
}

#[tokio::test]
async fn prefixed_io_passes_writes_through() {
    let (mut peer, ours) = tokio::io::duplex(1024);
    let mut io = PrefixedIo::new(Bytes::from_static(b"pre"), ours);
    assert_eq!(io.pending_prefix(), b"pre");
    io.write_all(b"out").await.unwrap();
    let mut got = [0u8; 3];
    peer.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"out");
    peer.write_all(b"fix").await.unwrap();
    let mut small = [0u8; 2];
    io.read_exact(&mut small).await.unwrap();
    assert_eq!(&small, b"pr");
    let mut rest = [0u8; 4];
    io.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"efix");
    let (prefix, _inner) = io.into_parts();
    assert!(prefix.is_empty());
}

#[test]
fn ip_leaf_name_round_trip() {
    // The peek never yields an IP; the proxy falls back to the destination address.
    let name = egret_tls::LeafName::from(IpAddr::from(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(name.to_string(), "192.0.2.1");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_client_hello(&bytes);
        let _ = looks_like_tls(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_tls_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        len in 0u16..700,
    ) {
        let mut bytes = vec![22, 3, 1];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(1);
        bytes.extend_from_slice(&body);
        let _ = parse_client_hello(&bytes);
    }

    #[test]
    fn mutated_real_hello_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = reframe(&real_hello(), 97);
        for (at, value) in edits {
            let i = at.index(wire.len());
            wire[i] = value;
        }
        let end = cut.index(wire.len() + 1);
        let _ = parse_client_hello(&wire[..end]);
    }

    #[test]
    fn any_fragmentation_parses_the_same(chunk in 1usize..400) {
        let wire = real_hello();
        let info = parse_client_hello(&reframe(&wire, chunk)).unwrap();
        prop_assert_eq!(info.sni.as_deref(), Some("a.test"));
        prop_assert_eq!(info.alpn.len(), 2);
    }
}

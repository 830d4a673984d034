//! ClientHello peek: read the SNI and ALPN of a TLS connection without consuming it.
//!
//! The proxy must decide *before* the handshake whether to intercept, splice or refuse, and it
//! must be able to hand every byte it read, unchanged, to whichever path it picks. So the parser
//! is pure (it only looks at a buffer), [`read_client_hello`] keeps everything it read in the
//! caller's buffer, and [`PrefixedIo`] replays that buffer in front of the live stream.
//!
//! The parser is written for hostile input: every length is checked before use, nothing is
//! indexed unchecked, the total size is bounded, and a buffer that is merely too short yields
//! [`PeekError::Incomplete`], never a wrong answer.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Default upper bound on the bytes (record headers included) that may carry a ClientHello.
///
/// Real hellos are 200 B – 2 KiB (about 1.8 KiB with a post-quantum key share); 64 KiB leaves
/// room for unusual ones while bounding what one silent connection can make us buffer.
pub const DEFAULT_MAX_CLIENT_HELLO: usize = 64 * 1024;

const RECORD_HEADER_LEN: usize = 5;
/// RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_HEADER_LEN: usize = 4;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// draft-ietf-tls-esni: `encrypted_client_hello`.
const EXT_ECH: u16 = 0xfe0d;
const SNI_HOST_NAME: u8 = 0;
/// How much [`read_client_hello`] asks the socket for at a time.
const READ_CHUNK: usize = 4096;

/// What the ClientHello says about where the client wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `server_name` host name: validated as a DNS name, lowercased, without a trailing dot.
    /// `None` when the client sent no SNI.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in the client's order (empty when no ALPN extension).
    pub alpn: Vec<Vec<u8>>,
    /// `ClientHello.legacy_version` (0x0303 for TLS 1.2 and 1.3 clients).
    pub legacy_version: u16,
    /// The version field of the first record header (often 0x0301 for compatibility).
    pub record_version: u16,
    /// The hello carries an `encrypted_client_hello` extension: `sni` is then only the public
    /// (outer) name, and the real destination is hidden. That matters for connections that
    /// are spliced rather than intercepted.
    pub ech_offered: bool,
}

/// Why a buffer did not yield a ClientHello.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeekError {
    /// The bytes so far are a valid beginning; at least `needed` more are required.
    #[error("ClientHello incomplete: at least {needed} more bytes needed")]
    Incomplete {
        /// Lower bound on the missing bytes.
        needed: usize,
    },
    /// The stream does not start with a TLS handshake record.
    #[error("not a TLS handshake")]
    NotTls,
    /// It starts like TLS but the records or the ClientHello are invalid.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The ClientHello (with its record headers) exceeds the size limit.
    #[error("ClientHello exceeds the size limit")]
    TooLarge,
    /// The peer closed the stream before the ClientHello was complete.
    #[error("connection closed after {received} bytes, before the ClientHello was complete")]
    UnexpectedEof {
        /// Bytes received (all kept in the caller's buffer).
        received: usize,
    },
    /// Reading from the stream failed.
    #[error("reading the ClientHello: {0}")]
    Io(#[from] io::Error),
}

/// Cheap first-bytes check: could `first` be the start of a TLS handshake record?
///
/// Checks the content type (handshake) and, when present, the record version (3.0 – 3.4).
/// Returns `false` for an empty slice. Needs no more than three bytes to be decisive.
pub fn looks_like_tls(first: &[u8]) -> bool {
    match first {
        [] => false,
        [t] => *t == CONTENT_TYPE_HANDSHAKE,
        [t, major] => *t == CONTENT_TYPE_HANDSHAKE && *major == 3,
        [t, major, minor, ..] => *t == CONTENT_TYPE_HANDSHAKE && *major == 3 && *minor <= 4,
    }
}

/// Parses the ClientHello at the start of `buf`, with the [`DEFAULT_MAX_CLIENT_HELLO`] limit.
///
/// See [`parse_client_hello_with_limit`].
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHelloInfo, PeekError> {
    parse_client_hello_with_limit(buf, DEFAULT_MAX_CLIENT_HELLO)
}

/// Parses the ClientHello at the start of `buf`, which holds raw bytes from the client.
///
/// The hello may span several handshake records (and a record may arrive in several reads:
/// call again with more bytes on [`PeekError::Incomplete`]). Bytes after the hello are ignored.
/// `max` bounds the record bytes, headers included, that may carry the hello.
///
/// An SNI that is an IP literal is refused as [`PeekError::Malformed`]: RFC 6066 §3 forbids
/// literal addresses in `HostName`, and a client that sends one is not a browser or a standard
/// TLS library, so the proxy should not guess what it meant.
pub fn parse_client_hello_with_limit(buf: &[u8], max: usize) -> Result<ClientHelloInfo, PeekError> {
    if buf.len() < RECORD_HEADER_LEN {
        return if buf.is_empty() || looks_like_tls(buf) {
            Err(PeekError::Incomplete {
                needed: RECORD_HEADER_LEN - buf.len(),
            })
        } else {
            Err(PeekError::NotTls)
        };
    }
    if !looks_like_tls(buf) {
        return Err(PeekError::NotTls);
    }
    let record_version = u16::from_be_bytes([buf[1], buf[2]]);

    // Reassemble the handshake message from as many records as it takes. The common case (one
    // record holding the whole hello) is parsed in place; only fragmented hellos are copied.
    let mut pos = 0;
    let mut assembled: Vec<u8> = Vec::new();
    let mut single: Option<&[u8]> = None;
    let mut hello_len: Option<usize> = None;
    loop {
        let have = single.map_or(assembled.len(), <[u8]>::len);
        if hello_len.is_some_and(|total| have >= total) {
            break;
        }
        if pos + RECORD_HEADER_LEN > max {
            return Err(PeekError::TooLarge);
        }
        let Some(header) = buf.get(pos..pos + RECORD_HEADER_LEN) else {
            return Err(PeekError::Incomplete {
                needed: pos + RECORD_HEADER_LEN - buf.len(),
            });
        };
        if header[0] != CONTENT_TYPE_HANDSHAKE {
            return Err(PeekError::Malformed(
                "non-handshake record before the end of the ClientHello",
            ));
        }
        if header[1] != 3 || header[2] > 4 {
            return Err(PeekError::Malformed("invalid record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(PeekError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(PeekError::Malformed("record longer than 2^14 bytes"));
        }
        let body_start = pos + RECORD_HEADER_LEN;
        let body_end = body_start + len;
        if body_end > max {
            return Err(PeekError::TooLarge);
        }
        let Some(fragment) = buf.get(body_start..body_end) else {
            return Err(PeekError::Incomplete {
                needed: body_end - buf.len(),
            });
        };
        pos = body_end;
        if body_start == RECORD_HEADER_LEN {
            single = Some(fragment);
        } else {
            if let Some(first) = single.take() {
                assembled.extend_from_slice(first);
            }
            assembled.extend_from_slice(fragment);
        }

        let message = single.unwrap_or(&assembled);
        if hello_len.is_none() && message.len() >= HANDSHAKE_HEADER_LEN {
            if message[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(PeekError::Malformed(
                    "first handshake message is not a ClientHello",
                ));
            }
            let body_len = usize::from(message[1]) << 16
                | usize::from(message[2]) << 8
                | usize::from(message[3]);
            let total = HANDSHAKE_HEADER_LEN + body_len;
            if total > max {
                return Err(PeekError::TooLarge);
            }
            hello_len = Some(total);
        }
    }

    let message = single.unwrap_or(&assembled);
    // The loop only exits once `hello_len` is known and covered by `message`.
    let Some(body) = hello_len.and_then(|total| message.get(HANDSHAKE_HEADER_LEN..total)) else {
        return Err(PeekError::Malformed("ClientHello length inconsistent"));
    };
    parse_hello_body(body, record_version)
}

/// Parses the ClientHello body (after the 4-byte handshake header).
fn parse_hello_body(body: &[u8], record_version: u16) -> Result<ClientHelloInfo, PeekError> {
    let mut r = Reader::new(body);
    let legacy_version = r
        .u16()
        .ok_or(PeekError::Malformed("truncated legacy_version"))?;
    if legacy_version >> 8 != 3 {
        return Err(PeekError::Malformed("legacy_version is not 3.x"));
    }
    r.take(32).ok_or(PeekError::Malformed("truncated random"))?;
    let session_id = r
        .vec_u8()
        .ok_or(PeekError::Malformed("truncated legacy_session_id"))?;
    if session_id.len() > 32 {
        return Err(PeekError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r
        .vec_u16()
        .ok_or(PeekError::Malformed("truncated cipher_suites"))?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(PeekError::Malformed("invalid cipher_suites length"));
    }
    let compression = r
        .vec_u8()
        .ok_or(PeekError::Malformed("truncated legacy_compression_methods"))?;
    if compression.is_empty() {
        return Err(PeekError::Malformed("empty legacy_compression_methods"));
    }

    let mut info = ClientHelloInfo {
        sni: None,
        alpn: Vec::new(),
        legacy_version,
        record_version,
        ech_offered: false,
    };
    // A hello without extensions (pre-TLS 1.2 style) simply ends here.
    if r.is_empty() {
        return Ok(info);
    }
    let extensions = r
        .vec_u16()
        .ok_or(PeekError::Malformed("truncated extensions"))?;
    if !r.is_empty() {
        return Err(PeekError::Malformed("trailing bytes after extensions"));
    }

    let mut ext = Reader::new(extensions);
    let mut seen = HashSet::new();
    while !ext.is_empty() {
        let typ = ext
            .u16()
            .ok_or(PeekError::Malformed("truncated extension type"))?;
        let data = ext
            .vec_u16()
            .ok_or(PeekError::Malformed("truncated extension data"))?;
        // RFC 8446 §4.2: at most one extension of each type. Two SNIs could otherwise make us
        // and the real server disagree about the destination.
        if !seen.insert(typ) {
            return Err(PeekError::Malformed("duplicate extension"));
        }
        match typ {
            EXT_SERVER_NAME => info.sni = parse_server_name(data)?,
            EXT_ALPN => info.alpn = parse_alpn(data)?,
            EXT_ECH => info.ech_offered = true,
            _ => {}
        }
    }
    Ok(info)
}

/// RFC 6066 §3 `ServerNameList`; returns the validated host name, if any.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, PeekError> {
    let mut outer = Reader::new(data);
    let list = outer
        .vec_u16()
        .ok_or(PeekError::Malformed("truncated server_name list"))?;
    if !outer.is_empty() {
        return Err(PeekError::Malformed(
            "trailing bytes after server_name list",
        ));
    }
    if list.is_empty() {
        return Err(PeekError::Malformed("empty server_name list"));
    }
    let mut r = Reader::new(list);
    let mut host: Option<&[u8]> = None;
    while !r.is_empty() {
        let name_type = r
            .u8()
            .ok_or(PeekError::Malformed("truncated server_name entry"))?;
        if name_type != SNI_HOST_NAME {
            // The length encoding of unknown name types is undefined, so, like rustls, stop.
            break;
        }
        let name = r
            .vec_u16()
            .ok_or(PeekError::Malformed("truncated host_name"))?;
        if host.replace(name).is_some() {
            return Err(PeekError::Malformed(
                "more than one host_name in server_name",
            ));
        }
    }
    let Some(host) = host else {
        return Ok(None);
    };
    validate_host_name(host).map(Some)
}

fn validate_host_name(raw: &[u8]) -> Result<String, PeekError> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(PeekError::Malformed("server_name is not ASCII"));
    };
    if !text.is_ascii() {
        return Err(PeekError::Malformed("server_name is not ASCII"));
    }
    // RFC 6066: "without a trailing dot"; rustls trims one too, so we agree with the server
    // that will actually handle the handshake.
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.parse::<IpAddr>().is_ok()
        || text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .is_some_and(|t| t.parse::<IpAddr>().is_ok())
    {
        return Err(PeekError::Malformed(
            "server_name is an IP literal (RFC 6066 forbids it)",
        ));
    }
    let lower = text.to_ascii_lowercase();
    if rustls_pki_types::DnsName::try_from(lower.as_str()).is_err() {
        return Err(PeekError::Malformed("server_name is not a valid DNS name"));
    }
    Ok(lower)
}

/// RFC 7301 `ProtocolNameList`.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, PeekError> {
    let mut outer = Reader::new(data);
    let list = outer
        .vec_u16()
        .ok_or(PeekError::Malformed("truncated ALPN list"))?;
    if !outer.is_empty() {
        return Err(PeekError::Malformed("trailing bytes after ALPN list"));
    }
    if list.is_empty() {
        return Err(PeekError::Malformed("empty ALPN list"));
    }
    let mut r = Reader::new(list);
    let mut protocols = Vec::new();
    while !r.is_empty() {
        let name = r
            .vec_u8()
            .ok_or(PeekError::Malformed("truncated ALPN protocol name"))?;
        if name.is_empty() {
            return Err(PeekError::Malformed("empty ALPN protocol name"));
        }
        protocols.push(name.to_vec());
    }
    Ok(protocols)
}

/// Bounds-checked big-endian reader; every accessor returns `None` instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec_u8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    fn vec_u16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// Reads from `io` until `buf` holds a complete ClientHello (or proves it never will), and
/// parses it.
///
/// `buf` may already hold bytes read earlier; every byte read is appended to it and left there
/// whatever the outcome, so the caller can replay them with [`PrefixedIo`] into a TLS server or
/// an upstream splice. Reads stop at `max` bytes (then [`PeekError::TooLarge`]).
///
/// There is no timeout here: wrap the call in `tokio::time::timeout`. That is safe, because the
/// future is cancel-safe: a read that has not completed has not touched `buf`.
pub async fn read_client_hello<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<ClientHelloInfo, PeekError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    loop {
        match parse_client_hello_with_limit(buf, max) {
            Err(PeekError::Incomplete { needed }) => {
                // The parser guarantees `buf.len() + needed <= max` here.
                let room = max.saturating_sub(buf.len());
                let want = needed.max(room.min(READ_CHUNK));
                // Reserving does not change the contents; without it `Vec`'s `BufMut` would
                // offer as little as 64 bytes of spare capacity per read.
                buf.reserve(want);
                let mut limited = (&mut *buf).limit(want);
                // `read_buf` writes into spare capacity and commits only on completion, which
                // is what makes this future cancel-safe.
                let n = io.read_buf(&mut limited).await?;
                if n == 0 {
                    return Err(PeekError::UnexpectedEof {
                        received: buf.len(),
                    });
                }
            }
            other => return other,
        }
    }
}

/// A stream that first replays `prefix`, then reads from the inner stream; writes go straight
/// to the inner stream.
///
/// After [`read_client_hello`], wrap the connection as `PrefixedIo::new(buf.into(), stream)`
/// and hand it to `tokio_rustls::TlsAcceptor` (which then sees the ClientHello as if nothing
/// had been read) or copy it to an upstream unchanged.
#[derive(Debug)]
pub struct PrefixedIo<S> {
    prefix: Bytes,
    inner: S,
}

/// The same type under the name hyper uses for it.
pub type Rewind<S> = PrefixedIo<S>;

impl<S> PrefixedIo<S> {
    /// Replays `prefix` before the bytes of `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        PrefixedIo { prefix, inner }
    }

    /// The part of the prefix not yet read.
    pub fn pending_prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner stream, mutably. Reading from it directly skips the pending prefix.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The unread prefix and the inner stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

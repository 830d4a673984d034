//! Splitting a `text/event-stream` body into whole server-sent events, however its bytes were
//! split on the wire, for the stream phase of a handler (`response = { mode = "stream" }`).
//!
//! An event is its lines and the empty line that ends it, as the server wrote them. Lines end
//! in CRLF, LF or CR (the HTML standard's event-stream grammar). A CR that ends an event and
//! is the last byte received so far is not held back waiting to see whether an LF follows:
//! the event goes out at once and an LF that arrives next is dropped, which every conforming
//! parser reads the same way (it cannot tell `\r` + later `\n` from `\r\n`). The buffer holds
//! at most one partial event, bounded by the binding's `max_event_bytes`.
use bytes::{Bytes, BytesMut};

/// An event grew past the bound before its end arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a server-sent event is larger than {max} bytes")]
pub struct EventTooLarge {
    /// The bound (`max_event_bytes`).
    pub max: usize,
}

/// The incremental splitter of one event stream.
#[derive(Debug)]
pub struct SseSplitter {
    buf: BytesMut,
    max: usize,
    /// No byte of the current line yet (a line ending here ends the event).
    line_start: bool,
    /// The previous byte was a CR: an LF now completes that line ending.
    after_cr: bool,
    /// An event ended on a CR that was the last byte seen: an LF first in the next input is
    /// that CR's partner.
    skip_lf: bool,
}

impl SseSplitter {
    /// A splitter whose events are at most `max` bytes.
    pub fn new(max: usize) -> SseSplitter {
        SseSplitter {
            buf: BytesMut::new(),
            max: max.max(1),
            line_start: true,
            after_cr: false,
            skip_lf: false,
        }
    }

    /// Feed the next bytes; every event they complete is appended to `out`, in order.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) -> Result<(), EventTooLarge> {
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        let mut start = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            i += 1;
            match b {
                b'\n' if self.after_cr => {
                    // The second half of a CRLF whose CR was already counted.
                    self.after_cr = false;
                }
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if !self.line_start {
                        self.line_start = true;
                        continue;
                    }
                    // An empty line: the event ends here (with the LF of a CRLF, if present).
                    if b == b'\r' {
                        match input.get(i) {
                            Some(b'\n') => i += 1,
                            Some(_) => {}
                            None => self.skip_lf = true,
                        }
                        self.after_cr = false;
                    }
                    self.take(&input[start..i], out)?;
                    start = i;
                }
                _ => {
                    self.after_cr = false;
                    self.line_start = false;
                }
            }
        }
        let rest = &input[start..];
        if self.buf.len() + rest.len() > self.max {
            return Err(EventTooLarge { max: self.max });
        }
        self.buf.extend_from_slice(rest);
        Ok(())
    }

    /// The end of the stream: the bytes of an unfinished event, if any (passed on as a last
    /// piece; clients discard an unfinished event themselves).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }

    /// Bytes buffered for the event under way.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, tail: &[u8], out: &mut Vec<Bytes>) -> Result<(), EventTooLarge> {
        if self.buf.len() + tail.len() > self.max {
            return Err(EventTooLarge { max: self.max });
        }
        let event = if self.buf.is_empty() {
            Bytes::copy_from_slice(tail)
        } else {
            self.buf.extend_from_slice(tail);
            self.buf.split().freeze()
        };
        out.push(event);
        Ok(())
    }
}

/// Whether a response with this `content-type` is an event stream.
pub fn is_event_stream(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let essence = ct.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// Split `chunk` into pieces of at most `max` bytes (the stream phase of a body that is not an
/// event stream: its chunks as they arrived, none larger than the bound).
pub fn pieces(chunk: Bytes, max: usize) -> impl Iterator<Item = Bytes> {
    let max = max.max(1);
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(max);
        Some(rest.split_to(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(
        chunks: &[&[u8]],
        max: usize,
    ) -> Result<(Vec<Bytes>, Option<Bytes>), EventTooLarge> {
        let mut s = SseSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out)?;
        }
        Ok((out, s.finish()))
    }

    #[test]
    fn one_event_per_blank_line_with_every_line_ending() {
        let (ev, rest) = split_all(
            &[b"event: a\ndata: 1\n\ndata: 2\r\n\r\ndata: 3\r\rdata: 4\n"],
            1024,
        )
        .unwrap();
        assert_eq!(
            ev,
            vec![
                Bytes::from_static(b"event: a\ndata: 1\n\n"),
                Bytes::from_static(b"data: 2\r\n\r\n"),
                Bytes::from_static(b"data: 3\r\r"),
            ]
        );
        assert_eq!(rest, Some(Bytes::from_static(b"data: 4\n")));
    }

    #[test]
    fn an_event_split_at_every_byte_comes_out_whole() {
        let input: &[u8] = b": comment\nevent: endpoint\ndata: /messages?session_id=1\r\n\r\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (ev, rest) = split_all(&chunks, 1024).unwrap();
        // The final CR arrived alone: the event went out without waiting for its LF.
        assert_eq!(ev, vec![Bytes::copy_from_slice(&input[..input.len() - 1])]);
        assert_eq!(rest, None);
        let lf_only: &[u8] = b"event: endpoint\ndata: /messages\n\n";
        let chunks: Vec<&[u8]> = lf_only.chunks(1).collect();
        let (ev, _) = split_all(&chunks, 1024).unwrap();
        assert_eq!(ev, vec![Bytes::copy_from_slice(lf_only)]);
    }

    #[test]
    fn a_crlf_split_after_the_final_cr_loses_only_its_lf() {
        let (ev, rest) = split_all(&[b"data: x\r\n\r", b"\ndata: y\n\n"], 1024).unwrap();
        assert_eq!(
            ev,
            vec![
                Bytes::from_static(b"data: x\r\n\r"),
                Bytes::from_static(b"data: y\n\n"),
            ]
        );
        assert_eq!(rest, None);
    }

    #[test]
    fn a_cr_only_stream_is_not_held_back() {
        let (ev, _) = split_all(&[b"data: x\r\r"], 1024).unwrap();
        assert_eq!(ev, vec![Bytes::from_static(b"data: x\r\r")]);
    }

    #[test]
    fn an_event_past_the_bound_is_refused_even_before_it_ends() {
        assert_eq!(
            split_all(&[b"data: 0123456789"], 8),
            Err(EventTooLarge { max: 8 })
        );
        assert_eq!(
            split_all(&[b"data: 01", b"\n\n"], 8),
            Err(EventTooLarge { max: 8 })
        );
        // Exactly the bound is fine.
        let (ev, _) = split_all(&[b"data: 1", b"\n\n"], 9).unwrap();
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn blank_lines_between_events_are_events_of_their_own() {
        // A lone empty line is a (no-op) event: it is passed to the guest like the others so
        // the bytes sent are the bytes received.
        let (ev, _) = split_all(&[b"\n\ndata: a\n\n"], 64).unwrap();
        assert_eq!(
            ev,
            vec![
                Bytes::from_static(b"\n"),
                Bytes::from_static(b"\n"),
                Bytes::from_static(b"data: a\n\n"),
            ]
        );
    }

    #[test]
    fn content_types() {
        assert!(is_event_stream(Some(b"text/event-stream")));
        assert!(is_event_stream(Some(b"Text/Event-Stream; charset=utf-8")));
        assert!(!is_event_stream(Some(b"application/json")));
        assert!(!is_event_stream(None));
    }

    #[test]
    fn pieces_are_bounded() {
        let p: Vec<Bytes> = pieces(Bytes::from_static(b"abcdefg"), 3).collect();
        assert_eq!(p, vec!["abc", "def", "g"]);
        assert_eq!(pieces(Bytes::new(), 3).count(), 0);
    }

    /// The lines of an event, without their endings (what a client parses).
    fn lines(event: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut i = 0;
        while i < event.len() {
            match event[i] {
                b'\r' => {
                    out.push(std::mem::take(&mut cur));
                    if event.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => out.push(std::mem::take(&mut cur)),
                b => cur.push(b),
            }
            i += 1;
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    fn line_ending() -> impl Strategy<Value = &'static [u8]> {
        prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])]
    }

    fn event() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(("[a-z: ]{1,12}", line_ending()), 1..4),
            line_ending(),
        )
            .prop_map(|(ls, mut end)| {
                let mut e = Vec::new();
                for (l, le) in ls {
                    e.extend_from_slice(l.as_bytes());
                    e.extend_from_slice(le);
                }
                // After a CR an LF would complete that line's ending, not make an empty line.
                if e.ends_with(b"\r") && end == b"\n" {
                    end = b"\r";
                }
                e.extend_from_slice(end);
                e
            })
    }

    proptest! {
        /// However the stream is cut, the same events come out, each whole; the bytes sent are
        /// the bytes received except an LF dropped right after a CR that ended an event at a
        /// cut.
        #[test]
        fn any_split_yields_the_same_events(
            events in prop::collection::vec(event(), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let input: Vec<u8> = events.concat();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for a in at {
                chunks.push(&input[prev..a]);
                prev = a;
            }
            chunks.push(&input[prev..]);
            let (out, rest) = split_all(&chunks, 1 << 16).unwrap();
            prop_assert_eq!(rest, None);
            prop_assert_eq!(out.len(), events.len());
            for (got, want) in out.iter().zip(&events) {
                prop_assert_eq!(lines(got), lines(want));
                let dropped_lf = want.ends_with(b"\r\n") && got[..] == want[..want.len() - 1];
                prop_assert!(got[..] == want[..] || dropped_lf, "{:?} vs {:?}", got, want);
            }
        }

        /// Memory stays bounded: arbitrary bytes either split or fail, never buffering more
        /// than the bound.
        #[test]
        fn the_buffer_never_passes_the_bound(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
            max in 1usize..128,
        ) {
            let mut s = SseSplitter::new(max);
            let mut out = Vec::new();
            for c in &chunks {
                if s.push(c, &mut out).is_err() {
                    break;
                }
                prop_assert!(s.buffered() <= max);
            }
            for e in &out {
                prop_assert!(e.len() <= max);
            }
        }
    }
}

//! Server-sent events (the WHATWG `text/event-stream` format) in a whole body: split into
//! events, with the byte ranges needed to rewrite one event and keep the others byte for
//! byte. Pure: unit-tested on the host.

use std::ops::Range;

/// One event: its lines (without line endings) and where the event ends in the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The byte range in the body, from the first line through the blank line ending it
    /// (or through the end of the body, for a last event without one).
    pub span: Range<usize>,
    /// The byte ranges of its lines, without their endings.
    pub lines: Vec<Range<usize>>,
}

/// The lines of `body`: (the line without its ending, where the next line starts). Endings
/// are CRLF, LF or CR, as the format allows.
fn lines(body: &[u8]) -> impl Iterator<Item = (Range<usize>, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= body.len() {
            return None;
        }
        let start = pos;
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(body.len(), |i| start + i);
        let next = match body.get(end) {
            Some(b'\r') if body.get(end + 1) == Some(&b'\n') => end + 2,
            Some(_) => end + 1,
            None => end,
        };
        pos = next;
        Some((start..end, next))
    })
}

/// The events of a body. A last event without its blank line is an event too: the guard
/// would rather check it than let it past unchecked.
pub fn events(body: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut cur: Option<Event> = None;
    for (line, next) in lines(body) {
        if line.is_empty() {
            if let Some(mut e) = cur.take() {
                e.span.end = next;
                out.push(e);
            }
            continue;
        }
        let e = cur.get_or_insert_with(|| Event {
            span: line.start..next,
            lines: Vec::new(),
        });
        e.span.end = next;
        e.lines.push(line);
    }
    out.extend(cur);
    out
}

/// A line's field name and value (`field: value`, one leading space of the value dropped);
/// `None` for a comment line.
fn field<'a>(body: &'a [u8], line: &Range<usize>) -> Option<(&'a [u8], &'a [u8])> {
    let l = &body[line.clone()];
    if l.first() == Some(&b':') {
        return None;
    }
    Some(match l.iter().position(|&b| b == b':') {
        Some(i) => {
            let v = &l[i + 1..];
            (&l[..i], v.strip_prefix(b" ").unwrap_or(v))
        }
        None => (l, &[][..]),
    })
}

impl Event {
    /// The event's data: its `data` lines joined by LF (`None` when it has none).
    pub fn data(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for l in &self.lines {
            if let Some((b"data", v)) = field(body, l) {
                match &mut out {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(v);
                    }
                    None => out = Some(v.to_vec()),
                }
            }
        }
        out
    }

    /// The event with `data` as its data (one line: JSON has no raw line breaks), its other
    /// fields and comments kept in order, ended by a blank line.
    pub fn with_data(&self, body: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut written = false;
        for l in &self.lines {
            if matches!(field(body, l), Some((b"data", _))) {
                if !written {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(data);
                    out.push(b'\n');
                    written = true;
                }
            } else {
                out.extend_from_slice(&body[l.clone()]);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines_with_any_line_ending() {
        let body = b": comment\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\nid: 2\ndata: x\ndata: y\n\ndata: z\rdata: w\r\rdata: tail";
        let ev = events(body);
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0].data(body).unwrap(), b"{\"a\":1}");
        assert_eq!(ev[1].data(body).unwrap(), b"x\ny");
        assert_eq!(ev[2].data(body).unwrap(), b"z\nw");
        assert_eq!(ev[3].data(body).unwrap(), b"tail");
        // The spans cover the body: a rewrite that keeps them is the same body.
        let mut at = 0;
        for e in &ev {
            assert_eq!(e.span.start, at);
            at = e.span.end;
        }
        assert_eq!(at, body.len());
    }

    #[test]
    fn data_field_forms() {
        let body = b"data:nospace\ndata\ndata:  two\n\n";
        let ev = events(body);
        assert_eq!(ev[0].data(body).unwrap(), b"nospace\n\n two");
        let none = b"event: ping\n\n";
        assert_eq!(events(none)[0].data(none), None);
    }

    #[test]
    fn with_data_keeps_the_other_fields_in_order() {
        let body = b"event: message\r\nid: 7\r\ndata: a\r\ndata: b\r\n: note\r\n\r\n";
        let ev = events(body);
        let out = ev[0].with_data(body, b"{\"x\":2}");
        assert_eq!(out, b"event: message\nid: 7\ndata: {\"x\":2}\n: note\n\n");
    }
}

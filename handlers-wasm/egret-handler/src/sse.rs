//! One server-sent event (the WHATWG `text/event-stream` format), as the stream phase hands it
//! to `on_event`: read its fields and write a replacement.
//!
//! ```
//! use egret_handler::sse::Event;
//! let ev = Event::parse(b"event: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n");
//! assert_eq!(ev.event_type(), "message");
//! assert_eq!(ev.data().as_deref(), Some("{\"a\":\n1}"));
//! let out = ev.with_data("{}").to_bytes();
//! assert_eq!(out, b"event: message\ndata: {}\n\n");
//! ```

/// The fields of one event, in order (comments dropped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `(field, value)` pairs, one per line; a value's single leading space is dropped.
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// Parse one event; lines end in CRLF, LF or CR; invalid UTF-8 is replaced.
    pub fn parse(bytes: &[u8]) -> Event {
        let text = String::from_utf8_lossy(bytes);
        let mut fields = Vec::new();
        let mut rest: &str = &text;
        while !rest.is_empty() {
            let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
            let line = &rest[..end];
            rest = &rest[end..];
            rest = rest
                .strip_prefix("\r\n")
                .or_else(|| rest.strip_prefix('\r'))
                .or_else(|| rest.strip_prefix('\n'))
                .unwrap_or(rest);
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            fields.push((name.to_owned(), value.to_owned()));
        }
        Event { fields }
    }

    /// The `event` field, or `"message"` (the type a client dispatches without one).
    pub fn event_type(&self) -> &str {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == "event")
            .map_or("message", |(_, v)| v.as_str())
    }

    /// The `data` lines joined by `\n`; `None` when the event has none.
    pub fn data(&self) -> Option<String> {
        let lines: Vec<&str> = self
            .fields
            .iter()
            .filter(|(n, _)| n == "data")
            .map(|(_, v)| v.as_str())
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// The same event with its data replaced (its other fields kept, the data where the first
    /// `data` line was, or last).
    pub fn with_data(&self, data: &str) -> Event {
        let mut fields = Vec::with_capacity(self.fields.len() + 1);
        let mut placed = false;
        let new = || data.split('\n').map(|l| ("data".to_owned(), l.to_owned()));
        for (n, v) in &self.fields {
            if n == "data" {
                if !placed {
                    fields.extend(new());
                    placed = true;
                }
            } else {
                fields.push((n.clone(), v.clone()));
            }
        }
        if !placed {
            fields.extend(new());
        }
        Event { fields }
    }

    /// The event as bytes: one `field: value` line each, LF endings, and the blank line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in &self.fields {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_comments_and_line_endings() {
        let ev = Event::parse(b": keep-alive\rid: 7\rdata:x\r\rignored-after");
        assert_eq!(
            ev.fields,
            vec![
                ("id".to_owned(), "7".to_owned()),
                ("data".to_owned(), "x".to_owned()),
                ("ignored-after".to_owned(), String::new()),
            ]
        );
        assert_eq!(ev.event_type(), "message");
        assert_eq!(Event::parse(b": only a comment\n\n").data(), None);
    }

    #[test]
    fn replacing_data_keeps_the_other_fields() {
        let ev = Event::parse(b"event: endpoint\nid: 1\ndata: a\ndata: b\n\n");
        assert_eq!(ev.data().as_deref(), Some("a\nb"));
        assert_eq!(
            ev.with_data("x\ny").to_bytes(),
            b"event: endpoint\nid: 1\ndata: x\ndata: y\n\n"
        );
        assert_eq!(
            Event::default().with_data("z").to_bytes(),
            b"data: z\n\n".to_vec()
        );
    }
}

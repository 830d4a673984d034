//! Token usage from a chat completions response, fed chunk by chunk as egret's observe phase
//! hands them over (no host calls here: unit-tested on the host).
//!
//! The response's `content-type` (from the head, which `on_response` sees before the chunks)
//! decides what the body is: a JSON `chat.completion` object (parsed once it is complete) or a
//! server-sent event stream whose `data:` events are JSON chunks, one of which (OpenAI: the
//! last before `[DONE]`) carries `usage`; another type carries no usage. Without a
//! `content-type`, the body's first non-white-space byte decides: `{` JSON, anything else SSE. Lines and events may be cut
//! anywhere by the chunking; the partial line and the event's data so far are kept here
//! between chunks.

use serde_json::Value;

/// Largest JSON response kept to be parsed; a larger one is not counted (a completion is
/// bounded by its `max_tokens`, so only a misbehaving upstream sends that much).
pub const MAX_JSON_BYTES: usize = 4 << 20;
/// Largest SSE line or event kept; a longer one is skipped (usage chunks are a few hundred
/// bytes).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Follows one response body and remembers the largest `usage` total it carried.
#[derive(Debug, Default)]
pub struct UsageTracker {
    mode: Mode,
    total: Option<u64>,
}

#[derive(Debug, Default)]
enum Mode {
    /// Nothing but white space seen yet.
    #[default]
    Sniff,
    /// Neither JSON nor an event stream: nothing to count.
    Ignore,
    Json {
        buf: Vec<u8>,
        /// Too large to keep, or already parsed: the rest is ignored.
        done: bool,
    },
    Sse(Sse),
}

#[derive(Debug, Default)]
struct Sse {
    /// The current line so far (without its end).
    line: Vec<u8>,
    /// The current line grew too long: drop it.
    skipping_line: bool,
    /// The current event's data lines, joined by `\n`.
    data: Vec<u8>,
    /// The current event lost a line or grew too long: drop it.
    broken_event: bool,
    /// The last chunk ended in `\r`: a `\n` starting the next one belongs to that line end.
    after_cr: bool,
}

impl UsageTracker {
    /// A tracker for one response.
    pub fn new() -> UsageTracker {
        UsageTracker::default()
    }

    /// A tracker for a response of this `content-type` (`None`: sniff the body).
    pub fn for_content_type(content_type: Option<&str>) -> UsageTracker {
        let Some(ct) = content_type else {
            return UsageTracker::new();
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mode = if essence == "text/event-stream" {
            Mode::Sse(Sse::default())
        } else if essence == "application/json" || essence.ends_with("+json") {
            Mode::Json {
                buf: Vec::new(),
                done: false,
            }
        } else {
            Mode::Ignore
        };
        UsageTracker { mode, total: None }
    }

    /// The largest `usage` total seen so far (`total_tokens`, else prompt + completion).
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut chunk = chunk;
        if let Mode::Sniff = self.mode {
            let Some(first) = chunk.iter().position(|b| !b.is_ascii_whitespace()) else {
                return;
            };
            chunk = &chunk[first..];
            self.mode = if chunk[0] == b'{' {
                Mode::Json {
                    buf: Vec::new(),
                    done: false,
                }
            } else {
                Mode::Sse(Sse::default())
            };
        }
        match &mut self.mode {
            Mode::Sniff | Mode::Ignore => {}
            Mode::Json { buf, done } => {
                if *done {
                    return;
                }
                if buf.len() + chunk.len() > MAX_JSON_BYTES {
                    *done = true;
                    *buf = Vec::new();
                    return;
                }
                buf.extend_from_slice(chunk);
                // Parse as soon as the object may be complete (usually only the last chunk
                // ends in `}`), so the usage is counted before the client has read the end.
                if chunk.trim_ascii_end().ends_with(b"}") {
                    if let Ok(v) = serde_json::from_slice::<Value>(buf) {
                        *done = true;
                        *buf = Vec::new();
                        note(&mut self.total, &v);
                    }
                }
            }
            Mode::Sse(sse) => sse.feed(chunk, &mut self.total),
        }
    }

    /// The body ended (or was cut off): an SSE event not closed by a blank line still counts.
    pub fn finish(&mut self) {
        match &mut self.mode {
            Mode::Sse(sse) => {
                if !sse.line.is_empty() || sse.skipping_line {
                    sse.end_line(&mut self.total);
                }
                sse.dispatch(&mut self.total);
            }
            Mode::Json { buf, done } if !*done => {
                if let Ok(v) = serde_json::from_slice::<Value>(buf) {
                    note(&mut self.total, &v);
                }
                *done = true;
                *buf = Vec::new();
            }
            _ => {}
        }
    }
}

impl Sse {
    fn feed(&mut self, chunk: &[u8], total: &mut Option<u64>) {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if rest.first() == Some(&b'\n') {
                rest = &rest[1..];
            }
        }
        // Lines end in `\n`, `\r\n` or `\r` (the SSE grammar).
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&rest[..i]);
            self.end_line(total);
            let mut next = i + 1;
            if rest[i] == b'\r' {
                match rest.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            rest = &rest[next..];
        }
        self.push(rest);
    }

    fn push(&mut self, part: &[u8]) {
        if self.skipping_line {
            return;
        }
        if self.line.len() + part.len() > MAX_EVENT_BYTES {
            self.skipping_line = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self, total: &mut Option<u64>) {
        let line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.skipping_line) {
            // An over-long line may have been data: the event cannot be trusted.
            self.broken_event = true;
            return;
        }
        if line.is_empty() {
            self.dispatch(total);
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        if field != b"data" || self.broken_event {
            return;
        }
        if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
            self.broken_event = true;
            self.data = Vec::new();
            return;
        }
        if !self.data.is_empty() {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
    }

    fn dispatch(&mut self, total: &mut Option<u64>) {
        let data = std::mem::take(&mut self.data);
        if std::mem::take(&mut self.broken_event) || data.is_empty() || data == b"[DONE]" {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&data) {
            note(total, &v);
        }
    }
}

/// Remember `v`'s usage total if it has one larger than what was seen (providers that report
/// usage in every chunk report it cumulatively).
fn note(total: &mut Option<u64>, v: &Value) {
    let Some(usage) = v.get("usage").filter(|u| u.is_object()) else {
        return;
    };
    let n = usage
        .get("total_tokens")
        .and_then(Value::as_u64)
        .or_else(|| {
            let p = usage.get("prompt_tokens").and_then(Value::as_u64)?;
            let c = usage.get("completion_tokens").and_then(Value::as_u64)?;
            p.checked_add(c)
        });
    if let Some(n) = n {
        *total = Some(total.map_or(n, |t| t.max(n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the test server sends for `stream: true` with `include_usage` (abridged).
    const SSE: &str = concat!(
        ": keep-alive comment\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"say \"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}],\"usage\":null}\n\n",
        "event: message\nid: 7\n",
        "data: {\"id\":\"c1\",\"choices\":[],\n",
        "data: \"usage\":{\"prompt_tokens\":12,\"completion_tokens\":16,\"total_tokens\":28}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(chunks: &[&[u8]]) -> Option<u64> {
        let mut t = UsageTracker::new();
        for c in chunks {
            t.feed(c);
        }
        t.finish();
        t.total()
    }

    fn run_typed(ct: Option<&str>, body: &[u8]) -> Option<u64> {
        let mut t = UsageTracker::for_content_type(ct);
        t.feed(body);
        t.finish();
        t.total()
    }

    #[test]
    fn the_content_type_decides_what_the_body_is() {
        let json = br#"{"usage":{"total_tokens":7}}"#;
        assert_eq!(run_typed(Some("application/json"), json), Some(7));
        assert_eq!(
            run_typed(Some("Application/JSON; charset=utf-8"), json),
            Some(7)
        );
        assert_eq!(run_typed(Some("application/problem+json"), json), Some(7));
        assert_eq!(run_typed(None, json), Some(7));
        let sse = SSE.as_bytes();
        assert_eq!(
            run_typed(Some("text/event-stream; charset=utf-8"), sse),
            Some(28)
        );
        // Leading blank lines do not make an event stream anything else.
        let events = b"\n\ndata: {\"usage\":{\"total_tokens\":3}}\n\n";
        assert_eq!(run_typed(Some("text/event-stream"), events), Some(3));
        // Another type carries no usage, whatever its bytes look like.
        assert_eq!(run_typed(Some("text/html"), json), None);
        assert_eq!(run_typed(Some("text/plain"), sse), None);
    }

    #[test]
    fn sse_usage_survives_every_split_into_two_and_three_chunks() {
        let b = SSE.as_bytes();
        assert_eq!(run(&[b]), Some(28));
        for i in 0..=b.len() {
            assert_eq!(run(&[&b[..i], &b[i..]]), Some(28), "split at {i}");
        }
        for i in (0..=b.len()).step_by(7) {
            for j in i..=b.len() {
                assert_eq!(run(&[&b[..i], &b[i..j], &b[j..]]), Some(28), "{i}/{j}");
            }
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(run(&bytes), Some(28), "byte by byte");
    }

    #[test]
    fn crlf_and_cr_line_ends_split_anywhere() {
        for sep in ["\r\n", "\r"] {
            let s = SSE.replace('\n', sep);
            let b = s.as_bytes();
            for i in 0..=b.len() {
                assert_eq!(run(&[&b[..i], &b[i..]]), Some(28), "{sep:?} split at {i}");
            }
        }
    }

    #[test]
    fn json_responses_are_counted_in_any_chunking() {
        let body = br#"  {"id":"c2","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"} tricky {"}}],
            "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        for i in 0..=body.len() {
            assert_eq!(run(&[&body[..i], &body[i..]]), Some(7), "split at {i}");
        }
        // counted as soon as the object is complete, before the end
        let mut t = UsageTracker::new();
        t.feed(&body[..20]);
        assert_eq!(t.total(), None);
        t.feed(&body[20..]);
        assert_eq!(t.total(), Some(7));
        // without total_tokens: prompt + completion
        assert_eq!(
            run(&[br#"{"usage":{"prompt_tokens":2,"completion_tokens":5}}"#]),
            Some(7)
        );
    }

    #[test]
    fn no_usage_and_garbage_count_nothing() {
        assert_eq!(run(&[b""]), None);
        assert_eq!(run(&[b"   \n "]), None);
        assert_eq!(run(&[br#"{"error":{"message":"bad"}}"#]), None);
        assert_eq!(run(&[b"data: {\"usage\":null}\n\ndata: [DONE]\n\n"]), None);
        assert_eq!(run(&[b"data: not json\n\n", b"\xff\xfe"]), None);
        assert_eq!(run(&[b"{\"usage\": {\"total_tokens\": 5"]), None);
    }

    #[test]
    fn an_unterminated_last_event_and_cumulative_usage() {
        // cut off before the blank line: still counted at the end
        assert_eq!(run(&[b"data: {\"usage\":{\"total_tokens\":9}}"]), Some(9));
        // usage in every chunk, cumulative: the largest
        let s =
            b"data: {\"usage\":{\"total_tokens\":3}}\n\ndata: {\"usage\":{\"total_tokens\":8}}\n\n";
        assert_eq!(run(&[s]), Some(8));
    }

    #[test]
    fn over_long_lines_are_skipped_without_losing_the_stream() {
        let mut t = UsageTracker::new();
        t.feed(b"data: ");
        let big = vec![b'x'; MAX_EVENT_BYTES / 2 + 1];
        t.feed(&big);
        t.feed(&big);
        t.feed(b"\n\ndata: {\"usage\":{\"total_tokens\":4}}\n\n");
        t.finish();
        assert_eq!(t.total(), Some(4));
    }
}

//! The echo guard: secret values egret filled into a request are masked in the response the
//! sandbox receives.
//!
//! egret injects credentials the sandbox never holds. An upstream that reflects the request (a
//! debug endpoint such as `/anything`, an error page quoting the headers it refused, a server
//! logging the request into its answer) would hand such a credential straight back. For each
//! request, [`Patterns`] is built from the values egret filled in, and every occurrence of
//! each value in the response — headers ([`mask_headers`]), body ([`Masker`],
//! [`MaskedBody`]) and trailers — has each of its bytes replaced by `*`. Masking preserves
//! length, so `content-length`, chunk sizes and the body's size hint stay valid.
//!
//! Besides the raw bytes, the forms a reflection commonly takes are searched: standard base64
//! (padded and unpadded), URL-safe base64 without padding (a JWT-style echo) and percent-encoding
//! (RFC 3986 unreserved bytes kept; upper- and lower-case hex). Values shorter than
//! [`MIN_SECRET_LEN`] are not searched: masking every occurrence of a short string would damage
//! innocent responses and hide little; the integrator warns about them ([`is_too_short`]).
//!
//! What it cannot catch: a value the upstream re-encodes in any other way (hex, JSON `\uXXXX`
//! or `\/` escapes, HTML entities, base64 of a larger text in which the value sits at another
//! offset than a multiple of three, e.g. inside base64 of the whole echoed request), a value
//! split by the upstream's own formatting (line-wrapped base64, a value cut in two), and
//! compressed bodies — the integrator asks upstream for `identity` encoding, and a body that
//! still arrives compressed is opaque here. It is a guard against accidental reflection, not
//! against an upstream that wants to smuggle the value out.
//!
//! Streaming keeps the timing of the stream: a chunk is passed on at once except for the
//! longest tail that could still be the beginning of a searched form, which is held until the
//! next chunk decides it (or the body ends). Server-sent events end in `\n\n` and JSON lines in
//! `\n`, which begin no secret, so such streams are never delayed; and a chunk in which nothing
//! matched and nothing is held is returned as the very same [`Bytes`], without a copy.
use aho_corasick::{packed, AhoCorasick, AhoCorasickBuilder, Input, MatchKind, Span};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Values shorter than this many bytes are not searched for: too likely to occur in innocent
/// responses.
pub const MIN_SECRET_LEN: usize = 8;

/// Whether `value` is too short to be searched for (see [`MIN_SECRET_LEN`]); the integrator
/// warns that such a secret would be reflected unmasked.
pub fn is_too_short(value: impl AsRef<[u8]>) -> bool {
    value.as_ref().len() < MIN_SECRET_LEN
}

/// The byte strings to mask in one response: every searched form of every secret value filled
/// into its request, and the automaton finding them. Built once per request.
///
/// An *occurrence* is a position where at least one form begins; forms beginning at the same
/// position (base64 with and without padding, a value that is a prefix of another) count once.
pub struct Patterns {
    /// `None` when there is nothing to search for.
    finder: Option<Finder>,
    /// The forms, deduplicated and sorted: [`Patterns::is_proper_prefix`] bisects them.
    forms: Vec<Box<[u8]>>,
    /// Bytes that begin some form: most tail positions are ruled out with one lookup.
    first_bytes: [bool; 256],
    max_len: usize,
    skipped: usize,
}

impl std::fmt::Debug for Patterns {
    // The derived form would print the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("forms", &self.forms.len())
            .field("max_len", &self.max_len)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Patterns {
    /// The patterns for the secret values filled into one request. Values shorter than
    /// [`MIN_SECRET_LEN`] are skipped (counted in [`Patterns::skipped`]).
    ///
    /// # Panics
    /// If the forms exceed what the automaton can address (about 2³¹ bytes in all); a
    /// request's header budget keeps them many orders of magnitude below that.
    pub fn new<S: AsRef<[u8]>>(values: &[S]) -> Patterns {
        Patterns::build(values, true)
    }

    /// `new`, and with `packed: false` never the vectorised searcher (so tests cover both).
    fn build<S: AsRef<[u8]>>(values: &[S], packed: bool) -> Patterns {
        let mut forms = std::collections::BTreeSet::new();
        let mut skipped = 0;
        for value in values {
            let value = value.as_ref();
            if is_too_short(value) {
                skipped += 1;
                continue;
            }
            forms.insert(value.to_vec());
            forms.insert(STANDARD.encode(value).into_bytes());
            forms.insert(STANDARD_NO_PAD.encode(value).into_bytes());
            forms.insert(URL_SAFE_NO_PAD.encode(value).into_bytes());
            forms.insert(percent_encode(value, b"0123456789ABCDEF"));
            forms.insert(percent_encode(value, b"0123456789abcdef"));
        }
        let forms: Vec<Box<[u8]>> = forms.into_iter().map(Vec::into_boxed_slice).collect();
        let mut first_bytes = [false; 256];
        for form in &forms {
            first_bytes[usize::from(form[0])] = true;
        }
        let finder = (!forms.is_empty()).then(|| Finder::new(&forms, packed));
        Patterns {
            finder,
            max_len: forms.iter().map(|f| f.len()).max().unwrap_or(0),
            forms,
            first_bytes,
            skipped,
        }
    }

    /// Whether there is nothing to search for (no values, or all of them too short).
    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// How many of the values given were too short to be searched for.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The byte strings searched for, sorted. They are secrets: never log them.
    pub fn forms(&self) -> impl Iterator<Item = &[u8]> {
        self.forms.iter().map(|f| &f[..])
    }

    /// Masks every occurrence in `buf` at once; returns how many there were.
    pub fn mask_in_place(&self, buf: &mut [u8]) -> usize {
        let mut spans = Vec::new();
        self.occurrences(buf, buf.len(), &mut spans);
        for &(start, end) in &spans {
            buf[start..end].fill(b'*');
        }
        spans.len()
    }

    /// Appends `(start, end)` of the longest form beginning at each position before
    /// `start_limit` where one begins, in order. Their union is the union of all occurrences of
    /// all forms, since a shorter form at the same start lies inside the longest one.
    fn occurrences(&self, hay: &[u8], start_limit: usize, spans: &mut Vec<(usize, usize)>) {
        let Some(finder) = &self.finder else { return };
        let mut at = 0;
        while at < start_limit {
            match finder.find(hay, at) {
                Some((start, end)) if start < start_limit => {
                    spans.push((start, end));
                    // Not `end`: a form may begin inside this one (overlapping secrets).
                    at = start + 1;
                }
                _ => break,
            }
        }
    }

    /// The length of the longest suffix of `hay` that is a proper prefix of some form: what
    /// must be held back because the next bytes may complete a form.
    fn held_suffix_len(&self, hay: &[u8]) -> usize {
        let from = hay.len().saturating_sub(self.max_len.saturating_sub(1));
        (from..hay.len())
            .find(|&i| self.first_bytes[usize::from(hay[i])] && self.is_proper_prefix(&hay[i..]))
            .map_or(0, |i| hay.len() - i)
    }

    fn is_proper_prefix(&self, s: &[u8]) -> bool {
        // The forms beginning with `s` are contiguous in sorted order and start at the first
        // form not less than `s`; that one may be `s` itself, so the next one is looked at too.
        let first = self.forms.partition_point(|f| &f[..] < s);
        self.forms[first..]
            .iter()
            .take(2)
            .any(|f| f.len() > s.len() && f.starts_with(s))
    }
}

/// Finds the leftmost occurrence of a form at or after a position, the longest one there.
///
/// Leftmost-longest rather than overlapping search: resuming one byte past each match's start
/// still finds every position where a form begins (see `Patterns::occurrences`), and it is
/// what the vectorised searcher supports.
enum Finder {
    /// Teddy, when the CPU has the instructions and there are few enough forms (up to a few
    /// dozen). Preferred because `AhoCorasick` picks its own prefilter, and for one or two
    /// secrets that is a scan for their first bytes: on text (a secret beginning with `s`, its
    /// base64 with `c`) it stops every few bytes and ran at 0.2 GB/s, Teddy at 6 GB/s.
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Finder {
    fn new(forms: &[Box<[u8]>], packed: bool) -> Finder {
        let searcher = packed
            .then(|| {
                packed::Config::new()
                    .match_kind(packed::MatchKind::LeftmostLongest)
                    .builder()
                    .extend(forms)
                    .build()
            })
            .flatten();
        match searcher {
            Some(searcher) => Finder::Packed(searcher),
            None => Finder::Automaton(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(forms)
                    .expect("secret forms fit the automaton"),
            ),
        }
    }

    fn find(&self, hay: &[u8], at: usize) -> Option<(usize, usize)> {
        let m = match self {
            Finder::Packed(s) => s.find_in(hay, Span::from(at..hay.len())),
            Finder::Automaton(ac) => ac.find(Input::new(hay).range(at..)),
        }?;
        Some((m.start(), m.end()))
    }
}

/// Percent-encoding as RFC 3986 §2.1 prescribes for data: unreserved bytes as they are, every
/// other byte as `%` and two hex digits from `hex`.
fn percent_encode(value: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// Masks one response body as it streams: [`Masker::push`] each chunk in order, send what it
/// returns, and at the end send what [`Masker::finish`] returns.
///
/// Concatenated, the output equals the whole body masked at once ([`Patterns::mask_in_place`]),
/// however the body is cut into chunks.
pub struct Masker {
    patterns: Arc<Patterns>,
    /// The held-back tail as received: the next chunk is matched against these bytes.
    held: Vec<u8>,
    /// The same tail as it will be sent: occurrences that ended inside it are masked already.
    held_out: Vec<u8>,
    /// Starts (relative to `held`) of occurrences already counted, so that a longer form
    /// completed at the same start later is not counted again.
    held_counted: Vec<usize>,
    /// Scratch, kept to spare an allocation per chunk.
    spans: Vec<(usize, usize)>,
    /// Scratch: the held tail followed by the beginning of the next chunk.
    boundary: Vec<u8>,
    masked: u64,
}

impl std::fmt::Debug for Masker {
    // The held bytes may be the beginning of a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("held", &self.held.len())
            .field("masked", &self.masked)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// A masker for one body.
    pub fn new(patterns: Arc<Patterns>) -> Masker {
        Masker {
            patterns,
            held: Vec::new(),
            held_out: Vec::new(),
            held_counted: Vec::new(),
            spans: Vec::new(),
            boundary: Vec::new(),
            masked: 0,
        }
    }

    /// Takes the next chunk of the body; returns what may be sent now (possibly empty). When
    /// nothing matched and nothing is held back, that is `chunk` itself.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.patterns.is_empty() || chunk.is_empty() {
            return chunk;
        }
        let p = &*self.patterns;
        let carry = self.held.len();
        let total = carry + chunk.len();
        self.spans.clear();
        if carry > 0 {
            // An occurrence beginning in the held tail ends within `max_len - 1` bytes of it.
            self.boundary.clear();
            self.boundary.extend_from_slice(&self.held);
            let reach = chunk.len().min(p.max_len - 1);
            self.boundary.extend_from_slice(&chunk[..reach]);
            p.occurrences(&self.boundary, carry, &mut self.spans);
        }
        let from_chunk = self.spans.len();
        p.occurrences(&chunk, chunk.len(), &mut self.spans);
        for span in &mut self.spans[from_chunk..] {
            *span = (span.0 + carry, span.1 + carry);
        }
        for &(start, _) in &self.spans {
            if start >= carry || !self.held_counted.contains(&start) {
                self.masked += 1;
            }
        }
        // The tail to hold back now never begins before the one held so far (that was the
        // longest suffix of the earlier data that could begin a form), so it lies in the chunk,
        // or in held tail + chunk when the chunk is short (then `boundary` is exactly that).
        let hold = if carry == 0 || chunk.len() >= p.max_len - 1 {
            p.held_suffix_len(&chunk)
        } else {
            p.held_suffix_len(&self.boundary)
        };
        let keep = total - hold;

        if carry == 0 && self.spans.is_empty() {
            if hold == 0 {
                return chunk;
            }
            self.held.extend_from_slice(&chunk[keep..]);
            self.held_out.extend_from_slice(&chunk[keep..]);
            return chunk.slice(..keep);
        }

        let mut out = BytesMut::with_capacity(total);
        out.extend_from_slice(&self.held_out);
        out.extend_from_slice(&chunk);
        for &(start, end) in &self.spans {
            out[start..end].fill(b'*');
        }
        if keep >= carry {
            self.held.clear();
            self.held.extend_from_slice(&chunk[keep - carry..]);
        } else {
            self.held.drain(..keep);
            self.held.extend_from_slice(&chunk);
        }
        self.held_out.clear();
        self.held_out.extend_from_slice(&out[keep..]);
        self.held_counted.clear();
        self.held_counted.extend(
            self.spans
                .iter()
                .filter(|&&(start, _)| start >= keep)
                .map(|&(start, _)| start - keep),
        );
        out.truncate(keep);
        out.freeze()
    }

    /// The body ended: returns the held-back tail (masked where occurrences ended in it).
    pub fn finish(&mut self) -> Bytes {
        self.held.clear();
        self.held_counted.clear();
        Bytes::from(std::mem::take(&mut self.held_out))
    }

    /// How many occurrences were masked so far.
    pub fn masked_count(&self) -> u64 {
        self.masked
    }
}

/// A masked copy of `value` when some form occurs in it (the copy keeps the sensitive flag).
pub fn mask_header_value(patterns: &Patterns, value: &HeaderValue) -> Option<HeaderValue> {
    mask_value(patterns, value).map(|(masked, _)| masked)
}

fn mask_value(patterns: &Patterns, value: &HeaderValue) -> Option<(HeaderValue, usize)> {
    let mut spans = Vec::new();
    patterns.occurrences(value.as_bytes(), value.len(), &mut spans);
    if spans.is_empty() {
        return None;
    }
    let mut buf = value.as_bytes().to_vec();
    for &(start, end) in &spans {
        buf[start..end].fill(b'*');
    }
    // `*` is a valid field-value byte and every byte left was valid before, so this cannot
    // fail; should it ever, the whole value is withheld rather than passed on.
    let mut masked = HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("*"));
    masked.set_sensitive(value.is_sensitive());
    Some((masked, spans.len()))
}

/// Masks every field of `headers` (response headers or trailers) in place; returns how many
/// occurrences were masked. A field *name* containing a form is renamed with the form masked
/// (`*` is a valid name byte), keeping its values.
pub fn mask_headers(patterns: &Patterns, headers: &mut HeaderMap) -> usize {
    if patterns.is_empty() {
        return 0;
    }
    let mut count = 0;
    for value in headers.values_mut() {
        if let Some((masked, n)) = mask_value(patterns, value) {
            *value = masked;
            count += n;
        }
    }
    let mut spans = Vec::new();
    let leaking: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            spans.clear();
            patterns.occurrences(name.as_str().as_bytes(), name.as_str().len(), &mut spans);
            !spans.is_empty()
        })
        .cloned()
        .collect();
    for name in leaking {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        headers.remove(&name);
        let mut masked = name.as_str().as_bytes().to_vec();
        // Counted once per field line, as the name goes out with each value.
        count += patterns.mask_in_place(&mut masked) * values.len();
        // As for values, this cannot fail; should it, the field is dropped, not passed on.
        if let Ok(masked) = HeaderName::from_bytes(&masked) {
            for value in values {
                headers.append(&masked, value);
            }
        }
    }
    count
}

pin_project_lite::pin_project! {
    /// A body whose data frames pass through a [`Masker`] and whose trailers through
    /// [`mask_headers`]; the held-back tail goes out as a last data frame before the trailers
    /// or the end. Length-preserving: the size hint stays exact.
    ///
    /// Masked occurrences are added to a shared counter as they are found, so whoever writes
    /// the audit event when the body ends can report them. An error from the inner body is
    /// passed on and the held-back tail is dropped, never sent unchecked.
    pub struct MaskedBody<B> {
        #[pin]
        inner: B,
        masker: Masker,
        counter: Arc<AtomicU64>,
        // Trailers waiting behind the held-back tail's data frame.
        trailers: Option<HeaderMap>,
        done: bool,
    }
}

impl<B> MaskedBody<B> {
    /// Wraps `inner`; occurrences masked in it are added to `counter`.
    pub fn new(inner: B, patterns: Arc<Patterns>, counter: Arc<AtomicU64>) -> Self {
        MaskedBody {
            inner,
            masker: Masker::new(patterns),
            counter,
            trailers: None,
            done: false,
        }
    }

    /// The counter occurrences are added to.
    pub fn counter(&self) -> &Arc<AtomicU64> {
        &self.counter
    }
}

impl<B> http_body::Body for MaskedBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        use http_body::Frame;
        let mut this = self.project();
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            let frame = match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    let rest = this.masker.finish();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    let before = this.masker.masked_count();
                    let out = this.masker.push(data);
                    let found = this.masker.masked_count() - before;
                    if found > 0 {
                        this.counter.fetch_add(found, Ordering::Relaxed);
                    }
                    if out.is_empty() {
                        // All of it is held back: nothing to send yet, so read on.
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Err(frame) => frame,
            };
            return Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    let found = mask_headers(&this.masker.patterns, &mut trailers);
                    this.counter.fetch_add(found as u64, Ordering::Relaxed);
                    *this.done = true;
                    let rest = this.masker.finish();
                    if rest.is_empty() {
                        Frame::trailers(trailers)
                    } else {
                        *this.trailers = Some(trailers);
                        Frame::data(rest)
                    }
                }
                // A frame kind this version of http-body does not know carries no data.
                Err(frame) => frame,
            })));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none()
            && (self.done || (self.inner.is_end_stream() && self.masker.held.is_empty()))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.done {
            return http_body::SizeHint::with_exact(0);
        }
        let inner = self.inner.size_hint();
        let held = self.masker.held.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::{Body, Frame};
    use http_body_util::{BodyExt, Full, StreamBody};
    use proptest::prelude::*;

    /// The forms of a value, computed apart from the code under test.
    fn reference_forms(value: &[u8]) -> Vec<Vec<u8>> {
        let percent = |upper: bool| -> Vec<u8> {
            let mut s = String::new();
            for &b in value {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    s.push(char::from(b));
                } else if upper {
                    s += &format!("%{b:02X}");
                } else {
                    s += &format!("%{b:02x}");
                }
            }
            s.into_bytes()
        };
        let padded = STANDARD.encode(value);
        let mut forms = vec![
            value.to_vec(),
            padded.clone().into_bytes(),
            padded.trim_end_matches('=').as_bytes().to_vec(),
            URL_SAFE_NO_PAD.encode(value).into_bytes(),
            percent(true),
            percent(false),
        ];
        forms.sort();
        forms.dedup();
        forms
    }

    /// Masks the whole buffer by trying every form at every position; counts the positions.
    fn naive(forms: &[Vec<u8>], data: &[u8]) -> (Vec<u8>, u64) {
        let mut out = data.to_vec();
        let mut count = 0;
        for i in 0..data.len() {
            let mut found = false;
            for f in forms.iter().filter(|f| data[i..].starts_with(f)) {
                out[i..i + f.len()].fill(b'*');
                found = true;
            }
            count += u64::from(found);
        }
        (out, count)
    }

    fn all_forms(secrets: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut forms: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !is_too_short(s))
            .flat_map(|s| reference_forms(s))
            .collect();
        forms.sort();
        forms.dedup();
        forms
    }

    /// Streams `data` cut at `cuts` (ascending offsets) through a masker.
    fn stream(patterns: &Arc<Patterns>, data: &[u8], cuts: &[usize]) -> (Vec<u8>, u64) {
        let mut m = Masker::new(patterns.clone());
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([data.len()].iter()) {
            out.extend_from_slice(&m.push(Bytes::copy_from_slice(&data[at..cut])));
            at = cut;
        }
        out.extend_from_slice(&m.finish());
        assert!(m.held.is_empty() && m.held_out.is_empty());
        (out, m.masked_count())
    }

    fn patterns(secrets: &[&[u8]]) -> Arc<Patterns> {
        Arc::new(Patterns::new(secrets))
    }

    const VALUE: &[u8] = b"tok/en+1=ab~c";

    #[test]
    fn forms_are_raw_base64_base64url_and_percent() {
        let p = Patterns::new(&[VALUE]);
        let got: Vec<&[u8]> = p.forms().collect();
        let mut want: Vec<&[u8]> = vec![
            b"tok/en+1=ab~c",
            b"dG9rL2VuKzE9YWJ+Yw==",
            b"dG9rL2VuKzE9YWJ+Yw",
            b"dG9rL2VuKzE9YWJ-Yw",
            b"tok%2Fen%2B1%3Dab~c",
            b"tok%2fen%2b1%3dab~c",
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(
            p.forms().map(<[u8]>::to_vec).collect::<Vec<_>>(),
            reference_forms(VALUE)
        );
        // Only unreserved bytes, a multiple of three long: percent and padding add nothing.
        let p = Patterns::new(&["sk-live-0123456789"]);
        let got: Vec<&[u8]> = p.forms().collect();
        assert_eq!(
            got,
            [&b"c2stbGl2ZS0wMTIzNDU2Nzg5"[..], b"sk-live-0123456789"]
        );
    }

    #[test]
    fn every_form_is_masked_whole_and_streamed() {
        let p = patterns(&[VALUE]);
        for form in reference_forms(VALUE) {
            let mut body = b"{\"echo\": \"".to_vec();
            body.extend_from_slice(&form);
            body.extend_from_slice(b"\"}\n");
            let mut want = b"{\"echo\": \"".to_vec();
            want.extend(std::iter::repeat_n(b'*', form.len()));
            want.extend_from_slice(b"\"}\n");
            let mut whole = body.clone();
            assert_eq!(
                p.mask_in_place(&mut whole),
                1,
                "{:?}",
                String::from_utf8_lossy(&form)
            );
            assert_eq!(whole, want);
            assert_eq!(stream(&p, &body, &[]), (want, 1));
        }
    }

    #[test]
    fn short_values_are_not_searched() {
        assert!(is_too_short("1234567"));
        assert!(is_too_short(""));
        assert!(!is_too_short(b"12345678"));
        let p = patterns(&[&b"1234567"[..], b""]);
        assert!(p.is_empty());
        assert_eq!(p.skipped(), 2);
        let chunk = Bytes::from_static(b"x 1234567 y");
        let mut m = Masker::new(p.clone());
        assert_eq!(m.push(chunk.clone()).as_ptr(), chunk.as_ptr());
        assert!(m.finish().is_empty());
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("1234567"));
        assert_eq!(mask_headers(&p, &mut h), 0);
        let p = patterns(&[&b"1234567"[..], b"12345678"]);
        assert_eq!((p.is_empty(), p.skipped()), (false, 1));
    }

    #[test]
    fn many_secrets_fall_back_to_the_automaton() {
        let secrets: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("secret/{i:02}/value").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let p = patterns(&refs);
        assert!(matches!(p.finder, Some(Finder::Automaton(_))));
        let forms = all_forms(&refs);
        let mut body = Vec::new();
        for form in &forms {
            body.extend_from_slice(b"echo: ");
            body.extend_from_slice(form);
        }
        let want = naive(&forms, &body);
        assert_eq!(want.1, forms.len() as u64);
        for size in [1, 7, 64, 1000] {
            let cuts: Vec<usize> = (size..body.len()).step_by(size).collect();
            assert_eq!(stream(&p, &body, &cuts), want, "chunks of {size}");
        }
        // One secret: the vectorised searcher, where there is one.
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert!(matches!(patterns(&[VALUE]).finder, Some(Finder::Packed(_))));
        }
    }

    #[test]
    fn split_at_every_position() {
        let secrets: [&[u8]; 3] = [VALUE, b"sk-live-0123456789", b"\x00\xffbinary\r\n"];
        let p = patterns(&secrets);
        let forms = all_forms(&secrets);
        for form in &forms {
            let mut body = b"sk-live x ".to_vec();
            body.extend_from_slice(form);
            body.extend_from_slice(b" y dG9 s");
            let want = naive(&forms, &body);
            assert_eq!(want.1, 1);
            for i in 0..=body.len() {
                assert_eq!(stream(&p, &body, &[i]), want, "cut at {i}");
                for j in i..=body.len() {
                    assert_eq!(stream(&p, &body, &[i, j]), want, "cuts at {i}, {j}");
                }
            }
        }
    }

    #[test]
    fn overlapping_and_adjacent_occurrences_mask_the_union() {
        let p = patterns(&[&b"abcdefghij"[..], b"ghijklmnop"]);
        let body = b"xxabcdefghijklmnopyy";
        let want = (b"xx****************yy".to_vec(), 2);
        assert_eq!(stream(&p, body, &[]), want);
        for i in 0..=body.len() {
            assert_eq!(stream(&p, body, &[i]), want, "cut at {i}");
        }

        let p = patterns(&[b"SECRETVALUE"]);
        let body = b"<SECRETVALUESECRETVALUE>";
        let want = (b"<**********************>".to_vec(), 2);
        for i in 0..=body.len() {
            assert_eq!(stream(&p, body, &[i]), want, "cut at {i}");
        }

        // A value overlapping itself: every start counts.
        let p = patterns(&[b"aaaaaaaaa"]);
        let body = b"baaaaaaaaaaaab";
        let want = (b"b************b".to_vec(), 4);
        let cuts: Vec<usize> = (1..body.len()).collect();
        assert_eq!(stream(&p, body, &cuts), want);
        let mut whole = body.to_vec();
        assert_eq!(p.mask_in_place(&mut whole), 4);
        assert_eq!(whole, want.0);
    }

    #[test]
    fn a_value_that_is_a_prefix_of_another() {
        let p = patterns(&[&b"password123"[..], b"password123456"]);
        for (body, want) in [
            (&b"[password1234]"[..], &b"[***********4]"[..]),
            (b"[password123456]", b"[**************]"),
            (b"[password12345]", b"[***********45]"),
            (b"[password12]", b"[password12]"),
        ] {
            let count = u64::from(body != want);
            for i in 0..=body.len() {
                assert_eq!(stream(&p, body, &[i]), (want.to_vec(), count), "cut at {i}");
            }
        }
        // A complete shorter form is masked at once even while the longer one is still
        // possible; the longer one completing later at the same start is not counted again.
        let mut m = Masker::new(p);
        assert_eq!(&m.push(Bytes::from_static(b"x password123"))[..], b"x ");
        assert_eq!(m.masked_count(), 1);
        assert_eq!(&m.push(Bytes::from_static(b"45"))[..], b"");
        assert_eq!(&m.push(Bytes::from_static(b"6 z"))[..], b"************** z");
        assert_eq!(m.masked_count(), 1);
    }

    #[test]
    fn many_chunk_sizes() {
        let secrets: [&[u8]; 2] = [VALUE, b"ghp_0123456789abcdefXYZ"];
        let p = patterns(&secrets);
        let forms = all_forms(&secrets);
        let mut body = Vec::new();
        for (i, form) in forms.iter().cycle().take(40).enumerate() {
            body.extend_from_slice(format!("line {i}: ").as_bytes());
            body.extend_from_slice(form);
            body.extend_from_slice(&form[..i % form.len()]);
            body.push(b'\n');
        }
        let want = naive(&forms, &body);
        // At least: a padded base64 form followed by its own beginning holds the unpadded one.
        assert!(want.1 >= 40);
        for size in (1..=64).chain([100, 333, 1000, 4096]) {
            let cuts: Vec<usize> = (size..body.len()).step_by(size).collect();
            assert_eq!(stream(&p, &body, &cuts), want, "chunks of {size}");
        }
    }

    #[test]
    fn clean_chunks_pass_through_uncopied_and_unheld() {
        let p = patterns(&[&b"sk-live-0123456789"[..], VALUE]);
        let mut m = Masker::new(p);
        for text in [
            &b"data: {\"delta\": \"hello\"}\n\n"[..],
            b"{\"id\": 1, \"text\": \"sk-live-012345678 is not it\"}\n",
            b"event: done\ndata: [DONE]\n\n",
        ] {
            let chunk = Bytes::copy_from_slice(text);
            let out = m.push(chunk.clone());
            assert_eq!((out.as_ptr(), out.len()), (chunk.as_ptr(), chunk.len()));
            assert!(m.held.is_empty());
        }
        // A tail that may begin a secret is held, the rest still uncopied.
        let chunk = Bytes::from_static(b"data: sk-li");
        let out = m.push(chunk.clone());
        assert_eq!((out.as_ptr(), &out[..]), (chunk.as_ptr(), &b"data: "[..]));
        assert_eq!(m.held, b"sk-li");
        assert_eq!(&m.push(Bytes::from_static(b"ke\n\n"))[..], b"sk-like\n\n");
        assert!(m.held.is_empty());
        assert_eq!(m.masked_count(), 0);
    }

    /// A large body in 64 KiB chunks (not timed: see `throughput` for a measurement).
    #[test]
    fn large_body_in_64k_chunks() {
        const CHUNK: usize = 64 * 1024;
        let secret = b"sk-live-0123456789abcdef";
        let p = patterns(&[secret]);
        let mut text = Vec::with_capacity(CHUNK);
        for i in 0.. {
            let line = format!("{{\"seq\": {i}, \"msg\": \"lorem ipsum dolor sit amet\"}}\n");
            if text.len() + line.len() > CHUNK {
                break;
            }
            text.extend_from_slice(line.as_bytes());
        }
        text.resize(CHUNK, b'\n');
        let clean = Bytes::from(text);
        let mut m = Masker::new(p);
        let mut sent = 0;
        for i in 0..256 {
            let chunk = match i {
                // An occurrence split across two chunks, and one inside a chunk.
                10 => {
                    let mut c = clean.to_vec();
                    c[CHUNK - 5..].copy_from_slice(&secret[..5]);
                    Bytes::from(c)
                }
                11 => {
                    let mut c = clean.to_vec();
                    c[..secret.len() - 5].copy_from_slice(&secret[5..]);
                    Bytes::from(c)
                }
                100 => {
                    let mut c = clean.to_vec();
                    c[1000..1000 + secret.len()].copy_from_slice(secret);
                    Bytes::from(c)
                }
                _ => clean.clone(),
            };
            let out = m.push(chunk.clone());
            if ![10, 11, 100].contains(&i) {
                assert_eq!(out.as_ptr(), chunk.as_ptr(), "chunk {i} was copied");
            }
            assert!(!out.windows(5).any(|w| w == &secret[..5]));
            sent += out.len();
        }
        sent += m.finish().len();
        assert_eq!((sent, m.masked_count()), (256 * CHUNK, 2));
    }

    fn arb_secret() -> impl Strategy<Value = Vec<u8>> {
        // A small alphabet makes partial and overlapping matches common; `/`, `+` and bytes
        // above 0x7f give base64 and percent forms of their own.
        prop::collection::vec(
            prop::sample::select(b"aab/+\xe9=-".to_vec()),
            MIN_SECRET_LEN..20,
        )
    }

    proptest! {
        #[test]
        fn streaming_equals_whole_buffer_masking(
            secrets in prop::collection::vec(arb_secret(), 1..4),
            noise in prop::collection::vec(prop::sample::select(b"ab/+=%YWJi\n".to_vec()), 0..300),
            splices in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0..30usize), 0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let forms = all_forms(&refs);
            let both = [patterns(&refs), Arc::new(Patterns::build(&refs, false))];
            prop_assert!(matches!(both[1].finder, Some(Finder::Automaton(_))));
            prop_assert_eq!(both[0].forms().map(<[u8]>::to_vec).collect::<Vec<_>>(), forms.clone());
            let mut data = noise;
            for (at, which, cut_short) in splices {
                let form = which.get(&forms);
                // Sometimes only a beginning: a near miss.
                let len = if cut_short < 5 { form.len().saturating_sub(cut_short + 1) } else { form.len() };
                let at = at.index(data.len() + 1);
                data.splice(at..at, form[..len].iter().copied());
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.sort_unstable();
            let want = naive(&forms, &data);
            for p in &both {
                let got = stream(p, &data, &cuts);
                prop_assert_eq!(&got, &want);
                let mut whole = data.clone();
                prop_assert_eq!(p.mask_in_place(&mut whole) as u64, want.1);
                prop_assert_eq!(&whole, &want.0);
                for form in &forms {
                    prop_assert!(!got.0.windows(form.len()).any(|w| w == &form[..]));
                }
            }
        }
    }

    #[test]
    fn header_values_and_names() {
        let p = Patterns::new(&["sk-live-0123456789"]);
        let v = HeaderValue::from_static("Bearer sk-live-0123456789");
        assert_eq!(
            mask_header_value(&p, &v).unwrap(),
            "Bearer ******************"
        );
        assert_eq!(
            mask_header_value(&p, &HeaderValue::from_static("Bearer x")),
            None
        );
        let mut sensitive = HeaderValue::from_static("c2stbGl2ZS0wMTIzNDU2Nzg5");
        sensitive.set_sensitive(true);
        assert!(mask_header_value(&p, &sensitive).unwrap().is_sensitive());

        let mut h = HeaderMap::new();
        h.append("x-echo", HeaderValue::from_static("sk-live-0123456789"));
        h.append("x-echo", HeaderValue::from_static("clean"));
        h.append(
            "x-echo",
            HeaderValue::from_static("a=c2stbGl2ZS0wMTIzNDU2Nzg5;b=sk-live-0123456789"),
        );
        h.append("x-sk-live-0123456789-seen", HeaderValue::from_static("1"));
        h.append("x-sk-live-0123456789-seen", HeaderValue::from_static("2"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(mask_headers(&p, &mut h), 5);
        let echo: Vec<&HeaderValue> = h.get_all("x-echo").iter().collect();
        assert_eq!(
            echo,
            [
                "******************",
                "clean",
                "a=************************;b=******************",
            ]
        );
        let renamed: Vec<&HeaderValue> = h.get_all("x-******************-seen").iter().collect();
        assert_eq!(renamed, ["1", "2"]);
        assert!(!h.keys().any(|k| k.as_str().contains("sk-live")));
        assert_eq!(h["content-type"], "text/plain");
    }

    type TestFrame = Result<Frame<Bytes>, std::io::Error>;

    fn stream_body(
        frames: Vec<TestFrame>,
    ) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<TestFrame>>> {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// Polls every frame: data frames as they came, then the trailers, then the error if any.
    async fn frames<B: Body<Data = Bytes> + Unpin>(
        mut body: B,
    ) -> (Vec<Bytes>, Option<HeaderMap>, Option<B::Error>) {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(d) => {
                        assert!(trailers.is_none(), "data after trailers");
                        data.push(d);
                    }
                    Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
                },
                Err(e) => return (data, trailers, Some(e)),
            }
        }
        assert!(body.is_end_stream());
        (data, trailers, None)
    }

    #[tokio::test]
    async fn masked_body_streams_holds_and_masks_trailers() {
        let p = patterns(&[b"sk-live-0123456789"]);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-echo", HeaderValue::from_static("sk-live-0123456789"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = stream_body(vec![
            Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))),
            Ok(Frame::data(Bytes::from_static(b"token=sk-live-01"))),
            Ok(Frame::data(Bytes::from_static(b"23"))),
            Ok(Frame::data(Bytes::from_static(b"456789 and sk-"))),
            Ok(Frame::trailers(trailers)),
        ]);
        let counter = Arc::new(AtomicU64::new(0));
        let masked = MaskedBody::new(body, p, counter.clone());
        assert!(Arc::ptr_eq(masked.counter(), &counter));
        let (data, trailers, err) = frames(masked).await;
        assert!(err.is_none());
        let data: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        // The frame holding only a beginning is not sent empty; the held `sk-` goes out
        // before the trailers.
        assert_eq!(
            data,
            [
                &b"data: one\n\n"[..],
                b"token=",
                b"****************** and ",
                b"sk-",
            ]
        );
        let trailers = trailers.unwrap();
        assert_eq!(trailers["x-echo"], "******************");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn masked_body_flushes_at_the_end_and_drops_the_tail_on_error() {
        let p = patterns(&[b"sk-live-0123456789"]);
        let body = stream_body(vec![Ok(Frame::data(Bytes::from_static(b"x sk-live")))]);
        let counter = Arc::new(AtomicU64::new(0));
        let (data, trailers, err) = frames(MaskedBody::new(body, p.clone(), counter.clone())).await;
        assert_eq!(data, [&b"x "[..], b"sk-live"]);
        assert!(trailers.is_none() && err.is_none());

        let body = stream_body(vec![
            Ok(Frame::data(Bytes::from_static(b"x sk-live"))),
            Err(std::io::Error::other("upstream reset")),
        ]);
        let (data, _, err) = frames(MaskedBody::new(body, p, counter.clone())).await;
        assert_eq!(data, [&b"x "[..]]);
        assert_eq!(err.unwrap().to_string(), "upstream reset");
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn masked_body_size_hint_stays_exact() {
        let p = patterns(&[b"sk-live-0123456789"]);
        let counter = Arc::new(AtomicU64::new(0));
        let text = b"key sk-live-0123456789, next sk-li";
        let mut body = MaskedBody::new(Full::new(Bytes::from_static(text)), p, counter.clone());
        assert_eq!(body.size_hint().exact(), Some(text.len() as u64));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"key ******************, next ");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let rest = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&rest[..], b"sk-li");
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        assert_eq!(counter.load(Ordering::Relaxed), 1);
    }
}

//! The echo guard: secret forms spliced into arbitrary data and streamed in arbitrary chunks
//! come out exactly as the whole buffer masked at once; in that, every occurrence of every form
//! is masked whole and no other byte changes; no form is left in the output; a header value is
//! masked the same way.
#![no_main]
use arbitrary::Arbitrary;
use bytes::Bytes;
use egret_proxy::echo_guard::{mask_header_value, Masker, Patterns};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

#[derive(Arbitrary, Debug)]
struct Case<'a> {
    secrets: Vec<&'a [u8]>,
    data: &'a [u8],
    /// Where to splice a form in, which one, and how much of its end to leave off (a near
    /// miss) when the last number is small.
    splices: Vec<(u16, u8, u8)>,
    cuts: Vec<u16>,
}

fuzz_target!(|case: Case| {
    let secrets: Vec<&[u8]> = case
        .secrets
        .iter()
        .take(4)
        .map(|s| &s[..s.len().min(40)])
        .collect();
    let patterns = Arc::new(Patterns::new(&secrets));
    let forms: Vec<Vec<u8>> = patterns.forms().map(<[u8]>::to_vec).collect();

    let mut data = case.data[..case.data.len().min(2048)].to_vec();
    if !forms.is_empty() {
        for &(at, which, short) in case.splices.iter().take(8) {
            let form = &forms[usize::from(which) % forms.len()];
            let len = form
                .len()
                .saturating_sub(if short < 8 { usize::from(short) } else { 0 });
            let at = usize::from(at) % (data.len() + 1);
            data.splice(at..at, form[..len].iter().copied());
        }
    }

    let mut want = data.clone();
    let want_count = patterns.mask_in_place(&mut want) as u64;
    check_whole(&forms, &data, &want, want_count);

    let mut cuts: Vec<usize> = case
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    let mut masker = Masker::new(patterns.clone());
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts {
        out.extend_from_slice(&masker.push(Bytes::copy_from_slice(&data[at..cut])));
        at = cut;
    }
    out.extend_from_slice(&masker.finish());
    assert_eq!(
        out, want,
        "streamed masking differs from whole-buffer masking"
    );
    assert_eq!(masker.masked_count(), want_count);

    // Only a raw value containing `*` could be rebuilt by masking its surroundings.
    for form in forms.iter().filter(|f| !f.contains(&b'*')) {
        assert!(
            !out.windows(form.len()).any(|w| w == &form[..]),
            "a secret form is left in the output"
        );
    }

    if let Ok(value) = http::HeaderValue::from_bytes(&data) {
        let masked = mask_header_value(&patterns, &value);
        match masked {
            Some(m) => assert_eq!(m.as_bytes(), &want[..]),
            None => assert_eq!(want_count, 0),
        }
    }
});

/// `masked` is `data` with exactly the union of all occurrences of `forms` replaced by `*`,
/// and `count` the number of positions where one begins.
fn check_whole(forms: &[Vec<u8>], data: &[u8], masked: &[u8], count: u64) {
    assert_eq!(masked.len(), data.len());
    let mut covered = vec![false; data.len()];
    let mut starts = std::collections::BTreeSet::new();
    for form in forms {
        for (at, window) in data.windows(form.len()).enumerate() {
            if window == &form[..] {
                let span = at..at + form.len();
                assert!(
                    masked[span.clone()].iter().all(|&b| b == b'*'),
                    "unmasked at {at}"
                );
                covered[span].fill(true);
                starts.insert(at);
            }
        }
    }
    for (i, (&before, &after)) in data.iter().zip(masked).enumerate() {
        assert!(
            before == after || (covered[i] && after == b'*'),
            "byte {i} changed"
        );
    }
    assert_eq!(starts.len() as u64, count);
}

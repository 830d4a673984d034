//! Name syntax and normalisation. The policy, the map and the logs all see one spelling of a
//! name (lower case, no trailing dot), so `API.Example.com.` cannot slip past a rule written for
//! `api.example.com`, and a name cannot smuggle escapes (`\.`, `\000`) into logs or rules.
use std::borrow::Cow;

/// Longest name in text form without the trailing dot (255 octets on the wire).
pub(crate) const MAX_NAME_LEN: usize = 253;
/// Longest label.
pub(crate) const MAX_LABEL_LEN: usize = 63;
/// How much of a name goes into a log line: a name can be 253 characters of exfiltration
/// payload, and logs are often shipped somewhere.
const LOG_NAME_LEN: usize = 120;

/// Why a name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The root or an empty string.
    #[error("empty name")]
    Empty,
    /// More than 253 characters (without the trailing dot).
    #[error("name is {0} characters long (at most 253)")]
    TooLong(usize),
    /// A label longer than 63 characters.
    #[error("label is {0} characters long (at most 63)")]
    LabelTooLong(usize),
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A byte other than a letter, digit, `-` or `_`.
    #[error("invalid character {0:#04x} in name")]
    InvalidChar(u8),
}

/// Normalise a name given as text: lower case, one trailing dot removed, and only
/// letters, digits, `-` and `_` in labels of 1 to 63 characters, 253 characters at most.
///
/// Underscores are allowed because real names use them (`_dmarc`, service labels); anything
/// else (spaces, escapes, non-ASCII bytes) is refused, since no host name contains it.
/// IP-literal-looking names (`10.0.0.1`) are just names.
///
/// ```
/// use egret_dns::{normalize_name, NameError};
/// assert_eq!(normalize_name("API.Example.COM.").as_deref(), Ok("api.example.com"));
/// assert_eq!(normalize_name("a..b"), Err(NameError::EmptyLabel));
/// ```
pub fn normalize_name(name: &str) -> Result<String, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    normalize_labels(name.split('.').map(str::as_bytes))
}

/// Normalise a name given as labels (as they came off the wire).
pub(crate) fn normalize_labels<'a>(
    labels: impl Iterator<Item = &'a [u8]>,
) -> Result<String, NameError> {
    let mut out = String::new();
    for label in labels {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong(label.len()));
        }
        if let Some(&bad) = label
            .iter()
            .find(|b| !(b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_'))
        {
            return Err(NameError::InvalidChar(bad));
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        if out.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(out.len()));
        }
    }
    if out.is_empty() {
        return Err(NameError::Empty);
    }
    Ok(out)
}

/// A name shortened for a log line: at most 120 characters, then "…".
pub(crate) fn log_name(name: &str) -> Cow<'_, str> {
    if name.len() <= LOG_NAME_LEN {
        return Cow::Borrowed(name);
    }
    // Valid names are ASCII; the boundary walk only matters for other text.
    let mut end = LOG_NAME_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &name[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_and_validates() {
        assert_eq!(normalize_name("Example.COM").as_deref(), Ok("example.com"));
        assert_eq!(
            normalize_name("_dmarc.x-y.test.").as_deref(),
            Ok("_dmarc.x-y.test")
        );
        assert_eq!(normalize_name("10.0.0.1").as_deref(), Ok("10.0.0.1"));
        assert_eq!(normalize_name("."), Err(NameError::Empty));
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert_eq!(normalize_name(".a"), Err(NameError::EmptyLabel));
        assert_eq!(
            normalize_name("a b.test"),
            Err(NameError::InvalidChar(b' '))
        );
        assert_eq!(normalize_name("é.test"), Err(NameError::InvalidChar(0xc3)));
        assert_eq!(
            normalize_name(&"a".repeat(64)),
            Err(NameError::LabelTooLong(64))
        );
        let label = "a".repeat(63);
        let ok = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(ok.len(), 253);
        assert_eq!(normalize_name(&ok).as_deref(), Ok(ok.as_str()));
        assert_eq!(
            normalize_name(&format!("{ok}c")),
            Err(NameError::TooLong(254))
        );
        let long = ["abcdefghij"; 30].join(".");
        assert!(matches!(normalize_name(&long), Err(NameError::TooLong(_))));
    }

    #[test]
    fn log_names_are_bounded() {
        let long = "x".repeat(250);
        assert_eq!(log_name(&long), format!("{}…", "x".repeat(120)));
        assert_eq!(log_name("short.test"), "short.test");
        let wide = "é".repeat(100);
        assert!(log_name(&wide).chars().count() <= 61);
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(s in "[a-zA-Z0-9_.-]{0,300}") {
            if let Ok(n) = normalize_name(&s) {
                prop_assert!(n.len() <= MAX_NAME_LEN);
                prop_assert_eq!(normalize_name(&n), Ok(n.clone()));
            }
        }
    }
}

//! The key/values a handler attaches to its request's audit event (`audit-field`), bounded in
//! count and size so a guest cannot bloat the audit trail. Values arrive redacted (the store
//! redacts granted secrets before they get here).

/// Most fields one request's handler may attach.
pub const MAX_FIELDS: usize = 8;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 32;
/// Longest value kept, in bytes (a longer one is cut on a character boundary).
pub const MAX_VALUE_BYTES: usize = 128;

/// The fields of one request, in the order they were first set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuditFields(Vec<(String, String)>);

impl AuditFields {
    /// Set `key` to `value` (replacing an earlier value of the same key). The error names the
    /// limit and is what the guest sees.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_KEY_BYTES
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            let shown: String = key.chars().take(MAX_KEY_BYTES).collect();
            return Err(format!(
                "audit field key {shown:?} is not 1 to {MAX_KEY_BYTES} characters of \
                 a-z A-Z 0-9 . _ -"
            ));
        }
        let value = cut(value, MAX_VALUE_BYTES);
        if let Some(f) = self.0.iter_mut().find(|(k, _)| k == key) {
            f.1 = value;
            return Ok(());
        }
        if self.0.len() >= MAX_FIELDS {
            return Err(format!(
                "at most {MAX_FIELDS} audit fields per request: {key:?} was not added"
            ));
        }
        self.0.push((key.to_owned(), value));
        Ok(())
    }

    /// The fields, in order.
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }

    /// Forget them (a reused instance's next request starts without).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_bounded_in_count_key_and_value() {
        let mut f = AuditFields::default();
        f.set("mcp.tool", "delete_repo").unwrap();
        f.set("decision", "deny").unwrap();
        f.set("mcp.tool", "echo").unwrap();
        assert_eq!(
            f.as_slice(),
            [
                ("mcp.tool".to_owned(), "echo".to_owned()),
                ("decision".to_owned(), "deny".to_owned())
            ]
        );
        for i in 2..MAX_FIELDS {
            f.set(&format!("k{i}"), "v").unwrap();
        }
        let e = f.set("one-more", "v").unwrap_err();
        assert!(e.contains("at most 8 audit fields"), "{e}");
        // Replacing stays possible when full.
        f.set("k2", "w").unwrap();
        for bad in ["", "has space", "ü", &"k".repeat(33), "a=b"] {
            let e = AuditFields::default().set(bad, "v").unwrap_err();
            assert!(e.contains("is not 1 to 32 characters"), "{bad:?}: {e}");
        }
        let mut f = AuditFields::default();
        f.set("long", &"é".repeat(100)).unwrap();
        let v = &f.as_slice()[0].1;
        assert_eq!(v.len(), 128);
        assert!(v.chars().all(|c| c == 'é'));
        f.clear();
        assert!(f.as_slice().is_empty());
    }
}

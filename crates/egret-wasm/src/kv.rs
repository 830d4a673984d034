//! The per-sandbox key-value store handlers read and write (`kv-get` /
//! `kv-set`). Each sandbox id has its own namespace, so one sandbox's handler
//! invocations can never see another sandbox's keys.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most entries one sandbox may hold.
pub const MAX_ENTRIES_PER_SANDBOX: usize = 10_000;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Keys must not be empty.
    #[error("kv key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("kv key is {len} bytes, the limit is {max}")]
    KeyTooLong {
        /// Length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is larger than [`MAX_VALUE_BYTES`].
    #[error("kv value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The sandbox already holds [`MAX_ENTRIES_PER_SANDBOX`] entries.
    #[error("kv store of this sandbox is full ({max} entries)")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
}

/// Key-value store namespaced by sandbox id. Cloning is cheap and clones
/// share the same data.
#[derive(Clone, Default)]
pub struct KvStore {
    inner: Arc<RwLock<HashMap<String, HashMap<String, Bytes>>>>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be sensitive: show only the shape.
        let map = self.inner.read();
        f.debug_struct("KvStore")
            .field("sandboxes", &map.len())
            .finish()
    }
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Reads `key` in the namespace of `sandbox`.
    pub fn get(&self, sandbox: &str, key: &str) -> Option<Bytes> {
        self.inner.read().get(sandbox)?.get(key).cloned()
    }

    /// Writes `key` in the namespace of `sandbox`, within the size limits.
    pub fn set(&self, sandbox: &str, key: &str, value: impl Into<Bytes>) -> Result<(), KvError> {
        let value = value.into();
        check(key, &value)?;
        let mut map = self.inner.write();
        let ns = map.entry(sandbox.to_owned()).or_default();
        if ns.len() >= MAX_ENTRIES_PER_SANDBOX && !ns.contains_key(key) {
            return Err(KvError::TooManyEntries {
                max: MAX_ENTRIES_PER_SANDBOX,
            });
        }
        ns.insert(key.to_owned(), value);
        Ok(())
    }

    /// Removes `key` from the namespace of `sandbox`; returns whether it
    /// existed.
    pub fn remove(&self, sandbox: &str, key: &str) -> bool {
        let mut map = self.inner.write();
        let Some(ns) = map.get_mut(sandbox) else {
            return false;
        };
        let removed = ns.remove(key).is_some();
        if ns.is_empty() {
            map.remove(sandbox);
        }
        removed
    }

    /// Writes many entries for one sandbox (e.g. from the admin config).
    /// Stops at the first entry that breaks a limit; earlier ones stay.
    pub fn seed<I, K, V>(&self, sandbox: &str, entries: I) -> Result<(), KvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<Bytes>,
    {
        for (k, v) in entries {
            self.set(sandbox, k.as_ref(), v)?;
        }
        Ok(())
    }

    /// Number of entries held for `sandbox`.
    pub fn len(&self, sandbox: &str) -> usize {
        self.inner.read().get(sandbox).map_or(0, HashMap::len)
    }

    /// Whether `sandbox` has no entries.
    pub fn is_empty(&self, sandbox: &str) -> bool {
        self.len(sandbox) == 0
    }

    /// Drops every entry of `sandbox` (e.g. when the sandbox goes away).
    pub fn clear_sandbox(&self, sandbox: &str) {
        self.inner.write().remove(sandbox);
    }
}

fn check(key: &str, value: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_and_bounded() {
        let kv = KvStore::new();
        kv.seed("a", [("k", "1")]).unwrap();
        assert_eq!(kv.get("a", "k").as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.get("b", "k"), None);
        assert_eq!(
            kv.set("a", &"x".repeat(257), "v"),
            Err(KvError::KeyTooLong { len: 257, max: 256 })
        );
        assert!(matches!(
            kv.set("a", "big", vec![0u8; MAX_VALUE_BYTES + 1]),
            Err(KvError::ValueTooLarge { .. })
        ));
        assert_eq!(kv.set("a", "", "v"), Err(KvError::EmptyKey));
        assert!(kv.remove("a", "k"));
        assert!(kv.is_empty("a"));
    }

    #[test]
    fn entry_limit() {
        let kv = KvStore::new();
        for i in 0..MAX_ENTRIES_PER_SANDBOX {
            kv.set("s", &i.to_string(), "").unwrap();
        }
        assert_eq!(
            kv.set("s", "one-more", ""),
            Err(KvError::TooManyEntries {
                max: MAX_ENTRIES_PER_SANDBOX
            })
        );
        // Overwriting an existing key is still allowed when full.
        kv.set("s", "0", "new").unwrap();
    }
}

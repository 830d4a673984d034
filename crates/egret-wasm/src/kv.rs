//! The per-sandbox key-value store handlers read and write (`kv-get`, `kv-set`, `kv-incr`,
//! `kv-compare-and-set`, ...). Each sandbox id has its own namespace, so one sandbox's handler
//! invocations can never see another sandbox's keys. Entries may expire (a token cache, a
//! budget window); expiry is wall-clock time, so it survives a restart with the saved state
//! ([`KvStore::snapshot`] / [`KvStore::restore`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

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
    /// `kv-incr` on a value that is not a decimal 64-bit integer.
    #[error("kv value of {key:?} is not a decimal integer; kv-incr needs one")]
    NotAnInteger {
        /// The key.
        key: String,
    },
    /// `kv-incr` would overflow a signed 64-bit integer.
    #[error("kv-incr of {key:?} would overflow a 64-bit integer")]
    Overflow {
        /// The key.
        key: String,
    },
}

/// Milliseconds since the Unix epoch, the clock expiry is measured on.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    /// Unix milliseconds after which the entry is gone.
    expires_at: Option<u64>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

type Namespaces = HashMap<String, HashMap<String, Entry>>;

/// Key-value store namespaced by sandbox id. Cloning is cheap and clones
/// share the same data.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<RwLock<Namespaces>>,
    /// Set by every change; [`KvStore::take_dirty`] tells whoever saves the store.
    dirty: Arc<AtomicBool>,
    clock: Clock,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::with_clock(Arc::new(system_clock))
    }
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

/// One entry as saved ([`KvStore::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedEntry {
    /// Sandbox namespace.
    pub sandbox: String,
    /// Key.
    pub key: String,
    /// Value, base64.
    pub value_b64: String,
    /// Unix milliseconds after which the entry is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

fn expiry(now: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|t| now.saturating_add(t))
}

impl KvStore {
    /// An empty store on the system clock.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// An empty store whose expiry uses `clock` (Unix milliseconds).
    pub fn with_clock(clock: Clock) -> KvStore {
        KvStore {
            inner: Arc::default(),
            dirty: Arc::default(),
            clock,
        }
    }

    /// Reads `key` in the namespace of `sandbox` (expired entries read as absent).
    pub fn get(&self, sandbox: &str, key: &str) -> Option<Bytes> {
        let now = (self.clock)();
        let map = self.inner.read();
        let e = map.get(sandbox)?.get(key)?;
        e.live(now).then(|| e.value.clone())
    }

    /// Writes `key` in the namespace of `sandbox`, within the size limits.
    pub fn set(&self, sandbox: &str, key: &str, value: impl Into<Bytes>) -> Result<(), KvError> {
        self.set_with_ttl(sandbox, key, value, None)
    }

    /// Writes `key`, expiring after `ttl_ms` when given.
    pub fn set_with_ttl(
        &self,
        sandbox: &str,
        key: &str,
        value: impl Into<Bytes>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let value = value.into();
        check(key, &value)?;
        let now = (self.clock)();
        let mut map = self.inner.write();
        let ns = map.entry(sandbox.to_owned()).or_default();
        make_room(ns, key, now)?;
        ns.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at: expiry(now, ttl_ms),
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Adds `delta` to the decimal integer under `key` (absent or expired: 0) atomically and
    /// returns the new value. `ttl_ms` sets the expiry when the key is created; an existing
    /// key keeps its own (a budget window does not slide with each use).
    pub fn incr(
        &self,
        sandbox: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvError> {
        check(key, b"")?;
        let now = (self.clock)();
        let mut map = self.inner.write();
        let ns = map.entry(sandbox.to_owned()).or_default();
        let current = ns.get(key).filter(|e| e.live(now));
        let (base, expires_at) = match current {
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| KvError::NotAnInteger {
                        key: key.to_owned(),
                    })?;
                (n, e.expires_at)
            }
            None => (0, expiry(now, ttl_ms)),
        };
        let next = base.checked_add(delta).ok_or_else(|| KvError::Overflow {
            key: key.to_owned(),
        })?;
        make_room(ns, key, now)?;
        ns.insert(
            key.to_owned(),
            Entry {
                value: Bytes::from(next.to_string()),
                expires_at,
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        Ok(next)
    }

    /// Sets `key` to `new` only if its live value is `expected` (`None`: only if absent);
    /// returns whether it did.
    pub fn compare_and_set(
        &self,
        sandbox: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: impl Into<Bytes>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        let new = new.into();
        check(key, &new)?;
        let now = (self.clock)();
        let mut map = self.inner.write();
        let ns = map.entry(sandbox.to_owned()).or_default();
        let current = ns.get(key).filter(|e| e.live(now)).map(|e| &e.value[..]);
        if current != expected {
            return Ok(false);
        }
        make_room(ns, key, now)?;
        ns.insert(
            key.to_owned(),
            Entry {
                value: new,
                expires_at: expiry(now, ttl_ms),
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Removes `key` from the namespace of `sandbox`; returns whether a live entry existed.
    pub fn remove(&self, sandbox: &str, key: &str) -> bool {
        let now = (self.clock)();
        let mut map = self.inner.write();
        let Some(ns) = map.get_mut(sandbox) else {
            return false;
        };
        let removed = ns.remove(key).is_some_and(|e| e.live(now));
        if ns.is_empty() {
            map.remove(sandbox);
        }
        self.dirty.store(true, Ordering::Relaxed);
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

    /// Number of live entries held for `sandbox`.
    pub fn len(&self, sandbox: &str) -> usize {
        let now = (self.clock)();
        self.inner
            .read()
            .get(sandbox)
            .map_or(0, |ns| ns.values().filter(|e| e.live(now)).count())
    }

    /// Whether `sandbox` has no live entries.
    pub fn is_empty(&self, sandbox: &str) -> bool {
        self.len(sandbox) == 0
    }

    /// Drops every entry of `sandbox` (e.g. when the sandbox goes away).
    pub fn clear_sandbox(&self, sandbox: &str) {
        self.inner.write().remove(sandbox);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Whether anything changed since the last call (and clears the flag): whoever saves
    /// the store saves only when it did.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Every live entry, for saving.
    pub fn snapshot(&self) -> Vec<SavedEntry> {
        use base64::Engine;
        let now = (self.clock)();
        let map = self.inner.read();
        let mut out: Vec<SavedEntry> = map
            .iter()
            .flat_map(|(sandbox, ns)| {
                ns.iter()
                    .filter(|(_, e)| e.live(now))
                    .map(|(key, e)| SavedEntry {
                        sandbox: sandbox.clone(),
                        key: key.clone(),
                        value_b64: base64::engine::general_purpose::STANDARD.encode(&e.value),
                        expires_at_ms: e.expires_at,
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.sandbox, &a.key).cmp(&(&b.sandbox, &b.key)));
        out
    }

    /// Load saved entries (over what is there; expired ones are skipped, malformed ones
    /// reported by key).
    pub fn restore(&self, entries: Vec<SavedEntry>) -> Result<(), String> {
        use base64::Engine;
        let now = (self.clock)();
        let mut map = self.inner.write();
        for e in entries {
            if e.expires_at_ms.is_some_and(|t| now >= t) {
                continue;
            }
            let value = base64::engine::general_purpose::STANDARD
                .decode(&e.value_b64)
                .map_err(|err| format!("kv entry {:?}: value is not base64: {err}", e.key))?;
            check(&e.key, &value).map_err(|err| format!("kv entry {:?}: {err}", e.key))?;
            map.entry(e.sandbox).or_default().insert(
                e.key,
                Entry {
                    value: Bytes::from(value),
                    expires_at: e.expires_at_ms,
                },
            );
        }
        Ok(())
    }
}

/// Ensure `key` may be inserted into `ns`: existing keys always may; otherwise expired entries
/// are dropped first, then the entry limit applies.
fn make_room(ns: &mut HashMap<String, Entry>, key: &str, now: u64) -> Result<(), KvError> {
    if ns.len() < MAX_ENTRIES_PER_SANDBOX || ns.contains_key(key) {
        return Ok(());
    }
    ns.retain(|_, e| e.live(now));
    if ns.len() >= MAX_ENTRIES_PER_SANDBOX {
        return Err(KvError::TooManyEntries {
            max: MAX_ENTRIES_PER_SANDBOX,
        });
    }
    Ok(())
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
    use std::sync::atomic::AtomicU64;

    fn clocked() -> (KvStore, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(1_000_000));
        let c = t.clone();
        (
            KvStore::with_clock(Arc::new(move || c.load(Ordering::Relaxed))),
            t,
        )
    }

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
    fn entry_limit_counts_only_live_entries() {
        let (kv, t) = clocked();
        for i in 0..MAX_ENTRIES_PER_SANDBOX {
            kv.set_with_ttl("s", &i.to_string(), "", (i == 0).then_some(10))
                .unwrap();
        }
        // Overwriting an existing key is allowed when full; a new one is not ...
        kv.set("s", "1", "new").unwrap();
        assert_eq!(
            kv.set("s", "one-more", ""),
            Err(KvError::TooManyEntries {
                max: MAX_ENTRIES_PER_SANDBOX
            })
        );
        // ... until an entry expired.
        t.fetch_add(10, Ordering::Relaxed);
        kv.set("s", "one-more", "").unwrap();
    }

    #[test]
    fn entries_expire_on_the_clock() {
        let (kv, t) = clocked();
        kv.set_with_ttl("s", "tok", "abc", Some(500)).unwrap();
        assert_eq!(kv.get("s", "tok").as_deref(), Some(&b"abc"[..]));
        t.fetch_add(499, Ordering::Relaxed);
        assert!(kv.get("s", "tok").is_some());
        t.fetch_add(1, Ordering::Relaxed);
        assert!(kv.get("s", "tok").is_none());
        assert!(
            !kv.remove("s", "tok"),
            "an expired entry is not reported as removed"
        );
    }

    #[test]
    fn incr_counts_atomically_and_keeps_the_window() {
        let (kv, t) = clocked();
        assert_eq!(kv.incr("s", "budget", 5, Some(1000)).unwrap(), 5);
        t.fetch_add(600, Ordering::Relaxed);
        // the window set at creation stays: +7 does not restart it
        assert_eq!(kv.incr("s", "budget", 7, Some(1000)).unwrap(), 12);
        t.fetch_add(400, Ordering::Relaxed);
        assert_eq!(kv.incr("s", "budget", 1, Some(1000)).unwrap(), 1);
        kv.set("s", "text", "abc").unwrap();
        assert_eq!(
            kv.incr("s", "text", 1, None),
            Err(KvError::NotAnInteger { key: "text".into() })
        );
        kv.set("s", "max", i64::MAX.to_string()).unwrap();
        assert!(matches!(
            kv.incr("s", "max", 1, None),
            Err(KvError::Overflow { .. })
        ));
        assert_eq!(kv.incr("s", "neg", -3, None).unwrap(), -3);
    }

    #[test]
    fn incr_from_many_threads_loses_nothing() {
        let kv = KvStore::new();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        kv.incr("s", "n", 1, None).unwrap();
                    }
                });
            }
        });
        assert_eq!(kv.get("s", "n").as_deref(), Some(&b"8000"[..]));
    }

    #[test]
    fn compare_and_set_only_on_the_expected_value() {
        let (kv, t) = clocked();
        assert!(kv.compare_and_set("s", "k", None, "a", Some(100)).unwrap());
        assert!(!kv.compare_and_set("s", "k", None, "b", None).unwrap());
        assert!(!kv.compare_and_set("s", "k", Some(b"x"), "b", None).unwrap());
        assert!(kv.compare_and_set("s", "k", Some(b"a"), "b", None).unwrap());
        assert_eq!(kv.get("s", "k").as_deref(), Some(&b"b"[..]));
        // an expired value counts as absent
        kv.set_with_ttl("s", "e", "old", Some(10)).unwrap();
        t.fetch_add(10, Ordering::Relaxed);
        assert!(kv.compare_and_set("s", "e", None, "new", None).unwrap());
    }

    #[test]
    fn snapshot_and_restore_keep_values_and_expiry() {
        let (kv, t) = clocked();
        kv.set("a", "plain", vec![0u8, 255, 10]).unwrap();
        kv.set_with_ttl("a", "tok", "v", Some(1000)).unwrap();
        kv.set_with_ttl("b", "gone", "v", Some(1)).unwrap();
        assert!(kv.take_dirty());
        assert!(!kv.take_dirty());
        t.fetch_add(5, Ordering::Relaxed);
        let saved = kv.snapshot();
        assert_eq!(saved.len(), 2, "{saved:?}");
        let (back, t2) = clocked();
        t2.store(t.load(Ordering::Relaxed), Ordering::Relaxed);
        back.restore(saved.clone()).unwrap();
        assert_eq!(back.get("a", "plain").as_deref(), Some(&[0u8, 255, 10][..]));
        assert!(back.get("a", "tok").is_some());
        t2.fetch_add(1000, Ordering::Relaxed);
        assert!(
            back.get("a", "tok").is_none(),
            "expiry survives the restore"
        );
        let mut bad = saved;
        bad[0].value_b64 = "***".into();
        assert!(back.restore(bad).unwrap_err().contains("not base64"));
    }
}

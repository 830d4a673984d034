//! Secrets: values egret injects into requests on a handler's behalf, and the
//! grants that say which handler may use (or even see) which secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use zeroize::Zeroizing;

/// A secret value. It is wiped from memory on drop and never printed: its
/// `Debug` shows only `SecretValue(<redacted>)`, and it has no `Display`.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: impl Into<Vec<u8>>) -> SecretValue {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The raw bytes (for materializing a header; do not log them).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, if it is UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Where egret looks up secrets by name. [`SecretStore`] is the built-in
/// implementation; the proxy may plug in its own (e.g. backed by files).
pub trait SecretSource: Send + Sync {
    /// The value of the named secret, if it exists.
    fn get(&self, name: &str) -> Option<SecretValue>;
}

/// An in-memory name → value map of secrets, safe to share between threads. Secrets a handler
/// obtained itself (`set-secret`, e.g. an access token) may expire.
#[derive(Default)]
pub struct SecretStore {
    values: RwLock<HashMap<String, (SecretValue, Option<Instant>)>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("names", &self.names())
            .finish()
    }
}

impl SecretStore {
    /// An empty store.
    pub fn new() -> SecretStore {
        SecretStore::default()
    }

    /// Sets (or replaces) a secret.
    pub fn set(&self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.set_with_ttl(name, value, None);
    }

    /// Sets (or replaces) a secret that is gone after `ttl`, when given.
    pub fn set_with_ttl(
        &self,
        name: impl Into<String>,
        value: impl Into<Vec<u8>>,
        ttl: Option<Duration>,
    ) {
        let expires = ttl.map(|t| Instant::now() + t);
        self.values
            .write()
            .insert(name.into(), (SecretValue::new(value), expires));
    }

    /// Removes a secret; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        self.values.write().remove(name).is_some()
    }

    /// Names of all live secrets, sorted (values are never listed).
    pub fn names(&self) -> Vec<String> {
        let now = Instant::now();
        let mut names: Vec<String> = self
            .values
            .read()
            .iter()
            .filter(|(_, (_, exp))| exp.is_none_or(|t| now < t))
            .map(|(k, _)| k.clone())
            .collect();
        names.sort();
        names
    }

    /// The value of a secret (none once it expired).
    pub fn get(&self, name: &str) -> Option<SecretValue> {
        let map = self.values.read();
        let (value, expires) = map.get(name)?;
        if expires.is_some_and(|t| Instant::now() >= t) {
            return None;
        }
        Some(value.clone())
    }

    /// Materializes `template` with every `{}` replaced by the named secret
    /// (`None` if the secret does not exist). Grants are not checked here;
    /// [`resolve_action`](crate::resolve_action) does that for handlers.
    pub fn resolve(&self, template: &str, name: &str) -> Option<SecretValue> {
        self.get(name).map(|v| fill_template(template, &v))
    }
}

impl SecretSource for SecretStore {
    fn get(&self, name: &str) -> Option<SecretValue> {
        SecretStore::get(self, name)
    }
}

/// Replaces every `{}` in `template` with `value`.
pub(crate) fn fill_template(template: &str, value: &SecretValue) -> SecretValue {
    let mut out = Vec::with_capacity(template.len() + value.expose().len());
    let mut parts = template.split("{}");
    if let Some(first) = parts.next() {
        out.extend_from_slice(first.as_bytes());
    }
    for part in parts {
        out.extend_from_slice(value.expose());
        out.extend_from_slice(part.as_bytes());
    }
    SecretValue::new(out)
}

/// Which secrets one handler binding may use.
///
/// A name in `secrets` may be injected by reference (`secret(name)` header
/// values); a name in `reveal` may additionally be read by the guest with
/// `reveal-secret` (and implies use); a name in `mint` may be set by the guest
/// with `set-secret` (a credential it obtained itself) and implies use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Secrets the handler may inject without seeing them.
    pub secrets: Arc<[Arc<str>]>,
    /// Secrets the handler may read in clear.
    pub reveal: Arc<[Arc<str>]>,
    /// Secrets the handler may set.
    pub mint: Arc<[Arc<str>]>,
}

impl Grants {
    /// Grants use of `secrets` and clear reading of `reveal`.
    pub fn new<I, J, S, T>(secrets: I, reveal: J) -> Grants
    where
        I: IntoIterator<Item = S>,
        J: IntoIterator<Item = T>,
        S: Into<Arc<str>>,
        T: Into<Arc<str>>,
    {
        Grants {
            secrets: secrets.into_iter().map(Into::into).collect(),
            reveal: reveal.into_iter().map(Into::into).collect(),
            mint: Arc::from([]),
        }
    }

    /// These grants plus setting (and using) `mint`.
    pub fn with_mint<I, S>(mut self, mint: I) -> Grants
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        self.mint = mint.into_iter().map(Into::into).collect();
        self
    }

    /// Grants use (not reveal) of the given secrets.
    pub fn use_only<I, S>(names: I) -> Grants
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        Grants::new(names, std::iter::empty::<Arc<str>>())
    }

    /// Whether the handler may inject this secret.
    pub fn may_use(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| &**s == name) || self.may_reveal(name) || self.may_mint(name)
    }

    /// Whether the handler may set this secret.
    pub fn may_mint(&self, name: &str) -> bool {
        self.mint.iter().any(|s| &**s == name)
    }

    /// Whether the handler may read this secret in clear.
    pub fn may_reveal(&self, name: &str) -> bool {
        self.reveal.iter().any(|s| &**s == name)
    }

    /// All names usable by the handler (deduplicated).
    pub fn usable(&self) -> impl Iterator<Item = &str> {
        let reveal_only = self
            .reveal
            .iter()
            .filter(|r| !self.secrets.contains(r))
            .map(|r| &**r);
        let mint_only = self
            .mint
            .iter()
            .filter(|m| !self.secrets.contains(m) && !self.reveal.contains(m))
            .map(|m| &**m);
        self.secrets
            .iter()
            .map(|s| &**s)
            .chain(reveal_only)
            .chain(mint_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let s = SecretStore::new();
        s.set("tok", "hunter2-value");
        let printed = format!("{s:?} {:?}", s.get("tok").unwrap());
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("tok"));
    }

    #[test]
    fn template_fill() {
        let s = SecretStore::new();
        s.set("t", "abc");
        assert_eq!(s.resolve("Bearer {}", "t").unwrap().expose(), b"Bearer abc");
        assert_eq!(s.resolve("{}:{}", "t").unwrap().expose(), b"abc:abc");
        assert!(s.resolve("{}", "missing").is_none());
    }

    #[test]
    fn minted_secrets_expire() {
        let s = SecretStore::new();
        s.set_with_ttl("tok", "v", Some(Duration::from_millis(30)));
        assert!(s.get("tok").is_some());
        assert_eq!(s.names(), vec!["tok".to_string()]);
        std::thread::sleep(Duration::from_millis(40));
        assert!(s.get("tok").is_none());
        assert!(s.names().is_empty());
        let g = Grants::use_only(["a"]).with_mint(["m"]);
        assert!(g.may_use("m") && g.may_mint("m") && !g.may_mint("a"));
        assert_eq!(g.usable().collect::<Vec<_>>(), vec!["a", "m"]);
    }

    #[test]
    fn grants() {
        let g = Grants::new(["a"], ["b"]);
        assert!(g.may_use("a") && g.may_use("b") && !g.may_use("c"));
        assert!(!g.may_reveal("a") && g.may_reveal("b"));
        assert_eq!(g.usable().collect::<Vec<_>>(), vec!["a", "b"]);
    }
}

//! The leaf cache: one ready-made `rustls::ServerConfig` per name, minted once.
//!
//! A sandbox typically opens bursts of connections to the same few hosts (a package manager
//! fetching 200 crates, a browser opening 6 sockets). The first connection to a name pays for one
//! signature; every other one gets an `Arc` clone of a finished `ServerConfig`. Concurrent first
//! connections wait for a single mint instead of each signing their own (single-flight).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::sync::OnceCell;

use crate::ca::{LeafName, SandboxCa};
use crate::error::TlsError;
use crate::{ALPN_H2, ALPN_HTTP11};

/// Default number of leaves kept by [`LeafCache::new`].
pub const DEFAULT_LEAF_CACHE_CAPACITY: usize = 1024;

/// A cached leaf is re-minted this long before it expires, so no handshake ever presents a
/// certificate that runs out mid-connection.
const RENEW_MARGIN: Duration = Duration::from_secs(3600);

/// Which ALPN protocols the intercepting server offers to the sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DownstreamAlpn {
    /// `h2`, then `http/1.1` (the default).
    #[default]
    H2AndHttp11,
    /// `http/1.1` only, e.g. when the request path cannot speak HTTP/2 for this host.
    Http11Only,
}

impl DownstreamAlpn {
    /// The protocol ids, in server preference order.
    pub fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            DownstreamAlpn::H2AndHttp11 => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
            DownstreamAlpn::Http11Only => vec![ALPN_HTTP11.to_vec()],
        }
    }
}

/// Counters of a [`LeafCache`], for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafStats {
    /// Leaves minted (signatures made), including re-mints of expiring leaves.
    pub mints: u64,
    /// Requests answered without minting: cache hits, and waiters on another request's mint.
    pub hits: u64,
    /// Leaves dropped because the cache was full.
    pub evictions: u64,
    /// Failed mints (each failure is returned to its caller and not cached).
    pub mint_failures: u64,
    /// Leaves currently cached.
    pub entries: u64,
}

/// What the cache holds per name: the certified key and both ready-made server configs.
#[derive(Clone)]
struct CachedLeaf {
    key: Arc<CertifiedKey>,
    h2_and_http11: Arc<ServerConfig>,
    http11_only: Arc<ServerConfig>,
    renew_at: SystemTime,
}

impl CachedLeaf {
    fn config(&self, alpn: DownstreamAlpn) -> Arc<ServerConfig> {
        match alpn {
            DownstreamAlpn::H2AndHttp11 => self.h2_and_http11.clone(),
            DownstreamAlpn::Http11Only => self.http11_only.clone(),
        }
    }
}

type InFlight = Arc<OnceCell<CachedLeaf>>;

/// Bounded LRU of leaf certificates and their `ServerConfig`s, with single-flight minting.
///
/// Lock order, where two are held at once: `in_flight`, then `lru`. Neither is held across an
/// `.await`.
pub struct LeafCache {
    ca: Arc<SandboxCa>,
    lru: Mutex<LruCache<LeafName, CachedLeaf>>,
    /// Names being minted right now; waiters share the `OnceCell`. An entry is removed by the
    /// minting request itself, in the same synchronous step that publishes (or fails) the mint,
    /// so a cancelled caller cannot leave a stale entry behind.
    in_flight: Mutex<HashMap<LeafName, InFlight>>,
    mints: AtomicU64,
    hits: AtomicU64,
    evictions: AtomicU64,
    mint_failures: AtomicU64,
    /// Test hook: this many upcoming mints fail.
    #[cfg(test)]
    fail_next_mints: AtomicU64,
}

impl LeafCache {
    /// A cache of [`DEFAULT_LEAF_CACHE_CAPACITY`] leaves issued by `ca`.
    pub fn new(ca: Arc<SandboxCa>) -> LeafCache {
        const DEFAULT: NonZeroUsize = match NonZeroUsize::new(DEFAULT_LEAF_CACHE_CAPACITY) {
            Some(n) => n,
            None => panic!("default capacity is not zero"),
        };
        LeafCache::with_capacity(ca, DEFAULT)
    }

    /// A cache holding at most `capacity` leaves issued by `ca`; the least recently used one is
    /// evicted when a new name arrives at a full cache.
    pub fn with_capacity(ca: Arc<SandboxCa>, capacity: NonZeroUsize) -> LeafCache {
        LeafCache {
            ca,
            lru: Mutex::new(LruCache::new(capacity)),
            in_flight: Mutex::new(HashMap::new()),
            mints: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            mint_failures: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_mints: AtomicU64::new(0),
        }
    }

    /// The CA this cache mints with.
    pub fn ca(&self) -> &Arc<SandboxCa> {
        &self.ca
    }

    /// Maximum number of cached leaves.
    pub fn capacity(&self) -> usize {
        self.lru.lock().cap().get()
    }

    /// The server config for `name` offering ALPN `h2`, `http/1.1`, minting the leaf on first
    /// use.
    ///
    /// Concurrent calls for the same new name mint once; the others wait for that mint. A failed
    /// mint is returned to every waiter that tried it and is not cached: the next call tries
    /// again.
    pub async fn get_or_mint(&self, name: &LeafName) -> Result<Arc<ServerConfig>, TlsError> {
        self.get_or_mint_with(name, DownstreamAlpn::H2AndHttp11)
            .await
    }

    /// Like [`LeafCache::get_or_mint`] with a chosen ALPN offer. Both variants are built at mint
    /// time, so either is an `Arc` clone on a hit.
    pub async fn get_or_mint_with(
        &self,
        name: &LeafName,
        alpn: DownstreamAlpn,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(self.entry(name).await?.config(alpn))
    }

    /// The leaf itself (certificate and key), for callers building their own `ServerConfig`
    /// with [`server_config_with_alpn`].
    pub async fn get_or_mint_key(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, TlsError> {
        Ok(self.entry(name).await?.key)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LeafStats {
        LeafStats {
            mints: self.mints.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            mint_failures: self.mint_failures.load(Ordering::Relaxed),
            entries: self.lru.lock().len() as u64,
        }
    }

    async fn entry(&self, name: &LeafName) -> Result<CachedLeaf, TlsError> {
        let name = name.normalized()?;
        if let Some(hit) = self.lookup(&name) {
            return Ok(hit);
        }
        let cell = {
            let mut in_flight = self.in_flight.lock();
            // Look again under the in-flight lock: a mint that finished since the first lookup
            // has already published to the LRU and left the map, and must not be repeated.
            if let Some(hit) = self.lookup(&name) {
                return Ok(hit);
            }
            in_flight.entry(name.clone()).or_default().clone()
        };

        let mut minted_here = false;
        let result = cell
            .get_or_try_init(|| {
                minted_here = true;
                // No await in here: minting, publishing and leaving the in-flight map happen in
                // one poll, so cancellation of the caller cannot split them.
                let minted = self.mint(&name);
                self.finish(&name, &cell, &minted);
                std::future::ready(minted)
            })
            .await
            .cloned();
        if result.is_ok() && !minted_here {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// A cached, still-fresh leaf; an expiring one is dropped so the caller mints anew.
    fn lookup(&self, name: &LeafName) -> Option<CachedLeaf> {
        let mut lru = self.lru.lock();
        match lru.get(name) {
            Some(leaf) if leaf.renew_at > SystemTime::now() => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(leaf.clone())
            }
            Some(_) => {
                lru.pop(name);
                None
            }
            None => None,
        }
    }

    fn mint(&self, name: &LeafName) -> Result<CachedLeaf, TlsError> {
        #[cfg(test)]
        if self
            .fail_next_mints
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(TlsError::CaExpired);
        }
        let (key, not_after) = self.ca.issue_leaf_until(name)?;
        let h2_and_http11 =
            server_config_with_alpn(key.clone(), DownstreamAlpn::H2AndHttp11.protocols())?;
        let http11_only =
            server_config_with_alpn(key.clone(), DownstreamAlpn::Http11Only.protocols())?;
        // A leaf capped by the CA's own end cannot be renewed into anything better: keep it to
        // the end rather than re-minting the same validity on every request.
        let renew_at = if not_after >= self.ca.not_after() {
            not_after
        } else {
            not_after.checked_sub(RENEW_MARGIN).unwrap_or(not_after)
        };
        Ok(CachedLeaf {
            key,
            h2_and_http11,
            http11_only,
            renew_at,
        })
    }

    /// Publishes a successful mint to the LRU, counts it, and removes our in-flight entry.
    fn finish(&self, name: &LeafName, cell: &InFlight, minted: &Result<CachedLeaf, TlsError>) {
        match minted {
            Ok(leaf) => {
                self.mints.fetch_add(1, Ordering::Relaxed);
                let displaced = self.lru.lock().push(name.clone(), leaf.clone());
                // `push` also returns the previous value for the same name (a renewal), which
                // is a replacement, not an eviction.
                if matches!(displaced, Some((old, _)) if old != *name) {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                self.mint_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(leaf = %name, %error, "leaf certificate mint failed");
            }
        }
        let mut in_flight = self.in_flight.lock();
        // Only remove our own cell: after a failure, a later request may already have started
        // a fresh one under the same name.
        if in_flight.get(name).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            in_flight.remove(name);
        }
    }
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("capacity", &self.capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds a server config presenting `key` with the given ALPN offer (server preference order).
///
/// TLS 1.2 and 1.3 with the *ring* provider, no client authentication. If the client offers
/// ALPN and none of its protocols is in `alpn`, rustls fails the handshake with a
/// `no_application_protocol` alert; a client offering no ALPN at all is accepted.
pub fn server_config_with_alpn(
    key: Arc<CertifiedKey>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Arc<LeafCache> {
        let ca = SandboxCa::generate("cache-unit", Duration::from_secs(3600)).unwrap();
        Arc::new(LeafCache::new(Arc::new(ca)))
    }

    #[tokio::test]
    async fn failed_mint_is_not_cached() {
        let cache = cache();
        let name = LeafName::dns("fail.test").unwrap();
        cache.fail_next_mints.store(1, Ordering::Relaxed);
        assert!(matches!(
            cache.get_or_mint(&name).await,
            Err(TlsError::CaExpired)
        ));
        assert!(cache.in_flight.lock().is_empty());
        let stats = cache.stats();
        assert_eq!((stats.mints, stats.mint_failures, stats.entries), (0, 1, 0));

        cache.get_or_mint(&name).await.unwrap();
        let stats = cache.stats();
        assert_eq!((stats.mints, stats.mint_failures, stats.entries), (1, 1, 1));
        assert!(cache.in_flight.lock().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_on_a_failed_mint_retry() {
        let cache = cache();
        let name = LeafName::dns("flaky.test").unwrap();
        cache.fail_next_mints.store(1, Ordering::Relaxed);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, name) = (cache.clone(), name.clone());
                tokio::spawn(async move { cache.get_or_mint(&name).await.is_ok() })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            ok += usize::from(task.await.unwrap());
        }
        assert_eq!(ok, 19, "only the request whose mint failed sees the error");
        let stats = cache.stats();
        assert_eq!(stats.mint_failures, 1);
        assert!(stats.mints >= 1);
        assert_eq!(stats.entries, 1);
        assert!(cache.in_flight.lock().is_empty());
    }

    #[tokio::test]
    async fn expiring_leaf_is_reminted() {
        let cache = cache();
        let name = LeafName::dns("renew.test").unwrap();
        let first = cache.get_or_mint(&name).await.unwrap();
        if let Some(leaf) = cache.lru.lock().peek_mut(&name) {
            leaf.renew_at = SystemTime::now() - Duration::from_secs(1);
        }
        let second = cache.get_or_mint(&name).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        let stats = cache.stats();
        assert_eq!((stats.mints, stats.evictions, stats.entries), (2, 0, 1));
    }

    #[test]
    fn debug_shows_stats_not_keys() {
        let cache = cache();
        let text = format!("{cache:?}");
        assert!(text.contains("mints: 0") && text.contains("redacted"));
        assert!(!text.contains("PRIVATE"));
    }
}

//! What a handler binding may call besides its secrets and the kv store: `fetch` (through the
//! proxy's own upstream client, which the embedder provides as a [`Fetcher`] bound to the
//! binding's granted hosts) and `set-secret` (into the process's [`SecretStore`]).
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

use crate::secrets::SecretStore;

/// One `fetch` a guest asked for, secrets filled in, ready to send.
#[derive(Debug)]
pub struct FetchCall {
    /// The handler that asked (for errors, audit and metrics).
    pub handler: Arc<str>,
    /// The sandbox it runs for.
    pub sandbox: Arc<str>,
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: Uri,
    /// Headers (values holding secrets are marked sensitive).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct FetchReply {
    /// Status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body (bounded by the fetcher).
    pub body: Bytes,
}

/// A boxed future of a fetch.
pub type FetchFuture = Pin<Box<dyn Future<Output = Result<FetchReply, String>> + Send>>;

/// Sends a guest's `fetch`. The implementation enforces the binding's host grant, the
/// non-public-address rules, certificate verification, response size and time limits, and
/// audits the call; the error text is shown to the guest (never a secret).
pub trait Fetcher: Send + Sync {
    /// Send `call`.
    fn fetch(&self, call: FetchCall) -> FetchFuture;
}

/// The services one binding is granted.
#[derive(Clone, Default)]
pub struct Services {
    /// `fetch`, bound to the binding's granted hosts; `None`: not granted.
    pub fetch: Option<Arc<dyn Fetcher>>,
    /// At most this many `fetch` calls per invocation (request, or one response phase).
    pub max_fetches: u32,
    /// The longest one fetch may take (the invocation's wall-clock backstop allows for it).
    pub fetch_timeout: Duration,
    /// Where `set-secret` stores values; `None`: not available (offline runs have their own).
    pub mint: Option<Arc<SecretStore>>,
    /// The binding edits responses as they stream (`response = { mode = "stream" }`): what
    /// `response-streams` tells the guest.
    pub response_streams: bool,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("fetch", &self.fetch.is_some())
            .field("max_fetches", &self.max_fetches)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("mint", &self.mint.is_some())
            .field("response_streams", &self.response_streams)
            .finish()
    }
}

impl Services {
    /// How long all the fetches an invocation may make can take together.
    #[cfg(feature = "runtime")]
    pub(crate) fn fetch_allowance(&self) -> Duration {
        if self.fetch.is_some() {
            self.fetch_timeout * self.max_fetches
        } else {
            Duration::ZERO
        }
    }
}

//! The policy file as users write it (TOML, or the same shape in JSON over the admin API), and
//! the runtime layer the admin API changes. These types only describe; validation and
//! compilation happen in [`crate::eval::CompiledPolicy::compile`] so that every problem can be
//! reported at once with its field path.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::PolicyError;

/// Default handler deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;
/// Default handler memory cap.
pub const DEFAULT_MEMORY_MB: u64 = 16;
/// Allowed range of `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;
/// Allowed range of `memory_mb`.
pub const MEMORY_MB_RANGE: std::ops::RangeInclusive<u64> = 1..=1024;

fn default_true() -> bool {
    true
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_memory() -> u64 {
    DEFAULT_MEMORY_MB
}

/// The static policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Default egress for destinations no rule matches (default `false`: deny).
    #[serde(default)]
    pub internet: bool,
    /// Terminate TLS for allowed hosts (default `true`).
    #[serde(default = "default_true")]
    pub intercept_https: bool,
    /// If non-empty, only destinations matching one of these may go anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Destinations always denied, before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_hosts: Vec<String>,
    /// TLS to these is spliced through untouched (certificate pinning, mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough_hosts: Vec<String>,
    /// Non-public addresses (private, CGNAT, ULA, loopback, link-local, ...; IPs or CIDRs)
    /// egret may dial for the sandbox when a name resolves to them. Public addresses need no
    /// entry; pinned names (`[resolve]`, `--resolve`) need none either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_upstream_cidrs: Vec<String>,
    /// Whether denials are carried out (default `true`). With `false` the policy reports
    /// only: whatever it would deny is forwarded and audited as `would_deny`.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enforce: bool,
    /// Static catch-all handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<BindingConfig>,
    /// Names pinned to addresses (`curl --resolve`), as written; checked at compile.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolve: BTreeMap<String, ResolveAddrs>,
    /// Where secret values come from; never the values themselves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Seed values for the handlers' key-value store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kv: BTreeMap<String, String>,
    /// Named handlers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// Per-host routes: handlers and request rules, tried in file order per host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            internet: false,
            intercept_https: true,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            passthrough_hosts: Vec::new(),
            allowed_upstream_cidrs: Vec::new(),
            enforce: true,
            outbound: None,
            resolve: BTreeMap::new(),
            secrets: BTreeMap::new(),
            kv: BTreeMap::new(),
            handlers: BTreeMap::new(),
            routes: Vec::new(),
        }
    }
}

/// `[resolve]` values: one address or several, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "an IP address string or a list of IP address strings"
)]
pub enum ResolveAddrs {
    /// `"10.0.0.1"`.
    One(String),
    /// `["fd00::1", "10.0.0.1"]`.
    Many(Vec<String>),
}

impl ResolveAddrs {
    /// The addresses as written, in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            ResolveAddrs::One(s) => std::slice::from_ref(s),
            ResolveAddrs::Many(v) => v,
        }
    }
}

/// Where a secret's value comes from, read by the egret process (never by the sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    /// `{ env = "VAR" }`: an environment variable of the egret process.
    Env(String),
    /// `{ file = "/run/secrets/x" }`: a file readable by the egret process.
    File(String),
}

/// A named handler: a WebAssembly module with default params and secret grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Path to the `.wasm` component, as written (the caller resolves it relative to the policy
    /// file; this crate does no I/O).
    pub module: String,
    /// Per-request deadline in milliseconds (1..=10000, default 50).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Memory cap in MiB (1..=1024, default 16).
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    /// The only secrets this handler may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The subset of `secrets` the guest may read in clear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reveal: Vec<String>,
    /// Default params (any value; handed to the guest as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// Buffer the request body (up to `max_bytes`) and hand it to the guest, which may
    /// replace it. Without it bodies stream past the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyConfig>,
    /// Show the guest the response: its head, the buffered body, or the body's chunks after
    /// they were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseConfig>,
    /// Hosts the guest may `fetch` (host patterns, as in `allowed_hosts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch_hosts: Vec<String>,
    /// Bounds of `fetch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchConfig>,
    /// Secrets the guest may set itself (`set-secret`, e.g. an access token it obtained);
    /// usable by this handler like its granted secrets. Must not name a `[secrets]` entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mint_secrets: Vec<String>,
    /// Mask every secret value egret filled into a request where the response echoes it
    /// (default on).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub echo_guard: bool,
    /// Where each request's instance comes from: `"fresh"` (the default) or `"reuse"`.
    #[serde(default, skip_serializing_if = "Instances::is_fresh")]
    pub instances: Instances,
}

/// `instances = "fresh" | "reuse"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instances {
    /// A new instance for every request, discarded after it: nothing the guest keeps in
    /// memory crosses requests (kv is the only shared state).
    #[default]
    Fresh,
    /// An instance that served a request cleanly serves later requests of the same sandbox
    /// and handler version, keeping its guest memory; it is discarded after a trap, a
    /// timeout or running out of memory, after a bounded number of requests, and when its
    /// memory grew past a bound. Saves the instantiation per request (the cost of a heavy
    /// guest runtime, e.g. JavaScript or Python, most of all).
    Reuse,
}

impl Instances {
    fn is_fresh(&self) -> bool {
        *self == Instances::Fresh
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `body = { max_bytes = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyConfig {
    /// Largest request body buffered; a larger one is refused with 413.
    pub max_bytes: u64,
}

/// How the guest sees responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// The head only; the guest may edit headers or replace the response.
    Head,
    /// The head and the whole body (up to `max_bytes`); the guest may edit or replace it.
    Buffer,
    /// The body's chunks after they were sent (no added latency); the guest cannot change
    /// them.
    Observe,
    /// Each chunk — for `text/event-stream`, each complete event — before it is sent (up to
    /// `max_event_bytes`); the guest passes, replaces or drops it. Needs a component of
    /// `egret:handler@0.3.0`.
    Stream,
}

/// `response = { mode = "head" | "buffer" | "observe" | "stream", max_bytes = N,
/// max_event_bytes = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// What the guest sees.
    pub mode: ResponseMode,
    /// Largest response body buffered (`buffer` only; default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Largest server-sent event or chunk handed to the guest (`stream` only; default 1 MiB);
    /// a larger event ends the response with an audited error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<u64>,
}

/// `fetch = { max_calls = N, max_response_bytes = N, timeout_ms = N }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Calls per invocation (default 4).
    #[serde(default = "default_fetch_calls")]
    pub max_calls: u32,
    /// Largest response body read (default 1 MiB).
    #[serde(default = "default_fetch_bytes")]
    pub max_response_bytes: u64,
    /// Time for one call, connect to last byte (default 5000).
    #[serde(default = "default_fetch_timeout")]
    pub timeout_ms: u64,
}

/// Default `fetch.max_calls`.
pub const DEFAULT_FETCH_CALLS: u32 = 4;
/// Default `fetch.max_response_bytes`.
pub const DEFAULT_FETCH_BYTES: u64 = 1 << 20;
/// Default `fetch.timeout_ms`.
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = 5000;
/// Default `response.max_bytes`.
pub const DEFAULT_RESPONSE_BYTES: u64 = 1 << 20;
/// Default `response.max_event_bytes`: a `tools/list` answer of a few hundred tools fits.
pub const DEFAULT_EVENT_BYTES: u64 = 1 << 20;
/// Largest `body.max_bytes` / `response.max_bytes` / `response.max_event_bytes` /
/// `fetch.max_response_bytes`.
pub const MAX_BUFFER_BYTES: u64 = 64 << 20;

fn default_fetch_calls() -> u32 {
    DEFAULT_FETCH_CALLS
}
fn default_fetch_bytes() -> u64 {
    DEFAULT_FETCH_BYTES
}
fn default_fetch_timeout() -> u64 {
    DEFAULT_FETCH_TIMEOUT_MS
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_calls: DEFAULT_FETCH_CALLS,
            max_response_bytes: DEFAULT_FETCH_BYTES,
            timeout_ms: DEFAULT_FETCH_TIMEOUT_MS,
        }
    }
}

impl HandlerConfig {
    /// A handler with the given module and every other field at its default.
    pub fn new(module: impl Into<String>) -> Self {
        HandlerConfig {
            module: module.into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mb: DEFAULT_MEMORY_MB,
            secrets: Vec::new(),
            reveal: Vec::new(),
            params: None,
            body: None,
            response: None,
            fetch_hosts: Vec::new(),
            fetch: None,
            mint_secrets: Vec::new(),
            echo_guard: true,
            instances: Instances::Fresh,
        }
    }
}

/// A reference to a handler with optional params that replace the handler's defaults.
///
/// Written as a bare name (`outbound = "get-only"`) or a table
/// (`outbound = { handler = "get-only", params = {...} }`).
#[derive(Debug, Clone, PartialEq)]
pub struct BindingConfig {
    /// Name of a handler in `[handlers]`.
    pub handler: String,
    /// Params replacing the handler's defaults, if given.
    pub params: Option<serde_json::Value>,
}

impl BindingConfig {
    /// A binding of `handler` with its default params.
    pub fn new(handler: impl Into<String>) -> Self {
        BindingConfig {
            handler: handler.into(),
            params: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingTable {
    handler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<serde_json::Value>,
}

impl Serialize for BindingConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Read back in the short form users write when there is nothing else to say.
        match &self.params {
            None => s.serialize_str(&self.handler),
            Some(p) => BindingTable {
                handler: self.handler.clone(),
                params: Some(p.clone()),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BindingConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BindingConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a handler name, or a table `{ handler = \"name\", params = {...} }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BindingConfig, E> {
                Ok(BindingConfig::new(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BindingConfig, A::Error> {
                // Going through a derived struct keeps serde's own unknown/missing-field
                // messages, which list the valid keys.
                let t = BindingTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(BindingConfig {
                    handler: t.handler,
                    params: t.params,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A per-host route: requests to `hosts` (and, when given, with one of `methods` and a path
/// matching one of `paths`) go to `handler`, or are allowed or denied (`action`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteConfig {
    /// Host patterns (written as `hosts = [...]` or `host = "..."`).
    pub hosts: Vec<String>,
    /// Name of a handler in `[handlers]`; `None` for a native rule (`action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// Params replacing the handler's defaults, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// Methods this route applies to (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path globs this route applies to (any path when empty): `*` within a segment, `**`
    /// across segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Match `paths` against the path and the query (`/p?a=1`) rather than the path alone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub query: bool,
    /// What a matching request gets when there is no handler (default `allow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RouteAction>,
    /// Status of a denial (`action = "deny"`; 400..=599, default 403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Text of a denial, shown to the client with the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Forward what this route would deny, and audit it as `would_deny`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub report_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `action = "allow" | "deny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAction {
    /// Forward the request unchanged.
    Allow,
    /// Refuse it with `status` and `message`.
    Deny,
}

/// Default status of a request rule's denial.
pub const DEFAULT_DENY_STATUS: u16 = 403;

impl RouteConfig {
    /// A route of `hosts` to `handler` with the handler's default params.
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>, handler: &str) -> Self {
        RouteConfig {
            handler: Some(handler.to_owned()),
            action: None,
            ..RouteConfig::rule(hosts, RouteAction::Allow)
        }
    }

    /// A native rule of `hosts` with `action` and no method or path condition yet.
    pub fn rule<S: Into<String>>(hosts: impl IntoIterator<Item = S>, action: RouteAction) -> Self {
        RouteConfig {
            hosts: hosts.into_iter().map(Into::into).collect(),
            handler: None,
            params: None,
            methods: Vec::new(),
            paths: Vec::new(),
            query: false,
            action: Some(action),
            status: None,
            message: None,
            report_only: false,
        }
    }

    /// The handler binding this route selects, if it has a handler.
    pub fn binding(&self) -> Option<BindingConfig> {
        Some(BindingConfig {
            handler: self.handler.clone()?,
            params: self.params.clone(),
        })
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum RouteField {
    Host,
    Hosts,
    Handler,
    Params,
    Methods,
    Paths,
    Query,
    Action,
    Status,
    Message,
    ReportOnly,
}

/// Fails while deserializing a value, so the parser reports the value's own position.
struct Conflict(&'static str);

impl<'de> de::DeserializeSeed<'de> for Conflict {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // Raised from inside the value's visitor: some parsers attach the value's position
        // only to errors raised while they are deserializing it.
        d.deserialize_any(self)
    }
}

macro_rules! conflict_visits {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $t) -> Result<(), E> {
            Err(E::custom(self.0))
        })*
    };
}

impl<'de> Visitor<'de> for Conflict {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    conflict_visits!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// Reads `methods`, refusing what is not a method token at the value's position.
struct Methods;

impl<'de> de::DeserializeSeed<'de> for Methods {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if let Some(bad) = v.iter().find(|m| !crate::request::is_method_token(m)) {
            return Err(de::Error::custom(format!(
                "`{bad}` is not an HTTP method; write one method per string, e.g. \
                 methods = [\"GET\", \"HEAD\"]"
            )));
        }
        if v.is_empty() {
            return Err(de::Error::custom(
                "`methods = []` matches no request; list methods, or leave `methods` out to match any",
            ));
        }
        Ok(v)
    }
}

/// Reads `paths`, refusing a glob that does not parse at the value's position.
struct Paths;

impl<'de> de::DeserializeSeed<'de> for Paths {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        for p in &v {
            if let Err(e) = crate::request::PathGlob::parse(p) {
                return Err(de::Error::custom(format!(
                    "invalid path glob `{p}`: {e}; {}",
                    e.hint()
                )));
            }
        }
        if v.is_empty() {
            return Err(de::Error::custom(
                "`paths = []` matches no request; list globs, or leave `paths` out to match any",
            ));
        }
        Ok(v)
    }
}

/// Reads a deny `status`, refusing one outside 400..=599 at the value's position.
struct Status;

impl<'de> de::DeserializeSeed<'de> for Status {
    type Value = u16;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u16, D::Error> {
        let v = u16::deserialize(d)?;
        if !(400..=599).contains(&v) {
            return Err(de::Error::custom(format!(
                "status {v} is not an error status; use 400..=599 (default 403)"
            )));
        }
        Ok(v)
    }
}

impl<'de> Deserialize<'de> for RouteConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a route table with `host` or `hosts`, and `handler` or `action`")
            }
            // Hand-written rather than `try_from` so that errors are raised on the key or value
            // at fault, while the parser still knows where in the file it is.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RouteConfig, A::Error> {
                const BOTH: &str = "a route takes `host` or `hosts`, not both";
                const HANDLER_AND_ACTION: &str = "a route takes `handler` or `action`, not both \
                     (a handler decides the requests it is given)";
                const DENY_ONLY: &str = "`status` and `message` belong to `action = \"deny\"`; \
                     add it, or remove them";
                let mut r = RouteConfig::rule(Vec::<String>::new(), RouteAction::Allow);
                r.action = None;
                let mut hosts: Option<Vec<String>> = None;
                while let Some(key) = map.next_key::<RouteField>()? {
                    match key {
                        RouteField::Host | RouteField::Hosts if hosts.is_some() => {
                            map.next_value_seed(Conflict(BOTH))?;
                        }
                        RouteField::Host => hosts = Some(vec![map.next_value::<String>()?]),
                        RouteField::Hosts => hosts = Some(map.next_value()?),
                        RouteField::Handler if r.action.is_some() => {
                            map.next_value_seed(Conflict(HANDLER_AND_ACTION))?;
                        }
                        RouteField::Handler => r.handler = Some(map.next_value::<String>()?),
                        RouteField::Params => r.params = Some(map.next_value()?),
                        RouteField::Methods => r.methods = map.next_value_seed(Methods)?,
                        RouteField::Paths => r.paths = map.next_value_seed(Paths)?,
                        RouteField::Query => r.query = map.next_value()?,
                        RouteField::Action if r.handler.is_some() => {
                            map.next_value_seed(Conflict(HANDLER_AND_ACTION))?;
                        }
                        RouteField::Action => {
                            let a: RouteAction = map.next_value()?;
                            if a == RouteAction::Allow
                                && (r.status.is_some() || r.message.is_some())
                            {
                                return Err(de::Error::custom(DENY_ONLY));
                            }
                            r.action = Some(a);
                        }
                        RouteField::Status | RouteField::Message
                            if r.handler.is_some() || r.action == Some(RouteAction::Allow) =>
                        {
                            map.next_value_seed(Conflict(DENY_ONLY))?;
                        }
                        RouteField::Status => r.status = Some(map.next_value_seed(Status)?),
                        RouteField::Message => r.message = Some(map.next_value::<String>()?),
                        RouteField::ReportOnly => r.report_only = map.next_value()?,
                    }
                }
                r.hosts = hosts.ok_or_else(|| {
                    de::Error::custom("a route needs `host = \"...\"` or `hosts = [...]`")
                })?;
                if r.params.is_some() && r.handler.is_none() {
                    return Err(de::Error::custom(
                        "`params` are for a handler; add `handler = \"...\"` or remove `params`",
                    ));
                }
                if r.handler.is_none() && r.action.is_none() {
                    if r.status.is_some() || r.message.is_some() {
                        return Err(de::Error::custom(DENY_ONLY));
                    }
                    r.action = Some(RouteAction::Allow);
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

/// Changes made at runtime through the admin API, layered over the static file: its routes are
/// consulted before the file's routes, its catch-all before the file's catch-all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    /// Runtime catch-all handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<BindingConfig>,
    /// Runtime per-host routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

impl PolicyConfig {
    /// Parses a TOML policy. `origin` names the source (usually the file name) in errors.
    ///
    /// Syntax errors, wrong types and unknown keys are reported with 1-based line and column;
    /// semantic checks happen in [`crate::CompiledPolicy::compile`].
    pub fn from_toml(src: &str, origin: &str) -> Result<PolicyConfig, PolicyError> {
        toml::from_str(src).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(src, s.start)).unwrap_or((1, 1));
            parse_error(origin, line, column, e.message().trim_end().to_owned())
        })
    }

    /// Parses the same shape from JSON (the admin API's form).
    pub fn from_json(src: &str, origin: &str) -> Result<PolicyConfig, PolicyError> {
        from_json_impl(src, origin)
    }

    /// Writes the policy back as TOML.
    pub fn to_toml_string(&self) -> Result<String, PolicyError> {
        toml::to_string(self).map_err(|e| PolicyError::Serialize(e.to_string()))
    }
}

impl RuntimeLayer {
    /// Parses a runtime layer from JSON (the admin API's form).
    pub fn from_json(src: &str, origin: &str) -> Result<RuntimeLayer, PolicyError> {
        from_json_impl(src, origin)
    }

    /// Whether the layer changes nothing.
    pub fn is_empty(&self) -> bool {
        self.outbound.is_none() && self.routes.is_empty()
    }
}

fn from_json_impl<T: de::DeserializeOwned>(src: &str, origin: &str) -> Result<T, PolicyError> {
    serde_json::from_str(src).map_err(|e| {
        let (line, column) = (e.line().max(1), e.column().max(1));
        // serde_json appends the position to its message; we report it separately.
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        parse_error(origin, line, column, message)
    })
}

fn parse_error(origin: &str, line: usize, column: usize, message: String) -> PolicyError {
    PolicyError::Parse {
        origin: origin.to_owned(),
        line,
        column,
        hint: hint_for(&message),
        message,
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(src: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(src.len());
    while !src.is_char_boundary(at) {
        at -= 1;
    }
    let before = &src[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Backtick-quoted words of a serde message, in order.
fn ticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// A hint for the serde messages where one helps: the closest valid key or variant.
fn hint_for(message: &str) -> Option<String> {
    let kind = if message.starts_with("unknown field") {
        "keys"
    } else if message.starts_with("unknown variant") {
        "values"
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        return Some(format!("add {} here", rest.trim()));
    } else {
        return None;
    };
    let words = ticked(message);
    let (unknown, valid) = words.split_first()?;
    if valid.is_empty() {
        return Some(format!(
            "`{unknown}` is not valid here; nothing else is expected"
        ));
    }
    let list = valid.join(", ");
    let closest = valid
        .iter()
        .map(|v| (edit_distance(unknown, v), *v))
        .min()
        .filter(|(d, v)| *d <= 2.max(v.len() / 3));
    Some(match closest {
        Some((_, v)) => format!("did you mean `{v}`? valid {kind} here: {list}"),
        None => format!("valid {kind} here: {list}"),
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FULL: &str = r#"
internet = false
intercept_https = true
allowed_hosts = ["allowed.test", "*.github.test", "10.200.0.0/24", "db.test:5432"]
denied_hosts  = ["evil.test"]
passthrough_hosts = ["pinned.test"]
outbound = "get-only"

[resolve]
"allowed.test" = "10.200.0.2"
"v6.test" = ["fd00:200::2", "10.200.0.2"]

[secrets]
VCS_TOKEN = { env = "VCS_TOKEN" }
GH = { file = "/run/secrets/gh" }

[kv]
"agent-47" = "VCS_TOKEN"

[handlers.inject]
module = "handlers/inject-header.wasm"
params = { header = "x-auth-token", secret = "VCS_TOKEN" }
secrets = ["VCS_TOKEN"]
reveal = []
timeout_ms = 50
memory_mb = 16

[handlers.get-only]
module = "handlers/get-only.wasm"

[[routes]]
hosts = ["vcs.test", "*.vcs.test"]
handler = "inject"
params = { header = "x-auth-token", secret = "VCS_TOKEN" }

[[routes]]
host = "single.test"
handler = "get-only"
"#;

    fn parse_err(src: &str) -> (usize, usize, String, Option<String>, String) {
        match PolicyConfig::from_toml(src, "policy.toml").unwrap_err() {
            e @ PolicyError::Parse { .. } => {
                let shown = e.to_string();
                let PolicyError::Parse {
                    line,
                    column,
                    message,
                    hint,
                    ..
                } = e
                else {
                    unreachable!()
                };
                (line, column, message, hint, shown)
            }
            e => panic!("expected a parse error, got {e}"),
        }
    }

    #[test]
    fn parses_the_full_example() {
        let c = PolicyConfig::from_toml(FULL, "policy.toml").unwrap();
        assert!(!c.internet);
        assert!(c.intercept_https);
        assert_eq!(c.allowed_hosts.len(), 4);
        assert_eq!(c.denied_hosts, vec!["evil.test"]);
        assert_eq!(c.passthrough_hosts, vec!["pinned.test"]);
        assert_eq!(c.outbound, Some(BindingConfig::new("get-only")));
        assert_eq!(
            c.resolve["v6.test"].as_slice(),
            &["fd00:200::2".to_owned(), "10.200.0.2".to_owned()]
        );
        assert_eq!(c.resolve["allowed.test"].as_slice(), &["10.200.0.2"]);
        assert_eq!(
            c.secrets["VCS_TOKEN"],
            SecretSource::Env("VCS_TOKEN".into())
        );
        assert_eq!(
            c.secrets["GH"],
            SecretSource::File("/run/secrets/gh".into())
        );
        assert_eq!(c.kv["agent-47"], "VCS_TOKEN");
        let h = &c.handlers["inject"];
        assert_eq!(h.module, "handlers/inject-header.wasm");
        assert_eq!(
            h.params,
            Some(json!({"header": "x-auth-token", "secret": "VCS_TOKEN"}))
        );
        assert_eq!(h.secrets, vec!["VCS_TOKEN"]);
        assert_eq!(c.handlers["get-only"].timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(c.handlers["get-only"].memory_mb, DEFAULT_MEMORY_MB);
        assert_eq!(c.routes[0].hosts, vec!["vcs.test", "*.vcs.test"]);
        assert_eq!(c.routes[1].hosts, vec!["single.test"]);
        assert_eq!(c.routes[1].params, None);
    }

    #[test]
    fn defaults_for_an_empty_file() {
        let c = PolicyConfig::from_toml("", "p").unwrap();
        assert_eq!(c, PolicyConfig::default());
        assert!(c.intercept_https);
        assert!(!c.internet);
    }

    #[test]
    fn toml_round_trip() {
        let c = PolicyConfig::from_toml(FULL, "policy.toml").unwrap();
        let text = c.to_toml_string().unwrap();
        let back = PolicyConfig::from_toml(&text, "back.toml")
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        assert_eq!(back, c);
    }

    #[test]
    fn json_round_trip_and_same_shape() {
        let c = PolicyConfig::from_toml(FULL, "policy.toml").unwrap();
        let text = serde_json::to_string_pretty(&c).unwrap();
        assert_eq!(PolicyConfig::from_json(&text, "api").unwrap(), c);
    }

    #[test]
    fn outbound_table_form() {
        let c = PolicyConfig::from_toml(
            "outbound = { handler = \"allow-hosts\", params = { hosts = [\"a.test\"] } }",
            "p",
        )
        .unwrap();
        let b = c.outbound.unwrap();
        assert_eq!(b.handler, "allow-hosts");
        assert_eq!(b.params, Some(json!({"hosts": ["a.test"]})));
    }

    #[test]
    fn unknown_top_level_key_has_location_and_suggestion() {
        let (line, col, msg, hint, shown) =
            parse_err("internet = true\nalowed_hosts = [\"a.test\"]\n");
        assert_eq!((line, col), (2, 1));
        assert!(msg.contains("unknown field `alowed_hosts`"), "{msg}");
        let hint = hint.unwrap();
        assert!(hint.contains("did you mean `allowed_hosts`?"), "{hint}");
        assert!(hint.contains("intercept_https"), "{hint}");
        assert!(shown.starts_with("policy.toml:2:1: "), "{shown}");
        assert!(shown.contains("hint: did you mean"), "{shown}");
    }

    #[test]
    fn unknown_handler_key_lists_valid_keys() {
        let (line, col, msg, hint, _) =
            parse_err("[handlers.x]\nmodule = \"m.wasm\"\n  timeout = 5\n");
        assert_eq!((line, col), (3, 3));
        assert!(msg.contains("`timeout`"), "{msg}");
        let hint = hint.unwrap();
        assert!(hint.contains("did you mean `timeout_ms`?"), "{hint}");
        assert!(hint.contains("memory_mb"), "{hint}");
    }

    #[test]
    fn unknown_key_in_outbound_table() {
        let (line, _, msg, hint, _) = parse_err("\n\noutbound = { handler = \"x\", parms = {} }\n");
        assert_eq!(line, 3);
        assert!(msg.contains("`parms`"), "{msg}");
        assert!(hint.unwrap().contains("did you mean `params`?"));
    }

    #[test]
    fn unknown_secret_source() {
        let (line, _, msg, hint, _) = parse_err("[secrets]\nA = { vault = \"x\" }\n");
        assert_eq!(line, 2);
        assert!(msg.contains("vault"), "{msg}");
        let hint = hint.unwrap();
        assert!(hint.contains("env") && hint.contains("file"), "{hint}");
    }

    #[test]
    fn type_errors_have_location() {
        let (line, col, msg, _, _) = parse_err("internet = \"yes\"\n");
        assert_eq!((line, col), (1, 12));
        assert!(msg.contains("invalid type"), "{msg}");
        let (line, _, msg, _, _) = parse_err("[handlers.x]\nmodule = \"m\"\nmemory_mb = -1\n");
        assert_eq!(line, 3);
        assert!(!msg.is_empty());
        let (line, _, msg, _, _) = parse_err("[resolve]\n\"a.test\" = 5\n");
        assert_eq!(line, 2);
        assert!(msg.contains("IP address"), "{msg}");
    }

    #[test]
    fn syntax_errors_have_location() {
        let (line, col, _, _, shown) = parse_err("internet = true\n  x = [1,\n");
        assert!(line >= 2, "{shown}");
        assert!(col >= 1);
        let (line, col, _, _, _) = parse_err("é = = 1");
        assert_eq!(line, 1);
        assert!(col >= 1);
    }

    #[test]
    fn missing_module_is_reported() {
        let (line, _, msg, hint, _) = parse_err("[handlers.x]\ntimeout_ms = 5\n");
        assert!(line >= 1);
        assert!(msg.contains("missing field `module`"), "{msg}");
        assert_eq!(hint.as_deref(), Some("add `module` here"));
    }

    #[test]
    fn route_needs_exactly_one_of_host_and_hosts() {
        let (line, _, msg, _, _) = parse_err(
            "[[routes]]\nhost = \"z\"\nhandler = \"h\"\n\n[[routes]]\nhost = \"a\"\nhosts = [\"b\"]\nhandler = \"h\"\n",
        );
        assert_eq!(line, 7, "points at the conflicting key");
        assert!(msg.contains("not both"), "{msg}");
        let (_, _, msg, _, _) = parse_err("[[routes]]\nhandler = \"h\"\n");
        assert!(msg.contains("needs `host"), "{msg}");
        let (line, _, msg, _, _) =
            parse_err("[[routes]]\nhost = \"a\"\nhandler = \"h\"\nfoo = 1\n");
        assert_eq!(line, 4);
        assert!(msg.contains("`foo`"), "{msg}");
    }

    #[test]
    fn request_rules_parse_and_round_trip() {
        let src = "[[routes]]\nhost = \"git.test\"\nmethods = [\"GET\"]\npaths = [\"/**/info/refs\"]\n\
                   query = true\n\n[[routes]]\nhost = \"git.test\"\naction = \"deny\"\nstatus = 405\n\
                   message = \"no push\"\nreport_only = true\n";
        let c = PolicyConfig::from_toml(src, "p").unwrap();
        assert_eq!(c.routes[0].handler, None);
        assert_eq!(
            c.routes[0].action,
            Some(RouteAction::Allow),
            "allow by default"
        );
        assert_eq!(c.routes[0].methods, vec!["GET"]);
        assert!(c.routes[0].query);
        assert_eq!(c.routes[1].action, Some(RouteAction::Deny));
        assert_eq!(c.routes[1].status, Some(405));
        assert!(c.routes[1].report_only);
        let back = PolicyConfig::from_toml(&c.to_toml_string().unwrap(), "back").unwrap();
        assert_eq!(back, c);
        let c = PolicyConfig::from_toml("enforce = false\n", "p").unwrap();
        assert!(!c.enforce);
        assert!(PolicyConfig::default().enforce);
    }

    #[test]
    fn bad_request_rules_name_line_column_and_fix() {
        let (line, col, msg, _, shown) =
            parse_err("[[routes]]\nhost = \"a\"\npaths = [\"/ok\", \"no-slash\"]\n");
        assert_eq!((line, col), (3, 9), "{shown}");
        assert!(
            msg.contains("`no-slash`") && msg.contains("e.g. `/repos/**`"),
            "{msg}"
        );
        let (line, _, msg, _, _) =
            parse_err("[[routes]]\nhost = \"a\"\nmethods = [\"GET POST\"]\n");
        assert_eq!(line, 3);
        assert!(msg.contains("not an HTTP method"), "{msg}");
        let (line, _, msg, _, _) =
            parse_err("[[routes]]\nhost = \"a\"\naction = \"deny\"\nstatus = 200\n");
        assert_eq!(line, 4);
        assert!(msg.contains("400..=599"), "{msg}");
        let (line, _, msg, _, _) =
            parse_err("[[routes]]\nhost = \"a\"\nhandler = \"h\"\naction = \"deny\"\n");
        assert!(
            (3..=4).contains(&line),
            "points at one of the two keys: {line}"
        );
        assert!(msg.contains("`handler` or `action`, not both"), "{msg}");
        let (line, _, msg, _, _) = parse_err("[[routes]]\nhost = \"a\"\nmessage = \"x\"\n");
        assert!(line >= 1);
        assert!(msg.contains("belong to `action = \"deny\"`"), "{msg}");
        let (_, _, msg, hint, _) = parse_err("[[routes]]\nhost = \"a\"\naction = \"block\"\n");
        assert!(msg.contains("block"), "{msg}");
        assert!(hint.unwrap().contains("allow, deny"));
        let (_, _, msg, hint, _) = parse_err("[[routes]]\nhost = \"a\"\nmethod = [\"GET\"]\n");
        assert!(msg.contains("`method`"), "{msg}");
        assert!(hint.unwrap().contains("did you mean `methods`?"));
    }

    #[test]
    fn json_errors_have_location_without_duplicating_it() {
        let e = PolicyConfig::from_json("{\n  \"internet\": true,\n  \"bogus\": 1\n}", "api")
            .unwrap_err();
        let PolicyError::Parse {
            line,
            column,
            message,
            hint,
            origin,
        } = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(origin, "api");
        assert_eq!(line, 3);
        assert!(column > 1);
        assert!(message.contains("unknown field `bogus`"), "{message}");
        assert!(!message.contains("at line"), "{message}");
        assert!(hint.unwrap().contains("valid keys here"));
    }

    #[test]
    fn runtime_layer_json() {
        let rt = RuntimeLayer::from_json(
            r#"{"outbound": {"handler": "allow-hosts", "params": {"hosts": ["a"]}},
                "routes": [{"host": "x.test", "handler": "h"}]}"#,
            "api",
        )
        .unwrap();
        assert_eq!(rt.outbound.as_ref().unwrap().handler, "allow-hosts");
        assert_eq!(rt.routes[0].hosts, vec!["x.test"]);
        assert!(!rt.is_empty());
        assert!(RuntimeLayer::default().is_empty());
        assert!(RuntimeLayer::from_json(r#"{"outbund": "x"}"#, "api").is_err());
        let back: RuntimeLayer =
            serde_json::from_str(&serde_json::to_string(&rt).unwrap()).unwrap();
        assert_eq!(back, rt);
    }

    #[test]
    fn null_params_cannot_be_written_as_toml() {
        let c = PolicyConfig {
            outbound: Some(BindingConfig {
                handler: "h".into(),
                params: Some(json!({"a": null})),
            }),
            ..PolicyConfig::default()
        };
        assert!(matches!(c.to_toml_string(), Err(PolicyError::Serialize(_))));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("é\néx", 5), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}

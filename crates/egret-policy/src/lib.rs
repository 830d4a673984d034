//! egret's policy: the configuration users write, its validation, the compiled host matcher and
//! the evaluation order every connection and request goes through.
//!
//! Pure logic: no I/O, no async, no sockets, no filesystem. The binary reads files and secrets;
//! this crate only decides.
//!
//! ```
//! use egret_policy::{CompiledPolicy, Destination, PolicyConfig, RuntimeLayer, VerdictAction};
//!
//! let cfg = PolicyConfig::from_toml(r#"
//!     allowed_hosts = ["*.github.test", "vcs.test"]
//!     denied_hosts = ["evil.github.test"]
//!
//!     [handlers.inject]
//!     module = "handlers/inject-header.wasm"
//!     params = { header = "x-auth-token", secret = "VCS_TOKEN" }
//!     secrets = ["VCS_TOKEN"]
//!
//!     [[routes]]
//!     host = "vcs.test"
//!     handler = "inject"
//! "#, "policy.toml")?;
//! let policy = CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1)?;
//!
//! let v = policy.evaluate(&Destination::host("api.github.test", 443));
//! assert_eq!(v.action, VerdictAction::Allow);
//! assert_eq!(&*v.rule, r#"allowed_hosts "*.github.test""#);
//!
//! let v = policy.evaluate(&Destination::host("evil.github.test", 443));
//! assert_eq!(v.action, VerdictAction::Deny);
//!
//! let VerdictAction::Handler(id) = policy.evaluate(&Destination::host("vcs.test", 443)).action
//! else { panic!() };
//! assert_eq!(&*policy.binding(id).handler, "inject");
//!
//! // VCS_TOKEN is granted but not in [secrets]: a warning, since it may be set at runtime.
//! assert_eq!(policy.warnings().len(), 1);
//! # Ok::<(), egret_policy::PolicyError>(())
//! ```
//!
//! # Host patterns
//! Every host list (`allowed_hosts`, `denied_hosts`, `passthrough_hosts`, route `hosts`) uses
//! one syntax, see [`Pattern`]:
//! - `*`: every destination;
//! - `example.com`: that name (case-insensitive, one trailing dot ignored);
//! - `*.example.com`: any subdomain at any depth, not `example.com` itself; `api-*.example.com`:
//!   `*` matches one or more of `[a-z0-9-_.]`;
//! - `10.0.0.1`, `fd00::1`, `[fd00::1]`, `10.0.0.0/8`, `fd00::/8`: addresses and networks
//!   (IPv4-mapped IPv6 destinations match IPv4 patterns);
//! - any of these with `:443` or `:8000-8999` (IPv6 in brackets: `[fd00::/64]:443`).
//!
//! When several patterns of a list match, the most specific wins: exact name > glob (longer
//! literal part first) > IP/CIDR (longer prefix first) > `*`, and a port-specific pattern beats a
//! port-less one of the same kind.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod config;
pub mod dry_run;
pub mod error;
pub mod eval;
pub mod matcher;
pub mod pattern;
pub mod request;
pub mod shadow;
pub mod suggest;

pub use address::{special_range, SpecialRange};
pub use config::{
    BindingConfig, BodyConfig, FetchConfig, HandlerConfig, Instances, PolicyConfig, ResolveAddrs,
    ResponseConfig, ResponseMode, RouteAction, RouteConfig, RuntimeLayer, SecretSource,
};
pub use dry_run::{parse_url, DryDecision, DryRun, UrlParts};
pub use error::{PolicyError, Problem};
pub use eval::{
    parse_pin_arg, Binding, BindingId, CompiledPolicy, DnsDecision, FetchGrant, RequestAction,
    RequestVerdict, RulesId, TlsDecision, Verdict, VerdictAction,
};
pub use matcher::{HostSet, Match};
pub use pattern::{
    canonical_ip, is_valid_name, normalize_host, Destination, Pattern, PatternError,
    PatternErrorKind, PatternKind, PortSpec, Specificity,
};
pub use shadow::{differs, ShadowReport, ShadowRow, ShadowSummary};

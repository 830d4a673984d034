//! Host patterns: the one syntax every host list in a policy uses (`allowed_hosts`,
//! `denied_hosts`, `passthrough_hosts`, route hosts), its parser with precise error messages,
//! and single-pattern matching against a [`Destination`].
//!
//! The compiled multi-pattern index lives in [`crate::matcher`]; this module is the ground
//! truth it must agree with.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Longest DNS label (RFC 1035).
const MAX_LABEL: usize = 63;
/// Longest DNS name in text form without the trailing dot (RFC 1035).
const MAX_NAME: usize = 253;

/// What a request or connection is going to: the name the policy evaluates (SNI, `Host`, or the
/// DNS map), the address, and the port.
///
/// `host` must already be normalized with [`normalize_host`]; matching never normalizes, so the
/// per-request path does no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination<'a> {
    /// Lowercase host name (or IP literal) without a trailing dot, if one is known.
    pub host: Option<&'a str>,
    /// The destination address, if one is known.
    pub ip: Option<IpAddr>,
    /// The destination port.
    pub port: u16,
}

impl<'a> Destination<'a> {
    /// A destination known by name only.
    pub fn host(host: &'a str, port: u16) -> Self {
        Destination {
            host: Some(host),
            ip: None,
            port,
        }
    }

    /// A destination known by address only (opaque TCP without a DNS-map entry).
    pub fn ip(ip: IpAddr, port: u16) -> Self {
        Destination {
            host: None,
            ip: Some(ip),
            port,
        }
    }

    /// The destination a request names by `host`: an IP literal is the address (canonical),
    /// anything else a name.
    pub fn named(host: &'a str, port: u16) -> Self {
        match host.parse::<IpAddr>() {
            Ok(ip) => Destination::ip(canonical_ip(ip), port),
            Err(_) => Destination::host(host, port),
        }
    }
}

/// Normalizes a host name the way patterns are normalized: ASCII lowercase, one trailing dot
/// removed, and brackets around an IPv6 literal removed.
///
/// Borrows when the input is already normal. Idempotent: a name ending in two dots keeps them
/// (stripping one would make a second call strip another), and such a name matches no host
/// pattern anyway.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let mut s = host;
    if let Some(inner) = s.strip_suffix('.') {
        if !inner.ends_with('.') {
            s = inner;
        }
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            s = inner;
        }
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Maps an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to its IPv4 address.
///
/// Every address is canonicalized before IP matching so that a sandbox cannot dodge an IPv4
/// deny rule by dialling the mapped form.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// Whether `b` may be matched by a `*` in a glob (`[a-z0-9-_.]`).
#[inline]
pub(crate) fn is_glob_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
}

/// The ports a pattern applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No port suffix: every port.
    Any,
    /// `:N` or `:LO-HI` (inclusive, `LO <= HI`, both in 1..=65535).
    Range(u16, u16),
}

impl PortSpec {
    /// Whether `port` is covered.
    #[inline]
    pub fn contains(self, port: u16) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Range(lo, hi) => lo <= port && port <= hi,
        }
    }

    /// Whether every port 1..=65535 is covered (port-less, or a range spanning all ports).
    #[inline]
    pub fn covers_all(self) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Range(lo, hi) => lo <= 1 && hi == u16::MAX,
        }
    }

    /// Rank for specificity: a single port beats a range, a range beats no port.
    fn rank(self) -> u8 {
        match self {
            PortSpec::Any => 0,
            PortSpec::Range(lo, hi) if lo == hi => 2,
            PortSpec::Range(..) => 1,
        }
    }
}

/// An IP network in the integer form matching uses (canonical: IPv4-mapped networks are
/// stored as IPv4, host bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NetKey {
    V4 { addr: u32, len: u8 },
    V6 { addr: u128, len: u8 },
}

#[inline]
pub(crate) fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

#[inline]
pub(crate) fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

impl NetKey {
    #[inline]
    fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (NetKey::V4 { addr, len }, IpAddr::V4(v4)) => mask4(u32::from(v4), len) == addr,
            (NetKey::V6 { addr, len }, IpAddr::V6(v6)) => mask6(u128::from(v6), len) == addr,
            _ => false,
        }
    }

    fn to_ipnet(self) -> IpNet {
        match self {
            NetKey::V4 { addr, len } => IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(addr), len)),
            NetKey::V6 { addr, len } => IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(addr), len)),
        }
    }
}

/// The shape of a compiled pattern (without its port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// `*`: every destination.
    Any,
    /// An exact host name, lowercase, without a trailing dot.
    Exact(Box<str>),
    /// `*.suffix`: any name ending in `.suffix` with at least one character before the dot.
    /// Holds the suffix without the leading `*.` (e.g. `example.com`).
    Subdomain(Box<str>),
    /// Any other glob, e.g. `api-*.example.com`; holds the normalized glob text.
    Glob(Box<str>),
    /// An IP address or CIDR network (an address is a full-length prefix).
    Net(IpNet),
}

/// Why a pattern was rejected. Each variant is a case where the pattern could never match (or
/// is ambiguous enough that a user most likely meant something else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternErrorKind {
    /// The pattern is empty.
    #[error("the pattern is empty")]
    Empty,
    /// `a..b`, or a trailing `..`.
    #[error("it has an empty label (two dots in a row)")]
    EmptyLabel,
    /// `.example.com`.
    #[error("it starts with a dot")]
    LeadingDot,
    /// `https://example.com/`: a URL where a host was expected.
    #[error("it is a URL, not a host")]
    Url,
    /// A character outside ASCII.
    #[error("it contains the non-ASCII character `{0}`")]
    NonAscii(char),
    /// A character outside `[a-z0-9-_.*]`.
    #[error("it contains `{0}`; host patterns use only a-z, 0-9, `-`, `_`, `.` and `*`")]
    BadChar(char),
    /// A label longer than 63 characters.
    #[error("the label `{label}` is {len} characters long; a DNS label is at most 63")]
    LabelTooLong {
        /// The offending label.
        label: String,
        /// Its length.
        len: usize,
    },
    /// A name longer than 253 characters.
    #[error("the name is {0} characters long; a DNS name is at most 253")]
    NameTooLong(usize),
    /// `**`.
    #[error("it contains `**`")]
    DoubleStar,
    /// A numeric last label that is not a dotted-quad IPv4 address (`10.1`, `010.0.0.1`).
    #[error("its last label is numeric but it is not an IPv4 address in dotted-quad form")]
    NumericName,
    /// `host:` with nothing after the colon.
    #[error("the port after `:` is empty")]
    EmptyPort,
    /// A port that is not a number.
    #[error("the port `{0}` is not a number")]
    BadPort(String),
    /// Port 0 or above 65535.
    #[error("the port {0} is outside 1..=65535")]
    PortOutOfRange(u64),
    /// `:9000-8000`.
    #[error("the port range {0}-{1} is inverted")]
    InvertedRange(u16, u16),
    /// `[fd00::1` without `]`, or text after `]` that is not `:port`.
    #[error("the brackets around the IPv6 address are not closed or are followed by something other than `:port`")]
    Brackets,
    /// Something in brackets, or before `/`, that is not an IP address.
    #[error("`{0}` is not an IP address")]
    BadAddress(String),
    /// A prefix length that is not a number or is too long for the address family.
    #[error("the prefix length `/{prefix}` is not valid; {family} prefixes are 0..={max}")]
    BadPrefix {
        /// The prefix text as written.
        prefix: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The longest prefix for the family.
        max: u8,
    },
    /// `10.0.0.1/8`: address bits beyond the prefix are set.
    #[error("the address has bits set beyond the /{prefix} prefix")]
    HostBits {
        /// The prefix length.
        prefix: u8,
        /// The network the user most likely meant, e.g. `10.0.0.0/8`.
        suggestion: String,
    },
}

/// A host pattern that failed to compile: the pattern as written and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it was rejected.
    pub kind: PatternErrorKind,
}

impl PatternError {
    fn new(pattern: &str, kind: PatternErrorKind) -> Self {
        PatternError {
            pattern: pattern.to_owned(),
            kind,
        }
    }

    /// What the user most likely should write instead, when that can be said.
    pub fn hint(&self) -> Option<String> {
        use PatternErrorKind as K;
        Some(match &self.kind {
            K::Empty => "remove the empty entry, or write `*` to match everything".into(),
            K::EmptyLabel => "remove the extra dot".into(),
            K::LeadingDot => match self.pattern.trim_start_matches('.') {
                "" => "write a host name, e.g. `example.com`, or `*` for everything".into(),
                rest => format!(
                    "write `*.{rest}` to match subdomains, or `{rest}` for the name itself"
                ),
            },
            K::Url => "write only the host (and optional `:port`), e.g. `example.com:443`".into(),
            K::NonAscii(_) => {
                "use punycode for non-ASCII names (the `xn--…` form, e.g. `xn--bcher-kva.example`)"
                    .into()
            }
            K::BadChar(_) => {
                "write a bare host name, IP or CIDR with an optional `:port`; no scheme, path or user"
                    .into()
            }
            K::LabelTooLong { .. } | K::NameTooLong(_) => {
                "no DNS name can be this long, so the pattern would never match".into()
            }
            K::DoubleStar => {
                "write a single `*`: it already matches one or more characters, dots included"
                    .into()
            }
            K::NumericName => {
                "write the address in dotted-quad form, e.g. `10.0.0.1`, or a CIDR like `10.0.0.0/8`"
                    .into()
            }
            K::EmptyPort | K::BadPort(_) | K::PortOutOfRange(_) => {
                "write a port in 1..=65535 (`host:443`) or a range (`host:8000-8999`)".into()
            }
            K::InvertedRange(lo, hi) => format!("did you mean `{hi}-{lo}`?"),
            K::Brackets | K::BadAddress(_) => "write IPv4 like `10.0.0.1`, IPv6 like `fd00::1` \
                 (in brackets with a port: `[fd00::1]:443`), or a CIDR like `10.0.0.0/8`"
                .into(),
            K::BadPrefix { .. } => return None,
            K::HostBits { suggestion, .. } => format!("did you mean `{suggestion}`?"),
        })
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid host pattern `{}`: {}", self.pattern, self.kind)?;
        if let Some(hint) = self.hint() {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PatternError {}

/// How specific a pattern is; greater is more specific.
///
/// Order: exact host > glob (longer literal part first) > IP/CIDR (longer prefix first) > `*`;
/// within the same class and length, a single port beats a port range, which beats no port.
/// Ties between patterns are broken by list position, which is not part of this value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Specificity {
    class: u8,
    length: u16,
    port: u8,
}

/// A compiled host pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    source: Box<str>,
    kind: PatternKind,
    net: Option<NetKey>,
    port: PortSpec,
}

impl Pattern {
    /// Compiles a pattern; see the crate documentation for the syntax.
    pub fn parse(src: &str) -> Result<Pattern, PatternError> {
        let err = |kind| PatternError::new(src, kind);
        if src.is_empty() {
            return Err(err(PatternErrorKind::Empty));
        }
        if let Some(c) = src.chars().find(|c| !c.is_ascii()) {
            return Err(err(PatternErrorKind::NonAscii(c)));
        }
        if src.contains("://") {
            return Err(err(PatternErrorKind::Url));
        }
        let (body, port_text, bracketed) = split_port(src).map_err(err)?;
        let port = match port_text {
            None => PortSpec::Any,
            Some(p) => parse_port(p).map_err(err)?,
        };
        let (kind, net) = if bracketed {
            let net = parse_net(body, true).map_err(err)?;
            (PatternKind::Net(net.to_ipnet()), Some(net))
        } else if looks_like_net(body) {
            let net = parse_net(body, false).map_err(err)?;
            (PatternKind::Net(net.to_ipnet()), Some(net))
        } else {
            (parse_host(body).map_err(err)?, None)
        };
        Ok(Pattern {
            source: src.into(),
            kind,
            net,
            port,
        })
    }

    /// The pattern exactly as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The compiled shape.
    pub fn kind(&self) -> &PatternKind {
        &self.kind
    }

    /// The ports it applies to.
    pub fn port(&self) -> PortSpec {
        self.port
    }

    /// Whether two patterns match exactly the same destinations by construction (same shape
    /// and ports), even if written differently (`A.test` and `a.test.`).
    pub fn same_as(&self, other: &Pattern) -> bool {
        self.kind == other.kind && self.port == other.port
    }

    /// How specific this pattern is, for choosing among several that match.
    pub fn specificity(&self) -> Specificity {
        let (class, length) = match &self.kind {
            PatternKind::Exact(h) => (3, h.len()),
            PatternKind::Subdomain(s) => (2, s.len() + 1),
            PatternKind::Glob(g) => (2, g.bytes().filter(|&b| b != b'*').count()),
            PatternKind::Net(n) => (1, usize::from(n.prefix_len())),
            PatternKind::Any => (0, 0),
        };
        Specificity {
            class,
            length: u16::try_from(length).unwrap_or(u16::MAX),
            port: self.port.rank(),
        }
    }

    pub(crate) fn net_key(&self) -> Option<NetKey> {
        self.net
    }

    /// Whether this pattern matches `dest`.
    pub fn matches(&self, dest: &Destination<'_>) -> bool {
        self.port.contains(dest.port) && self.matches_target(dest.host, dest.ip)
    }

    /// Whether the host/IP part matches, ignoring the port.
    pub(crate) fn matches_target(&self, host: Option<&str>, ip: Option<IpAddr>) -> bool {
        match &self.kind {
            PatternKind::Any => true,
            PatternKind::Exact(e) => host == Some(&**e),
            PatternKind::Subdomain(s) => host.is_some_and(|h| subdomain_match(s, h)),
            PatternKind::Glob(g) => host.is_some_and(|h| glob_match(g, h)),
            PatternKind::Net(_) => {
                let net = self.net.expect("Net patterns carry a key");
                ip.is_some_and(|ip| net.contains(canonical_ip(ip)))
                    || host
                        .and_then(|h| h.parse::<IpAddr>().ok())
                        .is_some_and(|ip| net.contains(canonical_ip(ip)))
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Splits `body[:port]`, handling `[v6]:port` and bare IPv6 (which takes no port).
fn split_port(src: &str) -> Result<(&str, Option<&str>, bool), PatternErrorKind> {
    if let Some(rest) = src.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(PatternErrorKind::Brackets)?;
        return match after {
            "" => Ok((inside, None, true)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((inside, Some(p), true)),
                None => Err(PatternErrorKind::Brackets),
            },
        };
    }
    if src.contains(']') {
        return Err(PatternErrorKind::Brackets);
    }
    match src.matches(':').count() {
        0 => Ok((src, None, false)),
        // More than one colon is IPv6, which can only carry a port inside brackets.
        1 => {
            let (body, port) = src.split_once(':').expect("one colon");
            Ok((body, Some(port), false))
        }
        _ => Ok((src, None, false)),
    }
}

/// Whether `body` is meant as an address or CIDR rather than a host name: anything with a colon
/// (bare IPv6), a dotted quad, or a slash after something that could be an address. A slash
/// after a clear host name (`x.test/path`) is left to the host parser, which names the `/`.
fn looks_like_net(body: &str) -> bool {
    if body.contains(':') || body.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    match body.split_once('/') {
        Some((addr, _)) => addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'),
        None => false,
    }
}

fn parse_port_number(text: &str) -> Result<u16, PatternErrorKind> {
    if text.is_empty() {
        return Err(PatternErrorKind::EmptyPort);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PatternErrorKind::BadPort(text.to_owned()));
    }
    // Digits only, so the only possible failure is overflow.
    let n: u64 = text.parse().unwrap_or(u64::MAX);
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(PatternErrorKind::PortOutOfRange(n)),
    }
}

fn parse_port(text: &str) -> Result<PortSpec, PatternErrorKind> {
    match text.split_once('-') {
        None => {
            let p = parse_port_number(text)?;
            Ok(PortSpec::Range(p, p))
        }
        Some((lo, hi)) => {
            let (lo, hi) = (parse_port_number(lo)?, parse_port_number(hi)?);
            if lo > hi {
                return Err(PatternErrorKind::InvertedRange(lo, hi));
            }
            Ok(PortSpec::Range(lo, hi))
        }
    }
}

fn parse_net(body: &str, bracketed: bool) -> Result<NetKey, PatternErrorKind> {
    let (addr_text, prefix_text) = match body.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (body, None),
    };
    let addr: IpAddr = match addr_text.parse() {
        Ok(IpAddr::V4(_)) if bracketed => {
            return Err(PatternErrorKind::BadAddress(addr_text.to_owned()))
        }
        Ok(a) => a,
        Err(_) => return Err(PatternErrorKind::BadAddress(addr_text.to_owned())),
    };
    let (family, max) = match addr {
        IpAddr::V4(_) => ("IPv4", 32u8),
        IpAddr::V6(_) => ("IPv6", 128u8),
    };
    let prefix = match prefix_text {
        None => max,
        Some(p) => {
            let bad = || PatternErrorKind::BadPrefix {
                prefix: p.to_owned(),
                family,
                max,
            };
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad()),
            }
        }
    };
    let key = match addr {
        IpAddr::V4(v4) => NetKey::V4 {
            addr: u32::from(v4),
            len: prefix,
        },
        IpAddr::V6(v6) => NetKey::V6 {
            addr: u128::from(v6),
            len: prefix,
        },
    };
    let truncated = match key {
        NetKey::V4 { addr, len } => NetKey::V4 {
            addr: mask4(addr, len),
            len,
        },
        NetKey::V6 { addr, len } => NetKey::V6 {
            addr: mask6(addr, len),
            len,
        },
    };
    if truncated != key {
        return Err(PatternErrorKind::HostBits {
            prefix,
            suggestion: truncated.to_ipnet().to_string(),
        });
    }
    // Destinations are canonicalized to IPv4 when IPv4-mapped, so a mapped network
    // (`::ffff:10.0.0.0/104`) must be stored as the IPv4 network it covers to keep matching.
    Ok(match truncated {
        NetKey::V6 { addr, len } if len >= 96 && (addr >> 32) == 0xffff => NetKey::V4 {
            addr: addr as u32,
            len: len - 96,
        },
        k => k,
    })
}

fn parse_host(body: &str) -> Result<PatternKind, PatternErrorKind> {
    if body == "*" {
        return Ok(PatternKind::Any);
    }
    let lower = body.to_ascii_lowercase();
    let mut name = lower.as_str();
    if let Some(c) = name.chars().find(|&c| !(is_glob_char(c as u8) || c == '*')) {
        return Err(PatternErrorKind::BadChar(c));
    }
    if name.starts_with('.') {
        return Err(PatternErrorKind::LeadingDot);
    }
    // One trailing dot is the fully-qualified form of the same name.
    name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(PatternErrorKind::Empty);
    }
    if name.contains("**") {
        return Err(PatternErrorKind::DoubleStar);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(PatternErrorKind::EmptyLabel);
        }
        // A label with `*` can stretch across dots, so only literal labels have a length bound.
        if !label.contains('*') && label.len() > MAX_LABEL {
            return Err(PatternErrorKind::LabelTooLong {
                label: label.to_owned(),
                len: label.len(),
            });
        }
    }
    // Each `*` needs at least one character, so this is the shortest name the pattern matches.
    if name.len() > MAX_NAME {
        return Err(PatternErrorKind::NameTooLong(name.len()));
    }
    if !name.contains('*') {
        let last = name.rsplit('.').next().unwrap_or(name);
        if last.bytes().all(|b| b.is_ascii_digit()) {
            // `10.1` or `010.0.0.1` would be read as an address by some resolvers and as a name
            // by us; refuse the ambiguity rather than guess.
            return Err(PatternErrorKind::NumericName);
        }
        return Ok(PatternKind::Exact(name.into()));
    }
    if let Some(suffix) = name.strip_prefix("*.") {
        if !suffix.contains('*') {
            return Ok(PatternKind::Subdomain(suffix.into()));
        }
    }
    Ok(PatternKind::Glob(name.into()))
}

/// `*.suffix` matching: `host` ends in `.suffix` and everything before that dot is one or more
/// glob characters.
#[inline]
pub(crate) fn subdomain_match(suffix: &str, host: &str) -> bool {
    let (h, s) = (host.as_bytes(), suffix.as_bytes());
    if h.len() < s.len() + 2 {
        return false;
    }
    let dot = h.len() - s.len() - 1;
    h[dot] == b'.' && &h[dot + 1..] == s && h[..dot].iter().all(|&b| is_glob_char(b))
}

/// Glob matching where `*` matches one or more characters of `[a-z0-9-_.]`; the glob has no
/// `**`.
///
/// Literal glob characters are themselves glob characters, so whatever lies between the first
/// and last literal segment must consist of glob characters whatever the placement; that makes
/// leftmost placement of each middle segment optimal and the match linear-ish without
/// backtracking or allocation.
pub(crate) fn glob_match(glob: &str, host: &str) -> bool {
    let h = host.as_bytes();
    let mut segs = glob.split('*');
    let first = segs.next().unwrap_or("").as_bytes();
    if !h.starts_with(first) {
        return false;
    }
    let last = glob.rsplit('*').next().unwrap_or("").as_bytes();
    let stars = glob.bytes().filter(|&b| b == b'*').count();
    if stars == 0 {
        return h == first;
    }
    if h.len() < first.len() + last.len() + stars || !h.ends_with(last) {
        return false;
    }
    let end = h.len() - last.len();
    let middle = &h[first.len()..end];
    if !middle.iter().all(|&b| is_glob_char(b)) {
        return false;
    }
    // Segments strictly between the first and the last; each `*` before one needs ≥1 byte.
    let mut pos = 0usize;
    for seg in segs.take(stars - 1) {
        let seg = seg.as_bytes();
        let from = pos + 1;
        if from > middle.len() {
            return false;
        }
        match find(&middle[from..], seg) {
            Some(i) => pos = from + i + seg.len(),
            None => return false,
        }
    }
    // The last `*` needs at least one byte before the final segment.
    pos < middle.len()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Orders two matches: more specific first, then earlier index first.
pub(crate) fn better(a: (Specificity, u32), b: (Specificity, u32)) -> bool {
    match a.0.cmp(&b.0) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => a.1 < b.1,
    }
}

/// Checks a name against `[A-Za-z0-9_.-]{1,64}`, the syntax of handler and secret names.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> PatternError {
        match Pattern::parse(s) {
            Ok(p) => panic!("{s} should be rejected, got {p:?}"),
            Err(e) => e,
        }
    }

    fn h(host: &str, port: u16) -> Destination<'_> {
        Destination::host(host, port)
    }

    fn ip(s: &str, port: u16) -> Destination<'static> {
        Destination::ip(s.parse().unwrap(), port)
    }

    #[test]
    fn star_matches_everything() {
        let any = p("*");
        assert_eq!(any.kind(), &PatternKind::Any);
        assert!(any.matches(&h("a.test", 1)));
        assert!(any.matches(&ip("10.0.0.1", 65535)));
        assert!(any.matches(&Destination {
            host: None,
            ip: None,
            port: 80
        }));
        let any443 = p("*:443");
        assert!(any443.matches(&h("x", 443)));
        assert!(!any443.matches(&h("x", 80)));
    }

    #[test]
    fn exact_is_lowercased_and_strips_one_trailing_dot() {
        let e = p("Example.COM.");
        assert_eq!(e.kind(), &PatternKind::Exact("example.com".into()));
        assert_eq!(e.as_str(), "Example.COM.");
        assert!(e.matches(&h("example.com", 443)));
        assert!(!e.matches(&h("www.example.com", 443)));
        assert!(!e.matches(&h("example.co", 443)));
        assert!(!e.matches(&ip("10.0.0.1", 443)));
    }

    #[test]
    fn subdomain_glob_matches_any_depth_but_not_apex() {
        let g = p("*.example.com");
        assert_eq!(g.kind(), &PatternKind::Subdomain("example.com".into()));
        assert!(g.matches(&h("a.example.com", 1)));
        assert!(g.matches(&h("a.b.c.example.com", 1)));
        assert!(!g.matches(&h("example.com", 1)));
        assert!(!g.matches(&h(".example.com", 1)));
        assert!(!g.matches(&h("aexample.com", 1)));
        assert!(!g.matches(&h("a!.example.com", 1)));
    }

    #[test]
    fn inner_globs() {
        let g = p("api-*.example.com");
        assert!(matches!(g.kind(), PatternKind::Glob(_)));
        assert!(g.matches(&h("api-1.example.com", 1)));
        assert!(g.matches(&h("api-x.y.example.com", 1)));
        assert!(!g.matches(&h("api-.example.com", 1)));
        assert!(!g.matches(&h("web-1.example.com", 1)));
        let g = p("a*b*c");
        assert!(g.matches(&h("axbyc", 1)));
        assert!(!g.matches(&h("abc", 1)));
        assert!(!g.matches(&h("axbc", 1)));
        assert!(g.matches(&h("abbbc", 1)));
        let g = p("*.test.*");
        assert!(g.matches(&h("a.test.b", 1)));
        assert!(!g.matches(&h("test.b", 1)));
    }

    #[test]
    fn ip_and_cidr_patterns() {
        let a = p("10.0.0.1");
        assert!(a.matches(&ip("10.0.0.1", 22)));
        assert!(!a.matches(&ip("10.0.0.2", 22)));
        let n = p("10.0.0.0/8");
        assert!(n.matches(&ip("10.255.0.1", 22)));
        assert!(!n.matches(&ip("11.0.0.1", 22)));
        let v6 = p("fd00::1");
        assert!(v6.matches(&ip("fd00::1", 1)));
        let v6b = p("[fd00::1]");
        assert!(v6b.same_as(&v6));
        let v6n = p("fd00::/8");
        assert!(v6n.matches(&ip("fd12::5", 1)));
        assert!(!v6n.matches(&ip("fe80::1", 1)));
        assert!(!v6n.matches(&ip("10.0.0.1", 1)));
        let all4 = p("0.0.0.0/0");
        assert!(all4.matches(&ip("1.2.3.4", 1)));
        assert!(!all4.matches(&ip("::2", 1)));
    }

    #[test]
    fn ip_patterns_match_ip_literal_hosts_too() {
        let n = p("10.0.0.0/8");
        assert!(n.matches(&h("10.1.2.3", 80)));
        assert!(!n.matches(&h("11.1.2.3", 80)));
        assert!(p("fd00::/16").matches(&h("fd00::9", 80)));
        assert!(!n.matches(&h("ten.test", 80)));
    }

    #[test]
    fn ipv4_mapped_destinations_match_ipv4_patterns() {
        let n = p("10.0.0.0/8");
        assert!(n.matches(&ip("::ffff:10.1.2.3", 80)));
        assert!(n.matches(&h("::ffff:10.1.2.3", 80)));
        let mapped = p("[::ffff:10.0.0.0/104]");
        assert_eq!(
            mapped.kind(),
            &PatternKind::Net("10.0.0.0/8".parse().unwrap())
        );
        assert!(mapped.matches(&ip("10.9.9.9", 1)));
        assert!(mapped.matches(&ip("::ffff:10.9.9.9", 1)));
        assert_eq!(
            canonical_ip("::ffff:1.2.3.4".parse().unwrap()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical_ip("::1.2.3.4".parse().unwrap()),
            "::1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ports_and_ranges() {
        let e = p("db.test:5432");
        assert_eq!(e.port(), PortSpec::Range(5432, 5432));
        assert!(e.matches(&h("db.test", 5432)));
        assert!(!e.matches(&h("db.test", 5433)));
        let g = p("*.x.test:443");
        assert!(g.matches(&h("a.x.test", 443)));
        assert!(!g.matches(&h("a.x.test", 80)));
        let n = p("10.0.0.0/8:22");
        assert!(n.matches(&ip("10.0.0.9", 22)));
        assert!(!n.matches(&ip("10.0.0.9", 23)));
        let v6 = p("[fd00::1]:443");
        assert!(v6.matches(&ip("fd00::1", 443)));
        assert!(!v6.matches(&ip("fd00::1", 80)));
        let v6n = p("[fd00::/64]:443");
        assert!(v6n.matches(&ip("fd00::abcd", 443)));
        let r = p("h.test:8000-8999");
        assert_eq!(r.port(), PortSpec::Range(8000, 8999));
        assert!(r.matches(&h("h.test", 8000)));
        assert!(r.matches(&h("h.test", 8999)));
        assert!(!r.matches(&h("h.test", 9000)));
        assert!(p("h:1").matches(&h("h", 1)));
        assert!(p("h:65535").matches(&h("h", 65535)));
        assert!(p("h:1-65535").port().covers_all());
        assert!(!p("h:2-65535").port().covers_all());
    }

    fn assert_err(s: &str, needles: &[&str]) {
        let e = err(s);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("`{s}`")),
            "message must name the pattern: {msg}"
        );
        for n in needles {
            assert!(msg.contains(n), "message for {s:?} lacks {n:?}: {msg}");
        }
    }

    #[test]
    fn rejects_patterns_that_never_match() {
        assert_eq!(err("").kind, PatternErrorKind::Empty);
        assert_err("", &["empty"]);
        assert_err("a..b", &["empty label"]);
        assert_err("a.b..", &["empty label"]);
        assert_err(".example.com", &["starts with a dot", "*.example.com"]);
        assert_err("bücher.test", &["non-ASCII", "punycode"]);
        assert_err("a b.test", &["` `", "a-z, 0-9"]);
        assert_err("https://x.test/", &["URL", "`example.com:443`"]);
        assert_err("x.test/path", &["`/`", "no scheme, path"]);
        assert_err("user@x.test", &["`@`"]);
        let long = "a".repeat(64);
        assert_err(&format!("{long}.test"), &["64 characters", "at most 63"]);
        assert!(Pattern::parse(&format!("{}.test", "a".repeat(63))).is_ok());
        let name = vec!["a".repeat(60); 5].join(".");
        assert_err(&name, &["304 characters", "at most 253"]);
        assert_err("**.test", &["`**`", "single `*`"]);
        assert_err("a.**", &["`**`"]);
        assert_err(".", &["starts with a dot"]);
        assert_err("10.1", &["numeric", "dotted-quad"]);
        assert_err("010.0.0.1", &["numeric"]);
    }

    #[test]
    fn rejects_bad_ports() {
        assert_err("h.test:0", &["port 0", "1..=65535"]);
        assert_err("h.test:65536", &["port 65536", "1..=65535"]);
        assert_err("h.test:99999999999999999999999", &["1..=65535"]);
        assert_err("h.test:", &["port after `:` is empty"]);
        assert_err("h.test:http", &["`http` is not a number"]);
        assert_err(
            "h.test:9000-8000",
            &["9000-8000", "inverted", "`8000-9000`"],
        );
        assert_err("h.test:-80", &["empty"]);
        assert_err("[fd00::1]:0", &["port 0"]);
    }

    #[test]
    fn rejects_bad_cidrs() {
        assert_err("10.0.0.1/8", &["bits set", "did you mean `10.0.0.0/8`"]);
        assert_err("fd00::1/8", &["did you mean `fd00::/8`"]);
        assert_err("10.0.0.0/33", &["/33", "IPv4", "0..=32"]);
        assert_err("fd00::/129", &["/129", "IPv6", "0..=128"]);
        assert_err("10.0.0.0/", &["prefix length"]);
        assert_err("10.0.0.0/x", &["prefix length `/x`"]);
        assert_err("10.0.0/8", &["`10.0.0` is not an IP address"]);
        assert_err("[fd00::1", &["brackets"]);
        assert_err("[fd00::1]x", &["brackets"]);
        assert_err("[10.0.0.1]", &["not an IP address"]);
        assert_err("[nope]:443", &["`nope` is not an IP address"]);
        assert_err("fd00::zz", &["not an IP address", "[fd00::1]:443"]);
        assert_err("x]", &["brackets"]);
    }

    #[test]
    fn specificity_order() {
        let s = |x: &str| p(x).specificity();
        assert!(s("a.example.com") > s("*.example.com"));
        assert!(s("*.a.example.com") > s("*.example.com"));
        assert!(s("api-*.example.com") > s("*.example.com"));
        assert!(s("*.example.com") > s("10.0.0.1"));
        assert!(s("10.0.0.0/24") > s("10.0.0.0/8"));
        assert!(s("10.0.0.0/8") > s("*:443"));
        assert!(s("*:443") > s("*"));
        assert!(s("a.test:443") > s("a.test:1-1000"));
        assert!(s("a.test:1-1000") > s("a.test"));
        assert!(s("a.test") > s("*.a.test:443"));
    }

    #[test]
    fn normalize_host_cases() {
        assert_eq!(normalize_host("Example.COM."), "example.com");
        assert!(matches!(normalize_host("example.com"), Cow::Borrowed(_)));
        assert_eq!(normalize_host("[FD00::1]"), "fd00::1");
        assert_eq!(normalize_host("[nope]"), "[nope]");
        assert_eq!(normalize_host("a.."), "a..");
        assert_eq!(normalize_host("a."), "a");
    }

    #[test]
    fn name_syntax() {
        assert!(is_valid_name("VCS_TOKEN"));
        assert!(is_valid_name("a.b-c_d"));
        assert!(is_valid_name(&"x".repeat(64)));
        assert!(!is_valid_name(&"x".repeat(65)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a/b"));
    }
}

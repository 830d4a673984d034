//! Request rules: the method and path part of a route (`methods`, `paths`, `query`), parsed
//! once when the policy is read and matched per request without allocating.
//!
//! Path globs: `*` matches within one segment (no `/`), `**` across segments. A `**` that is a
//! whole segment also matches no segment at all: `/a/**/b` matches `/a/b`, and `/a/**`
//! matches `/a`. Every other character is literal (`?` included). Globs are matched against
//! the request's path made canonical ([`canonical_path`]), with the query only when the route
//! says `query = true`.

use std::borrow::Cow;
use std::fmt;

/// Most wildcards one glob may hold (bounds the backtracking of a match).
pub const MAX_WILDCARDS: usize = 8;
/// Longest glob accepted, in bytes.
pub const MAX_GLOB_LEN: usize = 1024;

/// One piece of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// These exact bytes.
    Lit(Box<[u8]>),
    /// `*`: any bytes but `/`.
    Star,
    /// `**`: any bytes.
    Any,
    /// A `**/` segment: nothing, or any bytes ending in `/`.
    Dirs,
    /// A trailing `/**`: nothing, or `/` and any bytes.
    Tail,
}

/// A compiled path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    src: Box<str>,
    tokens: Box<[Token]>,
    /// Bytes every match starts with (fast rejection).
    prefix_len: usize,
    /// The first (up to) 8 of them as a little-endian word, and the mask of those bytes: most
    /// globs of a host differ there, so most are rejected by one comparison.
    head: u64,
    head_mask: u64,
}

/// The first 8 bytes of `b` as a little-endian word, zero-padded.
#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// Why a glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Does not start with `/`.
    #[error("a path glob starts with `/`")]
    NotAbsolute,
    /// Three or more `*` in a row.
    #[error("`***` is not a wildcard; use `*` (one segment) or `**` (any depth)")]
    TooManyStars,
    /// More than [`MAX_WILDCARDS`] wildcards.
    #[error("more than {MAX_WILDCARDS} wildcards")]
    TooManyWildcards,
    /// Longer than [`MAX_GLOB_LEN`].
    #[error("longer than {MAX_GLOB_LEN} bytes")]
    TooLong,
    /// A control character, space or `#`.
    #[error("contains {0:?}, which never appears in a request path")]
    BadChar(char),
}

impl GlobError {
    /// What to write instead.
    pub fn hint(&self) -> &'static str {
        match self {
            GlobError::NotAbsolute => "write the path from its first `/`, e.g. `/repos/**`",
            GlobError::TooManyStars => "write `*` or `**`",
            GlobError::TooManyWildcards | GlobError::TooLong => {
                "split the glob into several shorter ones"
            }
            GlobError::BadChar(_) => "percent-encode it as the client sends it (e.g. `%20`)",
        }
    }
}

impl PathGlob {
    /// Parses a glob.
    pub fn parse(src: &str) -> Result<PathGlob, GlobError> {
        if src.len() > MAX_GLOB_LEN {
            return Err(GlobError::TooLong);
        }
        if !src.starts_with('/') {
            return Err(GlobError::NotAbsolute);
        }
        if let Some(c) = src
            .chars()
            .find(|c| c.is_control() || *c == ' ' || *c == '#')
        {
            return Err(GlobError::BadChar(c));
        }
        let b = src.as_bytes();
        let mut tokens: Vec<Token> = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut wildcards = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'*' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            let run = b[i..].iter().take_while(|&&c| c == b'*').count();
            if run > 2 {
                return Err(GlobError::TooManyStars);
            }
            wildcards += 1;
            if wildcards > MAX_WILDCARDS {
                return Err(GlobError::TooManyWildcards);
            }
            let seg_start = i == 0 || b[i - 1] == b'/';
            let end = i + run;
            let token = if run == 1 {
                Token::Star
            } else if seg_start && end < b.len() && b[end] == b'/' {
                // `/**/`: the literal keeps its `/`, the token eats the following one.
                i = end + 1;
                push_lit(&mut tokens, &mut lit);
                tokens.push(Token::Dirs);
                continue;
            } else if seg_start && end == b.len() && lit.last() == Some(&b'/') {
                lit.pop();
                Token::Tail
            } else {
                Token::Any
            };
            push_lit(&mut tokens, &mut lit);
            tokens.push(token);
            i = end;
        }
        push_lit(&mut tokens, &mut lit);
        let prefix_len = match tokens.first() {
            Some(Token::Lit(l)) => l.len(),
            _ => 0,
        };
        let head_len = prefix_len.min(8);
        let head_mask = if head_len == 8 {
            u64::MAX
        } else {
            (1u64 << (head_len * 8)) - 1
        };
        Ok(PathGlob {
            head: word(&src.as_bytes()[..head_len]),
            head_mask,
            src: src.into(),
            tokens: tokens.into(),
            prefix_len,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// Whether `path` (already canonical) matches.
    pub fn matches(&self, path: &str) -> bool {
        let p = path.as_bytes();
        if word(p) & self.head_mask != self.head
            || p.len() < self.prefix_len
            || p[..self.prefix_len] != self.src.as_bytes()[..self.prefix_len]
        {
            return false;
        }
        match_tokens(&self.tokens, p)
    }
}

fn push_lit(tokens: &mut Vec<Token>, lit: &mut Vec<u8>) {
    if !lit.is_empty() {
        tokens.push(Token::Lit(std::mem::take(lit).into()));
    }
}

fn match_tokens(tokens: &[Token], p: &[u8]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return p.is_empty();
    };
    match first {
        Token::Lit(l) => p.starts_with(l) && match_tokens(rest, &p[l.len()..]),
        Token::Star => {
            let seg = p.iter().position(|&c| c == b'/').unwrap_or(p.len());
            (0..=seg).any(|k| match_tokens(rest, &p[k..]))
        }
        Token::Any => (0..=p.len()).any(|k| match_tokens(rest, &p[k..])),
        Token::Dirs => {
            match_tokens(rest, p)
                || p.iter()
                    .enumerate()
                    .filter(|(_, &c)| c == b'/')
                    .any(|(k, _)| match_tokens(rest, &p[k + 1..]))
        }
        Token::Tail => p.is_empty() || p[0] == b'/',
    }
}

/// The form of a request path rules are matched against: percent-escapes of unreserved
/// characters decoded (RFC 3986 §6.2.2.2: `%2D` is `-`), other escapes upper-cased, runs of
/// `/` collapsed and dot segments removed, so that a path a server treats as the same resource
/// cannot slip past a rule by spelling. `%2F` stays encoded, a `%` that starts no escape becomes
/// `%25`, and canonicalising twice gives the same path. Borrowed when already canonical.
pub fn canonical_path(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    let clean = b.first() == Some(&b'/')
        && !b.windows(2).any(|w| w == b"//")
        && !b.contains(&b'%')
        && !path.split('/').any(|s| s == "." || s == "..");
    if clean {
        return Cow::Borrowed(path);
    }
    let mut decoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        decoded.push('/');
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(char::from(c));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b[i + 1].to_ascii_uppercase()));
                    decoded.push(char::from(b[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
        }
        if b[i] == b'%' {
            // A `%` that starts no escape is written as one (`%25`): left bare, it could pair
            // with what a decoded escape puts after it (`%3%34` → `%34`) and the next decoding
            // would read another path, so the canonical form would not be canonical.
            decoded.push_str("%25");
            i += 1;
            continue;
        }
        // Only ASCII bytes are looked at above; others are copied whole characters at a time.
        let ch = path[i..].chars().next().expect("in bounds");
        decoded.push(ch);
        i += ch.len_utf8();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (k, s) in segments.iter().enumerate() {
        match *s {
            "" if k == last => trailing = true,
            "" | "." => trailing = k == last,
            ".." => {
                out.pop();
                trailing = k == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut canon = String::with_capacity(decoded.len());
    for s in &out {
        canon.push('/');
        canon.push_str(s);
    }
    if trailing || out.is_empty() {
        canon.push('/');
    }
    Cow::Owned(canon)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether `m` is a valid HTTP method token (RFC 9110 §5.6.2).
pub fn is_method_token(m: &str) -> bool {
    !m.is_empty()
        && m.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// The methods of RFC 9110 and PATCH, each with a bit, so that a rule's method list is
/// checked with one AND.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The bit of a known method (case-insensitive), 0 for any other.
#[inline]
pub fn method_bit(method: &str) -> u16 {
    KNOWN_METHODS
        .iter()
        .position(|k| k.eq_ignore_ascii_case(method))
        .map_or(0, |i| 1 << i)
}

/// The method and path conditions of one route; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// Methods, upper-case.
    methods: Box<[Box<str>]>,
    /// Bits of the known ones among them.
    known: u16,
    paths: Box<[PathGlob]>,
    query: bool,
}

impl RequestMatch {
    /// A condition on `methods` (compared case-insensitively) and `paths`; with `query` the
    /// globs see `path?query`.
    pub fn new(methods: Vec<Box<str>>, paths: Vec<PathGlob>, query: bool) -> RequestMatch {
        let methods: Box<[Box<str>]> = methods
            .into_iter()
            .map(|m| m.to_ascii_uppercase().into())
            .collect();
        RequestMatch {
            known: methods.iter().fold(0, |acc, m| acc | method_bit(m)),
            methods,
            paths: paths.into(),
            query,
        }
    }

    /// Whether every request matches (no method or path condition).
    pub fn is_everything(&self) -> bool {
        self.methods.is_empty() && self.paths.is_empty()
    }

    /// Whether a request with `method`, canonical `path` and raw `query` matches.
    pub fn matches(&self, method: &str, path: &str, query: Option<&str>) -> bool {
        self.matches_with(method_bit(method), method, path, query)
    }

    /// [`RequestMatch::matches`] with the method's [`method_bit`] computed once by the caller.
    #[inline]
    pub fn matches_with(&self, bit: u16, method: &str, path: &str, query: Option<&str>) -> bool {
        let method_ok = self.methods.is_empty()
            || if bit != 0 {
                self.known & bit != 0
            } else {
                self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
            };
        if !method_ok {
            return false;
        }
        if self.paths.is_empty() {
            return true;
        }
        match query.filter(|_| self.query) {
            None => self.paths.iter().any(|g| g.matches(path)),
            Some(q) => {
                let full = format!("{path}?{q}");
                self.paths.iter().any(|g| g.matches(&full))
            }
        }
    }
}

impl fmt::Display for RequestMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.methods.is_empty() {
            write!(f, " {}", self.methods.join(","))?;
        }
        for (i, p) in self.paths.iter().enumerate() {
            write!(f, "{}{:?}", if i == 0 { " " } else { "," }, p.as_str())?;
        }
        if self.query {
            f.write_str(" (with query)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> PathGlob {
        PathGlob::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn star_stays_within_a_segment() {
        let p = g("/repos/*/info");
        assert!(p.matches("/repos/a/info"));
        assert!(p.matches("/repos//info"));
        assert!(!p.matches("/repos/a/b/info"));
        assert!(!p.matches("/repos/a/info/x"));
        assert!(g("/a/*.git").matches("/a/x.git"));
        assert!(!g("/a/*.git").matches("/a/x/y.git"));
    }

    #[test]
    fn double_star_crosses_segments() {
        let p = g("/**/git-receive-pack");
        assert!(p.matches("/git-receive-pack"));
        assert!(p.matches("/r.git/git-receive-pack"));
        assert!(p.matches("/a/b/c.git/git-receive-pack"));
        assert!(!p.matches("/a/git-receive-pack/x"));
        assert!(!p.matches("/a/xgit-receive-pack"));
        let t = g("/repos/**");
        assert!(t.matches("/repos"));
        assert!(t.matches("/repos/"));
        assert!(t.matches("/repos/a/b"));
        assert!(!t.matches("/reposx"));
        let m = g("/a/**/b");
        assert!(m.matches("/a/b"));
        assert!(m.matches("/a/x/y/b"));
        assert!(!m.matches("/a/xb"));
        assert!(g("/a**").matches("/a/b/c"));
        assert!(g("/**").matches("/"));
        assert!(g("/**").matches("/anything/at/all"));
    }

    #[test]
    fn literals_are_literal() {
        assert!(g("/a?b").matches("/a?b"));
        assert!(!g("/a?b").matches("/axb"));
        assert!(g("/").matches("/"));
        assert!(!g("/").matches("/a"));
    }

    #[test]
    fn bad_globs_are_refused_with_a_reason() {
        assert_eq!(PathGlob::parse("repos/*"), Err(GlobError::NotAbsolute));
        assert_eq!(PathGlob::parse("/a/***"), Err(GlobError::TooManyStars));
        assert_eq!(PathGlob::parse("/a b"), Err(GlobError::BadChar(' ')));
        assert_eq!(
            PathGlob::parse(&"/*".repeat(MAX_WILDCARDS + 1)),
            Err(GlobError::TooManyWildcards)
        );
        assert_eq!(
            PathGlob::parse(&format!("/{}", "a".repeat(MAX_GLOB_LEN))),
            Err(GlobError::TooLong)
        );
    }

    #[test]
    fn canonical_paths() {
        assert!(matches!(canonical_path("/a/b"), Cow::Borrowed("/a/b")));
        assert_eq!(canonical_path("/a//b"), "/a/b");
        assert_eq!(canonical_path("/a/./b/../c"), "/a/c");
        assert_eq!(canonical_path("/../../x"), "/x");
        assert_eq!(
            canonical_path("/r.git/git%2Dreceive%2dpack"),
            "/r.git/git-receive-pack"
        );
        assert_eq!(canonical_path("/a%2fb%zz"), "/a%2Fb%25zz");
        assert_eq!(canonical_path("/a/"), "/a/");
        assert_eq!(canonical_path("/a/.."), "/");
        assert_eq!(canonical_path("/a/b/."), "/a/b/");
        assert_eq!(canonical_path("*"), "/*");
        assert_eq!(canonical_path("/é/%41"), "/é/A");
        assert_eq!(canonical_path("/%2e%2e/x"), "/x");
        assert_eq!(canonical_path("/x%"), "/x%25");
        // A stray `%` must not pair with a decoded escape into a new one (found by fuzzing):
        // the canonical form is a fixed point.
        let once = canonical_path("/a/%3%34b");
        assert_eq!(once, "/a/%253".to_owned() + "4b");
        assert_eq!(canonical_path(&once), once);
    }

    #[test]
    fn request_match() {
        let m = RequestMatch::new(vec!["get".into(), "HEAD".into()], vec![g("/api/**")], false);
        assert!(m.matches("GET", "/api/x", Some("a=1")));
        assert!(m.matches("head", "/api", None));
        assert!(!m.matches("POST", "/api/x", None));
        assert!(!m.matches("GET", "/other", None));
        assert_eq!(m.to_string(), " GET,HEAD \"/api/**\"");
        let q = RequestMatch::new(vec![], vec![g("/info/refs?service=git-upload-pack")], true);
        assert!(q.matches("GET", "/info/refs", Some("service=git-upload-pack")));
        assert!(!q.matches("GET", "/info/refs", Some("service=git-receive-pack")));
        assert!(!q.matches("GET", "/info/refs", None));
        assert!(RequestMatch::default().is_everything());
        assert!(RequestMatch::default().matches("DELETE", "/x", None));
    }

    #[test]
    fn method_tokens() {
        assert!(is_method_token("GET"));
        assert!(is_method_token("M-SEARCH"));
        assert!(!is_method_token(""));
        assert!(!is_method_token("GE T"));
        assert!(!is_method_token("GET,POST"));
    }
}

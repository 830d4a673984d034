//! Working out which host a request is for. For transparent traffic the request itself names
//! its destination (Host / :authority / absolute-form URI); egret resolves that name and never
//! uses the address the sandbox dialled, so a request cannot steer a credential elsewhere by
//! dialling a different address.
use http::Request;

/// The destination a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-case host name or IP literal (IPv6 without brackets), no trailing dot.
    pub host: String,
    /// Port from the authority, if it had one.
    pub port: Option<u16>,
}

/// Why a request's authority is unusable. Each maps to a 400 (or 421) for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// No Host header, no authority.
    #[error("the request names no host (send a Host header)")]
    Missing,
    /// Several Host headers.
    #[error("the request has more than one Host header")]
    Duplicate,
    /// Host header and absolute-form URI disagree.
    #[error("the request URI names {uri:?} but the Host header says {header:?}")]
    Mismatch {
        /// From the URI.
        uri: String,
        /// From Host.
        header: String,
    },
    /// Not a valid host[:port].
    #[error("invalid host {0:?}")]
    Invalid(String),
}

/// Parse `host[:port]` / `[v6][:port]` into a [`Target`], validating characters.
pub fn parse_authority(s: &str) -> Result<Target, AuthorityError> {
    let invalid = || AuthorityError::Invalid(s.chars().take(100).collect());
    if s.is_empty() || s.len() > 300 || s.contains('@') {
        return Err(invalid());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(invalid)?;
        let h = &rest[..end];
        h.parse::<std::net::Ipv6Addr>().map_err(|_| invalid())?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| invalid())?),
            None if after.is_empty() => None,
            None => return Err(invalid()),
        };
        (h.to_ascii_lowercase(), port)
    } else {
        let (h, p) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| invalid())?)),
            None => (s, None),
        };
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(invalid());
        }
        (h.to_ascii_lowercase(), p)
    };
    if port == Some(0) {
        return Err(invalid());
    }
    Ok(Target { host, port })
}

/// The target of a request: the absolute-form URI authority or `:authority` (HTTP/2), which
/// must agree with the Host header when both are present; else the Host header.
pub fn request_target<B>(req: &Request<B>) -> Result<Target, AuthorityError> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Duplicate);
    }
    let header = match header {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| AuthorityError::Invalid("<non-ASCII Host>".into()))?,
        ),
        None => None,
    };
    match (req.uri().authority(), header) {
        (Some(a), Some(h)) => {
            let from_uri = parse_authority(a.as_str())?;
            let from_header = parse_authority(h)?;
            if from_uri.host != from_header.host {
                return Err(AuthorityError::Mismatch {
                    uri: a.as_str().to_string(),
                    header: h.to_string(),
                });
            }
            Ok(from_uri)
        }
        (Some(a), None) => parse_authority(a.as_str()),
        (None, Some(h)) => parse_authority(h),
        (None, None) => Err(AuthorityError::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            parse_authority("Allowed.Test").unwrap(),
            Target {
                host: "allowed.test".into(),
                port: None
            }
        );
        assert_eq!(
            parse_authority("allowed.test.:8080").unwrap(),
            Target {
                host: "allowed.test".into(),
                port: Some(8080)
            }
        );
        assert_eq!(
            parse_authority("[fd00::2]:80").unwrap(),
            Target {
                host: "fd00::2".into(),
                port: Some(80)
            }
        );
        assert_eq!(parse_authority("10.0.0.1").unwrap().host, "10.0.0.1");
        for bad in [
            "",
            "a b",
            "user@host",
            "host:0",
            "host:99999",
            "[::1",
            "[nothex]",
            "a/b",
            "h:\r\n",
        ] {
            assert!(parse_authority(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn absolute_form_must_agree_with_host() {
        let req = Request::get("http://evil.test/x")
            .header("host", "allowed.test")
            .body(())
            .unwrap();
        assert!(matches!(
            request_target(&req),
            Err(AuthorityError::Mismatch { .. })
        ));
        let req = Request::get("http://allowed.test/x")
            .header("host", "allowed.test")
            .body(())
            .unwrap();
        assert_eq!(request_target(&req).unwrap().host, "allowed.test");
        let req = Request::get("/x")
            .header("host", "a.test")
            .header("host", "b.test")
            .body(())
            .unwrap();
        assert_eq!(request_target(&req), Err(AuthorityError::Duplicate));
        let req = Request::get("/x").body(()).unwrap();
        assert_eq!(request_target(&req), Err(AuthorityError::Missing));
    }
}

//! Header hygiene between the two legs (RFC 9110 §7.6.1): hop-by-hop fields, and the fields a
//! connection-oriented HTTP/1 message carries that HTTP/2 forbids.
use http::header::{self, HeaderMap, HeaderName};

/// Fields that are always hop-by-hop.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Remove hop-by-hop fields, including every field named in `Connection`. `TE: trailers` is
/// kept for requests (gRPC needs it end to end and HTTP/2 allows exactly that value).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, is_request: bool) {
    let keep_te_trailers = is_request
        && headers
            .get_all(header::TE)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // Names listed in Connection are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if keep_te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// Remove HTTP/3 (QUIC) advertisements from `Alt-Svc` response fields (RFC 7838): egret refuses
/// UDP/443, so a client that believed them would only lose time trying QUIC. Other
/// alternatives (e.g. `h2=":8443"`) and `clear` are kept; a field left empty is removed.
pub fn strip_h3_alt_svc(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ALT_SVC) {
        return;
    }
    let mut kept: Vec<http::HeaderValue> = Vec::new();
    let mut changed = false;
    for v in headers.get_all(header::ALT_SVC) {
        let Ok(s) = v.to_str() else {
            // Not visible ASCII: we cannot tell what it advertises, so it does not pass.
            changed = true;
            continue;
        };
        let alts = split_unquoted(s, b',');
        let keep: Vec<&str> = alts
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty() && !is_quic_alternative(a))
            .collect();
        if keep.len() == alts.iter().filter(|a| !a.trim().is_empty()).count() {
            kept.push(v.clone());
            continue;
        }
        changed = true;
        if !keep.is_empty() {
            if let Ok(nv) = http::HeaderValue::from_str(&keep.join(", ")) {
                kept.push(nv);
            }
        }
    }
    if changed {
        headers.remove(header::ALT_SVC);
        for v in kept {
            headers.append(header::ALT_SVC, v);
        }
    }
}

/// Whether one `Alt-Svc` alternative (`protocol-id="authority"; params`) names HTTP/3 or a
/// QUIC draft (`h3`, `h3-29`, `h3-Q050`, `quic`).
fn is_quic_alternative(alt: &str) -> bool {
    let proto = alt.split(['=', ';']).next().unwrap_or("").trim();
    // protocol-id is a percent-encoded ALPN token
    let proto = proto.replace("%2D", "-").replace("%2d", "-");
    let p = proto.to_ascii_lowercase();
    p == "h3" || p.starts_with("h3-") || p == "quic" || p.starts_with("hq")
}

/// Split on `sep` outside double-quoted strings (with `\` escapes).
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut out, mut start, mut quoted, mut i) = (Vec::new(), 0, false, 0);
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_listed_and_fixed_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn keeps_te_trailers_on_requests_only() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, true);
        assert!(h.get(header::TE).is_none());
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn strips_h3_alt_svc_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        h.append(
            header::ALT_SVC,
            HeaderValue::from_static(
                r#"h3=":443"; ma=86400, h2="alt.test:443"; ma=60, h3-29=":443"; ma=86400, h3-Q050=":443""#,
            ),
        );
        strip_h3_alt_svc(&mut h);
        assert_eq!(
            h.get(header::ALT_SVC).unwrap(),
            r#"h2="alt.test:443"; ma=60"#
        );
        // only h3: the field goes
        let mut h = HeaderMap::new();
        h.append(
            header::ALT_SVC,
            HeaderValue::from_static(r#"h3=":443"; ma=3600"#),
        );
        h.append(header::ALT_SVC, HeaderValue::from_static("quic=\":443\""));
        strip_h3_alt_svc(&mut h);
        assert!(h.get(header::ALT_SVC).is_none(), "{h:?}");
        // untouched: clear, h2, and a comma inside a quoted authority
        for v in ["clear", r#"h2="a,b.test:443"; ma=5"#] {
            let mut h = HeaderMap::new();
            h.insert(header::ALT_SVC, HeaderValue::from_static(v));
            strip_h3_alt_svc(&mut h);
            assert_eq!(h.get(header::ALT_SVC).unwrap(), v);
        }
        // a quoted h3 look-alike in an authority does not confuse the split
        let mut h = HeaderMap::new();
        h.insert(
            header::ALT_SVC,
            HeaderValue::from_static(r#"h2="h3=x,y:443", h3=":443""#),
        );
        strip_h3_alt_svc(&mut h);
        assert_eq!(h.get(header::ALT_SVC).unwrap(), r#"h2="h3=x,y:443""#);
    }
}

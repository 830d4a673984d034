//! `sigv4-s3`: signs requests to an S3-compatible API with AWS Signature Version 4
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>, header
//! form), without ever holding the secret access key: the signing-key derivation and the
//! signature are one `hmac-sha256` host call keyed by `AWS4{secret}`, which egret computes.
//!
//! Params:
//!
//! ```json
//! {"access_key_id": "AKIDEXAMPLE", "secret_key": "S3_SECRET_KEY", "region": "us-east-1",
//!  "service": "s3", "unsigned_payload": false}
//! ```
//!
//! * `access_key_id` (required): the access key id, a literal;
//! * `secret_key` (required): the NAME of a granted secret holding the secret access key;
//! * `region` (default `us-east-1`) and `service` (default `s3`): the credential scope;
//! * `unsigned_payload` (default `false`): `false` signs the body's SHA-256, so the binding
//!   must buffer request bodies (`body = { max_bytes = N }`; larger uploads are refused with
//!   413); `true` signs `UNSIGNED-PAYLOAD` and the body streams past the guest.
//!
//! Policy keys the binding needs: `secrets = ["S3_SECRET_KEY"]` (the `secret_key`), and
//! `body = { max_bytes = N }` unless `unsigned_payload` is set.
//!
//! What is signed: the method; the canonical URI (the path as sent, percent-decoded and encoded
//! once again with S3's `UriEncode`, `/` kept, so `/a b$` and `/a%20b%24` are both signed as
//! `/a%20b%24`, as the server computes it); the query (names and values decoded, encoded, sorted); the
//! headers `host` (the authority without a default port), `x-amz-content-sha256`,
//! `x-amz-date`, `content-type` and `content-md5` when present, and every other `x-amz-*`
//! header the client sent (S3 refuses unsigned ones); and the payload hash. The handler sets
//! `x-amz-date` (from the wall clock), `x-amz-content-sha256` and `authorization:
//! AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`, replacing what the client
//! sent under those names. Bad params or a secret that is not granted answer `500` naming
//! the problem. Presigned URLs and `aws-chunked` uploads are not supported.
//!
//! Like every example handler it sets `x-egret-handler: sigv4-s3` on the upstream request (and
//! on its own error responses).

use std::collections::BTreeMap;

use egret_handler::{hex, hmac_sha256, sha256, Action, Context, Request};

const NAME: &str = "sigv4-s3";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Params {
    access_key_id: String,
    secret_key: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default = "default_service")]
    service: String,
    #[serde(default)]
    unsigned_payload: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_service() -> String {
    "s3".to_owned()
}

/// The binding's params, checked.
fn params(ctx: &Context) -> Result<Params, String> {
    ctx.params::<Params>()
        .map_err(|e| format!("bad params: {e}"))
        .and_then(checked)
}

/// `p` if it is usable, else what is wrong.
fn checked(p: Params) -> Result<Params, String> {
    let id_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !id_ok(&p.access_key_id) {
        return Err("bad params: access_key_id must be letters and digits".to_owned());
    }
    if p.secret_key.is_empty() {
        return Err("bad params: secret_key (the name of a granted secret) is empty".to_owned());
    }
    let scope_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    for (field, v) in [("region", &p.region), ("service", &p.service)] {
        if !scope_ok(v) {
            return Err(format!(
                "bad params: {field} {v:?} must be lower-case letters, digits and '-'"
            ));
        }
    }
    Ok(p)
}

/// ISO 8601 basic format, `YYYYMMDDTHHMMSSZ`, of seconds since the epoch.
fn amz_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Civil from days (H. Hinnant): March-based years make February the last month.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// RFC 3986 percent-decoding (`+` stays `+`); a `%` not followed by two hex digits stays.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_at = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex_at(i + 1), hex_at(i + 2)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// S3's `UriEncode`: every byte but `A-Z a-z 0-9 - _ . ~` (and `/` unless `encode_slash`) as
/// `%XX`, upper-case hex.
fn uri_encode(bytes: &[u8], encode_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !encode_slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical URI: the path decoded, then encoded once (`/` kept).
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    uri_encode(&percent_decode(path), false)
}

/// The canonical query: names and values decoded, encoded (`/` too), sorted by name then value,
/// `name=value` joined by `&` (a name without a value gets `name=`).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| uri_encode(&percent_decode(s), true);
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// The host the upstream receives: the authority without the scheme's default port.
fn canonical_host<'a>(authority: &'a str, scheme: &str) -> &'a str {
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    match authority.strip_suffix(default_port) {
        Some(host) if !host.is_empty() => host,
        _ => authority,
    }
}

/// Whether a header the client sent is signed (`host` and the two headers this handler sets
/// are added separately).
fn signs_request_header(name: &str) -> bool {
    match name {
        "content-type" | "content-md5" => true,
        "x-amz-date" | "x-amz-content-sha256" => false,
        _ => name.starts_with("x-amz-"),
    }
}

/// A header value in canonical form: trimmed, inner runs of white space made one space.
fn canonical_value(v: &[u8]) -> String {
    let v = String::from_utf8_lossy(v);
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The headers to sign, sorted by name, each with its canonical value (several values of one
/// name joined by `,`).
fn headers_to_sign<'a>(
    request_headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    host: &str,
    amz_date: &str,
    payload_hash: &str,
) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request_headers {
        let name = name.to_ascii_lowercase();
        if signs_request_header(&name) {
            by_name
                .entry(name)
                .or_default()
                .push(canonical_value(value));
        }
    }
    for (name, value) in [
        ("host", host),
        ("x-amz-content-sha256", payload_hash),
        ("x-amz-date", amz_date),
    ] {
        by_name.insert(name.to_owned(), vec![value.to_owned()]);
    }
    by_name
        .into_iter()
        .map(|(name, values)| (name, values.join(",")))
        .collect()
}

/// `name;name;…` of the signed headers.
fn signed_header_names(headers: &[(String, String)]) -> String {
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.join(";")
}

/// What one request signs.
struct Canonical<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    /// From [`headers_to_sign`] (or, in tests, a published example's).
    headers: &'a [(String, String)],
    payload_hash: &'a str,
}

impl Canonical<'_> {
    /// The canonical request.
    fn request(&self) -> String {
        let mut headers = String::new();
        for (name, value) in self.headers {
            headers.push_str(&format!("{name}:{value}\n"));
        }
        format!(
            "{}\n{}\n{}\n{headers}\n{}\n{}",
            self.method,
            canonical_uri(self.path),
            canonical_query(self.query),
            signed_header_names(self.headers),
            self.payload_hash
        )
    }
}

/// `DATE/REGION/SERVICE/aws4_request`.
fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The string to sign, from the hex SHA-256 of the canonical request.
fn string_to_sign(amz_date: &str, scope: &str, canonical_request_sha256: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{canonical_request_sha256}")
}

/// The messages of the chained HMAC keyed by `AWS4{secret}`: the signing-key derivation
/// (date, region, service, `aws4_request`), then the string to sign.
fn signing_messages<'a>(
    date: &'a str,
    region: &'a str,
    service: &'a str,
    string_to_sign: &'a str,
) -> [&'a [u8]; 5] {
    [
        date.as_bytes(),
        region.as_bytes(),
        service.as_bytes(),
        b"aws4_request",
        string_to_sign.as_bytes(),
    ]
}

/// The `authorization` header value.
fn authorization(access_key_id: &str, scope: &str, signed: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed}, \
         Signature={signature}"
    )
}

fn deny(status: u16, msg: &str) -> Action {
    Action::deny(status, &format!("{NAME}: {msg}")).header("x-egret-handler", NAME)
}

fn handle(ctx: Context, req: Request) -> Action {
    let p = match params(&ctx) {
        Ok(p) => p,
        Err(e) => return deny(500, &e),
    };
    let payload_hash =
        if p.unsigned_payload {
            UNSIGNED_PAYLOAD.to_owned()
        } else {
            match req.body() {
                Some(body) => hex(&sha256(body)),
                None => return deny(
                    500,
                    "the request body is not buffered for this handler, so it cannot be signed: \
                     set body = { max_bytes = N } on the binding, or unsigned_payload = true",
                ),
            }
        };
    let now = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs(),
        Err(_) => return deny(500, "the clock is before 1970"),
    };
    let amz_date = amz_date(now);
    let date = &amz_date[..8];
    let host = canonical_host(req.authority(), req.scheme());
    let headers = headers_to_sign(req.headers(), host, &amz_date, &payload_hash);
    let canonical = Canonical {
        method: req.method(),
        path: req.path(),
        query: req.query().unwrap_or(""),
        headers: &headers,
        payload_hash: &payload_hash,
    }
    .request();
    let scope = credential_scope(date, &p.region, &p.service);
    let sts = string_to_sign(&amz_date, &scope, &hex(&sha256(canonical.as_bytes())));
    let messages = signing_messages(date, &p.region, &p.service, &sts);
    let signature = match hmac_sha256(&p.secret_key, Some("AWS4{}"), &messages) {
        Ok(s) => hex(&s),
        Err(e) => return deny(500, &format!("cannot sign: {e}")),
    };
    let signed = signed_header_names(&headers);
    Action::forward()
        .set_header("x-egret-handler", NAME)
        .set_header("x-amz-date", &amz_date)
        .set_header("x-amz-content-sha256", &payload_hash)
        .set_header(
            "authorization",
            authorization(&p.access_key_id, &scope, &signed, &signature),
        )
}

egret_handler::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    /// What `params` makes of a binding's JSON.
    fn parse(json: &str) -> Result<Params, String> {
        serde_json::from_str(json)
            .map_err(|e| format!("bad params: {e}"))
            .and_then(checked)
    }
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    // The examples of "Signature Calculations for the Authorization Header: Transferring
    // Payload in a Single Chunk" (AWS S3 API reference, sig-v4-header-based-auth).
    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const WHEN: &str = "20130524T000000Z";

    fn sha_hex(b: &[u8]) -> String {
        hex_native(&Sha256::digest(b))
    }

    fn hex_native(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// What egret's `hmac-sha256` computes: HMAC chained over `messages`, keyed by `AWS4{secret}`.
    fn chained_hmac(secret: &str, messages: &[&[u8]]) -> String {
        let mut key = format!("AWS4{secret}").into_bytes();
        for m in messages {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(m);
            key = mac.finalize().into_bytes().to_vec();
        }
        hex_native(&key)
    }

    /// Signs like `handle` does, with the host calls done natively.
    fn sign(c: &Canonical, amz_date: &str) -> (String, String, String) {
        let canonical = c.request();
        let scope = credential_scope(&amz_date[..8], "us-east-1", "s3");
        let sts = string_to_sign(amz_date, &scope, &sha_hex(canonical.as_bytes()));
        let sig = chained_hmac(
            SECRET,
            &signing_messages(&amz_date[..8], "us-east-1", "s3", &sts),
        );
        (canonical, sts, sig)
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn aws_example_get_object() {
        let h = headers(&[
            ("host", HOST),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA),
            ("x-amz-date", WHEN),
        ]);
        let c = Canonical {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: &h,
            payload_hash: EMPTY_SHA,
        };
        let (canonical, sts, sig) = sign(&c, WHEN);
        assert_eq!(
            canonical,
            format!(
                "GET\n/test.txt\n\nhost:{HOST}\nrange:bytes=0-9\n\
                 x-amz-content-sha256:{EMPTY_SHA}\nx-amz-date:{WHEN}\n\n\
                 host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA}"
            )
        );
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            sig,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let scope = credential_scope("20130524", "us-east-1", "s3");
        assert_eq!(
            authorization(AKID, &scope, &signed_header_names(&h), &sig),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/\
             aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_example_put_object_with_a_path_that_needs_encoding() {
        let payload = sha_hex(b"Welcome to Amazon S3.");
        let h = headers(&[
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("host", HOST),
            ("x-amz-content-sha256", &payload),
            ("x-amz-date", WHEN),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]);
        // Sent raw or encoded, `$` is signed as %24.
        for path in ["/test$file.text", "/test%24file.text"] {
            let c = Canonical {
                method: "PUT",
                path,
                query: "",
                headers: &h,
                payload_hash: &payload,
            };
            let (canonical, _, sig) = sign(&c, WHEN);
            assert!(canonical.starts_with("PUT\n/test%24file.text\n\n"));
            assert_eq!(
                sha_hex(canonical.as_bytes()),
                "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
            );
            assert_eq!(
                sig,
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            );
        }
    }

    #[test]
    fn aws_examples_with_queries() {
        let h = headers(&[
            ("host", HOST),
            ("x-amz-content-sha256", EMPTY_SHA),
            ("x-amz-date", WHEN),
        ]);
        let lifecycle = "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543";
        let list = "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7";
        for (query, want) in [
            ("lifecycle", lifecycle),
            ("max-keys=2&prefix=J", list),
            ("prefix=J&max-keys=2", list),
        ] {
            let c = Canonical {
                method: "GET",
                path: "/",
                query,
                headers: &h,
                payload_hash: EMPTY_SHA,
            };
            assert_eq!(sign(&c, WHEN).2, want, "{query}");
        }
    }

    #[test]
    fn encoding() {
        assert_eq!(
            canonical_uri("/s3/b/a b+c$d~é"),
            "/s3/b/a%20b%2Bc%24d~%C3%A9"
        );
        // Decoded first: an encoded `/` is signed as a `/` (what S3 and the test server do).
        assert_eq!(canonical_uri("/s3/b/a%20b%2Fc"), "/s3/b/a%20b/c");
        assert_eq!(canonical_uri("/100%"), "/100%25");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_query("b=2&a=&a=1&c"), "a=&a=1&b=2&c=");
        assert_eq!(
            canonical_query("k=a%2Fb%20c&k2=x/y"),
            "k=a%2Fb%20c&k2=x%2Fy"
        );
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn chosen_headers() {
        let sent: Vec<(&str, &[u8])> = vec![
            ("content-type", b"application/octet-stream"),
            ("x-amz-meta-note", b"  two   words "),
            ("x-amz-meta-note", b"again"),
            ("x-amz-date", b"19990101T000000Z"),
            ("range", b"bytes=0-9"),
            ("user-agent", b"curl/8"),
            ("authorization", b"AWS4-HMAC-SHA256 forged"),
        ];
        let h = headers_to_sign(sent.into_iter(), "s3.test", WHEN, EMPTY_SHA);
        assert_eq!(
            h,
            headers(&[
                ("content-type", "application/octet-stream"),
                ("host", "s3.test"),
                ("x-amz-content-sha256", EMPTY_SHA),
                ("x-amz-date", WHEN),
                ("x-amz-meta-note", "two words,again"),
            ])
        );
        assert_eq!(
            signed_header_names(&h),
            "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note"
        );
        assert_eq!(canonical_host("s3.test:443", "https"), "s3.test");
        assert_eq!(canonical_host("s3.test:8443", "https"), "s3.test:8443");
        assert_eq!(canonical_host("s3.test:80", "http"), "s3.test");
        assert_eq!(canonical_host("s3.test:443", "http"), "s3.test:443");
        assert_eq!(canonical_host("[fd00::2]:443", "https"), "[fd00::2]");
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), WHEN);
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(4_102_444_800), "21000101T000000Z");
    }

    #[test]
    fn params_are_checked() {
        let p = parse(r#"{"access_key_id":"AKID","secret_key":"S"}"#).unwrap();
        assert_eq!((p.region.as_str(), p.service.as_str()), ("us-east-1", "s3"));
        assert!(!p.unsigned_payload);
        for (bad, want) in [
            (r#"{"secret_key":"S"}"#, "missing field `access_key_id`"),
            (
                r#"{"access_key_id":"A/B","secret_key":"S"}"#,
                "access_key_id",
            ),
            (r#"{"access_key_id":"A","secret_key":""}"#, "secret_key"),
            (
                r#"{"access_key_id":"A","secret_key":"S","region":"US East"}"#,
                "region",
            ),
            (
                r#"{"access_key_id":"A","secret_key":"S","x":1}"#,
                "unknown field",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}

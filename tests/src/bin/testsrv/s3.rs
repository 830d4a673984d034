//! An S3-compatible object store that verifies AWS Signature Version 4, for handlers that sign
//! requests (`sigv4-s3`): the algorithm of
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>, checked
//! against that page's published examples (the tests below). Written apart from the guest's
//! signer (`handlers-wasm/sigv4-s3`) on purpose, `UriEncode` included: sharing one
//! implementation would let the end-to-end test agree with itself.
//!
//! Path-style addressing: `PUT /s3/BUCKET/KEY` stores the body (and its `Content-Type`),
//! `GET` returns it, `HEAD` its headers, `DELETE` removes it (`204`); a missing key is `404
//! NoSuchKey`. The ETag is the first 128 bits of the body's sha256 (S3's is its MD5). The
//! canonical URI is the path as received (`/s3/BUCKET/KEY`, decoded, then encoded once per S3's
//! `UriEncode`), the host is the `Host` header the server received (`:authority` over h2). Every
//! request whose signature passed is logged `S3-OK method=M key=BUCKET/KEY status=S bytes=N
//! payload=signed|unsigned` (N: the bytes stored or returned), whatever its status.
//!
//! Only the `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` form
//! is accepted (no presigned URLs, no `aws-chunked` streaming). Refusals, as S3 words them (XML
//! `<Error><Code>…`), each logged `S3-DENIED reason=…` — status, code: reasons:
//!
//! * 403 `AccessDenied`: `missing-authorization`, `missing-date` (no valid `x-amz-date`),
//!   `host-not-signed`, `unsigned-header:NAME` (an `x-amz-*` header outside SignedHeaders);
//! * 400 `AuthorizationHeaderMalformed`: `malformed-authorization`, `scope-date-mismatch`,
//!   `wrong-region`, `wrong-service`;
//! * 403 `InvalidAccessKeyId`: `unknown-access-key`;
//! * 403 `RequestTimeTooSkewed`: `time-skew` (`x-amz-date` more than 15 minutes off);
//! * 400 `InvalidRequest`: `missing-content-sha256`;
//! * 403 `SignatureDoesNotMatch`: `signature-mismatch` (the body carries the server's
//!   `CanonicalRequest` and `StringToSign`), `signed-header-missing:NAME`;
//! * 400 `XAmzContentSHA256Mismatch`: `payload-hash-mismatch` (the body's sha256 is not the
//!   `x-amz-content-sha256` value);
//! * 400 `InvalidArgument`: `bad-content-sha256` (neither hex sha256 nor `UNSIGNED-PAYLOAD`);
//! * 501 `NotImplemented`: `streaming-payload`.
use super::{log_value, percent_decode, read_body, text, Body, State};

/// Lower-case hex of `b` (a digest or a MAC).
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
use hmac::{Hmac, Mac};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED: &str = "UNSIGNED-PAYLOAD";
/// How far `x-amz-date` may be from the server's clock, as S3 allows.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// The accepted keys, the region, and the objects stored so far (by `BUCKET/KEY`).
pub(crate) struct S3 {
    keys: HashMap<String, String>,
    region: String,
    objects: Mutex<HashMap<String, Object>>,
}

struct Object {
    data: bytes::Bytes,
    content_type: Option<http::HeaderValue>,
    etag: http::HeaderValue,
}

/// An object's ETag: the first 128 bits of its sha256, quoted (S3's is an MD5, as long).
fn etag(data: &[u8]) -> http::HeaderValue {
    let v = format!("\"{}\"", &hex(&Sha256::digest(data))[..32]);
    v.parse().unwrap()
}

impl S3 {
    pub(crate) fn new(keys: &[(String, String)], region: &str) -> S3 {
        S3 {
            keys: keys.iter().cloned().collect(),
            region: region.to_string(),
            objects: Mutex::new(HashMap::new()),
        }
    }
}

/// What a request presents to be checked.
struct Signed<'a> {
    method: &'a str,
    /// The path as received (percent-encoded or not).
    path: &'a str,
    /// The query as received, without `?`.
    query: &'a str,
    host: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// A refusal: status, S3 error code, message, log reason, extra XML elements.
#[derive(Debug)]
struct Denied {
    status: StatusCode,
    code: &'static str,
    message: String,
    reason: String,
    details: Vec<(&'static str, String)>,
}

fn denied(status: StatusCode, code: &'static str, reason: &str, message: &str) -> Denied {
    Denied {
        status,
        code,
        message: message.into(),
        reason: reason.into(),
        details: Vec::new(),
    }
}

fn malformed(reason: &str, message: &str) -> Denied {
    let code = "AuthorizationHeaderMalformed";
    denied(StatusCode::BAD_REQUEST, code, reason, message)
}

/// S3's `UriEncode`: every byte but `A-Z a-z 0-9 - _ . ~` (and `/` unless `slash`) as `%XX`.
fn uri_encode(bytes: &[u8], slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (b == b'/' && !slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical query string: each name and value decoded, then `UriEncode`d, sorted by name
/// then value, `name=value` joined by `&` (a name without a value gets `name=`).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| uri_encode(&percent_decode(s, false), true);
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// A header's canonical value: every value of that name, trimmed, inner runs of spaces made
/// one, joined by `,`; `host` is the host the request was sent to.
fn canonical_value(r: &Signed, name: &str) -> Option<String> {
    if name == "host" {
        return Some(r.host.to_string());
    }
    let values: Vec<String> = r
        .headers
        .get_all(name)
        .iter()
        .map(|v| {
            let v = String::from_utf8_lossy(v.as_bytes());
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The canonical request for these signed headers (lower-case, in the order given).
fn canonical_request(r: &Signed, signed: &[&str], payload_hash: &str) -> Result<String, Denied> {
    let uri = uri_encode(&percent_decode(r.path, false), false);
    let mut headers = String::new();
    for name in signed {
        let Some(v) = canonical_value(r, name) else {
            let reason = format!("signed-header-missing:{name}");
            let msg = format!("the signed header {name} is not in the request");
            return Err(denied(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                &reason,
                &msg,
            ));
        };
        headers.push_str(&format!("{name}:{v}\n"));
    }
    Ok(format!(
        "{}\n{uri}\n{}\n{headers}\n{}\n{payload_hash}",
        r.method,
        canonical_query(r.query),
        signed.join(";"),
    ))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// `AWS4`+secret → date → region → service → `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    hmac(&k, "aws4_request")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    let hashed = hex(&Sha256::digest(canonical.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hashed}")
}

/// Seconds since the epoch of an ISO 8601 basic `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant): March-based years make February the last month.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(v: &str) -> Option<Authorization<'_>> {
    let rest = v.trim().strip_prefix(ALGORITHM)?;
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        fields.insert(k, v);
    }
    let cred: Vec<&str> = fields.get("Credential")?.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = cred[..] else {
        return None;
    };
    Some(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: fields.get("SignedHeaders")?.split(';').collect(),
        signature: fields.get("Signature")?,
    })
}

/// Checks a request's signature and payload hash; `Ok(true)` when the payload was signed.
fn verify(s3: &S3, r: &Signed, now: i64) -> Result<bool, Denied> {
    use StatusCode as S;
    let header = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok());
    let Some(auth) = header("authorization") else {
        let msg = "Access Denied (no Authorization header)";
        return Err(denied(
            S::FORBIDDEN,
            "AccessDenied",
            "missing-authorization",
            msg,
        ));
    };
    let Some(a) = parse_authorization(auth) else {
        let msg = "the authorization header is malformed; expected AWS4-HMAC-SHA256 \
                   Credential=KEY/DATE/REGION/s3/aws4_request, SignedHeaders=..., Signature=...";
        return Err(malformed("malformed-authorization", msg));
    };
    let Some(secret) = s3.keys.get(a.access_key) else {
        let msg = "The AWS Access Key Id you provided does not exist in our records.";
        return Err(denied(
            S::FORBIDDEN,
            "InvalidAccessKeyId",
            "unknown-access-key",
            msg,
        ));
    };
    let date = header("x-amz-date");
    let Some((amz_date, t)) = date.and_then(|d| Some((d, parse_amz_date(d)?))) else {
        let msg = "AWS authentication requires a valid x-amz-date header";
        return Err(denied(S::FORBIDDEN, "AccessDenied", "missing-date", msg));
    };
    if a.date != &amz_date[..8] {
        let msg = "Invalid credential date. Date is not the same as X-Amz-Date.";
        return Err(malformed("scope-date-mismatch", msg));
    }
    if a.region != s3.region {
        let msg = format!(
            "the region '{}' is wrong; expecting '{}'",
            a.region, s3.region
        );
        return Err(malformed("wrong-region", &msg));
    }
    if a.service != "s3" {
        let msg = format!("the service '{}' is wrong; expecting 's3'", a.service);
        return Err(malformed("wrong-service", &msg));
    }
    if (now - t).abs() > MAX_SKEW_SECS {
        let msg = "The difference between the request time and the current time is too large.";
        return Err(denied(
            S::FORBIDDEN,
            "RequestTimeTooSkewed",
            "time-skew",
            msg,
        ));
    }
    if !a.signed_headers.contains(&"host") {
        let msg = "the host header must be signed";
        return Err(denied(S::FORBIDDEN, "AccessDenied", "host-not-signed", msg));
    }
    let mut names = r.headers.keys().map(|k| k.as_str());
    let unsigned = names.find(|k| k.starts_with("x-amz-") && !a.signed_headers.contains(k));
    if let Some(name) = unsigned {
        let msg =
            format!("There were headers present in the request which were not signed: {name}");
        let reason = format!("unsigned-header:{name}");
        return Err(denied(S::FORBIDDEN, "AccessDenied", &reason, &msg));
    }
    let Some(payload_hash) = header("x-amz-content-sha256") else {
        let msg = "Missing required header for this request: x-amz-content-sha256";
        let reason = "missing-content-sha256";
        return Err(denied(S::BAD_REQUEST, "InvalidRequest", reason, msg));
    };
    let canonical = canonical_request(r, &a.signed_headers, payload_hash)?;
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let sts = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(secret, a.date, a.region, a.service);
    if hex(&hmac(&key, &sts)) != a.signature {
        let msg = "The request signature we calculated does not match the signature you \
                   provided. Check your key and signing method.";
        let reason = "signature-mismatch";
        let mut d = denied(S::FORBIDDEN, "SignatureDoesNotMatch", reason, msg);
        d.details = vec![
            ("AWSAccessKeyId", a.access_key.to_string()),
            ("StringToSign", sts),
            ("SignatureProvided", a.signature.to_string()),
            ("CanonicalRequest", canonical),
        ];
        return Err(d);
    }
    if payload_hash == UNSIGNED {
        return Ok(false);
    }
    if payload_hash.starts_with("STREAMING-") {
        let msg = "aws-chunked streaming uploads are not implemented here";
        return Err(denied(
            S::NOT_IMPLEMENTED,
            "NotImplemented",
            "streaming-payload",
            msg,
        ));
    }
    let is_hash = payload_hash.len() == 64 && payload_hash.bytes().all(|c| c.is_ascii_hexdigit());
    if !is_hash {
        let msg = "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a hex SHA-256";
        return Err(denied(
            S::BAD_REQUEST,
            "InvalidArgument",
            "bad-content-sha256",
            msg,
        ));
    }
    if !payload_hash.eq_ignore_ascii_case(&hex(&Sha256::digest(r.body))) {
        let msg = "The provided 'x-amz-content-sha256' header does not match what was computed.";
        let (code, reason) = ("XAmzContentSHA256Mismatch", "payload-hash-mismatch");
        return Err(denied(S::BAD_REQUEST, code, reason, msg));
    }
    Ok(true)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn error_xml(d: &Denied, resource: &str) -> Response<Body> {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>",
        d.code,
        xml_escape(&d.message)
    );
    for (k, v) in &d.details {
        x.push_str(&format!("<{k}>{}</{k}>", xml_escape(v)));
    }
    x.push_str(&format!(
        "<Resource>{}</Resource><RequestId>egret-testsrv</RequestId></Error>",
        xml_escape(resource)
    ));
    let mut r = text(d.status, x);
    r.headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    r
}

pub(crate) async fn route(
    parts: &[&str],
    req: Request<Incoming>,
    st: &Arc<State>,
    host: &str,
) -> Result<Response<Body>, std::io::Error> {
    let (head, body) = req.into_parts();
    let body = read_body(body).await?;
    let method = head.method.as_str();
    let path = head.uri.path();
    // The object's name: BUCKET/KEY, decoded.
    let name = String::from_utf8_lossy(&percent_decode(&parts[1..].join("/"), false)).into_owned();
    let signed = Signed {
        method,
        path,
        query: head.uri.query().unwrap_or(""),
        host,
        headers: &head.headers,
        body: &body,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let payload_signed = match verify(&st.s3, &signed, now) {
        Ok(p) => p,
        Err(d) => {
            st.log_line(&format!(
                "S3-DENIED reason={} method={method} key={}",
                log_value(&d.reason),
                log_value(&name)
            ));
            return Ok(error_xml(&d, path));
        }
    };
    let valid_name = parts.len() >= 3 && !parts[1].is_empty() && !parts[2..].concat().is_empty();
    let refuse = |status, code, msg: &str| error_xml(&denied(status, code, "", msg), path);
    let mut objects = st.s3.objects.lock().unwrap();
    let (mut resp, bytes) = match (method, objects.get(&name)) {
        _ if !valid_name => {
            let msg = "use /s3/BUCKET/KEY (bucket operations are not implemented)";
            (
                refuse(StatusCode::NOT_IMPLEMENTED, "NotImplemented", msg),
                0,
            )
        }
        ("PUT", _) => {
            let content_type = head.headers.get("content-type").cloned();
            let o = Object {
                etag: etag(&body),
                data: body.clone(),
                content_type,
            };
            let mut r = text(StatusCode::OK, String::new());
            r.headers_mut().insert("etag", o.etag.clone());
            objects.insert(name.clone(), o);
            (r, body.len())
        }
        ("GET" | "HEAD", Some(o)) => {
            let mut r = Response::new(Full::new(o.data.clone()).map_err(|e| match e {}).boxed());
            let h = r.headers_mut();
            h.insert("etag", o.etag.clone());
            h.insert("content-length", o.data.len().into());
            let octets = http::HeaderValue::from_static("binary/octet-stream");
            h.insert("content-type", o.content_type.clone().unwrap_or(octets));
            (r, o.data.len())
        }
        ("GET" | "HEAD", None) => {
            let mut d = denied(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "",
                "The specified key does not exist.",
            );
            d.details.push(("Key", name.clone()));
            (error_xml(&d, path), 0)
        }
        ("DELETE", _) => {
            objects.remove(&name);
            (text(StatusCode::NO_CONTENT, String::new()), 0)
        }
        _ => {
            let msg = "The specified method is not allowed against this resource.";
            (
                refuse(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", msg),
                0,
            )
        }
    };
    drop(objects);
    resp.headers_mut()
        .insert("x-amz-request-id", "egret-testsrv".parse().unwrap());
    st.log_line(&format!(
        "S3-OK method={method} key={} status={} bytes={bytes} payload={}",
        log_value(&name),
        resp.status().as_u16(),
        if payload_signed { "signed" } else { "unsigned" }
    ));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of "Signature Calculations for the Authorization Header: Transferring Payload
    // in a Single Chunk" (AWS S3 API reference, sig-v4-header-based-auth), virtual-hosted style.
    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    /// 2013-05-24T00:00:00Z, the examples' time.
    const WHEN: i64 = 1_369_353_600;
    /// The GET object example (`GET /test.txt`, `Range: bytes=0-9`): signed headers, signature.
    const GET_SIGNED: &str = "host;range;x-amz-content-sha256;x-amz-date";
    const GET_SIG: &str = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    /// A header map of `pairs` and an Authorization header for `signed` and `signature`.
    fn headers(pairs: &[(&str, &str)], signed: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let auth = format!(
            "{ALGORITHM} Credential={AKID}/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders={signed},Signature={signature}"
        );
        for (k, v) in pairs.iter().chain([&("authorization", auth.as_str())]) {
            let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.append(name, v.parse().unwrap());
        }
        h
    }

    /// The GET object example's headers, plus `extra`.
    fn get_headers(extra: &[(&str, &str)], signed: &str, signature: &str) -> HeaderMap {
        let mut pairs = vec![
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA),
            ("x-amz-date", "20130524T000000Z"),
        ];
        pairs.extend_from_slice(extra);
        headers(&pairs, signed, signature)
    }

    /// A request to the examples' host.
    fn request<'a>(method: &'a str, path: &'a str, query: &'a str, h: &'a HeaderMap) -> Signed<'a> {
        let body = b"";
        Signed {
            method,
            path,
            query,
            host: HOST,
            headers: h,
            body,
        }
    }

    fn store(key: &str, secret: &str, region: &str) -> S3 {
        S3::new(&[(key.into(), secret.into())], region)
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(WHEN));
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(parse_amz_date("2013-05-24T00:00:00Z"), None);
        assert_eq!(parse_amz_date("20131324T000000Z"), None);
    }

    #[test]
    fn aws_example_get_object() {
        // The published canonical request, string to sign (its hash 7344ae5b…) and signature.
        let h = get_headers(&[], GET_SIGNED, GET_SIG);
        let r = request("GET", "/test.txt", "", &h);
        let signed: Vec<&str> = GET_SIGNED.split(';').collect();
        let canonical = canonical_request(&r, &signed, EMPTY_SHA).unwrap();
        assert_eq!(
            canonical,
            format!(
                "GET\n/test.txt\n\nhost:{HOST}\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY_SHA}\n\
                 x-amz-date:20130524T000000Z\n\n{GET_SIGNED}\n{EMPTY_SHA}"
            )
        );
        let scope = "20130524/us-east-1/s3/aws4_request";
        let sts = string_to_sign("20130524T000000Z", scope, &canonical);
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        let key = signing_key(SECRET, "20130524", "us-east-1", "s3");
        assert_eq!(hex(&hmac(&key, &sts)), GET_SIG);
        // The whole verifier accepts it, at the examples' time, and not a day later.
        let s3 = store(AKID, SECRET, "us-east-1");
        assert!(verify(&s3, &r, WHEN).unwrap());
        assert_eq!(
            verify(&s3, &r, WHEN + 86_400).unwrap_err().reason,
            "time-skew"
        );
    }

    #[test]
    fn aws_example_put_object() {
        // PUT /test$file.text ("Welcome to Amazon S3."), Date and x-amz-storage-class signed:
        // canonical request hash 9e0e90d9…, signature 98ad7217….
        let body = b"Welcome to Amazon S3.";
        let payload = hex(&Sha256::digest(body));
        let want = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        assert_eq!(payload, want);
        let signed = "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class";
        let sig = "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd";
        let pairs = [
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", &payload),
        ];
        let h = headers(&pairs, signed, sig);
        let s3 = store(AKID, SECRET, "us-east-1");
        for path in ["/test$file.text", "/test%24file.text"] {
            let r = Signed {
                body,
                ..request("PUT", path, "", &h)
            };
            let names: Vec<&str> = signed.split(';').collect();
            let canonical = canonical_request(&r, &names, &payload).unwrap();
            assert!(canonical.starts_with("PUT\n/test%24file.text\n\n"));
            let hashed = hex(&Sha256::digest(canonical.as_bytes()));
            let want = "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d";
            assert_eq!(hashed, want);
            assert!(verify(&s3, &r, WHEN).unwrap());
            // Another body under the same signature: the payload hash no longer matches.
            let tampered = Signed {
                body: b"Welcome to Amazon S4.",
                ..r
            };
            let d = verify(&s3, &tampered, WHEN).unwrap_err();
            assert_eq!(
                (d.status.as_u16(), d.code),
                (400, "XAmzContentSHA256Mismatch")
            );
        }
    }

    #[test]
    fn aws_examples_with_queries() {
        // GET /?lifecycle (fea454ca…) and GET /?max-keys=2&prefix=J (34b48302…).
        let lifecycle = "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543";
        let list = "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7";
        let s3 = store(AKID, SECRET, "us-east-1");
        let pairs = [
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY_SHA),
        ];
        for (query, sig) in [
            ("lifecycle", lifecycle),
            ("max-keys=2&prefix=J", list),
            ("prefix=J&max-keys=2", list),
        ] {
            let h = headers(&pairs, "host;x-amz-content-sha256;x-amz-date", sig);
            assert!(
                verify(&s3, &request("GET", "/", query, &h), WHEN).unwrap(),
                "{query}"
            );
        }
    }

    #[test]
    fn refusals() {
        let check = |h: HeaderMap, s3: &S3| {
            let r = request("GET", "/test.txt", "", &h);
            verify(s3, &r, WHEN).map_err(|d| (d.status.as_u16(), d.code, d.reason))
        };
        let s3 = store(AKID, SECRET, "us-east-1");
        assert_eq!(check(get_headers(&[], GET_SIGNED, GET_SIG), &s3), Ok(true));
        let zeros = "0".repeat(64);
        let e = check(get_headers(&[], GET_SIGNED, &zeros), &s3).unwrap_err();
        assert_eq!(
            e,
            (403, "SignatureDoesNotMatch", "signature-mismatch".into())
        );
        let extra = get_headers(&[("x-amz-meta-extra", "1")], GET_SIGNED, GET_SIG);
        let e = check(extra, &s3).unwrap_err();
        assert_eq!(
            e,
            (
                403,
                "AccessDenied",
                "unsigned-header:x-amz-meta-extra".into()
            )
        );
        let mut v2 = get_headers(&[], GET_SIGNED, GET_SIG);
        v2.insert(
            "authorization",
            "AWS AKIAIOSFODNN7EXAMPLE:abc".parse().unwrap(),
        );
        assert_eq!(check(v2, &s3).unwrap_err().2, "malformed-authorization");
        let mut none = get_headers(&[], GET_SIGNED, GET_SIG);
        none.remove("authorization");
        let e = check(none, &s3).unwrap_err();
        assert_eq!(e, (403, "AccessDenied", "missing-authorization".into()));
        let no_host = get_headers(&[], "range;x-amz-content-sha256;x-amz-date", GET_SIG);
        assert_eq!(check(no_host, &s3).unwrap_err().2, "host-not-signed");
        for (s3, reason) in [
            (store(AKID, SECRET, "eu-west-1"), "wrong-region"),
            (store("AKID", SECRET, "us-east-1"), "unknown-access-key"),
            (store(AKID, "nope", "us-east-1"), "signature-mismatch"),
        ] {
            let h = get_headers(&[], GET_SIGNED, GET_SIG);
            assert_eq!(check(h, &s3).unwrap_err().2, reason);
        }
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(uri_encode("a b/ü~$".as_bytes(), false), "a%20b/%C3%BC~%24");
        assert_eq!(uri_encode(b"a/b", true), "a%2Fb");
        assert_eq!(canonical_query("b=2&a=&a=1&c"), "a=&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a%2Fb%20c"), "k=a%2Fb%20c");
    }
}

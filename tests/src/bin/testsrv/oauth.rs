//! An OAuth 2.0 authorization server's token endpoint and a protected resource, for handlers
//! that trade a client secret for short-lived tokens (`oauth-client-credentials`).
//!
//! * `POST /oauth/token`, form body (`application/x-www-form-urlencoded`):
//!   - `grant_type=client_credentials` (RFC 6749 §4.4), optional `scope` (echoed back);
//!   - `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693) with
//!     `subject_token` = a live token from here and `subject_token_type` =
//!     `urn:ietf:params:oauth:token-type:access_token`.
//!
//!   The client authenticates with HTTP Basic (`base64(urlencode(id):urlencode(secret))`) or
//!   with `client_id`/`client_secret` form fields (RFC 6749 §2.3.1), not both. Success: `200`
//!   `{"access_token","token_type":"Bearer","expires_in"[,"scope"][,"issued_token_type"]}` with
//!   `Cache-Control: no-store`, a fresh random token each time. Errors are RFC 6749 §5.2 JSON:
//!   `401 invalid_client` (with `WWW-Authenticate: Basic` when Basic was tried),
//!   `400 invalid_request` (not a form, a repeated parameter, two client authentications, a bad
//!   subject token), `400 unsupported_grant_type`; `405` for another method.
//! * `/oauth/resource` and anything under it, any method: needs `Authorization: Bearer TOKEN`
//!   with a token issued here, not expired and not revoked; else `401` with an RFC 6750 §3
//!   `WWW-Authenticate: Bearer …` (`error="invalid_token"` when a token was presented; no error
//!   code when none was, as §3.1 says). `200` JSON names the client and the token's issue number.
//! * `POST /oauth/revoke-all`: every token issued so far stops working (a handler's cached token
//!   now draws a 401).
use super::{form_pairs, header_str, json, log_value, percent_decode, random_id, read_body};
use super::{Body, State};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const REALM: &str = "egret-testsrv";

/// The configured clients and the tokens issued so far.
pub(crate) struct OAuth {
    clients: HashMap<String, String>,
    lifetime: Duration,
    tokens: Mutex<Tokens>,
    /// `--oauth-token-file`: where every issued token is appended (`N TOKEN` lines).
    token_file: Option<Mutex<std::fs::File>>,
}

#[derive(Default)]
struct Tokens {
    issued: u64,
    by_value: HashMap<String, Issued>,
}

struct Issued {
    n: u64,
    client: String,
    expires: Instant,
    revoked: bool,
}

/// Why a bearer token was refused (the `RESOURCE-401 reason=` value).
#[derive(Debug, PartialEq)]
enum Refused {
    Missing,
    Unknown,
    Expired,
    Revoked,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::Unknown => "unknown",
            Refused::Expired => "expired",
            Refused::Revoked => "revoked",
        }
    }
}

impl OAuth {
    pub(crate) fn new(clients: &[(String, String)], expires_in: u64) -> OAuth {
        OAuth {
            clients: clients.iter().cloned().collect(),
            lifetime: Duration::from_secs(expires_in),
            tokens: Mutex::new(Tokens::default()),
            token_file: None,
        }
    }

    /// Also append every token issued to `path`, one `N TOKEN` a line: for tests that prove a
    /// client never saw one (the access log never holds a token).
    pub(crate) fn with_token_file(mut self, path: &std::path::Path) -> std::io::Result<OAuth> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        self.token_file = Some(Mutex::new(f));
        Ok(self)
    }

    /// A new token for `client`: (its issue number, its value).
    fn issue(&self, client: &str) -> (u64, String) {
        let value = random_id(32);
        let mut t = self.tokens.lock().unwrap();
        t.issued += 1;
        let n = t.issued;
        t.by_value.insert(
            value.clone(),
            Issued {
                n,
                client: client.to_string(),
                expires: Instant::now() + self.lifetime,
                revoked: false,
            },
        );
        drop(t);
        if let Some(f) = &self.token_file {
            use std::io::Write;
            let mut f = f.lock().unwrap();
            let _ = writeln!(f, "{n} {value}");
            let _ = f.flush();
        }
        (n, value)
    }

    /// The live token's (issue number, client).
    fn check(&self, token: &str) -> Result<(u64, String), Refused> {
        let t = self.tokens.lock().unwrap();
        let i = t.by_value.get(token).ok_or(Refused::Unknown)?;
        if i.revoked {
            Err(Refused::Revoked)
        } else if Instant::now() >= i.expires {
            Err(Refused::Expired)
        } else {
            Ok((i.n, i.client.clone()))
        }
    }

    /// Revokes every token; returns how many were live.
    fn revoke_all(&self) -> usize {
        let now = Instant::now();
        let mut t = self.tokens.lock().unwrap();
        let mut live = 0;
        for i in t.by_value.values_mut() {
            live += usize::from(!i.revoked && now < i.expires);
            i.revoked = true;
        }
        live
    }
}

pub(crate) async fn route(
    parts: &[&str],
    req: Request<Incoming>,
    st: &Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    Ok(match parts {
        ["oauth", "token"] => token(req, st).await?,
        ["oauth", "resource", ..] => resource(req, st).await?,
        ["oauth", "revoke-all"] if req.method() == http::Method::POST => {
            let count = st.oauth.revoke_all();
            st.log_line(&format!("TOKENS-REVOKED count={count}"));
            json(StatusCode::OK, &json!({ "revoked": count }))
        }
        ["oauth", "revoke-all"] => method_not_allowed(),
        _ => json(StatusCode::NOT_FOUND, &json!({ "error": "not_found" })),
    })
}

fn method_not_allowed() -> Response<Body> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "use POST",
    );
    r.headers_mut().insert("allow", "POST".parse().unwrap());
    r
}

/// An RFC 6749 §5.2 error response.
fn error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    let body = json!({ "error": code, "error_description": description });
    let mut r = json(status, &body);
    r.headers_mut()
        .insert("cache-control", "no-store".parse().unwrap());
    r
}

/// Client authentication (RFC 6749 §2.3.1): HTTP Basic, whose id and secret are form-encoded
/// before base64, or the `client_id`/`client_secret` form fields; both at once is an error.
fn client_auth(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<Option<(String, String)>, &'static str> {
    let basic = authorization.and_then(|a| {
        let (scheme, cred) = a.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(cred.trim())
    });
    let in_form = form.get("client_secret").map(|secret| {
        let id = form.get("client_id").cloned().unwrap_or_default();
        (id, secret.clone())
    });
    match (basic, in_form) {
        (Some(_), Some(_)) => Err("more than one client authentication method"),
        (Some(cred), None) => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(cred)
                .map_err(|_| "HTTP Basic credentials are not base64")?;
            let raw = String::from_utf8(raw).map_err(|_| "HTTP Basic credentials not UTF-8")?;
            let (id, secret) = raw.split_once(':').ok_or("HTTP Basic without a colon")?;
            let dec = |s: &str| String::from_utf8_lossy(&percent_decode(s, true)).into_owned();
            Ok(Some((dec(id), dec(secret))))
        }
        (None, in_form) => Ok(in_form),
    }
}

async fn token(req: Request<Incoming>, st: &Arc<State>) -> Result<Response<Body>, std::io::Error> {
    if req.method() != http::Method::POST {
        return Ok(method_not_allowed());
    }
    let is_form = header_str(&req, "content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    let authorization = header_str(&req, "authorization");
    let body = read_body(req.into_body()).await?;
    let deny = |code: &str, client: &str| {
        st.log_line(&format!(
            "TOKEN-DENIED error={code} client={}",
            log_value(client)
        ));
    };
    if !is_form {
        deny("invalid_request", "");
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs = form_pairs(&String::from_utf8_lossy(&body));
    let mut form = HashMap::new();
    for (k, v) in pairs {
        if form.insert(k.clone(), v).is_some() {
            deny("invalid_request", "");
            let msg = format!("parameter {k} is repeated");
            return Ok(error(StatusCode::BAD_REQUEST, "invalid_request", &msg));
        }
    }
    let (client, secret) = match client_auth(authorization.as_deref(), &form) {
        Ok(Some(c)) => c,
        Ok(None) => (String::new(), String::new()),
        Err(msg) => {
            deny("invalid_request", "");
            return Ok(error(StatusCode::BAD_REQUEST, "invalid_request", msg));
        }
    };
    if client.is_empty() || st.oauth.clients.get(&client) != Some(&secret) {
        deny("invalid_client", &client);
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
        // RFC 6749 §5.2: a client that tried the Authorization header gets a challenge.
        if authorization.is_some() {
            let v = format!("Basic realm=\"{REALM}\"");
            r.headers_mut()
                .insert("www-authenticate", v.parse().unwrap());
        }
        return Ok(r);
    }
    let grant = form.get("grant_type").map(String::as_str);
    let grant = match grant {
        Some("client_credentials") => "client_credentials",
        Some(TOKEN_EXCHANGE) => {
            let subject = form.get("subject_token").map(|t| st.oauth.check(t));
            let typ = form.get("subject_token_type").map(String::as_str);
            if !matches!(subject, Some(Ok(_))) || typ != Some(ACCESS_TOKEN_TYPE) {
                deny("invalid_request", &client);
                let msg = "subject_token must be a live access token from here, \
                           subject_token_type urn:ietf:params:oauth:token-type:access_token";
                return Ok(error(StatusCode::BAD_REQUEST, "invalid_request", msg));
            }
            "token-exchange"
        }
        Some(_) => {
            deny("unsupported_grant_type", &client);
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "client_credentials or token exchange",
            ));
        }
        None => {
            deny("invalid_request", &client);
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "no grant_type",
            ));
        }
    };
    let (n, value) = st.oauth.issue(&client);
    st.log_line(&format!(
        "TOKEN-ISSUED n={n} client={} grant={grant}",
        log_value(&client)
    ));
    let mut body = json!({
        "access_token": value,
        "token_type": "Bearer",
        "expires_in": st.oauth.lifetime.as_secs(),
    });
    if let Some(scope) = form.get("scope") {
        body["scope"] = scope.as_str().into();
    }
    if grant == "token-exchange" {
        body["issued_token_type"] = ACCESS_TOKEN_TYPE.into();
    }
    let mut r = json(StatusCode::OK, &body);
    let h = r.headers_mut();
    h.insert("cache-control", "no-store".parse().unwrap());
    h.insert("pragma", "no-cache".parse().unwrap());
    Ok(r)
}

async fn resource(
    req: Request<Incoming>,
    st: &Arc<State>,
) -> Result<Response<Body>, std::io::Error> {
    let bearer = header_str(&req, "authorization").and_then(|a| {
        let (scheme, token) = a.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
    });
    let checked = bearer
        .as_deref()
        .map_or(Err(Refused::Missing), |t| st.oauth.check(t));
    let (n, client) = match checked {
        Ok(ok) => ok,
        Err(refused) => {
            st.log_line(&format!("RESOURCE-401 reason={}", refused.reason()));
            let challenge = if refused == Refused::Missing {
                format!("Bearer realm=\"{REALM}\"")
            } else {
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", \
                     error_description=\"the access token is {}\"",
                    refused.reason()
                )
            };
            let mut body = json!({ "reason": refused.reason() });
            if refused != Refused::Missing {
                body["error"] = "invalid_token".into();
            }
            let mut r = json(StatusCode::UNAUTHORIZED, &body);
            r.headers_mut()
                .insert("www-authenticate", challenge.parse().unwrap());
            return Ok(r);
        }
    };
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = read_body(req.into_body()).await?;
    st.log_line(&format!("RESOURCE-OK n={n} client={}", log_value(&client)));
    Ok(json(
        StatusCode::OK,
        &json!({
            "ok": true, "client": client, "token_n": n, "method": method, "path": path,
            "body_bytes": body.len(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn client_auth_by_basic_or_form_fields_not_both() {
        // RFC 6749 §2.3.1: id and secret are form-encoded, then base64'd ("c 1" : "s:3").
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("c+1:s%3A3");
        let basic = format!("Basic {b64}");
        let got = client_auth(Some(&basic), &form(&[])).unwrap();
        assert_eq!(got, Some(("c 1".into(), "s:3".into())));
        let fields = form(&[("client_id", "c1"), ("client_secret", "x")]);
        let got = client_auth(None, &fields).unwrap();
        assert_eq!(got, Some(("c1".into(), "x".into())));
        assert!(client_auth(Some(&basic), &fields).is_err());
        assert_eq!(client_auth(Some("Bearer abc"), &form(&[])), Ok(None));
        assert!(client_auth(Some("Basic !!!"), &form(&[])).is_err());
    }

    #[test]
    fn tokens_expire_and_are_revoked() {
        let o = OAuth::new(&[("c1".into(), "s".into())], 0);
        let (n, t) = o.issue("c1");
        assert_eq!(n, 1);
        assert_eq!(o.check(&t), Err(Refused::Expired));
        assert_eq!(o.check("nope"), Err(Refused::Unknown));
        let o = OAuth::new(&[], 60);
        let (_, t1) = o.issue("c1");
        let (n2, t2) = o.issue("c2");
        assert_ne!(t1, t2);
        assert_eq!(o.check(&t2), Ok((n2, "c2".into())));
        assert_eq!(o.revoke_all(), 2);
        assert_eq!(o.check(&t1), Err(Refused::Revoked));
        assert_eq!(o.revoke_all(), 0);
    }
}

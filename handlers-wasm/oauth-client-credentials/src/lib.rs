//! `oauth-client-credentials`: calls an API with an OAuth 2.0 access token obtained by the client
//! credentials grant (RFC 6749 §4.4), so that neither the client secret nor the token ever
//! reaches the sandbox.
//!
//! Params:
//!
//! ```json
//! {"token_url": "https://auth.example/oauth/token", "client_id": "my-client",
//!  "client_secret": "CLIENT_SECRET", "scope": "read write", "auth": "basic",
//!  "header": "authorization", "token_secret": "OAUTH_ACCESS_TOKEN", "refresh_margin_s": 30}
//! ```
//!
//! * `token_url` (required): the token endpoint, an `https://` URL;
//! * `client_id` (required): the client identifier, a literal;
//! * `client_secret` (required): the NAME of a granted secret holding the client secret;
//! * `scope` (optional): sent as the `scope` form field;
//! * `auth`: how the client authenticates (RFC 6749 §2.3.1): `"basic"` (default, HTTP Basic
//!   with the form-encoded id and secret, assembled by egret) or `"body"` (`client_id` and
//!   `client_secret` form fields, the secret percent-encoded by egret);
//! * `header`: the request header that gets `Bearer TOKEN` (default `authorization`);
//! * `token_secret`: the name the access token is kept under (default `OAUTH_ACCESS_TOKEN`);
//! * `refresh_margin_s`: how long before `expires_in` runs out the token is exchanged again
//!   (default 30; never more than half the token's lifetime, so short-lived tokens are reused).
//!
//! Policy keys the binding needs: `secrets = ["CLIENT_SECRET"]`,
//! `mint_secrets = ["OAUTH_ACCESS_TOKEN"]` (the `token_secret`), `fetch_hosts` with the token
//! endpoint's host, `response = { mode = "head" }` (refresh on a 401), and a `timeout_ms` that
//! allows for the exchange (e.g. 2000; the default 50 is too short for a fetch).
//!
//! How it works: the access token is a **minted secret** (`set-secret` with a ttl of
//! `expires_in` minus the margin), never a literal the guest keeps: every request injects it by
//! name (`Bearer {}`), egret fills it in, and the echo guard masks it where a response echoes
//! it. When the token is absent (never fetched, or expired), the request first makes one
//! `fetch` to the token endpoint and mints the answer. Token endpoint errors (unreachable,
//! non-200, not a token response) answer `502` naming the endpoint, never a secret.
//!
//! Refresh on `401`: when the upstream answers `401`, the response phase expires the token (it
//! mints it again with a ttl of 0), so the next request exchanges again. The `401` itself is
//! passed on: the request cannot be replayed (its body has been sent), so the client sees
//! that one failure and its retry succeeds. A token generation counter in the sandbox's kv
//! (`oauth-client-credentials/TOKEN_SECRET/generation`, advanced by compare-and-set) makes sure a
//! late `401` for an old token never expires a newer one (except in the instant between its
//! compare-and-set and its expiry, where a token minted meanwhile is expired too: one extra
//! exchange at worst).
//!
//! Concurrency: there is no lock around the exchange. A request that finds no token cannot
//! wait for another request's exchange (an invocation sees the secrets that existed when it
//! started, so it could never use the token another one mints meanwhile), so requests that
//! start together without a token each make their own exchange; every token they get is valid,
//! and the last one minted is kept. At most one exchange per request, bounded by the number of
//! requests in flight at that moment.
//!
//! Like every example handler it sets `x-egret-handler: oauth-client-credentials` on the
//! upstream request (and on its own error responses).

use std::sync::Mutex;

use egret_handler::{
    fetch, has_secret, kv, log, set_secret, Action, Context, Encoding, FetchRequest, Request,
    Response, ResponseAction, Value,
};

const NAME: &str = "oauth-client-credentials";

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret.
    #[default]
    Basic,
    /// `client_id` and `client_secret` form fields.
    Body,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Params {
    token_url: String,
    client_id: String,
    client_secret: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    auth: ClientAuth,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_token_secret")]
    token_secret: String,
    #[serde(default = "default_margin")]
    refresh_margin_s: u64,
}

fn default_header() -> String {
    "authorization".to_owned()
}
fn default_token_secret() -> String {
    "OAUTH_ACCESS_TOKEN".to_owned()
}
fn default_margin() -> u64 {
    30
}

/// The binding's params, checked.
fn params(ctx: &Context) -> Result<Params, String> {
    ctx.params::<Params>()
        .map_err(|e| format!("bad params: {e}"))
        .and_then(checked)
}

/// `p` if it is usable, else what is wrong.
fn checked(p: Params) -> Result<Params, String> {
    let rest = p.token_url.strip_prefix("https://").ok_or_else(|| {
        format!(
            "bad params: token_url must be an https:// URL, got {:?}",
            p.token_url
        )
    })?;
    if rest.is_empty() || rest.starts_with('/') || p.token_url.contains(char::is_whitespace) {
        return Err(format!(
            "bad params: token_url {:?} has no host",
            p.token_url
        ));
    }
    for (field, v) in [
        ("client_id", &p.client_id),
        ("client_secret", &p.client_secret),
        ("header", &p.header),
        ("token_secret", &p.token_secret),
    ] {
        if v.is_empty() {
            return Err(format!("bad params: {field} is empty"));
        }
    }
    Ok(p)
}

/// `application/x-www-form-urlencoded` value: every byte but the RFC 3986 unreserved ones as
/// `%XX` (what egret's `Encoding::Percent` writes for the secret, so both halves agree).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The form fields other than the client authentication.
fn grant_form(p: &Params) -> String {
    let mut form = String::from("grant_type=client_credentials");
    if let Some(scope) = &p.scope {
        form.push_str("&scope=");
        form.push_str(&form_encode(scope));
    }
    form
}

/// The token request: the secret is filled in by egret, percent-encoded, as HTTP Basic or a
/// form field.
fn token_request(p: &Params) -> FetchRequest {
    let req = FetchRequest::post(&p.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json");
    match p.auth {
        ClientAuth::Basic => req
            .basic_auth(
                Value::new().text(&form_encode(&p.client_id)),
                Value::new().secret_as(&p.client_secret, Encoding::Percent),
            )
            .body(grant_form(p)),
        ClientAuth::Body => {
            let fields = format!(
                "{}&client_id={}&client_secret=",
                grant_form(p),
                form_encode(&p.client_id)
            );
            req.body_value(
                Value::new()
                    .text(&fields)
                    .secret_as(&p.client_secret, Encoding::Percent),
            )
        }
    }
}

/// A successful token response (RFC 6749 §5.1), as far as this handler uses it.
#[derive(Debug, PartialEq)]
struct Token {
    access_token: String,
    /// Seconds; `None` when the server did not say (the token is then kept until a 401).
    expires_in: Option<u64>,
}

#[derive(serde::Deserialize)]
struct TokenJson {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct ErrorJson {
    error: String,
}

/// A short text from the token endpoint that is safe to show (an RFC 6749 §5.2 error code or a
/// token type): visible ASCII without quotes, at most 64 bytes; anything else is not shown.
fn safe_word(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    ok.then_some(s)
}

/// Reads the token endpoint's answer. Errors say what was wrong, never quoting the body (it
/// could hold a token).
fn parse_token_response(status: u16, body: &[u8]) -> Result<Token, String> {
    if status != 200 {
        let code = serde_json::from_slice::<ErrorJson>(body)
            .ok()
            .and_then(|e| safe_word(&e.error).map(|w| format!(" ({w})")))
            .unwrap_or_default();
        return Err(format!("answered {status}{code}"));
    }
    let t: TokenJson = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "JSON without a string access_token"
        } else {
            "not JSON"
        };
        format!("answered 200 but not with a token response ({what})")
    })?;
    if let Some(tt) = &t.token_type {
        if !tt.eq_ignore_ascii_case("bearer") {
            let shown = safe_word(tt).unwrap_or("(unprintable)");
            return Err(format!(
                "issued a token of type {shown}; only Bearer tokens are supported"
            ));
        }
    }
    // RFC 6750's b64token is narrower; anything visible is accepted, as long as it can be sent
    // in a header.
    if t.access_token.is_empty() || !t.access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "issued an access_token that is empty or cannot be sent in a header".to_owned(),
        );
    }
    let expires_in = match t.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(n.as_u64().ok_or("")),
        Some(serde_json::Value::String(s)) => Some(s.trim().parse::<u64>().map_err(|_| "")),
        Some(_) => Some(Err("")),
    };
    let expires_in = expires_in
        .transpose()
        .map_err(|_| "answered an expires_in that is not a number of seconds".to_owned())?;
    Ok(Token {
        access_token: t.access_token,
        expires_in,
    })
}

/// How long a token is kept: its lifetime minus the margin, but never less than half the
/// lifetime (a token that lives 2 s is still reused for 1 s).
fn ttl_ms(expires_in_s: u64, margin_s: u64) -> u64 {
    let life = expires_in_s.saturating_mul(1000);
    life.saturating_sub(margin_s.saturating_mul(1000))
        .max(life / 2)
}

/// The kv key of the token generation counter.
fn generation_key(token_secret: &str) -> String {
    format!("{NAME}/{token_secret}/generation")
}

/// The generation after `current` (decimal text as `kv::incr` stores it; absent: 0).
fn next_generation(current: Option<&[u8]>) -> String {
    let n = current
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.trim().parse::<i64>().ok())
        .unwrap_or(0);
    n.saturating_add(1).to_string()
}

/// The token generation this request was sent with: set by `handle`, read by `on_response`
/// (both phases of one request run on the same instance; nothing crosses requests). The outer
/// `None`: the request was not forwarded with a token.
static SENT_WITH: Mutex<Option<Option<Vec<u8>>>> = Mutex::new(None);

/// One exchange at the token endpoint: mints the token and returns its generation.
fn exchange(p: &Params) -> Result<Vec<u8>, (u16, String)> {
    let endpoint = &p.token_url;
    if !has_secret(&p.client_secret) {
        return Err((
            500,
            format!(
                "client secret `{}` is not granted to this binding (secrets = [...]) or not set",
                p.client_secret
            ),
        ));
    }
    let resp = fetch(token_request(p))
        .map_err(|e| (502, format!("token endpoint {endpoint} failed: {e}")))?;
    let token = parse_token_response(resp.status(), resp.body())
        .map_err(|e| (502, format!("token endpoint {endpoint} {e}")))?;
    // Advance the generation before minting: a late 401 for the previous token (which
    // compares against the old generation) then cannot expire this one.
    let generation = kv::incr(&generation_key(&p.token_secret), 1, None)
        .map_err(|e| (500, format!("kv: {e}")))?;
    let ttl = token.expires_in.map(|s| ttl_ms(s, p.refresh_margin_s));
    set_secret(&p.token_secret, token.access_token.as_bytes(), ttl).map_err(|e| {
        (
            500,
            format!("cannot keep the access token (list it in mint_secrets): {e}"),
        )
    })?;
    log::info!(
        "exchanged client credentials of {} at {endpoint}: token `{}` generation {generation}, \
         kept {}",
        p.client_id,
        p.token_secret,
        ttl.map_or("until a 401".to_owned(), |t| format!("{t} ms"))
    );
    Ok(generation.to_string().into_bytes())
}

fn deny(status: u16, msg: &str) -> Action {
    Action::deny(status, &format!("{NAME}: {msg}")).header("x-egret-handler", NAME)
}

fn handle(ctx: Context, _req: Request) -> Action {
    let p = match params(&ctx) {
        Ok(p) => p,
        Err(e) => return deny(500, &e),
    };
    let generation = if has_secret(&p.token_secret) {
        kv::get(&generation_key(&p.token_secret))
    } else {
        match exchange(&p) {
            Ok(g) => Some(g),
            Err((status, e)) => {
                log::error!("{e}");
                return deny(status, &e);
            }
        }
    };
    *SENT_WITH.lock().unwrap_or_else(|e| e.into_inner()) = Some(generation);
    Action::forward()
        .set_header("x-egret-handler", NAME)
        .set_header_secret(&p.header, "Bearer {}", &p.token_secret)
}

/// A 401 from upstream: expire the token this request was sent with, unless a newer one exists
/// already, so that the next request exchanges again. The 401 is passed on.
fn on_response(ctx: Context, resp: Response) -> ResponseAction {
    if resp.status() != 401 {
        return ResponseAction::pass();
    }
    let sent = SENT_WITH.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (Ok(p), Some(sent)) = (params(&ctx), sent) else {
        return ResponseAction::pass();
    };
    let key = generation_key(&p.token_secret);
    let next = next_generation(sent.as_deref());
    match kv::compare_and_set(&key, sent.as_deref(), next, None) {
        Ok(true) => match set_secret(&p.token_secret, b"", Some(0)) {
            Ok(()) => log::info!(
                "upstream answered 401: token `{}` expired, the next request exchanges again",
                p.token_secret
            ),
            Err(e) => log::error!("upstream answered 401 but the token cannot be expired: {e}"),
        },
        Ok(false) => log::info!(
            "upstream answered 401 to an older token `{}`; a newer one is kept",
            p.token_secret
        ),
        Err(e) => log::error!("upstream answered 401 but kv failed: {e}"),
    }
    ResponseAction::pass()
}

egret_handler::export!(handle, on_response = on_response);

#[cfg(test)]
mod tests {
    use super::*;

    /// What `params` makes of a binding's JSON.
    fn parse(json: &str) -> Result<Params, String> {
        serde_json::from_str(json)
            .map_err(|e| format!("bad params: {e}"))
            .and_then(checked)
    }

    const MIN: &str =
        r#"{"token_url":"https://auth.test/oauth/token","client_id":"c 1","client_secret":"CS"}"#;

    #[test]
    fn params_have_defaults_and_are_checked() {
        let p = parse(MIN).unwrap();
        assert_eq!(p.auth, ClientAuth::Basic);
        assert_eq!(p.header, "authorization");
        assert_eq!(p.token_secret, "OAUTH_ACCESS_TOKEN");
        assert_eq!(p.refresh_margin_s, 30);
        let body = MIN.replace('}', r#","auth":"body","scope":"a b"}"#);
        assert_eq!(parse(&body).unwrap().auth, ClientAuth::Body);
        for (bad, want) in [
            (MIN.replace("https://", "http://"), "https://"),
            (MIN.replace("https://auth.test", "https://"), "no host"),
            (MIN.replace("\"CS\"", "\"\""), "client_secret is empty"),
            (MIN.replace('}', r#","auth":"digest"}"#), "unknown variant"),
            (MIN.replace('}', r#","scopes":"x"}"#), "unknown field"),
            ("{}".to_owned(), "missing field"),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn form_fields_are_encoded() {
        assert_eq!(form_encode("c 1:x+/é~"), "c%201%3Ax%2B%2F%C3%A9~");
        let p = parse(&MIN.replace('}', r#","scope":"read write"}"#)).unwrap();
        assert_eq!(
            grant_form(&p),
            "grant_type=client_credentials&scope=read%20write"
        );
        assert_eq!(
            grant_form(&parse(MIN).unwrap()),
            "grant_type=client_credentials"
        );
    }

    #[test]
    fn token_responses() {
        let ok = br#"{"access_token":"abc-123_x","token_type":"Bearer","expires_in":3600}"#;
        assert_eq!(
            parse_token_response(200, ok),
            Ok(Token {
                access_token: "abc-123_x".into(),
                expires_in: Some(3600)
            })
        );
        let s = br#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#;
        assert_eq!(parse_token_response(200, s).unwrap().expires_in, Some(60));
        let none = br#"{"access_token":"t"}"#;
        assert_eq!(parse_token_response(200, none).unwrap().expires_in, None);
        let denied = br#"{"error":"invalid_client","error_description":"secret xyz wrong"}"#;
        let e = parse_token_response(401, denied).unwrap_err();
        assert_eq!(e, "answered 401 (invalid_client)");
        assert_eq!(
            parse_token_response(503, b"<html>").unwrap_err(),
            "answered 503"
        );
        for (body, want) in [
            (&b"<html>tok-123</html>"[..], "not JSON"),
            (br#"{"token":"tok-123"}"#, "without a string access_token"),
            (br#"{"access_token":"a b"}"#, "cannot be sent in a header"),
            (br#"{"access_token":"t","token_type":"mac"}"#, "type mac"),
            (br#"{"access_token":"t","expires_in":-5}"#, "expires_in"),
        ] {
            let e = parse_token_response(200, body).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("tok-123"), "{e}");
        }
    }

    #[test]
    fn ttl_keeps_a_margin_but_at_least_half() {
        assert_eq!(ttl_ms(3600, 30), 3_570_000);
        assert_eq!(ttl_ms(60, 30), 30_000);
        assert_eq!(ttl_ms(2, 30), 1000);
        assert_eq!(ttl_ms(2, 0), 2000);
        assert_eq!(ttl_ms(0, 30), 0);
        assert_eq!(ttl_ms(u64::MAX, 30), u64::MAX - 30_000);
    }

    #[test]
    fn generations() {
        assert_eq!(next_generation(None), "1");
        assert_eq!(next_generation(Some(b"41")), "42");
        assert_eq!(next_generation(Some(b"junk")), "1");
        assert_eq!(generation_key("T"), "oauth-client-credentials/T/generation");
    }
}

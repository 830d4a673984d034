//! The request-time decision on one chat completions request: pure (no host calls), so it is
//! unit-tested on the host. The caller gathers what needs the host first — the watched
//! secrets' values and the tokens used so far — and carries out the [`Decision`].

use serde_json::{json, Map, Value};

/// What the binding's params ask for.
#[derive(Debug, Default)]
pub struct Rules<'a> {
    /// Allowed models (`None`: any); an entry ending in `*` allows that prefix.
    pub models: Option<&'a [String]>,
    /// Largest `max_tokens` / `max_completion_tokens` passed on.
    pub max_tokens_cap: Option<u64>,
    /// The sandbox's token budget and its window in seconds.
    pub budget: Option<(u64, Option<u64>)>,
}

/// What happens to the request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Forward it, with this body instead of the original when given.
    Forward { body: Option<Vec<u8>> },
    /// Answer it here: status and an OpenAI-style JSON error object.
    Refuse { status: u16, error: Value },
}

/// A refusal with an OpenAI-style error body (`{"error": {"message", "type", "code", ...}}`),
/// so that clients show the message; `extra` fields go into the error object.
fn refuse(status: u16, code: &str, message: String, extra: Value) -> Decision {
    let mut error = Map::new();
    error.insert("message".into(), Value::String(message));
    error.insert("type".into(), Value::String("llm_guard".into()));
    error.insert("code".into(), Value::String(code.into()));
    if let Value::Object(m) = extra {
        error.extend(m);
    }
    Decision::Refuse {
        status,
        error: json!({ "error": error }),
    }
}

/// Whether `model` is allowed by `allowed` (exact names; `prefix*` patterns).
pub fn model_allowed(model: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => a == model,
    })
}

/// Decide on a `POST /v1/chat/completions` body. `watched` holds (name, value) of the secrets
/// that must not leave in a prompt; `used` is the tokens the sandbox spent in the window.
pub fn decide(body: &[u8], rules: &Rules<'_>, watched: &[(String, String)], used: u64) -> Decision {
    // First, before anything can fail on the body's shape: a secret in it is refused whatever
    // else is wrong with the request.
    // The body is parsed once, for the secret scan and the checks after it.
    let parsed = serde_json::from_slice::<Value>(body);
    if let Some(name) = find_secret_in(body, parsed.as_ref().ok(), watched) {
        return refuse(
            403,
            "secret_in_request",
            format!(
                "the request body contains the value of secret `{name}`, which this sandbox must \
                 not send to the model API; remove it from the prompt"
            ),
            json!({ "secret": name }),
        );
    }
    let mut v: Value = match parsed {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            let msg = "the request body must be a JSON object".to_string();
            return refuse(400, "invalid_request", msg, json!({}));
        }
        Err(e) => {
            let msg = format!("the request body is not valid JSON: {e}");
            return refuse(400, "invalid_request", msg, json!({}));
        }
    };
    let model = v.get("model").and_then(Value::as_str).unwrap_or_default();
    if let Some(allowed) = rules.models {
        if !model_allowed(model, allowed) {
            return refuse(
                403,
                "model_not_allowed",
                format!(
                    "model `{model}` is not allowed for this sandbox; allowed: {}",
                    allowed.join(", ")
                ),
                json!({ "param": "model", "model": model, "allowed": allowed }),
            );
        }
    }
    if let Some((budget, window)) = rules.budget {
        if used >= budget {
            let per = window.map_or(String::new(), |w| format!(" per {w} s"));
            return refuse(
                429,
                "token_budget_exceeded",
                format!(
                    "this sandbox has used {used} of its {budget} tokens{per}; no more model \
                     requests until the budget renews"
                ),
                json!({ "budget": budget, "used": used, "window_s": window }),
            );
        }
    }
    let mut changed = false;
    if let Some(cap) = rules.max_tokens_cap {
        let mut present = false;
        for field in ["max_tokens", "max_completion_tokens"] {
            match v.get(field) {
                None | Some(Value::Null) => continue,
                Some(n) => match n.as_u64() {
                    Some(n) if n <= cap => present = true,
                    Some(_) => {
                        v[field] = cap.into();
                        present = true;
                        changed = true;
                    }
                    None => {
                        let msg = format!("{field} must be a non-negative integer");
                        return refuse(400, "invalid_request", msg, json!({ "param": field }));
                    }
                },
            }
        }
        if !present {
            v["max_tokens"] = cap.into();
            changed = true;
        }
    }
    // A stream reports its usage only when asked to: ask, so that the budget sees it.
    if rules.budget.is_some() && v.get("stream") == Some(&Value::Bool(true)) {
        let opts = v
            .as_object_mut()
            .expect("checked above")
            .entry("stream_options")
            .or_insert_with(|| json!({}));
        match opts {
            Value::Object(o) => {
                if o.get("include_usage") != Some(&Value::Bool(true)) {
                    o.insert("include_usage".into(), Value::Bool(true));
                    changed = true;
                }
            }
            _ => {
                let msg = "stream_options must be an object".to_string();
                return refuse(
                    400,
                    "invalid_request",
                    msg,
                    json!({ "param": "stream_options" }),
                );
            }
        }
    }
    Decision::Forward {
        body: changed.then(|| serde_json::to_vec(&v).expect("a Value serializes")),
    }
}

/// The name of the first watched secret whose value `body` contains: as it is, in a JSON
/// string however escaped (`\u0041`, `\/`), in base64 (standard or URL-safe, padded or not) or
/// percent-encoded. Empty values are ignored.
pub fn find_secret<'a>(body: &[u8], watched: &'a [(String, String)]) -> Option<&'a str> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    find_secret_in(body, parsed.as_ref(), watched)
}

/// [`find_secret`] with the body already parsed (`None`: not JSON).
pub fn find_secret_in<'a>(
    body: &[u8],
    parsed: Option<&Value>,
    watched: &'a [(String, String)],
) -> Option<&'a str> {
    let mut strings = Vec::new();
    if let Some(v) = parsed {
        collect_strings(v, &mut strings);
    }
    watched.iter().find_map(|(name, value)| {
        let value = value.as_bytes();
        if value.is_empty() {
            return None;
        }
        // memchr's memmem (Two-Way with a rare-byte prefilter) rather than a naive window
        // scan: on a 4 KiB prompt the naive scan of five forms was most of the guest's time.
        let hit = forms(value)
            .iter()
            .any(|f| memchr::memmem::find(body, f).is_some())
            || {
                let finder = memchr::memmem::Finder::new(value);
                strings.iter().any(|s| finder.find(s.as_bytes()).is_some())
            };
        hit.then_some(name.as_str())
    })
}

fn collect_strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k);
            collect_strings(x, out)
        }),
        _ => {}
    }
}

/// The forms a value is searched in.
fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // Unpadded: padding is only there when the value ends the encoded text, and the unpadded
    // form is a prefix of the padded one.
    vec![
        value.to_vec(),
        base64(value, STD),
        base64(value, URL),
        percent(value, b"0123456789ABCDEF"),
        percent(value, b"0123456789abcdef"),
    ]
}

/// Base64 without padding.
fn base64(data: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    out
}

/// Percent-encoding, RFC 3986 unreserved bytes kept.
fn percent(data: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 3);
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<String> {
        vec!["gpt-test-mini".into(), "local-*".into()]
    }

    fn forwarded(d: Decision) -> Value {
        match d {
            Decision::Forward { body: Some(b) } => serde_json::from_slice(&b).unwrap(),
            other => panic!("expected a rewritten forward, got {other:?}"),
        }
    }

    fn refused(d: Decision) -> (u16, Value) {
        match d {
            Decision::Refuse { status, error } => (status, error),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn models_outside_the_list_are_refused_naming_model_and_list() {
        let m = models();
        let rules = Rules {
            models: Some(&m),
            ..Rules::default()
        };
        let ok = br#"{"model":"gpt-test-mini","messages":[]}"#;
        assert_eq!(decide(ok, &rules, &[], 0), Decision::Forward { body: None });
        let ok = br#"{"model":"local-llama","messages":[]}"#;
        assert_eq!(decide(ok, &rules, &[], 0), Decision::Forward { body: None });
        for bad in [&br#"{"model":"gpt-big"}"#[..], br#"{"messages":[]}"#] {
            let (status, e) = refused(decide(bad, &rules, &[], 0));
            assert_eq!(status, 403);
            assert_eq!(e["error"]["code"], "model_not_allowed");
            assert_eq!(e["error"]["allowed"], json!(["gpt-test-mini", "local-*"]));
            assert!(e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("gpt-test-mini, local-*"));
        }
        let (_, e) = refused(decide(br#"{"model":"gpt-big"}"#, &rules, &[], 0));
        assert_eq!(e["error"]["model"], "gpt-big");
    }

    #[test]
    fn max_tokens_are_capped_or_added() {
        let rules = Rules {
            max_tokens_cap: Some(64),
            ..Rules::default()
        };
        let v = forwarded(decide(
            br#"{"model":"m","max_tokens":1000}"#,
            &rules,
            &[],
            0,
        ));
        assert_eq!(v["max_tokens"], 64);
        let v = forwarded(decide(br#"{"model":"m"}"#, &rules, &[], 0));
        assert_eq!(v["max_tokens"], 64);
        let v = forwarded(decide(
            br#"{"model":"m","max_tokens":null}"#,
            &rules,
            &[],
            0,
        ));
        assert_eq!(v["max_tokens"], 64);
        // max_completion_tokens alone: capped, max_tokens not added (newer models reject it)
        let v = forwarded(decide(
            br#"{"model":"m","max_completion_tokens":500}"#,
            &rules,
            &[],
            0,
        ));
        assert_eq!(v["max_completion_tokens"], 64);
        assert!(v.get("max_tokens").is_none());
        let v = forwarded(decide(
            br#"{"model":"m","max_completion_tokens":500,"max_tokens":10}"#,
            &rules,
            &[],
            0,
        ));
        assert_eq!(
            (
                v["max_completion_tokens"].as_u64(),
                v["max_tokens"].as_u64()
            ),
            (Some(64), Some(10))
        );
        // within the cap: the body is passed on as it was, byte for byte
        let d = decide(br#"{"model":"m", "max_tokens": 5}"#, &rules, &[], 0);
        assert_eq!(d, Decision::Forward { body: None });
        let (status, _) = refused(decide(br#"{"max_tokens":"lots"}"#, &rules, &[], 0));
        assert_eq!(status, 400);
        let (status, _) = refused(decide(br#"{"max_tokens":-1}"#, &rules, &[], 0));
        assert_eq!(status, 400);
    }

    #[test]
    fn the_budget_refuses_once_spent_and_streams_ask_for_usage() {
        let rules = Rules {
            budget: Some((100, Some(3600))),
            ..Rules::default()
        };
        let body = br#"{"model":"m","stream":true}"#;
        let v = forwarded(decide(body, &rules, &[], 99));
        assert_eq!(v["stream_options"]["include_usage"], true);
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(
            decide(body, &rules, &[], 0),
            Decision::Forward { body: None }
        );
        let (status, e) = refused(decide(body, &rules, &[], 100));
        assert_eq!(status, 429);
        assert_eq!(e["error"]["code"], "token_budget_exceeded");
        assert_eq!(
            (e["error"]["budget"].as_u64(), e["error"]["used"].as_u64()),
            (Some(100), Some(100))
        );
        assert_eq!(e["error"]["window_s"], 3600);
        let bad = br#"{"model":"m","stream":true,"stream_options":3}"#;
        assert_eq!(refused(decide(bad, &rules, &[], 0)).0, 400);
        // no budget: the stream is left alone
        let plain = Rules::default();
        let body = br#"{"model":"m","stream":true}"#;
        assert_eq!(
            decide(body, &plain, &[], 0),
            Decision::Forward { body: None }
        );
    }

    #[test]
    fn watched_secrets_are_found_in_every_form_and_never_echoed() {
        let value = "db-pass/w+rd=42";
        let watched = vec![
            ("OTHER".to_string(), String::new()),
            ("DB".to_string(), value.to_string()),
        ];
        let b64 = base64(
            value.as_bytes(),
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        );
        assert_eq!(b64, b"ZGItcGFzcy93K3JkPTQy");
        let escaped = value
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect::<String>();
        for prompt in [
            format!("my password is {value}, ok?"),
            format!("as base64: {}", String::from_utf8(b64.clone()).unwrap()),
            "url: db-pass%2Fw%2Brd%3D42".to_string(),
            "url: db-pass%2fw%2brd%3d42".to_string(),
        ] {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
            let body = serde_json::to_vec(&body).unwrap();
            assert_eq!(find_secret(&body, &watched), Some("DB"), "{prompt}");
            let (status, e) = refused(decide(&body, &Rules::default(), &watched, 0));
            assert_eq!(status, 403);
            assert_eq!(e["error"]["secret"], "DB");
            assert!(!e.to_string().contains(value));
        }
        // escaped inside a JSON string, in a key, in a body that is not even JSON
        let body = format!(r#"{{"messages":[{{"content":"{escaped}"}}]}}"#);
        assert_eq!(find_secret(body.as_bytes(), &watched), Some("DB"));
        let body = format!(r#"{{"{value}": 1}}"#);
        assert_eq!(find_secret(body.as_bytes(), &watched), Some("DB"));
        assert_eq!(
            find_secret(format!("x{value}").as_bytes(), &watched),
            Some("DB")
        );
        // a near miss, and the empty value never matches
        let body = br#"{"messages":[{"content":"db-pass/w+rd=4"}]}"#;
        assert_eq!(find_secret(body, &watched), None);
        assert_eq!(
            decide(body, &Rules::default(), &watched, 0),
            Decision::Forward { body: None }
        );
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        for bad in [&b"not json"[..], b"[1,2]", b""] {
            let (status, e) = refused(decide(bad, &Rules::default(), &[], 0));
            assert_eq!(status, 400);
            assert_eq!(e["error"]["code"], "invalid_request");
        }
    }

    #[test]
    fn percent_and_base64_match_the_usual_encoders() {
        let url = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        assert_eq!(base64(b"", url), b"");
        assert_eq!(base64(b"f", url), b"Zg");
        assert_eq!(base64(b"fo", url), b"Zm8");
        assert_eq!(base64(b"foo", url), b"Zm9v");
        assert_eq!(base64(&[0xfb, 0xff], url), b"-_8");
        assert_eq!(percent(b"a b/~", b"0123456789ABCDEF"), b"a%20b%2F~");
    }
}

//! Handler capabilities end to end: the `llm-guard` example policing an OpenAI-style chat API
//! (model allowlist, max_tokens cap, secrets in prompts, a per-sandbox token budget counted
//! from JSON and streamed answers, the API key injected by reference), the echo guard on the
//! values egret filled in (headers, bodies, values cut across chunks, encoded forms, the
//! opt-out), and the limits that fail closed (request and response buffers, fetch grants,
//! fetch call bounds, the non-public address rule for fetch).
use egret_e2e::*;
use serde_json::json;
use std::time::Duration;

const LLM_KEY: &str = "sk-test-4f9a1c2e8b7d6a50";
/// A secret the agent may know but must not send to the model (bytes that percent-encode).
const DB_PASSWORD: &str = "db-pw/Qx7+zr=9k2m";
const SSE_DELAY_MS: u64 = 100;
const WAIT: Duration = Duration::from_secs(10);

/// A policy: no default egress, each of `hosts` pinned to the upstream, `tables` (secrets and
/// handlers) as written, and a route for each (host, handler).
fn policy(hosts: &[&str], tables: &str, routes: &[(&str, &str)]) -> String {
    let mut toml = String::from("internet = false\n\n[resolve]\n");
    for host in hosts {
        toml.push_str(&format!("\"{host}\" = \"10.200.0.2\"\n"));
    }
    toml.push_str(tables);
    for (host, handler) in routes {
        toml.push_str(&format!(
            "\n[[routes]]\nhost = \"{host}\"\nhandler = \"{handler}\"\n"
        ));
    }
    toml
}

/// egret for the sandbox `id` with `policy`, its secrets from `env`.
fn start_egret(topo: &Topology, id: &str, policy: &str, env: &[(&str, &str)]) -> Egret {
    let p = write(topo, &format!("policy-{id}.toml"), policy);
    Egret::start_with_env(topo, id, &["--policy", &p], env).expect("egret starts")
}

/// The chat API behind egret, intercepted, with `llm-guard` on `llm.test`; its budget is
/// `budget` tokens per `window_s` seconds.
fn llm_env(sandbox: &str, budget: u64, window_s: u64) -> Intercepted {
    let topo = Topology::new(SandboxNet::LoOnly);
    let dir = topo.tmp.path("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let pki = upstream_pki(&dir, "up", &["llm.test"]);
    let delay = SSE_DELAY_MS.to_string();
    let up = Upstream::start_with(
        &topo,
        "up",
        &[
            "--https",
            "[::]:443",
            "--cert",
            pki.cert.to_str().unwrap(),
            "--key",
            pki.key.to_str().unwrap(),
            "--llm-api-key",
            LLM_KEY,
            "--sse-delay-ms",
            &delay,
        ],
    );
    let tables = format!(
        r#"
[secrets]
LLM_KEY = {{ env = "LLM_KEY" }}
DB_PASSWORD = {{ env = "DB_PASSWORD" }}

[handlers.llm]
module = "{module}"
secrets = ["LLM_KEY", "DB_PASSWORD"]
reveal = ["DB_PASSWORD"]
body = {{ max_bytes = 65536 }}
response = {{ mode = "observe" }}

[handlers.llm.params]
models = ["gpt-test-mini", "local-*"]
max_tokens_cap = 64
budget_tokens = {budget}
budget_window_s = {window_s}
watch_secrets = ["DB_PASSWORD"]
api_key_secret = "LLM_KEY"
"#,
        module = handler_module("llm-guard"),
    );
    let policy = policy(&["llm.test"], &tables, &[("llm.test", "llm")]);
    let env = [("LLM_KEY", LLM_KEY), ("DB_PASSWORD", DB_PASSWORD)];
    Intercepted::start(topo, up, sandbox, &policy, &pki.ca, &[], &env)
}

/// POST `body` as JSON to `https://llm.test{path}`; (status, body).
fn post(env: &Intercepted, path: &str, body: &serde_json::Value) -> (u16, String) {
    let body = body.to_string();
    let url = format!("https://llm.test{path}");
    let (code, out, err) = env.curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
        &url,
    ]);
    assert_eq!(code, 0, "{err}\n{}", env.egret.logs());
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// A chat request for `model` with one user message.
fn chat(model: &str, prompt: &str) -> serde_json::Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

/// The test server's `LLM ...` access-log lines (one per request it answered).
fn llm_lines(up: &Upstream) -> Vec<String> {
    let log = up.access_log();
    log.lines()
        .filter(|l| l.contains(" LLM model="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn llm_guard_allows_listed_models_caps_tokens_and_injects_the_key() {
    let env = llm_env("llm-models", 1_000_000, 3600);
    // An allowed model: the key is injected (the server demands it) and max_tokens capped.
    let mut req = chat("gpt-test-mini", "one two three");
    req["max_tokens"] = json!(1000);
    let (status, body) = post(&env, "/v1/chat/completions", &req);
    assert_eq!(status, 200, "{body}\n{}", env.egret.logs());
    let v = json(&body);
    assert_eq!(v["choices"][0]["message"]["content"], "one two three");
    assert_eq!(v["usage"]["completion_tokens"], 16);
    let lines = llm_lines(&env.up);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("model=gpt-test-mini") && lines[0].contains(" max_tokens=64 "),
        "{lines:?}"
    );
    // No limit at all: the cap is added. Within the cap: passed on as asked.
    // max_completion_tokens above the cap: capped too (the server logs it as max_tokens).
    let mut small = chat("local-llama", "hi");
    small["max_tokens"] = json!(5);
    let mut completion = chat("gpt-test-mini", "hi");
    completion["max_completion_tokens"] = json!(500);
    for (req, want) in [
        (chat("gpt-test-mini", "hi"), " max_tokens=64 "),
        (small, " max_tokens=5 "),
        (completion, " max_tokens=64 "),
    ] {
        let (status, body) = post(&env, "/v1/chat/completions", &req);
        assert_eq!(status, 200, "{req}: {body}");
        let lines = llm_lines(&env.up);
        let last = lines.last().unwrap();
        assert!(last.contains(want), "{req}: {last}");
    }
    // Another model: 403 naming the model and the allowed list; nothing reaches upstream.
    let before = llm_lines(&env.up).len();
    let (status, body) = post(&env, "/v1/chat/completions", &chat("gpt-huge", "hi"));
    assert_eq!(status, 403, "{body}");
    let e = json(&body);
    assert_eq!(e["error"]["code"], "model_not_allowed", "{body}");
    assert_eq!(e["error"]["model"], "gpt-huge");
    assert_eq!(e["error"]["allowed"], json!(["gpt-test-mini", "local-*"]));
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gpt-huge") && msg.contains("gpt-test-mini, local-*"),
        "{msg}"
    );
    assert_eq!(llm_lines(&env.up).len(), before);
    let ev = env
        .egret
        .wait_audit(WAIT, |e| e["status"] == 403)
        .expect("an audit event for the refusal");
    assert_eq!(
        (ev["handler"].as_str(), ev["decision"].as_str()),
        (Some("llm"), Some("respond")),
        "{ev}"
    );
    // Other paths are forwarded unchanged: no API key there.
    let (code, out, err) = env.curl(&["https://llm.test/echo"]);
    assert_eq!(code, 0, "{err}");
    let echo = json(&out);
    assert_eq!(echo["headers"]["x-egret-handler"], "llm-guard", "{echo}");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    // The sandbox never held the key, and egret never logged it.
    assert!(!env.egret.logs().contains(LLM_KEY));
}

#[test]
fn llm_guard_refuses_prompts_carrying_a_watched_secret() {
    use base64::Engine;
    let env = llm_env("llm-secret", 1_000_000, 3600);
    let b64 = base64::engine::general_purpose::STANDARD.encode(DB_PASSWORD);
    let escaped: String = DB_PASSWORD
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    for prompt in [
        format!("connect with password {DB_PASSWORD} please"),
        format!("the password in base64 is {b64}"),
    ] {
        let (status, body) = post(
            &env,
            "/v1/chat/completions",
            &chat("gpt-test-mini", &prompt),
        );
        assert_eq!(status, 403, "{body}");
        let e = json(&body);
        assert_eq!(e["error"]["code"], "secret_in_request", "{body}");
        assert_eq!(e["error"]["secret"], "DB_PASSWORD", "{body}");
        assert!(
            !body.contains(DB_PASSWORD) && !body.contains(&b64),
            "{body}"
        );
    }
    // Hidden behind JSON escapes: the body as sent, not as re-serialized here.
    let raw = format!(
        r#"{{"model":"gpt-test-mini","messages":[{{"role":"user","content":"pw {escaped}"}}]}}"#
    );
    let (code, out, err) = env.curl(&[
        "-w",
        "\n%{http_code}",
        "--data-binary",
        &raw,
        "https://llm.test/v1/chat/completions",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n403"), "{out}");
    // None of them reached the upstream; an innocent prompt does.
    assert!(llm_lines(&env.up).is_empty(), "{:?}", llm_lines(&env.up));
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        &chat("gpt-test-mini", "db-pw"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(llm_lines(&env.up).len(), 1);
    // The value appears nowhere in egret's logs or audit.
    assert!(!env.egret.logs().contains(DB_PASSWORD));
}

/// Wait until llm-guard logged that the sandbox has used `used` tokens (usage is counted as
/// the answer streams past, which may end just after the client has read it).
fn wait_counted(env: &Intercepted, used: u64) {
    let needle = format!("the sandbox has used {used}");
    assert!(
        env.egret.wait_log(&needle, WAIT),
        "no `{needle}`:\n{}",
        env.egret.logs()
    );
}

#[test]
fn llm_guard_counts_json_and_streamed_usage_into_a_per_sandbox_budget() {
    // "one two three four": 4 prompt tokens, 16 completion tokens (the server's rule).
    let env = llm_env("llm-budget-a", 40, 3600);
    let (status, body) = post(
        &env,
        "/v1/chat/completions",
        &chat("gpt-test-mini", "one two three four"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["usage"]["total_tokens"], 20);
    wait_counted(&env, 20);

    // A stream: events still arrive one by one, and its usage chunk (asked for by the guard)
    // is counted.
    let mut req = chat("gpt-test-mini", "one two three four");
    req["stream"] = json!(true);
    let (ok, out, err) = env.python(
        include_str!("../../clients/llm_stream.py"),
        &["https://llm.test/v1/chat/completions", &req.to_string()],
    );
    assert!(ok, "{out}\n{err}\n{}", env.egret.logs());
    let events: Vec<(f64, &str)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("EVENT "))
        .map(|l| {
            let (t, data) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), data)
        })
        .collect();
    // role, four content pieces, finish, usage, [DONE]
    assert_eq!(events.len(), 8, "{out}");
    assert_eq!(events[7].1, "[DONE]");
    let usage = json(events[6].1);
    assert_eq!(usage["usage"]["total_tokens"], 20, "{out}");
    assert_eq!(json(events[0].1)["usage"], serde_json::Value::Null, "{out}");
    let content: String = events[..6]
        .iter()
        .filter_map(|(_, d)| {
            json(d)["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "one two three four");
    // A sanity check, not a measurement: the server pauses SSE_DELAY_MS between events, so
    // unbuffered delivery spreads them out; a buffered stream would arrive in one lump.
    let spread = events[7].0 - events[0].0;
    eprintln!(
        "SSE through llm-guard: {} events over {spread:.0} ms",
        events.len()
    );
    assert!(
        spread >= (events.len() - 1) as f64 * SSE_DELAY_MS as f64 / 2.0,
        "the events arrived together ({spread:.0} ms): {out}"
    );
    let last = llm_lines(&env.up).pop().unwrap();
    assert!(
        last.contains("stream=true") && last.contains("include_usage=true"),
        "{last}"
    );
    wait_counted(&env, 40);

    // Spent: 429 with the budget and what was used, checked before anything goes upstream.
    let before = llm_lines(&env.up).len();
    let (status, body) = post(&env, "/v1/chat/completions", &chat("gpt-test-mini", "more"));
    assert_eq!(status, 429, "{body}");
    let e = json(&body);
    assert_eq!(e["error"]["code"], "token_budget_exceeded", "{body}");
    assert_eq!(
        (e["error"]["budget"].as_u64(), e["error"]["used"].as_u64()),
        (Some(40), Some(40)),
        "{body}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("40 of its 40 tokens"),
        "{body}"
    );
    assert_eq!(llm_lines(&env.up).len(), before);

    // Another sandbox has its own budget; a short window (5 s) renews it.
    let b = llm_env("llm-budget-b", 20, 5);
    let (status, body) = post(
        &b,
        "/v1/chat/completions",
        &chat("gpt-test-mini", "one two three four"),
    );
    assert_eq!(
        status, 200,
        "sandbox b is not charged for a's tokens: {body}"
    );
    wait_counted(&b, 20);
    let (status, body) = post(&b, "/v1/chat/completions", &chat("gpt-test-mini", "x"));
    assert_eq!(status, 429, "{body}");
    assert!(
        wait_until(Duration::from_secs(15), || {
            std::thread::sleep(Duration::from_millis(250));
            post(&b, "/v1/chat/completions", &chat("gpt-test-mini", "x")).0 == 200
        }),
        "the 5 s budget window never renewed:\n{}",
        b.egret.logs()
    );
    // and sandbox a is still spent
    let (status, _) = post(&env, "/v1/chat/completions", &chat("gpt-test-mini", "x"));
    assert_eq!(status, 429);
}

// ---------------------------------------------------------------------------------------------
// The echo guard

/// 20 bytes, of which `/`, `+` and `=` percent-encode; base64 of it ends in one `=`.
const ECHO_TOKEN: &str = "echo-tok/Zp4+q9=Lm2w";

/// An `HTTP/1.1` answer from `curl -i`: status, headers (lower-case names), body.
fn split_response(out: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The body matches its content-length: masking kept the framing.
fn assert_framed(headers: &[(String, String)], body: &str) {
    assert_eq!(
        header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()),
        Some(body.len()),
        "{headers:?}\n{body}"
    );
}

#[test]
fn echo_guard_masks_filled_secrets_in_every_form_and_only_there() {
    use base64::Engine;
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let inject = handler_module("inject-header");
    let tables = format!(
        r#"
[secrets]
ECHO_TOKEN = {{ env = "ECHO_TOKEN" }}

[handlers.guarded]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "ECHO_TOKEN" }}
secrets = ["ECHO_TOKEN"]

# the documented opt-out
[handlers.open]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "ECHO_TOKEN" }}
secrets = ["ECHO_TOKEN"]
echo_guard = false

# a handler that fills in nothing
[handlers.plain]
module = "{get_only}"
"#,
        get_only = handler_module("get-only"),
    );
    let hosts = ["guarded.test", "open.test", "plain.test"];
    let routes = hosts.map(|h| (h, h.trim_end_matches(".test")));
    let policy = policy(&hosts, &tables, &routes);
    let egret = start_egret(&topo, "echo", &policy, &[("ECHO_TOKEN", ECHO_TOKEN)]);
    let stars = |s: &str| "*".repeat(s.len());

    // /echo reflects the header in the JSON body and in a response header.
    let (code, out, err) = topo.curl(&["-i", "http://guarded.test/echo"]);
    assert_eq!(code, 0, "{err}");
    let (status, headers, body) = split_response(&out);
    assert_eq!(status, 200, "{out}");
    assert_injected_and_masked(&json(&body), "x-auth-token", ECHO_TOKEN);
    assert_eq!(
        header(&headers, "x-echoed-token"),
        Some(stars(ECHO_TOKEN).as_str()),
        "{out}"
    );
    assert_framed(&headers, &body);
    let ev = egret
        .wait_audit(WAIT, |e| {
            e["host"] == "guarded.test" && e["path"] == "/echo"
        })
        .expect("audit event");
    assert_eq!(ev["masked"], 2, "one in the body, one in a header: {ev}");

    // Reflected in a body written in two pieces that cut the value, raw and encoded.
    let b64 = base64::engine::general_purpose::STANDARD.encode(ECHO_TOKEN);
    let pct = "echo-tok%2FZp4%2Bq9%3DLm2w";
    for (enc, form) in [
        ("raw", ECHO_TOKEN),
        ("base64", b64.as_str()),
        ("percent", pct),
    ] {
        let url = format!("http://guarded.test/echo-split?header=x-auth-token&enc={enc}");
        let (code, out, err) = topo.curl(&["-i", &url]);
        assert_eq!(code, 0, "{err}");
        let (status, headers, body) = split_response(&out);
        assert_eq!(status, 200, "{out}");
        assert_eq!(body, format!("reflected={};", stars(form)), "{enc}: {out}");
        assert_framed(&headers, &body);
    }
    let events = |host: &str| -> Vec<serde_json::Value> {
        egret
            .audit_events()
            .into_iter()
            .filter(|e| {
                e["host"] == host && e["path"].as_str().unwrap_or("").starts_with("/echo-split")
            })
            .collect()
    };
    assert!(
        wait_until(WAIT, || events("guarded.test").len() == 3),
        "{:?}",
        egret.audit_events()
    );
    for ev in events("guarded.test") {
        assert_eq!(ev["masked"], 1, "{ev}");
    }

    // echo_guard = false: the value comes back as it is (the binding opted out).
    let (code, out, err) = topo.curl(&["-i", "http://open.test/echo"]);
    assert_eq!(code, 0, "{err}");
    let (_, headers, body) = split_response(&out);
    assert_eq!(json(&body)["headers"]["x-auth-token"], ECHO_TOKEN);
    assert_eq!(header(&headers, "x-echoed-token"), Some(ECHO_TOKEN));
    let ev = egret
        .wait_audit(WAIT, |e| e["host"] == "open.test")
        .expect("audit event");
    assert!(ev["masked"].is_null(), "{ev}");

    // No secret filled in: untouched, even when the sandbox sends the same bytes itself.
    let auth = format!("x-auth-token: {ECHO_TOKEN}");
    let url = "http://plain.test/echo-split?header=x-auth-token&enc=raw";
    let (code, out, err) = topo.curl(&["-i", "-H", &auth, url]);
    assert_eq!(code, 0, "{err}");
    let (status, headers, body) = split_response(&out);
    assert_eq!(status, 200, "{out}");
    assert_eq!(body, format!("reflected={ECHO_TOKEN};"));
    assert_framed(&headers, &body);
    assert!(wait_until(WAIT, || events("plain.test").len() == 1));
    assert!(events("plain.test")[0]["masked"].is_null());
    drop(up);
}

// ---------------------------------------------------------------------------------------------
// Limits and bad input: fail closed, naming the handler and the reason

/// `out` (from `curl -i`) is egret's refusal of `path` for a limit of `handler`: the client got
/// the status with a body naming the handler and the policy key, and the audit event has the
/// status, the decision, the handler and the key.
fn assert_failed_closed(
    egret: &Egret,
    out: &str,
    path: &str,
    (status, decision): (u16, &str),
    handler: &str,
    key: &str,
) {
    let (got, _, body) = split_response(out);
    assert_eq!(got, status, "{out}");
    let named = format!("handler {handler}");
    assert!(body.contains(&named) && body.contains(key), "{body}");
    let ev = egret
        .wait_audit(WAIT, |e| e["path"] == path)
        .expect("audit event");
    assert_eq!(ev["status"].as_u64(), Some(u64::from(status)), "{ev}");
    assert_eq!(
        (ev["decision"].as_str(), ev["handler"].as_str()),
        (Some(decision), Some(handler)),
        "{ev}"
    );
    assert!(ev["error"].as_str().unwrap().contains(key), "{ev}");
}

#[test]
fn oversized_request_and_response_bodies_fail_closed() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let module = handler_module("count-calls");
    let tables = format!(
        r#"
[handlers.small-body]
module = "{module}"
body = {{ max_bytes = 1024 }}

[handlers.small-response]
module = "{module}"
response = {{ mode = "buffer", max_bytes = 1000 }}
"#
    );
    let routes = [
        ("small.test", "small-body"),
        ("buffered.test", "small-response"),
    ];
    let policy = policy(&routes.map(|r| r.0), &tables, &routes);
    let egret = start_egret(&topo, "limits", &policy, &[]);
    let body_file = topo.tmp.path("body.bin");

    // Within the bound: buffered and passed on.
    std::fs::write(&body_file, vec![b'a'; 1000]).unwrap();
    let data = format!("@{}", body_file.display());
    let (code, out, err) = topo.curl(&["--data-binary", &data, "http://small.test/upload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{} 1000", sha256_hex(&[b'a'; 1000])));
    // Over it: 413, nothing forwarded.
    std::fs::write(&body_file, vec![b'b'; 4096]).unwrap();
    let (code, out, err) = topo.curl(&["-i", "--data-binary", &data, "http://small.test/too-big"]);
    assert_eq!(code, 0, "{err}");
    assert_failed_closed(
        &egret,
        &out,
        "/too-big",
        (413, "deny"),
        "small-body",
        "body.max_bytes",
    );
    assert!(!up.access_log().contains("/too-big"));
    // A response within response.max_bytes passes; a larger one is 502.
    let (code, out, err) = topo.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        "http://buffered.test/bytes/1000",
    ]);
    assert_eq!((code, out.as_str()), (0, "200 1000"), "{err}");
    let (code, out, err) = topo.curl(&["-i", "http://buffered.test/bytes/5000"]);
    assert_eq!(code, 0, "{err}");
    let want = (502, "error");
    assert_failed_closed(
        &egret,
        &out,
        "/bytes/5000",
        want,
        "small-response",
        "response.max_bytes",
    );
}

#[test]
fn fetch_is_bounded_by_its_grant_its_call_limit_and_the_address_rules() {
    let topo = Topology::new(SandboxNet::LoOnly);
    // private.test resolves, for egret only, to the upstream's private address; nobody pins it.
    let _hosts = NetnsHosts::write(&topo.egr, "10.200.0.2 private.test\n");
    let up = Upstream::start(&topo, "up", None);
    let module = handler_module("fetch-loop");
    let cases = [
        ("loop", "http://svc.test/echo", "svc.test"),
        ("other", "http://other.test/echo", "svc.test"),
        ("private", "http://private.test/echo", "private.test"),
    ];
    let mut tables = String::new();
    for (name, url, granted) in cases {
        tables.push_str(&format!(
            r#"
[handlers.fl-{name}]
module = "{module}"
timeout_ms = 1000
params = {{ url = "{url}", times = 10 }}
fetch_hosts = ["{granted}"]
fetch = {{ max_calls = 3 }}
"#
        ));
    }
    let hosts = cases.map(|c| format!("{}.fl.test", c.0));
    let handlers = cases.map(|c| format!("fl-{}", c.0));
    let routes: Vec<(&str, &str)> = hosts
        .iter()
        .zip(&handlers)
        .map(|(h, n)| (h.as_str(), n.as_str()))
        .collect();
    let mut pinned: Vec<&str> = vec!["svc.test", "other.test"];
    pinned.extend(hosts.iter().map(String::as_str));
    let policy = policy(&pinned, &tables, &routes);
    let egret = start_egret(&topo, "fetch", &policy, &[]);
    let run = |name: &str| {
        let (code, out, err) = topo.curl(&["-i", &format!("http://{name}.fl.test/go")]);
        assert_eq!(code, 0, "{err}");
        let (status, _, body) = split_response(&out);
        assert_eq!(status, 502, "{name}: {out}\n{}", egret.logs());
        let v = json(&body);
        (
            v["ok"].as_u64().unwrap(),
            v["error"].as_str().unwrap().to_owned(),
        )
    };
    let fetches = |host: &str| -> Vec<serde_json::Value> {
        egret
            .audit_events()
            .into_iter()
            .filter(|e| e["proto"] == "handler-fetch" && e["host"] == host)
            .collect()
    };

    // The loop stops at fetch.max_calls.
    let (ok, error) = run("loop");
    assert_eq!(ok, 3, "{error}");
    assert!(
        error.contains("fetch limit reached")
            && error.contains("`fl-loop`")
            && error.contains("3 fetch calls"),
        "{error}"
    );
    assert_eq!(
        up.access_log().matches("GET /echo host=svc.test").count(),
        3
    );
    assert!(wait_until(WAIT, || fetches("svc.test").len() == 3));
    assert!(fetches("svc.test")
        .iter()
        .all(|e| e["decision"] == "forward" && e["handler"] == "fl-loop"));

    // A host not in fetch_hosts: refused, naming the grant; nothing sent.
    let (ok, error) = run("other");
    assert_eq!(ok, 0);
    assert!(
        error.contains("other.test:80 is not granted to handler fl-other")
            && error.contains("fetch_hosts: svc.test"),
        "{error}"
    );
    assert!(!up.access_log().contains("host=other.test"));
    let ev = egret
        .wait_audit(WAIT, |e| {
            e["proto"] == "handler-fetch" && e["host"] == "other.test"
        })
        .expect("audit");
    assert_eq!(ev["decision"], "deny", "{ev}");
    assert!(
        ev["error"].as_str().unwrap().contains("fetch_hosts"),
        "{ev}"
    );

    // Granted, but the name resolves to a private address nobody allowed: refused like any
    // upstream connection of the sandbox.
    let (ok, error) = run("private");
    assert_eq!(ok, 0);
    for needle in [
        "private.test",
        "10.200.0.2",
        "private (RFC 1918)",
        "allowed_upstream_cidrs",
    ] {
        assert!(error.contains(needle), "{needle}: {error}");
    }
    assert!(!up.access_log().contains("host=private.test"));
    let ev = egret
        .wait_audit(WAIT, |e| {
            e["proto"] == "handler-fetch" && e["host"] == "private.test"
        })
        .expect("audit");
    assert_eq!(ev["decision"], "deny", "{ev}");
    assert!(ev["error"].as_str().unwrap().contains("10.200.0.2"), "{ev}");
}

/// `instances = "reuse"` through the running egret: the binding's requests run on one
/// instance (the guest's own counter goes 1, 2, 3), the default binding of the same module
/// always on a fresh one, and a policy swap starts the reusing binding over.
#[test]
fn a_reusing_binding_keeps_its_instance_until_the_next_swap() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let _up = Upstream::start(&topo, "up", None);
    let module = handler_module("count-calls");
    let tables = format!(
        r#"
[handlers.fresh]
module = "{module}"

[handlers.reused]
module = "{module}"
instances = "reuse"
"#
    );
    let routes = [("fresh.test", "fresh"), ("reused.test", "reused")];
    let policy = policy(&routes.map(|r| r.0), &tables, &routes);
    let file = write(&topo, "policy-reuse.toml", &policy);
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let _egret = Egret::start(
        &topo,
        "reuse",
        &["--policy", &file, "--admin-socket", &sock],
    )
    .expect("egret starts");
    let calls = |host: &str| -> String {
        let (code, out, err) = topo.curl(&[&format!("http://{host}/echo")]);
        assert_eq!(code, 0, "{err}");
        json(&out)["headers"]["x-instance-calls"]
            .as_str()
            .unwrap_or_else(|| panic!("no x-instance-calls: {out}"))
            .to_owned()
    };
    for want in ["1", "2", "3"] {
        assert_eq!(calls("reused.test"), want);
        assert_eq!(calls("fresh.test"), "1");
    }
    let (code, out, err) = ctl(&sock, &["policy", "set", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(calls("reused.test"), "1", "the swap kept the old instance");
    assert_eq!(calls("reused.test"), "2");
}

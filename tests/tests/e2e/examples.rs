//! The example handlers that talk to real services (`handlers-wasm/`): `oauth-client-credentials`
//! against the test server's OAuth 2.0 token endpoint and protected resource, `sigv4-s3` against
//! its S3 store that verifies AWS Signature V4. curl in the sandbox, the upstream's access log
//! and egret's audit events as the proof; the sandbox never sees a client secret, an access
//! token or a signing key.
use egret_e2e::*;
use std::time::{Duration, Instant};

/// The OAuth client's secret: `:`, `+`, `/`, space, `&`, `=` and `%` must all be encoded right
/// (HTTP Basic per RFC 6749 §2.3.1, and a form field) for the token endpoint to accept it.
const CLIENT_SECRET: &str = "cs-7Hq2:p+/w x&y=%41";
/// A wrong secret for the same client.
const WRONG_CLIENT_SECRET: &str = "cs-wrong-5c1e9a";
/// The S3 secret access key, and a wrong one.
const S3_SECRET: &str = "s3key-Zq81/4xY+kP0wJalrXUtnFEMI9";
const S3_WRONG: &str = "s3key-WRONG-0000aaaabbbbccccdddd";

/// Everything the sandbox received (curl's stdout and stderr, headers included), to search for
/// values it must never see.
#[derive(Default)]
struct Seen(String);

/// A curl answer: status, headers and body as text.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Seen {
    /// `curl -i ARGS` in the sandbox (trusting egret's CA); fails the test when curl fails.
    fn curl(&mut self, ix: &Intercepted, args: &[&str]) -> Answer {
        let mut a = vec!["-i"];
        a.extend_from_slice(args);
        let (code, out, err) = ix.curl(&a);
        self.0.push_str(&out);
        self.0.push_str(&err);
        assert_eq!(code, 0, "curl {args:?}: {err}\n{}", ix.egret.logs());
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {out}"));
        Answer {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    /// `curl -D - -o FILE URL` in the sandbox: the body goes to `file`; returns the status.
    fn download(&mut self, ix: &Intercepted, url: &str, file: &std::path::Path) -> u16 {
        let (code, out, err) = ix.curl(&["-D", "-", "-o", file.to_str().unwrap(), url]);
        self.0.push_str(&out);
        self.0.push_str(&err);
        self.0.push_str(&String::from_utf8_lossy(
            &std::fs::read(file).unwrap_or_default(),
        ));
        assert_eq!(code, 0, "curl {url}: {err}\n{}", ix.egret.logs());
        out.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {out}"))
    }

    /// Fails the test when any of `values` (or its percent-encoded form) is in what the sandbox
    /// received.
    fn assert_never_saw(&self, values: &[String]) {
        for v in values {
            for form in [v.clone(), percent_encode(v)] {
                assert!(
                    !self.0.contains(&form),
                    "the sandbox received {form:?}:\n{}",
                    self.0
                );
            }
        }
    }
}

/// Every byte but the RFC 3986 unreserved ones as `%XX` (how egret writes a secret into a form).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Fails the test when any of `values` is in egret's output (audit events and logs) or in the
/// upstream's access log.
fn assert_not_written(ix: &Intercepted, values: &[String]) {
    let egret = ix.egret.logs();
    let access = ix.up.access_log();
    for v in values {
        assert!(!egret.contains(v.as_str()), "egret wrote {v:?}:\n{egret}");
        assert!(!access.contains(v.as_str()), "the access log has {v:?}");
    }
}

/// How many access-log lines contain `needle`.
fn count(up: &Upstream, needle: &str) -> usize {
    up.access_log().matches(needle).count()
}

/// The tokens the test server issued so far (`--oauth-token-file`), in order.
fn issued_tokens(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, t)| t.to_string()))
        .collect()
}

/// The test server with TLS for `names`, an OAuth client `c1` with [`CLIENT_SECRET`] whose
/// tokens live `expires_in` seconds (their values also written to the returned file), and
/// S3 key `AKIDEXAMPLE` with [`S3_SECRET`].
fn services(topo: &Topology, names: &[&str], expires_in: &str) -> (Upstream, UpstreamPki, String) {
    let tokens = topo.tmp.path("issued-tokens.txt");
    let tokens = tokens.to_str().unwrap().to_string();
    let client = format!("c1:{CLIENT_SECRET}");
    let s3_key = format!("AKIDEXAMPLE:{S3_SECRET}");
    let (up, pki) = Upstream::start_tls_with(
        topo,
        names,
        &[
            "--oauth-client",
            &client,
            "--oauth-expires-in",
            expires_in,
            "--oauth-token-file",
            &tokens,
            "--s3-key",
            &s3_key,
            "--s3-region",
            "us-east-1",
        ],
    );
    (up, pki, tokens)
}

/// `[resolve]` entries pinning `hosts` to the upstream.
fn resolve(hosts: &[&str]) -> String {
    let mut s = String::from("[resolve]\n");
    for h in hosts {
        s.push_str(&format!("\"{h}\" = \"10.200.0.2\"\n"));
    }
    s
}

/// A handler `name` running `oauth-client-credentials` for `host`, with the client secret from
/// `secret`, the token minted as `token`, and `params` added to the required ones.
fn oauth_binding(name: &str, host: &str, secret: &str, token: &str, params: &str) -> String {
    format!(
        r#"
[handlers.{name}]
module = "{module}"
timeout_ms = 2000
secrets = ["{secret}"]
mint_secrets = ["{token}"]
fetch_hosts = ["auth.test"]
response = {{ mode = "head" }}
params = {{ client_id = "c1", client_secret = "{secret}", token_secret = "{token}", {params} }}

[[routes]]
host = "{host}"
handler = "{name}"
"#,
        module = handler_module("oauth-client-credentials"),
    )
}

/// The audit events of the handler's own fetches (`proto: handler-fetch`) by `handler`.
fn fetch_events(egret: &Egret, handler: &str) -> Vec<serde_json::Value> {
    egret
        .audit_events()
        .into_iter()
        .filter(|e| e["proto"] == "handler-fetch" && e["handler"] == handler)
        .collect()
}

/// `oauth-client-credentials` with HTTP Basic client authentication, tokens that live 2 s: one
/// exchange serves every request while the token is kept (its lifetime minus the margin: 1 s),
/// a request after it expired exchanges again before it is sent (so the resource never sees an
/// expired token), the token reaches the upstream and the echo guard masks it, and neither the
/// client secret nor any token reaches the sandbox or egret's output. Each exchange is one
/// `handler-fetch` audit event.
#[test]
fn oauth_exchanges_once_per_validity_period_and_again_after_expiry() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki, tokens) = services(&topo, &["auth.test", "api.test"], "2");
    let policy = format!(
        "internet = false\n{}\n[secrets]\nCLIENT_SECRET = {{ env = \"OAUTH_CLIENT_SECRET\" }}\n{}",
        resolve(&["auth.test", "api.test"]),
        oauth_binding(
            "oauth",
            "api.test",
            "CLIENT_SECRET",
            "OAUTH_ACCESS_TOKEN",
            r#"token_url = "https://auth.test/oauth/token", scope = "read write""#,
        ),
    );
    let env = [("OAUTH_CLIENT_SECRET", CLIENT_SECRET)];
    let ix = Intercepted::start(topo, up, "oauth-cc", &policy, &pki.ca, &[], &env);
    let mut seen = Seen::default();
    let resource = "https://api.test/oauth/resource/items";

    // Several requests in a row: the first one exchanges, the others reuse the token.
    let start = Instant::now();
    let mut numbers = Vec::new();
    for _ in 0..4 {
        let a = seen.curl(&ix, &[resource]);
        assert_eq!(a.status, 200, "{}{}\n{}", a.head, a.body, ix.egret.logs());
        let v = json(&a.body);
        assert_eq!(v["client"], "c1", "{v}");
        numbers.push(v["token_n"].as_u64().unwrap());
    }
    let elapsed = start.elapsed();
    let issued = count(&ix.up, "TOKEN-ISSUED");
    eprintln!("4 requests in {elapsed:?}: {issued} exchange(s), token numbers {numbers:?}");
    // The handler keeps a 2 s token for 1 s (never more than half its lifetime is cut).
    if elapsed < Duration::from_secs(1) {
        assert_eq!(issued, 1, "4 requests in {elapsed:?}: {numbers:?}");
        assert_eq!(numbers, [1, 1, 1, 1]);
    } else {
        // A very slow machine: still at most one exchange per second.
        let bound = 1 + elapsed.as_secs() as usize;
        assert!(issued <= bound, "{issued} exchanges in {elapsed:?}");
    }
    assert_eq!(count(&ix.up, "RESOURCE-OK"), 4);
    assert!(ix
        .up
        .access_log()
        .contains("TOKEN-ISSUED n=1 client=c1 grant=client_credentials"));

    // After the token's lifetime the next request exchanges again, before it is sent.
    std::thread::sleep(Duration::from_millis(2200));
    let before = count(&ix.up, "TOKEN-ISSUED");
    let a = seen.curl(&ix, &[resource]);
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    assert_eq!(count(&ix.up, "TOKEN-ISSUED"), before + 1);
    assert_eq!(json(&a.body)["token_n"].as_u64(), Some(before as u64 + 1));
    // Refreshed ahead of its expiry, a token was never refused.
    assert_eq!(count(&ix.up, "RESOURCE-401"), 0, "{}", ix.up.access_log());

    // The upstream receives `Bearer TOKEN` (the newest token issued); the sandbox gets it
    // masked by the echo guard. A sandbox-sent authorization is replaced.
    let a = seen.curl(
        &ix,
        &[
            "-H",
            "authorization: Bearer sandbox-guess",
            "https://api.test/echo",
        ],
    );
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    let echo = json(&a.body);
    let all = issued_tokens(std::path::Path::new(&tokens));
    let newest = all.last().expect("tokens issued").clone();
    assert_eq!(
        echo["headers_sha256"]["authorization"],
        sha256_hex(format!("Bearer {newest}").as_bytes()),
        "{echo}"
    );
    assert_eq!(
        echo["headers"]["authorization"],
        format!("Bearer {}", "*".repeat(newest.len())),
        "{echo}"
    );
    assert_eq!(
        echo["headers"]["x-egret-handler"],
        "oauth-client-credentials"
    );

    // One handler-fetch audit event per exchange: POST to the token endpoint, answered 200.
    let issued = count(&ix.up, "TOKEN-ISSUED");
    assert_eq!(issued, all.len());
    assert!(
        wait_until(Duration::from_secs(5), || fetch_events(&ix.egret, "oauth")
            .len()
            == issued),
        "{:?}",
        fetch_events(&ix.egret, "oauth")
    );
    for e in fetch_events(&ix.egret, "oauth") {
        assert_eq!(
            (&e["method"], &e["host"], &e["path"], &e["status"]),
            (
                &"POST".into(),
                &"auth.test".into(),
                &"/oauth/token".into(),
                &200.into()
            ),
            "{e}"
        );
    }

    let mut values = all;
    values.push(CLIENT_SECRET.to_string());
    seen.assert_never_saw(&values);
    assert_not_written(&ix, &values);
}

/// `oauth-client-credentials` with the client secret in form fields: a `401` from the upstream
/// (every token revoked) is passed on and expires the token, and the next request exchanges
/// again and succeeds (tokens live an hour here, so nothing but the 401 can cause that second
/// exchange). Token endpoint failures answer 502 naming the endpoint, never a secret, even
/// when the endpoint echoed the credentials back.
#[test]
fn oauth_refreshes_after_a_401_and_names_the_token_endpoint_when_it_fails() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki, tokens) = services(&topo, &["auth.test", "api.test"], "3600");
    let hosts = [
        "auth.test",
        "api.test",
        "bad-secret.test",
        "down.test",
        "not-a-token.test",
    ];
    let mut policy = format!(
        "internet = false\n{}\n[secrets]\nCLIENT_SECRET = {{ env = \"OAUTH_CLIENT_SECRET\" }}\n\
         WRONG_SECRET = {{ env = \"OAUTH_WRONG_SECRET\" }}\n",
        resolve(&hosts)
    );
    let form = r#"token_url = "https://auth.test/oauth/token", auth = "body""#;
    policy.push_str(&oauth_binding(
        "oauth",
        "api.test",
        "CLIENT_SECRET",
        "API_TOKEN",
        form,
    ));
    policy.push_str(&oauth_binding(
        "bad-secret",
        "bad-secret.test",
        "WRONG_SECRET",
        "BAD_TOKEN",
        r#"token_url = "https://auth.test/oauth/token""#,
    ));
    policy.push_str(&oauth_binding(
        "down",
        "down.test",
        "CLIENT_SECRET",
        "DOWN_TOKEN",
        r#"token_url = "https://auth.test:8443/oauth/token""#,
    ));
    // The echo route answers 200 with JSON that is no token response, and echoes the Basic
    // credentials it got: the 502 must not pass them on.
    policy.push_str(&oauth_binding(
        "not-a-token",
        "not-a-token.test",
        "CLIENT_SECRET",
        "NOT_A_TOKEN",
        r#"token_url = "https://auth.test/echo""#,
    ));
    let env = [
        ("OAUTH_CLIENT_SECRET", CLIENT_SECRET),
        ("OAUTH_WRONG_SECRET", WRONG_CLIENT_SECRET),
    ];
    let ix = Intercepted::start(topo, up, "oauth-401", &policy, &pki.ca, &[], &env);
    let mut seen = Seen::default();
    let resource = "https://api.test/oauth/resource";

    for _ in 0..2 {
        let a = seen.curl(&ix, &[resource]);
        assert_eq!(a.status, 200, "{}{}\n{}", a.head, a.body, ix.egret.logs());
        assert_eq!(json(&a.body)["token_n"], 1);
    }
    assert_eq!(count(&ix.up, "TOKEN-ISSUED"), 1);

    // Every token stops working; the next request is refused with 401, passed on as it came.
    let o = ix.topo.up.run(
        "curl",
        &["-sS", "-X", "POST", "http://10.200.0.2/oauth/revoke-all"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ix.up.access_log().contains("TOKENS-REVOKED count=1"));
    let a = seen.curl(&ix, &[resource]);
    assert_eq!(a.status, 401, "{}{}", a.head, a.body);
    assert_eq!(json(&a.body)["reason"], "revoked");
    assert!(a.head.contains("www-authenticate: bearer"), "{}", a.head);
    assert!(a.head.contains("error=\"invalid_token\""), "{}", a.head);
    assert_eq!(count(&ix.up, "RESOURCE-401 reason=revoked"), 1);
    assert_eq!(
        count(&ix.up, "TOKEN-ISSUED"),
        1,
        "no exchange for the 401 itself"
    );
    assert!(
        ix.egret
            .wait_log("token `API_TOKEN` expired", Duration::from_secs(5)),
        "{}",
        ix.egret.logs()
    );

    // The next request exchanges again and succeeds with the new token.
    let a = seen.curl(&ix, &[resource]);
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    assert_eq!(json(&a.body)["token_n"], 2);
    assert_eq!(count(&ix.up, "TOKEN-ISSUED"), 2);
    let a = seen.curl(&ix, &[resource]);
    assert_eq!(
        (a.status, json(&a.body)["token_n"].clone()),
        (200, 2.into())
    );
    assert_eq!(count(&ix.up, "TOKEN-ISSUED"), 2);
    assert_eq!(count(&ix.up, "RESOURCE-OK n=2 client=c1"), 2);

    // Token endpoint failures: 502 naming the endpoint and what went wrong.
    for (host, want) in [
        (
            "bad-secret.test",
            "token endpoint https://auth.test/oauth/token answered 401 (invalid_client)",
        ),
        (
            "down.test",
            "token endpoint https://auth.test:8443/oauth/token failed",
        ),
        (
            "not-a-token.test",
            "token endpoint https://auth.test/echo answered 200 but not with a token response",
        ),
    ] {
        let a = seen.curl(&ix, &[&format!("https://{host}/oauth/resource")]);
        assert_eq!(a.status, 502, "{host}: {}{}", a.head, a.body);
        assert!(a.body.contains(want), "{host}: {}", a.body);
        assert!(a.head.contains("x-egret-handler: oauth-client-credentials"));
    }
    assert!(ix
        .up
        .access_log()
        .contains("TOKEN-DENIED error=invalid_client client=c1"));
    assert_eq!(
        count(&ix.up, "RESOURCE-OK"),
        4,
        "a failed exchange forwarded"
    );
    for (handler, status) in [("bad-secret", Some(401)), ("not-a-token", Some(200))] {
        let events = fetch_events(&ix.egret, handler);
        assert_eq!(events.len(), 1, "{handler}: {events:?}");
        assert_eq!(events[0]["status"].as_u64(), status.map(|s| s as u64));
    }
    let down = fetch_events(&ix.egret, "down");
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0]["status"].is_null() && down[0]["error"].is_string());
    assert_eq!(fetch_events(&ix.egret, "oauth").len(), 2);

    let mut values = issued_tokens(std::path::Path::new(&tokens));
    assert_eq!(values.len(), 2);
    values.extend([CLIENT_SECRET.to_string(), WRONG_CLIENT_SECRET.to_string()]);
    seen.assert_never_saw(&values);
    assert_not_written(&ix, &values);
}

/// `sigv4-s3`: objects PUT from the sandbox with curl are signed (payload hashed) by egret and
/// read back intact, keys whose path needs encoding included; an unsigned-payload binding
/// streams the body; a binding with the wrong key gets `403 SignatureDoesNotMatch`; a body
/// over the binding's limit is refused before anything is signed. The key never reaches the
/// sandbox or any output egret writes.
#[test]
fn sigv4_signs_s3_requests_without_holding_the_key() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let hosts = ["s3.test", "s3-unsigned.test", "s3-wrong.test"];
    let (up, pki, _) = services(&topo, &hosts, "3600");
    let module = handler_module("sigv4-s3");
    let binding = |name: &str, secret: &str, extra: &str| {
        format!(
            r#"
[handlers.{name}]
module = "{module}"
secrets = ["{secret}"]
{extra}
params = {{ access_key_id = "AKIDEXAMPLE", secret_key = "{secret}", region = "us-east-1"{p} }}

[[routes]]
host = "{name}.test"
handler = "{name}"
"#,
            p = if extra.is_empty() {
                ", unsigned_payload = true"
            } else {
                ""
            },
        )
    };
    let buffered = "body = { max_bytes = 1048576 }";
    let policy = format!(
        "internet = false\n{}\n[secrets]\nS3_SECRET = {{ env = \"S3_SECRET\" }}\n\
         S3_WRONG = {{ env = \"S3_WRONG\" }}\n{}{}{}",
        resolve(&hosts),
        binding("s3", "S3_SECRET", buffered),
        binding("s3-unsigned", "S3_SECRET", ""),
        binding("s3-wrong", "S3_WRONG", buffered),
    );
    let env = [("S3_SECRET", S3_SECRET), ("S3_WRONG", S3_WRONG)];
    let ix = Intercepted::start(topo, up, "sigv4", &policy, &pki.ca, &[], &env);
    let mut seen = Seen::default();

    // A binary object, PUT with curl and read back byte for byte.
    let object: Vec<u8> = (0..300_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .take(300_000)
        .collect();
    let file = ix.topo.tmp.path("object.bin");
    std::fs::write(&file, &object).unwrap();
    let file_arg = format!("@{}", file.display());
    let back = ix.topo.tmp.path("back.bin");
    let key_url = "https://s3.test/s3/bucket/key";
    let a = seen.curl(&ix, &["-X", "PUT", "--data-binary", &file_arg, key_url]);
    assert_eq!(a.status, 200, "{}{}\n{}", a.head, a.body, ix.egret.logs());
    assert!(a.head.contains("etag: "), "{}", a.head);
    assert_eq!(seen.download(&ix, key_url, &back), 200);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        object,
        "the object came back changed"
    );
    let log = ix.up.access_log();
    let n = object.len();
    assert!(
        log.contains(&format!(
            "S3-OK method=PUT key=bucket/key status=200 bytes={n} payload=signed"
        )),
        "{log}"
    );
    assert!(log.contains(&format!(
        "S3-OK method=GET key=bucket/key status=200 bytes={n} payload=signed"
    )));

    // A key whose path needs encoding (sent encoded and raw), with metadata and a query:
    // signed as the server sees it.
    let odd = "https://s3.test/s3/bucket/dir/a%20b%2Bc$d.txt";
    let a = seen.curl(
        &ix,
        &[
            "-X",
            "PUT",
            "-H",
            "content-type: text/plain",
            "-H",
            "x-amz-meta-note:   two   words ",
            "--data-binary",
            "hello, odd key",
            odd,
        ],
    );
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    let a = seen.curl(&ix, &[&format!("{odd}?versionId=null&a=b%20c&a=1")]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, "hello, odd key"),
        "{}",
        a.head
    );
    assert!(a.head.contains("content-type: text/plain"), "{}", a.head);
    assert_eq!(
        count(
            &ix.up,
            "S3-OK method=GET key=bucket/dir/a_b+c$d.txt status=200 bytes=14"
        ),
        1,
        "{}",
        ix.up.access_log()
    );

    // Unsigned payload: the body streams past the guest; the object is the same store's.
    let a = seen.curl(
        &ix,
        &[
            "-X",
            "PUT",
            "--data-binary",
            "streamed",
            "https://s3-unsigned.test/s3/bucket/unsigned",
        ],
    );
    assert_eq!(a.status, 200, "{}{}", a.head, a.body);
    assert_eq!(
        count(
            &ix.up,
            "S3-OK method=PUT key=bucket/unsigned status=200 bytes=8 payload=unsigned"
        ),
        1
    );
    let a = seen.curl(&ix, &["https://s3.test/s3/bucket/unsigned"]);
    assert_eq!((a.status, a.body.as_str()), (200, "streamed"));

    // What the upstream receives, as /echo shows it.
    let a = seen.curl(&ix, &["https://s3.test/echo"]);
    let echo = json(&a.body);
    let h = &echo["headers"];
    assert_eq!(h["x-egret-handler"], "sigv4-s3", "{echo}");
    assert_eq!(h["x-amz-content-sha256"], sha256_hex(b""), "{echo}");
    let auth = h["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && auth.contains("/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="),
        "{auth}"
    );

    // The wrong key: S3 refuses the signature.
    let a = seen.curl(&ix, &["https://s3-wrong.test/s3/bucket/key"]);
    assert_eq!(a.status, 403, "{}{}", a.head, a.body);
    assert!(
        a.body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{}",
        a.body
    );
    assert_eq!(count(&ix.up, "S3-DENIED reason=signature-mismatch"), 1);

    // A body over body.max_bytes is refused by egret: nothing signed, nothing sent. Over
    // HTTP/2 the client gets the 413 although it is still uploading (the stream is reset with
    // NO_ERROR only after the answer).
    let big = ix.topo.tmp.path("big.bin");
    std::fs::write(&big, vec![7u8; 1_048_577]).unwrap();
    for (version, head) in [("--http2", "http/2 413"), ("--http1.1", "http/1.1 413")] {
        let a = seen.curl(
            &ix,
            &[
                version,
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", big.display()),
                "https://s3.test/s3/bucket/big",
            ],
        );
        assert_eq!(a.status, 413, "{version}: {}{}", a.head, a.body);
        assert!(a.head.starts_with(head), "{version}: {}", a.head);
        assert!(a.body.contains("body.max_bytes"), "{version}: {}", a.body);
    }
    assert!(!ix.up.access_log().contains("key=bucket/big"));

    seen.assert_never_saw(&[S3_SECRET.to_string(), S3_WRONG.to_string()]);
    assert_not_written(&ix, &[S3_SECRET.to_string(), S3_WRONG.to_string()]);
}

//! The example handlers, run through the real host: expected actions for
//! representative requests, secret injection by reference, kv namespacing,
//! reveal grants and log redaction, and the offline runner.

mod common;

use common::*;
use egret_wasm::{
    describe_masked, run_offline, KvStore, OfflineError, ResolvedAction, SecretStore, WitVersion,
};

#[tokio::test]
async fn inject_header_sets_header_from_secret() {
    let h = load("inject-header").await;
    let secrets = SecretStore::new();
    secrets.set("gh", "tok-VALUE-123");
    let kv = KvStore::new();
    let mut call = Call::new("inject-header", &secrets, &kv);
    call.params = r#"{"header":"authorization","secret":"gh","template":"Bearer {}"}"#;
    call.grants = Grants::use_only(["gh"]);

    let action = call.invoke(&h).await.unwrap();
    let masked = describe_masked(&action);
    assert!(masked.contains("secret(gh)"), "{masked}");
    assert!(!masked.contains("tok-VALUE-123"), "{masked}");

    let resolved = call.handle(&h).await.unwrap();
    assert_eq!(
        set_value(&resolved, "authorization").unwrap(),
        b"Bearer tok-VALUE-123"
    );
    assert_eq!(
        set_value(&resolved, "x-egret-handler").unwrap(),
        b"inject-header"
    );
    let ResolvedAction::Forward {
        injected_secret_headers,
        path_and_query,
        ..
    } = &resolved
    else {
        panic!("forward expected")
    };
    assert_eq!(injected_secret_headers.len(), 1);
    assert!(path_and_query.is_none());
    assert!(!format!("{resolved:?}").contains("tok-VALUE-123"));

    // Default template is the raw value.
    call.params = r#"{"header":"x-api-key","secret":"gh"}"#;
    let resolved = call.handle(&h).await.unwrap();
    assert_eq!(set_value(&resolved, "x-api-key").unwrap(), b"tok-VALUE-123");
}

/// A component built against `egret:handler@0.1.0` (before bodies, the response phase and
/// fetch existed) loads, decides and fills secrets exactly as before, next to its SDK-built
/// (0.3.0) twin; its response phase is a pass-through.
#[tokio::test]
async fn components_of_wit_0_1_0_keep_working() {
    let v1 = load("v1-inject-header").await;
    let v2 = load("inject-header").await;
    assert_eq!(v1.wit_version(), WitVersion::V0_1);
    assert_eq!(v2.wit_version(), WitVersion::V0_3);
    assert!(
        v1.info()
            .imports
            .iter()
            .any(|i| i == "egret:handler/types@0.1.0"),
        "{:?}",
        v1.info().imports
    );
    let secrets = SecretStore::new();
    secrets.set("gh", "tok-VALUE-123");
    let kv = KvStore::new();
    let mut call = Call::new("v1", &secrets, &kv);
    call.params = r#"{"header":"authorization","secret":"gh","template":"Bearer {}"}"#;
    call.grants = Grants::use_only(["gh"]);
    for (h, name) in [(&v1, "v1-inject-header"), (&v2, "inject-header")] {
        let resolved = call.handle(h).await.unwrap();
        assert_eq!(
            set_value(&resolved, "authorization").unwrap(),
            b"Bearer tok-VALUE-123"
        );
        assert_eq!(
            set_value(&resolved, "x-egret-handler").unwrap(),
            name.as_bytes()
        );
    }
    // the response phase of a 0.1.0 instance passes the response on unchanged
    let grants = Grants::use_only(["gh"]);
    let mut session = host()
        .session(
            &v1,
            egret_wasm::SessionSpec {
                handler_name: "v1",
                sandbox_id: "s",
                params_json: call.params,
                grants: &grants,
                secrets: &secrets,
                kv: &kv,
                limits: egret_wasm::Limits::default(),
                services: Default::default(),
                reuse: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(session.wit_version(), WitVersion::V0_1);
    session.handle(call.request.clone(), None).await.unwrap();
    let pass = session
        .on_response(200, vec![("server".into(), b"x".to_vec())], None)
        .await
        .unwrap();
    assert!(matches!(
        pass,
        egret_wasm::ResolvedResponseAction::Pass { ref set, ref remove, body: None }
            if set.is_empty() && remove.is_empty()
    ));
    session.chunk(b"data").await.unwrap();
    session.end().await.unwrap();
}

fn spec<'a>(
    name: &'a str,
    grants: &'a Grants,
    secrets: &'a SecretStore,
    kv: &'a KvStore,
) -> egret_wasm::SessionSpec<'a> {
    egret_wasm::SessionSpec {
        handler_name: name,
        sandbox_id: "s",
        params_json: "null",
        grants,
        secrets,
        kv,
        limits: egret_wasm::Limits::default(),
        services: Default::default(),
        reuse: false,
    }
}

/// A component built against `egret:handler@0.2.0` (before the stream phase) loads and runs
/// every phase it has as before: its response edit applies and its observe phase sees the
/// chunks. Asked for the stream phase it has not got, the session says so (installing such a
/// binding is refused earlier, by the version check).
#[tokio::test]
async fn components_of_wit_0_2_0_keep_working() {
    let v2 = load("v2-observe").await;
    assert_eq!(v2.wit_version(), WitVersion::V0_2);
    assert!(
        v2.info()
            .imports
            .iter()
            .any(|i| i == "egret:handler/types@0.2.0"),
        "{:?}",
        v2.info().imports
    );
    let (grants, secrets, kv) = (Grants::default(), SecretStore::new(), KvStore::new());
    let mut session = host()
        .session(&v2, spec("v2", &grants, &secrets, &kv))
        .await
        .unwrap();
    assert_eq!(session.wit_version(), WitVersion::V0_2);
    let call = Call::new("v2", &secrets, &kv);
    let resolved = session.handle(call.request.clone(), None).await.unwrap();
    assert!(matches!(resolved, ResolvedAction::Forward { .. }));
    let pass = session.on_response(200, vec![], None).await.unwrap();
    let egret_wasm::ResolvedResponseAction::Pass { set, .. } = pass else {
        panic!("pass expected");
    };
    assert_eq!(set[0].0.as_str(), "x-v2-observe");
    assert_eq!(set[0].1.as_bytes(), b"seen");
    session.chunk(b"12345").await.unwrap();
    session.chunk(b"678").await.unwrap();
    session.end().await.unwrap();
    assert_eq!(kv.get("s", "v2-observe/bytes").as_deref(), Some(&b"8"[..]));
    let err = session.event(b"data: x\n\n").await.unwrap_err();
    assert!(
        err.to_string().contains("egret:handler/handler@0.3.0"),
        "{err}"
    );
}

/// The stream phase of a 0.3.0 component: mcp-guard, on a server-push stream, passes the
/// session's `endpoint` event and rewrites a `tools/list` result event to the callable tools.
#[tokio::test]
async fn stream_phase_passes_replaces_events() {
    let h = load("mcp-guard").await;
    assert_eq!(h.wit_version(), WitVersion::V0_3);
    let (grants, secrets, kv) = (Grants::default(), SecretStore::new(), KvStore::new());
    let mut s = spec("mcp", &grants, &secrets, &kv);
    s.params_json = r#"{"allow_tools":["echo"],"filter_lists":true}"#;
    s.services.response_streams = true;
    let mut session = host().session(&h, s).await.unwrap();
    let mut call = Call::new("mcp", &secrets, &kv);
    call.request.method = "GET".into();
    call.request.path_with_query = "/sse".into();
    call.request.headers = vec![("accept".into(), b"text/event-stream".to_vec())];
    let resolved = session.handle(call.request.clone(), None).await.unwrap();
    assert!(
        matches!(resolved, ResolvedAction::Forward { .. }),
        "{resolved:?}"
    );
    let head = vec![("content-type".into(), b"text/event-stream".to_vec())];
    session.on_response(200, head, None).await.unwrap();
    let endpoint = b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n";
    assert_eq!(
        session.event(endpoint).await.unwrap(),
        egret_wasm::EventAction::Pass
    );
    let list = br#"event: message
data: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}

"#;
    let egret_wasm::EventAction::Replace(out) = session.event(list).await.unwrap() else {
        panic!("the listing must be rewritten");
    };
    let out = String::from_utf8(out.to_vec()).unwrap();
    assert!(out.starts_with("event: message\ndata: {"), "{out}");
    assert!(
        out.contains("echo") && !out.contains("delete_repo"),
        "{out}"
    );
    assert!(out.ends_with("\n\n"), "{out}");
    session.end().await.unwrap();
}

#[tokio::test]
async fn inject_header_needs_grant_and_params() {
    let h = load("inject-header").await;
    let secrets = SecretStore::new();
    secrets.set("gh", "v");
    let kv = KvStore::new();
    let mut call = Call::new("inject-header", &secrets, &kv);
    call.params = r#"{"header":"authorization","secret":"gh"}"#;
    let err = call.handle(&h).await.unwrap_err();
    assert_eq!(err.kind(), "invalid_action");
    let msg = err.to_string();
    assert!(
        msg.contains("`gh`") && msg.contains("not granted") && msg.contains("inject-header"),
        "{msg}"
    );

    call.params = r#"{"header":"authorization"}"#;
    let (status, body) = response(&call.handle(&h).await.unwrap());
    assert_eq!(status, 500);
    assert!(body.contains("bad params"), "{body}");
}

#[tokio::test]
async fn allow_hosts_exact_and_wildcard() {
    let h = load("allow-hosts").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let mut call = Call::new("allow-hosts", &secrets, &kv);
    call.params = r#"{"hosts":["api.github.com","*.googleapis.com"]}"#;
    for host in [
        "api.github.com",
        "API.GitHub.com:443",
        "storage.googleapis.com",
    ] {
        call.request = request("GET", host, "/");
        let r = call.handle(&h).await.unwrap();
        assert_eq!(
            set_value(&r, "x-egret-handler").unwrap(),
            b"allow-hosts",
            "{host}"
        );
    }
    for host in ["evil.test", "googleapis.com", "api.github.com.evil.test"] {
        call.request = request("GET", host, "/");
        let (status, body) = response(&call.handle(&h).await.unwrap());
        assert_eq!(status, 403, "{host}");
        assert!(body.contains(&host.to_ascii_lowercase()), "{body}");
    }
}

#[tokio::test]
async fn get_only_blocks_writes() {
    let h = load("get-only").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let mut call = Call::new("get-only", &secrets, &kv);
    for m in ["GET", "HEAD"] {
        call.request = request(m, "api.test", "/");
        assert!(matches!(
            call.handle(&h).await.unwrap(),
            ResolvedAction::Forward { .. }
        ));
    }
    call.request = request("POST", "api.test", "/items");
    let r = call.handle(&h).await.unwrap();
    let (status, body) = response(&r);
    assert_eq!(status, 405);
    assert!(body.contains("POST"), "{body}");
    assert!(logs().contains("blocked POST api.test/items"));
}

#[tokio::test]
async fn per_sandbox_token_uses_kv_of_the_sandbox() {
    let h = load("per-sandbox-token").await;
    let secrets = SecretStore::new();
    secrets.set("token-a", "AAA");
    secrets.set("token-b", "BBB");
    let kv = KvStore::new();
    kv.seed("sb-a", [("token-secret", "token-a")]).unwrap();
    let mut call = Call::new("per-sandbox-token", &secrets, &kv);
    call.grants = Grants::use_only(["token-a", "token-b"]);
    call.sandbox = "sb-a";
    let r = call.handle(&h).await.unwrap();
    assert_eq!(set_value(&r, "authorization").unwrap(), b"Bearer AAA");

    call.sandbox = "sb-b";
    let (status, body) = response(&call.handle(&h).await.unwrap());
    assert_eq!(status, 403);
    assert!(body.contains("sb-b"), "{body}");

    kv.seed("sb-b", [("token-secret", "token-b")]).unwrap();
    call.params = r#"{"header":"x-token","template":"t={}"}"#;
    let r = call.handle(&h).await.unwrap();
    assert_eq!(set_value(&r, "x-token").unwrap(), b"t=BBB");
}

#[tokio::test]
async fn respond_from_kv_never_forwards() {
    let h = load("respond-from-kv").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    kv.seed(
        "sb-1",
        [
            ("fixture", &b"{\"ok\":true}"[..]),
            ("/data", &b"by-path"[..]),
        ],
    )
    .unwrap();
    let mut call = Call::new("respond-from-kv", &secrets, &kv);
    call.params = r#"{"key":"fixture","content_type":"application/json"}"#;
    let r = call.handle(&h).await.unwrap();
    let ResolvedAction::Respond {
        status,
        headers,
        body,
    } = &r
    else {
        panic!("respond expected")
    };
    assert_eq!(status.as_u16(), 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(&body[..], b"{\"ok\":true}");

    call.params = "{}";
    call.request = request("GET", "api.test", "/data?x=1");
    assert_eq!(
        response(&call.handle(&h).await.unwrap()),
        (200, "by-path".into())
    );

    call.request = request("GET", "api.test", "/missing");
    assert_eq!(response(&call.handle(&h).await.unwrap()).0, 404);

    // Another sandbox does not see sb-1's keys.
    call.sandbox = "sb-2";
    call.params = r#"{"key":"fixture"}"#;
    assert_eq!(response(&call.handle(&h).await.unwrap()).0, 404);
}

#[tokio::test]
async fn no_http_denies_everything() {
    let h = load("no-http").await;
    let secrets = SecretStore::new();
    let kv = KvStore::new();
    let call = Call::new("no-http", &secrets, &kv);
    let (status, body) = response(&call.handle(&h).await.unwrap());
    assert_eq!(status, 403);
    assert_eq!(body.trim(), "egret: HTTP egress disabled by policy");
}

#[tokio::test]
async fn reveal_needs_grant_and_logs_are_redacted() {
    let h = load("log-secret").await;
    let secrets = SecretStore::new();
    secrets.set("api", "REVEALED-xyz-7781");
    let kv = KvStore::new();
    let mut call = Call::new("log-secret", &secrets, &kv);
    call.sandbox = "sb-reveal";
    call.params = r#"{"secret":"api"}"#;

    // Use grant only: reveal is refused with the grant to add.
    call.grants = Grants::use_only(["api"]);
    let r = call.handle(&h).await.unwrap();
    let (status, body) = response(&r);
    assert_eq!(status, 403);
    assert!(body.contains("reveal") && body.contains("`api`"), "{body}");

    // Reveal grant: the guest gets the value, and its log line is redacted.
    call.grants = Grants::new(std::iter::empty::<&str>(), ["api"]);
    let r = call.handle(&h).await.unwrap();
    assert_eq!(response(&r), (200, "REVEALED-xyz-7781".into()));
    let ResolvedAction::Respond { headers, .. } = &r else {
        unreachable!()
    };
    assert_eq!(headers["x-kv-set"], "ok");
    let logs = logs();
    assert!(
        logs.contains("the secret is [REDACTED] (logged on purpose)"),
        "{logs}"
    );
    assert!(logs.contains("sb-reveal"));
    assert!(
        !logs.contains("REVEALED-xyz-7781"),
        "secret value leaked into logs"
    );

    // The guest's kv write landed in its own sandbox only.
    assert_eq!(kv.get("sb-reveal", "seen").as_deref(), Some(&b"1"[..]));
    assert_eq!(kv.get("sb-1", "seen"), None);
}

#[tokio::test]
async fn offline_runner_masks_secrets() {
    let bytes = wasm("inject-header");
    let out = run_offline(
        host(),
        &bytes,
        "GET https://api.test/x?y=1",
        &[("accept".into(), "*/*".into())],
        r#"{"header":"authorization","secret":"gh","template":"Bearer {}"}"#,
        vec![("gh".into(), "offline-SECRET-9".into())],
        "sb-offline",
    )
    .await
    .unwrap();
    assert!(
        out.contains("set authorization: \"Bearer {secret(gh)}\""),
        "{out}"
    );
    assert!(
        out.contains("secrets injected into: authorization"),
        "{out}"
    );
    assert!(!out.contains("offline-SECRET-9"), "{out}");

    // A revealing handler's literal output is redacted too.
    let out = run_offline(
        host(),
        &wasm("log-secret"),
        "GET https://api.test/",
        &[],
        r#"{"secret":"gh"}"#,
        vec![("gh".into(), "offline-SECRET-9".into())],
        "sb-offline",
    )
    .await
    .unwrap();
    assert!(
        out.contains("[REDACTED]") && !out.contains("offline-SECRET-9"),
        "{out}"
    );

    let err = run_offline(host(), &bytes, "GET /x", &[], "{}", vec![], "s")
        .await
        .unwrap_err();
    assert!(matches!(err, OfflineError::RequestLine { .. }), "{err}");

    let err = run_offline(
        host(),
        &wasm("bad-header"),
        "GET https://api.test/",
        &[],
        "{}",
        vec![],
        "s",
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad name") && msg.contains("forward"), "{msg}");
}

/// Observe mode: `on_response` sees the head first (llm-guard reads the usage as the
/// `content-type` says), then the chunks; a response the head refuses to count is not counted.
#[tokio::test]
async fn observe_mode_shows_the_head_then_the_chunks() {
    let bytes = wasm("llm-guard");
    let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let usage = br#"{"choices":[],"usage":{"total_tokens":7}}"#;
    let run = |content_type: &'static str| egret_wasm::OfflineRun {
        request_line: "POST https://llm.test/v1/chat/completions",
        headers: &[],
        body: Some(body.to_vec()),
        params_json: r#"{"models":["m"],"budget_tokens":100}"#,
        secrets: vec![],
        mint: vec![],
        services: Default::default(),
        sandbox_id: "sb-observe",
        response: Some(egret_wasm::OfflineResponse {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: usage.to_vec(),
            buffer: false,
            observe: true,
            pieces: None,
        }),
    };
    let out = egret_wasm::run_offline_with(host(), &bytes, run("application/json"))
        .await
        .unwrap();
    assert!(out.contains("response 200: pass"), "{out}");
    assert!(out.contains("response body observed: "), "{out}");
    assert!(
        out.contains("kv written: llm-guard/offline/tokens"),
        "{out}"
    );
    // The same bytes as an HTML page: the head said there is no usage in it.
    let out = egret_wasm::run_offline_with(host(), &bytes, run("text/html"))
        .await
        .unwrap();
    assert!(out.contains("response body observed: "), "{out}");
    assert!(!out.contains("kv written"), "{out}");
}

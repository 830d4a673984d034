//! The admin server and client over real Unix sockets, against a mock `Control`.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use egret_admin::*;
use egret_policy::{BindingConfig, HandlerConfig, PolicyConfig, RouteConfig};
use http::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_endpoint_round_trips() {
    let f = start().await;
    let c = &f.client;
    let m = &f.mock;

    assert_eq!(c.health().await.unwrap().status, "ok");
    let s = c.status().await.unwrap();
    assert_eq!((s.sandbox_id.as_str(), s.generation), ("agent-47", 1));
    assert_eq!(s.counters["requests"], 10);

    let v = c.policy().await.unwrap();
    assert_eq!(v.policy.allowed_hosts, vec!["a.test"]);
    assert_eq!(v.secrets, vec!["FILE_TOKEN"]);
    let toml = c.policy_toml().await.unwrap();
    assert!(toml.starts_with("# egret policy, generation 1"), "{toml}");
    let back = PolicyConfig::from_toml(&toml, "back").unwrap();
    assert_eq!(back, v.policy);

    let p = PolicyConfig {
        internet: true,
        ..PolicyConfig::default()
    };
    let a = c.replace_policy(&p, None).await.unwrap();
    assert_eq!(a.generation, 2);
    assert_eq!(m.last_call().0, Change::ReplacePolicy(Box::new(p.clone())));

    c.replace_policy_toml("internet = true\n".into(), Some(2))
        .await
        .unwrap();
    assert_eq!(m.last_call(), (Change::ReplacePolicy(Box::new(p)), Some(2)));

    let b = BindingConfig {
        handler: "allow-hosts".into(),
        params: Some(json!({"hosts": ["github.com"]})),
    };
    c.set_outbound(&b, None).await.unwrap();
    assert_eq!(m.last_call().0, Change::SetOutbound(Some(b)));
    c.set_outbound(&BindingConfig::new("no-http"), None)
        .await
        .unwrap();
    assert_eq!(
        m.last_call().0,
        Change::SetOutbound(Some(BindingConfig::new("no-http")))
    );
    c.clear_outbound(None).await.unwrap();
    assert_eq!(m.last_call().0, Change::SetOutbound(None));

    let routes = vec![
        RouteConfig::new(["a.test", "*.a.test"], "x"),
        RouteConfig {
            params: Some(json!({"k": 1})),
            ..RouteConfig::new(["b.test"], "y")
        },
    ];
    c.set_outbound_by_host(routes.clone(), None).await.unwrap();
    assert_eq!(m.last_call().0, Change::SetOutboundByHost(routes));
    c.remove_outbound_by_host(vec!["a.test".into()], None)
        .await
        .unwrap();
    assert_eq!(
        m.last_call().0,
        Change::RemoveOutboundByHost(vec!["a.test".into()])
    );

    let hc = HostListChange {
        add: vec!["x.test".into()],
        remove: vec!["y.test".into()],
    };
    c.allowed_hosts(&hc, None).await.unwrap();
    assert_eq!(
        m.last_call().0,
        Change::AllowedHosts {
            add: hc.add.clone(),
            remove: hc.remove.clone()
        }
    );
    c.denied_hosts(&hc, None).await.unwrap();
    assert_eq!(
        m.last_call().0,
        Change::DeniedHosts {
            add: hc.add.clone(),
            remove: hc.remove.clone()
        }
    );

    let a = c.set_internet(true, None).await.unwrap();
    assert_eq!(a.warnings, vec!["internet is on"]);
    assert_eq!(m.last_call().0, Change::SetInternet(true));

    let mut h = HandlerConfig::new("uploaded:inject");
    h.secrets = vec!["TOKEN".into()];
    h.timeout_ms = 80;
    h.params = Some(json!({"header": "x-auth"}));
    c.set_handler("inject", &h, None).await.unwrap();
    assert_eq!(
        m.last_call().0,
        Change::SetHandler {
            name: "inject".into(),
            config: Box::new(h)
        }
    );
    c.remove_handler("inject", None).await.unwrap();
    assert_eq!(m.last_call().0, Change::RemoveHandler("inject".into()));

    let wasm = Bytes::from_static(b"\0asm\x0d\0\x01\0rest");
    let info = c.upload_module("inject", wasm.clone(), None).await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.size),
        ("inject", wasm.len() as u64)
    );
    assert_eq!(c.modules().await.unwrap(), vec![info]);

    let set = c
        .set_secret("TOKEN", SecretValue::new(SECRET), None)
        .await
        .unwrap();
    assert_eq!(set.name, "TOKEN");
    let (Change::SetSecret { name, value }, _) = m.last_call() else {
        panic!()
    };
    assert_eq!((name.as_str(), value.expose()), ("TOKEN", SECRET));
    assert_eq!(c.secrets().await.unwrap(), vec!["FILE_TOKEN", "TOKEN"]);
    c.remove_secret("TOKEN", None).await.unwrap();
    assert_eq!(m.last_call().0, Change::RemoveSecret("TOKEN".into()));

    assert!(c
        .ca_pem()
        .await
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(c
        .metrics()
        .await
        .unwrap()
        .contains("egret_requests_total 10"));

    // Content types of the text endpoints.
    for (path, ct) in [
        ("/v1/ca", "application/x-pem-file"),
        ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
        ("/v1/metrics", "text/plain; version=0.0.4; charset=utf-8"),
        ("/v1/policy?format=toml", "application/toml"),
        ("/v1/status", "application/json"),
    ] {
        let r = c
            .raw(Method::GET, path, None, Bytes::new(), None)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.content_type.as_deref()),
            (200, Some(ct)),
            "{path}"
        );
    }
    f.server.stop().await;
}

#[tokio::test]
async fn socket_is_0600_and_removed_on_stop() {
    let f = start().await;
    let meta = std::fs::metadata(&f.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No leftovers from the private bind directory.
    let names: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("sbx.sock")]);

    // A second server on a live socket is refused.
    let again = serve(&f.socket, f.mock.clone(), ServerOptions::default()).await;
    assert!(matches!(again, Err(AdminError::InUse { .. })), "{again:?}");

    f.server.stop().await;
    assert!(!f.socket.exists());
    let err = f.client.health().await.unwrap_err();
    assert!(matches!(err, AdminClientError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("--admin-socket"), "{err}");
}

#[tokio::test]
async fn stale_socket_is_replaced_but_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbx.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // stale: nobody listens
    let h = serve(&path, Mock::new(), ServerOptions::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    AdminClient::new(&path).health().await.unwrap();
    h.stop().await;

    std::fs::write(&path, "not a socket").unwrap();
    let r = serve(&path, Mock::new(), ServerOptions::default()).await;
    assert!(matches!(r, Err(AdminError::NotASocket { .. })), "{r:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

/// Runs curl as uid 65534 against the socket; returns (exit status, stdout).
fn curl_as_nobody(socket: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\nHTTP %{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .arg("http://egret/v1/status")
        .output()
        .expect("this test needs `setpriv` and `curl` (util-linux, curl) and must run as root");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn other_uids_are_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root to act as another uid; it does not skip"
    );
    let f = start().await;
    // Let uid 65534 reach the socket file at all.
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // With the socket's own 0600 mode, the kernel refuses the connect.
    let (code, out) = tokio::task::spawn_blocking({
        let s = f.socket.clone();
        move || curl_as_nobody(&s)
    })
    .await
    .unwrap();
    assert_eq!(code, 7, "curl should fail to connect: {out}");

    // Even with the mode loosened by mistake, SO_PEERCRED keeps it out.
    std::fs::set_permissions(&f.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out) = tokio::task::spawn_blocking({
        let s = f.socket.clone();
        move || curl_as_nobody(&s)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("HTTP 403"), "{out}");
    let body: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(!out.contains("agent-47"), "status leaked: {out}");

    // Root (our uid) still gets in.
    f.client.status().await.unwrap();
    f.server.stop().await;
}

#[tokio::test]
async fn invalid_json_has_line_and_column_and_unknown_fields_are_refused() {
    let f = start().await;
    let (st, v) = raw_call(
        &f.client,
        Method::PUT,
        "/v1/internet",
        "{\n  \"enabled\" true\n}",
        None,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["code"], "invalid_json");
    assert_eq!(v["error"]["line"], 2);
    assert!(v["error"]["column"].as_u64().unwrap() > 1);

    let (st, v) = raw_call(
        &f.client,
        Method::PUT,
        "/v1/internet",
        r#"{"enabled": true, "enbled": false}"#,
        None,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["code"], "invalid_json");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("enbled"),
        "{v}"
    );

    for (path, method, body) in [
        (
            "/v1/allowed-hosts",
            Method::POST,
            r#"{"add":["a"],"rm":[]}"#,
        ),
        (
            "/v1/outbound-by-host",
            Method::PUT,
            r#"{"routes":[],"x":1}"#,
        ),
        (
            "/v1/outbound-by-host",
            Method::PUT,
            r#"{"routes":[{"host":"a","handler":"h","bogus":1}]}"#,
        ),
        (
            "/v1/handlers/h",
            Method::PUT,
            r#"{"module":"m","timeout":5}"#,
        ),
        ("/v1/outbound", Method::PUT, r#"{"handler":"h","parms":{}}"#),
        ("/v1/outbound", Method::PUT, ""),
    ] {
        let (st, v) = raw_call(&f.client, method, path, body, None).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_json")),
            "{path} {body}: {v}"
        );
    }

    // A policy in JSON with a typo: the hint from egret-policy comes through.
    let (st, v) = raw_call(
        &f.client,
        Method::PUT,
        "/v1/policy",
        "{\"internt\": true}",
        None,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["code"], "invalid_json");
    assert!(
        v["error"]["hint"].as_str().unwrap().contains("internet"),
        "{v}"
    );

    // A TOML policy with a syntax error: invalid_policy with the position.
    let r = f
        .client
        .raw(
            Method::PUT,
            "/v1/policy",
            Some("application/toml"),
            Bytes::from_static(b"internet = true\nallowed_hosts = [\"a\"\n"),
            None,
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(v["error"]["code"], "invalid_policy");
    assert!(v["error"]["line"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(f.mock.call_count(), 0, "nothing reached the Control");
    f.server.stop().await;
}

#[tokio::test]
async fn huge_bodies_are_refused_early() {
    let f = start().await;
    let mut s = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    let size: usize = 100 << 20;
    let started = Instant::now();
    s.write_all(
        format!(
            "PUT /v1/modules/big HTTP/1.1\r\nhost: egret\r\ncontent-type: application/wasm\r\ncontent-length: {size}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.into_split();
    // Keep pushing the body while reading: the server must answer without waiting for it.
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 1 << 20];
        let mut sent = 0usize;
        while sent < size {
            match tokio::time::timeout(Duration::from_secs(5), wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        sent
    });
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf))
        .await
        .expect("no answer while the body was still being sent")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let sent = writer.await.unwrap();
    assert!(sent < size, "the server read the whole 100 MiB body");
    assert!(f.mock.uploads.lock().unwrap().is_empty());

    // Through the client too.
    let big = Bytes::from(vec![0u8; size]);
    let started = Instant::now();
    let err = f.client.upload_module("big", big, None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.code(), Some(ErrorCode::PayloadTooLarge), "{err}");

    // A chunked JSON body (no content-length) is cut off at the 1 MiB JSON limit.
    let mut req =
        b"PUT /v1/internet HTTP/1.1\r\nhost: egret\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", 1 << 19).as_bytes());
        req.extend(std::iter::repeat_n(b' ', 1 << 19));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let out = raw_exchange(&f.socket, &req).await;
    assert!(
        out.starts_with("HTTP/1.1 413"),
        "{}",
        &out[..out.len().min(300)]
    );
    f.server.stop().await;
}

#[tokio::test]
async fn bad_names_are_refused() {
    let f = start().await;
    let long = "a".repeat(65);
    for path in [
        "/v1/handlers/..".to_owned(),
        "/v1/handlers/.".to_owned(),
        "/v1/secrets/%2e%2e".to_owned(),
        "/v1/modules/a%2Fb".to_owned(),
        "/v1/secrets/".to_owned(),
        format!("/v1/handlers/{long}"),
        "/v1/handlers/a:b".to_owned(),
    ] {
        for method in [Method::PUT, Method::DELETE] {
            let (st, v) = raw_call(&f.client, method, &path, "{}", None).await;
            assert_eq!(
                (st, v["error"]["code"].as_str()),
                (400, Some("invalid_name")),
                "{path}"
            );
        }
    }
    // The typed client refuses before sending.
    let e = f.client.remove_handler("..", None).await.unwrap_err();
    assert!(matches!(e, AdminClientError::Usage(_)), "{e}");
    assert_eq!(f.mock.call_count(), 0);
    f.server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let f = start().await;
    let (st, v) = raw_call(&f.client, Method::GET, "/v1/nope", "", None).await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["code"], "not_found");
    let eps = v["error"]["endpoints"].as_array().unwrap();
    assert!(eps.iter().any(|e| e == "GET /v1/status"), "{v}");

    let r = f
        .client
        .raw(Method::DELETE, "/v1/status", None, Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");

    let out = raw_exchange(
        &f.socket,
        b"POST /v1/policy HTTP/1.1\r\nhost: egret\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("allow: get, put"),
        "{out}"
    );
    f.server.stop().await;
}

#[tokio::test]
async fn if_generation_mismatch_is_a_conflict() {
    let f = start().await;
    let err = f.client.set_internet(true, Some(7)).await.unwrap_err();
    let AdminClientError::Refused { status, error } = &err else {
        panic!("{err}")
    };
    assert_eq!(*status, 409);
    assert_eq!(error.code, ErrorCode::Conflict);
    assert_eq!((error.expected, error.current), (Some(7), Some(1)));
    assert!(error.message.contains('7') && error.message.contains('1'));
    // Passed through to the Control as the precondition.
    f.client.set_internet(true, Some(1)).await.unwrap();
    assert_eq!(f.mock.last_call().1, Some(1));

    // Uploads check it in the server.
    let e = f
        .client
        .upload_module("m", Bytes::from_static(b"\0asm\x01\0\0\0"), Some(99))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));

    let (st, v) = raw_call(&f.client, Method::DELETE, "/v1/outbound", "", None).await;
    assert_eq!(st, 200, "{v}");
    let r = f
        .client
        .raw(Method::DELETE, "/v1/outbound", None, Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let out = raw_exchange(
        &f.socket,
        b"DELETE /v1/outbound HTTP/1.1\r\nhost: egret\r\nif-generation: soon\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("bad_request"),
        "{out}"
    );
    f.server.stop().await;
}

#[tokio::test]
async fn control_errors_map_to_codes() {
    let f = start().await;
    let cases = [
        (
            ControlError::Invalid {
                problems: vec!["routes[0].handler = \"nope\": no such handler".into()],
            },
            422,
            ErrorCode::InvalidPolicy,
        ),
        (
            ControlError::NotFound("no handler named \"x\"".into()),
            404,
            ErrorCode::NotFound,
        ),
        (
            ControlError::Internal("boom".into()),
            500,
            ErrorCode::Internal,
        ),
        (
            ControlError::Conflict {
                expected: 3,
                current: 4,
            },
            409,
            ErrorCode::Conflict,
        ),
    ];
    for (e, status, code) in cases {
        f.mock.fail_with(e.clone());
        let err = f.client.remove_handler("x", None).await.unwrap_err();
        let AdminClientError::Refused { status: st, error } = &err else {
            panic!("{err}")
        };
        assert_eq!((*st, error.code), (status, code), "{e:?}");
        if let ControlError::Invalid { problems } = &e {
            assert_eq!(&error.problems, problems);
            assert!(err.to_string().contains("no such handler"), "{err}");
        }
    }
    // Module uploads map the same way; non-wasm bodies never reach the Control.
    f.mock.fail_with(ControlError::Invalid {
        problems: vec!["not a component".into()],
    });
    let e = f
        .client
        .upload_module("m", Bytes::from_static(b"\0asm\x01\0\0\0"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidPolicy));
    let e = f
        .client
        .upload_module("m", Bytes::from_static(b"MZ\x90\0"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    f.server.stop().await;
}

#[tokio::test]
async fn secret_values_never_come_back() {
    let f = start().await;
    let mut bodies = Vec::new();
    let (st, v) = raw_call(
        &f.client,
        Method::PUT,
        "/v1/secrets/TOKEN",
        &format!(r#"{{"value":"{SECRET}"}}"#),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["name"], "TOKEN");
    assert_eq!(v["generation"], 2);
    bodies.push(v.to_string());
    // Malformed secret bodies: serde would quote the value; the server must not.
    for bad in [
        format!(r#""{SECRET}""#),
        format!(r#"{{"value":"{SECRET}","x":1}}"#),
        format!(r#"{{"value":["{SECRET}"]}}"#),
        format!(r#"{{"value":"{SECRET}""#),
        format!(r#"["{SECRET}"]"#),
    ] {
        let (st, v) = raw_call(&f.client, Method::PUT, "/v1/secrets/TOKEN", &bad, None).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_json")),
            "{bad}"
        );
        bodies.push(v.to_string());
    }
    f.mock.fail_with(ControlError::Invalid {
        problems: vec!["TOKEN is not granted to any handler".into()],
    });
    let (st, v) = raw_call(
        &f.client,
        Method::PUT,
        "/v1/secrets/TOKEN",
        &format!(r#"{{"value":"{SECRET}"}}"#),
        None,
    )
    .await;
    assert_eq!(st, 422);
    bodies.push(v.to_string());
    for path in [
        "/v1/status",
        "/v1/policy",
        "/v1/policy?format=toml",
        "/v1/secrets",
        "/v1/modules",
        "/metrics",
    ] {
        let r = f
            .client
            .raw(Method::GET, path, None, Bytes::new(), None)
            .await
            .unwrap();
        bodies.push(String::from_utf8_lossy(&r.body).into_owned());
    }
    for b in &bodies {
        assert!(!b.contains(SECRET), "secret echoed: {b}");
    }
    assert!(bodies.iter().any(|b| b.contains("\"TOKEN\"")));
    let dbg = format!("{:?} {:#?}", f.mock, f.mock);
    assert!(dbg.contains("SetSecret"), "the mock recorded the call");
    assert!(!dbg.contains(SECRET), "secret in Debug output");
    f.server.stop().await;
}

#[tokio::test]
async fn policy_put_accepts_toml_and_json() {
    let f = start().await;
    let toml = "internet = false\nallowed_hosts = [\"b.test\"]\n";
    let r = f
        .client
        .raw(
            Method::PUT,
            "/v1/policy",
            None, // sniffed: does not start with `{`
            Bytes::from_static(toml.as_bytes()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let want = PolicyConfig::from_toml(toml, "t").unwrap();
    assert_eq!(
        f.mock.last_call().0,
        Change::ReplacePolicy(Box::new(want.clone()))
    );
    let (st, _) = raw_call(
        &f.client,
        Method::PUT,
        "/v1/policy",
        &serde_json::to_string(&want).unwrap(),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(f.mock.last_call().0, Change::ReplacePolicy(Box::new(want)));
    f.server.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_per_connection() {
    let f = start().await;
    let out = raw_exchange(
        &f.socket,
        b"GET /v1/health HTTP/1.1\r\nhost: egret\r\n\r\nGET /v1/status HTTP/1.1\r\nhost: egret\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(out.contains("agent-47"));
    f.server.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let opts = ServerOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let f = start_with(Mock::new(), opts).await;
    let mut s = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: eg")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("connection held open past the header timeout")
        .ok();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    f.server.stop().await;
}

async fn next(s: &mut AuditStream) -> Option<Result<String, AdminClientError>> {
    tokio::time::timeout(Duration::from_secs(5), s.next_line())
        .await
        .expect("no event")
}

#[tokio::test]
async fn audit_stream_is_filtered_and_ends_on_stop() {
    let f = start().await;
    let filter = AuditFilter {
        sandbox: Some("agent-47".into()),
        deny_only: true,
    };
    let mut stream = f.client.audit(&filter).await.unwrap();
    let mut all = f.client.audit(&AuditFilter::default()).await.unwrap();
    let events = [
        r#"{"sandbox":"agent-47","decision":"forward","host":"a.test"}"#,
        r#"{"sandbox":"agent-48","decision":"deny","host":"b.test"}"#,
        r#"{"fields":{"sandbox":"agent-47","decision":"deny","host":"c.test"}}"#,
        r#"{"sandbox":"agent-47","decision":"deny","host":"d.test"}"#,
    ];
    for e in events {
        f.mock.audit.send(e.into()).unwrap();
    }
    assert_eq!(next(&mut stream).await.unwrap().unwrap(), events[2]);
    assert_eq!(next(&mut stream).await.unwrap().unwrap(), events[3]);
    for e in events {
        assert_eq!(next(&mut all).await.unwrap().unwrap(), e);
    }
    let started = Instant::now();
    f.server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "open streams delayed the stop"
    );
    assert!(next(&mut stream).await.is_none());

    // Without an audit feed: not_found.
    let mut mock = Mock::new();
    Arc::get_mut(&mut mock).unwrap().audit_enabled = false;
    let f = start_with(mock, ServerOptions::default()).await;
    let e = f.client.audit(&AuditFilter::default()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    f.server.stop().await;
}

#[tokio::test]
async fn concurrent_changes_all_reach_the_control() {
    let f = start().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = f.client.clone();
        tasks.push(tokio::spawn(async move {
            c.allowed_hosts(
                &HostListChange {
                    add: vec![format!("h{i}.test")],
                    remove: vec![],
                },
                None,
            )
            .await
            .unwrap()
            .generation
        }));
    }
    let mut gens = Vec::new();
    for t in tasks {
        gens.push(t.await.unwrap());
    }
    gens.sort();
    assert_eq!(gens, (2..22).collect::<Vec<_>>());
    f.server.stop().await;
}

#[tokio::test]
async fn shadow_candidate_load_report_promote_drop() {
    let f = start().await;
    let c = &f.client;
    // Nothing loaded: every read or removal is not_found, naming how to load one.
    for (m, path) in [
        (Method::GET, "/v1/policy/shadow"),
        (Method::DELETE, "/v1/policy/shadow"),
        (Method::POST, "/v1/policy/shadow/promote"),
    ] {
        let (st, v) = raw_call(c, m.clone(), path, "", None).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{m} {path}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("policy shadow FILE"));
    }
    // A candidate that does not parse is refused like a policy upload, with its position.
    let e = c
        .shadow_load_text("allowed_hosts = [\n".into(), "application/toml", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidPolicy));
    let AdminClientError::Refused { status, error } = &e else {
        panic!("{e}")
    };
    assert_eq!((*status, error.line.is_some()), (400, true), "{e}");
    assert!(f.mock.shadow.lock().unwrap().is_none());
    // Loaded as TOML; a stale precondition is a conflict.
    let toml = "allowed_hosts = [\"git.test\"]\n";
    let a = c
        .shadow_load_text(toml.into(), "application/toml", Some(1))
        .await
        .unwrap();
    assert_eq!(a.generation, 1);
    let want = PolicyConfig::from_toml(toml, "t").unwrap();
    assert_eq!(f.mock.shadow.lock().unwrap().as_ref(), Some(&want));
    let e = c
        .shadow_load_text(toml.into(), "application/toml", Some(7))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    let v = c.shadow_report().await.unwrap();
    assert_eq!(v, f.mock.shadow_view());
    // Wrong methods name the right ones.
    let (st, v) = raw_call(c, Method::POST, "/v1/policy/shadow", "", None).await;
    assert_eq!(st, 405, "{v}");
    // Promote is a policy replacement; then nothing is left to drop.
    let a = c.shadow_promote(Some(1)).await.unwrap();
    assert_eq!(a.generation, 2);
    assert_eq!(
        f.mock.last_call(),
        (Change::ReplacePolicy(Box::new(want)), Some(1))
    );
    assert_eq!(
        c.shadow_drop().await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // Drop answers the last report.
    c.shadow_load_text("{}".into(), "application/json", None)
        .await
        .unwrap();
    assert_eq!(c.shadow_drop().await.unwrap().summary.differences, 1);
    assert!(f.mock.shadow.lock().unwrap().is_none());
    f.server.stop().await;
}

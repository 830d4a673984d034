//! HTTP semantics kept through the proxy: `Expect: 100-continue` answered before the body,
//! HEAD, 204, 304 and chunked responses, Alt-Svc h3 advertisements stripped unless kept, and
//! content encodings passed through untouched.

use super::setup;
use egret_e2e::*;

/// Node's http2 client: POST argv[3] bytes, with `expect: 100-continue` when argv[4] is
/// "expect" (the body is only sent on `continue`); prints the status, how much body had been
/// written when the response came, and the response body.
const H2_EXPECT_CLIENT: &str = include_str!("../../../clients/h2_expect_client.js");

#[test]
fn expect_100_continue_denied_by_the_handler_answers_before_the_body() {
    let env = setup("proto-100", &[]);
    let big = env.topo.tmp.path("big.bin");
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    let at = format!("@{}", big.display());
    // HTTP/1.1: curl (it would send the body anyway after --expect100-timeout, 5 s)
    let (code, out, err) = env.curl(&[
        "--http1.1",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "5",
        "--data-binary",
        &at,
        "-o",
        "/dev/null",
        "-w",
        "%{response_code} %{size_upload} %{time_total}",
        "https://ro.test/upload",
    ]);
    assert_eq!(code, 0, "{err}");
    let f: Vec<&str> = out.split(' ').collect();
    assert_eq!(f[0], "405", "{out} {err}");
    let (uploaded, secs): (u64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    eprintln!("100-continue h1: 405 after {secs:.3}s, {uploaded} body bytes sent");
    assert!(
        uploaded < 1 << 20,
        "the client sent {uploaded} bytes of a denied body"
    );
    assert!(
        secs < 3.0,
        "the denial took {secs}s (curl waited for the 100 timeout)"
    );
    // HTTP/2: node (curl 7.88 reports an early final response followed by the RFC 9113 §8.1
    // RST_STREAM(NO_ERROR) as an error, whatever the server)
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok()
    {
        let script = write(&env.topo, "h2expect.js", H2_EXPECT_CLIENT);
        for mode in ["expect", "plain"] {
            let o = env.topo.in_sandbox(
                "node",
                &[
                    &script,
                    &env.ca,
                    "https://ro.test/upload",
                    &data.len().to_string(),
                    mode,
                ],
            );
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!(
                "100-continue h2 ({mode}): {}",
                out.trim().replace('\n', " | ")
            );
            assert!(out.contains("STATUS 405"), "{mode}: {out}\n{err}");
            assert!(
                out.contains("read-only egress"),
                "{mode}: response body lost: {out}"
            );
            if mode == "expect" {
                assert!(out.contains("SENT_AT_RESPONSE 0 "), "{out}");
                let ms: f64 = out
                    .split("MS ")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap();
                assert!(ms < 3000.0, "h2 denial took {ms} ms");
            }
        }
    } else {
        eprintln!("note: node is not installed; skipped the HTTP/2 100-continue client");
    }
    assert!(
        !env.up.access_log().contains("/upload"),
        "{}",
        env.up.access_log()
    );
    // allowed: the same upload with Expect through the injecting handler arrives intact
    let small = env.topo.tmp.path("small.bin");
    std::fs::write(&small, &data[..4 << 20]).unwrap();
    let at = format!("@{}", small.display());
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = env.curl(&[
            version,
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "5",
            "--data-binary",
            &at,
            "https://api.test/upload",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out.trim(),
            format!("{} {}", sha256_hex(&data[..4 << 20]), 4 << 20),
            "{version}"
        );
    }
}

#[test]
fn head_204_304_and_chunked_responses_are_correct() {
    let env = setup("proto-edge", &[]);
    for version in ["--http1.1", "--http2"] {
        // HEAD keeps Content-Length and sends no body: the next response on the same
        // connection must still parse
        let (code, out, err) = env.curl(&[
            version,
            "-sS",
            "-I",
            "https://api.test/bytes/100000",
            "--next",
            "--cacert",
            &env.ca,
            version,
            "https://api.test/echo",
        ]);
        assert_eq!(code, 0, "{version}: {err}");
        let lower = out.to_lowercase();
        assert!(lower.contains("content-length: 100000"), "{version}: {out}");
        assert!(out.contains("\"path\":\"/echo\""), "{version}: {out}");
        let (code, out, err) = env.curl(&[version, "-i", "https://api.test/status/204"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(" 204"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "204 with a body: {out:?}");
        let (code, out, err) = env.curl(&[
            version,
            "-i",
            "-H",
            "If-None-Match: \"v1\"",
            "https://api.test/etag",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(" 304"), "{out}");
        assert!(out.to_lowercase().contains("etag: \"v1\""), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "304 with a body: {out:?}");
        let (code, out, _) = env.curl(&[version, "-i", "https://api.test/etag"]);
        assert_eq!(code, 0);
        assert!(
            out.contains(" 200") && out.ends_with("versioned body\n"),
            "{out}"
        );
        // a response without length streams through (chunked on h1)
        let (code, out, err) = env.curl(&[version, "-i", "https://api.test/chunked/5"]);
        assert_eq!(code, 0, "{err}");
        let body: String = (0..5).map(|i| format!("chunk {i}\n")).collect();
        assert!(out.ends_with(&body), "{out}");
        if version == "--http1.1" {
            assert!(
                out.to_lowercase().contains("transfer-encoding: chunked"),
                "{out}"
            );
        }
    }
}

#[test]
fn alt_svc_h3_advertisements_are_stripped_unless_kept() {
    let env = setup("proto-altsvc", &[]);
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = env.curl(&[version, "-i", "https://api.test/altsvc/mixed"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.to_lowercase().starts_with("alt-svc:"))
            .collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert_eq!(
            lines[0].split_once(':').unwrap().1.trim(),
            r#"h2="alt.test:443"; ma=60"#,
            "{out}"
        );
        let (code, out, _) = env.curl(&[version, "-i", "https://api.test/altsvc/h3only"]);
        assert_eq!(code, 0);
        assert!(out.contains(" 200"), "{out}");
        assert!(!out.to_lowercase().contains("alt-svc"), "{out}");
    }
    drop(env);
    let env = setup("proto-altsvc-keep", &["--keep-alt-svc"]);
    let (code, out, _) = env.curl(&["-i", "https://api.test/altsvc/mixed"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(r#"h3=":443"; ma=86400, h2="alt.test:443"; ma=60, h3-29=":443"; ma=86400"#),
        "{out}"
    );
}

#[test]
fn gzip_bodies_pass_through_byte_identical() {
    let env = setup("proto-gzip", &[]);
    let body = env.topo.tmp.path("gz.bin");
    let hdrs = env.topo.tmp.path("gz.headers");
    for version in ["--http1.1", "--http2"] {
        let (code, _, err) = env.curl(&[
            version,
            "-H",
            "accept-encoding: gzip",
            "-D",
            hdrs.to_str().unwrap(),
            "-o",
            body.to_str().unwrap(),
            "https://ro.test/gzip/300000",
        ]);
        assert_eq!(code, 0, "{err}");
        let h = std::fs::read_to_string(&hdrs).unwrap().to_lowercase();
        let header = |name: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name}: {h}"))
        };
        assert_eq!(header("content-encoding"), "gzip");
        let got = std::fs::read(&body).unwrap();
        assert_eq!(got[..2], [0x1f, 0x8b], "{version}: not gzip");
        assert_eq!(sha256_hex(&got), header("x-sha256-encoded"), "{version}");
        assert_eq!(header("content-length"), got.len().to_string(), "{version}");
        // and it is real gzip: curl --compressed decodes it to the plain stream
        let (code, _, err) = env.curl(&[
            version,
            "--compressed",
            "-o",
            body.to_str().unwrap(),
            "https://ro.test/gzip/300000",
        ]);
        assert_eq!(code, 0, "{err}");
        let plain = std::fs::read(&body).unwrap();
        assert_eq!(plain.len(), 300000);
        assert_eq!(sha256_hex(&plain), header("x-sha256-plain"));
    }
    // the client's Accept-Encoding reaches the upstream unchanged (no credential on ro.test)
    let (code, out, _) = env.curl(&[
        "-H",
        "accept-encoding: br, gzip;q=0.5",
        "https://ro.test/echo",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["headers"]["accept-encoding"], "br, gzip;q=0.5");
    // A request carrying a credential asks for identity encoding, so the echo guard can read
    // the body: the same content arrives unencoded ...
    let (code, _, err) = env.curl(&[
        "-H",
        "accept-encoding: gzip",
        "-D",
        hdrs.to_str().unwrap(),
        "-o",
        body.to_str().unwrap(),
        "https://api.test/gzip/300000",
    ]);
    assert_eq!(code, 0, "{err}");
    let h = std::fs::read_to_string(&hdrs).unwrap().to_lowercase();
    assert!(!h.contains("content-encoding"), "{h}");
    let plain = std::fs::read(&body).unwrap();
    assert_eq!(plain.len(), 300000);
    // ... and an upstream that encodes anyway is refused, naming why (fail closed)
    let (code, out, _) = env.curl(&["-i", "https://api.test/gzip-always/1000"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("HTTP/2 502") || out.starts_with("HTTP/1.1 502"),
        "{out}"
    );
    assert!(out.contains("content-encoding gzip"), "{out}");
}

/// An upload answered before it was read — by the upstream (`/echo` answers without reading
/// the body), by a handler (`get-only`'s 405) — does not cost the HTTP/1.1 client its
/// keep-alive connection: egret reads the rest of the upload after the answer, and the next
/// request on the connection is served. The client sends each body only once the answer came,
/// so the upload is still unread when the exchange ends.
#[test]
fn an_upload_answered_before_it_was_read_keeps_the_connection() {
    let env = setup("proto-early", &[]);
    let script = include_str!("../../../clients/early_answer_keep_alive.py");
    for (host, path, status) in [("api.test", "/echo", "200"), ("ro.test", "/upload", "405")] {
        let out = env
            .topo
            .in_sandbox("python3", &["-c", script, host, &env.ca, path, "3"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let want: String = (0..3).map(|i| format!("{i} {status} -\n")).collect();
        assert_eq!(
            text,
            want,
            "{host}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.egret.logs()
        );
    }
}

//! Request smuggling: HTTP/1.1 framing ambiguities and h2 → h1 downgrade tricks. Every smuggled
//! request names a denied host, so if it ever reaches the upstream it rode inside a forwarded one.

use super::{cred_setup, py, raw_exchange};
use std::time::Duration;

fn smuggle_cases() -> Vec<(&'static str, String)> {
    // Every inner request names denied.test: if egret parsed it as a request it would deny it
    // (403) and never forward it; if it ever appears in the upstream's log, it rode through
    // inside a forwarded request (desync).
    let inner = "GET /smuggled HTTP/1.1\r\nHost: denied.test\r\n\r\n";
    let h = "POST /front HTTP/1.1\r\nHost: allowed.test\r\n";
    let chunk = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    vec![
        (
            "CL.TE",
            format!(
                "{h}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}",
                5 + inner.len()
            ),
        ),
        (
            "TE.CL",
            format!("{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"),
        ),
        (
            "duplicate CL",
            format!(
                "{h}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{inner}",
                inner.len()
            ),
        ),
        (
            "CL list",
            format!("{h}Content-Length: 0, {}\r\n\r\n{inner}", inner.len()),
        ),
        (
            "TE xchunked",
            format!("{h}Transfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "TE space before colon",
            format!("{h}Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "TE chunked, identity",
            format!("{h}Transfer-Encoding: chunked, identity\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "TE obs-fold",
            format!("{h}Transfer-Encoding:\r\n chunked\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "header obs-fold",
            format!("{h}X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n{inner}"),
        ),
        (
            "bare LF",
            format!(
                "POST /front HTTP/1.1\nHost: allowed.test\nContent-Length: {}\n\n{}",
                inner.len(),
                inner.replace("\r\n", "\n")
            ),
        ),
        (
            "bare CR",
            format!("{h}X-A: b\rContent-Length: 0\r\n\r\n{inner}"),
        ),
        (
            "NUL in header",
            format!("{h}X-A: b\0c\r\nContent-Length: 0\r\n\r\n{inner}"),
        ),
        (
            "chunk-size overflow",
            format!(
                "{h}Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n{inner}"
            ),
        ),
        (
            "chunk extension with LF",
            format!("{h}Transfer-Encoding: chunked\r\n\r\n0;a\nb\r\n\r\n{inner}"),
        ),
    ]
}

#[test]
fn http1_request_smuggling_never_reaches_the_upstream() {
    let env = cred_setup("sec-smuggle");
    let mut summary = String::new();
    for (name, payload) in smuggle_cases() {
        let resp = raw_exchange(&env.topo, "10.200.0.2", 80, payload.as_bytes(), 2.0);
        let statuses: Vec<&str> = resp
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        summary.push_str(&format!("{name}: {statuses:?}\n"));
    }
    eprintln!("{summary}");
    std::thread::sleep(Duration::from_millis(300));
    let log = env.up.access_log();
    assert!(
        !log.contains("smuggled") && !log.contains("denied.test"),
        "a smuggled request reached the upstream:\n{log}\n{summary}"
    );
}

/// A minimal h2c client (no `h2` module in the sandbox): HPACK literals without indexing.
const H2_SCRIPT: &str = include_str!("../../../clients/h2c_header_cases.py");

#[test]
fn h2_to_h1_downgrade_tricks_never_reach_the_upstream() {
    let env = cred_setup("sec-h2");
    let base = |path: &str| -> Vec<(String, String)> {
        vec![
            (":method".into(), "GET".into()),
            (":scheme".into(), "http".into()),
            (":path".into(), path.into()),
            (":authority".into(), "allowed.test".into()),
        ]
    };
    let mut cases: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut with = |name: &str, path: &str, extra: &[(&str, &str)]| {
        let mut hs = base(path);
        hs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        cases.push((name.into(), hs));
    };
    with("control", "/h2ok", &[]);
    with(
        "CRLF in value",
        "/h2smug-crlf",
        &[(
            "x-a",
            "b\r\nHost: denied.test\r\n\r\nGET /smuggled HTTP/1.1",
        )],
    );
    with("LF in value", "/h2smug-lf", &[("x-a", "b\nx-b: c")]);
    with(
        "CRLF in path",
        "/h2smug-path HTTP/1.1\r\nHost: denied.test\r\n\r\nGET /smuggled",
        &[],
    );
    with(
        "transfer-encoding",
        "/h2smug-te",
        &[("transfer-encoding", "chunked")],
    );
    with(
        "connection header",
        "/h2smug-conn",
        &[("connection", "keep-alive")],
    );
    with("colon in name", "/h2smug-name", &[("x-a:b", "c")]);
    with("uppercase name", "/h2smug-upper", &[("X-Upper", "c")]);
    with("space in name", "/h2smug-space", &[("x a", "c")]);
    with(
        "host differs from :authority",
        "/h2smug-host",
        &[("host", "denied.test")],
    );
    let json = serde_json::to_string(&cases).unwrap();
    let out = py(&env.topo, H2_SCRIPT, &[&json]);
    eprintln!("{out}");
    assert!(
        out.lines().next().unwrap().contains("HEADERS"),
        "control failed: {out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = env.up.access_log();
    assert!(log.contains("/h2ok"), "{log}");
    assert!(
        !log.contains("h2smug") && !log.contains("smuggled") && !log.contains("denied.test"),
        "a malformed h2 request was forwarded:\n{log}\n{out}"
    );
}

//! Observability: one JSON audit event per request and per connection, Prometheus metrics, and
//! secrets that never reach any output egret produces.
use egret_e2e::*;
use std::collections::HashMap;
use std::time::Duration;

/// Every audit event carries exactly these fields (README, "Audit events").
const FIELDS: [&str; 27] = [
    "ts",
    "sandbox",
    "generation",
    "conn",
    "client",
    "host",
    "dst",
    "proto",
    "method",
    "path",
    "rule",
    "handler",
    "module_sha256",
    "decision",
    "status",
    "req_bytes",
    "resp_bytes",
    "ttfb_ms",
    "total_ms",
    "error",
    "classified",
    "first_byte_ms",
    "masked",
    "instance_wait_ms",
    "handler_fields",
    "shadow",
    "decided_by",
];

const SECRET: &str = "s3cr3t-VALUE-4b1d2e9f7a";

fn policy() -> String {
    format!(
        r#"
internet = false
intercept_https = true
allowed_hosts = ["allowed.test", "pinned.test", "vcs.test", "reveal.test", "broken.test"]
passthrough_hosts = ["pinned.test"]
denied_hosts = ["denied.test"]

[resolve]
"allowed.test" = "10.200.0.2"
"pinned.test" = "10.200.0.2"
"broken.test" = "10.200.0.2"
"vcs.test" = "10.200.0.2"
"reveal.test" = "10.200.0.2"

[handlers.trap]
module = "{trap}"

[[routes]]
host = "broken.test"
handler = "trap"
{inject}
[handlers.reveal]
module = "{reveal}"
params = {{ secret = "SEC" }}
secrets = ["SEC"]
reveal = ["SEC"]

[[routes]]
host = "reveal.test"
handler = "reveal"
"#,
        trap = handler_module("trap"),
        inject = inject_header_policy("SEC", r#"env = "OBS_SECRET""#, &["vcs.test"]),
        reveal = handler_module("log-secret"),
    )
}

struct Env {
    topo: Topology,
    _up: Upstream,
    egret: Egret,
    sock: String,
    audit: String,
    ca: String,
    pki: UpstreamPki,
}

fn setup(id: &str, rust_log: &str) -> Env {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki) = Upstream::start_tls(&topo, &["allowed.test", "pinned.test"]);
    let p = write(&topo, "policy.toml", &policy());
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let audit = topo.tmp.path("audit.log").to_string_lossy().into_owned();
    let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
    let args = [
        "--policy",
        &p,
        "--admin-socket",
        &sock,
        "--audit-log",
        &audit,
        "--ca-out",
        &ca,
        "--upstream-ca",
        pki.ca.to_str().unwrap(),
    ];
    let env = [("RUST_LOG", rust_log), ("OBS_SECRET", SECRET)];
    let egret = Egret::start_with_env(&topo, id, &args, &env).expect("egret starts");
    Env {
        topo,
        _up: up,
        egret,
        sock,
        audit,
        ca,
        pki,
    }
}

impl Env {
    fn events(&self) -> Vec<serde_json::Value> {
        parse_audit(&std::fs::read_to_string(&self.audit).unwrap_or_default())
    }
    /// Wait for the one event matching `pred` (connection events are written when the
    /// connection ends, just after the client exits).
    fn event(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        for _ in 0..250 {
            let found: Vec<_> = self.events().into_iter().filter(|e| pred(e)).collect();
            match found.len() {
                0 => std::thread::sleep(Duration::from_millis(20)),
                1 => return found.into_iter().next().unwrap(),
                n => panic!("{n} audit events for {what}: {found:?}"),
            }
        }
        panic!(
            "no audit event for {what}:\n{}\n{}",
            std::fs::read_to_string(&self.audit).unwrap_or_default(),
            self.egret.logs()
        );
    }
    fn admin(&self, path: &str) -> String {
        let out = admin_curl(&self.sock)
            .arg(format!("http://egret{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn curl_ok(env: &Env, args: &[&str]) -> String {
    let (code, out, err) = env.topo.curl(args);
    assert_eq!(code, 0, "curl {args:?}: {err}\n{}", env.egret.logs());
    out
}

/// Checks shared by every event: the exact field set and well-formed common fields.
fn check_common(ev: &serde_json::Value, sandbox: &str) {
    let obj = ev.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{ev}");
    assert_eq!(ev["sandbox"], sandbox, "{ev}");
    // Nothing is asked about without --ask.
    assert_eq!(ev["decided_by"], "policy", "{ev}");
    let ts = ev["ts"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "ts not RFC 3339 UTC: {ts}"
    );
    assert!(ev["generation"].as_u64().unwrap() >= 1, "{ev}");
    assert!(ev["conn"].as_u64().is_some(), "{ev}");
    assert!(
        ev["client"]
            .as_str()
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .is_ok(),
        "{ev}"
    );
    assert!(
        ev["dst"]
            .as_str()
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .is_ok(),
        "{ev}"
    );
    assert!(ev["total_ms"].as_f64().unwrap() >= 0.0, "{ev}");
    if let Some(t) = ev["ttfb_ms"].as_f64() {
        assert!(t <= ev["total_ms"].as_f64().unwrap() + 0.001, "{ev}");
    }
    assert!(
        [
            "client-first",
            "server-first",
            "silent",
            "incomplete",
            "eof"
        ]
        .contains(&ev["classified"].as_str().unwrap()),
        "{ev}"
    );
    if let Some(t) = ev["first_byte_ms"].as_f64() {
        assert!(t >= 0.0, "{ev}");
    }
}

#[test]
fn every_request_and_connection_gets_one_audit_event() {
    let env = setup("obs-audit", "info");
    let sbx = "obs-audit";

    // plain HTTP/1.1, allowed, with a body and a query that must be masked
    let out = curl_ok(
        &env,
        &["-d", "hello", "http://allowed.test/echo?token=qq-secret"],
    );
    let ev = env.event("http1 forward", |e| {
        e["proto"] == "http1" && e["host"] == "allowed.test"
    });
    check_common(&ev, sbx);
    assert_eq!(ev["method"], "POST", "{ev}");
    assert_eq!(ev["path"], "/echo?[masked]", "{ev}");
    assert_eq!(ev["decision"], "forward", "{ev}");
    assert_eq!(ev["status"], 200, "{ev}");
    assert_eq!(ev["req_bytes"], 5, "{ev}");
    assert_eq!(ev["resp_bytes"], out.len() as u64, "{ev}");
    // dst is what the sandbox dialled: the synthetic address egret's DNS gave it
    assert!(
        ev["dst"].as_str().unwrap().starts_with("[fd65:6772:6574::"),
        "{ev}"
    );
    assert!(ev["dst"].as_str().unwrap().ends_with("]:80"), "{ev}");
    assert!(ev["rule"].as_str().unwrap().contains("allowed"), "{ev}");
    assert!(ev["handler"].is_null() && ev["module_sha256"].is_null() && ev["error"].is_null());
    assert!(ev["ttfb_ms"].as_f64().is_some(), "{ev}");

    // h2c with prior knowledge
    curl_ok(
        &env,
        &["--http2-prior-knowledge", "http://allowed.test/echo"],
    );
    let ev = env.event("h2c", |e| e["proto"] == "h2");
    check_common(&ev, sbx);
    assert_eq!(ev["decision"], "forward", "{ev}");

    // intercepted HTTPS over h2
    let out = curl_ok(
        &env,
        &[
            "--http2",
            "--cacert",
            &env.ca,
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{http_version}",
            "https://allowed.test/bytes/1000",
        ],
    );
    assert_eq!(out, "1000 2");
    let ev = env.event("https-h2", |e| e["proto"] == "https-h2");
    check_common(&ev, sbx);
    assert_eq!(ev["resp_bytes"], 1000, "{ev}");
    assert!(ev["dst"].as_str().unwrap().ends_with(":443"), "{ev}");

    // denied by the policy
    let (_, out, _) = env.topo.curl(&[
        "-s",
        "--resolve",
        "denied.test:80:10.200.0.2",
        "http://denied.test/x",
    ]);
    let ev = env.event("deny", |e| e["host"] == "denied.test");
    check_common(&ev, sbx);
    assert_eq!(ev["decision"], "deny", "{ev}");
    assert_eq!(ev["status"], 403, "{ev}");
    assert_eq!(ev["resp_bytes"], out.len() as u64, "{ev}");
    assert!(ev["rule"].as_str().unwrap().contains("denied"), "{ev}");

    // a handler that traps: not forwarded, reported with its module hash
    let (_, out, _) = env.topo.curl(&["-s", "http://broken.test/echo"]);
    assert!(out.contains("trap"), "{out}");
    let ev = env.event("handler failure", |e| e["host"] == "broken.test");
    check_common(&ev, sbx);
    assert_eq!(ev["decision"], "error", "{ev}");
    assert_eq!(ev["status"], 502, "{ev}");
    assert_eq!(ev["handler"], "trap", "{ev}");
    let sha = ev["module_sha256"].as_str().unwrap();
    let want = sha256_hex(&std::fs::read(handler_module("trap")).unwrap());
    assert_eq!(sha, want, "{ev}");
    assert!(ev["error"].as_str().unwrap().starts_with("trap"), "{ev}");

    // TLS pass-through: one connection event with byte counts
    curl_ok(
        &env,
        &[
            "--cacert",
            env.pki.ca.to_str().unwrap(),
            "https://pinned.test/echo",
        ],
    );
    let ev = env.event("passthrough", |e| e["proto"] == "tls-passthrough");
    check_common(&ev, sbx);
    assert_eq!(ev["decision"], "forward", "{ev}");
    assert_eq!(ev["host"], "pinned.test", "{ev}");
    assert!(ev["method"].is_null() && ev["path"].is_null() && ev["status"].is_null());
    assert!(ev["req_bytes"].as_u64().unwrap() > 100, "{ev}");
    assert!(ev["resp_bytes"].as_u64().unwrap() > 100, "{ev}");

    // opaque TCP (server speaks first)
    let banner = include_str!("../../clients/banner_ping.py");
    let o = env.topo.in_sandbox("python3", &["-c", banner]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ping"), "{o:?}");
    let ev = env.event("tcp", |e| e["proto"] == "tcp");
    check_common(&ev, sbx);
    assert_eq!(ev["decision"], "forward", "{ev}");
    assert_eq!(ev["host"], "allowed.test", "{ev}");
    assert_eq!(ev["req_bytes"], 5, "{ev}");
    assert!(ev["ttfb_ms"].is_null(), "{ev}");

    // stdout carries no audit lines when --audit-log is given
    assert!(env.egret.audit_events().is_empty());

    // The metrics agree with what was driven.
    let m = parse_prometheus(&env.admin("/metrics"));
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no sample {k}"));
    assert!(get("egret_requests_total{decision=\"forward\",status_class=\"2xx\"}") >= 3.0);
    assert_eq!(
        get("egret_requests_total{decision=\"deny\",status_class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        get("egret_requests_total{decision=\"error\",status_class=\"5xx\"}"),
        1.0
    );
    assert_eq!(get("egret_handler_failures_total{kind=\"trap\"}"), 1.0);
    assert_eq!(get("egret_handler_invocations_total"), 1.0);
    assert_eq!(get("egret_handler_duration_seconds_count"), 1.0);
    assert_eq!(
        get("egret_tunnels_total{proto=\"tcp\",decision=\"forward\"}"),
        1.0
    );
    assert!(get("egret_upstream_connect_duration_seconds_count") >= 4.0);
    assert!(get("egret_upstream_tls_handshake_duration_seconds_count") >= 1.0);
    assert!(get("egret_leaf_mints_total") >= 1.0);
    assert!(get("egret_sent_bytes_total") >= 1000.0);
    assert_eq!(get("egret_policy_generation"), 1.0);
    assert!(get("egret_dns_queries_total") >= 1.0);
}

#[test]
fn live_tail_streams_events_and_filters_denials() {
    let env = setup("obs-tail", "info");
    let out = env.topo.tmp.path("tail.out");
    let mut tail = std::process::Command::new(bin("egret"))
        .args(["ctl", "--socket", &env.sock, "tail", "--deny-only"])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    curl_ok(&env, &["http://allowed.test/echo"]);
    env.topo.curl(&[
        "-s",
        "--resolve",
        "denied.test:80:10.200.0.2",
        "http://denied.test/x",
    ]);
    let mut text = String::new();
    wait_until(Duration::from_secs(5), || {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        text.contains("denied.test")
    });
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        text.contains("obs-tail") && text.contains("deny") && text.contains("denied.test"),
        "{text}"
    );
    assert!(
        !text.contains("allowed.test"),
        "--deny-only let a forward through: {text}"
    );
}

#[test]
fn secrets_never_reach_logs_audit_metrics_or_admin_answers() {
    // Debug logging everywhere egret's own code logs, so nothing hides behind a level.
    let env = setup(
        "obs-secret",
        "debug,wasmtime=info,cranelift_codegen=info,wasmtime_cranelift=info,cranelift_frontend=info",
    );
    // a handler that reveals the secret and logs it on purpose (and, test-only, answers with it)
    let out = curl_ok(&env, &["http://reveal.test/x?k=v"]);
    assert_eq!(out, SECRET, "the test handler did not reveal the secret");
    // a handler that injects it into a header the upstream echoes back in its body and in a
    // response header; the sandbox also sends it in a header of its own and in the query
    // string. The echo guard masks every occurrence before the sandbox sees the response.
    let hdr = format!("x-client-copy: {SECRET}");
    let url = format!("http://vcs.test/echo?token={SECRET}");
    let out = curl_ok(&env, &["-i", "-H", &hdr, &url]);
    assert!(
        !out.contains(SECRET),
        "the echo guard let the secret through: {out}"
    );
    let masked = "*".repeat(SECRET.len());
    assert!(
        out.to_lowercase()
            .contains(&format!("x-echoed-token: {masked}")),
        "the upstream did not echo the (masked) secret in a response header: {out}"
    );
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    assert_eq!(
        json(body)["headers_sha256"]["x-auth-token"],
        sha256_hex(SECRET.as_bytes()),
        "{out}"
    );
    env.event("reveal", |e| e["host"] == "reveal.test");
    let ev = env.event("inject", |e| e["host"] == "vcs.test");
    assert_eq!(ev["handler"], "inject", "{ev}");
    // The handler's log call arrived (redacted), so the check below is not vacuous.
    assert!(
        env.egret
            .wait_log("logged on purpose", Duration::from_secs(5)),
        "{}",
        env.egret.logs()
    );
    let outputs = [
        ("stdout+stderr", env.egret.logs()),
        ("audit log", std::fs::read_to_string(&env.audit).unwrap()),
        ("metrics", env.admin("/metrics")),
        ("status", env.admin("/v1/status")),
        ("policy", env.admin("/v1/policy")),
        ("modules", env.admin("/v1/modules")),
    ];
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        assert!(
            !text.contains(SECRET),
            "the secret leaked into {what}:\n{text}"
        );
    }
}

#[test]
fn metrics_endpoint_is_strict_prometheus_text() {
    let env = setup("obs-metrics", "info");
    curl_ok(&env, &["http://allowed.test/echo"]);
    let out = admin_curl(&env.sock)
        .args(["-i", "http://egret/metrics"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.to_lowercase().contains("content-type: text/plain"),
        "{text}"
    );
    let body = env.admin("/metrics");
    let m = parse_prometheus(&body);
    assert!(m.len() > 40, "only {} samples:\n{body}", m.len());
    // no label value the sandbox chose (host names) may appear
    assert!(!body.contains("allowed.test"), "{body}");
}

/// A strict reader of the Prometheus text format (0.0.4): every family has one TYPE line
/// before its samples, every sample is `name{label="value",...} number`, histogram samples
/// belong to their family, and no series appears twice. Returns series → value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, ()> = HashMap::new();
    let mut samples = HashMap::new();
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        assert!(!line.trim().is_empty(), "blank line in exposition:\n{text}");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts
                .next()
                .unwrap_or_else(|| panic!("bad comment: {line}"));
            let val = parts
                .next()
                .unwrap_or_else(|| panic!("bad comment: {line}"));
            assert!(is_name(name), "bad metric name in {line}");
            match kind {
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&val),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.into(), val.into()).is_none(),
                        "second TYPE: {line}"
                    );
                    assert!(
                        !samples
                            .keys()
                            .any(|k: &String| family_of(k, &types) == name),
                        "TYPE after samples: {line}"
                    );
                }
                "HELP" => {
                    assert!(
                        helps.insert(name.into(), ()).is_none(),
                        "second HELP: {line}"
                    );
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                for pair in labels.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(is_name(k) && !k.contains(':'), "bad label name: {line}");
                    assert!(
                        v.len() >= 2
                            && v.starts_with('"')
                            && v.ends_with('"')
                            && !v[1..v.len() - 1].contains('"'),
                        "bad label value: {line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad metric name: {line}");
        let family = family_of(series, &types);
        let ty = types
            .get(&family)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if ty == "histogram" {
            assert!(
                [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count")
                ]
                .contains(&name.to_string()),
                "{line}"
            );
        } else {
            assert_eq!(name, family, "{line}");
        }
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "duplicate series: {line}"
        );
    }
    assert!(!samples.is_empty(), "no samples");
    samples
}

/// The family a series belongs to (histogram suffixes stripped when the base has a TYPE).
fn family_of(series: &str, types: &HashMap<String, String>) -> String {
    let name = series.split('{').next().unwrap();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

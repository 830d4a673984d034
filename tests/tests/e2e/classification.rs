//! How a connection is classified, whatever the timing: a client's first bytes decide whenever
//! they come (waiting never buys a tunnel past interception), server-speaks-first protocols still
//! work where opaque TCP is allowed, and names never lead to non-public addresses the operator
//! did not allow (SSRF through DNS). SECURITY.md maps each attack to its test here.
use egret_e2e::*;
use std::time::Duration;

const TOKEN: &str = "vcs-token-late-5ec7e7";

/// egret with HTTPS interception, an injecting handler on vcs.test, get-only on get.test,
/// files.test and allowed.test plainly allowed; the upstream speaks TLS, HTTP and a banner.
fn setup(id: &str, extra: &[&str]) -> Intercepted {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki) = Upstream::start_tls(
        &topo,
        &["vcs.test", "files.test", "allowed.test", "get.test"],
    );
    let policy = format!(
        r#"
internet = false
intercept_https = true
allowed_hosts = ["vcs.test", "files.test", "allowed.test", "get.test"]

[resolve]
"vcs.test" = "10.200.0.2"
"files.test" = "10.200.0.2"
"allowed.test" = "10.200.0.2"
"get.test" = "10.200.0.2"
{inject}
[handlers.readonly]
module = "{get_only}"

[[routes]]
host = "get.test"
handler = "readonly"
"#,
        inject = inject_header_policy("VCS_TOKEN", r#"env = "VCS_TOKEN""#, &["vcs.test"]),
        get_only = handler_module("get-only"),
    );
    Intercepted::start(
        topo,
        up,
        id,
        &policy,
        &pki.ca,
        extra,
        &[("VCS_TOKEN", TOKEN)],
    )
}

/// Connect, wait `delay` seconds, then do a TLS handshake trusting only `ca` and one GET.
const LATE_TLS: &str = include_str!("../../clients/late_tls_get.py");

/// Connect, wait `delay` seconds, then send one raw HTTP/1.1 request; print the status line.
const LATE_HTTP: &str = include_str!("../../clients/late_http_request.py");

/// Connect, optionally send `first` (hex), then read what comes within `secs`; print what
/// happened: the bytes read, or the exception's type.
const PROBE: &str = include_str!("../../clients/probe_first_bytes.py");

fn run_py(topo: &Topology, script: &str, args: &[&str]) -> String {
    let mut a = vec!["-c", script];
    a.extend_from_slice(args);
    let o = topo.in_sandbox("python3", &a);
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn event(
    egret: &Egret,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    egret
        .wait_audit(Duration::from_secs(15), pred)
        .unwrap_or_else(|| panic!("no audit event for {what}:\n{}", egret.logs()))
}

// ---------------------------------------------------------------------------------------------
// Attack: delay the ClientHello (or the request line) to get a tunnel

#[test]
fn a_late_client_hello_is_intercepted_like_a_prompt_one() {
    let env = setup("late-tls", &[]);
    let t = &env.topo;
    // 1 s and 5 s of silence after connect(), to a plainly allowed host and to a handler route,
    // all at once (the waits overlap)
    let cases = [
        ("files.test", "1"),
        ("vcs.test", "1"),
        ("files.test", "5"),
        ("vcs.test", "5"),
    ];
    let outs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(host, delay)| s.spawn(|| run_py(t, LATE_TLS, &[host, delay, &env.ca])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((host, delay), out) in cases.iter().zip(&outs) {
        let v = json(out);
        // the certificate verified against the sandbox CA only: intercepted, not tunnelled
        assert!(
            v["issuer"]
                .as_str()
                .is_some_and(|i| i.starts_with("egret sandbox CA")),
            "{host} after {delay} s: {out}\n{}",
            env.egret.logs()
        );
        assert!(v["status"].as_str().unwrap().contains(" 200"), "{out}");
        let echo = json(v["body"].as_str().unwrap());
        if *host == "vcs.test" {
            // the handler on that route ran
            assert_injected_and_masked(&echo, "x-auth-token", TOKEN);
        } else {
            assert!(echo["headers"].get("x-auth-token").is_none(), "{out}");
        }
    }
    // measured from egret's accept, which the client's connect() return may precede slightly
    let want_ms = |d: &str| d.parse::<f64>().unwrap() * 1000.0 - 100.0;
    for (host, delay) in cases {
        let ev = event(&env.egret, &format!("{host} after {delay} s"), |e| {
            e["host"] == host
                && e["proto"] == "https-h1"
                && e["first_byte_ms"]
                    .as_f64()
                    .is_some_and(|ms| ms >= want_ms(delay) && ms < want_ms(delay) + 4000.0)
        });
        assert_eq!(ev["classified"], "client-first", "{ev}");
        assert_eq!(ev["decision"], "forward", "{ev}");
        assert_eq!(ev["status"], 200, "{ev}");
        if host == "vcs.test" {
            assert_eq!(ev["handler"], "inject", "{ev}");
        }
    }
    // nothing was spliced as opaque TCP
    assert!(
        !env.egret.audit_events().iter().any(|e| e["proto"] == "tcp"),
        "{:?}",
        env.egret.audit_events()
    );
    let log = env.up.access_log();
    assert_eq!(log.matches("/echo").count(), 4, "{log}");
}

#[test]
fn a_late_request_line_is_decided_like_a_prompt_one() {
    let env = setup("late-http", &[]);
    let t = &env.topo;
    let post = run_py(t, LATE_HTTP, &["get.test", "1", "POST"]);
    assert!(
        post.starts_with("HTTP/1.1 405"),
        "{post}\n{}",
        env.egret.logs()
    );
    let get = run_py(t, LATE_HTTP, &["get.test", "1", "GET"]);
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert_eq!(
        json(get.lines().nth(1).unwrap())["headers"]["x-egret-handler"],
        "get-only"
    );
    let inject = run_py(t, LATE_HTTP, &["vcs.test", "1", "GET"]);
    assert!(inject.starts_with("HTTP/1.1 200"), "{inject}");
    assert_injected_and_masked(&json(inject.lines().nth(1).unwrap()), "x-auth-token", TOKEN);
    let ev = event(&env.egret, "late POST", |e| {
        e["host"] == "get.test" && e["method"] == "POST"
    });
    assert_eq!(ev["proto"], "http1", "{ev}");
    assert_eq!(ev["decision"], "respond", "{ev}");
    assert_eq!(ev["status"], 405, "{ev}");
    assert_eq!(ev["classified"], "client-first", "{ev}");
    assert!(ev["first_byte_ms"].as_f64().unwrap() >= 900.0, "{ev}");
    let log = env.up.access_log();
    assert!(!log.contains("POST"), "{log}");
    assert!(!env.egret.audit_events().iter().any(|e| e["proto"] == "tcp"));
}

#[test]
fn server_first_protocols_work_and_silence_elsewhere_is_refused_after_the_handshake_time() {
    let env = setup("late-banner", &["--tls-handshake-timeout-ms", "2000"]);
    let t = &env.topo;
    // an allowed destination whose server greets first: spliced once the server spoke
    let out = run_py(t, PROBE, &["allowed.test", "2222", "", "8"]);
    assert!(
        out.contains("DATA SSH-2.0-egret-test-banner") && out.contains("ECHO ping"),
        "{out}\n{}",
        env.egret.logs()
    );
    let ev = event(&env.egret, "banner", |e| {
        e["host"] == "allowed.test" && e["proto"] == "tcp"
    });
    assert_eq!(ev["decision"], "forward", "{ev}");
    assert_eq!(ev["classified"], "server-first", "{ev}");
    // the same server dialled by address (denied: internet = false): no upstream connection,
    // reset once the handshake time is over
    let banners = env.up.access_log().matches("BANNER-CONN").count();
    let started = std::time::Instant::now();
    let out = run_py(t, PROBE, &["10.200.0.3", "2222", "", "8"]);
    assert!(out.contains("ERR ConnectionResetError"), "{out}");
    assert!(started.elapsed() >= Duration::from_millis(1900), "{out}");
    assert_eq!(env.up.access_log().matches("BANNER-CONN").count(), banners);
    let ev = event(&env.egret, "silent denied", |e| {
        e["dst"]
            .as_str()
            .is_some_and(|d| d.starts_with("10.200.0.3:"))
            && e["decision"] == "deny"
    });
    assert_eq!(ev["classified"], "silent", "{ev}");
    // a handler route whose client says nothing: held, then refused with the reason
    let out = run_py(t, PROBE, &["vcs.test", "443", "", "8"]);
    assert!(out.contains("ERR ConnectionResetError"), "{out}");
    let ev = event(&env.egret, "silent handler route", |e| {
        e["host"] == "vcs.test" && e["classified"] == "silent"
    });
    assert_eq!(ev["decision"], "deny", "{ev}");
    assert!(
        ev["rule"].as_str().unwrap().contains("handler inject"),
        "{ev}"
    );
    // a prefix that could still become TLS, then silence: refused, never spliced (the upstream
    // would otherwise get the rest of the handshake uninspected)
    let out = run_py(t, PROBE, &["files.test", "443", "16", "8"]);
    assert!(out.contains("ERR ConnectionResetError"), "{out}");
    let ev = event(&env.egret, "stalled prefix", |e| {
        e["host"] == "files.test" && e["classified"] == "incomplete"
    });
    assert_eq!(ev["decision"], "error", "{ev}");
    // bytes that are neither TLS nor HTTP decide at once: opaque, allowed by destination
    let out = run_py(t, PROBE, &["allowed.test", "2222", "00ff", "8"]);
    assert!(out.contains("DATA SSH-2.0-egret-test-banner"), "{out}");
    assert!(!env
        .egret
        .audit_events()
        .iter()
        .any(|e| e["host"] == "files.test" && e["decision"] == "forward"));
}

// ---------------------------------------------------------------------------------------------
// Attack: reach the operator's private network through an allowed name (SSRF through DNS)

#[test]
fn allowed_names_never_lead_to_private_addresses_the_operator_did_not_allow() {
    let topo = Topology::new(SandboxNet::LoOnly);
    // A public-looking network inside the test's own namespaces: 11.200.0.0/24 on the
    // upstream's veth, 11.200.1.1 on egret's own side (its "host address").
    topo.up
        .ip(&["addr", "add", "11.200.0.2/24", "dev", "v-egr"]);
    topo.egr
        .ip(&["route", "add", "11.200.0.0/24", "dev", "v-up"]);
    topo.egr
        .ip(&["addr", "add", "11.200.1.1/32", "dev", "v-up"]);
    let _hosts = NetnsHosts::write(
        &topo.egr,
        "10.200.0.2 private.allowed.test\n\
         ::ffff:10.200.0.2 mapped.allowed.test\n\
         10.200.0.2 mixed.allowed.test\n\
         11.200.0.2 mixed.allowed.test\n\
         11.200.0.2 public.allowed.test\n\
         11.200.1.1 own.allowed.test\n\
         fd00:200::2 ula.allowed.test\n\
         10.200.0.5 later.allowed.test\n",
    );
    let up = Upstream::start(&topo, "up", None);
    // a server on egret's own address: must see no connection with data
    let own_log = topo.tmp.path("own.access.log");
    let own_ready = topo.tmp.path("own.ready");
    let mut cmd = topo.egr.cmd(bin("egret-testsrv").to_str().unwrap());
    cmd.args(["--http", "11.200.1.1:80", "--name", "own"]);
    cmd.args(["--log", own_log.to_str().unwrap()]);
    cmd.args(["--ready-file", own_ready.to_str().unwrap()]);
    let mut own = spawn(cmd, &topo.tmp.0, "own");
    wait_ready(&mut own, &own_ready, Duration::from_secs(20)).unwrap();
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let p = write(
        &topo,
        "policy.toml",
        r#"
internet = false
allowed_hosts = ["*.allowed.test"]
allowed_upstream_cidrs = ["fd00:200::/64"]
"#,
    );
    let egret =
        Egret::start(&topo, "ssrf", &["--policy", &p, "--admin-socket", &sock]).expect("egret");
    let get = |host: &str| topo.curl(&["-i", &format!("http://{host}/echo")]);

    // a name resolving to a private address: 502 naming the name, the address and the key
    let (code, out, err) = get("private.allowed.test");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    for needle in [
        "private.allowed.test",
        "10.200.0.2",
        "private (RFC 1918)",
        "allowed_upstream_cidrs",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let ev = event(&egret, "private", |e| e["host"] == "private.allowed.test");
    assert_eq!(ev["decision"], "deny", "{ev}");
    assert_eq!(ev["status"], 502, "{ev}");
    assert!(ev["error"].as_str().unwrap().contains("10.200.0.2"), "{ev}");
    // its IPv4-mapped IPv6 form: the same
    let (_, out, _) = get("mapped.allowed.test");
    assert!(
        out.starts_with("HTTP/1.1 502") && out.contains("10.200.0.2"),
        "{out}"
    );
    // one private and one public address: served, through the public one only
    let (code, out, err) = get("mixed.allowed.test");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}\n{}", egret.logs());
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(json(body)["local"], "11.200.0.2", "{out}");
    let (_, out, _) = get("public.allowed.test");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // egret's own address: refused before a byte is sent
    let (_, out, _) = get("own.allowed.test");
    assert!(
        out.starts_with("HTTP/1.1 502") && out.contains("egret's own host"),
        "{out}"
    );
    assert!(std::fs::read_to_string(&own_log)
        .unwrap_or_default()
        .is_empty());
    // allowed_upstream_cidrs allows its range
    let (_, out, _) = get("ula.allowed.test");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}\n{}", egret.logs());
    // opaque TCP to a private address: reset, audited as a denial with the reason
    let out = run_py(&topo, PROBE, &["private.allowed.test", "2222", "00ff", "5"]);
    assert!(out.contains("ERR ConnectionResetError"), "{out}");
    let ev = event(&egret, "opaque private", |e| {
        e["host"] == "private.allowed.test" && e["proto"] == "tcp"
    });
    assert_eq!(ev["decision"], "deny", "{ev}");
    assert!(
        ev["rule"]
            .as_str()
            .unwrap()
            .contains("allowed_upstream_cidrs"),
        "{ev}"
    );
    let log = up.access_log();
    for name in ["host=private.allowed.test", "host=mapped.allowed.test"] {
        assert!(!log.contains(name), "{name} reached the upstream: {log}");
    }

    // naming the range in allowed_hosts (here at runtime) is an explicit allowance
    let (code, out, err) = ctl(&sock, &["allow-host", "add", "10.200.0.0/24"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = get("private.allowed.test");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}\n{}", egret.logs());
    let (_, out, _) = get("later.allowed.test");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = run_py(&topo, PROBE, &["private.allowed.test", "2222", "", "5"]);
    assert!(out.contains("DATA SSH-2.0-egret-test-banner"), "{out}");
}

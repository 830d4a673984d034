//! HTTPS interception with an ephemeral per-sandbox CA, end to end with real clients that trust
//! only the CA (or bundle) egret wrote.
use egret_e2e::*;
use std::time::{Duration, Instant};

fn policy(extra: &str) -> String {
    format!(
        r#"
internet = false
intercept_https = true
allowed_hosts = ["allowed.test", "b.test", "selfsigned.test", "pinned.test"]
passthrough_hosts = ["pinned.test"]
{extra}
[resolve]
"allowed.test" = ["10.200.0.2", "fd00:200::2"]
"b.test" = "10.200.0.2"
"selfsigned.test" = "10.200.0.5"
"pinned.test" = "10.200.0.2"
"#
    )
}

struct Env {
    topo: Topology,
    up: Upstream,
    bad: Option<Upstream>,
    egret: Egret,
    ca: String,
    bundle: String,
    pki: UpstreamPki,
}

fn setup(id: &str) -> Env {
    let topo = Topology::new(SandboxNet::LoOnly);
    let pki = upstream_pki(
        &topo.tmp.0,
        "good",
        &["allowed.test", "b.test", "pinned.test"],
    );
    let up = Upstream::start(&topo, "up", Some((&pki.cert, &pki.key)));
    let p = write(&topo, "policy.toml", &policy(""));
    let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
    let bundle = topo
        .tmp
        .path("egret-bundle.pem")
        .to_string_lossy()
        .into_owned();
    let egret = Egret::start(
        &topo,
        id,
        &[
            "--policy",
            &p,
            "--ca-out",
            &ca,
            "--ca-bundle-out",
            &bundle,
            "--upstream-ca",
            pki.ca.to_str().unwrap(),
            "--tls-handshake-timeout-ms",
            "2000",
        ],
    )
    .expect("egret starts");
    Env {
        topo,
        up,
        bad: None,
        egret,
        ca,
        bundle,
        pki,
    }
}

#[test]
fn curl_http1_and_http2_see_the_egret_leaf_and_reach_upstream_over_tls() {
    let env = setup("tls-curl");
    for (flag, want) in [("--http1.1", "HTTP/1.1 200"), ("--http2", "HTTP/2 200")] {
        let (code, out, err) =
            env.topo
                .curl(&["-v", flag, "--cacert", &env.ca, "https://allowed.test/echo"]);
        assert_eq!(code, 0, "{flag}: {err}\n{}", env.egret.logs());
        assert!(err.contains(want), "{flag}: {err}");
        assert!(
            err.contains("egret sandbox CA (tls-curl)"),
            "issuer not egret: {err}"
        );
        let v = json(&out);
        assert_eq!(v["tls"], true, "upstream leg was not TLS: {out}");
        assert_eq!(v["host"], "allowed.test");
    }
    // the h2 downstream request reached the upstream as h2 (ALPN on the upstream leg)
    assert!(
        env.up.access_log().contains("version=HTTP/2.0"),
        "{}",
        env.up.access_log()
    );
    // IPv6 too
    let (code, _, err) = env
        .topo
        .curl(&["-6", "--cacert", &env.ca, "https://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
}

/// Run a client that prints the host the upstream saw; it must print `allowed.test`.
fn prints_allowed_test(mut cmd: std::process::Command) {
    let out = cmd.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "allowed.test",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_and_node_trust_the_written_bundle() {
    let env = setup("tls-langs");
    let script = "import urllib.request,json; print(json.load(urllib.request.urlopen('https://allowed.test/echo'))['host'])";
    let mut cmd = env.topo.sbx.cmd("python3");
    cmd.args(["-c", script]).env("SSL_CERT_FILE", &env.bundle);
    prints_allowed_test(cmd);
    let has_requests = env
        .topo
        .in_sandbox("python3", &["-c", "import requests"])
        .status
        .success();
    if has_requests {
        let mut cmd = env.topo.sbx.cmd("python3");
        cmd.args([
            "-c",
            "import requests; print(requests.get('https://allowed.test/echo').json()['host'])",
        ])
        .env("REQUESTS_CA_BUNDLE", &env.bundle);
        prints_allowed_test(cmd);
    } else {
        eprintln!("note: python requests is not installed; urllib covered the python client");
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok()
    {
        let mut cmd = env.topo.sbx.cmd("node");
        cmd.args(["-e", "fetch('https://allowed.test/echo').then(r=>r.json()).then(j=>console.log(j.host)).catch(e=>{console.error(e);process.exit(1)})"])
            .env("NODE_EXTRA_CA_CERTS", &env.ca);
        prints_allowed_test(cmd);
    } else {
        eprintln!("note: node is not installed; skipped the node client");
    }
}

#[test]
fn two_sandboxes_have_different_cas_and_no_private_key_leaks() {
    let a = setup("tls-a");
    let b = setup("tls-b");
    let ca_a = std::fs::read_to_string(&a.ca).unwrap();
    let ca_b = std::fs::read_to_string(&b.ca).unwrap();
    assert_ne!(ca_a, ca_b);
    // sandbox a's leaf does not validate against b's CA
    let (code, _, err) = a
        .topo
        .curl(&["--cacert", &b.ca, "https://allowed.test/echo"]);
    assert_eq!(code, 60, "a's leaf validated with b's CA: {err}");
    let (code, _, err) = a
        .topo
        .curl(&["--cacert", &a.ca, "https://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
    // nothing egret wrote or logged holds a private key
    for env in [&a, &b] {
        for entry in std::fs::read_dir(&env.topo.tmp.0).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("good-key")
            {
                continue; // the test upstream's own key, written by this test
            }
            let content = std::fs::read(&p).unwrap_or_default();
            let text = String::from_utf8_lossy(&content);
            assert!(
                !text.contains("PRIVATE KEY"),
                "{} holds a private key",
                p.display()
            );
        }
        assert!(!env.egret.logs().contains("PRIVATE KEY"));
    }
}

#[test]
fn self_signed_upstream_is_refused_with_502_naming_the_error() {
    let mut env = setup("tls-bad");
    let bad = upstream_pki(&env.topo.tmp.0, "bad", &["selfsigned.test"]);
    // a second upstream instance on .5 with a cert from a CA egret does not trust
    let bad_up = Upstream::start_with(
        &env.topo,
        "bad",
        &[
            "--https",
            "10.200.0.5:8443",
            "--cert",
            bad.cert.to_str().unwrap(),
            "--key",
            bad.key.to_str().unwrap(),
        ],
    );
    let log = bad_up.log.clone();
    env.bad = Some(bad_up);
    let (code, out, err) = env.topo.curl(&[
        "-i",
        "--cacert",
        &env.ca,
        "https://selfsigned.test:8443/secret",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("HTTP/1.1 502") || out.starts_with("HTTP/2 502"),
        "{out}"
    );
    assert!(out.contains("selfsigned.test"), "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    let bad_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !bad_log.contains("/secret"),
        "request reached the untrusted upstream: {bad_log}"
    );
}

#[test]
fn passthrough_host_is_spliced_with_the_upstream_certificate() {
    let env = setup("tls-pass");
    let (code, out, err) = env.topo.curl(&[
        "-v",
        "--cacert",
        env.pki.ca.to_str().unwrap(),
        "https://pinned.test/echo",
    ]);
    assert_eq!(code, 0, "{err}\n{}", env.egret.logs());
    assert!(err.contains("good test upstream CA"), "{err}");
    assert!(!err.contains("egret sandbox CA"), "{err}");
    assert_eq!(json(&out)["host"], "pinned.test");
    assert!(
        env.egret
            .wait_log("tls-passthrough", Duration::from_secs(5)),
        "{}",
        env.egret.logs()
    );
}

#[test]
fn sni_and_host_must_agree() {
    let env = setup("tls-421");
    let (code, out, err) = env.topo.curl(&[
        "-i",
        "--cacert",
        &env.ca,
        "-H",
        "Host: b.test",
        "https://allowed.test/echo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("HTTP/1.1 421") || out.starts_with("HTTP/2 421"),
        "{out}"
    );
    assert!(!env.up.access_log().contains("host=b.test"));
}

#[test]
fn hundred_parallel_first_connections_mint_once() {
    let mut env = setup("tls-mint");
    let script = include_str!("../../clients/hundred_parallel_https_gets.py");
    let out = env.topo.in_sandbox("python3", &["-c", script, &env.ca]);
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.contains("OK 100"), "{out}");
    env.egret.proc.signal(nix::sys::signal::Signal::SIGTERM);
    env.egret
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("exit");
    let logs = env.egret.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("leaf cache"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("mints=1 "), "{line}");
    assert!(line.contains("hits=99"), "{line}");
}

#[test]
fn hostile_tls_input_is_contained() {
    let env = setup("tls-hostile");
    let script = include_str!("../../clients/hostile_tls_input.py");
    let t = Instant::now();
    let out = env.topo.in_sandbox("python3", &["-c", script]);
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.contains("garbage:"), "{out}");
    assert!(
        out.contains("stall: closed") || out.contains("stall: ConnectionResetError"),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(14),
        "the stalled handshake was not timed out"
    );
    // egret is unaffected
    let (code, _, err) = env
        .topo
        .curl(&["--cacert", &env.ca, "https://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unreadable_upstream_ca_is_a_clear_error_at_start() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let r = Egret::start(&topo, "tls-ca", &["--upstream-ca", "/nonexistent/ca.pem"]);
    let err = match r {
        Ok(_) => panic!("egret started with an unreadable --upstream-ca"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let tables = topo.in_sandbox("nft", &["list", "tables"]);
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "");
}

/// A client that keeps the session of its last connection resumes it on the next one (no full
/// handshake: no new key exchange nor signature), on TLS 1.3 (tickets) and on TLS 1.2.
#[test]
fn reconnects_resume_on_tls13_and_tls12() {
    let env = setup("tls-resume");
    let script = include_str!("../../clients/tls_resumption.py");
    let (code, out, err) = code_out_err(&env.topo.in_sandbox("python3", &["-c", script, &env.ca]));
    assert_eq!(code, 0, "{out}{err}\n{}", env.egret.logs());
    let v = json(&out);
    for (version, label) in [("1.3", "TLSv1.3"), ("1.2", "TLSv1.2")] {
        let versions = v[version]["versions"].as_array().expect("versions");
        assert!(
            versions.iter().all(|x| x == label),
            "TLS {version}: negotiated {versions:?}"
        );
        let resumed = v[version]["resumed"].as_array().expect("resumed");
        assert_eq!(resumed.len(), 4, "{out}");
        assert!(
            resumed.iter().all(|r| r == true),
            "TLS {version}: not every reconnect resumed: {out}"
        );
    }
}

/// egret with no `--upstream-ca`, its system trust store `SSL_CERT_FILE` (the upstream's CA
/// with `trust_upstream`, else an empty file) and an empty `SSL_CERT_DIR`, in front of the
/// upstream serving `allowed.test`. Returns egret's CA (what the sandbox trusts) too.
fn with_system_store(id: &str, trust_upstream: bool) -> (Topology, Upstream, Egret, String) {
    let topo = Topology::new(SandboxNet::LoOnly);
    let pki = upstream_pki(&topo.tmp.0, id, &["allowed.test"]);
    let up = Upstream::start(&topo, "up", Some((&pki.cert, &pki.key)));
    let p = write(&topo, "policy.toml", &policy(""));
    let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
    let store = if trust_upstream {
        pki.ca.to_string_lossy().into_owned()
    } else {
        write(&topo, "empty-store.pem", "")
    };
    let empty_dir = topo.tmp.path("no-cert-dir");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let egret = Egret::start_with_env(
        &topo,
        id,
        &["--policy", &p, "--ca-out", &ca],
        &[
            ("SSL_CERT_FILE", store.as_str()),
            ("SSL_CERT_DIR", empty_dir.to_str().unwrap()),
        ],
    )
    .expect("egret starts");
    (topo, up, egret, ca)
}

/// The system trust store is read after egret is ready, not before: a CA that is only in the
/// system store (`SSL_CERT_FILE`, no `--upstream-ca`) verifies the upstream on the first request.
#[test]
fn the_system_store_is_trusted_without_upstream_ca() {
    let (topo, up, egret, ca) = with_system_store("tls-sysroots", true);
    let (code, out, err) = topo.curl(&["--cacert", &ca, "https://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}\n{}", egret.logs());
    assert_eq!(json(&out)["host"], "allowed.test");
    assert!(up.access_log().contains("/echo"));
}

/// With no root at all (an empty system store, no `--upstream-ca`) egret still starts, says so
/// in its log, and each HTTPS request gets a `502` naming the reason and the fix; nothing
/// reaches the upstream.
#[test]
fn without_any_root_egret_starts_and_502s_name_the_fix() {
    let (topo, up, egret, ca) = with_system_store("tls-noroots", false);
    assert!(
        egret.wait_log(
            "no upstream TLS certificate can be verified",
            Duration::from_secs(5)
        ),
        "{}",
        egret.logs()
    );
    let (code, out, err) = topo.curl(&["-i", "--cacert", &ca, "https://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("HTTP/1.1 502") || out.starts_with("HTTP/2 502"),
        "{out}"
    );
    assert!(out.contains("no trusted root certificates"), "{out}");
    assert!(out.contains("--upstream-ca"), "{out}");
    assert!(!up.access_log().contains("/echo"));
}

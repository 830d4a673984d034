//! Programmable outbound handlers: WebAssembly handlers deciding real sandbox requests, injecting
//! credentials the sandbox never holds, and failing closed when they misbehave.
use egret_e2e::*;
use std::time::{Duration, Instant};

/// Start egret with `policy` and extra env vars (secrets come from egret's environment).
fn egret_with_env(
    topo: &Topology,
    id: &str,
    policy: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Egret {
    let p = write(topo, &format!("policy-{id}.toml"), policy);
    let mut args = vec!["--policy", p.as_str()];
    args.extend_from_slice(extra);
    Egret::start_with_env(topo, id, &args, env).expect("egret starts")
}

const TOKEN_A: &str = "tok-A-7f3a9c0e11d24b5e";
const TOKEN_B: &str = "tok-B-c0ffee42deadbeef";

/// The secrets [`vcs_policy`] reads from egret's environment.
const VCS_ENV: [(&str, &str); 3] = [
    ("VCS_TOKEN", "vcs-secret-1234567890"),
    ("TOKEN_A", TOKEN_A),
    ("TOKEN_B", TOKEN_B),
];

fn vcs_policy(kv_secret: &str) -> String {
    format!(
        r#"
internet = false
allowed_hosts = ["vcs.test", "api.test"]

[resolve]
"vcs.test" = "10.200.0.2"
"api.test" = "10.200.0.2"

[secrets]
VCS_TOKEN = {{ env = "VCS_TOKEN" }}
TOKEN_A = {{ env = "TOKEN_A" }}
TOKEN_B = {{ env = "TOKEN_B" }}

[kv]
"token-secret" = "{kv_secret}"

[handlers.inject]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "VCS_TOKEN" }}
secrets = ["VCS_TOKEN"]

[handlers.per-sandbox]
module = "{pst}"
secrets = ["TOKEN_A", "TOKEN_B"]

[[routes]]
host = "vcs.test"
handler = "inject"

[[routes]]
host = "api.test"
handler = "per-sandbox"
"#,
        inject = handler_module("inject-header"),
        pst = handler_module("per-sandbox-token"),
    )
}

/// egret with [`vcs_policy`] and [`VCS_ENV`], trusting `pki`'s upstream and writing its CA to
/// `ca`, with the flags `extra` first.
fn vcs_egret(
    topo: &Topology,
    id: &str,
    kv_secret: &str,
    pki: &UpstreamPki,
    ca: &std::path::Path,
    extra: &[&str],
) -> Egret {
    let mut args = extra.to_vec();
    args.extend([
        "--upstream-ca",
        pki.ca.to_str().unwrap(),
        "--ca-out",
        ca.to_str().unwrap(),
    ]);
    egret_with_env(topo, id, &vcs_policy(kv_secret), &VCS_ENV, &args)
}

#[test]
fn credentials_are_injected_and_the_sandbox_never_holds_them() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki) = Upstream::start_tls(&topo, &["vcs.test", "api.test"]);
    let ca = topo.tmp.path("ca-a.pem");
    let egret = vcs_egret(&topo, "agent-a", "TOKEN_A", &pki, &ca, &[]);
    let (code, out, err) = topo.curl(&["--cacert", ca.to_str().unwrap(), "https://vcs.test/echo"]);
    assert_eq!(code, 0, "{err}\n{}", egret.logs());
    let v = json(&out);
    assert_injected_and_masked(&v, "x-auth-token", "vcs-secret-1234567890");
    assert_eq!(v["headers"]["x-egret-handler"], "inject-header");
    // per-sandbox-token: this sandbox's kv names TOKEN_A
    let (code, out, err) = topo.curl(&["--cacert", ca.to_str().unwrap(), "https://api.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out)["headers_sha256"]["authorization"],
        sha256_hex(format!("Bearer {TOKEN_A}").as_bytes())
    );
    // the sandbox's environment and files hold no token
    let o = topo.in_sandbox("sh", &["-c", "env; cat /proc/self/environ"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("vcs-secret"));
    let o = topo.in_sandbox(
        "grep",
        &["-rl", "vcs-secret-1234567890", topo.tmp.0.to_str().unwrap()],
    );
    let hits = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(hits.trim().is_empty(), "token found in files: {hits}");
    // and egret's logs never show it
    assert!(!egret.logs().contains("vcs-secret-1234567890"));
    assert!(!egret.logs().contains(TOKEN_A));
    drop(egret);

    // A second sandbox with another id (and kv) gets its own token.
    let topo2 = Topology::new(SandboxNet::LoOnly);
    let up2 = Upstream::start(&topo2, "up", Some((&pki.cert, &pki.key)));
    let ca2 = topo2.tmp.path("ca-b.pem");
    let _egret2 = vcs_egret(&topo2, "agent-b", "TOKEN_B", &pki, &ca2, &[]);
    let (code, out, err) =
        topo2.curl(&["--cacert", ca2.to_str().unwrap(), "https://api.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out)["headers_sha256"]["authorization"],
        sha256_hex(format!("Bearer {TOKEN_B}").as_bytes())
    );
    drop((up, up2));
}

#[test]
fn get_only_catch_all_answers_405_without_reaching_upstream() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let policy = format!(
        r#"
internet = false
outbound = "get-only"
[resolve]
"web.test" = "10.200.0.2"
[handlers.get-only]
module = "{}"
"#,
        handler_module("get-only")
    );
    let egret = egret_with_env(&topo, "getonly", &policy, &[], &[]);
    let (code, out, err) =
        topo.curl(&["-i", "-X", "POST", "-d", "x=1", "http://web.test/post-here"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 405"), "{out}\n{}", egret.logs());
    assert!(!up.access_log().contains("/post-here"));
    let (code, out, err) = topo.curl(&["http://web.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["headers"]["x-egret-handler"], "get-only");
    assert!(
        egret
            .wait_audit(Duration::from_secs(5), |e| e["handler"] == "get-only")
            .is_some(),
        "{}",
        egret.logs()
    );
}

#[test]
fn hostile_handlers_fail_closed_and_do_not_disturb_others() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let mut policy = String::from("internet = false\n[resolve]\n");
    let cases = [
        ("loop-forever", "loop"),
        ("alloc-1gib", "alloc"),
        ("trap", "trap"),
        ("bad-header", "badhdr"),
        ("get-only", "good"),
    ];
    for (_, host) in cases {
        policy.push_str(&format!("\"{host}.test\" = \"10.200.0.2\"\n"));
    }
    for (module, host) in cases {
        policy.push_str(&format!(
            "[handlers.{host}]\nmodule = \"{}\"\n[[routes]]\nhost = \"{host}.test\"\nhandler = \"{host}\"\n",
            handler_module(module)
        ));
    }
    let _egret = egret_with_env(&topo, "hostile", &policy, &[], &[]);
    // A well-behaved client keeps requesting while the hostile ones run.
    let good = {
        let sbx = topo.sbx.name.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            for _ in 0..20 {
                let t = Instant::now();
                let o = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &sbx,
                        "curl",
                        "-sS",
                        "--max-time",
                        "5",
                        "http://good.test/echo",
                    ])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "good request failed");
                worst = worst.max(t.elapsed());
            }
            worst
        })
    };
    for (module, host, want) in [
        ("loop-forever", "loop", "timed out"),
        ("alloc-1gib", "alloc", "out of memory"),
        ("trap", "trap", "failed"),
        ("bad-header", "badhdr", "invalid action"),
    ] {
        let t = Instant::now();
        let (code, out, err) = topo.curl(&["-i", &format!("http://{host}.test/x")]);
        assert_eq!(code, 0, "{module}: {err}");
        assert!(out.starts_with("HTTP/1.1 502"), "{module}: {out}");
        assert!(
            out.contains(&format!("`{host}`")) && out.contains(want),
            "{module}: {out}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{module} took {:?}",
            t.elapsed()
        );
    }
    let worst = good.join().unwrap();
    assert!(
        worst < Duration::from_secs(2),
        "a good request took {worst:?} next to hostile handlers"
    );
    let log = up.access_log();
    assert!(
        !log.contains("GET /x"),
        "a failed handler's request was forwarded: {log}"
    );
}

#[test]
fn modules_that_are_not_handlers_are_refused_at_start() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let junk = write(&topo, "junk.wasm", "this is not wasm");
    let core = topo.tmp.path("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (path, want) in [
        (junk.as_str(), "not a WebAssembly component"),
        (core.to_str().unwrap(), "wasm32-wasip2"),
    ] {
        let policy = write(
            &topo,
            "p.toml",
            &format!("outbound = \"h\"\n[handlers.h]\nmodule = \"{path}\"\n"),
        );
        let out = topo
            .egr
            .cmd(bin("egret").to_str().unwrap())
            .args([
                "run",
                "--netns",
                &topo.sbx.name,
                "--sandbox-id",
                "x",
                "--policy",
                &policy,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("handler h") && err.contains(want), "{err}");
        let tables = topo.in_sandbox("nft", &["list", "tables"]);
        assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "");
    }
}

#[test]
fn handler_run_works_offline_and_masks_secrets() {
    let egret = bin("egret");
    for (module, params) in [
        (
            "inject-header",
            r#"{"header":"x-auth-token","secret":"TOK"}"#,
        ),
        ("allow-hosts", r#"{"hosts":["api.test"]}"#),
        ("get-only", "null"),
        ("per-sandbox-token", "null"),
        ("respond-from-kv", r#"{"key":"k"}"#),
        ("no-http", "null"),
    ] {
        let out = std::process::Command::new(&egret)
            .args([
                "handler",
                "run",
                &handler_module(module),
                "--request",
                "GET https://api.test/x",
                "--params",
                params,
            ])
            .args([
                "--secret",
                "TOK=super-secret-value-42",
                "--header",
                "accept: */*",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{module}: {stdout}{stderr}");
        assert!(
            !stdout.contains("super-secret-value-42") && !stderr.contains("super-secret-value-42"),
            "{module} leaked: {stdout}"
        );
        if module == "inject-header" {
            assert!(
                stdout.contains("secret(TOK)") || stdout.contains("TOK"),
                "{stdout}"
            );
        }
        let check = std::process::Command::new(&egret)
            .args(["handler", "check", &handler_module(module)])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let out = std::process::Command::new(&egret)
        .args(["handler", "check", "/etc/hostname"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// CPU time a thread of `pid` named `name` has run, in ns (`/proc/PID/task/TID/schedstat`).
fn thread_cpu_ns(pid: u32, name: &str) -> Option<u64> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// `--workers 2`: connections open at the same time are spread over the main runtime and a
/// second connection thread (its own upstream pools); every connection, on either thread, is
/// decided and handled the same (handler injected, keep-alive requests on one connection), and
/// SIGTERM still detaches cleanly.
#[test]
fn two_workers_spread_connections_and_both_serve_them() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (_up, pki) = Upstream::start_tls(&topo, &["vcs.test", "api.test"]);
    let ca = topo.tmp.path("ca.pem");
    let mut egret = vcs_egret(&topo, "workers", "TOKEN_A", &pki, &ca, &["--workers", "2"]);
    let pid = egret.proc.child.id();
    // A new thread names itself once it runs: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        if let Some(ns) = thread_cpu_ns(pid, "egret-worker-1") {
            break ns;
        }
        assert!(
            Instant::now() < deadline,
            "no egret-worker-1 thread\n{}",
            egret.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let ca = ca.to_str().unwrap();
    // Six HTTPS connections open at once (a new connection goes to the thread with fewer open
    // ones, so they alternate), three keep-alive requests on each, interleaved; then plain HTTP
    // ones, one at a time.
    let client = include_str!("../../clients/six_https_keep_alive_connections.py");
    let out = topo.in_sandbox("python3", &["-c", client, ca]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        egret.logs()
    );
    let tokens: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tokens.len(), 18);
    assert!(
        tokens
            .iter()
            .all(|t| t.as_deref() == Some(sha256_hex(b"vcs-secret-1234567890").as_str())),
        "{tokens:?}"
    );
    for i in 0..4 {
        let (code, out, err) = topo.curl(&["http://vcs.test/echo"]);
        assert_eq!(code, 0, "connection {i}: {err}");
        assert_injected_and_masked(&json(&out), "x-auth-token", "vcs-secret-1234567890");
    }
    let after = thread_cpu_ns(pid, "egret-worker-1").expect("the thread is still there");
    eprintln!("egret-worker-1 ran {} µs", (after - before) / 1000);
    assert!(
        // Serving even one TLS connection (debug build) takes milliseconds.
        after > before + 2_000_000,
        "the second connection thread ran {} µs while 6 connections were open: it served none",
        (after - before) / 1000
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let served = loop {
        let n = egret
            .audit_events()
            .iter()
            .filter(|e| e["status"] == 200)
            .count();
        if n >= 22 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(served, 22, "{:?}", egret.audit_events());

    // SIGTERM: both threads stop and egret detaches with status 0.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = egret.proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "egret did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", egret.logs());
    assert!(egret.logs().contains("detached"), "{}", egret.logs());
}

/// `egret handler run` tries the 0.2.0 capabilities without a sandbox: `oauth-client-credentials`
/// fetches a token from a test server the author names (`--fetch-host`, `--upstream-ca`),
/// mints it (`--mint-secret`) and injects it by name; its response phase runs on `--response`
/// (a 401 expires the token); `llm-guard` reads and caps a `--body`. No secret or token value
/// is printed.
#[test]
fn handler_run_fetches_mints_and_runs_the_response_phase() {
    const CLIENT_SECRET: &str = "cs-offline-7781";
    let topo = Topology::new(SandboxNet::LoOnly);
    let tokens = topo.tmp.path("tokens.txt");
    let client = format!("c1:{CLIENT_SECRET}");
    let (up, pki) = Upstream::start_tls_with(
        &topo,
        &["auth.test"],
        &[
            "--oauth-client",
            &client,
            "--oauth-token-file",
            tokens.to_str().unwrap(),
        ],
    );
    // The author's machine: auth.test is a local test server, named in its hosts file.
    let _hosts = NetnsHosts::write(&topo.egr, "127.0.0.1 localhost\n10.200.0.2 auth.test\n");
    let run = |extra: &[&str]| -> (bool, String) {
        let out = topo
            .egr
            .cmd(bin("egret").to_str().unwrap())
            .args([
                "handler",
                "run",
                &handler_module("oauth-client-credentials"),
                "--request",
                "GET https://api.test/resource",
                "--params",
                r#"{"token_url":"https://auth.test/oauth/token","client_id":"c1","client_secret":"CS"}"#,
                "--secret",
                &format!("CS={CLIENT_SECRET}"),
                "--mint-secret",
                "OAUTH_ACCESS_TOKEN",
                "--upstream-ca",
                pki.ca.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap();
        (out.status.success(), all_output(&out))
    };

    // Without --fetch-host the exchange is refused, and the handler says which endpoint failed.
    let (_, text) = run(&[]);
    assert!(text.contains("auth.test"), "{text}");
    assert!(!up.access_log().contains("TOKEN-ISSUED"), "{text}");

    let (ok, text) = run(&["--fetch-host", "auth.test", "--response", "401"]);
    assert!(ok, "{text}");
    assert!(
        up.wait_log("TOKEN-ISSUED", Duration::from_secs(5)),
        "{text}"
    );
    assert!(
        text.contains("secret(OAUTH_ACCESS_TOKEN)"),
        "the token is injected by name: {text}"
    );
    assert!(text.contains("response 401: pass"), "{text}");
    let issued = std::fs::read_to_string(&tokens).unwrap();
    let token = issued.lines().next().unwrap().split_once(' ').unwrap().1;
    for v in [CLIENT_SECRET, token] {
        assert!(!text.contains(v), "printed {v:?}: {text}");
    }

    // A request body, read and rewritten by llm-guard (max_tokens capped).
    let out = std::process::Command::new(bin("egret"))
        .args([
            "handler",
            "run",
            &handler_module("llm-guard"),
            "--request",
            "POST https://llm.test/v1/chat/completions",
            "--params",
            r#"{"models":["m"],"max_tokens_cap":64}"#,
            "--body",
            r#"{"model":"m","max_tokens":1000,"messages":[]}"#,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("request body: "), "{text}");
    assert!(text.contains(r#"\"max_tokens\":64"#), "{text}");
}

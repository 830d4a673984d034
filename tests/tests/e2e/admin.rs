//! Rule changes at runtime over the admin socket: validated, atomic, versioned swaps, and what
//! they do to requests and tunnels already under way.
use egret_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn policy() -> String {
    format!(
        r#"
internet = false
[resolve]
"github.test" = "10.200.0.2"
"registry.test" = "10.200.0.2"
"other.test" = "10.200.0.2"
[handlers.allow-hosts]
module = "{allow}"
[handlers.no-http]
module = "{nohttp}"
[handlers.get-only]
module = "{getonly}"
"#,
        allow = handler_module("allow-hosts"),
        nohttp = handler_module("no-http"),
        getonly = handler_module("get-only"),
    )
}

struct Env {
    topo: Topology,
    up: Upstream,
    egret: Egret,
    sock: String,
    state: String,
}

fn setup(id: &str) -> Env {
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let p = write(&topo, "policy.toml", &policy());
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let state = topo.tmp.path("state").to_string_lossy().into_owned();
    let egret = Egret::start(
        &topo,
        id,
        &[
            "--policy",
            &p,
            "--admin-socket",
            &sock,
            "--state-dir",
            &state,
        ],
    )
    .expect("egret");
    Env {
        topo,
        up,
        egret,
        sock,
        state,
    }
}

#[test]
fn cloudflare_sequence_including_a_keep_alive_connection() {
    let env = setup("cf");
    let (code, _, err) = ctl(
        &env.sock,
        &[
            "set-outbound",
            "allow-hosts",
            "--params",
            r#"{"hosts":["github.test","registry.test"]}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    for host in ["github.test", "registry.test"] {
        let (code, out, err) = env.topo.curl(&["-i", &format!("http://{host}/echo")]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "{host}: {out}\n{}",
            env.egret.logs()
        );
    }
    let (_, out, _) = env.topo.curl(&["-i", "http://other.test/echo"]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    // A keep-alive connection opened before the switch sees the new rule on its next request.
    let script = include_str!("../../clients/keep_alive_get_twice.py");
    let mut client = Interactive::python(&env.topo.sbx, script, &[]);
    let line = client.read_line();
    assert_eq!(line.trim(), "before 200");
    let (code, out, err) = ctl(&env.sock, &["set-outbound", "no-http"]);
    assert_eq!(code, 0, "{out}{err}");
    let rest = client.finish();
    assert_eq!(
        rest.trim(),
        "after 403",
        "keep-alive connection kept the old rule"
    );
    let (_, out, _) = env.topo.curl(&["-i", "http://github.test/echo"]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    drop(env.up);
}

#[test]
fn swaps_under_load_never_fail_a_request_and_follow_the_generation() {
    let env = setup("load");
    let (code, _, err) = ctl(&env.sock, &["set-outbound", "get-only"]);
    assert_eq!(code, 0, "{err}");
    let start_gen = ctl_generation(&env.sock);
    let client = include_str!("../../clients/keep_alive_load.py");
    let load = env
        .topo
        .sbx
        .cmd("python3")
        .args(["-c", client, "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut swaps = 0;
    while swaps < 200 {
        let h = if swaps % 2 == 0 {
            "allow-hosts"
        } else {
            "get-only"
        };
        let params = if h == "allow-hosts" {
            r#"{"hosts":["github.test"]}"#
        } else {
            "null"
        };
        let (code, _, err) = ctl(&env.sock, &["set-outbound", h, "--params", params]);
        assert_eq!(code, 0, "{err}");
        swaps += 1;
        std::thread::sleep(Duration::from_millis(60));
    }
    let out = load.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(v["bad"], 0, "{text}");
    assert!(v["n"].as_u64().unwrap() > 100, "{text}");
    assert!(
        v["seen"]["allow-hosts"].as_u64().unwrap_or(0) > 0
            && v["seen"]["get-only"].as_u64().unwrap_or(0) > 0,
        "{text}"
    );
    assert_eq!(ctl_generation(&env.sock), start_gen + 200);
    eprintln!("200 swaps in {:?}; {text}", t.elapsed());
    // The audit log: generations never go backwards per connection, and each request ran the
    // handler that its generation had (odd offsets allow-hosts, even get-only).
    let mut last = 0;
    let mut checked = 0;
    for ev in env
        .egret
        .audit_events()
        .into_iter()
        .filter(|e| e["path"] == "/echo")
    {
        let g = ev["generation"].as_u64().unwrap();
        assert!(g >= last, "generation went backwards: {g} after {last}");
        last = g;
        if g > start_gen {
            let want = if (g - start_gen) % 2 == 1 {
                "allow-hosts"
            } else {
                "get-only"
            };
            assert_eq!(ev["handler"], want, "{ev}");
            assert_eq!(ev["module_sha256"].as_str().map(str::len), Some(64), "{ev}");
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} audit lines checked");
}

#[test]
fn in_flight_request_finishes_with_the_old_decision() {
    let env = setup("inflight");
    let (code, _, err) = ctl(&env.sock, &["set-outbound", "get-only"]);
    assert_eq!(code, 0, "{err}");
    let slow = env
        .topo
        .sbx
        .cmd("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "10",
            "http://github.test/slow/2000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = ctl(&env.sock, &["set-outbound", "no-http"]);
    assert_eq!(code, 0, "{err}");
    let (_, now, _) = env.topo.curl(&["-i", "http://github.test/echo"]);
    assert!(now.starts_with("HTTP/1.1 403"), "{now}");
    let out = slow.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("slept 2000"),
        "{out}"
    );
}

#[test]
fn invalid_changes_are_refused_and_the_old_generation_keeps_serving() {
    let env = setup("invalid");
    let (code, _, err) = ctl(
        &env.sock,
        &[
            "set-outbound",
            "allow-hosts",
            "--params",
            r#"{"hosts":["github.test"]}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let g = ctl_generation(&env.sock);
    let junk = write(&env.topo, "junk.wasm", "definitely not wasm");
    let typed = write(&env.topo, "typed.toml", "internet = \"yes\"\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["module", "upload", "junk", &junk], "not a WebAssembly"),
        (vec!["set-outbound", "no-such-handler"], "no-such-handler"),
        (vec!["allow-host", "add", "*.exa mple.test"], "exa mple"),
        (vec!["policy", "set", &typed], "line 1 column 12"),
    ];
    for (args, want) in cases {
        let (code, out, err) = ctl(&env.sock, &args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(format!("{out}{err}").contains(want), "{args:?}: {out}{err}");
        assert_eq!(
            ctl_generation(&env.sock),
            g,
            "{args:?} changed the generation"
        );
        let (code, out, _) = env.topo.curl(&["-i", "http://github.test/echo"]);
        assert_eq!(code, 0);
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "{args:?}: old generation not serving: {out}"
        );
    }
    // 100 MiB body: refused without being read whole
    let big = env.topo.tmp.path("big.bin");
    std::fs::write(&big, vec![0u8; 100 << 20]).unwrap();
    let t = Instant::now();
    let out = admin_curl(&env.sock)
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args([
            "-H",
            "content-type: application/wasm",
            "--data-binary",
            &format!("@{}", big.display()),
        ])
        .arg("http://egret/v1/modules/big")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(ctl_generation(&env.sock), g);
}

#[test]
fn socket_is_root_only() {
    let env = setup("perm");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(bin("egret"))
        .args(["ctl", "--socket", &env.sock, "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn state_dir_survives_kill_9() {
    let mut env = setup("state");
    let (code, _, err) = ctl(&env.sock, &["set-outbound", "no-http"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ctl(
        &env.sock,
        &[
            "secret",
            "set",
            "RUNTIME_TOKEN",
            "--value",
            "rt-secret-value",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let g = ctl_generation(&env.sock);
    let (_, out, _) = env.topo.curl(&["-i", "http://github.test/echo"]);
    assert!(out.starts_with("HTTP/1.1 403"));
    env.egret.proc.signal(nix::sys::signal::Signal::SIGKILL);
    env.egret.proc.wait_timeout(Duration::from_secs(5)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let state_json = std::path::Path::new(&env.state).join("state.json");
    assert_eq!(
        std::fs::metadata(&state_json).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let p = env.topo.tmp.path("policy.toml");
    let egret = Egret::start(
        &env.topo,
        "state",
        &[
            "--policy",
            p.to_str().unwrap(),
            "--admin-socket",
            &env.sock,
            "--state-dir",
            &env.state,
        ],
    )
    .unwrap();
    assert!(ctl_generation(&env.sock) > g);
    let (_, out, _) = env.topo.curl(&["-i", "http://github.test/echo"]);
    assert!(
        out.starts_with("HTTP/1.1 403"),
        "runtime catch-all not restored: {out}\n{}",
        egret.logs()
    );
    let (code, out, _) = ctl(&env.sock, &["secret", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("RUNTIME_TOKEN") && !out.contains("rt-secret-value"),
        "{out}"
    );
}

#[test]
fn tunnels_the_new_rules_forbid_are_closed_at_the_swap() {
    let env = setup("revoke");
    let (code, _, err) = ctl(&env.sock, &["allow-host", "add", "github.test"]);
    assert_eq!(code, 0, "{err}");
    let script = include_str!("../../clients/tunnel_poked_after_swap.py");
    let mut client = Interactive::python(&env.topo.sbx, script, &[]);
    let line = client.read_line();
    assert!(
        line.contains("SSH-2.0-egret-test-banner"),
        "{line}\n{}",
        env.egret.logs()
    );
    let (code, _, err) = ctl(&env.sock, &["allow-host", "remove", "github.test"]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let rest = client.finish();
    assert!(
        rest.contains("after: closed"),
        "tunnel survived a policy that forbids it: {rest}"
    );
    assert!(
        env.egret
            .wait_audit(Duration::from_secs(5), |e| e["decision"] == "revoked")
            .is_some(),
        "{}",
        env.egret.logs()
    );
}

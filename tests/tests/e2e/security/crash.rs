//! Fail-closed: egret killed with SIGKILL at random moments under load never lets a request
//! bypass the handler, nothing gets out while it is down, and it resumes with its runtime state.

use super::{env_usize, TOKEN};
use egret_e2e::*;
use std::time::Duration;

#[test]
fn killed_at_random_moments_egret_never_lets_a_request_bypass_the_handler() {
    let kills = env_usize("EGRET_SEC_KILLS", 20);
    let topo = Topology::new(SandboxNet::Veth);
    let up = Upstream::start_with(
        &topo,
        "up",
        &["--http", "[::]:80", "--log-header", "x-auth-token"],
    );
    let p = write(
        &topo,
        "policy.toml",
        &format!(
            r#"
internet = false
allowed_hosts = ["vcs.test"]
outbound = "inject"
[resolve]
"vcs.test" = "10.200.0.2"
"extra.test" = "10.200.0.2"
{}"#,
            inject_header_policy("VCS_TOKEN", r#"env = "VCS_TOKEN""#, &[])
        ),
    );
    let state = topo.tmp.path("state");
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let args = [
        "--policy",
        &p,
        "--admin-socket",
        &sock,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let start = || {
        Egret::start_with_env(&topo, "sec-kill", &args, &[("VCS_TOKEN", TOKEN)])
            .expect("egret starts")
    };
    let mut egret = start();
    // a runtime change that must survive every crash
    let (code, _, err) = ctl(&sock, &["allow-host", "add", "extra.test"]);
    assert_eq!(code, 0, "{err}");
    // load: 6 threads of keep-alive and fresh connections, to the named host and to the
    // sandbox's own veth peer (an address egret does not allow), for the whole test
    let load = include_str!("../../../clients/load_while_egret_is_killed.py");
    let mut client = Interactive::python(&topo.sbx, load, &[]);
    assert!(client.read_line().starts_with("STARTED"));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for k in 1..=kills {
        std::thread::sleep(Duration::from_millis(50 + rnd() % 600));
        egret.proc.signal(nix::sys::signal::Signal::SIGKILL);
        egret
            .proc
            .wait_timeout(Duration::from_secs(5))
            .expect("egret died");
        // while it is down, connections fail at once and nothing reaches the upstream
        let before = up.access_log().lines().count();
        let (code, took, _) = topo.curl(&[
            "--max-time",
            "3",
            "-w",
            "%{time_total}",
            "-H",
            "Host: vcs.test",
            "http://10.200.0.2/down",
        ]);
        assert_ne!(code, 0, "a request succeeded with egret dead");
        let took: f64 = took.trim().parse().unwrap_or(99.0);
        assert!(took < 1.0, "took {took} s to fail (kill {k})");
        let (code, _, _) = topo.curl(&["--max-time", "2", "http://10.201.0.2/down"]);
        assert_ne!(code, 0, "the veth let a request out with egret dead");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            up.access_log().lines().count(),
            before,
            "upstream reached while egret was down"
        );
        egret = start();
    }
    // resumed with the runtime change
    let (code, out, err) = topo.curl(&["-H", "Host: extra.test", "http://10.200.0.2/echo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out)["headers_sha256"]["x-auth-token"],
        sha256_hex(TOKEN.as_bytes()),
        "extra.test not allowed after restart: {out}"
    );
    let counts = client.finish();
    eprintln!("client: {counts}");
    let log = up.access_log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.len() > kills,
        "too little load reached the upstream: {log}"
    );
    for l in &lines {
        assert!(
            l.contains("x-auth-token=present"),
            "bypassed the handler: {l}"
        );
        assert!(!l.contains("/down"), "{l}");
        assert!(!l.contains("host=10.201.0.2"), "{l}");
    }
    eprintln!(
        "{} requests reached the upstream, all through the handler",
        lines.len()
    );
}

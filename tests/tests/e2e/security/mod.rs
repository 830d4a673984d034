//! Adversarial tests: the attacker is root inside the sandbox namespace (CAP_NET_RAW, but egret's
//! rules stay in place). Every attack here must fail for the attacker; SECURITY.md maps each one
//! to its test.
//!
//! Scales (environment variables): `EGRET_SEC_IDLE_CONNS` (default 10,000, capped by the
//! open-file limit egret inherits), `EGRET_SEC_KILLS` (default 20), `EGRET_SEC_SNI_NAMES`
//! (default 5000 for CI time; 100,000 takes ~2 minutes, see SECURITY.md).

mod crash;
mod credentials;
mod dns;
mod escape;
mod exhaustion;
mod key_hygiene;
mod smuggling;

use egret_e2e::*;
use std::time::Duration;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run a python script in the sandbox (as root), returning stdout (+ stderr on failure).
fn py(topo: &Topology, script: &str, args: &[&str]) -> String {
    let mut a = vec!["-c", script];
    a.extend_from_slice(args);
    let o = topo.in_sandbox("python3", &a);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "python failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Stop egret with SIGTERM and return its `leaf cache mints=N ... entries=M` numbers.
fn stop_and_leaf_stats(egret: &mut Egret) -> (u64, u64) {
    egret.proc.signal(nix::sys::signal::Signal::SIGTERM);
    egret
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("egret exits on SIGTERM");
    let logs = egret.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("leaf cache mints="))
        .unwrap_or_else(|| panic!("no leaf cache line:\n{logs}"));
    let field = |name: &str| -> u64 {
        let rest = &line[line.find(name).unwrap() + name.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("mints="), field("entries="))
}

/// Run a Python script (unbuffered) in the upstream namespace as `name`, and wait until it
/// prints READY.
fn start_in_upstream(topo: &Topology, name: &str, script: &str) -> Proc {
    let mut cmd = topo.up.cmd("python3");
    cmd.args(["-u", "-c", script]);
    let proc = spawn(cmd, &topo.tmp.0, name);
    assert!(
        proc.wait_output("READY", Duration::from_secs(10)),
        "{name}: {}",
        proc.output()
    );
    proc
}

/// A packet sniffer in the upstream namespace: prints one line per frame that *arrives* on
/// the interface facing the sandbox (`v-sbx`). Anything here got out without egret.
struct Sniffer {
    proc: Proc,
}

impl Sniffer {
    fn start(topo: &Topology) -> Sniffer {
        let script = include_str!("../../../clients/sniffer.py");
        Sniffer {
            proc: start_in_upstream(topo, "sniffer", script),
        }
    }
    fn frames(&self) -> Vec<String> {
        self.proc
            .output()
            .lines()
            .filter(|l| l.starts_with("FRAME"))
            .map(str::to_string)
            .collect()
    }
}

const BASIC_POLICY: &str = r#"
internet = false
allowed_hosts = ["allowed.test"]
denied_hosts = ["denied.test"]

[resolve]
"allowed.test" = ["10.200.0.2", "fd00:200::2"]
"denied.test" = "10.200.0.3"
"#;

const TOKEN: &str = "vcs-token-5ec7e7-do-not-leak";

fn cred_policy() -> String {
    format!(
        r#"
internet = false
intercept_https = true
allowed_hosts = ["vcs.test", "allowed.test"]
denied_hosts = ["denied.test", "evil.test"]

[resolve]
"vcs.test" = "10.200.0.2"
"allowed.test" = "10.200.0.2"
"denied.test" = "10.200.0.3"
"evil.test" = "10.200.0.4"
{}"#,
        inject_header_policy("VCS_TOKEN", r#"env = "VCS_TOKEN""#, &["vcs.test"])
    )
}

fn cred_setup(id: &str) -> Intercepted {
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki) = Upstream::start_tls(&topo, &["vcs.test", "allowed.test", "evil.test"]);
    Intercepted::start(
        topo,
        up,
        id,
        &cred_policy(),
        &pki.ca,
        &[],
        &[("VCS_TOKEN", TOKEN)],
    )
}

/// Send raw bytes to `dst:port` from the sandbox; return everything read until the peer closes
/// or `secs` of silence.
fn raw_exchange(topo: &Topology, dst: &str, port: u16, payload: &[u8], secs: f64) -> String {
    let script = include_str!("../../../clients/raw_exchange.py");
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    py(
        topo,
        script,
        &[dst, &port.to_string(), &hex, &secs.to_string()],
    )
}

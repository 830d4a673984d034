//! Protocol fidelity through the credential-injection path: everything here runs over HTTPS
//! through the `inject-header` handler (or a refusing one) against real servers in the upstream
//! namespace (`egret-testsrv`, python grpcio), with real clients in the sandbox.

mod bulk;
mod grpc;
mod http_semantics;
mod streaming;
mod websocket;

use egret_e2e::*;
use std::time::{Duration, Instant};

const TOKEN: &str = "proto-secret-5e1f0a77c3";

struct Env {
    topo: Topology,
    up: Upstream,
    egret: Egret,
    ca: String,
}

/// `api.test` is routed through `inject-header` (x-auth-token = TOKEN), `ro.test` through
/// `get-only`, `deny.test` through `allow-hosts` listing another host (denies all); all three
/// are the TLS upstream on 10.200.0.2, which logs `x-auth-token=present|absent` per request.
fn setup(id: &str, extra: &[&str]) -> Env {
    let topo = Topology::new(SandboxNet::LoOnly);
    let pki = upstream_pki(&topo.tmp.0, "up", &["api.test", "ro.test", "deny.test"]);
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let up = Upstream::start_with(
        &topo,
        "up",
        &[
            "--http",
            "[::]:80",
            "--https",
            "[::]:443",
            "--cert",
            cert,
            "--key",
            key,
            "--log-header",
            "x-auth-token",
        ],
    );
    let token = write(&topo, "token", TOKEN);
    let policy = format!(
        r#"
internet = false
intercept_https = true
allowed_hosts = ["api.test", "ro.test", "deny.test"]

[resolve]
"api.test" = "10.200.0.2"
"ro.test" = "10.200.0.2"
"deny.test" = "10.200.0.2"

[secrets]
API_TOKEN = {{ file = "{token}" }}

[handlers.inject]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "API_TOKEN" }}
secrets = ["API_TOKEN"]

[handlers.ro]
module = "{get_only}"

# Refuses every request (hence every WebSocket upgrade) to deny.test.
[handlers.deny]
module = "{allow_hosts}"
params = {{ hosts = ["nothing.invalid"] }}

[[routes]]
host = "api.test"
handler = "inject"

[[routes]]
host = "ro.test"
handler = "ro"

[[routes]]
host = "deny.test"
handler = "deny"
"#,
        inject = handler_module("inject-header"),
        get_only = handler_module("get-only"),
        allow_hosts = handler_module("allow-hosts"),
    );
    let p = write(&topo, "policy.toml", &policy);
    let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
    let mut args = vec![
        "--policy",
        &p,
        "--ca-out",
        &ca,
        "--upstream-ca",
        pki.ca.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let egret = Egret::start(&topo, id, &args).expect("egret starts");
    Env {
        topo,
        up,
        egret,
        ca,
    }
}

impl Env {
    /// Run a python script in the sandbox with the CA path as argv[1]; (success, stdout, stderr).
    fn python(&self, script: &str, args: &[&str]) -> (bool, String, String) {
        let mut a = vec!["-c", script, &self.ca];
        a.extend_from_slice(args);
        let o = self.topo.in_sandbox("python3", &a);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
    fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["--cacert", self.ca.as_str()];
        a.extend_from_slice(args);
        self.topo.curl(&a)
    }
    /// Wait until the upstream access log contains `needle`.
    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.up.access_log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

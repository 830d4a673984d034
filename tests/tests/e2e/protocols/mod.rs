//! Protocol fidelity through the credential-injection path: everything here runs over HTTPS
//! through the `inject-header` handler (or a refusing one) against real servers in the upstream
//! namespace (`egret-testsrv`, python grpcio), with real clients in the sandbox.

mod bulk;
mod grpc;
mod http_semantics;
mod streaming;
mod websocket;

use egret_e2e::*;

const TOKEN: &str = "proto-secret-5e1f0a77c3";

/// `api.test` is routed through `inject-header` (x-auth-token = TOKEN), `ro.test` through
/// `get-only`, `deny.test` through `allow-hosts` listing another host (denies all); all three
/// are the TLS upstream on 10.200.0.2, which logs `x-auth-token=present|absent` per request.
fn setup(id: &str, extra: &[&str]) -> Intercepted {
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
{inject}
[handlers.ro]
module = "{get_only}"

# Refuses every request (hence every WebSocket upgrade) to deny.test.
[handlers.deny]
module = "{allow_hosts}"
params = {{ hosts = ["nothing.invalid"] }}

[[routes]]
host = "ro.test"
handler = "ro"

[[routes]]
host = "deny.test"
handler = "deny"
"#,
        inject = inject_header_policy("API_TOKEN", &format!(r#"file = "{token}""#), &["api.test"]),
        get_only = handler_module("get-only"),
        allow_hosts = handler_module("allow-hosts"),
    );
    Intercepted::start(topo, up, id, &policy, &pki.ca, extra, &[])
}

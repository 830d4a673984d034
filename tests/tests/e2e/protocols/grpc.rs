//! gRPC over h2 with trailers: the wire framing driven by curl against `egret-testsrv`, and a real
//! grpcio client and server (unary, server streaming, error status, custom and binary trailers).

use super::{setup, TOKEN};
use egret_e2e::*;
use std::time::Duration;

// The gRPC wire format over h2 with trailers: `egret-testsrv` speaks it, curl is the client.

fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

fn grpc_messages(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push(String::from_utf8_lossy(&b[5..5 + len]).into_owned());
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes: {b:?}");
    out
}

/// Call `path` with one gRPC message; returns (messages, trailer lines from curl -v, stderr).
fn grpc_call(env: &Intercepted, path: &str, msg: &[u8]) -> (Vec<String>, Vec<String>, String) {
    let req = env.topo.tmp.path("grpc-req.bin");
    std::fs::write(&req, grpc_frame(msg)).unwrap();
    let body = env.topo.tmp.path("grpc-resp.bin");
    let _ = std::fs::remove_file(&body);
    let data = format!("@{}", req.display());
    let url = format!("https://api.test{path}");
    let (code, out, err) = env.curl(&[
        "-v",
        "--http2",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        &data,
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_version} %{response_code} %{time_total}",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2 200 "), "{out}\n{err}");
    eprintln!(
        "gRPC {path}: curl time_total {}",
        out.split(' ').nth(2).unwrap_or("?")
    );
    let msgs = grpc_messages(&std::fs::read(&body).unwrap_or_default());
    // curl -v prints response headers and trailers as "< name: value"
    let trailers = err
        .lines()
        .filter_map(|l| l.strip_prefix("< "))
        .filter(|l| l.starts_with("grpc-") || l.starts_with("x-custom-trailer"))
        .map(|l| l.trim().to_string())
        .collect();
    (msgs, trailers, err)
}

#[test]
fn grpc_unary_streaming_and_error_status_with_trailers_pass_through() {
    let env = setup("proto-grpc", &[]);
    let auth = format!("x-custom-trailer: auth-len-{}", TOKEN.len());
    let (msgs, trailers, err) = grpc_call(&env, "/grpc/unary", b"ping");
    assert_eq!(msgs, vec!["pong:ping".to_string()], "{err}");
    assert!(trailers.contains(&"grpc-status: 0".to_string()), "{err}");
    assert!(trailers.contains(&"grpc-message: ok".to_string()), "{err}");
    assert!(trailers.contains(&auth), "credential not injected: {err}");

    let (msgs, trailers, err) = grpc_call(&env, "/grpc/stream/5", b"go");
    let want: Vec<String> = (0..5).map(|i| format!("item-{i}")).collect();
    assert_eq!(msgs, want, "{err}");
    assert!(trailers.contains(&"grpc-status: 0".to_string()), "{err}");
    assert!(
        trailers.contains(&"grpc-message: streamed".to_string()),
        "{err}"
    );
    assert!(trailers.contains(&auth), "{err}");

    let (msgs, trailers, err) = grpc_call(&env, "/grpc/error", b"x");
    assert!(msgs.is_empty(), "{msgs:?}");
    assert!(trailers.contains(&"grpc-status: 7".to_string()), "{err}");
    assert!(
        trailers.contains(&"grpc-message: permission denied by upstream".to_string()),
        "{err}"
    );
    // the upstream saw each call as h2 with te: trailers (it answers 400 otherwise)
    let log = env.up.access_log();
    assert_eq!(log.matches("POST /grpc/").count(), 3, "{log}");
}

// A real gRPC stack: a Python grpcio server (upstream namespace, TLS from the upstream PKI) and
// a grpcio client (sandbox, trusting egret's CA), generic handlers with bytes messages.

/// argv: cert, key, port, ready file. `egret.test.Echo/{Unary,Stream,Error}`.
const GRPC_SERVER: &str = include_str!("../../../clients/grpc_server.py");

const GRPC_CLIENT: &str = include_str!("../../../clients/grpc_client.py");

#[test]
fn grpcio_unary_streaming_and_error_status_pass_through_with_the_credential() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let pki = upstream_pki(&topo.tmp.0, "grpc", &["grpc.test"]);
    let ready = topo.tmp.path("grpc.ready");
    let mut cmd = topo.up.cmd("python3");
    cmd.args(["-c", GRPC_SERVER]);
    cmd.args([&pki.cert, &pki.key]);
    cmd.args(["443".as_ref(), ready.as_os_str()]);
    let mut server = spawn(cmd, &topo.tmp.0, "grpc-server");
    wait_ready(&mut server, &ready, Duration::from_secs(20))
        .expect("grpcio server (pip install grpcio: scripts/setup.sh does)");
    let token = write(&topo, "token", TOKEN);
    let policy = format!(
        r#"
internet = false
intercept_https = true
allowed_hosts = ["grpc.test"]

[resolve]
"grpc.test" = "10.200.0.2"
{inject}"#,
        inject = inject_header_policy("API_TOKEN", &format!(r#"file = "{token}""#), &["grpc.test"]),
    );
    let (egret, ca) = Egret::start_intercepting(&topo, "proto-grpcio", &policy, &pki.ca, &[], &[])
        .expect("egret starts");
    let o = topo.in_sandbox("python3", &["-c", GRPC_CLIENT, &ca, "grpc.test:443"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let ctx = format!(
        "{out}\n{}\nserver: {}\negret: {}",
        String::from_utf8_lossy(&o.stderr),
        server.output(),
        egret.logs()
    );
    assert!(o.status.success(), "{ctx}");
    // unary: the server saw the injected credential (its digest) and the client's own
    // metadata; the credential it echoed in the message came back masked
    let masked = "*".repeat(TOKEN.len());
    let sha = sha256_hex(TOKEN.as_bytes());
    assert!(
        out.contains(&format!("UNARY auth={masked} sha={sha} echo=hello")),
        "{ctx}"
    );
    assert!(out.contains("UNARY-CODE OK"), "{ctx}");
    assert!(
        out.contains("UNARY-TRAILERS [('x-seen-client-md', 'c1')]"),
        "{ctx}"
    );
    // server streaming: every message, then grpc-status OK with custom (and binary) trailers
    assert!(
        out.contains("STREAM ['item 0', 'item 1', 'item 2', 'item 3', 'item 4']"),
        "{ctx}"
    );
    assert!(out.contains("STREAM-CODE OK"), "{ctx}");
    assert!(
        out.contains(
            r"STREAM-TRAILERS [('x-blob-bin', b'\x00\x01\xfe\xff'), ('x-trailer-count', '5')]"
        ),
        "{ctx}"
    );
    // an error status with its message and trailing metadata
    assert!(out.contains("ERROR-CODE NOT_FOUND"), "{ctx}");
    assert!(
        out.contains("ERROR-DETAILS widget 42 does not exist"),
        "{ctx}"
    );
    assert!(
        out.contains("ERROR-TRAILERS [('x-error-detail', 'widget-42')]"),
        "{ctx}"
    );
    // three calls, all through the handler, on h2 both legs
    let events = egret.audit_events();
    let calls: Vec<_> = events
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/egret.test.Echo/"))
        })
        .collect();
    assert_eq!(calls.len(), 3, "{events:?}");
    assert!(!egret.logs().contains(TOKEN));
}

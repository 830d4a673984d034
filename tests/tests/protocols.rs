//! Issue 6, "protocol fidelity through the credential-injection path": WebSocket (HTTP/1.1
//! Upgrade and RFC 8441 over h2, handler denial), SSE, HTTP/2, gRPC (wire framing with curl, and
//! a real grpcio client and server), 100-continue, edge responses, slow uploads, 1 GiB up and
//! down with bounded memory, Alt-Svc hygiene and content encodings, all over HTTPS through the
//! `inject-header` handler against real servers in the upstream namespace (`egret-testsrv`,
//! python grpcio). The RFC 8441 client is `egret-h2ws` (hyper).
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

// ---------------------------------------------------------------------------------------------
// 1. WebSocket over https (HTTP/1.1 Upgrade)

/// A stdlib-only WebSocket client. argv: CA, mode (client-close | server-close | close-frame).
const WS_CLIENT: &str = r#"
import base64, os, socket, ssl, struct, sys, time
ca, mode = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("api.test", 443), timeout=10), server_hostname="api.test")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: api.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d: sys.exit("EOF during handshake: %r" % buf)
    buf += d
head, buf = buf.split(b"\r\n\r\n", 1)
print("STATUS", head.split(b"\r\n")[0].decode())
if b" 101 " not in head.split(b"\r\n")[0]:
    print("HEAD", head.decode(errors="replace").replace("\r\n", " | "))
    print("BODY", buf.decode(errors="replace"))
    sys.exit(0)
import hashlib
want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
print("ACCEPT-OK", want.encode() in head)
def recvn(n):
    global buf
    while len(buf) < n:
        d = s.recv(65536)
        if not d: raise EOFError()
        buf += d
    out, buf = buf[:n], buf[n:]
    return out
def send(op, payload):
    mask = os.urandom(4)
    n = len(payload)
    h = bytes([0x80 | op])
    if n < 126: h += bytes([0x80 | n])
    elif n < 65536: h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    s.sendall(h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
def recv():
    b0, b1 = recvn(2)
    n = b1 & 0x7f
    if n == 126: n = struct.unpack(">H", recvn(2))[0]
    elif n == 127: n = struct.unpack(">Q", recvn(8))[0]
    return b0 & 0x0f, recvn(n)
op, p = recv()
print("FIRST", op, p.decode())
# ping-pong: each message must come back before the next is sent (no buffering either way)
rtts = []
for i in range(20):
    t = time.time()
    send(1, b"msg %d" % i)
    op, p = recv()
    rtts.append(time.time() - t)
    assert (op, p) == (1, b"msg %d" % i), (op, p)
print("PINGPONG-OK max_rtt_ms=%.1f" % (max(rtts) * 1000))
big = os.urandom(300000)
send(2, big)
op, p = recv()
print("BIG-OK", op == 2 and p == big)
send(9, b"are you there")
op, p = recv()
print("PONG", op, p.decode())
if mode == "client-close":
    s.close()   # abrupt: no close frame; the upstream must see its connection end
    print("CLIENT-CLOSED")
elif mode == "close-frame":
    send(8, struct.pack(">H", 1000))
    op, p = recv()
    print("CLOSE-ECHO", op, struct.unpack(">H", p)[0])
    print("EOF-AFTER-CLOSE", s.recv(10) == b"")
else:
    send(1, b"close-from-server")
    op, p = recv()
    print("SERVER-CLOSE", op, struct.unpack(">H", p)[0])
    try:
        print("EOF-AFTER-CLOSE", s.recv(10) == b"")
    except socket.timeout:
        print("EOF-AFTER-CLOSE timeout: egret kept the client side open")
"#;

#[test]
fn websocket_over_https_gets_the_credential_and_flows_both_ways() {
    let env = setup("proto-ws", &[]);
    for mode in ["client-close", "server-close", "close-frame"] {
        let before = env.up.access_log().matches("WS-OPEN").count();
        let (ok, out, err) = env.python(WS_CLIENT, &[mode]);
        assert!(ok, "{mode}: {out}\n{err}\n{}", env.egret.logs());
        assert!(out.contains("STATUS HTTP/1.1 101"), "{out}");
        assert!(out.contains("ACCEPT-OK True"), "{out}");
        // the upstream only accepts the upgrade with the injected credential, and echoes it
        assert!(out.contains(&format!("FIRST 1 auth={TOKEN}")), "{out}");
        assert!(out.contains("PINGPONG-OK"), "{out}");
        assert!(out.contains("BIG-OK True"), "{out}");
        assert!(out.contains("PONG 10 are you there"), "{out}");
        assert_eq!(
            env.up.access_log().matches("WS-OPEN").count(),
            before + 1,
            "{}",
            env.up.access_log()
        );
        match mode {
            "client-close" => {
                // closing the sandbox side closes the upstream side
                assert!(
                    env.wait_log("WS-EOF", Duration::from_secs(5)),
                    "upstream never saw the client go: {}",
                    env.up.access_log()
                );
            }
            "server-close" => {
                assert!(out.contains("SERVER-CLOSE 8 1000"), "{out}");
                assert!(out.contains("EOF-AFTER-CLOSE True"), "{out}");
            }
            _ => {
                assert!(out.contains("CLOSE-ECHO 8 1000"), "{out}");
                assert!(out.contains("EOF-AFTER-CLOSE True"), "{out}");
                assert!(env.wait_log("WS-CLOSE-FRAME", Duration::from_secs(5)));
            }
        }
    }
    // the secret never reaches the sandbox except where the upstream chose to echo it; egret
    // does not log it
    assert!(!env.egret.logs().contains(TOKEN));
}

#[test]
fn websocket_upgrade_without_the_credential_is_refused_by_the_upstream() {
    // Control for the test above: the same client against get-only (which injects nothing)
    // is refused by the upstream, so "auth=" really comes from the injecting handler.
    let env = setup("proto-ws-ro", &[]);
    let script = WS_CLIENT
        .replace("\"api.test\"", "\"ro.test\"")
        .replace("api.test\\r\\n", "ro.test\\r\\n");
    let (_, out, _) = env.python(&script, &["client-close"]);
    assert!(out.contains("STATUS HTTP/1.1 401"), "{out}");
    assert!(env.up.access_log().contains("WS-REFUSED"));
}

#[test]
fn websocket_upgrade_denied_by_the_handler_never_reaches_the_upstream() {
    // allow-hosts (bound to deny.test) refuses the upgrade request itself: the client gets the
    // handler's status and body, over HTTP/1.1 Upgrade and over RFC 8441 alike.
    let env = setup("proto-ws-deny", &[]);
    let script = WS_CLIENT
        .replace("\"api.test\"", "\"deny.test\"")
        .replace("api.test\\r\\n", "deny.test\\r\\n");
    let (ok, out, err) = env.python(&script, &["client-close"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("STATUS HTTP/1.1 403"), "{out}");
    assert!(out.contains("x-egret-handler: allow-hosts"), "{out}");
    assert!(
        out.contains("host deny.test is not allowed by handler allow-hosts"),
        "{out}"
    );
    let (out, err) = h2ws(&env, "deny.test", "client-close");
    assert!(out.contains("STATUS 403"), "{out}\n{err}");
    assert!(
        out.contains("host deny.test is not allowed by handler allow-hosts"),
        "{out}"
    );
    // the control request in the same run does reach the upstream, so the log is live
    let (code, _, err) = env.curl(&["https://api.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(env.wait_log("host=api.test", Duration::from_secs(5)));
    let log = env.up.access_log();
    assert!(!log.contains("deny.test"), "the upstream saw: {log}");
    assert!(!log.contains("/ws"), "the upstream saw: {log}");
}

// ---------------------------------------------------------------------------------------------
// 1b. WebSocket over h2 (RFC 8441 extended CONNECT)

/// Run the RFC 8441 client (`egret-h2ws`) in the sandbox; (stdout, stderr).
/// Run the RFC 8441 test client in the sandbox against `host`, with `extra` arguments.
fn run_h2ws(env: &Env, host: &str, mode: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--ca", env.ca.as_str(), "--host", host, "--mode", mode];
    args.extend_from_slice(extra);
    env.topo
        .in_sandbox(bin("egret-h2ws").to_str().unwrap(), &args)
}

fn h2ws(env: &Env, host: &str, mode: &str) -> (String, String) {
    let o = run_h2ws(env, host, mode, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "egret-h2ws {host} {mode}: {out}\n{err}");
    (out, err)
}

#[test]
fn websocket_over_h2_extended_connect_is_translated_to_an_http1_upgrade() {
    let env = setup("proto-h2ws", &[]);
    for mode in ["client-close", "server-close", "close-frame"] {
        let before = env.up.access_log().matches("WS-OPEN").count();
        let (out, err) = h2ws(&env, "api.test", mode);
        let ctx = format!("{mode}: {out}\n{err}\n{}", env.egret.logs());
        // egret answered the h2 CONNECT 200 only after checking the upstream's
        // Sec-WebSocket-Accept for the key egret generated
        assert!(out.contains("STATUS 200"), "{ctx}");
        assert!(out.contains(&format!("FIRST 1 auth={TOKEN}")), "{ctx}");
        assert!(out.contains("PINGPONG-OK"), "{ctx}");
        assert!(out.contains("BIG-OK true"), "{ctx}");
        assert!(out.contains("PONG 10 are you there"), "{ctx}");
        assert_eq!(
            env.up.access_log().matches("WS-OPEN").count(),
            before + 1,
            "{ctx}"
        );
        match mode {
            "client-close" => {
                assert!(out.contains("CLIENT-CLOSED"), "{ctx}");
                assert!(
                    env.wait_log("WS-EOF", Duration::from_secs(5)),
                    "upstream never saw the h2 stream end: {}",
                    env.up.access_log()
                );
            }
            "server-close" => assert!(out.contains("SERVER-CLOSE 8 1000"), "{ctx}"),
            _ => {
                assert!(out.contains("CLOSE-ECHO 8 1000"), "{ctx}");
                assert!(env.wait_log("WS-CLOSE-FRAME", Duration::from_secs(5)));
            }
        }
        // whichever side closed, the other side's stream ended too
        assert!(out.contains("EOF-AFTER-CLOSE true"), "{ctx}");
        // the h2 connection outlives the WebSocket stream
        assert!(out.contains("SAME-CONN-AFTER 200"), "{ctx}");
    }
    // The upstream leg was an HTTP/1.1 Upgrade carrying the injected credential.
    let log = env.up.access_log();
    let ws_lines: Vec<&str> = log.lines().filter(|l| l.contains(" /ws ")).collect();
    assert_eq!(ws_lines.len(), 3, "{log}");
    for l in ws_lines {
        assert!(l.starts_with("up GET /ws host=api.test"), "{l}");
        assert!(l.contains("version=HTTP/1.1"), "{l}");
        assert!(l.contains("x-auth-token=present"), "{l}");
    }
    // An upstream whose 101 carries the wrong Sec-WebSocket-Accept is not spliced.
    let o = run_h2ws(
        &env,
        "api.test",
        "client-close",
        &["--path", "/ws/bad-accept"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("STATUS 502"), "{out}");
    assert!(
        out.contains("wrong or missing Sec-WebSocket-Accept"),
        "{out}"
    );
    // Only websocket is carried over extended CONNECT.
    let o = run_h2ws(
        &env,
        "api.test",
        "client-close",
        &["--protocol", "connect-udp"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("STATUS 501"), "{out}");
    assert!(out.contains("egret carries only websocket"), "{out}");
    // The handler saw a GET with `upgrade: websocket`: get-only lets it through, without a
    // credential, so the upstream refuses it and the h2 client gets that answer.
    let before = log.matches("WS-REFUSED").count();
    let (out, _) = h2ws(&env, "ro.test", "client-close");
    assert!(out.contains("STATUS 401"), "{out}");
    assert_eq!(
        env.up.access_log().matches("WS-REFUSED").count(),
        before + 1
    );
    assert!(!env.egret.logs().contains(TOKEN));
}

// ---------------------------------------------------------------------------------------------
// 2. Server-Sent Events: no buffering anywhere

/// Reads an event stream (from a TLS socket speaking HTTP/1.1, or from the output of
/// `curl -N --http2`) and prints, per event, the delay between the upstream's send timestamp
/// and the arrival here, in ms. argv: CA, count, interval_ms, source (h1 | curl-h2).
const SSE_CLIENT: &str = r#"
import re, socket, ssl, sys, time, os
ca, count, ms, src = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if src == "h1":
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(socket.create_connection(("api.test", 443), timeout=10), server_hostname="api.test")
    s.sendall(("GET /sse/%d/%s HTTP/1.1\r\nHost: api.test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n" % (count, ms)).encode())
    read = lambda: s.recv(65536)
else:
    # started from here, once this interpreter is up, so its start-up is not measured
    import subprocess
    p = subprocess.Popen(["curl", "-sS", "-N", "--http2", "--max-time", "600", "--cacert", ca,
                          "-H", "accept: text/event-stream", "https://api.test/sse/%d/%s" % (count, ms)],
                         stdout=subprocess.PIPE)
    fd = p.stdout.fileno()
    read = lambda: os.read(fd, 65536)
buf, seen = b"", 0
while seen < count:
    d = read()
    if not d: break
    now = time.time()
    buf += d
    for m in re.finditer(rb"data: (\d+)\n", buf):
        print("EVENT %.3f" % ((now - int(m.group(1)) / 1e6) * 1000), flush=True)
        seen += 1
    # never count one event twice; an event cut in two stays for the next read
    buf = buf[-64:] if not re.search(rb"data: \d+\n", buf) else re.sub(rb"^.*data: \d+\n", b"", buf, flags=re.S)
print("SEEN", seen)
"#;

fn sse_delays(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("EVENT "))
        .map(|v| v.parse::<f64>().unwrap())
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn server_sent_events_arrive_unbuffered_over_h1_and_h2() {
    // The issue asks for a 60 s stream; CI runs 10 s unless EGRET_SSE_SECS says otherwise.
    let secs: u64 = std::env::var("EGRET_SSE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let count = (secs * 2).to_string();
    let env = setup("proto-sse", &[]);
    let (r1, r2) = std::thread::scope(|sc| {
        let a = sc.spawn(|| env.python(SSE_CLIENT, &[&count, "500", "h1"]));
        let b = sc.spawn(|| env.python(SSE_CLIENT, &[&count, "500", "curl-h2"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (ok, out1, err1) = r1;
    assert!(ok, "{out1}\n{err1}\n{}", env.egret.logs());
    let (ok, out2, err2) = r2;
    assert!(ok, "{out2}\n{err2}\n{}", env.egret.logs());
    let n: usize = count.parse().unwrap();
    for (name, out) in [("h1", &out1), ("h2", &out2)] {
        let mut d = sse_delays(out);
        assert_eq!(d.len(), n, "{name}: {out}");
        eprintln!("SSE {name} in order: {d:?}");
        d.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (med, p99, max) = (percentile(&d, 0.5), percentile(&d, 0.99), d[d.len() - 1]);
        eprintln!("SSE {name}: {n} events over {secs}s, delay upstream->client median {med:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
        assert!(
            max < 50.0,
            "{name}: an event took {max:.1} ms (> 50 ms): {d:?}"
        );
    }
    // both streams reached the upstream (egret's upstream leg negotiates its own ALPN)
    let log = env.up.access_log();
    assert_eq!(
        log.matches(&format!("GET /sse/{count}/500")).count(),
        2,
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. HTTP/2 end to end, many concurrent streams on one connection

#[test]
fn http2_end_to_end_with_sixty_concurrent_streams_on_one_connection() {
    let env = setup("proto-h2", &[]);
    // One request first: the upstream pool learns "h2" only from ALPN, so 60 requests racing a
    // cold pool may each start a handshake before the first completes (hyper's pool then keeps
    // one; hyperium/hyper#1485). With the h2 connection established, all 60 must share it.
    let (code, out, err) = env.curl(&["--http2", "https://api.test/echo"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["headers"]["x-auth-token"], TOKEN);
    // Each request is held by the upstream until all 60 are in flight at once: they can only
    // all succeed if egret carries them concurrently on both legs.
    let n = 60;
    let mut args: Vec<String> = [
        "--http2",
        "--parallel",
        "--parallel-max",
        "100",
        "-w",
        "%{http_version} %{response_code} %{num_connects}\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..n {
        args.push("-o".into());
        args.push("/dev/null".into());
        args.push(format!("https://api.test/barrier/h2/{n}?i={i}"));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = env.curl(&a);
    assert_eq!(code, 0, "{err}\n{}", env.egret.logs());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), n, "{out}");
    assert!(
        lines.iter().all(|l| l.starts_with("2 200 ")),
        "not all h2 200: {out}"
    );
    // one downstream connection for all 60
    let connects: u32 = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(connects, 1, "curl opened {connects} connections: {out}");
    // the upstream saw h2 from egret, with the credential-injecting handler in the path
    let log = env.up.access_log();
    let reqs: Vec<&str> = log.lines().filter(|l| l.contains("/barrier/h2/")).collect();
    assert_eq!(reqs.len(), n, "{log}");
    assert!(reqs.iter().all(|l| l.contains("version=HTTP/2.0")), "{log}");
    let peers: std::collections::BTreeSet<&str> = reqs
        .iter()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("peer=")))
        .collect();
    eprintln!(
        "h2: {n} concurrent streams, upstream connections used: {}",
        peers.len()
    );
    assert_eq!(peers.len(), 1, "upstream connections: {peers:?}");
    // ...and it is the warm-up's connection
    let warm = log
        .lines()
        .find(|l| l.contains(" /echo "))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("peer=")));
    assert_eq!(warm, peers.first().copied(), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 4. gRPC framing over h2 with trailers (testsrv speaks the gRPC wire format; curl is the client)

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
fn grpc_call(env: &Env, path: &str, msg: &[u8]) -> (Vec<String>, Vec<String>, String) {
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

// ---------------------------------------------------------------------------------------------
// 4b. A real gRPC stack: Python grpcio server (upstream namespace, TLS from the upstream PKI)
//     and grpcio client (sandbox, trusting egret's CA), generic handlers with bytes messages.

/// argv: cert, key, port, ready file. `egret.test.Echo/{Unary,Stream,Error}`.
pub const GRPC_SERVER: &str = r#"
import grpc, sys
from concurrent import futures
cert, key, port, ready = sys.argv[1:5]
def unary(req, ctx):
    md = dict(ctx.invocation_metadata())
    ctx.set_trailing_metadata((("x-seen-client-md", md.get("x-client-md", "<absent>")),))
    return b"auth=" + md.get("x-auth-token", "<absent>").encode() + b" echo=" + req
def stream(req, ctx):
    n = int(req)
    for i in range(n):
        yield b"item %d" % i
    ctx.set_trailing_metadata((("x-trailer-count", str(n)), ("x-blob-bin", b"\x00\x01\xfe\xff")))
def error(req, ctx):
    ctx.set_trailing_metadata((("x-error-detail", "widget-42"),))
    ctx.abort(grpc.StatusCode.NOT_FOUND, "widget 42 does not exist")
h = grpc.method_handlers_generic_handler("egret.test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Error": grpc.unary_unary_rpc_method_handler(error),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((h,))
creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
server.add_secure_port("[::]:%s" % port, creds)
server.start()
open(ready, "w").write("ok")
server.wait_for_termination()
"#;

const GRPC_CLIENT: &str = r#"
import grpc, sys
ca, target = sys.argv[1], sys.argv[2]
# custom metadata only (a trailers-only error response also carries e.g. date)
md = lambda m: sorted((k, v) for k, v in m if k.startswith("x-"))
ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()))
r, call = ch.unary_unary("/egret.test.Echo/Unary").with_call(
    b"hello", timeout=10, metadata=(("x-client-md", "c1"),))
print("UNARY", r.decode())
print("UNARY-CODE", call.code().name)
print("UNARY-TRAILERS", md(call.trailing_metadata()))
it = ch.unary_stream("/egret.test.Echo/Stream")(b"5", timeout=10)
print("STREAM", [m.decode() for m in it])
print("STREAM-CODE", it.code().name)
print("STREAM-TRAILERS", md(it.trailing_metadata()))
try:
    ch.unary_unary("/egret.test.Echo/Error")(b"x", timeout=10)
    print("ERROR-NOT-RAISED")
except grpc.RpcError as e:
    print("ERROR-CODE", e.code().name)
    print("ERROR-DETAILS", e.details())
    print("ERROR-TRAILERS", md(e.trailing_metadata()))
"#;

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

[secrets]
API_TOKEN = {{ file = "{token}" }}

[handlers.inject]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "API_TOKEN" }}
secrets = ["API_TOKEN"]

[[routes]]
host = "grpc.test"
handler = "inject"
"#,
        inject = handler_module("inject-header"),
    );
    let p = write(&topo, "policy.toml", &policy);
    let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
    let egret = Egret::start(
        &topo,
        "proto-grpcio",
        &[
            "--policy",
            &p,
            "--ca-out",
            &ca,
            "--upstream-ca",
            pki.ca.to_str().unwrap(),
        ],
    )
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
    // unary: the server saw the injected credential and the client's own metadata
    assert!(
        out.contains(&format!("UNARY auth={TOKEN} echo=hello")),
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

// ---------------------------------------------------------------------------------------------
// 5. Expect: 100-continue, edge responses, slow uploads

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Node's http2 client: POST argv[3] bytes, with `expect: 100-continue` when argv[4] is
/// "expect" (the body is only sent on `continue`); prints the status, how much body had been
/// written when the response came, and the response body.
const H2_EXPECT_CLIENT: &str = r#"
const http2 = require('http2'), fs = require('fs');
const [ca, url, size, mode] = process.argv.slice(2);
const u = new URL(url);
const s = http2.connect(u.origin, { ca: fs.readFileSync(ca) });
const t0 = Date.now();
const h = { ':method': 'POST', ':path': u.pathname, 'content-length': size };
if (mode === 'expect') h['expect'] = '100-continue';
const req = s.request(h, { endStream: false });
let sent = 0, body = '';
const chunk = Buffer.alloc(65536, 120);
function pump() {
  while (sent < +size) { sent += chunk.length; if (!req.write(chunk)) { req.once('drain', pump); return; } }
  req.end();
}
if (mode === 'expect') req.on('continue', pump); else pump();
req.on('response', (hd) => { console.log('STATUS', hd[':status'], 'SENT_AT_RESPONSE', sent, 'MS', Date.now() - t0); });
req.on('data', (d) => body += d);
req.on('end', () => { console.log('BODY', JSON.stringify(body)); s.close(); });
req.on('error', (e) => { console.log('ERROR', e.code, e.message, 'BODY', JSON.stringify(body)); s.close(); process.exitCode = 1; });
"#;

#[test]
fn expect_100_continue_denied_by_the_handler_answers_before_the_body() {
    let env = setup("proto-100", &[]);
    let big = env.topo.tmp.path("big.bin");
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    let at = format!("@{}", big.display());
    // HTTP/1.1: curl (it would send the body anyway after --expect100-timeout, 5 s)
    let (code, out, err) = env.curl(&[
        "--http1.1",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "5",
        "--data-binary",
        &at,
        "-o",
        "/dev/null",
        "-w",
        "%{response_code} %{size_upload} %{time_total}",
        "https://ro.test/upload",
    ]);
    assert_eq!(code, 0, "{err}");
    let f: Vec<&str> = out.split(' ').collect();
    assert_eq!(f[0], "405", "{out} {err}");
    let (uploaded, secs): (u64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    eprintln!("100-continue h1: 405 after {secs:.3}s, {uploaded} body bytes sent");
    assert!(
        uploaded < 1 << 20,
        "the client sent {uploaded} bytes of a denied body"
    );
    assert!(
        secs < 3.0,
        "the denial took {secs}s (curl waited for the 100 timeout)"
    );
    // HTTP/2: node (curl 7.88 reports an early final response followed by the RFC 9113 §8.1
    // RST_STREAM(NO_ERROR) as an error, whatever the server)
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok()
    {
        let script = write(&env.topo, "h2expect.js", H2_EXPECT_CLIENT);
        for mode in ["expect", "plain"] {
            let o = env.topo.in_sandbox(
                "node",
                &[
                    &script,
                    &env.ca,
                    "https://ro.test/upload",
                    &data.len().to_string(),
                    mode,
                ],
            );
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!(
                "100-continue h2 ({mode}): {}",
                out.trim().replace('\n', " | ")
            );
            assert!(out.contains("STATUS 405"), "{mode}: {out}\n{err}");
            assert!(
                out.contains("read-only egress"),
                "{mode}: response body lost: {out}"
            );
            if mode == "expect" {
                assert!(out.contains("SENT_AT_RESPONSE 0 "), "{out}");
                let ms: f64 = out
                    .split("MS ")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap();
                assert!(ms < 3000.0, "h2 denial took {ms} ms");
            }
        }
    } else {
        eprintln!("note: node is not installed; skipped the HTTP/2 100-continue client");
    }
    assert!(
        !env.up.access_log().contains("/upload"),
        "{}",
        env.up.access_log()
    );
    // allowed: the same upload with Expect through the injecting handler arrives intact
    let small = env.topo.tmp.path("small.bin");
    std::fs::write(&small, &data[..4 << 20]).unwrap();
    let at = format!("@{}", small.display());
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = env.curl(&[
            version,
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "5",
            "--data-binary",
            &at,
            "https://api.test/upload",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out.trim(),
            format!("{} {}", sha256_hex(&data[..4 << 20]), 4 << 20),
            "{version}"
        );
    }
}

#[test]
fn head_204_304_and_chunked_responses_are_correct() {
    let env = setup("proto-edge", &[]);
    for version in ["--http1.1", "--http2"] {
        // HEAD keeps Content-Length and sends no body: the next response on the same
        // connection must still parse
        let (code, out, err) = env.curl(&[
            version,
            "-sS",
            "-I",
            "https://api.test/bytes/100000",
            "--next",
            "--cacert",
            &env.ca,
            version,
            "https://api.test/echo",
        ]);
        assert_eq!(code, 0, "{version}: {err}");
        let lower = out.to_lowercase();
        assert!(lower.contains("content-length: 100000"), "{version}: {out}");
        assert!(out.contains("\"path\":\"/echo\""), "{version}: {out}");
        let (code, out, err) = env.curl(&[version, "-i", "https://api.test/status/204"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(" 204"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "204 with a body: {out:?}");
        let (code, out, err) = env.curl(&[
            version,
            "-i",
            "-H",
            "If-None-Match: \"v1\"",
            "https://api.test/etag",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(" 304"), "{out}");
        assert!(out.to_lowercase().contains("etag: \"v1\""), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "304 with a body: {out:?}");
        let (code, out, _) = env.curl(&[version, "-i", "https://api.test/etag"]);
        assert_eq!(code, 0);
        assert!(
            out.contains(" 200") && out.ends_with("versioned body\n"),
            "{out}"
        );
        // a response without length streams through (chunked on h1)
        let (code, out, err) = env.curl(&[version, "-i", "https://api.test/chunked/5"]);
        assert_eq!(code, 0, "{err}");
        let body: String = (0..5).map(|i| format!("chunk {i}\n")).collect();
        assert!(out.ends_with(&body), "{out}");
        if version == "--http1.1" {
            assert!(
                out.to_lowercase().contains("transfer-encoding: chunked"),
                "{out}"
            );
        }
    }
}

#[test]
fn slow_upload_at_one_kib_per_second_is_not_timed_out() {
    let env = setup("proto-slow", &[]);
    let data: Vec<u8> = (0..5 * 1024u32).map(|i| (i % 253) as u8).collect();
    let f = env.topo.tmp.path("slow.bin");
    std::fs::write(&f, &data).unwrap();
    let at = format!("@{}", f.display());
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = env.curl(&[
            version,
            "--limit-rate",
            "1k",
            "--data-binary",
            &at,
            "-w",
            " %{time_total}",
            "https://api.test/upload",
        ]);
        assert_eq!(code, 0, "{version}: {err}\n{}", env.egret.logs());
        let (answer, secs) = out.rsplit_once(' ').unwrap();
        let secs: f64 = secs.parse().unwrap();
        assert_eq!(answer, format!("{} {}", sha256_hex(&data), data.len()));
        eprintln!("slow upload {version}: {secs:.1}s");
        // proves the client really was slow (the rate limit applied)
        assert!(secs >= 3.0, "{version}: upload took only {secs}s");
    }
}

/// Writes 1 GiB of numbered 1 MiB blocks to stdout, then "SHA256 LEN" to stderr.
const GIB_SOURCE: &str = r#"
import hashlib, sys
n, blk = 1 << 30, 1 << 20
base = bytes(range(256)) * (blk // 256)
h, out = hashlib.sha256(), sys.stdout.buffer
for i in range(n // blk):
    b = i.to_bytes(8, "big") + base[8:]
    h.update(b)
    out.write(b)
out.flush()
sys.stderr.write("%s %d\n" % (h.hexdigest(), n))
"#;

/// Peak and current resident set of a process, in KiB (VmHWM, VmRSS).
fn rss_kib(pid: u32) -> (u64, u64) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn one_gib_upload_and_download_stream_through_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    // The bound is on memory only: bodies are streamed, so egret's peak must not grow with
    // the transfer size (a buffered GiB would show as ~1 GiB here).
    const PEAK_LIMIT_KIB: u64 = 96 * 1024;
    let env = setup("proto-gib", &[]);
    let pid = env.egret.proc.child.id();
    let (hwm0, _) = rss_kib(pid);

    // Upload: HTTP/1.1, chunked from a pipe, through the injecting handler.
    let gen_out = env.topo.tmp.path("gen.txt");
    let o = env.topo.in_sandbox(
        "bash",
        &[
            "-c",
            r#"set -o pipefail; python3 -c "$1" 2>"$2" | curl -sS --max-time 300 --cacert "$3" --http1.1 -T - -w ' %{speed_upload}' https://api.test/upload"#,
            "gib-upload",
            GIB_SOURCE,
            gen_out.to_str().unwrap(),
            &env.ca,
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        env.egret.logs()
    );
    let sent = std::fs::read_to_string(&gen_out).unwrap();
    let (answer, speed) = out.rsplit_once(' ').unwrap();
    assert_eq!(answer.trim(), sent.trim(), "the upstream got other bytes");
    assert!(sent.trim().ends_with(&format!(" {GIB}")), "{sent}");
    let up_mib_s = speed.trim().parse::<f64>().unwrap() / (1 << 20) as f64;
    let (hwm1, rss1) = rss_kib(pid);

    // Download over h2: the upstream's deterministic stream, hashed on arrival in the sandbox.
    let o = env.topo.in_sandbox(
        "bash",
        &[
            "-c",
            r#"set -o pipefail; curl -sS --max-time 300 --cacert "$1" --http2 -w '%{speed_download} %{http_version}' -o >(sha256sum >"$2") https://api.test/bytes/1073741824"#,
            "gib-download",
            &env.ca,
            env.topo.tmp.path("down.sha").to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (speed, version) = out.trim().split_once(' ').unwrap();
    assert_eq!(version, "2", "curl did not get h2 from egret");
    let down_mib_s = speed.parse::<f64>().unwrap() / (1 << 20) as f64;
    let (code, want, err) = env.curl(&["https://api.test/sha/1073741824"]);
    assert_eq!(code, 0, "{err}");
    // sha256sum runs in a process substitution: wait for it to write
    let sha_file = env.topo.tmp.path("down.sha");
    let t = Instant::now();
    let got = loop {
        let s = std::fs::read_to_string(&sha_file).unwrap_or_default();
        if s.contains(' ') || t.elapsed() > Duration::from_secs(30) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        got.split_whitespace().next(),
        want.split_whitespace().next(),
        "download hash: {got} vs upstream {want}"
    );
    let (hwm2, rss2) = rss_kib(pid);
    eprintln!(
        "1 GiB through egret (debug build): upload {up_mib_s:.0} MiB/s (h1), download \
         {down_mib_s:.0} MiB/s (h2); egret VmHWM {hwm0} KiB at start, {hwm1} after upload, \
         {hwm2} after download (VmRSS {rss1} / {rss2} KiB)"
    );
    assert!(
        hwm2 < PEAK_LIMIT_KIB,
        "egret peak RSS {hwm2} KiB (start {hwm0}, after upload {hwm1}): bodies are buffered"
    );
    // both transfers went through the injecting handler
    let log = env.up.access_log();
    assert!(
        log.lines()
            .any(|l| l.contains("PUT /upload") && l.contains("x-auth-token=present")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("GET /bytes/1073741824") && l.contains("x-auth-token=present")),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Alt-Svc: h3 advertisements are stripped unless --keep-alt-svc

#[test]
fn alt_svc_h3_advertisements_are_stripped_unless_kept() {
    let env = setup("proto-altsvc", &[]);
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = env.curl(&[version, "-i", "https://api.test/altsvc/mixed"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.to_lowercase().starts_with("alt-svc:"))
            .collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert_eq!(
            lines[0].split_once(':').unwrap().1.trim(),
            r#"h2="alt.test:443"; ma=60"#,
            "{out}"
        );
        let (code, out, _) = env.curl(&[version, "-i", "https://api.test/altsvc/h3only"]);
        assert_eq!(code, 0);
        assert!(out.contains(" 200"), "{out}");
        assert!(!out.to_lowercase().contains("alt-svc"), "{out}");
    }
    drop(env);
    let env = setup("proto-altsvc-keep", &["--keep-alt-svc"]);
    let (code, out, _) = env.curl(&["-i", "https://api.test/altsvc/mixed"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(r#"h3=":443"; ma=86400, h2="alt.test:443"; ma=60, h3-29=":443"; ma=86400"#),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Content encodings pass through untouched

#[test]
fn gzip_bodies_pass_through_byte_identical() {
    let env = setup("proto-gzip", &[]);
    let body = env.topo.tmp.path("gz.bin");
    let hdrs = env.topo.tmp.path("gz.headers");
    for version in ["--http1.1", "--http2"] {
        let (code, _, err) = env.curl(&[
            version,
            "-H",
            "accept-encoding: gzip",
            "-D",
            hdrs.to_str().unwrap(),
            "-o",
            body.to_str().unwrap(),
            "https://api.test/gzip/300000",
        ]);
        assert_eq!(code, 0, "{err}");
        let h = std::fs::read_to_string(&hdrs).unwrap().to_lowercase();
        let header = |name: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name}: {h}"))
        };
        assert_eq!(header("content-encoding"), "gzip");
        let got = std::fs::read(&body).unwrap();
        assert_eq!(got[..2], [0x1f, 0x8b], "{version}: not gzip");
        assert_eq!(sha256_hex(&got), header("x-sha256-encoded"), "{version}");
        assert_eq!(header("content-length"), got.len().to_string(), "{version}");
        // and it is real gzip: curl --compressed decodes it to the plain stream
        let (code, _, err) = env.curl(&[
            version,
            "--compressed",
            "-o",
            body.to_str().unwrap(),
            "https://api.test/gzip/300000",
        ]);
        assert_eq!(code, 0, "{err}");
        let plain = std::fs::read(&body).unwrap();
        assert_eq!(plain.len(), 300000);
        assert_eq!(sha256_hex(&plain), header("x-sha256-plain"));
    }
    // the client's Accept-Encoding reaches the upstream unchanged
    let (code, out, _) = env.curl(&[
        "-H",
        "accept-encoding: br, gzip;q=0.5",
        "https://api.test/echo",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["headers"]["accept-encoding"], "br, gzip;q=0.5");
}

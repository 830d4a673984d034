//! Getting a packet out of the sandbox without egret: raw ICMP and IP, UDP to any port, forged
//! socket marks, `IP_TRANSPARENT`, binding or dialling egret's own ports, and `AF_PACKET` frames
//! on a veth and in a lo-only sandbox.

use super::{py, stdout, Sniffer, BASIC_POLICY};
use egret_e2e::*;
use std::time::Duration;

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

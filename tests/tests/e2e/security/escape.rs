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
    let script = include_str!("../../../clients/escape_attempts.py");
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
    let script = include_str!("../../../clients/af_packet_frames_on_veth.py");
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
    let script = include_str!("../../../clients/af_packet_frame_on_every_device.py");
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

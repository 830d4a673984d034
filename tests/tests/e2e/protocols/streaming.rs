//! Streams that must flow as they come: Server-Sent Events unbuffered over h1 and h2, sixty
//! concurrent h2 streams on one connection on both legs, and an upload at 1 KiB/s that is not
//! timed out.
//!
//! Scale: `EGRET_SSE_SECS` (default 10) sets how long the event stream runs.

use super::{setup, TOKEN};
use egret_e2e::{assert_injected_and_masked, sha256_hex};

/// Reads an event stream (from a TLS socket speaking HTTP/1.1, or from the output of
/// `curl -N --http2`) and prints, per event, the delay between the upstream's send timestamp
/// and the arrival here, in ms. argv: CA, count, interval_ms, source (h1 | curl-h2).
const SSE_CLIENT: &str = include_str!("../../../clients/sse_client.py");

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
        // Unbuffered means each event arrives before the next is sent (500 ms later): an event
        // held back by buffering would be late by the interval. The bound is that, halved; the
        // latency itself is the benchmark's business (tens of ms here under load, ~1 ms idle).
        assert!(
            max < 250.0,
            "{name}: an event took {max:.1} ms (> 250 ms, half the event interval): {d:?}"
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
    assert_injected_and_masked(&v, "x-auth-token", TOKEN);
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

//! `egret-bench-proto`: protocol figures of issue 6, each measured in one run against direct
//! access, interleaved A B A B: a sandbox behind egret (TLS intercepted, `inject-header`
//! handler) and a second namespace with a direct veth to the same upstream servers.
//!
//! * gRPC unary latency, python grpcio on both sides (tests/bench/grpc_latency.py): per round one
//!   channel, 200 warm-up calls, then `BENCH_GRPC_CALLS` (default 2000) sequential calls;
//!   medians over `BENCH_ROUNDS` (default 4) of each round's p50 and p99.
//! * 1 GiB over HTTPS (HTTP/1.1, curl): upload (`/upload`, chunked from a pipe) and download
//!   (`/bytes/N`), `BENCH_GIB_ROUNDS` rounds (default 3, 0 to skip), median speed; and egret's
//!   peak RSS afterwards.
//!
//! Run through `sudo scripts/bench-proto.sh` (release build); JSON goes to `BENCH_PROTO_OUT`
//! (default bench-proto-results.json).
use egret_e2e::*;
use std::time::Duration;

fn script() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/grpc_latency.py")
        .to_string_lossy()
        .into_owned()
}

/// (p50 µs, p99 µs) of one client run.
fn run_client(ns: &Netns, ca: &str, target: &str, calls: &str) -> (f64, f64) {
    let out = ns.run(
        "python3",
        &[&script(), "client", ca, target, "grpc.test", calls],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "grpc client in {} failed ({e}): {}{}",
            ns.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v["p50_us"].as_f64().unwrap(), v["p99_us"].as_f64().unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median speed in MiB/s of curl runs (`-w %{speed_...}`) in `ns`, via bash.
fn curl_speed(ns: &Netns, script: &str, args: &[&str]) -> f64 {
    let mut a = vec!["-c", script, "bench"];
    a.extend_from_slice(args);
    let out = ns.run("bash", &a);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl in {} failed: {text}{}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let speed = text.split_whitespace().last().expect("a speed");
    speed.parse::<f64>().expect("speed") / (1u64 << 20) as f64
}

/// The namespaces and servers of a run: the sandbox behind egret, the direct baseline, the
/// upstream (egret-testsrv for bulk.test, grpcio for grpc.test) and egret. Fields drop in
/// order: egret and the servers before the namespaces.
struct Proto {
    egret: Egret,
    _server: Proc,
    up: Upstream,
    /// egret's CA.
    ca: String,
    pki: UpstreamPki,
    direct: Netns,
    topo: Topology,
}

impl Proto {
    fn new() -> Proto {
        let topo = Topology::new(SandboxNet::LoOnly);
        // The baseline: a namespace without egret, with a veth straight to the upstream.
        let direct = topo.direct_baseline(&["10.202.0.3/24"]);

        // bulk.test: egret-testsrv on .2; grpc.test: the grpcio server on .3 (both sides).
        let pki = upstream_pki(&topo.tmp.0, "proto", &["grpc.test", "bulk.test"]);
        let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
        let up = Upstream::start_with(
            &topo,
            "bulk",
            &[
                "--https",
                "10.200.0.2:443",
                "--https",
                "10.202.0.2:443",
                "--cert",
                cert,
                "--key",
                key,
                "--log-header",
                "x-auth-token",
            ],
        );
        let ready = topo.tmp.path("grpc.ready");
        let mut cmd = topo.up.cmd("python3");
        cmd.args([script().as_str(), "server", cert, key]);
        cmd.args([ready.to_str().unwrap(), "10.200.0.3:443", "10.202.0.3:443"]);
        let mut server = spawn(cmd, &topo.tmp.0, "grpc-server");
        wait_ready(&mut server, &ready, Duration::from_secs(20))
            .expect("grpcio server (scripts/setup.sh installs grpcio)");

        let policy = write(
            &topo,
            "bench-proto.toml",
            &format!(
                r#"
    internet = false
    intercept_https = true
    allowed_hosts = ["grpc.test", "bulk.test"]
    [resolve]
    "grpc.test" = "10.200.0.3"
    "bulk.test" = "10.200.0.2"
    {}"#,
                inject_header_policy(
                    "TOKEN",
                    r#"env = "BENCH_TOKEN""#,
                    &["grpc.test", "bulk.test"]
                )
            ),
        );
        std::env::set_var("BENCH_TOKEN", "bench-token-value");
        let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
        let egret = Egret::start(
            &topo,
            "bench-proto",
            &[
                "--policy",
                &policy,
                "--ca-out",
                &ca,
                "--upstream-ca",
                pki.ca.to_str().unwrap(),
            ],
        )
        .expect("egret starts");
        // The handler really injects on this path (otherwise the comparison would be unfair).
        let probe = topo.sbx.run(
            "python3",
            &[&script(), "client", &ca, "grpc.test:443", "grpc.test", "10"],
        );
        let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("probe");
        assert_eq!(
            probe["auth"], true,
            "the credential did not reach the server"
        );
        Proto {
            egret,
            _server: server,
            up,
            ca,
            pki,
            direct,
            topo,
        }
    }

    fn upstream_ca(&self) -> &str {
        self.pki.ca.to_str().unwrap()
    }
}

/// gRPC unary latency, direct vs egret, `rounds` rounds of `calls` calls.
fn grpc(p: &Proto, rounds: usize, calls: &str) -> serde_json::Value {
    let (direct, topo, ca, upstream_ca) = (&p.direct, &p.topo, &p.ca, p.upstream_ca());
    let (mut d50, mut d99, mut e50, mut e99) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let (a, b) = run_client(direct, upstream_ca, "10.202.0.3:443", calls);
        d50.push(a);
        d99.push(b);
        let (c, d) = run_client(&topo.sbx, ca, "grpc.test:443", calls);
        e50.push(c);
        e99.push(d);
        eprintln!(
            "gRPC round {round}: direct p50 {a:.0} p99 {b:.0} µs | egret p50 {c:.0} p99 {d:.0} µs"
        );
    }
    let (d50, d99, e50, e99) = (median(d50), median(d99), median(e50), median(e99));
    println!(
        "gRPC unary ({calls} sequential calls, 1 channel, {rounds} rounds): direct p50 {d50:.0} µs p99 {d99:.0} µs | egret p50 {e50:.0} µs p99 {e99:.0} µs | added p50 {:.0} µs p99 {:.0} µs",
        e50 - d50,
        e99 - d99
    );
    serde_json::json!({
        "scenario": "gRPC unary, grpcio both sides, TLS intercepted + inject-header",
        "calls_per_round": calls, "rounds": rounds,
        "direct_p50_us": d50, "direct_p99_us": d99, "egret_p50_us": e50, "egret_p99_us": e99,
        "added_p50_us": e50 - d50, "added_p99_us": e99 - d99,
    })
}

/// 1 GiB download and upload over HTTPS, direct vs egret, `gib_rounds` rounds each.
fn gib(p: &Proto, gib_rounds: usize, rows: &mut Vec<serde_json::Value>) {
    let (direct, topo, up, upstream_ca) = (&p.direct, &p.topo, &p.up, p.upstream_ca());
    let ca = &p.ca;
    const DOWN: &str = r#"curl -sS --http1.1 --cacert "$1" --resolve "$2" -o /dev/null -w '%{speed_download}' https://bulk.test/bytes/1073741824"#;
    const UP: &str = r#"set -o pipefail; head -c 1073741824 /dev/zero | curl -sS --http1.1 --cacert "$1" --resolve "$2" -T - -o /dev/null -w '%{speed_upload}' https://bulk.test/upload"#;
    // --resolve pins the direct side to the upstream; behind egret it names the address
    // egret's DNS would give anyway (any address: egret routes by the name in SNI/Host).
    let direct_args = [upstream_ca, "bulk.test:443:10.202.0.2"];
    let egret_args = [ca.as_str(), "bulk.test:443:10.200.0.2"];
    for (name, script) in [("download", DOWN), ("upload", UP)] {
        let (mut d, mut e) = (vec![], vec![]);
        for round in 0..gib_rounds {
            d.push(curl_speed(direct, script, &direct_args));
            e.push(curl_speed(&topo.sbx, script, &egret_args));
            eprintln!(
                "1 GiB {name} round {round}: direct {:.0} MiB/s | egret {:.0} MiB/s",
                d[round], e[round]
            );
        }
        let (d, e) = (median(d), median(e));
        println!(
            "1 GiB {name} over HTTPS (h1, inject-header): direct {d:.0} MiB/s, through egret {e:.0} MiB/s (ratio {:.2})",
            e / d
        );
        rows.push(
            serde_json::json!({"scenario": format!("1 GiB {name}, HTTPS h1, inject-header"),
            "direct_mib_s": d, "egret_mib_s": e, "ratio": e / d}),
        );
    }
    let log = up.access_log();
    assert!(
        log.lines()
            .filter(|l| l.contains("10.200.0.1"))
            .all(|l| l.contains("x-auth-token=present")),
        "a request through egret reached the upstream without the credential"
    );
}

fn main() {
    let env_num = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env_num("BENCH_ROUNDS", 4);
    let gib_rounds = env_num("BENCH_GIB_ROUNDS", 3);
    let calls = env_num("BENCH_GRPC_CALLS", 2000).to_string();
    let p = Proto::new();
    let mut rows = vec![grpc(&p, rounds, &calls)];
    if gib_rounds > 0 {
        gib(&p, gib_rounds, &mut rows);
    }
    let peak = proc_status_kib(p.egret.proc.child.id(), "VmHWM");
    println!("egret peak RSS after the runs: {peak} KiB");
    rows.push(serde_json::json!({"scenario": "egret peak RSS", "kib": peak}));
    let out =
        std::env::var("BENCH_PROTO_OUT").unwrap_or_else(|_| "bench-proto-results.json".into());
    std::fs::write(&out, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    eprintln!("wrote {out}");
}

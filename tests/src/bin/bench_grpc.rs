//! `egret-bench-grpc`: gRPC unary latency added by egret, python grpcio on both sides
//! (tests/bench/grpc_latency.py), measured in one run against direct access, interleaved
//! A B A B: a sandbox behind egret (TLS intercepted, `inject-header` handler) and a second
//! namespace with a direct veth to the same upstream gRPC server. Each round opens one channel
//! and makes `BENCH_GRPC_CALLS` (default 2000) sequential unary calls after 200 warm-up calls;
//! reported are the medians over `BENCH_ROUNDS` (default 4) rounds of each round's p50 and p99.
//! Run through `sudo scripts/bench-grpc.sh` (release build); JSON goes to `BENCH_GRPC_OUT`
//! (default bench-grpc-results.json).
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

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let calls = std::env::var("BENCH_GRPC_CALLS").unwrap_or_else(|_| "2000".into());
    let topo = Topology::new(SandboxNet::LoOnly);
    // The baseline: a namespace without egret, with a veth straight to the upstream.
    let direct = Netns::new(&format!("egt-{}-dir", topo.id));
    sh(
        "ip",
        &[
            "link",
            "add",
            &format!("vd{}", topo.id),
            "netns",
            &direct.name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("vx{}", topo.id),
            "netns",
            &topo.up.name,
        ],
    )
    .unwrap();
    direct.ip(&["link", "set", &format!("vd{}", topo.id), "name", "v-up"]);
    topo.up
        .ip(&["link", "set", &format!("vx{}", topo.id), "name", "v-dir"]);
    direct.ip(&["addr", "add", "10.202.0.1/24", "dev", "v-up"]);
    topo.up
        .ip(&["addr", "add", "10.202.0.2/24", "dev", "v-dir"]);
    direct.ip(&["link", "set", "v-up", "up"]);
    topo.up.ip(&["link", "set", "v-dir", "up"]);

    let pki = upstream_pki(&topo.tmp.0, "grpc", &["grpc.test"]);
    let ready = topo.tmp.path("grpc.ready");
    let mut cmd = topo.up.cmd("python3");
    cmd.args([script().as_str(), "server"]);
    cmd.args([&pki.cert, &pki.key]);
    cmd.args(["443".as_ref(), ready.as_os_str()]);
    let mut server = spawn(cmd, &topo.tmp.0, "grpc-server");
    wait_ready(&mut server, &ready, Duration::from_secs(20))
        .expect("grpcio server (scripts/setup.sh installs grpcio)");

    let policy = write(
        &topo,
        "bench-grpc.toml",
        &format!(
            r#"
internet = false
intercept_https = true
allowed_hosts = ["grpc.test"]
[resolve]
"grpc.test" = "10.200.0.2"
[secrets]
TOKEN = {{ env = "BENCH_TOKEN" }}
[handlers.inject]
module = "{}"
params = {{ header = "x-auth-token", secret = "TOKEN" }}
secrets = ["TOKEN"]
[[routes]]
host = "grpc.test"
handler = "inject"
"#,
            handler_module("inject-header")
        ),
    );
    std::env::set_var("BENCH_TOKEN", "bench-token-value");
    let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
    let _egret = Egret::start(
        &topo,
        "bench-grpc",
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

    let upstream_ca = pki.ca.to_str().unwrap();
    let (mut d50, mut d99, mut e50, mut e99) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let (a, b) = run_client(&direct, upstream_ca, "10.202.0.2:443", &calls);
        d50.push(a);
        d99.push(b);
        let (c, d) = run_client(&topo.sbx, &ca, "grpc.test:443", &calls);
        e50.push(c);
        e99.push(d);
        eprintln!(
            "round {round}: direct p50 {a:.0} p99 {b:.0} µs | egret p50 {c:.0} p99 {d:.0} µs"
        );
    }
    let (d50, d99, e50, e99) = (median(d50), median(d99), median(e50), median(e99));
    println!(
        "gRPC unary ({calls} sequential calls, 1 channel, {rounds} rounds): direct p50 {d50:.0} µs p99 {d99:.0} µs | egret p50 {e50:.0} µs p99 {e99:.0} µs | added p50 {:.0} µs p99 {:.0} µs",
        e50 - d50,
        e99 - d99
    );
    let out = std::env::var("BENCH_GRPC_OUT").unwrap_or_else(|_| "bench-grpc-results.json".into());
    let json = serde_json::json!({
        "scenario": "gRPC unary, grpcio both sides, TLS intercepted + inject-header",
        "calls_per_round": calls, "rounds": rounds,
        "direct_p50_us": d50, "direct_p99_us": d99, "egret_p50_us": e50, "egret_p99_us": e99,
        "added_p50_us": e50 - d50, "added_p99_us": e99 - d99,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    eprintln!("wrote {out}");
}

//! `egret-bench`: measures egret against direct access in the same run, interleaved A B A B,
//! in namespaces it builds itself (the e2e harness). Prints a table and writes JSON.
//!
//! Run through `scripts/bench.sh` (release build). Scenarios:
//! * keep-alive HTTP/1.1 request latency, 1 connection (p50/p99, direct vs egret),
//! * keep-alive HTTPS (intercepted, `inject-header` handler) latency vs direct HTTPS,
//! * TLS handshake + first request on a new connection (cached leaf) vs direct,
//! * start-up time to the ready file (median of 10), idle RSS.
use egret_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = r#"
import http.client, ssl, sys, time, json
mode, host, addr, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cafile = sys.argv[5] if len(sys.argv) > 5 else None
lat = []
if mode in ("http", "https"):
    if mode == "http":
        c = http.client.HTTPConnection(addr, 80)
    else:
        ctx = ssl.create_default_context(cafile=cafile)
        c = http.client.HTTPSConnection(addr, 443, context=ctx)
        c._tunnel_host = None
    hdr = {"Host": host}
    for i in range(n + 50):
        t = time.perf_counter(); c.request("GET", "/echo", headers=hdr); r = c.getresponse(); r.read()
        if i >= 50: lat.append(time.perf_counter() - t)
else:  # handshake: new TLS connection per request
    ctx = ssl.create_default_context(cafile=cafile)
    for i in range(n + 10):
        t = time.perf_counter()
        c = http.client.HTTPSConnection(addr, 443, context=ctx)
        c.request("GET", "/echo", headers={"Host": host}); c.getresponse().read(); c.close()
        if i >= 10: lat.append(time.perf_counter() - t)
lat.sort()
print(json.dumps({"p50": lat[len(lat)//2]*1e6, "p99": lat[int(len(lat)*0.99)-1]*1e6}))
"#;

/// One measured scenario: the client arguments for the direct and the egret side.
struct Scenario<'a> {
    key: &'a str,
    name: &'a str,
    direct: Vec<&'a str>,
    egret: Vec<&'a str>,
}

fn run_client(ns: &Netns, args: &[&str]) -> (f64, f64) {
    let mut a = vec!["-c", CLIENT];
    a.extend_from_slice(args);
    let out = ns.run("python3", &a);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client failed ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v["p50"].as_f64().unwrap(), v["p99"].as_f64().unwrap())
}

/// (p50, p99) in milliseconds of `curl`'s own time for admin requests; each one returns after
/// the new generation is in force.
fn swap_latency(sock: &str, topo: &Topology) -> ((f64, f64), (f64, f64)) {
    let curl = |args: &[&str]| -> f64 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_total}",
                "--unix-socket",
                sock,
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut it = text.split_whitespace();
        assert_eq!(it.next(), Some("200"), "admin request failed: {text}");
        it.next().unwrap().parse::<f64>().unwrap() * 1000.0
    };
    let mut params = Vec::new();
    for i in 0..100 {
        let body = format!(
            r#"{{"handler":"inject","params":{{"header":"x-auth-token","secret":"TOKEN","version":{i}}}}}"#
        );
        params.push(curl(&[
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "--data",
            &body,
            "http://egret/v1/outbound",
        ]));
    }
    // New module: the same component with a distinct trailing custom section each time, so the
    // bytes (and hash) differ and egret compiles and pre-instantiates it before the swap.
    let base = std::fs::read(handler_module("inject-header")).unwrap();
    let handler = r#"{"module":"uploaded:bench","params":{"header":"x-auth-token","secret":"TOKEN"},"secrets":["TOKEN"]}"#;
    let file = topo.tmp.path("bench-module.wasm");
    let mut modules = Vec::new();
    for i in 0..30u32 {
        let mut bytes = base.clone();
        let name = b"egret-bench";
        let payload = i.to_le_bytes();
        bytes.push(0); // custom section
        bytes.push((1 + name.len() + payload.len()) as u8);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&payload);
        std::fs::write(&file, &bytes).unwrap();
        let t = curl(&[
            "-X",
            "PUT",
            "-H",
            "content-type: application/wasm",
            "--data-binary",
            &format!("@{}", file.display()),
            "http://egret/v1/modules/bench",
        ]);
        if i == 0 {
            curl(&[
                "-X",
                "PUT",
                "-H",
                "content-type: application/json",
                "--data",
                handler,
                "http://egret/v1/handlers/bench",
            ]);
        } else {
            modules.push(t);
        }
    }
    let pct = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
    };
    (pct(params), pct(modules))
}

fn peak_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// `BENCH_PERF=1`: count egret's instructions and CPU time while the egret side runs (perf
/// stat attached to the process), so changes can be compared on a noisy machine.
struct PerfStat(std::process::Child, std::path::PathBuf);

fn perf_stat(pid: u32) -> Option<PerfStat> {
    std::env::var_os("BENCH_PERF")?;
    let out = std::env::temp_dir().join(format!("egret-bench-perf-{pid}.csv"));
    let child = Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "instructions,task-clock,context-switches",
            "-o",
        ])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(100));
    Some(PerfStat(child, out))
}

impl PerfStat {
    fn report(mut self, name: &str) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
        let text = std::fs::read_to_string(&self.1).unwrap_or_default();
        let _ = std::fs::remove_file(&self.1);
        let field = |ev: &str| {
            text.lines()
                .find(|l| l.contains(ev))
                .and_then(|l| l.split(',').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Instructions read 0 where the machine has no PMU (VMs): CPU time still counts.
        println!(
            "  perf {name}: egret {:.1} ms CPU, {:.0} context switches, {:.0} instructions",
            field("task-clock"),
            field("context-switches"),
            field("instructions")
        );
    }
}

/// Wait for the namespace to be released by the previous instance.
fn wait_detached(topo: &Topology) {
    for _ in 0..100 {
        let t = Command::new("ip")
            .args(["netns", "exec", &topo.sbx.name, "nft", "list", "tables"])
            .output()
            .unwrap();
        if t.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// `BENCH_ONLY=https,startup,...` runs only those parts (http, https, handshake, download,
/// swap, startup); unset runs everything.
fn only(part: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let n: &str = &std::env::var("BENCH_REQUESTS").unwrap_or_else(|_| "2000".into());
    let topo = Topology::new(SandboxNet::LoOnly);
    // A second sandbox, no egret, with a direct veth to the upstream namespace: the baseline.
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

    let pki = upstream_pki(&topo.tmp.0, "bench", &["allowed.test", "10.202.0.2"]);
    let _up = Upstream::start(&topo, "up", Some((&pki.cert, &pki.key)));
    let policy = write(
        &topo,
        "bench.toml",
        &format!(
            r#"
internet = false
allowed_hosts = ["allowed.test"]
[resolve]
"allowed.test" = "10.200.0.2"
[secrets]
TOKEN = {{ env = "BENCH_TOKEN" }}
[handlers.inject]
module = "{}"
params = {{ header = "x-auth-token", secret = "TOKEN" }}
secrets = ["TOKEN"]
[[routes]]
host = "allowed.test:443"
handler = "inject"
"#,
            handler_module("inject-header")
        ),
    );
    std::env::set_var("BENCH_TOKEN", "bench-token-value");
    let ca = topo.tmp.path("ca.pem");
    let ca_s = ca.to_str().unwrap().to_string();

    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    // Start-up with 5 handlers whose compiled artifacts are cached (the issue's target): one
    // start fills the cache, then 10 measured starts.
    let mut startups5 = Vec::new();
    if only("startup5") {
        let mut p5 = String::from("internet = false\n");
        for h in [
            "inject-header",
            "allow-hosts",
            "per-sandbox-token",
            "respond-from-kv",
            "get-only",
        ] {
            p5.push_str(&format!(
                "[handlers.{h}]\nmodule = \"{}\"\n",
                handler_module(h)
            ));
        }
        let p5 = write(&topo, "bench5.toml", &p5);
        let cache = topo.tmp.path("handler-cache");
        let cache = cache.to_str().unwrap();
        for i in 0..11 {
            let t = Instant::now();
            let e = Egret::start(
                &topo,
                "bench5",
                &["--policy", &p5, "--handler-cache-dir", cache],
            )
            .unwrap();
            if i > 0 {
                startups5.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            drop(e);
            wait_detached(&topo);
        }
        println!(
            "start-up to ready, 5 handlers with cached artifacts (median of 10): {:.1} ms",
            median(startups5.clone())
        );
    }
    // Start-up time: exec to ready file, 10 times.
    let mut startups = Vec::new();
    let starts = if only("startup") { 10 } else { 1 };
    for i in 0..starts {
        let t = Instant::now();
        let e = Egret::start(
            &topo,
            "bench",
            &[
                "--policy",
                &policy,
                "--ca-out",
                &ca_s,
                "--upstream-ca",
                pki.ca.to_str().unwrap(),
                "--admin-socket",
                &sock,
            ],
        )
        .unwrap();
        startups.push(t.elapsed().as_secs_f64() * 1000.0);
        if i == starts - 1 {
            std::thread::sleep(Duration::from_millis(300));
            let idle_rss = rss_kib(e.proc.child.id());
            // keep the last one running for the request benchmarks
            let egret = e;
            let mut rows = Vec::new();
            let pki_ca = pki.ca.to_str().unwrap();
            let scen = [
                Scenario {
                    key: "http",
                    name: "HTTP/1.1 keep-alive, 1 conn",
                    direct: vec!["http", "allowed.test", "10.202.0.2", n],
                    egret: vec!["http", "allowed.test", "allowed.test", n],
                },
                Scenario {
                    key: "https",
                    name: "HTTPS keep-alive + inject-header, 1 conn",
                    direct: vec!["https", "allowed.test", "10.202.0.2", n, pki_ca],
                    egret: vec!["https", "allowed.test", "allowed.test", n, &ca_s],
                },
                Scenario {
                    key: "handshake",
                    name: "new TLS connection per request (cached leaf)",
                    direct: vec!["handshake", "allowed.test", "10.202.0.2", "300", pki_ca],
                    egret: vec!["handshake", "allowed.test", "allowed.test", "300", &ca_s],
                },
            ];
            for Scenario {
                key: _,
                name,
                direct: dargs,
                egret: eargs,
            } in scen.iter().filter(|s| only(s.key))
            {
                let (mut d50, mut d99, mut e50, mut e99) = (vec![], vec![], vec![], vec![]);
                for _ in 0..rounds {
                    let (a, b) = run_client(&direct, dargs);
                    d50.push(a);
                    d99.push(b);
                    let perf = perf_stat(egret.proc.child.id());
                    let (a, b) = run_client(&topo.sbx, eargs);
                    if let Some(p) = perf {
                        p.report(name);
                    }
                    e50.push(a);
                    e99.push(b);
                }
                let (d50, d99, e50, e99) = (median(d50), median(d99), median(e50), median(e99));
                println!(
                    "{name:48} direct p50 {d50:8.1} µs p99 {d99:8.1} µs | egret p50 {e50:8.1} µs p99 {e99:8.1} µs | added p50 {:7.1} µs p99 {:7.1} µs",
                    e50 - d50,
                    e99 - d99
                );
                rows.push(serde_json::json!({"scenario": name, "direct_p50_us": d50, "direct_p99_us": d99, "egret_p50_us": e50, "egret_p99_us": e99,
                    "added_p50_us": e50 - d50, "added_p99_us": e99 - d99}));
            }
            // 1 GiB download, direct vs through egret (plain HTTP), speed per round.
            if only("download") {
                let gib = 1u64 << 30;
                let speed = |ns: &Netns, host: &str| -> f64 {
                    let out = ns.run(
                        "curl",
                        &[
                            "-sS",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{speed_download}",
                            "-H",
                            "Host: allowed.test",
                            &format!("http://{host}/bytes/{gib}"),
                        ],
                    );
                    String::from_utf8_lossy(&out.stdout)
                        .trim()
                        .parse::<f64>()
                        .unwrap_or(0.0)
                        / (1 << 20) as f64
                };
                let (mut dspeed, mut espeed) = (vec![], vec![]);
                for _ in 0..rounds.min(3) {
                    dspeed.push(speed(&direct, "10.202.0.2"));
                    espeed.push(speed(&topo.sbx, "allowed.test"));
                }
                let (ds, es) = (median(dspeed), median(espeed));
                let rss_after = peak_kib(egret.proc.child.id());
                println!(
                "1 GiB download: direct {ds:.0} MiB/s, through egret {es:.0} MiB/s (ratio {:.2}); egret peak RSS {rss_after} KiB",
                es / ds
            );
                rows.push(serde_json::json!({"scenario": "1 GiB download", "direct_mib_s": ds, "egret_mib_s": es, "ratio": es / ds, "egret_peak_rss_kib": rss_after}));
            }
            if only("swap") {
                let (params_swap, module_swap) = swap_latency(&sock, &topo);
                println!(
                "swap latency (admin request to new generation in force): params-only p50 {:.2} ms p99 {:.2} ms; new module p50 {:.2} ms p99 {:.2} ms",
                params_swap.0, params_swap.1, module_swap.0, module_swap.1
            );
                rows.push(serde_json::json!({"scenario": "swap latency", "params_p50_ms": params_swap.0, "params_p99_ms": params_swap.1,
                "module_p50_ms": module_swap.0, "module_p99_ms": module_swap.1}));
            }
            let peak = std::fs::read_to_string(format!("/proc/{}/status", egret.proc.child.id()))
                .unwrap_or_default();
            let hwm = peak
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .unwrap_or("")
                .to_string();
            let st = median(startups.clone());
            println!("start-up to ready (median of 10): {st:.1} ms; idle RSS {idle_rss} KiB; after load {hwm}");
            let out = serde_json::json!({"startup_ms_median": st, "startups_ms": startups, "startups5_cached_ms": startups5, "idle_rss_kib": idle_rss, "scenarios": rows});
            let path = std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench-results.json".into());
            std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
            println!("wrote {path}");
            drop(egret);
        } else {
            drop(e);
            wait_detached(&topo);
        }
    }
}

//! `egret-bench`: measures egret against direct access in the same run, interleaved A B A B,
//! in namespaces it builds itself (the e2e harness). Prints a table and writes JSON.
//!
//! Run through `scripts/bench.sh` (release build). Scenarios:
//! * the reference row: Debian's nginx as a TLS-terminating reverse proxy setting the same
//!   header (`bench/nginx.rs`), measured beside egret in every latency and throughput scenario,
//!   with its CPU per request, and the issue-18 targets checked against it,
//! * keep-alive HTTP/1.1 request latency, 1 connection (p50/p99, direct vs egret),
//! * keep-alive HTTPS (intercepted, `inject-header` handler) latency vs direct HTTPS,
//! * TLS handshake + first request on a new connection (cached leaf) vs direct,
//! * load generators from Debian run inside the sandboxes (wrk, h2load): HTTPS + handler
//!   keep-alive at 64 connections, HTTP/2 with 100 streams on one connection, and a new TLS
//!   connection per request — requests/s (handshakes/s) ratios, egret's CPU seconds per 100k
//!   requests (utime+stime from /proc), the upstream's and the client's CPU share,
//! * 1 GiB download throughput, policy swap latency,
//! * handler capabilities against a head-only handler (`bench/handlers.rs`),
//! * many sidecars on one host: memory, idle CPU, start-up with N−1 running
//!   (`bench/density.rs`),
//! * start-up time to the ready file (median of 10), also with 5 handlers from the artifact
//!   cache, idle and peak RSS.
mod density;
mod handlers;
mod nginx;
mod run_info;

use egret_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = r#"
import http.client, ssl, sys, time, json
mode, host, addr, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cafile = sys.argv[5] if len(sys.argv) > 5 else None
path = sys.argv[6] if len(sys.argv) > 6 else "/echo"
body = open(sys.argv[7], "rb").read() if len(sys.argv) > 7 else None
method = "POST" if body is not None else "GET"
lat = []
if mode in ("http", "https"):
    if mode == "http":
        c = http.client.HTTPConnection(addr, 80)
    else:
        ctx = ssl.create_default_context(cafile=cafile)
        c = http.client.HTTPSConnection(addr, 443, context=ctx)
        c._tunnel_host = None
    hdr = {"Host": host}
    if body is not None: hdr["Content-Type"] = "application/json"
    for i in range(n + 50):
        t = time.perf_counter(); c.request(method, path, body=body, headers=hdr); r = c.getresponse(); b = r.read()
        if i >= 50: lat.append(time.perf_counter() - t)
        # A refused request is a cheaper path: it must not pass for a fast one.
        if r.status != 200: sys.exit(f"{method} {host}{path}: {r.status} {b[:300]!r}")
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

/// One measured scenario: the client arguments for the direct, the nginx and the egret side.
struct Scenario<'a> {
    name: &'a str,
    direct: Vec<&'a str>,
    nginx: Vec<&'a str>,
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
        let out = admin_curl(sock)
            .args(["-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
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

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `BENCH_ONLY=latency,load,download,swap,handlers,density,startup5` runs only those parts (start-up with one
/// handler and idle RSS are always measured: the later parts reuse that egret); unset runs all.
fn only(part: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds of the children this process has waited for (the load generator just run).
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// MiB/s of a plain-HTTP download of `bytes` from `addr` (with `Host: host`) in `ns`; anything
/// but a 200 fails the bench (a refused download must not pass for a fast one).
fn download_speed(ns: &Netns, host: &str, addr: &str, bytes: u64) -> f64 {
    curl_speed(
        ns,
        &[
            "-H",
            &format!("Host: {host}"),
            &format!("http://{addr}/bytes/{bytes}"),
        ],
    )
}

/// MiB/s of `curl ARGS` in `ns`, the body thrown away; anything but a 200 fails the bench.
fn curl_speed(ns: &Netns, args: &[&str]) -> f64 {
    let mut all = vec![
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{speed_download}",
    ];
    all.extend_from_slice(args);
    let out = ns.run("curl", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, speed) = text.trim().split_once(' ').unwrap_or(("", ""));
    assert_eq!(
        code,
        "200",
        "curl {args:?} failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    speed.parse::<f64>().unwrap() / (1 << 20) as f64
}

/// What one load-generator run measured.
struct Load {
    /// Completed requests (connections, for the handshake scenario: one request each).
    requests: f64,
    per_sec: f64,
    /// Non-2xx responses plus socket errors: reported, and fatal only above 1% of requests.
    errors: f64,
    /// Latency under load, µs (wrk only; h2load's per-request figures are not comparable).
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

fn wrk_duration_us(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Run a load generator in `ns` and parse its summary. Error responses and socket errors are
/// counted; more than 1% of requests fails the run, so a broken path never passes for a slow
/// one (a rare error under overload is reported instead).
fn run_load(ns: &Netns, program: &str, args: &[&str]) -> Load {
    let out = ns.run(program, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fail = || -> ! {
        panic!(
            "{program} {} failed ({}):\n{text}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    };
    if !out.status.success() {
        fail();
    }
    let after = |key: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(key))
            .map(str::trim)
    };
    if program == "wrk" {
        let non2xx: f64 = after("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        // Socket errors: connect 0, read 0, write 0, timeout 0
        let socket: f64 = after("Socket errors:").map_or(0.0, |v| {
            v.split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum()
        });
        let requests: f64 = text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| fail());
        let per_sec = after("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail());
        if non2xx + socket > requests / 100.0 {
            fail();
        }
        Load {
            requests,
            per_sec,
            errors: non2xx + socket,
            p50_us: after("50%").and_then(wrk_duration_us),
            p99_us: after("99%").and_then(wrk_duration_us),
        }
    } else {
        // finished in 5.00s, 12345.60 req/s, 1.23MB/s
        // requests: 61728 total, 61828 started, 61728 done, 61728 succeeded, 0 failed, ...
        // status codes: 61728 2xx, 0 3xx, 0 4xx, 0 5xx
        let per_sec = after("finished in")
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim().strip_suffix(" req/s"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail());
        let counts = after("requests:").unwrap_or_else(|| fail());
        let count = |what: &str| -> f64 {
            counts
                .split(',')
                .find_map(|c| c.trim().strip_suffix(what))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| fail())
        };
        let codes = after("status codes:").unwrap_or_else(|| fail());
        // The scenario is HTTP/2: a fallback to HTTP/1.1 would measure something else.
        let requests = count("succeeded");
        let bad_status: f64 = codes
            .split(',')
            .filter(|c| c.contains("4xx") || c.contains("5xx"))
            .filter_map(|c| c.split_whitespace().next()?.parse::<f64>().ok())
            .sum();
        let errors = count("failed") + count("errored") + bad_status;
        if errors > requests / 100.0 || !text.contains("Application protocol: h2") {
            fail();
        }
        Load {
            requests,
            per_sec,
            errors,
            p50_us: None,
            p99_us: None,
        }
    }
}

/// A throughput scenario: the same load generator and arguments on both sides.
struct LoadScenario {
    name: &'static str,
    unit: &'static str,
    program: &'static str,
    args: Vec<String>,
}

fn median_opt(v: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = v.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| median(v))
}

/// The name whose TLS egret splices untouched (`passthrough_hosts`): the passthrough download.
const PASS_HOST: &str = "pass.test";

/// The bench policy: allowed.test, with `inject-header` on its HTTPS port putting the token
/// from `BENCH_TOKEN` in `x-auth-token`; `BENCH_INSTANCES=reuse` makes that binding reuse
/// its instances (`instances = "reuse"`), for an A/B against the default.
fn bench_policy() -> String {
    let mut handler =
        inject_header_policy("TOKEN", r#"env = "BENCH_TOKEN""#, &["allowed.test:443"]);
    match std::env::var("BENCH_INSTANCES").as_deref() {
        Ok("reuse") => {
            handler = handler.replacen(
                "[handlers.inject]\n",
                "[handlers.inject]\ninstances = \"reuse\"\n",
                1,
            )
        }
        Ok("fresh") | Err(_) => {}
        Ok(other) => panic!("BENCH_INSTANCES={other}: use fresh or reuse"),
    }
    format!(
        r#"
internet = false
allowed_hosts = ["allowed.test", "{PASS_HOST}"]
passthrough_hosts = ["{PASS_HOST}"]
[resolve]
"allowed.test" = "10.200.0.2"
"{PASS_HOST}" = "10.200.0.2"
{handler}"#
    )
}

/// The five-handler policy of the start-up target: the bench policy plus four more handlers,
/// each a different module, so five artifacts come from the cache.
fn five_handler_policy(topo: &Topology) -> String {
    write(
        topo,
        "bench5.toml",
        &format!(
            r#"{}
[handlers.per-sandbox]
module = "{pst}"
secrets = ["TOKEN"]
[handlers.allow-hosts]
module = "{allow}"
[handlers.no-http]
module = "{nohttp}"
[handlers.get-only]
module = "{getonly}"
"#,
            bench_policy(),
            pst = handler_module("per-sandbox-token"),
            allow = handler_module("allow-hosts"),
            nohttp = handler_module("no-http"),
            getonly = handler_module("get-only"),
        ),
    )
}

/// Wait until the previous egret has released the sandbox (its nftables table is gone).
fn wait_released(topo: &Topology) {
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

/// The secret the bench's handlers inject (and nginx sets).
const TOKEN: &str = "bench-token-value";

/// The final table: scenario, direct (or baseline), nginx (reference rows only), egret,
/// comparison.
pub struct Table(Vec<[String; 5]>);

impl Table {
    /// A row without an nginx figure: scenario, direct (or baseline), egret, comparison.
    pub fn push(&mut self, [scenario, direct, egret, cmp]: [String; 4]) {
        self.0.push([scenario, direct, "—".into(), egret, cmp]);
    }
}

/// The targets checked in this run: issue 18's against nginx, issue 28's start to intercepting.
#[derive(Default)]
struct Targets {
    /// Added p50 of HTTPS keep-alive (µs): egret, nginx.
    https_added_p50: Option<(f64, f64)>,
    /// CPU µs per HTTPS request at 64 connections: egret, nginx; requests/s: egret, nginx.
    https_load: Option<(f64, f64, f64, f64)>,
    /// CPU µs per HTTP request at 64 connections: egret, nginx.
    http_cpu: Option<(f64, f64)>,
    /// CPU µs per new TLS connection (handshake + one request): egret, nginx.
    handshake_cpu: Option<(f64, f64)>,
    /// Start to intercepting p50 (ms) of restarts with N−1 sidecars running, and N.
    start_p50: Option<(f64, usize)>,
    /// Download throughput through egret / direct: plain HTTP, TLS passthrough.
    download_plain: Option<f64>,
    download_passthrough: Option<f64>,
}

impl Targets {
    fn lines(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (what, ratio) in [
            ("plain HTTP", self.download_plain),
            ("TLS passthrough", self.download_passthrough),
        ] {
            if let Some(r) = ratio {
                out.push((
                    format!("download, {what}: {r:.2} of direct ≥ 0.9"),
                    r >= 0.9,
                ));
            }
        }
        if let Some((ms, n)) = self.start_p50 {
            out.push((
                format!("start to intercepting p50 {ms:.1} ms < 20 ms (restarts with {} sidecars running, handler cache warm)", n - 1),
                ms < 20.0,
            ));
        }
        if let Some((e, n, _, _)) = self.https_load {
            out.push((
                format!("CPU per HTTPS request (inject-header, audit on) {e:.1} µs ≤ 1.5 × nginx {n:.1} µs = {:.1} µs (ratio {:.2})", 1.5 * n, e / n),
                e <= 1.5 * n,
            ));
        }
        if let Some((e, n)) = self.http_cpu {
            out.push((
                format!(
                    "CPU per HTTP request {e:.1} µs ≤ 2 × nginx {n:.1} µs = {:.1} µs (ratio {:.2})",
                    2.0 * n,
                    e / n
                ),
                e <= 2.0 * n,
            ));
        }
        if let Some((e, n)) = self.handshake_cpu {
            out.push((
                format!(
                    "CPU per new TLS connection (handshake + 1 request) {e:.1} µs ≤ 1.5 × nginx {n:.1} µs = {:.1} µs (ratio {:.2})",
                    1.5 * n,
                    e / n
                ),
                e <= 1.5 * n,
            ));
        }
        if let Some((e, n)) = self.https_added_p50 {
            out.push((
                format!(
                    "HTTPS added p50 {e:.0} µs ≤ nginx {n:.0} µs + 40 µs = {:.0} µs",
                    n + 40.0
                ),
                e <= n + 40.0,
            ));
        }
        if let Some((_, _, e, n)) = self.https_load {
            out.push((
                format!("64-connection HTTPS keep-alive throughput {e:.0} req/s ≥ 0.8 × nginx {n:.0} req/s = {:.0} (ratio {:.2})", 0.8 * n, e / n),
                e >= 0.8 * n,
            ));
        }
        out
    }
}

fn main() {
    let rounds: usize = env_or("BENCH_ROUNDS", 4);
    let n: &str = &std::env::var("BENCH_REQUESTS").unwrap_or_else(|_| "2000".into());
    let load_secs: u32 = env_or("BENCH_LOAD_SECS", 5);
    let conns: u32 = env_or("BENCH_CONNS", 64);
    let streams: u32 = env_or("BENCH_STREAMS", 100);
    let hs_conns: u32 = env_or("BENCH_HANDSHAKE_CONNS", 16);
    let download: u64 = env_or("BENCH_DOWNLOAD_BYTES", 1u64 << 30);
    for tool in ["wrk", "h2load"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "{tool} is missing: apt-get install -y wrk nghttp2-client (scripts/bench.sh does)"
        );
    }
    let topo = Topology::new(SandboxNet::LoOnly);
    // A second sandbox, no egret, with a direct veth to the upstream namespace: the baseline.
    let direct = topo.direct_baseline(&[]);
    // The direct sandbox resolves the upstream's name like the egret sandbox does, so wrk and
    // h2load send the same SNI and Host on both sides.
    let _hosts = NetnsHosts::write(&direct, "127.0.0.1 localhost\n10.202.0.2 allowed.test\n");

    let mut names = vec!["allowed.test", "10.202.0.2", PASS_HOST];
    names.extend_from_slice(handlers::NAMES);
    names.extend_from_slice(&handlers::LANG_HOSTS);
    let pki = upstream_pki(&topo.tmp.0, "bench", &names);
    let mut up_args = vec![
        "--http",
        "[::]:80",
        "--https",
        "[::]:443",
        "--banner",
        "[::]:2222",
    ];
    up_args.extend(["--cert", pki.cert.to_str().unwrap()]);
    up_args.extend(["--key", pki.key.to_str().unwrap()]);
    up_args.extend(handlers::upstream_flags());
    let up = Upstream::start_with(&topo, "up", &up_args);
    let up_pid = up.proc.child.id();
    let policy = write(&topo, "bench.toml", &bench_policy());
    std::env::set_var("BENCH_TOKEN", TOKEN);
    // The reference: nginx in a namespace of its own with its own veth to the same upstream,
    // where `allowed.test` is nginx on loopback (as it is egret for the sandbox).
    let ngx = topo.side_namespace("ngx", 203, &[]);
    let _ngx_hosts = NetnsHosts::write(&ngx, "127.0.0.1 localhost allowed.test\n");
    let nginx = nginx::Nginx::start(&ngx, &topo.tmp.0, "10.203.0.2", &pki, TOKEN);
    let ca = topo.tmp.path("ca.pem");
    let ca_s = ca.to_str().unwrap().to_string();
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let egret_args = |policy: &str| -> Vec<String> {
        [
            "--policy",
            policy,
            "--ca-out",
            &ca_s,
            "--upstream-ca",
            pki.ca.to_str().unwrap(),
            "--admin-socket",
            &sock,
        ]
        .map(String::from)
        .into_iter()
        // Extra egret flags for A/B runs of one binary (e.g. `BENCH_EGRET_ARGS="--workers 2"`).
        .chain(
            std::env::var("BENCH_EGRET_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from),
        )
        .collect()
    };
    let strs = |v: &[String]| -> Vec<String> { v.to_vec() };
    let start_egret = |args: &[String]| -> Egret {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Egret::start(&topo, "bench", &a).unwrap()
    };

    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut table = Table(Vec::new());
    let mut targets = Targets::default();

    // Start-up time: exec to ready file, 10 times; the last one stays up for the load.
    let mut startups = Vec::new();
    let mut egret = None;
    for i in 0..10 {
        let t = Instant::now();
        let e = start_egret(&strs(&egret_args(&policy)));
        startups.push(t.elapsed().as_secs_f64() * 1000.0);
        if i == 9 {
            egret = Some(e);
        } else {
            drop(e);
            wait_released(&topo);
        }
    }
    let egret = egret.unwrap();
    let egret_pid = egret.proc.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = proc_status_kib(egret_pid, "VmRSS");
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For profiling by hand: the set-up stays up until stdin closes, then the bench ends.
        println!(
            "BENCH_HOLD: egret pid {egret_pid}, upstream pid {up_pid}, nginx pids {:?}\n\
             sandbox:  ip netns exec {} curl --cacert {ca_s} https://allowed.test/echo\n\
             direct:   ip netns exec {} curl --cacert {} https://allowed.test/echo\n\
             nginx:    ip netns exec {} curl --cacert {} https://allowed.test/echo\n\
             close stdin to end",
            nginx.pids(),
            topo.sbx.name,
            direct.name,
            pki.ca.display(),
            ngx.name,
            pki.ca.display()
        );
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        return;
    }

    // Latency, one connection at a time (python client; its own cost is the same on both sides).
    let pki_ca = pki.ca.to_str().unwrap();
    let scen = [
        Scenario {
            name: "HTTP/1.1 keep-alive, 1 conn",
            direct: vec!["http", "allowed.test", "10.202.0.2", n],
            nginx: vec!["http", "allowed.test", "allowed.test", n],
            egret: vec!["http", "allowed.test", "allowed.test", n],
        },
        Scenario {
            name: "HTTPS keep-alive + inject-header, 1 conn",
            direct: vec!["https", "allowed.test", "10.202.0.2", n, pki_ca],
            nginx: vec!["https", "allowed.test", "allowed.test", n, pki_ca],
            egret: vec!["https", "allowed.test", "allowed.test", n, &ca_s],
        },
        Scenario {
            name: "new TLS connection per request (cached leaf)",
            direct: vec!["handshake", "allowed.test", "10.202.0.2", "300", pki_ca],
            nginx: vec!["handshake", "allowed.test", "allowed.test", "300", pki_ca],
            egret: vec!["handshake", "allowed.test", "allowed.test", "300", &ca_s],
        },
    ];
    for (i, sc) in scen.iter().enumerate().filter(|_| only("latency")) {
        let name = sc.name;
        let (mut d50, mut d99, mut n50, mut n99, mut e50, mut e99) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (a, b) = run_client(&direct, &sc.direct);
            d50.push(a);
            d99.push(b);
            let (a, b) = run_client(&ngx, &sc.nginx);
            n50.push(a);
            n99.push(b);
            let (a, b) = run_client(&topo.sbx, &sc.egret);
            e50.push(a);
            e99.push(b);
        }
        let (d50, d99, n50, n99, e50, e99) = (
            median(d50),
            median(d99),
            median(n50),
            median(n99),
            median(e50),
            median(e99),
        );
        println!(
            "{name:48} direct p50 {d50:8.1} µs p99 {d99:8.1} µs | nginx p50 {n50:8.1} µs p99 {n99:8.1} µs | egret p50 {e50:8.1} µs p99 {e99:8.1} µs | added p50 {:7.1} µs p99 {:7.1} µs (nginx added p50 {:7.1} µs p99 {:7.1} µs)",
            e50 - d50,
            e99 - d99,
            n50 - d50,
            n99 - d99,
        );
        table.0.push([
            format!("{name} — latency"),
            format!("p50 {d50:.0} µs / p99 {d99:.0} µs"),
            format!("p50 {n50:.0} µs / p99 {n99:.0} µs"),
            format!("p50 {e50:.0} µs / p99 {e99:.0} µs"),
            format!(
                "added p50 {:.0} µs / p99 {:.0} µs (nginx: {:.0} / {:.0} µs)",
                e50 - d50,
                e99 - d99,
                n50 - d50,
                n99 - d99
            ),
        ]);
        if i == 1 {
            targets.https_added_p50 = Some((e50 - d50, n50 - d50));
        }
        rows.push(serde_json::json!({"scenario": name, "direct_p50_us": d50, "direct_p99_us": d99, "egret_p50_us": e50, "egret_p99_us": e99,
            "added_p50_us": e50 - d50, "added_p99_us": e99 - d99,
            "nginx_p50_us": n50, "nginx_p99_us": n99, "nginx_added_p50_us": n50 - d50, "nginx_added_p99_us": n99 - d99}));
    }

    // Throughput with the Debian load generators, same URL (so same SNI and Host) on both sides.
    let url = "https://allowed.test/echo".to_string();
    // The egret side must really run the handler: the upstream echoes the injected header.
    let (_, echo, err) = topo.curl(&["--cacert", &ca_s, &url]);
    assert!(
        echo.contains("\"x-auth-token\""),
        "the request through egret did not carry the injected header: {echo} {err}"
    );
    let (_, echo, err) = code_out_err(&ngx.run("curl", &["-sS", "--cacert", pki_ca, &url]));
    assert!(
        echo.contains(&format!("\"{TOKEN}\"")),
        "the request through nginx did not carry the header: {echo} {err}"
    );
    let secs = load_secs.to_string();
    // `wrk -t2 -c<conns> -d<secs>s --latency [extra...] <url>`.
    let wrk = |conns: u32, extra: &[&str], url: &str| -> Vec<String> {
        [
            "-t2".into(),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            "--latency".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .chain([url.to_string()])
        .collect()
    };
    let loads = [
        LoadScenario {
            name: "HTTP/1.1 keep-alive, wrk 64 conns",
            unit: "req/s",
            program: "wrk",
            args: wrk(conns, &[], "http://allowed.test/echo"),
        },
        LoadScenario {
            name: "HTTPS keep-alive + inject-header, wrk 64 conns",
            unit: "req/s",
            program: "wrk",
            args: wrk(conns, &[], &url),
        },
        LoadScenario {
            name: "HTTP/2 over TLS, h2load 1 conn x 100 streams",
            unit: "req/s",
            program: "h2load",
            args: vec![
                "-t1".into(),
                "-c1".into(),
                format!("-m{streams}"),
                format!("-D{secs}"),
                "--warm-up-time=1".into(),
                url.clone(),
            ],
        },
        LoadScenario {
            name: "new TLS connection per request, wrk Connection: close",
            unit: "handshakes/s",
            program: "wrk",
            args: wrk(hs_conns, &["-H", "Connection: close"], &url),
        },
    ];
    for (i, sc) in loads.iter().enumerate().filter(|_| only("load")) {
        let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
        let (mut d, mut e, mut g) = (vec![], vec![], vec![]);
        let (mut dl50, mut dl99, mut el50, mut el99) = (vec![], vec![], vec![], vec![]);
        let (mut egret_cpu, mut egret_reqs) = (0.0, 0.0);
        let (mut nginx_cpu, mut nginx_reqs) = (0.0, 0.0);
        let (mut derr, mut eerr, mut nerr) = (0.0, 0.0, 0.0);
        let (mut up_share, mut client_share) = (vec![], vec![]);
        for _ in 0..rounds {
            let (u0, c0, t0) = (proc_cpu_secs(up_pid), children_cpu_secs(), Instant::now());
            let r = run_load(&direct, sc.program, &args);
            let wall = t0.elapsed().as_secs_f64();
            up_share.push((proc_cpu_secs(up_pid) - u0) / wall);
            client_share.push((children_cpu_secs() - c0) / wall);
            d.push(r.per_sec);
            derr += r.errors;
            dl50.push(r.p50_us);
            dl99.push(r.p99_us);
            let cpu0 = nginx.cpu_secs();
            let r = run_load(&ngx, sc.program, &args);
            nginx_cpu += nginx.cpu_secs() - cpu0;
            nginx_reqs += r.requests;
            nerr += r.errors;
            g.push(r.per_sec);
            let cpu0 = proc_cpu_secs(egret_pid);
            let r = run_load(&topo.sbx, sc.program, &args);
            egret_cpu += proc_cpu_secs(egret_pid) - cpu0;
            egret_reqs += r.requests;
            eerr += r.errors;
            e.push(r.per_sec);
            el50.push(r.p50_us);
            el99.push(r.p99_us);
        }
        let (dm, em, gm) = (median(d.clone()), median(e.clone()), median(g.clone()));
        let cpu_100k = egret_cpu / egret_reqs * 100_000.0;
        // CPU per request in µs, the unit of the issue-18 targets.
        let (e_us, n_us) = (egret_cpu / egret_reqs * 1e6, nginx_cpu / nginx_reqs * 1e6);
        match i {
            0 => targets.http_cpu = Some((e_us, n_us)),
            1 => targets.https_load = Some((e_us, n_us, em, gm)),
            3 => targets.handshake_cpu = Some((e_us, n_us)),
            _ => {}
        }
        let (ups, cls) = (median(up_share), median(client_share));
        let lat = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!(" (p50 {:.2} ms / p99 {:.2} ms)", a / 1e3, b / 1e3),
            _ => String::new(),
        };
        let (dl50, dl99, el50, el99) = (
            median_opt(&dl50),
            median_opt(&dl99),
            median_opt(&el50),
            median_opt(&el99),
        );
        println!(
            "{:54} direct {dm:9.0} {u}{} | nginx {gm:9.0} {u} | egret {em:9.0} {u}{} | ratio {:.2} (to nginx {:.2}) | CPU µs/req egret {e_us:.1}, nginx {n_us:.1} ({:.2}×) | direct run: upstream {:.0}% CPU, client {:.0}% CPU | error responses: direct {derr}, nginx {nerr}, egret {eerr}",
            sc.name,
            lat(dl50, dl99),
            lat(el50, el99),
            em / dm,
            em / gm,
            e_us / n_us,
            ups * 100.0,
            cls * 100.0,
            u = sc.unit,
        );
        table.0.push([
            sc.name.to_string(),
            format!("{dm:.0} {}{}", sc.unit, lat(dl50, dl99)),
            format!("{gm:.0} {}; CPU {n_us:.1} µs/req", sc.unit),
            format!(
                "{em:.0} {}{}; CPU {e_us:.1} µs/req",
                sc.unit,
                lat(el50, el99)
            ),
            format!(
                "ratio {:.2}, to nginx {:.2}; CPU {:.2}× nginx's; errors {derr} / {nerr} / {eerr}",
                em / dm,
                em / gm,
                e_us / n_us
            ),
        ]);
        rows.push(serde_json::json!({"scenario": sc.name, "tool": sc.program, "args": sc.args, "unit": sc.unit,
            "direct_per_s": dm, "egret_per_s": em, "ratio": em / dm, "direct_rounds": d, "egret_rounds": e,
            "nginx_per_s": gm, "nginx_rounds": g, "ratio_to_nginx": em / gm, "nginx_errors": nerr,
            "egret_cpu_us_per_req": e_us, "nginx_cpu_us_per_req": n_us, "cpu_ratio_to_nginx": e_us / n_us,
            "direct_p50_us": dl50, "direct_p99_us": dl99, "egret_p50_us": el50, "egret_p99_us": el99,
            "egret_cpu_s_per_100k": cpu_100k, "direct_errors": derr, "egret_errors": eerr, "direct_upstream_cpu_share": ups, "direct_client_cpu_share": cls}));
    }

    // What egret complained about under load (the cause of any error responses above).
    let mut complaints: Vec<String> = egret
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(|l| l.chars().take(300).collect())
        .collect();
    complaints.dedup();
    if !complaints.is_empty() {
        println!(
            "egret warnings/errors during the load ({} lines), first ones:",
            complaints.len()
        );
        for l in complaints.iter().take(5) {
            println!("  {l}");
        }
    }

    if only("download") {
        // Download, direct vs through egret (plain HTTP), speed per round.
        let (mut dspeed, mut espeed) = (vec![], vec![]);
        for _ in 0..rounds.min(3) {
            dspeed.push(download_speed(
                &direct,
                "allowed.test",
                "10.202.0.2",
                download,
            ));
            espeed.push(download_speed(
                &topo.sbx,
                "allowed.test",
                "allowed.test",
                download,
            ));
        }
        let (ds, es) = (median(dspeed), median(espeed));
        let mib = download >> 20;
        println!(
            "{mib} MiB download: direct {ds:.0} MiB/s, through egret {es:.0} MiB/s (ratio {:.2})",
            es / ds
        );
        table.push([
            format!("{mib} MiB download, plain HTTP (curl)"),
            format!("{ds:.0} MiB/s"),
            format!("{es:.0} MiB/s"),
            format!("ratio {:.2}", es / ds),
        ]);
        rows.push(serde_json::json!({"scenario": format!("{mib} MiB download"), "direct_mib_s": ds, "egret_mib_s": es, "ratio": es / ds}));
        targets.download_plain = Some(es / ds);

        // The same over TLS that egret passes through untouched (spliced, nothing inspected).
        let pass_url = format!("https://{PASS_HOST}/bytes/{download}");
        let pin = format!("{PASS_HOST}:443:10.202.0.2");
        let ca = pki.ca.to_str().unwrap();
        let (mut dspeed, mut espeed, mut cpu) = (vec![], vec![], vec![]);
        for _ in 0..rounds.min(3) {
            dspeed.push(curl_speed(
                &direct,
                &["--cacert", ca, "--resolve", &pin, &pass_url],
            ));
            let cpu0 = proc_cpu_secs(egret_pid);
            espeed.push(curl_speed(&topo.sbx, &["--cacert", ca, &pass_url]));
            // The client decrypts, so its CPU bounds the throughput of both sides; what egret
            // spends moving the bytes is its own CPU time.
            cpu.push((proc_cpu_secs(egret_pid) - cpu0) * (1u64 << 30) as f64 / download as f64);
        }
        let (ds, es, cpu) = (median(dspeed), median(espeed), median(cpu));
        println!(
            "{mib} MiB download, TLS passthrough: direct {ds:.0} MiB/s, through egret {es:.0} MiB/s (ratio {:.2}); egret CPU {cpu:.3} s per GiB",
            es / ds
        );
        table.push([
            format!("{mib} MiB download, TLS passthrough (curl)"),
            format!("{ds:.0} MiB/s"),
            format!("{es:.0} MiB/s"),
            format!("ratio {:.2}; egret CPU {cpu:.3} s/GiB", es / ds),
        ]);
        rows.push(serde_json::json!({"scenario": format!("{mib} MiB download, TLS passthrough"), "direct_mib_s": ds, "egret_mib_s": es, "ratio": es / ds, "egret_cpu_s_per_gib": cpu}));
        targets.download_passthrough = Some(es / ds);
    }
    if only("swap") {
        let (params_swap, module_swap) = swap_latency(&sock, &topo);
        println!(
        "swap latency (admin request to new generation in force): params-only p50 {:.2} ms p99 {:.2} ms; new module p50 {:.2} ms p99 {:.2} ms",
        params_swap.0, params_swap.1, module_swap.0, module_swap.1
    );
        table.push([
            "policy swap, params only / new module (p50, p99)".into(),
            "—".into(),
            format!(
                "{:.2} / {:.2} ms; {:.1} / {:.1} ms",
                params_swap.0, params_swap.1, module_swap.0, module_swap.1
            ),
            String::new(),
        ]);
        rows.push(serde_json::json!({"scenario": "swap latency", "params_p50_ms": params_swap.0, "params_p99_ms": params_swap.1,
        "module_p50_ms": module_swap.0, "module_p99_ms": module_swap.1}));
    }
    let peak = proc_status_kib(egret_pid, "VmHWM");
    let nginx_peak = nginx.peak_rss_kib();
    drop(nginx);
    drop(egret);
    wait_released(&topo);

    if only("handlers") {
        let setup = handlers::Setup {
            topo: &topo,
            upstream: &up,
            upstream_ca: &pki.ca,
            rounds,
            requests: n,
            download,
        };
        handlers::run(&setup, &mut table, &mut rows);
        handlers::run_languages(&setup, &mut table, &mut rows);
    }

    if only("density") {
        let setup = density::Setup {
            topo: &topo,
            upstream_ca: &pki.ca,
            policy: &policy,
        };
        targets.start_p50 = density::run(&setup, &mut table, &mut rows);
    }

    // Start-up with five handlers whose artifacts are cached: one start fills the cache.
    let cache = topo.tmp.path("handler-cache");
    let mut args5 = egret_args(&five_handler_policy(&topo));
    args5.extend(["--handler-cache-dir".into(), cache.to_string_lossy().into()]);
    let mut cached = Vec::new();
    let mut uncached = 0.0;
    let mut cached_rss = 0;
    for i in 0..if only("startup5") { 11 } else { 0 } {
        let t = Instant::now();
        let e = start_egret(&args5);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i == 0 {
            uncached = ms;
        } else {
            cached.push(ms);
            cached_rss = proc_status_kib(e.proc.child.id(), "VmRSS");
        }
        drop(e);
        wait_released(&topo);
    }
    let st = median(startups.clone());
    // Without the startup5 part (BENCH_ONLY) only the one-handler start-up was measured.
    let st5 = (!cached.is_empty()).then(|| median(cached.clone()));
    match st5 {
        Some(st5) => {
            println!("start-up to ready (median of 10), 1 handler compiled at start: {st:.1} ms; 5 handlers from the artifact cache: {st5:.1} ms (filling the cache: {uncached:.0} ms)");
            println!("idle RSS {idle_rss} KiB; peak RSS (VmHWM) after the load {peak} KiB; RSS at ready with 5 cached handlers {cached_rss} KiB");
            table.push([
                "start-up to ready, 1 handler / 5 cached handlers".into(),
                "—".into(),
                format!("{st:.1} ms / {st5:.1} ms"),
                format!("filling the cache {uncached:.0} ms"),
            ]);
        }
        None => {
            println!("start-up to ready (median of 10), 1 handler compiled at start: {st:.1} ms");
            println!("idle RSS {idle_rss} KiB; peak RSS (VmHWM) after the load {peak} KiB");
            table.push([
                "start-up to ready, 1 handler compiled at start".into(),
                "—".into(),
                format!("{st:.1} ms"),
                String::new(),
            ]);
        }
    }
    table.0.push([
        "egret idle RSS / peak RSS (VmHWM); nginx: VmHWM summed over master + workers".into(),
        "—".into(),
        format!("peak {:.1} MiB", nginx_peak as f64 / 1024.0),
        format!(
            "{:.1} MiB / {:.1} MiB",
            idle_rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        String::new(),
    ]);

    println!();
    // Handler rows compare two egret paths: A is the baseline handler (or build), B the other.
    println!(
        "| scenario | A: direct (or baseline) | nginx (reference) | B: through egret | comparison |"
    );
    println!("|---|---|---|---|---|");
    for [a, b, c, d, e] in &table.0 {
        println!("| {a} | {b} | {c} | {d} | {e} |");
    }
    let target_lines = targets.lines();
    if !target_lines.is_empty() {
        println!("\ntargets in this run (issue 18 against nginx, issue 28):");
        for (line, met) in &target_lines {
            println!("  [{}] {line}", if *met { "met" } else { "NOT met" });
        }
    }
    let out = serde_json::json!({
        "run": run_info::run_info(),
        "rounds": rounds, "load_secs": load_secs,
        "startup_ms_median": st, "startups_ms": startups,
        "startup_5_cached_ms_median": st5, "startups_5_cached_ms": cached, "startup_5_uncached_ms": uncached,
        "idle_rss_kib": idle_rss, "peak_rss_kib": peak, "rss_at_ready_5_cached_kib": cached_rss,
        "nginx_peak_rss_kib": nginx_peak,
        "targets": target_lines.iter().map(|(l, met)| serde_json::json!({"target": l, "met": met})).collect::<Vec<_>>(),
        "scenarios": rows});
    let path = std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench-results.json".into());
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("wrote {path}");
    drop(up);
}

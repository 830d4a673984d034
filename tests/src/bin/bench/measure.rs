//! The measuring tools every scenario shares: the latency client, the load generators'
//! parsers, download speed, CPU accounting, medians.
use egret_e2e::*;
use std::process::Command;
use std::time::Duration;

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

pub(crate) fn run_client(ns: &Netns, args: &[&str]) -> (f64, f64) {
    let mut a = vec!["-c", CLIENT];
    a.extend_from_slice(args);
    let out = ns.run("python3", &a);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client {args:?} failed ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v["p50"].as_f64().unwrap(), v["p99"].as_f64().unwrap())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub(crate) fn median_opt(v: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = v.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| median(v))
}

/// CPU seconds of the children this process has waited for (the load generator just run).
pub(crate) fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// MiB/s of a plain-HTTP download of `bytes` from `addr` (with `Host: host`) in `ns`; anything
/// but a 200 fails the bench (a refused download must not pass for a fast one).
pub(crate) fn download_speed(ns: &Netns, host: &str, addr: &str, bytes: u64) -> f64 {
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
pub(crate) fn curl_speed(ns: &Netns, args: &[&str]) -> f64 {
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
pub(crate) struct Load {
    /// Completed requests (connections, for the handshake scenario: one request each).
    pub(crate) requests: f64,
    pub(crate) per_sec: f64,
    /// Non-2xx responses plus socket errors: reported, and fatal only above 1% of requests.
    pub(crate) errors: f64,
    /// Latency under load, µs (wrk only; h2load's per-request figures are not comparable).
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
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
pub(crate) fn run_load(ns: &Netns, program: &str, args: &[&str]) -> Load {
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

/// Wait until the previous egret has released the sandbox (its nftables table is gone).
pub(crate) fn wait_released(topo: &Topology) {
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

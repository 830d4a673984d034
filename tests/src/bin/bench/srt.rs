//! `BENCH_ONLY=srt`: `egret exec` beside Anthropic's sandbox-runtime (`srt`, npm
//! `@anthropic-ai/sandbox-runtime`), both run by the same ordinary user (`egret-test`, made by
//! scripts/setup.sh) in the egret namespace of the bench's topology, so both dial the same
//! upstream over the same veth:
//! * start-up: `egret exec --allow NAME -- true`, with a policy whose handler comes from a
//!   warm artifact cache, and `srt -c true` (median of [`STARTS`] each, interleaved);
//! * the added latency of a request on a new connection each, HTTP and HTTPS: Python
//!   `urllib` GETs ([`REQUESTS`] sequential, `BENCH_SRT_REQUESTS`) direct, inside `egret exec`
//!   and inside `srt` (and for HTTPS inside `egret exec` with the host in `passthrough_hosts`),
//!   interleaved per round; medians of each run's p50.
//!
//! srt refuses upstreams at loopback addresses and takes only names that resolve on the host:
//! the upstream is in the bench's upstream namespace and [`NAME`] resolves through the egret
//! namespace's hosts file, which `ip netns exec` bind-mounts over /etc/hosts in a mount
//! namespace of its own (the machine's /etc/hosts is never touched). egret dials a name that
//! resolves to a private address only when pinned: its side gets `--resolve`. srt does not
//! terminate TLS (its `tlsTerminate` is experimental and off here): the client inside verifies
//! the upstream itself, so it is given the upstream's CA. egret terminates TLS to an allowed
//! host by default and the client trusts egret's CA with no flag; the passthrough side is the
//! tunnel-for-tunnel comparison.
use crate::measure::median;
use crate::report::Report;
use crate::Bench;
use egret_e2e::*;
use std::process::{Command, Output};
use std::time::Instant;

/// The ordinary user both run as (scripts/setup.sh creates it).
const USER: &str = "egret-test";
/// The upstream's name for this scenario (in the upstream's certificate).
pub(crate) const NAME: &str = "api.srt.test";
/// Start-ups measured per side.
const STARTS: usize = 10;
/// Requests per client run, unless `BENCH_SRT_REQUESTS` says otherwise.
const REQUESTS: usize = 300;

/// A new connection per request (urllib opens one for each `urlopen`); the first 10 warm up.
/// Prints p50 and p99 in ms. Honours the proxy variables, as srt needs.
const CLIENT: &str = r#"
import json, ssl, sys, time, urllib.error, urllib.request
url, n, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# "-": the default trust (inside egret exec: the system roots + the sandbox CA).
ctx = ssl.create_default_context(cafile=None if cafile == "-" else cafile)
lat = []
for i in range(n + 10):
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=15) as r:
            r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{url}: {e.code} {e.read()[:300]!r}")
    if i >= 10:
        lat.append(time.perf_counter() - t)
lat.sort()
print(json.dumps({"p50": lat[len(lat) // 2] * 1e3, "p99": lat[int(len(lat) * 0.99) - 1] * 1e3}))
"#;

/// Why the scenario cannot run here, if it cannot: srt, its packages or the user missing.
fn missing() -> Option<String> {
    let found = |program: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for (program, from) in [
        ("srt", "npm install -g @anthropic-ai/sandbox-runtime"),
        ("bwrap", "apt-get install bubblewrap"),
        ("socat", "apt-get install socat"),
        ("rg", "apt-get install ripgrep"),
    ] {
        if !found(program) {
            return Some(format!(
                "`{program}` is not installed ({from}; scripts/bench.sh does)"
            ));
        }
    }
    let user = Command::new("id").arg(USER).output();
    if !user.is_ok_and(|o| o.status.success()) {
        return Some(format!(
            "user {USER} is missing (scripts/setup.sh creates it)"
        ));
    }
    None
}

/// The scenario's files, in a directory the user may read and write.
struct Files {
    settings: String,
    client: String,
    policy: String,
    /// The same with [`NAME`] in `passthrough_hosts`.
    passthrough: String,
    cache: String,
}

impl Files {
    fn new(bench: &Bench) -> Files {
        let dir = bench.topo.tmp.path("srt");
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        let put = |name: &str, content: &str| {
            let p = dir.join(name);
            std::fs::write(&p, content).unwrap();
            p.to_string_lossy().into_owned()
        };
        let settings = serde_json::json!({
            "network": {"allowedDomains": [NAME], "deniedDomains": []},
            "filesystem": {"denyRead": [], "allowWrite": [], "denyWrite": []},
        });
        // The handler binding makes the start load a compiled artifact (from the cache once
        // warm); the upstream name itself is allowed with `--allow`.
        let token = format!("file = \"{}\"", put("token", "bench-token-value"));
        let policy = inject_header_policy("TOKEN", &token, &["other.test"]);
        let files = Files {
            settings: put("srt-settings.json", &settings.to_string()),
            client: put("client.py", CLIENT),
            passthrough: put(
                "passthrough.toml",
                &format!("passthrough_hosts = [\"{NAME}\"]\n{policy}"),
            ),
            policy: put("policy.toml", &policy),
            cache: dir.join("cache").to_string_lossy().into_owned(),
        };
        let owner = Command::new("chown")
            .args(["-R", &format!("{USER}:{USER}")])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(owner.success(), "chown {} to {USER}", dir.display());
        files
    }
}

/// `argv` run by [`USER`] in the egret namespace, with the user's own clean environment.
fn as_user(bench: &Bench, argv: &[&str]) -> Command {
    let mut c = bench.topo.egr.cmd("setpriv");
    c.args([
        "--reuid",
        USER,
        "--regid",
        USER,
        "--clear-groups",
        "--reset-env",
    ]);
    c.args(argv);
    c
}

fn checked(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One side: how to wrap a command.
#[derive(Clone, Copy, Debug)]
enum Side {
    Direct,
    /// egret exec with its defaults: TLS to an allowed host terminated (and re-originated).
    Egret,
    /// egret exec with the host in `passthrough_hosts`: TLS spliced untouched, as srt does.
    EgretPassthrough,
    Srt,
}

impl Side {
    fn command(self, bench: &Bench, files: &Files, cmd: &[&str]) -> Command {
        let egret = bin("egret");
        let ca = bench.pki.ca.to_str().unwrap();
        match self {
            Side::Direct => as_user(bench, cmd),
            Side::Egret | Side::EgretPassthrough => {
                // egret dials a name that resolves to a private address only when pinned.
                let pin = format!("{NAME}={}", UP4[0]);
                let policy = match self {
                    Side::EgretPassthrough => &files.passthrough,
                    _ => &files.policy,
                };
                let mut argv = vec![egret.to_str().unwrap(), "exec", "--allow", NAME];
                argv.extend(["--resolve", &pin]);
                argv.extend(["--policy", policy, "--upstream-ca", ca]);
                argv.extend(["--handler-cache-dir", &files.cache, "--"]);
                argv.extend_from_slice(cmd);
                as_user(bench, &argv)
            }
            Side::Srt => {
                // `-c` takes one command line; the arguments here need no quoting.
                let line = cmd.join(" ");
                as_user(bench, &["srt", "--settings", &files.settings, "-c", &line])
            }
        }
    }
}

/// (p50, p99) in ms of one client run of `url` on `side`.
fn client(bench: &Bench, files: &Files, side: Side, url: &str, n: &str) -> (f64, f64) {
    // egret terminates TLS (with its CA, which the command trusts with no flag); the others
    // leave it to the client, which verifies the upstream against its CA.
    let ca = match side {
        Side::Egret => "-",
        Side::Direct | Side::Srt | Side::EgretPassthrough => bench.pki.ca.to_str().unwrap(),
    };
    let cmd = side.command(bench, files, &["python3", &files.client, url, n, ca]);
    let out = checked(cmd, &format!("the client of {url} ({side:?})"));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the client of {url} printed {text:?}: {e}"));
    (v["p50"].as_f64().unwrap(), v["p99"].as_f64().unwrap())
}

/// Runs the scenario, or says why it is skipped.
pub(crate) fn run(bench: &Bench, report: &mut Report) {
    if let Some(why) = missing() {
        println!("srt: skipped: {why}");
        return;
    }
    let version = checked(as_user(bench, &["srt", "--version"]), "srt --version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let _hosts = NetnsHosts::write(
        &bench.topo.egr,
        &format!("127.0.0.1 localhost\n{} {NAME}\n", UP4[0]),
    );
    let files = Files::new(bench);
    startup(bench, &files, &version, report);
    let n = std::env::var("BENCH_SRT_REQUESTS").unwrap_or_else(|_| REQUESTS.to_string());
    for scheme in ["http", "https"] {
        latency(bench, &files, scheme, &n, report);
    }
}

/// `egret exec -- true` (a cached handler) vs `srt -c true`, ms.
fn startup(bench: &Bench, files: &Files, version: &str, report: &mut Report) {
    let time = |side: Side| {
        let t = Instant::now();
        checked(side.command(bench, files, &["true"]), "true");
        t.elapsed().as_secs_f64() * 1000.0
    };
    // The first egret start compiles the handler into the cache.
    let filling = time(Side::Egret);
    let (mut egret, mut srt) = (vec![], vec![]);
    for _ in 0..STARTS {
        egret.push(time(Side::Egret));
        srt.push(time(Side::Srt));
    }
    let (e, s) = (median(egret.clone()), median(srt.clone()));
    println!(
        "start-up, as {USER}: egret exec -- true (1 handler from the cache) {e:.0} ms (filling the cache {filling:.0} ms) | srt {version} -c true {s:.0} ms | ratio {:.2}",
        e / s
    );
    report.table.push([
        format!("start-up as an ordinary user: srt -c true (A, srt {version}) vs egret exec -- true (B, 1 cached handler)"),
        format!("{s:.0} ms"),
        format!("{e:.0} ms"),
        format!("ratio {:.2}; median of {STARTS}", e / s),
    ]);
    report.rows.push(
        serde_json::json!({"scenario": "srt: start-up", "srt_version": version,
        "srt_ms_median": s, "srt_ms": srt, "egret_exec_ms_median": e, "egret_exec_ms": egret,
        "egret_exec_filling_cache_ms": filling}),
    );
}

/// A new connection per request to `scheme://NAME/echo`: direct, in egret exec, in srt (and
/// for HTTPS in egret exec passing the TLS through).
fn latency(bench: &Bench, files: &Files, scheme: &str, n: &str, report: &mut Report) {
    let url = format!("{scheme}://{NAME}/echo");
    let mut sides = vec![Side::Direct, Side::Egret, Side::Srt];
    if scheme == "https" {
        sides.push(Side::EgretPassthrough);
    }
    let mut p50 = vec![vec![]; sides.len()];
    let mut p99 = vec![vec![]; sides.len()];
    for _ in 0..bench.knobs.rounds {
        for (i, side) in sides.iter().enumerate() {
            let (a, b) = client(bench, files, *side, &url, n);
            p50[i].push(a);
            p99[i].push(b);
        }
    }
    let m50: Vec<f64> = p50.iter().map(|v| median(v.clone())).collect();
    let m99: Vec<f64> = p99.iter().map(|v| median(v.clone())).collect();
    let (d, e, s) = (m50[0], m50[1], m50[2]);
    let (d99, e99, s99) = (m99[0], m99[1], m99[2]);
    let pass = m50.get(3).map(|&t| (t, m99[3]));
    let what = scheme.to_uppercase();
    let pass_line = pass.map_or(String::new(), |(t, t99)| {
        format!(
            " | egret exec, TLS passed through p50 {t:.2} ms p99 {t99:.2} ms (added {:.2} ms)",
            t - d
        )
    });
    println!(
        "{what} GET, new connection each ({n} sequential, Python urllib), as {USER}: direct p50 {d:.2} ms p99 {d99:.2} ms | egret exec p50 {e:.2} ms p99 {e99:.2} ms (added {:.2} ms) | srt p50 {s:.2} ms p99 {s99:.2} ms (added {:.2} ms){pass_line}",
        e - d,
        s - d
    );
    let terminated = if pass.is_some() {
        " (TLS terminated)"
    } else {
        ""
    };
    report.table.push([
        format!("{what} GET, new connection each (Python urllib): direct / srt (A) vs egret exec (B)"),
        format!("p50 {d:.2} ms / srt p50 {s:.2} ms"),
        match pass {
            Some((t, _)) => format!("p50 {e:.2} ms{terminated}; {t:.2} ms (passed through)"),
            None => format!("p50 {e:.2} ms"),
        },
        match pass {
            Some((t, _)) => format!(
                "added per request: egret exec {:.2} ms{terminated}, {:.2} ms (passed through); srt {:.2} ms",
                e - d,
                t - d,
                s - d
            ),
            None => format!("added per request: egret exec {:.2} ms, srt {:.2} ms", e - d, s - d),
        },
    ]);
    let mut row = serde_json::json!({"scenario": format!("srt: {what} GET, new connection each"),
        "requests": n, "rounds": bench.knobs.rounds,
        "direct_p50_ms": d, "direct_p99_ms": d99, "egret_exec_p50_ms": e, "egret_exec_p99_ms": e99,
        "srt_p50_ms": s, "srt_p99_ms": s99, "egret_exec_added_ms": e - d, "srt_added_ms": s - d,
        "direct_p50s_ms": p50[0], "egret_exec_p50s_ms": p50[1], "srt_p50s_ms": p50[2]});
    if let Some((t, t99)) = pass {
        row["egret_exec_passthrough_p50_ms"] = t.into();
        row["egret_exec_passthrough_p99_ms"] = t99.into();
        row["egret_exec_passthrough_added_ms"] = (t - d).into();
        row["egret_exec_passthrough_p50s_ms"] = p50[3].clone().into();
    }
    report.rows.push(row);
}

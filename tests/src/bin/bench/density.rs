//! `BENCH_ONLY=density`: many sidecars on one host, one egret per sandbox as the OCI hook
//! starts them. For N = 10 and 100 (and 1000 with `BENCH_DENSITY_MAX=1000`): N sandbox
//! namespaces, each with its own egret (HTTPS interception, `inject-header` bound, one shared
//! `--handler-cache-dir` filled beforehand), all in one egret namespace like sidecars in the
//! host's. Measured:
//! * start-to-intercepting (spawn to the ready file, which egret writes once its rules are in
//!   force) while the others start one after another (the ramp), and again for sidecars
//!   restarted with N−1 running;
//! * per-sidecar RSS, PSS and private memory (`/proc/PID/smaps_rollup`) once all are idle, and
//!   the idle CPU of all of them together over `BENCH_DENSITY_IDLE_SECS` (default 10);
//! * the same memory after every sidecar served 1,000 keep-alive HTTPS requests (does it go
//!   back down?);
//! * with `BENCH_BASELINE_EGRET=PATH` (an earlier egret build), start to intercepting of that
//!   build against this one, one sidecar, alternating (A B A B), `BENCH_DENSITY_AB_ROUNDS`
//!   (default 20) starts each.
//!
//! [`run`] returns the restart p50 at the largest N, which the target (< 20 ms) is checked on.
use crate::measure::{median, run_client};
use crate::report::Table;
use egret_e2e::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the caller set up: the topology (its upstream serves allowed.test over TLS), the
/// upstream CA and the bench policy file.
pub(crate) struct Setup<'a> {
    pub topo: &'a Topology,
    pub upstream_ca: &'a Path,
    pub policy: &'a str,
}

/// `/proc/PID/smaps_rollup` figures, KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    pss: u64,
    private: u64,
}

impl std::fmt::Display for Mem {
    /// `RSS / PSS / private MiB`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "{:.2} / {:.2} / {:.2} MiB",
            mib(self.rss),
            mib(self.pss),
            mib(self.private)
        )
    }
}

fn smaps_rollup(pid: u32) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("sidecar {pid} is gone: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss: field("Rss"),
        pss: field("Pss"),
        private: field("Private_Clean") + field("Private_Dirty"),
    }
}

/// One sidecar: its sandbox namespace and its egret.
struct Sidecar {
    ns: Netns,
    id: String,
    ca: PathBuf,
    ready: PathBuf,
    egret: Option<Proc>,
}

impl Sidecar {
    fn pid(&self) -> u32 {
        self.egret.as_ref().expect("sidecar running").child.id()
    }
}

/// Start `sc`'s egret and wait for its ready file (polled every millisecond: the figures are
/// tens of milliseconds). Returns the time from spawn to ready.
fn start(s: &Setup, cache: &Path, sc: &mut Sidecar) -> Duration {
    start_program(s, cache, sc, &bin("egret"))
}

/// [`start`] with another egret build.
fn start_program(s: &Setup, cache: &Path, sc: &mut Sidecar, program: &Path) -> Duration {
    let _ = std::fs::remove_file(&sc.ready);
    let mut cmd = s.topo.egr.cmd(program.to_str().unwrap());
    cmd.args(["run", "--netns", &sc.ns.name, "--sandbox-id", &sc.id]);
    cmd.arg("--ready-file").arg(&sc.ready);
    cmd.args(["--policy", s.policy]).arg("--ca-out").arg(&sc.ca);
    cmd.arg("--upstream-ca").arg(s.upstream_ca);
    cmd.arg("--handler-cache-dir").arg(cache);
    cmd.env(
        "RUST_LOG",
        std::env::var("EGRET_TEST_LOG").unwrap_or_else(|_| "info".into()),
    );
    let t = Instant::now();
    let mut proc = spawn(cmd, &s.topo.tmp.0, &sc.id);
    while !sc.ready.exists() {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("sidecar {} exited with {status}:\n{}", sc.id, proc.output());
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sidecar {} not ready after 30 s:\n{}",
            sc.id,
            proc.output()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t.elapsed();
    sc.egret = Some(proc);
    took
}

/// Stop `sc`'s egret and wait until its rules are gone from the sandbox.
fn stop(sc: &mut Sidecar) {
    drop(sc.egret.take());
    for _ in 0..200 {
        let t = sc.ns.run("nft", &["list", "tables"]);
        if t.stdout.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("sidecar {}: nftables rules left after it stopped", sc.id);
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// Per-sidecar medians and the sum over all of them.
fn memory(sidecars: &[Sidecar]) -> (Mem, Mem) {
    let all: Vec<Mem> = sidecars.iter().map(|s| smaps_rollup(s.pid())).collect();
    let med = |f: fn(&Mem) -> u64| median(all.iter().map(|m| f(m) as f64).collect()) as u64;
    let per = Mem {
        rss: med(|m| m.rss),
        pss: med(|m| m.pss),
        private: med(|m| m.private),
    };
    let total = all.iter().fold(Mem::default(), |a, m| Mem {
        rss: a.rss + m.rss,
        pss: a.pss + m.pss,
        private: a.private + m.private,
    });
    (per, total)
}

/// CPU of all sidecars together over `secs`, in % of one core.
fn idle_cpu(sidecars: &[Sidecar], secs: u64) -> f64 {
    let sum = || sidecars.iter().map(|s| proc_cpu_secs(s.pid())).sum::<f64>();
    let before = sum();
    std::thread::sleep(Duration::from_secs(secs));
    (sum() - before) / secs as f64 * 100.0
}

fn sidecar(s: &Setup, tag: &str) -> Sidecar {
    Sidecar {
        ns: Netns::new(&format!("{}-{}-d{tag}", ns_prefix(), s.topo.id)),
        id: format!("density-{tag}"),
        ca: s.topo.tmp.path(&format!("density-{tag}-ca.pem")),
        ready: s.topo.tmp.path(&format!("density-{tag}.ready")),
        egret: None,
    }
}

/// Start to intercepting, `baseline` (A) against this build (B), alternating on one sidecar.
fn baseline_ab(
    s: &Setup,
    cache: &Path,
    baseline: &Path,
    table: &mut Table,
    rows: &mut Vec<serde_json::Value>,
) {
    let rounds: usize = std::env::var("BENCH_DENSITY_AB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let this = bin("egret");
    let mut sc = sidecar(s, "ab");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (program, out) in [(baseline, &mut a), (this.as_path(), &mut b)] {
            out.push(start_program(s, cache, &mut sc, program).as_secs_f64() * 1000.0);
            stop(&mut sc);
        }
    }
    let (a50, b50) = (percentile(a.clone(), 0.5), percentile(b.clone(), 0.5));
    let (a99, b99) = (percentile(a.clone(), 0.99), percentile(b.clone(), 0.99));
    println!(
        "density: start to intercepting, baseline {} p50 {a50:.1} / p99 {a99:.1} ms, this build p50 {b50:.1} / p99 {b99:.1} ms ({rounds} each, A B A B)",
        baseline.display()
    );
    table.push([
        "start to intercepting, one sidecar: baseline build (A) vs this build (B)".into(),
        format!("p50 {a50:.1} / p99 {a99:.1} ms"),
        format!("p50 {b50:.1} / p99 {b99:.1} ms"),
        format!("B/A p50 {:.2}; {rounds} starts each, A B A B", b50 / a50),
    ]);
    rows.push(serde_json::json!({
        "name": "start to intercepting, baseline vs this build",
        "baseline": baseline.display().to_string(), "rounds": rounds,
        "baseline_ms": a, "this_ms": b,
        "baseline_p50_ms": a50, "this_p50_ms": b50, "baseline_p99_ms": a99, "this_p99_ms": b99,
    }));
}

/// Runs the density scenarios and appends their rows; returns the start-to-intercepting p50
/// of restarts at the largest N, and that N.
pub(crate) fn run(
    s: &Setup,
    table: &mut Table,
    rows: &mut Vec<serde_json::Value>,
) -> Option<(f64, usize)> {
    let max: usize = std::env::var("BENCH_DENSITY_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let idle_secs: u64 = std::env::var("BENCH_DENSITY_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cache = s.topo.tmp.path("density-cache");
    // Fill the artifact cache once: every measured start loads the handler from it.
    {
        let mut warm = sidecar(s, "warm");
        start(s, &cache, &mut warm);
        stop(&mut warm);
    }
    if let Some(baseline) = std::env::var_os("BENCH_BASELINE_EGRET") {
        baseline_ab(s, &cache, Path::new(&baseline), table, rows);
    }
    let mut restart_p50 = None;
    for n in [10, 100, 1000].into_iter().filter(|&n| n <= max) {
        let d = measure(s, &cache, n, idle_secs);
        restart_p50 = Some((percentile(d.restarts.clone(), 0.5), n));
        d.report(table, rows);
    }
    restart_p50
}

/// What one N measured.
struct Density {
    n: usize,
    idle_secs: u64,
    /// Start to intercepting while the others start one after another, ms.
    ramp: Vec<f64>,
    /// Start to intercepting of restarts with N−1 running, ms.
    restarts: Vec<f64>,
    /// Per idle sidecar (medians) and all together; idle CPU of all, % of a core.
    idle: (Mem, Mem),
    cpu: f64,
    /// The same after 1,000 requests through every sidecar, and those requests' p50s.
    after: (Mem, Mem),
    cpu_after: f64,
    p50s: Vec<f64>,
    took_secs: f64,
}

/// N sidecars started one after another, a tenth of them restarted, then idle, loaded and
/// idle again; all stopped at the end.
fn measure(s: &Setup, cache: &Path, n: usize, idle_secs: u64) -> Density {
    let began = Instant::now();
    let mut sidecars: Vec<Sidecar> = (0..n).map(|i| sidecar(s, &i.to_string())).collect();
    let ramp: Vec<f64> = sidecars
        .iter_mut()
        .map(|sc| start(s, cache, sc).as_secs_f64() * 1000.0)
        .collect();
    // Restarts with N−1 running: every n/10-th sidecar, 10 samples.
    let step = (n / 10).max(1);
    let mut restarts = Vec::new();
    for i in (0..n).step_by(step) {
        stop(&mut sidecars[i]);
        restarts.push(start(s, cache, &mut sidecars[i]).as_secs_f64() * 1000.0);
    }
    // Let the last starts settle (their first timers, the audit writer's first flush).
    std::thread::sleep(Duration::from_secs(5));
    let idle = memory(&sidecars);
    let cpu = idle_cpu(&sidecars, idle_secs);

    // 1,000 requests through every sidecar, one after another, then idle again.
    let mut p50s = Vec::new();
    for sc in &sidecars {
        let ca = sc.ca.to_str().unwrap();
        let (p50, _) = run_client(
            &sc.ns,
            &["https", "allowed.test", "allowed.test", "1000", ca],
        );
        p50s.push(p50);
    }
    std::thread::sleep(Duration::from_secs(5));
    let after = memory(&sidecars);
    let cpu_after = idle_cpu(&sidecars, idle_secs);
    let took_secs = began.elapsed().as_secs_f64();
    // SIGTERM to all first, so the sidecars wind down in parallel rather than one by one.
    for sc in &sidecars {
        if let Some(p) = &sc.egret {
            p.signal(nix::sys::signal::Signal::SIGTERM);
        }
    }
    drop(sidecars);
    Density {
        n,
        idle_secs,
        ramp,
        restarts,
        idle,
        cpu,
        after,
        cpu_after,
        p50s,
        took_secs,
    }
}

impl Density {
    fn report(self, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
        let Density {
            n,
            idle_secs,
            ramp,
            restarts,
            idle: (idle, idle_total),
            cpu,
            after: (after, after_total),
            cpu_after,
            p50s,
            took_secs: took,
        } = self;
        let (ramp50, ramp99) = (
            percentile(ramp.clone(), 0.5),
            percentile(ramp.clone(), 0.99),
        );
        let (re50, re99) = (
            percentile(restarts.clone(), 0.5),
            percentile(restarts.clone(), 0.99),
        );
        let delta = |a: u64, b: u64| mib(a as f64 - b as f64);
        println!(
            "density {n}: ramp p50 {ramp50:.1} / p99 {ramp99:.1} ms; restart with {} running p50 {re50:.1} / p99 {re99:.1} ms ({} samples); \
             per idle sidecar RSS / PSS / private {idle} (all: RSS {:.0} PSS {:.0} MiB); idle CPU of all {cpu:.2}% of a core; \
             after 1,000 requests each: {after}, idle CPU {cpu_after:.2}%; request p50 {:.0} µs; {took:.0} s",
            n - 1,
            restarts.len(),
            mib(idle_total.rss as f64),
            mib(idle_total.pss as f64),
            median(p50s.clone()),
        );
        table.push([
            format!(
                "density {n}: start to intercepting, ramp / restart with {} running",
                n - 1
            ),
            "—".into(),
            format!("p50 {ramp50:.1} / p99 {ramp99:.1} ms; p50 {re50:.1} / p99 {re99:.1} ms"),
            format!("{} restarts; whole scenario {took:.0} s", restarts.len()),
        ]);
        table.push([
            format!("density {n}: per idle sidecar RSS / PSS / private (median)"),
            "—".into(),
            idle.to_string(),
            format!(
                "all {n}: PSS {:.0} MiB; idle CPU {cpu:.2}% of one core",
                mib(idle_total.pss as f64)
            ),
        ]);
        table.push([
            format!("density {n}: after 1,000 HTTPS requests each"),
            "—".into(),
            after.to_string(),
            format!(
                "private {:+.2} MiB vs idle; idle CPU {cpu_after:.2}%; request p50 {:.0} µs",
                delta(after.private, idle.private),
                median(p50s.clone())
            ),
        ]);
        rows.push(serde_json::json!({
            "name": format!("density {n}"), "sidecars": n,
            "ramp_ms": ramp, "ramp_p50_ms": ramp50, "ramp_p99_ms": ramp99,
            "restart_ms": restarts, "restart_p50_ms": re50, "restart_p99_ms": re99,
            "idle_per_sidecar_kib": {"rss": idle.rss, "pss": idle.pss, "private": idle.private},
            "idle_total_kib": {"rss": idle_total.rss, "pss": idle_total.pss, "private": idle_total.private},
            "idle_cpu_pct_of_core": cpu, "idle_secs": idle_secs,
            "after_load_per_sidecar_kib": {"rss": after.rss, "pss": after.pss, "private": after.private},
            "after_load_total_kib": {"rss": after_total.rss, "pss": after_total.pss, "private": after_total.private},
            "after_load_idle_cpu_pct_of_core": cpu_after,
            "request_p50_us_median": median(p50s), "scenario_secs": took,
        }));
    }
}

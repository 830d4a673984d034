//! `BENCH_ONLY=load`: throughput with the Debian load generators inside the sandboxes (wrk,
//! h2load), the same URL (so the same SNI and Host) on every side: requests/s ratios, egret's
//! and nginx's CPU per request, the upstream's and the client's CPU share.
use crate::measure::{children_cpu_secs, median, median_opt, run_load, Load};
use crate::nginx::Nginx;
use crate::report::Report;
use crate::{Bench, TOKEN};
use egret_e2e::*;
use std::time::Instant;

/// The URL every load scenario but the plain-HTTP one requests.
const URL: &str = "https://allowed.test/echo";

/// A throughput scenario: the same load generator and arguments on both sides.
struct LoadScenario {
    name: &'static str,
    unit: &'static str,
    program: &'static str,
    args: Vec<String>,
}

/// Both intercepting sides really run their header edit: the upstream echoes the header.
pub(crate) fn check_paths(bench: &Bench) {
    let url = URL;
    let pki_ca = bench.pki.ca.to_str().unwrap();
    let ngx = &bench.ngx;
    // The egret side must really run the handler: the upstream echoes the injected header.
    let (_, echo, err) = bench.topo.curl(&["--cacert", &bench.ca, url]);
    assert!(
        echo.contains("\"x-auth-token\""),
        "the request through egret did not carry the injected header: {echo} {err}"
    );
    let (_, echo, err) = code_out_err(&ngx.run("curl", &["-sS", "--cacert", pki_ca, url]));
    assert!(
        echo.contains(&format!("\"{TOKEN}\"")),
        "the request through nginx did not carry the header: {echo} {err}"
    );
}

/// Runs the four load scenarios; the HTTP and HTTPS ones' CPU and throughput are checked
/// against nginx's.
pub(crate) fn run(bench: &Bench, nginx: &Nginx, egret_pid: u32, report: &mut Report) {
    let k = &bench.knobs;
    let (conns, streams, hs_conns) = (k.conns, k.streams, k.handshake_conns);
    let url = URL.to_string();
    let secs = k.load_secs.to_string();
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
    for (i, sc) in loads.iter().enumerate() {
        let m = measure(bench, nginx, egret_pid, sc);
        report_one(sc, i, &m, report);
    }
}

/// One side's figures over the rounds.
#[derive(Default)]
struct Side {
    per_s: Vec<f64>,
    p50_us: Vec<Option<f64>>,
    p99_us: Vec<Option<f64>>,
    /// The proxy's CPU seconds over all rounds (not measured for the direct side).
    cpu_secs: f64,
    requests: f64,
    errors: f64,
}

impl Side {
    fn add(&mut self, r: Load, cpu_secs: f64) {
        self.per_s.push(r.per_sec);
        self.p50_us.push(r.p50_us);
        self.p99_us.push(r.p99_us);
        self.cpu_secs += cpu_secs;
        self.requests += r.requests;
        self.errors += r.errors;
    }

    /// CPU per request in µs, the unit of the issue-18 targets.
    fn cpu_us_per_req(&self) -> f64 {
        self.cpu_secs / self.requests * 1e6
    }

    /// ` (p50 … ms / p99 … ms)` of the medians, when the load generator reports latency.
    fn latency(&self) -> String {
        match (median_opt(&self.p50_us), median_opt(&self.p99_us)) {
            (Some(a), Some(b)) => format!(" (p50 {:.2} ms / p99 {:.2} ms)", a / 1e3, b / 1e3),
            _ => String::new(),
        }
    }
}

/// A scenario's rounds, direct, nginx, egret interleaved, with the upstream's and the
/// client's CPU share of the direct runs.
struct Measured {
    direct: Side,
    nginx: Side,
    egret: Side,
    up_share: Vec<f64>,
    client_share: Vec<f64>,
}

fn measure(bench: &Bench, nginx: &Nginx, egret_pid: u32, sc: &LoadScenario) -> Measured {
    let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
    let up_pid = bench.up.proc.child.id();
    let mut m = Measured {
        direct: Side::default(),
        nginx: Side::default(),
        egret: Side::default(),
        up_share: vec![],
        client_share: vec![],
    };
    for _ in 0..bench.knobs.rounds {
        let (u0, c0, t0) = (proc_cpu_secs(up_pid), children_cpu_secs(), Instant::now());
        let r = run_load(&bench.direct, sc.program, &args);
        let wall = t0.elapsed().as_secs_f64();
        m.up_share.push((proc_cpu_secs(up_pid) - u0) / wall);
        m.client_share.push((children_cpu_secs() - c0) / wall);
        m.direct.add(r, 0.0);
        let cpu0 = nginx.cpu_secs();
        let r = run_load(&bench.ngx, sc.program, &args);
        m.nginx.add(r, nginx.cpu_secs() - cpu0);
        let cpu0 = proc_cpu_secs(egret_pid);
        let r = run_load(&bench.topo.sbx, sc.program, &args);
        m.egret.add(r, proc_cpu_secs(egret_pid) - cpu0);
    }
    m
}

/// Prints scenario `i`'s line and adds its rows; the first two feed the targets.
fn report_one(sc: &LoadScenario, i: usize, m: &Measured, report: &mut Report) {
    let (d, g, e) = (&m.direct.per_s, &m.nginx.per_s, &m.egret.per_s);
    let (dm, em, gm) = (median(d.clone()), median(e.clone()), median(g.clone()));
    let cpu_100k = m.egret.cpu_secs / m.egret.requests * 100_000.0;
    let (e_us, n_us) = (m.egret.cpu_us_per_req(), m.nginx.cpu_us_per_req());
    let (derr, nerr, eerr) = (m.direct.errors, m.nginx.errors, m.egret.errors);
    match i {
        0 => report.targets.http_cpu = Some((e_us, n_us)),
        1 => report.targets.https_load = Some((e_us, n_us, em, gm)),
        3 => report.targets.handshake_cpu = Some((e_us, n_us)),
        _ => {}
    }
    let (ups, cls) = (median(m.up_share.clone()), median(m.client_share.clone()));
    let (dlat, elat) = (m.direct.latency(), m.egret.latency());
    let (dl50, dl99, el50, el99) = (
        median_opt(&m.direct.p50_us),
        median_opt(&m.direct.p99_us),
        median_opt(&m.egret.p50_us),
        median_opt(&m.egret.p99_us),
    );
    println!(
        "{:54} direct {dm:9.0} {u}{dlat} | nginx {gm:9.0} {u} | egret {em:9.0} {u}{elat} | ratio {:.2} (to nginx {:.2}) | CPU µs/req egret {e_us:.1}, nginx {n_us:.1} ({:.2}×) | direct run: upstream {:.0}% CPU, client {:.0}% CPU | error responses: direct {derr}, nginx {nerr}, egret {eerr}",
        sc.name,
        em / dm,
        em / gm,
        e_us / n_us,
        ups * 100.0,
        cls * 100.0,
        u = sc.unit,
    );
    report.table.push_reference([
        sc.name.to_string(),
        format!("{dm:.0} {}{dlat}", sc.unit),
        format!("{gm:.0} {}; CPU {n_us:.1} µs/req", sc.unit),
        format!("{em:.0} {}{elat}; CPU {e_us:.1} µs/req", sc.unit),
        format!(
            "ratio {:.2}, to nginx {:.2}; CPU {:.2}× nginx's; errors {derr} / {nerr} / {eerr}",
            em / dm,
            em / gm,
            e_us / n_us
        ),
    ]);
    report.rows.push(serde_json::json!({"scenario": sc.name, "tool": sc.program, "args": sc.args, "unit": sc.unit,
        "direct_per_s": dm, "egret_per_s": em, "ratio": em / dm, "direct_rounds": d, "egret_rounds": e,
        "nginx_per_s": gm, "nginx_rounds": g, "ratio_to_nginx": em / gm, "nginx_errors": nerr,
        "egret_cpu_us_per_req": e_us, "nginx_cpu_us_per_req": n_us, "cpu_ratio_to_nginx": e_us / n_us,
        "direct_p50_us": dl50, "direct_p99_us": dl99, "egret_p50_us": el50, "egret_p99_us": el99,
        "egret_cpu_s_per_100k": cpu_100k, "direct_errors": derr, "egret_errors": eerr, "direct_upstream_cpu_share": ups, "direct_client_cpu_share": cls}));
}

/// What egret complained about under load (the cause of any error responses above).
pub(crate) fn complaints(egret: &Egret) {
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
}

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
//! * `egret exec` beside Anthropic's sandbox-runtime (`srt`) as an ordinary user: start-up and
//!   the added latency of a new connection per request (`bench/srt.rs`),
//! * start-up time to the ready file (median of 10), also with 5 handlers from the artifact
//!   cache, idle and peak RSS.
mod density;
mod download;
mod handlers;
mod latency;
mod load;
mod measure;
mod nginx;
mod report;
mod run_info;
mod srt;
mod startup;
mod swap;

use egret_e2e::*;
use measure::wait_released;
use report::Report;
use std::process::Command;
use std::time::Duration;

/// The name whose TLS egret splices untouched (`passthrough_hosts`): the passthrough download.
pub(crate) const PASS_HOST: &str = "pass.test";

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

/// The secret the bench's handlers inject (and nginx sets).
pub(crate) const TOKEN: &str = "bench-token-value";

/// `BENCH_ONLY=latency,load,download,swap,handlers,density,srt,startup5` runs only those parts (start-up with one
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

/// The knobs of a run (scripts/bench.sh lists them).
pub(crate) struct Knobs {
    pub(crate) rounds: usize,
    /// Requests per latency-client run (a string: it is passed on as an argument).
    pub(crate) requests: String,
    pub(crate) load_secs: u32,
    pub(crate) conns: u32,
    pub(crate) streams: u32,
    pub(crate) handshake_conns: u32,
    pub(crate) download: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            rounds: env_or("BENCH_ROUNDS", 4),
            requests: std::env::var("BENCH_REQUESTS").unwrap_or_else(|_| "2000".into()),
            load_secs: env_or("BENCH_LOAD_SECS", 5),
            conns: env_or("BENCH_CONNS", 64),
            streams: env_or("BENCH_STREAMS", 100),
            handshake_conns: env_or("BENCH_HANDSHAKE_CONNS", 16),
            download: env_or("BENCH_DOWNLOAD_BYTES", 1u64 << 30),
        }
    }
}

/// What every scenario shares: the namespaces (egret's sandbox, the direct baseline, nginx's),
/// the upstream and its PKI, the bench policy, where egret writes its CA and admin socket.
/// Fields drop in order: the upstream and the side namespaces before the topology.
pub(crate) struct Bench {
    pub(crate) knobs: Knobs,
    pub(crate) up: Upstream,
    _ngx_hosts: NetnsHosts,
    /// nginx's namespace, with its own veth to the upstream (10.203.0.2), where `allowed.test`
    /// is nginx on loopback (as it is egret for the sandbox).
    pub(crate) ngx: Netns,
    _direct_hosts: NetnsHosts,
    /// A second sandbox, no egret, with a direct veth to the upstream namespace (10.202.0.2).
    pub(crate) direct: Netns,
    pub(crate) pki: UpstreamPki,
    /// The bench policy file ([`bench_policy`]).
    pub(crate) policy: String,
    /// Where egret writes its CA (`--ca-out`).
    pub(crate) ca: String,
    pub(crate) sock: String,
    pub(crate) topo: Topology,
}

impl Bench {
    fn new(knobs: Knobs) -> Bench {
        let topo = Topology::new(SandboxNet::LoOnly);
        let direct = topo.direct_baseline(&[]);
        // The direct sandbox resolves the upstream's name like the egret sandbox does, so wrk and
        // h2load send the same SNI and Host on both sides.
        let direct_hosts =
            NetnsHosts::write(&direct, "127.0.0.1 localhost\n10.202.0.2 allowed.test\n");
        let mut names = vec!["allowed.test", "10.202.0.2", PASS_HOST];
        names.extend_from_slice(handlers::NAMES);
        names.extend_from_slice(&handlers::LANG_HOSTS);
        names.push(srt::NAME);
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
        let policy = write(&topo, "bench.toml", &bench_policy());
        std::env::set_var("BENCH_TOKEN", TOKEN);
        let ngx = topo.side_namespace("ngx", 203, &[]);
        let ngx_hosts = NetnsHosts::write(&ngx, "127.0.0.1 localhost allowed.test\n");
        let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
        let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
        Bench {
            knobs,
            up,
            _ngx_hosts: ngx_hosts,
            ngx,
            _direct_hosts: direct_hosts,
            direct,
            pki,
            policy,
            ca,
            sock,
            topo,
        }
    }

    /// egret's arguments with `policy`, plus `BENCH_EGRET_ARGS`.
    pub(crate) fn egret_args(&self, policy: &str) -> Vec<String> {
        [
            "--policy",
            policy,
            "--ca-out",
            &self.ca,
            "--upstream-ca",
            self.pki.ca.to_str().unwrap(),
            "--admin-socket",
            &self.sock,
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
    }

    pub(crate) fn start_egret(&self, args: &[String]) -> Egret {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Egret::start(&self.topo, "bench", &a).unwrap()
    }
}

/// For profiling by hand: the set-up stays up until stdin closes.
fn hold(bench: &Bench, nginx: &nginx::Nginx, egret_pid: u32) {
    println!(
        "BENCH_HOLD: egret pid {egret_pid}, upstream pid {}, nginx pids {:?}\n\
         sandbox:  ip netns exec {} curl --cacert {} https://allowed.test/echo\n\
         direct:   ip netns exec {} curl --cacert {} https://allowed.test/echo\n\
         nginx:    ip netns exec {} curl --cacert {} https://allowed.test/echo\n\
         close stdin to end",
        bench.up.proc.child.id(),
        nginx.pids(),
        bench.topo.sbx.name,
        bench.ca,
        bench.direct.name,
        bench.pki.ca.display(),
        bench.ngx.name,
        bench.pki.ca.display()
    );
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}

fn main() {
    let knobs = Knobs::from_env();
    for tool in ["wrk", "h2load"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "{tool} is missing: apt-get install -y wrk nghttp2-client (scripts/bench.sh does)"
        );
    }
    let bench = Bench::new(knobs);
    let nginx = nginx::Nginx::start(
        &bench.ngx,
        &bench.topo.tmp.0,
        "10.203.0.2",
        &bench.pki,
        TOKEN,
    );
    let mut report = Report::default();

    let (startups, egret) = startup::series(&bench);
    let egret_pid = egret.proc.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = proc_status_kib(egret_pid, "VmRSS");
    if std::env::var_os("BENCH_HOLD").is_some() {
        return hold(&bench, &nginx, egret_pid);
    }
    if only("latency") {
        latency::run(&bench, &mut report);
    }
    load::check_paths(&bench);
    if only("load") {
        load::run(&bench, &nginx, egret_pid, &mut report);
    }
    load::complaints(&egret);
    if only("download") {
        download::run(&bench, egret_pid, &mut report);
    }
    if only("swap") {
        swap::run(&bench, &mut report);
    }
    let memory = startup::Memory {
        idle_rss,
        peak: proc_status_kib(egret_pid, "VmHWM"),
        nginx_peak: nginx.peak_rss_kib(),
    };
    drop(nginx);
    drop(egret);
    wait_released(&bench.topo);

    if only("handlers") {
        let setup = handlers::Setup {
            topo: &bench.topo,
            upstream: &bench.up,
            upstream_ca: &bench.pki.ca,
            rounds: bench.knobs.rounds,
            requests: &bench.knobs.requests,
            download: bench.knobs.download,
        };
        handlers::run(&setup, &mut report.table, &mut report.rows);
        handlers::run_languages(&setup, &mut report.table, &mut report.rows);
    }
    if only("density") {
        let setup = density::Setup {
            topo: &bench.topo,
            upstream_ca: &bench.pki.ca,
            policy: &bench.policy,
        };
        report.targets.start_p50 = density::run(&setup, &mut report.table, &mut report.rows);
    }
    if only("srt") {
        srt::run(&bench, &mut report);
    }
    let startup = startup::Startup::measure(&bench, startups, only("startup5"));
    let mut summary = startup.report(&memory, &mut report);
    summary.insert("run".into(), run_info::run_info());
    summary.insert("rounds".into(), bench.knobs.rounds.into());
    summary.insert("load_secs".into(), bench.knobs.load_secs.into());
    report.finish(summary);
}

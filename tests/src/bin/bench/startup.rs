//! Start-up: exec to the ready file, ten times with the bench policy (one handler compiled at
//! start; the last egret stays up for the other scenarios), and with `startup5` ten times with
//! five handlers from the artifact cache; idle and peak RSS.
use crate::measure::{median, wait_released};
use crate::report::Report;
use crate::Bench;
use egret_e2e::*;
use std::time::Instant;

/// Ten starts with the bench policy, in ms; the last egret is returned running.
pub(crate) fn series(bench: &Bench) -> (Vec<f64>, Egret) {
    let mut startups = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let e = bench.start_egret(&bench.egret_args(&bench.policy));
        startups.push(t.elapsed().as_secs_f64() * 1000.0);
        if i == 9 {
            return (startups, e);
        }
        drop(e);
        wait_released(&bench.topo);
    }
    unreachable!("the tenth start returns")
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
            super::bench_policy(),
            pst = handler_module("per-sandbox-token"),
            allow = handler_module("allow-hosts"),
            nohttp = handler_module("no-http"),
            getonly = handler_module("get-only"),
        ),
    )
}

/// egret's memory in the run, KiB: at idle after start, its peak after the load, nginx's peak.
pub(crate) struct Memory {
    pub(crate) idle_rss: u64,
    pub(crate) peak: u64,
    pub(crate) nginx_peak: u64,
}

/// The start-up figures: the one-handler series and, when measured, the five cached handlers.
pub(crate) struct Startup {
    startups: Vec<f64>,
    cached: Vec<f64>,
    uncached: f64,
    cached_rss: u64,
}

impl Startup {
    /// With `five`, eleven starts with five handlers whose artifacts are cached: the first
    /// fills the cache.
    pub(crate) fn measure(bench: &Bench, startups: Vec<f64>, five: bool) -> Startup {
        let cache = bench.topo.tmp.path("handler-cache");
        let mut args5 = bench.egret_args(&five_handler_policy(&bench.topo));
        args5.extend(["--handler-cache-dir".into(), cache.to_string_lossy().into()]);
        let mut cached = Vec::new();
        let mut uncached = 0.0;
        let mut cached_rss = 0;
        for i in 0..if five { 11 } else { 0 } {
            let t = Instant::now();
            let e = bench.start_egret(&args5);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if i == 0 {
                uncached = ms;
            } else {
                cached.push(ms);
                cached_rss = proc_status_kib(e.proc.child.id(), "VmRSS");
            }
            drop(e);
            wait_released(&bench.topo);
        }
        Startup {
            startups,
            cached,
            uncached,
            cached_rss,
        }
    }

    /// Prints the start-up and memory lines, adds their rows; returns the JSON's top-level
    /// start-up and memory fields.
    pub(crate) fn report(
        self,
        mem: &Memory,
        report: &mut Report,
    ) -> serde_json::Map<String, serde_json::Value> {
        let Startup {
            startups,
            cached,
            uncached,
            cached_rss,
        } = self;
        let Memory {
            idle_rss,
            peak,
            nginx_peak,
        } = *mem;
        let table = &mut report.table;
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
                println!(
                    "start-up to ready (median of 10), 1 handler compiled at start: {st:.1} ms"
                );
                println!("idle RSS {idle_rss} KiB; peak RSS (VmHWM) after the load {peak} KiB");
                table.push([
                    "start-up to ready, 1 handler compiled at start".into(),
                    "—".into(),
                    format!("{st:.1} ms"),
                    String::new(),
                ]);
            }
        }
        table.push_reference([
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

        let out = serde_json::json!({
            "startup_ms_median": st, "startups_ms": startups,
            "startup_5_cached_ms_median": st5, "startups_5_cached_ms": cached, "startup_5_uncached_ms": uncached,
            "idle_rss_kib": idle_rss, "peak_rss_kib": peak, "rss_at_ready_5_cached_kib": cached_rss,
            "nginx_peak_rss_kib": nginx_peak});
        match out {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        }
    }
}

//! `BENCH_ONLY=download`: download throughput direct vs through egret, plain HTTP and TLS that
//! egret passes through untouched, with egret's CPU per GiB.
use crate::measure::{curl_speed, download_speed, median};
use crate::report::Report;
use crate::{Bench, PASS_HOST};
use egret_e2e::*;

pub(crate) fn run(bench: &Bench, egret_pid: u32, report: &mut Report) {
    let (rounds, download) = (bench.knobs.rounds, bench.knobs.download);
    // Download, direct vs through egret (plain HTTP), speed per round.
    let (mut dspeed, mut espeed) = (vec![], vec![]);
    for _ in 0..rounds.min(3) {
        dspeed.push(download_speed(
            &bench.direct,
            "allowed.test",
            "10.202.0.2",
            download,
        ));
        espeed.push(download_speed(
            &bench.topo.sbx,
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
    report.table.push([
        format!("{mib} MiB download, plain HTTP (curl)"),
        format!("{ds:.0} MiB/s"),
        format!("{es:.0} MiB/s"),
        format!("ratio {:.2}", es / ds),
    ]);
    report.rows.push(serde_json::json!({"scenario": format!("{mib} MiB download"), "direct_mib_s": ds, "egret_mib_s": es, "ratio": es / ds}));
    report.targets.download_plain = Some(es / ds);

    // The same over TLS that egret passes through untouched (spliced, nothing inspected).
    let pass_url = format!("https://{PASS_HOST}/bytes/{download}");
    let pin = format!("{PASS_HOST}:443:10.202.0.2");
    let ca = bench.pki.ca.to_str().unwrap();
    let (mut dspeed, mut espeed, mut cpu) = (vec![], vec![], vec![]);
    for _ in 0..rounds.min(3) {
        dspeed.push(curl_speed(
            &bench.direct,
            &["--cacert", ca, "--resolve", &pin, &pass_url],
        ));
        let cpu0 = proc_cpu_secs(egret_pid);
        espeed.push(curl_speed(&bench.topo.sbx, &["--cacert", ca, &pass_url]));
        // The client decrypts, so its CPU bounds the throughput of both sides; what egret
        // spends moving the bytes is its own CPU time.
        cpu.push((proc_cpu_secs(egret_pid) - cpu0) * (1u64 << 30) as f64 / download as f64);
    }
    let (ds, es, cpu) = (median(dspeed), median(espeed), median(cpu));
    println!(
            "{mib} MiB download, TLS passthrough: direct {ds:.0} MiB/s, through egret {es:.0} MiB/s (ratio {:.2}); egret CPU {cpu:.3} s per GiB",
            es / ds
        );
    report.table.push([
        format!("{mib} MiB download, TLS passthrough (curl)"),
        format!("{ds:.0} MiB/s"),
        format!("{es:.0} MiB/s"),
        format!("ratio {:.2}; egret CPU {cpu:.3} s/GiB", es / ds),
    ]);
    report.rows.push(serde_json::json!({"scenario": format!("{mib} MiB download, TLS passthrough"), "direct_mib_s": ds, "egret_mib_s": es, "ratio": es / ds, "egret_cpu_s_per_gib": cpu}));
    report.targets.download_passthrough = Some(es / ds);
}

//! `BENCH_ONLY=latency`: request latency one connection at a time (the python client; its own
//! cost is the same on every side), direct vs nginx vs egret, interleaved: keep-alive HTTP/1.1,
//! keep-alive HTTPS with `inject-header`, and a new TLS connection per request (cached leaf).
use crate::measure::{median, run_client};
use crate::report::Report;
use crate::Bench;

/// One measured scenario: the client arguments for the direct, the nginx and the egret side.
struct Scenario<'a> {
    name: &'a str,
    direct: Vec<&'a str>,
    nginx: Vec<&'a str>,
    egret: Vec<&'a str>,
}

/// Runs the three scenarios; the HTTPS one's added p50 is checked against nginx's.
pub(crate) fn run(bench: &Bench, report: &mut Report) {
    let (direct, ngx, topo) = (&bench.direct, &bench.ngx, &bench.topo);
    let (rounds, n) = (bench.knobs.rounds, bench.knobs.requests.as_str());
    let ca_s = &bench.ca;
    let pki_ca = bench.pki.ca.to_str().unwrap();
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
    for (i, sc) in scen.iter().enumerate() {
        let name = sc.name;
        let (mut d50, mut d99, mut n50, mut n99, mut e50, mut e99) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let (a, b) = run_client(direct, &sc.direct);
            d50.push(a);
            d99.push(b);
            let (a, b) = run_client(ngx, &sc.nginx);
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
        report.table.push_reference([
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
            report.targets.https_added_p50 = Some((e50 - d50, n50 - d50));
        }
        report.rows.push(serde_json::json!({"scenario": name, "direct_p50_us": d50, "direct_p99_us": d99, "egret_p50_us": e50, "egret_p99_us": e99,
            "added_p50_us": e50 - d50, "added_p99_us": e99 - d99,
            "nginx_p50_us": n50, "nginx_p99_us": n99, "nginx_added_p50_us": n50 - d50, "nginx_added_p99_us": n99 - d99}));
    }
}

//! What a run reports: the table rows, the JSON rows and the targets checked; printed and
//! written once every scenario has run.

/// Everything the scenarios add to: the printed table, the JSON rows, the targets.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) table: Table,
    pub(crate) rows: Vec<serde_json::Value>,
    pub(crate) targets: Targets,
}

impl Report {
    /// Prints the table and the targets, then writes the JSON (`BENCH_OUT`, default
    /// bench-results.json): `summary`'s top-level fields, the targets and the rows.
    pub(crate) fn finish(self, mut summary: serde_json::Map<String, serde_json::Value>) {
        println!();
        // Handler rows compare two egret paths: A is the baseline handler (or build), B the other.
        println!(
            "| scenario | A: direct (or baseline) | nginx (reference) | B: through egret | comparison |"
        );
        println!("|---|---|---|---|---|");
        for [a, b, c, d, e] in &self.table.0 {
            println!("| {a} | {b} | {c} | {d} | {e} |");
        }
        let target_lines = self.targets.lines();
        if !target_lines.is_empty() {
            println!("\ntargets in this run (issue 18 against nginx, issue 28):");
            for (line, met) in &target_lines {
                println!("  [{}] {line}", if *met { "met" } else { "NOT met" });
            }
        }
        summary.insert(
            "targets".into(),
            target_lines
                .iter()
                .map(|(l, met)| serde_json::json!({"target": l, "met": met}))
                .collect(),
        );
        summary.insert("scenarios".into(), self.rows.into());
        let path = std::env::var("BENCH_OUT").unwrap_or_else(|_| "bench-results.json".into());
        std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
        println!("wrote {path}");
    }
}

/// The final table: scenario, direct (or baseline), nginx (reference rows only), egret,
/// comparison.
#[derive(Default)]
pub(crate) struct Table(Vec<[String; 5]>);

impl Table {
    /// A reference row: scenario, direct, nginx, egret, comparison.
    pub(crate) fn push_reference(&mut self, row: [String; 5]) {
        self.0.push(row);
    }

    /// A row without an nginx figure: scenario, direct (or baseline), egret, comparison.
    pub(crate) fn push(&mut self, [scenario, direct, egret, cmp]: [String; 4]) {
        self.0.push([scenario, direct, "—".into(), egret, cmp]);
    }
}

/// The targets checked in this run: issue 18's against nginx, issue 28's start to intercepting.
#[derive(Default)]
pub(crate) struct Targets {
    /// Added p50 of HTTPS keep-alive (µs): egret, nginx.
    pub(crate) https_added_p50: Option<(f64, f64)>,
    /// CPU µs per HTTPS request at 64 connections: egret, nginx; requests/s: egret, nginx.
    pub(crate) https_load: Option<(f64, f64, f64, f64)>,
    /// CPU µs per HTTP request at 64 connections: egret, nginx.
    pub(crate) http_cpu: Option<(f64, f64)>,
    /// CPU µs per new TLS connection (handshake + one request): egret, nginx.
    pub(crate) handshake_cpu: Option<(f64, f64)>,
    /// Start to intercepting p50 (ms) of restarts with N−1 sidecars running, and N.
    pub(crate) start_p50: Option<(f64, usize)>,
    /// Download throughput through egret / direct: plain HTTP, TLS passthrough.
    pub(crate) download_plain: Option<f64>,
    pub(crate) download_passthrough: Option<f64>,
}

impl Targets {
    pub(crate) fn lines(&self) -> Vec<(String, bool)> {
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

//! `BENCH_ONLY=swap`: policy swap latency through the admin socket, a params-only change and
//! a new module, each request returning once the new generation is in force.
use crate::report::Report;
use crate::Bench;
use egret_e2e::*;

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

pub(crate) fn run(bench: &Bench, report: &mut Report) {
    let (params_swap, module_swap) = swap_latency(&bench.sock, &bench.topo);
    println!(
        "swap latency (admin request to new generation in force): params-only p50 {:.2} ms p99 {:.2} ms; new module p50 {:.2} ms p99 {:.2} ms",
        params_swap.0, params_swap.1, module_swap.0, module_swap.1
    );
    report.table.push([
        "policy swap, params only / new module (p50, p99)".into(),
        "—".into(),
        format!(
            "{:.2} / {:.2} ms; {:.1} / {:.1} ms",
            params_swap.0, params_swap.1, module_swap.0, module_swap.1
        ),
        String::new(),
    ]);
    report.rows.push(serde_json::json!({"scenario": "swap latency", "params_p50_ms": params_swap.0, "params_p99_ms": params_swap.1,
        "module_p50_ms": module_swap.0, "module_p99_ms": module_swap.1}));
}

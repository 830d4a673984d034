//! `BENCH_ONLY=handlers`: what handler capabilities cost per request, each against the
//! head-only `inject-header` in the same run, interleaved A B A B on one egret:
//! * a 4 KiB JSON chat request through `llm-guard` (body buffered, parsed, secret-scanned)
//!   against the same request through `inject-header`: added p50;
//! * an MCP `tools/call` through `mcp-guard` (body parsed against tool, argument and method
//!   rules; answer buffered) against the same call on a route without a handler: added p50;
//! * `oauth-client-credentials` with its token cached (a minted secret) against
//!   `inject-header`: latency ratio, and the token endpoint's exchange count (one, before the
//!   measurement: no fetch on the hot path);
//! * a download with a secret injected (so the echo guard scans every byte) against one
//!   without a handler: throughput ratio;
//! * `inject-header` written in TypeScript and in Python (built from `handlers-wasm/ts`,
//!   `handlers-wasm/py` with `egret handler build`) against the Rust one, on one egret: added
//!   p50/p99 with a fresh instance per request, component sizes, and egret's start-up with
//!   their compiled artifacts cached;
//! * with `BENCH_BASELINE_EGRET=PATH` (an earlier egret build), a head-only handler of WIT
//!   0.1.0 (`v1-inject-header`, which both builds load) on that build against this one, egret
//!   restarted for every round (A B A B).
use crate::measure::{download_speed, median, run_client, wait_released};
use crate::report::Table;
use egret_e2e::*;
use std::path::Path;

/// The OAuth client the upstream knows (`--oauth-client`) and its secret.
pub(crate) const OAUTH_CLIENT: &str = "bench:bench-client-secret";

/// Names the handler scenarios use besides [`LANG_HOSTS`]; the upstream's certificate must
/// cover both.
pub(crate) const NAMES: &[&str] = &[
    "llm.test",
    "oauth.test",
    "auth.test",
    "secret.test",
    "v1.test",
    "mcp.test",
    "plain.test",
];

/// The upstream's flags the handler scenarios need (the token endpoint's client).
pub(crate) fn upstream_flags() -> Vec<&'static str> {
    vec![
        "--oauth-client",
        OAUTH_CLIENT,
        "--oauth-expires-in",
        "86400",
    ]
}

/// What the caller set up: the topology (its upstream runs with [`upstream_flags`] and a
/// certificate for [`NAMES`]), the upstream CA, the knobs.
pub(crate) struct Setup<'a> {
    pub topo: &'a Topology,
    pub upstream: &'a Upstream,
    pub upstream_ca: &'a Path,
    pub rounds: usize,
    pub requests: &'a str,
    pub download: u64,
}

fn resolve(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\" = \"10.200.0.2\"\n"))
        .collect()
}

/// The handler policy: `inject-header` on allowed.test:443 and secret.test:80, `llm-guard` on
/// llm.test, `oauth-client-credentials` on oauth.test (token from auth.test), `mcp-guard` on
/// mcp.test (plain.test: no handler), and the WIT 0.1.0 `v1-inject-header` on v1.test.
fn policy() -> String {
    let hosts = [
        "allowed.test",
        "llm.test",
        "oauth.test",
        "auth.test",
        "secret.test",
        "v1.test",
        "mcp.test",
        "plain.test",
    ];
    let client_id = OAUTH_CLIENT.split_once(':').unwrap().0;
    format!(
        r#"
internet = false
allowed_hosts = {hosts:?}
[resolve]
{resolve}
[secrets]
TOKEN = {{ env = "BENCH_TOKEN" }}
LLM_KEY = {{ env = "BENCH_LLM_KEY" }}
DB_PASSWORD = {{ env = "BENCH_DB_PASSWORD" }}
CLIENT_SECRET = {{ env = "BENCH_CLIENT_SECRET" }}

[handlers.inject]
module = "{inject}"
params = {{ header = "x-auth-token", secret = "TOKEN" }}
secrets = ["TOKEN"]

[handlers.llm]
module = "{llm}"
secrets = ["LLM_KEY", "DB_PASSWORD"]
reveal = ["DB_PASSWORD"]
body = {{ max_bytes = 1048576 }}
params = {{ models = ["bench-model"], max_tokens_cap = 1024, watch_secrets = ["DB_PASSWORD"], api_key_secret = "LLM_KEY" }}

[handlers.oauth]
module = "{oauth}"
timeout_ms = 2000
secrets = ["CLIENT_SECRET"]
mint_secrets = ["OAUTH_ACCESS_TOKEN"]
fetch_hosts = ["auth.test"]
response = {{ mode = "head" }}
params = {{ token_url = "https://auth.test/oauth/token", client_id = "{client_id}", client_secret = "CLIENT_SECRET" }}

[handlers.mcp]
module = "{mcp}"
body = {{ max_bytes = 1048576 }}
response = {{ mode = "buffer", max_bytes = 1048576 }}
params = {{ allow_tools = ["echo", "create_*"], deny_tools = ["delete_*"], filter_lists = true, args = {{ create_issue = {{ repo = "sandbox-*" }} }} }}
{v1}
[[routes]]
host = "mcp.test"
handler = "mcp"
[[routes]]
host = "allowed.test:443"
handler = "inject"
[[routes]]
host = "secret.test:80"
handler = "inject"
[[routes]]
host = "llm.test"
handler = "llm"
[[routes]]
host = "oauth.test"
handler = "oauth"
"#,
        resolve = resolve(&hosts),
        inject = handler_module("inject-header"),
        llm = handler_module("llm-guard"),
        oauth = handler_module("oauth-client-credentials"),
        mcp = handler_module("mcp-guard"),
        v1 = v1_binding(),
    )
}

/// The WIT 0.1.0 head-only handler on v1.test:443 (both the baseline build and this one load
/// it: the policy keys are the first wave's).
fn v1_binding() -> String {
    format!(
        r#"
[handlers.inject1]
module = "{}"
params = {{ header = "x-auth-token", secret = "TOKEN" }}
secrets = ["TOKEN"]
[[routes]]
host = "v1.test:443"
handler = "inject1"
"#,
        handler_module("v1-inject-header")
    )
}

/// A chat request of 4 KiB: an allowed model, `max_tokens` under the cap (so `llm-guard`
/// forwards the body as it is and both sides send the same bytes).
fn chat_body() -> Vec<u8> {
    let mut words = String::new();
    while words.len() < 4096 - 120 {
        words.push_str("lorem ipsum dolor sit amet ");
    }
    let body = serde_json::json!({
        "model": "bench-model",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": words}],
    });
    serde_json::to_vec(&body).unwrap()
}

/// An MCP `tools/call` of an allowed tool whose argument rule passes.
fn tools_call_body() -> Vec<u8> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "create_issue", "arguments": {"repo": "sandbox-1", "title": "bench"}},
    });
    serde_json::to_vec(&body).unwrap()
}

/// Median (p50, p99) of `rounds` runs of the latency client for each of `sides`, interleaved.
fn interleaved(ns: &Netns, rounds: usize, sides: &[Vec<&str>]) -> Vec<(f64, f64)> {
    let mut p50 = vec![Vec::new(); sides.len()];
    let mut p99 = vec![Vec::new(); sides.len()];
    for _ in 0..rounds {
        for (i, args) in sides.iter().enumerate() {
            let (a, b) = run_client(ns, args);
            p50[i].push(a);
            p99[i].push(b);
        }
    }
    p50.into_iter()
        .zip(p99)
        .map(|(a, b)| (median(a), median(b)))
        .collect()
}

/// The handler egret of [`run`]: the scenarios' shared state.
struct Live<'a> {
    s: &'a Setup<'a>,
    /// egret's CA.
    ca: String,
}

/// Runs the scenarios; adds table rows and JSON rows.
pub(crate) fn run(s: &Setup, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let topo = s.topo;
    let policy = policy();
    let client_secret = OAUTH_CLIENT.split_once(':').unwrap().1;
    let env = [
        ("BENCH_TOKEN", "bench-token-value"),
        ("BENCH_LLM_KEY", "bench-llm-key-value"),
        ("BENCH_DB_PASSWORD", "bench-db-password-value"),
        ("BENCH_CLIENT_SECRET", client_secret),
    ];
    let (egret, ca) =
        Egret::start_intercepting(topo, "bench-handlers", &policy, s.upstream_ca, &[], &env)
            .unwrap();
    // Every side must really run its handler (the upstream echoes what it got), and the oauth
    // side fetches its token now, before anything is measured.
    for (host, needle) in [
        ("allowed.test", "x-auth-token"),
        ("oauth.test", "authorization"),
    ] {
        let (_, echo, err) = topo.curl(&["--cacert", &ca, &format!("https://{host}/echo")]);
        assert!(
            echo.contains(&format!("\"{needle}\"")),
            "{host}: the handler did not inject {needle}: {echo} {err}\n{}",
            egret.logs()
        );
    }
    let live = Live { s, ca };
    llm_guard(&live, table, rows);
    mcp_guard(&live, table, rows);
    oauth_cached(&live, table, rows);
    echo_guard_download(&live, table, rows);
    drop(egret);
    wait_released(topo);

    if let Some(baseline) = std::env::var_os("BENCH_BASELINE_EGRET") {
        baseline_ab(s, Path::new(&baseline), table, rows);
    }
}

/// 4 KiB JSON body: inject-header (head only) vs llm-guard (buffered, parsed, scanned).
fn llm_guard(live: &Live, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let (s, topo, ca, n) = (live.s, live.s.topo, live.ca.as_str(), live.s.requests);
    let body_file = topo.tmp.path("chat-4k.json");
    let body = chat_body();
    std::fs::write(&body_file, &body).unwrap();
    let body_path = body_file.to_str().unwrap();
    let chat = "/v1/chat/completions";
    let r = interleaved(
        &topo.sbx,
        s.rounds,
        &[
            vec![
                "https",
                "allowed.test",
                "allowed.test",
                n,
                ca,
                chat,
                body_path,
            ],
            vec!["https", "llm.test", "llm.test", n, ca, chat, body_path],
        ],
    );
    let ((h50, h99), (l50, l99)) = (r[0], r[1]);
    println!(
        "4 KiB JSON POST: inject-header p50 {h50:.1} µs p99 {h99:.1} µs | llm-guard p50 {l50:.1} µs p99 {l99:.1} µs | added p50 {:.1} µs",
        l50 - h50
    );
    table.push([
        "4 KiB JSON chat request: llm-guard (body read) vs inject-header (head only)".into(),
        format!("p50 {h50:.0} µs / p99 {h99:.0} µs"),
        format!("p50 {l50:.0} µs / p99 {l99:.0} µs"),
        format!("added p50 {:.0} µs", l50 - h50),
    ]);
    rows.push(serde_json::json!({"scenario": "llm-guard 4 KiB JSON vs inject-header", "body_bytes": body.len(),
        "inject_p50_us": h50, "inject_p99_us": h99, "llm_guard_p50_us": l50, "llm_guard_p99_us": l99,
        "added_p50_us": l50 - h50}));
}

/// An MCP tools/call: mcp-guard (parsed, checked, answer buffered) vs no handler. The upstream
/// answers 200 (its echo), which is all the guard's cost needs.
fn mcp_guard(live: &Live, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let (s, topo, ca, n) = (live.s, live.s.topo, live.ca.as_str(), live.s.requests);
    let call_file = topo.tmp.path("tools-call.json");
    let call = tools_call_body();
    std::fs::write(&call_file, &call).unwrap();
    let call_path = call_file.to_str().unwrap();
    let r = interleaved(
        &topo.sbx,
        s.rounds,
        &[
            vec![
                "https",
                "plain.test",
                "plain.test",
                n,
                ca,
                "/echo",
                call_path,
            ],
            vec!["https", "mcp.test", "mcp.test", n, ca, "/echo", call_path],
        ],
    );
    let ((p50, p99), (m50, m99)) = (r[0], r[1]);
    println!(
        "MCP tools/call: no handler p50 {p50:.1} µs p99 {p99:.1} µs | mcp-guard p50 {m50:.1} µs p99 {m99:.1} µs | added p50 {:.1} µs",
        m50 - p50
    );
    table.push([
        "MCP tools/call: mcp-guard (checked, answer buffered) vs no handler".into(),
        format!("p50 {p50:.0} µs / p99 {p99:.0} µs"),
        format!("p50 {m50:.0} µs / p99 {m99:.0} µs"),
        format!("added p50 {:.0} µs", m50 - p50),
    ]);
    rows.push(serde_json::json!({"scenario": "mcp-guard tools/call vs no handler", "body_bytes": call.len(),
        "plain_p50_us": p50, "plain_p99_us": p99, "mcp_guard_p50_us": m50, "mcp_guard_p99_us": m99,
        "added_p50_us": m50 - p50}));
}

/// Cached OAuth token vs a static secret, and the token exchanges while measuring (none: the
/// token was fetched by [`run`]'s check).
fn oauth_cached(live: &Live, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let (s, topo, ca, n) = (live.s, live.s.topo, live.ca.as_str(), live.s.requests);
    let exchanges_before = s.upstream.access_log().matches("TOKEN-ISSUED").count();
    let r = interleaved(
        &topo.sbx,
        s.rounds,
        &[
            vec!["https", "allowed.test", "allowed.test", n, ca],
            vec!["https", "oauth.test", "oauth.test", n, ca],
        ],
    );
    let ((i50, i99), (o50, o99)) = (r[0], r[1]);
    let exchanges = s.upstream.access_log().matches("TOKEN-ISSUED").count() - exchanges_before;
    println!(
        "GET: inject-header p50 {i50:.1} µs p99 {i99:.1} µs | oauth (cached token) p50 {o50:.1} µs p99 {o99:.1} µs | ratio {:.2} | token exchanges during the run: {exchanges}",
        o50 / i50
    );
    table.push([
        "keep-alive GET: oauth-client-credentials (cached token) vs inject-header".into(),
        format!("p50 {i50:.0} µs / p99 {i99:.0} µs"),
        format!("p50 {o50:.0} µs / p99 {o99:.0} µs"),
        format!(
            "p50 ratio {:.2}; token exchanges while measuring: {exchanges}",
            o50 / i50
        ),
    ]);
    rows.push(
        serde_json::json!({"scenario": "oauth cached token vs inject-header",
        "inject_p50_us": i50, "inject_p99_us": i99, "oauth_p50_us": o50, "oauth_p99_us": o99,
        "p50_ratio": o50 / i50, "token_exchanges": exchanges}),
    );
}

/// Download with a secret injected (echo guard on every byte) vs no handler.
fn echo_guard_download(live: &Live, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let (s, topo) = (live.s, live.s.topo);
    let (mut plain, mut guarded) = (vec![], vec![]);
    for _ in 0..s.rounds.min(3) {
        plain.push(download_speed(
            &topo.sbx,
            "allowed.test",
            "allowed.test",
            s.download,
        ));
        guarded.push(download_speed(
            &topo.sbx,
            "secret.test",
            "secret.test",
            s.download,
        ));
    }
    let (p, g) = (median(plain), median(guarded));
    let mib = s.download >> 20;
    println!(
        "{mib} MiB download through egret: no handler {p:.0} MiB/s, secret injected (echo guard) {g:.0} MiB/s (ratio {:.2})",
        g / p
    );
    table.push([
        format!("{mib} MiB download: secret injected + echo guard vs no handler"),
        format!("{p:.0} MiB/s"),
        format!("{g:.0} MiB/s"),
        format!("ratio {:.2}", g / p),
    ]);
    rows.push(
        serde_json::json!({"scenario": format!("{mib} MiB download, secret injected vs none"),
        "no_handler_mib_s": p, "secret_mib_s": g, "ratio": g / p}),
    );
}

/// Head-only handler cost, an earlier egret build (A) against this one (B): the same WIT 0.1.0
/// module and policy, egret restarted for each side of each round.
fn baseline_ab(s: &Setup, baseline: &Path, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let topo = s.topo;
    let policy = format!(
        "internet = false\nallowed_hosts = [\"v1.test\"]\n[resolve]\n{}\n[secrets]\nTOKEN = {{ env = \"BENCH_TOKEN\" }}\n{}",
        resolve(&["v1.test"]),
        v1_binding()
    );
    let policy_file = write(topo, "bench-v1.toml", &policy);
    let ca = topo.tmp.path("ab-ca.pem").to_string_lossy().into_owned();
    let args = [
        "--policy",
        &policy_file,
        "--ca-out",
        &ca,
        "--upstream-ca",
        s.upstream_ca.to_str().unwrap(),
    ];
    let env = [("BENCH_TOKEN", "bench-token-value")];
    let this = bin("egret");
    let (mut a, mut b) = (vec![], vec![]);
    for _ in 0..s.rounds {
        for (program, out) in [(baseline, &mut a), (this.as_path(), &mut b)] {
            let egret = Egret::start_program(program, topo, "bench-ab", &args, &env)
                .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
            out.push(run_client(
                &topo.sbx,
                &["https", "v1.test", "v1.test", s.requests, &ca],
            ));
            drop(egret);
            wait_released(topo);
        }
    }
    let p = |v: &[(f64, f64)]| {
        (
            median(v.iter().map(|x| x.0).collect()),
            median(v.iter().map(|x| x.1).collect()),
        )
    };
    let ((a50, a99), (b50, b99)) = (p(&a), p(&b));
    println!(
        "head-only handler (v1-inject-header): {} p50 {a50:.1} µs p99 {a99:.1} µs | this build p50 {b50:.1} µs p99 {b99:.1} µs | ratio {:.2}",
        baseline.display(),
        b50 / a50
    );
    table.push([
        "keep-alive HTTPS + head-only handler: baseline build (A) vs this build (B)".into(),
        format!("p50 {a50:.0} µs / p99 {a99:.0} µs"),
        format!("p50 {b50:.0} µs / p99 {b99:.0} µs"),
        format!("p50 ratio {:.2}", b50 / a50),
    ]);
    rows.push(
        serde_json::json!({"scenario": "head-only handler, baseline build vs this build",
        "baseline": baseline.display().to_string(), "baseline_p50_us": a50, "baseline_p99_us": a99,
        "this_p50_us": b50, "this_p99_us": b99, "p50_ratio": b50 / a50}),
    );
}

/// The language bench's hosts: `inject-header` in Rust, TypeScript and Python, each with a
/// fresh instance per request (`rust`, `ts`, `py`) and with `instances = "reuse"`.
pub(crate) const LANG_HOSTS: [&str; 6] = [
    "rust.test",
    "ts.test",
    "py.test",
    "rust-reuse.test",
    "ts-reuse.test",
    "py-reuse.test",
];

/// `inject-header` in Rust, TypeScript and Python on [`LANG_HOSTS`].
fn languages_policy(ts: &Path, py: &Path) -> String {
    let mut toml = format!(
        "internet = false\nallowed_hosts = {LANG_HOSTS:?}\n[resolve]\n{}\n[secrets]\nTOKEN = {{ env = \"BENCH_TOKEN\" }}\n",
        resolve(&LANG_HOSTS)
    );
    let modules = [
        ("rust", handler_module("inject-header")),
        ("ts", ts.to_string_lossy().into_owned()),
        ("py", py.to_string_lossy().into_owned()),
    ];
    for (reuse, suffix) in [(false, ""), (true, "-reuse")] {
        for (lang, module) in &modules {
            let name = format!("{lang}{suffix}");
            let instances = if reuse { "instances = \"reuse\"\n" } else { "" };
            toml.push_str(&format!(
                "[handlers.{name}]\nmodule = \"{module}\"\n{instances}params = {{ header = \"x-auth-token\", secret = \"TOKEN\" }}\nsecrets = [\"TOKEN\"]\n[[routes]]\nhost = \"{name}.test\"\nhandler = \"{name}\"\n"
            ));
        }
    }
    toml
}

/// The same handler in three languages: what TypeScript and Python add per request.
pub(crate) fn run_languages(s: &Setup, table: &mut Table, rows: &mut Vec<serde_json::Value>) {
    let topo = s.topo;
    // Built (and compiled into the shared artifact cache) before egret starts: see lang_handler.
    let ts = lang_handler("handlers-wasm/ts/inject-header.ts");
    let py = lang_handler("handlers-wasm/py/inject_header.py");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
    let rust_module = std::path::PathBuf::from(handler_module("inject-header"));
    let (rs_mb, ts_mb, py_mb) = (size(&rust_module), size(&ts), size(&py));
    let cache = lang_artifact_dir();
    let started = std::time::Instant::now();
    let (egret, ca) = Egret::start_intercepting(
        topo,
        "bench-languages",
        &languages_policy(&ts, &py),
        s.upstream_ca,
        &["--handler-cache-dir", &cache],
        &[("BENCH_TOKEN", "bench-token-value")],
    )
    .unwrap();
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
    for host in LANG_HOSTS {
        let (_, echo, err) = topo.curl(&["--cacert", &ca, &format!("https://{host}/echo")]);
        assert!(
            echo.contains("\"x-auth-token\""),
            "{host}: the handler did not inject: {echo} {err}\n{}",
            egret.logs()
        );
    }
    let n = s.requests;
    let clients: Vec<Vec<&str>> = LANG_HOSTS
        .iter()
        .map(|h| vec!["https", *h, *h, n, &ca])
        .collect();
    let r = interleaved(&topo.sbx, s.rounds, &clients);
    let ((r50, r99), (t50, t99), (p50, p99)) = (r[0], r[1], r[2]);
    let ((rr50, rr99), (tr50, tr99), (pr50, pr99)) = (r[3], r[4], r[5]);
    println!(
        "inject-header fresh instance: Rust p50 {r50:.0} µs p99 {r99:.0} µs | TypeScript p50 {t50:.0} µs p99 {t99:.0} µs | Python p50 {p50:.0} µs p99 {p99:.0} µs | sizes {rs_mb:.2} / {ts_mb:.1} / {py_mb:.1} MiB | egret start-up with the 6 bindings cached {startup_ms:.0} ms"
    );
    println!(
        "inject-header instances = \"reuse\": Rust p50 {rr50:.0} µs p99 {rr99:.0} µs | TypeScript p50 {tr50:.0} µs p99 {tr99:.0} µs | Python p50 {pr50:.0} µs p99 {pr99:.0} µs"
    );
    for (lang, x50, x99, mb) in [("TypeScript", t50, t99, ts_mb), ("Python", p50, p99, py_mb)] {
        table.push([
            format!("keep-alive GET: inject-header in {lang} vs Rust (fresh instance each)"),
            format!("p50 {r50:.0} µs / p99 {r99:.0} µs ({rs_mb:.2} MiB)"),
            format!("p50 {x50:.0} µs / p99 {x99:.0} µs ({mb:.1} MiB)"),
            format!("added p50 {:.0} µs, p99 {:.0} µs", x50 - r50, x99 - r99),
        ]);
    }
    for (lang, f50, f99, x50, x99) in [
        ("Rust", r50, r99, rr50, rr99),
        ("TypeScript", t50, t99, tr50, tr99),
        ("Python", p50, p99, pr50, pr99),
    ] {
        table.push([
            format!(
                "keep-alive GET: inject-header in {lang}, fresh instance vs instances = \"reuse\""
            ),
            format!("p50 {f50:.0} µs / p99 {f99:.0} µs"),
            format!("p50 {x50:.0} µs / p99 {x99:.0} µs"),
            format!(
                "reuse saves p50 {:.0} µs, p99 {:.0} µs",
                f50 - x50,
                f99 - x99
            ),
        ]);
    }
    rows.push(serde_json::json!({"scenario": "inject-header in Rust, TypeScript, Python",
        "rust_p50_us": r50, "rust_p99_us": r99, "ts_p50_us": t50, "ts_p99_us": t99,
        "py_p50_us": p50, "py_p99_us": p99, "ts_added_p50_us": t50 - r50, "py_added_p50_us": p50 - r50,
        "rust_reuse_p50_us": rr50, "rust_reuse_p99_us": rr99, "ts_reuse_p50_us": tr50, "ts_reuse_p99_us": tr99,
        "py_reuse_p50_us": pr50, "py_reuse_p99_us": pr99,
        "rust_mib": rs_mb, "ts_mib": ts_mb, "py_mib": py_mb, "startup_cached_ms": startup_ms}));
    drop(egret);
    wait_released(topo);
}

//! Policy matching with 10k rules: the per-connection and per-request decisions egret makes
//! (`evaluate`, `tls_decision`, `dns_decision`), against a policy of 10 000 exact host rules
//! plus wildcards, CIDRs and a 10 000-host route. `cargo bench -p egret-policy`.
use std::hint::black_box;
use std::sync::OnceLock;

use egret_policy::{CompiledPolicy, Destination, PolicyConfig, RuntimeLayer};

fn main() {
    divan::main();
}

const RULES: usize = 10_000;

fn policy() -> &'static CompiledPolicy {
    static POLICY: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut src = String::from("allowed_hosts = [\"*.github.test\", \"10.0.0.0/8\", \"fd00::/16\", \"api-*.svc.test\", \"*:8443\"");
        for i in 0..RULES {
            src.push_str(&format!(", \"host{i}.allowed.test\""));
        }
        src.push_str(
            r#"]
denied_hosts = ["evil.github.test", "10.66.0.0/16:22"]
passthrough_hosts = ["pinned.github.test"]
[handlers.h]
module = "h.wasm"
"#,
        );
        src.push_str("[[routes]]\nhandler = \"h\"\nhosts = [\"*.vcs.github.test\"");
        for i in 0..RULES {
            src.push_str(&format!(", \"svc{i}.github.test\""));
        }
        src.push_str("]\n");
        let cfg = PolicyConfig::from_toml(&src, "bench.toml").expect("bench policy parses");
        CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1).expect("bench policy compiles")
    })
}

/// The kinds of destination a request can have, one per bench argument.
const CASES: &[&str] = &[
    "exact allow (last of 10k)",
    "route host (last of 10k)",
    "wildcard route",
    "glob allow",
    "denied",
    "no match",
    "ipv4 in cidr",
    "ipv6 in cidr",
];

fn destination(case: &str) -> Destination<'static> {
    match case {
        "exact allow (last of 10k)" => Destination::host("host9999.allowed.test", 443),
        "route host (last of 10k)" => Destination::host("svc9999.github.test", 443),
        "wildcard route" => Destination::host("a.b.vcs.github.test", 443),
        "glob allow" => Destination::host("api-7.svc.test", 443),
        "denied" => Destination::host("evil.github.test", 443),
        "no match" => Destination::host("nope.example.test", 443),
        "ipv4 in cidr" => Destination::ip("10.1.2.3".parse().unwrap(), 443),
        "ipv6 in cidr" => Destination::ip("fd00::5".parse().unwrap(), 443),
        other => unreachable!("unknown case {other}"),
    }
}

#[divan::bench(args = CASES)]
fn evaluate(bencher: divan::Bencher, case: &str) {
    let p = policy();
    let d = destination(case);
    bencher.bench(|| p.evaluate(black_box(&d)));
}

#[divan::bench(args = CASES)]
fn tls_decision(bencher: divan::Bencher, case: &str) {
    let p = policy();
    let d = destination(case);
    bencher.bench(|| p.tls_decision(black_box(&d)));
}

#[divan::bench(args = ["host9999.allowed.test", "svc9999.github.test", "nope.example.test"])]
fn dns_decision(bencher: divan::Bencher, name: &str) {
    let p = policy();
    bencher.bench(|| p.dns_decision(black_box(name)));
}

/// Compiling the 10k-rule policy: what a policy swap pays before the new generation is in force.
#[divan::bench(sample_count = 10)]
fn compile_10k(bencher: divan::Bencher) {
    let cfg = policy().config().clone();
    bencher
        .bench(|| CompiledPolicy::compile(black_box(&cfg), &RuntimeLayer::default(), 2).unwrap());
}

/// One host with 100 request rules (`[[routes]]` with methods and paths), none matching
/// before the last: what deciding one request costs when a host's rules are many.
fn rules_100() -> &'static CompiledPolicy {
    static POLICY: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut src = String::new();
        for i in 0..100 {
            src.push_str(&format!(
                "[[routes]]\nhost = \"api.test\"\nmethods = [\"GET\", \"HEAD\"]\n\
                 paths = [\"/v{i}/repos/*/info/**\", \"/v{i}/**/git-upload-pack\"]\n"
            ));
        }
        let cfg = PolicyConfig::from_toml(&src, "rules.toml").expect("rules policy parses");
        CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1).expect("rules policy compiles")
    })
}

/// The request each case asks about: method, path, query.
const REQUESTS: &[&str] = &[
    "last of 100 matches",
    "none of 100 (denied)",
    "non-canonical path, last matches",
];

#[divan::bench(args = REQUESTS)]
fn evaluate_request_100_rules(bencher: divan::Bencher, case: &str) {
    let p = rules_100();
    let d = Destination::host("api.test", 443);
    let (method, path) = match case {
        "last of 100 matches" => ("GET", "/v99/repos/x/info/refs"),
        "none of 100 (denied)" => ("POST", "/v99/repos/x/git-receive-pack"),
        "non-canonical path, last matches" => ("GET", "/v99//repos/x/./info/refs"),
        other => unreachable!("unknown case {other}"),
    };
    let v = p.evaluate_request(&d, method, path, Some("service=git-upload-pack"));
    assert_eq!(v.is_deny(), case.starts_with("none"), "{case}: {v:?}");
    bencher.bench(|| {
        p.evaluate_request(
            black_box(&d),
            black_box(method),
            black_box(path),
            Some("service=git-upload-pack"),
        )
    });
}

/// What a loaded shadow candidate adds to a request (`egret ctl policy shadow`): the
/// candidate's decision (TLS, then the 100 rules), the live verdict described, the comparison,
/// and for a difference its row in the report. The live verdict itself is not counted.
#[divan::bench(args = ["same decision", "differs (recorded)"])]
fn shadow_compare_100_rules(bencher: divan::Bencher, case: &str) {
    use egret_policy::{differs, ShadowReport};
    static OPEN: OnceLock<CompiledPolicy> = OnceLock::new();
    let live = rules_100();
    let candidate = match case {
        "same decision" => rules_100(),
        _ => OPEN.get_or_init(|| {
            let cfg = PolicyConfig::from_toml("allowed_hosts = [\"api.test\"]\n", "open.toml")
                .expect("open policy parses");
            CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1).expect("compiles")
        }),
    };
    let d = Destination::host("api.test", 443);
    let (method, path) = ("POST", "/v99/repos/x/git-receive-pack");
    let verdict = live.evaluate_request(&d, method, path, None);
    let mut report = ShadowReport::default();
    bencher.bench_local(|| {
        let shadow = candidate.decide(black_box(&d), true, black_box(method), path, None);
        let l = live.describe(verdict.clone());
        if differs(&l, &shadow) {
            report.record("api.test", method, path, &l, &shadow, 1);
        }
    });
    assert_eq!(
        report.summary().differences > 0,
        case.starts_with("differs"),
        "{case}"
    );
}

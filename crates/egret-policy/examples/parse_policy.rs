//! Parses a full policy (the file given as the first argument, or examples/policy.toml),
//! compiles it, prints its warnings, and shows the decisions for a few destinations.
//!
//! `cargo run -p egret-policy --example parse_policy [policy.toml]`

use egret_policy::{CompiledPolicy, Destination, PolicyConfig, RuntimeLayer, VerdictAction};

/// The repository's annotated example policy.
const POLICY: &str = include_str!("../../../examples/policy.toml");

fn main() {
    // The example itself may read a file; the library never does.
    let (src, origin) = match std::env::args().nth(1) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(s) => (s, path),
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(2);
            }
        },
        None => (POLICY.to_owned(), "<embedded>".to_owned()),
    };
    let policy = PolicyConfig::from_toml(&src, &origin)
        .and_then(|cfg| CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1));
    let policy = match policy {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    for w in policy.warnings() {
        println!("warning: {w}");
    }
    for (host, port) in [
        ("vcs.test", 443),
        ("api.github.test", 443),
        ("evil.test", 443),
        ("db.test", 5432),
        ("db.test", 80),
        ("elsewhere.example", 443),
    ] {
        let v = policy.evaluate(&Destination::host(host, port));
        let action = match v.action {
            VerdictAction::Handler(id) => format!("handler {}", policy.binding(id).handler),
            a => format!("{a:?}"),
        };
        let dest = format!("{host}:{port}");
        println!("{dest:<24} -> {action:<16} ({})", v.rule);
    }
    println!("pinned allowed.test: {:?}", policy.pinned("allowed.test"));
}

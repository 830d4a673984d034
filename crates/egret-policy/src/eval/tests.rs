//! Tests of compilation (every validation problem) and of the evaluation order: one test per
//! level proving it takes precedence over the next.

use super::*;
use crate::config::{BindingConfig, HandlerConfig, ResolveAddrs, RouteAction, RouteConfig};
use crate::error::PolicyError;
use serde_json::json;

fn handlers(names: &[&str]) -> BTreeMap<String, HandlerConfig> {
    names
        .iter()
        .map(|n| (n.to_string(), HandlerConfig::new(format!("{n}.wasm"))))
        .collect()
}

/// A policy where every level can match `x.test`, to knock levels out one by one.
fn layered() -> (PolicyConfig, RuntimeLayer) {
    let cfg = PolicyConfig {
        internet: true,
        allowed_hosts: vec!["x.test".into(), "other.test".into()],
        denied_hosts: vec!["x.test".into()],
        outbound: Some(BindingConfig::new("static-out")),
        handlers: handlers(&["static-route", "static-out", "rt-route", "rt-out"]),
        routes: vec![RouteConfig::new(["x.test"], "static-route")],
        ..PolicyConfig::default()
    };
    let rt = RuntimeLayer {
        outbound: Some(BindingConfig::new("rt-out")),
        routes: vec![RouteConfig::new(["x.test"], "rt-route")],
    };
    (cfg, rt)
}

fn compile(cfg: &PolicyConfig, rt: &RuntimeLayer) -> CompiledPolicy {
    CompiledPolicy::compile(cfg, rt, 7).unwrap_or_else(|e| panic!("{e}"))
}

fn eval_host(p: &CompiledPolicy, host: &str, port: u16) -> (String, String) {
    let v = p.evaluate(&Destination::host(host, port));
    let what = match v.action {
        VerdictAction::Deny => "deny".to_owned(),
        VerdictAction::Allow => "allow".to_owned(),
        VerdictAction::Handler(id) => format!("handler {}", p.binding(id).handler),
        VerdictAction::Rules(_) => "rules".to_owned(),
    };
    (what, v.rule.to_string())
}

fn problems(cfg: &PolicyConfig, rt: &RuntimeLayer) -> Vec<Problem> {
    match CompiledPolicy::compile(cfg, rt, 1) {
        Err(PolicyError::Invalid(p)) => p,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("policy should be invalid"),
    }
}

fn find<'a>(ps: &'a [Problem], path: &str) -> &'a Problem {
    ps.iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}: {ps:#?}"))
}

#[test]
fn level1_denied_beats_allowed_and_everything_else() {
    let (cfg, rt) = layered();
    let p = compile(&cfg, &rt);
    assert_eq!(
        eval_host(&p, "x.test", 443),
        ("deny".into(), r#"denied_hosts "x.test""#.into())
    );
}

#[test]
fn level2_allowed_gate_beats_routes_and_catch_alls() {
    let (mut cfg, mut rt) = layered();
    cfg.denied_hosts.clear();
    rt.routes.push(RouteConfig::new(["gated.test"], "rt-route"));
    cfg.routes
        .push(RouteConfig::new(["gated.test"], "static-route"));
    let p = compile(&cfg, &rt);
    assert_eq!(
        eval_host(&p, "gated.test", 443),
        ("deny".into(), "not in allowed_hosts".into())
    );
}

#[test]
fn level3_runtime_route_beats_static_route() {
    let (mut cfg, rt) = layered();
    cfg.denied_hosts.clear();
    let p = compile(&cfg, &rt);
    assert_eq!(
        eval_host(&p, "x.test", 443),
        (
            "handler rt-route".into(),
            r#"runtime.routes[0] "x.test" -> rt-route"#.into()
        )
    );
}

#[test]
fn level4_static_route_beats_runtime_catch_all() {
    let (mut cfg, mut rt) = layered();
    cfg.denied_hosts.clear();
    rt.routes.clear();
    let p = compile(&cfg, &rt);
    assert_eq!(
        eval_host(&p, "x.test", 443),
        (
            "handler static-route".into(),
            r#"routes[0] "x.test" -> static-route"#.into()
        )
    );
}

#[test]
fn level5_runtime_catch_all_beats_static_catch_all() {
    let (mut cfg, mut rt) = layered();
    cfg.denied_hosts.clear();
    cfg.routes.clear();
    rt.routes.clear();
    let p = compile(&cfg, &rt);
    assert_eq!(
        eval_host(&p, "x.test", 443),
        ("handler rt-out".into(), "runtime.outbound -> rt-out".into())
    );
}

#[test]
fn level6_static_catch_all_beats_allowed_fallback() {
    let (mut cfg, mut rt) = layered();
    cfg.denied_hosts.clear();
    cfg.routes.clear();
    rt = RuntimeLayer {
        routes: rt.routes,
        ..RuntimeLayer::default()
    };
    rt.routes.clear();
    let p = compile(&cfg, &rt);
    assert_eq!(
        eval_host(&p, "x.test", 443),
        ("handler static-out".into(), "outbound -> static-out".into())
    );
}

#[test]
fn level7_allowed_fallback_beats_internet_flag() {
    let (mut cfg, _) = layered();
    cfg.denied_hosts.clear();
    cfg.routes.clear();
    cfg.outbound = None;
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(
        eval_host(&p, "x.test", 443),
        ("allow".into(), r#"allowed_hosts "x.test""#.into())
    );
}

#[test]
fn level8_internet_flag_beats_default_deny() {
    let cfg = PolicyConfig {
        internet: true,
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(
        eval_host(&p, "any.test", 443),
        ("allow".into(), "internet = true".into())
    );
    let v = p.evaluate(&Destination::ip("192.0.2.1".parse().unwrap(), 22));
    assert_eq!(v.action, VerdictAction::Allow);
}

#[test]
fn level9_default_deny() {
    let p = compile(&PolicyConfig::default(), &RuntimeLayer::default());
    assert_eq!(
        eval_host(&p, "any.test", 443),
        ("deny".into(), "default deny (internet = false)".into())
    );
}

#[test]
fn routes_not_matching_fall_through_to_catch_alls() {
    let (mut cfg, rt) = layered();
    cfg.denied_hosts.clear();
    let p = compile(&cfg, &rt);
    assert_eq!(eval_host(&p, "other.test", 443).0, "handler rt-out");
}

#[test]
fn denied_port_specific_only_denies_that_port() {
    let cfg = PolicyConfig {
        internet: true,
        denied_hosts: vec!["db.test:5432".into(), "10.0.0.0/8".into()],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(eval_host(&p, "db.test", 5432).0, "deny");
    assert_eq!(eval_host(&p, "db.test", 443).0, "allow");
    let mapped = Destination::ip("::ffff:10.1.2.3".parse().unwrap(), 80);
    assert_eq!(
        &*p.evaluate(&mapped).rule,
        r#"denied_hosts "10.0.0.0/8""#,
        "IPv4-mapped IPv6 must not bypass an IPv4 deny"
    );
    let literal = Destination {
        host: Some("10.1.2.3"),
        ip: Some("192.0.2.1".parse().unwrap()),
        port: 80,
    };
    assert!(p.evaluate(&literal).is_deny());
}

#[test]
fn most_specific_route_in_a_layer_wins() {
    let cfg = PolicyConfig {
        handlers: handlers(&["wide", "narrow"]),
        routes: vec![
            RouteConfig::new(["*.vcs.test"], "wide"),
            RouteConfig::new(["api.vcs.test"], "narrow"),
        ],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(eval_host(&p, "api.vcs.test", 443).0, "handler narrow");
    assert_eq!(eval_host(&p, "git.vcs.test", 443).0, "handler wide");
    assert_eq!(eval_host(&p, "vcs.test", 443).0, "deny");
}

#[test]
fn bindings_carry_params_grants_and_limits() {
    let mut hs = handlers(&["inject"]);
    let h = hs.get_mut("inject").unwrap();
    h.params = Some(json!({"header": "x-default"}));
    h.secrets = vec!["A".into(), "B".into()];
    h.reveal = vec!["B".into()];
    h.timeout_ms = 120;
    h.memory_mb = 32;
    let mut route = RouteConfig::new(["own.test"], "inject");
    route.params = Some(json!({"header": "x-route"}));
    let cfg = PolicyConfig {
        handlers: hs,
        routes: vec![route, RouteConfig::new(["default.test"], "inject")],
        secrets: [("A".to_owned(), SecretSource::Env("A".into()))].into(),
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    let bind = |host| match p.evaluate(&Destination::host(host, 443)).action {
        VerdictAction::Handler(id) => p.binding(id).clone(),
        a => panic!("{a:?}"),
    };
    let own = bind("own.test");
    assert_eq!(
        &*own.params_json, r#"{"header":"x-route"}"#,
        "route params replace"
    );
    assert_eq!(&*own.module, "inject.wasm");
    assert_eq!(own.timeout, Duration::from_millis(120));
    assert_eq!(own.memory_bytes, 32 * 1024 * 1024);
    assert_eq!(
        own.grants.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["A", "B"]
    );
    assert_eq!(own.reveal.iter().map(|s| &**s).collect::<Vec<_>>(), ["B"]);
    assert_eq!(
        &*bind("default.test").params_json,
        r#"{"header":"x-default"}"#
    );
    assert_eq!(p.bindings().len(), 2);
    // B is granted but has no source: a warning, not an error.
    assert_eq!(p.warnings().len(), 1);
    let w = &p.warnings()[0];
    assert_eq!(w.path, "handlers.inject.secrets[1]");
    assert_eq!(w.value, "B");
    assert!(w.hint.as_ref().unwrap().contains("[secrets]"));
}

#[test]
fn params_default_to_null() {
    let cfg = PolicyConfig {
        handlers: handlers(&["h"]),
        outbound: Some(BindingConfig::new("h")),
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(&*p.bindings()[0].params_json, "null");
}

#[test]
fn reports_every_problem_at_once() {
    let mut hs = handlers(&["ok"]);
    let mut bad = HandlerConfig::new(" ");
    bad.timeout_ms = 0;
    bad.memory_mb = 4096;
    bad.secrets = vec!["S".into(), "bad name".into()];
    bad.reveal = vec!["S".into(), "T".into()];
    hs.insert("bad".into(), bad);
    hs.insert("no/slash".into(), HandlerConfig::new("x.wasm"));
    let cfg = PolicyConfig {
        allowed_hosts: vec!["ok.test".into(), "a..b".into()],
        denied_hosts: vec!["10.0.0.1/8".into()],
        passthrough_hosts: vec!["".into()],
        outbound: Some(BindingConfig::new("nope")),
        handlers: hs,
        routes: vec![
            RouteConfig::new(["r.test"], "ok"),
            RouteConfig::new(Vec::<String>::new(), "ok"),
            RouteConfig::new(["ok.test", "x:0"], "missing"),
        ],
        resolve: [
            ("pin.test".to_owned(), ResolveAddrs::One("not-an-ip".into())),
            (
                "*.glob.test".to_owned(),
                ResolveAddrs::Many(vec!["10.0.0.1".into()]),
            ),
            ("empty.test".to_owned(), ResolveAddrs::Many(vec![])),
        ]
        .into(),
        secrets: [
            ("bad secret".to_owned(), SecretSource::Env("X".into())),
            ("EMPTY".to_owned(), SecretSource::File("".into())),
        ]
        .into(),
        ..PolicyConfig::default()
    };
    let rt = RuntimeLayer {
        outbound: Some(BindingConfig::new("gone")),
        routes: vec![RouteConfig::new(["*.."], "ok")],
    };
    let ps = problems(&cfg, &rt);

    let p = find(&ps, "allowed_hosts[1]");
    assert_eq!(p.value, "a..b");
    assert!(p.message.contains("empty label"), "{p}");
    let p = find(&ps, "denied_hosts[0]");
    assert!(p.message.contains("`10.0.0.1/8`"), "{p}");
    assert_eq!(p.hint.as_deref(), Some("did you mean `10.0.0.0/8`?"));
    find(&ps, "passthrough_hosts[0]");
    let p = find(&ps, "outbound");
    assert_eq!(p.value, "nope");
    let hint = p.hint.as_deref().unwrap();
    assert!(
        hint.contains("defined handlers: bad, no/slash, ok"),
        "{hint}"
    );
    find(&ps, "runtime.outbound");
    find(&ps, "runtime.routes[0].hosts[0]");
    find(&ps, "routes[1].hosts");
    let p = find(&ps, "routes[2].handler");
    assert_eq!(p.value, "missing");
    let p = find(&ps, "routes[2].hosts[1]");
    assert!(p.message.contains("`x:0`"), "{p}");
    let p = find(&ps, r#"handlers."no/slash""#);
    assert!(p.hint.as_deref().unwrap().contains("1 to 64"), "{p}");
    find(&ps, "handlers.bad.module");
    let p = find(&ps, "handlers.bad.timeout_ms");
    assert_eq!(p.value, "0");
    assert!(p.hint.as_deref().unwrap().contains("1..=10000"));
    let p = find(&ps, "handlers.bad.memory_mb");
    assert!(p.hint.as_deref().unwrap().contains("1..=1024"));
    let p = find(&ps, "handlers.bad.secrets[1]");
    assert!(p.message.contains("invalid secret name"));
    let p = find(&ps, "handlers.bad.reveal[1]");
    assert_eq!(p.value, "T");
    assert!(p.hint.as_deref().unwrap().contains("handlers.bad.secrets"));
    assert!(ps.iter().all(|p| p.path != "handlers.bad.reveal[0]"));
    let p = find(&ps, r#"resolve."pin.test"[0]"#);
    assert_eq!(p.value, "not-an-ip");
    let p = find(&ps, r#"resolve."*.glob.test""#);
    assert!(p.message.contains("plain host name"), "{p}");
    find(&ps, r#"resolve."empty.test""#);
    find(&ps, r#"secrets."bad secret""#);
    find(&ps, "secrets.EMPTY.file");
    assert_eq!(ps.len(), 20, "{ps:#?}");

    let shown = PolicyError::Invalid(ps).to_string();
    assert!(
        shown.starts_with("invalid policy (20 problems):"),
        "{shown}"
    );
}

#[test]
fn no_handlers_hint() {
    let cfg = PolicyConfig {
        outbound: Some(BindingConfig::new("get-only")),
        ..PolicyConfig::default()
    };
    let ps = problems(&cfg, &RuntimeLayer::default());
    assert!(ps[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("add a [handlers.get-only] table"));
}

#[test]
fn warns_about_passthrough_routes_and_shadowed_routes() {
    let cfg = PolicyConfig {
        passthrough_hosts: vec!["pinned.test".into()],
        handlers: handlers(&["h"]),
        routes: vec![
            RouteConfig::new(["Pinned.test."], "h"),
            RouteConfig::new(["pinned.test"], "h"),
        ],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    let paths: Vec<&str> = p.warnings().iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        // The two routes name one pattern, which is spliced once.
        ["routes[1].hosts[0]", "passthrough_hosts[0]"]
    );
    assert!(p.warnings()[0].message.contains("routes[0].hosts[0]"));
    assert!(p.warnings()[1].message.contains("spliced"));
}

#[test]
fn tls_decisions() {
    let cfg = PolicyConfig {
        allowed_hosts: vec!["*.test".into()],
        denied_hosts: vec!["evil.test".into()],
        passthrough_hosts: vec!["pinned.test".into(), "routed-pinned.test".into()],
        handlers: handlers(&["h"]),
        routes: vec![RouteConfig::new(["routed.test", "routed-pinned.test"], "h")],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    let tls = |h| p.tls_decision(&Destination::host(h, 443));
    assert!(matches!(tls("evil.test"), TlsDecision::Refuse(_)));
    assert!(matches!(tls("outside.example"), TlsDecision::Refuse(_)));
    assert!(matches!(tls("pinned.test"), TlsDecision::Passthrough(_)));
    let d = tls("routed-pinned.test");
    assert!(matches!(d, TlsDecision::Passthrough(_)), "{d:?}");
    assert!(matches!(d.verdict().action, VerdictAction::Handler(_)));
    assert!(matches!(tls("routed.test"), TlsDecision::Intercept(_)));
    assert!(matches!(tls("plain.test"), TlsDecision::Intercept(_)));

    let mut cfg = cfg;
    cfg.intercept_https = false;
    let p = compile(&cfg, &RuntimeLayer::default());
    let tls = |h| p.tls_decision(&Destination::host(h, 443));
    assert!(!p.intercept_https());
    assert!(matches!(tls("plain.test"), TlsDecision::Passthrough(_)));
    assert!(
        matches!(tls("routed.test"), TlsDecision::Intercept(_)),
        "a handler must see requests even without intercept_https"
    );
    assert!(matches!(tls("evil.test"), TlsDecision::Refuse(_)));
}

fn nx(p: &CompiledPolicy, name: &str) -> Option<String> {
    match p.dns_decision(name) {
        DnsDecision::Answer => None,
        DnsDecision::NxDomain { rule } => Some(rule.to_string()),
    }
}

#[test]
fn dns_denied_only_when_every_port_is_denied() {
    let cfg = PolicyConfig {
        internet: true,
        denied_hosts: vec![
            "evil.test".into(),
            "db.test:5432".into(),
            "*.bad.test".into(),
        ],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(
        nx(&p, "evil.test").as_deref(),
        Some(r#"denied_hosts "evil.test""#)
    );
    assert_eq!(
        nx(&p, "EVIL.test.").as_deref(),
        Some(r#"denied_hosts "evil.test""#)
    );
    assert_eq!(
        nx(&p, "x.bad.test").as_deref(),
        Some(r#"denied_hosts "*.bad.test""#)
    );
    assert_eq!(nx(&p, "db.test"), None);
    assert_eq!(nx(&p, "fine.test"), None);
}

#[test]
fn dns_allowed_gate_applies_for_every_port() {
    let cfg = PolicyConfig {
        internet: true,
        allowed_hosts: vec!["db.test:5432".into()],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(nx(&p, "db.test"), None);
    assert_eq!(nx(&p, "web.test").as_deref(), Some("not in allowed_hosts"));
}

#[test]
fn dns_default_deny_unless_a_route_or_catch_all_could_match() {
    let cfg = PolicyConfig {
        handlers: handlers(&["h"]),
        routes: vec![RouteConfig::new(["api.test:8443"], "h")],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(nx(&p, "api.test"), None);
    assert_eq!(
        nx(&p, "other.test").as_deref(),
        Some("default deny (internet = false)")
    );
    let rt = RuntimeLayer {
        routes: vec![RouteConfig::new(["other.test"], "h")],
        ..RuntimeLayer::default()
    };
    assert_eq!(nx(&compile(&cfg, &rt), "other.test"), None);
    let rt = RuntimeLayer {
        outbound: Some(BindingConfig::new("h")),
        ..RuntimeLayer::default()
    };
    assert_eq!(nx(&compile(&cfg, &rt), "anything.test"), None);
    let mut with_static = cfg.clone();
    with_static.outbound = Some(BindingConfig::new("h"));
    assert_eq!(
        nx(
            &compile(&with_static, &RuntimeLayer::default()),
            "anything.test"
        ),
        None
    );
}

#[test]
fn pins_from_resolve_and_cli() {
    let cfg = PolicyConfig {
        resolve: [
            (
                "Allowed.test".to_owned(),
                ResolveAddrs::One("10.200.0.2".into()),
            ),
            (
                "v6.test".to_owned(),
                ResolveAddrs::Many(vec!["[fd00:200::2]".into(), "10.200.0.2".into()]),
            ),
        ]
        .into(),
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(p.pinned("allowed.test"), Some(&[ip("10.200.0.2")][..]));
    assert_eq!(
        p.pinned("v6.test"),
        Some(&[ip("fd00:200::2"), ip("10.200.0.2")][..])
    );
    assert_eq!(p.pinned("nope.test"), None);

    let pins = parse_pin_arg("V6.test.=[fd00::9]").unwrap();
    assert_eq!(pins, vec![("v6.test".to_owned(), ip("fd00::9"))]);
    let (h, a) = pins[0].clone();
    assert_eq!(
        parse_pin_arg("API.test=10.0.0.1, [fd00::1]").unwrap(),
        vec![
            ("api.test".to_owned(), ip("10.0.0.1")),
            ("api.test".to_owned(), ip("fd00::1")),
        ]
    );
    let p = p
        .with_extra_pins([
            (h, a),
            ("v6.test".to_owned(), ip("10.9.9.9")),
            ("new.test".to_owned(), ip("1.2.3.4")),
        ])
        .unwrap();
    assert_eq!(
        p.pinned("v6.test"),
        Some(&[ip("fd00::9"), ip("10.9.9.9")][..])
    );
    assert_eq!(p.pinned("allowed.test"), Some(&[ip("10.200.0.2")][..]));
    assert_eq!(p.pinned("new.test"), Some(&[ip("1.2.3.4")][..]));
    assert_eq!(p.pins().count(), 3);

    let e = p
        .clone()
        .with_extra_pins([("*.x", ip("1.1.1.1"))])
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "--resolve[0]");
    assert!(parse_pin_arg("nohost")
        .unwrap_err()
        .to_string()
        .contains("HOST=ADDR"));
    assert!(parse_pin_arg("a.test=xyz")
        .unwrap_err()
        .to_string()
        .contains("\"xyz\" is not an IP address"));
    assert!(parse_pin_arg("=1.2.3.4").is_err());
    assert!(parse_pin_arg("*.x=1.2.3.4")
        .unwrap_err()
        .to_string()
        .contains("plain host name"));
    assert!(parse_pin_arg("a.test:443=1.2.3.4")
        .unwrap_err()
        .to_string()
        .contains("no port"));
}

#[test]
fn accessors() {
    let cfg = PolicyConfig::from_toml(
        "[kv]\nk = \"v\"\n[secrets]\nS = { env = \"S\" }\n",
        "p.toml",
    )
    .unwrap();
    let rt = RuntimeLayer::default();
    let p = CompiledPolicy::compile(&cfg, &rt, 42).unwrap();
    assert_eq!(p.generation(), 42);
    assert_eq!(p.config(), &cfg);
    assert_eq!(p.runtime(), &rt);
    assert!(p.intercept_https());
    assert_eq!(p.kv_seed()["k"], "v");
    assert_eq!(p.secrets()["S"], SecretSource::Env("S".into()));
    assert!(p.warnings().is_empty());
}

#[test]
fn compiled_policy_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<CompiledPolicy>();
    check::<Verdict>();
}

#[test]
fn non_public_upstreams_need_an_explicit_allowance() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let p = compile(
        &PolicyConfig {
            allowed_hosts: vec!["*.allowed.test".into()],
            internet: true,
            ..PolicyConfig::default()
        },
        &RuntimeLayer::default(),
    );
    // nothing names them: every non-public address is refused, public ones are not
    for a in [
        "10.231.0.2",
        "::ffff:10.231.0.2",
        "100.64.1.1",
        "fd00::1",
        "127.0.0.1",
    ] {
        assert!(p.upstream_refusal(ip(a), 80).is_some(), "{a}");
    }
    assert_eq!(
        p.upstream_refusal(ip("10.231.0.2"), 80).unwrap().cidr,
        "10.0.0.0/8"
    );
    assert!(p.upstream_refusal(ip("11.200.0.2"), 80).is_none());
    assert!(!p.upstream_named(ip("11.200.0.2"), 80));

    let p = compile(
        &PolicyConfig {
            allowed_hosts: vec![
                "*.allowed.test".into(),
                "10.231.0.0/24:443".into(),
                "0.0.0.0/0:8080".into(),
                "*".into(),
            ],
            allowed_upstream_cidrs: vec!["fd00::/8".into(), "169.254.169.254".into()],
            handlers: handlers(&["h"]),
            routes: vec![RouteConfig::new(["172.16.5.5"], "h")],
            ..PolicyConfig::default()
        },
        &RuntimeLayer {
            routes: vec![RouteConfig::new(["192.168.7.0/24"], "h")],
            ..RuntimeLayer::default()
        },
    );
    // a CIDR in allowed_hosts allows its range, on its ports only
    assert!(p.upstream_refusal(ip("10.231.0.2"), 443).is_none());
    assert!(p.upstream_refusal(ip("::ffff:10.231.0.2"), 443).is_none());
    assert!(p.upstream_refusal(ip("10.231.0.2"), 80).is_some());
    assert!(p.upstream_refusal(ip("10.231.1.2"), 443).is_some());
    assert!(p.upstream_named(ip("10.231.0.2"), 443));
    // `*` is not an address pattern; a wide CIDR allows private ranges but never loopback or
    // link-local (those need allowed_upstream_cidrs)
    assert!(p.upstream_refusal(ip("192.168.1.1"), 80).is_some());
    assert!(p.upstream_refusal(ip("192.168.1.1"), 8080).is_none());
    assert!(p.upstream_refusal(ip("127.0.0.1"), 8080).is_some());
    assert!(p.upstream_refusal(ip("169.254.1.1"), 8080).is_some());
    // allowed_upstream_cidrs: any range, any port
    assert!(p.upstream_refusal(ip("fd00:200::2"), 1).is_none());
    assert!(p.upstream_refusal(ip("169.254.169.254"), 80).is_none());
    assert!(p.upstream_refusal(ip("169.254.169.253"), 80).is_some());
    // address patterns of static and runtime routes count too
    assert!(p.upstream_refusal(ip("172.16.5.5"), 80).is_none());
    assert!(p.upstream_refusal(ip("192.168.7.9"), 80).is_none());
}

#[test]
fn allowed_upstream_cidrs_must_be_addresses() {
    let err = CompiledPolicy::compile(
        &PolicyConfig {
            allowed_upstream_cidrs: vec![
                "10.0.0.0/8".into(),
                "db.internal".into(),
                "10.0.0.0/33".into(),
            ],
            ..PolicyConfig::default()
        },
        &RuntimeLayer::default(),
        1,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("allowed_upstream_cidrs[1]"), "{text}");
    assert!(text.contains("allowed_upstream_cidrs[2]"), "{text}");
    assert!(!text.contains("allowed_upstream_cidrs[0]"), "{text}");
    assert!(text.contains("not an IP address or CIDR network"), "{text}");
}

#[test]
fn handler_capabilities_compile_into_the_binding() {
    let cfg = PolicyConfig::from_toml(
        r#"
        outbound = "guard"
        [handlers.guard]
        module = "g.wasm"
        body = { max_bytes = 4096 }
        response = { mode = "observe" }
        fetch_hosts = ["auth.example.test", "*.tokens.test:443"]
        fetch = { max_calls = 2, timeout_ms = 800 }
        mint_secrets = ["ACCESS_TOKEN"]
        echo_guard = false
        instances = "reuse"
        "#,
        "p.toml",
    )
    .unwrap();
    let p = compile(&cfg, &RuntimeLayer::default());
    let b = &p.bindings()[0];
    assert_eq!(b.body_max, Some(4096));
    assert_eq!(b.response, Some((ResponseMode::Observe, 1 << 20)));
    let f = b.fetch.as_ref().unwrap();
    assert!(f.allows("auth.example.test", 443) && f.allows("a.tokens.test", 443));
    assert!(!f.allows("a.tokens.test", 80) && !f.allows("evil.test", 443));
    assert_eq!((f.max_calls, f.max_response_bytes), (2, 1 << 20));
    assert_eq!(f.timeout, Duration::from_millis(800));
    assert_eq!(&*b.mint, &[Arc::from("ACCESS_TOKEN")]);
    assert!(!b.echo_guard);
    assert!(b.reuse_instances);
    // defaults: nothing opted in, echo guard on, a fresh instance per request
    let cfg = PolicyConfig::from_toml("outbound = \"h\"\n[handlers.h]\nmodule = \"h.wasm\"\n", "p")
        .unwrap();
    let p = compile(&cfg, &RuntimeLayer::default());
    let b = &p.bindings()[0];
    assert!(b.body_max.is_none() && b.response.is_none() && b.fetch.is_none());
    assert!(b.echo_guard && b.mint.is_empty());
    assert!(!b.reuse_instances);
}

#[test]
fn bad_handler_capabilities_are_refused_with_their_paths() {
    let cfg = PolicyConfig::from_toml(
        r#"
        [secrets]
        TOKEN = { env = "T" }
        [handlers.h]
        module = "h.wasm"
        body = { max_bytes = 0 }
        response = { mode = "buffer", max_bytes = 999999999999 }
        fetch_hosts = ["bad host"]
        fetch = { max_calls = 0 }
        mint_secrets = ["TOKEN", "bad name"]
        "#,
        "p.toml",
    )
    .unwrap();
    let text = CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1)
        .unwrap_err()
        .to_string();
    for want in [
        "handlers.h.body.max_bytes",
        "handlers.h.response.max_bytes",
        "handlers.h.fetch_hosts[0]",
        "handlers.h.fetch.max_calls",
        "handlers.h.mint_secrets[0]",
        "handlers.h.mint_secrets[1]",
        "must not be one of [secrets]",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let e = PolicyConfig::from_toml(
        "[handlers.h]\nmodule = \"h\"\nresponse = { mode = \"sometimes\" }\n",
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("p.toml:3") && e.contains("sometimes"), "{e}");
    let e = PolicyConfig::from_toml(
        "[handlers.h]\nmodule = \"h\"\ninstances = \"pooled\"\n",
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("p.toml:3")
            && e.contains("unknown variant `pooled`, expected `fresh` or `reuse`"),
        "{e}"
    );
}

fn rules_policy(extra: &str) -> CompiledPolicy {
    let src = format!(
        r#"
{extra}
[handlers.h]
module = "h.wasm"

[[routes]]
host = "git.test"
methods = ["GET", "POST"]
paths = ["/**/info/refs", "/**/git-upload-pack"]

[[routes]]
host = "api.test"
methods = ["DELETE"]
action = "deny"
status = 405
message = "read-mostly"

[[routes]]
host = "api.test"
paths = ["/v1/**"]
handler = "h"

[[routes]]
hosts = ["api.test", "ro.test"]
methods = ["GET", "HEAD", "OPTIONS"]
"#
    );
    let cfg = PolicyConfig::from_toml(&src, "policy.toml").unwrap();
    compile(&cfg, &RuntimeLayer::default())
}

fn req(p: &CompiledPolicy, host: &str, method: &str, pq: &str) -> (String, String, Option<String>) {
    let (path, query) = match pq.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (pq, None),
    };
    let v = p.evaluate_request(&Destination::host(host, 443), method, path, query);
    let what = match &v.action {
        RequestAction::Allow => "allow".to_owned(),
        RequestAction::Deny { status, message } => {
            format!("deny {status} {}", message.as_deref().unwrap_or("-"))
        }
        RequestAction::Handler(id) => format!("handler {}", p.binding(*id).handler),
    };
    (
        what,
        v.rule.to_string(),
        v.would_deny.map(|r| r.to_string()),
    )
}

#[test]
fn request_rules_are_tried_in_file_order() {
    let p = rules_policy("");
    let (what, rule, _) = req(
        &p,
        "git.test",
        "GET",
        "/r.git/info/refs?service=git-upload-pack",
    );
    assert_eq!(what, "allow");
    assert_eq!(
        rule,
        r#"routes[0] "git.test" GET,POST "/**/info/refs","/**/git-upload-pack" -> allow"#
    );
    assert_eq!(
        req(&p, "git.test", "POST", "/r.git/git-upload-pack").0,
        "allow"
    );
    let (what, rule, _) = req(&p, "git.test", "POST", "/r.git/git-receive-pack");
    assert_eq!(what, "deny 403 -");
    assert!(
        rule.contains("no route for \"git.test\"") && rule.contains("routes[0]"),
        "{rule}"
    );
    // A spelling the server treats as the same path does not slip past.
    assert_eq!(
        req(&p, "git.test", "POST", "/r.git//git%2Dupload-pack").0,
        "allow"
    );
    assert_eq!(
        req(&p, "git.test", "PUT", "/r.git/info/refs").0,
        "deny 403 -"
    );

    // api.test: deny DELETE first, then the handler for /v1, then reads.
    let (what, rule, _) = req(&p, "api.test", "delete", "/v1/x");
    assert_eq!(what, "deny 405 read-mostly");
    assert!(
        rule.starts_with("routes[1] \"api.test\" DELETE -> deny"),
        "{rule}"
    );
    assert_eq!(req(&p, "api.test", "POST", "/v1/x").0, "handler h");
    assert_eq!(req(&p, "api.test", "GET", "/other").0, "allow");
    let (what, rule, _) = req(&p, "api.test", "POST", "/other");
    assert_eq!(what, "deny 403 -");
    assert!(rule.contains("routes[1], routes[2], routes[3]"), "{rule}");
    assert_eq!(req(&p, "ro.test", "HEAD", "/").0, "allow");
    // Hosts without request rules are decided as before.
    assert_eq!(req(&p, "other.test", "GET", "/").0, "deny 403 -");
}

#[test]
fn hosts_with_request_rules_are_intercepted_and_resolved() {
    let p = rules_policy("intercept_https = false");
    let d = Destination::host("git.test", 443);
    assert!(matches!(p.evaluate(&d).action, VerdictAction::Rules(_)));
    assert!(matches!(p.tls_decision(&d), TlsDecision::Intercept(_)));
    assert_eq!(p.dns_decision("git.test"), DnsDecision::Answer);
    // A handler-only or allow-everything first route is still decided per connection.
    let cfg = PolicyConfig::from_toml(
        "[[routes]]\nhost = \"a.test\"\n[[routes]]\nhost = \"a.test\"\nmethods = [\"GET\"]\n",
        "p",
    )
    .unwrap();
    let p = compile(&cfg, &RuntimeLayer::default());
    assert_eq!(
        p.evaluate(&Destination::host("a.test", 22)).action,
        VerdictAction::Allow
    );
    assert_eq!(p.warnings().len(), 1);
    assert!(p.warnings()[0]
        .message
        .contains("routes[0].hosts[0] matches every request"));
}

#[test]
fn report_only_routes_forward_and_name_the_rule() {
    let cfg = PolicyConfig::from_toml(
        r#"
[handlers.inject]
module = "i.wasm"
[[routes]]
host = "git.test"
paths = ["/**/git-receive-pack"]
action = "deny"
report_only = true
[[routes]]
host = "git.test"
handler = "inject"
"#,
        "p",
    )
    .unwrap();
    let p = compile(&cfg, &RuntimeLayer::default());
    let (what, rule, would) = req(&p, "git.test", "POST", "/r/git-receive-pack");
    assert_eq!(what, "handler inject", "handlers still run");
    assert!(rule.starts_with("routes[1]"), "{rule}");
    assert!(would.unwrap().starts_with("routes[0]"));
    let (what, _, would) = req(&p, "git.test", "POST", "/r/git-upload-pack");
    assert_eq!(what, "handler inject");
    assert_eq!(would, None);

    // Every route report-only: no match is reported, not refused.
    let cfg = PolicyConfig::from_toml(
        "[[routes]]\nhost = \"r.test\"\nmethods = [\"GET\"]\nreport_only = true\n",
        "p",
    )
    .unwrap();
    let p = compile(&cfg, &RuntimeLayer::default());
    let (what, _, would) = req(&p, "r.test", "POST", "/");
    assert_eq!(what, "allow");
    assert!(would.unwrap().contains("no route for \"r.test\""));
    assert_eq!(req(&p, "r.test", "GET", "/").2, None);
}

#[test]
fn enforce_false_reports_every_denial() {
    let p = rules_policy("enforce = false\ndenied_hosts = [\"evil.test\"]");
    let v = p.evaluate(&Destination::host("evil.test", 443));
    assert_eq!(v.action, VerdictAction::Allow);
    assert_eq!(v.would_deny.as_deref(), Some("denied_hosts \"evil.test\""));
    assert_eq!(p.dns_decision("evil.test"), DnsDecision::Answer);
    let v = p.evaluate(&Destination::host("nowhere.test", 443));
    assert_eq!(v.action, VerdictAction::Allow);
    assert_eq!(
        v.would_deny.as_deref(),
        Some("default deny (internet = false)")
    );
    let (what, _, would) = req(&p, "api.test", "DELETE", "/v1/x");
    assert_eq!(
        what, "handler h",
        "the deny is reported and the next route decides"
    );
    assert!(would.unwrap().starts_with("routes[1]"));
    let (what, _, would) = req(&p, "git.test", "POST", "/r.git/git-receive-pack");
    assert_eq!(what, "allow");
    assert!(would.unwrap().contains("no route for"));
    assert!(!p.enforces());
    assert_eq!(req(&p, "git.test", "GET", "/x/info/refs").2, None);
}

#[test]
fn request_rule_problems_name_the_field() {
    let mut bad = RouteConfig::rule(["x.test"], RouteAction::Deny);
    bad.paths = vec!["nope".into()];
    bad.methods = vec!["G T".into()];
    bad.status = Some(200);
    let mut both = RouteConfig::new(["y.test"], "missing");
    both.action = Some(RouteAction::Allow);
    let cfg = PolicyConfig {
        passthrough_hosts: vec!["z.test".into()],
        routes: vec![
            bad,
            both,
            RouteConfig {
                methods: vec!["GET".into()],
                ..RouteConfig::rule(["z.test"], RouteAction::Allow)
            },
        ],
        ..PolicyConfig::default()
    };
    let ps = problems(&cfg, &RuntimeLayer::default());
    assert!(find(&ps, "routes[0].paths[0]")
        .hint
        .as_deref()
        .unwrap()
        .contains("first `/`"));
    find(&ps, "routes[0].methods[0]");
    find(&ps, "routes[0].status");
    find(&ps, "routes[1].action");
    let p = find(&ps, "passthrough_hosts[0]");
    assert!(p.message.contains("request rules"), "{p}");
}

#[test]
fn only_the_default_deny_and_the_allowed_gate_are_undecided() {
    let open = compile(&PolicyConfig::default(), &RuntimeLayer::default());
    let v = open.evaluate(&Destination::host("x.test", 443));
    assert!(v.is_deny() && open.is_undecided(&v.rule), "{}", v.rule);
    let cfg = PolicyConfig {
        allowed_hosts: vec!["a.test".into()],
        denied_hosts: vec!["evil.test".into()],
        ..PolicyConfig::default()
    };
    let p = compile(&cfg, &RuntimeLayer::default());
    let gate = p.evaluate(&Destination::host("x.test", 443));
    assert!(
        gate.is_deny() && p.is_undecided(&gate.rule),
        "{}",
        gate.rule
    );
    let denied = p.evaluate(&Destination::host("evil.test", 443));
    assert!(denied.is_deny() && !p.is_undecided(&denied.rule));
    // The same text from another policy is not this one's default.
    assert!(!p.is_undecided(&Arc::from("default deny (internet = false)")));
}

//! `egret ctl` in-process: argument parsing, output and exit codes.

mod common;

use std::sync::{Arc, Mutex};

use clap::Parser;
use common::*;
use egret_admin::ctl::{exit, run_ctl_to};
use egret_admin::*;
use egret_policy::BindingConfig;
use serde_json::json;

#[derive(Parser)]
#[command(name = "ctl")]
struct Cli {
    #[command(flatten)]
    args: CtlArgs,
}

fn parse(argv: &[&str]) -> CtlArgs {
    let mut full = vec!["ctl"];
    full.extend_from_slice(argv);
    Cli::try_parse_from(full)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .args
}

/// A `Write` that tests can read back while `run_ctl_to` still holds it.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn ctl(socket: &std::path::Path, json: bool, argv: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Buf::default(), Buf::default());
    let code = run_ctl_to(socket, json, parse(argv), &mut out, &mut err).await;
    (code, out.text(), err.text())
}

#[test]
fn every_command_parses() {
    for argv in [
        &["status"][..],
        &["health"],
        &["policy", "get"],
        &["policy", "get", "--toml"],
        &["policy", "set", "p.toml"],
        &[
            "set-outbound",
            "allow-hosts",
            "--params",
            r#"{"hosts":["github.com"]}"#,
        ],
        &["clear-outbound"],
        &[
            "set-outbound-by-host",
            "a.test,b.test",
            "inject",
            "--params",
            "{}",
        ],
        &["remove-outbound-by-host", "a.test", "b.test"],
        &["allow-host", "add", "a.test"],
        &["allow-host", "remove", "a.test", "b.test"],
        &["deny-host", "add", "evil.test"],
        &["internet", "on"],
        &["internet", "off"],
        &[
            "handler",
            "set",
            "h",
            "--module",
            "uploaded:h",
            "--params",
            "{}",
            "--secret",
            "A",
            "--secret",
            "B",
            "--reveal",
            "A",
            "--timeout-ms",
            "80",
            "--memory-mb",
            "32",
        ],
        &["handler", "remove", "h"],
        &["module", "upload", "h", "h.wasm"],
        &["module", "list"],
        &["secret", "set", "T", "--value", "v"],
        &["secret", "set", "T", "--from-env", "V"],
        &["secret", "set", "T", "--from-file", "/f"],
        &["secret", "set", "T"],
        &["secret", "remove", "T"],
        &["secret", "list"],
        &["ca"],
        &["metrics"],
        &["tail"],
        &["tail", "--sandbox", "agent-47", "--deny-only"],
    ] {
        parse(argv);
    }
    let a = parse(&["--if-generation", "4", "internet", "on"]);
    assert_eq!(a.if_generation, Some(4));
    let a = parse(&["internet", "on", "--if-generation", "5"]);
    assert_eq!(a.if_generation, Some(5));
    // Mutually exclusive secret sources; `--value` is redacted in Debug.
    assert!(Cli::try_parse_from([
        "ctl",
        "secret",
        "set",
        "T",
        "--value",
        "v",
        "--from-env",
        "V"
    ])
    .is_err());
    let a = parse(&["secret", "set", "T", "--value", SECRET]);
    assert!(!format!("{a:?}").contains(SECRET));
}

#[tokio::test]
async fn ok_commands_exit_0_and_print_readably() {
    let f = start().await;
    let s = &f.socket;

    let (code, out, _) = ctl(s, false, &["status"]).await;
    assert_eq!(code, exit::OK);
    assert!(
        out.contains("sandbox     agent-47") && out.contains("1h 02m 03s"),
        "{out}"
    );
    let (code, out, _) = ctl(s, true, &["status"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sandbox_id"], "agent-47");

    let (code, out, _) = ctl(
        s,
        false,
        &[
            "set-outbound",
            "allow-hosts",
            "--params",
            r#"{"hosts":["github.com"]}"#,
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "ok: policy generation 2\n");
    assert_eq!(
        f.mock.last_call().0,
        Change::SetOutbound(Some(BindingConfig {
            handler: "allow-hosts".into(),
            params: Some(json!({"hosts": ["github.com"]}))
        }))
    );

    let (code, out, _) = ctl(s, false, &["--if-generation", "2", "internet", "on"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("warning: internet is on"), "{out}");
    assert_eq!(f.mock.last_call(), (Change::SetInternet(true), Some(2)));

    let (code, _, _) = ctl(
        s,
        false,
        &["set-outbound-by-host", "a.test, b.test", "inject"],
    )
    .await;
    assert_eq!(code, 0);
    let Change::SetOutboundByHost(r) = f.mock.last_call().0 else {
        panic!()
    };
    assert_eq!(r[0].hosts, vec!["a.test", "b.test"]);

    let (code, _, _) = ctl(s, false, &["deny-host", "remove", "x.test"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        f.mock.last_call().0,
        Change::DeniedHosts {
            add: vec![],
            remove: vec!["x.test".into()]
        }
    );

    let (code, _, _) = ctl(
        s,
        false,
        &[
            "handler",
            "set",
            "h",
            "--module",
            "uploaded:h",
            "--secret",
            "A",
            "--timeout-ms",
            "80",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let Change::SetHandler { name, config } = f.mock.last_call().0 else {
        panic!()
    };
    assert_eq!(
        (name.as_str(), config.module.as_str(), config.timeout_ms),
        ("h", "uploaded:h", 80)
    );
    assert_eq!(config.secrets, vec!["A"]);

    let wasm = f.dir.path().join("h.wasm");
    std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
    let (code, out, _) = ctl(s, false, &["module", "upload", "h", wasm.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("uploaded:h"), "{out}");
    let (_, out, _) = ctl(s, false, &["module", "list"]).await;
    assert!(out.contains("2023-11-14T22:13:20Z"), "{out}");

    // Secrets from env and file; the value is never printed.
    std::env::set_var("EGRET_TEST_SECRET", SECRET);
    let (code, out, err) = ctl(
        s,
        false,
        &["secret", "set", "T1", "--from-env", "EGRET_TEST_SECRET"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    let file = f.dir.path().join("tok");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let (code, out, _) = ctl(
        s,
        true,
        &["secret", "set", "T2", "--from-file", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0);
    assert!(!out.contains(SECRET));
    let Change::SetSecret { value, .. } = f.mock.last_call().0 else {
        panic!()
    };
    assert_eq!(value.expose(), SECRET, "trailing newline stripped");
    let (_, out, _) = ctl(s, false, &["secret", "list"]).await;
    assert_eq!(out, "FILE_TOKEN\nT1\nT2\n");

    let (code, out, _) = ctl(s, false, &["policy", "get"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("allowed_hosts      a.test") && out.contains("inject  module=inject.wasm"),
        "{out}"
    );
    let (_, out, _) = ctl(s, false, &["policy", "get", "--toml"]).await;
    assert!(out.contains("allowed_hosts = [\"a.test\"]"), "{out}");
    let p = f.dir.path().join("p.toml");
    std::fs::write(&p, "internet = true\n").unwrap();
    let (code, _, _) = ctl(s, false, &["policy", "set", p.to_str().unwrap()]).await;
    assert_eq!(code, 0);

    for argv in [
        &["health"][..],
        &["ca"],
        &["metrics"],
        &["clear-outbound"],
        &["remove-outbound-by-host", "a.test"],
        &["allow-host", "add", "a.test"],
        &["handler", "remove", "h"],
        &["secret", "remove", "T1"],
        &["internet", "off"],
    ] {
        let (code, _, err) = ctl(s, false, argv).await;
        assert_eq!(code, 0, "{argv:?}: {err}");
    }
    f.server.stop().await;
}

#[tokio::test]
async fn unreachable_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.sock");
    let (code, _, err) = ctl(&missing, false, &["status"]).await;
    assert_eq!(code, exit::UNREACHABLE);
    assert!(err.contains("--admin-socket"), "{err}");

    // A stale socket file (egret died): also unreachable.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, _, err) = ctl(&stale, false, &["internet", "on"]).await;
    assert_eq!(code, 3, "{err}");
    // And through the ExitCode-returning entry point.
    let c = run_ctl(&missing, false, CtlCommand::Health).await;
    assert_eq!(c, std::process::ExitCode::from(3));
}

#[tokio::test]
async fn refused_changes_exit_1() {
    let f = start().await;
    let s = &f.socket;
    f.mock.fail_with(ControlError::Invalid {
        problems: vec!["routes[0].handler = \"x\": no such handler".into()],
    });
    let (code, _, err) = ctl(s, false, &["set-outbound", "x"]).await;
    assert_eq!(code, exit::REFUSED);
    assert!(
        err.contains("invalid_policy") && err.contains("no such handler"),
        "{err}"
    );

    let (code, out, _) = ctl(s, true, &["--if-generation", "42", "clear-outbound"]).await;
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["code"], "conflict");
    assert_eq!(
        (
            v["error"]["expected"].as_u64(),
            v["error"]["current"].as_u64()
        ),
        (Some(42), Some(1))
    );

    f.mock
        .fail_with(ControlError::NotFound("no handler named \"h\"".into()));
    let (code, _, _) = ctl(s, false, &["handler", "remove", "h"]).await;
    assert_eq!(code, 1);

    let c = run_ctl(
        s,
        false,
        CtlArgs {
            if_generation: Some(9),
            command: CtlCommand::ClearOutbound,
        },
    )
    .await;
    assert_eq!(c, std::process::ExitCode::from(1));
    let c = run_ctl(s, false, CtlCommand::Health).await;
    assert_eq!(c, std::process::ExitCode::SUCCESS);
    f.server.stop().await;
}

#[tokio::test]
async fn usage_and_other_errors() {
    let f = start().await;
    let s = &f.socket;
    let (code, _, err) = ctl(s, false, &["set-outbound", "x", "--params", "{oops"]).await;
    assert_eq!(code, exit::USAGE);
    assert!(err.contains("--params") && err.contains("line 1"), "{err}");
    let (code, _, _) = ctl(s, false, &["handler", "remove", ".."]).await;
    assert_eq!(code, 2);
    let (code, _, _) = ctl(s, false, &["policy", "set", "/nonexistent/p.toml"]).await;
    assert_eq!(code, 2);
    let (code, _, _) = ctl(
        s,
        false,
        &["secret", "set", "T", "--from-env", "EGRET_TEST_UNSET_VAR"],
    )
    .await;
    assert_eq!(code, 2);
    assert_eq!(f.mock.call_count(), 0);

    f.mock
        .fail_with(ControlError::Internal("compiler crashed".into()));
    let (code, _, err) = ctl(s, false, &["internet", "on"]).await;
    assert_eq!(code, exit::OTHER);
    assert!(err.contains("compiler crashed"), "{err}");
    f.server.stop().await;
}

#[tokio::test]
async fn tail_streams_filtered_events() {
    let f = start().await;
    let socket = f.socket.clone();
    let out = Buf::default();
    let task = tokio::spawn({
        let mut out = out.clone();
        async move {
            let mut err = Buf::default();
            let args = parse(&["tail", "--sandbox", "agent-47", "--deny-only"]);
            run_ctl_to(&socket, false, args, &mut out, &mut err).await
        }
    });
    // Wait until the tail has subscribed.
    for _ in 0..200 {
        if f.mock.audit.receiver_count() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(f.mock.audit.receiver_count() > 0, "tail never subscribed");
    for e in [
        r#"{"timestamp":"2025-06-01T10:00:00Z","fields":{"sandbox":"agent-47","decision":"deny","method":"GET","host":"evil.test","path":"/x","status":403,"rule":"denied_hosts \"evil.test\""}}"#,
        r#"{"timestamp":"2025-06-01T10:00:01Z","fields":{"sandbox":"agent-47","decision":"forward","method":"GET","host":"ok.test","path":"/","status":200,"rule":"r"}}"#,
        r#"{"timestamp":"2025-06-01T10:00:02Z","fields":{"sandbox":"agent-9","decision":"deny","method":"GET","host":"other.test","path":"/","status":403,"rule":"r"}}"#,
    ] {
        f.mock.audit.send(e.into()).unwrap();
    }
    for _ in 0..200 {
        if out.text().contains("evil.test") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    f.server.stop().await;
    let code = tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("tail did not end when the server stopped")
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        out.text(),
        "2025-06-01T10:00:00Z agent-47 deny    GET evil.test/x 403 rule=denied_hosts \"evil.test\"\n"
    );
}

#[tokio::test]
async fn policy_set_reports_the_servers_parse_errors() {
    let f = start().await;
    for (name, text) in [
        ("p.toml", "internet = true\nalowed_hosts = []\n"),
        ("p.json", "{\n\"alowed_hosts\": []}"),
    ] {
        let p = f.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (code, out, _) = ctl(&f.socket, true, &["policy", "set", p.to_str().unwrap()]).await;
        assert_eq!(code, exit::REFUSED, "{name}: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["line"], 2, "{name}: {v}");
        assert!(
            v["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("allowed_hosts"),
            "{v}"
        );
    }
    assert_eq!(f.mock.call_count(), 0);
    f.server.stop().await;
}

//! WebSocket through egret: HTTP/1.1 Upgrade over HTTPS and RFC 8441 extended CONNECT over h2
//! (client `egret-h2ws`, hyper), with the credential injected, data both ways, each side closing,
//! and upgrades a handler refuses.

use super::{setup, TOKEN};
use egret_e2e::*;
use std::time::Duration;

/// A stdlib-only WebSocket client. argv: CA, mode (client-close | server-close | close-frame).
const WS_CLIENT: &str = include_str!("../../../clients/websocket_client.py");

#[test]
fn websocket_over_https_gets_the_credential_and_flows_both_ways() {
    let env = setup("proto-ws", &[]);
    for mode in ["client-close", "server-close", "close-frame"] {
        let before = env.up.access_log().matches("WS-OPEN").count();
        let (ok, out, err) = env.python(WS_CLIENT, &[mode]);
        assert!(ok, "{mode}: {out}\n{err}\n{}", env.egret.logs());
        assert!(out.contains("STATUS HTTP/1.1 101"), "{out}");
        assert!(out.contains("ACCEPT-OK True"), "{out}");
        // the upstream only accepts the upgrade with the injected credential, and echoes it
        assert!(out.contains(&format!("FIRST 1 auth={TOKEN}")), "{out}");
        assert!(out.contains("PINGPONG-OK"), "{out}");
        assert!(out.contains("BIG-OK True"), "{out}");
        assert!(out.contains("PONG 10 are you there"), "{out}");
        assert_eq!(
            env.up.access_log().matches("WS-OPEN").count(),
            before + 1,
            "{}",
            env.up.access_log()
        );
        match mode {
            "client-close" => {
                // closing the sandbox side closes the upstream side
                assert!(
                    env.up.wait_log("WS-EOF", Duration::from_secs(5)),
                    "upstream never saw the client go: {}",
                    env.up.access_log()
                );
            }
            "server-close" => {
                assert!(out.contains("SERVER-CLOSE 8 1000"), "{out}");
                assert!(out.contains("EOF-AFTER-CLOSE True"), "{out}");
            }
            _ => {
                assert!(out.contains("CLOSE-ECHO 8 1000"), "{out}");
                assert!(out.contains("EOF-AFTER-CLOSE True"), "{out}");
                assert!(env.up.wait_log("WS-CLOSE-FRAME", Duration::from_secs(5)));
            }
        }
    }
    // the secret never reaches the sandbox except where the upstream chose to echo it; egret
    // does not log it
    assert!(!env.egret.logs().contains(TOKEN));
}

#[test]
fn websocket_upgrade_without_the_credential_is_refused_by_the_upstream() {
    // Control for the test above: the same client against get-only (which injects nothing)
    // is refused by the upstream, so "auth=" really comes from the injecting handler.
    let env = setup("proto-ws-ro", &[]);
    let script = WS_CLIENT
        .replace("\"api.test\"", "\"ro.test\"")
        .replace("api.test\\r\\n", "ro.test\\r\\n");
    let (_, out, _) = env.python(&script, &["client-close"]);
    assert!(out.contains("STATUS HTTP/1.1 401"), "{out}");
    assert!(env.up.access_log().contains("WS-REFUSED"));
}

#[test]
fn websocket_upgrade_denied_by_the_handler_never_reaches_the_upstream() {
    // allow-hosts (bound to deny.test) refuses the upgrade request itself: the client gets the
    // handler's status and body, over HTTP/1.1 Upgrade and over RFC 8441 alike.
    let env = setup("proto-ws-deny", &[]);
    let script = WS_CLIENT
        .replace("\"api.test\"", "\"deny.test\"")
        .replace("api.test\\r\\n", "deny.test\\r\\n");
    let (ok, out, err) = env.python(&script, &["client-close"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("STATUS HTTP/1.1 403"), "{out}");
    assert!(out.contains("x-egret-handler: allow-hosts"), "{out}");
    assert!(
        out.contains("host deny.test is not allowed by handler allow-hosts"),
        "{out}"
    );
    let (out, err) = h2ws(&env, "deny.test", "client-close");
    assert!(out.contains("STATUS 403"), "{out}\n{err}");
    assert!(
        out.contains("host deny.test is not allowed by handler allow-hosts"),
        "{out}"
    );
    // the control request in the same run does reach the upstream, so the log is live
    let (code, _, err) = env.curl(&["https://api.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(env.up.wait_log("host=api.test", Duration::from_secs(5)));
    let log = env.up.access_log();
    assert!(!log.contains("deny.test"), "the upstream saw: {log}");
    assert!(!log.contains("/ws"), "the upstream saw: {log}");
}

// WebSocket over h2 (RFC 8441 extended CONNECT)

/// Run the RFC 8441 test client (`egret-h2ws`) in the sandbox against `host`, with `extra`
/// arguments.
fn run_h2ws(env: &Intercepted, host: &str, mode: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--ca", env.ca.as_str(), "--host", host, "--mode", mode];
    args.extend_from_slice(extra);
    env.topo
        .in_sandbox(bin("egret-h2ws").to_str().unwrap(), &args)
}

/// Run the RFC 8441 client in the sandbox and require success; (stdout, stderr).
fn h2ws(env: &Intercepted, host: &str, mode: &str) -> (String, String) {
    let o = run_h2ws(env, host, mode, &[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "egret-h2ws {host} {mode}: {out}\n{err}");
    (out, err)
}

#[test]
fn websocket_over_h2_extended_connect_is_translated_to_an_http1_upgrade() {
    let env = setup("proto-h2ws", &[]);
    for mode in ["client-close", "server-close", "close-frame"] {
        let before = env.up.access_log().matches("WS-OPEN").count();
        let (out, err) = h2ws(&env, "api.test", mode);
        let ctx = format!("{mode}: {out}\n{err}\n{}", env.egret.logs());
        // egret answered the h2 CONNECT 200 only after checking the upstream's
        // Sec-WebSocket-Accept for the key egret generated
        assert!(out.contains("STATUS 200"), "{ctx}");
        assert!(out.contains(&format!("FIRST 1 auth={TOKEN}")), "{ctx}");
        assert!(out.contains("PINGPONG-OK"), "{ctx}");
        assert!(out.contains("BIG-OK true"), "{ctx}");
        assert!(out.contains("PONG 10 are you there"), "{ctx}");
        assert_eq!(
            env.up.access_log().matches("WS-OPEN").count(),
            before + 1,
            "{ctx}"
        );
        match mode {
            "client-close" => {
                assert!(out.contains("CLIENT-CLOSED"), "{ctx}");
                assert!(
                    env.up.wait_log("WS-EOF", Duration::from_secs(5)),
                    "upstream never saw the h2 stream end: {}",
                    env.up.access_log()
                );
            }
            "server-close" => assert!(out.contains("SERVER-CLOSE 8 1000"), "{ctx}"),
            _ => {
                assert!(out.contains("CLOSE-ECHO 8 1000"), "{ctx}");
                assert!(env.up.wait_log("WS-CLOSE-FRAME", Duration::from_secs(5)));
            }
        }
        // whichever side closed, the other side's stream ended too
        assert!(out.contains("EOF-AFTER-CLOSE true"), "{ctx}");
        // the h2 connection outlives the WebSocket stream
        assert!(out.contains("SAME-CONN-AFTER 200"), "{ctx}");
    }
    // The upstream leg was an HTTP/1.1 Upgrade carrying the injected credential.
    let log = env.up.access_log();
    let ws_lines: Vec<&str> = log.lines().filter(|l| l.contains(" /ws ")).collect();
    assert_eq!(ws_lines.len(), 3, "{log}");
    for l in ws_lines {
        assert!(l.starts_with("up GET /ws host=api.test"), "{l}");
        assert!(l.contains("version=HTTP/1.1"), "{l}");
        assert!(l.contains("x-auth-token=present"), "{l}");
    }
    // An upstream whose 101 carries the wrong Sec-WebSocket-Accept is not spliced.
    let o = run_h2ws(
        &env,
        "api.test",
        "client-close",
        &["--path", "/ws/bad-accept"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("STATUS 502"), "{out}");
    assert!(
        out.contains("wrong or missing Sec-WebSocket-Accept"),
        "{out}"
    );
    // Only websocket is carried over extended CONNECT.
    let o = run_h2ws(
        &env,
        "api.test",
        "client-close",
        &["--protocol", "connect-udp"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("STATUS 501"), "{out}");
    assert!(out.contains("egret carries only websocket"), "{out}");
    // The handler saw a GET with `upgrade: websocket`: get-only lets it through, without a
    // credential, so the upstream refuses it and the h2 client gets that answer.
    let before = log.matches("WS-REFUSED").count();
    let (out, _) = h2ws(&env, "ro.test", "client-close");
    assert!(out.contains("STATUS 401"), "{out}");
    assert_eq!(
        env.up.access_log().matches("WS-REFUSED").count(),
        before + 1
    );
    assert!(!env.egret.logs().contains(TOKEN));
}

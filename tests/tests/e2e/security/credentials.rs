//! Taking a credential to the wrong place: `Host` and SNI naming the credentialed host but
//! dialled to an attacker's address, absolute-form URIs, `CONNECT`, and redirects.

use super::{cred_setup, raw_exchange, TOKEN};
use egret_e2e::assert_injected_and_masked;
use std::time::Duration;

#[test]
fn credentials_go_only_to_the_named_host() {
    let env = cred_setup("sec-cred");
    let t = &env.topo;
    // HTTPS: SNI vcs.test but Host evil.test, dialled to an address of the sandbox's choice:
    // 421, no handler, nothing upstream.
    let (code, out, err) = t.curl(&[
        "-i",
        "--cacert",
        &env.ca,
        "--resolve",
        "vcs.test:443:10.200.0.4",
        "-H",
        "Host: evil.test",
        "https://vcs.test/echo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("HTTP/1.1 421") || out.starts_with("HTTP/2 421"),
        "{out}"
    );
    assert!(!out.contains(TOKEN));
    // HTTPS: the right name to the wrong address: egret connects to vcs.test's address, and
    // the token goes there only.
    let (code, out, err) = t.curl(&[
        "--cacert",
        &env.ca,
        "--resolve",
        "vcs.test:443:10.200.0.4",
        "https://vcs.test/echo",
    ]);
    assert_eq!(code, 0, "{err}\n{}", env.egret.logs());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["local"], "10.200.0.2", "{out}");
    assert_injected_and_masked(&v, "x-auth-token", TOKEN);
    // plain HTTP: Host header to an attacker-controlled address
    let (code, out, _) = t.curl(&["-H", "Host: vcs.test", "http://10.200.0.4/echo"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["local"],
        "10.200.0.2"
    );
    // absolute-form URIs naming another host than Host, with userinfo tricks, or a denied host
    for req in [
        "GET http://evil.test/abs HTTP/1.1\r\nHost: vcs.test\r\n\r\n",
        "GET http://vcs.test@evil.test/abs HTTP/1.1\r\nHost: vcs.test\r\n\r\n",
        "GET http://evil.test/abs HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        "GET http://vcs.test:80@10.200.0.4/abs HTTP/1.1\r\nHost: vcs.test\r\n\r\n",
    ] {
        let resp = raw_exchange(t, "10.200.0.4", 80, req.as_bytes(), 3.0);
        assert!(
            resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.1 403"),
            "{req:?} -> {resp}"
        );
    }
    // CONNECT through egret: 405
    for req in [
        "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
        "CONNECT vcs.test:80 HTTP/1.1\r\nHost: vcs.test:80\r\n\r\n",
    ] {
        let resp = raw_exchange(t, "10.200.0.2", 80, req.as_bytes(), 3.0);
        assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    }
    // redirects are the client's business: the 302 comes back, the Location is not fetched
    let (code, out, err) = t.curl(&["-i", "http://vcs.test/redirect/evil.test"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 302"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("location: http://evil.test/redirected"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = env.up.access_log();
    assert!(!log.contains("/abs"), "{log}");
    assert!(
        !log.contains("/redirected"),
        "egret followed a redirect: {log}"
    );
    assert!(!log.contains("host=evil.test"), "{log}");
    // the upstream answered only on vcs.test's address
    for l in log.lines() {
        assert!(l.contains("host=vcs.test"), "{l}");
    }
}

//! Request rules, report-only, `policy suggest` and `policy test` with real git over HTTPS:
//! `git clone`, `fetch` and `push` in the sandbox, through egret's MITM, to `git http-backend`
//! (a CGI wrapper, `tests/clients/git_http_backend.py`) in the upstream namespace. No handler
//! is involved anywhere.
use egret_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const GIT_SERVER: &str = include_str!("../../clients/git_http_backend.py");

/// The two-line rule: git.test serves only what clone and fetch use (ref discovery and
/// upload-pack), so a push (`POST .../git-receive-pack`) matches no route and is refused.
const RULE: &str =
    "[[routes]]\nhost = \"git.test\"\npaths = [\"/**/info/refs\", \"/**/git-upload-pack\"]\n";
const RESOLVE: &str = "[resolve]\n\"git.test\" = \"10.200.0.2\"\n\"other.test\" = \"10.200.0.2\"\n";

/// git with a clean configuration (no user or system files) trusting only `ca`.
fn git(dir: &Path, ca: &str, args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.args(["-c", &format!("http.sslCAInfo={ca}")])
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@test",
            "-c",
            "protocol.version=2",
        ])
        .args(args)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_SSL_CAINFO");
    c
}

/// Runs `git ARGS` on the host (local repositories only); fails the test when it fails.
fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, "/dev/null", args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", all_output(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `git ARGS` in the sandbox (through egret); returns (success, stderr).
fn sandbox_git(topo: &Topology, ca: &str, args: &[&str]) -> (bool, String) {
    let mut c = topo.sbx.cmd("git");
    let g = git(&topo.tmp.0, ca, args);
    c.args(g.get_args());
    for (k, v) in g.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The bare repository `repo.git` (one commit, pushes allowed) under `root`, and the git
/// server for it on 10.200.0.2:443.
fn git_server(topo: &Topology, root: &Path) -> (Proc, UpstreamPki) {
    let pki_dir = topo.tmp.path("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = upstream_pki(&pki_dir, "up", &["git.test", "other.test"]);
    std::fs::create_dir_all(root).unwrap();
    let bare = root.join("repo.git");
    git_ok(
        &topo.tmp.0,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git_ok(
        &topo.tmp.0,
        &[
            "-C",
            bare.to_str().unwrap(),
            "config",
            "http.receivepack",
            "true",
        ],
    );
    let seed = topo.tmp.path("seed");
    git_ok(
        &topo.tmp.0,
        &["init", "-q", "-b", "main", seed.to_str().unwrap()],
    );
    std::fs::write(seed.join("README"), "hello\n").unwrap();
    let s = seed.to_str().unwrap();
    git_ok(&topo.tmp.0, &["-C", s, "add", "README"]);
    git_ok(&topo.tmp.0, &["-C", s, "commit", "-q", "-m", "first"]);
    git_ok(
        &topo.tmp.0,
        &["-C", s, "push", "-q", bare.to_str().unwrap(), "main"],
    );

    let script = topo.tmp.path("git_http_backend.py");
    std::fs::write(&script, GIT_SERVER).unwrap();
    let ready = topo.tmp.path("git.ready");
    let mut cmd = topo.up.cmd("python3");
    cmd.arg(&script)
        .args(["0.0.0.0", "443"])
        .arg(&pki.cert)
        .arg(&pki.key);
    cmd.arg(root)
        .arg(&ready)
        .arg(topo.tmp.path("git.access.log"));
    let mut proc = spawn(cmd, &topo.tmp.0, "git-server");
    wait_ready(&mut proc, &ready, Duration::from_secs(20)).unwrap();
    (proc, pki)
}

/// The request events of the audit log so far.
fn requests(egret: &Egret) -> Vec<serde_json::Value> {
    egret
        .audit_events()
        .into_iter()
        .filter(|e| e["method"].is_string())
        .collect()
}

/// Swaps the policy in force over the admin socket.
fn swap(topo: &Topology, sock: &str, name: &str, policy: &str) {
    let file = write(topo, name, policy);
    let (code, out, err) = ctl(sock, &["policy", "set", &file]);
    assert_eq!(code, 0, "policy set {name}: {out}{err}");
}

/// `egret policy test FILE` with `METHOD URL` lines on stdin: one decision per line.
fn policy_test(file: &str, lines: &[String]) -> (i32, Vec<String>) {
    let out = output_with_stdin(
        Command::new(bin("egret")).args(["policy", "test", file]),
        lines.join("\n").as_bytes(),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "policy test failed: {}",
        all_output(&out)
    );
    (
        out.status.code().unwrap(),
        text.lines().map(str::to_owned).collect(),
    )
}

/// What `policy test` prints for an audit decision: forwarded or answered is `allow`.
fn expected(decision: &str) -> &str {
    match decision {
        "forward" | "respond" => "allow",
        d => d,
    }
}

/// clone and fetch pass and push is refused by the two-line rule; report-only lets the push
/// through and audits `would_deny` with the rule; `policy test` agrees with every request
/// egret decided; `policy suggest` on the session's audit log gives a policy under which
/// clone, fetch and push pass again and a host outside it is refused.
#[test]
fn git_push_refused_by_a_request_rule_then_reported_then_learnt() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let root = topo.tmp.path("repos");
    let (_server, pki) = git_server(&topo, &root);
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let enforcing = format!("{RESOLVE}\n{RULE}");
    let (egret, ca) = Egret::start_intercepting(
        &topo,
        "rules",
        &enforcing,
        &pki.ca,
        &["--admin-socket", &sock],
        &[],
    )
    .expect("egret starts");
    let clone = topo.tmp.path("clone");
    let c = clone.to_str().unwrap();

    // Enforcing: clone and fetch pass, push is refused.
    let (ok, err) = sandbox_git(&topo, &ca, &["clone", "-q", "https://git.test/repo.git", c]);
    assert!(ok, "clone: {err}\n{}", egret.logs());
    assert!(clone.join("README").exists());
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "fetch", "-q", "origin"]);
    assert!(ok, "fetch: {err}");
    std::fs::write(clone.join("CHANGE"), "pushed\n").unwrap();
    git_ok(&topo.tmp.0, &["-C", c, "add", "CHANGE"]);
    git_ok(&topo.tmp.0, &["-C", c, "commit", "-q", "-m", "second"]);
    // Over h2 (git's default through egret's ALPN): the denial arrives while git may still
    // be sending the pack, and git must report the 403, not a reset stream.
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "push", "origin", "main"]);
    assert!(!ok, "the push went through an enforcing rule");
    assert!(err.contains("403"), "{err}");
    let denied = egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["decision"] == "deny" && e["path"] == "/repo.git/git-receive-pack"
        })
        .unwrap_or_else(|| panic!("no deny event: {:?}", requests(&egret)));
    let rule = denied["rule"].as_str().unwrap();
    assert!(
        rule.contains("no route for \"git.test\"") && rule.contains("routes[0]"),
        "{rule}"
    );
    assert!(denied["handler"].is_null());
    assert_eq!(denied["proto"], "https-h2", "{denied}");
    let bare = root.join("repo.git");
    let head = |b: &Path| {
        git_ok(
            &topo.tmp.0,
            &[
                "--git-dir",
                b.to_str().unwrap(),
                "log",
                "--format=%s",
                "-1",
                "main",
            ],
        )
    };
    assert_eq!(head(&bare).trim(), "first");

    // policy test agrees with every request egret decided under the enforcing policy.
    let enforcing_file = write(&topo, "enforcing.toml", &enforcing);
    let session = requests(&egret);
    assert!(session.len() >= 5, "{session:?}");
    let lines: Vec<String> = session
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            let path = path.split('?').next().unwrap();
            format!(
                "{} https://{}{path}",
                e["method"].as_str().unwrap(),
                e["host"].as_str().unwrap()
            )
        })
        .collect();
    let (code, out) = policy_test(&enforcing_file, &lines);
    assert_eq!(code, 1, "a push was denied: {out:?}");
    for (e, line) in session.iter().zip(&out) {
        let want = expected(e["decision"].as_str().unwrap());
        assert!(
            line.starts_with(&format!("{want:<11} ")),
            "egret did {want} for {e}, policy test says {line}"
        );
    }

    // Report-only: the push goes through and is audited would_deny, naming the rule.
    swap(
        &topo,
        &sock,
        "report-only.toml",
        &format!("enforce = false\n{enforcing}"),
    );
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "push", "-q", "origin", "main"]);
    assert!(ok, "report-only refused the push: {err}");
    assert_eq!(head(&bare).trim(), "second");
    let would = egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["decision"] == "would_deny" && e["path"] == "/repo.git/git-receive-pack"
        })
        .unwrap_or_else(|| panic!("no would_deny event: {:?}", requests(&egret)));
    assert!(
        would["rule"]
            .as_str()
            .unwrap()
            .contains("no route for \"git.test\""),
        "{would}"
    );
    assert_eq!(would["status"], 200);
    let count = metric(&sock, "egret_would_deny_total");
    assert!(count >= 1, "{count}");

    // Learn: suggest from the session's audit log, with the pins as the base.
    let audit = topo.tmp.path("session.jsonl");
    std::fs::copy(&egret.proc.stdout, &audit).unwrap();
    let base = write(&topo, "base.toml", RESOLVE);
    let out = Command::new(bin("egret"))
        .args([
            "policy",
            "suggest",
            audit.to_str().unwrap(),
            "--base",
            &base,
            "--paths",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "suggest: {}", all_output(&out));
    let suggested = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(suggested.contains("host = \"git.test\""), "{suggested}");
    assert!(
        suggested.contains("\"POST\""),
        "the push was seen: {suggested}"
    );
    assert!(!suggested.contains("enforce = false"), "{suggested}");
    swap(&topo, &sock, "suggested.toml", &suggested);
    let again = topo.tmp.path("again");
    let a = again.to_str().unwrap();
    let (ok, err) = sandbox_git(&topo, &ca, &["clone", "-q", "https://git.test/repo.git", a]);
    assert!(ok, "clone under the suggested policy: {err}\n{suggested}");
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", a, "fetch", "-q", "origin"]);
    assert!(ok, "fetch under the suggested policy: {err}");
    std::fs::write(again.join("THIRD"), "3\n").unwrap();
    git_ok(&topo.tmp.0, &["-C", a, "add", "THIRD"]);
    git_ok(&topo.tmp.0, &["-C", a, "commit", "-q", "-m", "third"]);
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", a, "push", "-q", "origin", "main"]);
    assert!(ok, "push under the suggested policy: {err}\n{suggested}");
    assert_eq!(head(&bare).trim(), "third");
    let (code, _, _) = topo.curl(&["--cacert", &ca, "https://other.test/"]);
    assert_ne!(code, 0, "a host outside the suggested policy was reached");
    let suggested_file = write(&topo, "suggested-copy.toml", &suggested);
    let (code, out) = policy_test(&suggested_file, &["GET https://other.test/".to_owned()]);
    assert_eq!(code, 1);
    assert!(out[0].starts_with("deny "), "{out:?}");
}

/// The live policy of the shadow test: git.test allowed, every request forwarded.
const OPEN: &str = "allowed_hosts = [\"git.test\"]\n";

/// A counter of `/metrics` on the admin socket `sock`.
fn metric(sock: &str, name: &str) -> u64 {
    let out = admin_curl(sock)
        .arg("http://egret/metrics")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}: {text}"))
}

/// A shadow candidate refusing pushes: a bad candidate is refused naming the file and line
/// with nothing loaded; the good one decides next to the live policy, which still lets the
/// push through, and its difference is audited, counted and reported; promoted, it refuses
/// the next push as generation + 1; a candidate loaded afterwards and dropped changes nothing.
#[test]
fn shadow_candidate_reported_promoted_and_dropped() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let root = topo.tmp.path("repos");
    let (_server, pki) = git_server(&topo, &root);
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let live = format!("{OPEN}{RESOLVE}");
    let (egret, ca) = Egret::start_intercepting(
        &topo,
        "shadow",
        &live,
        &pki.ca,
        &["--admin-socket", &sock],
        &[],
    )
    .expect("egret starts");
    let start = ctl_generation(&sock);

    // A bad candidate: refused with the file and line, nothing loaded, the live one unchanged.
    let bad = write(
        &topo,
        "bad.toml",
        &format!("{RESOLVE}\n[[routes]]\nhost = \"git.test\"\npaths = [\"/x\"\n"),
    );
    let (code, out, err) = ctl(&sock, &["policy", "shadow", &bad]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("{bad}:")) && err.contains("line"),
        "{err}"
    );
    let (code, _, err) = ctl(&sock, &["policy", "shadow", "report"]);
    assert_eq!(code, 1, "a refused candidate was loaded: {err}");
    assert!(err.contains("no shadow policy is loaded"), "{err}");
    let unknown = write(
        &topo,
        "unknown.toml",
        &format!("{RESOLVE}\n[[routes]]\nhost = \"git.test\"\nhandler = \"nope\"\n"),
    );
    let (code, _, err) = ctl(&sock, &["policy", "shadow", &unknown]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{unknown}: routes[0].handler")),
        "{err}"
    );
    assert_eq!(ctl_generation(&sock), start);

    let candidate = write(&topo, "candidate.toml", &format!("{RESOLVE}\n{RULE}"));
    let (code, out, err) = ctl(&sock, &["policy", "shadow", &candidate]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ctl_generation(&sock),
        start,
        "loading a candidate swapped the live policy"
    );

    // The live policy decides: clone, fetch and push pass.
    let clone = topo.tmp.path("clone");
    let c = clone.to_str().unwrap();
    let (ok, err) = sandbox_git(&topo, &ca, &["clone", "-q", "https://git.test/repo.git", c]);
    assert!(ok, "clone: {err}\n{}", egret.logs());
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "fetch", "-q", "origin"]);
    assert!(ok, "fetch: {err}");
    std::fs::write(clone.join("CHANGE"), "pushed\n").unwrap();
    git_ok(&topo.tmp.0, &["-C", c, "add", "CHANGE"]);
    git_ok(&topo.tmp.0, &["-C", c, "commit", "-q", "-m", "second"]);
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "push", "-q", "origin", "main"]);
    assert!(ok, "the live policy allows the push: {err}");

    // Audited with the candidate's decision where they differ, and only there.
    let push = egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["path"] == "/repo.git/git-receive-pack" && e["decision"] == "forward"
        })
        .unwrap_or_else(|| panic!("no push event: {:?}", requests(&egret)));
    assert_eq!(push["shadow"]["decision"], "deny", "{push}");
    assert_eq!(push["shadow"]["status"], 403, "{push}");
    let rule = push["shadow"]["rule"].as_str().unwrap();
    assert!(rule.contains("no route for \"git.test\""), "{rule}");
    let session = requests(&egret);
    for e in &session {
        let differs = e["path"] == "/repo.git/git-receive-pack";
        assert_eq!(!e["shadow"].is_null(), differs, "{e}");
    }
    assert!(metric(&sock, "egret_shadow_differences_total") >= 1);

    // The report: as JSON and as a table.
    let (code, out, err) = ctl(&sock, &["--json", "policy", "shadow", "report"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["requests"].as_u64().unwrap(),
        session.len() as u64,
        "{report}"
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let row = &rows[0];
    assert_eq!(
        (
            &row["host"],
            &row["method"],
            &row["path"],
            &row["live"],
            &row["shadow"]
        ),
        (
            &"git.test".into(),
            &"POST".into(),
            &"/repo.git/**".into(),
            &"allow".into(),
            &"deny".into()
        ),
        "{row}"
    );
    assert_eq!(row["count"].as_u64(), report["differences"].as_u64());
    assert!(row["first_seen"].as_u64().unwrap() <= row["last_seen"].as_u64().unwrap());
    let (code, table, _) = ctl(&sock, &["policy", "shadow", "report"]);
    assert_eq!(code, 0);
    assert!(
        table.lines().any(|l| l.contains("git.test")
            && l.contains("POST")
            && l.contains("/repo.git/**")
            && l.contains("deny 403")),
        "{table}"
    );

    // Promote: the next generation, and the push is refused.
    let (code, out, err) = ctl(&sock, &["--json", "policy", "shadow", "promote"]);
    assert_eq!(code, 0, "{out}{err}");
    let promoted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        promoted["generation"].as_u64(),
        Some(start + 1),
        "{promoted}"
    );
    assert_eq!(ctl_generation(&sock), start + 1);
    let (code, _, _) = ctl(&sock, &["policy", "shadow", "report"]);
    assert_eq!(code, 1, "the promoted candidate is still a shadow");
    std::fs::write(clone.join("THIRD"), "3\n").unwrap();
    git_ok(&topo.tmp.0, &["-C", c, "add", "THIRD"]);
    git_ok(&topo.tmp.0, &["-C", c, "commit", "-q", "-m", "third"]);
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "push", "origin", "main"]);
    assert!(!ok, "the promoted candidate let the push through");
    assert!(err.contains("403"), "{err}");
    let (ok, err) = sandbox_git(&topo, &ca, &["-C", c, "fetch", "-q", "origin"]);
    assert!(ok, "fetch under the promoted policy: {err}");

    // Drop: a candidate allowing pushes again is reported, then dropped; the live policy
    // still refuses, and its events no longer carry a shadow decision.
    let open = write(&topo, "open.toml", &live);
    let (code, _, err) = ctl(&sock, &["policy", "shadow", &open]);
    assert_eq!(code, 0, "{err}");
    let (ok, _) = sandbox_git(&topo, &ca, &["-C", c, "push", "-q", "origin", "main"]);
    assert!(!ok);
    let denied = egret
        .wait_audit(Duration::from_secs(5), |e| {
            e["decision"] == "deny" && !e["shadow"].is_null()
        })
        .unwrap_or_else(|| panic!("no deny event with a shadow: {:?}", requests(&egret)));
    assert_eq!(denied["shadow"]["decision"], "allow", "{denied}");
    let (code, out, err) = ctl(&sock, &["--json", "policy", "shadow", "drop"]);
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(last["rows"][0]["shadow"], "allow", "{last}");
    let (code, _, err) = ctl(&sock, &["policy", "shadow", "drop"]);
    assert_eq!(code, 1, "dropped twice: {err}");
    assert_eq!(
        ctl_generation(&sock),
        start + 1,
        "drop swapped the live policy"
    );
    let before = requests(&egret).len();
    let (ok, _) = sandbox_git(&topo, &ca, &["-C", c, "push", "-q", "origin", "main"]);
    assert!(!ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let fresh = loop {
        let fresh = requests(&egret).split_off(before);
        if fresh.iter().any(|e| e["decision"] == "deny") || std::time::Instant::now() > deadline {
            break fresh;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(fresh.iter().any(|e| e["decision"] == "deny"), "{fresh:?}");
    assert!(fresh.iter().all(|e| e["shadow"].is_null()), "{fresh:?}");
}

/// A request rule's denial of an h2 POST with a body: curl gets the 403, not a reset stream,
/// for a body within the first flow-control window (1 KiB) and one well past it (1 MiB).
#[test]
fn h2_post_denied_by_a_rule_gets_the_403() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let root = topo.tmp.path("repos");
    let (_server, pki) = git_server(&topo, &root);
    let (egret, ca) = Egret::start_intercepting(
        &topo,
        "h2deny",
        &format!("{RESOLVE}\n{RULE}"),
        &pki.ca,
        &[],
        &[],
    )
    .expect("egret starts");
    for (name, size) in [("small", 1usize << 10), ("large", 1 << 20)] {
        let body = topo.tmp.path(name);
        std::fs::write(&body, vec![b'x'; size]).unwrap();
        let (code, out, err) = topo.curl(&[
            "--http2",
            "--cacert",
            &ca,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "-H",
            "content-type: application/x-git-receive-pack-request",
            "--data-binary",
            &format!("@{}", body.display()),
            "https://git.test/repo.git/git-receive-pack",
        ]);
        assert_eq!(
            (code, out.as_str()),
            (0, "2 403"),
            "{name}: {err}\n{}",
            egret.logs()
        );
    }
    // A denied request's event is written when its exchange ends, which for an h2 upload is
    // after egret has drained the body: the client may have its 403 before that.
    let denied = || -> Vec<_> {
        requests(&egret)
            .into_iter()
            .filter(|e| e["decision"] == "deny")
            .collect()
    };
    wait_until(Duration::from_secs(10), || denied().len() >= 2);
    let denied = denied();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(denied
        .iter()
        .all(|e| e["proto"] == "https-h2" && e["status"] == 403));
}

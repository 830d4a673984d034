//! Attaching to a sandbox and proxying it transparently: allowed and denied hosts, IPv4 and IPv6,
//! DNS, streaming, fail-closed on kill, clean detach, and bad input that installs nothing.
use egret_e2e::*;
use std::time::{Duration, Instant};

const POLICY: &str = r#"
internet = false
allowed_hosts = ["allowed.test", "web.test:80"]
denied_hosts = ["denied.test"]

[resolve]
"allowed.test" = ["10.200.0.2", "fd00:200::2"]
"denied.test" = "10.200.0.3"
"web.test" = "10.200.0.5"
"#;

struct Env {
    topo: Topology,
    up: Upstream,
    egret: Egret,
}

fn setup(net: SandboxNet, id: &str) -> Env {
    let topo = Topology::new(net);
    let up = Upstream::start(&topo, "up", None);
    let policy = write(&topo, "policy.toml", POLICY);
    let egret = Egret::start(&topo, id, &["--policy", &policy]).expect("egret starts");
    Env { topo, up, egret }
}

#[test]
fn allowed_host_over_ipv4_and_ipv6_is_proxied_and_logged() {
    let env = setup(SandboxNet::LoOnly, "sbx-allow");
    for family in ["-4", "-6"] {
        let (code, out, err) = env
            .topo
            .curl(&[family, "http://allowed.test/echo?token=supersecret"]);
        assert_eq!(code, 0, "curl {family}: {err}\n{}", env.egret.logs());
        let v = json(&out);
        assert_eq!(v["host"], "allowed.test");
        assert_eq!(v["path"], "/echo?token=supersecret");
    }
    let log = env.up.access_log();
    assert_eq!(
        log.matches("GET /echo host=allowed.test").count(),
        2,
        "{log}"
    );
    // egret dialled from its own namespace (10.200.0.1), never from the sandbox
    assert!(log.contains("peer=[::ffff:10.200.0.1]"), "{log}");
    let logs = env.egret.logs();
    let ev = env
        .egret
        .wait_audit(Duration::from_secs(5), |e| e["path"] == "/echo?[masked]")
        .unwrap_or_else(|| panic!("no audit event:\n{logs}"));
    assert_eq!(ev["sandbox"], "sbx-allow", "{ev}");
    assert_eq!(ev["host"], "allowed.test", "{ev}");
    assert_eq!(ev["method"], "GET", "{ev}");
    assert_eq!(ev["decision"], "forward", "{ev}");
    assert_eq!(ev["status"], 200, "{ev}");
    assert!(
        !logs.contains("supersecret"),
        "query string leaked into logs"
    );
}

#[test]
fn denied_host_gets_a_denial_and_the_upstream_sees_nothing() {
    let env = setup(SandboxNet::LoOnly, "sbx-deny");
    // DNS refuses the name outright ...
    let out = env
        .topo
        .in_sandbox("dig", &["+short", "+time=2", "+tries=1", "denied.test"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "denied name resolved"
    );
    // ... and a request that names it anyway, to an address of the sandbox's choosing, is denied.
    let (code, out, err) = env.topo.curl(&[
        "-i",
        "--resolve",
        "denied.test:80:10.200.0.3",
        "http://denied.test/secret",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(
        out.contains("egret: GET /secret to denied.test:80 denied by rule"),
        "{out}"
    );
    assert!(out.contains("denied.test"), "{out}");
    // an unlisted host is denied by the default rule
    let (_, out, _) = env.topo.curl(&[
        "-i",
        "--resolve",
        "other.test:80:10.200.0.4",
        "http://other.test/",
    ]);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(
        !env.up.access_log().contains("/secret"),
        "{}",
        env.up.access_log()
    );
    assert_eq!(env.up.access_log(), "", "upstream saw a request");
}

#[test]
fn host_header_decides_the_destination_not_the_dialled_address() {
    let env = setup(SandboxNet::LoOnly, "sbx-steer");
    // The sandbox dials .4 (its choice) but names allowed.test: egret goes to allowed.test's
    // pinned address, .2.
    let (code, out, err) = env.topo.curl(&[
        "--resolve",
        "allowed.test:80:10.200.0.4",
        "http://allowed.test/echo",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        v["local"], "10.200.0.2",
        "request reached the dialled address: {out}"
    );
    // Same with a raw IP URL and a Host header.
    let (code, out, err) = env
        .topo
        .curl(&["-H", "Host: allowed.test", "http://10.200.0.4/echo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["local"], "10.200.0.2");
    // Absolute-form naming another host than Host is refused.
    let out = env.topo.in_sandbox(
        "python3",
        &["-c", "import socket; s=socket.create_connection(('10.200.0.4',80)); s.sendall(b'GET http://denied.test/ HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n'); print(s.recv(200).decode())"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn keep_alive_and_h2c_prior_knowledge() {
    let env = setup(SandboxNet::LoOnly, "sbx-h2c");
    let (code, out, err) =
        env.topo
            .curl(&["-v", "http://allowed.test/echo", "http://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
    assert_eq!(out.matches("\"server\":\"up\"").count(), 2, "{out}");
    let (code, out, err) =
        env.topo
            .curl(&["--http2-prior-knowledge", "-v", "http://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("HTTP/2 200"), "{err}");
    assert_eq!(
        json(&out)["version"],
        "HTTP/2.0",
        "upstream did not see h2c: {out}"
    );
}

fn sha256_file(topo: &Topology, path: &str) -> String {
    let out = topo.in_sandbox("sha256sum", &[path]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn large_download_and_upload_stream_with_bounded_memory() {
    let env = setup(SandboxNet::LoOnly, "sbx-big");
    const N: u64 = 200 * 1024 * 1024;
    let file = env.topo.tmp.path("down.bin");
    let (code, _, err) = env.topo.curl(&[
        "--max-time",
        "120",
        "-o",
        file.to_str().unwrap(),
        &format!("http://allowed.test/bytes/{N}"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, want, _) = env.topo.curl(&[&format!("http://allowed.test/sha/{N}")]);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), N);
    assert_eq!(sha256_file(&env.topo, file.to_str().unwrap()), want.trim());
    // upload: a different file (random), streamed
    let up = env.topo.tmp.path("up.bin");
    let o = env.topo.in_sandbox(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", up.display()),
            "bs=1M",
            "count=200",
            "status=none",
        ],
    );
    assert!(o.status.success());
    let (code, out, err) = env.topo.curl(&[
        "--max-time",
        "120",
        "-T",
        up.to_str().unwrap(),
        "http://allowed.test/upload",
    ]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        got,
        vec![
            sha256_file(&env.topo, up.to_str().unwrap()).as_str(),
            &N.to_string()
        ]
    );
    let rss = proc_status_kib(env.egret.proc.child.id(), "VmHWM");
    assert!(rss < 64 * 1024, "egret peak RSS {rss} KiB >= 64 MiB");
    eprintln!("egret peak RSS after 2x200 MiB: {rss} KiB");
}

#[test]
fn fail_closed_on_kill_and_clean_detach_on_sigterm() {
    let mut env = setup(SandboxNet::Veth, "sbx-kill");
    let (code, _, err) = env.topo.curl(&["http://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
    let before = env.up.access_log();
    // kill -9: the rules stay, the listener is gone -> immediate reset, nothing reaches upstream.
    env.egret.proc.signal(nix::sys::signal::Signal::SIGKILL);
    env.egret
        .proc
        .wait_timeout(Duration::from_secs(5))
        .expect("egret died");
    let t = Instant::now();
    let (code, _, _) = env.topo.curl(&[
        "--max-time",
        "5",
        "--resolve",
        "allowed.test:80:10.200.0.2",
        "http://allowed.test/echo",
    ]);
    assert_ne!(code, 0, "request succeeded with egret dead");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?} to fail",
        t.elapsed()
    );
    // direct to the upstream's address on the sandbox's own veth: still nothing gets out
    let (code, _, _) = env
        .topo
        .curl(&["--max-time", "2", "http://10.201.0.2/echo"]);
    assert_ne!(code, 0);
    assert_eq!(
        env.up.access_log(),
        before,
        "upstream saw traffic while egret was dead"
    );

    // A new egret takes over the stale ruleset, then SIGTERM removes everything.
    let policy = env.topo.tmp.path("policy.toml");
    let mut egret = Egret::start(
        &env.topo,
        "sbx-kill2",
        &["--policy", policy.to_str().unwrap()],
    )
    .expect("restart");
    let (code, _, err) = env.topo.curl(&["http://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}");
    stop_cleanly(&mut egret, &env.topo);
}

/// SIGTERM: egret exits successfully and leaves nothing installed in the sandbox.
fn stop_cleanly(egret: &mut Egret, topo: &Topology) {
    egret.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let status = egret
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("egret exits on SIGTERM");
    assert!(status.success(), "exit status {status}: {}", egret.logs());
    assert_nothing_installed(topo, "egret stopped");
}

/// No nft table, no fwmark rule (either family) and no blackhole device in the sandbox.
fn assert_nothing_installed(topo: &Topology, after: &str) {
    let tables = topo.in_sandbox("nft", &["list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "",
        "{after}: nft tables left behind"
    );
    for family in ["-4", "-6"] {
        let rules = topo.in_sandbox("ip", &[family, "rule", "show"]);
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            !rules.contains("fwmark"),
            "{after}: ip {family} rule left behind: {rules}"
        );
    }
    let links = topo.in_sandbox("ip", &["-o", "link", "show"]);
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("egret-bh"), "{after}: left {links}");
}

#[test]
fn a_leftover_netdev_table_without_its_inet_table_is_replaced() {
    // egret creates both tables when the owner check finds no `inet egret`; a `netdev egret`
    // left behind on its own makes that fail, and egret must replace it instead.
    let topo = Topology::new(SandboxNet::LoOnly);
    let made = topo.in_sandbox("nft", &["add", "table", "netdev", "egret"]);
    assert!(made.status.success(), "{made:?}");
    let mut egret = Egret::start(&topo, "leftover", &[]).expect("egret attaches");
    let pid = egret.proc.child.id().to_string();
    for family in ["inet", "netdev"] {
        let t = topo.in_sandbox("nft", &["list", "table", family, "egret"]);
        let t = String::from_utf8_lossy(&t.stdout);
        assert!(t.contains(&format!("egret pid={pid} ")), "{family}: {t}");
    }
    stop_cleanly(&mut egret, &topo);
}

#[test]
fn attaching_twice_is_refused_naming_the_running_instance() {
    let env = setup(SandboxNet::LoOnly, "sbx-twice");
    let policy = env.topo.tmp.path("policy.toml");
    let err = match Egret::start(&env.topo, "second", &["--policy", policy.to_str().unwrap()]) {
        Ok(_) => panic!("second egret attached"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("already attached"), "{err}");
    assert!(
        err.contains(&env.egret.proc.child.id().to_string()),
        "{err}"
    );
    assert!(err.contains("sbx-twice"), "{err}");
    // the first one still works
    let (code, _, e) = env.topo.curl(&["http://allowed.test/echo"]);
    assert_eq!(code, 0, "{e}");
}

#[test]
fn listener_port_and_udp_are_closed_to_the_sandbox() {
    let env = setup(SandboxNet::Veth, "sbx-ports");
    let (code, _, _) = env
        .topo
        .curl(&["--max-time", "3", "http://127.0.0.1:15001/"]);
    assert_eq!(code, 7, "direct connection to the listener was not refused");
    let script = include_str!("../../clients/udp_send_attempts.py");
    let out = env.topo.in_sandbox("python3", &["-c", script]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.matches("FAILED").count(), 3, "{out}");
    assert!(!out.contains("SENT"), "{out}");
    // the veth is not a way out either, for TCP: an unlisted address on it is denied by egret
    let (code, out, _) = env.topo.curl(&["-i", "http://10.201.0.2/echo"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(env.up.access_log(), "");
}

#[test]
fn dns_answers_allowed_names_and_opaque_tcp_is_decided_by_name() {
    let env = setup(SandboxNet::LoOnly, "sbx-dns");
    let out = env
        .topo
        .in_sandbox("dig", &["+short", "+time=2", "+tries=1", "allowed.test"]);
    let addr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        addr.starts_with("198.18.") || addr.starts_with("198.19."),
        "{addr:?}"
    );
    let out = env.topo.in_sandbox(
        "dig",
        &[
            "+short",
            "+tcp",
            "+time=2",
            "+tries=1",
            "AAAA",
            "allowed.test",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(':'),
        "TCP AAAA: {:?}",
        out
    );
    let out = env.topo.in_sandbox("python3", &["-c", "import socket; print(socket.getaddrinfo('allowed.test', 2222, socket.AF_INET)[0][4][0])"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("198.1"),
        "{:?}",
        out
    );
    // opaque, server-speaks-first protocol to an allowed name: spliced
    let banner = include_str!("../../clients/banner_ping_or_error.py");
    let out = env
        .topo
        .in_sandbox("python3", &["-c", banner, "allowed.test"]);
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.contains("SSH-2.0-egret-test-banner") && out.contains("ping"),
        "{out}\n{}",
        env.egret.logs()
    );
    // web.test is allowed on port 80 only: DNS answers, but 2222 is reset
    let out = env.topo.in_sandbox("python3", &["-c", banner, "web.test"]);
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.contains("ERR") || out.trim().is_empty(), "{out}");
    let log = env.up.access_log();
    assert_eq!(log.matches("BANNER-CONN").count(), 1, "{log}");
    assert!(
        env.egret
            .wait_audit(Duration::from_secs(5), |e| e["host"] == "web.test"
                && e["decision"] == "deny")
            .is_some(),
        "{}",
        env.egret.logs()
    );
}

fn egret_fails(topo: &Topology, args: &[&str]) -> String {
    let mut cmd = topo.egr.cmd(bin("egret").to_str().unwrap());
    cmd.args(args);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "egret {args:?} succeeded");
    assert_nothing_installed(topo, &format!("bad input {args:?}"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `egret run` in sandbox `sbx` with `policy`.
fn run_args<'a>(sbx: &'a str, policy: &'a str) -> [&'a str; 7] {
    [
        "run",
        "--netns",
        sbx,
        "--sandbox-id",
        "x",
        "--policy",
        policy,
    ]
}

#[test]
fn bad_input_gives_clear_errors_and_installs_nothing() {
    let topo = Topology::new(SandboxNet::LoOnly);
    let sbx = topo.sbx.name.clone();
    let err = egret_fails(
        &topo,
        &["run", "--netns", "egret-no-such-ns", "--sandbox-id", "x"],
    );
    assert!(
        err.contains("network namespace \"egret-no-such-ns\" not found"),
        "{err}"
    );

    // Policy files that must each be refused with a message naming what is wrong.
    let cases = [
        (
            "syntax.toml",
            "internet = false\nallowed_hosts = [\"a.test\"\n",
            vec!["syntax.toml:2:"],
        ),
        (
            "unknown.toml",
            "internet = false\nallow_hosts = []\n",
            vec!["allow_hosts", "unknown.toml:2:"],
        ),
        (
            "glob.toml",
            "allowed_hosts = [\"*.exa mple.test\"]\n",
            vec!["exa mple.test"],
        ),
    ];
    // `egret run` in the test's sandbox with `policy` and `extra` flags, expected to fail.
    let fails_with = |policy: &str, extra: &[&str]| {
        let mut args = run_args(&sbx, policy).to_vec();
        args.extend_from_slice(extra);
        egret_fails(&topo, &args)
    };
    for (file, content, wants) in cases {
        let policy = write(&topo, file, content);
        let err = fails_with(&policy, &[]);
        for want in wants {
            assert!(err.contains(want), "{file}: {err}");
        }
    }

    let good = write(&topo, "good.toml", "internet = false\n");

    // Bad input found while the attach already runs in the background (the upstream CA is
    // read after it starts): the error names the file and the attach is undone.
    let err = fails_with(&good, &["--upstream-ca", "/nonexistent/upstream-ca.pem"]);
    assert!(
        err.contains("cannot read CA file /nonexistent/upstream-ca.pem"),
        "{err}"
    );
    let mut cmd = topo.egr.cmd("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        bin("egret").to_str().unwrap(),
    ]);
    cmd.args(run_args(&sbx, &good));
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as root"), "{err}");
    assert_nothing_installed(&topo, "egret run as uid 65534");
}

/// The process-creating calls in an `strace -f -e trace=execve,fork,vfork,clone,clone3` log:
/// every `execve` (as `pid program`), and every fork or clone that makes a process rather than
/// a thread (`CLONE_THREAD` absent).
fn spawns_in_trace(trace: &str) -> (Vec<String>, Vec<String>) {
    let mut execs = Vec::new();
    let mut forks = Vec::new();
    for line in trace.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if let Some(rest) = call.strip_prefix("execve(\"") {
            let program = rest.split('"').next().unwrap_or_default();
            execs.push(format!("{pid} {program}"));
        } else if ["fork(", "vfork("].iter().any(|c| call.starts_with(c))
            || (["clone(", "clone3("].iter().any(|c| call.starts_with(c))
                && !call.contains("CLONE_THREAD"))
        {
            forks.push(line.to_string());
        }
    }
    (execs, forks)
}

/// A program that runs `strace -f` on egret with the arguments it is given, logging to `trace`.
fn traced_egret(topo: &Topology, trace: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = topo.tmp.path("traced-egret");
    let script = format!(
        "#!/bin/sh\nexec strace -f -qq -e trace=execve,fork,vfork,clone,clone3 -o {} {} \"$@\"\n",
        trace.display(),
        bin("egret").display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn attach_and_detach_run_no_other_program() {
    require_root();
    let topo = Topology::new(SandboxNet::LoOnly);
    let _up = Upstream::start(&topo, "up", None);
    let policy = write(&topo, "policy.toml", POLICY);
    let trace = topo.tmp.path("egret.strace");
    let wrapper = traced_egret(&topo, &trace);
    let mut egret = Egret::start_program(&wrapper, &topo, "no-spawn", &["--policy", &policy], &[])
        .expect("egret starts under strace");
    // Attached and intercepting: the blackhole route, the rule and the ruleset are in place.
    let (code, _, err) = topo.curl(&["http://allowed.test/echo"]);
    assert_eq!(code, 0, "{err}\n{}", egret.logs());
    // egret is strace's child; SIGTERM makes it detach and exit, and strace with it.
    let strace = egret.proc.child.id();
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .expect("strace's children");
    let pid: i32 = children.trim().parse().expect("one child: egret");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    egret
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("egret and strace exit");
    assert_nothing_installed(&topo, "egret stopped under strace");
    let trace = std::fs::read_to_string(&trace).expect("strace log");
    let (execs, forks) = spawns_in_trace(&trace);
    assert_eq!(
        execs,
        vec![format!("{pid} {}", bin("egret").display())],
        "egret ran other programs:\n{trace}"
    );
    assert!(forks.is_empty(), "egret made processes: {forks:#?}");
}

#[test]
fn egret_exec_runs_no_program_but_the_command() {
    let _user = crate::exec::require_user();
    let topo = Topology::new(SandboxNet::LoOnly);
    let trace = topo.tmp.path("exec.strace");
    let egret = bin("egret");
    let out = topo
        .egr
        .cmd("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .arg(&trace)
        .args(["setpriv", "--reuid", crate::exec::USER, "--regid"])
        .args([crate::exec::USER, "--clear-groups", "--reset-env"])
        .arg(&egret)
        .args(["exec", "--", "/bin/true"])
        .output()
        .expect("strace egret exec");
    let trace = std::fs::read_to_string(&trace).expect("strace log");
    assert!(out.status.success(), "{}\n{trace}", all_output(&out));
    let (execs, _) = spawns_in_trace(&trace);
    let programs: Vec<&str> = execs
        .iter()
        .filter_map(|e| e.split_once(' ').map(|(_, p)| p))
        .collect();
    // setpriv starts egret; egret's helper and the sandbox's init are forks of it (no
    // execve), and the only program it starts is the command.
    assert_eq!(
        programs,
        vec!["/usr/bin/setpriv", egret.to_str().unwrap(), "/bin/true"],
        "{trace}"
    );
}

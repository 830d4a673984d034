//! `egret exec -- CMD` as an ordinary user (`egret-test`, made by scripts/setup.sh): the
//! command gets namespaces of its own, captured transparently, and trusts the sandbox CA with
//! no flags. The whole `egret exec` runs in the test's egret namespace (as `egret run` does in
//! the other tests), so the only way out is the veth to the upstream namespace; the test host
//! names are pinned with `--resolve`.
use egret_e2e::*;
use nix::sys::signal::Signal;
use std::process::{Command, Output};
use std::time::Duration;

/// The unprivileged user scripts/setup.sh creates.
pub(crate) const USER: &str = "egret-test";
const SECRET: &str = "exec-secret-7d1f";
const TOKEN_VAR: &str = "EGRET_EXEC_TEST_TOKEN";

struct Setup {
    topo: Topology,
    up: Upstream,
    pki: UpstreamPki,
    policy: String,
}

impl Setup {
    /// An upstream serving `api.example.test` (.2) and `other.example.test` (.3) with TLS
    /// and a policy injecting the secret into requests to `api.example.test`.
    fn new() -> Setup {
        let topo = Topology::new(SandboxNet::LoOnly);
        let (up, pki) = Upstream::start_tls_with(
            &topo,
            &["api.example.test", "other.example.test"],
            &["--log-header", "x-auth-token"],
        );
        let policy = write(
            &topo,
            "exec-policy.toml",
            &inject_header_policy(
                "api_token",
                &format!("env = \"{TOKEN_VAR}\""),
                &["api.example.test"],
            ),
        );
        Setup {
            topo,
            up,
            pki,
            policy,
        }
    }

    /// `egret exec` as `user` (None: root) in the egret namespace, with the pins, the
    /// upstream CA, the secret in egret's environment, `flags`, then `-- cmd`.
    fn exec_as(&self, user: Option<&str>, flags: &[&str], cmd: &[&str]) -> Command {
        let mut c = match user {
            Some(u) => {
                let mut c = self.topo.egr.cmd("setpriv");
                c.args(["--reuid", u, "--regid", u, "--clear-groups", "--reset-env"]);
                c.arg("env");
                c
            }
            None => {
                let mut c = self.topo.egr.cmd("env");
                c.args([
                    "-i",
                    "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/root",
                ]);
                c
            }
        };
        c.arg(format!("{TOKEN_VAR}={SECRET}"));
        c.arg(bin("egret")).arg("exec");
        c.args(["--resolve", &format!("api.example.test={}", UP4[0])]);
        c.args(["--resolve", &format!("other.example.test={}", UP4[1])]);
        c.args(["--upstream-ca", self.pki.ca.to_str().unwrap()]);
        c.args(flags).arg("--").args(cmd);
        c
    }

    fn exec(&self, flags: &[&str], cmd: &[&str]) -> Output {
        let mut c = self.exec_as(Some(USER), flags, cmd);
        c.output().expect("egret exec")
    }

    /// A scratch directory owned by [`USER`] (for what `egret exec` writes: sockets, policies).
    fn user_dir(&self, name: &str) -> std::path::PathBuf {
        let dir = self.topo.tmp.path(name);
        std::fs::create_dir(&dir).unwrap();
        let chown = Command::new("chown")
            .args(["-R", USER, dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success());
        dir
    }

    fn with_policy(&self, cmd: &[&str]) -> Output {
        self.exec(&["--policy", &self.policy], cmd)
    }
}

/// The tests share the user, and check that none of its processes is left: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn require_user() -> std::sync::MutexGuard<'static, ()> {
    require_root();
    assert!(
        Command::new("id")
            .arg(USER)
            .output()
            .unwrap()
            .status
            .success(),
        "user {USER} is missing: run scripts/setup.sh"
    );
    // The binary under test runs as that user: every directory above it must let others in.
    let egret = bin("egret");
    let reachable = Command::new("setpriv")
        .args([
            "--reuid",
            USER,
            "--regid",
            USER,
            "--clear-groups",
            "test",
            "-x",
        ])
        .arg(&egret)
        .status()
        .unwrap()
        .success();
    assert!(
        reachable,
        "user {USER} cannot execute {}: the checkout must be in directories others may enter \
         (chmod o+x on each, or clone it elsewhere); these tests run egret as an ordinary user",
        egret.display()
    );
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// No process of the test user is left (the command's daemons included). Zombies do not
/// count: one whose parent was killed waits for the machine's init to reap it.
fn assert_nothing_left() {
    let alive = || {
        let out = Command::new("ps")
            .args(["-u", USER, "-o", "stat=,pid=,args="])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim_start().starts_with('Z'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let gone = wait_until(Duration::from_secs(5), || alive().is_empty());
    assert!(gone, "processes left behind:\n{}", alive().join("\n"));
}

/// pip asking `index` for a package that does not exist (it talks HTTPS to it, finds nothing).
fn pip_download(index: &str) -> [&str; 12] {
    [
        "/usr/bin/python3",
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "-d",
        "/tmp",
        "--index-url",
        index,
        "egret-no-such-package",
    ]
}

fn echo_json(out: &Output) -> serde_json::Value {
    let (code, stdout, stderr) = code_out_err(out);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {stdout}\nstderr: {stderr}"));
    json(line)
}

#[test]
fn curl_python_and_node_get_a_credential_injected_with_no_flags() {
    let _serial = require_user();
    let s = Setup::new();
    let url = "https://api.example.test/echo";
    let curl = s.with_policy(&["curl", "-sS", "--max-time", "10", url]);
    assert_injected_and_masked(&echo_json(&curl), "x-auth-token", SECRET);
    let py = format!(
        "import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).read().decode())"
    );
    let python = s.with_policy(&["/usr/bin/python3", "-c", &py]);
    assert_injected_and_masked(&echo_json(&python), "x-auth-token", SECRET);
    let js = format!(
        "require('https').get('{url}', r => {{ let b = ''; r.on('data', d => b += d); \
         r.on('end', () => console.log(b)); }}).on('error', e => {{ console.error(e); process.exit(1); }})"
    );
    let node = s.with_policy(&["node", "-e", &js]);
    assert_injected_and_masked(&echo_json(&node), "x-auth-token", SECRET);
    // The command runs as the caller, without the variable egret read the secret from.
    let who = s.with_policy(&[
        "sh",
        "-c",
        &format!("id -un; echo token=${{{TOKEN_VAR}:-unset}}; cat /etc/resolv.conf"),
    ]);
    let (code, out, err) = code_out_err(&who);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("{USER}\ntoken=unset\n")), "{out}");
    assert!(out.contains("nameserver 127.0.0.1"), "{out}");
    assert_nothing_left();
}

#[test]
fn git_and_pip_reach_an_allowed_host_through_the_sandbox_ca() {
    let _serial = require_user();
    let s = Setup::new();
    // Neither finds a repository or a package there, but both talk HTTPS to it (no
    // certificate error) and egret injects the credential on the way.
    let git = s.with_policy(&["git", "ls-remote", "https://api.example.test/repo.git"]);
    let text = all_output(&git);
    assert!(!text.to_lowercase().contains("certificate"), "{text}");
    assert!(
        s.up.wait_log("/repo.git/info/refs", Duration::from_secs(5)),
        "git's request did not arrive: {text}\n{}",
        s.up.access_log()
    );
    let pip = s.with_policy(&pip_download("https://api.example.test/simple/"));
    let text = all_output(&pip);
    assert!(
        !text.contains("SSL") && !text.contains("CERTIFICATE"),
        "{text}"
    );
    assert!(
        s.up.wait_log("/simple/egret-no-such-package/", Duration::from_secs(5)),
        "pip's request did not arrive: {text}\n{}",
        s.up.access_log()
    );
    for l in s.up.access_log().lines() {
        if l.contains("/repo.git/") || l.contains("/simple/") {
            assert!(l.contains("x-auth-token=present"), "{l}");
        }
    }
    assert_nothing_left();
}

#[test]
fn allow_opens_one_host_and_the_rest_stays_denied() {
    let _serial = require_user();
    let s = Setup::new();
    let ok = s.exec(
        &["--allow", "api.example.test"],
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "https://api.example.test/echo",
        ],
    );
    let echo = echo_json(&ok);
    assert_eq!(echo["host"], "api.example.test");
    let denied = s.exec(
        &["--allow", "api.example.test"],
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "https://other.example.test/echo",
        ],
    );
    assert_ne!(denied.status.code(), Some(0), "{}", all_output(&denied));
    // A denied name does not resolve; a request for it on an allowed host's connection is
    // refused by egret.
    let plain = s.exec(
        &["--allow", "api.example.test"],
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://other.example.test/",
        ],
    );
    assert_eq!(plain.status.code(), Some(6), "{}", all_output(&plain));
    let smuggled = s.exec(
        &["--allow", "api.example.test"],
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-H",
            "Host: other.example.test",
            "http://api.example.test/",
        ],
    );
    assert_eq!(
        code_out_err(&smuggled).1,
        "403",
        "{}",
        all_output(&smuggled)
    );
    assert!(
        !s.up.access_log().contains("other.example.test"),
        "a denied host was reached: {}",
        s.up.access_log()
    );
    // Without --policy and --allow nothing leaves.
    let none = s.exec(
        &[],
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "https://api.example.test/echo",
        ],
    );
    assert_ne!(none.status.code(), Some(0), "{}", all_output(&none));
    assert_nothing_left();
}

#[test]
fn exit_codes_and_signals_pass_through_and_nothing_is_left() {
    let _serial = require_user();
    let s = Setup::new();
    assert_eq!(s.exec(&[], &["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(
        s.exec(&[], &["sh", "-c", "kill -TERM $$"]).status.code(),
        Some(143)
    );
    assert_eq!(
        s.exec(&[], &["egret-no-such-command"]).status.code(),
        Some(127)
    );
    // A daemon the command leaves behind ends with it.
    let daemon = s.exec(
        &[],
        &[
            "sh",
            "-c",
            "setsid sleep 300 >/dev/null 2>&1 & echo started",
        ],
    );
    assert_eq!(code_out_err(&daemon).1.trim(), "started");
    assert_nothing_left();

    // SIGTERM (and SIGINT sent with kill) to egret reach the command, which may handle them.
    for (sig, name) in [(Signal::SIGTERM, "TERM"), (Signal::SIGINT, "INT")] {
        let script = format!(
            "trap 'echo got-{name}; exit 3' {name}; echo ready; while :; do sleep 0.05; done"
        );
        let cmd = s.exec_as(Some(USER), &[], &["sh", "-c", &script]);
        let mut p = spawn(cmd, &s.topo.tmp.0, &format!("exec-{name}"));
        assert!(
            p.wait_output("ready", Duration::from_secs(20)),
            "{}",
            p.output()
        );
        p.signal(sig);
        let st = p
            .wait_timeout(Duration::from_secs(10))
            .expect("egret exec ended");
        assert_eq!(st.code(), Some(3), "{}", p.output());
        assert!(
            p.output().contains(&format!("got-{name}")),
            "{}",
            p.output()
        );
    }
    assert_nothing_left();
}

#[test]
fn a_command_cannot_undo_the_capture() {
    let _serial = require_user();
    let s = Setup::new();
    let direct = format!("https://{}/echo", UP4[0]);
    // As the caller: no capability in its namespaces, not even after making a user
    // namespace of its own (that one owns no network namespace the command is in).
    let script = format!(
        "/usr/sbin/nft flush ruleset && echo FLUSHED; /usr/sbin/ip rule del pref 100 && echo RULE-DELETED; \
         unshare -r /usr/sbin/nft flush ruleset && echo FLUSHED-IN-USERNS; \
         curl -skf --max-time 3 {direct} && echo REACHED; \
         unshare -rn sh -c '/usr/sbin/ip link set lo up; curl -skf --max-time 3 {direct}' && echo REACHED-NEW-NETNS; echo done"
    );
    let out = s.with_policy(&["sh", "-c", &script]);
    let text = all_output(&out);
    assert!(text.contains("done"), "{text}");
    for bad in ["FLUSHED\n", "RULE-DELETED", "FLUSHED-IN-USERNS", "REACHED"] {
        assert!(!text.contains(bad), "{bad}: {text}");
    }

    // Run by root, the command is root in its user namespace and can remove every rule
    // egret installed; still the namespace has no interface but lo and egret's blackhole.
    let script = format!(
        "nft flush ruleset && nft list ruleset | wc -l && ip rule del pref 100 && \
         ip -6 rule del pref 100 && ip link set egret-bh1 up && ip route replace default dev egret-bh0 && echo UNDONE; \
         curl -skf --max-time 3 {direct} && echo REACHED; \
         curl -sf --max-time 3 http://{}/ && echo REACHED-HTTP; echo done",
        UP4[0]
    );
    let out = s
        .exec_as(None, &["--policy", &s.policy], &["sh", "-c", &script])
        .output()
        .unwrap();
    let text = all_output(&out);
    assert!(
        text.contains("0\nUNDONE") && text.contains("done"),
        "{text}"
    );
    assert!(!text.contains("REACHED"), "{text}");
    assert!(
        s.up.access_log().is_empty(),
        "the upstream was reached: {}",
        s.up.access_log()
    );
    assert_nothing_left();
}

/// Ctrl-C typed at the terminal: the terminal signals its whole foreground process group, so
/// the command gets SIGINT once (egret does not pass on a second copy) and egret ends with it.
#[test]
fn ctrl_c_at_the_terminal_reaches_the_command_once() {
    let _serial = require_user();
    let s = Setup::new();
    let script = "n=0; trap 'n=$((n+1))' INT; echo ready; \
                  while [ $n -eq 0 ]; do sleep 0.05; done; sleep 0.5; echo interrupts=$n; exit 4";
    let cmd = s.exec_as(Some(USER), &[], &["sh", "-c", script]);
    let text = on_terminal(&cmd, "ready", "\x03");
    assert!(text.contains("interrupts=1"), "{text}");
    assert!(text.contains("exit=4"), "{text}");
    assert_nothing_left();
}

/// Where user namespaces are refused (here: `user.max_user_namespaces` is 0 in the user
/// namespace egret runs in, a limit its owner may set) egret names the setting and the fix.
#[test]
fn a_refused_user_namespace_is_explained() {
    let _serial = require_user();
    let s = Setup::new();
    let egret = format!("{} exec -- true", bin("egret").display());
    let out = s
        .topo
        .egr
        .cmd("setpriv")
        .args([
            "--reuid",
            USER,
            "--regid",
            USER,
            "--clear-groups",
            "--reset-env",
        ])
        .args(["unshare", "-Ur", "sh", "-c"])
        .arg(format!(
            "echo 0 > /proc/sys/user/max_user_namespaces && {egret}"
        ))
        .output()
        .unwrap();
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(125), "{text}");
    assert!(
        text.contains("user.max_user_namespaces is 0")
            && text.contains("sysctl -w user.max_user_namespaces=")
            && text.contains("egret exec --proxy-env"),
        "{text}"
    );
    assert_nothing_left();
}

/// `--proxy-env`, the mode without namespaces: programs that honour the proxy variables reach
/// an allowed host through egret's explicit proxy (HTTPS through CONNECT, intercepted with
/// the sandbox CA from the bundle file the CA variables name; plain HTTP in absolute form)
/// with the credential injected; a denied host's CONNECT is answered 403 with egret's reason.
#[test]
fn proxy_env_carries_programs_that_honour_proxy_variables() {
    let _serial = require_user();
    let s = Setup::new();
    let pe = |cmd: &[&str]| s.exec(&["--policy", &s.policy, "--proxy-env"], cmd);
    let https = "https://api.example.test/echo";
    let curl = pe(&["curl", "-sS", "--max-time", "10", https]);
    assert_injected_and_masked(&echo_json(&curl), "x-auth-token", SECRET);
    let plain = pe(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://api.example.test/echo",
    ]);
    assert_injected_and_masked(&echo_json(&plain), "x-auth-token", SECRET);
    let py = format!(
        "import urllib.request; print(urllib.request.urlopen('{https}', timeout=10).read().decode())"
    );
    let python = pe(&["/usr/bin/python3", "-c", &py]);
    assert_injected_and_masked(&echo_json(&python), "x-auth-token", SECRET);
    // git and pip honour the variables too (neither finds anything there, both talk HTTPS
    // to it through egret, credential injected).
    let git = pe(&["git", "ls-remote", "https://api.example.test/proxied.git"]);
    let text = all_output(&git);
    assert!(!text.to_lowercase().contains("certificate"), "{text}");
    let pip = pe(&pip_download("https://api.example.test/proxied-simple/"));
    let text = all_output(&pip);
    assert!(
        !text.contains("SSL") && !text.contains("CERTIFICATE"),
        "{text}"
    );
    for path in [
        "/proxied.git/info/refs",
        "/proxied-simple/egret-no-such-package/",
    ] {
        assert!(
            s.up.wait_log(path, Duration::from_secs(5)),
            "{path} did not arrive: {}",
            s.up.access_log()
        );
    }
    for l in s.up.access_log().lines().filter(|l| l.contains("/proxied")) {
        assert!(l.contains("x-auth-token=present"), "{l}");
    }

    // A denied host: curl fails on the proxy's answer, which names the rule.
    let denied = pe(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "https://other.example.test/echo",
    ]);
    let text = all_output(&denied);
    assert_eq!(denied.status.code(), Some(56), "{text}");
    assert!(text.contains("403"), "{text}");
    let raw = "import os, socket, urllib.parse\n\
               u = urllib.parse.urlsplit(os.environ['HTTPS_PROXY'])\n\
               c = socket.create_connection((u.hostname, u.port), timeout=10)\n\
               c.sendall(b'CONNECT other.example.test:443 HTTP/1.1\\r\\nHost: other.example.test:443\\r\\n\\r\\n')\n\
               print(c.makefile('rb').read().decode())";
    let answer = pe(&["/usr/bin/python3", "-c", raw]);
    let (code, out, err) = code_out_err(&answer);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{out}");
    assert!(
        out.contains("egret: CONNECT to other.example.test:443 denied by rule"),
        "{out}"
    );
    assert!(
        !s.up.access_log().contains("other.example.test"),
        "a denied host was reached: {}",
        s.up.access_log()
    );

    // The command's environment: egret's proxy for every scheme, nothing bypassing it, the
    // CA bundle in a private directory that is gone afterwards, not the secret's variable.
    let env = pe(&[
        "sh",
        "-c",
        &format!(
            "echo \"$HTTP_PROXY|$HTTPS_PROXY|$ALL_PROXY|$http_proxy|$https_proxy|$all_proxy\"; \
             echo \"no_proxy=[$NO_PROXY$no_proxy] token=${{{TOKEN_VAR}:-unset}}\"; \
             echo \"$SSL_CERT_FILE|$CURL_CA_BUNDLE|$NODE_EXTRA_CA_CERTS\"; \
             stat -c %a \"$(dirname \"$SSL_CERT_FILE\")\"; grep -c 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\""
        ),
    ]);
    let (code, out, err) = code_out_err(&env);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let proxies: Vec<&str> = lines[0].split('|').collect();
    assert!(proxies[0].starts_with("http://127.0.0.1:"), "{out}");
    assert!(proxies.iter().all(|p| *p == proxies[0]), "{out}");
    assert_eq!(lines[1], "no_proxy=[] token=unset", "{out}");
    let bundles: Vec<&str> = lines[2].split('|').collect();
    assert!(bundles.iter().all(|b| *b == bundles[0]), "{out}");
    assert_eq!(lines[3], "700", "{out}");
    assert!(lines[4].parse::<u32>().unwrap() > 1, "{out}");
    let dir = std::path::Path::new(bundles[0]).parent().unwrap();
    assert!(!dir.exists(), "{} was left behind", dir.display());

    assert_eq!(pe(&["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(pe(&["sh", "-c", "kill -TERM $$"]).status.code(), Some(143));
    assert_eq!(pe(&["egret-no-such-command"]).status.code(), Some(127));
    assert_nothing_left();
}

/// `egret run --explicit-proxy ADDR`: beside the transparent capture of its sandbox, and
/// without any sandbox (no `--netns`), egret serves an explicit proxy in its own namespace
/// under the same policy, handlers, CA and audit.
#[test]
fn run_serves_an_explicit_proxy_with_or_without_a_sandbox() {
    require_root();
    let Setup {
        topo,
        up,
        pki,
        policy,
    } = Setup::new();
    let pins = [
        "--resolve",
        &format!("api.example.test={}", UP4[0]),
        "--resolve",
        &format!("other.example.test={}", UP4[1]),
    ];
    let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
    let mut args = vec!["--policy", &policy, "--ca-out", &ca];
    args.extend(["--upstream-ca", pki.ca.to_str().unwrap()]);
    args.extend(["--explicit-proxy", "127.0.0.1:3128"]);
    args.extend_from_slice(&pins);
    let egret = Egret::start_with_env(&topo, "explicit", &args, &[(TOKEN_VAR, SECRET)])
        .expect("egret starts");
    let through = |proxy: &str, ca: &str, url: &str| {
        let out = topo
            .egr
            .cmd("curl")
            .args(["-sS", "--max-time", "10", "-x", proxy, "--cacert", ca, url])
            .output()
            .unwrap();
        out
    };
    let https = through(
        "http://127.0.0.1:3128",
        &ca,
        "https://api.example.test/echo",
    );
    assert_injected_and_masked(&echo_json(&https), "x-auth-token", SECRET);
    let plain = through("http://127.0.0.1:3128", &ca, "http://api.example.test/echo");
    assert_injected_and_masked(&echo_json(&plain), "x-auth-token", SECRET);
    let denied = through(
        "http://127.0.0.1:3128",
        &ca,
        "https://other.example.test/echo",
    );
    assert_eq!(denied.status.code(), Some(56), "{}", all_output(&denied));
    // The sandbox is still captured transparently.
    let (code, out, err) = topo.curl(&["--cacert", &ca, "https://api.example.test/echo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_injected_and_masked(&json(&out), "x-auth-token", SECRET);
    // Audited like captured traffic; no address was dialled for a CONNECT to a name.
    let secs = Duration::from_secs(5);
    let fwd = egret
        .wait_audit(secs, |e| {
            e["host"] == "api.example.test"
                && e["proto"].as_str().unwrap_or("").starts_with("https")
                && e["dst"].is_null()
        })
        .unwrap_or_else(|| panic!("no explicit-proxy request event:\n{}", egret.logs()));
    assert_eq!(fwd["decision"], "forward", "{fwd}");
    assert_eq!(fwd["handler"], "inject", "{fwd}");
    let deny = egret
        .wait_audit(secs, |e| {
            e["host"] == "other.example.test" && e["decision"] == "deny"
        })
        .unwrap_or_else(|| panic!("no deny event:\n{}", egret.logs()));
    assert!(deny["dst"].is_null(), "{deny}");
    let captured = egret
        .wait_audit(secs, |e| {
            e["host"] == "api.example.test" && !e["dst"].is_null()
        })
        .unwrap_or_else(|| panic!("no event of the captured request:\n{}", egret.logs()));
    assert_eq!(captured["handler"], "inject", "{captured}");
    drop(egret);

    // No sandbox at all: only the explicit proxy.
    let ready = topo.tmp.path("explicit-only.ready");
    let ca2 = topo.tmp.path("explicit-only-ca.pem");
    let mut cmd = topo.egr.cmd(bin("egret").to_str().unwrap());
    cmd.args(["run", "--sandbox-id", "explicit-only"]);
    cmd.args(["--explicit-proxy", "127.0.0.1:3129", "--policy", &policy]);
    cmd.args(["--ca-out", ca2.to_str().unwrap()]);
    cmd.args(["--upstream-ca", pki.ca.to_str().unwrap()]);
    cmd.args(["--ready-file", ready.to_str().unwrap()])
        .args(pins);
    cmd.env(TOKEN_VAR, SECRET);
    let mut only = spawn(cmd, &topo.tmp.0, "egret-explicit-only");
    wait_ready(&mut only, &ready, Duration::from_secs(30)).unwrap();
    let https = through(
        "http://127.0.0.1:3129",
        ca2.to_str().unwrap(),
        "https://api.example.test/echo",
    );
    assert_injected_and_masked(&echo_json(&https), "x-auth-token", SECRET);
    let tables = topo.sbx.run("nft", &["list", "tables"]);
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("egret"),
        "egret without --netns touched a namespace"
    );
    drop(up);
}

/// Runs `cmd` on a new pseudo-terminal (its controlling terminal), typing `text` each time
/// another `trigger` appears in its output; everything written there, ending with `exit=N`.
fn on_terminal(cmd: &Command, trigger: &str, text: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(include_str!("../../clients/pty_type.py"))
        .args([trigger, text])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .unwrap();
    all_output(&out)
}

/// `egret exec --ask ... -- CMD` on a terminal answered with `reply` (empty: never answered).
fn ask_on_terminal(s: &Setup, reply: &str, flags: &[&str], cmd: &[&str]) -> String {
    let typed = if reply.is_empty() {
        String::new()
    } else {
        format!("{reply}\n")
    };
    on_terminal(&s.exec_as(Some(USER), flags, cmd), "[d]eny?", &typed)
}

/// `--ask` on the controlling terminal: a host no rule decides is held while egret asks; once
/// lets that connection through, deny and silence (after `--ask-timeout`) refuse it, always
/// writes it into the policy file (comments kept), and each audit event says who decided.
#[test]
fn ask_holds_an_undecided_host_until_the_terminal_answers() {
    let _serial = require_user();
    let s = Setup::new();
    let audit = s.topo.tmp.path("ask-audit.jsonl");
    std::fs::File::create(&audit).unwrap();
    let chown = Command::new("chown")
        .args([USER, audit.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let url = "https://other.example.test/echo";
    let curl = ["curl", "-sS", "--max-time", "20", url];
    let flags = |extra: &[&'static str]| {
        let mut f = vec!["--policy", s.policy.as_str(), "--ask"];
        f.extend(["--audit-log", audit.to_str().unwrap()]);
        f.extend_from_slice(extra);
        f
    };
    let once = ask_on_terminal(&s, "o", &flags(&[]), &curl);
    assert!(
        once.contains("no rule decides other.example.test:443"),
        "{once}"
    );
    assert!(once.contains("\"host\":\"other.example.test\""), "{once}");
    assert!(once.trim_end().ends_with("exit=0"), "{once}");
    let denied = ask_on_terminal(&s, "d", &flags(&[]), &curl);
    assert!(!denied.trim_end().ends_with("exit=0"), "{denied}");
    let silent = ask_on_terminal(&s, "", &flags(&["--ask-timeout", "1"]), &curl);
    assert!(!silent.trim_end().ends_with("exit=0"), "{silent}");
    let events = parse_audit(&std::fs::read_to_string(&audit).unwrap());
    let by = |who: &str| {
        events
            .iter()
            .any(|e| e["host"] == "other.example.test" && e["decided_by"] == who)
    };
    assert!(by("terminal") && by("timeout"), "{events:?}");
    assert!(
        events.iter().all(|e| e["decided_by"].is_string()),
        "{events:?}"
    );

    // Always: into the policy file (a copy the user may write), comments kept; the next run
    // reaches the host without asking.
    let dir = s.topo.tmp.path("ask-always");
    std::fs::create_dir(&dir).unwrap();
    let policy = dir.join("policy.toml");
    let text = format!(
        "# the agent's policy\n{}",
        std::fs::read_to_string(&s.policy).unwrap()
    );
    std::fs::write(&policy, &text).unwrap();
    let chown = Command::new("chown")
        .args(["-R", USER, dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let p = policy.to_str().unwrap();
    let always = ask_on_terminal(&s, "a", &["--policy", p, "--ask"], &curl);
    assert!(always.trim_end().ends_with("exit=0"), "{always}");
    let now = std::fs::read_to_string(&policy).unwrap();
    assert!(now.starts_with(&text), "{now}");
    assert!(now.contains("other.example.test"), "{now}\n{always}");
    let again = s.exec(&["--policy", p], &curl);
    assert_eq!(echo_json(&again)["host"], "other.example.test");
    assert_nothing_left();
}

/// `--ask` answered by a supervisor over the admin socket (`egret ctl pending|approve|deny`),
/// with no terminal (`setsid`); without a terminal and an admin socket nobody can be asked and
/// the host is denied at once.
#[test]
fn ask_is_answered_through_the_admin_socket() {
    let _serial = require_user();
    let s = Setup::new();
    let dir = s.user_dir("ask-admin");
    let sock = dir.join("admin.sock");
    let sock = sock.to_str().unwrap();
    let curl = [
        "curl",
        "-sS",
        "--max-time",
        "20",
        "https://other.example.test/echo",
    ];
    let detached = |flags: &[&str], name: &str| {
        let c = s.exec_as(Some(USER), flags, &curl);
        let mut d = Command::new("setsid");
        d.arg("-w").arg(c.get_program()).args(c.get_args());
        spawn(d, &s.topo.tmp.0, name)
    };
    let flags = ["--policy", &s.policy, "--ask", "--admin-socket", sock];
    let proxied = [&flags[..], &["--proxy-env"]].concat();
    let pending = || {
        let (code, out, err) = ctl(sock, &["--json", "pending"]);
        assert_eq!(code, 0, "{out}{err}");
        json(&out)["pending"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    // Captured, and through the explicit proxy (asked once, at the CONNECT: the approval
    // covers the intercepted requests).
    for (answer, ok, flags) in [
        ("approve", true, &flags[..]),
        ("deny", false, &flags[..]),
        ("approve", true, &proxied[..]),
    ] {
        let mut p = detached(flags, &format!("ask-admin-{answer}"));
        let mut id = None;
        assert!(
            wait_until(Duration::from_secs(20), || {
                id = std::path::Path::new(sock)
                    .exists()
                    .then(pending)
                    .and_then(|l| l.first().cloned());
                id.is_some()
            }),
            "nothing pending: {}",
            p.output()
        );
        let q = id.unwrap();
        assert_eq!(q["host"], "other.example.test", "{q}");
        assert_eq!(q["port"], 443, "{q}");
        let id = q["id"].as_u64().unwrap().to_string();
        let (code, out, err) = ctl(sock, &[answer, &id]);
        assert_eq!(code, 0, "{out}{err}");
        let st = p
            .wait_timeout(Duration::from_secs(20))
            .expect("egret exec ended");
        assert_eq!(st.success(), ok, "{}", p.output());
        if ok {
            assert!(
                p.output().contains("\"host\":\"other.example.test\""),
                "{}",
                p.output()
            );
        }
    }
    // An answer to a question nobody holds is refused.
    let mut p = detached(&flags, "ask-admin-gone");
    assert!(wait_until(
        Duration::from_secs(20),
        || std::path::Path::new(sock).exists() && !pending().is_empty()
    ));
    let (code, _, err) = ctl(sock, &["approve", "999"]);
    assert_ne!(code, 0);
    assert!(err.contains("no pending question 999"), "{err}");
    let id = pending()[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(ctl(sock, &["approve", "--run", &id]).0, 0);
    assert!(
        p.wait_timeout(Duration::from_secs(20))
            .expect("ended")
            .success(),
        "{}",
        p.output()
    );

    // Nobody to ask: denied at once, by the policy (not after the timeout).
    let audit = dir.join("nobody.jsonl");
    let audit = audit.to_str().unwrap();
    let mut p = detached(
        &["--policy", &s.policy, "--ask", "--audit-log", audit],
        "ask-nobody",
    );
    let st = p.wait_timeout(Duration::from_secs(20)).expect("ended");
    assert!(!st.success(), "{}", p.output());
    let events = parse_audit(&std::fs::read_to_string(audit).unwrap_or_default());
    assert!(
        events.iter().any(|e| e["host"] == "other.example.test"
            && e["decision"] == "deny"
            && e["decided_by"] == "policy"),
        "{events:?}"
    );
    assert_nothing_left();
}

/// `--ask` on a terminal, answered by a supervisor over the admin socket: the prompt on the
/// terminal is annotated with that decision (it does not stay there waiting for an answer that
/// no longer counts), and the next question's prompt follows it.
#[test]
fn a_prompt_answered_through_the_admin_socket_is_annotated_on_the_terminal() {
    let _serial = require_user();
    let s = Setup::new();
    let dir = s.user_dir("ask-stale");
    let sock = dir.join("admin.sock");
    let sock = sock.to_str().unwrap();
    // Two connections, one after the other, each asked about (approved once).
    let url = "https://other.example.test/echo";
    let twice = format!("curl -sS --max-time 20 {url} && curl -sS --max-time 20 {url}");
    let exec = s.exec_as(
        Some(USER),
        &["--policy", &s.policy, "--ask", "--admin-socket", sock],
        &["sh", "-c", &twice],
    );
    // On a terminal where nobody types.
    let mut t = Command::new("/usr/bin/python3");
    t.arg("-c")
        .arg(include_str!("../../clients/pty_type.py"))
        .args(["[d]eny?", ""])
        .arg(exec.get_program())
        .args(exec.get_args());
    let mut p = spawn(t, &s.topo.tmp.0, "ask-stale");
    for id in [1u64, 2] {
        let asked = wait_until(Duration::from_secs(20), || {
            if !std::path::Path::new(sock).exists() {
                return false;
            }
            let (code, out, _) = ctl(sock, &["--json", "pending"]);
            code == 0 && json(&out)["pending"][0]["id"] == id
        });
        assert!(asked, "question {id} not pending: {}", p.output());
        let (code, out, err) = ctl(sock, &["approve", &id.to_string()]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert!(p.wait_timeout(Duration::from_secs(30)).is_some());
    let screen = p.output();
    assert!(screen.trim_end().ends_with("exit=0"), "{screen}");
    let note = |id: u64| format!("egret: [{id}] allowed once (answered through the admin socket)");
    let (first, second) = (
        screen.find(&note(1)).expect(&screen),
        screen.find(&note(2)).expect(&screen),
    );
    let prompt2 = screen
        .find("egret: [2] no rule decides other.example.test:443")
        .expect(&screen);
    assert!(first < prompt2 && prompt2 < second, "{screen}");
    assert_nothing_left();
}

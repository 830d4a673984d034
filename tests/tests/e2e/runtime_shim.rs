//! egret attached by Docker and containerd through its runtime shim (`egret runc`), with
//! Debian's docker.io (20.10) and containerd (1.6), which never read `hooks.d`. Each test
//! starts its own daemon in a network namespace it made (`nsenter --net=`, so the daemon and
//! the sidecars it starts share that namespace), with its own data root, state and socket;
//! nothing is pulled: the image is a root filesystem assembled here from this machine's
//! `sh`, `curl`, `sleep` and `cat` and the libraries `ldd` lists for them.
use crate::oci::{run_dirs_under, sidecars_under};
use egret_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The package's docker CLI (`/usr/local/bin/docker` may be another one).
const DOCKER: &str = "/usr/bin/docker";

fn require(tools: &[&str]) {
    require_root();
    for tool in tools {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(
            found,
            "{tool} not found: run scripts/setup.sh (it installs docker.io and containerd for these tests)"
        );
    }
}

/// A minimal root filesystem: the programs and their libraries, an image trust bundle (the
/// hook appends the sandbox CA to it) and `/etc/resolv.conf` pointing at egret's DNS.
fn assemble_rootfs(root: &Path) {
    for dir in ["bin", "etc/ssl/certs", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for program in ["/bin/sh", "/usr/bin/curl", "/bin/sleep", "/bin/cat"] {
        let name = Path::new(program).file_name().unwrap();
        std::fs::copy(program, root.join("bin").join(name)).unwrap();
        let ldd = sh("ldd", &[program]).unwrap();
        for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let dest = root.join(lib.trim_start_matches('/'));
            if !dest.exists() {
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(lib, &dest).unwrap();
            }
        }
    }
    std::fs::write(
        root.join("etc/ssl/certs/ca-certificates.crt"),
        "image roots\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
}

/// Unmount whatever a killed daemon left mounted under `dir` (deepest first), so that the
/// directory can be removed.
fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).output();
    }
}

/// A daemon started by a test in its namespace (`nsenter --net=`, which execs it: the child
/// is the daemon), with its files in a directory of its own; on drop it is stopped (SIGTERM,
/// then SIGKILL) and whatever it left mounted there is unmounted.
struct Daemon {
    dir: TempDir,
    proc: Option<Proc>,
}

impl Daemon {
    fn start(ns: &Netns, dir: TempDir, program: &str, args: &[std::ffi::OsString]) -> Daemon {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", ns.name))
            .arg(program)
            .args(args);
        let proc = spawn(cmd, &dir.0, program);
        Daemon {
            dir,
            proc: Some(proc),
        }
    }

    /// Wait until `ready` holds, failing with the daemon's output.
    fn wait(&self, what: &str, ready: impl FnMut() -> bool) {
        assert!(
            wait_until(Duration::from_secs(30), ready),
            "{what} did not start: {}",
            self.proc.as_ref().unwrap().output()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(nix::sys::signal::Signal::SIGTERM);
            if p.wait_timeout(Duration::from_secs(15)).is_none() {
                p.signal(nix::sys::signal::Signal::SIGKILL);
                let _ = p.wait_timeout(Duration::from_secs(5));
            }
        }
        unmount_under(&self.dir.0);
    }
}

/// The upstream, in the daemon's namespace (where the sidecars run): HTTPS for `up.test` and
/// plain HTTP as the witness of any connection that bypassed egret.
struct Upstreams {
    _proc: Proc,
    https_port: u16,
    http_port: u16,
    log: PathBuf,
    ca: PathBuf,
}

impl Upstreams {
    fn start(ns: &Netns, tmp: &TempDir) -> Upstreams {
        let pki = upstream_pki(&tmp.0, "up", &["up.test"]);
        let (https_port, http_port) = (8443, 8080);
        let log = tmp.path("up.access.log");
        let ready = tmp.path("up.ready");
        let mut cmd = ns.cmd(bin("egret-testsrv").to_str().unwrap());
        cmd.args(["--https", &format!("0.0.0.0:{https_port}")]);
        cmd.args(["--http", &format!("0.0.0.0:{http_port}")]);
        cmd.args(["--cert", pki.cert.to_str().unwrap()]);
        cmd.args(["--key", pki.key.to_str().unwrap(), "--name", "up"]);
        cmd.arg("--log").arg(&log).arg("--ready-file").arg(&ready);
        let mut proc = spawn(cmd, &tmp.0, "up");
        wait_ready(&mut proc, &ready, Duration::from_secs(20)).unwrap();
        Upstreams {
            _proc: proc,
            https_port,
            http_port,
            log,
            ca: pki.ca,
        }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The shim's options every test gives it: its own run root and handler cache, the upstream's
/// CA for the sidecars.
fn shim_options(tmp: &TempDir, upstream_ca: &Path) -> Vec<String> {
    vec![
        "--run-root".into(),
        tmp.path("run").to_string_lossy().into_owned(),
        "--handler-cache-dir".into(),
        tmp.path("handler-cache").to_string_lossy().into_owned(),
        "--ready-timeout-ms".into(),
        "20000".into(),
        "--run-arg=--upstream-ca".into(),
        format!("--run-arg={}", upstream_ca.display()),
    ]
}

fn policy_text(token_file: &Path, up_addr: &str) -> String {
    format!(
        "intercept_https = true\nallowed_hosts = [\"up.test\"]\n\n[resolve]\n\"up.test\" = [\"{up_addr}\"]\n{}",
        inject_header_policy("token", &format!("file = \"{}\"", token_file.display()), &["up.test"])
    )
}

/// A private dockerd (and the containerd it starts) in `ns`; on drop every container is
/// removed, then the daemon stopped.
struct Dockerd {
    sock: String,
    daemon: Daemon,
}

impl Dockerd {
    fn start(ns: &Netns, id: &str, daemon_json: &str) -> Dockerd {
        let dir = TempDir::new(&format!("dockerd-{id}"));
        std::fs::write(dir.path("daemon.json"), daemon_json).unwrap();
        let sock = dir.path("docker.sock").to_string_lossy().into_owned();
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        for (flag, file) in [
            ("--data-root", "data"),
            ("--exec-root", "exec"),
            ("--pidfile", "docker.pid"),
            ("--config-file", "daemon.json"),
        ] {
            args.push(flag.into());
            args.push(dir.path(file).into());
        }
        args.push(format!("--host=unix://{sock}").into());
        for flag in [
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--storage-driver=vfs",
            "--userland-proxy=false",
        ] {
            args.push(flag.into());
        }
        let d = Dockerd {
            sock,
            daemon: Daemon::start(ns, dir, "dockerd", &args),
        };
        d.daemon.wait("dockerd", || {
            d.docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
        });
        d
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(["-H", &format!("unix://{}", self.sock)])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            all_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for cid in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", cid]);
        }
    }
}

/// The container's entrypoint: its first act is a connection the policy denies, to the
/// witness on the network's gateway (reachable without egret); then it idles.
fn first_connection_entrypoint(gateway: &str, port: u16) -> String {
    format!(
        "curl -sS --max-time 5 -o /dev/null -w 'status=%{{http_code}} ' http://{gateway}:{port}/first-connection; echo first-connection-exit=$?; exec sleep 600"
    )
}

/// What both tests start from: the test's namespace with the upstreams in it, and a policy
/// that injects a token from a file into requests to `up.test`. Dropped in field order: the
/// upstream, the namespace, then the files.
struct Stage {
    id: String,
    up: Upstreams,
    ns: Netns,
    token: String,
    policy: PathBuf,
    good_policy: String,
    run_root: PathBuf,
    tmp: TempDir,
}

impl Stage {
    fn new(tag: &str) -> Stage {
        let id = unique_id();
        let tmp = TempDir::new(&format!("shim-{tag}-{id}"));
        let ns = Netns::new(&format!("{}-{tag}{id}", ns_prefix()));
        let up = Upstreams::start(&ns, &tmp);
        let token = format!("tok-{id}-{tag}-secret");
        let token_file = tmp.path("token");
        std::fs::write(&token_file, &token).unwrap();
        let policy = tmp.path("policy.toml");
        let good_policy = policy_text(&token_file, "127.0.0.1");
        std::fs::write(&policy, &good_policy).unwrap();
        Stage {
            run_root: tmp.path("run"),
            id,
            up,
            ns,
            token,
            policy,
            good_policy,
            tmp,
        }
    }
}

#[test]
fn docker_runtime_egret_attaches_before_the_first_connection_and_refuses_what_it_cannot_protect() {
    require(&[DOCKER, "dockerd", "containerd", "runc", "nsenter", "ldd"]);
    let stage = Stage::new("dk");
    let Stage {
        id,
        up,
        ns,
        token,
        policy,
        good_policy,
        run_root,
        tmp,
    } = &stage;

    let mut cmd = Command::new(bin("egret"));
    cmd.args(["runc", "docker-config", "--default-policy"])
        .arg(policy)
        .args(shim_options(tmp, &up.ca));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "docker-config: {}", all_output(&out));
    let daemon_json = String::from_utf8(out.stdout).unwrap();
    let dockerd = Dockerd::start(ns, id, &daemon_json);

    let rootfs = tmp.path("rootfs");
    assemble_rootfs(&rootfs);
    let tar = tmp.path("rootfs.tar");
    sh(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    )
    .unwrap();
    let image = format!("egret-shim-test:{id}");
    dockerd.ok(&["import", tar.to_str().unwrap(), &image]);
    // A network on which the container reaches the gateway (this test's namespace) directly:
    // a connection egret did not capture would get through.
    let net = format!("egret-shim-{id}");
    dockerd.ok(&["network", "create", "--subnet", "10.213.0.0/24", &net]);
    let gateway = "10.213.0.1";
    let entry = first_connection_entrypoint(gateway, up.http_port);

    // Without egret's runtime the first connection reaches the witness: the network lets it.
    let plain = format!("plain-{id}");
    dockerd.ok(&[
        "run",
        "-d",
        "--name",
        &plain,
        "--network",
        &net,
        &image,
        "sh",
        "-c",
        &entry,
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || dockerd
            .ok(&["logs", &plain])
            .contains("first-connection-exit=")),
        "{}",
        dockerd.ok(&["logs", &plain])
    );
    assert!(
        up.access_log().contains("/first-connection"),
        "the plain container reaches the gateway: {}\n{}",
        dockerd.ok(&["logs", &plain]),
        up.access_log()
    );
    assert!(
        sidecars_under(run_root).is_empty(),
        "no egret for a container without the runtime"
    );
    assert!(run_dirs_under(run_root).is_empty());
    dockerd.ok(&["rm", "-f", &plain]);
    std::fs::write(&up.log, "").unwrap();

    // With it: egret captures from the container's first instruction on.
    let name = format!("egret-{id}");
    dockerd.ok(&[
        "run",
        "-d",
        "--runtime",
        "egret",
        "--name",
        &name,
        "--network",
        &net,
        &image,
        "sh",
        "-c",
        &entry,
    ]);
    let cid = dockerd.ok(&["inspect", "-f", "{{.Id}}", &name]);
    let pid: u32 = dockerd
        .ok(&["inspect", "-f", "{{.State.Pid}}", &name])
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || dockerd
            .ok(&["logs", &name])
            .contains("first-connection-exit=")),
        "{}",
        dockerd.ok(&["logs", &name])
    );
    let logs = dockerd.ok(&["logs", &name]);
    eprintln!("first connection through egret: {}", logs.trim());
    assert_eq!(
        up.access_log(),
        "",
        "the upstream saw the container's first connection: {logs}"
    );
    let sidecars = sidecars_under(run_root);
    assert_eq!(sidecars.len(), 1, "one egret: {sidecars:?}");
    assert_eq!(run_dirs_under(run_root), std::slice::from_ref(&cid));
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let netns_path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&netns)
    );
    let nft = |p: &str| sh("nsenter", &[&format!("--net={p}"), "nft", "list", "tables"]).unwrap();
    assert!(nft(&netns_path).contains("inet egret"));

    // HTTPS to the allowed host, trusted through the image's own bundle (the hook added the
    // sandbox CA): the credential reaches the upstream, the container sees it masked.
    let resolve = |host: &str| format!("{host}:{}:{gateway}", up.https_port);
    let url = format!("https://up.test:{}/echo", up.https_port);
    let exec = |args: &[&str]| {
        let mut a = vec!["exec", name.as_str()];
        a.extend_from_slice(args);
        code_out_err(&dockerd.docker(&a))
    };
    let (code, out, err) = exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve("up.test"),
        &url,
    ]);
    let run_dir = run_root.join(&cid);
    assert_eq!(
        code,
        0,
        "curl in the container: {out} {err}\negret: {}",
        std::fs::read_to_string(run_dir.join("egret.log")).unwrap_or_default()
    );
    let echo = json(&out);
    assert_injected_and_masked(&echo, "x-auth-token", token);
    assert!(!out.contains(token.as_str()) && !err.contains(token.as_str()));
    let (code, out, _) = exec(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--resolve",
        &resolve("evil.test"),
        &format!("https://evil.test:{}/", up.https_port),
    ]);
    assert_ne!(code, 0, "evil.test must be denied: {out}");
    assert!(!up.access_log().contains("evil"), "{}", up.access_log());

    // docker rm -f: the poststop hook stops egret and removes its run directory and table.
    dockerd.ok(&["rm", "-f", &name]);
    assert!(
        wait_until(Duration::from_secs(15), || sidecars_under(run_root)
            .is_empty()),
        "egret outlived docker rm -f"
    );
    assert!(
        wait_until(Duration::from_secs(5), || run_dirs_under(run_root)
            .is_empty()),
        "run directories left: {:?}",
        run_dirs_under(run_root)
    );
    assert!(!nft(&netns_path).contains("egret"));
    drop(netns);

    // What egret cannot protect does not start, and the error names the policy file.
    let refused = |what: &str, args: &[&str], needles: &[&str]| {
        let cname = format!("{what}-{id}");
        let mut a = vec!["run", "-d", "--runtime", "egret", "--name", cname.as_str()];
        a.extend_from_slice(args);
        a.extend_from_slice(&[image.as_str(), "sleep", "600"]);
        let out = dockerd.docker(&a);
        let err = all_output(&out);
        eprintln!("{what}: {}", err.trim());
        assert!(!out.status.success(), "{what}: the container started");
        for n in needles {
            assert!(err.contains(n), "{what}: the error lacks {n:?}: {err}");
        }
        let running = dockerd.ok(&["ps", "-q", "--filter", &format!("name={cname}")]);
        assert_eq!(running, "", "{what}: running");
        let _ = dockerd.docker(&["rm", "-f", &cname]);
        assert!(sidecars_under(run_root).is_empty(), "{what}: egret left");
        assert!(
            run_dirs_under(run_root).is_empty(),
            "{what}: {:?}",
            run_dirs_under(run_root)
        );
    };
    let policy_str = policy.to_string_lossy().into_owned();
    // Refused by the shim itself, before runc creates anything.
    refused(
        "host",
        &["--network", "host"],
        &["egret runc: error", "host networking", &policy_str],
    );
    std::fs::write(policy, "allowed_hosts = [\"up.test\"\nnot toml\n").unwrap();
    refused("badpolicy", &["--network", &net], &[&policy_str]);
    std::fs::write(
        policy,
        format!(
            "allowed_hosts = [\"up.test\"]\n{}",
            inject_header_policy("token", "env = \"EGRET_SHIM_TEST_TOKEN\"", &["up.test"])
        ),
    )
    .unwrap();
    refused(
        "envsecret",
        &["--network", &net],
        &[
            "secret token",
            "EGRET_SHIM_TEST_TOKEN",
            "file secret",
            &policy_str,
        ],
    );
    std::fs::write(policy, good_policy).unwrap();
    drop(dockerd);
}

/// A network namespace wired to `outer` by a veth pair, `10.214.N.2/24` inside with its
/// default route to `10.214.N.1` in `outer`: a connection not captured gets through.
fn wired_netns(outer: &Netns, name: &str, n: u8) -> Netns {
    let inner = Netns::new(name);
    let (a, b) = (
        format!("eo{n}{}", std::process::id() % 10000),
        format!("ei{n}"),
    );
    sh(
        "ip",
        &[
            "-n",
            &outer.name,
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &inner.name,
        ],
    )
    .unwrap();
    outer.ip(&["addr", "add", &format!("10.214.{n}.1/24"), "dev", &a]);
    outer.ip(&["link", "set", &a, "up"]);
    inner.ip(&["addr", "add", &format!("10.214.{n}.2/24"), "dev", &b]);
    inner.ip(&["link", "set", &b, "up"]);
    inner.ip(&["route", "add", "default", "via", &format!("10.214.{n}.1")]);
    inner
}

/// A private containerd in `ns`, driven with `ctr`; on drop every container is removed, then
/// the daemon stopped.
struct Containerd {
    sock: String,
    _daemon: Daemon,
}

const CTR_NS: &str = "egret-test";

impl Containerd {
    fn start(ns: &Netns, id: &str) -> Containerd {
        let dir = TempDir::new(&format!("containerd-{id}"));
        let sock = dir.path("containerd.sock").to_string_lossy().into_owned();
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {sock:?}\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            dir.path("root"),
            dir.path("state"),
        );
        std::fs::write(dir.path("config.toml"), config).unwrap();
        let args = ["--config".into(), dir.path("config.toml").into()];
        let daemon = Daemon::start(ns, dir, "containerd", &args);
        let c = Containerd {
            sock,
            _daemon: daemon,
        };
        c._daemon
            .wait("containerd", || c.ctr(&["version"]).status.success());
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .args(["--address", &self.sock, "--namespace", CTR_NS])
            .args(args)
            .output()
            .unwrap()
    }

    /// Kill and delete a container's task, then the container (poststop runs at the task's
    /// delete).
    fn remove(&self, name: &str) {
        let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", name]);
        let _ = wait_until(Duration::from_secs(10), || {
            self.ctr(&["task", "delete", name]).status.success()
                || !String::from_utf8_lossy(&self.ctr(&["task", "ls", "-q"]).stdout).contains(name)
        });
        let _ = self.ctr(&["container", "delete", name]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids = self.ctr(&["container", "ls", "-q"]);
        for cid in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            self.remove(cid);
        }
    }
}

#[test]
fn containerd_runs_egret_runc_for_annotated_containers_only() {
    require(&["containerd", "ctr", "runc", "nsenter", "ldd"]);
    let stage = Stage::new("cd");
    let Stage {
        id,
        up,
        ns,
        token,
        policy,
        run_root,
        tmp,
        ..
    } = &stage;

    // The shim as containerd's BinaryName runs it: a symlink egret-runc, its options in the
    // file next to it (what `egret runc args-file` prints).
    let shim_dir = tmp.path("bin");
    std::fs::create_dir_all(&shim_dir).unwrap();
    let shim = shim_dir.join("egret-runc");
    std::os::unix::fs::symlink(bin("egret"), &shim).unwrap();
    let mut cmd = Command::new(bin("egret"));
    cmd.args(["runc", "args-file", "--policy-dir"])
        .arg(&tmp.0)
        .args(shim_options(tmp, &up.ca));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "args-file: {}", all_output(&out));
    std::fs::write(shim_dir.join("egret-runc.args"), &out.stdout).unwrap();
    let containerd = Containerd::start(ns, id);

    // Each container gets a root filesystem of its own: the hook edits its trust bundle.
    let rootfs = |name: &str| {
        let r = tmp.path(&format!("rootfs-{name}"));
        assemble_rootfs(&r);
        r
    };
    // The container's entrypoint connects first of all to the gateway of its network (this
    // test's namespace, where the upstream listens), reachable without egret.
    let run = |name: &str, root: &Path, gateway: &str, extra: &[&str]| -> Output {
        let entry = format!(
            "curl -sS --max-time 5 -o /dev/null -w 'status=%{{http_code}} ' http://{gateway}:{}/first-connection > /tmp/first 2>&1; echo first-connection-exit=$? >> /tmp/first; exec sleep 600",
            up.http_port
        );
        let mut a = vec![
            "run",
            "-d",
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            shim.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        // No image: the spec has no PATH, so programs are named by path.
        a.extend_from_slice(&[
            "--rootfs",
            root.to_str().unwrap(),
            name,
            "/bin/sh",
            "-c",
            &entry,
        ]);
        containerd.ctr(&a)
    };
    let sidecars = || sidecars_under(run_root);

    // Not annotated: runc runs it as before, and its first connection reaches the upstream.
    let plain = format!("plain-{id}");
    let plain_root = rootfs("plain");
    let plain_net = wired_netns(ns, &format!("{}-cp{id}", ns_prefix()), 1);
    let with_ns = |net: &Netns| format!("network:/var/run/netns/{}", net.name);
    let out = run(
        &plain,
        &plain_root,
        "10.214.1.1",
        &["--with-ns", &with_ns(&plain_net)],
    );
    assert!(out.status.success(), "ctr run: {}", all_output(&out));
    let finished = |root: &Path| {
        std::fs::read_to_string(root.join("tmp/first"))
            .is_ok_and(|s| s.contains("first-connection-exit="))
    };
    assert!(wait_until(Duration::from_secs(10), || finished(
        &plain_root
    )));
    assert!(
        up.access_log().contains("/first-connection"),
        "the network lets a container without egret through: {}",
        up.access_log()
    );
    assert!(sidecars().is_empty());
    assert_eq!(
        std::fs::read_to_string(plain_root.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        "image roots\n"
    );
    containerd.remove(&plain);
    std::fs::write(&up.log, "").unwrap();

    // Annotated: egret from before the first instruction.
    let name = format!("egret-{id}");
    let root = rootfs("egret");
    let ann = format!("io.egret.policy={}", policy.display());
    let egret_net = wired_netns(ns, &format!("{}-ce{id}", ns_prefix()), 2);
    let out = run(
        &name,
        &root,
        "10.214.2.1",
        &["--annotation", &ann, "--with-ns", &with_ns(&egret_net)],
    );
    assert!(out.status.success(), "ctr run: {}", all_output(&out));
    assert!(wait_until(Duration::from_secs(15), || finished(&root)));
    let first = std::fs::read_to_string(root.join("tmp/first")).unwrap();
    eprintln!("first connection through egret: {}", first.trim());
    assert!(
        !up.access_log().contains("first-connection"),
        "{}",
        up.access_log()
    );
    assert_eq!(sidecars().len(), 1);
    let exec = |args: &[&str]| {
        let mut a = vec!["task", "exec", "--exec-id", "x", name.as_str()];
        a.extend_from_slice(args);
        code_out_err(&containerd.ctr(&a))
    };
    let (code, out, err) = exec(&[
        "/bin/curl",
        "-sS",
        "--max-time",
        "10",
        &format!("https://up.test:{}/echo", up.https_port),
    ]);
    assert_eq!(code, 0, "{out} {err}");
    assert_injected_and_masked(&json(&out), "x-auth-token", token);

    // A policy outside --policy-dir is refused before runc creates anything.
    let outside = format!("io.egret.policy=/etc/egret-{id}.toml");
    let bad = format!("bad-{id}");
    let out = run(
        &bad,
        &rootfs("bad"),
        "10.214.3.1",
        &["--annotation", &outside],
    );
    assert!(
        !out.status.success(),
        "a policy outside --policy-dir was accepted"
    );
    let err = all_output(&out);
    assert!(
        err.contains("io.egret.policy") && err.contains(&format!("/etc/egret-{id}.toml")),
        "{err}"
    );
    containerd.remove(&bad);
    assert_eq!(sidecars().len(), 1);

    containerd.remove(&name);
    assert!(
        wait_until(Duration::from_secs(15), || sidecars().is_empty()),
        "egret outlived the task"
    );
    assert!(
        wait_until(Duration::from_secs(5), || run_dirs_under(run_root)
            .is_empty()),
        "{:?}",
        run_dirs_under(run_root)
    );
    drop(containerd);
}

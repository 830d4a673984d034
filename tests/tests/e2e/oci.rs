//! egret attached by a real container runtime: podman (Debian's, with runc) runs containers
//! with the hooks.d file `egret oci-hook hooks-json` writes, as an installed egret has it. No
//! image is pulled: `--rootfs /:O` gives the container this machine's root filesystem as a
//! throw-away overlay (curl, python3, dig). `--network none` gives it a network namespace
//! with only `lo`, which egret attaches to; the upstream listens on the host's loopback, in
//! egret's namespace, and is pinned with `[resolve]`.
//!
//! Settings this machine needs are the test's, not egret's: `--runtime runc` (crun refuses a
//! hybrid cgroup layout) and explicit ulimits (podman's defaults exceed the hard limits).
use egret_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn require_podman() {
    require_root();
    for tool in ["podman", "runc", "nsenter"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} not found: run scripts/setup.sh (it installs podman and runc for these tests)"
        );
    }
}

/// A hook installation of its own: the hooks.d file (from `egret oci-hook hooks-json`), the
/// run root, the upstream's CA for egret.
struct Hooked {
    tmp: TempDir,
    hooks_dir: PathBuf,
    run_root: PathBuf,
}

impl Hooked {
    fn new(id: &str, run_args: &[&str]) -> Hooked {
        let tmp = TempDir::new(&format!("oci-{id}"));
        let hooks_dir = tmp.path("hooks.d");
        let run_root = tmp.path("run");
        std::fs::create_dir_all(&hooks_dir).unwrap();
        let mut cmd = Command::new(bin("egret"));
        cmd.args(["oci-hook", "hooks-json", "--run-root"])
            .arg(&run_root);
        cmd.args(["--ready-timeout-ms", "20000"]);
        // Not the host's /var/cache/egret: the test leaves nothing behind.
        cmd.arg("--handler-cache-dir")
            .arg(tmp.path("handler-cache"));
        if !run_args.is_empty() {
            cmd.arg("--").args(run_args);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "hooks-json: {out:?}");
        std::fs::write(hooks_dir.join("egret.json"), &out.stdout).unwrap();
        Hooked {
            tmp,
            hooks_dir,
            run_root,
        }
    }

    /// `podman --runtime runc --hooks-dir DIR ARGS...` (the global options this machine
    /// needs).
    fn podman(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .args(["--runtime", "runc", "--hooks-dir"])
            .arg(&self.hooks_dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// `podman run -d` of `sleep` with egret's annotation: the container, or podman's error.
    fn run(&self, name: &str, policy: &str, network: &str) -> Result<Container, String> {
        let ann = format!("io.egret.policy={policy}");
        let out = self.podman(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--annotation",
            &ann,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--rootfs",
            "/:O",
            "sleep",
            "600",
        ]);
        let container = Container {
            name: name.to_string(),
            hooks_dir: self.hooks_dir.clone(),
        };
        if out.status.success() {
            Ok(container)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every egret process started for this installation.
    fn sidecars(&self) -> Vec<u32> {
        sidecars_under(&self.run_root)
    }

    /// Run directories left under the run root.
    fn run_dirs(&self) -> Vec<String> {
        run_dirs_under(&self.run_root)
    }
}

/// Every `egret run` process started by a hook (or shim) with run root `run_root` (their
/// arguments name it).
pub(crate) fn sidecars_under(run_root: &Path) -> Vec<u32> {
    let needle = run_root.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("\0run\0") && c.contains(&needle)
            })
        })
        .collect()
}

/// The container run directories under `run_root`.
pub(crate) fn run_dirs_under(run_root: &Path) -> Vec<String> {
    std::fs::read_dir(run_root)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Hooked {
    fn drop(&mut self) {
        for pid in self.sidecars() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A podman container, removed (with its egret, by the poststop hook) on drop.
struct Container {
    name: String,
    hooks_dir: PathBuf,
}

impl Container {
    fn remove(&self) -> std::process::Output {
        Command::new("podman")
            .args(["--runtime", "runc", "--hooks-dir"])
            .arg(&self.hooks_dir)
            .args(["rm", "-f", "-t", "0", &self.name])
            .output()
            .unwrap()
    }

    fn exec(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("podman")
            .args(["--runtime", "runc", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        code_out_err(&out)
    }

    fn inspect(&self, format: &str) -> String {
        sh("podman", &["inspect", "-f", format, &self.name])
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// A TCP port free on the host's loopback just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn file_sha(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap_or_default())
}

#[test]
fn podman_container_gets_egret_from_the_hook_and_loses_it_on_rm() {
    require_podman();
    let id = unique_id();
    // The upstream: HTTPS on the host's loopback, where the sidecar (in the host's network
    // namespace) connects; the container reaches it only through egret.
    let pki_dir = TempDir::new(&format!("oci-pki-{id}"));
    let pki = upstream_pki(&pki_dir.0, "up", &["up.test"]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = pki_dir.path("up.access.log");
    let ready = pki_dir.path("up.ready");
    let mut cmd = Command::new(bin("egret-testsrv"));
    cmd.args(["--https", &listen, "--cert", pki.cert.to_str().unwrap()]);
    cmd.args(["--key", pki.key.to_str().unwrap(), "--name", "up"]);
    cmd.arg("--log").arg(&log).arg("--ready-file").arg(&ready);
    let mut up = spawn(cmd, &pki_dir.0, "up");
    wait_ready(&mut up, &ready, Duration::from_secs(20)).unwrap();

    let hooked = Hooked::new(&id, &["--upstream-ca", pki.ca.to_str().unwrap()]);
    let token = format!("tok-{id}-secret-value");
    let token_file = hooked.tmp.path("token");
    std::fs::write(&token_file, &token).unwrap();
    let policy_file = hooked.tmp.path("policy.toml");
    std::fs::write(
        &policy_file,
        format!(
            "intercept_https = true\nallowed_hosts = [\"up.test\"]\n\n[resolve]\n\"up.test\" = [\"127.0.0.1\"]\n{}",
            inject_header_policy("token", &format!("file = \"{}\"", token_file.display()), &["up.test"])
        ),
    )
    .unwrap();
    let host_bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let host_bundle_before = file_sha(host_bundle);

    let name = format!("egret-oci-{id}");
    let ctr = hooked
        .run(&name, policy_file.to_str().unwrap(), "none")
        .unwrap_or_else(|e| panic!("podman run failed: {e}"));
    // egret read the secret when it started; the container (whose root filesystem is this
    // machine's) must not find it on disk either.
    std::fs::remove_file(&token_file).unwrap();
    let cid = ctr.inspect("{{.Id}}");
    let pid: u32 = ctr.inspect("{{.State.Pid}}").parse().unwrap();
    let run_dir = hooked.run_root.join(&cid);
    let hook_log = std::fs::read_to_string(run_dir.join("hook.log")).unwrap_or_default();
    eprintln!("oci hook: {}", hook_log.trim());
    let sidecars = hooked.sidecars();
    assert_eq!(
        sidecars.len(),
        1,
        "one egret for the container: {sidecars:?}"
    );
    // The container's network namespace, held open so it can be looked at after `podman rm`.
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let netns_path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&netns)
    );
    let tables = sh(
        "nsenter",
        &[&format!("--net={netns_path}"), "nft", "list", "tables"],
    )
    .unwrap();
    assert!(
        tables.contains("inet egret"),
        "egret's table in the container: {tables}"
    );

    // The allowed host, over HTTPS trusted through the container's own bundle (no --cacert):
    // the token reaches the upstream, the container sees it masked.
    let url = format!("https://up.test:{port}/echo");
    let (code, out, err) = ctr.exec(&["curl", "-sS", "--max-time", "10", &url]);
    assert_eq!(
        code,
        0,
        "curl in the container: {out} {err}\negret: {}",
        sidecar_log(&run_dir)
    );
    let echo = json(&out);
    assert_injected_and_masked(&echo, "x-auth-token", &token);
    assert!(!out.contains(&token) && !err.contains(&token));
    // python3 reads the same bundle.
    let (code, out, err) = ctr.exec(&[
        "python3",
        "-c",
        "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=10).status)",
        &url,
    ]);
    assert_eq!((code, out.trim()), (0, "200"), "python3: {err}");
    // A denied host gets no address; nothing answers DNS but egret (only lo, no route out).
    let (code, out, err) = ctr.exec(&["curl", "-sS", "--max-time", "5", "https://evil.test/"]);
    assert_ne!(code, 0, "evil.test must fail: {out}");
    assert!(err.contains("resolve"), "evil.test: {err}");
    let (code, out, _) = ctr.exec(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        "@192.0.2.53",
        "up.test",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.trim().parse::<std::net::IpAddr>().is_ok(),
        "egret answers DNS for up.test: {out:?}"
    );
    // The host's own bundle is untouched: the CA went into the container's overlay.
    assert_eq!(file_sha(host_bundle), host_bundle_before);

    let out = ctr.remove();
    assert!(out.status.success(), "podman rm: {out:?}");
    assert!(
        wait_until(Duration::from_secs(15), || hooked.sidecars().is_empty()),
        "egret still runs after podman rm: {:?}",
        hooked.sidecars()
    );
    assert!(
        wait_until(Duration::from_secs(5), || hooked.run_dirs().is_empty()),
        "run directories left: {:?}",
        hooked.run_dirs()
    );
    let tables = sh(
        "nsenter",
        &[&format!("--net={netns_path}"), "nft", "list", "tables"],
    )
    .unwrap();
    assert!(!tables.contains("egret"), "egret's table left: {tables}");
    drop(netns);
}

/// Two containers in one network namespace (`--network container:A`, what a pod is): the
/// second uses the first one's egret and trusts its CA; removing it leaves that egret, removing
/// the first removes everything.
#[test]
fn podman_containers_sharing_a_network_namespace_share_one_egret() {
    require_podman();
    let id = unique_id();
    let hooked = Hooked::new(&id, &[]);
    let policy = hooked.tmp.path("policy.toml");
    std::fs::write(&policy, "allowed_hosts = [\"ok.test\"]\n").unwrap();
    let policy = policy.to_str().unwrap();
    let first = hooked
        .run(&format!("egret-oci-a-{id}"), policy, "none")
        .unwrap_or_else(|e| panic!("podman run: {e}"));
    let second = hooked
        .run(
            &format!("egret-oci-b-{id}"),
            policy,
            &format!("container:{}", first.name),
        )
        .unwrap_or_else(|e| panic!("podman run in the first one's namespace: {e}"));
    assert_eq!(
        hooked.sidecars().len(),
        1,
        "one egret per network namespace"
    );
    assert_eq!(hooked.run_dirs().len(), 2);
    let ca_lines = |c: &Container| {
        c.exec(&[
            "grep",
            "-c",
            "egret sandbox CA begin",
            "/etc/ssl/certs/ca-certificates.crt",
        ])
        .1
    };
    assert_eq!(ca_lines(&first).trim(), "1");
    assert_eq!(ca_lines(&second).trim(), "1");
    let (code, out, err) = second.exec(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=1",
        "@192.0.2.53",
        "ok.test",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.trim().parse::<std::net::IpAddr>().is_ok(),
        "egret answers DNS in the second: {out:?}"
    );

    assert!(second.remove().status.success());
    assert_eq!(
        hooked.sidecars().len(),
        1,
        "the first container keeps its egret"
    );
    assert_eq!(hooked.run_dirs().len(), 1);
    assert!(first.remove().status.success());
    assert!(
        wait_until(Duration::from_secs(15), || hooked.sidecars().is_empty()),
        "egret outlived both containers"
    );
    assert!(
        wait_until(Duration::from_secs(5), || hooked.run_dirs().is_empty()),
        "{:?}",
        hooked.run_dirs()
    );
}

fn sidecar_log(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("egret.log")).unwrap_or_default()
}

#[test]
fn podman_refuses_containers_egret_cannot_protect() {
    require_podman();
    let id = unique_id();
    let hooked = Hooked::new(&id, &[]);
    let invalid = hooked.tmp.path("invalid.toml");
    std::fs::write(&invalid, "allowed_hosts = [\"ok.test\"\nnot toml\n").unwrap();
    let valid = hooked.tmp.path("valid.toml");
    std::fs::write(&valid, "allowed_hosts = [\"ok.test\"]\n").unwrap();
    let missing = hooked.tmp.path("missing.toml");
    let cases: [(&str, &Path, &str, &[&str]); 3] = [
        ("invalid", &invalid, "none", &[invalid.to_str().unwrap()]),
        ("missing", &missing, "none", &[missing.to_str().unwrap()]),
        // Host networking: the sidecar would capture the host itself.
        (
            "host",
            &valid,
            "host",
            &["own network namespace", valid.to_str().unwrap()],
        ),
    ];
    for (what, policy, network, needles) in cases {
        let name = format!("egret-oci-{what}-{id}");
        match hooked.run(&name, policy.to_str().unwrap(), network) {
            Ok(c) => panic!(
                "{what}: the container started: {}",
                c.inspect("{{.State.Status}}")
            ),
            Err(err) => {
                eprintln!("{what}: podman refused: {}", err.trim());
                for n in needles {
                    assert!(err.contains(n), "{what}: podman's error lacks {n:?}: {err}");
                }
                let _ = Command::new("podman")
                    .args(["rm", "-f", "-t", "0", &name])
                    .output();
            }
        }
        assert!(hooked.sidecars().is_empty(), "{what}: egret left running");
        assert!(
            hooked.run_dirs().is_empty(),
            "{what}: left {:?}",
            hooked.run_dirs()
        );
    }
}

/// `egret oci-hook` as a runtime calls it, driven by hand on a namespace the test made: the
/// refusals a runtime relays (malformed state, egret binary absent, a namespace another egret
/// holds, a container started twice, a bad annotation) leave nothing behind, and poststop
/// removes everything, also when called again.
#[test]
fn oci_hook_refuses_bad_input_and_leaves_nothing_behind() {
    require_root();
    let id = unique_id();
    let hooked = Hooked::new(&id, &[]);
    let ns = Netns::new(&format!("{}-oci-{id}", ns_prefix()));
    let mut holder = spawn(
        {
            let mut c = ns.cmd("sleep");
            c.arg("600");
            c
        },
        &hooked.tmp.0,
        "holder",
    );
    // `ip netns exec` execs sleep: the child's pid is the process inside the namespace.
    let pid = holder.child.id();
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("sleep"))
    }));
    let bundle = hooked.tmp.path("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/etc/ssl/certs")).unwrap();
    std::fs::write(bundle.join("config.json"), r#"{"root":{"path":"rootfs"}}"#).unwrap();
    let trust = bundle.join("rootfs/etc/ssl/certs/ca-certificates.crt");
    std::fs::write(&trust, "image roots\n").unwrap();
    let policy = hooked.tmp.path("policy.toml");
    std::fs::write(&policy, "allowed_hosts = [\"ok.test\"]\n").unwrap();

    let hook = |extra: &[&str], stdin: &str| -> (i32, String) {
        let mut c = Command::new(bin("egret"));
        c.arg("oci-hook");
        if !extra.contains(&"--run-root") {
            c.arg("--run-root").arg(&hooked.run_root);
        }
        c.arg("--handler-cache-dir")
            .arg(hooked.tmp.path("handler-cache"));
        c.args(extra);
        // The runtime gives hooks an empty environment.
        c.env_clear();
        let (code, _, err) = code_out_err(&output_with_stdin(&mut c, stdin.as_bytes()));
        (code, err)
    };
    let state = |cid: &str, status: &str, extra_ann: &str| {
        format!(
            r#"{{"ociVersion":"1.0.2","id":"{cid}","status":"{status}","pid":{pid},"bundle":"{}","annotations":{{"io.egret.policy":"{}"{extra_ann}}}}}"#,
            bundle.display(),
            policy.display()
        )
    };
    let a = format!("a{id}");
    let nothing_left = |what: &str, keep: &[&str]| {
        let dirs = hooked.run_dirs();
        assert!(
            dirs.iter().all(|d| keep.contains(&d.as_str())),
            "{what}: run directories left: {dirs:?}"
        );
    };

    for (what, extra, input, needle) in [
        ("empty state", vec![], String::new(), "stdin is empty"),
        (
            "malformed state",
            vec![],
            "{\"id\":".to_string(),
            "OCI state",
        ),
        (
            "running status",
            vec![],
            state(&a, "running", ""),
            "cannot tell the hook stage",
        ),
        (
            "bad sandbox id",
            vec![],
            state(&a, "creating", r#","io.egret.sandbox-id":"no spaces""#),
            "io.egret.sandbox-id",
        ),
        (
            "egret binary absent",
            vec!["--egret-bin", "/nonexistent/egret"],
            state(&a, "creating", ""),
            "cannot start /nonexistent/egret",
        ),
    ] {
        let (code, err) = hook(&extra, &input);
        assert_ne!(code, 0, "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        nothing_left(what, &[]);
    }
    assert_eq!(std::fs::read_to_string(&trust).unwrap(), "image roots\n");

    let (code, err) = hook(&[], &state(&a, "creating", ""));
    assert_eq!(code, 0, "{err}");
    let bundle_text = std::fs::read_to_string(&trust).unwrap();
    assert!(
        bundle_text.starts_with("image roots\n# egret sandbox CA begin")
            && bundle_text.contains("BEGIN CERTIFICATE"),
        "{bundle_text}"
    );
    let sidecars = hooked.sidecars();
    assert_eq!(sidecars.len(), 1);
    let tables = sh("ip", &["netns", "exec", &ns.name, "nft", "list", "tables"]).unwrap();
    assert!(tables.contains("inet egret"), "{tables}");

    // An egret this hook did not start (another run root) holds the namespace: the new one
    // is refused, the first one stays.
    let other_root = hooked.tmp.path("other-run");
    let (code, err) = hook(
        &["--run-root", other_root.to_str().unwrap()],
        &state(&format!("b{id}"), "creating", ""),
    );
    assert_ne!(code, 0);
    assert!(err.contains("already attached to egret pid"), "{err}");
    assert_eq!(std::fs::read_dir(&other_root).unwrap().count(), 0);
    // A second container in the same namespace (a pod) uses the running egret: its CA goes
    // into that container's bundle; with another policy it is refused.
    let b = format!("b{id}");
    let pod_bundle = hooked.tmp.path("bundle-b");
    std::fs::create_dir_all(pod_bundle.join("rootfs/etc/ssl/certs")).unwrap();
    std::fs::write(
        pod_bundle.join("config.json"),
        r#"{"root":{"path":"rootfs"}}"#,
    )
    .unwrap();
    let pod_trust = pod_bundle.join("rootfs/etc/ssl/certs/ca-certificates.crt");
    std::fs::write(&pod_trust, "b roots\n").unwrap();
    let in_pod = |cid: &str, policy: &Path| {
        format!(
            r#"{{"ociVersion":"1.0.2","id":"{cid}","status":"creating","pid":{pid},"bundle":"{}","annotations":{{"io.egret.policy":"{}"}}}}"#,
            pod_bundle.display(),
            policy.display()
        )
    };
    let other_policy = hooked.tmp.path("other.toml");
    std::fs::write(&other_policy, "allowed_hosts = [\"x.test\"]\n").unwrap();
    let (code, err) = hook(&[], &in_pod(&b, &other_policy));
    assert_ne!(code, 0);
    assert!(
        err.contains("one network namespace has one policy") && err.contains("other.toml"),
        "{err}"
    );
    nothing_left("pod member with another policy", &[&a]);
    let (code, err) = hook(&[], &in_pod(&b, &policy));
    assert_eq!(code, 0, "{err}");
    let a_ca = std::fs::read_to_string(hooked.run_root.join(&a).join("ca.pem")).unwrap();
    let b_text = std::fs::read_to_string(&pod_trust).unwrap();
    assert!(
        b_text.starts_with("b roots\n") && b_text.contains(a_ca.trim()),
        "{b_text}"
    );
    assert_eq!(
        hooked.sidecars(),
        sidecars,
        "no second egret for a pod member"
    );
    let (code, err) = hook(&[], &state(&b, "stopped", ""));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        hooked.sidecars(),
        sidecars,
        "a pod member's poststop leaves the pod's egret"
    );
    // The same container started again while its egret runs.
    let (code, err) = hook(&[], &state(&a, "creating", ""));
    assert_ne!(code, 0);
    assert!(err.contains("is already attached to it"), "{err}");
    nothing_left("refused second starts", &[&a]);
    assert_eq!(hooked.sidecars(), sidecars);

    for round in 0..2 {
        let (code, err) = hook(&[], &state(&a, "stopped", ""));
        assert_eq!(code, 0, "poststop {round}: {err}");
        assert!(hooked.sidecars().is_empty(), "poststop {round}");
        nothing_left("poststop", &[]);
    }
    let tables = sh("ip", &["netns", "exec", &ns.name, "nft", "list", "tables"]).unwrap();
    assert!(!tables.contains("egret"), "{tables}");

    // A sidecar whose container ended without a poststop stops by itself (--watch-pid); with
    // --log-dir (made if missing) its log and audit events outlive the run directory.
    let log_dir = hooked.tmp.path("logs/egret");
    let log_args = ["--log-dir", log_dir.to_str().unwrap()];
    let (code, err) = hook(&log_args, &state(&a, "creating", ""));
    assert_eq!(code, 0, "{err}");
    assert_eq!(hooked.sidecars().len(), 1);
    holder.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = holder.child.wait();
    assert!(
        wait_until(Duration::from_secs(10), || hooked.sidecars().is_empty()),
        "egret outlived its container's process"
    );
    let (code, err) = hook(&log_args, &state(&a, "stopped", ""));
    assert_eq!(code, 0, "{err}");
    nothing_left("final poststop", &[]);
    let log = std::fs::read_to_string(log_dir.join(format!("{a}.log"))).unwrap();
    assert!(
        log.contains("intercepting") && log.contains("--watch-pid process exited"),
        "{log}"
    );
    assert!(log_dir.join(format!("{a}.audit.jsonl")).exists());
}

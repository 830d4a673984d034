//! End-to-end harness: every test builds its own network namespaces (unique names), runs the
//! real `egret` binary in an "egret" namespace attached to a "sandbox" namespace, real servers
//! in an "upstream" namespace, and real clients (curl, python3, dig) inside the sandbox. Every
//! namespace, process and temporary file is removed on drop, also when the test panics.
//!
//! ```text
//!  sbx-ID (lo only, or + veth to upstream)      egr-ID (egret runs here)          up-ID
//!  clients ── TPROXY ──► egret's listeners ···· egret process ── veth 10.200.0.1 ─► 10.200.0.2..9
//!                        (sockets created in sbx by egret)                          fd00:200::2..9
//! ```
//! Only addresses inside these namespaces are ever used.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Upstream addresses (in the upstream namespace). `.2` is "allowed.test", `.3` "denied.test",
/// `.4` an address "chosen by the sandbox", `.5`/`.6` spare.
pub const UP4: [&str; 5] = [
    "10.200.0.2",
    "10.200.0.3",
    "10.200.0.4",
    "10.200.0.5",
    "10.200.0.6",
];
/// IPv6 counterparts of [`UP4`].
pub const UP6: [&str; 5] = [
    "fd00:200::2",
    "fd00:200::3",
    "fd00:200::4",
    "fd00:200::5",
    "fd00:200::6",
];

/// Fail loudly (not skip) when the tests cannot do their job.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests create network namespaces and must run as root (sudo scripts/test.sh)"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Environment variable that sets the prefix of the namespaces a test run creates (default
/// `egt`): a run started by another test gets its own, so what it leaves after being killed can
/// be found and removed.
pub const NS_PREFIX_VAR: &str = "EGRET_E2E_NS_PREFIX";

/// The prefix of this run's namespace names.
pub fn ns_prefix() -> String {
    std::env::var(NS_PREFIX_VAR).unwrap_or_else(|_| "egt".into())
}

/// Remove every namespace whose name starts with `prefix-` (killing what runs in it), as
/// [`Netns`]'s drop would.
pub fn remove_namespaces(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&format!("{prefix}-")) {
            drop(Netns {
                name: name.to_string(),
            });
        }
    }
}

/// A short id unique across parallel test processes.
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:x}",
        (std::process::id() & 0xfff) ^ (t >> 20 & 0xfff),
        n
    )
}

/// Run a command, returning its output; fails with its stderr when it exits non-zero.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A temporary directory removed on drop (kept when EGRET_KEEP_TMP is set, for debugging).
pub struct TempDir(pub PathBuf);
impl TempDir {
    /// Create `/tmp/egret-e2e-ID`.
    pub fn new(id: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("egret-e2e-{id}"));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("EGRET_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A network namespace; on drop every process in it is killed and it is deleted.
pub struct Netns {
    /// Its name (under /var/run/netns).
    pub name: String,
}
impl Netns {
    /// `ip netns add NAME` and bring `lo` up.
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh("ip", &["netns", "add", name]).unwrap();
        let ns = Netns {
            name: name.to_string(),
        };
        sh("ip", &["-n", name, "link", "set", "lo", "up"]).unwrap();
        ns
    }
    /// A command prefix running inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
    /// Run inside and return output (never fails on exit status; callers check).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program)
            .args(args)
            .output()
            .expect("ip netns exec")
    }
    /// `ip -n NAME args...`, failing on error.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        sh("ip", &a).unwrap()
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(p) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        for _ in 0..50 {
            let out = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
            if out.map(|o| o.status.success()).unwrap_or(false) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How the sandbox namespace is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxNet {
    /// Only `lo`: egret must add what routing it needs.
    LoOnly,
    /// A veth straight to the upstream namespace with a default route: nothing may leave
    /// through it except via egret.
    Veth,
}

/// The three namespaces of a test.
pub struct Topology {
    /// Unique id of this topology.
    pub id: String,
    /// Scratch directory.
    pub tmp: TempDir,
    /// The sandbox.
    pub sbx: Netns,
    /// Where egret runs.
    pub egr: Netns,
    /// The upstream servers.
    pub up: Netns,
}

impl Topology {
    /// A baseline namespace without egret, wired by its own veth straight to the upstream
    /// namespace: 10.202.0.1 on its side (`v-up`), 10.202.0.2 plus `extra_upstream` on the
    /// upstream's (`v-dir`). Benchmarks measure the direct path through it. Dropping the
    /// returned namespace removes the veth pair with it.
    pub fn direct_baseline(&self, extra_upstream: &[&str]) -> Netns {
        self.side_namespace("dir", 202, extra_upstream)
    }

    /// A namespace named `…-{tag}` wired by its own veth straight to the upstream namespace:
    /// 10.{subnet}.0.1/24 on its side (`v-up`), 10.{subnet}.0.2/24 plus `extra_upstream` on the
    /// upstream's (`v-{tag}`). Each call needs its own `tag` (one letter at least distinct
    /// first) and `subnet`. Dropping the returned namespace removes the veth pair with it.
    pub fn side_namespace(&self, tag: &str, subnet: u8, extra_upstream: &[&str]) -> Netns {
        let ns = Netns::new(&format!("{}-{}-{tag}", ns_prefix(), self.id));
        // Created straight in their namespaces, so only the upstream side must differ between
        // calls (the first letter of the tag); renamed right after.
        let letter = tag.chars().next().unwrap_or('x');
        let (ours, theirs) = (
            format!("v{letter}{}", self.id),
            format!("w{letter}{}", self.id),
        );
        sh(
            "ip",
            &[
                "link",
                "add",
                &ours,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &theirs,
                "netns",
                &self.up.name,
            ],
        )
        .unwrap();
        let upstream_if = format!("v-{tag}");
        ns.ip(&["link", "set", &ours, "name", "v-up"]);
        self.up.ip(&["link", "set", &theirs, "name", &upstream_if]);
        ns.ip(&["addr", "add", &format!("10.{subnet}.0.1/24"), "dev", "v-up"]);
        let own = format!("10.{subnet}.0.2/24");
        for addr in std::iter::once(own.as_str()).chain(extra_upstream.iter().copied()) {
            self.up.ip(&["addr", "add", addr, "dev", &upstream_if]);
        }
        ns.ip(&["link", "set", "v-up", "up"]);
        self.up.ip(&["link", "set", &upstream_if, "up"]);
        ns
    }

    /// Build the namespaces and veths.
    pub fn new(net: SandboxNet) -> Topology {
        require_root();
        let id = unique_id();
        let tmp = TempDir::new(&id);
        let up = Netns::new(&format!("{}-{id}-up", ns_prefix()));
        let egr = Netns::new(&format!("{}-{id}-egr", ns_prefix()));
        let sbx = Netns::new(&format!("{}-{id}-sbx", ns_prefix()));
        // egret namespace <-> upstream namespace. Interface names are per namespace.
        sh(
            "ip",
            &[
                "link",
                "add",
                &format!("ve{id}"),
                "netns",
                &egr.name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("vu{id}"),
                "netns",
                &up.name,
            ],
        )
        .unwrap();
        egr.ip(&["link", "set", &format!("ve{id}"), "name", "v-up"]);
        up.ip(&["link", "set", &format!("vu{id}"), "name", "v-egr"]);
        egr.ip(&["addr", "add", "10.200.0.1/24", "dev", "v-up"]);
        egr.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:200::1/64",
            "dev",
            "v-up",
            "nodad",
        ]);
        egr.ip(&["link", "set", "v-up", "up"]);
        for (a4, a6) in UP4.iter().zip(UP6.iter()) {
            up.ip(&["addr", "add", &format!("{a4}/24"), "dev", "v-egr"]);
            up.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                "v-egr",
                "nodad",
            ]);
        }
        up.ip(&["link", "set", "v-egr", "up"]);
        if net == SandboxNet::Veth {
            sh(
                "ip",
                &[
                    "link",
                    "add",
                    &format!("vs{id}"),
                    "netns",
                    &sbx.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("vw{id}"),
                    "netns",
                    &up.name,
                ],
            )
            .unwrap();
            sbx.ip(&["link", "set", &format!("vs{id}"), "name", "v-wan"]);
            up.ip(&["link", "set", &format!("vw{id}"), "name", "v-sbx"]);
            sbx.ip(&["addr", "add", "10.201.0.1/24", "dev", "v-wan"]);
            sbx.ip(&[
                "-6",
                "addr",
                "add",
                "fd00:201::1/64",
                "dev",
                "v-wan",
                "nodad",
            ]);
            up.ip(&["addr", "add", "10.201.0.2/24", "dev", "v-sbx"]);
            up.ip(&[
                "-6",
                "addr",
                "add",
                "fd00:201::2/64",
                "dev",
                "v-sbx",
                "nodad",
            ]);
            sbx.ip(&["link", "set", "v-wan", "up"]);
            up.ip(&["link", "set", "v-sbx", "up"]);
            sbx.ip(&["route", "add", "default", "via", "10.201.0.2"]);
            sbx.ip(&["-6", "route", "add", "default", "via", "fd00:201::2"]);
        }
        Topology {
            id,
            tmp,
            sbx,
            egr,
            up,
        }
    }

    /// Run a client inside the sandbox.
    pub fn in_sandbox(&self, program: &str, args: &[&str]) -> Output {
        self.sbx.run(program, args)
    }

    /// curl inside the sandbox; returns (exit code, stdout, stderr).
    pub fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["-sS", "--max-time", "15"];
        a.extend_from_slice(args);
        code_out_err(&self.in_sandbox("curl", &a))
    }
}

/// Runs `cmd` with `input` on its stdin (closed after it) and collects stdout and stderr.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("write the command's stdin");
    child.wait_with_output().expect("wait for the command")
}

/// A finished command's (exit code, or -1 when killed by a signal; stdout; stderr).
pub fn code_out_err(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A finished command's stdout followed by its stderr, for assertions and failure messages.
pub fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Call `cond` every 20 ms until it returns true (then true) or `timeout` has passed (then
/// false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parse `s` as JSON; a test fails naming the text when it is not.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Directory of the binaries built with the tests (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // tests run from target/<profile>/deps/<test>-<hash>, binaries from target/<profile>/
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; tells how to build it when missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build it first (cargo build --bins), scripts/test.sh does",
        p.display()
    );
    p
}

/// A child process killed on drop (SIGTERM first, then SIGKILL).
pub struct Proc {
    /// The child.
    pub child: Child,
    /// stdout file.
    pub stdout: PathBuf,
    /// stderr file.
    pub stderr: PathBuf,
}
impl Proc {
    /// Send a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
    /// Wait for exit up to `timeout`, returning the exit status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
    /// Everything written to stdout and stderr so far.
    pub fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
    /// Wait until the process's output contains `needle`; whether it did within `timeout`.
    pub fn wait_output(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.output().contains(needle))
    }
}
impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_timeout(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Spawn `cmd` with output to files in `dir` named `name.out`/`name.err`.
pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Proc {
    let stdout = dir.join(format!("{name}.out"));
    let stderr = dir.join(format!("{name}.err"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn");
    Proc {
        child,
        stdout,
        stderr,
    }
}

/// Wait until `path` exists or the process exits / the timeout passes.
pub fn wait_ready(proc: &mut Proc, path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!(
                "process exited with {status} before it was ready:\n{}",
                proc.output()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("not ready after {timeout:?}:\n{}", proc.output())
}

/// The upstream test server running in the upstream namespace.
pub struct Upstream {
    /// The process.
    pub proc: Proc,
    /// Its access log.
    pub log: PathBuf,
}
impl Upstream {
    /// Start `egret-testsrv` on port 80 (h1 + h2c) of every upstream address, and on 443 with
    /// TLS when `tls` (cert, key) is given.
    pub fn start(topo: &Topology, name: &str, tls: Option<(&Path, &Path)>) -> Upstream {
        let mut args = vec!["--http", "[::]:80", "--banner", "[::]:2222"];
        if let Some((cert, key)) = tls {
            args.extend(["--https", "[::]:443", "--cert", cert.to_str().unwrap()]);
            args.extend(["--key", key.to_str().unwrap()]);
        }
        Upstream::start_with(topo, name, &args)
    }

    /// Make an [`UpstreamPki`] for `names` (files `up-*.pem` in the scratch directory's `pki/`)
    /// and start the upstream `up` with TLS from it, as [`Upstream::start`] does.
    pub fn start_tls(topo: &Topology, names: &[&str]) -> (Upstream, UpstreamPki) {
        Upstream::start_tls_with(topo, names, &["--banner", "[::]:2222"])
    }

    /// [`Upstream::start_tls`] with the test server flags `extra` instead of its banner
    /// listener (e.g. the service options `--oauth-client`, `--s3-key`).
    pub fn start_tls_with(
        topo: &Topology,
        names: &[&str],
        extra: &[&str],
    ) -> (Upstream, UpstreamPki) {
        let dir = topo.tmp.path("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let pki = upstream_pki(&dir, "up", names);
        let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
        let mut args = vec!["--http", "[::]:80", "--https", "[::]:443"];
        args.extend(["--cert", cert, "--key", key]);
        args.extend_from_slice(extra);
        let up = Upstream::start_with(topo, "up", &args);
        (up, pki)
    }

    /// Start `egret-testsrv` named `name` with exactly these listener arguments (plus its
    /// access log and ready file), and wait until it is ready.
    pub fn start_with(topo: &Topology, name: &str, args: &[&str]) -> Upstream {
        let log = topo.tmp.path(&format!("{name}.access.log"));
        let ready = topo.tmp.path(&format!("{name}.ready"));
        let mut cmd = topo.up.cmd(bin("egret-testsrv").to_str().unwrap());
        cmd.args(args);
        cmd.args(["--log", log.to_str().unwrap(), "--name", name]);
        cmd.args(["--ready-file", ready.to_str().unwrap()]);
        let mut proc = spawn(cmd, &topo.tmp.0, name);
        wait_ready(&mut proc, &ready, Duration::from_secs(20)).unwrap();
        Upstream { proc, log }
    }
    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Wait until the access log contains `needle`; whether it did within `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.access_log().contains(needle))
    }
}

/// egret running in the egret namespace, attached to the sandbox namespace.
pub struct Egret {
    /// The process.
    pub proc: Proc,
    /// The ready file.
    pub ready: PathBuf,
}
impl Egret {
    /// Start `egret run --netns SBX --sandbox-id ID --ready-file F ARGS...` and wait for ready.
    pub fn start(topo: &Topology, sandbox_id: &str, args: &[&str]) -> Result<Egret> {
        Egret::start_with_env(topo, sandbox_id, args, &[])
    }
    /// [`Egret::start`] with these variables added to egret's environment (secrets come from
    /// there); they are set after `RUST_LOG` (from `EGRET_TEST_LOG`, default `info`), so they
    /// may override it.
    pub fn start_with_env(
        topo: &Topology,
        sandbox_id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Egret> {
        Egret::start_program(&bin("egret"), topo, sandbox_id, args, env)
    }
    /// [`Egret::start_with_env`] with another egret binary (the benchmark's A/B against an
    /// earlier build).
    pub fn start_program(
        program: &Path,
        topo: &Topology,
        sandbox_id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Egret> {
        let ready = topo.tmp.path(&format!("egret-{sandbox_id}.ready"));
        let _ = std::fs::remove_file(&ready);
        let mut cmd = topo.egr.cmd(program.to_str().unwrap());
        cmd.args(["run", "--netns", &topo.sbx.name, "--sandbox-id", sandbox_id]);
        cmd.args(["--ready-file", ready.to_str().unwrap()]);
        cmd.args(args);
        cmd.env(
            "RUST_LOG",
            std::env::var("EGRET_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.envs(env.iter().copied());
        let mut proc = spawn(cmd, &topo.tmp.0, &format!("egret-{sandbox_id}"));
        wait_ready(&mut proc, &ready, Duration::from_secs(30))?;
        Ok(Egret { proc, ready })
    }
    /// Start egret intercepting HTTPS: `policy` written to `policy.toml`, then
    /// `--policy … --ca-out egret-ca.pem --upstream-ca UPSTREAM_CA` and the flags `extra`, with
    /// `env` as in [`Egret::start_with_env`]. Returns egret and the path of the sandbox CA it
    /// wrote (what clients in the sandbox trust).
    pub fn start_intercepting(
        topo: &Topology,
        sandbox_id: &str,
        policy: &str,
        upstream_ca: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(Egret, String)> {
        let p = write(topo, "policy.toml", policy);
        let ca = topo.tmp.path("egret-ca.pem").to_string_lossy().into_owned();
        let mut args = vec![
            "--policy",
            &p,
            "--ca-out",
            &ca,
            "--upstream-ca",
            upstream_ca.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let egret = Egret::start_with_env(topo, sandbox_id, &args, env)?;
        Ok((egret, ca))
    }
    /// egret's logs so far.
    pub fn logs(&self) -> String {
        self.proc.output()
    }
    /// The audit events written so far (egret's stdout: one JSON object per line).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        parse_audit(&std::fs::read_to_string(&self.proc.stdout).unwrap_or_default())
    }
    /// Wait until an audit event satisfies `pred` (request events are written when the
    /// response body ends, connection events when the connection ends); returns it.
    pub fn wait_audit(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let start = Instant::now();
        loop {
            if let Some(ev) = self.audit_events().into_iter().find(|e| pred(e)) {
                return Some(ev);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// Wait until egret's logs contain `needle` (connection events are written when the
    /// connection ends, which may be just after the client exits).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.logs().contains(needle))
    }
}

/// `egret ctl --socket SOCK ARGS...`, run on the host (the admin socket is a file); returns
/// (exit code, stdout, stderr).
pub fn ctl(sock: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("egret"))
        .args(["ctl", "--socket", sock])
        .args(args)
        .output()
        .unwrap();
    code_out_err(&out)
}

/// The policy generation in force, from `egret ctl --json status` on the admin socket `sock`.
pub fn ctl_generation(sock: &str) -> u64 {
    let (code, out, err) = ctl(sock, &["--json", "status"]);
    assert_eq!(code, 0, "egret ctl status: {err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["generation"]
        .as_u64()
        .unwrap()
}

/// `curl -sS --unix-socket SOCK`, to which the caller adds its options and an
/// `http://egret/...` URL: a request to egret's admin socket.
pub fn admin_curl(sock: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--unix-socket", sock]);
    cmd
}

/// A sandbox whose egret intercepts HTTPS, in front of an upstream that serves TLS: what most
/// HTTPS tests start from.
pub struct Intercepted {
    /// The namespaces.
    pub topo: Topology,
    /// The upstream.
    pub up: Upstream,
    /// egret.
    pub egret: Egret,
    /// The sandbox CA egret wrote: what clients in the sandbox trust.
    pub ca: String,
}

impl Intercepted {
    /// Start egret in front of `up` as [`Egret::start_intercepting`] does, failing the test when
    /// it does not start.
    pub fn start(
        topo: Topology,
        up: Upstream,
        sandbox_id: &str,
        policy: &str,
        upstream_ca: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Intercepted {
        let (egret, ca) =
            Egret::start_intercepting(&topo, sandbox_id, policy, upstream_ca, extra, env)
                .expect("egret starts");
        Intercepted {
            topo,
            up,
            egret,
            ca,
        }
    }
    /// curl in the sandbox trusting the sandbox CA (`--cacert`), as [`Topology::curl`].
    pub fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let mut a = vec!["--cacert", self.ca.as_str()];
        a.extend_from_slice(args);
        self.topo.curl(&a)
    }
    /// Run `python3 -c script CA args...` in the sandbox (the CA path is argv[1]); returns
    /// (success, stdout, stderr).
    pub fn python(&self, script: &str, args: &[&str]) -> (bool, String, String) {
        let mut a = vec!["-c", script, &self.ca];
        a.extend_from_slice(args);
        let (code, out, err) = code_out_err(&self.topo.in_sandbox("python3", &a));
        (code == 0, out, err)
    }
}

/// Parse audit lines; a line that is not a JSON object fails the test (the audit stream is a
/// contract: nothing else may be written to it).
pub fn parse_audit(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "audit line is not an object: {l}");
            v
        })
        .collect()
}

/// utime + stime of a process in seconds (fields 14 and 15 of /proc/PID/stat); 0 once it is
/// gone.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; the fields after it are fixed.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A field of `/proc/PID/status` given in kB (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
}

/// Write a file and return its path as a String.
pub fn write(topo: &Topology, name: &str, content: &str) -> String {
    let p = topo.tmp.path(name);
    std::fs::write(&p, content).unwrap();
    p.to_string_lossy().into_owned()
}

/// A test PKI for upstream servers: a CA and one leaf for `names`, written as PEM files.
pub struct UpstreamPki {
    /// CA certificate (pass to egret's `--upstream-ca`).
    pub ca: PathBuf,
    /// Leaf certificate chain.
    pub cert: PathBuf,
    /// Leaf key.
    pub key: PathBuf,
}

/// Make a CA and a leaf certificate for `names` (DNS names or IPs) under `dir/prefix-*`.
pub fn upstream_pki(dir: &Path, prefix: &str, names: &[&str]) -> UpstreamPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix} test upstream CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix} upstream"));
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let pki = UpstreamPki {
        ca: dir.join(format!("{prefix}-ca.pem")),
        cert: dir.join(format!("{prefix}-cert.pem")),
        key: dir.join(format!("{prefix}-key.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, leaf.pem()).unwrap();
    std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
    pki
}

/// Directory of the built example handlers (`scripts/build-handlers.sh` fills it; built on
/// first use if missing).
pub fn handlers_dist() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dist = root.join("handlers-wasm/dist");
    BUILD.call_once(|| {
        if !dist.join("inject-header.wasm").exists() {
            let st = Command::new(root.join("scripts/build-handlers.sh"))
                .status()
                .expect("build handlers");
            assert!(st.success(), "scripts/build-handlers.sh failed");
        }
    });
    dist
}

/// Path of one built handler module, as a String for policy files.
pub fn handler_module(name: &str) -> String {
    handlers_dist()
        .join(format!("{name}.wasm"))
        .to_string_lossy()
        .into_owned()
}

/// Policy TOML that starts with `[secrets]` (so it goes after the policy's top-level keys):
/// secret `secret` read from `source` (the inside of its inline table: `env = "VAR"` or
/// `file = "PATH"`), the handler `inject` running `inject-header` to put it in the
/// `x-auth-token` header, and a route to `inject` for each of `hosts`, in order.
pub fn inject_header_policy(secret: &str, source: &str, hosts: &[&str]) -> String {
    let mut toml = format!(
        r#"
[secrets]
{secret} = {{ {source} }}

[handlers.inject]
module = "{module}"
params = {{ header = "x-auth-token", secret = "{secret}" }}
secrets = ["{secret}"]
"#,
        module = handler_module("inject-header"),
    );
    for host in hosts {
        toml.push_str(&format!(
            "\n[[routes]]\nhost = \"{host}\"\nhandler = \"inject\"\n"
        ));
    }
    toml
}

/// Checks an `/echo` answer (`egret-testsrv`) for a credential egret injected: the upstream
/// received exactly `secret` in `header` (its digest), and the sandbox saw it masked by the
/// echo guard (as many `*` as the value is long).
pub fn assert_injected_and_masked(echo: &serde_json::Value, header: &str, secret: &str) {
    assert_eq!(
        echo["headers_sha256"][header],
        sha256_hex(secret.as_bytes()),
        "the upstream did not receive the secret in {header}: {echo}"
    );
    assert_eq!(
        echo["headers"][header],
        "*".repeat(secret.len()),
        "the echoed {header} was not masked: {echo}"
    );
}

/// Entries of a namespace's own hosts file (`ip netns exec` bind-mounts
/// `/etc/netns/NAME/hosts` over `/etc/hosts`): how programs run in it resolve names nobody
/// pinned. Removed on drop.
pub struct NetnsHosts(PathBuf);
impl NetnsHosts {
    /// Write `content` as the hosts file of `ns`.
    pub fn write(ns: &Netns, content: &str) -> NetnsHosts {
        let dir = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), content).unwrap();
        NetnsHosts(dir)
    }
}
impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client process in the sandbox driven line by line (stdin/stdout), for tests that must act
/// (swap a policy, kill egret) between two steps of one connection.
pub struct Interactive {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Interactive {
    /// Start `python3 -c script args...` inside `ns`.
    pub fn python(ns: &Netns, script: &str, args: &[&str]) -> Interactive {
        let mut child = ns
            .cmd("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Interactive { child, stdout }
    }
    /// The next line the script prints.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).expect("read");
        line
    }
    /// Let the script go on (it waits in `input()`), then collect the rest of its output.
    pub fn finish(mut self) -> String {
        use std::io::Write;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let _ = self.child.wait();
        rest
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where JavaScript/TypeScript/Python handlers built by the tests and their compiled artifacts
/// are kept between runs: `$EGRET_E2E_LANG_CACHE`, else `~/.cache/egret/e2e-lang-handlers`
/// (outside the checkout, so a fresh clone on the same machine reuses it, like npm's and pip's
/// download caches). A toolchain build takes half a minute and wasmtime's compile of a 12-18 MB
/// component about 20 s, so each is done once per content; entries are keyed by everything
/// that decides what the build makes (see [`lang_handler`]), artifacts by the module's sha256
/// and the engine.
pub fn lang_cache_dir() -> PathBuf {
    let d = match std::env::var_os("EGRET_E2E_LANG_CACHE").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join(".cache/egret/e2e-lang-handlers"),
    };
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `--handler-cache-dir` shared by the tests that load JavaScript/Python handlers.
pub fn lang_artifact_dir() -> String {
    lang_cache_dir()
        .join("artifacts")
        .to_string_lossy()
        .into_owned()
}

/// The component `egret handler build SOURCE` makes (SOURCE relative to the repository root
/// or absolute), built on first use and kept under [`lang_cache_dir`] keyed by the source, the
/// SDKs, the WIT and egret's build code (the toolchains' versions are pinned in it), so any
/// change to them rebuilds it. Concurrent tests asking for the same
/// source wait for one build.
pub fn lang_handler(source: &str) -> PathBuf {
    static BUILDS: std::sync::Mutex<Vec<(String, std::sync::Arc<std::sync::Mutex<()>>)>> =
        std::sync::Mutex::new(Vec::new());
    let root = repo_root();
    let src = root.join(source);
    let mut key = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let sdk: &[&str] = if source.ends_with(".py") {
        &["handlers-wasm/sdk-py/egret_handler.py"]
    } else {
        &[
            "handlers-wasm/sdk-js/egret-handler.js",
            "handlers-wasm/sdk-js/build.mjs",
        ]
    };
    for f in sdk.iter().chain(&[
        "handlers-wasm/wit/handler.wit",
        "crates/egret-wasm/src/toolchain.rs",
        "crates/egret/src/handler.rs",
    ]) {
        key.extend(std::fs::read(root.join(f)).unwrap());
    }
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let out = lang_cache_dir().join(format!("{stem}-{}.wasm", &sha256_hex(&key)[..16]));
    let lock = {
        let mut b = BUILDS.lock().unwrap();
        match b.iter().find(|(k, _)| *k == source) {
            Some((_, l)) => l.clone(),
            None => {
                let l = std::sync::Arc::new(std::sync::Mutex::new(()));
                b.push((source.to_owned(), l.clone()));
                l
            }
        }
    };
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if !out.exists() {
        let tmp = out.with_extension("wasm.partial");
        let o = Command::new(bin("egret"))
            .args(["handler", "build"])
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .args(["--handler-cache-dir", &lang_artifact_dir()])
            .output()
            .unwrap();
        let (code, stdout, stderr) = code_out_err(&o);
        assert_eq!(
            code,
            0,
            "egret handler build {source} failed (scripts/setup.sh installs the toolchains):\n{stdout}{stderr}"
        );
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

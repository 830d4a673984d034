//! Starting a container's egret detached from the hook, waiting until it intercepts, and
//! stopping it again.
//!
//! The sidecar runs in a session of its own with no descriptor of the hook's (the runtime
//! waits for the hook's output pipes to close: an inherited one would hang it) and outlives
//! the hook; its pid and start time are recorded in the run directory so that `poststop`
//! signals that process and no other that reused the pid. egret is started with
//! `--watch-pid` on the container's first process, so it also stops when the container
//! ends without a `poststop` (a runtime killed midway).
use crate::{HookError, HookOptions, Outcome, Plan};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runtime gives hooks no `PATH`; egret runs `nft` and `ip` from it.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const RECORD: &str = "sidecar";
const READY: &str = "ready";
const CA: &str = "ca.pem";
/// The network namespace the sidecar attached to (`DEV INO` of its nsfs file).
const NETNS: &str = "netns";
/// The policy the sidecar enforces.
const POLICY: &str = "policy";
/// In a joined container's run directory: the container whose egret it uses.
const JOINED: &str = "joined";

/// A sidecar already attached to a container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The container that started it.
    pub container_id: String,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// The policy it enforces.
    pub policy: PathBuf,
}

/// `DEV INO` of a network namespace file.
fn netns_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("{} {}", m.dev(), m.ino()))
}

/// The running sidecar (started by this hook, under the same run root) attached to the
/// network namespace of `plan`'s process, if any: containers of one pod share one namespace,
/// and so one egret.
pub fn owner_of_netns(plan: &Plan, opts: &HookOptions) -> Result<Option<Owner>, HookError> {
    let ns = format!("/proc/{}/ns/net", plan.pid);
    let Some(target) = netns_identity(Path::new(&ns)) else {
        return Err(HookError::NoPid(plan.container_id.clone()));
    };
    let Ok(entries) = std::fs::read_dir(&opts.run_root) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        if read(NETNS).as_deref().map(str::trim) != Some(target.as_str()) {
            continue;
        }
        let live = read(RECORD)
            .and_then(|r| ProcessId::parse(&r))
            .is_some_and(alive);
        if !live || dir == plan.run_dir {
            continue;
        }
        return Ok(Some(Owner {
            container_id: entry.file_name().to_string_lossy().into_owned(),
            policy: PathBuf::from(read(POLICY).unwrap_or_default().trim_end_matches('\n')),
            run_dir: dir,
        }));
    }
    Ok(None)
}

/// Use `owner`'s egret for `plan`'s container: same policy required; its CA goes into this
/// container's trust bundles; the run directory only says whose egret it is.
pub fn join(plan: &Plan, owner: &Owner, rootfs: &Path) -> Result<Vec<String>, HookError> {
    if owner.policy != plan.policy {
        return Err(HookError::PolicyMismatch {
            container: plan.container_id.clone(),
            owner: owner.container_id.clone(),
            owner_policy: owner.policy.clone(),
            policy: plan.policy.clone(),
        });
    }
    let ca = owner.run_dir.join(CA);
    let ca_pem = std::fs::read_to_string(&ca).map_err(HookError::io("cannot read", &ca))?;
    make_run_dir(plan)?;
    let result = (|| {
        let joined = plan.run_dir.join(JOINED);
        std::fs::write(&joined, format!("{}\n", owner.container_id))
            .map_err(HookError::io("cannot write", &joined))?;
        crate::rootfs::install_ca(rootfs, &plan.container_id, &ca_pem)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&plan.run_dir);
    }
    result
}

/// A process as recorded: the pid and its start time (clock ticks after boot), which tell it
/// apart from a later process with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_time: u64,
}

impl ProcessId {
    /// Parse `PID START` as written by [`ProcessId::render`].
    pub fn parse(s: &str) -> Option<ProcessId> {
        let mut it = s.split_whitespace();
        let pid = it.next()?.parse().ok()?;
        let start_time = it.next()?.parse().ok()?;
        Some(ProcessId { pid, start_time })
    }
    /// `PID START\n`.
    pub fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }
}

/// State and start time from a `/proc/PID/stat` line (the name in parentheses may hold
/// spaces and parentheses itself, so fields are counted after the last `)`).
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn stat_of(pid: u32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the recorded process still runs (a zombie has finished).
fn alive(p: ProcessId) -> bool {
    matches!(stat_of(p.pid), Some((state, start)) if start == p.start_time && state != 'Z' && state != 'X')
}

fn signal(p: ProcessId, sig: nix::sys::signal::Signal) {
    if alive(p) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), sig);
    }
}

/// SIGTERM (egret detaches and exits), then SIGKILL if it has not exited in time.
fn terminate(p: ProcessId, grace: Duration) {
    signal(p, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + grace;
    while alive(p) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if alive(p) {
        signal(p, nix::sys::signal::Signal::SIGKILL);
        let until = Instant::now() + Duration::from_secs(2);
        while alive(p) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Append a line to the run directory's `hook.log` (best effort: it is for the operator).
pub fn note(run_dir: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("hook.log"))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Where a container's egret log and audit events go.
fn log_paths(plan: &Plan, opts: &HookOptions) -> (PathBuf, PathBuf) {
    match &opts.log_dir {
        Some(d) => (
            d.join(format!("{}.log", plan.container_id)),
            d.join(format!("{}.audit.jsonl", plan.container_id)),
        ),
        None => (
            plan.run_dir.join("egret.log"),
            plan.run_dir.join("audit.jsonl"),
        ),
    }
}

/// The last lines of egret's log: its error is the last one.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "it exited without a message".into()
    } else {
        tail
    }
}

/// Make the container's run directory, refusing when a live egret is recorded in it; a dead
/// one's directory is replaced.
fn make_run_dir(plan: &Plan) -> Result<(), HookError> {
    if let Ok(rec) = std::fs::read_to_string(plan.run_dir.join(RECORD)) {
        if let Some(p) = ProcessId::parse(&rec).filter(|&p| alive(p)) {
            return Err(HookError::AlreadyRunning {
                container: plan.container_id.clone(),
                pid: p.pid,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&plan.run_dir);
    if let Some(parent) = plan.run_dir.parent() {
        std::fs::create_dir_all(parent).map_err(HookError::io("cannot create", parent))?;
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&plan.run_dir)
        .map_err(HookError::io("cannot create", &plan.run_dir))
}

/// Refuse a policy the sidecar cannot load, or that grants a secret from an environment
/// variable `is_set` says is unset: the sidecar gets the hook's environment (empty, unless
/// the hooks.d entry sets `env`), so every request using that secret would fail later.
pub fn check_policy(plan: &Plan, is_set: impl Fn(&str) -> bool) -> Result<(), HookError> {
    let cfg = egret_app::load_policy_file(&plan.policy).map_err(|e| HookError::Policy {
        container: plan.container_id.clone(),
        why: e.to_string(),
    })?;
    match egret_app::secrets::unset_env_secrets(&cfg, is_set)
        .into_iter()
        .next()
    {
        Some(u) => Err(HookError::UnsetSecret {
            container: plan.container_id.clone(),
            policy: plan.policy.clone(),
            secret: u.secret,
            var: u.var,
        }),
        None => Ok(()),
    }
}

/// Start the sidecar for `plan`, wait until it intercepts, add its CA to the root
/// filesystem's trust bundles. On any failure the sidecar is stopped and the run directory
/// removed before the error is returned: nothing is left half-attached.
pub fn start(
    plan: &Plan,
    opts: &HookOptions,
    rootfs: &Path,
) -> Result<(u32, Vec<String>), HookError> {
    make_run_dir(plan)?;
    let (log, audit) = log_paths(plan, opts);
    let mut child = None;
    let result = start_inner(plan, opts, rootfs, &log, &audit, &mut child);
    if result.is_err() {
        if let Some((mut c, id)) = child {
            terminate(id, Duration::from_secs(5));
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&plan.run_dir);
        if opts.log_dir.is_some() {
            let _ = std::fs::remove_file(&log);
            let _ = std::fs::remove_file(&audit);
        }
    }
    result
}

/// The `egret run` command line of `plan`'s sidecar (after the program name). The flag
/// names are `egret run`'s; the binary's tests parse this line with its own parser, so a
/// renamed flag fails there rather than at a container's start.
pub fn run_argv(plan: &Plan, opts: &HookOptions, audit: &Path) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    let mut flag = |name: &str, value: &std::ffi::OsStr| {
        argv.push(name.into());
        argv.push(value.to_owned());
    };
    flag("--netns", format!("/proc/{}/ns/net", plan.pid).as_ref());
    flag("--sandbox-id", plan.sandbox_id.as_ref());
    flag("--policy", plan.policy.as_os_str());
    flag("--ready-file", plan.run_dir.join(READY).as_os_str());
    flag("--ca-out", plan.run_dir.join(CA).as_os_str());
    flag("--audit-log", audit.as_os_str());
    flag("--watch-pid", plan.pid.to_string().as_ref());
    if let Some(s) = &plan.admin_socket {
        flag("--admin-socket", s.as_os_str());
    }
    if let Some(s) = &plan.state_dir {
        flag("--state-dir", s.as_os_str());
    }
    if let Some(dir) = &opts.handler_cache_dir {
        let given = opts
            .run_args
            .iter()
            .any(|a| a == "--handler-cache-dir" || a.starts_with("--handler-cache-dir="));
        if !given {
            flag("--handler-cache-dir", dir.as_os_str());
        }
    }
    if let Some(n) = plan.max_handler_instances {
        flag("--max-handler-instances", n.to_string().as_ref());
    }
    argv.extend(opts.run_args.iter().map(Into::into));
    argv
}

fn start_inner(
    plan: &Plan,
    opts: &HookOptions,
    rootfs: &Path,
    log: &Path,
    audit: &Path,
    child: &mut Option<(Child, ProcessId)>,
) -> Result<(u32, Vec<String>), HookError> {
    let program = match &opts.egret {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(HookError::io(
            "cannot find this executable",
            Path::new("/proc/self/exe"),
        ))?,
    };
    if let Some(dir) = &opts.log_dir {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(HookError::io("cannot create the log directory", dir))?;
    }
    let spawned = spawn(plan, &program, opts, log, audit)?;
    let pid = spawned.id();
    // The child cannot have been reaped yet: its stat is there until we wait for it.
    let (_, start_time) = stat_of(pid)
        .ok_or_else(|| sidecar_failed(plan, format!("/proc/{pid}/stat is unreadable")))?;
    let id = ProcessId { pid, start_time };
    *child = Some((spawned, id));
    write_records(plan, id)?;
    wait_ready(plan, opts, log, &mut child.as_mut().expect("set above").0)?;
    let ca = plan.run_dir.join(CA);
    let ca_pem = std::fs::read_to_string(&ca).map_err(HookError::io("cannot read", &ca))?;
    let bundles = crate::rootfs::install_ca(rootfs, &plan.container_id, &ca_pem)?;
    // From here the sidecar belongs to no one: dropping the handle neither kills nor waits.
    *child = None;
    Ok((pid, bundles))
}

fn sidecar_failed(plan: &Plan, why: String) -> HookError {
    HookError::Sidecar {
        container: plan.container_id.clone(),
        policy: plan.policy.clone(),
        why,
    }
}

/// `egret run` in a session of its own, its stderr to `log`, no descriptor of the hook's.
fn spawn(
    plan: &Plan,
    program: &Path,
    opts: &HookOptions,
    log: &Path,
    audit: &Path,
) -> Result<Child, HookError> {
    let stderr = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(log)
            .map_err(HookError::io("cannot create", log))?
    };
    let mut cmd = Command::new(program);
    cmd.arg("run").args(run_argv(plan, opts, audit));
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(|source| HookError::Spawn {
        container: plan.container_id.clone(),
        program: program.to_path_buf(),
        policy: plan.policy.clone(),
        source,
    })
}

/// The run directory's record of the sidecar: which process, which namespace, which policy.
fn write_records(plan: &Plan, id: ProcessId) -> Result<(), HookError> {
    let netns = format!("/proc/{}/ns/net", plan.pid);
    let identity = netns_identity(Path::new(&netns))
        .ok_or_else(|| HookError::NoPid(plan.container_id.clone()))?;
    for (file, content) in [
        (RECORD, id.render()),
        (NETNS, format!("{identity}\n")),
        (POLICY, format!("{}\n", plan.policy.display())),
    ] {
        let path = plan.run_dir.join(file);
        std::fs::write(&path, content).map_err(HookError::io("cannot write", &path))?;
    }
    Ok(())
}

/// Until the sidecar writes its ready file; its log's last lines if it exits or times out.
fn wait_ready(
    plan: &Plan,
    opts: &HookOptions,
    log: &Path,
    child: &mut Child,
) -> Result<(), HookError> {
    let ready = plan.run_dir.join(READY);
    let until = Instant::now() + opts.ready_timeout;
    loop {
        if ready.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(sidecar_failed(
                plan,
                format!("egret exited ({status}): {}", log_tail(log)),
            ));
        }
        if Instant::now() >= until {
            return Err(sidecar_failed(
                plan,
                format!(
                    "not intercepting after {:?}; its log ends: {}",
                    opts.ready_timeout,
                    log_tail(log)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stop the sidecar recorded in `run_dir` (if it still runs) and remove the directory. A
/// container that joined another's egret leaves it running.
pub fn stop(run_dir: &Path) -> Result<Outcome, HookError> {
    if run_dir.join(JOINED).exists() {
        std::fs::remove_dir_all(run_dir).map_err(HookError::io("cannot remove", run_dir))?;
        return Ok(Outcome::Stopped);
    }
    let record = match std::fs::read_to_string(run_dir.join(RECORD)) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if run_dir.exists() {
                std::fs::remove_dir_all(run_dir)
                    .map_err(HookError::io("cannot remove", run_dir))?;
                return Ok(Outcome::Stopped);
            }
            return Ok(Outcome::NothingToStop);
        }
        Err(e) => return Err(HookError::io("cannot read", &run_dir.join(RECORD))(e)),
    };
    if let Some(p) = ProcessId::parse(&record) {
        terminate(p, Duration::from_secs(10));
    }
    std::fs::remove_dir_all(run_dir).map_err(HookError::io("cannot remove", run_dir))?;
    Ok(Outcome::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn the_record_round_trips_and_rejects_garbage() {
        let p = ProcessId {
            pid: 12,
            start_time: 34,
        };
        assert_eq!(ProcessId::parse(&p.render()), Some(p));
        assert_eq!(ProcessId::parse("12"), None);
        assert_eq!(ProcessId::parse("x 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let (_, start) = stat_of(me).unwrap();
        assert!(alive(ProcessId {
            pid: me,
            start_time: start
        }));
        assert!(!alive(ProcessId {
            pid: me,
            start_time: start + 1
        }));
    }

    #[test]
    fn stopping_without_a_run_dir_is_nothing_to_do() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            stop(&d.path().join("gone")).unwrap(),
            Outcome::NothingToStop
        );
        let half = d.path().join("half");
        std::fs::create_dir(&half).unwrap();
        assert_eq!(stop(&half).unwrap(), Outcome::Stopped);
        assert!(!half.exists());
    }
}

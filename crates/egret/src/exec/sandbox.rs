//! The sandbox side of `egret exec`: the helper process forked before egret starts any thread
//! (a multithreaded process cannot enter a new user namespace), and the command's init.
//!
//! ```text
//! egret (caller's namespaces: serves, dials upstream)
//!  └─ helper: unshare user+net+mount, map the caller's uid/gid, capture (listeners, routes,
//!     nft), send the listeners to egret, bind the trust bundle and resolv.conf, unshare pid
//!      └─ init (pid 1 of the sandbox): reaps, forwards signals, exits with the command's status
//!          └─ CMD (the caller's uid, cwd, environment and terminal; no capabilities)
//! ```
//! Every process below egret dies with its parent (`PR_SET_PDEATHSIG`), and the whole pid
//! namespace with init, so nothing outlives the command or egret.
#![allow(unsafe_code)]

use super::refused;
use super::trust::{self, RESOLV_CONF};
use super::wire::{self, Msg};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// What the helper needs from the command line.
pub(super) struct Plan {
    /// Names the nft table's owner.
    pub sandbox_id: String,
    /// Transparent listener port inside the sandbox.
    pub tcp_port: u16,
    /// DNS port inside the sandbox.
    pub dns_port: u16,
    /// The command and its arguments.
    pub argv: Vec<CString>,
}

/// The exit status `egret exec` reports for a process that ended with `status`: its exit
/// code, or 128 + the signal that killed it (as shells do).
pub(super) fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Code for a failure of egret itself (as `env` and `timeout` use it).
pub(super) const EXIT_EGRET: i32 = 125;

/// The helper process: never returns.
pub(super) fn helper(sock: OwnedFd, plan: Plan) -> ! {
    let code = match setup(&sock, &plan) {
        Ok(code) => code,
        Err(error) => {
            // Printed here: egret may be past listening (it only learns the helper ended).
            eprintln!("egret: error: {error}");
            EXIT_EGRET
        }
    };
    // SAFETY: _exit in a forked child: no destructors or atexit handlers of the parent run.
    unsafe { libc::_exit(code) }
}

fn setup(sock: &OwnedFd, plan: &Plan) -> Result<i32, String> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if nix::unistd::getppid() != parent {
        return Ok(EXIT_EGRET);
    }
    // The terminal's Ctrl-C, Ctrl-\ and hang-up reach the command itself (same process
    // group); the helper only waits, and must outlive them as long as the command does.
    for s in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigIgn) }
            .map_err(|e| format!("signal: {e}"))?;
    }
    // The command gets the caller's environment as it was.
    let outer_env: Vec<_> = std::env::vars_os().collect();
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| refused::explain(e, &refused::Facts::read()))?;
    map_ids(uid.as_raw(), gid.as_raw())?;
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("could not create the sandbox's network and mount namespaces: {e}"))?;
    // Nothing mounted here may reach the caller's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("could not make the sandbox's mounts private: {e}"))?;
    // The capture speaks netlink from this process, which holds every capability in its new
    // user namespace: nothing it runs needs one.
    let listeners = egret_capture::attach_here(&plan.sandbox_id, plan.tcp_port, plan.dns_port)
        .map_err(|e| format!("could not capture the sandbox's network: {e}"))?;
    let mut fds = vec![listeners.tcp4.as_raw_fd()];
    fds.extend(listeners.tcp6.as_ref().map(|l| l.as_raw_fd()));
    fds.push(listeners.dns4.as_raw_fd());
    fds.extend(listeners.dns6.as_ref().map(|l| l.as_raw_fd()));
    let ipv6 = listeners.tcp6.is_some() && listeners.dns6.is_some();
    wire::send(sock, &Msg::Ready { ipv6 }, &fds).map_err(|e| format!("egret is gone: {e}"))?;
    // egret holds them now; copies here would keep serving nobody.
    drop(listeners);
    let (bundle, strip_env) = match wire::recv(sock) {
        Ok((Msg::Serving { strip_env }, mut fds)) if fds.len() == 1 => (fds.remove(0), strip_env),
        Ok((other, fds)) => {
            return Err(format!(
                "unexpected message from egret: {other:?} with {} descriptors",
                fds.len()
            ))
        }
        // egret failed to start and says why itself.
        Err(_) => return Ok(EXIT_EGRET),
    };
    let bundle_path = trust_files(&bundle)?;
    drop(bundle);
    let outer = outer_env
        .into_iter()
        .filter(|(k, _)| !strip_env.iter().any(|s| k == s.as_str()));
    let env = trust::command_env(outer, &bundle_path, None);
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("could not create the sandbox's pid namespace: {e}"))?;
    // SAFETY: this process has one thread (egret forked it before starting any).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => init(&plan.argv, &env),
        ForkResult::Parent { child } => {
            let _ = wire::send(
                sock,
                &Msg::Started {
                    init_pid: child.as_raw(),
                },
                &[],
            );
            loop {
                match waitpid(child, None) {
                    Ok(status) => {
                        if let Some(code) = exit_code(status) {
                            return Ok(code);
                        }
                    }
                    Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(format!("waitpid: {e}")),
                }
            }
        }
    }
}

/// Map the caller's uid and gid to themselves: the command runs as the caller, without
/// capabilities; outside, its files and processes belong to the caller.
fn map_ids(uid: u32, gid: u32) -> Result<(), String> {
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|e| format!("could not write {path}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))
}

/// A tmpfs of the helper's own that no path reaches (the new mount API's detached mount): the
/// files bound over the system's live there, so nothing is written to any disk and nothing is
/// left when the sandbox ends. (A memfd cannot be bound: its mount is the kernel's.)
mod scratch {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
    const OPEN_TREE_CLONE: libc::c_uint = 0x1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

    fn fd(what: &str, r: libc::c_long) -> Result<OwnedFd, String> {
        if r < 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the system call returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }

    /// A fresh, detached tmpfs.
    pub(super) fn tmpfs() -> Result<OwnedFd, String> {
        let name = c"tmpfs";
        // SAFETY: fsopen/fsconfig/fsmount with valid strings and descriptors.
        unsafe {
            let fs = fd(
                "fsopen(tmpfs)",
                libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC),
            )?;
            let null = std::ptr::null::<libc::c_char>();
            if libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                null,
                null,
                0,
            ) != 0
            {
                return Err(format!(
                    "fsconfig(tmpfs): {}",
                    std::io::Error::last_os_error()
                ));
            }
            fd(
                "fsmount(tmpfs)",
                libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0),
            )
        }
    }

    /// Write `text` to `name` in the tmpfs `mnt` (mode 0444).
    pub(super) fn write(mnt: &OwnedFd, name: &str, text: &[u8]) -> Result<(), String> {
        use std::io::Write;
        let c = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: openat with a valid directory descriptor and string.
        let raw = unsafe {
            libc::openat(
                mnt.as_raw_fd(),
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o444 as libc::c_uint,
            )
        };
        let f = fd(&format!("creating {name}"), raw as libc::c_long)?;
        std::fs::File::from(f)
            .write_all(text)
            .map_err(|e| format!("writing {name}: {e}"))
    }

    /// Bind `name` of the tmpfs `mnt` over the file `target`.
    pub(super) fn bind(mnt: &OwnedFd, name: &str, target: &str) -> Result<(), String> {
        let c = CString::new(name).map_err(|e| e.to_string())?;
        let t = CString::new(target).map_err(|e| e.to_string())?;
        let empty = c"";
        // SAFETY: open_tree/move_mount with valid descriptors and strings.
        unsafe {
            let tree = fd(
                "open_tree",
                libc::syscall(
                    libc::SYS_open_tree,
                    mnt.as_raw_fd(),
                    c.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                ),
            )?;
            if libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) != 0
            {
                return Err(format!("move_mount: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// Bind `name` of the scratch tmpfs over `target`, read-only.
fn bind(mnt: &OwnedFd, name: &str, target: &str) -> Result<(), String> {
    scratch::bind(mnt, name, target)?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("remounting read-only: {e}"))
}

/// Bind the bundle over every system trust bundle there is and egret's resolver over
/// `/etc/resolv.conf`; returns the bundle path the environment names.
fn trust_files(bundle: &OwnedFd) -> Result<String, String> {
    let present = trust::bundles_present(|p| std::path::Path::new(p).is_file());
    let Some(first) = present.first().cloned() else {
        return Err(format!(
            "no system CA bundle found (looked for {}): install the distribution's ca-certificates package",
            egret_oci::rootfs::BUNDLES.map(|p| format!("/{p}")).join(", ")
        ));
    };
    // The descriptor shares egret's file offset (at the end): read from the start.
    let mut file = std::fs::File::from(bundle.try_clone().map_err(|e| e.to_string())?);
    let mut pem = Vec::new();
    std::io::Seek::rewind(&mut file)
        .and_then(|()| std::io::Read::read_to_end(&mut file, &mut pem))
        .map_err(|e| format!("reading the CA bundle from egret: {e}"))?;
    let mnt = scratch::tmpfs()?;
    scratch::write(&mnt, "ca-bundle.pem", &pem)?;
    scratch::write(&mnt, "resolv.conf", RESOLV_CONF.as_bytes())?;
    for path in &present {
        bind(&mnt, "ca-bundle.pem", path)
            .map_err(|e| format!("could not bind the sandbox's CA bundle over {path}: {e}"))?;
    }
    // Without the file (or with a dangling symlink to a resolver that is not running) libc
    // asks 127.0.0.1 anyway, and udp/53 goes to egret whatever the address.
    if std::path::Path::new("/etc/resolv.conf").is_file() {
        bind(&mnt, "resolv.conf", "/etc/resolv.conf")
            .map_err(|e| format!("could not bind egret's resolver over /etc/resolv.conf: {e}"))?;
    }
    Ok(first)
}

/// The signals init passes on to the command (besides reaping on SIGCHLD).
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The sandbox's pid 1: start the command, pass signals on, reap every orphan, and end with
/// the command's status (which ends every process left in the pid namespace).
fn init(argv: &[CString], env: &[CString]) -> ! {
    // egret's helper may be killed; then so is everything here.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // A /proc of this pid namespace: the command must not see egret (same uid: it could read
    // egret's environment and memory through the caller's /proc), and `ps` shows the
    // sandbox's processes. Refused where /proc is partly covered (inside some containers):
    // then the command does not run.
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        eprintln!("egret: error: could not mount the sandbox's own /proc ({e}): without it the command could reach egret's process; run egret exec where /proc is not partly covered (outside a container)");
        // SAFETY: a forked child leaving without running destructors.
        unsafe { libc::_exit(EXIT_EGRET) }
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) };
    }
    let mut old = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old));
    // SAFETY: one thread (init was forked from the single-threaded helper).
    let cmd = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            let err = nix::unistd::execvpe(&argv[0], argv, env).unwrap_err();
            let name = argv[0].to_string_lossy();
            eprintln!("egret: cannot run {name}: {}", err.desc());
            let code = if err == nix::Error::ENOENT { 127 } else { 126 };
            // SAFETY: exec failed in a forked child; leave without running destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("egret: cannot start the command: {e}");
            // SAFETY: as above.
            unsafe { libc::_exit(EXIT_EGRET) }
        }
    };
    loop {
        let (sig, code) = wait_signal(&set);
        match sig {
            Some(Signal::SIGCHLD) => loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(status) if status.pid() == Some(cmd) => {
                        let code = exit_code(status).unwrap_or(EXIT_EGRET);
                        // SAFETY: init ends; the kernel kills what is left in the namespace.
                        unsafe { libc::_exit(code) }
                    }
                    Ok(_) => {}
                }
            },
            // Sent by the terminal to its whole foreground process group: the command has
            // its own copy already. (A hang-up goes to the session leader alone: passed on.)
            Some(Signal::SIGINT | Signal::SIGQUIT) if code == libc::SI_KERNEL => {}
            Some(s) => {
                let _ = kill(cmd, s);
            }
            None => {}
        }
    }
}

/// The next of `set`'s signals (blocked) and how it was sent (`si_code`).
fn wait_signal(set: &SigSet) -> (Option<Signal>, i32) {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: `set` is a valid sigset and `info` is writable siginfo storage.
    let sig = unsafe { libc::sigwaitinfo(set.as_ref(), info.as_mut_ptr()) };
    if sig < 0 {
        return (None, 0);
    }
    // SAFETY: sigwaitinfo filled it in.
    let code = unsafe { info.assume_init() }.si_code;
    (Signal::try_from(sig).ok(), code)
}

/// Signals egret receives (blocked in every thread, taken by a thread of their own) and
/// passes to the sandbox's init: everything but the Ctrl-C and Ctrl-\\ the terminal sent to
/// the whole process group, which the command got itself. A terminal's hang-up reaches only
/// the session leader (egret, when it is one), so it is passed on.
pub(super) fn forward_signals(init: Pid) {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    loop {
        match wait_signal(&set) {
            (Some(Signal::SIGINT | Signal::SIGQUIT), libc::SI_KERNEL) => {}
            (Some(s), _) => {
                let _ = kill(init, s);
            }
            (None, _) => {}
        }
    }
}

/// Block the signals [`forward_signals`] takes, in this thread and every thread started
/// after (call it before any).
pub(super) fn block_forwarded() {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_gives_128_plus_its_number() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)),
            Some(143)
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, true)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}

//! `egret exec --proxy-env -- CMD`: the weaker mode, for machines that refuse user namespaces.
//! No namespace is made: egret serves its explicit proxy on a loopback port of the caller's
//! namespace and runs the command with the proxy variables pointing at it and the CA variables
//! at a bundle file in a private temporary directory (there is no mount namespace to bind it
//! over the system's). Only programs that honour the proxy variables go through egret; one
//! that ignores them connects directly.
use super::sandbox::{self, EXIT_EGRET};
use super::trust;
use crate::cli::ExecArgs;
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

/// Exit status when the command cannot be started: not found, or not executable (as shells).
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Run the command behind egret's explicit proxy. Called before any thread is started, like
/// the namespace mode, so the signals egret passes on are blocked in every thread.
pub(super) fn main(args: ExecArgs, sandbox_id: String) -> ExitCode {
    sandbox::block_forwarded();
    crate::init_tracing_level(args.log_format, "warn");
    let code = match run(args, sandbox_id) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("egret: error: {e}");
            EXIT_EGRET
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_EGRET as u8))
}

fn run(args: ExecArgs, sandbox_id: String) -> Result<i32, String> {
    let command = args.command.clone();
    let mut cfg = args.into_config(sandbox_id);
    cfg.proxy.explicit_proxy = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let mut app = cfg.build_without_capture().map_err(|e| e.to_string())?;
    let addr = app
        .explicit_proxy_addr()
        .ok_or("the explicit proxy has no address")?;
    // 0700, removed when this returns: the bundle is only the command's to read.
    let dir = tempfile::Builder::new()
        .prefix("egret-exec-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| format!("cannot make a private temporary directory: {e}"))?;
    let bundle = dir.path().join("ca-bundle.pem");
    egret_fs::write_atomic(&bundle, app.ca_bundle_pem().as_bytes(), 0o600, false)
        .map_err(|e| format!("cannot write {}: {e}", bundle.display()))?;
    let bundle = bundle
        .to_str()
        .ok_or("the temporary directory's path is not UTF-8: set TMPDIR to another")?;
    let strip = app.secret_env_vars();
    let outer = std::env::vars_os().filter(|(k, _)| !strip.iter().any(|s| k == s.as_str()));
    let env = trust::command_env(outer, bundle, Some(&format!("http://{addr}")));

    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]).env_clear();
    for kv in &env {
        let kv = kv.as_bytes();
        if let Some(eq) = kv.iter().position(|&b| b == b'=') {
            cmd.env(
                OsStr::from_bytes(&kv[..eq]),
                OsStr::from_bytes(&kv[eq + 1..]),
            );
        }
    }
    // egret blocks the signals it passes on (see `sandbox::block_forwarded`); the command
    // must start with none blocked, or a SIGTERM sent to it would stay pending for ever.
    // SAFETY: the closure runs between fork and exec and calls only sigprocmask, which is
    // async-signal-safe, and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "egret: error: cannot run {}: {e}",
                command[0].to_string_lossy()
            );
            return Ok(match e.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            });
        }
    };
    let pid = child.id();
    let stop_child = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    if let Err(e) = app.watch_pid(pid) {
        stop_child(&mut child);
        return Err(e.to_string());
    }
    if let Err(e) = std::thread::Builder::new()
        .name("egret-signals".into())
        .spawn(move || sandbox::forward_signals(Pid::from_raw(pid as i32)))
    {
        stop_child(&mut child);
        return Err(format!("starting the signal thread: {e}"));
    }
    if let Err(e) = app.run() {
        stop_child(&mut child);
        return Err(e.to_string());
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the command: {e}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(EXIT_EGRET))
}

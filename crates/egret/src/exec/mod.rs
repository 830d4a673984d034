//! `egret exec [FLAGS] -- CMD [ARGS…]`: run one command behind egret, rootless and
//! transparent. egret forks a helper before any thread exists (see [`sandbox`]); the helper
//! makes the sandbox's user, network and mount namespaces, captures them and sends the
//! listeners back; egret serves them from the caller's namespace, where its upstream
//! connections leave from, and exits with the command's status once the command is gone.
mod proxy_env;
mod refused;
mod sandbox;
mod trust;
mod wire;

use crate::cli::ExecArgs;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use sandbox::{Plan, EXIT_EGRET};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use wire::Msg;

/// Run `egret exec`. Must be called before any thread is started.
pub(crate) fn main(args: ExecArgs) -> ExitCode {
    let sandbox_id = args
        .sandbox_id
        .clone()
        .unwrap_or_else(|| format!("exec-{}", std::process::id()));
    if let Err(e) = egret_app::validate_sandbox_id(&sandbox_id) {
        return fail(e);
    }
    if args.proxy_env {
        return proxy_env::main(args, sandbox_id);
    }
    let argv: Result<Vec<CString>, _> = args
        .command
        .iter()
        .map(|a| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect();
    let Ok(argv) = argv else {
        return fail("an argument of the command contains a NUL byte");
    };
    let plan = Plan {
        sandbox_id: sandbox_id.clone(),
        tcp_port: args.listen_port,
        dns_port: args.dns_port,
        argv,
    };
    let (ours, theirs) = match socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => return fail(format!("socketpair: {e}")),
    };
    // SAFETY: no thread has been started yet (main calls this first), so the child may run
    // any code.
    #[allow(unsafe_code)]
    let helper = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            sandbox::helper(theirs, plan)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return fail(format!("fork: {e}")),
    };
    drop(theirs);
    sandbox::block_forwarded();
    crate::init_tracing_level(args.log_format, "warn");
    let code = match serve(args, sandbox_id, &ours, helper) {
        Ok(()) => wait_helper(helper),
        Err(e) => {
            eprintln!("egret: error: {e}");
            let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(helper, None);
            EXIT_EGRET
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(EXIT_EGRET as u8))
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("egret: error: {e}");
    ExitCode::from(EXIT_EGRET as u8)
}

/// The helper's exit status: the command's.
fn wait_helper(helper: Pid) -> i32 {
    loop {
        match waitpid(helper, None) {
            Ok(status) => {
                if let Some(code) = sandbox::exit_code(status) {
                    return code;
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => return EXIT_EGRET,
        }
    }
}

/// Take the listeners, build egret on them, let the command start, serve until the helper
/// (and with it the command) is gone. Returns at once when the helper failed (it printed
/// why; its exit status says so).
fn serve(args: ExecArgs, sandbox_id: String, sock: &OwnedFd, helper: Pid) -> Result<(), String> {
    let (msg, fds) = match wire::recv(sock) {
        Ok(m) => m,
        // The helper failed and said why.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => return Err(format!("the sandbox helper failed: {e}")),
    };
    let listeners = match msg {
        Msg::Ready { ipv6 } => listeners(fds, ipv6)?,
        other => {
            return Err(format!(
                "unexpected message from the sandbox helper: {other:?}"
            ))
        }
    };
    let mut cfg = args.into_config(sandbox_id);
    cfg.watch_pid = Some(helper.as_raw() as u32);
    let app = cfg
        .build_with_listeners(listeners)
        .map_err(|e| e.to_string())?;
    let bundle =
        nix::sys::memfd::memfd_create("egret-ca-bundle", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| format!("memfd_create: {e}"))?;
    let mut file = std::fs::File::from(bundle);
    std::io::Write::write_all(&mut file, app.ca_bundle_pem().as_bytes())
        .map_err(|e| format!("writing the CA bundle: {e}"))?;
    let strip_env = app.secret_env_vars();
    wire::send(
        sock,
        &Msg::Serving { strip_env },
        &[std::os::fd::AsRawFd::as_raw_fd(&file)],
    )
    .map_err(|e| format!("the sandbox helper is gone: {e}"))?;
    drop(file);
    let sock = sock.try_clone().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("egret-signals".into())
        .spawn(move || {
            if let Ok((Msg::Started { init_pid }, _)) = wire::recv(&sock) {
                sandbox::forward_signals(Pid::from_raw(init_pid));
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    app.run().map_err(|e| e.to_string())
}

/// The listeners in the order the helper sent them.
fn listeners(fds: Vec<OwnedFd>, ipv6: bool) -> Result<egret_capture::Listeners, String> {
    let want = if ipv6 { 4 } else { 2 };
    if fds.len() != want {
        return Err(format!(
            "the sandbox helper sent {} listeners, not {want}",
            fds.len()
        ));
    }
    let mut it = fds.into_iter();
    let mut next = || it.next().expect("counted above");
    let tcp4 = std::net::TcpListener::from(next());
    let tcp6 = ipv6.then(|| std::net::TcpListener::from(next()));
    let dns4 = std::net::UdpSocket::from(next());
    let dns6 = ipv6.then(|| std::net::UdpSocket::from(next()));
    Ok(egret_capture::Listeners {
        tcp4,
        tcp6,
        dns4,
        dns6,
    })
}

//! `egret ctl`: the command line over the admin API. The binary owns the top-level parser
//! (`--socket`, `--json`) and hands the parsed [`CtlArgs`] to [`run_ctl`].
//!
//! Command names and exit codes are a public interface: operators script against them.
//!
//! | exit | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the server refused the change (invalid, conflict, not found, bad request, too large) |
//! | 2 | usage error (bad `--params` JSON, unreadable file, empty secret, invalid name) |
//! | 3 | the admin socket is unreachable (missing, stale, or not permitted) |
//! | 4 | anything else (protocol error, forbidden, internal server error) |
//!
//! The arguments are declared in `args`, carried out as requests in `exec`, and the answers
//! printed in `output`.

mod args;
mod exec;
mod output;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::client::{AdminClient, AdminClientError};

pub use args::{
    CtlArgs, CtlCommand, HandlerCommand, ListAction, ModuleCommand, OnOff, PolicyCommand,
    SecretCommand,
};
pub use output::{exit_code, format_event};

/// Exit codes of [`run_ctl`].
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The server refused the change (invalid, conflict, not found).
    pub const REFUSED: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
    /// The admin socket is unreachable.
    pub const UNREACHABLE: u8 = 3;
    /// Protocol or other error.
    pub const OTHER: u8 = 4;
}

/// Runs one command against the admin socket at `socket`, printing to stdout/stderr.
/// `json` prints the server's JSON instead of the readable form. See [`exit`] for codes.
pub async fn run_ctl(socket: &Path, json: bool, args: impl Into<CtlArgs>) -> ExitCode {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    ExitCode::from(run_ctl_to(socket, json, args.into(), &mut out, &mut err).await)
}

/// [`run_ctl`] writing to the given streams and returning the exit code as a number (for
/// embedding and tests).
pub async fn run_ctl_to(
    socket: &Path,
    json: bool,
    args: CtlArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> u8 {
    let client = AdminClient::new(socket).with_timeout(answer_timeout(&args.command));
    let result = exec::run(&client, json, args, out).await;
    output::report(result, json, out, err)
}

/// How long a command waits for egret's answer. A change that may compile a module (a
/// JavaScript or Python component of 12-40 MB takes wasmtime 20 s or more on a busy machine)
/// gets minutes; everything else answers at once.
fn answer_timeout(command: &CtlCommand) -> std::time::Duration {
    match command {
        CtlCommand::Module(ModuleCommand::Upload { .. })
        | CtlCommand::Handler(HandlerCommand::Set { .. })
        | CtlCommand::Policy(PolicyCommand::Set { .. })
        | CtlCommand::Policy(PolicyCommand::Shadow { .. }) => std::time::Duration::from_secs(600),
        _ => std::time::Duration::from_secs(30),
    }
}

/// Why a command failed, which decides its exit code and where the message goes.
enum Failure {
    /// The arguments or what they name (a file, a variable, stdin) are unusable: nothing was
    /// sent.
    Usage(String),
    /// The request failed or the server refused it.
    Client(AdminClientError),
    /// The answer could not be written out.
    Output(String),
}

impl From<AdminClientError> for Failure {
    fn from(e: AdminClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Output(format!("writing output: {e}"))
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn commands_that_compile_wait_minutes() {
        let upload = CtlCommand::Module(ModuleCommand::Upload {
            name: "m".into(),
            file: "m.wasm".into(),
        });
        assert_eq!(answer_timeout(&upload).as_secs(), 600);
        assert_eq!(answer_timeout(&CtlCommand::Status).as_secs(), 30);
    }
}

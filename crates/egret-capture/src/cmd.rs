//! Running `nft` and `ip` from the thread that is inside the sandbox namespace: a child process
//! inherits the network namespace of the thread that forks it.
use crate::CaptureError;
use std::io::Write;
use std::process::{Command, Stdio};

/// Run `program args...`, feeding `stdin` if given. Returns stdout on success.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CaptureError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| CaptureError::Spawn {
        program: program.to_string(),
        source,
    })?;
    if let Some(input) = stdin {
        if let Some(mut w) = child.stdin.take() {
            w.write_all(input.as_bytes())
                .map_err(|source| CaptureError::Spawn {
                    program: program.to_string(),
                    source,
                })?;
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CaptureError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CaptureError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

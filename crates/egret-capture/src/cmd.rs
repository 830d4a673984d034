//! Running `nft` and `ip` from the thread that is inside the sandbox namespace: a child process
//! inherits the network namespace of the thread that forks it.
//!
//! Each process costs a millisecond or two, which is most of egret's start-up: independent
//! questions are started together ([`start`]) and changes go to `ip` in batches ([`Batch`]).
use crate::CaptureError;
use std::io::Write;
use std::process::{Child, Command, Stdio};

/// Run `program args...`, feeding `stdin` if given. Returns stdout on success.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CaptureError> {
    start(program, args, stdin)?.wait()
}

/// A command that is running; [`Pending::wait`] collects its output.
pub(crate) struct Pending {
    program: String,
    command: String,
    child: Child,
}

/// A finished command: whether it succeeded, its output, and the command line for errors.
struct Finished {
    ok: bool,
    stdout: String,
    stderr: String,
    command: String,
}

/// Start `program args...` (feeding `stdin`, which must fit a pipe buffer) without waiting.
pub(crate) fn start(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Pending, CaptureError> {
    let spawn_err = |source| CaptureError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(input) = stdin {
        if let Some(mut w) = child.stdin.take() {
            w.write_all(input.as_bytes()).map_err(spawn_err)?;
        }
    }
    Ok(Pending {
        program: program.to_string(),
        command: format!("{program} {}", args.join(" ")),
        child,
    })
}

impl Pending {
    /// Wait for the command; its stdout when it succeeded.
    pub(crate) fn wait(self) -> Result<String, CaptureError> {
        let done = self.finish()?;
        if done.ok {
            Ok(done.stdout)
        } else {
            Err(CaptureError::Command {
                command: done.command,
                stderr: done.stderr.trim().to_string(),
            })
        }
    }

    fn finish(self) -> Result<Finished, CaptureError> {
        let Pending {
            program,
            command,
            child,
        } = self;
        let out = child
            .wait_with_output()
            .map_err(|source| CaptureError::Spawn { program, source })?;
        Ok(Finished {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command,
        })
    }
}

/// `ip -4|-6 -force -batch -`: one process for many changes. Every line runs; a failure of a
/// line added with [`Batch::must`] is an error naming that line, one added with
/// [`Batch::may`] is ignored (deleting what may not exist, replacing an address).
pub(crate) struct Batch {
    family: &'static str,
    lines: Vec<(String, bool)>,
}

impl Batch {
    pub(crate) fn new(family: &'static str) -> Batch {
        Batch {
            family,
            lines: Vec::new(),
        }
    }

    pub(crate) fn must(&mut self, line: String) {
        self.lines.push((line, true));
    }

    pub(crate) fn may(&mut self, line: String) {
        self.lines.push((line, false));
    }

    pub(crate) fn run(self) -> Result<(), CaptureError> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let mut input = String::new();
        for (line, _) in &self.lines {
            input.push_str(line);
            input.push('\n');
        }
        let done = start("ip", &[self.family, "-force", "-batch", "-"], Some(&input))?.finish()?;
        let failed = failed_lines(&done.stderr);
        if !done.ok && failed.is_empty() {
            return Err(CaptureError::Command {
                command: done.command,
                stderr: done.stderr.trim().to_string(),
            });
        }
        for (n, message) in failed {
            if let Some((line, true)) = n.checked_sub(1).and_then(|i| self.lines.get(i)) {
                return Err(CaptureError::Command {
                    command: format!("ip {} {line}", self.family),
                    stderr: message,
                });
            }
        }
        Ok(())
    }
}

/// `ip -batch` reports a failed line as its error message followed by `Command failed -:N`.
fn failed_lines(stderr: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut message = Vec::new();
    for l in stderr.lines() {
        match l.trim().strip_prefix("Command failed -:") {
            Some(n) => {
                if let Ok(n) = n.trim().parse() {
                    out.push((n, message.join("; ")));
                }
                message.clear();
            }
            None if !l.trim().is_empty() => message.push(l.trim().to_string()),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::failed_lines;

    #[test]
    fn failed_lines_pairs_messages_with_line_numbers() {
        let stderr = "RTNETLINK answers: File exists\nCommand failed -:3\nRTNETLINK answers: No such file or directory\nCommand failed -:5\n";
        assert_eq!(
            failed_lines(stderr),
            vec![
                (3, "RTNETLINK answers: File exists".to_string()),
                (
                    5,
                    "RTNETLINK answers: No such file or directory".to_string()
                )
            ]
        );
        assert!(failed_lines("").is_empty());
    }
}

//! Naming and entering network namespaces. `setns(2)` switches only the calling thread, so all
//! work inside a sandbox namespace happens on a dedicated short-lived OS thread; the rest of
//! egret (and its tokio runtime) never leaves its own namespace.
use crate::CaptureError;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A reference to a network namespace: a name under `/var/run/netns`, a path, or a pid.
///
/// The namespace file is opened once, when the reference is parsed, and every later entry
/// (attach, detach) uses that descriptor: a pid's `/proc/PID/ns/net` may name another
/// process's namespace once the pid is reused, and a removed name must not redirect egret
/// elsewhere. Holding it keeps the namespace alive while egret runs (its listeners do anyway).
#[derive(Debug, Clone)]
pub struct NetnsRef {
    given: String,
    path: PathBuf,
    file: Arc<File>,
}

impl PartialEq for NetnsRef {
    fn eq(&self, other: &NetnsRef) -> bool {
        self.given == other.given && self.path == other.path
    }
}
impl Eq for NetnsRef {}

impl NetnsRef {
    /// Parse what the operator passed to `--netns`: all digits is a pid (`/proc/PID/ns/net`),
    /// anything with a `/` is a path, anything else a name created by `ip netns add`.
    pub fn parse(s: &str) -> Result<NetnsRef, CaptureError> {
        let path = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            PathBuf::from(format!("/proc/{s}/ns/net"))
        } else if s.contains('/') {
            PathBuf::from(s)
        } else {
            Path::new("/var/run/netns").join(s)
        };
        let not_found = |path: PathBuf| CaptureError::NetnsNotFound {
            what: s.to_string(),
            path,
        };
        if s.is_empty() {
            return Err(not_found(path));
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => return Err(not_found(path)),
        };
        Ok(NetnsRef {
            given: s.to_string(),
            path,
            file: Arc::new(file),
        })
    }

    /// Whether this is the namespace egret itself runs in. Capturing that one would send
    /// egret's own upstream connections back to itself and take over the network of
    /// everything sharing it (the host's, for a container with host networking).
    pub fn is_own(&self) -> Result<bool, CaptureError> {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net")
            .map_err(|e| CaptureError::Thread(format!("cannot read /proc/self/ns/net: {e}")))?;
        let target = self.file.metadata().map_err(|e| {
            CaptureError::Thread(format!(
                "cannot stat network namespace {}: {e}",
                self.display()
            ))
        })?;
        Ok(own.dev() == target.dev() && own.ino() == target.ino())
    }

    /// The namespace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How to name it in messages.
    pub fn display(&self) -> String {
        if self.given == self.path.to_string_lossy() {
            self.given.clone()
        } else {
            format!("{} ({})", self.given, self.path.display())
        }
    }
}

/// Refuse early, before anything is touched, when egret is not root.
pub(crate) fn check_privileges() -> Result<(), CaptureError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(CaptureError::NotPrivileged {
            detail: format!(
                "it is running as uid {}; run it as root (sudo) or as a service with those capabilities",
                nix::unistd::geteuid()
            ),
        });
    }
    Ok(())
}

/// Run `f` on a fresh OS thread that has entered `ns`. The thread ends afterwards, so no
/// thread of egret is ever left inside the sandbox namespace by accident.
pub fn in_netns<F, R>(ns: &NetnsRef, f: F) -> Result<R, CaptureError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file = ns.file.clone();
    let display = ns.display();
    let handle = std::thread::Builder::new()
        .name("egret-netns".into())
        .spawn(move || -> Result<R, CaptureError> {
            setns(&*file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                if source == nix::Error::EPERM {
                    CaptureError::NotPrivileged {
                        detail: format!("setns into {display} was refused (EPERM)"),
                    }
                } else {
                    CaptureError::Setns {
                        netns: display.clone(),
                        source,
                    }
                }
            })?;
            Ok(f())
        })
        .map_err(|e| CaptureError::Thread(e.to_string()))?;
    handle
        .join()
        .map_err(|_| CaptureError::Thread("panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_own_namespace_is_recognised_by_any_name() {
        let pid = std::process::id().to_string();
        for given in ["/proc/self/ns/net", pid.as_str()] {
            let ns = NetnsRef::parse(given).unwrap();
            assert!(ns.is_own().unwrap(), "{given}");
        }
    }

    #[test]
    fn a_missing_namespace_is_named() {
        let e = NetnsRef::parse("egret-no-such-ns").unwrap_err().to_string();
        assert!(
            e.contains("egret-no-such-ns") && e.contains("/var/run/netns"),
            "{e}"
        );
        assert!(NetnsRef::parse("").is_err());
    }
}

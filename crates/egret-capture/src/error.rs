//! Errors of the capture layer. Each one names the namespace or command and says what to do.
use std::path::PathBuf;

/// Why attaching to (or detaching from) a sandbox namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The namespace reference does not resolve to a namespace file.
    #[error("network namespace {what:?} not found (looked at {path}): create it first (`ip netns add NAME`), or pass a path such as /var/run/netns/NAME or the pid of a process inside it")]
    NetnsNotFound {
        /// What the user passed.
        what: String,
        /// Where we looked.
        path: PathBuf,
    },
    /// Not root / missing capabilities.
    #[error("egret must run as root (it needs CAP_SYS_ADMIN to enter the sandbox namespace and CAP_NET_ADMIN inside it); {detail}")]
    NotPrivileged {
        /// What failed.
        detail: String,
    },
    /// Entering or leaving the namespace failed.
    #[error("could not enter network namespace {netns}: {source}")]
    Setns {
        /// The namespace.
        netns: String,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// The namespace is egret's own (e.g. a container with host networking).
    #[error("network namespace {0} is egret's own network namespace (the host's, for a container started with host networking): egret attaches only to a sandbox's separate namespace; give the sandbox a network namespace of its own")]
    OwnNamespace(String),
    /// Another live egret already owns this namespace.
    #[error("network namespace {netns} is already attached to egret pid {pid} (sandbox {sandbox_id:?}); stop that instance first (kill -TERM {pid})")]
    AlreadyAttached {
        /// The namespace.
        netns: String,
        /// The running instance's pid.
        pid: u32,
        /// The running instance's sandbox id.
        sandbox_id: String,
    },
    /// Creating a listening socket failed.
    #[error("could not create the {what} listener on {addr} inside the sandbox namespace: {source}{hint}")]
    Listener {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// A hint (e.g. port in use).
        hint: &'static str,
    },
    /// A change the kernel or libnftables refused.
    #[error("`{command}` failed inside the sandbox namespace: {stderr}")]
    Command {
        /// The `ip` or `nft` command that makes the same change by hand.
        command: String,
        /// The kernel's or libnftables' answer.
        stderr: String,
    },
    /// libnftables, which loads the ruleset, could not be opened.
    #[error("could not load libnftables ({detail}): install it: apt-get install libnftables1 (Debian and Ubuntu; it comes with the nftables package)")]
    NftLibrary {
        /// What the dynamic loader said.
        detail: String,
    },
    /// The helper thread panicked or could not be spawned.
    #[error("namespace helper thread failed: {0}")]
    Thread(String),
}

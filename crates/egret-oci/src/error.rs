//! Why the hook refused a container. The runtime shows the message to whoever started the
//! container: each one names the container, the annotation or file at fault and the fix.
use std::path::PathBuf;

/// The hook failed; the runtime does not start the container.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The state on stdin is not an OCI state.
    #[error("the OCI state on stdin is not valid: {0} (egret oci-hook is run by the container runtime, which writes the container's state JSON to its stdin)")]
    State(String),
    /// The status does not tell which stage this is.
    #[error("cannot tell the hook stage from the container status {0:?}: pass it (egret oci-hook createRuntime|poststop)")]
    Stage(String),
    /// An `io.egret.*` annotation is unusable.
    #[error("container {container}: annotation {annotation}={value:?}: {why}")]
    Annotation {
        /// The container id.
        container: String,
        /// The annotation.
        annotation: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// An unknown `io.egret.*` annotation (most likely a typo of a known one).
    #[error("container {container}: unknown annotation {annotation:?}: egret knows io.egret.policy, io.egret.sandbox-id, io.egret.admin-socket, io.egret.state-dir")]
    UnknownAnnotation {
        /// The container id.
        container: String,
        /// The annotation.
        annotation: String,
    },
    /// The container id cannot name a directory.
    #[error("container id {0:?} cannot name a run directory (letters, digits, - _ . only)")]
    ContainerId(String),
    /// The state has no pid at `createRuntime`.
    #[error("container {0}: the OCI state has no pid, so there is no network namespace to attach to (run egret oci-hook at the createRuntime stage)")]
    NoPid(String),
    /// The bundle's config.json could not be read.
    #[error("cannot read the container's bundle config {}: {why}", path.display())]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A file of the run directory could not be made.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The egret binary could not be started.
    #[error("container {container}: cannot start {} (policy {}): {source}", program.display(), policy.display())]
    Spawn {
        /// The container id.
        container: String,
        /// The program.
        program: PathBuf,
        /// The policy file.
        policy: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// egret exited before it intercepted, or did not in time.
    #[error("container {container}: egret did not start with policy {}: {why}", policy.display())]
    Sidecar {
        /// The container id.
        container: String,
        /// The policy file.
        policy: PathBuf,
        /// egret's own error, or the timeout.
        why: String,
    },
    /// Another egret is recorded for this container and still runs.
    #[error("container {container}: egret pid {pid} is already attached to it (stop it first: egret oci-hook poststop, or kill -TERM {pid})")]
    AlreadyRunning {
        /// The container id.
        container: String,
        /// The running sidecar.
        pid: u32,
    },
    /// A container joining a pod's egret asks for another policy than the one it enforces.
    #[error("container {container} shares its network namespace with container {owner}, whose egret enforces policy {}; this container asks for {}: one network namespace has one policy (give every container of the pod the same io.egret.policy)", owner_policy.display(), policy.display())]
    PolicyMismatch {
        /// The joining container.
        container: String,
        /// The container that owns the egret.
        owner: String,
        /// The owner's policy.
        owner_policy: PathBuf,
        /// The policy this container asked for.
        policy: PathBuf,
    },
    /// The sandbox CA could not be added to the container's trust bundle.
    #[error("container {container}: cannot add the sandbox CA to {bundle} in its root filesystem {}: {why}", rootfs.display())]
    Trust {
        /// The container id.
        container: String,
        /// The root filesystem.
        rootfs: PathBuf,
        /// The bundle (inside the root filesystem).
        bundle: String,
        /// Why.
        why: String,
    },
    /// The container would run in the host's network namespace (`--network host`,
    /// `hostNetwork: true`): its egret would capture the host itself.
    #[error("container {container}: it would run in the runtime's own network namespace (host networking), which egret cannot capture without capturing the host; refused instead of running it without policy {}: give it a network of its own (not --network host / --net-host / hostNetwork: true), or run it without egret's runtime", policy.display())]
    HostNetwork {
        /// The container id.
        container: String,
        /// The policy it asked for.
        policy: PathBuf,
    },
    /// No real runc to hand the call to.
    #[error("cannot find the real runc: {0} (pass --runc PATH to egret runc)")]
    RuncNotFound(String),
    /// The real runc could not be executed.
    #[error("cannot run {}: {source}", program.display())]
    Exec {
        /// The runc binary.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A policy secret the sidecar would read from its environment, which a hook's sidecar
    /// does not have.
    #[error("container {container}: policy {} grants secret {secret} from environment variable {var}, which is not set for egret here (a sidecar started by the container runtime gets the hook's environment, not yours); use a file secret ({secret} = {{ file = \"/run/secrets/...\" }}), set {var} in the hook's environment (hooks.d \"env\"), or set the secret at runtime over the admin socket (io.egret.admin-socket, then egret ctl secret set)", policy.display())]
    UnsetSecret {
        /// The container id.
        container: String,
        /// The policy file.
        policy: PathBuf,
        /// The secret.
        secret: String,
        /// Its environment variable.
        var: String,
    },
    /// The policy file cannot be used.
    #[error("container {container}: {why}")]
    Policy {
        /// The container id.
        container: String,
        /// The loader's error (it names the file).
        why: String,
    },
}

impl HookError {
    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> HookError {
        let path = path.to_path_buf();
        move |source| HookError::Io { what, path, source }
    }
}

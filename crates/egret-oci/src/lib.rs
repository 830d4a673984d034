//! egret as an OCI runtime hook (`egret oci-hook`), the way podman, CRI-O and other runtimes
//! that read `hooks.d` call it.
//!
//! - `createRuntime` (the container's namespaces exist, its process has not started): start
//!   the container's own `egret run`, detached in a session of its own, attached to the
//!   container's network namespace; wait until it intercepts; append its sandbox CA to the
//!   trust bundles of the container's root filesystem. Anything failing undoes what was done
//!   and the hook exits non-zero, so the runtime does not start the container.
//! - `poststop`: stop that egret (which removes its nft table and routes) and remove the
//!   container's run directory.
//!
//! [`state`] reads the runtime's state, [`plan`] decides from it and the annotations (pure),
//! [`sidecar`] starts and stops the process, [`rootfs`] edits the trust bundles,
//! [`hooks_json`] writes the `hooks.d` file that selects this binary.
//!
//! Runtimes that do not read `hooks.d` (Docker, containerd, so Kubernetes on containerd) run
//! [`shim`] (`egret runc`) as their runc: it writes the same hook into a container's bundle
//! before the real runc creates it, decided by the same [`plan::Selection`].
#![warn(missing_docs)]

pub mod error;
pub mod hooks_json;
pub mod plan;
pub mod rootfs;
pub mod shim;
pub mod sidecar;
pub mod state;

pub use error::HookError;
pub use plan::{HookOptions, Plan, Selection, DEFAULT_HANDLER_CACHE_DIR};
pub use state::{OciState, Stage};

use std::time::Instant;

/// What one hook call did, for the caller to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar is intercepting (pid) after this many milliseconds.
    Started {
        /// The sidecar's pid.
        pid: u32,
        /// Hook start to intercepting and CA installed.
        ms: u64,
        /// Trust bundles the CA was appended to (inside the root filesystem).
        bundles: Vec<String>,
    },
    /// The container shares its network namespace with a container whose egret already
    /// runs (a pod): that egret's CA was added to this container's trust bundles.
    Joined {
        /// The container that owns the egret.
        owner: String,
        /// Trust bundles the CA was appended to.
        bundles: Vec<String>,
    },
    /// The sidecar was stopped (or had already exited) and its run directory removed.
    Stopped,
    /// `poststop` for a container that has no run directory (its start failed or it was
    /// never attached): nothing to do.
    NothingToStop,
}

/// Run the hook for `stage` (or the stage the state's status implies) on the state read
/// from the runtime.
pub fn run(
    opts: &HookOptions,
    stage: Option<Stage>,
    state_json: &[u8],
) -> Result<Outcome, HookError> {
    let started = Instant::now();
    let state = OciState::parse(state_json)?;
    let stage = match stage {
        Some(s) => s,
        None => Stage::from_status(&state.status)?,
    };
    match stage {
        Stage::CreateRuntime => {
            let plan = Plan::start(&state, opts)?;
            let rootfs = rootfs::rootfs_of_bundle(std::path::Path::new(&state.bundle))?;
            if let Some(owner) = sidecar::owner_of_netns(&plan, opts)? {
                let bundles = sidecar::join(&plan, &owner, &rootfs)?;
                sidecar::note(
                    &plan.run_dir,
                    &format!(
                        "uses the egret of container {} (same network namespace); CA added to {bundles:?}",
                        owner.container_id
                    ),
                );
                return Ok(Outcome::Joined {
                    owner: owner.container_id,
                    bundles,
                });
            }
            sidecar::check_policy(&plan, egret_app::secrets::env_is_set)?;
            let (pid, bundles) = sidecar::start(&plan, opts, &rootfs)?;
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            sidecar::note(
                &plan.run_dir,
                &format!("sidecar pid {pid} intercepting after {ms} ms; CA added to {bundles:?}"),
            );
            Ok(Outcome::Started { pid, ms, bundles })
        }
        Stage::Poststop => {
            let run_dir = plan::run_dir(opts, &state.id)?;
            sidecar::stop(&run_dir)
        }
    }
}

//! Capture installed in the namespace the calling process is already in.
//!
//! `egret exec` makes the sandbox's namespaces itself: a single-threaded helper process
//! unshares a user, network and mount namespace, calls [`attach_here`] from inside, and hands
//! the listeners to egret over a Unix socket. The namespace belongs to the sandbox's processes
//! alone and disappears with the last of them (and egret's listeners), so there is nothing to
//! detach and no guard is returned.
use crate::{attach_inside, CaptureConfig, CaptureError, Listeners, NetnsRef};

/// Bring up `lo`, create the transparent listeners and install the routes and the nft table in
/// the calling thread's own network namespace. `sandbox_id` names the ruleset's owner;
/// `tcp_port` and `dns_port` are the listeners' ports (the other settings are the defaults of
/// [`CaptureConfig::new`]).
///
/// Must be called by a process that holds `CAP_NET_ADMIN` over its network namespace (the
/// creator of a fresh user namespace does). Spawns no process and no thread.
pub fn attach_here(
    sandbox_id: &str,
    tcp_port: u16,
    dns_port: u16,
) -> Result<Listeners, CaptureError> {
    let mut cfg = CaptureConfig::new(NetnsRef::parse("/proc/self/ns/net")?, sandbox_id);
    cfg.tcp_port = tcp_port;
    cfg.dns_port = dns_port;
    let mut attached = attach_inside(&cfg)?;
    // Nothing to undo: the namespace goes away with the sandbox.
    attached.guard.done = true;
    Ok(attached.listeners)
}

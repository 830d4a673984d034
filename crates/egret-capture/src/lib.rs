//! Capture: attach egret to a sandbox's network namespace.
//!
//! Placement "attach" (A2 in `docs/capture.md`): the egret process stays in its own network
//! namespace. A short-lived OS thread enters the sandbox namespace, creates the transparent
//! listening sockets there, installs one nftables table (`inet egret`) and the policy-routing
//! rules, and returns. Sockets keep the namespace they were created in, so egret's *upstream*
//! connections leave from egret's own namespace and the sandbox needs no route out at all: if
//! egret dies, the sandbox has no path to the outside (the ruleset answers with resets).
//!
//! ```no_run
//! use egret_capture::{attach, Attached, CaptureConfig, NetnsRef};
//! let cfg = CaptureConfig::new(NetnsRef::parse("sbx-47").unwrap(), "agent-47");
//! let Attached { listeners, guard } = attach(&cfg).expect("attach");
//! // The proxy accepts on the TCP listeners, egret's resolver answers on the DNS sockets; all
//! // of them live in the sandbox's namespace. The IPv6 ones are None when it has no IPv6.
//! let tcp = std::iter::once(listeners.tcp4).chain(listeners.tcp6);
//! let dns = std::iter::once(listeners.dns4).chain(listeners.dns6);
//! # drop((tcp, dns));
//! guard.detach().expect("detach");
//! ```
// Only `libnft` (the libnftables calls) allows it.
#![deny(unsafe_code)]

mod error;
mod here;
mod libnft;
mod listeners;
mod netns;
mod nflink;
mod nft;
mod routes;
mod rtnl;

pub use error::CaptureError;
pub use here::attach_here;
pub use listeners::Listeners;
pub use netns::{in_netns, NetnsRef};
pub use nft::{render_new_ruleset, render_ruleset, RulesetParams, TABLE_NAME};

use std::net::{Ipv4Addr, Ipv6Addr};

/// Everything `attach` needs to know. Defaults match `docs/capture.md`.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// The sandbox's network namespace.
    pub netns: NetnsRef,
    /// Sandbox id, recorded in the nft table comment so a second egret can name the first.
    pub sandbox_id: String,
    /// Transparent TCP listener port inside the sandbox namespace.
    pub tcp_port: u16,
    /// DNS port (UDP, bound to 127.0.0.1 and ::1) that every udp/53 datagram is redirected to.
    pub dns_port: u16,
    /// Firewall mark that sends a packet to the TPROXY routing table.
    pub mark: u32,
    /// Mask applied to `mark` (other bits stay free for the platform).
    pub mark_mask: u32,
    /// Routing table holding `local default dev lo`.
    pub route_table: u32,
    /// Priority of the `ip rule`.
    pub rule_pref: u32,
    /// Extra destinations the sandbox may reach without egret (empty by default).
    pub bypass: Vec<ipnet::IpNet>,
}

impl CaptureConfig {
    /// A config with the documented defaults.
    pub fn new(netns: NetnsRef, sandbox_id: &str) -> Self {
        CaptureConfig {
            netns,
            sandbox_id: sandbox_id.to_string(),
            tcp_port: 15001,
            dns_port: 15053,
            mark: 0x1,
            mark_mask: 0xff,
            route_table: 100,
            rule_pref: 100,
            bypass: Vec::new(),
        }
    }
}

/// Address put on the blackhole device egret creates in a namespace that has no default route.
pub const BLACKHOLE_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 42, 1);
/// IPv6 counterpart of [`BLACKHOLE_V4`].
pub const BLACKHOLE_V6: Ipv6Addr = Ipv6Addr::new(0xfd65, 0x6772, 0x6574, 0xffff, 0, 0, 0, 1);
/// Name of the blackhole veth egret creates (its peer is `egret-bh1`, kept down).
pub const BLACKHOLE_DEV: &str = "egret-bh0";

/// The result of [`attach`]: the listening sockets (created inside the sandbox namespace) and a
/// guard that knows exactly what was installed.
#[derive(Debug)]
pub struct Attached {
    /// Transparent TCP listeners (IPv4 and, when the namespace has IPv6, IPv6).
    pub listeners: Listeners,
    /// Removes what was installed; also on drop.
    pub guard: CaptureGuard,
}

/// Knows what [`attach`] installed and removes exactly that.
#[derive(Debug)]
pub struct CaptureGuard {
    cfg: CaptureConfig,
    installed: routes::Installed,
    done: bool,
}

impl CaptureGuard {
    /// Remove the nft table, the ip rules and routes and the blackhole device egret created.
    /// The namespace is entered through the descriptor opened at parse time, so this works
    /// (and touches no other namespace) after its name or process is gone.
    pub fn detach(mut self) -> Result<(), CaptureError> {
        self.done = true;
        detach_inner(&self.cfg, &self.installed)
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = detach_inner(&self.cfg, &self.installed) {
                tracing::error!(error = %e, "failed to remove egret's rules from the sandbox namespace");
            }
        }
    }
}

fn detach_inner(cfg: &CaptureConfig, installed: &routes::Installed) -> Result<(), CaptureError> {
    let cfg2 = cfg.clone();
    let installed = installed.clone();
    in_netns(&cfg.netns, move || {
        let mut first_err = None;
        // The table first: from here on nothing is intercepted any more.
        if let Err(e) = nft::delete_own_table(std::process::id()) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = routes::remove(&cfg2, &installed) {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?
}

/// Attach to the sandbox namespace: create the listeners, then the routes, then the nft table
/// (last, so interception starts atomically once everything it needs exists). On any failure
/// everything done so far is undone and nothing stays installed.
pub fn attach(cfg: &CaptureConfig) -> Result<Attached, CaptureError> {
    netns::check_privileges()?;
    if cfg.netns.is_own()? {
        return Err(CaptureError::OwnNamespace(cfg.netns.display()));
    }
    let cfg2 = cfg.clone();
    in_netns(&cfg.netns, move || attach_inside(&cfg2))?
}

/// An [`attach`] running on a thread of its own; see [`start_attach`].
#[derive(Debug)]
pub struct Attaching(Option<std::thread::JoinHandle<Result<Attached, CaptureError>>>);

/// Start [`attach`] on a thread of its own and return at once.
///
/// Attaching is mostly waiting for the kernel (the nft commit waits for it), so egret does
/// the rest of its start-up meanwhile. Dropping the handle without
/// [`Attaching::wait`] (start-up failed elsewhere) waits for the attach and undoes it, so
/// nothing stays installed.
pub fn start_attach(cfg: CaptureConfig) -> Result<Attaching, CaptureError> {
    netns::check_privileges()?;
    std::thread::Builder::new()
        .name("egret-attach".into())
        .spawn(move || attach(&cfg))
        .map(|h| Attaching(Some(h)))
        .map_err(|e| CaptureError::Thread(e.to_string()))
}

impl Attaching {
    /// The finished attach.
    pub fn wait(mut self) -> Result<Attached, CaptureError> {
        let handle = self.0.take().expect("only Drop takes it otherwise");
        handle
            .join()
            .map_err(|_| CaptureError::Thread("the attach thread panicked".into()))?
    }
}

impl Drop for Attaching {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // Dropping the result runs CaptureGuard's Drop, which removes what was installed.
            drop(handle.join());
        }
    }
}

/// Refuses to take over the table of a running egret; a dead one's is replaced.
fn check_owner(cfg: &CaptureConfig, owner: Option<nft::Owner>) -> Result<(), CaptureError> {
    if let Some(owner) = owner {
        if owner.pid != std::process::id() && nft::pid_alive(owner.pid) {
            return Err(CaptureError::AlreadyAttached {
                netns: cfg.netns.display(),
                pid: owner.pid,
                sandbox_id: owner.sandbox_id,
            });
        }
        tracing::warn!(
            stale_pid = owner.pid,
            stale_sandbox = %owner.sandbox_id,
            "replacing the ruleset of an egret that is no longer running"
        );
    }
    Ok(())
}

/// Load the ruleset: created from scratch when the owner check found no table (the fast
/// load), replacing the old tables otherwise. If creating fails, something named egret
/// appeared after the check or was left without its `inet` table: check again, then replace.
fn load_ruleset(
    cfg: &CaptureConfig,
    params: &RulesetParams,
    fresh: bool,
) -> Result<(), CaptureError> {
    if fresh {
        match nft::load(&render_new_ruleset(params)) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "creating the egret tables failed; replacing them");
                check_owner(cfg, nft::current_owner()?)?;
            }
        }
    }
    nft::load(&render_ruleset(params))
}

fn attach_inside(cfg: &CaptureConfig) -> Result<Attached, CaptureError> {
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    let (mut nl, facts) = routes::query()?;
    let queried = ms();
    let owner = nft::current_owner()?;
    let owner_checked = ms();
    let fresh = owner.is_none();
    check_owner(cfg, owner)?;
    // `lo` comes up first; the listeners need it, nothing is captured before the ruleset
    // below is loaded.
    let (installed, devices) = routes::install(&mut nl, cfg, facts)?;
    drop(nl);
    let routed = ms();
    let listeners = match listeners::create(cfg) {
        Ok(l) => l,
        Err(e) => {
            let _ = routes::remove(cfg, &installed);
            return Err(e);
        }
    };
    let listening = ms();
    if let Some(bad) = devices.iter().find(|d| !nft::valid_device_name(d)) {
        let _ = routes::remove(cfg, &installed);
        return Err(CaptureError::Command {
            command: "ip -o link show (over rtnetlink)".into(),
            stderr: format!("device name {bad:?} cannot be written into the nft ruleset safely; rename it (letters, digits, - _ . @)"),
        });
    }
    let params = RulesetParams {
        pid: std::process::id(),
        sandbox_id: cfg.sandbox_id.clone(),
        tcp_port: cfg.tcp_port,
        dns_port: cfg.dns_port,
        mark: cfg.mark,
        bypass: cfg.bypass.clone(),
        devices,
    };
    if let Err(e) = load_ruleset(cfg, &params, fresh) {
        let _ = routes::remove(cfg, &installed);
        return Err(e);
    }
    tracing::debug!(
        queried,
        owner_checked,
        routed,
        listening,
        ruleset = ms(),
        fresh,
        "attach phases (ms since the attach began, in the sandbox's namespace)"
    );
    Ok(Attached {
        listeners,
        guard: CaptureGuard {
            cfg: cfg.clone(),
            installed,
            done: false,
        },
    })
}

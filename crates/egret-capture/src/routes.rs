//! Policy routing inside the sandbox namespace: the `ip rule fwmark … lookup TABLE` and the
//! `local default dev lo` routes that turn marked packets around to egret's listener, and a
//! blackhole default route for namespaces that have none (without *some* route, `connect()`
//! fails with ENETUNREACH before netfilter ever sees the packet). All of it over rtnetlink
//! ([`crate::rtnl`]); errors name the `ip` command that does the same by hand.
use crate::rtnl::{self, Create, Family, FwmarkRule, Link, Rtnl};
use crate::{CaptureConfig, CaptureError, BLACKHOLE_DEV, BLACKHOLE_V4, BLACKHOLE_V6};
use std::net::IpAddr;

/// The peer of [`BLACKHOLE_DEV`]; it stays down, so nothing sent through egret-bh0 goes
/// anywhere.
const BLACKHOLE_PEER: &str = "egret-bh1";

/// What `install` added, so that `remove` takes away exactly that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Installed {
    /// egret created the blackhole veth pair.
    pub blackhole: bool,
    /// IPv6 is disabled in the namespace, so no IPv6 rule or route was added.
    pub no_ipv6: bool,
}

fn rule(cfg: &CaptureConfig) -> FwmarkRule {
    FwmarkRule {
        mark: cfg.mark,
        mask: cfg.mark_mask,
        table: cfg.route_table,
        pref: cfg.rule_pref,
    }
}

/// The `ip` command that makes the same change, for error messages.
fn describe_rule(cfg: &CaptureConfig, family: Family, op: &str) -> String {
    format!(
        "ip {} rule {op} fwmark {:#x}/{:#x} lookup {} pref {}",
        family.flag(),
        cfg.mark,
        cfg.mark_mask,
        cfg.route_table,
        cfg.rule_pref
    )
}

fn describe_local_route(cfg: &CaptureConfig, family: Family) -> String {
    let default = match family {
        Family::V4 => "0.0.0.0/0",
        Family::V6 => "::/0",
    };
    format!(
        "ip {} route replace local {default} dev lo table {}",
        family.flag(),
        cfg.route_table
    )
}

fn failed(command: String) -> impl FnOnce(std::io::Error) -> CaptureError {
    move |e| CaptureError::Command {
        command: format!("{command} (over rtnetlink)"),
        stderr: e.to_string(),
    }
}

fn open() -> Result<Rtnl, CaptureError> {
    Rtnl::open().map_err(failed("opening a route netlink socket".into()))
}

/// The families egret installs rules for.
fn families(no_ipv6: bool) -> &'static [Family] {
    if no_ipv6 {
        &[Family::V4]
    } else {
        &[Family::V4, Family::V6]
    }
}

/// Delete every copy of our rule (a previous egret killed with -9 may have left some); the
/// first refusal means none is left.
fn delete_rules(nl: &mut Rtnl, cfg: &CaptureConfig, family: Family) {
    for _ in 0..16 {
        if nl
            .change(rtnl::fwmark_rule(family, rule(cfg), true), Create::No)
            .is_err()
        {
            break;
        }
    }
}

fn index_of(links: &[Link], name: &str) -> Option<u32> {
    links.iter().find(|l| l.name == name).map(|l| l.index)
}

/// What [`install`] needs to know about the namespace.
pub(crate) struct Facts {
    links: Vec<Link>,
    need4: bool,
    need6: bool,
    no_ipv6: bool,
}

/// Whether IPv6 is disabled on the namespace's `lo` (Docker does so in containers on networks
/// without IPv6): no IPv6 route can be added then, and no IPv6 packet can be sent either, so
/// there is nothing to capture. Read from a thread inside the namespace (`/proc/sys/net`
/// shows the reader's namespace); no IPv6 in the kernel at all counts as disabled.
fn ipv6_disabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
        .map_or(true, |v| v.trim() == "1")
}

/// The devices, and whether each family has a default route (asked from a thread inside
/// the namespace).
pub(crate) fn query() -> Result<(Rtnl, Facts), CaptureError> {
    let mut nl = open()?;
    let links = nl.links().map_err(failed("ip -o link show".into()))?;
    let need4 = !nl
        .has_default_route(Family::V4)
        .map_err(failed("ip -4 route show default".into()))?;
    let need6 = !nl
        .has_default_route(Family::V6)
        .map_err(failed("ip -6 route show default".into()))?;
    let facts = Facts {
        links,
        need4,
        need6,
        no_ipv6: ipv6_disabled(),
    };
    Ok((nl, facts))
}

/// Bring `lo` up, add the blackhole default route where the namespace has none, and the rule
/// and `local` routes of the capture. Returns what was installed and the namespace's devices
/// other than `lo` afterwards. On failure whatever was added is removed again.
pub(crate) fn install(
    nl: &mut Rtnl,
    cfg: &CaptureConfig,
    facts: Facts,
) -> Result<(Installed, Vec<String>), CaptureError> {
    let mut installed = Installed {
        no_ipv6: facts.no_ipv6,
        ..Installed::default()
    };
    match install_inner(nl, cfg, facts, &mut installed) {
        Ok(devices) => Ok((installed, devices)),
        Err(e) => {
            let _ = remove(cfg, &installed);
            Err(e)
        }
    }
}

fn install_inner(
    nl: &mut Rtnl,
    cfg: &CaptureConfig,
    facts: Facts,
    installed: &mut Installed,
) -> Result<Vec<String>, CaptureError> {
    let Facts {
        mut links,
        need4,
        need6,
        no_ipv6,
    } = facts;
    let need6 = need6 && !no_ipv6;
    let lo = index_of(&links, "lo").ok_or_else(|| CaptureError::Command {
        command: "ip link show lo (over rtnetlink)".into(),
        stderr: "the namespace has no loopback device".into(),
    })?;
    nl.change(rtnl::link_up(lo), Create::No)
        .map_err(failed("ip link set lo up".into()))?;
    if need4 || need6 {
        installed.blackhole = true;
        // A stale one from an egret killed with -9 is reused as it is.
        let bh = match index_of(&links, BLACKHOLE_DEV) {
            Some(index) => index,
            None => {
                nl.change(
                    rtnl::veth_pair(BLACKHOLE_DEV, BLACKHOLE_PEER),
                    Create::Exclusive,
                )
                .map_err(failed(format!(
                    "ip link add {BLACKHOLE_DEV} type veth peer name {BLACKHOLE_PEER}"
                )))?;
                for name in [BLACKHOLE_DEV, BLACKHOLE_PEER] {
                    let link = nl
                        .link(name)
                        .map_err(failed(format!("ip link show {name}")))?;
                    links.push(link);
                }
                index_of(&links, BLACKHOLE_DEV).unwrap_or_default()
            }
        };
        // An address already there (a stale device) is as good as a new one.
        let _ = nl.change(
            rtnl::address(bh, IpAddr::V4(BLACKHOLE_V4), 32),
            Create::Replace,
        );
        nl.change(rtnl::link_up(bh), Create::No)
            .map_err(failed(format!("ip link set {BLACKHOLE_DEV} up")))?;
        if !no_ipv6 {
            let _ = nl.change(
                rtnl::address(bh, IpAddr::V6(BLACKHOLE_V6), 128),
                Create::Replace,
            );
        }
        for (need, family) in [(need4, Family::V4), (need6, Family::V6)] {
            if need {
                nl.change(rtnl::default_via(family, bh), Create::Replace)
                    .map_err(failed(format!(
                        "ip {} route replace default dev {BLACKHOLE_DEV}",
                        family.flag()
                    )))?;
            }
        }
    }
    for &family in families(no_ipv6) {
        delete_rules(nl, cfg, family);
        nl.change(
            rtnl::fwmark_rule(family, rule(cfg), false),
            Create::Exclusive,
        )
        .map_err(failed(describe_rule(cfg, family, "add")))?;
        nl.change(
            rtnl::local_default(family, lo, cfg.route_table, false),
            Create::Replace,
        )
        .map_err(failed(describe_local_route(cfg, family)))?;
    }
    Ok(links
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo")
        .collect())
}

/// Remove the rules and `local` routes, and the blackhole pair when egret created it. What is
/// already gone is no error.
pub(crate) fn remove(cfg: &CaptureConfig, installed: &Installed) -> Result<(), CaptureError> {
    let mut nl = open()?;
    let lo = nl.link("lo").ok().map(|l| l.index);
    for &family in families(installed.no_ipv6) {
        delete_rules(&mut nl, cfg, family);
        if let Some(lo) = lo {
            let _ = nl.change(
                rtnl::local_default(family, lo, cfg.route_table, true),
                Create::No,
            );
        }
    }
    if installed.blackhole {
        // Deleting one end removes the pair and every route through it.
        if let Ok(bh) = nl.link(BLACKHOLE_DEV) {
            let _ = nl.change(rtnl::link_del(bh.index), Create::No);
        }
    }
    Ok(())
}

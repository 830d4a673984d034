//! Policy routing inside the sandbox namespace: the `ip rule fwmark … lookup TABLE` and the
//! `local default dev lo` routes that turn marked packets around to egret's listener, and a
//! blackhole default route for namespaces that have none (without *some* route, `connect()`
//! fails with ENETUNREACH before netfilter ever sees the packet).
use crate::cmd::{start, Batch, Pending};
use crate::{CaptureConfig, CaptureError, BLACKHOLE_DEV, BLACKHOLE_V4, BLACKHOLE_V6};

/// What `install` added, so that `remove` takes away exactly that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Installed {
    /// egret created the blackhole veth pair.
    pub blackhole: bool,
    /// IPv6 is disabled in the namespace, so no IPv6 rule or route was added.
    pub no_ipv6: bool,
}

/// Names of network devices other than `lo` in `ip -o link show` output.
fn parse_devices(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty() && n != "lo")
        .collect()
}

fn rule(cfg: &CaptureConfig, op: &str) -> String {
    format!(
        "rule {op} fwmark {:#x}/{:#x} lookup {} pref {}",
        cfg.mark, cfg.mark_mask, cfg.route_table, cfg.rule_pref
    )
}

/// The route that turns marked packets around to `lo`.
fn local_route(cfg: &CaptureConfig, op: &str, family: &str) -> String {
    let default = if family == "-6" { "::/0" } else { "0.0.0.0/0" };
    format!(
        "route {op} local {default} dev lo table {}",
        cfg.route_table
    )
}

/// Delete every copy of our rule (a previous egret killed with -9 may have left some).
fn delete_rules(cfg: &CaptureConfig, batch: &mut Batch) {
    for _ in 0..16 {
        batch.may(rule(cfg, "del"));
    }
}

/// What [`install`] needs to know about the namespace.
pub(crate) struct Facts {
    devices: Vec<String>,
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

/// The three independent questions, started at once: the devices, and whether each family
/// has a default route.
pub(crate) struct Query {
    links: Pending,
    def4: Pending,
    def6: Pending,
    no_ipv6: bool,
}

/// Start the questions (from a thread inside the namespace).
pub(crate) fn start_query() -> Result<Query, CaptureError> {
    Ok(Query {
        links: start("ip", &["-o", "link", "show"], None)?,
        def4: start("ip", &["-4", "route", "show", "default"], None)?,
        def6: start("ip", &["-6", "route", "show", "default"], None)?,
        no_ipv6: ipv6_disabled(),
    })
}

impl Query {
    /// The answers.
    pub(crate) fn wait(self) -> Result<Facts, CaptureError> {
        Ok(Facts {
            devices: parse_devices(&self.links.wait()?),
            need4: self.def4.wait()?.trim().is_empty(),
            need6: self.def6.wait()?.trim().is_empty(),
            no_ipv6: self.no_ipv6,
        })
    }
}

/// Bring `lo` up, add the blackhole default route where the namespace has none, and the rule
/// and `local` routes of the capture. Returns what was installed and the namespace's devices
/// other than `lo` afterwards.
pub(crate) fn install(
    cfg: &CaptureConfig,
    facts: Facts,
) -> Result<(Installed, Vec<String>), CaptureError> {
    let Facts {
        mut devices,
        need4,
        need6,
        no_ipv6,
    } = facts;
    let need6 = need6 && !no_ipv6;

    let mut installed = Installed {
        no_ipv6,
        ..Installed::default()
    };
    let mut v4 = Batch::new("-4");
    let mut v6 = Batch::new("-6");
    v4.must("link set lo up".into());
    if need4 || need6 {
        installed.blackhole = true;
        // A stale one from an egret killed with -9 is reused as it is.
        if !devices.iter().any(|d| d == BLACKHOLE_DEV) {
            // The peer stays down, so nothing sent through egret-bh0 goes anywhere.
            v4.must(format!(
                "link add {BLACKHOLE_DEV} type veth peer name egret-bh1"
            ));
            devices.push(BLACKHOLE_DEV.into());
            devices.push("egret-bh1".into());
        }
        v4.may(format!(
            "addr replace {BLACKHOLE_V4}/32 dev {BLACKHOLE_DEV}"
        ));
        v4.must(format!("link set {BLACKHOLE_DEV} up"));
        v6.may(format!(
            "addr replace {BLACKHOLE_V6}/128 dev {BLACKHOLE_DEV} nodad"
        ));
        if need4 {
            v4.must(format!("route replace default dev {BLACKHOLE_DEV}"));
        }
        if need6 {
            v6.must(format!("route replace default dev {BLACKHOLE_DEV}"));
        }
    }
    for (family, batch) in [("-4", &mut v4), ("-6", &mut v6)] {
        delete_rules(cfg, batch);
        batch.must(rule(cfg, "add"));
        batch.must(local_route(cfg, "replace", family));
    }
    if no_ipv6 {
        v6 = Batch::new("-6");
    }
    // In order: the -6 lines need the device the -4 batch creates.
    if let Err(e) = v4.run().and_then(|()| v6.run()) {
        let _ = remove(cfg, &installed);
        return Err(e);
    }
    Ok((installed, devices))
}

pub(crate) fn remove(cfg: &CaptureConfig, installed: &Installed) -> Result<(), CaptureError> {
    let mut v4 = Batch::new("-4");
    let mut v6 = Batch::new("-6");
    for (family, batch) in [("-4", &mut v4), ("-6", &mut v6)] {
        delete_rules(cfg, batch);
        batch.may(local_route(cfg, "del", family));
    }
    if installed.no_ipv6 {
        v6 = Batch::new("-6");
    }
    if installed.blackhole {
        // Deleting one end removes the pair and every route through it.
        v6.may(format!("link del {BLACKHOLE_DEV}"));
    }
    v4.run()?;
    v6.run()
}

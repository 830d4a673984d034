//! Policy routing inside the sandbox namespace: the `ip rule fwmark … lookup TABLE` and the
//! `local default dev lo` routes that turn marked packets around to egret's listener, and a
//! blackhole default route for namespaces that have none (without *some* route, `connect()`
//! fails with ENETUNREACH before netfilter ever sees the packet).
use crate::cmd::run;
use crate::{CaptureConfig, CaptureError, BLACKHOLE_DEV, BLACKHOLE_V4, BLACKHOLE_V6};

/// What `install` added, so that `remove` takes away exactly that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Installed {
    /// egret created the blackhole veth pair.
    pub blackhole: bool,
}

/// Names of the namespace's network devices other than `lo`.
pub(crate) fn devices() -> Result<Vec<String>, CaptureError> {
    let out = run("ip", &["-o", "link", "show"], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty() && n != "lo")
        .collect())
}

pub(crate) fn ensure_lo_up() -> Result<(), CaptureError> {
    run("ip", &["link", "set", "lo", "up"], None).map(|_| ())
}

fn has_default(family: &str) -> Result<bool, CaptureError> {
    let out = run("ip", &[family, "route", "show", "default"], None)?;
    Ok(!out.trim().is_empty())
}

fn rule_args(cfg: &CaptureConfig, op: &'static str, family: &'static str) -> Vec<String> {
    vec![
        family.into(),
        "rule".into(),
        op.into(),
        "fwmark".into(),
        format!("{:#x}/{:#x}", cfg.mark, cfg.mark_mask),
        "lookup".into(),
        cfg.route_table.to_string(),
        "pref".into(),
        cfg.rule_pref.to_string(),
    ]
}

/// `ip -4|-6 route OP local <default> dev lo table T`: the route that turns marked packets
/// around to `lo`.
fn local_route(cfg: &CaptureConfig, op: &str, family: &str) -> Result<String, CaptureError> {
    let default = if family == "-6" { "::/0" } else { "0.0.0.0/0" };
    let table = cfg.route_table.to_string();
    run(
        "ip",
        &[
            family, "route", op, "local", default, "dev", "lo", "table", &table,
        ],
        None,
    )
}

fn ip(args: &[String]) -> Result<String, CaptureError> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("ip", &refs, None)
}

/// Delete every copy of our rule (a previous egret killed with -9 may have left one).
fn delete_rules(cfg: &CaptureConfig) {
    for family in ["-4", "-6"] {
        for _ in 0..16 {
            if ip(&rule_args(cfg, "del", family)).is_err() {
                break;
            }
        }
    }
}

pub(crate) fn install(cfg: &CaptureConfig) -> Result<Installed, CaptureError> {
    let mut installed = Installed::default();
    let need4 = !has_default("-4")?;
    let need6 = !has_default("-6")?;
    if need4 || need6 {
        create_blackhole(need4, need6)?;
        installed.blackhole = true;
    }
    let result = (|| {
        delete_rules(cfg);
        for family in ["-4", "-6"] {
            ip(&rule_args(cfg, "add", family))?;
        }
        for family in ["-4", "-6"] {
            local_route(cfg, "replace", family)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = remove(cfg, &installed);
        return Err(e);
    }
    Ok(installed)
}

fn create_blackhole(need4: bool, need6: bool) -> Result<(), CaptureError> {
    // A stale one from an egret killed with -9 is reused as it is.
    if run("ip", &["link", "show", BLACKHOLE_DEV], None).is_err() {
        // The peer stays down, so nothing sent through egret-bh0 goes anywhere.
        run(
            "ip",
            &[
                "link",
                "add",
                BLACKHOLE_DEV,
                "type",
                "veth",
                "peer",
                "name",
                "egret-bh1",
            ],
            None,
        )?;
    }
    let v4 = format!("{BLACKHOLE_V4}/32");
    let v6 = format!("{BLACKHOLE_V6}/128");
    let _ = run(
        "ip",
        &["-4", "addr", "replace", &v4, "dev", BLACKHOLE_DEV],
        None,
    );
    let _ = run(
        "ip",
        &["-6", "addr", "replace", &v6, "dev", BLACKHOLE_DEV, "nodad"],
        None,
    );
    run("ip", &["link", "set", BLACKHOLE_DEV, "up"], None)?;
    if need4 {
        run(
            "ip",
            &["-4", "route", "replace", "default", "dev", BLACKHOLE_DEV],
            None,
        )?;
    }
    if need6 {
        run(
            "ip",
            &["-6", "route", "replace", "default", "dev", BLACKHOLE_DEV],
            None,
        )?;
    }
    Ok(())
}

pub(crate) fn remove(cfg: &CaptureConfig, installed: &Installed) -> Result<(), CaptureError> {
    delete_rules(cfg);
    for family in ["-4", "-6"] {
        let _ = local_route(cfg, "del", family);
    }
    if installed.blackhole {
        // Deleting one end removes the pair and every route through it.
        let _ = run("ip", &["link", "del", BLACKHOLE_DEV], None);
    }
    Ok(())
}

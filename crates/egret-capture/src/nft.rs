//! The nftables ruleset egret installs in the sandbox namespace (one table, `inet egret`,
//! loaded as one atomic transaction), rendered from a few parameters. The rendering is pure and
//! unit-tested; `load` hands it to libnftables from the thread inside the namespace.
//!
//! How it works (verified in `docs/capture.md`):
//! * `out_mark` (output hook) marks every locally generated TCP packet that is not for a local
//!   or bypassed address; an `ip rule fwmark` sends marked packets to a table whose only route
//!   is `local default dev lo`, so they re-enter on `lo`,
//! * `pre_tproxy` (prerouting on lo) hands them to egret's transparent listener; with egret
//!   dead it answers with a TCP reset at once (fail closed, no timeout),
//! * `out_dns` redirects every udp/53 datagram, whatever resolver it was for, to egret's DNS,
//! * `egress_guard` (postrouting, where `oif` is the real device) drops everything else: other
//!   UDP, ICMP, raw IP, and anything a sandbox process tried to send around the mark,
//! * `in_filter` makes the listener port unreachable by direct connection (loop guard).
use crate::libnft;
use crate::CaptureError;

/// The nft table egret owns (family `inet`).
pub const TABLE_NAME: &str = "egret";

/// Parameters of the ruleset.
#[derive(Debug, Clone)]
pub struct RulesetParams {
    /// pid of the owning egret, recorded in the table comment.
    pub pid: u32,
    /// sandbox id, recorded in the table comment.
    pub sandbox_id: String,
    /// transparent TCP listener port.
    pub tcp_port: u16,
    /// DNS port on 127.0.0.1/::1.
    pub dns_port: u16,
    /// the intercept mark.
    pub mark: u32,
    /// extra destinations allowed out directly.
    pub bypass: Vec<ipnet::IpNet>,
    /// The namespace's network devices other than `lo`: each gets a `netdev` egress chain
    /// that drops every frame, so raw `AF_PACKET` frames (which no `inet` hook sees) cannot
    /// leave either.
    pub devices: Vec<String>,
}

/// Characters that may appear in the table comment; anything else becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether a device name can be put in the ruleset as it is.
pub(crate) fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// The `netdev` table: one egress chain per device, dropping everything except (when the
/// operator configured bypass destinations) frames for those and the ARP/ND they need.
fn render_netdev(p: &RulesetParams, comment: &str, v4: &[String], v6: &[String]) -> String {
    let mut chains = String::new();
    for (i, dev) in p
        .devices
        .iter()
        .filter(|d| valid_device_name(d))
        .enumerate()
    {
        let mut rules = String::new();
        if !p.bypass.is_empty() {
            rules.push_str("\t\tmeta protocol arp accept\n");
            rules.push_str(&format!(
                "\t\tmeta protocol ip ip daddr {{ {} }} accept\n",
                v4.join(", ")
            ));
            rules.push_str(&format!(
                "\t\tmeta protocol ip6 ip6 daddr {{ {} }} accept\n",
                v6.join(", ")
            ));
            rules.push_str("\t\tmeta protocol ip6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n");
        }
        chains.push_str(&format!(
            "\tchain egress_{i} {{\n\t\ttype filter hook egress device \"{dev}\" priority 0; policy drop;\n{rules}\t\tcounter drop\n\t}}\n"
        ));
    }
    format!("table netdev {TABLE_NAME} {{\n{comment}{chains}}}\n")
}

/// The owner's `comment` statement: `egret pid=N sandbox=ID`.
fn owner_comment(p: &RulesetParams) -> String {
    format!(
        "comment \"egret pid={} sandbox={}\"",
        p.pid,
        sanitize(&p.sandbox_id)
    )
}

/// Render the complete ruleset file. It starts with `table …; delete table …;` so loading it
/// replaces any previous version atomically.
pub fn render_ruleset(p: &RulesetParams) -> String {
    format!(
        "table netdev {TABLE_NAME}\ndelete table netdev {TABLE_NAME}\n\
         table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n{}",
        render_tables(p, &format!("\t{}\n", owner_comment(p)))
    )
}

/// The ruleset for a namespace without egret's tables: it starts with `create table …`, so
/// loading it fails (changing nothing) if either table exists.
///
/// Why not always [`render_ruleset`]: deleting a table in the transaction makes the kernel
/// wait for an RCU grace period before `nft` can close its socket, and makes `nft` read the
/// whole ruleset first; a load takes 18–55 ms that way against 3–6 ms with `create`.
pub fn render_new_ruleset(p: &RulesetParams) -> String {
    // The owner comment goes with `create` (`create table … { body }` would ignore the body,
    // and a second comment on the same table in the transaction is refused); the contents
    // follow in `table` blocks.
    let comment = owner_comment(p);
    format!(
        "create table netdev {TABLE_NAME} {{ {comment}; }}\n\
         create table inet {TABLE_NAME} {{ {comment}; }}\n{}",
        render_tables(p, "")
    )
}

/// Both tables with their contents; `comment` is the owner comment line, or empty.
fn render_tables(p: &RulesetParams, comment: &str) -> String {
    let mut v4 = vec!["127.0.0.0/8".to_string()];
    let mut v6 = vec!["::1/128".to_string()];
    for n in &p.bypass {
        match n {
            ipnet::IpNet::V4(n) => v4.push(n.trunc().to_string()),
            ipnet::IpNet::V6(n) => v6.push(n.trunc().to_string()),
        }
    }
    let netdev = render_netdev(p, comment, &v4, &v6);
    format!(
        r#"{netdev}table inet {table} {{
{comment}	set bypass4 {{ type ipv4_addr; flags interval; elements = {{ {v4} }}; }}
	set bypass6 {{ type ipv6_addr; flags interval; elements = {{ {v6} }}; }}

	chain out_mark {{
		type route hook output priority mangle; policy accept;
		oif "lo" return
		ip daddr @bypass4 return
		ip6 daddr @bypass6 return
		meta l4proto tcp meta mark set {mark:#x}
	}}

	chain out_dns {{
		type nat hook output priority -100; policy accept;
		udp dport 53 redirect to :{dns}
	}}

	chain pre_tproxy {{
		type filter hook prerouting priority mangle; policy accept;
		iif != "lo" return
		meta mark != {mark:#x} return
		meta l4proto tcp socket transparent 1 accept
		meta l4proto tcp tproxy to :{tcp} accept
		meta l4proto tcp counter reject with tcp reset
		counter drop
	}}

	chain egress_guard {{
		type filter hook postrouting priority filter; policy drop;
		oif "lo" accept
		ip daddr @bypass4 accept
		ip6 daddr @bypass6 accept
		udp dport 443 counter drop
		counter drop
	}}

	chain in_filter {{
		type filter hook input priority filter; policy accept;
		tcp dport {tcp} meta mark != {mark:#x} counter reject with tcp reset
	}}
}}
"#,
        netdev = netdev,
        table = TABLE_NAME,
        v4 = v4.join(", "),
        v6 = v6.join(", "),
        mark = p.mark,
        tcp = p.tcp_port,
        dns = p.dns_port,
    )
}

/// Load a rendered ruleset (atomic).
pub(crate) fn load(ruleset: &str) -> Result<(), CaptureError> {
    libnft::run(ruleset)
}

/// Who owns the `inet egret` table in this namespace, if it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub pid: u32,
    pub sandbox_id: String,
}

/// The owner in an `nft list` listing or a rendered ruleset (what the tests read).
#[cfg(test)]
pub(crate) fn parse_owner(listing: &str) -> Option<Owner> {
    let line = listing
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("comment \"egret "))?;
    parse_owner_comment(line.trim_start_matches("comment \"").trim_end_matches('"'))
}

/// The owner recorded in a table comment `egret pid=N sandbox=ID`.
pub(crate) fn parse_owner_comment(comment: &str) -> Option<Owner> {
    let inner = comment.strip_prefix("egret ")?;
    let mut pid = None;
    let mut sandbox = String::new();
    for part in inner.split_whitespace() {
        if let Some(v) = part.strip_prefix("pid=") {
            pid = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("sandbox=") {
            sandbox = v.to_string();
        }
    }
    Some(Owner {
        pid: pid?,
        sandbox_id: sandbox,
    })
}

/// The owner recorded in the current table, or None when there is no table (asked from a
/// thread inside the namespace).
pub(crate) fn current_owner() -> Result<Option<Owner>, CaptureError> {
    crate::nflink::table_owner()
}

/// Whether a process with that pid exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(e) => e == nix::Error::EPERM,
    }
}

/// Delete the table if (and only if) it is ours.
pub(crate) fn delete_own_table(pid: u32) -> Result<(), CaptureError> {
    match current_owner()? {
        Some(owner) if owner.pid == pid => {
            // One transaction for both tables.
            let script = format!(
                "table netdev {TABLE_NAME}\ndelete table netdev {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n"
            );
            libnft::run(&script)
        }
        Some(owner) => {
            tracing::warn!(
                owner_pid = owner.pid,
                "the egret table now belongs to another instance; leaving it in place"
            );
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RulesetParams {
        RulesetParams {
            pid: 4242,
            sandbox_id: "agent-47".into(),
            tcp_port: 15001,
            dns_port: 15053,
            mark: 1,
            bypass: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            devices: vec!["v-wan".into(), "egret-bh0".into(), "bad\"name".into()],
        }
    }

    #[test]
    fn ruleset_replaces_atomically_and_records_owner() {
        let r = render_ruleset(&params());
        assert!(r.contains("table inet egret\ndelete table inet egret\n"));
        assert!(r.contains("\ntable inet egret {"));
        assert!(r.contains("comment \"egret pid=4242 sandbox=agent-47\""));
        assert!(r.contains("tproxy to :15001"));
        assert!(r.contains("redirect to :15053"));
        assert!(r.contains("127.0.0.0/8, 192.0.2.0/24"));
        assert!(r.contains("::1/128, 2001:db8::/32"));
        assert!(r.contains("meta mark set 0x1"));
        // fail closed: a reset when the listener is gone, and a postrouting drop policy
        assert!(r.contains("reject with tcp reset"));
        assert!(r.contains("hook postrouting priority filter; policy drop;"));
    }

    #[test]
    fn a_new_ruleset_creates_both_tables_and_deletes_nothing() {
        let r = render_new_ruleset(&params());
        let comment = "comment \"egret pid=4242 sandbox=agent-47\"";
        assert!(r.starts_with(&format!(
            "create table netdev egret {{ {comment}; }}\ncreate table inet egret {{ {comment}; }}\n"
        )));
        assert!(!r.contains("delete"), "{r}");
        assert_eq!(r.matches("comment").count(), 2, "{r}");
        // Same contents as the replacing version, which carries the comments in its blocks.
        let replacing = render_ruleset(&params());
        let start = |s: &str| s.find("\ntable netdev egret {\n").unwrap() + 1;
        let body = &replacing[start(&replacing)..];
        let new_body = &r[start(&r)..];
        assert_eq!(new_body, body.replace(&format!("\t{comment}\n"), ""));
    }

    #[test]
    fn every_device_gets_an_egress_drop_chain() {
        let r = render_ruleset(&params());
        assert!(r.starts_with(
            "table netdev egret\ndelete table netdev egret\ntable inet egret\ndelete table inet egret\n"
        ));
        assert!(r.contains("type filter hook egress device \"v-wan\" priority 0; policy drop;"));
        assert!(r.contains("type filter hook egress device \"egret-bh0\" priority 0; policy drop;"));
        assert!(
            !r.contains("bad\"name"),
            "an unquotable device name reached the ruleset"
        );
        let mut p = params();
        p.bypass.clear();
        let r = render_ruleset(&p);
        assert!(
            !r.contains("meta protocol arp accept"),
            "no bypass: nothing may leave"
        );
    }

    #[test]
    fn owner_round_trips_through_listing() {
        let r = render_ruleset(&params());
        assert_eq!(
            parse_owner(&r),
            Some(Owner {
                pid: 4242,
                sandbox_id: "agent-47".into()
            })
        );
        assert_eq!(parse_owner("table inet egret {\n}"), None);
    }

    #[test]
    fn hostile_sandbox_id_cannot_break_out_of_the_comment() {
        let mut p = params();
        p.sandbox_id = "x\" ; delete table inet filter ; \"".into();
        let r = render_ruleset(&p);
        let line = r.lines().find(|l| l.contains("comment")).unwrap();
        assert_eq!(line.matches('"').count(), 2, "{line}");
    }

    #[test]
    fn pid_zero_is_never_alive() {
        assert!(!pid_alive(0));
        assert!(pid_alive(std::process::id()));
    }
}

//! Pinned addresses: the `[resolve]` table and the command line's `--resolve HOST=ADDR`,
//! one host-name rule and one address syntax for both.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::{PolicyError, Problem};
use crate::pattern::{Pattern, PatternKind, PortSpec};

use super::compile::Compiler;
use super::CompiledPolicy;

impl Compiler<'_> {
    pub(super) fn pins(&mut self) -> HashMap<Box<str>, Vec<IpAddr>> {
        let mut pins = HashMap::new();
        for (host, addrs) in &self.cfg.resolve {
            let path = format!("resolve.{host:?}");
            let key = match pin_host(host) {
                Ok(k) => Some(k),
                Err(msg) => {
                    self.problems.push(
                        Problem::new(&path, host.as_str(), msg)
                            .hint("write a plain host name such as `api.example.com`"),
                    );
                    None
                }
            };
            let addrs = addrs.as_slice();
            if addrs.is_empty() {
                self.problems.push(
                    Problem::new(&path, "[]", "no addresses given")
                        .hint("give one address or a list of addresses"),
                );
            }
            let mut ips = Vec::with_capacity(addrs.len());
            for (j, a) in addrs.iter().enumerate() {
                match parse_ip(a) {
                    Some(ip) => ips.push(ip),
                    None => self.problems.push(
                        Problem::new(format!("{path}[{j}]"), a.as_str(), "not an IP address")
                            .hint("write IPv4 like `10.0.0.2` or IPv6 like `fd00::2`"),
                    ),
                }
            }
            if let Some(k) = key {
                pins.insert(k, ips);
            }
        }
        pins
    }
}

/// Checks that `host` is a plain name (or IP literal) usable as a pin key; returns its
/// normalized form.
fn pin_host(host: &str) -> Result<Box<str>, String> {
    match Pattern::parse(host) {
        Ok(p) if p.port() == PortSpec::Any => match p.kind() {
            PatternKind::Exact(h) => Ok(h.clone()),
            _ => Err("only a plain host name can be pinned (no `*`, IP or CIDR)".to_owned()),
        },
        Ok(_) => Err("only a plain host name can be pinned (no port)".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Parses a command-line pin `HOST=ADDR[,ADDR...]` (each ADDR IPv4, IPv6, or `[IPv6]`) into one
/// (host, address) pair per address, the host normalised as the policy matches it. The one
/// parser of `--resolve` (egret run, egret exec, the OCI hook's sidecars).
pub fn parse_pin_arg(arg: &str) -> Result<Vec<(String, IpAddr)>, PolicyError> {
    let invalid = |msg: &str, hint: &str| {
        PolicyError::Invalid(vec![Problem::new("--resolve", arg, msg).hint(hint)])
    };
    let Some((host, addrs)) = arg.split_once('=') else {
        return Err(invalid(
            "expected HOST=ADDR",
            "e.g. --resolve api.example.com=10.0.0.2",
        ));
    };
    if host.trim().is_empty() {
        return Err(invalid(
            "empty host name",
            "e.g. --resolve api.example.com=10.0.0.2",
        ));
    }
    let host = pin_host(host.trim()).map_err(|m| invalid(&m, "write a plain host name"))?;
    addrs
        .split(',')
        .map(|a| {
            parse_ip(a).map(|ip| (host.to_string(), ip)).ok_or_else(|| {
                invalid(
                    &format!("{:?} is not an IP address", a.trim()),
                    "write IPv4 like `10.0.0.2` or IPv6 like `fd00::2`",
                )
            })
        })
        .collect()
}

impl CompiledPolicy {
    /// Merges pins from the command line (`--resolve host=addr`, see [`parse_pin_arg`]).
    /// They win: a host given here replaces its `[resolve]` entry; several pins of the same
    /// host accumulate in order.
    pub fn with_extra_pins<I, S>(mut self, pins: I) -> Result<CompiledPolicy, PolicyError>
    where
        I: IntoIterator<Item = (S, IpAddr)>,
        S: AsRef<str>,
    {
        let mut extra: HashMap<Box<str>, Vec<IpAddr>> = HashMap::new();
        let mut problems = Vec::new();
        for (i, (host, ip)) in pins.into_iter().enumerate() {
            match pin_host(host.as_ref()) {
                Ok(k) => extra.entry(k).or_default().push(ip),
                Err(m) => problems.push(
                    Problem::new(format!("--resolve[{i}]"), host.as_ref(), m)
                        .hint("write a plain host name"),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }
        self.pins.extend(extra);
        Ok(self)
    }
}

//! What `egret ctl` prints: each answer in the readable form or, with `--json`, as the
//! server's JSON; failures on stderr; and the exit code a failure maps to.
//!
//! The readable form is for people; scripts read `--json` and the exit codes documented in
//! [`ctl`](super).

use std::io::Write;

use egret_policy::BindingConfig;
use serde::Serialize;

use super::{exit, Failure};
use crate::api::{event_field, event_str, ErrorCode, Health, ModuleList, SecretList, SecretSet};
use crate::client::AdminClientError;
use crate::control::{Applied, ModuleInfo, PolicyView, Status};

/// Reports how a command ended (its output is already written) and returns the exit code.
/// With `--json`, a refusal's error object goes to stdout like any other answer.
pub(super) fn report(
    result: Result<(), Failure>,
    json: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> u8 {
    match result {
        Ok(()) => {
            let _ = out.flush();
            exit::OK
        }
        Err(Failure::Usage(m)) => {
            let _ = writeln!(err, "egret ctl: {m}");
            exit::USAGE
        }
        Err(Failure::Client(e)) => {
            let code = exit_code(&e);
            match (&e, json) {
                (AdminClientError::Refused { error, .. }, true) => {
                    let body = serde_json::json!({ "error": error });
                    let _ = writeln!(out, "{body}");
                }
                _ => {
                    let _ = writeln!(err, "egret ctl: {e}");
                }
            }
            code
        }
        Err(Failure::Output(m)) => {
            let _ = writeln!(err, "egret ctl: {m}");
            exit::OTHER
        }
    }
}

/// The exit code for a client error.
pub fn exit_code(e: &AdminClientError) -> u8 {
    match e {
        AdminClientError::Unreachable { .. } => exit::UNREACHABLE,
        AdminClientError::Usage(_) => exit::USAGE,
        AdminClientError::Protocol(_) => exit::OTHER,
        AdminClientError::Refused { error, .. } => match error.code {
            ErrorCode::InvalidPolicy
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidName
            | ErrorCode::Conflict
            | ErrorCode::NotFound
            | ErrorCode::BadRequest
            | ErrorCode::MethodNotAllowed
            | ErrorCode::PayloadTooLarge => exit::REFUSED,
            ErrorCode::Forbidden | ErrorCode::Internal | ErrorCode::Unknown => exit::OTHER,
        },
    }
}

/// An answer's readable form, printed unless `--json` is given.
pub(super) trait Readable: Serialize {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()>;
}

/// Prints an answer: with `--json` as pretty-printed JSON, otherwise in its readable form.
pub(super) fn answer<T: Readable>(
    out: &mut (dyn Write + Send),
    json: bool,
    v: &T,
) -> Result<(), Failure> {
    if json {
        let s = serde_json::to_string_pretty(v).map_err(|e| Failure::Output(e.to_string()))?;
        writeln!(out, "{s}")?;
    } else {
        v.write_readable(out)?;
    }
    Ok(())
}

/// Text the server sends ready to use (a PEM, metrics, a TOML policy), as it is.
pub(super) fn verbatim(out: &mut (dyn Write + Send), text: &str) -> Result<(), Failure> {
    write!(out, "{text}")?;
    Ok(())
}

/// One line of `tail`: the event's JSON line as received, or [`format_event`]'s summary.
pub(super) fn audit_event(
    out: &mut (dyn Write + Send),
    json: bool,
    line: &str,
) -> Result<(), Failure> {
    if json {
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "{}", format_event(line))?;
    }
    // Followers (`| grep`) want each event as it happens.
    out.flush()?;
    Ok(())
}

/// The answer to a change: the new generation and any warnings.
impl Readable for Applied {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        writeln!(out, "ok: policy generation {}", self.generation)?;
        for w in &self.warnings {
            writeln!(out, "warning: {w}")?;
        }
        Ok(())
    }
}

/// `policy shadow report` / `drop`: the totals, then one table row per difference.
impl Readable for crate::shadow::ShadowView {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        let s = &self.summary;
        writeln!(
            out,
            "shadow policy loaded {}; live generation {}; {} request(s) decided by both, {} decided differently",
            rfc3339(self.loaded_at),
            self.generation,
            self.requests,
            s.differences
        )?;
        if s.overflow > 0 {
            writeln!(
                out,
                "{} difference(s) not shown: the report keeps at most {} rows",
                s.overflow, s.max_rows
            )?;
        }
        if s.rows.is_empty() {
            return Ok(());
        }
        let decision = |d: &str, handler: &Option<String>, status: Option<u16>| {
            let mut t = d.to_owned();
            if let Some(st) = status {
                t.push_str(&format!(" {st}"));
            }
            if let Some(h) = handler {
                t.push_str(&format!(" ({h})"));
            }
            t
        };
        let rows: Vec<[String; 8]> = s
            .rows
            .iter()
            .map(|r| {
                [
                    r.count.to_string(),
                    r.host.clone(),
                    r.method.clone(),
                    r.path.clone(),
                    decision(&r.live, &r.live_handler, None),
                    decision(&r.shadow, &r.shadow_handler, r.shadow_status),
                    format!("{} .. {}", rfc3339(r.first_seen), rfc3339(r.last_seen)),
                    r.shadow_rule.clone(),
                ]
            })
            .collect();
        let head = [
            "COUNT",
            "HOST",
            "METHOD",
            "PATH",
            "LIVE",
            "SHADOW",
            "FIRST .. LAST SEEN",
            "SHADOW RULE",
        ];
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
        let line = |cells: [&str; 8]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<width$}  ", width = w[i]));
                }
            }
            l
        };
        writeln!(out, "{}", line(head))?;
        for r in &rows {
            writeln!(out, "{}", line(std::array::from_fn(|i| r[i].as_str())))?;
        }
        Ok(())
    }
}

impl Readable for Status {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        writeln!(out, "sandbox     {}", self.sandbox_id)?;
        writeln!(out, "generation  {}", self.generation)?;
        writeln!(out, "uptime      {}", human_duration(self.uptime_secs))?;
        let w = self.counters.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in &self.counters {
            writeln!(out, "{k:<w$}  {v}")?;
        }
        Ok(())
    }
}

impl Readable for crate::ask::PendingList {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        if self.pending.is_empty() {
            writeln!(out, "nothing pending")?;
        }
        for q in &self.pending {
            let request = match (&q.method, &q.path) {
                (Some(m), Some(p)) => format!(" {m} {p}"),
                _ => String::new(),
            };
            writeln!(out, "{}  {}:{}{request}", q.id, q.host, q.port)?;
        }
        Ok(())
    }
}

impl Readable for crate::ask::Decided {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        match self.scope {
            Some(s) => writeln!(out, "{} approved ({})", self.id, s.as_str()),
            None => writeln!(out, "{} denied", self.id),
        }
    }
}

impl Readable for Health {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        writeln!(out, "{}", self.status)
    }
}

/// The answer to an upload, with how a handler refers to the module.
impl Readable for ModuleInfo {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        writeln!(
            out,
            "uploaded {} ({} bytes, sha256 {}); reference it as module = \"uploaded:{}\"",
            self.name, self.size, self.sha256, self.name
        )
    }
}

impl Readable for ModuleList {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        if self.modules.is_empty() {
            writeln!(out, "no uploaded modules")?;
        }
        for m in &self.modules {
            writeln!(
                out,
                "{:<24} {:>10} bytes  sha256 {}  loaded {}",
                m.name,
                m.size,
                m.sha256,
                rfc3339(m.loaded_at)
            )?;
        }
        Ok(())
    }
}

impl Readable for SecretSet {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        writeln!(
            out,
            "ok: secret {} set, policy generation {}",
            self.name, self.generation
        )?;
        for w in &self.warnings {
            writeln!(out, "warning: {w}")?;
        }
        Ok(())
    }
}

impl Readable for SecretList {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        for n in &self.secrets {
            writeln!(out, "{n}")?;
        }
        Ok(())
    }
}

/// Both layers of the policy in force, the runtime one marked where it overrides the file.
impl Readable for PolicyView {
    fn write_readable(&self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        let p = &self.policy;
        let onoff = |b: bool| if b { "on" } else { "off" };
        writeln!(out, "generation         {}", self.generation)?;
        writeln!(out, "internet           {}", onoff(p.internet))?;
        writeln!(out, "intercept_https    {}", onoff(p.intercept_https))?;
        writeln!(out, "allowed_hosts      {}", list(&p.allowed_hosts))?;
        writeln!(out, "denied_hosts       {}", list(&p.denied_hosts))?;
        writeln!(out, "passthrough_hosts  {}", list(&p.passthrough_hosts))?;
        let rt = self.runtime.outbound.as_ref().map(binding);
        let st = p.outbound.as_ref().map(binding);
        let outbound = match (rt, st) {
            (Some(r), Some(s)) => format!("{r} (runtime; overrides the file's {s})"),
            (Some(r), None) => format!("{r} (runtime)"),
            (None, Some(s)) => s,
            (None, None) => "(none)".into(),
        };
        writeln!(out, "outbound           {outbound}")?;
        if self.runtime.routes.is_empty() && p.routes.is_empty() {
            writeln!(out, "routes             (none)")?;
        } else {
            writeln!(out, "routes")?;
            for (layer, routes) in [("runtime", &self.runtime.routes), ("static ", &p.routes)] {
                for r in routes {
                    writeln!(
                        out,
                        "  {layer}  {} -> {}",
                        r.hosts.join(", "),
                        route_target(r)
                    )?;
                }
            }
        }
        if p.handlers.is_empty() {
            writeln!(out, "handlers           (none)")?;
        } else {
            writeln!(out, "handlers")?;
            for (name, h) in &p.handlers {
                write!(
                    out,
                    "  {name}  module={} timeout={}ms memory={}MiB",
                    h.module, h.timeout_ms, h.memory_mb
                )?;
                if !h.secrets.is_empty() {
                    write!(out, " secrets=[{}]", h.secrets.join(","))?;
                }
                if !h.reveal.is_empty() {
                    write!(out, " reveal=[{}]", h.reveal.join(","))?;
                }
                if let Some(params) = &h.params {
                    write!(out, " params={params}")?;
                }
                writeln!(out)?;
            }
        }
        writeln!(out, "secrets            {}", list(&self.secrets))?;
        Ok(())
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// What a route does: its request conditions, then its handler or action.
fn route_target(r: &egret_policy::RouteConfig) -> String {
    let mut s = String::new();
    if !r.methods.is_empty() {
        s.push_str(&r.methods.join(","));
        s.push(' ');
    }
    if !r.paths.is_empty() {
        s.push_str(&r.paths.join(","));
        s.push(' ');
    }
    let then = match (r.binding(), r.action) {
        (Some(b), _) => binding(&b),
        (None, Some(egret_policy::RouteAction::Deny)) => {
            format!("deny {}", r.status.unwrap_or(403))
        }
        (None, _) => "allow".to_owned(),
    };
    let report = if r.report_only { " (report only)" } else { "" };
    if s.is_empty() {
        format!("{then}{report}")
    } else {
        format!("{s}-> {then}{report}")
    }
}

fn binding(b: &BindingConfig) -> String {
    match &b.params {
        Some(p) => format!("{} {p}", b.handler),
        None => b.handler.clone(),
    }
}

/// One readable line per audit event: time, sandbox, decision, method host path, status, rule.
pub fn format_event(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    if event_str(&v, "type") == Some("lagged") {
        let n = event_field(&v, "skipped")
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        return format!("... {n} events skipped (this reader fell behind)");
    }
    let s = |k: &str| event_str(&v, k).unwrap_or("-").to_owned();
    let time = ["timestamp", "time", "ts"]
        .iter()
        .find_map(|k| event_str(&v, k))
        .unwrap_or("-");
    let status = event_field(&v, "status")
        .map(|x| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "-".into());
    // Opaque connections have no method/path: show the protocol and the address instead.
    let (method, path) = match (event_str(&v, "method"), event_str(&v, "path")) {
        (Some(m), p) => (m.to_owned(), p.unwrap_or("").to_owned()),
        (None, _) => (s("proto").to_uppercase(), format!(" ({})", s("dst"))),
    };
    let mut line = format!(
        "{time} {} {:<7} {method} {}{path} {status} rule={}",
        s("sandbox"),
        s("decision"),
        s("host"),
        s("rule")
    );
    // A shadow candidate that would have decided otherwise.
    if let Some(shadow) = event_field(&v, "shadow").filter(|x| x.is_object()) {
        let field = |k: &str| shadow.get(k).and_then(|x| x.as_str()).unwrap_or("-");
        line.push_str(&format!(
            " shadow={} shadow_rule={}",
            field("decision"),
            field("rule")
        ));
    }
    line
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(3723), "1h 02m 03s");
        assert_eq!(human_duration(90_061), "1d 01h 01m 01s");
    }

    #[test]
    fn event_lines() {
        let l = format_event(
            r#"{"timestamp":"2025-01-01T00:00:00Z","fields":{"sandbox":"a","decision":"deny","method":"GET","host":"x.test","path":"/p","status":403,"rule":"denied_hosts \"x.test\""}}"#,
        );
        assert_eq!(
            l,
            r#"2025-01-01T00:00:00Z a deny    GET x.test/p 403 rule=denied_hosts "x.test""#
        );
        let l = format_event(
            r#"{"sandbox":"a","decision":"forward","proto":"tcp","host":"db.test","dst":"10.0.0.1:5432","rule":"r"}"#,
        );
        assert_eq!(l, "- a forward TCP db.test (10.0.0.1:5432) - rule=r");
        let l = format_event(
            r#"{"sandbox":"a","decision":"forward","method":"POST","host":"git.test","path":"/r","status":200,"rule":"r","shadow":{"decision":"deny","rule":"no route","handler":null,"status":403}}"#,
        );
        assert_eq!(
            l,
            "- a forward POST git.test/r 200 rule=r shadow=deny shadow_rule=no route"
        );
        assert_eq!(format_event("garbage"), "garbage");
        assert!(format_event(r#"{"type":"lagged","skipped":3}"#).contains("3 events skipped"));
    }
}

//! `egret policy test` (what egret would do with URLs) and `egret policy suggest` (a policy from
//! audit logs): files in, text out; the decisions are egret-policy's.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use egret_policy::suggest::{suggest, AuditEvent, SuggestOptions};
use egret_policy::{parse_url, CompiledPolicy, DryDecision, RuntimeLayer};

use crate::cli::{PolicySuggestArgs, PolicyTestArgs};

/// `egret policy test FILE URL... [--method M] [--sandbox-id ID]`: one line per URL,
/// `DECISION METHOD URL rule=... handler=...`; exit 0 when every URL is allowed, 1 otherwise.
pub(crate) fn test(args: PolicyTestArgs) -> anyhow::Result<ExitCode> {
    let cfg = egret_app::load_policy_file(&args.file)?;
    let policy = CompiledPolicy::compile(&cfg, &RuntimeLayer::default(), 1)?;
    let mut urls = args.urls.clone();
    if urls.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading URLs from stdin")?;
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                urls.push(line.to_owned());
            }
        }
    }
    if urls.is_empty() {
        bail!("no URL given: pass URLs as arguments or one per line on stdin");
    }
    let method = args.method.to_ascii_uppercase();
    let mut out = std::io::stdout().lock();
    let mut all_allowed = true;
    for url in &urls {
        // `METHOD URL` lines (e.g. from stdin) name their own method.
        let (m, u) = match url.split_once(' ') {
            Some((m, u)) if !m.contains("://") => (m.to_ascii_uppercase(), u.trim()),
            _ => (method.clone(), url.as_str()),
        };
        let parts = parse_url(u).map_err(anyhow::Error::msg)?;
        let d = policy.dry_run(&parts, &m);
        if d.decision == DryDecision::Deny {
            all_allowed = false;
        }
        let status = d.status.map(|s| format!(" status={s}")).unwrap_or_default();
        writeln!(
            out,
            "{:<11} {m} {u} rule={:?} handler={}{status}",
            d.decision.as_str(),
            &*d.rule,
            d.handler.as_deref().unwrap_or("-"),
        )?;
    }
    if let Some(id) = &args.sandbox_id {
        writeln!(
            out,
            "(sandbox {id}, policy {}, generation 1)",
            args.file.display()
        )?;
    }
    Ok(if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `egret policy suggest AUDIT.jsonl... [--base FILE] [--paths] [--wildcards]`: the suggested
/// policy on stdout (or `--output`).
pub(crate) fn suggest_cmd(args: PolicySuggestArgs) -> anyhow::Result<ExitCode> {
    let mut events = Vec::new();
    for path in &args.audit {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read audit log {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e = AuditEvent::from_line(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: not an egret audit event: {e} (pass the files egret run --audit-log wrote)",
                    path.display(),
                    i + 1
                )
            })?;
            events.push(e);
        }
    }
    let base = match &args.base {
        Some(b) => Some(egret_app::load_policy_file(b)?),
        None => None,
    };
    let sources: Vec<String> = args.audit.iter().map(|p| p.display().to_string()).collect();
    let text = suggest(
        &events,
        &sources,
        base.as_ref(),
        SuggestOptions {
            paths: args.paths,
            wildcards: args.wildcards,
        },
    )?;
    match &args.output {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

//! `egret ctl`: the command line over the admin API. The binary owns the top-level parser
//! (`--socket`, `--json`) and hands the parsed [`CtlArgs`] to [`run_ctl`].
//!
//! Command names and exit codes are a public interface: operators script against them.
//!
//! | exit | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the server refused the change (invalid, conflict, not found, bad request, too large) |
//! | 2 | usage error (bad `--params` JSON, unreadable file, empty secret, invalid name) |
//! | 3 | the admin socket is unreachable (missing, stale, or not permitted) |
//! | 4 | anything else (protocol error, forbidden, internal server error) |

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use egret_policy::{BindingConfig, HandlerConfig, RouteConfig};
use serde::Serialize;

use crate::api::{event_field, event_str, AuditFilter, ErrorCode, HostListChange};
use crate::client::{AdminClient, AdminClientError};
use crate::control::{Applied, PolicyView, SecretValue};

/// Exit codes of [`run_ctl`].
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The server refused the change (invalid, conflict, not found).
    pub const REFUSED: u8 = 1;
    /// Usage error.
    pub const USAGE: u8 = 2;
    /// The admin socket is unreachable.
    pub const UNREACHABLE: u8 = 3;
    /// Protocol or other error.
    pub const OTHER: u8 = 4;
}

/// `egret ctl [--if-generation N] COMMAND`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Apply a change only if the policy is still at generation N (see `status`); otherwise
    /// nothing changes and the command exits 1 with `conflict`.
    #[arg(long, global = true, value_name = "N")]
    pub if_generation: Option<u64>,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

impl From<CtlCommand> for CtlArgs {
    fn from(command: CtlCommand) -> Self {
        CtlArgs {
            if_generation: None,
            command,
        }
    }
}

/// The `egret ctl` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Show the sandbox id, policy generation, uptime and counters.
    Status,
    /// Check that egret answers on the admin socket.
    Health,
    /// Read or replace the whole policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Set the runtime catch-all handler (like `setOutboundHandler`).
    SetOutbound {
        /// Handler name (defined in the policy or with `handler set`).
        name: String,
        /// Params replacing the handler's defaults, as JSON.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
    },
    /// Remove the runtime catch-all handler (the policy file's `outbound` applies again).
    ClearOutbound,
    /// Route these hosts to a handler (replaces runtime routes with the same host patterns).
    SetOutboundByHost {
        /// Comma-separated host patterns (`a.test,*.b.test`).
        #[arg(value_name = "HOST[,HOST..]")]
        hosts: String,
        /// Handler name.
        name: String,
        /// Params replacing the handler's defaults, as JSON.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
    },
    /// Remove the runtime routes for these host patterns.
    RemoveOutboundByHost {
        /// Host patterns, exactly as set.
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Add or remove `allowed_hosts` patterns.
    AllowHost {
        /// `add` or `remove`.
        action: ListAction,
        /// Host patterns.
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Add or remove `denied_hosts` patterns.
    DenyHost {
        /// `add` or `remove`.
        action: ListAction,
        /// Host patterns.
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Turn default internet egress on or off.
    Internet {
        /// `on` or `off`.
        state: OnOff,
    },
    /// Define, replace or remove a named handler.
    #[command(subcommand)]
    Handler(HandlerCommand),
    /// Upload or list handler modules.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Set, remove or list secrets (values are never shown).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the sandbox's CA certificate (PEM).
    Ca,
    /// Print Prometheus metrics.
    Metrics,
    /// Follow audit events, one line each: time, sandbox, decision, method host path, status, rule.
    Tail {
        /// Only events of this sandbox.
        #[arg(long, value_name = "ID")]
        sandbox: Option<String>,
        /// Only denials.
        #[arg(long)]
        deny_only: bool,
    },
}

/// `add` / `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListAction {
    /// Add the patterns.
    Add,
    /// Remove the patterns.
    Remove,
}

/// `on` / `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `egret ctl policy ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCommand {
    /// Show the policy in force (both layers).
    Get {
        /// Print the static layer as TOML, ready to edit and `policy set`.
        #[arg(long)]
        toml: bool,
    },
    /// Replace the whole policy with a file (TOML, or JSON if it ends in `.json`).
    Set {
        /// The policy file.
        file: PathBuf,
    },
}

/// `egret ctl handler ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum HandlerCommand {
    /// Define or replace a handler.
    Set {
        /// Handler name.
        name: String,
        /// Module: a path readable by egret, or `uploaded:NAME` after `module upload`.
        #[arg(long, value_name = "M")]
        module: String,
        /// Default params, as JSON.
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
        /// Grant a secret (repeatable).
        #[arg(long = "secret", value_name = "S")]
        secrets: Vec<String>,
        /// Let the guest read a granted secret in clear (repeatable).
        #[arg(long = "reveal", value_name = "S")]
        reveal: Vec<String>,
        /// Per-request deadline in milliseconds (default 50).
        #[arg(long, value_name = "N")]
        timeout_ms: Option<u64>,
        /// Memory cap in MiB (default 16).
        #[arg(long, value_name = "N")]
        memory_mb: Option<u64>,
    },
    /// Remove a handler.
    Remove {
        /// Handler name.
        name: String,
    },
}

/// `egret ctl module ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ModuleCommand {
    /// Upload a `.wasm` component; handlers reference it as `uploaded:NAME`.
    Upload {
        /// Module name.
        name: String,
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// List uploaded modules.
    List,
}

/// `egret ctl secret ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum SecretCommand {
    /// Set a secret. The value comes from exactly one of --value, --from-env, --from-file, or
    /// standard input when none is given (one trailing newline is stripped from files and
    /// stdin). Prefer --from-env/--from-file/stdin: --value is visible in `ps`.
    Set {
        /// Secret name.
        name: String,
        /// The value itself.
        #[arg(long, value_name = "V", value_parser = secret_arg, conflicts_with_all = ["from_env", "from_file"])]
        value: Option<SecretValue>,
        /// Read the value from this environment variable of `egret ctl`.
        #[arg(long, value_name = "VAR", conflicts_with = "from_file")]
        from_env: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "F")]
        from_file: Option<PathBuf>,
    },
    /// Remove a runtime secret.
    Remove {
        /// Secret name.
        name: String,
    },
    /// List secret names.
    List,
}

fn secret_arg(s: &str) -> Result<SecretValue, std::convert::Infallible> {
    Ok(SecretValue::new(s))
}

/// Runs one command against the admin socket at `socket`, printing to stdout/stderr.
/// `json` prints the server's JSON instead of the readable form. See [`exit`] for codes.
pub async fn run_ctl(socket: &Path, json: bool, args: impl Into<CtlArgs>) -> ExitCode {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    ExitCode::from(run_ctl_to(socket, json, args.into(), &mut out, &mut err).await)
}

/// [`run_ctl`] writing to the given streams and returning the exit code as a number (for
/// embedding and tests).
pub async fn run_ctl_to(
    socket: &Path,
    json: bool,
    args: CtlArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> u8 {
    let client = AdminClient::new(socket);
    match run(&client, json, args, out).await {
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

enum Failure {
    Usage(String),
    Client(AdminClientError),
    Output(String),
}

impl From<AdminClientError> for Failure {
    fn from(e: AdminClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Output(format!("writing output: {e}"))
    }
}

fn params_arg(params: Option<String>) -> Result<Option<serde_json::Value>, Failure> {
    params
        .map(|p| {
            serde_json::from_str(&p).map_err(|e| {
                Failure::Usage(format!(
                    "--params is not valid JSON (line {} column {}): {e}",
                    e.line(),
                    e.column()
                ))
            })
        })
        .transpose()
}

fn print_json<T: Serialize>(out: &mut (dyn Write + Send), v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Failure::Output(e.to_string()))?;
    writeln!(out, "{s}")?;
    Ok(())
}

fn print_applied(out: &mut (dyn Write + Send), json: bool, a: &Applied) -> Result<(), Failure> {
    if json {
        return print_json(out, a);
    }
    writeln!(out, "ok: policy generation {}", a.generation)?;
    for w in &a.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

async fn read_secret(
    value: Option<SecretValue>,
    from_env: Option<String>,
    from_file: Option<PathBuf>,
) -> Result<SecretValue, Failure> {
    let v = if let Some(v) = value {
        v
    } else if let Some(var) = from_env {
        let s = std::env::var(&var).map_err(|_| {
            Failure::Usage(format!(
                "environment variable {var} is not set (or not UTF-8)"
            ))
        })?;
        SecretValue::new(s)
    } else if let Some(f) = from_file {
        let s = std::fs::read_to_string(&f)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", f.display())))?;
        SecretValue::new(strip_newline(s))
    } else {
        let s = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        })
        .await
        .map_err(|e| Failure::Usage(format!("reading stdin: {e}")))?
        .map_err(|e| Failure::Usage(format!("reading the value from stdin: {e}")))?;
        SecretValue::new(strip_newline(s))
    };
    if v.is_empty() {
        return Err(Failure::Usage(
            "the secret value is empty; give --value, --from-env, --from-file, or pipe it on stdin"
                .into(),
        ));
    }
    Ok(v)
}

async fn run(
    client: &AdminClient,
    json: bool,
    args: CtlArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    let ifg = args.if_generation;
    match args.command {
        CtlCommand::Status => {
            let s = client.status().await?;
            if json {
                return print_json(out, &s);
            }
            writeln!(out, "sandbox     {}", s.sandbox_id)?;
            writeln!(out, "generation  {}", s.generation)?;
            writeln!(out, "uptime      {}", human_duration(s.uptime_secs))?;
            let w = s.counters.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in &s.counters {
                writeln!(out, "{k:<w$}  {v}")?;
            }
        }
        CtlCommand::Health => {
            let h = client.health().await?;
            if json {
                return print_json(out, &h);
            }
            writeln!(out, "{}", h.status)?;
        }
        CtlCommand::Policy(PolicyCommand::Get { toml }) => {
            if toml {
                write!(out, "{}", client.policy_toml().await?)?;
            } else {
                let v = client.policy().await?;
                if json {
                    return print_json(out, &v);
                }
                write_policy(out, &v)?;
            }
        }
        CtlCommand::Policy(PolicyCommand::Set { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
            let ct = if file.extension().is_some_and(|e| e == "json") {
                "application/json"
            } else {
                "application/toml"
            };
            let a = client.replace_policy_text(text, ct, ifg).await?;
            print_applied(out, json, &a)?;
        }
        CtlCommand::SetOutbound { name, params } => {
            let b = BindingConfig {
                handler: name,
                params: params_arg(params)?,
            };
            print_applied(out, json, &client.set_outbound(&b, ifg).await?)?;
        }
        CtlCommand::ClearOutbound => {
            print_applied(out, json, &client.clear_outbound(ifg).await?)?;
        }
        CtlCommand::SetOutboundByHost {
            hosts,
            name,
            params,
        } => {
            let hosts: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
            if hosts.is_empty() {
                return Err(Failure::Usage("give at least one host pattern".into()));
            }
            let route = RouteConfig {
                hosts,
                handler: name,
                params: params_arg(params)?,
            };
            print_applied(
                out,
                json,
                &client.set_outbound_by_host(vec![route], ifg).await?,
            )?;
        }
        CtlCommand::RemoveOutboundByHost { hosts } => {
            print_applied(
                out,
                json,
                &client.remove_outbound_by_host(hosts, ifg).await?,
            )?;
        }
        CtlCommand::AllowHost { action, hosts } => {
            let c = host_change(action, hosts);
            print_applied(out, json, &client.allowed_hosts(&c, ifg).await?)?;
        }
        CtlCommand::DenyHost { action, hosts } => {
            let c = host_change(action, hosts);
            print_applied(out, json, &client.denied_hosts(&c, ifg).await?)?;
        }
        CtlCommand::Internet { state } => {
            let a = client.set_internet(state == OnOff::On, ifg).await?;
            print_applied(out, json, &a)?;
        }
        CtlCommand::Handler(HandlerCommand::Set {
            name,
            module,
            params,
            secrets,
            reveal,
            timeout_ms,
            memory_mb,
        }) => {
            let mut h = HandlerConfig::new(module);
            h.params = params_arg(params)?;
            h.secrets = secrets;
            h.reveal = reveal;
            if let Some(t) = timeout_ms {
                h.timeout_ms = t;
            }
            if let Some(m) = memory_mb {
                h.memory_mb = m;
            }
            print_applied(out, json, &client.set_handler(&name, &h, ifg).await?)?;
        }
        CtlCommand::Handler(HandlerCommand::Remove { name }) => {
            print_applied(out, json, &client.remove_handler(&name, ifg).await?)?;
        }
        CtlCommand::Module(ModuleCommand::Upload { name, file }) => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
            let info = client.upload_module(&name, Bytes::from(bytes), ifg).await?;
            if json {
                return print_json(out, &info);
            }
            writeln!(
                out,
                "uploaded {} ({} bytes, sha256 {}); reference it as module = \"uploaded:{}\"",
                info.name, info.size, info.sha256, info.name
            )?;
        }
        CtlCommand::Module(ModuleCommand::List) => {
            let list = client.modules().await?;
            if json {
                return print_json(out, &crate::api::ModuleList { modules: list });
            }
            if list.is_empty() {
                writeln!(out, "no uploaded modules")?;
            }
            for m in list {
                writeln!(
                    out,
                    "{:<24} {:>10} bytes  sha256 {}  loaded {}",
                    m.name,
                    m.size,
                    m.sha256,
                    rfc3339(m.loaded_at)
                )?;
            }
        }
        CtlCommand::Secret(SecretCommand::Set {
            name,
            value,
            from_env,
            from_file,
        }) => {
            let v = read_secret(value, from_env, from_file).await?;
            let r = client.set_secret(&name, v, ifg).await?;
            if json {
                return print_json(out, &r);
            }
            writeln!(
                out,
                "ok: secret {} set, policy generation {}",
                r.name, r.generation
            )?;
            for w in &r.warnings {
                writeln!(out, "warning: {w}")?;
            }
        }
        CtlCommand::Secret(SecretCommand::Remove { name }) => {
            print_applied(out, json, &client.remove_secret(&name, ifg).await?)?;
        }
        CtlCommand::Secret(SecretCommand::List) => {
            let names = client.secrets().await?;
            if json {
                return print_json(out, &crate::api::SecretList { secrets: names });
            }
            for n in names {
                writeln!(out, "{n}")?;
            }
        }
        CtlCommand::Ca => write!(out, "{}", client.ca_pem().await?)?,
        CtlCommand::Metrics => write!(out, "{}", client.metrics().await?)?,
        CtlCommand::Tail { sandbox, deny_only } => {
            let filter = AuditFilter { sandbox, deny_only };
            let mut stream = client.audit(&filter).await?;
            while let Some(line) = stream.next_line().await {
                let line = line?;
                if json {
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "{}", format_event(&line))?;
                }
                // Followers (`| grep`) want each event as it happens.
                out.flush()?;
            }
        }
    }
    Ok(())
}

fn host_change(action: ListAction, hosts: Vec<String>) -> HostListChange {
    match action {
        ListAction::Add => HostListChange {
            add: hosts,
            remove: Vec::new(),
        },
        ListAction::Remove => HostListChange {
            add: Vec::new(),
            remove: hosts,
        },
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn binding(b: &BindingConfig) -> String {
    match &b.params {
        Some(p) => format!("{} {p}", b.handler),
        None => b.handler.clone(),
    }
}

fn write_policy(out: &mut (dyn Write + Send), v: &PolicyView) -> Result<(), Failure> {
    let p = &v.policy;
    let onoff = |b: bool| if b { "on" } else { "off" };
    writeln!(out, "generation         {}", v.generation)?;
    writeln!(out, "internet           {}", onoff(p.internet))?;
    writeln!(out, "intercept_https    {}", onoff(p.intercept_https))?;
    writeln!(out, "allowed_hosts      {}", list(&p.allowed_hosts))?;
    writeln!(out, "denied_hosts       {}", list(&p.denied_hosts))?;
    writeln!(out, "passthrough_hosts  {}", list(&p.passthrough_hosts))?;
    let rt = v.runtime.outbound.as_ref().map(binding);
    let st = p.outbound.as_ref().map(binding);
    let outbound = match (rt, st) {
        (Some(r), Some(s)) => format!("{r} (runtime; overrides the file's {s})"),
        (Some(r), None) => format!("{r} (runtime)"),
        (None, Some(s)) => s,
        (None, None) => "(none)".into(),
    };
    writeln!(out, "outbound           {outbound}")?;
    if v.runtime.routes.is_empty() && p.routes.is_empty() {
        writeln!(out, "routes             (none)")?;
    } else {
        writeln!(out, "routes")?;
        for (layer, routes) in [("runtime", &v.runtime.routes), ("static ", &p.routes)] {
            for r in routes {
                writeln!(
                    out,
                    "  {layer}  {} -> {}",
                    r.hosts.join(", "),
                    binding(&r.binding())
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
    writeln!(out, "secrets            {}", list(&v.secrets))?;
    Ok(())
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
    format!(
        "{time} {} {:<7} {method} {}{path} {status} rule={}",
        s("sandbox"),
        s("decision"),
        s("host"),
        s("rule")
    )
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
        assert_eq!(format_event("garbage"), "garbage");
        assert!(format_event(r#"{"type":"lagged","skipped":3}"#).contains("3 events skipped"));
    }

    #[test]
    fn newline_stripping() {
        assert_eq!(strip_newline("a\n".into()), "a");
        assert_eq!(strip_newline("a\r\n".into()), "a");
        assert_eq!(strip_newline("a\n\n".into()), "a\n");
        assert_eq!(strip_newline("a".into()), "a");
    }
}

//! Carrying out a command: arguments into admin API requests, the answers handed to
//! [`output`](super::output).
//!
//! Everything `egret ctl` reads besides its arguments (policy and module files, a secret from
//! the environment, a file or stdin) is read here, and a problem with it is a usage error
//! (exit 2) reported before anything is sent.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use egret_policy::{BindingConfig, HandlerConfig, RouteConfig};

use super::args::{
    CtlArgs, CtlCommand, HandlerCommand, ListAction, ModuleCommand, OnOff, PolicyCommand,
    SecretCommand,
};
use super::{output, Failure};
use crate::api::{AuditFilter, HostListChange, ModuleList, SecretList};
use crate::client::{AdminClient, AdminClientError};
use crate::control::SecretValue;

/// Runs one command and prints its answer to `out`; failures are left to the caller to
/// report.
pub(super) async fn run(
    client: &AdminClient,
    json: bool,
    args: CtlArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    let ifg = args.if_generation;
    match args.command {
        CtlCommand::Status => output::answer(out, json, &client.status().await?),
        CtlCommand::Health => output::answer(out, json, &client.health().await?),
        CtlCommand::Policy(command) => policy(client, json, command, ifg, out).await,
        CtlCommand::SetOutbound { name, params } => {
            let b = BindingConfig {
                handler: name,
                params: params_arg(params)?,
            };
            output::answer(out, json, &client.set_outbound(&b, ifg).await?)
        }
        CtlCommand::ClearOutbound => output::answer(out, json, &client.clear_outbound(ifg).await?),
        CtlCommand::SetOutboundByHost {
            hosts,
            name,
            params,
        } => {
            let route = outbound_route(&hosts, &name, params)?;
            let a = client.set_outbound_by_host(vec![route], ifg).await?;
            output::answer(out, json, &a)
        }
        CtlCommand::RemoveOutboundByHost { hosts } => {
            let a = client.remove_outbound_by_host(hosts, ifg).await?;
            output::answer(out, json, &a)
        }
        CtlCommand::AllowHost { action, hosts } => {
            let c = host_change(action, hosts);
            output::answer(out, json, &client.allowed_hosts(&c, ifg).await?)
        }
        CtlCommand::DenyHost { action, hosts } => {
            let c = host_change(action, hosts);
            output::answer(out, json, &client.denied_hosts(&c, ifg).await?)
        }
        CtlCommand::Pending => {
            let pending = client.pending().await?;
            output::answer(out, json, &crate::ask::PendingList { pending })
        }
        CtlCommand::Approve { id, run, always } => {
            let scope = if always {
                crate::ask::AskScope::Always
            } else if run {
                crate::ask::AskScope::Run
            } else {
                crate::ask::AskScope::Once
            };
            output::answer(out, json, &client.decide(id, Some(scope)).await?)
        }
        CtlCommand::Deny { id } => output::answer(out, json, &client.decide(id, None).await?),
        CtlCommand::Internet { state } => {
            let a = client.set_internet(state == OnOff::On, ifg).await?;
            output::answer(out, json, &a)
        }
        CtlCommand::Handler(command) => handler(client, json, command, ifg, out).await,
        CtlCommand::Module(ModuleCommand::Upload { name, file }) => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
            let info = client.upload_module(&name, Bytes::from(bytes), ifg).await?;
            output::answer(out, json, &info)
        }
        CtlCommand::Module(ModuleCommand::List) => {
            let modules = client.modules().await?;
            output::answer(out, json, &ModuleList { modules })
        }
        CtlCommand::Secret(SecretCommand::Set {
            name,
            value,
            from_env,
            from_file,
        }) => {
            let v = read_secret(value, from_env, from_file).await?;
            output::answer(out, json, &client.set_secret(&name, v, ifg).await?)
        }
        CtlCommand::Secret(SecretCommand::Remove { name }) => {
            output::answer(out, json, &client.remove_secret(&name, ifg).await?)
        }
        CtlCommand::Secret(SecretCommand::List) => {
            let secrets = client.secrets().await?;
            output::answer(out, json, &SecretList { secrets })
        }
        CtlCommand::Ca => output::verbatim(out, &client.ca_pem().await?),
        CtlCommand::Metrics => output::verbatim(out, &client.metrics().await?),
        CtlCommand::Tail { sandbox, deny_only } => {
            let filter = AuditFilter { sandbox, deny_only };
            let mut stream = client.audit(&filter).await?;
            while let Some(line) = stream.next_line().await {
                output::audit_event(out, json, &line?)?;
            }
            Ok(())
        }
    }
}

/// `egret ctl policy get|set|shadow`.
async fn policy(
    client: &AdminClient,
    json: bool,
    command: PolicyCommand,
    ifg: Option<u64>,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    match command {
        PolicyCommand::Get { toml: true } => output::verbatim(out, &client.policy_toml().await?),
        PolicyCommand::Get { toml: false } => output::answer(out, json, &client.policy().await?),
        PolicyCommand::Set { file } => {
            let (text, ct) = policy_file(&file)?;
            let a = client
                .replace_policy_text(text, ct, ifg)
                .await
                .map_err(|e| in_file(&file, e))?;
            output::answer(out, json, &a)
        }
        PolicyCommand::Shadow { what } => match what.as_str() {
            "report" => output::answer(out, json, &client.shadow_report().await?),
            "promote" => output::answer(out, json, &client.shadow_promote(ifg).await?),
            "drop" => output::answer(out, json, &client.shadow_drop().await?),
            file => {
                let file = PathBuf::from(file);
                let (text, ct) = policy_file(&file)?;
                let a = client
                    .shadow_load_text(text, ct, ifg)
                    .await
                    .map_err(|e| in_file(&file, e))?;
                output::answer(out, json, &a)
            }
        },
    }
}

/// The route of `egret ctl set-outbound-by-host HOSTS NAME`: `hosts` comma-separated.
fn outbound_route(hosts: &str, name: &str, params: Option<String>) -> Result<RouteConfig, Failure> {
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err(Failure::Usage("give at least one host pattern".into()));
    }
    Ok(RouteConfig {
        params: params_arg(params)?,
        ..RouteConfig::new(hosts, name)
    })
}

/// `egret ctl handler set|remove`.
async fn handler(
    client: &AdminClient,
    json: bool,
    command: HandlerCommand,
    ifg: Option<u64>,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    match command {
        HandlerCommand::Set {
            name,
            module,
            params,
            secrets,
            reveal,
            timeout_ms,
            memory_mb,
        } => {
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
            output::answer(out, json, &client.set_handler(&name, &h, ifg).await?)
        }
        HandlerCommand::Remove { name } => {
            output::answer(out, json, &client.remove_handler(&name, ifg).await?)
        }
    }
}

/// A policy file's text and content type (JSON when it ends in `.json`, else TOML).
fn policy_file(file: &Path) -> Result<(String, &'static str), Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    let ct = if file.extension().is_some_and(|e| e == "json") {
        "application/json"
    } else {
        "application/toml"
    };
    Ok((text, ct))
}

/// A refused policy file: the server reads the body as "request body", so its line and
/// column, and the field paths of its problems, are said to be the file's.
fn in_file(file: &Path, mut e: AdminClientError) -> AdminClientError {
    if let AdminClientError::Refused { error, .. } = &mut e {
        let shown = file.display().to_string();
        if let (Some(line), Some(col)) = (error.line, error.column) {
            error.message = format!("{shown}:{line}:{col}: {}", error.message);
        }
        for p in &mut error.problems {
            *p = match p.strip_prefix("request body") {
                Some(rest) => format!("{shown}{rest}"),
                None => format!("{shown}: {p}"),
            };
        }
    }
    e
}

/// `--params`, parsed here so that bad JSON is a usage error naming the flag rather than a
/// refusal from the server.
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

/// The value of `secret set`, from exactly one source (clap enforces that for the flags; stdin
/// when none is given).
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

/// Drops the one line ending that `echo` and editors add to a file or a pipe, which is never
/// part of a token.
fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_stripping() {
        assert_eq!(strip_newline("a\n".into()), "a");
        assert_eq!(strip_newline("a\r\n".into()), "a");
        assert_eq!(strip_newline("a\n\n".into()), "a\n");
        assert_eq!(strip_newline("a".into()), "a");
    }
}

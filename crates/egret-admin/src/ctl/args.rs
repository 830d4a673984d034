//! The `egret ctl` command line as clap parses it: one variant per command, with the
//! arguments it takes.
//!
//! Names and flags here are what operators type and script against, so they change only with
//! care; the help texts are what `egret ctl --help` shows.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::control::SecretValue;

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
    /// List the connections `--ask` holds for a destination no rule decides.
    Pending,
    /// Let a held connection through: once (default), for this run, or always (also written
    /// into the policy file).
    Approve {
        /// The question's id (see `pending`).
        id: u64,
        /// Allow the host until egret exits.
        #[arg(long, conflicts_with = "always")]
        run: bool,
        /// Allow the host for good: for this run and in the policy file.
        #[arg(long)]
        always: bool,
    },
    /// Refuse a held connection.
    Deny {
        /// The question's id (see `pending`).
        id: u64,
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
    /// Follow audit events, one line each: time, sandbox, decision, method host path, status, rule
    /// (and the shadow candidate's decision where it differs).
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
    /// Try a candidate policy next to the live one: `shadow FILE` loads it (validated like
    /// `set`; every request is then decided by both, the live one is carried out), `shadow
    /// report` lists where they differ (host, method, path glob, count, first/last seen),
    /// `shadow promote` makes it live (generation + 1), `shadow drop` removes it. A file named
    /// like a subcommand is given as `./report`.
    Shadow {
        /// A policy file (TOML, or JSON if it ends in `.json`), or `report`, `promote`, `drop`.
        #[arg(value_name = "FILE|report|promote|drop")]
        what: String,
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

/// Wraps `--value` straight away: as a plain `String` it would show in the commands' `Debug`
/// output.
fn secret_arg(s: &str) -> Result<SecretValue, std::convert::Infallible> {
    Ok(SecretValue::new(s))
}

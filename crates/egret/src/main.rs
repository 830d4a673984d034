//! `egret`: the command line. It parses flags, hands `egret run` to [`egret_app`] and the other
//! commands to their crates, and reports an error as one clear line.
mod cli;
mod handler;
mod oci_hook;
mod policy_cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => return run(args),
        cli::Command::Policy(cli::PolicyCmd::Check(args)) => policy_check(args),
        cli::Command::Policy(cli::PolicyCmd::Test(args)) => policy_cmd::test(args),
        cli::Command::Policy(cli::PolicyCmd::Suggest(args)) => policy_cmd::suggest_cmd(args),
        cli::Command::Handler(cli::HandlerCmd::Build(args)) => handler::build(args),
        cli::Command::Handler(cli::HandlerCmd::Check(args)) => handler::check(args),
        cli::Command::Handler(cli::HandlerCmd::Run(args)) => {
            // The handler's own log lines go to stderr, as they would from egret run.
            init_tracing(cli::LogFormat::Text);
            handler::run(*args)
        }
        cli::Command::Ctl(c) => return ctl(c),
        cli::Command::OciHook(h) => return oci_hook::run(h),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("egret: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `egret run`: build the sidecar, serve until SIGINT/SIGTERM, detach. Every layer's error
/// message already carries its cause, so it is printed without walking the source chain.
fn run(args: cli::RunArgs) -> ExitCode {
    init_tracing(args.log_format);
    match args.into_config().build().and_then(egret_app::App::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egret: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `egret policy check FILE`: validate a policy without root and print its warnings.
fn policy_check(args: cli::PolicyCheckArgs) -> anyhow::Result<ExitCode> {
    let cfg = egret_app::load_policy_file(&args.file)?;
    let compiled =
        egret_policy::CompiledPolicy::compile(&cfg, &egret_policy::RuntimeLayer::default(), 1)?;
    for w in compiled.warnings() {
        println!("warning: {w}");
    }
    println!("{}: ok", args.file.display());
    Ok(ExitCode::SUCCESS)
}

/// `egret ctl ...`: one request to a running egret's admin socket.
fn ctl(c: cli::CtlCli) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(egret_admin::ctl::run_ctl(&c.socket, c.json, c.args)),
        Err(e) => {
            eprintln!("egret: error: cannot start the async runtime: {e}");
            ExitCode::from(4)
        }
    }
}

fn init_tracing(format: cli::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
        cli::LogFormat::Text => builder.init(),
    }
}

//! `egret`: the command line. It parses flags, hands `egret run` to [`egret_app`] and the other
//! commands to their crates, and reports an error as one clear line.
mod cli;
mod exec;
mod handler;
mod oci_hook;
mod policy_cmd;
mod runc;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match runc::shim_argv(&argv) {
        None => cli::Cli::parse_from(argv),
        Some(Ok(as_runc)) => cli::Cli::parse_from(as_runc),
        Some(Err(e)) => {
            eprintln!("egret runc: error: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        cli::Command::Run(args) => return run(args),
        // First, before anything starts a thread: it forks the sandbox's helper.
        cli::Command::Exec(args) => return exec::main(args),
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
        cli::Command::Runc(r) => return runc::run(r),
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
    let capture = args.netns.is_some();
    let cfg = args.into_config();
    let built = if capture {
        cfg.build()
    } else {
        cfg.build_without_capture()
    };
    match built.and_then(egret_app::App::run) {
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
    for u in egret_app::secrets::unset_env_secrets(&cfg, egret_app::secrets::env_is_set) {
        println!(
            "warning: secret {} is granted and read from environment variable {}, which is not set here: requests that use it fail until egret's environment has it or it is set at runtime (egret ctl secret set); egret oci-hook and egret runc refuse such a policy unless the variable is in the hook's environment (a sidecar a container runtime starts gets the hook's, usually empty: use a file secret there)",
            u.secret, u.var
        );
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
    init_tracing_level(format, "info");
}

/// Log to stderr at `default` level unless `RUST_LOG` says otherwise.
fn init_tracing_level(format: cli::LogFormat, default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
        cli::LogFormat::Text => builder.init(),
    }
}

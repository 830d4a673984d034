//! `egret`: the command line. Thin by design: it parses flags, builds the pieces from the
//! library crates, wires them together (capture → DNS → TLS → HTTP → handlers) and reports
//! errors in one clear line plus a hint.
mod cli;
mod control;
mod glue;
mod handler;
mod metrics;
mod run;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Policy(cli::PolicyCmd::Check(args)) => run::policy_check(args),
        cli::Command::Handler(cli::HandlerCmd::Check(args)) => handler::check(args),
        cli::Command::Handler(cli::HandlerCmd::Run(args)) => handler::run(args),
        cli::Command::Ctl(c) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("egret: error: cannot start the async runtime: {e}");
                    return ExitCode::from(4);
                }
            };
            return rt.block_on(egret_admin::ctl::run_ctl(&c.socket, c.json, c.args));
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("egret: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

//! `egret`: the command line. Thin by design: it parses flags, builds the pieces from the
//! library crates, wires them together (capture → DNS → TLS → HTTP → handlers) and reports
//! errors in one clear line plus a hint.
mod cli;
mod glue;
mod handler;
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("egret: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

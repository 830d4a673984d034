//! `egret oci-hook`: the container state from stdin to [`egret_oci::run`], its outcome to the
//! runtime as an exit code; `egret oci-hook hooks-json` prints the hooks.d entry.
use crate::cli::{OciHookCli, OciHookCmd, OciHookOpts, StageArg};
use std::io::Read;
use std::process::ExitCode;

pub(crate) fn run(h: OciHookCli) -> ExitCode {
    match h.cmd {
        Some(OciHookCmd::HooksJson(opts)) => hooks_json(&opts),
        None => hook(&h.opts, h.stage),
    }
}

fn hooks_json(opts: &OciHookOpts) -> ExitCode {
    let exe = match std::env::current_exe().and_then(std::fs::canonicalize) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("egret: error: cannot find the path of this executable: {e}");
            return ExitCode::from(2);
        }
    };
    print!(
        "{}",
        egret_oci::hooks_json::render(&exe, &opts.to_args(), runtime_timeout(&opts.hook))
    );
    ExitCode::SUCCESS
}

/// The runtime's timeout for the hook (seconds): above the hook's own, so that the hook
/// undoes a slow start itself.
pub(crate) fn runtime_timeout(opts: &crate::cli::HookFlags) -> u64 {
    opts.ready_timeout_ms.div_ceil(1000) + 15
}

fn hook(opts: &OciHookOpts, stage: Option<StageArg>) -> ExitCode {
    let mut input = Vec::new();
    let limit = egret_oci::state::MAX_STATE_BYTES as u64 + 1;
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut input) {
        eprintln!("egret oci-hook: error: cannot read the OCI state from stdin: {e}");
        return ExitCode::from(2);
    }
    let stage = stage.map(|s| match s {
        StageArg::CreateRuntime => egret_oci::Stage::CreateRuntime,
        StageArg::Poststop => egret_oci::Stage::Poststop,
    });
    match egret_oci::run(&opts.to_options(), stage, &input) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egret oci-hook: error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command, OciHookCmd};
    use clap::Parser;

    /// The hooks.d file the Debian package installs is the one `hooks-json` prints for
    /// /usr/bin/egret with the default options.
    #[test]
    fn the_packaged_hooks_json_is_what_hooks_json_prints() {
        let Command::OciHook(h) = Cli::parse_from(["egret", "oci-hook", "hooks-json"]).command
        else {
            panic!("oci-hook")
        };
        let Some(OciHookCmd::HooksJson(opts)) = h.cmd else {
            panic!("hooks-json")
        };
        let rendered = egret_oci::hooks_json::render(
            std::path::Path::new("/usr/bin/egret"),
            &opts.to_args(),
            super::runtime_timeout(&opts.hook),
        );
        assert_eq!(
            rendered,
            include_str!("../debian/hooks.d/egret.json"),
            "regenerate: egret oci-hook hooks-json with path /usr/bin/egret"
        );
    }
}

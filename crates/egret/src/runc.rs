//! `egret runc` (also `egret-runc` by argv[0]): the runtime shim for Docker and containerd
//! ([`egret_oci::shim`] decides and edits the bundle), and the configuration it prints for
//! them.
use crate::cli::{ContainerdConfigArgs, RuncCli, RuncCmd, RuncOpts};
use egret_oci::shim::{self, RuncCall, ShimOptions};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The name that makes this binary the shim (containerd's `BinaryName` takes a path, no
/// arguments).
pub(crate) const SHIM_NAME: &str = "egret-runc";
/// The options file of `egret-runc`, next to it: `<path of egret-runc>.args`.
pub(crate) const ARGS_SUFFIX: &str = ".args";

pub(crate) fn run(c: RuncCli) -> ExitCode {
    match c.cmd {
        Some(RuncCmd::DockerConfig(o)) => print_or_fail(docker_config(&o)),
        Some(RuncCmd::ContainerdConfig(a)) => print_or_fail(containerd_config(&a)),
        Some(RuncCmd::ArgsFile(o)) => print_or_fail(Ok(args_file(&o))),
        None => shim_call(&c.opts, &c.runc_args),
    }
}

fn print_or_fail(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn this_exe() -> Result<PathBuf, String> {
    std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot find the path of this executable: {e}"))
}

/// `egret-runc ARGS` as `egret runc OPTIONS -- ARGS`, OPTIONS from its options file (absent:
/// the defaults). `None` when this binary was not started as egret-runc.
pub(crate) fn shim_argv(argv: &[OsString]) -> Option<Result<Vec<OsString>, String>> {
    let argv0 = Path::new(argv.first()?);
    if argv0.file_name()? != SHIM_NAME {
        return None;
    }
    let file = match options_file(argv0) {
        Ok(f) => f,
        Err(e) => return Some(Err(e)),
    };
    let mut out: Vec<OsString> = vec!["egret".into(), "runc".into()];
    match std::fs::read_to_string(&file) {
        Ok(text) => out.extend(parse_args_file(&text).into_iter().map(OsString::from)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Some(Err(format!(
                "cannot read egret-runc's options file {}: {e}",
                file.display()
            )))
        }
    }
    out.push("--".into());
    out.extend(argv[1..].iter().cloned());
    Some(Ok(out))
}

/// Where egret-runc started as `argv0` keeps its options: next to it (found on PATH when
/// argv[0] is a bare name), so each installation has its own.
fn options_file(argv0: &Path) -> Result<PathBuf, String> {
    let path = if argv0.components().count() > 1 {
        argv0.to_path_buf()
    } else {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .map(|d| d.join(argv0))
            .find(|p| p.exists())
            .ok_or_else(|| format!("cannot find {} on PATH", argv0.display()))?
    };
    let mut s = path.into_os_string();
    s.push(ARGS_SUFFIX);
    Ok(PathBuf::from(s))
}

/// One argument a line; blank lines and lines starting with `#` are skipped; no quoting.
pub(crate) fn parse_args_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn args_file(o: &RuncOpts) -> String {
    let mut s =
        String::from("# egret-runc's options (egret runc args-file), one argument a line\n");
    for a in o.to_args() {
        s.push_str(&a);
        s.push('\n');
    }
    s
}

fn docker_config(o: &RuncOpts) -> Result<String, String> {
    let exe = this_exe()?;
    let mut runtime_args = vec!["runc".to_string()];
    runtime_args.extend(o.to_args());
    runtime_args.push("--".into());
    // Docker runs the runtime through a shell script that joins these with spaces, unquoted.
    if let Some(bad) = std::iter::once(exe.to_string_lossy().into_owned())
        .chain(runtime_args.iter().cloned())
        .find(|a| {
            a.chars()
                .any(|c| c.is_whitespace() || "'\"\\$`".contains(c))
        })
    {
        return Err(format!(
            "{bad:?}: Docker passes runtimeArgs through an unquoted shell line, so paths and options may not contain spaces or shell quotes"
        ));
    }
    let v = serde_json::json!({
        "runtimes": {
            "egret": {
                "path": exe,
                "runtimeArgs": runtime_args,
            }
        }
    });
    let mut s = serde_json::to_string_pretty(&v).expect("a JSON value serializes");
    s.push('\n');
    Ok(s)
}

fn containerd_config(a: &ContainerdConfigArgs) -> Result<String, String> {
    let binary = match &a.binary_name {
        Some(p) => p.clone(),
        None => this_exe()?
            .parent()
            .map(|d| d.join(SHIM_NAME))
            .ok_or("this executable has no directory")?,
    };
    if !binary.is_absolute() {
        return Err(format!(
            "--binary-name {}: give an absolute path",
            binary.display()
        ));
    }
    let binary_str = binary.to_string_lossy();
    let mut s = format!(
        "# containerd runtime handler \"egret\" (egret runc containerd-config): runc through egret's\n\
         # shim. {binary_str} is a symlink to the egret binary; it reads its options from\n\
         # {binary_str}{ARGS_SUFFIX} (one argument a line, written by egret runc args-file):\n"
    );
    for arg in a.opts.to_args() {
        s.push_str(&format!("#   {arg}\n"));
    }
    let h = "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.egret";
    s.push_str(&format!(
        "version = 2\n\n[{h}]\n  runtime_type = \"io.containerd.runc.v2\"\n  pod_annotations = [\"io.egret.*\"]\n\n[{h}.options]\n  BinaryName = {}\n",
        serde_json::Value::String(binary_str.into_owned())
    ));
    Ok(s)
}

/// The library's options for these command-line options, the hook run by `exe`.
fn shim_options(o: &RuncOpts, exe: &Path) -> ShimOptions {
    ShimOptions {
        hook: o.hook.to_options(&o.run_args),
        hook_program: exe.to_path_buf(),
        hook_args: o.hook.to_args(&o.run_args),
        hook_timeout_secs: crate::oci_hook::runtime_timeout(&o.hook),
        default_policy: o.default_policy.clone(),
    }
}

/// One runc call: the bundle prepared for `create`/`run`, then the real runc in this process.
fn shim_call(o: &RuncOpts, args: &[String]) -> ExitCode {
    let call = RuncCall::parse(args);
    let fail = |msg: String| {
        let msg = format!("egret runc: {msg}");
        eprintln!("{msg}");
        if let Some(log) = &call.log {
            shim::log_refusal(log, &msg);
        }
        ExitCode::from(1)
    };
    let exe = match this_exe() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if let Some((bundle, id)) = &call.create {
        let bundle = bundle.clone().unwrap_or_else(|| PathBuf::from("."));
        if let Err(e) = shim::prepare_bundle(&bundle, id, &shim_options(o, &exe)) {
            return fail(format!("error: {e}"));
        }
    }
    let runc = match shim::find_runc(o.runc.as_deref(), std::env::var_os("PATH").as_deref(), &exe) {
        Ok(p) => p,
        Err(e) => return fail(format!("error: {e}")),
    };
    let err = std::process::Command::new(&runc)
        .arg0("runc")
        .args(args)
        .exec();
    fail(format!(
        "error: {}",
        egret_oci::HookError::Exec {
            program: runc,
            source: err
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn runc_cli(args: &[&str]) -> RuncCli {
        let mut argv = vec!["egret", "runc"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Runc(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_then_runc_arguments_after_the_separator() {
        let c = runc_cli(&[
            "--default-policy",
            "/etc/egret/p.toml",
            "--run-arg=--upstream-ca",
            "--run-arg",
            "/ca.pem",
            "--",
            "--root",
            "/run/runc",
            "create",
            "--bundle",
            "/b",
            "id",
        ]);
        assert!(c.cmd.is_none());
        assert_eq!(
            c.opts.default_policy,
            Some(PathBuf::from("/etc/egret/p.toml"))
        );
        assert_eq!(c.opts.run_args, ["--upstream-ca", "/ca.pem"]);
        assert_eq!(c.runc_args[0], "--root");
        assert_eq!(c.runc_args.len(), 6);
        // runc's own --version and --help go to runc.
        let v = runc_cli(&["--", "--version"]);
        assert_eq!(v.runc_args, ["--version"]);
    }

    /// The hooks the shim writes run `egret oci-hook` with the shim's own hook options and
    /// the stage, whatever `egret run` flags follow.
    #[test]
    fn the_hooks_written_parse_as_oci_hook_calls_with_the_same_options() {
        let c = runc_cli(&[
            "--policy-dir",
            "/etc/egret/policies",
            "--default-policy",
            "/etc/egret/policies/a.toml",
            "--run-arg=--upstream-ca",
            "--run-arg=/ca.pem",
            "--",
            "create",
        ]);
        let opts = shim_options(&c.opts, Path::new("/usr/bin/egret"));
        let mut config = serde_json::json!({"linux": {"namespaces": [{"type": "network"}]}});
        shim::decide_and_edit(
            &mut config,
            Path::new("/b/config.json"),
            "c1",
            &opts,
            &shim::is_own_netns,
        )
        .unwrap();
        for (stage, want) in [
            ("createRuntime", crate::cli::StageArg::CreateRuntime),
            ("poststop", crate::cli::StageArg::Poststop),
        ] {
            let hook = &config["hooks"][stage][0];
            assert_eq!(hook["path"], "/usr/bin/egret");
            let argv: Vec<&str> = hook["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let Command::OciHook(h) = Cli::try_parse_from(&argv).unwrap().command else {
                panic!("{argv:?}")
            };
            assert_eq!(h.stage, Some(want));
            assert_eq!(h.opts.to_options(), opts.hook);
            assert_eq!(h.opts.run_args, ["--upstream-ca", "/ca.pem"]);
        }
    }

    #[test]
    fn printed_options_parse_back_to_the_same() {
        let c = runc_cli(&[
            "args-file",
            "--policy-dir",
            "/etc/egret/policies",
            "--runc",
            "/usr/sbin/runc",
            "--no-handler-cache",
            "--run-arg=--upstream-ca",
            "--run-arg=/ca.pem",
        ]);
        let Some(RuncCmd::ArgsFile(o)) = c.cmd else {
            panic!()
        };
        let text = args_file(&o);
        let mut again = parse_args_file(&text);
        again.push("--".into());
        let back = runc_cli(&again.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(back.opts.to_args(), o.to_args());
        assert_eq!(
            back.opts.hook.to_options(&back.opts.run_args),
            o.hook.to_options(&o.run_args)
        );
        assert_eq!(back.opts.runc, Some(PathBuf::from("/usr/sbin/runc")));
    }

    #[test]
    fn egret_runc_reads_its_options_file_next_to_it() {
        let d = tempfile::tempdir().unwrap();
        let shim = d.path().join(SHIM_NAME);
        let argv: Vec<OsString> = vec![shim.clone().into(), "--root".into(), "create".into()];
        let plain = shim_argv(&argv).unwrap().unwrap();
        assert_eq!(plain, ["egret", "runc", "--", "--root", "create"]);
        std::fs::write(
            d.path().join("egret-runc.args"),
            "# comment\n--default-policy\n/p.toml\n\n",
        )
        .unwrap();
        let with = shim_argv(&argv).unwrap().unwrap();
        assert_eq!(
            with,
            [
                "egret",
                "runc",
                "--default-policy",
                "/p.toml",
                "--",
                "--root",
                "create"
            ]
        );
        assert!(shim_argv(&["/usr/bin/egret".into(), "runc".into()]).is_none());
    }

    #[test]
    fn containerd_config_names_the_shim_and_passes_pod_annotations() {
        let c = runc_cli(&[
            "containerd-config",
            "--binary-name",
            "/opt/egret/bin/egret-runc",
            "--policy-dir",
            "/etc/egret/policies",
        ]);
        let Some(RuncCmd::ContainerdConfig(a)) = c.cmd else {
            panic!()
        };
        let s = containerd_config(&a).unwrap();
        assert!(
            s.contains("runtime_type = \"io.containerd.runc.v2\""),
            "{s}"
        );
        assert!(s.contains("pod_annotations = [\"io.egret.*\"]"), "{s}");
        assert!(
            s.contains("BinaryName = \"/opt/egret/bin/egret-runc\""),
            "{s}"
        );
        assert!(s.contains("#   /etc/egret/policies\n"), "{s}");
        assert!(s.contains("/opt/egret/bin/egret-runc.args"), "{s}");
    }

    #[test]
    fn docker_config_ends_the_options_with_the_separator() {
        let c = runc_cli(&["docker-config", "--default-policy", "/etc/egret/p.toml"]);
        let Some(RuncCmd::DockerConfig(o)) = c.cmd else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&docker_config(&o).unwrap()).unwrap();
        let rt = &v["runtimes"]["egret"];
        assert!(rt["path"].as_str().unwrap().starts_with('/'));
        let args: Vec<&str> = rt["runtimeArgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args.first(), Some(&"runc"));
        assert_eq!(args.last(), Some(&"--"));
        assert!(args
            .windows(2)
            .any(|w| w == ["--default-policy", "/etc/egret/p.toml"]));
        let spaced = runc_cli(&["docker-config", "--default-policy", "/etc/my policy.toml"]);
        let Some(RuncCmd::DockerConfig(o)) = spaced.cmd else {
            panic!()
        };
        assert!(docker_config(&o).unwrap_err().contains("spaces"));
    }
}

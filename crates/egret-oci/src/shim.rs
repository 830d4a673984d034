//! `egret runc`: a runtime shim for runtimes that never read `hooks.d` (Docker, containerd and
//! so Kubernetes on containerd). The runtime is told to run it instead of runc; every call is
//! handed to the real runc unchanged except `create` and `run`, where the container's bundle
//! `config.json` first gets `egret oci-hook` as its `createRuntime` and `poststop` hooks when
//! the container is egret's. runc then runs the hook after it made the container's namespaces
//! and before the container's process exists: there is no moment in which the container has
//! a route out that egret does not capture.
//!
//! Which containers are egret's is decided by [`Selection::decide`], the same function the
//! hook uses on the same annotations, so the shim never accepts a container the hook would
//! refuse for its annotations. A container that is not egret's keeps its `config.json` byte
//! for byte.
use crate::plan::{self, Selection, ANN_POLICY};
use crate::{HookError, HookOptions};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// How the shim was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimOptions {
    /// The hook's options: they decide (policy directory, run and state roots) and are what
    /// the hook written into the bundle is run with.
    pub hook: HookOptions,
    /// The egret binary the bundle's hooks run (absolute).
    pub hook_program: PathBuf,
    /// `egret oci-hook` options for the bundle's hooks (the same as [`ShimOptions::hook`]).
    pub hook_args: Vec<String>,
    /// The runtime's timeout for the hook, seconds.
    pub hook_timeout_secs: u64,
    /// The policy of containers that carry no `io.egret.policy` (runtimes that pass no
    /// annotations, such as Docker 20.10: then every container run with this runtime is
    /// egret's).
    pub default_policy: Option<PathBuf>,
}

/// One runc invocation, as far as the shim needs to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncCall {
    /// The runc command (`create`, `start`, `delete`, ...), if any.
    pub command: Option<String>,
    /// For `create` and `run`: the bundle directory (`--bundle`, default the working
    /// directory) and the container id.
    pub create: Option<(Option<PathBuf>, String)>,
    /// runc's `--log` file and whether `--log-format json` was asked for: where runc's
    /// callers (containerd's shim) look for the reason a call failed.
    pub log: Option<(PathBuf, bool)>,
}

/// runc's global flags that take a value (urfave/cli accepts `-flag` and `--flag`, with the
/// value as the next argument or after `=`).
const GLOBAL_VALUE_FLAGS: [&str; 5] = ["root", "log", "log-format", "criu", "rootless"];
/// `create`/`run` flags that take a value.
const CREATE_VALUE_FLAGS: [&str; 5] = ["bundle", "b", "console-socket", "pid-file", "preserve-fds"];

fn flag_name(arg: &str) -> Option<(&str, Option<&str>)> {
    let name = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if name.is_empty() {
        return None;
    }
    Some(match name.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    })
}

impl RuncCall {
    /// Read runc's arguments (without the program name).
    pub fn parse(args: &[String]) -> RuncCall {
        let mut i = 0;
        let mut log = None;
        let mut json = false;
        while i < args.len() {
            let Some((name, inline)) = flag_name(&args[i]) else {
                break;
            };
            let mut value = inline.map(str::to_string);
            if GLOBAL_VALUE_FLAGS.contains(&name) && value.is_none() {
                i += 1;
                value = args.get(i).cloned();
            }
            match (name, value) {
                ("log", Some(v)) => log = Some(PathBuf::from(v)),
                ("log-format", Some(v)) => json = v == "json",
                _ => {}
            }
            i += 1;
        }
        let log = log.map(|p| (p, json));
        let Some(command) = args.get(i).cloned() else {
            return RuncCall {
                command: None,
                create: None,
                log,
            };
        };
        let create = (command == "create" || command == "run").then(|| {
            let mut bundle = None;
            let mut id = None;
            let mut j = i + 1;
            while j < args.len() {
                match flag_name(&args[j]) {
                    Some((name, inline)) => {
                        let mut value = inline.map(str::to_string);
                        if CREATE_VALUE_FLAGS.contains(&name) && value.is_none() {
                            j += 1;
                            value = args.get(j).cloned();
                        }
                        if name == "bundle" || name == "b" {
                            bundle = value.map(PathBuf::from);
                        }
                    }
                    None => id = Some(args[j].clone()),
                }
                j += 1;
            }
            (bundle, id.unwrap_or_default())
        });
        RuncCall {
            command: Some(command),
            create,
            log,
        }
    }
}

/// What the shim does with a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not egret's: its bundle is not touched.
    NotOurs,
    /// egret's: the hooks (and the default policy's annotation) go into its bundle.
    Attach(Selection),
}

/// The container's annotations from its `config.json`.
fn annotations(
    config: &serde_json::Value,
    bad: &dyn Fn(String) -> HookError,
) -> Result<BTreeMap<String, String>, HookError> {
    match config.get("annotations") {
        None | Some(serde_json::Value::Null) => Ok(BTreeMap::new()),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.clone(), s.to_string())),
                None => Err(bad(format!("annotation {k:?} is not a string"))),
            })
            .collect(),
        Some(_) => Err(bad("\"annotations\" is not an object".into())),
    }
}

/// Whether the spec gives the container a network namespace other than the runtime's: a new
/// one, or another container's. Without a network entry it runs in the runtime's (the
/// host's); Docker's `--network host` names the host's by path, which `is_runtime_netns`
/// recognises.
fn has_own_network_namespace(
    config: &serde_json::Value,
    is_runtime_netns: &dyn Fn(&str) -> bool,
) -> bool {
    config["linux"]["namespaces"].as_array().is_some_and(|ns| {
        ns.iter().any(|n| {
            n["type"] == "network"
                && n["path"]
                    .as_str()
                    .is_none_or(|p| p.is_empty() || !is_runtime_netns(p))
        })
    })
}

/// Whether `path` is the network namespace this process runs in (the runtime's).
pub fn is_own_netns(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    matches!((id(path), id("/proc/self/ns/net")), (Some(a), Some(b)) if a == b)
}

/// Decide for container `id` from its bundle config, and make the edits when it is egret's:
/// the default policy as its `io.egret.policy` when it has none, the hooks appended (an
/// earlier identical entry is not repeated). `config_path` names the file in errors;
/// `is_runtime_netns` tells whether a namespace path is the runtime's own ([`is_own_netns`]).
pub fn decide_and_edit(
    config: &mut serde_json::Value,
    config_path: &Path,
    id: &str,
    opts: &ShimOptions,
    is_runtime_netns: &dyn Fn(&str) -> bool,
) -> Result<Decision, HookError> {
    let bad = |why: String| HookError::Bundle {
        path: config_path.to_path_buf(),
        why,
    };
    if !config.is_object() {
        return Err(bad("it is not a JSON object".into()));
    }
    let mut anns = annotations(config, &bad)?;
    let default = match &opts.default_policy {
        Some(p) if !anns.contains_key(ANN_POLICY) => Some(p.to_string_lossy().into_owned()),
        _ => None,
    };
    if default.is_none() && !plan::wants_egret(&anns) {
        return Ok(Decision::NotOurs);
    }
    if let Some(p) = &default {
        anns.insert(ANN_POLICY.to_string(), p.clone());
    }
    plan::run_dir(&opts.hook, id)?;
    let selection = Selection::decide(id, &anns, &opts.hook)?;
    if !has_own_network_namespace(config, is_runtime_netns) {
        return Err(HookError::HostNetwork {
            container: id.to_string(),
            policy: selection.policy.clone(),
        });
    }
    if let Some(p) = default {
        let obj = config.as_object_mut().expect("checked above");
        let a = obj
            .entry("annotations")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if a.is_null() {
            *a = serde_json::Value::Object(Default::default());
        }
        a.as_object_mut()
            .expect("checked by annotations()")
            .insert(ANN_POLICY.to_string(), p.into());
    }
    let hooks = config
        .as_object_mut()
        .expect("checked above")
        .entry("hooks")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if hooks.is_null() {
        *hooks = serde_json::Value::Object(Default::default());
    }
    let hooks = hooks
        .as_object_mut()
        .ok_or_else(|| bad("\"hooks\" is not an object".into()))?;
    for stage in ["createRuntime", "poststop"] {
        // The stage first: the options may end with `-- EGRET_RUN_FLAGS`.
        let mut args = vec!["egret".into(), "oci-hook".into(), stage.to_string()];
        args.extend(opts.hook_args.iter().cloned());
        let entry = serde_json::json!({
            "path": opts.hook_program,
            "args": args,
            "timeout": opts.hook_timeout_secs,
        });
        let list = hooks
            .entry(stage)
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if list.is_null() {
            *list = serde_json::Value::Array(Vec::new());
        }
        let list = list
            .as_array_mut()
            .ok_or_else(|| bad(format!("\"hooks.{stage}\" is not a list")))?;
        if !list.contains(&entry) {
            list.push(entry);
        }
    }
    Ok(Decision::Attach(selection))
}

/// Decide for container `id` in `bundle` and, when it is egret's, replace its `config.json`
/// atomically with the same permissions (`egret_fs::write_atomic`): runc never reads half a
/// config.
pub fn prepare_bundle(bundle: &Path, id: &str, opts: &ShimOptions) -> Result<Decision, HookError> {
    let path = bundle.join("config.json");
    let bad = |why: String| HookError::Bundle {
        path: path.clone(),
        why,
    };
    let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let decision = decide_and_edit(&mut config, &path, id, opts, &is_own_netns)?;
    if decision == Decision::NotOurs {
        return Ok(decision);
    }
    let out = serde_json::to_vec(&config).map_err(|e| bad(e.to_string()))?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&path)
            .map_err(|e| bad(e.to_string()))?
            .permissions()
            .mode()
            & 0o7777
    };
    // Durable: runc reads it right away, but a crash must not leave it half-written either.
    egret_fs::write_atomic(&path, &out, mode, true).map_err(|e| HookError::Io {
        what: "cannot rewrite",
        path: path.clone(),
        source: e,
    })?;
    Ok(decision)
}

/// The real runc: `explicit` when given, else the first executable `runc` on `path_var` that
/// is not `this_exe` (the shim may be installed as `runc` ahead of the real one).
pub fn find_runc(
    explicit: Option<&Path>,
    path_var: Option<&OsStr>,
    this_exe: &Path,
) -> Result<PathBuf, HookError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let me = std::fs::canonicalize(this_exe).unwrap_or_else(|_| this_exe.to_path_buf());
    let path_var = path_var.unwrap_or(OsStr::new(crate::sidecar::DEFAULT_PATH));
    for dir in std::env::split_paths(path_var) {
        let cand = dir.join("runc");
        let Ok(real) = std::fs::canonicalize(&cand) else {
            continue;
        };
        let executable = std::fs::metadata(&real).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        if executable && real != me {
            return Ok(cand);
        }
    }
    Err(HookError::RuncNotFound(format!(
        "no runc other than this egret on PATH {}",
        path_var.to_string_lossy()
    )))
}

/// Report a refusal where runc's callers look for it: runc's `--log` file (containerd's shim
/// reads the last error line from it, in JSON when `--log-format json`), best effort.
pub fn log_refusal(log: &(PathBuf, bool), message: &str) {
    use std::io::Write;
    let (path, json) = log;
    let line = if *json {
        // No "time": containerd parses it as RFC 3339 and takes a missing one as zero.
        format!(
            "{}\n",
            serde_json::json!({"level": "error", "msg": message})
        )
    } else {
        format!("level=error msg={message:?}\n")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn opts() -> ShimOptions {
        ShimOptions {
            hook: HookOptions::default(),
            hook_program: "/usr/bin/egret".into(),
            hook_args: s(&["--run-root", "/run/egret"]),
            hook_timeout_secs: 45,
            default_policy: None,
        }
    }

    const ID: &str = "c0ffee";

    fn config(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    const HOST_NETNS: &str = "/var/run/docker/netns/default";

    fn run(c: &mut serde_json::Value, o: &ShimOptions) -> Result<Decision, HookError> {
        decide_and_edit(c, Path::new("/b/config.json"), ID, o, &|p| p == HOST_NETNS)
    }

    #[test]
    fn containerd_and_docker_calls_are_understood() {
        // containerd's runc shim (go-runc), as Docker 20.10 and ctr make it.
        let c = RuncCall::parse(&s(&[
            "--root",
            "/run/containerd/runc/moby",
            "--log",
            "/run/containerd/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/containerd/io.containerd.runtime.v2.task/moby/abc",
            "--pid-file",
            "/run/x/init.pid",
            "--console-socket",
            "/tmp/pty.sock",
            "abc",
        ]));
        assert_eq!(c.command.as_deref(), Some("create"));
        assert_eq!(
            c.create,
            Some((
                Some(PathBuf::from(
                    "/run/containerd/io.containerd.runtime.v2.task/moby/abc"
                )),
                "abc".into()
            ))
        );
        assert_eq!(
            c.log,
            Some((PathBuf::from("/run/containerd/x/log.json"), true))
        );
        // Single dashes, `=` values, `run`, the bundle defaulting to the working directory.
        let c = RuncCall::parse(&s(&["-root=/r", "run", "-d", "--no-pivot", "id2"]));
        assert_eq!(c.create, Some((None, "id2".into())));
        assert_eq!(c.log, None);
        let c = RuncCall::parse(&s(&["create", "-b=/x", "id3"]));
        assert_eq!(c.create, Some((Some("/x".into()), "id3".into())));
        // Everything else is passed through without a look at the bundle.
        for other in [
            s(&["--root", "/r", "start", "abc"]),
            s(&["--root", "/r", "delete", "--force", "abc"]),
            s(&["state", "abc"]),
            s(&["--version"]),
            s(&[]),
        ] {
            assert_eq!(RuncCall::parse(&other).create, None, "{other:?}");
        }
    }

    #[test]
    fn a_container_without_egret_annotations_is_not_touched() {
        let mut c = config(serde_json::json!({"annotations": {"org.opencontainers.x": "y"}}));
        let before = c.clone();
        assert_eq!(run(&mut c, &opts()).unwrap(), Decision::NotOurs);
        assert_eq!(c, before);
        let mut bare = config(serde_json::json!({}));
        assert_eq!(run(&mut bare, &opts()).unwrap(), Decision::NotOurs);
    }

    #[test]
    fn an_annotated_container_gets_both_hooks_after_existing_ones() {
        let mut c = config(serde_json::json!({
            "annotations": {"io.egret.policy": "/etc/egret/p.toml"},
            "hooks": {"createRuntime": [{"path": "/other"}], "prestart": [{"path": "/p"}]},
        }));
        let d = run(&mut c, &opts()).unwrap();
        let Decision::Attach(sel) = d else { panic!() };
        assert_eq!(sel.policy, PathBuf::from("/etc/egret/p.toml"));
        assert_eq!(sel.sandbox_id, ID);
        let cr = c["hooks"]["createRuntime"].as_array().unwrap();
        assert_eq!(cr.len(), 2);
        assert_eq!(cr[0]["path"], "/other");
        assert_eq!(cr[1]["path"], "/usr/bin/egret");
        assert_eq!(
            cr[1]["args"],
            serde_json::json!([
                "egret",
                "oci-hook",
                "createRuntime",
                "--run-root",
                "/run/egret"
            ])
        );
        assert_eq!(cr[1]["timeout"], 45);
        assert_eq!(
            c["hooks"]["poststop"][0]["args"][2],
            serde_json::json!("poststop")
        );
        assert_eq!(c["hooks"]["prestart"][0]["path"], "/p");
        // A second create of the same bundle adds nothing.
        let once = c.clone();
        run(&mut c, &opts()).unwrap();
        assert_eq!(c, once);
    }

    #[test]
    fn the_default_policy_selects_unannotated_containers_but_not_over_an_annotation() {
        let o = ShimOptions {
            default_policy: Some("/etc/egret/default.toml".into()),
            ..opts()
        };
        let mut c = config(serde_json::json!({"annotations": null}));
        let Decision::Attach(sel) = run(&mut c, &o).unwrap() else {
            panic!()
        };
        assert_eq!(sel.policy, PathBuf::from("/etc/egret/default.toml"));
        assert_eq!(
            c["annotations"]["io.egret.policy"],
            "/etc/egret/default.toml"
        );
        let mut c = config(serde_json::json!({"annotations": {"io.egret.policy": "/own.toml"}}));
        run(&mut c, &o).unwrap();
        assert_eq!(c["annotations"]["io.egret.policy"], "/own.toml");
    }

    #[test]
    fn refusals_name_the_container_the_policy_and_the_cause() {
        let o = ShimOptions {
            hook: HookOptions {
                policy_dir: Some("/etc/egret/policies".into()),
                ..HookOptions::default()
            },
            ..opts()
        };
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (
                serde_json::json!({
                    "annotations": {"io.egret.policy": "/etc/egret/policies/a.toml"},
                    "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
                }),
                vec!["host networking", "/etc/egret/policies/a.toml"],
            ),
            (
                // Docker's --network host: the host's namespace, by path.
                serde_json::json!({
                    "annotations": {"io.egret.policy": "/etc/egret/policies/a.toml"},
                    "linux": {"namespaces": [{"type": "network", "path": HOST_NETNS}]},
                }),
                vec!["host networking", "/etc/egret/policies/a.toml"],
            ),
            (
                serde_json::json!({"annotations": {"io.egret.policy": "/etc/passwd"}}),
                vec![
                    "io.egret.policy",
                    "/etc/passwd",
                    "inside /etc/egret/policies",
                ],
            ),
            (
                serde_json::json!({"annotations": {"io.egret.sandbox-id": "x"}}),
                vec!["io.egret.policy", "set it"],
            ),
            (
                serde_json::json!({"annotations": {"io.egret.polcy": "/x"}}),
                vec!["unknown annotation"],
            ),
        ];
        for (extra, needles) in cases {
            let mut c = config(extra.clone());
            let before = c.clone();
            let e = run(&mut c, &o).unwrap_err().to_string();
            assert!(e.contains(ID), "names the container: {e}");
            for n in needles {
                assert!(e.contains(n), "{extra}: {e}");
            }
            assert_eq!(c, before, "a refused config is not edited");
        }
        for (bad, needle) in [
            (serde_json::json!([]), "not a JSON object"),
            (
                serde_json::json!({"annotations": {"io.egret.policy": 1}}),
                "not a string",
            ),
            (
                serde_json::json!({"annotations": {"io.egret.policy": "/etc/egret/policies/a.toml"}, "hooks": [], "linux": {"namespaces": [{"type": "network"}]}}),
                "\"hooks\" is not an object",
            ),
        ] {
            let mut c = bad;
            let e = run(&mut c, &o).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("/b/config.json"), "{e}");
        }
    }

    #[test]
    fn another_containers_namespace_by_path_is_accepted() {
        let mut c = config(serde_json::json!({
            "annotations": {"io.egret.policy": "/p.toml"},
            "linux": {"namespaces": [{"type": "network", "path": "/proc/42/ns/net"}]},
        }));
        assert!(matches!(run(&mut c, &opts()), Ok(Decision::Attach(_))));
        assert!(is_own_netns("/proc/self/ns/net"));
        assert!(!is_own_netns("/nonexistent"));
    }

    #[test]
    fn the_bundle_is_rewritten_only_for_egret_containers() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        let plain = "{ \"ociVersion\": \"1.0.2\",\n  \"linux\": {\"namespaces\": [{\"type\": \"network\"}]} }\n";
        std::fs::write(&path, plain).unwrap();
        assert_eq!(
            prepare_bundle(d.path(), ID, &opts()).unwrap(),
            Decision::NotOurs
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), plain);
        let o = ShimOptions {
            default_policy: Some("/p.toml".into()),
            ..opts()
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            prepare_bundle(d.path(), ID, &o).unwrap(),
            Decision::Attach(_)
        ));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["hooks"]["poststop"][0]["path"], "/usr/bin/egret");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let e = prepare_bundle(&d.path().join("gone"), ID, &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone/config.json"), "{e}");
    }

    #[test]
    fn the_real_runc_is_the_first_on_path_that_is_not_this_binary() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let me = d.path().join("egret");
        std::fs::write(&me, "").unwrap();
        std::fs::set_permissions(&me, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (shim_dir, noexec_dir, real_dir) =
            (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        for dir in [&shim_dir, &noexec_dir, &real_dir] {
            std::fs::create_dir(dir).unwrap();
        }
        std::os::unix::fs::symlink(&me, shim_dir.join("runc")).unwrap();
        std::fs::write(noexec_dir.join("runc"), "").unwrap();
        std::fs::write(real_dir.join("runc"), "").unwrap();
        std::fs::set_permissions(
            real_dir.join("runc"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let path = std::env::join_paths([&shim_dir, &noexec_dir, &real_dir]).unwrap();
        assert_eq!(
            find_runc(None, Some(&path), &me).unwrap(),
            real_dir.join("runc")
        );
        let only_me = std::env::join_paths([&shim_dir]).unwrap();
        let e = find_runc(None, Some(&only_me), &me)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--runc PATH"), "{e}");
        assert_eq!(
            find_runc(Some(Path::new("/opt/runc")), Some(&only_me), &me).unwrap(),
            PathBuf::from("/opt/runc")
        );
    }

    proptest::proptest! {
        /// Whatever runc is called with, the parser does not panic, and a call that is not
        /// `create`/`run` is never treated as one.
        #[test]
        fn arbitrary_runc_arguments_never_panic(
            args in proptest::collection::vec(r"-{0,2}[a-z=/]{0,8}", 0..8),
        ) {
            let c = RuncCall::parse(&args);
            if let Some(cmd) = &c.command {
                proptest::prop_assert_eq!(c.create.is_some(), cmd == "create" || cmd == "run");
            }
        }
    }
}

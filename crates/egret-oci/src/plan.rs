//! What the hook will do for a container, decided from its state, its `io.egret.*`
//! annotations and the hook's own options, without touching anything.
//!
//! Annotations are set by whoever creates the container (in Kubernetes: the pod's author),
//! while the hook runs as root: every path they name is confined to a directory the operator
//! chose when installing the hook.
use crate::{HookError, OciState};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The policy file (required: the hook is selected by it).
pub const ANN_POLICY: &str = "io.egret.policy";
/// The sandbox id (default: the container id, shortened to egret's limit).
pub const ANN_SANDBOX_ID: &str = "io.egret.sandbox-id";
/// Serve the admin API on this socket (under the run root).
pub const ANN_ADMIN_SOCKET: &str = "io.egret.admin-socket";
/// Keep runtime changes here (under the state root).
pub const ANN_STATE_DIR: &str = "io.egret.state-dir";
/// The container's handler instance slots (`egret run --max-handler-instances`), at most
/// the hook's own `--max-handler-instances`.
pub const ANN_MAX_HANDLER_INSTANCES: &str = "io.egret.max-handler-instances";
const PREFIX: &str = "io.egret.";

/// How the hook was installed (its arguments in `hooks.d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOptions {
    /// Per-container run directories are made under this one (`/run/egret`); admin sockets
    /// named by annotation must be under it too.
    pub run_root: PathBuf,
    /// When set, `io.egret.policy` must name a file under this directory.
    pub policy_dir: Option<PathBuf>,
    /// `io.egret.state-dir` must be under this directory (`/var/lib/egret`).
    pub state_root: PathBuf,
    /// Keep each container's egret log and audit events here (`ID.log`, `ID.audit.jsonl`)
    /// instead of in its run directory, which `poststop` removes.
    pub log_dir: Option<PathBuf>,
    /// The egret binary started as the sidecar (default: this one).
    pub egret: Option<PathBuf>,
    /// How long egret may take to intercept.
    pub ready_timeout: Duration,
    /// The handlers' compiled-artifact cache every sidecar shares (`egret run
    /// --handler-cache-dir`), unless `run_args` names one; `None`: every sidecar compiles its
    /// handlers at start (hundreds of milliseconds for a Rust handler, seconds for a
    /// JavaScript one, on every container start).
    pub handler_cache_dir: Option<PathBuf>,
    /// Handler instance slots of every sidecar (`egret run --max-handler-instances`), and the
    /// most an `io.egret.max-handler-instances` annotation may ask for; `None`: egret's
    /// default for both.
    pub max_handler_instances: Option<u32>,
    /// More `egret run` flags for every container (e.g. `--upstream-ca`).
    pub run_args: Vec<String>,
}

/// Where the sidecars keep compiled handlers unless the hook is told otherwise.
pub const DEFAULT_HANDLER_CACHE_DIR: &str = "/var/cache/egret/handlers";

impl Default for HookOptions {
    fn default() -> HookOptions {
        HookOptions {
            run_root: PathBuf::from("/run/egret"),
            policy_dir: None,
            state_root: PathBuf::from("/var/lib/egret"),
            log_dir: None,
            egret: None,
            ready_timeout: Duration::from_secs(30),
            handler_cache_dir: Some(PathBuf::from(DEFAULT_HANDLER_CACHE_DIR)),
            max_handler_instances: None,
            run_args: Vec::new(),
        }
    }
}

/// The sidecar to start for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The container id.
    pub container_id: String,
    /// egret's `--sandbox-id`.
    pub sandbox_id: String,
    /// egret's `--policy`.
    pub policy: PathBuf,
    /// The container's first process (its network namespace is `/proc/PID/ns/net`).
    pub pid: u32,
    /// This container's run directory.
    pub run_dir: PathBuf,
    /// egret's `--admin-socket`, from the annotation.
    pub admin_socket: Option<PathBuf>,
    /// egret's `--state-dir`, from the annotation.
    pub state_dir: Option<PathBuf>,
    /// egret's `--max-handler-instances`: the annotation's, else the hook's option.
    pub max_handler_instances: Option<u32>,
}

/// The run directory of container `id` under the options' run root.
pub fn run_dir(opts: &HookOptions, id: &str) -> Result<PathBuf, HookError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(HookError::ContainerId(id.to_string()));
    }
    Ok(opts.run_root.join(id))
}

/// The default sandbox id: the container id, cut to egret's limit (container ids are 64 hex
/// digits; 45 of them still name it uniquely).
pub fn default_sandbox_id(container_id: &str) -> String {
    container_id
        .chars()
        .take(egret_app::SANDBOX_ID_MAX)
        .collect()
}

/// Absolute, without `.`/`..`, and under `root` (compared by components, so `/run/egret2`
/// is not under `/run/egret`).
fn confined(path: &str, root: &Path) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("give an absolute path".into());
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("the path may not contain . or .. components".into());
    }
    if !p.starts_with(root) || p == root {
        return Err(format!(
            "it must be inside {} (the directory this hook was installed with)",
            root.display()
        ));
    }
    Ok(p.to_path_buf())
}

/// What a container's annotations ask of egret, decided before anything exists (no process,
/// no namespace): the part of the plan the OCI hook and the runtime shim (`egret runc`) share,
/// so that a container the shim accepts is one the hook accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// egret's `--sandbox-id`.
    pub sandbox_id: String,
    /// egret's `--policy`.
    pub policy: PathBuf,
    /// egret's `--admin-socket`, from the annotation.
    pub admin_socket: Option<PathBuf>,
    /// egret's `--state-dir`, from the annotation.
    pub state_dir: Option<PathBuf>,
    /// egret's `--max-handler-instances`: the annotation's, else the hook's option.
    pub max_handler_instances: Option<u32>,
}

/// Whether a container asks for egret at all: it carries an `io.egret.*` annotation.
pub fn wants_egret(annotations: &BTreeMap<String, String>) -> bool {
    annotations.keys().any(|k| k.starts_with(PREFIX))
}

/// The policy file an `io.egret.policy` value names: inside the hook's policy directory when
/// it has one, else an absolute path.
fn policy_path(value: &str, opts: &HookOptions) -> Result<PathBuf, String> {
    match &opts.policy_dir {
        Some(dir) => confined(value, dir),
        None => {
            let p = Path::new(value);
            if p.is_absolute() {
                Ok(p.to_path_buf())
            } else {
                Err("give an absolute path (the hook runs in the bundle directory)".into())
            }
        }
    }
}

/// An `io.egret.max-handler-instances` value. Each slot reserves address space in the
/// sidecar: the operator's option bounds what a container's author may ask for.
fn max_instances(value: &str, opts: &HookOptions) -> Result<u32, String> {
    let cap = opts
        .max_handler_instances
        .unwrap_or(egret_app::HandlerInstances::default().max);
    match value.parse::<u32>() {
        Ok(n) if (1..=cap).contains(&n) => Ok(n),
        _ => Err(format!(
            "give a number from 1 to {cap} (the hook's --max-handler-instances)"
        )),
    }
}

impl Selection {
    /// Decide from container `id`'s annotations, refusing any that cannot be used.
    pub fn decide(
        id: &str,
        annotations: &BTreeMap<String, String>,
        opts: &HookOptions,
    ) -> Result<Selection, HookError> {
        let bad = |annotation: &'static str, value: &str, why: String| HookError::Annotation {
            container: id.to_string(),
            annotation,
            value: value.to_string(),
            why,
        };
        if let Some(unknown) = annotations.keys().find(|k| {
            k.starts_with(PREFIX)
                && ![
                    ANN_POLICY,
                    ANN_SANDBOX_ID,
                    ANN_ADMIN_SOCKET,
                    ANN_STATE_DIR,
                    ANN_MAX_HANDLER_INSTANCES,
                ]
                .contains(&k.as_str())
        }) {
            return Err(HookError::UnknownAnnotation {
                container: id.to_string(),
                annotation: unknown.clone(),
            });
        }
        let ann = |k: &str| annotations.get(k).map(String::as_str);
        let policy_value = ann(ANN_POLICY).unwrap_or("");
        if policy_value.is_empty() {
            return Err(bad(
                ANN_POLICY,
                policy_value,
                "set it to the policy file egret enforces for this container".into(),
            ));
        }
        let policy =
            policy_path(policy_value, opts).map_err(|why| bad(ANN_POLICY, policy_value, why))?;
        let sandbox_id = match ann(ANN_SANDBOX_ID) {
            Some(v) => {
                egret_app::validate_sandbox_id(v)
                    .map_err(|e| bad(ANN_SANDBOX_ID, v, e.to_string()))?;
                v.to_string()
            }
            None => {
                let d = default_sandbox_id(id);
                egret_app::validate_sandbox_id(&d).map_err(|e| {
                    bad(
                        ANN_SANDBOX_ID,
                        "",
                        format!("the container id does not make one ({e}); set the annotation"),
                    )
                })?;
                d
            }
        };
        let admin_socket = ann(ANN_ADMIN_SOCKET)
            .map(|v| confined(v, &opts.run_root).map_err(|why| bad(ANN_ADMIN_SOCKET, v, why)))
            .transpose()?;
        let state_dir = ann(ANN_STATE_DIR)
            .map(|v| confined(v, &opts.state_root).map_err(|why| bad(ANN_STATE_DIR, v, why)))
            .transpose()?;
        let max_handler_instances = match ann(ANN_MAX_HANDLER_INSTANCES) {
            Some(v) => {
                Some(max_instances(v, opts).map_err(|why| bad(ANN_MAX_HANDLER_INSTANCES, v, why))?)
            }
            None => opts.max_handler_instances,
        };
        Ok(Selection {
            sandbox_id,
            policy,
            admin_socket,
            state_dir,
            max_handler_instances,
        })
    }
}

impl Plan {
    /// Decide what to start for `state`, refusing any annotation that cannot be used.
    pub fn start(state: &OciState, opts: &HookOptions) -> Result<Plan, HookError> {
        let id = &state.id;
        let run_dir = run_dir(opts, id)?;
        let Selection {
            sandbox_id,
            policy,
            admin_socket,
            state_dir,
            max_handler_instances,
        } = Selection::decide(id, &state.annotations, opts)?;
        let pid = state
            .live_pid()
            .ok_or_else(|| HookError::NoPid(id.clone()))?;
        Ok(Plan {
            container_id: id.clone(),
            sandbox_id,
            policy,
            pid,
            run_dir,
            admin_socket,
            state_dir,
            max_handler_instances,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(annotations: &[(&str, &str)]) -> OciState {
        OciState {
            oci_version: "1.0.2".into(),
            id: "a".repeat(64),
            status: "creating".into(),
            pid: Some(77),
            bundle: "/b".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn err(s: &OciState, opts: &HookOptions) -> String {
        Plan::start(s, opts).unwrap_err().to_string()
    }

    #[test]
    fn defaults_come_from_the_container() {
        let p = Plan::start(
            &state(&[(ANN_POLICY, "/etc/egret/p.toml")]),
            &HookOptions::default(),
        )
        .unwrap();
        assert_eq!(p.sandbox_id, "a".repeat(45));
        assert_eq!(p.policy, PathBuf::from("/etc/egret/p.toml"));
        assert_eq!(p.pid, 77);
        assert_eq!(
            p.run_dir,
            PathBuf::from(format!("/run/egret/{}", "a".repeat(64)))
        );
        assert_eq!((p.admin_socket, p.state_dir), (None, None));
        assert_eq!(p.max_handler_instances, None);
    }

    #[test]
    fn handler_instances_come_from_the_annotation_within_the_hooks_bound() {
        let start = |ann: Option<&str>, hook: Option<u32>| {
            let mut anns = vec![(ANN_POLICY, "/p.toml")];
            if let Some(v) = ann {
                anns.push((ANN_MAX_HANDLER_INSTANCES, v));
            }
            let o = HookOptions {
                max_handler_instances: hook,
                ..HookOptions::default()
            };
            Plan::start(&state(&anns), &o).map(|p| p.max_handler_instances)
        };
        assert_eq!(start(None, Some(64)).unwrap(), Some(64));
        assert_eq!(start(Some("8"), Some(64)).unwrap(), Some(8));
        assert_eq!(start(Some("64"), Some(64)).unwrap(), Some(64));
        assert_eq!(start(Some("1000"), None).unwrap(), Some(1000));
        for (v, hook, cap) in [
            ("65", Some(64), "1 to 64"),
            ("0", None, "1 to 1000"),
            ("1001", None, "1 to 1000"),
            ("many", None, "1 to 1000"),
        ] {
            let e = start(Some(v), hook).unwrap_err().to_string();
            assert!(
                e.contains("io.egret.max-handler-instances")
                    && e.contains(cap)
                    && e.contains("--max-handler-instances"),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn annotations_set_id_socket_and_state_dir() {
        let p = Plan::start(
            &state(&[
                (ANN_POLICY, "/etc/egret/p.toml"),
                (ANN_SANDBOX_ID, "agent-7"),
                (ANN_ADMIN_SOCKET, "/run/egret/agent-7.sock"),
                (ANN_STATE_DIR, "/var/lib/egret/agent-7"),
            ]),
            &HookOptions::default(),
        )
        .unwrap();
        assert_eq!(p.sandbox_id, "agent-7");
        assert_eq!(
            p.admin_socket,
            Some(PathBuf::from("/run/egret/agent-7.sock"))
        );
        assert_eq!(p.state_dir, Some(PathBuf::from("/var/lib/egret/agent-7")));
    }

    #[test]
    fn bad_annotations_are_refused_naming_them() {
        let o = HookOptions::default();
        for (anns, needles) in [
            (vec![], vec!["io.egret.policy", "set it"]),
            (vec![(ANN_POLICY, "")], vec!["io.egret.policy"]),
            (vec![(ANN_POLICY, "p.toml")], vec!["absolute"]),
            (
                vec![(ANN_POLICY, "/p.toml"), (ANN_SANDBOX_ID, "bad id!")],
                vec!["io.egret.sandbox-id", "\"bad id!\"", "1-45"],
            ),
            (
                vec![(ANN_POLICY, "/p.toml"), (ANN_SANDBOX_ID, &"x".repeat(46))],
                vec!["io.egret.sandbox-id", "1-45"],
            ),
            (
                vec![(ANN_POLICY, "/p.toml"), (ANN_ADMIN_SOCKET, "/etc/shadow")],
                vec!["io.egret.admin-socket", "inside /run/egret"],
            ),
            (
                vec![
                    (ANN_POLICY, "/p.toml"),
                    (ANN_ADMIN_SOCKET, "/run/egret/../../etc/x"),
                ],
                vec![".."],
            ),
            (
                vec![(ANN_POLICY, "/p.toml"), (ANN_ADMIN_SOCKET, "/run/egret2/s")],
                vec!["inside /run/egret"],
            ),
            (
                vec![(ANN_POLICY, "/p.toml"), (ANN_STATE_DIR, "/var/lib/egret")],
                vec!["io.egret.state-dir", "inside /var/lib/egret"],
            ),
            (
                vec![(ANN_POLICY, "/p.toml"), ("io.egret.polcy", "/q")],
                vec!["unknown annotation \"io.egret.polcy\""],
            ),
        ] {
            let e = err(&state(&anns), &o);
            for n in needles {
                assert!(e.contains(n), "{anns:?}: {e}");
            }
            assert!(e.contains(&"a".repeat(64)), "names the container: {e}");
        }
    }

    #[test]
    fn a_policy_dir_confines_the_policy_annotation() {
        let o = HookOptions {
            policy_dir: Some("/etc/egret/policies".into()),
            ..HookOptions::default()
        };
        let ok = Plan::start(&state(&[(ANN_POLICY, "/etc/egret/policies/a.toml")]), &o).unwrap();
        assert_eq!(ok.policy, PathBuf::from("/etc/egret/policies/a.toml"));
        for v in ["/etc/passwd", "/etc/egret/policies/../../passwd", "a.toml"] {
            let e = err(&state(&[(ANN_POLICY, v)]), &o);
            assert!(e.contains("io.egret.policy"), "{v}: {e}");
        }
    }

    #[test]
    fn other_annotations_are_left_alone() {
        let p = Plan::start(
            &state(&[(ANN_POLICY, "/p.toml"), ("io.podman.annotations.x", "y")]),
            &HookOptions::default(),
        );
        assert!(p.is_ok());
    }

    proptest::proptest! {
        /// Whatever a container's author writes, an accepted path is absolute, has no `.`/`..`
        /// and lies strictly inside the root the operator chose.
        #[test]
        fn accepted_annotation_paths_stay_inside_their_root(
            value in proptest::prop_oneof![r"[/a-z.]{0,24}", r"/run/egret[/a-z.]{0,16}"],
        ) {
            let root = Path::new("/run/egret");
            if let Ok(p) = confined(&value, root) {
                proptest::prop_assert!(p.is_absolute());
                proptest::prop_assert!(p.starts_with(root) && p != root);
                proptest::prop_assert!(!p
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::CurDir)));
                proptest::prop_assert!(!value.split('/').any(|c| c == ".."));
            }
        }

        /// The state parser never panics, and whatever it accepts has an id and a bundle.
        #[test]
        fn arbitrary_states_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Ok(s) = OciState::parse(&bytes) {
                proptest::prop_assert!(!s.id.is_empty() && !s.bundle.is_empty());
            }
        }
    }

    #[test]
    fn no_pid_and_unusable_ids_are_refused() {
        let mut s = state(&[(ANN_POLICY, "/p.toml")]);
        s.pid = None;
        assert!(err(&s, &HookOptions::default()).contains("no pid"));
        for id in ["", ".", "..", "a/b", "a b"] {
            let mut s = state(&[(ANN_POLICY, "/p.toml")]);
            s.id = id.into();
            assert!(
                err(&s, &HookOptions::default()).contains("cannot name"),
                "{id:?}"
            );
        }
    }
}

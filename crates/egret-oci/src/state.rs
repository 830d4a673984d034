//! The container state the runtime writes to a hook's stdin (OCI runtime spec, "State").
use crate::HookError;
use std::collections::BTreeMap;

/// The part of the OCI state the hook uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// The spec version the runtime follows.
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: String,
    /// The container's first process, while it exists.
    #[serde(default)]
    pub pid: Option<i64>,
    /// The bundle directory (holds `config.json`).
    pub bundle: String,
    /// The container's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The largest state accepted (a state is a few KiB; annotations are bounded by the runtime).
pub const MAX_STATE_BYTES: usize = 1 << 20;

impl OciState {
    /// Parse the state; anything that is not an OCI state is refused with what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<OciState, HookError> {
        if bytes.len() > MAX_STATE_BYTES {
            return Err(HookError::State(format!(
                "{} bytes, more than the {MAX_STATE_BYTES} a state can take",
                bytes.len()
            )));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(HookError::State("stdin is empty".into()));
        }
        let state: OciState =
            serde_json::from_slice(bytes).map_err(|e| HookError::State(e.to_string()))?;
        if state.id.is_empty() {
            return Err(HookError::State("\"id\" is empty".into()));
        }
        if state.bundle.is_empty() {
            return Err(HookError::State("\"bundle\" is empty".into()));
        }
        Ok(state)
    }

    /// The pid, if it names a process.
    pub fn live_pid(&self) -> Option<u32> {
        self.pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0)
    }
}

/// The hook stages egret acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Start the sidecar and install the CA.
    CreateRuntime,
    /// Stop the sidecar.
    Poststop,
}

impl Stage {
    /// The stage a state's status implies: `creating`/`created` before the process runs,
    /// `stopped` after. One `hooks.d` entry serves both stages with the same arguments, so
    /// this is how the hook tells them apart.
    pub fn from_status(status: &str) -> Result<Stage, HookError> {
        match status {
            "creating" | "created" => Ok(Stage::CreateRuntime),
            "stopped" => Ok(Stage::Poststop),
            other => Err(HookError::Stage(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"ociVersion":"1.0.2","id":"abc","status":"creating","pid":4242,
        "bundle":"/run/b","annotations":{"io.egret.policy":"/etc/egret/p.toml"}}"#;

    #[test]
    fn a_runtime_state_parses() {
        let s = OciState::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(s.id, "abc");
        assert_eq!(s.live_pid(), Some(4242));
        assert_eq!(s.annotations["io.egret.policy"], "/etc/egret/p.toml");
        assert_eq!(Stage::from_status(&s.status).unwrap(), Stage::CreateRuntime);
    }

    #[test]
    fn poststop_state_without_pid_or_annotations_parses() {
        let s = OciState::parse(
            br#"{"ociVersion":"1.0.2","id":"abc","status":"stopped","bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(s.live_pid(), None);
        assert!(s.annotations.is_empty());
        assert_eq!(Stage::from_status(&s.status).unwrap(), Stage::Poststop);
    }

    #[test]
    fn malformed_states_are_refused_with_the_reason() {
        for (input, needle) in [
            ("", "stdin is empty"),
            ("  \n", "stdin is empty"),
            ("not json", "expected"),
            ("[]", "expected struct"),
            (
                r#"{"id":"a","status":"creating","bundle":"/b"}"#,
                "ociVersion",
            ),
            (
                r#"{"ociVersion":"1","id":"","status":"creating","bundle":"/b"}"#,
                "\"id\" is empty",
            ),
            (
                r#"{"ociVersion":"1","id":"a","status":"creating","bundle":""}"#,
                "\"bundle\" is empty",
            ),
            (
                r#"{"ociVersion":"1","id":"a","status":"creating","bundle":"/b","pid":"x"}"#,
                "invalid type",
            ),
            (
                r#"{"ociVersion":"1","id":"a","status":"creating","bundle":"/b","annotations":{"k":1}}"#,
                "invalid type",
            ),
        ] {
            let e = OciState::parse(input.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.contains("OCI state"), "{e}");
        }
        let huge = vec![b' '; MAX_STATE_BYTES + 1];
        assert!(OciState::parse(&huge)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }

    #[test]
    fn negative_or_zero_pids_name_no_process() {
        for pid in ["0", "-1", "4294967296"] {
            let s = OciState::parse(
                format!(
                    r#"{{"ociVersion":"1","id":"a","status":"creating","bundle":"/b","pid":{pid}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            assert_eq!(s.live_pid(), None, "{pid}");
        }
    }

    #[test]
    fn running_is_no_stage_of_ours() {
        let e = Stage::from_status("running").unwrap_err().to_string();
        assert!(
            e.contains("\"running\"") && e.contains("createRuntime|poststop"),
            "{e}"
        );
    }
}

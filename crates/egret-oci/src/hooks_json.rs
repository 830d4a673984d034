//! The `hooks.d` file (podman's and CRI-O's hook configuration, version 1.0.0) that runs this
//! egret at `createRuntime` and `poststop` for containers carrying `io.egret.policy`.
use std::path::Path;

/// The hook entry for the binary `exe` called with `args` after `egret oci-hook`. One entry
/// serves both stages: the runtime passes the same arguments, the state's status tells them
/// apart. The timeout (seconds) is above the hook's own ready timeout so that the hook, not
/// the runtime, undoes a start that takes too long.
pub fn render(exe: &Path, args: &[String], timeout_secs: u64) -> String {
    let mut argv = vec!["egret".to_string(), "oci-hook".to_string()];
    argv.extend(args.iter().cloned());
    let v = serde_json::json!({
        "version": "1.0.0",
        "hook": {
            "path": exe,
            "args": argv,
            "timeout": timeout_secs,
        },
        "when": {
            "annotations": { "^io\\.egret\\.policy$": ".+" },
        },
        "stages": ["createRuntime", "poststop"],
    });
    let mut s = serde_json::to_string_pretty(&v).expect("a JSON value serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_containers_with_a_policy_at_both_stages() {
        let s = render(
            Path::new("/usr/bin/egret"),
            &["--run-root".into(), "/run/egret".into()],
            45,
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["version"], "1.0.0");
        assert_eq!(v["hook"]["path"], "/usr/bin/egret");
        assert_eq!(
            v["hook"]["args"],
            serde_json::json!(["egret", "oci-hook", "--run-root", "/run/egret"])
        );
        assert_eq!(v["hook"]["timeout"], 45);
        assert_eq!(
            v["stages"],
            serde_json::json!(["createRuntime", "poststop"])
        );
        let when = v["when"]["annotations"].as_object().unwrap();
        assert_eq!(when.len(), 1);
        assert_eq!(when["^io\\.egret\\.policy$"], ".+");
        assert!(
            s.contains(r#""^io\\.egret\\.policy$""#),
            "escaped in the file: {s}"
        );
    }
}

//! Secret values named by the policy's `[secrets]`, read from egret's own environment or files
//! (never from the sandbox). A missing one is a warning, not an error: it can be set later over
//! the admin socket, and until then a handler that needs it fails closed naming it.
use egret_policy::{CompiledPolicy, PolicyConfig, SecretSource};

/// Fill `store` with every secret `policy` names that can be read now.
pub fn load(policy: &CompiledPolicy, store: &egret_wasm::SecretStore) {
    for (name, source) in policy.secrets() {
        match read(source) {
            Ok(v) => store.set(name.clone(), v),
            Err(why) => {
                tracing::warn!(secret = %name, reason = %why, "secret is not available; handlers that need it will fail closed")
            }
        }
    }
}

/// A secret some handler is granted whose source is an environment variable that is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetEnvSecret {
    /// The secret's name.
    pub secret: String,
    /// Its environment variable.
    pub var: String,
}

/// Every secret granted to a handler of `cfg` that is read from an environment variable
/// `is_set` says is unset, each once, by name: requests that use one fail until it is set
/// at runtime. Callers decide what that means: `egret run` warns, `egret policy check`
/// reports, a sidecar started by a container runtime (whose environment is the hook's) is
/// refused.
pub fn unset_env_secrets(cfg: &PolicyConfig, is_set: impl Fn(&str) -> bool) -> Vec<UnsetEnvSecret> {
    let granted: std::collections::BTreeSet<&String> = cfg
        .handlers
        .values()
        .flat_map(|h| h.secrets.iter())
        .collect();
    granted
        .into_iter()
        .filter_map(|name| match cfg.secrets.get(name) {
            Some(SecretSource::Env(var)) if !is_set(var) => Some(UnsetEnvSecret {
                secret: name.clone(),
                var: var.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Whether this process has environment variable `var`.
pub fn env_is_set(var: &str) -> bool {
    std::env::var_os(var).is_some()
}

fn read(source: &SecretSource) -> Result<Vec<u8>, String> {
    match source {
        SecretSource::Env(var) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable {var} is not set")),
        // A trailing newline is how editors and `echo` end files, never part of a token.
        SecretSource::File(path) => std::fs::read(path)
            .map(|mut v| {
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                v
            })
            .map_err(|e| format!("cannot read {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_env_secrets_that_are_unset_are_listed() {
        let cfg = PolicyConfig::from_toml(
            r#"
[secrets]
TOK = { env = "TOK_VAR" }
SET = { env = "SET_VAR" }
FILE = { file = "/run/secrets/f" }
IDLE = { env = "IDLE_VAR" }

[handlers.a]
module = "a.wasm"
secrets = ["TOK", "SET", "FILE", "NOT_DEFINED"]

[handlers.b]
module = "b.wasm"
secrets = ["TOK"]
"#,
            "p.toml",
        )
        .unwrap();
        let unset = unset_env_secrets(&cfg, |v| v == "SET_VAR");
        assert_eq!(
            unset,
            vec![UnsetEnvSecret {
                secret: "TOK".into(),
                var: "TOK_VAR".into()
            }]
        );
        assert!(unset_env_secrets(&cfg, |_| true).is_empty());
    }

    #[test]
    fn files_lose_their_trailing_newlines_and_missing_sources_say_why() {
        let p = std::env::temp_dir().join(format!("egret-secret-{}", std::process::id()));
        std::fs::write(&p, "tok\r\n\n").unwrap();
        let src = SecretSource::File(p.to_string_lossy().into_owned());
        assert_eq!(read(&src).unwrap(), b"tok");
        std::fs::remove_file(&p).unwrap();
        assert!(read(&src).unwrap_err().contains("cannot read"));
        let e = read(&SecretSource::Env("EGRET_TEST_NO_SUCH_VAR_7".into())).unwrap_err();
        assert!(e.contains("EGRET_TEST_NO_SUCH_VAR_7 is not set"), "{e}");
    }
}

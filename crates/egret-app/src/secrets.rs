//! Secret values named by the policy's `[secrets]`, read from egret's own environment or files
//! (never from the sandbox). A missing one is a warning, not an error: it can be set later over
//! the admin socket, and until then a handler that needs it fails closed naming it.
use egret_policy::{CompiledPolicy, SecretSource};

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

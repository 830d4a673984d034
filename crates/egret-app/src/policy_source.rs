//! Where the policy comes from: the file `--policy` names (TOML, or JSON by extension), or the
//! embedded deny-all default; plus the `--resolve` pins that override `[resolve]`.
use crate::AppError;
use egret_policy::{CompiledPolicy, PolicyConfig, PolicyError, RuntimeLayer};
use sha2::Digest;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The policy used when `--policy` is not given: nothing leaves the sandbox.
pub const DEFAULT_POLICY: &str = include_str!("../../../examples/default-policy.toml");

/// The policy file as read at start.
pub struct PolicySource {
    /// The parsed file.
    pub config: PolicyConfig,
    /// sha256 (hex) of its bytes: a saved runtime state applies only to the file it grew from.
    pub sha256: String,
    /// The directory module paths are relative to.
    pub dir: PathBuf,
}

impl PolicySource {
    /// Read `path`, or take the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<PolicySource, AppError> {
        let Some(path) = path else {
            return Ok(PolicySource {
                config: PolicyConfig::from_toml(DEFAULT_POLICY, "<embedded default policy>")?,
                sha256: sha256_hex(DEFAULT_POLICY.as_bytes()),
                dir: PathBuf::from("."),
            });
        };
        let raw = std::fs::read(path).map_err(|source| AppError::PolicyRead {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PolicySource {
            config: parse_policy(path, &raw)?,
            sha256: sha256_hex(&raw),
            dir: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        })
    }
}

/// Read and parse a policy file; errors name the file (and line/column for syntax errors).
pub fn load_policy_file(path: &Path) -> Result<PolicyConfig, AppError> {
    let raw = std::fs::read(path).map_err(|source| AppError::PolicyRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse_policy(path, &raw)
}

fn parse_policy(path: &Path, raw: &[u8]) -> Result<PolicyConfig, AppError> {
    let origin = path.display().to_string();
    let src = String::from_utf8_lossy(raw);
    Ok(
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            PolicyConfig::from_json(&src, &origin)?
        } else {
            PolicyConfig::from_toml(&src, &origin)?
        },
    )
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Parse `--resolve HOST=ADDR[,ADDR]` flags (egret-policy's parser) into one (host, address)
/// pair per address.
pub fn parse_pins(items: &[String]) -> Result<Vec<(String, IpAddr)>, AppError> {
    let mut out = Vec::new();
    for item in items {
        let pins = egret_policy::parse_pin_arg(item).map_err(|e| AppError::Resolve {
            item: item.clone(),
            why: e
                .problems()
                .iter()
                .map(|p| match &p.hint {
                    Some(h) => format!("{} ({h})", p.message),
                    None => p.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        out.extend(pins);
    }
    Ok(out)
}

/// Compile a policy from its two layers plus the command line's pins (which win over
/// `[resolve]`).
pub fn compile(
    cfg: &PolicyConfig,
    rt: &RuntimeLayer,
    generation: u64,
    pins: &[(String, IpAddr)],
) -> Result<CompiledPolicy, PolicyError> {
    CompiledPolicy::compile(cfg, rt, generation)?.with_extra_pins(pins.iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_split_normalised_and_checked() {
        let pins = parse_pins(&["API.test.=10.0.0.1, [fd00::1]".into()]).unwrap();
        assert_eq!(
            pins,
            vec![
                ("api.test".to_string(), "10.0.0.1".parse().unwrap()),
                ("api.test".to_string(), "fd00::1".parse().unwrap()),
            ]
        );
        for (bad, want) in [
            ("api.test", "expected HOST=ADDR"),
            ("=10.0.0.1", "empty host name"),
            ("*.test=10.0.0.1", "plain host name"),
            ("api.test=nope", "\"nope\" is not an IP address"),
        ] {
            let e = parse_pins(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("--resolve"), "{bad}: {e}");
        }
    }

    #[test]
    fn digests_are_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_embedded_default_denies_everything() {
        let src = PolicySource::load(None).unwrap();
        let p = compile(&src.config, &RuntimeLayer::default(), 1, &[]).unwrap();
        let v = p.evaluate(&egret_policy::Destination::host("example.com", 443));
        assert!(v.is_deny());
    }
}

//! Where handler modules come from: a policy's `module = "uploaded:NAME"` names a module
//! uploaded over the admin socket, anything else a file (relative paths from the policy
//! file's directory). Start-up and every swap read them the same way.
use bytes::Bytes;
use egret_policy::PolicyConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefix of a handler `module` that names an uploaded module.
pub const UPLOADED: &str = "uploaded:";

/// A handler's module could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// `uploaded:NAME` names no uploaded module.
    #[error("handlers.{handler}.module: no uploaded module named {module:?}; upload it first (egret ctl module upload {module} FILE)")]
    NotUploaded {
        /// The handler.
        handler: String,
        /// The module name after `uploaded:`.
        module: String,
    },
    /// The module file could not be read.
    #[error("handlers.{handler}.module: cannot read module {}: {source} (the example handlers are built by scripts/build-handlers.sh)", path.display())]
    Read {
        /// The handler.
        handler: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One handler's module bytes.
#[derive(Debug, Clone)]
pub struct HandlerModule {
    /// The handler's name.
    pub handler: String,
    /// The module as the policy names it (`uploaded:NAME` or a path).
    pub module: String,
    /// Its bytes.
    pub bytes: Bytes,
    /// The policy edits its responses as they stream (`response = { mode = "stream" }`),
    /// which only components of `egret:handler@0.3.0` can.
    pub streams: bool,
}

/// Reads the modules of a policy's handlers.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSource<'a> {
    /// Relative module paths start here (the policy file's directory).
    pub policy_dir: &'a Path,
    /// Uploaded modules by name.
    pub uploaded: &'a BTreeMap<String, Bytes>,
}

impl ModuleSource<'_> {
    /// The module of every handler in `cfg`, in handler-name order.
    pub fn read(&self, cfg: &PolicyConfig) -> Result<Vec<HandlerModule>, ModuleError> {
        cfg.handlers
            .iter()
            .map(|(name, h)| {
                let bytes = match h.module.strip_prefix(UPLOADED) {
                    Some(m) => {
                        self.uploaded
                            .get(m)
                            .cloned()
                            .ok_or_else(|| ModuleError::NotUploaded {
                                handler: name.clone(),
                                module: m.to_string(),
                            })?
                    }
                    None => {
                        let path = self.policy_dir.join(&h.module);
                        Bytes::from(std::fs::read(&path).map_err(|source| ModuleError::Read {
                            handler: name.clone(),
                            path,
                            source,
                        })?)
                    }
                };
                Ok(HandlerModule {
                    handler: name.clone(),
                    module: h.module.clone(),
                    bytes,
                    streams: h
                        .response
                        .is_some_and(|r| r.mode == egret_policy::ResponseMode::Stream),
                })
            })
            .collect()
    }
}

/// Whether `cfg` has a handler running the uploaded module `name`.
pub fn uses_uploaded(cfg: &PolicyConfig, name: &str) -> bool {
    cfg.handlers
        .values()
        .any(|h| h.module.strip_prefix(UPLOADED) == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_policy::HandlerConfig;

    #[test]
    fn uploaded_names_and_relative_paths_resolve() {
        let dir = std::env::temp_dir().join(format!("egret-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wasm"), b"file").unwrap();
        let cfg = PolicyConfig {
            handlers: BTreeMap::from([
                ("a".to_string(), HandlerConfig::new("a.wasm")),
                ("b".to_string(), HandlerConfig::new("uploaded:up")),
            ]),
            ..PolicyConfig::default()
        };
        let uploaded = BTreeMap::from([("up".to_string(), Bytes::from_static(b"upl"))]);
        let src = ModuleSource {
            policy_dir: &dir,
            uploaded: &uploaded,
        };
        let got = src.read(&cfg).unwrap();
        assert_eq!(got[0].bytes, Bytes::from_static(b"file"));
        assert_eq!(got[1].bytes, Bytes::from_static(b"upl"));
        assert!(uses_uploaded(&cfg, "up") && !uses_uploaded(&cfg, "a.wasm"));

        let empty = BTreeMap::new();
        let src = ModuleSource {
            policy_dir: &dir,
            uploaded: &empty,
        };
        let e = src.read(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("handlers.b.module") && e.contains("egret ctl module upload up"),
            "{e}"
        );
        std::fs::remove_file(dir.join("a.wasm")).unwrap();
        let e = src.read(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("handlers.a.module") && e.contains("a.wasm"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

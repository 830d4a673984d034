//! `--state-dir`: what survives a restart. The accepted policy layers and generation
//! (`state.json`), uploaded modules (`modules/NAME.wasm`), runtime secrets (`secrets.json`)
//! and the handlers' key-value store (`kv.json`, with each entry's expiry) — root-only (directory 0700, files 0600), each file replaced atomically so
//! a crash leaves the old or the new version, never half of one.
use bytes::Bytes;
use egret_policy::{PolicyConfig, RuntimeLayer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The policy state a change replaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Static layer (file + admin edits).
    pub cfg: PolicyConfig,
    /// Runtime layer.
    pub runtime: RuntimeLayer,
    /// Generation in force.
    pub generation: u64,
    /// sha256 of the policy file this state started from (to detect an edited file).
    #[serde(default)]
    pub policy_file_sha256: String,
}

/// `--state-dir` could not be used or read back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created or inspected.
    #[error("cannot create --state-dir {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others could read the secrets in it.
    #[error("--state-dir {} is accessible to other users (mode {mode:o}); it holds secrets: chmod 700 it", path.display())]
    Mode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file in it could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file in it is not what egret wrote.
    #[error("corrupt {}: {reason}; remove it to start from the policy file", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

/// What `--state-dir` held at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// The saved state, if there was one.
    pub state: Option<State>,
    /// Uploaded modules by name.
    pub modules: BTreeMap<String, Bytes>,
    /// Secrets set at runtime.
    pub secrets: BTreeMap<String, String>,
    /// The handlers' key-value store.
    pub kv: Vec<egret_wasm::SavedEntry>,
}

/// The state directory of one egret.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Create `dir` (0700) if needed and refuse it if others can read it.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let create = |source| StateError::Create {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create)?;
        let mode = std::fs::metadata(dir).map_err(create)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StateError::Mode {
                path: dir.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Read back what a previous run saved. A state saved for another version of the policy
    /// file keeps its runtime layer but not its static layer (the file wins).
    pub fn restore(&self, policy_file_sha256: &str) -> Result<Restored, StateError> {
        let mut out = Restored::default();
        let state_path = self.dir.join("state.json");
        if let Some(raw) = read_if_exists(&state_path)? {
            let mut st: State = parse(&state_path, &raw)?;
            if st.policy_file_sha256 != policy_file_sha256 {
                tracing::warn!(
                    "the policy file changed since the saved state was written: using the file, keeping the saved runtime routes"
                );
                st.cfg = PolicyConfig::default();
                st.policy_file_sha256 = String::new();
            }
            out.state = Some(st);
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("modules")) {
            for e in rd.flatten() {
                let p = e.path();
                if let (Some(stem), Some("wasm")) = (
                    p.file_stem().and_then(|s| s.to_str()),
                    p.extension().and_then(|s| s.to_str()),
                ) {
                    let bytes = std::fs::read(&p).map_err(|source| StateError::Read {
                        path: p.clone(),
                        source,
                    })?;
                    out.modules.insert(stem.to_string(), Bytes::from(bytes));
                }
            }
        }
        let secrets_path = self.dir.join("secrets.json");
        if let Some(raw) = read_if_exists(&secrets_path)? {
            out.secrets = parse(&secrets_path, &raw)?;
        }
        let kv_path = self.dir.join("kv.json");
        if let Some(raw) = read_if_exists(&kv_path)? {
            out.kv = parse(&kv_path, &raw)?;
        }
        Ok(out)
    }

    /// Save the state, every uploaded module not saved yet, and the runtime secrets.
    pub fn save(
        &self,
        st: &State,
        modules: &BTreeMap<String, Bytes>,
        secrets: &BTreeMap<String, String>,
    ) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(st).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("state.json"), &json, 0o600, true)?;
        let mdir = self.dir.join("modules");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&mdir)?;
        for (name, bytes) in modules {
            let p = mdir.join(format!("{name}.wasm"));
            if !p.exists() {
                write_atomic(&p, bytes, 0o600, true)?;
            }
        }
        let json = serde_json::to_vec(secrets).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("secrets.json"), &json, 0o600, true)
    }

    /// Save the handlers' key-value store.
    pub fn save_kv(&self, entries: &[egret_wasm::SavedEntry]) -> std::io::Result<()> {
        let json = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("kv.json"), &json, 0o600, true)
    }

    /// Forget the saved copy of module `name` (a new upload replaces it at the next save).
    pub fn forget_module(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join("modules").join(format!("{name}.wasm")));
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, raw: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(raw).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub use egret_fs::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("egret-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saved_state_comes_back_and_files_are_private() {
        let d = scratch("roundtrip");
        let sd = StateDir::open(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let st = State {
            cfg: PolicyConfig {
                internet: true,
                ..PolicyConfig::default()
            },
            runtime: RuntimeLayer::default(),
            generation: 7,
            policy_file_sha256: "abc".into(),
        };
        let modules = BTreeMap::from([("m".to_string(), Bytes::from_static(b"\0asm"))]);
        let secrets = BTreeMap::from([("T".to_string(), "v".to_string())]);
        sd.save(&st, &modules, &secrets).unwrap();
        for f in ["state.json", "secrets.json", "modules/m.wasm"] {
            let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let r = sd.restore("abc").unwrap();
        let back = r.state.unwrap();
        assert_eq!(back.generation, 7);
        assert!(back.cfg.internet);
        assert_eq!(r.modules, modules);
        assert_eq!(r.secrets, secrets);
        // another policy file: its static layer is not restored
        let r = sd.restore("other").unwrap();
        assert!(!r.state.unwrap().cfg.internet);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_kv_store_comes_back_with_its_expiry() {
        let d = scratch("kv");
        let sd = StateDir::open(&d).unwrap();
        let kv = egret_wasm::KvStore::new();
        kv.set("sbx", "count", "41").unwrap();
        kv.set_with_ttl("sbx", "token", "t", Some(3_600_000))
            .unwrap();
        sd.save_kv(&kv.snapshot()).unwrap();
        let mode = std::fs::metadata(d.join("kv.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let r = sd.restore("x").unwrap();
        let back = egret_wasm::KvStore::new();
        back.restore(r.kv).unwrap();
        assert_eq!(back.incr("sbx", "count", 1, None).unwrap(), 42);
        assert!(back.get("sbx", "token").is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_open_directory_and_a_corrupt_state_are_refused_with_the_fix() {
        let d = scratch("refused");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = StateDir::open(&d).unwrap_err().to_string();
        assert!(
            e.contains("accessible to other users") && e.contains("chmod 700"),
            "{e}"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(d.join("state.json"), "{not json").unwrap();
        let e = StateDir::open(&d)
            .unwrap()
            .restore("x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("corrupt") && e.contains("state.json") && e.contains("remove it"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_writes_replace_whole_files_with_the_mode_asked() {
        let d = scratch("atomic");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("f");
        write_atomic(&p, b"one", 0o600, false).unwrap();
        write_atomic(&p, b"two", 0o644, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! The on-disk cache of compiled handler components ([`HostConfig::cache_dir`]).
//!
//! Compiling a component with cranelift is the slow part of loading a handler; loading its
//! compiled artifact is much cheaper. The cache keeps one file per component, named after the
//! component's sha256 and the engine's compatibility hash, so a restarted egret starts its
//! handlers without compiling them again and an upgraded one never loads an artifact it
//! cannot run.
//!
//! Loading an artifact runs native code without validation, so the directory and every file
//! in it must be writable only by the egret process's user: both are checked before use.
//!
//! [`HostConfig::cache_dir`]: crate::HostConfig::cache_dir

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

use crate::WasmError;

/// Mode of the cache directory: only its owner may list or write it.
const DIR_MODE: u32 = 0o700;
/// Mode of an artifact file: only its owner may read or write it.
const FILE_MODE: u32 = 0o600;

/// Creates the cache directory if need be and refuses one another user could write to. Runs
/// before the engine exists, so a bad directory fails start-up early.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), WasmError> {
    let err = |reason: String| WasmError::CacheDir {
        path: dir.to_owned(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let uid = process_uid().map_err(|e| err(format!("cannot determine the process uid: {e}")))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("is not a directory (symlinks are not followed)".into()));
    }
    check_trusted(dir, &meta, uid).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| err(format!("cannot set mode {DIR_MODE:04o}: {e}")))?;
    Ok(())
}

/// The uid owning this process (`/proc/self` belongs to the effective uid).
fn process_uid() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// Refuses paths another user could have written (see
/// [`HostConfig::cache_dir`](crate::HostConfig::cache_dir)).
fn check_trusted(path: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), String> {
    if meta.uid() != uid {
        return Err(format!(
            "{} is owned by uid {}, not by the egret process (uid {uid})",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// A directory already checked by [`prepare_dir`], for artifacts of one engine.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    /// The engine's compatibility hash, part of every artifact's name.
    compat_tag: String,
}

impl ArtifactCache {
    /// The cache in `dir` (checked by [`prepare_dir`]) for artifacts `engine` can run.
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> ArtifactCache {
        let compat_tag = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        ArtifactCache { dir, compat_tag }
    }

    /// Where the artifact of the component with this sha256 lives.
    fn path(&self, sha256_hex: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256_hex}-{}.cwasm", self.compat_tag))
    }

    /// The cached artifact of the component with this sha256, if there is a usable one. An
    /// unusable file is removed so the next compile can replace it.
    pub(crate) fn load(&self, engine: &Engine, sha256_hex: &str) -> Option<Component> {
        let path = self.path(sha256_hex);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        let uid = process_uid().ok()?;
        if !meta.is_file() || check_trusted(&path, &meta, uid).is_err() {
            tracing::warn!(path = %path.display(), "ignoring untrusted compiled artifact");
            return None;
        }
        // SAFETY: the cache directory is owned by this process's user and not
        // writable by anyone else (checked in `prepare_dir` and for the file
        // above), and only `store` writes artifacts there, so the file is a
        // `Component::serialize` output of a compatible engine (the name
        // carries the engine's compatibility hash, and `deserialize_file`
        // checks it again).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable compiled artifact: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the artifact of `component`; a failure is logged and otherwise ignored (the
    /// next start compiles again).
    pub(crate) fn store(&self, sha256_hex: &str, component: &Component) {
        let path = self.path(sha256_hex);
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                // Readers never see a partial artifact; a failed write leaves nothing behind.
                egret_fs::write_atomic(&path, &bytes, FILE_MODE, true).map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "could not write compiled artifact: {e}");
        }
    }
}

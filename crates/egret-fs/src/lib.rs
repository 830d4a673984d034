//! How egret writes a file that someone else may read at any moment (state, compiled handler
//! artifacts, built components, ready files): a temporary file in the same directory, created
//! with its final mode, written, optionally synced, then renamed over the target. Readers see
//! the old content or the new, never a partial file, and a failed write leaves nothing behind.
//! Every crate that writes such files calls [`write_atomic`], so the rule has one owner.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replaces `path` with `content` atomically; the file has `mode` from the moment it exists
/// (a secret-bearing file is never briefly world-readable). `durable` syncs the data before the
/// rename, for files that must survive a crash (state, caches); files that only mean something
/// while this process runs (ready file, this run's CA) skip the fsync, which costs milliseconds
/// of start-up on ext4. The temporary file's name is random (`.egret-*`), so concurrent writers
/// of the same target never write into each other's temporary file.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".egret-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(content)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"first", 0o600, true).unwrap();
        write_atomic(&p, b"second", 0o640, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"kept", 0o600, false).unwrap();
        // A directory where the file should go: the rename fails, the old content stays.
        let blocked = d.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o600, false).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}

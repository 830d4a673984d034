//! Making the container trust its sandbox CA: the CA is appended to the trust bundles found
//! in the container's root filesystem, before its process starts.
//!
//! Why the root filesystem and not environment variables: at `createRuntime` the runtime has
//! already read the process's environment, so a hook cannot set `SSL_CERT_FILE` and friends;
//! and a bundle in the image's usual place is what curl, OpenSSL, Python, Go and most other
//! clients read without being told. (Node reads its own compiled-in roots unless
//! `NODE_EXTRA_CA_CERTS` is set: the container's author sets it to the bundle path.)
//!
//! The root filesystem belongs to the image, which may be hostile: every path is resolved
//! with `openat2(RESOLVE_IN_ROOT)`, so a symlink in it (`/etc/ssl/certs/x -> /etc/shadow`)
//! resolves inside the root filesystem, never to the host; only regular files are edited.
use crate::HookError;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Trust bundles of the common distributions, relative to the root filesystem: Debian and
/// Ubuntu, Alpine; Fedora, RHEL; openSUSE; and the OpenSSL default some images use.
pub const BUNDLES: [&str; 4] = [
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/ssl/ca-bundle.pem",
    "etc/ssl/cert.pem",
];

const BEGIN: &str = "# egret sandbox CA begin";
const END: &str = "# egret sandbox CA end";
/// A bundle larger than this is not a trust bundle.
const MAX_BUNDLE: u64 = 16 << 20;

/// The root filesystem named by `<bundle>/config.json` (`root.path`, relative to the bundle).
pub fn rootfs_of_bundle(bundle: &Path) -> Result<PathBuf, HookError> {
    let path = bundle.join("config.json");
    let bad = |why: String| HookError::Bundle {
        path: path.clone(),
        why,
    };
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let root = v["root"]["path"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("it has no root.path".into()))?;
    Ok(bundle.join(root))
}

/// `bundle` with any earlier egret CA removed and `ca_pem` appended, between markers (a
/// restarted container gets the new CA instead of a growing list of dead ones).
pub fn with_ca(bundle: &str, container: &str, ca_pem: &str) -> String {
    let mut out = String::with_capacity(bundle.len() + ca_pem.len() + 128);
    let mut skipping = false;
    for line in bundle.split_inclusive('\n') {
        let t = line.trim_end();
        if t.starts_with(BEGIN) {
            skipping = true;
        } else if skipping && t == END {
            skipping = false;
        } else if !skipping {
            out.push_str(line);
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{BEGIN} (container {container})\n"));
    out.push_str(ca_pem.trim_end());
    out.push('\n');
    out.push_str(END);
    out.push('\n');
    out
}

/// Append the CA to every trust bundle of [`BUNDLES`] present in `rootfs` (each file once,
/// however many of the names lead to it). Returns the names edited; none when the image has
/// no bundle (its TLS clients then trust nothing egret presents: they fail, closed).
pub fn install_ca(rootfs: &Path, container: &str, ca_pem: &str) -> Result<Vec<String>, HookError> {
    let fail = |bundle: &str, why: String| HookError::Trust {
        container: container.to_string(),
        rootfs: rootfs.to_path_buf(),
        bundle: bundle.to_string(),
        why,
    };
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("/", format!("cannot open the root filesystem: {e}")))?;
    let mut seen = Vec::new();
    let mut edited = Vec::new();
    for name in BUNDLES {
        let fd = match rustix::fs::openat2(
            &root,
            name,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => continue,
            Err(e) => return Err(fail(name, e.to_string())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| fail(name, e.to_string()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(fail(name, "it is not a regular file".into()));
        }
        if st.st_size < 0 || st.st_size as u64 > MAX_BUNDLE {
            return Err(fail(name, format!("it is larger than {MAX_BUNDLE} bytes")));
        }
        let key = (st.st_dev, st.st_ino);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        // Reopened for writing through the descriptor resolved above: the same file, with no
        // second path walk an image could race.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| fail(name, e.to_string()))?;
        let mut text = String::new();
        Read::by_ref(&mut f)
            .take(MAX_BUNDLE + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(name, format!("cannot read it as text: {e}")))?;
        let new = with_ca(&text, container, ca_pem);
        let write = |f: &mut std::fs::File| -> std::io::Result<()> {
            f.seek(std::io::SeekFrom::Start(0))?;
            f.set_len(0)?;
            f.write_all(new.as_bytes())?;
            f.sync_all()
        };
        write(&mut f).map_err(|e| fail(name, e.to_string()))?;
        edited.push(format!("/{name}"));
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_ca_is_appended_once_and_replaced_on_restart() {
        let once = with_ca("roots\n", "c1", CA);
        assert!(once.starts_with("roots\n# egret sandbox CA begin (container c1)\n"));
        assert!(once.ends_with("-----END CERTIFICATE-----\n# egret sandbox CA end\n"));
        let other = CA.replace("AAA", "BBB");
        let twice = with_ca(&once, "c1", &other);
        assert_eq!(twice, with_ca("roots\n", "c1", &other));
        assert!(!twice.contains("AAA"));
        assert_eq!(with_ca("roots", "c", CA), with_ca("roots\n", "c", CA));
    }

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/ssl/certs")).unwrap();
        d
    }

    #[test]
    fn every_bundle_present_gets_it_once() {
        let d = rootfs();
        let deb = d.path().join("etc/ssl/certs/ca-certificates.crt");
        std::fs::write(&deb, "roots\n").unwrap();
        // Alpine-style alias to the same file: edited once.
        std::os::unix::fs::symlink(
            "certs/ca-certificates.crt",
            d.path().join("etc/ssl/cert.pem"),
        )
        .unwrap();
        let edited = install_ca(d.path(), "c1", CA).unwrap();
        assert_eq!(edited, ["/etc/ssl/certs/ca-certificates.crt"]);
        let text = std::fs::read_to_string(&deb).unwrap();
        assert_eq!(text, with_ca("roots\n", "c1", CA));
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_rootfs_never_on_the_host() {
        let d = rootfs();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "host file\n").unwrap();
        // An image pointing its bundle at a host path: resolved inside the rootfs, where that
        // path does not exist.
        std::os::unix::fs::symlink(
            outside.path(),
            d.path().join("etc/ssl/certs/ca-certificates.crt"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../../../../../..", d.path().join("etc/ssl/up")).unwrap();
        std::os::unix::fs::symlink(
            format!("up{}", outside.path().display()),
            d.path().join("etc/ssl/cert.pem"),
        )
        .unwrap();
        let edited = install_ca(d.path(), "c1", CA).unwrap();
        assert!(edited.is_empty(), "{edited:?}");
        assert_eq!(
            std::fs::read_to_string(outside.path()).unwrap(),
            "host file\n"
        );
    }

    #[test]
    fn a_symlink_within_the_rootfs_is_followed_there() {
        let d = rootfs();
        std::fs::create_dir_all(d.path().join("etc/pki/tls/certs")).unwrap();
        let real = d.path().join("etc/pki/tls/certs/ca-bundle.crt");
        std::fs::write(&real, "rh roots\n").unwrap();
        std::os::unix::fs::symlink(
            "/etc/pki/tls/certs/ca-bundle.crt",
            d.path().join("etc/ssl/certs/ca-certificates.crt"),
        )
        .unwrap();
        let edited = install_ca(d.path(), "c1", CA).unwrap();
        assert_eq!(edited, ["/etc/ssl/certs/ca-certificates.crt"]);
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            with_ca("rh roots\n", "c1", CA)
        );
    }

    #[test]
    fn a_bundle_that_is_not_a_file_is_refused() {
        let d = rootfs();
        std::fs::create_dir(d.path().join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        let e = install_ca(d.path(), "c1", CA).unwrap_err().to_string();
        assert!(
            e.contains("ca-certificates.crt") && e.contains("not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn the_bundle_config_names_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        assert_eq!(rootfs_of_bundle(d.path()).unwrap(), d.path().join("rootfs"));
        std::fs::write(
            d.path().join("config.json"),
            r#"{"root":{"path":"/abs/merged"}}"#,
        )
        .unwrap();
        assert_eq!(
            rootfs_of_bundle(d.path()).unwrap(),
            PathBuf::from("/abs/merged")
        );
        std::fs::write(d.path().join("config.json"), r#"{}"#).unwrap();
        let e = rootfs_of_bundle(d.path()).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("root.path"), "{e}");
    }
}

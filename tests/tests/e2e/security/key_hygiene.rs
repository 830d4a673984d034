//! The CA's private key never reaches a file, and no leaf is minted for a name egret does not
//! intercept (denied, unlisted, pass-through).

use super::{py, stop_and_leaf_stats};
use egret_e2e::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files under `root` (not under `skip`, not in build directories) modified since `since`
/// whose content holds a PEM private key.
fn files_with_private_keys(
    root: &Path,
    skip: &[PathBuf],
    since: std::time::SystemTime,
    out: &mut Vec<PathBuf>,
) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) || p.ends_with("target") {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files_with_private_keys(&p, skip, since, out);
        } else if ft.is_file()
            && e.metadata()
                .map(|m| m.len() < 16 << 20 && m.modified().is_ok_and(|t| t >= since))
                .unwrap_or(false)
        {
            if let Ok(b) = std::fs::read(&p) {
                if b.windows(11).any(|w| w == b"PRIVATE KEY") {
                    out.push(p);
                }
            }
        }
    }
}

#[test]
fn the_ca_key_is_never_written_and_no_leaf_is_minted_for_names_not_intercepted() {
    let since = std::time::SystemTime::now() - Duration::from_secs(1);
    let topo = Topology::new(SandboxNet::LoOnly);
    let (_up, pki) = Upstream::start_tls(&topo, &["pinned.test"]);
    let pkidir = pki.ca.parent().unwrap().to_path_buf();
    let policy = write(
        &topo,
        "policy.toml",
        r#"
internet = false
intercept_https = true
allowed_hosts = ["pinned.test"]
denied_hosts = ["denied.test"]
passthrough_hosts = ["pinned.test"]
[resolve]
"pinned.test" = "10.200.0.2"
"#,
    );
    let state = topo.tmp.path("state");
    let ca = topo.tmp.path("ca.pem").to_string_lossy().into_owned();
    let bundle = topo.tmp.path("bundle.pem").to_string_lossy().into_owned();
    let sock = topo.tmp.path("admin.sock").to_string_lossy().into_owned();
    let mut egret = Egret::start(
        &topo,
        "sec-ca",
        &[
            "--policy",
            &policy,
            "--ca-out",
            &ca,
            "--ca-bundle-out",
            &bundle,
            "--admin-socket",
            &sock,
            "--state-dir",
            state.to_str().unwrap(),
            "--handler-cache-dir",
            topo.tmp.path("hcache").to_str().unwrap(),
        ],
    )
    .expect("egret starts");
    let script = include_str!("../../../clients/handshakes_trusting_egret_ca.py");
    let out = py(&topo, script, &[&ca]);
    eprintln!("{out}");
    assert!(!out.contains("HANDSHAKE-WITH-EGRET-CA"), "{out}");
    // CA file and bundle carry certificates only
    for f in [&ca, &bundle] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains("BEGIN CERTIFICATE") && !text.contains("PRIVATE KEY"));
    }
    let (mints, _) = stop_and_leaf_stats(&mut egret);
    assert_eq!(
        mints, 0,
        "a leaf was minted for a name that is not intercepted"
    );
    // no file egret could have written (its scratch, state and cache dirs, /tmp, /run/egret)
    // holds a private key; other tests' dirs (with their upstream keys) and ours are skipped
    let mut found = Vec::new();
    files_with_private_keys(
        &topo.tmp.0,
        std::slice::from_ref(&pkidir),
        since,
        &mut found,
    );
    let others: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("egret-e2e-"))
        })
        .collect();
    files_with_private_keys(&std::env::temp_dir(), &others, since, &mut found);
    files_with_private_keys(Path::new("/run/egret"), &[], since, &mut found);
    assert!(found.is_empty(), "private keys on disk: {found:?}");
}

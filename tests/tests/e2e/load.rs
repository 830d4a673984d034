//! The suite on a saturated machine. A sidecar host is busy by definition: a client that takes
//! long between `connect()` and its first bytes, or a slow handshake, must be served exactly as
//! on an idle host (classification decides by the bytes, never by a clock), so every other
//! test of this binary must pass while busy loops hold every core.

use egret_e2e::*;
use std::time::{Duration, Instant};

/// Set in the inner run, so the test does not start itself again.
const INNER: &str = "EGRET_E2E_INNER_UNDER_LOAD";
/// The inner run is killed after this long (the suite takes ~2 minutes idle, ~4 loaded).
const BOUND: Duration = Duration::from_secs(15 * 60);

#[test]
fn the_whole_suite_passes_while_every_core_is_busy() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    require_root();
    let tmp = TempDir::new(&format!("load-{}", unique_id()));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<Proc> = (0..cores)
        .map(|i| {
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", "while :; do :; done"]);
            spawn(cmd, &tmp.0, &format!("hog{i}"))
        })
        .collect();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--skip",
        "load::the_whole_suite_passes_while_every_core_is_busy",
        "--test-threads",
        "4",
    ]);
    cmd.env(INNER, "1");
    let prefix = format!("egl{}", unique_id());
    cmd.env(NS_PREFIX_VAR, &prefix);
    let mut suite = spawn(cmd, &tmp.0, "suite");
    let started = Instant::now();
    let status = suite.wait_timeout(BOUND);
    drop(hogs);
    if status.is_none() {
        // Killed, the inner run cannot clean up after its tests: do it here.
        let _ = suite.child.kill();
        let _ = suite.child.wait();
        remove_namespaces(&prefix);
    }
    let out = suite.output();
    let summary = out
        .lines()
        .filter(|l| l.starts_with("test result:") || l.contains("FAILED") || l.contains("panicked"))
        .collect::<Vec<_>>()
        .join("\n");
    let status = status.unwrap_or_else(|| {
        panic!("the suite did not finish within {BOUND:?} under load:\n{summary}")
    });
    assert!(
        status.success(),
        "the suite failed under CPU load ({:?}):\n{summary}\n\n{out}",
        started.elapsed()
    );
    assert!(out.contains("test result: ok."), "{out}");
    eprintln!(
        "suite under load on {cores} busy cores: {:?}; {summary}",
        started.elapsed()
    );
}

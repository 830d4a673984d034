//! What a result file was measured on: the commit, the build profile of the binaries and the
//! machine, so figures from different runs are never compared unknowingly.

use std::process::Command;

/// The `run` object of the bench's JSON output.
pub(crate) fn run_info() -> serde_json::Value {
    serde_json::json!({
        "commit": git(&["rev-parse", "HEAD"]),
        "dirty": git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        // The bench runs the egret binaries that sit beside it, built by the same cargo profile.
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "bin_dir": egret_e2e::bin_dir().display().to_string(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": cpuinfo_model(),
        "mem_total_kib": meminfo_total_kib(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}

/// Asked in the binaries' directory (inside the checkout's target dir), so the answer is the
/// checkout that built them, wherever the bench was started from.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(egret_e2e::bin_dir())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cpuinfo_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn meminfo_total_kib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

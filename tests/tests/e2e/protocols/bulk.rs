//! Bulk transfer: 1 GiB up (HTTP/1.1, chunked from a pipe) and down (h2) through the injecting
//! handler, byte-identical, while egret's peak memory stays flat.

use super::setup;
use egret_e2e::{proc_status_kib, wait_until};
use std::time::Duration;

/// Writes 1 GiB of numbered 1 MiB blocks to stdout, then "SHA256 LEN" to stderr.
const GIB_SOURCE: &str = include_str!("../../../clients/gib_source.py");

/// Peak and current resident set of a process, in KiB (VmHWM, VmRSS).
fn rss_kib(pid: u32) -> (u64, u64) {
    (proc_status_kib(pid, "VmHWM"), proc_status_kib(pid, "VmRSS"))
}

#[test]
fn one_gib_upload_and_download_stream_through_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    // The bound is on memory only: bodies are streamed, so egret's peak must not grow with
    // the transfer size (a buffered GiB would show as ~1 GiB here).
    const PEAK_LIMIT_KIB: u64 = 96 * 1024;
    let env = setup("proto-gib", &[]);
    let pid = env.egret.proc.child.id();
    let (hwm0, _) = rss_kib(pid);

    // Upload: HTTP/1.1, chunked from a pipe, through the injecting handler.
    let gen_out = env.topo.tmp.path("gen.txt");
    let o = env.topo.in_sandbox(
        "bash",
        &[
            "-c",
            r#"set -o pipefail; python3 -c "$1" 2>"$2" | curl -sS --max-time 300 --cacert "$3" --http1.1 -T - -w ' %{speed_upload}' https://api.test/upload"#,
            "gib-upload",
            GIB_SOURCE,
            gen_out.to_str().unwrap(),
            &env.ca,
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        env.egret.logs()
    );
    let sent = std::fs::read_to_string(&gen_out).unwrap();
    let (answer, speed) = out.rsplit_once(' ').unwrap();
    assert_eq!(answer.trim(), sent.trim(), "the upstream got other bytes");
    assert!(sent.trim().ends_with(&format!(" {GIB}")), "{sent}");
    let up_mib_s = speed.trim().parse::<f64>().unwrap() / (1 << 20) as f64;
    let (hwm1, rss1) = rss_kib(pid);

    // Download over h2: the upstream's deterministic stream, hashed on arrival in the sandbox.
    let o = env.topo.in_sandbox(
        "bash",
        &[
            "-c",
            r#"set -o pipefail; curl -sS --max-time 300 --cacert "$1" --http2 -w '%{speed_download} %{http_version}' -o >(sha256sum >"$2") https://api.test/bytes/1073741824"#,
            "gib-download",
            &env.ca,
            env.topo.tmp.path("down.sha").to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (speed, version) = out.trim().split_once(' ').unwrap();
    assert_eq!(version, "2", "curl did not get h2 from egret");
    let down_mib_s = speed.parse::<f64>().unwrap() / (1 << 20) as f64;
    let (code, want, err) = env.curl(&["https://api.test/sha/1073741824"]);
    assert_eq!(code, 0, "{err}");
    // sha256sum runs in a process substitution: wait for it to write
    let sha_file = env.topo.tmp.path("down.sha");
    let mut got = String::new();
    wait_until(Duration::from_secs(30), || {
        got = std::fs::read_to_string(&sha_file).unwrap_or_default();
        got.contains(' ')
    });
    assert_eq!(
        got.split_whitespace().next(),
        want.split_whitespace().next(),
        "download hash: {got} vs upstream {want}"
    );
    let (hwm2, rss2) = rss_kib(pid);
    eprintln!(
        "1 GiB through egret (debug build): upload {up_mib_s:.0} MiB/s (h1), download \
         {down_mib_s:.0} MiB/s (h2); egret VmHWM {hwm0} KiB at start, {hwm1} after upload, \
         {hwm2} after download (VmRSS {rss1} / {rss2} KiB)"
    );
    assert!(
        hwm2 < PEAK_LIMIT_KIB,
        "egret peak RSS {hwm2} KiB (start {hwm0}, after upload {hwm1}): bodies are buffered"
    );
    // both transfers went through the injecting handler
    let log = env.up.access_log();
    assert!(
        log.lines()
            .any(|l| l.contains("PUT /upload") && l.contains("x-auth-token=present")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("GET /bytes/1073741824") && l.contains("x-auth-token=present")),
        "{log}"
    );
}

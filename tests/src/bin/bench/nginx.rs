//! The reference row: Debian's nginx as a TLS-terminating reverse proxy doing the same
//! interception work as egret's bench route (TLS toward the client with a static leaf, TLS to
//! the upstream verified against its CA, one header set on every request), in a namespace of
//! its own wired to the same upstream. It does not do what makes egret egret (no policy, no
//! handler sandbox, no audit log, no per-host leaf): it is the C lower bound of the two TLS legs
//! and the header edit.

use egret_e2e::*;
use std::path::Path;
use std::time::Duration;

/// The header and value nginx sets, the same as the bench policy's `inject-header`.
const HEADER: &str = "x-auth-token";

/// nginx (master + one worker per core) in `ns`, on 127.0.0.1:80 and :443 (h2 and http/1.1)
/// of that namespace; stopped with the namespace.
pub(crate) struct Nginx {
    proc: Proc,
}

impl Nginx {
    /// Start nginx in `ns`, proxying to the upstream at `upstream` (an address of the upstream
    /// namespace reachable from `ns`) with `token` in [`HEADER`]; `pki` is the upstream's: its
    /// leaf (which names `allowed.test`) serves the client side, its CA verifies the upstream.
    pub(crate) fn start(
        ns: &Netns,
        dir: &Path,
        upstream: &str,
        pki: &UpstreamPki,
        token: &str,
    ) -> Nginx {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix).unwrap();
        let p = prefix.display();
        let conf = config(&prefix, upstream, pki, token);
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = ns.cmd("nginx");
        cmd.args(["-p", &p.to_string(), "-c", conf_path.to_str().unwrap()]);
        let proc = spawn(cmd, &prefix, "nginx");
        let nginx = Nginx { proc };
        let up = wait_until(Duration::from_secs(10), || {
            ns.run(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "http://127.0.0.1/echo",
                    "-H",
                    "Host: allowed.test",
                ],
            )
            .status
            .success()
        });
        assert!(
            up,
            "nginx did not come up in {}: {}\n{}",
            ns.name,
            nginx.proc.output(),
            std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
        );
        nginx
    }

    /// The master's pid and its workers'.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let master = self.proc.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    /// CPU seconds (utime + stime) of the master and its workers so far.
    pub(crate) fn cpu_secs(&self) -> f64 {
        self.pids().into_iter().map(proc_cpu_secs).sum()
    }

    /// Peak RSS (VmHWM) of the master and its workers, summed, in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.pids()
            .into_iter()
            .map(|p| proc_status_kib(p, "VmHWM"))
            .sum()
    }
}

/// The configuration: both listeners on loopback, TLS to the upstream verified against its CA,
/// [`HEADER`] set to `token` on every request, temp files and logs under `prefix`.
fn config(prefix: &Path, upstream: &str, pki: &UpstreamPki, token: &str) -> String {
    let p = prefix.display();
    format!(
        r#"
daemon off;
master_process on;
worker_processes auto;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_requests 1000000;
    upstream up_tls {{ server {upstream}:443; keepalive 128; }}
    upstream up_http {{ server {upstream}:80; keepalive 128; }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header {HEADER} "{token}";
    server {{
        listen 127.0.0.1:443 ssl http2;
        # nginx 1.22 (Debian 12) offers TLS 1.2 only by default; egret offers 1.3, and a
        # reconnect that resumes costs an X25519 exchange on 1.3 but none on 1.2.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass https://up_tls;
            proxy_ssl_server_name on;
            proxy_ssl_name $host;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_session_reuse on;
        }}
    }}
    server {{
        listen 127.0.0.1:80;
        location / {{ proxy_pass http://up_http; }}
    }}
}}
"#,
        cert = pki.cert.display(),
        key = pki.key.display(),
        ca = pki.ca.display(),
    )
}

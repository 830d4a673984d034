//! What the command inside `egret exec` is given to trust the sandbox CA and use egret's
//! resolver: which system files are covered (bind mounts in its mount namespace) and which
//! environment variables point at the bundle. Pure: the helper does the mounting.
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

/// The variables that curl, OpenSSL (and Go, Ruby), Python requests, Node, git, pip, the AWS
/// SDKs, cargo and Deno read a CA bundle from. Node's adds to its own roots; the others
/// replace the system store, so the bundle holds the system roots as well.
pub(super) const CA_ENV: [&str; 9] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
];

/// The proxy variables `--proxy-env` sets, in both spellings clients look for.
pub(super) const PROXY_ENV: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// The resolver configuration bound over `/etc/resolv.conf`: egret's DNS answers on
/// 127.0.0.1 (every udp/53 datagram is redirected to it anyway; this makes it the only one
/// tried, without the timeouts of unreachable ones).
pub(super) const RESOLV_CONF: &str =
    "# egret exec: the sandbox's resolver is egret\nnameserver 127.0.0.1\noptions edns0\n";

/// The system trust bundles (absolute paths) that exist, out of the common distributions'
/// (`egret_oci::rootfs::BUNDLES`); `exists` is asked for each.
pub(super) fn bundles_present(exists: impl Fn(&str) -> bool) -> Vec<String> {
    egret_oci::rootfs::BUNDLES
        .iter()
        .map(|p| format!("/{p}"))
        .filter(|p| exists(p))
        .collect()
}

/// The command's environment: the caller's, with every [`CA_ENV`] variable set to `bundle`
/// and, with `proxy` (`--proxy-env`), the [`PROXY_ENV`] variables set to it and `NO_PROXY`
/// empty: nothing bypasses egret, not even loopback (the caller's `NO_PROXY` could name
/// anything, `*` included), and egret's policy decides about loopback addresses as about any
/// other. Variables are kept in the caller's order; ones egret sets come last.
pub(super) fn command_env(
    outer: impl IntoIterator<Item = (OsString, OsString)>,
    bundle: &str,
    proxy: Option<&str>,
) -> Vec<CString> {
    let mut set: Vec<(&str, String)> = CA_ENV.iter().map(|k| (*k, bundle.to_string())).collect();
    if let Some(url) = proxy {
        set.extend(PROXY_ENV.iter().map(|k| (*k, url.to_string())));
        set.push(("NO_PROXY", String::new()));
        set.push(("no_proxy", String::new()));
    }
    let mut env: Vec<CString> = outer
        .into_iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| k.as_bytes() == s.as_bytes()))
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.extend(
        set.into_iter()
            .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()),
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)], proxy: Option<&str>) -> Vec<String> {
        command_env(
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            "/etc/ssl/certs/ca-certificates.crt",
            proxy,
        )
        .into_iter()
        .map(|c| c.into_string().unwrap())
        .collect()
    }

    #[test]
    fn every_ca_variable_points_at_the_bundle_and_the_rest_is_kept() {
        let e = env(&[("HOME", "/home/a"), ("SSL_CERT_FILE", "/mine.pem")], None);
        assert_eq!(e[0], "HOME=/home/a");
        for k in CA_ENV {
            let want = format!("{k}=/etc/ssl/certs/ca-certificates.crt");
            assert_eq!(
                e.iter().filter(|l| l.starts_with(&format!("{k}="))).count(),
                1,
                "{k}"
            );
            assert!(e.contains(&want), "{want}");
        }
        assert!(!e.iter().any(|l| l.contains("PROXY") || l.contains("proxy")));
    }

    #[test]
    fn proxy_env_sets_both_spellings_and_lets_nothing_bypass() {
        let e = env(
            &[("http_proxy", "http://old:1"), ("NO_PROXY", "*")],
            Some("http://127.0.0.1:4000"),
        );
        for k in PROXY_ENV {
            assert!(e.contains(&format!("{k}=http://127.0.0.1:4000")), "{k}");
        }
        assert!(!e.iter().any(|l| l.contains("old:1")));
        assert!(e.contains(&"NO_PROXY=".to_string()));
        assert!(e.contains(&"no_proxy=".to_string()));
        assert!(!e.iter().any(|l| l == "NO_PROXY=*"));
    }

    #[test]
    fn a_variable_with_a_nul_byte_is_dropped_not_truncated() {
        use std::os::unix::ffi::OsStringExt;
        let bad = (OsString::from("X"), OsString::from_vec(b"a\0b".to_vec()));
        let e = command_env([bad], "/b", None);
        assert!(!e.iter().any(|c| c.as_bytes().starts_with(b"X=")));
    }

    #[test]
    fn only_present_bundles_are_covered() {
        let got = bundles_present(|p| p == "/etc/ssl/cert.pem");
        assert_eq!(got, ["/etc/ssl/cert.pem"]);
        assert!(bundles_present(|_| false).is_empty());
    }
}

//! Why the kernel refused a user namespace, and what to do about it. The facts are read from
//! `/proc/sys`; the explanation is pure.

/// The settings that decide whether an unprivileged user may create a user namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Facts {
    /// `kernel.unprivileged_userns_clone` (Debian's and Ubuntu's older kernels).
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later).
    pub apparmor_restrict: Option<u64>,
}

impl Facts {
    /// Read from this machine's `/proc/sys` (a missing file is `None`).
    pub(super) fn read() -> Facts {
        let get = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Facts {
            unprivileged_userns_clone: get("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: get("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: get("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// One line naming the cause of `errno` from `unshare(CLONE_NEWUSER)` and the fix.
pub(super) fn explain(errno: nix::Error, facts: &Facts) -> String {
    let cause = if facts.unprivileged_userns_clone == Some(0) {
        "the sysctl kernel.unprivileged_userns_clone is 0; enable them with `sysctl -w kernel.unprivileged_userns_clone=1` (as root)".to_string()
    } else if facts.max_user_namespaces == Some(0) {
        "the sysctl user.max_user_namespaces is 0; allow them with `sysctl -w user.max_user_namespaces=10000` (as root)".to_string()
    } else if facts.apparmor_restrict == Some(1) {
        "AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns=1); give egret an AppArmor profile with `userns,` or set the sysctl to 0 (as root)".to_string()
    } else if errno == nix::Error::ENOSPC {
        "the limit user.max_user_namespaces (or this user's share of it) is used up; raise it with `sysctl -w user.max_user_namespaces=…` or end other sandboxes".to_string()
    } else {
        "the sysctls allow them, so a seccomp profile (a container's default one) or a security module refuses the unshare() system call; run egret outside that container, or allow unshare/clone with CLONE_NEWUSER in its profile".to_string()
    };
    format!("the kernel refused to create a user namespace ({errno}): {cause}; or run `egret exec --proxy-env -- CMD`, the weaker mode without namespaces (egret serves a proxy and sets HTTP_PROXY/HTTPS_PROXY for the command; a program that ignores them is not captured)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_named_with_its_fix() {
        let f = |a, b, c| Facts {
            unprivileged_userns_clone: a,
            max_user_namespaces: b,
            apparmor_restrict: c,
        };
        let e = nix::Error::EPERM;
        let m = explain(e, &f(Some(0), Some(100), None));
        assert!(m.contains("kernel.unprivileged_userns_clone=1"), "{m}");
        let m = explain(e, &f(None, Some(0), None));
        assert!(m.contains("user.max_user_namespaces=10000"), "{m}");
        let m = explain(e, &f(None, Some(5), Some(1)));
        assert!(m.contains("AppArmor"), "{m}");
        let m = explain(nix::Error::ENOSPC, &f(None, Some(5), Some(0)));
        assert!(m.contains("used up"), "{m}");
        let m = explain(e, &Facts::default());
        assert!(m.contains("seccomp"), "{m}");
        assert!(m.contains("egret exec --proxy-env"), "{m}");
    }
}

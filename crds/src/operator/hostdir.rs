//! The host directories the node agent's `install-cni` init container writes into
//! (`spec.cni.binDir`, `spec.cni.confDir`): one rule, written twice in the same words, as the CRD's
//! CEL rules (the API server refuses a bad value with the rule's message) and as [`check`] (the
//! operator's own check, which also covers objects stored before the rule existed). A test in
//! `crds/tests/host_dirs.rs` evaluates the generated CRD's rules against [`check`] on hostile and
//! valid values, so the two cannot drift apart.
//!
//! Accepted: an absolute path of at least two components of `[A-Za-z0-9_.-]`, no `.` or `..`
//! component, no trailing `/`, not under `/proc`, `/sys`, `/dev` or `/boot`, at most 255 bytes.
//! So `/`, `/etc`, `/usr` (a top-level directory as a whole) and relative paths are refused, while
//! the directories distributions use (`/opt/cni/bin`, `/etc/cni/net.d`,
//! `/var/lib/rancher/k3s/agent/etc/cni/net.d`, `/usr/libexec/cni`, `/home/kubernetes/bin`) pass.

/// Longest accepted directory (also the schema's `maxLength`, which bounds the CEL cost).
pub const MAX_LEN: usize = 255;

/// The CEL rules of the schema with their messages, in the order [`check`] applies them. Only the
/// forms `self.matches('<RE2>')` and `!self.matches('<RE2>')` are used.
pub const CEL_RULES: [(&str, &str); 4] = [
    (
        "self.matches('^(/[A-Za-z0-9_.-]+)+$')",
        "must be an absolute directory of [A-Za-z0-9_.-] components, without a trailing '/' (not '/')",
    ),
    (
        "!self.matches('(^|/)[.][.]?(/|$)')",
        "must not have '.' or '..' components",
    ),
    (
        "self.matches('^/[^/]+/[^/]+')",
        "must be at least two levels deep (not a top-level directory such as /etc or /usr)",
    ),
    (
        "!self.matches('^/(proc|sys|dev|boot)(/|$)')",
        "must not be under /proc, /sys, /dev or /boot",
    ),
];

/// `x-kubernetes-validations` of a host directory field.
pub fn cel_validations() -> serde_json::Value {
    serde_json::Value::Array(
        CEL_RULES
            .iter()
            .map(|(rule, message)| serde_json::json!({"rule": rule, "message": message}))
            .collect(),
    )
}

/// The message of the first rule `dir` breaks, as the API server would report it.
pub fn check(dir: &str) -> Result<(), &'static str> {
    if dir.len() > MAX_LEN {
        return Err("must be at most 255 bytes");
    }
    let components: Vec<&str> = dir.split('/').collect();
    // `dir` starts with '/' exactly when the first component is empty.
    let shape = components.len() >= 2
        && components[0].is_empty()
        && components[1..].iter().all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        });
    if !shape {
        return Err(CEL_RULES[0].1);
    }
    let rest = &components[1..];
    if rest.iter().any(|c| *c == "." || *c == "..") {
        return Err(CEL_RULES[1].1);
    }
    if rest.len() < 2 {
        return Err(CEL_RULES[2].1);
    }
    if matches!(rest[0], "proc" | "sys" | "dev" | "boot") {
        return Err(CEL_RULES[3].1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_directories_pass_and_system_roots_do_not() {
        for ok in [
            "/opt/cni/bin",
            "/etc/cni/net.d",
            "/etc/kubernetes/cni/net.d",
            "/var/lib/rancher/k3s/agent/etc/cni/net.d",
            "/usr/libexec/cni",
            "/home/kubernetes/bin",
            "/opt/cni/bin.d",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, rule) in [
            ("/", 0),
            ("", 0),
            ("etc/cni", 0),
            ("/etc/", 0),
            ("//etc", 0),
            ("/etc//cni", 0),
            ("/etc/cni net", 0),
            ("/etc/cni\n", 0),
            ("/etc/cnié", 0),
            ("/opt/../etc", 1),
            ("/opt/./cni", 1),
            ("/..", 1),
            ("/etc", 2),
            ("/usr", 2),
            ("/opt", 2),
            ("/proc/sys", 3),
            ("/sys/fs", 3),
            ("/dev/shm", 3),
            ("/boot/efi", 3),
        ] {
            assert_eq!(check(bad), Err(CEL_RULES[rule].1), "{bad:?}");
        }
        let long = format!("/opt/{}", "a".repeat(300));
        assert_eq!(check(&long), Err("must be at most 255 bytes"));
    }
}

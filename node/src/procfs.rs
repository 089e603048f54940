//! Where network sysctls are written. In a non-privileged container `/proc/sys` is read-only, so
//! the DaemonSet mounts the host's `/proc/sys/net` writable at another path and the agent is told
//! with `--proc-sys-net`. The files under it still belong to the network namespace of the thread
//! that opens them (procfs resolves `net/` per task), so the same root serves host and pod sysctls.

use std::path::PathBuf;
use std::sync::OnceLock;

static NET_ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Sets the folder that stands for `/proc/sys/net`; the first call wins.
pub fn set_net_root(path: PathBuf) {
    let _ = NET_ROOT.set(path);
}

/// The folder that stands for `/proc/sys/net`.
pub fn net_root() -> PathBuf {
    NET_ROOT
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/proc/sys/net"))
}

/// The file of a sysctl given relative to `/proc/sys` (`net/ipv4/ip_forward`).
pub fn sysctl_path(relative: &str) -> PathBuf {
    match relative.strip_prefix("net/") {
        Some(rest) => net_root().join(rest),
        None => PathBuf::from("/proc/sys").join(relative),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_keys_follow_the_root_others_stay() {
        assert_eq!(
            sysctl_path("kernel/hostname"),
            PathBuf::from("/proc/sys/kernel/hostname")
        );
        assert!(sysctl_path("net/ipv4/ip_forward").ends_with("ipv4/ip_forward"));
    }
}

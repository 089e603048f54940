//! Sysctls under `/proc/sys` of the calling thread's network namespace.

use std::path::PathBuf;

use super::KernelError;

fn path_of(key: &str) -> Result<PathBuf, KernelError> {
    // Keys come from the plan (interface names included): refuse anything that could leave /proc/sys.
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(KernelError::other(
            format!("sysctl {key:?}"),
            "not a /proc/sys relative path",
        ));
    }
    Ok(crate::procfs::sysctl_path(key))
}

pub fn read_sysctl(key: &str) -> Result<String, KernelError> {
    let p = path_of(key)?;
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| KernelError::other(format!("read {}", p.display()), e.to_string()))
}

/// Writes `value` if the current value differs; returns whether it wrote.
pub fn write_sysctl(key: &str, value: &str) -> Result<bool, KernelError> {
    if read_sysctl(key)? == value {
        return Ok(false);
    }
    let p = path_of(key)?;
    std::fs::write(&p, value).map_err(|e| {
        KernelError::other(format!("write {} = {value}", p.display()), e.to_string())
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_refused() {
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "net/./ipv4"] {
            assert!(path_of(bad).is_err(), "{bad}");
        }
        assert_eq!(
            path_of("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
    }
}

//! Running `ip` and other commands in the lab's network namespaces.

use std::process::Command;

use anyhow::{Context, bail};

/// Runs `ip ARGS`, failing with the command and its stderr.
pub fn ip(args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd args` inside network namespace `ns`.
pub fn exec_in(ns: &str, cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, cmd])
        .args(args)
        .output()
        .with_context(|| format!("running {cmd} in {ns}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} in {ns}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes a sysctl of namespace `ns` (through its own /proc/sys).
pub fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    exec_in(ns, "sysctl", &["-qw", &format!("{key}={value}")]).map(|_| ())
}

/// Every named network namespace whose name starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = ip(&["netns".into(), "list".into()])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// Deletes a namespace; a missing one is not an error.
pub fn delete(ns: &str) -> anyhow::Result<()> {
    match ip(&["netns".into(), "del".into(), ns.into()]) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("No such file") => Ok(()),
        Err(e) => Err(e),
    }
}

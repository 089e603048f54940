//! Helpers shared by the privileged test suites of the workspace: the root/tool gate (a skip under
//! `CI=true` is a failure), a network namespace removed on drop, a command runner and an async
//! poller, and a paced TCP stream ([`paced`]) that reports the longest gap between deliveries.
//! Used only as a `[dev-dependencies]` entry; suite-specific fixtures stay in the suites.

#![forbid(unsafe_code)]

pub mod paced;

use std::future::Future;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// True when env `CI` is `true`: then a test must not skip.
fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips `test` for `reason`: prints `SKIPPED <test>: <reason>` to stderr and returns false. Under
/// `CI=true` a skip is a failure, so it panics naming the test and the reason instead.
pub fn skip(test: &str, reason: &str) -> bool {
    skip_unless_ci(in_ci(), test, reason)
}

fn skip_unless_ci(ci: bool, test: &str, reason: &str) -> bool {
    assert!(!ci, "{test}: {reason}, and CI=true forbids skipping");
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// True when the test runs as root (it creates network namespaces); otherwise see [`skip`].
pub fn require_root(test: &str) -> bool {
    may_run(test, &[])
}

/// True when the test runs as root and every tool is available: a name on `PATH`, or a path
/// (containing `/`) that exists. Otherwise see [`skip`].
pub fn may_run(test: &str, tools: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip(test, "needs root to create network namespaces");
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !available(t)).collect();
    if !missing.is_empty() {
        return skip(
            test,
            &format!("missing tools {missing:?} (see .ci/packages.txt)"),
        );
    }
    true
}

fn available(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(tool);
            p.metadata().is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// Runs `cmd` (program and arguments) and returns its stdout; the error names the command and
/// carries its output.
pub fn try_sh(cmd: &[&str]) -> Result<String, String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    stdout_or_error(cmd, Command::new(program).args(args).output())
}

/// [`try_sh`] for async tests whose runtime must keep running while the command does (e.g. a
/// speaker on the same current-thread runtime).
pub async fn try_sh_async(cmd: &[&str]) -> Result<String, String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await;
    stdout_or_error(cmd, out)
}

fn stdout_or_error(cmd: &[&str], out: std::io::Result<Output>) -> Result<String, String> {
    let out = out.map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`try_sh`] that panics with the error.
pub fn sh(cmd: &[&str]) -> String {
    try_sh(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Arguments of an `ip` command: a `&str` split on whitespace, or a slice / array of `&str`.
pub trait IpArgs {
    fn to_args(&self) -> Vec<&str>;
}

impl IpArgs for &str {
    fn to_args(&self) -> Vec<&str> {
        self.split_whitespace().collect()
    }
}

impl IpArgs for &String {
    fn to_args(&self) -> Vec<&str> {
        self.split_whitespace().collect()
    }
}

impl IpArgs for &[&str] {
    fn to_args(&self) -> Vec<&str> {
        self.to_vec()
    }
}

impl<const N: usize> IpArgs for &[&str; N] {
    fn to_args(&self) -> Vec<&str> {
        self.to_vec()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A network namespace `hnt-<pid>-<n>-<tag>` with `lo` up, deleted on drop (also when the test
/// panics). The host's own namespace is never touched.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("{}-{tag}", unique_name("hnt"));
        sh(&["ip", "netns", "add", &name]);
        // From here on Drop removes it, also if bringing `lo` up fails.
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// The namespace's file, for `setns` or a CNI `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <ns> ARGS`: stdout, panics on failure.
    pub fn ip(&self, args: impl IpArgs) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip -n <ns> ARGS` that may fail.
    pub fn try_ip(&self, args: impl IpArgs) -> Result<String, String> {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend(args.to_args());
        try_sh(&cmd)
    }

    /// Waits (at most `timeout`) until no IPv6 address in the namespace is still tentative
    /// (duplicate address detection running). The kernel adds the `local` and `anycast` routes
    /// of an address, and its flags change, only when DAD ends, on its own timer: a test that
    /// compares snapshots of routes and addresses must start after that. Panics on timeout.
    pub fn wait_ipv6_dad_settled(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let tentative = self.ip("-6 addr show tentative");
            if tentative.trim().is_empty() {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{}: IPv6 addresses still tentative after {timeout:?}:\n{tentative}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, cmd: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(cmd);
        try_sh(&v)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Polls `probe` every 200 ms until it returns `Ok`, or panics after `timeout` naming `what` and
/// the last error. For state that can only be polled (external daemons, the kernel).
pub async fn eventually<T, Fut>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// [`eventually`] for work that advances in steps (a rolling update, node by node): `probe`
/// returns how many steps are done with its error, and the `stall` bound restarts at each new
/// step, so a slow machine that keeps advancing is not failed while one that stops is, after
/// `stall`. `steps` (the number of steps) caps the whole wait at `stall * (steps + 1)`. Tokio's
/// clock, so a test of it can run on paused time.
pub async fn eventually_advancing<T, Fut>(
    what: &str,
    stall: Duration,
    steps: u32,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Result<T, (u32, String)>>,
{
    let start = tokio::time::Instant::now();
    let cap = stall * (steps + 1);
    let (mut done, mut since) = (0, tokio::time::Instant::now());
    loop {
        match probe().await {
            Ok(v) => return v,
            Err((now, last)) => {
                if now > done {
                    (done, since) = (now, tokio::time::Instant::now());
                }
                if since.elapsed() > stall || start.elapsed() > cap {
                    panic!(
                        "timed out waiting for {what} ({done} of {steps} steps done, the last \
                         {:?} ago, {:?} in all); last: {last}",
                        since.duration_since(start),
                        start.elapsed()
                    )
                }
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_advances_outlasts_its_stall_bound_and_one_that_stops_does_not() {
        // Three steps, each 90 s apart, with a 100 s stall bound: 270 s in all, and it passes.
        let start = tokio::time::Instant::now();
        let v = eventually_advancing("steps", Duration::from_secs(100), 3, || async {
            let done = (start.elapsed().as_secs() / 90) as u32;
            if done >= 3 {
                Ok(done)
            } else {
                Err((done, format!("{done} done")))
            }
        })
        .await;
        assert_eq!(v, 3);
        assert!(start.elapsed() >= Duration::from_secs(270));
        // A wait that stops after one step fails 100 s after that step.
        let stuck = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            eventually_advancing::<(), _>("stuck", Duration::from_secs(100), 3, || async move {
                Err((
                    u32::from(start.elapsed() >= Duration::from_secs(30)),
                    "one".into(),
                ))
            })
            .await
        });
        let err = stuck.await.unwrap_err();
        let msg = err.into_panic();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("1 of 3 steps done"), "{msg}");
    }

    #[test]
    fn a_skip_outside_ci_returns_false() {
        assert!(!skip_unless_ci(false, "t", "why"));
    }

    #[test]
    #[should_panic(expected = "t: why, and CI=true forbids skipping")]
    fn a_skip_under_ci_fails_naming_test_and_reason() {
        skip_unless_ci(true, "t", "why");
    }

    #[test]
    fn tools_on_path_and_paths_are_found() {
        assert!(available("sh"));
        assert!(available("/bin/sh"));
        assert!(!available("no-such-tool-hnt"));
        assert!(!available("/no/such/tool"));
    }

    #[test]
    fn runner_returns_stdout_or_an_error_naming_the_command() {
        assert_eq!(sh(&["echo", "hi"]), "hi\n");
        let e = try_sh(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(e.contains("\"sh\", \"-c\"") && e.contains("oops"), "{e}");
        let e = try_sh(&["no-such-tool-hnt"]).unwrap_err();
        assert!(e.contains("no-such-tool-hnt"), "{e}");
        assert!(try_sh(&[]).is_err());
    }

    #[tokio::test]
    async fn async_runner_behaves_like_the_sync_one() {
        assert_eq!(try_sh_async(&["echo", "hi"]).await.unwrap(), "hi\n");
        let e = try_sh_async(&["sh", "-c", "echo oops >&2; exit 3"])
            .await
            .unwrap_err();
        assert!(e.contains("\"sh\", \"-c\"") && e.contains("oops"), "{e}");
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }

    #[test]
    fn a_namespace_exists_while_the_guard_lives_and_is_removed_on_drop() {
        if !require_root("a_namespace_exists_while_the_guard_lives_and_is_removed_on_drop") {
            return;
        }
        let listed = |name: &str| {
            sh(&["ip", "netns", "list"])
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        };
        let ns = Netns::new("ts");
        let name = ns.name.clone();
        assert!(listed(&name));
        assert!(ns.ip("link show lo").contains("UP"));
        assert!(ns.ip(&["addr", "show", "lo"]).contains("127.0.0.1"));
        assert!(ns.try_ip("link show nope0").is_err());
        assert_eq!(ns.exec(&["echo", "in"]).unwrap(), "in\n");
        drop(ns);
        assert!(!listed(&name));
        // Also when the test panics while holding it.
        let name = std::thread::spawn(|| {
            let ns = Netns::new("ts");
            let name = ns.name.clone();
            std::panic::panic_any(name)
        })
        .join()
        .unwrap_err();
        let name = name.downcast_ref::<String>().unwrap();
        assert!(!listed(name));
    }

    #[tokio::test]
    async fn eventually_returns_the_first_ok() {
        let mut n = 0;
        let v = eventually("n to reach 2", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move { if n >= 2 { Ok(n) } else { Err(format!("n={n}")) } }
        })
        .await;
        assert_eq!(v, 2);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never; last: still no")]
    async fn eventually_panics_after_the_timeout_with_the_last_error() {
        eventually("never", Duration::from_millis(300), || async {
            Err::<(), _>("still no".to_string())
        })
        .await;
    }
}

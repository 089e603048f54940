//! Runs the iptables and ipset tools of the namespace the caller is in: reads with `-save` and
//! `ipset list -n`, removes with one `-restore --noflush` transaction per table and `ipset
//! destroy`, then reads again and reports what is still there.
//!
//! Both iptables backends are looked at (upstream's image picks legacy or nft per host, see its
//! `dist/images/iptables-wrapper-installer.sh`), each for IPv4 and IPv6; a backend whose tools
//! are not installed is skipped.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::{Scope, plan_save, upstream_ipsets};

/// (label, save binary, restore binary) of every backend and family.
const IPTABLES: [(&str, &str, &str); 4] = [
    (
        "iptables-legacy IPv4",
        "iptables-legacy-save",
        "iptables-legacy-restore",
    ),
    (
        "iptables-legacy IPv6",
        "ip6tables-legacy-save",
        "ip6tables-legacy-restore",
    ),
    (
        "iptables-nft IPv4",
        "iptables-nft-save",
        "iptables-nft-restore",
    ),
    (
        "iptables-nft IPv6",
        "ip6tables-nft-save",
        "ip6tables-nft-restore",
    ),
];

/// What one pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Removed by this pass.
    pub removed: Vec<String>,
    /// Upstream state still present after the pass (everything found, for a scan).
    pub remaining: Vec<String>,
    /// Tools that failed (the state behind them is unknown).
    pub errors: Vec<String>,
}

enum Run {
    Ok(String),
    Missing,
    Failed(String),
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Run::Missing,
        Err(e) => return Run::Failed(format!("{program}: {e}")),
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take())
        && let Err(e) = pipe.write_all(input.as_bytes())
    {
        let _ = child.kill();
        let _ = child.wait();
        return Run::Failed(format!("{program}: writing stdin: {e}"));
    }
    match child.wait_with_output() {
        Ok(o) if o.status.success() => Run::Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Run::Failed(format!(
            "{program} {}: {} {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Run::Failed(format!("{program}: {e}")),
    }
}

/// Looks for upstream's leftovers and, with `remove`, removes them; `remaining` is read back
/// after the removal.
pub fn clean(scope: Scope, remove: bool) -> CleanReport {
    let mut rep = CleanReport::default();
    let mut any_iptables = false;
    for (label, save, restore) in IPTABLES {
        let text = match run(save, &[], None) {
            Run::Ok(t) => t,
            Run::Missing => continue,
            Run::Failed(e) => {
                rep.errors.push(e);
                continue;
            }
        };
        any_iptables = true;
        let mut plan = plan_save(&text, scope);
        if remove && plan.iter().any(|t| !t.script.is_empty()) {
            for t in &plan {
                if t.script.is_empty() {
                    continue;
                }
                match run(restore, &["-w", "5", "--noflush"], Some(&t.script)) {
                    Run::Ok(_) => rep
                        .removed
                        .extend(t.removed.iter().map(|r| format!("{label} {r}"))),
                    Run::Missing => {}
                    Run::Failed(e) => rep.errors.push(e),
                }
            }
            plan = match run(save, &[], None) {
                Run::Ok(t) => plan_save(&t, scope),
                Run::Missing => Vec::new(),
                Run::Failed(e) => {
                    rep.errors.push(e);
                    plan
                }
            };
        }
        for t in plan {
            rep.remaining
                .extend(t.removed.iter().map(|r| format!("{label} {r}")));
            rep.remaining
                .extend(t.kept.iter().map(|k| format!("{label} {k}")));
        }
    }
    // A tool that is not there cannot tell: never report such a node clean.
    if !any_iptables {
        rep.remaining
            .push("iptables: no iptables-*-save program found, upstream's chains unknown".into());
    }
    let mut sets = match run("ipset", &["list", "-n"], None) {
        Run::Ok(t) => upstream_ipsets(&t, scope),
        Run::Missing => {
            rep.remaining
                .push("ipset: program not found, upstream's ipsets unknown".into());
            Vec::new()
        }
        Run::Failed(e) => {
            rep.errors.push(e);
            Vec::new()
        }
    };
    if remove && !sets.is_empty() {
        for s in &sets {
            match run("ipset", &["destroy", s], None) {
                Run::Ok(_) => rep.removed.push(format!("ipset {s}")),
                Run::Missing => {}
                // In use by a rule we did not remove: reported as remaining below.
                Run::Failed(e) => rep.errors.push(e),
            }
        }
        sets = match run("ipset", &["list", "-n"], None) {
            Run::Ok(t) => upstream_ipsets(&t, scope),
            _ => sets,
        };
    }
    rep.remaining
        .extend(sets.into_iter().map(|s| format!("ipset {s}")));
    rep
}

/// The agent's side: after a successful apply, looks (and with `remove` cleans) at most once
/// per `interval`, and keeps the last result for the NodeInfo.
pub struct LeftoverCleaner {
    pub scope: Scope,
    pub remove: bool,
    pub interval: std::time::Duration,
    last_run: Option<std::time::Instant>,
    last: Option<hybridnet_api::migration::NodeLeftovers>,
}

impl LeftoverCleaner {
    pub fn new(scope: Scope, remove: bool) -> Self {
        Self {
            scope,
            remove,
            interval: std::time::Duration::from_secs(60),
            last_run: None,
            last: None,
        }
    }

    /// Runs a pass when due (only after an apply without errors: our state must be in place
    /// before upstream's goes) and returns the annotation value to publish, if any pass ran.
    pub async fn after_apply(&mut self, applied_ok: bool) -> Option<String> {
        let due = self.last_run.is_none_or(|t| t.elapsed() >= self.interval);
        if applied_ok && due {
            self.last_run = Some(std::time::Instant::now());
            let (scope, remove) = (self.scope, self.remove);
            match tokio::task::spawn_blocking(move || clean(scope, remove)).await {
                Ok(rep) => {
                    for r in &rep.removed {
                        tracing::info!(removed = %r, "removed upstream hybridnet leftover");
                    }
                    for e in &rep.errors {
                        tracing::warn!(error = %e, "upstream leftover cleanup");
                    }
                    if !rep.remaining.is_empty() {
                        tracing::warn!(remaining = ?rep.remaining, "upstream hybridnet leftovers remain on this node");
                    }
                    self.last = Some(hybridnet_api::migration::NodeLeftovers(rep.remaining));
                }
                Err(e) => tracing::warn!(error = %e, "upstream leftover cleanup task failed"),
            }
        }
        self.last.as_ref().map(|l| l.to_annotation())
    }
}

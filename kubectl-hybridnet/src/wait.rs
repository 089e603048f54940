//! `--wait[=DURATION]` of `install` and `status`: when the HybridnetCluster counts as Available,
//! and the progress line printed while waiting. Pure: the shell watches the object.

use std::time::Duration;

use hybridnet_api::operator::HybridnetCluster;
use hybridnet_api::operator::condition::{AVAILABLE, DEGRADED, PROGRESSING};

/// Exit code when `--wait` runs out of time (documented in `--help` and docs/cli.md).
pub const EXIT_WAIT_TIMEOUT: i32 = 6;

/// How long `--wait` without a value waits.
pub const DEFAULT_WAIT: &str = "5m";

/// The limit of `--wait`: `None` waits without a limit (`--wait=0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitFor(pub Option<Duration>);

/// `--wait=DURATION`: `0` (no limit), seconds, or a Go duration such as `90s`, `5m`, `1h`.
pub fn parse_wait(s: &str) -> Result<WaitFor, String> {
    crate::flags::parse_request_timeout(s)
        .map(WaitFor)
        .map_err(|_| {
            format!("--wait={s:?}: expected a duration such as 30s, 5m or 1h (0: no limit)")
        })
}

/// Longest piece of server-written text (a condition reason) put on a progress line.
const MAX_REASON_CHARS: usize = 80;

fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX_REASON_CHARS {
        out.push_str("...");
    }
    out
}

/// Where the HybridnetCluster stands: `ready` once the operator has observed the current
/// generation (`status.observedGeneration == metadata.generation`) and reports `Available=True`
/// for it (the condition's own observedGeneration, when set, is the current generation too).
/// `line` says what is missing, for the progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub ready: bool,
    pub line: String,
}

pub fn progress(cluster: Option<&HybridnetCluster>) -> Progress {
    let Some(c) = cluster else {
        return Progress {
            ready: false,
            line: "the HybridnetCluster \"default\" does not exist".into(),
        };
    };
    let generation = c.metadata.generation;
    let st = c.status.as_ref();
    let observed = st.and_then(|s| s.observed_generation);
    let conditions = st.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|x| x.type_ == t);
    let current = generation.is_some() && observed == generation;
    let ready = current
        && find(AVAILABLE).is_some_and(|a| {
            a.status == "True" && a.observed_generation.is_none_or(|g| Some(g) == generation)
        });
    let mut parts = Vec::new();
    if st.is_none() {
        parts.push("no status yet (the operator has not reconciled it)".to_string());
    }
    for t in [AVAILABLE, PROGRESSING, DEGRADED] {
        if let Some(x) = find(t) {
            let reason = if x.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", clean(&x.reason))
            };
            parts.push(format!("{t}={}{reason}", clean(&x.status)));
        }
    }
    if let Some(n) = st.and_then(|s| s.node_agents.as_ref()) {
        parts.push(format!("node agents ready {}/{}", n.ready, n.desired));
    }
    if st.is_some() && !current {
        let g = generation.map_or("-".to_string(), |g| g.to_string());
        let o = observed.map_or("-".to_string(), |o| o.to_string());
        parts.push(format!(
            "the operator has not observed generation {g} yet (observed {o})"
        ));
    }
    Progress {
        ready,
        line: parts.join(", "),
    }
}

/// A duration as `--wait` prints it: `90s`, `5m0s`, `1h0m0s` (Go's form, as kubectl).
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        return format!("{s}s");
    }
    if s < 3600 {
        return format!("{}m{}s", s / 60, s % 60);
    }
    format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(generation: i64, status: serde_json::Value) -> HybridnetCluster {
        let mut v = json!({"apiVersion": "operator.hybridnet.io/v1alpha1", "kind": "HybridnetCluster",
            "metadata": {"name": "default", "generation": generation}, "spec": {}});
        if !status.is_null() {
            v["status"] = status;
        }
        serde_json::from_value(v).unwrap()
    }

    fn cond(t: &str, s: &str, reason: &str, observed: Option<i64>) -> serde_json::Value {
        let mut c = json!({"type": t, "status": s, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-11-26T07:00:00Z"});
        if let Some(o) = observed {
            c["observedGeneration"] = json!(o);
        }
        c
    }

    #[test]
    fn available_counts_only_for_the_current_generation() {
        let ok = cluster(
            2,
            json!({"observedGeneration": 2, "conditions": [cond("Available", "True", "AsExpected", Some(2))]}),
        );
        assert!(progress(Some(&ok)).ready);
        // Conditions without their own observedGeneration follow status.observedGeneration.
        let ok = cluster(
            2,
            json!({"observedGeneration": 2, "conditions": [cond("Available", "True", "AsExpected", None)]}),
        );
        assert!(progress(Some(&ok)).ready);
        // The spec changed (generation 3): the old Available does not count.
        let stale = cluster(
            3,
            json!({"observedGeneration": 2, "conditions": [cond("Available", "True", "AsExpected", Some(2))]}),
        );
        let p = progress(Some(&stale));
        assert!(!p.ready);
        assert!(
            p.line
                .contains("has not observed generation 3 yet (observed 2)"),
            "{}",
            p.line
        );
        // A condition written for an older generation does not count either.
        let old_cond = cluster(
            3,
            json!({"observedGeneration": 3, "conditions": [cond("Available", "True", "AsExpected", Some(2))]}),
        );
        assert!(!progress(Some(&old_cond)).ready);
        for s in ["False", "Unknown", "true"] {
            let c = cluster(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Available", s, "Installing", Some(1))]}),
            );
            assert!(!progress(Some(&c)).ready, "{s}");
        }
        assert!(!progress(None).ready);
        assert!(!progress(Some(&cluster(1, serde_json::Value::Null))).ready);
    }

    #[test]
    fn the_progress_line_says_what_is_missing() {
        assert!(progress(None).line.contains("does not exist"));
        assert!(
            progress(Some(&cluster(1, serde_json::Value::Null)))
                .line
                .contains("no status yet")
        );
        let c = cluster(
            1,
            json!({"observedGeneration": 1,
            "nodeAgents": {"desired": 3, "updated": 3, "ready": 2, "available": 2},
            "conditions": [cond("Degraded", "False", "AsExpected", Some(1)),
                           cond("Available", "False", "Installing", Some(1)),
                           cond("Progressing", "True", "RollingOut", Some(1))]}),
        );
        assert_eq!(
            progress(Some(&c)).line,
            "Available=False (Installing), Progressing=True (RollingOut), Degraded=False (AsExpected), node agents ready 2/3"
        );
    }

    #[test]
    fn hostile_reasons_are_cut_and_cleaned() {
        let long = "R".repeat(5000);
        let c = cluster(
            1,
            json!({"observedGeneration": 1,
            "conditions": [cond("Available", "False\u{1b}[2J", &long, Some(1))]}),
        );
        let line = progress(Some(&c)).line;
        assert!(!line.contains('\u{1b}'), "{line:?}");
        assert!(line.len() < 200, "{}", line.len());
    }

    #[test]
    fn wait_values() {
        assert_eq!(
            parse_wait("5m"),
            Ok(WaitFor(Some(Duration::from_secs(300))))
        );
        assert_eq!(parse_wait("90"), Ok(WaitFor(Some(Duration::from_secs(90)))));
        assert_eq!(parse_wait("0"), Ok(WaitFor(None)));
        assert_eq!(
            parse_wait(DEFAULT_WAIT),
            Ok(WaitFor(Some(Duration::from_secs(300))))
        );
        for bad in [
            "",
            "5 minutes",
            "-1s",
            "1y",
            "\u{0}",
            "99999999999999999999h",
        ] {
            let e = parse_wait(bad).unwrap_err();
            assert!(e.starts_with("--wait="), "{bad}: {e}");
        }
        assert_eq!(show_duration(Duration::from_secs(42)), "42s");
        assert_eq!(show_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(show_duration(Duration::from_secs(3725)), "1h2m5s");
    }
}

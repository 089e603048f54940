//! Pure status computation for a HybridnetCluster, following the OpenShift operator conventions:
//!
//! - `Available` is False only when no node agent is available and no normal upgrade explains it;
//!   once the installation has been available, a rolling upgrade never drops it.
//! - `Progressing` is True while the DaemonSet rolls out a new template (a version or config change),
//!   not while it merely adjusts to nodes joining or rebooting.
//! - `Degraded` is True for persistent failures: an invalid spec, a refused singleton, a failed apply,
//!   and a rollout that made no progress for longer than the progress deadline ([`rollout_progress`]).
//!   While `Progressing` is True its `lastTransitionTime` is the time of the last observed progress
//!   (like a Deployment's `lastUpdateTime`), so the deadline survives an operator restart.

use hybridnet_api::operator::{HybridnetClusterStatus, RolloutCounts, condition};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::names;

/// Reasons used in conditions (CamelCase, as the conventions want).
pub mod reason {
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const INSTALLING: &str = "Installing";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const NO_AGENT_AVAILABLE: &str = "NoAgentAvailable";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NOT_SINGLETON: &str = "NotSingleton";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const DELETING: &str = "Deleting";
    pub const ROLLOUT_STUCK: &str = "RolloutStuck";
}

/// A persistent failure to report as Degraded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// What the DaemonSet says about the rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutObservation {
    /// `metadata.generation` and `status.observedGeneration`.
    pub generation: i64,
    pub observed_generation: i64,
    /// Operand version in the DaemonSet template (its version label).
    pub template_version: Option<String>,
    pub counts: RolloutCounts,
}

impl RolloutObservation {
    pub fn from_daemonset(ds: &DaemonSet) -> RolloutObservation {
        let st = ds.status.clone().unwrap_or_default();
        RolloutObservation {
            generation: ds.metadata.generation.unwrap_or(0),
            observed_generation: st.observed_generation.unwrap_or(0),
            template_version: ds
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .and_then(|l| l.get(names::LABEL_VERSION).cloned()),
            counts: RolloutCounts {
                desired: st.desired_number_scheduled,
                updated: st.updated_number_scheduled.unwrap_or(0),
                ready: st.number_ready,
                available: st.number_available.unwrap_or(0),
            },
        }
    }

    /// The DaemonSet controller has seen the current template, which carries `target_version`.
    pub fn template_current(&self, target_version: &str) -> bool {
        self.observed_generation >= self.generation
            && self.template_version.as_deref() == Some(target_version)
    }

    /// Whether a rollout of `target_version` is still under way. A rollout ends when every
    /// scheduled pod runs the current template and is available; a pod that becomes unavailable
    /// later (node reboot) does not start a new one.
    pub fn rolling_out(&self, target_version: &str, was_rolling_out: bool) -> bool {
        !self.template_current(target_version)
            || self.counts.updated < self.counts.desired
            || (was_rolling_out && self.counts.available < self.counts.desired)
    }
}

/// Everything the status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub target_version: &'a str,
    pub rollout: Option<&'a RolloutObservation>,
    pub failure: Option<&'a Failure>,
    pub previous: &'a HybridnetClusterStatus,
    /// Unix seconds, for lastTransitionTime.
    pub now: i64,
    /// Longest time a rollout may go without progress before it is Degraded (seconds).
    pub progress_deadline: i64,
    /// `namespace/name` of the node agent DaemonSet, for messages.
    pub daemonset: &'a str,
}

/// What [`rollout_progress`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutProgress {
    /// Unix seconds of the last observed progress (the start of the rollout at first).
    pub since: i64,
    /// No progress for longer than the deadline.
    pub stuck: bool,
}

fn seconds(t: &Time) -> i64 {
    t.0.as_second()
}

/// Whether a rollout under way is stuck (pure). Progress is a rollout starting (Progressing was
/// not True, or the spec generation changed) or more agents updated, ready or available than the
/// previous status recorded; the time of the last progress is the previous Progressing condition's
/// lastTransitionTime, so it survives restarts. A timestamp from the future (clock stepped back,
/// another replica's clock ahead) is not trusted: the wait restarts now. Stuck means strictly
/// longer than `deadline` seconds.
pub fn rollout_progress(
    previous: &HybridnetClusterStatus,
    generation: Option<i64>,
    counts: &RolloutCounts,
    now: i64,
    deadline: i64,
) -> RolloutProgress {
    let prev_progressing =
        previous_condition(previous, condition::PROGRESSING).filter(|c| c.status == "True");
    let before = previous.node_agents.clone().unwrap_or_default();
    let advanced = counts.updated > before.updated
        || counts.ready > before.ready
        || counts.available > before.available;
    let new_spec = previous.observed_generation != generation;
    let since = match prev_progressing {
        Some(c) if !advanced && !new_spec && seconds(&c.last_transition_time) <= now => {
            seconds(&c.last_transition_time)
        }
        _ => now,
    };
    RolloutProgress {
        since,
        stuck: now.saturating_sub(since) > deadline,
    }
}

/// When to look again so a rollout without progress is reported Degraded on time: one second
/// after its deadline, if it is rolling out and not reported yet.
pub fn recheck_in(status: &HybridnetClusterStatus, now: i64, deadline: i64) -> Option<i64> {
    let progressing =
        previous_condition(status, condition::PROGRESSING).filter(|c| c.status == "True")?;
    let stuck = previous_condition(status, condition::DEGRADED)
        .is_some_and(|c| c.status == "True" && c.reason == reason::ROLLOUT_STUCK);
    if stuck {
        return None;
    }
    let due = seconds(&progressing.last_transition_time)
        .saturating_add(deadline)
        .saturating_add(1);
    Some(due.saturating_sub(now).max(1))
}

fn rfc3339(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{unix}s"))
}

fn previous_condition<'a>(prev: &'a HybridnetClusterStatus, t: &str) -> Option<&'a Condition> {
    prev.conditions.iter().flatten().find(|c| c.type_ == t)
}

fn time_at(unix: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(unix).unwrap_or_default())
}

fn condition(
    input: &StatusInput<'_>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    // lastTransitionTime changes only when the status does.
    let last = previous_condition(input.previous, type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time_at(input.now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: input.generation,
        last_transition_time: last,
    }
}

/// Computes the new status.
pub fn compute(input: &StatusInput<'_>) -> HybridnetClusterStatus {
    let prev = input.previous;
    let was_available =
        previous_condition(prev, condition::AVAILABLE).is_some_and(|c| c.status == "True");
    let target = input.target_version;

    let mut stuck: Option<Failure> = None;
    let (available, progressing, version) = match input.rollout {
        None => (
            condition(
                input,
                condition::AVAILABLE,
                false,
                reason::INSTALLING,
                "the node agent DaemonSet does not exist yet".into(),
            ),
            condition(
                input,
                condition::PROGRESSING,
                input.failure.is_none(),
                if input.failure.is_none() {
                    reason::INSTALLING
                } else {
                    reason::AS_EXPECTED
                },
                if input.failure.is_none() {
                    format!("installing version {target}")
                } else {
                    "nothing is being rolled out".into()
                },
            ),
            prev.version.clone(),
        ),
        Some(r) => {
            let c = &r.counts;
            // A rollout that has not reached its version yet (a fresh install, an upgrade) goes on
            // until every agent is available, even when the first status we see already has
            // every pod updated; only after that do unavailable agents stop counting as a rollout.
            let was_rolling_out = previous_condition(prev, condition::PROGRESSING)
                .is_some_and(|c| c.status == "True")
                || prev.version.as_deref() != Some(target);
            let done = !r.rolling_out(target, was_rolling_out);
            let progressing = if done {
                condition(
                    input,
                    condition::PROGRESSING,
                    false,
                    reason::AS_EXPECTED,
                    format!(
                        "{} of {} node agents run version {target}",
                        c.updated, c.desired
                    ),
                )
            } else {
                let p = rollout_progress(
                    prev,
                    input.generation,
                    c,
                    input.now,
                    input.progress_deadline,
                );
                if p.stuck {
                    stuck = Some(Failure {
                        reason: reason::ROLLOUT_STUCK,
                        message: format!(
                            "DaemonSet {} made no rollout progress since {} (deadline {}s): {} of {} node agents updated, {} ready, {} available",
                            input.daemonset,
                            rfc3339(p.since),
                            input.progress_deadline,
                            c.updated,
                            c.desired,
                            c.ready,
                            c.available
                        ),
                    });
                }
                let mut cond = condition(
                    input,
                    condition::PROGRESSING,
                    true,
                    reason::ROLLING_OUT,
                    format!(
                        "rolling out version {target}: {} of {} node agents updated, {} available",
                        c.updated, c.desired, c.available
                    ),
                );
                // The time of the last progress (see the module documentation).
                cond.last_transition_time = time_at(p.since);
                cond
            };
            let upgrading = !done && was_available;
            let no_nodes = c.desired == 0 && r.observed_generation >= r.generation;
            let available = if no_nodes || c.available > 0 || upgrading {
                condition(
                    input,
                    condition::AVAILABLE,
                    true,
                    reason::AS_EXPECTED,
                    format!("{} of {} node agents available", c.available, c.desired),
                )
            } else if was_available || prev.version.is_some() {
                condition(
                    input,
                    condition::AVAILABLE,
                    false,
                    reason::NO_AGENT_AVAILABLE,
                    format!("none of {} node agents is available", c.desired),
                )
            } else {
                condition(
                    input,
                    condition::AVAILABLE,
                    false,
                    reason::INSTALLING,
                    format!("waiting for the first of {} node agents", c.desired),
                )
            };
            let version = if done {
                Some(target.to_string())
            } else {
                prev.version.clone()
            };
            (available, progressing, version)
        }
    };
    let degraded = match input.failure.or(stuck.as_ref()) {
        Some(f) => condition(
            input,
            condition::DEGRADED,
            true,
            f.reason,
            f.message.clone(),
        ),
        None => condition(
            input,
            condition::DEGRADED,
            false,
            reason::AS_EXPECTED,
            "no failure".into(),
        ),
    };
    HybridnetClusterStatus {
        observed_generation: input.generation,
        conditions: Some(vec![available, progressing, degraded]),
        version,
        target_version: Some(target.to_string()),
        node_agents: input
            .rollout
            .map(|r| r.counts.clone())
            .or(prev.node_agents.clone()),
    }
}

/// The status of a HybridnetCluster that is refused (second one, or not named `default`): only
/// Degraded with the reason, nothing applied, no version.
pub fn refused(
    generation: Option<i64>,
    failure: &Failure,
    previous: &HybridnetClusterStatus,
    now: i64,
) -> HybridnetClusterStatus {
    let input = StatusInput {
        generation,
        target_version: "",
        rollout: None,
        failure: Some(failure),
        previous,
        now,
        progress_deadline: i64::MAX,
        daemonset: "",
    };
    HybridnetClusterStatus {
        observed_generation: generation,
        conditions: Some(vec![
            condition(
                &input,
                condition::AVAILABLE,
                false,
                failure.reason,
                "this HybridnetCluster is not acted upon".into(),
            ),
            condition(
                &input,
                condition::PROGRESSING,
                false,
                failure.reason,
                "this HybridnetCluster is not acted upon".into(),
            ),
            condition(
                &input,
                condition::DEGRADED,
                true,
                failure.reason,
                failure.message.clone(),
            ),
        ]),
        version: None,
        target_version: None,
        node_agents: None,
    }
}

/// `(type, status, reason)` transitions between two statuses, for Events.
pub fn transitions(
    old: &HybridnetClusterStatus,
    new: &HybridnetClusterStatus,
) -> Vec<(String, String, String, String)> {
    new.conditions
        .iter()
        .flatten()
        .filter(|c| {
            previous_condition(old, &c.type_)
                .is_none_or(|o| o.status != c.status || o.reason != c.reason)
        })
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(
        gen_: i64,
        seen: i64,
        version: &str,
        d: i32,
        u: i32,
        r: i32,
        a: i32,
    ) -> RolloutObservation {
        RolloutObservation {
            generation: gen_,
            observed_generation: seen,
            template_version: Some(version.into()),
            counts: RolloutCounts {
                desired: d,
                updated: u,
                ready: r,
                available: a,
            },
        }
    }

    fn step(
        prev: &HybridnetClusterStatus,
        target: &str,
        rollout: Option<&RolloutObservation>,
        failure: Option<&Failure>,
        now: i64,
    ) -> HybridnetClusterStatus {
        compute(&StatusInput {
            generation: Some(3),
            target_version: target,
            rollout,
            failure,
            previous: prev,
            now,
            progress_deadline: 600,
            daemonset: "ns/hybridnet-node",
        })
    }

    fn cond<'a>(s: &'a HybridnetClusterStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn summary(s: &HybridnetClusterStatus) -> (String, String, String) {
        (
            cond(s, "Available").status.clone(),
            cond(s, "Progressing").status.clone(),
            cond(s, "Degraded").status.clone(),
        )
    }

    fn tft(a: &str, p: &str, d: &str) -> (String, String, String) {
        (a.into(), p.into(), d.into())
    }

    #[test]
    fn fresh_install_walks_installing_to_available() {
        let s0 = HybridnetClusterStatus::default();
        let s1 = step(&s0, "0.1.0", None, None, 100);
        assert_eq!(summary(&s1), tft("False", "True", "False"));
        assert_eq!(cond(&s1, "Available").reason, reason::INSTALLING);
        assert_eq!(s1.version, None);
        assert_eq!(s1.target_version.as_deref(), Some("0.1.0"));
        assert_eq!(s1.observed_generation, Some(3));
        assert!(
            s1.conditions
                .iter()
                .flatten()
                .all(|c| c.observed_generation == Some(3))
        );

        // DaemonSet created, controller has not seen it yet.
        let s2 = step(
            &s1,
            "0.1.0",
            Some(&obs(1, 0, "0.1.0", 0, 0, 0, 0)),
            None,
            110,
        );
        assert_eq!(summary(&s2), tft("False", "True", "False"));
        // Pods scheduled, none available.
        let s3 = step(
            &s2,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 3, 3, 0, 0)),
            None,
            120,
        );
        assert_eq!(summary(&s3), tft("False", "True", "False"));
        assert_eq!(cond(&s3, "Available").reason, reason::INSTALLING);
        // Some available: Available, still progressing.
        let s4 = step(
            &s3,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 3, 3, 2, 2)),
            None,
            130,
        );
        assert_eq!(summary(&s4), tft("True", "True", "False"));
        assert_eq!(s4.version, None);
        // All available: done.
        let s5 = step(
            &s4,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 3, 3, 3, 3)),
            None,
            140,
        );
        assert_eq!(summary(&s5), tft("True", "False", "False"));
        assert_eq!(s5.version.as_deref(), Some("0.1.0"));
        assert_eq!(
            s5.node_agents,
            Some(RolloutCounts {
                desired: 3,
                updated: 3,
                ready: 3,
                available: 3
            })
        );
        assert_eq!(cond(&s5, "Progressing").reason, reason::AS_EXPECTED);
    }

    #[test]
    fn upgrade_keeps_available_true_even_when_every_agent_restarts() {
        let done = step(
            &step(
                &HybridnetClusterStatus::default(),
                "0.1.0",
                Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)),
                None,
                10,
            ),
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)),
            None,
            20,
        );
        assert_eq!(summary(&done), tft("True", "False", "False"));
        let available_since = cond(&done, "Available").last_transition_time.clone();
        // New version: the spec changed, the DaemonSet template too; a single node's only pod restarts.
        let mut s = done.clone();
        let walk = [
            obs(2, 1, "0.2.0", 1, 1, 1, 1),
            obs(2, 2, "0.2.0", 1, 0, 0, 0),
            obs(2, 2, "0.2.0", 1, 1, 0, 0),
        ];
        for (i, o) in walk.iter().enumerate() {
            s = step(&s, "0.2.0", Some(o), None, 30 + i as i64);
            assert_eq!(summary(&s), tft("True", "True", "False"), "step {i}");
            assert_eq!(s.version.as_deref(), Some("0.1.0"), "still the old version");
            assert_eq!(s.target_version.as_deref(), Some("0.2.0"));
            assert_eq!(cond(&s, "Progressing").reason, reason::ROLLING_OUT);
        }
        assert_eq!(
            cond(&s, "Progressing").message,
            "rolling out version 0.2.0: 1 of 1 node agents updated, 0 available"
        );
        s = step(&s, "0.2.0", Some(&obs(2, 2, "0.2.0", 1, 1, 1, 1)), None, 50);
        assert_eq!(summary(&s), tft("True", "False", "False"));
        assert_eq!(s.version.as_deref(), Some("0.2.0"));
        assert_eq!(cond(&s, "Available").last_transition_time, available_since);
    }

    #[test]
    fn node_reboot_is_not_progress_and_losing_every_agent_drops_available() {
        let mut s = HybridnetClusterStatus::default();
        for o in [
            obs(1, 1, "0.1.0", 2, 2, 2, 2),
            obs(1, 1, "0.1.0", 2, 2, 2, 2),
        ] {
            s = step(&s, "0.1.0", Some(&o), None, 1);
        }
        let reboot = step(&s, "0.1.0", Some(&obs(1, 1, "0.1.0", 2, 2, 1, 1)), None, 2);
        assert_eq!(summary(&reboot), tft("True", "False", "False"));
        // A new node joins: desired grows, the new pod is updated but not yet available.
        let join = step(
            &reboot,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 3, 3, 2, 2)),
            None,
            3,
        );
        assert_eq!(summary(&join), tft("True", "False", "False"));
        let outage = step(
            &join,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 3, 3, 0, 0)),
            None,
            4,
        );
        assert_eq!(summary(&outage), tft("False", "False", "False"));
        assert_eq!(
            cond(&outage, "Available").reason,
            reason::NO_AGENT_AVAILABLE
        );
        assert_eq!(
            cond(&outage, "Available").message,
            "none of 3 node agents is available"
        );
    }

    #[test]
    fn failures_are_degraded_with_reason_and_message_and_transitions_are_reported() {
        let ok = step(
            &HybridnetClusterStatus::default(),
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)),
            None,
            1,
        );
        let f = Failure {
            reason: reason::INVALID_SPEC,
            message: "spec.cni.mtu: 100 is outside 576-9216".into(),
        };
        let bad = step(
            &ok,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)),
            Some(&f),
            2,
        );
        assert_eq!(summary(&bad), tft("True", "False", "True"));
        let d = cond(&bad, "Degraded");
        assert_eq!(d.reason, "InvalidSpec");
        assert!(d.message.contains("spec.cni.mtu"));
        assert_eq!(d.last_transition_time.0.as_second(), 2);
        let t = transitions(&ok, &bad);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].0.as_str(), t[0].1.as_str(), t[0].2.as_str()),
            ("Degraded", "True", "InvalidSpec")
        );
        // Same state again: no transition, same timestamps.
        let again = step(
            &bad,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)),
            Some(&f),
            99,
        );
        assert!(transitions(&bad, &again).is_empty());
        assert_eq!(again, bad);
        // Invalid spec before anything exists: not progressing, degraded.
        let never = step(
            &HybridnetClusterStatus::default(),
            "0.1.0",
            None,
            Some(&f),
            1,
        );
        assert_eq!(summary(&never), tft("False", "False", "True"));
        // Fixed: back to AsExpected.
        let fixed = step(
            &bad,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)),
            None,
            5,
        );
        assert_eq!(cond(&fixed, "Degraded").reason, reason::AS_EXPECTED);
        assert_eq!(transitions(&bad, &fixed).len(), 1);
    }

    #[test]
    fn a_cluster_without_matching_nodes_is_available_once_observed() {
        let s0 = HybridnetClusterStatus::default();
        let unseen = step(&s0, "0.1.0", Some(&obs(1, 0, "0.1.0", 0, 0, 0, 0)), None, 1);
        assert_eq!(summary(&unseen), tft("False", "True", "False"));
        let seen = step(
            &unseen,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 0, 0, 0, 0)),
            None,
            2,
        );
        assert_eq!(summary(&seen), tft("True", "False", "False"));
        assert_eq!(seen.version.as_deref(), Some("0.1.0"));
    }

    #[test]
    fn a_template_of_another_version_is_still_rolling_out() {
        // The spec says 0.2.0 but the DaemonSet (not yet re-applied) still carries 0.1.0.
        let o = obs(1, 1, "0.1.0", 2, 2, 2, 2);
        assert!(o.rolling_out("0.2.0", false));
        assert!(!o.rolling_out("0.1.0", false));
        let mut no_label = o.clone();
        no_label.template_version = None;
        assert!(no_label.rolling_out("0.1.0", false));
    }

    #[test]
    fn refused_cluster_is_only_degraded_not_singleton() {
        let f = Failure {
            reason: reason::NOT_SINGLETON,
            message: "only default".into(),
        };
        let s = refused(Some(1), &f, &HybridnetClusterStatus::default(), 7);
        assert_eq!(summary(&s), tft("False", "False", "True"));
        assert_eq!(cond(&s, "Degraded").reason, "NotSingleton");
        assert_eq!(s.version, None);
        assert_eq!(s.node_agents, None);
    }

    fn rolling(
        since: i64,
        generation: i64,
        counts: (i32, i32, i32, i32),
    ) -> HybridnetClusterStatus {
        HybridnetClusterStatus {
            observed_generation: Some(generation),
            conditions: Some(vec![Condition {
                type_: condition::PROGRESSING.into(),
                status: "True".into(),
                reason: reason::ROLLING_OUT.into(),
                message: String::new(),
                observed_generation: Some(generation),
                last_transition_time: time_at(since),
            }]),
            version: None,
            target_version: Some("0.1.0".into()),
            node_agents: Some(RolloutCounts {
                desired: counts.0,
                updated: counts.1,
                ready: counts.2,
                available: counts.3,
            }),
        }
    }

    fn counts(d: i32, u: i32, r: i32, a: i32) -> RolloutCounts {
        RolloutCounts {
            desired: d,
            updated: u,
            ready: r,
            available: a,
        }
    }

    #[test]
    fn an_install_first_seen_with_every_pod_updated_but_none_available_is_still_rolling_out() {
        let s = step(
            &HybridnetClusterStatus::default(),
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 1, 1, 0, 0)),
            None,
            1,
        );
        assert_eq!(summary(&s), tft("False", "True", "False"));
        assert_eq!(s.version, None);
        let up = step(&s, "0.1.0", Some(&obs(1, 1, "0.1.0", 1, 1, 1, 1)), None, 2);
        assert_eq!(summary(&up), tft("True", "False", "False"));
        assert_eq!(up.version.as_deref(), Some("0.1.0"));
    }

    #[test]
    fn rollout_progress_deadline_and_clock_edges() {
        let prev = rolling(100, 3, (2, 1, 0, 0));
        let same = counts(2, 1, 0, 0);
        let at = |now: i64| rollout_progress(&prev, Some(3), &same, now, 600);
        // Exactly the deadline is not longer than it; one second more is.
        assert_eq!(
            at(700),
            RolloutProgress {
                since: 100,
                stuck: false
            }
        );
        assert_eq!(
            at(701),
            RolloutProgress {
                since: 100,
                stuck: true
            }
        );
        assert!(at(i64::MAX).stuck, "no overflow at the end of time");
        // A last-progress time from the future is not trusted: the wait restarts now.
        assert_eq!(
            at(50),
            RolloutProgress {
                since: 50,
                stuck: false
            }
        );
        assert_eq!(
            at(100),
            RolloutProgress {
                since: 100,
                stuck: false
            }
        );
        // An unbounded deadline never fires; a zero deadline fires one second after progress.
        assert!(!rollout_progress(&prev, Some(3), &same, i64::MAX, i64::MAX).stuck);
        assert!(!rollout_progress(&prev, Some(3), &same, 100, 0).stuck);
        assert!(rollout_progress(&prev, Some(3), &same, 101, 0).stuck);
        // Any of updated, ready, available going up is progress.
        for c in [counts(2, 2, 0, 0), counts(2, 1, 1, 0), counts(2, 1, 0, 1)] {
            assert_eq!(
                rollout_progress(&prev, Some(3), &c, 900, 600),
                RolloutProgress {
                    since: 900,
                    stuck: false
                },
                "{c:?}"
            );
        }
        // Going down, or only more nodes to run on, is not.
        for c in [counts(2, 0, 0, 0), counts(3, 1, 0, 0), counts(1, 1, 0, 0)] {
            assert_eq!(
                rollout_progress(&prev, Some(3), &c, 900, 600),
                RolloutProgress {
                    since: 100,
                    stuck: true
                },
                "{c:?}"
            );
        }
        // A new spec generation starts a new rollout, and so does a first one.
        assert_eq!(
            rollout_progress(&prev, Some(4), &same, 900, 600),
            RolloutProgress {
                since: 900,
                stuck: false
            }
        );
        let mut done = prev.clone();
        done.conditions.as_mut().unwrap()[0].status = "False".into();
        assert_eq!(rollout_progress(&done, Some(3), &same, 900, 600).since, 900);
        assert_eq!(
            rollout_progress(&HybridnetClusterStatus::default(), Some(3), &same, 900, 600).since,
            900
        );
    }

    #[test]
    fn a_rollout_without_progress_is_degraded_until_it_moves_and_a_restart_keeps_the_timer() {
        let s0 = step(&HybridnetClusterStatus::default(), "0.1.0", None, None, 0);
        // The DaemonSet appears with its pod scheduled: progress at 10.
        let stalled = obs(1, 1, "0.1.0", 1, 1, 0, 0);
        let s1 = step(&s0, "0.1.0", Some(&stalled), None, 10);
        assert_eq!(summary(&s1), tft("False", "True", "False"));
        assert_eq!(
            cond(&s1, "Progressing").last_transition_time.0.as_second(),
            10
        );
        assert_eq!(recheck_in(&s1, 10, 600), Some(601));
        assert_eq!(recheck_in(&s1, 605, 600), Some(6));
        let s2 = step(&s1, "0.1.0", Some(&stalled), None, 610);
        assert_eq!(s2, s1, "nothing changes up to the deadline");
        let s3 = step(&s2, "0.1.0", Some(&stalled), None, 611);
        assert_eq!(summary(&s3), tft("False", "True", "True"));
        let d = cond(&s3, "Degraded");
        assert_eq!(d.reason, reason::ROLLOUT_STUCK);
        assert_eq!(
            d.message,
            "DaemonSet ns/hybridnet-node made no rollout progress since 1970-01-01T00:00:10Z \
             (deadline 600s): 1 of 1 node agents updated, 0 ready, 0 available"
        );
        assert_eq!(d.last_transition_time.0.as_second(), 611);
        assert_eq!(recheck_in(&s3, 611, 600), None);
        let t = transitions(&s2, &s3);
        assert_eq!(
            (t[0].0.as_str(), t[0].1.as_str(), t[0].2.as_str()),
            ("Degraded", "True", "RolloutStuck")
        );
        // An operator restart reads the status back from the API: still stuck, nothing rewritten.
        let reread: HybridnetClusterStatus =
            serde_json::from_value(serde_json::to_value(&s3).unwrap()).unwrap();
        assert_eq!(step(&reread, "0.1.0", Some(&stalled), None, 5000), s3);
        // A real failure takes precedence in Degraded.
        let f = Failure {
            reason: reason::APPLY_FAILED,
            message: "403".into(),
        };
        let failed = step(&s3, "0.1.0", Some(&stalled), Some(&f), 5001);
        assert_eq!(cond(&failed, "Degraded").reason, reason::APPLY_FAILED);
        // Progress resumes: Degraded clears, the timer restarts.
        let moving = step(
            &s3,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 2, 2, 1, 1)),
            None,
            6000,
        );
        assert_eq!(summary(&moving), tft("True", "True", "False"));
        assert_eq!(cond(&moving, "Degraded").reason, reason::AS_EXPECTED);
        assert_eq!(
            cond(&moving, "Progressing")
                .last_transition_time
                .0
                .as_second(),
            6000
        );
        // Done: not progressing, available, no deadline to watch.
        let done = step(
            &moving,
            "0.1.0",
            Some(&obs(1, 1, "0.1.0", 2, 2, 2, 2)),
            None,
            6001,
        );
        assert_eq!(summary(&done), tft("True", "False", "False"));
        assert_eq!(recheck_in(&done, 6001, 600), None);
    }

    #[test]
    fn rollout_observation_reads_the_daemonset() {
        let mut ds = DaemonSet::default();
        ds.metadata.generation = Some(4);
        ds.spec.template.metadata = Some(Default::default());
        ds.spec.template.metadata.as_mut().unwrap().labels =
            Some([(names::LABEL_VERSION.to_string(), "0.2.0".to_string())].into());
        ds.status = Some(k8s_openapi::api::apps::v1::DaemonSetStatus {
            observed_generation: Some(4),
            desired_number_scheduled: 5,
            updated_number_scheduled: Some(4),
            number_ready: 3,
            number_available: Some(2),
            ..Default::default()
        });
        let o = RolloutObservation::from_daemonset(&ds);
        assert_eq!(o, obs(4, 4, "0.2.0", 5, 4, 3, 2));
        assert!(o.template_current("0.2.0"));
        assert!(!o.template_current("0.1.0"));
        assert!(o.rolling_out("0.2.0", false));
    }
}

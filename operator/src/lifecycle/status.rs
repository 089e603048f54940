//! Pure status computation for a HybridnetCluster, following the OpenShift operator conventions:
//!
//! - `Available` is False only when no node agent is available and no normal upgrade explains it;
//!   once the installation has been available, a rolling upgrade never drops it.
//! - `Progressing` is True while the DaemonSet rolls out a new template (a version or config change),
//!   not while it merely adjusts to nodes joining or rebooting.
//! - `Degraded` is True for persistent failures: an invalid spec, a refused singleton, a failed apply.

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
}

fn previous_condition<'a>(prev: &'a HybridnetClusterStatus, t: &str) -> Option<&'a Condition> {
    prev.conditions.iter().flatten().find(|c| c.type_ == t)
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
        .unwrap_or_else(|| {
            Time(k8s_openapi::jiff::Timestamp::from_second(input.now).unwrap_or_default())
        });
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
            let was_rolling_out = previous_condition(prev, condition::PROGRESSING)
                .is_some_and(|c| c.status == "True");
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
                condition(
                    input,
                    condition::PROGRESSING,
                    true,
                    reason::ROLLING_OUT,
                    format!(
                        "rolling out version {target}: {} of {} node agents updated, {} available",
                        c.updated, c.desired, c.available
                    ),
                )
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
    let degraded = match input.failure {
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

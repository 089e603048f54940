//! `migrate check`: what of an upstream (Go) hybridnet install is still there, and whether the
//! migration is done (docs/migration.md). Pure: the shell gathers [`MigrateInput`].
//!
//! Findings, each with the next step:
//! - an upstream workload (`hybridnet-manager`, `hybridnet-webhook` Deployments, the
//!   `hybridnet-daemon` DaemonSet in kube-system) that still exists;
//! - a webhook configuration whose webhooks still call upstream's Service
//!   (`kube-system/hybridnet-webhook`);
//! - upstream's manager Lease held by a live holder that is not one of ours;
//! - a node where upstream's daemon and our agent both run (they would fight over the node);
//! - a node whose NodeInfo has no leftovers report yet (no agent of ours looked at it) or reports
//!   upstream state still on the node.
//!
//! Clean (exit 0) only when nothing of upstream is left.

use std::collections::{BTreeMap, BTreeSet};

use hybridnet_api::migration::{
    NODE_LEFTOVERS_ANNOTATION, NodeLeftovers, UPSTREAM_DAEMON, UPSTREAM_LEADER_LEASE,
    UPSTREAM_MANAGER, UPSTREAM_NAMESPACE, UPSTREAM_WEBHOOK, UPSTREAM_WEBHOOK_SERVICE,
};
use serde::Serialize;

use crate::output::TextCell;

/// An upstream workload found (Deployment or DaemonSet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: &'static str,
    pub name: String,
    pub desired: i32,
    pub ready: i32,
}

/// A webhook configuration of one of upstream's names: the Services its webhooks call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub kind: &'static str,
    pub name: String,
    /// `namespace/name` of each webhook's Service (URL webhooks are left out).
    pub services: Vec<String>,
}

/// A Lease (only what the check needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFacts {
    pub namespace: String,
    pub name: String,
    pub holder: Option<String>,
    /// Seconds since the last renewal (None: never renewed).
    pub renewed_ago: Option<i64>,
    pub duration_seconds: Option<i32>,
}

impl LeaseFacts {
    fn live(&self) -> bool {
        match (&self.holder, self.renewed_ago, self.duration_seconds) {
            (Some(h), Some(ago), Some(d)) => !h.is_empty() && ago <= i64::from(d),
            _ => false,
        }
    }
}

/// Everything the check looks at.
#[derive(Debug, Clone, Default)]
pub struct MigrateInput {
    pub workloads: Vec<Workload>,
    pub webhook_configs: Vec<WebhookConfig>,
    /// Every Lease named like upstream's manager Lease, in any namespace (ours sit in the
    /// operator's namespace, upstream's in kube-system).
    pub leases: Vec<LeaseFacts>,
    /// Node names.
    pub nodes: Vec<String>,
    /// NodeInfo name -> its annotations.
    pub nodeinfo_annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// Nodes running a pod of upstream's daemon.
    pub upstream_daemon_nodes: BTreeSet<String>,
    /// Nodes running a pod of our node agent.
    pub agent_nodes: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateFinding {
    /// `deployment/kube-system/hybridnet-manager`, `node/n1`, ...
    pub object: String,
    pub state: String,
    pub next: String,
    /// Running on as it is would break the cluster (not only leave upstream's remains).
    pub hazard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateReport {
    pub findings: Vec<MigrateFinding>,
    /// Nodes whose agent reports nothing of upstream left (and that run no upstream daemon).
    pub clean_nodes: Vec<String>,
    /// Nodes in the cluster.
    pub nodes: usize,
}

impl MigrateReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
    pub fn hazards(&self) -> usize {
        self.findings.iter().filter(|f| f.hazard).count()
    }
}

fn finding(object: String, state: String, next: &str, hazard: bool) -> MigrateFinding {
    MigrateFinding {
        object,
        state,
        next: next.to_string(),
        hazard,
    }
}

pub fn check(input: &MigrateInput) -> MigrateReport {
    let mut out = Vec::new();
    for w in &input.workloads {
        let next = match w.name.as_str() {
            n if n == UPSTREAM_MANAGER => {
                "scale it to 0 once the operator runs: the operator's leader takes the IPAM over when upstream's Lease expires"
            }
            n if n == UPSTREAM_WEBHOOK => "scale it to 0 once the operator serves the webhooks",
            n if n == UPSTREAM_DAEMON => {
                "switch the remaining nodes (label hybridnet.io/migrated=true), then delete it"
            }
            _ => "delete it",
        };
        out.push(finding(
            format!(
                "{}/{UPSTREAM_NAMESPACE}/{}",
                w.kind.to_ascii_lowercase(),
                w.name
            ),
            format!("{}/{} ready", w.ready, w.desired),
            next,
            false,
        ));
    }
    let upstream_svc = format!("{UPSTREAM_NAMESPACE}/{UPSTREAM_WEBHOOK_SERVICE}");
    let webhook_running = input
        .workloads
        .iter()
        .any(|w| w.name == UPSTREAM_WEBHOOK && w.ready > 0);
    for c in &input.webhook_configs {
        if c.services.contains(&upstream_svc) {
            out.push(finding(
                format!("{}/{}", c.kind.to_ascii_lowercase(), c.name),
                format!("calls upstream's Service {upstream_svc}"),
                "install the operator (it takes the configuration over)",
                // Nothing answers there: Network and Subnet changes (failurePolicy Fail) fail.
                !webhook_running,
            ));
        }
    }
    let ours: BTreeSet<&str> = input
        .leases
        .iter()
        .filter(|l| l.namespace != UPSTREAM_NAMESPACE && l.name == UPSTREAM_LEADER_LEASE)
        .filter_map(|l| l.holder.as_deref())
        .collect();
    for l in &input.leases {
        if l.namespace == UPSTREAM_NAMESPACE
            && l.name == UPSTREAM_LEADER_LEASE
            && l.live()
            && let Some(h) = &l.holder
            && !ours.contains(h.as_str())
        {
            out.push(finding(
                format!("lease/{}/{}", l.namespace, l.name),
                format!("held by {h}"),
                "upstream's manager allocates: scale hybridnet-manager to 0 to hand the IPAM to the operator",
                false,
            ));
        }
    }
    let mut clean = Vec::new();
    for n in &input.nodes {
        if input.upstream_daemon_nodes.contains(n) && input.agent_nodes.contains(n) {
            out.push(finding(
                format!("node/{n}"),
                "runs upstream's daemon and our node agent".into(),
                "keep upstream's DaemonSet off switched nodes (see docs/migration.md)",
                true,
            ));
        }
        let annotation = input
            .nodeinfo_annotations
            .get(n)
            .and_then(|a| a.get(NODE_LEFTOVERS_ANNOTATION));
        let both = input.upstream_daemon_nodes.contains(n) && input.agent_nodes.contains(n);
        match annotation.map(|a| NodeLeftovers::parse_annotation(a)) {
            None => out.push(finding(
                format!("node/{n}"),
                "not switched: no node agent of ours has reported on it".into(),
                "label it hybridnet.io/migrated=true and wait for its agent",
                false,
            )),
            Some(Err(e)) => out.push(finding(
                format!("node/{n}"),
                e.to_string(),
                "check the node agent's version and log",
                false,
            )),
            Some(Ok(l)) if l.is_empty() => {
                if !both {
                    clean.push(n.clone());
                }
            }
            Some(Ok(l)) => out.push(finding(
                format!("node/{n}"),
                format!("upstream leftovers: {}", l.0.join("; ")),
                "see the node agent's log: these could not be removed",
                false,
            )),
        }
    }
    MigrateReport {
        findings: out,
        clean_nodes: clean,
        nodes: input.nodes.len(),
    }
}

/// Table of findings: header and rows (hazards highlighted).
pub fn findings_table(r: &MigrateReport) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    (
        vec!["OBJECT", "STATE", "NEXT STEP"],
        r.findings
            .iter()
            .map(|f| {
                let state = if f.hazard {
                    TextCell::plain(format!("HAZARD: {}", f.state)).warned(true)
                } else {
                    f.state.as_str().into()
                };
                vec![f.object.as_str().into(), state, f.next.as_str().into()]
            })
            .collect(),
    )
}

/// The last line of the table output.
pub fn summary(r: &MigrateReport) -> String {
    if r.is_clean() {
        return format!(
            "migration complete: nothing of upstream hybridnet is left ({} nodes clean)",
            r.clean_nodes.len()
        );
    }
    let hazards = r.hazards();
    let mut s = format!(
        "{} thing(s) still belong to upstream hybridnet; {} of {} nodes switched and clean",
        r.findings.len(),
        r.clean_nodes.len(),
        r.nodes
    );
    if hazards > 0 {
        s.push_str(&format!(
            "; {hazards} hazard(s): not safe to go on until they are fixed"
        ));
    } else {
        s.push_str("; safe to go on with the next step");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ns: &str, holder: &str, ago: i64) -> LeaseFacts {
        LeaseFacts {
            namespace: ns.into(),
            name: UPSTREAM_LEADER_LEASE.into(),
            holder: Some(holder.into()),
            renewed_ago: Some(ago),
            duration_seconds: Some(15),
        }
    }

    fn annotated(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(NODE_LEFTOVERS_ANNOTATION.to_string(), v.to_string())])
    }

    fn upstream_cluster() -> MigrateInput {
        MigrateInput {
            workloads: vec![
                Workload {
                    kind: "Deployment",
                    name: UPSTREAM_MANAGER.into(),
                    desired: 3,
                    ready: 3,
                },
                Workload {
                    kind: "DaemonSet",
                    name: UPSTREAM_DAEMON.into(),
                    desired: 2,
                    ready: 2,
                },
            ],
            webhook_configs: vec![WebhookConfig {
                kind: "ValidatingWebhookConfiguration",
                name: "hybridnet-validating-webhook".into(),
                services: vec!["kube-system/hybridnet-webhook".into()],
            }],
            leases: vec![lease("kube-system", "node1_5b0a2a6e", 1)],
            nodes: vec!["n1".into(), "n2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn an_upstream_install_is_reported_whole() {
        let r = check(&upstream_cluster());
        let objects: Vec<&str> = r.findings.iter().map(|f| f.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                "deployment/kube-system/hybridnet-manager",
                "daemonset/kube-system/hybridnet-daemon",
                "validatingwebhookconfiguration/hybridnet-validating-webhook",
                "lease/kube-system/hybridnet-manager-election",
                "node/n1",
                "node/n2"
            ]
        );
        // The webhook Deployment is gone while the configuration still calls it.
        assert_eq!(r.hazards(), 1);
        assert!(summary(&r).contains("not safe to go on"), "{}", summary(&r));
    }

    #[test]
    fn a_finished_migration_is_clean() {
        let input = MigrateInput {
            webhook_configs: vec![WebhookConfig {
                kind: "ValidatingWebhookConfiguration",
                name: "hybridnet-validating-webhook".into(),
                services: vec!["hybridnet-system/hybridnet-webhook".into()],
            }],
            // Our operator holds upstream's Lease and its own.
            leases: vec![
                lease("kube-system", "hybridnet-operator-7c9-abc", 1),
                lease("hybridnet-system", "hybridnet-operator-7c9-abc", 1),
            ],
            nodes: vec!["n1".into(), "n2".into()],
            nodeinfo_annotations: BTreeMap::from([
                ("n1".into(), annotated("[]")),
                ("n2".into(), annotated("[]")),
            ]),
            agent_nodes: ["n1".to_string(), "n2".to_string()].into(),
            ..Default::default()
        };
        let r = check(&input);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.clean_nodes, ["n1", "n2"]);
        assert!(summary(&r).starts_with("migration complete"));
    }

    #[test]
    fn half_way_nodes_and_hazards() {
        let mut input = upstream_cluster();
        input.workloads.retain(|w| w.name != UPSTREAM_MANAGER);
        input.webhook_configs.clear();
        // Upstream's manager stopped 20 s ago: its Lease is not live any more.
        input.leases = vec![lease("kube-system", "node1_5b0a2a6e", 20)];
        input
            .nodeinfo_annotations
            .insert("n1".into(), annotated("[]"));
        input
            .nodeinfo_annotations
            .insert("n2".into(), annotated(r#"["ipset HYBR-ALL (in use)"]"#));
        input.agent_nodes = ["n1".to_string(), "n2".to_string()].into();
        input.upstream_daemon_nodes = ["n2".to_string()].into();
        let r = check(&input);
        let states: Vec<(&str, bool)> = r
            .findings
            .iter()
            .map(|f| (f.object.as_str(), f.hazard))
            .collect();
        assert_eq!(
            states,
            [
                ("daemonset/kube-system/hybridnet-daemon", false),
                ("node/n2", true),
                ("node/n2", false)
            ]
        );
        assert!(r.findings[2].state.contains("ipset HYBR-ALL (in use)"));
        assert_eq!(r.clean_nodes, ["n1"]);
        assert!(
            summary(&r).contains("1 of 2 nodes switched and clean"),
            "{}",
            summary(&r)
        );
    }

    #[test]
    fn a_malformed_report_is_a_finding_naming_the_annotation() {
        let input = MigrateInput {
            nodes: vec!["n1".into()],
            nodeinfo_annotations: BTreeMap::from([("n1".into(), annotated("{not json"))]),
            ..Default::default()
        };
        let r = check(&input);
        assert_eq!(r.findings.len(), 1);
        assert!(
            r.findings[0].state.contains(NODE_LEFTOVERS_ANNOTATION),
            "{r:?}"
        );
    }

    #[test]
    fn lease_liveness() {
        let mut l = lease("kube-system", "x", 15);
        assert!(l.live());
        l.renewed_ago = Some(16);
        assert!(!l.live());
        l.renewed_ago = None;
        assert!(!l.live());
        l = lease("kube-system", "", 1);
        assert!(!l.live());
    }
}

//! `status`: the HybridnetCluster `default` and a summary of networks and their usage.

use hybridnet_api::constants::annotation::NODE_KERNEL_CHECK;
use hybridnet_api::operator::{HybridnetCluster, RolloutCounts};
use hybridnet_api::v1::{Network, NodeInfo};
use serde::Serialize;

use crate::bgp_status::{BgpSessionView, BgpSummary, render_sessions};
use crate::output::{TableStyle, TextCell, render_table};
use crate::usage::{Level, UsageReport};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
    pub last_transition_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub name: String,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// `spec.version` (absent: the operator's own).
    pub requested_version: Option<String>,
    pub version: Option<String>,
    pub target_version: Option<String>,
    pub node_agents: Option<RolloutCounts>,
    pub conditions: Vec<ConditionView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub mode: String,
    #[serde(rename = "netID")]
    pub net_id: Option<i32>,
    pub nodes: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub plugin_version: String,
    /// `None` when no HybridnetCluster exists (hybridnet was not installed through the operator).
    pub cluster: Option<ClusterView>,
    pub networks: Vec<NetworkView>,
    pub usage: UsageReport,
    /// Every node's BGP sessions as its agent publishes them (empty without BGP).
    pub bgp_sessions: Vec<BgpSessionView>,
    /// Things worth attention, one sentence each.
    pub warnings: Vec<String>,
}

pub fn cluster_view(c: &HybridnetCluster) -> ClusterView {
    let st = c.status.clone().unwrap_or_default();
    let mut conditions: Vec<ConditionView> = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| ConditionView {
            type_: c.type_,
            status: c.status,
            reason: c.reason,
            message: c.message,
            observed_generation: c.observed_generation,
            last_transition_time: Some(c.last_transition_time.0.to_string()),
        })
        .collect();
    let rank = |t: &str| match t {
        "Available" => 0,
        "Progressing" => 1,
        "Degraded" => 2,
        _ => 3,
    };
    conditions.sort_by(|a, b| (rank(&a.type_), &a.type_).cmp(&(rank(&b.type_), &b.type_)));
    ClusterView {
        name: c.metadata.name.clone().unwrap_or_default(),
        generation: c.metadata.generation,
        observed_generation: st.observed_generation,
        requested_version: c.spec.version.clone(),
        version: st.version,
        target_version: st.target_version,
        node_agents: st.node_agents,
        conditions,
    }
}

pub fn network_view(n: &Network) -> NetworkView {
    NetworkView {
        name: n.metadata.name.clone().unwrap_or_default(),
        type_: n.spec.effective_type().to_string(),
        mode: n.spec.effective_mode().to_string(),
        net_id: n.spec.net_id,
        nodes: n
            .status
            .as_ref()
            .and_then(|s| s.node_list.as_ref())
            .map(|l| l.len()),
    }
}

/// `status`'s exit code (documented in `--help` and docs/cli.md): 4 when the HybridnetCluster is
/// `Degraded=True`, else 5 when it is not `Available=True` (condition False, Unknown or not
/// reported yet), else 0. Without a HybridnetCluster (hybridnet not installed through the
/// operator) there is no such condition: 0, with the warning the report carries.
pub fn exit_code(report: &StatusReport) -> i32 {
    let Some(c) = &report.cluster else {
        return 0;
    };
    let is_true = |t: &str| {
        c.conditions
            .iter()
            .any(|x| x.type_ == t && x.status == "True")
    };
    if is_true("Degraded") {
        EXIT_DEGRADED
    } else if !is_true("Available") {
        EXIT_NOT_AVAILABLE
    } else {
        0
    }
}

/// `status` exit code: the HybridnetCluster is `Degraded=True`.
pub const EXIT_DEGRADED: i32 = 4;
/// `status` exit code: the HybridnetCluster is not `Available=True`.
pub const EXIT_NOT_AVAILABLE: i32 = 5;

/// Longest part of a node's kernel check report quoted in a warning.
const MAX_KERNEL_REPORT: usize = 400;

/// One warning per node whose agent refused to start, from its NodeInfo annotation
/// `hybridnet.io/kernel-check` (written by the agent before it exits), sorted by node.
pub fn kernel_check_warnings(node_infos: &[NodeInfo]) -> Vec<String> {
    let mut out: Vec<(String, String)> = node_infos
        .iter()
        .filter_map(|n| {
            let report = n.metadata.annotations.as_ref()?.get(NODE_KERNEL_CHECK)?;
            let mut text: String = report
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_KERNEL_REPORT)
                .collect();
            if report.chars().count() > MAX_KERNEL_REPORT {
                text.push_str("...");
            }
            let node = n.metadata.name.clone().unwrap_or_default();
            Some((
                node.clone(),
                format!(
                    "node {node}: the node agent refused to start: {}",
                    text.trim()
                ),
            ))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, w)| w).collect()
}

/// Builds the report and its warnings.
pub fn status_report(
    plugin_version: &str,
    cluster: Option<&HybridnetCluster>,
    networks: &[Network],
    usage: UsageReport,
    bgp: BgpSummary,
) -> StatusReport {
    let cluster = cluster.map(cluster_view);
    let mut warnings = Vec::new();
    match &cluster {
        None => warnings.push(
            "no HybridnetCluster \"default\": run `kubectl hybridnet install` to install hybridnet through the operator".into(),
        ),
        Some(c) => {
            for cond in &c.conditions {
                let bad = match cond.type_.as_str() {
                    "Available" => cond.status != "True",
                    "Degraded" => cond.status == "True",
                    _ => false,
                };
                if bad {
                    warnings.push(format!(
                        "{} is {}: {} {}",
                        cond.type_, cond.status, cond.reason, cond.message
                    ).trim_end().to_string());
                }
            }
            if c.conditions.is_empty() {
                warnings.push("the operator has not reported any condition yet (is it running?)".into());
            }
            if let (Some(g), Some(o)) = (c.generation, c.observed_generation)
                && o < g
            {
                warnings.push(format!(
                    "the operator has not observed the latest spec yet (generation {g}, observed {o})"
                ));
            }
            if let Some(na) = &c.node_agents
                && (na.ready < na.desired || na.updated < na.desired)
            {
                warnings.push(format!(
                    "node agents: {} of {} ready, {} updated",
                    na.ready, na.desired, na.updated
                ));
            }
        }
    }
    if networks.is_empty() {
        warnings.push(
            "no Network exists: pods cannot get addresses (`kubectl hybridnet network create`)"
                .into(),
        );
    }
    for n in &usage.networks {
        if n.subnets == 0 {
            // Zero of zero addresses is not "exhausted": say what is missing.
            warnings.push(format!(
                "network {0} has no subnet: its pods cannot get addresses (`kubectl hybridnet subnet create NAME --network {0} --cidr CIDR`)",
                n.name
            ));
            continue;
        }
        match n.level {
            Level::Ok => {}
            Level::NearExhaustion => warnings.push(format!(
                "network {} (IPv{}) is {:.1}% used",
                n.name, n.version, n.percent
            )),
            Level::Exhausted => warnings.push(format!(
                "network {} (IPv{}) has no address left",
                n.name, n.version
            )),
        }
    }
    warnings.extend(bgp.warnings);
    StatusReport {
        plugin_version: plugin_version.to_string(),
        cluster,
        networks: networks.iter().map(network_view).collect(),
        usage,
        bgp_sessions: bgp.sessions,
        warnings,
    }
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// The human-readable status; `now` dates the BGP sessions' SINCE column.
pub fn render_status(
    r: &StatusReport,
    now: k8s_openapi::jiff::Timestamp,
    style: TableStyle,
) -> String {
    let mut out = String::new();
    match &r.cluster {
        None => out.push_str("HybridnetCluster: none\n"),
        Some(c) => {
            out.push_str(&format!(
                "HybridnetCluster: {} (generation {}, observed {})\n",
                c.name,
                dash(c.generation),
                dash(c.observed_generation)
            ));
            out.push_str(&format!(
                "Version:          {} (target {}, requested {})\n",
                dash(c.version.as_deref()),
                dash(c.target_version.as_deref()),
                c.requested_version.as_deref().unwrap_or("operator default")
            ));
            match &c.node_agents {
                Some(n) => out.push_str(&format!(
                    "Node agents:      desired {}, updated {}, ready {}, available {}\n",
                    n.desired, n.updated, n.ready, n.available
                )),
                None => out.push_str("Node agents:      not reported\n"),
            }
        }
    }
    out.push_str(&format!("Plugin:           {}\n", r.plugin_version));
    if let Some(c) = &r.cluster
        && !c.conditions.is_empty()
    {
        out.push('\n');
        let rows: Vec<Vec<TextCell>> = c
            .conditions
            .iter()
            .map(|k| {
                let bad = (k.type_ == "Available" && k.status != "True")
                    || (k.type_ == "Degraded" && k.status == "True");
                vec![
                    k.type_.as_str().into(),
                    TextCell::plain(k.status.as_str()).warned(bad),
                    k.reason.as_str().into(),
                    k.message.as_str().into(),
                ]
            })
            .collect();
        out.push_str(&render_table(
            &["condition", "status", "reason", "message"],
            &rows,
            style,
        ));
    }
    out.push('\n');
    if r.networks.is_empty() {
        out.push_str("Networks: none\n");
    } else {
        let rows: Vec<Vec<TextCell>> = r
            .networks
            .iter()
            .flat_map(|n| {
                let fams: Vec<_> = r
                    .usage
                    .networks
                    .iter()
                    .filter(|u| u.name == n.name)
                    .collect();
                let base = vec![
                    TextCell::plain(n.name.as_str()),
                    n.type_.as_str().into(),
                    n.mode.as_str().into(),
                    TextCell::number(dash(n.net_id)),
                    TextCell::number(dash(n.nodes)),
                ];
                if fams.is_empty() {
                    let mut row = base;
                    row.extend(["-", "0", "-", "-", "-"].map(TextCell::number));
                    vec![row]
                } else {
                    fams.into_iter()
                        .map(|u| {
                            let mut row = base.clone();
                            row.push(TextCell::plain(format!("IPv{}", u.version)));
                            row.push(TextCell::number(u.subnets.to_string()));
                            row.push(TextCell::number(format!(
                                "{}/{}",
                                u.counts.used, u.counts.total
                            )));
                            row.push(TextCell::number(u.counts.available.to_string()));
                            row.push(
                                TextCell::number(format!("{:.1}%", u.percent))
                                    .warned(u.level != Level::Ok),
                            );
                            row
                        })
                        .collect()
                }
            })
            .collect();
        out.push_str(&render_table(
            &[
                "network",
                "type",
                "mode",
                "netid",
                "nodes",
                "family",
                "subnets",
                "used/total",
                "available",
                "used%",
            ],
            &rows,
            style,
        ));
    }
    if !r.usage.subnets.is_empty() {
        out.push('\n');
        let (h, rows) = crate::usage::subnet_table(&r.usage.subnets);
        out.push_str(&render_table(&h, &rows, style));
    }
    if !r.bgp_sessions.is_empty() {
        out.push_str("\nBGP SESSIONS\n");
        out.push_str(&render_sessions(&r.bgp_sessions, now, style));
    }
    if !r.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for w in &r.warnings {
            out.push_str(&format!("  - {w}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::operator::{HybridnetClusterSpec, HybridnetClusterStatus};
    use hybridnet_api::v1::{NetworkMode, NetworkSpec, NetworkType};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn nodes_whose_agent_refused_to_start_are_named_with_the_report() {
        let info = |name: &str, report: Option<&str>| {
            let mut n = NodeInfo::new(name, Default::default());
            if let Some(r) = report {
                n.metadata.annotations =
                    Some([(NODE_KERNEL_CHECK.to_string(), r.to_string())].into());
            }
            n
        };
        let w = kernel_check_warnings(&[
            info(
                "n2",
                Some(
                    "this kernel lacks what the node agent needs: VXLAN devices (CONFIG_VXLAN) (Operation not supported)",
                ),
            ),
            info("n1", None),
            info("n0", Some("lacks\nnft\u{1b}[31m")),
        ]);
        assert_eq!(
            w,
            [
                "node n0: the node agent refused to start: lacks nft [31m",
                "node n2: the node agent refused to start: this kernel lacks what the node agent needs: VXLAN devices (CONFIG_VXLAN) (Operation not supported)",
            ]
        );
        let long = kernel_check_warnings(&[info("n", Some(&"x".repeat(100_000)))]);
        assert!(
            long[0].len() < 500 && long[0].ends_with("..."),
            "{}",
            long[0].len()
        );
        assert!(kernel_check_warnings(&[]).is_empty());
    }

    fn cond(t: &str, s: &str) -> Condition {
        Condition {
            type_: t.into(),
            status: s.into(),
            reason: "Because".into(),
            message: format!("{t} is {s}"),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn healthy_and_degraded() {
        let mut c = HybridnetCluster::new("default", HybridnetClusterSpec::default());
        c.metadata.generation = Some(2);
        c.status = Some(HybridnetClusterStatus {
            observed_generation: Some(1),
            conditions: Some(vec![cond("Degraded", "True"), cond("Available", "True")]),
            version: Some("0.1.0".into()),
            target_version: Some("0.1.0".into()),
            node_agents: Some(RolloutCounts {
                desired: 3,
                updated: 3,
                ready: 2,
                available: 2,
            }),
        });
        let mut n = Network::new(
            "overlay",
            NetworkSpec {
                net_id: Some(4),
                network_type: Some(NetworkType::Overlay),
                mode: Some(NetworkMode::Vxlan),
                ..Default::default()
            },
        );
        n.metadata.name = Some("overlay".into());
        let usage = crate::usage::usage_report(std::slice::from_ref(&n), &[], &[], None, 90);
        let r = status_report(
            "0.1.0",
            Some(&c),
            &[n.clone()],
            usage.clone(),
            BgpSummary::default(),
        );
        assert_eq!(exit_code(&r), EXIT_DEGRADED);
        // The exit code follows the conditions: Degraded wins, then not Available, else 0.
        for (conds, want) in [
            (
                vec![cond("Available", "True"), cond("Degraded", "False")],
                0,
            ),
            (
                vec![cond("Available", "False"), cond("Degraded", "False")],
                EXIT_NOT_AVAILABLE,
            ),
            (vec![cond("Available", "Unknown")], EXIT_NOT_AVAILABLE),
            (vec![], EXIT_NOT_AVAILABLE),
            (
                vec![cond("Available", "False"), cond("Degraded", "True")],
                EXIT_DEGRADED,
            ),
        ] {
            let mut c2 = c.clone();
            if let Some(st) = c2.status.as_mut() {
                st.conditions = Some(conds.clone());
            }
            let r2 = status_report(
                "0.1.0",
                Some(&c2),
                &[n.clone()],
                usage.clone(),
                BgpSummary::default(),
            );
            assert_eq!(exit_code(&r2), want, "{conds:?}");
        }
        let none = status_report(
            "0.1.0",
            None,
            &[n.clone()],
            usage.clone(),
            BgpSummary::default(),
        );
        assert_eq!(exit_code(&none), 0);
        assert_eq!(r.cluster.as_ref().unwrap().conditions[0].type_, "Available");
        let w = r.warnings.join("\n");
        assert!(w.contains("Degraded is True"), "{w}");
        assert!(w.contains("generation 2, observed 1"), "{w}");
        assert!(w.contains("2 of 3 ready"), "{w}");
        assert!(
            w.contains("network overlay has no subnet: its pods cannot get addresses"),
            "{w}"
        );
        assert!(!w.contains("no address left"), "{w}");
        let now = k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
        let text = render_status(&r, now, TableStyle { terminal: false });
        assert!(!text.contains("BGP SESSIONS"), "{text}");
        assert!(
            text.contains("Node agents:      desired 3, updated 3, ready 2, available 2"),
            "{text}"
        );
        assert!(text.contains("overlay"), "{text}");

        let none = status_report(
            "0.1.0",
            None,
            &[],
            crate::usage::usage_report(&[], &[], &[], None, 90),
            BgpSummary::default(),
        );
        assert!(none.warnings[0].contains("kubectl hybridnet install"));
        assert!(none.warnings[1].contains("no Network"));
    }
}

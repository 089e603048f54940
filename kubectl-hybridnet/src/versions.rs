//! `kubectl hybridnet version`: the plugin's, the operator's and every node agent's version, with
//! skew marked. Pure: the shell fetches the HybridnetCluster and the NodeInfos.
//!
//! Where the versions come from (docs/cli.md "version"):
//! - the operator: annotation `operator.hybridnet.io/operator-version` it writes on the
//!   HybridnetCluster it reconciles;
//! - the operand the components should run: the HybridnetCluster's `status.targetVersion`, else
//!   `status.version`, else `spec.version`, else the operator's own release;
//! - each node agent: annotation `hybridnet.io/agent-version` it writes on its node's NodeInfo.

use serde::Serialize;

use hybridnet_api::constants::annotation;
use hybridnet_api::operator::HybridnetCluster;
use hybridnet_api::v1::NodeInfo;

use crate::output::{TableStyle, TextCell, render_table};

/// One node agent's reported version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentVersion {
    pub node: String,
    /// `None`: the agent wrote no version (older than this release, or not running).
    pub version: Option<String>,
    /// The version differs from the operand target.
    pub skew: bool,
}

/// Everything `version` prints. The first five fields are what `version -o json` printed before
/// the cluster's versions were added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReport {
    pub plugin: String,
    pub version: String,
    pub api_groups: Vec<String>,
    pub os: String,
    pub arch: String,
    /// The operator's release, as it recorded it on the HybridnetCluster.
    pub operator: Option<String>,
    /// The operand version the components should run.
    pub target: Option<String>,
    /// The operand version every component runs (`status.version`).
    pub operand: Option<String>,
    pub node_agents: Vec<AgentVersion>,
    /// Mismatches, one sentence each.
    pub skew: Vec<String>,
    /// What could not be found out.
    pub warnings: Vec<String>,
}

/// Longest version shown; a longer annotation is cut.
const MAX_VERSION_CHARS: usize = 64;

/// A version as read from an object: without a leading `v`, control characters replaced, cut
/// at [`MAX_VERSION_CHARS`] (annotations are free text anyone with write access can set).
fn norm(v: &str) -> String {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let mut out: String = v
        .chars()
        .take(MAX_VERSION_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if v.chars().count() > MAX_VERSION_CHARS {
        out.push_str("...");
    }
    out
}

fn same(a: &str, b: &str) -> bool {
    norm(a) == norm(b)
}

/// The report from what the shell found. `cluster` is the HybridnetCluster `default` or why it
/// is not there; `nodeinfos` the NodeInfos or why they could not be listed.
pub fn version_report(
    plugin_version: &str,
    cluster: Result<&HybridnetCluster, &str>,
    nodeinfos: Result<&[NodeInfo], &str>,
) -> VersionReport {
    let mut skew = Vec::new();
    let mut warnings = Vec::new();
    let (operator, target, operand, desired) = match cluster {
        Ok(c) => {
            let operator = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotation::OPERATOR_VERSION))
                .map(|v| norm(v));
            let st = c.status.as_ref();
            let operand = st.and_then(|s| s.version.as_deref()).map(norm);
            let target = st
                .and_then(|s| s.target_version.as_deref())
                .map(norm)
                .or_else(|| operand.clone())
                .or_else(|| c.spec.version.as_deref().map(norm))
                .or_else(|| operator.clone());
            let desired = st.and_then(|s| s.node_agents.as_ref()).map(|n| n.desired);
            if operator.is_none() {
                warnings.push(
                    "the operator has not recorded its version on the HybridnetCluster (not running, or older than this release)".to_string(),
                );
            }
            (operator, target, operand, desired)
        }
        Err(why) => {
            warnings.push(format!("operator and operand versions unknown: {why}"));
            (None, None, None, None)
        }
    };
    if let Some(op) = &operator
        && !same(op, plugin_version)
    {
        skew.push(format!(
            "the plugin is {plugin_version}, the operator {op}: use the plugin of the operator's release"
        ));
    }
    let mut node_agents = Vec::new();
    match nodeinfos {
        Ok(infos) => {
            for ni in infos {
                let node = ni.metadata.name.clone().unwrap_or_default();
                let version = ni
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(annotation::NODE_AGENT_VERSION))
                    .map(|v| norm(v));
                let differs = match (&version, &target) {
                    (Some(v), Some(t)) => !same(v, t),
                    _ => false,
                };
                if differs {
                    skew.push(format!(
                        "{node}: the node agent runs {}, the cluster's target is {}",
                        version.as_deref().unwrap_or_default(),
                        target.as_deref().unwrap_or_default()
                    ));
                }
                if version.is_none() {
                    warnings.push(format!(
                        "{node}: the node agent reported no version (older than this release, or not running)"
                    ));
                }
                node_agents.push(AgentVersion {
                    node,
                    version,
                    skew: differs,
                });
            }
            node_agents.sort_by(|a, b| a.node.cmp(&b.node));
            if let Some(d) = desired
                && usize::try_from(d).is_ok_and(|d| d > node_agents.len())
            {
                warnings.push(format!(
                    "{d} node agents are scheduled, {} have a NodeInfo (an agent publishes one once a network reaches its node)",
                    node_agents.len()
                ));
            }
        }
        Err(why) => warnings.push(format!("node agent versions unknown: {why}")),
    }
    VersionReport {
        plugin: "kubectl-hybridnet".into(),
        version: plugin_version.to_string(),
        api_groups: vec![
            "networking.alibaba.com/v1".into(),
            "operator.hybridnet.io/v1alpha1".into(),
        ],
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        operator,
        target,
        operand,
        node_agents,
        skew,
        warnings,
    }
}

/// The plugin's line, the same with or without a cluster.
pub fn plugin_line(r: &VersionReport) -> String {
    format!(
        "{} {} ({}/{}; {})\n",
        r.plugin,
        r.version,
        r.os,
        r.arch,
        r.api_groups.join(", ")
    )
}

/// The text of `version`: skew is marked `(skew)` in the table (red on a terminal) and
/// explained under "Version skew".
pub fn render_versions(r: &VersionReport, style: TableStyle) -> String {
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    let mut s = plugin_line(r);
    let op_skew = r.operator.as_deref().is_some_and(|o| !same(o, &r.version));
    s.push_str(&format!(
        "Operator:     {}{}\n",
        or_unknown(&r.operator),
        if op_skew { " (skew)" } else { "" }
    ));
    let operand = match (&r.operand, &r.target) {
        (Some(o), Some(t)) if same(o, t) => o.clone(),
        (o, Some(t)) => format!("{} (target {t})", or_unknown(o)),
        (o, None) => or_unknown(o),
    };
    s.push_str(&format!("Operand:      {operand}\n"));
    if !r.node_agents.is_empty() {
        let at_target = r
            .node_agents
            .iter()
            .filter(|a| a.version.is_some() && !a.skew)
            .count();
        s.push_str(&format!(
            "Node agents:  {at_target} of {} at {}\n\n",
            r.node_agents.len(),
            or_unknown(&r.target)
        ));
        let rows: Vec<Vec<TextCell>> = r
            .node_agents
            .iter()
            .map(|a| {
                let v = match (&a.version, a.skew) {
                    (Some(v), true) => format!("{v} (skew)"),
                    (Some(v), false) => v.clone(),
                    (None, _) => "unknown".into(),
                };
                vec![
                    TextCell::plain(a.node.clone()),
                    TextCell::plain(v).warned(a.skew || a.version.is_none()),
                ]
            })
            .collect();
        s.push_str(&render_table(&["node", "agent version"], &rows, style));
    }
    if !r.skew.is_empty() {
        s.push_str("\nVersion skew:\n");
        for w in &r.skew {
            s.push_str(&format!("  - {w}\n"));
        }
    }
    if !r.warnings.is_empty() {
        s.push_str("\nWarnings:\n");
        for w in &r.warnings {
            s.push_str(&format!("  - {w}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(v: serde_json::Value) -> HybridnetCluster {
        serde_json::from_value(v).unwrap()
    }

    fn info(node: &str, version: Option<&str>) -> NodeInfo {
        let mut v = json!({"apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
            "metadata": {"name": node}, "spec": {}});
        if let Some(ver) = version {
            v["metadata"]["annotations"] = json!({"hybridnet.io/agent-version": ver});
        }
        serde_json::from_value(v).unwrap()
    }

    fn installed(
        operator: Option<&str>,
        target: &str,
        version: &str,
        desired: i32,
    ) -> HybridnetCluster {
        let mut v = json!({"apiVersion": "operator.hybridnet.io/v1alpha1", "kind": "HybridnetCluster",
            "metadata": {"name": "default"}, "spec": {},
            "status": {"version": version, "targetVersion": target,
                       "nodeAgents": {"desired": desired, "updated": desired, "ready": desired, "available": desired}}});
        if let Some(o) = operator {
            v["metadata"]["annotations"] = json!({"operator.hybridnet.io/operator-version": o});
        }
        cluster(v)
    }

    const PLAIN: TableStyle = TableStyle { terminal: false };

    #[test]
    fn everything_at_one_version_has_no_skew() {
        let c = installed(Some("0.1.0"), "0.1.0", "0.1.0", 2);
        let infos = [info("node2", Some("0.1.0")), info("node1", Some("v0.1.0"))];
        let r = version_report("0.1.0", Ok(&c), Ok(&infos));
        assert!(r.skew.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(r.node_agents[0].node, "node1", "sorted by node");
        let text = render_versions(&r, PLAIN);
        assert!(text.starts_with("kubectl-hybridnet 0.1.0 ("), "{text}");
        assert!(text.contains("Operator:     0.1.0\n"), "{text}");
        assert!(text.contains("Operand:      0.1.0\n"), "{text}");
        assert!(text.contains("Node agents:  2 of 2 at 0.1.0"), "{text}");
        assert!(!text.contains("skew"), "{text}");
    }

    #[test]
    fn a_rollout_in_progress_marks_the_old_agents_and_a_plugin_of_another_release() {
        let c = installed(Some("0.2.0"), "0.2.0", "0.1.0", 3);
        let infos = [
            info("node1", Some("0.2.0")),
            info("node2", Some("0.1.0")),
            info("node3", None),
        ];
        let r = version_report("0.1.0", Ok(&c), Ok(&infos));
        assert_eq!(
            r.node_agents.iter().map(|a| a.skew).collect::<Vec<_>>(),
            vec![false, true, false]
        );
        assert_eq!(r.skew.len(), 2, "{r:?}");
        assert!(
            r.skew[0].contains("the plugin is 0.1.0, the operator 0.2.0"),
            "{r:?}"
        );
        assert!(
            r.skew[1].contains("node2: the node agent runs 0.1.0, the cluster's target is 0.2.0")
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("node3") && w.contains("no version"))
        );
        let text = render_versions(&r, PLAIN);
        assert!(text.contains("Operator:     0.2.0 (skew)"), "{text}");
        assert!(
            text.contains("Operand:      0.1.0 (target 0.2.0)"),
            "{text}"
        );
        assert!(text.contains("Node agents:  1 of 3 at 0.2.0"), "{text}");
        assert!(text.contains("node2   0.1.0 (skew)"), "{text}");
        assert!(text.contains("node3   unknown"), "{text}");
        assert!(
            text.contains("\nVersion skew:\n  - the plugin is"),
            "{text}"
        );
        // Red on a terminal.
        assert!(render_versions(&r, TableStyle { terminal: true }).contains('\u{1b}'));
    }

    #[test]
    fn missing_pieces_are_warnings_not_guesses() {
        let r = version_report("0.1.0", Err("no HybridnetCluster"), Err("forbidden"));
        assert_eq!((r.operator.as_deref(), r.target.as_deref()), (None, None));
        assert!(r.skew.is_empty());
        assert_eq!(r.warnings.len(), 2, "{r:?}");
        let text = render_versions(&r, PLAIN);
        assert!(text.contains("Operator:     unknown"), "{text}");
        // Without the operator's annotation the target falls back to spec.version.
        let c = cluster(
            json!({"apiVersion": "operator.hybridnet.io/v1alpha1", "kind": "HybridnetCluster",
            "metadata": {"name": "default"}, "spec": {"version": "0.3.0"},
            "status": {"nodeAgents": {"desired": 4, "updated": 0, "ready": 0, "available": 0}}}),
        );
        let r = version_report("0.1.0", Ok(&c), Ok(&[info("n1", Some("0.3.0"))]));
        assert_eq!(r.target.as_deref(), Some("0.3.0"));
        assert!(r.skew.is_empty(), "{r:?}");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("not recorded its version")),
            "{r:?}"
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("4 node agents are scheduled, 1 have")),
            "{r:?}"
        );
    }

    #[test]
    fn hostile_annotations_are_cleaned() {
        let c = installed(Some("0.1.0\u{1b}[31m"), "0.1.0", "0.1.0", 1);
        let long = "9".repeat(10_000);
        let infos = [
            info("n1", Some(&long)),
            info("n2", Some("\u{7}\n")),
            info("n3", Some("")),
        ];
        let r = version_report("0.1.0", Ok(&c), Ok(&infos));
        let text = render_versions(&r, PLAIN);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.len() < 2_000, "{}", text.len());
        assert_eq!(
            r.node_agents[0].version.as_deref().map(str::len),
            Some(MAX_VERSION_CHARS + 3)
        );
        assert!(r.node_agents.iter().all(|a| a.skew), "{r:?}");
    }

    #[test]
    fn json_keeps_the_plugin_fields() {
        let r = version_report("0.1.0", Err("x"), Ok(&[]));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["plugin"], "kubectl-hybridnet");
        assert_eq!(v["version"], "0.1.0");
        assert_eq!(v["apiGroups"][1], "operator.hybridnet.io/v1alpha1");
        assert!(v["nodeAgents"].as_array().unwrap().is_empty());
    }
}

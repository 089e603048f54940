//! What the agent publishes in its NodeInfo, and the server-side apply that writes it.

use std::fmt::Debug;

use hybridnet_api::constants::field_manager;
use hybridnet_api::v1::NodeInfo;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::plan::{DataPlanePlan, PublishedVtep, ROUTE_TABLES_ANNOTATION, RouteTables};

/// The agent's release, published on its NodeInfo under [`AGENT_VERSION_ANNOTATION`].
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where the agent publishes [`AGENT_VERSION`] (an annotation of ours: upstream's NodeInfo
/// fields are unchanged).
pub const AGENT_VERSION_ANNOTATION: &str = hybridnet_api::constants::annotation::NODE_AGENT_VERSION;

/// What the agent publishes in its NodeInfo: the VTEP (spec), the subnet tables and the BGP
/// sessions (annotations).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfoPublication {
    pub vtep: Option<PublishedVtep>,
    pub route_tables: RouteTables,
    /// The [`crate::bgp::BGP_SESSIONS_ANNOTATION`] value; `None` without a BGP speaker (the
    /// annotation is then left out of the apply, which removes it).
    pub bgp_sessions: Option<String>,
    /// The [`hybridnet_api::migration::NODE_LEFTOVERS_ANNOTATION`] value, once a pass ran.
    pub upstream_leftovers: Option<String>,
}

impl NodeInfoPublication {
    /// What to publish after `plan`: a VTEP once known is kept (as before, it is never retracted).
    pub fn after(plan: &DataPlanePlan, last: Option<&NodeInfoPublication>) -> Self {
        Self {
            vtep: plan
                .published_vtep
                .clone()
                .or_else(|| last.and_then(|l| l.vtep.clone())),
            route_tables: RouteTables::of_plan(plan),
            bgp_sessions: None,
            upstream_leftovers: None,
        }
    }

    /// The same publication with the upstream leftovers annotation `value`.
    pub fn with_upstream_leftovers(self, value: Option<String>) -> Self {
        Self {
            upstream_leftovers: value,
            ..self
        }
    }

    /// The same publication with the BGP sessions annotation `value`.
    pub fn with_bgp_sessions(self, value: Option<String>) -> Self {
        Self {
            bgp_sessions: value,
            ..self
        }
    }

    /// Whether there is anything to publish at all.
    pub fn is_empty(&self) -> bool {
        self.vtep.is_none()
            && self.route_tables.is_empty()
            && self.bgp_sessions.is_none()
            && self.upstream_leftovers.is_none()
    }

    /// The server-side apply body of the NodeInfo object (without status). It always holds every
    /// field the agent owns: an apply that left one out would delete it.
    pub fn apply_body(&self, node: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "apiVersion": "networking.alibaba.com/v1",
            "kind": "NodeInfo",
            "metadata": {
                "name": node,
                "annotations": {
                    (ROUTE_TABLES_ANNOTATION): self.route_tables.to_annotation(),
                    (AGENT_VERSION_ANNOTATION): AGENT_VERSION,
                },
            },
        });
        if let Some(sessions) = &self.bgp_sessions {
            body["metadata"]["annotations"][crate::bgp::BGP_SESSIONS_ANNOTATION] =
                serde_json::Value::String(sessions.clone());
        }
        if let Some(l) = &self.upstream_leftovers {
            body["metadata"]["annotations"][hybridnet_api::migration::NODE_LEFTOVERS_ANNOTATION] =
                serde_json::Value::String(l.clone());
        }
        body["spec"] = match &self.vtep {
            Some(v) => {
                let local: Vec<String> = v.local_ips.iter().map(|i| i.to_string()).collect();
                serde_json::json!({
                    "vtepInfo": {"ip": v.ip.to_string(), "mac": v.mac.to_string(), "localIPs": local},
                })
            }
            // The CRD requires a spec: without one, creating the NodeInfo of a node without a
            // VTEP (underlay or BGP only) is refused.
            None => serde_json::json!({}),
        };
        body
    }
}

/// Server-side applies this node's NodeInfo (spec and annotations, then status.updateTimestamp).
pub async fn publish_node_info(
    client: &Client,
    node: &str,
    publication: &NodeInfoPublication,
) -> kube::Result<()> {
    let api: Api<NodeInfo> = Api::all(client.clone());
    let pp = PatchParams::apply(field_manager::NODE_AGENT).force();
    api.patch(node, &pp, &Patch::Apply(&publication.apply_body(node)))
        .await?;
    let ts = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1",
        "kind": "NodeInfo",
        "metadata": {"name": node},
        "status": {"updateTimestamp": ts},
    });
    api.patch_status(node, &pp, &Patch::Apply(&status)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{MacAddr, SubnetTable};
    use hybridnet_api::ipmath::Cidr;
    use hybridnet_api::v1::NetworkMode;

    fn plan_with(vtep: Option<PublishedVtep>, tables: &[(&str, u32)]) -> DataPlanePlan {
        let mut p = DataPlanePlan {
            published_vtep: vtep,
            ..Default::default()
        };
        for (c, t) in tables {
            p.subnet_tables.insert(
                Cidr::parse_canonical(c).unwrap(),
                SubnetTable {
                    table: *t,
                    network: "n".into(),
                    mode: NetworkMode::Vlan,
                    auto_nat_outgoing: false,
                },
            );
        }
        p
    }

    fn vtep() -> PublishedVtep {
        PublishedVtep {
            ip: "198.18.0.11".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
            local_ips: vec!["198.18.0.11".parse().unwrap()],
        }
    }

    #[test]
    fn apply_body_holds_every_owned_field() {
        let p = NodeInfoPublication::after(
            &plan_with(
                Some(vtep()),
                &[("198.18.0.0/24", 10001), ("fd00::/64", 10000)],
            ),
            None,
        );
        assert_eq!(
            p.apply_body("n1"),
            serde_json::json!({
                "apiVersion": "networking.alibaba.com/v1",
                "kind": "NodeInfo",
                "metadata": {
                    "name": "n1",
                    "annotations": {
                        "hybridnet.io/route-tables":
                            r#"{"4":{"198.18.0.0/24":10001},"6":{"fd00::/64":10000}}"#,
                        "hybridnet.io/agent-version": env!("CARGO_PKG_VERSION"),
                    },
                },
                "spec": {"vtepInfo": {"ip": "198.18.0.11", "mac": "02:00:00:00:00:11", "localIPs": ["198.18.0.11"]}},
            })
        );
        // The annotation read back is the plan's assignment.
        let back = RouteTables::parse_annotation(
            p.apply_body("n1")["metadata"]["annotations"][ROUTE_TABLES_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back, p.route_tables);
    }

    #[test]
    fn publication_changes_only_with_vtep_or_tables_and_keeps_a_known_vtep() {
        let first = NodeInfoPublication::after(&plan_with(Some(vtep()), &[]), None);
        assert!(!first.is_empty());
        // Same plan again: nothing to publish.
        assert_eq!(
            NodeInfoPublication::after(&plan_with(Some(vtep()), &[]), Some(&first)),
            first
        );
        // A subnet table appears: a change.
        let second = NodeInfoPublication::after(
            &plan_with(Some(vtep()), &[("198.18.0.0/24", 10000)]),
            Some(&first),
        );
        assert_ne!(second, first);
        // The VTEP disappears from a plan: the published one stays.
        let third = NodeInfoPublication::after(
            &plan_with(None, &[("198.18.0.0/24", 10000)]),
            Some(&second),
        );
        assert_eq!(third, second);
        // An underlay-only node publishes its tables without a spec.
        let underlay =
            NodeInfoPublication::after(&plan_with(None, &[("198.18.0.0/24", 10000)]), None);
        assert!(!underlay.is_empty());
        assert_eq!(underlay.apply_body("n1")["spec"], serde_json::json!({}));
        assert!(NodeInfoPublication::after(&plan_with(None, &[]), None).is_empty());
    }

    #[test]
    fn bgp_sessions_are_published_with_the_rest_and_left_out_to_remove_them() {
        let base = NodeInfoPublication::after(&plan_with(None, &[("198.18.0.0/24", 10000)]), None);
        let value = r#"[{"peerAddress":"198.18.0.1","peerASN":65000,"localASN":65001,"state":"Idle","since":"2026-11-26T10:00:00Z","prefixesV4":0,"prefixesV6":0,"required":true,"flaps":0}]"#;
        let with = base.clone().with_bgp_sessions(Some(value.to_string()));
        assert_ne!(with, base);
        let body = with.apply_body("n1");
        let annotations = &body["metadata"]["annotations"];
        assert_eq!(annotations[crate::bgp::BGP_SESSIONS_ANNOTATION], value);
        assert_eq!(
            annotations[ROUTE_TABLES_ANNOTATION],
            r#"{"4":{"198.18.0.0/24":10000}}"#
        );
        // Every apply carries the agent's version.
        assert_eq!(
            annotations[AGENT_VERSION_ANNOTATION],
            env!("CARGO_PKG_VERSION")
        );
        // Without a speaker the apply leaves the annotation out, so the server removes it.
        let without = with.clone().with_bgp_sessions(None);
        assert_eq!(without, base);
        assert!(
            without.apply_body("n1")["metadata"]["annotations"]
                .get(crate::bgp::BGP_SESSIONS_ANNOTATION)
                .is_none()
        );
        // A BGP-only publication is not empty; taking the sessions away makes it so.
        let only = NodeInfoPublication::default().with_bgp_sessions(Some("[]".into()));
        assert!(!only.is_empty());
        assert!(only.with_bgp_sessions(None).is_empty());
    }
}

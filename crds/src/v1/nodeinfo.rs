//! `NodeInfo` (cluster-scoped): what a node agent publishes about its VXLAN endpoint.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `networking.alibaba.com/v1` NodeInfo; the name is the node's name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.alibaba.com",
    version = "v1",
    kind = "NodeInfo",
    plural = "nodeinfoes",
    singular = "nodeinfo",
    shortname = "hni",
    status = "NodeInfoStatus",
    printcolumn = r#"{"name":"VTEPIP","type":"string","jsonPath":".spec.vtepInfo.ip"}"#,
    printcolumn = r#"{"name":"VTEPMAC","type":"string","jsonPath":".spec.vtepInfo.mac"}"#,
    printcolumn = r#"{"name":"VTEPLOCALIPS","type":"string","jsonPath":".spec.vtepInfo.localIPs"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfoSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_info: Option<VtepInfo>,
}

/// A VXLAN tunnel endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VtepInfo {
    /// Address of the VXLAN parent interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// MAC of the VXLAN parent interface (the VXLAN device copies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Sorted node addresses that are also put on the VXLAN device.
    #[serde(rename = "localIPs", default, skip_serializing_if = "Option::is_none")]
    pub local_ips: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfoStatus {
    /// RFC 3339 time of the last write (upstream: a `metav1.Time`, format date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub update_timestamp: Option<String>,
}

//! `RemoteVtep`: the mirror of one remote node's VXLAN endpoint and its pods' addresses
//! (upstream `pkg/apis/multicluster/v1/remotevtep_types.go`), named `<cluster>.<node>`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::v1::VtepInfo;

/// Spec of a `multicluster.alibaba.com/v1` RemoteVtep. Upstream inlines `VTEPInfo` (`ip`, `mac`,
/// `localIPs`) into the spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.alibaba.com",
    version = "v1",
    kind = "RemoteVtep",
    plural = "remotevteps",
    singular = "remotevtep",
    shortname = "hrvtep",
    status = "RemoteVtepStatus",
    printcolumn = r#"{"name":"MAC","type":"string","jsonPath":".spec.mac"}"#,
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".spec.ip"}"#,
    printcolumn = r#"{"name":"NodeName","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"ClusterName","type":"string","jsonPath":".spec.clusterName"}"#,
    printcolumn = r#"{"name":"LastModifyTime","type":"date","jsonPath":".status.lastModifyTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteVtepSpec {
    /// Name of the RemoteCluster the node belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The node's name in the remote cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// VTEP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// VTEP MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Node addresses also on the VXLAN device.
    #[serde(rename = "localIPs", default, skip_serializing_if = "Option::is_none")]
    pub local_ips: Option<Vec<String>>,
    /// Sorted addresses of the pods on the node.
    #[serde(
        rename = "endpointIPList",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_ip_list: Option<Vec<String>>,
}

impl RemoteVtepSpec {
    /// The VTEP as a NodeInfo states it.
    pub fn vtep_info(&self) -> VtepInfo {
        VtepInfo {
            ip: self.ip.clone(),
            mac: self.mac.clone(),
            local_ips: self.local_ips.clone(),
        }
    }
}

/// Status of a RemoteVtep: when the operator last changed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteVtepStatus {
    /// RFC 3339 time of the last change (upstream: a `metav1.Time`, format date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_modify_time: Option<String>,
}

//! `RemoteSubnet`: the mirror of one Subnet of a remote cluster (upstream
//! `pkg/apis/multicluster/v1/remotesubnet_types.go`), named `<cluster>.<subnet>`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::v1::{AddressRange, NetworkType};

/// Spec of a `multicluster.alibaba.com/v1` RemoteSubnet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.alibaba.com",
    version = "v1",
    kind = "RemoteSubnet",
    plural = "remotesubnets",
    singular = "remotesubnet",
    shortname = "hrsubnet",
    status = "RemoteSubnetStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.range.version"}"#,
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.range.cidr"}"#,
    printcolumn = r#"{"name":"Start","type":"string","jsonPath":".spec.range.start"}"#,
    printcolumn = r#"{"name":"End","type":"string","jsonPath":".spec.range.end"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.range.gateway"}"#,
    printcolumn = r#"{"name":"NetworkType","type":"string","jsonPath":".spec.networkType"}"#,
    printcolumn = r#"{"name":"ClusterName","type":"string","jsonPath":".spec.clusterName"}"#,
    printcolumn = r#"{"name":"LastModifyTime","type":"date","jsonPath":".status.lastModifyTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSubnetSpec {
    /// The remote Subnet's range, copied.
    pub range: AddressRange,
    /// The type of the remote Subnet's Network (absent means Underlay, upstream
    /// `GetRemoteSubnetType`).
    #[serde(
        rename = "networkType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_type: Option<NetworkType>,
    /// Name of the RemoteCluster the subnet belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

impl RemoteSubnetSpec {
    /// The network type, `Underlay` when absent (upstream `GetRemoteSubnetType`).
    pub fn effective_type(&self) -> NetworkType {
        self.network_type.unwrap_or(NetworkType::Underlay)
    }
}

/// Status of a mirror object: when the operator last changed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSubnetStatus {
    /// RFC 3339 time of the last change (upstream: a `metav1.Time`, format date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_modify_time: Option<String>,
}

//! `IPInstance` (namespaced): one allocated address of one pod.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::IpVersion;

/// Spec of a `networking.alibaba.com/v1` IPInstance. Its name is the IP in DNS form
/// (see [`crate::naming::ip_to_instance_name`]).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.alibaba.com",
    version = "v1",
    kind = "IPInstance",
    plural = "ipinstances",
    singular = "ipinstance",
    shortname = "ipi",
    namespaced,
    status = "IPInstanceStatus",
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".spec.address.ip"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.address.gateway"}"#,
    printcolumn = r#"{"name":"PodName","type":"string","jsonPath":".spec.binding.podName"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.binding.nodeName"}"#,
    printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".spec.subnet"}"#,
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPInstanceSpec {
    pub network: String,
    pub subnet: String,
    pub address: Address,
    #[serde(default)]
    pub binding: Binding,
}

/// The address itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub version: IpVersion,
    /// `IP/prefix-length` of the subnet, e.g. `10.0.0.5/24`.
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Subnet netID if set, else the network's (VLAN id, VNI or AS number).
    #[serde(rename = "netID", default, skip_serializing_if = "Option::is_none")]
    pub net_id: Option<i32>,
    /// The pod's MAC, shared by its IPv4 and IPv6 instances.
    pub mac: String,
}

impl Default for Address {
    fn default() -> Self {
        Self {
            version: IpVersion::V4,
            ip: String::new(),
            gateway: None,
            net_id: None,
            mac: String::new(),
        }
    }
}

/// Who the address belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// The owner: a StatefulSet (retained addresses) or the Pod itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referred_object: Option<ReferredObject>,
    /// Node of the pod; empty means the address is reserved for a stateful pod that is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(rename = "podUID", default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<StatefulInfo>,
}

/// The owner object an IPInstance is bound to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferredObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Stateful workload details.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i32>,
}

/// Status of an IPInstance, written by the node agent at CNI ADD.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPInstanceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(rename = "sandboxID", default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// RFC 3339 time of the last write (upstream: a `metav1.Time`, format date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub update_timestamp: Option<String>,
}

impl IPInstanceSpec {
    /// An IPInstance without a node is reserved (kept for a stateful pod that is gone).
    pub fn is_reserved(&self) -> bool {
        self.binding.node_name.as_deref().unwrap_or("").is_empty()
    }
}

//! `RemoteEndpointSlice`: the endpoints of a global Service of a remote cluster (upstream
//! `pkg/apis/multicluster/v1/remoteendpointslice_types.go`, a copy of `discovery/v1beta1`
//! `EndpointSlice`). Upstream's plural is the singular, `remoteendpointslice`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `multicluster.alibaba.com/v1` RemoteEndpointSlice.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.alibaba.com",
    version = "v1",
    kind = "RemoteEndpointSlice",
    plural = "remoteendpointslice",
    singular = "remoteendpointslice",
    shortname = "hres",
    status = "RemoteEndpointSliceStatus",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.remoteService.name"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.remoteService.namespace"}"#,
    printcolumn = r#"{"name":"AddressType","type":"string","jsonPath":".spec.addressType"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.remoteService.cluster"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteEndpointSliceSpec {
    /// The Service this slice belongs to.
    pub remote_service: RemoteServiceInfo,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// The endpoints (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub endpoints: Option<Vec<Endpoint>>,
    /// The ports every endpoint exposes (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub ports: Option<Vec<EndpointPort>>,
}

/// A Service of a remote cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct RemoteServiceInfo {
    /// Name of the RemoteCluster.
    pub cluster: String,
    pub name: String,
    pub namespace: String,
}

/// One backend (discovery/v1beta1 `Endpoint`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// 1..100 addresses of the slice's address type.
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<EndpointConditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<EndpointHints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    /// Deprecated in discovery/v1beta1; kept as upstream has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<BTreeMap<String, String>>,
}

/// discovery/v1beta1 `EndpointConditions`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct EndpointConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

/// discovery/v1beta1 `EndpointHints`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub for_zones: Option<Vec<ForZone>>,
}

/// discovery/v1beta1 `ForZone`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ForZone {
    pub name: String,
}

/// discovery/v1beta1 `EndpointPort`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "TCP"))]
    pub protocol: Option<String>,
}

/// Status of a RemoteEndpointSlice: when the operator last changed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteEndpointSliceStatus {
    /// RFC 3339 time of the last change (upstream: a `metav1.Time`, format date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_modify_time: Option<String>,
}

//! `RemoteCluster`: another cluster this one connects to (upstream
//! `pkg/apis/multicluster/v1/remotecluster_types.go`).

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `multicluster.alibaba.com/v1` RemoteCluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.alibaba.com",
    version = "v1",
    kind = "RemoteCluster",
    plural = "remoteclusters",
    singular = "remotecluster",
    shortname = "hrc",
    status = "RemoteClusterStatus",
    printcolumn = r#"{"name":"APIEndpoint","type":"string","jsonPath":".spec.apiEndpoint"}"#,
    printcolumn = r#"{"name":"UUID","type":"string","jsonPath":".status.uuid"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterSpec {
    /// The remote API server, `https://host:port` (host a DNS name, an IPv4 address or a
    /// bracketed IPv6 address).
    pub api_endpoint: String,
    /// PEM CA bundle that signs the remote API server's certificate (base64 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "byte"))]
    pub ca_data: Option<ByteString>,
    /// PEM client certificate (base64 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "byte"))]
    pub cert_data: Option<ByteString>,
    /// PEM client key (base64 in JSON). Prefer `credentialsSecretRef`: a key in a
    /// cluster-scoped object is readable by everyone who may read RemoteClusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "byte"))]
    pub key_data: Option<ByteString>,
    /// Seconds to wait for one request to the remote API server; 0 or absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub timeout: Option<i32>,
    /// Not upstream: the credentials in a Secret instead of the fields above. Keys: `ca.crt`
    /// (the CA bundle, required) and either `tls.crt` + `tls.key` (a client certificate) or
    /// `token` (a bearer token). docs/multicluster.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// A Secret by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Keys of the Secret named by `credentialsSecretRef`.
pub mod secret_key {
    /// PEM CA bundle of the remote API server.
    pub const CA: &str = "ca.crt";
    /// PEM client certificate.
    pub const CERT: &str = "tls.crt";
    /// PEM client key.
    pub const KEY: &str = "tls.key";
    /// Bearer token (instead of a client certificate).
    pub const TOKEN: &str = "token";
}

/// Observed state of a RemoteCluster, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterStatus {
    /// UID of the remote cluster's `kube-system` Namespace: the remote cluster's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// `Ready`, `NotReady`, `Offline` or `Unknown` ([`ClusterState`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// One per check (docs/multicluster.md), keyed by type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,
}

/// `metav1.Condition` as upstream's CRD validates it (controller-gen writes the API's own
/// validation markers; k8s-openapi's schema has none), a list keyed by `type`.
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "nullable": true,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string", "maxLength": 32768},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "reason": {
                    "type": "string", "minLength": 1, "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {
                    "type": "string", "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}

impl RemoteClusterStatus {
    /// The remote cluster's UID, if known (upstream writes `""` for unknown).
    pub fn uuid(&self) -> Option<&str> {
        self.uuid.as_deref().filter(|u| !u.is_empty())
    }
}

impl RemoteCluster {
    /// The remote cluster's UID recorded in the status, if any.
    pub fn remote_uuid(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.uuid())
    }
}

/// A RemoteCluster's `status.state` (upstream `ClusterState`, pkg/apis/multicluster/v1/types.go).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterState {
    /// Every check passed; mirrors are kept up to date.
    Ready,
    /// Connected, but a check failed.
    NotReady,
    /// No connection (bad configuration, unreachable, or identity refused).
    Offline,
    Unknown,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::NotReady => "NotReady",
            Self::Offline => "Offline",
            Self::Unknown => "Unknown",
        }
    }

    /// Reads a state as written; anything else is `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s {
            "Ready" => Self::Ready,
            "NotReady" => Self::NotReady,
            "Offline" => Self::Offline,
            _ => Self::Unknown,
        }
    }
}

impl std::fmt::Display for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

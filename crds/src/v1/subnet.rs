//! `Subnet` (cluster-scoped): an address range of a Network.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use hybridnet_rules::prefix::IpVersion;

/// Spec of a `networking.alibaba.com/v1` Subnet.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.alibaba.com",
    version = "v1",
    kind = "Subnet",
    plural = "subnets",
    singular = "subnet",
    shortname = "hsubnet",
    status = "SubnetStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.range.version"}"#,
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.range.cidr"}"#,
    printcolumn = r#"{"name":"Start","type":"string","jsonPath":".spec.range.start"}"#,
    printcolumn = r#"{"name":"End","type":"string","jsonPath":".spec.range.end"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.range.gateway"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.total"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","jsonPath":".status.used"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.available"}"#,
    printcolumn = r#"{"name":"NetID","type":"integer","jsonPath":".spec.netID"}"#,
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.network == oldSelf.network", "message": "spec.network is immutable"},
    {"rule": "self.range.cidr == oldSelf.range.cidr", "message": "spec.range.cidr is immutable"},
    {"rule": "self.range.version == oldSelf.range.version", "message": "spec.range.version is immutable"},
    {"rule": "(has(self.range.start) ? self.range.start : '') == (has(oldSelf.range.start) ? oldSelf.range.start : '')", "message": "spec.range.start is immutable"},
    {"rule": "(has(self.range.end) ? self.range.end : '') == (has(oldSelf.range.end) ? oldSelf.range.end : '')", "message": "spec.range.end is immutable"},
    {"rule": "(has(self.range.gateway) ? self.range.gateway : '') == (has(oldSelf.range.gateway) ? oldSelf.range.gateway : '')", "message": "spec.range.gateway is immutable"}
]))]
pub struct SubnetSpec {
    /// Name of the parent Network (immutable).
    #[schemars(length(min = 1, max = 253))]
    pub network: String,
    /// VLAN networks only: the VLAN id of this subnet (overrides the network's).
    #[serde(rename = "netID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub net_id: Option<i32>,
    pub range: AddressRange,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SubnetConfig>,
}

impl SubnetSpec {
    /// Overlay subnets masquerade outgoing traffic unless told otherwise (`nil` means true upstream).
    pub fn auto_nat_outgoing(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.auto_nat_outgoing)
            .unwrap_or(true)
    }

    /// Private subnets are only used when a pod names them (or an ip-pool entry falls in them).
    pub fn is_private(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.private)
            .unwrap_or(false)
    }
}

impl AddressRange {
    /// The gateway, if set: an empty string means none, as in upstream (its Go client writes
    /// `gateway: ""`; pkg/apis/networking/v1/types.go, `AddressRange`).
    pub fn gateway(&self) -> Option<&str> {
        self.gateway.as_deref().filter(|g| !g.is_empty())
    }
}

/// The address range of a Subnet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressRange {
    pub version: IpVersion,
    /// Canonical CIDR, e.g. `10.0.0.0/24` (immutable).
    #[schemars(length(min = 1, max = 64))]
    pub cidr: String,
    /// First allocatable address (default: network address + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last allocatable address (default: broadcast - 1 for IPv4, the last address for IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Gateway, never allocated (required in VLAN mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Addresses only handed out by forced assignment (ip-pool).
    #[serde(
        rename = "reservedIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reserved_ips: Option<Vec<String>>,
    /// Addresses never used (immutable after creation).
    #[serde(
        rename = "excludeIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exclude_ips: Option<Vec<String>>,
}

impl Default for AddressRange {
    fn default() -> Self {
        Self {
            version: IpVersion::V4,
            cidr: String::new(),
            start: None,
            end: None,
            gateway: None,
            reserved_ips: None,
            exclude_ips: None,
        }
    }
}

/// Optional behaviour of a Subnet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetConfig {
    /// Declared upstream, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_type: Option<String>,
    /// Declared upstream, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_node: Option<String>,
    /// Overlay only: masquerade traffic leaving the cluster (absent means true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_nat_outgoing: Option<bool>,
    /// Only allocate from this subnet when a pod names it explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// Declared upstream, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_subnets: Option<Vec<String>>,
}

/// Status of a Subnet, written by the operator (counts as defined in docs/api.md).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i32>,
    /// The allocator's round-robin cursor, persisted so it survives restarts.
    #[serde(
        rename = "lastAllocatedIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_allocated_ip: Option<String>,
}

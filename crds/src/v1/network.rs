//! `Network` (cluster-scoped): a pod scheduling domain with one data-plane mode.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Count;

/// The kind of a Network. An absent `spec.type` means `Underlay` (upstream `GetNetworkType`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum NetworkType {
    Underlay,
    Overlay,
    #[serde(rename = "GlobalBGP")]
    GlobalBgp,
}

impl NetworkType {
    pub const ALL: [NetworkType; 3] = [Self::Underlay, Self::Overlay, Self::GlobalBgp];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Underlay => "Underlay",
            Self::Overlay => "Overlay",
            Self::GlobalBgp => "GlobalBGP",
        }
    }

    /// Parses a type the way annotations are read upstream: case-insensitive.
    pub fn parse_case_insensitive(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The mode a network of this type gets when `spec.mode` is absent.
    pub fn default_mode(self) -> NetworkMode {
        match self {
            Self::Underlay => NetworkMode::Vlan,
            Self::Overlay => NetworkMode::Vxlan,
            Self::GlobalBgp => NetworkMode::GlobalBgp,
        }
    }

    /// At most one network of this type may exist in a cluster.
    pub fn is_cluster_unique(self) -> bool {
        matches!(self, Self::Overlay | Self::GlobalBgp)
    }
}

impl std::fmt::Display for NetworkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data-plane mode of a Network.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum NetworkMode {
    #[serde(rename = "VLAN")]
    Vlan,
    #[serde(rename = "BGP")]
    Bgp,
    #[serde(rename = "VXLAN")]
    Vxlan,
    #[serde(rename = "GlobalBGP")]
    GlobalBgp,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vlan => "VLAN",
            Self::Bgp => "BGP",
            Self::Vxlan => "VXLAN",
            Self::GlobalBgp => "GlobalBGP",
        }
    }

    /// The only network type this mode is allowed with.
    pub fn required_type(self) -> NetworkType {
        match self {
            Self::Vlan | Self::Bgp => NetworkType::Underlay,
            Self::Vxlan => NetworkType::Overlay,
            Self::GlobalBgp => NetworkType::GlobalBgp,
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Spec of a `networking.alibaba.com/v1` Network.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.alibaba.com",
    version = "v1",
    kind = "Network",
    plural = "networks",
    singular = "network",
    shortname = "hnet",
    status = "NetworkStatus",
    printcolumn = r#"{"name":"NetID","type":"integer","jsonPath":".spec.netID"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"V4Total","type":"integer","jsonPath":".status.statistics.total"}"#,
    printcolumn = r#"{"name":"V4Used","type":"integer","jsonPath":".status.statistics.used"}"#,
    printcolumn = r#"{"name":"V4Available","type":"integer","jsonPath":".status.statistics.available"}"#,
    printcolumn = r#"{"name":"LastAllocatedV4Subnet","type":"string","jsonPath":".status.lastAllocatedSubnet"}"#,
    printcolumn = r#"{"name":"V6Total","type":"integer","jsonPath":".status.ipv6Statistics.total"}"#,
    printcolumn = r#"{"name":"V6Used","type":"integer","jsonPath":".status.ipv6Statistics.used"}"#,
    printcolumn = r#"{"name":"V6Available","type":"integer","jsonPath":".status.ipv6Statistics.available"}"#,
    printcolumn = r#"{"name":"LastAllocatedV6Subnet","type":"string","jsonPath":".status.lastAllocatedIPv6Subnet"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.type) ? self.type : 'Underlay') == (has(oldSelf.type) ? oldSelf.type : 'Underlay')", "message": "spec.type is immutable"},
    {"rule": "has(self.mode) == has(oldSelf.mode) && (!has(self.mode) || self.mode == oldSelf.mode)", "message": "spec.mode is immutable"},
    {"rule": "has(self.netID) == has(oldSelf.netID) && (!has(self.netID) || self.netID == oldSelf.netID)", "message": "spec.netID is immutable"}
]))]
pub struct NetworkSpec {
    /// Underlay only (required there): nodes whose labels match exactly belong to this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// VLAN: VLAN id (0 = untagged); VXLAN: the VNI; BGP: the local AS number; GlobalBGP: absent.
    #[serde(rename = "netID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub net_id: Option<i32>,
    /// `Underlay` (default), `Overlay` or `GlobalBGP`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub network_type: Option<NetworkType>,
    /// `VLAN`/`BGP` (Underlay), `VXLAN` (Overlay), `GlobalBGP`; defaulted from the type when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetworkMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<NetworkConfig>,
}

impl NetworkSpec {
    /// The effective type (absent means Underlay).
    pub fn effective_type(&self) -> NetworkType {
        self.network_type.unwrap_or(NetworkType::Underlay)
    }

    /// The effective mode (absent means the type's default mode).
    pub fn effective_mode(&self) -> NetworkMode {
        self.mode
            .unwrap_or_else(|| self.effective_type().default_mode())
    }

    /// Whether the node with `labels` matches `spec.nodeSelector`: every key/value of the selector
    /// is among the labels. An absent or empty selector selects no node (an Underlay network
    /// without one would otherwise claim the whole cluster). The one match the webhook, the
    /// operator's node labelling and the Network status use.
    pub fn selects_node(&self, labels: &BTreeMap<String, String>) -> bool {
        match &self.node_selector {
            Some(sel) if !sel.is_empty() => sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
            _ => false,
        }
    }

    /// The BGP peers, empty when no config is given (upstream dereferenced a nil config here).
    pub fn bgp_peers(&self) -> &[BgpPeer] {
        self.config
            .as_ref()
            .and_then(|c| c.bgp_peers.as_deref())
            .unwrap_or(&[])
    }
}

impl BgpPeer {
    /// Whether the peer may carry pod traffic (see [`crate::traffic_peer`]).
    pub fn routes_traffic(&self) -> bool {
        !self.does_not_route_traffic.unwrap_or(false)
    }
}

/// Mode-specific configuration of a Network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_peers: Option<Vec<BgpPeer>>,
}

/// A BGP peer (normally the top-of-rack router) of a BGP-mode network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeer {
    /// The peer's AS number.
    #[schemars(range(min = 1))]
    pub asn: i32,
    /// The peer's IP address.
    pub address: String,
    /// Graceful-restart time in seconds; absent or 0 means 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4095))]
    pub graceful_restart_seconds: Option<i32>,
    /// TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The peer does not forward pod traffic (it is not used as the pods' gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub does_not_route_traffic: Option<bool>,
    /// Pods may become ready while this session is not established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_not_established: Option<bool>,
}

impl BgpPeer {
    /// Upstream default when `gracefulRestartSeconds` is absent or zero.
    pub const DEFAULT_GRACEFUL_RESTART_SECONDS: i32 = 300;

    pub fn effective_graceful_restart_seconds(&self) -> i32 {
        match self.graceful_restart_seconds {
            Some(s) if s > 0 => s,
            _ => Self::DEFAULT_GRACEFUL_RESTART_SECONDS,
        }
    }
}

/// Status of a Network, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_allocated_subnet: Option<String>,
    #[serde(
        rename = "lastAllocatedIPv6Subnet",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_allocated_ipv6_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Count>,
    #[serde(
        rename = "ipv6Statistics",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_statistics: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_stack_statistics: Option<Count>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec(selector: Option<&[(&str, &str)]>) -> NetworkSpec {
        NetworkSpec {
            node_selector: selector.map(labels),
            ..Default::default()
        }
    }

    #[test]
    fn a_selector_selects_nodes_carrying_all_its_labels() {
        let node = labels(&[("rack", "a"), ("zone", "z1"), ("extra", "x")]);
        assert!(spec(Some(&[("rack", "a")])).selects_node(&node));
        assert!(spec(Some(&[("rack", "a"), ("zone", "z1")])).selects_node(&node));
        assert!(!spec(Some(&[("rack", "b")])).selects_node(&node));
        assert!(!spec(Some(&[("rack", "a"), ("zone", "z2")])).selects_node(&node));
        assert!(!spec(Some(&[("missing", "")])).selects_node(&node));
        assert!(spec(Some(&[("empty", "")])).selects_node(&labels(&[("empty", "")])));
    }

    #[test]
    fn an_absent_or_empty_selector_selects_no_node() {
        for node in [labels(&[]), labels(&[("rack", "a")])] {
            assert!(!spec(None).selects_node(&node));
            assert!(!spec(Some(&[])).selects_node(&node));
        }
    }
}

//! `HybridnetCluster`: the one object (named `default`) from which the operator installs, configures
//! and upgrades hybridnet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values;
use crate::v1::{IpVersion, NetworkType};

/// The only accepted name of a HybridnetCluster.
pub const CLUSTER_SINGLETON_NAME: &str = "default";

/// Spec of the cluster-wide hybridnet installation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "operator.hybridnet.io",
    version = "v1alpha1",
    kind = "HybridnetCluster",
    plural = "hybridnetclusters",
    singular = "hybridnetcluster",
    shortname = "hnc",
    status = "HybridnetClusterStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Progressing","type":"string","jsonPath":".status.conditions[?(@.type==\"Progressing\")].status"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HybridnetClusterSpec {
    /// Operand version to run (image tag without the leading `v`); absent means the operator's own
    /// version, the only one it is tested with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"))]
    pub version: Option<String>,
    /// Image registry and repository prefix, e.g. `docker.io/hybridnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ClusterDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_agent: Option<NodeAgentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// An overlay Network and Subnet created once at install and never overwritten afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeatureSwitches>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// IP family of a pod, as the `ip-family` annotation and the defaults spell it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpFamily {
    #[serde(rename = "IPv4", alias = "IPv4Only")]
    IPv4,
    #[serde(rename = "IPv6", alias = "IPv6Only")]
    IPv6,
    DualStack,
}

impl IpFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
            Self::DualStack => "DualStack",
        }
    }

    /// Parses the annotation value (case-insensitive; `IPv4Only`/`IPv6Only` accepted).
    pub fn parse_case_insensitive(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ipv4" | "ipv4only" => Some(Self::IPv4),
            "ipv6" | "ipv6only" => Some(Self::IPv6),
            "dualstack" => Some(Self::DualStack),
            _ => None,
        }
    }

    /// The address versions a pod of this family gets, v4 first.
    pub fn versions(self) -> &'static [IpVersion] {
        match self {
            Self::IPv4 => &[IpVersion::V4],
            Self::IPv6 => &[IpVersion::V6],
            Self::DualStack => &[IpVersion::V4, IpVersion::V6],
        }
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cluster-wide defaults for pods that do not say otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDefaults {
    /// Default network type of pods (`Overlay` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_type: Option<NetworkType>,
    /// Default IP family of pods (`IPv4` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family: Option<IpFamily>,
    /// Stateful pods keep their addresses across re-creation (true when absent).
    #[serde(rename = "ipRetain", default, skip_serializing_if = "Option::is_none")]
    pub ip_retain: Option<bool>,
    /// Owner kinds treated as stateful workloads (`[StatefulSet]` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_workload_kinds: Option<Vec<String>>,
}

/// The node agent DaemonSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<NodeAgentUpdateStrategy>,
    /// Interfaces tried in order for VLAN networks (default: the default-route interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_vlan_interfaces: Option<Vec<String>>,
    /// Interfaces tried in order as the VXLAN parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_vxlan_interfaces: Option<Vec<String>>,
    /// Interfaces tried in order for BGP peering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_bgp_interfaces: Option<Vec<String>>,
    /// UDP port of VXLAN (8472 when absent).
    #[serde(
        rename = "vxlanUDPPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = values::MAX_PORT))]
    pub vxlan_udp_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra tolerations; the agent tolerates every taint already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Port of `/healthz` and `/readyz` (11021 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = values::MAX_PORT))]
    pub health_port: Option<i32>,
    /// Port of `/metrics` (9101 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = values::MAX_PORT))]
    pub metrics_port: Option<i32>,
    /// How long CNI ADD of a VLAN pod waits for the subnet gateway to answer ARP/NDP before the
    /// duplicate-address probe and gratuitous ARP/unsolicited NA: a Go-style duration such as
    /// `3s`, `500ms` or `1s500ms` (units ms, s, m, h), at most `30s`, in whole milliseconds; `0`
    /// disables these checks. Absent: the agent's default (`3s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"),
        length(min = 1, max = 32)
    )]
    pub vlan_check_timeout: Option<String>,
    /// Keep one pod address (scope link, no routes) on each VLAN interface per IPv4 subnet with
    /// local pods, so ARP from the node has a sender inside the subnet. Absent: the agent's
    /// default (true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_vlan_arp_enhancement: Option<bool>,
    /// After CNI ADD, ping the pod from the node and fail the ADD when it does not answer.
    /// Absent: the agent's default (true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_pod_connectivity_from_host: Option<bool>,
    /// CIDRs the VXLAN VTEP address is chosen from on multi-NIC nodes (upstream's Helm value
    /// `daemon.vtepAddressCIDRs`): the first address of the VXLAN parent inside one of them.
    /// Absent: the agent's default, `[0.0.0.0/0, ::/0]` (any address, IPv4 first).
    #[serde(
        rename = "vtepAddressCIDRs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 32))]
    pub vtep_address_cidrs: Option<Vec<String>>,
    /// After CNI ADD, write the pod's IPInstances' status as upstream's daemon does (upstream's
    /// Helm value `daemon.updateIPInstanceStatus`). Absent: the agent's default (true).
    #[serde(
        rename = "updateIPInstanceStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub update_ip_instance_status: Option<bool>,
    /// Remove the iptables chains and ipsets the upstream (Go) daemon left on nodes
    /// (docs/migration.md). Absent: the agent's default (true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_upstream_leftovers: Option<bool>,
    /// Also remove what upstream's felix container left (`cali-*` chains, `cali40`/`cali60`
    /// ipsets); set it only once felix runs nowhere (upstream's Helm value
    /// `daemon.cleanFelixRulesWhilePolicyDisabled`). Absent: the agent's default (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_felix_leftovers: Option<bool>,
}

/// Rolling update of the node agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentUpdateStrategy {
    /// Nodes updated at once: a number or a percentage (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Where and how the CNI plugin is installed on nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CniSpec {
    /// `/opt/cni/bin` when absent. An absolute host directory at least two levels deep, not
    /// under /proc, /sys, /dev or /boot, without `.` or `..` components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), extend("x-kubernetes-validations" = super::hostdir::cel_validations()))]
    pub bin_dir: Option<String>,
    /// `/etc/cni/net.d` when absent. Same rule as `binDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), extend("x-kubernetes-validations" = super::hostdir::cel_validations()))]
    pub conf_dir: Option<String>,
    /// `06-hybridnet.conflist` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.conflist$"))]
    pub conflist_name: Option<String>,
    /// Plugins chained after hybridnet when present on the node (`[bandwidth, portmap]` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chained_plugins: Option<Vec<String>>,
    /// Pod interface MTU; absent means derived from the parent interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = values::MIN_MTU, max = values::MAX_MTU))]
    pub mtu: Option<i32>,
}

/// Admission webhooks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// failurePolicy of the Pod webhooks (`Ignore` when absent, so an outage never blocks pods;
    /// Network and Subnet validation always fails closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Port the webhook server listens on (9898 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = values::MAX_PORT))]
    pub port: Option<i32>,
    /// Label expressions a pod must also match to be seen by the Pod webhooks, next to the
    /// `webhook.hybridnet.io/ignore` rule (upstream's Helm value
    /// `webhook.additionalPodMatchExpressions`). Absent: upstream's default, pods labelled
    /// `app: kube-proxy` are skipped; `[]`: no extra expression.
    /// Only `NotIn` expressions on user labels are accepted (docs/operations.md, "Pod webhook
    /// exemptions").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::podmatch::schema")]
    pub additional_pod_match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    Ignore,
    Fail,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "Ignore",
            Self::Fail => "Fail",
        }
    }
}

/// The optional overlay network created at install.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapNetwork {
    /// Name of the Network and the Subnet (`init` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// VXLAN VNI (4 when absent).
    #[serde(rename = "vxlanID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = values::MAX_VNI))]
    pub vxlan_id: Option<i32>,
    /// Subnet CIDR, e.g. `100.64.0.0/16`.
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<IpVersion>,
}

/// Feature switches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureSwitches {
    /// Taint nodes that belong to no network with `node.kubernetes.io/network-unavailable` (true
    /// when absent; `false` is refused: not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_unavailable_taint: Option<bool>,
    /// Repair leaked IPInstances automatically, not only report them (true when absent; `false`
    /// is refused: not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_repair: Option<bool>,
    /// Announce pods over BGP (true when absent; `false` is refused: not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<bool>,
    /// Upstream's `MultiCluster` feature gate (Helm value `multiCluster`): the operator checks
    /// and mirrors RemoteClusters (docs/multicluster.md). When absent, the operator's
    /// `--feature-gates` decide (off by default, as upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_cluster: Option<bool>,
    /// Upstream's `VMIPRetain` feature gate (Helm value `vmIPRetain`): pods of a KubeVirt
    /// VirtualMachine keep their addresses across VM restarts (when absent, the operator's
    /// `--feature-gates` decide; off by default).
    #[serde(
        rename = "vmIPRetain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vm_ip_retain: Option<bool>,
}

/// Observed state of the installation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HybridnetClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing` and `Degraded`, following the OpenShift operator conventions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The operand version every component runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The operand version being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_agents: Option<RolloutCounts>,
}

/// Node agent rollout counts, from the DaemonSet status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCounts {
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
}

/// Condition types of a HybridnetCluster.
pub mod condition {
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn vlan_check_fields_are_optional_and_backward_compatible() {
        // An object written before the fields existed reads as "unset".
        let old: HybridnetClusterSpec =
            serde_json::from_value(serde_json::json!({"nodeAgent": {"vxlanUDPPort": 4789}}))
                .unwrap();
        let agent = old.node_agent.unwrap();
        assert_eq!(agent.vxlan_udp_port, Some(4789));
        assert_eq!(
            (
                agent.vlan_check_timeout,
                agent.enable_vlan_arp_enhancement,
                agent.check_pod_connectivity_from_host
            ),
            (None, None, None)
        );
        // Unset fields are not written back.
        let v = serde_json::to_value(NodeAgentSpec::default()).unwrap();
        assert_eq!(v, serde_json::json!({}));
        let set: NodeAgentSpec = serde_json::from_value(serde_json::json!({
            "vlanCheckTimeout": "500ms",
            "enableVlanArpEnhancement": false,
            "checkPodConnectivityFromHost": true
        }))
        .unwrap();
        assert_eq!(set.vlan_check_timeout.as_deref(), Some("500ms"));
        assert_eq!(set.enable_vlan_arp_enhancement, Some(false));
        assert_eq!(set.check_pod_connectivity_from_host, Some(true));
        assert!(
            serde_json::from_value::<NodeAgentSpec>(
                serde_json::json!({"enableVlanArpEnhancement": "yes"})
            )
            .is_err()
        );
    }

    #[test]
    fn crd_schema_constrains_the_vlan_check_fields() {
        let crd = serde_json::to_value(HybridnetCluster::crd()).unwrap();
        let agent = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["nodeAgent"]["properties"];
        let t = &agent["vlanCheckTimeout"];
        assert_eq!(t["type"], "string");
        assert_eq!(t["pattern"], r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$");
        assert_eq!(
            (t["minLength"].as_u64(), t["maxLength"].as_u64()),
            (Some(1), Some(32))
        );
        for b in ["enableVlanArpEnhancement", "checkPodConnectivityFromHost"] {
            assert_eq!(agent[b]["type"], "boolean", "{b}");
        }
        // Additive: none of them is required.
        let spec_required = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["nodeAgent"]["required"];
        assert!(spec_required.is_null(), "{spec_required}");
    }
}

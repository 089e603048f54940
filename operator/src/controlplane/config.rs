//! Settings of the network control plane, from flags and environment (behaviour spec 2.4, 8.4).

use std::time::Duration;

use hybridnet_api::operator::IpFamily;
use hybridnet_api::v1::NetworkType;

/// Everything the controllers and the webhook need to know about the cluster's defaults.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Type of pods that name no network type (`DEFAULT_NETWORK_TYPE`).
    pub default_network_type: NetworkType,
    /// Family of pods that name no family (`DEFAULT_IP_FAMILY`).
    pub default_ip_family: IpFamily,
    /// Stateful pods keep their addresses unless `ip-retain: "false"` (`--default-ip-retain`).
    pub default_ip_retain: bool,
    /// Owner kinds whose pods are stateful (`--stateful-workload-kinds`).
    pub stateful_workload_kinds: Vec<String>,
    /// Parallel reconciles of the pod controller.
    pub pod_concurrency: u16,
    /// Parallel reconciles of the other controllers.
    pub concurrency: u16,
    /// Namespace of the leader-election Lease.
    pub namespace: String,
    /// Name of the leader-election Lease.
    pub leader_election_id: String,
    /// Identity written into the Lease (pod name, or host name plus a random suffix).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews and a standby retries.
    pub lease_retry: Duration,
    /// How often the leak detector runs.
    pub leak_check_interval: Duration,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            default_network_type: NetworkType::Underlay,
            default_ip_family: IpFamily::IPv4,
            default_ip_retain: true,
            stateful_workload_kinds: vec!["StatefulSet".to_string()],
            pod_concurrency: 8,
            concurrency: 2,
            namespace: "kube-system".to_string(),
            leader_election_id: "hybridnet-manager-election".to_string(),
            identity: "hybridnet-operator".to_string(),
            lease_duration: Duration::from_secs(15),
            lease_retry: Duration::from_secs(2),
            leak_check_interval: Duration::from_secs(60),
        }
    }
}

impl ControlPlaneConfig {
    /// Whether an owner of `kind` makes its pods stateful.
    pub fn is_stateful_kind(&self, kind: &str) -> bool {
        self.stateful_workload_kinds.iter().any(|k| k == kind)
    }
}

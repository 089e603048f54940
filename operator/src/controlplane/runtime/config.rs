//! Settings of the network control plane, from flags and environment (upstream `cmd/manager/main.go`).

use std::time::Duration;

use crate::controlplane::rules::defaults::PodDefaults;
use hybridnet_api::selector::PodSelector;

/// Everything the controllers and the webhook need to know about the cluster's defaults.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Pod defaults from the flags (`--default-network-type`, `--default-ip-family`,
    /// `--default-ip-retain`, `--stateful-workload-kinds`): the fallback when
    /// `HybridnetCluster/default` does not exist (see [`crate::controlplane::rules::defaults`]).
    pub defaults: PodDefaults,
    /// Only pods whose labels match are allocated and released by the pod controller
    /// (`--pod-label-selector`; empty = every pod).
    pub pod_selector: PodSelector,
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
    /// How often every RemoteCluster is connected to and checked
    /// (`controllers::remotecluster`; upstream: 30 s).
    pub remote_cluster_check_interval: Duration,
    /// `(namespace, name)` of upstream hybridnet's manager Lease: held too while leading, so
    /// upstream's manager and this control plane never allocate at once (docs/migration.md).
    /// `None`, or the same Lease as ours: no guard.
    pub upstream_lease: Option<(String, String)>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            defaults: PodDefaults::default(),
            pod_selector: PodSelector::everything(),
            pod_concurrency: 8,
            concurrency: 2,
            namespace: "kube-system".to_string(),
            leader_election_id: "hybridnet-manager-election".to_string(),
            identity: "hybridnet-operator".to_string(),
            lease_duration: Duration::from_secs(15),
            lease_retry: Duration::from_secs(2),
            leak_check_interval: Duration::from_secs(60),
            remote_cluster_check_interval:
                crate::controlplane::controllers::remotecluster::CHECK_PERIOD,
            upstream_lease: Some((
                hybridnet_api::migration::UPSTREAM_NAMESPACE.to_string(),
                hybridnet_api::migration::UPSTREAM_LEADER_LEASE.to_string(),
            )),
        }
    }
}

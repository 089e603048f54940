//! Every annotation, label, finalizer and taint key hybridnet reads or writes, spelled as upstream.

/// Annotation and label keys on pods and namespaces.
pub mod annotation {
    pub const SPECIFIED_NETWORK: &str = "networking.alibaba.com/specified-network";
    pub const SPECIFIED_SUBNET: &str = "networking.alibaba.com/specified-subnet";
    pub const NETWORK_TYPE: &str = "networking.alibaba.com/network-type";
    pub const IP_FAMILY: &str = "networking.alibaba.com/ip-family";
    pub const IP_RETAIN: &str = "networking.alibaba.com/ip-retain";
    pub const IP_POOL: &str = "networking.alibaba.com/ip-pool";
    pub const MAC_POOL: &str = "networking.alibaba.com/mac-pool";
    pub const HANDLED_BY_WEBHOOK: &str = "networking.alibaba.com/handled-by-webhook";
    pub const CALICO_POD_IPS: &str = "cni.projectcalico.org/podIPs";
    pub const GLOBAL_SERVICE: &str = "networking.alibaba.com/global-service";

    // NodeInfo annotations the node agent publishes (ours, not upstream's). Wire forms:
    // `hybridnet_node::plan::RouteTables`, `hybridnet_node::bgp::BgpSession`,
    // `crate::migration::NodeLeftovers`.
    /// Pod subnet -> routing table number the agent programmed.
    pub const NODE_ROUTE_TABLES: &str = "hybridnet.io/route-tables";
    /// The agent's BGP sessions and their states.
    pub const NODE_BGP_SESSIONS: &str = "hybridnet.io/bgp-sessions";
    /// Upstream's node leftovers the agent could not remove.
    pub const NODE_UPSTREAM_LEFTOVERS: &str = "hybridnet.io/upstream-leftovers";
    /// The version of the node agent that wrote the NodeInfo (its release, e.g. `0.1.0`); read
    /// by `kubectl hybridnet version`.
    pub const NODE_AGENT_VERSION: &str = "hybridnet.io/agent-version";
    /// Why the node agent refused to start: the kernel features it found missing (plain text,
    /// written before it exits, removed once a check passes). An annotation, not a status
    /// field: upstream's NodeInfo schema has only `status.updateTimestamp` and would prune one.
    pub const NODE_KERNEL_CHECK: &str = "hybridnet.io/kernel-check";

    /// On the HybridnetCluster: the bootstrap Network/Subnet were created once (a user who deletes
    /// them later does not see them come back).
    pub const BOOTSTRAP_CREATED: &str = "operator.hybridnet.io/bootstrap-created";
    /// On the HybridnetCluster: the release of the operator that reconciles it (e.g. `0.1.0`);
    /// read by `kubectl hybridnet version`.
    pub const OPERATOR_VERSION: &str = "operator.hybridnet.io/operator-version";
}

/// Label keys.
pub mod label {
    /// On pods: `true` excludes the pod from the admission webhooks.
    pub const WEBHOOK_IGNORE: &str = "webhook.hybridnet.io/ignore";

    // Node labels written by the operator.
    pub const UNDERLAY_NETWORK_ATTACHMENT: &str =
        "networking.alibaba.com/underlay-network-attachment";
    pub const OVERLAY_NETWORK_ATTACHMENT: &str =
        "networking.alibaba.com/overlay-network-attachment";
    pub const BGP_NETWORK_ATTACHMENT: &str = "networking.alibaba.com/bgp-network-attachment";
    pub const IPV4_ADDRESS_QUOTA: &str = "networking.alibaba.com/ipv4-address-quota";
    pub const IPV6_ADDRESS_QUOTA: &str = "networking.alibaba.com/ipv6-address-quota";
    pub const DUALSTACK_ADDRESS_QUOTA: &str = "networking.alibaba.com/dualstack-address-quota";
    pub const ATTACHED: &str = "true";
    pub const QUOTA_NONEMPTY: &str = "nonempty";
    pub const QUOTA_EMPTY: &str = "empty";

    // IPInstance labels.
    pub const VERSION: &str = "networking.alibaba.com/version";
    pub const VERSION_V1_2: &str = "v1.2";
    pub const SUBNET: &str = "networking.alibaba.com/subnet";
    pub const NETWORK: &str = "networking.alibaba.com/network";
    pub const NODE: &str = "networking.alibaba.com/node";
    pub const POD: &str = "networking.alibaba.com/pod";
    pub const POD_UID: &str = "networking.alibaba.com/pod-uid";
    pub const VM: &str = "networking.alibaba.com/vm";
    /// On multi-cluster mirrors (RemoteSubnet, RemoteVtep): the RemoteCluster they belong to
    /// (upstream pkg/constants/labels.go `LabelCluster`); with [`SUBNET`] or [`NODE`] naming the
    /// mirrored Subnet or node.
    pub const CLUSTER: &str = "networking.alibaba.com/cluster";
    /// On RemoteEndpointSlices and the EndpointSlices made from them: the RemoteCluster they
    /// come from (upstream pkg/constants/labels.go `LabelRemoteCluster`).
    pub const REMOTE_CLUSTER: &str = "networking.alibaba.com/remote-cluster";

    /// Objects the operator manages carry this label.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_OPERATOR: &str = "hybridnet-operator";
}

/// Finalizers.
pub mod finalizer {
    /// On IPInstances (always) and on stateful pods: the address is still accounted in the IPAM.
    pub const IP_ALLOCATED: &str = "networking.alibaba.com/ip-allocated";
    /// On the HybridnetCluster: cluster-wide objects created by the operator are removed first.
    pub const CLUSTER_CLEANUP: &str = "operator.hybridnet.io/cleanup";
    /// Put on Networks and Subnets by upstream's manager so its metrics are dropped before they go
    /// (upstream pkg/controllers/networking/networkstatus_controller.go and
    /// subnetstatus_controller.go, `constants.FinalizerMetricsRegistered`). We never add it; the
    /// operator removes it from terminating objects so a migrated Network or Subnet can be deleted.
    pub const UPSTREAM_METRICS_REGISTERED: &str = "networking.alibaba.com/metrics-registered";
    /// Put on RemoteClusters by upstream's manager while it runs a client to the remote cluster
    /// (upstream pkg/constants/finalizers.go `FinalizerManagerRuntimeRegistered`).
    pub const MANAGER_RUNTIME_REGISTERED: &str =
        "multicluster.alibaba.com/manager-runtime-registered";
}

/// Taints.
pub mod taint {
    /// Put on nodes that belong to no network; hostNetwork pods tolerate it.
    pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
}

/// Field managers for server-side apply.
pub mod field_manager {
    pub const OPERATOR: &str = "hybridnet-operator";
    pub const NODE_AGENT: &str = "hybridnet-node";
    /// The node agent's kernel check report (the NodeInfo annotation `hybridnet.io/kernel-check`),
    /// kept apart from its regular publication so that neither removes the other's fields.
    pub const NODE_KERNEL_CHECK: &str = "hybridnet-node-kernel-check";
    pub const KUBECTL_PLUGIN: &str = "kubectl-hybridnet";
}

/// Environment variables shared with the original.
pub mod env {
    pub const DEFAULT_NETWORK_TYPE: &str = "DEFAULT_NETWORK_TYPE";
    pub const DEFAULT_IP_FAMILY: &str = "DEFAULT_IP_FAMILY";
    pub const NAMESPACE: &str = "NAMESPACE";
    pub const KUBE_NODE_NAME: &str = "KUBE_NODE_NAME";
}

/// The node agent's shutdown: on SIGTERM it refuses new CNI requests with code 11 ("try again
/// later") and lets the ones in flight finish for at most [`DRAIN_GRACE_SECONDS`]; the rendered
/// DaemonSet gives the pod [`TERMINATION_GRACE_PERIOD_SECONDS`] before the kubelet kills it,
/// which leaves room for the drain and the writes after it (docs/operations.md, "Agent shutdown").
pub mod agent_shutdown {
    /// Default of the agent's `--shutdown-grace-seconds`: the longest an ADD takes (IPInstance
    /// wait 10 s, VLAN checks at most 3 s by default, ping 5 s) fits.
    pub const DRAIN_GRACE_SECONDS: u64 = 20;
    /// The DaemonSet's `terminationGracePeriodSeconds`.
    pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
    const _: () = assert!(DRAIN_GRACE_SECONDS as i64 + 5 <= TERMINATION_GRACE_PERIOD_SECONDS);
}

//! `kubectl hybridnet uninstall`: what to delete, in which order, from facts read off the cluster.
//!
//! The order keeps every finalizer served by the one who owns it (docs/operations.md, "Removing"):
//! 1. with `--delete-data` only: RemoteClusters (the operator deletes their mirrors and removes
//!    `multicluster.alibaba.com/manager-runtime-registered`), IPInstances, then Subnets, then
//!    Networks, each waited for, while the operator still runs (it removes
//!    `networking.alibaba.com/ip-allocated` and validates that no Subnet in use goes);
//! 2. `HybridnetCluster/default`, waited for: the operator's `operator.hybridnet.io/cleanup`
//!    finalizer removes what it created (node agents, webhooks, their RBAC);
//! 3. the operator's own install (`deploy/`: Deployment, RBAC, ServiceAccount, namespace), unless
//!    OLM installed it (then the Subscription and CSV are the user's to delete);
//! 4. with `--delete-data` only: the CRDs.
//!
//! Without `--delete-data` Networks, Subnets, IPInstances and the CRDs are never touched. The
//! plugin never removes a finalizer itself: when one is needed and the operator does not run, it
//! stops before deleting anything and says why.

use serde::Serialize;

/// A Kubernetes object by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ObjRef {
    /// kubectl's resource reference: `deployment.apps`, `hybridnetcluster.operator.hybridnet.io`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjRef {
    pub fn cluster(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            namespace: None,
            name: name.into(),
        }
    }
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} -n {ns}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// An API resource by kubectl's reference: (group, version, Kind, plural, namespaced).
pub fn resource_of(
    kind: &str,
) -> Option<(&'static str, &'static str, &'static str, &'static str, bool)> {
    Some(match kind {
        "hybridnetcluster.operator.hybridnet.io" => (
            "operator.hybridnet.io",
            "v1alpha1",
            "HybridnetCluster",
            "hybridnetclusters",
            false,
        ),
        "ipinstance.networking.alibaba.com" => (
            "networking.alibaba.com",
            "v1",
            "IPInstance",
            "ipinstances",
            true,
        ),
        "subnet.networking.alibaba.com" => {
            ("networking.alibaba.com", "v1", "Subnet", "subnets", false)
        }
        "network.networking.alibaba.com" => {
            ("networking.alibaba.com", "v1", "Network", "networks", false)
        }
        "remotecluster.multicluster.alibaba.com" => (
            "multicluster.alibaba.com",
            "v1",
            "RemoteCluster",
            "remoteclusters",
            false,
        ),
        "deployment.apps" => ("apps", "v1", "Deployment", "deployments", true),
        "daemonset.apps" => ("apps", "v1", "DaemonSet", "daemonsets", true),
        "serviceaccount" => ("", "v1", "ServiceAccount", "serviceaccounts", true),
        "secret" => ("", "v1", "Secret", "secrets", true),
        "service" => ("", "v1", "Service", "services", true),
        "namespace" => ("", "v1", "Namespace", "namespaces", false),
        "role.rbac.authorization.k8s.io" => {
            ("rbac.authorization.k8s.io", "v1", "Role", "roles", true)
        }
        "rolebinding.rbac.authorization.k8s.io" => (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        "clusterrole.rbac.authorization.k8s.io" => (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        "clusterrolebinding.rbac.authorization.k8s.io" => (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        "validatingwebhookconfiguration.admissionregistration.k8s.io" => (
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        ),
        "mutatingwebhookconfiguration.admissionregistration.k8s.io" => (
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        "customresourcedefinition.apiextensions.k8s.io" => (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        _ => return None,
    })
}

/// The kinds the operator creates (docs/operations.md, "What the operator creates"), listed by
/// its managed-by label.
pub const OPERAND_KINDS: &[&str] = &[
    "daemonset.apps",
    "service",
    "secret",
    "serviceaccount",
    "clusterrolebinding.rbac.authorization.k8s.io",
    "clusterrole.rbac.authorization.k8s.io",
    "validatingwebhookconfiguration.admissionregistration.k8s.io",
    "mutatingwebhookconfiguration.admissionregistration.k8s.io",
];

/// The operator's own install (`deploy/`), in deletion order: the Deployment first, so the
/// operator stops before its permissions go; all named `hybridnet-operator`.
pub const INSTALL_KINDS: &[&str] = &[
    "deployment.apps",
    "rolebinding.rbac.authorization.k8s.io",
    "role.rbac.authorization.k8s.io",
    "serviceaccount",
    "clusterrolebinding.rbac.authorization.k8s.io",
    "clusterrole.rbac.authorization.k8s.io",
];

/// hybridnet's CRDs.
pub const CRDS: &[&str] = &[
    "ipinstances.networking.alibaba.com",
    "subnets.networking.alibaba.com",
    "networks.networking.alibaba.com",
    "nodeinfoes.networking.alibaba.com",
    "hybridnetclusters.operator.hybridnet.io",
    "remoteclusters.multicluster.alibaba.com",
    "remotesubnets.multicluster.alibaba.com",
    "remotevteps.multicluster.alibaba.com",
    "remoteendpointslice.multicluster.alibaba.com",
];

/// Whether a leader Lease shows a live holder: held, and renewed within its duration (plus the
/// same again for clock skew and a renewal in progress).
pub fn lease_live(
    holder: Option<&str>,
    renew_unix: Option<i64>,
    duration_s: Option<i64>,
    now_unix: i64,
) -> bool {
    let (Some(h), Some(r)) = (holder, renew_unix) else {
        return false;
    };
    let d = duration_s.unwrap_or(15).clamp(1, 3600);
    !h.is_empty() && now_unix <= r.saturating_add(2 * d)
}

/// What the cluster holds, as read by the shell.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `HybridnetCluster/default` exists.
    pub cluster: bool,
    /// The operator's leader Lease was renewed within its duration (the operator runs).
    pub operator_running: bool,
    /// The ClusterServiceVersion that owns the operator Deployment (OLM install).
    pub olm_csv: Option<String>,
    /// Objects the operator created (managed-by label), removed by its finalizer.
    pub operands: Vec<ObjRef>,
    /// The operator's own install objects present (`deploy/`), in deletion order.
    pub install: Vec<ObjRef>,
    pub ipinstances: Vec<ObjRef>,
    pub subnets: Vec<ObjRef>,
    pub networks: Vec<ObjRef>,
    pub remote_clusters: Vec<ObjRef>,
    /// hybridnet's CRDs present.
    pub crds: Vec<ObjRef>,
}

/// The user's choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Also delete every IPInstance, Subnet and Network, and the CRDs.
    pub delete_data: bool,
}

/// One step: delete these objects, then (when `wait`) wait until they are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub what: String,
    pub delete: Vec<ObjRef>,
    /// Removed by someone else as a consequence (shown in the listing, not deleted by us).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub then_removed_by_operator: Vec<ObjRef>,
    pub wait: bool,
}

/// The whole uninstall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// What stays, and why.
    pub kept: Vec<String>,
}

/// Why nothing may be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Decides the steps. Refuses when a step needs the operator's finalizers and it does not run.
pub fn plan(f: &Facts, o: Options) -> Result<Plan, Refusal> {
    let data = o.delete_data
        && !(f.ipinstances.is_empty()
            && f.subnets.is_empty()
            && f.networks.is_empty()
            && f.remote_clusters.is_empty());
    let needs_operator = f.cluster || data;
    if needs_operator && !f.operator_running {
        let mut why = Vec::new();
        if f.cluster {
            why.push("HybridnetCluster/default carries its clean-up finalizer");
        }
        if data && !f.remote_clusters.is_empty() {
            why.push("RemoteClusters carry the manager-runtime-registered finalizer");
        }
        if data && !(f.ipinstances.is_empty() && f.subnets.is_empty() && f.networks.is_empty()) {
            why.push("IPInstances carry the ip-allocated finalizer");
        }
        return Err(Refusal(format!(
            "the hybridnet operator is not running (its leader Lease is not being renewed), and {}: deleting now would leave objects hanging in Terminating. Start the operator again (its Deployment{}), then rerun; nothing was deleted",
            why.join(" and "),
            if f.olm_csv.is_some() {
                ", managed by OLM"
            } else {
                " from deploy/"
            }
        )));
    }
    let mut p = Plan::default();
    if o.delete_data {
        for (what, list) in [
            (
                "RemoteClusters (the operator deletes their mirrors)",
                &f.remote_clusters,
            ),
            (
                "IPInstances (the operator releases each address)",
                &f.ipinstances,
            ),
            ("Subnets", &f.subnets),
            ("Networks", &f.networks),
        ] {
            if !list.is_empty() {
                p.steps.push(Step {
                    what: what.into(),
                    delete: list.clone(),
                    then_removed_by_operator: Vec::new(),
                    wait: true,
                });
            }
        }
    }
    if f.cluster {
        p.steps.push(Step {
            what: "the HybridnetCluster (the operator's finalizer removes what it created)".into(),
            delete: vec![ObjRef::cluster(
                "hybridnetcluster.operator.hybridnet.io",
                "default",
            )],
            then_removed_by_operator: f.operands.clone(),
            wait: true,
        });
    }
    match &f.olm_csv {
        Some(csv) => p.kept.push(format!(
            "the operator: OLM installed it (ClusterServiceVersion {csv}); delete its Subscription and ClusterServiceVersion to remove it"
        )),
        None if !f.install.is_empty() => p.steps.push(Step {
            what: "the operator's install (deploy/)".into(),
            delete: f.install.clone(),
            then_removed_by_operator: Vec::new(),
            wait: false,
        }),
        None => {}
    }
    if o.delete_data {
        if !f.crds.is_empty() {
            p.steps.push(Step {
                what: "the CRDs".into(),
                delete: f.crds.clone(),
                then_removed_by_operator: Vec::new(),
                wait: false,
            });
        }
    } else {
        let n = |v: &Vec<ObjRef>| v.len();
        p.kept.push(format!(
            "{} Networks, {} Subnets, {} IPInstances, {} RemoteClusters and the CRDs: user data (--delete-data removes them, first the RemoteClusters and IPInstances while the operator still runs)",
            n(&f.networks),
            n(&f.subnets),
            n(&f.ipinstances),
            n(&f.remote_clusters)
        ));
    }
    Ok(p)
}

/// The listing of `--dry-run` (and the progress lines of a real run).
pub fn describe(p: &Plan, dry: bool) -> String {
    let mut s = String::new();
    let verb = if dry { "would delete" } else { "deleting" };
    for (i, st) in p.steps.iter().enumerate() {
        s.push_str(&format!(
            "{}. {verb} {}{}:\n",
            i + 1,
            st.what,
            if st.wait { ", waiting until gone" } else { "" }
        ));
        for o in &st.delete {
            s.push_str(&format!("   {o}\n"));
        }
        if !st.then_removed_by_operator.is_empty() {
            s.push_str("   then the operator removes:\n");
            for o in &st.then_removed_by_operator {
                s.push_str(&format!("     {o}\n"));
            }
        }
    }
    if p.steps.is_empty() {
        s.push_str("nothing of hybridnet's install to delete\n");
    }
    for k in &p.kept {
        s.push_str(&format!("kept: {k}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            cluster: true,
            operator_running: true,
            olm_csv: None,
            operands: vec![ObjRef::namespaced(
                "daemonset.apps",
                "hybridnet-system",
                "hybridnet-node",
            )],
            install: vec![
                ObjRef::namespaced("deployment.apps", "hybridnet-system", "hybridnet-operator"),
                ObjRef::cluster("namespace", "hybridnet-system"),
            ],
            ipinstances: vec![ObjRef::namespaced(
                "ipinstance.networking.alibaba.com",
                "default",
                "198-19-0-5",
            )],
            subnets: vec![ObjRef::cluster("subnet.networking.alibaba.com", "s")],
            networks: vec![ObjRef::cluster("network.networking.alibaba.com", "n")],
            remote_clusters: vec![ObjRef::cluster(
                "remotecluster.multicluster.alibaba.com",
                "cluster-b",
            )],
            crds: vec![ObjRef::cluster(
                "customresourcedefinition.apiextensions.k8s.io",
                "networks.networking.alibaba.com",
            )],
        }
    }

    fn kinds(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .flat_map(|s| s.delete.iter().map(|o| o.kind.clone()))
            .collect()
    }

    #[test]
    fn default_keeps_user_data_and_crds() {
        let p = plan(&facts(), Options::default()).unwrap();
        assert_eq!(
            kinds(&p),
            [
                "hybridnetcluster.operator.hybridnet.io",
                "deployment.apps",
                "namespace"
            ]
        );
        assert!(p.steps[0].wait, "the operator's finalizer is waited for");
        assert!(!p.steps[1].wait);
        assert!(
            p.kept[0]
                .starts_with("1 Networks, 1 Subnets, 1 IPInstances, 1 RemoteClusters and the CRDs"),
            "{:?}",
            p.kept
        );
        let text = describe(&p, true);
        assert!(
            text.contains("1. would delete the HybridnetCluster"),
            "{text}"
        );
        assert!(
            text.contains("daemonset.apps/hybridnet-node -n hybridnet-system"),
            "{text}"
        );
    }

    #[test]
    fn delete_data_goes_addresses_subnets_networks_cluster_install_crds() {
        let p = plan(&facts(), Options { delete_data: true }).unwrap();
        assert_eq!(
            kinds(&p),
            [
                "remotecluster.multicluster.alibaba.com",
                "ipinstance.networking.alibaba.com",
                "subnet.networking.alibaba.com",
                "network.networking.alibaba.com",
                "hybridnetcluster.operator.hybridnet.io",
                "deployment.apps",
                "namespace",
                "customresourcedefinition.apiextensions.k8s.io"
            ]
        );
        assert!(p.steps[..5].iter().all(|s| s.wait));
        assert!(p.kept.is_empty());
    }

    #[test]
    fn refuses_when_a_finalizer_needs_the_operator_and_it_does_not_run() {
        let mut f = facts();
        f.operator_running = false;
        let e = plan(&f, Options::default()).unwrap_err();
        assert!(e.0.contains("operator is not running"), "{}", e.0);
        assert!(e.0.contains("nothing was deleted"), "{}", e.0);
        // Nothing that needs it: the install alone may go.
        f.cluster = false;
        let p = plan(&f, Options::default()).unwrap();
        assert_eq!(kinds(&p), ["deployment.apps", "namespace"]);
        // Data without a running operator: refused too.
        assert!(plan(&f, Options { delete_data: true }).is_err());
        f.ipinstances.clear();
        f.subnets.clear();
        f.networks.clear();
        // RemoteClusters alone need it too (their finalizer), and the refusal says so.
        let e = plan(&f, Options { delete_data: true }).unwrap_err();
        assert!(e.0.contains("RemoteClusters carry"), "{}", e.0);
        assert!(!e.0.contains("IPInstances carry"), "{}", e.0);
        f.remote_clusters.clear();
        assert!(plan(&f, Options { delete_data: true }).is_ok());
    }

    #[test]
    fn olm_installs_keep_the_operator_and_say_how() {
        let mut f = facts();
        f.olm_csv = Some("hybridnet-operator.v0.1.0".into());
        let p = plan(&f, Options::default()).unwrap();
        assert_eq!(kinds(&p), ["hybridnetcluster.operator.hybridnet.io"]);
        assert!(p.kept[0].contains("ClusterServiceVersion hybridnet-operator.v0.1.0"));
    }

    #[test]
    fn every_kind_used_has_a_resource() {
        for k in OPERAND_KINDS.iter().chain(INSTALL_KINDS).chain(&[
            "hybridnetcluster.operator.hybridnet.io",
            "ipinstance.networking.alibaba.com",
            "subnet.networking.alibaba.com",
            "network.networking.alibaba.com",
            "remotecluster.multicluster.alibaba.com",
            "namespace",
            "customresourcedefinition.apiextensions.k8s.io",
        ]) {
            assert!(resource_of(k).is_some(), "{k}");
        }
        assert!(resource_of("pod").is_none());
    }

    #[test]
    fn lease_liveness() {
        assert!(lease_live(Some("op-1"), Some(1000), Some(15), 1020));
        assert!(lease_live(Some("op-1"), Some(1000), Some(15), 1030));
        assert!(!lease_live(Some("op-1"), Some(1000), Some(15), 1031));
        assert!(!lease_live(Some(""), Some(1000), Some(15), 1000));
        assert!(!lease_live(None, Some(1000), Some(15), 1000));
        assert!(!lease_live(Some("op-1"), None, Some(15), 1000));
        // hostile durations stay bounded
        assert!(!lease_live(
            Some("op-1"),
            Some(0),
            Some(i64::MAX),
            1_000_000
        ));
        assert!(lease_live(Some("op-1"), Some(1000), Some(-5), 1002));
    }

    #[test]
    fn empty_cluster_has_nothing_to_do() {
        let p = plan(&Facts::default(), Options::default()).unwrap();
        assert!(p.steps.is_empty());
        assert!(describe(&p, true).contains("nothing of hybridnet's install to delete"));
    }
}

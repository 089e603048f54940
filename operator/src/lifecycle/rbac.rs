//! RBAC rules with exact resources and verbs (never `*`), and object names wherever the operator
//! manages a fixed set of objects.
//!
//! The operator holds every permission it grants the node agent, so it can create the agent's
//! ClusterRole and binding without `escalate` or `bind` (the API server's escalation check passes
//! when the creator already holds the rules). A unit test proves the coverage.
//!
//! Least privilege (docs/operations.md, "Permissions"): every object the lifecycle renders has a
//! fixed name ([`named_objects`]); the rules that reach those kinds list exactly those names in
//! `resourceNames`, so the operator cannot read, change or delete any other ClusterRole, binding,
//! webhook configuration, Secret, DaemonSet, Service, ServiceAccount or Lease. Kubernetes cannot
//! restrict `create` by name (the name is not known when the request is authorized), so `create`
//! sits in a rule of its own without names: it can only make a new object (an existing one
//! answers 409), never change one that exists; a created ClusterRole or binding still passes
//! the escalation check (no more than the operator holds). `list` and `watch` with
//! `resourceNames` are allowed only with a `metadata.name` field selector, which is how the
//! lifecycle watches and cleans up these kinds.

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::names;
use super::openshift::{Platform, SCC_RESOURCE, SECURITY_GROUP};

const READ: &[&str] = &["get", "list", "watch"];
const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
/// Every verb of [`MANAGE`] except `create`: what `resourceNames` can restrict.
const MANAGE_NAMED: &[&str] = &["get", "list", "watch", "update", "patch", "delete"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn named_rule(group: &str, resource: &str, names: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: Some(names.iter().map(|s| s.to_string()).collect()),
        ..rule(&[group], &[resource], verbs)
    }
}

const NETWORKING: &str = "networking.alibaba.com";
const MULTICLUSTER: &str = hybridnet_api::multicluster::GROUP;
const OPERATOR_GROUP: &str = "operator.hybridnet.io";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const ADMISSION_GROUP: &str = "admissionregistration.k8s.io";

/// An object kind the operator manages by fixed name: (API group, resource, names).
pub type NamedKind = (&'static str, &'static str, &'static [&'static str]);

/// Cluster-scoped kinds the lifecycle renders, each with the only names it uses.
pub fn named_cluster_objects() -> Vec<NamedKind> {
    vec![
        (RBAC_GROUP, "clusterroles", &[names::NODE_AGENT]),
        (RBAC_GROUP, "clusterrolebindings", &[names::NODE_AGENT]),
        (
            ADMISSION_GROUP,
            "mutatingwebhookconfigurations",
            &[names::MUTATING_WEBHOOK_CONFIG],
        ),
        (
            ADMISSION_GROUP,
            "validatingwebhookconfigurations",
            &[names::VALIDATING_WEBHOOK_CONFIG],
        ),
        // Rendered on OpenShift only (`openshift::agent_scc`); the rule is harmless elsewhere.
        (SECURITY_GROUP, SCC_RESOURCE, &[names::NODE_AGENT]),
    ]
}

/// `use` of the agent's SCC by name: granted to the node agent on OpenShift, held by the operator
/// so that granting it passes the escalation check.
fn scc_use_rule() -> PolicyRule {
    named_rule(SECURITY_GROUP, SCC_RESOURCE, &[names::NODE_AGENT], &["use"])
}

/// Kinds in the operator's own namespace it manages, each with the only names it uses.
pub fn named_namespace_objects() -> Vec<NamedKind> {
    vec![
        ("apps", "daemonsets", &[names::NODE_AGENT]),
        ("", "services", &[names::WEBHOOK_SERVICE]),
        ("", "secrets", &[names::WEBHOOK_SECRET]),
        ("", "serviceaccounts", &[names::NODE_AGENT]),
        ("coordination.k8s.io", "leases", &[names::LEADER_LEASE]),
    ]
}

/// Every named kind of the operator (cluster-scoped and namespaced).
pub fn named_objects() -> Vec<NamedKind> {
    let mut all = named_cluster_objects();
    all.extend(named_namespace_objects());
    all
}

/// For each named kind: one rule with the names (every verb but `create`) and one `create` rule.
fn named_rules(kinds: Vec<NamedKind>) -> Vec<PolicyRule> {
    kinds
        .into_iter()
        .flat_map(|(g, res, ns)| {
            [
                named_rule(g, res, ns, MANAGE_NAMED),
                rule(&[g], &[res], &["create"]),
            ]
        })
        .collect()
}

/// Cluster-wide rules of the operator (lifecycle, control plane and webhook).
pub fn operator_cluster_rules() -> Vec<PolicyRule> {
    vec![
        // Control plane: pods -> IPInstances, pod finalizers for stateful pods, events on pods.
        rule(
            &[""],
            &["pods"],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(&[""], &["pods/status"], &["get", "update", "patch"]),
        // Node attachment labels and the network-unavailable taint.
        rule(
            &[""],
            &["nodes"],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(&[""], &["namespaces"], READ),
        // Granted to the node agent (NetworkPolicy enforcement): held to grant it.
        rule(&["networking.k8s.io"], &["networkpolicies"], READ),
        rule(&[""], &["events"], &["create", "patch", "update"]),
        rule(
            &["events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(&["apps"], &["statefulsets"], READ),
        // VMIPRetain: a pod's VirtualMachineInstance and its VirtualMachine are read one by one
        // (operator/src/controlplane/controllers/pod.rs; upstream's chart grants get and list).
        rule(
            &[hybridnet_api::kubevirt::GROUP],
            &[
                hybridnet_api::kubevirt::VM_PLURAL,
                hybridnet_api::kubevirt::VMI_PLURAL,
            ],
            &["get"],
        ),
        rule(
            &[NETWORKING],
            &["networks", "subnets", "ipinstances", "nodeinfoes"],
            MANAGE,
        ),
        rule(
            &[NETWORKING],
            &[
                "networks/status",
                "subnets/status",
                "ipinstances/status",
                "nodeinfoes/status",
            ],
            &["get", "update", "patch"],
        ),
        // The webhook compares RemoteClusters and RemoteSubnets with the ones that exist, the
        // RemoteCluster checks read them, write the status and keep the mirrors
        // (docs/multicluster.md).
        // Upstream's finalizer on the RemoteClusters it runs (put on, taken off after the mirrors).
        rule(
            &[MULTICLUSTER],
            &["remoteclusters"],
            &["get", "list", "watch", "update", "patch"],
        ),
        // The mirrors of Ready remote clusters (RemoteEndpointSlices: their global Services).
        rule(
            &[MULTICLUSTER],
            &["remotesubnets", "remotevteps", "remoteendpointslice"],
            MANAGE,
        ),
        rule(
            &[MULTICLUSTER],
            &[
                "remoteclusters/status",
                "remotesubnets/status",
                "remotevteps/status",
                "remoteendpointslice/status",
            ],
            &["get", "update", "patch"],
        ),
        // Lifecycle: the HybridnetCluster itself (finalizer, status; `/finalizers` lets owner
        // references block deletion).
        rule(
            &[OPERATOR_GROUP],
            &["hybridnetclusters"],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(
            &[OPERATOR_GROUP],
            &["hybridnetclusters/status", "hybridnetclusters/finalizers"],
            &["get", "update", "patch"],
        ),
        // Only read: the operator checks its CRDs are installed, it never changes them.
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
    ]
    .into_iter()
    // The node agent's ClusterRole and binding and the webhook configurations, applied by
    // server-side apply: by name only.
    .chain(named_rules(named_cluster_objects()))
    .chain([scc_use_rule()])
    .chain(upstream_guard_rules())
    .collect()
}

/// Global services (docs/multicluster.md): read every Service, write the EndpointSlices of the
/// local global Services. Not part of the operator's own ClusterRole: RBAC cannot limit
/// EndpointSlices to the ones labelled `endpointslice.kubernetes.io/managed-by:
/// remote-endpointslice.hybridnet`, so this reach is granted only where an administrator applies
/// `deploy/global-services/` (the import then applies without `force`, so a slice another manager
/// wrote is never taken over, and deletes only slices carrying that label).
pub fn global_services_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[""], &["services"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], MANAGE),
    ]
}

/// Upstream hybridnet's manager Lease (in `kube-system`, where a ClusterRole is the only grant
/// OLM can give), which the control plane holds while it leads so upstream's manager cannot
/// (docs/migration.md): read and renew by that one name, never created, never deleted.
pub const UPSTREAM_GUARD_VERBS: &[&str] = &["get", "update"];

fn upstream_guard_rules() -> Vec<PolicyRule> {
    vec![named_rule(
        "coordination.k8s.io",
        "leases",
        &[hybridnet_api::migration::UPSTREAM_LEADER_LEASE],
        UPSTREAM_GUARD_VERBS,
    )]
}

/// OpenShift's SCC for host-network pods without other host access (`hostnetwork-v2`): the
/// operator's own pod runs on the host network (it serves the webhook before any pod network
/// exists), and OpenShift admits it only under an SCC its ServiceAccount may `use`.
pub const OPERATOR_SCC: &str = "hostnetwork-v2";

/// `use` of [`OPERATOR_SCC`] by name, in the operator's own namespace only (a Role: OpenShift
/// asks for `use` in the pod's namespace). Harmless where no SCC exists.
pub fn operator_scc_rules() -> Vec<PolicyRule> {
    vec![named_rule(
        SECURITY_GROUP,
        SCC_RESOURCE,
        &[OPERATOR_SCC],
        &["use"],
    )]
}

/// Rules of the operator in its own namespace (OLM `permissions`): the node agent's DaemonSet
/// and ServiceAccount, the webhook Service and certificate Secret and the leader Lease, by name;
/// on OpenShift the SCC its own pod runs under.
pub fn operator_namespace_rules() -> Vec<PolicyRule> {
    let mut rules = named_rules(named_namespace_objects());
    rules.push(rule(&[""], &["events"], &["create", "patch", "update"]));
    rules.extend(operator_scc_rules());
    rules
}

/// The node agent's rules on `platform`: on OpenShift also `use` of its own SCC, by name.
pub fn node_agent_rules_on(platform: Platform) -> Vec<PolicyRule> {
    let mut rules = node_agent_rules();
    if platform == Platform::OpenShift {
        rules.push(scc_use_rule());
    }
    rules
}

/// The node agent's rules (every platform).
pub fn node_agent_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[""], &["nodes"], READ),
        // NetworkPolicy enforcement (docs/networkpolicy.md): every pod, namespace and policy,
        // and Events on policies it cannot fully program.
        rule(&[""], &["pods", "namespaces"], READ),
        rule(&["networking.k8s.io"], &["networkpolicies"], READ),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        rule(
            &[NETWORKING],
            &["networks", "subnets", "ipinstances", "nodeinfoes"],
            READ,
        ),
        // Other clusters' subnets and nodes, programmed into the data plane (docs/multicluster.md).
        rule(&[MULTICLUSTER], &["remotesubnets", "remotevteps"], READ),
        rule(&[NETWORKING], &["ipinstances/status"], &["patch"]),
        rule(&[NETWORKING], &["nodeinfoes"], &["create", "patch"]),
        // `publish_node_info` (node/src/agent/mod.rs) applies `status.updateTimestamp` too.
        rule(&[NETWORKING], &["nodeinfoes/status"], &["patch"]),
        // Which node's objects: the webhook `node-agent.validating.hybridnet` (webhook::nodescope).
    ]
}

/// Whether `rules` grant `verb` on every object of `group/resource` (a rule with `resourceNames`
/// does not; exact matching: our rules have no wildcards).
pub fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.resource_names.as_ref().is_none_or(Vec::is_empty) && grants(r, group, resource, verb)
    })
}

/// Whether `rules` grant `verb` on the object `name` of `group/resource`, as the RBAC authorizer
/// decides it: a rule without `resourceNames` covers every name, one with names only those.
pub fn allows_name(
    rules: &[PolicyRule],
    group: &str,
    resource: &str,
    verb: &str,
    name: &str,
) -> bool {
    rules.iter().any(|r| {
        grants(r, group, resource, verb)
            && r.resource_names
                .as_ref()
                .is_none_or(|ns| ns.is_empty() || ns.iter().any(|n| n == name))
    })
}

fn grants(r: &PolicyRule, group: &str, resource: &str, verb: &str) -> bool {
    r.api_groups.iter().flatten().any(|g| g == group)
        && r.resources.iter().flatten().any(|x| x == resource)
        && r.verbs.iter().any(|v| v == verb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(rules: &[PolicyRule], by: &[PolicyRule]) -> Vec<String> {
        let mut missing = Vec::new();
        for r in rules {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        if !allows(by, g, res, v) {
                            missing.push(format!("{v} {g}/{res}"));
                        }
                    }
                }
            }
        }
        missing
    }

    #[test]
    fn operator_holds_every_permission_it_grants_the_node_agent() {
        // So creating the agent's ClusterRole and binding passes the API server's escalation check
        // without `escalate` or `bind`.
        let missing = covered(&node_agent_rules(), &operator_cluster_rules());
        assert!(missing.is_empty(), "operator lacks {missing:?}");
        // On OpenShift too: the named `use` rule is covered name by name.
        let op = operator_cluster_rules();
        for r in node_agent_rules_on(Platform::OpenShift) {
            let names = r.resource_names.clone().unwrap_or_default();
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        if names.is_empty() {
                            assert!(allows(&op, g, res, v), "operator lacks {v} {g}/{res}");
                        }
                        for n in &names {
                            assert!(
                                allows_name(&op, g, res, v, n),
                                "operator lacks {v} {g}/{res} {n}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_agent_may_only_read_remote_subnets_and_vteps() {
        // The data plane of other clusters' pods (docs/multicluster.md): get/list/watch, nothing
        // else, and nothing of RemoteClusters (their credentials) or RemoteEndpointSlices.
        let rules = node_agent_rules_on(Platform::OpenShift);
        for res in ["remotesubnets", "remotevteps"] {
            for v in READ {
                assert!(allows(&rules, MULTICLUSTER, res, v), "{v} {res}");
            }
            for v in ["create", "update", "patch", "delete", "deletecollection"] {
                assert!(!allows(&rules, MULTICLUSTER, res, v), "{v} {res}");
            }
            assert!(!allows(
                &rules,
                MULTICLUSTER,
                &format!("{res}/status"),
                "patch"
            ));
        }
        for res in ["remoteclusters", "remoteendpointslice"] {
            for v in READ {
                assert!(!allows(&rules, MULTICLUSTER, res, v), "{v} {res}");
            }
        }
    }

    #[test]
    fn the_agent_may_only_create_and_patch_events() {
        // Events on pods whose CNI ADD failed and on policies it cannot program
        // (docs/operations.md, "Events on pods"): create, and patch for the recorder's series.
        let rules = node_agent_rules_on(Platform::OpenShift);
        for v in [
            "get",
            "list",
            "watch",
            "update",
            "delete",
            "deletecollection",
        ] {
            assert!(!allows(&rules, "events.k8s.io", "events", v), "{v}");
        }
        for v in ["create", "patch"] {
            assert!(allows(&rules, "events.k8s.io", "events", v), "{v}");
        }
        for v in ["create", "patch", "update", "get", "delete"] {
            assert!(!allows(&rules, "", "events", v), "core events {v}");
        }
    }

    #[test]
    fn the_agent_may_use_its_own_scc_only_and_only_on_openshift() {
        let plain = node_agent_rules_on(Platform::Kubernetes);
        assert_eq!(plain, node_agent_rules());
        assert!(
            !plain
                .iter()
                .any(|r| r.api_groups.iter().flatten().any(|g| g == SECURITY_GROUP)),
            "{plain:?}"
        );
        let os = node_agent_rules_on(Platform::OpenShift);
        assert!(allows_name(
            &os,
            SECURITY_GROUP,
            SCC_RESOURCE,
            "use",
            names::NODE_AGENT
        ));
        for other in [
            "privileged",
            "anyuid",
            "hostnetwork-v2",
            "restricted-v2",
            "",
        ] {
            assert!(!allows_name(
                &os,
                SECURITY_GROUP,
                SCC_RESOURCE,
                "use",
                other
            ));
        }
        // Nothing but `use`: the agent cannot change or create an SCC.
        for v in MANAGE {
            assert!(
                !allows_name(&os, SECURITY_GROUP, SCC_RESOURCE, v, names::NODE_AGENT),
                "{v}"
            );
        }
    }

    #[test]
    fn the_operator_can_use_no_other_scc() {
        let op = operator_cluster_rules();
        assert!(allows_name(
            &op,
            SECURITY_GROUP,
            SCC_RESOURCE,
            "use",
            names::NODE_AGENT
        ));
        for other in [
            "privileged",
            "anyuid",
            "hostnetwork-v2",
            "restricted-v2",
            "",
        ] {
            for v in ["use", "get", "update", "patch", "delete"] {
                assert!(
                    !allows_name(&op, SECURITY_GROUP, SCC_RESOURCE, v, other),
                    "{v} {other}"
                );
            }
        }
    }

    #[test]
    fn operator_has_no_escalate_bind_or_impersonate() {
        let mut all = operator_cluster_rules();
        all.extend(operator_namespace_rules());
        for r in &all {
            for v in &r.verbs {
                assert!(
                    !["escalate", "bind", "impersonate", "*"].contains(&v.as_str()),
                    "{r:?}"
                );
            }
        }
    }

    /// Kinds the operator acts on for every object (it is their controller), with the verbs it
    /// may use and why. Everything else it may touch is in [`named_objects`].
    const CONTROLLER_KINDS: &[(&str, &str, &[&str], &str)] = &[
        (
            "",
            "pods",
            &["get", "list", "watch", "update", "patch"],
            "IPAM of every pod",
        ),
        (
            "",
            "pods/status",
            &["get", "update", "patch"],
            "IPAM of every pod",
        ),
        (
            "",
            "nodes",
            &["get", "list", "watch", "update", "patch"],
            "attachment labels, taint",
        ),
        ("", "namespaces", READ, "namespace network defaults"),
        (
            "networking.k8s.io",
            "networkpolicies",
            READ,
            "granted to the node agent, which enforces NetworkPolicy",
        ),
        (
            "",
            "events",
            &["create", "patch", "update"],
            "events on pods and the cluster",
        ),
        (
            "events.k8s.io",
            "events",
            &["create", "patch", "update"],
            "same, events.k8s.io",
        ),
        ("apps", "statefulsets", READ, "stateful pods keep their IPs"),
        (
            "kubevirt.io",
            "virtualmachines",
            &["get"],
            "VMIPRetain: a VM's pods keep their IPs",
        ),
        (
            "kubevirt.io",
            "virtualmachineinstances",
            &["get"],
            "VMIPRetain: which VM a pod belongs to",
        ),
        (
            NETWORKING,
            "networks",
            MANAGE,
            "the control plane's own kinds",
        ),
        (
            NETWORKING,
            "subnets",
            MANAGE,
            "the control plane's own kinds",
        ),
        (
            NETWORKING,
            "ipinstances",
            MANAGE,
            "the control plane's own kinds",
        ),
        (
            NETWORKING,
            "nodeinfoes",
            MANAGE,
            "the control plane's own kinds",
        ),
        (
            NETWORKING,
            "networks/status",
            &["get", "update", "patch"],
            "own kinds",
        ),
        (
            NETWORKING,
            "subnets/status",
            &["get", "update", "patch"],
            "own kinds",
        ),
        (
            NETWORKING,
            "ipinstances/status",
            &["get", "update", "patch"],
            "own kinds",
        ),
        (
            NETWORKING,
            "nodeinfoes/status",
            &["get", "update", "patch"],
            "own kinds",
        ),
        (
            MULTICLUSTER,
            "remoteclusters",
            &["get", "list", "watch", "update", "patch"],
            "the webhook compares RemoteClusters; upstream's finalizer on the ones it runs",
        ),
        (
            MULTICLUSTER,
            "remotesubnets",
            MANAGE,
            "mirrors of remote subnets",
        ),
        (
            MULTICLUSTER,
            "remotevteps",
            MANAGE,
            "mirrors of remote nodes",
        ),
        (
            MULTICLUSTER,
            "remoteendpointslice",
            MANAGE,
            "mirrors of remote global services' endpoints",
        ),
        (
            MULTICLUSTER,
            "remoteendpointslice/status",
            &["get", "update", "patch"],
            "mirrors' lastModifyTime",
        ),
        (
            MULTICLUSTER,
            "remoteclusters/status",
            &["get", "update", "patch"],
            "the RemoteCluster status checks",
        ),
        (
            MULTICLUSTER,
            "remotesubnets/status",
            &["get", "update", "patch"],
            "mirrors' lastModifyTime",
        ),
        (
            MULTICLUSTER,
            "remotevteps/status",
            &["get", "update", "patch"],
            "mirrors' lastModifyTime",
        ),
        (
            OPERATOR_GROUP,
            "hybridnetclusters",
            &["get", "list", "watch", "update", "patch"],
            "lifecycle",
        ),
        (
            OPERATOR_GROUP,
            "hybridnetclusters/status",
            &["get", "update", "patch"],
            "lifecycle",
        ),
        (
            OPERATOR_GROUP,
            "hybridnetclusters/finalizers",
            &["get", "update", "patch"],
            "lifecycle",
        ),
        (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            READ,
            "checks its CRDs exist",
        ),
    ];

    /// Rule by rule and verb by verb: every grant is either on a kind the operator controls as a
    /// whole (listed with its reason above) or, for the kinds it manages by name, limited to
    /// exactly those names; the only unnamed verb on a named kind is `create`, which Kubernetes
    /// cannot restrict by name and which cannot reach an existing object.
    fn check_rules(rules: &[PolicyRule], named: &[NamedKind], scope: &str) -> Vec<String> {
        let mut bad = Vec::new();
        for r in rules {
            let rnames = r.resource_names.clone().unwrap_or_default();
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for v in &r.verbs {
                        let what = format!("{scope}: {v} {g}/{res} names {rnames:?}");
                        if let Some((_, _, own)) =
                            named.iter().find(|(ng, nr, _)| ng == g && nr == res)
                        {
                            if v == "create" {
                                if !rnames.is_empty() {
                                    bad.push(format!("{what}: create cannot be limited by name"));
                                }
                            } else if rnames.is_empty()
                                || rnames.iter().any(|n| !own.contains(&n.as_str()))
                            {
                                bad.push(format!("{what}: reaches objects not named {own:?}"));
                            }
                        } else if let Some((_, _, verbs, _)) = CONTROLLER_KINDS
                            .iter()
                            .find(|(cg, cr, _, _)| cg == g && cr == res)
                        {
                            if !verbs.contains(&v.as_str()) {
                                bad.push(format!("{what}: verb beyond {verbs:?}"));
                            }
                        } else {
                            bad.push(format!("{what}: a kind the operator does not own"));
                        }
                    }
                }
            }
        }
        bad
    }

    #[test]
    fn no_verb_reaches_an_object_the_operator_does_not_own() {
        // The upstream guard Lease is checked on its own below.
        let cluster: Vec<PolicyRule> = operator_cluster_rules()
            .into_iter()
            .filter(|r| !upstream_guard_rules().contains(r))
            .collect();
        let bad = check_rules(&cluster, &named_cluster_objects(), "ClusterRole");
        assert!(bad.is_empty(), "{bad:#?}");
        // Namespaced kinds (Secrets first of all) only through the Role in its own namespace:
        // the ClusterRole grants none of them, under any name.
        // The operator's own SCC is checked on its own below.
        let role: Vec<PolicyRule> = operator_namespace_rules()
            .into_iter()
            .filter(|r| !operator_scc_rules().contains(r))
            .collect();
        let bad = check_rules(&role, &named_namespace_objects(), "Role");
        assert!(bad.is_empty(), "{bad:#?}");
        // The Role's one SCC grant: `use` of hostnetwork-v2, nothing else on SCCs.
        let all_role = operator_namespace_rules();
        for v in MANAGE.iter().chain(&["use"]) {
            assert_eq!(
                allows_name(&all_role, SECURITY_GROUP, SCC_RESOURCE, v, OPERATOR_SCC),
                *v == "use",
                "{v} {OPERATOR_SCC}"
            );
            for other in ["privileged", "anyuid", "hostaccess", names::NODE_AGENT] {
                assert!(
                    !allows_name(&all_role, SECURITY_GROUP, SCC_RESOURCE, v, other),
                    "Role: {v} {other}"
                );
            }
        }
        for (g, res, _) in named_namespace_objects() {
            for v in MANAGE {
                assert!(
                    !cluster.iter().any(|r| grants(r, g, res, v)),
                    "ClusterRole grants {v} {g}/{res}"
                );
            }
        }
        // The one namespaced grant of the ClusterRole: upstream's manager Lease, by its name,
        // read and renewed only.
        let all = operator_cluster_rules();
        let lease = hybridnet_api::migration::UPSTREAM_LEADER_LEASE;
        for v in MANAGE {
            let want = UPSTREAM_GUARD_VERBS.contains(v);
            assert_eq!(
                allows_name(&all, "coordination.k8s.io", "leases", v, lease),
                want,
                "{v} lease {lease}"
            );
            assert!(
                !allows_name(
                    &all,
                    "coordination.k8s.io",
                    "leases",
                    v,
                    "kube-controller-manager"
                ),
                "{v} a foreign Lease"
            );
        }
    }

    #[test]
    fn global_services_are_opt_in_and_reach_only_services_and_slices() {
        // The operator's own ClusterRole grants none of it: without deploy/global-services/
        // it reads no Service but its webhook's and writes no EndpointSlice.
        let own = operator_cluster_rules();
        for v in MANAGE {
            assert!(
                !allows(&own, "discovery.k8s.io", "endpointslices", v),
                "{v}"
            );
        }
        assert!(!allows(&own, "", "services", "list"));
        // The opt-in role: Services read only, EndpointSlices managed, nothing else.
        let gs = global_services_rules();
        for v in MANAGE {
            assert_eq!(
                allows(&gs, "", "services", v),
                READ.contains(v),
                "{v} services"
            );
            assert!(allows(&gs, "discovery.k8s.io", "endpointslices", v), "{v}");
        }
        for (g, res) in [
            ("", "secrets"),
            ("", "pods"),
            ("", "endpoints"),
            (RBAC_GROUP, "clusterroles"),
            (NETWORKING, "ipinstances"),
            (MULTICLUSTER, "remoteclusters"),
        ] {
            for v in MANAGE {
                assert!(!allows(&gs, g, res, v), "{v} {g}/{res}");
            }
        }
        for r in &gs {
            assert!(r.resource_names.is_none());
            for v in &r.verbs {
                assert!(
                    !["escalate", "bind", "impersonate", "*"].contains(&v.as_str()),
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn the_checker_refuses_broader_rules() {
        // The proof above can fail: unnamed patch on ClusterRoles, a foreign name, Secrets in
        // the ClusterRole, a named create, an extra verb and an unknown kind are all reported.
        let named = named_cluster_objects();
        for (r, want) in [
            (
                rule(&[RBAC_GROUP], &["clusterroles"], &["patch"]),
                "not named",
            ),
            (
                named_rule(RBAC_GROUP, "clusterroles", &["cluster-admin"], &["delete"]),
                "not named",
            ),
            (
                named_rule(
                    RBAC_GROUP,
                    "clusterroles",
                    &[names::NODE_AGENT],
                    &["create"],
                ),
                "create cannot",
            ),
            (rule(&[""], &["secrets"], &["get"]), "does not own"),
            (rule(&[""], &["namespaces"], &["delete"]), "verb beyond"),
            (rule(&["apps"], &["deployments"], &["get"]), "does not own"),
        ] {
            let bad = check_rules(std::slice::from_ref(&r), &named, "t");
            assert!(bad.iter().any(|b| b.contains(want)), "{r:?}: {bad:?}");
        }
    }

    #[test]
    fn foreign_objects_of_named_kinds_are_out_of_reach() {
        let mut all = operator_cluster_rules();
        all.extend(operator_namespace_rules());
        for (g, res, own) in named_objects() {
            for name in own {
                for v in MANAGE {
                    assert!(allows_name(&all, g, res, v, name), "{v} {g}/{res} {name}");
                }
            }
            for foreign in ["cluster-admin", "system:node", "admin", "other-webhook", ""] {
                for v in MANAGE_NAMED {
                    assert!(
                        !allows_name(&all, g, res, v, foreign),
                        "{v} {g}/{res} {foreign:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_lease_name_is_the_control_planes_default() {
        assert_eq!(
            crate::controlplane::runtime::config::ControlPlaneConfig::default().leader_election_id,
            names::LEADER_LEASE
        );
    }

    #[test]
    fn operator_can_do_what_the_lifecycle_needs() {
        let c = operator_cluster_rules();
        let n = operator_namespace_rules();
        assert!(allows(
            &c,
            "operator.hybridnet.io",
            "hybridnetclusters/status",
            "patch"
        ));
        assert!(allows(&c, "events.k8s.io", "events", "create"));
        assert!(allows(
            &c,
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "get"
        ));
        assert!(!allows(
            &c,
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "create"
        ));
        assert!(allows(
            &c,
            "networking.alibaba.com",
            "ipinstances/status",
            "patch"
        ));
        assert!(allows(&c, "", "pods/status", "patch"));
        assert!(allows(&n, "", "events", "create"));
    }
}

//! RBAC rules with exact resources and verbs (never `*`).
//!
//! The operator holds every permission it grants the node agent, so it can create the agent's
//! ClusterRole and binding without `escalate` or `bind` (the API server's escalation check passes
//! when the creator already holds the rules). A unit test proves the coverage.

use k8s_openapi::api::rbac::v1::PolicyRule;

const READ: &[&str] = &["get", "list", "watch"];
const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const NETWORKING: &str = "networking.alibaba.com";
const OPERATOR_GROUP: &str = "operator.hybridnet.io";

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
        rule(&[""], &["events"], &["create", "patch", "update"]),
        rule(
            &["events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(&["apps"], &["statefulsets"], READ),
        rule(
            &[NETWORKING],
            &["networks", "subnets", "ipinstances", "nodeinfos"],
            MANAGE,
        ),
        rule(
            &[NETWORKING],
            &[
                "networks/status",
                "subnets/status",
                "ipinstances/status",
                "nodeinfos/status",
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
        // The node agent's ClusterRole and binding, applied by server-side apply.
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterroles", "clusterrolebindings"],
            MANAGE,
        ),
        rule(
            &["admissionregistration.k8s.io"],
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            MANAGE,
        ),
        // Only read: the operator checks its CRDs are installed, it never changes them.
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
    ]
}

/// Rules of the operator in its own namespace (OLM `permissions`).
pub fn operator_namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["apps"], &["daemonsets"], MANAGE),
        rule(&[""], &["services", "secrets", "serviceaccounts"], MANAGE),
        rule(&["coordination.k8s.io"], &["leases"], MANAGE),
        rule(&[""], &["events"], &["create", "patch", "update"]),
    ]
}

/// The node agent's rules.
pub fn node_agent_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[""], &["nodes"], READ),
        rule(&[""], &["pods"], &["get"]),
        rule(
            &[NETWORKING],
            &["networks", "subnets", "ipinstances", "nodeinfos"],
            READ,
        ),
        rule(&[NETWORKING], &["ipinstances/status"], &["patch"]),
        rule(&[NETWORKING], &["nodeinfos"], &["create", "patch"]),
    ]
}

/// Whether `rules` grant `verb` on `group/resource` (exact matching: our rules have no wildcards
/// and no resourceNames).
pub fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
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

    #[test]
    fn operator_can_do_what_the_lifecycle_needs() {
        let c = operator_cluster_rules();
        let n = operator_namespace_rules();
        for (g, res) in [
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            (
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
            ),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            ),
        ] {
            for v in ["get", "list", "watch", "create", "patch", "delete"] {
                assert!(allows(&c, g, res, v), "{v} {g}/{res}");
            }
        }
        for (g, res) in [
            ("apps", "daemonsets"),
            ("", "services"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("coordination.k8s.io", "leases"),
        ] {
            for v in ["get", "list", "watch", "create", "patch", "delete"] {
                assert!(allows(&n, g, res, v), "{v} {g}/{res}");
            }
            // Namespaced only: never cluster-wide secrets.
            assert!(!allows(&c, g, res, "get"), "{g}/{res} cluster-wide");
        }
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
    }
}

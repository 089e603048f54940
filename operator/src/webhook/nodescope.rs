//! Node agents write only their own node's objects (docs/operations.md, "Node agents write only
//! their own node").
//!
//! Every node agent runs as one ServiceAccount, `hybridnet-node`, whose ClusterRole cannot name the
//! node (one role for all nodes). Kubernetes puts the node of the pod a ServiceAccount token was
//! issued for into the request's user info (`extra["authentication.kubernetes.io/node-name"]`), so
//! the validating webhook `node-agent.validating.hybridnet` compares that claim with the node the
//! object belongs to: a NodeInfo's name, an IPInstance's `spec.binding.nodeName`. Requests of
//! every other user pass untouched; a request of the agent without exactly one node claim is
//! refused (fail closed).

use hybridnet_api::{FieldError, FieldErrors};
use k8s_openapi::api::authentication::v1::UserInfo;
use serde_json::Value;

/// The user-info extra key carrying the node of a pod-bound ServiceAccount token.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// The username of the node agent's ServiceAccount in `namespace`.
pub fn agent_username(namespace: &str) -> String {
    format!(
        "system:serviceaccount:{namespace}:{}",
        crate::lifecycle::names::NODE_AGENT
    )
}

/// Which node an object of `kind` belongs to, if the rule covers the kind.
fn node_of(kind: &str, obj: &Value) -> Option<String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    match kind {
        "NodeInfo" => Some(s(&obj["metadata"]["name"]).unwrap_or_default()),
        "IPInstance" => Some(
            s(&obj["spec"]["binding"]["nodeName"])
                .or_else(|| s(&obj["metadata"]["labels"][hybridnet_api::constants::label::NODE]))
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// Whether `user` may write the object of `kind` whose old and new states are given (either may
/// be absent: CREATE has no old, DELETE no new). `agent` is the agent's username.
pub fn check(
    user: &UserInfo,
    agent: &str,
    kind: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), FieldErrors> {
    if user.username.as_deref() != Some(agent) {
        return Ok(());
    }
    let claims: Vec<&String> = user
        .extra
        .as_ref()
        .and_then(|e| e.get(NODE_NAME_EXTRA))
        .into_iter()
        .flatten()
        .collect();
    let field = match kind {
        "IPInstance" => "spec.binding.nodeName",
        _ => "metadata.name",
    };
    let [node] = claims.as_slice() else {
        return Err(FieldErrors(vec![FieldError::new(
            "userInfo.extra",
            format!(
                "the node agent's credentials carry {} {NODE_NAME_EXTRA:?} claims, not one: \
                 use a pod-bound ServiceAccount token (Kubernetes 1.32 or later)",
                claims.len()
            ),
        )]));
    };
    for obj in [old, new].into_iter().flatten() {
        let Some(owner) = node_of(kind, obj) else {
            continue;
        };
        if owner != **node {
            return Err(FieldErrors(vec![FieldError::new(
                field,
                format!(
                    "the node agent of node {node:?} may write only its own node's objects; \
                     this {kind} belongs to node {owner:?}"
                ),
            )]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    const AGENT: &str = "system:serviceaccount:hybridnet-system:hybridnet-node";

    fn user(name: &str, nodes: &[&str]) -> UserInfo {
        UserInfo {
            username: Some(name.into()),
            extra: Some(BTreeMap::from([(
                NODE_NAME_EXTRA.to_string(),
                nodes.iter().map(|n| n.to_string()).collect(),
            )])),
            ..Default::default()
        }
    }

    fn nodeinfo(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {}})
    }

    fn ipinstance(node: &str) -> Value {
        json!({"metadata": {"name": "ip-1", "namespace": "default"}, "spec": {"binding": {"nodeName": node}}})
    }

    #[test]
    fn an_agent_writes_its_own_node_only() {
        assert_eq!(agent_username("hybridnet-system"), AGENT);
        let n1 = user(AGENT, &["node1"]);
        let own = nodeinfo("node1");
        let other = nodeinfo("node2");
        assert!(check(&n1, AGENT, "NodeInfo", None, Some(&own)).is_ok());
        assert!(check(&n1, AGENT, "NodeInfo", Some(&own), Some(&own)).is_ok());
        let e = check(&n1, AGENT, "NodeInfo", None, Some(&other)).unwrap_err();
        assert_eq!(e.0[0].field, "metadata.name");
        assert!(e.0[0].message.contains("\"node2\""), "{e}");
        assert!(check(&n1, AGENT, "NodeInfo", Some(&other), None).is_err());
        let ip1 = ipinstance("node1");
        let ip2 = ipinstance("node2");
        assert!(check(&n1, AGENT, "IPInstance", Some(&ip1), Some(&ip1)).is_ok());
        let e = check(&n1, AGENT, "IPInstance", Some(&ip2), Some(&ip2)).unwrap_err();
        assert_eq!(e.0[0].field, "spec.binding.nodeName");
        // Moving another node's IPInstance to itself: the old state is checked too.
        assert!(check(&n1, AGENT, "IPInstance", Some(&ip2), Some(&ip1)).is_err());
        // An unbound IPInstance belongs to no node the agent could claim.
        let unbound = json!({"metadata": {"name": "x"}, "spec": {}});
        assert!(check(&n1, AGENT, "IPInstance", Some(&unbound), None).is_err());
        // Kinds outside the rule pass.
        assert!(check(&n1, AGENT, "Network", None, Some(&other)).is_ok());
    }

    #[test]
    fn other_users_pass_and_an_agent_without_one_claim_is_refused() {
        let other = nodeinfo("node2");
        let op = user(
            "system:serviceaccount:hybridnet-system:hybridnet-operator",
            &[],
        );
        assert!(check(&op, AGENT, "NodeInfo", None, Some(&other)).is_ok());
        // Same ServiceAccount name in another namespace: not the agent.
        let foreign = user("system:serviceaccount:default:hybridnet-node", &["node1"]);
        assert!(check(&foreign, AGENT, "NodeInfo", None, Some(&other)).is_ok());
        for claims in [&[][..], &["node1", "node2"][..]] {
            let e = check(&user(AGENT, claims), AGENT, "NodeInfo", None, Some(&other)).unwrap_err();
            assert_eq!(e.0[0].field, "userInfo.extra", "{claims:?}");
        }
        let no_extra = UserInfo {
            username: Some(AGENT.into()),
            ..Default::default()
        };
        assert!(check(&no_extra, AGENT, "NodeInfo", None, Some(&nodeinfo("node1"))).is_err());
        // Hostile names never match by accident.
        for hostile in ["", "node1 ", "NODE1", "node1\n", "../node1"] {
            assert!(
                check(
                    &user(AGENT, &["node1"]),
                    AGENT,
                    "NodeInfo",
                    None,
                    Some(&nodeinfo(hostile))
                )
                .is_err(),
                "{hostile:?}"
            );
        }
    }
}

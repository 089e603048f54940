//! The lab scheduler's decision: which node a pod may run on. Pure; honours `nodeSelector`, required
//! node affinity (what the webhook sets) and taints/tolerations, and spreads pods by count.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

fn labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>) -> bool {
    term.match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(r, labels))
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = t.operator.as_deref() == Some("Exists")
            || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        key_ok && value_ok && effect_ok
    })
}

/// Whether `pod` may run on `node`.
pub fn fits(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let l = labels(node);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| l.get(k) == Some(v))
    {
        return false;
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        && !req.node_selector_terms.iter().any(|t| term_matches(t, &l))
    {
        return false;
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerates(tolerations, t))
}

/// Picks the fitting node with the fewest pods (ties by name), or says why none fits.
pub fn pick<'a>(
    pod: &Pod,
    nodes: &'a [Node],
    pods_per_node: &BTreeMap<String, usize>,
) -> Result<&'a Node, String> {
    nodes
        .iter()
        .filter(|n| fits(pod, n))
        .min_by_key(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            (pods_per_node.get(&name).copied().unwrap_or(0), name)
        })
        .ok_or_else(|| {
            format!(
                "0/{} nodes fit: none matches the pod's nodeSelector, affinity and tolerations",
                nodes.len()
            )
        })
}

/// Bindings sent at once.
const BINDINGS_IN_FLIGHT: usize = 16;

/// Binds every unscheduled pod to a fitting node (through the `binding` subresource, as the real
/// scheduler does), until the watch ends. Pods that fit nowhere are retried when anything changes.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    use futures::{FutureExt, StreamExt};
    use kube::api::{Api, ListParams, PostParams};
    use kube::runtime::watcher;

    let pods: Api<Pod> = Api::all(client.clone());
    let nodes_api: Api<Node> = Api::all(client.clone());
    let wc = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(pods.clone(), wc).boxed();
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                None => return Ok(()),
                Some(Err(e)) => { tracing::warn!(error = %e, "scheduler watch error"); continue; }
                Some(Ok(_)) => {}
            },
            _ = ticker.tick() => {}
        }
        // One pass serves every event already queued: a burst of pod creations costs a few
        // passes, not one pass (three lists) per pod.
        while let Some(Some(ev)) = stream.next().now_or_never() {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "scheduler watch error");
            }
        }
        let pending = pods
            .list(&ListParams::default().fields("spec.nodeName="))
            .await?;
        if pending.items.is_empty() {
            continue;
        }
        let nodes = nodes_api.list(&ListParams::default()).await?.items;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for p in pods.list(&ListParams::default()).await?.items {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *counts.entry(n).or_default() += 1;
            }
        }
        // Decide every pod first (each pick counts the pods picked before it), then bind them
        // several at a time, as the real scheduler's binding cycles run in parallel.
        let mut bindings = Vec::new();
        for pod in pending
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let (Some(name), Some(ns)) =
                (pod.metadata.name.clone(), pod.metadata.namespace.clone())
            else {
                continue;
            };
            match pick(pod, &nodes, &counts) {
                Ok(node) => {
                    let node_name = node.metadata.name.clone().unwrap_or_default();
                    *counts.entry(node_name.clone()).or_default() += 1;
                    bindings.push((name, ns, node_name));
                }
                Err(why) => tracing::debug!(pod = name, why, "scheduler: pod does not fit yet"),
            }
        }
        futures::stream::iter(bindings)
            .for_each_concurrent(BINDINGS_IN_FLIGHT, |(name, ns, node_name)| {
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                async move {
                    let binding = serde_json::json!({
                        "apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": name, "namespace": ns},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
                    });
                    // A failed binding leaves the pod pending: the next pass picks again.
                    if let Err(e) = api
                        .create_subresource::<serde_json::Value, serde_json::Value>(
                            "binding",
                            &name,
                            &PostParams::default(),
                            &binding,
                        )
                        .await
                    {
                        tracing::warn!(pod = name, error = %e, "scheduler: binding failed")
                    }
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }
    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn selector_affinity_and_taints() {
        let n1 = node("n1", json!({"network": "vlan"}), json!([]));
        let n2 = node(
            "n2",
            json!({}),
            json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
        );
        let n3 = node(
            "n3",
            json!({"networking.alibaba.com/overlay-network-attachment": "true"}),
            json!([]),
        );
        let nodes = vec![n1, n2, n3];
        let none = BTreeMap::new();

        let p = pod(json!({"containers": [], "nodeSelector": {"network": "vlan"}}));
        assert_eq!(
            pick(&p, &nodes, &none).unwrap().metadata.name.as_deref(),
            Some("n1")
        );

        let p = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "networking.alibaba.com/overlay-network-attachment", "operator": "In", "values": ["true"]}]}]}}}}),
        );
        assert_eq!(
            pick(&p, &nodes, &none).unwrap().metadata.name.as_deref(),
            Some("n3")
        );

        // The tainted node only takes pods that tolerate the taint.
        let p = pod(json!({"containers": [], "nodeSelector": {}}));
        let counts: BTreeMap<String, usize> = [("n1".to_string(), 5), ("n3".to_string(), 5)].into();
        assert_eq!(
            pick(&p, &nodes, &counts).unwrap().metadata.name.as_deref(),
            Some("n1")
        );
        let p = pod(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert_eq!(
            pick(&p, &nodes, &counts).unwrap().metadata.name.as_deref(),
            Some("n2")
        );

        let p = pod(json!({"containers": [], "nodeSelector": {"network": "bgp"}}));
        assert!(
            pick(&p, &nodes, &none)
                .unwrap_err()
                .contains("0/3 nodes fit")
        );
    }
}

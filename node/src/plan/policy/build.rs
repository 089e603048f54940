//! [`PolicyInput`] -> [`PolicyModel`], and the conversions from API objects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::compile::{CompiledPolicy, compile_policy, is_port_name};
use super::{
    ContainerPort, ModelPod, NamespaceMatch, ObjectKey, Peer, PolicyInput, PolicyModel,
    PolicyNamespace, PolicyPod, Protocol, SetKey,
};

/// The label the API server puts on every namespace (its name), which policies select on.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A pod as the policy model sees it; `None` for pods that hold no address any more
/// (Succeeded/Failed) so a reused address is never attributed to them.
pub fn pod_from_object(pod: &Pod) -> Option<PolicyPod> {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|s| s.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let spec = pod.spec.as_ref();
    let mut ports = Vec::new();
    for c in spec.into_iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            let (Some(name), Ok(port)) = (p.name.as_deref(), u16::try_from(p.container_port))
            else {
                continue;
            };
            let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"));
            if let Some(protocol) = protocol.filter(|_| is_port_name(name) && port > 0) {
                ports.push(ContainerPort {
                    name: name.to_string(),
                    protocol,
                    port,
                });
            }
        }
    }
    Some(PolicyPod {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ips,
        ports,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    })
}

/// A namespace with its labels (the name label added as the API server does).
pub fn namespace_from_object(ns: &Namespace) -> PolicyNamespace {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| name.clone());
    PolicyNamespace { name, labels }
}

/// The address sets a policy's rules name.
pub(super) fn set_keys_of(policy: &CompiledPolicy) -> BTreeSet<SetKey> {
    policy
        .ingress
        .rules
        .iter()
        .chain(&policy.egress.rules)
        .flat_map(|r| r.peers.iter().flatten())
        .filter_map(|p| match p {
            Peer::Pods(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

/// Whether a pod of namespace `ns` (labelled `ns_labels`) with `labels` is in set `sk`.
pub(super) fn set_matches(
    sk: &SetKey,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    (match &sk.namespaces {
        NamespaceMatch::Same(n) => n == ns,
        NamespaceMatch::Selector(s) => s.matches(ns_labels),
    }) && sk.pods.matches(labels)
}

/// Builds the cluster's policy model from all objects at once (the reference that
/// [`super::PolicyState`] keeps up to date incrementally).
pub fn build_policy_model(input: &PolicyInput) -> PolicyModel {
    let mut model = PolicyModel {
        nodes: input.nodes.clone(),
        ..Default::default()
    };
    let mut ns_labels: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for ns in &input.namespaces {
        let mut l = ns.labels.clone();
        l.entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| ns.name.clone());
        ns_labels.insert(&ns.name, l);
    }
    let pods: BTreeMap<ObjectKey, &PolicyPod> = input
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .map(|p| (p.key(), p))
        .collect();
    // a namespace not (yet) seen has only its name label
    let labels_of_ns = |ns: &str| -> BTreeMap<String, String> {
        ns_labels
            .get(ns)
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())]))
    };

    for (key, pod) in &pods {
        model.pods.insert(
            key.clone(),
            ModelPod {
                node: pod.node.clone(),
                ips: pod.ips.clone(),
                ingress: vec![],
                egress: vec![],
            },
        );
        for ip in &pod.ips {
            model.by_ip.entry(*ip).or_insert_with(|| key.clone());
        }
        for cp in &pod.ports {
            let e = model
                .named_ports
                .entry((cp.protocol, cp.name.clone()))
                .or_default();
            for ip in &pod.ips {
                e.insert((*ip, cp.port));
            }
        }
    }

    let mut compiled: Vec<_> = input.policies.iter().map(compile_policy).collect();
    compiled.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    for (policy, problems) in compiled {
        if !problems.is_empty() {
            model.problems.insert(policy.key.clone(), problems);
        }
        for (key, pod) in &pods {
            if pod.namespace != policy.key.namespace {
                continue;
            }
            let selected = match &policy.selector {
                Some(s) => s.matches(&pod.labels),
                None => true,
            };
            if !selected {
                continue;
            }
            let Some(mp) = model.pods.get_mut(key) else {
                continue;
            };
            if policy.ingress.isolates {
                mp.ingress.push(policy.key.clone());
            }
            if policy.egress.isolates {
                mp.egress.push(policy.key.clone());
            }
        }
        let set_keys = set_keys_of(&policy);
        for sk in set_keys {
            if model.sets.contains_key(&sk) {
                continue;
            }
            let members: BTreeSet<IpAddr> = pods
                .values()
                .filter(|p| set_matches(&sk, &p.namespace, &labels_of_ns(&p.namespace), &p.labels))
                .flat_map(|p| p.ips.iter().copied())
                .collect();
            model.sets.insert(sk, members);
        }
        model.policies.insert(policy.key.clone(), policy);
    }
    model
}

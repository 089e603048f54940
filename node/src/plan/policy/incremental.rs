//! The policy model kept up to date one object at a time: [`PolicyState`] holds the pods,
//! namespaces and compiled policies with indexes (pods and policies by namespace, address sets
//! with their members counted per address, named ports, address owners), so a changed pod touches
//! only the sets it was or is in and the policies of its namespace, a changed namespace only its
//! pods, and a changed policy only the pods of its namespace and its new sets. After any sequence
//! of changes [`PolicyState::model`] equals [`build_policy_model`](super::build_policy_model) of
//! the same objects (property-tested), which stays the reference and the full-rebuild path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::build::{NAMESPACE_NAME_LABEL, set_keys_of, set_matches};
use super::compile::{CompiledPolicy, compile_policy};
use super::{ModelPod, ObjectKey, PolicyModel, PolicyNamespace, PolicyPod, Protocol, SetKey};

type Labels = BTreeMap<String, String>;
/// How many pods declare a named port, and (address, port) -> how many pods give it.
type NamedCount = (usize, BTreeMap<(IpAddr, u16), usize>);

/// Objects, indexes and the model derived from them.
#[derive(Clone, Debug, Default)]
pub struct PolicyState {
    /// Every pod given (host-network ones too; they stay out of the model).
    pods: BTreeMap<ObjectKey, PolicyPod>,
    /// Namespace -> labels (with the name label) of the namespaces given.
    ns_labels: BTreeMap<String, Labels>,
    /// Model pods (not host-network) by namespace.
    pods_by_ns: BTreeMap<String, BTreeSet<ObjectKey>>,
    policies_by_ns: BTreeMap<String, BTreeSet<ObjectKey>>,
    /// Address set -> how many policies use it.
    set_refs: BTreeMap<SetKey, usize>,
    /// Address set -> address -> how many member pods hold it.
    set_members: BTreeMap<SetKey, BTreeMap<IpAddr, usize>>,
    /// (protocol, name) -> how many pods declare it, and (address, port) -> how many pods give it.
    named: BTreeMap<(Protocol, String), NamedCount>,
    /// Address -> the model pods holding it (`by_ip` names the first).
    ip_owners: BTreeMap<IpAddr, BTreeSet<ObjectKey>>,
    model: PolicyModel,
}

fn default_ns_labels(ns: &str) -> Labels {
    BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())])
}

fn unique_ips(p: &PolicyPod) -> BTreeSet<IpAddr> {
    p.ips.iter().copied().collect()
}

fn named_of(p: &PolicyPod) -> BTreeMap<(Protocol, String), BTreeSet<(IpAddr, u16)>> {
    let mut out: BTreeMap<(Protocol, String), BTreeSet<(IpAddr, u16)>> = BTreeMap::new();
    for cp in &p.ports {
        let e = out.entry((cp.protocol, cp.name.clone())).or_default();
        for ip in &p.ips {
            e.insert((*ip, cp.port));
        }
    }
    out
}

fn selects(policy: &CompiledPolicy, pod: &PolicyPod) -> bool {
    pod.namespace == policy.key.namespace
        && policy
            .selector
            .as_ref()
            .is_none_or(|s| s.matches(&pod.labels))
}

/// Inserts `key` into a sorted list (the model lists policies in key order).
fn insert_sorted(list: &mut Vec<ObjectKey>, key: &ObjectKey) {
    if let Err(i) = list.binary_search(key) {
        list.insert(i, key.clone());
    }
}

impl PolicyState {
    /// An empty state; `nodes` as [`super::PolicyInput::nodes`].
    pub fn new(nodes: BTreeMap<String, Vec<IpAddr>>) -> Self {
        Self {
            model: PolicyModel {
                nodes,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The model of the objects given so far.
    pub fn model(&self) -> &PolicyModel {
        &self.model
    }

    pub fn pod(&self, key: &ObjectKey) -> Option<&PolicyPod> {
        self.pods.get(key)
    }

    pub fn pod_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.pods.keys()
    }

    pub fn namespace_names(&self) -> impl Iterator<Item = &String> {
        self.ns_labels.keys()
    }

    pub fn policy_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.model.policies.keys()
    }

    fn labels_of_ns(&self, ns: &str) -> Labels {
        self.ns_labels
            .get(ns)
            .cloned()
            .unwrap_or_else(|| default_ns_labels(ns))
    }

    /// Adds (`add`) or removes the pod's addresses to or from every set it matches now.
    fn set_contrib(&mut self, pod: &PolicyPod, add: bool) {
        let ns_labels = self.labels_of_ns(&pod.namespace);
        let ips = unique_ips(pod);
        if ips.is_empty() {
            return;
        }
        for sk in self.set_refs.keys() {
            if !set_matches(sk, &pod.namespace, &ns_labels, &pod.labels) {
                continue;
            }
            let members = self.set_members.entry(sk.clone()).or_default();
            let model_set = self.model.sets.entry(sk.clone()).or_default();
            for ip in &ips {
                if add {
                    *members.entry(*ip).or_default() += 1;
                    model_set.insert(*ip);
                } else if let Some(n) = members.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        members.remove(ip);
                        model_set.remove(ip);
                    }
                }
            }
        }
    }

    fn add_pod_contrib(&mut self, pod: &PolicyPod) {
        let key = pod.key();
        let mut mp = ModelPod {
            node: pod.node.clone(),
            ips: pod.ips.clone(),
            ingress: vec![],
            egress: vec![],
        };
        for pk in self
            .policies_by_ns
            .get(&pod.namespace)
            .into_iter()
            .flatten()
        {
            let Some(policy) = self.model.policies.get(pk) else {
                continue;
            };
            if selects(policy, pod) {
                if policy.ingress.isolates {
                    mp.ingress.push(pk.clone());
                }
                if policy.egress.isolates {
                    mp.egress.push(pk.clone());
                }
            }
        }
        self.model.pods.insert(key.clone(), mp);
        self.pods_by_ns
            .entry(pod.namespace.clone())
            .or_default()
            .insert(key.clone());
        for ip in unique_ips(pod) {
            let owners = self.ip_owners.entry(ip).or_default();
            owners.insert(key.clone());
            if let Some(first) = owners.first() {
                self.model.by_ip.insert(ip, first.clone());
            }
        }
        for (nk, elems) in named_of(pod) {
            let (decl, counts) = self.named.entry(nk.clone()).or_default();
            *decl += 1;
            let model_elems = self.model.named_ports.entry(nk).or_default();
            for e in elems {
                *counts.entry(e).or_default() += 1;
                model_elems.insert(e);
            }
        }
        self.set_contrib(pod, true);
    }

    fn remove_pod_contrib(&mut self, pod: &PolicyPod) {
        let key = pod.key();
        self.set_contrib(pod, false);
        self.model.pods.remove(&key);
        if let Some(keys) = self.pods_by_ns.get_mut(&pod.namespace) {
            keys.remove(&key);
            if keys.is_empty() {
                self.pods_by_ns.remove(&pod.namespace);
            }
        }
        for ip in unique_ips(pod) {
            let Some(owners) = self.ip_owners.get_mut(&ip) else {
                continue;
            };
            owners.remove(&key);
            match owners.first() {
                Some(first) => {
                    self.model.by_ip.insert(ip, first.clone());
                }
                None => {
                    self.ip_owners.remove(&ip);
                    self.model.by_ip.remove(&ip);
                }
            }
        }
        for (nk, elems) in named_of(pod) {
            let Some((decl, counts)) = self.named.get_mut(&nk) else {
                continue;
            };
            for e in elems {
                if let Some(n) = counts.get_mut(&e) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&e);
                        if let Some(m) = self.model.named_ports.get_mut(&nk) {
                            m.remove(&e);
                        }
                    }
                }
            }
            *decl -= 1;
            if *decl == 0 {
                self.named.remove(&nk);
                self.model.named_ports.remove(&nk);
            }
        }
    }

    /// Adds or replaces a pod. Returns whether the model changed.
    pub fn set_pod(&mut self, pod: PolicyPod) -> bool {
        let key = pod.key();
        if self.pods.get(&key) == Some(&pod) {
            return false;
        }
        self.remove_pod(&key);
        if !pod.host_network {
            self.add_pod_contrib(&pod);
        }
        self.pods.insert(key, pod);
        true
    }

    /// Removes a pod. Returns whether it was there.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> bool {
        let Some(old) = self.pods.remove(key) else {
            return false;
        };
        if !old.host_network {
            self.remove_pod_contrib(&old);
        }
        true
    }

    fn relabel_namespace(&mut self, name: &str, labels: Option<Labels>) -> bool {
        let before = self.labels_of_ns(name);
        let after = labels.clone().unwrap_or_else(|| default_ns_labels(name));
        let stored_same = self.ns_labels.get(name) == labels.as_ref();
        if before == after {
            // membership unchanged; keep whether the namespace was given
            if !stored_same {
                match labels {
                    Some(l) => self.ns_labels.insert(name.to_string(), l),
                    None => self.ns_labels.remove(name),
                };
            }
            return false;
        }
        let pods: Vec<PolicyPod> = self
            .pods_by_ns
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k).cloned())
            .collect();
        for p in &pods {
            self.set_contrib(p, false);
        }
        match labels {
            Some(l) => self.ns_labels.insert(name.to_string(), l),
            None => self.ns_labels.remove(name),
        };
        for p in &pods {
            self.set_contrib(p, true);
        }
        true
    }

    /// Adds or replaces a namespace. Returns whether the model changed.
    pub fn set_namespace(&mut self, ns: PolicyNamespace) -> bool {
        let mut labels = ns.labels;
        labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| ns.name.clone());
        self.relabel_namespace(&ns.name, Some(labels))
    }

    /// Removes a namespace (its pods then match by the name label only). Returns whether the
    /// model changed.
    pub fn remove_namespace(&mut self, name: &str) -> bool {
        self.relabel_namespace(name, None)
    }

    /// Adds or replaces a NetworkPolicy. Returns whether the model changed.
    pub fn set_policy(&mut self, np: &NetworkPolicy) -> bool {
        let (policy, problems) = compile_policy(np);
        let key = policy.key.clone();
        if self.model.policies.get(&key) == Some(&policy)
            && self
                .model
                .problems
                .get(&key)
                .map_or(problems.is_empty(), |p| *p == problems)
        {
            return false;
        }
        self.remove_policy(&key);
        if !problems.is_empty() {
            self.model.problems.insert(key.clone(), problems);
        }
        let pods: Vec<ObjectKey> = self
            .pods_by_ns
            .get(&key.namespace)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for pk in pods {
            let Some(pod) = self.pods.get(&pk) else {
                continue;
            };
            if !selects(&policy, pod) {
                continue;
            }
            if let Some(mp) = self.model.pods.get_mut(&pk) {
                if policy.ingress.isolates {
                    insert_sorted(&mut mp.ingress, &key);
                }
                if policy.egress.isolates {
                    insert_sorted(&mut mp.egress, &key);
                }
            }
        }
        for sk in set_keys_of(&policy) {
            let refs = self.set_refs.entry(sk.clone()).or_default();
            *refs += 1;
            if *refs > 1 {
                continue;
            }
            let mut members: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for pk in self.model.pods.keys() {
                let Some(pod) = self.pods.get(pk) else {
                    continue;
                };
                if set_matches(
                    &sk,
                    &pod.namespace,
                    &self.labels_of_ns(&pod.namespace),
                    &pod.labels,
                ) {
                    for ip in unique_ips(pod) {
                        *members.entry(ip).or_default() += 1;
                    }
                }
            }
            self.model
                .sets
                .insert(sk.clone(), members.keys().copied().collect());
            self.set_members.insert(sk, members);
        }
        self.policies_by_ns
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.clone());
        self.model.policies.insert(key, policy);
        true
    }

    /// Removes a NetworkPolicy. Returns whether it was there.
    pub fn remove_policy(&mut self, key: &ObjectKey) -> bool {
        let Some(policy) = self.model.policies.remove(key) else {
            return false;
        };
        self.model.problems.remove(key);
        if let Some(keys) = self.policies_by_ns.get_mut(&key.namespace) {
            keys.remove(key);
            if keys.is_empty() {
                self.policies_by_ns.remove(&key.namespace);
            }
        }
        for pk in self.pods_by_ns.get(&key.namespace).into_iter().flatten() {
            if let Some(mp) = self.model.pods.get_mut(pk) {
                mp.ingress.retain(|k| k != key);
                mp.egress.retain(|k| k != key);
            }
        }
        for sk in set_keys_of(&policy) {
            let Some(refs) = self.set_refs.get_mut(&sk) else {
                continue;
            };
            *refs -= 1;
            if *refs == 0 {
                self.set_refs.remove(&sk);
                self.set_members.remove(&sk);
                self.model.sets.remove(&sk);
            }
        }
        true
    }
}

//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`) as a pure model (docs/networkpolicy.md).
//!
//! [`build_policy_model`] maps NetworkPolicies, pods and namespaces ([`PolicyInput`]) to a
//! [`PolicyModel`]: every policy compiled to rules whose peers are named address sets (one set per
//! distinct selector, so a pod joining a selector is one set element), which policies isolate each
//! pod in each direction, the named container ports by destination address, and a problem list per
//! policy. [`evaluate`] answers, for one flow, what each side's policy says and which policy and
//! rule allowed it; the agent programs the same model and `kubectl hybridnet trace` explains it.
//!
//! Anything the API server would have refused (an invalid CIDR, an unknown protocol, a named port
//! with `endPort`, ...) is reported and matches nothing: a broken peer or port never widens a rule,
//! and a policy whose `podSelector` cannot be read isolates every pod of its namespace in the
//! directions it names, with no allow rule. Nothing broken ever opens traffic.

mod build;
mod compile;
pub mod conformance;
pub mod counters;
mod eval;
mod incremental;
pub mod render;
pub mod selector;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;
use serde::{Deserialize, Serialize};

pub use build::{NAMESPACE_NAME_LABEL, build_policy_model, namespace_from_object, pod_from_object};
pub use compile::{CompiledPolicy, compile_policy};
pub use eval::{Flow, SideVerdict, Verdict, evaluate};
pub use incremental::PolicyState;
pub use render::{
    POLICY_TABLE, generation, generation_in_listing, next_generation, render_policy_table,
    set_generation,
};
pub use selector::Selector;

/// `namespace/name` of a pod or a policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Transport protocols a NetworkPolicy port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, `UDP`, `SCTP`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }
    /// IANA protocol number (the `meta l4proto` of nftables).
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

/// A named container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// What the policy model needs of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node: String,
    pub ips: Vec<IpAddr>,
    /// Named container ports (unnamed ones cannot be referenced by a policy).
    pub ports: Vec<ContainerPort>,
    /// Host-network pods share the node's addresses: never selected, never a peer.
    pub host_network: bool,
}

impl PolicyPod {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }
}

/// What the policy model needs of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyNamespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Everything the policy model is a function of.
#[derive(Clone, Debug, Default)]
pub struct PolicyInput {
    pub policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    pub pods: Vec<PolicyPod>,
    pub namespaces: Vec<PolicyNamespace>,
    /// Node name -> its addresses: traffic from a pod's own node is allowed (kubelet probes).
    pub nodes: BTreeMap<String, Vec<IpAddr>>,
}

/// Ingress or egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// Which namespaces a pod peer is looked for in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceMatch {
    /// The policy's own namespace (no `namespaceSelector`).
    Same(String),
    /// Namespaces whose labels match.
    Selector(Selector),
}

/// A set of pod addresses defined by selectors: the unit of an nftables named set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetKey {
    pub namespaces: NamespaceMatch,
    pub pods: Selector,
}

impl fmt::Display for SetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespaces {
            NamespaceMatch::Same(ns) => write!(f, "namespace {ns}, pods {}", self.pods),
            NamespaceMatch::Selector(s) => write!(f, "namespaces {s}, pods {}", self.pods),
        }
    }
}

/// An `ipBlock`: `cidr` minus `except`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    pub cidr: Cidr,
    pub except: Vec<Cidr>,
}

impl IpBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// One peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods whose address is in the set.
    Pods(SetKey),
    Block(IpBlock),
    /// A peer the API server would have refused: matches nothing.
    Nothing,
}

/// The ports of one rule entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortSpec {
    /// Every port of the protocol.
    All,
    /// `port` .. `endPort` (inclusive; one port when equal).
    Range(u16, u16),
    /// A container port name, resolved on the destination pod.
    Named(String),
    /// A port the API server would have refused: matches nothing.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub port: PortSpec,
}

/// `None` means "any" (the list was absent or empty); `Some(list)` matches what an entry matches,
/// and an empty `Some` (every entry broken) matches nothing.
pub type AnyOr<T> = Option<Vec<T>>;

/// One ingress or egress rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Index in `spec.ingress` / `spec.egress`.
    pub index: usize,
    pub peers: AnyOr<Peer>,
    pub ports: AnyOr<PortMatch>,
}

/// The rules of one direction of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DirectionRules {
    /// The policy isolates its pods in this direction.
    pub isolates: bool,
    pub rules: Vec<Rule>,
}

/// A pod as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ModelPod {
    pub node: String,
    pub ips: Vec<IpAddr>,
    /// Policies that select the pod and isolate it for ingress (empty: not isolated).
    pub ingress: Vec<ObjectKey>,
    pub egress: Vec<ObjectKey>,
}

/// The desired policy state of the cluster (every node programs its own pods from it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyModel {
    pub policies: BTreeMap<ObjectKey, CompiledPolicy>,
    /// Every pod with its isolation (host-network and finished pods are left out).
    pub pods: BTreeMap<ObjectKey, ModelPod>,
    /// Address sets referenced by rules, with their members.
    pub sets: BTreeMap<SetKey, BTreeSet<IpAddr>>,
    /// (protocol, port name) -> (pod address, port number) of every pod declaring it.
    pub named_ports: BTreeMap<(Protocol, String), BTreeSet<(IpAddr, u16)>>,
    /// Address -> pod.
    pub by_ip: BTreeMap<IpAddr, ObjectKey>,
    /// Node name -> addresses (from the input).
    pub nodes: BTreeMap<String, Vec<IpAddr>>,
    /// Per policy, what could not be used (for Events on the policy).
    pub problems: BTreeMap<ObjectKey, Vec<String>>,
}

impl PolicyModel {
    /// Pods selected by at least one policy in `dir`.
    pub fn isolated(&self, dir: Direction) -> impl Iterator<Item = (&ObjectKey, &ModelPod)> {
        self.pods.iter().filter(move |(_, p)| match dir {
            Direction::Ingress => !p.ingress.is_empty(),
            Direction::Egress => !p.egress.is_empty(),
        })
    }
}

//! The verdict of the policy model for one flow, with the reason on each side.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{AnyOr, Direction, ObjectKey, Peer, PolicyModel, PortMatch, PortSpec, Protocol, Rule};

/// One new connection (or datagram) as the destination sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// What one side (the source's egress, the destination's ingress) decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SideVerdict {
    /// The address is no pod of the cluster: nothing is enforced for it on this side.
    NotAPod,
    /// No policy selects the pod in this direction.
    NotIsolated,
    /// Source and destination are the same pod (the packet never leaves it).
    SamePod,
    /// Ingress from the destination pod's own node (kubelet probes); always allowed.
    FromOwnNode,
    /// The first rule (policies by namespace/name, rules by index) that allows the flow.
    Allowed { policy: ObjectKey, rule: usize },
    /// Isolated by these policies and none of their rules allows the flow.
    Denied { isolated_by: Vec<ObjectKey> },
}

impl SideVerdict {
    pub fn allows(&self) -> bool {
        !matches!(self, Self::Denied { .. })
    }
}

impl fmt::Display for SideVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAPod => f.write_str("not a pod: no policy applies"),
            Self::NotIsolated => f.write_str("not isolated: no policy selects the pod"),
            Self::SamePod => f.write_str("same pod: always allowed"),
            Self::FromOwnNode => f.write_str("from the pod's own node: always allowed"),
            Self::Allowed { policy, rule } => write!(f, "allowed by {policy} rule {rule}"),
            Self::Denied { isolated_by } => {
                let names: Vec<String> = isolated_by.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "denied: isolated by {} and no rule allows it",
                    names.join(", ")
                )
            }
        }
    }
}

/// Both sides; the flow passes when both allow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The source pod's egress.
    pub egress: SideVerdict,
    /// The destination pod's ingress.
    pub ingress: SideVerdict,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

fn port_matches(model: &PolicyModel, pm: &PortMatch, flow: &Flow) -> bool {
    if pm.protocol != flow.protocol {
        return false;
    }
    match &pm.port {
        PortSpec::All => true,
        PortSpec::Range(a, b) => (*a..=*b).contains(&flow.port),
        // resolved on the destination pod: one rule may mean different numbers on different pods
        PortSpec::Named(name) => model
            .named_ports
            .get(&(flow.protocol, name.clone()))
            .is_some_and(|s| s.contains(&(flow.dst, flow.port))),
        PortSpec::Nothing => false,
    }
}

fn peer_matches(model: &PolicyModel, peer: &Peer, ip: IpAddr) -> bool {
    match peer {
        Peer::Pods(k) => model.sets.get(k).is_some_and(|s| s.contains(&ip)),
        Peer::Block(b) => b.contains(ip),
        Peer::Nothing => false,
    }
}

fn any_or<T>(list: &AnyOr<T>, f: impl Fn(&T) -> bool) -> bool {
    match list {
        None => true,
        Some(v) => v.iter().any(f),
    }
}

/// Whether `rule` allows the flow, `peer` being the other end's address.
pub fn rule_allows(model: &PolicyModel, rule: &Rule, peer: IpAddr, flow: &Flow) -> bool {
    any_or(&rule.peers, |p| peer_matches(model, p, peer))
        && any_or(&rule.ports, |p| port_matches(model, p, flow))
}

fn side(model: &PolicyModel, dir: Direction, flow: &Flow) -> SideVerdict {
    let (own, peer) = match dir {
        Direction::Egress => (flow.src, flow.dst),
        Direction::Ingress => (flow.dst, flow.src),
    };
    let Some(pod) = model.by_ip.get(&own).and_then(|k| model.pods.get(k)) else {
        return SideVerdict::NotAPod;
    };
    if model.by_ip.get(&own) == model.by_ip.get(&peer) {
        return SideVerdict::SamePod;
    }
    if dir == Direction::Ingress
        && model
            .nodes
            .get(&pod.node)
            .is_some_and(|addrs| addrs.contains(&peer))
    {
        return SideVerdict::FromOwnNode;
    }
    let isolated_by = match dir {
        Direction::Ingress => &pod.ingress,
        Direction::Egress => &pod.egress,
    };
    if isolated_by.is_empty() {
        return SideVerdict::NotIsolated;
    }
    for key in isolated_by {
        let Some(policy) = model.policies.get(key) else {
            continue;
        };
        for rule in &policy.rules(dir).rules {
            if rule_allows(model, rule, peer, flow) {
                return SideVerdict::Allowed {
                    policy: key.clone(),
                    rule: rule.index,
                };
            }
        }
    }
    SideVerdict::Denied {
        isolated_by: isolated_by.clone(),
    }
}

/// The model's verdict for `flow`.
pub fn evaluate(model: &PolicyModel, flow: &Flow) -> Verdict {
    Verdict {
        egress: side(model, Direction::Egress, flow),
        ingress: side(model, Direction::Ingress, flow),
    }
}

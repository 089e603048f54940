//! One NetworkPolicy -> [`CompiledPolicy`] plus the problems found in it.

use hybridnet_api::ipmath::Cidr;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector::Selector;
use super::{
    AnyOr, DirectionRules, IpBlock, NamespaceMatch, ObjectKey, Peer, PortMatch, PortSpec, Protocol,
    Rule, SetKey,
};

/// A policy ready to be matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub key: ObjectKey,
    /// `spec.podSelector`; `None` when it could not be read (the policy then selects every pod
    /// of its namespace, with no allow rule, in the directions it isolates).
    pub selector: Option<Selector>,
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

impl CompiledPolicy {
    pub fn rules(&self, dir: super::Direction) -> &DirectionRules {
        match dir {
            super::Direction::Ingress => &self.ingress,
            super::Direction::Egress => &self.egress,
        }
    }
}

/// Container port names: IANA service names (RFC 6335), as Kubernetes validates them.
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn compile_port(p: &NetworkPolicyPort, field: &str, problems: &mut Vec<String>) -> PortMatch {
    let nothing = |protocol| PortMatch {
        protocol,
        port: PortSpec::Nothing,
    };
    let protocol = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => match Protocol::parse(s) {
            Some(p) => p,
            None => {
                problems.push(format!(
                    "{field}.protocol: Unsupported value: {s:?}: supported values: \"SCTP\", \"TCP\", \"UDP\"; the entry matches nothing"
                ));
                // the protocol is irrelevant: the port matches nothing
                return nothing(Protocol::Tcp);
            }
        },
    };
    let bad = |problems: &mut Vec<String>, msg: String| {
        problems.push(format!("{msg}; the entry matches nothing"));
        nothing(protocol)
    };
    match (&p.port, p.end_port) {
        (None, None) => PortMatch {
            protocol,
            port: PortSpec::All,
        },
        (None, Some(e)) => bad(
            problems,
            format!(
                "{field}.endPort: Invalid value: {e}: may not be specified when `port` is not specified"
            ),
        ),
        (Some(IntOrString::Int(n)), end) => {
            let Some(start) = u16::try_from(*n).ok().filter(|n| *n > 0) else {
                return bad(
                    problems,
                    format!(
                        "{field}.port: Invalid value: {n}: must be between 1 and 65535, inclusive"
                    ),
                );
            };
            let end = match end {
                None => start,
                Some(e) => match u16::try_from(e).ok().filter(|e| *e >= start) {
                    Some(e) => e,
                    None => {
                        return bad(
                            problems,
                            format!(
                                "{field}.endPort: Invalid value: {e}: must be greater than or equal to `port` and at most 65535"
                            ),
                        );
                    }
                },
            };
            PortMatch {
                protocol,
                port: PortSpec::Range(start, end),
            }
        }
        (Some(IntOrString::String(name)), None) => {
            if is_port_name(name) {
                PortMatch {
                    protocol,
                    port: PortSpec::Named(name.clone()),
                }
            } else {
                bad(
                    problems,
                    format!(
                        "{field}.port: Invalid value: {name:?}: must be a port number or an IANA service name (1-15 lowercase letters, digits and '-')"
                    ),
                )
            }
        }
        (Some(IntOrString::String(name)), Some(e)) => bad(
            problems,
            format!(
                "{field}.endPort: Invalid value: {e}: may not be specified when `port` is the named port {name:?}"
            ),
        ),
    }
}

fn compile_peer(
    p: &NetworkPolicyPeer,
    namespace: &str,
    field: &str,
    problems: &mut Vec<String>,
) -> Peer {
    let bad = |problems: &mut Vec<String>, msg: String| {
        problems.push(format!("{msg}; the peer matches nothing"));
        Peer::Nothing
    };
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => bad(
            problems,
            format!("{field}: Forbidden: may not specify both ipBlock and another peer"),
        ),
        (None, None, None) => bad(
            problems,
            format!("{field}: Required value: must specify a peer"),
        ),
        (Some(b), None, None) => {
            let cidr = match Cidr::parse_any(b.cidr.trim()) {
                Ok(c) => c,
                Err(e) => {
                    return bad(
                        problems,
                        format!("{field}.ipBlock.cidr: Invalid value: {e}"),
                    );
                }
            };
            let mut except = Vec::new();
            for (i, x) in b.except.iter().flatten().enumerate() {
                let at = format!("{field}.ipBlock.except[{i}]");
                match Cidr::parse_any(x.trim()) {
                    Err(e) => return bad(problems, format!("{at}: Invalid value: {e}")),
                    Ok(e)
                        if e.version != cidr.version
                            || e.prefix <= cidr.prefix
                            || !cidr.contains_u128(e.first()) =>
                    {
                        return bad(
                            problems,
                            format!(
                                "{at}: Invalid value: {x:?}: must be a strict subset of `cidr` {}",
                                b.cidr
                            ),
                        );
                    }
                    Ok(e) => except.push(e),
                }
            }
            except.sort();
            except.dedup();
            Peer::Block(IpBlock { cidr, except })
        }
        (None, ns, pods) => {
            let namespaces = match ns {
                None => NamespaceMatch::Same(namespace.to_string()),
                Some(s) => match Selector::compile(s, &format!("{field}.namespaceSelector")) {
                    Ok(s) => NamespaceMatch::Selector(s),
                    Err(e) => return bad(problems, e),
                },
            };
            let pods = match pods {
                None => Selector::everything(),
                Some(s) => match Selector::compile(s, &format!("{field}.podSelector")) {
                    Ok(s) => s,
                    Err(e) => return bad(problems, e),
                },
            };
            Peer::Pods(SetKey { namespaces, pods })
        }
    }
}

fn compile_rule(
    index: usize,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
    namespace: &str,
    field: &str,
    peer_field: &str,
    problems: &mut Vec<String>,
) -> Rule {
    let peers: AnyOr<Peer> = peers.filter(|p| !p.is_empty()).map(|ps| {
        let mut v: Vec<Peer> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                compile_peer(
                    p,
                    namespace,
                    &format!("{field}.{peer_field}[{i}]"),
                    problems,
                )
            })
            .filter(|p| *p != Peer::Nothing)
            .collect();
        v.sort();
        v.dedup();
        v
    });
    let ports: AnyOr<PortMatch> = ports.filter(|p| !p.is_empty()).map(|ps| {
        let mut v: Vec<PortMatch> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| compile_port(p, &format!("{field}.ports[{i}]"), problems))
            .filter(|p| p.port != PortSpec::Nothing)
            .collect();
        v.sort();
        v.dedup();
        v
    });
    Rule {
        index,
        peers,
        ports,
    }
}

/// Compiles a policy; the problems name the field and say what the agent does instead.
pub fn compile_policy(np: &NetworkPolicy) -> (CompiledPolicy, Vec<String>) {
    let mut problems = Vec::new();
    let namespace = np.metadata.namespace.clone().unwrap_or_default();
    let key = ObjectKey::new(&namespace, np.metadata.name.as_deref().unwrap_or_default());
    let spec = np.spec.clone().unwrap_or_default();
    let selector = match &spec.pod_selector {
        None => Some(Selector::everything()),
        Some(s) => match Selector::compile(s, "spec.podSelector") {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!(
                    "{e}; the policy isolates every pod of namespace {namespace} and allows nothing"
                ));
                None
            }
        },
    };
    let ingress_rules = spec.ingress.as_ref().filter(|r| !r.is_empty());
    let egress_rules = spec.egress.as_ref().filter(|r| !r.is_empty());
    // policyTypes: explicit, or implied (Ingress always, Egress when there are egress rules)
    let (mut ingress, mut egress, mut unknown) = (false, false, false);
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        None => {
            ingress = true;
            egress = egress_rules.is_some();
        }
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress = true,
                    "Egress" => egress = true,
                    other => {
                        unknown = true;
                        problems.push(format!(
                            "spec.policyTypes[{i}]: Unsupported value: {other:?}: supported values: \"Egress\", \"Ingress\"; the policy isolates its pods in both directions"
                        ));
                    }
                }
            }
        }
    }
    let readable = selector.is_some();
    let dir_rules = |listed: bool, rules: Vec<Rule>| DirectionRules {
        isolates: listed || unknown,
        // rules only for a direction the policy names, and only when its pods are known
        rules: if listed && readable { rules } else { vec![] },
    };
    let irules: Vec<Rule> = ingress_rules
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            compile_rule(
                i,
                r.from.as_ref(),
                r.ports.as_ref(),
                &namespace,
                &format!("spec.ingress[{i}]"),
                "from",
                &mut problems,
            )
        })
        .collect();
    let erules: Vec<Rule> = egress_rules
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            compile_rule(
                i,
                r.to.as_ref(),
                r.ports.as_ref(),
                &namespace,
                &format!("spec.egress[{i}]"),
                "to",
                &mut problems,
            )
        })
        .collect();
    (
        CompiledPolicy {
            key,
            selector,
            ingress: dir_rules(ingress, irules),
            egress: dir_rules(egress, erules),
        },
        problems,
    )
}

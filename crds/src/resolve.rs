//! The pod network-config resolution order (upstream `pkg/controllers/networking/pod_controller.go`) as a pure function: which network,
//! subnets, type and IP family a pod gets, from its retained addresses, its own annotations and
//! labels, its namespace's, and the cluster defaults. Used by the webhook, the operator (when the
//! webhook was bypassed) and the node agent.

use std::collections::BTreeMap;

use crate::constants::annotation;
use crate::error::FieldError;
use crate::operator::IpFamily;
use crate::v1::{IpVersion, Network, NetworkType, Subnet};

/// What the resolution reads. Maps are the objects' annotations and labels.
#[derive(Debug, Clone, Copy)]
pub struct PodConfigInput<'a> {
    pub pod_annotations: &'a BTreeMap<String, String>,
    pub pod_labels: &'a BTreeMap<String, String>,
    pub namespace_annotations: &'a BTreeMap<String, String>,
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Non-terminating IPInstances of this pod, as `(network, version)`, when the pod is stateful and
    /// IP retention is on; empty otherwise.
    pub retained: &'a [(String, IpVersion)],
    pub default_network_type: NetworkType,
    pub default_ip_family: IpFamily,
    pub networks: &'a [Network],
    pub subnets: &'a [Subnet],
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkConfig {
    /// A specific network (named, implied by subnets, or the retained one); `None` means "the
    /// network of `network_type` that fits the node".
    pub network: Option<String>,
    /// Named subnets: none, one, or `[v4, v6]` for dual stack.
    pub subnets: Vec<String>,
    pub network_type: NetworkType,
    pub ip_family: IpFamily,
    /// The pod already holds retained addresses (so no quota selector is needed).
    pub retained_ip_exist: bool,
    /// The named network's node selector (underlay pods are pinned to its nodes).
    pub node_selector: BTreeMap<String, String>,
}

#[derive(Default)]
struct Elected {
    network: Option<String>,
    subnet: Option<String>,
    network_type: Option<String>,
    ip_family: Option<String>,
}

impl Elected {
    fn any(&self) -> bool {
        self.network.is_some()
            || self.subnet.is_some()
            || self.network_type.is_some()
            || self.ip_family.is_some()
    }

    fn read(annotations: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> Self {
        let pick = |key: &str| {
            annotations
                .get(key)
                .or_else(|| labels.get(key))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            network: pick(annotation::SPECIFIED_NETWORK),
            subnet: pick(annotation::SPECIFIED_SUBNET),
            network_type: pick(annotation::NETWORK_TYPE),
            // The family is read from annotations only, as upstream.
            ip_family: annotations
                .get(annotation::IP_FAMILY)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
        }
    }
}

fn ann_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// Resolves a pod's network configuration (upstream `pkg/controllers/networking/pod_controller.go`). Errors name the annotation and value.
pub fn resolve_pod_network_config(
    input: &PodConfigInput<'_>,
) -> Result<PodNetworkConfig, FieldError> {
    let mut elected = Elected::default();
    let mut family_from_retained = None;
    let retained_ip_exist = !input.retained.is_empty();

    // 1. Retained addresses of a stateful pod decide network and family.
    if retained_ip_exist {
        let nets: std::collections::BTreeSet<&str> =
            input.retained.iter().map(|(n, _)| n.as_str()).collect();
        if nets.len() > 1 {
            return Err(FieldError::new(
                "ipinstances",
                format!("the pod's retained addresses belong to several networks: {nets:?}"),
            ));
        }
        let versions: Vec<IpVersion> = input.retained.iter().map(|(_, v)| *v).collect();
        family_from_retained = Some(match versions.as_slice() {
            [IpVersion::V4] => IpFamily::IPv4,
            [IpVersion::V6] => IpFamily::IPv6,
            [a, b] if a != b => IpFamily::DualStack,
            _ => {
                return Err(FieldError::new(
                    "ipinstances",
                    format!(
                        "the pod has {} retained addresses of versions {versions:?}; want one, or one IPv4 and one IPv6",
                        versions.len()
                    ),
                ));
            }
        });
        elected.network = input.retained.first().map(|(n, _)| n.clone());
    }
    // 2. The pod's own annotations and labels, 3. then its namespace's.
    if !elected.any() {
        elected = Elected::read(input.pod_annotations, input.pod_labels);
    }
    if !elected.any() {
        elected = Elected::read(input.namespace_annotations, input.namespace_labels);
    }

    // 4. Type and family, with defaults.
    let explicit_type = match &elected.network_type {
        Some(t) => Some(NetworkType::parse_case_insensitive(t).ok_or_else(|| {
            FieldError::new(
                ann_field(annotation::NETWORK_TYPE),
                format!("{t:?} is not a network type (Underlay, Overlay or GlobalBGP)"),
            )
        })?),
        None => None,
    };
    let ip_family = match (family_from_retained, &elected.ip_family) {
        (Some(f), _) => f,
        (None, Some(f)) => IpFamily::parse_case_insensitive(f).ok_or_else(|| {
            FieldError::new(
                ann_field(annotation::IP_FAMILY),
                format!("{f:?} is not an IP family (IPv4, IPv6 or DualStack)"),
            )
        })?,
        (None, None) => input.default_ip_family,
    };

    // Subnets: `sub` or `v4sub/v6sub`, all of one network, which they imply.
    let mut network = elected.network.clone();
    let mut subnets = Vec::new();
    if let Some(spec) = &elected.subnet {
        let field = ann_field(annotation::SPECIFIED_SUBNET);
        let names: Vec<&str> = spec.split('/').map(str::trim).collect();
        if names.len() > 2 || names.iter().any(|n| n.is_empty()) {
            return Err(FieldError::new(
                field,
                format!("{spec:?}: want one subnet name or ipv4-subnet/ipv6-subnet"),
            ));
        }
        match (ip_family, names.len()) {
            (IpFamily::DualStack, 1) => {
                return Err(FieldError::new(
                    field,
                    format!("{spec:?}: a DualStack pod names two subnets, ipv4-subnet/ipv6-subnet"),
                ));
            }
            (IpFamily::IPv4 | IpFamily::IPv6, 2) => {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{spec:?}: two subnets need ip-family DualStack, the pod is {ip_family}"
                    ),
                ));
            }
            _ => {}
        }
        for (i, name) in names.iter().enumerate() {
            let s = input
                .subnets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
                .ok_or_else(|| {
                    FieldError::new(field.clone(), format!("subnet {name:?} does not exist"))
                })?;
            let want = ip_family.versions()[i];
            if s.spec.range.version != want {
                return Err(FieldError::new(
                    field.clone(),
                    format!(
                        "subnet {name:?} is IPv{}, the pod needs IPv{want} there",
                        s.spec.range.version
                    ),
                ));
            }
            match &network {
                Some(n) if *n != s.spec.network => {
                    return Err(FieldError::new(
                        field.clone(),
                        format!(
                            "subnet {name:?} belongs to network {:?}, not {n:?}",
                            s.spec.network
                        ),
                    ));
                }
                _ => network = Some(s.spec.network.clone()),
            }
            subnets.push(name.to_string());
        }
    }

    // 5. A named network must exist and agree with the type.
    let mut network_type = explicit_type.unwrap_or(input.default_network_type);
    let mut node_selector = BTreeMap::new();
    if let Some(name) = &network {
        let net = input
            .networks
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| {
                FieldError::new(
                    ann_field(annotation::SPECIFIED_NETWORK),
                    format!("network {name:?} does not exist"),
                )
            })?;
        let actual = net.spec.effective_type();
        match explicit_type {
            Some(t) if t != actual => {
                return Err(FieldError::new(
                    ann_field(annotation::NETWORK_TYPE),
                    format!("{t} does not match network {name:?}, which is {actual}"),
                ));
            }
            _ => network_type = actual,
        }
        node_selector = net.spec.node_selector.clone().unwrap_or_default();
    }

    Ok(PodNetworkConfig {
        network,
        subnets,
        network_type,
        ip_family,
        retained_ip_exist,
        node_selector,
    })
}

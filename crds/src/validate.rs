//! Admission rules for Networks, Subnets and Pods (upstream `pkg/webhook/validating/`, with the
//! fixes docs/api.md lists), as pure functions over the new object and plain lists of existing ones. The webhook
//! runs them; `kubectl hybridnet` runs the object-local ones before sending.
//!
//! Every error names the field and the value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::constants::{annotation, label};
use crate::error::{FieldError, FieldErrors};
use crate::ipmath::ip_to_u128;
use crate::pools::{parse_ip_pool, parse_mac_pool};
use crate::range::{ParsedRange, parse_address_range};
use crate::resolve::PodNetworkConfig;
use crate::v1::{IPInstance, IpVersion, Network, NetworkMode, NetworkType, Subnet};

/// Largest VXLAN network identifier.
pub use crate::operator::values::MAX_VNI;
/// Largest 802.1Q VLAN id.
pub const MAX_VLAN_ID: i32 = 4094;
/// Linux `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_BGP_PASSWORD_LEN: usize = 80;

/// A node as the rules see it.
#[derive(Debug, Clone, Default)]
pub struct NodeLabels {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Existing cluster state the rules compare against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Existing<'a> {
    pub networks: &'a [Network],
    pub subnets: &'a [Subnet],
    pub nodes: &'a [NodeLabels],
    pub ipinstances: &'a [IPInstance],
}

fn name_of<K: kube::Resource>(o: &K) -> &str {
    o.meta().name.as_deref().unwrap_or("")
}

/// Rules that need only the Network itself (used by `kubectl hybridnet network create` too).
pub fn network_spec(net: &Network) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    let spec = &net.spec;
    let ty = spec.effective_type();
    let mode = spec.effective_mode();
    if mode.required_type() != ty {
        errs.push(FieldError::new(
            "spec.mode",
            format!(
                "{mode} is not allowed for a {ty} network (it needs type {})",
                mode.required_type()
            ),
        ));
    }
    let selector_empty = spec.node_selector.as_ref().is_none_or(|s| s.is_empty());
    match ty {
        NetworkType::Underlay if selector_empty => errs.push(FieldError::new(
            "spec.nodeSelector",
            "an Underlay network needs a nodeSelector naming its nodes",
        )),
        NetworkType::Overlay | NetworkType::GlobalBgp if !selector_empty => {
            errs.push(FieldError::new(
                "spec.nodeSelector",
                format!("a {ty} network spans every node; remove the nodeSelector"),
            ))
        }
        _ => {}
    }
    match (mode, spec.net_id) {
        (NetworkMode::Vxlan, None) => errs.push(FieldError::new(
            "spec.netID",
            "a VXLAN network needs its VNI in netID",
        )),
        (NetworkMode::Vxlan, Some(v)) if !(1..=MAX_VNI).contains(&v) => errs.push(FieldError::new(
            "spec.netID",
            format!("{v} is not a VXLAN VNI (1..{MAX_VNI})"),
        )),
        (NetworkMode::Vlan, Some(v)) if !(0..=MAX_VLAN_ID).contains(&v) => {
            errs.push(FieldError::new(
                "spec.netID",
                format!("{v} is not a VLAN id (0 for untagged, 1..{MAX_VLAN_ID})"),
            ))
        }
        (NetworkMode::Bgp, None) => errs.push(FieldError::new(
            "spec.netID",
            "a BGP network needs its local AS number in netID",
        )),
        (NetworkMode::Bgp, Some(v)) if v < 1 => errs.push(FieldError::new(
            "spec.netID",
            format!("{v} is not an AS number"),
        )),
        (NetworkMode::GlobalBgp, Some(v)) => errs.push(FieldError::new(
            "spec.netID",
            format!("{v}: a GlobalBGP network takes no netID"),
        )),
        _ => {}
    }
    let peers = spec.bgp_peers();
    if mode == NetworkMode::Bgp {
        if peers.is_empty() {
            errs.push(FieldError::new(
                "spec.config.bgpPeers",
                "a BGP network needs at least one peer",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in peers.iter().enumerate() {
            let f = format!("spec.config.bgpPeers[{i}]");
            match p.address.parse::<IpAddr>() {
                Ok(ip) => {
                    if !seen.insert(ip) {
                        errs.push(FieldError::new(
                            format!("{f}.address"),
                            format!("{} is listed twice", p.address),
                        ));
                    }
                }
                Err(_) => errs.push(FieldError::new(
                    format!("{f}.address"),
                    format!("{:?} is not an IP address", p.address),
                )),
            }
            if p.asn < 1 {
                errs.push(FieldError::new(
                    format!("{f}.asn"),
                    format!("{} is not an AS number", p.asn),
                ));
            }
            if let Some(s) = p.graceful_restart_seconds
                && !(0..=4095).contains(&s)
            {
                errs.push(FieldError::new(
                    format!("{f}.gracefulRestartSeconds"),
                    format!("{s} is outside 0..4095 (RFC 4724)"),
                ));
            }
            if let Some(pw) = &p.password
                && (pw.is_empty() || pw.len() > MAX_BGP_PASSWORD_LEN)
            {
                errs.push(FieldError::new(
                    format!("{f}.password"),
                    format!("must be 1..{MAX_BGP_PASSWORD_LEN} bytes long"),
                ));
            }
        }
        for v6 in [false, true] {
            let parsed = peers
                .iter()
                .filter_map(|p| Some((p.address.parse::<IpAddr>().ok()?, p.routes_traffic())));
            if let Err(e) = crate::traffic_peer::traffic_peer(parsed, v6) {
                errs.push(FieldError::new("spec.config.bgpPeers", e.to_string()));
            }
        }
    } else if !peers.is_empty() {
        errs.push(FieldError::new(
            "spec.config.bgpPeers",
            format!("only BGP networks have peers, this one is {mode}"),
        ));
    }
    errs.into_result()
}

/// Network CREATE.
pub fn network_create(net: &Network, existing: &Existing<'_>) -> Result<(), FieldErrors> {
    let mut errs = match network_spec(net) {
        Ok(()) => FieldErrors::default(),
        Err(e) => e,
    };
    let ty = net.spec.effective_type();
    let me = name_of(net);
    if ty.is_cluster_unique()
        && let Some(other) = existing
            .networks
            .iter()
            .find(|n| n.spec.effective_type() == ty && name_of(*n) != me)
    {
        errs.push(FieldError::new(
            "spec.type",
            format!(
                "{ty}: network {:?} already exists and there can be only one",
                name_of(other)
            ),
        ));
    }
    if ty == NetworkType::Underlay {
        underlay_node_overlap(net, existing, &mut errs);
    }
    errs.into_result()
}

/// A node may belong to one underlay network only.
fn underlay_node_overlap(net: &Network, existing: &Existing<'_>, errs: &mut FieldErrors) {
    let me = name_of(net);
    for node in existing
        .nodes
        .iter()
        .filter(|n| net.spec.selects_node(&n.labels))
    {
        for other in existing
            .networks
            .iter()
            .filter(|n| name_of(*n) != me && n.spec.effective_type() == NetworkType::Underlay)
        {
            let in_other = other
                .status
                .as_ref()
                .and_then(|s| s.node_list.as_ref())
                .is_some_and(|l| l.contains(&node.name))
                || other.spec.selects_node(&node.labels);
            if in_other {
                errs.push(FieldError::new(
                    "spec.nodeSelector",
                    format!(
                        "node {:?} already belongs to underlay network {:?}; a node is in at most one underlay network",
                        node.name,
                        name_of(other)
                    ),
                ));
                return;
            }
        }
    }
}

/// Records `field: is immutable (old -> new)` when an immutable value changed; `show` writes a
/// value as the message names it.
/// An optional string field as upstream compares it: absent and empty are the same.
fn set(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

fn immutable<T: PartialEq>(
    errs: &mut FieldErrors,
    field: &str,
    old: T,
    new: T,
    show: impl Fn(T) -> String,
) {
    if old != new {
        errs.push(FieldError::new(
            field,
            format!("is immutable ({} -> {})", show(old), show(new)),
        ));
    }
}

/// Network UPDATE.
pub fn network_update(
    old: &Network,
    new: &Network,
    existing: &Existing<'_>,
) -> Result<(), FieldErrors> {
    let mut errs = match network_spec(new) {
        Ok(()) => FieldErrors::default(),
        Err(e) => e,
    };
    let (o, n) = (&old.spec, &new.spec);
    immutable(
        &mut errs,
        "spec.type",
        o.effective_type(),
        n.effective_type(),
        |t| t.to_string(),
    );
    immutable(
        &mut errs,
        "spec.mode",
        o.effective_mode(),
        n.effective_mode(),
        |m| m.to_string(),
    );
    immutable(&mut errs, "spec.netID", o.net_id, n.net_id, |v| {
        format!("{v:?}")
    });
    if new.spec.effective_type() == NetworkType::Underlay
        && old.spec.node_selector != new.spec.node_selector
    {
        underlay_node_overlap(new, existing, &mut errs);
    }
    errs.into_result()
}

/// Network DELETE.
pub fn network_delete(net: &Network, existing: &Existing<'_>) -> Result<(), FieldErrors> {
    let me = name_of(net);
    let subnets: Vec<&str> = existing
        .subnets
        .iter()
        .filter(|s| s.spec.network == me)
        .map(name_of)
        .collect();
    if !subnets.is_empty() {
        return Err(FieldError::new(
            "metadata.name",
            format!("network {me:?} still has subnets {subnets:?}; delete them first"),
        )
        .into());
    }
    // A BGP network's nodes announce the GlobalBGP addresses of their pods: while any sits on one
    // of its nodes, it stays (upstream pkg/webhook/validating/network.go, DELETE).
    if net.spec.effective_mode() == NetworkMode::Bgp {
        let nodes: BTreeSet<&str> = net
            .status
            .as_ref()
            .and_then(|s| s.node_list.as_ref())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        for global in existing
            .networks
            .iter()
            .filter(|n| n.spec.effective_type() == NetworkType::GlobalBgp)
        {
            let gname = name_of(global);
            let mut on_nodes: Vec<String> = existing
                .ipinstances
                .iter()
                .filter(|i| i.spec.network == gname)
                .filter(|i| {
                    i.spec
                        .binding
                        .node_name
                        .as_deref()
                        .is_some_and(|n| nodes.contains(n))
                })
                .map(|i| {
                    format!(
                        "{}/{}",
                        i.metadata.namespace.as_deref().unwrap_or(""),
                        name_of(i)
                    )
                })
                .collect();
            if !on_nodes.is_empty() {
                on_nodes.sort();
                return Err(FieldError::new(
                    "metadata.name",
                    format!(
                        "BGP network {me:?} still carries GlobalBGP addresses of network {gname:?} on its nodes: {on_nodes:?}"
                    ),
                )
                .into());
            }
        }
    }
    Ok(())
}

fn parent_network<'a>(subnet: &Subnet, existing: &Existing<'a>) -> Result<&'a Network, FieldError> {
    if subnet.spec.network.is_empty() {
        return Err(FieldError::new(
            "spec.network",
            "must name the subnet's Network",
        ));
    }
    existing
        .networks
        .iter()
        .find(|n| name_of(*n) == subnet.spec.network)
        .ok_or_else(|| {
            FieldError::new(
                "spec.network",
                format!("network {:?} does not exist", subnet.spec.network),
            )
        })
}

/// Rules of a Subnet against its parent network's mode.
fn subnet_mode_rules(subnet: &Subnet, net: &Network, errs: &mut FieldErrors) {
    let mode = net.spec.effective_mode();
    let auto_nat_set = subnet
        .spec
        .config
        .as_ref()
        .and_then(|c| c.auto_nat_outgoing)
        .is_some();
    match mode {
        NetworkMode::Vlan => {
            match (subnet.spec.net_id, net.spec.net_id) {
                (None, None) => errs.push(FieldError::new(
                    "spec.netID",
                    format!(
                        "network {:?} has no VLAN id, so the subnet must set netID",
                        subnet.spec.network
                    ),
                )),
                (Some(s), Some(n)) if s != n => errs.push(FieldError::new(
                    "spec.netID",
                    format!(
                        "{s} differs from the VLAN id {n} of network {:?}",
                        subnet.spec.network
                    ),
                )),
                (Some(s), _) if !(0..=MAX_VLAN_ID).contains(&s) => errs.push(FieldError::new(
                    "spec.netID",
                    format!("{s} is not a VLAN id (0..{MAX_VLAN_ID})"),
                )),
                _ => {}
            }
            if subnet.spec.range.gateway().is_none() {
                errs.push(FieldError::new(
                    "spec.range.gateway",
                    "a VLAN subnet needs its gateway",
                ));
            }
            if auto_nat_set {
                errs.push(FieldError::new(
                    "spec.config.autoNatOutgoing",
                    "only overlay subnets masquerade; remove it",
                ));
            }
        }
        NetworkMode::Bgp | NetworkMode::GlobalBgp => {
            if let Some(v) = subnet.spec.net_id {
                errs.push(FieldError::new(
                    "spec.netID",
                    format!("{v}: {mode} subnets take no netID"),
                ));
            }
            if auto_nat_set {
                errs.push(FieldError::new(
                    "spec.config.autoNatOutgoing",
                    "only overlay subnets masquerade; remove it",
                ));
            }
        }
        NetworkMode::Vxlan => {
            if let Some(v) = subnet.spec.net_id {
                errs.push(FieldError::new(
                    "spec.netID",
                    format!("{v}: VXLAN subnets use the network's VNI; remove it"),
                ));
            }
        }
    }
}

/// Subnet CREATE.
pub fn subnet_create(subnet: &Subnet, existing: &Existing<'_>) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    match parent_network(subnet, existing) {
        Ok(net) => subnet_mode_rules(subnet, net, &mut errs),
        Err(e) => errs.push(e),
    }
    let parsed = match parse_address_range(&subnet.spec.range, "spec.range") {
        Ok(p) => p,
        Err(e) => {
            errs.0.extend(e.0);
            return Err(errs);
        }
    };
    if let Err(e) = subnet_overlap(subnet, &parsed, existing.subnets) {
        errs.push(e);
    }
    errs.into_result()
}

/// Overlap rules: different CIDRs must not intersect; one CIDR may be shared only by subnets of the
/// same network with disjoint start..end spans.
pub fn subnet_overlap(
    subnet: &Subnet,
    parsed: &ParsedRange,
    others: &[Subnet],
) -> Result<(), FieldError> {
    let me = name_of(subnet);
    for other in others.iter().filter(|o| name_of(*o) != me) {
        let Ok(op) = parse_address_range(&other.spec.range, "spec.range") else {
            continue;
        };
        if !parsed.cidr.intersects(&op.cidr) {
            continue;
        }
        if parsed.cidr != op.cidr {
            return Err(FieldError::new(
                "spec.range.cidr",
                format!(
                    "{} overlaps {} of subnet {:?}",
                    parsed.cidr,
                    op.cidr,
                    name_of(other)
                ),
            ));
        }
        if other.spec.network != subnet.spec.network {
            return Err(FieldError::new(
                "spec.range.cidr",
                format!(
                    "{} is already used by subnet {:?} of network {:?}",
                    parsed.cidr,
                    name_of(other),
                    other.spec.network
                ),
            ));
        }
        if parsed.spans_overlap(&op) {
            return Err(FieldError::new(
                "spec.range",
                format!(
                    "{}..{} overlaps {}..{} of subnet {:?} in the same CIDR",
                    parsed.ip(parsed.start),
                    parsed.ip(parsed.end),
                    op.ip(op.start),
                    op.ip(op.end),
                    name_of(other)
                ),
            ));
        }
    }
    Ok(())
}

fn ip_set(list: &Option<Vec<String>>) -> BTreeSet<u128> {
    list.iter()
        .flatten()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(ip_to_u128)
        .collect()
}

/// Subnet UPDATE: network, CIDR, start, end, gateway and excludeIPs are immutable; reservedIPs,
/// private and (overlay) autoNatOutgoing may change.
pub fn subnet_update(
    old: &Subnet,
    new: &Subnet,
    existing: &Existing<'_>,
) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    immutable(
        &mut errs,
        "spec.network",
        &old.spec.network,
        &new.spec.network,
        |v| format!("{v:?}"),
    );
    let (o, n) = (&old.spec.range, &new.spec.range);
    for (field, a, b) in [
        ("spec.range.cidr", o.cidr.as_str(), n.cidr.as_str()),
        ("spec.range.start", set(&o.start), set(&n.start)),
        ("spec.range.end", set(&o.end), set(&n.end)),
        ("spec.range.gateway", set(&o.gateway), set(&n.gateway)),
    ] {
        immutable(&mut errs, field, a, b, |v| format!("{v:?}"));
    }
    if o.version != n.version {
        errs.push(FieldError::new("spec.range.version", "is immutable"));
    }
    if ip_set(&o.exclude_ips) != ip_set(&n.exclude_ips) {
        errs.push(FieldError::new(
            "spec.range.excludeIPs",
            "is immutable after creation",
        ));
    }
    immutable(
        &mut errs,
        "spec.netID",
        old.spec.net_id,
        new.spec.net_id,
        |v| format!("{v:?}"),
    );
    if let Ok(net) = parent_network(new, existing) {
        subnet_mode_rules(new, net, &mut errs);
    }
    if let Err(e) = parse_address_range(&new.spec.range, "spec.range") {
        errs.0.extend(e.0);
    }
    errs.into_result()
}

/// Subnet DELETE: refused while any IPInstance (reserved ones too) uses the subnet.
pub fn subnet_delete(subnet: &Subnet, existing: &Existing<'_>) -> Result<(), FieldErrors> {
    let me = name_of(subnet);
    let using: Vec<&str> = existing
        .ipinstances
        .iter()
        .filter(|i| {
            i.spec.subnet == me
                || i.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label::SUBNET))
                    .is_some_and(|s| s == me)
        })
        .map(name_of)
        .take(10)
        .collect();
    if !using.is_empty() {
        return Err(FieldError::new(
            "metadata.name",
            format!("subnet {me:?} still has addresses in use {using:?}; delete their pods or IPInstances first"),
        )
        .into());
    }
    Ok(())
}

/// What Pod CREATE checks beyond [`crate::resolve::resolve_pod_network_config`], which must have
/// succeeded and produced `config`.
#[derive(Debug, Clone, Copy)]
pub struct PodCheckInput<'a> {
    pub pod_name: &'a str,
    pub pod_annotations: &'a BTreeMap<String, String>,
    pub config: &'a PodNetworkConfig,
    /// Non-terminating IPInstances in the pod's namespace labelled with this pod's name.
    pub pod_ipinstances: &'a [IPInstance],
    pub networks: &'a [Network],
}

/// Pod CREATE rules (upstream `pkg/webhook/validating/pod.go`).
pub fn pod_create(input: &PodCheckInput<'_>) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    let cfg = input.config;
    if let Some(net) = &cfg.network {
        for ipi in input.pod_ipinstances {
            if ipi.spec.network != *net {
                errs.push(FieldError::new(
                    format!("metadata.annotations[{}]", annotation::SPECIFIED_NETWORK),
                    format!(
                        "pod {:?} still holds {} in network {:?}, not {net:?}",
                        input.pod_name, ipi.spec.address.ip, ipi.spec.network
                    ),
                ));
            } else if !cfg.subnets.is_empty() && !cfg.subnets.contains(&ipi.spec.subnet) {
                errs.push(FieldError::new(
                    format!("metadata.annotations[{}]", annotation::SPECIFIED_SUBNET),
                    format!(
                        "pod {:?} still holds {} in subnet {:?}, which is not among {:?}",
                        input.pod_name, ipi.spec.address.ip, ipi.spec.subnet, cfg.subnets
                    ),
                ));
            }
        }
    }
    if let Some(pool) = input.pod_annotations.get(annotation::IP_POOL) {
        let field = format!("metadata.annotations[{}]", annotation::IP_POOL);
        if cfg.network.is_none() {
            errs.push(FieldError::new(
                field.clone(),
                format!(
                    "an ip-pool needs the pod to name its network ({})",
                    annotation::SPECIFIED_NETWORK
                ),
            ));
        }
        match parse_ip_pool(pool, &field) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    let versions: Vec<IpVersion> = e.addresses.iter().map(IpVersion::of).collect();
                    if versions != cfg.ip_family.versions() {
                        errs.push(FieldError::new(
                            field.clone(),
                            format!(
                                "entry {i} has versions {versions:?} but the pod is {}",
                                cfg.ip_family
                            ),
                        ));
                        break;
                    }
                }
            }
            Err(e) => errs.push(e),
        }
    }
    if let Some(pool) = input.pod_annotations.get(annotation::MAC_POOL) {
        let field = format!("metadata.annotations[{}]", annotation::MAC_POOL);
        if let Err(e) = parse_mac_pool(pool, &field) {
            errs.push(e);
        }
    }
    if cfg.network.is_none()
        && matches!(
            cfg.network_type,
            NetworkType::Overlay | NetworkType::GlobalBgp
        )
    {
        match input
            .networks
            .iter()
            .find(|n| n.spec.effective_type() == cfg.network_type)
        {
            None => errs.push(FieldError::new(
                format!("metadata.annotations[{}]", annotation::NETWORK_TYPE),
                format!("there is no {} network in the cluster", cfg.network_type),
            )),
            Some(net) => {
                let st = net.status.clone().unwrap_or_default();
                let count = match cfg.ip_family {
                    crate::operator::IpFamily::IPv4 => st.statistics,
                    crate::operator::IpFamily::IPv6 => st.ipv6_statistics,
                    crate::operator::IpFamily::DualStack => st.dual_stack_statistics,
                };
                if !count.is_some_and(|c| c.has_available()) {
                    errs.push(FieldError::new(
                        format!("metadata.annotations[{}]", annotation::IP_FAMILY),
                        format!(
                            "network {:?} ({}) has no {} addresses left",
                            name_of(net),
                            cfg.network_type,
                            cfg.ip_family
                        ),
                    ));
                }
            }
        }
    }
    errs.into_result()
}

//! Manifests built from flags, checked with the shared rules of `hybridnet-api` before anything is
//! sent: Network, Subnet and the HybridnetCluster of `install`.

use std::ops::RangeInclusive;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::operator::{
    BootstrapNetwork, CLUSTER_SINGLETON_NAME, ClusterDefaults, CniSpec, FailurePolicy,
    HybridnetCluster, HybridnetClusterSpec, ImagePullPolicy, IpFamily, NodeAgentSpec, WebhookSpec,
    values,
};
use hybridnet_api::range::{ParsedRange, parse_address_range};
use hybridnet_api::v1::{
    AddressRange, Network, NetworkConfig, NetworkMode, NetworkSpec, NetworkType, Subnet,
    SubnetConfig, SubnetSpec,
};
use hybridnet_api::validate::{self, Existing};
use hybridnet_api::{FieldErrors, names};
use kube::api::ObjectMeta;

use crate::cli::{
    FailurePolicyFlag, InstallArgs, IpFamilyFlag, ModeFlag, NetworkCreateArgs, NetworkTypeFlag,
    PullPolicyFlag, SubnetCreateArgs,
};
use crate::flags::{parse_asn, parse_ip_list, parse_node_selector, parse_peer};

/// Why a manifest cannot be built: every problem, each naming the flag (and the field it fills).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct InvalidManifest {
    pub problems: Vec<String>,
}

impl InvalidManifest {
    fn one(p: impl Into<String>) -> Self {
        Self {
            problems: vec![p.into()],
        }
    }
}

/// The flag a Subnet field comes from, for error messages.
/// Whether a flag's value lies in one of the shared ranges of `hybridnet_api::operator::values`.
fn within(v: i64, range: &RangeInclusive<i32>) -> bool {
    i32::try_from(v).is_ok_and(|v| range.contains(&v))
}

fn subnet_flag_of(field: &str) -> &'static str {
    let f = field.strip_prefix("spec.range.").unwrap_or(field);
    match f.split('[').next().unwrap_or(f) {
        "cidr" | "version" => "--cidr",
        "start" => "--start",
        "end" => "--end",
        "gateway" => "--gateway",
        "reservedIPs" => "--reserved",
        "excludeIPs" => "--exclude",
        "spec.network" => "--network",
        "spec.netID" => "--vlan-id",
        "spec.config.autoNatOutgoing" => "--no-nat",
        "spec.config.private" => "--private",
        "metadata.name" => "NAME",
        _ => "--cidr/--start/--end",
    }
}

/// The flag a Network field comes from, for error messages.
fn network_flag_of(field: &str, mode: NetworkMode) -> &'static str {
    match field.split('[').next().unwrap_or(field) {
        "spec.netID" => match mode {
            NetworkMode::Vxlan => "--vni",
            NetworkMode::Vlan => "--vlan-id",
            NetworkMode::Bgp => "--asn",
            NetworkMode::GlobalBgp => "--mode",
        },
        "spec.nodeSelector" => "--node-selector",
        "spec.config.bgpPeers" => "--peer",
        "spec.mode" | "spec.type" => "--mode",
        "metadata.name" => "NAME",
        _ => "flags",
    }
}

fn field_errors_to_problems(
    errs: &FieldErrors,
    flag_of: impl Fn(&str) -> &'static str,
) -> Vec<String> {
    errs.0
        .iter()
        .map(|e| format!("{} ({}): {}", flag_of(&e.field), e.field, e.message))
        .collect()
}

/// The shared admission rules of a Network create (`hybridnet_api::validate::network_create`):
/// cluster-unique types and a node in at most one underlay network.
pub fn check_network_create(net: &Network, existing: &Existing<'_>) -> Result<(), InvalidManifest> {
    let mode = net.spec.effective_mode();
    validate::network_create(net, existing).map_err(|e| InvalidManifest {
        problems: field_errors_to_problems(&e, |f| network_flag_of(f, mode)),
    })
}

/// The shared admission rules of a Subnet create (`hybridnet_api::validate::subnet_create`):
/// the parent network exists, the mode rules (VLAN id, gateway, NAT) and no overlap.
pub fn check_subnet_create(
    subnet: &Subnet,
    existing: &Existing<'_>,
) -> Result<(), InvalidManifest> {
    let name = subnet.metadata.name.as_deref().unwrap_or("");
    let mut problems = Vec::new();
    if existing
        .subnets
        .iter()
        .any(|s| s.metadata.name.as_deref() == Some(name))
    {
        problems.push(format!("subnet {name} already exists"));
    }
    if let Err(e) = validate::subnet_create(subnet, existing) {
        problems.extend(field_errors_to_problems(&e, subnet_flag_of));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidManifest { problems })
    }
}

/// A namespace name: a DNS-1123 label (`hybridnet_api::names::dns_label`).
pub fn validate_namespace(ns: &str) -> Result<(), String> {
    names::dns_label(ns).map_err(|e| format!("namespace {ns:?} is invalid: {e}"))
}

/// Metadata names: DNS-1123 subdomains (`hybridnet_api::names::dns_subdomain`).
pub fn validate_object_name(kind: &str, name: &str) -> Result<(), String> {
    names::dns_subdomain(name).map_err(|e| format!("{kind} name {name:?} is invalid: {e}"))
}

fn mode_of(flag: ModeFlag) -> NetworkMode {
    match flag {
        ModeFlag::Vxlan => NetworkMode::Vxlan,
        ModeFlag::Vlan => NetworkMode::Vlan,
        ModeFlag::Bgp => NetworkMode::Bgp,
        ModeFlag::GlobalBgp => NetworkMode::GlobalBgp,
    }
}

/// The mode the flags ask for: `--mode`, or inferred from the mode-specific flags.
pub fn network_mode(args: &NetworkCreateArgs) -> Result<NetworkMode, InvalidManifest> {
    if let Some(m) = args.mode {
        return Ok(mode_of(m));
    }
    let mut hinted = Vec::new();
    if args.vni.is_some() {
        hinted.push(NetworkMode::Vxlan);
    }
    if args.vlan_id.is_some() {
        hinted.push(NetworkMode::Vlan);
    }
    if args.asn.is_some() || !args.peer.is_empty() {
        hinted.push(NetworkMode::Bgp);
    }
    match hinted.as_slice() {
        [m] => Ok(*m),
        [] => Err(InvalidManifest::one(
            "choose a mode: --vni N (VXLAN overlay), --vlan-id N with --node-selector (VLAN underlay), --asn N with --peer (BGP underlay), or --mode",
        )),
        _ => Err(InvalidManifest::one(format!(
            "the flags ask for several modes ({}): give the flags of one mode, or --mode",
            hinted
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Builds the Network of `network create`, or says every flag that is wrong.
pub fn build_network(args: &NetworkCreateArgs) -> Result<Network, InvalidManifest> {
    let mut problems = Vec::new();
    if let Err(e) = validate_object_name("network", &args.name) {
        problems.push(e);
    }
    let mode = network_mode(args)?;
    let ty = mode.required_type();
    let selector = match parse_node_selector(&args.node_selector) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            Default::default()
        }
    };
    let forbid = |present: bool, flag: &str, problems: &mut Vec<String>| {
        if present {
            problems.push(format!("{flag} does not apply to a {mode} network"));
        }
    };
    let mut net_id = None;
    let mut peers = Vec::new();
    match mode {
        NetworkMode::Vxlan => {
            forbid(args.vlan_id.is_some(), "--vlan-id", &mut problems);
            forbid(
                !args.node_selector.is_empty(),
                "--node-selector (overlay networks span every node)",
                &mut problems,
            );
            forbid(args.asn.is_some(), "--asn", &mut problems);
            forbid(!args.peer.is_empty(), "--peer", &mut problems);
            match args.vni {
                None => problems.push("--vni (spec.netID) is required for a VXLAN network".into()),
                Some(v) if !within(v, &values::VNI) => problems.push(format!(
                    "--vni (spec.netID): {v} is outside 1..{}",
                    values::MAX_VNI
                )),
                Some(v) => net_id = i32::try_from(v).ok(),
            }
        }
        NetworkMode::Vlan => {
            forbid(args.vni.is_some(), "--vni", &mut problems);
            forbid(args.asn.is_some(), "--asn", &mut problems);
            forbid(!args.peer.is_empty(), "--peer", &mut problems);
            if args.node_selector.is_empty() {
                problems.push(
                    "--node-selector (spec.nodeSelector) is required for an underlay network: KEY=VALUE of its nodes".into(),
                );
            }
            match args.vlan_id {
                None => {}
                Some(v) if !(0..=4094).contains(&v) => problems.push(format!(
                    "--vlan-id (spec.netID): {v} is outside 0..4094 (0 = untagged)"
                )),
                Some(v) => net_id = i32::try_from(v).ok(),
            }
        }
        NetworkMode::Bgp => {
            forbid(args.vni.is_some(), "--vni", &mut problems);
            forbid(args.vlan_id.is_some(), "--vlan-id", &mut problems);
            if args.node_selector.is_empty() {
                problems.push(
                    "--node-selector (spec.nodeSelector) is required for an underlay network: KEY=VALUE of its nodes".into(),
                );
            }
            match args.asn.as_deref() {
                None => problems.push(
                    "--asn (spec.netID, the local AS number) is required for a BGP network".into(),
                ),
                Some(a) => match parse_asn(a) {
                    Ok(n) => net_id = Some(n),
                    Err(e) => problems.push(format!("--asn (spec.netID): {e}")),
                },
            }
            if args.peer.is_empty() {
                problems.push("--peer (spec.config.bgpPeers) is required at least once for a BGP network: ASN@ADDRESS".into());
            }
            for raw in &args.peer {
                match parse_peer(raw) {
                    Ok(p) => {
                        if peers
                            .iter()
                            .any(|q: &hybridnet_api::v1::BgpPeer| q.address == p.address)
                        {
                            problems.push(format!("--peer: address {} is given twice", p.address));
                        }
                        peers.push(p)
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        NetworkMode::GlobalBgp => {
            forbid(args.vni.is_some(), "--vni", &mut problems);
            forbid(args.vlan_id.is_some(), "--vlan-id", &mut problems);
            forbid(
                !args.node_selector.is_empty(),
                "--node-selector",
                &mut problems,
            );
            forbid(args.asn.is_some(), "--asn", &mut problems);
            forbid(!args.peer.is_empty(), "--peer", &mut problems);
        }
    }
    if !problems.is_empty() {
        return Err(InvalidManifest { problems });
    }
    let spec = NetworkSpec {
        node_selector: (ty == NetworkType::Underlay).then_some(selector),
        net_id,
        network_type: Some(ty),
        mode: Some(mode),
        config: (!peers.is_empty()).then_some(NetworkConfig {
            bgp_peers: Some(peers),
        }),
    };
    let mut n = Network::new(&args.name, spec);
    n.metadata = ObjectMeta {
        name: Some(args.name.clone()),
        ..Default::default()
    };
    validate::network_spec(&n).map_err(|e| InvalidManifest {
        problems: field_errors_to_problems(&e, |f| network_flag_of(f, mode)),
    })?;
    Ok(n)
}

/// Builds the Subnet of `subnet create` and checks its range with the shared rules. The checks
/// against the parent network need it: [`check_subnet_against_network`].
pub fn build_subnet(args: &SubnetCreateArgs) -> Result<(Subnet, ParsedRange), InvalidManifest> {
    let mut problems = Vec::new();
    if let Err(e) = validate_object_name("subnet", &args.name) {
        problems.push(e);
    }
    if let Err(e) = validate_object_name("network", &args.network) {
        problems.push(format!("--network: {e}"));
    }
    let cidr = match Cidr::parse_any(&args.cidr) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("--cidr (spec.range.cidr): {e}"));
            None
        }
    };
    let reserved = parse_ip_list("--reserved", &args.reserved).unwrap_or_else(|e| {
        problems.push(e);
        Vec::new()
    });
    let exclude = parse_ip_list("--exclude", &args.exclude).unwrap_or_else(|e| {
        problems.push(e);
        Vec::new()
    });
    let net_id = match args.vlan_id {
        Some(v) if !(0..=4094).contains(&v) => {
            problems.push(format!(
                "--vlan-id (spec.netID): {v} is outside 0..4094 (0 = untagged)"
            ));
            None
        }
        v => v.and_then(|v| i32::try_from(v).ok()),
    };
    let Some(cidr) = cidr else {
        return Err(InvalidManifest { problems });
    };
    let range = AddressRange {
        version: cidr.version,
        cidr: args.cidr.clone(),
        start: args.start.clone(),
        end: args.end.clone(),
        gateway: args.gateway.clone(),
        reserved_ips: (!reserved.is_empty()).then_some(reserved),
        exclude_ips: (!exclude.is_empty()).then_some(exclude),
    };
    let parsed = match parse_address_range(&range, "spec.range") {
        Ok(p) => Some(p),
        Err(errs) => {
            problems.extend(field_errors_to_problems(&errs, subnet_flag_of));
            None
        }
    };
    if let Some(p) = &parsed
        && p.allocatable_count() == 0
    {
        problems.push(format!(
            "--cidr/--start/--end: the subnet {} would have no allocatable address",
            args.cidr
        ));
    }
    let (Some(parsed), true) = (parsed, problems.is_empty()) else {
        return Err(InvalidManifest { problems });
    };
    let config = (args.private || args.no_nat).then(|| SubnetConfig {
        private: args.private.then_some(true),
        auto_nat_outgoing: args.no_nat.then_some(false),
        ..Default::default()
    });
    let spec = SubnetSpec {
        network: args.network.clone(),
        net_id,
        range,
        config,
    };
    let mut s = Subnet::new(&args.name, spec);
    s.metadata = ObjectMeta {
        name: Some(args.name.clone()),
        ..Default::default()
    };
    Ok((s, parsed))
}

/// Builds the HybridnetCluster `default` of `install`. Values are checked with the operator's
/// own rules (`hybridnet_api::operator::values`), so the plugin writes no spec the operator refuses.
pub fn build_cluster(args: &InstallArgs) -> Result<HybridnetCluster, InvalidManifest> {
    let mut problems = Vec::new();
    if let Some(v) = &args.hybridnet_version
        && !values::is_release_version(v.strip_prefix('v').unwrap_or(v))
    {
        let v = v.strip_prefix('v').unwrap_or(v);
        problems.push(format!(
            "--hybridnet-version {v:?} (spec.version): expected MAJOR.MINOR.PATCH, e.g. 0.1.0 (a -PRERELEASE of letters, digits, '.' and '-' may follow)"
        ));
    }
    if let Some(r) = &args.registry
        && !values::is_image_prefix(r)
    {
        problems.push(format!(
            "--registry {r:?} (spec.registry): expected a registry and repository prefix such as docker.io/hybridnet (ASCII letters, digits, '.', '-', '_', ':' and '/')"
        ));
    }
    let bootstrap = match &args.bootstrap_cidr {
        None => None,
        Some(c) => match Cidr::parse_canonical(c) {
            Err(e) => {
                problems.push(format!("--bootstrap-cidr (spec.bootstrap.cidr): {e}"));
                None
            }
            Ok(cidr) if cidr.prefix + 2 > cidr.version.bits() => {
                problems.push(format!(
                    "--bootstrap-cidr (spec.bootstrap.cidr): {c} is too small"
                ));
                None
            }
            Ok(cidr) => Some(BootstrapNetwork {
                name: args.bootstrap_name.clone(),
                vxlan_id: args.bootstrap_vni.and_then(|v| i32::try_from(v).ok()),
                cidr: c.clone(),
                ip_version: Some(cidr.version),
            }),
        },
    };
    if let Some(n) = &args.bootstrap_name
        && let Err(e) = validate_object_name("bootstrap network", n)
    {
        problems.push(format!("--bootstrap-name: {e}"));
    }
    if let Some(v) = args.bootstrap_vni
        && !within(v, &values::VNI)
    {
        problems.push(format!(
            "--bootstrap-vni (spec.bootstrap.vxlanID): {v} is outside 1..{}",
            values::MAX_VNI
        ));
    }
    if let Some(p) = args.vxlan_port
        && !within(p, &values::PORT)
    {
        problems.push(format!(
            "--vxlan-port (spec.nodeAgent.vxlanUDPPort): {p} is outside 1..{}",
            values::MAX_PORT
        ));
    }
    if let Some(m) = args.mtu
        && !within(m, &values::MTU)
    {
        problems.push(format!(
            "--mtu (spec.cni.mtu): {m} is outside {}..{}",
            values::MIN_MTU,
            values::MAX_MTU
        ));
    }
    if !problems.is_empty() {
        return Err(InvalidManifest { problems });
    }
    let defaults = ClusterDefaults {
        network_type: args.default_network_type.map(|t| match t {
            NetworkTypeFlag::Overlay => NetworkType::Overlay,
            NetworkTypeFlag::Underlay => NetworkType::Underlay,
            NetworkTypeFlag::GlobalBgp => NetworkType::GlobalBgp,
        }),
        ip_family: args.default_ip_family.map(|f| match f {
            IpFamilyFlag::Ipv4 => IpFamily::IPv4,
            IpFamilyFlag::Ipv6 => IpFamily::IPv6,
            IpFamilyFlag::DualStack => IpFamily::DualStack,
        }),
        ..Default::default()
    };
    let spec = HybridnetClusterSpec {
        version: args
            .hybridnet_version
            .as_ref()
            .map(|v| v.strip_prefix('v').unwrap_or(v).to_string()),
        registry: args.registry.clone(),
        image_pull_policy: args.image_pull_policy.map(|p| match p {
            PullPolicyFlag::Always => ImagePullPolicy::Always,
            PullPolicyFlag::IfNotPresent => ImagePullPolicy::IfNotPresent,
            PullPolicyFlag::Never => ImagePullPolicy::Never,
        }),
        defaults: (defaults != ClusterDefaults::default()).then_some(defaults),
        node_agent: args.vxlan_port.map(|p| NodeAgentSpec {
            vxlan_udp_port: i32::try_from(p).ok(),
            ..Default::default()
        }),
        cni: args.mtu.map(|m| CniSpec {
            mtu: i32::try_from(m).ok(),
            ..Default::default()
        }),
        webhook: args.webhook_failure_policy.map(|f| WebhookSpec {
            failure_policy: Some(match f {
                FailurePolicyFlag::Ignore => FailurePolicy::Ignore,
                FailurePolicyFlag::Fail => FailurePolicy::Fail,
            }),
            ..Default::default()
        }),
        bootstrap,
        ..Default::default()
    };
    let mut c = HybridnetCluster::new(CLUSTER_SINGLETON_NAME, spec);
    c.metadata = ObjectMeta {
        name: Some(CLUSTER_SINGLETON_NAME.to_string()),
        ..Default::default()
    };
    Ok(c)
}

/// A manifest for a GitOps repository: only apiVersion, kind, metadata.name and spec.
pub fn manifest_value<K: serde::Serialize>(
    obj: &K,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut v = serde_json::to_value(obj)?;
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.retain(|k, _| {
                k == "name" || k == "namespace" || k == "labels" || k == "annotations"
            });
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::DryRun;
    use proptest::prelude::*;

    fn net_args(name: &str) -> NetworkCreateArgs {
        NetworkCreateArgs {
            name: name.into(),
            mode: None,
            vni: None,
            vlan_id: None,
            node_selector: vec![],
            asn: None,
            peer: vec![],
            dry_run: DryRun::None,
            output: None,
        }
    }

    fn sub_args(cidr: &str) -> SubnetCreateArgs {
        SubnetCreateArgs {
            name: "s1".into(),
            network: "n1".into(),
            cidr: cidr.into(),
            gateway: None,
            start: None,
            end: None,
            reserved: vec![],
            exclude: vec![],
            private: false,
            no_nat: false,
            vlan_id: None,
            dry_run: DryRun::None,
            output: None,
        }
    }

    #[test]
    fn overlay_network() {
        let n = build_network(&NetworkCreateArgs {
            vni: Some(4),
            ..net_args("overlay")
        })
        .unwrap();
        assert_eq!(n.spec.effective_mode(), NetworkMode::Vxlan);
        assert_eq!(n.spec.network_type, Some(NetworkType::Overlay));
        assert_eq!(n.spec.net_id, Some(4));
        assert_eq!(n.spec.node_selector, None);
    }

    #[test]
    fn vlan_and_bgp_networks() {
        let n = build_network(&NetworkCreateArgs {
            vlan_id: Some(0),
            node_selector: vec!["rack=a".into()],
            ..net_args("vlan0")
        })
        .unwrap();
        assert_eq!(n.spec.effective_mode(), NetworkMode::Vlan);
        assert_eq!(n.spec.net_id, Some(0));
        assert_eq!(n.spec.node_selector.as_ref().unwrap()["rack"], "a");

        let n = build_network(&NetworkCreateArgs {
            asn: Some("65010".into()),
            peer: vec!["65000@192.0.2.1,password=s3cret".into()],
            node_selector: vec!["bgp=yes".into()],
            ..net_args("bgp")
        })
        .unwrap();
        assert_eq!(n.spec.effective_mode(), NetworkMode::Bgp);
        assert_eq!(n.spec.net_id, Some(65010));
        assert_eq!(n.spec.bgp_peers()[0].password.as_deref(), Some("s3cret"));

        let n = build_network(&NetworkCreateArgs {
            mode: Some(ModeFlag::GlobalBgp),
            ..net_args("g")
        })
        .unwrap();
        assert_eq!(n.spec.network_type, Some(NetworkType::GlobalBgp));
        assert_eq!(n.spec.net_id, None);
    }

    #[test]
    fn bad_networks_name_the_flags() {
        let cases: Vec<(NetworkCreateArgs, &str)> = vec![
            (net_args("x"), "choose a mode"),
            (
                NetworkCreateArgs {
                    vni: Some(4),
                    vlan_id: Some(3),
                    ..net_args("x")
                },
                "several modes",
            ),
            (
                NetworkCreateArgs {
                    vni: Some(0),
                    ..net_args("x")
                },
                "--vni (spec.netID): 0 is outside",
            ),
            (
                NetworkCreateArgs {
                    vni: Some(1 << 24),
                    ..net_args("x")
                },
                "outside 1..16777215",
            ),
            (
                NetworkCreateArgs {
                    mode: Some(ModeFlag::Vxlan),
                    ..net_args("x")
                },
                "--vni (spec.netID) is required",
            ),
            (
                NetworkCreateArgs {
                    vlan_id: Some(4095),
                    node_selector: vec!["a=b".into()],
                    ..net_args("x")
                },
                "0..4094",
            ),
            (
                NetworkCreateArgs {
                    vlan_id: Some(5),
                    ..net_args("x")
                },
                "--node-selector (spec.nodeSelector) is required",
            ),
            (
                NetworkCreateArgs {
                    vni: Some(4),
                    node_selector: vec!["a=b".into()],
                    ..net_args("x")
                },
                "--node-selector (overlay networks span every node) does not apply",
            ),
            (
                NetworkCreateArgs {
                    asn: Some("65000".into()),
                    node_selector: vec!["a=b".into()],
                    ..net_args("x")
                },
                "--peer (spec.config.bgpPeers) is required",
            ),
            (
                NetworkCreateArgs {
                    peer: vec!["65000@1.2.3.4".into()],
                    node_selector: vec!["a=b".into()],
                    ..net_args("x")
                },
                "--asn (spec.netID, the local AS number) is required",
            ),
            (
                NetworkCreateArgs {
                    asn: Some("1".into()),
                    peer: vec!["65000@1.2.3.999".into()],
                    node_selector: vec!["a=b".into()],
                    ..net_args("x")
                },
                "peer address",
            ),
            (
                NetworkCreateArgs {
                    asn: Some("1".into()),
                    peer: vec!["65000@1.2.3.4".into(), "65001@1.2.3.4".into()],
                    node_selector: vec!["a=b".into()],
                    ..net_args("x")
                },
                "given twice",
            ),
            (
                NetworkCreateArgs {
                    vni: Some(4),
                    ..net_args("Bad_Name")
                },
                "network name \"Bad_Name\" is invalid",
            ),
        ];
        for (args, want) in cases {
            let e = build_network(&args).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn subnet_defaults_and_config() {
        let (s, p) = build_subnet(&SubnetCreateArgs {
            gateway: Some("10.14.0.1".into()),
            reserved: vec!["10.14.0.10,10.14.0.11".into()],
            exclude: vec!["10.14.0.12".into()],
            no_nat: true,
            private: true,
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        // 254 hosts - gateway - 1 excluded - 2 reserved
        assert_eq!(p.allocatable_count(), 250);
        let cfg = s.spec.config.unwrap();
        assert_eq!(cfg.auto_nat_outgoing, Some(false));
        assert_eq!(cfg.private, Some(true));
        assert_eq!(s.spec.range.reserved_ips.unwrap().len(), 2);
    }

    #[test]
    fn bad_subnets_name_the_flags() {
        for (args, want) in [
            (sub_args("10.14.0.0/33"), "--cidr (spec.range.cidr)"),
            (sub_args("10.14.0.1/24"), "not canonical"),
            (sub_args("10.14.0.0/31"), "too small"),
            (sub_args("banana"), "--cidr (spec.range.cidr)"),
            (
                SubnetCreateArgs {
                    gateway: Some("10.15.0.1".into()),
                    ..sub_args("10.14.0.0/24")
                },
                "--gateway (spec.range.gateway): 10.15.0.1 is outside 10.14.0.0/24",
            ),
            (
                SubnetCreateArgs {
                    gateway: Some("fd00::1".into()),
                    ..sub_args("10.14.0.0/24")
                },
                "--gateway (spec.range.gateway)",
            ),
            (
                SubnetCreateArgs {
                    start: Some("10.14.0.200".into()),
                    end: Some("10.14.0.100".into()),
                    ..sub_args("10.14.0.0/24")
                },
                "--start (spec.range.start)",
            ),
            (
                SubnetCreateArgs {
                    reserved: vec!["10.14.1.1".into()],
                    ..sub_args("10.14.0.0/24")
                },
                "--reserved (spec.range.reservedIPs[0])",
            ),
            (
                SubnetCreateArgs {
                    exclude: vec!["nope".into()],
                    ..sub_args("10.14.0.0/24")
                },
                "--exclude \"nope\"",
            ),
            (
                SubnetCreateArgs {
                    vlan_id: Some(-1),
                    ..sub_args("10.14.0.0/24")
                },
                "--vlan-id (spec.netID): -1",
            ),
            (sub_args("10.0.0.0/8"), "more than the limit"),
            (
                SubnetCreateArgs {
                    start: Some("10.14.0.5".into()),
                    end: Some("10.14.0.5".into()),
                    exclude: vec!["10.14.0.5".into()],
                    ..sub_args("10.14.0.0/24")
                },
                "no allocatable address",
            ),
        ] {
            let e = build_subnet(&args).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    fn existing<'a>(networks: &'a [Network], subnets: &'a [Subnet]) -> Existing<'a> {
        Existing {
            networks,
            subnets,
            nodes: &[],
            ipinstances: &[],
        }
    }

    #[test]
    fn subnet_rules_by_network_mode() {
        let vlan = build_network(&NetworkCreateArgs {
            vlan_id: Some(100),
            node_selector: vec!["a=b".into()],
            ..net_args("n1")
        })
        .unwrap();
        let nets = [vlan];
        let (s, _) = build_subnet(&sub_args("10.14.0.0/24")).unwrap();
        let e = check_subnet_create(&s, &existing(&nets, &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--gateway (spec.range.gateway)"), "{e}");
        let (s, _) = build_subnet(&SubnetCreateArgs {
            gateway: Some("10.14.0.1".into()),
            vlan_id: Some(7),
            no_nat: true,
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        let e = check_subnet_create(&s, &existing(&nets, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--vlan-id (spec.netID): 7 differs from the VLAN id 100"),
            "{e}"
        );
        assert!(e.contains("--no-nat (spec.config.autoNatOutgoing)"), "{e}");
        let e = check_subnet_create(&s, &existing(&[], &[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--network (spec.network): network \"n1\" does not exist"),
            "{e}"
        );

        let overlay = [build_network(&NetworkCreateArgs {
            vni: Some(4),
            ..net_args("n1")
        })
        .unwrap()];
        let (s, _) = build_subnet(&SubnetCreateArgs {
            no_nat: true,
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        check_subnet_create(&s, &existing(&overlay, &[])).unwrap();
        let (s, _) = build_subnet(&SubnetCreateArgs {
            vlan_id: Some(3),
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        assert!(check_subnet_create(&s, &existing(&overlay, &[])).is_err());
    }

    #[test]
    fn subnet_conflicts() {
        let n1 = build_network(&NetworkCreateArgs {
            vni: Some(4),
            ..net_args("n1")
        })
        .unwrap();
        let n2 = build_network(&NetworkCreateArgs {
            vlan_id: Some(4),
            node_selector: vec!["a=b".into()],
            ..net_args("n2")
        })
        .unwrap();
        let nets = [n1, n2];
        let (a, _) = build_subnet(&SubnetCreateArgs {
            name: "a".into(),
            start: Some("10.14.0.10".into()),
            end: Some("10.14.0.100".into()),
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        let subs = [a];
        let (b, _) = build_subnet(&SubnetCreateArgs {
            name: "b".into(),
            start: Some("10.14.0.101".into()),
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        check_subnet_create(&b, &existing(&nets, &subs)).unwrap();
        let (b2, _) = build_subnet(&SubnetCreateArgs {
            name: "b".into(),
            network: "n2".into(),
            gateway: Some("10.14.0.1".into()),
            start: Some("10.14.0.101".into()),
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        assert!(check_subnet_create(&b2, &existing(&nets, &subs)).is_err());
        let (b3, _) = build_subnet(&SubnetCreateArgs {
            name: "b".into(),
            start: Some("10.14.0.50".into()),
            ..sub_args("10.14.0.0/24")
        })
        .unwrap();
        assert!(check_subnet_create(&b3, &existing(&nets, &subs)).is_err());
        let (b4, _) = build_subnet(&SubnetCreateArgs {
            name: "b".into(),
            ..sub_args("10.14.0.0/25")
        })
        .unwrap();
        assert!(check_subnet_create(&b4, &existing(&nets, &subs)).is_err());
        let (again, _) = build_subnet(&SubnetCreateArgs {
            name: "a".into(),
            ..sub_args("10.15.0.0/24")
        })
        .unwrap();
        let e = check_subnet_create(&again, &existing(&nets, &subs))
            .unwrap_err()
            .to_string();
        assert!(e.contains("subnet a already exists"), "{e}");
    }

    #[test]
    fn only_one_overlay_network() {
        let a = build_network(&NetworkCreateArgs {
            vni: Some(4),
            ..net_args("a")
        })
        .unwrap();
        let b = build_network(&NetworkCreateArgs {
            vni: Some(5),
            ..net_args("b")
        })
        .unwrap();
        let nets = [a];
        let e = check_network_create(&b, &existing(&nets, &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--mode (spec.type)"), "{e}");
    }

    #[test]
    fn two_routing_peers_need_no_route() {
        let e = build_network(&NetworkCreateArgs {
            asn: Some("65010".into()),
            peer: vec!["65000@192.0.2.1".into(), "65000@192.0.2.2".into()],
            node_selector: vec!["bgp=yes".into()],
            ..net_args("bgp")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--peer (spec.config.bgpPeers)"), "{e}");
        build_network(&NetworkCreateArgs {
            asn: Some("65010".into()),
            peer: vec!["65000@192.0.2.1".into(), "65000@192.0.2.2,no-route".into()],
            node_selector: vec!["bgp=yes".into()],
            ..net_args("bgp")
        })
        .unwrap();
    }

    #[test]
    fn names_that_go_into_request_paths() {
        for ok in ["default", "team-a", "a1"] {
            validate_namespace(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "A",
            "-a",
            "a-",
            &"a".repeat(64),
            "a.b",
            "a b",
            "a%2f",
        ] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
        for ok in ["web-0", "a.b", "overlay"] {
            validate_object_name("pod", ok).unwrap();
        }
        for bad in ["", "..", "../x", "a/b", "Bad_Pod", ".a", "a..b", "a?b"] {
            assert!(validate_object_name("pod", bad).is_err(), "{bad}");
        }
    }

    /// The flags go through the operator's own value rules (`hybridnet_api::operator::values`,
    /// tested there): what the plugin accepts, the operator accepts, and the other way round.
    #[test]
    fn install_flags_follow_the_operators_value_rules() {
        let with = |version: Option<&str>, registry: Option<&str>| {
            build_cluster(&InstallArgs {
                hybridnet_version: version.map(Into::into),
                registry: registry.map(Into::into),
                ..Default::default()
            })
        };
        for ok in ["0.1.0", "v0.2.3", "0.1.0-rc.1"] {
            assert!(with(Some(ok), None).is_ok(), "{ok}");
        }
        for bad in ["", "latest", "0.1", "0.1.0+build", "1234567890.0.0"] {
            assert!(with(Some(bad), None).is_err(), "{bad}");
        }
        // A trailing slash: the operator has always accepted it; the plugin used to refuse it.
        for ok in [
            "docker.io/hybridnet",
            "registry.example.com:5000/net/",
            "ghcr.io",
        ] {
            assert!(with(None, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "../x",
            "docker.io//x",
            "/x",
            "x/./y",
            "https://x",
            "a@sha256",
        ] {
            let e = with(None, Some(bad)).unwrap_err();
            assert!(e.problems[0].contains("--registry"), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn install_manifest() {
        let c = build_cluster(&InstallArgs {
            hybridnet_version: Some("v0.1.0".into()),
            bootstrap_cidr: Some("100.64.0.0/16".into()),
            default_network_type: Some(NetworkTypeFlag::Overlay),
            mtu: Some(1450),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.metadata.name.as_deref(), Some("default"));
        assert_eq!(c.spec.version.as_deref(), Some("0.1.0"));
        assert_eq!(c.spec.bootstrap.as_ref().unwrap().cidr, "100.64.0.0/16");
        let v = manifest_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "operator.hybridnet.io/v1alpha1");
        assert!(v.get("status").is_none());
        for (args, want) in [
            (
                InstallArgs {
                    hybridnet_version: Some("latest".into()),
                    ..Default::default()
                },
                "--hybridnet-version",
            ),
            (
                InstallArgs {
                    hybridnet_version: Some("0.1.0-ü".into()),
                    ..Default::default()
                },
                "--hybridnet-version",
            ),
            (
                InstallArgs {
                    hybridnet_version: Some("0.1.0-".into()),
                    ..Default::default()
                },
                "--hybridnet-version",
            ),
            (
                InstallArgs {
                    registry: Some("docker.io/ü".into()),
                    ..Default::default()
                },
                "--registry",
            ),
            (
                InstallArgs {
                    registry: Some("../x".into()),
                    ..Default::default()
                },
                "--registry",
            ),
            (
                InstallArgs {
                    registry: Some("docker.io//x".into()),
                    ..Default::default()
                },
                "--registry",
            ),
            (
                InstallArgs {
                    bootstrap_cidr: Some("100.64.0.1/16".into()),
                    ..Default::default()
                },
                "--bootstrap-cidr",
            ),
            (
                InstallArgs {
                    mtu: Some(100),
                    ..Default::default()
                },
                "--mtu",
            ),
            (
                InstallArgs {
                    vxlan_port: Some(70000),
                    ..Default::default()
                },
                "--vxlan-port",
            ),
            (
                InstallArgs {
                    bootstrap_cidr: Some("100.64.0.0/16".into()),
                    bootstrap_vni: Some(0),
                    ..Default::default()
                },
                "--bootstrap-vni",
            ),
        ] {
            let e = build_cluster(&args).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    proptest! {
        #[test]
        fn subnet_building_never_panics(cidr in ".{0,24}", gw in proptest::option::of(".{0,16}"), start in proptest::option::of("10\\.1\\.[0-9]{1,3}\\.[0-9]{1,3}")) {
            let _ = build_subnet(&SubnetCreateArgs { gateway: gw, start, ..sub_args(&cidr) });
        }

        #[test]
        fn valid_subnets_keep_their_gateway_out_of_the_pool(third in 0u8..=255, prefix in 16u8..=29, host in 1u32..=4) {
            let net = u32::from(std::net::Ipv4Addr::new(10, 77, third, 0)) & (u32::MAX << (32 - prefix));
            let cidr = format!("{}/{prefix}", std::net::Ipv4Addr::from(net));
            let gw = std::net::Ipv4Addr::from(net + host).to_string();
            let (_, p) = build_subnet(&SubnetCreateArgs { gateway: Some(gw.clone()), ..sub_args(&cidr) }).unwrap();
            prop_assert!(!p.contains_ip(gw.parse().unwrap()));
            prop_assert_eq!(p.allocatable_count(), (1u128 << (32 - prefix)) - 3);
        }

        #[test]
        fn network_building_never_panics(vni in proptest::option::of(any::<i64>()), vlan in proptest::option::of(any::<i64>()), asn in proptest::option::of(".{0,12}"), peer in proptest::collection::vec(".{0,30}", 0..3), sel in proptest::collection::vec(".{0,20}", 0..3)) {
            let _ = build_network(&NetworkCreateArgs { vni, vlan_id: vlan, asn, peer, node_selector: sel, ..net_args("n") });
        }
    }
}

//! The nftables part of the plan (behaviour spec 5.9, translated from iptables/ipset to one
//! `table inet hybridnet`).
//!
//! The whole table is replaced in one `nft -f` transaction (`table` + `delete table` + definition):
//! the kernel commits it atomically, so packets see either the old or the new ruleset, and NAT
//! bindings of established connections live in conntrack, not in the table, so they survive.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use hybridnet_api::v1::{IpVersion, NetworkMode, NetworkType};

use super::build::SubnetView;
use super::model::{DataPlanePlan, NftPlan};

/// The nftables table hybridnet owns (family `inet`).
pub const TABLE: &str = "hybridnet";

/// Firewall mark for pod -> node reply traffic (rule overlay-mark).
pub const MARK_POD_TO_NODE: u32 = 0x20;
/// Firewall mark for replies of full-NATed connections (skip the per-subnet rules).
pub const MARK_FULL_NAT: u32 = 0x40;
/// kube-proxy's masquerade mark.
pub const MARK_KUBE_MASQ: u32 = 0x4000;

fn suffix(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "4",
        IpVersion::V6 => "6",
    }
}

fn ipkw(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "ip",
        IpVersion::V6 => "ip6",
    }
}

fn quote(name: &str) -> String {
    // Interface names come from the host and API (VLAN parents); nft strings cannot hold quotes.
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    format!("\"{clean}\"")
}

/// Renders the sets and the transaction script.
pub fn render(plan: &DataPlanePlan, subnets: &[SubnetView], families: &[IpVersion]) -> NftPlan {
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for &v in families {
        let s = suffix(v);
        let of = |ips: &mut dyn Iterator<Item = IpAddr>| -> BTreeSet<String> {
            ips.filter(|ip| IpVersion::of(ip) == v)
                .map(|ip| ip.to_string())
                .collect()
        };
        let nets = |pred: &dyn Fn(&SubnetView) -> bool| -> BTreeSet<String> {
            subnets
                .iter()
                .filter(|x| x.cidr.version == v && pred(x))
                .map(|x| x.cidr.to_string())
                .collect()
        };
        sets.insert(
            format!("overlay_net{s}"),
            nets(&|x| x.network_type == NetworkType::Overlay),
        );
        sets.insert(
            format!("nat_net{s}"),
            nets(&|x| x.mode == NetworkMode::Vxlan && x.auto_nat),
        );
        let mut all = nets(&|_| true);
        all.extend(of(&mut plan.cluster_node_ips.iter().copied()));
        sets.insert(format!("all_net{s}"), all);
        sets.insert(
            format!("node_ip{s}"),
            of(&mut plan.cluster_node_ips.iter().copied()),
        );
        sets.insert(
            format!("local_node_ip{s}"),
            of(&mut plan.node_local_ips.iter().copied()),
        );
        sets.insert(
            format!("local_pod_ip{s}"),
            of(&mut plan
                .local_pods
                .iter()
                .filter(|(_, p)| !p.terminating)
                .map(|(ip, _)| *ip)),
        );
        sets.insert(
            format!("local_underlay_net{s}"),
            nets(&|x| x.network_type != NetworkType::Overlay && x.on_node),
        );
        sets.insert(
            format!("local_subnet{s}"),
            plan.subnet_tables
                .keys()
                .filter(|c| c.version == v)
                .map(|c| c.to_string())
                .collect(),
        );
    }

    let mut out = String::new();
    // Create-then-delete makes the script valid whether or not the table exists.
    let _ = writeln!(out, "table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for (name, elems) in &sets {
        let v6 = name.ends_with('6');
        let ty = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        let interval = name.contains("net") || name.contains("subnet");
        let _ = write!(out, "\tset {name} {{ type {ty};");
        if interval {
            let _ = write!(out, " flags interval; auto-merge;");
        }
        if !elems.is_empty() {
            let list: Vec<&str> = elems.iter().map(String::as_str).collect();
            let _ = write!(out, " elements = {{ {} }}", list.join(", "));
        }
        let _ = writeln!(out, " }}");
    }
    let vx = plan.vxlan.as_ref().map(|v| quote(&v.name));

    // NAT: masquerade autoNatOutgoing overlay traffic that leaves through anything but the VXLAN
    // device, never traffic to local pods (remote pod -> local pod keeps its source).
    let _ = writeln!(out, "\tchain nat_postrouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(out, "\t\toifname \"hybr*\" return");
    let _ = writeln!(out, "\t\toifname \"h_*\" return");
    if let Some(vx) = &vx {
        for &v in families {
            let _ = writeln!(
                out,
                "\t\toifname != {vx} {} saddr @nat_net{} masquerade",
                ipkw(v),
                suffix(v)
            );
        }
    }
    let _ = writeln!(out, "\t}}");

    // Filter: new VXLAN-bound connections to non-cluster destinations are rejected; underlay
    // traffic that would loop back out of the interface it came in on is dropped.
    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    if let Some(vx) = &vx {
        for &v in families {
            let reject = match v {
                IpVersion::V4 => "icmp type host-unreachable",
                IpVersion::V6 => "icmpv6 type addr-unreachable",
            };
            let _ = writeln!(
                out,
                "\t\toifname {vx} {} daddr != @all_net{} ct state != {{ established, related }} reject with {reject}",
                ipkw(v),
                suffix(v)
            );
        }
    }
    if !plan.underlay_interfaces.is_empty() {
        let ifs: Vec<String> = plan.underlay_interfaces.iter().map(|i| quote(i)).collect();
        for &v in families {
            let (k, s) = (ipkw(v), suffix(v));
            let _ = writeln!(
                out,
                "\t\tiifname {{ {} }} meta mark & {MARK_KUBE_MASQ:#x} != {MARK_KUBE_MASQ:#x} {k} daddr != @local_pod_ip{s} {k} daddr @local_underlay_net{s} drop",
                ifs.join(", ")
            );
        }
    }
    let _ = writeln!(out, "\t}}");

    // Mangle: mark pod -> node replies so they return through the VXLAN device (rule overlay-mark),
    // and replies of full-NATed connections so they skip the per-subnet rules.
    let pod_to_node = |v: IpVersion| {
        let (k, s) = (ipkw(v), suffix(v));
        format!(
            "fib daddr type != local {k} saddr @overlay_net{s} {k} daddr @node_ip{s} ct state established,related ct status & (snat | dnat) == 0"
        )
    };
    let _ = writeln!(out, "\tchain mangle_prerouting {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook prerouting priority mangle; policy accept;"
    );
    if vx.is_some() {
        for &v in families {
            let _ = writeln!(out, "\t\t{} jump pod_to_node_mark", pod_to_node(v));
        }
    }
    let _ = writeln!(out, "\t\tct status snat jump from_rule_skip");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain pod_to_node_mark {{");
    for &v in families {
        // externalTrafficPolicy=Local DNAT traffic to this node must not be marked.
        let _ = writeln!(
            out,
            "\t\tct original {} daddr @local_node_ip{} return",
            ipkw(v),
            suffix(v)
        );
    }
    let _ = writeln!(out, "\t\tmeta mark set meta mark | {MARK_POD_TO_NODE:#x}");
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain from_rule_skip {{");
    for &v in families {
        let _ = writeln!(
            out,
            "\t\tct status dnat ct reply {} saddr @local_subnet{} meta mark set meta mark | {MARK_FULL_NAT:#x}",
            ipkw(v),
            suffix(v)
        );
    }
    let _ = writeln!(out, "\t}}");
    // The mark must not follow the packet into the VXLAN encapsulation (the outer packet would be
    // routed by rule overlay-mark again).
    let _ = writeln!(out, "\tchain mangle_postrouting {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook postrouting priority mangle; policy accept;"
    );
    if vx.is_some() {
        for &v in families {
            let _ = writeln!(
                out,
                "\t\t{} meta mark set meta mark & {:#x}",
                pod_to_node(v),
                !MARK_POD_TO_NODE
            );
        }
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    NftPlan { sets, script: out }
}

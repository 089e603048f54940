//! hybridnet's nftables ruleset (behaviour: docs/architecture.md, "The nftables model"; upstream
//! used iptables and ipset, here it is one `table inet hybridnet`), built as a [`Table`] value.
//!
//! The whole table is replaced in one `nft -f` transaction ([`Table::transaction`]): the kernel
//! commits it atomically, so packets see either the old or the new ruleset, and NAT bindings of
//! established connections live in conntrack, not in the table, so they survive.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hybridnet_api::v1::{IpVersion, NetworkMode, NetworkType};

use super::build::SubnetView;
use super::model::DataPlanePlan;
use super::nftables::{
    Chain, ChainType, CmpOp, CtState, CtStatus, Field, Hook, Key, MarkOp, Match, Policy, Reject,
    Rhs, Rule, Set, Stmt, Table, Value, Verdict, priority,
};

/// The nftables table hybridnet owns (family `inet`).
pub const TABLE: &str = "hybridnet";

/// Firewall mark for pod -> node reply traffic (rule overlay-mark).
pub const MARK_POD_TO_NODE: u32 = 0x20;
/// Firewall mark for replies of full-NATed connections (skip the per-subnet rules).
pub const MARK_FULL_NAT: u32 = 0x40;
/// kube-proxy's masquerade mark.
pub const MARK_KUBE_MASQ: u32 = 0x4000;

/// Chain names (base chains first, then the chains they jump to).
pub const NAT_POSTROUTING: &str = "nat_postrouting";
pub const FORWARD: &str = "forward";
pub const MANGLE_PREROUTING: &str = "mangle_prerouting";
pub const POD_TO_NODE_MARK: &str = "pod_to_node_mark";
pub const FROM_RULE_SKIP: &str = "from_rule_skip";
pub const MANGLE_POSTROUTING: &str = "mangle_postrouting";

fn suffix(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "4",
        IpVersion::V6 => "6",
    }
}

/// The name of a per-family set, e.g. `overlay_net4`.
pub fn set_name(base: &str, v: IpVersion) -> String {
    format!("{base}{}", suffix(v))
}

fn ifname(n: &str) -> Value {
    Value::IfName(n.to_string())
}

fn states(s: &[CtState]) -> BTreeSet<CtState> {
    s.iter().copied().collect()
}

/// The sets of one family: which addresses are overlay, NATed, cluster, node, local pod, local
/// underlay and local subnet addresses. Remote clusters' subnets and node addresses are in the
/// overlay (overlay ones), cluster and node sets, so traffic to them through the VXLAN device is
/// neither rejected nor masqueraded (docs/multicluster.md).
fn family_sets(t: &mut Table, plan: &DataPlanePlan, subnets: &[SubnetView], v: IpVersion) {
    let nets = |pred: &dyn Fn(&SubnetView) -> bool| -> BTreeSet<Key> {
        subnets
            .iter()
            .filter(|x| x.cidr.version == v && pred(x))
            .map(|x| Value::Prefix(x.cidr).into())
            .collect()
    };
    let addrs = |ips: &mut dyn Iterator<Item = IpAddr>| -> BTreeSet<Key> {
        ips.filter(|ip| IpVersion::of(ip) == v)
            .map(|ip| Value::Addr(ip).into())
            .collect()
    };
    // Other clusters' node addresses are node addresses too (upstream `RecordRemoteNodeIP`).
    let node_ips = addrs(
        &mut plan
            .cluster_node_ips
            .iter()
            .chain(plan.remote_node_ips.iter())
            .copied(),
    );
    let mut all = nets(&|_| true);
    all.extend(node_ips.iter().cloned());
    let local_subnets: BTreeSet<Key> = plan
        .subnet_tables
        .keys()
        .filter(|c| c.version == v)
        .map(|c| Value::Prefix(*c).into())
        .collect();
    let local_pods = addrs(
        &mut plan
            .local_pods
            .iter()
            .filter(|(_, p)| !p.terminating)
            .map(|(ip, _)| *ip),
    );
    let local_node_ips = addrs(&mut plan.node_local_ips.iter().copied());
    for (base, interval, elems) in [
        (
            "overlay_net",
            true,
            nets(&|x| x.network_type == NetworkType::Overlay),
        ),
        (
            "nat_net",
            true,
            nets(&|x| x.mode == NetworkMode::Vxlan && x.auto_nat && !x.remote),
        ),
        ("all_net", true, all),
        ("node_ip", false, node_ips),
        ("local_node_ip", false, local_node_ips),
        ("local_pod_ip", false, local_pods),
        (
            "local_underlay_net",
            true,
            nets(&|x| x.network_type != NetworkType::Overlay && x.on_node && !x.remote),
        ),
        ("local_subnet", true, local_subnets),
    ] {
        t.sets
            .insert(set_name(base, v), Set::addresses(v, interval).with(elems));
    }
}

/// `<ip> saddr @overlay_net <ip> daddr @node_ip ct state established,related ct status & (snat |
/// dnat) == 0 fib daddr type != local`: a reply of an overlay pod to another node's address on a
/// connection without NAT.
///
/// The kernel evaluates a rule's expressions in order and stops at the first that fails, so the
/// FIB lookup comes last: first, it cost every packet through prerouting and postrouting one
/// route lookup per rule (docs/benchmarks.md, "Lab: datapath"); last, only the packets of the
/// rule's few flows pay it.
fn pod_to_node_reply(v: IpVersion) -> Vec<Match> {
    vec![
        Match::in_set(Field::Saddr(v), set_name("overlay_net", v)),
        Match::in_set(Field::Daddr(v), set_name("node_ip", v)),
        Match::CtState {
            op: CmpOp::Eq,
            states: states(&[CtState::Established, CtState::Related]),
        },
        Match::CtStatus {
            op: CmpOp::Ne,
            bits: [CtStatus::Snat, CtStatus::Dnat].into_iter().collect(),
        },
        Match::FibDaddrLocal { op: CmpOp::Ne },
    ]
}

/// Builds the table for `plan`.
pub fn ruleset(plan: &DataPlanePlan, subnets: &[SubnetView], families: &[IpVersion]) -> Table {
    let mut t = Table::new(TABLE);
    for &v in families {
        family_sets(&mut t, plan, subnets, v);
    }
    let vx = plan.vxlan.as_ref().map(|v| ifname(&v.name));

    // NAT: masquerade autoNatOutgoing overlay traffic that leaves through anything but the VXLAN
    // device, never traffic to local pods (remote pod -> local pod keeps its source).
    let mut nat = Chain::base(
        NAT_POSTROUTING,
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    );
    for pod_if in ["hybr*", "h_*"] {
        nat.rules.push(
            Rule::new(vec![Match::eq(Field::OifName, Rhs::Value(ifname(pod_if)))])
                .verdict(Verdict::Return),
        );
    }
    if let Some(vx) = &vx {
        for &v in families {
            nat.rules.push(
                Rule::new(vec![
                    Match::ne(Field::OifName, Rhs::Value(vx.clone())),
                    Match::in_set(Field::Saddr(v), set_name("nat_net", v)),
                ])
                .stmt(Stmt::Masquerade)
                .comment(
                    "overlay pod with autoNatOutgoing leaving the cluster: source masqueraded",
                ),
            );
        }
    }

    // Filter: new VXLAN-bound connections to non-cluster destinations are rejected; underlay
    // traffic that would loop back out of the interface it came in on is dropped.
    let mut fwd = Chain::base(
        FORWARD,
        ChainType::Filter,
        Hook::Forward,
        priority::FILTER,
        Policy::Accept,
    );
    if let Some(vx) = &vx {
        for &v in families {
            let reject = match v {
                IpVersion::V4 => Reject::IcmpHostUnreachable,
                IpVersion::V6 => Reject::Icmpv6AddrUnreachable,
            };
            fwd.rules.push(
                Rule::new(vec![
                    Match::eq(Field::OifName, Rhs::Value(vx.clone())),
                    Match::not_in_set(Field::Daddr(v), set_name("all_net", v)),
                    Match::CtState {
                        op: CmpOp::Ne,
                        states: states(&[CtState::Established, CtState::Related]),
                    },
                ])
                .verdict(Verdict::Reject(reject))
                .comment(
                    "new connection through the VXLAN device to what is not a cluster address",
                ),
            );
        }
    }
    if !plan.underlay_interfaces.is_empty() {
        let ifs: Vec<Key> = plan
            .underlay_interfaces
            .iter()
            .map(|i| ifname(i).into())
            .collect();
        for &v in families {
            fwd.rules.push(
                Rule::new(vec![
                    Match::eq(Field::IifName, Rhs::Set(ifs.clone())),
                    Match::ne(
                        Field::Mark {
                            mask: Some(MARK_KUBE_MASQ),
                        },
                        Rhs::Value(Value::Mark(MARK_KUBE_MASQ)),
                    ),
                    Match::not_in_set(Field::Daddr(v), set_name("local_pod_ip", v)),
                    Match::in_set(Field::Daddr(v), set_name("local_underlay_net", v)),
                ])
                .verdict(Verdict::Drop)
                .comment("route loop guard: a local underlay address that is not a local pod"),
            );
        }
    }

    // Mangle: mark pod -> node replies so they return through the VXLAN device (rule overlay-mark),
    // and replies of full-NATed connections so they skip the per-subnet rules.
    let mut pre = Chain::base(
        MANGLE_PREROUTING,
        ChainType::Filter,
        Hook::Prerouting,
        priority::MANGLE,
        Policy::Accept,
    );
    if vx.is_some() {
        for &v in families {
            pre.rules.push(
                Rule::new(pod_to_node_reply(v)).verdict(Verdict::Jump(POD_TO_NODE_MARK.into())),
            );
        }
    }
    pre.rules.push(
        Rule::new(vec![Match::CtStatus {
            op: CmpOp::Eq,
            bits: [CtStatus::Snat].into_iter().collect(),
        }])
        .verdict(Verdict::Jump(FROM_RULE_SKIP.into())),
    );
    let mut mark = Chain::regular(POD_TO_NODE_MARK);
    for &v in families {
        // externalTrafficPolicy=Local DNAT traffic to this node must not be marked.
        mark.rules.push(
            Rule::new(vec![Match::in_set(
                Field::CtOriginalDaddr(v),
                set_name("local_node_ip", v),
            )])
            .verdict(Verdict::Return),
        );
    }
    mark.rules.push(
        Rule::new(vec![])
            .stmt(Stmt::Mark(MarkOp::Or(MARK_POD_TO_NODE)))
            .comment(
                "reply of an overlay pod to another node: back through VXLAN (overlay-mark table)",
            ),
    );
    let mut skip = Chain::regular(FROM_RULE_SKIP);
    for &v in families {
        skip.rules.push(
            Rule::new(vec![
                Match::CtStatus {
                    op: CmpOp::Eq,
                    bits: [CtStatus::Dnat].into_iter().collect(),
                },
                Match::in_set(Field::CtReplySaddr(v), set_name("local_subnet", v)),
            ])
            .stmt(Stmt::Mark(MarkOp::Or(MARK_FULL_NAT))),
        );
    }
    // The mark must not follow the packet into the VXLAN encapsulation (the outer packet would be
    // routed by rule overlay-mark again).
    let mut post = Chain::base(
        MANGLE_POSTROUTING,
        ChainType::Filter,
        Hook::Postrouting,
        priority::MANGLE,
        Policy::Accept,
    );
    if vx.is_some() {
        for &v in families {
            post.rules.push(
                Rule::new(pod_to_node_reply(v))
                    .stmt(Stmt::Mark(MarkOp::And(!MARK_POD_TO_NODE)))
                    .comment("pod -> node mark cleared before encapsulation"),
            );
        }
    }
    t.chains = vec![nat, fwd, pre, mark, skip, post];
    t
}

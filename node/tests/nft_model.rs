//! The nftables model against the real `nft`: every construct renders to a transaction the kernel
//! loads; `nft -j list` gives back the model's sets, maps, chains and rules; the kernel's listing
//! loads again unchanged; and the evaluator agrees with the kernel's rule counters on real packets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::*;
use hybridnet_api::ipmath::{Cidr, ip_to_u128};
use hybridnet_api::v1::IpVersion::{V4, V6};
use hybridnet_api::v1::{NetworkMode, NetworkType};
use hybridnet_node::plan::nftables::*;
use hybridnet_node::plan::{
    ApiState, HostAddress, HostInterface, HostRoute, HostState, MacAddr, PlanConfig, build_plan,
};
use serde_json::Value as Json;

/// Shares the objects as the watch caches do.
fn arcs<T>(v: Vec<T>) -> Vec<std::sync::Arc<T>> {
    v.into_iter().map(std::sync::Arc::new).collect()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse_canonical(s).unwrap()
}

fn load(ns: &Netns, script: &str) -> Result<String, String> {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), script).unwrap();
    ns.exec(&["nft", "-f", f.path().to_str().unwrap()])
}

/// Every construct of the model: address sets of both families (interval, plain), a concatenated
/// (proto . port) set, interface and address verdict maps, per-pod chains reached by vmap, jump
/// and goto, counters, marks, masquerade, every reject, comments, a hostile interface name.
fn everything() -> Table {
    let mut t = Table::new("hnmodel");
    t.sets.insert(
        "net4".into(),
        Set::addresses(V4, true).with([
            Value::Prefix(cidr("198.18.0.0/24")).into(),
            Value::Addr("198.19.0.9".parse::<IpAddr>().unwrap()).into(),
            Value::Addr("198.19.0.10".parse::<IpAddr>().unwrap()).into(),
        ]),
    );
    t.sets.insert(
        "net6".into(),
        Set::addresses(V6, true).with([Value::Prefix(cidr("fd00:19::/112")).into()]),
    );
    t.sets.insert(
        "pods4".into(),
        Set::addresses(V4, false).with([
            Value::Addr(ip("198.19.0.5")).into(),
            Value::Addr(ip("198.19.0.6")).into(),
        ]),
    );
    t.sets.insert("empty6".into(), Set::addresses(V6, false));
    t.sets.insert(
        "ports".into(),
        Set::of(vec![KeyType::InetProto, KeyType::InetService], false).with([
            Key(vec![Value::Proto(L4Proto::Tcp), Value::Port(80)]),
            Key(vec![Value::Proto(L4Proto::Udp), Value::Port(53)]),
            Key(vec![Value::Proto(L4Proto::Sctp), Value::Port(9)]),
        ]),
    );
    t.sets.insert(
        "port_ranges".into(),
        Set::of(vec![KeyType::InetProto, KeyType::InetService], true).with([
            Key(vec![
                Value::Proto(L4Proto::Tcp),
                Value::PortRange(8000, 8080),
            ]),
            Key(vec![Value::Proto(L4Proto::Udp), Value::Port(53)]),
        ]),
    );
    t.sets.insert(
        "uplinks".into(),
        Set::of(vec![KeyType::IfName], false).with([
            Value::IfName("eth0".into()).into(),
            Value::IfName("ev\"il".into()).into(),
        ]),
    );
    let mut by_if = Map::of(vec![KeyType::IfName], false);
    by_if.elements.insert(
        Value::IfName("hybr1".into()).into(),
        Verdict::Jump("pod_a".into()),
    );
    by_if.elements.insert(
        Value::IfName("hybr2".into()).into(),
        Verdict::Goto("pod_b".into()),
    );
    t.maps.insert("pod_by_if".into(), by_if);
    let mut by_addr = Map::of(vec![KeyType::Ipv4Addr], true);
    by_addr
        .elements
        .insert(Value::Prefix(cidr("203.0.113.0/24")).into(), Verdict::Drop);
    t.maps.insert("blocked4".into(), by_addr);

    let mut fwd = Chain::base(
        "fwd_main",
        ChainType::Filter,
        Hook::Forward,
        priority::FILTER,
        Policy::Accept,
    );
    fwd.rules
        .push(Rule::new(vec![]).vmap(Field::Daddr(V4), "blocked4"));
    fwd.rules.push(
        Rule::new(vec![])
            .vmap(Field::OifName, "pod_by_if")
            .comment("per-pod chains"),
    );
    fwd.rules.push(
        Rule::new(vec![
            Match::in_set(Field::IifName, "uplinks"),
            Match::ne(
                Field::Mark { mask: Some(0x4000) },
                Rhs::Value(Value::Mark(0x4000)),
            ),
            Match::not_in_set(Field::Daddr(V4), "pods4"),
            Match::in_set(Field::Daddr(V4), "net4"),
        ])
        .stmt(Stmt::Counter)
        .verdict(Verdict::Drop),
    );
    fwd.rules.push(
        Rule::new(vec![
            Match::eq(Field::OifName, Rhs::Value(Value::IfName("x.vxlan4".into()))),
            Match::not_in_set(Field::Daddr(V6), "net6"),
            Match::CtState {
                op: CmpOp::Ne,
                states: [CtState::Established, CtState::Related]
                    .into_iter()
                    .collect(),
            },
        ])
        .verdict(Verdict::Reject(Reject::Icmpv6AddrUnreachable)),
    );
    fwd.rules.push(
        Rule::new(vec![Match::eq(
            Field::IifName,
            Rhs::Set(vec![
                Value::IfName("a1".into()).into(),
                Value::IfName("a2".into()).into(),
            ]),
        )])
        .verdict(Verdict::Reject(Reject::IcmpHostUnreachable)),
    );
    let mut pod_a = Chain::regular("pod_a");
    pod_a.rules.push(
        Rule::new(vec![
            Match::in_set(Field::Saddr(V4), "net4"),
            Match::in_set(Field::Concat(vec![Field::L4Proto, Field::Dport]), "ports"),
        ])
        .stmt(Stmt::Counter)
        .verdict(Verdict::Accept)
        .comment("allow from net4 on listed ports"),
    );
    pod_a.rules.push(
        Rule::new(vec![
            Match::in_set(
                Field::Concat(vec![Field::L4Proto, Field::Dport]),
                "port_ranges",
            ),
            Match::ne(Field::Dport, Rhs::Value(Value::PortRange(8010, 8019))),
        ])
        .verdict(Verdict::Accept),
    );
    pod_a.rules.push(
        Rule::new(vec![Match::eq(
            Field::L4Proto,
            Rhs::Value(Value::Proto(L4Proto::Tcp)),
        )])
        .verdict(Verdict::Reject(Reject::TcpReset)),
    );
    pod_a.rules.push(
        Rule::new(vec![])
            .stmt(Stmt::Counter)
            .verdict(Verdict::Reject(Reject::IcmpxAdminProhibited))
            .comment("default deny"),
    );
    let mut pod_b = Chain::regular("pod_b");
    pod_b.rules.push(
        Rule::new(vec![Match::CtState {
            op: CmpOp::Eq,
            states: [CtState::Established, CtState::Related]
                .into_iter()
                .collect(),
        }])
        .verdict(Verdict::Accept),
    );
    pod_b
        .rules
        .push(Rule::new(vec![]).verdict(Verdict::Jump("pod_a".into())));
    let mut pre = Chain::base(
        "pre_mangle",
        ChainType::Filter,
        Hook::Prerouting,
        priority::MANGLE,
        Policy::Accept,
    );
    pre.rules.push(
        Rule::new(vec![
            Match::FibDaddrLocal { op: CmpOp::Ne },
            Match::CtStatus {
                op: CmpOp::Ne,
                bits: [CtStatus::Snat, CtStatus::Dnat].into_iter().collect(),
            },
            Match::in_set(Field::CtOriginalDaddr(V4), "pods4"),
        ])
        .stmt(Stmt::Mark(MarkOp::Or(0x20))),
    );
    pre.rules.push(
        Rule::new(vec![
            Match::CtStatus {
                op: CmpOp::Eq,
                bits: [CtStatus::Dnat].into_iter().collect(),
            },
            Match::in_set(Field::CtReplySaddr(V4), "net4"),
        ])
        .stmt(Stmt::Mark(MarkOp::Set(0x40))),
    );
    let mut nat = Chain::base(
        "post_nat",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    );
    nat.rules.push(
        Rule::new(vec![Match::eq(
            Field::OifName,
            Rhs::Value(Value::IfName("hybr*".into())),
        )])
        .verdict(Verdict::Return),
    );
    nat.rules.push(
        Rule::new(vec![Match::in_set(Field::Saddr(V4), "net4")])
            .stmt(Stmt::Mark(MarkOp::And(!0x20)))
            .stmt(Stmt::Masquerade),
    );
    t.chains = vec![fwd, pod_a, pod_b, pre, nat];
    t
}

/// hybridnet's own table for an overlay + VLAN node with local and remote pods.
fn hybridnet_table() -> Table {
    let api = ApiState {
        node_name: "n1".into(),
        node_addresses: vec![ip("198.18.0.11"), ip("fd00:18::11")],
        networks: vec![
            network(
                "overlay",
                NetworkType::Overlay,
                None,
                Some(4),
                &["n1", "n2"],
            ),
            network(
                "underlay",
                NetworkType::Underlay,
                Some(NetworkMode::Vlan),
                Some(0),
                &["n1", "n2"],
            ),
        ],
        subnets: vec![
            subnet("ov4", "overlay", "198.19.0.0/24", None, None, None),
            subnet("ov6", "overlay", "fd00:19::/112", None, None, None),
            subnet(
                "ul4",
                "underlay",
                "198.18.0.0/24",
                Some("198.18.0.1"),
                None,
                None,
            ),
        ],
        ip_instances: arcs(vec![
            ipinstance(
                "default",
                "a",
                "198.19.0.5",
                "overlay",
                "ov4",
                "n1",
                "02:aa:00:00:00:05",
            ),
            ipinstance(
                "default",
                "b",
                "198.18.0.100",
                "underlay",
                "ul4",
                "n1",
                "02:aa:00:00:00:64",
            ),
            ipinstance(
                "default",
                "c",
                "198.19.0.6",
                "overlay",
                "ov4",
                "n2",
                "02:aa:00:00:00:06",
            ),
        ]),
        node_infos: arcs(vec![
            nodeinfo(
                "n1",
                "198.18.0.11",
                "02:00:00:00:00:11",
                &["198.18.0.11", "fd00:18::11"],
            ),
            nodeinfo("n2", "198.18.0.12", "02:00:00:00:00:12", &["198.18.0.12"]),
        ]),
        ..Default::default()
    };
    let host = HostState {
        interfaces: vec![HostInterface {
            name: "eth0".into(),
            index: 2,
            mac: Some(MacAddr([2, 0, 0, 0, 0, 0x11])),
            mtu: 1500,
            up: true,
            addresses: vec![
                HostAddress {
                    ip: ip("198.18.0.11"),
                    prefix: 24,
                    noprefixroute: false,
                },
                HostAddress {
                    ip: ip("fd00:18::11"),
                    prefix: 64,
                    noprefixroute: false,
                },
            ],
        }],
        main_routes: vec![HostRoute {
            dst: cidr("0.0.0.0/0"),
            gateway: Some(ip("198.18.0.1")),
            dev: Some("eth0".into()),
            src: None,
        }],
        ipv6_enabled: true,
        ..Default::default()
    };
    let plan = build_plan(&api, &host, &PlanConfig::default());
    assert!(plan.vxlan.is_some(), "{:?}", plan.problems);
    plan.nft
}

/// Addresses covered by the elements of an interval set, as merged inclusive ranges.
fn coverage(ranges: impl IntoIterator<Item = (u128, u128)>) -> Vec<(u128, u128)> {
    let mut v: Vec<(u128, u128)> = ranges.into_iter().collect();
    v.sort();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn model_range(v: &hybridnet_node::plan::nftables::Value) -> (u128, u128) {
    match v {
        hybridnet_node::plan::nftables::Value::Addr(a) => (ip_to_u128(*a), ip_to_u128(*a)),
        hybridnet_node::plan::nftables::Value::Prefix(c) => (c.first(), c.last()),
        other => panic!("not an address: {other:?}"),
    }
}

fn json_range(e: &Json) -> (u128, u128) {
    let addr = |j: &Json| ip_to_u128(j.as_str().unwrap().parse().unwrap());
    if let Some(p) = e.get("prefix") {
        let c = Cidr::parse_any(&format!(
            "{}/{}",
            p["addr"].as_str().unwrap(),
            p["len"].as_u64().unwrap()
        ))
        .unwrap();
        (c.first(), c.last())
    } else if let Some(r) = e.get("range") {
        (addr(&r[0]), addr(&r[1]))
    } else {
        (addr(e), addr(e))
    }
}

/// A JSON element (or concatenation) as the model renders it.
fn json_key(e: &Json) -> String {
    match e {
        Json::String(s) if s.parse::<IpAddr>().is_ok() => s.clone(),
        Json::String(s) => {
            if ["tcp", "udp", "sctp"].contains(&s.as_str()) {
                s.clone()
            } else {
                format!("\"{s}\"")
            }
        }
        Json::Number(n) => n.to_string(),
        Json::Object(o) if o.contains_key("range") => {
            format!("{}-{}", json_key(&o["range"][0]), json_key(&o["range"][1]))
        }
        Json::Object(o) if o.contains_key("concat") => o["concat"]
            .as_array()
            .unwrap()
            .iter()
            .map(json_key)
            .collect::<Vec<_>>()
            .join(" . "),
        other => panic!("unexpected element {other}"),
    }
}

fn json_verdict(v: &Json) -> String {
    if let Some(j) = v.get("jump") {
        format!("jump {}", j["target"].as_str().unwrap())
    } else if let Some(g) = v.get("goto") {
        format!("goto {}", g["target"].as_str().unwrap())
    } else {
        v.as_object().unwrap().keys().next().unwrap().clone()
    }
}

/// Compares the kernel's JSON listing of the table with the model.
fn assert_listing_matches(t: &Table, listing: &Json) {
    let items = listing["nftables"].as_array().unwrap();
    let of = |kind: &str| -> Vec<&Json> {
        items
            .iter()
            .filter_map(|i| i.get(kind))
            .filter(|o| o["table"] == t.name.as_str())
            .collect()
    };
    let type_text = |j: &Json| match j {
        Json::Array(a) => a
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" . "),
        x => x.as_str().unwrap().to_string(),
    };
    let sets = of("set");
    assert_eq!(sets.len(), t.sets.len(), "sets: {sets:#?}");
    for (name, s) in &t.sets {
        let j = sets
            .iter()
            .find(|j| j["name"] == name.as_str())
            .unwrap_or_else(|| panic!("set {name} not listed"));
        let want_type: Vec<&str> = s
            .key
            .iter()
            .map(|k| match k {
                KeyType::Ipv4Addr => "ipv4_addr",
                KeyType::Ipv6Addr => "ipv6_addr",
                KeyType::IfName => "ifname",
                KeyType::InetProto => "inet_proto",
                KeyType::InetService => "inet_service",
                KeyType::Mark => "mark",
            })
            .collect();
        assert_eq!(type_text(&j["type"]), want_type.join(" . "), "set {name}");
        let flags: Vec<&str> = j["flags"]
            .as_array()
            .map(|a| a.iter().map(|f| f.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(
            flags.contains(&"interval"),
            s.interval,
            "set {name}: {flags:?}"
        );
        let elems: Vec<Json> = j["elem"].as_array().cloned().unwrap_or_default();
        let addresses = matches!(s.key[..], [KeyType::Ipv4Addr] | [KeyType::Ipv6Addr]);
        if s.interval && addresses {
            let want = coverage(s.elements.iter().map(|k| model_range(&k.0[0])));
            let got = coverage(elems.iter().map(json_range));
            assert_eq!(got, want, "set {name}");
        } else {
            let want: BTreeSet<String> = t.set_elements(name).into_iter().collect();
            let got: BTreeSet<String> = elems.iter().map(json_key).collect();
            assert_eq!(got, want, "set {name}");
        }
    }
    let maps = of("map");
    assert_eq!(maps.len(), t.maps.len(), "maps: {maps:#?}");
    for (name, m) in &t.maps {
        let j = maps.iter().find(|j| j["name"] == name.as_str()).unwrap();
        assert_eq!(j["map"], "verdict", "map {name}");
        let got: BTreeSet<String> = j["elem"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let k = &e[0];
                let k = if m.interval {
                    let (a, b) = json_range(k);
                    format!("{a}-{b}")
                } else {
                    json_key(k)
                };
                format!("{k} : {}", json_verdict(&e[1]))
            })
            .collect();
        let want: BTreeSet<String> = m
            .elements
            .iter()
            .map(|(k, v)| {
                let k = if m.interval {
                    let (a, b) = model_range(&k.0[0]);
                    format!("{a}-{b}")
                } else {
                    k.0.iter()
                        .map(|x| match x {
                            hybridnet_node::plan::nftables::Value::IfName(n) => format!("\"{n}\""),
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join(" . ")
                };
                let v = match v {
                    Verdict::Jump(c) => format!("jump {c}"),
                    Verdict::Goto(c) => format!("goto {c}"),
                    Verdict::Drop => "drop".into(),
                    Verdict::Accept => "accept".into(),
                    other => format!("{other:?}"),
                };
                format!("{k} : {v}")
            })
            .collect();
        assert_eq!(got, want, "map {name}");
    }
    let chains = of("chain");
    assert_eq!(chains.len(), t.chains.len());
    let rules = of("rule");
    for c in &t.chains {
        let j = chains
            .iter()
            .find(|j| j["name"] == c.name.as_str())
            .unwrap();
        match &c.base {
            Some(b) => {
                let hook = format!("{:?}", b.hook).to_lowercase();
                assert_eq!(j["hook"], hook.as_str(), "chain {}", c.name);
                assert_eq!(
                    j["prio"].as_i64(),
                    Some(i64::from(b.priority)),
                    "chain {}",
                    c.name
                );
                let kind = format!("{:?}", b.kind).to_lowercase();
                assert_eq!(j["type"], kind.as_str(), "chain {}", c.name);
                let policy = format!("{:?}", b.policy).to_lowercase();
                assert_eq!(j["policy"], policy.as_str(), "chain {}", c.name);
            }
            None => assert!(j.get("hook").is_none(), "chain {}", c.name),
        }
        let listed: Vec<&&Json> = rules
            .iter()
            .filter(|r| r["chain"] == c.name.as_str())
            .collect();
        assert_eq!(listed.len(), c.rules.len(), "rules of chain {}", c.name);
        for (r, l) in c.rules.iter().zip(&listed) {
            // nft strips nothing from a clean comment; hostile characters never reach it.
            assert_eq!(
                l.get("comment").and_then(|c| c.as_str()),
                r.comment.as_deref(),
                "chain {}",
                c.name
            );
        }
    }
}

fn round_trip(t: &Table) {
    t.validate().expect("model is consistent");
    let a = Netns::new("nfta");
    load(&a, &t.transaction()).unwrap_or_else(|e| panic!("{e}\n{}", t.transaction()));
    // Loading again replaces the table (the script does not depend on what exists).
    load(&a, &t.transaction()).expect("second load");
    let json: Json = serde_json::from_str(
        &a.exec(&["nft", "-j", "list", "table", "inet", &t.name])
            .unwrap(),
    )
    .unwrap();
    assert_listing_matches(t, &json);
    // The kernel's own listing is a script that loads to the same listing.
    let listing = a.exec(&["nft", "list", "table", "inet", &t.name]).unwrap();
    let b = Netns::new("nftb");
    load(&b, &listing).unwrap_or_else(|e| panic!("{e}\n{listing}"));
    assert_eq!(
        b.exec(&["nft", "list", "table", "inet", &t.name]).unwrap(),
        listing
    );
}

#[test]
fn every_construct_loads_and_lists_back() {
    if !may_run("every_construct_loads_and_lists_back", &["ip", "nft"]) {
        return;
    }
    round_trip(&everything());
}

#[test]
fn hybridnet_table_loads_and_lists_back() {
    if !may_run("hybridnet_table_loads_and_lists_back", &["ip", "nft"]) {
        return;
    }
    round_trip(&hybridnet_table());
}

#[test]
fn the_kernel_refuses_what_validate_refuses() {
    if !may_run("the_kernel_refuses_what_validate_refuses", &["ip", "nft"]) {
        return;
    }
    let ns = Netns::new("nftv");
    let mut t = everything();
    t.chains[0]
        .rules
        .push(Rule::new(vec![Match::in_set(Field::Saddr(V4), "missing")]));
    assert!(t.validate().is_err());
    assert!(load(&ns, &t.transaction()).is_err());
    let mut t = everything();
    t.chains[0]
        .rules
        .push(Rule::new(vec![]).verdict(Verdict::Jump("nowhere".into())));
    assert!(t.validate().is_err());
    assert!(load(&ns, &t.transaction()).is_err());
}

/// Sends real packets through an output chain with a counter on every rule and compares which
/// rules the kernel counted (and whether it dropped) with the evaluator.
#[test]
fn evaluator_agrees_with_kernel_counters() {
    if !may_run(
        "evaluator_agrees_with_kernel_counters",
        &["ip", "nft", "ping"],
    ) {
        return;
    }
    let ns = Netns::new("nfte");
    // Every probed destination is an address of the namespace: the echo request and its reply
    // both pass the output chain with the same destination, so they hit the same rules.
    ns.ip("addr add 198.18.7.1/24 dev lo");
    for a in ["198.18.7.5", "198.18.7.66", "198.18.7.77", "198.18.7.200"] {
        ns.ip(&format!("addr add {a}/32 dev lo"));
    }
    let mut t = Table::new("hnprobe");
    t.sets.insert(
        "near".into(),
        Set::addresses(V4, true).with([
            Value::Prefix(cidr("198.18.7.0/28")).into(),
            Value::Addr(ip("198.18.7.200")).into(),
        ]),
    );
    let mut m = Map::of(vec![KeyType::Ipv4Addr], false);
    m.elements
        .insert(Value::Addr(ip("198.18.7.66")).into(), Verdict::Drop);
    m.elements.insert(
        Value::Addr(ip("198.18.7.77")).into(),
        Verdict::Jump("sub_probe".into()),
    );
    t.maps.insert("by_dst".into(), m);
    let mut out = Chain::base(
        "out_probe",
        ChainType::Filter,
        Hook::Output,
        priority::FILTER,
        Policy::Accept,
    );
    let probe = |ms: Vec<Match>| Rule::new(ms).stmt(Stmt::Counter);
    let base4 = Cidr::parse_canonical("198.18.7.0/24").unwrap();
    out.rules
        .push(probe(vec![Match::in_set(Field::Daddr(V4), "near")]).stmt(Stmt::Mark(MarkOp::Or(1))));
    out.rules.push(probe(vec![
        Match::eq(Field::Mark { mask: Some(1) }, Rhs::Value(Value::Mark(1))),
        Match::eq(Field::OifName, Rhs::Value(Value::IfName("l*".into()))),
    ]));
    out.rules.push(probe(vec![Match::ne(
        Field::Daddr(V4),
        Rhs::Value(Value::Prefix(base4)),
    )]));
    out.rules.push(probe(vec![Match::eq(
        Field::Daddr(V4),
        Rhs::Set(vec![
            Value::Addr(ip("198.18.7.66")).into(),
            Value::Addr(ip("198.18.7.77")).into(),
        ]),
    )]));
    out.rules
        .push(Rule::new(vec![]).vmap(Field::Daddr(V4), "by_dst"));
    out.rules
        .push(probe(vec![Match::FibDaddrLocal { op: CmpOp::Eq }]));
    let mut sub = Chain::regular("sub_probe");
    sub.rules
        .push(probe(vec![Match::in_set(Field::Daddr(V4), "near")]).verdict(Verdict::Return));
    sub.rules
        .push(probe(vec![]).verdict(Verdict::Reject(Reject::IcmpHostUnreachable)));
    t.chains = vec![out, sub];
    t.validate().unwrap();

    for dst in [
        "198.18.7.1",
        "198.18.7.5",
        "198.18.7.66",
        "198.18.7.77",
        "198.18.7.200",
    ] {
        load(&ns, &t.transaction()).unwrap();
        let sent = ns.exec(&["ping", "-c", "1", "-W", "1", "-n", dst]).is_ok();
        let json: Json = serde_json::from_str(
            &ns.exec(&["nft", "-j", "list", "table", "inet", "hnprobe"])
                .unwrap(),
        )
        .unwrap();
        // Rules with a counter that counted at least one packet, as (chain, index).
        let mut counted = BTreeSet::new();
        let mut index = std::collections::BTreeMap::<String, usize>::new();
        for r in json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("rule"))
        {
            let chain = r["chain"].as_str().unwrap().to_string();
            let i = index.entry(chain.clone()).or_default();
            let packets = r["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e.get("counter"))
                .and_then(|c| c["packets"].as_u64());
            if packets.is_some_and(|p| p > 0) {
                counted.insert((chain, *i));
            }
            *i += 1;
        }
        let mut p = Packet::new(ip("198.18.7.1"), ip(dst));
        p.oif = Some("lo".into());
        p.dst_local = true;
        let o = t.eval_hook(Hook::Output, &p);
        let evaluated: BTreeSet<(String, usize)> = o
            .hits
            .iter()
            .filter(|h| h.rule.contains("counter"))
            .map(|h| (h.chain.clone(), h.index))
            .collect();
        assert!(!counted.is_empty(), "{dst}: the kernel counted nothing");
        assert_eq!(counted, evaluated, "{dst}: {o:#?}");
        // Only the drop and the reject make ping fail.
        assert_eq!(sent, o.verdict == Final::Accept, "{dst}: {o:#?}");
    }
}

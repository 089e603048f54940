use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn np(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], node: &str, ips: &[&str]) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        node: node.into(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        ports: vec![],
        host_network: false,
    }
}

fn ns(name: &str, labels: &[(&str, &str)]) -> PolicyNamespace {
    PolicyNamespace {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn tcp(src: &str, dst: &str, port: u16) -> Flow {
    Flow {
        src: ip(src),
        dst: ip(dst),
        protocol: Protocol::Tcp,
        port,
    }
}

/// x/a 198.18.0.1, x/b .2, y/a .3 (dual stack, fd00::N), namespace y labelled team=y.
fn cluster(policies: Vec<NetworkPolicy>) -> PolicyInput {
    PolicyInput {
        policies,
        pods: vec![
            pod("x", "a", &[("pod", "a")], "n1", &["198.18.0.1", "fd00::1"]),
            pod("x", "b", &[("pod", "b")], "n1", &["198.18.0.2", "fd00::2"]),
            pod("y", "a", &[("pod", "a")], "n2", &["198.18.0.3", "fd00::3"]),
        ],
        namespaces: vec![ns("x", &[]), ns("y", &[("team", "y")])],
        nodes: BTreeMap::from([
            ("n1".to_string(), vec![ip("198.18.1.1")]),
            ("n2".to_string(), vec![ip("198.18.1.2")]),
        ]),
    }
}

fn allowed(model: &PolicyModel, f: Flow) -> bool {
    evaluate(model, &f).allowed()
}

const XA: &str = "198.18.0.1";
const XB: &str = "198.18.0.2";
const YA: &str = "198.18.0.3";

#[test]
fn without_policies_everything_is_allowed_and_nothing_isolated() {
    let m = build_policy_model(&cluster(vec![]));
    let v = evaluate(&m, &tcp(XA, YA, 80));
    assert_eq!(v.egress, SideVerdict::NotIsolated);
    assert_eq!(v.ingress, SideVerdict::NotIsolated);
    assert!(v.allowed());
    assert_eq!(
        evaluate(&m, &tcp("203.0.113.1", XA, 80)).egress,
        SideVerdict::NotAPod
    );
    assert!(m.problems.is_empty());
}

#[test]
fn policy_types_implied_and_explicit() {
    // no policyTypes, no egress section: ingress only
    let m = build_policy_model(&cluster(vec![np("x", "p", json!({"podSelector": {}}))]));
    assert!(!allowed(&m, tcp(YA, XA, 80)));
    assert!(allowed(&m, tcp(XA, YA, 80)));
    // an empty egress list is no egress section
    let m = build_policy_model(&cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "egress": []}),
    )]));
    assert!(allowed(&m, tcp(XA, YA, 80)));
    // egress rules imply Egress
    let m = build_policy_model(&cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    )]));
    assert!(!allowed(&m, tcp(XA, YA, 80)));
    assert!(!allowed(&m, tcp(YA, XA, 80)), "ingress still isolated");
    // explicit Egress only: the ingress rules are ignored and ingress is not isolated
    let m = build_policy_model(&cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}),
    )]));
    assert!(allowed(&m, tcp(YA, XA, 80)));
    let v = evaluate(&m, &tcp(XA, YA, 80));
    assert_eq!(
        v.egress,
        SideVerdict::Denied {
            isolated_by: vec![ObjectKey::new("x", "p")]
        }
    );
    assert_eq!(v.ingress, SideVerdict::NotIsolated);
}

#[test]
fn pod_and_namespace_selectors_and_versus_or() {
    // one peer with both selectors: pods labelled pod=a in namespaces with team=y
    let and = np(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "y"}}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    );
    let m = build_policy_model(&cluster(vec![and]));
    assert!(allowed(&m, tcp(YA, XB, 80)));
    assert!(
        !allowed(&m, tcp(XA, XB, 80)),
        "x/a: pod matches, namespace not"
    );
    assert_eq!(
        evaluate(&m, &tcp(YA, XB, 80)).ingress,
        SideVerdict::Allowed {
            policy: ObjectKey::new("x", "and"),
            rule: 0
        }
    );
    // two peers: either
    let or = np(
        "x",
        "or",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "nobody"}}}, {"podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    );
    let m = build_policy_model(&cluster(vec![or]));
    assert!(allowed(&m, tcp(XA, XB, 80)), "same-namespace pod selector");
    assert!(
        !allowed(&m, tcp(YA, XB, 80)),
        "podSelector alone: own namespace only"
    );
    // the name label every namespace carries
    let byname = np(
        "x",
        "byname",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}),
    );
    let m = build_policy_model(&cluster(vec![byname]));
    assert!(allowed(&m, tcp(YA, XB, 80)) && !allowed(&m, tcp(XA, XB, 80)));
}

#[test]
fn ip_blocks_with_except_per_family() {
    let p = np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"ipBlock": {"cidr": "198.18.0.0/24", "except": ["198.18.0.2/32"]}},
            {"ipBlock": {"cidr": "fd00::/120", "except": ["fd00::3/128"]}}
        ]}]}),
    );
    let m = build_policy_model(&cluster(vec![p]));
    assert!(allowed(&m, tcp(XA, YA, 80)));
    assert!(!allowed(&m, tcp(XA, XB, 80)), "excepted");
    assert!(!allowed(&m, tcp(XA, "198.18.1.9", 80)), "outside the block");
    assert!(allowed(&m, tcp("fd00::1", "fd00::2", 80)));
    assert!(!allowed(&m, tcp("fd00::1", "fd00::3", 80)), "excepted (v6)");
    // a v4 block never matches a v6 address
    let p = np(
        "x",
        "all4",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
    );
    let m = build_policy_model(&cluster(vec![p]));
    assert!(allowed(&m, tcp(XA, "203.0.113.9", 443)));
    assert!(!allowed(&m, tcp("fd00::1", "2001:db8::1", 443)));
    // a block with host bits set is its network (as Go's ParseCIDR reads it)
    let p = np(
        "x",
        "host-bits",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "198.18.0.3/31"}}]}]}),
    );
    let m = build_policy_model(&cluster(vec![p]));
    assert!(allowed(&m, tcp(XA, "198.18.0.2", 80)) && allowed(&m, tcp(XA, YA, 80)));
}

#[test]
fn ports_protocols_and_end_port() {
    let p = np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80}, {"protocol": "UDP", "port": 1000, "endPort": 1010}, {"protocol": "SCTP"}
        ]}]}),
    );
    let m = build_policy_model(&cluster(vec![p]));
    let f = |proto, port| Flow {
        src: ip(YA),
        dst: ip(XA),
        protocol: proto,
        port,
    };
    assert!(allowed(&m, f(Protocol::Tcp, 80)));
    assert!(
        !allowed(&m, f(Protocol::Udp, 80)),
        "port 80 defaults to TCP"
    );
    assert!(!allowed(&m, f(Protocol::Tcp, 81)));
    for port in [1000, 1005, 1010] {
        assert!(allowed(&m, f(Protocol::Udp, port)));
    }
    assert!(!allowed(&m, f(Protocol::Udp, 999)) && !allowed(&m, f(Protocol::Udp, 1011)));
    assert!(!allowed(&m, f(Protocol::Tcp, 1005)));
    assert!(allowed(&m, f(Protocol::Sctp, 1)) && allowed(&m, f(Protocol::Sctp, 65535)));
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    let mut input = cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}],
               "egress": [{"ports": [{"port": "http"}]}]}),
    )]);
    let http = |port| ContainerPort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port,
    };
    input.pods[0].ports = vec![http(8080)];
    input.pods[1].ports = vec![http(9090)];
    input.pods[2].ports = vec![http(7070)];
    let m = build_policy_model(&input);
    // ingress: resolved on the destination (the selected pod)
    assert!(allowed(&m, tcp(YA, XA, 8080)));
    assert!(!allowed(&m, tcp(YA, XA, 9090)));
    assert!(allowed(&m, tcp(YA, XB, 9090)));
    assert!(!allowed(&m, tcp(YA, XB, 8080)));
    // egress: resolved on the destination pod (y/a), not on the source
    assert!(allowed(&m, tcp(XA, YA, 7070)));
    assert!(!allowed(&m, tcp(XA, YA, 8080)));
    // an address that is no pod has no named ports
    assert!(!allowed(&m, tcp(XA, "203.0.113.1", 8080)));
    // a name no pod declares resolves to nothing: isolated, nothing allowed
    let m = build_policy_model(&cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "nothere"}]}]}),
    )]));
    assert!(!allowed(&m, tcp(YA, XA, 80)));
    assert!(
        m.problems.is_empty(),
        "a name nobody declares (yet) is valid"
    );
}

#[test]
fn union_of_policies_and_which_rule_allowed() {
    let only80 = np(
        "x",
        "only-80",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let from_y = np(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"ports": [{"port": 9}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]}),
    );
    let m = build_policy_model(&cluster(vec![only80.clone(), from_y]));
    assert!(allowed(&m, tcp(XB, XA, 80)));
    assert!(!allowed(&m, tcp(XB, XA, 81)));
    assert!(allowed(&m, tcp(YA, XA, 81)));
    assert_eq!(
        evaluate(&m, &tcp(YA, XA, 81)).ingress,
        SideVerdict::Allowed {
            policy: ObjectKey::new("x", "from-y"),
            rule: 1
        }
    );
    assert!(!allowed(&m, tcp(YA, XB, 81)), "from-y does not select x/b");
    // an allow-all rule wins over everything else
    let all = np("x", "all", json!({"podSelector": {}, "ingress": [{}]}));
    let m = build_policy_model(&cluster(vec![only80, all]));
    assert!(allowed(&m, tcp(YA, XA, 12345)));
}

#[test]
fn own_node_same_pod_and_host_network() {
    let mut input = cluster(vec![np("x", "deny", json!({"podSelector": {}}))]);
    let mut hn = pod("x", "host", &[("pod", "a")], "n1", &["198.18.1.1"]);
    hn.host_network = true;
    input.pods.push(hn);
    let m = build_policy_model(&input);
    assert_eq!(
        evaluate(&m, &tcp("198.18.1.1", XA, 80)).ingress,
        SideVerdict::FromOwnNode
    );
    assert!(!allowed(&m, tcp("198.18.1.2", XA, 80)), "another node");
    assert_eq!(evaluate(&m, &tcp(XA, XA, 80)).ingress, SideVerdict::SamePod);
    assert!(
        !m.pods.contains_key(&ObjectKey::new("x", "host")),
        "host-network pods are never policy targets"
    );
}

#[test]
fn api_objects_convert() {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "x", "labels": {"pod": "a"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
            {"name": "serve-80-tcp", "containerPort": 80},
            {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
            {"containerPort": 81},
            {"name": "BAD", "containerPort": 82},
            {"name": "icmp", "containerPort": 83, "protocol": "ICMP"}]}]},
        "status": {"phase": "Running", "podIP": "198.18.0.1", "podIPs": [{"ip": "198.18.0.1"}, {"ip": "fd00::1"}]}
    }))
    .unwrap();
    let p = pod_from_object(&pod).unwrap();
    assert_eq!(p.ips, vec![ip("198.18.0.1"), ip("fd00::1")]);
    assert_eq!(p.node, "n1");
    assert_eq!(
        p.ports,
        vec![
            ContainerPort {
                name: "serve-80-tcp".into(),
                protocol: Protocol::Tcp,
                port: 80
            },
            ContainerPort {
                name: "serve-80-udp".into(),
                protocol: Protocol::Udp,
                port: 80
            }
        ]
    );
    let mut done = pod.clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(pod_from_object(&done).is_none());
    let n: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "x", "labels": {"a": "b"}}})).unwrap();
    let n = namespace_from_object(&n);
    assert_eq!(n.labels[NAMESPACE_NAME_LABEL], "x");
    assert_eq!(n.labels["a"], "b");
}

/// Every hostile input: no panic, a problem naming the field, and nothing opened.
#[test]
fn hostile_policies_are_reported_and_open_nothing() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/33"}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nonsense"}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["bad"]}}]}]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/24", "except": ["10.0.0.0/8"]}}]}]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/24", "except": ["fd00::/64"]}}]}]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}}]}]}),
            "spec.ingress[0].from[0]",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{}]}]}),
            "spec.ingress[0].from[0]",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}),
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}),
            "spec.ingress[0].ports[0].port",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}),
            "spec.ingress[0].ports[0].port",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"endPort": 80}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": "Not_A-Name!"}]}]}),
            "spec.ingress[0].ports[0].port",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"podSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}]}]}),
            "spec.egress[0].to[0].podSelector.matchExpressions[0].operator",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}]}]}),
            "spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values",
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["x"]}]}, "ingress": [{}]}),
            "spec.podSelector.matchExpressions[0].values",
        ),
        (
            json!({"podSelector": {}, "policyTypes": ["Sideways"], "ingress": [{}], "egress": [{}]}),
            "spec.policyTypes[0]",
        ),
    ];
    for (spec, field) in cases {
        let m = build_policy_model(&cluster(vec![np("x", "bad", spec.clone())]));
        let problems = &m.problems[&ObjectKey::new("x", "bad")];
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{spec}: {problems:?}"
        );
        // whatever the policy meant, it allows nothing into x (all of them isolate x for ingress,
        // and their only rule is broken)
        for src in [XB, YA, "203.0.113.1", "fd00::3"] {
            let dst = if src.contains(':') { "fd00::1" } else { XA };
            let v = evaluate(&m, &tcp(src, dst, 80));
            assert!(
                matches!(v.ingress, SideVerdict::Denied { .. }),
                "{spec}: {src} -> {dst}: {v:?}"
            );
        }
    }
}

#[test]
fn unknown_policy_type_isolates_both_directions_without_using_rules_of_unnamed_ones() {
    let m = build_policy_model(&cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Bogus"], "ingress": [{}], "egress": [{}]}),
    )]));
    assert!(allowed(&m, tcp(YA, XA, 80)), "the Ingress rules are used");
    assert!(
        !allowed(&m, tcp(XA, YA, 80)),
        "egress isolated, its rules not used"
    );
}

#[test]
fn huge_inputs_stay_linear_and_correct() {
    // 10,000 ipBlocks, one of which covers y/a
    let mut blocks: Vec<Value> = (0..10_000u32)
        .map(|i| json!({"ipBlock": {"cidr": format!("10.{}.{}.0/24", i / 256, i % 256)}}))
        .collect();
    blocks.push(json!({"ipBlock": {"cidr": format!("{YA}/32")}}));
    // a selector with 10,000 values
    let values: Vec<String> = (0..10_000).map(|i| format!("v{i}")).collect();
    let p = np(
        "x",
        "big",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": values}]},
               "ingress": [{"from": blocks}]}),
    );
    let m = build_policy_model(&cluster(vec![p]));
    assert!(m.problems.is_empty());
    assert!(allowed(&m, tcp(YA, XA, 80)));
    assert!(allowed(&m, tcp("10.39.15.7", XA, 80)));
    assert!(!allowed(&m, tcp(XB, XA, 80)));
}

// ---- properties ----

fn arb_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|v| json!({"matchLabels": {"pod": v}})),
        prop::sample::subsequence(vec!["a", "b", "c"], 1..3).prop_map(
            |v| json!({"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": v}]})
        ),
        Just(json!({"matchExpressions": [{"key": "role", "operator": "Exists"}]})),
    ]
}

fn arb_ns_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["x", "y", "z"])
            .prop_map(|v| json!({"matchLabels": {"kubernetes.io/metadata.name": v}})),
        Just(json!({"matchLabels": {"team": "blue"}})),
    ]
}

fn arb_peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_selector().prop_map(|s| json!({"podSelector": s})),
        arb_ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        (arb_ns_selector(), arb_selector())
            .prop_map(|(n, p)| json!({"namespaceSelector": n, "podSelector": p})),
        (0u8..16, 0u8..3).prop_map(|(n, kind)| match kind {
            0 => json!({"ipBlock": {"cidr": "fd00::/120", "except": [format!("fd00::{n:x}/128")]}}),
            1 => json!({"ipBlock": {"cidr": "198.18.0.0/28", "except": [format!("198.18.0.{n}/32")]}}),
            _ => json!({"ipBlock": {"cidr": format!("198.18.0.{}/30", n & 0xfc)}}),
        }),
    ]
}

fn arb_port() -> impl Strategy<Value = Value> {
    prop_oneof![
        (prop::sample::select(vec!["TCP", "UDP"]), 80u16..82)
            .prop_map(|(p, n)| json!({"protocol": p, "port": n})),
        Just(json!({"port": 80, "endPort": 81})),
        prop::sample::select(vec!["serve-80-tcp", "serve-81-udp"]).prop_map(
            |n| json!({"port": n, "protocol": if n.ends_with("udp") { "UDP" } else { "TCP" }})
        ),
        Just(json!({"protocol": "UDP"})),
    ]
}

fn arb_rule(peer_key: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(arb_peer(), 0..3)),
        prop::option::of(prop::collection::vec(arb_port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = serde_json::Map::new();
            if let Some(p) = peers {
                r.insert(peer_key.into(), json!(p));
            }
            if let Some(p) = ports {
                r.insert("ports".into(), json!(p));
            }
            Value::Object(r)
        })
}

fn arb_policy() -> impl Strategy<Value = (String, Value)> {
    (
        prop::sample::select(vec!["x", "y", "z"]),
        arb_selector(),
        prop_oneof![
            Just(None),
            Just(Some(vec!["Ingress"])),
            Just(Some(vec!["Egress"])),
            Just(Some(vec!["Ingress", "Egress"]))
        ],
        prop::option::of(prop::collection::vec(arb_rule("from"), 0..3)),
        prop::option::of(prop::collection::vec(arb_rule("to"), 0..3)),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = serde_json::Map::new();
            spec.insert("podSelector".into(), sel);
            if let Some(t) = types {
                spec.insert("policyTypes".into(), json!(t));
            }
            if let Some(i) = ingress {
                spec.insert("ingress".into(), json!(i));
            }
            if let Some(e) = egress {
                spec.insert("egress".into(), json!(e));
            }
            (ns.to_string(), Value::Object(spec))
        })
}

fn policies(specs: &[(String, Value)], prefix: &str) -> Vec<NetworkPolicy> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (ns, spec))| np(ns, &format!("{prefix}{i}"), spec.clone()))
        .collect()
}

/// 3 namespaces x pods a, b, c (b has role=db); z is labelled team=blue; pods serve named ports.
fn prop_cluster(policies: Vec<NetworkPolicy>) -> PolicyInput {
    let mut pods = vec![];
    for (i, n) in ["x", "y", "z"].iter().enumerate() {
        for (j, p) in ["a", "b", "c"].iter().enumerate() {
            let k = i * 3 + j + 1;
            let mut labels = vec![("pod", *p)];
            if *p == "b" {
                labels.push(("role", "db"));
            }
            let mut pp = pod(
                n,
                p,
                &labels,
                &format!("n{}", k % 2),
                &[&format!("198.18.0.{k}"), &format!("fd00::{k:x}")],
            );
            pp.ports = vec![
                ContainerPort {
                    name: "serve-80-tcp".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                },
                ContainerPort {
                    name: "serve-81-udp".into(),
                    protocol: Protocol::Udp,
                    port: 81,
                },
            ];
            pods.push(pp);
        }
    }
    PolicyInput {
        policies,
        pods,
        namespaces: vec![ns("x", &[]), ns("y", &[]), ns("z", &[("team", "blue")])],
        nodes: BTreeMap::new(),
    }
}

fn flows(input: &PolicyInput) -> Vec<Flow> {
    let mut out = vec![];
    for s in &input.pods {
        for d in &input.pods {
            for (si, di) in s.ips.iter().zip(&d.ips) {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    for port in [80, 81] {
                        out.push(Flow {
                            src: *si,
                            dst: *di,
                            protocol,
                            port,
                        });
                    }
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Adding a pod never changes the verdicts between the other pods.
    #[test]
    fn an_added_pod_changes_no_other_verdict(
        specs in prop::collection::vec(arb_policy(), 0..5),
        ns_ in prop::sample::select(vec!["x", "y", "z", "w"]),
        label in prop::sample::select(vec!["a", "b", "c", "d"]),
    ) {
        let input = prop_cluster(policies(&specs, "p"));
        let before = build_policy_model(&input);
        let mut more = input.clone();
        more.pods.push(pod(ns_, "new", &[("pod", label), ("role", "db")], "n0", &["198.18.0.200", "fd00::c8"]));
        let after = build_policy_model(&more);
        for f in flows(&input) {
            prop_assert_eq!(evaluate(&before, &f), evaluate(&after, &f), "{:?}", f);
        }
    }

    /// A union of policies is never stricter than either alone for the sides that one governs,
    /// and allows exactly what one of them allows when both isolate.
    #[test]
    fn a_union_is_never_stricter_than_either_alone(
        a in prop::collection::vec(arb_policy(), 1..4),
        b in prop::collection::vec(arb_policy(), 1..4),
    ) {
        let pa = policies(&a, "a");
        let pb = policies(&b, "b");
        let ma = build_policy_model(&prop_cluster(pa.clone()));
        let mb = build_policy_model(&prop_cluster(pb.clone()));
        let mu = build_policy_model(&prop_cluster([pa, pb].concat()));
        for f in flows(&prop_cluster(vec![])) {
            let (va, vb, vu) = (evaluate(&ma, &f), evaluate(&mb, &f), evaluate(&mu, &f));
            for (sa, sb, su) in [(&va.egress, &vb.egress, &vu.egress), (&va.ingress, &vb.ingress, &vu.ingress)] {
                if matches!(sa, SideVerdict::Allowed { .. }) || matches!(sb, SideVerdict::Allowed { .. }) {
                    prop_assert!(su.allows(), "{:?}: {:?} {:?} -> {:?}", f, sa, sb, su);
                }
                if su.allows() {
                    prop_assert!(sa.allows() || sb.allows(), "{:?}: {:?} {:?} -> {:?}", f, sa, sb, su);
                }
                if matches!(sa, SideVerdict::Denied { .. }) && matches!(sb, SideVerdict::Denied { .. }) {
                    prop_assert!(!su.allows());
                }
            }
        }
    }

    /// The order of policies and pods changes nothing.
    #[test]
    fn order_does_not_matter(specs in prop::collection::vec(arb_policy(), 0..5), seed in any::<u64>()) {
        let input = prop_cluster(policies(&specs, "p"));
        let mut shuffled = input.clone();
        let n = shuffled.policies.len();
        if n > 1 {
            shuffled.policies.rotate_left((seed as usize) % n);
        }
        shuffled.pods.reverse();
        shuffled.namespaces.reverse();
        prop_assert_eq!(build_policy_model(&input), build_policy_model(&shuffled));
    }

    /// Corrupting any one peer, port, selector or policy type of a policy into something the API
    /// server would have refused never allows a flow the intact policy denied.
    #[test]
    fn corruption_never_opens_anything(
        specs in prop::collection::vec(arb_policy(), 1..4),
        which in any::<prop::sample::Index>(),
        variant in 0usize..3,
    ) {
        let intact = policies(&specs, "p");
        let mut corrupt_specs = specs.clone();
        let mut count = 0;
        for (_, s) in corrupt_specs.iter_mut() {
            corrupt(s, "", &mut count, usize::MAX, variant);
        }
        prop_assume!(count > 0);
        let target = which.index(count);
        let mut seen = 0;
        for (_, s) in corrupt_specs.iter_mut() {
            corrupt(s, "", &mut seen, target, variant);
        }
        let mc = build_policy_model(&prop_cluster(policies(&corrupt_specs, "p")));
        prop_assert!(!mc.problems.is_empty());
        let mi = build_policy_model(&prop_cluster(intact));
        for f in flows(&prop_cluster(vec![])) {
            if evaluate(&mc, &f).allowed() {
                prop_assert!(evaluate(&mi, &f).allowed(), "{:?} opened by corruption", f);
            }
        }
    }
}

/// Visits peers, ports, selectors and policy types in order, counting them in `seen`, and
/// replaces the `target`-th with an invalid value of the same kind.
fn corrupt(v: &mut Value, ctx: &str, seen: &mut usize, target: usize, variant: usize) {
    let garbage = |kind: &str| -> Value {
        match (kind, variant) {
            ("peer", 0) => json!({"ipBlock": {"cidr": "300.1.1.1/8"}}),
            ("peer", 1) => json!({}),
            ("peer", _) => {
                json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near"}]}})
            }
            ("port", 0) => json!({"protocol": "ICMP", "port": 80}),
            ("port", 1) => json!({"port": 80, "endPort": 1}),
            ("port", _) => json!({"port": 0}),
            ("type", _) => json!("Sideways"),
            _ => json!({"matchExpressions": [{"key": "pod", "operator": "In"}]}),
        }
    };
    let hit = |x: &mut Value, kind: &str, seen: &mut usize| {
        if *seen == target {
            *x = garbage(kind);
        }
        *seen += 1;
    };
    match v {
        Value::Array(a) => {
            let kind = match ctx {
                "from" | "to" => Some("peer"),
                "ports" => Some("port"),
                "policyTypes" => Some("type"),
                _ => None,
            };
            for x in a.iter_mut() {
                match kind {
                    Some(k) => hit(x, k, seen),
                    None => corrupt(x, "", seen, target, variant),
                }
                if kind == Some("peer") {
                    corrupt(x, "", seen, target, variant);
                }
            }
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if (k == "podSelector" || k == "namespaceSelector") && x.is_object() {
                    hit(x, "selector", seen);
                } else {
                    corrupt(x, k, seen, target, variant);
                }
            }
        }
        _ => {}
    }
}

// ---- the nftables rendering agrees with the evaluator ----

fn nft_allows(t: &crate::plan::nftables::Table, f: &Flow) -> bool {
    use crate::plan::nftables::{Final, Hook, L4Proto, Packet};
    let mut p = Packet::new(f.src, f.dst);
    p.l4 = Some((
        match f.protocol {
            Protocol::Tcp => L4Proto::Tcp,
            Protocol::Udp => L4Proto::Udp,
            Protocol::Sctp => L4Proto::Sctp,
        },
        f.port,
    ));
    t.eval_hook(Hook::Forward, &p).verdict == Final::Accept
}

/// What node `node` must decide: the source's egress if the source is local, the destination's
/// ingress if the destination is.
fn node_allows(m: &PolicyModel, node: &str, f: &Flow) -> bool {
    let v = evaluate(m, f);
    let local = |ip| {
        m.by_ip
            .get(&ip)
            .and_then(|k| m.pods.get(k))
            .is_some_and(|p| p.node == node)
    };
    (!local(f.src) || v.egress.allows()) && (!local(f.dst) || v.ingress.allows())
}

#[test]
fn rendered_table_is_valid_and_small() {
    let p = np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                                     {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.8/29"]}},
                                     {"ipBlock": {"cidr": "fd00:1::/64"}}],
                            "ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}, {"port": 8000, "endPort": 8080}, {"port": "http"}]}],
               "egress": [{}]}),
    );
    let m = build_policy_model(&cluster(vec![p]));
    let t = render_policy_table(&m, "n1");
    assert_eq!(t.validate(), Ok(()));
    let text = t.transaction();
    for want in [
        "ip daddr vmap @in_4",
        "ct direction reply ct state established,related accept",
        "ip saddr @s_",
        "meta l4proto . th dport { tcp . 80, udp . 81 }",
        "th dport 8000-8080",
        "ip daddr . meta l4proto . th dport @np_",
        "ip saddr { 203.0.113.0/24 } ip saddr != { 203.0.113.8/29 }",
        "goto drop_ingress",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    // x/a and x/b are on n1, y/a is not: only the two are dispatched
    assert_eq!(t.maps["in_4"].elements.len(), 2);
    assert_eq!(t.maps["eg_6"].elements.len(), 2);
    assert!(
        render_policy_table(&m, "n2").maps["in_4"]
            .elements
            .is_empty()
    );
}

/// A packet of `f` whose connection carries `ct_mark`, through the forward hook of `t`.
fn forward(
    t: &crate::plan::nftables::Table,
    f: &Flow,
    ct_mark: u32,
) -> crate::plan::nftables::HookOutcome {
    use crate::plan::nftables::{Hook, L4Proto, Packet};
    let mut p = Packet::new(f.src, f.dst);
    p.ct_mark = ct_mark;
    p.l4 = Some((
        match f.protocol {
            Protocol::Tcp => L4Proto::Tcp,
            Protocol::Udp => L4Proto::Udp,
            Protocol::Sctp => L4Proto::Sctp,
        },
        f.port,
    ));
    t.eval_hook(Hook::Forward, &p)
}

#[test]
fn allowed_connections_carry_the_generation_and_older_marks_are_decided_again() {
    use crate::plan::nftables::Final;
    // x/a (n1) accepts port 80 from x/b (n1) only; x/b may send only to x/a
    let p = np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
    );
    let q = np(
        "x",
        "q",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    let m = build_policy_model(&cluster(vec![p, q]));
    let mut t = render_policy_table(&m, "n1");
    assert_eq!(generation(&t), Some(1));
    set_generation(&mut t, 7);
    assert_eq!(generation(&t), Some(7));
    assert_eq!(t.validate(), Ok(()));
    let text = t.transaction();
    assert!(text.contains("ct mark 0x7 accept"), "{text}");
    assert!(text.contains("ct mark set 0x7 accept"), "{text}");

    let allowed = tcp(XB, XA, 80);
    let denied = tcp(XB, XA, 81);
    // the first packet is decided by the policies on both sides and marks its connection
    let o = forward(&t, &allowed, 0);
    assert_eq!(o.verdict, Final::Accept);
    assert_eq!(o.ct_mark, 7, "{:?}", o.hits);
    assert!(
        o.hits
            .iter()
            .any(|h| h.comment.as_deref() == Some("x/q egress rule 0"))
    );
    assert!(
        o.hits
            .iter()
            .any(|h| h.comment.as_deref() == Some("x/p ingress rule 0"))
    );
    // a later packet of it passes by the mark alone
    let later = forward(&t, &allowed, 7);
    assert_eq!(later.verdict, Final::Accept);
    assert_eq!(later.hits.len(), 1, "{:?}", later.hits);
    // a denied connection is not marked
    let o = forward(&t, &denied, 0);
    assert_eq!((o.verdict, o.ct_mark), (Final::Drop, 0));
    // a mark of an older generation (or of anyone else) is no pass: the rules decide again
    for stale in [6, 1, 0x4000, u32::MAX] {
        let o = forward(&t, &denied, stale);
        assert_eq!(o.verdict, Final::Drop, "mark {stale:#x}: {:?}", o.hits);
        assert_eq!(o.ct_mark, stale, "a dropped packet does not re-mark");
        let o = forward(&t, &allowed, stale);
        assert_eq!((o.verdict, o.ct_mark), (Final::Accept, 7));
    }
    // the flow x/b -> x/a was allowed at generation 7; a change that no longer allows it comes
    // with generation 8, and its next packet is dropped although it carries 7
    let m2 = build_policy_model(&cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": []}),
    )]));
    let mut t2 = render_policy_table(&m2, "n1");
    set_generation(&mut t2, next_generation(7));
    assert_eq!(forward(&t2, &allowed, 7).verdict, Final::Drop);
    // unisolated pods: marked too, so their later packets skip the lookups
    let o = forward(&t2, &tcp(XA, "198.18.0.3", 80), 0);
    assert_eq!((o.verdict, o.ct_mark), (Final::Accept, 8));
}

#[test]
fn generations_never_zero_and_found_in_a_listing() {
    assert_eq!(next_generation(0), 1);
    assert_eq!(next_generation(41), 42);
    assert_eq!(next_generation(u32::MAX), 1);
    let listing = "table inet hybridnet_policy {\n\tchain forward {\n\t\tct mark 0x0000002a accept comment \"connections allowed by this generation\"\n\t}\n\n\tchain allowed {\n\t\tct mark set 0x0000002a accept comment \"allowed\"\n\t}\n}\n";
    assert_eq!(generation_in_listing(listing), Some(42));
    assert_eq!(
        generation_in_listing("table inet hybridnet_policy {\n}"),
        None
    );
    assert_eq!(
        generation_in_listing("chain allowed {\n ct mark set 0xzz accept\n}"),
        None
    );
    assert_eq!(
        generation_in_listing("chain allowed {\n ct mark set 17 accept\n}"),
        Some(17)
    );
}

#[test]
fn rule_count_grows_with_policies_not_pods() {
    let policy = np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
    );
    let count = |pods: usize| {
        let mut input = cluster(vec![policy.clone()]);
        for i in 0..pods {
            input.pods.push(pod(
                "x",
                &format!("p{i}"),
                &[("pod", if i % 2 == 0 { "b" } else { "c" })],
                "n1",
                &[&format!("198.18.{}.{}", 10 + i / 250, i % 250)],
            ));
        }
        let t = render_policy_table(&build_policy_model(&input), "n1");
        let rules: usize = t
            .chains
            .iter()
            .filter(|c| c.name.starts_with("pol"))
            .map(|c| c.rules.len())
            .sum();
        let set = t
            .sets
            .iter()
            .find(|(n, _)| n.starts_with("s_") && n.ends_with("_4"))
            .map(|(_, s)| s.elements.len());
        (rules, set.unwrap(), t.maps["in_4"].elements.len())
    };
    let (r10, s10, m10) = count(10);
    let (r1000, s1000, m1000) = count(1000);
    assert_eq!(
        r10, r1000,
        "policy rules do not depend on the number of pods"
    );
    assert_eq!(
        (s10, s1000),
        (6, 501),
        "set members: x/b and the pod=b pods"
    );
    assert_eq!((m10, m1000), (12, 1002));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    /// On every node, the rendered table (run by the nftables evaluator) accepts exactly the flows
    /// the model allows for that node's pods.
    #[test]
    fn rendered_table_agrees_with_the_evaluator(specs in prop::collection::vec(arb_policy(), 0..5)) {
        let input = prop_cluster(policies(&specs, "p"));
        let m = build_policy_model(&input);
        for node in ["n0", "n1"] {
            let t = render_policy_table(&m, node);
            prop_assert_eq!(t.validate(), Ok(()));
            for f in flows(&input) {
                if m.by_ip.get(&f.src) == m.by_ip.get(&f.dst) {
                    continue; // a pod to itself never reaches the forward hook
                }
                let allows = node_allows(&m, node, &f);
                prop_assert_eq!(nft_allows(&t, &f), allows, "{} {:?}", node, f);
                // an allowed connection carries the generation; a mark of an older one decides
                // nothing
                let o = forward(&t, &f, 0);
                prop_assert_eq!(o.ct_mark, if allows { 1 } else { 0 });
                let stale = forward(&t, &f, 2);
                prop_assert_eq!(stale.verdict == crate::plan::nftables::Final::Accept, allows);
            }
        }
    }
}

/// One change of the cluster's objects (for the incremental model and table diff).
#[derive(Clone, Debug)]
enum Change {
    Pod {
        ns: &'static str,
        name: &'static str,
        labels: Vec<(&'static str, &'static str)>,
        node: &'static str,
        ips: Vec<u8>,
        ports: bool,
        host: bool,
    },
    RemovePod(&'static str, &'static str),
    Namespace(&'static str, Vec<(&'static str, &'static str)>),
    RemoveNamespace(&'static str),
    Policy(&'static str, (String, Value)),
    RemovePolicy(&'static str, &'static str),
}

const NAMESPACES: [&str; 4] = ["x", "y", "z", "w"];

fn arb_labels() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["pod", "role", "team"]),
            prop::sample::select(vec!["a", "b", "db", "blue"]),
        ),
        0..3,
    )
}

fn arb_change() -> impl Strategy<Value = Change> {
    let ns = || prop::sample::select(NAMESPACES.to_vec());
    let name = || prop::sample::select(vec!["a", "b", "c"]);
    prop_oneof![
        4 => (
            ns(),
            name(),
            arb_labels(),
            prop::sample::select(vec!["n0", "n1"]),
            prop::collection::vec(1u8..7, 0..3),
            any::<bool>(),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(ns, name, labels, node, ips, ports, host)| Change::Pod {
                ns,
                name,
                labels,
                node,
                ips,
                ports,
                host,
            }),
        1 => (ns(), name()).prop_map(|(n, p)| Change::RemovePod(n, p)),
        1 => (ns(), arb_labels()).prop_map(|(n, l)| Change::Namespace(n, l)),
        1 => ns().prop_map(Change::RemoveNamespace),
        3 => (name(), arb_policy()).prop_map(|(n, p)| Change::Policy(n, p)),
        1 => (ns(), name()).prop_map(|(n, p)| Change::RemovePolicy(n, p)),
    ]
}

/// The objects as maps (what the watch caches hold), applied to a [`PolicyState`] too.
#[derive(Default)]
struct Objects {
    pods: BTreeMap<ObjectKey, PolicyPod>,
    namespaces: BTreeMap<String, PolicyNamespace>,
    policies: BTreeMap<ObjectKey, NetworkPolicy>,
}

impl Objects {
    fn input(&self) -> PolicyInput {
        PolicyInput {
            policies: self.policies.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
            namespaces: self.namespaces.values().cloned().collect(),
            nodes: BTreeMap::new(),
        }
    }

    fn apply(&mut self, c: &Change, state: &mut PolicyState) {
        match c.clone() {
            Change::Pod {
                ns,
                name,
                labels,
                node,
                ips,
                ports,
                host,
            } => {
                let addrs: Vec<String> = ips
                    .iter()
                    .flat_map(|i| [format!("198.18.0.{i}"), format!("fd00::{i:x}")])
                    .collect();
                let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                let mut p = pod(ns, name, &labels, node, &addrs);
                p.host_network = host;
                if ports {
                    p.ports = vec![
                        ContainerPort {
                            name: "serve-80-tcp".into(),
                            protocol: Protocol::Tcp,
                            port: 80,
                        },
                        ContainerPort {
                            name: "serve-81-udp".into(),
                            protocol: Protocol::Udp,
                            port: 81,
                        },
                    ];
                }
                self.pods.insert(p.key(), p.clone());
                state.set_pod(p);
            }
            Change::RemovePod(ns, name) => {
                let k = ObjectKey::new(ns, name);
                self.pods.remove(&k);
                state.remove_pod(&k);
            }
            Change::Namespace(name, labels) => {
                let n = super::tests::ns(name, &labels);
                self.namespaces.insert(name.to_string(), n.clone());
                state.set_namespace(n);
            }
            Change::RemoveNamespace(name) => {
                self.namespaces.remove(name);
                state.remove_namespace(name);
            }
            Change::Policy(name, (ns, spec)) => {
                let p = np(&ns, name, spec);
                self.policies.insert(ObjectKey::new(&ns, name), p.clone());
                state.set_policy(&p);
            }
            Change::RemovePolicy(ns, name) => {
                let k = ObjectKey::new(ns, name);
                self.policies.remove(&k);
                state.remove_policy(&k);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// After any sequence of object changes the incremental model is the model built from all
    /// objects at once, and, on every node, the incremental table update applied to the previous
    /// table is the full render of the new model.
    #[test]
    fn incremental_model_and_table_update_equal_a_full_rebuild(
        changes in prop::collection::vec(arb_change(), 1..40)
    ) {
        use crate::plan::nftables::diff;
        let mut objects = Objects::default();
        let mut state = PolicyState::new(BTreeMap::new());
        let mut tables: Vec<_> = ["n0", "n1"]
            .iter()
            .map(|n| render_policy_table(state.model(), n))
            .collect();
        for c in &changes {
            objects.apply(c, &mut state);
            let full = build_policy_model(&objects.input());
            prop_assert_eq!(state.model(), &full, "after {:?}", c);
            for (i, node) in ["n0", "n1"].iter().enumerate() {
                let new = render_policy_table(&full, node);
                let ops = diff::diff(&tables[i], &new).unwrap();
                let applied = diff::apply(&tables[i], &ops).unwrap();
                prop_assert_eq!(diff::canonical(&applied), diff::canonical(&new));
                prop_assert_eq!(applied.validate(), Ok(()));
                if tables[i] == new {
                    prop_assert!(ops.is_empty());
                }
                tables[i] = applied;
            }
        }
    }
}

#[test]
fn a_pod_joining_a_selector_is_one_set_element_and_one_verdict_map_element() {
    use crate::plan::nftables::diff::{self, Op};
    let mut state = PolicyState::new(BTreeMap::new());
    let input = prop_cluster(vec![np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    for n in input.namespaces {
        state.set_namespace(n);
    }
    for p in input.pods {
        state.set_pod(p);
    }
    for p in &input.policies {
        state.set_policy(p);
    }
    let before = render_policy_table(state.model(), "n1");
    // an unrelated pod (no policy selects it, no set holds it) changes nothing
    assert!(state.set_pod(pod("y", "new", &[("pod", "zz")], "n1", &["198.18.0.40"])));
    let t = render_policy_table(state.model(), "n1");
    assert_eq!(diff::diff(&before, &t).unwrap(), vec![]);
    // a pod joining the peer set: one element of the set
    state.set_pod(pod("x", "b2", &[("pod", "b")], "n1", &["198.18.0.41"]));
    let t2 = render_policy_table(state.model(), "n1");
    let ops = diff::diff(&t, &t2).unwrap();
    assert!(
        matches!(ops.as_slice(), [Op::AddElements(s, e)] if s.starts_with("s_") && e.len() == 1),
        "{ops:?}"
    );
    // a pod the policy selects: its chain, its rules and its verdict-map element, nothing else
    state.set_pod(pod("x", "a2", &[("pod", "a")], "n1", &["198.18.0.42"]));
    let t3 = render_policy_table(state.model(), "n1");
    let ops = diff::diff(&t2, &t3).unwrap();
    let touched = diff::touched(&ops);
    assert_eq!(touched.len(), 2, "{ops:?}");
    assert!(touched.contains("in_4"), "{ops:?}");
    let text = diff::transaction(&t3, &ops);
    assert!(
        text.starts_with("add chain inet hybridnet_policy pod_"),
        "{text}"
    );
    assert!(!text.contains("delete table"), "{text}");
    // the previous table after the update is the new one
    assert_eq!(
        diff::canonical(&diff::apply(&t2, &ops).unwrap()),
        diff::canonical(&t3)
    );
}

//! NetworkPolicy enforced by the real kernel: two node namespaces joined by a link, pods as
//! namespaces behind veths (x/a, x/b on node1; y/a on node2), each node loading the table
//! `render_policy_table` built for it. TCP connects from inside the pods prove allow and deny on the
//! same node and across nodes, IPv4 and IPv6; the drop counter counts; a failed transaction leaves
//! the previous policy in force; a connection that becomes disallowed stops.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hybridnet_node::plan::policy::{
    ContainerPort, PolicyInput, PolicyNamespace, PolicyPod, Protocol, build_policy_model,
    next_generation, render_policy_table, set_generation,
};
use hybridnet_test_support::paced::spawn_in_netns;
use hybridnet_test_support::{Netns, may_run, require_root};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

struct Pod {
    ns: &'static str,
    name: &'static str,
    node: usize,
    v4: &'static str,
    v6: &'static str,
    netns: Netns,
}

struct Lab {
    nodes: Vec<Netns>,
    pods: Vec<Pod>,
    /// The generation of the tables last loaded (the agent gives every change a new one).
    generation: std::cell::Cell<u32>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Addresses usable at once (no duplicate address detection on the interfaces created later).
fn no_dad(n: &Netns) {
    for k in ["all", "default"] {
        n.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{k}.accept_dad=0")])
            .unwrap();
    }
}

fn build() -> Lab {
    let nodes = vec![Netns::new("node1"), Netns::new("node2")];
    for n in &nodes {
        n.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
        for k in ["all", "default"] {
            n.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{k}.forwarding=1")])
                .unwrap();
        }
        no_dad(n);
    }
    // node1 <-> node2
    nodes[0].ip(format!(
        "link add n12 type veth peer name n21 netns {}",
        nodes[1].name
    )
    .as_str());
    for (n, dev, v4, v6) in [
        (&nodes[0], "n12", "198.18.200.1/30", "fd00:200::1/64"),
        (&nodes[1], "n21", "198.18.200.2/30", "fd00:200::2/64"),
    ] {
        n.ip(format!("addr add {v4} dev {dev}").as_str());
        n.ip(format!("-6 addr add {v6} dev {dev} nodad").as_str());
        n.ip(format!("link set {dev} up").as_str());
    }
    nodes[0].ip("route add 198.18.202.0/24 via 198.18.200.2");
    nodes[0].ip("-6 route add fd00:202::/64 via fd00:200::2");
    nodes[1].ip("route add 198.18.201.0/24 via 198.18.200.1");
    nodes[1].ip("-6 route add fd00:201::/64 via fd00:200::1");
    let mut pods = vec![];
    for (i, (ns, name, node, v4, v6)) in [
        ("x", "a", 0, "198.18.201.1", "fd00:201::1"),
        ("x", "b", 0, "198.18.201.2", "fd00:201::2"),
        ("y", "a", 1, "198.18.202.1", "fd00:202::1"),
    ]
    .into_iter()
    .enumerate()
    {
        let netns = Netns::new(&format!("{ns}{name}"));
        no_dad(&netns);
        let host = format!("vp{i}");
        nodes[node].ip(format!(
            "link add {host} type veth peer name eth0 netns {}",
            netns.name
        )
        .as_str());
        nodes[node].ip(format!("addr add 169.254.1.1/32 dev {host}").as_str());
        nodes[node].ip(format!("-6 addr add fe80::1/64 dev {host} nodad").as_str());
        nodes[node].ip(format!("link set {host} up").as_str());
        nodes[node].ip(format!("route add {v4}/32 dev {host}").as_str());
        nodes[node].ip(format!("-6 route add {v6}/128 dev {host}").as_str());
        netns.ip(format!("addr add {v4}/32 dev eth0").as_str());
        netns.ip(format!("-6 addr add {v6}/128 dev eth0 nodad").as_str());
        netns.ip("link set eth0 up");
        netns.ip("route add 169.254.1.1 dev eth0");
        netns.ip("route add default via 169.254.1.1 dev eth0");
        netns.ip("-6 route add default via fe80::1 dev eth0");
        pods.push(Pod {
            ns,
            name,
            node,
            v4,
            v6,
            netns,
        });
    }
    Lab {
        nodes,
        pods,
        generation: std::cell::Cell::new(1),
    }
}

impl Lab {
    fn pod(&self, ns: &str, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.ns == ns && p.name == name)
            .unwrap()
    }

    fn input(&self, policies: &[(&str, &str, Value)]) -> PolicyInput {
        PolicyInput {
            policies: policies
                .iter()
                .map(|(ns, name, spec)| -> NetworkPolicy {
                    serde_json::from_value(
                        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}),
                    )
                    .unwrap()
                })
                .collect(),
            pods: self
                .pods
                .iter()
                .map(|p| PolicyPod {
                    namespace: p.ns.into(),
                    name: p.name.into(),
                    labels: BTreeMap::from([("pod".to_string(), p.name.to_string())]),
                    node: format!("node{}", p.node + 1),
                    ips: vec![ip(p.v4), ip(p.v6)],
                    ports: vec![ContainerPort {
                        name: "serve-80-tcp".into(),
                        protocol: Protocol::Tcp,
                        port: 80,
                    }],
                    host_network: false,
                })
                .collect(),
            namespaces: ["x", "y"]
                .iter()
                .map(|n| PolicyNamespace {
                    name: n.to_string(),
                    labels: BTreeMap::new(),
                })
                .collect(),
            nodes: BTreeMap::new(),
        }
    }

    /// Renders and loads each node's table under a new generation, as the agent does.
    fn enforce(&self, policies: &[(&str, &str, Value)]) {
        self.generation.set(next_generation(self.generation.get()));
        self.enforce_keeping_generation(policies);
    }

    /// [`Lab::enforce`] without a new generation: connections the previous tables allowed keep
    /// passing by their mark (what the agent must never do).
    fn enforce_keeping_generation(&self, policies: &[(&str, &str, Value)]) {
        let model = build_policy_model(&self.input(policies));
        assert!(model.problems.is_empty(), "{:?}", model.problems);
        for (i, n) in self.nodes.iter().enumerate() {
            let mut t = render_policy_table(&model, &format!("node{}", i + 1));
            set_generation(&mut t, self.generation.get());
            t.validate().unwrap();
            load(n, &t.transaction()).unwrap_or_else(|e| panic!("node{}: {e}", i + 1));
        }
    }
}

fn load(node: &Netns, script: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(hybridnet_test_support::unique_name("netpol-nft"));
    std::fs::write(&dir, script).map_err(|e| e.to_string())?;
    let r = node.exec(&["nft", "-f", dir.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&dir);
    r
}

/// Whether a TCP connection from `from` to `to`:`port` is established (and carries a byte).
fn connects(from: &Pod, to: &Pod, v6: bool, port: u16) -> bool {
    let addr = SocketAddr::new(ip(if v6 { to.v6 } else { to.v4 }), port);
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_in_netns(Some(&to.netns.name), move || {
        let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = tx.send(());
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            if let Ok((mut c, _)) = l.accept() {
                c.set_nonblocking(false).map_err(|e| e.to_string())?;
                let _ = c.write_all(b"!");
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(false)
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    let client = spawn_in_netns(Some(&from.netns.name), move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return Ok(false);
        };
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        Ok(s.read_exact(&mut b).is_ok())
    });
    let c = client.join().unwrap().unwrap();
    let s = server.join().unwrap().unwrap();
    c && s
}

/// (from ns/pod, to ns/pod, port, expected to connect)
type Case<'a> = ((&'a str, &'a str), (&'a str, &'a str), u16, bool);

fn check(lab: &Lab, cases: &[Case]) {
    let mut wrong = vec![];
    for v6 in [false, true] {
        for (from, to, port, want) in cases {
            // an allowed probe may retry (a path's first packet waits for neighbour resolution);
            // a denied one gets one 1 s attempt on a path an allowed probe has shown to work
            let tries = if *want { 5 } else { 1 };
            let got = (0..tries)
                .any(|_| connects(lab.pod(from.0, from.1), lab.pod(to.0, to.1), v6, *port));
            if got != *want {
                wrong.push(format!(
                    "{}/{} -> {}/{}:{port} IPv{}: want {}, got {}",
                    from.0,
                    from.1,
                    to.0,
                    to.1,
                    if v6 { 6 } else { 4 },
                    want,
                    got
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn drop_count(node: &Netns, chain: &str) -> u64 {
    let out = node
        .exec(&["nft", "list", "chain", "inet", "hybridnet_policy", chain])
        .unwrap();
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {out}"))
}

#[test]
fn policies_are_enforced_on_the_same_node_and_across_nodes() {
    let t = "policies_are_enforced_on_the_same_node_and_across_nodes";
    if !require_root(t) || !may_run(t, &["nft", "ip", "sysctl"]) {
        return;
    }
    let lab = build();
    // no policy: everything connects
    lab.enforce(&[]);
    check(
        &lab,
        &[
            (("x", "b"), ("x", "a"), 80, true),
            (("y", "a"), ("x", "a"), 81, true),
            (("x", "a"), ("y", "a"), 80, true),
        ],
    );

    // x/a accepts only x/b on the named port serve-80-tcp
    let ingress = (
        "x",
        "a-from-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": "serve-80-tcp"}]}]}),
    );
    lab.enforce(std::slice::from_ref(&ingress));
    let before = drop_count(&lab.nodes[0], "drop_ingress");
    check(
        &lab,
        &[
            (("x", "b"), ("x", "a"), 80, true),  // same node, allowed
            (("x", "b"), ("x", "a"), 81, false), // same node, other port
            (("y", "a"), ("x", "a"), 80, false), // across nodes, not selected
            (("x", "a"), ("y", "a"), 80, true),  // egress not isolated
            (("x", "a"), ("x", "b"), 81, true),  // x/b not isolated
        ],
    );
    assert!(drop_count(&lab.nodes[0], "drop_ingress") > before);

    // y's egress only to x/b:80 (enforced on node2), x/a's ingress as before (node1)
    let egress = (
        "y",
        "to-xb",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "198.18.201.2/32"}}, {"ipBlock": {"cidr": "fd00:201::2/128"}}], "ports": [{"port": 80}]}]}),
    );
    lab.enforce(&[ingress.clone(), egress.clone()]);
    check(
        &lab,
        &[
            (("y", "a"), ("x", "b"), 80, true),
            (("y", "a"), ("x", "b"), 81, false),
            (("y", "a"), ("x", "a"), 80, false),
            (("x", "b"), ("y", "a"), 80, true), // y/a's ingress is open; replies pass
        ],
    );

    // a transaction nft refuses changes nothing: the previous policy stays in force
    let model = build_policy_model(&lab.input(&[]));
    let bad = format!(
        "{}\nadd rule inet hybridnet_policy no_such_chain accept\n",
        render_policy_table(&model, "node1").transaction()
    );
    assert!(load(&lab.nodes[0], &bad).is_err());
    check(&lab, &[(("x", "b"), ("x", "a"), 81, false)]);
}

#[test]
fn a_connection_that_becomes_disallowed_stops_and_an_allowed_one_survives() {
    let t = "a_connection_that_becomes_disallowed_stops_and_an_allowed_one_survives";
    if !require_root(t) || !may_run(t, &["nft", "ip", "sysctl"]) {
        return;
    }
    let lab = build();
    lab.enforce(&[]);
    let (xb, xa, ya) = (lab.pod("x", "b"), lab.pod("x", "a"), lab.pod("y", "a"));
    let stream = |from: &Pod, to: &Pod| {
        hybridnet_test_support::paced::PacedStream::start(
            Some(&to.netns.name),
            Some(&from.netns.name),
            ip(to.v4),
            80,
            Duration::from_millis(20),
        )
        .unwrap()
    };
    let cut = stream(xb, xa); // same node, becomes disallowed
    let kept = stream(ya, xb); // across nodes, stays allowed
    cut.flowing_blocking(10, Duration::from_secs(10)).unwrap();
    kept.flowing_blocking(10, Duration::from_secs(10)).unwrap();
    // isolate x/a (nothing allowed) and x/b (y/a allowed): an unrelated change for y/a -> x/b
    let closed = [
        (
            "x",
            "a-closed",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]}),
        ),
        (
            "x",
            "b-from-y",
            json!({"podSelector": {"matchLabels": {"pod": "b"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}),
        ),
    ];
    // control: under the same generation the established stream passes by its conntrack mark
    // (later packets skip the policy chains), while a new connection is refused
    lab.enforce_keeping_generation(&closed);
    cut.flowing_blocking(10, Duration::from_secs(10)).unwrap();
    assert!(
        !connects(xb, xa, false, 81),
        "a new connection x/b -> x/a passed"
    );
    // a new generation: the mark of the older one is no pass, the rules decide again
    lab.enforce(&closed);
    let at = cut.delivered();
    std::thread::sleep(Duration::from_secs(2)); // the observable: nothing more arrives
    let after = cut.delivered();
    assert!(
        after <= at + 2,
        "the disallowed stream went on: {at} -> {after}"
    );
    kept.flowing_blocking(20, Duration::from_secs(10)).unwrap();
    let report = kept.finish().unwrap();
    report
        .gap_within(Duration::from_secs(1), "an unrelated policy change")
        .unwrap();
    drop(cut);
}

/// The counters `trace --live` reads (plan::policy::counters): the rule the model names for a flow
/// counts that flow's packets in the kernel, the isolated pod's drop rule counts a denied flow, and
/// neither counts the other's.
#[test]
fn the_rule_a_verdict_names_counts_the_flow() {
    use hybridnet_node::plan::policy::Flow;
    use hybridnet_node::plan::policy::counters::{counted_sides, counters_by_comment};
    let t = "the_rule_a_verdict_names_counts_the_flow";
    if !require_root(t) || !may_run(t, &["nft", "ip", "sysctl"]) {
        return;
    }
    let lab = build();
    let policies = [(
        "x",
        "a-from-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
    )];
    lab.enforce(&policies);
    let model = build_policy_model(&lab.input(&policies));
    let (xa, xb, ya) = (lab.pod("x", "a"), lab.pod("x", "b"), lab.pod("y", "a"));
    let side = |from: &Pod, to: &Pod| {
        let s = counted_sides(
            &model,
            &Flow {
                src: ip(from.v4),
                dst: ip(to.v4),
                protocol: Protocol::Tcp,
                port: 80,
            },
        );
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].node, "node1");
        s.into_iter().next().unwrap()
    };
    let allowed = side(xb, xa);
    let denied = side(ya, xa);
    assert!(allowed.allows && !denied.allows);
    let read = |comment: &str| {
        let out = lab.nodes[0]
            .exec(&["nft", "-j", "list", "table", "inet", "hybridnet_policy"])
            .unwrap();
        let c = counters_by_comment(&out, comment).unwrap();
        assert!(c.rules > 0, "no counted rule {comment:?} in {out}");
        c.packets
    };
    let (a0, d0) = (read(&allowed.comment), read(&denied.comment));
    for _ in 0..3 {
        assert!(connects(xb, xa, false, 80));
    }
    let a1 = read(&allowed.comment);
    // each connection's first packet passes the rule; its later ones pass by the connection's
    // conntrack mark (fewer than its SYN, ACK and FIN each)
    assert!((3..9).contains(&(a1 - a0)), "{a0} -> {a1}");
    assert_eq!(
        read(&denied.comment),
        d0,
        "an allowed flow counted as dropped"
    );
    assert!(!connects(ya, xa, false, 80));
    let d1 = read(&denied.comment);
    assert!(d1 > d0, "{d0} -> {d1}");
    assert_eq!(
        read(&allowed.comment),
        a1,
        "a denied flow counted as allowed"
    );
}

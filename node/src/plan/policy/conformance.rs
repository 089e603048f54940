//! The scenarios of the Kubernetes e2e NetworkPolicy suite (kubernetes/kubernetes
//! `test/e2e/network/netpol/network_policy.go`) as data: the same names, policies and truth tables,
//! extended to a fixed topology and a full matrix. Namespaces `x`, `y`, `z` hold pods `a`, `b`, `c`
//! (label `pod=<name>`), each serving TCP and UDP on ports 80 and 81 with container ports named
//! `serve-<port>-<tcp|udp>`; every scenario states the expected verdict of every (from, to, port,
//! protocol) of that matrix. The pure tests check them against [`super::evaluate`]; the lab probes
//! them from inside real pods. Loopback (a pod to itself) is not part of any table, as upstream.
//!
//! `{cidr:NS/POD}` in a policy is replaced by that pod's address as a host block (/32 or /128) of
//! the family under test, `{wide:NS/POD}` by the /4 around it (upstream's `makeLargeCIDRForIP`).

use serde_json::{Value, json};

use super::Protocol;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];
pub const PROTOCOLS: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

/// `ns/pod` or a wildcard for either part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodPattern {
    pub namespace: Option<&'static str>,
    pub pod: Option<&'static str>,
}

impl PodPattern {
    pub fn matches(&self, ns: &str, pod: &str) -> bool {
        self.namespace.is_none_or(|n| n == ns) && self.pod.is_none_or(|p| p == pod)
    }
}

/// Any pod.
pub const ANY: PodPattern = PodPattern {
    namespace: None,
    pod: None,
};

/// Every pod of a namespace.
pub const fn ns(n: &'static str) -> PodPattern {
    PodPattern {
        namespace: Some(n),
        pod: None,
    }
}

/// One pod.
pub const fn pod(n: &'static str, p: &'static str) -> PodPattern {
    PodPattern {
        namespace: Some(n),
        pod: Some(p),
    }
}

/// Sets the expected verdict of every (from, to) matching the patterns (later ones win).
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub from: PodPattern,
    pub to: PodPattern,
    pub allowed: bool,
}

pub const fn deny(from: PodPattern, to: PodPattern) -> Expect {
    Expect {
        from,
        to,
        allowed: false,
    }
}

pub const fn allow(from: PodPattern, to: PodPattern) -> Expect {
    Expect {
        from,
        to,
        allowed: true,
    }
}

/// Which (port, protocol) pairs an expectation list applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct On {
    pub ports: &'static [u16],
    pub protocols: &'static [Protocol],
}

pub const ALL: On = On {
    ports: &PORTS,
    protocols: &PROTOCOLS,
};
pub const TCP80: On = On {
    ports: &[80],
    protocols: &[Protocol::Tcp],
};
pub const TCP81: On = On {
    ports: &[81],
    protocols: &[Protocol::Tcp],
};
pub const UDP80: On = On {
    ports: &[80],
    protocols: &[Protocol::Udp],
};
pub const UDP81: On = On {
    ports: &[81],
    protocols: &[Protocol::Udp],
};
pub const SCTP: On = On {
    ports: &PORTS,
    protocols: &[Protocol::Sctp],
};

/// A change to the cluster.
#[derive(Clone, Debug)]
pub enum Change {
    /// Create or replace `namespace/name` with this spec.
    Policy {
        namespace: &'static str,
        name: &'static str,
        spec: Value,
    },
    DeleteAllPolicies,
    /// Add (or overwrite) labels of a pod.
    LabelPod {
        namespace: &'static str,
        pod: &'static str,
        labels: &'static [(&'static str, &'static str)],
    },
    LabelNamespace {
        namespace: &'static str,
        labels: &'static [(&'static str, &'static str)],
    },
}

/// Changes, then the expected truth table: `expect[i]` applies to `on[i]`; pairs not covered by
/// any `on` keep the default (allowed) with that step's expectations in `rest`.
#[derive(Clone, Debug)]
pub struct Step {
    pub changes: Vec<Change>,
    /// (where, expectations applied on top of "everything allowed").
    pub tables: Vec<(On, Vec<Expect>)>,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    /// The upstream test's name (`It("...")`).
    pub name: &'static str,
    pub steps: Vec<Step>,
    /// Also probes SCTP (upstream's SCTP context).
    pub sctp: bool,
}

impl Scenario {
    /// Expected verdict after step `step` for one probe.
    pub fn expected(
        &self,
        step: usize,
        from: (&str, &str),
        to: (&str, &str),
        port: u16,
        protocol: Protocol,
    ) -> bool {
        let mut ok = true;
        for (on, expects) in &self.steps[step].tables {
            if !on.ports.contains(&port) || !on.protocols.contains(&protocol) {
                continue;
            }
            for e in expects {
                if e.from.matches(from.0, from.1) && e.to.matches(to.0, to.1) {
                    ok = e.allowed;
                }
            }
        }
        ok
    }

    /// The (port, protocol) pairs probed.
    pub fn probes(&self) -> Vec<(u16, Protocol)> {
        let mut protos = PROTOCOLS.to_vec();
        if self.sctp {
            protos.push(Protocol::Sctp);
        }
        PORTS
            .iter()
            .flat_map(|p| protos.iter().map(move |pr| (*p, *pr)))
            .collect()
    }
}

/// Replaces `{cidr:ns/pod}` and `{wide:ns/pod}` in every string of `spec`.
pub fn instantiate(
    spec: &Value,
    addr_of: &dyn Fn(&str, &str) -> Option<std::net::IpAddr>,
) -> Value {
    match spec {
        Value::String(s) => {
            for (tag, wide) in [("{cidr:", false), ("{wide:", true)] {
                if let Some(rest) = s.strip_prefix(tag).and_then(|r| r.strip_suffix('}'))
                    && let Some((n, p)) = rest.split_once('/')
                    && let Some(ip) = addr_of(n, p)
                {
                    return json!(match (ip, wide) {
                        (std::net::IpAddr::V4(_), false) => format!("{ip}/32"),
                        (std::net::IpAddr::V6(_), false) => format!("{ip}/128"),
                        (std::net::IpAddr::V4(v4), true) => {
                            let first = u32::from(v4) & 0xf000_0000;
                            format!("{}/4", std::net::Ipv4Addr::from(first))
                        }
                        (std::net::IpAddr::V6(v6), true) => {
                            let first = u128::from(v6) & (0xf_u128 << 124);
                            format!("{}/4", std::net::Ipv6Addr::from(first))
                        }
                    });
                }
            }
            spec.clone()
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| instantiate(v, addr_of)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), instantiate(v, addr_of)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn policy(namespace: &'static str, name: &'static str, spec: Value) -> Change {
    Change::Policy {
        namespace,
        name,
        spec,
    }
}

fn step(changes: Vec<Change>, tables: Vec<(On, Vec<Expect>)>) -> Step {
    Step { changes, tables }
}

fn one(name: &'static str, changes: Vec<Change>, tables: Vec<(On, Vec<Expect>)>) -> Scenario {
    Scenario {
        name,
        steps: vec![step(changes, tables)],
        sctp: false,
    }
}

const NS_LABEL: &str = "kubernetes.io/metadata.name";

fn ns_is(n: &str) -> Value {
    json!({"matchLabels": {NS_LABEL: n}})
}

fn pod_is(p: &str) -> Value {
    json!({"matchLabels": {"pod": p}})
}

/// Deny-ingress for the pods of `sel` (policyTypes Ingress, no rule).
fn deny_ingress(sel: Value) -> Value {
    json!({"podSelector": sel, "policyTypes": ["Ingress"], "ingress": []})
}

/// Ingress rules for pods `pod=a` (types implied).
fn to_a(rules: Value) -> Value {
    json!({"podSelector": pod_is("a"), "policyTypes": ["Ingress"], "ingress": rules})
}

fn egress_of_a(rules: Value) -> Value {
    json!({"podSelector": pod_is("a"), "policyTypes": ["Egress"], "egress": rules})
}

/// Ingress to x/a only from namespace y, on TCP `port`.
fn from_y_on(port: Value, protocol: &str) -> Value {
    to_a(
        json!([{"from": [{"namespaceSelector": ns_is("y")}], "ports": [{"port": port, "protocol": protocol}]}]),
    )
}

/// x/a accepts only what `allowed` lists, everything else into x/a is denied.
fn only_into_xa(allowed: Vec<PodPattern>) -> Vec<Expect> {
    let mut v = vec![deny(ANY, pod("x", "a"))];
    v.extend(allowed.into_iter().map(|p| allow(p, pod("x", "a"))));
    v
}

/// Every scenario of the upstream suite (TCP, UDP and SCTP contexts).
pub fn scenarios() -> Vec<Scenario> {
    let mut s = vec![
        one(
            "should support a 'default-deny-ingress' policy",
            vec![policy("x", "deny-ingress", deny_ingress(json!({})))],
            vec![(ALL, vec![deny(ANY, ns("x"))])],
        ),
        one(
            "should support a 'default-deny-all' policy",
            vec![policy(
                "x",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}),
            )],
            vec![(ALL, vec![deny(ANY, ns("x")), deny(ns("x"), ANY)])],
        ),
        one(
            "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
            vec![policy(
                "x",
                "x-a-allows-x-b",
                to_a(json!([{"from": [{"podSelector": pod_is("b")}]}])),
            )],
            vec![(ALL, only_into_xa(vec![pod("x", "b")]))],
        ),
        one(
            "should enforce policy to allow ingress traffic for a target",
            vec![
                policy("x", "deny-all", deny_ingress(json!({}))),
                policy(
                    "x",
                    "allow-all-to-a",
                    to_a(json!([{"from": [{"podSelector": {}, "namespaceSelector": {}}]}])),
                ),
            ],
            vec![(ALL, vec![deny(ANY, ns("x")), allow(ANY, pod("x", "a"))])],
        ),
        one(
            "should enforce policy to allow ingress traffic from pods in all namespaces",
            vec![policy(
                "x",
                "allow-from-another-ns",
                to_a(json!([{"from": [{"namespaceSelector": {"matchLabels": {}}}]}])),
            )],
            vec![(ALL, vec![])],
        ),
        one(
            "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            vec![policy(
                "x",
                "allow-client-a-via-ns-selector",
                to_a(json!([{"from": [{"namespaceSelector": ns_is("y")}]}])),
            )],
            vec![(ALL, only_into_xa(vec![ns("y")]))],
        ),
        one(
            "should enforce policy based on PodSelector with MatchExpressions",
            vec![policy(
                "x",
                "x-a-allows-x-b",
                to_a(
                    json!([{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}]}]),
                ),
            )],
            vec![(ALL, only_into_xa(vec![pod("x", "b")]))],
        ),
        one(
            "should enforce policy based on NamespaceSelector with MatchExpressions",
            vec![policy(
                "x",
                "allow-ns-y-match-selector",
                to_a(
                    json!([{"from": [{"namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "In", "values": ["y"]}]}}]}]),
                ),
            )],
            vec![(ALL, only_into_xa(vec![ns("y")]))],
        ),
        one(
            "should enforce policy based on PodSelector or NamespaceSelector",
            vec![policy(
                "x",
                "allow-ns-y-match-selector",
                to_a(json!([{"from": [
                    {"namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "NotIn", "values": ["x"]}]}},
                    {"podSelector": pod_is("b")}]}])),
            )],
            vec![(ALL, only_into_xa(vec![ns("y"), ns("z"), pod("x", "b")]))],
        ),
        one(
            "should enforce policy based on PodSelector and NamespaceSelector",
            vec![policy(
                "x",
                "allow-ns-y-podselector-and-nsselector",
                to_a(json!([{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "NotIn", "values": ["x"]}]},
                    "podSelector": pod_is("b")}]}])),
            )],
            vec![(ALL, only_into_xa(vec![pod("y", "b"), pod("z", "b")]))],
        ),
        one(
            "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
            vec![policy(
                "x",
                "allow-ns-y-z-pod-b-c",
                to_a(json!([{"from": [{
                    "namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "NotIn", "values": ["x"]}]},
                    "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}])),
            )],
            vec![(
                ALL,
                only_into_xa(vec![
                    pod("y", "b"),
                    pod("y", "c"),
                    pod("z", "b"),
                    pod("z", "c"),
                ]),
            )],
        ),
        one(
            "should enforce policy based on any PodSelectors",
            vec![policy(
                "x",
                "allow-ns-x-pod-b-c",
                to_a(
                    json!([{"from": [{"podSelector": pod_is("b")}, {"podSelector": pod_is("c")}]}]),
                ),
            )],
            vec![(ALL, only_into_xa(vec![pod("x", "b"), pod("x", "c")]))],
        ),
        one(
            "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
            vec![policy(
                "x",
                "allow-ns-y-pod-a-via-namespace-pod-selector",
                to_a(
                    json!([{"from": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]),
                ),
            )],
            vec![(ALL, only_into_xa(vec![pod("y", "a")]))],
        ),
        one(
            "should enforce policy based on Ports",
            vec![policy(
                "x",
                "allow-client-a-via-ns-selector",
                from_y_on(json!(81), "TCP"),
            )],
            vec![
                (ALL, vec![deny(ANY, pod("x", "a"))]),
                (TCP81, vec![allow(ns("y"), pod("x", "a"))]),
            ],
        ),
        Scenario {
            name: "should enforce multiple, stacked policies with overlapping podSelectors",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-client-a-via-ns-selector",
                        from_y_on(json!(81), "TCP"),
                    )],
                    vec![
                        (ALL, vec![deny(ANY, pod("x", "a"))]),
                        (TCP81, vec![allow(ns("y"), pod("x", "a"))]),
                    ],
                ),
                step(
                    vec![policy(
                        "x",
                        "allow-client-a-via-ns-selector-80",
                        from_y_on(json!(80), "TCP"),
                    )],
                    vec![
                        (ALL, vec![deny(ANY, pod("x", "a"))]),
                        (TCP80, vec![allow(ns("y"), pod("x", "a"))]),
                        (TCP81, vec![allow(ns("y"), pod("x", "a"))]),
                    ],
                ),
            ],
            sctp: false,
        },
        one(
            "should support allow-all policy",
            vec![policy(
                "x",
                "allow-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
            )],
            vec![(ALL, vec![])],
        ),
        one(
            "should allow ingress access on one named port",
            vec![policy(
                "x",
                "allow-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
            )],
            vec![
                (ALL, vec![deny(ANY, ns("x"))]),
                (TCP81, vec![allow(ANY, ns("x"))]),
            ],
        ),
        one(
            "should allow ingress access from namespace on one named port",
            vec![policy(
                "x",
                "allow-client-a-via-ns-selector-80",
                from_y_on(json!("serve-80-tcp"), "TCP"),
            )],
            vec![
                (ALL, vec![deny(ANY, pod("x", "a"))]),
                (TCP80, vec![allow(ns("y"), pod("x", "a"))]),
            ],
        ),
        one(
            "should allow egress access on one named port",
            vec![policy(
                "x",
                "allow-egress",
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
            )],
            vec![
                (ALL, vec![deny(ns("x"), ANY)]),
                (TCP80, vec![allow(ns("x"), ANY)]),
            ],
        ),
        Scenario {
            name: "should enforce updated policy",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-all-mutate-to-deny-all",
                        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
                    )],
                    vec![(ALL, vec![])],
                ),
                step(
                    vec![policy(
                        "x",
                        "allow-all-mutate-to-deny-all",
                        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}),
                    )],
                    vec![(ALL, vec![deny(ANY, ns("x"))])],
                ),
            ],
            sctp: false,
        },
        Scenario {
            name: "should allow ingress access from updated namespace",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-client-a-via-ns-selector",
                        to_a(
                            json!([{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}]),
                        ),
                    )],
                    vec![(ALL, only_into_xa(vec![]))],
                ),
                step(
                    vec![Change::LabelNamespace {
                        namespace: "y",
                        labels: &[("ns2", "updated")],
                    }],
                    vec![(ALL, only_into_xa(vec![ns("y")]))],
                ),
            ],
            sctp: false,
        },
        Scenario {
            name: "should allow ingress access from updated pod",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-client-a-via-pod-selector",
                        to_a(
                            json!([{"from": [{"podSelector": {"matchLabels": {"pod": "b", "pod2": "updated"}}}]}]),
                        ),
                    )],
                    vec![(ALL, only_into_xa(vec![]))],
                ),
                step(
                    vec![Change::LabelPod {
                        namespace: "x",
                        pod: "b",
                        labels: &[("pod2", "updated")],
                    }],
                    vec![(ALL, only_into_xa(vec![pod("x", "b")]))],
                ),
            ],
            sctp: false,
        },
        one(
            "should deny ingress from pods on other namespaces",
            vec![policy(
                "x",
                "deny-empty-policy",
                json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {}}}]}]}),
            )],
            vec![(ALL, vec![deny(ns("y"), ns("x")), deny(ns("z"), ns("x"))])],
        ),
        Scenario {
            name: "should deny ingress access to updated pod",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "deny-ingress-via-label-selector",
                        deny_ingress(json!({"matchLabels": {"target": "isolated"}})),
                    )],
                    vec![(ALL, vec![])],
                ),
                step(
                    vec![Change::LabelPod {
                        namespace: "x",
                        pod: "a",
                        labels: &[("target", "isolated")],
                    }],
                    vec![(ALL, vec![deny(ANY, pod("x", "a"))])],
                ),
            ],
            sctp: false,
        },
        one(
            "should deny egress from pods based on PodSelector",
            vec![policy("x", "deny-egress-pod-a", egress_of_a(json!([])))],
            vec![(ALL, vec![deny(pod("x", "a"), ANY)])],
        ),
        one(
            "should deny egress from all pods in a namespace",
            vec![policy(
                "x",
                "deny-egress-ns-x",
                json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}),
            )],
            vec![(ALL, vec![deny(ns("x"), ANY)])],
        ),
        one(
            "should work with Ingress, Egress specified together",
            vec![policy(
                "x",
                "allow-client-a-via-pod-selector",
                json!({"podSelector": pod_is("a"), "policyTypes": ["Egress", "Ingress"],
                       "ingress": [{"from": [{"podSelector": pod_is("b")}]}],
                       "egress": [{"ports": [{"port": 80}]}]}),
            )],
            vec![
                (
                    ALL,
                    vec![
                        deny(ANY, pod("x", "a")),
                        allow(pod("x", "b"), pod("x", "a")),
                        deny(pod("x", "a"), ANY),
                    ],
                ),
                (
                    TCP80,
                    vec![
                        allow(pod("x", "a"), ANY),
                        deny(ANY, pod("x", "a")),
                        allow(pod("x", "b"), pod("x", "a")),
                    ],
                ),
            ],
        ),
        one(
            "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
            vec![
                policy(
                    "x",
                    "allow-to-ns-y-pod-a",
                    egress_of_a(
                        json!([{"to": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]),
                    ),
                ),
                policy(
                    "y",
                    "allow-from-xa-on-ya-match-selector",
                    to_a(
                        json!([{"from": [{"namespaceSelector": ns_is("x"), "podSelector": pod_is("a")}]}]),
                    ),
                ),
                policy(
                    "y",
                    "allow-from-xa-on-yb-match-selector",
                    json!({"podSelector": pod_is("b"), "policyTypes": ["Ingress"],
                           "ingress": [{"from": [{"namespaceSelector": ns_is("x"), "podSelector": pod_is("a")}]}]}),
                ),
            ],
            vec![(
                ALL,
                vec![
                    deny(pod("x", "a"), ANY),
                    deny(ANY, pod("y", "a")),
                    allow(pod("x", "a"), pod("y", "a")),
                    deny(ANY, pod("y", "b")),
                ],
            )],
        ),
        one(
            "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
            vec![policy(
                "x",
                "allow-to-ns-y-pod-a",
                egress_of_a(
                    json!([{"to": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]),
                ),
            )],
            vec![(
                ALL,
                vec![
                    deny(pod("x", "a"), ANY),
                    allow(pod("x", "a"), pod("y", "a")),
                ],
            )],
        ),
        one(
            "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
            vec![policy(
                "x",
                "allow-ingress-by-proto",
                to_a(json!([{"ports": [{"protocol": "TCP"}]}])),
            )],
            vec![
                (UDP80, vec![deny(ANY, pod("x", "a"))]),
                (UDP81, vec![deny(ANY, pod("x", "a"))]),
            ],
        ),
        Scenario {
            name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-ingress-port-80",
                        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 80}]}]}),
                    )],
                    vec![
                        (ALL, vec![deny(ANY, ns("x"))]),
                        (TCP80, vec![allow(ANY, ns("x"))]),
                    ],
                ),
                step(
                    vec![policy(
                        "x",
                        "allow-ingress",
                        json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}),
                    )],
                    vec![(ALL, vec![])],
                ),
            ],
            sctp: false,
        },
        Scenario {
            name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-egress-port-80",
                        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 80}]}]}),
                    )],
                    vec![
                        (ALL, vec![deny(ns("x"), ANY)]),
                        (TCP80, vec![allow(ns("x"), ANY)]),
                    ],
                ),
                step(
                    vec![policy(
                        "x",
                        "allow-egress",
                        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
                    )],
                    vec![(ALL, vec![])],
                ),
            ],
            sctp: false,
        },
        Scenario {
            name: "should stop enforcing policies after they are deleted",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "deny-all",
                        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}),
                    )],
                    vec![(ALL, vec![deny(ns("x"), ANY), deny(ANY, ns("x"))])],
                ),
                step(vec![Change::DeleteAllPolicies], vec![(ALL, vec![])]),
            ],
            sctp: false,
        },
        one(
            "should allow egress access to server in CIDR block",
            vec![policy(
                "x",
                "allow-client-a-via-cidr-egress-rule",
                egress_of_a(json!([{"to": [{"ipBlock": {"cidr": "{cidr:y/b}"}}]}])),
            )],
            vec![(
                ALL,
                vec![
                    deny(pod("x", "a"), ANY),
                    allow(pod("x", "a"), pod("y", "b")),
                ],
            )],
        ),
        one(
            "should enforce except clause while egress access to server in CIDR block",
            vec![policy(
                "x",
                "allow-client-a-via-cidr-egress-rule",
                egress_of_a(
                    json!([{"to": [{"ipBlock": {"cidr": "{wide:x/b}", "except": ["{cidr:x/b}"]}}]}]),
                ),
            )],
            // every pod address of the lab is in the same /4, so only x/b is cut
            vec![(ALL, vec![deny(pod("x", "a"), pod("x", "b"))])],
        ),
        Scenario {
            name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-client-a-via-cidr-egress-rule",
                        egress_of_a(
                            json!([{"to": [{"ipBlock": {"cidr": "{wide:x/b}", "except": ["{cidr:x/b}"]}}]}]),
                        ),
                    )],
                    vec![(ALL, vec![deny(pod("x", "a"), pod("x", "b"))])],
                ),
                step(
                    vec![policy(
                        "x",
                        "allow-client-a-via-cidr-egress-rule",
                        egress_of_a(json!([{"to": [{"ipBlock": {"cidr": "{cidr:x/b}"}}]}])),
                    )],
                    vec![(
                        ALL,
                        vec![
                            deny(pod("x", "a"), ANY),
                            allow(pod("x", "a"), pod("x", "b")),
                        ],
                    )],
                ),
            ],
            sctp: false,
        },
        Scenario {
            name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
            steps: vec![
                step(
                    vec![policy(
                        "x",
                        "allow-egress-for-target",
                        egress_of_a(json!([{}])),
                    )],
                    vec![(ALL, vec![])],
                ),
                step(
                    vec![policy(
                        "x",
                        "deny-ingress-via-label-selector",
                        deny_ingress(pod_is("a")),
                    )],
                    vec![(ALL, vec![deny(ANY, pod("x", "a"))])],
                ),
            ],
            sctp: false,
        },
        Scenario {
            name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
            steps: vec![step(
                vec![
                    policy("x", "deny-ingress", deny_ingress(json!({}))),
                    policy(
                        "x",
                        "allow-only-sctp-ingress-on-port-81",
                        to_a(json!([{"ports": [{"port": 81, "protocol": "SCTP"}]}])),
                    ),
                ],
                vec![
                    (ALL, vec![deny(ANY, ns("x"))]),
                    (SCTP, vec![deny(ANY, ns("x"))]),
                    (
                        On {
                            ports: &[81],
                            protocols: &[Protocol::Sctp],
                        },
                        vec![allow(ANY, pod("x", "a"))],
                    ),
                ],
            )],
            sctp: true,
        },
        Scenario {
            name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
            steps: vec![step(
                vec![policy(
                    "x",
                    "allow-only-sctp-ingress-on-port-80",
                    to_a(json!([{"ports": [{"port": 80, "protocol": "SCTP"}]}])),
                )],
                vec![
                    (ALL, vec![deny(ANY, pod("x", "a"))]),
                    (
                        On {
                            ports: &[81],
                            protocols: &[Protocol::Sctp],
                        },
                        vec![deny(ANY, pod("x", "a"))],
                    ),
                ],
            )],
            sctp: true,
        },
        one(
            "should not allow access by TCP when a policy specifies only UDP",
            vec![policy(
                "x",
                "allow-only-udp-ingress-on-port-81",
                to_a(json!([{"ports": [{"port": 81, "protocol": "UDP"}]}])),
            )],
            vec![
                (ALL, vec![deny(ANY, pod("x", "a"))]),
                (UDP81, vec![allow(ANY, pod("x", "a"))]),
            ],
        ),
        one(
            "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
            vec![policy(
                "x",
                "allow-client-a-via-ns-selector-for-immutable-ns-label",
                to_a(json!([{"from": [{"namespaceSelector": ns_is("y")}]}])),
            )],
            vec![(ALL, only_into_xa(vec![ns("y")]))],
        ),
        one(
            "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
            vec![policy(
                "x",
                "allow-ns-y-match-selector-for-immutable-ns-label",
                egress_of_a(
                    json!([{"to": [{"namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "NotIn", "values": ["y"]}]}}]}]),
                ),
            )],
            vec![(ALL, vec![deny(pod("x", "a"), ns("y"))])],
        ),
        // "NetworkPolicy between server and client using UDP"
        one(
            "UDP: should support a 'default-deny-ingress' policy",
            vec![policy("x", "deny-all", deny_ingress(json!({})))],
            vec![(ALL, vec![deny(ANY, ns("x"))])],
        ),
        one(
            "UDP: should enforce policy based on Ports",
            vec![policy(
                "x",
                "allow-ingress-on-port-81-ns-x",
                from_y_on(json!(81), "UDP"),
            )],
            vec![
                (ALL, vec![deny(ANY, pod("x", "a"))]),
                (UDP81, vec![allow(ns("y"), pod("x", "a"))]),
            ],
        ),
        one(
            "UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
            vec![policy(
                "x",
                "allow-ns-y-pod-a-via-namespace-pod-selector",
                to_a(
                    json!([{"from": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}]),
                ),
            )],
            vec![(ALL, only_into_xa(vec![pod("y", "a")]))],
        ),
    ];
    // "NetworkPolicy between server and client using SCTP"
    s.push(Scenario {
        name: "SCTP: should support a 'default-deny-ingress' policy",
        steps: vec![step(
            vec![policy("x", "deny-all", deny_ingress(json!({})))],
            vec![
                (ALL, vec![deny(ANY, ns("x"))]),
                (SCTP, vec![deny(ANY, ns("x"))]),
            ],
        )],
        sctp: true,
    });
    s.push(Scenario {
        name: "SCTP: should enforce policy based on Ports",
        steps: vec![step(
            vec![policy(
                "x",
                "allow-ingress-on-port-81-ns-x",
                from_y_on(json!(81), "SCTP"),
            )],
            vec![
                (ALL, vec![deny(ANY, pod("x", "a"))]),
                (SCTP, vec![deny(ANY, pod("x", "a"))]),
                (
                    On {
                        ports: &[81],
                        protocols: &[Protocol::Sctp],
                    },
                    vec![allow(ns("y"), pod("x", "a"))],
                ),
            ],
        )],
        sctp: true,
    });
    s.push(Scenario {
        name: "SCTP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
        steps: vec![step(
            vec![policy(
                "x",
                "allow-ns-y-pod-a-via-namespace-pod-selector",
                to_a(json!([{"from": [{"namespaceSelector": ns_is("y"), "podSelector": pod_is("a")}]}])),
            )],
            vec![
                (ALL, only_into_xa(vec![pod("y", "a")])),
                (SCTP, only_into_xa(vec![pod("y", "a")])),
            ],
        )],
        sctp: true,
    });
    s
}

//! The Kubernetes e2e NetworkPolicy scenarios (plan::policy::conformance) against the pure model:
//! for every scenario, step, family (IPv4 and IPv6) and (from, to, port, protocol) of the 3 x 3 pod
//! matrix, the evaluator's verdict must equal the scenario's truth table.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::net::IpAddr;

use hybridnet_node::plan::policy::conformance::{Change, NAMESPACES, PODS, instantiate, scenarios};
use hybridnet_node::plan::policy::{
    ContainerPort, Flow, PolicyInput, PolicyNamespace, PolicyPod, Protocol, build_policy_model,
    evaluate,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

fn addr(v6: bool, ns: usize, pod: usize) -> IpAddr {
    let k = ns * 3 + pod + 1;
    if v6 {
        format!("fd00:18::{k}").parse().unwrap()
    } else {
        format!("198.18.64.{k}").parse().unwrap()
    }
}

fn initial() -> PolicyInput {
    let mut pods = vec![];
    for (i, n) in NAMESPACES.iter().enumerate() {
        for (j, p) in PODS.iter().enumerate() {
            let mut ports = vec![];
            for port in [80u16, 81] {
                for (proto, s) in [
                    (Protocol::Tcp, "tcp"),
                    (Protocol::Udp, "udp"),
                    (Protocol::Sctp, "sctp"),
                ] {
                    ports.push(ContainerPort {
                        name: format!("serve-{port}-{s}"),
                        protocol: proto,
                        port,
                    });
                }
            }
            pods.push(PolicyPod {
                namespace: n.to_string(),
                name: p.to_string(),
                labels: BTreeMap::from([("pod".to_string(), p.to_string())]),
                node: format!("node{}", (i + j) % 3),
                ips: vec![addr(false, i, j), addr(true, i, j)],
                ports,
                host_network: false,
            });
        }
    }
    PolicyInput {
        policies: vec![],
        pods,
        namespaces: NAMESPACES
            .iter()
            .map(|n| PolicyNamespace {
                name: n.to_string(),
                labels: BTreeMap::new(),
            })
            .collect(),
        nodes: BTreeMap::new(),
    }
}

fn apply(input: &mut PolicyInput, change: &Change, v6: bool) {
    let addr_of = |n: &str, p: &str| {
        let i = NAMESPACES.iter().position(|x| *x == n)?;
        let j = PODS.iter().position(|x| *x == p)?;
        Some(addr(v6, i, j))
    };
    match change {
        Change::Policy {
            namespace,
            name,
            spec,
        } => {
            input.policies.retain(|p| {
                !(p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name))
            });
            let np: NetworkPolicy = serde_json::from_value(json!({
                "metadata": {"namespace": namespace, "name": name},
                "spec": instantiate(spec, &addr_of),
            }))
            .unwrap();
            input.policies.push(np);
        }
        Change::DeleteAllPolicies => input.policies.clear(),
        Change::LabelPod {
            namespace,
            pod,
            labels,
        } => {
            let p = input
                .pods
                .iter_mut()
                .find(|p| p.namespace == *namespace && p.name == *pod)
                .unwrap();
            for (k, v) in labels.iter() {
                p.labels.insert(k.to_string(), v.to_string());
            }
        }
        Change::LabelNamespace { namespace, labels } => {
            let n = input
                .namespaces
                .iter_mut()
                .find(|n| n.name == *namespace)
                .unwrap();
            for (k, v) in labels.iter() {
                n.labels.insert(k.to_string(), v.to_string());
            }
        }
    }
}

#[test]
fn kubernetes_e2e_scenarios_hold_in_the_model_ipv4_and_ipv6() {
    let all = scenarios();
    let mut failures = vec![];
    let mut checks = 0;
    for sc in &all {
        for v6 in [false, true] {
            let mut input = initial();
            for (si, step) in sc.steps.iter().enumerate() {
                for c in &step.changes {
                    apply(&mut input, c, v6);
                }
                let model = build_policy_model(&input);
                assert!(
                    model.problems.is_empty(),
                    "{}: {:?}",
                    sc.name,
                    model.problems
                );
                for (fi, fns) in NAMESPACES.iter().enumerate() {
                    for (fj, fp) in PODS.iter().enumerate() {
                        for (ti, tns) in NAMESPACES.iter().enumerate() {
                            for (tj, tp) in PODS.iter().enumerate() {
                                if (fi, fj) == (ti, tj) {
                                    continue; // loopback is no part of the tables (as upstream)
                                }
                                for (port, protocol) in sc.probes() {
                                    let flow = Flow {
                                        src: addr(v6, fi, fj),
                                        dst: addr(v6, ti, tj),
                                        protocol,
                                        port,
                                    };
                                    let got = evaluate(&model, &flow);
                                    let want =
                                        sc.expected(si, (fns, fp), (tns, tp), port, protocol);
                                    checks += 1;
                                    if got.allowed() != want {
                                        failures.push(format!(
                                            "{} [step {si}, {}] {fns}/{fp} -> {tns}/{tp} {port}/{protocol}: want {}, got {:?}",
                                            sc.name,
                                            if v6 { "IPv6" } else { "IPv4" },
                                            if want { "allowed" } else { "denied" },
                                            got
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} probes differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 72 ordered pod pairs x 4 (port, protocol) x 2 families per step at least
    assert!(checks >= all.len() * 72 * 4 * 2, "{checks}");
}

#[test]
fn every_upstream_scenario_is_there_once() {
    let all = scenarios();
    let mut names: Vec<&str> = all.iter().map(|s| s.name).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate scenario names");
    // network_policy.go: 42 in the TCP context, 3 UDP, 3 SCTP
    assert_eq!(n, 48);
    // a truth table that is not all-allowed in every scenario but the allow-all ones
    let trivial: Vec<&str> = all
        .iter()
        .filter(|s| {
            s.steps
                .iter()
                .all(|st| st.tables.iter().all(|(_, e)| e.iter().all(|x| x.allowed)))
        })
        .map(|s| s.name)
        .collect();
    assert_eq!(
        trivial,
        vec![
            "should enforce policy to allow ingress traffic from pods in all namespaces",
            "should support allow-all policy"
        ]
    );
}

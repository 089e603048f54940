//! The real `hybridnet-node` enforcing NetworkPolicy against kube-lite: it programs its table
//! (`inet hybridnet_policy`) for the pods on its node from watched Pods, IPInstances, Namespaces
//! and NetworkPolicies, follows changes, posts an Event on a policy it cannot fully program, counts
//! the programming latency, and keeps enforcing across a restart (the table stays while no agent
//! runs and the new agent replaces it with the same one).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;

fn pod(name: &str, label: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"pod": label}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                 "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .unwrap()
}

fn policy(name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"}, "spec": spec
    }))
    .unwrap()
}

fn table(n: &Netns) -> String {
    n.exec(&["nft", "list", "table", "inet", "hybridnet_policy"])
        .unwrap_or_default()
}

#[test]
fn agent_enforces_network_policy_and_reports_problems() {
    let t = "agent_enforces_network_policy_and_reports_problems";
    if !require_root(t) || !may_run(t, &["nft"]) {
        return;
    }
    let cpns = Netns::new("cp");
    let n1 = Netns::new("n1");
    veth(&cpns, "eth0", &n1, "eth0");
    cpns.ip("addr add 198.18.0.250/24 dev eth0");
    n1.ip("addr add 198.18.0.11/24 dev eth0");
    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));
    for (name, label, node, addr) in [
        ("a", "a", "n1", "198.19.0.1"),
        ("b", "b", "n1", "198.19.0.2"),
        ("r", "b", "n2", "198.19.0.3"),
    ] {
        cp.create_ns("default", &pod(name, label, node));
        cp.create_ns(
            "default",
            &ipinstance(
                "default",
                name,
                addr,
                "overlay",
                "ov4",
                node,
                "02:aa:00:00:00:01",
            ),
        );
    }
    cp.create_ns(
        "default",
        &policy(
            "a-from-b",
            serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": "http"}]}]}),
        ),
    );
    let agent = start_agent(&n1, "n1", &cp.kubeconfig, 11031, &[]);
    // x/a isolated: its address dispatches to its chain; the set of pod=b holds b and r
    let listing = wait_for("policy table with a's chain", 30, || {
        let l = table(&n1);
        (l.contains("198.19.0.1 : jump pod") && l.contains("198.19.0.3")).then_some(l)
    });
    assert!(
        !listing.contains("198.19.0.2 : jump"),
        "b is not isolated: {listing}"
    );
    assert!(
        listing.contains("198.19.0.1 . tcp . 8080"),
        "named port of a: {listing}"
    );

    // a change is followed: b becomes isolated too (deny all ingress)
    cp.create_ns(
        "default",
        &policy(
            "deny-b",
            serde_json::json!({"podSelector": {"matchLabels": {"pod": "b"}}}),
        ),
    );
    wait_for("b dispatched", 10, || {
        table(&n1).contains("198.19.0.2 : jump pod").then_some(())
    });

    // a broken policy: an Event on it, and it opens nothing (its only peer matches nothing)
    cp.create_ns(
        "default",
        &policy(
            "bad",
            serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.19.0.0/99"}}]}]}),
        ),
    );
    let ev = wait_for("InvalidPolicy event on default/bad", 15, || {
        let evs: Vec<Event> = cp.run(|c| async move {
            kube::Api::<Event>::namespaced(c, "default")
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
        });
        evs.into_iter().find(|e| {
            e.reason.as_deref() == Some("InvalidPolicy")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
        })
    });
    let note = ev.note.unwrap_or_default();
    assert!(
        note.contains("spec.ingress[0].from[0].ipBlock.cidr"),
        "{note}"
    );
    assert_eq!(ev.reporting_instance.as_deref(), Some("n1"));

    let (_, metrics) = wait_for("policy metrics", 10, || {
        http_get(&n1, "198.18.0.11:11031", "/metrics")
            .filter(|(_, m)| m.contains("hybridnet_node_policy_programming_duration_seconds_count"))
    });
    assert!(
        metrics.contains("hybridnet_node_policy_dropped_packets_total{direction=\"ingress\"}"),
        "{metrics}"
    );

    // restart: the table stays while no agent runs, and the new agent leaves it as it was
    let before = wait_for("stable table", 10, || {
        let l = table(&n1);
        l.contains("198.19.0.2 : jump pod").then_some(l)
    });
    drop(agent);
    assert_eq!(
        table(&n1),
        before,
        "the table changed when the agent stopped"
    );
    let _agent = start_agent(&n1, "n1", &cp.kubeconfig, 11031, &[]);
    // the new agent replaces the table once (its first transaction) after its watches synced
    wait_for("restarted agent programmed its table", 30, || {
        http_get(&n1, "198.18.0.11:11031", "/metrics").filter(|(_, m)| {
            m.contains("hybridnet_node_policy_programming_duration_seconds_count 1")
        })
    });
    // the same definitions; the order nft lists them in is the order they were created in, and
    // an incremental update creates a new chain or set after the existing ones
    // the new agent continues after the generation of the table it found (connections allowed
    // by the older rules carry that one)
    let now = table(&n1);
    let (g0, g1) = (
        hybridnet_node::plan::policy::generation_in_listing(&before),
        hybridnet_node::plan::policy::generation_in_listing(&now),
    );
    assert!(
        g0.is_some() && g1 > g0,
        "generation {g0:?} -> {g1:?}:\n{now}"
    );
    let strip = |s: &str| {
        let body = s
            .lines()
            .filter(|l| {
                !l.contains("counter packets")
                    && !l.contains("ct mark")
                    && !l.starts_with("table ")
                    && *l != "}"
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut blocks: Vec<String> = body.split("\n\n").map(|b| b.trim().to_string()).collect();
        blocks.sort();
        blocks
    };
    assert_eq!(strip(&table(&n1)), strip(&before));
}

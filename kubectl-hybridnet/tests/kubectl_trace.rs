//! `kubectl hybridnet trace` for the traffic flows of docs/cli.md, against known
//! answers, through the real kubectl against kube-lite.
//!
//! Topology: node1 (rack=a) and node2 (rack=a) are in the VLAN network vlan100 (VLAN 100) and,
//! like every node, in the overlay network (VNI 4); node3 (rack=b) is in the BGP network (AS 65010,
//! peer 192.0.2.254). Node addresses 192.0.2.1x are also their VTEPs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use serde_json::Value;

struct Topology {
    c: Cluster,
}

async fn topology() -> Topology {
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    let cl = &c.client;
    for (n, ip, rack, mac) in [
        ("node1", "192.0.2.11", "a", "02:00:00:00:00:11"),
        ("node2", "192.0.2.12", "a", "02:00:00:00:00:12"),
        ("node3", "192.0.2.13", "b", "02:00:00:00:00:13"),
    ] {
        node(cl, n, ip, &[("rack", rack)]).await;
        nodeinfo(cl, n, ip, mac).await;
    }
    overlay_and_vlan100(k).await;
    create_subnet(
        k,
        "overlay-nonat",
        "overlay",
        "10.245.0.0/24",
        &["--no-nat"],
    )
    .await;
    create_subnet(
        k,
        "vlan100-a",
        "vlan100",
        "192.168.100.0/24",
        &["--gateway", "192.168.100.1"],
    )
    .await;
    kubectl(
        k,
        &[
            "network",
            "create",
            "bgp",
            "--asn",
            "65010",
            "--peer",
            "65000@192.0.2.254",
            "--node-selector",
            "rack=b",
        ],
    )
    .await
    .ok();
    create_subnet(k, "bgp-a", "bgp", "172.16.0.0/24", &[]).await;
    network_nodes(cl, "overlay", &["node1", "node2", "node3"]).await;
    network_nodes(cl, "vlan100", &["node1", "node2"]).await;
    network_nodes(cl, "bgp", &["node3"]).await;
    for (name, node, ip, subnet, network, prefix) in [
        ("o1", "node1", "10.244.0.10", "overlay-a", "overlay", 24),
        ("o2", "node2", "10.244.0.11", "overlay-a", "overlay", 24),
        ("o3", "node1", "10.244.0.12", "overlay-a", "overlay", 24),
        ("x1", "node1", "10.245.0.10", "overlay-nonat", "overlay", 24),
        ("u1", "node1", "192.168.100.10", "vlan100-a", "vlan100", 24),
        ("u2", "node2", "192.168.100.11", "vlan100-a", "vlan100", 24),
        ("b1", "node3", "172.16.0.10", "bgp-a", "bgp", 24),
    ] {
        let uid = pod(cl, "default", name, node, Some(ip), None).await;
        ipinstance(
            cl,
            "default",
            ip,
            prefix,
            subnet,
            network,
            Some((name, &uid)),
            Some(node),
            ("Pod", name, &uid),
            true,
        )
        .await;
    }
    Topology { c }
}

impl Topology {
    async fn trace(&self, args: &[&str]) -> Value {
        let mut a = vec!["trace"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let r = kubectl(&self.c.kubeconfig, &a).await;
        r.ok().json()
    }
}

fn veth(pod: &str) -> String {
    hybridnet_api::naming::host_veth_name("default", pod)
}

fn hop(v: &Value, i: usize) -> &Value {
    &v["hops"][i]["result"]
}

fn rule(h: &Value) -> (u64, u64) {
    (
        h["rule"]["priority"].as_u64().unwrap_or(0),
        h["rule"]["table"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_of_the_spec() {
    if !kubectl_available() {
        return;
    }
    let t = topology().await;

    // any -> local pod (same node): rule 1 (39999) `/32 dev hybr..`.
    let v = t.trace(&["o1", "--to", "o3"]).await;
    assert_eq!(v["hops"].as_array().unwrap().len(), 1, "{v:#}");
    let h = hop(&v, 0);
    assert_eq!(rule(h), (1000, 39999), "{v:#}");
    assert_eq!(h["dev"], veth("o3"));
    assert_eq!(h["outcome"]["LocalPod"]["pod"], "o3");

    // pod -> own node: local delivery.
    let v = t.trace(&["o1", "--to", "node/node1"]).await;
    assert_eq!(hop(&v, 0)["outcome"], "LocalDelivery", "{v:#}");

    // overlay pod -> overlay pod on another node: 40000 `cidr dev vxlan` -> VXLAN to node2's VTEP
    // -> node2: 39999 -> pod.
    let v = t.trace(&["o1", "--to", "o2"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (1001, 40000), "{v:#}");
    assert_eq!(h["dev"], "eth0.vxlan4");
    assert_eq!(h["encapsulation"]["remote_vtep"], "192.0.2.12");
    assert_eq!(h["encapsulation"]["remote_node"], "node2");
    assert_eq!(h["encapsulation"]["vni"], 4);
    assert_eq!(h["encapsulation"]["udp_port"], 8472);
    assert_eq!(h["masquerade"], false);
    let d = hop(&v, 1);
    assert_eq!(v["hops"][1]["node"], "node2");
    assert_eq!(v["hops"][1]["query"]["iif"], "eth0.vxlan4");
    assert_eq!(rule(d), (1000, 39999), "{v:#}");
    assert_eq!(d["outcome"]["LocalPod"]["veth"], veth("o2"));

    // overlay pod -> underlay pod: the subnet table (autoNat) routes the underlay CIDR into the
    // VXLAN device, no NAT; node2 delivers.
    let v = t.trace(&["o1", "--to", "u2"]).await;
    let h = hop(&v, 0);
    assert_eq!(h["rule"]["priority"], 1003, "{v:#}");
    assert!(
        h["rule"]["table"].as_u64().unwrap() >= 10000
            && h["rule"]["table"].as_u64().unwrap() < 39999,
        "{v:#}"
    );
    assert_eq!(h["route"], "192.168.100.0/24 dev eth0.vxlan4");
    assert_eq!(h["encapsulation"]["remote_node"], "node2");
    assert_eq!(h["masquerade"], false);
    assert_eq!(hop(&v, 1)["outcome"]["LocalPod"]["pod"], "u2");
    // ... except the underlay gateway: a throw route sends it to main (then masquerade).
    let v = t.trace(&["o1", "--to", "192.168.100.1"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (32766, 254), "{v:#}");
    assert!(
        h["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("throw")),
        "{v:#}"
    );
    assert_eq!(h["masquerade"], true);

    // overlay pod (no NAT) -> underlay pod: `default dev vxlan`.
    let v = t.trace(&["x1", "--to", "u2"]).await;
    let h = hop(&v, 0);
    assert_eq!(h["route"], "0.0.0.0/0 dev eth0.vxlan4", "{v:#}");
    assert_eq!(h["encapsulation"]["remote_node"], "node2");

    // underlay pod -> overlay pod: rule 2 (40000) comes before the subnet rule -> VXLAN.
    let v = t.trace(&["u1", "--to", "o2"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (1001, 40000), "{v:#}");
    assert_eq!(h["encapsulation"]["remote_node"], "node2");
    assert_eq!(hop(&v, 1)["outcome"]["LocalPod"]["pod"], "o2");

    // underlay VLAN pod -> underlay pod of the same subnet on another node: the subnet table's
    // `cidr dev vlanIf scope link`, no encapsulation; node2 delivers from its VLAN interface.
    let v = t.trace(&["u1", "--to", "u2"]).await;
    let h = hop(&v, 0);
    assert_eq!(h["rule"]["priority"], 1003, "{v:#}");
    assert_eq!(h["route"], "192.168.100.0/24 dev eth0.100 scope link");
    assert!(h["encapsulation"].is_null());
    assert_eq!(v["hops"][1]["query"]["iif"], "eth0.100");
    assert_eq!(hop(&v, 1)["outcome"]["LocalPod"]["pod"], "u2", "{v:#}");

    // underlay VLAN pod -> elsewhere: `default via <gateway> dev vlanIf`, no NAT.
    let v = t.trace(&["u1", "--to", "198.51.100.7"]).await;
    let h = hop(&v, 0);
    assert_eq!(
        h["route"], "0.0.0.0/0 via 192.168.100.1 dev eth0.100",
        "{v:#}"
    );
    assert_eq!(h["next_hop"], "192.168.100.1");
    assert_eq!(h["masquerade"], false);

    // underlay BGP pod -> outside: `default via <peer>`, no NAT.
    let v = t.trace(&["b1"]).await;
    let h = hop(&v, 0);
    assert_eq!(h["route"], "0.0.0.0/0 via 192.0.2.254 dev eth0", "{v:#}");
    assert_eq!(h["masquerade"], false);

    // overlay pod -> outside (autoNat): no match in the subnet table -> main -> MASQUERADE.
    let v = t.trace(&["o1", "--to", "198.51.100.7"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (32766, 254), "{v:#}");
    assert_eq!(h["masquerade"], true);
    assert_eq!(h["outcome"], "Forwarded");

    // overlay pod -> outside without autoNat: `default dev vxlan`, a new connection to a
    // non-cluster address is rejected.
    let v = t.trace(&["x1", "--to", "198.51.100.7"]).await;
    let h = hop(&v, 0);
    assert_eq!(h["route"], "0.0.0.0/0 dev eth0.vxlan4", "{v:#}");
    assert!(
        h["outcome"]["Filtered"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a cluster address"),
        "{v:#}"
    );

    // node -> remote overlay pod: rule 2 -> VXLAN -> node2 -> pod.
    let v = t.trace(&["node/node1", "--to", "o2"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (1001, 40000), "{v:#}");
    assert_eq!(h["encapsulation"]["remote_node"], "node2");
    assert_eq!(hop(&v, 1)["outcome"]["LocalPod"]["pod"], "o2");

    // A reply of an overlay pod to another node's IP: marked 0x20 -> rule 3 (40001) `default dev
    // vxlan` -> back to that node through VXLAN.
    let v = t.trace(&["o2", "--to", "node/node1", "--reply"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (1002, 40001), "{v:#}");
    assert_eq!(h["encapsulation"]["remote_node"], "node1");
    assert_eq!(hop(&v, 1)["outcome"], "LocalDelivery", "{v:#}");

    // overlay pod -> other node IP (new connection): main table -> MASQUERADE.
    let v = t.trace(&["o2", "--to", "node/node1"]).await;
    let h = hop(&v, 0);
    assert_eq!(rule(h), (32766, 254), "{v:#}");
    assert_eq!(h["masquerade"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_text_output_and_errors() {
    if !kubectl_available() {
        return;
    }
    let t = topology().await;
    let k = t.c.kubeconfig.as_path();
    let r = kubectl(k, &["trace", "o1", "--to", "o2"]).await;
    r.ok();
    capture("trace-overlay", "kubectl hybridnet trace o1 --to o2", &r);
    assert!(
        r.stdout.starts_with(
            "pod default/o1 (10.244.0.10) on node1 -> pod default/o2 (10.244.0.11) on node2\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("=> VXLAN VNI 4 UDP 8472: 192.0.2.11 -> VTEP 192.0.2.12 (node node2)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("summary: node1: rule 1001 table 40000"),
        "{}",
        r.stdout
    );
    let r = kubectl(k, &["trace", "u1", "--to", "u2"]).await;
    capture("trace-vlan", "kubectl hybridnet trace u1 --to u2", r.ok());
    let r = kubectl(k, &["trace", "o1"]).await;
    capture("trace-outside", "kubectl hybridnet trace o1", r.ok());
    assert!(r.stdout.contains("NAT: source masqueraded"), "{}", r.stdout);

    let r = kubectl(k, &["trace", "nope"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("pod default/nope not found"),
        "{}",
        r.stderr
    );
    let r = kubectl(k, &["trace", "o1", "--to", "fd00::1"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no IPv6 address"), "{}", r.stderr);
    let r = kubectl(k, &["trace", "node/nope"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("node \"nope\" not found"), "{}", r.stderr);
    // --live needs node agent pods; kube-lite has none (and cannot exec): say so, show the plan.
    let r = kubectl(k, &["trace", "o1", "--to", "o2", "--live"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("node1 $ ip route get 10.244.0.11 from 10.244.0.10 iif hybr"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("node2 $ ip route get 10.244.0.11 from 10.244.0.10 iif eth0.vxlan4"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("no node agent pod on node node1 (namespace hybridnet-system"),
        "{}",
        r.stdout
    );
    // With an agent pod on node1 the plugin runs `kubectl exec` into it; kube-lite cannot exec,
    // so kubectl's own error is shown for node1, and node2 still has no agent.
    namespace(&t.c.client, "hybridnet-system").await;
    let agents: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(t.c.client.clone(), "hybridnet-system");
    let mut p = k8s_openapi::api::core::v1::Pod::default();
    p.metadata.name = Some("hybridnet-node-x1".into());
    p.metadata.labels = Some(
        [(
            "app.kubernetes.io/name".to_string(),
            "hybridnet-node".to_string(),
        )]
        .into(),
    );
    p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        node_name: Some("node1".into()),
        host_network: Some(true),
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "agent".into(),
            image: Some("hybridnet".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    agents.create(&Default::default(), &p).await.unwrap();
    let r = kubectl(k, &["trace", "o1", "--to", "o2", "--live"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("error: kubectl exec hybridnet-node-x1 failed:"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("no node agent pod on node node2"),
        "{}",
        r.stdout
    );
    capture(
        "trace-live",
        "kubectl hybridnet trace o1 --to o2 --live",
        &r,
    );
}

/// Sets (or, with `None`, removes) node1's published route-tables annotation.
async fn publish_tables(t: &Topology, value: Option<&str>) {
    use kube::api::{Patch, PatchParams};
    let api: kube::Api<hybridnet_api::v1::NodeInfo> = kube::Api::all(t.c.client.clone());
    let patch =
        serde_json::json!({"metadata": {"annotations": {"hybridnet.io/route-tables": value}}});
    api.patch("node1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate NodeInfo node1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_numbers_come_from_the_published_assignment() {
    if !kubectl_available() {
        return;
    }
    let t = topology().await;
    let k = t.c.kubeconfig.as_path();
    // Without the annotation: the numbers a freshly started agent picks, and the note says so.
    let v = t.trace(&["u1", "--to", "u2"]).await;
    let fresh = rule(hop(&v, 0));
    assert_eq!(fresh.0, 1003, "{v:#}");
    assert_eq!(v["hops"][0]["tablesPublished"], false, "{v:#}");
    let r = kubectl(k, &["trace", "u1", "--to", "u2"]).await;
    assert!(
        r.stdout
            .contains("table numbers are those a freshly started agent picks"),
        "{}",
        r.stdout
    );

    // node1's agent published other numbers (as after a restart that adopted the kernel's).
    let published = 10000 + (fresh.1 - 10000 + 5) % 20;
    publish_tables(
        &t,
        Some(&format!(
            r#"{{"4":{{"192.168.100.0/24":{published},"10.244.0.0/24":{fresh}}}}}"#,
            fresh = fresh.1
        )),
    )
    .await;
    let v = t.trace(&["u1", "--to", "u2"]).await;
    assert_eq!(rule(hop(&v, 0)), (1003, published), "{v:#}");
    assert_eq!(v["hops"][0]["tablesPublished"], true, "{v:#}");
    // node2 published nothing: its hop still says so.
    assert_eq!(v["hops"][1]["tablesPublished"], false, "{v:#}");
    // The overlay subnet's table is the published one as well.
    let v = t.trace(&["o1", "--to", "u2"]).await;
    assert_eq!(rule(hop(&v, 0)), (1003, fresh.1), "{v:#}");
    let r = kubectl(k, &["trace", "u1", "--to", "192.168.100.77"]).await;
    assert!(
        r.stdout.contains(&format!("table {published}"))
            && r.stdout
                .contains("table numbers are those the node agents published"),
        "{}",
        r.stdout
    );

    // A malformed annotation: not used, the hop names the problem, nothing fails.
    publish_tables(&t, Some(r#"{"4":{"192.168.100.0/24":"x"}}"#)).await;
    let v = t.trace(&["u1", "--to", "u2"]).await;
    assert_eq!(rule(hop(&v, 0)), fresh, "{v:#}");
    assert_eq!(v["hops"][0]["tablesPublished"], false, "{v:#}");
    assert!(
        v["hops"][0]["planProblems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("hybridnet.io/route-tables")),
        "{v:#}"
    );
    publish_tables(&t, None).await;
    let v = t.trace(&["u1", "--to", "u2"]).await;
    assert_eq!(rule(hop(&v, 0)), fresh, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_verdict_on_each_side() {
    if !kubectl_available() {
        return;
    }
    let t = topology().await;
    // before any policy: nothing isolated
    let v = t.trace(&["o2", "--to", "o3", "--port", "80"]).await;
    assert_eq!(v["policy"]["allowed"], true, "{v:#}");
    assert_eq!(
        v["policy"]["ingress"],
        "default/o3: not isolated: no policy selects the pod"
    );
    let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "only-o1", "namespace": "default"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.10/32"}}], "ports": [{"port": 80}]}]}
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
        t.c.client.clone(),
        "default",
    )
    .create(&Default::default(), &np)
    .await
    .unwrap();
    let v = t.trace(&["o2", "--to", "o3", "--port", "80"]).await;
    assert_eq!(v["policy"]["allowed"], false, "{v:#}");
    assert_eq!(
        v["policy"]["ingress"],
        "default/o3: denied: isolated by default/only-o1 and no rule allows it"
    );
    let v = t.trace(&["o1", "--to", "o3", "--port", "80/tcp"]).await;
    assert_eq!(v["policy"]["allowed"], true, "{v:#}");
    assert_eq!(
        v["policy"]["ingress"],
        "default/o3: allowed by default/only-o1 rule 0"
    );
    assert_eq!(
        v["policy"]["counted"][0]["comment"], "default/only-o1 ingress rule 0",
        "{v:#}"
    );
    // --live reads that rule's counters on o3's node through its agent pod; kube-lite has none
    let r = kubectl(
        &t.c.kubeconfig,
        &[
            "trace", "o1", "--to", "o3", "--port", "80", "--live", "-o", "json",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    let live: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let c = &live["policy"]["live"][0];
    assert_eq!(c["comment"], "default/only-o1 ingress rule 0", "{live:#}");
    assert_eq!(c["node"], v["policy"]["counted"][0]["node"], "{live:#}");
    assert!(
        c["error"]
            .as_str()
            .is_some_and(|e| e.contains("no node agent pod on node")),
        "{live:#}"
    );
    let v = t.trace(&["o1", "--to", "o3", "--port", "80/udp"]).await;
    assert_eq!(v["policy"]["allowed"], false, "{v:#}");
    assert_eq!(
        v["policy"]["counted"][0]["comment"], "default/o3: isolated for ingress",
        "{v:#}"
    );
    // without --port: which policies isolate each side; text output has the section
    let r = kubectl(&t.c.kubeconfig, &["trace", "o1", "--to", "o3"]).await;
    let text = r.ok().stdout.clone();
    assert!(
        text.contains("isolated for ingress by default/only-o1"),
        "{text}"
    );
    let r = kubectl(
        &t.c.kubeconfig,
        &["trace", "o1", "--to", "o3", "--port", "80/icmp"],
    )
    .await;
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("tcp, udp or sctp"), "{}", r.stderr);
}

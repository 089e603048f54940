//! Status, node labels and taint, NodeInfo clean-up, IPInstance release and the leak detector,
//! against kube-lite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::{finalizer, label, taint};
use hybridnet_api::v1::{
    Address, Binding, IPInstance, IPInstanceSpec, IpVersion, Network, NetworkType, NodeInfo,
    NodeInfoSpec, Subnet,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

async fn node_labels(env: &Env, name: &str) -> std::collections::BTreeMap<String, String> {
    Api::<Node>::all(env.client.clone())
        .get(name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

async fn tainted(env: &Env, name: &str) -> bool {
    Api::<Node>::all(env.client.clone())
        .get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .any(|t| t.key == taint::NETWORK_UNAVAILABLE && t.effect == "NoSchedule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_labels_taint_status_and_release() {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.unwrap()).await;
    env.node("n1", &[("network", "u1")]).await;
    env.node("n2", &[("other", "x")]).await;

    // No network at all: both nodes get the taint.
    wait_for("n1 and n2 tainted", || async {
        tainted(&env, "n1").await && tainted(&env, "n2").await
    })
    .await;

    // An underlay network with a small subnet: n1 joins (attachment + quota), loses the taint.
    env.create_network(network(
        "u1",
        NetworkType::Underlay,
        Some(0),
        Some(("network", "u1")),
    ))
    .await
    .unwrap();
    let mut s = subnet_of(
        "u1-sub",
        "u1",
        IpVersion::V4,
        "10.8.0.0/29",
        Some("10.8.0.1"),
    );
    s.spec.range.reserved_ips = Some(vec!["10.8.0.6".into()]);
    env.create_subnet(s).await.unwrap();
    wait_for("n1 attached and untainted", || async {
        let l = node_labels(&env, "n1").await;
        l.get(label::UNDERLAY_NETWORK_ATTACHMENT)
            .map(String::as_str)
            == Some("true")
            && l.get(label::IPV4_ADDRESS_QUOTA).map(String::as_str) == Some("nonempty")
            && l.get(label::IPV6_ADDRESS_QUOTA).map(String::as_str) == Some("empty")
            && !tainted(&env, "n1").await
    })
    .await;
    assert!(tainted(&env, "n2").await);

    // Status: 10.8.0.2-.5 allocatable (gateway .1 and reserved .6 excluded).
    let nets: Api<Network> = Api::all(env.client.clone());
    let subs: Api<Subnet> = Api::all(env.client.clone());
    wait_for("network status", || async {
        let st = nets.get("u1").await.unwrap().status.unwrap_or_default();
        st.node_list == Some(vec!["n1".to_string()])
            && st.subnet_list == Some(vec!["u1-sub".to_string()])
            && st
                .statistics
                .is_some_and(|c| c.total == Some(4) && c.available == Some(4))
    })
    .await;

    // Fill the subnet: quota becomes empty; status counts and the cursor follow.
    for i in 0..4 {
        env.pod(pod("default", &format!("p{i}"), "n1", &[])).await;
    }
    let mut last = String::new();
    for i in 0..4 {
        last = ip_of(&env.allocated("default", &format!("p{i}"), 1).await[0]);
    }
    wait_for("subnet full", || async {
        let st = subs.get("u1-sub").await.unwrap().status.unwrap_or_default();
        st.used == Some(4)
            && st.available == Some(0)
            && st.last_allocated_ip.as_deref() == Some(last.as_str())
    })
    .await;
    wait_for("quota empty", || async {
        node_labels(&env, "n1")
            .await
            .get(label::IPV4_ADDRESS_QUOTA)
            .map(String::as_str)
            == Some("empty")
    })
    .await;
    // The webhook now refuses nothing for underlay pods but they cannot be placed; the quota
    // selector keeps them off n1. Deleting an IPInstance frees its address.
    let victim = env.instances_of("default", "p0").await.remove(0);
    Api::<IPInstance>::namespaced(env.client.clone(), "default")
        .delete(&victim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_for("released and quota nonempty", || async {
        let st = subs.get("u1-sub").await.unwrap().status.unwrap_or_default();
        st.used == Some(3)
            && node_labels(&env, "n1")
                .await
                .get(label::IPV4_ADDRESS_QUOTA)
                .map(String::as_str)
                == Some("nonempty")
    })
    .await;
    assert!(
        Api::<IPInstance>::namespaced(env.client.clone(), "default")
            .get_opt(&victim.name_any())
            .await
            .unwrap()
            .is_none(),
        "finalizer not removed"
    );

    // An overlay network attaches every node; n2 loses the taint.
    env.create_network(network("o", NetworkType::Overlay, Some(4), None))
        .await
        .unwrap();
    wait_for("n2 attached to overlay, untainted", || async {
        node_labels(&env, "n2")
            .await
            .get(label::OVERLAY_NETWORK_ATTACHMENT)
            .map(String::as_str)
            == Some("true")
            && !tainted(&env, "n2").await
    })
    .await;
    wait_for("overlay nodeList", || async {
        nets.get("o")
            .await
            .unwrap()
            .status
            .and_then(|s| s.node_list)
            == Some(vec!["n1".into(), "n2".into()])
    })
    .await;

    // Metrics served over HTTP.
    let addr = r.metrics_addr.unwrap();
    let text = http_get(addr, "/metrics").await;
    assert!(
        text.contains(
            "hybridnet_ip_usage{network_name=\"u1\",ip_family=\"ipv4\",usage_type=\"used\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("hybridnet_subnet_ip_usage"), "{text}");
    assert!(
        text.contains("hybridnet_ip_allocation_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("hybridnet_leader 1"), "{text}");
    // Upstream's names and labels too (pkg/metrics/metrics.go in alibaba/hybridnet).
    assert!(
        text.contains("ip_usage{networkName=\"u1\",ipFamily=\"ipv4\",usageType=\"used\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("subnet_ip_usage{subnetName=\"u1-sub\",networkName=\"u1\",usageType="),
        "{text}"
    );
    assert!(
        text.contains("ip_allocation_period_count{allocateType=\"normal\",success=\"true\"}"),
        "{text}"
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeinfo_cleanup_and_leak_detector() {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.unwrap()).await;
    env.node("n1", &[("network", "u1")]).await;
    env.underlay("u1", "u1-sub", "10.9.0.0/24", "10.9.0.1")
        .await;
    env.network_ready("u1", true, false).await;

    // A NodeInfo of a node that does not exist is removed; one of a live node stays.
    let infos: Api<NodeInfo> = Api::all(env.client.clone());
    let create_info = |n: String| {
        let infos = infos.clone();
        async move {
            infos
                .create(
                    &PostParams::default(),
                    &NodeInfo::new(&n, NodeInfoSpec::default()),
                )
                .await
                .unwrap();
        }
    };
    for n in ["n1", "ghost"] {
        create_info(n.to_string()).await;
    }
    wait_for("ghost NodeInfo deleted", || async {
        matches!(infos.get_opt("ghost").await, Ok(None))
    })
    .await;
    assert!(infos.get_opt("n1").await.unwrap().is_some());

    // Nodes that go while their NodeInfos stay (their agents stopped, nothing touches the
    // NodeInfos again): every NodeInfo goes with its Node. The deletion reaches the controller
    // and the shared Node cache through two watches in either order; many nodes at once make
    // both orders happen.
    let nodes: Api<Node> = Api::all(env.client.clone());
    let leavers: Vec<String> = (0..24).map(|i| format!("leaver-{i}")).collect();
    for n in &leavers {
        env.node(n, &[]).await;
        create_info(n.clone()).await;
    }
    // Each NodeInfo was reconciled as a live node's (the controller saw both objects).
    wait_for(
        "the leavers' NodeInfos kept while their nodes exist",
        || async {
            let mut all = true;
            for n in &leavers {
                all &= matches!(infos.get_opt(n).await, Ok(Some(_)));
            }
            all
        },
    )
    .await;
    for n in &leavers {
        nodes.delete(n, &DeleteParams::default()).await.unwrap();
    }
    wait_for("every leaver's NodeInfo deleted with its node", || async {
        let mut none = true;
        for n in &leavers {
            none &= matches!(infos.get_opt(n).await, Ok(None));
        }
        none
    })
    .await;
    assert!(infos.get_opt("n1").await.unwrap().is_some());

    // A leaked IPInstance: its pod never existed and nothing retains it (no owner reference,
    // so garbage collection does not remove it).
    let leaked = IPInstance {
        metadata: ObjectMeta {
            name: Some("10-9-0-77".into()),
            namespace: Some("default".into()),
            labels: Some(map(&[
                (label::POD, "nobody"),
                (label::SUBNET, "u1-sub"),
                (label::NETWORK, "u1"),
            ])),
            finalizers: Some(vec![finalizer::IP_ALLOCATED.into()]),
            ..Default::default()
        },
        spec: IPInstanceSpec {
            network: "u1".into(),
            subnet: "u1-sub".into(),
            address: Address {
                version: IpVersion::V4,
                ip: "10.9.0.77/24".into(),
                gateway: Some("10.9.0.1".into()),
                net_id: Some(0),
                mac: "02:12:34:00:00:77".into(),
            },
            binding: Binding {
                referred_object: Some(hybridnet_api::v1::ReferredObject {
                    kind: Some("Pod".into()),
                    name: Some("nobody".into()),
                    uid: Some("0000".into()),
                }),
                node_name: Some("n1".into()),
                pod_uid: Some("0000".into()),
                pod_name: Some("nobody".into()),
                stateful: None,
            },
        },
        status: None,
    };
    Api::<IPInstance>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &leaked)
        .await
        .unwrap();
    wait_for("leaked IPInstance repaired", || async {
        env.instances_of("default", "nobody").await.is_empty()
    })
    .await;

    // A Running pod whose IPInstance vanished behind the controller's back gets addresses again.
    env.pod(pod("default", "runner", "n1", &[])).await;
    env.set_pod_status("default", "runner", running()).await;
    let first = env.allocated("default", "runner", 1).await;
    // Delete it without the IPInstance controller noticing the pod (the pod record is dropped
    // when the IPInstance goes).
    Api::<IPInstance>::namespaced(env.client.clone(), "default")
        .delete(&first[0].name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let again = env.allocated("default", "runner", 1).await;
    assert_eq!(again.len(), 1);
    let text = r.metrics.encode();
    assert!(
        text.contains("hybridnet_ip_leaks_repaired_total{kind=\"ipinstance-without-pod\"}"),
        "{text}"
    );
    assert!(
        text.contains("hybridnet_ip_leaks_found_total{kind=\"pod-without-ipinstance\"}"),
        "{text}"
    );
}

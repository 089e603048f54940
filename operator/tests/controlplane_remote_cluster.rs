//! RemoteCluster status through two kube-lite API servers: the operator of cluster A connects to
//! cluster B (HTTPS, the CA and a client certificate inline as upstream has them), runs the four
//! checks and writes state and conditions; bad input (an unreachable endpoint, a wrong CA, a
//! Secret reference, a second RemoteCluster for the same cluster) gives Offline with a condition
//! that says what is wrong. Credentials from a Secret reach B as well. While Ready, B's Subnets and nodes are mirrored in A and follow B;
//! the mirrors go with the RemoteCluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::{finalizer, label};
use hybridnet_api::multicluster::credentials::{ClientAuth, Credentials};
use hybridnet_api::multicluster::status::condition;
use hybridnet_api::multicluster::{
    RemoteCluster, RemoteClusterSpec, RemoteClusterStatus, RemoteSubnet, RemoteVtep, SecretRef,
};
use hybridnet_api::v1::{IPInstance, IpVersion, NetworkType, NodeInfo, Subnet};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

fn rc(name: &str, endpoint: &str, ca: &str, client: &TestCerts) -> RemoteCluster {
    inline_remote_cluster(name, endpoint, ca, client)
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Node `node1` of cluster B with its VTEP (192.0.2.31), as B's agent records it.
fn remote_node1() -> NodeInfo {
    serde_json::from_value(json!({
        "apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
        "metadata": {"name": "node1"},
        "spec": {"vtepInfo": {"ip": "192.0.2.31", "mac": "52:54:00:00:00:31",
                              "localIPs": ["192.0.2.31"]}}
    }))
    .unwrap()
}

/// A pod address `ip` of subnet `init` in cluster B, bound to `node` (empty: none).
fn remote_pod_address(name: &str, ip: &str, node: &str) -> IPInstance {
    serde_json::from_value(json!({
        "apiVersion": "networking.alibaba.com/v1", "kind": "IPInstance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"network": "init", "subnet": "init",
                 "address": {"version": "4", "ip": ip, "mac": "02:00:00:00:00:01"},
                 "binding": {"nodeName": node}}
    }))
    .unwrap()
}

/// Waits until RemoteCluster `name` in `api` has `state` and returns its status.
async fn state(api: &Api<RemoteCluster>, name: &str, want: &str) -> RemoteClusterStatus {
    let mut last = None;
    for _ in 0..400 {
        let s = api.get(name).await.unwrap().status;
        if s.as_ref().and_then(|s| s.state.as_deref()) == Some(want) {
            return s.unwrap();
        }
        last = s;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{name} never became {want}; last status {last:#?}");
}

fn cond<'a>(
    s: &'a RemoteClusterStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} in {s:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cluster_status_from_a_second_api_server() {
    // Cluster A: the operator's.
    let (a, r, a_uid) = multicluster_a(test_config("a-1")).await;

    // Cluster B: HTTPS, the hybridnet CRDs, its own overlay network and subnet.
    let b = remote_api("198.19.0.0/20").await;
    let bc = b.client.clone();
    let b_uid = uid_of_kube_system(&bc).await;
    let b_ca = b.ca.clone();
    let b_url = b.url.clone();
    let client_cert = make_certs();

    let rcs: Api<RemoteCluster> = Api::all(a.client.clone());
    let pp = PostParams::default();

    // Connected, but B has no RemoteCluster pointing back: NotReady, naming the check.
    rcs.create(&pp, &rc("cluster-b", &b_url, &b_ca, &client_cert))
        .await
        .unwrap();
    let s = state(&rcs, "cluster-b", "NotReady").await;
    assert_eq!(s.uuid.as_deref(), Some(b_uid.as_str()));
    assert_eq!(cond(&s, condition::CONNECTED).status, "True");
    assert_eq!(cond(&s, condition::HEALTH_PROBE).status, "True");
    assert_eq!(cond(&s, condition::OVERLAY_NET_ID_MATCH).status, "True");
    assert_eq!(cond(&s, condition::SUBNET_NON_CROSS).status, "True");
    let bi = cond(&s, condition::BIDIRECTIONAL_CONNECTION);
    assert_eq!(
        (bi.status.as_str(), bi.reason.as_str()),
        ("False", "CheckFail")
    );
    assert!(bi.message.contains(&a_uid), "{}", bi.message);
    let generation = rcs.get("cluster-b").await.unwrap().metadata.generation;
    assert!(
        s.conditions
            .iter()
            .flatten()
            .all(|c| c.observed_generation == generation)
    );

    // B gets its RemoteCluster for A (as B's operator would record A's identity): Ready.
    let brcs: Api<RemoteCluster> = Api::all(bc.clone());
    brcs.create(
        &pp,
        &rc("cluster-a", "https://192.0.2.1:6443", &b_ca, &client_cert),
    )
    .await
    .unwrap();
    brcs.patch_status(
        "cluster-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"uuid": a_uid, "state": "Ready"}})),
    )
    .await
    .unwrap();
    let s = state(&rcs, "cluster-b", "Ready").await;
    // Upstream's finalizer on a RemoteCluster the operator runs.
    wait_for("the manager-runtime-registered finalizer", || async {
        rcs.get("cluster-b")
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|f| f == finalizer::MANAGER_RUNTIME_REGISTERED)
    })
    .await;
    for t in condition::CHECKS {
        assert_eq!(cond(&s, t).status, "True", "{t}");
    }
    // Upstream's check-duration histogram is served.
    let metrics = metrics_text(r.metrics_addr.unwrap()).await;
    assert!(
        metrics.contains("remote_cluster_status_check_duration_count{clusterName=\"cluster-b\"}"),
        "{metrics}"
    );

    // Ready: B's subnets and nodes are mirrored here, and follow B.
    let mirrors: Api<RemoteSubnet> = Api::all(a.client.clone());
    let vteps: Api<RemoteVtep> = Api::all(a.client.clone());
    wait_for("cluster-b.init mirrored", || async {
        mirrors.get_opt("cluster-b.init").await.unwrap().is_some()
    })
    .await;
    let m = mirrors.get("cluster-b.init").await.unwrap();
    assert_eq!(m.spec.range.cidr, "198.19.0.0/20");
    assert_eq!(m.spec.network_type, Some(NetworkType::Overlay));
    assert_eq!(m.spec.cluster_name.as_deref(), Some("cluster-b"));
    assert_eq!(m.labels()[label::CLUSTER], "cluster-b");
    assert!(m.status.and_then(|s| s.last_modify_time).is_some());
    let b_nodeinfos: Api<NodeInfo> = Api::all(bc.clone());
    b_nodeinfos.create(&pp, &remote_node1()).await.unwrap();
    let b_ipis: Api<IPInstance> = Api::namespaced(bc.clone(), "default");
    for (name, ip, node) in [
        ("198-19-0-5", "198.19.0.5/20", "node1"),
        ("198-19-0-12", "198.19.0.12/20", "node1"),
        ("198-19-0-9", "198.19.0.9/20", ""),
    ] {
        b_ipis
            .create(&pp, &remote_pod_address(name, ip, node))
            .await
            .unwrap();
    }
    wait_for("cluster-b.node1 mirrored with its pods", || async {
        vteps
            .get_opt("cluster-b.node1")
            .await
            .unwrap()
            .and_then(|v| v.spec.endpoint_ip_list)
            == Some(vec!["198.19.0.12".to_string(), "198.19.0.5".to_string()])
    })
    .await;
    let v = vteps.get("cluster-b.node1").await.unwrap();
    assert_eq!(
        (v.spec.ip.as_deref(), v.spec.mac.as_deref()),
        (Some("192.0.2.31"), Some("52:54:00:00:00:31"))
    );
    // A subnet added in B is mirrored, and goes when B removes it.
    let b_subnets: Api<Subnet> = Api::all(bc.clone());
    b_subnets
        .create(
            &pp,
            &subnet_of("extra", "init", IpVersion::V4, "198.19.32.0/24", None),
        )
        .await
        .unwrap();
    wait_for("cluster-b.extra mirrored", || async {
        mirrors.get_opt("cluster-b.extra").await.unwrap().is_some()
    })
    .await;
    b_subnets
        .delete("extra", &Default::default())
        .await
        .unwrap();
    wait_for("cluster-b.extra gone", || async {
        mirrors.get_opt("cluster-b.extra").await.unwrap().is_none()
    })
    .await;

    // A remote subnet crossing a local one: NotReady, SubnetNonCross names both.
    Api::<Subnet>::all(bc.clone())
        .create(
            &PostParams::default(),
            &subnet_of("clash", "init", IpVersion::V4, "198.18.8.0/24", None),
        )
        .await
        .unwrap();
    let s = state(&rcs, "cluster-b", "NotReady").await;
    let m = &cond(&s, condition::SUBNET_NON_CROSS).message;
    assert!(
        m.contains("\"clash\"") && m.contains("local subnet \"init\""),
        "{m}"
    );

    // Bad input, each Offline with the reason in Connected.
    let other_ca = make_certs().ca_pem;
    let mut ns = Namespace::default();
    ns.metadata.name = Some("hybridnet-system".into());
    let _ = Api::<Namespace>::all(a.client.clone())
        .create(&pp, &ns)
        .await;
    let secrets: Api<Secret> = Api::namespaced(a.client.clone(), "hybridnet-system");
    let b_credentials = Credentials {
        ca_pem: b_ca.as_bytes().to_vec(),
        auth: ClientAuth::Certificate {
            cert_pem: client_cert.cert_pem.as_bytes().to_vec(),
            key_pem: client_cert.key_pem.as_bytes().to_vec(),
        },
    };
    let mut half = b_credentials.to_secret_data();
    half.remove("tls.key");
    for (name, data) in [
        ("half", half),
        ("b-credentials", b_credentials.to_secret_data()),
    ] {
        let mut secret = Secret {
            data: Some(data),
            ..Default::default()
        };
        secret.metadata.name = Some(name.into());
        secrets.create(&pp, &secret).await.unwrap();
    }
    for (name, rc, reason, says) in [
        (
            "unreachable",
            rc("unreachable", "https://127.0.0.1:1", &b_ca, &client_cert),
            "Unreachable",
            "Connection refused",
        ),
        (
            "wrong-ca",
            rc("wrong-ca", &b_url, &other_ca, &client_cert),
            "Unreachable",
            "invalid peer certificate",
        ),
        (
            "in-a-secret",
            RemoteCluster::new(
                "in-a-secret",
                RemoteClusterSpec {
                    api_endpoint: b_url.clone(),
                    credentials_secret_ref: Some(SecretRef {
                        namespace: "hybridnet-system".into(),
                        name: "b".into(),
                    }),
                    ..Default::default()
                },
            ),
            "InvalidConfig",
            "Secret hybridnet-system/b does not exist",
        ),
        (
            "bad-secret",
            RemoteCluster::new(
                "bad-secret",
                RemoteClusterSpec {
                    api_endpoint: b_url.clone(),
                    credentials_secret_ref: Some(SecretRef {
                        namespace: "hybridnet-system".into(),
                        name: "half".into(),
                    }),
                    ..Default::default()
                },
            ),
            "InvalidConfig",
            "Secret hybridnet-system/half a client certificate needs both \"tls.crt\" and \"tls.key\"",
        ),
        (
            // The same cluster B under another name (and another spelling of its endpoint).
            "cluster-b-again",
            rc(
                "cluster-b-again",
                &b_url.replace("127.0.0.1", "localhost"),
                &b_ca,
                &client_cert,
            ),
            "DuplicateCluster",
            "RemoteCluster \"cluster-b\"",
        ),
    ] {
        rcs.create(&pp, &rc).await.unwrap();
        let s = state(&rcs, name, "Offline").await;
        let c = cond(&s, condition::CONNECTED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reason),
            "{name}: {c:?}"
        );
        assert!(c.message.contains(says), "{name}: {}", c.message);
        assert_eq!(
            cond(&s, condition::HEALTH_PROBE).status,
            "Unknown",
            "{name}"
        );
    }
    // The first RemoteCluster of B keeps B's identity.
    assert_eq!(
        rcs.get("cluster-b").await.unwrap().remote_uuid(),
        Some(b_uid.as_str())
    );
    // NotReady (the crossing subnet) kept the mirrors it had and added none.
    assert!(mirrors.get_opt("cluster-b.init").await.unwrap().is_some());
    assert!(mirrors.get_opt("cluster-b.clash").await.unwrap().is_none());
    assert!(vteps.get_opt("cluster-b.node1").await.unwrap().is_some());

    // The RemoteCluster goes: so do its mirrors.
    rcs.delete("cluster-b", &Default::default()).await.unwrap();
    wait_for(
        "mirrors of cluster-b gone, then cluster-b itself",
        || async {
            mirrors.get_opt("cluster-b.init").await.unwrap().is_none()
                && vteps.get_opt("cluster-b.node1").await.unwrap().is_none()
                && rcs.get_opt("cluster-b").await.unwrap().is_none()
        },
    )
    .await;

    // B again, its credentials now in the Secret (the second spelling goes first, or it would
    // claim B's identity).
    rcs.delete("cluster-b-again", &Default::default())
        .await
        .unwrap();
    wait_for("cluster-b-again gone", || async {
        rcs.get_opt("cluster-b-again").await.unwrap().is_none()
    })
    .await;
    rcs.create(
        &pp,
        &RemoteCluster::new(
            "via-secret",
            RemoteClusterSpec {
                api_endpoint: b_url.clone(),
                credentials_secret_ref: Some(SecretRef {
                    namespace: "hybridnet-system".into(),
                    name: "b-credentials".into(),
                }),
                timeout: Some(5),
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    let s = state(&rcs, "via-secret", "NotReady").await;
    assert_eq!(cond(&s, condition::CONNECTED).status, "True", "{s:?}");
    assert_eq!(s.uuid.as_deref(), Some(b_uid.as_str()));
}

/// With the timer out of the way (one pass an hour), the pass follows changes through its
/// watches alone: a RemoteCluster created here, then in B a subnet added, a node with pods, a pod
/// gone, the subnet removed, and here the RemoteCluster deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_follow_watch_events_without_the_timer() {
    let mut cfg = test_config("a-1");
    cfg.remote_cluster_check_interval = std::time::Duration::from_secs(3600);
    let (a, _r, a_uid) = multicluster_a(cfg).await;
    let b = remote_api("198.19.0.0/20").await;
    point_back(&b, &a_uid).await;
    let pp = PostParams::default();

    // Created after the first (timer) pass: the local RemoteCluster watch wakes the pass.
    let rcs: Api<RemoteCluster> = Api::all(a.client.clone());
    rcs.create(&pp, &rc("cluster-b", &b.url, &b.ca, &make_certs()))
        .await
        .unwrap();
    state(&rcs, "cluster-b", "Ready").await;
    let mirrors: Api<RemoteSubnet> = Api::all(a.client.clone());
    let vteps: Api<RemoteVtep> = Api::all(a.client.clone());
    wait_for("cluster-b.init mirrored", || async {
        mirrors.get_opt("cluster-b.init").await.unwrap().is_some()
    })
    .await;

    // B's changes reach A through the watches on B.
    let b_subnets: Api<Subnet> = Api::all(b.client.clone());
    b_subnets
        .create(
            &pp,
            &subnet_of("extra", "init", IpVersion::V4, "198.19.32.0/24", None),
        )
        .await
        .unwrap();
    wait_for("a subnet added in B mirrored", || async {
        mirrors.get_opt("cluster-b.extra").await.unwrap().is_some()
    })
    .await;
    Api::<NodeInfo>::all(b.client.clone())
        .create(&pp, &remote_node1())
        .await
        .unwrap();
    let b_ipis: Api<IPInstance> = Api::namespaced(b.client.clone(), "default");
    for (name, ip) in [
        ("198-19-0-5", "198.19.0.5/20"),
        ("198-19-0-6", "198.19.0.6/20"),
    ] {
        b_ipis
            .create(&pp, &remote_pod_address(name, ip, "node1"))
            .await
            .unwrap();
    }
    let endpoints = |want: Vec<&'static str>| {
        let vteps = vteps.clone();
        async move {
            vteps
                .get_opt("cluster-b.node1")
                .await
                .unwrap()
                .and_then(|v| v.spec.endpoint_ip_list)
                == Some(want.into_iter().map(String::from).collect())
        }
    };
    wait_for("B's node mirrored with its two pods", || {
        endpoints(vec!["198.19.0.5", "198.19.0.6"])
    })
    .await;
    b_ipis
        .delete("198-19-0-6", &Default::default())
        .await
        .unwrap();
    wait_for("a pod gone in B leaves the mirror", || {
        endpoints(vec!["198.19.0.5"])
    })
    .await;
    b_subnets
        .delete("extra", &Default::default())
        .await
        .unwrap();
    wait_for("a subnet removed in B goes here", || async {
        mirrors.get_opt("cluster-b.extra").await.unwrap().is_none()
    })
    .await;

    // The RemoteCluster deleted here: its mirrors go at once, not at the next timer pass.
    rcs.delete("cluster-b", &Default::default()).await.unwrap();
    wait_for("mirrors of cluster-b gone", || async {
        mirrors
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            && vteps
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
    })
    .await;
}

/// A RemoteCluster upstream's manager left with its finalizer (and a mirror without an owner, as
/// upstream writes them) is deleted, mirror included, even with the MultiCluster feature off:
/// nothing hangs in Terminating after a migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_finalizer_never_leaves_a_remote_cluster_hanging() {
    let a = Env::start().await;
    let _r = a.replica_with(test_config("a-1"), true).await;
    let pp = PostParams::default();
    let rcs: Api<RemoteCluster> = Api::all(a.client.clone());
    let mut left = rc(
        "left-by-upstream",
        "https://127.0.0.1:1",
        &make_certs().ca_pem,
        &make_certs(),
    );
    left.metadata.finalizers = Some(vec![finalizer::MANAGER_RUNTIME_REGISTERED.into()]);
    rcs.create(&pp, &left).await.unwrap();
    let mirrors: Api<RemoteSubnet> = Api::all(a.client.clone());
    mirrors
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteSubnet",
                "metadata": {"name": "left-by-upstream.s1",
                             "labels": {label::CLUSTER: "left-by-upstream"}},
                "spec": {"range": {"version": "4", "cidr": "198.19.64.0/24"},
                         "clusterName": "left-by-upstream"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    rcs.delete("left-by-upstream", &Default::default())
        .await
        .unwrap();
    wait_for("the RemoteCluster and its mirror gone", || async {
        rcs.get_opt("left-by-upstream").await.unwrap().is_none()
            && mirrors
                .get_opt("left-by-upstream.s1")
                .await
                .unwrap()
                .is_none()
    })
    .await;
}

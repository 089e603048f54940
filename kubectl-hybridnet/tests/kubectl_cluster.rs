//! `kubectl hybridnet cluster ls` through the real kubectl against kube-lite: RemoteClusters with
//! their state, checks and problems as the operator's status writes them; the CRD missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::multicluster::status::{Checks, Connection, remote_cluster_status};
use hybridnet_api::multicluster::{RemoteCluster, RemoteClusterSpec, RemoteSubnet, SecretRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

async fn remote_cluster(c: &Cluster, name: &str, secret: bool, conn: Option<Connection>) {
    let api: Api<RemoteCluster> = Api::all(c.client.clone());
    let mut rc = RemoteCluster::new(
        name,
        RemoteClusterSpec {
            api_endpoint: format!("https://{name}.example:6443"),
            credentials_secret_ref: secret.then(|| SecretRef {
                namespace: "hybridnet-system".into(),
                name: name.into(),
            }),
            ..Default::default()
        },
    );
    let created = api.create(&PostParams::default(), &rc).await.unwrap();
    rc.metadata.generation = created.metadata.generation;
    if let Some(conn) = conn {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let status = remote_cluster_status(&rc, &conn, &now);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ls_shows_state_checks_and_problems() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();

    let r = kubectl(k, &["cluster", "ls"]).await;
    r.ok();
    assert!(
        r.stdout.is_empty() && r.stderr.contains("No remote clusters found"),
        "{r:?}"
    );

    let pass = Checks {
        health: Ok(()),
        bidirectional: Ok(()),
        overlay_net_id: Ok(()),
        subnet_non_cross: Ok(()),
    };
    remote_cluster(
        &c,
        "cluster-b",
        true,
        Some(Connection::Connected {
            uuid: "uid-b".into(),
            checks: pass.clone(),
        }),
    )
    .await;
    remote_cluster(
        &c,
        "cluster-c",
        false,
        Some(Connection::Connected {
            uuid: "uid-c".into(),
            checks: Checks {
                bidirectional: Err("no RemoteCluster points back".into()),
                ..pass
            },
        }),
    )
    .await;
    remote_cluster(
        &c,
        "cluster-d",
        false,
        Some(Connection::Unreachable(
            "dial tcp: connection refused".into(),
        )),
    )
    .await;
    remote_cluster(&c, "cluster-e", false, None).await;

    let r = kubectl(k, &["cluster", "ls"]).await;
    r.ok();
    capture("cluster-ls", "kubectl hybridnet cluster ls", &r);
    let lines: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        lines,
        [
            vec!["NAME", "ENDPOINT", "STATE", "CHECKS", "PROBLEMS"],
            vec![
                "cluster-b",
                "https://cluster-b.example:6443",
                "Ready",
                "4/4",
                "-"
            ],
            vec![
                "cluster-c",
                "https://cluster-c.example:6443",
                "NotReady",
                "3/4",
                "BidirectionalConnection: no RemoteCluster points back"
            ],
            vec![
                "cluster-d",
                "https://cluster-d.example:6443",
                "Offline",
                "-",
                "Connected: dial tcp: connection refused"
            ],
            vec![
                "cluster-e",
                "https://cluster-e.example:6443",
                "Unknown",
                "-",
                "-"
            ],
        ],
        "{}",
        r.stdout
    );

    let r = kubectl(k, &["cluster", "ls", "-o", "wide", "--no-headers"]).await;
    r.ok();
    let first = r.stdout.lines().next().unwrap();
    assert!(
        first.contains("uid-b") && first.contains("secret hybridnet-system/cluster-b"),
        "{first}"
    );
    let r = kubectl(
        k,
        &["cluster", "ls", "-o", "jsonpath={.items[*].status.state}"],
    )
    .await;
    r.ok();
    assert_eq!(r.stdout.trim(), "Ready NotReady Offline");
    let r = kubectl(k, &["cluster", "ls", "-o", "name"]).await;
    r.ok();
    assert!(
        r.stdout
            .starts_with("remotecluster.multicluster.alibaba.com/cluster-b\n"),
        "{}",
        r.stdout
    );

    // `cluster status`: conditions and the mirrors labelled with the cluster.
    let mirror: RemoteSubnet = serde_json::from_value(json!({
        "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteSubnet",
        "metadata": {"name": "cluster-c.init",
                     "labels": {"networking.alibaba.com/cluster": "cluster-c",
                                "networking.alibaba.com/subnet": "init"}},
        "spec": {"range": {"version": "4", "cidr": "100.65.0.0/16"}, "networkType": "Overlay",
                 "clusterName": "cluster-c"}
    }))
    .unwrap();
    Api::<RemoteSubnet>::all(c.client.clone())
        .create(&PostParams::default(), &mirror)
        .await
        .unwrap();
    let r = kubectl(k, &["cluster", "status", "cluster-c"]).await;
    r.ok();
    capture(
        "cluster-status",
        "kubectl hybridnet cluster status cluster-c",
        &r,
    );
    for want in [
        "State:       NotReady",
        "UUID:        uid-c",
        "BidirectionalConnection",
        "no RemoteCluster points back",
        "cluster-c.init",
        "100.65.0.0/16",
        "No RemoteVteps.",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}:\n{}", r.stdout);
    }
    let r = kubectl(k, &["cluster", "status", "cluster-c", "-o", "json"]).await;
    r.ok();
    let v = r.json();
    assert_eq!(v["remoteCluster"]["status"]["uuid"], "uid-c");
    assert_eq!(v["remoteSubnets"][0]["metadata"]["name"], "cluster-c.init");
    let r = kubectl(k, &["cluster", "status", "nope"]).await;
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("remote cluster \"nope\" not found"),
        "{r:?}"
    );
    let r = kubectl(k, &["cluster", "status", "Bad_Name"]).await;
    assert_ne!(r.code, 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ls_without_the_crd_says_so() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(false).await;
    let r = kubectl(c.kubeconfig.as_path(), &["cluster", "ls"]).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("remoteclusters.multicluster.alibaba.com CRD is not installed"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_ls_remote_shows_other_clusters_pods() {
    use hybridnet_api::multicluster::{RemoteSubnetSpec, RemoteVtep, RemoteVtepSpec};
    use hybridnet_api::v1::{AddressRange, IpVersion};
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    Api::<RemoteSubnet>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &RemoteSubnet::new(
                "cluster-b.init",
                RemoteSubnetSpec {
                    range: AddressRange {
                        version: IpVersion::V4,
                        cidr: "198.19.0.0/24".into(),
                        ..Default::default()
                    },
                    cluster_name: Some("cluster-b".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    Api::<RemoteVtep>::all(c.client.clone())
        .create(
            &PostParams::default(),
            &RemoteVtep::new(
                "cluster-b.node1",
                RemoteVtepSpec {
                    cluster_name: Some("cluster-b".into()),
                    node_name: Some("node1".into()),
                    ip: Some("198.18.1.2".into()),
                    mac: Some("02:00:00:00:00:01".into()),
                    endpoint_ip_list: Some(vec!["198.19.0.7".into(), "198.19.0.5".into()]),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    // Without --remote: this cluster's addresses only (none here).
    let r = kubectl(k, &["ip", "ls", "-A"]).await;
    r.ok();
    assert!(!r.stdout.contains("198.19.0.5"), "{r:?}");
    let r = kubectl(k, &["ip", "ls", "-A", "--remote", "--no-headers"]).await;
    r.ok();
    let lines: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert_eq!(lines[0][0], "198.19.0.5", "{r:?}");
    assert!(
        lines[0].contains(&"cluster-b/node1")
            && lines[0].contains(&"cluster-b.init")
            && lines[0].contains(&"remote"),
        "{r:?}"
    );
    let r = kubectl(
        k,
        &[
            "ip", "ls", "-A", "--remote", "--node", "node1", "-o", "json",
        ],
    )
    .await;
    r.ok();
    assert_eq!(r.json().as_array().unwrap().len(), 2, "{r:?}");
    assert_eq!(r.json()[0]["state"], "remote", "{r:?}");
    let r = kubectl(k, &["ip", "ls", "-A", "--remote", "--network", "x"]).await;
    r.ok();
    assert!(!r.stdout.contains("198.19.0.5"), "{r:?}");
}

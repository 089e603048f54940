//! The multi-cluster kinds through kube-lite and the real kube client: the four CRDs are served
//! (create, list, status, plural `remoteendpointslice`), and the webhook refuses what upstream's
//! refuses (pkg/webhook/validating/remotecluster.go, remotesubnet.go, and the multi-cluster parts
//! of network.go and subnet.go) with messages that name the field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::multicluster::{
    RemoteCluster, RemoteClusterStatus, RemoteEndpointSlice, RemoteSubnet, RemoteVtep,
};
use hybridnet_api::v1::{IpVersion, Network};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

fn upstream_object<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/../crds/tests/fixtures/upstream/objects/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut v: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    // As a user (or upstream's manager) would create it: no server-set metadata, no status.
    let m = v["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "ownerReferences",
        "finalizers",
    ] {
        m.remove(k);
    }
    v.as_object_mut().unwrap().remove("status");
    serde_json::from_value(v).unwrap()
}

fn refusal(r: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) => {
            assert!(s.code >= 400, "{s:?}");
            s.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicluster_crds_are_served_and_the_webhook_refuses_what_upstream_refuses() {
    let env = Env::start().await;
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    let pp = PostParams::default();
    let rcs: Api<RemoteCluster> = Api::all(env.client.clone());
    let rss: Api<RemoteSubnet> = Api::all(env.client.clone());
    let vteps: Api<RemoteVtep> = Api::all(env.client.clone());
    let slices: Api<RemoteEndpointSlice> = Api::all(env.client.clone());

    // The local overlay network and subnet.
    init_overlay(&env).await;

    // Upstream-shaped objects of all four kinds are accepted and served back unchanged.
    let rc: RemoteCluster = upstream_object("remotecluster.yaml");
    let created = rcs.create(&pp, &rc).await.unwrap();
    assert_eq!(created.spec, rc.spec);
    let rs: RemoteSubnet = upstream_object("remotesubnet.yaml");
    assert_eq!(rss.create(&pp, &rs).await.unwrap().spec, rs.spec);
    let vtep: RemoteVtep = upstream_object("remotevtep.yaml");
    assert_eq!(vteps.create(&pp, &vtep).await.unwrap().spec, vtep.spec);
    let eps: RemoteEndpointSlice = upstream_object("remoteendpointslice.yaml");
    assert_eq!(slices.create(&pp, &eps).await.unwrap().spec, eps.spec);
    assert_eq!(
        slices
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        vteps.get("cluster-b.node1").await.unwrap().labels()["networking.alibaba.com/node"],
        "node1"
    );
    // The status subresource takes the operator's writes.
    let status = RemoteClusterStatus {
        uuid: Some("3f1d2c4b-5a6e-4f70-8192-a3b4c5d6e7f8".into()),
        state: Some("Offline".into()),
        conditions: None,
    };
    rcs.patch_status(
        "cluster-b",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
    assert_eq!(
        rcs.get("cluster-b").await.unwrap().remote_uuid(),
        Some("3f1d2c4b-5a6e-4f70-8192-a3b4c5d6e7f8")
    );

    // RemoteCluster refusals: (object change, field the message must name).
    let bad_rc = |name: &str, f: &dyn Fn(&mut RemoteCluster)| {
        let mut c = rc.clone();
        c.metadata.name = Some(name.into());
        c.spec.api_endpoint = format!("https://{name}.example:6443");
        f(&mut c);
        c
    };
    for (what, c, field) in [
        (
            "no port",
            bad_rc("c1", &|c| c.spec.api_endpoint = "https://10.0.0.9".into()),
            "spec.apiEndpoint",
        ),
        (
            "plain http",
            bad_rc("c2", &|c| {
                c.spec.api_endpoint = "http://10.0.0.9:6443".into()
            }),
            "spec.apiEndpoint",
        ),
        (
            "same endpoint as cluster-b",
            bad_rc("c3", &|c| {
                c.spec.api_endpoint = "https://192.168.56.200:6443".into()
            }),
            "spec.apiEndpoint",
        ),
        (
            "no key",
            bad_rc("c4", &|c| c.spec.key_data = None),
            "spec.keyData",
        ),
        ("dotted name", bad_rc("c5.prod", &|_| {}), "metadata.name"),
    ] {
        let m = refusal(rcs.create(&pp, &c).await);
        assert!(m.contains(field), "{what}: {m}");
    }
    assert_eq!(
        rcs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    // A malformed body never reaches the webhook as a typed object it would accept.
    let raw: Api<kube::core::DynamicObject> = Api::all_with(
        env.client.clone(),
        &kube::discovery::ApiResource::erase::<RemoteCluster>(&()),
    );
    let hostile: kube::core::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "multicluster.alibaba.com/v1", "kind": "RemoteCluster",
        "metadata": {"name": "hostile"},
        "spec": {"apiEndpoint": format!("https://{}:6443", "a".repeat(5000)),
                 "caData": "LS0t", "certData": "LS0t", "keyData": "LS0t"}
    }))
    .unwrap();
    let m = refusal(raw.create(&pp, &hostile).await);
    assert!(m.contains("spec.apiEndpoint") && m.len() < 2000, "{m}");

    // RemoteSubnet refusals: overlapping a local Subnet, overlapping another RemoteSubnet.
    let mut over_local = rs.clone();
    over_local.metadata.name = Some("cluster-c.s".into());
    over_local.spec.range.cidr = "198.18.0.0/16".into();
    let m = refusal(rss.create(&pp, &over_local).await);
    assert!(
        m.contains("spec.range") && m.contains("local subnet \"init\""),
        "{m}"
    );
    let mut over_remote = rs.clone();
    over_remote.metadata.name = Some("cluster-c.s".into());
    over_remote.spec.range.cidr = "100.65.128.0/17".into();
    let m = refusal(rss.create(&pp, &over_remote).await);
    assert!(m.contains("remote subnet \"cluster-b.init\""), "{m}");
    let mut fine = rs.clone();
    fine.metadata.name = Some("cluster-c.s".into());
    fine.spec.range.cidr = "100.66.0.0/16".into();
    rss.create(&pp, &fine).await.unwrap();

    // A local Subnet overlapping a RemoteSubnet is refused.
    let m = refusal(
        env.create_subnet(subnet_of(
            "clash",
            "init",
            IpVersion::V4,
            "100.65.4.0/24",
            None,
        ))
        .await,
    );
    assert!(
        m.contains("spec.range") && m.contains("remote subnet \"cluster-b.init\""),
        "{m}"
    );

    // The overlay network stays while a RemoteCluster exists (its subnet is gone first).
    Api::<hybridnet_api::v1::Subnet>::all(env.client.clone())
        .delete("init", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("subnet init gone", || async {
        Api::<hybridnet_api::v1::Subnet>::all(env.client.clone())
            .get_opt("init")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let nets: Api<Network> = Api::all(env.client.clone());
    let m = refusal(nets.delete("init", &DeleteParams::default()).await);
    assert!(
        m.contains("metadata.name") && m.contains("[\"cluster-b\"]"),
        "{m}"
    );
    rcs.delete("cluster-b", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("RemoteCluster gone", || async {
        rcs.get_opt("cluster-b").await.unwrap().is_none()
    })
    .await;
    nets.delete("init", &DeleteParams::default()).await.unwrap();
}

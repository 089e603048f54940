//! Objects written by upstream hybridnet (fixtures in crds/tests/fixtures/upstream/objects/) against
//! kube-lite with our CRDs: stored and read back unchanged, and a migrated Network or Subnet that
//! carries upstream's metrics finalizer is deleted once the operator runs (never stuck Terminating).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::finalizer;
use hybridnet_api::v1::{IPInstance, Network, NodeInfo, Subnet};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::Value;

fn fixture(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/tests/fixtures/upstream/objects")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Creates the fixture as its writer would (metadata and spec, then status through the status
/// subresource) and returns what the server stores.
async fn store<K>(env: &Env, file: &str) -> (Value, Value)
where
    K: Resource<DynamicType = ()>,
{
    let want = fixture(file);
    let mut body = want.clone();
    let meta = body["metadata"].as_object_mut().unwrap();
    for server_set in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
        meta.remove(server_set);
    }
    let status = body.as_object_mut().unwrap().remove("status");
    let ar = ApiResource::erase::<K>(&());
    let name = want["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<DynamicObject> = match want["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(env.client.clone(), ns, &ar),
        None => Api::all_with(env.client.clone(), &ar),
    };
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {file}: {e}"));
    if let Some(status) = status {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {file}: {e}"));
    }
    let got = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
    (want, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_objects_are_stored_and_read_back_unchanged() {
    let env = Env::start().await;
    env.namespace("db", &[]).await;
    let mut stored = Vec::new();
    stored.push(store::<Network>(&env, "network-init.yaml").await);
    stored.push(store::<Network>(&env, "network-vlan.yaml").await);
    stored.push(store::<Subnet>(&env, "subnet-init.yaml").await);
    stored.push(store::<Subnet>(&env, "subnet-vlan.yaml").await);
    stored.push(store::<IPInstance>(&env, "ipinstance-pod.yaml").await);
    stored.push(store::<IPInstance>(&env, "ipinstance-reserved.yaml").await);
    stored.push(store::<NodeInfo>(&env, "nodeinfo.yaml").await);
    for (want, got) in stored {
        let name = &want["metadata"]["name"];
        for part in ["spec", "status"] {
            assert_eq!(got[part], want[part], "{name}: {part}");
        }
        for key in ["labels", "annotations", "finalizers", "ownerReferences"] {
            assert_eq!(
                got["metadata"][key], want["metadata"][key],
                "{name}: metadata.{key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_network_and_subnet_with_upstream_finalizers_are_deleted() {
    let env = Env::start().await;
    env.node("node1", &[("network", "underlay-network")]).await;
    let (net, _) = store::<Network>(&env, "network-vlan.yaml").await;
    let (sub, _) = store::<Subnet>(&env, "subnet-vlan.yaml").await;
    assert_eq!(
        net["metadata"]["finalizers"][0],
        finalizer::UPSTREAM_METRICS_REGISTERED
    );
    assert_eq!(
        sub["metadata"]["finalizers"][0],
        finalizer::UPSTREAM_METRICS_REGISTERED
    );
    let subnets: Api<Subnet> = Api::all(env.client.clone());
    let networks: Api<Network> = Api::all(env.client.clone());
    subnets
        .delete("underlay-subnet", &DeleteParams::default())
        .await
        .unwrap();
    // Nobody runs yet: upstream's finalizer holds the Subnet in Terminating.
    let held = subnets.get("underlay-subnet").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());

    let _r = env.replica("r1").await;
    wait_for("the migrated Subnet is deleted", || async {
        subnets.get_opt("underlay-subnet").await.unwrap().is_none()
    })
    .await;
    networks
        .delete("underlay-network", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the migrated Network is deleted", || async {
        networks
            .get_opt("underlay-network")
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

/// Other finalizers (not ours, not upstream's metrics one) are never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_finalizers_stay() {
    let env = Env::start().await;
    let mut body = fixture("network-init.yaml");
    body["metadata"]["finalizers"] =
        serde_json::json!([finalizer::UPSTREAM_METRICS_REGISTERED, "example.com/keep"]);
    let mut obj: Network = serde_json::from_value(body).unwrap();
    obj.metadata.uid = None;
    obj.metadata.resource_version = None;
    obj.metadata.creation_timestamp = None;
    obj.metadata.generation = None;
    obj.status = None;
    let networks: Api<Network> = Api::all(env.client.clone());
    networks.create(&PostParams::default(), &obj).await.unwrap();
    networks
        .delete("init", &DeleteParams::default())
        .await
        .unwrap();
    let _r = env.replica("r1").await;
    wait_for("upstream's finalizer removed", || async {
        networks
            .get("init")
            .await
            .unwrap()
            .metadata
            .finalizers
            .unwrap_or_default()
            == vec!["example.com/keep".to_string()]
    })
    .await;
}

//! Pod defaults follow `HybridnetCluster/default` live (controller and webhook), fall back to the
//! flags without it, and a missing HybridnetCluster CRD neither blocks nor breaks anything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;
mod logcapture;

use std::time::Duration;

use common::*;
use hybridnet_api::constants::{annotation, finalizer, label};
use hybridnet_api::operator::{HybridnetCluster, IpFamily};
use hybridnet_api::v1::{IpVersion, NetworkType};
use hybridnet_operator::controlplane::rules::defaults::{DefaultsSource, PodDefaults};
use hybridnet_operator::controlplane::runtime::live_defaults::LiveDefaults;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const CLUSTER_CRD: &str = "operator.hybridnet.io_hybridnetclusters.yaml";

/// Nodes n1 in underlay u1 (192.168.56.0/24); overlay `o` with IPv4 100.10.0.0/24 and IPv6
/// fd00:10::/120.
async fn networks(env: &Env) {
    env.node("n1", &[("network", "u1")]).await;
    env.underlay("u1", "u1-sub", "192.168.56.0/24", "192.168.56.1")
        .await;
    env.create_network(network("o", NetworkType::Overlay, Some(4), None))
        .await
        .expect("overlay");
    env.create_subnet(subnet_of("o-v4", "o", IpVersion::V4, "100.10.0.0/24", None))
        .await
        .expect("o-v4");
    env.create_subnet(subnet_of("o-v6", "o", IpVersion::V6, "fd00:10::/120", None))
        .await
        .expect("o-v6");
    env.network_ready("u1", true, false).await;
    env.network_ready("o", true, true).await;
}

async fn wait_defaults(
    live: &LiveDefaults,
    what: &str,
    want: impl Fn(&PodDefaults, DefaultsSource) -> bool,
) {
    let mut rx = live.subscribe();
    let ok = tokio::time::timeout(
        Duration::from_secs(45),
        rx.wait_for(|e| want(&e.defaults, e.source)),
    )
    .await;
    assert!(
        matches!(ok, Ok(Ok(_))),
        "defaults never became {what}: {:?}",
        live.current()
    );
}

/// A pod the webhook never sees (its objectSelector excludes the ignore label): the controller
/// resolves it alone.
fn unmutated(name: &str) -> Pod {
    let mut p = pod("default", name, "n1", &[]);
    p.metadata.labels = Some(map(&[(label::WEBHOOK_IGNORE, "true")]));
    p
}

/// (network, versions) of a pod's addresses once it has `n`.
async fn addresses(env: &Env, name: &str, n: usize) -> (String, Vec<IpVersion>) {
    let v = env.allocated("default", name, n).await;
    let nets: std::collections::BTreeSet<String> =
        v.iter().map(|i| i.spec.network.clone()).collect();
    assert_eq!(nets.len(), 1, "{name}: {nets:?}");
    (
        nets.into_iter().next().unwrap_or_default(),
        v.iter().map(|i| i.spec.address.version).collect(),
    )
}

async fn create_cluster(env: &Env, defaults: serde_json::Value) {
    let api: Api<HybridnetCluster> = Api::all(env.client.clone());
    let obj: HybridnetCluster = serde_json::from_value(json!({
        "apiVersion": "operator.hybridnet.io/v1alpha1",
        "kind": "HybridnetCluster",
        "metadata": {"name": "default"},
        "spec": {"defaults": defaults}
    }))
    .expect("HybridnetCluster");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create HybridnetCluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_defaults_follow_the_hybridnet_cluster_live_and_fall_back_to_the_flags() {
    let env = Env::start().await;
    // The cluster says Overlay + DualStack before the operator starts; the flags say Overlay +
    // IPv4 (the documented defaults), so the family tells which one was used.
    create_cluster(
        &env,
        json!({"networkType": "Overlay", "ipFamily": "DualStack"}),
    )
    .await;
    let mut cfg = test_config("r1");
    cfg.defaults = PodDefaults::default();
    let r = env.replica_with(cfg, true).await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    networks(&env).await;
    wait_defaults(&r.defaults, "the cluster's", |d, s| {
        s == DefaultsSource::Cluster && d.ip_family == IpFamily::DualStack
    })
    .await;

    // Through the webhook (it writes the resolved type and family) and around it.
    let a = env.pod(pod("default", "a", "n1", &[])).await;
    assert_eq!(
        ann(&a, annotation::NETWORK_TYPE).as_deref(),
        Some("Overlay")
    );
    assert_eq!(ann(&a, annotation::IP_FAMILY).as_deref(), Some("DualStack"));
    env.pod(unmutated("a-bare")).await;
    for name in ["a", "a-bare"] {
        assert_eq!(
            addresses(&env, name, 2).await,
            ("o".to_string(), vec![IpVersion::V4, IpVersion::V6]),
            "{name}"
        );
    }

    // Patched to Underlay (family left out: IPv4, the documented default, not a flag).
    let api: Api<HybridnetCluster> = Api::all(env.client.clone());
    api.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"defaults": {"networkType": "Underlay", "ipFamily": null, "statefulWorkloadKinds": []}}}),
        ),
    )
    .await
    .expect("patch HybridnetCluster");
    wait_defaults(&r.defaults, "Underlay from the cluster", |d, s| {
        s == DefaultsSource::Cluster
            && d.network_type == NetworkType::Underlay
            && d.stateful_workload_kinds.is_empty()
    })
    .await;
    // No stateful kinds: a StatefulSet's pod is allocated like any other, without our finalizer.
    let sts = env.create_statefulset("default", "db").await;
    env.pod(stateful_pod(&sts, 0, "n1", &[])).await;
    env.allocated("default", "db-0", 1).await;
    let db = Api::<Pod>::namespaced(env.client.clone(), "default")
        .get("db-0")
        .await
        .expect("db-0");
    assert!(
        !db.finalizers().iter().any(|f| f == finalizer::IP_ALLOCATED),
        "{:?}",
        db.finalizers()
    );
    let b = env.pod(pod("default", "b", "n1", &[])).await;
    assert_eq!(
        ann(&b, annotation::NETWORK_TYPE).as_deref(),
        Some("Underlay")
    );
    assert_eq!(ann(&b, annotation::IP_FAMILY).as_deref(), Some("IPv4"));
    env.pod(unmutated("b-bare")).await;
    for name in ["b", "b-bare"] {
        assert_eq!(
            addresses(&env, name, 1).await,
            ("u1".to_string(), vec![IpVersion::V4]),
            "{name}"
        );
    }
    // Pods allocated earlier keep what they have.
    assert_eq!(env.instances_of("default", "a").await.len(), 2);

    // No cluster any more: the flags (Overlay, IPv4).
    api.delete("default", &DeleteParams::default())
        .await
        .expect("delete HybridnetCluster");
    wait_defaults(&r.defaults, "the flags'", |_, s| s == DefaultsSource::Flags).await;
    let c = env.pod(pod("default", "c", "n1", &[])).await;
    assert_eq!(
        ann(&c, annotation::NETWORK_TYPE).as_deref(),
        Some("Overlay")
    );
    env.pod(unmutated("c-bare")).await;
    for name in ["c", "c-bare"] {
        assert_eq!(
            addresses(&env, name, 1).await,
            ("o".to_string(), vec![IpVersion::V4]),
            "{name}"
        );
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_hybridnet_cluster_crd_the_flags_apply_and_a_later_crd_is_picked_up() {
    let env = Env::start_without_crds(&[CLUSTER_CRD]).await;
    // Flags: Underlay.
    let r = env.replica("r1").await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    networks(&env).await;
    // Nothing waits for the missing kind: caches, leadership, webhook and allocation all work.
    let p = env.pod(pod("default", "p", "n1", &[])).await;
    assert_eq!(
        ann(&p, annotation::NETWORK_TYPE).as_deref(),
        Some("Underlay")
    );
    env.pod(unmutated("p-bare")).await;
    for name in ["p", "p-bare"] {
        assert_eq!(
            addresses(&env, name, 1).await,
            ("u1".to_string(), vec![IpVersion::V4]),
            "{name}"
        );
    }
    assert_eq!(r.defaults.current().source, DefaultsSource::Flags);
    assert!(r.caches.is_ready());

    // The CRD and the cluster appear later: the retrying watch finds them.
    let crd = hybridnet_api::crd::all()
        .into_iter()
        .find(|(f, _)| *f == CLUSTER_CRD)
        .map(|(_, c)| c)
        .expect("cluster CRD");
    Api::<CustomResourceDefinition>::all(env.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let api: Api<HybridnetCluster> = Api::all(env.client.clone());
    wait_for("HybridnetCluster served", || async {
        api.list(&Default::default()).await.is_ok()
    })
    .await;
    create_cluster(&env, json!({"networkType": "Overlay"})).await;
    wait_defaults(&r.defaults, "Overlay from the cluster", |d, s| {
        s == DefaultsSource::Cluster && d.network_type == NetworkType::Overlay
    })
    .await;
    let q = env.pod(pod("default", "q", "n1", &[])).await;
    assert_eq!(
        ann(&q, annotation::NETWORK_TYPE).as_deref(),
        Some("Overlay")
    );
    assert_eq!(
        addresses(&env, "q", 1).await,
        ("o".to_string(), vec![IpVersion::V4])
    );
    assert!(api.get("default").await.expect("cluster").name_any() == "default");
    r.shutdown().await;
}

// Current-thread runtime: the thread-local subscriber sees every task of the test.
#[tokio::test]
async fn a_missing_crd_is_reported_once_while_the_watch_keeps_retrying() {
    let (logs, _guard) = logcapture::capture("hybridnet_operator=debug");
    let env = Env::start_without_crds(&[CLUSTER_CRD]).await;
    let (live, watch) = LiveDefaults::watch(&env.client, PodDefaults::default());
    let task = tokio::spawn(watch);
    assert!(live.settle(Duration::from_secs(5)).await, "no first answer");
    assert_eq!(live.current().source, DefaultsSource::Flags);
    // Three failed attempts (the backoff grows from under a second).
    wait_for("three retries", || {
        let n = logs.count("HybridnetCluster watch failed");
        async move { n >= 3 }
    })
    .await;
    let text = logs.text();
    assert_eq!(text.matches("is not served").count(), 1, "{text}");
    assert!(
        !text.contains(" WARN ") && !text.contains(" ERROR "),
        "{text}"
    );
    task.abort();
}

// Current-thread runtime, as above.
#[tokio::test]
async fn a_crd_removed_while_running_falls_back_to_the_flags() {
    let (logs, _guard) = logcapture::capture("hybridnet_operator=debug");
    let env = Env::start().await;
    create_cluster(&env, json!({"networkType": "Underlay"})).await;
    let (live, watch) = LiveDefaults::watch(&env.client, PodDefaults::default());
    let task = tokio::spawn(watch);
    wait_defaults(&live, "the cluster's", |d, s| {
        s == DefaultsSource::Cluster && d.network_type == NetworkType::Underlay
    })
    .await;
    Api::<CustomResourceDefinition>::all(env.client.clone())
        .delete(
            "hybridnetclusters.operator.hybridnet.io",
            &DeleteParams::default(),
        )
        .await
        .expect("delete CRD");
    wait_defaults(&live, "the flags'", |_, s| s == DefaultsSource::Flags).await;
    let text = logs.text();
    // Flags -> cluster -> flags (the objects go with their CRD), nothing in between.
    assert_eq!(text.matches("pod defaults changed").count(), 2, "{text}");
    assert_eq!(live.current().source, DefaultsSource::Flags);
    task.abort();
}

//! `--pod-label-selector` against kube-lite: pods outside the selector get no IPInstance, pods in
//! it do, and a pod relabelled into the selector is allocated then.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::{annotation, finalizer};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn labelled(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p = pod("default", name, "n1", &[]);
    p.metadata.labels = Some(map(labels));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_pods_matching_the_pod_label_selector_get_addresses() {
    let env = Env::start().await;
    let mut cfg = test_config("r1");
    cfg.pod_selector =
        hybridnet_api::selector::parse("hybridnet in (yes,true),!skip").expect("selector");
    let r = env.replica_with(cfg, true).await;
    env.register_webhooks(r.webhook_addr.expect("webhook"))
        .await;
    env.node("n1", &[("network", "u1")]).await;
    env.underlay("u1", "u1-sub", "192.168.56.0/24", "192.168.56.1")
        .await;
    env.network_ready("u1", true, false).await;

    let outside = env.pod(labelled("outside", &[("app", "web")])).await;
    env.pod(labelled("excluded", &[("hybridnet", "yes"), ("skip", "")]))
        .await;
    // The webhook is not filtered (as upstream): it still resolved the pod.
    assert_eq!(
        ann(&outside, annotation::NETWORK_TYPE).as_deref(),
        Some("Underlay")
    );
    // Both were looked at and skipped.
    wait_for("both pods skipped", || async {
        r.metrics.pods_not_selected.get() >= 2
    })
    .await;
    env.pod(labelled("chosen", &[("hybridnet", "true")])).await;
    let chosen = env.allocated("default", "chosen", 1).await;
    assert_eq!(chosen[0].spec.network, "u1");
    for name in ["outside", "excluded"] {
        assert!(
            env.instances_of("default", name).await.is_empty(),
            "{name} got an address although the selector excludes it"
        );
    }

    // Relabelled into the selector: allocated now.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    pods.patch(
        "outside",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"hybridnet": "yes"}}})),
    )
    .await
    .expect("label outside");
    pods.patch(
        "excluded",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"skip": null}}})),
    )
    .await
    .expect("unlabel excluded");
    env.allocated("default", "outside", 1).await;
    env.allocated("default", "excluded", 1).await;

    // A stateful pod allocated while selected carries our finalizer; relabelled out of the
    // selector and deleted, it must still be reserved and released, not hang in Terminating.
    let sts = env.create_statefulset("default", "db").await;
    let mut db = stateful_pod(&sts, 0, "n1", &[]);
    db.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("hybridnet".into(), "yes".into());
    env.pod(db).await;
    env.set_pod_status("default", "db-0", running()).await;
    let held = env.allocated("default", "db-0", 1).await;
    let p = pods.get("db-0").await.expect("db-0");
    assert!(
        p.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == finalizer::IP_ALLOCATED)
    );
    pods.patch(
        "db-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"hybridnet": null}}})),
    )
    .await
    .expect("unlabel db-0");
    env.set_pod_status("default", "db-0", container_status("Running", false))
        .await;
    env.delete_pod("default", "db-0").await;
    env.pod_gone("default", "db-0").await;
    let kept = env.instances_of("default", "db-0").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].spec.address.ip, held[0].spec.address.ip);
    assert!(kept[0].spec.is_reserved(), "{:?}", kept[0].spec.binding);
    r.shutdown().await;
}

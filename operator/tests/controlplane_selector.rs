//! `--pod-label-selector` against kube-lite: pods outside the selector get no IPInstance, pods in
//! it do, and a pod relabelled into the selector is allocated then.

mod common;

use common::*;
use hybridnet_api::constants::annotation;
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
        hybridnet_operator::controlplane::podselector::parse("hybridnet in (yes,true),!skip")
            .expect("selector");
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
    r.shutdown().await;
}

//! `kubectl hybridnet migrate check` through the real kubectl against kube-lite: an upstream Helm
//! install as its chart writes it (charts/hybridnet/templates/), then half way through the
//! migration, then done.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::migration::{NODE_LEFTOVERS_ANNOTATION, UPSTREAM_LEADER_LEASE};
use hybridnet_api::v1::NodeInfo;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn upstream_install(c: &Client) {
    let ns: Api<Namespace> = Api::all(c.clone());
    let _ = ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kube-system"}})).unwrap(),
        )
        .await;
    let tmpl = |labels: Value| {
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "c", "image": "hybridnet/hybridnet:v0.8.9"}]}})
    };
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "kube-system");
    for (name, component) in [
        ("hybridnet-manager", "manager"),
        ("hybridnet-webhook", "webhook"),
    ] {
        let labels = json!({"app": "hybridnet", "component": component});
        create(&deps, json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": tmpl(labels.clone())}
        }))
        .await;
        // What the Deployment controller reports for a running install.
        deps.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3, "readyReplicas": 3}})),
        )
        .await
        .expect("deployment status");
    }
    let labels = json!({"app": "hybridnet", "component": "daemon"});
    let dss: Api<DaemonSet> = Api::namespaced(c.clone(), "kube-system");
    create(
        &dss,
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "hybridnet-daemon", "namespace": "kube-system", "labels": labels},
            "spec": {"selector": {"matchLabels": labels}, "template": tmpl(labels.clone())}
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "kube-system");
    for n in ["n1", "n2"] {
        create(&pods, json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("hybridnet-daemon-{n}"), "namespace": "kube-system", "labels": labels},
            "spec": {"nodeName": n, "containers": [{"name": "c", "image": "x"}]}
        }))
        .await;
    }
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
    create(&vwc, json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "hybridnet-validating-webhook"},
        "webhooks": [{
            "name": "hybridnet-v1.validating.hybridnet",
            "admissionReviewVersions": ["v1beta1", "v1"],
            "clientConfig": {"service": {"name": "hybridnet-webhook", "namespace": "kube-system", "port": 443, "path": "/validate"}},
            "failurePolicy": "Fail", "sideEffects": "None",
            "rules": [{"apiGroups": ["networking.alibaba.com"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["networks"]}]
        }]
    }))
    .await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    create(&leases, json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": UPSTREAM_LEADER_LEASE, "namespace": "kube-system"},
        "spec": {"holderIdentity": "node1_5b0a2a6e-1f0e-4d7c-9a55-2b1f1f3c9d11", "leaseDurationSeconds": 15,
                 "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0}
    }))
    .await;
}

async fn report(k: &std::path::Path, name: &str) -> (i32, Value) {
    let table = kubectl(k, &["migrate", "check"]).await;
    capture(name, "kubectl hybridnet migrate check", &table);
    let json = kubectl(k, &["migrate", "check", "-o", "json"]).await;
    assert_eq!(table.code, json.code, "{}", json.stderr);
    (table.code, json.json())
}

fn objects(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["object"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_before_during_and_after() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    node(&c.client, "n1", "198.18.0.11", &[]).await;
    node(&c.client, "n2", "198.18.0.12", &[]).await;
    upstream_install(&c.client).await;

    // Before: everything is upstream's, nothing is switched.
    let (code, v) = report(k, "migrate-check-before").await;
    assert_eq!(code, 3);
    assert_eq!(
        objects(&v),
        [
            "deployment/kube-system/hybridnet-manager",
            "deployment/kube-system/hybridnet-webhook",
            "daemonset/kube-system/hybridnet-daemon",
            "validatingwebhookconfiguration/hybridnet-validating-webhook",
            "lease/kube-system/hybridnet-manager-election",
            "node/n1",
            "node/n2"
        ]
    );
    assert!(v["cleanNodes"].as_array().unwrap().is_empty());
    let table = kubectl(k, &["migrate", "check"]).await;
    assert!(
        table.stdout.ends_with(
            "7 thing(s) still belong to upstream hybridnet; 0 of 2 nodes switched and clean; safe to go on with the next step\n"
        ),
        "{}",
        table.stdout
    );

    // Half way: the operator took the webhooks and the Lease over, n1 is switched and clean but
    // upstream's daemon pod is still on it, n2 reports a leftover still in use.
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(c.client.clone());
    vwc.patch(
        "hybridnet-validating-webhook",
        &PatchParams::default(),
        &Patch::Merge(json!({"webhooks": [{
            "name": "hybridnet-v1.validating.hybridnet",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "hybridnet-webhook", "namespace": "hybridnet-system", "port": 443, "path": "/validate"}},
            "failurePolicy": "Fail", "sideEffects": "None"
        }]})),
    )
    .await
    .unwrap();
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), "kube-system");
    for d in ["hybridnet-manager", "hybridnet-webhook"] {
        deps.delete(d, &DeleteParams::default()).await.unwrap();
    }
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    leases
        .patch(
            UPSTREAM_LEADER_LEASE,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"holderIdentity": "hybridnet-operator-7c9-x", "renewTime": now()}}),
            ),
        )
        .await
        .unwrap();
    let ours: Api<Lease> = Api::namespaced(c.client.clone(), "default");
    create(&ours, json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": UPSTREAM_LEADER_LEASE, "namespace": "default"},
        "spec": {"holderIdentity": "hybridnet-operator-7c9-x", "leaseDurationSeconds": 15, "renewTime": now()}
    }))
    .await;
    let agent = json!({"app.kubernetes.io/name": "hybridnet-node", "app.kubernetes.io/part-of": "hybridnet"});
    let agent_pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for n in ["n1", "n2"] {
        create(
            &agent_pods,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("hybridnet-node-{n}"), "labels": agent},
                "spec": {"nodeName": n, "containers": [{"name": "c", "image": "x"}]}
            }),
        )
        .await;
    }
    let upstream_pods: Api<Pod> = Api::namespaced(c.client.clone(), "kube-system");
    upstream_pods
        .delete(
            "hybridnet-daemon-n2",
            &DeleteParams::default().grace_period(0),
        )
        .await
        .unwrap();
    let infos: Api<NodeInfo> = Api::all(c.client.clone());
    for (n, left) in [("n1", "[]"), ("n2", r#"["ipset HYBR-ALL"]"#)] {
        create(
            &infos,
            json!({
                "apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
                "metadata": {"name": n, "annotations": {NODE_LEFTOVERS_ANNOTATION: left}},
                "spec": {}
            }),
        )
        .await;
    }
    let (code, v) = report(k, "migrate-check-during").await;
    assert_eq!(code, 3);
    assert_eq!(
        objects(&v),
        [
            "daemonset/kube-system/hybridnet-daemon",
            "node/n1",
            "node/n2"
        ]
    );
    assert_eq!(v["findings"][1]["hazard"], true, "{v}");
    assert!(
        v["findings"][2]["state"]
            .as_str()
            .unwrap()
            .contains("ipset HYBR-ALL"),
        "{v}"
    );
    // n1 reports nothing left, but upstream's daemon still runs there.
    assert_eq!(v["cleanNodes"], json!([]));
    let table = kubectl(k, &["migrate", "check"]).await;
    assert!(
        table.stdout.contains("HAZARD: runs upstream's daemon"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("not safe to go on"),
        "{}",
        table.stdout
    );

    // Done: upstream's DaemonSet and pods gone, both nodes clean.
    upstream_pods
        .delete(
            "hybridnet-daemon-n1",
            &DeleteParams::default().grace_period(0),
        )
        .await
        .unwrap();
    let dss: Api<DaemonSet> = Api::namespaced(c.client.clone(), "kube-system");
    dss.delete("hybridnet-daemon", &DeleteParams::default())
        .await
        .unwrap();
    infos
        .patch(
            "n2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {NODE_LEFTOVERS_ANNOTATION: "[]"}}})),
        )
        .await
        .unwrap();
    let (code, v) = report(k, "migrate-check-after").await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["cleanNodes"], json!(["n1", "n2"]));
    let table = kubectl(k, &["migrate", "check"]).await;
    assert_eq!(
        table.ok().stdout,
        "migration complete: nothing of upstream hybridnet is left (2 nodes clean)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_refuses_other_output_formats() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let r = kubectl(c.kubeconfig.as_path(), &["migrate", "check", "-o", "wide"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("migrate check"), "{}", r.stderr);
}

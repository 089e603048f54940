//! `kubectl hybridnet uninstall` through the real kubectl against kube-lite, with a stand-in for
//! the operator (a task that renews the operator's leader Lease, serves the HybridnetCluster's
//! clean-up finalizer and the IPInstances' ip-allocated finalizer, and stops when its Deployment is
//! deleted, as the real one's pod would). It checks the order: data (only with `--delete-data`)
//! before the HybridnetCluster, the HybridnetCluster's finalizer served while the operator still
//! runs, the operator's install after that, the CRDs last; that the plugin never removes a
//! finalizer itself and refuses when the operator is not running; and that without
//! `--delete-data` no Network, Subnet, IPInstance or CRD is touched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubectl_hybridnet::uninstall::resource_of;
use serde_json::json;

const NS: &str = "hybridnet-system";

fn api(c: &Client, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let (g, v, k, p, namespaced) = resource_of(kind).unwrap();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p);
    match (namespaced, ns) {
        (true, Some(ns)) => Api::namespaced_with(c.clone(), ns, &ar),
        _ => Api::all_with(c.clone(), &ar),
    }
}

async fn create(c: &Client, kind: &str, ns: Option<&str>, body: serde_json::Value) {
    let (g, v, k, ..) = resource_of(kind).unwrap();
    let mut body = body;
    body["apiVersion"] = json!(if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    });
    body["kind"] = json!(k);
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    api(c, kind, ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

async fn get(c: &Client, kind: &str, ns: Option<&str>, name: &str) -> Option<DynamicObject> {
    api(c, kind, ns).get_opt(name).await.unwrap_or(None)
}

fn meta(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

/// deploy/'s install, two operands, the HybridnetCluster and one Network, Subnet and IPInstance
/// (each with the finalizers the real objects carry).
async fn seed(c: &Client) {
    let part = json!({"app.kubernetes.io/name": "hybridnet-operator", "app.kubernetes.io/part-of": "hybridnet"});
    let managed = json!({"app.kubernetes.io/managed-by": "hybridnet-operator"});
    create(c, "namespace", None, meta(NS, part.clone())).await;
    let mut d = meta("hybridnet-operator", part.clone());
    d["spec"] = json!({"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}},
                     "spec": {"containers": [{"name": "o", "image": "x"}]}}});
    create(c, "deployment.apps", Some(NS), d).await;
    create(
        c,
        "serviceaccount",
        Some(NS),
        meta("hybridnet-operator", part.clone()),
    )
    .await;
    let rules = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
    let mut r = meta("hybridnet-operator", part.clone());
    r["rules"] = rules.clone();
    create(c, "role.rbac.authorization.k8s.io", Some(NS), r.clone()).await;
    create(c, "clusterrole.rbac.authorization.k8s.io", None, r).await;
    let subjects =
        json!([{"kind": "ServiceAccount", "name": "hybridnet-operator", "namespace": NS}]);
    let mut rb = meta("hybridnet-operator", part.clone());
    rb["subjects"] = subjects;
    rb["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hybridnet-operator"});
    create(
        c,
        "rolebinding.rbac.authorization.k8s.io",
        Some(NS),
        rb.clone(),
    )
    .await;
    rb["roleRef"]["kind"] = json!("ClusterRole");
    create(c, "clusterrolebinding.rbac.authorization.k8s.io", None, rb).await;

    let mut ds = meta("hybridnet-node", managed.clone());
    ds["spec"] = json!({"selector": {"matchLabels": {"a": "n"}},
        "template": {"metadata": {"labels": {"a": "n"}},
                     "spec": {"containers": [{"name": "n", "image": "x"}]}}});
    create(c, "daemonset.apps", Some(NS), ds).await;
    create(
        c,
        "validatingwebhookconfiguration.admissionregistration.k8s.io",
        None,
        meta("hybridnet-validating-webhook", managed),
    )
    .await;

    let mut hc = meta("default", json!({}));
    hc["metadata"]["finalizers"] = json!(["operator.hybridnet.io/cleanup"]);
    hc["spec"] = json!({});
    create(c, "hybridnetcluster.operator.hybridnet.io", None, hc).await;
    let mut n = meta("overlay", json!({}));
    n["spec"] = json!({"netID": 4, "type": "Overlay"});
    create(c, "network.networking.alibaba.com", None, n).await;
    let mut s = meta("overlay-a", json!({}));
    s["spec"] = json!({"network": "overlay", "range": {"version": "4", "cidr": "198.19.0.0/24"}});
    create(c, "subnet.networking.alibaba.com", None, s).await;
    let mut i = meta("198-19-0-5", json!({}));
    i["metadata"]["finalizers"] = json!(["networking.alibaba.com/ip-allocated"]);
    i["spec"] = json!({"network": "overlay", "subnet": "overlay-a",
        "address": {"version": "4", "ip": "198.19.0.5/24", "mac": "02:00:00:00:00:05"},
        "binding": {"nodeName": "n1", "podName": "web"}});
    create(c, "ipinstance.networking.alibaba.com", Some("default"), i).await;
}

async fn lease(c: &Client, renew: k8s_openapi::jiff::Timestamp) {
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "hybridnet-manager-election", "namespace": NS},
        "spec": {"holderIdentity": "operator-0", "leaseDurationSeconds": 15,
                 "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    let a: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c.clone(), NS);
    a.patch(
        "hybridnet-manager-election",
        &PatchParams::apply("test-operator").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("lease");
}

async fn remove_finalizers(c: &Client, kind: &str, ns: Option<&str>, name: &str) {
    api(c, kind, ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("remove finalizers");
}

fn terminating(o: &Option<DynamicObject>) -> bool {
    o.as_ref()
        .is_some_and(|o| o.metadata.deletion_timestamp.is_some())
}

/// The stand-in operator; returns the journal of what it did and saw, in order.
fn operator(c: Client) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let journal = Arc::new(Mutex::new(Vec::new()));
    let j = journal.clone();
    let task = tokio::spawn(async move {
        let note = |s: &str| {
            let mut j = j.lock().unwrap();
            if !j.iter().any(|x| x == s) {
                j.push(s.to_string());
            }
        };
        loop {
            // Its pod goes with its Deployment.
            if get(&c, "deployment.apps", Some(NS), "hybridnet-operator")
                .await
                .is_none_or(|d| d.metadata.deletion_timestamp.is_some())
            {
                note("operator stopped");
                return;
            }
            lease(&c, k8s_openapi::jiff::Timestamp::now()).await;
            let ip = get(
                &c,
                "ipinstance.networking.alibaba.com",
                Some("default"),
                "198-19-0-5",
            )
            .await;
            if terminating(&ip) {
                remove_finalizers(
                    &c,
                    "ipinstance.networking.alibaba.com",
                    Some("default"),
                    "198-19-0-5",
                )
                .await;
                note("operator released the IPInstance");
            }
            for (kind, name) in [
                ("subnet.networking.alibaba.com", "overlay-a"),
                ("network.networking.alibaba.com", "overlay"),
            ] {
                if get(&c, kind, None, name).await.is_none() {
                    note(&format!("{kind} gone"));
                }
            }
            let hc = get(
                &c,
                "hybridnetcluster.operator.hybridnet.io",
                None,
                "default",
            )
            .await;
            if terminating(&hc) {
                for (kind, ns, name) in [
                    ("daemonset.apps", Some(NS), "hybridnet-node"),
                    (
                        "validatingwebhookconfiguration.admissionregistration.k8s.io",
                        None,
                        "hybridnet-validating-webhook",
                    ),
                ] {
                    let _ = api(&c, kind, ns).delete(name, &Default::default()).await;
                }
                remove_finalizers(
                    &c,
                    "hybridnetcluster.operator.hybridnet.io",
                    None,
                    "default",
                )
                .await;
                note("operator cleaned up and released the HybridnetCluster");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (journal, task)
}

async fn present(c: &Client, kind: &str, ns: Option<&str>, name: &str) -> bool {
    let o = get(c, kind, ns, name).await;
    o.is_some() && !terminating(&o)
}

async fn data_untouched(c: &Client) {
    assert!(present(c, "network.networking.alibaba.com", None, "overlay").await);
    assert!(present(c, "subnet.networking.alibaba.com", None, "overlay-a").await);
    assert!(
        present(
            c,
            "ipinstance.networking.alibaba.com",
            Some("default"),
            "198-19-0-5"
        )
        .await
    );
    for crd in kubectl_hybridnet::uninstall::CRDS {
        assert!(
            present(
                c,
                "customresourcedefinition.apiextensions.k8s.io",
                None,
                crd
            )
            .await,
            "{crd}"
        );
    }
}

#[tokio::test]
async fn uninstall_lists_refuses_without_operator_and_keeps_user_data() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = &c.kubeconfig;
    seed(&c.client).await;

    // The operator's Lease is stale: nothing may be deleted.
    lease(
        &c.client,
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(120),
    )
    .await;
    let r = kubectl(k, &["uninstall"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("operator is not running"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was deleted"), "{}", r.stderr);
    assert!(
        present(
            &c.client,
            "hybridnetcluster.operator.hybridnet.io",
            None,
            "default"
        )
        .await
    );
    assert!(present(&c.client, "deployment.apps", Some(NS), "hybridnet-operator").await);

    let (journal, task) = operator(c.client.clone());
    // The dry run lists, in order, and changes nothing.
    let r = kubectl(k, &["uninstall", "--dry-run"]).await;
    r.ok();
    let out = &r.stdout;
    let pos = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing in\n{out}"))
    };
    assert!(
        pos("1. would delete the HybridnetCluster")
            < pos("hybridnetcluster.operator.hybridnet.io/default")
    );
    assert!(
        pos("then the operator removes:")
            < pos("daemonset.apps/hybridnet-node -n hybridnet-system")
    );
    assert!(
        pos(
            "validatingwebhookconfiguration.admissionregistration.k8s.io/hybridnet-validating-webhook"
        ) < pos("2. would delete the operator's install")
    );
    assert!(
        pos("2. would delete the operator's install")
            < pos("deployment.apps/hybridnet-operator -n hybridnet-system")
    );
    assert!(
        pos("deployment.apps/hybridnet-operator")
            < pos("clusterrole.rbac.authorization.k8s.io/hybridnet-operator")
    );
    assert!(pos("namespace/hybridnet-system") > pos("deployment.apps/hybridnet-operator"));
    assert!(pos("kept: 1 Networks, 1 Subnets, 1 IPInstances, 0 RemoteClusters and the CRDs") > 0);
    assert!(!out.contains("ipinstance.networking.alibaba.com/"), "{out}");
    assert!(
        present(
            &c.client,
            "hybridnetcluster.operator.hybridnet.io",
            None,
            "default"
        )
        .await
    );
    assert!(kubectl(k, &["uninstall", "--dry-run=server"]).await.code == 2);

    let r = kubectl(k, &["uninstall"]).await;
    r.ok();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the operator stops with its Deployment")
        .unwrap();
    let journal = journal.lock().unwrap().clone();
    assert_eq!(
        journal,
        [
            "operator cleaned up and released the HybridnetCluster",
            "operator stopped"
        ],
        "{r:?}"
    );
    assert!(
        get(
            &c.client,
            "hybridnetcluster.operator.hybridnet.io",
            None,
            "default"
        )
        .await
        .is_none()
    );
    assert!(
        get(&c.client, "daemonset.apps", Some(NS), "hybridnet-node")
            .await
            .is_none()
    );
    for (kind, ns) in [
        ("deployment.apps", Some(NS)),
        ("rolebinding.rbac.authorization.k8s.io", Some(NS)),
        ("role.rbac.authorization.k8s.io", Some(NS)),
        ("serviceaccount", Some(NS)),
        ("clusterrolebinding.rbac.authorization.k8s.io", None),
        ("clusterrole.rbac.authorization.k8s.io", None),
    ] {
        assert!(
            !present(&c.client, kind, ns, "hybridnet-operator").await,
            "{kind}"
        );
    }
    assert!(!present(&c.client, "namespace", None, NS).await);
    assert!(
        r.stdout
            .contains("kept: 1 Networks, 1 Subnets, 1 IPInstances, 0 RemoteClusters and the CRDs"),
        "{}",
        r.stdout
    );
    data_untouched(&c.client).await;
    // Again: nothing of the install left, still nothing of the data touched.
    let r = kubectl(k, &["uninstall", "--dry-run"]).await;
    r.ok();
    assert!(
        !r.stdout.contains("would delete the HybridnetCluster"),
        "{}",
        r.stdout
    );
    data_untouched(&c.client).await;
}

#[tokio::test]
async fn uninstall_delete_data_releases_addresses_while_the_operator_runs() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = &c.kubeconfig;
    seed(&c.client).await;
    lease(&c.client, k8s_openapi::jiff::Timestamp::now()).await;
    let (journal, task) = operator(c.client.clone());
    let r = kubectl(k, &["uninstall", "--delete-data", "--dry-run"]).await;
    r.ok();
    let out = &r.stdout;
    let pos = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing in\n{out}"))
    };
    assert!(
        pos("ipinstance.networking.alibaba.com/198-19-0-5 -n default")
            < pos("subnet.networking.alibaba.com/overlay-a")
    );
    assert!(
        pos("subnet.networking.alibaba.com/overlay-a")
            < pos("network.networking.alibaba.com/overlay")
    );
    assert!(
        pos("network.networking.alibaba.com/overlay")
            < pos("hybridnetcluster.operator.hybridnet.io/default")
    );
    assert!(
        pos("deployment.apps/hybridnet-operator")
            < pos("customresourcedefinition.apiextensions.k8s.io/networks.networking.alibaba.com")
    );
    data_untouched(&c.client).await;

    let r = kubectl(k, &["uninstall", "--delete-data"]).await;
    r.ok();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the operator stops with its Deployment")
        .unwrap();
    let journal = journal.lock().unwrap().clone();
    assert_eq!(
        journal,
        [
            "operator released the IPInstance",
            "subnet.networking.alibaba.com gone",
            "network.networking.alibaba.com gone",
            "operator cleaned up and released the HybridnetCluster",
            "operator stopped"
        ],
        "{r:?}"
    );
    for crd in kubectl_hybridnet::uninstall::CRDS {
        assert!(
            !present(
                &c.client,
                "customresourcedefinition.apiextensions.k8s.io",
                None,
                crd
            )
            .await,
            "{crd}"
        );
    }
}

//! Global services through two kube-lite API servers (docs/multicluster.md, Global services): a
//! Service annotated `networking.alibaba.com/global-service: "true"` in cluster B has its
//! EndpointSlices mirrored in A as RemoteEndpointSlices `<cluster>.<namespace>.<slice>`; the
//! same Service in A, annotated too, gets an EndpointSlice per RemoteEndpointSlice. Both follow B
//! (an endpoint changed, a slice removed), a Service that is not global gets nothing, a slice of
//! another manager is never touched, and the mirrors go with the RemoteCluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeMap;

use common::*;
use hybridnet_api::constants::{annotation, label};
use hybridnet_api::multicluster::global_service::{
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY,
};
use hybridnet_api::multicluster::{RemoteCluster, RemoteEndpointSlice};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

fn service(name: &str, global: Option<&str>) -> Service {
    let mut s = Service::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("default".into());
    s.metadata.annotations =
        global.map(|g| BTreeMap::from([(annotation::GLOBAL_SERVICE.to_string(), g.to_string())]));
    s
}

fn slice(name: &str, service: Option<&str>, managed_by: &str, addr: &str) -> EndpointSlice {
    let mut labels = BTreeMap::from([(LABEL_MANAGED_BY.to_string(), managed_by.to_string())]);
    if let Some(s) = service {
        labels.insert(LABEL_SERVICE_NAME.into(), s.into());
    }
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addr], "conditions": {"ready": true}, "nodeName": "node1",
                       "zone": "zone-a"}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    }))
    .unwrap()
}

fn addresses(s: &EndpointSlice) -> Vec<String> {
    s.endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_services_are_exported_and_imported_between_two_api_servers() {
    // Cluster A, the operator's, with the MultiCluster feature on.
    let (a, _r, a_uid) = multicluster_a(test_config("a-1")).await;

    // Cluster B: HTTPS, the CRDs, a matching overlay network, a RemoteCluster pointing back.
    let b = remote_api("198.19.0.0/20").await;
    let bc = b.client.clone();
    point_back(&b, &a_uid).await;
    let pp = PostParams::default();
    let certs = make_certs();

    // B's Services: one global, one not, one whose annotation is not a Go bool ("yes").
    let b_svcs: Api<Service> = Api::namespaced(bc.clone(), "default");
    let b_slices: Api<EndpointSlice> = Api::namespaced(bc.clone(), "default");
    let kcm = "endpointslice-controller.k8s.io";
    for (svc, global, addr) in [
        ("web", Some("true"), "198.19.0.5"),
        ("plain", None, "198.19.0.6"),
        ("yes", Some("yes"), "198.19.0.7"),
    ] {
        b_svcs.create(&pp, &service(svc, global)).await.unwrap();
        b_slices
            .create(&pp, &slice(&format!("{svc}-abc"), Some(svc), kcm, addr))
            .await
            .unwrap();
    }
    // A slice without its Service label belongs to no Service: never exported.
    b_slices
        .create(&pp, &slice("orphan-abc", None, kcm, "198.19.0.8"))
        .await
        .unwrap();

    let rcs: Api<RemoteCluster> = Api::all(a.client.clone());
    rcs.create(
        &pp,
        &inline_remote_cluster("cluster-b", &b.url, &b.ca, &certs),
    )
    .await
    .unwrap();

    // Export: only web's slice, named after cluster, namespace and slice.
    let res: Api<RemoteEndpointSlice> = Api::all(a.client.clone());
    wait_for("cluster-b.default.web-abc exported", || async {
        res.get_opt("cluster-b.default.web-abc")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let r = res.get("cluster-b.default.web-abc").await.unwrap();
    assert_eq!(r.spec.remote_service.cluster, "cluster-b");
    assert_eq!(r.spec.remote_service.name, "web");
    assert_eq!(r.spec.remote_service.namespace, "default");
    assert_eq!(r.labels()[label::REMOTE_CLUSTER], "cluster-b");
    assert_eq!(r.labels()[LABEL_MANAGED_BY], MANAGED_BY);
    let e = &r.spec.endpoints.as_ref().unwrap()[0];
    assert_eq!(e.addresses, ["198.19.0.5"]);
    // discovery/v1's zone travels as v1beta1 topology, as upstream's object has it.
    assert_eq!(
        e.topology.as_ref().unwrap()["topology.kubernetes.io/zone"],
        "zone-a"
    );
    let names: Vec<String> = res
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert_eq!(names, ["cluster-b.default.web-abc"]);

    // Import: A's web, global too, gets the endpoints; A's own slice of web is left alone.
    let a_svcs: Api<Service> = Api::namespaced(a.client.clone(), "default");
    let a_slices: Api<EndpointSlice> = Api::namespaced(a.client.clone(), "default");
    a_slices
        .create(&pp, &slice("web-local", Some("web"), kcm, "198.18.0.9"))
        .await
        .unwrap();
    let web = a_svcs
        .create(&pp, &service("web", Some("true")))
        .await
        .unwrap();
    a_svcs.create(&pp, &service("plain", None)).await.unwrap();
    wait_for("A's web has cluster-b's endpoints", || async {
        a_slices
            .get_opt("cluster-b.default.web-abc")
            .await
            .unwrap()
            .is_some_and(|s| addresses(&s) == ["198.19.0.5"])
    })
    .await;
    let s = a_slices.get("cluster-b.default.web-abc").await.unwrap();
    assert_eq!(s.labels()[LABEL_SERVICE_NAME], "web");
    assert_eq!(s.labels()[LABEL_MANAGED_BY], MANAGED_BY);
    assert_eq!(s.labels()[label::REMOTE_CLUSTER], "cluster-b");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", web.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(80));
    assert_eq!(
        s.endpoints.as_ref().unwrap()[0].zone.as_deref(),
        Some("zone-a")
    );

    // An endpoint changes in B: the mirror and the import follow.
    b_slices
        .patch(
            "web-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["198.19.0.15"],
                                                "conditions": {"ready": true}}]})),
        )
        .await
        .unwrap();
    wait_for("the import follows B's endpoint", || async {
        a_slices
            .get_opt("cluster-b.default.web-abc")
            .await
            .unwrap()
            .is_some_and(|s| addresses(&s) == ["198.19.0.15"])
    })
    .await;

    // A's web is no longer global: its imported slice goes, the mirror of B's stays.
    a_svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {annotation::GLOBAL_SERVICE: null}}})),
        )
        .await
        .unwrap();
    wait_for(
        "the import of a Service no longer global is gone",
        || async {
            a_slices
                .get_opt("cluster-b.default.web-abc")
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;
    assert!(
        res.get_opt("cluster-b.default.web-abc")
            .await
            .unwrap()
            .is_some()
    );
    // Global again: back.
    a_svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {annotation::GLOBAL_SERVICE: "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_for("imported again", || async {
        a_slices
            .get_opt("cluster-b.default.web-abc")
            .await
            .unwrap()
            .is_some()
    })
    .await;

    // B removes its slice: the mirror and the import go.
    b_slices
        .delete("web-abc", &Default::default())
        .await
        .unwrap();
    wait_for("mirror and import of the removed slice gone", || async {
        res.get_opt("cluster-b.default.web-abc")
            .await
            .unwrap()
            .is_none()
            && a_slices
                .get_opt("cluster-b.default.web-abc")
                .await
                .unwrap()
                .is_none()
    })
    .await;
    // Another manager's slice of web never moved.
    let local = a_slices.get("web-local").await.unwrap();
    assert_eq!(addresses(&local), ["198.18.0.9"]);
    assert_eq!(local.labels()[LABEL_MANAGED_BY], kcm);

    // A new slice in B, then the RemoteCluster goes: its mirrors and imports go with it.
    b_slices
        .create(&pp, &slice("web-def", Some("web"), kcm, "198.19.0.21"))
        .await
        .unwrap();
    wait_for("web-def imported", || async {
        a_slices
            .get_opt("cluster-b.default.web-def")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    rcs.delete("cluster-b", &Default::default()).await.unwrap();
    wait_for("mirrors and imports of cluster-b gone", || async {
        res.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            && a_slices
                .get_opt("cluster-b.default.web-def")
                .await
                .unwrap()
                .is_none()
    })
    .await;
    assert!(a_slices.get_opt("web-local").await.unwrap().is_some());
}

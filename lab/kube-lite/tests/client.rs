//! kube-lite driven by the real kube-rs client: CRUD semantics, list, watch, watcher/reflector,
//! finalizers, owner garbage collection, status subresource, patches, server-side apply and a
//! Controller reconciling a cluster-scoped CRD.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::api_err;

const T: Duration = Duration::from_secs(10);

async fn server() -> (kube_lite::ServerHandle, Client) {
    let srv = kube_lite::Server::start(kube_lite::Config {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .expect("start kube-lite");
    let client = srv.client().await.expect("client");
    (srv, client)
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c
}

/// Waits (at most T) until the object `name` with this uid is gone.
async fn await_deleted<K>(api: &Api<K>, name: &str, uid: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::time::timeout(
        T,
        await_condition(api.clone(), name, conditions::is_deleted(uid)),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} still exists after {T:?}"))
    .unwrap();
}

#[tokio::test]
async fn crud_semantics_and_status_errors() {
    let (_srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .unwrap();
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(created.uid().is_some());
    assert!(created.metadata.creation_timestamp.is_some());

    // duplicate create: 409 AlreadyExists
    let e = api_err(
        cms.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    // update bumps the resourceVersion; a stale replace is a 409 Conflict
    let mut upd = created.clone();
    upd.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    let updated = cms
        .replace("a", &PostParams::default(), &upd)
        .await
        .unwrap();
    let rv2: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    let e = api_err(
        cms.replace("a", &PostParams::default(), &upd)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );

    // 404 with a NotFound reason
    let e = api_err(cms.get("missing").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));

    // invalid name: 422 Invalid naming the field
    let e = api_err(
        cms.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("metadata.name"), "{}", e.message);

    // a namespace that does not exist: 404 for the namespace
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let e = api_err(
        other
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    assert!(
        e.message.contains("namespaces \"nope\" not found"),
        "{}",
        e.message
    );

    // generateName
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = cms.create(&PostParams::default(), &g).await.unwrap();
    assert!(
        made.name_any().starts_with("gen-") && made.name_any().len() == 9,
        "{}",
        made.name_any()
    );

    // delete returns the object; afterwards 404
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(cms.get("a").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn list_pagination_and_selectors() {
    let (srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..25 {
        let mut c = cm(&format!("cm-{i:02}"), &[]);
        c.metadata.labels = Some(BTreeMap::from([
            (
                "tier".to_string(),
                if i % 2 == 0 { "front" } else { "back" }.to_string(),
            ),
            ("idx".to_string(), i.to_string()),
        ]));
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        srv.faults().requests("list", "configmaps"),
        3,
        "one request per page"
    );
    assert_eq!(names.len(), 25);
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "sorted and no duplicates"
    );

    let front = cms
        .list(&ListParams::default().labels("tier=front"))
        .await
        .unwrap();
    assert_eq!(front.items.len(), 13);
    let set = cms
        .list(&ListParams::default().labels("idx in (1,2,3),tier!=front"))
        .await
        .unwrap();
    assert_eq!(
        set.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        vec!["cm-01", "cm-03"]
    );
    let notin = cms
        .list(&ListParams::default().labels("tier notin (front),!missing"))
        .await
        .unwrap();
    assert_eq!(notin.items.len(), 12);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // all namespaces
    let all: Api<ConfigMap> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        25
    );
}

#[tokio::test]
async fn pod_field_selectors_status_split_and_strategic_merge() {
    let (_srv, client) = server().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p1"},
        "spec": {"nodeName": "node-a", "containers": [
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "side:1"}]},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    // status is not taken from create; the server defaults it
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let gen1 = created.metadata.generation;

    // status only through /status; generation unchanged by status
    let st = pods
        .patch_status(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(st.metadata.generation, gen1);
    // the main resource ignores status changes
    let main = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(main.status.unwrap().phase.as_deref(), Some("Running"));

    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a,status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(on_a.items.len(), 1);
    let on_b = pods
        .list(&ListParams::default().fields("spec.nodeName=node-b"))
        .await
        .unwrap();
    assert!(on_b.items.is_empty());

    // strategic merge: containers by name, env by name
    let patched = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}]}})),
        )
        .await
        .unwrap();
    let cs = patched.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("app:2"));
    assert_eq!(
        cs[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        vec!["A", "B"]
    );
    assert_eq!(cs[1].image.as_deref(), Some("side:1"));
    assert!(
        patched.metadata.generation > gen1,
        "spec change bumps generation"
    );

    // JSON patch
    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]),
    )
    .unwrap();
    let p = pods
        .patch("p1", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(p.labels().get("x").map(String::as_str), Some("y"));
}

#[tokio::test]
async fn watch_events_bookmarks_and_410_after_compaction() {
    let (srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().timeout(10).labels("w=1");
    let mut stream = cms.watch(&wp, &start).await.unwrap().boxed();

    let mut c = cm("w", &[]);
    c.metadata.labels = Some(BTreeMap::from([("w".to_string(), "1".to_string())]));
    cms.create(&PostParams::default(), &c).await.unwrap();
    cms.create(&PostParams::default(), &cm("unlabelled", &[]))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    // dropping the label makes it leave the selection: DELETED for this watch
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"w": null}}})),
    )
    .await
    .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(T, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => seen.push(("ADDED", o.name_any())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.name_any())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", "w".to_string()),
            ("MODIFIED", "w".to_string()),
            ("DELETED", "w".to_string())
        ]
    );

    // bookmarks
    let now = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut bm = cms
        .watch(&WatchParams::default().timeout(10), &now)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(T, bm.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");

    // after compaction, an old resourceVersion is gone
    srv.compact();
    let mut old = cms
        .watch(&WatchParams::default().timeout(10), &start)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(T, old.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_and_reflector_converge_and_survive_disconnects() {
    let (srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("pre-{i}"), &[]))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream =
        reflector(writer, watcher(cms.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    });
    tokio::time::timeout(T, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 5);

    // the watcher re-lists/re-watches after the server closes all watches
    srv.faults().disconnect_watches();
    cms.create(&PostParams::default(), &cm("after", &[]))
        .await
        .unwrap();
    cms.delete("pre-0", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(T, async {
        loop {
            let names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
            if names.len() == 5
                && names.contains(&"after".to_string())
                && !names.contains(&"pre-0".to_string())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reflector converges");
    task.abort();
}

#[tokio::test]
async fn finalizers_block_deletion_until_removed() {
    let (_srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut c = cm("fin", &[]);
    c.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    cms.delete("fin", &DeleteParams::default()).await.unwrap();
    let still = cms.get("fin").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // no new finalizers once deleting
    let e = api_err(
        cms.patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/keep", "x.io/new"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // removing the last finalizer removes the object
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(cms.get("fin").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn owner_references_are_garbage_collected_and_orphaning_works() {
    let (_srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let oref = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.uid().unwrap(),
        ..Default::default()
    };
    for name in ["dep-1", "dep-2"] {
        let mut d = cm(name, &[]);
        d.metadata.owner_references = Some(vec![oref.clone()]);
        cms.create(&PostParams::default(), &d).await.unwrap();
    }
    let dep1 = cms.get("dep-1").await.unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    await_deleted(&cms, "dep-1", &dep1.uid().unwrap()).await;
    assert_eq!(api_err(cms.get("dep-2").await.unwrap_err()).code, 404);

    // Orphan: dependents stay and lose the reference
    let owner = cms
        .create(&PostParams::default(), &cm("owner2", &[]))
        .await
        .unwrap();
    let mut d = cm("dep-3", &[]);
    d.metadata.owner_references = Some(vec![OwnerReference {
        name: "owner2".into(),
        uid: owner.uid().unwrap(),
        ..oref
    }]);
    cms.create(&PostParams::default(), &d).await.unwrap();
    cms.delete("owner2", &DeleteParams::orphan()).await.unwrap();
    let kept = cms.get("dep-3").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let (_srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let made = cms
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&desired))
        .await
        .unwrap();
    assert_eq!(made.data.as_ref().unwrap()["a"], "1");
    let mf = made.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}});
    let e = api_err(
        cms.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\"") && e.message.contains(".data.a"),
        "{}",
        e.message
    );

    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "9");

    // alice drops b from her configuration: b is removed, a stays (owned by bob)
    let alice2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let out = cms
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
        .await
        .unwrap();
    assert_eq!(
        out.data.unwrap(),
        BTreeMap::from([("a".to_string(), "9".to_string())])
    );

    // an ordinary update takes ownership, so alice now conflicts with the updater
    cms.patch(
        "ssa",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"c": "3"}})),
    )
    .await
    .unwrap();
    let alice3 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"c": "4"}});
    let e = api_err(
        cms.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice3))
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("conflict with \"editor\""),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn fault_injection() {
    let (srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    srv.faults().fail_next("create", "configmaps", 500, 1);
    let e = api_err(
        cms.create(&PostParams::default(), &cm("f", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    cms.create(&PostParams::default(), &cm("f", &[]))
        .await
        .unwrap();
    srv.faults().conflict_next_updates(2);
    for _ in 0..2 {
        let e = api_err(
            cms.patch(
                "f",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"x": "1"}})),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(e.code, 409);
    }
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    srv.faults().set_latency(Duration::from_millis(50));
    let t0 = std::time::Instant::now();
    cms.get("f").await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(50));
    srv.faults().reset();
}

#[tokio::test]
async fn namespace_deletion_removes_contents() {
    let (_srv, client) = server().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("doomed".into());
    let ns = nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "doomed");
    cms.create(&PostParams::default(), &cm("inside", &[]))
        .await
        .unwrap();
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    await_deleted(&nss, "doomed", &ns.uid().unwrap()).await;
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A cluster-scoped custom resource defined only in this test.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.kube-lite.io",
    version = "v1",
    kind = "Gadget",
    status = "GadgetStatus"
)]
#[kube(printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#)]
pub struct GadgetSpec {
    size: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct GadgetStatus {
    observed_generation: Option<i64>,
    doubled: i64,
}

struct Ctx {
    client: Client,
    cleaned: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

async fn reconcile(g: Arc<Gadget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let api: Api<Gadget> = Api::all(ctx.client.clone());
    finalizer(&api, "test.kube-lite.io/cleanup", g, |ev| async {
        match ev {
            Finalizer::Apply(g) => {
                let status = json!({"apiVersion": "test.kube-lite.io/v1", "kind": "Gadget",
                    "status": {"observed_generation": g.metadata.generation, "doubled": g.spec.size * 2}});
                api.patch_status(&g.name_any(), &PatchParams::apply("gadget-controller").force(), &Patch::Apply(&status)).await?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(g) => {
                ctx.cleaned.lock().unwrap().push(g.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

fn error_policy(_g: Arc<Gadget>, _e: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_reconciles_cluster_scoped_crd_with_finalizer() {
    let (_srv, client) = server().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "gadgets.test.kube-lite.io",
        &PatchParams::apply("test").force(),
        &Patch::Apply(Gadget::crd()),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        T,
        await_condition(
            crds.clone(),
            "gadgets.test.kube-lite.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleaned: Mutex::new(Vec::new()),
    });
    let gadgets: Api<Gadget> = Api::all(client.clone());
    let controller = Controller::new(gadgets.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move { eprintln!("reconciled: {r:?}") });
    let handle = tokio::spawn(controller);

    let g = Gadget::new("g1", GadgetSpec { size: 21 });
    gadgets.create(&PostParams::default(), &g).await.unwrap();
    let done = |g: Option<&Gadget>| {
        g.and_then(|g| g.status.as_ref())
            .is_some_and(|s| s.doubled == 42 && s.observed_generation == Some(1))
    };
    tokio::time::timeout(T, await_condition(gadgets.clone(), "g1", done))
        .await
        .unwrap()
        .unwrap();
    let live = gadgets.get("g1").await.unwrap();
    assert_eq!(
        live.finalizers(),
        &["test.kube-lite.io/cleanup".to_string()]
    );

    // spec change: generation 2, reconciled again
    gadgets
        .patch(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    let done2 = |g: Option<&Gadget>| {
        g.and_then(|g| g.status.as_ref())
            .is_some_and(|s| s.doubled == 10 && s.observed_generation == Some(2))
    };
    tokio::time::timeout(T, await_condition(gadgets.clone(), "g1", done2))
        .await
        .unwrap()
        .unwrap();

    // delete: the controller's cleanup runs, then the object goes
    gadgets
        .delete("g1", &DeleteParams::default())
        .await
        .unwrap();
    await_deleted(&gadgets, "g1", &live.uid().unwrap()).await;
    assert_eq!(*ctx.cleaned.lock().unwrap(), vec!["g1".to_string()]);
    assert!(Gadget::crd().spec.scope == "Cluster");
    handle.abort();

    // deleting the CRD stops serving the resource
    let g2 = gadgets
        .create(
            &PostParams::default(),
            &Gadget::new("g2", GadgetSpec { size: 1 }),
        )
        .await
        .unwrap();
    assert!(g2.meta().uid.is_some());
    crds.delete("gadgets.test.kube-lite.io", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_err(gadgets.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let (_srv, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = cms
        .create(&PostParams::default(), &cm("fg-owner", &[]))
        .await
        .unwrap();
    let mut d = cm("fg-dep", &[]);
    d.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "fg-owner".into(),
        uid: owner.uid().unwrap(),
        ..Default::default()
    }]);
    // the dependent has its own finalizer, so the owner must wait for it
    d.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &d).await.unwrap();
    cms.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let deleting =
        |o: Option<&ConfigMap>| o.is_some_and(|o| o.metadata.deletion_timestamp.is_some());
    tokio::time::timeout(T, await_condition(cms.clone(), "fg-dep", deleting))
        .await
        .unwrap()
        .unwrap();
    let o = cms.get("fg-owner").await.unwrap();
    assert!(
        o.finalizers().contains(&"foregroundDeletion".to_string()),
        "{:?}",
        o.finalizers()
    );
    // release the dependent: then the owner goes too
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    await_deleted(&cms, "fg-owner", &owner.uid().unwrap()).await;
}

#[tokio::test]
async fn streaming_list_watcher_tls_client_and_event_recorder() {
    let srv = kube_lite::Server::start(kube_lite::Config {
        tls: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(srv.url().starts_with("https://"));
    assert!(srv.ca_pem().unwrap().contains("BEGIN CERTIFICATE"));
    let client = srv.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("s-{i}"), &[]))
            .await
            .unwrap();
    }
    // sendInitialEvents=true (streaming lists) instead of list+watch
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().streaming_lists()),
    )
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    });
    tokio::time::timeout(T, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 3);
    task.abort();

    // kube-runtime's event recorder (events.k8s.io/v1 create, then a merge patch for the series)
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test-ctl".into(),
            instance: None,
        },
    );
    let target = cms.get("s-0").await.unwrap().object_ref(&());
    let ev = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &target).await.unwrap();
    recorder.publish(&ev, &target).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        list.items[0]
            .regarding
            .as_ref()
            .and_then(|r| r.name.as_deref()),
        Some("s-0")
    );
}

#[tokio::test]
async fn multi_version_crd_serves_every_version() {
    let (_srv, client) = server().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.multi.io"},
        "spec": {"group": "multi.io", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let gvk = |v: &str| kube::core::ApiResource {
        group: "multi.io".into(),
        version: v.into(),
        api_version: format!("multi.io/{v}"),
        kind: "Thing".into(),
        plural: "things".into(),
    };
    let beta: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("v1beta1"));
    let ga: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &gvk("v1"));
    let obj = kube::core::DynamicObject::new("t1", &gvk("v1beta1")).data(json!({"spec": {"a": 1}}));
    let made = beta.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(made.types.unwrap().api_version, "multi.io/v1beta1");
    let read = ga.get("t1").await.unwrap();
    assert_eq!(read.types.unwrap().api_version, "multi.io/v1");
    assert_eq!(read.data["spec"]["a"], 1);
    let stored = crds.get("things.multi.io").await.unwrap();
    assert_eq!(
        stored.status.unwrap().stored_versions,
        Some(vec!["v1".to_string()])
    );
}

#[tokio::test]
async fn extra_user_tokens_authenticate_and_others_are_refused() {
    let srv = kube_lite::Server::start(kube_lite::Config {
        token: Some("admin-token".into()),
        users: vec![kube_lite::TokenUser {
            token: "agent-token".into(),
            username: "system:serviceaccount:ns:agent".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let list = |c: Client| async move {
        Api::<ConfigMap>::namespaced(c, "default")
            .list(&Default::default())
            .await
    };
    list(srv.client().await.unwrap()).await.expect("admin");
    list(srv.client_with_token("agent-token").await.unwrap())
        .await
        .expect("a configured user");
    for wrong in ["nope", "agent-token2", ""] {
        let r = list(srv.client_with_token(wrong).await.unwrap()).await;
        assert_eq!(api_err(r.unwrap_err()).code, 401, "{wrong:?}");
    }
}

/// Patches that name no resourceVersion are redone on the fresh object when they race another
/// write, as the API server's GuaranteedUpdate does: none of many concurrent ones sees a 409 and
/// none is lost. A patch that names a stale version is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_without_a_version_never_conflict() {
    let (_s, client) = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("race".into());
    cms.create(&Default::default(), &cm).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..48 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            let body = if i % 2 == 0 {
                serde_json::json!({"data": {format!("k{i}"): "v"}})
            } else {
                serde_json::json!({"metadata": {"labels": {format!("l{i}"): "v"}}})
            };
            cms.patch(
                "race",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(body),
            )
            .await
            .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = cms.get("race").await.unwrap();
    assert_eq!(got.data.unwrap_or_default().len(), 24);
    assert_eq!(got.metadata.labels.unwrap_or_default().len(), 24);
    let stale = cms
        .patch(
            "race",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}}),
            ),
        )
        .await;
    match stale {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale version must be refused: {other:?}"),
    }
}

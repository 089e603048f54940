//! The lifecycle controller against kube-lite through the real kube client (and the real kubectl
//! for the GitOps install): install, upgrade, drift repair, invalid specs, singleton and deletion.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod logcapture;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hybridnet_api::operator::{HybridnetCluster, HybridnetClusterStatus};
use hybridnet_api::v1::{Network, Subnet};
use hybridnet_operator::controlplane::runtime::metrics::Metrics;
use hybridnet_operator::lifecycle::install::{self, OPERATOR_VERSION};
use hybridnet_operator::lifecycle::render::{self, ManagedObject};
use hybridnet_operator::lifecycle::settings::Settings;
use hybridnet_operator::lifecycle::{LifecycleConfig, names};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::wait::await_condition;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "hybridnet-system";
const WAIT: Duration = Duration::from_secs(30);

/// An allow-all admission webhook standing in for the operator's webhook server (another part of
/// the operator), so kube-lite can call the webhooks the lifecycle registers.
async fn allow_all_webhook() -> String {
    async fn review(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
        axum::Json(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": body["request"]["uid"], "allowed": true}
        }))
    }
    let app = axum::Router::new()
        .route("/validate", axum::routing::post(review))
        .route("/mutate", axum::routing::post(review));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Retries a write without a resourceVersion when the API server reports a concurrent write
/// (kube-lite returns 409 there where a real API server retries internally).
async fn retry_conflict<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = None;
    for _ in 0..10 {
        match write().await {
            Err(kube::Error::Api(s)) if s.code == 409 => last = Some(kube::Error::Api(s)),
            other => return other,
        }
    }
    Err(last.expect("ten conflicts"))
}

/// Merge-patches the spec of `HybridnetCluster/default`.
async fn patch_cluster(
    api: &Api<HybridnetCluster>,
    patch: Value,
) -> Result<HybridnetCluster, kube::Error> {
    retry_conflict(|| async {
        api.patch("default", &PatchParams::default(), &Patch::Merge(&patch))
            .await
    })
    .await
}

struct Env {
    server: kube_lite::ServerHandle,
    client: Client,
}

async fn start_kube_lite() -> Env {
    let webhook = allow_all_webhook().await;
    let cfg = kube_lite::Config {
        service_overrides: HashMap::from([(format!("{NS}/{}", names::WEBHOOK_SERVICE), webhook)]),
        ..Default::default()
    };
    let server = kube_lite::Server::start(cfg).await.unwrap();
    let client = server.client().await.unwrap();
    Env { server, client }
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in hybridnet_api::crd::all() {
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
}

async fn create_namespace(client: &Client) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some(NS.into());
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn start_controller(client: &Client) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    start_controller_with_deadline(
        client,
        hybridnet_operator::lifecycle::DEFAULT_PROGRESS_DEADLINE,
    )
}

fn start_controller_with_deadline(
    client: &Client,
    progress_deadline: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    start_controller_measured(client, progress_deadline, Metrics::new())
}

fn start_controller_measured(
    client: &Client,
    progress_deadline: Duration,
    metrics: Metrics,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let cfg = LifecycleConfig {
        namespace: NS.into(),
        operator_version: OPERATOR_VERSION.into(),
        instance: Some("test".into()),
        // Long: every reaction in these tests must come from a watch, not from the resync.
        resync: Duration::from_secs(600),
        progress_deadline,
        related_image: None,
    };
    tokio::spawn(hybridnet_operator::lifecycle::run(
        client.clone(),
        cfg,
        metrics,
    ))
}

async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    cond: impl Fn(Option<&K>) -> bool,
) -> Option<K>
where
    K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + Resource + 'static,
{
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
        Err(_) => panic!(
            "timed out waiting for {name}: {what}; now: {:?}",
            api.get_opt(name).await
        ),
    }
}

fn condition<'a>(
    s: &'a HybridnetClusterStatus,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().flatten().find(|c| c.type_ == t)
}

fn cond_is(c: Option<&HybridnetCluster>, t: &str, status: &str) -> bool {
    c.and_then(|c| c.status.as_ref())
        .and_then(|s| condition(s, t))
        .is_some_and(|c| c.status == status)
}

/// `expected` is contained in `actual` (objects by key, arrays element-wise, scalars equal).
fn is_subset(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let sub = format!("{path}.{k}");
                is_subset(v, a.get(k).unwrap_or(&Value::Null), &sub)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                is_subset(x, y, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, found {a}")),
    }
}

fn dynamic_api(client: &Client, o: &ManagedObject) -> Api<DynamicObject> {
    let ar = o.api_resource();
    match o.namespace() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Every rendered object exists with the rendered content (the webhook caBundle is the Secret's CA).
async fn assert_installed(client: &Client, spec: &hybridnet_api::operator::HybridnetClusterSpec) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets.get(names::WEBHOOK_SECRET).await.unwrap();
    let data = secret.data.clone().unwrap();
    for k in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(!data[k].0.is_empty(), "Secret key {k}");
    }
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = data["ca.crt"].0.clone();
    let settings = Settings::from_spec(spec, OPERATOR_VERSION, NS).unwrap();
    let rendered = render::render(&settings, Some(&ca));
    for o in &rendered.objects {
        let api = dynamic_api(client, o);
        let live = api
            .get_opt(o.name())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} {} was not created", o.kind(), o.name()));
        let live = serde_json::to_value(&live).unwrap();
        if let Err(e) = is_subset(&o.to_value().unwrap(), &live, o.kind()) {
            panic!("{} {}: {e}", o.kind(), o.name());
        }
        // Server-side applied by the operator's field manager.
        let managers: Vec<&str> = live["metadata"]["managedFields"]
            .as_array()
            .map(|m| m.iter().filter_map(|f| f["manager"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            managers.contains(&"hybridnet-operator"),
            "{} {}: managers {managers:?}",
            o.kind(),
            o.name()
        );
    }
    if let Some((network, subnet)) = rendered.bootstrap {
        let n = Api::<Network>::all(client.clone())
            .get(&network.name_any())
            .await
            .unwrap();
        assert_eq!(n.spec, network.spec);
        let s = Api::<Subnet>::all(client.clone())
            .get(&subnet.name_any())
            .await
            .unwrap();
        assert_eq!(s.spec, subnet.spec);
    }
}

/// Plays the DaemonSet controller: status for `desired` nodes, `updated` on the current template.
async fn ds_status(client: &Client, desired: i32, updated: i32, available: i32) {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    // Like a real controller: read, write, and retry when someone else wrote in between.
    for _ in 0..10 {
        let ds = api.get(names::NODE_AGENT).await.unwrap();
        let patch = json!({"status": {
            "observedGeneration": ds.metadata.generation,
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired,
            "numberMisscheduled": 0,
            "updatedNumberScheduled": updated,
            "numberReady": available,
            "numberAvailable": available,
            "numberUnavailable": desired - available
        }});
        match api
            .patch_status(
                names::NODE_AGENT,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("DaemonSet status: {e}"),
        }
    }
    panic!("DaemonSet status: conflicts did not stop");
}

fn counts(c: Option<&HybridnetCluster>) -> Option<(i32, i32, i32, i32)> {
    let n = c?.status.as_ref()?.node_agents.as_ref()?;
    Some((n.desired, n.updated, n.ready, n.available))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_repair_refuse_and_delete() {
    let env = start_kube_lite().await;
    let client = env.client.clone();
    install_crds(&client).await;
    create_namespace(&client).await;
    let controller = start_controller(&client);
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    let ds_api: Api<DaemonSet> = Api::namespaced(client.clone(), NS);

    // ---- install
    let sample = install::sample_cluster(OPERATOR_VERSION);
    clusters
        .create(&PostParams::default(), &sample)
        .await
        .unwrap();
    wait_for(&clusters, "default", "Progressing while installing", |c| {
        cond_is(c, "Progressing", "True") && cond_is(c, "Available", "False")
    })
    .await;
    let c = clusters.get("default").await.unwrap();
    assert!(
        c.finalizers()
            .iter()
            .any(|f| f == "operator.hybridnet.io/cleanup")
    );
    assert_eq!(
        c.status.as_ref().unwrap().target_version.as_deref(),
        Some(OPERATOR_VERSION)
    );
    assert_eq!(c.status.as_ref().unwrap().version, None);
    // The operator names its release on the object it reconciles (`kubectl hybridnet version`).
    let recorded = wait_for(
        &clusters,
        "default",
        "the operator version annotation",
        |c| {
            c.is_some_and(|c| {
                c.annotations()
                    .contains_key(hybridnet_api::constants::annotation::OPERATOR_VERSION)
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(
        recorded.annotations()[hybridnet_api::constants::annotation::OPERATOR_VERSION],
        OPERATOR_VERSION
    );
    assert_installed(&client, &sample.spec).await;
    let ds = ds_api.get(names::NODE_AGENT).await.unwrap();
    let owner = &ds.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("HybridnetCluster", "default", Some(true))
    );

    // The DaemonSet controller rolls out 3 nodes.
    ds_status(&client, 3, 3, 3).await;
    let done = wait_for(&clusters, "default", "Available after the rollout", |c| {
        cond_is(c, "Available", "True")
            && cond_is(c, "Progressing", "False")
            && counts(c) == Some((3, 3, 3, 3))
    })
    .await
    .unwrap();
    let st = done.status.unwrap();
    assert_eq!(st.version.as_deref(), Some(OPERATOR_VERSION));
    assert_eq!(st.observed_generation, done.metadata.generation);
    assert_eq!(
        condition(&st, "Degraded").unwrap().status,
        "False",
        "{st:?}"
    );

    // ---- upgrade: a new operand version rolls the DaemonSet; Available never drops.
    let new_version = "0.1.1";
    patch_cluster(&clusters, json!({"spec": {"version": new_version}}))
        .await
        .unwrap();
    let rolled = wait_for(
        &ds_api,
        names::NODE_AGENT,
        "new image in the template",
        |d| {
            d.and_then(|d| d.spec.template.spec.as_ref())
                .is_some_and(|p| {
                    p.containers[0].image.as_deref() == Some("docker.io/hybridnet/hybridnet:v0.1.1")
                })
        },
    )
    .await
    .unwrap();
    let inits = rolled
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .clone()
        .unwrap();
    assert_eq!(
        inits[0].image.as_deref(),
        Some("docker.io/hybridnet/hybridnet:v0.1.1")
    );
    let mut history = Vec::new();
    for (updated, available) in [(0, 3), (1, 2), (2, 2), (3, 2)] {
        ds_status(&client, 3, updated, available).await;
        let c = wait_for(&clusters, "default", "rollout progress", |c| {
            counts(c) == Some((3, updated, available, available))
        })
        .await
        .unwrap();
        let st = c.status.unwrap();
        assert_eq!(
            condition(&st, "Progressing").unwrap().status,
            "True",
            "{st:?}"
        );
        assert_eq!(condition(&st, "Progressing").unwrap().reason, "RollingOut");
        assert_eq!(
            st.version.as_deref(),
            Some(OPERATOR_VERSION),
            "old version until rolled out"
        );
        assert_eq!(st.target_version.as_deref(), Some(new_version));
        history.push(condition(&st, "Available").unwrap().status.clone());
    }
    assert!(
        history.iter().all(|s| s == "True"),
        "Available dropped during the upgrade: {history:?}"
    );
    ds_status(&client, 3, 3, 3).await;
    let up = wait_for(&clusters, "default", "upgrade done", |c| {
        cond_is(c, "Progressing", "False")
            && c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.version.as_deref())
                == Some(new_version)
    })
    .await
    .unwrap();
    assert!(cond_is(Some(&up), "Available", "True"));
    let mut upgraded_spec = sample.spec.clone();
    upgraded_spec.version = Some(new_version.into());
    assert_installed(&client, &upgraded_spec).await;

    // ---- drift: a user edits a managed field and adds a label; the edit is reverted, the label kept.
    let edit = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": names::NODE_AGENT, "labels": {"team": "net"}},
        "spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 5}}}
    });
    retry_conflict(|| async {
        ds_api
            .patch(
                names::NODE_AGENT,
                &PatchParams::apply("someone-else").force(),
                &Patch::Apply(&edit),
            )
            .await
    })
    .await
    .unwrap();
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let loosen: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}
    ]))
    .unwrap();
    retry_conflict(|| async {
        vwc.patch(
            names::VALIDATING_WEBHOOK_CONFIG,
            &PatchParams::default(),
            &Patch::Json::<()>(loosen.clone()),
        )
        .await
    })
    .await
    .unwrap();
    let repaired = wait_for(&ds_api, names::NODE_AGENT, "maxUnavailable reverted", |d| {
        d.and_then(|d| d.spec.update_strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
            == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    })
    .await
    .unwrap();
    assert_eq!(
        repaired.labels().get("team").map(String::as_str),
        Some("net"),
        "user label survives"
    );
    assert_eq!(
        repaired.labels()["app.kubernetes.io/managed-by"],
        "hybridnet-operator"
    );
    wait_for(
        &vwc,
        names::VALIDATING_WEBHOOK_CONFIG,
        "networking webhook fails closed again",
        |w| {
            w.and_then(|w| w.webhooks.as_ref())
                .is_some_and(|h| h[0].failure_policy.as_deref() == Some("Fail"))
        },
    )
    .await;

    // ---- invalid specs: what the CRD schema can express is refused by the API server with the
    // field named; the rest is reported as Degraded with the field named, and nothing is applied.
    match patch_cluster(
        &clusters,
        json!({"spec": {"nodeAgent": {"vxlanUDPPort": 70000}}}),
    )
    .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("spec.nodeAgent.vxlanUDPPort"),
                "{}",
                s.message
            );
        }
        Err(e) => panic!("{e}"),
        // An API server that does not check CRD schemas: the operator refuses it.
        Ok(_) => {
            let c = wait_for(&clusters, "default", "Degraded for the port", |c| {
                cond_is(c, "Degraded", "True")
            })
            .await
            .unwrap();
            let msg = &condition(c.status.as_ref().unwrap(), "Degraded")
                .unwrap()
                .message;
            assert!(msg.contains("spec.nodeAgent.vxlanUDPPort"), "{msg}");
            patch_cluster(
                &clusters,
                json!({"spec": {"nodeAgent": {"vxlanUDPPort": 8472}}}),
            )
            .await
            .unwrap();
            wait_for(&clusters, "default", "Degraded cleared", |c| {
                cond_is(c, "Degraded", "False")
            })
            .await;
        }
    }
    let generation_before = ds_api
        .get(names::NODE_AGENT)
        .await
        .unwrap()
        .metadata
        .generation;
    patch_cluster(&clusters, json!({"spec": {"nodeAgent": {"preferVxlanInterfaces": ["eth0,evil"], "healthPort": 9101}}})).await
        .unwrap();
    let bad = wait_for(&clusters, "default", "Degraded InvalidSpec", |c| {
        cond_is(c, "Degraded", "True")
    })
    .await
    .unwrap();
    let st = bad.status.unwrap();
    let d = condition(&st, "Degraded").unwrap();
    assert_eq!(d.reason, "InvalidSpec", "{}", d.message);
    assert!(
        d.message
            .contains("spec.nodeAgent.preferVxlanInterfaces[0]"),
        "{}",
        d.message
    );
    assert!(
        d.message
            .contains("spec.nodeAgent.metricsPort: 9101 is also the health port"),
        "{}",
        d.message
    );
    assert_eq!(
        condition(&st, "Available").unwrap().status,
        "True",
        "what runs keeps running"
    );
    assert_eq!(
        ds_api
            .get(names::NODE_AGENT)
            .await
            .unwrap()
            .metadata
            .generation,
        generation_before
    );
    patch_cluster(
        &clusters,
        json!({"spec": {"nodeAgent": {"preferVxlanInterfaces": null, "healthPort": 11021}}}),
    )
    .await
    .unwrap();
    wait_for(&clusters, "default", "Degraded cleared", |c| {
        cond_is(c, "Degraded", "False")
    })
    .await;

    // ---- the node agent's VLAN check flags: `31s` matches the CRD pattern but is over the agent's
    // limit, so the operator refuses it (Degraded InvalidSpec, nothing applied); a malformed value is
    // refused by the API server's pattern or else by the operator; valid values reach the agent's
    // command line, and removing them removes the flags (the agent's defaults apply again).
    let vlan_flag_prefixes = [
        "--vlan-check-timeout",
        "--enable-vlan-arp-enhancement",
        "--check-pod-connectivity-from-host",
    ];
    let agent_args = |d: Option<&DaemonSet>| -> Vec<String> {
        d.and_then(|d| d.spec.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.args.clone())
            .unwrap_or_default()
    };
    let vlan_flags = |d: Option<&DaemonSet>| -> Vec<String> {
        agent_args(d)
            .into_iter()
            .filter(|a| vlan_flag_prefixes.iter().any(|p| a.starts_with(p)))
            .collect()
    };
    let degraded_message = |c: Option<&HybridnetCluster>| -> String {
        c.and_then(|c| c.status.as_ref())
            .and_then(|s| condition(s, "Degraded"))
            .filter(|d| d.status == "True")
            .map(|d| format!("{}: {}", d.reason, d.message))
            .unwrap_or_default()
    };
    let generation_before = ds_api
        .get(names::NODE_AGENT)
        .await
        .unwrap()
        .metadata
        .generation;
    assert!(vlan_flags(Some(&ds_api.get(names::NODE_AGENT).await.unwrap())).is_empty());
    patch_cluster(
        &clusters,
        json!({"spec": {"nodeAgent": {"vlanCheckTimeout": "31s"}}}),
    )
    .await
    .unwrap();
    let bad = wait_for(&clusters, "default", "Degraded InvalidSpec for 31s", |c| {
        degraded_message(c).contains("spec.nodeAgent.vlanCheckTimeout")
    })
    .await;
    let msg = degraded_message(bad.as_ref());
    assert!(
        msg.starts_with("InvalidSpec: ")
            && msg.contains("spec.nodeAgent.vlanCheckTimeout: \"31s\" is longer than 30s"),
        "{msg}"
    );
    assert_eq!(
        ds_api
            .get(names::NODE_AGENT)
            .await
            .unwrap()
            .metadata
            .generation,
        generation_before,
        "nothing applied from an invalid spec"
    );
    match patch_cluster(
        &clusters,
        json!({"spec": {"nodeAgent": {"vlanCheckTimeout": "5x"}}}),
    )
    .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{}", s.message);
            assert!(
                s.message.contains("spec.nodeAgent.vlanCheckTimeout"),
                "{}",
                s.message
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => {
            let bad = wait_for(&clusters, "default", "Degraded InvalidSpec for 5x", |c| {
                degraded_message(c).contains("\"5x\" is not a duration")
            })
            .await;
            let msg = degraded_message(bad.as_ref());
            assert!(
                msg.starts_with("InvalidSpec: ")
                    && msg.contains("spec.nodeAgent.vlanCheckTimeout: \"5x\" is not a duration"),
                "{msg}"
            );
        }
    }
    patch_cluster(
        &clusters,
        json!({"spec": {"nodeAgent": {
            "vlanCheckTimeout": "1.5s",
            "enableVlanArpEnhancement": false,
            "checkPodConnectivityFromHost": false
        }}}),
    )
    .await
    .unwrap();
    let applied = wait_for(
        &ds_api,
        names::NODE_AGENT,
        "VLAN check flags applied",
        |d| !vlan_flags(d).is_empty(),
    )
    .await;
    assert_eq!(
        vlan_flags(applied.as_ref()),
        [
            "--vlan-check-timeout=1500ms",
            "--enable-vlan-arp-enhancement=false",
            "--check-pod-connectivity-from-host=false"
        ]
    );
    wait_for(&clusters, "default", "Degraded cleared", |c| {
        cond_is(c, "Degraded", "False")
    })
    .await;
    patch_cluster(
        &clusters,
        json!({"spec": {"nodeAgent": {
            "vlanCheckTimeout": null,
            "enableVlanArpEnhancement": null,
            "checkPodConnectivityFromHost": null
        }}}),
    )
    .await
    .unwrap();
    let reverted = wait_for(
        &ds_api,
        names::NODE_AGENT,
        "VLAN check flags removed",
        |d| d.is_some() && vlan_flags(d).is_empty(),
    )
    .await;
    assert!(agent_args(reverted.as_ref()).contains(&"--health-port=11021".to_string()));
    ds_status(&client, 3, 3, 3).await;

    // ---- upstream's Helm settings (docs/migration.md): a malformed VTEP CIDR and a
    // meaningless Pod webhook selector are refused with the field named and nothing applied; valid values reach
    // the agent's flags and the Pod webhooks' object selectors, and removing them removes them.
    let generation_before = ds_api
        .get(names::NODE_AGENT)
        .await
        .unwrap()
        .metadata
        .generation;
    for (bad, field) in [
        (
            json!({"nodeAgent": {"vtepAddressCIDRs": ["10.0.0.1/8"]}}),
            "spec.nodeAgent.vtepAddressCIDRs[0]",
        ),
        (
            json!({"webhook": {"additionalPodMatchExpressions": [{"key": "app", "operator": "In"}]}}),
            "spec.webhook.additionalPodMatchExpressions[0].values",
        ),
        // Well-formed but the Pod webhooks switched off for every pod labelled `app`
        // (docs/operations.md, "Pod webhook exemptions").
        (
            json!({"webhook": {"additionalPodMatchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}}),
            "spec.webhook.additionalPodMatchExpressions[0].operator",
        ),
    ] {
        match patch_cluster(&clusters, json!({ "spec": bad })).await {
            // A schema that can express it (minItems etc.) may refuse it up front.
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{}", s.message),
            Err(e) => panic!("{e}"),
            Ok(_) => {
                let c = wait_for(&clusters, "default", field, |c| {
                    degraded_message(c).contains(field)
                })
                .await;
                assert!(
                    degraded_message(c.as_ref()).starts_with("InvalidSpec: "),
                    "{field}"
                );
                assert_eq!(
                    ds_api
                        .get(names::NODE_AGENT)
                        .await
                        .unwrap()
                        .metadata
                        .generation,
                    generation_before,
                    "nothing applied from an invalid spec ({field})"
                );
            }
        }
        patch_cluster(
            &clusters,
            json!({"spec": {"nodeAgent": {"vtepAddressCIDRs": null}, "features": null, "webhook": {"additionalPodMatchExpressions": null}}}),
        )
        .await
        .unwrap();
        wait_for(&clusters, "default", "Degraded cleared", |c| {
            cond_is(c, "Degraded", "False")
        })
        .await;
    }
    patch_cluster(
        &clusters,
        json!({"spec": {
            "nodeAgent": {
                "vtepAddressCIDRs": ["192.168.0.0/16", "fd00::/8"],
                "updateIPInstanceStatus": false,
                "removeFelixLeftovers": true
            },
            "webhook": {"additionalPodMatchExpressions": [
                {"key": "k8s-app", "operator": "NotIn", "values": ["kube-proxy"]}
            ]}
        }}),
    )
    .await
    .unwrap();
    let upstream_flags = |d: Option<&DaemonSet>| -> Vec<String> {
        agent_args(d)
            .into_iter()
            .filter(|a| {
                [
                    "--vtep-address-cidrs",
                    "--update-ipinstance-status",
                    "--remove-felix-leftovers",
                ]
                .iter()
                .any(|p| a.starts_with(p))
            })
            .collect()
    };
    let applied = wait_for(
        &ds_api,
        names::NODE_AGENT,
        "upstream settings applied",
        |d| !upstream_flags(d).is_empty(),
    )
    .await;
    assert_eq!(
        upstream_flags(applied.as_ref()),
        [
            "--update-ipinstance-status=false",
            "--remove-felix-leftovers=true",
            "--vtep-address-cidrs=192.168.0.0/16,fd00::/8"
        ]
    );
    let pod_selector_keys = |w: Option<&ValidatingWebhookConfiguration>| -> Vec<String> {
        w.and_then(|w| w.webhooks.as_ref())
            .and_then(|h| h.get(1))
            .and_then(|h| h.object_selector.as_ref())
            .and_then(|s| s.match_expressions.as_ref())
            .map(|e| e.iter().map(|r| r.key.clone()).collect())
            .unwrap_or_default()
    };
    wait_for(
        &vwc,
        names::VALIDATING_WEBHOOK_CONFIG,
        "extra pod match expression",
        |w| pod_selector_keys(w) == ["webhook.hybridnet.io/ignore", "k8s-app"],
    )
    .await;
    patch_cluster(
        &clusters,
        json!({"spec": {
            "nodeAgent": {"vtepAddressCIDRs": null, "updateIPInstanceStatus": null, "removeFelixLeftovers": null},
            "webhook": {"additionalPodMatchExpressions": null}
        }}),
    )
    .await
    .unwrap();
    wait_for(
        &ds_api,
        names::NODE_AGENT,
        "upstream settings removed",
        |d| d.is_some() && upstream_flags(d).is_empty(),
    )
    .await;
    // Back to upstream's default expression.
    wait_for(
        &vwc,
        names::VALIDATING_WEBHOOK_CONFIG,
        "default pod match expression",
        |w| pod_selector_keys(w) == ["webhook.hybridnet.io/ignore", "app"],
    )
    .await;
    ds_status(&client, 3, 3, 3).await;

    // ---- a second HybridnetCluster is refused: by the CRD's validation rule where the API server
    // evaluates it, otherwise by the operator with Degraded/NotSingleton and nothing applied.
    let mut other = install::sample_cluster(OPERATOR_VERSION);
    other.metadata.name = Some("second".into());
    match clusters.create(&PostParams::default(), &other).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{}", s.message);
            assert!(s.message.contains("default"), "{}", s.message);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => {
            let refused = wait_for(&clusters, "second", "NotSingleton", |c| {
                cond_is(c, "Degraded", "True")
            })
            .await
            .unwrap();
            assert_eq!(
                condition(refused.status.as_ref().unwrap(), "Degraded")
                    .unwrap()
                    .reason,
                "NotSingleton"
            );
            assert!(refused.finalizers().is_empty());
            clusters
                .delete("second", &DeleteParams::default())
                .await
                .unwrap();
        }
    }

    // ---- deletion: what the operator created goes; user objects and user data stay.
    let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let mut user_sa = ServiceAccount::default();
    user_sa.metadata.name = Some("user-sa".into());
    sa_api
        .create(&PostParams::default(), &user_sa)
        .await
        .unwrap();
    let cr_api: Api<ClusterRole> = Api::all(client.clone());
    let mut user_role = ClusterRole::default();
    user_role.metadata.name = Some("user-role".into());
    user_role.metadata.labels = Some(
        [(
            "app.kubernetes.io/part-of".to_string(),
            "hybridnet".to_string(),
        )]
        .into(),
    );
    cr_api
        .create(&PostParams::default(), &user_role)
        .await
        .unwrap();
    let nets: Api<Network> = Api::all(client.clone());
    let mut user_net = Network::new("underlay1", Default::default());
    user_net.spec.node_selector = Some([("net".to_string(), "u1".to_string())].into());
    nets.create(&PostParams::default(), &user_net)
        .await
        .unwrap();

    let settings = Settings::from_spec(&upgraded_spec, OPERATOR_VERSION, NS).unwrap();
    let rendered = render::render(&settings, None);
    clusters
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&clusters, "default", "deleted", |c| c.is_none()).await;
    for o in &rendered.objects {
        let left = dynamic_api(&client, o).get_opt(o.name()).await.unwrap();
        assert!(
            left.is_none(),
            "{} {} left behind: {:?}",
            o.kind(),
            o.name(),
            left.map(|l| l.metadata)
        );
    }
    assert!(
        Api::<Secret>::namespaced(client.clone(), NS)
            .get_opt(names::WEBHOOK_SECRET)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sa_api.get_opt("user-sa").await.unwrap().is_some(),
        "user ServiceAccount removed"
    );
    assert!(
        cr_api.get_opt("user-role").await.unwrap().is_some(),
        "user ClusterRole removed"
    );
    assert!(
        nets.get_opt("underlay1").await.unwrap().is_some(),
        "user Network removed"
    );
    assert!(
        nets.get_opt("init").await.unwrap().is_some(),
        "bootstrap Network removed"
    );
    assert!(
        Api::<Subnet>::all(client.clone())
            .get_opt("init")
            .await
            .unwrap()
            .is_some(),
        "bootstrap Subnet removed"
    );

    controller.abort();
    drop(env.server);
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_install_with_kubectl_server_side_apply_reaches_the_same_state() {
    let env = start_kube_lite().await;
    let kc = env.server.kubeconfig_path().to_path_buf();
    // CRDs first, their own kustomization (a Flux Kustomization or Argo CD Application of its own).
    let crds = repo("deploy/crds");
    let out = kubectl(
        &kc,
        &["apply", "--server-side", "-k", crds.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deploy = repo("deploy");
    let out = kubectl(
        &kc,
        &["apply", "--server-side", "-k", deploy.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "kubectl apply -k deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout).to_string();
    for want in [
        "namespace/hybridnet-system serverside-applied",
        "deployment.apps/hybridnet-operator serverside-applied",
        "clusterrole.rbac.authorization.k8s.io/hybridnet-operator serverside-applied",
        "hybridnetcluster.operator.hybridnet.io/default serverside-applied",
    ] {
        assert!(applied.contains(want), "{want} not in:\n{applied}");
    }
    // What the Deployment would run: the lifecycle controller in the operator's namespace.
    let client = env.client.clone();
    let controller = start_controller(&client);
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    wait_for(&clusters, "default", "reconciled", |c| {
        cond_is(c, "Progressing", "True")
    })
    .await;
    let sample = install::sample_cluster(OPERATOR_VERSION);
    let live = clusters.get("default").await.unwrap();
    assert_eq!(live.spec, sample.spec);
    assert_installed(&client, &sample.spec).await;
    ds_status(&client, 2, 2, 2).await;
    wait_for(&clusters, "default", "Available", |c| {
        cond_is(c, "Available", "True") && cond_is(c, "Progressing", "False")
    })
    .await;
    // Re-applying the GitOps install is a no-op for the operator's objects and keeps them valid.
    let out = kubectl(
        &kc,
        &["apply", "--server-side", "-k", deploy.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_installed(&client, &sample.spec).await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_webhook_certificate_is_rotated_injected_and_announced() {
    use hybridnet_operator::lifecycle::certs::{self, CertBundle, CertDecision};
    let env = start_kube_lite().await;
    let client = env.client.clone();
    install_crds(&client).await;
    create_namespace(&client).await;
    // A certificate issued 340 days ago: it expires in 25 days, inside the 30-day window.
    let dns = certs::service_dns_names(names::WEBHOOK_SERVICE, NS);
    let now = time::OffsetDateTime::now_utc();
    let old = certs::issue(&dns, now - time::Duration::days(340), None).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut secret = Secret::default();
    secret.metadata.name = Some(names::WEBHOOK_SECRET.into());
    secret.type_ = Some("kubernetes.io/tls".into());
    secret.data = Some(
        old.to_secret_data()
            .into_iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
            .collect(),
    );
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let controller = start_controller(&client);
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    clusters
        .create(
            &PostParams::default(),
            &install::sample_cluster(OPERATOR_VERSION),
        )
        .await
        .unwrap();
    let old_cert = old.cert_pem.clone();
    let rotated = wait_for(&secrets, names::WEBHOOK_SECRET, "a new certificate", |s| {
        s.and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("tls.crt"))
            .is_some_and(|c| c.0 != old_cert.as_bytes())
    })
    .await
    .unwrap();
    let data = rotated
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let new = CertBundle::from_secret_data(&data).unwrap();
    assert_eq!(
        certs::decide(Some(&new), &dns, now.unix_timestamp()),
        CertDecision::Keep
    );
    assert!(
        new.ca_pem.ends_with(&old.ca_pem),
        "the previous CA stays trusted during the rotation"
    );
    assert_eq!(new.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
    // Both webhook configurations carry the new bundle.
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let ca = new.ca_pem.clone();
    let v = wait_for(
        &vwc,
        names::VALIDATING_WEBHOOK_CONFIG,
        "new caBundle",
        |w| {
            w.and_then(|w| w.webhooks.as_ref()).is_some_and(|h| {
                h.iter().all(|x| {
                    x.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice())
                        == Some(ca.as_bytes())
                })
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(v.webhooks.unwrap().len(), 3);
    let mwc: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    wait_for(&mwc, names::MUTATING_WEBHOOK_CONFIG, "new caBundle", |w| {
        w.and_then(|w| w.webhooks.as_ref()).is_some_and(|h| {
            h[0].client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice())
                == Some(ca.as_bytes())
        })
    })
    .await;
    // The rotation and the condition transitions are Events on the HybridnetCluster.
    wait_for(&clusters, "default", "reconciled", |c| {
        cond_is(c, "Progressing", "True")
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("HybridnetCluster")
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect::<Vec<_>>();
        if reasons.iter().any(|(r, _)| r == "CertificateIssued")
            && reasons.iter().any(|(r, _)| r == "ProgressingTrue")
        {
            break;
        }
        // Events are written after the status; give the publisher a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let issued = reasons
        .iter()
        .find(|(r, _)| r == "CertificateIssued")
        .unwrap_or_else(|| panic!("no CertificateIssued event in {reasons:?}"));
    // 25 days minus the moments since the old certificate was issued.
    assert!(
        issued.1.contains("expires in 25 days") || issued.1.contains("expires in 24 days"),
        "{}",
        issued.1
    );
    assert!(
        reasons.iter().any(|(r, _)| r == "ProgressingTrue"),
        "{reasons:?}"
    );
    controller.abort();
}

fn degraded_reason(c: Option<&HybridnetCluster>) -> Option<String> {
    c.and_then(|c| c.status.as_ref())
        .and_then(|s| condition(s, "Degraded"))
        .filter(|d| d.status == "True")
        .map(|d| d.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_without_progress_is_degraded_across_a_restart_and_clears_when_agents_are_ready()
{
    let env = start_kube_lite().await;
    let client = env.client.clone();
    install_crds(&client).await;
    create_namespace(&client).await;
    let deadline = Duration::from_secs(2);
    let controller = start_controller_with_deadline(&client, deadline);
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    let ds_api: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    clusters
        .create(
            &PostParams::default(),
            &install::sample_cluster(OPERATOR_VERSION),
        )
        .await
        .unwrap();
    wait_for(
        &ds_api,
        names::NODE_AGENT,
        "the node agent DaemonSet",
        |d| d.is_some(),
    )
    .await;

    // One node, its pod created on the current template but never ready.
    ds_status(&client, 1, 1, 0).await;
    let stuck = wait_for(&clusters, "default", "Degraded/RolloutStuck", |c| {
        degraded_reason(c).as_deref() == Some("RolloutStuck")
    })
    .await
    .unwrap();
    let st = stuck.status.unwrap();
    let d = condition(&st, "Degraded").unwrap();
    assert!(
        d.message
            .contains(&format!("DaemonSet {NS}/{}", names::NODE_AGENT))
            && d.message.contains("deadline 2s")
            && d.message
                .contains("1 of 1 node agents updated, 0 ready, 0 available"),
        "{}",
        d.message
    );
    let p = condition(&st, "Progressing").unwrap();
    assert_eq!(p.status, "True");
    let last_progress = p.last_transition_time.clone();
    assert!(
        d.last_transition_time.0.as_second() - last_progress.0.as_second() > 2,
        "Degraded only after the deadline: {st:?}"
    );
    assert_eq!(condition(&st, "Available").unwrap().status, "False");

    // Restart the operator: the timer comes from the status, so it stays Degraded. A second node
    // (more work, no progress) is the change the new controller must react to.
    controller.abort();
    let _ = controller.await;
    let controller = start_controller_with_deadline(&client, deadline);
    ds_status(&client, 2, 1, 0).await;
    let after = wait_for(&clusters, "default", "the new counts", |c| {
        counts(c) == Some((2, 1, 0, 0))
    })
    .await
    .unwrap();
    let st = after.status.clone().unwrap();
    assert_eq!(
        degraded_reason(Some(&after)).as_deref(),
        Some("RolloutStuck"),
        "{st:?}"
    );
    assert_eq!(
        condition(&st, "Progressing").unwrap().last_transition_time,
        last_progress
    );

    // The agents become ready: Degraded clears, Available.
    ds_status(&client, 2, 2, 2).await;
    let ok = wait_for(&clusters, "default", "Available, not Degraded", |c| {
        cond_is(c, "Available", "True")
            && cond_is(c, "Degraded", "False")
            && cond_is(c, "Progressing", "False")
    })
    .await
    .unwrap();
    assert_eq!(
        condition(ok.status.as_ref().unwrap(), "Degraded")
            .unwrap()
            .reason,
        "AsExpected"
    );
    controller.abort();
}

// Current-thread runtime: the thread-local log capture sees every task of the test.
/// Every lifecycle reconcile is counted with its result and timed, in the operator's registry
/// beside the network controllers (`hybridnet_controller_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_reconciles_are_counted_and_timed() {
    let env = start_kube_lite().await;
    let client = env.client.clone();
    install_crds(&client).await;
    create_namespace(&client).await;
    let metrics = Metrics::new();
    let controller = start_controller_measured(
        &client,
        hybridnet_operator::lifecycle::DEFAULT_PROGRESS_DEADLINE,
        metrics.clone(),
    );
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    clusters
        .create(
            &PostParams::default(),
            &install::sample_cluster(OPERATOR_VERSION),
        )
        .await
        .unwrap();
    let ok = r#"hybridnet_controller_reconciles_total{controller="lifecycle",result="ok"}"#;
    let timed = r#"hybridnet_controller_reconcile_duration_seconds_count{controller="lifecycle"}"#;
    let count = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(WAIT, async {
        while count(&metrics.encode(), ok) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no lifecycle reconcile recorded: {}", metrics.encode()));
    // Stopped (and awaited) first, so no reconcile is half recorded while we read.
    controller.abort();
    let _ = controller.await;
    let text = metrics.encode();
    // Every counted reconcile (ok or error) was also timed.
    let errors = count(
        &text,
        r#"hybridnet_controller_reconciles_total{controller="lifecycle",result="error"}"#,
    );
    assert_eq!(count(&text, timed), count(&text, ok) + errors, "{text}");
}

#[tokio::test]
async fn without_the_hybridnet_cluster_crd_the_lifecycle_waits_quietly() {
    let (logs, _guard) = logcapture::capture("hybridnet_operator=debug");
    let env = start_kube_lite().await;
    let client = env.client.clone();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (file, crd) in hybridnet_api::crd::all() {
        if file != "operator.hybridnet.io_hybridnetclusters.yaml" {
            api.create(&PostParams::default(), &crd).await.unwrap();
        }
    }
    create_namespace(&client).await;
    let controller = start_controller(&client);
    // The backoff grows from under a second: three failed attempts come quickly.
    tokio::time::timeout(WAIT, async {
        while logs.count("lifecycle watch still failing") < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no retries seen: {}", logs.text()));
    let text = logs.text();
    assert_eq!(text.matches("is not served").count(), 1, "{text}");
    assert!(
        !text.contains(" WARN ") && !text.contains(" ERROR "),
        "{text}"
    );
    assert!(!controller.is_finished(), "the lifecycle gave up");
    controller.abort();
}

/// OpenShift's SecurityContextConstraints CRD, with the field names, types and required fields
/// of openshift/api security/v1/zz_generated.crd-manifests/0000_03_config-operator_01_securitycontextconstraints.crd.yaml
/// (descriptions left out). Unknown fields are pruned, so a misspelt field would be lost and the
/// comparison below would fail.
fn scc_crd() -> CustomResourceDefinition {
    let strings = json!({"type": "array", "nullable": true, "items": {"type": "string"}});
    let ranges = json!({"type": "array", "items": {"type": "object", "properties": {
        "min": {"type": "integer", "format": "int64"},
        "max": {"type": "integer", "format": "int64"}
    }}});
    let group_strategy = json!({"type": "object", "nullable": true, "properties": {
        "type": {"type": "string"}, "ranges": ranges
    }});
    let boolean = json!({"type": "boolean"});
    let nullable_bool = json!({"type": "boolean", "nullable": true});
    let run_as_user = json!({"type": "object", "nullable": true, "properties": {
        "type": {"type": "string"},
        "uid": {"type": "integer", "format": "int64"},
        "uidRangeMax": {"type": "integer", "format": "int64"},
        "uidRangeMin": {"type": "integer", "format": "int64"}
    }});
    let se_linux = json!({"type": "object", "nullable": true, "properties": {
        "type": {"type": "string"},
        "seLinuxOptions": {"type": "object", "properties": {
            "level": {"type": "string"}, "role": {"type": "string"},
            "type": {"type": "string"}, "user": {"type": "string"}
        }}
    }});
    let flex = json!({"type": "array", "nullable": true, "items": {
        "type": "object", "required": ["driver"],
        "properties": {"driver": {"type": "string"}}
    }});
    let properties = json!({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "allowHostDirVolumePlugin": boolean,
        "allowHostIPC": boolean,
        "allowHostNetwork": boolean,
        "allowHostPID": boolean,
        "allowHostPorts": boolean,
        "allowPrivilegeEscalation": nullable_bool,
        "allowPrivilegedContainer": boolean,
        "allowedCapabilities": strings,
        "allowedFlexVolumes": flex,
        "allowedUnsafeSysctls": strings,
        "defaultAddCapabilities": strings,
        "defaultAllowPrivilegeEscalation": nullable_bool,
        "forbiddenSysctls": strings,
        "fsGroup": group_strategy,
        "groups": strings,
        "priority": {"type": "integer", "format": "int32", "nullable": true},
        "readOnlyRootFilesystem": boolean,
        "requiredDropCapabilities": strings,
        "runAsUser": run_as_user,
        "seLinuxContext": se_linux,
        "seccompProfiles": strings,
        "supplementalGroups": group_strategy,
        "users": strings,
        "volumes": strings
    });
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "securitycontextconstraints.security.openshift.io"},
        "spec": {
            "group": "security.openshift.io",
            "names": {
                "kind": "SecurityContextConstraints",
                "listKind": "SecurityContextConstraintsList",
                "plural": "securitycontextconstraints",
                "singular": "securitycontextconstraints"
            },
            "scope": "Cluster",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": properties,
                    "required": [
                        "allowHostDirVolumePlugin", "allowHostIPC", "allowHostNetwork",
                        "allowHostPID", "allowHostPorts", "allowPrivilegedContainer",
                        "allowedCapabilities", "defaultAddCapabilities", "priority",
                        "readOnlyRootFilesystem", "requiredDropCapabilities", "volumes"
                    ]
                }}
            }]
        }
    }))
    .unwrap()
}

fn scc_rule(role: Option<&ClusterRole>) -> bool {
    role.and_then(|r| r.rules.as_ref()).is_some_and(|rules| {
        rules.iter().any(|r| {
            r.api_groups
                .iter()
                .flatten()
                .any(|g| g == "security.openshift.io")
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_openshift_the_operator_owns_an_scc_for_the_agent_and_removes_it_with_the_cluster() {
    use hybridnet_operator::lifecycle::openshift::{self, Platform};
    let env = start_kube_lite().await;
    let client = env.client.clone();
    install_crds(&client).await;
    create_namespace(&client).await;
    let controller = start_controller(&client);
    let clusters: Api<HybridnetCluster> = Api::all(client.clone());
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let ds_api: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    let sample = install::sample_cluster(OPERATOR_VERSION);
    clusters
        .create(&PostParams::default(), &sample)
        .await
        .unwrap();

    // Plain Kubernetes first: the agent's role has no SCC rule.
    let role = wait_for(&roles, names::NODE_AGENT, "agent ClusterRole", |r| {
        r.is_some()
    })
    .await;
    assert!(!scc_rule(role.as_ref()), "{role:?}");

    // The API server starts serving security.openshift.io: the next reconcile renders the SCC
    // and the `use` grant.
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &scc_crd())
        .await
        .unwrap();
    patch_cluster(
        &clusters,
        json!({"metadata": {"annotations": {"test.hybridnet.io/nudge": "1"}}}),
    )
    .await
    .unwrap();
    let sccs: Api<DynamicObject> = Api::all_with(client.clone(), &openshift::scc_api_resource());
    let live = wait_for(&sccs, names::NODE_AGENT, "the agent's SCC", |s| s.is_some())
        .await
        .unwrap();
    let role = wait_for(&roles, names::NODE_AGENT, "the `use` grant", |r| {
        scc_rule(r)
    })
    .await;

    // Exactly what the pure rendering says, server-side applied by the operator, owned by the
    // HybridnetCluster; and it admits the live DaemonSet's pods.
    let settings = Settings::from_spec(&sample.spec, OPERATOR_VERSION, NS).unwrap();
    let rendered = render::render_on(&settings, None, Platform::OpenShift);
    let want = rendered
        .objects
        .iter()
        .find(|o| o.kind() == "SecurityContextConstraints")
        .unwrap();
    let live_json = serde_json::to_value(&live).unwrap();
    let mut want_json = want.to_value().unwrap();
    // Owner references are set by the reconciler; labels and the rest must match.
    want_json["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    is_subset(&want_json, &live_json, "scc").unwrap();
    let owner = live.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.kind.as_str()),
        Some("HybridnetCluster")
    );
    let managers: Vec<String> = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "hybridnet-operator"),
        "{managers:?}"
    );
    let live_scc: openshift::SecurityContextConstraints =
        serde_json::from_value(live_json).unwrap();
    let ds = ds_api.get(names::NODE_AGENT).await.unwrap();
    assert_eq!(openshift::refusals(&live_scc, &ds), Vec::<String>::new());
    let role_rules = role.unwrap().rules.unwrap();
    assert!(hybridnet_operator::lifecycle::rbac::allows_name(
        &role_rules,
        openshift::SECURITY_GROUP,
        openshift::SCC_RESOURCE,
        "use",
        names::NODE_AGENT
    ));
    assert!(!hybridnet_operator::lifecycle::rbac::allows_name(
        &role_rules,
        openshift::SECURITY_GROUP,
        openshift::SCC_RESOURCE,
        "use",
        "privileged"
    ));

    // Removed with the HybridnetCluster, like every other object the operator created.
    clusters
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&clusters, "default", "deleted", |c| c.is_none()).await;
    assert!(
        sccs.get_opt(names::NODE_AGENT).await.unwrap().is_none(),
        "the SCC was left behind"
    );
    controller.abort();
    drop(env.server);
}

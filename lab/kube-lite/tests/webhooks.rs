//! Admission webhooks served by the test over HTTPS (axum + axum-server with rustls/ring and an
//! rcgen certificate): mutation through JSON patch, denial, rule/namespaceSelector/objectSelector
//! matching, service references, failurePolicy, timeouts and caBundle verification.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::api_err;

#[derive(Default)]
struct Calls(Mutex<Vec<(String, String, String)>>);

impl Calls {
    fn record(&self, hook: &str, review: &Value) {
        let r = &review["request"];
        self.0.lock().unwrap().push((
            hook.to_string(),
            r["operation"].as_str().unwrap_or("").to_string(),
            r["name"].as_str().unwrap_or("").to_string(),
        ));
    }
    fn count(&self, hook: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == hook)
            .count()
    }
}

async fn mutate(State(calls): State<Arc<Calls>>, Json(review): Json<Value>) -> Json<Value> {
    calls.record("mutate", &review);
    let uid = review["request"]["uid"].clone();
    let has_labels = review["request"]["object"]["metadata"]["labels"].is_object();
    let patch = if has_labels {
        json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "true"}])
    } else {
        json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "true"}}])
    };
    let b64 = kube_lite::util::base64_encode(patch.to_string().as_bytes());
    Json(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": b64}}),
    )
}

async fn deny(State(calls): State<Arc<Calls>>, Json(review): Json<Value>) -> Json<Value> {
    calls.record("deny", &review);
    let uid = review["request"]["uid"].clone();
    let name = review["request"]["name"].as_str().unwrap_or("");
    let response = if name.starts_with("bad") {
        json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": format!("name {name} is not allowed")}})
    } else {
        json!({"uid": uid, "allowed": true})
    };
    Json(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
    )
}

async fn slow(Json(review): Json<Value>) -> Json<Value> {
    // a webhook slower than its timeoutSeconds
    tokio::time::sleep(Duration::from_secs(3)).await;
    Json(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": review["request"]["uid"], "allowed": true}}),
    )
}

struct Hooks {
    addr: std::net::SocketAddr,
    ca_b64: String,
    calls: Arc<Calls>,
    _handle: axum_server::Handle<std::net::SocketAddr>,
}

async fn start_hooks() -> Hooks {
    let certs = kube_lite::tls::generate(&[
        "127.0.0.1".into(),
        "localhost".into(),
        "denier.hooks.svc".into(),
    ])
    .unwrap();
    let cfg = kube_lite::tls::server_config(&certs.cert_pem, &certs.key_pem).unwrap();
    let calls = Arc::new(Calls::default());
    let app = axum::Router::new()
        .route("/mutate", post(mutate))
        .route("/deny", post(deny))
        .route("/slow", post(slow))
        .with_state(calls.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg)),
    )
    .unwrap()
    .handle(handle.clone());
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Hooks {
        addr,
        ca_b64: kube_lite::util::base64_encode(certs.ca_pem.as_bytes()),
        calls,
        _handle: handle,
    }
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    if !labels.is_empty() {
        c.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    c
}

async fn ns(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let mut n = Namespace::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
}

async fn apply(client: &Client, kind: &str, obj: Value) {
    let ar = kube::core::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    let api: Api<kube::core::DynamicObject> = Api::all_with(client.clone(), &ar);
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn mutating_and_denying_webhooks() {
    let hooks = start_hooks().await;
    let srv = kube_lite::Server::start(kube_lite::Config {
        service_overrides: HashMap::from([(
            "hooks/denier".to_string(),
            format!("https://127.0.0.1:{}", hooks.addr.port()),
        )]),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = srv.client().await.unwrap();
    ns(&client, "guarded", &[("webhooks", "on")]).await;
    ns(&client, "free", &[]).await;

    apply(&client, "MutatingWebhookConfiguration", json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mutator"},
        "webhooks": [{
            "name": "mutate.test.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", hooks.addr.port()), "caBundle": hooks.ca_b64},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE"]}],
            "objectSelector": {"matchExpressions": [{"key": "skip-mutation", "operator": "DoesNotExist"}]},
        }]
    })).await;
    apply(&client, "ValidatingWebhookConfiguration", json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "denier"},
        "webhooks": [{
            "name": "deny.test.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"namespace": "hooks", "name": "denier", "path": "/deny"}, "caBundle": hooks.ca_b64},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"webhooks": "on"}},
        }]
    })).await;

    let guarded: Api<ConfigMap> = Api::namespaced(client.clone(), "guarded");
    let free: Api<ConfigMap> = Api::namespaced(client.clone(), "free");

    let good = guarded
        .create(&PostParams::default(), &cm("good", &[]))
        .await
        .unwrap();
    assert_eq!(
        good.labels().get("mutated").map(String::as_str),
        Some("true"),
        "mutated by JSON patch"
    );
    assert_eq!(hooks.calls.count("deny"), 1);

    let e = api_err(
        guarded
            .create(&PostParams::default(), &cm("bad-1", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "admission webhook \"deny.test.io\" denied the request: name bad-1 is not allowed"
    );
    assert!(
        guarded.get_opt("bad-1").await.unwrap().is_none(),
        "denied objects are not stored"
    );

    // the namespaceSelector keeps the validating webhook out of "free"
    free.create(&PostParams::default(), &cm("bad-2", &[]))
        .await
        .unwrap();
    assert_eq!(hooks.calls.count("deny"), 2);

    // objectSelector: no mutation for labelled objects
    let skipped = free
        .create(
            &PostParams::default(),
            &cm("plain", &[("skip-mutation", "yes")]),
        )
        .await
        .unwrap();
    assert!(!skipped.labels().contains_key("mutated"));
    let mutate_calls = hooks.calls.count("mutate");
    assert_eq!(mutate_calls, 3);

    // rules: updates are not sent to the CREATE-only mutator, but are validated
    guarded
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(hooks.calls.count("mutate"), mutate_calls);
    assert_eq!(hooks.calls.count("deny"), 3);
    let calls = hooks.calls.0.lock().unwrap().clone();
    assert_eq!(
        calls.last().unwrap(),
        &("deny".to_string(), "UPDATE".to_string(), "good".to_string())
    );
}

#[tokio::test]
async fn failure_policy_timeouts_and_ca_verification() {
    let hooks = start_hooks().await;
    let srv = kube_lite::Server::start(kube_lite::Config::default())
        .await
        .unwrap();
    let client = srv.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = |name: &str, url: String, ca: &str, policy: &str, timeout: u64| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "v"},
            "webhooks": [{
                "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"url": url, "caBundle": ca}, "failurePolicy": policy, "timeoutSeconds": timeout,
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["*"]}],
            }]
        })
    };
    // unreachable + Ignore: allowed
    apply(
        &client,
        "ValidatingWebhookConfiguration",
        hook(
            "down.test.io",
            format!("https://127.0.0.1:{closed}/x"),
            &hooks.ca_b64,
            "Ignore",
            2,
        ),
    )
    .await;
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();

    // unreachable + Fail: 500 naming the webhook
    apply(
        &client,
        "ValidatingWebhookConfiguration",
        hook(
            "down.test.io",
            format!("https://127.0.0.1:{closed}/x"),
            &hooks.ca_b64,
            "Fail",
            2,
        ),
    )
    .await;
    let e = api_err(
        cms.create(&PostParams::default(), &cm("b", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(
        e.message
            .contains("failed calling webhook \"down.test.io\""),
        "{}",
        e.message
    );

    // a CA that did not sign the webhook's certificate: TLS fails
    let other_ca = kube_lite::tls::generate(&["127.0.0.1".into()])
        .unwrap()
        .ca_pem;
    let other_b64 = kube_lite::util::base64_encode(other_ca.as_bytes());
    apply(
        &client,
        "ValidatingWebhookConfiguration",
        hook(
            "deny.test.io",
            format!("https://127.0.0.1:{}/deny", hooks.addr.port()),
            &other_b64,
            "Fail",
            2,
        ),
    )
    .await;
    let e = api_err(
        cms.create(&PostParams::default(), &cm("c", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(e.message.contains("tls"), "{}", e.message);
    assert_eq!(
        hooks.calls.count("deny"),
        0,
        "no request reached the webhook"
    );

    // timeoutSeconds
    apply(
        &client,
        "ValidatingWebhookConfiguration",
        hook(
            "slow.test.io",
            format!("https://127.0.0.1:{}/slow", hooks.addr.port()),
            &hooks.ca_b64,
            "Fail",
            1,
        ),
    )
    .await;
    let t0 = std::time::Instant::now();
    let e = api_err(
        cms.create(&PostParams::default(), &cm("d", &[]))
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("deadline"), "{}", e.message);
    assert!(t0.elapsed() < Duration::from_millis(2900));

    // deletes are admitted too (operations "*"): the right CA again, denial by name
    apply(
        &client,
        "ValidatingWebhookConfiguration",
        hook(
            "deny.test.io",
            format!("https://127.0.0.1:{}/deny", hooks.addr.port()),
            &hooks.ca_b64,
            "Fail",
            2,
        ),
    )
    .await;
    cms.delete("a", &Default::default()).await.unwrap();
    let calls = hooks.calls.0.lock().unwrap().clone();
    assert_eq!(
        calls.last().unwrap(),
        &("deny".to_string(), "DELETE".to_string(), "a".to_string())
    );
}

//! Hostile and malformed input: bad JSON bodies, bad selectors, bad patch documents, bad CRDs,
//! mismatched kinds and names. Each gets a 4xx Status with a clear message and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use http_body_util::BodyExt;
use kube::Client;
use serde_json::Value;

struct Raw {
    client: Client,
    _srv: kube_lite::ServerHandle,
}

impl Raw {
    async fn new() -> Self {
        let srv = kube_lite::Server::start(kube_lite::Config::default())
            .await
            .unwrap();
        Raw {
            client: srv.client().await.unwrap(),
            _srv: srv,
        }
    }

    async fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        let resp = self.client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }

    async fn expect(
        &self,
        method: &str,
        path: &str,
        ct: &str,
        body: &str,
        code: u16,
        needle: &str,
    ) -> Value {
        let (got, v) = self.send(method, path, ct, body).await;
        assert_eq!(got, code, "{method} {path} {body}: {v}");
        assert_eq!(v["kind"], "Status", "{v}");
        assert_eq!(v["code"], code, "{v}");
        let msg = v["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "message {msg:?} should contain {needle:?}"
        );
        v
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const JSON: &str = "application/json";

#[tokio::test]
async fn bad_bodies() {
    let r = Raw::new().await;
    r.expect("POST", CMS, JSON, "{not json", 400, "json parse error")
        .await;
    r.expect("POST", CMS, JSON, "", 400, "empty").await;
    r.expect("POST", CMS, JSON, "[1,2]", 400, "JSON object")
        .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        400,
        "does not match",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        400,
        "API version",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":{"name":"x","namespace":"other"}}"#,
        400,
        "namespace of the provided object",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":{"name":"x","resourceVersion":"5"}}"#,
        400,
        "resourceVersion should not be set",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":"x"}"#,
        400,
        "metadata must be an object",
    )
    .await;
    let v = r
        .expect(
            "POST",
            CMS,
            JSON,
            r#"{"metadata":{"name":"x","labels":{"bad key!":"v","k":"bad value!"}}}"#,
            422,
            "is invalid",
        )
        .await;
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(v["details"]["causes"].as_array().unwrap().len(), 2, "{v}");
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":{}}"#,
        422,
        "name or generateName is required",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":{"name":"x","ownerReferences":[{"kind":"A"}]}}"#,
        422,
        "ownerReferences[0].uid",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":{"name":"x","finalizers":["not valid!"]}}"#,
        422,
        "finalizers",
    )
    .await;
    r.expect(
        "POST",
        CMS,
        "application/vnd.kubernetes.protobuf",
        "k8s\0garbage",
        415,
        "unknown format",
    )
    .await;
    // nothing was stored
    let (code, list) = r.send("GET", CMS, JSON, "").await;
    assert_eq!(code, 200);
    assert!(list["items"].as_array().unwrap().is_empty());

    // PUT: missing resourceVersion, name mismatch
    r.send("POST", CMS, JSON, r#"{"metadata":{"name":"a"}}"#)
        .await;
    r.expect(
        "PUT",
        &format!("{CMS}/a"),
        JSON,
        r#"{"metadata":{"name":"a"}}"#,
        422,
        "must be specified for an update",
    )
    .await;
    r.expect(
        "PUT",
        &format!("{CMS}/a"),
        JSON,
        r#"{"metadata":{"name":"b","resourceVersion":"1"}}"#,
        409,
        "modified",
    )
    .await;
    r.expect(
        "PUT",
        &format!("{CMS}/missing"),
        JSON,
        r#"{"metadata":{"name":"missing","resourceVersion":"1"}}"#,
        404,
        "not found",
    )
    .await;
    // DeleteOptions
    r.expect(
        "DELETE",
        &format!("{CMS}/a"),
        JSON,
        r#"{"propagationPolicy":"Sideways"}"#,
        422,
        "Unsupported value",
    )
    .await;
    r.expect(
        "DELETE",
        &format!("{CMS}/a"),
        JSON,
        r#"{"preconditions":{"uid":"nope"}}"#,
        409,
        "Precondition failed",
    )
    .await;
}

#[tokio::test]
async fn bad_selectors_and_list_parameters() {
    let r = Raw::new().await;
    for (q, needle) in [
        ("labelSelector=app+in+web", "unable to parse requirement"),
        ("labelSelector=a+b+c%3Dd", "invalid label key"),
        ("labelSelector=app%3Dnot+valid", "invalid label value"),
        ("labelSelector=n%3Ex", "must be an integer"),
        (
            "fieldSelector=spec.nodeName%3Dx",
            "field label not supported: spec.nodeName",
        ),
        ("fieldSelector=metadata.name", "can't understand"),
        ("limit=ten", "invalid limit"),
        ("continue=garbage", "continue key is not valid"),
        ("resourceVersion=abc", "invalid resourceVersion"),
    ] {
        r.expect("GET", &format!("{CMS}?{q}"), JSON, "", 400, needle)
            .await;
    }
    r.expect(
        "GET",
        &format!("{CMS}?watch=1&timeoutSeconds=x"),
        JSON,
        "",
        400,
        "timeoutSeconds",
    )
    .await;
    r.expect(
        "GET",
        "/api/v1/namespaces/default/nonsense",
        JSON,
        "",
        404,
        "could not find the requested resource",
    )
    .await;
    r.expect(
        "GET",
        "/apis/example.com/v1/widgets",
        JSON,
        "",
        404,
        "could not find",
    )
    .await;
    r.expect(
        "GET",
        "/api/v1/namespaces/default/nodes/n1",
        JSON,
        "",
        404,
        "could not find",
    )
    .await;
}

#[tokio::test]
async fn bad_patches() {
    let r = Raw::new().await;
    r.send(
        "POST",
        CMS,
        JSON,
        r#"{"metadata":{"name":"p"},"data":{"a":"1"}}"#,
    )
    .await;
    let p = format!("{CMS}/p");
    let (_, before) = r.send("GET", &p, JSON, "").await;
    r.expect(
        "PATCH",
        &p,
        "application/json-patch+json",
        "{not json",
        400,
        "error decoding JSON patch",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/json-patch+json",
        r#"[{"op":"explode","path":"/a"}]"#,
        400,
        "error decoding JSON patch",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/json-patch+json",
        r#"[{"op":"remove","path":"/data/missing"}]"#,
        422,
        "rejected our request",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/json-patch+json",
        r#"[{"op":"test","path":"/data/a","value":"2"}]"#,
        422,
        "rejected our request",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/merge-patch+json",
        "[1]",
        400,
        "JSON object",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/merge-patch+json",
        "{",
        400,
        "error decoding patch",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/merge-patch+json",
        r#"{"metadata":{"resourceVersion":"1"}}"#,
        409,
        "modified",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/merge-patch+json",
        r#"{"metadata":{"name":"other"}}"#,
        400,
        "does not match the name",
    )
    .await;
    r.expect(
        "PATCH",
        &p,
        "application/strategic-merge-patch+json",
        r#"{"$patch":"explode"}"#,
        422,
        "unknown patch type",
    )
    .await;
    r.expect("PATCH", &p, "text/plain", "{}", 415, "unknown format")
        .await;
    r.expect(
        "PATCH",
        &p,
        "application/apply-patch+yaml",
        "data: {a: b}",
        400,
        "fieldManager",
    )
    .await;
    r.expect(
        "PATCH",
        &format!("{p}?fieldManager=m"),
        "application/apply-patch+yaml",
        "data: [unclosed",
        400,
        "YAML",
    )
    .await;
    r.expect(
        "PATCH",
        &format!("{p}?fieldManager=m"),
        "application/apply-patch+yaml",
        "- a list",
        400,
        "must be an object",
    )
    .await;
    r.expect(
        "PATCH",
        &format!("{p}?fieldManager=m"),
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p, managedFields: [{manager: x}]}\n",
        400,
        "managedFields must be nil",
    )
    .await;
    r.expect(
        "PATCH",
        &format!("{p}?dryRun=Some"),
        "application/merge-patch+json",
        "{}",
        400,
        "dryRun",
    )
    .await;
    // after all that, the object is unchanged
    let (_, obj) = r.send("GET", &p, JSON, "").await;
    assert_eq!(obj["data"]["a"], "1");
    assert_eq!(
        obj["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn bad_custom_resource_definitions() {
    let r = Raw::new().await;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let v = r
        .expect(
            "POST",
            crds,
            JSON,
            r#"{"metadata":{"name":"wrong"},"spec":{"group":"nodots","scope":"Sideways","names":{"plural":"Things"},"versions":[]}}"#,
            422,
            "is invalid",
        )
        .await;
    let fields: Vec<&str> = v["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    for f in [
        "spec.group",
        "spec.scope",
        "spec.names.plural",
        "spec.names.kind",
        "spec.versions",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    // two storage versions
    r.expect(
        "POST",
        crds,
        JSON,
        r#"{"metadata":{"name":"things.ex.io"},"spec":{"group":"ex.io","scope":"Cluster","names":{"plural":"things","kind":"Thing"},
            "versions":[{"name":"v1","served":true,"storage":true},{"name":"v2","served":true,"storage":true}]}}"#,
        422,
        "exactly one version marked as storage",
    )
    .await;
    // nothing got registered
    r.expect(
        "GET",
        "/apis/ex.io/v1/things",
        JSON,
        "",
        404,
        "could not find",
    )
    .await;
}

//! kubectl's connection flags through the real kubectl against kube-lite (requiring a bearer
//! token): `--token` replaces the kubeconfig user's credentials, `--cluster` and `--user` pick
//! kubeconfig entries other than the context's, and malformed values are refused before any
//! request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;

#[tokio::test]
async fn token_cluster_and_user_flags_reach_the_client() {
    if !kubectl_available() {
        return;
    }
    let server = kube_lite::Server::start(kube_lite::Config {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let k = server.kubeconfig_path().to_path_buf();
    let client = server.client().await.unwrap();
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(client);
    for (_, crd) in hybridnet_api::crd::all() {
        crds.create(&Default::default(), &crd).await.unwrap();
    }
    // The kubeconfig's own token works (once the new resources are served).
    let mut ok = false;
    for _ in 0..100 {
        if kubectl(&k, &["ip", "ls", "-A"]).await.code == 0 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "ip ls with the kubeconfig's token");

    // --token replaces it: a wrong one is refused by the server.
    let r = kubectl(&k, &["ip", "ls", "-A", "--token", "wrong"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("401") || r.stderr.to_lowercase().contains("unauthorized"),
        "{}",
        r.stderr
    );

    // A kubeconfig whose context points at a dead cluster and a user without a token: --cluster
    // and --user pick the working entries.
    let text = std::fs::read_to_string(&k).unwrap();
    let mut kc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let good_cluster = kc["clusters"][0]["name"].as_str().unwrap().to_string();
    let good_user = kc["users"][0]["name"].as_str().unwrap().to_string();
    let mut dead = kc["clusters"][0].clone();
    dead["name"] = "dead".into();
    dead["cluster"]["server"] = "http://127.0.0.1:1".into();
    kc["clusters"].as_array_mut().unwrap().push(dead);
    kc["users"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "nobody", "user": {}}));
    let ctx =
        serde_json::json!({"name": "broken", "context": {"cluster": "dead", "user": "nobody"}});
    kc["contexts"].as_array_mut().unwrap().push(ctx);
    kc["current-context"] = "broken".into();
    let dir = tempfile::tempdir().unwrap();
    let k2 = dir.path().join("kubeconfig");
    std::fs::write(&k2, serde_json::to_string(&kc).unwrap()).unwrap();

    let r = kubectl(&k2, &["ip", "ls", "-A"]).await;
    assert_eq!(r.code, 1, "the broken context must fail: {r:?}");
    let r = kubectl(&k2, &["ip", "ls", "-A", "--cluster", &good_cluster]).await;
    assert_eq!(r.code, 1, "right cluster, user without token: {r:?}");
    assert!(
        r.stderr.contains("401") || r.stderr.to_lowercase().contains("unauthorized"),
        "{}",
        r.stderr
    );
    kubectl(
        &k2,
        &[
            "ip",
            "ls",
            "-A",
            "--cluster",
            &good_cluster,
            "--user",
            &good_user,
        ],
    )
    .await
    .ok();
    kubectl(
        &k2,
        &[
            "ip",
            "ls",
            "-A",
            "--cluster",
            &good_cluster,
            "--token",
            "s3cret",
        ],
    )
    .await
    .ok();

    // Malformed values: refused as usage errors, nothing sent.
    for args in [
        &["ip", "ls", "--as-group", "g"][..],
        &["ip", "ls", "--token", ""][..],
        &["ip", "ls", "--as", ""][..],
    ] {
        let r = kubectl(&k, args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
    }
    // Impersonation is accepted and sent (kube-lite does not authorize by user, so it answers).
    kubectl(
        &k,
        &["ip", "ls", "-A", "--as", "alice", "--as-group", "devs"],
    )
    .await
    .ok();
}

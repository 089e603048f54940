//! `kubectl hybridnet cluster connect|disconnect` through the real kubectl against two kube-lite
//! API servers (HTTPS, bearer tokens), named as two contexts of one kubeconfig: both sides get
//! the Secret (usable: a client built from it reaches the other server), the Role that grants the
//! operator exactly that Secret, and the RemoteCluster; a second connect changes nothing;
//! disconnect removes both sides and leaves a Secret the user made; bad input is refused before
//! anything is written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::path::Path;

use common::*;
use hybridnet_api::multicluster::credentials::{ClientAuth, Credentials};
use hybridnet_api::multicluster::{RemoteCluster, RemoteClusterSpec, SecretRef};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};

const NS: &str = "hybridnet-system";

async fn tls_cluster(token: &str) -> Cluster {
    let c = cluster_with(
        kube_lite::Config {
            tls: true,
            token: Some(token.into()),
            ..Default::default()
        },
        true,
    )
    .await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    Api::<Namespace>::all(c.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    c
}

fn b64(s: &str) -> String {
    serde_json::to_value(ByteString(s.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// One kubeconfig, a context per (name, server, token).
fn kubeconfig(dir: &Path, entries: &[(&str, &Cluster, &str)]) -> std::path::PathBuf {
    let mut clusters = String::new();
    let mut users = String::new();
    let mut contexts = String::new();
    for (name, c, token) in entries {
        clusters.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
            c.server.url(),
            b64(c.server.ca_pem().unwrap())
        ));
        users.push_str(&format!("- name: {name}\n  user:\n    token: {token}\n"));
        contexts.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n"
        ));
    }
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{clusters}users:\n{users}contexts:\n{contexts}current-context: {}\n",
            entries[0].0
        ),
    )
    .unwrap();
    path
}

async fn secret_data(c: &Client, name: &str) -> Option<Credentials> {
    let s = Api::<Secret>::namespaced(c.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()?;
    Some(Credentials::from_secret_data(&s.data.unwrap()).unwrap())
}

/// What the operator does with the Secret: a client to the other server, which answers.
async fn reaches(endpoint: &str, creds: &Credentials) -> bool {
    let kc: kube::config::Kubeconfig = serde_json::from_value(creds.kubeconfig(endpoint)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    Api::<Namespace>::all(client)
        .get("kube-system")
        .await
        .is_ok()
}

async fn count_access_objects(c: &Client, name: &str) -> usize {
    let s = Api::<Secret>::namespaced(c.clone(), NS)
        .get_opt(name)
        .await
        .unwrap();
    let r = Api::<Role>::namespaced(c.clone(), NS)
        .get_opt(name)
        .await
        .unwrap();
    let b = Api::<RoleBinding>::namespaced(c.clone(), NS)
        .get_opt(name)
        .await
        .unwrap();
    [s.is_some(), r.is_some(), b.is_some()]
        .iter()
        .filter(|x| **x)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_disconnect_two_clusters() {
    if !kubectl_available() {
        return;
    }
    let a = tls_cluster("token-a").await;
    let b = tls_cluster("token-b").await;
    let dir = tempfile::tempdir().unwrap();
    let k = kubeconfig(
        dir.path(),
        &[("cluster-a", &a, "token-a"), ("cluster-b", &b, "token-b")],
    );
    let rcs_a: Api<RemoteCluster> = Api::all(a.client.clone());
    let rcs_b: Api<RemoteCluster> = Api::all(b.client.clone());

    // Dry run: the plan for both sides, no credentials shown, nothing written.
    let r = kubectl(
        &k,
        &[
            "cluster",
            "connect",
            "--remote-context",
            "cluster-b",
            "--dry-run",
        ],
    )
    .await;
    r.ok();
    assert!(
        r.stdout.contains("In context cluster-a:")
            && r.stdout
                .contains("Secret hybridnet-system/hybridnet-remote-cluster-b")
            && r.stdout
                .contains(&format!("RemoteCluster cluster-b -> {}", b.server.url()))
            && r.stdout.contains("RemoteCluster cluster-a -> ")
            && r.stdout.contains("a bearer token")
            && !r.stdout.contains("token-b"),
        "{r:?}"
    );
    assert!(
        rcs_a
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        rcs_b
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Connect, twice: the second run changes nothing.
    for _ in 0..2 {
        let r = kubectl(
            &k,
            &[
                "cluster",
                "connect",
                "--remote-context",
                "cluster-b",
                "--timeout",
                "7",
            ],
        )
        .await;
        r.ok();
        assert!(
            r.stdout
                .contains("context cluster-a: remotecluster.multicluster.alibaba.com/cluster-b serverside-applied"),
            "{r:?}"
        );
    }
    for (here, there, rc_name, token) in [
        (&a, &b, "cluster-b", "token-b"),
        (&b, &a, "cluster-a", "token-a"),
    ] {
        let object = format!("hybridnet-remote-{rc_name}");
        let rc = Api::<RemoteCluster>::all(here.client.clone())
            .get(rc_name)
            .await
            .unwrap();
        assert_eq!(
            rc.spec.api_endpoint,
            there.server.url().trim_end_matches('/')
        );
        assert_eq!(rc.spec.timeout, Some(7));
        assert_eq!(
            rc.spec.credentials_secret_ref,
            Some(SecretRef {
                namespace: NS.into(),
                name: object.clone()
            })
        );
        let creds = secret_data(&here.client, &object).await.unwrap();
        assert_eq!(creds.auth, ClientAuth::Token(token.into()));
        assert_eq!(creds.ca_pem, there.server.ca_pem().unwrap().as_bytes());
        assert!(reaches(&rc.spec.api_endpoint, &creds).await, "{rc_name}");
        let role = Api::<Role>::namespaced(here.client.clone(), NS)
            .get(&object)
            .await
            .unwrap();
        let rule = &role.rules.unwrap()[0];
        assert_eq!(rule.resource_names.as_deref(), Some(&[object.clone()][..]));
        assert_eq!(rule.verbs, vec!["get".to_string()]);
        let binding = Api::<RoleBinding>::namespaced(here.client.clone(), NS)
            .get(&object)
            .await
            .unwrap();
        assert_eq!(binding.subjects.unwrap()[0].name, "hybridnet-operator");
    }
    assert_eq!(
        rcs_a.list(&Default::default()).await.unwrap().items.len(),
        1
    );

    // Bad input: refused with the reason, nothing more written.
    let dir2 = tempfile::tempdir().unwrap();
    let same = kubeconfig(
        dir2.path(),
        &[("cluster-a", &a, "token-a"), ("again", &a, "token-a")],
    );
    for (kc, args, code, says) in [
        (
            &k,
            vec!["cluster", "connect", "--remote-context", "nope"],
            1,
            "no context \"nope\"",
        ),
        (
            &k,
            vec!["cluster", "connect", "--remote-context", "cluster-a"],
            2,
            "this cluster's own context",
        ),
        (
            &k,
            vec![
                "cluster",
                "connect",
                "--remote-context",
                "cluster-b",
                "--name",
                "Bad_Name",
            ],
            2,
            "Bad_Name",
        ),
        (
            &k,
            vec![
                "cluster",
                "connect",
                "--remote-context",
                "cluster-b",
                "--name",
                "other",
                "--operator-namespace",
                "missing",
            ],
            1,
            "namespace \"missing\" does not exist",
        ),
        (
            &same,
            vec!["cluster", "connect", "--remote-context", "again"],
            2,
            "reach the same cluster",
        ),
    ] {
        let r = kubectl(kc, &args).await;
        assert_eq!(r.code, code, "{args:?}: {r:?}");
        assert!(r.stderr.contains(says), "{args:?}: {r:?}");
    }
    assert_eq!(
        rcs_a.list(&Default::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(
        rcs_b.list(&Default::default()).await.unwrap().items.len(),
        1
    );

    // Disconnect without the other side: only this side goes, with a hint.
    let r = kubectl(&k, &["cluster", "disconnect", "cluster-b", "--dry-run"]).await;
    r.ok();
    assert!(
        r.stdout
            .contains("would delete remotecluster.multicluster.alibaba.com/cluster-b"),
        "{r:?}"
    );
    assert!(rcs_a.get_opt("cluster-b").await.unwrap().is_some());

    // A RemoteCluster the user made, with a Secret of their own: disconnect leaves the Secret.
    let mut mine = Secret {
        data: Some(
            secret_data(&a.client, "hybridnet-remote-cluster-b")
                .await
                .unwrap()
                .to_secret_data(),
        ),
        ..Default::default()
    };
    mine.metadata.name = Some("mine".into());
    Api::<Secret>::namespaced(a.client.clone(), NS)
        .create(&PostParams::default(), &mine)
        .await
        .unwrap();
    rcs_a
        .create(
            &PostParams::default(),
            &RemoteCluster::new(
                "by-hand",
                RemoteClusterSpec {
                    api_endpoint: "https://198.18.0.9:6443".into(),
                    credentials_secret_ref: Some(SecretRef {
                        namespace: NS.into(),
                        name: "mine".into(),
                    }),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    let r = kubectl(&k, &["cluster", "disconnect", "by-hand"]).await;
    r.ok();
    assert!(rcs_a.get_opt("by-hand").await.unwrap().is_none());
    assert!(
        Api::<Secret>::namespaced(a.client.clone(), NS)
            .get_opt("mine")
            .await
            .unwrap()
            .is_some()
    );

    // Disconnect both sides.
    let r = kubectl(
        &k,
        &[
            "cluster",
            "disconnect",
            "cluster-b",
            "--remote-context",
            "cluster-b",
        ],
    )
    .await;
    r.ok();
    assert!(rcs_a.get_opt("cluster-b").await.unwrap().is_none(), "{r:?}");
    assert!(rcs_b.get_opt("cluster-a").await.unwrap().is_none(), "{r:?}");
    assert_eq!(
        count_access_objects(&a.client, "hybridnet-remote-cluster-b").await,
        0
    );
    assert_eq!(
        count_access_objects(&b.client, "hybridnet-remote-cluster-a").await,
        0
    );
    let r = kubectl(&k, &["cluster", "disconnect", "cluster-b"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("remote cluster \"cluster-b\" not found"),
        "{r:?}"
    );
}

//! `install --wait` and `status --wait` through the real kubectl against kube-lite. The test
//! plays the operator: it writes the HybridnetCluster's status step by step, each step only after
//! the plugin printed the progress line of the one before (no sleeps), and checks that a stale
//! Available (an older generation) does not end the wait.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::operator::HybridnetCluster;
use kube::Api;
use kube::api::{Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_wait_follows_the_operator_until_available() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    let mut run = spawn_kubectl(
        k,
        &["install", "--hybridnet-version", "0.1.0", "--wait=60s"],
    );
    run.stderr_line("the first progress line", |l| {
        l.contains("waiting for hybridnetcluster/default: no status yet")
    })
    .await;

    hybridnet_cluster_status(
        &c.client,
        1,
        "0.1.0",
        &[
            ("Available", "False", "Installing"),
            ("Progressing", "True", "RollingOut"),
        ],
    )
    .await;
    run.stderr_line("installing", |l| {
        l.contains("Available=False (Installing), Progressing=True (RollingOut)")
    })
    .await;

    // The spec changes (generation 2) and the operator still reports generation 1 as Available:
    // that is not the current generation, the wait goes on.
    let api: Api<HybridnetCluster> = Api::all(c.client.clone());
    let patched = api
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"version": "0.1.1"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    hybridnet_cluster_status(
        &c.client,
        1,
        "0.1.0",
        &[
            ("Available", "True", "AsExpected"),
            ("Progressing", "False", "AsExpected"),
        ],
    )
    .await;
    run.stderr_line("a stale Available", |l| {
        l.contains("Available=True (AsExpected)")
            && l.contains("has not observed generation 2 yet (observed 1)")
    })
    .await;

    hybridnet_cluster_status(
        &c.client,
        2,
        "0.1.0",
        &[
            ("Available", "True", "AsExpected"),
            ("Progressing", "False", "AsExpected"),
        ],
    )
    .await;
    let r = run.finish().await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("hybridnetcluster.operator.hybridnet.io/default serverside-applied"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .lines()
            .last()
            .unwrap()
            .ends_with("hybridnetcluster/default is Available"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.lines().all(|l| l.starts_with('[')),
        "progress lines only: {}",
        r.stderr
    );
    capture(
        "install-wait",
        "kubectl hybridnet install --hybridnet-version 0.1.0 --wait=60s",
        &r,
    );

    // status --wait: already Available at the current generation, so it returns at once.
    let r = kubectl(k, &["status", "--wait"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("is Available"), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("HybridnetCluster: default (generation 2, observed 2)"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_wait_times_out_with_its_own_exit_code() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    // Before anything exists, status --wait waits for the object to appear.
    let mut run = spawn_kubectl(k, &["status", "--wait=60s", "-o", "json"]);
    run.stderr_line("the missing object", |l| l.contains("does not exist"))
        .await;
    hybridnet_cluster(&c.client, "0.1.0").await;
    run.stderr_line("the new object", |l| l.contains("no status yet"))
        .await;
    hybridnet_cluster_status(
        &c.client,
        1,
        "0.1.0",
        &[("Available", "True", "AsExpected")],
    )
    .await;
    let r = run.finish().await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["cluster"]["observedGeneration"], 1);

    // Degraded and not Available: the time runs out (exit 6), the status is still printed.
    hybridnet_cluster_status(
        &c.client,
        1,
        "0.1.0",
        &[
            ("Available", "False", "Installing"),
            ("Degraded", "True", "ApplyFailed"),
        ],
    )
    .await;
    let r = kubectl(k, &["status", "--wait=1s"]).await;
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        r.stdout.contains("HybridnetCluster: default"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("error: timed out after 1s waiting for hybridnetcluster/default to be Available: Available=False (Installing), Degraded=True (ApplyFailed)"),
        "{}",
        r.stderr
    );
    // Without --wait the exit code is the state's (4: Degraded), as before.
    assert_eq!(kubectl(k, &["status"]).await.code, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_wait_flags_are_usage_errors() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();
    for args in [
        &["install", "--wait", "--dry-run=server"][..],
        &["install", "--wait=1m", "-o", "yaml"][..],
        &["install", "--wait", "5m"][..],
        &["install", "--wait=-5s"][..],
        &["status", "--wait=soon"][..],
        &["status", "--wait="][..],
        &["status", "--wait=1h\u{1b}"][..],
    ] {
        let (r, patches) =
            requests_during(&c, "patch", "hybridnetclusters", kubectl(k, args)).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(patches, 0, "{args:?}: nothing applied");
    }
    // Without the CRD there is nothing to wait for: an error at once, not a wait.
    let bare = cluster(false).await;
    let r = kubectl(bare.kubeconfig.as_path(), &["status", "--wait=10m"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("CRD is not installed"), "{}", r.stderr);
}

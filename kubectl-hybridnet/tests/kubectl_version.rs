//! `kubectl hybridnet version` through the real kubectl against kube-lite: the plugin's, the
//! operator's (annotation on the HybridnetCluster) and every node agent's version (annotation on
//! its NodeInfo), skew marked; `--client` and an unreachable cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::annotation::{NODE_AGENT_VERSION, OPERATOR_VERSION};
use hybridnet_api::operator::HybridnetCluster;
use hybridnet_api::v1::NodeInfo;

const PLUGIN: &str = env!("CARGO_PKG_VERSION");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_shows_operator_and_agents_and_marks_skew() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();

    // Nothing installed: the plugin's version and why the rest is unknown; exit 0.
    let r = kubectl(k, &["version"]).await;
    assert!(
        r.ok()
            .stdout
            .starts_with(&format!("kubectl-hybridnet {PLUGIN} (")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Operator:     unknown"), "{}", r.stdout);
    assert!(r.stdout.contains("no HybridnetCluster"), "{}", r.stdout);

    // Installed; the operator and two agents report this release, one agent an older one and
    // one nothing.
    hybridnet_cluster(&c.client, PLUGIN).await;
    hybridnet_cluster_status(&c.client, 1, PLUGIN, &[("Available", "True", "AsExpected")]).await;
    annotate_cluster_scoped::<HybridnetCluster>(
        &c.client,
        "default",
        &[(OPERATOR_VERSION, PLUGIN)],
    )
    .await;
    for (i, v) in [
        (1, Some(PLUGIN)),
        (2, Some("0.0.9")),
        (3, None),
        (4, Some(PLUGIN)),
    ] {
        let node = format!("node{i}");
        nodeinfo(
            &c.client,
            &node,
            &format!("198.18.0.{i}"),
            &format!("02:00:00:00:00:0{i}"),
        )
        .await;
        if let Some(v) = v {
            annotate_cluster_scoped::<NodeInfo>(&c.client, &node, &[(NODE_AGENT_VERSION, v)]).await;
        }
    }
    let r = kubectl(k, &["version"]).await;
    let out = &r.ok().stdout;
    assert!(out.contains(&format!("Operator:     {PLUGIN}\n")), "{out}");
    assert!(
        out.contains(&format!("Node agents:  2 of 4 at {PLUGIN}")),
        "{out}"
    );
    assert!(out.contains("node2   0.0.9 (skew)"), "{out}");
    assert!(out.contains("node3   unknown"), "{out}");
    assert!(
        out.contains(&format!(
            "node2: the node agent runs 0.0.9, the cluster's target is {PLUGIN}"
        )),
        "{out}"
    );
    capture("version-skew", "kubectl hybridnet version", &r);
    let j = kubectl(k, &["version", "-o", "json"]).await.ok().json();
    assert_eq!(j["version"], PLUGIN);
    assert_eq!(j["operator"], PLUGIN);
    let agents = j["nodeAgents"].as_array().unwrap();
    assert_eq!(agents.len(), 4);
    assert_eq!(
        (agents[1]["node"].as_str(), agents[1]["skew"].as_bool()),
        (Some("node2"), Some(true))
    );
    assert_eq!(agents[2]["version"], serde_json::Value::Null);

    // An operator of another release is skew against the plugin.
    annotate_cluster_scoped::<HybridnetCluster>(
        &c.client,
        "default",
        &[(OPERATOR_VERSION, "9.9.9")],
    )
    .await;
    let r = kubectl(k, &["version"]).await;
    assert!(
        r.ok().stdout.contains("Operator:     9.9.9 (skew)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("the plugin is {PLUGIN}, the operator 9.9.9")),
        "{}",
        r.stdout
    );

    // --client never contacts the cluster; without it an unreachable cluster is an error after
    // the plugin's line, as `kubectl version`.
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_kubeconfig(dir.path());
    let r = kubectl(&dead, &["version", "--client"]).await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "kubectl-hybridnet {PLUGIN} ({}/{}; networking.alibaba.com/v1, operator.hybridnet.io/v1alpha1)\n",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    );
    let r = kubectl(&dead, &["version"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .starts_with(&format!("kubectl-hybridnet {PLUGIN} (")),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("versions are unknown") && r.stderr.contains("cannot reach"),
        "{}",
        r.stderr
    );
    let r = kubectl(k, &["version", "-o", "wide"]).await;
    assert_eq!(r.code, 2, "{r:?}");
}

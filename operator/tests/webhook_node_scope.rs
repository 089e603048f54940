//! Node agents write only their own node's NodeInfo and IPInstances: the rendered webhook entry
//! `node-agent.validating.hybridnet`, registered in kube-lite, sees the request's user info (the
//! agent's ServiceAccount with the `authentication.kubernetes.io/node-name` claim, as Kubernetes
//! puts it in for a pod-bound token) and refuses another node's objects; other users pass.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::{IPInstance, NodeInfo};
use hybridnet_operator::lifecycle::names;
use hybridnet_operator::lifecycle::render::validating_webhooks;
use hybridnet_operator::lifecycle::settings::Settings;
use hybridnet_operator::webhook::nodescope::{NODE_NAME_EXTRA, agent_username};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const NS: &str = "kube-system";

fn agent(token: &str, nodes: &[&str]) -> kube_lite::TokenUser {
    kube_lite::TokenUser {
        token: token.into(),
        username: agent_username(NS),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{NS}"),
        ],
        extra: BTreeMap::from([(
            NODE_NAME_EXTRA.to_string(),
            nodes.iter().map(|n| n.to_string()).collect(),
        )]),
    }
}

fn nodeinfo(node: &str) -> Value {
    json!({"apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
        "metadata": {"name": node}, "spec": {}})
}

/// What the agent does (node/src/agent/mod.rs `publish_node_info`): apply, then apply the status.
async fn publish(client: &Client, node: &str) -> Result<(), kube::Error> {
    let api: Api<NodeInfo> = Api::all(client.clone());
    let pp = PatchParams::apply("hybridnet-node").force();
    api.patch(node, &pp, &Patch::Apply(nodeinfo(node))).await?;
    let status = json!({"apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
        "metadata": {"name": node}, "status": {"updateTimestamp": "2026-01-01T00:00:00Z"}});
    api.patch_status(node, &pp, &Patch::Apply(status)).await?;
    Ok(())
}

async fn patch_ip_status(client: &Client, name: &str) -> Result<IPInstance, kube::Error> {
    Api::<IPInstance>::namespaced(client.clone(), "default")
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"sandboxID": "abc"}})),
        )
        .await
}

fn refused(r: Result<impl std::fmt::Debug, kube::Error>, want: &[&str]) {
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            for w in want {
                assert!(s.message.contains(w), "{w:?} not in {:?}", s.message);
            }
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn ipinstance(name: &str, node: &str) -> IPInstance {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/tests/fixtures/ipinstance.yaml"
    ))
    .unwrap();
    let mut ip: IPInstance = serde_saphyr::from_str(&text).unwrap();
    ip.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    ip.spec.binding.node_name = Some(node.into());
    ip.status = None;
    ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_writes_only_its_own_nodes_objects() {
    let env = Env::start_with(
        &[],
        vec![
            agent("node1-token", &["node1"]),
            agent("node2-token", &["node2"]),
            agent("no-claim-token", &[]),
        ],
    )
    .await;
    // Webhook only: no controller touches the objects below.
    let r = env.replica_with(test_config("r1"), false).await;
    let addr = r.webhook_addr.expect("webhook");

    // The rendered entry, pointed at the test's webhook.
    let settings = Settings::from_spec(&Default::default(), "0.1.0", NS).expect("settings");
    let mut vwc: ValidatingWebhookConfiguration = validating_webhooks(&settings, None);
    let mut entry = vwc
        .webhooks
        .take()
        .unwrap()
        .into_iter()
        .find(|w| w.name == names::WEBHOOK_NODE_SCOPE)
        .expect("node-scope webhook rendered");
    entry.client_config = WebhookClientConfig {
        url: Some(format!("https://{addr}/validate")),
        ca_bundle: Some(ByteString(env.certs.ca_pem.clone().into_bytes())),
        service: None,
    };
    vwc.webhooks = Some(vec![entry]);
    vwc.metadata.name = Some("node-scope".into());
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &vwc)
        .await
        .expect("register webhook");

    let node1 = env.srv.client_with_token("node1-token").await.unwrap();
    let node2 = env.srv.client_with_token("node2-token").await.unwrap();
    let no_claim = env.srv.client_with_token("no-claim-token").await.unwrap();

    // Its own NodeInfo: create, update, status.
    publish(&node1, "node1")
        .await
        .expect("node1 publishes its own NodeInfo");
    publish(&node1, "node1").await.expect("and again (update)");
    // Another node's: refused at create, and on an existing one (spec and status), naming both.
    refused(
        publish(&node1, "node2").await,
        &["\"node1\"", "\"node2\"", "metadata.name"],
    );
    publish(&node2, "node2")
        .await
        .expect("node2 publishes its own");
    refused(publish(&node1, "node2").await, &["\"node2\""]);
    refused(
        Api::<NodeInfo>::all(node1.clone())
            .delete("node2", &Default::default())
            .await,
        &["\"node2\""],
    );
    // Credentials without the node claim are refused even for a matching name.
    refused(publish(&no_claim, "node1").await, &["userInfo.extra"]);

    // IPInstances: only the status of those bound to its node.
    let api = Api::<IPInstance>::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &ipinstance("ip-node2", "node2"))
        .await
        .expect("the admin (not the agent) creates any IPInstance");
    refused(
        patch_ip_status(&node1, "ip-node2").await,
        &["spec.binding.nodeName", "\"node2\""],
    );
    let ok = patch_ip_status(&node2, "ip-node2").await.expect("own node");
    assert_eq!(ok.status.and_then(|s| s.sandbox_id).as_deref(), Some("abc"));

    // Everyone else passes: the admin writes node2's NodeInfo.
    publish(&env.client, "node2").await.expect("admin");
}

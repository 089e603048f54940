//! The agent's NodeInfo publication (`publish_node_info`, server-side apply with the agent's field
//! manager) against kube-lite through the real kube client: a node without a VTEP (underlay or
//! BGP only) can create its NodeInfo, the BGP sessions annotation is published with the rest and
//! removed when the node has no BGP speaker any more, and other owners' fields survive.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(all(target_os = "linux", feature = "dataplane"))]

use std::time::Duration;

use hybridnet_api::v1::NodeInfo;
use hybridnet_node::agent::{NodeInfoPublication, publish_node_info};
use hybridnet_node::bgp::sessions::{BGP_SESSIONS_ANNOTATION, parse_annotation};
use hybridnet_node::plan::{ROUTE_TABLES_ANNOTATION, RouteTables};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

async fn api_server() -> (kube_lite::ServerHandle, Client) {
    let server = kube_lite::Server::start(kube_lite::Config::default())
        .await
        .expect("start kube-lite");
    let client = server.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in hybridnet_api::crd::all() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    let infos: Api<NodeInfo> = Api::all(client.clone());
    for _ in 0..250 {
        if infos.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (server, client)
}

const SESSIONS: &str = r#"[{"peerAddress":"198.18.0.1","peerASN":65000,"localASN":65001,"state":"Established","since":"2026-11-26T10:00:00Z","prefixesV4":3,"prefixesV6":2,"required":true,"flaps":0}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_sessions_annotation_is_applied_and_removed_with_the_nodeinfo() {
    let (_server, client) = api_server().await;
    let api: Api<NodeInfo> = Api::all(client.clone());
    let tables = RouteTables::parse_annotation(r#"{"4":{"198.19.1.0/24":10000}}"#).unwrap();
    let bgp_only = NodeInfoPublication {
        vtep: None,
        route_tables: tables.clone(),
        bgp_sessions: Some(SESSIONS.to_string()),
        ..Default::default()
    };
    // No NodeInfo yet and no VTEP: the apply creates it (the CRD requires a spec).
    publish_node_info(&client, "n1", &bgp_only)
        .await
        .expect("publish a NodeInfo without VTEP");
    let ni = api.get("n1").await.unwrap();
    let annotations = ni.metadata.annotations.clone().unwrap_or_default();
    let parsed = parse_annotation(&annotations[BGP_SESSIONS_ANNOTATION]);
    assert!(parsed.problems.is_empty(), "{parsed:?}");
    assert_eq!(parsed.sessions[0].prefixes_v4, 3);
    assert_eq!(
        annotations[ROUTE_TABLES_ANNOTATION],
        r#"{"4":{"198.19.1.0/24":10000}}"#
    );
    // The agent's release, for `kubectl hybridnet version`.
    assert_eq!(
        annotations[hybridnet_api::constants::annotation::NODE_AGENT_VERSION],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        ni.status.and_then(|s| s.update_timestamp).is_some(),
        "status.updateTimestamp written"
    );
    let managers: Vec<String> = ni
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "hybridnet-node"),
        "{managers:?}"
    );

    // Someone else's annotation is not the agent's to remove.
    api.patch(
        "n1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"example.com/note": "x"}}})),
    )
    .await
    .unwrap();

    // The node leaves every BGP network: the next apply leaves the annotation out.
    let without = bgp_only.clone().with_bgp_sessions(None);
    publish_node_info(&client, "n1", &without)
        .await
        .expect("publish without sessions");
    let annotations = api
        .get("n1")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key(BGP_SESSIONS_ANNOTATION),
        "{annotations:?}"
    );
    assert!(annotations.contains_key(ROUTE_TABLES_ANNOTATION));
    assert_eq!(annotations["example.com/note"], "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_check_report_and_the_publication_leave_each_other_alone() {
    use hybridnet_node::agent::kernelcheck::{KERNEL_CHECK_ANNOTATION, publish_verdict};
    use hybridnet_node::plan::{MacAddr, PublishedVtep};
    let (_server, client) = api_server().await;
    let api: Api<NodeInfo> = Api::all(client.clone());
    // Clearing with no NodeInfo at all is a no-op (a node whose agent never ran).
    publish_verdict(&client, "n1", None).await.unwrap();
    assert!(api.get_opt("n1").await.unwrap().is_none());
    // A refusal creates the NodeInfo (no agent publication yet).
    publish_verdict(
        &client,
        "n1",
        Some("lacks VXLAN devices (CONFIG_VXLAN) (Operation not supported)"),
    )
    .await
    .unwrap();
    let ni = api.get("n1").await.unwrap();
    assert!(ni.metadata.annotations.unwrap()[KERNEL_CHECK_ANNOTATION].contains("CONFIG_VXLAN"));
    // The agent's publication keeps the report; a later refusal keeps the VTEP.
    let with_vtep = NodeInfoPublication {
        vtep: Some(PublishedVtep {
            ip: "198.18.0.11".parse().unwrap(),
            mac: MacAddr([0x02, 0, 0, 0, 0, 0x11]),
            local_ips: vec!["198.18.0.11".parse().unwrap()],
        }),
        route_tables: RouteTables::default(),
        ..Default::default()
    };
    publish_node_info(&client, "n1", &with_vtep).await.unwrap();
    publish_verdict(&client, "n1", Some("lacks nftables inet NAT"))
        .await
        .unwrap();
    let ni = api.get("n1").await.unwrap();
    let a = ni.metadata.annotations.clone().unwrap();
    assert_eq!(a[KERNEL_CHECK_ANNOTATION], "lacks nftables inet NAT");
    assert!(a.contains_key(ROUTE_TABLES_ANNOTATION));
    let vtep = ni.spec.vtep_info.clone().expect("VTEP kept");
    assert_eq!(vtep.ip.as_deref(), Some("198.18.0.11"));
    // A passing check removes only the report.
    publish_verdict(&client, "n1", None).await.unwrap();
    let ni = api.get("n1").await.unwrap();
    let a = ni.metadata.annotations.clone().unwrap();
    assert!(!a.contains_key(KERNEL_CHECK_ANNOTATION), "{a:?}");
    assert!(a.contains_key(ROUTE_TABLES_ANNOTATION));
    assert_eq!(
        ni.spec.vtep_info.unwrap().ip.as_deref(),
        Some("198.18.0.11")
    );
    // And the next publication does not bring it back.
    publish_node_info(&client, "n1", &with_vtep).await.unwrap();
    let a = api.get("n1").await.unwrap().metadata.annotations.unwrap();
    assert!(!a.contains_key(KERNEL_CHECK_ANNOTATION), "{a:?}");
}

//! `kubectl hybridnet status` with BGP: the sessions each node agent publishes on its NodeInfo
//! (annotation `hybridnet.io/bgp-sessions`, server-side applied with the agent's field
//! manager), through the real kubectl against kube-lite: the BGP SESSIONS table, JSON/YAML,
//! warnings for required sessions that are down and for silent nodes, hostile values.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::constants::field_manager;
use hybridnet_api::v1::{BgpPeer, Network, NetworkConfig, NetworkMode, NetworkSpec, NodeInfo};
use hybridnet_node::bgp::sessions::{BGP_SESSIONS_ANNOTATION, BgpSession, SessionState};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// The BGP network `bgp-net` (AS 65001) with the ToR 198.18.0.1 (AS 65000) required and a
/// second ToR fd00::1 that may stay down, on node1..node3.
async fn bgp_network(c: &Cluster) {
    let api: Api<Network> = Api::all(c.client.clone());
    let n = Network::new(
        "bgp-net",
        NetworkSpec {
            net_id: Some(65001),
            mode: Some(NetworkMode::Bgp),
            config: Some(NetworkConfig {
                bgp_peers: Some(vec![
                    BgpPeer {
                        asn: 65000,
                        address: "198.18.0.1".into(),
                        ..Default::default()
                    },
                    BgpPeer {
                        asn: 65000,
                        address: "fd00::1".into(),
                        allow_not_established: Some(true),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        },
    );
    api.create(&PostParams::default(), &n)
        .await
        .expect("create network");
    network_nodes(&c.client, "bgp-net", &["node1", "node2", "node3"]).await;
}

fn session(peer: &str, state: SessionState, since: Timestamp, v4: u64, v6: u64) -> BgpSession {
    BgpSession {
        peer_address: peer.parse().unwrap(),
        peer_asn: 65000,
        local_asn: 65001,
        state,
        since,
        prefixes_v4: v4,
        prefixes_v6: v6,
        required: !peer.contains(':'),
        flaps: 0,
    }
}

/// Server-side applies a node's NodeInfo as its agent does (field manager `hybridnet-node`);
/// `None` leaves the annotation out, which removes it.
async fn publish(c: &Cluster, node: &str, sessions: Option<&str>) {
    let api: Api<NodeInfo> = Api::all(c.client.clone());
    let mut annotations = serde_json::json!({"hybridnet.io/route-tables": "{}"});
    if let Some(v) = sessions {
        annotations[BGP_SESSIONS_ANNOTATION] = v.into();
    }
    let body = serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1",
        "kind": "NodeInfo",
        "metadata": {"name": node, "annotations": annotations},
        // The CRD requires a spec; a node without a VTEP publishes an empty one.
        "spec": {},
    });
    api.patch(
        node,
        &PatchParams::apply(field_manager::NODE_AGENT).force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("apply nodeinfo");
}

fn line<'a>(out: &'a str, starts: &str, contains: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(starts) && l.contains(contains))
        .unwrap_or_else(|| panic!("no line {starts}..{contains} in\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_nodes_bgp_sessions() {
    if !kubectl_available() {
        return;
    }
    let c = cluster(true).await;
    let k = c.kubeconfig.as_path();

    // No BGP anywhere: no BGP section, an empty list in JSON.
    let r = kubectl(k, &["status"]).await;
    r.ok();
    assert!(!r.stdout.contains("BGP SESSIONS"), "{}", r.stdout);
    let v = kubectl(k, &["status", "-o", "json"]).await.ok().json();
    assert_eq!(v["bgpSessions"], serde_json::json!([]));

    bgp_network(&c).await;
    create_subnet(k, "bgp-v4", "bgp-net", "198.19.1.0/24", &[]).await;
    let two_hours_ago = Timestamp::now() - SignedDuration::from_secs(2 * 3600 + 30);
    let node1 = hybridnet_node::bgp::sessions::to_annotation(&[
        session("fd00::1", SessionState::Active, two_hours_ago, 0, 0),
        session("198.18.0.1", SessionState::Established, two_hours_ago, 3, 2),
    ]);
    publish(&c, "node1", Some(&node1)).await;
    let node2 = hybridnet_node::bgp::sessions::to_annotation(&[session(
        "198.18.0.1",
        SessionState::Connect,
        two_hours_ago,
        0,
        0,
    )]);
    publish(&c, "node2", Some(&node2)).await;
    // node3 publishes nothing; node4 (in no BGP network) publishes a hostile value.
    publish(&c, "node3", None).await;
    let r = kubectl(k, &["status"]).await;
    r.ok();
    capture("status-bgp", "kubectl hybridnet status", &r);
    let hostile = format!(
        "[{{\"peerAddress\":\"198.18.0.1\",\"peerASN\":\"x\"}}, \"\\u001b[2J\", {}]",
        "1,".repeat(30_000) + "1"
    );
    publish(&c, "node4", Some(&hostile)).await;

    let r = kubectl(k, &["status"]).await;
    r.ok();
    let out = &r.stdout;
    let table = out
        .split("\nBGP SESSIONS\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no BGP SESSIONS section in\n{out}"));
    assert!(
        table.starts_with(
            "NODE    PEER         ASN     STATE         SINCE   PREFIXES   REQUIRED\n"
        ),
        "{table}"
    );
    let up = line(table, "node1 ", "198.18.0.1");
    for want in ["65000", "Established", "120m", "3/2", "yes"] {
        assert!(up.contains(want), "{want} in {up:?}");
    }
    let optional = line(table, "node1 ", "fd00::1");
    assert!(
        optional.contains("Active") && optional.ends_with("no"),
        "{optional}"
    );
    let down = line(table, "node2 ", "198.18.0.1");
    assert!(
        down.contains("Connect") && down.contains("0/0") && down.ends_with("yes"),
        "{down}"
    );
    let warnings = out.split("\nWarnings:\n").nth(1).expect("warnings");
    assert!(
        warnings.contains(
            "node node2: required BGP session to 198.18.0.1 (AS 65000) is Connect since "
        ),
        "{warnings}"
    );
    assert!(
        !warnings.contains("node node1: required"),
        "an optional session that is down is no warning: {warnings}"
    );
    assert!(
        warnings.contains("node node3 of BGP network bgp-net: publishes no BGP sessions"),
        "{warnings}"
    );
    assert!(
        warnings.contains("NodeInfo node4: annotation hybridnet.io/bgp-sessions: "),
        "{warnings}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "no escape sequence reaches the terminal"
    );

    // JSON and YAML carry the documented shape.
    let v = kubectl(k, &["status", "-o", "json"]).await.ok().json();
    let sessions = v["bgpSessions"].as_array().expect("bgpSessions");
    assert_eq!(sessions.len(), 3, "{v:#}");
    assert_eq!(
        sessions[0],
        serde_json::json!({"node": "node1", "peerAddress": "198.18.0.1", "peerASN": 65000,
            "localASN": 65001, "state": "Established",
            "since": Timestamp::from_second(two_hours_ago.as_second()).unwrap().to_string(),
            "prefixesV4": 3, "prefixesV6": 2, "required": true, "flaps": 0})
    );
    assert_eq!(sessions[2]["node"], "node2");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("NodeInfo node4:")),
        "{v:#}"
    );
    let y = kubectl(k, &["status", "-o", "yaml"])
        .await
        .ok()
        .stdout
        .clone();
    let y: serde_json::Value = serde_saphyr::from_str(&y).unwrap_or_else(|e| panic!("{e}: {y}"));
    assert_eq!(y["bgpSessions"], v["bgpSessions"]);

    // node2's session comes up; node4 is fixed; node1 leaves BGP (the agent's apply leaves the
    // annotation out and the server removes it).
    let now = Timestamp::now();
    let node2 = hybridnet_node::bgp::sessions::to_annotation(&[session(
        "198.18.0.1",
        SessionState::Established,
        now,
        1,
        0,
    )]);
    publish(&c, "node2", Some(&node2)).await;
    publish(&c, "node4", None).await;
    publish(&c, "node1", None).await;
    let api: Api<NodeInfo> = Api::all(c.client.clone());
    let n1 = api.get("node1").await.unwrap();
    assert!(
        !n1.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(BGP_SESSIONS_ANNOTATION)
    );
    let r = kubectl(k, &["status"]).await;
    r.ok();
    let out = &r.stdout;
    assert!(
        line(out, "node2 ", "198.18.0.1").contains("Established"),
        "{out}"
    );
    assert!(!out.contains("node1   198.18.0.1"), "{out}");
    assert!(!out.contains("NodeInfo node4"), "{out}");
    assert!(!out.contains("node node2: required"), "{out}");
    assert!(
        out.contains("node node1 of BGP network bgp-net: publishes no BGP sessions"),
        "{out}"
    );
}

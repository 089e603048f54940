//! The real `hybridnet-node` binary in a node namespace against kube-lite (in its own namespace on
//! the same L2 segment): caches sync, the data plane is programmed, the NodeInfo is published by
//! server-side apply, watch events reconcile incrementally, health and metrics answer, and a
//! restart adopts the state without changing it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::{IPInstance, NetworkMode, NetworkType, NodeInfo};

#[test]
fn agent_programs_publishes_and_follows_events() {
    if !require_root("agent_programs_publishes_and_follows_events") {
        return;
    }
    let (_sw, cpns, n1) = l2_segment();
    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));
    cp.create_network(&network(
        "overlay",
        NetworkType::Overlay,
        None,
        Some(4),
        &["n1", "n2"],
    ));
    cp.create_network(&network(
        "underlay",
        NetworkType::Underlay,
        Some(NetworkMode::Vlan),
        Some(0),
        &["n1"],
    ));
    cp.create(&subnet("ov4", "overlay", "198.19.0.0/24", None, None, None));
    cp.create(&subnet(
        "ul4",
        "underlay",
        "198.18.0.0/24",
        Some("198.18.0.1"),
        Some("198.18.0.100"),
        Some("198.18.0.200"),
    ));
    cp.create(&nodeinfo(
        "n2",
        "198.18.0.12",
        "02:00:00:00:00:12",
        &["198.18.0.12"],
    ));
    cp.create_ns(
        "default",
        &ipinstance(
            "default",
            "c",
            "198.19.0.6",
            "overlay",
            "ov4",
            "n2",
            "02:aa:00:00:00:06",
        ),
    );

    let agent = start_agent(&n1, "n1", &cp.kubeconfig, 11021, &[]);
    wait_for("rules and overlay routes", 30, || {
        let r = n1.try_ip("rule show").unwrap_or_default();
        let t = n1.try_ip("route show table 40000").unwrap_or_default();
        (r.contains("1000:\tfrom all lookup 39999")
            && r.contains("from 198.18.0.0/24 fwmark 0/0x4040")
            && t.contains("198.19.0.0/24 dev eth0.vxlan4"))
        .then_some(())
    });
    wait_for("neighbour of the remote pod", 30, || {
        n1.try_ip("neigh show dev eth0.vxlan4")
            .unwrap_or_default()
            .contains("198.19.0.6 lladdr 02:00:00:00:00:12 PERMANENT")
            .then_some(())
    });

    // NodeInfo published by server-side apply with the agent's field manager.
    let ni: NodeInfo = wait_for("NodeInfo n1", 30, || {
        cp.run(|c| async move {
            kube::Api::<NodeInfo>::all(c)
                .get_opt("n1")
                .await
                .ok()
                .flatten()
        })
    });
    let v = ni.spec.vtep_info.clone().unwrap();
    assert_eq!(v.ip.as_deref(), Some("198.18.0.11"));
    assert_eq!(v.mac.as_deref(), Some("02:00:00:00:00:11"));
    assert_eq!(v.local_ips, Some(vec!["198.18.0.11".to_string()]));
    let managers: Vec<String> = ni
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "hybridnet-node"),
        "{managers:?}"
    );

    // The subnet -> table assignment is published, and it is the kernel's.
    let rules = n1.ip("rule show");
    let kernel_table: u32 = rules
        .lines()
        .find(|l| l.contains("from 198.18.0.0/24 fwmark 0/0x4040"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no subnet rule for 198.18.0.0/24: {rules}"));
    let published = wait_for("route-tables annotation of n1", 30, || {
        let ni: NodeInfo = cp.run(|c| async move {
            kube::Api::<NodeInfo>::all(c)
                .get_opt("n1")
                .await
                .ok()
                .flatten()
        })?;
        let v = ni
            .metadata
            .annotations?
            .get(hybridnet_node::plan::ROUTE_TABLES_ANNOTATION)?
            .clone();
        v.contains("198.18.0.0/24").then_some(v)
    });
    let tables = hybridnet_node::plan::RouteTables::parse_annotation(&published).unwrap();
    assert_eq!(
        tables
            .0
            .get(&hybridnet_api::ipmath::Cidr::parse_canonical("198.18.0.0/24").unwrap()),
        Some(&kernel_table),
        "annotation {published} vs kernel rules {rules}"
    );

    // An event: a new remote pod appears and is resolved without waiting for the resync.
    cp.create_ns(
        "default",
        &ipinstance(
            "default",
            "e",
            "198.19.0.7",
            "overlay",
            "ov4",
            "n2",
            "02:aa:00:00:00:07",
        ),
    );
    wait_for("neighbour of the new remote pod", 4, || {
        n1.ip("neigh show dev eth0.vxlan4")
            .contains("198.19.0.7 lladdr 02:00:00:00:00:12")
            .then_some(())
    });
    cp.run(|c| async move {
        kube::Api::<IPInstance>::namespaced(c, "default")
            .delete("198-19-0-6", &Default::default())
            .await
            .expect("delete")
    });
    wait_for("neighbour of the deleted pod gone", 4, || {
        (!n1.ip("neigh show dev eth0.vxlan4").contains("198.19.0.6 ")).then_some(())
    });

    // Health and metrics.
    let (code, body) = wait_for("/readyz 200", 10, || {
        http_get(&n1, "198.18.0.11:11021", "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _) = http_get(&n1, "198.18.0.11:11021", "/healthz").unwrap();
    assert_eq!(code, 200);
    // Upstream's daemon paths answer the same.
    for path in ["/live", "/ready"] {
        let (code, body) = http_get(&n1, "198.18.0.11:11021", path).unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"), "{path}");
    }
    let (code, metrics) = http_get(&n1, "198.18.0.11:11021", "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("hybridnet_node_reconcile_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hybridnet_node_programmed_objects{kind=\"neighbour\"}"),
        "{metrics}"
    );

    // Restart: the new agent adopts the kernel state; nothing hybridnet owns changes.
    let snapshot = || {
        // Routes of IPv6 addresses appear when their DAD ends, on the kernel's timer.
        n1.wait_ipv6_dad_settled(std::time::Duration::from_secs(30));
        format!(
            "{}{}{}{}{}",
            n1.ip("rule show"),
            n1.ip("route show table all"),
            // Only what an agent programs: the kernel's own resolved entries (the switch's
            // IPv6 link-local neighbours, a REACHABLE entry turning STALE) change on their own
            // timers and failed this comparison under load.
            n1.ip("neigh show nud permanent"),
            n1.ip("-d link show"),
            n1.exec(&["bridge", "fdb", "show"]).unwrap_or_default()
        )
    };
    let before = snapshot();
    drop(agent);
    let _agent = start_agent(&n1, "n1", &cp.kubeconfig, 11021, &[]);
    wait_for("restarted agent ready", 30, || {
        http_get(&n1, "198.18.0.11:11021", "/readyz").filter(|(c, _)| *c == 200)
    });
    assert_eq!(before, snapshot());
}

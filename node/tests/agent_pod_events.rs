//! The real `hybridnet-node` against kube-lite: an ADD that fails at a stage the pod's owner must
//! see puts a Warning Event on the pod (events.k8s.io/v1, regarding the pod with its UID,
//! reportingController `hybridnet-node`, reportingInstance the node), and a repeated failure
//! raises that Event's `series.count` instead of adding Events (docs/operations.md, "Events on
//! pods"). The failure here is the most common one: no IPInstance for the pod (IPAM did not
//! allocate); the VLAN duplicate-address Event is checked in `vlan_checks_agent.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;

fn add(socket: &std::path::Path, cid: &str, netns: &Netns) -> serde_json::Value {
    agent_call(
        socket,
        serde_json::json!({"version": 1, "command": "ADD", "containerId": cid,
            "netns": format!("/run/netns/{}", netns.name), "ifname": "eth0",
            "pod": {"namespace": "default", "name": "lonely", "uid": "6b1c0d5e-uid"}}),
    )
}

#[test]
fn a_failed_add_is_an_event_on_the_pod_and_repeats_count_in_its_series() {
    if !require_root("a_failed_add_is_an_event_on_the_pod_and_repeats_count_in_its_series") {
        return;
    }
    let (_sw, cpns, n1) = l2_segment();
    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));
    let agent = start_agent(&n1, "n1", &cp.kubeconfig, 11061, &[]);
    let socket = agent.1.with_extension("sock");
    wait_agent_ready(&socket, 60);
    assert!(events_about(&cp, "default", "lonely").is_empty());

    // No IPInstance: the ADD fails after the agent's wait (10 s) with code 11.
    let pod = Netns::new("evpod");
    let v = add(&socket, "cid-1", &pod);
    assert_eq!(v["error"]["code"], 11, "{v}");
    let ev = wait_for("NoIPAddress Event", 20, || {
        events_about(&cp, "default", "lonely")
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NoIPAddress"))
    });
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.action.as_deref(), Some("SetUpPodNetwork"));
    assert_eq!(ev.reporting_controller.as_deref(), Some("hybridnet-node"));
    assert_eq!(ev.reporting_instance.as_deref(), Some("n1"));
    let regarding = ev.regarding.clone().unwrap();
    assert_eq!(
        (
            regarding.kind.as_deref(),
            regarding.namespace.as_deref(),
            regarding.uid.as_deref()
        ),
        (Some("Pod"), Some("default"), Some("6b1c0d5e-uid"))
    );
    let note = ev.note.clone().unwrap_or_default();
    assert!(
        note.contains("no IPInstance for pod default/lonely"),
        "{note}"
    );
    assert!(ev.series.is_none(), "{ev:?}");

    // The runtime retries: the same Event, its series counting, no second Event.
    let v = add(&socket, "cid-2", &pod);
    assert_eq!(v["error"]["code"], 11, "{v}");
    let evs = wait_for("series.count 2", 20, || {
        let evs = events_about(&cp, "default", "lonely");
        evs.iter()
            .any(|e| e.series.as_ref().is_some_and(|s| s.count == 2))
            .then_some(evs)
    });
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].metadata.name, ev.metadata.name);
}

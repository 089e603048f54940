//! The VLAN checks, the ping and the ARP enhancement through the real `hybridnet-node` binary
//! (default flags) against kube-lite: the agent learns the VLAN subnet (forward interface,
//! gateway) from its own plan, ADD over its CNI socket checks the network, a duplicate fails
//! with the pod, address and interface named, and the enhanced address follows the local pods.
//!
//! Segment (one bridge): kube-lite and the node's own address in 198.19.250.0/24, the VLAN pod
//! subnet 198.18.0.0/24 (untagged, gateway 198.18.0.1 in its own namespace), a rogue station.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use common::*;
use hybridnet_api::v1::{IPInstance, NetworkMode, NetworkType};

const NODE_MAC: &str = "02:00:00:00:00:11";

fn station(sw: &Netns, tag: &str, addr: &str) -> Netns {
    let ns = Netns::new(tag);
    let port = format!("p-{tag}");
    veth(&ns, "eth0", sw, &port);
    sw.ip(&format!("link set {port} master br0"));
    ns.ip(&format!("addr add {addr} dev eth0"));
    ns
}

fn pod_instance(pod: &str, addr: &str) -> IPInstance {
    ipinstance(
        "default",
        pod,
        addr,
        "underlay",
        "ul4",
        "n1",
        "02:aa:00:00:00:64",
    )
}

fn enhanced(n1: &Netns) -> Vec<String> {
    n1.try_ip("-4 -o addr show dev eth0")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("noprefixroute"))
        .filter_map(|l| l.split(" inet ").nth(1))
        .filter_map(|r| r.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn agent_checks_vlan_pods_and_keeps_the_enhanced_address() {
    if !require_root("agent_checks_vlan_pods_and_keeps_the_enhanced_address") {
        return;
    }
    let sw = Netns::new("asw");
    sw.ip("link add br0 type bridge");
    sw.ip("link set br0 up");
    let cpns = station(&sw, "acp", "198.19.250.250/24");
    let gw = station(&sw, "agw", "198.18.0.1/24");
    let _rogue = station(&sw, "arg", "198.18.0.101/24");
    let n1 = Netns::new("an1");
    veth(&n1, "eth0", &sw, "p-n1");
    sw.ip("link set p-n1 master br0");
    n1.ip(&format!("link set eth0 address {NODE_MAC}"));
    n1.ip("addr add 198.19.250.11/24 dev eth0");

    let cp = ControlPlane::start(&cpns, "198.19.250.250");
    cp.create(&node_object("n1", &["198.19.250.11"]));
    cp.create_network(&network(
        "underlay",
        NetworkType::Underlay,
        Some(NetworkMode::Vlan),
        Some(0),
        &["n1"],
    ));
    cp.create(&subnet(
        "ul4",
        "underlay",
        "198.18.0.0/24",
        Some("198.18.0.1"),
        Some("198.18.0.100"),
        Some("198.18.0.200"),
    ));
    cp.create_ns("default", &pod_instance("web-0", "198.18.0.100"));
    cp.create_ns("default", &pod_instance("web-1", "198.18.0.101"));

    let agent = start_agent(
        &n1,
        "n1",
        &cp.kubeconfig,
        11021,
        &["--prefer-vlan-interfaces", "eth0"],
    );
    let socket = agent.1.with_extension("sock");
    wait_agent_ready(&socket, 60);
    // Enhancement: one local pod address, the lowest, with no local routes.
    wait_for("enhanced address", 30, || {
        (enhanced(&n1) == ["198.18.0.100/24"]).then_some(())
    });
    let local = n1.ip("route show table local");
    assert!(!local.contains("src 198.18.0.100"), "{local}");

    // A healthy ADD: checks pass, the gateway learns the pod at the node, the node pings it.
    let pod0 = Netns::new("apod");
    let v = agent_add(&socket, "web-0", &pod0);
    assert!(v.get("error").is_none(), "ADD web-0: {v}");
    let neigh = gw.ip("neigh show 198.18.0.100 dev eth0");
    assert!(neigh.contains(&format!("lladdr {NODE_MAC}")), "{neigh}");
    // Like upstream's daemon (--update-ipinstance-status, on by default), the agent writes the
    // IPInstance status of the pod it wired.
    let st = wait_for("IPInstance status written at ADD", 20, || {
        let i = cp.run(|c| async move {
            kube::Api::<IPInstance>::namespaced(c, "default")
                .get("198-18-0-100")
                .await
                .unwrap()
        });
        i.status.filter(|s| s.sandbox_id.is_some())
    });
    assert_eq!(st.sandbox_id.as_deref(), Some("cid-web-0"));
    assert_eq!(st.node_name.as_deref(), Some("n1"));
    assert_eq!(st.pod_name.as_deref(), Some("web-0"));
    assert_eq!(st.pod_namespace.as_deref(), Some("default"));
    assert!(st.update_timestamp.is_some());

    // The rogue holds web-1's address: ADD fails naming pod, address, MAC and interface.
    let rogue_mac = _rogue
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .unwrap()
        .trim()
        .to_string();
    let pod1 = Netns::new("apod");
    let v = agent_add(&socket, "web-1", &pod1);
    let msg = v["error"]["msg"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains(&format!(
            "pod default/web-1: pod ip 198.18.0.101 is already in use by MAC {rogue_mac} on eth0"
        )),
        "{v}"
    );
    assert!(pod1.try_ip("link show eth0").is_err(), "web-1 kept eth0");
    // The pod's owner sees it: a Warning Event on the pod from the agent of n1.
    let ev = wait_for("IPAddressInUse Event on web-1", 20, || {
        events_about(&cp, "default", "web-1")
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("IPAddressInUse"))
    });
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.reporting_controller.as_deref(), Some("hybridnet-node"));
    assert_eq!(ev.reporting_instance.as_deref(), Some("n1"));
    let note = ev.note.clone().unwrap_or_default();
    assert!(
        note.contains("198.18.0.101") && note.contains(&rogue_mac),
        "{note}"
    );

    // The last local pods go: the enhanced address goes.
    for name in ["198-18-0-100", "198-18-0-101"] {
        cp.run(move |c| async move {
            kube::Api::<IPInstance>::namespaced(c, "default")
                .delete(name, &Default::default())
                .await
                .map(|_| ())
                .ok()
        });
    }
    wait_for("enhanced address removed", 30, || {
        enhanced(&n1).is_empty().then_some(())
    });
}

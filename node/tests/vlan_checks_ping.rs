//! `--check-pod-connectivity-from-host`: after wiring a pod the node pings it; a pod that does
//! not answer fails the ADD (nothing left behind, pod and address named); a family the node has
//! no global address of is not pinged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Netns, NetnsExt, require_root};
use hybridnet_cni::{AgentCommand, AgentResponse};
use hybridnet_node::cniserver::podping::PingConfig;
use hybridnet_node::cniserver::{CniServerConfig, CniService};

/// A node namespace as the agent sees it: rule to the local-direct table, and (optionally) global
/// addresses to ping from.
fn node(v4: bool, v6: bool) -> Netns {
    let n = Netns::new("pnode");
    if v4 {
        n.ip("addr add 198.19.0.1/32 dev lo");
    }
    if v6 {
        n.ip("addr add fd00:ff::1/128 dev lo");
    }
    n.ip("rule add pref 1 lookup 39999");
    n.ip("-6 rule add pref 1 lookup 39999");
    n.ip("route add 169.254.1.1/32 dev lo scope link");
    n
}

fn add(
    node: &Netns,
    pod_ns: &Netns,
    pod: &str,
    addrs: &[&str],
    timeout: Duration,
) -> AgentResponse {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let instances = addrs
        .iter()
        .map(|a| {
            common::ipinstance(
                "default",
                pod,
                a,
                "overlay",
                "ov",
                "node1",
                "02:00:c6:13:00:05",
            )
        })
        .collect();
    let config = CniServerConfig {
        host_netns: Some(format!("/run/netns/{}", node.name).into()),
        ping_pod: Some(PingConfig {
            timeout,
            interval: Duration::from_millis(100),
        }),
        ..Default::default()
    };
    let service = CniService::new(
        Arc::new(common::PodLookup {
            instances,
            subnets: Default::default(),
        }),
        config,
    )
    .expect("CNI service");
    rt.block_on(service.handle(common::cni_request(
        AgentCommand::Add,
        &format!("cid-{pod}"),
        pod,
        pod_ns,
    )))
}

fn node_state(node: &Netns) -> String {
    // Routes of IPv6 addresses appear when their DAD ends, on the kernel's timer.
    node.wait_ipv6_dad_settled(std::time::Duration::from_secs(30));
    format!(
        "{}\n{}\n{}\n{}",
        node.ip("-o link show"),
        node.ip("route show table all"),
        node.ip("-6 route show table all"),
        node.ip("neigh show proxy"),
    )
}

#[test]
fn a_reachable_pod_passes_the_ping() {
    if !require_root("a_reachable_pod_passes_the_ping") {
        return;
    }
    let node = node(true, true);
    let pod = Netns::new("ppod");
    let started = std::time::Instant::now();
    let r = add(
        &node,
        &pod,
        "web-0",
        &["198.19.8.5", "fd00:19::5"],
        Duration::from_secs(5),
    );
    eprintln!("ADD with ping took {:?}", started.elapsed());
    assert!(r.error.is_none(), "{:?}", r.error);
}

#[test]
fn a_pod_that_does_not_answer_fails_add_and_leaves_nothing() {
    if !require_root("a_pod_that_does_not_answer_fails_add_and_leaves_nothing") {
        return;
    }
    for (family, addr, key) in [
        ("IPv4", "198.19.8.6", "net/ipv4/icmp_echo_ignore_all"),
        ("IPv6", "fd00:19::6", "net/ipv6/icmp/echo_ignore_all"),
    ] {
        let node = node(true, true);
        let pod = Netns::new("ppod");
        pod.set_sysctl(key, "1");
        let before = node_state(&node);
        let r = add(&node, &pod, "mute-0", &[addr], Duration::from_millis(700));
        let e = r.error.expect("ADD must fail: the pod does not answer");
        assert!(
            e.msg.contains(&format!(
                "pod default/mute-0: pod ip {addr} does not answer ping from the node"
            )),
            "{family}: {}",
            e.msg
        );
        assert_eq!(e.code, 11, "{family}");
        assert_eq!(node_state(&node), before, "{family}: node changed");
        assert!(pod.try_ip("link show eth0").is_err(), "{family}");
    }
}

#[test]
fn a_family_without_node_address_is_not_pinged() {
    if !require_root("a_family_without_node_address_is_not_pinged") {
        return;
    }
    // The node has IPv6 only; the pod would not answer IPv4 pings, but none are sent.
    let node = node(false, true);
    let pod = Netns::new("ppod");
    pod.set_sysctl("net/ipv4/icmp_echo_ignore_all", "1");
    let r = add(
        &node,
        &pod,
        "v4-0",
        &["198.19.8.7", "fd00:19::7"],
        Duration::from_secs(5),
    );
    assert!(r.error.is_none(), "{:?}", r.error);
}

//! What the node agent's data-plane benchmarks share: the node's network namespace, the local
//! cluster they plan for, and the machine readings printed beside the figures.

#![allow(dead_code)] // each benchmark uses part of it

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;
use hybridnet_node::plan::ApiState;

pub fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{args:?} failed");
}

/// A network namespace, deleted when dropped.
pub struct Ns(pub String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The benchmark's node: a namespace `<prefix>-<pid>` whose `eth0` (198.18.0.1/16, MAC
/// 02:00:00:00:00:01, default route) is a veth into a peer namespace; both deleted on drop.
pub struct NodeNs {
    pub name: String,
    _node: Ns,
    _peer: Ns,
}

pub fn node_namespace(prefix: &str) -> NodeNs {
    let name = format!("{prefix}-{}", std::process::id());
    let peer = format!("{prefix}p-{}", std::process::id());
    sh(&["ip", "netns", "add", &name]);
    let node = Ns(name.clone());
    sh(&["ip", "netns", "add", &peer]);
    let peer_ns = Ns(peer.clone());
    sh(&[
        "ip", "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "e1", "netns",
        &peer,
    ]);
    sh(&[
        "ip",
        "-n",
        &name,
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:00:00:01",
        "up",
    ]);
    sh(&[
        "ip",
        "-n",
        &name,
        "addr",
        "add",
        "198.18.0.1/16",
        "dev",
        "eth0",
    ]);
    sh(&[
        "ip",
        "-n",
        &name,
        "route",
        "add",
        "default",
        "via",
        "198.18.255.254",
        "dev",
        "eth0",
    ]);
    NodeNs {
        name,
        _node: node,
        _peer: peer_ns,
    }
}

/// A numeric setting from the environment, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The local cluster: node n1 (this node) and `vteps` other nodes r0.. with VTEPs, and `pods`
/// overlay pods spread over them.
pub fn local_cluster(vteps: usize, pods: usize) -> ApiState {
    let mut overlay = Network::new(
        "overlay",
        NetworkSpec {
            net_id: Some(4),
            network_type: Some(NetworkType::Overlay),
            ..Default::default()
        },
    );
    let mut nodes: Vec<String> = (0..vteps).map(|i| format!("r{i}")).collect();
    nodes.push("n1".into());
    overlay.status = Some(NetworkStatus {
        node_list: Some(nodes),
        ..Default::default()
    });
    let subnet = Subnet::new(
        "ov",
        SubnetSpec {
            network: "overlay".into(),
            net_id: None,
            range: AddressRange {
                version: IpVersion::V4,
                cidr: "198.19.0.0/16".into(),
                ..Default::default()
            },
            config: None,
        },
    );
    let mut node_infos = vec![NodeInfo::new(
        "n1",
        NodeInfoSpec {
            vtep_info: Some(VtepInfo {
                ip: Some("198.18.0.1".into()),
                mac: Some("02:00:00:00:00:01".into()),
                local_ips: Some(vec!["198.18.0.1".into()]),
            }),
        },
    )];
    for i in 0..vteps {
        let ip = format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250);
        node_infos.push(NodeInfo::new(
            &format!("r{i}"),
            NodeInfoSpec {
                vtep_info: Some(VtepInfo {
                    ip: Some(ip.clone()),
                    mac: Some(format!("02:01:00:00:{:02x}:{:02x}", i / 256, i % 256)),
                    local_ips: Some(vec![ip]),
                }),
            },
        ));
    }
    let mut ip_instances = Vec::with_capacity(pods);
    for k in 0..pods {
        let n = k + 2;
        let addr = format!("198.19.{}.{}", n / 256, n % 256);
        let node = format!("r{}", k % vteps);
        let ipi = overlay_pod(addr, node, format!("p{k}"));
        ip_instances.push(ipi);
    }
    ApiState {
        node_name: "n1".into(),
        node_addresses: vec!["198.18.0.1".parse().unwrap()],
        networks: vec![overlay],
        subnets: vec![subnet],
        ip_instances: ip_instances.into_iter().map(Arc::new).collect(),
        node_infos: node_infos.into_iter().map(Arc::new).collect(),
        ..Default::default()
    }
}

/// A pod of the overlay subnet `ov` with address `addr` on `node` (namespace `default`).
pub fn overlay_pod(addr: String, node: String, pod: String) -> IPInstance {
    let mut ipi = IPInstance::new(
        &addr.replace('.', "-"),
        IPInstanceSpec {
            network: "overlay".into(),
            subnet: "ov".into(),
            address: Address {
                version: IpVersion::V4,
                ip: addr,
                gateway: None,
                net_id: None,
                mac: "02:aa:00:00:00:01".into(),
            },
            binding: Binding {
                node_name: Some(node.clone()),
                pod_name: Some(pod),
                ..Default::default()
            },
        },
    );
    ipi.metadata.namespace = Some("default".into());
    ipi.metadata.labels = Some(BTreeMap::from([(label::NODE.to_string(), node)]));
    ipi
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU time of the calling thread (user + system, including the kernel's work in its netlink
/// calls): on the shared machine the wall clock also counts time spent waiting for a core.
pub fn cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
        })
        .map(|ns| ns as f64 / 1e9)
        .unwrap_or(0.0)
}

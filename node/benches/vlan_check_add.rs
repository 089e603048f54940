//! CNI ADD latency of VLAN pods with and without the ADD checks: 20 dual-stack pods added one
//! after the other through the in-process `CniService` (no plugin process), on a node namespace
//! bridged to a gateway namespace that answers ARP/NDP. Configurations: no checks; VLAN checks
//! (`--vlan-check-timeout=3s`); VLAN checks + ping from the node.
//!
//! Run as root: `cargo bench -p hybridnet-node --bench vlan_check_add`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Netns, veth};
use hybridnet_api::ipmath::Cidr;
use hybridnet_cni::AgentCommand;
use hybridnet_node::cniserver::podping::PingConfig;
use hybridnet_node::cniserver::vlancheck::{VlanCheckConfig, VlanSubnet, VlanSubnets};
use hybridnet_node::cniserver::{CniServerConfig, CniService};

const PODS: usize = 20;

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vlan_check_add bench needs root (network namespaces); skipped");
        return;
    }
    let switch = Netns::new("bsw");
    switch.ip("link add br0 type bridge");
    switch.ip("link set br0 type bridge mcast_snooping 0");
    switch.ip("link set br0 up");
    let node = Netns::new("bnode");
    veth(&switch, "p-node", &node, "eth0");
    switch.ip("link set p-node master br0");
    node.ip("addr add 198.19.0.1/32 dev lo");
    node.ip("addr add fd00:ff::1/128 dev lo");
    node.ip("rule add pref 1 lookup 39999");
    node.ip("-6 rule add pref 1 lookup 39999");
    let gw = Netns::new("bgw");
    veth(&switch, "p-gw", &gw, "eth0");
    switch.ip("link set p-gw master br0");
    gw.ip("addr add 198.18.0.1/24 dev eth0");
    gw.ip("addr add fd00:18::1/112 dev eth0 nodad");

    let subnets = VlanSubnets(BTreeMap::from([
        (
            Cidr::parse_canonical("198.18.0.0/24").unwrap(),
            VlanSubnet {
                iface: "eth0".into(),
                gateway: Some("198.18.0.1".parse().unwrap()),
            },
        ),
        (
            Cidr::parse_canonical("fd00:18::/112").unwrap(),
            VlanSubnet {
                iface: "eth0".into(),
                gateway: Some("fd00:18::1".parse().unwrap()),
            },
        ),
    ]));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("CNI ADD of {PODS} dual-stack VLAN pods, one after the other (ms)");
    println!(
        "{:<28} {:>8} {:>8} {:>8}",
        "configuration", "p50", "p95", "max"
    );
    for (label, timeout, ping) in [
        ("no checks", Duration::ZERO, None),
        ("VLAN checks (3s)", Duration::from_secs(3), None),
        (
            "VLAN checks + ping",
            Duration::from_secs(3),
            Some(PingConfig::default()),
        ),
    ] {
        let instances = (0..PODS)
            .flat_map(|i| {
                let pod = format!("bench-{i}");
                [
                    format!("198.18.0.{}", 10 + i),
                    format!("fd00:18::{:x}", 0x10 + i),
                ]
                .into_iter()
                .map(move |a| {
                    common::ipinstance(
                        "default",
                        &pod,
                        &a,
                        "vlan",
                        "vlan-sub",
                        "node1",
                        "02:00:c6:12:00:05",
                    )
                })
                .collect::<Vec<_>>()
            })
            .collect();
        let config = CniServerConfig {
            host_netns: Some(format!("/run/netns/{}", node.name).into()),
            vlan_check: VlanCheckConfig { timeout },
            ping_pod: ping,
            ..Default::default()
        };
        let service = CniService::new(
            Arc::new(common::PodLookup {
                instances,
                subnets: subnets.clone(),
            }),
            config,
        )
        .expect("CNI service");
        let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("bpod")).collect();
        let req = |cmd, i: usize, ns: &Netns| {
            common::cni_request(cmd, &format!("cid-{i}"), &format!("bench-{i}"), ns)
        };
        let mut lat = Vec::with_capacity(PODS);
        for (i, ns) in pods.iter().enumerate() {
            let t = Instant::now();
            let r = rt.block_on(service.handle(req(AgentCommand::Add, i, ns)));
            lat.push(t.elapsed());
            assert!(r.error.is_none(), "{label}: ADD {i}: {:?}", r.error);
        }
        for (i, ns) in pods.iter().enumerate() {
            let r = rt.block_on(service.handle(req(AgentCommand::Del, i, ns)));
            assert!(r.error.is_none(), "{label}: DEL {i}: {:?}", r.error);
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        println!(
            "{label:<28} {:>8} {:>8} {:>8}",
            ms(p(0.5)),
            ms(p(0.95)),
            ms(lat[lat.len() - 1])
        );
    }
}

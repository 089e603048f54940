//! Cost of the BGP part of one agent reconcile at cluster scale: `desired_bgp` over 100 000
//! IPInstances (110 of them on this node), and `BgpController::reconcile` (desired state plus the
//! live `set_routes`/`set_peers` no-op checks). Baseline in the same run: cloning the IPInstance
//! list, which every reconcile's cache snapshot already pays.
//!
//! Run: `cargo bench -p hybridnet-node --bench bgp_desired`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;
use hybridnet_node::bgp::{BgpController, BgpState, desired_bgp};
use hybridnet_node::plan::{ApiState, HostAddress, HostInterface, HostRoute, HostState};

const CLUSTER_PODS: usize = 100_000;
const NODES: usize = 1_000;

fn api() -> ApiState {
    let mut net = Network::new(
        "bgp",
        NetworkSpec {
            node_selector: None,
            net_id: Some(65001),
            network_type: Some(NetworkType::Underlay),
            mode: Some(NetworkMode::Bgp),
            config: Some(NetworkConfig {
                bgp_peers: Some(vec![BgpPeer {
                    asn: 65000,
                    address: "127.0.0.31".into(),
                    allow_not_established: Some(true),
                    ..Default::default()
                }]),
            }),
        },
    );
    net.status = Some(NetworkStatus {
        node_list: Some((0..NODES).map(|n| format!("node{n}")).collect()),
        ..Default::default()
    });
    let subnets: Vec<Subnet> = (0..100)
        .map(|s| {
            Subnet::new(
                &format!("s{s}"),
                SubnetSpec {
                    network: "bgp".into(),
                    net_id: None,
                    range: AddressRange {
                        version: IpVersion::V4,
                        cidr: format!("10.{s}.0.0/16"),
                        start: None,
                        end: None,
                        gateway: None,
                        reserved_ips: None,
                        exclude_ips: None,
                    },
                    config: None,
                },
            )
        })
        .collect();
    let ip_instances = (0..CLUSTER_PODS)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", i / 1000, (i / 250) % 4, i % 250 + 1);
            let node = format!("node{}", if i % 910 == 0 { 0 } else { i % NODES });
            let mut x = IPInstance::new(
                &ip.replace('.', "-"),
                IPInstanceSpec {
                    network: "bgp".into(),
                    subnet: format!("s{}", i / 1000),
                    address: Address {
                        version: IpVersion::V4,
                        ip: format!("{ip}/16"),
                        gateway: None,
                        net_id: Some(65001),
                        mac: "02:00:00:00:00:01".into(),
                    },
                    binding: Binding {
                        node_name: Some(node.clone()),
                        pod_name: Some(format!("p{i}")),
                        ..Default::default()
                    },
                },
            );
            x.metadata.namespace = Some("default".into());
            x.metadata.labels = Some(BTreeMap::from([(label::NODE.to_string(), node)]));
            std::sync::Arc::new(x)
        })
        .collect();
    ApiState {
        node_name: "node0".into(),
        node_addresses: vec![],
        networks: vec![net],
        subnets,
        ip_instances,
        node_infos: vec![],
        ..Default::default()
    }
}

fn host() -> HostState {
    HostState {
        interfaces: vec![HostInterface {
            name: "eth0".into(),
            index: 2,
            mac: None,
            mtu: 1500,
            up: true,
            addresses: vec![HostAddress {
                ip: "198.18.1.1".parse().unwrap(),
                prefix: 31,
                noprefixroute: false,
            }],
        }],
        main_routes: vec![HostRoute {
            dst: hybridnet_api::ipmath::Cidr::parse_any("0.0.0.0/0").unwrap(),
            gateway: Some("198.18.1.0".parse().unwrap()),
            dev: Some("eth0".into()),
            src: None,
        }],
        ipv6_enabled: false,
        ..Default::default()
    }
}

fn time(label: &str, iterations: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    let mut samples = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "{label}: median {:.2} ms, min {:.2} ms ({iterations} iterations)",
        median.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3
    );
    median
}

fn main() {
    let api = api();
    let host = host();
    let d = desired_bgp(&api, &host, &[]);
    let routes = d.speaker.as_ref().map(|s| s.routes.len()).unwrap_or(0);
    println!(
        "{CLUSTER_PODS} IPInstances in the cluster, {routes} routes announced by this node (100 subnets + local pods)"
    );
    let base = time("baseline: clone the IPInstance list", 20, || {
        black_box(
            api.ip_instances
                .iter()
                .map(|i| (**i).clone())
                .collect::<Vec<_>>(),
        );
    });
    let desired = time("desired_bgp", 20, || {
        black_box(desired_bgp(&api, &host, &[]));
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reconcile = rt.block_on(async {
        let mut c = BgpController::new(Arc::new(BgpState::default()));
        time("BgpController::reconcile (steady state)", 20, || {
            black_box(c.reconcile(&api, &host, &[]));
        })
    });
    println!(
        "ratios to baseline: desired_bgp {:.2}x, reconcile {:.2}x",
        desired.as_secs_f64() / base.as_secs_f64(),
        reconcile.as_secs_f64() / base.as_secs_f64()
    );
}

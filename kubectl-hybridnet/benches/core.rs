//! Times the pure core of `ip usage`, `ip check`, `ip ls` and `trace` on a large cluster snapshot
//! (plain `std::time::Instant`, no harness). Run: `cargo bench -p kubectl-hybridnet --bench core`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use hybridnet_api::v1::{
    AddressRange, IpVersion, Network, NetworkSpec, NetworkType, Subnet, SubnetSpec,
};
use kubectl_hybridnet::check::{CheckInput, SubnetFacts, check};
use kubectl_hybridnet::inventory::{InstanceFacts, IpFilter, OwnerRef, PodFacts, ip_rows};
use kubectl_hybridnet::jsonpath::Template;
use kubectl_hybridnet::usage::usage_report;

const SUBNETS: u32 = 64;
const PER_SUBNET: u32 = 1000;

fn time<T>(what: &str, runs: u32, mut f: impl FnMut() -> T) {
    let _ = black_box(f());
    let start = Instant::now();
    for _ in 0..runs {
        black_box(f());
    }
    let per = start.elapsed() / runs;
    println!("{what:<55} {per:>12.3?} per run ({runs} runs)");
}

fn main() {
    let mut net = Network::new(
        "overlay",
        NetworkSpec {
            net_id: Some(4),
            network_type: Some(NetworkType::Overlay),
            ..Default::default()
        },
    );
    net.metadata.name = Some("overlay".into());
    let mut subnets = Vec::new();
    let mut instances = Vec::new();
    let mut pods = Vec::new();
    for s in 0..SUBNETS {
        let name = format!("s{s}");
        let mut sub = Subnet::new(
            &name,
            SubnetSpec {
                network: "overlay".into(),
                net_id: None,
                range: AddressRange {
                    version: IpVersion::V4,
                    cidr: format!("10.{}.{}.0/22", 64 + s / 64, (s % 64) * 4),
                    ..Default::default()
                },
                config: None,
            },
        );
        sub.metadata.name = Some(name.clone());
        subnets.push(sub);
        for i in 0..PER_SUBNET {
            let ip = IpAddr::V4(Ipv4Addr::new(
                10,
                (64 + s / 64) as u8,
                ((s % 64) * 4 + i / 250) as u8,
                (1 + i % 250) as u8,
            ));
            let pod = format!("p-{s}-{i}");
            // Every 50th address is leaked (its pod is gone).
            if i % 50 != 0 {
                pods.push(PodFacts {
                    namespace: "default".into(),
                    name: pod.clone(),
                    uid: Some(format!("u-{pod}")),
                    phase: "Running".into(),
                    host_network: false,
                    node: Some(format!("node{}", i % 100)),
                    ips: vec![ip],
                    terminating: false,
                    controller: None,
                });
            }
            instances.push(InstanceFacts {
                namespace: "default".into(),
                name: hybridnet_api::naming::ip_to_instance_name(ip),
                ip: Some(ip),
                prefix_length: Some(22),
                raw_ip: format!("{ip}/22"),
                version: "4".into(),
                mac: "02:12:34:00:00:01".into(),
                gateway: None,
                net_id: Some(4),
                subnet: name.clone(),
                network: "overlay".into(),
                node: Some(format!("node{}", i % 100)),
                pod: Some(pod.clone()),
                pod_uid: Some(format!("u-{pod}")),
                owner: Some(OwnerRef {
                    kind: "Pod".into(),
                    name: pod,
                    uid: None,
                }),
                terminating: false,
                migration_peer: None,
            });
        }
    }
    let check_input = CheckInput {
        instances: instances.clone(),
        pods,
        statefulsets: BTreeMap::new(),
        subnets: SubnetFacts::by_name(&subnets),
        stateful_kinds: vec!["StatefulSet".into()],
    };
    let n = instances.len();
    println!(
        "snapshot: {SUBNETS} subnets, {n} IPInstances, {} pods",
        check_input.pods.len()
    );
    time(
        &format!("ip usage: usage_report over {n} addresses"),
        20,
        || usage_report(std::slice::from_ref(&net), &subnets, &instances, None, 90),
    );
    let report = check(&check_input);
    assert_eq!(report.fixes.len(), (SUBNETS * PER_SUBNET / 50) as usize);
    time(&format!("ip check: check over {n} addresses"), 10, || {
        check(&check_input)
    });
    time(
        &format!("ip ls: ip_rows (filter one node) over {n}"),
        20,
        || {
            ip_rows(
                &instances,
                &IpFilter {
                    node: Some("node7".into()),
                    ..Default::default()
                },
            )
        },
    );

    // -o jsonpath over the List that `-o json` would print, against printing that List as JSON.
    let items: Vec<serde_json::Value> = instances
        .iter()
        .map(|f| {
            serde_json::json!({
                "apiVersion": "networking.alibaba.com/v1", "kind": "IPInstance",
                "metadata": {"name": f.name, "namespace": f.namespace,
                    "labels": {"networking.alibaba.com/subnet": f.subnet, "networking.alibaba.com/network": f.network}},
                "spec": {"network": f.network, "subnet": f.subnet,
                    "address": {"version": f.version, "ip": f.raw_ip, "mac": f.mac},
                    "binding": {"nodeName": f.node}},
            })
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    time(
        &format!("-o json (baseline): pretty JSON of the List of {n}"),
        10,
        || serde_json::to_string_pretty(&list).unwrap().len(),
    );
    for t in [
        "{.items[*].metadata.name}",
        r#"{range .items[*]}{.metadata.name}{"\t"}{.spec.address.ip}{"\n"}{end}"#,
        r#"{.items[?(@.spec.binding.nodeName=="node7")].metadata.name}"#,
        "{..ip}",
    ] {
        let tpl = Template::parse(t).unwrap();
        time(&format!("-o jsonpath={t} over {n}"), 10, || {
            tpl.render(&list).unwrap().len()
        });
    }
}

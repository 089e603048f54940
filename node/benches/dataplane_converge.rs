//! Time for the agent to converge (read host + plan + apply) after 1,000 remote VTEPs and 20,000
//! remote pod IPs appear, inside a network namespace this benchmark creates (root required).
//!
//! Run: `cargo bench -p hybridnet-node --bench dataplane_converge`
//! (`HN_BENCH_VTEPS` / `HN_BENCH_PODS` change the sizes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, PlanConfig, build_plan};

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{args:?} failed");
}

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn api(vteps: usize, pods: usize) -> ApiState {
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
                    pod_name: Some(format!("p{k}")),
                    ..Default::default()
                },
            },
        );
        ipi.metadata.namespace = Some("default".into());
        ipi.metadata.labels = Some(BTreeMap::from([(label::NODE.to_string(), node)]));
        ip_instances.push(ipi);
    }
    ApiState {
        node_name: "n1".into(),
        node_addresses: vec!["198.18.0.1".parse().unwrap()],
        networks: vec![overlay],
        subnets: vec![subnet],
        ip_instances,
        node_infos,
    }
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED dataplane_converge: needs root to create a network namespace");
        return Ok(());
    }
    let vteps: usize = std::env::var("HN_BENCH_VTEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let pods: usize = std::env::var("HN_BENCH_PODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let name = format!("hnb-{}", std::process::id());
    let peer = format!("hnbp-{}", std::process::id());
    sh(&["ip", "netns", "add", &name]);
    let _g = Ns(name.clone());
    sh(&["ip", "netns", "add", &peer]);
    let _p = Ns(peer.clone());
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

    let base = api(0, 0);
    let full = api(vteps, pods);
    let more = api(vteps, pods + 100);
    let out = run_in_netns(&name, move |h| async move {
        let cfg = PlanConfig::default();
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        // The node before the remote nodes appear.
        let host = read_host_state(&h, &cfg.tables).await?;
        a.apply(&build_plan(&base, &host, &cfg)).await?;

        let t0 = Instant::now();
        let host = read_host_state(&h, &cfg.tables).await?;
        let t_read = t0.elapsed();
        let t1 = Instant::now();
        let plan = build_plan(&full, &host, &cfg);
        let t_plan = t1.elapsed();
        let t2 = Instant::now();
        let rep = a.apply(&plan).await?;
        let t_apply = t2.elapsed();
        anyhow::ensure!(
            rep.errors.is_empty(),
            "apply errors: {:?}",
            &rep.errors[..rep.errors.len().min(3)]
        );
        let converge = t0.elapsed();

        let t3 = Instant::now();
        let host = read_host_state(&h, &cfg.tables).await?;
        let plan2 = build_plan(&full, &host, &cfg);
        let rep2 = a.apply(&plan2).await?;
        let steady = t3.elapsed();
        anyhow::ensure!(rep2.is_noop(), "steady state changed {:?}", rep2.changes);

        let t4 = Instant::now();
        let host = read_host_state(&h, &cfg.tables).await?;
        let plan3 = build_plan(&more, &host, &cfg);
        let rep3 = a.apply(&plan3).await?;
        let incr = t4.elapsed();
        Ok((
            plan.fdb.len(),
            plan.vxlan_neighbours.len(),
            rep.total_changes(),
            t_read,
            t_plan,
            t_apply,
            converge,
            steady,
            incr,
            rep3.total_changes(),
        ))
    })?;
    let (fdb, neigh, changes, t_read, t_plan, t_apply, converge, steady, incr, incr_changes) = out;
    println!("dataplane_converge: {vteps} remote VTEPs, {pods} remote pod IPs");
    println!(
        "  programmed: {fdb} FDB entries, {neigh} neighbour entries, {changes} kernel changes"
    );
    println!(
        "  converge (read host + plan + apply): {:.3} s",
        converge.as_secs_f64()
    );
    println!(
        "    read host {:.3} s, plan {:.3} s, apply {:.3} s",
        t_read.as_secs_f64(),
        t_plan.as_secs_f64(),
        t_apply.as_secs_f64()
    );
    println!(
        "  steady-state reconcile (no change): {:.3} s",
        steady.as_secs_f64()
    );
    println!(
        "  +100 remote pods: {:.3} s ({incr_changes} kernel changes)",
        incr.as_secs_f64()
    );
    Ok(())
}

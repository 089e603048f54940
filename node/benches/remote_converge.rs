//! Time for the agent to converge after a remote cluster changes (docs/multicluster.md): a
//! RemoteVtep with its pods added (until its FDB entry is in the kernel), its pod list changed,
//! the RemoteVtep removed, and a RemoteSubnet added, on a node that already has a cluster of
//! 1,000 VTEPs / 20,000 pods and 100 remote VTEPs / 2,000 remote pods, inside a network
//! namespace this benchmark creates (root required).
//!
//! What is measured is the agent's work for one watch event: rebuild the plan from the cache
//! snapshot and apply the difference against what the last apply left (the incremental path,
//! `Applier::apply_changes`; the host is not read again because nothing on the host changed),
//! then `bridge fdb show` confirms the entry. The agent adds its 100 ms debounce before that work.
//!
//! Run: `cargo bench -p hybridnet-node --bench remote_converge` (`HN_BENCH_RUNS` repetitions).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the failure report

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hybridnet_api::multicluster::{RemoteSubnet, RemoteSubnetSpec, RemoteVtep, RemoteVtepSpec};
use hybridnet_api::v1::*;
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, KernelChanges, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, PlanConfig, build_plan};

const VTEPS: usize = 1000;
const PODS: usize = 20_000;
const REMOTE_VTEPS: usize = 100;
const PODS_PER_REMOTE_VTEP: usize = 20;

fn remote_subnet(name: &str, cidr: &str) -> RemoteSubnet {
    RemoteSubnet::new(
        name,
        RemoteSubnetSpec {
            range: AddressRange {
                version: IpVersion::V4,
                cidr: cidr.into(),
                ..Default::default()
            },
            network_type: Some(NetworkType::Overlay),
            cluster_name: Some("b".into()),
        },
    )
}

/// Remote node `i` of cluster b with `pods` pods from 10.64.0.0/16.
fn remote_vtep(i: usize, pods: usize, offset: usize) -> Arc<RemoteVtep> {
    let eps = (0..pods)
        .map(|k| {
            let n = i * PODS_PER_REMOTE_VTEP + k + offset + 2;
            format!("10.64.{}.{}", n / 256, n % 256)
        })
        .collect();
    let ip = format!("198.18.{}.{}", 10 + i / 250, 1 + i % 250);
    Arc::new(RemoteVtep::new(
        &format!("b.m{i}"),
        RemoteVtepSpec {
            cluster_name: Some("b".into()),
            node_name: Some(format!("m{i}")),
            ip: Some(ip.clone()),
            mac: Some(format!("02:02:00:00:{:02x}:{:02x}", i / 256, i % 256)),
            local_ips: Some(vec![ip]),
            endpoint_ip_list: Some(eps),
        },
    ))
}

fn connected(remote: usize) -> ApiState {
    let mut a = common::local_cluster(VTEPS, PODS);
    a.remote_subnets = vec![remote_subnet("b.ov", "10.64.0.0/16")];
    a.remote_vteps = (0..remote)
        .map(|i| remote_vtep(i, PODS_PER_REMOTE_VTEP, 0))
        .collect();
    a
}

fn fdb_has(ns: &str, entry: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "bridge",
            "fdb",
            "show",
            "dev",
            "eth0.vxlan4",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(entry))
        .unwrap_or(false)
}

mod common;

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED remote_converge: needs root to create a network namespace");
        return Ok(());
    }
    let runs = common::env_usize("HN_BENCH_RUNS", 5);
    let node = common::node_namespace("hnrc");
    let name = node.name.clone();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let base = connected(REMOTE_VTEPS - 1);
    let mut added = base.clone();
    added
        .remote_vteps
        .push(remote_vtep(REMOTE_VTEPS - 1, PODS_PER_REMOTE_VTEP, 0));
    let mut changed = base.clone();
    changed
        .remote_vteps
        .push(remote_vtep(REMOTE_VTEPS - 1, PODS_PER_REMOTE_VTEP, 10));
    let mut subnet_added = base.clone();
    subnet_added
        .remote_subnets
        .push(remote_subnet("b.ov2", "10.65.0.0/16"));
    // The baseline in the same run: a node of this cluster with as many pods joins.
    let mut local_added = base.clone();
    local_added.node_infos.push(Arc::new(NodeInfo::new(
        "rnew",
        NodeInfoSpec {
            vtep_info: Some(VtepInfo {
                ip: Some("198.18.9.1".into()),
                mac: Some("02:03:00:00:00:01".into()),
                local_ips: Some(vec!["198.18.9.1".into()]),
            }),
        },
    )));
    for k in 0..PODS_PER_REMOTE_VTEP {
        let addr = format!("198.19.250.{}", k + 1);
        let ipi = common::overlay_pod(addr, "rnew".into(), format!("q{k}"));
        local_added.ip_instances.push(Arc::new(ipi));
    }
    let last_mac = format!(
        "02:02:00:00:{:02x}:{:02x}",
        (REMOTE_VTEPS - 1) / 256,
        (REMOTE_VTEPS - 1) % 256
    );
    let ns = name.clone();
    let rows = run_in_netns(&name, move |h| async move {
        let cfg = PlanConfig::default();
        let host = read_host_state(&h, &cfg.tables).await?;
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        // The VXLAN device exists after the first apply: plan from the host that has it.
        a.apply(&build_plan(&base, &host, &cfg)).await?;
        let host = read_host_state(&h, &cfg.tables).await?;
        let mut rows: Vec<[Duration; 6]> = Vec::new();
        for _ in 0..runs {
            let mut row = [Duration::ZERO; 6];
            // Each step starts from the base state and goes from there to `api`.
            for (i, api) in [&base, &added, &changed, &base, &subnet_added, &local_added]
                .into_iter()
                .enumerate()
            {
                let from = match i {
                    2 => &added,
                    3 => &changed,
                    _ => &base,
                };
                a.apply(&build_plan(from, &host, &cfg)).await?;
                let t = Instant::now();
                let plan = build_plan(api, &host, &cfg);
                let rep = a.apply_changes(&plan, KernelChanges::default()).await?;
                row[i] = t.elapsed();
                anyhow::ensure!(rep.errors.is_empty(), "apply: {:?}", rep.errors);
                if i == 0 {
                    anyhow::ensure!(rep.is_noop(), "no-op changed {:?}", rep.changes);
                }
                if i == 1 {
                    // Added: the kernel has the FDB entry when the apply returns (netlink acks).
                    anyhow::ensure!(fdb_has(&ns, &last_mac), "no FDB entry {last_mac}");
                }
            }
            rows.push(row);
        }
        Ok(rows)
    })?;
    println!(
        "remote_converge: {VTEPS} local VTEPs / {PODS} pods, {REMOTE_VTEPS} remote VTEPs / {} remote pods, {runs} runs (median, max)",
        REMOTE_VTEPS * PODS_PER_REMOTE_VTEP
    );
    println!(
        "  load average before: {}",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (i, label) in [
        "baseline: an event that changes nothing (plan rebuilt, nothing applied)",
        "RemoteVtep added (20 pods) -> its FDB entry in the kernel",
        "its endpointIPList changed (10 pods out, 10 in)",
        "RemoteVtep deleted",
        "RemoteSubnet added",
        "baseline: a node of this cluster joins (NodeInfo + 20 IPInstances)",
    ]
    .into_iter()
    .enumerate()
    {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i].as_secs_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        println!("  {label}: {:.4} s ({:.4})", v[v.len() / 2], v[v.len() - 1]);
    }
    Ok(())
}

//! Time for the agent to converge (read host + plan + apply) after 1,000 remote VTEPs and 20,000
//! remote pod IPs appear, inside a network namespace this benchmark creates (root required).
//!
//! Both reconcile paths of the agent in one run: the full resync (read the host, plan, dump and
//! diff every kind of kernel object) and the incremental one (diff against what the last apply
//! left, no dump; what the agent does between full resyncs when no notification says the kernel
//! changed).
//!
//! Run: `cargo bench -p hybridnet-node --bench dataplane_converge`
//! (`HN_BENCH_VTEPS` / `HN_BENCH_PODS` change the sizes, `HN_BENCH_RUNS` the repetitions).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, KernelChanges, NftRunner, read_host_state};
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
        ip_instances: ip_instances.into_iter().map(Arc::new).collect(),
        node_infos: node_infos.into_iter().map(Arc::new).collect(),
        ..Default::default()
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

    let load_before = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let base = api(0, 0);
    let full = api(vteps, pods);
    let more = api(vteps, pods + 100);
    let runs: usize = std::env::var("HN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let out = run_in_netns(&name, move |h| async move {
        let cfg = PlanConfig::default();
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        let mut full_rows = Vec::new();
        let mut incr_rows = Vec::new();
        for _ in 0..runs {
            // Full path: every reconcile reads the host, plans, dumps and diffs everything (the
            // full resync; before #19 every reconcile).
            full_rows.push(measure(&mut a, &h, &cfg, &base, &full, &more, Path::Full).await?);
            // Incremental path: diffs against what the last apply left; no kernel dump.
            incr_rows
                .push(measure(&mut a, &h, &cfg, &base, &full, &more, Path::Incremental).await?);
        }
        Ok((full_rows, incr_rows))
    })?;
    let (full_rows, incr_rows) = out;
    println!(
        "dataplane_converge: {vteps} remote VTEPs, {pods} remote pod IPs, {runs} runs (median, max)"
    );
    println!("  load average before: {load_before}");
    let r = &full_rows[0];
    println!(
        "  programmed: {} FDB entries, {} neighbour entries, {} kernel changes",
        r.fdb, r.neigh, r.changes
    );
    println!("  wall clock median (max) | CPU time of the thread median (max):");
    for (label, rows) in [
        ("full (dump + diff)", &full_rows),
        ("incremental", &incr_rows),
    ] {
        println!("  {label}:");
        let col = |f: fn(&Row) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            format!("{:.4} s ({:.4})", v[v.len() / 2], v[v.len() - 1])
        };
        println!(
            "    converge from empty: {} | CPU {}",
            col(|r| r.converge),
            col(|r| r.cpu_converge)
        );
        println!(
            "      read host {}, plan {}, apply {}",
            col(|r| r.read),
            col(|r| r.plan),
            col(|r| r.apply)
        );
        println!(
            "    no-op reconcile (plan rebuilt): {} | CPU {}",
            col(|r| r.noop),
            col(|r| r.cpu_noop)
        );
        println!("      of which plan {}", col(|r| r.noop_plan));
        println!(
            "    no-op reconcile (same input, plan kept): {} | CPU {}",
            col(|r| r.noop_same),
            col(|r| r.cpu_noop_same)
        );
        println!(
            "    +100 remote pods: {} | CPU {} ({} kernel changes)",
            col(|r| r.incr),
            col(|r| r.cpu_incr),
            rows[0].incr_changes
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// CPU time of the calling thread (user + system, including the kernel's work in its netlink
/// calls): on the shared machine the wall clock also counts time spent waiting for a core.
fn cpu() -> f64 {
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Full,
    Incremental,
}

struct Row {
    fdb: usize,
    neigh: usize,
    changes: usize,
    read: f64,
    plan: f64,
    apply: f64,
    converge: f64,
    noop: f64,
    noop_plan: f64,
    noop_same: f64,
    incr: f64,
    incr_changes: usize,
    cpu_converge: f64,
    cpu_noop: f64,
    cpu_noop_same: f64,
    cpu_incr: f64,
}

async fn apply(
    a: &mut Applier,
    plan: &hybridnet_node::DataPlanePlan,
    path: Path,
) -> anyhow::Result<hybridnet_node::dataplane::ApplyReport> {
    let rep = match path {
        Path::Full => a.apply(plan).await?,
        Path::Incremental => a.apply_changes(plan, KernelChanges::default()).await?,
    };
    anyhow::ensure!(
        rep.errors.is_empty(),
        "apply errors: {:?}",
        &rep.errors[..rep.errors.len().min(3)]
    );
    Ok(rep)
}

async fn measure(
    a: &mut Applier,
    h: &rtnetlink::Handle,
    cfg: &PlanConfig,
    base: &ApiState,
    full: &ApiState,
    more: &ApiState,
    path: Path,
) -> anyhow::Result<Row> {
    // The node before the remote nodes appear (a full apply: removes what a previous run left).
    let host = read_host_state(h, &cfg.tables).await?;
    a.apply(&build_plan(base, &host, cfg)).await?;

    // Converge: the incremental path reads the host only when notifications say it changed;
    // here it did not (the remote nodes are API objects), so it plans from the host it has.
    let c0 = cpu();
    let t0 = Instant::now();
    let host = read_host_state(h, &cfg.tables).await?;
    let t_read = t0.elapsed();
    let c1 = cpu();
    let t1 = Instant::now();
    let plan = build_plan(full, &host, cfg);
    let t_plan = t1.elapsed();
    let t2 = Instant::now();
    let rep = apply(a, &plan, path).await?;
    let t_apply = t2.elapsed();
    let converge = match path {
        Path::Full => t0.elapsed(),
        Path::Incremental => t1.elapsed(),
    };
    let cpu_converge = cpu()
        - match path {
            Path::Full => c0,
            Path::Incremental => c1,
        };

    // A reconcile with nothing to do. Full: reads the host and dumps everything. Incremental:
    // an API event that changes nothing (same objects), so the plan is rebuilt and diffed.
    let c3 = cpu();
    let t3 = Instant::now();
    let host2 = match path {
        Path::Full => read_host_state(h, &cfg.tables).await?,
        Path::Incremental => host.clone(),
    };
    let t3p = Instant::now();
    let plan2 = build_plan(full, &host2, cfg);
    let noop_plan = t3p.elapsed();
    let rep2 = apply(a, &plan2, path).await?;
    let noop = t3.elapsed();
    let cpu_noop = cpu() - c3;
    anyhow::ensure!(rep2.is_noop(), "no-op reconcile changed {:?}", rep2.changes);

    // Same input (no API event, no notification): the plan is kept, only the apply runs.
    let c5 = cpu();
    let t5 = Instant::now();
    let rep5 = apply(a, &plan2, path).await?;
    let noop_same = t5.elapsed();
    let cpu_noop_same = cpu() - c5;
    anyhow::ensure!(rep5.is_noop(), "no-op reconcile changed {:?}", rep5.changes);

    let c4 = cpu();
    let t4 = Instant::now();
    let host3 = match path {
        Path::Full => read_host_state(h, &cfg.tables).await?,
        Path::Incremental => host,
    };
    let plan3 = build_plan(more, &host3, cfg);
    let rep3 = apply(a, &plan3, path).await?;
    let incr = t4.elapsed();
    let cpu_incr = cpu() - c4;
    anyhow::ensure!(
        rep3.total_changes() == 100,
        "+100 pods changed {:?}",
        rep3.changes
    );
    Ok(Row {
        fdb: plan.fdb.len(),
        neigh: plan.vxlan_neighbours.len(),
        changes: rep.total_changes(),
        read: t_read.as_secs_f64(),
        plan: t_plan.as_secs_f64(),
        apply: t_apply.as_secs_f64(),
        converge: converge.as_secs_f64(),
        noop: noop.as_secs_f64(),
        noop_plan: noop_plan.as_secs_f64(),
        noop_same: noop_same.as_secs_f64(),
        incr: incr.as_secs_f64(),
        incr_changes: rep3.total_changes(),
        cpu_converge,
        cpu_noop,
        cpu_noop_same,
        cpu_incr,
    })
}

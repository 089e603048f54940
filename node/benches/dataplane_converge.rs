//! Time for the agent to converge (read host + plan + apply) after 1,000 remote VTEPs and 20,000
//! remote pod IPs appear, inside a network namespace this benchmark creates (root required).
//!
//! The reconcile paths in one run, alternately: the full resync (read the host, plan from
//! scratch, dump and diff every kind of kernel object); the incremental one (the plan updated per
//! changed object, `PlanState`, and diffed against what the last apply left, no dump; what the
//! agent does between full resyncs when no notification says the kernel changed); and, as the
//! baseline, the agent before per-object planning (the plan rebuilt from all objects on every API
//! event, then diffed against the last apply). Every phase is measured by one function,
//! [`reconcile`].
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
use hybridnet_node::DataPlanePlan;
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, ApplyReport, KernelChanges, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, PlanConfig, PlanState, build_plan};

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

    let load_before = loadavg();
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
        let mut rebuilt_rows = Vec::new();
        for _ in 0..runs {
            // Full path: every reconcile reads the host, plans from scratch, dumps and diffs
            // everything (the full resync; before #19 every reconcile).
            full_rows.push(measure(&mut a, &h, &cfg, &base, &full, &more, Path::Full).await?);
            // Incremental path: the plan is updated per changed object and diffed against what
            // the last apply left; no kernel dump.
            incr_rows
                .push(measure(&mut a, &h, &cfg, &base, &full, &more, Path::Incremental).await?);
            // The agent before per-object planning: the plan rebuilt from all objects on every
            // API event, then diffed against the last apply.
            rebuilt_rows.push(measure(&mut a, &h, &cfg, &base, &full, &more, Path::Rebuilt).await?);
        }
        Ok((full_rows, incr_rows, rebuilt_rows))
    })?;
    let (full_rows, incr_rows, rebuilt_rows) = out;
    println!(
        "dataplane_converge: {vteps} remote VTEPs, {pods} remote pod IPs, {runs} runs (median, max)"
    );
    println!("  load average before: {load_before}");
    let r = &full_rows[0];
    println!(
        "  programmed: {} FDB entries, {} neighbour entries, {} kernel changes",
        r.fdb, r.neigh, r.changes
    );
    println!(
        "  wall clock median (max) | CPU time of the thread median (max) | of which planning:"
    );
    for (label, rows) in [
        ("full (plan from scratch, dump + diff)", &full_rows),
        (
            "incremental (plan per object, diff against the last apply)",
            &incr_rows,
        ),
        (
            "before: plan from scratch per event, diff against the last apply",
            &rebuilt_rows,
        ),
    ] {
        println!("  {label}:");
        for (k, phase) in PHASES.iter().enumerate() {
            let col = |f: fn(&Sample) -> f64| {
                let mut v: Vec<f64> = rows.iter().map(|r| f(&r.phases[k])).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                format!("{:.4} s ({:.4})", v[v.len() / 2], v[v.len() - 1])
            };
            println!(
                "    {phase}: {} | CPU {} | plan {}",
                col(|s| s.wall),
                col(|s| s.cpu),
                col(|s| s.plan)
            );
        }
        println!(
            "    (+100 remote pods: {} kernel changes)",
            rows[0].incr_changes
        );
    }
    println!("  load average after: {}", loadavg());
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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
    Rebuilt,
}

const PHASES: [&str; 4] = [
    "converge from empty",
    "no-op reconcile after an API event that changes nothing",
    "no-op reconcile, same input (plan kept)",
    "+100 remote pods",
];

/// One measured phase: wall clock, thread CPU time, and the planning part of the wall clock.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    plan: f64,
}

struct Row {
    fdb: usize,
    neigh: usize,
    changes: usize,
    incr_changes: usize,
    phases: [Sample; 4],
}

/// Measures one reconcile: `plan` plans (timed as the planning part): it returns a plan built
/// from scratch, or `None` when the plan is `state`'s (updated in place or kept). That plan is
/// then applied on `path`. Returns the apply report, the sample and the plan `plan` returned.
async fn reconcile(
    a: &mut Applier,
    path: Path,
    state: &mut Option<PlanState>,
    plan: impl AsyncFnOnce(&mut Option<PlanState>) -> anyhow::Result<Option<DataPlanePlan>>,
) -> anyhow::Result<(ApplyReport, Sample, Option<DataPlanePlan>)> {
    let c0 = cpu();
    let t0 = Instant::now();
    let owned = plan(state).await?;
    let t_plan = t0.elapsed();
    let p = match (&owned, state.as_ref()) {
        (Some(p), _) => p,
        (None, Some(s)) => s.plan(),
        (None, None) => anyhow::bail!("no plan"),
    };
    let rep = match path {
        Path::Full => a.apply(p).await?,
        Path::Incremental | Path::Rebuilt => a.apply_changes(p, KernelChanges::default()).await?,
    };
    let sample = Sample {
        wall: t0.elapsed().as_secs_f64(),
        cpu: cpu() - c0,
        plan: t_plan.as_secs_f64(),
    };
    anyhow::ensure!(
        rep.errors.is_empty(),
        "apply errors: {:?}",
        &rep.errors[..rep.errors.len().min(3)]
    );
    Ok((rep, sample, owned))
}

/// The IPInstance changes between two API states (those only in `after`).
fn added(before: &ApiState, after: &ApiState) -> Vec<(String, String, Option<Arc<IPInstance>>)> {
    after.ip_instances[before.ip_instances.len()..]
        .iter()
        .map(|o| {
            (
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
                Some(o.clone()),
            )
        })
        .collect()
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

    // Converge. Full: reads the host and plans from scratch. Incremental: the agent plans from
    // scratch once, when its watches list, and keeps the state.
    let mut state: Option<PlanState> = None;
    let (rep, converge, owned) = reconcile(a, path, &mut state, async |st| {
        let host = read_host_state(h, &cfg.tables).await?;
        let s = PlanState::new(full, &host, cfg);
        Ok(match path {
            Path::Full | Path::Rebuilt => Some(s.into_plan()),
            Path::Incremental => {
                *st = Some(s);
                None
            }
        })
    })
    .await?;
    let counted = owned.as_ref().or(state.as_ref().map(PlanState::plan));
    let (fdb, neigh) = counted.map_or((0, 0), |p| (p.fdb.len(), p.vxlan_neighbours.len()));

    // An API event that changes nothing (one IPInstance sent again as it is). Full: read the
    // host, plan from scratch, dump and diff. Incremental: update the plan for that one object.
    let n = full.ip_instances.len();
    let last_one = ApiState {
        ip_instances: full.ip_instances[..n - 1].to_vec(),
        ..ApiState::default()
    };
    let same = added(&last_one, full);
    let (rep2, noop, kept) = reconcile(a, path, &mut state, async |st| match (path, st) {
        (Path::Incremental, Some(st)) => {
            let up = st.update_ip_instances(same);
            anyhow::ensure!(up.changed == 0, "the plan changed: {up:?}");
            Ok(None)
        }
        (Path::Rebuilt, _) => Ok(Some(build_plan(full, &host, cfg))),
        _ => {
            let host = read_host_state(h, &cfg.tables).await?;
            Ok(Some(build_plan(full, &host, cfg)))
        }
    })
    .await?;
    anyhow::ensure!(rep2.is_noop(), "no-op reconcile changed {:?}", rep2.changes);

    // Same input (no API event, no notification): the plan is kept, only the apply runs.
    let (rep5, noop_same, _) = reconcile(a, path, &mut state, async |_| Ok(kept)).await?;
    anyhow::ensure!(rep5.is_noop(), "no-op reconcile changed {:?}", rep5.changes);

    // 100 more remote pods.
    let new = added(full, more);
    let (rep3, incr, _) = reconcile(a, path, &mut state, async |st| match (path, st) {
        (Path::Incremental, Some(st)) => {
            let up = st.update_ip_instances(new);
            anyhow::ensure!(up.resolved == 100, "resolved {up:?}");
            Ok(None)
        }
        (Path::Rebuilt, _) => Ok(Some(build_plan(more, &host, cfg))),
        _ => {
            let host = read_host_state(h, &cfg.tables).await?;
            Ok(Some(build_plan(more, &host, cfg)))
        }
    })
    .await?;
    anyhow::ensure!(
        rep3.total_changes() == 100,
        "+100 pods changed {:?}",
        rep3.changes
    );
    Ok(Row {
        fdb,
        neigh,
        changes: rep.total_changes(),
        incr_changes: rep3.total_changes(),
        phases: [converge, noop, noop_same, incr],
    })
}

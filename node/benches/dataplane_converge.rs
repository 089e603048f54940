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

use std::sync::Arc;
use std::time::Instant;

use hybridnet_api::v1::*;
use hybridnet_node::DataPlanePlan;
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, ApplyReport, KernelChanges, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, PlanConfig, PlanState, build_plan};

mod common;

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED dataplane_converge: needs root to create a network namespace");
        return Ok(());
    }
    let vteps = common::env_usize("HN_BENCH_VTEPS", 1000);
    let pods = common::env_usize("HN_BENCH_PODS", 20_000);
    let node = common::node_namespace("hnb");
    let name = node.name.clone();

    let load_before = common::loadavg();
    let base = common::local_cluster(0, 0);
    let full = common::local_cluster(vteps, pods);
    let more = common::local_cluster(vteps, pods + 100);
    let runs = common::env_usize("HN_BENCH_RUNS", 3);
    let out = run_in_netns(&name, move |h| async move {
        let cfg = PlanConfig::default();
        let mut a = Applier::new(h.clone(), cfg.tables.clone(), NftRunner::default());
        let mut full_rows = Vec::new();
        let mut incr_rows = Vec::new();
        let mut rebuilt_rows = Vec::new();
        for _ in 0..runs {
            // Full path: every reconcile reads the host, plans from scratch, dumps and diffs
            // everything (the full resync; before per-object planning, every reconcile).
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
    println!("  load average after: {}", common::loadavg());
    Ok(())
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
    let c0 = common::cpu();
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
        cpu: common::cpu() - c0,
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

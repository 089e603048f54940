//! Benchmark: pods to network-ready in a lab of 4 nodes, for each runtime of the lab in the same
//! run: the lab kubelet creating sandboxes itself (`direct`) and containerd's CRI (`containerd`,
//! which needs the pause image of `scripts/images/build.sh images debug|release`).
//!
//! For each runtime it brings up a lab (unique id, always taken down, also on panic), creates the
//! demo networks and a probe pod, then creates `BENCH_PODS` pods (default 300; overlay spread by the scheduler over all
//! nodes, underlay on the underlay nodes) as fast as the API server takes them, and measures per
//! pod the time from its create request to
//! - Running: status Running with podIPs set (seen by a watch), and
//! - network-ready: Running and a ping from the probe pod's network namespace answered.
//!
//! Needs root and the workspace's binaries (`cargo build --workspace --bins`); the lab binary is
//! taken from the folder of the bench's profile or from `HYBRIDNET_LAB_BIN`.
//! Run: `cargo bench -p hybridnet-lab --bench pods --profile dev`; `BENCH_RUNTIMES=direct` (or
//! `containerd`) runs one runtime only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hybridnet_api::constants::label;
use hybridnet_api::v1::IPInstance;
use hybridnet_lab::kubelet::pod_netns;
use hybridnet_lab::state::LabDirs;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

const NODES: u32 = 4;
const UNDERLAY_NODES: u32 = 2;
/// The lab's underlay IPv4 subnet holds 100 addresses: stay well below.
const UNDERLAY_PODS: usize = 80;
const CREATE_CONCURRENCY: usize = 32;
const PING_CONCURRENCY: usize = 32;
const OVERALL_TIMEOUT: Duration = Duration::from_secs(300);
const PING_DEADLINE_SECS: &str = "30";

fn lab_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HYBRIDNET_LAB_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_hybridnet-lab"))
}

/// A lab that is always taken down, also when the bench panics.
struct Lab {
    id: String,
}

impl Lab {
    fn up(runtime: &str) -> anyhow::Result<Self> {
        let prefix = if runtime == "direct" { "b" } else { "c" };
        let id = format!("{prefix}{}", std::process::id() % 1000);
        let lab = Lab { id };
        let out = Command::new(lab_bin())
            .args([
                "--id",
                &lab.id,
                "up",
                "--nodes",
                &NODES.to_string(),
                "--underlay-nodes",
                &UNDERLAY_NODES.to_string(),
                "--runtime",
                runtime,
            ])
            .output()
            .with_context(|| format!("running {}", lab_bin().display()))?;
        if !out.status.success() {
            bail!(
                "lab up failed (logs in {}): {}",
                LabDirs::new(&lab.id).logs().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_bin())
            .args(["--id", &self.id, "down"])
            .output();
    }
}

fn pod_object(name: &str, network_type: &str, selector: serde_json::Value) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}, "annotations": {
            "networking.alibaba.com/network-type": network_type,
            "networking.alibaba.com/ip-family": "IPv4"}},
        "spec": {"nodeSelector": selector,
                 "containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"]}]}
    }))?)
}

/// One pod's way to network-ready, each step as this bench saw it (its watches add the same small
/// delay to every step).
#[derive(Default, Clone)]
struct Timing {
    /// The create request sent.
    created: Option<Instant>,
    /// The create request answered (the API server stored the pod).
    answered: Option<Instant>,
    /// spec.nodeName set (the lab scheduler).
    scheduled: Option<Instant>,
    /// The pod's first IPInstance written (the operator's IPAM).
    ip_written: Option<Instant>,
    /// Running with podIPs (the kubelet: sandbox, CNI ADD, status).
    running: Option<Instant>,
    /// A ping from the probe pod answered.
    ready: Option<Instant>,
    node: String,
    uid: String,
    ip: String,
    network_type: &'static str,
}

fn running_ip(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    if st.phase.as_deref() != Some("Running") {
        return None;
    }
    st.pod_ips.as_ref()?.first().map(|i| i.ip.clone())
}

async fn ping_until(netns: String, ip: String) -> bool {
    tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns,
            "ping",
            "-q",
            "-c1",
            "-i0.05",
            "-w",
            PING_DEADLINE_SECS,
            &ip,
        ])
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Each step's duration over the pods that made it (sorted), from the step before it.
fn stages(t: &HashMap<String, Timing>) -> Vec<(&'static str, Vec<Duration>)> {
    type Step = fn(&Timing) -> Option<Instant>;
    let steps: [(&str, Step, Step); 5] = [
        ("API: create answered", |e| e.created, |e| e.answered),
        ("scheduler: nodeName set", |e| e.answered, |e| e.scheduled),
        (
            "operator: IPInstance written",
            |e| e.scheduled,
            |e| e.ip_written,
        ),
        ("kubelet+CNI ADD: Running", |e| e.ip_written, |e| e.running),
        ("datapath: ping answered", |e| e.running, |e| e.ready),
    ];
    steps
        .iter()
        .map(|(what, from, to)| {
            // A watch can see a later step before an earlier one (two streams): count it as 0.
            let mut v: Vec<Duration> = t
                .values()
                .filter_map(|e| Some(to(e)?.saturating_duration_since(from(e)?)))
                .collect();
            v.sort();
            (*what, v)
        })
        .collect()
}

/// GET `path` from `port` on 127.0.0.1 in network namespace `netns`: the body.
async fn http_get_in(netns: &str, port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = hybridnet_lab::proxy::connect_in_netns(netns, target).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The node agents' own CNI ADD durations (their `cni_request_duration_seconds` histograms, all
/// nodes summed): how much of "kubelet+CNI ADD" the agent spent serving ADD.
async fn cni_add_durations(client: &kube::Client, dirs: &LabDirs) -> String {
    let Ok(params) = hybridnet_lab::cluster::LabParams::load(dirs) else {
        return "CNI ADD (agents): the lab's parameters are unreadable".into();
    };
    // The agents' metrics port, as the operator rendered it into the DaemonSet.
    let port = match hybridnet_lab::cluster::wait_for_agent_daemonset(
        client,
        Duration::from_secs(5),
    )
    .await
    {
        Ok(ds) => ds
            .spec
            .template
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.args)
            .unwrap_or_default()
            .iter()
            .find_map(|a| a.strip_prefix("--metrics-port=")?.parse::<u16>().ok())
            .unwrap_or(9101),
        Err(e) => return format!("CNI ADD (agents): no agent DaemonSet: {e:#}"),
    };
    let mut buckets: std::collections::BTreeMap<u64, f64> = Default::default();
    let (mut sum, mut count) = (0.0, 0.0);
    for h in params.layout().nodes() {
        let Ok(text) = http_get_in(&h.netns, port, "/metrics").await else {
            return format!("CNI ADD (agents): {}'s /metrics did not answer", h.netns);
        };
        for line in text.lines().filter(|l| {
            l.starts_with("hybridnet_node_cni_request_duration_seconds")
                && l.contains("command=\"ADD\"")
        }) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if key.contains("_sum{") {
                sum += value;
            } else if key.contains("_count{") {
                count += value;
            } else if let Some(le) = key.split("le=\"").nth(1).and_then(|r| r.split('"').next()) {
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                *buckets.entry(le.to_bits()).or_default() += value;
            }
        }
    }
    // Cumulative buckets: the bound of the first one holding the quantile.
    let mut bounds: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(b, n)| (f64::from_bits(*b), *n))
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let q = |p: f64| {
        bounds
            .iter()
            .find(|(_, n)| *n >= p * count)
            .map_or("?".to_string(), |(b, _)| {
                if b.is_finite() {
                    format!("<= {:.0} ms", b * 1000.0)
                } else {
                    "> the last bucket".into()
                }
            })
    };
    format!(
        "CNI ADD as the agents served it: {count:.0} requests, mean {:.0} ms, p50 {}, p99 {} \
         (histogram buckets)",
        if count > 0.0 {
            sum / count * 1000.0
        } else {
            0.0
        },
        q(0.5),
        q(0.99)
    )
}

/// What the kernel shows for a pod that does not answer: its namespace's addresses, routes and
/// neighbours, a ping from its own node, and the probe node's route to it.
async fn diagnose(lab_id: &str, dirs: &LabDirs, probe_ns: &str, e: &Timing) -> String {
    let run = |args: Vec<String>| async move {
        match tokio::process::Command::new("ip")
            .args(&args)
            .output()
            .await
        {
            Ok(o) => format!(
                "$ ip {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(err) => format!("$ ip {}: {err}\n", args.join(" ")),
        }
    };
    let ns = pod_netns(lab_id, &e.uid);
    let node_ns = hybridnet_lab::cluster::LabParams::load(dirs)
        .ok()
        .and_then(|p| {
            p.layout()
                .nodes()
                .find(|h| matches!(h.role, hybridnet_lab::topology::Role::Node(n) if format!("node{n}") == e.node))
                .map(|h| h.netns.clone())
        })
        .unwrap_or_default();
    let mut out = format!("--- {} pod on {} with {}\n", e.network_type, e.node, e.ip);
    for args in [
        vec!["-n", &ns, "-br", "addr"],
        vec!["-n", &ns, "route"],
        vec!["-n", &ns, "neigh"],
        vec!["-n", &node_ns, "route", "get", &e.ip],
        vec!["-n", &node_ns, "neigh", "show", &e.ip],
        vec!["netns", "exec", &node_ns, "ping", "-c1", "-W2", &e.ip],
        vec!["-n", probe_ns, "route", "get", &e.ip],
    ] {
        out.push_str(&run(args.into_iter().map(str::to_string).collect()).await);
    }
    out
}

/// CPU time (user + system, with reaped children: a CNI plugin run counts for the process that
/// ran it) of every process the lab supervises and of this bench, in clock ticks, and the
/// machine's busy and total ticks (/proc/stat).
struct CpuSnapshot {
    per: std::collections::BTreeMap<String, u64>,
    busy: u64,
    total: u64,
}

fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses: state is the first, utime the 12th.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.len() == 4).then(|| f.iter().sum())
}

fn cpu_snapshot(dirs: &LabDirs) -> CpuSnapshot {
    let mut per = std::collections::BTreeMap::new();
    for name in hybridnet_lab::supervisor::names(dirs) {
        if let Some(t) = hybridnet_lab::supervisor::pid(dirs, &name)
            .and_then(|pid| process_ticks(&pid.to_string()))
        {
            per.insert(name, t);
        }
    }
    if let Some(t) = process_ticks("self") {
        per.insert("this bench (watches, pings)".into(), t);
    }
    let (mut busy, mut total) = (0, 0);
    if let Some(line) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
    {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        total = v.iter().sum();
        // idle and iowait are the 4th and 5th.
        busy = total - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0);
    }
    CpuSnapshot { per, busy, total }
}

/// Where the CPU went between two snapshots: the machine's busy share and each process's seconds,
/// the agents of all nodes summed as one row besides their own.
fn cpu_report(before: &CpuSnapshot, after: &CpuSnapshot, wall: Duration) -> String {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let total = after.total.saturating_sub(before.total).max(1) as f64;
    let mut rows: Vec<(String, f64)> = after
        .per
        .iter()
        .map(|(name, t)| {
            let d = t.saturating_sub(before.per.get(name).copied().unwrap_or(0));
            (name.clone(), d as f64 / tick)
        })
        .collect();
    let agents: f64 = rows
        .iter()
        .filter(|(n, _)| n.starts_with("hybridnet-node-") || n.starts_with("cni-daemon-"))
        .map(|(_, s)| s)
        .sum();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out = format!(
        "CPU during the burst ({:.1} s wall, {cpus} CPUs): the machine was busy {:.0}% of the time, \
         {:.1} CPU-seconds in all\n\n| process | CPU s | share of the busy time |\n|---|--:|--:|\n",
        wall.as_secs_f64(),
        busy / total * 100.0,
        busy / tick
    );
    for (name, secs) in rows.iter().filter(|(_, s)| *s >= 0.05).take(14) {
        out.push_str(&format!(
            "| {name} | {secs:.2} | {:.0}% |\n",
            secs / (busy / tick).max(1e-9) * 100.0
        ));
    }
    out.push_str(&format!(
        "| (all node agents together) | {agents:.2} | {:.0}% |\n",
        agents / (busy / tick).max(1e-9) * 100.0
    ));
    out
}

/// One runtime's result.
struct Summary {
    runtime: String,
    n_pods: usize,
    ready: Vec<Duration>,
    running: Vec<Duration>,
    total: Duration,
}

async fn bench(lab: &Lab, runtime: &str, n_pods: usize) -> anyhow::Result<Summary> {
    let dirs = LabDirs::new(&lab.id);
    let client = hybridnet_lab::cluster::client_from(&dirs.host_kubeconfig()).await?;
    hybridnet_lab::demo::create_networks(&client, false).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The probe: every measured pod is pinged from here.
    pods.create(
        &PostParams::default(),
        &pod_object(
            "probe",
            "Overlay",
            json!({"kubernetes.io/hostname": "node1"}),
        )?,
    )
    .await
    .context("creating the probe pod")?;
    let probe_deadline = Instant::now() + Duration::from_secs(60);
    let probe_ns = loop {
        let p = pods.get("probe").await?;
        if running_ip(&p).is_some() {
            break pod_netns(&lab.id, p.metadata.uid.as_deref().unwrap_or_default());
        }
        if Instant::now() > probe_deadline {
            bail!("the probe pod is not Running after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let specs: Vec<(String, &'static str)> = (0..n_pods)
        .map(|i| {
            // Every fourth pod underlay until the underlay budget is used.
            if i % 4 == 3 && i / 4 < UNDERLAY_PODS {
                (format!("bench-u{i:03}"), "Underlay")
            } else {
                (format!("bench-o{i:03}"), "Overlay")
            }
        })
        .collect();
    let n_underlay = specs.iter().filter(|(_, t)| *t == "Underlay").count();
    let timings: Arc<Mutex<HashMap<String, Timing>>> = Arc::new(Mutex::new(
        specs
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    Timing {
                        network_type: t,
                        ..Timing::default()
                    },
                )
            })
            .collect(),
    ));

    // Watch first, so that no transition is missed.
    let wc = watcher::Config::default().labels("bench=pods");
    let mut stream = watcher(pods.clone(), wc).boxed();
    let pings = Arc::new(Semaphore::new(PING_CONCURRENCY));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watch_timings = timings.clone();
    let watch_probe = probe_ns.clone();
    let watch = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                continue;
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            let now = Instant::now();
            let mut t = watch_timings.lock().await;
            let Some(entry) = t.get_mut(&name) else {
                continue;
            };
            if entry.scheduled.is_none() && p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                entry.scheduled = Some(now);
            }
            let Some(ip) = running_ip(&p) else { continue };
            if entry.running.is_some() {
                continue;
            }
            entry.running = Some(now);
            entry.uid = p.metadata.uid.clone().unwrap_or_default();
            entry.ip = ip.clone();
            entry.node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let (timings, pings, ns, done) = (
                watch_timings.clone(),
                pings.clone(),
                watch_probe.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                let ok = match pings.acquire().await {
                    Ok(_permit) => ping_until(ns, ip).await,
                    Err(_) => false,
                };
                if ok && let Some(e) = timings.lock().await.get_mut(&name) {
                    e.ready = Some(Instant::now());
                }
                let _ = done.send(());
            });
        }
    });
    // The operator's part: when each pod's first IPInstance is written.
    let ipis: Api<IPInstance> = Api::namespaced(client.clone(), "default");
    let mut ip_stream = watcher(ipis, watcher::Config::default()).boxed();
    let ip_timings = timings.clone();
    let ip_watch = tokio::spawn(async move {
        while let Some(ev) = ip_stream.next().await {
            let Ok(watcher::Event::Apply(i) | watcher::Event::InitApply(i)) = ev else {
                continue;
            };
            let now = Instant::now();
            let Some(pod) = i.labels().get(label::POD).cloned() else {
                continue;
            };
            if let Some(e) = ip_timings.lock().await.get_mut(&pod) {
                e.ip_written.get_or_insert(now);
            }
        }
    });
    // Let the watches' initial lists finish before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cpu_before = cpu_snapshot(&dirs);
    let start = Instant::now();
    let create_results: Vec<anyhow::Result<()>> = futures::stream::iter(specs.iter().cloned())
        .map(|(name, network_type)| {
            let pods = pods.clone();
            let timings = timings.clone();
            async move {
                let selector = if network_type == "Underlay" {
                    json!({"network": "underlay"})
                } else {
                    json!({})
                };
                let obj = pod_object(&name, network_type, selector)?;
                let t0 = Instant::now();
                pods.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("creating pod {name}"))?;
                let answered = Instant::now();
                if let Some(e) = timings.lock().await.get_mut(&name) {
                    e.created = Some(t0);
                    e.answered = Some(answered);
                }
                Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let all_created = start.elapsed();
    let create_errors: Vec<String> = create_results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();

    // Wait until every created pod's ping has finished (answered or given up), bounded.
    let expected = n_pods - create_errors.len();
    let mut finished = 0;
    let deadline = tokio::time::Instant::now() + OVERALL_TIMEOUT;
    while finished < expected {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(())) => finished += 1,
            _ => break,
        }
    }
    watch.abort();
    ip_watch.abort();
    let cpu = cpu_report(&cpu_before, &cpu_snapshot(&dirs), start.elapsed());

    let t = timings.lock().await.clone();
    let mut running: Vec<Duration> = Vec::new();
    let mut ready: Vec<Duration> = Vec::new();
    let mut last_ready = start;
    let mut per_node: std::collections::BTreeMap<String, usize> = Default::default();
    let mut per_type: HashMap<&str, Vec<Duration>> = HashMap::new();
    for e in t.values() {
        let Some(c) = e.created else { continue };
        if let Some(r) = e.running {
            running.push(r - c);
            *per_node.entry(e.node.clone()).or_default() += 1;
        }
        if let Some(r) = e.ready {
            ready.push(r - c);
            per_type.entry(e.network_type).or_default().push(r - c);
            last_ready = last_ready.max(r);
        }
    }
    running.sort();
    ready.sort();
    let total = last_ready - start;

    println!(
        "\npods to network-ready: lab {}, runtime {runtime}, {NODES} nodes ({UNDERLAY_NODES} underlay)",
        lab.id
    );
    println!(
        "pods: {n_pods} ({} underlay, {} overlay, IPv4), create concurrency {CREATE_CONCURRENCY}",
        n_underlay,
        n_pods - n_underlay
    );
    println!("pods per node: {per_node:?}");
    println!("all create requests answered after {}", ms(all_created));
    println!();
    println!("| measure                          | count | p50      | p99      | max      |");
    println!("|----------------------------------|------:|---------:|---------:|---------:|");
    let row = |what: &str, v: &[Duration]| {
        println!(
            "| {what:<32} | {:>5} | {:>8} | {:>8} | {:>8} |",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v.last().copied().unwrap_or_default())
        );
    };
    row("create -> Running with podIPs", &running);
    row("create -> network-ready (ping)", &ready);
    for ty in ["Overlay", "Underlay"] {
        let mut v = per_type.get(ty).cloned().unwrap_or_default();
        v.sort();
        row(&format!("  {ty} network-ready"), &v);
    }
    println!();
    println!("where the time goes (per pod, each step from the one before):");
    println!();
    println!("| measure                          | count | p50      | p99      | max      |");
    println!("|----------------------------------|------:|---------:|---------:|---------:|");
    for (what, v) in stages(&t) {
        row(what, &v);
    }
    let adds = cni_add_durations(&client, &dirs).await;
    println!();
    println!("{adds}");
    println!();
    println!("{cpu}");
    let silent: Vec<&Timing> = t
        .values()
        .filter(|e| e.running.is_some() && e.ready.is_none())
        .collect();
    if !silent.is_empty() {
        println!();
        println!(
            "{} pods Running with an IP but no answer to the probe's ping within {PING_DEADLINE_SECS} s:",
            silent.len()
        );
        for e in silent.iter().take(3) {
            println!("{}", diagnose(&lab.id, &dirs, &probe_ns, e).await);
        }
    }
    println!();
    println!(
        "throughput: {} pods network-ready in {:.1} s = {:.1} pods/s (first create to last ready)",
        ready.len(),
        total.as_secs_f64(),
        ready.len() as f64 / total.as_secs_f64().max(1e-9)
    );
    if !create_errors.is_empty() {
        println!(
            "create errors ({}): {:?}",
            create_errors.len(),
            &create_errors[..create_errors.len().min(5)]
        );
    }
    Ok(Summary {
        runtime: runtime.to_string(),
        n_pods,
        ready,
        running,
        total,
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the binary without it, and a
    // 300-pod lab has no place in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pods bench: not run (run it with `cargo bench`)");
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP pods bench: needs root to create network namespaces");
        return Ok(());
    }
    let n_pods: usize = std::env::var("BENCH_PODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let runtimes = std::env::var("BENCH_RUNTIMES").unwrap_or_else(|_| "direct,containerd".into());
    let mut summaries = Vec::new();
    for runtime in runtimes.split(',').filter(|r| !r.is_empty()) {
        let lab = Lab::up(runtime)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        summaries.push(rt.block_on(bench(&lab, runtime, n_pods))?);
        drop(rt);
        drop(lab);
    }
    println!("\nsame run, {n_pods} pods on {NODES} nodes:");
    println!("| runtime    | network-ready | p50 Running | p50 ready | p99 ready | pods/s |");
    println!("|------------|--------------:|------------:|----------:|----------:|-------:|");
    for s in &summaries {
        println!(
            "| {:<10} | {:>13} | {:>11} | {:>9} | {:>9} | {:>6.1} |",
            s.runtime,
            format!("{}/{}", s.ready.len(), s.n_pods),
            ms(percentile(&s.running, 50.0)),
            ms(percentile(&s.ready, 50.0)),
            ms(percentile(&s.ready, 99.0)),
            s.ready.len() as f64 / s.total.as_secs_f64().max(1e-9)
        );
    }
    if summaries.iter().any(|s| s.ready.len() != s.n_pods) {
        bail!("not every pod became network-ready");
    }
    Ok(())
}

//! Benchmark: NetworkPolicy at scale in the lab (docs/benchmarks.md, "Lab: NetworkPolicy").
//!
//! Brings up a lab of 4 nodes (unique id, always taken down), creates 1,000 IPv4 overlay pods
//! (`BENCH_PODS`) spread by the scheduler over the nodes in ten namespaces, and 200 NetworkPolicies
//! (selectors, namespace selectors, ipBlocks, named ports, port ranges, egress rules). Then:
//!
//! - enforcement latency: `BENCH_ITER` (default 30) times a policy is created, and as often one is
//!   updated, that opens TCP port 80 of four isolated target pods (one per node) to a probe pod;
//!   the time from the API request until a connection from the probe's network namespace reaches
//!   every target (tries of 10 ms, back to back) is the time until the change is enforced on
//!   every node. Between runs the change is undone and the targets are seen blocked again.
//! - the size of each node's table (`nft -j list table inet hybridnet_policy`): rules, set and map
//!   elements;
//! - iperf3 between two pods on different nodes whose egress and ingress are decided by five and
//!   ten policies (the allowing rule in the last), with the 200 policies against none, in the same
//!   run, interleaved: none, with, none, with, ..., none (`BENCH_ROUNDS`, default 9, runs with the
//!   policies; 3 s each after a 1 s warm-up that is not counted, each once no agent programmed
//!   anything for 2 s). Each run with the policies is
//!   compared with the mean of the runs without them just before and after it (so a drift of the
//!   machine's load cancels out), and the median of those ratios is reported.
//!
//! Each timed change is printed with its wall-clock start (UTC), to find it in the agents' logs
//! (each logs its passes with their phases); `BENCH_LOGS=DIR` keeps a copy of the lab's logs.
//!
//! Needs root, iperf3 and the workspace's binaries (`cargo build --workspace --bins`).
//! Run: `cargo bench -p hybridnet-lab --bench netpol --profile dev` (or release binaries).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the failure report

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::Lab;
use common::perf::{self, env_usize, median, percentile};
use futures::StreamExt;
use hybridnet_lab::kubelet::pod_netns;
use hybridnet_test_support::paced::spawn_in_netns;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NODES: u32 = 4;
const NAMESPACES: usize = 10;
const POLICIES: usize = 200;
/// One try of a probe while waiting for a change; tries follow each other at once.
const TRY: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_secs(30);

fn pod(ns: &str, name: &str, labels: Value, node: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"],
        "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]});
    if let Some(n) = node {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": n});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": {
            "networking.alibaba.com/network-type": "Overlay",
            "networking.alibaba.com/ip-family": "IPv4"}},
        "spec": spec,
    }))
    .unwrap()
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn ns_is(n: &str) -> Value {
    json!({"matchLabels": {"kubernetes.io/metadata.name": n}})
}

fn app(a: &str) -> Value {
    json!({"matchLabels": {"app": a}})
}

/// The 200 policies: 10 isolating the iperf server and 5 its client (the allowing rule in the
/// last one of each), one isolating the latency targets, the rest over the bulk namespaces.
fn policies() -> Vec<Value> {
    let mut v = vec![];
    for k in 0..10 {
        let from = if k == 9 {
            json!([{"podSelector": app("iperf-client")}])
        } else {
            json!([{"namespaceSelector": ns_is(&format!("b{k}"))}, {"ipBlock": {"cidr": "198.19.0.0/16", "except": ["198.19.1.0/24"]}}])
        };
        v.push(policy(
            "perf",
            &format!("server-{k}"),
            json!({"podSelector": app("iperf-server"), "ingress": [
                {"from": from, "ports": [{"port": 5201}]},
                {"from": [{"podSelector": app(&format!("nobody-{k}"))}], "ports": [{"port": 8000, "endPort": 8100}, {"port": "http"}]}]}),
        ));
    }
    for k in 0..5 {
        let to = if k == 4 {
            json!([{"podSelector": app("iperf-server")}])
        } else {
            json!([{"ipBlock": {"cidr": format!("203.0.113.{}/32", k)}}])
        };
        v.push(policy(
            "perf",
            &format!("client-{k}"),
            json!({"podSelector": app("iperf-client"), "policyTypes": ["Egress"], "egress": [
                {"to": to, "ports": [{"port": 5201}]},
                {"to": [{"namespaceSelector": ns_is("kube-system")}], "ports": [{"port": 53, "protocol": "UDP"}]}]}),
        ));
    }
    v.push(policy(
        "lat",
        "base",
        json!({"podSelector": {"matchLabels": {"role": "target"}}, "policyTypes": ["Ingress"]}),
    ));
    let mut j = 0;
    while v.len() < POLICIES {
        let ns = j % NAMESPACES;
        let l = (j / NAMESPACES) % 20;
        let mut spec = json!({"podSelector": app(&format!("a{l}")), "ingress": [
            {"from": [{"podSelector": app(&format!("a{}", (l + 1) % 20))},
                      {"namespaceSelector": ns_is(&format!("b{}", (ns + 3) % NAMESPACES)), "podSelector": app(&format!("a{l}"))},
                      {"ipBlock": {"cidr": "198.18.64.0/20", "except": [format!("198.18.{}.0/24", 64 + l)]}}],
             "ports": [{"port": 80}, {"port": "http"}, {"port": 8000, "endPort": 8100}, {"port": 53, "protocol": "UDP"}]}]});
        if j % 3 == 0 {
            spec["egress"] = json!([{"to": [{"podSelector": app(&format!("a{}", (l + 2) % 20))}], "ports": [{"port": 53, "protocol": "UDP"}]}]);
        }
        v.push(policy(&format!("b{ns}"), &format!("p{j}"), spec));
        j += 1;
    }
    v
}

/// Applies a policy; returns its resourceVersion.
async fn apply(client: &kube::Client, np: &Value) -> String {
    let ns = np["metadata"]["namespace"].as_str().unwrap();
    let name = np["metadata"]["name"].as_str().unwrap();
    Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("netpol-bench").force(),
            &Patch::Apply(np),
        )
        .await
        .unwrap_or_else(|e| panic!("policy {ns}/{name}: {e}"))
        .metadata
        .resource_version
        .unwrap_or_default()
}

/// The wall clock as `HH:MM:SS.mmm` UTC (to find a run in the agents' logs).
fn wall() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = t.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_millis()
    )
}

async fn delete_policy(client: &kube::Client, ns: &str, name: &str) {
    Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting policy {ns}/{name}: {e}"));
}

/// Waits until every pod of the namespaces runs with an address: name -> (netns, IPv4).
async fn running(
    client: &kube::Client,
    lab_id: &str,
    namespaces: &[String],
    want: usize,
) -> BTreeMap<String, (String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut out = BTreeMap::new();
        for ns in namespaces {
            let list = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .unwrap();
            for p in list.items {
                let st = p.status.clone().unwrap_or_default();
                let ip = st.pod_ips.unwrap_or_default().first().map(|i| i.ip.clone());
                if let (Some("Running"), Some(ip)) = (st.phase.as_deref(), ip) {
                    out.insert(
                        format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default()),
                        (
                            pod_netns(lab_id, p.metadata.uid.as_deref().unwrap_or_default()),
                            ip,
                            p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                        ),
                    );
                }
            }
        }
        if out.len() >= want {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} pods run after 600 s",
            out.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// From `netns`, connects to every target until each answered once (tries of [`TRY`]): the time
/// from `t0` until the last one answered. Started before the change it waits for.
fn reach_all(
    netns: &str,
    targets: Vec<SocketAddr>,
    t0: std::sync::mpsc::Receiver<Instant>,
) -> std::thread::JoinHandle<Result<Duration, String>> {
    spawn_in_netns(Some(netns), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let t0 = t0.recv().map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let done = futures::future::join_all(targets.iter().map(|a| async move {
                loop {
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(TRY, tokio::net::TcpStream::connect(a)).await
                    {
                        return Ok(Instant::now());
                    }
                    if t0.elapsed() > LIMIT {
                        return Err(format!("{a} not reached {LIMIT:?} after the change"));
                    }
                }
            }))
            .await;
            let mut last = t0;
            for d in done {
                last = last.max(d?);
            }
            Ok(last - t0)
        })
    })
}

/// Waits until no target answers (two rounds of 300 ms tries in a row).
fn wait_blocked(netns: &str, targets: Vec<SocketAddr>) {
    spawn_in_netns(Some(netns), move || {
        let deadline = Instant::now() + LIMIT;
        let mut quiet = 0;
        while quiet < 2 {
            let open = targets.iter().any(|a| {
                std::net::TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok()
            });
            quiet = if open { 0 } else { quiet + 1 };
            if Instant::now() > deadline {
                return Err("targets still open 30 s after the change was undone".to_string());
            }
        }
        Ok(())
    })
    .join()
    .unwrap()
    .unwrap();
}

async fn timed_change<F, Fut>(netns: &str, targets: &[SocketAddr], change: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let h = reach_all(netns, targets.to_vec(), rx);
    tx.send(Instant::now()).unwrap();
    change().await;
    tokio::task::spawn_blocking(move || h.join().unwrap())
        .await
        .unwrap()
        .unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// (rules, set elements, map elements) of a node's policy table.
fn table_size(lab_id: &str, node: u32) -> (usize, usize, usize) {
    let out = hybridnet_test_support::sh(&[
        "ip",
        "netns",
        "exec",
        &format!("hl{lab_id}-node{node}"),
        "nft",
        "-j",
        "list",
        "table",
        "inet",
        "hybridnet_policy",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let (mut rules, mut set_elems, mut map_elems) = (0, 0, 0);
    for item in v["nftables"].as_array().unwrap() {
        if item.get("rule").is_some() {
            rules += 1;
        }
        if let Some(s) = item.get("set") {
            set_elems += s["elem"].as_array().map_or(0, Vec::len);
        }
        if let Some(m) = item.get("map") {
            map_elems += m["elem"].as_array().map_or(0, Vec::len);
        }
    }
    (rules, set_elems, map_elems)
}

/// iperf3 from the client pod to the server pod (3 s): received bits per second.
fn iperf(client_ns: &str, server_ip: &str) -> f64 {
    let v = perf::iperf3(client_ns, server_ip, &["-t", "3", "-O", "1"]).unwrap();
    let bits = perf::received_bits(&v);
    assert!(bits.is_finite(), "no throughput in {v}");
    bits
}

/// The agent's `hybridnet_node_policy_programming_duration_seconds` (sum, count) on a node: its
/// time from a watch event until its table enforces it. The agent serves metrics on the port the
/// operator renders by default (operator/src/lifecycle/settings.rs, `DEFAULT_METRICS_PORT`).
async fn programming(netns: &str) -> Option<(f64, f64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = hybridnet_lab::proxy::connect_in_netns(netns, ([127, 0, 0, 1], 9101).into())
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("hybridnet_node_policy_programming_duration_seconds_sum ")?,
        value("hybridnet_node_policy_programming_duration_seconds_count ")?,
    ))
}

/// Waits until no node agent programmed anything for 2 s (at most 60 s), so an iperf3 run does
/// not share the 2 cores with the agents still working through a burst of 200 policy changes
/// (that would measure CPU contention on the shared machine, not the per-packet path).
async fn settle(lab_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = || async {
        let mut v = vec![];
        for n in 1..=NODES {
            v.push(
                programming(&format!("hl{lab_id}-node{n}"))
                    .await
                    .map(|(_, c)| c),
            );
        }
        v
    };
    let mut last = counts().await;
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = counts().await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

fn gbit(runs: &[f64]) -> String {
    let s: Vec<String> = runs.iter().map(|b| format!("{:.2}", b / 1e9)).collect();
    s.join(" / ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !hybridnet_test_support::require_root("netpol bench") {
        return;
    }
    let n_pods = env_usize("BENCH_PODS", 1000);
    let iterations = env_usize("BENCH_ITER", 30);
    let started = Instant::now();
    let lab = Lab::up("n", NODES, 2, 0);
    let dirs = lab.dirs();
    let client = hybridnet_lab::cluster::client_from(&dirs.host_kubeconfig())
        .await
        .unwrap();
    hybridnet_lab::demo::create_networks(&client, false)
        .await
        .unwrap();
    let mut nss: Vec<String> = (0..NAMESPACES).map(|i| format!("b{i}")).collect();
    nss.extend(["lat".into(), "perf".into()]);
    for ns in &nss {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }
    // the special pods: four latency targets (one per node), the probe, the iperf pair
    let mut pods = vec![
        pod("lat", "probe", json!({"app": "probe"}), Some("node1")),
        pod(
            "perf",
            "server",
            json!({"app": "iperf-server"}),
            Some("node2"),
        ),
        pod(
            "perf",
            "client",
            json!({"app": "iperf-client"}),
            Some("node3"),
        ),
    ];
    for n in 1..=NODES {
        pods.push(pod(
            "lat",
            &format!("t{n}"),
            json!({"role": "target"}),
            Some(&format!("node{n}")),
        ));
    }
    let bulk = n_pods.saturating_sub(pods.len());
    for i in 0..bulk {
        let ns = i % NAMESPACES;
        pods.push(pod(
            &format!("b{ns}"),
            &format!("p{i}"),
            json!({"app": format!("a{}", (i / NAMESPACES) % 20)}),
            None,
        ));
    }
    let total = pods.len();
    let t = Instant::now();
    futures::stream::iter(pods)
        .for_each_concurrent(32, |p| {
            let client = client.clone();
            async move {
                let ns = p.metadata.namespace.clone().unwrap();
                Api::<Pod>::namespaced(client, &ns)
                    .create(&PostParams::default(), &p)
                    .await
                    .unwrap();
            }
        })
        .await;
    let all = running(&client, &lab.id, &nss, total).await;
    eprintln!("netpol bench: {total} pods running in {:?}", t.elapsed());

    let (probe_ns, _, _) = all["lat/probe"].clone();
    let targets: Vec<SocketAddr> = (1..=NODES)
        .map(|n| SocketAddr::new(all[&format!("lat/t{n}")].1.parse().unwrap(), 80))
        .collect();
    for n in 1..=NODES {
        let ns = all[&format!("lat/t{n}")].0.clone();
        spawn_in_netns(Some(&ns), move || {
            let l = TcpListener::bind("0.0.0.0:80").map_err(|e| e.to_string())?;
            std::thread::spawn(move || for _c in l.incoming() {});
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
    }
    let (server_ns, server_ip, _) = all["perf/server"].clone();
    let (client_ns, _, _) = all["perf/client"].clone();
    let server = perf::Iperf3Server::start(&server_ns);
    // the server listens once a client gets through
    perf::iperf3(&client_ns, &server_ip, &["-t", "1"]).unwrap();

    // Rounds of: iperf3 without policies, the 200 policies created, iperf3 with them, (in the
    // last round the latency runs and the table sizes), all policies deleted; then iperf3 once
    // more without policies.
    let open = |name: &str, port: u16| {
        policy(
            "lat",
            name,
            json!({"podSelector": {"matchLabels": {"role": "target"}},
                   "ingress": [{"from": [{"podSelector": app("probe")}], "ports": [{"port": port}]}]}),
        )
    };
    let rounds = env_usize("BENCH_ROUNDS", 9);
    let (mut none, mut with) = (vec![], vec![]);
    let (mut creates, mut updates, mut sizes, mut agent_means) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        settle(&lab.id).await;
        none.push(iperf(&client_ns, &server_ip));
        let t = Instant::now();
        for np in &policies() {
            apply(&client, np).await;
        }
        eprintln!(
            "netpol bench: {POLICIES} policies created in {:?}",
            t.elapsed()
        );
        wait_blocked(&probe_ns, targets.clone());
        // the probe may not reach the iperf server: its policies are in force on node2
        wait_blocked(
            &probe_ns,
            vec![SocketAddr::new(server_ip.parse().unwrap(), 5201)],
        );
        settle(&lab.id).await;
        with.push(iperf(&client_ns, &server_ip));
        let mut extra = vec![];
        if round + 1 == rounds {
            // enforcement latency: create, then update, a policy that opens the targets to the
            // probe
            let mut agent0 = vec![];
            for n in 1..=NODES {
                agent0.push(programming(&format!("hl{}-node{n}", lab.id)).await);
            }
            for k in 0..iterations {
                let name = format!("open-{k}");
                let np = open(&name, 80);
                let at = wall();
                let d = timed_change(&probe_ns, &targets, || async {
                    apply(&client, &np).await;
                })
                .await;
                eprintln!("netpol bench: create {name} at {at}: {}", ms(d));
                creates.push(d);
                delete_policy(&client, "lat", &name).await;
                wait_blocked(&probe_ns, targets.clone());
            }
            apply(&client, &open("upd", 81)).await;
            extra.push(open("upd", 81));
            for k in 0..iterations {
                let np = open("upd", 80);
                let at = wall();
                let d = timed_change(&probe_ns, &targets, || async {
                    apply(&client, &np).await;
                })
                .await;
                eprintln!("netpol bench: update {k} at {at}: {}", ms(d));
                updates.push(d);
                apply(&client, &open("upd", 81)).await;
                wait_blocked(&probe_ns, targets.clone());
            }
            sizes = (1..=NODES).map(|n| table_size(&lab.id, n)).collect();
            for (n, before) in (1..=NODES).zip(agent0) {
                let after = programming(&format!("hl{}-node{n}", lab.id)).await;
                agent_means.push(match (before, after) {
                    (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => {
                        format!("{:.0} ms", 1000.0 * (s1 - s0) / (c1 - c0))
                    }
                    _ => "n/a".to_string(),
                });
            }
        }
        for np in policies().iter().chain(&extra) {
            delete_policy(
                &client,
                np["metadata"]["namespace"].as_str().unwrap(),
                np["metadata"]["name"].as_str().unwrap(),
            )
            .await;
        }
        // the targets answer again once every node dropped its policies
        timed_change(&probe_ns, &targets, || async {}).await;
    }
    settle(&lab.id).await;
    none.push(iperf(&client_ns, &server_ip));
    if let Ok(keep) = std::env::var("BENCH_LOGS") {
        // the agents' logs (the lab's are removed with it)
        let _ = std::fs::create_dir_all(&keep);
        for e in std::fs::read_dir(dirs.logs())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::copy(e.path(), std::path::Path::new(&keep).join(e.file_name()));
        }
    }
    drop(server);
    let per_node: Vec<usize> = (1..=NODES)
        .map(|n| {
            all.values()
                .filter(|(_, _, node)| *node == format!("node{n}"))
                .count()
        })
        .collect();

    creates.sort();
    updates.sort();
    println!(
        "\nnetpol bench: {total} pods on {NODES} nodes (per node {per_node:?}), {POLICIES} policies"
    );
    for (what, v) in [("create", &creates), ("update", &updates)] {
        println!(
            "  {what} -> enforced on every node ({} runs): p50 {}, p99 {}, max {}",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(*v.last().unwrap())
        );
    }
    println!(
        "  node agents over those runs (each change and its undoing), mean time from a watch event to the table in force, node1..{NODES}: {}",
        agent_means.join(", ")
    );
    for (n, (rules, sets, maps)) in sizes.iter().enumerate() {
        println!(
            "  node{}: {rules} rules, {sets} set elements, {maps} verdict-map elements",
            n + 1
        );
    }
    // each run with the policies against the runs without them just before and after it
    let ratios: Vec<f64> = with
        .iter()
        .enumerate()
        .map(|(i, w)| 100.0 * w / ((none[i] + none[i + 1]) / 2.0))
        .collect();
    let pct: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
    println!(
        "  iperf3 node3 -> node2 (Gbit/s, 3 s runs, interleaved none/with): no policy {}; 200 policies {}",
        gbit(&none),
        gbit(&with),
    );
    println!(
        "  with/without per run (%, against the mean of its neighbours): {}; median {:.1}%; median of runs with / median of runs without {:.1}%",
        pct.join(" / "),
        median(&ratios),
        100.0 * median(&with) / median(&none)
    );
    println!("  total {:?}", started.elapsed());
}

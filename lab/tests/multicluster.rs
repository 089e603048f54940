//! Two clusters in one lab (`hybridnet-lab up --clusters 2`), joined by the real `kubectl
//! hybridnet cluster connect` from two kubeconfig contexts: pods of every kind (overlay, VLAN
//! underlay, BGP underlay) reach the other cluster's pods over IPv4 and IPv6 with their own source
//! address, and a global Service's endpoints in one cluster appear in the other's Service of that
//! name; then each change converges on the nodes (routes, FDB and neighbour entries of the
//! VXLAN device), with nothing stale left: a remote subnet added and removed, the remote API
//! server stopped and continued (the RemoteCluster turns Offline and Ready again, nothing local
//! changes meanwhile), a remote node that leaves, and `cluster disconnect`. The time each change
//! took to reach every node is printed (docs/benchmarks.md). Needs root; under CI=true it must run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Lab, kubectl_status, lab_bin, pings, source_seen};
use hybridnet_api::constants::annotation;
use hybridnet_api::multicluster::global_service::{LABEL_MANAGED_BY, LABEL_SERVICE_NAME};
use hybridnet_api::multicluster::{RemoteCluster, RemoteEndpointSlice, RemoteSubnet, RemoteVtep};
use hybridnet_api::v1::Subnet;
use hybridnet_lab::demo::DemoPod;
use hybridnet_lab::state::LabDirs;
use hybridnet_lab::topology::{self, Layout};
use hybridnet_test_support::{eventually, require_root};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

/// Generous bound for anything to converge under a loaded CI machine (the operators check their
/// RemoteClusters every `REMOTE_CHECK_SECONDS`).
const CONVERGE: Duration = Duration::from_secs(120);

/// The VXLAN device of the lab's overlay network (VNI 4 on eth0).
const VXLAN: &str = "eth0.vxlan4";

/// One cluster of the lab as the test sees it.
struct Side {
    cluster: u32,
    name: String,
    client: kube::Client,
    layout: Layout,
    /// Pod name -> (uid, addresses).
    pods: BTreeMap<String, (String, Vec<String>)>,
    /// The ranges of this cluster: the segment, overlay, BGP and extra subnets, BGP links.
    ranges: Vec<(IpAddr, u8)>,
}

impl Side {
    fn pod_ns(&self, lab: &Lab, pod: &str) -> String {
        hybridnet_lab::kubelet::pod_netns(&lab.id, &self.pods[pod].0)
    }

    fn node_namespaces(&self) -> Vec<String> {
        self.layout.nodes().map(|h| h.netns.clone()).collect()
    }
}

fn cidr(s: &str) -> (IpAddr, u8) {
    let (ip, len) = s.split_once('/').unwrap();
    (ip.parse().unwrap(), len.parse().unwrap())
}

fn contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// An extra overlay subnet the test adds to (and removes from) cluster 1.
const EXTRA_V4: &str = "198.18.96.0/24";

/// The address ranges that belong to cluster `c` of a lab with one BGP node per cluster.
fn ranges_of(c: u32) -> Vec<(IpAddr, u8)> {
    let net = topology::cluster_net(c);
    let mut v = vec![
        cidr(&format!("{}.0/24", net.segment_v4)),
        cidr(&format!("{}/64", net.segment_v6)),
        cidr(net.overlay_v4),
        cidr(net.overlay_v6),
        cidr(net.bgp_v4),
        cidr(net.bgp_v6),
        // The cluster's BGP node's routed link (link c: one BGP node per cluster).
        cidr(&format!("{}.{}/31", topology::ROUTED_V4, 2 * c)),
        cidr(&format!("{}:{:x}::/64", topology::ROUTED_V6, c + 1)),
    ];
    if c == 1 {
        v.push(cidr(EXTRA_V4));
    }
    v
}

/// Whether a line of `ip`/`bridge` output names an address in `ranges`.
fn mentions(line: &str, ranges: &[(IpAddr, u8)]) -> bool {
    line.split_whitespace()
        .filter_map(|t| t.split('/').next()?.parse::<IpAddr>().ok())
        .any(|ip| ranges.iter().any(|r| contains(*r, ip)))
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a node holds that a remote cluster could add: every route of every table, the VXLAN
/// device's FDB and its permanent neighbour entries, one line each, sorted.
fn snapshot(ns: &str) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for (what, args) in [
        (
            "route4",
            vec!["ip", "-n", ns, "-4", "route", "show", "table", "all"],
        ),
        (
            "route6",
            vec!["ip", "-n", ns, "-6", "route", "show", "table", "all"],
        ),
        ("fdb", vec!["bridge", "-n", ns, "fdb", "show", "dev", VXLAN]),
        (
            "neigh",
            vec![
                "ip",
                "-n",
                ns,
                "neigh",
                "show",
                "dev",
                VXLAN,
                "nud",
                "permanent",
            ],
        ),
    ] {
        for line in run(&args).lines() {
            let line = line.trim();
            if !line.is_empty() {
                v.insert(format!("{ns} {what}: {line}"));
            }
        }
    }
    v
}

fn snapshot_all(side: &Side) -> BTreeSet<String> {
    side.node_namespaces()
        .iter()
        .flat_map(|ns| snapshot(ns))
        .collect()
}

/// The lines of `snap` that name an address of the other cluster.
fn remote_lines(snap: &BTreeSet<String>, other: &Side) -> BTreeSet<String> {
    snap.iter()
        .filter(|l| mentions(l.split_once(": ").map_or("", |x| x.1), &other.ranges))
        .cloned()
        .collect()
}

fn local_lines(snap: &BTreeSet<String>, other: &Side) -> BTreeSet<String> {
    snap.difference(&remote_lines(snap, other))
        .cloned()
        .collect()
}

/// Runs the real kubectl with the workspace's plugin in the lab's outside host, against the
/// kubeconfig with both clusters' contexts (servers inside the lab, as `cluster connect` writes
/// them into the RemoteClusters).
fn kubectl_in_lab(lab: &Lab, layout: &Layout, args: &[&str]) -> String {
    let (ok, text) = try_kubectl_in_lab(lab, layout, args);
    assert!(ok, "kubectl {args:?} failed: {text}");
    text
}

fn try_kubectl_in_lab(lab: &Lab, layout: &Layout, args: &[&str]) -> (bool, String) {
    let bin_dir = lab_bin().parent().unwrap().to_path_buf();
    let out = Command::new("ip")
        .args(["netns", "exec", &layout.outside.netns, "kubectl"])
        .args(args)
        .env("KUBECONFIG", lab.dirs().clusters_kubeconfig())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn state_of(client: &kube::Client, name: &str) -> Result<String, String> {
    let api: Api<RemoteCluster> = Api::all(client.clone());
    let rc = api
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no RemoteCluster {name}"))?;
    Ok(rc.status.and_then(|s| s.state).unwrap_or_default())
}

async fn wait_state(side: &Side, rc: &str, want: impl Fn(&str) -> bool, what: &str) -> String {
    eventually(
        &format!("RemoteCluster {rc} in {} {what}", side.name),
        CONVERGE,
        || async {
            let s = state_of(&side.client, rc).await?;
            if want(&s) { Ok(s) } else { Err(s) }
        },
    )
    .await
}

async fn mirror_names(client: &kube::Client) -> (Vec<String>, Vec<String>) {
    let subnets: Api<RemoteSubnet> = Api::all(client.clone());
    let vteps: Api<RemoteVtep> = Api::all(client.clone());
    let names = |items: Vec<Option<String>>| {
        let mut v: Vec<String> = items.into_iter().flatten().collect();
        v.sort();
        v
    };
    (
        names(
            subnets
                .list(&Default::default())
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata.name).collect())
                .unwrap_or_default(),
        ),
        names(
            vteps
                .list(&Default::default())
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata.name).collect())
                .unwrap_or_default(),
        ),
    )
}

/// Waits until `check` holds for the snapshot of every node of `side`; returns how long it took
/// since `since`.
async fn converge(
    side: &Side,
    since: Instant,
    what: &str,
    check: impl Fn(&BTreeSet<String>) -> Result<(), String>,
) -> Duration {
    eventually(what, CONVERGE, || {
        let r = check(&snapshot_all(side));
        std::future::ready(r)
    })
    .await;
    let took = since.elapsed();
    eprintln!("convergence: {what}: {:.1} s", took.as_secs_f64());
    took
}

/// Every node of `side` holds, for every node of `other` that still runs, the FDB entry to its
/// VTEP and, for each of `other`'s pod addresses, a permanent neighbour entry; and the routes to
/// `other`'s overlay subnets.
fn programmed(snap: &BTreeSet<String>, side: &Side, other: &Side) -> Result<(), String> {
    for ns in side.node_namespaces() {
        let has = |what: &str, needle: &str| {
            snap.iter().any(|l| {
                l.starts_with(&format!("{ns} {what}: "))
                    && l.split_whitespace().any(|t| t == needle)
            })
        };
        let net = topology::cluster_net(other.cluster);
        for (what, cidr) in [("route4", net.overlay_v4), ("route6", net.overlay_v6)] {
            if !has(what, cidr) {
                return Err(format!("{ns}: no {what} to {cidr}"));
            }
        }
        for h in other.layout.nodes() {
            let ip = h.ip4().unwrap();
            if !has("fdb", ip) {
                return Err(format!("{ns}: no FDB entry to VTEP {ip}"));
            }
        }
        for (pod, (_, ips)) in &other.pods {
            for ip in ips {
                if !has("neigh", ip) {
                    return Err(format!("{ns}: no neighbour entry for {pod} {ip}"));
                }
            }
        }
    }
    Ok(())
}

/// Whether every node of `side` routes [`EXTRA_V4`] into the VXLAN device (table 40000) as `want`.
fn routes_extra(snap: &BTreeSet<String>, side: &Side, want: bool) -> Result<(), String> {
    for ns in side.node_namespaces() {
        let route = format!("{ns} route4: {EXTRA_V4} dev {VXLAN} table 40000");
        if snap.iter().any(|l| l.starts_with(&route)) != want {
            return Err(format!(
                "{ns}: route to {EXTRA_V4} in table 40000 is not {want}"
            ));
        }
    }
    Ok(())
}

/// The EndpointSlice of c1's global Service `web`, and its name as mirrored and imported in c0
/// (`<cluster>.<namespace>.<slice>`, docs/multicluster.md, Global services).
const WEB_SLICE: &str = "web-abc";
const IMPORTED_SLICE: &str = "c1.default.web-abc";

/// Creates Service `default/web` annotated as a global service and, with `endpoint`, the
/// EndpointSlice kube-controller-manager would make for it (the lab has no controller manager).
async fn global_service(client: &kube::Client, endpoint: Option<&str>) {
    let pp = PostParams::default();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default",
                     "annotations": {annotation::GLOBAL_SERVICE: "true"}},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &svc)
        .await
        .unwrap();
    if let Some(addr) = endpoint {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": WEB_SLICE, "namespace": "default", "labels": {
                LABEL_SERVICE_NAME: "web",
                LABEL_MANAGED_BY: "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addr], "conditions": {"ready": true}, "nodeName": "node1"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .create(&pp, &slice)
            .await
            .unwrap();
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

fn side_pods(c: u32) -> Vec<DemoPod> {
    let pod = |name, node: &str, network_type| DemoPod {
        name,
        node: node.to_string(),
        network_type,
    };
    // Node 1 is in the VLAN underlay network, node 3 the BGP node; in cluster 1 a pod on node 2
    // leaves with its node.
    match c {
        0 => vec![
            pod("ov0", "node2", "Overlay"),
            pod("ul0", "node1", "Underlay"),
            pod("bgp0", "node3", "Underlay"),
        ],
        _ => vec![
            pod("ov1", "node1", "Overlay"),
            pod("ul1", "node1", "Underlay"),
            pod("bgp1", "node3", "Underlay"),
            pod("leaver", "node2", "Overlay"),
        ],
    }
}

async fn side(dirs: &LabDirs, c: u32) -> Side {
    let cdirs = dirs.cluster(c);
    let params = hybridnet_lab::cluster::LabParams::load(&cdirs).unwrap();
    let client = hybridnet_lab::cluster::client_from(&cdirs.host_kubeconfig())
        .await
        .unwrap();
    hybridnet_lab::demo::create_networks_in(&client, params.net(), true)
        .await
        .unwrap();
    let pods = hybridnet_lab::demo::create_pods(&client, &side_pods(c))
        .await
        .unwrap();
    for (name, (_, ips)) in &pods {
        assert_eq!(ips.len(), 2, "{name} is dual stack: {ips:?}");
    }
    Side {
        cluster: c,
        name: topology::cluster_name(c),
        client,
        layout: params.layout(),
        pods,
        ranges: ranges_of(c),
    }
}

/// One ping (1 s): a probe inside a wait loop, which retries by itself.
fn ping_once(from_ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from_ns, "ping", "-c1", "-W1", to])
        .output()
        .unwrap()
        .status
        .success()
}

/// Pings from every pod of `from` to every address of every pod of `to` until all answer.
async fn all_reach(lab: &Lab, from: &Side, to: &Side, skip: &[&str]) {
    let mut pairs = Vec::new();
    for f in from.pods.keys().filter(|p| !skip.contains(&p.as_str())) {
        for (t, (_, ips)) in to.pods.iter().filter(|(p, _)| !skip.contains(&p.as_str())) {
            for ip in ips {
                pairs.push((from.pod_ns(lab, f), format!("{f} -> {t} {ip}"), ip.clone()));
            }
        }
    }
    eventually(
        &format!(
            "every pod of {} reaching every pod of {}",
            from.name, to.name
        ),
        CONVERGE,
        || {
            let failing: Vec<&String> = pairs
                .iter()
                .filter(|(ns, _, ip)| !ping_once(ns, ip))
                .map(|(_, what, _)| what)
                .collect();
            std::future::ready(if failing.is_empty() {
                Ok(())
            } else {
                Err(format!("unreachable: {failing:?}"))
            })
        },
    )
    .await;
}

/// Stops a process with SIGSTOP; continues it when dropped (also when the test fails).
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Self {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_connect_reach_each_other_and_converge() {
    if !require_root("two_clusters_connect_reach_each_other_and_converge") {
        return;
    }
    // Per cluster: node1 in the VLAN underlay network, node2, and node3 a BGP node on its own link
    // to the ToR; cluster 1 on its own segment behind the same ToR.
    eprintln!("load average at the start: {}", load_average().trim());
    let lab = Lab::up_with("m", 2, 1, 1, &["--clusters", "2"]);
    let dirs = lab.dirs();
    let (a, b) = tokio::join!(side(&dirs, 0), side(&dirs, 1));
    let outside = &a.layout;

    // Before: no node of one cluster has anything of the other.
    let before = [snapshot_all(&a), snapshot_all(&b)];
    assert_eq!(remote_lines(&before[0], &b), BTreeSet::new());
    assert_eq!(remote_lines(&before[1], &a), BTreeSet::new());

    // Connect, as an administrator would, from the outside host with one kubeconfig of two
    // contexts. `connect` is idempotent (server-side apply): a try that the loaded API servers
    // time out (a webhook call, say) is run again.
    let out = eventually("kubectl hybridnet cluster connect", CONVERGE, || {
        let (ok, text) = try_kubectl_in_lab(
            &lab,
            outside,
            &[
                "hybridnet",
                "--context",
                "c0",
                "cluster",
                "connect",
                "--remote-context",
                "c1",
            ],
        );
        std::future::ready(if ok { Ok(text) } else { Err(text) })
    })
    .await;
    eprintln!("$ kubectl hybridnet --context c0 cluster connect --remote-context c1\n{out}");
    let connected_at = Instant::now();
    wait_state(&a, "c1", |s| s == "Ready", "Ready").await;
    wait_state(&b, "c0", |s| s == "Ready", "Ready").await;
    eprintln!(
        "convergence: both RemoteClusters Ready: {:.1} s",
        connected_at.elapsed().as_secs_f64()
    );
    converge(&a, connected_at, "c0's nodes programmed for c1", |s| {
        programmed(s, &a, &b)
    })
    .await;
    converge(&b, connected_at, "c1's nodes programmed for c0", |s| {
        programmed(s, &b, &a)
    })
    .await;
    let out = kubectl_in_lab(
        &lab,
        outside,
        &["hybridnet", "--context", "c0", "cluster", "ls"],
    );
    eprintln!("$ kubectl hybridnet --context c0 cluster ls\n{out}");

    // Every pod reaches every pod of the other cluster, v4 and v6: overlay, VLAN underlay and
    // BGP underlay, in both directions.
    all_reach(&lab, &a, &b, &[]).await;
    all_reach(&lab, &b, &a, &[]).await;
    // With its own address: no NAT on the way, in either direction, either family.
    for (from, to) in [(&a, &b), (&b, &a)] {
        for f in from.pods.keys() {
            for (t, (_, ips)) in &to.pods {
                for ip in ips {
                    let seen = source_seen(&to.pod_ns(&lab, t), &from.pod_ns(&lab, f), ip);
                    let own = &from.pods[f].1;
                    assert!(
                        own.contains(&seen),
                        "{f} ({own:?}) -> {t} ({ip}) arrived from {seen}"
                    );
                }
            }
        }
    }

    // `kubectl hybridnet trace` explains the path to the other cluster's pod: into the VXLAN
    // device through table 40000, to the VTEP of the pod's node in c1, no NAT.
    let ov1_vtep = b
        .layout
        .host(&topology::Role::Node(1))
        .unwrap()
        .ip4()
        .unwrap();
    for from in ["ov0", "ul0"] {
        let to = &b.pods["ov1"].1[0];
        let (code, out) = kubectl_status(&dirs, &["hybridnet", "trace", from, "--to", to]);
        let summary = out
            .lines()
            .find(|l| l.starts_with("summary:"))
            .unwrap_or_default();
        assert!(
            code == 0
                && summary.contains(&format!("dev {VXLAN}"))
                && summary.contains(&format!("VTEP {ov1_vtep} (node1 of cluster c1), no NAT")),
            "trace {from} -> {to}:\n{out}"
        );
    }

    // A global Service: the endpoints c1 has for it (ov1's address) appear in c0 as an
    // EndpointSlice of c0's Service of the same name.
    let endpoint = b.pods["ov1"].1[0].clone();
    global_service(&b.client, Some(&endpoint)).await;
    let exported = Instant::now();
    global_service(&a.client, None).await;
    let slices0: Api<EndpointSlice> = Api::namespaced(a.client.clone(), "default");
    let imported = eventually(
        "c1's global Service endpoints imported in c0",
        CONVERGE,
        || async {
            let s = slices0
                .get_opt(IMPORTED_SLICE)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("not yet")?;
            Ok::<_, String>(
                s.endpoints
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e.addresses)
                    .collect::<Vec<_>>(),
            )
        },
    )
    .await;
    eprintln!(
        "convergence: global Service's EndpointSlice in c1 -> imported in c0: {:.1} s",
        exported.elapsed().as_secs_f64()
    );
    assert_eq!(imported, [endpoint], "c0's imported slice");
    let res0: Api<RemoteEndpointSlice> = Api::all(a.client.clone());
    assert!(res0.get_opt(IMPORTED_SLICE).await.unwrap().is_some());

    // A steady state to compare with: what each cluster's nodes hold now.
    let connected = [snapshot_all(&a), snapshot_all(&b)];

    // A remote subnet added: every node of c0 routes it into the VXLAN device; removed: the
    // route goes, and the nodes are as they were.
    let subnets1: Api<Subnet> = Api::all(b.client.clone());
    let extra: Subnet = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "extra"},
        "spec": {"network": "overlay", "range": {"version": "4", "cidr": EXTRA_V4}}
    }))
    .unwrap();
    subnets1
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();
    let added = Instant::now();
    // Baseline, the same event seen by c1's own nodes (no operator on the way).
    converge(&b, added, "c1's subnet added, on c1's nodes (local)", |s| {
        routes_extra(s, &b, true)
    })
    .await;
    converge(&a, added, "c1's subnet added, on c0's nodes", |s| {
        routes_extra(s, &a, true)
    })
    .await;
    subnets1
        .delete("extra", &DeleteParams::default())
        .await
        .unwrap();
    let removed = Instant::now();
    converge(
        &b,
        removed,
        "c1's subnet removed, on c1's nodes (local)",
        |s| routes_extra(s, &b, false),
    )
    .await;
    converge(&a, removed, "c1's subnet removed, on c0's nodes", |s| {
        if *s == connected[0] {
            Ok(())
        } else {
            Err(format!(
                "added {:?}, missing {:?}",
                s.difference(&connected[0]).collect::<Vec<_>>(),
                connected[0].difference(s).collect::<Vec<_>>()
            ))
        }
    })
    .await;

    // The remote API server stops: c0's RemoteCluster goes Offline (or NotReady) and nothing on
    // c0's nodes changes (the mirrors stay); pods keep reaching each other. It continues: Ready
    // again, the same entries.
    let api1 = hybridnet_lab::supervisor::pid(&dirs.cluster(1), "kube-lite").unwrap();
    let mirrors = mirror_names(&a.client).await;
    {
        let _stopped = Stopped::new(api1);
        let stopped_at = Instant::now();
        let state = wait_state(&a, "c1", |s| s == "Offline" || s == "NotReady", "not Ready").await;
        eprintln!(
            "convergence: c1's API server stopped, c0's RemoteCluster {state}: {:.1} s",
            stopped_at.elapsed().as_secs_f64()
        );
        assert_eq!(
            mirror_names(&a.client).await,
            mirrors,
            "the mirrors stay while c1 is {state}"
        );
        assert_eq!(
            snapshot_all(&a),
            connected[0],
            "c0's nodes changed while c1 is {state}"
        );
        for (f, t) in [
            ("ov0", "ul0"),
            ("bgp0", "ov0"),
            ("ov0", "ov1"),
            ("ul0", "bgp1"),
        ] {
            let to = a.pods.get(t).or(b.pods.get(t)).unwrap();
            for ip in &to.1 {
                assert!(
                    pings(&a.pod_ns(&lab, f), ip),
                    "{f} -> {t} {ip} while c1 is {state}"
                );
            }
        }
    }
    let continued = Instant::now();
    wait_state(&a, "c1", |s| s == "Ready", "Ready again").await;
    eprintln!(
        "convergence: c1's API server continued, c0's RemoteCluster Ready: {:.1} s",
        continued.elapsed().as_secs_f64()
    );
    assert_eq!(mirror_names(&a.client).await, mirrors);
    assert_eq!(
        snapshot_all(&a),
        connected[0],
        "c0's nodes after c1 came back"
    );
    all_reach(&lab, &a, &b, &[]).await;

    // A remote node leaves (its pod deleted, its agent stopped, its Node deleted): its VTEP's FDB
    // entries and its neighbour entries go from every node of c0; the rest stays.
    let leaver_ips = b.pods["leaver"].1.clone();
    let pods1: Api<Pod> = Api::namespaced(b.client.clone(), "default");
    pods1
        .delete("leaver", &DeleteParams::default())
        .await
        .unwrap();
    eventually("pod leaver gone", CONVERGE, || async {
        match pods1.get_opt("leaver").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let c1dirs = dirs.cluster(1);
    for name in hybridnet_lab::supervisor::names(&c1dirs) {
        if name.ends_with("-node2") {
            hybridnet_lab::supervisor::stop(&c1dirs, &name, Duration::from_secs(5));
        }
    }
    Api::<Node>::all(b.client.clone())
        .delete("node2", &DeleteParams::default())
        .await
        .unwrap();
    let left = Instant::now();
    // Its addresses: the pod's, and the node's own (VTEP and local addresses, v4 and v6).
    let node2 = b.layout.host(&topology::Role::Node(2)).unwrap();
    let gone: Vec<(IpAddr, u8)> = leaver_ips
        .iter()
        .map(String::as_str)
        .chain([node2.ip4().unwrap(), node2.ip6().unwrap()])
        .map(|ip| {
            let ip: IpAddr = ip.parse().unwrap();
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        })
        .collect();
    let expected: BTreeSet<String> = connected[0]
        .iter()
        .filter(|l| !mentions(l.split_once(": ").map_or("", |x| x.1), &gone))
        .cloned()
        .collect();
    assert_ne!(
        expected, connected[0],
        "c0's nodes had entries for c1's node2"
    );
    converge(&a, left, "c1's node2 left, on c0's nodes", |s| {
        if *s == expected {
            Ok(())
        } else {
            Err(format!(
                "stale {:?}, missing {:?}",
                s.difference(&expected).collect::<Vec<_>>(),
                expected.difference(s).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    let (_, vteps) = mirror_names(&a.client).await;
    assert!(!vteps.contains(&"c1.node2".to_string()), "{vteps:?}");

    // Disconnect: both RemoteClusters go, and with them their mirrors and everything on the
    // nodes: each node holds exactly its own cluster's entries, as when connected.
    let out = kubectl_in_lab(
        &lab,
        outside,
        &[
            "hybridnet",
            "--context",
            "c0",
            "cluster",
            "disconnect",
            "c1",
            "--remote-context",
            "c1",
        ],
    );
    eprintln!("$ kubectl hybridnet --context c0 cluster disconnect c1 --remote-context c1\n{out}");
    let disconnected = Instant::now();
    converge(&a, disconnected, "disconnected, on c0's nodes", |s| {
        let want = local_lines(&connected[0], &b);
        if *s == want {
            Ok(())
        } else {
            Err(format!(
                "stale {:?}, missing {:?}",
                s.difference(&want).collect::<Vec<_>>(),
                want.difference(s).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    // (node2 left: its stopped agent cleans nothing, and it is no node of c1 any more.)
    let node2_ns = format!(
        "{} ",
        b.layout.host(&topology::Role::Node(2)).unwrap().netns
    );
    converge(&b, disconnected, "disconnected, on c1's nodes", |s| {
        let stale: BTreeSet<String> = remote_lines(s, &a)
            .into_iter()
            .filter(|l| !l.starts_with(&node2_ns))
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(format!("stale {stale:?}"))
        }
    })
    .await;
    // The imported global Service endpoints go with the RemoteCluster.
    eventually(
        "c0's import of c1's global Service gone",
        CONVERGE,
        || async {
            let slice = slices0
                .get_opt(IMPORTED_SLICE)
                .await
                .map_err(|e| e.to_string())?;
            let mirrors = res0
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            if slice.is_none() && mirrors.items.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "slice {slice:?}, {} RemoteEndpointSlices",
                    mirrors.items.len()
                ))
            }
        },
    )
    .await;
    for side in [&a, &b] {
        assert_eq!(
            mirror_names(&side.client).await,
            (vec![], vec![]),
            "mirrors left in {}",
            side.name
        );
        // The RemoteCluster goes once its operator has deleted its mirrors and released
        // upstream's finalizer (multicluster.alibaba.com/manager-runtime-registered): after the
        // mirrors, not with them.
        let rcs: Api<RemoteCluster> = Api::all(side.client.clone());
        eventually(
            &format!("{}'s RemoteClusters gone", side.name),
            CONVERGE,
            || async {
                let left: Vec<String> = rcs
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .iter()
                    .map(|rc| format!("{} finalizers {:?}", rc.name_any(), rc.finalizers()))
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}"))
                }
            },
        )
        .await;
    }
    // Each cluster's own pods still reach each other.
    all_reach(&lab, &a, &a, &[]).await;
    all_reach(&lab, &b, &b, &["leaver"]).await;
    eprintln!("load average at the end: {}", load_average().trim());
}

#[test]
fn two_clusters_on_containerd_are_refused_before_anything_is_built() {
    if !require_root("two_clusters_on_containerd_are_refused_before_anything_is_built") {
        return;
    }
    let id = format!("r{}", std::process::id() % 1000);
    let out = Command::new(lab_bin())
        .args([
            "--id",
            &id,
            "up",
            "--clusters",
            "2",
            "--runtime",
            "containerd",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--runtime direct"), "{err}");
    assert!(!LabDirs::new(&id).root.exists(), "state of a refused lab");
    let prefix = format!("{}{id}-", topology::NS_PREFIX);
    assert!(
        !run(&["ip", "netns", "list"]).contains(&prefix),
        "namespaces of a refused lab"
    );
}

//! The lab on containerd (`--runtime containerd`): every node runs containerd with its CRI plugin,
//! and pods are created through CRI, so containerd's CNI library calls the plugin. The
//! connectivity matrix, then the bad input of this path, each followed by a check that nothing
//! is left behind on any node (addresses, links, routes, rules, nftables elements), in containerd
//! (sandboxes, container processes, network namespaces) or in the API (IPInstances):
//! - a pod deleted while its sandbox is being created;
//! - containerd killed and restarted while pods are being created;
//! - the sandbox's network namespace removed as soon as containerd creates it (before or during
//!   CNI ADD);
//! - the node agent's container (from the image, through containerd) killed while a pod of its
//!   node is created, and restarted by the lab kubelet's restart policy;
//! - a rolling update of the agents (a new pod template) through containerd.
//!
//! Needs root, containerd, ctr, runc, nsenter and the pause image (`scripts/images/build.sh
//! images debug`, which `make test` runs); under CI=true it must run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Lab, stateful_pods_keep_and_pin_addresses};
use hybridnet_api::v1::IPInstance;
use hybridnet_lab::cluster::LabParams;
use hybridnet_lab::cri::CriClient;
use hybridnet_lab::cri_node;
use hybridnet_lab::kubelet::pod_netns;
use hybridnet_lab::state::LabDirs;
use hybridnet_lab::topology::Role;
use hybridnet_test_support::{eventually, eventually_advancing, may_run, skip, try_sh};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn pause_archive() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images/pause.oci.tar")
}

/// Each node's network namespace by node name.
fn node_namespaces(dirs: &LabDirs) -> BTreeMap<String, String> {
    let params = LabParams::load(dirs).unwrap();
    params
        .layout()
        .nodes()
        .filter_map(|h| match h.role {
            Role::Node(n) => Some((format!("node{n}"), h.netns.clone())),
            _ => None,
        })
        .collect()
}

/// Everything a pod may leave behind, as comparable text: per node its addresses, link names,
/// routes and rules of both families and its nftables ruleset without counters; the cni-
/// network namespaces holding interfaces; per node the sandboxes containerd has and the
/// processes in the lab's cgroups; the IPInstances.
async fn leftovers(
    dirs: &LabDirs,
    lab_id: &str,
    client: &kube::Client,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (node, ns) in node_namespaces(dirs) {
        let run = |args: &[&str]| {
            let mut cmd = vec!["ip", "netns", "exec", ns.as_str()];
            cmd.extend_from_slice(args);
            try_sh(&cmd).unwrap_or_else(|e| format!("ERROR {e}"))
        };
        let links: Vec<String> = run(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        out.insert(format!("{node} links"), links.join("\n"));
        out.insert(
            format!("{node} addresses"),
            run(&["ip", "-o", "addr", "show"]),
        );
        for (what, args) in [
            ("routes v4", ["ip", "-4", "route", "show", "table", "all"]),
            ("routes v6", ["ip", "-6", "route", "show", "table", "all"]),
        ] {
            // Cached entries (PMTU, redirects) come and go with traffic.
            let text: Vec<String> = run(&args)
                .lines()
                .filter(|l| !l.contains(" expires ") && !l.contains(" cache"))
                .map(str::to_string)
                .collect();
            out.insert(format!("{node} {what}"), text.join("\n"));
        }
        out.insert(format!("{node} rules v4"), run(&["ip", "-4", "rule"]));
        out.insert(format!("{node} rules v6"), run(&["ip", "-6", "rule"]));
        // Tables in name order: an agent that re-creates its table moves it to the end.
        let ruleset = run(&["nft", "-s", "list", "ruleset"]);
        let mut tables: Vec<String> = Vec::new();
        for line in ruleset.lines() {
            let line = policy_generation_masked(line);
            match tables.last_mut() {
                Some(t) if !line.starts_with("table ") => {
                    t.push_str(&line);
                    t.push('\n');
                }
                _ => tables.push(format!("{line}\n")),
            }
        }
        // The blank line between tables goes with whichever table came first.
        for t in &mut tables {
            let trimmed = t.trim_end().len();
            t.truncate(trimmed);
            t.push('\n');
        }
        tables.sort();
        out.insert(format!("{node} nftables"), tables.concat());
        let cri = CriClient::new(&cri_node::containerd_dir(dirs, &node).join("containerd.sock"));
        let mut sandboxes: Vec<String> = cri
            .list_pod_sandboxes(&[])
            .await
            .unwrap()
            .into_iter()
            .map(|s| format!("{}/{} ready={}", s.namespace, s.name, s.ready))
            .collect();
        sandboxes.sort();
        out.insert(format!("{node} sandboxes"), sandboxes.join("\n"));
        // Processes of the containers containerd knows (runc's cgroups under the lab's parent are
        // named by container id); see `kill_orphan_processes` for the others.
        let mut known: BTreeSet<String> = cri
            .list_containers("")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        known.extend(
            cri.list_pod_sandboxes(&[])
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id),
        );
        let n: usize = container_cgroups(lab_id, &node)
            .into_iter()
            .filter(|(id, _)| known.contains(id))
            .map(|(_, procs)| procs.len())
            .sum();
        out.insert(format!("{node} container processes"), n.to_string());
    }
    // containerd's pod network namespaces that hold more than a loopback (see
    // `empty_cni_namespaces` for the others).
    let mut holding = Vec::new();
    for ns in cni_namespaces() {
        let links = try_sh(&["ip", "-n", &ns, "-o", "link", "show"]).unwrap_or_default();
        let names: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|n| *n != "lo")
            .collect();
        if !names.is_empty() {
            holding.push(format!("{ns}: {}", names.join(" ")));
        }
    }
    out.insert(
        "cni- network namespaces with interfaces".into(),
        holding.join("\n"),
    );
    let ipis: Api<IPInstance> = Api::all(client.clone());
    let mut names: Vec<String> = ipis
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.metadata.name.unwrap_or_default())
        .collect();
    names.sort();
    out.insert("IPInstances".into(), names.join(" "));
    out
}

/// The container cgroups (memory controller) under the node's parent: container id and pids.
fn container_cgroups(lab_id: &str, node: &str) -> Vec<(String, Vec<i32>)> {
    let cgroup = Path::new("/sys/fs/cgroup/memory")
        .join(cri_node::cgroup_parent(lab_id, node).trim_start_matches('/'));
    std::fs::read_dir(&cgroup)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                procs.lines().filter_map(|p| p.parse().ok()).collect(),
            )
        })
        .collect()
}

/// Kills the processes of container cgroups on `node` that containerd does not know: a
/// containerd killed between runc creating a container and containerd recording it leaves that
/// container's process behind after its restart, in no sandbox (no network: the checks above
/// find any interface or address). Returns the container ids.
async fn kill_orphan_processes(dirs: &LabDirs, lab_id: &str, node: &str) -> Vec<String> {
    let cri = CriClient::new(&cri_node::containerd_dir(dirs, node).join("containerd.sock"));
    let mut known: BTreeSet<String> = cri
        .list_containers("")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    known.extend(
        cri.list_pod_sandboxes(&[])
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id),
    );
    let mut killed = Vec::new();
    for (id, procs) in container_cgroups(lab_id, node) {
        if !known.contains(&id) && !procs.is_empty() {
            for p in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            killed.push(id);
        }
    }
    killed
}

/// containerd's pod network namespaces (`/run/netns/cni-*`).
fn cni_namespaces() -> BTreeSet<String> {
    try_sh(&["ip", "netns", "list"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("cni-"))
        .map(str::to_string)
        .collect()
}

/// containerd's pod network namespaces that appeared while it lived are gone when it is dropped
/// (after the lab is down): on success it fails the test naming any that stayed; either way it
/// removes them, so a failed run leaves nothing in the host's /run/netns.
struct CniNetnsGuard {
    before: BTreeSet<String>,
}

impl CniNetnsGuard {
    fn new() -> Self {
        Self {
            before: cni_namespaces(),
        }
    }
}

impl Drop for CniNetnsGuard {
    fn drop(&mut self) {
        let left: Vec<String> = cni_namespaces().difference(&self.before).cloned().collect();
        for ns in &left {
            let _ = try_sh(&["ip", "netns", "del", ns]);
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("network namespaces of the lab's containerds left in /run/netns: {left:?}");
        }
    }
}

/// cni- namespaces not in `before` that hold nothing but a loopback, removed. containerd 1.6 creates
/// a sandbox's namespace before it records the sandbox, so a containerd killed in between leaves
/// the namespace file behind, empty (no CNI ADD ran in it; the check above finds any interface).
fn remove_empty_cni_namespaces(before: &BTreeSet<String>) -> Vec<String> {
    let mut removed = Vec::new();
    for ns in cni_namespaces().difference(before) {
        // One containerd is still setting up or tearing down is younger, or goes away itself.
        let age = std::fs::metadata(Path::new("/run/netns").join(ns))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_none_or(|a| a < Duration::from_secs(5)) {
            continue;
        }
        let links = try_sh(&["ip", "-n", ns, "-o", "link", "show"]).unwrap_or_default();
        if links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .all(|n| n == "lo")
            && try_sh(&["ip", "netns", "del", ns]).is_ok()
        {
            removed.push(ns.clone());
        }
    }
    removed
}

/// The NetworkPolicy table's generation (`ct mark G`, `ct mark set G`) replaced by `G`: a
/// restarted agent starts a new generation by design (docs/networkpolicy.md, "Generations"), which
/// is not something left behind.
fn policy_generation_masked(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("ct mark ") {
        let (head, tail) = rest.split_at(i + "ct mark ".len());
        out.push_str(head);
        let (set, tail) = match tail.strip_prefix("set ") {
            Some(t) => ("set ", t),
            None => ("", tail),
        };
        out.push_str(set);
        match tail.strip_prefix("0x") {
            Some(hex) => {
                let end = hex
                    .find(|c: char| !c.is_ascii_hexdigit())
                    .unwrap_or(hex.len());
                out.push('G');
                rest = &hex[end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn the_policy_generation_is_masked_and_nothing_else() {
    assert_eq!(
        policy_generation_masked(
            "ct mark 0x00000002 accept comment \"connections allowed by this generation\""
        ),
        "ct mark G accept comment \"connections allowed by this generation\""
    );
    assert_eq!(
        policy_generation_masked("ct mark set 0x0000000a accept"),
        "ct mark set G accept"
    );
    assert_eq!(
        policy_generation_masked("meta mark 0x00000020 accept"),
        "meta mark 0x00000020 accept"
    );
}

fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut d = String::new();
    for (k, va) in a {
        let vb = b.get(k).cloned().unwrap_or_default();
        if *va != vb {
            d.push_str(&format!("--- {k}\nbefore:\n{va}\nnow:\n{vb}\n"));
        }
    }
    d
}

/// Waits until nothing is left over compared with `baseline` (cleanup is asynchronous: DEL,
/// IPInstance release), or fails showing what differs.
async fn nothing_left(
    case: &str,
    dirs: &LabDirs,
    lab_id: &str,
    client: &kube::Client,
    baseline: &BTreeMap<String, String>,
) {
    eventually(
        &format!("{case}: nothing left behind"),
        Duration::from_secs(60),
        || async {
            let now = leftovers(dirs, lab_id, client).await;
            let d = differences(baseline, &now);
            if d.is_empty() { Ok(()) } else { Err(d) }
        },
    )
    .await;
}

fn pod(name: &str, node: &str, network_type: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": {
            "networking.alibaba.com/network-type": network_type,
            "networking.alibaba.com/ip-family": "DualStack"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "containers": [{"name": "main", "image": "lab"}]}
    }))
    .unwrap()
}

/// Waits for `name` to run and returns its uid and IPs.
async fn running(pods: &Api<Pod>, name: &str, timeout: Duration) -> (String, Vec<String>) {
    eventually(&format!("pod {name} Running"), timeout, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        let st = p.status.clone().unwrap_or_default();
        if st.phase.as_deref() != Some("Running") {
            return Err(format!("phase {:?}", st.phase));
        }
        let ips: Vec<String> = st
            .pod_ips
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip)
            .collect();
        Ok((p.metadata.uid.unwrap_or_default(), ips))
    })
    .await
}

async fn gone(pods: &Api<Pod>, name: &str) {
    let _ = pods
        .delete(name, &DeleteParams::default().grace_period(0))
        .await;
    eventually(
        &format!("pod {name} gone"),
        Duration::from_secs(60),
        || async {
            match pods.get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

/// Whether `ip` answers a ping from `from_netns` within 30 s (a new pod's routes on the other
/// nodes follow its IPInstance, asynchronously).
fn ping(from_netns: &str, ip: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if try_sh(&["ip", "netns", "exec", from_netns, "ping", "-c1", "-W1", ip]).is_ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_through_containerd_connect_and_bad_input_leaves_nothing() {
    let test = "pods_through_containerd_connect_and_bad_input_leaves_nothing";
    if !may_run(
        test,
        &["containerd", "ctr", "runc", "nsenter", "nft", "ping"],
    ) {
        return;
    }
    if !pause_archive().is_file() {
        skip(
            test,
            &format!(
                "{} missing: run `scripts/images/build.sh images debug` (make test does)",
                pause_archive().display()
            ),
        );
        return;
    }
    // Declared before the lab, so dropped after it: once the lab is down, no network namespace
    // of its containerds may stay in /run/netns (on a failure too).
    let _netns = CniNetnsGuard::new();
    let lab = Lab::up_with(
        "k",
        3,
        2,
        0,
        &[
            "--runtime",
            "containerd",
            "--images",
            &pause_archive().parent().unwrap().to_string_lossy(),
        ],
    );
    let dirs = lab.dirs();
    let client = hybridnet_lab::cluster::client_from(&dirs.host_kubeconfig())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    hybridnet_lab::demo::create_networks(&client, false)
        .await
        .unwrap();

    // The connectivity matrix: overlay and VLAN underlay pods on three nodes, v4 and v6.
    let demo = hybridnet_lab::demo::demo_pods(3, 0);
    let made = hybridnet_lab::demo::create_pods(&client, &demo)
        .await
        .unwrap();
    assert_eq!(made.len(), 4, "{made:?}");
    let mut failures = Vec::new();
    for (from, (uid, _)) in &made {
        for (to, (_, ips)) in &made {
            assert_eq!(ips.len(), 2, "{to} is dual stack: {ips:?}");
            for ip in ips.iter().filter(|_| from != to) {
                if !ping(&pod_netns(&lab.id, uid), ip) {
                    failures.push(format!("{from} -> {to} {ip}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "pings failed: {failures:?}");
    // containerd made the sandboxes, from the pods' metadata, and its CNI library passed them on:
    // the agent recorded each pod's name on its IPInstances.
    let cri1 = CriClient::new(&cri_node::containerd_dir(&dirs, "node1").join("containerd.sock"));
    let on_node1: BTreeSet<String> = cri1
        .list_pod_sandboxes(&[])
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.ready && s.namespace == "default")
        .map(|s| s.name)
        .collect();
    assert_eq!(
        on_node1,
        BTreeSet::from(["overlay-a".to_string(), "underlay-a".to_string()])
    );
    let ipis: Api<IPInstance> = Api::all(client.clone());
    for (name, (_, ips)) in &made {
        let held: BTreeSet<String> = ipis
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|i| i.spec.binding.pod_name.as_deref() == Some(name.as_str()))
            .filter_map(|i| i.spec.address.ip.split('/').next().map(str::to_string))
            .collect();
        assert_eq!(held, ips.iter().cloned().collect(), "IPInstances of {name}");
    }
    let from = pod_netns(&lab.id, &made["overlay-a"].0);
    // The StatefulSet retention case with sandboxes made by containerd: web-0 deleted on node1 and
    // recreated on node2 keeps its addresses; web-1 gets the address its ip-pool entry pins. Its
    // pods stay, so they are part of the baseline below.
    stateful_pods_keep_and_pin_addresses(&client, &from).await;
    let baseline = leftovers(&dirs, &lab.id, &client).await;
    let baseline_cni = cni_namespaces();

    // A pod deleted while its sandbox is being created, at several moments of the creation.
    for (i, delay) in [0u64, 50, 150, 400, 800].into_iter().enumerate() {
        let name = format!("gone-{i}");
        pods.create(&PostParams::default(), &pod(&name, "node2", "Overlay"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        gone(&pods, &name).await;
    }
    nothing_left(
        "pods deleted during sandbox creation",
        &dirs,
        &lab.id,
        &client,
        &baseline,
    )
    .await;

    // containerd killed and restarted while three pods are being created on its node.
    let nodes = node_namespaces(&dirs);
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("restart-{i}"), "node2", "Overlay"),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pending = 0;
    for i in 0..3 {
        let p = pods.get(&format!("restart-{i}")).await.unwrap();
        pending += usize::from(p.status.and_then(|s| s.phase).as_deref() != Some("Running"));
    }
    eprintln!("containerd of node2 killed with {pending} of 3 pods not Running yet");
    cri_node::restart(&dirs, "node2", &nodes["node2"])
        .await
        .unwrap();
    for i in 0..3 {
        let (_, ips) = running(&pods, &format!("restart-{i}"), Duration::from_secs(90)).await;
        assert!(ping(&from, &ips[0]), "overlay-a -> restart-{i} {}", ips[0]);
    }
    for i in 0..3 {
        gone(&pods, &format!("restart-{i}")).await;
    }
    eprintln!(
        "empty network namespaces containerd left when it was killed: {:?}",
        remove_empty_cni_namespaces(&baseline_cni)
    );
    eprintln!(
        "processes of containers containerd forgot when it was killed: {:?}",
        kill_orphan_processes(&dirs, &lab.id, "node2").await
    );
    nothing_left(
        "containerd restarted during pod creation",
        &dirs,
        &lab.id,
        &client,
        &baseline,
    )
    .await;

    // The sandbox's network namespace removed as soon as containerd creates it, three times; the
    // kubelet's next attempt then succeeds.
    let before: BTreeSet<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let removed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let remover = {
        let (removed, stop) = (removed.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = BTreeSet::new();
            while removed.load(Ordering::SeqCst) < 3
                && !stop.load(Ordering::SeqCst)
                && Instant::now() < deadline
            {
                for e in std::fs::read_dir("/run/netns")
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with("cni-") && !before.contains(&n) && seen.insert(n.clone()) {
                        // ip netns del: unmount and unlink the namespace file.
                        if try_sh(&["ip", "netns", "del", &n]).is_ok() {
                            removed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    pods.create(&PostParams::default(), &pod("vanish", "node1", "Underlay"))
        .await
        .unwrap();
    let (_, ips) = running(&pods, "vanish", Duration::from_secs(120)).await;
    stop.store(true, Ordering::SeqCst);
    remover.join().unwrap();
    assert_eq!(
        removed.load(Ordering::SeqCst),
        3,
        "the network namespace of three sandbox attempts was removed"
    );
    assert!(ping(&from, &ips[0]), "overlay-a -> vanish {}", ips[0]);
    // The control: a running pod is seen (its sandbox, processes, link, IPInstances).
    let with_pod = differences(&baseline, &leftovers(&dirs, &lab.id, &client).await);
    for what in [
        "node1 sandboxes",
        "node1 links",
        "node1 container processes",
        "IPInstances",
    ] {
        assert!(
            with_pod.contains(&format!("--- {what}\n")),
            "{what} shows the pod: {with_pod}"
        );
    }
    gone(&pods, "vanish").await;
    nothing_left(
        "network namespaces removed during sandbox creation",
        &dirs,
        &lab.id,
        &client,
        &baseline,
    )
    .await;

    // The node agent's container killed by the runtime (StopContainer without grace: SIGKILL)
    // while a pod of its node is created; the lab kubelet's restart policy starts the agent
    // again (next attempt) and the pod then runs.
    let cri2 = CriClient::new(&cri_node::containerd_dir(&dirs, "node2").join("containerd.sock"));
    let agent_label = [(
        hybridnet_lab::cri_agent::AGENT_LABEL.to_string(),
        "true".to_string(),
    )];
    let agent_sandbox = cri2
        .list_pod_sandboxes(&agent_label)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.ready)
        .expect("node2's agent sandbox");
    let agent = cri2
        .list_containers(&agent_sandbox.id)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "hybridnet-node" && c.state == 1)
        .expect("node2's running agent container");
    cri2.stop_container(&agent.id, 0).await.unwrap();
    pods.create(
        &PostParams::default(),
        &pod("agent-restart", "node2", "Overlay"),
    )
    .await
    .unwrap();
    eventually(
        "node2's agent restarted",
        Duration::from_secs(60),
        || async {
            let list = cri2
                .list_containers(&agent_sandbox.id)
                .await
                .map_err(|e| e.to_string())?;
            list.iter()
                .find(|c| c.name == "hybridnet-node" && c.state == 1 && c.attempt > agent.attempt)
                .map(|_| ())
                .ok_or_else(|| format!("{list:?}"))
        },
    )
    .await;
    let (_, ips) = running(&pods, "agent-restart", Duration::from_secs(120)).await;
    assert!(
        ping(&from, &ips[0]),
        "overlay-a -> agent-restart {}",
        ips[0]
    );
    gone(&pods, "agent-restart").await;
    nothing_left(
        "the node agent killed and restarted",
        &dirs,
        &lab.id,
        &client,
        &baseline,
    )
    .await;

    // A rolling update of the agents (the pod template changes), through containerd: every node's
    // agent pod is replaced by one of the new template, the pods keep their network.
    let old_revision = hybridnet_lab::cluster::template_revision(
        &hybridnet_lab::cluster::wait_for_agent_daemonset(&client, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let hc: Api<hybridnet_api::operator::HybridnetCluster> = Api::all(client.clone());
    hc.patch(
        "default",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"nodeAgent": {"vlanCheckTimeout": "3s"}}})),
    )
    .await
    .unwrap();
    let params = LabParams::load(&dirs).unwrap();
    // The roll goes node by node (maxUnavailable 1), each a stop, the init containers and a
    // start through containerd: on a loaded machine one node can take a minute, so the bound is
    // on a node that does not advance, not on the whole roll.
    let agents = params.layout().nodes().count() as u32;
    eventually_advancing(
        "every agent rolled to the new template and ready",
        Duration::from_secs(180),
        agents,
        || async {
            let ds =
                hybridnet_lab::cluster::wait_for_agent_daemonset(&client, Duration::from_secs(5))
                    .await
                    .map_err(|e| (0, e.to_string()))?;
            let want = hybridnet_lab::cluster::template_revision(&ds);
            if want == old_revision {
                return Err((
                    0,
                    "the operator has not rendered the new template yet".into(),
                ));
            }
            let mut rolled = 0;
            let mut waiting = Vec::new();
            for h in params.layout().nodes() {
                let Role::Node(n) = h.role else { continue };
                let node = format!("node{n}");
                let has = hybridnet_lab::cluster::node_revision(&dirs, &node);
                if has.as_deref() != Some(want.as_str()) {
                    waiting.push(format!("{node} runs {has:?}, want {want}"));
                } else if !hybridnet_lab::cluster::agent_ready(&h.netns, 11021).await {
                    waiting.push(format!("{node}'s agent is not ready"));
                } else {
                    rolled += 1;
                }
            }
            if waiting.is_empty() {
                Ok(())
            } else {
                Err((rolled, waiting.join("; ")))
            }
        },
    )
    .await;
    for (name, (_, ips)) in &made {
        assert!(
            ping(&from, &ips[0]) || name == "overlay-a",
            "overlay-a -> {name} {} after the roll",
            ips[0]
        );
    }
    nothing_left("the agents rolled", &dirs, &lab.id, &client, &baseline).await;
}

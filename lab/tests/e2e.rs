//! End-to-end suite: the whole system (webhook, IPAM, operator, node agents, CNI plugin) in a lab of
//! network namespaces. Needs root; under CI=true it must run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use hybridnet_lab::state::LabDirs;
use hybridnet_lab::topology;
use hybridnet_test_support::{eventually, require_root};

fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hybridnet-lab"))
}

/// A lab that is always taken down, also when the test fails.
struct Lab {
    id: String,
}

impl Lab {
    fn up(nodes: u32, underlay: u32, bgp: u32) -> Self {
        let id = format!("e{}", std::process::id() % 1000);
        let lab = Lab { id };
        let out = Command::new(lab_bin())
            .args([
                "--id",
                &lab.id,
                "up",
                "--nodes",
                &nodes.to_string(),
                "--underlay-nodes",
                &underlay.to_string(),
                "--bgp-nodes",
                &bgp.to_string(),
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            let logs = LabDirs::new(&lab.id).logs();
            let mut all = String::new();
            for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                all.push_str(&format!(
                    "--- {}\n{}\n",
                    e.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            panic!(
                "lab up failed: {}\n{all}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lab
    }

    fn dirs(&self) -> LabDirs {
        LabDirs::new(&self.id)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_bin())
            .args(["--id", &self.id, "down"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_system_connectivity_and_ip_hygiene() {
    if !require_root("whole_system_connectivity_and_ip_hygiene") {
        return;
    }
    // Three nodes on the L2 segment (two in the VLAN underlay network) and two BGP nodes on their
    // own routed links to the ToR (bird2).
    let lab = Lab::up(3, 2, 2);
    let dirs = lab.dirs();
    let client = hybridnet_lab::cluster::client_from(&dirs.host_kubeconfig())
        .await
        .unwrap();
    hybridnet_lab::demo::create_networks(&client, true)
        .await
        .unwrap();
    let demo_pods = hybridnet_lab::demo::demo_pods(3, 2);
    let pods: BTreeMap<String, (String, Vec<String>)> =
        hybridnet_lab::demo::create_pods(&client, &demo_pods)
            .await
            .unwrap();
    assert_eq!(pods.len(), 6, "{pods:?}");
    for (name, (_, ips)) in &pods {
        assert_eq!(ips.len(), 2, "{name} is dual stack: {ips:?}");
    }
    // BGP pods take addresses of the BGP network (the network of their node).
    for pod in ["bgp-a", "bgp-b"] {
        let ips = &pods[pod].1;
        assert!(
            ips[0].starts_with("198.18.32.") && ips[1].starts_with("fd00:32::"),
            "{pod}: {ips:?}"
        );
    }
    // The ToR learned the BGP pods' routes from bird's sessions with the two BGP nodes.
    bgp_routes_at_the_tor(&lab, &pods).await;
    // The agents publish their sessions: `kubectl hybridnet status` shows both BGP nodes
    // Established with the ToR, announcing the subnet and their pod (v4 and v6).
    bgp_sessions_in_status(&dirs).await;
    // Every pod reaches every other pod's v4 and v6 address: overlay, VLAN underlay and BGP
    // underlay, on the same and on other nodes.
    let mut failures = Vec::new();
    for (from, (uid, _)) in &pods {
        let ns = hybridnet_lab::kubelet::pod_netns(&lab.id, uid);
        for (to, (_, ips)) in &pods {
            if from == to {
                continue;
            }
            for ip in ips {
                let ok = pings(&ns, ip);
                if !ok {
                    failures.push(format!("{from} -> {to} {ip}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "unreachable: {failures:#?}");

    // Overlay pods leave the cluster masqueraded (the outside host sees the node), underlay pods
    // with their own address.
    let outside = topology::layout(&lab.id, 3).outside.netns.clone();
    for (pod, want_own_ip) in [("overlay-a", false), ("underlay-b", true), ("bgp-a", true)] {
        let (uid, ips) = &pods[pod];
        for (fam, outside_ip) in [(0, "198.19.0.2"), (1, "fd00:19::2")] {
            let seen = source_seen(
                &outside,
                &hybridnet_lab::kubelet::pod_netns(&lab.id, uid),
                outside_ip,
            );
            let own = &ips[fam];
            assert_eq!(
                &seen == own,
                want_own_ip,
                "{pod} ({own}) reached the outside host {outside_ip} as {seen}"
            );
        }
    }

    // Overlay <-> underlay in both directions keeps the source address (no NAT inside the cluster),
    // for IPv4 and IPv6.
    for (from, to) in [
        ("overlay-a", "underlay-b"),
        ("underlay-b", "overlay-a"),
        ("overlay-b", "underlay-a"),
        ("overlay-a", "bgp-b"),
        ("bgp-a", "overlay-b"),
        ("bgp-b", "underlay-a"),
        ("bgp-a", "bgp-b"),
    ] {
        for fam in 0..2 {
            let server_ip = &pods[to].1[fam];
            let seen = source_seen(
                &hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[to].0),
                &hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[from].0),
                server_ip,
            );
            assert_eq!(
                seen, pods[from].1[fam],
                "{from} -> {to} ({server_ip}) arrived as {seen}"
            );
        }
    }

    // Pods reach their own node and another node.
    for (pod, node_ips) in [
        ("overlay-b", ["198.18.0.13", "198.18.0.11"]),
        ("underlay-a", ["198.18.0.11", "198.18.0.12"]),
    ] {
        let ns = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[pod].0);
        for ip in node_ips {
            let ok = pings(&ns, ip);
            assert!(ok, "{pod} cannot reach node address {ip}");
        }
    }

    // The kubectl plugin's trace agrees with the kernel's route lookup on each node of the path.
    let mut tables_compared = Vec::new();
    for (from, to) in [
        ("overlay-a", "underlay-b"),
        ("underlay-a", "overlay-b"),
        ("overlay-a", "overlay-b"),
        ("underlay-a", "underlay-b"),
        ("overlay-a", "198.19.0.2"),
        ("underlay-b", "198.19.0.2"),
        ("overlay-b", "node/node1"),
        ("underlay-a", "node/node2"),
        ("bgp-a", "bgp-b"),
        ("overlay-a", "bgp-a"),
        ("bgp-b", "198.19.0.2"),
    ] {
        let out = kubectl(
            &dirs,
            &["hybridnet", "trace", from, "--to", to, "-o", "json"],
        );
        let trace: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("trace {from} -> {to}: {e}: {out}"));
        for hop in trace["hops"].as_array().unwrap() {
            let node = hop["node"].as_str().unwrap();
            let q = &hop["query"];
            let ns = format!("hl{}-{node}", lab.id);
            let kernel = Command::new("ip")
                .args([
                    "-n",
                    &ns,
                    "route",
                    "get",
                    q["dst"].as_str().unwrap(),
                    "from",
                    q["src"].as_str().unwrap(),
                    "iif",
                    q["iif"].as_str().unwrap(),
                    "mark",
                    &q["mark"].to_string(),
                ])
                .output()
                .unwrap();
            let kernel = String::from_utf8_lossy(&kernel.stdout).to_string();
            match hop["result"]["dev"].as_str() {
                Some(dev) => assert!(
                    kernel.contains(&format!(" dev {dev} ")),
                    "trace {from} -> {to} on {node}: plan says dev {dev}, kernel says {kernel}"
                ),
                // Delivered to the node itself.
                None => assert!(
                    kernel.starts_with("local "),
                    "trace {from} -> {to} on {node}: plan says local delivery ({}), kernel says {kernel}",
                    hop["result"]["outcome"]
                ),
            }
            // The kernel names the table when it is not main (IPv4 does): the agent published
            // its subnet tables, so trace's number must be the kernel's.
            if let Some(table) = kernel_table(&kernel) {
                tables_compared.push(format!("{from} -> {to} on {node}: table {table}"));
                let planned = &hop["result"]["rule"]["table"];
                assert_eq!(
                    planned.as_u64(),
                    Some(table),
                    "trace {from} -> {to} on {node}: plan says table {planned}, kernel says {kernel}"
                );
            }
        }
    }

    assert!(
        tables_compared.iter().any(|t| !t.ends_with("table 39999")
            && !t.ends_with("table 40000")
            && !t.ends_with("table 40001")),
        "no subnet table was compared with the kernel: {tables_compared:?}"
    );
    eprintln!("tables compared with the kernel: {tables_compared:#?}");

    // A StatefulSet pod deleted and recreated on the other node of its underlay network keeps its
    // addresses and connectivity; its sibling gets the address its ip-pool entry pins.
    stateful_pods_keep_and_pin_addresses(&client, &lab, &pods).await;
    assert_ip_check_clean(&dirs, "after the StatefulSet scenario");

    // Restarting node agents and the operator during a TCP stream between pods drops nothing.
    restarts_keep_a_tcp_stream(&client, &lab, &pods).await;
    assert_ip_check_clean(&dirs, "after the restarts");

    // A BGP node's agent stopped within the graceful-restart time: the ToR keeps its routes and
    // its pods stay reachable; restarted, the session comes back.
    bgp_agent_restart_keeps_routes(&client, &lab, &pods).await;

    // An upgrade (a new operand version) rolls every node agent, one node at a time, while a
    // pod-to-pod TCP stream runs: nothing is lost, Available never drops, addresses stay.
    upgrade_rolls_every_agent_without_loss(&client, &lab, &pods).await;
    assert_ip_check_clean(&dirs, "after the upgrade");

    // Deleting a BGP pod withdraws its routes at the ToR; the subnets stay announced.
    bgp_pod_deletion_withdraws(&client, &lab, &pods).await;
    assert_ip_check_clean(&dirs, "after deleting a BGP pod");

    // No leaked, duplicate or orphaned address after the scenario.
    let check = kubectl(&dirs, &["hybridnet", "ip", "check"]);
    assert!(check.contains("no problems found"), "{check}");
}

/// The `table N` of an `ip route get` answer, if it names one.
fn kernel_table(route_get: &str) -> Option<u64> {
    let mut words = route_get.split_whitespace();
    while let Some(w) = words.next() {
        if w == "table" {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[test]
fn kernel_table_is_read_from_route_get() {
    assert_eq!(
        kernel_table("10.0.1.3 from 10.0.0.2 dev eth0.vxlan4 table 10000 \n    cache iif hybr1 \n"),
        Some(10000)
    );
    assert_eq!(
        kernel_table("10.0.1.3 dev eth0 src 10.0.0.1 uid 0 \n    cache \n"),
        None
    );
}

fn kubectl(dirs: &LabDirs, args: &[&str]) -> String {
    let bin_dir = lab_bin().parent().unwrap().to_path_buf();
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dirs.host_kubeconfig())
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
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Connects from `client_ns` to a TCP listener in `server_ns` at `server_ip` and returns the
/// source address the server sees.
fn source_seen(server_ns: &str, client_ns: &str, server_ip: &str) -> String {
    let pod_ns = client_ns;
    let outside_ns = server_ns;
    use std::os::fd::AsFd;
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_path = format!("/run/netns/{outside_ns}");
    let server = std::thread::spawn(move || {
        let f = std::fs::File::open(ns_path).unwrap();
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind("[::]:7070").unwrap();
        tx.send(()).unwrap();
        let (_, peer) = l.accept().unwrap();
        peer.ip().to_canonical().to_string()
    });
    rx.recv().unwrap();
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            pod_ns,
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{server_ip}/7070"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "TCP from {pod_ns} to {server_ip} failed");
    server.join().unwrap()
}

async fn running_pod(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    uid_not: Option<&str>,
) -> (String, Vec<String>, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(p) = pods.get(name).await {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let st = p.status.clone().unwrap_or_default();
            if Some(uid.as_str()) != uid_not && st.phase.as_deref() == Some("Running") {
                let ips = st
                    .pod_ips
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.ip)
                    .collect();
                let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                return (uid, ips, node);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {name} did not run within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn stateful_pods_keep_and_pin_addresses(
    client: &kube::Client,
    lab: &Lab,
    demo_pods: &BTreeMap<String, (String, Vec<String>)>,
) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "lab"}]}}}
    }))
    .unwrap();
    let sts = sts_api.create(&PostParams::default(), &sts).await.unwrap();
    let owner = serde_json::json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
        "uid": sts.metadata.uid.clone().unwrap(), "controller": true, "blockOwnerDeletion": true}]);
    let pod_json = |name: &str, node: &str, pool: Option<&str>| {
        let mut ann = serde_json::json!({"networking.alibaba.com/specified-network": "underlay"});
        if let Some(p) = pool {
            ann["networking.alibaba.com/ip-pool"] = p.into();
        }
        serde_json::from_value::<Pod>(serde_json::json!({
            "metadata": {"name": name, "labels": {"app": "web"}, "annotations": ann, "ownerReferences": owner},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"]}]}
        }))
        .unwrap()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod_json("web-0", "node1", None))
        .await
        .unwrap();
    let (uid0, ips0, node0) = running_pod(&pods, "web-0", None).await;
    assert_eq!(node0, "node1");
    assert!(!ips0.is_empty(), "web-0 has addresses");

    // Delete it (the kubelet stops it, the operator reserves its address), then recreate it on node2.
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pods.get_opt("web-0").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "web-0 was not deleted within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    pods.create(&PostParams::default(), &pod_json("web-0", "node2", None))
        .await
        .unwrap();
    let (uid0b, ips0b, node0b) = running_pod(&pods, "web-0", Some(&uid0)).await;
    assert_eq!(node0b, "node2");
    assert_eq!(
        ips0b, ips0,
        "the recreated stateful pod keeps its addresses"
    );
    let from = hybridnet_lab::kubelet::pod_netns(&lab.id, &demo_pods["overlay-a"].0);
    for ip in &ips0b {
        let ok = pings(&from, ip);
        assert!(ok, "overlay-a cannot reach the recreated web-0 at {ip}");
    }
    let _ = uid0b;

    // web-1 takes entry 1 of its ip-pool.
    pods.create(
        &PostParams::default(),
        &pod_json("web-1", "node1", Some("198.18.0.150,198.18.0.151")),
    )
    .await
    .unwrap();
    let (_, ips1, _) = running_pod(&pods, "web-1", None).await;
    assert_eq!(
        ips1,
        vec!["198.18.0.151".to_string()],
        "web-1 gets its pinned address"
    );
    eprintln!("stateful: web-0 kept {ips0b:?} moving node1 -> node2; web-1 pinned to {ips1:?}");
}

fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    use std::os::fd::AsFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

async fn restarts_keep_a_tcp_stream(
    client: &kube::Client,
    lab: &Lab,
    pods: &BTreeMap<String, (String, Vec<String>)>,
) {
    use hybridnet_lab::{cluster, supervisor};
    let dirs = lab.dirs();
    let params = cluster::LabParams::load(&dirs).unwrap();
    let layout = params.layout();
    let stream = TcpStreamProbe::start(lab, pods, "overlay-a", "underlay-b", 7071);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ds = cluster::wait_for_agent_daemonset(client, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    for node in [1, 2] {
        let spec = cluster::agent_process(&params, &dirs, &layout, &ds, node).unwrap();
        supervisor::stop(&dirs, &spec.name, std::time::Duration::from_secs(3));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        supervisor::start(&dirs, &spec).unwrap();
    }
    // Operator failover with two replicas while the stream runs: the leader stops, the standby
    // takes over and allocates a new pod without duplicates, the old leader returns as standby.
    operator_failover_allocates(client, lab, pods).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (sent, received) = stream.finish("the restarts");
    assert_eq!(
        received, sent,
        "bytes lost across agent and operator restarts"
    );
    assert!(
        sent > 100 * 1024,
        "the stream carried traffic throughout ({sent} bytes)"
    );
    eprintln!(
        "restarts: {sent} bytes sent and received across 2 agent restarts and an operator failover"
    );
}

async fn operator_failover_allocates(
    client: &kube::Client,
    lab: &Lab,
    pods: &BTreeMap<String, (String, Vec<String>)>,
) {
    use hybridnet_lab::{cluster, supervisor};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    let dirs = lab.dirs();
    let params = cluster::LabParams::load(&dirs).unwrap();
    let layout = params.layout();
    let cp = layout
        .host(&topology::Role::ControlPlane)
        .unwrap()
        .netns
        .clone();
    let first = cluster::operator_process(&params, &dirs, &cp).unwrap();
    // The second replica shares the control-plane host: no webhook or metrics port of its own.
    let mut second = first.clone();
    second.name = "operator-2".into();
    second.args.extend([
        "--webhook-port=0".to_string(),
        "--metrics-port=0".to_string(),
    ]);
    for (k, v) in second.env.iter_mut() {
        if k == "POD_NAME" {
            *v = "hybridnet-operator-lab-1".into();
        }
    }
    supervisor::start(&dirs, &second).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // The leader stops (and releases its Lease); the standby must take over.
    supervisor::stop(&dirs, &first.name, std::time::Duration::from_secs(5));
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "after-failover", "annotations": {"networking.alibaba.com/network-type": "Overlay"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "node3"},
                 "containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"]}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let (_, ips, _) = running_pod(&api, "after-failover", None).await;
    let taken: Vec<&String> = pods.values().flat_map(|(_, ips)| ips).collect();
    for ip in &ips {
        assert!(!taken.contains(&ip), "{ip} handed out twice after failover");
        let from = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods["overlay-a"].0);
        let ok = pings(&from, ip);
        assert!(
            ok,
            "overlay-a cannot reach the pod created after failover at {ip}"
        );
    }
    // The first replica comes back as the standby (and serves the webhook again).
    supervisor::start(&dirs, &first).unwrap();
    eprintln!("failover: the standby replica allocated {ips:?}");
}

fn assert_ip_check_clean(dirs: &LabDirs, when: &str) {
    let check = kubectl(dirs, &["hybridnet", "ip", "check"]);
    assert!(
        check.contains("no problems found"),
        "ip check {when}: {check}"
    );
}

/// bird's `show route all` on the ToR: prefix -> its paths (first line and attribute lines).
fn tor_routes(lab: &Lab) -> BTreeMap<String, String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(hybridnet_lab::cluster::tor_bird_socket(&lab.dirs()))
        .args(["show", "route", "all"])
        .output()
        .unwrap();
    let mut routes: BTreeMap<String, String> = BTreeMap::new();
    let mut prefix = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("Table") || line.starts_with("BIRD") || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) && line.contains(" unicast [") {
            prefix = line.split_whitespace().next().unwrap_or("").to_string();
        }
        let entry = routes.entry(prefix.clone()).or_default();
        entry.push_str(line.trim());
        entry.push('\n');
    }
    routes
}

/// Waits (30 s at most) for a probe that reads the lab's state synchronously.
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    eventually(what, std::time::Duration::from_secs(30), || {
        std::future::ready(probe())
    })
    .await
}

/// The BGP nodes announced each BGP pod's /32 and /128 (AS_PATH = the nodes' AS, NO_EXPORT) and
/// the BGP subnets; the ToR's kernel forwards each pod address over the link of the pod's node.
async fn bgp_routes_at_the_tor(lab: &Lab, pods: &BTreeMap<String, (String, Vec<String>)>) {
    let mut want: Vec<(String, &str)> =
        vec![("198.18.32.0/24".into(), ""), ("fd00:32::/112".into(), "")];
    for (pod, node_link) in [("bgp-a", "bgp0"), ("bgp-b", "bgp1")] {
        let ips = &pods[pod].1;
        want.push((format!("{}/32", ips[0]), node_link));
        want.push((format!("{}/128", ips[1]), node_link));
    }
    let routes = wait_for("pod routes at the ToR", || {
        let r = tor_routes(lab);
        if want.iter().all(|(p, _)| r.contains_key(p)) {
            Ok(r)
        } else {
            Err(format!("want {want:?}, bird has {r:#?}"))
        }
    })
    .await;
    let tor = format!("hl{}-tor", lab.id);
    for (prefix, link) in &want {
        let paths = &routes[prefix];
        assert!(
            paths.contains("BGP.as_path: 65001"),
            "{prefix}: AS_PATH is not the nodes' AS: {paths}"
        );
        if link.is_empty() {
            continue;
        }
        assert!(
            paths.contains("(65535,65281)"),
            "{prefix}: a BGP-mode pod route carries NO_EXPORT: {paths}"
        );
        let addr = prefix.split('/').next().unwrap();
        let got = Command::new("ip")
            .args(["-n", &tor, "route", "get", addr])
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&got.stdout).into_owned();
        assert!(
            got.contains(&format!("dev {link}")),
            "the ToR forwards {addr} over {got}, not over the pod's node link {link}"
        );
    }
    eprintln!("bgp: the ToR learned {want:?}");
}

async fn bgp_pod_deletion_withdraws(
    client: &kube::Client,
    lab: &Lab,
    pods: &BTreeMap<String, (String, Vec<String>)>,
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams};
    let ips = pods["bgp-b"].1.clone();
    let gone = [format!("{}/32", ips[0]), format!("{}/128", ips[1])];
    assert!(
        gone.iter().all(|p| tor_routes(lab).contains_key(p)),
        "bgp-b's routes are announced before the deletion"
    );
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.delete("bgp-b", &DeleteParams::default()).await.unwrap();
    wait_for("bgp-b's routes withdrawn at the ToR", || {
        let r = tor_routes(lab);
        let left: Vec<_> = gone.iter().filter(|p| r.contains_key(*p)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still announced: {left:?}"))
        }
    })
    .await;
    let r = tor_routes(lab);
    assert!(
        r.contains_key("198.18.32.0/24") && r.contains_key("fd00:32::/112"),
        "the BGP subnets stay announced while the network has nodes: {r:#?}"
    );
    // bgp-a still reaches the outside host.
    let ns = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods["bgp-a"].0);
    let ok = pings(&ns, "198.19.0.2");
    assert!(ok, "bgp-a lost the outside host after bgp-b was deleted");
    eprintln!("bgp: deleting bgp-b withdrew {gone:?}");
}

fn bird_session(lab: &Lab, protocol: &str) -> String {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(hybridnet_lab::cluster::tor_bird_socket(&lab.dirs()))
        .args(["show", "protocols", protocol])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pings(from_ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from_ns, "ping", "-c1", "-W2", to])
        .output()
        .unwrap()
        .status
        .success()
}

async fn bgp_agent_restart_keeps_routes(
    client: &kube::Client,
    lab: &Lab,
    pods: &BTreeMap<String, (String, Vec<String>)>,
) {
    use hybridnet_lab::{cluster, supervisor};
    let dirs = lab.dirs();
    let params = cluster::LabParams::load(&dirs).unwrap();
    let layout = params.layout();
    let ds = cluster::wait_for_agent_daemonset(client, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    // bgp-a runs on node4 (the first BGP node).
    let spec = cluster::agent_process(&params, &dirs, &layout, &ds, 4).unwrap();
    let ips = pods["bgp-a"].1.clone();
    let kept = [format!("{}/32", ips[0]), format!("{}/128", ips[1])];
    supervisor::stop(&dirs, &spec.name, std::time::Duration::from_secs(3));
    wait_for("the ToR noticing node4's agent is gone", || {
        let s = bird_session(lab, "node4");
        if s.contains("Established") {
            Err(s)
        } else {
            Ok(())
        }
    })
    .await;
    let routes = tor_routes(lab);
    assert!(
        kept.iter().all(|p| routes.contains_key(p)),
        "graceful restart: the ToR keeps node4's routes {kept:?} while its agent is down: {routes:#?}"
    );
    let from_b = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods["bgp-b"].0);
    let from_a = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods["bgp-a"].0);
    for ip in &ips {
        assert!(
            pings(&from_b, ip),
            "bgp-b -> bgp-a {ip} while node4's agent is down"
        );
    }
    assert!(
        pings(&from_a, "198.19.0.2"),
        "bgp-a -> outside while node4's agent is down"
    );
    supervisor::start(&dirs, &spec).unwrap();
    wait_for("node4's session re-established", || {
        let s = bird_session(lab, "node4");
        if s.contains("Established") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    wait_for("node4's routes after the restart", || {
        let r = tor_routes(lab);
        if kept
            .iter()
            .all(|p| r.get(p).is_some_and(|x| !x.contains("stale")))
        {
            Ok(())
        } else {
            Err(format!("{r:#?}"))
        }
    })
    .await;
    eprintln!("bgp: node4's agent restarted; the ToR kept {kept:?} throughout");
}

async fn bgp_sessions_in_status(dirs: &LabDirs) {
    let sessions = wait_for(
        "both BGP nodes' sessions in kubectl hybridnet status",
        || {
            let out = kubectl(dirs, &["hybridnet", "status", "-o", "json"]);
            let v: serde_json::Value =
                serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
            let sessions = v["bgpSessions"].as_array().cloned().unwrap_or_default();
            let ready = ["node4", "node5"].iter().all(|node| {
                sessions.iter().any(|s| {
                    s["node"] == *node
                        && s["state"] == "Established"
                        && s["prefixesV4"].as_u64() >= Some(2)
                        && s["prefixesV6"].as_u64() >= Some(2)
                })
            });
            if ready {
                Ok(sessions)
            } else {
                Err(format!("{sessions:#?}"))
            }
        },
    )
    .await;
    for s in &sessions {
        assert_eq!(s["peerAddress"], "198.18.1.1", "{s}");
        assert_eq!(s["peerASN"], 65000, "{s}");
        assert_eq!(s["localASN"], 65001, "{s}");
        assert_eq!(s["required"], true, "{s}");
    }
    let text = kubectl(dirs, &["hybridnet", "status"]);
    assert!(text.contains("BGP SESSIONS"), "{text}");
    assert!(
        !text.contains("required BGP session") && !text.contains("publishes no BGP sessions"),
        "no warning about BGP sessions: {text}"
    );
    eprintln!(
        "bgp: kubectl hybridnet status shows {} sessions",
        sessions.len()
    );
}

/// A TCP stream from one pod to another (1 KiB every 5 ms) that counts what each side saw.
struct TcpStreamProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<Result<usize, String>>,
    receiver: std::thread::JoinHandle<Result<usize, String>>,
}

impl TcpStreamProbe {
    fn start(
        lab: &Lab,
        pods: &BTreeMap<String, (String, Vec<String>)>,
        from: &str,
        to: &str,
        port: u16,
    ) -> Self {
        use std::io::{Read, Write};
        let server_ns = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[to].0);
        let client_ns = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[from].0);
        let server_ip = pods[to].1[0].clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = in_netns(&server_ns, move || {
            let l = std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| e.to_string())?;
            let _ = ready_tx.send(());
            let (mut c, _) = l.accept().map_err(|e| e.to_string())?;
            let mut total = 0usize;
            let mut buf = [0u8; 4096];
            loop {
                match c.read(&mut buf) {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        ready_rx.recv().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let sender = in_netns(&client_ns, move || {
            let mut s = std::net::TcpStream::connect((server_ip.as_str(), port))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(std::time::Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let chunk = [7u8; 1024];
            let mut sent = 0usize;
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = s.write_all(&chunk) {
                    return Err(format!("after {sent} bytes: {e}"));
                }
                sent += chunk.len();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            drop(s);
            Ok(sent)
        });
        TcpStreamProbe {
            stop,
            sender,
            receiver,
        }
    }

    /// Ends the stream: (bytes sent, bytes received); panics naming `during` if either side broke.
    fn finish(self, during: &str) -> (usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sent = self
            .sender
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("the TCP stream broke during {during}: {e}"));
        let received = self
            .receiver
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("the receiving side failed during {during}: {e}"));
        (sent, received)
    }
}

fn condition(hc: &hybridnet_api::operator::HybridnetCluster, type_: &str) -> Option<String> {
    hc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

async fn upgrade_rolls_every_agent_without_loss(
    client: &kube::Client,
    lab: &Lab,
    pods: &BTreeMap<String, (String, Vec<String>)>,
) {
    use hybridnet_api::operator::HybridnetCluster;
    use hybridnet_lab::{cluster, supervisor};
    use kube::api::{Api, Patch, PatchParams};
    let dirs = lab.dirs();
    let params = cluster::LabParams::load(&dirs).unwrap();
    let agent_pids = || -> BTreeMap<String, Option<i32>> {
        (1..=params.nodes + params.bgp_nodes)
            .map(|n| {
                let name = format!("hybridnet-node-node{n}");
                let pid = supervisor::pid(&dirs, &name);
                (name, pid)
            })
            .collect()
    };
    let before = agent_pids();
    assert!(before.values().all(Option::is_some), "{before:?}");
    // Across nodes: overlay pod on node1 -> BGP pod on node4 (VXLAN over the routed link).
    let stream = TcpStreamProbe::start(lab, pods, "overlay-a", "bgp-a", 7072);
    let api: Api<HybridnetCluster> = Api::all(client.clone());
    api.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"version": "0.1.1"}})),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut unavailable = Vec::new();
    loop {
        let hc = api.get("default").await.unwrap();
        if condition(&hc, "Available").as_deref() != Some("True") {
            unavailable.push(format!("{:?}", hc.status));
        }
        let status = hc.status.clone().unwrap_or_default();
        if status.version.as_deref() == Some("0.1.1")
            && condition(&hc, "Progressing").as_deref() == Some("False")
            && condition(&hc, "Available").as_deref() == Some("True")
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the upgrade to 0.1.1 did not finish within 120 s: {:?}",
            hc.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let took = started.elapsed();
    let after = agent_pids();
    for (name, pid) in &after {
        assert!(
            pid.is_some() && *pid != before[name],
            "{name} was not rolled: {:?} -> {pid:?}",
            before[name]
        );
    }
    assert!(
        unavailable.is_empty(),
        "Available dropped during the upgrade: {unavailable:#?}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (sent, received) = stream.finish("the upgrade");
    assert_eq!(received, sent, "bytes lost during the upgrade");
    // Pods keep their addresses and reach each other after the upgrade.
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let from = hybridnet_lab::kubelet::pod_netns(&lab.id, &pods["overlay-a"].0);
    for (name, (_, ips)) in pods {
        if name == "overlay-a" {
            continue;
        }
        let now: Vec<String> = pod_api
            .get(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.pod_ips)
            .unwrap_or_default()
            .into_iter()
            .map(|i| i.ip)
            .collect();
        assert_eq!(&now, ips, "{name} changed its addresses during the upgrade");
        for ip in ips {
            assert!(
                pings(&from, ip),
                "overlay-a -> {name} {ip} after the upgrade"
            );
        }
    }
    eprintln!(
        "upgrade: {} agents rolled to 0.1.1 in {took:?}; {sent} bytes streamed without loss",
        after.len()
    );
}

//! The lab harness the lab's test suites share: a lab that is always taken down, and kubectl
//! against it with the workspace's kubectl plugin on PATH; [`perf`] for the lab's benchmarks.

#![allow(dead_code)]

pub mod perf;

use std::path::PathBuf;
use std::process::Command;

use hybridnet_lab::state::LabDirs;

pub fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hybridnet-lab"))
}

/// A lab that is always taken down, also when the test fails.
pub struct Lab {
    pub id: String,
}

impl Lab {
    /// `hybridnet-lab up` under an id of `prefix` and this process; on failure the panic carries
    /// the tail of every log of the lab.
    pub fn up(prefix: &str, nodes: u32, underlay: u32, bgp: u32) -> Self {
        Self::up_with(prefix, nodes, underlay, bgp, &[])
    }

    /// [`Lab::up`] with more arguments of `up` (e.g. `--runtime containerd`).
    pub fn up_with(prefix: &str, nodes: u32, underlay: u32, bgp: u32, extra: &[&str]) -> Self {
        let lab = Lab {
            id: format!("{prefix}{}", std::process::id() % 1000),
        };
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
            .args(extra)
            .output()
            .unwrap();
        if !out.status.success() {
            let all = log_tails(&LabDirs::new(&lab.id), 15);
            panic!(
                "lab up failed: {}\n{all}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lab
    }

    pub fn dirs(&self) -> LabDirs {
        LabDirs::new(&self.id)
    }
}

/// The last `lines` lines of every log of every cluster of a lab (a lab of two clusters keeps the
/// second's in c1/).
fn log_tails(dirs: &LabDirs, lines: usize) -> String {
    let mut all = String::new();
    let mut entries: Vec<_> = [dirs.logs(), dirs.cluster(1).logs()]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        all.push_str(&format!(
            "--- {}\n{}\n",
            path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    all
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed test takes the lab's logs with it: what they ended with is the evidence a CI
        // run keeps.
        if std::thread::panicking() {
            eprintln!(
                "the lab's logs as the test failed:\n{}",
                log_tails(&self.dirs(), 25)
            );
        }
        let _ = Command::new(lab_bin())
            .args(["--id", &self.id, "down"])
            .status();
    }
}

/// Runs kubectl against the lab (the host kubeconfig, the workspace's `kubectl-hybridnet` on
/// PATH): exit code and stdout followed by stderr.
pub fn kubectl_status(dirs: &LabDirs, args: &[&str]) -> (i32, String) {
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
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// [`kubectl_status`] when only the output matters.
pub fn kubectl(dirs: &LabDirs, args: &[&str]) -> String {
    kubectl_status(dirs, args).1
}

/// Waits (60 s) until pod `name` runs with a uid other than `uid_not`; its uid, IPs and node.
pub async fn running_pod(
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

/// A StatefulSet pod deleted and recreated on the other node of its underlay network (node1 ->
/// node2) keeps its addresses and is reached from the pod namespace `from`; its sibling gets the
/// address its ip-pool entry pins. The pods stay (the caller's baseline may include them).
pub async fn stateful_pods_keep_and_pin_addresses(client: &kube::Client, from: &str) {
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
    let (_, ips0b, node0b) = running_pod(&pods, "web-0", Some(&uid0)).await;
    assert_eq!(node0b, "node2");
    assert_eq!(
        ips0b, ips0,
        "the recreated stateful pod keeps its addresses"
    );
    for ip in &ips0b {
        let ok = pings(from, ip);
        assert!(ok, "the probe pod cannot reach the recreated web-0 at {ip}");
    }

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

/// The source address a TCP server in `server_ns` listening on port 7070 sees when the pod
/// namespace `client_ns` connects to `server_ip`.
pub fn source_seen(server_ns: &str, client_ns: &str, server_ip: &str) -> String {
    use std::os::fd::AsFd;
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_path = format!("/run/netns/{server_ns}");
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
            client_ns,
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{server_ip}/7070"),
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "TCP from {client_ns} to {server_ip} failed"
    );
    server.join().unwrap()
}

/// Whether `to` answers a ping from `from_ns`; a probe is retried (3 tries, 2 s each) before
/// the path is called lost, so one dropped packet (an ARP/NDP resolution, a route being
/// replaced) is not a failure.
pub fn pings(from_ns: &str, to: &str) -> bool {
    (0..3).any(|_| {
        Command::new("ip")
            .args(["netns", "exec", from_ns, "ping", "-c1", "-W2", to])
            .output()
            .unwrap()
            .status
            .success()
    })
}

//! Shared helpers: a kube-lite API server with the hybridnet CRDs, and the real kubectl running
//! the plugin from target/debug.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hybridnet_api::v1::{
    Address, Binding, IPInstance, IPInstanceSpec, IpVersion, NodeInfo, NodeInfoSpec,
    ReferredObject, VtepInfo,
};
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeAddress, NodeStatus, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Whether the real kubectl is there; without it a test prints why and returns, except in CI.
pub fn kubectl_available() -> bool {
    if Path::new(KUBECTL).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{KUBECTL} is required in CI");
    }
    eprintln!("SKIP: {KUBECTL} not found; these tests drive the plugin through the real kubectl");
    false
}

pub struct Cluster {
    pub server: kube_lite::ServerHandle,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub helper_dir: tempfile::TempDir,
}

/// Starts kube-lite; with `crds` the hybridnet CRDs are installed.
pub async fn cluster(crds: bool) -> Cluster {
    cluster_with(kube_lite::Config::default(), crds).await
}

/// [`cluster`] with the server's configuration (TLS, a token).
pub async fn cluster_with(config: kube_lite::Config, crds: bool) -> Cluster {
    let server = kube_lite::Server::start(config)
        .await
        .expect("start kube-lite");
    let client = server.client().await.expect("client");
    if crds {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for (_, crd) in hybridnet_api::crd::all() {
            api.create(&PostParams::default(), &crd)
                .await
                .expect("create CRD");
        }
        // Wait until every resource answers a list.
        for _ in 0..100 {
            let ok = Api::<hybridnet_api::v1::Network>::all(client.clone())
                .list(&Default::default())
                .await
                .is_ok()
                && Api::<IPInstance>::all(client.clone())
                    .list(&Default::default())
                    .await
                    .is_ok()
                && Api::<hybridnet_api::operator::HybridnetCluster>::all(client.clone())
                    .list(&Default::default())
                    .await
                    .is_ok();
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    Cluster {
        server,
        client,
        kubeconfig,
        helper_dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// The directory of the plugin binary (target/debug), put first on PATH.
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-hybridnet"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

pub fn path_env(extra: Option<&Path>) -> String {
    let mut parts = vec![plugin_dir().display().to_string()];
    if let Some(e) = extra {
        parts.push(e.display().to_string());
    }
    parts.push(std::env::var("PATH").unwrap_or_default());
    parts.join(":")
}

#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }

    /// Waits (at most 60 s) for a started command with piped output and collects what it wrote.
    pub async fn of(child: tokio::process::Child) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("command timed out")
            .expect("command output");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `kubectl hybridnet --kubeconfig K ARGS...` (kubectl refuses global flags before a plugin name).
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Run {
    kubectl_stdin(kubeconfig, args, None).await
}

pub async fn kubectl_stdin(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.arg("hybridnet")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("PATH", path_env(None))
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).await.expect("write stdin");
    }
    Run::of(child).await
}

/// Plain kubectl (not the plugin), e.g. `__complete`.
pub async fn kubectl_raw(args: &[&str], extra_path: Option<&Path>, env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.args(args)
        .env("PATH", path_env(extra_path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::of(cmd.spawn().expect("spawn kubectl")).await
}

// ------------------------------------------------------------------ seeding

/// `kubectl hybridnet subnet create NAME --network NETWORK --cidr CIDR FLAGS...`, which must succeed.
pub async fn create_subnet(k: &Path, name: &str, network: &str, cidr: &str, flags: &[&str]) {
    let mut args = vec![
        "subnet",
        "create",
        name,
        "--network",
        network,
        "--cidr",
        cidr,
    ];
    args.extend_from_slice(flags);
    kubectl(k, &args).await.ok();
}

/// Through the plugin: the overlay network `overlay` (VNI 4) with subnet `overlay-a`
/// (10.244.0.0/24), and the VLAN network `vlan100` (VLAN 100) of the nodes labelled rack=a.
pub async fn overlay_and_vlan100(k: &Path) {
    kubectl(k, &["network", "create", "overlay", "--vni", "4"])
        .await
        .ok();
    create_subnet(k, "overlay-a", "overlay", "10.244.0.0/24", &[]).await;
    kubectl(
        k,
        &[
            "network",
            "create",
            "vlan100",
            "--vlan-id",
            "100",
            "--node-selector",
            "rack=a",
        ],
    )
    .await
    .ok();
}

pub async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

pub async fn node(client: &Client, name: &str, ip: &str, labels: &[(&str, &str)]) {
    let api: Api<Node> = Api::all(client.clone());
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let created = api
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
    let status = NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        ..Default::default()
    };
    api.patch_status(
        created.metadata.name.as_deref().unwrap_or(name),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .expect("node status");
}

pub async fn nodeinfo(client: &Client, name: &str, ip: &str, mac: &str) {
    let api: Api<NodeInfo> = Api::all(client.clone());
    let mut n = NodeInfo::new(
        name,
        NodeInfoSpec {
            vtep_info: Some(VtepInfo {
                ip: Some(ip.into()),
                mac: Some(mac.into()),
                local_ips: Some(vec![ip.into()]),
            }),
        },
    );
    n.metadata.name = Some(name.into());
    api.create(&PostParams::default(), &n)
        .await
        .expect("create nodeinfo");
}

/// A pod, optionally Running with `ip`.
pub async fn pod(
    client: &Client,
    ns: &str,
    name: &str,
    node: &str,
    ip: Option<&str>,
    owner: Option<(&str, &str, &str)>,
) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    if let Some((kind, oname, uid)) = owner {
        p.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: oname.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
    }
    p.spec = Some(PodSpec {
        node_name: Some(node.into()),
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "c".into(),
            image: Some("busybox".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let created = api
        .create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    if let Some(ip) = ip {
        let st = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            ..Default::default()
        };
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": st})),
        )
        .await
        .expect("pod status");
    }
    created.metadata.uid.unwrap_or_default()
}

/// An IPInstance as the operator writes it (labels, binding, finalizer optional).
#[allow(clippy::too_many_arguments)]
pub async fn ipinstance(
    client: &Client,
    ns: &str,
    ip: &str,
    prefix: u8,
    subnet: &str,
    network: &str,
    pod: Option<(&str, &str)>,
    node: Option<&str>,
    owner: (&str, &str, &str),
    finalizer: bool,
) {
    let api: Api<IPInstance> = Api::namespaced(client.clone(), ns);
    let addr: std::net::IpAddr = ip.parse().expect("ip");
    let name = hybridnet_api::naming::ip_to_instance_name(addr);
    let mut o = IPInstance::new(
        &name,
        IPInstanceSpec {
            network: network.into(),
            subnet: subnet.into(),
            address: Address {
                version: if addr.is_ipv4() {
                    IpVersion::V4
                } else {
                    IpVersion::V6
                },
                ip: format!("{ip}/{prefix}"),
                gateway: None,
                net_id: None,
                mac: format!("02:12:34:00:{:02x}:{:02x}", prefix, addr.to_string().len()),
            },
            binding: Binding {
                referred_object: Some(ReferredObject {
                    kind: Some(owner.0.into()),
                    name: Some(owner.1.into()),
                    uid: Some(owner.2.into()),
                }),
                node_name: Some(node.unwrap_or("").into()),
                pod_uid: pod.map(|p| p.1.to_string()),
                pod_name: pod.map(|p| p.0.to_string()),
                stateful: None,
            },
        },
    );
    o.metadata.name = Some(name);
    o.metadata.namespace = Some(ns.into());
    let mut labels = BTreeMap::new();
    labels.insert(
        "networking.alibaba.com/subnet".to_string(),
        subnet.to_string(),
    );
    labels.insert(
        "networking.alibaba.com/network".to_string(),
        network.to_string(),
    );
    if let Some(n) = node {
        labels.insert("networking.alibaba.com/node".to_string(), n.to_string());
    }
    if let Some((p, _)) = pod {
        labels.insert("networking.alibaba.com/pod".to_string(), p.to_string());
    }
    o.metadata.labels = Some(labels);
    if finalizer {
        o.metadata.finalizers = Some(vec!["networking.alibaba.com/ip-allocated".into()]);
    }
    api.create(&PostParams::default(), &o)
        .await
        .expect("create ipinstance");
}

/// Sets `.status.nodeList` of a Network (the operator's job).
pub async fn network_nodes(client: &Client, network: &str, nodes: &[&str]) {
    let api: Api<hybridnet_api::v1::Network> = Api::all(client.clone());
    api.patch_status(
        network,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"nodeList": nodes}})),
    )
    .await
    .expect("network status");
}

/// Writes a captured command and its output for docs/cli.md (only with HYBRIDNET_CLI_DOCS=dir).
pub fn capture(name: &str, cmdline: &str, run: &Run) {
    let Ok(dir) = std::env::var("HYBRIDNET_CLI_DOCS") else {
        return;
    };
    let mut body = format!("$ {cmdline}\n{}", run.stdout);
    if !run.stderr.is_empty() {
        body.push_str(&run.stderr);
    }
    if run.code != 0 {
        body.push_str(&format!("(exit code {})\n", run.code));
    }
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(Path::new(&dir).join(format!("{name}.txt")), body);
}

/// Sets labels on a cluster-scoped object (a merge patch of metadata.labels).
pub async fn label_cluster_scoped<K>(client: &Client, name: &str, labels: &[(&str, &str)])
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    merge_metadata::<K>(client, name, "labels", labels).await;
}

/// Sets annotations on a cluster-scoped object (a merge patch of metadata.annotations).
pub async fn annotate_cluster_scoped<K>(client: &Client, name: &str, annotations: &[(&str, &str)])
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    merge_metadata::<K>(client, name, "annotations", annotations).await;
}

async fn merge_metadata<K>(client: &Client, name: &str, field: &str, pairs: &[(&str, &str)])
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {field: map}})),
    )
    .await
    .unwrap_or_else(|e| panic!("set {field} of {name}: {e}"));
}

/// A kubeconfig whose cluster does not answer (port 1 on loopback refuses connections).
pub fn dead_kubeconfig(dir: &Path) -> PathBuf {
    let p = dir.join("dead-kubeconfig");
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: http://127.0.0.1:1\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: u\ncurrent-context: dead\n",
    )
    .expect("write kubeconfig");
    p
}

/// How many `verb` requests on `resource` the server has seen while `f` ran.
pub async fn requests_during<F: std::future::Future<Output = Run>>(
    c: &Cluster,
    verb: &str,
    resource: &str,
    f: F,
) -> (Run, u64) {
    let before = c.server.faults().requests(verb, resource);
    let run = f.await;
    (run, c.server.faults().requests(verb, resource) - before)
}

/// Creates the HybridnetCluster `default` as `kubectl hybridnet install` would (spec only).
pub async fn hybridnet_cluster(
    client: &Client,
    version: &str,
) -> hybridnet_api::operator::HybridnetCluster {
    let api: Api<hybridnet_api::operator::HybridnetCluster> = Api::all(client.clone());
    let obj: hybridnet_api::operator::HybridnetCluster = serde_json::from_value(json!({
        "apiVersion": "operator.hybridnet.io/v1alpha1", "kind": "HybridnetCluster",
        "metadata": {"name": "default"}, "spec": {"version": version}}))
    .expect("HybridnetCluster");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create HybridnetCluster")
}

/// Writes the HybridnetCluster's status as the operator would: `observed` generation, the
/// Available/Progressing/Degraded conditions as (status, reason), observed at `observed`.
pub async fn hybridnet_cluster_status(
    client: &Client,
    observed: i64,
    version: &str,
    conditions: &[(&str, &str, &str)],
) {
    let api: Api<hybridnet_api::operator::HybridnetCluster> = Api::all(client.clone());
    let conds: Vec<serde_json::Value> = conditions
        .iter()
        .map(|(t, s, r)| {
            json!({"type": t, "status": s, "reason": r, "message": "",
            "lastTransitionTime": "2026-11-26T07:00:00Z", "observedGeneration": observed})
        })
        .collect();
    api.patch_status(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"observedGeneration": observed,
            "version": version, "targetVersion": version,
            "nodeAgents": {"desired": 3, "updated": 3, "ready": 3, "available": 3},
            "conditions": conds}})),
    )
    .await
    .expect("HybridnetCluster status");
}

/// A plugin command still running, whose stderr is read line by line as it comes (to act on
/// progress output, e.g. of `--wait`).
pub struct Running {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    /// Every stderr line read so far.
    pub seen: Vec<String>,
}

/// Starts `kubectl hybridnet --kubeconfig K ARGS...` without waiting for it.
pub fn spawn_kubectl(kubeconfig: &Path, args: &[&str]) -> Running {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.arg("hybridnet")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("PATH", path_env(None))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn kubectl");
    let stderr = child.stderr.take().expect("stderr");
    Running {
        child,
        stderr: tokio::io::BufReader::new(stderr).lines(),
        seen: Vec::new(),
    }
}

impl Running {
    /// Reads stderr until a line satisfies `pred` (at most 60 s) and returns it.
    pub async fn stderr_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let read = async {
            loop {
                match self.stderr.next_line().await.expect("read stderr") {
                    Some(l) => {
                        self.seen.push(l.clone());
                        if pred(&l) {
                            return Some(l);
                        }
                    }
                    None => return None,
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(60), read).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!("stderr ended before {what}; seen: {:#?}", self.seen),
            Err(_) => panic!("timed out waiting for {what}; seen: {:#?}", self.seen),
        }
    }

    /// Waits (at most 60 s) for the command to end; stderr holds every line, earlier ones too.
    pub async fn finish(mut self) -> Run {
        let mut rest = Vec::new();
        let drain = async {
            while let Some(l) = self.stderr.next_line().await.expect("read stderr") {
                rest.push(l);
            }
        };
        let out = async {
            tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
                .await
                .expect("command timed out")
                .expect("command output")
        };
        let ((), out) = tokio::join!(drain, out);
        let mut stderr = String::new();
        for l in self.seen.iter().chain(rest.iter()) {
            stderr.push_str(l);
            stderr.push('\n');
        }
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        }
    }
}

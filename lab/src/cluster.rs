//! Bringing the cluster up inside the topology: kube-lite, the lab daemon (host proxy, scheduler,
//! kubelets), Node objects, CRDs, the operator and the node agents started from the DaemonSet the
//! operator rendered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Node};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::state::LabDirs;
use crate::supervisor::{self, ProcessSpec};
use crate::topology::{ClusterNet, Layout, Role};

/// Port of the API server on the node segment.
pub const API_PORT: u16 = 6443;
/// Namespace of the operator (as in `deploy/`).
pub const OPERATOR_NAMESPACE: &str = "hybridnet-system";
/// Label selecting the nodes of the lab's underlay network.
pub const UNDERLAY_LABEL: (&str, &str) = ("network", "underlay");
/// Label of the BGP nodes (on routed links to the ToR).
pub const BGP_LABEL: (&str, &str) = ("network", "bgp");

/// How often the operators of a lab of several clusters check their RemoteClusters (the operator's
/// `--remote-cluster-check-interval-seconds`; upstream's period, the default, is 30 s): the mirrors
/// follow a remote change within one period.
pub const REMOTE_CHECK_SECONDS: u32 = 5;

/// What `up` was asked for (for one cluster of the lab), kept in the cluster's state folder for
/// `daemon`, `status` and `down`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabParams {
    pub id: String,
    /// Which cluster of the lab these are (0 for a one-cluster lab).
    #[serde(default)]
    pub cluster: u32,
    /// How many clusters the lab runs (each with these numbers of nodes).
    #[serde(default = "one")]
    pub clusters: u32,
    pub nodes: u32,
    pub underlay_nodes: u32,
    /// Nodes on routed links to the ToR (numbered after the segment's nodes), peering with its
    /// bird2 over BGP.
    #[serde(default)]
    pub bgp_nodes: u32,
    /// Folder with the project's binaries.
    pub bin_dir: PathBuf,
    /// What creates the pods' sandboxes.
    #[serde(default)]
    pub runtime: Runtime,
    /// Folder with the OCI archives of `make images` (the containerd runtime imports the pause
    /// image from it).
    #[serde(default)]
    pub images_dir: PathBuf,
}

/// What creates the pods' sandboxes on the lab's nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The lab kubelet itself: a network namespace and the CNI chain, run as a runtime would.
    #[default]
    Direct,
    /// A containerd per node (CRI plugin, runc), driven by the lab kubelet over CRI.
    Containerd,
}

fn one() -> u32 {
    1
}

impl LabParams {
    /// The pause image archive of `make images`.
    pub fn pause_archive(&self) -> PathBuf {
        self.images_dir.join("pause.oci.tar")
    }
}

impl LabParams {
    /// The lab's hosts and wires (of this cluster).
    pub fn layout(&self) -> Layout {
        crate::topology::cluster_layout(&self.id, self.cluster, self.nodes, self.bgp_nodes)
    }

    /// This cluster's addresses.
    pub fn net(&self) -> &'static ClusterNet {
        crate::topology::cluster_net(self.cluster)
    }

    /// The parameters of cluster `cluster` of the same lab.
    pub fn for_cluster(&self, cluster: u32) -> LabParams {
        LabParams {
            cluster,
            ..self.clone()
        }
    }

    /// Whether the API servers serve HTTPS with a bearer token: in a lab of several clusters,
    /// where each operator reaches the other cluster's API server (`kubectl hybridnet cluster
    /// connect` accepts only https servers with a CA).
    pub fn tls(&self) -> bool {
        self.clusters > 1
    }

    /// How the lab's messages name this cluster: `lab <id>`, and `lab <id> c<n>` in a lab of
    /// several clusters.
    pub fn label(&self) -> String {
        if self.clusters > 1 {
            format!(
                "lab {} {}",
                self.id,
                crate::topology::cluster_name(self.cluster)
            )
        } else {
            format!("lab {}", self.id)
        }
    }

    pub fn save(&self, dirs: &LabDirs) -> anyhow::Result<()> {
        std::fs::write(dirs.root.join("lab.json"), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    pub fn load(dirs: &LabDirs) -> anyhow::Result<Self> {
        let text = std::fs::read(dirs.root.join("lab.json")).with_context(|| {
            format!("no lab at {} (run `hybridnet-lab up`)", dirs.root.display())
        })?;
        Ok(serde_json::from_slice(&text)?)
    }
}

/// The API server's address on the cluster's node segment.
pub fn api_addr(params: &LabParams) -> String {
    format!("{}.2:{API_PORT}", params.net().segment_v4)
}

/// The API server's URL on the cluster's node segment.
pub fn api_url(params: &LabParams) -> String {
    let scheme = if params.tls() { "https" } else { "http" };
    format!("{scheme}://{}", api_addr(params))
}

/// A kube client from a kubeconfig file.
pub async fn client_from(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Waits for a file to exist (a process writing it at start).
pub fn wait_for_file(path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn binary(params: &LabParams, name: &str) -> anyhow::Result<PathBuf> {
    let p = params.bin_dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// Starts kube-lite in the control-plane namespace (with [`LabParams::tls`], HTTPS with a CA of
/// its own and a random bearer token, both in the kubeconfig it writes).
pub fn start_api_server(params: &LabParams, dirs: &LabDirs, layout: &Layout) -> anyhow::Result<()> {
    let cp = layout
        .host(&Role::ControlPlane)
        .context("no control plane host")?;
    let kc = dirs.lab_kubeconfig();
    let _ = std::fs::remove_file(&kc);
    let mut args = vec![
        "--listen".into(),
        api_addr(params),
        "--kubeconfig".into(),
        kc.display().to_string(),
        "--webhook-service".into(),
        format!(
            "{OPERATOR_NAMESPACE}/hybridnet-webhook=https://{}.2:9898",
            params.net().segment_v4
        ),
    ];
    let mut env = vec![];
    if params.tls() {
        args.push("--tls".into());
        // By environment: not in the process list.
        env.push(("KUBE_LITE_TOKEN".into(), random_token()?));
    }
    supervisor::start(
        dirs,
        &ProcessSpec {
            name: "kube-lite".into(),
            netns: Some(cp.netns.clone()),
            program: binary(params, "kube-lite")?,
            args,
            env,
        },
    )?;
    wait_for_file(&kc, Duration::from_secs(20))
}

/// 128 random bits, hex (the kernel's random UUID without its dashes).
fn random_token() -> anyhow::Result<String> {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("reading /proc/sys/kernel/random/uuid for an API token")?;
    Ok(uuid.trim().replace('-', ""))
}

/// Writes [`LabDirs::clusters_kubeconfig`]: one context per cluster of the lab, named `c0`,
/// `c1` (cluster, user and context alike), with the servers' addresses inside the lab, CAs and
/// tokens as each API server wrote them (JSON, which kubectl reads as YAML).
pub fn write_clusters_kubeconfig(dirs: &LabDirs, clusters: u32) -> anyhow::Result<()> {
    use kube::config::{Kubeconfig, NamedContext};
    let mut all = Kubeconfig::default();
    for c in 0..clusters {
        let path = dirs.cluster(c).lab_kubeconfig();
        let kc =
            Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = crate::topology::cluster_name(c);
        let (Some(mut cluster), Some(mut user)) = (
            kc.clusters.into_iter().next(),
            kc.auth_infos.into_iter().next(),
        ) else {
            bail!("{}: no cluster or user", path.display());
        };
        cluster.name = name.clone();
        user.name = name.clone();
        all.clusters.push(cluster);
        all.auth_infos.push(user);
        all.contexts.push(NamedContext {
            name: name.clone(),
            context: Some(kube::config::Context {
                cluster: name.clone(),
                user: Some(name),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    all.current_context = Some(crate::topology::cluster_name(0));
    all.api_version = Some("v1".into());
    all.kind = Some("Config".into());
    let path = dirs.clusters_kubeconfig();
    std::fs::write(&path, serde_json::to_vec_pretty(&all)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Starts bird2 as the ToR's BGP router when the lab (any of its clusters' `layouts`) has BGP
/// nodes.
pub fn start_tor_bird(dirs: &LabDirs, layouts: &[Layout]) -> anyhow::Result<()> {
    let (Some(conf), Some(first)) = (crate::topology::tor_bird_config(layouts), layouts.first())
    else {
        return Ok(());
    };
    let dir = dirs.root.join("tor");
    std::fs::create_dir_all(&dir)?;
    let conf_path = dir.join("bird.conf");
    std::fs::write(&conf_path, conf)?;
    supervisor::start(
        dirs,
        &ProcessSpec {
            name: "bird-tor".into(),
            netns: Some(first.tor().netns.clone()),
            // Found on PATH by `ip netns exec` (Debian's bird2 package).
            program: PathBuf::from("bird"),
            args: vec![
                "-f".into(),
                "-c".into(),
                conf_path.display().to_string(),
                "-s".into(),
                tor_bird_socket(dirs).display().to_string(),
            ],
            env: vec![],
        },
    )?;
    wait_for_file(&tor_bird_socket(dirs), Duration::from_secs(20))
}

/// The control socket of the ToR's bird (for `birdc -s`).
pub fn tor_bird_socket(dirs: &LabDirs) -> PathBuf {
    dirs.root.join("tor").join("bird.ctl")
}

/// Registers the lab's nodes as Node objects (Ready, with their addresses and labels).
pub async fn register_nodes(
    client: &kube::Client,
    params: &LabParams,
    layout: &Layout,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for (i, h) in layout.nodes().enumerate() {
        let Role::Node(n) = h.role else { continue };
        let name = format!("node{n}");
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
        ]);
        if h.is_routed() {
            labels.insert(BGP_LABEL.0.into(), BGP_LABEL.1.into());
        } else if (i as u32) < params.underlay_nodes {
            labels.insert(UNDERLAY_LABEL.0.into(), UNDERLAY_LABEL.1.into());
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context(format!("creating Node {name}")),
        }
        let v4 = h.ip4().unwrap_or_default().to_string();
        let v6 = h.ip6().unwrap_or_default().to_string();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": v4}, {"type": "InternalIP", "address": v6}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "lab kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kernelVersion": "", "osImage": "hybridnet lab", "containerRuntimeVersion": "lab://1", "kubeletVersion": "v1.32.0", "kubeProxyVersion": "", "bootID": "", "machineID": "", "systemUUID": ""},
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .with_context(|| format!("reporting Node {name} ready"))?;
    }
    Ok(())
}

/// Creates the operator's namespace (the GitOps install's `deploy/namespace.yaml`).
pub async fn create_operator_namespace(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": OPERATOR_NAMESPACE}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating the operator namespace"),
    }
}

/// Applies hybridnet's CRDs (generated from the types, as committed in `crds/`).
pub async fn apply_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in hybridnet_api::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply("hybridnet-lab").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
    }
    Ok(())
}

/// Finds the node agent DaemonSet the operator rendered.
pub async fn wait_for_agent_daemonset(
    client: &kube::Client,
    timeout: Duration,
) -> anyhow::Result<DaemonSet> {
    let dss: Api<DaemonSet> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let list = dss.list(&ListParams::default()).await?;
        if let Some(ds) = list.items.into_iter().find(|d| {
            d.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains("hybridnet"))
        }) {
            return Ok(ds);
        }
        if Instant::now() > deadline {
            bail!("the operator rendered no hybridnet DaemonSet within {timeout:?} (see its log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How a node emulates the pod's volume mounts: container path -> folder of this node.
pub fn mount_map(
    ds: &DaemonSet,
    container: &Container,
    dirs: &LabDirs,
    node: &str,
) -> Vec<(String, String)> {
    let volumes: BTreeMap<String, String> = ds
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), v.host_path.as_ref()?.path.clone())))
        .collect();
    let mut map = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(host) = volumes.get(&m.name) else {
            continue;
        };
        // Per-node state goes to the node's folder.
        let local = if host.contains("cni/bin") {
            dirs.cni_bin(node)
        } else if host.contains("cni/net.d") {
            dirs.cni_conf(node)
        } else if host.starts_with("/run/hybridnet") || host.starts_with("/var/run/hybridnet") {
            dirs.agent_run(node)
        } else {
            // Shared host paths (/proc/sys/net, /var/run/netns, /lib/modules): every lab node is
            // this host, so the container path stands for the host path itself.
            PathBuf::from(host)
        };
        map.push((m.mount_path.clone(), local.display().to_string()));
    }
    // Longest paths first, so nested mounts win.
    map.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
    map
}

fn rewrite(s: &str, map: &[(String, String)]) -> String {
    for (from, to) in map {
        if let Some(rest) = s.strip_prefix(from.as_str()) {
            return format!("{to}{rest}");
        }
        if let Some((flag, value)) = s.split_once('=')
            && let Some(rest) = value.strip_prefix(from.as_str())
        {
            return format!("{flag}={to}{rest}");
        }
    }
    s.to_string()
}

/// The environment of a DaemonSet container on one lab node: values (node paths rewritten by
/// `map`) and the field references a kubelet resolves.
pub fn container_env(
    ds: &DaemonSet,
    container: &Container,
    node: &str,
    node_ip: &str,
    map: &[(String, String)],
) -> Vec<(String, String)> {
    let ns_of_ds = ds.metadata.namespace.clone().unwrap_or_default();
    let mut env = Vec::new();
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            rewrite(v, map)
        } else if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            match f.field_path.as_str() {
                "spec.nodeName" => node.to_string(),
                "status.hostIP" | "status.podIP" => node_ip.to_string(),
                "metadata.namespace" => ns_of_ds.clone(),
                "metadata.name" => {
                    format!("{}-{node}", ds.metadata.name.as_deref().unwrap_or("agent"))
                }
                _ => continue,
            }
        } else {
            continue;
        };
        env.push((e.name.clone(), value));
    }
    env
}

/// The process a container of the DaemonSet becomes on one lab node.
pub fn container_process(
    ds: &DaemonSet,
    container: &Container,
    params: &LabParams,
    dirs: &LabDirs,
    node: &str,
    node_ip: &str,
    netns: &str,
) -> anyhow::Result<ProcessSpec> {
    let map = mount_map(ds, container, dirs, node);
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    if argv.is_empty() {
        bail!("container {} has no command", container.name);
    }
    let argv: Vec<String> = argv.iter().map(|a| rewrite(a, &map)).collect();
    // The image's binaries are the workspace's.
    let program_name = Path::new(&argv[0])
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(&argv[0])
        .to_string();
    let program = binary(params, &program_name)?;
    let mut env = vec![(
        "KUBECONFIG".to_string(),
        dirs.lab_kubeconfig().display().to_string(),
    )];
    env.extend(container_env(ds, container, node, node_ip, &map));
    Ok(ProcessSpec {
        name: format!("{}-{node}", container.name),
        netns: Some(netns.to_string()),
        program,
        args: argv[1..].to_vec(),
        env,
    })
}

/// Runs the DaemonSet's init containers, then starts its containers on every node.
pub async fn start_node_agents(
    params: &LabParams,
    dirs: &LabDirs,
    layout: &Layout,
    ds: &DaemonSet,
) -> anyhow::Result<()> {
    for h in layout.nodes() {
        start_node_agent(params, dirs, h, ds)?;
    }
    Ok(())
}

/// The revision of a DaemonSet's pod template: what a node's agent was started from. FNV-1a of
/// the template's JSON, stable across processes (the lab daemon compares what `up` recorded).
pub fn template_revision(ds: &DaemonSet) -> String {
    let bytes = serde_json::to_vec(&ds.spec.template).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Where a node records the template revision its agent runs.
fn revision_file(dirs: &LabDirs, node: &str) -> PathBuf {
    dirs.node(node).join("agent-revision")
}

/// The template revision a node's agent was started from (None: not started yet).
pub fn node_revision(dirs: &LabDirs, node: &str) -> Option<String> {
    std::fs::read_to_string(revision_file(dirs, node))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs the DaemonSet's init containers on one node, then starts its containers there (what the
/// kubelet does for the node's DaemonSet pod), and records the template revision.
pub fn start_node_agent(
    params: &LabParams,
    dirs: &LabDirs,
    h: &crate::topology::Host,
    ds: &DaemonSet,
) -> anyhow::Result<()> {
    let pod_spec = ds
        .spec
        .template
        .spec
        .as_ref()
        .context("DaemonSet without a pod template")?;
    let Role::Node(n) = h.role else {
        bail!("{} is not a node", h.netns)
    };
    let node = format!("node{n}");
    for d in [
        dirs.cni_bin(&node),
        dirs.cni_conf(&node),
        dirs.agent_run(&node),
    ] {
        std::fs::create_dir_all(d)?;
    }
    let ip = h.ip4().unwrap_or_default().to_string();
    for c in pod_spec.init_containers.iter().flatten() {
        let spec = container_process(ds, c, params, dirs, &node, &ip, &h.netns)?;
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("init container {} on {node}", c.name))?;
        if !out.status.success() {
            bail!(
                "init container {} on {node} failed: {}",
                c.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for c in &pod_spec.containers {
        let spec = container_process(ds, c, params, dirs, &node, &ip, &h.netns)?;
        supervisor::start(dirs, &spec)?;
    }
    std::fs::write(revision_file(dirs, &node), template_revision(ds))?;
    Ok(())
}

/// Stops one node's DaemonSet containers (its DaemonSet pod deleted for a rolling update).
fn stop_node_agent(dirs: &LabDirs, ds: &DaemonSet, node: &str) {
    for c in ds
        .spec
        .template
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
    {
        supervisor::stop(dirs, &format!("{}-{node}", c.name), Duration::from_secs(5));
    }
}

/// Waits until every node has the conflist its agent installs.
pub fn wait_for_conflists(
    dirs: &LabDirs,
    layout: &Layout,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for h in layout.nodes() {
        let Role::Node(n) = h.role else { continue };
        let dir = dirs.cni_conf(&format!("node{n}"));
        while crate::cni_runtime::load_conflist(&dir).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "node{n}: no CNI conflist in {} within {timeout:?} (see logs/*-node{n}.log)",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Whether the agent on `netns` answers `GET /readyz` with 200 on `port`.
pub async fn agent_ready(netns: &str, port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = crate::proxy::connect_in_netns(netns, target).await else {
        return false;
    };
    let req = b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(n)) if n >= 12 && &buf[9..12] == b"200"
    )
}

/// The lab's DaemonSet controller for the node agent DaemonSet, acting as kube-controller-manager
/// and the kubelets would: a node whose agent runs an older pod template is rolled (its agent
/// stopped, the new template's init containers run and its containers started) one node at a
/// time and only while every agent is ready (`maxUnavailable: 1`); the status reports the nodes
/// scheduled, updated (running the current template) and ready (`/readyz` answers), so the
/// operator's rollout conditions work. Nodes whose agent `up` has not started yet are left alone.
pub async fn daemonset_controller(
    client: kube::Client,
    params: LabParams,
    dirs: LabDirs,
    layout: Layout,
) -> anyhow::Result<()> {
    let dss: Api<DaemonSet> = Api::all(client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Ok(list) = dss.list(&ListParams::default()).await else {
            continue;
        };
        for ds in list
            .items
            .iter()
            .filter(|d| d.metadata.name.as_deref() == Some("hybridnet-node"))
        {
            let port = ds
                .spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.readiness_probe.as_ref())
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| match &g.port {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => {
                        u16::try_from(*p).ok()
                    }
                    _ => None,
                })
                .unwrap_or(11021);
            let revision = template_revision(ds);
            let nodes: Vec<_> = layout.nodes().collect();
            let (mut ready, mut updated, mut started) = (0, 0, 0);
            let mut outdated = Vec::new();
            for h in &nodes {
                let Role::Node(n) = h.role else { continue };
                let node = format!("node{n}");
                ready += i32::from(agent_ready(&h.netns, port).await);
                match node_revision(&dirs, &node) {
                    None => {}
                    Some(r) => {
                        started += 1;
                        if r == revision {
                            updated += 1;
                        } else {
                            outdated.push(*h);
                        }
                    }
                }
            }
            let desired = nodes.len() as i32;
            if let Some(h) = outdated.first()
                && ready == desired
                && started == desired
                && let Role::Node(n) = h.role
            {
                let node = format!("node{n}");
                tracing::info!(
                    node,
                    revision,
                    "lab DaemonSet controller: rolling the node agent"
                );
                let rolled = match params.runtime {
                    Runtime::Direct => {
                        stop_node_agent(&dirs, ds, &node);
                        start_node_agent(&params, &dirs, h, ds)
                    }
                    Runtime::Containerd => crate::cri_agent::replace(&params, &dirs, h, ds).await,
                };
                if let Err(e) = rolled {
                    tracing::warn!(node, error = %e, "lab DaemonSet controller: roll failed");
                }
                ready -= 1;
                updated += 1;
            }
            let status = json!({"status": {
                "currentNumberScheduled": desired,
                "desiredNumberScheduled": desired,
                "numberMisscheduled": 0,
                "updatedNumberScheduled": updated,
                "numberReady": ready,
                "numberAvailable": ready,
                "numberUnavailable": desired - ready,
                "observedGeneration": ds.metadata.generation,
            }});
            let ns = ds.metadata.namespace.clone().unwrap_or_default();
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
            let _ = api
                .patch_status(
                    "hybridnet-node",
                    &PatchParams::default(),
                    &Patch::Merge(status),
                )
                .await;
        }
    }
}

/// Waits until `HybridnetCluster/default` reports Available=True.
pub async fn wait_for_available(client: &kube::Client, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<hybridnet_api::operator::HybridnetCluster> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let hc = api.get_opt("default").await?;
        let conds = hc
            .as_ref()
            .and_then(|h| h.status.as_ref())
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if conds
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("HybridnetCluster default is not Available after {timeout:?}: {conds:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The operator process, run as the operator Deployment of `deploy/operator.yaml` runs it.
pub fn operator_process(
    params: &LabParams,
    dirs: &LabDirs,
    netns: &str,
) -> anyhow::Result<ProcessSpec> {
    let mut args = vec!["--webhook-cert-secret=hybridnet-webhook-cert".to_string()];
    if params.clusters > 1 {
        args.push(format!(
            "--remote-cluster-check-interval-seconds={REMOTE_CHECK_SECONDS}"
        ));
    }
    Ok(ProcessSpec {
        name: "operator".into(),
        netns: Some(netns.to_string()),
        program: binary(params, "hybridnet-operator")?,
        args,
        env: vec![
            (
                "KUBECONFIG".into(),
                dirs.lab_kubeconfig().display().to_string(),
            ),
            ("NAMESPACE".into(), OPERATOR_NAMESPACE.into()),
            ("POD_NAME".into(), "hybridnet-operator-lab-0".into()),
            (
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ],
    })
}

/// The node agent process of one node, from the DaemonSet's main container.
pub fn agent_process(
    params: &LabParams,
    dirs: &LabDirs,
    layout: &Layout,
    ds: &DaemonSet,
    node: u32,
) -> anyhow::Result<ProcessSpec> {
    let h = layout.host(&Role::Node(node)).context("no such node")?;
    let c = ds
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("DaemonSet without a container")?;
    container_process(
        ds,
        c,
        params,
        dirs,
        &format!("node{node}"),
        h.ip4().unwrap_or_default(),
        &h.netns,
    )
}

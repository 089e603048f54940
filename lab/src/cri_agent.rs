//! The node agent from the image, through containerd (`--runtime containerd`): the DaemonSet the
//! operator rendered, run on one lab node as a kubelet runs its pod: a host-network sandbox, the
//! init containers (`install-cni`) to completion, then the agent container, each with the image,
//! command, arguments, environment, securityContext (user, capabilities, read-only root,
//! no-new-privileges) and hostPath mounts (with their propagation) as rendered. A node's host paths
//! are the node's folders (`crate::cluster::mount_map`); the API server is reached with the lab's
//! kubeconfig, mounted read-only, where a real pod has its service account token.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Container;

use crate::cluster::LabParams;
use crate::cri::{ContainerConfig, CriClient, Mount, SandboxConfig};
use crate::cri_node::{LAB_LABEL, cgroup_parent, containerd_dir, pod_log_dir};
use crate::state::LabDirs;
use crate::topology::{Host, Role};

/// Label of the agent's sandbox (`down` removes it after the pods, whose CNI DEL needs it).
pub const AGENT_LABEL: &str = "hybridnet-lab/node-agent";
/// Debian's CA bundle (`ca-certificates`), which rustls' native roots read.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the lab's kubeconfig is mounted in the agent's containers.
pub const KUBECONFIG_IN_CONTAINER: &str = "/etc/hybridnet-lab/kubeconfig";

fn propagation(p: Option<&str>) -> i64 {
    match p {
        Some("HostToContainer") => 1,
        Some("Bidirectional") => 2,
        _ => 0,
    }
}

/// The CRI configuration of one container of the DaemonSet on `node`.
pub fn container_config(
    ds: &DaemonSet,
    c: &Container,
    dirs: &LabDirs,
    node: &str,
    node_ip: &str,
) -> anyhow::Result<ContainerConfig> {
    let image = c
        .image
        .clone()
        .with_context(|| format!("container {} has no image", c.name))?;
    let map: std::collections::BTreeMap<String, String> =
        crate::cluster::mount_map(ds, c, dirs, node)
            .into_iter()
            .collect();
    let mut mounts: Vec<Mount> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let host = map.get(&m.mount_path)?;
            // Symlinks resolved (/var/run -> /run): containerd checks the propagation of the
            // mount that holds the path it is given, without resolving them.
            let host = std::fs::canonicalize(host)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| host.clone());
            Some(Mount {
                container_path: m.mount_path.clone(),
                host_path: host,
                readonly: m.read_only.unwrap_or(false),
                propagation: propagation(m.mount_propagation.as_deref()),
            })
        })
        .collect();
    mounts.push(Mount {
        container_path: KUBECONFIG_IN_CONTAINER.into(),
        host_path: dirs.lab_kubeconfig().display().to_string(),
        readonly: true,
        propagation: 0,
    });
    // The image holds no CA certificates, and kube's client loads the system's roots when the
    // kubeconfig names no CA (the lab's API server speaks HTTP; a real pod's service account
    // brings its CA): the host's bundle goes with the lab's kubeconfig (docs/images.md).
    if Path::new(HOST_CA_BUNDLE).is_file() {
        mounts.push(Mount {
            container_path: HOST_CA_BUNDLE.into(),
            host_path: HOST_CA_BUNDLE.into(),
            readonly: true,
            propagation: 0,
        });
    }
    let mut envs = vec![(
        "KUBECONFIG".to_string(),
        KUBECONFIG_IN_CONTAINER.to_string(),
    )];
    envs.extend(crate::cluster::container_env(ds, c, node, node_ip, &[]));
    if let Ok(level) = std::env::var("RUST_LOG") {
        envs.push(("RUST_LOG".into(), level));
    }
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    Ok(ContainerConfig {
        name: c.name.clone(),
        attempt: 0,
        image,
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        envs,
        mounts,
        labels: vec![],
        log_path: format!("{}/0.log", c.name),
        privileged: sc.privileged.unwrap_or(false),
        // As the kubelet passes them: without `CAP_` (containerd adds it).
        add_capabilities: caps.add.unwrap_or_default(),
        drop_capabilities: caps.drop.unwrap_or_default(),
        run_as_user: sc.run_as_user,
        run_as_group: sc.run_as_group,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        host_network: true,
    })
}

/// The agent pod's sandbox on `node`.
pub fn sandbox_config(ds: &DaemonSet, dirs: &LabDirs, lab_id: &str, node: &str) -> SandboxConfig {
    let name = format!(
        "{}-{node}",
        ds.metadata.name.as_deref().unwrap_or("hybridnet-node")
    );
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let uid = format!("{name}-{}", crate::cluster::template_revision(ds));
    let mut labels: Vec<(String, String)> = ds
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend([
        ("io.kubernetes.pod.name".to_string(), name.clone()),
        ("io.kubernetes.pod.namespace".to_string(), namespace.clone()),
        ("io.kubernetes.pod.uid".to_string(), uid.clone()),
        (LAB_LABEL.to_string(), lab_id.to_string()),
        (AGENT_LABEL.to_string(), "true".to_string()),
    ]);
    SandboxConfig {
        // A host-network sandbox shares the node's UTS namespace: no hostname of its own.
        hostname: String::new(),
        log_directory: pod_log_dir(dirs, node)
            .join(format!("{namespace}_{name}_{uid}"))
            .display()
            .to_string(),
        name,
        namespace,
        uid,
        attempt: 0,
        labels,
        annotations: vec![],
        cgroup_parent: cgroup_parent(lab_id, node),
        host_network: true,
    }
}

/// Runs the DaemonSet's pod on node `h` through its containerd: the sandbox, the init containers
/// to completion (a failure fails, with the container's log), the containers started.
pub async fn start(
    params: &LabParams,
    dirs: &LabDirs,
    h: &Host,
    ds: &DaemonSet,
) -> anyhow::Result<()> {
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
    let pod_spec = ds
        .spec
        .template
        .spec
        .as_ref()
        .context("DaemonSet without a pod template")?;
    let ip = h.ip4().unwrap_or_default().to_string();
    let client = CriClient::new(&containerd_dir(dirs, &node).join("containerd.sock"));
    let sc = sandbox_config(ds, dirs, &params.id, &node);
    std::fs::create_dir_all(&sc.log_directory)?;
    let sandbox = client
        .run_pod_sandbox(&sc)
        .await
        .context("the agent's sandbox")?;
    for c in pod_spec.init_containers.iter().flatten() {
        let cc = container_config(ds, c, dirs, &node, &ip)?;
        let id = client
            .create_container(&sandbox, &cc, &sc)
            .await
            .with_context(|| format!("creating init container {}", c.name))?;
        client.start_container(&id).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            let (state, code) = client.container_status(&id).await?;
            if state == 2 {
                break code;
            }
            if Instant::now() > deadline {
                bail!("init container {} on {node} still runs after 60 s", c.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if code != 0 {
            let log = std::fs::read_to_string(Path::new(&sc.log_directory).join(&cc.log_path))
                .unwrap_or_default();
            bail!("init container {} on {node} exited {code}: {log}", c.name);
        }
    }
    for c in &pod_spec.containers {
        let cc = container_config(ds, c, dirs, &node, &ip)?;
        let id = client
            .create_container(&sandbox, &cc, &sc)
            .await
            .with_context(|| format!("creating container {}", c.name))?;
        client.start_container(&id).await?;
    }
    std::fs::write(
        dirs.node(&node).join("agent-revision"),
        crate::cluster::template_revision(ds),
    )?;
    Ok(())
}

/// The agent pods' restart policy (`Always`), as the kubelet applies it: every second, on every
/// node, a container of the DaemonSet's pod that has exited is created again with the next
/// attempt number and started; the exited ones are removed.
pub async fn restart_exited(
    client: kube::Client,
    params: LabParams,
    dirs: LabDirs,
    layout: crate::topology::Layout,
) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(ds) =
            crate::cluster::wait_for_agent_daemonset(&client, Duration::from_secs(5)).await
        else {
            continue;
        };
        for h in layout.nodes() {
            if let Err(e) = restart_exited_on(&params, &dirs, h, &ds).await {
                tracing::warn!(node = h.netns, error = %e, "lab kubelet: restarting the node agent");
            }
        }
    }
}

async fn restart_exited_on(
    params: &LabParams,
    dirs: &LabDirs,
    h: &Host,
    ds: &DaemonSet,
) -> anyhow::Result<()> {
    let Role::Node(n) = h.role else { return Ok(()) };
    let node = format!("node{n}");
    let client = CriClient::new(&containerd_dir(dirs, &node).join("containerd.sock"));
    let label = [(AGENT_LABEL.to_string(), "true".to_string())];
    let Some(sandbox) = client
        .list_pod_sandboxes(&label)
        .await?
        .into_iter()
        .find(|s| s.ready)
    else {
        return Ok(());
    };
    let containers = client.list_containers(&sandbox.id).await?;
    let ip = h.ip4().unwrap_or_default().to_string();
    for c in ds
        .spec
        .template
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
    {
        let mine: Vec<_> = containers.iter().filter(|x| x.name == c.name).collect();
        if mine.is_empty() || mine.iter().any(|x| x.state != 2) {
            continue;
        }
        let attempt = mine.iter().map(|x| x.attempt).max().unwrap_or(0) + 1;
        tracing::info!(
            node,
            container = c.name,
            attempt,
            "lab kubelet: the node agent exited, restarting it"
        );
        let mut cc = container_config(ds, c, dirs, &node, &ip)?;
        cc.attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        cc.log_path = format!("{}/{attempt}.log", c.name);
        let sc = sandbox_config(ds, dirs, &params.id, &node);
        let id = client.create_container(&sandbox.id, &cc, &sc).await?;
        client.start_container(&id).await?;
        for old in mine {
            let _ = client.remove_container(&old.id).await;
        }
    }
    Ok(())
}

/// Replaces the node's agent pod by one of `ds`'s current template (a rolling update's step):
/// the old sandbox stopped and removed (its containers killed), then [`start`].
pub async fn replace(
    params: &LabParams,
    dirs: &LabDirs,
    h: &Host,
    ds: &DaemonSet,
) -> anyhow::Result<()> {
    let Role::Node(n) = h.role else {
        bail!("{} is not a node", h.netns)
    };
    let node = format!("node{n}");
    let client = CriClient::new(&containerd_dir(dirs, &node).join("containerd.sock"));
    let label = [(AGENT_LABEL.to_string(), "true".to_string())];
    for old in client.list_pod_sandboxes(&label).await? {
        crate::cri_node::stop_and_remove(&client, &old.id, crate::cri_node::STOP_RETRY).await?;
    }
    start(params, dirs, h, ds).await
}

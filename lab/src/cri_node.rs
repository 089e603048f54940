//! The lab on containerd (`hybridnet-lab up --runtime containerd`): every node runs its own
//! containerd (Debian's package, its CRI plugin, runc) in the node's network namespace, with its
//! own root, state, socket and cgroup parent under the node's folder, and the node's CNI bin
//! folder. The lab kubelet of the node is then a CRI client of it ([`create_sandbox`],
//! [`remove_sandbox`]): containerd's own CNI library runs the conflist the agent installed, with
//! the `K8S_POD_*` arguments it derives from the sandbox's metadata, as on a real node.
//!
//! Every lab node shares this host's file system, so the conflist's host paths (the agent's
//! socket under `/run/hybridnet`) are rewritten to the node's folders in a copy that containerd
//! reads ([`sync_conflist`]), as the direct kubelet does in memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::containerd::{ContainerdSpec, CriSpec};
use crate::cri::{ContainerConfig, CriClient, SandboxConfig};
use crate::state::LabDirs;
use crate::supervisor::{self, ProcessSpec};

/// Debian's CNI plugins (`containernetworking-plugins`). containerd's CRI runs their `loopback`
/// for every sandbox from its CNI bin folder, where a real node has it from its CNI plugins
/// package (/opt/cni/bin).
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// The image name pods of the lab use when they need nothing but their network (the demo's, the
/// tests'): their container runs the pause image.
pub const LAB_IMAGE: &str = "lab";
/// Label on every sandbox the lab creates (value: the lab id).
pub const LAB_LABEL: &str = "hybridnet-lab";

/// Holds the node's containerd root, state, socket, configuration and log.
pub fn containerd_dir(dirs: &LabDirs, node: &str) -> PathBuf {
    dirs.node(node).join("containerd")
}

/// The CNI configuration folder containerd reads: the agent's conflist with the node's paths.
pub fn cri_conf_dir(dirs: &LabDirs, node: &str) -> PathBuf {
    dirs.node(node).join("cri/net.d")
}

/// Where containerd writes the pods' container logs.
pub fn pod_log_dir(dirs: &LabDirs, node: &str) -> PathBuf {
    dirs.node(node).join("pods")
}

/// The cgroup (cgroupfs syntax) under which the node's pods run, so that `down` finds them all.
pub fn cgroup_parent(lab_id: &str, node: &str) -> String {
    format!("/hybridnet-lab-{lab_id}/{node}")
}

/// The supervisor name of a node's containerd.
pub fn process_name(node: &str) -> String {
    format!("containerd-{node}")
}

/// The containerd of `node`, for [`crate::containerd::config_toml`].
pub fn spec(dirs: &LabDirs, node: &str, netns: &str, sandbox_image: &str) -> ContainerdSpec {
    ContainerdSpec {
        dir: containerd_dir(dirs, node),
        netns: Some(netns.to_string()),
        cri: Some(CriSpec {
            cni_bin_dir: dirs.cni_bin(node),
            cni_conf_dir: cri_conf_dir(dirs, node),
            sandbox_image: sandbox_image.to_string(),
        }),
    }
}

/// Node host paths and the lab folders standing for them (see [`crate::kubelet::localize_conflist`]).
pub fn host_paths(dirs: &LabDirs, node: &str) -> Vec<(String, PathBuf)> {
    vec![("/run/hybridnet".into(), dirs.agent_run(node))]
}

/// Copies the agent's conflist, its host paths rewritten to the node's folders, into the folder
/// containerd reads, when it differs; removes other conflists there (containerd takes the first by
/// name). Returns whether it wrote.
pub fn sync_conflist(dirs: &LabDirs, node: &str) -> anyhow::Result<bool> {
    let (path, mut list) =
        crate::cni_runtime::load_conflist(&dirs.cni_conf(node)).map_err(anyhow::Error::msg)?;
    crate::kubelet::localize_conflist(&mut list, &host_paths(dirs, node));
    let name = path
        .file_name()
        .context("conflist without a file name")?
        .to_string_lossy()
        .into_owned();
    let out_dir = cri_conf_dir(dirs, node);
    std::fs::create_dir_all(&out_dir)?;
    for e in std::fs::read_dir(&out_dir)?.flatten() {
        if e.file_name().to_string_lossy() != name {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let text = serde_json::to_vec_pretty(&list)?;
    let target = out_dir.join(&name);
    if std::fs::read(&target).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let tmp = out_dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("writing {}", target.display()))?;
    Ok(true)
}

/// Starts the node's containerd (supervised, in the node's network namespace entered alone with
/// `nsenter --net`, docs/images.md), waits until its CRI answers and imports the pause image and
/// the `other` image archives.
pub async fn start(
    dirs: &LabDirs,
    node: &str,
    netns: &str,
    pause_archive: &Path,
    other: &[PathBuf],
) -> anyhow::Result<()> {
    let image = crate::containerd::archive_image_name(pause_archive)?;
    let spec = spec(dirs, node, netns, &image);
    std::fs::create_dir_all(&spec.dir)?;
    std::fs::create_dir_all(pod_log_dir(dirs, node))?;
    std::fs::create_dir_all(dirs.cni_bin(node))?;
    let loopback = dirs.cni_bin(node).join("loopback");
    if !loopback.exists() {
        std::os::unix::fs::symlink(Path::new(DEBIAN_CNI_DIR).join("loopback"), &loopback)
            .with_context(|| format!("linking {}", loopback.display()))?;
    }
    // The agent may not have installed its conflist yet (it runs through this containerd);
    // the kubelet copies it before every sandbox.
    let _ = sync_conflist(dirs, node);
    let config = spec.dir.join("config.toml");
    std::fs::write(&config, crate::containerd::config_toml(&spec))
        .with_context(|| format!("writing {}", config.display()))?;
    start_process(dirs, node, netns)?;
    wait_ready(dirs, node).await?;
    for archive in std::iter::once(pause_archive).chain(other.iter().map(PathBuf::as_path)) {
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(spec.socket())
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "{node}: importing {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Starts the node's containerd process (its configuration written already).
fn start_process(dirs: &LabDirs, node: &str, netns: &str) -> anyhow::Result<()> {
    let config = containerd_dir(dirs, node).join("config.toml");
    supervisor::start(
        dirs,
        &ProcessSpec {
            name: process_name(node),
            netns: None,
            program: PathBuf::from("nsenter"),
            args: vec![
                format!("--net=/run/netns/{netns}"),
                "containerd".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            env: vec![],
        },
    )?;
    Ok(())
}

/// Waits until the node's containerd answers CRI.
async fn wait_ready(dirs: &LabDirs, node: &str) -> anyhow::Result<()> {
    let client = CriClient::new(&containerd_dir(dirs, node).join("containerd.sock"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.version().await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                bail!(
                    "{node}: containerd's CRI does not answer after 60 s: {e} (see logs/{}.log)",
                    process_name(node)
                )
            }
            Err(_) if !supervisor::alive(dirs, &process_name(node)) => {
                bail!(
                    "{node}: containerd exited (see logs/{}.log)",
                    process_name(node)
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// Kills the node's containerd (SIGKILL: a crash; its shims and containers keep running) and
/// starts it again on the same state; returns once its CRI answers.
pub async fn restart(dirs: &LabDirs, node: &str, netns: &str) -> anyhow::Result<()> {
    let name = process_name(node);
    let pid = supervisor::pid(dirs, &name).with_context(|| format!("{name} is not running"))?;
    kill(Pid::from_raw(pid), Signal::SIGKILL).with_context(|| format!("killing {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while supervisor::alive(dirs, &name) {
        // Reaps it when this process started it (a restart earlier); otherwise not our child.
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if Instant::now() > deadline {
            bail!("{name} (pid {pid}) still runs 10 s after SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start_process(dirs, node, netns)?;
    wait_ready(dirs, node).await
}

/// What the lab kubelet of a containerd node needs.
#[derive(Debug, Clone)]
pub struct CriRuntime {
    pub client: CriClient,
    pub dirs: LabDirs,
    pub node: String,
    pub lab_id: String,
    /// The pause image (pods of [`LAB_IMAGE`] run it as their container too).
    pub pause_image: String,
}

/// A pod sandbox created through CRI.
#[derive(Debug)]
pub struct CriSandbox {
    pub id: String,
    /// The lab's name for the sandbox's network namespace (`ip netns attach`), as in the direct mode.
    pub netns: String,
    pub ips: Vec<String>,
}

/// The sandbox configuration the kubelet sends for `pod` (its metadata, labels and annotations).
pub fn sandbox_config(rt: &CriRuntime, pod: &Pod, uid: &str) -> SandboxConfig {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut labels: Vec<(String, String)> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend([
        ("io.kubernetes.pod.name".to_string(), name.clone()),
        ("io.kubernetes.pod.namespace".to_string(), namespace.clone()),
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
        (LAB_LABEL.to_string(), rt.lab_id.clone()),
    ]);
    SandboxConfig {
        hostname: name.clone(),
        log_directory: pod_log_dir(&rt.dirs, &rt.node)
            .join(format!("{namespace}_{name}_{uid}"))
            .display()
            .to_string(),
        name,
        namespace,
        uid: uid.to_string(),
        attempt: 0,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        cgroup_parent: cgroup_parent(&rt.lab_id, &rt.node),
        host_network: false,
    }
}

/// The configuration of the pod's first container: a pod of [`LAB_IMAGE`] (or without image)
/// runs the pause image as it is; another runs its image with its command and arguments.
pub fn container_config(rt: &CriRuntime, pod: &Pod) -> ContainerConfig {
    let c = pod.spec.as_ref().and_then(|s| s.containers.first());
    let name = c.map(|c| c.name.clone()).unwrap_or_else(|| "main".into());
    let image = c.and_then(|c| c.image.clone()).unwrap_or_default();
    let (image, command, args) = if image.is_empty() || image == LAB_IMAGE {
        (rt.pause_image.clone(), Vec::new(), Vec::new())
    } else {
        (
            image,
            c.and_then(|c| c.command.clone()).unwrap_or_default(),
            c.and_then(|c| c.args.clone()).unwrap_or_default(),
        )
    };
    ContainerConfig {
        log_path: format!("{name}/0.log"),
        name,
        image,
        command,
        args,
        ..Default::default()
    }
}

/// Creates the pod's sandbox (containerd runs the CNI chain), its container, and names the
/// sandbox's network namespace as the direct mode does. A failure leaves no sandbox behind.
pub async fn create_sandbox(rt: &CriRuntime, pod: &Pod, uid: &str) -> anyhow::Result<CriSandbox> {
    sync_conflist(&rt.dirs, &rt.node)?;
    // A sandbox of this pod that containerd still has is the leftover of a failed attempt (its
    // name stays reserved until it is removed), as a kubelet's garbage collection finds it.
    let uid_label = [("io.kubernetes.pod.uid".to_string(), uid.to_string())];
    for old in rt.client.list_pod_sandboxes(&uid_label).await? {
        stop_and_remove(&rt.client, &old.id, STOP_RETRY)
            .await
            .with_context(|| format!("removing the earlier sandbox {} of the pod", old.id))?;
    }
    let sc = sandbox_config(rt, pod, uid);
    std::fs::create_dir_all(&sc.log_directory)?;
    let id = rt.client.run_pod_sandbox(&sc).await?;
    let netns = crate::kubelet::pod_netns(&rt.lab_id, uid);
    let result = async {
        let cc = container_config(rt, pod);
        let cid = rt.client.create_container(&id, &cc, &sc).await?;
        rt.client.start_container(&cid).await?;
        let st = rt.client.pod_sandbox_status(&id).await?;
        let pid = st
            .pid
            .with_context(|| format!("sandbox {id}: no process in its status"))?;
        let _ = crate::netns::delete(&netns);
        crate::netns::ip(&[
            "netns".into(),
            "attach".into(),
            netns.clone(),
            pid.to_string(),
        ])?;
        anyhow::Ok(st.ips)
    }
    .await;
    match result {
        Ok(ips) => Ok(CriSandbox { id, netns, ips }),
        Err(e) => {
            let _ = crate::netns::delete(&netns);
            if let Err(e2) = stop_and_remove(&rt.client, &id, STOP_RETRY).await {
                tracing::warn!(sandbox = id, error = %e2, "kubelet: removing a failed sandbox");
            }
            Err(e)
        }
    }
}

/// How long a failing StopPodSandbox is retried.
pub const STOP_RETRY: Duration = Duration::from_secs(10);

/// StopPodSandbox (containerd runs CNI DEL) and RemovePodSandbox; a sandbox that is gone already
/// is not an error. Stopping is retried for `retry`, as a kubelet keeps retrying.
pub async fn stop_and_remove(client: &CriClient, id: &str, retry: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + retry;
    loop {
        match client.stop_pod_sandbox(id).await {
            Ok(()) => break,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(e) => {
                tracing::info!(sandbox = id, error = %e, "kubelet: StopPodSandbox failed, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    match client.remove_pod_sandbox(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes a pod's sandbox: the lab's name of its namespace, then the sandbox.
pub async fn remove_sandbox(rt: &CriRuntime, sb: &CriSandbox) {
    let _ = crate::netns::delete(&sb.netns);
    if let Err(e) = stop_and_remove(&rt.client, &sb.id, STOP_RETRY).await {
        tracing::warn!(node = rt.node, sandbox = sb.id, error = %e, "kubelet: removing the sandbox failed");
    }
}

/// How often the kubelet looks for sandboxes of no pod.
pub const GC_INTERVAL: Duration = Duration::from_secs(5);

/// Stops and removes the lab's pod sandboxes that are neither in `keep` (ids the kubelet holds)
/// nor of a pod whose sandbox is being created (`creating`, pod uids); the node agent's sandbox
/// stays.
pub async fn collect_garbage(
    rt: &CriRuntime,
    keep: &std::collections::HashSet<String>,
    creating: &std::collections::HashSet<String>,
) {
    let label = [(LAB_LABEL.to_string(), rt.lab_id.clone())];
    let Ok(list) = rt.client.list_pod_sandboxes(&label).await else {
        return;
    };
    for sb in list {
        // The node agent's pod is the lab DaemonSet's, not the kubelet's.
        let agent = sb
            .labels
            .iter()
            .any(|(k, _)| k == crate::cri_agent::AGENT_LABEL);
        if agent || keep.contains(&sb.id) || creating.contains(&sb.uid) {
            continue;
        }
        tracing::info!(
            node = rt.node,
            sandbox = sb.id,
            pod = sb.name,
            "kubelet: removing a sandbox of no pod"
        );
        if let Err(e) = stop_and_remove(&rt.client, &sb.id, STOP_RETRY).await {
            tracing::warn!(node = rt.node, sandbox = sb.id, error = %e, "kubelet: garbage collection");
        }
    }
}

/// Nodes of the lab that have a containerd folder.
pub fn nodes_with_containerd(dirs: &LabDirs) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dirs.root.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("containerd").is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Stops and removes every sandbox of the node's containerd (while the agents still answer CNI
/// DEL); errors are reported, not fatal (`down` cleans up after them).
pub async fn remove_all_sandboxes(dirs: &LabDirs, node: &str) -> Vec<String> {
    let client = CriClient::new(&containerd_dir(dirs, node).join("containerd.sock"));
    let mut problems = Vec::new();
    let list = match client.list_pod_sandboxes(&[]).await {
        Ok(l) => l,
        Err(e) => return vec![format!("{node}: {e}")],
    };
    // The node agent's sandbox last: the pods' CNI DEL needs the agent.
    let (agents, pods): (Vec<_>, Vec<_>) = list.into_iter().partition(|s| {
        s.labels
            .iter()
            .any(|(k, _)| k == crate::cri_agent::AGENT_LABEL)
    });
    for sb in pods.into_iter().chain(agents) {
        if let Err(e) = stop_and_remove(&client, &sb.id, STOP_RETRY).await {
            problems.push(format!("{node}: sandbox {} ({}): {e:#}", sb.id, sb.name));
        }
    }
    problems
}

/// After the node's containerd is stopped: ends its shims and any container process left in the
/// node's cgroup, unmounts what is left under its folder and removes its cgroup folders.
pub fn cleanup(dirs: &LabDirs, lab_id: &str, node: &str) -> Vec<String> {
    let dir = containerd_dir(dirs, node);
    let mut problems = Vec::new();
    for pid in crate::containerd::shims_of(&dir.join("containerd.sock")) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let parent = cgroup_parent(lab_id, node);
    let rel = parent.trim_start_matches('/');
    let controllers: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|p| p.is_dir())
        .collect();
    // Container processes outlive their shim: kill what is still in the node's cgroups.
    for c in &controllers {
        for d in dirs_deepest_first(c) {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    for m in crate::containerd::mounts_under(&dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            problems.push(format!("unmounting {}: {e}", m.display()));
        }
    }
    for c in &controllers {
        for d in dirs_deepest_first(c) {
            let deadline = Instant::now() + Duration::from_secs(5);
            // A killed process leaves its cgroup a moment later.
            while std::fs::remove_dir(&d).is_err() && d.exists() {
                if Instant::now() > deadline {
                    problems.push(format!("cgroup {} is still in use", d.display()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The lab's folder above the node's, once its last node is gone.
        if let Some(p) = c.parent() {
            let _ = std::fs::remove_dir(p);
        }
    }
    problems
}

fn dirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
        out.push(d.to_path_buf());
    }
    let mut out = Vec::new();
    if root.is_dir() {
        walk(root, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt() -> CriRuntime {
        CriRuntime {
            client: CriClient::new(Path::new("/x.sock")),
            dirs: LabDirs::under(Path::new("/lab"), "0"),
            node: "node1".into(),
            lab_id: "0".into(),
            pause_image: "docker.io/hybridnet/hybridnet-pause:v0.1.0".into(),
        }
    }

    fn pod(image: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u1",
                         "labels": {"app": "web"},
                         "annotations": {"networking.alibaba.com/network-type": "Underlay"}},
            "spec": {"containers": [{"name": "main", "image": image, "command": ["sleep"], "args": ["1"]}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_sandbox_carries_the_pod_metadata_labels_annotations_and_cgroup() {
        let sc = sandbox_config(&rt(), &pod("lab"), "u1");
        assert_eq!(
            (sc.name.as_str(), sc.namespace.as_str(), sc.uid.as_str()),
            ("web", "ns1", "u1")
        );
        assert!(sc.labels.contains(&("app".into(), "web".into())));
        assert!(
            sc.labels
                .contains(&("io.kubernetes.pod.uid".into(), "u1".into()))
        );
        assert!(sc.labels.contains(&(LAB_LABEL.into(), "0".into())));
        assert_eq!(
            sc.annotations,
            vec![(
                "networking.alibaba.com/network-type".to_string(),
                "Underlay".to_string()
            )]
        );
        assert_eq!(sc.cgroup_parent, "/hybridnet-lab-0/node1");
        assert_eq!(sc.log_directory, "/lab/0/nodes/node1/pods/ns1_web_u1");
        assert!(!sc.host_network);
    }

    #[test]
    fn lab_image_pods_run_the_pause_image_and_others_their_own() {
        let c = container_config(&rt(), &pod("lab"));
        assert_eq!(c.image, rt().pause_image);
        assert!(c.command.is_empty() && c.args.is_empty());
        let c = container_config(&rt(), &pod("docker.io/library/busybox:1"));
        assert_eq!(c.image, "docker.io/library/busybox:1");
        assert_eq!(
            (c.command, c.args),
            (vec!["sleep".to_string()], vec!["1".to_string()])
        );
        assert_eq!(c.log_path, "main/0.log");
    }

    #[test]
    fn the_conflist_copy_points_at_the_node_socket_and_is_the_only_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = LabDirs::under(tmp.path(), "0");
        std::fs::create_dir_all(dirs.cni_conf("node1")).unwrap();
        std::fs::write(
            dirs.cni_conf("node1").join("06-hybridnet.conflist"),
            json!({"cniVersion": "1.0.0", "name": "hybridnet", "plugins": [
                {"type": "hybridnet", "server_socket": "/run/hybridnet/hybridnet.sock"}]})
            .to_string(),
        )
        .unwrap();
        std::fs::create_dir_all(cri_conf_dir(&dirs, "node1")).unwrap();
        std::fs::write(cri_conf_dir(&dirs, "node1").join("01-old.conflist"), "{}").unwrap();
        assert!(sync_conflist(&dirs, "node1").unwrap());
        assert!(
            !sync_conflist(&dirs, "node1").unwrap(),
            "unchanged: not rewritten"
        );
        let files: Vec<_> = std::fs::read_dir(cri_conf_dir(&dirs, "node1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["06-hybridnet.conflist"]);
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(cri_conf_dir(&dirs, "node1").join("06-hybridnet.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["plugins"][0]["server_socket"],
            format!("{}/hybridnet.sock", dirs.agent_run("node1").display())
        );
        // No conflist from the agent yet: an error naming the folder.
        let empty = LabDirs::under(tmp.path(), "1");
        std::fs::create_dir_all(empty.cni_conf("node1")).unwrap();
        let e = sync_conflist(&empty, "node1").unwrap_err().to_string();
        assert!(e.contains("no .conflist"), "{e}");
    }
}

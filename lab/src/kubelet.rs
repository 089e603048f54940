//! The lab's kubelet for one node: for each pod bound to the node it creates the pod's network
//! namespace, runs the CNI conflist the node agent installed (as a container runtime would), starts
//! the pod's command when it is a simple process, reports the pod Running with its IPs, and tears
//! everything down (CNI DEL first) when the pod goes. Like a kubelet's pod workers, several pods'
//! sandboxes are set up at once (bounded), each pod's steps in order.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::cni_runtime::{self, RuntimeConf};

/// Sandboxes set up at the same time on one node (CNI ADDs in flight), as a container runtime
/// runs pod sandboxes in parallel.
pub const SANDBOX_PARALLELISM: usize = 8;

/// A finished sandbox setup, reported back to the kubelet loop that owns the sandboxes.
struct SandboxDone {
    pod: Pod,
    uid: String,
    result: anyhow::Result<Sandbox>,
}

/// How one node's kubelet is set up.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub lab_id: String,
    pub node_name: String,
    pub node_netns: String,
    pub node_ip: String,
    /// Where the node agent installs the conflist.
    pub cni_conf_dir: PathBuf,
    /// Plugin search path: the node agent's bin dir first, then Debian's plugins.
    pub cni_path: Vec<PathBuf>,
    pub log_dir: PathBuf,
    /// Node host paths and the folders that stand for them in the lab (every lab node shares this
    /// host's file system), e.g. `/run/hybridnet` -> the node's agent socket folder.
    pub host_paths: Vec<(String, PathBuf)>,
    /// The node's containerd (`--runtime containerd`): sandboxes are created through its CRI
    /// instead of by the kubelet itself.
    pub cri: Option<crate::cri_node::CriRuntime>,
}

/// Rewrites node host paths in the conflist's plugin settings (the agent socket) to the node's
/// folders, as the node's file system would resolve them.
pub fn localize_conflist(list: &mut Value, host_paths: &[(String, PathBuf)]) {
    for p in list["plugins"].as_array_mut().into_iter().flatten() {
        if let Some(o) = p.as_object_mut() {
            for v in o.values_mut() {
                if let Some(s) = v.as_str()
                    && let Some((from, to)) = host_paths
                        .iter()
                        .find(|(from, _)| s.starts_with(from.as_str()))
                {
                    *v = Value::String(format!("{}{}", to.display(), &s[from.len()..]));
                }
            }
        }
    }
}

/// A pod's sandbox: made by the kubelet itself, or by containerd through CRI.
enum Sandbox {
    Direct(DirectSandbox),
    Cri(crate::cri_node::CriSandbox),
}

impl Sandbox {
    fn ips(&self) -> Vec<String> {
        match self {
            Sandbox::Direct(d) => result_ips(&d.result),
            Sandbox::Cri(c) => c.ips.clone(),
        }
    }
}

struct DirectSandbox {
    netns: String,
    conflist: Value,
    rt: RuntimeConf,
    result: Value,
    process: Option<Child>,
}

/// Name of a pod's network namespace (lab prefix, so `down` finds it after a crash).
pub fn pod_netns(lab_id: &str, uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect();
    format!("{}{lab_id}-p{short}", crate::topology::NS_PREFIX)
}

/// The addresses of a CNI result, without prefix lengths.
pub fn result_ips(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect()
}

/// Runs the kubelet of one node until the watch ends.
pub async fn run(client: kube::Client, cfg: KubeletConfig) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut stream = watcher(pods, wc).boxed();
    let mut sandboxes: HashMap<String, Sandbox> = HashMap::new();
    // Pods whose sandbox is being set up, and those of them deleted meanwhile (torn down as soon
    // as their setup ends).
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut deleted_in_flight: HashSet<String> = HashSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(SANDBOX_PARALLELISM));
    let (retry_tx, mut retry_rx) = tokio::sync::mpsc::unbounded_channel::<Pod>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<SandboxDone>();
    // Garbage collection of the runtime's sandboxes that belong to no pod of this kubelet (a
    // containerd restarted mid-creation reloads them from its store), as a kubelet's does.
    let mut gc_tick = tokio::time::interval(crate::cri_node::GC_INTERVAL);
    loop {
        let pod = tokio::select! {
            ev = stream.next() => match ev {
                None => return Ok(()),
                Some(Err(e)) => {
                    tracing::warn!(node = cfg.node_name, error = %e, "kubelet watch error");
                    continue;
                }
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => p,
                Some(Ok(watcher::Event::Delete(p))) => {
                    if let Some(uid) = p.metadata.uid.as_deref() {
                        if in_flight.contains(uid) {
                            deleted_in_flight.insert(uid.to_string());
                        } else {
                            teardown(&cfg, &mut sandboxes, uid).await;
                        }
                    }
                    continue;
                }
                Some(Ok(_)) => continue,
            },
            Some(p) = retry_rx.recv() => p,
            _ = gc_tick.tick(), if cfg.cri.is_some() => {
                if let Some(rt) = &cfg.cri {
                    let keep: HashSet<String> = sandboxes
                        .values()
                        .filter_map(|s| match s {
                            Sandbox::Cri(c) => Some(c.id.clone()),
                            Sandbox::Direct(_) => None,
                        })
                        .collect();
                    crate::cri_node::collect_garbage(rt, &keep, &in_flight).await;
                }
                continue;
            }
            Some(done) = done_rx.recv() => {
                in_flight.remove(&done.uid);
                let deleted = deleted_in_flight.remove(&done.uid);
                sandbox_done(&client, &cfg, &mut sandboxes, &retry_tx, done, deleted).await;
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(
            client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if in_flight.contains(&uid) {
                deleted_in_flight.insert(uid.clone());
            } else {
                teardown(&cfg, &mut sandboxes, &uid).await;
            }
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(terminated_status(&pod)),
                )
                .await;
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if sandboxes.contains_key(&uid)
            || in_flight.contains(&uid)
            || phase == "Succeeded"
            || phase == "Failed"
        {
            continue;
        }
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
        {
            let status = running_status(&pod, &cfg.node_ip, std::slice::from_ref(&cfg.node_ip));
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await;
            continue;
        }
        in_flight.insert(uid.clone());
        let (cfg2, done, slots) = (cfg.clone(), done_tx.clone(), slots.clone());
        tokio::spawn(async move {
            let result = match slots.acquire_owned().await {
                Ok(_slot) => create_sandbox(&cfg2, &pod, &uid).await,
                Err(e) => Err(e.into()),
            };
            let _ = done.send(SandboxDone { pod, uid, result });
        });
    }
}

/// Records a finished sandbox setup: reports the pod Running, or schedules a retry, or (when the
/// pod was deleted during the setup) tears the sandbox down again.
async fn sandbox_done(
    client: &kube::Client,
    cfg: &KubeletConfig,
    sandboxes: &mut HashMap<String, Sandbox>,
    retry_tx: &tokio::sync::mpsc::UnboundedSender<Pod>,
    done: SandboxDone,
    deleted: bool,
) {
    let SandboxDone { pod, uid, result } = done;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    match result {
        Ok(sb) if deleted => {
            sandboxes.insert(uid.clone(), sb);
            teardown(cfg, sandboxes, &uid).await;
        }
        Ok(sb) => {
            let ips = sb.ips();
            sandboxes.insert(uid.clone(), sb);
            let status = running_status(&pod, &cfg.node_ip, &ips);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                tracing::warn!(pod = name, error = %e, "kubelet: cannot report Running");
            }
        }
        Err(_) if deleted => {
            let _ = crate::netns::delete(&pod_netns(&cfg.lab_id, &uid));
        }
        Err(e) => {
            tracing::info!(pod = name, node = cfg.node_name, error = %e, "kubelet: sandbox not ready, retrying");
            let tx = retry_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(p) = api.get(&name).await
                    && p.metadata.uid.as_deref() == Some(uid.as_str())
                {
                    let _ = tx.send(p);
                }
            });
        }
    }
}

async fn create_sandbox(cfg: &KubeletConfig, pod: &Pod, uid: &str) -> anyhow::Result<Sandbox> {
    match &cfg.cri {
        Some(rt) => crate::cri_node::create_sandbox(rt, pod, uid)
            .await
            .map(Sandbox::Cri),
        None => create_direct(cfg, pod, uid).await.map(Sandbox::Direct),
    }
}

async fn create_direct(cfg: &KubeletConfig, pod: &Pod, uid: &str) -> anyhow::Result<DirectSandbox> {
    let netns = pod_netns(&cfg.lab_id, uid);
    let ns_name = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let (_, mut conflist) =
        cni_runtime::load_conflist(&cfg.cni_conf_dir).map_err(anyhow::Error::msg)?;
    localize_conflist(&mut conflist, &cfg.host_paths);
    let rt = RuntimeConf {
        container_id: format!("lab-{}", uid.replace('-', "")),
        netns: PathBuf::from(format!("/run/netns/{netns}")),
        ifname: "eth0".into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), ns_name.clone()),
            ("K8S_POD_NAME".into(), pod_name.clone()),
            ("K8S_POD_UID".into(), uid.to_string()),
            (
                "K8S_POD_INFRA_CONTAINER_ID".into(),
                format!("lab-{}", uid.replace('-', "")),
            ),
        ],
        cni_path: cfg.cni_path.clone(),
        exec_netns: Some(cfg.node_netns.clone()),
    };
    let _ = crate::netns::delete(&netns);
    crate::netns::ip(&["netns".into(), "add".into(), netns.clone()])?;
    crate::netns::ip(&[
        "-n".into(),
        netns.clone(),
        "link".into(),
        "set".into(),
        "lo".into(),
        "up".into(),
    ])?;
    let (list, rt2) = (conflist.clone(), rt.clone());
    let added = tokio::task::spawn_blocking(move || cni_runtime::add(&list, &rt2)).await?;
    let result = match added {
        Ok(r) => r,
        Err(e) => {
            let _ = crate::netns::delete(&netns);
            return Err(e.into());
        }
    };
    let process = start_process(cfg, pod, &netns).ok();
    Ok(DirectSandbox {
        netns,
        conflist,
        rt,
        result,
        process,
    })
}

/// Starts the pod's first container command inside its namespace when it is a plain program on
/// this host (enough for sleep, ping, an echo server); otherwise the pod just holds its network.
fn start_process(cfg: &KubeletConfig, pod: &Pod, netns: &str) -> anyhow::Result<Child> {
    let c = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or_else(|| anyhow::anyhow!("pod has no container"))?;
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    if argv.is_empty() {
        argv = vec!["sleep".into(), "infinity".into()];
    }
    let log = std::fs::File::create(cfg.log_dir.join(format!(
        "pod-{}_{}.log",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )))?;
    let child = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(child)
}

async fn teardown(cfg: &KubeletConfig, sandboxes: &mut HashMap<String, Sandbox>, uid: &str) {
    let mut sb = match sandboxes.remove(uid) {
        Some(Sandbox::Direct(sb)) => sb,
        Some(Sandbox::Cri(sb)) => {
            if let Some(rt) = &cfg.cri {
                crate::cri_node::remove_sandbox(rt, &sb).await;
            }
            return;
        }
        None => {
            // Not ours any more (or never was): make sure no namespace is left.
            let _ = crate::netns::delete(&pod_netns(&cfg.lab_id, uid));
            return;
        }
    };
    if let Some(mut p) = sb.process.take() {
        let _ = p.kill();
        let _ = p.wait();
    }
    let (list, rt, prev) = (sb.conflist.clone(), sb.rt.clone(), sb.result.clone());
    match tokio::task::spawn_blocking(move || cni_runtime::del(&list, &rt, Some(&prev))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(netns = sb.netns, error = %e, "kubelet: CNI DEL failed"),
        Err(e) => tracing::warn!(netns = sb.netns, error = %e, "kubelet: CNI DEL task failed"),
    }
    let _ = crate::netns::delete(&sb.netns);
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn container_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

fn running_status(pod: &Pod, host_ip: &str, ips: &[String]) -> Value {
    let t = now();
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|n| json!({"name": n, "ready": true, "started": true, "restartCount": 0, "image": "lab", "imageID": "", "state": {"running": {"startedAt": t}}}))
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ips.first(),
        "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        "startTime": t,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "lastTransitionTime": t}
        ],
        "containerStatuses": statuses,
    }})
}

fn terminated_status(pod: &Pod) -> Value {
    let t = now();
    let statuses: Vec<Value> = container_names(pod)
        .into_iter()
        .map(|n| json!({"name": n, "ready": false, "started": false, "restartCount": 0, "image": "lab", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": t}}}))
        .collect();
    json!({"status": {"containerStatuses": statuses, "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": t}]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_namespaces_carry_the_lab_prefix_and_fit() {
        let n = pod_netns("0", "3f1c1f0e-1111-2222-3333-444455556666");
        assert_eq!(n, "hl0-p3f1c1f0e11");
        assert!(n.len() <= 32);
    }

    #[test]
    fn conflist_host_paths_point_at_the_node_folder() {
        let mut l = json!({"plugins": [{"type": "hybridnet", "server_socket": "/run/hybridnet/hybridnet.sock"}, {"type": "portmap"}]});
        localize_conflist(
            &mut l,
            &[(
                "/run/hybridnet".into(),
                PathBuf::from("/run/hybridnet-lab/0/nodes/node1/run"),
            )],
        );
        assert_eq!(
            l["plugins"][0]["server_socket"],
            "/run/hybridnet-lab/0/nodes/node1/run/hybridnet.sock"
        );
        assert_eq!(l["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn ips_come_from_the_cni_result() {
        let r = json!({"ips": [{"address": "198.18.64.5/20"}, {"address": "fd00:64::5/112"}]});
        assert_eq!(result_ips(&r), vec!["198.18.64.5", "fd00:64::5"]);
        assert!(result_ips(&json!({})).is_empty());
    }
}

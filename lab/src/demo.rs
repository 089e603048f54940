//! The demo: an overlay, a VLAN underlay and (when the lab has BGP nodes) a BGP underlay network,
//! each IPv4 and IPv6, pods of every kind on several nodes, `kubectl hybridnet ip ls`, a
//! connectivity matrix measured with ping from inside the pods, and one `kubectl hybridnet trace`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hybridnet_api::operator::HybridnetCluster;
use hybridnet_api::v1::{Network, Subnet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::kubelet::pod_netns;
use crate::state::LabDirs;
use crate::topology::{BGP_NODE_AS, CLUSTER_NETS, ClusterNet, OUTSIDE_V4, TOR_AS, TOR_PEER_V4};

/// The lab's overlay range: inside the benchmarking range, apart from the node segment.
pub const OVERLAY_V4: &str = CLUSTER_NETS[0].overlay_v4;
pub const OVERLAY_V6: &str = CLUSTER_NETS[0].overlay_v6;
/// The BGP network's ranges: on no link at all, reachable only through announced routes.
pub const BGP_V4: &str = CLUSTER_NETS[0].bgp_v4;
pub const BGP_V6: &str = CLUSTER_NETS[0].bgp_v6;
/// The overlay network's VXLAN ID, the same in every cluster of a lab (clusters connect only
/// when their overlay netIDs match, docs/multicluster.md).
pub const OVERLAY_VNI: u32 = 4;

/// Creates `HybridnetCluster/default` with the lab's defaults and bootstrap overlay network.
pub async fn create_cluster_object(client: &kube::Client) -> anyhow::Result<()> {
    create_cluster_object_for(client, &CLUSTER_NETS[0], false).await
}

/// [`create_cluster_object`] for the cluster of `net`; `multi_cluster` turns the MultiCluster
/// feature on (`spec.features.multiCluster`).
pub async fn create_cluster_object_for(
    client: &kube::Client,
    net: &ClusterNet,
    multi_cluster: bool,
) -> anyhow::Result<()> {
    let api: Api<HybridnetCluster> = Api::all(client.clone());
    let mut spec = json!({
        "defaults": {"networkType": "Overlay", "ipFamily": "IPv4"},
        // The VLAN check knobs set explicitly: the agent must accept the command line the
        // operator renders from them.
        "nodeAgent": {"preferVxlanInterfaces": ["eth0"], "preferVlanInterfaces": ["eth0"],
                      "vlanCheckTimeout": "2s", "enableVlanArpEnhancement": true,
                      "checkPodConnectivityFromHost": true},
        "bootstrap": {"name": "overlay", "vxlanID": OVERLAY_VNI, "cidr": net.overlay_v4, "ipVersion": "4"},
    });
    if multi_cluster {
        spec["features"] = json!({"multiCluster": true});
    }
    let hc: HybridnetCluster = serde_json::from_value(json!({
        "apiVersion": "operator.hybridnet.io/v1alpha1", "kind": "HybridnetCluster",
        "metadata": {"name": "default"},
        "spec": spec,
    }))?;
    match api.create(&PostParams::default(), &hc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating HybridnetCluster default"),
    }
}

async fn apply<K>(api: &Api<K>, obj: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("hybridnet-lab").force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}

/// The demo's networks and subnets; with `bgp` also the BGP underlay network of the BGP nodes,
/// peering with the ToR.
pub async fn create_networks(client: &kube::Client, bgp: bool) -> anyhow::Result<()> {
    create_networks_in(client, &CLUSTER_NETS[0], bgp).await
}

/// [`create_networks`] with the addresses of the cluster of `net`.
pub async fn create_networks_in(
    client: &kube::Client,
    net: &ClusterNet,
    bgp: bool,
) -> anyhow::Result<()> {
    let (seg4, seg6) = (net.segment_v4, net.segment_v6);
    let nets: Api<Network> = Api::all(client.clone());
    let subnets: Api<Subnet> = Api::all(client.clone());
    let mut networks = vec!["overlay", "underlay"];
    if bgp {
        networks.push("bgp");
        apply(&nets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Network", "metadata": {"name": "bgp"},
            "spec": {"type": "Underlay", "mode": "BGP", "netID": BGP_NODE_AS, "nodeSelector": {"network": "bgp"},
                     "config": {"bgpPeers": [{"asn": TOR_AS, "address": TOR_PEER_V4, "gracefulRestartSeconds": 120}]}}})).await?;
        apply(&subnets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "bgp-v4"},
            "spec": {"network": "bgp", "range": {"version": "4", "cidr": net.bgp_v4}}})).await?;
        apply(&subnets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "bgp-v6"},
            "spec": {"network": "bgp", "range": {"version": "6", "cidr": net.bgp_v6}}})).await?;
    }
    apply(&nets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Network", "metadata": {"name": "underlay"},
        "spec": {"type": "Underlay", "netID": 0, "nodeSelector": {"network": "underlay"}}})).await?;
    apply(&subnets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "underlay-v4"},
        "spec": {"network": "underlay", "range": {"version": "4", "cidr": format!("{seg4}.0/24"), "gateway": format!("{seg4}.1"), "start": format!("{seg4}.100"), "end": format!("{seg4}.199")}}})).await?;
    apply(&subnets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "underlay-v6"},
        "spec": {"network": "underlay", "range": {"version": "6", "cidr": format!("{seg6}/112"), "gateway": format!("{seg6}1"), "start": format!("{seg6}100"), "end": format!("{seg6}1ff")}}})).await?;
    // The operator created the overlay network and its IPv4 subnet from the bootstrap settings.
    wait_until(
        Duration::from_secs(30),
        "the bootstrap overlay network",
        || async { Ok(nets.get_opt("overlay").await?.is_some()) },
    )
    .await?;
    apply(&subnets, json!({"apiVersion": "networking.alibaba.com/v1", "kind": "Subnet", "metadata": {"name": "overlay-v6"},
        "spec": {"network": "overlay", "range": {"version": "6", "cidr": net.overlay_v6}}})).await?;
    // Pods are admitted by the networks' statistics: wait until the operator has counted both
    // families of both networks.
    for net in networks {
        wait_until(
            Duration::from_secs(30),
            "dual-stack addresses in the network status",
            || async {
                let st = nets.get(net).await?.status.unwrap_or_default();
                Ok(st.dual_stack_statistics.is_some_and(|c| c.has_available()))
            },
        )
        .await?;
    }
    Ok(())
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A demo pod: name, node and network type (the node decides which underlay network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoPod {
    pub name: &'static str,
    pub node: String,
    pub network_type: &'static str,
}

/// The demo's pods for a lab with `nodes` segment nodes (at least 3) and `bgp_nodes` BGP nodes:
/// two overlay and two VLAN underlay pods, and with at least two BGP nodes one BGP pod on each of
/// the first two.
pub fn demo_pods(nodes: u32, bgp_nodes: u32) -> Vec<DemoPod> {
    let pod = |name, node: String, network_type| DemoPod {
        name,
        node,
        network_type,
    };
    let mut v = vec![
        pod("overlay-a", "node1".into(), "Overlay"),
        pod("overlay-b", "node3".into(), "Overlay"),
        pod("underlay-a", "node1".into(), "Underlay"),
        pod("underlay-b", "node2".into(), "Underlay"),
    ];
    if bgp_nodes >= 2 {
        v.push(pod("bgp-a", format!("node{}", nodes + 1), "Underlay"));
        v.push(pod("bgp-b", format!("node{}", nodes + 2), "Underlay"));
    }
    v
}

/// Creates the demo pods (dual stack) and waits for them to run.
pub async fn create_pods(
    client: &kube::Client,
    demo: &[DemoPod],
) -> anyhow::Result<BTreeMap<String, (String, Vec<String>)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for p in demo {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "annotations": {
                "networking.alibaba.com/network-type": p.network_type,
                "networking.alibaba.com/ip-family": "DualStack"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": p.node},
                     "containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"]}]}
        }))?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating pod {}", p.name)),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut out = BTreeMap::new();
        for p in pods.list(&ListParams::default()).await?.items {
            let st = p.status.clone().unwrap_or_default();
            if st.phase.as_deref() == Some("Running") {
                let ips = st
                    .pod_ips
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.ip)
                    .collect();
                out.insert(
                    p.metadata.name.clone().unwrap_or_default(),
                    (p.metadata.uid.clone().unwrap_or_default(), ips),
                );
            }
        }
        if demo.iter().all(|p| out.contains_key(p.name)) {
            out.retain(|name, _| demo.iter().any(|p| p.name == name));
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} demo pods run after 90 s: {:?}",
                out.len(),
                demo.len(),
                out.keys()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ping(netns: &str, ip: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-c1", "-W2", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kubectl(dirs: &LabDirs, args: &[&str]) -> anyhow::Result<String> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        exe_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // kubectl refuses global flags before a plugin's name: the kubeconfig goes by environment.
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dirs.host_kubeconfig())
        .env("PATH", path)
        .output()
        .context("running kubectl")?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    Ok(s)
}

/// Runs the demo on a lab that is up.
pub async fn run(dirs: &LabDirs) -> anyhow::Result<()> {
    let params = crate::cluster::LabParams::load(dirs)?;
    let client = crate::cluster::client_from(&dirs.host_kubeconfig()).await?;
    let bgp = params.bgp_nodes >= 2;
    create_networks(&client, bgp).await?;
    let pods = create_pods(&client, &demo_pods(params.nodes, params.bgp_nodes)).await?;

    println!("\n$ kubectl hybridnet ip ls -A");
    print!("{}", kubectl(dirs, &["hybridnet", "ip", "ls", "-A"])?);

    println!("\nconnectivity (ping from the row's pod to the column's address):");
    let mut targets: Vec<(String, String)> = Vec::new();
    for (name, (_, ips)) in &pods {
        for ip in ips {
            targets.push((name.clone(), ip.clone()));
        }
    }
    targets.push(("outside".into(), format!("{OUTSIDE_V4}.2")));
    let mut failures = 0;
    for (from, (uid, _)) in &pods {
        let ns = pod_netns(&params.id, uid);
        let mut row = format!("  {from:<11}");
        for (to, ip) in &targets {
            if to == from {
                continue;
            }
            let ok = ping(&ns, ip);
            failures += usize::from(!ok);
            row.push_str(&format!(" {}:{}", ip, if ok { "ok" } else { "FAIL" }));
        }
        println!("{row}");
    }

    println!("\n$ kubectl hybridnet trace overlay-a --to underlay-b");
    print!(
        "{}",
        kubectl(
            dirs,
            &["hybridnet", "trace", "overlay-a", "--to", "underlay-b"]
        )?
    );
    if bgp {
        println!("\n$ kubectl hybridnet trace bgp-a --to overlay-a");
        print!(
            "{}",
            kubectl(dirs, &["hybridnet", "trace", "bgp-a", "--to", "overlay-a"])?
        );
        println!("\n$ birdc show route   (on the ToR: pod routes the BGP nodes announce)");
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(crate::cluster::tor_bird_socket(dirs))
            .args(["show", "route"])
            .output()
            .context("running birdc")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    if failures > 0 {
        bail!("{failures} connectivity checks failed");
    }
    Ok(())
}

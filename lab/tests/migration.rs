//! In-place migration in the lab (docs/migration.md): the cluster is first turned into an
//! upstream install, then this project is installed over it.
//!
//! Upstream's side: the API server serves upstream's own CRDs (`charts/hybridnet/crds`, copied in
//! crds/tests/fixtures/upstream/crds) and holds the objects as upstream v0.8.x writes them (the
//! metrics finalizer on Networks and Subnets, `""` cursors in their statuses, IPInstance statuses
//! as its daemon writes them at ADD, NodeInfos with nothing but the VTEP and the update time),
//! upstream's manager holds its leader Lease, no operator runs; every node runs an upstream-style
//! data plane (upstream's policy-rule priorities, its iptables chains and ipsets written with the
//! real tools as its daemon writes them, no nftables table of ours).
//!
//! Then, while paced pod-to-pod TCP streams run: our CRDs are applied over upstream's, the
//! operator starts and takes upstream's Lease over, and the nodes are switched to the node agent
//! one at a time. No pod changes address, the streams never stall longer than the lab's bound and
//! lose nothing, every agent removes upstream's state and publishes `[]`, new pods get addresses
//! nobody holds (the IPAM was rebuilt from upstream's IPInstances), and `kubectl hybridnet ip
//! check` and `migrate check` are clean at the end. Needs root; under CI=true it must run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Lab, kubectl_status};
use hybridnet_api::migration::{NODE_LEFTOVERS_ANNOTATION, NodeLeftovers};
use hybridnet_api::v1::NodeInfo;
use hybridnet_lab::{cluster, supervisor, topology};
use hybridnet_node::migrate::fixture::{UpstreamNode, upstream_steps};
use hybridnet_test_support::paced::PacedStream;
use hybridnet_test_support::{may_run, sh};

/// The longest stall allowed (the bound of the e2e suite's restarts and upgrades).
const STALL_BOUND: Duration = Duration::from_secs(1);

fn in_ns(netns: &str, program: &str, args: &[String], stdin: Option<&str>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{netns}: {program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites a node our agent programmed into what upstream's daemon leaves: rules at the first
/// free priorities after `lookup local` (1, 2, 3, 4), no `inet hybridnet` table, upstream's
/// iptables chains and ipsets for both families.
fn make_upstream_node(netns: &str, node_ips: (&[&str], &[&str]), pod_ips: (&[&str], &[&str])) {
    for (fam, flag) in [("4", "-4"), ("6", "-6")] {
        let rules = sh(&["ip", "-n", netns, flag, "rule", "show"]);
        for line in rules.lines() {
            let Some((pref, rest)) = line.split_once(":\t") else {
                continue;
            };
            let Ok(p) = pref.parse::<u32>() else { continue };
            if !(1000..=1003).contains(&p) {
                continue;
            }
            let sel: Vec<&str> = rest.split_whitespace().collect();
            let new = (p - 999).to_string();
            let mut add = vec!["ip", "-n", netns, flag, "rule", "add", "pref", &new];
            add.extend(&sel);
            sh(&add);
            let old = p.to_string();
            let mut del = vec!["ip", "-n", netns, flag, "rule", "del", "pref", &old];
            del.extend(&sel);
            sh(&del);
        }
        let _ = fam;
    }
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "delete",
            "table",
            "inet",
            "hybridnet",
        ])
        .status();
    for ipv6 in [false, true] {
        let node = UpstreamNode {
            backend: "legacy",
            ipv6,
            vxlan_if: "eth0.vxlan4",
            vlan_if: Some("eth0"),
            overlay_cidrs: if ipv6 {
                &["fd00:64::/112"]
            } else {
                &["198.18.64.0/20"]
            },
            underlay_cidrs: if ipv6 {
                &["fd00:18::/112"]
            } else {
                &["198.18.0.0/24"]
            },
            node_ips: if ipv6 { node_ips.1 } else { node_ips.0 },
            local_pod_ips: if ipv6 { pod_ips.1 } else { pod_ips.0 },
        };
        for s in upstream_steps(&node) {
            in_ns(netns, &s.program, &s.args, s.stdin.as_deref());
        }
    }
}

/// Upstream's CRDs, verbatim from its chart.
fn upstream_crds() -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/tests/fixtures/upstream/crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| serde_saphyr::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect()
}

const UPSTREAM_MANAGER_IDENTITY: &str = "hybridnet-manager-7d9f8c6b5-x2x7q_4b8e";

/// Turns the API server's content into an upstream install's (the operator is stopped): upstream's
/// CRDs replace ours, objects get the shape upstream's manager and daemon give them, upstream's
/// manager holds its leader Lease.
async fn make_api_upstream(client: &kube::Client) {
    use hybridnet_api::v1::{IPInstance, Network, Subnet};
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams, PostParams};
    // Upstream's webhook took these changes; ours is down with the operator (its configurations
    // come back with the operator's lifecycle, docs/migration.md step 4).
    let vwc: kube::Api<ValidatingWebhookConfiguration> = kube::Api::all(client.clone());
    for w in vwc.list(&Default::default()).await.unwrap() {
        vwc.delete(&w.metadata.name.unwrap(), &Default::default())
            .await
            .unwrap();
    }
    let mwc: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    for w in mwc.list(&Default::default()).await.unwrap() {
        mwc.delete(&w.metadata.name.unwrap(), &Default::default())
            .await
            .unwrap();
    }
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for mut crd in upstream_crds() {
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        let current = crds.get(&name).await.unwrap();
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version.clone().into();
        let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
        crds.replace(&name, &PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("replace CRD {name} by upstream's: {e}"));
    }
    let metrics = "networking.alibaba.com/metrics-registered";
    let nets: kube::Api<Network> = kube::Api::all(client.clone());
    for n in nets.list(&Default::default()).await.unwrap() {
        let name = n.metadata.name.clone().unwrap();
        let mut f = n.metadata.finalizers.clone().unwrap_or_default();
        f.push(metrics.into());
        nets.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": f}})),
        )
        .await
        .unwrap();
        nets.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"lastAllocatedSubnet": ""}})),
        )
        .await
        .unwrap();
    }
    let subnets: kube::Api<Subnet> = kube::Api::all(client.clone());
    for s in subnets.list(&Default::default()).await.unwrap() {
        let name = s.metadata.name.clone().unwrap();
        let mut f = s.metadata.finalizers.clone().unwrap_or_default();
        f.push(metrics.into());
        subnets
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": f}})),
            )
            .await
            .unwrap();
        subnets
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"lastAllocatedIP": ""}})),
            )
            .await
            .unwrap();
    }
    let ipis: kube::Api<IPInstance> = kube::Api::namespaced(client.clone(), "default");
    for (i, ipi) in ipis
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let name = ipi.metadata.name.clone().unwrap();
        let b = &ipi.spec.binding;
        ipis.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {
            "nodeName": b.node_name, "podName": b.pod_name, "podNamespace": "default",
            "sandboxID": format!("{:064x}", i + 1), "updateTimestamp": "2024-05-02T10:00:02Z"}})),
        )
        .await
        .unwrap();
    }
    let infos: kube::Api<NodeInfo> = kube::Api::all(client.clone());
    for n in infos.list(&Default::default()).await.unwrap() {
        let name = n.metadata.name.clone().unwrap();
        let drop: serde_json::Map<String, serde_json::Value> = n
            .metadata
            .annotations
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.starts_with("hybridnet.io/"))
            .map(|k| (k, serde_json::Value::Null))
            .collect();
        infos
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": drop}})),
            )
            .await
            .unwrap();
    }
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "kube-system"}}))
                .unwrap(),
        )
        .await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), hybridnet_api::migration::UPSTREAM_NAMESPACE);
    leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
            "metadata": {"name": hybridnet_api::migration::UPSTREAM_LEADER_LEASE},
            "spec": {"holderIdentity": UPSTREAM_MANAGER_IDENTITY, "leaseDurationSeconds": 2,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}))
            .unwrap(),
        )
        .await
        .unwrap();
}

async fn upstream_lease_holder(client: &kube::Client) -> Option<String> {
    kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        hybridnet_api::migration::UPSTREAM_NAMESPACE,
    )
    .get_opt(hybridnet_api::migration::UPSTREAM_LEADER_LEASE)
    .await
    .ok()
    .flatten()
    .and_then(|l| l.spec)
    .and_then(|s| s.holder_identity)
}

async fn leftovers(client: &kube::Client, node: &str) -> Option<String> {
    kube::Api::<NodeInfo>::all(client.clone())
        .get_opt(node)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.metadata.annotations)
        .and_then(|a| a.get(NODE_LEFTOVERS_ANNOTATION).cloned())
}

async fn addresses(client: &kube::Client) -> BTreeMap<String, Vec<String>> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), "default");
    pods.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let ips = p
                .status
                .and_then(|s| s.pod_ips)
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.ip)
                .collect();
            (p.metadata.name.unwrap_or_default(), ips)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_switch_from_upstream_one_by_one_under_a_tcp_stream() {
    let test = "nodes_switch_from_upstream_one_by_one_under_a_tcp_stream";
    if !may_run(
        test,
        &[
            "ipset",
            "iptables-legacy-restore",
            "ip6tables-legacy-restore",
            "kubectl",
        ],
    ) {
        return;
    }
    let lab = Lab::up("m", 3, 2, 0);
    let dirs = lab.dirs();
    let client = cluster::client_from(&dirs.host_kubeconfig()).await.unwrap();
    hybridnet_lab::demo::create_networks(&client, false)
        .await
        .unwrap();
    let pods = hybridnet_lab::demo::create_pods(&client, &hybridnet_lab::demo::demo_pods(3, 0))
        .await
        .unwrap();
    let before = addresses(&client).await;
    assert_eq!(before.len(), 4, "{before:?}");

    let params = cluster::LabParams::load(&dirs).unwrap();
    let layout = params.layout();
    let ds = cluster::wait_for_agent_daemonset(&client, Duration::from_secs(10))
        .await
        .unwrap();
    let node_v4 = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];
    let node_v6 = ["fd00:18::11", "fd00:18::12", "fd00:18::13"];
    let local = |node: &str, v6: bool| -> Vec<String> {
        pods.iter()
            .filter(|(name, _)| {
                hybridnet_lab::demo::demo_pods(3, 0)
                    .iter()
                    .any(|d| d.name == name.as_str() && d.node == node)
            })
            .flat_map(|(_, (_, ips))| ips.iter().filter(|i| i.contains(':') == v6).cloned())
            .collect()
    };
    // Every node becomes an upstream node: our agent stops, upstream's state takes its place.
    let mut specs = Vec::new();
    for node in 1..=3u32 {
        let spec = cluster::agent_process(&params, &dirs, &layout, &ds, node).unwrap();
        supervisor::stop(&dirs, &spec.name, Duration::from_secs(3));
        let netns = layout
            .host(&topology::Role::Node(node))
            .unwrap()
            .netns
            .clone();
        let (v4, v6) = (
            local(&format!("node{node}"), false),
            local(&format!("node{node}"), true),
        );
        let v4: Vec<&str> = v4.iter().map(String::as_str).collect();
        let v6: Vec<&str> = v6.iter().map(String::as_str).collect();
        make_upstream_node(&netns, (&node_v4, &node_v6), (&v4, &v6));
        let save = sh(&["ip", "netns", "exec", &netns, "iptables-legacy-save"]);
        assert!(save.contains(":HYBRIDNET-FORWARD"), "node{node}: {save}");
        specs.push((node, spec, netns));
    }
    // And the API server's content becomes upstream's (no operator of ours runs).
    supervisor::stop(&dirs, "operator", Duration::from_secs(3));
    make_api_upstream(&client).await;
    assert_eq!(
        upstream_lease_holder(&client).await.as_deref(),
        Some(UPSTREAM_MANAGER_IDENTITY)
    );

    // overlay-a (node1) -> underlay-b (node2) and underlay-a (node1) -> overlay-b (node3).
    let stream = |from: &str, to: &str, port: u16| {
        PacedStream::start(
            Some(&hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[to].0)),
            Some(&hybridnet_lab::kubelet::pod_netns(&lab.id, &pods[from].0)),
            pods[to].1[0].parse().unwrap(),
            port,
            Duration::from_millis(10),
        )
        .unwrap_or_else(|e| panic!("paced stream {from} -> {to}: {e}"))
    };
    let s1 = stream("overlay-a", "underlay-b", 7081);
    let s2 = stream("underlay-a", "overlay-b", 7082);
    for s in [&s1, &s2] {
        s.flowing(50, Duration::from_secs(20))
            .await
            .expect("flow on upstream nodes");
    }

    // Install in place: our CRDs over upstream's, the operator, which takes upstream's Lease over
    // (its manager is gone: the Lease is not renewed) before it allocates anything.
    cluster::apply_crds(&client).await.unwrap();
    let cp_netns = layout
        .host(&topology::Role::ControlPlane)
        .unwrap()
        .netns
        .clone();
    supervisor::start(
        &dirs,
        &cluster::operator_process(&params, &dirs, &cp_netns).unwrap(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while upstream_lease_holder(&client).await.as_deref() == Some(UPSTREAM_MANAGER_IDENTITY) {
        assert!(
            std::time::Instant::now() < deadline,
            "the operator did not take upstream's Lease over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (node, spec, netns) in &specs {
        let name = format!("node{node}");
        s1.mark(&format!("{name} switched"));
        s2.mark(&format!("{name} switched"));
        // The report of the agent that ran before the node was made upstream's goes first: only
        // the new agent's report counts.
        kube::Api::<NodeInfo>::all(client.clone())
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {NODE_LEFTOVERS_ANNOTATION: null}}})),
            )
            .await
            .unwrap();
        assert_eq!(leftovers(&client, &name).await, None);
        supervisor::start(&dirs, spec).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(v) = leftovers(&client, &name).await
                && NodeLeftovers::parse_annotation(&v).is_ok_and(|l| l.is_empty())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: no clean leftovers report: {:?}",
                leftovers(&client, &name).await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let save = sh(&["ip", "netns", "exec", netns, "iptables-legacy-save"]);
        assert!(!save.contains("HYBRIDNET-"), "{name}: {save}");
        let sets = sh(&["ip", "netns", "exec", netns, "ipset", "list", "-n"]);
        assert!(!sets.contains("HYBR-"), "{name}: {sets}");
        let rules = sh(&["ip", "-n", netns, "rule", "show"]);
        for p in ["1:", "2:", "3:", "4:"] {
            assert!(!rules.lines().any(|l| l.starts_with(p)), "{name}: {rules}");
        }
        for s in [&s1, &s2] {
            s.flowing(30, Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("no flow after switching {name}: {e}"));
        }
    }

    for (what, s) in [
        ("overlay-a -> underlay-b", s1),
        ("underlay-a -> overlay-b", s2),
    ] {
        let report = s.finish().expect("paced stream across the switch");
        report.gap_within(STALL_BOUND, "the node switches").unwrap();
        assert_eq!(report.delivered, report.sent, "{what}: {report}");
        eprintln!("migration, {what}: {report}");
    }
    assert_eq!(addresses(&client).await, before, "a pod changed address");
    // The IPAM continues from upstream's IPInstances: new pods get addresses nobody holds.
    let more = hybridnet_lab::demo::create_pods(
        &client,
        &[
            hybridnet_lab::demo::DemoPod {
                name: "overlay-c",
                node: "node2".into(),
                network_type: "Overlay",
            },
            hybridnet_lab::demo::DemoPod {
                name: "underlay-c",
                node: "node1".into(),
                network_type: "Underlay",
            },
        ],
    )
    .await
    .unwrap();
    let after = addresses(&client).await;
    assert_eq!(after.len(), 6, "{after:?}");
    let mut all: Vec<&String> = after.values().flatten().collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an address is held twice: {after:?}");
    for (p, (_, ips)) in &more {
        assert_eq!(ips.len(), 2, "{p}: {ips:?}");
    }
    let (code, out) = kubectl_status(&dirs, &["hybridnet", "ip", "check"]);
    assert!(
        code == 0 && out.contains("no problems found"),
        "ip check: {out}"
    );
    let (code, out) = kubectl_status(&dirs, &["hybridnet", "migrate", "check"]);
    assert_eq!(code, 0, "migrate check: {out}");
    assert!(out.starts_with("migration complete"), "{out}");
}

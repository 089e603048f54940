//! NetworkPolicy in the lab (docs/networkpolicy.md): the scenarios of the Kubernetes e2e suite
//! (`hybridnet_node::plan::policy::conformance`, the same data the model is checked against) probed
//! from inside real pods. Namespaces x, y and z hold pods a, b and c, overlay, VLAN underlay and
//! BGP underlay pods mixed over five nodes; each pod serves TCP and UDP on ports 80 and 81. For
//! every step of every scenario the full from x to x port x protocol matrix, IPv4 and IPv6, must
//! equal the scenario's truth table. Then: TCP streams across policy changes, an agent restart
//! under continuous probing of an isolated pod, and the negative control (one node without its
//! table fails the matrix check). Needs root; under CI=true it must run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Lab;
use hybridnet_lab::{cluster, supervisor};
use hybridnet_node::plan::policy::Protocol;
use hybridnet_node::plan::policy::conformance::{
    Change, NAMESPACES, PODS, PORTS, Scenario, instantiate, scenarios,
};
use hybridnet_test_support::paced::{PacedStream, spawn_in_netns};
use hybridnet_test_support::require_root;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// (namespace, pod, node, network type): every namespace has an overlay, a VLAN underlay
/// (node1, node2) and a BGP underlay pod (node4, node5), spread over the five nodes.
const PLACEMENT: [(&str, &str, &str, &str); 9] = [
    ("x", "a", "node1", "Overlay"),
    ("x", "b", "node2", "Underlay"),
    ("x", "c", "node4", "Underlay"),
    ("y", "a", "node5", "Underlay"),
    ("y", "b", "node3", "Overlay"),
    ("y", "c", "node1", "Underlay"),
    ("z", "a", "node2", "Underlay"),
    ("z", "b", "node4", "Underlay"),
    ("z", "c", "node2", "Overlay"),
];

/// A probe's first try; a failed one is tried once more with [`RETRY_TIMEOUT`] before it counts
/// as blocked. A blocked probe that is wrongly expected open only costs another pass of the
/// matrix (see [`Lab3x3::check`]); an allowed result is always real connectivity.
const FIRST_TIMEOUT: Duration = Duration::from_millis(150);
const RETRY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a step may take until the matrix equals its truth table twice in a row.
const SETTLE: Duration = Duration::from_secs(30);
/// Streams' ports (the probe servers hold 80 and 81).
const KEEP_PORT: u16 = 8080;
const CUT_PORT: u16 = 8081;
/// The longest stall of a TCP stream the policy does not concern (as the other lab e2e streams).
const STALL_BOUND: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
struct LabPod {
    ns: &'static str,
    name: &'static str,
    node: &'static str,
    netns: String,
    /// IPv4, IPv6.
    ips: [IpAddr; 2],
}

/// One cell of the matrix: pod indexes into [`Lab3x3::pods`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    from: usize,
    to: usize,
    port: u16,
    protocol: Protocol,
    v6: bool,
}

/// Every (from, to, port, protocol) of the 3 x 3 pods, without loopback (as the truth tables),
/// for the given families. TCP and UDP only: the lab's kernel may lack SCTP.
fn matrix(families: &[bool]) -> Vec<Probe> {
    let mut v = vec![];
    for from in 0..9 {
        for to in 0..9 {
            if from == to {
                continue;
            }
            for port in PORTS {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    for &v6 in families {
                        v.push(Probe {
                            from,
                            to,
                            port,
                            protocol,
                            v6,
                        });
                    }
                }
            }
        }
    }
    v
}

/// Whether a scenario's policies name pod addresses (`{cidr:..}`, `{wide:..}`): those are one
/// family per run.
fn names_addresses(sc: &Scenario) -> bool {
    sc.steps.iter().flat_map(|s| &s.changes).any(|c| {
        matches!(c, Change::Policy { spec, .. }
            if { let s = spec.to_string(); s.contains("{cidr:") || s.contains("{wide:") })
    })
}

fn serve(pod: &LabPod) {
    let name = format!("{}/{}", pod.ns, pod.name);
    spawn_in_netns(Some(&pod.netns), move || {
        for port in PORTS {
            let any = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
            let l = TcpListener::bind(any).map_err(|e| format!("{name}: tcp {port}: {e}"))?;
            std::thread::spawn(move || {
                for mut c in l.incoming().flatten() {
                    let _ = c.write_all(b"k");
                }
            });
            let u = UdpSocket::bind(any).map_err(|e| format!("{name}: udp {port}: {e}"))?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((n, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], peer);
                }
            });
        }
        Ok(())
    })
    .join()
    .expect("server thread")
    .unwrap_or_else(|e| panic!("serving: {e}"));
}

/// One try: a TCP connection that reads the server's byte, or a UDP datagram echoed back.
async fn reach_once(to: SocketAddr, protocol: Protocol, timeout: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let attempt = async {
        match protocol {
            Protocol::Tcp => {
                let mut s = tokio::net::TcpStream::connect(to).await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                Ok::<bool, std::io::Error>(b == *b"k")
            }
            _ => {
                let local: SocketAddr = if to.is_ipv6() {
                    "[::]:0".parse().unwrap()
                } else {
                    "0.0.0.0:0".parse().unwrap()
                };
                let u = tokio::net::UdpSocket::bind(local).await?;
                u.send_to(b"probe", to).await?;
                let mut b = [0u8; 16];
                let (n, from) = u.recv_from(&mut b).await?;
                Ok(from.ip() == to.ip() && &b[..n] == b"probe")
            }
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

async fn reach(to: SocketAddr, protocol: Protocol) -> bool {
    reach_once(to, protocol, FIRST_TIMEOUT).await || reach_once(to, protocol, RETRY_TIMEOUT).await
}

/// The cells that connected: all at once, from a thread in each source pod's namespace.
fn probe_all(pods: &[LabPod], probes: &[Probe]) -> BTreeSet<Probe> {
    let mut handles = vec![];
    for (i, p) in pods.iter().enumerate() {
        let mine: Vec<(Probe, SocketAddr)> = probes
            .iter()
            .filter(|c| c.from == i)
            .map(|c| {
                let ip = pods[c.to].ips[usize::from(c.v6)];
                (*c, SocketAddr::new(ip, c.port))
            })
            .collect();
        handles.push(spawn_in_netns(Some(&p.netns), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            Ok(rt.block_on(async {
                let results = futures::future::join_all(
                    mine.iter()
                        .map(|(c, to)| async move { (*c, reach(*to, c.protocol).await) }),
                )
                .await;
                results
                    .into_iter()
                    .filter(|(_, ok)| *ok)
                    .map(|(c, _)| c)
                    .collect::<Vec<_>>()
            }))
        }));
    }
    let mut out = BTreeSet::new();
    for h in handles {
        out.extend(h.join().expect("prober").expect("prober runtime"));
    }
    out
}

/// A matrix check that did not settle: the cells that differ, with the expected verdict.
#[derive(Debug)]
struct Mismatch(Vec<(Probe, bool)>);

struct Lab3x3 {
    client: kube::Client,
    pods: Vec<LabPod>,
    /// Policies created since the last reset.
    policies: BTreeSet<(&'static str, &'static str)>,
    /// Labels added since the last reset: (namespace, pod or None for the namespace, key).
    labels: BTreeSet<(&'static str, Option<&'static str>, &'static str)>,
}

impl Lab3x3 {
    fn index(&self, ns: &str, pod: &str) -> usize {
        self.pods
            .iter()
            .position(|p| p.ns == ns && p.name == pod)
            .expect("a pod of the 3 x 3")
    }

    fn describe(&self, c: &Probe) -> String {
        let (f, t) = (&self.pods[c.from], &self.pods[c.to]);
        format!(
            "{}/{} ({}) -> {}/{} ({}) {}/{:?} {}",
            f.ns,
            f.name,
            f.node,
            t.ns,
            t.name,
            t.node,
            c.port,
            c.protocol,
            if c.v6 { "IPv6" } else { "IPv4" }
        )
    }

    async fn probe(&self, probes: &[Probe]) -> BTreeSet<Probe> {
        let pods = self.pods.clone();
        let probes = probes.to_vec();
        tokio::task::spawn_blocking(move || probe_all(&pods, &probes))
            .await
            .expect("probe task")
    }

    /// Probes the matrix until it equals `want` (the cells that must connect) in two passes in
    /// a row, or `settle` passed: the agents program a change within moments, and two matching
    /// passes keep a pass that caught some nodes before their update from counting.
    async fn check(
        &self,
        probes: &[Probe],
        want: &dyn Fn(&Probe) -> bool,
        settle: Duration,
    ) -> Result<u32, Mismatch> {
        let deadline = Instant::now() + settle;
        let mut matched = 0;
        let mut passes = 0;
        loop {
            let got = self.probe(probes).await;
            passes += 1;
            let diff: Vec<(Probe, bool)> = probes
                .iter()
                .filter(|c| want(c) != got.contains(c))
                .map(|c| (*c, want(c)))
                .collect();
            if diff.is_empty() {
                matched += 1;
                if matched == 2 {
                    return Ok(passes);
                }
                continue;
            }
            matched = 0;
            if Instant::now() > deadline {
                return Err(Mismatch(diff));
            }
        }
    }

    fn report(&self, m: &Mismatch) -> String {
        let mut lines: Vec<String> =
            m.0.iter()
                .map(|(c, want)| {
                    format!(
                        "  {}: want {}",
                        self.describe(c),
                        if *want { "allowed" } else { "blocked" }
                    )
                })
                .collect();
        let n = lines.len();
        lines.truncate(40);
        format!("{n} cells differ:\n{}", lines.join("\n"))
    }

    async fn apply(&mut self, change: &Change, v6: bool) {
        match change {
            Change::Policy {
                namespace,
                name,
                spec,
            } => {
                let pods = self.pods.clone();
                let addr_of = move |n: &str, p: &str| {
                    pods.iter()
                        .find(|x| x.ns == n && x.name == p)
                        .map(|x| x.ips[usize::from(v6)])
                };
                let np = json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": instantiate(spec, &addr_of),
                });
                Api::<NetworkPolicy>::namespaced(self.client.clone(), namespace)
                    .patch(
                        name,
                        &PatchParams::apply("netpol-lab-test").force(),
                        &Patch::Apply(&np),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("applying policy {namespace}/{name}: {e}"));
                self.policies.insert((namespace, name));
            }
            Change::DeleteAllPolicies => self.delete_policies().await,
            Change::LabelPod {
                namespace,
                pod,
                labels,
            } => {
                let patch = json!({"metadata": {"labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()}});
                Api::<Pod>::namespaced(self.client.clone(), namespace)
                    .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("labelling pod {namespace}/{pod}: {e}"));
                for (k, _) in labels.iter() {
                    self.labels.insert((namespace, Some(pod), k));
                }
            }
            Change::LabelNamespace { namespace, labels } => {
                let patch = json!({"metadata": {"labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()}});
                Api::<Namespace>::all(self.client.clone())
                    .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("labelling namespace {namespace}: {e}"));
                for (k, _) in labels.iter() {
                    self.labels.insert((namespace, None, k));
                }
            }
        }
    }

    async fn delete_policies(&mut self) {
        for (ns, name) in std::mem::take(&mut self.policies) {
            match Api::<NetworkPolicy>::namespaced(self.client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => panic!("deleting policy {ns}/{name}: {e}"),
            }
        }
    }

    /// Back to the start: no policies, the pods' and namespaces' own labels only.
    async fn reset(&mut self) {
        self.delete_policies().await;
        let labels = std::mem::take(&mut self.labels);
        let mut removals: BTreeMap<(&str, Option<&str>), BTreeMap<&str, serde_json::Value>> =
            BTreeMap::new();
        for (ns, pod, key) in labels {
            // `pod=<name>` is the pods' own label: restored, not removed
            let v = match pod {
                Some(p) if key == "pod" => json!(p),
                _ => serde_json::Value::Null,
            };
            removals.entry((ns, pod)).or_default().insert(key, v);
        }
        for ((ns, pod), labels) in removals {
            let patch = json!({"metadata": {"labels": labels}});
            let r = match pod {
                Some(p) => Api::<Pod>::namespaced(self.client.clone(), ns)
                    .patch(p, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
                None => Api::<Namespace>::all(self.client.clone())
                    .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            };
            r.unwrap_or_else(|e| panic!("resetting labels of {ns}/{pod:?}: {e}"));
        }
    }

    /// Runs one scenario for the given families; Err names the first step that did not settle.
    async fn run(&mut self, sc: &Scenario, families: &[bool]) -> Result<u32, String> {
        self.reset().await;
        let probes = matrix(families);
        let mut passes = 0;
        for (si, step) in sc.steps.iter().enumerate() {
            for c in &step.changes {
                // one family per run when the scenario names addresses
                self.apply(c, families == [true]).await;
            }
            let want = |c: &Probe| {
                let (f, t) = (&self.pods[c.from], &self.pods[c.to]);
                sc.expected(si, (f.ns, f.name), (t.ns, t.name), c.port, c.protocol)
            };
            passes += self
                .check(&probes, &want, SETTLE)
                .await
                .map_err(|m| format!("step {si}: {}", self.report(&m)))?;
        }
        Ok(passes)
    }
}

async fn create_pods(client: &kube::Client, lab_id: &str) -> Vec<LabPod> {
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in NAMESPACES {
        let obj: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
        }))
        .unwrap();
        match nss.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating namespace {ns}: {e}"),
        }
    }
    for (ns, name, node, network_type) in PLACEMENT {
        let mut ports = vec![];
        for port in PORTS {
            for proto in ["TCP", "UDP"] {
                ports.push(
                    json!({"name": format!("serve-{port}-{}", proto.to_lowercase()),
                                  "containerPort": port, "protocol": proto}),
                );
            }
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}, "annotations": {
                "networking.alibaba.com/network-type": network_type,
                "networking.alibaba.com/ip-family": "DualStack"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "main", "image": "lab", "command": ["sleep", "infinity"],
                                     "ports": ports}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut running = BTreeMap::new();
        for ns in NAMESPACES {
            let list = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .unwrap();
            for p in list.items {
                let st = p.status.clone().unwrap_or_default();
                let ips: Vec<IpAddr> = st
                    .pod_ips
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.ip.parse().ok())
                    .collect();
                if st.phase.as_deref() == Some("Running") && ips.len() == 2 {
                    running.insert(
                        (ns, p.metadata.name.clone().unwrap_or_default()),
                        (p.metadata.uid.clone().unwrap_or_default(), ips),
                    );
                }
            }
        }
        if running.len() == PLACEMENT.len() {
            return PLACEMENT
                .iter()
                .map(|(ns, name, node, _)| {
                    let (uid, ips) = &running[&(*ns, name.to_string())];
                    let v4 = ips.iter().find(|i| i.is_ipv4()).copied();
                    let v6 = ips.iter().find(|i| i.is_ipv6()).copied();
                    LabPod {
                        ns,
                        name,
                        node,
                        netns: hybridnet_lab::kubelet::pod_netns(lab_id, uid),
                        ips: [v4.expect("an IPv4 address"), v6.expect("an IPv6 address")],
                    }
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 9 pods run dual stack after 120 s: {:?}",
            running.len(),
            running.keys()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_conformance_matrix() {
    if !require_root("network_policy_conformance_matrix") {
        return;
    }
    let started = Instant::now();
    let lab = Lab::up("p", 3, 2, 2);
    let dirs = lab.dirs();
    let client = cluster::client_from(&dirs.host_kubeconfig()).await.unwrap();
    hybridnet_lab::demo::create_networks(&client, true)
        .await
        .unwrap();
    let pods = create_pods(&client, &lab.id).await;
    for p in &pods {
        serve(p);
    }
    let mut l = Lab3x3 {
        client: client.clone(),
        pods,
        policies: BTreeSet::new(),
        labels: BTreeSet::new(),
    };
    // Without policies every cell connects.
    l.check(&matrix(&[false, true]), &|_| true, SETTLE)
        .await
        .unwrap_or_else(|m| panic!("no policy: {}", l.report(&m)));
    eprintln!(
        "netpol lab: up with 9 pods serving in {:?}",
        started.elapsed()
    );

    let all = scenarios();
    let mut failures = vec![];
    let mut cells = 0;
    for sc in &all {
        let t = Instant::now();
        let runs: &[&[bool]] = if names_addresses(sc) {
            &[&[false], &[true]]
        } else {
            &[&[false, true]]
        };
        for families in runs {
            match l.run(sc, families).await {
                Ok(passes) => {
                    cells += sc.steps.len() * matrix(families).len();
                    eprintln!(
                        "ok   {} ({}; {passes} passes, {:?})",
                        sc.name,
                        family_names(families),
                        t.elapsed()
                    );
                }
                Err(e) => {
                    eprintln!("FAIL {} ({}): {e}", sc.name, family_names(families));
                    failures.push(format!("{} ({}): {e}", sc.name, family_names(families)));
                }
            }
        }
    }
    l.reset().await;
    eprintln!(
        "netpol lab: {} scenarios, {cells} cells checked, after {:?}",
        all.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} scenario runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    streams_across_policy_changes(&mut l).await;
    restart_keeps_enforcement_and_negative_control(&mut l, &lab).await;
    eprintln!("netpol lab: done after {:?}", started.elapsed());
}

fn family_names(families: &[bool]) -> String {
    families
        .iter()
        .map(|v6| if *v6 { "IPv6" } else { "IPv4" })
        .collect::<Vec<_>>()
        .join("+")
}

fn stream(l: &Lab3x3, from: (&str, &str), to: (&str, &str), port: u16) -> PacedStream {
    let (f, t) = (
        &l.pods[l.index(from.0, from.1)],
        &l.pods[l.index(to.0, to.1)],
    );
    PacedStream::start(
        Some(&t.netns),
        Some(&f.netns),
        t.ips[0],
        port,
        Duration::from_millis(10),
    )
    .unwrap_or_else(|e| panic!("paced stream {from:?} -> {to:?}: {e}"))
}

async fn flows(s: &PacedStream, n: u64, when: &str) {
    s.flowing(n, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("no flow {when}: {e}"));
}

/// Waits until `s` delivered nothing for a second (at one record per 10 ms), at most 20 s.
async fn stops(s: &PacedStream, when: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (s.delivered(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let n = s.delivered();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the stream still flows 20 s {when}: {n} records"
        );
    }
}

/// An allowed TCP stream survives a policy that still allows it and an unrelated policy change;
/// a stream the policy no longer allows stops (new packets of it are dropped), as Kubernetes
/// documents.
async fn streams_across_policy_changes(l: &mut Lab3x3) {
    l.reset().await;
    // y/a (BGP, node5) -> x/a (overlay, node1) stays allowed; z/a (VLAN, node2) -> x/a is cut.
    let keep = stream(l, ("y", "a"), ("x", "a"), KEEP_PORT);
    let cut = stream(l, ("z", "a"), ("x", "a"), CUT_PORT);
    flows(&keep, 50, "before the policy").await;
    flows(&cut, 50, "before the policy").await;
    keep.mark("x/a isolated: ingress from namespace y only");
    l.apply(
        &Change::Policy {
            namespace: "x",
            name: "from-y",
            spec: json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}),
        },
        false,
    )
    .await;
    let at_cut = stops(&cut, "after x/a allows namespace y only").await;
    keep.mark("z/a -> x/a stopped");
    flows(&keep, 100, "after x/a allows namespace y only").await;
    assert_eq!(
        cut.delivered(),
        at_cut,
        "the disallowed stream z/a -> x/a delivered again"
    );
    // An unrelated change: z/c (overlay, node2) isolated; wait until it is enforced.
    keep.mark("unrelated policy in z");
    l.apply(
        &Change::Policy {
            namespace: "z",
            name: "deny-c",
            spec: json!({"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Ingress"], "ingress": []}),
        },
        false,
    )
    .await;
    let into_zc = Probe {
        from: l.index("y", "b"),
        to: l.index("z", "c"),
        port: 80,
        protocol: Protocol::Tcp,
        v6: false,
    };
    l.check(&[into_zc], &|_| false, SETTLE)
        .await
        .unwrap_or_else(|m| panic!("z/c isolated: {}", l.report(&m)));
    keep.mark("z/c isolated");
    flows(&keep, 100, "after the unrelated change").await;
    assert_eq!(
        cut.delivered(),
        at_cut,
        "the disallowed stream z/a -> x/a delivered again"
    );
    let report = keep.finish().expect("the allowed stream y/a -> x/a");
    report
        .gap_within(STALL_BOUND, "the policy changes")
        .unwrap();
    eprintln!("netpol lab: allowed stream across policy changes: {report}");
    // the cut stream's receiver times out; its report is no evidence either way
    let _ = cut.finish();
    l.reset().await;
}

/// Probes `to` (TCP and UDP, port 80, IPv4 and IPv6) from each of `from` until stopped;
/// returns (probe rounds, cells that connected).
struct Prober {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<Result<Vec<Probe>, String>>>,
}

impl Prober {
    fn start(l: &Lab3x3, from: &[usize], to: usize) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let mut handles = vec![];
        for &f in from {
            let cells: Vec<(Probe, SocketAddr)> = matrix(&[false, true])
                .into_iter()
                .filter(|c| c.from == f && c.to == to && c.port == 80)
                .map(|c| {
                    (
                        c,
                        SocketAddr::new(l.pods[to].ips[usize::from(c.v6)], c.port),
                    )
                })
                .collect();
            let (stop, rounds) = (stop.clone(), rounds.clone());
            handles.push(spawn_in_netns(Some(&l.pods[f].netns), move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    let mut open = vec![];
                    while !stop.load(Ordering::SeqCst) {
                        let r = futures::future::join_all(cells.iter().map(|(c, a)| async move {
                            (*c, reach_once(*a, c.protocol, RETRY_TIMEOUT).await)
                        }))
                        .await;
                        open.extend(r.into_iter().filter(|(_, ok)| *ok).map(|(c, _)| c));
                        rounds.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(open)
                })
            }));
        }
        Prober {
            stop,
            rounds,
            handles,
        }
    }

    async fn wait_rounds(&self, n: u64) {
        let base = self.rounds.load(Ordering::SeqCst);
        while self.rounds.load(Ordering::SeqCst) < base + n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn finish(self) -> (u64, Vec<Probe>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut open = vec![];
        for h in self.handles {
            open.extend(h.join().expect("prober").expect("prober runtime"));
        }
        (self.rounds.load(Ordering::SeqCst), open)
    }
}

async fn restart_keeps_enforcement_and_negative_control(l: &mut Lab3x3, lab: &Lab) {
    let dirs = lab.dirs();
    let params = cluster::LabParams::load(&dirs).unwrap();
    let layout = params.layout();
    let ds = cluster::wait_for_agent_daemonset(&l.client, Duration::from_secs(10))
        .await
        .unwrap();
    // x/a and y/c run on node1.
    let spec = cluster::agent_process(&params, &dirs, &layout, &ds, 1).unwrap();
    let node1_netns = format!("hl{}-node1", lab.id);
    let all = scenarios();
    let deny = all
        .iter()
        .find(|s| s.name == "should support a 'default-deny-ingress' policy")
        .expect("the default-deny-ingress scenario");
    let probes = matrix(&[false, true]);
    l.run(deny, &[false, true])
        .await
        .unwrap_or_else(|e| panic!("default-deny-ingress: {e}"));
    let pods = l.pods.clone();
    let want = move |c: &Probe| {
        let (f, t) = (&pods[c.from], &pods[c.to]);
        deny.expected(0, (f.ns, f.name), (t.ns, t.name), c.port, c.protocol)
    };

    // Agent restart: x/a (node1) is probed from pods of every kind, on node1 and elsewhere,
    // without pause from before the stop until the new agent demonstrably enforces a change.
    let xa = l.index("x", "a");
    let from: Vec<usize> = [("x", "b"), ("y", "a"), ("y", "c"), ("z", "b"), ("z", "c")]
        .iter()
        .map(|(n, p)| l.index(n, p))
        .collect();
    let prober = Prober::start(l, &from, xa);
    prober.wait_rounds(5).await;
    supervisor::stop(&dirs, &spec.name, Duration::from_secs(3));
    assert!(!supervisor::alive(&dirs, &spec.name));
    prober.wait_rounds(20).await;
    supervisor::start(&dirs, &spec).unwrap();
    let node1 = &layout
        .host(&hybridnet_lab::topology::Role::Node(1))
        .unwrap()
        .netns;
    let t = Instant::now();
    while !cluster::agent_ready(node1, 11021).await {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "node1's agent not ready 60 s after its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new agent programs a change on node1: y/c isolated.
    l.apply(
        &Change::Policy {
            namespace: "y",
            name: "deny-c",
            spec: json!({"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Ingress"], "ingress": []}),
        },
        false,
    )
    .await;
    let yc = l.index("y", "c");
    let with_yc = |c: &Probe| want(c) && c.to != yc;
    l.check(&probes, &with_yc, SETTLE)
        .await
        .unwrap_or_else(|m| panic!("after node1's agent restart: {}", l.report(&m)));
    prober.wait_rounds(5).await;
    let (rounds, open) = prober.finish();
    assert!(
        open.is_empty(),
        "isolated x/a reachable across node1's agent restart: {:?}",
        open.iter().map(|c| l.describe(c)).collect::<Vec<_>>()
    );
    eprintln!(
        "netpol lab: x/a probed in {rounds} rounds from 5 pods across node1's agent restart: never reachable"
    );

    // Negative control: node1 without its table (agent stopped, so nothing restores it) must
    // fail the same check, in exactly the cells into node1's isolated pods.
    l.delete_policies().await;
    l.apply(&deny.steps[0].changes[0], false).await;
    l.check(&probes, &want, SETTLE)
        .await
        .unwrap_or_else(|m| panic!("default-deny-ingress again: {}", l.report(&m)));
    supervisor::stop(&dirs, &spec.name, Duration::from_secs(3));
    hybridnet_test_support::sh(&[
        "ip",
        "netns",
        "exec",
        &node1_netns,
        "nft",
        "delete",
        "table",
        "inet",
        "hybridnet_policy",
    ]);
    let m = l
        .check(&probes, &want, Duration::from_secs(3))
        .await
        .expect_err("the matrix check passes with node1's policy table deleted");
    assert!(
        m.0.iter().all(|(c, w)| !w && c.to == xa),
        "node1 without a table opens exactly the cells into x/a: {}",
        l.report(&m)
    );
    assert_eq!(
        m.0.len(),
        probes.iter().filter(|c| c.to == xa).count(),
        "{}",
        l.report(&m)
    );
    eprintln!(
        "netpol lab: negative control: without node1's table {} cells into x/a open",
        m.0.len()
    );
    supervisor::start(&dirs, &spec).unwrap();
    l.check(&probes, &want, SETTLE)
        .await
        .unwrap_or_else(|m| panic!("node1's agent restores its table: {}", l.report(&m)));
    l.reset().await;
}

#[test]
fn the_matrix_is_complete_and_address_scenarios_run_per_family() {
    let m = matrix(&[false, true]);
    // 72 ordered pairs x 2 ports x 2 protocols x 2 families, no loopback, no duplicates
    assert_eq!(m.len(), 72 * 8);
    assert!(m.iter().all(|c| c.from != c.to));
    assert_eq!(m.iter().collect::<BTreeSet<_>>().len(), m.len());
    let all = scenarios();
    let with_addresses: Vec<&str> = all
        .iter()
        .filter(|s| names_addresses(s))
        .map(|s| s.name)
        .collect();
    assert!(!with_addresses.is_empty());
    assert!(with_addresses.len() < all.len());
    // placement: every namespace holds an overlay, a VLAN and a BGP pod
    for ns in NAMESPACES {
        let kinds: BTreeSet<&str> = PLACEMENT
            .iter()
            .filter(|p| p.0 == ns)
            .map(|p| match (p.3, p.2) {
                ("Overlay", _) => "overlay",
                (_, "node4" | "node5") => "bgp",
                _ => "vlan",
            })
            .collect();
        assert_eq!(kinds.len(), 3, "{ns}: {kinds:?}");
        assert_eq!(PODS.len(), 3);
    }
}

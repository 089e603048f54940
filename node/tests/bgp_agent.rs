//! Issue 10 end to end: two node namespaces in one BGP network, each on its own /31 link to a
//! ToR namespace running Debian's bird2 (no L2 between the nodes or the pods' subnets), and an
//! outside host behind the ToR. Each node runs the agent's reconcile (planner, data-plane apply
//! and `BgpController`) on a thread inside its namespace; pods are attached through the agent's
//! CNI path (`CniService` ADD/DEL with the BGP readiness hook).
//!
//! Checked: ADD of a BGP pod fails with code 11 while the required peer is down and succeeds
//! once its routes are announced; bird learns each pod /32 and /128 (NO_EXPORT, AS_PATH = the
//! node's AS) and the subnet prefixes and installs them in its kernel table; pods on the two
//! nodes reach each other and the outside host (IPv4 and IPv6) through the ToR; deleting a pod
//! withdraws its routes at the ToR; metrics and readiness follow the sessions. And ADD also
//! waits for the kernel to route the pod out: its subnet's policy rule and the table's default
//! route via the peer (code 11 while either is missing, though the pod is announced).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report
#![cfg(all(target_os = "linux", feature = "dataplane"))]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;
use hybridnet_cni::protocol::PROTOCOL_VERSION;
use hybridnet_cni::{AgentCommand, AgentRequest, AgentResponse, PodRef};
use hybridnet_node::bgp::{BgpCollector, BgpController, BgpState};
use hybridnet_node::cniserver::{
    CniServerConfig, CniService, IpInstanceLookup, PodAddressing, ReadinessFuture,
};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{Applier, NftRunner, read_host_state};
use hybridnet_node::plan::{ApiState, PlanConfig, build_plan};
use tokio::sync::watch;

const NODE_AS: i32 = 65001;
const TOR_AS: i32 = 65000;
/// The ToR's address towards every node (on each node link, as on a routed access layer).
const TOR_PEER: &str = "198.18.0.1";

// ---- fixtures ------------------------------------------------------------------------------

fn may_run(test: &str) -> bool {
    hybridnet_test_support::may_run(test, &["ip", "bird", "birdc", "nft", "ping"])
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

use hybridnet_test_support::try_sh as sh;

/// A test network namespace (removed on drop, also when the test panics) with the helpers this
/// suite needs on top of the shared guard.
struct Ns(hybridnet_test_support::Netns);

impl std::ops::Deref for Ns {
    type Target = hybridnet_test_support::Netns;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Ns {
    fn new(tag: &str) -> Ns {
        Ns(hybridnet_test_support::Netns::new(&format!("bgp{tag}")))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(self.0.path())
    }

    fn ip(&self, args: &str) -> String {
        self.0.ip(args)
    }

    fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A veth pair `a_name` (in `a`) <-> `b_name` (in `b`), both up.
fn link(a: &Ns, a_name: &str, b: &Ns, b_name: &str) {
    let tmp = format!("hbv{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    a.ip(&format!("link add {a_name} type veth peer name {tmp}"));
    a.ip(&format!("link set {tmp} netns {}", b.name));
    b.ip(&format!("link set {tmp} name {b_name}"));
    a.ip(&format!("link set {a_name} up"));
    b.ip(&format!("link set {b_name} up"));
}

use hybridnet_test_support::eventually;

/// bird2 in the ToR namespace, killed by pid on drop.
struct Bird {
    socket: PathBuf,
    pid_file: PathBuf,
}

impl Bird {
    fn start(ns: &Ns, dir: &Path, config: &str) -> Bird {
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).unwrap();
        let bird = Bird {
            socket: dir.join("bird.ctl"),
            pid_file: dir.join("bird.pid"),
        };
        ns.exec(&[
            "bird",
            "-c",
            conf.to_str().unwrap(),
            "-s",
            bird.socket.to_str().unwrap(),
            "-P",
            bird.pid_file.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("bird did not start: {e}"));
        bird
    }

    fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["birdc", "-s", self.socket.to_str().unwrap()];
        v.extend(args);
        sh(&v)
    }

    /// `show route all`: prefix -> paths (protocol, attributes as text).
    fn routes(&self) -> BTreeMap<String, Vec<String>> {
        let out = self.birdc(&["show", "route", "all"]).unwrap_or_default();
        let mut routes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut prefix = String::new();
        for line in out.lines() {
            if line.starts_with("Table") || line.starts_with("BIRD") || line.trim().is_empty() {
                continue;
            }
            if line.contains(" unicast [") {
                if !line.starts_with(char::is_whitespace) {
                    prefix = line.split_whitespace().next().unwrap_or("").to_string();
                }
                routes
                    .entry(prefix.clone())
                    .or_default()
                    .push(line.trim().to_string());
            } else if let Some(paths) = routes.get_mut(&prefix)
                && let Some(last) = paths.last_mut()
            {
                last.push('\n');
                last.push_str(line.trim());
            }
        }
        routes
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

fn bird_config() -> String {
    let mut c = format!(
        "router id {TOR_PEER};\nprotocol device {{ }}\n\
         protocol kernel kernel4 {{ ipv4 {{ export all; }}; }}\n\
         protocol kernel kernel6 {{ ipv6 {{ export all; }}; }}\n"
    );
    for (name, neighbor) in [("node1", "198.18.1.1"), ("node2", "198.18.1.3")] {
        c.push_str(&format!(
            "protocol bgp {name} {{\n  local {TOR_PEER} as {TOR_AS};\n  neighbor {neighbor} as {NODE_AS};\n  \
             passive on;\n  error wait time 1, 2;\n  graceful restart on;\n  \
             ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ));
    }
    c
}

// ---- API objects ---------------------------------------------------------------------------

fn bgp_network() -> Network {
    let mut n = Network::new(
        "bgp-net",
        NetworkSpec {
            node_selector: None,
            net_id: Some(NODE_AS),
            network_type: Some(NetworkType::Underlay),
            mode: Some(NetworkMode::Bgp),
            config: Some(NetworkConfig {
                bgp_peers: Some(vec![BgpPeer {
                    asn: TOR_AS,
                    address: TOR_PEER.into(),
                    graceful_restart_seconds: Some(120),
                    ..Default::default()
                }]),
            }),
        },
    );
    n.status = Some(NetworkStatus {
        node_list: Some(vec!["node1".into(), "node2".into()]),
        ..Default::default()
    });
    n
}

/// The GlobalBGP network: its pods are announced without NO_EXPORT by nodes of BGP networks.
fn global_network() -> Network {
    Network::new(
        "global-net",
        NetworkSpec {
            node_selector: None,
            net_id: None,
            network_type: Some(NetworkType::GlobalBgp),
            mode: Some(NetworkMode::GlobalBgp),
            config: None,
        },
    )
}

fn subnet(name: &str, network: &str, cidr: &str, version: IpVersion) -> Subnet {
    // An IPv6 /64 needs a range: subnets may hold at most 65,536 addresses (the planner skips
    // an invalid subnet, and then its pods have no table).
    let (start, end) = match version {
        IpVersion::V6 => {
            let base = cidr.split("::/").next().unwrap_or_default();
            (Some(format!("{base}::1")), Some(format!("{base}::ffff")))
        }
        IpVersion::V4 => (None, None),
    };
    Subnet::new(
        name,
        SubnetSpec {
            network: network.into(),
            net_id: None,
            range: AddressRange {
                version,
                cidr: cidr.into(),
                start,
                end,
                gateway: None,
                reserved_ips: None,
                exclude_ips: None,
            },
            config: None,
        },
    )
}

fn instance(pod: &str, addr: &str, node: &str, mac: &str) -> IPInstance {
    let bare: IpAddr = addr.split('/').next().unwrap().parse().unwrap();
    let global = addr.starts_with("198.19.200.");
    let mut i = IPInstance::new(
        &hybridnet_api::naming::ip_to_instance_name(bare),
        IPInstanceSpec {
            network: if global { "global-net" } else { "bgp-net" }.into(),
            subnet: if global {
                "global-v4"
            } else if bare.is_ipv4() {
                "bgp-v4"
            } else {
                "bgp-v6"
            }
            .into(),
            address: Address {
                version: if bare.is_ipv4() {
                    IpVersion::V4
                } else {
                    IpVersion::V6
                },
                ip: addr.into(),
                gateway: None,
                net_id: (!global).then_some(NODE_AS),
                mac: mac.into(),
            },
            binding: Binding {
                node_name: Some(node.into()),
                pod_name: Some(pod.into()),
                ..Default::default()
            },
        },
    );
    i.metadata.namespace = Some("default".into());
    i.metadata.labels = Some(BTreeMap::from([(
        label::NODE.to_string(),
        node.to_string(),
    )]));
    i
}

/// Pod `a` on node1, pod `b` on node2, dual stack; pod `g` (GlobalBGP) on node1.
fn pod_instances() -> Vec<IPInstance> {
    vec![
        instance("g", "198.19.200.5/24", "node1", "02:00:00:00:0c:01"),
        instance("a", "198.19.1.10/24", "node1", "02:00:00:00:0a:01"),
        instance("a", "fd00:19:1::10/64", "node1", "02:00:00:00:0a:01"),
        instance("b", "198.19.1.20/24", "node2", "02:00:00:00:0b:01"),
        instance("b", "fd00:19:1::20/64", "node2", "02:00:00:00:0b:01"),
    ]
}

fn api_state(node: &str, instances: Vec<IPInstance>) -> ApiState {
    ApiState {
        node_name: node.into(),
        node_addresses: vec![],
        networks: vec![bgp_network(), global_network()],
        subnets: vec![
            subnet("bgp-v4", "bgp-net", "198.19.1.0/24", IpVersion::V4),
            subnet("bgp-v6", "bgp-net", "fd00:19:1::/64", IpVersion::V6),
            subnet("global-v4", "global-net", "198.19.200.0/24", IpVersion::V4),
        ],
        ip_instances: instances.into_iter().map(Arc::new).collect(),
        node_infos: vec![],
        ..Default::default()
    }
}

// ---- the node agent under test -------------------------------------------------------------

/// The agent's reconcile (plan, apply, BGP) on a thread inside the node namespace, and its CNI
/// service. API state is pushed through a watch channel, as the agent's reflectors would.
struct NodeAgent {
    node: String,
    api: watch::Sender<ApiState>,
    bgp: Arc<BgpState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    diagnostics: Arc<Mutex<String>>,
    cni: Arc<CniService>,
    /// Whether the reconcile loop applies its plan to the kernel (tests switch it off to hold
    /// the routing back while BGP runs), and the gate the loop holds while it applies.
    apply: Arc<AtomicBool>,
    applying: Arc<tokio::sync::Mutex<()>>,
}

/// The CNI lookup of the test agent: IPInstances from its API state, readiness from BGP.
struct Lookup {
    api: watch::Receiver<ApiState>,
    bgp: Arc<BgpState>,
}

impl IpInstanceLookup for Lookup {
    fn pod_instances(&self, pod: &PodRef) -> Vec<IPInstance> {
        let api = self.api.borrow();
        api.ip_instances
            .iter()
            .filter(|i| {
                i.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
                    && i.spec.binding.pod_name.as_deref() == Some(pod.name.as_str())
                    && i.spec.binding.node_name.as_deref() == Some(api.node_name.as_str())
            })
            .map(|i| (**i).clone())
            .collect()
    }

    fn wait_pod_reachable<'a>(&'a self, addressing: &'a PodAddressing) -> ReadinessFuture<'a> {
        Box::pin(self.bgp.wait_pod_reachable(addressing))
    }
}

impl NodeAgent {
    fn start(ns: &Ns, api: ApiState, pod_wait: Duration) -> NodeAgent {
        Self::start_with(ns, api, pod_wait, true)
    }

    fn start_with(ns: &Ns, api: ApiState, pod_wait: Duration, apply: bool) -> NodeAgent {
        let apply = Arc::new(AtomicBool::new(apply));
        let applying = Arc::new(tokio::sync::Mutex::new(()));
        let node = api.node_name.clone();
        let (api_tx, api_rx) = watch::channel(api);
        let bgp = Arc::new(BgpState::new(pod_wait));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let diagnostics = Arc::new(Mutex::new(String::new()));
        let thread = {
            let name = ns.name.clone();
            let mut rx = api_rx.clone();
            let state = bgp.clone();
            let diag = diagnostics.clone();
            let apply = apply.clone();
            let applying = applying.clone();
            std::thread::spawn(move || {
                run_in_netns(&name, move |handle| async move {
                    let cfg = PlanConfig {
                        prefer_bgp_interfaces: vec!["eth0".into()],
                        ..Default::default()
                    };
                    let mut applier =
                        Applier::new(handle.clone(), cfg.tables.clone(), NftRunner::new("nft"));
                    // Faster reconnects than production so the test does not wait for backoff.
                    let mut bgp = BgpController::new(state).with_tuning(|c| {
                        c.retry_initial = Duration::from_millis(200);
                        c.retry_max = Duration::from_secs(1);
                    });
                    let mut stop = stop_rx;
                    loop {
                        let api = rx.borrow_and_update().clone();
                        let host = read_host_state(&handle, &cfg.tables).await?;
                        let plan = build_plan(&api, &host, &cfg);
                        let report = bgp.reconcile(&api, &host, &cfg.prefer_bgp_interfaces);
                        let gate = applying.lock().await;
                        let applied = if apply.load(Ordering::SeqCst) {
                            Some(applier.apply(&plan).await)
                        } else {
                            None
                        };
                        drop(gate);
                        if let Ok(mut d) = diag.lock() {
                            *d = format!(
                                "plan problems {:?}; bgp {report:?}; apply {:?}",
                                plan.problems,
                                applied.as_ref().map(|a| a.as_ref().map(|r| &r.errors))
                            );
                        }
                        tokio::select! {
                            r = rx.changed() => if r.is_err() { break },
                            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                            _ = &mut stop => break,
                        }
                    }
                    Ok(())
                })
            })
        };
        let lookup: Arc<dyn IpInstanceLookup> = Arc::new(Lookup {
            api: api_rx,
            bgp: bgp.clone(),
        });
        let cni = CniService::new(
            lookup,
            CniServerConfig {
                host_netns: Some(ns.path()),
                ..Default::default()
            },
        )
        .expect("CNI service for the node namespace");
        NodeAgent {
            node,
            api: api_tx,
            bgp,
            stop: Some(stop_tx),
            thread: Some(thread),
            diagnostics,
            cni: Arc::new(cni),
            apply,
            applying,
        }
    }

    /// Switches applying the plan on or off (and wakes the loop); returns once no apply that
    /// began before the switch is still running.
    async fn set_apply(&self, on: bool) {
        self.apply.store(on, Ordering::SeqCst);
        drop(self.applying.lock().await);
        self.api.send_modify(|_| {});
    }

    fn set_instances(&self, instances: Vec<IPInstance>) {
        self.api
            .send_modify(|a| a.ip_instances = instances.into_iter().map(Arc::new).collect());
    }

    fn diagnostics(&self) -> String {
        self.diagnostics
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    async fn cni(&self, command: AgentCommand, pod: &str, pod_ns: &Ns) -> AgentResponse {
        self.cni
            .handle(AgentRequest {
                version: PROTOCOL_VERSION,
                command,
                container_id: Some(format!("cid-{pod}")),
                netns: Some(pod_ns.path().to_string_lossy().into_owned()),
                ifname: Some("eth0".into()),
                pod: Some(PodRef {
                    namespace: "default".into(),
                    name: pod.into(),
                    uid: None,
                }),
                valid_attachments: vec![],
            })
            .await
    }

    async fn add_ok(&self, pod: &str, pod_ns: &Ns) {
        let r = self.cni(AgentCommand::Add, pod, pod_ns).await;
        assert!(
            r.error.is_none() && r.result.is_some(),
            "ADD {pod} on {}: {:?}; agent: {}",
            self.node,
            r.error,
            self.diagnostics()
        );
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) if !std::thread::panicking() => panic!("agent {}: {e:#}", self.node),
                _ => {}
            }
        }
    }
}

// ---- the test --------------------------------------------------------------------------------

struct Topology {
    tor: Ns,
    node1: Ns,
    node2: Ns,
    ext: Ns,
}

/// tor: tn1 198.18.1.0/31 <-> node1 eth0 198.18.1.1/31, tn2 198.18.1.2/31 <-> node2 eth0
/// 198.18.1.3/31, tor-x 198.18.2.0/31 <-> ext eth0 198.18.2.1/31; the ToR's peering address
/// 198.18.0.1/32 sits on every node link. IPv6: fd00:1::/64, fd00:2::/64, fd00:3::/64.
fn topology() -> Topology {
    let t = Topology {
        tor: Ns::new("tor"),
        node1: Ns::new("n1"),
        node2: Ns::new("n2"),
        ext: Ns::new("ext"),
    };
    link(&t.tor, "tn1", &t.node1, "eth0");
    link(&t.tor, "tn2", &t.node2, "eth0");
    link(&t.tor, "tor-x", &t.ext, "eth0");
    for (dev, v4, v6) in [
        ("tn1", "198.18.1.0/31", "fd00:1::1/64"),
        ("tn2", "198.18.1.2/31", "fd00:2::1/64"),
        ("tor-x", "198.18.2.0/31", "fd00:3::1/64"),
    ] {
        t.tor.ip(&format!("addr add {v4} dev {dev}"));
        t.tor.ip(&format!("addr add {v6} dev {dev} nodad"));
    }
    t.tor.ip(&format!("addr add {TOR_PEER}/32 dev tn1"));
    t.tor.ip(&format!("addr add {TOR_PEER}/32 dev tn2"));
    t.tor.sysctl("net.ipv4.ip_forward", "1");
    t.tor.sysctl("net.ipv6.conf.all.forwarding", "1");
    t.tor.sysctl("net.ipv4.conf.all.rp_filter", "0");
    t.tor.sysctl("net.ipv4.conf.default.rp_filter", "0");
    for (node, v4, gw4, v6, gw6) in [
        (
            &t.node1,
            "198.18.1.1/31",
            "198.18.1.0",
            "fd00:1::2/64",
            "fd00:1::1",
        ),
        (
            &t.node2,
            "198.18.1.3/31",
            "198.18.1.2",
            "fd00:2::2/64",
            "fd00:2::1",
        ),
        (
            &t.ext,
            "198.18.2.1/31",
            "198.18.2.0",
            "fd00:3::2/64",
            "fd00:3::1",
        ),
    ] {
        node.ip(&format!("addr add {v4} dev eth0"));
        node.ip(&format!("addr add {v6} dev eth0 nodad"));
        node.ip(&format!("route add default via {gw4} dev eth0"));
        node.ip(&format!("-6 route add default via {gw6} dev eth0"));
    }
    for node in [&t.node1, &t.node2] {
        // The peer is on the link (the BGP tables route `default via 198.18.0.1 dev eth0`).
        node.ip(&format!("route add {TOR_PEER}/32 dev eth0 scope link"));
    }
    t
}

fn ping(from: &Ns, to: &str) -> Result<String, String> {
    from.exec(&["ping", "-c", "1", "-W", "1", to])
}

async fn reaches(from: &Ns, what: &str, to: &str) {
    let from_name = from.name.clone();
    eventually(
        &format!("{what}: ping {to} from {from_name}"),
        Duration::from_secs(10),
        || async { ping(from, to) },
    )
    .await;
}

fn path_of<'a>(
    routes: &'a BTreeMap<String, Vec<String>>,
    prefix: &str,
    proto: &str,
) -> Option<&'a String> {
    routes
        .get(prefix)?
        .iter()
        .find(|p| p.contains(&format!("[{proto} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bgp_nodes_reach_each_other_and_the_outside_through_bird() {
    if !may_run("two_bgp_nodes_reach_each_other_and_the_outside_through_bird") {
        return;
    }
    let t = topology();
    let dir = tempfile::tempdir().unwrap();
    let pod_a = Ns::new("pa");
    let pod_b = Ns::new("pb");
    let pod_g = Ns::new("pg");
    let n1 = NodeAgent::start(
        &t.node1,
        api_state("node1", pod_instances()),
        Duration::from_millis(1500),
    );
    let n2 = NodeAgent::start(
        &t.node2,
        api_state("node2", pod_instances()),
        Duration::from_secs(10),
    );

    // No ToR yet: the required peer is down, so ADD of a BGP pod is "try again later".
    eventually("node1's speaker", Duration::from_secs(10), || async {
        n1.bgp.speaker().map(|_| ()).ok_or_else(|| n1.diagnostics())
    })
    .await;
    let r = n1.cni(AgentCommand::Add, "a", &pod_a).await;
    let e = r.error.expect("ADD must fail while the ToR is down");
    assert_eq!(e.code, 11, "{e:?}");
    assert!(
        e.msg.contains("198.19.1.10") && e.msg.contains(TOR_PEER),
        "{e:?}"
    );
    assert!(n1.bgp.readiness().unwrap_err().contains(TOR_PEER));
    // The runtime cleans up a failed ADD.
    let r = n1.cni(AgentCommand::Del, "a", &pod_a).await;
    assert!(r.error.is_none(), "{r:?}");

    let bird = Bird::start(&t.tor, dir.path(), &bird_config());
    for agent in [&n1, &n2] {
        eventually("required BGP sessions", Duration::from_secs(20), || async {
            agent
                .bgp
                .readiness()
                .map_err(|e| format!("{}: {e}; {}", agent.node, agent.diagnostics()))
        })
        .await;
    }
    // The runtime retries: now ADD waits for the announcements and succeeds.
    n1.add_ok("a", &pod_a).await;
    n2.add_ok("b", &pod_b).await;
    n1.add_ok("g", &pod_g).await;

    // The ToR learned the pods and subnets with the node's AS and the right communities.
    let routes = eventually("pod routes at the ToR", Duration::from_secs(10), || async {
        let r = bird.routes();
        let want = [
            "198.19.1.10/32",
            "198.19.1.20/32",
            "fd00:19:1::10/128",
            "fd00:19:1::20/128",
            "198.19.200.5/32",
        ];
        if want.iter().all(|p| r.contains_key(*p)) {
            Ok(r)
        } else {
            Err(format!("{r:#?}"))
        }
    })
    .await;
    for (prefix, proto, next_hop) in [
        ("198.19.1.10/32", "node1", "198.18.1.1"),
        ("198.19.1.20/32", "node2", "198.18.1.3"),
        ("fd00:19:1::10/128", "node1", "fd00:1::2"),
        ("fd00:19:1::20/128", "node2", "fd00:2::2"),
    ] {
        let p = path_of(&routes, prefix, proto)
            .unwrap_or_else(|| panic!("{prefix} from {proto}: {routes:#?}"));
        assert!(
            p.contains(&format!("BGP.as_path: {NODE_AS}\n")),
            "{prefix}: {p}"
        );
        assert!(
            p.contains("BGP.community: (65535,65281)"),
            "{prefix} NO_EXPORT: {p}"
        );
        assert!(
            p.contains(&format!("BGP.next_hop: {next_hop}")),
            "{prefix}: {p}"
        );
    }
    for (prefix, proto) in [
        ("198.19.1.0/24", "node1"),
        ("198.19.1.0/24", "node2"),
        ("fd00:19:1::/64", "node1"),
        ("fd00:19:1::/64", "node2"),
    ] {
        let p = path_of(&routes, prefix, proto)
            .unwrap_or_else(|| panic!("{prefix} from {proto}: {routes:#?}"));
        assert!(
            p.contains(&format!("BGP.as_path: {NODE_AS}\n")),
            "{prefix}: {p}"
        );
        assert!(
            !p.contains("BGP.community"),
            "subnet prefixes are exportable: {p}"
        );
    }
    // GlobalBGP pods are exportable (no NO_EXPORT); GlobalBGP subnets are not announced.
    let p = path_of(&routes, "198.19.200.5/32", "node1").expect("GlobalBGP pod route");
    assert!(p.contains(&format!("BGP.as_path: {NODE_AS}\n")), "{p}");
    assert!(
        !p.contains("BGP.community"),
        "GlobalBGP pod without NO_EXPORT: {p}"
    );
    assert!(!routes.contains_key("198.19.200.0/24"), "{routes:#?}");
    // bird installed them in the ToR's kernel.
    let kernel = t.tor.ip("route show 198.19.1.20");
    assert!(
        kernel.contains("via 198.18.1.3 dev tn2") && kernel.contains("proto bird"),
        "{kernel}"
    );

    // Pod <-> pod across nodes and pods -> outside host, through the ToR only.
    reaches(&pod_a, "pod a -> pod b", "198.19.1.20").await;
    reaches(&pod_b, "pod b -> pod a", "198.19.1.10").await;
    reaches(&pod_a, "pod a -> pod b (v6)", "fd00:19:1::20").await;
    reaches(&pod_b, "pod b -> pod a (v6)", "fd00:19:1::10").await;
    reaches(&pod_a, "pod a -> outside", "198.18.2.1").await;
    reaches(&pod_g, "GlobalBGP pod g -> outside", "198.18.2.1").await;
    reaches(&pod_g, "GlobalBGP pod g -> pod b", "198.19.1.20").await;
    // Routed, not bridged: node1, the ToR and node2 each take one off the TTL (64 - 3).
    let out = ping(&pod_a, "198.19.1.20").unwrap();
    assert!(
        out.contains("ttl=61"),
        "pod a -> pod b must cross node1, ToR, node2: {out}"
    );
    reaches(&pod_b, "pod b -> outside (v6)", "fd00:3::2").await;
    reaches(&t.ext, "outside -> pod a", "198.19.1.10").await;
    reaches(&t.ext, "outside -> pod b (v6)", "fd00:19:1::20").await;

    // Metrics of node1: the session is up, four prefixes announced, no flaps.
    let mut registry = prometheus_client::registry::Registry::with_prefix("hybridnet_node");
    registry.register_collector(Box::new(BgpCollector::new(n1.bgp.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for want in [
        format!(
            "hybridnet_node_bgp_session_state{{peer=\"{TOR_PEER}\",asn=\"{TOR_AS}\",state=\"Established\"}} 1"
        ),
        format!("hybridnet_node_bgp_prefixes_announced{{peer=\"{TOR_PEER}\"}} 5"),
        format!("hybridnet_node_bgp_session_flaps_total{{peer=\"{TOR_PEER}\"}} 0"),
        "hybridnet_node_bgp_required_peers_established 1".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }

    // Deleting pod b (DEL, then its IPInstances go) withdraws its routes at the ToR; pod a's stay.
    let r = n2.cni(AgentCommand::Del, "b", &pod_b).await;
    assert!(r.error.is_none(), "{r:?}");
    let remaining: Vec<IPInstance> = pod_instances()
        .into_iter()
        .filter(|i| i.spec.binding.pod_name.as_deref() != Some("b"))
        .collect();
    n1.set_instances(remaining.clone());
    n2.set_instances(remaining);
    eventually(
        "pod b withdrawn at the ToR",
        Duration::from_secs(10),
        || async {
            let r = bird.routes();
            let gone = !r.contains_key("198.19.1.20/32") && !r.contains_key("fd00:19:1::20/128");
            let kept = r.contains_key("198.19.1.10/32") && r.contains_key("fd00:19:1::10/128");
            let subnets = path_of(&r, "198.19.1.0/24", "node2").is_some();
            if gone && kept && subnets {
                Ok(())
            } else {
                Err(format!("{r:#?}"))
            }
        },
    )
    .await;
    let kernel = t.tor.ip("route show 198.19.1.20");
    assert!(
        kernel.trim().is_empty(),
        "withdrawn route still in the ToR kernel: {kernel}"
    );
    reaches(&pod_a, "pod a -> outside after b left", "198.18.2.1").await;

    // Restarting node1's agent within the graceful-restart time: the ToR keeps pod a's routes
    // while it is gone, and the new agent's speaker takes over the session.
    let remaining: Vec<IPInstance> = n1
        .api
        .borrow()
        .ip_instances
        .iter()
        .map(|i| (**i).clone())
        .collect();
    drop(n1);
    eventually(
        "the ToR notices node1's agent is gone",
        Duration::from_secs(10),
        || async {
            let info = bird.birdc(&["show", "protocols", "node1"])?;
            if info.contains("Established") {
                Err(info)
            } else {
                Ok(())
            }
        },
    )
    .await;
    let info = bird
        .birdc(&["show", "protocols", "all", "node1"])
        .unwrap_or_default();
    assert!(info.contains("Neighbor graceful restart active"), "{info}");
    let stale = bird.routes();
    assert!(
        path_of(&stale, "198.19.1.10/32", "node1").is_some(),
        "routes kept while the agent restarts: {stale:#?}"
    );
    ping(&t.ext, "198.19.1.10").expect("pod a reachable while its agent is down");
    let n1 = NodeAgent::start(
        &t.node1,
        api_state("node1", remaining),
        Duration::from_secs(10),
    );
    eventually(
        "node1 session after restart",
        Duration::from_secs(20),
        || async {
            n1.bgp.readiness()?;
            let info = bird.birdc(&["show", "protocols", "node1"])?;
            if info.contains("Established") {
                Ok(())
            } else {
                Err(info)
            }
        },
    )
    .await;
    let after = bird.routes();
    assert!(
        path_of(&after, "198.19.1.10/32", "node1").is_some(),
        "{after:#?}"
    );
    reaches(
        &t.ext,
        "outside -> pod a after the agent restart",
        "198.19.1.10",
    )
    .await;

    drop(n1);
    drop(n2);
    drop(bird);
}

/// The table number of the policy rule for `cidr` in a namespace (`ip rule`).
fn rule_table(ns: &Ns, family: &str, cidr: &str) -> Option<String> {
    ns.ip(&format!("{family} rule show"))
        .lines()
        .find(|l| l.contains(&format!("from {cidr} ")))
        .and_then(|l| l.split("lookup ").nth(1))
        .map(|t| t.split_whitespace().next().unwrap_or_default().to_string())
}

/// CNI ADD of a BGP pod waits for the routing that makes the pod usable, not only for its
/// announcement: the subnet's policy rule and the table's default route via the peer. The
/// agent's apply is held back while the sessions run, so the pods are announced (the ToR
/// learns them) but the kernel cannot route their replies out yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_pod_add_waits_for_its_subnet_rule_and_default_route() {
    if !may_run("bgp_pod_add_waits_for_its_subnet_rule_and_default_route") {
        return;
    }
    let t = topology();
    let dir = tempfile::tempdir().unwrap();
    let pod_a = Ns::new("pa");
    let pod_g = Ns::new("pg");
    let bird = Bird::start(&t.tor, dir.path(), &bird_config());
    let n1 = NodeAgent::start_with(
        &t.node1,
        api_state("node1", pod_instances()),
        Duration::from_secs(3),
        false,
    );
    eventually("required BGP session", Duration::from_secs(20), || async {
        n1.bgp
            .readiness()
            .map_err(|e| format!("{e}; {}", n1.diagnostics()))
    })
    .await;
    eventually("pod a announced", Duration::from_secs(10), || async {
        let r = bird.routes();
        if path_of(&r, "198.19.1.10/32", "node1").is_some() {
            Ok(())
        } else {
            Err(format!("{r:#?}"))
        }
    })
    .await;
    assert_eq!(rule_table(&t.node1, "-4", "198.19.1.0/24"), None);

    // Announced, but no subnet rule or table yet: try again later, saying why.
    let r = n1.cni(AgentCommand::Add, "a", &pod_a).await;
    let e = r.error.expect("ADD must wait for the pod's routing");
    assert_eq!(e.code, 11, "{e:?}");
    assert!(
        e.msg.contains("announced") && e.msg.contains("no policy rule"),
        "{e:?}"
    );
    let r = n1.cni(AgentCommand::Del, "a", &pod_a).await;
    assert!(r.error.is_none(), "{r:?}");

    // The agent applies its plan: the same ADD now succeeds, and the pod's table routes via
    // the peer.
    n1.set_apply(true).await;
    n1.add_ok("a", &pod_a).await;
    let table = rule_table(&t.node1, "-4", "198.19.1.0/24").expect("subnet rule applied");
    let routes = t.node1.ip(&format!("route show table {table}"));
    assert!(
        routes.contains(&format!("default via {TOR_PEER} dev eth0")),
        "table {table}: {routes}"
    );
    let table6 = rule_table(&t.node1, "-6", "fd00:19:1::/64").expect("IPv6 subnet rule");
    assert!(
        t.node1
            .ip(&format!("-6 route show table {table6}"))
            .contains("default via"),
        "IPv6 table {table6}"
    );
    reaches(&pod_a, "pod a -> outside", "198.18.2.1").await;

    // The rule is there but the table lost its default route (and the agent does not repair it
    // while its apply is held): the GlobalBGP pod g is announced but not ready.
    n1.set_apply(false).await;
    let table_g = rule_table(&t.node1, "-4", "198.19.200.0/24").expect("GlobalBGP subnet rule");
    t.node1.ip(&format!("route del default table {table_g}"));
    let r = n1.cni(AgentCommand::Add, "g", &pod_g).await;
    let e = r
        .error
        .expect("ADD must wait for the table's default route");
    assert_eq!(e.code, 11, "{e:?}");
    assert!(
        e.msg.contains(&format!("routing table {table_g}")) && e.msg.contains("no default route"),
        "{e:?}"
    );
    let r = n1.cni(AgentCommand::Del, "g", &pod_g).await;
    assert!(r.error.is_none(), "{r:?}");
    n1.set_apply(true).await;
    n1.add_ok("g", &pod_g).await;
    reaches(&pod_g, "GlobalBGP pod g -> outside", "198.18.2.1").await;

    drop(n1);
    drop(bird);
}

/// The NodeInfo's BGP sessions annotation as the agent publishes it (`follow_sessions` on the
/// node's `BgpState`): Established with the node's prefix counts once bird is up, a down state
/// with a flap after bird stops, and no value once the node leaves the BGP network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgp_sessions_annotation_follows_the_session() {
    use hybridnet_node::bgp::follow_sessions;
    use hybridnet_node::bgp::sessions::{BgpSession, SessionState, parse_annotation};

    if !may_run("bgp_sessions_annotation_follows_the_session") {
        return;
    }
    let t = topology();
    let dir = tempfile::tempdir().unwrap();
    let started = k8s_openapi::jiff::Timestamp::now();
    let n1 = NodeAgent::start_with(
        &t.node1,
        api_state("node1", pod_instances()),
        Duration::from_secs(3),
        false,
    );
    let publications = Arc::new(AtomicUsize::new(0));
    let follower = {
        let p = publications.clone();
        tokio::spawn(follow_sessions(
            n1.bgp.clone(),
            Duration::from_millis(200),
            Duration::from_millis(200),
            move || {
                p.fetch_add(1, Ordering::SeqCst);
            },
        ))
    };
    let session = |what: &'static str| {
        let value = n1.bgp.sessions_annotation();
        async move {
            let v = value.ok_or(format!("{what}: no annotation value"))?;
            let p = parse_annotation(&v);
            match (p.problems.is_empty(), p.sessions.as_slice()) {
                (true, [s]) => Ok::<BgpSession, String>(s.clone()),
                _ => Err(format!("{what}: {v} -> {p:?}")),
            }
        }
    };

    // The peer is down: the session is published in a state other than Established.
    let down = eventually(
        "a session before bird runs",
        Duration::from_secs(10),
        || session("before bird"),
    )
    .await;
    assert_ne!(down.state, SessionState::Established, "{down:?}");
    assert!(down.required);

    let bird = Bird::start(&t.tor, dir.path(), &bird_config());
    let up = eventually(
        "Established with node1's prefixes",
        Duration::from_secs(20),
        || async {
            let s = session("with bird").await?;
            // node1 announces pod a (/32, /128), pod g (/32) and bgp-net's two subnets.
            if s.state == SessionState::Established && (s.prefixes_v4, s.prefixes_v6) == (3, 2) {
                Ok(s)
            } else {
                Err(format!("{s:?}; {}", n1.diagnostics()))
            }
        },
    )
    .await;
    assert_eq!(up.peer_address.to_string(), TOR_PEER);
    assert_eq!((up.peer_asn, up.local_asn), (TOR_AS as u32, NODE_AS as u32));
    assert!(up.required);
    assert_eq!(up.flaps, 0);
    assert!(
        up.since.as_second() >= started.as_second(),
        "{up:?} entered Established after the test started"
    );
    let published = publications.load(Ordering::SeqCst);
    assert!(
        published >= 2,
        "each new value wakes the agent: {published}"
    );

    // bird stops: the session leaves Established, counted as a flap, nothing announced.
    drop(bird);
    let gone = eventually(
        "the session down again",
        Duration::from_secs(20),
        || async {
            let s = session("after bird").await?;
            if s.state != SessionState::Established && s.flaps == 1 {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    assert_eq!((gone.prefixes_v4, gone.prefixes_v6), (0, 0), "{gone:?}");
    assert!(gone.since >= up.since, "{gone:?} after {up:?}");

    // The node leaves the BGP network: no speaker, no annotation.
    n1.api.send_modify(|a| {
        a.networks
            .retain(|n| n.metadata.name.as_deref() != Some("bgp-net"));
        a.ip_instances.clear();
    });
    eventually(
        "no annotation without BGP",
        Duration::from_secs(10),
        || async {
            match n1.bgp.sessions_annotation() {
                None if n1.bgp.speaker().is_none() => Ok(()),
                other => Err(format!("{other:?}; {}", n1.diagnostics())),
            }
        },
    )
    .await;
    follower.abort();
    drop(n1);
}

//! Shared helpers of the node integration tests: privileged-test gate, network namespaces with
//! Drop cleanup, `ip`/`nft` runners and API object builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;

// Each test binary uses a different part of this module.
#[allow(unused_imports)]
pub use hybridnet_test_support::{Netns, may_run, require_root, sh, skip, try_sh, unique_name};

/// Node-suite views of a test namespace.
pub trait NetnsExt {
    fn nft_ruleset(&self) -> String;
    /// `/proc/sys/<key>` inside the namespace ("" when unreadable).
    fn sysctl(&self, key: &str) -> String;
    fn set_sysctl(&self, key: &str, value: &str);
}

impl NetnsExt for Netns {
    fn nft_ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"]).unwrap_or_default()
    }

    fn sysctl(&self, key: &str) -> String {
        self.exec(&["cat", &format!("/proc/sys/{key}")])
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn set_sysctl(&self, key: &str, value: &str) {
        self.exec(&["sh", "-c", &format!("echo {value} > /proc/sys/{key}")])
            .expect("sysctl");
    }
}

/// A veth pair whose ends live in two namespaces: created in `a`, the peer moved to `b` and
/// renamed there (the host's namespace is never touched).
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    // "hv-" + pid (7 digits at most) + "-" + counter fits IFNAMSIZ (15) for 10 000 pairs.
    let tmp = unique_name("hv");
    a.ip(&format!("link add {a_name} type veth peer name {tmp}"));
    a.ip(&format!("link set {tmp} netns {}", b.name));
    b.ip(&format!("link set {tmp} name {b_name}"));
    a.ip(&format!("link set {a_name} up"));
    b.ip(&format!("link set {b_name} up"));
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn network(
    name: &str,
    ty: NetworkType,
    mode: Option<NetworkMode>,
    net_id: Option<i32>,
    nodes: &[&str],
) -> Network {
    let mut n = Network::new(
        name,
        NetworkSpec {
            node_selector: None,
            net_id,
            network_type: Some(ty),
            mode,
            config: None,
        },
    );
    n.status = Some(NetworkStatus {
        node_list: Some(nodes.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    });
    n
}

pub fn subnet(
    name: &str,
    net: &str,
    cidr: &str,
    gw: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
) -> Subnet {
    Subnet::new(
        name,
        SubnetSpec {
            network: net.into(),
            net_id: None,
            range: AddressRange {
                version: if cidr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                cidr: cidr.into(),
                start: start.map(Into::into),
                end: end.map(Into::into),
                gateway: gw.map(Into::into),
                reserved_ips: None,
                exclude_ips: None,
            },
            config: None,
        },
    )
}

pub fn ipinstance(
    ns: &str,
    pod: &str,
    addr: &str,
    net: &str,
    sub: &str,
    node: &str,
    mac: &str,
) -> IPInstance {
    // Upstream's wire format: the address with its subnet prefix (the test subnets are /24 and
    // /112).
    let with_prefix = if addr.contains(':') {
        format!("{addr}/112")
    } else {
        format!("{addr}/24")
    };
    let mut i = IPInstance::new(
        &hybridnet_api::naming::ip_to_instance_name(ip(addr)),
        IPInstanceSpec {
            network: net.into(),
            subnet: sub.into(),
            address: Address {
                version: if addr.contains(':') {
                    IpVersion::V6
                } else {
                    IpVersion::V4
                },
                ip: with_prefix,
                gateway: None,
                net_id: None,
                mac: mac.into(),
            },
            binding: Binding {
                node_name: Some(node.into()),
                pod_name: Some(pod.into()),
                ..Default::default()
            },
        },
    );
    i.metadata.namespace = Some(ns.into());
    i.metadata.labels = Some(BTreeMap::from([
        (label::NODE.to_string(), node.to_string()),
        (label::POD.to_string(), pod.to_string()),
    ]));
    i
}

pub fn nodeinfo(name: &str, vtep: &str, mac: &str, local: &[&str]) -> NodeInfo {
    NodeInfo::new(
        name,
        NodeInfoSpec {
            vtep_info: Some(VtepInfo {
                ip: Some(vtep.into()),
                mac: Some(mac.into()),
                local_ips: Some(local.iter().map(|s| s.to_string()).collect()),
            }),
        },
    )
}

/// kube-lite running inside a network namespace (reachable at `ip` from namespaces wired to it).
/// All API calls of the test run on the control plane's own runtime thread, so their sockets are
/// created in that namespace.
pub struct ControlPlane {
    client: kube::Client,
    rt: tokio::runtime::Handle,
    pub kubeconfig: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts kube-lite in `ns` listening on `ip:0` and installs hybridnet's CRDs.
    pub fn start(ns: &Netns, ip: &str) -> Self {
        use std::os::fd::AsFd;
        let path = format!("/run/netns/{}", ns.name);
        let listen: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
        let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
        let kc = kubeconfig.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = rt.handle().clone();
            rt.block_on(async move {
                let cfg = kube_lite::Config {
                    listen,
                    kubeconfig_path: Some(kc.clone()),
                    ..Default::default()
                };
                let srv = kube_lite::Server::start(cfg)
                    .await
                    .expect("kube-lite start");
                let client = srv.client().await.expect("client");
                tx.send((client, handle)).unwrap();
                let _ = stop_rx.await;
                drop(srv);
            });
        });
        let (client, rt) = rx.recv().expect("control plane started");
        let cp = Self {
            client,
            rt,
            kubeconfig,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        cp.run(|client| async move {
            use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
            let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client);
            for (_, crd) in hybridnet_api::crd::all() {
                api.create(&Default::default(), &crd).await.expect("create CRD");
            }
        });
        cp
    }

    /// Runs `f(client)` on the control plane's runtime and waits for its output.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(kube::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = self.client.clone();
        self.rt.spawn(async move {
            let _ = tx.send(f(client).await);
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("API call on the control plane")
    }

    pub fn create<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let obj = obj.clone();
        self.run(move |c| async move {
            let api: kube::Api<K> = kube::Api::all(c);
            api.create(&Default::default(), &obj).await.expect("create")
        })
    }

    /// Creates a Network and sets its status (nodeList) through the status subresource, as the
    /// operator does.
    pub fn create_network(&self, net: &Network) {
        let mut spec_only = net.clone();
        let status = spec_only.status.take();
        self.create(&spec_only);
        let name = net.metadata.name.clone().unwrap_or_default();
        self.run(move |c| async move {
            let api: kube::Api<Network> = kube::Api::all(c);
            let patch = serde_json::json!({ "status": status });
            api.patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
                .await
                .expect("patch Network status")
        });
    }

    pub fn create_ns<K>(&self, ns: &str, obj: &K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let obj = obj.clone();
        let ns = ns.to_string();
        self.run(move |c| async move {
            let api: kube::Api<K> = kube::Api::namespaced(c, &ns);
            api.create(&Default::default(), &obj).await.expect("create")
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// A Node object with an InternalIP.
pub fn node_object(name: &str, ips: &[&str]) -> k8s_openapi::api::core::v1::Node {
    use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.status = Some(NodeStatus {
        addresses: Some(
            ips.iter()
                .map(|i| NodeAddress {
                    type_: "InternalIP".into(),
                    address: i.to_string(),
                })
                .collect(),
        ),
        ..Default::default()
    });
    n
}

/// Polls `f` every 50 ms until it returns Some or `secs` pass.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process killed on drop; its log file is removed unless the test is failing (then its
/// path is printed).
pub struct Child(pub std::process::Child, pub std::path::PathBuf);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("agent log kept: {}", self.1.display());
        } else {
            let _ = std::fs::remove_file(&self.1);
        }
        // The agent's CNI socket (a killed agent cannot remove it); unique per agent start.
        let _ = std::fs::remove_file(self.1.with_extension("sock"));
    }
}

/// Starts `hybridnet-node` inside `ns`.
pub fn start_agent(
    ns: &Netns,
    node: &str,
    kubeconfig: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> Child {
    let log = std::env::temp_dir().join(format!("{}-{}.log", ns.name, unique_name("agent")));
    let socket = log.with_extension("sock");
    start_agent_at(ns, node, kubeconfig, port, &socket, &log, "info", extra)
}

/// Starts `hybridnet-node` inside `ns` with its CNI socket at `socket`, logging to `log` at
/// `RUST_LOG=filter` (a restarted agent keeps the socket path, as on a node).
#[allow(clippy::too_many_arguments)]
pub fn start_agent_at(
    ns: &Netns,
    node: &str,
    kubeconfig: &std::path::Path,
    port: u16,
    socket: &std::path::Path,
    log: &std::path::Path,
    filter: &str,
    extra: &[&str],
) -> Child {
    let f = std::fs::File::create(log).unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.name,
        env!("CARGO_BIN_EXE_hybridnet-node"),
    ])
    .args(["--node-name", node, "--kubeconfig"])
    .arg(kubeconfig)
    .args(if extra.contains(&"--cni-conf-dir") {
        &[][..]
    } else {
        &["--skip-cni-install"][..]
    })
    .args([
        "--health-port",
        &port.to_string(),
        "--metrics-port",
        &port.to_string(),
    ])
    .args(["--resync-seconds", "5", "--bind-socket"])
    .arg(socket)
    .args(extra)
    .env("RUST_LOG", filter)
    .stdout(f.try_clone().unwrap())
    .stderr(f);
    Child(
        cmd.spawn().expect("spawn hybridnet-node"),
        log.to_path_buf(),
    )
}

/// HTTP GET from inside a namespace: (status, body).
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> Option<(u16, String)> {
    let addr = addr.to_string();
    let path = path.to_string();
    hybridnet_node::dataplane::netns::run_in_netns(&ns.name, move |_h| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        let code = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        Ok((code, body))
    })
    .ok()
}

/// The agent's IPInstance index as an in-process `CniService` sees it: a pod's IPInstances by pod
/// name, and VLAN check targets from `subnets` (empty: no VLAN subnet).
pub struct PodLookup {
    pub instances: Vec<IPInstance>,
    pub subnets: hybridnet_node::cniserver::vlancheck::VlanSubnets,
}

impl hybridnet_node::cniserver::IpInstanceLookup for PodLookup {
    fn pod_instances(&self, pod: &hybridnet_cni::PodRef) -> Vec<IPInstance> {
        self.instances
            .iter()
            .filter(|i| i.spec.binding.pod_name.as_deref() == Some(pod.name.as_str()))
            .cloned()
            .collect()
    }

    fn vlan_check_targets(
        &self,
        a: &hybridnet_node::cniserver::PodAddressing,
    ) -> Vec<hybridnet_node::cniserver::vlancheck::VlanTarget> {
        let v4 = a.ipv4.map(IpAddr::V4);
        let v6 = a.ipv6.map(IpAddr::V6);
        self.subnets.targets(v4.into_iter().chain(v6))
    }
}

/// A CNI request of the plugin protocol for pod `default/<pod>` in `pod_ns`.
pub fn cni_request(
    command: hybridnet_cni::AgentCommand,
    container_id: &str,
    pod: &str,
    pod_ns: &Netns,
) -> hybridnet_cni::protocol::AgentRequest {
    hybridnet_cni::protocol::AgentRequest {
        version: hybridnet_cni::protocol::PROTOCOL_VERSION,
        command,
        container_id: Some(container_id.to_string()),
        netns: Some(format!("/run/netns/{}", pod_ns.name)),
        ifname: Some("eth0".into()),
        pod: Some(hybridnet_cni::PodRef {
            namespace: "default".into(),
            name: pod.into(),
            uid: None,
        }),
        valid_attachments: vec![],
    }
}

/// A switch with the control-plane host (198.18.0.250) and one node `n1` (198.18.0.11, eth0 MAC
/// 02:00:00:00:00:11) on it: returns (switch, control plane, node).
pub fn l2_segment() -> (Netns, Netns, Netns) {
    let sw = Netns::new("sw");
    sw.ip("link add br0 type bridge");
    sw.ip("link set br0 up");
    let cp = Netns::new("cp");
    veth(&cp, "eth0", &sw, "p-cp");
    sw.ip("link set p-cp master br0");
    cp.ip("addr add 198.18.0.250/24 dev eth0");
    let n1 = Netns::new("n1");
    veth(&n1, "eth0", &sw, "p-n1");
    sw.ip("link set p-n1 master br0");
    n1.ip("link set eth0 address 02:00:00:00:00:11");
    n1.ip("addr add 198.18.0.11/24 dev eth0");
    n1.ip("route add default via 198.18.0.1 dev eth0");
    (sw, cp, n1)
}

/// One request to a running agent over its CNI socket: `{"error": ...}` or `{"result": ...}`.
pub fn agent_call(socket: &std::path::Path, req: serde_json::Value) -> serde_json::Value {
    use std::io::{Read, Write};
    let body = serde_json::to_vec(&req).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let mut out = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// ADD of pod `default/<pod>` (container id `cid-<pod>`) in `netns` through a running agent.
pub fn agent_add(socket: &std::path::Path, pod: &str, netns: &Netns) -> serde_json::Value {
    agent_call(
        socket,
        serde_json::json!({"version": 1, "command": "ADD", "containerId": format!("cid-{pod}"),
            "netns": format!("/run/netns/{}", netns.name), "ifname": "eth0",
            "pod": {"namespace": "default", "name": pod}}),
    )
}

/// Waits until the agent behind `socket` answers STATUS without error.
pub fn wait_agent_ready(socket: &std::path::Path, secs: u64) {
    wait_for("agent ready", secs, || {
        socket.exists().then_some(())?;
        let v = agent_call(
            socket,
            serde_json::json!({"version": 1, "command": "STATUS"}),
        );
        v.get("error").is_none().then_some(())
    });
}

/// The events.k8s.io Events in `namespace` about the object `name`.
pub fn events_about(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    cp.run(move |c| async move {
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(c, &namespace)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
            .collect()
    })
}

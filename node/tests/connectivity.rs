//! The connectivity matrix (README's ping matrix) on a real topology: three node namespaces on one L2 segment
//! (a bridge namespace as the switch), a gateway/ToR namespace with an "outside" host behind it, and
//! kube-lite in a control-plane namespace on the same segment. The real `hybridnet-node` binary
//! runs in every node namespace. Pods are namespaces wired the way the CNI ADD path wires them
//! (host veth `hybr…` with ee:ee:ee:ee:ee:ee, /32 and /128 addresses without prefix routes,
//! default via 169.254.1.1 and fe80::ecee:eeff:feee:eeee, local-direct route, proxy entries) by a
//! test-only helper.
//!
//! Checked with ping and TCP, IPv4 and IPv6: overlay<->overlay on one node and across nodes,
//! underlay<->underlay across nodes, overlay<->underlay both ways with the source preserved (seen by
//! the receiver), pod<->own node, pod<->other node, overlay pod -> outside (masqueraded) and
//! underlay pod -> outside (not masqueraded), node -> remote overlay pod; killing the agents and
//! then starting them again during a paced TCP stream stalls it for less than a second; a second
//! agent on a node exits because the health port is taken. A KubeVirt VM's live migration: its
//! address reaches the pod its IPInstances are bound to, from every node, before and after the
//! binding moves (source and target pods both hold the address).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use common::*;
use hybridnet_api::naming::host_veth_name;
use hybridnet_api::v1::{NetworkMode, NetworkType};
use hybridnet_test_support::paced::PacedStream;

struct Pod {
    ns: Netns,
    v4: String,
    v6: String,
}

/// Wires a pod namespace to `node` as the CNI ADD path does.
fn wire_pod(node: &Netns, name: &str, v4: &str, v6: &str, mac: &str, mtu: u32) -> Pod {
    let ns = Netns::new(&format!("pod{name}"));
    let host = host_veth_name("default", name);
    veth(node, &host, &ns, "eth0");
    node.ip(&format!(
        "link set {host} address ee:ee:ee:ee:ee:ee mtu {mtu}"
    ));
    ns.ip(&format!("link set eth0 address {mac} mtu {mtu}"));
    node.set_sysctl(&format!("net/ipv4/conf/{host}/proxy_arp"), "1");
    node.set_sysctl(&format!("net/ipv4/neigh/{host}/proxy_delay"), "0");
    node.set_sysctl(&format!("net/ipv4/conf/{host}/rp_filter"), "0");
    node.set_sysctl(&format!("net/ipv6/conf/{host}/proxy_ndp"), "1");
    node.ip(&format!(
        "-6 neigh add proxy fe80::ecee:eeff:feee:eeee dev {host}"
    ));
    node.ip(&format!("route replace {v4}/32 dev {host} table 39999"));
    node.ip(&format!("-6 route replace {v6}/128 dev {host} table 39999"));
    ns.set_sysctl("net/ipv6/conf/eth0/accept_dad", "0");
    ns.ip(&format!("addr add {v4}/32 dev eth0"));
    ns.ip(&format!("-6 addr add {v6}/128 dev eth0 nodad"));
    ns.ip("route add 169.254.1.1/32 dev eth0 scope link");
    ns.ip("route add default via 169.254.1.1 dev eth0");
    ns.ip("-6 route add default via fe80::ecee:eeff:feee:eeee dev eth0");
    Pod {
        ns,
        v4: v4.into(),
        v6: v6.into(),
    }
}

/// The longest stall of a pod-to-pod stream allowed across agent restarts (docs/operations.md).
const STALL_BOUND: Duration = Duration::from_secs(1);

/// The node's IPv4 address on eth0.
fn node_addr(n: &Netns) -> String {
    let ip = n.ip("-4 -o addr show dev eth0");
    ip.split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("{} has no IPv4 address on eth0: {ip}", n.name))
        .to_string()
}

fn ping(from: &Netns, to: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        match from.exec(&["ping", "-c1", "-W1", to]) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// One TCP exchange `client -> server_ip:port`; returns the source address the server saw.
fn tcp_source(server: &Netns, server_ip: &str, client: &Netns) -> Result<IpAddr, String> {
    let bind: SocketAddr = SocketAddr::new(server_ip.parse().unwrap(), 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = in_ns(server, move || -> Result<IpAddr, String> {
        let l = std::net::TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
        tx.send(l.local_addr().unwrap()).unwrap();
        l.set_nonblocking(false).ok();
        let (mut s, peer) = l.accept().map_err(|e| e.to_string())?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        s.write_all(b"world").map_err(|e| e.to_string())?;
        Ok(peer.ip())
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let cli = in_ns(client, move || -> Result<(), String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        (&b == b"world").then_some(()).ok_or("bad reply".into())
    });
    let c = cli.join().map_err(|_| "client panicked".to_string())?;
    if let Err(e) = c {
        // Unblock the server.
        let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(1));
        return Err(e);
    }
    srv.join().map_err(|_| "server panicked".to_string())?
}

struct Topology {
    _sw: Netns,
    gw: Netns,
    outside: Netns,
    _cpns: Netns,
    cp: ControlPlane,
    nodes: Vec<Netns>,
}

fn topology() -> Topology {
    let sw = Netns::new("sw");
    sw.ip("link add br0 type bridge");
    sw.ip("link set br0 up");
    let attach = |ns: &Netns, port: &str| {
        veth(ns, "eth0", &sw, port);
        sw.ip(&format!("link set {port} master br0"));
    };
    let gw = Netns::new("gw");
    attach(&gw, "p-gw");
    gw.ip("addr add 198.18.0.1/24 dev eth0");
    gw.ip("-6 addr add fd00:18::1/64 dev eth0 nodad");
    gw.set_sysctl("net/ipv4/ip_forward", "1");
    gw.set_sysctl("net/ipv6/conf/all/forwarding", "1");
    let outside = Netns::new("out");
    veth(&gw, "eth1", &outside, "eth0");
    gw.ip("addr add 198.20.0.1/24 dev eth1");
    gw.ip("-6 addr add fd00:20::1/64 dev eth1 nodad");
    outside.ip("addr add 198.20.0.2/24 dev eth0");
    outside.ip("-6 addr add fd00:20::2/64 dev eth0 nodad");
    outside.ip("route add default via 198.20.0.1");
    outside.ip("-6 route add default via fd00:20::1");
    let cpns = Netns::new("cp");
    attach(&cpns, "p-cp");
    cpns.ip("addr add 198.18.0.250/24 dev eth0");
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let n = Netns::new(&format!("n{i}"));
        attach(&n, &format!("p-n{i}"));
        n.ip(&format!("link set eth0 address 02:00:00:00:00:1{i}"));
        n.ip(&format!("addr add 198.18.0.1{i}/24 dev eth0"));
        n.ip(&format!("-6 addr add fd00:18::1{i}/64 dev eth0 nodad"));
        n.ip("route add default via 198.18.0.1 dev eth0");
        n.ip("-6 route add default via fd00:18::1 dev eth0");
        nodes.push(n);
    }
    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    Topology {
        _sw: sw,
        gw,
        outside,
        _cpns: cpns,
        cp,
        nodes,
    }
}

#[test]
fn connectivity_matrix_v4_v6_and_agent_restart() {
    if !require_root("connectivity_matrix_v4_v6_and_agent_restart") {
        return;
    }
    matrix(false);
}

/// The same matrix with pods attached the production way: Debian's libcni (cnitool) runs the
/// conflist the agent installed (hybridnet chained with Debian's bandwidth and portmap), the
/// `hybridnet` plugin talks to the agent's socket, the agent's CNI server wires the pod.
#[test]
fn connectivity_matrix_through_libcni() {
    if !require_root("connectivity_matrix_through_libcni") {
        return;
    }
    if cnitool().is_none() {
        skip(
            "connectivity_matrix_through_libcni",
            "target/tools/cnitool missing (needs golang-go, golang-github-appc-cni-dev)",
        );
        return;
    }
    matrix(true);
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// target/tools/cnitool, built by scripts/tools/cnitool.sh when missing.
fn cnitool() -> Option<std::path::PathBuf> {
    let root = workspace_root();
    let tool = root.join("target/tools/cnitool");
    if !tool.exists() {
        let _ = std::process::Command::new("bash")
            .arg(root.join("scripts/tools/cnitool.sh"))
            .status();
    }
    tool.exists().then_some(tool)
}

/// The workspace's `hybridnet` plugin binary (built if missing).
fn plugin_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let p = profile_dir.join("hybridnet");
    if !p.exists() {
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-q", "-p", "hybridnet-cni", "--bin", "hybridnet"])
                .current_dir(workspace_root())
                .status()
                .expect("cargo build of the plugin");
        assert!(status.success(), "building the hybridnet plugin failed");
    }
    p
}

/// Per-node CNI directories: bin (plugin installed by the agent, Debian's chained plugins),
/// net.d (conflist written by the agent), cache.
struct CniDirs {
    root: std::path::PathBuf,
}

impl CniDirs {
    fn new(node: &Netns) -> Self {
        let root = std::env::temp_dir().join(format!("{}-cni", node.name));
        for d in ["bin", "net.d", "cache"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for p in ["bandwidth", "portmap", "loopback"] {
            std::fs::copy(format!("/usr/lib/cni/{p}"), root.join("bin").join(p)).unwrap();
        }
        Self { root }
    }

    fn agent_args(&self) -> Vec<String> {
        vec![
            "--cni-bin-dir".into(),
            self.root.join("bin").display().to_string(),
            "--cni-conf-dir".into(),
            self.root.join("net.d").display().to_string(),
            "--cni-source-binary".into(),
            plugin_binary().display().to_string(),
        ]
    }
}

impl Drop for CniDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `cnitool add hybridnet <netns>` inside the node namespace.
fn cni_add_pod(node: &Netns, dirs: &CniDirs, name: &str, v4: &str, v6: &str) -> Pod {
    let ns = Netns::new(&format!("pod{name}"));
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &node.name])
        .arg(cnitool().expect("cnitool"))
        .args(["add", "hybridnet", &format!("/run/netns/{}", ns.name)])
        .env("NETCONFPATH", dirs.root.join("net.d"))
        .env("CNI_PATH", format!("{}:/usr/lib/cni", dirs.root.join("bin").display()))
        .env("CNI_CACHE_DIR", dirs.root.join("cache"))
        .env("CNI_CONTAINERID", format!("c-{name}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=c-{name}"))
        .output()
        .expect("run cnitool");
    assert!(
        out.status.success(),
        "cnitool add {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("CNI result JSON");
    let ips: Vec<String> = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        ips.iter().any(|a| a.starts_with(&format!("{v4}/"))),
        "{name}: result {result}"
    );
    assert!(
        ips.iter().any(|a| a.starts_with(&format!("{v6}/"))),
        "{name}: result {result}"
    );
    Pod {
        ns,
        v4: v4.into(),
        v6: v6.into(),
    }
}

fn matrix(via_cni: bool) {
    let t = topology();
    let cp = &t.cp;
    for i in 1..=3 {
        cp.create(&node_object(
            &format!("n{i}"),
            &[&format!("198.18.0.1{i}"), &format!("fd00:18::1{i}")],
        ));
    }
    cp.create_network(&network(
        "overlay",
        NetworkType::Overlay,
        None,
        Some(4),
        &["n1", "n2", "n3"],
    ));
    cp.create_network(&network(
        "underlay",
        NetworkType::Underlay,
        Some(NetworkMode::Vlan),
        Some(0),
        &["n1", "n2", "n3"],
    ));
    cp.create(&subnet("ov4", "overlay", "198.19.0.0/24", None, None, None));
    cp.create(&subnet("ov6", "overlay", "fd00:19::/112", None, None, None));
    cp.create(&subnet(
        "ul4",
        "underlay",
        "198.18.0.0/24",
        Some("198.18.0.1"),
        Some("198.18.0.100"),
        Some("198.18.0.200"),
    ));
    cp.create(&subnet(
        "ul6",
        "underlay",
        "fd00:18::/112",
        Some("fd00:18::1"),
        Some("fd00:18::100"),
        Some("fd00:18::200"),
    ));
    // (pod, node, network, subnet4, subnet6, v4, v6, mac, mtu)
    let pods = [
        (
            "o1",
            1,
            "overlay",
            "ov4",
            "ov6",
            "198.19.0.11",
            "fd00:19::11",
            "02:aa:00:00:00:11",
            1450,
        ),
        (
            "o1b",
            1,
            "overlay",
            "ov4",
            "ov6",
            "198.19.0.12",
            "fd00:19::12",
            "02:aa:00:00:00:12",
            1450,
        ),
        (
            "o2",
            2,
            "overlay",
            "ov4",
            "ov6",
            "198.19.0.21",
            "fd00:19::21",
            "02:aa:00:00:00:21",
            1450,
        ),
        (
            "u1",
            1,
            "underlay",
            "ul4",
            "ul6",
            "198.18.0.101",
            "fd00:18::101",
            "02:aa:00:00:01:01",
            1500,
        ),
        (
            "u2",
            2,
            "underlay",
            "ul4",
            "ul6",
            "198.18.0.102",
            "fd00:18::102",
            "02:aa:00:00:01:02",
            1500,
        ),
        (
            "o3",
            3,
            "overlay",
            "ov4",
            "ov6",
            "198.19.0.31",
            "fd00:19::31",
            "02:aa:00:00:00:31",
            1450,
        ),
    ];
    let mut wired = std::collections::BTreeMap::new();
    for (name, node, net, s4, s6, v4, v6, mac, mtu) in pods {
        let nn = format!("n{node}");
        cp.create_ns(
            "default",
            &ipinstance("default", name, v4, net, s4, &nn, mac),
        );
        cp.create_ns(
            "default",
            &ipinstance("default", name, v6, net, s6, &nn, mac),
        );
        if !via_cni {
            wired.insert(name, wire_pod(&t.nodes[node - 1], name, v4, v6, mac, mtu));
        }
    }
    let cni_dirs: Vec<Option<CniDirs>> = t
        .nodes
        .iter()
        .map(|n| via_cni.then(|| CniDirs::new(n)))
        .collect();
    let agent_args = |i: usize| -> Vec<String> {
        cni_dirs[i]
            .as_ref()
            .map(|d| d.agent_args())
            .unwrap_or_default()
    };
    let start = |i: usize| {
        let args = agent_args(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        start_agent(
            &t.nodes[i],
            &format!("n{}", i + 1),
            &cp.kubeconfig,
            11021,
            &refs,
        )
    };
    let mut agents: Vec<Child> = (0..t.nodes.len()).map(start).collect();
    for n in &t.nodes {
        wait_for(&format!("{} ready", n.name), 60, || {
            let addr = node_addr(n);
            http_get(n, &format!("{addr}:11021"), "/readyz").filter(|(c, _)| *c == 200)
        });
    }
    if via_cni {
        for (i, d) in cni_dirs.iter().enumerate() {
            let conf = std::fs::read_to_string(
                d.as_ref().unwrap().root.join("net.d/06-hybridnet.conflist"),
            )
            .expect("agent installed the conflist");
            assert!(
                conf.contains("\"bandwidth\"") && conf.contains("\"portmap\""),
                "n{}: {conf}",
                i + 1
            );
        }
        for (name, node, _, _, _, v4, v6, _, _) in pods {
            let dirs = cni_dirs[node - 1].as_ref().unwrap();
            wired.insert(name, cni_add_pod(&t.nodes[node - 1], dirs, name, v4, v6));
        }
    }
    // Every node knows every other node's VTEP.
    for n in &t.nodes {
        wait_for(&format!("{} FDB", n.name), 30, || {
            let fdb = n
                .exec(&["bridge", "fdb", "show", "dev", "eth0.vxlan4"])
                .unwrap_or_default();
            (fdb.matches("self permanent").count() >= 4).then_some(())
        });
    }

    let p = |n: &str| &wired[n];
    let mut failures = Vec::new();
    let mut check = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("{what}: {e}"));
        }
    };
    for v6 in [false, true] {
        let fam = if v6 { "v6" } else { "v4" };
        let a = |pod: &Pod| if v6 { pod.v6.clone() } else { pod.v4.clone() };
        let node_ip = |i: usize| {
            if v6 {
                format!("fd00:18::1{i}")
            } else {
                format!("198.18.0.1{i}")
            }
        };
        let outside_ip = if v6 { "fd00:20::2" } else { "198.20.0.2" };
        // (description, from pod, to pod, source must be preserved)
        let pairs = [
            ("overlay->overlay same node", "o1", "o1b"),
            ("overlay->overlay across nodes", "o1", "o2"),
            ("overlay->overlay across nodes (n3)", "o3", "o1"),
            ("underlay->underlay across nodes", "u1", "u2"),
            ("overlay->underlay across nodes", "o1", "u2"),
            ("underlay->overlay across nodes", "u1", "o2"),
            ("underlay->overlay same node", "u1", "o1"),
        ];
        for (what, from, to) in pairs {
            check(&format!("{fam} ping {what}"), ping(&p(from).ns, &a(p(to))));
            let seen = tcp_source(&p(to).ns, &a(p(to)), &p(from).ns);
            check(
                &format!("{fam} tcp {what} keeps the source"),
                seen.and_then(|s| {
                    (s.to_string() == a(p(from)))
                        .then_some(())
                        .ok_or(format!("server saw {s}, want {}", a(p(from))))
                }),
            );
            // And back.
            check(
                &format!("{fam} ping {what} (reverse)"),
                ping(&p(to).ns, &a(p(from))),
            );
        }
        for pod in ["o1", "u1"] {
            check(
                &format!("{fam} {pod} -> own node"),
                ping(&p(pod).ns, &node_ip(1)),
            );
            check(
                &format!("{fam} {pod} -> other node"),
                ping(&p(pod).ns, &node_ip(2)),
            );
            check(
                &format!("{fam} own node -> {pod}"),
                ping(&t.nodes[0], &a(p(pod))),
            );
            check(
                &format!("{fam} other node -> {pod}"),
                ping(&t.nodes[1], &a(p(pod))),
            );
        }
        // Node -> remote overlay pod over TCP (reply marked 0x20 back through VXLAN).
        check(
            &format!("{fam} tcp node n1 -> remote overlay pod o2"),
            tcp_source(&p("o2").ns, &a(p("o2")), &t.nodes[0]).map(|_| ()),
        );
        // Outside: overlay masqueraded to the node address, underlay keeps its address.
        check(
            &format!("{fam} ping overlay -> outside"),
            ping(&p("o1").ns, outside_ip),
        );
        check(
            &format!("{fam} tcp overlay -> outside is masqueraded"),
            tcp_source(&t.outside, outside_ip, &p("o1").ns).and_then(|s| {
                (s.to_string() == node_ip(1))
                    .then_some(())
                    .ok_or(format!("outside saw {s}, want {}", node_ip(1)))
            }),
        );
        check(
            &format!("{fam} ping underlay -> outside"),
            ping(&p("u1").ns, outside_ip),
        );
        check(
            &format!("{fam} tcp underlay -> outside keeps the source"),
            tcp_source(&t.outside, outside_ip, &p("u1").ns).and_then(|s| {
                (s.to_string() == a(p("u1")))
                    .then_some(())
                    .ok_or(format!("outside saw {s}, want {}", a(p("u1"))))
            }),
        );
        check(
            &format!("{fam} ping outside -> underlay pod"),
            ping(&t.outside, &a(p("u1"))),
        );
    }
    let _ = &t.gw;
    assert!(
        failures.is_empty(),
        "connectivity failures:\n{}",
        failures.join("\n")
    );

    // Agent restart during a paced TCP stream: each agent is killed first and only then started
    // again (a real window without an agent); the stream never stalls for more than
    // STALL_BOUND (the data plane stays as programmed) and flows after each restart.
    let stream = PacedStream::start(
        Some(&p("o2").ns.name),
        Some(&p("o1").ns.name),
        p("o2").v4.parse().unwrap(),
        7301,
        Duration::from_millis(10),
    )
    .expect("paced stream o1 -> o2");
    stream
        .flowing_blocking(50, Duration::from_secs(10))
        .expect("stream flowing before the restart");
    for (i, agent) in agents.iter_mut().enumerate().take(2) {
        let old_pid = agent.0.id();
        stream.mark(&format!("kill n{}", i + 1));
        agent.0.kill().unwrap();
        agent.0.wait().unwrap();
        // Flow while no agent runs on the node.
        stream
            .flowing_blocking(20, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("n{} without an agent: {e}", i + 1));
        stream.mark(&format!("start n{}", i + 1));
        let new = start(i);
        assert_ne!(new.0.id(), old_pid);
        drop(std::mem::replace(agent, new));
    }
    for (i, n) in t.nodes.iter().enumerate().take(2) {
        let addr = node_addr(n);
        wait_for("restarted agent ready", 60, || {
            http_get(n, &format!("{addr}:11021"), "/readyz").filter(|(c, _)| *c == 200)
        });
        assert!(
            agents[i].0.try_wait().unwrap().is_none(),
            "the restarted agent of {} is alive",
            n.name
        );
        stream.mark(&format!("n{} ready", i + 1));
    }
    stream
        .flowing_blocking(50, Duration::from_secs(10))
        .expect("stream flowing after the restarts");
    let report = stream
        .finish()
        .expect("paced stream across the agent restarts");
    report
        .gap_within(STALL_BOUND, "the agent restarts")
        .unwrap();
    eprintln!("agent restarts: {report}");

    // A second agent on a node whose agent runs cannot bind the health port: it exits with an
    // error instead of running beside the first and looking healthy through it.
    let mut second = start(2);
    let status = wait_for("the second agent on n3 to exit", 30, || {
        second.0.try_wait().unwrap()
    });
    assert!(!status.success(), "a second agent exits with an error");
    let log = std::fs::read_to_string(&second.1).unwrap_or_default();
    assert!(
        log.contains("bind the health port") && log.contains("11021"),
        "the second agent names the port it could not bind: {log}"
    );
    assert!(
        agents[2].0.try_wait().unwrap().is_none(),
        "the first agent on n3 keeps running"
    );
    let addr = node_addr(&t.nodes[2]);
    assert_eq!(
        http_get(&t.nodes[2], &format!("{addr}:11021"), "/readyz").map(|(c, _)| c),
        Some(200),
        "the first agent on n3 still answers /readyz"
    );
    drop(agents);
}

/// Whether a TCP connection from `client` to `server_ip` is answered by a listener in `server`
/// (a connection delivered elsewhere is refused or times out). Never leaves a thread behind.
fn tcp_reaches(server: &Netns, server_ip: &str, client: &Netns) -> Result<(), String> {
    let bind: SocketAddr = SocketAddr::new(server_ip.parse().unwrap(), 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let srv = in_ns(server, move || -> Result<(), String> {
        let l = std::net::TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        tx.send(l.local_addr().unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        loop {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).ok();
                    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).map_err(|e| e.to_string())?;
                    return s.write_all(b"world").map_err(|e| e.to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        return Err("nothing reached the listener".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let cli = in_ns(client, move || -> Result<(), String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        (&b == b"world").then_some(()).ok_or("bad reply".into())
    });
    let c = cli.join().map_err(|_| "client panicked".to_string())?;
    let s = srv.join().map_err(|_| "server panicked".to_string())?;
    c.and(s)
}

/// A KubeVirt VM's live migration as the nodes see it (docs/api.md, "KubeVirt VMs"): the VM's
/// address is on the source pod (n1) and on the target pod (n2, wired without a local route, as
/// the CNI ADD of a migration target does). While the IPInstances are bound to the source, pods
/// of every node (the target's included) reach the source; once they are re-bound to the target
/// (the handover), pods of every node (the source's included, while the source pod's veth still
/// exists) reach the target. Real agents on three nodes, IPv4 and IPv6.
#[test]
fn vm_live_migration_traffic_goes_where_the_binding_is() {
    if !require_root("vm_live_migration_traffic_goes_where_the_binding_is") {
        return;
    }
    let t = topology();
    let cp = &t.cp;
    for i in 1..=3 {
        cp.create(&node_object(
            &format!("n{i}"),
            &[&format!("198.18.0.1{i}"), &format!("fd00:18::1{i}")],
        ));
    }
    cp.create_network(&network(
        "overlay",
        NetworkType::Overlay,
        None,
        Some(4),
        &["n1", "n2", "n3"],
    ));
    cp.create(&subnet("ov4", "overlay", "198.19.0.0/24", None, None, None));
    cp.create(&subnet("ov6", "overlay", "fd00:19::/112", None, None, None));
    const VM4: &str = "198.19.0.50";
    const VM6: &str = "fd00:19::50";
    const VM_MAC: &str = "02:aa:00:00:00:50";
    // Clients on every node.
    let mut clients = Vec::new();
    for i in 1..=3usize {
        let name = format!("c{i}");
        let (v4, v6, mac) = (
            format!("198.19.0.{i}1"),
            format!("fd00:19::{i}1"),
            format!("02:aa:00:00:00:{i}1"),
        );
        let node = format!("n{i}");
        cp.create_ns(
            "default",
            &ipinstance("default", &name, &v4, "overlay", "ov4", &node, &mac),
        );
        cp.create_ns(
            "default",
            &ipinstance("default", &name, &v6, "overlay", "ov6", &node, &mac),
        );
        clients.push(wire_pod(&t.nodes[i - 1], &name, &v4, &v6, &mac, 1450));
    }
    // The VM's IPInstances, bound to the source pod on n1.
    cp.create_ns(
        "default",
        &ipinstance("default", "vm-src", VM4, "overlay", "ov4", "n1", VM_MAC),
    );
    cp.create_ns(
        "default",
        &ipinstance("default", "vm-src", VM6, "overlay", "ov6", "n1", VM_MAC),
    );
    let source = wire_pod(&t.nodes[0], "vm-src", VM4, VM6, VM_MAC, 1450);
    let target = wire_pod(&t.nodes[1], "vm-dst", VM4, VM6, VM_MAC, 1450);
    let target_veth = host_veth_name("default", "vm-dst");
    t.nodes[1].ip(&format!("route del {VM4}/32 dev {target_veth} table 39999"));
    t.nodes[1].ip(&format!(
        "-6 route del {VM6}/128 dev {target_veth} table 39999"
    ));

    let start = |i: usize| {
        start_agent(
            &t.nodes[i],
            &format!("n{}", i + 1),
            &cp.kubeconfig,
            11021,
            &[],
        )
    };
    let agents: Vec<Child> = (0..t.nodes.len()).map(start).collect();
    for n in &t.nodes {
        wait_for(&format!("{} ready", n.name), 60, || {
            let addr = node_addr(n);
            http_get(n, &format!("{addr}:11021"), "/readyz").filter(|(c, _)| *c == 200)
        });
    }
    let reach = |to: &Pod, what: &str| {
        for (i, c) in clients.iter().enumerate() {
            for ip in [VM4, VM6] {
                wait_for(&format!("c{} -> {ip} reaches {what}", i + 1), 45, || {
                    tcp_reaches(&to.ns, ip, &c.ns).ok()
                });
            }
        }
    };
    // The VM runs at the source: everyone, the target's node included, reaches the source.
    reach(&source, "the source");
    let t2 = t.nodes[1].ip("route show table 39999");
    assert!(!t2.contains(VM4), "no local route to the target yet: {t2}");

    // The handover: the operator re-binds the IPInstances to the target pod on n2.
    cp.run(|c| async move {
        let api: kube::Api<hybridnet_api::v1::IPInstance> = kube::Api::namespaced(c, "default");
        for ip in [VM4, VM6] {
            let name = hybridnet_api::naming::ip_to_instance_name(ip.parse().unwrap());
            let patch = serde_json::json!({
                "metadata": {"labels": {
                    hybridnet_api::constants::label::NODE: "n2",
                    hybridnet_api::constants::label::POD: "vm-dst",
                }},
                "spec": {"binding": {"nodeName": "n2", "podName": "vm-dst"}},
            });
            api.patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
                .await
                .expect("re-bind the VM's IPInstance");
        }
    });
    reach(&target, "the target");
    // The source pod's veth is still there, without the route to it.
    let source_veth = host_veth_name("default", "vm-src");
    assert!(
        t.nodes[0]
            .try_ip(&format!("link show {source_veth}"))
            .is_ok()
    );
    let t1 = t.nodes[0].ip("route show table 39999");
    assert!(!t1.contains(&format!("{VM4} dev {source_veth}")), "{t1}");
    drop(agents);
}

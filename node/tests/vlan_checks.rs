//! CNI ADD checks of VLAN pods against real namespaces: a "switch" namespace with a Linux bridge,
//! the node namespace's VLAN forward interface (id 0: `eth0` itself) plugged into it, a gateway
//! namespace answering ARP/NDP, and (where needed) a rogue namespace holding the pod's address.
//! The agent side is the in-process `CniService`, programming the node namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Netns, PodLookup, require_root, veth};
use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::IPInstance;
use hybridnet_cni::{AgentCommand, AgentResponse};
use hybridnet_node::cniserver::vlancheck::{VlanCheckConfig, VlanSubnet, VlanSubnets};
use hybridnet_node::cniserver::{CniServerConfig, CniService};

const POD_MAC: &str = "02:00:c6:12:00:05";
const OLD_MAC: &str = "02:00:00:00:00:99";

/// The switch, the node plugged into it, and optional stations.
struct Segment {
    switch: Netns,
    node: Netns,
    stations: Vec<Netns>,
}

impl Segment {
    fn new() -> Segment {
        let switch = Netns::new("sw");
        switch.ip("link add br0 type bridge");
        // No snooping: NDP multicast is flooded as a plain switch without MLD querier would.
        switch.ip("link set br0 type bridge mcast_snooping 0");
        switch.ip("link set br0 up");
        let node = Netns::new("vnode");
        veth(&switch, "p-node", &node, "eth0");
        switch.ip("link set p-node master br0");
        // Node-level route the agent keeps for every pod (proxy ARP answers 169.254.1.1 only
        // when it is routable); present before ADD so a failed ADD can be compared exactly.
        node.ip("route add 169.254.1.1/32 dev lo scope link");
        Segment {
            switch,
            node,
            stations: Vec::new(),
        }
    }

    /// A station on the segment with the given addresses (v6 without DAD, so they are usable at
    /// once) and its MAC.
    fn station(&mut self, tag: &str, addrs: &[&str]) -> String {
        let ns = Netns::new(tag);
        let port = format!("p-{tag}");
        veth(&self.switch, &port, &ns, "eth0");
        self.switch.ip(&format!("link set {port} master br0"));
        for a in addrs {
            if a.contains(':') {
                ns.ip(&format!("addr add {a} dev eth0 nodad"));
            } else {
                ns.ip(&format!("addr add {a} dev eth0"));
            }
        }
        let mac = mac_of(&ns, "eth0");
        self.stations.push(ns);
        mac
    }

    fn station_ns(&self, i: usize) -> &Netns {
        &self.stations[i]
    }
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .unwrap()
        .trim()
        .to_string()
}

fn subnets(v4_gw: Option<&str>, v6_gw: Option<&str>) -> VlanSubnets {
    VlanSubnets(BTreeMap::from([
        (
            Cidr::parse_canonical("198.18.0.0/24").unwrap(),
            VlanSubnet {
                iface: "eth0".into(),
                gateway: v4_gw.map(|g| g.parse().unwrap()),
            },
        ),
        (
            Cidr::parse_canonical("fd00:18::/112").unwrap(),
            VlanSubnet {
                iface: "eth0".into(),
                gateway: v6_gw.map(|g| g.parse().unwrap()),
            },
        ),
    ]))
}

fn instances(pod: &str, addrs: &[&str]) -> Vec<IPInstance> {
    addrs
        .iter()
        .map(|a| common::ipinstance("default", pod, a, "vlan", "vlan-sub", "node1", POD_MAC))
        .collect()
}

struct Agent {
    rt: tokio::runtime::Runtime,
    service: CniService,
}

impl Agent {
    fn new(node: &Netns, lookup: PodLookup, timeout: Duration) -> Agent {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = CniServerConfig {
            host_netns: Some(format!("/run/netns/{}", node.name).into()),
            ipinstance_wait: Duration::from_secs(2),
            vlan_check: VlanCheckConfig { timeout },
            ..Default::default()
        };
        let service = CniService::new(Arc::new(lookup), config).expect("CNI service");
        Agent { rt, service }
    }

    fn call(&self, command: AgentCommand, pod: &str, pod_ns: &Netns) -> AgentResponse {
        self.rt.block_on(self.service.handle(common::cni_request(
            command,
            &format!("cid-{pod}"),
            pod,
            pod_ns,
        )))
    }
}

/// `lladdr` of a neighbour entry, if any.
fn neighbour_mac(ns: &Netns, ip: &str) -> Option<String> {
    let out = ns.ip(&format!("neigh show {ip} dev eth0"));
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "lladdr")
        .and_then(|i| words.get(i + 1))
        .map(|s| s.to_string())
}

/// Everything ADD could have left in the node namespace.
fn node_state(node: &Netns) -> String {
    // Routes of IPv6 addresses appear when their DAD ends, on the kernel's timer.
    node.wait_ipv6_dad_settled(std::time::Duration::from_secs(30));
    let links: Vec<String> = node
        .ip("-o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
        .collect();
    format!(
        "links: {links:?}\naddrs: {}\nroutes4: {}\nroutes6: {}\nrules4: {}\nrules6: {}\nproxy: {}",
        node.ip("-o addr show"),
        node.ip("route show table all"),
        node.ip("-6 route show table all"),
        node.ip("rule show"),
        node.ip("-6 rule show"),
        node.ip("neigh show proxy"),
    )
}

#[test]
fn healthy_vlan_passes_and_the_gateway_learns_the_pod_at_the_node() {
    if !require_root("healthy_vlan_passes_and_the_gateway_learns_the_pod_at_the_node") {
        return;
    }
    let mut seg = Segment::new();
    seg.station("gw", &["198.18.0.1/24", "fd00:18::1/112"]);
    let gw = seg.station_ns(0);
    // The pod's address used to live elsewhere (a StatefulSet pod that moved nodes).
    gw.ip(&format!(
        "neigh replace 198.18.0.5 lladdr {OLD_MAC} dev eth0 nud stale"
    ));
    gw.ip(&format!(
        "neigh replace fd00:18::5 lladdr {OLD_MAC} dev eth0 nud stale"
    ));
    let node_mac = mac_of(&seg.node, "eth0");
    let agent = Agent::new(
        &seg.node,
        PodLookup {
            instances: instances("web-0", &["198.18.0.5", "fd00:18::5"]),
            subnets: subnets(Some("198.18.0.1"), Some("fd00:18::1")),
        },
        Duration::from_secs(3),
    );
    let pod = Netns::new("pod");
    let started = Instant::now();
    let r = agent.call(AgentCommand::Add, "web-0", &pod);
    let took = started.elapsed();
    assert!(r.error.is_none(), "ADD failed: {:?}", r.error);
    eprintln!("dual-stack ADD with VLAN checks took {took:?}");
    assert_eq!(
        neighbour_mac(gw, "198.18.0.5").as_deref(),
        Some(node_mac.as_str()),
        "gateway ARP cache: {}",
        gw.ip("neigh show")
    );
    assert_eq!(
        neighbour_mac(gw, "fd00:18::5").as_deref(),
        Some(node_mac.as_str()),
        "gateway ND cache: {}",
        gw.ip("-6 neigh show")
    );
    // The pod is wired as usual.
    assert!(pod.ip("addr show eth0").contains("198.18.0.5/32"));
    let r = agent.call(AgentCommand::Del, "web-0", &pod);
    assert!(r.error.is_none(), "{:?}", r.error);
}

#[test]
fn gratuitous_announcements_move_the_pod_in_neighbour_caches_without_gateway() {
    if !require_root("gratuitous_announcements_move_the_pod_in_neighbour_caches_without_gateway") {
        return;
    }
    let mut seg = Segment::new();
    // A neighbour that is no gateway (the subnets have none): it only hears the announcements.
    seg.station("nb", &["198.18.0.7/24", "fd00:18::7/112"]);
    let nb = seg.station_ns(0);
    nb.ip(&format!(
        "neigh replace 198.18.0.5 lladdr {OLD_MAC} dev eth0 nud stale"
    ));
    nb.ip(&format!(
        "neigh replace fd00:18::5 lladdr {OLD_MAC} dev eth0 nud stale"
    ));
    let node_mac = mac_of(&seg.node, "eth0");
    let agent = Agent::new(
        &seg.node,
        PodLookup {
            instances: instances("db-0", &["198.18.0.5", "fd00:18::5"]),
            subnets: subnets(None, None),
        },
        Duration::from_secs(3),
    );
    let pod = Netns::new("pod");
    let r = agent.call(AgentCommand::Add, "db-0", &pod);
    assert!(r.error.is_none(), "ADD failed: {:?}", r.error);
    assert_eq!(
        neighbour_mac(nb, "198.18.0.5").as_deref(),
        Some(node_mac.as_str()),
        "neighbour ARP cache after the gratuitous ARP: {}",
        nb.ip("neigh show")
    );
    assert_eq!(
        neighbour_mac(nb, "fd00:18::5").as_deref(),
        Some(node_mac.as_str()),
        "neighbour ND cache after the unsolicited NA: {}",
        nb.ip("-6 neigh show")
    );
}

#[test]
fn duplicate_address_fails_add_and_leaves_nothing_behind() {
    if !require_root("duplicate_address_fails_add_and_leaves_nothing_behind") {
        return;
    }
    for (family, pod_ip, rogue_addr) in [
        ("IPv4", "198.18.0.5", "198.18.0.5/24"),
        ("IPv6", "fd00:18::5", "fd00:18::5/112"),
    ] {
        let mut seg = Segment::new();
        seg.station("gw", &["198.18.0.1/24", "fd00:18::1/112"]);
        let rogue_mac = seg.station("rogue", &[rogue_addr]);
        let agent = Agent::new(
            &seg.node,
            PodLookup {
                instances: instances("web-1", &[pod_ip]),
                subnets: subnets(Some("198.18.0.1"), Some("fd00:18::1")),
            },
            Duration::from_secs(3),
        );
        let pod = Netns::new("pod");
        let before = node_state(&seg.node);
        let r = agent.call(AgentCommand::Add, "web-1", &pod);
        let e = r.error.expect("ADD must fail: the address is in use");
        let want = format!("pod ip {pod_ip} is already in use by MAC {rogue_mac} on eth0");
        assert!(e.msg.contains(&want), "{family}: {}", e.msg);
        assert!(e.msg.contains("default/web-1"), "{family}: {}", e.msg);
        // Nothing left: no veth, address, route, rule or proxy entry in the node; no eth0 in
        // the pod.
        assert_eq!(node_state(&seg.node), before, "{family}: node changed");
        assert!(
            pod.try_ip("link show eth0").is_err(),
            "{family}: pod kept eth0"
        );
    }
}

#[test]
fn silent_gateway_fails_add_within_the_timeout() {
    if !require_root("silent_gateway_fails_add_within_the_timeout") {
        return;
    }
    for (family, pod_ip, gw) in [
        ("IPv4", "198.18.0.5", "198.18.0.1"),
        ("IPv6", "fd00:18::5", "fd00:18::1"),
    ] {
        let mut seg = Segment::new();
        // Someone is on the segment, but not the gateway.
        seg.station("nb", &["198.18.0.7/24", "fd00:18::7/112"]);
        let timeout = Duration::from_millis(800);
        let agent = Agent::new(
            &seg.node,
            PodLookup {
                instances: instances("web-2", &[pod_ip]),
                subnets: subnets(Some("198.18.0.1"), Some("fd00:18::1")),
            },
            timeout,
        );
        let pod = Netns::new("pod");
        let before = node_state(&seg.node);
        let started = Instant::now();
        let r = agent.call(AgentCommand::Add, "web-2", &pod);
        let took = started.elapsed();
        let e = r.error.expect("ADD must fail: no gateway");
        assert!(
            e.msg.contains(&format!(
                "vlan network seems not working: gateway {gw} did not answer"
            )) && e
                .msg
                .contains(&format!("pod ip {pod_ip} on eth0 within 0.8 s")),
            "{family}: {}",
            e.msg
        );
        assert!(e.msg.contains("default/web-2"), "{family}: {}", e.msg);
        assert_eq!(e.code, 11, "{family}: a silent gateway is transient");
        // It waited for the gateway (the whole timeout), and not unboundedly longer.
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(10),
            "{family}: {took:?}"
        );
        assert_eq!(node_state(&seg.node), before, "{family}: node changed");
    }
}

#[test]
fn non_vlan_pods_and_disabled_checks_are_not_probed() {
    if !require_root("non_vlan_pods_and_disabled_checks_are_not_probed") {
        return;
    }
    // The rogue holds the address, but the pod is not in a VLAN subnet of the node (overlay
    // pod), or the checks are disabled (timeout 0): ADD succeeds without asking the network.
    for (subnets, timeout) in [
        (VlanSubnets::default(), Duration::from_secs(3)),
        (
            subnets(Some("198.18.0.1"), Some("fd00:18::1")),
            Duration::ZERO,
        ),
    ] {
        let mut seg = Segment::new();
        seg.station("rogue", &["198.18.0.5/24"]);
        let agent = Agent::new(
            &seg.node,
            PodLookup {
                instances: instances("web-3", &["198.18.0.5"]),
                subnets,
            },
            timeout,
        );
        let pod = Netns::new("pod");
        let r = agent.call(AgentCommand::Add, "web-3", &pod);
        assert!(r.error.is_none(), "{:?}", r.error);
    }
}

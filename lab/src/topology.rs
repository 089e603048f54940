//! The lab's hosts and wires as plain data, and the `ip` commands that build and remove them.
//!
//! Every host is a network namespace named `hl<id>-<role>`; one namespace holds a bridge, the L2
//! segment that the control plane, the ToR and the nodes share; the outside host hangs off the ToR on
//! its own link. A lab of two clusters (`up --clusters 2`) adds a second cluster on its own segment
//! (a second bridge in the same switch namespace, `hl<id>-c1<role>` hosts) behind the same ToR, so
//! the two clusters' nodes reach each other routed through the ToR ([`CLUSTER_NETS`]). BGP nodes are not on the segment: each has its own routed point-to-point link to the
//! ToR (as in a routed access layer), so nothing but BGP-announced routes connects their pods.
//! Addresses come from the benchmarking ranges 198.18.0.0/15 and fd00::/8, never from anything the
//! host uses. Nothing is created in the host's own network namespace.

use std::fmt;

/// Prefix of every namespace the lab creates; `down` removes all namespaces with it.
pub const NS_PREFIX: &str = "hl";

/// The node segment: ToR .1, control plane .2, nodes from .11.
pub const SEGMENT_V4: &str = "198.18.0";
pub const SEGMENT_V6: &str = "fd00:18::";
/// The ToR <-> outside link.
pub const OUTSIDE_V4: &str = "198.19.0";
pub const OUTSIDE_V6: &str = "fd00:19::";
/// Routed links of BGP nodes: link k (from 0) is 198.18.2.(2k)/31 on the ToR and .(2k+1)/31 on the
/// node; IPv6 fd00:2:(k+1)::1/64 and ::2/64.
pub const ROUTED_V4: &str = "198.18.2";
pub const ROUTED_V6: &str = "fd00:2";
/// The ToR's BGP address: a /32 on every routed link (one peer address for the whole BGP
/// network, as the Network's `bgpPeers` list is shared by its nodes); nodes reach it on-link.
pub const TOR_PEER_V4: &str = "198.18.1.1";
/// The address plan of one cluster of the lab: cluster 0 is the one-cluster lab's; a lab of two
/// clusters adds cluster 1, whose ranges share no address with cluster 0's (the multi-cluster
/// checks refuse overlapping subnets, docs/multicluster.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterNet {
    /// The node segment (a /24 and a /64): ToR .1, control plane .2, nodes from .11; the VLAN
    /// underlay network's subnets take .100-.199 of it.
    pub segment_v4: &'static str,
    pub segment_v6: &'static str,
    /// The bootstrap overlay subnet and the overlay network's IPv6 subnet.
    pub overlay_v4: &'static str,
    pub overlay_v6: &'static str,
    /// The BGP network's subnets: on no link, reachable only through announced routes.
    pub bgp_v4: &'static str,
    pub bgp_v6: &'static str,
}

/// The clusters a lab can run, in order.
pub const CLUSTER_NETS: [ClusterNet; 2] = [
    ClusterNet {
        segment_v4: SEGMENT_V4,
        segment_v6: SEGMENT_V6,
        overlay_v4: "198.18.64.0/20",
        overlay_v6: "fd00:64::/112",
        bgp_v4: "198.18.32.0/24",
        bgp_v6: "fd00:32::/112",
    },
    ClusterNet {
        segment_v4: "198.18.16",
        segment_v6: "fd00:16::",
        overlay_v4: "198.18.80.0/20",
        overlay_v6: "fd00:80::/112",
        bgp_v4: "198.18.48.0/24",
        bgp_v6: "fd00:48::/112",
    },
];

/// How many clusters a lab can run.
pub const MAX_CLUSTERS: u32 = CLUSTER_NETS.len() as u32;

/// The address plan of cluster `cluster` (the last one for a larger number: `up` refuses more
/// than [`MAX_CLUSTERS`]).
pub fn cluster_net(cluster: u32) -> &'static ClusterNet {
    let i = (cluster as usize).min(CLUSTER_NETS.len() - 1);
    &CLUSTER_NETS[i]
}

/// The name of cluster `cluster` in the lab's kubeconfig contexts and RemoteClusters.
pub fn cluster_name(cluster: u32) -> String {
    format!("c{cluster}")
}

/// AS numbers (private range): the ToR's, and the one the lab's BGP network (netID) uses.
pub const TOR_AS: u32 = 65000;
pub const BGP_NODE_AS: u32 = 65001;

/// Role of a lab host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Holds the bridge (the switch of the node segment).
    Switch,
    /// Gateway of the node segment and router to the outside host.
    Tor,
    /// A host outside the cluster.
    Outside,
    /// Runs kube-lite and the operator.
    ControlPlane,
    /// A Kubernetes node, numbered from 1.
    Node(u32),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Switch => f.write_str("sw"),
            Role::Tor => f.write_str("tor"),
            Role::Outside => f.write_str("out"),
            Role::ControlPlane => f.write_str("cp"),
            Role::Node(n) => write!(f, "node{n}"),
        }
    }
}

/// How a host is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// A port on the shared L2 segment (or, for the outside host, its own link).
    Segment,
    /// Its own point-to-point link to the ToR: the ToR side's interface and addresses.
    Routed {
        tor_iface: String,
        tor_v4: String,
        tor_v6: String,
    },
}

/// One lab host (a network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub role: Role,
    pub netns: String,
    /// Interface name inside the host and its addresses (with prefix length).
    pub iface: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
    pub uplink: Uplink,
}

impl Host {
    /// The IPv4 address without the prefix length.
    pub fn ip4(&self) -> Option<&str> {
        self.v4.as_deref().and_then(|a| a.split('/').next())
    }

    /// The IPv6 address without the prefix length.
    pub fn ip6(&self) -> Option<&str> {
        self.v6.as_deref().and_then(|a| a.split('/').next())
    }

    /// Whether the host is a BGP node on its own routed link.
    pub fn is_routed(&self) -> bool {
        matches!(self.uplink, Uplink::Routed { .. })
    }

    /// The gateways of the host's default routes (v4, v6) on the segment of `net`.
    fn gateways(&self, net: &ClusterNet) -> (String, String) {
        match &self.uplink {
            Uplink::Routed { tor_v4, tor_v6, .. } => (strip_len(tor_v4), strip_len(tor_v6)),
            Uplink::Segment => (
                format!("{}.1", net.segment_v4),
                format!("{}1", net.segment_v6),
            ),
        }
    }
}

fn strip_len(a: &str) -> String {
    a.split('/').next().unwrap_or(a).to_string()
}

/// The whole lab, or in a lab of several clusters one cluster's part of it (its segment, control
/// plane and nodes; the switch, ToR and outside host are shared and built with cluster 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub id: String,
    /// Which cluster of the lab (0 for a one-cluster lab).
    pub cluster: u32,
    /// The cluster's addresses.
    pub net: ClusterNet,
    pub switch_ns: String,
    pub bridge: String,
    pub hosts: Vec<Host>,
    pub outside: Host,
    /// ToR side of the outside link.
    pub tor_outside_iface: String,
    pub tor_outside_v4: String,
    pub tor_outside_v6: String,
}

/// Builds the layout of a lab with `nodes` node hosts on the segment.
pub fn layout(id: &str, nodes: u32) -> Layout {
    layout_with(id, nodes, 0)
}

/// Builds the layout of a lab with `nodes` node hosts on the segment and `bgp_nodes` more (numbered
/// after them) on routed links.
pub fn layout_with(id: &str, nodes: u32, bgp_nodes: u32) -> Layout {
    cluster_layout(id, 0, nodes, bgp_nodes)
}

/// The layout of cluster `cluster` of a lab whose clusters each have `nodes` nodes on their
/// segment and `bgp_nodes` BGP nodes. Cluster 0 is [`layout_with`]'s lab; cluster c > 0 has its
/// own segment (bridge `br<c>`, the ToR's interface `seg<c>`), hosts `hl<id>-c<c><role>`, and the
/// ToR's routed links after cluster 0's (`bgp<k>` numbered on across clusters).
pub fn cluster_layout(id: &str, cluster: u32, nodes: u32, bgp_nodes: u32) -> Layout {
    let cluster = cluster.min(MAX_CLUSTERS - 1);
    let net = *cluster_net(cluster);
    let (seg4, seg6) = (net.segment_v4, net.segment_v6);
    let shared = |role: &Role| format!("{NS_PREFIX}{id}-{role}");
    let ns = |role: &Role| match cluster {
        0 => shared(role),
        c => format!("{NS_PREFIX}{id}-c{c}{role}"),
    };
    let mut hosts = vec![
        Host {
            role: Role::Tor,
            netns: shared(&Role::Tor),
            iface: match cluster {
                0 => "eth0".into(),
                c => format!("seg{c}"),
            },
            v4: Some(format!("{seg4}.1/24")),
            v6: Some(format!("{seg6}1/64")),
            uplink: Uplink::Segment,
        },
        Host {
            role: Role::ControlPlane,
            netns: ns(&Role::ControlPlane),
            iface: "eth0".into(),
            v4: Some(format!("{seg4}.2/24")),
            v6: Some(format!("{seg6}2/64")),
            uplink: Uplink::Segment,
        },
    ];
    for n in 1..=nodes {
        let role = Role::Node(n);
        hosts.push(Host {
            netns: ns(&role),
            role,
            iface: "eth0".into(),
            v4: Some(format!("{seg4}.{}/24", 10 + n)),
            v6: Some(format!("{seg6}{:x}/64", 0x10 + n)),
            uplink: Uplink::Segment,
        });
    }
    for b in 0..bgp_nodes {
        // The link's number on the ToR, across clusters.
        let k = cluster * bgp_nodes + b;
        let role = Role::Node(nodes + 1 + b);
        hosts.push(Host {
            netns: ns(&role),
            role,
            iface: "eth0".into(),
            v4: Some(format!("{ROUTED_V4}.{}/31", 2 * k + 1)),
            v6: Some(format!("{ROUTED_V6}:{:x}::2/64", k + 1)),
            uplink: Uplink::Routed {
                tor_iface: format!("bgp{k}"),
                tor_v4: format!("{ROUTED_V4}.{}/31", 2 * k),
                tor_v6: format!("{ROUTED_V6}:{:x}::1/64", k + 1),
            },
        });
    }
    Layout {
        id: id.to_string(),
        cluster,
        net,
        switch_ns: shared(&Role::Switch),
        bridge: format!("br{cluster}"),
        hosts,
        outside: Host {
            role: Role::Outside,
            netns: shared(&Role::Outside),
            iface: "eth0".into(),
            v4: Some(format!("{OUTSIDE_V4}.2/24")),
            v6: Some(format!("{OUTSIDE_V6}2/64")),
            uplink: Uplink::Segment,
        },
        tor_outside_iface: "eth1".into(),
        tor_outside_v4: format!("{OUTSIDE_V4}.1/24"),
        tor_outside_v6: format!("{OUTSIDE_V6}1/64"),
    }
}

impl Layout {
    pub fn nodes(&self) -> impl Iterator<Item = &Host> {
        self.hosts
            .iter()
            .filter(|h| matches!(h.role, Role::Node(_)))
    }

    /// The BGP nodes (on routed links).
    pub fn bgp_nodes(&self) -> impl Iterator<Item = &Host> {
        self.nodes().filter(|h| h.is_routed())
    }

    /// The ToR.
    pub fn tor(&self) -> &Host {
        &self.hosts[0]
    }

    /// bird2's configuration for the ToR when the lab has BGP nodes ([`tor_bird_config`] of this
    /// layout alone).
    pub fn tor_bird_config(&self) -> Option<String> {
        tor_bird_config(std::slice::from_ref(self))
    }

    /// A host's name in the ToR's configuration and the lab's messages: its role, prefixed by
    /// `c<cluster>` in clusters after the first (`node3`, `c1node3`).
    pub fn host_name(&self, h: &Host) -> String {
        match self.cluster {
            0 => h.role.to_string(),
            c => format!("c{c}{}", h.role),
        }
    }

    /// Whether this layout builds the hosts every cluster shares (switch, ToR, outside host).
    fn builds_shared(&self) -> bool {
        self.cluster == 0
    }

    pub fn host(&self, role: &Role) -> Option<&Host> {
        self.hosts
            .iter()
            .chain(std::iter::once(&self.outside))
            .find(|h| h.role == *role)
    }

    /// Every namespace of the lab, the switch first; of a cluster after the first, its own hosts
    /// (control plane and nodes).
    pub fn namespaces(&self) -> Vec<String> {
        if !self.builds_shared() {
            return self
                .hosts
                .iter()
                .filter(|h| h.role != Role::Tor)
                .map(|h| h.netns.clone())
                .collect();
        }
        let mut v = vec![self.switch_ns.clone()];
        v.extend(self.hosts.iter().map(|h| h.netns.clone()));
        v.push(self.outside.netns.clone());
        v
    }

    /// The `ip` commands that build the lab, in order (each a list of arguments to `ip`).
    pub fn build_commands(&self) -> Vec<Vec<String>> {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        let c = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // Only this layout's own namespaces: a later cluster's bridge and ports go into the
        // switch and ToR namespaces cluster 0 built.
        for ns in self.namespaces() {
            cmds.push(c(&format!("netns add {ns}")));
            cmds.push(c(&format!("-n {ns} link set lo up")));
        }
        let sw = &self.switch_ns;
        cmds.push(c(&format!("-n {sw} link add {} type bridge", self.bridge)));
        cmds.push(c(&format!("-n {sw} link set {} up", self.bridge)));
        let tor = &self.hosts[0];
        for (i, h) in self.hosts.iter().enumerate() {
            if let Uplink::Routed {
                tor_iface,
                tor_v4,
                tor_v6,
            } = &h.uplink
            {
                // A point-to-point link created in the ToR, one end moved to the node.
                let t = &tor.netns;
                cmds.push(c(&format!(
                    "-n {t} link add {tor_iface} type veth peer name {} netns {}",
                    h.iface, h.netns
                )));
                cmds.push(c(&format!("-n {t} addr add {tor_v4} dev {tor_iface}")));
                cmds.push(c(&format!(
                    "-n {t} addr add {TOR_PEER_V4}/32 dev {tor_iface}"
                )));
                cmds.push(c(&format!(
                    "-n {t} addr add {tor_v6} dev {tor_iface} nodad"
                )));
                cmds.push(c(&format!("-n {t} link set {tor_iface} up")));
                push_addresses(&mut cmds, h);
                // The ToR's BGP address is on the link (the BGP subnet tables route `default
                // via` it).
                cmds.push(c(&format!(
                    "-n {} route add {TOR_PEER_V4}/32 dev {} scope link",
                    h.netns, h.iface
                )));
                continue;
            }
            // Created inside the switch namespace, one end moved to the host: nothing touches the
            // host's own namespace.
            let port = match self.cluster {
                0 => format!("p{i}"),
                n => format!("c{n}p{i}"),
            };
            cmds.push(c(&format!(
                "-n {sw} link add {port} type veth peer name {} netns {}",
                h.iface, h.netns
            )));
            cmds.push(c(&format!(
                "-n {sw} link set {port} master {} up",
                self.bridge
            )));
            push_addresses(&mut cmds, h);
        }
        if self.builds_shared() {
            self.push_outside(&mut cmds);
        }
        // Hosts on the segment use the ToR as their gateway (nodes' default route picks the
        // interfaces hybridnet uses).
        for h in self.hosts.iter().skip(1) {
            let (gw4, gw6) = h.gateways(&self.net);
            cmds.push(c(&format!("-n {} route add default via {gw4}", h.netns)));
            cmds.push(c(&format!("-n {} -6 route add default via {gw6}", h.netns)));
        }
        cmds
    }

    /// The outside host's link to the ToR and its default routes.
    fn push_outside(&self, cmds: &mut Vec<Vec<String>>) {
        let c = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let tor = &self.hosts[0];
        cmds.push(c(&format!(
            "-n {} link add {} type veth peer name {} netns {}",
            tor.netns, self.tor_outside_iface, self.outside.iface, self.outside.netns
        )));
        cmds.push(c(&format!(
            "-n {} addr add {} dev {}",
            tor.netns, self.tor_outside_v4, self.tor_outside_iface
        )));
        cmds.push(c(&format!(
            "-n {} addr add {} dev {} nodad",
            tor.netns, self.tor_outside_v6, self.tor_outside_iface
        )));
        cmds.push(c(&format!(
            "-n {} link set {} up",
            tor.netns, self.tor_outside_iface
        )));
        push_addresses(cmds, &self.outside);
        cmds.push(c(&format!(
            "-n {} route add default via {OUTSIDE_V4}.1",
            self.outside.netns
        )));
        cmds.push(c(&format!(
            "-n {} -6 route add default via {OUTSIDE_V6}1",
            self.outside.netns
        )));
    }
}

/// bird2's configuration for the ToR when any of `layouts` (the clusters of one lab) has BGP
/// nodes: one passive eBGP session per BGP node (IPv4 and IPv6 unicast over one IPv4 session,
/// graceful restart), every learned route installed in the ToR's kernel, nothing announced back
/// (the nodes install no learned routes anyway).
pub fn tor_bird_config(layouts: &[Layout]) -> Option<String> {
    let mut bgp = layouts
        .iter()
        .flat_map(|l| l.bgp_nodes().map(move |h| (l, h)))
        .peekable();
    bgp.peek()?;
    let mut c = format!(
        "router id {TOR_PEER_V4};\n\
         protocol device {{ }}\n\
         protocol kernel kernel4 {{ ipv4 {{ export all; }}; }}\n\
         protocol kernel kernel6 {{ ipv6 {{ export all; }}; }}\n"
    );
    for (l, h) in bgp {
        c.push_str(&format!(
            "protocol bgp {name} {{\n  local {TOR_PEER_V4} as {TOR_AS};\n  neighbor {ip} as {BGP_NODE_AS};\n  \
             passive on;\n  error wait time 1, 2;\n  graceful restart on;\n  \
             ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
            name = l.host_name(h),
            ip = h.ip4().unwrap_or_default(),
        ));
    }
    Some(c)
}

fn push_addresses(cmds: &mut Vec<Vec<String>>, h: &Host) {
    let c = |s: String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    if let Some(a) = &h.v4 {
        cmds.push(c(format!("-n {} addr add {a} dev {}", h.netns, h.iface)));
    }
    if let Some(a) = &h.v6 {
        cmds.push(c(format!(
            "-n {} addr add {a} dev {} nodad",
            h.netns, h.iface
        )));
    }
    cmds.push(c(format!("-n {} link set {} up", h.netns, h.iface)));
}

/// Sysctls per namespace: routers forward.
pub fn sysctls(layout: &Layout) -> Vec<(String, &'static str, &'static str)> {
    let mut v = Vec::new();
    for h in &layout.hosts {
        if matches!(h.role, Role::Tor | Role::Node(_)) {
            v.push((h.netns.clone(), "net.ipv4.ip_forward", "1"));
            v.push((h.netns.clone(), "net.ipv6.conf.all.forwarding", "1"));
        }
        if h.role == Role::Tor {
            // Explicit, in case the host's settings are inherited (devconf_inherit_init_net):
            // traffic of BGP pods reaches the ToR on per-node links, with sources that only
            // bird's routes explain; strict reverse-path filtering would drop it.
            v.push((h.netns.clone(), "net.ipv4.conf.all.rp_filter", "0"));
            v.push((h.netns.clone(), "net.ipv4.conf.default.rp_filter", "0"));
        }
    }
    v
}

/// Builds the lab's namespaces and wires; on any failure removes what it built.
pub fn build(layout: &Layout) -> anyhow::Result<()> {
    let result = (|| {
        for cmd in layout.build_commands() {
            crate::netns::ip(&cmd)?;
            // Right after a namespace exists: no duplicate address detection, so addresses (and
            // link-local ones, which neighbour discovery needs) are usable at once.
            if cmd[0] == "netns" {
                for key in [
                    "net.ipv6.conf.all.accept_dad",
                    "net.ipv6.conf.default.accept_dad",
                ] {
                    crate::netns::sysctl(&cmd[2], key, "0")?;
                }
            }
        }
        for (ns, key, value) in sysctls(layout) {
            crate::netns::sysctl(&ns, key, value)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = destroy(&layout.id);
    }
    result
}

/// Removes every namespace of lab `id` (whatever exists of it: also after a crash). Links go with
/// their namespaces.
pub fn destroy(id: &str) -> anyhow::Result<()> {
    let mut first_err = None;
    for ns in crate::netns::list_with_prefix(&format!("{NS_PREFIX}{id}-"))? {
        if let Err(e) = crate::netns::delete(&ns) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_unique_and_in_test_ranges() {
        let l = layout("7", 3);
        assert_eq!(l.nodes().count(), 3);
        let mut ns = l.namespaces();
        let n = ns.len();
        ns.sort();
        ns.dedup();
        assert_eq!(ns.len(), n, "namespace names are unique");
        assert!(
            ns.iter()
                .all(|n| n.starts_with("hl7-") && n.len() <= 15 + 10)
        );
        for h in l.hosts.iter().chain([&l.outside]) {
            assert!(h.v4.as_deref().unwrap().starts_with("198.1"), "{h:?}");
            assert!(h.v6.as_deref().unwrap().starts_with("fd00:"), "{h:?}");
        }
        assert_eq!(l.host(&Role::Node(2)).unwrap().ip4(), Some("198.18.0.12"));
    }

    #[test]
    fn bgp_nodes_get_their_own_routed_links() {
        let l = layout_with("3", 2, 2);
        let bgp: Vec<_> = l.bgp_nodes().collect();
        assert_eq!(bgp.len(), 2);
        assert_eq!(bgp[0].role, Role::Node(3));
        assert_eq!(bgp[1].role, Role::Node(4));
        assert_eq!(bgp[0].ip4(), Some("198.18.2.1"));
        assert_eq!(bgp[1].ip4(), Some("198.18.2.3"));
        assert_eq!(bgp[1].ip6(), Some("fd00:2:2::2"));
        let cmds: Vec<String> = l.build_commands().iter().map(|c| c.join(" ")).collect();
        // No bridge port for a BGP node: its only link goes to the ToR.
        for h in &bgp {
            assert!(
                !cmds
                    .iter()
                    .any(|c| c.contains("master br0") && c.contains(&format!("netns {}", h.netns))),
                "{} is on the segment",
                h.netns
            );
            assert!(cmds.iter().any(|c| c.starts_with("-n hl3-tor link add bgp")
                && c.ends_with(&format!("netns {}", h.netns))));
            assert!(cmds.contains(&format!(
                "-n {} route add 198.18.1.1/32 dev eth0 scope link",
                h.netns
            )));
        }
        assert!(cmds.contains(&"-n hl3-node4 route add default via 198.18.2.2".to_string()));
        assert!(cmds.contains(&"-n hl3-node4 -6 route add default via fd00:2:2::1".to_string()));
        assert!(cmds.contains(&"-n hl3-node1 route add default via 198.18.0.1".to_string()));
        // Every address is unique across the lab.
        let mut addrs: Vec<String> = l
            .hosts
            .iter()
            .flat_map(|h| [h.ip4(), h.ip6()])
            .flatten()
            .map(str::to_string)
            .collect();
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n);
    }

    #[test]
    fn bird_peers_with_every_bgp_node_and_only_then() {
        assert_eq!(layout_with("1", 3, 0).tor_bird_config(), None);
        let conf = layout_with("1", 1, 2).tor_bird_config().unwrap();
        assert!(conf.contains("protocol bgp node2 {"), "{conf}");
        assert!(conf.contains("neighbor 198.18.2.1 as 65001;"), "{conf}");
        assert!(conf.contains("protocol bgp node3 {"), "{conf}");
        assert!(conf.contains("neighbor 198.18.2.3 as 65001;"), "{conf}");
        assert_eq!(conf.matches("local 198.18.1.1 as 65000;").count(), 2);
        assert!(!conf.contains("node1"), "{conf}");
    }

    #[test]
    fn a_second_cluster_has_its_own_segment_hosts_and_links() {
        let a = cluster_layout("5", 0, 2, 1);
        let b = cluster_layout("5", 1, 2, 1);
        assert_eq!(
            a,
            layout_with("5", 2, 1),
            "cluster 0 is the one-cluster lab"
        );
        // Its own namespaces only; the switch, ToR and outside host are cluster 0's.
        assert_eq!(
            b.namespaces(),
            ["hl5-c1cp", "hl5-c1node1", "hl5-c1node2", "hl5-c1node3"]
        );
        assert_eq!(b.tor().netns, "hl5-tor");
        assert_eq!(b.switch_ns, a.switch_ns);
        assert_eq!(
            b.host(&Role::ControlPlane).unwrap().ip4(),
            Some("198.18.16.2")
        );
        assert_eq!(b.host(&Role::Node(1)).unwrap().ip6(), Some("fd00:16::11"));
        // The BGP links go on after cluster 0's.
        assert_eq!(b.host(&Role::Node(3)).unwrap().ip4(), Some("198.18.2.3"));
        let cmds: Vec<String> = b.build_commands().iter().map(|c| c.join(" ")).collect();
        for shared in ["hl5-sw", "hl5-tor", "hl5-out"] {
            assert!(!cmds.contains(&format!("netns add {shared}")), "{cmds:#?}");
        }
        assert!(cmds.contains(&"-n hl5-sw link add br1 type bridge".to_string()));
        assert!(cmds.contains(
            &"-n hl5-sw link add c1p0 type veth peer name seg1 netns hl5-tor".to_string()
        ));
        assert!(cmds.contains(&"-n hl5-tor addr add 198.18.16.1/24 dev seg1".to_string()));
        assert!(cmds.contains(
            &"-n hl5-tor link add bgp1 type veth peer name eth0 netns hl5-c1node3".to_string()
        ));
        assert!(cmds.contains(&"-n hl5-c1node1 route add default via 198.18.16.1".to_string()));
        assert!(cmds.contains(&"-n hl5-c1node1 -6 route add default via fd00:16::1".to_string()));
        assert!(!cmds.iter().any(|c| c.contains("hl5-out")), "{cmds:#?}");
        // No address, namespace, port or ToR interface of one cluster is the other's.
        let mut addrs: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|l| l.hosts.iter().filter(|h| h.role != Role::Tor))
            .flat_map(|h| [h.ip4(), h.ip6()])
            .flatten()
            .map(str::to_string)
            .collect();
        addrs.extend(
            [&a, &b]
                .iter()
                .flat_map(|l| [l.tor().v4.clone().unwrap(), l.tor().v6.clone().unwrap()]),
        );
        let mut names = a.namespaces();
        names.extend(b.namespaces());
        let mut ifaces: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|l| l.build_commands())
            .filter(|c| c.len() > 3 && c[2] == "link" && c[3] == "add")
            .map(|c| format!("{} {}", c[1], c[4]))
            .collect();
        for v in [&mut addrs, &mut names, &mut ifaces] {
            let n = v.len();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), n, "{v:?}");
        }
        // One bird configuration for the ToR peers with the BGP nodes of both clusters.
        let conf = tor_bird_config(&[a, b]).unwrap();
        assert!(conf.contains("protocol bgp node3 {"), "{conf}");
        assert!(conf.contains("protocol bgp c1node3 {"), "{conf}");
        assert!(conf.contains("neighbor 198.18.2.3 as 65001;"), "{conf}");
    }

    #[test]
    fn the_clusters_ranges_share_no_address() {
        let ranges: Vec<(&str, u32)> = CLUSTER_NETS
            .iter()
            .flat_map(|n| {
                [(n.overlay_v4, 0), (n.bgp_v4, 0)]
                    .into_iter()
                    .chain([(n.segment_v4, 24)])
            })
            .collect();
        let parse = |(r, len): (&str, u32)| -> (u32, u32) {
            let (ip, len) = match r.split_once('/') {
                Some((ip, l)) => (ip.to_string(), l.parse().unwrap()),
                None => (format!("{r}.0"), len),
            };
            let ip: std::net::Ipv4Addr = ip.parse().unwrap();
            let start = u32::from(ip);
            (start, start + (1u32 << (32 - len)) - 1)
        };
        let spans: Vec<(u32, u32)> = ranges.iter().copied().map(parse).collect();
        for (i, a) in spans.iter().enumerate() {
            for (j, b) in spans.iter().enumerate().skip(i + 1) {
                assert!(
                    a.1 < b.0 || b.1 < a.0,
                    "{:?} and {:?} overlap",
                    ranges[i],
                    ranges[j]
                );
            }
        }
        // IPv6: every range lies in its own fd00:X::/32 (a /64 segment, /112 subnets).
        let mut v6: Vec<u16> = CLUSTER_NETS
            .iter()
            .flat_map(|n| [n.segment_v6, n.overlay_v6, n.bgp_v6])
            .map(|p| {
                let ip: std::net::Ipv6Addr = p.trim_end_matches("/112").parse().unwrap();
                ip.segments()[1]
            })
            .collect();
        let n = v6.len();
        v6.sort();
        v6.dedup();
        assert_eq!(v6.len(), n, "two IPv6 ranges share a /32");
    }

    #[test]
    fn no_command_touches_the_host_namespace() {
        for cmd in layout_with("1", 2, 2).build_commands() {
            let ok = cmd[0] == "-n" || (cmd[0] == "netns" && cmd[1] == "add");
            assert!(ok, "{cmd:?} would run in the host namespace");
        }
    }
}

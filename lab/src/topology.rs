//! The lab's hosts and wires as plain data, and the `ip` commands that build and remove them.
//!
//! Every host is a network namespace named `hl<id>-<role>`; one namespace holds a bridge, the L2
//! segment that the control plane, the ToR and the nodes share; the outside host hangs off the ToR on
//! its own link. BGP nodes are not on the segment: each has its own routed point-to-point link to the
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

    /// The gateways of the host's default routes (v4, v6).
    fn gateways(&self) -> (String, String) {
        match &self.uplink {
            Uplink::Routed { tor_v4, tor_v6, .. } => (strip_len(tor_v4), strip_len(tor_v6)),
            Uplink::Segment => (format!("{SEGMENT_V4}.1"), format!("{SEGMENT_V6}1")),
        }
    }
}

fn strip_len(a: &str) -> String {
    a.split('/').next().unwrap_or(a).to_string()
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub id: String,
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
    let ns = |role: &Role| format!("{NS_PREFIX}{id}-{role}");
    let mut hosts = vec![
        Host {
            role: Role::Tor,
            netns: ns(&Role::Tor),
            iface: "eth0".into(),
            v4: Some(format!("{SEGMENT_V4}.1/24")),
            v6: Some(format!("{SEGMENT_V6}1/64")),
            uplink: Uplink::Segment,
        },
        Host {
            role: Role::ControlPlane,
            netns: ns(&Role::ControlPlane),
            iface: "eth0".into(),
            v4: Some(format!("{SEGMENT_V4}.2/24")),
            v6: Some(format!("{SEGMENT_V6}2/64")),
            uplink: Uplink::Segment,
        },
    ];
    for n in 1..=nodes {
        let role = Role::Node(n);
        hosts.push(Host {
            netns: ns(&role),
            role,
            iface: "eth0".into(),
            v4: Some(format!("{SEGMENT_V4}.{}/24", 10 + n)),
            v6: Some(format!("{SEGMENT_V6}{:x}/64", 0x10 + n)),
            uplink: Uplink::Segment,
        });
    }
    for k in 0..bgp_nodes {
        let role = Role::Node(nodes + 1 + k);
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
        switch_ns: ns(&Role::Switch),
        bridge: "br0".into(),
        hosts,
        outside: Host {
            role: Role::Outside,
            netns: ns(&Role::Outside),
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

    /// bird2's configuration for the ToR when the lab has BGP nodes: one passive eBGP session per
    /// BGP node (IPv4 and IPv6 unicast over one IPv4 session, graceful restart), every learned
    /// route installed in the ToR's kernel, nothing announced back (the nodes install no learned
    /// routes anyway).
    pub fn tor_bird_config(&self) -> Option<String> {
        let mut bgp = self.bgp_nodes().peekable();
        bgp.peek()?;
        let mut c = format!(
            "router id {TOR_PEER_V4};\n\
             protocol device {{ }}\n\
             protocol kernel kernel4 {{ ipv4 {{ export all; }}; }}\n\
             protocol kernel kernel6 {{ ipv6 {{ export all; }}; }}\n"
        );
        for h in bgp {
            c.push_str(&format!(
                "protocol bgp {role} {{\n  local {TOR_PEER_V4} as {TOR_AS};\n  neighbor {ip} as {BGP_NODE_AS};\n  \
                 passive on;\n  error wait time 1, 2;\n  graceful restart on;\n  \
                 ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
                role = h.role,
                ip = h.ip4().unwrap_or_default(),
            ));
        }
        Some(c)
    }

    pub fn host(&self, role: &Role) -> Option<&Host> {
        self.hosts
            .iter()
            .chain(std::iter::once(&self.outside))
            .find(|h| h.role == *role)
    }

    /// Every namespace of the lab, the switch first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.switch_ns.clone()];
        v.extend(self.hosts.iter().map(|h| h.netns.clone()));
        v.push(self.outside.netns.clone());
        v
    }

    /// The `ip` commands that build the lab, in order (each a list of arguments to `ip`).
    pub fn build_commands(&self) -> Vec<Vec<String>> {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        let c = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
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
            let port = format!("p{i}");
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
        push_addresses(&mut cmds, &self.outside);
        cmds.push(c(&format!(
            "-n {} route add default via {OUTSIDE_V4}.1",
            self.outside.netns
        )));
        cmds.push(c(&format!(
            "-n {} -6 route add default via {OUTSIDE_V6}1",
            self.outside.netns
        )));
        // Hosts on the segment use the ToR as their gateway (nodes' default route picks the
        // interfaces hybridnet uses).
        for h in self.hosts.iter().skip(1) {
            let (gw4, gw6) = h.gateways();
            cmds.push(c(&format!("-n {} route add default via {gw4}", h.netns)));
            cmds.push(c(&format!("-n {} -6 route add default via {gw6}", h.netns)));
        }
        cmds
    }
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
    fn no_command_touches_the_host_namespace() {
        for cmd in layout_with("1", 2, 2).build_commands() {
            let ok = cmd[0] == "-n" || (cmd[0] == "netns" && cmd[1] == "add");
            assert!(ok, "{cmd:?} would run in the host namespace");
        }
    }
}

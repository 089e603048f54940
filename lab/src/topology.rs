//! The lab's hosts and wires as plain data, and the `ip` commands that build and remove them.
//!
//! Every host is a network namespace named `hl<id>-<role>`; one namespace holds a bridge, the L2
//! segment that the control plane, the ToR and the nodes share; the outside host hangs off the ToR on
//! its own link. Addresses come from the benchmarking ranges 198.18.0.0/15 and fd00::/8, never from
//! anything the host uses. Nothing is created in the host's own network namespace.

use std::fmt;

/// Prefix of every namespace the lab creates; `down` removes all namespaces with it.
pub const NS_PREFIX: &str = "hl";

/// The node segment: ToR .1, control plane .2, nodes from .11.
pub const SEGMENT_V4: &str = "198.18.0";
pub const SEGMENT_V6: &str = "fd00:18::";
/// The ToR <-> outside link.
pub const OUTSIDE_V4: &str = "198.19.0";
pub const OUTSIDE_V6: &str = "fd00:19::";

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

/// One lab host (a network namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub role: Role,
    pub netns: String,
    /// Interface name inside the host and its addresses (with prefix length).
    pub iface: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
}

impl Host {
    /// The IPv4 address without the prefix length.
    pub fn ip4(&self) -> Option<&str> {
        self.v4.as_deref().and_then(|a| a.split('/').next())
    }
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

/// Builds the layout of a lab with `nodes` node hosts.
pub fn layout(id: &str, nodes: u32) -> Layout {
    let ns = |role: &Role| format!("{NS_PREFIX}{id}-{role}");
    let mut hosts = vec![
        Host {
            role: Role::Tor,
            netns: ns(&Role::Tor),
            iface: "eth0".into(),
            v4: Some(format!("{SEGMENT_V4}.1/24")),
            v6: Some(format!("{SEGMENT_V6}1/64")),
        },
        Host {
            role: Role::ControlPlane,
            netns: ns(&Role::ControlPlane),
            iface: "eth0".into(),
            v4: Some(format!("{SEGMENT_V4}.2/24")),
            v6: Some(format!("{SEGMENT_V6}2/64")),
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
        for (i, h) in self.hosts.iter().enumerate() {
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
            cmds.push(c(&format!(
                "-n {} route add default via {SEGMENT_V4}.1",
                h.netns
            )));
            cmds.push(c(&format!(
                "-n {} -6 route add default via {SEGMENT_V6}1",
                h.netns
            )));
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
    fn no_command_touches_the_host_namespace() {
        for cmd in layout("1", 2).build_commands() {
            let ok = cmd[0] == "-n" || (cmd[0] == "netns" && cmd[1] == "add");
            assert!(ok, "{cmd:?} would run in the host namespace");
        }
    }
}

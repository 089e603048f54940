//! The iptables and ipset state upstream's daemon writes on a node, as the commands that write it:
//! for the tests of the cleanup and for the lab's migration scenario (nothing in the agent uses
//! it). Rendered from upstream's `pkg/daemon/iptables/iptables.go` `SyncRules` (v0.8.x) for a
//! node with an overlay network and, optionally, one VLAN forward interface: the ipsets
//! (`create -exist`, then refreshed through the `<name>-` temporary set and `swap`, as
//! `pkg/daemon/ipset/ipset.go` does), the chains and jump rules (`-N`, `-A`), then the chain
//! contents through `iptables-restore --noflush --counters`.

/// One command: program, arguments and what goes to its stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

/// What upstream's daemon knew when it wrote the state (one family).
#[derive(Debug, Clone)]
pub struct UpstreamNode<'a> {
    /// `legacy` or `nft`.
    pub backend: &'a str,
    pub ipv6: bool,
    /// The VXLAN device (`<parent>.vxlan<VNI>`).
    pub vxlan_if: &'a str,
    /// A VLAN forward interface of a local underlay network, if any.
    pub vlan_if: Option<&'a str>,
    pub overlay_cidrs: &'a [&'a str],
    pub underlay_cidrs: &'a [&'a str],
    /// Every node's local IPs (`HYBR-NODE-IP`); the first is this node's.
    pub node_ips: &'a [&'a str],
    pub local_pod_ips: &'a [&'a str],
}

fn step(program: &str, args: &[&str], stdin: Option<String>) -> Step {
    Step {
        program: program.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin,
    }
}

/// The commands, in the order upstream runs them.
pub fn upstream_steps(n: &UpstreamNode<'_>) -> Vec<Step> {
    let ipt = |tool: &str| {
        let fam = if n.ipv6 { "ip6tables" } else { "iptables" };
        format!("{fam}-{}{tool}", n.backend)
    };
    let set = |base: &str| {
        if n.ipv6 {
            format!("inet6:HYBR-{base}")
        } else {
            format!("HYBR-{base}")
        }
    };
    let mut out = Vec::new();
    let mut all: Vec<&str> = n.underlay_cidrs.to_vec();
    all.extend_from_slice(n.overlay_cidrs);
    all.extend_from_slice(n.node_ips);
    let local_underlay: &[&str] = if n.vlan_if.is_some() {
        n.underlay_cidrs
    } else {
        &[]
    };
    for (base, kind, members) in [
        ("OVERLAY-NET", "hash:net", n.overlay_cidrs),
        ("ALL", "hash:net", all.as_slice()),
        ("NODE-IP", "hash:ip", n.node_ips),
        ("LOCAL-UNDERLAY-NET", "hash:net", local_underlay),
        ("LOCAL-POD-IP", "hash:ip", n.local_pod_ips),
    ] {
        let name = set(base);
        let tmp = format!("{name}-");
        let fam: &[&str] = if n.ipv6 { &["family", "inet6"] } else { &[] };
        for s in [&name, &tmp] {
            let mut a = vec!["create", "-exist", s.as_str(), kind, "timeout", "0"];
            a.extend_from_slice(fam);
            out.push(step("ipset", &a, None));
        }
        let body: String = members
            .iter()
            .map(|m| format!("add -exist {tmp} {m}\n"))
            .collect();
        out.push(step("ipset", &["restore"], Some(body)));
        out.push(step("ipset", &["swap", &name, &tmp], None));
        out.push(step("ipset", &["destroy", &tmp], None));
    }
    for (table, chain, builtin, comment) in [
        (
            "nat",
            "HYBRIDNET-POSTROUTING",
            "POSTROUTING",
            "hybridnet postrouting rules",
        ),
        (
            "filter",
            "HYBRIDNET-FORWARD",
            "FORWARD",
            "hybridnet forward rules",
        ),
        (
            "mangle",
            "HYBRIDNET-PREROUTING",
            "PREROUTING",
            "hybridnet prerouting rules",
        ),
        (
            "mangle",
            "HYBRIDNET-POSTROUTING",
            "POSTROUTING",
            "hybridnet postrouting rules",
        ),
    ] {
        out.push(step(&ipt(""), &["-w", "-t", table, "-N", chain], None));
        out.push(step(
            &ipt(""),
            &[
                "-w",
                "-t",
                table,
                "-A",
                builtin,
                "-m",
                "comment",
                "--comment",
                comment,
                "-j",
                chain,
            ],
            None,
        ));
    }
    let reject = if n.ipv6 {
        "icmp6-addr-unreachable"
    } else {
        "icmp-host-unreachable"
    };
    let (overlay, node_ip, all_set) = (set("OVERLAY-NET"), set("NODE-IP"), set("ALL"));
    let mut s = String::new();
    s.push_str("*nat\n:HYBRIDNET-POSTROUTING - [0:0]\n");
    s.push_str("-A HYBRIDNET-POSTROUTING -m comment --comment \"skip masquerade if traffic is to local pod\" -o hybr+ -j RETURN\n");
    s.push_str(&format!("-A HYBRIDNET-POSTROUTING -m comment --comment \"hybridnet overlay nat-outgoing masquerade rule\" ! -o {} -m set --match-set {overlay} src -j MASQUERADE\n", n.vxlan_if));
    s.push_str("COMMIT\n*filter\n:HYBRIDNET-FORWARD - [0:0]\n");
    s.push_str(&format!("-A HYBRIDNET-FORWARD -m comment --comment \"hybridnet overlay vxlan if egress filter rule\" -o {} -m set ! --match-set {all_set} dst -m conntrack ! --ctstate RELATED,ESTABLISHED -j REJECT --reject-with {reject}\n", n.vxlan_if));
    if let Some(vlan) = n.vlan_if {
        s.push_str(&format!("-A HYBRIDNET-FORWARD -m comment --comment \"drop endless underlay traffic because of route loop\" -i {vlan} ! -o hybr+ -m mark ! --mark 0x4000/0x4000 -m set ! --match-set {} dst -m set --match-set {} dst -j DROP\n", set("LOCAL-POD-IP"), set("LOCAL-UNDERLAY-NET")));
    }
    s.push_str("COMMIT\n*mangle\n:HYBRIDNET-PREROUTING - [0:0]\n:HYBRIDNET-POSTROUTING - [0:0]\n:HYBRIDNET-FROM-RULE-SKIP - [0:0]\n:HYBRIDNET-POD-TO-NODE-MARK - [0:0]\n");
    let matches = format!(
        "-m addrtype ! --dst-type LOCAL -m set --match-set {overlay} src -m set --match-set {node_ip} dst -m conntrack ! --ctstate NEW,INVALID,DNAT,SNAT"
    );
    s.push_str(&format!("-A HYBRIDNET-PREROUTING -m comment --comment \"mark overlay pod -> node back traffic\" {matches} -j HYBRIDNET-POD-TO-NODE-MARK\n"));
    s.push_str(&format!("-A HYBRIDNET-POSTROUTING -m comment --comment \"remove overlay pod -> node back traffic mark\" {matches} -j MARK --set-xmark 0x0/0x20\n"));
    if let Some(own) = n.node_ips.first() {
        s.push_str(&format!("-A HYBRIDNET-POD-TO-NODE-MARK -m comment --comment \"do not mark DNATed traffic\" -m conntrack --ctorigdst {own} -j RETURN\n"));
    }
    s.push_str("-A HYBRIDNET-POD-TO-NODE-MARK -m comment --comment \"do pod -> node traffic mark\" -j MARK --set-xmark 0x20/0x20\n");
    s.push_str("-A HYBRIDNET-PREROUTING -m comment --comment \"match full NATed pod traffic\" -m conntrack --ctstate SNAT -j HYBRIDNET-FROM-RULE-SKIP\n");
    for c in n.underlay_cidrs.iter().chain(n.overlay_cidrs) {
        s.push_str(&format!("-A HYBRIDNET-FROM-RULE-SKIP -m conntrack --ctstate DNAT --ctreplsrc {c} -j MARK --set-xmark 0x40/0x40\n"));
    }
    s.push_str("COMMIT\n");
    out.push(step(
        &ipt("-restore"),
        &["-w", "--noflush", "--counters"],
        Some(s),
    ));
    out
}

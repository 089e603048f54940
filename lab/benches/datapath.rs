//! Benchmark: the pod data path in the lab (docs/benchmarks.md, "Lab: datapath").
//!
//! Brings up one lab (unique id, always taken down): node1 and node2 on the segment (VLAN underlay
//! nodes), node3 and node4 on routed links to the ToR (BGP nodes), the demo networks, and dual-stack
//! pods: overlay pods ov-a and ov-b on node1 and ov-c on node2, VLAN underlay pods ul-a (node1)
//! and ul-b (node2), BGP pods bgp-a (node3) and bgp-b (node4). As the alternative a user would
//! pick, Debian's `bridge` CNI plugin with `host-local` IPAM (containernetworking-plugins) is
//! invoked directly (CNI environment and stdin configuration) on node1 (br-a, br-b) and node2 (br-c),
//! cross-node by static routes between the two nodes. Two namespaces of its own joined by a veth
//! pair are the bare baseline.
//!
//! For every path (client -> server), IPv4 and IPv6, it measures TCP throughput with one and four
//! streams (iperf3), the rate of 64-byte UDP datagrams the receiver gets while the sender sends as
//! fast as it can (iperf3 -u -l 64 -b 0), and request/response latency (one 64-byte request and
//! response at a time over one TCP connection, `common::perf::rr_latency`): p50 and p99. A
//! throughput or rate is the 90th percentile of the receiver's 100 ms intervals: what the path
//! carries while the endpoints have a CPU (the moments the shared machine takes it from them
//! only lower the other intervals). Every path is measured once per round,
//! `BENCH_ROUNDS` (default 3) rounds one after the other, each test `BENCH_SECONDS` long
//! (default 1), so a drift of the machine's load hits every path alike; each row's ratio to the
//! wire (node1 -> node2 over the segment) is taken per round, against the wire in the same round,
//! and the median of the rounds is printed. The bench measures at nice -20 (iperf3, the
//! request/response threads); the lab's processes keep their priority.
//!
//! Then the per-layer costs (IPv4): each layer is switched off or on in the lab only (a notrack
//! table, a sysctl, ethtool, an MTU), the path it concerns measured right before and with it, and
//! the median of the per-round changes printed. `BENCH_LAYERS=0` skips them (or names the ones to
//! run: `BENCH_LAYERS=HostVethGro,FibFirstRules`, see `Toggle`); `BENCH_FAMILIES=4`
//! (or `6`) measures one family; `BENCH_PATHS=a,b` only the paths whose key is listed.
//!
//! Needs root, iperf3, ethtool, nft, the bridge and host-local plugins in /usr/lib/cni and the
//! workspace's binaries (`cargo build --workspace --bins`).
//! Run: `cargo bench -p hybridnet-lab --bench datapath --profile dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the failure report

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Lab;
use common::perf::{self, EchoServer, Iperf3Server, env_usize, median, percentile};
use hybridnet_lab::cni_runtime::{self, RuntimeConf};
use hybridnet_lab::demo::DemoPod;
use hybridnet_lab::kubelet::pod_netns;
use hybridnet_lab::topology::{self, Role};
use hybridnet_test_support::{Netns, sh, try_sh};
use serde_json::{Value, json};

const RR_PORT: u16 = 5300;
/// The niceness of the measuring threads and processes.
const NICE: &str = "-20";
const UDP_LEN: usize = 64;
const CNI_DIR: &str = "/usr/lib/cni";
/// Segment nodes (both VLAN underlay nodes) and BGP nodes of the lab.
const NODES: u32 = 2;
const BGP_NODES: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One end of a path: a network namespace and its addresses; for a pod, the node it is on.
#[derive(Clone, Debug)]
struct End {
    netns: String,
    node_ns: Option<String>,
    v4: Option<String>,
    v6: Option<String>,
}

impl End {
    fn ip(&self, f: Family) -> Option<&str> {
        match f {
            Family::V4 => self.v4.as_deref(),
            Family::V6 => self.v6.as_deref(),
        }
    }
}

/// A measured path: a key (for `BENCH_PATHS` and the layers), its label, client and server ends.
struct PathDef {
    key: &'static str,
    label: &'static str,
    client: &'static str,
    server: &'static str,
}

const PATHS: &[PathDef] = &[
    PathDef {
        key: "veth",
        label: "bare veth pair (own namespaces)",
        client: "veth-a",
        server: "veth-b",
    },
    PathDef {
        key: "wire",
        label: "wire: node1 -> node2 over the segment",
        client: "node1",
        server: "node2",
    },
    PathDef {
        key: "wire-tor",
        label: "wire via the ToR: node3 -> node4 (routed links)",
        client: "node3",
        server: "node4",
    },
    PathDef {
        key: "same-node",
        label: "pod-to-pod, one node (overlay pods, node1)",
        client: "ov-a",
        server: "ov-b",
    },
    PathDef {
        key: "vlan",
        label: "VLAN underlay, cross node",
        client: "ul-a",
        server: "ul-b",
    },
    PathDef {
        key: "bgp",
        label: "BGP underlay, cross node (via the ToR)",
        client: "bgp-a",
        server: "bgp-b",
    },
    PathDef {
        key: "overlay",
        label: "overlay (VXLAN), cross node",
        client: "ov-a",
        server: "ov-c",
    },
    PathDef {
        key: "ov-ul",
        label: "overlay -> underlay, cross node",
        client: "ov-a",
        server: "ul-b",
    },
    PathDef {
        key: "ul-ov",
        label: "underlay -> overlay, cross node",
        client: "ul-a",
        server: "ov-c",
    },
    PathDef {
        key: "outside",
        label: "overlay pod -> outside host (masqueraded)",
        client: "ov-a",
        server: "outside",
    },
    PathDef {
        key: "node-pod",
        label: "node1 -> underlay pod on node2 (one veth hop)",
        client: "node1",
        server: "ul-b",
    },
    PathDef {
        key: "bridge-same",
        label: "bridge+host-local, one node",
        client: "br-a",
        server: "br-b",
    },
    PathDef {
        key: "bridge-cross",
        label: "bridge+host-local, cross node (static routes)",
        client: "br-a",
        server: "br-c",
    },
];

/// One measurement of a path: Gbit/s with 1 and 4 streams, UDP datagrams/s received, round trip
/// p50 and p99 in µs. NaN for what was not measured.
#[derive(Clone, Copy, Debug)]
struct Sample {
    tcp1: f64,
    tcp4: f64,
    pps: f64,
    p50: f64,
    p99: f64,
}

impl Sample {
    const NONE: Sample = Sample {
        tcp1: f64::NAN,
        tcp4: f64::NAN,
        pps: f64::NAN,
        p50: f64::NAN,
        p99: f64::NAN,
    };
}

struct Ctx {
    ends: BTreeMap<&'static str, End>,
    secs: usize,
}

impl Ctx {
    fn end(&self, k: &str) -> &End {
        self.ends
            .get(k)
            .unwrap_or_else(|| panic!("no end {k} in the lab"))
    }

    fn measure(&self, p: &PathDef, f: Family, all: bool) -> Sample {
        let (c, s) = (self.end(p.client), self.end(p.server));
        let ip = s.ip(f).unwrap();
        let t = self.secs.to_string();
        let tcp = |streams: &str| {
            perf::iperf3(
                &c.netns,
                ip,
                &["-t", &t, "-P", streams, "--get-server-output"],
            )
            .map(|v| perf::p90_interval_received_bits(&v) / 1e9)
            .unwrap_or_else(|e| {
                eprintln!("datapath bench: {e}");
                f64::NAN
            })
        };
        let mut out = Sample::NONE;
        out.tcp1 = tcp("1");
        if all {
            out.tcp4 = tcp("4");
        }
        let len = UDP_LEN.to_string();
        out.pps = perf::iperf3(
            &c.netns,
            ip,
            &["-t", &t, "-u", "-l", &len, "-b", "0", "--get-server-output"],
        )
        .map(|v| perf::p90_interval_received_packets(&v, UDP_LEN))
        .unwrap_or_else(|e| {
            eprintln!("datapath bench: {e}");
            f64::NAN
        });
        let to = SocketAddr::new(ip.parse().unwrap(), RR_PORT);
        match perf::rr_latency(&c.netns, to, Duration::from_secs(self.secs as u64)) {
            Ok(v) if !v.is_empty() => {
                out.p50 = percentile(&v, 50.0).as_secs_f64() * 1e6;
                out.p99 = percentile(&v, 99.0).as_secs_f64() * 1e6;
            }
            Ok(_) => eprintln!("datapath bench: no round trip {} -> {to}", p.key),
            Err(e) => eprintln!("datapath bench: {e}"),
        }
        out
    }
}

/// The addresses of a pod's or host's list, split by family.
fn split_ips(ips: &[String]) -> (Option<String>, Option<String>) {
    let v4 = ips.iter().find(|i| !i.contains(':')).cloned();
    let v6 = ips.iter().find(|i| i.contains(':')).cloned();
    (v4, v6)
}

/// Two namespaces joined by a veth pair, with addresses 198.19.250.1-2/24 and fd00:250::1-2/64.
fn bare_veth() -> (Netns, Netns) {
    let (a, b) = (Netns::new("dpva"), Netns::new("dpvb"));
    a.ip(format!("link add eth0 type veth peer name eth0 netns {}", b.name).as_str());
    for (ns, n) in [(&a, 1), (&b, 2)] {
        ns.ip(format!("addr add 198.19.250.{n}/24 dev eth0").as_str());
        ns.ip(format!("addr add fd00:250::{n}/64 dev eth0 nodad").as_str());
        ns.ip("link set eth0 up");
    }
    (a, b)
}

/// A namespace attached by Debian's bridge plugin (host-local IPAM, `data_dir`) on the node whose
/// namespace is `node_ns`: bridge `dpbr0` as the gateway, no masquerading.
fn bridge_pod(node_ns: &str, tag: &str, subnets: (&str, &str), data_dir: &str) -> (Netns, End) {
    let ns = Netns::new(tag);
    for key in [
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ] {
        ns.exec(&["sysctl", "-qw", key]).unwrap();
    }
    // the lab's own CNI runtime runs the plugin (in the node's namespace, as a runtime would)
    let list = json!({
        "cniVersion": "1.0.0", "name": "dpbench",
        "plugins": [{"type": "bridge", "bridge": "dpbr0", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "dataDir": data_dir,
                     "ranges": [[{"subnet": subnets.0}], [{"subnet": subnets.1}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}],
    });
    let rt = RuntimeConf {
        container_id: ns.name.clone(),
        netns: ns.path().into(),
        ifname: "eth0".into(),
        args: vec![],
        cni_path: vec![CNI_DIR.into()],
        exec_netns: Some(node_ns.to_string()),
    };
    let result = cni_runtime::add(&list, &rt)
        .unwrap_or_else(|e| panic!("bridge plugin ADD on {node_ns}: {e}"));
    let ips: Vec<String> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["address"].as_str())
        .map(|a| a.split('/').next().unwrap().to_string())
        .collect();
    let (v4, v6) = split_ips(&ips);
    let end = End {
        netns: ns.name.clone(),
        node_ns: Some(node_ns.to_string()),
        v4,
        v6,
    };
    (ns, end)
}

/// Loads an nft script in a namespace.
fn nft_apply(netns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft -f in {netns}:\n{script}"
    );
}

/// Whether GRO is on for `dev` in `netns`.
fn gro_on(netns: &str, dev: &str) -> bool {
    sh(&["ip", "netns", "exec", netns, "ethtool", "-k", dev])
        .contains("generic-receive-offload: on")
}

/// The host end (in the node's namespace) of a pod's `eth0` veth.
fn host_veth(node_ns: &str, pod_ns: &str) -> String {
    let pod: Value =
        serde_json::from_str(&sh(&["ip", "-n", pod_ns, "-j", "link", "show", "eth0"])).unwrap();
    let peer = pod[0]["link_index"].as_u64().unwrap();
    let links: Value = serde_json::from_str(&sh(&["ip", "-n", node_ns, "-j", "link"])).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifindex"].as_u64() == Some(peer))
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no peer {peer} of {pod_ns}'s eth0 in {node_ns}"))
        .to_string()
}

/// What a per-layer row switches in the lab (never in the node agent's code).
#[derive(Clone, Copy, Debug)]
enum Toggle {
    /// A table `inet dpbench` with `notrack` in prerouting and output at raw priority on both
    /// nodes: no conntrack (nor NAT) for any packet there.
    Notrack,
    /// rp_filter strict (`net.ipv4.conf.all.rp_filter=1`) on both nodes; hybridnet sets 0.
    RpFilterStrict,
    /// TX checksum offload, TSO and GSO off on both pods' `eth0` (`ethtool -K`).
    PodOffloadsOff,
    /// GRO (on a veth: NAPI) flipped on both nodes' `eth0`: the lab's uplinks are veths, whose
    /// GRO is off by default, where a NIC has it on.
    UplinkGro,
    /// GRO flipped on both pods' host veths (veth's default is off).
    HostVethGro,
    /// GRO flipped on both pods' `eth0`.
    PodGro,
    /// `udp dport 8472 notrack` (the VXLAN port) in prerouting and output at raw priority on
    /// both nodes: no conntrack for the encapsulated packets between the nodes.
    VxlanNotrack,
    /// Hybridnet's two `mangle` rules that mark pod -> node replies, once more in a table of the
    /// lab, in the order they had before the FIB lookup moved last (`fib daddr type != local`
    /// first: one FIB lookup per packet and rule in prerouting and postrouting).
    FibFirstRules,
    /// Both pods' veths at MTU 1450 (the overlay's) instead of 1500.
    Mtu1450,
    /// Policy routing short-cut on both nodes: for each direction of the path a rule at
    /// preference 1 (`from SRC to DST`) straight into a table holding the one route the kernel
    /// chose (`ip route get`), instead of hybridnet's rules 1000-1003 and their tables.
    RuleBypass,
}

/// The table and preference of [`Toggle::RuleBypass`].
const BYPASS_TABLE: &str = "250";
const BYPASS_PREF: &str = "1";

struct Layer {
    label: &'static str,
    path: &'static str,
    toggle: Toggle,
}

const LAYERS: &[Layer] = &[
    Layer {
        label: "conntrack off (notrack on both nodes)",
        path: "vlan",
        toggle: Toggle::Notrack,
    },
    Layer {
        label: "conntrack off (notrack on both nodes)",
        path: "overlay",
        toggle: Toggle::Notrack,
    },
    Layer {
        label: "rp_filter strict on both nodes (hybridnet: off)",
        path: "vlan",
        toggle: Toggle::RpFilterStrict,
    },
    Layer {
        label: "TX checksum/TSO/GSO off in both pods",
        path: "vlan",
        toggle: Toggle::PodOffloadsOff,
    },
    Layer {
        label: "TX checksum/TSO/GSO off in both pods",
        path: "overlay",
        toggle: Toggle::PodOffloadsOff,
    },
    Layer {
        label: "GRO of the nodes' uplinks flipped (a NIC has it on)",
        path: "overlay",
        toggle: Toggle::UplinkGro,
    },
    Layer {
        label: "GRO of the pods' host veths flipped",
        path: "overlay",
        toggle: Toggle::HostVethGro,
    },
    Layer {
        label: "GRO of the pods' host veths flipped",
        path: "vlan",
        toggle: Toggle::HostVethGro,
    },
    Layer {
        label: "GRO of the pods' host veths flipped",
        path: "same-node",
        toggle: Toggle::HostVethGro,
    },
    Layer {
        label: "GRO of the pods' eth0 flipped",
        path: "overlay",
        toggle: Toggle::PodGro,
    },
    Layer {
        label: "conntrack off for VXLAN packets between nodes (udp 8472 notrack)",
        path: "overlay",
        toggle: Toggle::VxlanNotrack,
    },
    Layer {
        label: "pod -> node reply rules with the FIB lookup first, added once more",
        path: "overlay",
        toggle: Toggle::FibFirstRules,
    },
    Layer {
        label: "policy routing short-cut (one rule, one table)",
        path: "vlan",
        toggle: Toggle::RuleBypass,
    },
    Layer {
        label: "pod MTU 1450 instead of 1500",
        path: "vlan",
        toggle: Toggle::Mtu1450,
    },
];

impl Ctx {
    fn nodes_of(&self, p: &PathDef) -> Vec<String> {
        let mut v: Vec<String> = [p.client, p.server]
            .iter()
            .filter_map(|k| self.end(k).node_ns.clone())
            .collect();
        v.dedup();
        v
    }

    fn switch(&self, layer: &Layer, on: bool) {
        let p = PATHS.iter().find(|p| p.key == layer.path).unwrap();
        let nodes = self.nodes_of(p);
        let pods: Vec<&End> = [p.client, p.server].iter().map(|k| self.end(k)).collect();
        match layer.toggle {
            Toggle::Notrack | Toggle::VxlanNotrack | Toggle::FibFirstRules => {
                let body = match layer.toggle {
                    Toggle::Notrack => "chain pre { type filter hook prerouting priority raw; notrack; }\n\
                         chain out { type filter hook output priority raw; notrack; }\n"
                        .to_string(),
                    Toggle::VxlanNotrack => "chain pre { type filter hook prerouting priority raw; udp dport 8472 notrack; }\n\
                         chain out { type filter hook output priority raw; udp dport 8472 notrack; }\n"
                        .to_string(),
                    _ => {
                        // node_ip as in hybridnet's table: every node's addresses
                        let ips = |f: Family| {
                            (1..=NODES + BGP_NODES)
                                .filter_map(|n| self.end(&format!("node{n}")).ip(f).map(str::to_string))
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        let rule = |f: Family, net: &str| {
                            let ipf = if f == Family::V4 { "ip" } else { "ip6" };
                            format!(
                                "fib daddr type != local {ipf} saddr {net} {ipf} daddr {{ {} }} ct state established,related ct status & (snat | dnat) == 0",
                                ips(f)
                            )
                        };
                        let rules = format!(
                            "{}; {}",
                            rule(Family::V4, hybridnet_lab::demo::OVERLAY_V4),
                            rule(Family::V6, hybridnet_lab::demo::OVERLAY_V6)
                        );
                        format!(
                            "chain pre {{ type filter hook prerouting priority mangle; {rules}; }}\n\
                             chain post {{ type filter hook postrouting priority mangle; {rules}; }}\n"
                        )
                    }
                };
                for n in &nodes {
                    if on {
                        nft_apply(n, &format!("table inet dpbench {{\n{body}}}\n"));
                    } else {
                        sh(&[
                            "ip", "netns", "exec", n, "nft", "delete", "table", "inet", "dpbench",
                        ]);
                    }
                }
            }
            Toggle::RpFilterStrict => {
                for n in &nodes {
                    let v = if on { "1" } else { "0" };
                    for k in ["all", "default"] {
                        sh(&[
                            "ip",
                            "netns",
                            "exec",
                            n,
                            "sysctl",
                            "-qw",
                            &format!("net.ipv4.conf.{k}.rp_filter={v}"),
                        ]);
                    }
                }
            }
            Toggle::PodOffloadsOff => {
                let v = if on { "off" } else { "on" };
                for e in &pods {
                    sh(&[
                        "ip", "netns", "exec", &e.netns, "ethtool", "-K", "eth0", "tx", v, "tso",
                        v, "gso", v,
                    ]);
                }
            }
            Toggle::UplinkGro | Toggle::HostVethGro | Toggle::PodGro => {
                // flipped from the setting found, and flipped back
                for (ns, dev) in self.gro_devices(layer) {
                    let v = if gro_on(&ns, &dev) { "off" } else { "on" };
                    sh(&["ip", "netns", "exec", &ns, "ethtool", "-K", &dev, "gro", v]);
                }
            }
            Toggle::RuleBypass => {
                let (c, sv) = (self.end(p.client), self.end(p.server));
                for n in &nodes {
                    if !on {
                        for args in [
                            vec!["rule", "del", "pref", BYPASS_PREF],
                            vec!["rule", "del", "pref", BYPASS_PREF],
                            vec!["route", "flush", "table", BYPASS_TABLE],
                        ] {
                            let _ = try_sh(&[&["ip", "-n", n][..], &args].concat());
                        }
                        continue;
                    }
                    for (from, to) in [(c, sv), (sv, c)] {
                        let (src, dst) = (from.v4.as_deref().unwrap(), to.v4.as_deref().unwrap());
                        // the packet enters from the pod's host veth on its own node, else
                        // from the segment
                        let iif = if from.node_ns.as_deref() == Some(n.as_str()) {
                            host_veth(n, &from.netns)
                        } else {
                            "eth0".to_string()
                        };
                        let got: Value = serde_json::from_str(&sh(&[
                            "ip", "-n", n, "-j", "route", "get", dst, "from", src, "iif", &iif,
                        ]))
                        .unwrap();
                        let dev = got[0]["dev"].as_str().unwrap();
                        let mut route = vec!["ip", "-n", n, "route", "add", dst, "dev", dev];
                        if let Some(gw) = got[0]["gateway"].as_str() {
                            route.extend(["via", gw]);
                        }
                        route.extend(["table", BYPASS_TABLE]);
                        sh(&route);
                        sh(&[
                            "ip",
                            "-n",
                            n,
                            "rule",
                            "add",
                            "pref",
                            BYPASS_PREF,
                            "from",
                            src,
                            "to",
                            dst,
                            "lookup",
                            BYPASS_TABLE,
                        ]);
                    }
                }
            }
            Toggle::Mtu1450 => {
                let mtu = if on { "1450" } else { "1500" };
                for e in &pods {
                    sh(&["ip", "-n", &e.netns, "link", "set", "eth0", "mtu", mtu]);
                    if let Some(n) = &e.node_ns {
                        let dev = host_veth(n, &e.netns);
                        sh(&["ip", "-n", n, "link", "set", &dev, "mtu", mtu]);
                    }
                }
            }
        }
    }

    /// The devices a GRO layer flips: (namespace, interface).
    fn gro_devices(&self, layer: &Layer) -> Vec<(String, String)> {
        let p = PATHS.iter().find(|p| p.key == layer.path).unwrap();
        let pods: Vec<&End> = [p.client, p.server].iter().map(|k| self.end(k)).collect();
        match layer.toggle {
            Toggle::UplinkGro => self
                .nodes_of(p)
                .into_iter()
                .map(|n| (n, "eth0".to_string()))
                .collect(),
            Toggle::HostVethGro => pods
                .iter()
                .filter_map(|e| {
                    let n = e.node_ns.as_ref()?;
                    Some((n.clone(), host_veth(n, &e.netns)))
                })
                .collect(),
            Toggle::PodGro => pods
                .iter()
                .map(|e| (e.netns.clone(), "eth0".to_string()))
                .collect(),
            _ => vec![],
        }
    }

    /// What a layer's row says besides its label: for GRO, the setting it was flipped from.
    fn note(&self, layer: &Layer) -> String {
        let devs = self.gro_devices(layer);
        if devs.is_empty() {
            return String::new();
        }
        let on: Vec<bool> = devs.iter().map(|(ns, d)| gro_on(ns, d)).collect();
        match (on.iter().all(|x| *x), on.iter().any(|x| *x)) {
            (true, _) => " (on -> off)".into(),
            (false, false) => " (off -> on)".into(),
            _ => " (mixed, each flipped)".into(),
        }
    }

    /// Whether the toggle is still as set (the node agent may restore what it owns meanwhile).
    fn still_on(&self, layer: &Layer) -> bool {
        let p = PATHS.iter().find(|p| p.key == layer.path).unwrap();
        match layer.toggle {
            Toggle::RpFilterStrict => self.nodes_of(p).iter().all(|n| {
                try_sh(&[
                    "ip",
                    "netns",
                    "exec",
                    n,
                    "sysctl",
                    "-n",
                    "net.ipv4.conf.all.rp_filter",
                ])
                .is_ok_and(|v| v.trim() == "1")
            }),
            _ => true,
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * x)
    }
}

fn kpps(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.0}k", x / 1e3)
    }
}

/// A layer's change per round, as `variant / base - 1` of one measure.
fn change(pairs: &[(Sample, Sample)], get: fn(&Sample) -> f64) -> f64 {
    let v: Vec<f64> = pairs.iter().map(|(b, w)| get(w) / get(b) - 1.0).collect();
    median(&v)
}

fn signed(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:+.0}%", 100.0 * x)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the binary without it, and a
    // lab has no place in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("datapath bench: not run (run it with `cargo bench`)");
        return;
    }
    let bridge = format!("{CNI_DIR}/bridge");
    let host_local = format!("{CNI_DIR}/host-local");
    if !hybridnet_test_support::may_run(
        "datapath bench",
        &["iperf3", "ethtool", "nft", &bridge, &host_local],
    ) {
        return;
    }
    let secs = env_usize("BENCH_SECONDS", 1).max(1);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let families: Vec<Family> = match std::env::var("BENCH_FAMILIES").as_deref() {
        Ok("4") => vec![Family::V4],
        Ok("6") => vec![Family::V6],
        _ => vec![Family::V4, Family::V6],
    };
    let only: Option<Vec<String>> = std::env::var("BENCH_PATHS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    // BENCH_LAYERS: 0 none, unset or 1 all, else the toggles named (e.g. `HostVethGro,Notrack`)
    let layer_filter = std::env::var("BENCH_LAYERS").unwrap_or_else(|_| "1".into());
    let with_layer = |t: Toggle| match layer_filter.as_str() {
        "0" => false,
        "1" => true,
        names => names.split(',').any(|n| n == format!("{t:?}")),
    };
    let started = Instant::now();
    let load_before = loadavg();

    let lab = Lab::up("d", NODES, NODES, BGP_NODES);
    // The machine is shared with builds: this thread (and so every thread and process it starts
    // from here on: iperf3, the request/response threads) gets a higher priority than they have,
    // so a measurement is less a measure of the scheduler's share. The lab's own processes keep
    // theirs.
    let reniced = try_sh(&["renice", "-n", NICE, "-p", &std::process::id().to_string()]).is_ok();
    let layout = topology::layout_with(&lab.id, NODES, BGP_NODES);
    let node_ns = |n: u32| layout.host(&Role::Node(n)).unwrap().netns.clone();
    let pods = [
        ("ov-a", 1, "Overlay"),
        ("ov-b", 1, "Overlay"),
        ("ov-c", 2, "Overlay"),
        ("ul-a", 1, "Underlay"),
        ("ul-b", 2, "Underlay"),
        ("bgp-a", 3, "Underlay"),
        ("bgp-b", 4, "Underlay"),
    ];
    let demo: Vec<DemoPod> = pods
        .iter()
        .map(|&(name, n, t)| DemoPod {
            name,
            node: format!("node{n}"),
            network_type: t,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let running = rt.block_on(async {
        let client = hybridnet_lab::cluster::client_from(&lab.dirs().host_kubeconfig())
            .await
            .unwrap();
        hybridnet_lab::demo::create_networks(&client, true)
            .await
            .unwrap();
        hybridnet_lab::demo::create_pods(&client, &demo)
            .await
            .unwrap()
    });
    let mut ends: BTreeMap<&'static str, End> = BTreeMap::new();
    for (name, n, _) in pods {
        let (uid, ips) = &running[name];
        let (v4, v6) = split_ips(ips);
        ends.insert(
            name,
            End {
                netns: pod_netns(&lab.id, uid),
                node_ns: Some(node_ns(n)),
                v4,
                v6,
            },
        );
    }
    for (k, n) in [("node1", 1), ("node2", 2), ("node3", 3), ("node4", 4)] {
        let h = layout.host(&Role::Node(n)).unwrap();
        ends.insert(
            k,
            End {
                netns: h.netns.clone(),
                node_ns: None,
                v4: h.ip4().map(str::to_string),
                v6: h.ip6().map(str::to_string),
            },
        );
    }
    ends.insert(
        "outside",
        End {
            netns: layout.outside.netns.clone(),
            node_ns: None,
            v4: layout.outside.ip4().map(str::to_string),
            v6: layout.outside.ip6().map(str::to_string),
        },
    );
    let (va, vb) = bare_veth();
    for (k, ns, n) in [("veth-a", &va, 1), ("veth-b", &vb, 2)] {
        ends.insert(
            k,
            End {
                netns: ns.name.clone(),
                node_ns: None,
                v4: Some(format!("198.19.250.{n}")),
                v6: Some(format!("fd00:250::{n}")),
            },
        );
    }
    // The bridge baseline: 198.18.200.0/24 on node1, 198.18.201.0/24 on node2, routed to each
    // other over the segment.
    let data = tempfile::tempdir().unwrap();
    let data_dir = |n: u32| data.path().join(format!("node{n}")).display().to_string();
    let mut keep = vec![va, vb];
    for (k, n, tag, subnets) in [
        ("br-a", 1, "dpba", ("198.18.200.0/24", "fd00:200::/64")),
        ("br-b", 1, "dpbb", ("198.18.200.0/24", "fd00:200::/64")),
        ("br-c", 2, "dpbc", ("198.18.201.0/24", "fd00:201::/64")),
    ] {
        let (ns, end) = bridge_pod(&node_ns(n), tag, subnets, &data_dir(n));
        keep.push(ns);
        ends.insert(k, end);
    }
    for (n, other, v4, v6) in [
        (1, 2, "198.18.201.0/24", "fd00:201::/64"),
        (2, 1, "198.18.200.0/24", "fd00:200::/64"),
    ] {
        let h = layout.host(&Role::Node(other)).unwrap();
        let ns = node_ns(n);
        sh(&["ip", "-n", &ns, "route", "add", v4, "via", h.ip4().unwrap()]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            v6,
            "via",
            h.ip6().unwrap(),
        ]);
    }
    let ctx = Ctx { ends, secs };

    // Paths and families that are measured: both ends have the family and the server answers.
    let paths: Vec<&PathDef> = PATHS
        .iter()
        .filter(|p| only.as_ref().is_none_or(|o| o.iter().any(|k| k == p.key)))
        .collect();
    let mut rows: Vec<(&PathDef, Family)> = vec![];
    for p in &paths {
        for &f in &families {
            let (c, s) = (ctx.end(p.client), ctx.end(p.server));
            match (c.ip(f), s.ip(f)) {
                (Some(_), Some(ip)) if common::pings(&c.netns, ip) => rows.push((p, f)),
                (Some(_), Some(ip)) => {
                    eprintln!(
                        "datapath bench: {} {}: {ip} does not answer a ping from {}",
                        p.key,
                        f.name(),
                        p.client
                    )
                }
                _ => eprintln!("datapath bench: {} {}: no address", p.key, f.name()),
            }
        }
    }
    let mut servers = BTreeMap::new();
    for (p, _) in &rows {
        let s = ctx.end(p.server);
        servers.entry(s.netns.clone()).or_insert_with(|| {
            (
                Iperf3Server::start(&s.netns),
                EchoServer::start(&s.netns, RR_PORT).unwrap(),
            )
        });
    }
    // one short transfer per row first: servers listen, neighbours are resolved, the first
    // measured test is not the one that finds that out
    for (p, f) in &rows {
        let ip = ctx.end(p.server).ip(*f).unwrap();
        if let Err(e) = perf::iperf3(&ctx.end(p.client).netns, ip, &["-n", "1M"]) {
            eprintln!("datapath bench: warm-up {} {}: {e}", p.key, f.name());
        }
    }
    let layers: Vec<&Layer> = LAYERS
        .iter()
        .filter(|l| {
            with_layer(l.toggle)
                && rows
                    .iter()
                    .any(|(p, f)| p.key == l.path && *f == Family::V4)
        })
        .collect();

    let mut samples: BTreeMap<(&str, Family), Vec<Sample>> = BTreeMap::new();
    let mut layer_pairs: Vec<Vec<(Sample, Sample)>> = vec![vec![]; layers.len()];
    let mut loads = vec![];
    for round in 0..rounds {
        eprintln!(
            "datapath bench: round {}/{rounds}, load average {}",
            round + 1,
            loadavg()
        );
        loads.push(loadavg());
        for (p, f) in &rows {
            let s = ctx.measure(p, *f, true);
            eprintln!("  {} {}: {s:?}", p.key, f.name());
            samples.entry((p.key, *f)).or_default().push(s);
        }
        for (i, l) in layers.iter().enumerate() {
            let p = PATHS.iter().find(|p| p.key == l.path).unwrap();
            let base = ctx.measure(p, Family::V4, false);
            ctx.switch(l, true);
            let with = ctx.measure(p, Family::V4, false);
            let held = ctx.still_on(l);
            ctx.switch(l, false);
            eprintln!("  layer {} on {}: {base:?} -> {with:?}", l.label, l.path);
            if held {
                layer_pairs[i].push((base, with));
            } else {
                eprintln!("  (not counted: the node agent restored the setting meanwhile)");
            }
        }
    }
    drop(servers);

    // The table: medians over the rounds; ratios per round against the wire of the same round.
    let med = |k: &str, f: Family, get: fn(&Sample) -> f64| -> f64 {
        samples
            .get(&(k, f))
            .map_or(f64::NAN, |v| median(&v.iter().map(get).collect::<Vec<_>>()))
    };
    let ratio = |k: &str, f: Family, base: &str, get: fn(&Sample) -> f64| -> f64 {
        match (samples.get(&(k, f)), samples.get(&(base, f))) {
            (Some(a), Some(b)) => median(
                &a.iter()
                    .zip(b)
                    .map(|(x, y)| get(x) / get(y))
                    .collect::<Vec<_>>(),
            ),
            _ => f64::NAN,
        }
    };
    let tcp1 = |s: &Sample| s.tcp1;
    let tcp4 = |s: &Sample| s.tcp4;
    let pps = |s: &Sample| s.pps;
    let p50 = |s: &Sample| s.p50;
    let p99 = |s: &Sample| s.p99;
    println!(
        "\ndatapath bench: lab {}, {rounds} rounds of {secs} s per test, measuring at nice {}, load average {load_before} before, per round: {}",
        lab.id,
        if reniced { NICE } else { "0 (renice failed)" },
        loads.join(" | ")
    );
    println!(
        "medians over the rounds; \"vs wire\": per round against node1 -> node2 of the same round and family, median\n"
    );
    println!(
        "| path | family | TCP 1 stream vs wire | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B pps received (vs wire) | RR p50 / p99 µs | p99 vs wire |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|");
    for (p, f) in &rows {
        if !samples.contains_key(&(p.key, *f)) {
            continue;
        }
        println!(
            "| {} | {} | {} | {} | {} | {} ({}) | {} / {} | {} |",
            p.label,
            f.name(),
            pct(ratio(p.key, *f, "wire", tcp1)),
            fmt(med(p.key, *f, tcp1), 2),
            fmt(med(p.key, *f, tcp4), 2),
            kpps(med(p.key, *f, pps)),
            pct(ratio(p.key, *f, "wire", pps)),
            fmt(med(p.key, *f, p50), 0),
            fmt(med(p.key, *f, p99), 0),
            pct(ratio(p.key, *f, "wire", p99)),
        );
    }

    // The goals (docs/benchmarks.md, Lab: datapath), each against the wire (and the BGP path also against its own
    // routed wire), and against the bridge baseline on the same shape of path.
    println!("\ngoals (median of per-round ratios):");
    for &f in &families {
        let goal =
            |what: &str, k: &str, base: &str, get: fn(&Sample) -> f64, ok: fn(f64) -> bool| {
                let r = ratio(k, f, base, get);
                if !r.is_nan() {
                    println!(
                        "  {} {what}: {} -> {}",
                        f.name(),
                        pct(r),
                        if ok(r) { "holds" } else { "NOT met" }
                    );
                }
            };
        goal("VLAN underlay / wire >= 95%", "vlan", "wire", tcp1, |r| {
            r >= 0.95
        });
        goal("BGP underlay / wire >= 95%", "bgp", "wire", tcp1, |r| {
            r >= 0.95
        });
        goal(
            "BGP underlay / wire via the ToR >= 95%",
            "bgp",
            "wire-tor",
            tcp1,
            |r| r >= 0.95,
        );
        goal("overlay / wire >= 90%", "overlay", "wire", tcp1, |r| {
            r >= 0.90
        });
        goal(
            "pod-to-pod (one node) p99 / wire p99 <= 110%",
            "same-node",
            "wire",
            p99,
            |r| r <= 1.10,
        );
        goal(
            "VLAN underlay p99 / wire p99 <= 110%",
            "vlan",
            "wire",
            p99,
            |r| r <= 1.10,
        );
        goal(
            "pod-to-pod (one node) / bridge one node >= 100%",
            "same-node",
            "bridge-same",
            tcp1,
            |r| r >= 1.0,
        );
        goal(
            "VLAN underlay / bridge cross node >= 100%",
            "vlan",
            "bridge-cross",
            tcp1,
            |r| r >= 1.0,
        );
        goal(
            "pod-to-pod (one node) p99 / bridge p99 <= 100%",
            "same-node",
            "bridge-same",
            p99,
            |r| r <= 1.0,
        );
        goal(
            "VLAN underlay p99 / bridge cross node p99 <= 100%",
            "vlan",
            "bridge-cross",
            p99,
            |r| r <= 1.0,
        );
    }

    // What bounds the paths here, read in the same run: the CPUs every endpoint and every hop
    // share, and what the lab's uplinks (veths) can offload.
    let features = sh(&["ip", "netns", "exec", &node_ns(1), "ethtool", "-k", "eth0"]);
    let feature = |name: &str| {
        features
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "\nbounds in this run: {} CPUs for both endpoints and every hop; node1's uplink eth0 (a veth): tx-udp_tnl-segmentation {}, generic-receive-offload {}, tcp-segmentation-offload {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        feature("tx-udp_tnl-segmentation"),
        feature("generic-receive-offload"),
        feature("tcp-segmentation-offload"),
    );
    if !layers.is_empty() {
        println!(
            "\nper-layer cost (IPv4; per round the path right before and with the change, median of the changes):\n"
        );
        println!("| layer | path | TCP 1 stream | UDP 64 B pps | RR p50 | RR p99 | rounds |");
        println!("|---|---|--:|--:|--:|--:|--:|");
        for (l, pairs) in layers.iter().zip(&layer_pairs) {
            println!(
                "| {}{} | {} | {} | {} | {} | {} | {} |",
                l.label,
                ctx.note(l),
                l.path,
                signed(change(pairs, tcp1)),
                signed(change(pairs, pps)),
                signed(change(pairs, p50)),
                signed(change(pairs, p99)),
                pairs.len()
            );
        }
    }
    // Layers read off the main table (same rounds): the veth hops and forwarding, VXLAN.
    println!("\nfrom the main table (IPv4, per round, median):");
    for (what, k, base) in [
        (
            "one veth hop + forwarding (node1 -> pod on node2 vs wire)",
            "node-pod",
            "wire",
        ),
        (
            "two veth hops + forwarding (VLAN underlay vs wire)",
            "vlan",
            "wire",
        ),
        (
            "VXLAN encapsulation incl. MTU 1450 (overlay vs VLAN underlay, same nodes)",
            "overlay",
            "vlan",
        ),
        ("the ToR hop (wire via the ToR vs wire)", "wire-tor", "wire"),
        ("the lab segment (wire vs bare veth pair)", "wire", "veth"),
    ] {
        let f = Family::V4;
        println!(
            "  {what}: TCP 1 stream {}, UDP pps {}, RR p50 {}, p99 {}",
            signed(ratio(k, f, base, tcp1) - 1.0),
            signed(ratio(k, f, base, pps) - 1.0),
            signed(ratio(k, f, base, p50) - 1.0),
            signed(ratio(k, f, base, p99) - 1.0),
        );
    }
    println!(
        "\ntotal {:.0} s, load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    drop(keep);
    drop(data);
}

//! Shared helpers of the node integration tests: privileged-test gate, network namespaces with
//! Drop cleanup, `ip`/`nft` runners and API object builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use hybridnet_api::constants::label;
use hybridnet_api::v1::*;

/// True when the test may run: root. Without root it prints why it skips, unless CI=true, where
/// skipping is a failure.
pub fn privileged(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if root {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (network namespaces) and CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: needs root to create network namespaces");
    false
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace removed on drop (also when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("hnt-{}-{tag}{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// `ip -n NS <args>`, panics on failure, returns stdout.
    pub fn ip(&self, args: &str) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        sh(&v)
    }

    /// `ip -n NS <args>` that may fail.
    pub fn try_ip(&self, args: &str) -> Result<String, String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        try_sh(&v)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend(args);
        try_sh(&v)
    }

    pub fn nft_ruleset(&self) -> String {
        self.exec(&["nft", "list", "ruleset"]).unwrap_or_default()
    }

    pub fn sysctl(&self, key: &str) -> String {
        self.exec(&["cat", &format!("/proc/sys/{key}")])
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    pub fn set_sysctl(&self, key: &str, value: &str) {
        self.exec(&["sh", "-c", &format!("echo {value} > /proc/sys/{key}")])
            .expect("sysctl");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn try_sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn sh(args: &[&str]) -> String {
    try_sh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Moves `ifname` (in the root namespace of the test process? no: created directly) — helper to
/// create a veth pair whose ends live in two namespaces.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    let tmp = format!("hv{}", COUNTER.fetch_add(1, Ordering::SeqCst));
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
                ip: addr.into(),
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

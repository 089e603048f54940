//! Plain facts extracted from API objects (IPInstances, pods), and the rows of `ip ls`.

use std::net::IpAddr;

use hybridnet_api::ipmath::{Cidr, ip_to_u128, u128_to_ip};
use hybridnet_api::multicluster::{RemoteSubnet, RemoteVtep};
use hybridnet_api::naming::instance_name_to_ip;
use hybridnet_api::range::parse_range_shape;
use hybridnet_api::v1::IPInstance;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::output::{TextCell, or_dash};

/// The owner an IPInstance is bound to (`spec.binding.referredObject`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// What matters about one IPInstance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub namespace: String,
    pub name: String,
    /// The address, from `spec.address.ip` (or, failing that, from the object name).
    pub ip: Option<IpAddr>,
    pub prefix_length: Option<u8>,
    /// `spec.address.ip` as written.
    pub raw_ip: String,
    pub version: String,
    pub mac: String,
    pub gateway: Option<String>,
    pub net_id: Option<i32>,
    pub subnet: String,
    pub network: String,
    /// `spec.binding.nodeName`; `None` means reserved.
    pub node: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub owner: Option<OwnerRef>,
    pub terminating: bool,
    /// The live migration target pod sharing the address (a KubeVirt VM's,
    /// `hybridnet_api::kubevirt::MIGRATION_PEER_ANNOTATION`), if named and well formed.
    pub migration_peer: Option<hybridnet_api::kubevirt::MigrationPeer>,
}

impl InstanceFacts {
    pub fn from_ipinstance(obj: &IPInstance) -> Self {
        let spec = &obj.spec;
        let parsed = Cidr::parse_any(&spec.address.ip).ok();
        let ip = parsed
            .map(|c| u128_to_ip(c.version, c.network))
            .or_else(|| {
                // An address without prefix is still an address.
                spec.address.ip.parse::<IpAddr>().ok()
            })
            .or_else(|| obj.metadata.name.as_deref().and_then(instance_name_to_ip));
        let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
        let owner = spec.binding.referred_object.as_ref().and_then(|r| {
            let kind = r.kind.clone().unwrap_or_default();
            let name = r.name.clone().unwrap_or_default();
            (!kind.is_empty() || !name.is_empty()).then(|| OwnerRef {
                kind,
                name,
                uid: nonempty(&r.uid),
            })
        });
        Self {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            ip,
            prefix_length: parsed.map(|c| c.prefix),
            raw_ip: spec.address.ip.clone(),
            version: spec.address.version.as_str().to_string(),
            mac: spec.address.mac.clone(),
            gateway: nonempty(&spec.address.gateway),
            net_id: spec.address.net_id,
            subnet: spec.subnet.clone(),
            network: spec.network.clone(),
            node: nonempty(&spec.binding.node_name),
            pod: nonempty(&spec.binding.pod_name),
            pod_uid: nonempty(&spec.binding.pod_uid),
            owner,
            terminating: obj.metadata.deletion_timestamp.is_some(),
            migration_peer: hybridnet_api::kubevirt::MigrationPeer::of(
                obj.metadata.annotations.as_ref(),
            ),
        }
    }

    pub fn is_reserved(&self) -> bool {
        self.node.is_none()
    }

    /// `ipinstance/<namespace>/<name>`.
    pub fn object_ref(&self) -> String {
        format!("ipinstance/{}/{}", self.namespace, self.name)
    }

    pub fn ip_text(&self) -> String {
        self.ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| self.raw_ip.clone())
    }
}

/// What matters about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub phase: String,
    pub host_network: bool,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    pub terminating: bool,
    /// The controller owner (kind, name).
    pub controller: Option<OwnerRef>,
}

impl PodFacts {
    pub fn from_pod(p: &Pod) -> Self {
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(st) = status {
            for s in st
                .pod_ips
                .iter()
                .flatten()
                .map(|i| i.ip.as_str())
                .chain(st.pod_ip.as_deref())
            {
                if let Ok(ip) = s.parse::<IpAddr>()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
        }
        let controller = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| OwnerRef {
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: Some(o.uid.clone()),
            });
        Self {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            uid: p.metadata.uid.clone(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            terminating: p.metadata.deletion_timestamp.is_some(),
            controller,
        }
    }
}

/// State of an address in `ip ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpState {
    /// Bound to a pod on a node.
    Allocated,
    /// Kept for a stateful pod that is gone.
    Reserved,
    /// Being released (deletion requested).
    Releasing,
    /// A pod of another cluster (from a RemoteVtep's `endpointIPList`).
    Remote,
}

impl IpState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allocated => "allocated",
            Self::Reserved => "reserved",
            Self::Releasing => "releasing",
            Self::Remote => "remote",
        }
    }
}

/// One row of `ip ls` (also its stable `-o json|yaml` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRow {
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<u8>,
    pub version: String,
    pub mac: String,
    pub namespace: String,
    pub name: String,
    pub pod: Option<String>,
    pub node: Option<String>,
    pub subnet: String,
    pub network: String,
    pub state: IpState,
    pub gateway: Option<String>,
    #[serde(rename = "netID")]
    pub net_id: Option<i32>,
    pub owner: Option<OwnerRef>,
}

/// Filters of `ip ls` applied after listing (the namespace is chosen by the request).
#[derive(Debug, Clone, Default)]
pub struct IpFilter {
    pub network: Option<String>,
    pub subnet: Option<String>,
    pub node: Option<String>,
    pub pod: Option<String>,
    pub reserved_only: bool,
}

impl IpFilter {
    pub fn matches(&self, f: &InstanceFacts) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        eq(&self.network, Some(&f.network))
            && eq(&self.subnet, Some(&f.subnet))
            && eq(&self.node, f.node.as_deref())
            && eq(&self.pod, f.pod.as_deref())
            && (!self.reserved_only || f.is_reserved())
    }
}

/// Sort key: family, then numeric address, then namespace/name.
fn sort_key(f: &InstanceFacts) -> (u8, u128, String, String) {
    match f.ip {
        Some(ip) => (
            if ip.is_ipv4() { 0 } else { 1 },
            ip_to_u128(ip),
            f.namespace.clone(),
            f.name.clone(),
        ),
        None => (2, 0, f.namespace.clone(), f.name.clone()),
    }
}

/// The rows of `ip ls`, filtered and sorted by address.
pub fn ip_rows(instances: &[InstanceFacts], filter: &IpFilter) -> Vec<IpRow> {
    let mut sel: Vec<&InstanceFacts> = instances.iter().filter(|f| filter.matches(f)).collect();
    sel.sort_by_key(|f| sort_key(f));
    sel.into_iter()
        .map(|f| IpRow {
            ip: f.ip_text(),
            prefix_length: f.prefix_length,
            version: f.version.clone(),
            mac: f.mac.clone(),
            namespace: f.namespace.clone(),
            name: f.name.clone(),
            pod: f.pod.clone(),
            node: f.node.clone(),
            subnet: f.subnet.clone(),
            network: f.network.clone(),
            state: if f.terminating {
                IpState::Releasing
            } else if f.is_reserved() {
                IpState::Reserved
            } else {
                IpState::Allocated
            },
            gateway: f.gateway.clone(),
            net_id: f.net_id,
            owner: f.owner.clone(),
        })
        .collect()
}

/// Table header and cells of `ip ls` (`wide` adds gateway, netID, owner and the object name).
pub fn ip_table(rows: &[IpRow], wide: bool) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let mut header = vec![
        "IP",
        "MAC",
        "NAMESPACE",
        "POD",
        "NODE",
        "SUBNET",
        "NETWORK",
        "STATE",
    ];
    if wide {
        header.extend(["GATEWAY", "NETID", "OWNER", "IPINSTANCE"]);
    }
    let cells = rows
        .iter()
        .map(|r| {
            let mut c: Vec<TextCell> = vec![
                r.ip.as_str().into(),
                or_dash(Some(&r.mac)).into(),
                r.namespace.as_str().into(),
                or_dash(r.pod.as_deref()).into(),
                or_dash(r.node.as_deref()).into(),
                r.subnet.as_str().into(),
                r.network.as_str().into(),
                r.state.as_str().into(),
            ];
            if wide {
                c.push(or_dash(r.gateway.as_deref()).into());
                c.push(
                    r.net_id
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into())
                        .into(),
                );
                c.push(
                    r.owner
                        .as_ref()
                        .map(|o| format!("{}/{}", o.kind, o.name))
                        .unwrap_or_else(|| "-".into())
                        .into(),
                );
                c.push(r.name.as_str().into());
            }
            c
        })
        .collect();
    (header, cells)
}

/// Rows of `ip ls --remote`: the addresses of other clusters' pods, from the RemoteVteps the
/// operator mirrors (`endpointIPList`; upstream's mirror carries no pod names). The node is shown
/// as `<cluster>/<node>`, the subnet as the RemoteSubnet holding the address (`-` when none
/// does), the state as `remote`. Filters by network, pod or reserved state match no remote row;
/// `--node` matches the remote node's name, `--subnet` the RemoteSubnet's.
pub fn remote_rows(
    vteps: &[RemoteVtep],
    subnets: &[RemoteSubnet],
    filter: &IpFilter,
) -> Vec<IpRow> {
    if filter.network.is_some() || filter.pod.is_some() || filter.reserved_only {
        return Vec::new();
    }
    let ranges: Vec<(&str, String, hybridnet_api::range::ParsedRange)> = subnets
        .iter()
        .filter_map(|s| {
            let r = parse_range_shape(&s.spec.range, "spec.range").ok()?;
            Some((
                s.spec.cluster_name.as_deref().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
                r,
            ))
        })
        .collect();
    let mut rows: Vec<(u8, u128, IpRow)> = Vec::new();
    for v in vteps {
        let cluster = v.spec.cluster_name.as_deref().unwrap_or_default();
        let node_name = v.spec.node_name.as_deref().unwrap_or_default();
        let node = format!("{cluster}/{node_name}");
        if filter.node.as_ref().is_some_and(|want| want != node_name) {
            continue;
        }
        for raw in v.spec.endpoint_ip_list.iter().flatten() {
            let ip: Option<IpAddr> = raw.parse().ok();
            let subnet = ip
                .and_then(|ip| {
                    ranges
                        .iter()
                        .find(|(c, _, r)| *c == cluster && r.contains_ip(ip))
                })
                .map(|(_, name, _)| name.clone())
                .unwrap_or_else(|| "-".into());
            if filter.subnet.as_ref().is_some_and(|want| *want != subnet) {
                continue;
            }
            let (family, key) = match ip {
                Some(ip) => (u8::from(!ip.is_ipv4()), ip_to_u128(ip)),
                None => (2, 0),
            };
            rows.push((
                family,
                key,
                IpRow {
                    ip: raw.clone(),
                    prefix_length: None,
                    version: match ip {
                        Some(IpAddr::V4(_)) => "4".into(),
                        Some(IpAddr::V6(_)) => "6".into(),
                        None => String::new(),
                    },
                    mac: String::new(),
                    namespace: "-".into(),
                    name: String::new(),
                    pod: None,
                    node: Some(node.clone()),
                    subnet,
                    network: "-".into(),
                    state: IpState::Remote,
                    gateway: None,
                    net_id: None,
                    owner: None,
                },
            ));
        }
    }
    rows.sort_by(|a, b| (a.0, a.1, &a.2.node).cmp(&(b.0, b.1, &b.2.node)));
    rows.into_iter().map(|(_, _, r)| r).collect()
}

#[cfg(test)]
mod remote_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hybridnet_api::multicluster::{RemoteSubnetSpec, RemoteVtepSpec};
    use hybridnet_api::v1::{AddressRange, IpVersion};

    fn vtep(cluster: &str, node: &str, ips: &[&str]) -> RemoteVtep {
        RemoteVtep::new(
            &format!("{cluster}.{node}"),
            RemoteVtepSpec {
                cluster_name: Some(cluster.into()),
                node_name: Some(node.into()),
                endpoint_ip_list: Some(ips.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
    }

    fn subnet(cluster: &str, name: &str, cidr: &str, version: IpVersion) -> RemoteSubnet {
        RemoteSubnet::new(
            &format!("{cluster}.{name}"),
            RemoteSubnetSpec {
                range: AddressRange {
                    version,
                    cidr: cidr.into(),
                    ..Default::default()
                },
                cluster_name: Some(cluster.into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn remote_pods_are_listed_with_their_cluster_node_and_subnet() {
        let vteps = [
            vtep("b", "node1", &["198.19.0.9", "fd00:b::5", "198.19.0.3"]),
            vtep("c", "node1", &["198.19.0.4", "not-an-ip"]),
        ];
        let subnets = [
            subnet("b", "init", "198.19.0.0/24", IpVersion::V4),
            subnet("b", "v6", "fd00:b::/64", IpVersion::V6),
            // Another cluster's range holding the same addresses does not claim b's pods.
            subnet("c", "other", "198.18.0.0/24", IpVersion::V4),
        ];
        let rows = remote_rows(&vteps, &subnets, &IpFilter::default());
        let seen: Vec<(&str, &str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.ip.as_str(),
                    r.node.as_deref().unwrap(),
                    r.subnet.as_str(),
                    r.state.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("198.19.0.3", "b/node1", "b.init", "remote"),
                ("198.19.0.4", "c/node1", "-", "remote"),
                ("198.19.0.9", "b/node1", "b.init", "remote"),
                ("fd00:b::5", "b/node1", "b.v6", "remote"),
                ("not-an-ip", "c/node1", "-", "remote"),
            ]
        );
        let (header, cells) = ip_table(&rows, false);
        assert_eq!(header.len(), cells[0].len());
    }

    #[test]
    fn filters_apply_to_remote_rows() {
        let vteps = [
            vtep("b", "node1", &["198.19.0.9"]),
            vtep("b", "node2", &["198.19.0.10"]),
        ];
        let subnets = [subnet("b", "init", "198.19.0.0/24", IpVersion::V4)];
        let f = |node: Option<&str>, subnet: Option<&str>| IpFilter {
            node: node.map(str::to_string),
            subnet: subnet.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(
            remote_rows(&vteps, &subnets, &f(Some("node2"), None)).len(),
            1
        );
        assert_eq!(
            remote_rows(&vteps, &subnets, &f(Some("node3"), None)).len(),
            0
        );
        assert_eq!(
            remote_rows(&vteps, &subnets, &f(None, Some("b.init"))).len(),
            2
        );
        assert_eq!(
            remote_rows(&vteps, &subnets, &f(None, Some("init"))).len(),
            0
        );
        for f in [
            IpFilter {
                network: Some("n".into()),
                ..Default::default()
            },
            IpFilter {
                pod: Some("p".into()),
                ..Default::default()
            },
            IpFilter {
                reserved_only: true,
                ..Default::default()
            },
        ] {
            assert!(remote_rows(&vteps, &subnets, &f).is_empty(), "{f:?}");
        }
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    use super::*;

    pub fn inst(
        ns: &str,
        ip: &str,
        subnet: &str,
        pod: Option<&str>,
        node: Option<&str>,
    ) -> InstanceFacts {
        let addr: IpAddr = ip.parse().unwrap();
        InstanceFacts {
            namespace: ns.into(),
            name: hybridnet_api::naming::ip_to_instance_name(addr),
            ip: Some(addr),
            prefix_length: Some(24),
            raw_ip: format!("{ip}/24"),
            version: if addr.is_ipv4() { "4" } else { "6" }.into(),
            mac: "02:12:34:00:00:01".into(),
            gateway: None,
            net_id: None,
            subnet: subnet.into(),
            network: "net".into(),
            node: node.map(Into::into),
            pod: pod.map(Into::into),
            pod_uid: pod.map(|p| format!("uid-{p}")),
            owner: pod.map(|p| OwnerRef {
                kind: "Pod".into(),
                name: p.into(),
                uid: Some(format!("uid-{p}")),
            }),
            terminating: false,
            migration_peer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::inst;
    use super::*;
    use hybridnet_api::v1::{Address, Binding, IPInstanceSpec, IpVersion, ReferredObject};

    #[test]
    fn facts_from_an_ipinstance() {
        let mut obj = IPInstance::new(
            "10-0-0-5",
            IPInstanceSpec {
                network: "n".into(),
                subnet: "s".into(),
                address: Address {
                    version: IpVersion::V4,
                    ip: "10.0.0.5/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    net_id: Some(4),
                    mac: "02:12:34:aa:bb:cc".into(),
                },
                binding: Binding {
                    referred_object: Some(ReferredObject {
                        kind: Some("StatefulSet".into()),
                        name: Some("web".into()),
                        uid: Some("u1".into()),
                    }),
                    node_name: Some(String::new()),
                    pod_name: Some("web-0".into()),
                    ..Default::default()
                },
            },
        );
        obj.metadata.namespace = Some("default".into());
        let f = InstanceFacts::from_ipinstance(&obj);
        assert_eq!(f.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(f.prefix_length, Some(24));
        assert!(f.is_reserved(), "empty nodeName means reserved");
        assert_eq!(f.owner.as_ref().unwrap().kind, "StatefulSet");
        let rows = ip_rows(&[f], &IpFilter::default());
        assert_eq!(rows[0].state, IpState::Reserved);
        // Garbage in spec.address.ip falls back to the name.
        obj.spec.address.ip = "garbage".into();
        let f = InstanceFacts::from_ipinstance(&obj);
        assert_eq!(f.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(f.prefix_length, None);
    }

    #[test]
    fn filters_and_sorting() {
        let all = vec![
            inst("b", "10.0.0.20", "s1", Some("p2"), Some("n1")),
            inst("a", "10.0.0.3", "s1", Some("p1"), Some("n2")),
            inst("a", "fd00::3", "s6", Some("p1"), Some("n2")),
            inst("a", "10.0.0.100", "s2", Some("web-0"), None),
        ];
        let ips = |f: IpFilter| {
            ip_rows(&all, &f)
                .into_iter()
                .map(|r| r.ip)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ips(IpFilter::default()),
            vec!["10.0.0.3", "10.0.0.20", "10.0.0.100", "fd00::3"]
        );
        assert_eq!(
            ips(IpFilter {
                node: Some("n2".into()),
                ..Default::default()
            }),
            vec!["10.0.0.3", "fd00::3"]
        );
        assert_eq!(
            ips(IpFilter {
                subnet: Some("s1".into()),
                ..Default::default()
            }),
            vec!["10.0.0.3", "10.0.0.20"]
        );
        assert_eq!(
            ips(IpFilter {
                reserved_only: true,
                ..Default::default()
            }),
            vec!["10.0.0.100"]
        );
        assert_eq!(
            ips(IpFilter {
                pod: Some("p1".into()),
                network: Some("net".into()),
                ..Default::default()
            }),
            vec!["10.0.0.3", "fd00::3"]
        );
        assert!(
            ips(IpFilter {
                network: Some("other".into()),
                ..Default::default()
            })
            .is_empty()
        );
        let (h, cells) = ip_table(&ip_rows(&all, &IpFilter::default()), true);
        assert_eq!(h.len(), cells[0].len());
    }

    #[test]
    fn stable_json_field_names() {
        let rows = ip_rows(
            &[inst("a", "10.0.0.3", "s1", Some("p1"), Some("n1"))],
            &IpFilter::default(),
        );
        let v = serde_json::to_value(&rows).unwrap();
        let keys: Vec<&str> = v[0]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for k in [
            "ip",
            "prefixLength",
            "version",
            "mac",
            "namespace",
            "name",
            "pod",
            "node",
            "subnet",
            "network",
            "state",
            "gateway",
            "netID",
            "owner",
        ] {
            assert!(keys.contains(&k), "{k} missing in {keys:?}");
        }
        assert_eq!(v[0]["state"], "allocated");
    }
}

//! Pure decisions: a pod's IPInstances -> what its interface gets, and the CNI result for it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::mac::MacAddr;
use hybridnet_api::v1::{IPInstance, IpVersion};
use hybridnet_cni::{CniError, CniResult, ErrorCode, Interface, IpConfig, PodRef, Route};

/// MAC of every host-side veth (the pod's gateway answers with it through proxy ARP/NDP).
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];
/// The pod's IPv4 gateway: link-local, answered by proxy ARP on the host veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 gateway: the link-local address derived from `ee:ee:ee:ee:ee:ee`.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// The addresses a pod gets, decided from its IPInstances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAddressing {
    pub network: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// IPInstance names, for logs and errors.
    pub instances: Vec<String>,
}

fn invalid(pod: &PodRef, msg: String) -> CniError {
    CniError::new(ErrorCode::InvalidPodAddresses, msg).with_details(format!("pod {pod}"))
}

/// Instances that belong to this pod incarnation: when both sides know the pod UID, it must
/// match (a recreated pod with the same name must not get the old pod's addresses).
pub fn matching_instances<'a>(pod: &PodRef, instances: &'a [IPInstance]) -> Vec<&'a IPInstance> {
    instances
        .iter()
        .filter(|i| match (&pod.uid, &i.spec.binding.pod_uid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        })
        .collect()
}

/// Decides the pod's addressing. Upstream invariants (`pkg/daemon/server/handle.go`): one MAC for the pod,
/// at most one IP per family, all IPs in one network. Violations are code 100, naming the
/// instances involved.
pub fn pod_addressing(pod: &PodRef, instances: &[&IPInstance]) -> Result<PodAddressing, CniError> {
    if instances.is_empty() {
        return Err(CniError::try_again_later(format!(
            "pod {pod} has no IPInstance on this node yet"
        )));
    }
    let mut ipv4 = None;
    let mut ipv6 = None;
    let mut macs = BTreeSet::new();
    let mut networks = BTreeSet::new();
    let mut names = Vec::new();
    for inst in instances {
        let name = inst.metadata.name.clone().unwrap_or_default();
        let a = &inst.spec.address;
        let prefix = Cidr::parse_any(&a.ip)
            .map_err(|e| invalid(pod, format!("IPInstance {name}: spec.address.ip: {e}")))?;
        let mac = MacAddr::parse_unicast(&a.mac)
            .map_err(|e| invalid(pod, format!("IPInstance {name}: spec.address.mac: {e}")))?
            .0;
        macs.insert(mac);
        networks.insert(inst.spec.network.clone());
        match (prefix.addr(), &a.version) {
            (IpAddr::V4(v4), IpVersion::V4) => {
                if ipv4.replace(v4).is_some() {
                    return Err(invalid(pod, "pod has more than one IPv4 IPInstance".into()));
                }
            }
            (IpAddr::V6(v6), IpVersion::V6) => {
                if ipv6.replace(v6).is_some() {
                    return Err(invalid(pod, "pod has more than one IPv6 IPInstance".into()));
                }
            }
            _ => {
                return Err(invalid(
                    pod,
                    format!(
                        "IPInstance {name}: spec.address.version does not match address {}",
                        a.ip
                    ),
                ));
            }
        }
        names.push(name);
    }
    if macs.len() > 1 {
        return Err(invalid(
            pod,
            format!(
                "IPInstances {} carry different MAC addresses",
                names.join(", ")
            ),
        ));
    }
    if networks.len() > 1 {
        return Err(invalid(
            pod,
            format!(
                "IPInstances {} are in different networks ({})",
                names.join(", "),
                networks.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    names.sort();
    Ok(PodAddressing {
        network: networks.into_iter().next().unwrap_or_default(),
        mac: macs.into_iter().next().unwrap_or([0; 6]),
        ipv4,
        ipv6,
        instances: names,
    })
}

/// The CNI result for a wired pod: host veth (no sandbox, for chained bandwidth/portmap), the
/// container interface, host-prefix addresses with the link-local gateways, default routes.
pub fn cni_result(
    addressing: &PodAddressing,
    host_veth: &str,
    ifname: &str,
    netns: &str,
    mtu: u32,
) -> CniResult {
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    if let Some(v4) = addressing.ipv4 {
        ips.push(IpConfig {
            address: Cidr::host(IpAddr::V4(v4)),
            gateway: Some(IpAddr::V4(GATEWAY_V4)),
            interface: Some(1),
        });
        routes.push(Route {
            dst: Cidr::default_route(IpVersion::V4),
            gw: Some(IpAddr::V4(GATEWAY_V4)),
        });
    }
    if let Some(v6) = addressing.ipv6 {
        ips.push(IpConfig {
            address: Cidr::host(IpAddr::V6(v6)),
            gateway: Some(IpAddr::V6(GATEWAY_V6)),
            interface: Some(1),
        });
        routes.push(Route {
            dst: Cidr::default_route(IpVersion::V6),
            gw: Some(IpAddr::V6(GATEWAY_V6)),
        });
    }
    CniResult {
        interfaces: vec![
            Interface {
                name: host_veth.to_string(),
                mac: MacAddr(HOST_VETH_MAC).to_string(),
                mtu: Some(mtu),
                sandbox: None,
            },
            Interface {
                name: ifname.to_string(),
                mac: MacAddr(addressing.mac).to_string(),
                mtu: Some(mtu),
                sandbox: Some(netns.to_string()),
            },
        ],
        ips,
        routes,
        dns: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{Address, Binding, IPInstanceSpec};

    fn inst(name: &str, ip: &str, v: IpVersion, mac: &str, net: &str) -> IPInstance {
        let mut i = IPInstance::new(
            name,
            IPInstanceSpec {
                network: net.into(),
                subnet: "s".into(),
                address: Address {
                    version: v,
                    ip: ip.into(),
                    gateway: None,
                    net_id: None,
                    mac: mac.into(),
                },
                binding: Binding::default(),
            },
        );
        i.metadata.namespace = Some("default".into());
        i
    }

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: None,
        }
    }

    #[test]
    fn dual_stack_is_decided() {
        let a = inst(
            "198-18-0-5",
            "198.18.0.5/24",
            IpVersion::V4,
            "02:00:C6:12:00:05",
            "net1",
        );
        let b = inst(
            "fd00-0-0-0-0-0-0-5",
            "fd00::5/64",
            IpVersion::V6,
            "02:00:c6:12:00:05",
            "net1",
        );
        let d = pod_addressing(&pod(), &[&a, &b]).unwrap();
        assert_eq!(d.ipv4, Some(Ipv4Addr::new(198, 18, 0, 5)));
        assert_eq!(d.ipv6, Some("fd00::5".parse().unwrap()));
        assert_eq!(MacAddr(d.mac).to_string(), "02:00:c6:12:00:05");
        let r = cni_result(&d, "hybr0123456789a", "eth0", "/var/run/netns/p", 1450);
        assert_eq!(r.ips[0].address.to_string(), "198.18.0.5/32");
        assert_eq!(r.ips[1].address.to_string(), "fd00::5/128");
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/var/run/netns/p"));
        assert_eq!(r.routes[1].gw, Some(IpAddr::V6(GATEWAY_V6)));
    }

    #[test]
    fn invariant_violations_are_code_100() {
        let a = inst(
            "a",
            "198.18.0.5/24",
            IpVersion::V4,
            "02:00:00:00:00:05",
            "n",
        );
        let a2 = inst(
            "a2",
            "198.18.0.6/24",
            IpVersion::V4,
            "02:00:00:00:00:05",
            "n",
        );
        let b_mac = inst("b", "fd00::5/64", IpVersion::V6, "02:00:00:00:00:06", "n");
        let b_net = inst(
            "b",
            "fd00::5/64",
            IpVersion::V6,
            "02:00:00:00:00:05",
            "other",
        );
        let wrong_ver = inst("c", "fd00::5/64", IpVersion::V4, "02:00:00:00:00:05", "n");
        let bad_mac = inst("d", "198.18.0.5/24", IpVersion::V4, "zz", "n");
        let mcast = inst(
            "e",
            "198.18.0.5/24",
            IpVersion::V4,
            "01:00:5e:00:00:01",
            "n",
        );
        let bad_ip = inst(
            "f",
            "198.18.0.500/24",
            IpVersion::V4,
            "02:00:00:00:00:05",
            "n",
        );
        for set in [
            vec![&a, &a2],
            vec![&a, &b_mac],
            vec![&a, &b_net],
            vec![&wrong_ver],
            vec![&bad_mac],
            vec![&mcast],
            vec![&bad_ip],
        ] {
            let e = pod_addressing(&pod(), &set).unwrap_err();
            assert_eq!(e.code, 100, "{e}");
            assert!(e.details.contains("default/web-0"));
        }
        assert_eq!(pod_addressing(&pod(), &[]).unwrap_err().code, 11);
    }

    #[test]
    fn uid_filters_stale_incarnations() {
        let mut old = inst(
            "a",
            "198.18.0.5/24",
            IpVersion::V4,
            "02:00:00:00:00:05",
            "n",
        );
        old.spec.binding.pod_uid = Some("old".into());
        let mut new = inst(
            "b",
            "198.18.0.6/24",
            IpVersion::V4,
            "02:00:00:00:00:05",
            "n",
        );
        new.spec.binding.pod_uid = Some("new".into());
        let all = [old, new];
        let mut p = pod();
        assert_eq!(matching_instances(&p, &all).len(), 2);
        p.uid = Some("new".into());
        let m = matching_instances(&p, &all);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].metadata.name.as_deref(), Some("b"));
    }
}

//! IPv4 "ARP enhancement" on VLAN forward interfaces (upstream `pkg/daemon/addr/addr.go`,
//! `--enable-vlan-arp-enhancement`).
//!
//! Some switches drop ARP requests whose sender address lies outside the target's subnet. The
//! node ARPs for pods of other nodes and for the gateway of a VLAN subnet on the forward
//! interface, and without an address in that subnet the kernel would use some other address of
//! the node as sender. So for each (forward interface, IPv4 subnet) with at least one pod on
//! this node, one of those pods' addresses is put on the interface as an "enhanced address":
//! `IFA_F_NOPREFIXROUTE` (no connected route), scope link (never chosen as source of IP
//! packets, but chosen as ARP sender for targets in its subnet), and without the local-table
//! routes the kernel creates for it (the node must not take the pod's traffic for itself).
//!
//! Choice, for a stable data plane: an enhanced address already on the interface that is still
//! a local pod of the subnet stays; otherwise the lowest address of a non-terminating local pod
//! (a terminating one only when there is nothing else). An interface with an address of its own
//! in the subnet (the node's address; anything that is not one of our pod addresses) needs no
//! enhancement and gets none.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hybridnet_api::v1::{IpVersion, NetworkMode};

use super::model::{DataPlanePlan, EnhancedAddress, HostState, RouteKind};

/// The enhanced addresses of `plan` (computed after the rest of the plan).
pub fn enhanced_addresses(plan: &DataPlanePlan, host: &HostState) -> BTreeSet<EnhancedAddress> {
    let mut out = BTreeSet::new();
    for (cidr, table) in &plan.subnet_tables {
        if table.mode != NetworkMode::Vlan || cidr.version != IpVersion::V4 {
            continue;
        }
        // The forward interface is the device of the subnet table's direct route.
        let Some(dev) = plan
            .routes_in(table.table)
            .find(|r| r.kind == RouteKind::Unicast && r.dst == *cidr)
            .and_then(|r| r.dev.clone())
        else {
            continue;
        };
        let pods: Vec<(IpAddr, bool)> = plan
            .local_pods
            .iter()
            .filter(|(ip, _)| ip.is_ipv4() && cidr.contains(**ip))
            .map(|(ip, p)| (*ip, p.terminating))
            .collect();
        if pods.is_empty() {
            continue;
        }
        let existing: Vec<_> = host
            .interfaces
            .iter()
            .filter(|i| i.name == dev)
            .flat_map(|i| i.addresses.iter())
            .filter(|a| a.ip.is_ipv4() && cidr.contains(a.ip))
            .collect();
        // NOPREFIXROUTE addresses in a pod subnet are enhanced addresses (maybe stale ones);
        // any other address is the interface's own.
        if existing.iter().any(|a| !a.noprefixroute) {
            continue;
        }
        let is_pod = |ip: IpAddr| pods.iter().any(|(p, _)| *p == ip);
        let keep = existing.iter().map(|a| a.ip).filter(|ip| is_pod(*ip)).min();
        let pick = keep.or_else(|| {
            pods.iter()
                .filter(|(_, terminating)| !terminating)
                .map(|(ip, _)| *ip)
                .min()
                .or_else(|| pods.iter().map(|(ip, _)| *ip).min())
        });
        if let Some(IpAddr::V4(ip)) = pick {
            out.insert(EnhancedAddress {
                dev,
                ip,
                prefix: cidr.prefix,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::HostAddress;
    use super::super::tests::fixture;
    use super::super::{PlanConfig, build_plan};
    use super::*;
    use hybridnet_api::v1::IPInstance;
    use std::net::Ipv4Addr;

    fn on(cfg_enabled: bool, f: &super::super::tests::Fixture) -> BTreeSet<EnhancedAddress> {
        let cfg = PlanConfig {
            vlan_arp_enhancement: cfg_enabled,
            ..f.cfg.clone()
        };
        build_plan(&f.api, &f.host, &cfg).vlan_enhanced_addresses
    }

    fn enhanced(dev: &str, ip: [u8; 4], prefix: u8) -> EnhancedAddress {
        EnhancedAddress {
            dev: dev.into(),
            ip: Ipv4Addr::from(ip),
            prefix,
        }
    }

    /// The fixture's VLAN network on a tagged sub-interface without addresses of the node.
    fn tagged() -> super::super::tests::Fixture {
        let mut f = fixture();
        f.api.networks[1].spec.net_id = Some(30);
        f.host.interfaces.push(super::super::tests::iface(
            "eth0.30",
            3,
            Some("02:00:00:00:00:11"),
            &[],
        ));
        f
    }

    fn local_pod(f: &mut super::super::tests::Fixture, pod: &str, ip: &str, terminating: bool) {
        let mut i: IPInstance = f
            .api
            .ip_instances
            .iter()
            .find(|i| i.spec.subnet == "ul4" && i.spec.binding.node_name.as_deref() == Some("n1"))
            .map(|i| (**i).clone())
            .unwrap();
        i.metadata.name = Some(ip.replace('.', "-"));
        i.spec.address.ip = ip.into();
        i.spec.binding.pod_name = Some(pod.into());
        if let Some(l) = i.metadata.labels.as_mut() {
            l.insert(
                hybridnet_api::constants::label::POD.to_string(),
                pod.to_string(),
            );
        }
        if terminating {
            i.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            );
        }
        f.api.ip_instances.push(std::sync::Arc::new(i));
    }

    #[test]
    fn one_local_pod_address_per_vlan_interface_and_subnet() {
        let f = tagged();
        assert_eq!(
            on(true, &f),
            BTreeSet::from([enhanced("eth0.30", [198, 18, 0, 100], 24)])
        );
        // Disabled: none (the apply removes what is there).
        assert!(on(false, &f).is_empty());
        // IPv6 subnets never get one.
        assert!(on(true, &f).iter().all(|e| e.dev == "eth0.30"));
    }

    #[test]
    fn an_enhanced_address_is_never_the_vtep() {
        // The VXLAN parent carries only an enhanced IPv4 address and the node's IPv6 address.
        let mut f = fixture();
        let eth0 = f
            .host
            .interfaces
            .iter_mut()
            .find(|i| i.name == "eth0")
            .unwrap();
        eth0.addresses = vec![
            HostAddress {
                ip: "198.18.0.100".parse().unwrap(),
                prefix: 24,
                noprefixroute: true,
            },
            HostAddress {
                ip: "fd00:18::11".parse().unwrap(),
                prefix: 64,
                noprefixroute: false,
            },
        ];
        let plan = build_plan(&f.api, &f.host, &f.cfg);
        assert_eq!(
            plan.vxlan.map(|v| v.local),
            Some("fd00:18::11".parse().unwrap())
        );
    }

    #[test]
    fn no_enhancement_where_the_node_has_its_own_address_or_no_pod() {
        // Untagged: eth0 carries the node's 198.18.0.11/24.
        assert!(on(true, &fixture()).is_empty());
        // No local pod in the subnet (only n2's pod): nothing.
        let mut f = tagged();
        f.api.ip_instances.retain(|i| {
            !(i.spec.subnet == "ul4" && i.spec.binding.node_name.as_deref() == Some("n1"))
        });
        assert!(on(true, &f).is_empty());
    }

    #[test]
    fn the_choice_is_stable_and_stale_ones_are_replaced() {
        let mut f = tagged();
        local_pod(&mut f, "b2", "198.18.0.150", false);
        local_pod(&mut f, "b3", "198.18.0.120", true);
        // Fresh: the lowest non-terminating pod.
        assert_eq!(
            on(true, &f),
            BTreeSet::from([enhanced("eth0.30", [198, 18, 0, 100], 24)])
        );
        // An enhanced address already there stays even if it is not the lowest.
        let eth030 = f.host.interfaces.len() - 1;
        f.host.interfaces[eth030].addresses.push(HostAddress {
            ip: "198.18.0.150".parse().unwrap(),
            prefix: 24,
            noprefixroute: true,
        });
        assert_eq!(
            on(true, &f),
            BTreeSet::from([enhanced("eth0.30", [198, 18, 0, 150], 24)])
        );
        // Its pod went away: replaced by the lowest live pod.
        f.api
            .ip_instances
            .retain(|i| i.spec.binding.pod_name.as_deref() != Some("b2"));
        assert_eq!(
            on(true, &f),
            BTreeSet::from([enhanced("eth0.30", [198, 18, 0, 100], 24)])
        );
        // Only a terminating pod left: it is used rather than nothing.
        f.api
            .ip_instances
            .retain(|i| i.spec.subnet != "ul4" || i.spec.binding.pod_name.as_deref() == Some("b3"));
        assert_eq!(
            on(true, &f),
            BTreeSet::from([enhanced("eth0.30", [198, 18, 0, 120], 24)])
        );
        // A manual address in the subnet (without NOPREFIXROUTE): none.
        f.host.interfaces[eth030].addresses = vec![HostAddress {
            ip: "198.18.0.120".parse().unwrap(),
            prefix: 24,
            noprefixroute: false,
        }];
        assert!(on(true, &f).is_empty());
    }
}

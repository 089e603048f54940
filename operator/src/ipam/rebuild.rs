//! Rebuilding the IPAM from the cluster's objects (at start-up, after leader election, or to
//! resynchronise): deterministic, idempotent, and every inconsistency is reported.

use std::collections::BTreeMap;

use hybridnet_api::ipmath::ip_to_u128;
use hybridnet_api::naming::ip_to_instance_name;
use hybridnet_api::v1::{IPInstance, Network, Subnet};

use super::Ipam;
use super::error::{Conflict, InstanceRef, IpamError};
use super::pods::IpRef;
use super::subnet::{Holder, unusable_reason};
use super::types::{Cursors, InstanceInput, InstanceView, NetworkInput, SubnetInput};

/// Claimants of addresses held twice, by (subnet, address): the kept one and the others.
type Duplicates = BTreeMap<(String, u128), (InstanceRef, Vec<InstanceRef>)>;

impl Ipam {
    /// Builds an IPAM from plain inputs and persisted cursors.
    ///
    /// The result does not depend on input order: subnets are added by name and instances are
    /// taken in (address, namespace, name) order, so of several claimants of one address the
    /// first by (namespace, name) is kept, and of two pods with one MAC the one whose address
    /// sorts first keeps it. Instances that cannot be placed are reported and not marked (see
    /// [`Conflict`]), except duplicates: an address claimed twice stays taken.
    pub fn rebuild(
        networks: &[NetworkInput],
        subnets: &[SubnetInput],
        instances: &[InstanceInput],
        cursors: &Cursors,
    ) -> (Ipam, Vec<Conflict>) {
        let views = instances.iter().map(InstanceInput::view).collect();
        Self::rebuild_views(networks, subnets, views, cursors, Vec::new())
    }

    /// Builds an IPAM from the CRD objects, cursors from their status. Objects that do not
    /// parse are reported as conflicts (and skipped).
    pub fn rebuild_from_crds(
        networks: &[Network],
        subnets: &[Subnet],
        instances: &[IPInstance],
    ) -> (Ipam, Vec<Conflict>) {
        let mut conflicts = Vec::new();
        let mut nets = Vec::with_capacity(networks.len());
        for n in networks {
            match NetworkInput::from_crd(n) {
                Ok(i) => nets.push(i),
                Err(e) => conflicts.push(Conflict::InvalidNetwork(e)),
            }
        }
        let mut subs = Vec::with_capacity(subnets.len());
        for s in subnets {
            match SubnetInput::from_crd(s) {
                Ok(i) => subs.push(i),
                Err(e) => conflicts.push(Conflict::InvalidSubnet(e)),
            }
        }
        let mut views = Vec::with_capacity(instances.len());
        for i in instances {
            match InstanceView::from_crd(i) {
                Ok(v) => views.push(v),
                Err(e) => conflicts.push(Conflict::InvalidInstance(e)),
            }
        }
        let cursors = Cursors::from_status(networks, subnets);
        Self::rebuild_views(&nets, &subs, views, &cursors, conflicts)
    }

    fn rebuild_views(
        networks: &[NetworkInput],
        subnets: &[SubnetInput],
        mut instances: Vec<InstanceView<'_>>,
        cursors: &Cursors,
        mut conflicts: Vec<Conflict>,
    ) -> (Ipam, Vec<Conflict>) {
        let mut ipam = Ipam::new();
        for n in networks {
            if let Err(e) = ipam.upsert_network(n.clone()) {
                conflicts.push(Conflict::InvalidNetwork(e));
            }
        }
        let mut sorted: Vec<&SubnetInput> = subnets.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for s in sorted {
            if let Err(e) = ipam.upsert_subnet(s.clone()) {
                conflicts.push(Conflict::InvalidSubnet(e));
            }
        }
        // Integer comparison first: string comparison only between claimants of one address.
        instances.sort_unstable_by(|a, b| {
            ip_to_u128(a.ip)
                .cmp(&ip_to_u128(b.ip))
                .then_with(|| a.ip.is_ipv6().cmp(&b.ip.is_ipv6()))
                .then_with(|| (a.namespace, a.name).cmp(&(b.namespace, b.name)))
                // A total order even for inputs the API server cannot hold (one name twice).
                .then_with(|| {
                    (a.subnet, a.network, a.pod, a.state, a.mac)
                        .cmp(&(b.subnet, b.network, b.pod, b.state, b.mac))
                })
        });
        let mut duplicates = Duplicates::new();
        let mut mac_conflicts = Vec::new();
        let mut last_subnet: Option<(&str, u32)> = None;
        for inst in &instances {
            if let Some(c) = ipam.place(inst, &mut last_subnet, &mut duplicates, &mut mac_conflicts)
            {
                conflicts.push(c);
            }
        }
        for ((subnet, n), (kept, others)) in duplicates {
            let ip = ipam
                .subnet_ids
                .get(&subnet)
                .and_then(|id| ipam.sub(*id))
                .map(|s| s.range.ip(n));
            if let Some(ip) = ip {
                conflicts.push(Conflict::DuplicateIp {
                    ip,
                    subnet,
                    kept,
                    others,
                });
            }
        }
        conflicts.extend(mac_conflicts);
        ipam.restore_cursors(cursors);
        (ipam, conflicts)
    }

    /// Marks one instance; returns a conflict when it cannot be placed.
    fn place<'a>(
        &mut self,
        inst: &InstanceView<'a>,
        last_subnet: &mut Option<(&'a str, u32)>,
        duplicates: &mut Duplicates,
        mac_conflicts: &mut Vec<Conflict>,
    ) -> Option<Conflict> {
        let me = || InstanceRef {
            namespace: inst.namespace.to_string(),
            name: inst.name.to_string(),
        };
        if inst.namespace.is_empty() {
            return Some(Conflict::InvalidInstance(IpamError::InvalidInstance {
                namespace: inst.namespace.to_string(),
                name: inst.name.to_string(),
                reason: "metadata.namespace is empty".into(),
            }));
        }
        let ip = inst.ip.to_canonical();
        // Sorted by address, consecutive instances are mostly in one subnet.
        let id = match *last_subnet {
            Some((name, id)) if name == inst.subnet => id,
            _ => {
                let Some(&id) = self.subnet_ids.get(inst.subnet) else {
                    return Some(Conflict::UnknownSubnet {
                        instance: me(),
                        subnet: inst.subnet.to_string(),
                    });
                };
                *last_subnet = Some((inst.subnet, id));
                id
            }
        };
        let s = self.sub(id)?;
        if s.network != inst.network {
            return Some(Conflict::NetworkMismatch {
                instance: me(),
                subnet: inst.subnet.to_string(),
                instance_network: inst.network.to_string(),
                subnet_network: s.network.clone(),
            });
        }
        if let Some(reason) = unusable_reason(&s.range, ip) {
            return Some(Conflict::OutsideSubnet {
                instance: me(),
                ip,
                subnet: inst.subnet.to_string(),
                reason,
            });
        }
        let off = s.offset_of(ip)?;
        if let Some(h) = s.holder(off) {
            let net = self.networks.get(inst.network)?;
            let kept = InstanceRef {
                namespace: net.pods.namespace(h.slot).to_string(),
                name: ip_to_instance_name(ip),
            };
            duplicates
                .entry((inst.subnet.to_string(), ip_to_u128(ip)))
                .or_insert_with(|| (kept, Vec::new()))
                .1
                .push(me());
            return None;
        }
        let net = self.networks.get_mut(inst.network)?;
        let slot = match inst.pod {
            Some(name) => net.pods.find_or_insert(inst.namespace, name),
            None => net.pods.insert_anonymous(inst.namespace),
        };
        let s = self.subnets.get_mut(id as usize).and_then(Option::as_mut)?;
        s.take(
            off,
            Holder {
                slot,
                state: inst.state,
            },
        );
        net.pods.add_ip(
            slot,
            IpRef {
                subnet: id,
                offset: off,
            },
        );
        // MACs belong to pods: an anonymous reserved address (pod name dropped) keeps its MAC
        // in its IPInstance only, so it can neither collide with nor block a pod's MAC.
        if let Some(mac) = inst.mac
            && inst.pod.is_some()
            && net.pods.mac(slot).is_none()
        {
            match net.pods.mac_holder(mac) {
                Some(other) if other != slot => {
                    if let (Some(kept), Some(other)) = (net.pods.key(other), net.pods.key(slot)) {
                        mac_conflicts.push(Conflict::DuplicateMac {
                            mac,
                            network: inst.network.to_string(),
                            kept,
                            other,
                        });
                    }
                }
                _ => net.pods.set_mac(slot, mac),
            }
        }
        None
    }
}

//! Rebuilding the IPAM from the cluster's objects (at start-up, after leader election, or to
//! resynchronise): deterministic, idempotent, and every inconsistency is reported.

use std::collections::BTreeMap;

use hybridnet_api::v1::{IPInstance, Network, Subnet};

use super::error::{Conflict, InstanceRef, IpamError};
use super::pods::IpRef;
use super::subnet::{Holder, unusable_reason};
use super::types::{Cursors, InstanceInput, NetworkInput, SubnetInput};
use super::{Ipam, PodKey};

impl Ipam {
    /// Builds an IPAM from plain inputs and persisted cursors.
    ///
    /// The result does not depend on input order: subnets are added by name and instances are
    /// taken in (namespace, name) order. Instances that cannot be placed are reported and not
    /// marked (see [`Conflict`]), except duplicates: an address claimed twice stays taken.
    pub fn rebuild(
        networks: &[NetworkInput],
        subnets: &[SubnetInput],
        instances: &[InstanceInput],
        cursors: &Cursors,
    ) -> (Ipam, Vec<Conflict>) {
        let mut ipam = Ipam::new();
        let mut conflicts = Vec::new();
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
        let mut order: Vec<&InstanceInput> = instances.iter().collect();
        order.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut duplicates: BTreeMap<(String, u128), (InstanceRef, Vec<InstanceRef>)> =
            BTreeMap::new();
        let mut mac_conflicts = Vec::new();
        for inst in order {
            if let Some(c) = ipam.place(inst, &mut duplicates, &mut mac_conflicts) {
                conflicts.push(c);
            }
        }
        for ((subnet, _), (kept, others)) in duplicates {
            let ip = ipam
                .subnet_ids
                .get(&subnet)
                .and_then(|id| ipam.sub(*id))
                .and_then(|s| {
                    others
                        .first()
                        .and_then(|o| hybridnet_api::naming::instance_name_to_ip(&o.name))
                        .filter(|ip| s.offset_of(*ip).is_some())
                });
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
    fn place(
        &mut self,
        inst: &InstanceInput,
        duplicates: &mut BTreeMap<(String, u128), (InstanceRef, Vec<InstanceRef>)>,
        mac_conflicts: &mut Vec<Conflict>,
    ) -> Option<Conflict> {
        let me = InstanceRef {
            namespace: inst.namespace.clone(),
            name: inst.name.clone(),
        };
        if inst.namespace.is_empty() {
            return Some(Conflict::InvalidInstance(IpamError::InvalidInstance {
                namespace: inst.namespace.clone(),
                name: inst.name.clone(),
                reason: "metadata.namespace is empty".into(),
            }));
        }
        let ip = inst.ip.to_canonical();
        let Some(&id) = self.subnet_ids.get(&inst.subnet) else {
            return Some(Conflict::UnknownSubnet {
                instance: me,
                subnet: inst.subnet.clone(),
            });
        };
        let s = self.sub(id)?;
        if s.network != inst.network {
            return Some(Conflict::NetworkMismatch {
                instance: me,
                subnet: inst.subnet.clone(),
                instance_network: inst.network.clone(),
                subnet_network: s.network.clone(),
            });
        }
        if let Some(reason) = unusable_reason(&s.range, ip) {
            return Some(Conflict::OutsideSubnet {
                instance: me,
                ip,
                subnet: inst.subnet.clone(),
                reason,
            });
        }
        let off = s.offset_of(ip)?;
        if let Some(h) = s.holder(off) {
            let net = self.networks.get(&inst.network)?;
            let kept = InstanceRef {
                namespace: net.pods.namespace(h.slot).to_string(),
                name: hybridnet_api::naming::ip_to_instance_name(ip),
            };
            duplicates
                .entry((inst.subnet.clone(), hybridnet_api::ipmath::ip_to_u128(ip)))
                .or_insert_with(|| (kept, Vec::new()))
                .1
                .push(me);
            return None;
        }
        let net = self.networks.get_mut(&inst.network)?;
        let slot = match &inst.pod {
            Some(name) => net.pods.find_or_insert(&PodKey::new(&inst.namespace, name)),
            None => net.pods.insert_anonymous(&inst.namespace),
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
        if let Some(mac) = inst.mac
            && net.pods.slot(slot).mac.is_none()
        {
            match net.pods.mac_holder(mac) {
                Some(other) if other != slot => {
                    if let (Some(kept), Some(other)) = (net.pods.key(other), net.pods.key(slot)) {
                        mac_conflicts.push(Conflict::DuplicateMac {
                            mac,
                            network: inst.network.clone(),
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

    /// Builds an IPAM from the CRD objects, cursors from their status. Objects that do not
    /// parse are reported as conflicts.
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
        let mut insts = Vec::with_capacity(instances.len());
        for i in instances {
            match InstanceInput::from_crd(i) {
                Ok(x) => insts.push(x),
                Err(e) => conflicts.push(Conflict::InvalidInstance(e)),
            }
        }
        let cursors = Cursors::from_status(networks, subnets);
        let (ipam, more) = Ipam::rebuild(&nets, &subs, &insts, &cursors);
        conflicts.extend(more);
        (ipam, conflicts)
    }
}

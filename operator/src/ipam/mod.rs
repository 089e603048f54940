//! IPAM engine: a pure, in-memory allocator. No kube I/O here: the control plane feeds
//! it Networks, Subnets and IPInstances and turns its answers into IPInstances and status.
//!
//! Semantics (upstream `pkg/ipam/`, with the bugs docs/api.md lists fixed):
//!
//! - Networks hold subnets per family, **ordered by subnet name** (upstream used cache order).
//! - [`Ipam::allocate`]: a named subnet is used as is (even when private); otherwise the subnet is
//!   chosen from the family's sticky cursor (`status.lastAllocatedSubnet`/`IPv6Subnet`): the
//!   first subnet, cyclically from the cursor, that is not private and has a free address; the
//!   cursor stays there (one subnet is filled before moving on). Inside the subnet the address
//!   cursor (`status.lastAllocatedIP`) goes round robin, so a freshly released address is not
//!   handed out again at once. Gateway and excluded addresses are never handed out,
//!   spec-reserved ones only by forced assignment. Dual stack is all or nothing: both subnets and
//!   addresses are found before anything changes.
//! - [`Ipam::assign`]: retained and pre-assigned addresses (upstream `pkg/ipam/manager/manager.go`).
//! - [`Ipam::release`] frees an address (call it when the IPInstance is gone: an address is free
//!   only after its IPInstance is); [`Ipam::reserve`] keeps it for a stateful pod that is gone.
//! - [`Ipam::allocate_mac`]: one MAC per pod and network, unique within the network.
//! - [`Ipam::subnet_usage`] / [`Ipam::network_usage`]: the counters of upstream `pkg/ipam/types/usage.go`, kept incrementally.
//! - [`Ipam::cursors`] / [`Ipam::restore_cursors`] and [`Ipam::rebuild`] (idempotent, reports
//!   [`Conflict`]s instead of picking silently).
//!
//! A refused operation (`Err`) never changes the state.
//!
//! Data layout (see docs/benchmarks.md, `## IPAM`): per subnet a two-level bitmap of addresses
//! that cannot be picked (8 KiB + 128 B for a /16) so the next free address after the cursor is
//! found with a handful of word reads, holders by offset in 1 KiB pages that exist only while one
//! of their 256 addresses is held, and per network a compact pod table (pod -> addresses and
//! MAC; names in one arena, indexes as chains through the slots).

mod bitmap;
mod error;
mod holders;
mod mac;
mod pods;
mod rebuild;
mod subnet;
mod types;

use std::collections::BTreeMap;
use std::net::IpAddr;

use hybridnet_api::v1::IpVersion;

pub use error::{Conflict, InstanceRef, IpamError};
pub use hybridnet_api::operator::IpFamily;
pub use mac::{GENERATED_MAC_PREFIX, MacAddr, MacRandom, default_mac_random};
pub use types::{
    AllocateRequest, Allocation, AssignCandidate, AssignRequest, Cursors, HeldIp, HoldState,
    InstanceInput, NetworkCursors, NetworkInput, NetworkUsage, PodKey, SubnetInput, Usage,
};

use pods::{IpRef, PodTable};
use subnet::{Holder, SubnetState, unusable_reason};
use types::versions_of;

/// How many random MACs are tried before giving up (the space has 2^24 per network).
const MAC_TRIES: u32 = 1024;

fn vi(v: IpVersion) -> usize {
    match v {
        IpVersion::V4 => 0,
        IpVersion::V6 => 1,
    }
}

#[derive(Debug, Default)]
struct NetworkState {
    /// The Network object exists (a network can be known only through its subnets while
    /// events arrive out of order; nothing is allocated from it then).
    declared: bool,
    net_id: Option<i32>,
    /// Subnet ids per family (IPv4, IPv6), sorted by subnet name.
    subnets: [Vec<u32>; 2],
    /// Subnet cursor per family: name of the subnet automatic allocation starts from.
    cursors: [Option<String>; 2],
    pods: PodTable,
}

/// The allocator. Not thread-safe by itself: the control plane keeps it behind one lock (all
/// operations are short; see the benchmarks).
pub struct Ipam {
    networks: BTreeMap<String, NetworkState>,
    /// Subnet slab; ids are stable while the subnet exists.
    subnets: Vec<Option<SubnetState>>,
    subnet_ids: BTreeMap<String, u32>,
    free_subnet_ids: Vec<u32>,
    mac_random: MacRandom,
}

impl Default for Ipam {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("networks", &self.networks.len())
            .field("subnets", &self.subnet_ids.len())
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// An empty IPAM with the default MAC random source.
    pub fn new() -> Self {
        Self {
            networks: BTreeMap::new(),
            subnets: Vec::new(),
            subnet_ids: BTreeMap::new(),
            free_subnet_ids: Vec::new(),
            mac_random: default_mac_random(),
        }
    }

    /// Replaces the random source of generated MACs (tests use a deterministic one).
    pub fn with_mac_random(mut self, random: MacRandom) -> Self {
        self.mac_random = random;
        self
    }

    fn sub(&self, id: u32) -> Option<&SubnetState> {
        self.subnets.get(id as usize).and_then(Option::as_ref)
    }

    // ---------------------------------------------------------------- networks and subnets

    /// Adds or updates a network.
    pub fn upsert_network(&mut self, input: NetworkInput) -> Result<(), IpamError> {
        if input.name.is_empty() {
            return Err(IpamError::InvalidNetwork {
                network: input.name,
                reason: "metadata.name is empty".into(),
            });
        }
        let n = self.networks.entry(input.name).or_default();
        n.declared = true;
        n.net_id = input.net_id;
        Ok(())
    }

    /// Forgets a network. Its subnets (and their holdings) stay until they are removed, but
    /// nothing is allocated from the network any more.
    pub fn remove_network(&mut self, name: &str) {
        if let Some(n) = self.networks.get_mut(name) {
            n.declared = false;
            if n.subnets.iter().all(Vec::is_empty) {
                self.networks.remove(name);
            }
        }
    }

    /// Adds a subnet, or applies a changed spec (reservedIPs, excludeIPs, private, netID)
    /// without disturbing holdings. Refused: changes of network, CIDR, start, end or gateway,
    /// and ranges overlapping another subnet's start..end.
    pub fn upsert_subnet(&mut self, input: SubnetInput) -> Result<(), IpamError> {
        if input.name.is_empty() {
            return Err(IpamError::InvalidSubnet {
                subnet: input.name,
                reason: "metadata.name is empty".into(),
            });
        }
        if let Some(&id) = self.subnet_ids.get(&input.name)
            && let Some(s) = self.subnets.get_mut(id as usize).and_then(Option::as_mut)
        {
            return s.apply_spec(&input);
        }
        let r = &input.range;
        for (other, &oid) in &self.subnet_ids {
            if let Some(o) = self.sub(oid)
                && o.range.version == r.version
                && o.range.start <= r.end
                && r.start <= o.range.end
            {
                return Err(IpamError::OverlappingSubnets {
                    subnet: input.name.clone(),
                    other: other.clone(),
                    start: r.ip(r.start),
                    end: r.ip(r.end),
                });
            }
        }
        let state = SubnetState::new(&input)?;
        let version = state.version();
        let id = match self.free_subnet_ids.pop() {
            Some(id) => {
                self.subnets[id as usize] = Some(state);
                id
            }
            None => {
                self.subnets.push(Some(state));
                (self.subnets.len() - 1) as u32
            }
        };
        self.subnet_ids.insert(input.name.clone(), id);
        let net = self.networks.entry(input.network.clone()).or_default();
        let list = &mut net.subnets[vi(version)];
        let subnets = &self.subnets;
        let name_of = |id: &u32| {
            subnets
                .get(*id as usize)
                .and_then(Option::as_ref)
                .map(|s| s.name.as_str())
                .unwrap_or("")
        };
        let pos = list.partition_point(|x| name_of(x) < input.name.as_str());
        list.insert(pos, id);
        Ok(())
    }

    /// Forgets a subnet and everything held in it; returns the holdings that were dropped (the
    /// webhook refuses to delete a subnet in use, so normally none).
    pub fn remove_subnet(&mut self, name: &str) -> Vec<HeldIp> {
        let Some(id) = self.subnet_ids.remove(name) else {
            return Vec::new();
        };
        let dropped = self.held_in(id);
        let Some(state) = self.subnets.get_mut(id as usize).and_then(Option::take) else {
            return dropped;
        };
        self.free_subnet_ids.push(id);
        if let Some(net) = self.networks.get_mut(&state.network) {
            for (off, h) in state.holders.iter() {
                net.pods.remove_ip(
                    h.slot,
                    IpRef {
                        subnet: id,
                        offset: off,
                    },
                );
            }
            net.subnets[vi(state.version())].retain(|x| *x != id);
            if !net.declared && net.subnets.iter().all(Vec::is_empty) {
                self.networks.remove(&state.network);
            }
        }
        dropped
    }

    /// Looks up a subnet by name and checks it belongs to `network`.
    fn subnet_in(&self, network: &str, subnet: &str) -> Result<u32, IpamError> {
        let id = *self
            .subnet_ids
            .get(subnet)
            .ok_or_else(|| IpamError::UnknownSubnet {
                subnet: subnet.to_string(),
            })?;
        let s = self.sub(id).ok_or_else(|| IpamError::UnknownSubnet {
            subnet: subnet.to_string(),
        })?;
        if s.network != network {
            return Err(IpamError::SubnetNotInNetwork {
                subnet: subnet.to_string(),
                network: network.to_string(),
                actual: s.network.clone(),
            });
        }
        Ok(id)
    }

    fn declared_network(&self, network: &str) -> Result<&NetworkState, IpamError> {
        self.networks
            .get(network)
            .filter(|n| n.declared)
            .ok_or_else(|| IpamError::UnknownNetwork {
                network: network.to_string(),
            })
    }

    /// The subnet automatic allocation of `version` would use now (sticky cursor, not private,
    /// a free address left).
    fn select_subnet(&self, net: &NetworkState, version: IpVersion) -> Option<u32> {
        let list = &net.subnets[vi(version)];
        if list.is_empty() {
            return None;
        }
        let start = match &net.cursors[vi(version)] {
            Some(c) => list
                .partition_point(|id| self.sub(*id).is_some_and(|s| s.name.as_str() < c.as_str())),
            None => 0,
        };
        (0..list.len())
            .map(|k| list[(start + k) % list.len()])
            .find(|id| self.sub(*id).is_some_and(SubnetState::auto_available))
    }

    fn allocation(&self, id: u32, off: u32) -> Option<Allocation> {
        let s = self.sub(id)?;
        let net_id = s
            .net_id
            .or_else(|| self.networks.get(&s.network).and_then(|n| n.net_id));
        Some(Allocation {
            network: s.network.clone(),
            subnet: s.name.clone(),
            ip: s.ip_at(off),
            prefix_len: s.range.cidr.prefix,
            gateway: s.range.gateway.map(|g| s.range.ip(g)),
            net_id,
            version: s.version(),
        })
    }

    // ---------------------------------------------------------------- allocate / assign

    /// Allocates one address per requested family (upstream `pkg/ipam/manager/manager.go`). Returns IPv4 first.
    ///
    /// A pod may already hold addresses of the network (e.g. a stateful pod being re-allocated
    /// while its old IPInstances terminate); they are not touched.
    pub fn allocate(&mut self, req: &AllocateRequest) -> Result<Vec<Allocation>, IpamError> {
        req.pod.validate()?;
        let net = self.declared_network(&req.network)?;
        let versions = versions_of(req.family);
        let mut named: [Option<u32>; 2] = [None, None];
        for name in &req.subnets {
            let id = self.subnet_in(&req.network, name)?;
            let v = self
                .sub(id)
                .map(SubnetState::version)
                .unwrap_or(IpVersion::V4);
            if !versions.contains(&v) {
                return Err(IpamError::WrongFamily {
                    subnet: name.clone(),
                    expected: versions[0],
                    actual: v,
                });
            }
            if named[vi(v)].replace(id).is_some() {
                return Err(IpamError::InvalidRequest {
                    field: "subnets".into(),
                    reason: format!("more than one IPv{v} subnet named: {:?}", req.subnets),
                });
            }
        }
        // Plan every family before changing anything (dual stack is all or nothing).
        // At most two families: a fixed array, no allocation on the hot path.
        let mut plan = [(0u32, 0u32, false); 2];
        for (k, &v) in versions.iter().enumerate() {
            let (id, auto) = match named[vi(v)] {
                Some(id) => (id, false),
                None => {
                    let id =
                        self.select_subnet(net, v)
                            .ok_or_else(|| IpamError::NoAvailableSubnet {
                                network: req.network.clone(),
                                version: v,
                            })?;
                    (id, true)
                }
            };
            let s = self.sub(id).ok_or_else(|| IpamError::UnknownSubnet {
                subnet: format!("#{id}"),
            })?;
            let off = s.next_free().ok_or_else(|| IpamError::SubnetFull {
                subnet: s.name.clone(),
            })?;
            plan[k] = (id, off, auto);
        }
        // Commit.
        let mut out = Vec::with_capacity(versions.len());
        for &(id, off, auto) in &plan[..versions.len()] {
            let Some(net) = self.networks.get_mut(&req.network) else {
                break;
            };
            let Some(s) = self.subnets.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            let slot = net.pods.find_or_insert(&req.pod.namespace, &req.pod.name);
            s.take(
                off,
                Holder {
                    slot,
                    state: HoldState::Allocated,
                },
            );
            s.cursor = Some(off);
            net.pods.add_ip(
                slot,
                IpRef {
                    subnet: id,
                    offset: off,
                },
            );
            if auto {
                let v = vi(s.version());
                if net.cursors[v].as_deref() != Some(s.name.as_str()) {
                    net.cursors[v] = Some(s.name.clone());
                }
            }
            out.extend(self.allocation(id, off));
        }
        Ok(out)
    }

    /// Assigns given addresses to a pod (upstream `pkg/ipam/manager/manager.go`): one candidate, or one IPv4 and one
    /// IPv6. For each: the named subnet (must contain it) or the first subnet of the network, by
    /// name, whose range contains it (private ones included). An address is taken when it is
    /// free and not spec-reserved, or already held by this pod (re-take: becomes Allocated), or,
    /// with `force`, when it is spec-reserved and free or held Reserved for another pod.
    /// All or nothing. Cursors do not move. Returns the allocations in candidate order.
    pub fn assign(&mut self, req: &AssignRequest) -> Result<Vec<Allocation>, IpamError> {
        req.pod.validate()?;
        let net = self.declared_network(&req.network)?;
        match req.candidates.as_slice() {
            [_] => {}
            [a, b] if IpVersion::of(&a.ip) != IpVersion::of(&b.ip) => {}
            _ => {
                return Err(IpamError::InvalidRequest {
                    field: "candidates".into(),
                    reason: format!(
                        "need one address, or one IPv4 and one IPv6 address; got {:?}",
                        req.candidates.iter().map(|c| c.ip).collect::<Vec<_>>()
                    ),
                });
            }
        }
        let me = net.pods.find(&req.pod);
        let mut plan: Vec<(u32, u32)> = Vec::with_capacity(2);
        for c in &req.candidates {
            let ip = c.ip.to_canonical();
            let v = IpVersion::of(&ip);
            let id = match &c.subnet {
                Some(name) => {
                    let id = self.subnet_in(&req.network, name)?;
                    if let Some(s) = self.sub(id)
                        && s.version() != v
                    {
                        return Err(IpamError::WrongFamily {
                            subnet: name.clone(),
                            expected: v,
                            actual: s.version(),
                        });
                    }
                    id
                }
                None => net.subnets[vi(v)]
                    .iter()
                    .copied()
                    .find(|id| self.sub(*id).is_some_and(|s| s.range.contains_ip(ip)))
                    .ok_or_else(|| IpamError::AddressNotInNetwork {
                        ip,
                        network: req.network.clone(),
                        version: v,
                    })?,
            };
            let Some(s) = self.sub(id) else {
                return Err(IpamError::UnknownSubnet {
                    subnet: format!("#{id}"),
                });
            };
            if let Some(reason) = unusable_reason(&s.range, ip) {
                return Err(IpamError::AddressNotInSubnet {
                    ip,
                    subnet: s.name.clone(),
                    reason,
                });
            }
            let Some(off) = s.offset_of(ip) else {
                return Err(IpamError::AddressNotInSubnet {
                    ip,
                    subnet: s.name.clone(),
                    reason: "it is outside the subnet's start..end",
                });
            };
            let refuse = |reason: String| IpamError::AddressNotAvailable {
                ip,
                subnet: s.name.clone(),
                reason,
            };
            match s.holder(off) {
                None if s.is_spec_reserved(off) && !req.force => {
                    return Err(refuse(
                        "it is reserved (spec.range.reservedIPs); only a forced assignment (ip-pool) takes it".into(),
                    ));
                }
                None => {}
                Some(h) if Some(h.slot) == me => {}
                Some(h) if req.force && h.state == HoldState::Reserved => {}
                Some(h) => {
                    let who = net
                        .pods
                        .key(h.slot)
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| format!("{}/(no pod name)", net.pods.namespace(h.slot)));
                    let state = match h.state {
                        HoldState::Allocated => "allocated to",
                        HoldState::Reserved => "reserved for",
                    };
                    return Err(refuse(format!("it is {state} {who}")));
                }
            }
            plan.push((id, off));
        }
        let mut out = Vec::with_capacity(plan.len());
        for (id, off) in plan {
            let Some(net) = self.networks.get_mut(&req.network) else {
                break;
            };
            let Some(s) = self.subnets.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            let slot = net.pods.find_or_insert(&req.pod.namespace, &req.pod.name);
            let r = IpRef {
                subnet: id,
                offset: off,
            };
            let holder = Holder {
                slot,
                state: HoldState::Allocated,
            };
            match s.holder(off) {
                None => {
                    s.take(off, holder);
                    net.pods.add_ip(slot, r);
                }
                Some(old) => {
                    s.set_holder(off, holder);
                    if old.slot != slot {
                        net.pods.remove_ip(old.slot, r);
                        net.pods.add_ip(slot, r);
                    }
                }
            }
            out.extend(self.allocation(id, off));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- release / reserve

    /// Frees an address (when its IPInstance is gone). Returns whether it was held; releasing a
    /// free address is a no-op, so replays are harmless.
    pub fn release(&mut self, network: &str, subnet: &str, ip: IpAddr) -> Result<bool, IpamError> {
        let id = self.subnet_in(network, subnet)?;
        let ip = ip.to_canonical();
        let Some(s) = self.subnets.get_mut(id as usize).and_then(Option::as_mut) else {
            return Ok(false);
        };
        let Some(off) = s.offset_of(ip) else {
            return Err(IpamError::AddressNotInSubnet {
                ip,
                subnet: subnet.to_string(),
                reason: unusable_reason(&s.range, ip).unwrap_or("it is outside the subnet"),
            });
        };
        let Some(h) = s.release(off) else {
            return Ok(false);
        };
        if let Some(net) = self.networks.get_mut(network) {
            net.pods.remove_ip(
                h.slot,
                IpRef {
                    subnet: id,
                    offset: off,
                },
            );
        }
        Ok(true)
    }

    /// Marks a held address Reserved (its stateful pod is gone); the pod keeps it and a forced
    /// assignment of another pod may take it.
    pub fn reserve(&mut self, network: &str, subnet: &str, ip: IpAddr) -> Result<(), IpamError> {
        let id = self.subnet_in(network, subnet)?;
        let ip = ip.to_canonical();
        let Some(s) = self.subnets.get_mut(id as usize).and_then(Option::as_mut) else {
            return Err(IpamError::UnknownSubnet {
                subnet: subnet.to_string(),
            });
        };
        let not_held = || IpamError::NotHeld {
            ip,
            subnet: subnet.to_string(),
        };
        let off = s.offset_of(ip).ok_or_else(not_held)?;
        let h = s.holder(off).ok_or_else(not_held)?;
        s.set_holder(
            off,
            Holder {
                slot: h.slot,
                state: HoldState::Reserved,
            },
        );
        Ok(())
    }

    /// Marks every address of a pod in a network Reserved; returns how many.
    pub fn reserve_pod(&mut self, network: &str, pod: &PodKey) -> usize {
        let Some(net) = self.networks.get(network) else {
            return 0;
        };
        let Some(slot) = net.pods.find(pod) else {
            return 0;
        };
        let refs = net.pods.ips(slot);
        for r in &refs {
            if let Some(s) = self
                .subnets
                .get_mut(r.subnet as usize)
                .and_then(Option::as_mut)
            {
                s.set_holder(
                    r.offset,
                    Holder {
                        slot,
                        state: HoldState::Reserved,
                    },
                );
            }
        }
        refs.len()
    }

    // ---------------------------------------------------------------- queries

    fn held(&self, net: &NetworkState, id: u32, off: u32, h: Holder) -> Option<HeldIp> {
        let s = self.sub(id)?;
        Some(HeldIp {
            network: s.network.clone(),
            subnet: s.name.clone(),
            ip: s.ip_at(off),
            namespace: net.pods.namespace(h.slot).to_string(),
            pod: net
                .pods
                .is_named(h.slot)
                .then(|| net.pods.name(h.slot).to_string()),
            state: h.state,
            mac: net.pods.mac(h.slot),
        })
    }

    fn held_in(&self, id: u32) -> Vec<HeldIp> {
        let Some(s) = self.sub(id) else {
            return Vec::new();
        };
        let Some(net) = self.networks.get(&s.network) else {
            return Vec::new();
        };
        s.holders
            .iter()
            .filter_map(|(off, h)| self.held(net, id, off, h))
            .collect()
    }

    /// Every held address, sorted by subnet name then address.
    pub fn held_ips(&self) -> Vec<HeldIp> {
        self.subnet_ids
            .values()
            .flat_map(|id| self.held_in(*id))
            .collect()
    }

    /// Number of held addresses.
    pub fn held_count(&self) -> usize {
        self.subnets.iter().flatten().map(|s| s.holders.len()).sum()
    }

    /// The addresses a pod holds in a network, sorted IPv4 first, then by subnet and address.
    pub fn pod_ips(&self, network: &str, pod: &PodKey) -> Vec<HeldIp> {
        let Some(net) = self.networks.get(network) else {
            return Vec::new();
        };
        let Some(slot) = net.pods.find(pod) else {
            return Vec::new();
        };
        let mut v: Vec<HeldIp> = net
            .pods
            .ips(slot)
            .into_iter()
            .filter_map(|r| {
                let h = self.sub(r.subnet)?.holder(r.offset)?;
                self.held(net, r.subnet, r.offset, h)
            })
            .collect();
        v.sort_by(|a, b| {
            (IpVersion::of(&a.ip), &a.subnet, a.ip).cmp(&(IpVersion::of(&b.ip), &b.subnet, b.ip))
        });
        v
    }

    /// Who holds `ip` in a network, if anyone.
    pub fn holder_of(&self, network: &str, ip: IpAddr) -> Option<HeldIp> {
        let ip = ip.to_canonical();
        let net = self.networks.get(network)?;
        net.subnets[vi(IpVersion::of(&ip))].iter().find_map(|id| {
            let s = self.sub(*id)?;
            let off = s.offset_of(ip)?;
            let h = s.holder(off)?;
            self.held(net, *id, off, h)
        })
    }

    /// The pod's held addresses that are not among `candidates`, compared as addresses (upstream
    /// an upstream bug compared raw bytes with text and so listed all of them). The caller deletes
    /// their IPInstances before a forced assignment; this does not free them (they are freed by
    /// [`Ipam::release`] once the IPInstances are gone).
    pub fn recycle_non_candidates(
        &self,
        network: &str,
        pod: &PodKey,
        candidates: &[IpAddr],
    ) -> Vec<HeldIp> {
        let wanted: Vec<IpAddr> = candidates.iter().map(|ip| ip.to_canonical()).collect();
        self.pod_ips(network, pod)
            .into_iter()
            .filter(|h| !wanted.contains(&h.ip))
            .collect()
    }

    // ---------------------------------------------------------------- MAC

    /// The pod's MAC in a network: the requested one (a mac-pool entry; normalised, refused when
    /// another pod of the network has it), else the one it already has, else a generated
    /// `02:12:34:xx:xx:xx` unique in the network. The pod must hold an address of the network
    /// (call after allocate/assign): the MAC lives as long as the pod holds addresses there.
    pub fn allocate_mac(
        &mut self,
        network: &str,
        pod: &PodKey,
        requested: Option<&str>,
    ) -> Result<MacAddr, IpamError> {
        let Some(net) = self.networks.get_mut(network) else {
            return Err(IpamError::UnknownNetwork {
                network: network.to_string(),
            });
        };
        let slot = net
            .pods
            .find(pod)
            .ok_or_else(|| IpamError::PodHasNoAddress {
                network: network.to_string(),
                pod: pod.clone(),
            })?;
        if let Some(raw) = requested {
            let mac = MacAddr::parse_unicast(raw).map_err(|reason| IpamError::InvalidMac {
                value: raw.to_string(),
                reason,
            })?;
            if let Some(other) = net.pods.mac_holder(mac)
                && other != slot
            {
                let holder = net
                    .pods
                    .key(other)
                    .unwrap_or_else(|| PodKey::new(net.pods.namespace(other), "(no pod name)"));
                return Err(IpamError::MacInUse {
                    mac,
                    network: network.to_string(),
                    holder,
                });
            }
            net.pods.set_mac(slot, mac);
            return Ok(mac);
        }
        if let Some(mac) = net.pods.mac(slot) {
            return Ok(mac);
        }
        for _ in 0..MAC_TRIES {
            let mac = MacAddr::generated((self.mac_random)());
            if net.pods.mac_holder(mac).is_none() {
                net.pods.set_mac(slot, mac);
                return Ok(mac);
            }
        }
        Err(IpamError::MacSpaceExhausted {
            network: network.to_string(),
            tries: MAC_TRIES,
        })
    }

    // ---------------------------------------------------------------- usage and cursors

    /// Counters of one subnet (upstream `pkg/ipam/types/usage.go`).
    pub fn subnet_usage(&self, subnet: &str) -> Option<Usage> {
        self.sub(*self.subnet_ids.get(subnet)?)
            .map(SubnetState::usage)
    }

    /// Counters of one network (see [`NetworkUsage`] for private subnets).
    pub fn network_usage(&self, network: &str) -> Option<NetworkUsage> {
        let net = self.networks.get(network)?;
        let mut u = NetworkUsage::default();
        for v in [IpVersion::V4, IpVersion::V6] {
            let (fam, auto) = match v {
                IpVersion::V4 => (&mut u.v4, &mut u.v4_auto_available),
                IpVersion::V6 => (&mut u.v6, &mut u.v6_auto_available),
            };
            for s in net.subnets[vi(v)].iter().filter_map(|id| self.sub(*id)) {
                let su = s.usage();
                fam.add(&su);
                if !s.private {
                    *auto += su.available;
                }
            }
        }
        u.dual_stack_available = u.v4.available.min(u.v6.available);
        u.dual_stack_auto_available = u.v4_auto_available.min(u.v6_auto_available);
        Some(u)
    }

    /// Names of a network's subnets, sorted (`status.subnetList`).
    pub fn subnet_names(&self, network: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .networks
            .get(network)
            .map(|n| {
                n.subnets
                    .iter()
                    .flatten()
                    .filter_map(|id| self.sub(*id).map(|s| s.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The cursors to persist: network subnet cursors and subnet address cursors.
    pub fn cursors(&self) -> Cursors {
        let mut c = Cursors::default();
        for (name, n) in &self.networks {
            let nc = NetworkCursors {
                last_allocated_subnet: n.cursors[0].clone(),
                last_allocated_ipv6_subnet: n.cursors[1].clone(),
            };
            if nc != NetworkCursors::default() {
                c.networks.insert(name.clone(), nc);
            }
        }
        for (name, id) in &self.subnet_ids {
            if let Some(s) = self.sub(*id)
                && let Some(off) = s.cursor
            {
                c.subnets.insert(name.clone(), s.ip_at(off));
            }
        }
        c
    }

    /// Restores persisted cursors (after a rebuild). Unknown names and addresses outside a
    /// subnet's start..end are ignored.
    pub fn restore_cursors(&mut self, cursors: &Cursors) {
        for (name, nc) in &cursors.networks {
            if let Some(n) = self.networks.get_mut(name) {
                n.cursors = [
                    nc.last_allocated_subnet.clone().filter(|s| !s.is_empty()),
                    nc.last_allocated_ipv6_subnet
                        .clone()
                        .filter(|s| !s.is_empty()),
                ];
            }
        }
        for (name, ip) in &cursors.subnets {
            if let Some(&id) = self.subnet_ids.get(name)
                && let Some(s) = self.subnets.get_mut(id as usize).and_then(Option::as_mut)
                && let Some(off) = s.offset_of(ip.to_canonical())
            {
                s.cursor = Some(off);
            }
        }
    }

    // ---------------------------------------------------------------- checks and size

    /// Recounts everything from scratch and compares with the incremental state: counters,
    /// bitmap, holder <-> pod links, MAC index. For tests and debugging; O(size).
    pub fn check_consistency(&self) -> Result<(), String> {
        for (name, &id) in &self.subnet_ids {
            let s = self
                .sub(id)
                .ok_or_else(|| format!("subnet {name}: id {id} empty"))?;
            let (recount, clear_bits) = s.recount();
            if recount != s.usage() {
                return Err(format!(
                    "subnet {name}: counters {:?} != recount {recount:?}",
                    s.usage()
                ));
            }
            if clear_bits != recount.available {
                return Err(format!(
                    "subnet {name}: {clear_bits} pickable addresses in the bitmap, {} available",
                    recount.available
                ));
            }
            let net = self
                .networks
                .get(&s.network)
                .ok_or_else(|| format!("subnet {name}: network {} missing", s.network))?;
            if !net.subnets[vi(s.version())].contains(&id) {
                return Err(format!(
                    "subnet {name}: not listed in network {}",
                    s.network
                ));
            }
            for (off, h) in s.holders.iter() {
                let refs = net.pods.ips(h.slot);
                if !refs.contains(&IpRef {
                    subnet: id,
                    offset: off,
                }) {
                    return Err(format!(
                        "subnet {name}: {} held by slot {} which does not list it",
                        s.ip_at(off),
                        h.slot
                    ));
                }
            }
        }
        for (nname, net) in &self.networks {
            let mut live = 0;
            let mut seen = std::collections::HashSet::new();
            for (i, refs) in net.pods.live_slots() {
                live += 1;
                if refs.is_empty() {
                    return Err(format!("network {nname}: slot {i} holds nothing"));
                }
                for r in refs {
                    if !seen.insert(r) {
                        return Err(format!("network {nname}: {r:?} listed twice"));
                    }
                    let h = self
                        .sub(r.subnet)
                        .and_then(|s| s.holder(r.offset))
                        .ok_or_else(|| format!("network {nname}: slot {i} lists free {r:?}"))?;
                    if h.slot != i {
                        return Err(format!("network {nname}: {r:?} held by {} not {i}", h.slot));
                    }
                }
                if let Some(m) = net.pods.mac(i)
                    && net.pods.is_named(i)
                    && net.pods.mac_holder(m) != Some(i)
                {
                    return Err(format!("network {nname}: MAC {m} of slot {i} not indexed"));
                }
            }
            if live != net.pods.len() {
                return Err(format!(
                    "network {nname}: {live} live slots, counter {}",
                    net.pods.len()
                ));
            }
        }
        Ok(())
    }

    /// Approximate bytes owned by the IPAM (capacities of its vectors and maps). The benchmark
    /// measures the real figure with a counting allocator.
    pub fn approx_bytes(&self) -> usize {
        let subnets: usize = self
            .subnets
            .iter()
            .flatten()
            .map(SubnetState::approx_bytes)
            .sum();
        let pods: usize = self.networks.values().map(|n| n.pods.approx_bytes()).sum();
        std::mem::size_of::<Self>() + subnets + pods
    }
}

//! The diffing apply. See the module docs of `dataplane` for what is owned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hybridnet_api::ipmath::u128_to_ip;
use hybridnet_api::v1::IpVersion;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::packet_route::route::{RouteProtocol, RouteType};
use rtnetlink::packet_route::rule::RuleAction;
use rtnetlink::{Handle, LinkUnspec, LinkVlan, LinkVxlan, RouteMessageBuilder};
use tracing::{debug, info, warn};

use super::changes::{EntryModel, KernelChanges, NeighbourEvent, Sections, contradicts};
use super::diff::{self, RouteOp, RuleOp, scope_of};
use super::kernel::{self, BatchRequest, EEXIST, ENOENT, ESRCH, KernelError, KernelLink, errno};
use super::link_diff::{LinkOp, VxlanDeletion, diff_links, diff_vxlan_addresses, host_prefix};
use super::neigh_diff::{
    FdbDiff, HeldNeighbour, NeighbourDiff, ProxyDiff, ProxyOwnership, diff_fdb, diff_proxies,
    diff_vxlan_neighbours,
};
use super::nft::NftRunner;
use super::sysctl::write_sysctl;
use crate::plan::{DataPlanePlan, MacAddr, PlannedRoute, PolicyRule, RouteKind, TableConfig};

/// What one apply changed, per object kind, and what failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// kind -> (added or replaced, removed)
    pub changes: BTreeMap<&'static str, (usize, usize)>,
    /// Failures of single objects; the rest of the plan was still applied.
    pub errors: Vec<String>,
}

impl ApplyReport {
    pub(super) fn add(&mut self, kind: &'static str) {
        self.changes.entry(kind).or_default().0 += 1;
    }
    pub(super) fn del(&mut self, kind: &'static str) {
        self.changes.entry(kind).or_default().1 += 1;
    }
    pub(super) fn fail(&mut self, e: impl std::fmt::Display) {
        let s = e.to_string();
        warn!(error = %s, "data plane object not applied");
        self.errors.push(s);
    }
    /// Nothing was changed.
    pub fn is_noop(&self) -> bool {
        self.changes.values().all(|(a, d)| *a == 0 && *d == 0)
    }
    pub fn total_changes(&self) -> usize {
        self.changes.values().map(|(a, d)| a + d).sum()
    }
}

/// Applies plans. Remembers what the last apply left in the kernel, so that the next one
/// ([`Applier::apply_changes`]) diffs the new plan against that instead of dumping the kernel:
/// only the entries a change implies are touched, and a plan equal to the last one costs no
/// kernel I/O. [`Applier::apply`] is the full resync (dump and diff everything).
pub struct Applier {
    handle: Handle,
    tables: TableConfig,
    nft: NftRunner,
    /// Batched requests (FDB and neighbour entries); opened on first use in the caller's namespace.
    batcher: Option<kernel::Batcher>,
    known: Option<Known>,
}

/// What the kernel holds after the last apply, as that apply left it.
#[derive(Debug, Default)]
struct Known {
    sections: Sections,
    /// Link name -> index.
    index: BTreeMap<String, u32>,
    vxlan: Option<u32>,
    /// FDB entries of the VXLAN device.
    fdb: BTreeSet<(MacAddr, IpAddr)>,
    /// Neighbour entries of the VXLAN device (ours, and the kernel's own kept ones).
    neighbours: BTreeMap<IpAddr, HeldNeighbour>,
    /// Proxy entries of every device.
    proxies: BTreeSet<(u32, IpAddr)>,
    /// Parts whose last apply reported an error: dumped and diffed again next time.
    retry: KernelChanges,
}

fn ignore_exists(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

fn ignore_missing(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH)) => Ok(()),
        other => other,
    }
}

impl Applier {
    pub fn new(handle: Handle, tables: TableConfig, nft: NftRunner) -> Self {
        Self {
            handle,
            tables,
            nft,
            batcher: None,
            known: None,
        }
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Brings the kernel to `plan`, reading (dumping) every kind of object it programs: the full
    /// resync. Single objects that fail are reported, not fatal; a failure to read kernel state is.
    pub async fn apply(&mut self, plan: &DataPlanePlan) -> Result<ApplyReport, KernelError> {
        self.known = None;
        self.run(plan, None, KernelChanges::EVERYTHING).await
    }

    /// Brings the kernel to `plan`, starting from what the last apply left and the kernel
    /// `changes` notifications reported since: a part of the plan that is unchanged and was not
    /// changed in the kernel is skipped; FDB, neighbour and proxy entries are diffed against the
    /// last apply's (no dump) unless `changes.neighbours`. The first apply, and any after
    /// `changes.all`, is a full one.
    pub async fn apply_changes(
        &mut self,
        plan: &DataPlanePlan,
        changes: KernelChanges,
    ) -> Result<ApplyReport, KernelError> {
        let known = if changes.all { None } else { self.known.take() };
        self.run(plan, known, changes).await
    }

    /// Whether neighbour notifications say the kernel's FDB, neighbour or proxy entries differ
    /// from what the last apply left (see [`super::changes::contradicts`]). True when nothing is
    /// known.
    pub fn contradicted_by(&self, events: &[NeighbourEvent]) -> bool {
        let Some(k) = &self.known else { return true };
        let m = EntryModel {
            vxlan: k.vxlan,
            fdb: &k.fdb,
            neighbours: &k.neighbours,
            proxies: &k.proxies,
            cluster_cidrs: &k.sections.enhanced.1,
        };
        events.iter().any(|e| contradicts(e, &m))
    }

    /// The VXLAN device's index after the last apply.
    pub fn vxlan_index(&self) -> Option<u32> {
        self.known.as_ref().and_then(|k| k.vxlan)
    }

    async fn run(
        &mut self,
        plan: &DataPlanePlan,
        prev: Option<Known>,
        changes: KernelChanges,
    ) -> Result<ApplyReport, KernelError> {
        let full = prev.is_none();
        let prev = prev.unwrap_or_default();
        let dirty = if full {
            KernelChanges::EVERYTHING
        } else {
            changes.union(prev.retry)
        };
        let want = Sections::of(plan, plan.nft.transaction());
        let mut rep = ApplyReport::default();
        let mut retry = KernelChanges::default();
        let h = self.handle.clone();
        let mut families = vec![IpVersion::V4];
        if super::host::ipv6_enabled() {
            families.push(IpVersion::V6);
        }
        let sysctls = dirty.links || want.sysctls != prev.sections.sysctls;
        // A host whose IPv6 default route was learnt by router advertisement would lose it when
        // forwarding is turned on (accept_ra=1 ignores RAs on routers): keep accepting them (2).
        if plan.sysctls.contains_key("net/ipv6/conf/all/forwarding") && (sysctls || dirty.routes) {
            self.keep_accepting_ra(&mut rep).await;
        }
        // Forwarding first: nothing below works without it.
        if sysctls {
            for key in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
                if let Some(v) = plan.sysctls.get(key) {
                    match write_sysctl(key, v) {
                        Ok(true) => rep.add("sysctl"),
                        Ok(false) => {}
                        Err(e) => rep.fail(e),
                    }
                }
            }
        }

        let errors = rep.errors.len();
        let (index, links) = if dirty.links || want.links != prev.sections.links {
            let mut links = kernel::links(&h).await?;
            let mut changed_links = self.apply_links(plan, &links, &mut rep).await;
            if changed_links {
                links = kernel::links(&h).await?;
            }
            changed_links |= self.apply_vxlan_addresses(plan, &links, &mut rep).await;
            if changed_links {
                links = kernel::links(&h).await?;
            }
            let index: BTreeMap<String, u32> = links
                .iter()
                .map(|l| (l.iface.name.clone(), l.iface.index))
                .collect();
            (index, Some(links))
        } else {
            (prev.index.clone(), None)
        };
        let index_changed = full || index != prev.index;
        let vx_index = plan
            .vxlan
            .as_ref()
            .and_then(|v| index.get(&v.name).copied());

        // ARP enhancement: after the VLAN links exist.
        if (dirty.links || dirty.routes || index_changed || want.enhanced != prev.sections.enhanced)
            && let Err(e) =
                super::arp_enhance::apply_enhanced_addresses(&h, plan, &index, &mut rep).await
        {
            rep.fail(e);
        }
        retry.links = rep.errors.len() > errors;

        let mut known = Known {
            index,
            vxlan: vx_index,
            ..Default::default()
        };
        // The entries of the last apply stand for the kernel's unless someone else changed them
        // or the device is another one.
        let trust = !dirty.neighbours && vx_index == prev.vxlan;
        if let Some(vx) = vx_index {
            let fdb = if trust {
                prev.fdb
            } else {
                kernel::fdb(&h, vx)
                    .await?
                    .iter()
                    .filter_map(|n| Some((n.lladdr?, n.ip?)))
                    .collect()
            };
            known.fdb = self.apply_fdb(plan, vx, fdb, &mut rep).await;
            let neighbours = if trust {
                prev.neighbours
            } else {
                kernel::neighbours(&h, false)
                    .await?
                    .into_iter()
                    .filter(|n| n.ifindex == vx)
                    .filter_map(|n| {
                        Some((
                            n.ip?,
                            HeldNeighbour {
                                lladdr: n.lladdr,
                                permanent: n.state == NeighbourState::Permanent,
                            },
                        ))
                    })
                    .collect()
            };
            known.neighbours = self
                .apply_vxlan_neighbours(plan, vx, neighbours, &mut rep)
                .await;
        }
        let proxies = if trust && !index_changed {
            prev.proxies
        } else {
            kernel::neighbours(&h, true)
                .await?
                .into_iter()
                .filter_map(|n| Some((n.ifindex, n.ip?)))
                .collect()
        };
        known.proxies = self
            .apply_proxies(plan, &known.index, proxies, &mut rep)
            .await;

        if dirty.routes || dirty.rules || index_changed || want.routing != prev.sections.routing {
            let errors = rep.errors.len();
            for &f in &families {
                self.apply_routes_and_rules(plan, f, &known.index, &mut rep)
                    .await?;
            }
            retry.routes = rep.errors.len() > errors;
        }

        let mut sections = want;
        if full || sections.nft != prev.sections.nft {
            match self.nft.apply(&sections.nft).await {
                Ok(true) => rep.add("nftables"),
                Ok(false) => {}
                Err(e) => {
                    rep.fail(e);
                    // Not applied: tried again next time.
                    sections.nft.clear();
                }
            }
        }
        if sysctls {
            let errors = rep.errors.len();
            let have_link = |dev: &str| match &links {
                Some(l) => l.iter().any(|l| l.iface.name == dev),
                None => known.index.contains_key(dev),
            };
            for (k, v) in &plan.sysctls {
                // Per-device keys of devices that are gone (removed above, or a veth that vanished).
                let parts: Vec<&str> = k.split('/').collect();
                if parts.len() == 5
                    && (parts[2] == "conf" || parts[2] == "neigh")
                    && !["all", "default"].contains(&parts[3])
                    && !have_link(parts[3])
                {
                    continue;
                }
                match write_sysctl(k, v) {
                    Ok(true) => rep.add("sysctl"),
                    Ok(false) => {}
                    Err(e) => rep.fail(e),
                }
            }
            retry.links |= rep.errors.len() > errors;
        }
        known.sections = sections;
        known.retry = retry;
        self.known = Some(known);
        Ok(rep)
    }

    /// Runs `reqs` batched (see [`kernel::Batcher`]); one result per request.
    async fn batch(
        &mut self,
        reqs: Vec<BatchRequest>,
        rep: &mut ApplyReport,
    ) -> Vec<Result<(), rtnetlink::Error>> {
        if reqs.is_empty() {
            return Vec::new();
        }
        if self.batcher.is_none() {
            match kernel::Batcher::open() {
                Ok(b) => self.batcher = Some(b),
                Err(e) => rep.fail(e),
            }
        }
        match &self.batcher {
            Some(b) => b.run(reqs).await,
            None => reqs
                .iter()
                .map(|_| Err(rtnetlink::Error::RequestFailed))
                .collect(),
        }
    }

    async fn keep_accepting_ra(&self, rep: &mut ApplyReport) {
        let Ok(routes) = kernel::routes(&self.handle, IpVersion::V6).await else {
            return;
        };
        let Ok(links) = kernel::links(&self.handle).await else {
            return;
        };
        for r in routes.iter().filter(|r| {
            r.table == 254 && r.dst.prefix == 0 && r.msg.header.protocol == RouteProtocol::Ra
        }) {
            let Some(dev) = links
                .iter()
                .find(|l| Some(l.iface.index) == r.oif)
                .map(|l| l.iface.name.clone())
            else {
                continue;
            };
            let key = format!("net/ipv6/conf/{dev}/accept_ra");
            if super::sysctl::read_sysctl(&key).ok().as_deref() == Some("1") {
                match write_sysctl(&key, "2") {
                    Ok(true) => {
                        info!(dev = %dev, "IPv6 default route came from RA: accept_ra=2");
                        rep.add("sysctl");
                    }
                    Ok(false) => {}
                    Err(e) => rep.fail(e),
                }
            }
        }
    }

    async fn apply_links(
        &self,
        plan: &DataPlanePlan,
        links: &[KernelLink],
        rep: &mut ApplyReport,
    ) -> bool {
        let h = &self.handle;
        let diff = diff_links(&plan.vlan_links, plan.vxlan.as_ref(), links);
        for p in diff.problems {
            rep.fail(p);
        }
        let mut changed = false;
        // A differing VXLAN device that could not be deleted is not recreated.
        let mut vxlan_blocked = false;
        for op in diff.ops {
            match op {
                LinkOp::SetUp { index, name } => {
                    let msg = LinkUnspec::new_with_index(index).up().build();
                    match h.link().set(msg).execute().await {
                        Ok(()) => {
                            rep.add("link");
                            changed = true;
                        }
                        Err(e) => rep.fail(KernelError::netlink(format!("set {name} up"), e)),
                    }
                }
                LinkOp::CreateVlan { link, parent_index } => {
                    let msg = LinkVlan::new(&link.name, parent_index, link.id)
                        .up()
                        .build();
                    match ignore_exists(h.link().add(msg).execute().await) {
                        Ok(()) => {
                            info!(link = %link.name, id = link.id, "created VLAN link");
                            rep.add("link");
                            changed = true;
                        }
                        Err(e) => rep.fail(KernelError::netlink(
                            format!(
                                "create VLAN link {} (id {} on {})",
                                link.name, link.id, link.parent
                            ),
                            e,
                        )),
                    }
                }
                LinkOp::DeleteVxlan { index, name, why } => {
                    if why == VxlanDeletion::Differs {
                        warn!(link = %name, "VXLAN device differs from the plan; recreating it");
                    }
                    match ignore_missing(h.link().del(index).execute().await) {
                        Ok(()) => {
                            if why == VxlanDeletion::Stale {
                                info!(link = %name, "removed stale VXLAN device");
                            }
                            rep.del("link");
                            changed = true;
                        }
                        Err(e) => {
                            rep.fail(KernelError::netlink(format!("delete {name}"), e));
                            vxlan_blocked |= why == VxlanDeletion::Differs;
                        }
                    }
                }
                LinkOp::CreateVxlan { parent_index } => {
                    let Some(w) = plan.vxlan.as_ref().filter(|_| !vxlan_blocked) else {
                        continue;
                    };
                    let mut b = LinkVxlan::new(&w.name, w.vni)
                        .dev(parent_index)
                        .port(w.port)
                        .learning(false);
                    b = match w.local {
                        IpAddr::V4(v4) => b.local(v4),
                        IpAddr::V6(v6) => b.local6(v6),
                    };
                    let msg = b.mtu(w.mtu).address(w.mac.0.to_vec()).up().build();
                    match h.link().add(msg).execute().await {
                        Ok(()) => {
                            info!(link = %w.name, vni = w.vni, local = %w.local, "created VXLAN device");
                            rep.add("link");
                            changed = true;
                        }
                        Err(e) => rep.fail(KernelError::netlink(
                            format!("create VXLAN device {}", w.name),
                            e,
                        )),
                    }
                }
                LinkOp::SetVxlanUpAndMtu { index } => {
                    let Some(w) = plan.vxlan.as_ref() else {
                        continue;
                    };
                    let msg = LinkUnspec::new_with_index(index).mtu(w.mtu).up().build();
                    match h.link().set(msg).execute().await {
                        Ok(()) => {
                            rep.add("link");
                            changed = true;
                        }
                        Err(e) => {
                            rep.fail(KernelError::netlink(format!("set {} up/mtu", w.name), e))
                        }
                    }
                }
            }
        }
        changed
    }

    async fn apply_vxlan_addresses(
        &self,
        plan: &DataPlanePlan,
        links: &[KernelLink],
        rep: &mut ApplyReport,
    ) -> bool {
        let Some(vx) = &plan.vxlan else { return false };
        let Some(l) = links.iter().find(|l| l.iface.name == vx.name) else {
            return false;
        };
        let h = &self.handle;
        let mut changed = false;
        let diff = diff_vxlan_addresses(&l.iface.addresses, &plan.vxlan_addresses);
        for ip in &diff.add {
            let mut req = h.address().add(l.iface.index, *ip, host_prefix(*ip));
            let mut flags = AddressFlags::Noprefixroute;
            if ip.is_ipv6() {
                flags |= AddressFlags::Nodad;
            }
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(flags));
            match ignore_exists(req.execute().await) {
                Ok(()) => {
                    rep.add("address");
                    changed = true;
                }
                Err(e) => rep.fail(KernelError::netlink(format!("add {ip} to {}", vx.name), e)),
            }
        }
        for (ip, prefix) in diff.delete {
            let msg = match ip {
                IpAddr::V4(v4) => rtnetlink::AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                    .index(l.iface.index)
                    .address(v4, prefix)
                    .build(),
                IpAddr::V6(v6) => rtnetlink::AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                    .index(l.iface.index)
                    .address(v6, prefix)
                    .build(),
            };
            match ignore_missing(h.address().del(msg).execute().await) {
                Ok(()) => {
                    rep.del("address");
                    changed = true;
                }
                Err(e) => rep.fail(KernelError::netlink(
                    format!("delete {ip} from {}", vx.name),
                    e,
                )),
            }
        }
        changed
    }

    /// Brings the FDB of the VXLAN device from `have` to the plan; returns the entries it holds
    /// afterwards (`have` with the changes that succeeded).
    async fn apply_fdb(
        &mut self,
        plan: &DataPlanePlan,
        vx: u32,
        mut have: BTreeSet<(MacAddr, IpAddr)>,
        rep: &mut ApplyReport,
    ) -> BTreeSet<(MacAddr, IpAddr)> {
        let diff = diff_fdb(&have, &plan.fdb, plan.fdb_prune);
        if diff.is_empty() {
            return have;
        }
        let reqs = diff
            .append
            .iter()
            .map(|&(mac, dst)| BatchRequest::fdb_append(vx, mac, dst))
            .chain(
                diff.delete
                    .iter()
                    .map(|&(mac, dst)| BatchRequest::fdb_del(vx, mac, dst)),
            )
            .collect();
        let mut results = self.batch(reqs, rep).await.into_iter();
        let mut done = FdbDiff::default();
        for &(mac, dst) in &diff.append {
            match results.next().map(ignore_exists) {
                Some(Ok(())) => {
                    rep.add("fdb");
                    done.append.push((mac, dst));
                }
                Some(Err(err)) => rep.fail(KernelError::netlink(
                    format!("fdb append {mac} dst {dst}"),
                    err,
                )),
                None => {}
            }
        }
        for &(mac, dst) in &diff.delete {
            match results.next().map(ignore_missing) {
                Some(Ok(())) => {
                    rep.del("fdb");
                    done.delete.push((mac, dst));
                }
                Some(Err(err)) => rep.fail(KernelError::netlink(
                    format!("fdb del {mac} dst {dst}"),
                    err,
                )),
                None => {}
            }
        }
        done.apply_to(&mut have);
        have
    }

    /// Brings the neighbour entries of the VXLAN device from `have` to the plan; returns the
    /// entries afterwards.
    async fn apply_vxlan_neighbours(
        &mut self,
        plan: &DataPlanePlan,
        vx: u32,
        mut have: BTreeMap<IpAddr, HeldNeighbour>,
        rep: &mut ApplyReport,
    ) -> BTreeMap<IpAddr, HeldNeighbour> {
        let diff = diff_vxlan_neighbours(&have, &plan.vxlan_neighbours);
        if diff.is_empty() {
            return have;
        }
        let reqs = diff
            .replace
            .iter()
            .map(|&(ip, mac)| BatchRequest::neighbour_replace(vx, ip, mac))
            .chain(
                diff.delete
                    .iter()
                    .map(|&ip| BatchRequest::neighbour_del(vx, ip)),
            )
            .collect();
        let mut results = self.batch(reqs, rep).await.into_iter();
        let mut done = NeighbourDiff::default();
        for &(ip, mac) in &diff.replace {
            match results.next() {
                Some(Ok(())) => {
                    rep.add("neighbour");
                    done.replace.push((ip, mac));
                }
                Some(Err(e)) => rep.fail(KernelError::netlink(
                    format!("neigh replace {ip} lladdr {mac}"),
                    e,
                )),
                None => {}
            }
        }
        for &ip in &diff.delete {
            match results.next().map(ignore_missing) {
                Some(Ok(())) => {
                    rep.del("neighbour");
                    done.delete.push(ip);
                }
                Some(Err(e)) => rep.fail(KernelError::netlink(format!("neigh del {ip}"), e)),
                None => {}
            }
        }
        done.apply_to(&mut have);
        have
    }

    /// Brings the proxy entries from `have` to the plan; returns the entries afterwards.
    async fn apply_proxies(
        &self,
        plan: &DataPlanePlan,
        index: &BTreeMap<String, u32>,
        mut have: BTreeSet<(u32, IpAddr)>,
        rep: &mut ApplyReport,
    ) -> BTreeSet<(u32, IpAddr)> {
        let h = &self.handle;
        let ownership = ProxyOwnership {
            vxlan: plan
                .vxlan
                .as_ref()
                .and_then(|v| index.get(&v.name).copied()),
            managed: plan
                .proxy_neighbours
                .iter()
                .map(|p| &p.dev)
                .chain(plan.vlan_links.iter().map(|l| &l.name))
                .filter_map(|dev| index.get(dev).copied())
                .collect(),
            cluster_cidrs: &plan.cluster_cidrs,
        };
        let diff = diff_proxies(&have, &plan.proxy_neighbours, index, &ownership);
        for p in &diff.problems {
            rep.fail(p);
        }
        let name = |i: u32| {
            index
                .iter()
                .find(|(_, x)| **x == i)
                .map(|(n, _)| n.as_str())
                .unwrap_or("?")
        };
        let mut done = ProxyDiff::default();
        for &(i, ip) in &diff.add {
            let req = h.neighbours().add(i, ip).flags(NeighbourFlags::Proxy);
            match ignore_exists(req.execute().await) {
                Ok(()) => {
                    rep.add("proxy");
                    done.add.push((i, ip));
                }
                Err(e) => rep.fail(KernelError::netlink(
                    format!("neigh add proxy {ip} dev {}", name(i)),
                    e,
                )),
            }
        }
        for &(i, ip) in &diff.delete {
            match ignore_missing(h.neighbours().del(proxy_message(i, ip)).execute().await) {
                Ok(()) => {
                    rep.del("proxy");
                    done.delete.push((i, ip));
                }
                Err(e) => rep.fail(KernelError::netlink(format!("neigh del proxy {ip}"), e)),
            }
        }
        done.apply_to(&mut have);
        have
    }

    async fn apply_routes_and_rules(
        &self,
        plan: &DataPlanePlan,
        family: IpVersion,
        index: &BTreeMap<String, u32>,
        rep: &mut ApplyReport,
    ) -> Result<(), KernelError> {
        let h = &self.handle;
        let t = &self.tables;
        let rules = kernel::rules(h, family).await?;
        let owned = diff::owned_tables(&plan.owned_tables, &rules, t);

        // Routes before rules: a new rule never points at an empty table.
        let have = kernel::routes(h, family).await?;
        let want: Vec<&PlannedRoute> = plan
            .routes
            .iter()
            .filter(|r| r.family() == family)
            .collect();
        let d = diff::diff_routes(&want, &have, index, &owned, t);
        for p in d.problems {
            rep.fail(p);
        }
        for op in d.ops {
            match op {
                RouteOp::Replace { want: i, oif } => {
                    let r = want[i];
                    // Replace in place (NLM_F_REPLACE): no moment without a route.
                    let msg = match build_route(r, oif) {
                        Ok(m) => m,
                        Err(e) => {
                            rep.fail(e);
                            continue;
                        }
                    };
                    match h.route().add(msg).replace().execute().await {
                        Ok(()) => {
                            debug!(table = r.table, dst = %r.dst, "route programmed");
                            rep.add("route");
                        }
                        Err(e) => rep.fail(KernelError::netlink(
                            format!("route replace {} table {}", r.dst, r.table),
                            e,
                        )),
                    }
                }
                RouteOp::Delete { have: j } => {
                    let k = &have[j];
                    match ignore_missing(h.route().del(k.msg.clone()).execute().await) {
                        Ok(()) => rep.del("route"),
                        Err(e) => rep.fail(KernelError::netlink(
                            format!("route del {} table {}", k.dst, k.table),
                            e,
                        )),
                    }
                }
            }
        }
        // Addresses that moved to another node while the old pod's veth remains.
        for j in diff::stale_local_direct(&have, t, index, &plan.remote_pod_ips) {
            let k = &have[j];
            match ignore_missing(h.route().del(k.msg.clone()).execute().await) {
                Ok(()) => {
                    info!(dst = %k.dst, table = k.table, "removed the local route of an address now at another node");
                    rep.del("route");
                }
                Err(e) => rep.fail(KernelError::netlink(
                    format!("route del {} table {}", k.dst, k.table),
                    e,
                )),
            }
        }

        // Rules: add missing, then remove stale owned ones.
        let want_rules: Vec<&PolicyRule> = plan.rules_of(family).collect();
        for op in diff::diff_rules(&want_rules, &rules, t) {
            match op {
                RuleOp::Add { want: i } => {
                    let w = want_rules[i];
                    match add_rule(h, w).await {
                        Ok(()) => rep.add("rule"),
                        Err(e) => rep.fail(KernelError::netlink(
                            format!("rule add pref {} table {}", w.priority, w.table),
                            e,
                        )),
                    }
                }
                RuleOp::Delete { have: j } => {
                    let r = &rules[j];
                    match ignore_missing(h.rule().del(r.msg.clone()).execute().await) {
                        Ok(()) => {
                            info!(priority = r.priority, table = r.table, "removed stale rule");
                            rep.del("rule");
                        }
                        Err(e) => rep.fail(KernelError::netlink(
                            format!("rule del pref {} table {}", r.priority, r.table),
                            e,
                        )),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The netlink message that deletes proxy entry `ip` on interface `ifindex`.
fn proxy_message(ifindex: u32, ip: IpAddr) -> rtnetlink::packet_route::neighbour::NeighbourMessage {
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourMessage,
    };
    let mut msg = NeighbourMessage::default();
    msg.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.ifindex = ifindex;
    msg.header.flags = NeighbourFlags::Proxy;
    msg.attributes
        .push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    msg
}

fn build_route(
    r: &PlannedRoute,
    oif: Option<u32>,
) -> Result<rtnetlink::packet_route::route::RouteMessage, String> {
    let dst = u128_to_ip(r.dst.version, r.dst.network);
    fn err<E: std::fmt::Debug>(r: &PlannedRoute) -> impl Fn(E) -> String + '_ {
        move |e| format!("route {} table {}: {e:?}", r.dst, r.table)
    }
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, r.dst.prefix)
        .map_err(err(r))?
        .table_id(r.table)
        .protocol(RouteProtocol::Static)
        .scope(scope_of(r));
    match r.kind {
        RouteKind::Throw => b = b.kind(RouteType::Throw),
        RouteKind::Unicast => {
            b = b.kind(RouteType::Unicast);
            if let Some(i) = oif {
                b = b.output_interface(i);
            }
            if let Some(g) = r.via {
                b = b.gateway(g).map_err(err(r))?;
            }
            if let Some(s) = r.src {
                b = b.pref_source(s).map_err(err(r))?;
            }
        }
    }
    Ok(b.build())
}

async fn add_rule(h: &Handle, w: &PolicyRule) -> Result<(), rtnetlink::Error> {
    let base = h
        .rule()
        .add()
        .table_id(w.table)
        .priority(w.priority)
        // Without the action the kernel stores FR_ACT_UNSPEC and lookups fail with EINVAL.
        .action(RuleAction::ToTable);
    let base = match w.fwmark {
        Some((mark, _)) => base.fw_mark(mark),
        None => base,
    };
    match w.family {
        IpVersion::V4 => {
            let mut r = base.v4();
            if let Some(src) = w.src
                && let IpAddr::V4(a) = u128_to_ip(src.version, src.network)
            {
                r = r.source_prefix(a, src.prefix);
            }
            if let Some((_, mask)) = w.fwmark {
                r.message_mut()
                    .attributes
                    .push(rtnetlink::packet_route::rule::RuleAttribute::FwMask(mask));
            }
            ignore_exists(r.execute().await)
        }
        IpVersion::V6 => {
            let mut r = base.v6();
            if let Some(src) = w.src
                && let IpAddr::V6(a) = u128_to_ip(src.version, src.network)
            {
                r = r.source_prefix(a, src.prefix);
            }
            if let Some((_, mask)) = w.fwmark {
                r.message_mut()
                    .attributes
                    .push(rtnetlink::packet_route::rule::RuleAttribute::FwMask(mask));
            }
            ignore_exists(r.execute().await)
        }
    }
}

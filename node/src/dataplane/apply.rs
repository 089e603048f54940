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

use super::diff::{self, RouteOp, RuleOp, scope_of};
use super::kernel::{self, EEXIST, ENOENT, ESRCH, KernelError, KernelLink, errno};
use super::link_diff::{LinkOp, VxlanDeletion, diff_links, diff_vxlan_addresses, host_prefix};
use super::neigh_diff::{
    HeldNeighbour, ProxyOwnership, diff_fdb, diff_proxies, diff_vxlan_neighbours,
};
use super::nft::NftRunner;
use super::sysctl::write_sysctl;
use crate::plan::{DataPlanePlan, PlannedRoute, PolicyRule, RouteKind, TableConfig};

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

/// Applies plans; keeps the nftables state of the last apply.
pub struct Applier {
    handle: Handle,
    tables: TableConfig,
    nft: NftRunner,
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
        }
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Brings the kernel to `plan`. Single objects that fail are reported, not fatal; a failure to
    /// read kernel state is.
    pub async fn apply(&mut self, plan: &DataPlanePlan) -> Result<ApplyReport, KernelError> {
        let mut rep = ApplyReport::default();
        let h = self.handle.clone();
        let mut families = vec![IpVersion::V4];
        if super::host::ipv6_enabled() {
            families.push(IpVersion::V6);
        }
        // A host whose IPv6 default route was learnt by router advertisement would lose it when
        // forwarding is turned on (accept_ra=1 ignores RAs on routers): keep accepting them (2).
        if plan.sysctls.contains_key("net/ipv6/conf/all/forwarding") {
            self.keep_accepting_ra(&mut rep).await;
        }
        // Forwarding first: nothing below works without it.
        for key in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
            if let Some(v) = plan.sysctls.get(key) {
                match write_sysctl(key, v) {
                    Ok(true) => rep.add("sysctl"),
                    Ok(false) => {}
                    Err(e) => rep.fail(e),
                }
            }
        }

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
        let vx_index = plan
            .vxlan
            .as_ref()
            .and_then(|v| index.get(&v.name).copied());

        // ARP enhancement: after the VLAN links exist.
        if let Err(e) =
            super::arp_enhance::apply_enhanced_addresses(&h, plan, &index, &mut rep).await
        {
            rep.fail(e);
        }
        if let Some(vx) = vx_index {
            self.apply_fdb(plan, vx, &mut rep).await?;
            self.apply_vxlan_neighbours(plan, vx, &mut rep).await?;
        }
        self.apply_proxies(plan, &index, &links, &mut rep).await?;
        for &f in &families {
            self.apply_routes_and_rules(plan, f, &index, &mut rep)
                .await?;
        }

        match self.nft.apply(&plan.nft.transaction()).await {
            Ok(true) => rep.add("nftables"),
            Ok(false) => {}
            Err(e) => rep.fail(e),
        }
        for (k, v) in &plan.sysctls {
            // Per-device keys of devices that are gone (removed above, or a veth that vanished).
            let parts: Vec<&str> = k.split('/').collect();
            if parts.len() == 5
                && (parts[2] == "conf" || parts[2] == "neigh")
                && !["all", "default"].contains(&parts[3])
                && !index.contains_key(parts[3])
            {
                continue;
            }
            match write_sysctl(k, v) {
                Ok(true) => rep.add("sysctl"),
                Ok(false) => {}
                Err(e) => rep.fail(e),
            }
        }
        Ok(rep)
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

    async fn apply_fdb(
        &self,
        plan: &DataPlanePlan,
        vx: u32,
        rep: &mut ApplyReport,
    ) -> Result<(), KernelError> {
        let h = &self.handle;
        let have: BTreeSet<(crate::plan::MacAddr, IpAddr)> = kernel::fdb(h, vx)
            .await?
            .iter()
            .filter_map(|n| Some((n.lladdr?, n.ip?)))
            .collect();
        let diff = diff_fdb(&have, &plan.fdb, plan.fdb_prune);
        for (mac, dst) in diff.append {
            match ignore_exists(kernel::fdb_append(h, vx, mac, dst).await) {
                Ok(()) => rep.add("fdb"),
                Err(err) => rep.fail(KernelError::netlink(
                    format!("fdb append {mac} dst {dst}"),
                    err,
                )),
            }
        }
        for (mac, dst) in diff.delete {
            match ignore_missing(kernel::fdb_del(h, vx, mac, dst).await) {
                Ok(()) => rep.del("fdb"),
                Err(err) => rep.fail(KernelError::netlink(
                    format!("fdb del {mac} dst {dst}"),
                    err,
                )),
            }
        }
        Ok(())
    }

    async fn apply_vxlan_neighbours(
        &self,
        plan: &DataPlanePlan,
        vx: u32,
        rep: &mut ApplyReport,
    ) -> Result<(), KernelError> {
        let h = &self.handle;
        let mut have: BTreeMap<IpAddr, kernel::KernelNeighbour> = kernel::neighbours(h, false)
            .await?
            .into_iter()
            .filter(|n| n.ifindex == vx)
            .filter_map(|n| Some((n.ip?, n)))
            .collect();
        let held: BTreeMap<IpAddr, HeldNeighbour> = have
            .iter()
            .map(|(ip, n)| {
                let permanent = n.state == NeighbourState::Permanent;
                (
                    *ip,
                    HeldNeighbour {
                        lladdr: n.lladdr,
                        permanent,
                    },
                )
            })
            .collect();
        let diff = diff_vxlan_neighbours(&held, &plan.vxlan_neighbours);
        for (ip, mac) in diff.replace {
            let req = h
                .neighbours()
                .add(vx, ip)
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace();
            match req.execute().await {
                Ok(()) => rep.add("neighbour"),
                Err(e) => rep.fail(KernelError::netlink(
                    format!("neigh replace {ip} lladdr {mac}"),
                    e,
                )),
            }
        }
        for ip in diff.delete {
            let Some(n) = have.remove(&ip) else { continue };
            match ignore_missing(h.neighbours().del(n.msg).execute().await) {
                Ok(()) => rep.del("neighbour"),
                Err(e) => rep.fail(KernelError::netlink(format!("neigh del {ip}"), e)),
            }
        }
        Ok(())
    }

    async fn apply_proxies(
        &self,
        plan: &DataPlanePlan,
        index: &BTreeMap<String, u32>,
        links: &[KernelLink],
        rep: &mut ApplyReport,
    ) -> Result<(), KernelError> {
        let h = &self.handle;
        let names: BTreeMap<u32, &str> = links
            .iter()
            .map(|l| (l.iface.index, l.iface.name.as_str()))
            .collect();
        let have: BTreeSet<(u32, IpAddr)> = kernel::neighbours(h, true)
            .await?
            .into_iter()
            .filter_map(|n| Some((n.ifindex, n.ip?)))
            .collect();
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
        for p in diff.problems {
            rep.fail(p);
        }
        for (i, ip) in diff.add {
            let req = h.neighbours().add(i, ip).flags(NeighbourFlags::Proxy);
            match ignore_exists(req.execute().await) {
                Ok(()) => rep.add("proxy"),
                Err(e) => rep.fail(KernelError::netlink(
                    format!("neigh add proxy {ip} dev {}", names.get(&i).unwrap_or(&"?")),
                    e,
                )),
            }
        }
        for (i, ip) in diff.delete {
            match ignore_missing(h.neighbours().del(proxy_message(i, ip)).execute().await) {
                Ok(()) => rep.del("proxy"),
                Err(e) => rep.fail(KernelError::netlink(format!("neigh del proxy {ip}"), e)),
            }
        }
        Ok(())
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

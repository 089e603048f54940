//! Pod interface programming: the veth pair, the pod's addresses and routes, and the node-side
//! route, sysctls and proxy entry (upstream `pkg/daemon/containernetwork/containernetwork.go`, with one upstream bug fixed: the pod
//! side is named CNI_IFNAME and DEL works when the netns is gone).
//!
//! Ownership: the host veth carries the alias `hybridnet/<containerID>/<ifname>`. Teardown and
//! GC only delete host veths whose alias names the attachment; deleting the host end removes the
//! pod end, its addresses and routes, the table-39999 routes and the proxy entry with it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use super::addressing::{GATEWAY_V4, GATEWAY_V6, HOST_VETH_MAC};
use super::error::{PodNetError, is_not_found};
use super::netns::{Netns, write_sysctl};
use hybridnet_api::mac::MacAddr;

/// Everything ADD programs for one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterfaceSpec {
    pub container_id: String,
    /// Pod-side name (CNI_IFNAME).
    pub ifname: String,
    /// Host-side name (`hybr` + hash of namespace/pod).
    pub host_veth: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mtu: u32,
    /// Table of the host routes to local pods (upstream `--local-direct-table`, 39999).
    pub local_direct_table: u32,
    /// Write (and check) the host routes in `local_direct_table`. False for a KubeVirt live
    /// migration's target pod while the source pod holds the addresses: traffic to the VM keeps
    /// going to the source node; the agent's plan adds the route when the binding moves here.
    pub local_route: bool,
}

/// The alias that marks a host veth as hybridnet's for one attachment.
pub fn veth_alias(container_id: &str, ifname: &str) -> String {
    format!("hybridnet/{container_id}/{ifname}")
}

/// `(container id, ifname)` of a hybridnet alias.
pub fn parse_veth_alias(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix("hybridnet/")?;
    let (cid, ifname) = rest.split_once('/')?;
    (!cid.is_empty() && !ifname.is_empty() && !ifname.contains('/')).then_some((cid, ifname))
}

/// A host veth found on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVeth {
    pub name: String,
    pub index: u32,
    /// `(container id, ifname)` when the alias says hybridnet made it.
    pub attachment: Option<(String, String)>,
}

/// What teardown found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Teardown {
    Deleted,
    /// No host veth of that name: nothing to do (pod or netns already gone).
    Gone,
    /// The host veth belongs to another attachment (a newer sandbox of the pod); left alone.
    NotOurs(String),
}

// ---------------------------------------------------------------------------------------------
// small netlink helpers

pub(crate) async fn link_by_name(
    h: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, PodNetError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(e) => {
            let e = PodNetError::netlink(format!("looking up link {name}"), e);
            if is_not_found(&e) { Ok(None) } else { Err(e) }
        }
    }
}

pub(crate) fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub(crate) fn link_alias(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_mac(m: &LinkMessage) -> Option<&[u8]> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(v) => Some(v.as_slice()),
        _ => None,
    })
}

fn link_mtu(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(v) => Some(*v),
        _ => None,
    })
}

fn link_is_veth(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn route_dst(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => route_addr(d),
        _ => None,
    })
}

fn route_gw(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(d) => route_addr(d),
        _ => None,
    })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

async fn routes(h: &Handle, v6: bool) -> Result<Vec<RouteMessage>, PodNetError> {
    let msg = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    h.route()
        .get(msg)
        .execute()
        .try_collect()
        .await
        .map_err(|e| PodNetError::netlink("listing routes", e))
}

async fn host_route(h: &Handle, ip: IpAddr, index: u32, table: u32) -> Result<(), PodNetError> {
    let msg = match ip {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .output_interface(index)
            .table_id(table)
            .scope(RouteScope::Link)
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .output_interface(index)
            .table_id(table)
            .build(),
    };
    h.route().add(msg).replace().execute().await.map_err(|e| {
        PodNetError::netlink(format!("adding route {ip} dev #{index} table {table}"), e)
    })
}

/// Upstream v0.7.0: proxy ARP answers for 169.254.1.1 only if the node can route it; when it
/// cannot (no default route), `169.254.1.1/32 dev lo scope link` makes it routable.
async fn ensure_gateway_v4_routable(h: &Handle) -> Result<(), PodNetError> {
    let probe = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(GATEWAY_V4, 32)
        .build();
    match h.route().get(probe).execute().try_next().await {
        Ok(_) => return Ok(()),
        Err(e) => {
            let e = PodNetError::netlink("ip route get 169.254.1.1", e);
            if !matches!(
                e.errno(),
                Some(nix::libc::ENETUNREACH) | Some(nix::libc::EHOSTUNREACH)
            ) {
                return Err(e);
            }
        }
    }
    let lo = link_by_name(h, "lo")
        .await?
        .ok_or_else(|| PodNetError::Conflict("the node namespace has no lo".into()))?;
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(GATEWAY_V4, 32)
        .output_interface(lo.header.index)
        .scope(RouteScope::Link)
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(|e| PodNetError::netlink("adding 169.254.1.1/32 dev lo scope link", e))
}

// ---------------------------------------------------------------------------------------------
// ADD

/// Builds the attachment: veth pair (pod end created directly inside the pod namespace as
/// `ifname`), host end configured and routed, pod end addressed and routed. On any failure the
/// host veth is deleted again, which removes everything else with it.
pub async fn setup_pod_interface(
    host: &Netns,
    pod: &Netns,
    spec: &PodInterfaceSpec,
) -> Result<u32, PodNetError> {
    if host.same_as(pod) {
        return Err(PodNetError::HostNetns(pod.path().to_path_buf()));
    }
    let s = spec.clone();
    let pod_fd = pod.fd().clone();
    let host_index = host
        .run(move |h| async move { host_side(h, pod_fd, s).await })
        .await?;
    let s = spec.clone();
    let pod_side_result = pod.run(move |h| async move { pod_side(h, s).await }).await;
    if let Err(e) = pod_side_result {
        let name = spec.host_veth.clone();
        let _ = host
            .run(move |h| async move { delete_link_index(&h, host_index, &name).await })
            .await;
        return Err(e);
    }
    Ok(host_index)
}

async fn delete_link_index(h: &Handle, index: u32, name: &str) -> Result<(), PodNetError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = PodNetError::netlink(format!("deleting link {name}"), e);
            if is_not_found(&e) { Ok(()) } else { Err(e) }
        }
    }
}

async fn host_side(
    h: Handle,
    pod_fd: Arc<OwnedFd>,
    s: PodInterfaceSpec,
) -> Result<u32, PodNetError> {
    // A host veth of this name is a leftover of an earlier sandbox of the same pod (or of this
    // container, when the runtime retries ADD): the name is derived from the pod, so it goes.
    if let Some(old) = link_by_name(&h, &s.host_veth).await? {
        tracing::info!(host_veth = %s.host_veth, alias = ?link_alias(&old), container_id = %s.container_id,
            "replacing a leftover host veth of this pod");
        delete_link_index(&h, old.header.index, &s.host_veth).await?;
    }
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(s.ifname.clone())
        .address(s.mac.to_vec())
        .mtu(s.mtu)
        .setns_by_fd(pod_fd.as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<rtnetlink::LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(s.host_veth.clone())
        .address(HOST_VETH_MAC.to_vec())
        .mtu(s.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    h.link().add(veth).execute().await.map_err(|e| {
        let pe = PodNetError::netlink(
            format!(
                "creating veth {} <-> {} in the pod namespace",
                s.host_veth, s.ifname
            ),
            e,
        );
        if pe.errno() == Some(nix::libc::EEXIST) {
            PodNetError::Conflict(format!(
                "the pod namespace already has an interface named {} (or the node one named {})",
                s.ifname, s.host_veth
            ))
        } else {
            pe
        }
    })?;
    let link = link_by_name(&h, &s.host_veth).await?.ok_or_else(|| {
        PodNetError::Conflict(format!(
            "host veth {} vanished right after creation",
            s.host_veth
        ))
    })?;
    let index = link.header.index;
    if let Err(e) = configure_host_end(&h, index, &s).await {
        let _ = delete_link_index(&h, index, &s.host_veth).await;
        return Err(e);
    }
    Ok(index)
}

async fn configure_host_end(
    h: &Handle,
    index: u32,
    s: &PodInterfaceSpec,
) -> Result<(), PodNetError> {
    if s.ipv6.is_some() {
        // Before the link comes up: without DAD its link-local address is usable at once, so
        // the node can solicit the pod right away (a tentative link-local means no
        // solicitation is sent for about a second). The veth is a link of two, no duplicates.
        write_sysctl(&format!("ipv6/conf/{}/accept_dad", s.host_veth), "0")?;
    }
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .alias(veth_alias(&s.container_id, &s.ifname))
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|e| {
            PodNetError::netlink(format!("setting {} up with its alias", s.host_veth), e)
        })?;
    let dev = &s.host_veth;
    if s.ipv4.is_some() {
        write_sysctl(&format!("ipv4/conf/{dev}/forwarding"), "1")?;
        write_sysctl(&format!("ipv4/conf/{dev}/proxy_arp"), "1")?;
        write_sysctl(&format!("ipv4/conf/{dev}/route_localnet"), "1")?;
        write_sysctl(&format!("ipv4/conf/{dev}/rp_filter"), "0")?;
        write_sysctl(&format!("ipv4/neigh/{dev}/proxy_delay"), "0")?;
    }
    if s.ipv6.is_some() {
        write_sysctl(&format!("ipv6/conf/{dev}/forwarding"), "1")?;
        write_sysctl(&format!("ipv6/conf/{dev}/proxy_ndp"), "1")?;
        // Answer the pod's solicitation for its gateway at once (the default delays multicast
        // solicitations by up to 0.8 s), as proxy_delay=0 does for IPv4.
        write_sysctl(&format!("ipv6/neigh/{dev}/proxy_delay"), "0")?;
    }
    if let Some(v4) = s.ipv4 {
        if s.local_route {
            host_route(h, IpAddr::V4(v4), index, s.local_direct_table).await?;
        }
        ensure_gateway_v4_routable(h).await?;
    }
    if let Some(v6) = s.ipv6 {
        if s.local_route {
            host_route(h, IpAddr::V6(v6), index, s.local_direct_table).await?;
        }
        h.neighbours()
            .add(index, IpAddr::V6(GATEWAY_V6))
            .flags(NeighbourFlags::Proxy)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                PodNetError::netlink(format!("adding proxy neighbour {GATEWAY_V6} dev {dev}"), e)
            })?;
    }
    Ok(())
}

async fn pod_side(h: Handle, s: PodInterfaceSpec) -> Result<(), PodNetError> {
    let link = link_by_name(&h, &s.ifname).await?.ok_or_else(|| {
        PodNetError::Conflict(format!("{} did not appear in the pod namespace", s.ifname))
    })?;
    let index = link.header.index;
    let dev = &s.ifname;
    if s.ipv6.is_some() {
        write_sysctl(&format!("ipv6/conf/{dev}/disable_ipv6"), "0")?;
        write_sysctl(&format!("ipv6/conf/{dev}/accept_dad"), "0")?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| PodNetError::netlink(format!("setting {dev} up in the pod"), e))?;
    for (ip, len) in [
        s.ipv4.map(|a| (IpAddr::V4(a), 32u8)),
        s.ipv6.map(|a| (IpAddr::V6(a), 128u8)),
    ]
    .into_iter()
    .flatten()
    {
        let mut req = h.address().add(index, ip, len).replace();
        let mut flags = AddressFlags::Noprefixroute;
        if ip.is_ipv6() {
            flags |= AddressFlags::Nodad;
        }
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(flags));
        req.execute().await.map_err(|e| {
            PodNetError::netlink(format!("adding {ip}/{len} to {dev} in the pod"), e)
        })?;
    }
    if s.ipv4.is_some() {
        let gw_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(GATEWAY_V4, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        h.route()
            .add(gw_route)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                PodNetError::netlink(
                    format!("adding {GATEWAY_V4}/32 dev {dev} scope link in the pod"),
                    e,
                )
            })?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(GATEWAY_V4)
            .build();
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                PodNetError::netlink(
                    format!("adding default via {GATEWAY_V4} dev {dev} in the pod"),
                    e,
                )
            })?;
    }
    if s.ipv6.is_some() {
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .output_interface(index)
            .gateway(GATEWAY_V6)
            .build();
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                PodNetError::netlink(
                    format!("adding default via {GATEWAY_V6} dev {dev} in the pod"),
                    e,
                )
            })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DEL / GC

/// Deletes the host veth of one attachment if (and only if) its alias names that attachment.
/// Works without the pod namespace.
pub async fn teardown_pod_interface(
    host: &Netns,
    host_veth: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Teardown, PodNetError> {
    let (name, cid, ifn) = (
        host_veth.to_string(),
        container_id.to_string(),
        ifname.to_string(),
    );
    host.run(move |h| async move {
        let Some(link) = link_by_name(&h, &name).await? else {
            return Ok(Teardown::Gone);
        };
        let alias = link_alias(&link).unwrap_or("").to_string();
        if parse_veth_alias(&alias) != Some((cid.as_str(), ifn.as_str())) {
            return Ok(Teardown::NotOurs(alias));
        }
        delete_link_index(&h, link.header.index, &name).await?;
        Ok(Teardown::Deleted)
    })
    .await
}

/// Every `hybr*` link of the node with its attachment (from the alias).
pub async fn list_host_veths(host: &Netns) -> Result<Vec<HostVeth>, PodNetError> {
    host.run(|h| async move {
        let links: Vec<LinkMessage> = h
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| PodNetError::netlink("listing links", e))?;
        Ok(links
            .iter()
            .filter_map(|l| {
                let name = link_name(l)?;
                name.starts_with("hybr").then(|| HostVeth {
                    name: name.to_string(),
                    index: l.header.index,
                    attachment: link_alias(l)
                        .and_then(parse_veth_alias)
                        .map(|(c, i)| (c.to_string(), i.to_string())),
                })
            })
            .collect())
    })
    .await
}

/// Deletes a host veth found by [`list_host_veths`], if it still carries the same alias.
pub async fn delete_host_veth(host: &Netns, veth: &HostVeth) -> Result<Teardown, PodNetError> {
    match &veth.attachment {
        Some((cid, ifname)) => teardown_pod_interface(host, &veth.name, cid, ifname).await,
        None => Ok(Teardown::NotOurs(String::new())),
    }
}

// ---------------------------------------------------------------------------------------------
// CHECK

/// Verifies what ADD built, on both sides. Every difference is listed in one
/// [`PodNetError::Mismatch`].
pub async fn check_pod_interface(
    host: &Netns,
    pod: &Netns,
    spec: &PodInterfaceSpec,
) -> Result<(), PodNetError> {
    if host.same_as(pod) {
        return Err(PodNetError::HostNetns(pod.path().to_path_buf()));
    }
    let s = spec.clone();
    let mut problems = host
        .run(move |h| async move { check_host(h, s).await })
        .await?;
    let s = spec.clone();
    problems.extend(
        pod.run(move |h| async move { check_pod(h, s).await })
            .await?,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PodNetError::Mismatch(problems.join("; ")))
    }
}

async fn check_host(h: Handle, s: PodInterfaceSpec) -> Result<Vec<String>, PodNetError> {
    let mut p = Vec::new();
    let Some(link) = link_by_name(&h, &s.host_veth).await? else {
        return Ok(vec![format!("host veth {} is missing", s.host_veth)]);
    };
    let idx = link.header.index;
    if parse_veth_alias(link_alias(&link).unwrap_or(""))
        != Some((s.container_id.as_str(), s.ifname.as_str()))
    {
        p.push(format!(
            "host veth {} belongs to {:?}, not container {}",
            s.host_veth,
            link_alias(&link),
            s.container_id
        ));
    }
    if !link_is_veth(&link) {
        p.push(format!("{} is not a veth", s.host_veth));
    }
    if link_mac(&link) != Some(&HOST_VETH_MAC[..]) {
        p.push(format!(
            "host veth {} MAC is not {}",
            s.host_veth,
            MacAddr(HOST_VETH_MAC)
        ));
    }
    if !link.header.flags.contains(LinkFlags::Up) {
        p.push(format!("host veth {} is down", s.host_veth));
    }
    for (ip, v6) in [
        (s.ipv4.map(IpAddr::V4), false),
        (s.ipv6.map(IpAddr::V6), true),
    ] {
        let Some(ip) = ip else { continue };
        if !s.local_route {
            continue;
        }
        let found = routes(&h, v6).await?.iter().any(|r| {
            route_table(r) == s.local_direct_table
                && route_dst(r) == Some(ip)
                && r.header.destination_prefix_length == if v6 { 128 } else { 32 }
                && route_oif(r) == Some(idx)
        });
        if !found {
            p.push(format!(
                "route {ip} dev {} table {} is missing",
                s.host_veth, s.local_direct_table
            ));
        }
    }
    if s.ipv6.is_some() {
        let proxies: Vec<_> = h
            .neighbours()
            .get()
            .proxies()
            .execute()
            .try_collect()
            .await
            .map_err(|e| PodNetError::netlink("listing proxy neighbours", e))?;
        let found = proxies.iter().any(|n| {
            n.header.ifindex == idx
                && n.attributes.iter().any(|a| {
                    matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) if *d == GATEWAY_V6)
                })
        });
        if !found {
            p.push(format!(
                "proxy neighbour {GATEWAY_V6} dev {} is missing",
                s.host_veth
            ));
        }
    }
    Ok(p)
}

async fn check_pod(h: Handle, s: PodInterfaceSpec) -> Result<Vec<String>, PodNetError> {
    let mut p = Vec::new();
    let Some(link) = link_by_name(&h, &s.ifname).await? else {
        return Ok(vec![format!("{} is missing in the pod", s.ifname)]);
    };
    let idx = link.header.index;
    if link_mac(&link) != Some(&s.mac[..]) {
        p.push(format!("{} MAC is not {}", s.ifname, MacAddr(s.mac)));
    }
    if link_mtu(&link) != Some(s.mtu) {
        p.push(format!(
            "{} MTU is {:?}, not {}",
            s.ifname,
            link_mtu(&link),
            s.mtu
        ));
    }
    if !link.header.flags.contains(LinkFlags::Up) {
        p.push(format!("{} is down in the pod", s.ifname));
    }
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(idx)
        .execute()
        .try_collect()
        .await
        .map_err(|e| PodNetError::netlink("listing pod addresses", e))?;
    for (ip, len) in [
        s.ipv4.map(|a| (IpAddr::V4(a), 32)),
        s.ipv6.map(|a| (IpAddr::V6(a), 128)),
    ]
    .into_iter()
    .flatten()
    {
        let found = addrs.iter().any(|a| {
            a.header.prefix_len == len
                && a.attributes
                    .iter()
                    .any(|at| matches!(at, AddressAttribute::Address(x) if *x == ip))
        });
        if !found {
            p.push(format!(
                "address {ip}/{len} is missing on {} in the pod",
                s.ifname
            ));
        }
    }
    for (want, v6) in [
        (s.ipv4.map(|_| IpAddr::V4(GATEWAY_V4)), false),
        (s.ipv6.map(|_| IpAddr::V6(GATEWAY_V6)), true),
    ] {
        let Some(gw) = want else { continue };
        let found = routes(&h, v6).await?.iter().any(|r| {
            route_table(r) == 254
                && r.header.destination_prefix_length == 0
                && route_gw(r) == Some(gw)
                && route_oif(r) == Some(idx)
        });
        if !found {
            p.push(format!(
                "default route via {gw} dev {} is missing in the pod",
                s.ifname
            ));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alias_round_trip_and_rejects() {
        let a = veth_alias("abc123", "eth0");
        assert_eq!(parse_veth_alias(&a), Some(("abc123", "eth0")));
        for bad in [
            "",
            "hybridnet/",
            "hybridnet//eth0",
            "hybridnet/abc/",
            "other/abc/eth0",
            "hybridnet/abc/e/x",
        ] {
            assert_eq!(parse_veth_alias(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn aliases_of_valid_attachments_round_trip(cid in "[a-z0-9][a-z0-9_.-]{0,63}", ifn in "[a-z0-9]{1,15}") {
            let alias = veth_alias(&cid, &ifn);
            prop_assert!(alias.len() < 256);
            prop_assert_eq!(parse_veth_alias(&alias), Some((cid.as_str(), ifn.as_str())));
        }
    }
}

//! Applies the ARP enhancement addresses of a plan (see `plan::arp_enhance`): reads the host's
//! IPv4 addresses and local-table routes, lets `addr_diff` decide which addresses are ours and
//! what to remove (first) and add, and executes that. The local-table routes of every wanted
//! address are removed on each apply (the kernel re-creates them when the link goes down and
//! up).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::TryStreamExt;
use hybridnet_api::v1::IpVersion;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope,
};
use tracing::info;

use super::addr_diff::{HeldAddress, diff_enhanced_addresses};
use super::apply::ApplyReport;
use super::kernel::{self, ENOENT, ESRCH, KernelError, errno};
use crate::plan::{DataPlanePlan, EnhancedAddress};

const LOCAL_TABLE: u32 = 255;

/// An IPv4 address read from the kernel: the facts the diff needs and the message to delete it.
struct KernelAddress {
    held: HeldAddress,
    msg: AddressMessage,
}

async fn ipv4_addresses(h: &Handle) -> Result<Vec<KernelAddress>, KernelError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| KernelError::netlink("dump addresses", e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            let mut ip = None;
            let mut flags = AddressFlags::empty();
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(IpAddr::V4(v4)) => ip = Some(*v4),
                    AddressAttribute::Address(IpAddr::V4(v4)) if ip.is_none() => ip = Some(*v4),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            Some(KernelAddress {
                held: HeldAddress {
                    ifindex: m.header.index,
                    ip: ip?,
                    prefix: m.header.prefix_len,
                    scope_link: m.header.scope == AddressScope::Link,
                    noprefixroute: flags.contains(AddressFlags::Noprefixroute),
                },
                msg: m,
            })
        })
        .collect())
}

fn ignore_missing(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH) | Some(99)) => Ok(()),
        other => other,
    }
}

/// Brings the enhanced addresses to the plan.
pub(super) async fn apply_enhanced_addresses(
    h: &Handle,
    plan: &DataPlanePlan,
    index: &BTreeMap<String, u32>,
    rep: &mut ApplyReport,
) -> Result<(), KernelError> {
    let addrs = ipv4_addresses(h).await?;
    let local_srcs: BTreeSet<IpAddr> = kernel::routes(h, IpVersion::V4)
        .await?
        .into_iter()
        .filter(|r| r.table == LOCAL_TABLE)
        .filter_map(|r| r.prefsrc)
        .collect();
    let held: Vec<HeldAddress> = addrs.iter().map(|a| a.held).collect();
    let diff = diff_enhanced_addresses(
        &held,
        &plan.vlan_enhanced_addresses,
        index,
        &plan.cluster_cidrs,
        &local_srcs,
    );
    for e in &diff.missing_devices {
        rep.fail(format!(
            "enhanced address {}/{} dev {}: device does not exist",
            e.ip, e.prefix, e.dev
        ));
    }
    for a in diff.delete.iter().filter_map(|&i| addrs.get(i)) {
        let HeldAddress {
            ip,
            prefix,
            ifindex,
            ..
        } = a.held;
        match ignore_missing(h.address().del(a.msg.clone()).execute().await) {
            Ok(()) => {
                info!(%ip, ifindex, "removed stale VLAN enhanced address");
                rep.del("enhanced-address");
            }
            Err(e) => rep.fail(KernelError::netlink(
                format!("delete enhanced address {ip}/{prefix}"),
                e,
            )),
        }
    }
    for &(ifindex, ip, prefix) in &diff.add {
        let mut req = h.address().add(ifindex, IpAddr::V4(ip), prefix).replace();
        let msg = req.message_mut();
        msg.header.scope = AddressScope::Link;
        // No broadcast address: nothing of the node is addressed through it.
        msg.attributes
            .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        match req.execute().await {
            Ok(()) => {
                info!(%ip, prefix, ifindex, "added VLAN enhanced address");
                rep.add("enhanced-address");
            }
            Err(e) => rep.fail(KernelError::netlink(
                format!("add enhanced address {ip}/{prefix} (noprefixroute, scope link)"),
                e,
            )),
        }
    }
    remove_local_routes(h, &plan.vlan_enhanced_addresses, rep).await
}

/// Deletes the local-table routes whose source is a wanted enhanced address (`local <ip>`,
/// the subnet broadcast route): the node must not deliver the pod's traffic to itself.
async fn remove_local_routes(
    h: &Handle,
    wanted: &BTreeSet<EnhancedAddress>,
    rep: &mut ApplyReport,
) -> Result<(), KernelError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let ips: BTreeSet<IpAddr> = wanted.iter().map(|e| IpAddr::V4(e.ip)).collect();
    for r in kernel::routes(h, IpVersion::V4).await? {
        if r.table != LOCAL_TABLE || !r.prefsrc.is_some_and(|s| ips.contains(&s)) {
            continue;
        }
        match ignore_missing(h.route().del(r.msg.clone()).execute().await) {
            Ok(()) => rep.del("local-route"),
            Err(e) => rep.fail(KernelError::netlink(
                format!("delete local-table route {} of an enhanced address", r.dst),
                e,
            )),
        }
    }
    Ok(())
}

//! Reads the facts the planner needs from the kernel ([`HostState`]).

use std::collections::{BTreeMap, BTreeSet};

use hybridnet_api::v1::IpVersion;
use rtnetlink::Handle;
use rtnetlink::packet_route::route::RouteType;

use super::kernel::{self, KernelError, KernelRule};
use crate::plan::{HostRoute, HostState, TableConfig};

/// IPv6 is usable in this namespace (module loaded and not disabled for `all`).
pub fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// A rule hybridnet created (by table and shape); see the module docs of `dataplane`.
pub(crate) fn is_owned_rule(r: &KernelRule, t: &TableConfig) -> bool {
    if r.other_selectors {
        return false;
    }
    if [t.local_direct, t.to_overlay, t.overlay_mark].contains(&r.table) {
        return true;
    }
    is_subnet_rule(r, t)
}

pub(crate) fn is_subnet_rule(r: &KernelRule, t: &TableConfig) -> bool {
    !r.other_selectors
        && r.src.is_some()
        && r.fwmask == Some(0x4040)
        && r.table >= t.subnet_first
        && r.table <= t.subnet_last
}

pub async fn read_host_state(h: &Handle, tables: &TableConfig) -> Result<HostState, KernelError> {
    let links = kernel::links(h).await?;
    let names: BTreeMap<u32, String> = links
        .iter()
        .map(|l| (l.iface.index, l.iface.name.clone()))
        .collect();
    let ipv6 = ipv6_enabled();
    let mut families = vec![IpVersion::V4];
    if ipv6 {
        families.push(IpVersion::V6);
    }
    let mut main_routes = Vec::new();
    let mut existing_subnet_tables = BTreeMap::new();
    let mut tables_with_routes = BTreeSet::new();
    for &f in &families {
        for r in kernel::rules(h, f).await? {
            if is_subnet_rule(&r, tables)
                && let Some(src) = r.src
            {
                existing_subnet_tables.insert(src, r.table);
            }
        }
        for r in kernel::routes(h, f).await? {
            if r.table >= tables.subnet_first && r.table <= tables.subnet_last {
                tables_with_routes.insert(r.table);
            }
            if r.table == 254 && matches!(r.kind, RouteType::Unicast) {
                main_routes.push(HostRoute {
                    dst: r.dst,
                    gateway: r.gateway,
                    dev: r.oif.and_then(|i| names.get(&i).cloned()),
                    src: r.prefsrc,
                });
            }
        }
    }
    let ours: BTreeSet<u32> = existing_subnet_tables.values().copied().collect();
    let foreign_tables = tables_with_routes.difference(&ours).copied().collect();
    Ok(HostState {
        interfaces: links.into_iter().map(|l| l.iface).collect(),
        main_routes,
        existing_subnet_tables,
        foreign_tables,
        ipv6_enabled: ipv6,
    })
}

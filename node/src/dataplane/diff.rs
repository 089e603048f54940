//! Pure decisions of the apply for routes and policy rules: what is hybridnet's in the kernel, and
//! which operations bring it to the plan. `apply.rs` reads the kernel, calls [`diff_routes`] and
//! [`diff_rules`], and executes the operations in order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::RuleAction;

use super::host::{is_owned_rule, is_subnet_rule};
use super::kernel::{KernelRoute, KernelRule};
use crate::plan::{PlannedRoute, PolicyRule, RouteKind, TableConfig};
use hybridnet_api::v1::IpVersion;

/// One change of routes; indices point into the desired list and the kernel's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RouteOp {
    /// `ip route replace` of desired route `want` (output interface index resolved).
    Replace { want: usize, oif: Option<u32> },
    /// Delete kernel route `have`.
    Delete { have: usize },
}

/// One change of policy rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RuleOp {
    Add { want: usize },
    Delete { have: usize },
}

/// The routes diff: operations in execution order, and what could not be applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RouteDiff {
    pub ops: Vec<RouteOp>,
    pub problems: Vec<String>,
}

/// The kernel's `fwmark`/`fwmask` as the plan writes it (a mark without a mask is `/0xffffffff`).
pub(crate) fn rule_mark(r: &KernelRule) -> Option<(u32, u32)> {
    match (r.fwmark, r.fwmask) {
        (None, None) => None,
        (m, k) => Some((m.unwrap_or(0), k.unwrap_or(u32::MAX))),
    }
}

/// The one test of "this kernel rule is that planned rule".
pub(crate) fn rule_eq(k: &KernelRule, w: &PolicyRule) -> bool {
    k.priority == w.priority
        && k.table == w.table
        && k.src == w.src
        && rule_mark(k) == w.fwmark
        && k.action == RuleAction::ToTable
}

/// As `ip route add`: unicast routes without a gateway are link scope.
pub(crate) fn scope_of(r: &PlannedRoute) -> RouteScope {
    if r.kind == RouteKind::Unicast && (r.via.is_none() || r.scope_link) {
        RouteScope::Link
    } else {
        RouteScope::Universe
    }
}

/// The one test of "this kernel route is that planned route" (same table and destination given).
pub(crate) fn route_matches(k: &KernelRoute, r: &PlannedRoute, oif: Option<u32>) -> bool {
    match r.kind {
        // The kernel reports IPv6 throw routes on `lo`; only the type matters.
        RouteKind::Throw => k.kind == RouteType::Throw,
        RouteKind::Unicast => {
            k.kind == RouteType::Unicast
                && k.oif == oif
                && k.gateway == r.via
                && k.prefsrc == r.src
                // IPv6 routes have no scope in the kernel (always reported as universe).
                && (r.dst.version == IpVersion::V6 || k.scope == scope_of(r))
        }
    }
}

/// Tables whose content hybridnet owns: the plan's, plus subnet tables of owned rules the plan
/// dropped (their routes go with them).
pub(crate) fn owned_tables(
    plan_tables: &BTreeSet<u32>,
    rules: &[KernelRule],
    t: &TableConfig,
) -> BTreeSet<u32> {
    let mut out = plan_tables.clone();
    out.extend(
        rules
            .iter()
            .filter(|r| is_owned_rule(r, t) && is_subnet_rule(r, t))
            .map(|r| r.table),
    );
    out
}

/// Whether a kernel route that the plan does not want may be removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Prune {
    Delete,
    Keep,
    /// In a fixed overlay table but not hybridnet-shaped: another program uses the table.
    Foreign(String),
}

/// Ownership of an unwanted kernel route. Local-direct (39999) is never pruned here (see the
/// module docs of `dataplane`). In the fixed overlay tables only hybridnet-shaped routes (throw,
/// or via a VXLAN device) are removed: anything else means another program uses the table
/// (upstream refused to start).
pub(crate) fn prune(
    k: &KernelRoute,
    owned: &BTreeSet<u32>,
    t: &TableConfig,
    vxlan_ifindexes: &BTreeSet<u32>,
) -> Prune {
    if !owned.contains(&k.table) {
        return Prune::Keep;
    }
    let fixed = k.table == t.to_overlay || k.table == t.overlay_mark;
    let vxlan_shaped =
        k.kind == RouteType::Throw || k.oif.is_some_and(|i| vxlan_ifindexes.contains(&i));
    if fixed && !vxlan_shaped {
        return Prune::Foreign(format!(
            "table {} holds route {} that hybridnet did not create; left in place (is the table used by another program? see --to-overlay-table/--overlay-mark-table)",
            k.table, k.dst
        ));
    }
    Prune::Delete
}

/// Routes of one family: replace what differs (direct routes first: the kernel accepts
/// `default via <gw>` in a subnet table only once the table can reach the gateway), then delete
/// owned routes the plan does not have. A replaced route counts as matched.
pub(crate) fn diff_routes(
    want: &[&PlannedRoute],
    have: &[KernelRoute],
    index: &BTreeMap<String, u32>,
    owned: &BTreeSet<u32>,
    t: &TableConfig,
) -> RouteDiff {
    let mut d = RouteDiff::default();
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by_key(|&i| want[i].via.is_some());
    let mut matched: BTreeSet<usize> = BTreeSet::new();
    for i in order {
        let r = want[i];
        let oif = match &r.dev {
            Some(dev) => match index.get(dev) {
                Some(x) => Some(*x),
                None => {
                    d.problems.push(format!(
                        "route {} table {}: device {dev} does not exist",
                        r.dst, r.table
                    ));
                    continue;
                }
            },
            None => None,
        };
        let same_key: Vec<usize> = have
            .iter()
            .enumerate()
            .filter(|(_, k)| k.table == r.table && k.dst == r.dst)
            .map(|(j, _)| j)
            .collect();
        if let Some(&j) = same_key.iter().find(|&&j| route_matches(&have[j], r, oif)) {
            matched.insert(j);
            continue;
        }
        d.ops.push(RouteOp::Replace { want: i, oif });
        // The replaced entry is the first with that key; others are extras.
        if let Some(&j) = same_key.first() {
            matched.insert(j);
        }
    }
    let vxlan_ifindexes: BTreeSet<u32> = index
        .iter()
        .filter(|(n, _)| n.contains(".vxlan"))
        .map(|(_, i)| *i)
        .collect();
    for (j, k) in have.iter().enumerate() {
        if matched.contains(&j) {
            continue;
        }
        match prune(k, owned, t, &vxlan_ifindexes) {
            Prune::Delete => d.ops.push(RouteOp::Delete { have: j }),
            Prune::Keep => {}
            Prune::Foreign(msg) => d.problems.push(msg),
        }
    }
    d
}

/// Local-direct routes left behind by an address that moved to another node: a host route
/// (`/32`, `/128`) in the local-direct table through a pod's host veth (`hybr*`) to an address
/// the plan places at a pod of another node and at none of this node (`remote`,
/// `DataPlanePlan::remote_pod_ips`). A KubeVirt VM's address after its live migration is the
/// case: the source pod's veth still exists until its DEL, but the VM runs on the target node.
/// Every other local-direct route is left to ADD and DEL (module docs).
pub(crate) fn stale_local_direct(
    have: &[KernelRoute],
    t: &TableConfig,
    index: &BTreeMap<String, u32>,
    remote: &BTreeSet<IpAddr>,
) -> Vec<usize> {
    let veths: BTreeSet<u32> = index
        .iter()
        .filter(|(n, _)| n.starts_with("hybr"))
        .map(|(_, i)| *i)
        .collect();
    have.iter()
        .enumerate()
        .filter(|(_, k)| {
            let host = if k.dst.addr().is_ipv4() { 32 } else { 128 };
            k.table == t.local_direct
                && k.dst.prefix == host
                && remote.contains(&k.dst.addr())
                && k.oif.is_some_and(|i| veths.contains(&i))
        })
        .map(|(j, _)| j)
        .collect()
}

/// Rules of one family: add the planned rules that are missing, then delete owned rules the plan
/// does not have. Rules hybridnet does not own are never touched.
pub(crate) fn diff_rules(
    want: &[&PolicyRule],
    have: &[KernelRule],
    t: &TableConfig,
) -> Vec<RuleOp> {
    let owned: Vec<usize> = (0..have.len())
        .filter(|&j| is_owned_rule(&have[j], t))
        .collect();
    let mut ops: Vec<RuleOp> = want
        .iter()
        .enumerate()
        .filter(|(_, w)| !owned.iter().any(|&j| rule_eq(&have[j], w)))
        .map(|(i, _)| RuleOp::Add { want: i })
        .collect();
    ops.extend(
        owned
            .into_iter()
            .filter(|&j| !want.iter().any(|w| rule_eq(&have[j], w)))
            .map(|j| RuleOp::Delete { have: j }),
    );
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::ipmath::Cidr;
    use std::net::IpAddr;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse_canonical(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tables() -> TableConfig {
        TableConfig::default()
    }

    fn krule(priority: u32, table: u32, src: Option<&str>, mark: Option<(u32, u32)>) -> KernelRule {
        KernelRule {
            family: IpVersion::V4,
            priority,
            table,
            src: src.map(cidr),
            fwmark: mark.map(|m| m.0),
            fwmask: mark.map(|m| m.1),
            action: RuleAction::ToTable,
            other_selectors: false,
            msg: Default::default(),
        }
    }

    fn prule(priority: u32, table: u32, src: Option<&str>, mark: Option<(u32, u32)>) -> PolicyRule {
        PolicyRule {
            family: IpVersion::V4,
            priority,
            table,
            src: src.map(cidr),
            fwmark: mark,
        }
    }

    fn kroute(
        table: u32,
        dst: &str,
        oif: Option<u32>,
        gw: Option<&str>,
        kind: RouteType,
    ) -> KernelRoute {
        KernelRoute {
            table,
            dst: cidr(dst),
            kind,
            oif,
            gateway: gw.map(ip),
            prefsrc: None,
            scope: if gw.is_none() && kind == RouteType::Unicast {
                RouteScope::Link
            } else {
                RouteScope::Universe
            },
            priority: None,
            msg: Default::default(),
        }
    }

    fn proute(table: u32, dst: &str, dev: Option<&str>, via: Option<&str>) -> PlannedRoute {
        PlannedRoute {
            table,
            dst: cidr(dst),
            kind: RouteKind::Unicast,
            dev: dev.map(String::from),
            via: via.map(ip),
            src: None,
            scope_link: false,
        }
    }

    #[test]
    fn rule_equality_includes_mark_defaults_and_action() {
        let t = tables();
        let sub = t.subnet_first;
        let w = prule(1003, sub, Some("198.19.0.0/24"), Some((0, 0x4040)));
        assert!(rule_eq(
            &krule(1003, sub, Some("198.19.0.0/24"), Some((0, 0x4040))),
            &w
        ));
        assert!(!rule_eq(
            &krule(1003, sub, Some("198.19.0.0/24"), Some((0, 0x40))),
            &w
        ));
        assert!(!rule_eq(
            &krule(1004, sub, Some("198.19.0.0/24"), Some((0, 0x4040))),
            &w
        ));
        let mut k = krule(1003, sub, Some("198.19.0.0/24"), Some((0, 0x4040)));
        k.action = RuleAction::Goto;
        assert!(!rule_eq(&k, &w));
        // A mark without a mask is an exact match.
        let mut k = krule(1002, t.overlay_mark, None, None);
        k.fwmark = Some(0x20);
        assert!(rule_eq(
            &k,
            &prule(1002, t.overlay_mark, None, Some((0x20, u32::MAX)))
        ));
    }

    #[test]
    fn rules_diff_adds_missing_removes_stale_owned_and_leaves_foreign() {
        let t = tables();
        let sub = t.subnet_first;
        let want_rules = [
            prule(1000, t.local_direct, None, None),
            prule(1003, sub, Some("198.19.0.0/24"), Some((0, 0x4040))),
        ];
        let want: Vec<&PolicyRule> = want_rules.iter().collect();
        let mut foreign = krule(1003, sub + 1, Some("198.18.0.0/24"), Some((0, 0x4040)));
        foreign.other_selectors = true;
        let have = vec![
            krule(1000, t.local_direct, None, None),
            krule(1003, sub + 1, Some("198.20.0.0/24"), Some((0, 0x4040))),
            foreign,
            krule(500, 77, None, None),
        ];
        assert_eq!(
            diff_rules(&want, &have, &t),
            [RuleOp::Add { want: 1 }, RuleOp::Delete { have: 1 }]
        );
        // Applied state: nothing to do.
        let have = vec![
            krule(1000, t.local_direct, None, None),
            krule(1003, sub, Some("198.19.0.0/24"), Some((0, 0x4040))),
        ];
        assert!(diff_rules(&want, &have, &t).is_empty());
    }

    #[test]
    fn stale_subnet_tables_are_owned() {
        let t = tables();
        let sub = t.subnet_first;
        let rules = [
            krule(1003, sub + 5, Some("198.20.0.0/24"), Some((0, 0x4040))),
            krule(1003, 77, Some("198.21.0.0/24"), Some((0, 0x4040))),
        ];
        let plan: BTreeSet<u32> = [t.to_overlay].into_iter().collect();
        assert_eq!(
            owned_tables(&plan, &rules, &t),
            [sub + 5, t.to_overlay].into_iter().collect()
        );
    }

    #[test]
    fn routes_diff_replaces_differing_direct_first_and_prunes_only_owned() {
        let t = tables();
        let sub = t.subnet_first;
        let index: BTreeMap<String, u32> =
            [("eth0".to_string(), 2), ("eth0.vxlan4".to_string(), 5)]
                .into_iter()
                .collect();
        let want_routes = [
            proute(sub, "0.0.0.0/0", Some("eth0"), Some("198.18.0.1")),
            proute(sub, "198.18.0.0/24", Some("eth0"), None),
            proute(t.to_overlay, "198.19.0.0/24", Some("eth0.vxlan4"), None),
            proute(sub, "198.22.0.0/24", Some("gone0"), None),
        ];
        let want: Vec<&PlannedRoute> = want_routes.iter().collect();
        let have = vec![
            // differs (gateway): replaced
            kroute(
                sub,
                "0.0.0.0/0",
                Some(2),
                Some("198.18.0.254"),
                RouteType::Unicast,
            ),
            // matches
            kroute(
                t.to_overlay,
                "198.19.0.0/24",
                Some(5),
                None,
                RouteType::Unicast,
            ),
            // stale in an owned table: deleted
            kroute(sub, "198.30.0.0/24", Some(2), None, RouteType::Unicast),
            // not hybridnet-shaped in a fixed table: reported, kept
            kroute(
                t.to_overlay,
                "10.0.0.0/8",
                Some(2),
                None,
                RouteType::Unicast,
            ),
            // stale throw in a fixed table: deleted
            kroute(t.to_overlay, "198.18.0.0/26", None, None, RouteType::Throw),
            // a table hybridnet does not own: kept
            kroute(
                254,
                "0.0.0.0/0",
                Some(2),
                Some("198.18.0.1"),
                RouteType::Unicast,
            ),
        ];
        let owned: BTreeSet<u32> = [sub, t.to_overlay, t.overlay_mark].into_iter().collect();
        let d = diff_routes(&want, &have, &index, &owned, &t);
        assert_eq!(
            d.ops,
            [
                RouteOp::Replace {
                    want: 1,
                    oif: Some(2)
                },
                RouteOp::Replace {
                    want: 0,
                    oif: Some(2)
                },
                RouteOp::Delete { have: 2 },
                RouteOp::Delete { have: 4 },
            ]
        );
        assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
        assert!(d.problems[0].contains("device gone0 does not exist"));
        assert!(d.problems[1].contains("holds route 10.0.0.0/8 that hybridnet did not create"));
    }

    #[test]
    fn route_matching_follows_kernel_reporting() {
        let t = tables();
        // IPv6 throw routes are reported on `lo` and with any scope: only the type counts.
        let mut w = proute(t.to_overlay, "fd00:18::/120", None, None);
        w.kind = RouteKind::Throw;
        let mut k = kroute(
            t.to_overlay,
            "198.18.0.0/26",
            Some(1),
            None,
            RouteType::Throw,
        );
        k.dst = cidr("fd00:18::/120");
        assert!(route_matches(&k, &w, None));
        // IPv4 unicast: scope must be link for a direct route.
        let w = proute(t.to_overlay, "198.19.0.0/24", Some("eth0.vxlan4"), None);
        let mut k = kroute(
            t.to_overlay,
            "198.19.0.0/24",
            Some(5),
            None,
            RouteType::Unicast,
        );
        assert!(route_matches(&k, &w, Some(5)));
        k.scope = RouteScope::Universe;
        assert!(!route_matches(&k, &w, Some(5)));
        assert!(!route_matches(&k, &w, Some(6)));
    }

    #[test]
    fn only_pod_veth_host_routes_to_addresses_now_at_another_node_are_stale() {
        let t = tables();
        let ld = t.local_direct;
        let index: BTreeMap<String, u32> = [
            ("hybr1".to_string(), 10),
            ("hybr2".to_string(), 11),
            ("eth0".to_string(), 2),
        ]
        .into();
        let remote: BTreeSet<IpAddr> = [ip("10.0.0.5"), ip("fd00::5")].into();
        let have = vec![
            kroute(ld, "10.0.0.5/32", Some(10), None, RouteType::Unicast), // stale
            kroute(ld, "fd00::5/128", Some(11), None, RouteType::Unicast), // stale
            kroute(ld, "10.0.0.6/32", Some(10), None, RouteType::Unicast), // not remote
            kroute(ld, "10.0.0.5/32", Some(2), None, RouteType::Unicast),  // not a pod veth
            kroute(
                ld,
                "10.0.0.5/32",
                None,
                Some("10.0.0.1"),
                RouteType::Unicast,
            ), // no device
            kroute(100, "10.0.0.5/32", Some(10), None, RouteType::Unicast), // another table
            kroute(ld, "10.0.0.0/24", Some(10), None, RouteType::Unicast), // not a host route
        ];
        assert_eq!(stale_local_direct(&have, &t, &index, &remote), vec![0, 1]);
        assert!(stale_local_direct(&have, &t, &index, &BTreeSet::new()).is_empty());
    }
}

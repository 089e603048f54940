//! The routing half of CNI ADD readiness for BGP pods (docs/operations.md, BGP): the kernel must hold
//! the policy rule of the pod's subnet (`from <subnet> lookup <table>`) and that table must
//! hold a default route, via the traffic-routing peer when there is one. Upstream checks the
//! same in the kernel before it answers ADD; without it a pod could be announced (traffic from
//! outside arrives) while its replies have no way out.
//!
//! [`routing_problem`] is the pure decision over what the kernel shows; [`read_kernel`] reads
//! rules and default routes over netlink (in the node's network namespace: the handle is made
//! by the reconcile loop, see `BgpController`).
//!
//! The tables do not follow session state (see the module docs of `crate::bgp`): a pod is
//! ready when both its announcement and its table's default route are in place, and the
//! default route stays while a session is down, so pods keep their way out during a graceful
//! restart of the agent or a flap at the ToR.

use std::net::IpAddr;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::IpVersion;
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::rule::RuleAction;

use crate::dataplane::kernel;

/// A policy rule as the readiness check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleView {
    pub priority: u32,
    pub table: u32,
    pub src: Option<Cidr>,
    /// `lookup <table>` (not unreachable, goto, ...).
    pub to_table: bool,
}

/// A default route (`0.0.0.0/0` or `::/0`) in some table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRouteView {
    pub table: u32,
    pub gateway: Option<IpAddr>,
    /// A unicast route (not blackhole, unreachable, throw).
    pub unicast: bool,
}

/// Why the pod's traffic cannot leave through its BGP subnet's table yet; `None` when it can.
/// `gateway`: the traffic-routing peer of the pod's family, if any (else any unicast default
/// route counts: the planner copies the main table's default route).
pub fn routing_problem(
    ip: IpAddr,
    rules: &[RuleView],
    defaults: &[DefaultRouteView],
    gateway: Option<IpAddr>,
) -> Option<String> {
    // The subnet rule: the first (by priority) rule selecting on a source block that holds the
    // pod address and looking up a table.
    let rule = rules
        .iter()
        .filter(|r| r.to_table && r.src.is_some_and(|c| c.version == IpVersion::of(&ip)))
        .filter(|r| r.src.is_some_and(|c| c.contains(ip)))
        .min_by_key(|r| r.priority);
    let Some(rule) = rule else {
        return Some(format!(
            "no policy rule for the subnet of {ip} yet (the agent has not applied its table)"
        ));
    };
    let src = rule.src.map(|c| c.to_string()).unwrap_or_default();
    let in_table: Vec<&DefaultRouteView> = defaults
        .iter()
        .filter(|d| d.table == rule.table && d.unicast)
        .collect();
    if in_table.is_empty() {
        return Some(format!(
            "routing table {} of subnet {src} has no default route yet",
            rule.table
        ));
    }
    match gateway {
        Some(gw) if !in_table.iter().any(|d| d.gateway == Some(gw)) => Some(format!(
            "routing table {} of subnet {src} has no default route via the BGP peer {gw} yet (found via {:?})",
            rule.table,
            in_table.iter().map(|d| d.gateway).collect::<Vec<_>>()
        )),
        _ => None,
    }
}

/// Reads the rules and default routes of `family` from the kernel.
pub async fn read_kernel(
    handle: &rtnetlink::Handle,
    family: IpVersion,
) -> Result<(Vec<RuleView>, Vec<DefaultRouteView>), kernel::KernelError> {
    let rules = kernel::rules(handle, family)
        .await?
        .into_iter()
        .map(|r| RuleView {
            priority: r.priority,
            table: r.table,
            src: r.src,
            to_table: r.action == RuleAction::ToTable && !r.other_selectors,
        })
        .collect();
    let defaults = kernel::routes(handle, family)
        .await?
        .into_iter()
        .filter(|r| r.dst.prefix == 0)
        .map(|r| DefaultRouteView {
            table: r.table,
            gateway: r.gateway,
            unicast: r.kind == RouteType::Unicast,
        })
        .collect();
    Ok((rules, defaults))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse_canonical(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rule(priority: u32, table: u32, src: Option<&str>) -> RuleView {
        RuleView {
            priority,
            table,
            src: src.map(cidr),
            to_table: true,
        }
    }

    fn default(table: u32, gateway: Option<&str>) -> DefaultRouteView {
        DefaultRouteView {
            table,
            gateway: gateway.map(ip),
            unicast: true,
        }
    }

    /// The agent's rules: 1000/1001 without selector, the subnet rule at 1003.
    fn agent_rules() -> Vec<RuleView> {
        vec![
            rule(0, 255, None),
            rule(1000, 39999, None),
            rule(1001, 40000, None),
            rule(1003, 10000, Some("198.19.1.0/24")),
            rule(1003, 10001, Some("fd00:19:1::/64")),
            rule(32766, 254, None),
        ]
    }

    #[test]
    fn ready_when_the_subnet_table_has_the_default_via_the_peer() {
        let defaults = vec![
            default(254, Some("198.18.1.0")),
            default(10000, Some("198.18.0.1")),
            default(10001, Some("fd00:1::1")),
        ];
        let peer = Some(ip("198.18.0.1"));
        assert_eq!(
            routing_problem(ip("198.19.1.10"), &agent_rules(), &defaults, peer),
            None
        );
        assert_eq!(
            routing_problem(
                ip("fd00:19:1::10"),
                &agent_rules(),
                &defaults,
                Some(ip("fd00:1::1"))
            ),
            None
        );
        // No routing peer: the copy of the main default route counts.
        assert_eq!(
            routing_problem(ip("fd00:19:1::10"), &agent_rules(), &defaults, None),
            None
        );
    }

    #[test]
    fn missing_rule_table_route_or_wrong_gateway_is_not_ready() {
        let peer = Some(ip("198.18.0.1"));
        let main_only = vec![default(254, Some("198.18.1.0"))];
        // No subnet rule at all (only the agent's general rules).
        let general: Vec<RuleView> = agent_rules()
            .into_iter()
            .filter(|r| r.src.is_none())
            .collect();
        let p = routing_problem(
            ip("198.19.1.10"),
            &general,
            &[default(10000, Some("198.18.0.1"))],
            peer,
        )
        .unwrap();
        assert!(p.contains("no policy rule"), "{p}");
        // The rule is there, its table is empty (the main table's default does not count).
        let p = routing_problem(ip("198.19.1.10"), &agent_rules(), &main_only, peer).unwrap();
        assert!(
            p.contains("table 10000") && p.contains("198.19.1.0/24") && p.contains("no default"),
            "{p}"
        );
        // A blackhole default is no way out.
        let blackhole = vec![DefaultRouteView {
            table: 10000,
            gateway: None,
            unicast: false,
        }];
        assert!(routing_problem(ip("198.19.1.10"), &agent_rules(), &blackhole, peer).is_some());
        // Via another gateway than the routing peer (a stale route).
        let stale = vec![default(10000, Some("198.18.1.0"))];
        let p = routing_problem(ip("198.19.1.10"), &agent_rules(), &stale, peer).unwrap();
        assert!(p.contains("via the BGP peer 198.18.0.1"), "{p}");
        // Rules of the other family or another subnet do not count.
        let p = routing_problem(
            ip("198.19.2.10"),
            &agent_rules(),
            &[default(10000, Some("198.18.0.1"))],
            peer,
        )
        .unwrap();
        assert!(p.contains("no policy rule"), "{p}");
        // A rule that is not `lookup` (e.g. unreachable) is not the subnet rule.
        let mut unreachable = agent_rules();
        for r in &mut unreachable {
            r.to_table = r.src.is_none();
        }
        assert!(
            routing_problem(
                ip("198.19.1.10"),
                &unreachable,
                &[default(10000, Some("198.18.0.1"))],
                peer
            )
            .is_some()
        );
    }

    #[test]
    fn the_first_matching_rule_by_priority_decides() {
        // A more general, earlier rule wins over the subnet rule (the kernel would use it).
        let mut rules = agent_rules();
        rules.push(rule(900, 20000, Some("198.19.0.0/16")));
        let defaults = vec![default(10000, Some("198.18.0.1"))];
        let p =
            routing_problem(ip("198.19.1.10"), &rules, &defaults, Some(ip("198.18.0.1"))).unwrap();
        assert!(p.contains("table 20000"), "{p}");
    }
}

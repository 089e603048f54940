//! Which BGP peer carries a BGP subnet's pod traffic: per address family, the one peer that does
//! not set `doesNotRouteTraffic`; none when every peer of that family opts out (pods then leave by
//! the node's main default route). A peer listed twice counts once. Two routing peers of one
//! family are a configuration error: the webhook refuses the Network, the agent's planner and its
//! BGP controller report it and program no gateway. One rule for the three of them, so a Network
//! the webhook admits is one the agent can route.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Two peers of one family both route pod traffic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "more than one BGP peer routes {family} traffic ({first} and {second}); set doesNotRouteTraffic on all but one"
)]
pub struct SeveralTrafficPeers {
    pub family: &'static str,
    pub first: IpAddr,
    pub second: IpAddr,
}

/// The gateway for pod traffic of the `v6` (or IPv4) family among `peers`, given as (address,
/// routes traffic) pairs.
pub fn traffic_peer<I>(peers: I, v6: bool) -> Result<Option<IpAddr>, SeveralTrafficPeers>
where
    I: IntoIterator<Item = (IpAddr, bool)>,
{
    let routing: BTreeSet<IpAddr> = peers
        .into_iter()
        .filter(|(address, routes)| *routes && address.is_ipv6() == v6)
        .map(|(address, _)| address)
        .collect();
    let mut it = routing.into_iter();
    match (it.next(), it.next()) {
        (Some(first), Some(second)) => Err(SeveralTrafficPeers {
            family: if v6 { "IPv6" } else { "IPv4" },
            first,
            second,
        }),
        (first, _) => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_one_routing_peer_of_the_family_carries_traffic() {
        let v4 = ip("198.18.0.1");
        let v6 = ip("fd00::1");
        let quiet = ip("198.18.0.2");
        assert_eq!(traffic_peer([], false), Ok(None));
        assert_eq!(traffic_peer([(quiet, false)], false), Ok(None));
        assert_eq!(
            traffic_peer([(quiet, false), (v4, true)], false),
            Ok(Some(v4))
        );
        // One routing peer per family is a valid dual-stack setup.
        assert_eq!(traffic_peer([(v4, true), (v6, true)], false), Ok(Some(v4)));
        assert_eq!(traffic_peer([(v4, true), (v6, true)], true), Ok(Some(v6)));
        // A peer listed twice (for example by two networks) counts once.
        assert_eq!(traffic_peer([(v4, true), (v4, true)], false), Ok(Some(v4)));
    }

    #[test]
    fn two_routing_peers_of_one_family_are_an_error_naming_both() {
        let err =
            traffic_peer([(ip("198.18.0.2"), true), (ip("198.18.0.1"), true)], false).unwrap_err();
        assert_eq!(
            (err.first, err.second),
            (ip("198.18.0.1"), ip("198.18.0.2"))
        );
        assert!(
            err.to_string()
                .contains("more than one BGP peer routes IPv4 traffic")
        );
        // The other family is unaffected.
        assert_eq!(
            traffic_peer([(ip("198.18.0.2"), true), (ip("198.18.0.1"), true)], true),
            Ok(None)
        );
    }
}

//! Connection collision detection (RFC 4271 section 6.8, RFC 6286 section 2.3) as pure
//! decisions over the states of a peer's two connections.
//!
//! A peer's driver has a *primary* machine (the one status and routes follow; it connects out
//! unless passive) and at most one *secondary* machine for an inbound connection that arrived
//! while the primary was connecting out or in the OPEN exchange. [`resolve`] runs after every
//! batch of events and says what to do with the pair:
//!
//! - a connection colliding with an Established session is closed (the Established one stays;
//!   the driver makes one exception before it gets here: a peer that advertised graceful
//!   restart and connects again has restarted, RFC 4724 4.2);
//! - when both connections are in OpenConfirm, both sides know both BGP Identifiers and keep
//!   the connection initiated by the speaker with the higher identifier (equal identifiers:
//!   the larger AS number), closing the other with Cease / Connection Collision Resolution;
//! - while the primary is still connecting out, the inbound one waits: dropping our own attempt
//!   as soon as the peer's SYN arrives would, on a simultaneous open, make both sides abort the
//!   connection the other one adopted.

use std::net::Ipv4Addr;

use super::State;

/// Who initiated a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outbound,
    /// The peer connected to us.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// A speaker's identity for collision resolution: BGP Identifier and AS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub id: Ipv4Addr,
    pub asn: u32,
}

/// Which connection survives a collision between two connections in OpenConfirm: the one
/// initiated by the speaker with the higher BGP Identifier (RFC 4271 6.8, identifiers compared
/// as unsigned 32-bit integers); with equal identifiers (possible between different ASes,
/// RFC 6286 2.3), the one initiated by the speaker with the larger AS number.
pub fn surviving_direction(local: Identity, peer: Identity) -> Direction {
    if (u32::from(local.id), local.asn) > (u32::from(peer.id), peer.asn) {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

/// One connection's machine as [`resolve`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub state: State,
    /// Who initiated its connection; `None` when it has none.
    pub direction: Option<Direction>,
    /// The identity the peer sent in its OPEN on this connection (OpenConfirm, Established).
    pub peer: Option<Identity>,
}

/// What to do with a peer's pair of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Nothing to do (no second connection, or it is too early to decide).
    Keep,
    /// The secondary machine lost its connection on its own: forget it.
    DropSecondary,
    /// The primary has no connection and no attempt in flight: the secondary becomes primary.
    PromoteSecondary,
    /// Collision: close the secondary with Cease / Connection Collision Resolution.
    CloseSecondary,
    /// Collision: close the primary with Cease / Connection Collision Resolution; the secondary
    /// becomes primary.
    ClosePrimary,
}

/// Decides a pair (see the module docs). `connecting`: the primary has an outbound connect in
/// flight.
pub fn resolve(
    local: Identity,
    primary: Side,
    connecting: bool,
    secondary: Option<Side>,
) -> Resolution {
    let Some(secondary) = secondary else {
        return Resolution::Keep;
    };
    let connected = |s: &Side| {
        matches!(
            s.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) && s.direction.is_some()
    };
    if !connected(&secondary) {
        return Resolution::DropSecondary;
    }
    if !connected(&primary) {
        // Wait for our own attempt while it may still be the connection the peer keeps; once
        // the peer's connection is Established, ours is moot.
        let attempt_pending = connecting && primary.state == State::Connect;
        return if attempt_pending && secondary.state != State::Established {
            Resolution::Keep
        } else {
            Resolution::PromoteSecondary
        };
    }
    match (primary.state, secondary.state) {
        (State::Established, _) => Resolution::CloseSecondary,
        (_, State::Established) => Resolution::ClosePrimary,
        // The peer connected again while its earlier connection is still in the OPEN exchange:
        // it gave that one up (a peer has one attempt at a time), so the newer one replaces it
        // instead of waiting for the old one's hold timer.
        _ if primary.direction == Some(Direction::Inbound)
            && secondary.direction == Some(Direction::Inbound) =>
        {
            Resolution::ClosePrimary
        }
        (State::OpenConfirm, State::OpenConfirm) => {
            // Both OPENs came from the same peer; should their identities differ, the newer one
            // (the secondary's) counts.
            let Some(peer) = secondary.peer.or(primary.peer) else {
                return Resolution::Keep;
            };
            let keep = surviving_direction(local, peer);
            match (primary.direction, secondary.direction) {
                (Some(p), _) if p == keep => Resolution::CloseSecondary,
                (_, Some(s)) if s == keep => Resolution::ClosePrimary,
                // Both in the same direction (the peer connected twice): keep the newer one.
                _ => Resolution::ClosePrimary,
            }
        }
        _ => Resolution::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

    fn id(id: Ipv4Addr, asn: u32) -> Identity {
        Identity { id, asn }
    }

    fn side(state: State, direction: Direction, peer: Option<Identity>) -> Side {
        Side {
            state,
            direction: Some(direction),
            peer,
        }
    }

    fn unconnected(state: State) -> Side {
        Side {
            state,
            direction: None,
            peer: None,
        }
    }

    #[test]
    fn higher_identifier_keeps_its_own_connection() {
        assert_eq!(
            surviving_direction(id(HIGH, 65001), id(LOW, 65000)),
            Direction::Outbound
        );
        assert_eq!(
            surviving_direction(id(LOW, 65001), id(HIGH, 65000)),
            Direction::Inbound
        );
        // Compared as unsigned integers, not octet strings of different lengths or signed:
        // 128.0.0.0 > 127.255.255.255.
        assert_eq!(
            surviving_direction(
                id(Ipv4Addr::new(128, 0, 0, 0), 1),
                id(Ipv4Addr::new(127, 255, 255, 255), 2)
            ),
            Direction::Outbound
        );
        // Equal identifiers (different ASes, RFC 6286): the larger AS keeps its connection.
        assert_eq!(
            surviving_direction(id(LOW, 65001), id(LOW, 65000)),
            Direction::Outbound
        );
        assert_eq!(
            surviving_direction(id(LOW, 65000), id(LOW, 65001)),
            Direction::Inbound
        );
    }

    #[test]
    fn both_in_open_confirm_resolve_by_identifier() {
        let peer_low = Some(id(LOW, 65000));
        let peer_high = Some(id(HIGH, 65000));
        let us_mid = id(Ipv4Addr::new(172, 16, 0, 1), 65001);
        // We are higher: keep our outbound connection, wherever it is.
        assert_eq!(
            resolve(
                us_mid,
                side(State::OpenConfirm, Direction::Outbound, peer_low),
                false,
                Some(side(State::OpenConfirm, Direction::Inbound, peer_low)),
            ),
            Resolution::CloseSecondary
        );
        assert_eq!(
            resolve(
                us_mid,
                side(State::OpenConfirm, Direction::Inbound, peer_low),
                false,
                Some(side(State::OpenConfirm, Direction::Outbound, peer_low)),
            ),
            Resolution::ClosePrimary
        );
        // The peer is higher: keep its (inbound) connection.
        assert_eq!(
            resolve(
                us_mid,
                side(State::OpenConfirm, Direction::Outbound, peer_high),
                false,
                Some(side(State::OpenConfirm, Direction::Inbound, peer_high)),
            ),
            Resolution::ClosePrimary
        );
        assert_eq!(
            resolve(
                us_mid,
                side(State::OpenConfirm, Direction::Inbound, peer_high),
                false,
                Some(side(State::OpenConfirm, Direction::Outbound, peer_high)),
            ),
            Resolution::CloseSecondary
        );
        // The peer connected twice: the newer connection replaces the older one at once.
        for (p, s) in [
            (State::OpenConfirm, State::OpenConfirm),
            (State::OpenSent, State::OpenSent),
            (State::OpenConfirm, State::OpenSent),
        ] {
            assert_eq!(
                resolve(
                    us_mid,
                    side(p, Direction::Inbound, peer_high),
                    false,
                    Some(side(s, Direction::Inbound, None)),
                ),
                Resolution::ClosePrimary,
                "{p} / {s}"
            );
        }
    }

    #[test]
    fn established_session_wins_any_collision() {
        let us = id(HIGH, 65001);
        let peer = Some(id(LOW, 65000));
        for other in [State::OpenSent, State::OpenConfirm] {
            assert_eq!(
                resolve(
                    us,
                    side(State::Established, Direction::Inbound, peer),
                    false,
                    Some(side(other, Direction::Inbound, peer)),
                ),
                Resolution::CloseSecondary
            );
            // Even when the identifiers would favour the other connection.
            assert_eq!(
                resolve(
                    us,
                    side(other, Direction::Outbound, peer),
                    false,
                    Some(side(State::Established, Direction::Inbound, peer)),
                ),
                Resolution::ClosePrimary
            );
        }
    }

    #[test]
    fn too_early_to_decide_waits() {
        let us = id(HIGH, 65001);
        let peer = Some(id(LOW, 65000));
        for (p, s) in [
            (State::OpenSent, State::OpenSent),
            (State::OpenSent, State::OpenConfirm),
            (State::OpenConfirm, State::OpenSent),
        ] {
            assert_eq!(
                resolve(
                    us,
                    side(p, Direction::Outbound, None),
                    false,
                    Some(side(s, Direction::Inbound, peer)),
                ),
                Resolution::Keep,
                "{p} / {s}"
            );
        }
        // Our own connect is in flight: the inbound connection waits for its outcome.
        assert_eq!(
            resolve(
                us,
                unconnected(State::Connect),
                true,
                Some(side(State::OpenConfirm, Direction::Inbound, peer)),
            ),
            Resolution::Keep
        );
        assert_eq!(
            resolve(
                us,
                side(State::OpenSent, Direction::Outbound, None),
                false,
                None
            ),
            Resolution::Keep
        );
    }

    #[test]
    fn lone_or_dead_connections() {
        let us = id(HIGH, 65001);
        let peer = Some(id(LOW, 65000));
        // Our attempt failed (Active) or we are in the hold-down (Idle): the inbound one takes
        // over.
        for primary in [State::Active, State::Idle, State::Connect] {
            assert_eq!(
                resolve(
                    us,
                    unconnected(primary),
                    false,
                    Some(side(State::OpenSent, Direction::Inbound, peer)),
                ),
                Resolution::PromoteSecondary,
                "{primary}"
            );
        }
        // Our attempt is still in flight, but the peer's connection is already Established.
        assert_eq!(
            resolve(
                us,
                unconnected(State::Connect),
                true,
                Some(side(State::Established, Direction::Inbound, peer)),
            ),
            Resolution::PromoteSecondary
        );
        // The secondary failed on its own.
        for dead in [State::Idle, State::Active] {
            assert_eq!(
                resolve(
                    us,
                    side(State::OpenSent, Direction::Outbound, None),
                    false,
                    Some(unconnected(dead)),
                ),
                Resolution::DropSecondary
            );
        }
    }

    fn any_state() -> impl Strategy<Value = State> {
        prop_oneof![
            Just(State::Idle),
            Just(State::Connect),
            Just(State::Active),
            Just(State::OpenSent),
            Just(State::OpenConfirm),
            Just(State::Established),
        ]
    }

    fn any_direction() -> impl Strategy<Value = Option<Direction>> {
        prop_oneof![
            Just(None),
            Just(Some(Direction::Outbound)),
            Just(Some(Direction::Inbound))
        ]
    }

    proptest! {
        /// Both speakers apply the rule to the same pair of connections (seen from each side
        /// the directions are swapped) and keep the same one.
        #[test]
        fn both_sides_keep_the_same_connection(a in any::<u32>(), b in any::<u32>(), asn_a in 1u32.., asn_b in 1u32..) {
            prop_assume!((a, asn_a) != (b, asn_b));
            let (ia, ib) = (id(Ipv4Addr::from(a), asn_a), id(Ipv4Addr::from(b), asn_b));
            // The connection A initiated: A's outbound, B's inbound.
            let a_keeps_own = surviving_direction(ia, ib) == Direction::Outbound;
            let b_keeps_a = surviving_direction(ib, ia) == Direction::Inbound;
            prop_assert_eq!(a_keeps_own, b_keeps_a);
        }

        /// Never closes an Established connection, and never leaves two established sessions.
        #[test]
        fn established_is_never_closed(
            p in any_state(), pd in any_direction(), s in any_state(), sd in any_direction(),
            connecting in any::<bool>(), peer in any::<u32>(),
        ) {
            let us = id(HIGH, 65001);
            let peer = Some(id(Ipv4Addr::from(peer), 65000));
            let primary = Side { state: p, direction: pd, peer };
            let secondary = Side { state: s, direction: sd, peer };
            // Two established sessions never exist: the second would have been resolved first.
            prop_assume!(!(p == State::Established && s == State::Established));
            let r = resolve(us, primary, connecting, Some(secondary));
            if p == State::Established && pd.is_some() {
                prop_assert_ne!(r, Resolution::ClosePrimary);
                prop_assert_ne!(r, Resolution::PromoteSecondary);
            }
            if s == State::Established && sd.is_some() {
                prop_assert_ne!(r, Resolution::CloseSecondary);
                prop_assert_ne!(r, Resolution::DropSecondary);
            }
        }
    }
}

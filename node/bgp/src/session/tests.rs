//! Every FSM transition, driven with a fake clock (a base instant plus offsets).

use super::*;
use crate::wire::{AsSegment, AsSegmentKind, PathAttribute, RouteRefresh};

const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65000;

fn clock() -> impl Fn(u64) -> Instant {
    let t0 = Instant::now();
    move |ms| t0 + Duration::from_millis(ms)
}

fn config() -> SessionConfig {
    SessionConfig::new(LOCAL_AS, Ipv4Addr::new(198, 18, 1, 2), PEER_AS)
}

fn peer_open(hold_time: u16) -> Open {
    Open::new(
        PEER_AS,
        hold_time,
        Ipv4Addr::new(198, 18, 1, 1),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::FourOctetAs(PEER_AS),
        ],
    )
}

fn notification(code: u8, subcode: u8) -> Action {
    Action::Send(Message::Notification(Notification::new(
        code,
        subcode,
        Vec::new(),
    )))
}

/// Drives a fresh session to OpenSent at t=0.
fn open_sent(s: &mut Session, at: &impl Fn(u64) -> Instant) {
    assert_eq!(s.handle(Event::Start, at(0)), vec![Action::Connect]);
    let open = s.local_open();
    assert_eq!(
        s.handle(Event::TcpConnected, at(0)),
        vec![Action::Send(Message::Open(open))]
    );
    assert_eq!(s.state(), State::OpenSent);
}

/// Drives a fresh session to Established at t=0 with the peer proposing `hold`.
fn established(s: &mut Session, hold: u16, at: &impl Fn(u64) -> Instant) -> Negotiated {
    open_sent(s, at);
    assert_eq!(
        s.handle(Event::Message(Message::Open(peer_open(hold))), at(0)),
        vec![Action::Send(Message::Keepalive)]
    );
    assert_eq!(s.state(), State::OpenConfirm);
    let actions = s.handle(Event::Message(Message::Keepalive), at(0));
    let [Action::Established(n)] = actions.as_slice() else {
        panic!("expected Established, got {actions:?}")
    };
    assert_eq!(s.state(), State::Established);
    n.clone()
}

#[test]
fn new_session_is_idle_and_waits_for_start() {
    let at = clock();
    let mut s = Session::new(config());
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.handle(Event::Tick, at(100_000)), vec![]);
    assert_eq!(s.handle(Event::Start, at(0)), vec![Action::Connect]);
    assert_eq!(s.state(), State::Connect);
    assert_eq!(s.next_deadline(), Some(at(5_000)), "connect timeout");
    // A second Start changes nothing.
    assert_eq!(s.handle(Event::Start, at(1)), vec![]);
}

#[test]
fn connect_failures_back_off_exponentially_to_the_cap() {
    let at = clock();
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    let mut now = 0;
    for expected_wait in [1, 2, 4, 8, 16, 30, 30] {
        assert_eq!(s.handle(Event::TcpConnectFailed, at(now)), vec![]);
        assert_eq!(s.state(), State::Active);
        assert_eq!(s.next_deadline(), Some(at(now + expected_wait * 1000)));
        // Nothing happens before the deadline.
        assert_eq!(
            s.handle(Event::Tick, at(now + expected_wait * 1000 - 1)),
            vec![]
        );
        now += expected_wait * 1000;
        assert_eq!(s.handle(Event::Tick, at(now)), vec![Action::Connect]);
        assert_eq!(s.state(), State::Connect);
    }
    assert_eq!(s.last_error(), Some("TCP connect failed"));
}

#[test]
fn connect_attempt_times_out() {
    let at = clock();
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    assert_eq!(
        s.handle(Event::Tick, at(5_000)),
        vec![Action::CloseConnection]
    );
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.next_deadline(), Some(at(6_000)));
    assert_eq!(s.handle(Event::Tick, at(6_000)), vec![Action::Connect]);
}

#[test]
fn inbound_connection_in_active_sends_open() {
    let at = clock();
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    s.handle(Event::TcpConnectFailed, at(0));
    let actions = s.handle(Event::TcpConnected, at(10));
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(Message::Open(_))]
    ));
    assert_eq!(s.state(), State::OpenSent);
    assert_eq!(s.next_deadline(), Some(at(10 + 240_000)), "open hold time");
}

#[test]
fn open_exchange_negotiates_the_smaller_hold_time() {
    let at = clock();
    let mut s = Session::new(config());
    let n = established(&mut s, 30, &at);
    assert_eq!(n.hold_time, 30);
    assert_eq!(n.peer_asn, PEER_AS);
    assert_eq!(n.peer_id, Ipv4Addr::new(198, 18, 1, 1));
    assert!(n.codec.four_octet_as);
    assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
    // Keepalive every 10 s, hold 30 s.
    assert_eq!(s.next_deadline(), Some(at(10_000)));
    assert_eq!(
        s.handle(Event::Tick, at(10_000)),
        vec![Action::Send(Message::Keepalive)]
    );
    assert_eq!(s.next_deadline(), Some(at(20_000)));

    let mut s = Session::new(config());
    assert_eq!(
        established(&mut s, 180, &at).hold_time,
        90,
        "ours is smaller"
    );
}

#[test]
fn hold_time_zero_means_no_timers() {
    let at = clock();
    let mut s = Session::new(config());
    let n = established(&mut s, 0, &at);
    assert_eq!(n.hold_time, 0);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.handle(Event::Tick, at(10_000_000)), vec![]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn hold_timer_expiry_drops_the_session_and_retries() {
    let at = clock();
    let mut s = Session::new(config());
    established(&mut s, 9, &at);
    // Keepalives from the peer restart the hold timer.
    s.handle(Event::Message(Message::Keepalive), at(8_000));
    assert_eq!(
        s.handle(Event::Tick, at(9_000)),
        vec![Action::Send(Message::Keepalive)]
    );
    assert_eq!(s.state(), State::Established);
    let actions = s.handle(Event::Tick, at(17_000));
    assert_eq!(
        actions,
        vec![
            notification(4, 0),
            Action::CloseConnection,
            Action::SessionDown {
                reason: "sent NOTIFICATION hold timer expired (4/0)".into()
            },
        ]
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.negotiated(), None);
    assert_eq!(
        s.next_deadline(),
        Some(at(18_000)),
        "backoff was reset at Established"
    );
    assert_eq!(s.handle(Event::Tick, at(18_000)), vec![Action::Connect]);
}

#[test]
fn hold_timer_expires_in_open_sent_and_open_confirm() {
    let at = clock();
    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    let actions = s.handle(Event::Tick, at(240_000));
    assert_eq!(actions, vec![notification(4, 0), Action::CloseConnection]);
    assert_eq!(s.state(), State::Idle);

    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    s.handle(Event::Message(Message::Open(peer_open(30))), at(0));
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(
        s.handle(Event::Tick, at(10_000)),
        vec![Action::Send(Message::Keepalive)]
    );
    let actions = s.handle(Event::Tick, at(30_000));
    assert_eq!(actions, vec![notification(4, 0), Action::CloseConnection]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn bad_peer_as_is_refused() {
    let at = clock();
    let mut s = Session::new(SessionConfig {
        peer_asn: 65099,
        ..config()
    });
    open_sent(&mut s, &at);
    let actions = s.handle(Event::Message(Message::Open(peer_open(90))), at(0));
    assert_eq!(actions, vec![notification(2, 2), Action::CloseConnection]);
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), Some(at(1_000)));
}

#[test]
fn large_peer_as_without_the_capability_is_as_trans() {
    let at = clock();
    let mut s = Session::new(SessionConfig {
        peer_asn: 4_200_000_000,
        ..config()
    });
    open_sent(&mut s, &at);
    // The peer sends AS_TRANS but no 4-octet AS capability: 23456 != 4200000000.
    let open = Open::new(4_200_000_000, 90, Ipv4Addr::new(198, 18, 1, 1), vec![]);
    let actions = s.handle(Event::Message(Message::Open(open)), at(0));
    assert_eq!(actions[0], notification(2, 2));
}

#[test]
fn same_router_id_inside_one_as_is_refused() {
    let at = clock();
    let mut s = Session::new(SessionConfig {
        peer_asn: LOCAL_AS,
        ..config()
    });
    open_sent(&mut s, &at);
    let open = Open::new(
        LOCAL_AS,
        90,
        Ipv4Addr::new(198, 18, 1, 2),
        vec![Capability::FourOctetAs(LOCAL_AS)],
    );
    let actions = s.handle(Event::Message(Message::Open(open)), at(0));
    assert_eq!(actions[0], notification(2, 3));
}

#[test]
fn peer_without_capabilities_gets_ipv4_and_two_octet_as() {
    let at = clock();
    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    let open = Open::new(PEER_AS, 90, Ipv4Addr::new(198, 18, 1, 1), vec![]);
    s.handle(Event::Message(Message::Open(open)), at(0));
    let n = s.negotiated().unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(!n.codec.four_octet_as);
    assert!(n.supports(Family::Ipv4Unicast) && !n.supports(Family::Ipv6Unicast));
}

#[test]
fn updates_in_established_are_reported_and_refresh_hold() {
    let at = clock();
    let mut s = Session::new(config());
    established(&mut s, 30, &at);
    let update = Update {
        attributes: vec![PathAttribute::AsPath(vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![PEER_AS],
        }])],
        ..Update::default()
    };
    let actions = s.handle(Event::Message(Message::Update(update.clone())), at(25_000));
    assert_eq!(actions, vec![Action::UpdateReceived(update)]);
    // Hold now runs to 55 s; keepalives at 10, 20, ...
    s.handle(Event::Tick, at(30_000));
    assert_eq!(s.state(), State::Established);
    let rr = Message::RouteRefresh(RouteRefresh {
        afi: 1,
        reserved: 0,
        safi: 1,
    });
    assert_eq!(s.handle(Event::Message(rr), at(50_000)), vec![]);
    s.handle(Event::Tick, at(79_000));
    assert_eq!(
        s.state(),
        State::Established,
        "route refresh restarted hold"
    );
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let at = clock();
    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    let actions = s.handle(Event::Message(Message::Keepalive), at(0));
    assert_eq!(actions, vec![notification(5, 1), Action::CloseConnection]);

    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    s.handle(Event::Message(Message::Open(peer_open(90))), at(0));
    let actions = s.handle(Event::Message(Message::Open(peer_open(90))), at(0));
    assert_eq!(actions, vec![notification(5, 2), Action::CloseConnection]);

    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    let actions = s.handle(Event::Message(Message::Open(peer_open(90))), at(0));
    assert_eq!(actions[..2], [notification(5, 3), Action::CloseConnection]);
    assert!(matches!(actions[2], Action::SessionDown { .. }));
}

#[test]
fn malformed_input_is_answered_with_its_notification() {
    let at = clock();
    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    let err = DecodeError::MissingWellKnownAttribute { type_code: 3 };
    let actions = s.handle(Event::DecodeError(err), at(0));
    assert_eq!(
        actions[..2],
        [
            Action::Send(Message::Notification(Notification::new(3, 3, vec![3]))),
            Action::CloseConnection
        ]
    );
    assert_eq!(s.state(), State::Idle);
    // Not connected: nothing to answer.
    assert_eq!(
        s.handle(
            Event::DecodeError(DecodeError::ConnectionNotSynchronized),
            at(0)
        ),
        vec![]
    );
}

#[test]
fn peer_notification_closes_the_session() {
    let at = clock();
    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    let n = Notification::cease(notif::CEASE_ADMINISTRATIVE_RESET);
    let actions = s.handle(Event::Message(Message::Notification(n)), at(0));
    assert_eq!(
        actions,
        vec![
            Action::CloseConnection,
            Action::SessionDown {
                reason: "peer sent NOTIFICATION cease (6/4)".into()
            }
        ]
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.last_error(), Some("peer sent NOTIFICATION cease (6/4)"));

    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    let n = Notification::new(2, 2, vec![]);
    let actions = s.handle(Event::Message(Message::Notification(n)), at(0));
    assert_eq!(actions, vec![Action::CloseConnection]);
}

#[test]
fn connection_loss() {
    let at = clock();
    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    assert_eq!(
        s.handle(Event::TcpClosed, at(0)),
        vec![Action::CloseConnection]
    );
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.next_deadline(), Some(at(1_000)));

    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    let actions = s.handle(Event::TcpClosed, at(0));
    assert_eq!(
        actions,
        vec![
            Action::CloseConnection,
            Action::SessionDown {
                reason: "connection closed".into()
            }
        ]
    );
    assert_eq!(s.state(), State::Idle);
    // Idle/Active ignore a late close.
    assert_eq!(s.handle(Event::TcpClosed, at(0)), vec![]);
}

#[test]
fn stop_sends_cease_and_stays_down() {
    let at = clock();
    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    let actions = s.handle(
        Event::Stop {
            cease_subcode: notif::CEASE_PEER_DECONFIGURED,
        },
        at(0),
    );
    assert_eq!(
        actions,
        vec![
            notification(6, 3),
            Action::CloseConnection,
            Action::SessionDown {
                reason: "stopped".into()
            }
        ]
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.handle(Event::Tick, at(1_000_000)), vec![]);
    // A connection completing after Stop is closed.
    assert_eq!(
        s.handle(Event::TcpConnected, at(0)),
        vec![Action::CloseConnection]
    );

    // Stop while connecting: just close the attempt.
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    assert_eq!(
        s.handle(Event::Stop { cease_subcode: 2 }, at(0)),
        vec![Action::CloseConnection]
    );
    // Stop while waiting to retry: nothing to close, no retry.
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    s.handle(Event::TcpConnectFailed, at(0));
    assert_eq!(s.handle(Event::Stop { cease_subcode: 2 }, at(0)), vec![]);
    assert_eq!(s.next_deadline(), None);
    // Start again after Stop connects immediately.
    assert_eq!(s.handle(Event::Start, at(5)), vec![Action::Connect]);
}

#[test]
fn stray_connection_while_established_is_closed() {
    let at = clock();
    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    assert_eq!(
        s.handle(Event::TcpConnected, at(0)),
        vec![Action::CloseConnection]
    );
    assert_eq!(s.state(), State::Established);
}

#[test]
fn messages_while_not_connected_are_ignored() {
    let at = clock();
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    assert_eq!(s.handle(Event::Message(Message::Keepalive), at(0)), vec![]);
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn graceful_restart_capability_follows_the_config() {
    let at = clock();
    let s = Session::new(config());
    assert!(s.local_open().graceful_restart().is_none());

    let mut s = Session::new(SessionConfig {
        graceful_restart_time: Some(120),
        ..config()
    });
    let gr = s.local_open().graceful_restart().cloned().unwrap();
    assert!(gr.restart_state, "first session after start sets R");
    assert_eq!(gr.restart_time, 120);
    assert_eq!(
        gr.families,
        vec![
            GracefulRestartFamily {
                afi_safi: AfiSafi::IPV4_UNICAST,
                forwarding_preserved: true
            },
            GracefulRestartFamily {
                afi_safi: AfiSafi::IPV6_UNICAST,
                forwarding_preserved: true
            }
        ]
    );
    established(&mut s, 90, &at);
    s.handle(Event::TcpClosed, at(0));
    let gr = s.local_open().graceful_restart().cloned().unwrap();
    assert!(!gr.restart_state, "later sessions clear R");

    let s = Session::new(SessionConfig {
        graceful_restart_time: Some(9999),
        ..config()
    });
    assert_eq!(
        s.local_open().graceful_restart().unwrap().restart_time,
        4095
    );
}

#[test]
fn open_carries_asn_capabilities_and_hold_time() {
    let s = Session::new(SessionConfig {
        local_asn: 4_200_000_001,
        hold_time: 30,
        ..config()
    });
    let open = s.local_open();
    assert_eq!(open.my_as, crate::wire::AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_001);
    assert_eq!(open.hold_time, 30);
    assert_eq!(
        open.families(),
        vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
    );
}

#[test]
fn inbound_connection_is_adopted_in_connect_active_and_hold_down_idle() {
    let at = clock();
    // Connect: our attempt is in flight; the peer's connection is taken (RFC 4271 8.2.2).
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    assert_eq!(s.state(), State::Connect);
    let open = s.local_open();
    assert_eq!(
        s.handle(Event::TcpConnectionConfirmed, at(10)),
        vec![Action::Send(Message::Open(open.clone()))]
    );
    assert_eq!(s.state(), State::OpenSent);
    assert_eq!(s.next_deadline(), Some(at(10 + 240_000)), "open hold time");

    // Active: waiting to retry.
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    s.handle(Event::TcpConnectFailed, at(0));
    assert_eq!(s.state(), State::Active);
    assert_eq!(
        s.handle(Event::TcpConnectionConfirmed, at(10)),
        vec![Action::Send(Message::Open(open.clone()))]
    );
    assert_eq!(s.state(), State::OpenSent);

    // Idle in the hold-down after an error: the peer's connection ends the hold-down.
    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    s.handle(Event::TcpClosed, at(100));
    assert_eq!(s.state(), State::Idle);
    assert!(s.next_deadline().is_some());
    let actions = s.handle(Event::TcpConnectionConfirmed, at(200));
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(Message::Open(_))]
    ));
    assert_eq!(s.state(), State::OpenSent);
    assert_eq!(
        s.next_deadline(),
        Some(at(200 + 240_000)),
        "no retry timer left"
    );
}

#[test]
fn inbound_connection_is_not_adopted_when_stopped_or_busy() {
    let at = clock();
    // Never started.
    let mut s = Session::new(config());
    assert_eq!(s.handle(Event::TcpConnectionConfirmed, at(0)), vec![]);
    assert_eq!(s.state(), State::Idle);
    // Stopped.
    let mut s = Session::new(config());
    s.handle(Event::Start, at(0));
    s.handle(Event::Stop { cease_subcode: 2 }, at(0));
    assert_eq!(s.handle(Event::TcpConnectionConfirmed, at(0)), vec![]);
    assert_eq!(s.state(), State::Idle);
    // Busy with a connection: the machine's own connection is untouched (the driver runs the
    // new one on a second machine, see `collision`).
    let mut s = Session::new(config());
    open_sent(&mut s, &at);
    assert_eq!(s.handle(Event::TcpConnectionConfirmed, at(0)), vec![]);
    assert_eq!(s.state(), State::OpenSent);
    let mut s = Session::new(config());
    established(&mut s, 90, &at);
    assert_eq!(s.handle(Event::TcpConnectionConfirmed, at(0)), vec![]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn passive_session_never_connects_and_waits_in_active() {
    let at = clock();
    let mut c = config();
    c.passive = true;
    let mut s = Session::new(c);
    assert_eq!(s.handle(Event::Start, at(0)), vec![]);
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.handle(Event::Tick, at(100_000)), vec![]);
    // The peer connects, the session comes up, then the connection drops.
    let actions = s.handle(Event::TcpConnectionConfirmed, at(0));
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(Message::Open(_))]
    ));
    s.handle(Event::Message(Message::Open(peer_open(90))), at(0));
    let actions = s.handle(Event::Message(Message::Keepalive), at(0));
    assert!(matches!(actions.as_slice(), [Action::Established(_)]));
    let actions = s.handle(Event::TcpClosed, at(1_000));
    assert!(actions.contains(&Action::CloseConnection), "{actions:?}");
    assert_eq!(s.state(), State::Idle);
    // After the hold-down it waits again instead of connecting.
    let deadline = s.next_deadline().expect("hold-down");
    assert_eq!(s.handle(Event::Tick, deadline), vec![]);
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn accepting_machine_mirrors_the_primary() {
    let at = clock();
    let mut c = config();
    c.graceful_restart_time = Some(120);
    let mut primary = Session::new(c);
    // Before any session: the second machine also announces a restart (R bit).
    let second = primary.accepting();
    assert_eq!(second.state(), State::Active);
    assert!(!second.is_stopped());
    assert_eq!(second.next_deadline(), None, "never connects by itself");
    assert!(
        second
            .local_open()
            .graceful_restart()
            .unwrap()
            .restart_state
    );
    // After the first session, neither does.
    established(&mut primary, 90, &at);
    primary.handle(Event::TcpClosed, at(10));
    let mut second = primary.accepting();
    assert!(
        !second
            .local_open()
            .graceful_restart()
            .unwrap()
            .restart_state
    );
    assert_eq!(
        second.handle(Event::TcpConnectionConfirmed, at(20)),
        vec![Action::Send(Message::Open(primary.local_open()))]
    );
}

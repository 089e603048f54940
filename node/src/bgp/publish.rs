//! Publishing the speaker's sessions on the NodeInfo ([`super::sessions`]): a pure mapping from
//! the speaker's snapshot to the annotation value, a pure rate limiter, and the task that
//! follows the speaker and hands a new value to the agent's NodeInfo publication (which
//! server-side applies it with the rest of the NodeInfo) at most once per interval.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hybridnet_bgp::{BgpSpeaker, PeerState, State};
use k8s_openapi::jiff::Timestamp;

use super::controller::BgpState;
use super::sessions::{BgpSession, SessionState, to_annotation};

/// Least time between two published values: a flapping peer costs at most one NodeInfo write
/// per interval, and the last state of a burst is still published.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

fn session_state(s: State) -> SessionState {
    match s {
        State::Idle => SessionState::Idle,
        State::Connect => SessionState::Connect,
        State::Active => SessionState::Active,
        State::OpenSent => SessionState::OpenSent,
        State::OpenConfirm => SessionState::OpenConfirm,
        State::Established => SessionState::Established,
    }
}

/// The published form of the speaker's peers.
pub fn sessions_of(local_asn: u32, peers: &[PeerState]) -> Vec<BgpSession> {
    peers
        .iter()
        .map(|p| BgpSession {
            peer_address: p.address,
            peer_asn: p.asn,
            local_asn,
            state: session_state(p.state),
            since: timestamp(p.state_since),
            prefixes_v4: p.prefixes_announced_v4 as u64,
            prefixes_v6: p.prefixes_announced_v6 as u64,
            required: !p.allow_not_established,
            flaps: p.flaps,
        })
        .collect()
}

fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The annotation value for a running speaker.
pub fn annotation_of(speaker: &BgpSpeaker) -> String {
    to_annotation(&sessions_of(
        speaker.config().local_asn,
        &speaker.peer_states(),
    ))
}

/// What [`Coalescer::offer`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Publish this value now (`None`: remove the annotation).
    Publish(Option<String>),
    /// The value is already published.
    Unchanged,
    /// Too soon after the last publication: offer the then current value again at this time.
    WaitUntil(Instant),
}

/// Publishes a value only when it differs from the last published one, and never twice within
/// `min_interval`; values offered in between are coalesced into the next publication.
#[derive(Debug, Clone)]
pub struct Coalescer {
    min_interval: Duration,
    published: Option<Option<String>>,
    last: Option<Instant>,
}

impl Coalescer {
    pub fn new(min_interval: Duration) -> Self {
        Coalescer {
            min_interval,
            published: None,
            last: None,
        }
    }

    pub fn offer(&mut self, value: Option<String>, now: Instant) -> Offer {
        if self.published.as_ref() == Some(&value) {
            return Offer::Unchanged;
        }
        if let Some(last) = self.last {
            let next = last + self.min_interval;
            if now < next {
                return Offer::WaitUntil(next);
            }
        }
        self.published = Some(value.clone());
        self.last = Some(now);
        Offer::Publish(value)
    }
}

/// Follows the node's speaker (replaced or gone) and its sessions, and stores each new
/// annotation value in `state` ([`BgpState::sessions_annotation`]), then calls `on_change` (the
/// agent triggers a reconcile, which publishes the NodeInfo). Never returns.
pub async fn follow_sessions(
    state: Arc<BgpState>,
    min_interval: Duration,
    on_change: impl Fn() + Send,
) {
    let mut limiter = Coalescer::new(min_interval);
    let mut speakers = state.speaker_changes();
    loop {
        speakers.borrow_and_update();
        // Never hold the speaker across an await: a retired speaker must be able to go.
        let (value, mut changes) = match state.speaker() {
            Some(s) => {
                let mut rx = s.subscribe();
                rx.borrow_and_update();
                (Some(annotation_of(&s)), Some(rx))
            }
            None => (None, None),
        };
        match limiter.offer(value, Instant::now()) {
            Offer::Publish(v) => {
                state.set_sessions_annotation(v);
                on_change();
            }
            Offer::Unchanged => {}
            Offer::WaitUntil(at) => {
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
        }
        let session_change = async {
            match changes.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        // The speaker is gone; its replacement (or none) is announced below.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = session_change => {}
            r = speakers.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(addr: &str, state: State, v4: usize, v6: usize, allow: bool) -> PeerState {
        PeerState {
            address: addr.parse().unwrap(),
            asn: 65000,
            state,
            state_since: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_151_200_250),
            established_since: None,
            flaps: 2,
            prefixes_announced: v4 + v6,
            prefixes_announced_v4: v4,
            prefixes_announced_v6: v6,
            updates_received: 7,
            last_error: Some("boom".into()),
            does_not_route_traffic: false,
            allow_not_established: allow,
            collisions: 1,
            connection: None,
        }
    }

    #[test]
    fn sessions_from_the_speaker_snapshot() {
        let peers = [
            peer("fd00::1", State::Active, 0, 0, true),
            peer("198.18.0.1", State::Established, 3, 2, false),
        ];
        let v = to_annotation(&sessions_of(65001, &peers));
        assert_eq!(
            v,
            r#"[{"peerAddress":"198.18.0.1","peerASN":65000,"localASN":65001,"state":"Established","since":"2025-11-26T10:00:00Z","prefixesV4":3,"prefixesV6":2,"required":true,"flaps":2},{"peerAddress":"fd00::1","peerASN":65000,"localASN":65001,"state":"Active","since":"2025-11-26T10:00:00Z","prefixesV4":0,"prefixesV6":0,"required":false,"flaps":2}]"#
        );
        // Counters the annotation does not show change nothing.
        let mut busier = peers.clone();
        busier[1].updates_received += 100;
        busier[1].collisions += 1;
        busier[1].last_error = None;
        busier[1].state_since += Duration::from_millis(500);
        assert_eq!(to_annotation(&sessions_of(65001, &busier)), v);
        // A state, count or flap change does.
        for change in [
            |p: &mut PeerState| p.state = State::Idle,
            |p: &mut PeerState| p.prefixes_announced_v6 = 1,
            |p: &mut PeerState| p.flaps += 1,
            |p: &mut PeerState| p.allow_not_established = true,
        ] {
            let mut other = peers.clone();
            change(&mut other[1]);
            assert_ne!(to_annotation(&sessions_of(65001, &other)), v);
        }
        for s in [
            State::Idle,
            State::Connect,
            State::Active,
            State::OpenSent,
            State::OpenConfirm,
            State::Established,
        ] {
            assert_eq!(session_state(s).as_str(), s.as_str());
        }
    }

    #[test]
    fn coalescer_publishes_changes_at_most_once_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Coalescer::new(2 * s);
        assert_eq!(c.offer(None, t0), Offer::Publish(None));
        assert_eq!(c.offer(None, t0 + s), Offer::Unchanged);
        assert_eq!(
            c.offer(Some("a".into()), t0 + s),
            Offer::WaitUntil(t0 + 2 * s)
        );
        assert_eq!(
            c.offer(Some("b".into()), t0 + 2 * s),
            Offer::Publish(Some("b".into()))
        );
        assert_eq!(c.offer(Some("b".into()), t0 + 10 * s), Offer::Unchanged);
        assert_eq!(c.offer(None, t0 + 10 * s), Offer::Publish(None));
    }

    proptest! {
        /// Offering a sequence of values at increasing times (and again when told to wait):
        /// publications are at least the interval apart, and the last value offered is
        /// published at the end.
        #[test]
        fn coalescer_properties(steps in proptest::collection::vec((0u64..3000, proptest::option::of(0u8..3)), 1..60)) {
            let start = Instant::now();
            let interval = Duration::from_millis(2000);
            let mut c = Coalescer::new(interval);
            let mut now = start;
            let mut published: Vec<(Instant, Option<String>)> = Vec::new();
            let mut pending: Option<Instant> = None;
            let mut last_value = None;
            for (gap, v) in steps {
                now += Duration::from_millis(gap);
                let value = v.map(|x| x.to_string());
                last_value = Some(value.clone());
                match c.offer(value, now) {
                    Offer::Publish(p) => { published.push((now, p)); pending = None; }
                    Offer::Unchanged => pending = None,
                    Offer::WaitUntil(at) => { prop_assert!(at > now); pending = Some(at); }
                }
            }
            if let (Some(at), Some(v)) = (pending, last_value.clone())
                && let Offer::Publish(p) = c.offer(v, at)
            {
                published.push((at, p));
            }
            for w in published.windows(2) {
                prop_assert!(w[1].0 - w[0].0 >= interval);
                prop_assert_ne!(&w[1].1, &w[0].1);
            }
            prop_assert_eq!(published.last().map(|p| p.1.clone()), last_value);
        }
    }
}

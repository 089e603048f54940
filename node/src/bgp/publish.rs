//! Publishing the speaker's sessions on the NodeInfo ([`super::sessions`]): a pure mapping from
//! the speaker's snapshot to the annotation value, a pure rate limiter, and the task that
//! follows the speaker and hands a new value to the agent's NodeInfo publication (which
//! server-side applies it with the rest of the NodeInfo) at most once per interval.
//!
//! Two speeds, because every agent watches every NodeInfo: a change that matters (a session
//! reaching or leaving Established, prefix counts, flaps, peers, `required`) is published within
//! [`DEFAULT_PUBLISH_INTERVAL`]; a peer that stays down cycles Idle/Connect/Active at every
//! connect retry, and that churn alone is published at most every [`DEFAULT_CHURN_INTERVAL`],
//! so a ToR outage does not make every node rewrite its NodeInfo every few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hybridnet_bgp::{BgpSpeaker, PeerState, State};
use k8s_openapi::jiff::Timestamp;

use super::controller::BgpState;
use super::sessions::{BgpSession, SessionState, to_annotation};

/// Least time between two published values: a flapping peer costs at most one NodeInfo write
/// per interval, and the last state of a burst is still published.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(2);

/// Least time between two values that differ only in the state (and `since`) of sessions that
/// are not Established.
pub const DEFAULT_CHURN_INTERVAL: Duration = Duration::from_secs(30);

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

/// The sessions of a running speaker.
pub fn speaker_sessions(speaker: &BgpSpeaker) -> Vec<BgpSession> {
    sessions_of(speaker.config().local_asn, &speaker.peer_states())
}

/// What makes a change worth publishing at once: the sessions with every state other than
/// Established made one (connect-retry churn of a peer that is down is not).
pub fn significance_key(sessions: &[BgpSession]) -> String {
    let coarse: Vec<BgpSession> = sessions
        .iter()
        .map(|s| match s.state {
            SessionState::Established => s.clone(),
            _ => BgpSession {
                state: SessionState::Idle,
                since: Timestamp::UNIX_EPOCH,
                ..s.clone()
            },
        })
        .collect();
    to_annotation(&coarse)
}

/// The value to publish and its significance key; `None` without a speaker.
pub fn publication_of(sessions: Option<&[BgpSession]>) -> Option<(String, String)> {
    sessions.map(|s| (to_annotation(s), significance_key(s)))
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

/// Publishes a value only when it differs from the last published one, never twice within
/// `min_interval`, and not within `churn_interval` when its significance key is the last
/// published one's; values offered in between are coalesced into the next publication.
#[derive(Debug, Clone)]
pub struct Coalescer {
    min_interval: Duration,
    churn_interval: Duration,
    /// The last published value and key (`None` inside: no speaker).
    published: Option<Option<(String, String)>>,
    last: Option<Instant>,
}

impl Coalescer {
    pub fn new(min_interval: Duration, churn_interval: Duration) -> Self {
        Coalescer {
            min_interval,
            churn_interval: churn_interval.max(min_interval),
            published: None,
            last: None,
        }
    }

    /// `offered`: the value and its significance key (see [`publication_of`]).
    pub fn offer(&mut self, offered: Option<(String, String)>, now: Instant) -> Offer {
        let interval = match (&self.published, &offered) {
            (Some(p), o) if p == o => return Offer::Unchanged,
            (Some(Some((_, old_key))), Some((_, key))) if old_key == key => self.churn_interval,
            _ => self.min_interval,
        };
        if let Some(last) = self.last {
            let next = last + interval;
            if now < next {
                return Offer::WaitUntil(next);
            }
        }
        let value = offered.as_ref().map(|(v, _)| v.clone());
        self.published = Some(offered);
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
    churn_interval: Duration,
    on_change: impl Fn() + Send,
) {
    let mut limiter = Coalescer::new(min_interval, churn_interval);
    let mut speakers = state.speaker_changes();
    loop {
        speakers.borrow_and_update();
        // Never hold the speaker across an await: a retired speaker must be able to go.
        let (value, mut changes) = match state.speaker() {
            Some(s) => {
                let mut rx = s.subscribe();
                rx.borrow_and_update();
                let sessions = speaker_sessions(&s);
                (publication_of(Some(&sessions)), Some(rx))
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

    fn v(value: &str, key: &str) -> Option<(String, String)> {
        Some((value.to_string(), key.to_string()))
    }

    #[test]
    fn coalescer_publishes_changes_at_most_once_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Coalescer::new(2 * s, 30 * s);
        assert_eq!(c.offer(None, t0), Offer::Publish(None));
        assert_eq!(c.offer(None, t0 + s), Offer::Unchanged);
        assert_eq!(c.offer(v("a", "A"), t0 + s), Offer::WaitUntil(t0 + 2 * s));
        assert_eq!(
            c.offer(v("b", "B"), t0 + 2 * s),
            Offer::Publish(Some("b".into()))
        );
        assert_eq!(c.offer(v("b", "B"), t0 + 10 * s), Offer::Unchanged);
        // Churn (same key): only after the churn interval.
        assert_eq!(
            c.offer(v("b2", "B"), t0 + 10 * s),
            Offer::WaitUntil(t0 + 32 * s)
        );
        // A significant change meanwhile goes out at the short interval.
        assert_eq!(
            c.offer(v("c", "C"), t0 + 10 * s),
            Offer::Publish(Some("c".into()))
        );
        assert_eq!(c.offer(None, t0 + 12 * s), Offer::Publish(None));
    }

    #[test]
    fn connect_retry_churn_is_not_significant() {
        let peers = [peer("198.18.0.1", State::Connect, 0, 0, false)];
        let mut retry = peers.clone();
        retry[0].state = State::Active;
        retry[0].state_since += Duration::from_secs(5);
        let a = sessions_of(65001, &peers);
        let b = sessions_of(65001, &retry);
        assert_ne!(to_annotation(&a), to_annotation(&b));
        assert_eq!(significance_key(&a), significance_key(&b));
        // Reaching Established, a flap or a count is.
        for change in [
            |p: &mut PeerState| p.state = State::Established,
            |p: &mut PeerState| p.flaps += 1,
            |p: &mut PeerState| p.prefixes_announced_v4 = 1,
        ] {
            let mut other = peers.clone();
            change(&mut other[0]);
            assert_ne!(
                significance_key(&sessions_of(65001, &other)),
                significance_key(&a)
            );
        }
        let mut up = peers.clone();
        up[0].state = State::Established;
        let mut up_later = up.clone();
        up_later[0].state_since += Duration::from_secs(5);
        assert_ne!(
            significance_key(&sessions_of(65001, &up)),
            significance_key(&sessions_of(65001, &up_later)),
            "a new Established session (same counts) is news"
        );
        assert_eq!(publication_of(None), None);
    }

    proptest! {
        /// Offering a sequence of values at increasing times (and again when told to wait):
        /// publications are at least the interval apart, and the last value offered is
        /// published at the end.
        #[test]
        fn coalescer_properties(steps in proptest::collection::vec((0u64..3000, proptest::option::of((0u8..3, 0u8..2))), 1..60)) {
            let start = Instant::now();
            let interval = Duration::from_millis(2000);
            let churn = Duration::from_millis(7000);
            let mut c = Coalescer::new(interval, churn);
            let mut now = start;
            let mut published: Vec<(Instant, Option<String>)> = Vec::new();
            let mut pending: Option<Instant> = None;
            let mut last_value = None;
            for (gap, v) in steps {
                now += Duration::from_millis(gap);
                // The key is a function of the value (as significance_key is).
                let value = v.map(|(x, k)| (format!("{x}{k}"), k.to_string()));
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
                // The key is the value's last character.
                if let (Some(a), Some(b)) = (&w[0].1, &w[1].1) && a.chars().last() == b.chars().last() {
                    prop_assert!(w[1].0 - w[0].0 >= churn);
                }
            }
            prop_assert_eq!(
                published.last().map(|p| p.1.clone()),
                last_value.map(|l| l.map(|(v, _)| v))
            );
        }
    }
}

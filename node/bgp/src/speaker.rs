//! [`BgpSpeaker`]: the handle the node agent holds. It owns one driver task per peer, applies
//! peer configuration live, fans the desired route set out to every session, and answers
//! status and readiness questions.
//!
//! - `set_peers` diffs by peer address: added peers start, removed peers get a Cease
//!   (peer de-configured), peers whose session parameters changed (ASN, password, graceful
//!   restart time) restart with a Cease (other configuration change); every other peer's
//!   session is untouched. Flags that do not affect the session (`does_not_route_traffic`,
//!   `allow_not_established`) change in place.
//! - `set_routes` replaces the desired set; each established session sends the difference.
//! - With [`SpeakerConfig::listen_port`] set, the speaker also listens (module `listener`):
//!   a configured peer's connection goes to that peer's task, which resolves collisions with
//!   its own outbound connection (RFC 4271 6.8); other sources are refused and counted
//!   ([`BgpSpeaker::refused_connections`]).
//! - [`BgpSpeaker::shutdown`] sends Cease (administrative shutdown) on every session, so peers
//!   drop our routes at once. Dropping the handle instead just closes the connections, as a
//!   crash or restart would: peers that negotiated graceful restart keep our routes for the
//!   restart time, and a new speaker re-announces them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::listener::{InboundPeer, InboundPeers, ListenerStats, run_listener};
use crate::session::collision::Direction;

use crate::Prefix;
use crate::rib::{Announcement, NextHops};
use crate::session::driver::{
    PeerStatus, PeerTaskConfig, StatusCell, carried_or_not_applicable, run_peer,
};
use crate::session::{SessionConfig, State};
use crate::tcp::MD5_MAX_KEY_LEN;
use crate::wire::notif;

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// Speaker-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    /// Local IPv4 address: source of IPv4 sessions and next hop of IPv4 routes.
    pub local_v4: Option<Ipv4Addr>,
    /// Local IPv6 address: source of IPv6 sessions and global next hop of IPv6 routes.
    pub local_v6: Option<Ipv6Addr>,
    /// Proposed hold time (seconds; 0 or >= 3).
    pub hold_time: u16,
    /// Port peers listen on (179; tests may use others).
    pub peer_port: u16,
    /// Port to accept peer connections on (179 in the agent); `None`: outbound only. Bound to
    /// `local_v4` and `local_v6` (the unspecified addresses when neither is set).
    pub listen_port: Option<u16>,
    pub connect_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl SpeakerConfig {
    pub fn new(local_asn: u32, router_id: Ipv4Addr) -> Self {
        SpeakerConfig {
            local_asn,
            router_id,
            local_v4: None,
            local_v6: None,
            hold_time: 90,
            peer_port: BGP_PORT,
            listen_port: None,
            connect_timeout: Duration::from_secs(5),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// One BGP peer as the Network's `bgpPeers` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: u32,
    /// TCP MD5 password (RFC 2385), at most 80 octets.
    pub password: Option<String>,
    /// Graceful restart time to advertise; `None` advertises no graceful restart.
    pub graceful_restart_seconds: Option<u16>,
    /// This peer is not the gateway for pod traffic.
    pub does_not_route_traffic: bool,
    /// Readiness does not wait for this peer.
    pub allow_not_established: bool,
    /// Never connect to this peer; wait for its connection (needs `listen_port`). Not part of
    /// the Network API (the agent always connects too); for tests and special setups.
    pub passive: bool,
}

impl PeerConfig {
    pub fn new(address: IpAddr, asn: u32) -> Self {
        PeerConfig {
            address,
            asn,
            password: None,
            graceful_restart_seconds: None,
            does_not_route_traffic: false,
            allow_not_established: false,
            passive: false,
        }
    }

    /// Fields whose change needs a new session.
    fn session_key(&self) -> (u32, Option<&str>, Option<u16>, bool) {
        (
            self.asn,
            self.password.as_deref(),
            self.graceful_restart_seconds,
            self.passive,
        )
    }
}

/// Invalid speaker or peer configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("BGP speaker: local ASN must not be 0")]
    LocalAsnZero,
    #[error("BGP speaker: hold time {0} is invalid (must be 0 or at least 3)")]
    HoldTime(u16),
    #[error("BGP speaker: router id must not be 0.0.0.0")]
    RouterIdZero,
    #[error("BGP speaker: no tokio runtime to run sessions on")]
    NoRuntime,
    #[error("BGP peer {address}: asn must not be 0")]
    PeerAsnZero { address: IpAddr },
    #[error("BGP peer {address}: address is unspecified, multicast or loopback-less")]
    PeerAddress { address: IpAddr },
    #[error("BGP peer {address}: configured twice")]
    DuplicatePeer { address: IpAddr },
    #[error("BGP peer {address}: password of {len} octets is longer than {MD5_MAX_KEY_LEN}")]
    PasswordTooLong { address: IpAddr, len: usize },
    #[error("BGP peer {address}: password must not be empty (leave it unset instead)")]
    PasswordEmpty { address: IpAddr },
    #[error("BGP peer {address}: gracefulRestartSeconds {seconds} exceeds 4095")]
    RestartTime { address: IpAddr, seconds: u16 },
}

impl SpeakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.local_asn == 0 {
            return Err(ConfigError::LocalAsnZero);
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterIdZero);
        }
        Ok(())
    }
}

/// Checks a peer list: unique addresses, usable values.
pub fn validate_peers(peers: &[PeerConfig]) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for p in peers {
        let address = p.address;
        if !seen.insert(address) {
            return Err(ConfigError::DuplicatePeer { address });
        }
        if p.asn == 0 {
            return Err(ConfigError::PeerAsnZero { address });
        }
        if address.is_unspecified() || address.is_multicast() {
            return Err(ConfigError::PeerAddress { address });
        }
        if let Some(pw) = &p.password {
            if pw.is_empty() {
                return Err(ConfigError::PasswordEmpty { address });
            }
            if pw.len() > MD5_MAX_KEY_LEN {
                return Err(ConfigError::PasswordTooLong {
                    address,
                    len: pw.len(),
                });
            }
        }
        if let Some(seconds) = p.graceful_restart_seconds
            && seconds > 0x0fff
        {
            return Err(ConfigError::RestartTime { address, seconds });
        }
    }
    Ok(())
}

/// A snapshot of one peer for metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub address: IpAddr,
    pub asn: u32,
    pub state: State,
    /// When the session entered `state`.
    pub state_since: SystemTime,
    pub established_since: Option<SystemTime>,
    pub flaps: u64,
    pub prefixes_announced: usize,
    /// The IPv4 and IPv6 parts of `prefixes_announced`.
    pub prefixes_announced_v4: usize,
    pub prefixes_announced_v6: usize,
    pub updates_received: u64,
    pub last_error: Option<String>,
    pub does_not_route_traffic: bool,
    pub allow_not_established: bool,
    /// Connection collisions resolved for this peer (RFC 4271 6.8).
    pub collisions: u64,
    /// Who initiated the Established session's connection.
    pub connection: Option<Direction>,
}

struct PeerEntry {
    config: PeerConfig,
    status: StatusCell,
    stop: Option<oneshot::Sender<u8>>,
    task: JoinHandle<()>,
    inbound: mpsc::Sender<TcpStream>,
}

impl PeerEntry {
    /// Asks the task to send Cease and end; returns its handle to await.
    fn stop(mut self, cease_subcode: u8) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(cease_subcode);
        }
        self.task
    }
}

/// The BGP speaker of one node.
pub struct BgpSpeaker {
    config: SpeakerConfig,
    runtime: tokio::runtime::Handle,
    desired: watch::Sender<Arc<BTreeSet<Announcement>>>,
    changed: watch::Sender<u64>,
    peers: Mutex<BTreeMap<IpAddr, PeerEntry>>,
    /// Tasks of removed or restarted peers still sending their Cease.
    retiring: Mutex<Vec<JoinHandle<()>>>,
    /// The listener's view of the peers (address -> task inbox and password).
    inbound_peers: watch::Sender<InboundPeers>,
    listeners: Vec<JoinHandle<()>>,
    listener_stats: Arc<ListenerStats>,
}

impl BgpSpeaker {
    /// A speaker with no peers and no routes. Must be called inside a tokio runtime; sessions
    /// run on that runtime, and their sockets belong to its threads' network namespace.
    pub fn new(config: SpeakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (desired, _) = watch::channel(Arc::new(BTreeSet::new()));
        let (changed, _) = watch::channel(0);
        let (inbound_peers, _) = watch::channel(InboundPeers::default());
        let listener_stats = Arc::new(ListenerStats::default());
        let listeners = listen_addresses(&config)
            .into_iter()
            .map(|addr| {
                runtime.spawn(run_listener(
                    addr,
                    inbound_peers.subscribe(),
                    listener_stats.clone(),
                    changed.clone(),
                ))
            })
            .collect();
        Ok(BgpSpeaker {
            config,
            runtime,
            desired,
            changed,
            peers: Mutex::new(BTreeMap::new()),
            retiring: Mutex::new(Vec::new()),
            inbound_peers,
            listeners,
            listener_stats,
        })
    }

    /// Addresses the listener is bound to now (empty before the first bind or without
    /// `listen_port`).
    pub fn listening(&self) -> Vec<SocketAddr> {
        match self.listener_stats.bound.lock() {
            Ok(g) => g.iter().copied().collect(),
            Err(p) => p.into_inner().iter().copied().collect(),
        }
    }

    /// Inbound connections refused because their source is not a configured peer (or its TCP
    /// MD5 key was not in place).
    pub fn refused_connections(&self) -> u64 {
        self.listener_stats.refused.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &SpeakerConfig {
        &self.config
    }

    /// Applies a new peer list live (see the module docs). On a validation error nothing
    /// changes.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), ConfigError> {
        validate_peers(&peers)?;
        let wanted: BTreeMap<IpAddr, PeerConfig> =
            peers.into_iter().map(|p| (p.address, p)).collect();
        let mut current = lock(&self.peers);
        let mut retiring = Vec::new();
        let gone: Vec<IpAddr> = current
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for address in gone {
            if let Some(entry) = current.remove(&address) {
                tracing::info!(peer = %address, "BGP peer removed");
                retiring.push(entry.stop(notif::CEASE_PEER_DECONFIGURED));
            }
        }
        for (address, config) in wanted {
            match current.get_mut(&address) {
                Some(entry) if entry.config.session_key() == config.session_key() => {
                    entry.config = config;
                }
                Some(_) => {
                    if let Some(old) = current.remove(&address) {
                        tracing::info!(peer = %address, "BGP peer session parameters changed, restarting it");
                        let flaps = old.status.get().flaps;
                        retiring.push(old.stop(notif::CEASE_OTHER_CONFIGURATION_CHANGE));
                        let entry = self.spawn_peer(config, flaps);
                        current.insert(address, entry);
                    }
                }
                None => {
                    tracing::info!(peer = %address, asn = config.asn, "BGP peer added");
                    let entry = self.spawn_peer(config, 0);
                    current.insert(address, entry);
                }
            }
        }
        let inbound: BTreeMap<IpAddr, InboundPeer> = current
            .iter()
            .map(|(address, e)| {
                (
                    *address,
                    InboundPeer {
                        tx: e.inbound.clone(),
                        password: e.config.password.clone(),
                    },
                )
            })
            .collect();
        drop(current);
        self.inbound_peers.send_replace(Arc::new(inbound));
        let mut r = lock(&self.retiring);
        r.retain(|t| !t.is_finished());
        r.extend(retiring);
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        Ok(())
    }

    fn spawn_peer(&self, config: PeerConfig, flaps: u64) -> PeerEntry {
        let c = &self.config;
        let mut session = SessionConfig::new(c.local_asn, c.router_id, config.asn);
        session.hold_time = c.hold_time;
        session.connect_timeout = c.connect_timeout;
        session.retry_initial = c.retry_initial;
        session.retry_max = c.retry_max;
        session.graceful_restart_time = config.graceful_restart_seconds;
        session.passive = config.passive;
        let local_address = match config.address {
            IpAddr::V4(_) => c.local_v4.map(IpAddr::V4),
            IpAddr::V6(_) => c.local_v6.map(IpAddr::V6),
        };
        let task_config = PeerTaskConfig {
            session,
            peer: SocketAddr::new(config.address, c.peer_port),
            local_address,
            password: config.password.clone(),
            next_hops: NextHops {
                v4: c.local_v4,
                v6: c.local_v6,
            },
        };
        let status = StatusCell::new(
            PeerStatus {
                flaps,
                ..PeerStatus::default()
            },
            self.changed.clone(),
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let (inbound_tx, inbound_rx) = mpsc::channel(4);
        let task = self.runtime.spawn(run_peer(
            task_config,
            self.desired.subscribe(),
            status.clone(),
            stop_rx,
            inbound_rx,
        ));
        PeerEntry {
            config,
            status,
            stop: Some(stop_tx),
            task,
            inbound: inbound_tx,
        }
    }

    /// Replaces the set of routes to announce; every established session sends the change.
    pub fn set_routes(&self, desired: BTreeSet<Announcement>) {
        self.desired.send_if_modified(|current| {
            if **current == desired {
                false
            } else {
                *current = Arc::new(desired);
                true
            }
        });
    }

    /// The desired route set last given to [`BgpSpeaker::set_routes`].
    pub fn routes(&self) -> Arc<BTreeSet<Announcement>> {
        Arc::clone(&self.desired.borrow())
    }

    /// Per-peer state, ordered by address.
    pub fn peer_states(&self) -> Vec<PeerState> {
        lock(&self.peers)
            .values()
            .map(|e| {
                let s = e.status.get();
                let v6 = s.announced.keys().filter(|p| !p.is_ipv4()).count();
                PeerState {
                    address: e.config.address,
                    asn: e.config.asn,
                    state: s.state,
                    state_since: s.state_since,
                    established_since: s.established_since,
                    flaps: s.flaps,
                    prefixes_announced: s.announced.len(),
                    prefixes_announced_v4: s.announced.len() - v6,
                    prefixes_announced_v6: v6,
                    updates_received: s.updates_received,
                    last_error: s.last_error,
                    does_not_route_traffic: e.config.does_not_route_traffic,
                    allow_not_established: e.config.allow_not_established,
                    collisions: s.collisions,
                    connection: s.connection,
                }
            })
            .collect()
    }

    /// True when `prefix` is desired and every required peer (those without
    /// `allow_not_established`) is Established and has it in its Adj-RIB-Out. A session that did
    /// not negotiate the prefix's family cannot carry it and does not hold readiness back; with
    /// no required peers at all, a desired prefix counts as announced.
    pub fn is_announced_to_required_peers(&self, prefix: &Prefix) -> bool {
        if !self.desired.borrow().iter().any(|a| &a.prefix == prefix) {
            return false;
        }
        lock(&self.peers)
            .values()
            .filter(|e| !e.config.allow_not_established)
            .all(|e| carried_or_not_applicable(&e.status.get(), prefix))
    }

    /// True when every required peer is Established.
    pub fn required_peers_established(&self) -> bool {
        lock(&self.peers)
            .values()
            .filter(|e| !e.config.allow_not_established)
            .all(|e| e.status.get().state == State::Established)
    }

    /// A receiver whose value changes whenever any peer's status or the peer set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until `condition(self)` holds, re-checking on every status change, or until
    /// `timeout` passes. Returns whether the condition held.
    pub async fn wait_for(&self, timeout: Duration, condition: impl Fn(&Self) -> bool) -> bool {
        let mut changes = self.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if condition(self) {
                    return;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Sends Cease (administrative shutdown) on every session and waits (at most `timeout`)
    /// for the sessions to close.
    pub async fn shutdown(self, timeout: Duration) {
        for l in &self.listeners {
            l.abort();
        }
        let entries: Vec<PeerEntry> = std::mem::take(&mut *lock(&self.peers))
            .into_values()
            .collect();
        let mut tasks: Vec<JoinHandle<()>> = entries
            .into_iter()
            .map(|e| e.stop(notif::CEASE_ADMINISTRATIVE_SHUTDOWN))
            .collect();
        tasks.append(&mut lock(&self.retiring));
        let all = async {
            for t in tasks.iter_mut() {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("BGP shutdown timed out; aborting remaining sessions");
            for t in &tasks {
                t.abort();
            }
        }
    }
}

impl Drop for BgpSpeaker {
    /// Closes every connection without NOTIFICATION (see the module docs).
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        for entry in lock(&self.peers).values() {
            entry.task.abort();
        }
        for task in lock(&self.retiring).iter() {
            task.abort();
        }
    }
}

/// Where the listener binds: the local address of each family, or both unspecified addresses
/// when the speaker has no local address.
fn listen_addresses(config: &SpeakerConfig) -> Vec<SocketAddr> {
    let Some(port) = config.listen_port else {
        return Vec::new();
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    if let Some(v4) = config.local_v4 {
        out.push(SocketAddr::new(IpAddr::V4(v4), port));
    }
    if let Some(v6) = config.local_v6 {
        out.push(SocketAddr::new(IpAddr::V6(v6), port));
    }
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        out.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(a: &str) -> PeerConfig {
        PeerConfig::new(a.parse().unwrap(), 65000)
    }

    #[test]
    fn peer_validation_names_the_peer_and_field() {
        assert_eq!(
            validate_peers(&[peer("198.18.1.1"), peer("198.18.1.2")]),
            Ok(())
        );
        let a: IpAddr = "198.18.1.1".parse().unwrap();
        assert_eq!(
            validate_peers(&[peer("198.18.1.1"), peer("198.18.1.1")]),
            Err(ConfigError::DuplicatePeer { address: a })
        );
        let mut p = peer("198.18.1.1");
        p.asn = 0;
        assert_eq!(
            validate_peers(&[p]),
            Err(ConfigError::PeerAsnZero { address: a })
        );
        let mut p = peer("198.18.1.1");
        p.password = Some("x".repeat(81));
        assert_eq!(
            validate_peers(&[p]),
            Err(ConfigError::PasswordTooLong {
                address: a,
                len: 81
            })
        );
        let mut p = peer("198.18.1.1");
        p.password = Some(String::new());
        assert_eq!(
            validate_peers(&[p]),
            Err(ConfigError::PasswordEmpty { address: a })
        );
        let mut p = peer("198.18.1.1");
        p.graceful_restart_seconds = Some(4096);
        assert_eq!(
            validate_peers(&[p]),
            Err(ConfigError::RestartTime {
                address: a,
                seconds: 4096
            })
        );
        assert!(validate_peers(&[peer("0.0.0.0")]).is_err());
        assert!(validate_peers(&[peer("ff02::1")]).is_err());
        let err = validate_peers(&[peer("198.18.1.1"), peer("198.18.1.1")]).unwrap_err();
        assert!(err.to_string().contains("198.18.1.1"), "{err}");
    }

    #[test]
    fn speaker_config_validation() {
        let ok = SpeakerConfig::new(65001, Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            SpeakerConfig {
                local_asn: 0,
                ..ok.clone()
            }
            .validate(),
            Err(ConfigError::LocalAsnZero)
        );
        assert_eq!(
            SpeakerConfig {
                hold_time: 2,
                ..ok.clone()
            }
            .validate(),
            Err(ConfigError::HoldTime(2))
        );
        assert_eq!(
            SpeakerConfig {
                router_id: Ipv4Addr::UNSPECIFIED,
                ..ok
            }
            .validate(),
            Err(ConfigError::RouterIdZero)
        );
    }

    #[tokio::test]
    async fn invalid_peer_lists_change_nothing() {
        let speaker =
            BgpSpeaker::new(SpeakerConfig::new(65001, Ipv4Addr::new(198, 18, 1, 2))).unwrap();
        // Loopback addresses where nothing listens on port 179: connects are refused.
        speaker.set_peers(vec![peer("127.0.0.11")]).unwrap();
        let before: Vec<IpAddr> = speaker.peer_states().iter().map(|p| p.address).collect();
        let mut bad = peer("127.0.0.13");
        bad.password = Some("x".repeat(100));
        let err = speaker
            .set_peers(vec![peer("127.0.0.12"), bad])
            .unwrap_err();
        assert!(err.to_string().contains("127.0.0.13"), "{err}");
        let after: Vec<IpAddr> = speaker.peer_states().iter().map(|p| p.address).collect();
        assert_eq!(before, after);
        assert_eq!(after, vec!["127.0.0.11".parse::<IpAddr>().unwrap()]);
        // Nothing desired: not ready; with no required peers a desired prefix is ready.
        let prefix: Prefix = "198.19.0.5/32".parse().unwrap();
        assert!(!speaker.is_announced_to_required_peers(&prefix));
        let mut optional = peer("127.0.0.11");
        optional.allow_not_established = true;
        speaker.set_peers(vec![optional]).unwrap();
        speaker.set_routes([Announcement::new(prefix, crate::rib::Communities::NoExport)].into());
        assert!(speaker.is_announced_to_required_peers(&prefix));
        assert!(speaker.required_peers_established());
        speaker.set_peers(vec![]).unwrap();
        assert!(speaker.peer_states().is_empty());
    }

    #[tokio::test]
    async fn each_refused_connection_wakes_waiters() {
        // A free loopback port (the listener binds it again right after).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = SpeakerConfig::new(65001, Ipv4Addr::new(198, 18, 1, 2));
        config.listen_port = Some(port);
        config.local_v4 = Some(Ipv4Addr::LOCALHOST);
        let speaker = BgpSpeaker::new(config).unwrap();
        let wait = std::time::Duration::from_secs(30);
        assert!(speaker.wait_for(wait, |s| s.listening().len() == 1).await);
        // No peer is configured: every connection is refused, and each refusal alone (no other
        // status change happens) must wake a waiter on the count.
        for n in 1..=3u64 {
            let _conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            assert!(
                speaker
                    .wait_for(wait, |s| s.refused_connections() >= n)
                    .await,
                "refusal {n} did not wake the waiter (count {})",
                speaker.refused_connections()
            );
        }
    }

    #[test]
    fn speaker_needs_a_runtime() {
        let r = BgpSpeaker::new(SpeakerConfig::new(65001, Ipv4Addr::new(198, 18, 1, 2)));
        assert!(matches!(r, Err(ConfigError::NoRuntime)));
    }
}

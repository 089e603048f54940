//! The imperative shell around [`hybridnet_bgp::BgpSpeaker`]: [`BgpController::reconcile`] runs
//! on every agent reconcile and applies [`desired_bgp`]; [`BgpState`] is shared with the CNI
//! server (ADD readiness), `/readyz` and the metrics collector.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hybridnet_bgp::{BgpSpeaker, PeerConfig, PeerState, Prefix, SpeakerConfig, State};
use hybridnet_cni::CniError;
use tokio::sync::watch;

use super::desired::{DesiredBgp, SpeakerIdentity, desired_bgp, family_gateway};
use super::routing;
use crate::cniserver::PodAddressing;
use crate::plan::{ApiState, HostState, PlanProblem};

/// How long CNI ADD of a BGP pod waits for its announcement by default.
pub const DEFAULT_POD_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting ADD looks again when nothing signalled a change.
const POD_POLL: Duration = Duration::from_millis(50);

/// How often a waiting ADD reads the kernel's rules and routes again.
const ROUTE_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Default)]
struct Snapshot {
    speaker: Option<Arc<BgpSpeaker>>,
    /// Networks whose local pods this node announces.
    announced_networks: BTreeSet<String>,
    /// Every BGP-mode or GlobalBGP network of the cluster: their pods need an announcement.
    cluster_bgp_networks: BTreeSet<String>,
    /// The traffic-routing peer per family (IPv4, IPv6): the gateway of BGP subnet tables.
    gateways: [Option<IpAddr>; 2],
}

/// BGP state shared by the reconcile loop, the CNI server, `/readyz` and `/metrics`.
pub struct BgpState {
    current: RwLock<Snapshot>,
    pod_wait: Duration,
    /// Whether pod readiness also checks the kernel's rule and table (see [`routing`]).
    check_routes: bool,
    /// Netlink in the node's network namespace, made by the reconcile loop (which runs there).
    netlink: RwLock<Option<rtnetlink::Handle>>,
    /// Ticks whenever the speaker is started, replaced or stopped.
    speaker_changes: watch::Sender<u64>,
    /// The sessions annotation to publish (rate limited by [`super::publish::follow_sessions`]).
    sessions_annotation: RwLock<Option<String>>,
}

impl Default for BgpState {
    fn default() -> Self {
        Self::new(DEFAULT_POD_WAIT)
    }
}

impl std::fmt::Debug for BgpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpState")
            .field("pod_wait", &self.pod_wait)
            .finish_non_exhaustive()
    }
}

fn read(s: &RwLock<Snapshot>) -> Snapshot {
    match s.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn describe(peers: &[PeerState]) -> String {
    peers
        .iter()
        .map(|p| {
            let mut s = format!("{} (AS {}) {}", p.address, p.asn, p.state);
            if let Some(e) = &p.last_error {
                s.push_str(&format!(" [{e}]"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl BgpState {
    /// `pod_wait`: how long CNI ADD waits for a BGP pod's announcement and routing.
    pub fn new(pod_wait: Duration) -> Self {
        BgpState {
            current: RwLock::new(Snapshot::default()),
            pod_wait,
            check_routes: true,
            netlink: RwLock::new(None),
            speaker_changes: watch::channel(0).0,
            sessions_annotation: RwLock::new(None),
        }
    }

    /// Pod readiness from the announcements alone, for a state whose node has no data plane
    /// applied by this agent (unit tests of the BGP wiring in the host namespace).
    pub fn without_route_check(pod_wait: Duration) -> Self {
        BgpState {
            check_routes: false,
            ..Self::new(pod_wait)
        }
    }

    fn netlink(&self) -> Option<rtnetlink::Handle> {
        match self.netlink.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_netlink(&self, handle: rtnetlink::Handle) {
        match self.netlink.write() {
            Ok(mut g) => *g = Some(handle),
            Err(p) => *p.into_inner() = Some(handle),
        }
    }

    fn set(&self, snap: Snapshot) {
        let replaced = {
            let mut g = match self.current.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let replaced = match (&g.speaker, &snap.speaker) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (a, b) => a.is_some() != b.is_some(),
            };
            *g = snap;
            replaced
        };
        if replaced {
            self.speaker_changes.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    /// A receiver whose value changes whenever the speaker is started, replaced or stopped.
    pub fn speaker_changes(&self) -> watch::Receiver<u64> {
        self.speaker_changes.subscribe()
    }

    /// The value of the NodeInfo's BGP sessions annotation (`None`: no BGP speaker runs, the
    /// annotation is removed). Changes at most once per publish interval.
    pub fn sessions_annotation(&self) -> Option<String> {
        match self.sessions_annotation.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(super) fn set_sessions_annotation(&self, value: Option<String>) {
        match self.sessions_annotation.write() {
            Ok(mut g) => *g = value,
            Err(p) => *p.into_inner() = value,
        }
    }

    /// The running speaker, if the node belongs to a BGP network.
    pub fn speaker(&self) -> Option<Arc<BgpSpeaker>> {
        read(&self.current).speaker
    }

    /// `/readyz`: every required peer (no `allowNotEstablished`) is Established.
    pub fn readiness(&self) -> Result<(), String> {
        let Some(speaker) = self.speaker() else {
            return Ok(());
        };
        if speaker.required_peers_established() {
            return Ok(());
        }
        let down: Vec<PeerState> = speaker
            .peer_states()
            .into_iter()
            .filter(|p| !p.allow_not_established && p.state != State::Established)
            .collect();
        Err(format!(
            "required BGP sessions not established: {}",
            describe(&down)
        ))
    }

    /// Whether the pod addresses are announced to every required peer; `None` when the
    /// network's pods need no announcement.
    fn pod_announced(snap: &Snapshot, network: &str, ips: &[IpAddr]) -> Option<bool> {
        if !snap.cluster_bgp_networks.contains(network) {
            return None;
        }
        Some(
            snap.announced_networks.contains(network)
                && snap.speaker.as_ref().is_some_and(|s| {
                    ips.iter()
                        .all(|ip| s.is_announced_to_required_peers(&Prefix::host(*ip)))
                }),
        )
    }

    /// Why the pod's traffic cannot leave through its subnet's table yet (see [`routing`]).
    async fn route_problem(&self, snap: &Snapshot, ips: &[IpAddr]) -> Option<String> {
        let Some(handle) = self.netlink() else {
            return Some(
                "the agent has no netlink connection in the node's namespace yet".to_string(),
            );
        };
        for ip in ips {
            let family = hybridnet_api::v1::IpVersion::of(ip);
            let gateway = snap.gateways[usize::from(ip.is_ipv6())];
            match routing::read_kernel(&handle, family).await {
                Err(e) => return Some(format!("cannot read the kernel's rules and routes: {e}")),
                Ok((rules, defaults)) => {
                    if let Some(p) = routing::routing_problem(*ip, &rules, &defaults, gateway) {
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// CNI ADD readiness (docs/operations.md, BGP): a pod of a BGP-mode or GlobalBGP network is ready
    /// when its /32 and /128 are announced to every required peer and the kernel routes its
    /// traffic out (its subnet's rule, and the table's default route via the peer). Waits at
    /// most the configured time, then fails with CNI code 11 (try again later) saying what
    /// holds it back.
    pub async fn wait_pod_reachable(&self, addressing: &PodAddressing) -> Result<(), CniError> {
        let ips: Vec<IpAddr> = addressing
            .ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(addressing.ipv6.map(IpAddr::V6))
            .collect();
        self.wait(&addressing.network, &ips, self.check_routes)
            .await
    }

    /// The announcement half of [`BgpState::wait_pod_reachable`], for a network and addresses.
    pub async fn wait_announced(&self, network: &str, ips: &[IpAddr]) -> Result<(), CniError> {
        self.wait(network, ips, false).await
    }

    async fn wait(
        &self,
        network: &str,
        ips: &[IpAddr],
        check_routes: bool,
    ) -> Result<(), CniError> {
        let started = Instant::now();
        let deadline = started + self.pod_wait;
        loop {
            let snap = read(&self.current);
            let mut changes = snap.speaker.as_ref().map(|s| s.subscribe());
            let mut route_problem = None;
            match Self::pod_announced(&snap, network, ips) {
                None => return Ok(()),
                Some(true) if !check_routes => return Ok(()),
                Some(true) => {
                    route_problem = self.route_problem(&snap, ips).await;
                    if route_problem.is_none() {
                        return Ok(());
                    }
                }
                Some(false) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                if let Some(p) = route_problem {
                    return Err(CniError::try_again_later(format!(
                        "pod address {} of network {network:?} is announced, but its traffic has no way out after {:.1} s: {p}; the runtime will retry",
                        list.join(", "),
                        started.elapsed().as_secs_f64()
                    )));
                }
                let why = match &snap.speaker {
                    None => format!(
                        "this node runs no BGP speaker for network {network:?} (is the node in its status.nodeList, and does the BGP interface have an address?)"
                    ),
                    Some(s) if !snap.announced_networks.contains(network) => format!(
                        "network {network:?} is not announced by this node's speaker (AS {})",
                        s.config().local_asn
                    ),
                    Some(s) => format!("peers: {}", describe(&s.peer_states())),
                };
                return Err(CniError::try_again_later(format!(
                    "pod address {} of network {network:?} is not announced to every required BGP peer after {:.1} s; {why}; the runtime will retry",
                    list.join(", "),
                    started.elapsed().as_secs_f64()
                )));
            }
            if route_problem.is_some() {
                // Announced; only the kernel is missing something. Its tables change without
                // telling us, and each look dumps the family's rules and routes (0.3 ms on a
                // small node, 19 ms at 25 000 routes; docs/benchmarks.md), so look less often.
                tokio::time::sleep(ROUTE_POLL.min(deadline - now)).await;
                continue;
            }
            let nap = POD_POLL.min(deadline - now);
            match changes.as_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(nap, rx.changed()).await;
                }
                None => tokio::time::sleep(nap).await,
            }
        }
    }
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpReport {
    pub running: bool,
    pub peers: usize,
    pub routes: usize,
    pub problems: Vec<PlanProblem>,
}

/// Applies the desired BGP configuration on every reconcile. Must run inside the agent's tokio
/// runtime, in the node's network namespace (the sessions' sockets are created there).
pub struct BgpController {
    state: Arc<BgpState>,
    identity: Option<SpeakerIdentity>,
    peers: Option<Vec<PeerConfig>>,
    last_problems: Vec<PlanProblem>,
    tune: fn(&mut SpeakerConfig),
}

impl BgpController {
    pub fn new(state: Arc<BgpState>) -> Self {
        BgpController {
            state,
            identity: None,
            peers: None,
            last_problems: Vec::new(),
            tune: |_| {},
        }
    }

    /// Adjusts speaker settings not taken from the API (timers, peer port); for tests and the lab.
    pub fn with_tuning(mut self, tune: fn(&mut SpeakerConfig)) -> Self {
        self.tune = tune;
        self
    }

    pub fn state(&self) -> &Arc<BgpState> {
        &self.state
    }

    /// One reconcile: computes the desired state and applies it live. The speaker is created
    /// when the node first belongs to a BGP network and replaced only when its identity (AS,
    /// router id, interface addresses) changes; peers and routes change in place, so unrelated
    /// changes never restart a session.
    pub fn reconcile(&mut self, api: &ApiState, host: &HostState, prefer: &[String]) -> BgpReport {
        let desired = desired_bgp(api, host, prefer);
        let cluster_bgp_networks: BTreeSet<String> = api
            .networks
            .iter()
            .filter(|n| {
                matches!(
                    n.spec.effective_mode(),
                    hybridnet_api::v1::NetworkMode::Bgp | hybridnet_api::v1::NetworkMode::GlobalBgp
                )
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let report = self.apply(desired, cluster_bgp_networks);
        if report.problems != self.last_problems {
            for p in &report.problems {
                tracing::warn!(object = %p.object, problem = %p.message, "BGP configuration not applied");
            }
            self.last_problems = report.problems.clone();
        }
        report
    }

    fn apply(&mut self, desired: DesiredBgp, cluster_bgp_networks: BTreeSet<String>) -> BgpReport {
        let mut problems = desired.problems;
        let mut snap = read(&self.state.current);
        snap.cluster_bgp_networks = cluster_bgp_networks;
        let Some(want) = desired.speaker else {
            if let Some(old) = snap.speaker.take() {
                tracing::info!("node left every BGP network: stopping the BGP speaker");
                retire(old);
            }
            self.identity = None;
            self.peers = None;
            snap.announced_networks.clear();
            self.state.set(snap);
            return BgpReport {
                problems,
                ..BgpReport::default()
            };
        };
        if self.identity.as_ref() != Some(&want.identity) || snap.speaker.is_none() {
            if let Some(old) = snap.speaker.take() {
                tracing::info!(identity = ?want.identity, "BGP speaker identity changed: restarting it");
                retire(old);
            }
            self.identity = None;
            self.peers = None;
            let id = &want.identity;
            let mut config = SpeakerConfig::new(id.local_asn, id.router_id);
            config.local_v4 = id.local_v4;
            config.local_v6 = id.local_v6;
            // Peers may connect to us too (a ToR configured to connect actively); collisions
            // with our own connection are resolved by the speaker.
            config.listen_port = Some(hybridnet_bgp::speaker::BGP_PORT);
            (self.tune)(&mut config);
            match BgpSpeaker::new(config) {
                Ok(s) => {
                    tracing::info!(asn = id.local_asn, router_id = %id.router_id, interface = %id.interface,
                        v4 = ?id.local_v4, v6 = ?id.local_v6, "BGP speaker started");
                    snap.speaker = Some(Arc::new(s));
                    self.identity = Some(want.identity.clone());
                }
                Err(e) => problems.push(PlanProblem {
                    object: "host".into(),
                    message: format!("BGP speaker: {e}"),
                }),
            }
        }
        let Some(speaker) = snap.speaker.clone() else {
            snap.announced_networks.clear();
            snap.gateways = [None, None];
            self.state.set(snap);
            return BgpReport {
                problems,
                ..BgpReport::default()
            };
        };
        if self.peers.as_ref() != Some(&want.peers) {
            match speaker.set_peers(want.peers.clone()) {
                Ok(()) => self.peers = Some(want.peers.clone()),
                Err(e) => problems.push(PlanProblem {
                    object: "Network".into(),
                    message: format!("BGP peers not applied: {e}"),
                }),
            }
        }
        speaker.set_routes(want.routes.clone());
        snap.announced_networks = desired.announced_networks;
        // Invalid gateway sets are reported by the planner; readiness then accepts any default.
        snap.gateways = [
            family_gateway(&want.peers, false).ok().flatten(),
            family_gateway(&want.peers, true).ok().flatten(),
        ];
        if self.state.check_routes && self.state.netlink().is_none() {
            // This runs in the node's namespace (as the sessions do), so the socket does too.
            match tokio::runtime::Handle::try_current()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rtnetlink::new_connection()
                        .map(|(conn, handle, _)| {
                            rt.spawn(conn);
                            handle
                        })
                        .map_err(|e| e.to_string())
                }) {
                Ok(handle) => self.state.set_netlink(handle),
                Err(e) => problems.push(PlanProblem {
                    object: "host".into(),
                    message: format!("BGP pod readiness cannot read routes (netlink): {e}"),
                }),
            }
        }
        self.state.set(snap);
        problems.sort();
        problems.dedup();
        BgpReport {
            running: true,
            peers: want.peers.len(),
            routes: want.routes.len(),
            problems,
        }
    }
}

/// Stops a replaced speaker: Cease to its peers when nobody else holds it, else the last holder's
/// drop closes its sessions.
fn retire(old: Arc<BgpSpeaker>) {
    match Arc::try_unwrap(old) {
        Ok(s) => {
            tokio::spawn(s.shutdown(Duration::from_secs(5)));
        }
        Err(shared) => drop(shared),
    }
}

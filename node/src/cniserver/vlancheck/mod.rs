//! CNI ADD checks of VLAN underlay pods (upstream `pkg/daemon/server/handle.go`), run on the node's VLAN forward
//! interface with raw frames once the pod's interface is wired:
//!
//! 1. the subnet gateway must answer a query sent *from the pod's address* (ARP request, or a
//!    neighbour solicitation for IPv6) within `--vlan-check-timeout` — otherwise the VLAN is not
//!    working (switch port, trunk, VLAN id) and the pod would have no way out;
//! 2. a duplicate probe (ARP probe with sender 0.0.0.0, or a DAD solicitation from `::`) must
//!    stay unanswered by any other station within the probe window (an answer from the
//!    gateway's own MAC is a router's proxy ARP, not a duplicate);
//! 3. the pod's new location is announced (gratuitous ARP request + reply, or an unsolicited
//!    override advertisement to ff02::1), so the gateway and switches forget an old location at
//!    once (a StatefulSet pod that moved to another node keeps its address).
//!
//! Query and probe go out together and the answers are awaited at once, so a healthy network
//! costs one probe window per ADD (a twentieth of the timeout, 100..300 ms: 150 ms by default),
//! both families in parallel. A station holding the address answers a probe within
//! milliseconds; a node that answers by proxy ARP may wait up to its `proxy_delay` (0.8 s by
//! default) and can be missed - the check catches real hosts, not every stale proxy entry.
//! A subnet without a gateway skips step 1 (there is nothing to ask; its pods only reach their
//! own subnet) and still runs steps 2 and 3. A timeout of 0 disables the checks.
//!
//! The decisions are pure ([`decide`]), the frames are pure ([`frames`]), the socket is a thin
//! `AF_PACKET` wrapper opened inside the node's network namespace.

pub mod decide;
pub mod frames;
mod socket;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use hybridnet_cni::{CniError, ErrorCode};
use netlink_packet_route::link::LinkAttribute;

pub use decide::{CheckInput, Timing, Verdict, VlanSubnet, VlanSubnets, VlanTarget};

use super::netns::Netns;
use super::podnet::link_by_name;
use decide::{
    Progress, announcements, classify_arp, classify_ndp, duplicate_probe, gateway_query, mac_text,
    verdict,
};
use frames::{ETH_P_ARP, ETH_P_IPV6, decode_arp, decode_ndp};
use socket::PacketSocket;

/// Settings of the checks (`--vlan-check-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanCheckConfig {
    /// Zero disables the checks.
    pub timeout: Duration,
}

impl Default for VlanCheckConfig {
    fn default() -> Self {
        VlanCheckConfig {
            timeout: Duration::from_secs(3),
        }
    }
}

/// Why a check failed. Every message names the pod's address and the interface.
#[derive(Debug, thiserror::Error)]
pub enum VlanCheckError {
    #[error(
        "vlan network seems not working: gateway {gateway} did not answer {proto} for pod ip {pod_ip} on {iface} within {:.1} s (check the switch port / VLAN)",
        timeout.as_secs_f64()
    )]
    GatewaySilent {
        gateway: IpAddr,
        pod_ip: IpAddr,
        iface: String,
        proto: &'static str,
        timeout: Duration,
    },
    #[error("pod ip {pod_ip} is already in use by MAC {mac} on {iface}")]
    Duplicate {
        pod_ip: IpAddr,
        mac: String,
        iface: String,
    },
    #[error("VLAN check of pod ip {pod_ip} on {iface}: {what}")]
    Setup {
        pod_ip: IpAddr,
        iface: String,
        what: String,
    },
}

impl VlanCheckError {
    /// The CNI error naming `pod` (the runtime retries the sandbox either way; a silent gateway
    /// is transient).
    pub fn to_cni(&self, pod: &impl std::fmt::Display) -> CniError {
        let code = match self {
            VlanCheckError::GatewaySilent { .. } => ErrorCode::TryAgainLater,
            VlanCheckError::Duplicate { .. } | VlanCheckError::Setup { .. } => {
                ErrorCode::InterfaceSetup
            }
        };
        CniError::new(code, format!("pod {pod}: {self}")).with_details(format!("pod {pod}"))
    }
}

/// What a passed check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub target: VlanTarget,
    pub gateway_mac: Option<[u8; 6]>,
    pub elapsed: Duration,
}

/// Runs the checks of all `targets` (in parallel) in the node namespace `host`.
pub async fn check_pod(
    host: &Netns,
    targets: Vec<VlanTarget>,
    pod_mac: [u8; 6],
    config: VlanCheckConfig,
) -> Result<Vec<CheckReport>, VlanCheckError> {
    if config.timeout.is_zero() || targets.is_empty() {
        return Ok(Vec::new());
    }
    let timing = Timing::from_timeout(config.timeout);
    let runs = targets.into_iter().map(|target| {
        let host = host.clone();
        async move {
            let t = target.clone();
            let outcome = host
                .run(move |h| async move {
                    let link = link_by_name(&h, &t.iface).await;
                    Ok(check_on_link(t, pod_mac, timing, link))
                })
                .await;
            match outcome {
                Ok(r) => r,
                Err(e) => Err(VlanCheckError::Setup {
                    pod_ip: target.pod_ip,
                    iface: target.iface,
                    what: e.to_string(),
                }),
            }
        }
    });
    join_all(runs).await.into_iter().collect()
}

fn check_on_link(
    target: VlanTarget,
    pod_mac: [u8; 6],
    timing: Timing,
    link: Result<Option<netlink_packet_route::link::LinkMessage>, super::PodNetError>,
) -> Result<CheckReport, VlanCheckError> {
    let setup = |what: String| VlanCheckError::Setup {
        pod_ip: target.pod_ip,
        iface: target.iface.clone(),
        what,
    };
    let link = link
        .map_err(|e| setup(e.to_string()))?
        .ok_or_else(|| setup("the interface does not exist".into()))?;
    let node_mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) if m.len() == 6 => {
                let mut x = [0u8; 6];
                x.copy_from_slice(m);
                Some(x)
            }
            _ => None,
        })
        .ok_or_else(|| setup("the interface has no Ethernet address".into()))?;
    let input = CheckInput {
        target: target.clone(),
        node_mac,
        pod_mac,
    };
    let v6 = target.pod_ip.is_ipv6();
    let sock = PacketSocket::open(link.header.index, if v6 { ETH_P_IPV6 } else { ETH_P_ARP })
        .map_err(|e| setup(format!("opening a packet socket: {e}")))?;
    if v6 {
        sock.only_ndp()
            .map_err(|e| setup(format!("attaching the NDP filter: {e}")))?;
    }
    let send = |f: &[u8]| {
        sock.send(f)
            .map_err(|e| setup(format!("sending a frame: {e}")))
    };
    let started = Instant::now();
    let query = gateway_query(&input);
    if let Some(q) = &query {
        send(q)?;
    }
    send(&duplicate_probe(&input))?;
    let mut next_query = started + timing.resend_every;
    let mut progress = Progress::default();
    let mut buf = [0u8; 2048];
    loop {
        let elapsed = started.elapsed();
        match verdict(&input, &progress, elapsed, &timing) {
            Verdict::Pending => {}
            Verdict::Passed { gateway_mac } => {
                for f in announcements(&input) {
                    send(&f)?;
                }
                let report = CheckReport {
                    target,
                    gateway_mac,
                    elapsed: started.elapsed(),
                };
                tracing::debug!(pod_ip = %report.target.pod_ip, iface = %report.target.iface,
                    gateway_mac = ?report.gateway_mac.map(mac_text),
                    elapsed_ms = report.elapsed.as_millis() as u64, "VLAN checks passed");
                return Ok(report);
            }
            Verdict::GatewaySilent => {
                return Err(VlanCheckError::GatewaySilent {
                    gateway: target.gateway.unwrap_or(target.pod_ip),
                    pod_ip: target.pod_ip,
                    iface: target.iface,
                    proto: if v6 { "neighbour solicitation" } else { "ARP" },
                    timeout: timing.timeout,
                });
            }
            Verdict::Duplicate(mac) => {
                return Err(VlanCheckError::Duplicate {
                    pod_ip: target.pod_ip,
                    mac: mac_text(mac),
                    iface: target.iface,
                });
            }
        }
        let now = Instant::now();
        if progress.gateway_mac.is_none()
            && now >= next_query
            && let Some(q) = &query
        {
            send(q)?;
            next_query = now + timing.resend_every;
        }
        // Wake up for the next decision point: a resend, the end of the window, the timeout.
        let mut wake = started + timing.timeout;
        if progress.gateway_mac.is_some() || query.is_none() {
            wake = wake.min(started + timing.probe_window);
        } else {
            wake = wake.min(next_query);
        }
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let n = match sock.recv(&mut buf, wait) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => return Err(setup(format!("receiving: {e}"))),
        };
        let frame = &buf[..n];
        let seen = if v6 {
            match decode_ndp(frame) {
                Ok(f) => classify_ndp(&input, &f),
                Err(_) => continue,
            }
        } else {
            match decode_arp(frame) {
                Ok((eth, p)) => classify_arp(&input, &eth, &p),
                Err(_) => continue,
            }
        };
        progress.observe(seen);
    }
}

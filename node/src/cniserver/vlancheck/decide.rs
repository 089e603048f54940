//! The decisions of the VLAN checks, as pure functions: which frames to send, what a received
//! frame means, and when the check has passed or failed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::NetworkMode;

use super::frames::{
    ALL_NODES, ArpOp, ArpPacket, BROADCAST_MAC, EthHeader, NdpFrame, NdpMessage, encode_ndp,
    multicast_mac, solicited_node,
};
use crate::plan::{DataPlanePlan, RouteKind};

/// One address of a pod to check on its VLAN forward interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanTarget {
    pub pod_ip: IpAddr,
    /// The VLAN forward interface (`<parent>.<id>`, or the parent for id 0).
    pub iface: String,
    /// The subnet gateway; `None` (a subnet without gateway) skips the gateway check.
    pub gateway: Option<IpAddr>,
}

/// A VLAN subnet of this node as the data plane programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanSubnet {
    pub iface: String,
    pub gateway: Option<IpAddr>,
}

/// The VLAN subnets of a plan, by CIDR (what ADD needs to check a pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VlanSubnets(pub BTreeMap<Cidr, VlanSubnet>);

impl VlanSubnets {
    /// Read from the plan: the subnet table's direct route names the forward interface, its
    /// default route the gateway (absent when the subnet has none).
    pub fn of_plan(plan: &DataPlanePlan) -> VlanSubnets {
        let mut out = BTreeMap::new();
        for (cidr, t) in &plan.subnet_tables {
            if t.mode != NetworkMode::Vlan {
                continue;
            }
            let routes: Vec<_> = plan
                .routes_in(t.table)
                .filter(|r| r.kind == RouteKind::Unicast)
                .collect();
            let Some(iface) = routes
                .iter()
                .find(|r| r.dst == *cidr)
                .and_then(|r| r.dev.clone())
            else {
                continue;
            };
            let gateway = routes
                .iter()
                .find(|r| r.dst.prefix == 0 && r.dev.as_deref() == Some(iface.as_str()))
                .and_then(|r| r.via);
            out.insert(*cidr, VlanSubnet { iface, gateway });
        }
        VlanSubnets(out)
    }

    /// The checks for a pod's addresses (only those inside a VLAN subnet of this node).
    pub fn targets(&self, ips: impl IntoIterator<Item = IpAddr>) -> Vec<VlanTarget> {
        ips.into_iter()
            .filter_map(|ip| {
                // Most specific subnet wins (CIDRs of one family never overlap in practice).
                self.0
                    .iter()
                    .filter(|(c, _)| c.contains(ip))
                    .max_by_key(|(c, _)| c.prefix)
                    .map(|(_, s)| VlanTarget {
                        pod_ip: ip,
                        iface: s.iface.clone(),
                        gateway: s.gateway,
                    })
            })
            .collect()
    }
}

/// Everything the checks of one address need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckInput {
    pub target: VlanTarget,
    /// MAC of the forward interface (our frames' source; replies from it are our own).
    pub node_mac: [u8; 6],
    /// The pod's own MAC (never a conflict).
    pub pod_mac: [u8; 6],
}

impl CheckInput {
    fn ours(&self, mac: [u8; 6]) -> bool {
        mac == self.node_mac || mac == self.pod_mac
    }
}

/// Timing of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The gateway must answer within this (`--vlan-check-timeout`).
    pub timeout: Duration,
    /// How long replies to the duplicate probe are awaited. A host that holds an address answers
    /// a probe within milliseconds, so waiting the whole timeout would only slow every ADD down.
    pub probe_window: Duration,
    /// The gateway query is repeated at this interval until answered (a lost frame is no failure).
    pub resend_every: Duration,
}

impl Timing {
    /// The probe window is a twentieth of the timeout, at least 100 ms and at most 300 ms (never
    /// longer than the timeout); the gateway query is resent every 250 ms.
    pub fn from_timeout(timeout: Duration) -> Timing {
        let probe_window = (timeout / 20)
            .clamp(Duration::from_millis(100), Duration::from_millis(300))
            .min(timeout);
        Timing {
            timeout,
            probe_window,
            resend_every: Duration::from_millis(250).min(timeout.max(Duration::from_millis(1))),
        }
    }
}

/// What a received frame tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The gateway is on the link at this MAC.
    Gateway([u8; 6]),
    /// Another station uses the pod's address.
    Claimed([u8; 6]),
    Nothing,
}

/// An ARP frame: anything the gateway sends proves it is there; anything sent *from* the pod's
/// address by another station is a conflict (RFC 5227 2.1.1). Probes of others (sender
/// 0.0.0.0) are not conflicts.
pub fn classify_arp(input: &CheckInput, eth: &EthHeader, p: &ArpPacket) -> Seen {
    if input.ours(eth.src) || input.ours(p.sender_mac) {
        return Seen::Nothing;
    }
    let sender = IpAddr::V4(p.sender_ip);
    if sender == input.target.pod_ip {
        return Seen::Claimed(p.sender_mac);
    }
    if Some(sender) == input.target.gateway && p.sender_mac != [0; 6] {
        return Seen::Gateway(p.sender_mac);
    }
    Seen::Nothing
}

/// An NS/NA frame: an advertisement for the gateway (or anything it solicits) proves it is
/// there; an advertisement for the pod's address, or a solicitation sent from it, by another
/// station is a conflict. DAD probes of others (source `::`) are not.
pub fn classify_ndp(input: &CheckInput, f: &NdpFrame) -> Seen {
    let lla = match f.msg {
        NdpMessage::Advertisement { target_lla, .. } => target_lla,
        NdpMessage::Solicitation { source_lla, .. } => source_lla,
    };
    let mac = lla.unwrap_or(f.eth.src);
    if input.ours(f.eth.src) || input.ours(mac) {
        return Seen::Nothing;
    }
    let pod = input.target.pod_ip;
    let gw = input.target.gateway;
    match f.msg {
        NdpMessage::Advertisement { target, .. } => {
            if IpAddr::V6(target) == pod {
                Seen::Claimed(mac)
            } else if Some(IpAddr::V6(target)) == gw {
                Seen::Gateway(mac)
            } else {
                Seen::Nothing
            }
        }
        NdpMessage::Solicitation { .. } => {
            if IpAddr::V6(f.src) == pod {
                Seen::Claimed(mac)
            } else if Some(IpAddr::V6(f.src)) == gw {
                Seen::Gateway(mac)
            } else {
                Seen::Nothing
            }
        }
    }
}

/// At most this many distinct claiming MACs are remembered (a flood cannot grow the state).
const MAX_CLAIMS: usize = 8;

/// What has been seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub gateway_mac: Option<[u8; 6]>,
    /// MACs that claimed the pod's address, first first.
    pub claims: Vec<[u8; 6]>,
}

impl Progress {
    pub fn observe(&mut self, seen: Seen) {
        match seen {
            Seen::Gateway(m) => {
                self.gateway_mac.get_or_insert(m);
            }
            Seen::Claimed(m) => {
                if !self.claims.contains(&m) && self.claims.len() < MAX_CLAIMS {
                    self.claims.push(m);
                }
            }
            Seen::Nothing => {}
        }
    }
}

/// The state of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pending,
    Passed { gateway_mac: Option<[u8; 6]> },
    GatewaySilent,
    Duplicate([u8; 6]),
}

/// Decides after `elapsed`. A claim of the pod's address fails the check - except one from the
/// gateway's own MAC: a router doing (local) proxy ARP answers for every address of its subnet,
/// which says nothing about a duplicate. So while a gateway is configured but has not answered
/// yet, a claim waits for it (the gateway answers within milliseconds; a silent one makes the
/// claim count at the timeout). Without claims the check passes once the gateway answered (or
/// there is none) and the probe window is over, and fails at the timeout without an answer.
pub fn verdict(input: &CheckInput, p: &Progress, elapsed: Duration, t: &Timing) -> Verdict {
    let gateway_ok = input.target.gateway.is_none() || p.gateway_mac.is_some();
    let timed_out = elapsed >= t.timeout;
    let claim = p.claims.iter().copied().find(|m| Some(*m) != p.gateway_mac);
    if let Some(m) = claim
        && (gateway_ok || timed_out)
    {
        return Verdict::Duplicate(m);
    }
    if claim.is_none() && gateway_ok && (elapsed >= t.probe_window || timed_out) {
        return Verdict::Passed {
            gateway_mac: p.gateway_mac,
        };
    }
    if !gateway_ok && timed_out {
        return Verdict::GatewaySilent;
    }
    Verdict::Pending
}

/// The gateway query: ARP request with the pod's address as sender (the gateway learns where
/// the pod is), or a neighbour solicitation from it to the gateway's solicited-node group.
pub fn gateway_query(input: &CheckInput) -> Option<Vec<u8>> {
    let m = input.node_mac;
    match (input.target.pod_ip, input.target.gateway?) {
        (IpAddr::V4(pod), IpAddr::V4(gw)) => {
            Some(ArpPacket::request(m, pod, gw).to_frame(BROADCAST_MAC, m))
        }
        (IpAddr::V6(pod), IpAddr::V6(gw)) => {
            let group = solicited_node(gw);
            Some(encode_ndp(
                multicast_mac(group),
                m,
                pod,
                group,
                &NdpMessage::Solicitation {
                    target: gw,
                    source_lla: Some(m),
                },
            ))
        }
        _ => None,
    }
}

/// The duplicate probe: ARP probe (sender 0.0.0.0), or a DAD solicitation (source `::`).
pub fn duplicate_probe(input: &CheckInput) -> Vec<u8> {
    let m = input.node_mac;
    match input.target.pod_ip {
        IpAddr::V4(pod) => ArpPacket::probe(m, pod).to_frame(BROADCAST_MAC, m),
        IpAddr::V6(pod) => {
            let group = solicited_node(pod);
            encode_ndp(
                multicast_mac(group),
                m,
                std::net::Ipv6Addr::UNSPECIFIED,
                group,
                &NdpMessage::Solicitation {
                    target: pod,
                    source_lla: None,
                },
            )
        }
    }
}

/// The announcement of the pod's new location: gratuitous ARP request and reply, or an
/// unsolicited override advertisement to all nodes.
pub fn announcements(input: &CheckInput) -> Vec<Vec<u8>> {
    let m = input.node_mac;
    match input.target.pod_ip {
        IpAddr::V4(pod) => vec![
            ArpPacket::gratuitous(ArpOp::Request, m, pod).to_frame(BROADCAST_MAC, m),
            ArpPacket::gratuitous(ArpOp::Reply, m, pod).to_frame(BROADCAST_MAC, m),
        ],
        IpAddr::V6(pod) => vec![encode_ndp(
            multicast_mac(ALL_NODES),
            m,
            pod,
            ALL_NODES,
            &NdpMessage::Advertisement {
                router: false,
                solicited: false,
                override_: true,
                target: pod,
                target_lla: Some(m),
            },
        )],
    }
}

/// `aa:bb:..` text of a MAC.
pub fn mac_text(m: [u8; 6]) -> String {
    crate::plan::MacAddr(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::frames::{decode_arp, decode_ndp};
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const NODE: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const POD: [u8; 6] = [2, 0, 0, 0, 0, 5];
    const GW: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
    const ROGUE: [u8; 6] = [2, 0, 0, 0, 0, 0x66];

    fn v4(gw: bool) -> CheckInput {
        CheckInput {
            target: VlanTarget {
                pod_ip: "198.18.0.5".parse().unwrap(),
                iface: "eth0".into(),
                gateway: gw.then(|| "198.18.0.1".parse().unwrap()),
            },
            node_mac: NODE,
            pod_mac: POD,
        }
    }

    fn v6() -> CheckInput {
        CheckInput {
            target: VlanTarget {
                pod_ip: "fd00::5".parse().unwrap(),
                iface: "eth0".into(),
                gateway: Some("fd00::1".parse().unwrap()),
            },
            node_mac: NODE,
            pod_mac: POD,
        }
    }

    fn arp(mac: [u8; 6], op: ArpOp, sender: &str, target: &str) -> (EthHeader, ArpPacket) {
        let p = ArpPacket {
            op,
            sender_mac: mac,
            sender_ip: sender.parse().unwrap(),
            target_mac: [0; 6],
            target_ip: target.parse().unwrap(),
        };
        decode_arp(&p.to_frame(BROADCAST_MAC, mac)).unwrap()
    }

    #[test]
    fn arp_frames_are_classified() {
        let i = v4(true);
        let c = |f: (EthHeader, ArpPacket)| classify_arp(&i, &f.0, &f.1);
        assert_eq!(
            c(arp(GW, ArpOp::Reply, "198.18.0.1", "198.18.0.5")),
            Seen::Gateway(GW)
        );
        assert_eq!(
            c(arp(ROGUE, ArpOp::Reply, "198.18.0.5", "0.0.0.0")),
            Seen::Claimed(ROGUE)
        );
        // A rogue announcing itself with a gratuitous request is a conflict too.
        assert_eq!(
            c(arp(ROGUE, ArpOp::Request, "198.18.0.5", "198.18.0.5")),
            Seen::Claimed(ROGUE)
        );
        // Our own frames (the socket sees them) and the pod's MAC are never conflicts.
        assert_eq!(
            c(arp(NODE, ArpOp::Request, "198.18.0.5", "198.18.0.1")),
            Seen::Nothing
        );
        assert_eq!(
            c(arp(POD, ArpOp::Reply, "198.18.0.5", "198.18.0.1")),
            Seen::Nothing
        );
        // Someone else's probe for the address is not a claim.
        assert_eq!(
            c(arp(ROGUE, ArpOp::Request, "0.0.0.0", "198.18.0.5")),
            Seen::Nothing
        );
        assert_eq!(
            c(arp(ROGUE, ArpOp::Reply, "198.18.0.9", "198.18.0.5")),
            Seen::Nothing
        );
    }

    #[test]
    fn ndp_frames_are_classified() {
        let i = v6();
        let na = |mac: [u8; 6], target: &str| {
            let t: Ipv6Addr = target.parse().unwrap();
            decode_ndp(&encode_ndp(
                BROADCAST_MAC,
                mac,
                t,
                ALL_NODES,
                &NdpMessage::Advertisement {
                    router: true,
                    solicited: true,
                    override_: true,
                    target: t,
                    target_lla: Some(mac),
                },
            ))
            .unwrap()
        };
        assert_eq!(classify_ndp(&i, &na(GW, "fd00::1")), Seen::Gateway(GW));
        assert_eq!(
            classify_ndp(&i, &na(ROGUE, "fd00::5")),
            Seen::Claimed(ROGUE)
        );
        assert_eq!(classify_ndp(&i, &na(NODE, "fd00::5")), Seen::Nothing);
        assert_eq!(classify_ndp(&i, &na(ROGUE, "fd00::9")), Seen::Nothing);
        // DAD of another station (source ::) is not a claim; an NS from the address is.
        let ns = |mac: [u8; 6], src: Ipv6Addr, lla: Option<[u8; 6]>| {
            decode_ndp(&encode_ndp(
                BROADCAST_MAC,
                mac,
                src,
                ALL_NODES,
                &NdpMessage::Solicitation {
                    target: "fd00::5".parse().unwrap(),
                    source_lla: lla,
                },
            ))
            .unwrap()
        };
        assert_eq!(
            classify_ndp(&i, &ns(ROGUE, Ipv6Addr::UNSPECIFIED, None)),
            Seen::Nothing
        );
        assert_eq!(
            classify_ndp(&i, &ns(ROGUE, "fd00::5".parse().unwrap(), Some(ROGUE))),
            Seen::Claimed(ROGUE)
        );
        // The gateway resolving the pod after our query: proof of the gateway, no conflict.
        assert_eq!(
            classify_ndp(&i, &ns(GW, "fd00::1".parse().unwrap(), Some(GW))),
            Seen::Gateway(GW)
        );
    }

    #[test]
    fn verdicts_follow_the_timing() {
        let t = Timing::from_timeout(Duration::from_secs(3));
        assert_eq!(t.probe_window, Duration::from_millis(150));
        let i = v4(true);
        let mut p = Progress::default();
        let ms = Duration::from_millis;
        assert_eq!(verdict(&i, &p, ms(0), &t), Verdict::Pending);
        assert_eq!(verdict(&i, &p, ms(2999), &t), Verdict::Pending);
        assert_eq!(verdict(&i, &p, ms(3000), &t), Verdict::GatewaySilent);
        p.observe(Seen::Gateway(GW));
        assert_eq!(verdict(&i, &p, ms(10), &t), Verdict::Pending);
        assert_eq!(verdict(&i, &p, ms(149), &t), Verdict::Pending);
        assert_eq!(
            verdict(&i, &p, ms(150), &t),
            Verdict::Passed {
                gateway_mac: Some(GW)
            }
        );
        p.observe(Seen::Claimed(GW));
        assert_eq!(
            verdict(&i, &p, ms(150), &t),
            Verdict::Passed {
                gateway_mac: Some(GW)
            },
            "the gateway answering the probe by proxy ARP is no duplicate"
        );
        p.observe(Seen::Claimed(ROGUE));
        assert_eq!(verdict(&i, &p, ms(1), &t), Verdict::Duplicate(ROGUE));
        // No gateway: only the probe window.
        let i = v4(false);
        let p = Progress::default();
        assert_eq!(verdict(&i, &p, ms(149), &t), Verdict::Pending);
        assert_eq!(
            verdict(&i, &p, ms(150), &t),
            Verdict::Passed { gateway_mac: None }
        );
        // Tiny timeouts: the window never exceeds the timeout.
        let t = Timing::from_timeout(ms(50));
        assert_eq!(t.probe_window, ms(50));
        let t = Timing::from_timeout(Duration::from_secs(60));
        assert_eq!(t.probe_window, ms(300));
    }

    #[test]
    fn claims_wait_for_the_gateway_to_tell_proxies_from_duplicates() {
        let t = Timing::from_timeout(Duration::from_secs(3));
        let ms = Duration::from_millis;
        let i = v4(true);
        // The proxying gateway's claim arrives before its answer to our query.
        let mut p = Progress::default();
        p.observe(Seen::Claimed(GW));
        assert_eq!(verdict(&i, &p, ms(5), &t), Verdict::Pending);
        p.observe(Seen::Gateway(GW));
        assert_eq!(verdict(&i, &p, ms(6), &t), Verdict::Pending);
        assert_eq!(
            verdict(&i, &p, ms(150), &t),
            Verdict::Passed {
                gateway_mac: Some(GW)
            }
        );
        // A real duplicate before the gateway's answer: decided once the gateway answered.
        let mut p = Progress::default();
        p.observe(Seen::Claimed(ROGUE));
        assert_eq!(verdict(&i, &p, ms(1), &t), Verdict::Pending);
        p.observe(Seen::Gateway(GW));
        assert_eq!(verdict(&i, &p, ms(2), &t), Verdict::Duplicate(ROGUE));
        // ... or at the timeout when the gateway stays silent: the taken address is reported.
        let mut p = Progress::default();
        p.observe(Seen::Claimed(ROGUE));
        assert_eq!(verdict(&i, &p, ms(2999), &t), Verdict::Pending);
        assert_eq!(verdict(&i, &p, ms(3000), &t), Verdict::Duplicate(ROGUE));
        // Without a gateway a claim fails at once; a flood of claimers is bounded.
        let i = v4(false);
        let mut p = Progress::default();
        for n in 0..100u8 {
            p.observe(Seen::Claimed([2, 0, 0, 0, 1, n]));
            p.observe(Seen::Claimed([2, 0, 0, 0, 1, n]));
        }
        assert_eq!(p.claims.len(), MAX_CLAIMS);
        assert_eq!(
            verdict(&i, &p, ms(0), &t),
            Verdict::Duplicate([2, 0, 0, 0, 1, 0])
        );
    }

    #[test]
    fn frames_to_send() {
        let i = v4(true);
        let q = decode_arp(&gateway_query(&i).unwrap()).unwrap().1;
        assert_eq!(q.sender_ip, Ipv4Addr::new(198, 18, 0, 5));
        assert_eq!(q.target_ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(q.sender_mac, NODE);
        let p = decode_arp(&duplicate_probe(&i)).unwrap().1;
        assert_eq!(p.sender_ip, Ipv4Addr::UNSPECIFIED);
        let a = announcements(&i);
        assert_eq!(a.len(), 2);
        assert_eq!(decode_arp(&a[1]).unwrap().1.op, ArpOp::Reply);
        assert!(gateway_query(&v4(false)).is_none());

        let i = v6();
        let q = decode_ndp(&gateway_query(&i).unwrap()).unwrap();
        assert_eq!(q.src, "fd00::5".parse::<Ipv6Addr>().unwrap());
        assert_eq!(q.dst, "ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(q.eth.dst, [0x33, 0x33, 0xff, 0, 0, 1]);
        let p = decode_ndp(&duplicate_probe(&i)).unwrap();
        assert_eq!(p.src, Ipv6Addr::UNSPECIFIED);
        assert!(matches!(
            p.msg,
            NdpMessage::Solicitation {
                source_lla: None,
                ..
            }
        ));
        let a = decode_ndp(&announcements(&i)[0]).unwrap();
        assert_eq!(a.dst, ALL_NODES);
        assert!(matches!(
            a.msg,
            NdpMessage::Advertisement {
                override_: true,
                solicited: false,
                target_lla: Some(NODE),
                ..
            }
        ));
        // A family mismatch between pod and gateway queries nothing.
        let mut odd = v6();
        odd.target.gateway = Some("198.18.0.1".parse().unwrap());
        assert!(gateway_query(&odd).is_none());
    }

    #[test]
    fn vlan_subnets_come_from_the_plan() {
        use crate::plan::{PlannedRoute, SubnetTable};
        let cidr = |s: &str| Cidr::parse_canonical(s).unwrap();
        let route = |table, dst: &str, dev: &str, via: Option<&str>| PlannedRoute {
            table,
            dst: cidr(dst),
            kind: RouteKind::Unicast,
            dev: Some(dev.into()),
            via: via.map(|v| v.parse().unwrap()),
            src: None,
            scope_link: via.is_none(),
        };
        let table = |t, mode| SubnetTable {
            table: t,
            network: "n".into(),
            mode,
            auto_nat_outgoing: false,
        };
        let mut plan = DataPlanePlan::default();
        plan.subnet_tables
            .insert(cidr("198.18.0.0/24"), table(10000, NetworkMode::Vlan));
        plan.subnet_tables
            .insert(cidr("198.18.1.0/24"), table(10001, NetworkMode::Vlan));
        plan.subnet_tables
            .insert(cidr("198.18.64.0/20"), table(10002, NetworkMode::Vxlan));
        plan.routes
            .insert(route(10000, "198.18.0.0/24", "eth0.10", None));
        plan.routes
            .insert(route(10000, "0.0.0.0/0", "eth0.10", Some("198.18.0.1")));
        // A subnet without gateway: direct route only.
        plan.routes
            .insert(route(10001, "198.18.1.0/24", "eth0", None));
        plan.routes
            .insert(route(10002, "198.18.64.0/20", "eth0.vxlan4", None));
        let v = VlanSubnets::of_plan(&plan);
        assert_eq!(v.0.len(), 2, "{v:?}");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            v.targets([ip("198.18.0.5"), ip("198.18.1.9"), ip("198.18.64.3")]),
            vec![
                VlanTarget {
                    pod_ip: ip("198.18.0.5"),
                    iface: "eth0.10".into(),
                    gateway: Some(ip("198.18.0.1")),
                },
                VlanTarget {
                    pod_ip: ip("198.18.1.9"),
                    iface: "eth0".into(),
                    gateway: None,
                },
            ]
        );
    }

    proptest! {
        #[test]
        fn verdict_is_monotonic(gw_at in proptest::option::of(0u64..4000), dup_at in proptest::option::of(0u64..4000), has_gw in any::<bool>()) {
            // Once decided, a check stays decided as time goes on and nothing new arrives.
            let t = Timing::from_timeout(Duration::from_secs(3));
            let i = v4(has_gw);
            let mut p = Progress::default();
            let mut decided: Option<Verdict> = None;
            for ms in (0..4000u64).step_by(50) {
                if gw_at.is_some_and(|g| g <= ms) { p.observe(Seen::Gateway(GW)); }
                if dup_at.is_some_and(|d| d <= ms) { p.observe(Seen::Claimed(ROGUE)); }
                let v = verdict(&i, &p, Duration::from_millis(ms), &t);
                if let Some(d) = decided {
                    // A conflict arriving after a pass is not looked at any more by the caller.
                    prop_assert!(v != Verdict::Pending, "{d:?} then pending");
                }
                if v != Verdict::Pending && decided.is_none() { decided = Some(v); }
            }
            prop_assert!(decided.is_some(), "undecided after the timeout");
        }
    }
}

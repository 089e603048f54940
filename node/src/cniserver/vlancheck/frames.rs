//! Ethernet frames of the VLAN checks: ARP (RFC 826, probes as in RFC 5227) and the ICMPv6
//! neighbour discovery messages NS/NA (RFC 4861). Pure encoding and decoding; decoding never
//! panics and rejects anything that is not exactly the message it claims to be.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// Ethernet header length (no 802.1Q tag: the kernel strips it on VLAN sub-interfaces).
pub const ETH_HEADER_LEN: usize = 14;
/// Shortest Ethernet frame without FCS; shorter frames are padded with zeros.
pub const MIN_FRAME_LEN: usize = 60;
const ARP_LEN: usize = 28;
const IPV6_HEADER_LEN: usize = 40;
const ICMPV6: u8 = 58;
const NDP_HOP_LIMIT: u8 = 255;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;

/// Why a frame was not decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is too short")]
    Truncated(usize),
    #[error("ethertype {0:#06x} is not the expected one")]
    EtherType(u16),
    #[error(
        "ARP header is not Ethernet/IPv4 (htype {htype}, ptype {ptype:#06x}, hlen {hlen}, plen {plen})"
    )]
    ArpFormat {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
    #[error("ARP opcode {0} is neither request nor reply")]
    ArpOpcode(u16),
    #[error("not IPv6 (version {0})")]
    IpVersion(u8),
    #[error("next header {0} is not ICMPv6")]
    NextHeader(u8),
    #[error("IPv6 payload length {0} does not fit the frame")]
    PayloadLength(u16),
    #[error("hop limit {0} is not 255 (neighbour discovery must come from the link)")]
    HopLimit(u8),
    #[error("ICMPv6 type {0} code {1} is not NS/NA")]
    IcmpType(u8, u8),
    #[error("ICMPv6 checksum is wrong")]
    Checksum,
    #[error("neighbour discovery option of length 0 or past the end")]
    OptionLength,
}

/// An Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHeader {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

fn parse_eth(frame: &[u8]) -> Result<EthHeader, FrameError> {
    let h = frame
        .get(..ETH_HEADER_LEN)
        .ok_or(FrameError::Truncated(frame.len()))?;
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&h[0..6]);
    src.copy_from_slice(&h[6..12]);
    Ok(EthHeader {
        dst,
        src,
        ethertype: u16::from_be_bytes([h[12], h[13]]),
    })
}

fn push_eth(out: &mut Vec<u8>, dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn pad(mut out: Vec<u8>) -> Vec<u8> {
    if out.len() < MIN_FRAME_LEN {
        out.resize(MIN_FRAME_LEN, 0);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ARP

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket {
    pub op: ArpOp,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// "Who has `target`? Tell `sender_ip`", broadcast.
    pub fn request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> ArpPacket {
        ArpPacket {
            op: ArpOp::Request,
            sender_mac,
            sender_ip,
            target_mac: [0; 6],
            target_ip: target,
        }
    }

    /// RFC 5227 probe: sender IP 0.0.0.0, so no listener updates its cache from it.
    pub fn probe(sender_mac: [u8; 6], target: Ipv4Addr) -> ArpPacket {
        ArpPacket::request(sender_mac, Ipv4Addr::UNSPECIFIED, target)
    }

    /// Gratuitous ARP (sender IP = target IP = `ip`), as a request or as a broadcast reply.
    pub fn gratuitous(op: ArpOp, mac: [u8; 6], ip: Ipv4Addr) -> ArpPacket {
        ArpPacket {
            op,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: match op {
                ArpOp::Request => [0; 6],
                ArpOp::Reply => BROADCAST_MAC,
            },
            target_ip: ip,
        }
    }

    /// The complete frame (padded to the Ethernet minimum) from `src` to `dst`.
    pub fn to_frame(&self, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_FRAME_LEN);
        push_eth(&mut out, dst, src, ETH_P_ARP);
        out.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
        out.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        out.push(6);
        out.push(4);
        let op: u16 = match self.op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        };
        out.extend_from_slice(&op.to_be_bytes());
        out.extend_from_slice(&self.sender_mac);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac);
        out.extend_from_slice(&self.target_ip.octets());
        pad(out)
    }
}

/// Decodes an Ethernet/IPv4 ARP frame (trailing padding allowed).
pub fn decode_arp(frame: &[u8]) -> Result<(EthHeader, ArpPacket), FrameError> {
    let eth = parse_eth(frame)?;
    if eth.ethertype != ETH_P_ARP {
        return Err(FrameError::EtherType(eth.ethertype));
    }
    let a = frame
        .get(ETH_HEADER_LEN..ETH_HEADER_LEN + ARP_LEN)
        .ok_or(FrameError::Truncated(frame.len()))?;
    let htype = u16::from_be_bytes([a[0], a[1]]);
    let ptype = u16::from_be_bytes([a[2], a[3]]);
    let (hlen, plen) = (a[4], a[5]);
    if htype != 1 || ptype != ETH_P_IPV4 || hlen != 6 || plen != 4 {
        return Err(FrameError::ArpFormat {
            htype,
            ptype,
            hlen,
            plen,
        });
    }
    let op = match u16::from_be_bytes([a[6], a[7]]) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        other => return Err(FrameError::ArpOpcode(other)),
    };
    let mut sender_mac = [0; 6];
    let mut target_mac = [0; 6];
    sender_mac.copy_from_slice(&a[8..14]);
    target_mac.copy_from_slice(&a[18..24]);
    Ok((
        eth,
        ArpPacket {
            op,
            sender_mac,
            sender_ip: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
            target_mac,
            target_ip: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// NDP

/// A neighbour solicitation or advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdpMessage {
    Solicitation {
        target: Ipv6Addr,
        /// Source link-layer address option (must be absent when the source is `::`).
        source_lla: Option<[u8; 6]>,
    },
    Advertisement {
        router: bool,
        solicited: bool,
        override_: bool,
        target: Ipv6Addr,
        target_lla: Option<[u8; 6]>,
    },
}

impl NdpMessage {
    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdpMessage::Solicitation { target, .. } | NdpMessage::Advertisement { target, .. } => {
                *target
            }
        }
    }
}

/// A decoded NDP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdpFrame {
    pub eth: EthHeader,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub msg: NdpMessage,
}

/// `ff02::1:ffXX:XXXX`, the solicited-node multicast group of `ip`.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast address of an IPv6 multicast group (`33:33` + low 32 bits).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(body);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The complete frame of an NDP message from `src` to `dst` (hop limit 255, checksum filled in).
pub fn encode_ndp(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &NdpMessage,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    let (kind, flags, target, option) = match *msg {
        NdpMessage::Solicitation { target, source_lla } => (
            ICMPV6_NS,
            0u32,
            target,
            source_lla.map(|m| (OPT_SOURCE_LLA, m)),
        ),
        NdpMessage::Advertisement {
            router,
            solicited,
            override_,
            target,
            target_lla,
        } => {
            let flags = (u32::from(router) << 31)
                | (u32::from(solicited) << 30)
                | (u32::from(override_) << 29);
            (
                ICMPV6_NA,
                flags,
                target,
                target_lla.map(|m| (OPT_TARGET_LLA, m)),
            )
        }
    };
    body.push(kind);
    body.push(0);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&flags.to_be_bytes());
    body.extend_from_slice(&target.octets());
    if let Some((t, mac)) = option {
        body.push(t);
        body.push(1); // in units of 8 bytes
        body.extend_from_slice(&mac);
    }
    let sum = icmpv6_checksum(src, dst, &body);
    body[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut out = Vec::with_capacity(ETH_HEADER_LEN + IPV6_HEADER_LEN + body.len());
    push_eth(&mut out, eth_dst, eth_src, ETH_P_IPV6);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.push(ICMPV6);
    out.push(NDP_HOP_LIMIT);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&body);
    pad(out)
}

/// Decodes an NS or NA frame: IPv6 without extension headers, hop limit 255, correct checksum,
/// well-formed options (RFC 4861 7.1.1/7.1.2). Other IPv6 frames are errors (callers skip them).
pub fn decode_ndp(frame: &[u8]) -> Result<NdpFrame, FrameError> {
    let eth = parse_eth(frame)?;
    if eth.ethertype != ETH_P_IPV6 {
        return Err(FrameError::EtherType(eth.ethertype));
    }
    let ip = frame
        .get(ETH_HEADER_LEN..ETH_HEADER_LEN + IPV6_HEADER_LEN)
        .ok_or(FrameError::Truncated(frame.len()))?;
    if ip[0] >> 4 != 6 {
        return Err(FrameError::IpVersion(ip[0] >> 4));
    }
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]);
    if ip[6] != ICMPV6 {
        return Err(FrameError::NextHeader(ip[6]));
    }
    let start = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    let body = frame
        .get(start..start + usize::from(payload_len))
        .ok_or(FrameError::PayloadLength(payload_len))?;
    let mut s = [0u8; 16];
    s.copy_from_slice(&ip[8..24]);
    let src = Ipv6Addr::from(s);
    s.copy_from_slice(&ip[24..40]);
    let dst = Ipv6Addr::from(s);
    let (kind, code) = match body {
        [k, c, ..] => (*k, *c),
        _ => return Err(FrameError::Truncated(frame.len())),
    };
    if !matches!(kind, ICMPV6_NS | ICMPV6_NA) || code != 0 {
        return Err(FrameError::IcmpType(kind, code));
    }
    if ip[7] != NDP_HOP_LIMIT {
        return Err(FrameError::HopLimit(ip[7]));
    }
    if body.len() < 24 {
        return Err(FrameError::Truncated(frame.len()));
    }
    if icmpv6_checksum(src, dst, body) != 0 {
        return Err(FrameError::Checksum);
    }
    let flags = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    s.copy_from_slice(&body[8..24]);
    let target = Ipv6Addr::from(s);
    let mut lla = None;
    let mut opts = &body[24..];
    while !opts.is_empty() {
        let (t, len) = match opts {
            [t, l, ..] => (*t, usize::from(*l) * 8),
            _ => return Err(FrameError::OptionLength),
        };
        if len == 0 || len > opts.len() {
            return Err(FrameError::OptionLength);
        }
        let want = if kind == ICMPV6_NS {
            OPT_SOURCE_LLA
        } else {
            OPT_TARGET_LLA
        };
        if t == want && len >= 8 {
            let mut m = [0; 6];
            m.copy_from_slice(&opts[2..8]);
            lla = Some(m);
        }
        opts = &opts[len..];
    }
    let msg = if kind == ICMPV6_NS {
        NdpMessage::Solicitation {
            target,
            source_lla: lla,
        }
    } else {
        NdpMessage::Advertisement {
            router: flags & (1 << 31) != 0,
            solicited: flags & (1 << 30) != 0,
            override_: flags & (1 << 29) != 0,
            target,
            target_lla: lla,
        }
    };
    Ok(NdpFrame { eth, src, dst, msg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NODE: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn arp_request_is_byte_exact() {
        let p = ArpPacket::request(
            NODE,
            Ipv4Addr::new(198, 18, 0, 5),
            Ipv4Addr::new(198, 18, 0, 1),
        );
        let f = p.to_frame(BROADCAST_MAC, NODE);
        let mut want = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
            0x02, 0, 0, 0, 0, 1, // src
            0x08, 0x06, // ARP
            0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
            0x02, 0, 0, 0, 0, 1, 198, 18, 0, 5, // sender
            0, 0, 0, 0, 0, 0, 198, 18, 0, 1, // target
        ];
        want.resize(60, 0);
        assert_eq!(f, want);
        assert_eq!(decode_arp(&f).unwrap().1, p);
    }

    #[test]
    fn probe_and_gratuitous_forms() {
        let probe = ArpPacket::probe(NODE, Ipv4Addr::new(198, 18, 0, 5));
        let f = probe.to_frame(BROADCAST_MAC, NODE);
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "probe sender IP is 0.0.0.0");
        assert_eq!(&f[38..42], &[198, 18, 0, 5]);
        let g = ArpPacket::gratuitous(ArpOp::Reply, NODE, Ipv4Addr::new(198, 18, 0, 5));
        let f = g.to_frame(BROADCAST_MAC, NODE);
        assert_eq!(&f[20..22], &[0, 2], "reply opcode");
        assert_eq!(&f[28..32], &f[38..42], "sender IP == target IP");
        assert_eq!(&f[32..38], &BROADCAST_MAC);
        let (eth, back) = decode_arp(&f).unwrap();
        assert_eq!(eth.src, NODE);
        assert_eq!(back, g);
    }

    #[test]
    fn arp_rejections() {
        let f = ArpPacket::probe(NODE, Ipv4Addr::new(198, 18, 0, 5)).to_frame(BROADCAST_MAC, NODE);
        assert_eq!(decode_arp(&f[..41]), Err(FrameError::Truncated(41)));
        assert_eq!(decode_arp(&f[..3]), Err(FrameError::Truncated(3)));
        let mut g = f.clone();
        g[21] = 3;
        assert_eq!(decode_arp(&g), Err(FrameError::ArpOpcode(3)));
        let mut g = f.clone();
        g[18] = 8; // hlen
        assert!(matches!(decode_arp(&g), Err(FrameError::ArpFormat { .. })));
        let mut g = f.clone();
        g[13] = 0x00; // ethertype 0x0800
        assert_eq!(decode_arp(&g), Err(FrameError::EtherType(0x0800)));
    }

    #[test]
    fn solicited_node_group_and_mac() {
        let ip: Ipv6Addr = "fd00::1:2345:6789".parse().unwrap();
        let g = solicited_node(ip);
        assert_eq!(g, "ff02::1:ff45:6789".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(g), [0x33, 0x33, 0xff, 0x45, 0x67, 0x89]);
    }

    #[test]
    fn neighbour_solicitation_is_byte_exact() {
        let src: Ipv6Addr = "fd00::5".parse().unwrap();
        let target: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst = solicited_node(target);
        let msg = NdpMessage::Solicitation {
            target,
            source_lla: Some(NODE),
        };
        let f = encode_ndp(multicast_mac(dst), NODE, src, dst, &msg);
        let mut want: Vec<u8> = vec![0x33, 0x33, 0xff, 0, 0, 1, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
        want.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        want.extend_from_slice(&src.octets());
        want.extend_from_slice(&dst.octets());
        // type, code, checksum (computed independently below), reserved
        want.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&target.octets());
        want.extend_from_slice(&[1, 1, 0x02, 0, 0, 0, 0, 1]);
        // Checksum by hand: one's complement sum of pseudo-header and body.
        let mut sum: u32 = 0;
        let words = |b: &[u8]| -> u32 {
            b.chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum()
        };
        sum += words(&src.octets()) + words(&dst.octets()) + 32 + 58;
        sum += words(&want[54..]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let ck = !(sum as u16);
        want[56..58].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(f, want);
        let d = decode_ndp(&f).unwrap();
        assert_eq!((d.src, d.dst, d.msg), (src, dst, msg));
    }

    #[test]
    fn unsolicited_advertisement_round_trips() {
        let ip: Ipv6Addr = "fd00::5".parse().unwrap();
        let msg = NdpMessage::Advertisement {
            router: false,
            solicited: false,
            override_: true,
            target: ip,
            target_lla: Some(NODE),
        };
        let f = encode_ndp(multicast_mac(ALL_NODES), NODE, ip, ALL_NODES, &msg);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[54], 136);
        assert_eq!(f[58], 0x20, "override flag only");
        assert_eq!(f[78], 2, "target link-layer address option");
        assert_eq!(decode_ndp(&f).unwrap().msg, msg);
    }

    #[test]
    fn ndp_rejections() {
        let ip: Ipv6Addr = "fd00::5".parse().unwrap();
        let msg = NdpMessage::Solicitation {
            target: ip,
            source_lla: None,
        };
        let f = encode_ndp(
            multicast_mac(solicited_node(ip)),
            NODE,
            Ipv6Addr::UNSPECIFIED,
            solicited_node(ip),
            &msg,
        );
        assert!(decode_ndp(&f).is_ok());
        let mut g = f.clone();
        g[21] = 64;
        assert_eq!(decode_ndp(&g), Err(FrameError::HopLimit(64)));
        let mut g = f.clone();
        g[60] ^= 1;
        assert_eq!(decode_ndp(&g), Err(FrameError::Checksum));
        let mut g = f.clone();
        g[20] = 6;
        assert_eq!(decode_ndp(&g), Err(FrameError::NextHeader(6)));
        let mut g = f.clone();
        g[19] = 200;
        assert_eq!(decode_ndp(&g), Err(FrameError::PayloadLength(200)));
        let mut g = f.clone();
        g[54] = 128; // echo request
        assert_eq!(decode_ndp(&g), Err(FrameError::IcmpType(128, 0)));
        // An option of length 0 would loop forever in a careless parser.
        let mut with_opt = encode_ndp(
            multicast_mac(solicited_node(ip)),
            NODE,
            ip,
            solicited_node(ip),
            &NdpMessage::Solicitation {
                target: ip,
                source_lla: Some(NODE),
            },
        );
        with_opt[79] = 0;
        assert_eq!(decode_ndp(&with_opt), Err(FrameError::Checksum));
        with_opt[56..58].copy_from_slice(&[0, 0]);
        let ck = icmpv6_checksum(ip, solicited_node(ip), &with_opt[54..86]);
        with_opt[56..58].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(decode_ndp(&with_opt), Err(FrameError::OptionLength));
    }

    fn arb_mac() -> impl Strategy<Value = [u8; 6]> {
        any::<[u8; 6]>()
    }

    proptest! {
        #[test]
        fn arp_round_trips(s in arb_mac(), t in arb_mac(), si in any::<u32>(), ti in any::<u32>(), reply in any::<bool>()) {
            let p = ArpPacket {
                op: if reply { ArpOp::Reply } else { ArpOp::Request },
                sender_mac: s,
                sender_ip: Ipv4Addr::from(si),
                target_mac: t,
                target_ip: Ipv4Addr::from(ti),
            };
            let f = p.to_frame(BROADCAST_MAC, s);
            prop_assert_eq!(f.len(), MIN_FRAME_LEN);
            prop_assert_eq!(decode_arp(&f).map(|x| x.1), Ok(p));
        }

        #[test]
        fn ndp_round_trips(src in any::<u128>(), target in any::<u128>(), lla in proptest::option::of(arb_mac()),
                           na in any::<bool>(), r in any::<bool>(), s in any::<bool>(), o in any::<bool>()) {
            let target = Ipv6Addr::from(target);
            let msg = if na {
                NdpMessage::Advertisement { router: r, solicited: s, override_: o, target, target_lla: lla }
            } else {
                NdpMessage::Solicitation { target, source_lla: lla }
            };
            let src = Ipv6Addr::from(src);
            let f = encode_ndp(BROADCAST_MAC, NODE, src, ALL_NODES, &msg);
            let d = decode_ndp(&f);
            prop_assert_eq!(d.map(|d| (d.src, d.dst, d.msg)), Ok((src, ALL_NODES, msg)));
        }

        #[test]
        fn hostile_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_arp(&bytes);
            let _ = decode_ndp(&bytes);
        }

        #[test]
        fn mutated_valid_frames_never_panic(cut in 0usize..100, pos in 0usize..100, val in any::<u8>()) {
            let ip: Ipv6Addr = "fd00::5".parse().unwrap();
            let ndp = encode_ndp(BROADCAST_MAC, NODE, ip, ALL_NODES, &NdpMessage::Advertisement {
                router: false, solicited: true, override_: true, target: ip, target_lla: Some(NODE) });
            let arp = ArpPacket::probe(NODE, Ipv4Addr::new(198, 18, 0, 5)).to_frame(BROADCAST_MAC, NODE);
            for f in [ndp, arp] {
                let mut g = f.clone();
                if pos < g.len() { g[pos] = val; }
                g.truncate(cut.min(g.len()));
                let _ = decode_arp(&g);
                let _ = decode_ndp(&g);
                let mut h = f.clone();
                if pos < h.len() { h[pos] = val; }
                let _ = decode_arp(&h);
                let _ = decode_ndp(&h);
            }
        }
    }
}

//! BGP-4 message codec (RFC 4271, with RFC 4760 multiprotocol, RFC 6793 4-octet AS,
//! RFC 4724 graceful restart, RFC 5492 capabilities, RFC 1997 communities, RFC 2918 route refresh).
//!
//! The model is a faithful, canonical picture of the wire: `decode(encode(m)) == m` for every
//! message the encoder accepts, and `encode(decode(b)) == b` for every byte string the encoder
//! produces. Non-canonical but valid input (extended length flag on a short attribute, several
//! capability parameters, set host bits in a prefix) decodes to the canonical model.
//!
//! The decoder is total: every input either decodes, asks for more bytes, or yields a
//! [`DecodeError`] whose [`DecodeError::notification`] is the NOTIFICATION RFC 4271 section 6
//! prescribes (code, subcode and data). It never panics and never allocates more than the input.
//!
//! Limits: attributes other than the ones in [`PathAttribute`] are carried opaquely as
//! [`PathAttribute::Unknown`]; MP_REACH/MP_UNREACH for AFI/SAFI other than IPv4/IPv6 unicast are
//! carried opaquely too. With a 2-octet-AS peer the encoder writes AS_TRANS for large ASNs but no
//! AS4_PATH (the speaker only ever sends its own AS, see the crate docs).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Prefix;

/// The 16-octet all-ones marker that starts every message.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Length of the fixed message header.
pub const HEADER_LEN: usize = 19;
/// Largest message RFC 4271 allows.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The 2-octet placeholder AS (RFC 6793) sent in OPEN's My Autonomous System when AS > 65535.
pub const AS_TRANS: u16 = 23456;
/// Well-known community NO_EXPORT (RFC 1997), shown by bird as (65535,65281).
pub const NO_EXPORT: u32 = 0xFFFF_FF01;
/// The BGP version this codec speaks.
pub const BGP_VERSION: u8 = 4;

/// Message type codes.
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Path attribute type codes.
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
}

/// Path attribute flag bits.
pub mod attr_flags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Capability codes (RFC 5492 registry).
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// NOTIFICATION error codes and subcodes (RFC 4271 section 4.5, RFC 4486, RFC 6608).
pub mod notif {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;

    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    pub const FSM_ERROR: u8 = 5;
    pub const FSM_UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const FSM_UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_IN_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const CEASE_ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMINISTRATIVE_RESET: u8 = 4;
    pub const CEASE_OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CEASE_CONNECTION_COLLISION: u8 = 7;
}

/// An address family / subsequent address family pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AfiSafi {
    pub afi: u16,
    pub safi: u8,
}

impl AfiSafi {
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: 2, safi: 1 };
}

/// The two address families this speaker announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    pub fn afi_safi(self) -> AfiSafi {
        match self {
            Family::Ipv4Unicast => AfiSafi::IPV4_UNICAST,
            Family::Ipv6Unicast => AfiSafi::IPV6_UNICAST,
        }
    }
}

/// Per-session codec settings negotiated in OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Both sides sent the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-octet ASNs.
    pub four_octet_as: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            four_octet_as: true,
        }
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// OPEN message (RFC 4271 section 4.2); capabilities are the only optional parameter type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS when the real AS is larger).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`: My Autonomous System is AS_TRANS when `asn` needs 4 octets
    /// (RFC 6793 section 4.1); the caller lists the capabilities, including [`Capability::FourOctetAs`].
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Open {
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability when present, else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// True when the 4-octet AS capability is present.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// Address families offered: the multiprotocol capabilities, or IPv4 unicast when none
    /// is present (RFC 4760 section 8).
    pub fn families(&self) -> Vec<AfiSafi> {
        let mp: Vec<AfiSafi> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(af) => Some(*af),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            vec![AfiSafi::IPV4_UNICAST]
        } else {
            mp
        }
    }

    /// The graceful restart capability, if present.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }
}

/// A capability advertisement (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760.
    Multiprotocol(AfiSafi),
    /// RFC 2918.
    RouteRefresh,
    /// RFC 4724.
    GracefulRestart(GracefulRestart),
    /// RFC 6793.
    FourOctetAs(u32),
    /// Any other capability, carried opaquely.
    Unknown { code: u8, value: Vec<u8> },
}

/// The graceful restart capability (RFC 4724 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): the sender supports graceful restart for NOTIFICATION messages.
    pub notification: bool,
    /// Restart time in seconds, 12 bits (0..=4095).
    pub restart_time: u16,
    /// Families for which graceful restart is supported, with the F (forwarding state preserved) bit.
    pub families: Vec<GracefulRestartFamily>,
}

/// One family entry of the graceful restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi_safi: AfiSafi,
    pub forwarding_preserved: bool,
}

/// UPDATE message (RFC 4271 section 4.3). Withdrawn routes and NLRI here are IPv4 unicast only;
/// IPv6 travels in [`MpReach`] / [`MpUnreach`] attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Prefix>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Prefix>,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 section 2).
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            Family::Ipv6Unicast => Update {
                attributes: vec![PathAttribute::MpUnreach(MpUnreach::V6(Vec::new()))],
                ..Update::default()
            },
        }
    }

    /// The family this UPDATE marks End-of-RIB for, if it is such a marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::Ipv4Unicast),
            [PathAttribute::MpUnreach(MpUnreach::V4(w))] if w.is_empty() => {
                Some(Family::Ipv4Unicast)
            }
            [PathAttribute::MpUnreach(MpUnreach::V6(w))] if w.is_empty() => {
                Some(Family::Ipv6Unicast)
            }
            _ => None,
        }
    }
}

/// ORIGIN attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsSegmentKind {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

/// One AS_PATH segment: 1..=255 ASNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: AsSegmentKind,
    pub asns: Vec<u32>,
}

/// MP_REACH_NLRI (RFC 4760 section 3) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpReach {
    V4 {
        next_hop: Ipv4Addr,
        nlri: Vec<Prefix>,
    },
    V6 {
        /// The global next hop.
        next_hop: Ipv6Addr,
        /// Optional link-local next hop (RFC 2545), making the next hop field 32 octets.
        link_local: Option<Ipv6Addr>,
        nlri: Vec<Prefix>,
    },
}

/// MP_UNREACH_NLRI (RFC 4760 section 4) for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpUnreach {
    V4(Vec<Prefix>),
    V6(Vec<Prefix>),
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    Communities(Vec<u32>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    /// An attribute this codec does not interpret (optional, or MP for other families).
    /// `flags` never has the extended-length bit; the encoder sets it when needed.
    Unknown {
        flags: u8,
        type_code: u8,
        value: Vec<u8>,
    },
}

impl PathAttribute {
    pub fn type_code(&self) -> u8 {
        match self {
            PathAttribute::Origin(_) => attr_type::ORIGIN,
            PathAttribute::AsPath(_) => attr_type::AS_PATH,
            PathAttribute::NextHop(_) => attr_type::NEXT_HOP,
            PathAttribute::MultiExitDisc(_) => attr_type::MULTI_EXIT_DISC,
            PathAttribute::LocalPref(_) => attr_type::LOCAL_PREF,
            PathAttribute::AtomicAggregate => attr_type::ATOMIC_AGGREGATE,
            PathAttribute::Aggregator { .. } => attr_type::AGGREGATOR,
            PathAttribute::Communities(_) => attr_type::COMMUNITIES,
            PathAttribute::MpReach(_) => attr_type::MP_REACH_NLRI,
            PathAttribute::MpUnreach(_) => attr_type::MP_UNREACH_NLRI,
            PathAttribute::Unknown { type_code, .. } => *type_code,
        }
    }
}

/// NOTIFICATION message (RFC 4271 section 4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease with a subcode (RFC 4486).
    pub fn cease(subcode: u8) -> Self {
        Notification::new(notif::CEASE, subcode, Vec::new())
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = match self.code {
            notif::MESSAGE_HEADER_ERROR => "message header error",
            notif::OPEN_MESSAGE_ERROR => "OPEN message error",
            notif::UPDATE_MESSAGE_ERROR => "UPDATE message error",
            notif::HOLD_TIMER_EXPIRED => "hold timer expired",
            notif::FSM_ERROR => "finite state machine error",
            notif::CEASE => "cease",
            _ => "unknown error code",
        };
        write!(f, "{code} ({}/{})", self.code, self.subcode)?;
        if !self.data.is_empty() {
            write!(f, " data ")?;
            for b in &self.data {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// ROUTE-REFRESH message (RFC 2918).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    /// The reserved octet (RFC 7313 uses it as a subtype).
    pub reserved: u8,
    pub safi: u8,
}

/// Malformed input, each variant naming the NOTIFICATION it must be answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: marker is not all ones (connection not synchronized)")]
    ConnectionNotSynchronized,
    #[error("message header: bad message length {length}")]
    BadMessageLength { length: u16 },
    #[error("message header: bad message type {msg_type}")]
    BadMessageType { msg_type: u8 },
    #[error("OPEN: unsupported version {version}")]
    UnsupportedVersion { version: u8 },
    #[error("OPEN: bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    #[error("OPEN: bad BGP identifier {id}")]
    BadBgpIdentifier { id: Ipv4Addr },
    #[error("OPEN: unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    #[error("OPEN: unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter { param_type: u8 },
    #[error("OPEN: malformed: {reason}")]
    MalformedOpen { reason: &'static str },
    #[error("UPDATE: malformed attribute list: {reason}")]
    MalformedAttributeList { reason: &'static str },
    #[error("UPDATE: unrecognized well-known attribute type {type_code}")]
    UnrecognizedWellKnownAttribute { type_code: u8, attribute: Vec<u8> },
    #[error("UPDATE: missing well-known attribute type {type_code}")]
    MissingWellKnownAttribute { type_code: u8 },
    #[error("UPDATE: attribute flags error for attribute type {type_code}")]
    AttributeFlags { type_code: u8, attribute: Vec<u8> },
    #[error("UPDATE: attribute length error for attribute type {type_code}")]
    AttributeLength { type_code: u8, attribute: Vec<u8> },
    #[error("UPDATE: invalid ORIGIN")]
    InvalidOrigin { attribute: Vec<u8> },
    #[error("UPDATE: invalid NEXT_HOP")]
    InvalidNextHop { attribute: Vec<u8> },
    #[error("UPDATE: optional attribute error in attribute type {type_code}: {reason}")]
    OptionalAttribute {
        type_code: u8,
        attribute: Vec<u8>,
        reason: &'static str,
    },
    #[error("UPDATE: invalid network field: {reason}")]
    InvalidNetworkField { reason: &'static str },
    #[error("UPDATE: malformed AS_PATH: {reason}")]
    MalformedAsPath { reason: &'static str },
}

impl DecodeError {
    /// The (code, subcode) pair of the NOTIFICATION for this error.
    pub fn class(&self) -> (u8, u8) {
        use DecodeError as E;
        use notif::*;
        match self {
            E::ConnectionNotSynchronized => (MESSAGE_HEADER_ERROR, CONNECTION_NOT_SYNCHRONIZED),
            E::BadMessageLength { .. } => (MESSAGE_HEADER_ERROR, BAD_MESSAGE_LENGTH),
            E::BadMessageType { .. } => (MESSAGE_HEADER_ERROR, BAD_MESSAGE_TYPE),
            E::UnsupportedVersion { .. } => (OPEN_MESSAGE_ERROR, UNSUPPORTED_VERSION),
            E::BadPeerAs { .. } => (OPEN_MESSAGE_ERROR, BAD_PEER_AS),
            E::BadBgpIdentifier { .. } => (OPEN_MESSAGE_ERROR, BAD_BGP_IDENTIFIER),
            E::UnacceptableHoldTime { .. } => (OPEN_MESSAGE_ERROR, UNACCEPTABLE_HOLD_TIME),
            E::UnsupportedOptionalParameter { .. } => {
                (OPEN_MESSAGE_ERROR, UNSUPPORTED_OPTIONAL_PARAMETER)
            }
            E::MalformedOpen { .. } => (OPEN_MESSAGE_ERROR, UNSPECIFIC),
            E::MalformedAttributeList { .. } => (UPDATE_MESSAGE_ERROR, MALFORMED_ATTRIBUTE_LIST),
            E::UnrecognizedWellKnownAttribute { .. } => {
                (UPDATE_MESSAGE_ERROR, UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE)
            }
            E::MissingWellKnownAttribute { .. } => {
                (UPDATE_MESSAGE_ERROR, MISSING_WELL_KNOWN_ATTRIBUTE)
            }
            E::AttributeFlags { .. } => (UPDATE_MESSAGE_ERROR, ATTRIBUTE_FLAGS_ERROR),
            E::AttributeLength { .. } => (UPDATE_MESSAGE_ERROR, ATTRIBUTE_LENGTH_ERROR),
            E::InvalidOrigin { .. } => (UPDATE_MESSAGE_ERROR, INVALID_ORIGIN),
            E::InvalidNextHop { .. } => (UPDATE_MESSAGE_ERROR, INVALID_NEXT_HOP),
            E::OptionalAttribute { .. } => (UPDATE_MESSAGE_ERROR, OPTIONAL_ATTRIBUTE_ERROR),
            E::InvalidNetworkField { .. } => (UPDATE_MESSAGE_ERROR, INVALID_NETWORK_FIELD),
            E::MalformedAsPath { .. } => (UPDATE_MESSAGE_ERROR, MALFORMED_AS_PATH),
        }
    }

    /// The NOTIFICATION to send for this error, with the data field RFC 4271 section 6 asks for.
    pub fn notification(&self) -> Notification {
        use DecodeError as E;
        let (code, subcode) = self.class();
        let data = match self {
            E::BadMessageLength { length } => length.to_be_bytes().to_vec(),
            E::BadMessageType { msg_type } => vec![*msg_type],
            // The largest version we support.
            E::UnsupportedVersion { .. } => u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            E::UnrecognizedWellKnownAttribute { attribute, .. }
            | E::AttributeFlags { attribute, .. }
            | E::AttributeLength { attribute, .. }
            | E::InvalidOrigin { attribute }
            | E::InvalidNextHop { attribute }
            | E::OptionalAttribute { attribute, .. } => attribute.clone(),
            E::MissingWellKnownAttribute { type_code } => vec![*type_code],
            _ => Vec::new(),
        };
        Notification::new(code, subcode, data)
    }
}

/// A message the encoder refuses to produce because it would not be valid on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {len} octets exceeds the {MAX_MESSAGE_LEN}-octet maximum")]
    MessageTooLong { len: usize },
    #[error("attribute type {type_code} value of {len} octets exceeds 65535")]
    AttributeTooLong { type_code: u8, len: usize },
    #[error("AS_PATH segment with {len} ASNs (must be 1..=255)")]
    BadSegmentLength { len: usize },
    #[error("capability code {code} value of {len} octets does not fit an optional parameter")]
    CapabilityTooLong { code: u8, len: usize },
    #[error("graceful restart time {restart_time} exceeds 4095 seconds")]
    RestartTimeTooLong { restart_time: u16 },
    #[error("withdrawn routes or attributes of {len} octets exceed 65535")]
    FieldTooLong { len: usize },
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

impl Message {
    /// Encodes the message with its header.
    pub fn encode(&self, codec: Codec) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0]); // length, patched below
        match self {
            Message::Open(open) => {
                out.push(msg_type::OPEN);
                encode_open(open, &mut out)?;
            }
            Message::Update(update) => {
                out.push(msg_type::UPDATE);
                encode_update(update, codec, &mut out)?;
            }
            Message::Notification(n) => {
                out.push(msg_type::NOTIFICATION);
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
            }
            Message::Keepalive => out.push(msg_type::KEEPALIVE),
            Message::RouteRefresh(rr) => {
                out.push(msg_type::ROUTE_REFRESH);
                out.extend_from_slice(&rr.afi.to_be_bytes());
                out.push(rr.reserved);
                out.push(rr.safi);
            }
        }
        if out.len() > MAX_MESSAGE_LEN {
            return Err(EncodeError::MessageTooLong { len: out.len() });
        }
        let len = out.len() as u16; // <= 4096, checked above
        out[16..18].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }
}

fn encode_capability(cap: &Capability, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let (code, value): (u8, Vec<u8>) = match cap {
        Capability::Multiprotocol(af) => {
            let mut v = af.afi.to_be_bytes().to_vec();
            v.push(0);
            v.push(af.safi);
            (cap_code::MULTIPROTOCOL, v)
        }
        Capability::RouteRefresh => (cap_code::ROUTE_REFRESH, Vec::new()),
        Capability::GracefulRestart(gr) => {
            if gr.restart_time > 0x0fff {
                return Err(EncodeError::RestartTimeTooLong {
                    restart_time: gr.restart_time,
                });
            }
            let mut head = gr.restart_time;
            if gr.restart_state {
                head |= 0x8000;
            }
            if gr.notification {
                head |= 0x4000;
            }
            let mut v = head.to_be_bytes().to_vec();
            for fam in &gr.families {
                v.extend_from_slice(&fam.afi_safi.afi.to_be_bytes());
                v.push(fam.afi_safi.safi);
                v.push(if fam.forwarding_preserved { 0x80 } else { 0 });
            }
            (cap_code::GRACEFUL_RESTART, v)
        }
        Capability::FourOctetAs(asn) => (cap_code::FOUR_OCTET_AS, asn.to_be_bytes().to_vec()),
        Capability::Unknown { code, value } => (*code, value.clone()),
    };
    // A capability lives inside one optional parameter of at most 255 octets.
    if value.len() > 253 {
        return Err(EncodeError::CapabilityTooLong {
            code,
            len: value.len(),
        });
    }
    out.push(code);
    out.push(value.len() as u8);
    out.extend_from_slice(&value);
    Ok(())
}

fn encode_open(open: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(BGP_VERSION);
    out.extend_from_slice(&open.my_as.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());
    // Capabilities packed greedily into as few Capabilities parameters (type 2) as fit.
    let mut params: Vec<Vec<u8>> = Vec::new();
    for cap in &open.capabilities {
        let mut one = Vec::new();
        encode_capability(cap, &mut one)?;
        match params.last_mut() {
            Some(p) if p.len() + one.len() <= 255 => p.extend_from_slice(&one),
            _ => params.push(one),
        }
    }
    let mut opt = Vec::new();
    for p in &params {
        opt.push(2);
        opt.push(p.len() as u8);
        opt.extend_from_slice(p);
    }
    if opt.len() > 255 {
        return Err(EncodeError::MessageTooLong {
            len: HEADER_LEN + 10 + opt.len(),
        });
    }
    out.push(opt.len() as u8);
    out.extend_from_slice(&opt);
    Ok(())
}

fn encode_prefix(len: u8, octets: &[u8], out: &mut Vec<u8>) {
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    out.extend_from_slice(&octets[..n.min(octets.len())]);
}

/// IPv4 NLRI: the rib builds these lists by family ([`crate::rib`]'s `split`), so each prefix is
/// IPv4; its address is the low 32 bits.
fn encode_v4_prefixes(prefixes: &[Prefix], out: &mut Vec<u8>) {
    for p in prefixes {
        encode_prefix(
            p.len(),
            &((p.network & 0xffff_ffff) as u32).to_be_bytes(),
            out,
        );
    }
}

fn encode_v6_prefixes(prefixes: &[Prefix], out: &mut Vec<u8>) {
    for p in prefixes {
        encode_prefix(p.len(), &p.network.to_be_bytes(), out);
    }
}

fn encode_asn(asn: u32, codec: Codec, out: &mut Vec<u8>) {
    if codec.four_octet_as {
        out.extend_from_slice(&asn.to_be_bytes());
    } else {
        let two = u16::try_from(asn).unwrap_or(AS_TRANS);
        out.extend_from_slice(&two.to_be_bytes());
    }
}

fn encode_attribute(
    attr: &PathAttribute,
    codec: Codec,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    use attr_flags::{OPTIONAL, TRANSITIVE};
    let mut value = Vec::new();
    let flags = match attr {
        PathAttribute::Origin(o) => {
            value.push(*o as u8);
            TRANSITIVE
        }
        PathAttribute::AsPath(segments) => {
            for seg in segments {
                if seg.asns.is_empty() || seg.asns.len() > 255 {
                    return Err(EncodeError::BadSegmentLength {
                        len: seg.asns.len(),
                    });
                }
                value.push(seg.kind as u8);
                value.push(seg.asns.len() as u8);
                for asn in &seg.asns {
                    encode_asn(*asn, codec, &mut value);
                }
            }
            TRANSITIVE
        }
        PathAttribute::NextHop(nh) => {
            value.extend_from_slice(&nh.octets());
            TRANSITIVE
        }
        PathAttribute::MultiExitDisc(v) => {
            value.extend_from_slice(&v.to_be_bytes());
            OPTIONAL
        }
        PathAttribute::LocalPref(v) => {
            value.extend_from_slice(&v.to_be_bytes());
            TRANSITIVE
        }
        PathAttribute::AtomicAggregate => TRANSITIVE,
        PathAttribute::Aggregator { asn, address } => {
            encode_asn(*asn, codec, &mut value);
            value.extend_from_slice(&address.octets());
            OPTIONAL | TRANSITIVE
        }
        PathAttribute::Communities(cs) => {
            for c in cs {
                value.extend_from_slice(&c.to_be_bytes());
            }
            OPTIONAL | TRANSITIVE
        }
        PathAttribute::MpReach(mp) => {
            match mp {
                MpReach::V4 { next_hop, nlri } => {
                    value.extend_from_slice(&AfiSafi::IPV4_UNICAST.afi.to_be_bytes());
                    value.push(AfiSafi::IPV4_UNICAST.safi);
                    value.push(4);
                    value.extend_from_slice(&next_hop.octets());
                    value.push(0); // reserved
                    encode_v4_prefixes(nlri, &mut value);
                }
                MpReach::V6 {
                    next_hop,
                    link_local,
                    nlri,
                } => {
                    value.extend_from_slice(&AfiSafi::IPV6_UNICAST.afi.to_be_bytes());
                    value.push(AfiSafi::IPV6_UNICAST.safi);
                    value.push(if link_local.is_some() { 32 } else { 16 });
                    value.extend_from_slice(&next_hop.octets());
                    if let Some(ll) = link_local {
                        value.extend_from_slice(&ll.octets());
                    }
                    value.push(0); // reserved
                    encode_v6_prefixes(nlri, &mut value);
                }
            }
            OPTIONAL
        }
        PathAttribute::MpUnreach(mp) => {
            match mp {
                MpUnreach::V4(w) => {
                    value.extend_from_slice(&AfiSafi::IPV4_UNICAST.afi.to_be_bytes());
                    value.push(AfiSafi::IPV4_UNICAST.safi);
                    encode_v4_prefixes(w, &mut value);
                }
                MpUnreach::V6(w) => {
                    value.extend_from_slice(&AfiSafi::IPV6_UNICAST.afi.to_be_bytes());
                    value.push(AfiSafi::IPV6_UNICAST.safi);
                    encode_v6_prefixes(w, &mut value);
                }
            }
            OPTIONAL
        }
        PathAttribute::Unknown {
            flags,
            value: v,
            type_code: _,
        } => {
            value.extend_from_slice(v);
            *flags & !attr_flags::EXTENDED_LENGTH
        }
    };
    let type_code = attr.type_code();
    if value.len() > usize::from(u16::MAX) {
        return Err(EncodeError::AttributeTooLong {
            type_code,
            len: value.len(),
        });
    }
    if value.len() > 255 {
        out.push(flags | attr_flags::EXTENDED_LENGTH);
        out.push(type_code);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(flags);
        out.push(type_code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(&value);
    Ok(())
}

fn encode_update(update: &Update, codec: Codec, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut withdrawn = Vec::new();
    encode_v4_prefixes(&update.withdrawn, &mut withdrawn);
    let mut attrs = Vec::new();
    for a in &update.attributes {
        encode_attribute(a, codec, &mut attrs)?;
    }
    for field in [&withdrawn, &attrs] {
        if field.len() > usize::from(u16::MAX) {
            return Err(EncodeError::FieldTooLong { len: field.len() });
        }
    }
    out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    out.extend_from_slice(&withdrawn);
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&attrs);
    encode_v4_prefixes(&update.nlri, out);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// A bounds-checked cursor: every read returns `None` past the end instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|s| s.first().copied())
    }

    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
    }

    fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        let a: [u8; 4] = s.try_into().ok()?;
        Some(u32::from_be_bytes(a))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
}

/// Decodes one message from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds no complete message yet (but a complete, valid header is
/// checked as soon as it is there), or the message and the number of octets it used.
pub fn decode_message(buf: &[u8], codec: Codec) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        // Reject a bad marker early: no valid stream can continue from there.
        let n = buf.len().min(MARKER.len());
        if buf.get(..n) != MARKER.get(..n) {
            return Err(DecodeError::ConnectionNotSynchronized);
        }
        return Ok(None);
    };
    let mut r = Reader::new(header);
    if r.take(16) != Some(&MARKER[..]) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let length = r.u16().unwrap_or(0);
    let msg_type = r.u8().unwrap_or(0);
    let len = usize::from(length);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(DecodeError::BadMessageLength { length });
    }
    let length_ok = match msg_type {
        msg_type::OPEN => len >= HEADER_LEN + 10,
        msg_type::UPDATE => len >= HEADER_LEN + 4,
        msg_type::NOTIFICATION => len >= HEADER_LEN + 2,
        msg_type::KEEPALIVE => len == HEADER_LEN,
        msg_type::ROUTE_REFRESH => len == HEADER_LEN + 4,
        _ => return Err(DecodeError::BadMessageType { msg_type }),
    };
    if !length_ok {
        return Err(DecodeError::BadMessageLength { length });
    }
    let Some(body) = buf.get(HEADER_LEN..len) else {
        return Ok(None);
    };
    let msg = match msg_type {
        msg_type::OPEN => Message::Open(decode_open(body)?),
        msg_type::UPDATE => Message::Update(decode_update(body, codec)?),
        msg_type::NOTIFICATION => {
            let mut r = Reader::new(body);
            let code = r.u8().unwrap_or(0);
            let subcode = r.u8().unwrap_or(0);
            Message::Notification(Notification::new(code, subcode, r.rest().to_vec()))
        }
        msg_type::KEEPALIVE => Message::Keepalive,
        _ => {
            let mut r = Reader::new(body);
            Message::RouteRefresh(RouteRefresh {
                afi: r.u16().unwrap_or(0),
                reserved: r.u8().unwrap_or(0),
                safi: r.u8().unwrap_or(0),
            })
        }
    };
    Ok(Some((msg, len)))
}

/// Decodes exactly one message; trailing or missing octets are a length error.
pub fn decode_exact(buf: &[u8], codec: Codec) -> Result<Message, DecodeError> {
    let declared = buf
        .get(16..18)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    match decode_message(buf, codec)? {
        Some((msg, used)) if used == buf.len() => Ok(msg),
        _ => Err(DecodeError::BadMessageLength { length: declared }),
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let malformed = |reason| DecodeError::MalformedOpen { reason };
    let mut r = Reader::new(body);
    let version = r.u8().ok_or(malformed("truncated fixed fields"))?;
    if version != BGP_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let my_as = r.u16().ok_or(malformed("truncated fixed fields"))?;
    let hold_time = r.u16().ok_or(malformed("truncated fixed fields"))?;
    let bgp_id = Ipv4Addr::from(r.u32().ok_or(malformed("truncated fixed fields"))?);
    let opt_len = r.u8().ok_or(malformed("truncated fixed fields"))?;
    if my_as == 0 {
        return Err(DecodeError::BadPeerAs { asn: 0 });
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::UnacceptableHoldTime { hold_time });
    }
    if bgp_id.is_unspecified() {
        return Err(DecodeError::BadBgpIdentifier { id: bgp_id });
    }
    if usize::from(opt_len) != r.remaining() {
        return Err(malformed(
            "optional parameters length disagrees with message length",
        ));
    }
    let mut capabilities = Vec::new();
    while !r.is_empty() {
        let param_type = r.u8().ok_or(malformed("truncated optional parameter"))?;
        let param_len = r.u8().ok_or(malformed("truncated optional parameter"))?;
        let value = r
            .take(usize::from(param_len))
            .ok_or(malformed("optional parameter overruns the message"))?;
        if param_type != 2 {
            return Err(DecodeError::UnsupportedOptionalParameter { param_type });
        }
        decode_capabilities(value, &mut capabilities)?;
    }
    for cap in &capabilities {
        if let Capability::FourOctetAs(0) = cap {
            return Err(DecodeError::BadPeerAs { asn: 0 });
        }
    }
    Ok(Open {
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn decode_capabilities(buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let malformed = |reason| DecodeError::MalformedOpen { reason };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let code = r.u8().ok_or(malformed("truncated capability"))?;
        let len = r.u8().ok_or(malformed("truncated capability"))?;
        let value = r
            .take(usize::from(len))
            .ok_or(malformed("capability overruns its parameter"))?;
        let mut v = Reader::new(value);
        let cap = match code {
            cap_code::MULTIPROTOCOL => {
                if value.len() != 4 {
                    return Err(malformed("multiprotocol capability length is not 4"));
                }
                let afi = v.u16().unwrap_or(0);
                let _reserved = v.u8();
                let safi = v.u8().unwrap_or(0);
                Capability::Multiprotocol(AfiSafi { afi, safi })
            }
            cap_code::ROUTE_REFRESH => {
                if !value.is_empty() {
                    return Err(malformed("route refresh capability length is not 0"));
                }
                Capability::RouteRefresh
            }
            cap_code::FOUR_OCTET_AS => {
                if value.len() != 4 {
                    return Err(malformed("4-octet AS capability length is not 4"));
                }
                Capability::FourOctetAs(v.u32().unwrap_or(0))
            }
            cap_code::GRACEFUL_RESTART => {
                if value.len() < 2 || !(value.len() - 2).is_multiple_of(4) {
                    return Err(malformed(
                        "graceful restart capability length is not 2 + 4n",
                    ));
                }
                let head = v.u16().unwrap_or(0);
                let mut families = Vec::new();
                while let (Some(afi), Some(safi), Some(flags)) = (v.u16(), v.u8(), v.u8()) {
                    families.push(GracefulRestartFamily {
                        afi_safi: AfiSafi { afi, safi },
                        forwarding_preserved: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            _ => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        };
        out.push(cap);
    }
    Ok(())
}

/// Parses a run of (length, prefix) NLRI entries of a family with `max_len` bits.
fn decode_prefixes<T>(
    buf: &[u8],
    max_len: u8,
    build: impl Fn(&[u8], u8) -> Option<T>,
) -> Result<Vec<T>, &'static str> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8().ok_or("truncated prefix")?;
        if len > max_len {
            return Err("prefix length too long for the address family");
        }
        let bytes = r
            .take(usize::from(len).div_ceil(8))
            .ok_or("prefix overruns the field")?;
        out.push(build(bytes, len).ok_or("invalid prefix")?);
    }
    Ok(out)
}

fn decode_v4_prefixes(buf: &[u8]) -> Result<Vec<Prefix>, &'static str> {
    decode_prefixes(buf, 32, |bytes, len| {
        let mut a = [0u8; 4];
        a.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Prefix::masked(IpAddr::V4(Ipv4Addr::from(a)), len)
    })
}

fn decode_v6_prefixes(buf: &[u8]) -> Result<Vec<Prefix>, &'static str> {
    decode_prefixes(buf, 128, |bytes, len| {
        let mut a = [0u8; 16];
        a.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Prefix::masked(IpAddr::V6(Ipv6Addr::from(a)), len)
    })
}

fn decode_update(body: &[u8], codec: Codec) -> Result<Update, DecodeError> {
    let mut r = Reader::new(body);
    let too_long = DecodeError::MalformedAttributeList {
        reason: "withdrawn routes or attribute length exceeds the message",
    };
    let wlen = r.u16().ok_or(too_long.clone())?;
    let withdrawn_bytes = r.take(usize::from(wlen)).ok_or(too_long.clone())?;
    let alen = r.u16().ok_or(too_long.clone())?;
    let attr_bytes = r.take(usize::from(alen)).ok_or(too_long)?;
    let nlri_bytes = r.rest();

    let withdrawn = decode_v4_prefixes(withdrawn_bytes)
        .map_err(|reason| DecodeError::InvalidNetworkField { reason })?;
    let attributes = decode_attributes(attr_bytes, codec)?;
    let nlri = decode_v4_prefixes(nlri_bytes)
        .map_err(|reason| DecodeError::InvalidNetworkField { reason })?;

    let has = |t: u8| attributes.iter().any(|a| a.type_code() == t);
    let mp_reach = has(attr_type::MP_REACH_NLRI);
    let mut required: Vec<u8> = Vec::new();
    if !nlri.is_empty() || mp_reach {
        required.extend([attr_type::ORIGIN, attr_type::AS_PATH]);
    }
    if !nlri.is_empty() {
        required.push(attr_type::NEXT_HOP);
    }
    if let Some(&type_code) = required.iter().find(|&&t| !has(t)) {
        return Err(DecodeError::MissingWellKnownAttribute { type_code });
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

/// The flag bits (optional, transitive) each known attribute must carry, and whether the
/// partial bit is allowed (only for optional transitive attributes).
fn expected_flags(type_code: u8) -> Option<u8> {
    use attr_flags::{OPTIONAL, TRANSITIVE};
    match type_code {
        attr_type::ORIGIN
        | attr_type::AS_PATH
        | attr_type::NEXT_HOP
        | attr_type::LOCAL_PREF
        | attr_type::ATOMIC_AGGREGATE => Some(TRANSITIVE),
        attr_type::MULTI_EXIT_DISC | attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI => {
            Some(OPTIONAL)
        }
        attr_type::AGGREGATOR | attr_type::COMMUNITIES => Some(OPTIONAL | TRANSITIVE),
        _ => None,
    }
}

fn decode_attributes(buf: &[u8], codec: Codec) -> Result<Vec<PathAttribute>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out: Vec<PathAttribute> = Vec::new();
    let mut seen = [false; 256];
    while !r.is_empty() {
        let start = r.pos;
        let truncated = DecodeError::MalformedAttributeList {
            reason: "attribute overruns the attribute list",
        };
        let flags = r.u8().ok_or(truncated.clone())?;
        let type_code = r.u8().ok_or(truncated.clone())?;
        let len = if flags & attr_flags::EXTENDED_LENGTH != 0 {
            r.u16().ok_or(truncated.clone())?
        } else {
            u16::from(r.u8().ok_or(truncated.clone())?)
        };
        let value = r.take(usize::from(len)).ok_or(truncated)?;
        let raw = buf.get(start..r.pos).unwrap_or(&[]).to_vec();
        let seen_slot = &mut seen[usize::from(type_code)];
        if *seen_slot {
            return Err(DecodeError::MalformedAttributeList {
                reason: "attribute appears twice",
            });
        }
        *seen_slot = true;
        out.push(decode_attribute(flags, type_code, value, raw, codec)?);
    }
    Ok(out)
}

fn decode_asn(r: &mut Reader<'_>, codec: Codec) -> Option<u32> {
    if codec.four_octet_as {
        r.u32()
    } else {
        r.u16().map(u32::from)
    }
}

fn decode_attribute(
    flags: u8,
    type_code: u8,
    value: &[u8],
    raw: Vec<u8>,
    codec: Codec,
) -> Result<PathAttribute, DecodeError> {
    use attr_flags::{OPTIONAL, PARTIAL, TRANSITIVE};
    let Some(expected) = expected_flags(type_code) else {
        if flags & OPTIONAL == 0 {
            return Err(DecodeError::UnrecognizedWellKnownAttribute {
                type_code,
                attribute: raw,
            });
        }
        return Ok(PathAttribute::Unknown {
            flags: flags & !attr_flags::EXTENDED_LENGTH,
            type_code,
            value: value.to_vec(),
        });
    };
    let partial_ok = expected == OPTIONAL | TRANSITIVE;
    if flags & (OPTIONAL | TRANSITIVE) != expected || (!partial_ok && flags & PARTIAL != 0) {
        return Err(DecodeError::AttributeFlags {
            type_code,
            attribute: raw,
        });
    }
    let length_error = |raw: Vec<u8>| DecodeError::AttributeLength {
        type_code,
        attribute: raw,
    };
    let mut v = Reader::new(value);
    let attr = match type_code {
        attr_type::ORIGIN => {
            if value.len() != 1 {
                return Err(length_error(raw));
            }
            match v.u8() {
                Some(0) => PathAttribute::Origin(Origin::Igp),
                Some(1) => PathAttribute::Origin(Origin::Egp),
                Some(2) => PathAttribute::Origin(Origin::Incomplete),
                _ => return Err(DecodeError::InvalidOrigin { attribute: raw }),
            }
        }
        attr_type::AS_PATH => {
            let width = if codec.four_octet_as { 4 } else { 2 };
            let mut segments = Vec::new();
            while !v.is_empty() {
                let malformed = |reason| DecodeError::MalformedAsPath { reason };
                let kind = match v.u8() {
                    Some(1) => AsSegmentKind::Set,
                    Some(2) => AsSegmentKind::Sequence,
                    Some(3) => AsSegmentKind::ConfedSequence,
                    Some(4) => AsSegmentKind::ConfedSet,
                    _ => return Err(malformed("unknown segment type")),
                };
                let count = v.u8().ok_or(malformed("truncated segment header"))?;
                if count == 0 {
                    return Err(malformed("empty segment"));
                }
                if v.remaining() < usize::from(count) * width {
                    return Err(malformed("segment overruns the attribute"));
                }
                let asns = (0..count)
                    .filter_map(|_| decode_asn(&mut v, codec))
                    .collect();
                segments.push(AsSegment { kind, asns });
            }
            PathAttribute::AsPath(segments)
        }
        attr_type::NEXT_HOP => {
            let Some(nh) = v.u32().filter(|_| value.len() == 4) else {
                return Err(length_error(raw));
            };
            let nh = Ipv4Addr::from(nh);
            if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                return Err(DecodeError::InvalidNextHop { attribute: raw });
            }
            PathAttribute::NextHop(nh)
        }
        attr_type::MULTI_EXIT_DISC | attr_type::LOCAL_PREF => {
            let Some(x) = v.u32().filter(|_| value.len() == 4) else {
                return Err(length_error(raw));
            };
            if type_code == attr_type::LOCAL_PREF {
                PathAttribute::LocalPref(x)
            } else {
                PathAttribute::MultiExitDisc(x)
            }
        }
        attr_type::ATOMIC_AGGREGATE => {
            if !value.is_empty() {
                return Err(length_error(raw));
            }
            PathAttribute::AtomicAggregate
        }
        attr_type::AGGREGATOR => {
            let expected_len = if codec.four_octet_as { 8 } else { 6 };
            if value.len() != expected_len {
                return Err(length_error(raw));
            }
            let asn = decode_asn(&mut v, codec).unwrap_or(0);
            let address = Ipv4Addr::from(v.u32().unwrap_or(0));
            PathAttribute::Aggregator { asn, address }
        }
        attr_type::COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_error(raw));
            }
            PathAttribute::Communities(
                value
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        attr_type::MP_REACH_NLRI => decode_mp_reach(flags, value, raw)?,
        _ => decode_mp_unreach(flags, value, raw)?,
    };
    Ok(attr)
}

fn decode_mp_reach(flags: u8, value: &[u8], raw: Vec<u8>) -> Result<PathAttribute, DecodeError> {
    let type_code = attr_type::MP_REACH_NLRI;
    let err = |reason, raw| DecodeError::OptionalAttribute {
        type_code,
        attribute: raw,
        reason,
    };
    let mut v = Reader::new(value);
    let (Some(afi), Some(safi), Some(nh_len)) = (v.u16(), v.u8(), v.u8()) else {
        return Err(err("truncated AFI/SAFI/next hop length", raw));
    };
    let Some(nh) = v.take(usize::from(nh_len)) else {
        return Err(err("next hop overruns the attribute", raw));
    };
    // RFC 4760 calls this octet Reserved; RFC 2858 counted SNPAs there. Skip any SNPAs.
    let Some(snpa_count) = v.u8() else {
        return Err(err("missing reserved octet", raw));
    };
    for _ in 0..snpa_count {
        let Some(snpa_len) = v.u8() else {
            return Err(err("truncated SNPA", raw));
        };
        if v.take(usize::from(snpa_len).div_ceil(2)).is_none() {
            return Err(err("truncated SNPA", raw));
        }
    }
    let nlri = v.rest();
    let af = AfiSafi { afi, safi };
    let reach = if af == AfiSafi::IPV4_UNICAST {
        let next_hop = match <[u8; 4]>::try_from(nh) {
            Ok(a) => Ipv4Addr::from(a),
            Err(_) => return Err(err("IPv4 next hop length is not 4", raw)),
        };
        if next_hop.is_unspecified() || next_hop.is_multicast() || next_hop.is_broadcast() {
            return Err(err("invalid IPv4 next hop", raw));
        }
        let nlri = decode_v4_prefixes(nlri).map_err(|reason| err(reason, raw.clone()))?;
        MpReach::V4 { next_hop, nlri }
    } else if af == AfiSafi::IPV6_UNICAST {
        let (global, link_local) = match nh.len() {
            16 => (nh, None),
            32 => (nh.get(..16).unwrap_or(&[]), nh.get(16..)),
            _ => return Err(err("IPv6 next hop length is not 16 or 32", raw)),
        };
        let to_v6 = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
        let (Some(next_hop), link_local) = (to_v6(global), link_local.and_then(to_v6)) else {
            return Err(err("IPv6 next hop length is not 16 or 32", raw));
        };
        if next_hop.is_unspecified() || next_hop.is_multicast() {
            return Err(err("invalid IPv6 next hop", raw));
        }
        let nlri = decode_v6_prefixes(nlri).map_err(|reason| err(reason, raw.clone()))?;
        MpReach::V6 {
            next_hop,
            link_local,
            nlri,
        }
    } else {
        return Ok(PathAttribute::Unknown {
            flags: flags & !attr_flags::EXTENDED_LENGTH,
            type_code,
            value: value.to_vec(),
        });
    };
    Ok(PathAttribute::MpReach(reach))
}

fn decode_mp_unreach(flags: u8, value: &[u8], raw: Vec<u8>) -> Result<PathAttribute, DecodeError> {
    let type_code = attr_type::MP_UNREACH_NLRI;
    let err = |reason, raw| DecodeError::OptionalAttribute {
        type_code,
        attribute: raw,
        reason,
    };
    let mut v = Reader::new(value);
    let (Some(afi), Some(safi)) = (v.u16(), v.u8()) else {
        return Err(err("truncated AFI/SAFI", raw));
    };
    let withdrawn = v.rest();
    let af = AfiSafi { afi, safi };
    let unreach = if af == AfiSafi::IPV4_UNICAST {
        MpUnreach::V4(decode_v4_prefixes(withdrawn).map_err(|reason| err(reason, raw))?)
    } else if af == AfiSafi::IPV6_UNICAST {
        MpUnreach::V6(decode_v6_prefixes(withdrawn).map_err(|reason| err(reason, raw))?)
    } else {
        return Ok(PathAttribute::Unknown {
            flags: flags & !attr_flags::EXTENDED_LENGTH,
            type_code,
            value: value.to_vec(),
        });
    };
    Ok(PathAttribute::MpUnreach(unreach))
}

#[cfg(test)]
mod tests;

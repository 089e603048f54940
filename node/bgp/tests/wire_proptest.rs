//! Property tests for the codec: round trips both ways, and a fuzz-style decoder test fed random
//! and mutated bytes that must never panic and must pick the right NOTIFICATION class.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hybridnet_bgp::Prefix;
use hybridnet_bgp::wire::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32)
        .prop_map(|(a, l)| Prefix::masked(IpAddr::V4(Ipv4Addr::from(a)), l).unwrap())
}

fn v6_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Prefix::masked(IpAddr::V6(Ipv6Addr::from(a)), l).unwrap())
}

fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("valid next hop", |a| {
            !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast()
        })
}

fn unicast_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>()
        .prop_map(Ipv6Addr::from)
        .prop_filter("valid next hop", |a| {
            !a.is_unspecified() && !a.is_multicast()
        })
}

fn afi_safi() -> impl Strategy<Value = AfiSafi> {
    prop_oneof![
        Just(AfiSafi::IPV4_UNICAST),
        Just(AfiSafi::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| AfiSafi { afi, safi }),
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        afi_safi().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        (1u32..).prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..=4095,
            vec((afi_safi(), any::<bool>()), 0..4)
        )
            .prop_map(
                |(r, n, t, fams)| Capability::GracefulRestart(GracefulRestart {
                    restart_state: r,
                    notification: n,
                    restart_time: t,
                    families: fams
                        .into_iter()
                        .map(|(afi_safi, f)| GracefulRestartFamily {
                            afi_safi,
                            forwarding_preserved: f
                        })
                        .collect(),
                })
            ),
        (
            any::<u8>().prop_filter("unknown code", |c| ![1, 2, 64, 65].contains(c)),
            vec(any::<u8>(), 0..40)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        1u16..,
        prop_oneof![Just(0u16), 3u16..],
        1u32..,
        vec(capability(), 0..12),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
}

fn as_path(max_asn: u32) -> impl Strategy<Value = PathAttribute> {
    vec(
        (
            prop_oneof![
                Just(AsSegmentKind::Set),
                Just(AsSegmentKind::Sequence),
                Just(AsSegmentKind::ConfedSequence),
                Just(AsSegmentKind::ConfedSet),
            ],
            vec(0..=max_asn, 1..6),
        )
            .prop_map(|(kind, asns)| AsSegment { kind, asns }),
        0..4,
    )
    .prop_map(PathAttribute::AsPath)
}

fn attribute(max_asn: u32) -> impl Strategy<Value = PathAttribute> {
    prop_oneof![
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ]
        .prop_map(PathAttribute::Origin),
        as_path(max_asn),
        unicast_v4().prop_map(PathAttribute::NextHop),
        any::<u32>().prop_map(PathAttribute::MultiExitDisc),
        any::<u32>().prop_map(PathAttribute::LocalPref),
        Just(PathAttribute::AtomicAggregate),
        (0..=max_asn, any::<u32>()).prop_map(|(asn, a)| PathAttribute::Aggregator {
            asn,
            address: Ipv4Addr::from(a)
        }),
        vec(any::<u32>(), 1..80).prop_map(PathAttribute::Communities),
        (unicast_v4(), vec(v4_prefix(), 0..8))
            .prop_map(|(next_hop, nlri)| PathAttribute::MpReach(MpReach::V4 { next_hop, nlri })),
        (
            unicast_v6(),
            proptest::option::of(any::<u128>().prop_map(Ipv6Addr::from)),
            vec(v6_prefix(), 0..8)
        )
            .prop_map(
                |(next_hop, link_local, nlri)| PathAttribute::MpReach(MpReach::V6 {
                    next_hop,
                    link_local,
                    nlri
                })
            ),
        vec(v4_prefix(), 0..8).prop_map(|w| PathAttribute::MpUnreach(MpUnreach::V4(w))),
        vec(v6_prefix(), 0..8).prop_map(|w| PathAttribute::MpUnreach(MpUnreach::V6(w))),
        (0u8..4, 16u8.., vec(any::<u8>(), 0..300)).prop_map(|(bits, type_code, value)| {
            PathAttribute::Unknown {
                flags: 0x80 | (bits << 5),
                type_code,
                value,
            }
        }),
    ]
}

/// An UPDATE that satisfies the well-known attribute rules (unique attributes, the mandatory
/// ones present when something is announced).
fn update(max_asn: u32) -> impl Strategy<Value = Update> {
    (
        vec(v4_prefix(), 0..10),
        vec(attribute(max_asn), 0..8),
        vec(v4_prefix(), 0..10),
        unicast_v4(),
    )
        .prop_map(|(withdrawn, attrs, nlri, nh)| {
            let mut attributes: Vec<PathAttribute> = Vec::new();
            for a in attrs {
                if !attributes.iter().any(|b| b.type_code() == a.type_code()) {
                    attributes.push(a);
                }
            }
            let has = |attrs: &[PathAttribute], t| attrs.iter().any(|a| a.type_code() == t);
            let mp_reach = has(&attributes, attr_type::MP_REACH_NLRI);
            if !nlri.is_empty() || mp_reach {
                if !has(&attributes, attr_type::ORIGIN) {
                    attributes.push(PathAttribute::Origin(Origin::Igp));
                }
                if !has(&attributes, attr_type::AS_PATH) {
                    attributes.push(PathAttribute::AsPath(vec![]));
                }
            }
            if !nlri.is_empty() && !has(&attributes, attr_type::NEXT_HOP) {
                attributes.push(PathAttribute::NextHop(nh));
            }
            Update {
                withdrawn,
                attributes,
                nlri,
            }
        })
}

fn message(max_asn: u32) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(max_asn).prop_map(Message::Update),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..64))
            .prop_map(|(c, s, d)| Message::Notification(Notification::new(c, s, d))),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(afi, reserved, safi)| {
            Message::RouteRefresh(RouteRefresh {
                afi,
                reserved,
                safi,
            })
        }),
    ]
}

const FOUR: Codec = Codec {
    four_octet_as: true,
};
const TWO: Codec = Codec {
    four_octet_as: false,
};

/// The NOTIFICATION a decode error produces must be one RFC 4271 allows for that message type,
/// and any attribute it quotes must be a piece of the input.
fn check_error_class(input: &[u8], err: &DecodeError) -> Result<(), TestCaseError> {
    let n = err.notification();
    let msg_type = input.get(18).copied();
    let marker_ok = input.iter().take(16).all(|&b| b == 0xff);
    match n.code {
        notif::MESSAGE_HEADER_ERROR => {
            prop_assert!((1..=3).contains(&n.subcode), "{err:?}");
            if n.subcode == notif::CONNECTION_NOT_SYNCHRONIZED {
                prop_assert!(!marker_ok);
            }
        }
        notif::OPEN_MESSAGE_ERROR => {
            prop_assert!(marker_ok);
            prop_assert_eq!(msg_type, Some(msg_type::OPEN));
            prop_assert!([0, 1, 2, 3, 4, 6].contains(&n.subcode), "{err:?}");
        }
        notif::UPDATE_MESSAGE_ERROR => {
            prop_assert!(marker_ok);
            prop_assert_eq!(msg_type, Some(msg_type::UPDATE));
            prop_assert!(
                [1, 2, 3, 4, 5, 6, 8, 9, 10, 11].contains(&n.subcode),
                "{err:?}"
            );
            if [2, 4, 5, 6, 8, 9].contains(&n.subcode) {
                prop_assert!(
                    input.windows(n.data.len()).any(|w| w == n.data.as_slice()),
                    "attribute data {:02x?} not in the input",
                    n.data
                );
            }
        }
        other => prop_assert!(false, "decode error with code {other}: {err:?}"),
    }
    Ok(())
}

/// Any decode outcome is fine as long as errors are classed right and successes are stable:
/// what decodes re-encodes, and the re-encoding decodes to the same message.
fn check_decode(input: &[u8], codec: Codec) -> Result<(), TestCaseError> {
    match decode_message(input, codec) {
        Ok(None) => prop_assert!(input.len() < MAX_MESSAGE_LEN),
        Ok(Some((msg, used))) => {
            prop_assert!(used <= input.len() && used >= HEADER_LEN);
            let again = msg.encode(codec).map_err(|e| {
                TestCaseError::fail(format!("decoded message does not re-encode: {e}"))
            })?;
            prop_assert_eq!(decode_exact(&again, codec), Ok(msg));
        }
        Err(e) => check_error_class(input, &e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_encode_is_identity(msg in message(u32::MAX)) {
        let Ok(bytes) = msg.encode(FOUR) else {
            // Only over-long messages are refused; the generator keeps them rare.
            return Ok(());
        };
        prop_assert_eq!(decode_exact(&bytes, FOUR), Ok(msg));
    }

    #[test]
    fn encode_decode_is_identity_on_encoder_output(msg in message(u32::MAX)) {
        if let Ok(bytes) = msg.encode(FOUR) {
            let decoded = decode_exact(&bytes, FOUR).unwrap();
            prop_assert_eq!(decoded.encode(FOUR), Ok(bytes));
        }
    }

    #[test]
    fn two_octet_sessions_round_trip(msg in message(u32::from(u16::MAX))) {
        if let Ok(bytes) = msg.encode(TWO) {
            prop_assert_eq!(decode_exact(&bytes, TWO), Ok(msg));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..200), four in any::<bool>()) {
        check_decode(&bytes, Codec { four_octet_as: four })?;
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        msg_type in 1u8..=5,
        body in vec(any::<u8>(), 0..300),
        four in any::<bool>(),
    ) {
        let mut bytes = MARKER.to_vec();
        bytes.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        bytes.push(msg_type);
        bytes.extend_from_slice(&body);
        check_decode(&bytes, Codec { four_octet_as: four })?;
    }

    #[test]
    fn mutated_messages_never_panic(
        msg in message(u32::MAX),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        fix_length in any::<bool>(),
    ) {
        let Ok(mut bytes) = msg.encode(FOUR) else { return Ok(()) };
        for (at, byte, op) in edits {
            // Edit only the body so the decoder gets past the header most of the time.
            let body_len = bytes.len() - HEADER_LEN;
            let i = HEADER_LEN + if body_len == 0 { 0 } else { at.index(body_len) };
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 if i < bytes.len() => bytes[i] ^= 1 << (byte % 8),
                2 => bytes.insert(i, byte),
                _ => bytes.truncate(i.max(HEADER_LEN)),
            }
        }
        if fix_length {
            let len = bytes.len().min(u16::MAX as usize) as u16;
            bytes[16..18].copy_from_slice(&len.to_be_bytes());
        }
        check_decode(&bytes, FOUR)?;
    }
}

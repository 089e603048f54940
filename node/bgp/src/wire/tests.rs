//! Byte-for-byte encoder tests against hand-derived RFC 4271/4760/6793/4724 layouts, and one
//! decoder test per NOTIFICATION class. Every expected byte string is written out field by field.

use super::*;
use crate::Prefix;

const FOUR: Codec = Codec {
    four_octet_as: true,
};
const TWO: Codec = Codec {
    four_octet_as: false,
};

fn v4(s: &str) -> Prefix {
    let p = Prefix::parse_route(s).unwrap();
    assert!(p.is_ipv4(), "{s} is not IPv4");
    p
}

fn v6(s: &str) -> Prefix {
    let p = Prefix::parse_route(s).unwrap();
    assert!(!p.is_ipv4(), "{s} is not IPv6");
    p
}

/// Marker, length and type: the 19-octet header of RFC 4271 section 4.1.
fn header(len: u16, msg_type: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(msg_type);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn roundtrip(msg: &Message, codec: Codec, expected: &[u8]) {
    let bytes = msg.encode(codec).unwrap();
    assert_eq!(bytes, expected, "encoding of {msg:?}");
    assert_eq!(&decode_exact(&bytes, codec).unwrap(), msg);
}

fn decode_err(bytes: &[u8], codec: Codec) -> DecodeError {
    match decode_message(bytes, codec) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
    }
}

#[test]
fn keepalive_is_a_bare_header() {
    let expected = cat(&[
        &[0xff; 16], // marker
        &[0x00, 19], // length 19
        &[4],        // type KEEPALIVE
    ]);
    roundtrip(&Message::Keepalive, FOUR, &expected);
}

fn node_open() -> Open {
    Open::new(
        65001,
        90,
        Ipv4Addr::new(198, 18, 1, 2),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::FourOctetAs(65001),
            Capability::GracefulRestart(GracefulRestart {
                restart_state: true,
                notification: false,
                restart_time: 300,
                families: vec![
                    GracefulRestartFamily {
                        afi_safi: AfiSafi::IPV4_UNICAST,
                        forwarding_preserved: true,
                    },
                    GracefulRestartFamily {
                        afi_safi: AfiSafi::IPV6_UNICAST,
                        forwarding_preserved: true,
                    },
                ],
            }),
        ],
    )
}

#[test]
fn open_with_capabilities_matches_rfc_layout() {
    let expected = cat(&[
        &header(61, 1), // 19 + 10 fixed + 32 optional parameters
        &[4],           // version 4
        &[0xfd, 0xe9],  // My AS 65001
        &[0x00, 90],    // hold time 90
        &[198, 18, 1, 2],
        &[32],         // optional parameters length
        &[2, 30],      // parameter type 2 (capabilities), 30 octets
        &[1, 4],       // capability 1 multiprotocol, length 4
        &[0, 1, 0, 1], // AFI 1 IPv4, reserved, SAFI 1 unicast
        &[1, 4],
        &[0, 2, 0, 1], // AFI 2 IPv6, reserved, SAFI 1
        &[65, 4],      // capability 65: 4-octet AS (RFC 6793)
        &[0, 0, 0xfd, 0xe9],
        &[64, 10],        // capability 64: graceful restart (RFC 4724), 2 + 2*4 octets
        &[0x81, 0x2c],    // R bit set, restart time 300 (0x12c)
        &[0, 1, 1, 0x80], // AFI 1 SAFI 1, F bit (forwarding preserved)
        &[0, 2, 1, 0x80], // AFI 2 SAFI 1, F bit
    ]);
    let open = node_open();
    assert_eq!(open.asn(), 65001);
    assert!(open.four_octet_as());
    roundtrip(&Message::Open(open), FOUR, &expected);
}

#[test]
fn open_with_large_as_sends_as_trans() {
    // 4200000001 = 0xFA56EA01 does not fit 2 octets: My AS carries AS_TRANS 23456 = 0x5BA0.
    let open = Open::new(
        4_200_000_001,
        0,
        Ipv4Addr::new(10, 0, 0, 1),
        vec![Capability::FourOctetAs(4_200_000_001)],
    );
    let expected = cat(&[
        &header(37, 1),
        &[4],
        &[0x5b, 0xa0], // AS_TRANS
        &[0, 0],       // hold time 0: no keepalives
        &[10, 0, 0, 1],
        &[8],    // optional parameters length
        &[2, 6], // capabilities parameter
        &[65, 4, 0xfa, 0x56, 0xea, 0x01],
    ]);
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_001);
    roundtrip(&Message::Open(open), FOUR, &expected);
}

#[test]
fn open_without_capabilities_defaults_to_ipv4_unicast() {
    let open = Open::new(65000, 180, Ipv4Addr::new(10, 0, 0, 1), vec![]);
    let expected = cat(&[
        &header(29, 1),
        &[4, 0xfd, 0xe8, 0, 180, 10, 0, 0, 1],
        &[0], // no optional parameters
    ]);
    assert_eq!(open.families(), vec![AfiSafi::IPV4_UNICAST]);
    assert!(!open.four_octet_as());
    roundtrip(&Message::Open(open), FOUR, &expected);
}

fn ipv4_announce() -> Update {
    Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(vec![AsSegment {
                kind: AsSegmentKind::Sequence,
                asns: vec![65001],
            }]),
            PathAttribute::NextHop(Ipv4Addr::new(198, 18, 1, 2)),
            PathAttribute::Communities(vec![NO_EXPORT]),
        ],
        nlri: vec![v4("198.19.0.5/32"), v4("198.19.0.0/24")],
    }
}

#[test]
fn ipv4_update_matches_rfc_layout() {
    let expected = cat(&[
        &header(59, 2),
        &[0, 0],                      // withdrawn routes length 0
        &[0, 27],                     // total path attribute length
        &[0x40, 1, 1, 0],             // ORIGIN: well-known transitive, len 1, IGP
        &[0x40, 2, 6],                // AS_PATH: well-known transitive, len 6
        &[2, 1],                      // segment AS_SEQUENCE with 1 ASN
        &[0, 0, 0xfd, 0xe9],          // 65001 as 4 octets (RFC 6793)
        &[0x40, 3, 4, 198, 18, 1, 2], // NEXT_HOP
        &[0xc0, 8, 4],                // COMMUNITIES: optional transitive, len 4
        &[0xff, 0xff, 0xff, 0x01],    // NO_EXPORT
        &[32, 198, 19, 0, 5],         // NLRI 198.19.0.5/32
        &[24, 198, 19, 0],            // NLRI 198.19.0.0/24
    ]);
    roundtrip(&Message::Update(ipv4_announce()), FOUR, &expected);
}

#[test]
fn ipv4_update_with_two_octet_as_path() {
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(vec![AsSegment {
                kind: AsSegmentKind::Sequence,
                asns: vec![65001],
            }]),
            PathAttribute::NextHop(Ipv4Addr::new(198, 18, 1, 2)),
        ],
        nlri: vec![v4("198.19.0.0/16")],
        ..Update::default()
    };
    let expected = cat(&[
        &header(44, 2),
        &[0, 0],
        &[0, 18],
        &[0x40, 1, 1, 0],
        &[0x40, 2, 4, 2, 1, 0xfd, 0xe9], // AS_SEQUENCE [65001] with 2-octet ASNs
        &[0x40, 3, 4, 198, 18, 1, 2],
        &[16, 198, 19],
    ]);
    roundtrip(&Message::Update(update), TWO, &expected);
}

#[test]
fn large_as_is_as_trans_on_a_two_octet_session() {
    let update = Update {
        attributes: vec![PathAttribute::AsPath(vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![4_200_000_001],
        }])],
        ..Update::default()
    };
    let bytes = Message::Update(update).encode(TWO).unwrap();
    assert_eq!(&bytes[23..], &[0x40, 2, 4, 2, 1, 0x5b, 0xa0]);
}

#[test]
fn ipv6_mp_reach_matches_rfc_4760_layout() {
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(vec![AsSegment {
                kind: AsSegmentKind::Sequence,
                asns: vec![65001],
            }]),
            PathAttribute::MpReach(MpReach::V6 {
                next_hop: "fd00::2".parse().unwrap(),
                link_local: None,
                nlri: vec![v6("fd00:1::5/128"), v6("fd00:1::/64")],
            }),
        ],
        ..Update::default()
    };
    let expected = cat(&[
        &header(86, 2),
        &[0, 0],
        &[0, 63],
        &[0x40, 1, 1, 0],
        &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9],
        &[0x80, 14, 47], // MP_REACH_NLRI: optional non-transitive, len 47
        &[0, 2, 1],      // AFI 2, SAFI 1
        &[16],           // next hop length 16 (global only)
        &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], // fd00::2
        &[0],            // reserved
        &[128, 0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5], // fd00:1::5/128
        &[64, 0xfd, 0, 0, 1, 0, 0, 0, 0], // fd00:1::/64
    ]);
    roundtrip(&Message::Update(update), FOUR, &expected);
}

#[test]
fn ipv6_next_hop_with_link_local_is_32_octets() {
    let update = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(vec![]),
            PathAttribute::MpReach(MpReach::V6 {
                next_hop: "fd00::2".parse().unwrap(),
                link_local: Some("fe80::2".parse().unwrap()),
                nlri: vec![],
            }),
        ],
        ..Update::default()
    };
    let bytes = Message::Update(update.clone()).encode(FOUR).unwrap();
    // ORIGIN (4) + empty AS_PATH (3), then MP_REACH header: flags, type, length 37.
    assert_eq!(&bytes[30..37], &[0x80, 14, 37, 0, 2, 1, 32]);
    assert_eq!(decode_exact(&bytes, FOUR).unwrap(), Message::Update(update));
}

#[test]
fn withdrawals_match_rfc_layout() {
    let v4_withdraw = Update {
        withdrawn: vec![v4("198.19.0.5/32")],
        ..Update::default()
    };
    let expected = cat(&[
        &header(28, 2),
        &[0, 5],              // withdrawn routes length
        &[32, 198, 19, 0, 5], // 198.19.0.5/32
        &[0, 0],              // no attributes
    ]);
    roundtrip(&Message::Update(v4_withdraw), FOUR, &expected);

    let v6_withdraw = Update {
        attributes: vec![PathAttribute::MpUnreach(MpUnreach::V6(vec![v6(
            "fd00:1::5/128",
        )]))],
        ..Update::default()
    };
    let expected = cat(&[
        &header(46, 2),
        &[0, 0],
        &[0, 23],
        &[0x80, 15, 20], // MP_UNREACH_NLRI, len 20
        &[0, 2, 1],      // AFI 2 SAFI 1
        &[128, 0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
    ]);
    roundtrip(&Message::Update(v6_withdraw), FOUR, &expected);
}

#[test]
fn end_of_rib_markers() {
    // RFC 4724 section 2: IPv4 EoR is an UPDATE with nothing in it.
    let eor4 = Update::end_of_rib(Family::Ipv4Unicast);
    roundtrip(
        &Message::Update(eor4.clone()),
        FOUR,
        &cat(&[&header(23, 2), &[0, 0, 0, 0]]),
    );
    assert_eq!(eor4.end_of_rib_family(), Some(Family::Ipv4Unicast));
    // Other families: only an empty MP_UNREACH_NLRI.
    let eor6 = Update::end_of_rib(Family::Ipv6Unicast);
    roundtrip(
        &Message::Update(eor6.clone()),
        FOUR,
        &cat(&[&header(29, 2), &[0, 0, 0, 6], &[0x80, 15, 3, 0, 2, 1]]),
    );
    assert_eq!(eor6.end_of_rib_family(), Some(Family::Ipv6Unicast));
    assert_eq!(ipv4_announce().end_of_rib_family(), None);
}

#[test]
fn notification_and_route_refresh() {
    roundtrip(
        &Message::Notification(Notification::cease(notif::CEASE_ADMINISTRATIVE_SHUTDOWN)),
        FOUR,
        &cat(&[&header(21, 3), &[6, 2]]),
    );
    roundtrip(
        &Message::Notification(Notification::new(2, 1, vec![0, 4])),
        FOUR,
        &cat(&[&header(23, 3), &[2, 1, 0, 4]]),
    );
    roundtrip(
        &Message::RouteRefresh(RouteRefresh {
            afi: 2,
            reserved: 0,
            safi: 1,
        }),
        FOUR,
        &cat(&[&header(23, 5), &[0, 2, 0, 1]]),
    );
}

#[test]
fn long_attribute_uses_extended_length() {
    // 70 communities = 280 octets > 255: the extended length bit and a 2-octet length.
    let update = Update {
        attributes: vec![PathAttribute::Communities((0..70).collect())],
        ..Update::default()
    };
    let bytes = Message::Update(update.clone()).encode(FOUR).unwrap();
    assert_eq!(&bytes[23..27], &[0xd0, 8, 0x01, 0x18]);
    assert_eq!(decode_exact(&bytes, FOUR).unwrap(), Message::Update(update));
}

#[test]
fn encoder_refuses_invalid_messages() {
    let too_big = Update {
        nlri: vec![v4("198.19.0.0/32"); 1000],
        ..Update::default()
    };
    assert!(matches!(
        Message::Update(too_big).encode(FOUR),
        Err(EncodeError::MessageTooLong { .. })
    ));
    let empty_segment = Update {
        attributes: vec![PathAttribute::AsPath(vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![],
        }])],
        ..Update::default()
    };
    assert_eq!(
        Message::Update(empty_segment).encode(FOUR),
        Err(EncodeError::BadSegmentLength { len: 0 })
    );
    let mut open = node_open();
    open.capabilities = vec![Capability::GracefulRestart(GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: 5000,
        families: vec![],
    })];
    assert_eq!(
        Message::Open(open).encode(FOUR),
        Err(EncodeError::RestartTimeTooLong { restart_time: 5000 })
    );
}

#[test]
fn partial_input_asks_for_more() {
    let bytes = Message::Update(ipv4_announce()).encode(FOUR).unwrap();
    for n in 0..bytes.len() {
        assert_eq!(
            decode_message(&bytes[..n], FOUR),
            Ok(None),
            "prefix of {n} octets"
        );
    }
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let (msg, used) = decode_message(&two, FOUR).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(msg, Message::Update(ipv4_announce()));
}

// --- one test per NOTIFICATION class ------------------------------------------------------

#[test]
fn header_errors() {
    let mut bad_marker = header(19, 4);
    bad_marker[3] = 0;
    assert_eq!(
        decode_err(&bad_marker, FOUR),
        DecodeError::ConnectionNotSynchronized
    );
    assert_eq!(
        decode_err(&[0xff, 0xfe], FOUR),
        DecodeError::ConnectionNotSynchronized
    );

    let e = decode_err(&header(18, 4), FOUR);
    assert_eq!(e.notification(), Notification::new(1, 2, vec![0, 18]));
    let e = decode_err(&header(4097, 2), FOUR);
    assert_eq!(e.notification(), Notification::new(1, 2, vec![0x10, 0x01]));
    // KEEPALIVE must be exactly 19, OPEN at least 29, ROUTE-REFRESH exactly 23.
    for (len, t) in [(20, 4), (28, 1), (22, 2), (20, 3), (24, 5)] {
        let mut b = header(len, t);
        b.resize(usize::from(len), 0);
        assert_eq!(decode_err(&b, FOUR).class(), (1, 2), "len {len} type {t}");
    }

    let e = decode_err(&header(19, 9), FOUR);
    assert_eq!(e.notification(), Notification::new(1, 3, vec![9]));
    assert_eq!(decode_err(&header(19, 0), FOUR).class(), (1, 3));
}

fn open_bytes(version: u8, my_as: u16, hold: u16, id: [u8; 4], opt: &[u8]) -> Vec<u8> {
    let len = (29 + opt.len()) as u16;
    cat(&[
        &header(len, 1),
        &[version],
        &my_as.to_be_bytes(),
        &hold.to_be_bytes(),
        &id,
        &[opt.len() as u8],
        opt,
    ])
}

#[test]
fn open_errors() {
    let e = decode_err(&open_bytes(3, 65000, 90, [1, 1, 1, 1], &[]), FOUR);
    assert_eq!(e.notification(), Notification::new(2, 1, vec![0, 4]));
    let e = decode_err(&open_bytes(4, 0, 90, [1, 1, 1, 1], &[]), FOUR);
    assert_eq!(e.class(), (2, 2));
    let e = decode_err(
        &open_bytes(4, 65000, 90, [1, 1, 1, 1], &[2, 6, 65, 4, 0, 0, 0, 0]),
        FOUR,
    );
    assert_eq!(e, DecodeError::BadPeerAs { asn: 0 });
    let e = decode_err(&open_bytes(4, 65000, 90, [0, 0, 0, 0], &[]), FOUR);
    assert_eq!(e.class(), (2, 3));
    for hold in [1, 2] {
        let e = decode_err(&open_bytes(4, 65000, hold, [1, 1, 1, 1], &[]), FOUR);
        assert_eq!(e.class(), (2, 6));
    }
    // Optional parameter type 1 (authentication, deprecated) is not supported.
    let e = decode_err(&open_bytes(4, 65000, 90, [1, 1, 1, 1], &[1, 0]), FOUR);
    assert_eq!(e.class(), (2, 4));
    // Parameter length overruns, capability length overruns, wrong capability length.
    for opt in [
        &[2, 5, 1, 4, 0][..],
        &[2, 2, 1, 4][..],
        &[2, 5, 65, 3, 0, 0, 1][..],
        &[2, 3, 64, 1, 0][..],
    ] {
        let e = decode_err(&open_bytes(4, 65000, 90, [1, 1, 1, 1], opt), FOUR);
        assert_eq!(e.class(), (2, 0), "{opt:?}");
    }
    // Optional parameters length disagreeing with the message length.
    let mut b = open_bytes(4, 65000, 90, [1, 1, 1, 1], &[2, 0]);
    b[28] = 5;
    assert_eq!(decode_err(&b, FOUR).class(), (2, 0));
}

fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let len = (23 + withdrawn.len() + attrs.len() + nlri.len()) as u16;
    cat(&[
        &header(len, 2),
        &(withdrawn.len() as u16).to_be_bytes(),
        withdrawn,
        &(attrs.len() as u16).to_be_bytes(),
        attrs,
        nlri,
    ])
}

const ORIGIN: &[u8] = &[0x40, 1, 1, 0];
const AS_PATH: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 198, 18, 1, 2];
const NLRI: &[u8] = &[24, 198, 19, 0];

fn update_err(attrs: &[&[u8]], nlri: &[u8]) -> DecodeError {
    decode_err(&update_bytes(&[], &attrs.concat(), nlri), FOUR)
}

#[test]
fn update_malformed_attribute_list() {
    // Withdrawn length larger than the message.
    let mut b = update_bytes(&[], &[], &[]);
    b[20] = 9;
    assert_eq!(decode_err(&b, FOUR).class(), (3, 1));
    // Attribute length larger than the message.
    let mut b = update_bytes(&[], &[], &[]);
    b[22] = 1;
    assert_eq!(decode_err(&b, FOUR).class(), (3, 1));
    // Attribute overruns the attribute list.
    assert_eq!(update_err(&[&[0x40, 1, 5, 0]], &[]).class(), (3, 1));
    // Duplicate attribute.
    assert_eq!(
        update_err(&[ORIGIN, ORIGIN, AS_PATH, NEXT_HOP], NLRI).class(),
        (3, 1)
    );
}

#[test]
fn update_attribute_errors_carry_the_attribute() {
    let unknown_well_known = [0x40, 99, 1, 7];
    let e = update_err(&[&unknown_well_known], &[]);
    assert_eq!(
        e.notification(),
        Notification::new(3, 2, unknown_well_known.to_vec())
    );

    let e = update_err(&[ORIGIN, NEXT_HOP], NLRI);
    assert_eq!(e.notification(), Notification::new(3, 3, vec![2]));
    let e = update_err(&[ORIGIN, AS_PATH], NLRI);
    assert_eq!(e.notification(), Notification::new(3, 3, vec![3]));
    let mp = [0x80, 14, 9, 0, 1, 1, 4, 198, 18, 1, 2, 0];
    // MP_REACH needs ORIGIN and AS_PATH.
    let e = update_err(&[ORIGIN, &mp], &[]);
    assert_eq!(e.class(), (3, 3));

    // ORIGIN marked optional; COMMUNITIES marked well-known; partial bit on NEXT_HOP.
    let bad_flags = [0xc0, 1, 1, 0];
    let e = update_err(&[&bad_flags], &[]);
    assert_eq!(
        e.notification(),
        Notification::new(3, 4, bad_flags.to_vec())
    );
    assert_eq!(
        update_err(&[&[0x40, 8, 4, 0, 0, 0, 1]], &[]).class(),
        (3, 4)
    );
    assert_eq!(
        update_err(&[&[0x60, 3, 4, 198, 18, 1, 2]], &[]).class(),
        (3, 4)
    );

    let bad_len = [0x40, 1, 2, 0, 0];
    let e = update_err(&[&bad_len], &[]);
    assert_eq!(e.notification(), Notification::new(3, 5, bad_len.to_vec()));
    for attr in [
        &[0x40, 3, 5, 1, 2, 3, 4, 5][..],    // NEXT_HOP of 5 octets
        &[0x80, 4, 3, 0, 0, 1][..],          // MED of 3
        &[0x40, 6, 1, 0][..],                // ATOMIC_AGGREGATE with a value
        &[0xc0, 7, 6, 0, 1, 1, 1, 1, 1][..], // AGGREGATOR of 6 on a 4-octet session
        &[0xc0, 8, 3, 0, 0, 1][..],          // COMMUNITIES not a multiple of 4
        &[0xc0, 8, 0][..],                   // empty COMMUNITIES (RFC 7606)
    ] {
        assert_eq!(update_err(&[attr], &[]).class(), (3, 5), "{attr:?}");
    }

    let bad_origin = [0x40, 1, 1, 3];
    let e = update_err(&[&bad_origin, AS_PATH, NEXT_HOP], NLRI);
    assert_eq!(
        e.notification(),
        Notification::new(3, 6, bad_origin.to_vec())
    );

    for nh in [[0, 0, 0, 0], [224, 0, 0, 1], [255, 255, 255, 255]] {
        let attr = cat(&[&[0x40, 3, 4], &nh]);
        let e = update_err(&[ORIGIN, AS_PATH, &attr], NLRI);
        assert_eq!(e.notification(), Notification::new(3, 8, attr.clone()));
    }

    for attr in [
        &[0x80, 14, 3, 0, 2, 1][..],                        // truncated
        &[0x80, 14, 9, 0, 2, 1, 4, 1, 2, 3, 4, 0][..],      // IPv6 with a 4-octet next hop
        &[0x80, 14, 9, 0, 1, 1, 4, 0, 0, 0, 0, 0][..],      // IPv4 next hop 0.0.0.0
        &[0x80, 14, 10, 0, 1, 1, 4, 1, 2, 3, 4, 0, 33][..], // NLRI /33
        &[0x80, 15, 5, 0, 2, 1, 129, 0][..],                // MP_UNREACH /129
        &[0x80, 15, 5, 0, 2, 1, 64, 0][..],                 // MP_UNREACH prefix truncated
    ] {
        let e = update_err(&[ORIGIN, AS_PATH, attr], &[]);
        assert_eq!(
            e.notification(),
            Notification::new(3, 9, attr.to_vec()),
            "{attr:?}"
        );
    }

    assert_eq!(
        update_err(&[ORIGIN, AS_PATH, NEXT_HOP], &[33, 1, 2, 3, 4, 5]).class(),
        (3, 10)
    );
    assert_eq!(
        update_err(&[ORIGIN, AS_PATH, NEXT_HOP], &[24, 1, 2]).class(),
        (3, 10)
    );
    // Truncated withdrawn route.
    let b = update_bytes(&[32, 1, 2], &[], &[]);
    assert_eq!(decode_err(&b, FOUR).class(), (3, 10));

    for path in [
        &[0x40, 2, 2, 5, 1][..],       // segment type 5
        &[0x40, 2, 2, 2, 0][..],       // empty segment
        &[0x40, 2, 4, 2, 1, 0, 1][..], // 4-octet ASN cut short
        &[0x40, 2, 1, 2][..],          // truncated segment header
    ] {
        assert_eq!(
            update_err(&[ORIGIN, path, NEXT_HOP], NLRI).class(),
            (3, 11),
            "{path:?}"
        );
    }
}

#[test]
fn lenient_inputs_decode_to_the_canonical_model() {
    // Extended length on a short attribute, host bits set in a prefix.
    let b = update_bytes(
        &[],
        &cat(&[&[0x50, 1, 0, 1, 0], AS_PATH, NEXT_HOP]),
        &[24, 198, 19, 0],
    );
    let Message::Update(u) = decode_exact(&b, FOUR).unwrap() else {
        panic!("not an update")
    };
    assert_eq!(u.attributes[0], PathAttribute::Origin(Origin::Igp));
    let b = update_bytes(&[], &cat(&[ORIGIN, AS_PATH, NEXT_HOP]), &[23, 198, 19, 1]);
    let Message::Update(u) = decode_exact(&b, FOUR).unwrap() else {
        panic!("not an update")
    };
    assert_eq!(u.nlri, vec![v4("198.19.0.0/23")]);
    // Unknown optional attributes and MP for other families pass through opaquely.
    let other_family_mp = [0x80, 14, 5, 0, 1, 128, 0, 0]; // AFI 1 SAFI 128 (VPN)
    let b = update_bytes(
        &[],
        &cat(&[&[0xe0, 32, 2, 1, 2], ORIGIN, AS_PATH, &other_family_mp]),
        &[],
    );
    let Message::Update(u) = decode_exact(&b, FOUR).unwrap() else {
        panic!("not an update")
    };
    assert_eq!(
        u.attributes[0],
        PathAttribute::Unknown {
            flags: 0xe0,
            type_code: 32,
            value: vec![1, 2]
        }
    );
    assert_eq!(
        u.attributes[3],
        PathAttribute::Unknown {
            flags: 0x80,
            type_code: 14,
            value: vec![0, 1, 128, 0, 0]
        }
    );
    assert_eq!(
        Message::Update(u).encode(FOUR).unwrap(),
        b,
        "opaque attributes re-encode unchanged"
    );
}

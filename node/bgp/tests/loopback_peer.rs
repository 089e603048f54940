//! The speaker's driver against a scripted peer on loopback (no root needed): checks what
//! bird and gobgpd do not show directly — message order (OPEN, KEEPALIVE, full table, then
//! End-of-RIB per family), incremental UPDATEs, the NOTIFICATION answering a malformed
//! UPDATE, reconnection with a flap counted, and Cease on shutdown; and the passive side:
//! inbound sessions, refusal of unknown sources, and connection collision resolution with the
//! exact NOTIFICATION on the losing connection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hybridnet_bgp::wire::{
    AfiSafi, Capability, Codec, Family, Message, MpReach, MpUnreach, NO_EXPORT, Notification, Open,
    PathAttribute, Update, decode_message, notif,
};
use hybridnet_bgp::{
    Announcement, BgpSpeaker, Communities, Direction, PeerConfig, SpeakerConfig, State,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const STEP: Duration = Duration::from_secs(10);

struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
    codec: Codec,
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = tokio::time::timeout(STEP, listener.accept())
            .await
            .expect("speaker did not connect")
            .unwrap();
        Peer {
            stream,
            buf: Vec::new(),
            codec: Codec::default(),
        }
    }

    /// The next message, or None when the speaker closed the connection.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some((msg, used)) = decode_message(&self.buf, self.codec).unwrap() {
                self.buf.drain(..used);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(STEP, self.stream.read(&mut chunk))
                .await
                .expect("no message from the speaker")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn new(stream: TcpStream) -> Peer {
        Peer {
            stream,
            buf: Vec::new(),
            codec: Codec::default(),
        }
    }

    /// Connects to the speaker's listener from `source`.
    async fn connect(source: Ipv4Addr, speaker: std::net::SocketAddr) -> Peer {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::new(IpAddr::V4(source), 0))
            .unwrap();
        let stream = tokio::time::timeout(STEP, socket.connect(speaker))
            .await
            .expect("connect to the speaker timed out")
            .unwrap();
        Peer::new(stream)
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, msg: Message) {
        self.send_raw(&msg.encode(Codec::default()).unwrap()).await;
    }

    /// Accepts the OPEN, answers with ours and completes the handshake.
    async fn handshake(&mut self) -> Open {
        let Some(Message::Open(open)) = self.recv().await else {
            panic!("expected OPEN")
        };
        self.send(Message::Open(peer_open(Ipv4Addr::new(198, 18, 0, 1))))
            .await;
        self.send(Message::Keepalive).await;
        assert_eq!(self.recv().await, Some(Message::Keepalive));
        open
    }

    /// UPDATEs until End-of-RIB for both families, skipping keepalives.
    async fn updates_until_eor(&mut self) -> Vec<Update> {
        let mut out = Vec::new();
        let mut eor = BTreeSet::new();
        while eor.len() < 2 {
            match self.recv().await {
                Some(Message::Update(u)) => match u.end_of_rib_family() {
                    Some(f) => {
                        eor.insert(f);
                    }
                    None => {
                        assert!(eor.is_empty(), "routes after End-of-RIB: {u:?}");
                        out.push(u);
                    }
                },
                Some(Message::Keepalive) => {}
                other => panic!("expected UPDATE, got {other:?}"),
            }
        }
        out
    }

    async fn next_update(&mut self) -> Update {
        loop {
            match self.recv().await {
                Some(Message::Update(u)) => return u,
                Some(Message::Keepalive) => {}
                other => panic!("expected UPDATE, got {other:?}"),
            }
        }
    }

    async fn next_notification(&mut self) -> Notification {
        loop {
            match self.recv().await {
                Some(Message::Notification(n)) => return n,
                Some(_) => {}
                None => panic!("connection closed without NOTIFICATION"),
            }
        }
    }
}

/// The scripted peer's OPEN (AS 65000, both families, 4-octet AS) with BGP Identifier `id`.
fn peer_open(id: Ipv4Addr) -> Open {
    Open::new(
        65000,
        30,
        id,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::FourOctetAs(65000),
        ],
    )
}

fn ann(p: &str, c: Communities) -> Announcement {
    Announcement::new(p.parse().unwrap(), c)
}

fn announced(updates: &[Update]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for u in updates {
        out.extend(u.nlri.iter().map(|p| p.to_string()));
        for a in &u.attributes {
            if let PathAttribute::MpReach(MpReach::V6 { nlri, .. }) = a {
                out.extend(nlri.iter().map(|p| p.to_string()));
            }
        }
    }
    out
}

fn withdrawn(u: &Update) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = u.withdrawn.iter().map(|p| p.to_string()).collect();
    for a in &u.attributes {
        if let PathAttribute::MpUnreach(MpUnreach::V6(w)) = a {
            out.extend(w.iter().map(|p| p.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn driver_sends_table_then_eor_then_increments_and_answers_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = SpeakerConfig::new(65001, Ipv4Addr::new(198, 18, 0, 2));
    config.local_v4 = Some(Ipv4Addr::LOCALHOST);
    config.local_v6 = Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    config.peer_port = port;
    config.retry_initial = Duration::from_millis(100);
    let speaker = BgpSpeaker::new(config).unwrap();
    speaker.set_routes(
        [
            ann("198.19.0.5/32", Communities::NoExport),
            ann("198.19.0.0/24", Communities::None),
            ann("fd00:1::5/128", Communities::NoExport),
        ]
        .into(),
    );
    let mut p = PeerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 65000);
    p.graceful_restart_seconds = Some(90);
    speaker.set_peers(vec![p]).unwrap();

    let mut peer = Peer::accept(&listener).await;
    let open = peer.handshake().await;
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.graceful_restart().unwrap().restart_time, 90);

    let table = peer.updates_until_eor().await;
    assert_eq!(
        announced(&table),
        ["198.19.0.0/24", "198.19.0.5/32", "fd00:1::5/128"]
            .map(String::from)
            .into()
    );
    for u in &table {
        let no_export = u
            .attributes
            .iter()
            .any(|a| *a == PathAttribute::Communities(vec![NO_EXPORT]));
        let subnet = u.nlri.iter().any(|p| p.len() == 24);
        assert_eq!(no_export, !subnet, "{u:?}");
    }
    assert!(
        speaker
            .wait_for(STEP, |s| s.peer_states()[0].prefixes_announced == 3)
            .await
    );

    // Incremental change: one withdrawal, one new route.
    speaker.set_routes(
        [
            ann("198.19.0.0/24", Communities::None),
            ann("fd00:1::5/128", Communities::NoExport),
            ann("198.19.0.7/32", Communities::NoExport),
        ]
        .into(),
    );
    let w = peer.next_update().await;
    assert_eq!(withdrawn(&w), ["198.19.0.5/32".to_string()].into());
    let a = peer.next_update().await;
    assert_eq!(announced(&[a]), ["198.19.0.7/32".to_string()].into());

    // A malformed UPDATE (NLRI without NEXT_HOP) is answered with UPDATE error / missing
    // well-known attribute, and the session restarts.
    let bad = Update {
        attributes: vec![
            PathAttribute::Origin(hybridnet_bgp::wire::Origin::Igp),
            PathAttribute::AsPath(vec![]),
        ],
        nlri: vec![hybridnet_bgp::Prefix::parse_canonical("10.0.0.0/8").unwrap()],
        ..Update::default()
    };
    peer.send(Message::Update(bad)).await;
    let n = peer.next_notification().await;
    assert_eq!((n.code, n.subcode, n.data.clone()), (3, 3, vec![3]), "{n}");
    assert_eq!(peer.recv().await, None, "speaker closes after NOTIFICATION");

    let mut peer = Peer::accept(&listener).await;
    let open = peer.handshake().await;
    assert!(
        !open.graceful_restart().unwrap().restart_state,
        "R bit only on the first session"
    );
    let table = peer.updates_until_eor().await;
    assert_eq!(announced(&table).len(), 3);
    let states = speaker.peer_states();
    assert_eq!(states[0].flaps, 1);
    assert_eq!(states[0].state, State::Established);

    // Garbage on the wire: connection not synchronized.
    peer.send_raw(&[0u8; 19]).await;
    let n = peer.next_notification().await;
    assert_eq!((n.code, n.subcode), (1, 1));

    // Graceful shutdown: Cease / administrative shutdown.
    let mut peer = Peer::accept(&listener).await;
    peer.handshake().await;
    peer.updates_until_eor().await;
    let shutdown = tokio::spawn(speaker.shutdown(STEP));
    let n = peer.next_notification().await;
    assert_eq!(
        (n.code, n.subcode),
        (notif::CEASE, notif::CEASE_ADMINISTRATIVE_SHUTDOWN)
    );
    shutdown.await.unwrap();
}

#[tokio::test]
async fn families_the_peer_lacks_are_not_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = SpeakerConfig::new(65001, Ipv4Addr::new(198, 18, 0, 2));
    config.local_v4 = Some(Ipv4Addr::LOCALHOST);
    config.local_v6 = Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    config.peer_port = listener.local_addr().unwrap().port();
    let speaker = BgpSpeaker::new(config).unwrap();
    let v6: hybridnet_bgp::Prefix = "fd00:1::5/128".parse().unwrap();
    speaker.set_routes(
        [
            ann("198.19.0.5/32", Communities::NoExport),
            Announcement::new(v6, Communities::NoExport),
        ]
        .into(),
    );
    speaker
        .set_peers(vec![PeerConfig::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            65000,
        )])
        .unwrap();
    let mut peer = Peer::accept(&listener).await;
    let Some(Message::Open(_)) = peer.recv().await else {
        panic!("expected OPEN")
    };
    // An old-style peer: no capabilities, so IPv4 unicast only and 2-octet ASNs.
    peer.send(Message::Open(Open::new(
        65000,
        0,
        Ipv4Addr::new(198, 18, 0, 1),
        vec![],
    )))
    .await;
    peer.send(Message::Keepalive).await;
    assert_eq!(peer.recv().await, Some(Message::Keepalive));
    peer.codec = Codec {
        four_octet_as: false,
    };
    let mut routes = Vec::new();
    loop {
        let u = peer.next_update().await;
        if u.end_of_rib_family() == Some(Family::Ipv4Unicast) {
            break;
        }
        routes.push(u);
    }
    assert_eq!(announced(&routes), ["198.19.0.5/32".to_string()].into());
    // The IPv6 pod is ready as far as this session goes: it cannot carry IPv6.
    assert!(
        speaker
            .wait_for(STEP, |s| s.is_announced_to_required_peers(&v6))
            .await
    );
}

/// The speaker's router id in these tests.
const SPEAKER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// A free loopback port for the speaker's listener.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A speaker on loopback that listens on a free port (and connects to `peer_port`).
async fn listening_speaker(peer_port: u16) -> (BgpSpeaker, std::net::SocketAddr) {
    let mut config = SpeakerConfig::new(65001, SPEAKER_ID);
    config.local_v4 = Some(Ipv4Addr::LOCALHOST);
    config.peer_port = peer_port;
    config.listen_port = Some(free_port());
    config.retry_initial = Duration::from_millis(100);
    let speaker = BgpSpeaker::new(config).unwrap();
    assert!(
        speaker.wait_for(STEP, |s| !s.listening().is_empty()).await,
        "listener never bound"
    );
    let addr = speaker.listening()[0];
    (speaker, addr)
}

#[tokio::test]
async fn inbound_session_from_a_configured_peer_and_unknown_sources_refused() {
    let (speaker, addr) = listening_speaker(free_port()).await;
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    speaker.set_routes([ann("198.19.0.5/32", Communities::NoExport)].into());
    let mut p = PeerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 65000);
    p.passive = true;
    speaker.set_peers(vec![p]).unwrap();

    // 127.0.0.2 is not a peer: the connection is closed at once, nothing is sent.
    let mut stranger = Peer::connect(Ipv4Addr::new(127, 0, 0, 2), addr).await;
    assert_eq!(stranger.recv().await, None, "unknown source must be closed");
    assert_eq!(speaker.refused_connections(), 1);
    assert_eq!(speaker.peer_states()[0].state, State::Active);

    // The configured peer connects: the passive session comes up on its connection.
    let mut peer = Peer::connect(Ipv4Addr::LOCALHOST, addr).await;
    let open = peer.handshake().await;
    assert_eq!(open.bgp_id, SPEAKER_ID);
    let table = peer.updates_until_eor().await;
    assert_eq!(announced(&table), ["198.19.0.5/32".to_string()].into());
    assert!(
        speaker
            .wait_for(STEP, |s| s.peer_states()[0].state == State::Established)
            .await
    );
    let state = &speaker.peer_states()[0];
    assert_eq!(state.connection, Some(Direction::Inbound));
    assert_eq!(state.collisions, 0);

    // A second connection while Established: Cease / connection collision, then closed; the
    // session stays.
    let mut again = Peer::connect(Ipv4Addr::LOCALHOST, addr).await;
    let n = again.next_notification().await;
    assert_eq!(
        (n.code, n.subcode),
        (notif::CEASE, notif::CEASE_CONNECTION_COLLISION)
    );
    assert_eq!(again.recv().await, None);
    let state = &speaker.peer_states()[0];
    assert_eq!(state.state, State::Established);
    assert_eq!(state.collisions, 1);
    assert_eq!(state.flaps, 0);

    // The peer drops the session; a passive speaker waits for it to come back.
    drop(peer);
    assert!(
        speaker
            .wait_for(STEP, |s| s.peer_states()[0].flaps == 1)
            .await
    );
    let mut back = Peer::connect(Ipv4Addr::LOCALHOST, addr).await;
    back.handshake().await;
    back.updates_until_eor().await;
    speaker.shutdown(STEP).await;
}

/// Both sides connect; both connections reach OpenConfirm; the speaker keeps the one opened by
/// the side with the higher BGP Identifier and closes the other with Cease / connection
/// collision resolution (RFC 4271 6.8).
async fn collision_case(peer_id: Ipv4Addr, kept: Direction) {
    let tor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (speaker, addr) = listening_speaker(tor.local_addr().unwrap().port()).await;
    speaker.set_routes([ann("198.19.0.0/24", Communities::None)].into());
    speaker
        .set_peers(vec![PeerConfig::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            65000,
        )])
        .unwrap();

    // The speaker's connection to us, and ours to it, both with OPENs sent.
    let mut outbound = Peer::accept(&tor).await;
    let Some(Message::Open(_)) = outbound.recv().await else {
        panic!("expected OPEN on the speaker's connection")
    };
    let mut inbound = Peer::connect(Ipv4Addr::LOCALHOST, addr).await;
    let Some(Message::Open(_)) = inbound.recv().await else {
        panic!("expected OPEN on our connection")
    };
    // Our OPEN on each: the speaker confirms each (KEEPALIVE), then resolves.
    outbound.send(Message::Open(peer_open(peer_id))).await;
    assert_eq!(outbound.recv().await, Some(Message::Keepalive));
    inbound.send(Message::Open(peer_open(peer_id))).await;
    assert_eq!(inbound.recv().await, Some(Message::Keepalive));

    let (mut winner, mut loser) = match kept {
        Direction::Outbound => (outbound, inbound),
        Direction::Inbound => (inbound, outbound),
    };
    let n = loser.next_notification().await;
    assert_eq!(
        (n.code, n.subcode),
        (notif::CEASE, notif::CEASE_CONNECTION_COLLISION),
        "{n}"
    );
    assert_eq!(loser.recv().await, None, "the losing connection is closed");
    winner.send(Message::Keepalive).await;
    let table = winner.updates_until_eor().await;
    assert_eq!(announced(&table), ["198.19.0.0/24".to_string()].into());
    assert!(
        speaker
            .wait_for(STEP, |s| s.peer_states()[0].state == State::Established)
            .await
    );
    let state = &speaker.peer_states()[0];
    assert_eq!(state.connection, Some(kept), "{state:?}");
    assert_eq!(state.collisions, 1);
    assert_eq!(state.flaps, 0);
    speaker.shutdown(STEP).await;
}

#[tokio::test]
async fn collision_with_a_higher_peer_identifier_keeps_the_peers_connection() {
    collision_case(Ipv4Addr::new(198, 18, 0, 9), Direction::Inbound).await;
}

#[tokio::test]
async fn collision_with_a_lower_peer_identifier_keeps_our_connection() {
    collision_case(Ipv4Addr::new(198, 18, 0, 1), Direction::Outbound).await;
}

/// A "ToR" whose accept queue is full: SYNs to it are dropped, so the speaker's connect hangs
/// in Connect until its timeout (what a lost SYN looks like). Returns the port and the
/// connection that fills the queue (keep it alive).
async fn black_hole() -> (TcpListener, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let filler = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    (listener, filler)
}

/// Our own attempt is in flight (Connect) when the peer's connection comes: both run; when our
/// attempt times out, or the peer's session is Established first, the peer's connection
/// becomes the session. No collision is counted: only one connection ever carried BGP.
async fn inbound_while_connecting(connect_timeout: Duration, wait_for_our_timeout: bool) {
    let (tor, _filler) = black_hole().await;
    let mut config = SpeakerConfig::new(65001, SPEAKER_ID);
    config.local_v4 = Some(Ipv4Addr::LOCALHOST);
    config.peer_port = tor.local_addr().unwrap().port();
    config.listen_port = Some(free_port());
    config.connect_timeout = connect_timeout;
    config.retry_initial = Duration::from_secs(30);
    let speaker = BgpSpeaker::new(config).unwrap();
    assert!(speaker.wait_for(STEP, |s| !s.listening().is_empty()).await);
    let addr = speaker.listening()[0];
    speaker.set_routes([ann("198.19.0.5/32", Communities::NoExport)].into());
    speaker
        .set_peers(vec![PeerConfig::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            65000,
        )])
        .unwrap();
    assert!(
        speaker
            .wait_for(STEP, |s| s.peer_states()[0].state == State::Connect)
            .await
    );

    let mut peer = Peer::connect(Ipv4Addr::LOCALHOST, addr).await;
    let Some(Message::Open(_)) = peer.recv().await else {
        panic!("expected OPEN")
    };
    peer.send(Message::Open(peer_open(Ipv4Addr::new(198, 18, 0, 1))))
        .await;
    assert_eq!(peer.recv().await, Some(Message::Keepalive));
    // Our attempt (to the black hole) is still pending: the scenario is set up before its
    // timeout, however slow this machine is.
    assert_eq!(
        speaker.peer_states()[0].state,
        State::Connect,
        "our attempt outlived the handshake (connect timeout {connect_timeout:?})"
    );
    if wait_for_our_timeout {
        // Our attempt times out; the peer's connection (in OpenConfirm) takes over at once
        // instead of waiting for the retry (30 s, longer than STEP).
        assert!(
            speaker
                .wait_for(STEP, |s| s.peer_states()[0].state == State::OpenConfirm)
                .await,
            "{:?}",
            speaker.peer_states()
        );
    }
    peer.send(Message::Keepalive).await;
    let table = peer.updates_until_eor().await;
    assert_eq!(announced(&table), ["198.19.0.5/32".to_string()].into());
    let state = &speaker.peer_states()[0];
    assert_eq!(state.state, State::Established);
    assert_eq!(state.connection, Some(Direction::Inbound));
    assert_eq!(state.collisions, 0);
    speaker.shutdown(STEP).await;
}

#[tokio::test]
async fn inbound_session_replaces_our_attempt_that_times_out() {
    // Long enough for the peer's handshake under load, far shorter than STEP and the retry.
    inbound_while_connecting(Duration::from_secs(3), true).await;
}

#[tokio::test]
async fn inbound_session_established_before_our_attempt_completes_wins() {
    inbound_while_connecting(Duration::from_secs(60), false).await;
}

/// A peer that advertised graceful restart and connects again while its session is still up
/// has restarted (RFC 4724 4.2): the old session ends (one flap), the new connection becomes
/// the session and gets the full table again. (Without the capability the new connection is
/// closed as a collision: see `inbound_session_from_a_configured_peer_and_unknown_sources_refused`.)
#[tokio::test]
async fn restarted_graceful_restart_peer_replaces_its_old_session() {
    let (speaker, addr) = listening_speaker(free_port()).await;
    speaker.set_routes([ann("198.19.0.5/32", Communities::NoExport)].into());
    let mut p = PeerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 65000);
    p.passive = true;
    speaker.set_peers(vec![p]).unwrap();
    let gr_open = || {
        let mut open = peer_open(Ipv4Addr::new(198, 18, 0, 1));
        open.capabilities.push(Capability::GracefulRestart(
            hybridnet_bgp::wire::GracefulRestart {
                restart_state: true,
                notification: false,
                restart_time: 120,
                families: vec![],
            },
        ));
        open
    };
    let handshake = |mut peer: Peer| async move {
        let Some(Message::Open(_)) = peer.recv().await else {
            panic!("expected OPEN")
        };
        peer.send(Message::Open(gr_open())).await;
        peer.send(Message::Keepalive).await;
        assert_eq!(peer.recv().await, Some(Message::Keepalive));
        let table = peer.updates_until_eor().await;
        assert_eq!(announced(&table), ["198.19.0.5/32".to_string()].into());
        peer
    };
    let mut old = handshake(Peer::connect(Ipv4Addr::LOCALHOST, addr).await).await;
    assert!(
        speaker
            .wait_for(STEP, |s| s.peer_states()[0].state == State::Established)
            .await
    );
    // The peer comes back on a new connection; the old one is closed without NOTIFICATION.
    let new = Peer::connect(Ipv4Addr::LOCALHOST, addr).await;
    assert_eq!(old.recv().await, None, "old connection closed");
    let _new = handshake(new).await;
    assert!(
        speaker
            .wait_for(STEP, |s| {
                let p = &s.peer_states()[0];
                p.state == State::Established && p.flaps == 1
            })
            .await,
        "{:?}",
        speaker.peer_states()
    );
    assert_eq!(speaker.peer_states()[0].collisions, 0);
    speaker.shutdown(STEP).await;
}

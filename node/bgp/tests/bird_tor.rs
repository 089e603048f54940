//! The speaker against Debian's bird2 as the top-of-rack router, in network namespaces the
//! tests create (root only; skipped with a reason otherwise, failing under CI=true).
//!
//! bird is the oracle: `birdc show route all` prints the AS_PATH segment type exactly (a set
//! would show braces) and the communities it received.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use hybridnet_bgp::{
    Announcement, BgpSpeaker, Communities, PeerConfig, Prefix, SpeakerConfig, State,
};

const ESTABLISH: Duration = Duration::from_secs(30);

struct Proto<'a> {
    name: &'a str,
    local: &'a str,
    neighbor: &'a str,
    channels: &'a [&'a str],
    password: Option<&'a str>,
    graceful_restart: bool,
    /// bird connects to the node too (no `passive on`), quickly.
    active: bool,
}

fn bird_config(protocols: &[Proto<'_>]) -> String {
    bird_config_with_id(TOR_V4, protocols)
}

fn bird_config_with_id(router_id: std::net::Ipv4Addr, protocols: &[Proto<'_>]) -> String {
    // The ToR also exports routes of its own, which the speaker must parse and drop.
    let mut c = format!(
        "router id {router_id};\nlog stderr all;\nprotocol device {{ }}\n\
         protocol static tor_routes4 {{ ipv4; route 198.18.99.0/24 blackhole; }}\n\
         protocol static tor_routes6 {{ ipv6; route fd00:99::/64 blackhole; }}\n"
    );
    for p in protocols {
        c.push_str(&format!(
            "protocol bgp {} {{\n  local {} as {TOR_AS};\n  neighbor {} as {NODE_AS};\n  error wait time 1, 2;\n",
            p.name, p.local, p.neighbor
        ));
        if p.active {
            c.push_str("  connect delay time 1;\n  connect retry time 2;\n");
        } else {
            c.push_str("  passive on;\n");
        }
        if let Some(pw) = p.password {
            c.push_str(&format!("  password \"{pw}\";\n"));
        }
        if p.graceful_restart {
            c.push_str("  graceful restart on;\n  graceful restart time 120;\n");
        } else {
            c.push_str("  graceful restart off;\n");
        }
        for ch in p.channels {
            c.push_str(&format!(
                "  {ch} {{ import all; export where source = RTS_STATIC; }};\n"
            ));
        }
        c.push_str("}\n");
    }
    c
}

fn v4_proto(graceful_restart: bool, password: Option<&'static str>) -> Proto<'static> {
    Proto {
        name: "node4",
        local: "198.18.0.1",
        neighbor: "198.18.0.2",
        channels: &["ipv4", "ipv6"],
        password,
        graceful_restart,
        active: false,
    }
}

fn v6_proto() -> Proto<'static> {
    Proto {
        name: "node6",
        local: "fd00::1",
        neighbor: "fd00::2",
        channels: &["ipv6"],
        password: None,
        graceful_restart: true,
        active: false,
    }
}

fn speaker_config() -> SpeakerConfig {
    let mut c = SpeakerConfig::new(NODE_AS, NODE_V4);
    c.local_v4 = Some(NODE_V4);
    c.local_v6 = Some(NODE_V6);
    c.connect_timeout = Duration::from_secs(2);
    c.retry_initial = Duration::from_millis(250);
    c.retry_max = Duration::from_secs(2);
    c
}

fn peer(address: &str, graceful_restart: Option<u16>) -> PeerConfig {
    let mut p = PeerConfig::new(ip(address), TOR_AS);
    p.graceful_restart_seconds = graceful_restart;
    p
}

fn ann(prefix: &str, communities: Communities) -> Announcement {
    Announcement::new(prefix.parse().unwrap(), communities)
}

/// BGP-mode pods (/32, /128, NO_EXPORT), subnet prefixes and a GlobalBGP pod (no community).
fn pod_and_subnet_routes() -> BTreeSet<Announcement> {
    [
        ann("198.19.0.5/32", Communities::NoExport),
        ann("198.19.0.6/32", Communities::NoExport),
        ann("198.19.0.0/24", Communities::None),
        ann("198.19.1.7/32", Communities::None),
        ann("fd00:1::5/128", Communities::NoExport),
        ann("fd00:1::/64", Communities::None),
    ]
    .into()
}

/// Paths bird learned from the node's sessions (not its own static routes).
async fn node_routes(bird: &Bird) -> Vec<BirdPath> {
    bird.routes()
        .await
        .into_iter()
        .filter(|p| p.protocol.starts_with("node"))
        .collect()
}

async fn wait_established(speaker: &BgpSpeaker, n: usize) {
    let ok = speaker
        .wait_for(ESTABLISH, |s| {
            let states = s.peer_states();
            states.len() == n && states.iter().all(|p| p.state == State::Established)
        })
        .await;
    assert!(ok, "sessions not established: {:#?}", speaker.peer_states());
}

/// Waits until bird holds exactly the expected prefixes from `protocol`, then checks each path.
async fn expect_bird_routes(bird: &Bird, protocol: &str, expected: &[Announcement]) {
    let want: BTreeSet<String> = expected.iter().map(|a| a.prefix.to_string()).collect();
    let paths = eventually(
        &format!("bird routes from {protocol} = {want:?}"),
        Duration::from_secs(20),
        || async {
            let paths: Vec<BirdPath> = bird
                .routes()
                .await
                .into_iter()
                .filter(|p| p.protocol == protocol)
                .collect();
            let got: BTreeSet<String> = paths.iter().map(|p| p.prefix.clone()).collect();
            if got == want {
                Ok(paths)
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    for a in expected {
        let prefix = a.prefix.to_string();
        let path = paths.iter().find(|p| p.prefix == prefix).unwrap();
        assert_eq!(
            path.as_path.as_deref(),
            Some("65001"),
            "{prefix}: AS_PATH must be the node AS as a sequence: {path:?}"
        );
        match a.communities {
            Communities::NoExport => assert_eq!(
                path.community.as_deref(),
                Some("(65535,65281)"),
                "{prefix}: NO_EXPORT expected: {path:?}"
            ),
            Communities::None => {
                assert_eq!(
                    path.community, None,
                    "{prefix}: no community expected: {path:?}"
                )
            }
        }
        let next_hop = if a.prefix.is_ipv4() {
            "198.18.0.2"
        } else {
            "fd00::2"
        };
        assert_eq!(
            path.next_hop.as_deref(),
            Some(next_hop),
            "{prefix}: {path:?}"
        );
    }
}

#[test]
fn announce_and_withdraw_against_bird() {
    if !may_run(
        "announce_and_withdraw_against_bird",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, node, dir) = (topo.tor.clone(), topo.node.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[v4_proto(true, None), v6_proto()]),
        )
        .await;
        let speaker = BgpSpeaker::new(speaker_config()).unwrap();
        speaker
            .set_peers(vec![
                peer("198.18.0.1", Some(120)),
                peer("fd00::1", Some(120)),
            ])
            .unwrap();
        let routes = pod_and_subnet_routes();
        speaker.set_routes(routes.clone());
        wait_established(&speaker, 2).await;
        assert!(bird.is_established("node4").await && bird.is_established("node6").await);

        let all: Vec<Announcement> = routes.iter().copied().collect();
        let v6: Vec<Announcement> = all
            .iter()
            .filter(|a| !a.prefix.is_ipv4())
            .copied()
            .collect();
        // The IPv4 session carries both families; the IPv6 session only IPv6 (bird's node6 has
        // only an ipv6 channel, so it offered only IPv6 unicast).
        expect_bird_routes(&bird, "node4", &all).await;
        expect_bird_routes(&bird, "node6", &v6).await;

        let states = speaker.peer_states();
        assert_eq!(states[0].address, ip("198.18.0.1"));
        assert_eq!(states[0].prefixes_announced, 6);
        assert_eq!(states[1].prefixes_announced, 2);
        assert!(
            states
                .iter()
                .all(|p| p.flaps == 0 && p.established_since.is_some())
        );
        for a in &routes {
            assert!(
                speaker.is_announced_to_required_peers(&a.prefix),
                "{}",
                a.prefix
            );
        }
        // The ToR's own routes arrived, were parsed, and were not installed.
        assert!(states.iter().all(|p| p.updates_received > 0), "{states:#?}");
        for (family, prefix) in [("-4", "198.18.99.0/24"), ("-6", "fd00:99::/64")] {
            let table = ns_exec(&node, &["ip", family, "route", "show", "table", "all"])
                .await
                .unwrap();
            assert!(
                !table.contains(prefix),
                "learned route {prefix} installed: {table}"
            );
        }
        let not_desired: Prefix = "198.19.9.9/32".parse().unwrap();
        assert!(!speaker.is_announced_to_required_peers(&not_desired));

        // Deleting pods withdraws their routes; the rest stays.
        let mut fewer = routes.clone();
        fewer.remove(&ann("198.19.0.5/32", Communities::NoExport));
        fewer.remove(&ann("fd00:1::5/128", Communities::NoExport));
        // A pod moving from a BGP-mode network to GlobalBGP changes its community.
        fewer.remove(&ann("198.19.0.6/32", Communities::NoExport));
        fewer.insert(ann("198.19.0.6/32", Communities::None));
        speaker.set_routes(fewer.clone());
        let all: Vec<Announcement> = fewer.iter().copied().collect();
        let v6: Vec<Announcement> = all
            .iter()
            .filter(|a| !a.prefix.is_ipv4())
            .copied()
            .collect();
        expect_bird_routes(&bird, "node4", &all).await;
        expect_bird_routes(&bird, "node6", &v6).await;
        assert!(!speaker.is_announced_to_required_peers(&"198.19.0.5/32".parse().unwrap()));

        // Graceful shutdown sends Cease: bird drops everything at once.
        speaker.shutdown(Duration::from_secs(5)).await;
        eventually(
            "bird to drop all routes after Cease",
            Duration::from_secs(10),
            || async {
                let n = node_routes(&bird).await.len();
                if n == 0 {
                    Ok(())
                } else {
                    Err(format!("{n} paths left"))
                }
            },
        )
        .await;
        assert!(!bird.is_established("node4").await);
        let info = bird
            .birdc(&["show", "protocols", "all", "node4"])
            .await
            .unwrap();
        assert!(
            info.contains("Administrative shutdown") || info.contains("Received: Administrative"),
            "bird should report our Cease: {info}"
        );
    });
}

/// Drops the speaker (connections close without NOTIFICATION, like a crash) and checks the
/// ToR's routes while no session is up; returns the routes seen during the gap.
async fn restart_gap(bird: &Bird, speaker: BgpSpeaker) -> Vec<BirdPath> {
    drop(speaker);
    eventually(
        "bird to notice the session is gone",
        Duration::from_secs(10),
        || async {
            let info = bird.protocol_info("node4").await;
            if info.contains("Established") {
                Err(info)
            } else {
                Ok(())
            }
        },
    )
    .await;
    node_routes(bird).await
}

#[test]
fn restart_within_graceful_restart_time_keeps_routes() {
    if !may_run(
        "restart_within_graceful_restart_time_keeps_routes",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        let bird = Bird::start(&tor, &dir, &bird_config(&[v4_proto(true, None)])).await;
        let routes = pod_and_subnet_routes();
        let all: Vec<Announcement> = routes.iter().copied().collect();

        let speaker = BgpSpeaker::new(speaker_config()).unwrap();
        speaker
            .set_peers(vec![peer("198.18.0.1", Some(120))])
            .unwrap();
        speaker.set_routes(routes.clone());
        wait_established(&speaker, 1).await;
        expect_bird_routes(&bird, "node4", &all).await;

        let during_gap = restart_gap(&bird, speaker).await;
        let kept: BTreeSet<String> = during_gap.iter().map(|p| p.prefix.clone()).collect();
        let want: BTreeSet<String> = all.iter().map(|a| a.prefix.to_string()).collect();
        assert_eq!(kept, want, "bird must keep our routes while we restart");
        let info = bird
            .birdc(&["show", "protocols", "all", "node4"])
            .await
            .unwrap();
        assert!(
            info.to_lowercase().contains("restart"),
            "bird should be in graceful restart: {info}"
        );

        // The restarted speaker re-establishes and re-announces; after its End-of-RIB bird
        // keeps exactly the routes it re-announced (a route deleted meanwhile is flushed).
        let mut after = routes.clone();
        after.remove(&ann("198.19.0.5/32", Communities::NoExport));
        let speaker = BgpSpeaker::new(speaker_config()).unwrap();
        speaker
            .set_peers(vec![peer("198.18.0.1", Some(120))])
            .unwrap();
        speaker.set_routes(after.clone());
        wait_established(&speaker, 1).await;
        let after: Vec<Announcement> = after.iter().copied().collect();
        expect_bird_routes(&bird, "node4", &after).await;
        drop(speaker);
    });
}

#[test]
fn restart_without_graceful_restart_loses_routes() {
    if !may_run(
        "restart_without_graceful_restart_loses_routes",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        // The control case for the test above: no graceful restart capability, same drop.
        let bird = Bird::start(&tor, &dir, &bird_config(&[v4_proto(true, None)])).await;
        let routes = pod_and_subnet_routes();
        let speaker = BgpSpeaker::new(speaker_config()).unwrap();
        speaker.set_peers(vec![peer("198.18.0.1", None)]).unwrap();
        speaker.set_routes(routes.clone());
        wait_established(&speaker, 1).await;
        expect_bird_routes(&bird, "node4", &routes.iter().copied().collect::<Vec<_>>()).await;
        let during_gap = restart_gap(&bird, speaker).await;
        assert!(
            during_gap.is_empty(),
            "without graceful restart bird flushes: {during_gap:?}"
        );
    });
}

#[test]
fn wrong_password_never_establishes() {
    if !may_run("wrong_password_never_establishes", &["ip", "bird", "birdc"]) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[v4_proto(false, Some("right-secret"))]),
        )
        .await;
        let speaker = BgpSpeaker::new(speaker_config()).unwrap();
        speaker.set_routes(pod_and_subnet_routes());
        for password in [Some("wrong-secret"), None] {
            let mut p = peer("198.18.0.1", None);
            p.password = password.map(str::to_string);
            speaker.set_peers(vec![p]).unwrap();
            // Several connect attempts fit in this window (connect timeout 2 s, backoff <= 2 s).
            let established = speaker
                .wait_for(Duration::from_secs(8), |s| {
                    s.peer_states()
                        .iter()
                        .any(|p| p.state == State::Established)
                })
                .await;
            assert!(!established, "password {password:?} must not establish");
            assert!(!bird.is_established("node4").await);
            assert!(node_routes(&bird).await.is_empty());
            assert!(!speaker.is_announced_to_required_peers(&"198.19.0.0/24".parse().unwrap()));
        }
        // Control: the right password establishes (a live password change restarts the peer).
        let mut p = peer("198.18.0.1", None);
        p.password = Some("right-secret".into());
        speaker.set_peers(vec![p]).unwrap();
        wait_established(&speaker, 1).await;
        assert!(bird.is_established("node4").await);
        assert!(speaker.is_announced_to_required_peers(&"198.19.0.0/24".parse().unwrap()));
    });
}

#[test]
fn live_peer_changes_leave_other_sessions_alone() {
    if !may_run(
        "live_peer_changes_leave_other_sessions_alone",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[v4_proto(false, None), v6_proto()]),
        )
        .await;
        let speaker = BgpSpeaker::new(speaker_config()).unwrap();
        let p4 = peer("198.18.0.1", None);
        let p6 = peer("fd00::1", None);
        speaker.set_peers(vec![p4.clone(), p6.clone()]).unwrap();
        speaker.set_routes(pod_and_subnet_routes());
        wait_established(&speaker, 2).await;
        let v4_since = speaker.peer_states()[0].established_since;

        // Flags that do not affect the session change in place.
        let mut p6_optional = p6.clone();
        p6_optional.allow_not_established = true;
        p6_optional.does_not_route_traffic = true;
        speaker
            .set_peers(vec![p4.clone(), p6_optional.clone()])
            .unwrap();
        let states = speaker.peer_states();
        assert!(states[1].allow_not_established && states[1].state == State::Established);

        // A wrong ASN restarts only that peer; bird refuses it (bad peer AS). bird then waits
        // `error wait time` before accepting the peer again (1-2 s in this config).
        let mut p6_bad = p6_optional.clone();
        p6_bad.asn = 65099;
        speaker.set_peers(vec![p4.clone(), p6_bad]).unwrap();
        eventually("node6 down at bird", Duration::from_secs(10), || async {
            if bird.is_established("node6").await {
                Err("still up".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        // node6 no longer required, so readiness follows node4 alone.
        assert!(speaker.is_announced_to_required_peers(&"198.19.0.0/24".parse().unwrap()));

        // Removing the IPv6 peer leaves the IPv4 session as it was.
        speaker.set_peers(vec![p4.clone()]).unwrap();
        let states = speaker.peer_states();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].state, State::Established);
        assert_eq!(
            states[0].established_since, v4_since,
            "IPv4 session must not restart"
        );
        assert_eq!(states[0].flaps, 0);
        assert!(bird.is_established("node4").await);

        // Adding it back establishes it again.
        speaker.set_peers(vec![p4, p6]).unwrap();
        wait_established(&speaker, 2).await;
        assert_eq!(speaker.peer_states()[0].established_since, v4_since);
    });
}

// ---- The passive side: bird connects to the speaker (inbound connections) ----

fn active(mut p: Proto<'static>) -> Proto<'static> {
    p.active = true;
    p
}

/// A speaker that also listens on port 179 of its addresses in the node namespace.
async fn listening_speaker() -> BgpSpeaker {
    let mut c = speaker_config();
    c.listen_port = Some(hybridnet_bgp::speaker::BGP_PORT);
    let speaker = BgpSpeaker::new(c).unwrap();
    assert!(
        speaker
            .wait_for(ESTABLISH, |s| s.listening().len() == 2)
            .await,
        "listeners on 198.18.0.2:179 and [fd00::2]:179: {:?}",
        speaker.listening()
    );
    speaker
}

fn passive(address: &str, graceful_restart: Option<u16>) -> PeerConfig {
    let mut p = peer(address, graceful_restart);
    p.passive = true;
    p
}

/// Established TCP connections to or from port 179 in the node namespace.
async fn bgp_connections(node: &str) -> Vec<String> {
    ns_exec(
        node,
        &[
            "ss",
            "-Htn",
            "state",
            "established",
            "( sport = :179 or dport = :179 )",
        ],
    )
    .await
    .unwrap()
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(str::to_string)
    .collect()
}

#[test]
fn active_bird_connects_to_the_passive_speaker_v4_and_v6() {
    if !may_run(
        "active_bird_connects_to_the_passive_speaker_v4_and_v6",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        // The speaker never connects (passive peers): every session is bird's connection.
        let speaker = listening_speaker().await;
        speaker
            .set_peers(vec![
                passive("198.18.0.1", Some(120)),
                passive("fd00::1", Some(120)),
            ])
            .unwrap();
        let routes = pod_and_subnet_routes();
        speaker.set_routes(routes.clone());
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[active(v4_proto(true, None)), active(v6_proto())]),
        )
        .await;
        wait_established(&speaker, 2).await;
        for p in speaker.peer_states() {
            assert_eq!(
                p.connection,
                Some(hybridnet_bgp::Direction::Inbound),
                "{p:?}"
            );
        }
        let all: Vec<Announcement> = routes.iter().copied().collect();
        let v6: Vec<Announcement> = all
            .iter()
            .filter(|a| !a.prefix.is_ipv4())
            .copied()
            .collect();
        expect_bird_routes(&bird, "node4", &all).await;
        expect_bird_routes(&bird, "node6", &v6).await;
        assert_eq!(speaker.refused_connections(), 0);
        // Withdrawals flow over inbound sessions as over outbound ones.
        let mut fewer = routes.clone();
        fewer.remove(&ann("198.19.0.5/32", Communities::NoExport));
        speaker.set_routes(fewer.clone());
        expect_bird_routes(&bird, "node4", &fewer.iter().copied().collect::<Vec<_>>()).await;
        speaker.shutdown(Duration::from_secs(5)).await;
    });
}

/// Adds an nftables table in a namespace that drops BGP messages of one type (the type octet
/// is at payload offset 18) to and from port 179, or our own SYNs to port 179.
async fn hold(ns: &str, table: &str, what: &str) {
    let rules: Vec<String> = match what {
        "syn" => vec!["out tcp dport 179 tcp flags & (syn | ack) == syn drop".to_string()],
        _ => ["out", "in"]
            .iter()
            .flat_map(|chain| {
                ["dport", "sport"]
                    .map(|port| format!("{chain} tcp {port} 179 @ih,144,8 {what} drop"))
            })
            .collect(),
    };
    let mut script = format!(
        "add table inet {table}; \
         add chain inet {table} out {{ type filter hook output priority 0; }}; \
         add chain inet {table} in {{ type filter hook input priority 0; }}; "
    );
    for r in rules {
        script.push_str(&format!("add rule inet {table} {r}; "));
    }
    ns_exec(ns, &["nft", &script]).await.unwrap();
}

async fn release(ns: &str, table: &str) {
    ns_exec(ns, &["nft", &format!("delete table inet {table}")])
        .await
        .unwrap();
}

/// A connection collision with bird, made certain with nftables in the node namespace:
/// our SYNs are held until bird's connection has reached OpenConfirm (so our attempt is in
/// flight when bird's comes, and bird's is the older one), and KEEPALIVEs are held until the
/// collision is resolved (so both connections reach OpenConfirm at both ends and the BGP
/// Identifiers alone decide). Exactly one session must remain: the one opened by the side with
/// the higher identifier.
fn collision_against_bird(test: &str, bird_id: std::net::Ipv4Addr, kept: hybridnet_bgp::Direction) {
    if !may_run(test, &["ip", "bird", "birdc", "nft", "ss"]) {
        return;
    }
    let topo = Topology::new();
    let (tor, node, dir) = (topo.tor.clone(), topo.node.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        hold(&node, "hnt_syn", "syn").await;
        hold(&node, "hnt_keepalive", "4").await;
        let mut c = speaker_config();
        c.listen_port = Some(hybridnet_bgp::speaker::BGP_PORT);
        // Our attempt must still be in flight when bird's connection comes.
        c.connect_timeout = Duration::from_secs(60);
        let speaker = BgpSpeaker::new(c).unwrap();
        assert!(
            speaker
                .wait_for(ESTABLISH, |s| s.listening().len() == 2)
                .await
        );
        let routes = pod_and_subnet_routes();
        speaker.set_routes(routes.clone());
        speaker.set_peers(vec![peer("198.18.0.1", None)]).unwrap();
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config_with_id(bird_id, &[active(v4_proto(false, None))]).replace(
                "log stderr all;",
                &format!(
                    "log \"{}\" all;\ndebug protocols {{ states, events }};",
                    dir.join("bird.log").display()
                ),
            ),
        )
        .await;
        let bird_log = || std::fs::read_to_string(dir.join("bird.log")).unwrap_or_default();
        let conns = |n: usize| {
            let node = node.clone();
            async move {
                let c = bgp_connections(&node).await;
                if c.len() == n {
                    Ok(())
                } else {
                    Err(format!("{c:?}"))
                }
            }
        };
        eventually("bird's connection", ESTABLISH, || conns(1)).await;
        eventually("bird's connection in OpenConfirm", ESTABLISH, || async {
            let info = bird.protocol_info("node4").await;
            if info.contains("OpenConfirm") {
                Ok(())
            } else {
                Err(info)
            }
        })
        .await;
        release(&node, "hnt_syn").await;
        let resolved = speaker
            .wait_for(ESTABLISH, |s| s.peer_states()[0].collisions >= 1)
            .await;
        assert!(
            resolved,
            "no collision seen: {:#?}; connections {:?}; bird {}",
            speaker.peer_states(),
            bgp_connections(&node).await,
            bird.protocol_info("node4").await
        );
        release(&node, "hnt_keepalive").await;
        wait_established(&speaker, 1).await;
        let log = bird_log();
        assert!(
            log.contains("Connection collision"),
            "bird saw the collision too:\n{log}"
        );
        let state = speaker.peer_states().remove(0);
        assert_eq!(
            state.connection,
            Some(kept),
            "{state:?}\nbird log:\n{}",
            bird_log()
        );
        assert_eq!(state.flaps, 0, "{state:?}\nbird log:\n{}", bird_log());
        eventually(
            "exactly one BGP connection and bird Established",
            Duration::from_secs(20),
            || async {
                let conns = bgp_connections(&node).await;
                if conns.len() == 1 && bird.is_established("node4").await {
                    Ok(conns)
                } else {
                    Err(format!("{conns:?} / {}", bird.protocol_info("node4").await))
                }
            },
        )
        .await;
        // The surviving connection is the expected one: our port 179 is its local end
        // exactly when bird opened it.
        let conn = bgp_connections(&node).await.remove(0);
        let local = conn
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            local.ends_with(":179"),
            kept == hybridnet_bgp::Direction::Inbound,
            "{conn}"
        );
        expect_bird_routes(&bird, "node4", &routes.iter().copied().collect::<Vec<_>>()).await;
        // Still exactly one session a little later (no late flap from the loser).
        let flapped = speaker
            .wait_for(Duration::from_secs(3), |s| s.peer_states()[0].flaps > 0)
            .await;
        assert!(!flapped, "{:#?}", speaker.peer_states());
        assert_eq!(bgp_connections(&node).await.len(), 1);
        speaker.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn collision_with_bird_keeps_our_connection_when_our_identifier_is_higher() {
    // bird 198.18.0.1 < node 198.18.0.2.
    collision_against_bird(
        "collision_with_bird_keeps_our_connection_when_our_identifier_is_higher",
        TOR_V4,
        hybridnet_bgp::Direction::Outbound,
    );
}

#[test]
fn collision_with_bird_keeps_birds_connection_when_its_identifier_is_higher() {
    collision_against_bird(
        "collision_with_bird_keeps_birds_connection_when_its_identifier_is_higher",
        std::net::Ipv4Addr::new(198, 18, 0, 9),
        hybridnet_bgp::Direction::Inbound,
    );
}

#[test]
fn connections_from_unknown_sources_are_refused() {
    if !may_run(
        "connections_from_unknown_sources_are_refused",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        // Only the IPv6 ToR address is a peer; bird's IPv4 protocol connects from 198.18.0.1.
        let speaker = listening_speaker().await;
        speaker.set_peers(vec![passive("fd00::1", None)]).unwrap();
        speaker.set_routes(pod_and_subnet_routes());
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[active(v4_proto(false, None)), active(v6_proto())]),
        )
        .await;
        wait_established(&speaker, 1).await;
        let refused = speaker
            .wait_for(ESTABLISH, |s| s.refused_connections() >= 1)
            .await;
        assert!(refused, "bird's IPv4 connection was never refused");
        // Every further attempt is refused too. The test makes bird try again now (`birdc
        // restart`, then its 1 s connect delay) rather than wait for its retry timers. (This
        // test used to flake: a refusal did not wake `wait_for`, see the listener's dispatch.)
        for attempt in 2..=3u64 {
            let restarted = bird.birdc(&["restart", "node4"]).await;
            assert!(restarted.is_ok(), "birdc restart node4: {restarted:?}");
            let more = speaker
                .wait_for(ESTABLISH, |s| s.refused_connections() >= attempt)
                .await;
            assert!(
                more,
                "bird's attempt {attempt} was not refused within {ESTABLISH:?}: {:?}",
                bird.birdc(&["show", "protocols", "all", "node4"]).await
            );
        }
        assert!(!bird.is_established("node4").await);
        assert!(bird.is_established("node6").await);
        assert!(
            node_routes(&bird)
                .await
                .iter()
                .all(|p| p.protocol == "node6")
        );
        assert_eq!(speaker.peer_states().len(), 1);
    });
}

#[test]
fn wrong_password_on_an_inbound_connection_never_establishes() {
    if !may_run(
        "wrong_password_on_an_inbound_connection_never_establishes",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        let speaker = listening_speaker().await;
        let mut p = passive("198.18.0.1", None);
        p.password = Some("right-secret".into());
        speaker.set_peers(vec![p]).unwrap();
        speaker.set_routes(pod_and_subnet_routes());
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[active(v4_proto(false, Some("wrong-secret")))]),
        )
        .await;
        for bird_password in [Some("wrong-secret"), None] {
            let config = bird_config(&[active(v4_proto(false, bird_password))]);
            std::fs::write(dir.join("bird.conf"), config).unwrap();
            bird.birdc(&["configure"]).await.unwrap();
            // Several of bird's attempts fit in this window (connect retry 2 s); the kernel
            // drops their SYNs (wrong or missing signature), so none reaches the speaker.
            let established = speaker
                .wait_for(Duration::from_secs(8), |s| {
                    s.peer_states()[0].state == State::Established
                })
                .await;
            assert!(
                !established,
                "bird password {bird_password:?} must not establish"
            );
            assert!(!bird.is_established("node4").await);
            assert!(node_routes(&bird).await.is_empty());
            assert_eq!(speaker.refused_connections(), 0, "dropped before accept");
        }
        // Control: the right password establishes over bird's connection.
        let config = bird_config(&[active(v4_proto(false, Some("right-secret")))]);
        std::fs::write(dir.join("bird.conf"), config).unwrap();
        bird.birdc(&["configure"]).await.unwrap();
        wait_established(&speaker, 1).await;
        assert_eq!(
            speaker.peer_states()[0].connection,
            Some(hybridnet_bgp::Direction::Inbound)
        );
        assert!(bird.is_established("node4").await);
    });
}

/// `show protocols` "since" column of a protocol: changes whenever bird's session restarts.
async fn bird_since(bird: &Bird, name: &str) -> String {
    bird.protocol_info(name)
        .await
        .split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn password_change_restarts_only_that_session_and_rekeys_the_listener() {
    if !may_run(
        "password_change_restarts_only_that_session_and_rekeys_the_listener",
        &["ip", "bird", "birdc"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        // IPv4: we connect (bird passive, no password). IPv6: bird connects to our listener
        // with a password, so a password change must also re-key the listening socket.
        let v6_with = |password: &'static str| {
            let mut p = active(v6_proto());
            p.password = Some(password);
            p
        };
        let bird = Bird::start(
            &tor,
            &dir,
            &bird_config(&[v4_proto(false, None), v6_with("first-secret")]),
        )
        .await;
        let speaker = listening_speaker().await;
        let p4 = peer("198.18.0.1", None);
        let mut p6 = passive("fd00::1", None);
        p6.password = Some("first-secret".into());
        speaker.set_peers(vec![p4.clone(), p6.clone()]).unwrap();
        speaker.set_routes(pod_and_subnet_routes());
        wait_established(&speaker, 2).await;
        let v4_since = speaker.peer_states()[0].established_since;
        let bird_v4_since = bird_since(&bird, "node4").await;
        assert!(!bird_v4_since.is_empty());

        // New password for the IPv6 peer only: its session restarts (Cease to bird) and bird,
        // still on the old password, cannot come back through the re-keyed listener.
        p6.password = Some("second-secret".into());
        speaker.set_peers(vec![p4.clone(), p6.clone()]).unwrap();
        eventually("node6 down at bird", Duration::from_secs(10), || async {
            if bird.is_established("node6").await {
                Err("still up".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        let back = speaker
            .wait_for(Duration::from_secs(8), |s| {
                s.peer_states()[1].state == State::Established
            })
            .await;
        assert!(!back, "the old password must not establish any more");
        assert!(!bird.is_established("node6").await);

        // bird takes the new password: the session comes back over bird's connection.
        std::fs::write(
            dir.join("bird.conf"),
            bird_config(&[v4_proto(false, None), v6_with("second-secret")]),
        )
        .unwrap();
        bird.birdc(&["configure"]).await.unwrap();
        wait_established(&speaker, 2).await;
        assert_eq!(
            speaker.peer_states()[1].connection,
            Some(hybridnet_bgp::Direction::Inbound)
        );

        // The IPv4 session never noticed: same session on both ends, no flap.
        let v4 = speaker.peer_states().remove(0);
        assert_eq!(v4.established_since, v4_since, "{v4:?}");
        assert_eq!(v4.flaps, 0);
        assert_eq!(bird_since(&bird, "node4").await, bird_v4_since);
        assert!(bird.is_established("node4").await);
        speaker.shutdown(Duration::from_secs(5)).await;
    });
}

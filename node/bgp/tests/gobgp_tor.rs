//! The announce/withdraw scenario against Debian's gobgpd as the ToR, in network namespaces
//! the test creates (root only; skipped with a reason otherwise, failing under CI=true).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use hybridnet_bgp::{Announcement, BgpSpeaker, Communities, PeerConfig, SpeakerConfig, State};

const API: &str = "127.0.0.1";
const API_PORT: &str = "50051";

fn gobgp_config() -> String {
    let mut c = format!(
        "[global.config]\n  as = {TOR_AS}\n  router-id = \"{TOR_V4}\"\n  local-address-list = [\"{TOR_V4}\", \"{TOR_V6}\"]\n"
    );
    for neighbor in [NODE_V4.to_string(), NODE_V6.to_string()] {
        c.push_str(&format!(
            r#"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{neighbor}"
    peer-as = {NODE_AS}
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
        ));
    }
    c
}

async fn gobgp(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = vec!["gobgp", "-u", API, "-p", API_PORT];
    cmd.extend_from_slice(args);
    ns_exec(ns, &cmd).await
}

/// One line of `gobgp global rib` per best path: prefix, next hop, AS path and attributes.
#[derive(Debug, Clone)]
struct RibLine {
    prefix: String,
    line: String,
}

async fn rib(ns: &str, family: &str) -> Result<Vec<RibLine>, String> {
    let out = gobgp(ns, &["global", "rib", "-a", family]).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix('*')?;
            let rest = rest.trim_start_matches('>').trim_start();
            let prefix = rest.split_whitespace().next()?.to_string();
            Some(RibLine {
                prefix,
                line: l.to_string(),
            })
        })
        .collect())
}

/// Waits until gobgpd's RIB holds exactly the expected prefixes of a family, then checks each.
async fn expect_rib(ns: &str, family: &str, expected: &[Announcement]) {
    let want: BTreeSet<String> = expected
        .iter()
        .filter(|a| a.prefix.is_ipv4() == (family == "ipv4"))
        .map(|a| a.prefix.to_string())
        .collect();
    let lines = eventually(
        &format!("gobgpd {family} rib = {want:?}"),
        Duration::from_secs(20),
        || async {
            let lines = rib(ns, family).await?;
            let got: BTreeSet<String> = lines.iter().map(|l| l.prefix.clone()).collect();
            if got == want {
                Ok(lines)
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
    for a in expected
        .iter()
        .filter(|a| want.contains(&a.prefix.to_string()))
    {
        let prefix = a.prefix.to_string();
        // Several paths (one per session) may show; check them all.
        for l in lines.iter().filter(|l| l.prefix == prefix) {
            // "*> PREFIX NEXT_HOP AS_PATH... AGE [ATTRS]"; gobgp prints an AS_SET in braces.
            let fields: Vec<&str> = l.line.split_whitespace().collect();
            let after_prefix = fields
                .iter()
                .position(|f| *f == prefix)
                .map_or(&[][..], |i| &fields[i + 1..]);
            let next_hop = if a.prefix.is_ipv4() {
                "198.18.0.2"
            } else {
                "fd00::2"
            };
            assert_eq!(
                after_prefix.first(),
                Some(&next_hop),
                "{prefix}: next hop: {}",
                l.line
            );
            let as_path: Vec<&str> = after_prefix
                .iter()
                .skip(1)
                .take_while(|f| !f.contains(':'))
                .copied()
                .collect();
            assert_eq!(
                as_path,
                vec!["65001"],
                "{prefix}: AS path must be the sequence 65001: {}",
                l.line
            );
            let no_export = l.line.contains("no-export") || l.line.contains("NO_EXPORT");
            assert_eq!(
                no_export,
                a.communities == Communities::NoExport,
                "{prefix}: communities: {}",
                l.line
            );
        }
    }
}

#[test]
fn announce_and_withdraw_against_gobgpd() {
    if !may_run(
        "announce_and_withdraw_against_gobgpd",
        &["ip", "gobgpd", "gobgp"],
    ) {
        return;
    }
    let topo = Topology::new();
    let (tor, dir) = (topo.tor.clone(), topo.dir.clone());
    topo.run_in_node(move || async move {
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, gobgp_config()).unwrap();
        let _gobgpd = Daemon::spawn(
            &tor,
            &[
                "gobgpd",
                "-f",
                conf.to_str().unwrap(),
                "--api-hosts",
                &format!("{API}:{API_PORT}"),
            ],
            &dir.join("gobgpd.log"),
        );
        eventually("gobgpd API", Duration::from_secs(15), || {
            gobgp(&tor, &["global"])
        })
        .await;

        let mut config = SpeakerConfig::new(NODE_AS, NODE_V4);
        config.local_v4 = Some(NODE_V4);
        config.local_v6 = Some(NODE_V6);
        config.retry_initial = Duration::from_millis(250);
        config.retry_max = Duration::from_secs(2);
        let speaker = BgpSpeaker::new(config).unwrap();
        let mut peers = Vec::new();
        for address in ["198.18.0.1", "fd00::1"] {
            let mut p = PeerConfig::new(ip(address), TOR_AS);
            p.graceful_restart_seconds = Some(120);
            peers.push(p);
        }
        speaker.set_peers(peers).unwrap();
        let ann = |p: &str, c| Announcement::new(p.parse().unwrap(), c);
        let routes: BTreeSet<Announcement> = [
            ann("198.19.0.5/32", Communities::NoExport),
            ann("198.19.0.0/24", Communities::None),
            ann("198.19.1.7/32", Communities::None),
            ann("fd00:1::5/128", Communities::NoExport),
            ann("fd00:1::/64", Communities::None),
        ]
        .into();
        speaker.set_routes(routes.clone());
        let up = speaker
            .wait_for(Duration::from_secs(30), |s| {
                let st = s.peer_states();
                st.len() == 2 && st.iter().all(|p| p.state == State::Established)
            })
            .await;
        assert!(up, "sessions: {:#?}", speaker.peer_states());
        let neighbors = gobgp(&tor, &["neighbor"]).await.unwrap();
        assert_eq!(
            neighbors.matches("Establ").count(),
            2,
            "gobgp neighbor: {neighbors}"
        );

        let all: Vec<Announcement> = routes.iter().copied().collect();
        expect_rib(&tor, "ipv4", &all).await;
        expect_rib(&tor, "ipv6", &all).await;
        for a in &routes {
            assert!(speaker.is_announced_to_required_peers(&a.prefix));
        }

        let mut fewer = routes.clone();
        fewer.remove(&ann("198.19.0.5/32", Communities::NoExport));
        fewer.remove(&ann("fd00:1::5/128", Communities::NoExport));
        speaker.set_routes(fewer.clone());
        let fewer: Vec<Announcement> = fewer.iter().copied().collect();
        expect_rib(&tor, "ipv4", &fewer).await;
        expect_rib(&tor, "ipv6", &fewer).await;

        speaker.shutdown(Duration::from_secs(5)).await;
        expect_rib(&tor, "ipv4", &[]).await;
        expect_rib(&tor, "ipv6", &[]).await;
    });
}

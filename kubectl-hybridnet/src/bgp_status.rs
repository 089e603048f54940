//! The BGP part of `status`: every node's sessions as its agent publishes them on its NodeInfo
//! (annotation `hybridnet.io/bgp-sessions`, wire form in [`hybridnet_node::bgp::sessions`]), and
//! warnings for required sessions that are down, nodes of a BGP network that publish nothing,
//! and annotation values that cannot be read (never fatal).

use std::collections::BTreeMap;

use hybridnet_api::v1::{Network, NetworkMode, NodeInfo};
use hybridnet_node::bgp::sessions::{
    BGP_SESSIONS_ANNOTATION, BgpSession, SessionState, parse_annotation,
};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::output::{TableStyle, TextCell, render_table};

/// One session of one node (JSON/YAML: the node name, then the annotation's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpSessionView {
    pub node: String,
    #[serde(flatten)]
    pub session: BgpSession,
}

/// The sessions of every node, ordered by node then peer, and the warnings about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpSummary {
    pub sessions: Vec<BgpSessionView>,
    pub warnings: Vec<String>,
}

/// Problems quoted per NodeInfo; the rest are counted.
const MAX_PROBLEMS_PER_NODE: usize = 3;

/// Longest excerpt of a problem quoted in a warning (a hostile value must not flood the screen).
const MAX_PROBLEM_CHARS: usize = 200;

/// A problem as quoted in a warning: control characters escaped (a value must not steer the
/// terminal), at most [`MAX_PROBLEM_CHARS`] characters.
fn clip(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_PROBLEM_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads every NodeInfo's sessions; `networks` tell which nodes should have some (nodes in the
/// `status.nodeList` of a BGP-mode network with `bgpPeers`).
pub fn bgp_summary(node_infos: &[NodeInfo], networks: &[Network]) -> BgpSummary {
    let mut out = BgpSummary::default();
    // Node -> whether its annotation was there (readable or not).
    let mut published: BTreeMap<String, bool> = BTreeMap::new();
    let mut infos: Vec<&NodeInfo> = node_infos.iter().collect();
    infos.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for info in infos {
        let node = info.metadata.name.clone().unwrap_or_default();
        let Some(value) = info
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BGP_SESSIONS_ANNOTATION))
        else {
            continue;
        };
        let parsed = parse_annotation(value);
        for p in parsed.problems.iter().take(MAX_PROBLEMS_PER_NODE) {
            out.warnings.push(format!(
                "NodeInfo {node}: annotation {BGP_SESSIONS_ANNOTATION}: {}",
                clip(p)
            ));
        }
        if parsed.problems.len() > MAX_PROBLEMS_PER_NODE {
            out.warnings.push(format!(
                "NodeInfo {node}: annotation {BGP_SESSIONS_ANNOTATION}: {} more unreadable entries",
                parsed.problems.len() - MAX_PROBLEMS_PER_NODE
            ));
        }
        published.insert(node.clone(), !parsed.sessions.is_empty());
        let mut sessions = parsed.sessions;
        sessions.sort_by_key(|s| s.peer_address);
        for s in sessions {
            if s.required && s.state != SessionState::Established {
                out.warnings.push(format!(
                    "node {node}: required BGP session to {} (AS {}) is {} since {}",
                    s.peer_address, s.peer_asn, s.state, s.since
                ));
            }
            out.sessions.push(BgpSessionView {
                node: node.clone(),
                session: s,
            });
        }
    }
    let mut silent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in networks {
        if n.spec.effective_mode() != NetworkMode::Bgp || n.spec.bgp_peers().is_empty() {
            continue;
        }
        let name = n.metadata.name.clone().unwrap_or_default();
        for node in n
            .status
            .as_ref()
            .and_then(|s| s.node_list.as_deref())
            .unwrap_or_default()
        {
            if published.get(node) != Some(&true) {
                silent.entry(node.clone()).or_default().push(name.clone());
            }
        }
    }
    for (node, nets) in silent {
        let what = if published.contains_key(&node) {
            "publishes no readable BGP session"
        } else {
            "publishes no BGP sessions (no NodeInfo annotation: is its agent running and up to date?)"
        };
        out.warnings.push(format!(
            "node {node} of BGP network {}: {what}",
            nets.join(", ")
        ));
    }
    out
}

/// Age as kubectl prints it (`45s`, `3m12s`, `5h`, `2d3h`, ...); a time in the future is `0s`.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let secs = (now.as_second() - since.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        s if s < 2 * 86_400 => format!("{h}h"),
        s if s < 8 * 86_400 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        s if s < 2 * 365 * 86_400 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

/// The BGP SESSIONS table.
pub fn render_sessions(sessions: &[BgpSessionView], now: Timestamp, style: TableStyle) -> String {
    let rows: Vec<Vec<TextCell>> = sessions
        .iter()
        .map(|v| {
            let s = &v.session;
            let down = s.state != SessionState::Established;
            vec![
                TextCell::plain(v.node.as_str()),
                TextCell::plain(s.peer_address.to_string()),
                TextCell::number(s.peer_asn.to_string()),
                TextCell::plain(s.state.as_str()).warned(down && s.required),
                TextCell::number(age(s.since, now)),
                TextCell::number(format!("{}/{}", s.prefixes_v4, s.prefixes_v6)),
                TextCell::plain(if s.required { "yes" } else { "no" }),
            ]
        })
        .collect();
    render_table(
        &[
            "node", "peer", "asn", "state", "since", "prefixes", "required",
        ],
        &rows,
        style,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{BgpPeer, NetworkConfig, NetworkSpec, NetworkStatus, NodeInfoSpec};
    use proptest::prelude::*;

    fn info(name: &str, value: Option<&str>) -> NodeInfo {
        let mut n = NodeInfo::new(name, NodeInfoSpec::default());
        if let Some(v) = value {
            n.metadata.annotations = Some(
                [(BGP_SESSIONS_ANNOTATION.to_string(), v.to_string())]
                    .into_iter()
                    .collect(),
            );
        }
        n
    }

    fn bgp_network(nodes: &[&str]) -> Network {
        let mut n = Network::new(
            "bgp-net",
            NetworkSpec {
                net_id: Some(65001),
                mode: Some(NetworkMode::Bgp),
                config: Some(NetworkConfig {
                    bgp_peers: Some(vec![BgpPeer {
                        asn: 65000,
                        address: "198.18.0.1".into(),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        );
        n.status = Some(NetworkStatus {
            node_list: Some(nodes.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        });
        n
    }

    fn entry(peer: &str, state: &str, required: bool) -> String {
        format!(
            r#"{{"peerAddress":"{peer}","peerASN":65000,"localASN":65001,"state":"{state}","since":"2026-11-26T10:00:00Z","prefixesV4":3,"prefixesV6":2,"required":{required},"flaps":1}}"#
        )
    }

    #[test]
    fn sessions_warnings_and_silent_nodes() {
        let infos = [
            info(
                "node2",
                Some(&format!(
                    "[{},{}]",
                    entry("fd00::1", "Active", false),
                    entry("198.18.0.1", "Connect", true)
                )),
            ),
            info(
                "node1",
                Some(&format!("[{}]", entry("198.18.0.1", "Established", true))),
            ),
            info("node3", None),
            info("node4", Some("{\"oops\": 1}")),
        ];
        let net = bgp_network(&["node1", "node2", "node3", "node4", "node5"]);
        let s = bgp_summary(&infos, &[net]);
        let rows: Vec<(String, String, SessionState)> = s
            .sessions
            .iter()
            .map(|v| {
                (
                    v.node.clone(),
                    v.session.peer_address.to_string(),
                    v.session.state,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "node1".into(),
                    "198.18.0.1".into(),
                    SessionState::Established
                ),
                ("node2".into(), "198.18.0.1".into(), SessionState::Connect),
                ("node2".into(), "fd00::1".into(), SessionState::Active),
            ]
        );
        assert_eq!(
            s.warnings,
            [
                "node node2: required BGP session to 198.18.0.1 (AS 65000) is Connect since 2026-11-26T10:00:00Z",
                "NodeInfo node4: annotation hybridnet.io/bgp-sessions: not a JSON list of sessions (found an object)",
                "node node3 of BGP network bgp-net: publishes no BGP sessions (no NodeInfo annotation: is its agent running and up to date?)",
                "node node4 of BGP network bgp-net: publishes no readable BGP session",
                "node node5 of BGP network bgp-net: publishes no BGP sessions (no NodeInfo annotation: is its agent running and up to date?)",
            ]
        );
        let now: Timestamp = "2026-11-26T10:03:12Z".parse().unwrap();
        let text = render_sessions(&s.sessions, now, TableStyle { terminal: false });
        assert_eq!(
            text,
            "NODE    PEER         ASN     STATE         SINCE   PREFIXES   REQUIRED\n\
             node1   198.18.0.1   65000   Established   3m12s        3/2   yes\n\
             node2   198.18.0.1   65000   Connect       3m12s        3/2   yes\n\
             node2   fd00::1      65000   Active        3m12s        3/2   no\n"
        );
        let json = serde_json::to_value(&s.sessions[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "node1", "peerAddress": "198.18.0.1", "peerASN": 65000,
                "localASN": 65001, "state": "Established", "since": "2026-11-26T10:00:00Z",
                "prefixesV4": 3, "prefixesV6": 2, "required": true, "flaps": 1})
        );
        // No BGP network, no annotations: nothing to say.
        assert_eq!(bgp_summary(&[info("n", None)], &[]), BgpSummary::default());
    }

    #[test]
    fn hostile_annotations_are_named_and_clipped() {
        let huge = format!("[{}]", "9,".repeat(40_000));
        let deep = "[".repeat(5000);
        let many = format!("[{}]", ["7"; 100].join(","));
        let bad_state = format!("[{}]", entry("198.18.0.1", "Dancing\\u001b[31m", true));
        let infos = [
            info("huge", Some(&huge)),
            info("deep", Some(&deep)),
            info("state", Some(&bad_state)),
            info("text", Some("Established")),
        ];
        let s = bgp_summary(&infos, &[]);
        assert!(s.sessions.is_empty());
        assert_eq!(s.warnings.len(), 4, "{:#?}", s.warnings);
        let m = bgp_summary(&[info("many", Some(&many))], &[]);
        assert_eq!(m.warnings.len(), 4, "{:#?}", m.warnings);
        assert!(
            m.warnings[0].contains("holds 100 sessions"),
            "{:?}",
            m.warnings
        );
        assert!(
            m.warnings[3].ends_with(": 62 more unreadable entries"),
            "{:?}",
            m.warnings
        );
        for (w, node, what) in [
            (&s.warnings[0], "deep", "not JSON"),
            (&s.warnings[1], "huge", "bytes, more than"),
            (&s.warnings[2], "state", "entry 0: unknown variant"),
            (&s.warnings[3], "text", "not JSON"),
        ] {
            assert!(
                w.starts_with(&format!(
                    "NodeInfo {node}: annotation {BGP_SESSIONS_ANNOTATION}: "
                )),
                "{w}"
            );
            assert!(w.contains(what), "{w}");
            assert!(w.chars().count() < 300, "{w}");
            assert!(!w.chars().any(char::is_control), "{w:?}");
        }
    }

    #[test]
    fn ages_like_kubectl() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let since = t(0);
        for (secs, want) in [
            (-5, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 60, "5h1m"),
            (30 * 3600, "30h"),
            (2 * 86_400 + 3 * 3600, "2d3h"),
            (9 * 86_400, "9d"),
            (800 * 86_400, "2y"),
        ] {
            assert_eq!(age(since, t(secs)), want, "{secs}");
        }
    }

    proptest! {
        #[test]
        fn any_annotation_text_gives_a_summary(values in proptest::collection::vec(".{0,200}", 0..5)) {
            let infos: Vec<NodeInfo> = values
                .iter()
                .enumerate()
                .map(|(i, v)| info(&format!("n{i}"), Some(v)))
                .collect();
            let s = bgp_summary(&infos, &[bgp_network(&["n0", "n1"])]);
            let text = render_sessions(&s.sessions, Timestamp::UNIX_EPOCH, TableStyle { terminal: false });
            prop_assert!(text.starts_with("NODE"));
        }
    }
}

//! The BGP session summary a node agent publishes on its NodeInfo, so `kubectl hybridnet status`
//! shows every node's sessions without exec'ing into agents. Pure and portable (the kubectl
//! plugin parses it with [`parse_annotation`]).
//!
//! Wire form: annotation [`BGP_SESSIONS_ANNOTATION`], a compact JSON list ordered by peer
//! address, one object per configured peer:
//!
//! ```json
//! [{"peerAddress":"198.18.0.1","peerASN":65000,"localASN":65001,"state":"Established",
//!   "since":"2026-11-26T10:00:00Z","prefixesV4":3,"prefixesV6":2,"required":true,"flaps":0}]
//! ```
//!
//! `since` is when the session entered `state` (whole seconds), `required` is "not
//! `allowNotEstablished`", `flaps` counts the times the session left Established. Readers ignore
//! fields they do not know, so the shape can grow. The value is bounded: at most
//! [`MAX_SESSIONS`] entries of bounded size each (well under [`MAX_ANNOTATION_BYTES`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// NodeInfo annotation holding the node's BGP sessions.
pub const BGP_SESSIONS_ANNOTATION: &str = hybridnet_api::constants::annotation::NODE_BGP_SESSIONS;

/// Most sessions one annotation holds (a node has a handful of peers; the rest are cut off).
pub const MAX_SESSIONS: usize = 64;

/// Largest annotation value a reader accepts: 64 entries of at most ~250 bytes fit 4 times over.
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;

/// The BGP finite state machine states (RFC 4271 8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl SessionState {
    pub const ALL: [SessionState; 6] = [
        SessionState::Idle,
        SessionState::Connect,
        SessionState::Active,
        SessionState::OpenSent,
        SessionState::OpenConfirm,
        SessionState::Established,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "Idle",
            SessionState::Connect => "Connect",
            SessionState::Active => "Active",
            SessionState::OpenSent => "OpenSent",
            SessionState::OpenConfirm => "OpenConfirm",
            SessionState::Established => "Established",
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One BGP session of a node, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpSession {
    pub peer_address: IpAddr,
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    #[serde(rename = "localASN")]
    pub local_asn: u32,
    pub state: SessionState,
    /// When the session entered `state` (RFC 3339, whole seconds).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub since: Timestamp,
    pub prefixes_v4: u64,
    pub prefixes_v6: u64,
    /// The node is not ready while a required session is not Established.
    pub required: bool,
    pub flaps: u64,
}

fn ser_time<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let s = String::deserialize(d)?;
    Timestamp::from_str(&s)
        .map_err(|e| serde::de::Error::custom(format!("not an RFC 3339 time {s:?}: {e}")))
}

/// The annotation value: ordered by peer address, at most [`MAX_SESSIONS`] entries, `since`
/// truncated to whole seconds (so the value changes only when a state, count or flag does).
pub fn to_annotation(sessions: &[BgpSession]) -> String {
    let mut list: Vec<BgpSession> = sessions.to_vec();
    list.sort_by_key(|s| s.peer_address);
    list.truncate(MAX_SESSIONS);
    for s in &mut list {
        s.since = Timestamp::from_second(s.since.as_second()).unwrap_or(s.since);
    }
    // Plain data always serializes.
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_string())
}

/// What a reader made of an annotation value: the sessions it could read, and why it could not
/// read the rest (one sentence each, naming the entry and field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedSessions {
    pub sessions: Vec<BgpSession>,
    pub problems: Vec<String>,
}

/// Reads an annotation value written by any agent, or by anyone else: never fails as a whole;
/// entries that are not sessions are skipped and reported.
pub fn parse_annotation(value: &str) -> ParsedSessions {
    let mut out = ParsedSessions::default();
    if value.len() > MAX_ANNOTATION_BYTES {
        out.problems.push(format!(
            "value is {} bytes, more than the {MAX_ANNOTATION_BYTES} an agent writes; ignored",
            value.len()
        ));
        return out;
    }
    let entries: Vec<serde_json::Value> = match serde_json::from_str(value) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(other) => {
            out.problems.push(format!(
                "not a JSON list of sessions (found {})",
                json_kind(&other)
            ));
            return out;
        }
        Err(e) => {
            out.problems.push(format!("not JSON: {e}"));
            return out;
        }
    };
    if entries.len() > MAX_SESSIONS {
        out.problems.push(format!(
            "holds {} sessions, more than the {MAX_SESSIONS} an agent writes; only the first {MAX_SESSIONS} are read",
            entries.len()
        ));
    }
    for (i, entry) in entries.into_iter().take(MAX_SESSIONS).enumerate() {
        match serde_json::from_value::<BgpSession>(entry) {
            Ok(s) => out.sessions.push(s),
            Err(e) => out.problems.push(format!("entry {i}: {e}")),
        }
    }
    out
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn session(addr: &str, state: SessionState) -> BgpSession {
        BgpSession {
            peer_address: addr.parse().unwrap(),
            peer_asn: 65000,
            local_asn: 65001,
            state,
            since: "2026-11-26T10:00:00Z".parse().unwrap(),
            prefixes_v4: 3,
            prefixes_v6: 2,
            required: true,
            flaps: 1,
        }
    }

    #[test]
    fn documented_shape() {
        let v = to_annotation(&[session("198.18.0.1", SessionState::Established)]);
        assert_eq!(
            v,
            r#"[{"peerAddress":"198.18.0.1","peerASN":65000,"localASN":65001,"state":"Established","since":"2026-11-26T10:00:00Z","prefixesV4":3,"prefixesV6":2,"required":true,"flaps":1}]"#
        );
        assert_eq!(to_annotation(&[]), "[]");
    }

    #[test]
    fn ordered_by_address_truncated_to_seconds_and_bounded() {
        let mut a = session("fd00::1", SessionState::Active);
        a.since = "2026-11-26T10:00:00.987654321Z".parse().unwrap();
        let b = session("198.18.0.9", SessionState::Idle);
        let c = session("198.18.0.10", SessionState::Idle);
        let v = to_annotation(&[a.clone(), b.clone(), c.clone()]);
        let back = parse_annotation(&v);
        assert!(back.problems.is_empty(), "{back:?}");
        let addrs: Vec<String> = back
            .sessions
            .iter()
            .map(|s| s.peer_address.to_string())
            .collect();
        assert_eq!(addrs, ["198.18.0.9", "198.18.0.10", "fd00::1"]);
        assert_eq!(back.sessions[2].since.to_string(), "2026-11-26T10:00:00Z");
        // Same input in another order: the same value.
        assert_eq!(v, to_annotation(&[c, a, b]));
        let many: Vec<BgpSession> = (0..200u32)
            .map(|i| {
                session(
                    &std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)).to_string(),
                    SessionState::Established,
                )
            })
            .collect();
        let v = to_annotation(&many);
        assert!(v.len() < MAX_ANNOTATION_BYTES, "{}", v.len());
        assert_eq!(parse_annotation(&v).sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn hostile_values_are_reported_not_fatal() {
        for (value, want) in [
            ("", "not JSON"),
            ("{", "not JSON"),
            ("{}", "not a JSON list of sessions (found an object)"),
            ("\"x\"", "found a string"),
            ("null", "found null"),
            ("[1]", "entry 0"),
            (
                r#"[{"peerAddress":"198.18.0.1","peerASN":"65000","localASN":1,"state":"Established","since":"2026-11-26T10:00:00Z","prefixesV4":0,"prefixesV6":0,"required":true,"flaps":0}]"#,
                "entry 0: invalid type: string \"65000\", expected u32",
            ),
            (
                r#"[{"peerAddress":"198.18.0.1","peerASN":1,"localASN":1,"state":"Dancing","since":"2026-11-26T10:00:00Z","prefixesV4":0,"prefixesV6":0,"required":true,"flaps":0}]"#,
                "unknown variant `Dancing`",
            ),
            (
                r#"[{"peerAddress":"not-an-ip","peerASN":1,"localASN":1,"state":"Idle","since":"2026-11-26T10:00:00Z","prefixesV4":0,"prefixesV6":0,"required":true,"flaps":0}]"#,
                "entry 0: invalid IP address syntax",
            ),
            (
                r#"[{"peerAddress":"198.18.0.1","peerASN":1,"localASN":1,"state":"Idle","since":"yesterday","prefixesV4":0,"prefixesV6":0,"required":true,"flaps":0}]"#,
                "not an RFC 3339 time \"yesterday\"",
            ),
            (
                r#"[{"peerAddress":"198.18.0.1","peerASN":1,"localASN":1,"state":"Idle","since":"2026-11-26T10:00:00Z","prefixesV4":-1,"prefixesV6":0,"required":true,"flaps":0}]"#,
                "entry 0: invalid value: integer `-1`",
            ),
            (
                r#"[{"peerAddress":"198.18.0.1"}]"#,
                "missing field `peerASN`",
            ),
        ] {
            let p = parse_annotation(value);
            assert!(p.sessions.is_empty(), "{value}: {p:?}");
            let all = p.problems.join("; ");
            assert!(all.contains(want), "{value}: want {want:?} in {all:?}");
        }
        // Deep nesting hits serde_json's recursion limit: an error, no stack overflow.
        let deep = "[".repeat(10_000);
        assert!(parse_annotation(&deep).problems[0].contains("not JSON"));
        let huge = format!("[{}]", " ".repeat(MAX_ANNOTATION_BYTES));
        assert!(parse_annotation(&huge).problems[0].contains("bytes, more than"));
        // A bad entry does not hide the good ones; unknown fields are ignored.
        let good = to_annotation(&[session("198.18.0.1", SessionState::Connect)]);
        let mixed = format!(
            "[{}, 7, {}]",
            good.trim_start_matches('[').trim_end_matches(']'),
            good.trim_start_matches('[')
                .trim_end_matches(']')
                .replace("\"flaps\"", "\"future\":{\"x\":1},\"flaps\"")
        );
        let p = parse_annotation(&mixed);
        assert_eq!(p.sessions.len(), 2, "{p:?}");
        assert_eq!(p.problems.len(), 1, "{p:?}");
        assert!(p.problems[0].starts_with("entry 1:"), "{p:?}");
        let over: Vec<String> = (0..MAX_SESSIONS + 3).map(|_| "1".to_string()).collect();
        let p = parse_annotation(&format!("[{}]", over.join(",")));
        assert!(p.problems[0].contains("only the first 64"), "{p:?}");
        assert_eq!(p.problems.len(), MAX_SESSIONS + 1);
    }

    fn any_state() -> impl Strategy<Value = SessionState> {
        proptest::sample::select(SessionState::ALL.to_vec())
    }

    fn any_session() -> impl Strategy<Value = BgpSession> {
        (
            any::<IpAddr>(),
            any::<u32>(),
            any::<u32>(),
            any_state(),
            0i64..4_000_000_000,
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(a, pa, la, st, secs, v4, v6, req, flaps)| BgpSession {
                peer_address: a,
                peer_asn: pa,
                local_asn: la,
                state: st,
                since: Timestamp::from_second(secs).unwrap(),
                prefixes_v4: v4,
                prefixes_v6: v6,
                required: req,
                flaps,
            })
    }

    proptest! {
        #[test]
        fn round_trips_in_address_order(list in proptest::collection::vec(any_session(), 0..80)) {
            let v = to_annotation(&list);
            prop_assert!(v.len() <= MAX_ANNOTATION_BYTES);
            let back = parse_annotation(&v);
            prop_assert!(back.problems.is_empty(), "{:?}", back.problems);
            let mut want = list.clone();
            want.sort_by_key(|s| s.peer_address);
            want.truncate(MAX_SESSIONS);
            // Equal addresses keep their input order (stable sort), so compare as sorted.
            prop_assert_eq!(back.sessions, want);
        }

        #[test]
        fn any_text_is_read_without_panicking(s in ".{0,300}") {
            let p = parse_annotation(&s);
            prop_assert!(p.sessions.len() <= MAX_SESSIONS);
        }
    }
}

//! The nftables counters behind a verdict (`kubectl hybridnet trace --live`): which rules of a
//! node's policy table count a flow the model decided, found by the comments the rendering gives
//! them ([`rule_comment`], [`isolation_comment`]), and their counters summed from
//! `nft -j list table inet hybridnet_policy`.

use serde::Serialize;
use serde_json::Value;

use super::render::{POLICY_TABLE, isolation_comment, rule_comment};
use super::{Direction, Flow, ObjectKey, PolicyModel, SideVerdict, evaluate};

/// One side of a flow that a counted rule decides: the pod, its node and the rules' comment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountedSide {
    pub direction: Direction,
    pub pod: ObjectKey,
    pub node: String,
    /// Whether the counted rules allow (a policy rule) or drop (the pod's isolation rule).
    pub allows: bool,
    pub comment: String,
}

/// The sides of `flow` (egress, then ingress) that a rule of the pod's node's table counts: the
/// policy rule that allows it, or the isolated pod's drop rule. A side no policy decides (no
/// pod, not isolated, the pod itself, its own node) passes no counted rule and is left out.
pub fn counted_sides(model: &PolicyModel, flow: &Flow) -> Vec<CountedSide> {
    let v = evaluate(model, flow);
    let mut out = vec![];
    for (dir, side, own) in [
        (Direction::Egress, &v.egress, flow.src),
        (Direction::Ingress, &v.ingress, flow.dst),
    ] {
        let Some((key, pod)) = model
            .by_ip
            .get(&own)
            .and_then(|k| model.pods.get(k).map(|p| (k, p)))
        else {
            continue;
        };
        let (allows, comment) = match side {
            SideVerdict::Allowed { policy, rule } => (true, rule_comment(policy, dir, *rule)),
            SideVerdict::Denied { .. } => (false, isolation_comment(key, dir)),
            _ => continue,
        };
        out.push(CountedSide {
            direction: dir,
            pod: key.clone(),
            node: pod.node.clone(),
            allows,
            comment,
        });
    }
    out
}

/// The summed counters of the rules with one comment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounters {
    /// Rules with that comment and a counter (0: the node has not programmed them).
    pub rules: usize,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CountersError {
    #[error("the nft output is not JSON: {0}")]
    Json(String),
    #[error("the nft output has no `nftables` array")]
    Shape,
}

/// Sums the counters of the rules of table `inet hybridnet_policy` whose comment is `comment`, in
/// the output of `nft -j list table inet hybridnet_policy` (or `list ruleset`). Missing or
/// malformed counter fields count as 0; rules of other tables are ignored.
pub fn counters_by_comment(nft_json: &str, comment: &str) -> Result<RuleCounters, CountersError> {
    let v: Value =
        serde_json::from_str(nft_json).map_err(|e| CountersError::Json(e.to_string()))?;
    let items = v["nftables"].as_array().ok_or(CountersError::Shape)?;
    let mut c = RuleCounters::default();
    for item in items {
        let rule = &item["rule"];
        if rule["family"] != "inet" || rule["table"] != POLICY_TABLE || rule["comment"] != comment {
            continue;
        }
        for e in rule["expr"].as_array().into_iter().flatten() {
            if let Some(counter) = e.get("counter") {
                c.rules += 1;
                c.packets = c
                    .packets
                    .saturating_add(counter["packets"].as_u64().unwrap_or(0));
                c.bytes = c
                    .bytes
                    .saturating_add(counter["bytes"].as_u64().unwrap_or(0));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::policy::{
        PolicyInput, PolicyNamespace, PolicyPod, Protocol, build_policy_model, render_policy_table,
    };
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    /// Output of nft 1.0.6 `nft -j list table` (two rules of one comment, one of another table).
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "hybridnet_policy", "handle": 1}}, {"chain": {"family": "inet", "table": "hybridnet_policy", "name": "pol0_in", "handle": 1}}, {"rule": {"family": "inet", "table": "hybridnet_policy", "chain": "pol0_in", "handle": 2, "comment": "x/a ingress rule 0", "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "hybridnet_policy", "chain": "pol0_in", "handle": 3, "comment": "x/a ingress rule 0", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "1.2.3.4"}}, {"counter": {"packets": 2, "bytes": 120}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "other", "chain": "c", "handle": 4, "comment": "x/a ingress rule 0", "expr": [{"counter": {"packets": 100, "bytes": 100}}]}}]}"#;

    #[test]
    fn counters_are_summed_by_comment_in_the_policy_table_only() {
        assert_eq!(
            counters_by_comment(LISTING, "x/a ingress rule 0"),
            Ok(RuleCounters {
                rules: 2,
                packets: 5,
                bytes: 300
            })
        );
        assert_eq!(
            counters_by_comment(LISTING, "x/a ingress rule 1"),
            Ok(RuleCounters::default())
        );
        // a comment is matched whole, never as a prefix
        assert_eq!(
            counters_by_comment(LISTING, "x/a ingress rule").map(|c| c.rules),
            Ok(0)
        );
    }

    #[test]
    fn hostile_listings_are_errors_or_zero_never_a_panic() {
        assert!(matches!(
            counters_by_comment("table inet x {", "c"),
            Err(CountersError::Json(_))
        ));
        assert_eq!(counters_by_comment("{}", "c"), Err(CountersError::Shape));
        assert_eq!(
            counters_by_comment(r#"{"nftables": 3}"#, "c"),
            Err(CountersError::Shape)
        );
        let odd = r#"{"nftables": [1, null, {"rule": 3}, {"rule": {"family": "inet", "table": "hybridnet_policy", "comment": "c", "expr": [{"counter": {"packets": -1, "bytes": "x"}}, {"counter": null}, 7]}},
            {"rule": {"family": "inet", "table": "hybridnet_policy", "comment": "c", "expr": [{"counter": {"packets": 18446744073709551615, "bytes": 18446744073709551615}}]}},
            {"rule": {"family": "inet", "table": "hybridnet_policy", "comment": "c", "expr": [{"counter": {"packets": 5, "bytes": 5}}]}}]}"#;
        assert_eq!(
            counters_by_comment(odd, "c"),
            Ok(RuleCounters {
                rules: 4,
                packets: u64::MAX,
                bytes: u64::MAX
            })
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_counted_sides_carry_the_comments_the_table_is_rendered_with() {
        let np = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "web"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]},
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}
        }))
        .unwrap();
        let pod = |name: &str, node: &str, addr: &str| PolicyPod {
            namespace: "x".into(),
            name: name.into(),
            labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
            node: node.into(),
            ips: vec![ip(addr)],
            ports: vec![],
            host_network: false,
        };
        let model = build_policy_model(&PolicyInput {
            policies: vec![np],
            pods: vec![
                pod("a", "n1", "198.18.0.1"),
                pod("b", "n2", "198.18.0.2"),
                pod("d", "n2", "198.18.0.4"),
            ],
            namespaces: vec![PolicyNamespace {
                name: "x".into(),
                labels: BTreeMap::new(),
            }],
            nodes: BTreeMap::new(),
        });
        let flow = |src: &str, dst: &str| Flow {
            src: ip(src),
            dst: ip(dst),
            protocol: Protocol::Tcp,
            port: 80,
        };
        // b -> a: b's egress is not isolated (no counted rule), a's ingress allowed by rule 1
        let s = counted_sides(&model, &flow("198.18.0.2", "198.18.0.1"));
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].direction, Direction::Ingress);
        assert_eq!(s[0].node, "n1");
        assert!(s[0].allows);
        assert_eq!(s[0].comment, "x/web ingress rule 1");
        // d -> a: dropped by a's isolation rule
        let s = counted_sides(&model, &flow("198.18.0.4", "198.18.0.1"));
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(!s[0].allows);
        assert_eq!(s[0].comment, "x/a: isolated for ingress");
        // a -> outside: nothing counted
        assert!(counted_sides(&model, &flow("198.18.0.1", "203.0.113.1")).is_empty());
        // the comments are those of rules with a counter in n1's table
        let text = render_policy_table(&model, "n1").transaction();
        for c in ["x/web ingress rule 1", "x/a: isolated for ingress"] {
            let line = text
                .lines()
                .find(|l| l.contains(&format!("comment \"{c}\"")))
                .unwrap_or_else(|| panic!("no rule with comment {c} in\n{text}"));
            assert!(line.contains("counter"), "{line}");
        }
    }
}

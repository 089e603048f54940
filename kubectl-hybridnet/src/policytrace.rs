//! The NetworkPolicy part of `trace`: the verdict of each side for one flow, computed by the node
//! agent's policy model (`hybridnet_node::plan::policy`), so the CLI explains what the agents
//! program.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hybridnet_node::plan::policy::counters::{
    CountedSide, RuleCounters, counted_sides, counters_by_comment,
};
use hybridnet_node::plan::policy::{
    Direction, Flow, ObjectKey, POLICY_TABLE, PolicyInput, PolicyModel, Protocol, SideVerdict,
    build_policy_model, evaluate, namespace_from_object, pod_from_object,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

/// `--port N/proto`: a port and a protocol (`80`, `80/tcp`, `53/UDP`, `9/sctp`; TCP by default).
pub fn parse_port_proto(s: &str) -> Result<(u16, Protocol), String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?}: the port must be a number from 1 to 65535"))?;
    let proto = Protocol::parse(&proto.to_ascii_uppercase())
        .ok_or_else(|| format!("{s:?}: the protocol must be tcp, udp or sctp"))?;
    Ok((port, proto))
}

/// The policy model of the cluster from the API objects.
pub fn model_of(
    policies: Vec<NetworkPolicy>,
    pods: &[Pod],
    namespaces: &[Namespace],
    nodes: BTreeMap<String, Vec<IpAddr>>,
) -> PolicyModel {
    build_policy_model(&PolicyInput {
        policies,
        pods: pods.iter().filter_map(pod_from_object).collect(),
        namespaces: namespaces.iter().map(namespace_from_object).collect(),
        nodes,
    })
}

/// What each side says (a verdict when a port was given, else the isolation of each side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `N/PROTO` when given.
    pub port: Option<String>,
    /// Egress of the source pod.
    pub egress: String,
    /// Ingress of the destination pod.
    pub ingress: String,
    /// With a port: whether the flow passes both sides.
    pub allowed: Option<bool>,
    /// Problems of the policies that decide here (they also appear as Events on the policy).
    pub problems: Vec<String>,
    /// With a port: the sides a rule of the node's policy table decides (the allowing policy
    /// rule, or the isolated pod's drop rule), by the comment of those rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<CountedSide>,
    /// With `--live`: those rules' counters as the nodes' kernels report them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<LiveCounters>,
}

/// What `--live` runs in the node agent pod of a deciding node.
pub const LISTING_COMMAND: [&str; 6] = ["nft", "-j", "list", "table", "inet", POLICY_TABLE];

/// The counters of one counted side, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveCounters {
    pub direction: Direction,
    pub node: String,
    pub comment: String,
    pub counters: Option<RuleCounters>,
    pub error: Option<String>,
}

/// The counters of every counted side from its node's `nft -j list table` output.
pub fn live_counters(
    counted: &[CountedSide],
    listings: &BTreeMap<String, Result<String, String>>,
) -> Vec<LiveCounters> {
    counted
        .iter()
        .map(|side| {
            let r = match listings.get(&side.node) {
                None => Err("not read".to_string()),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(json)) => match counters_by_comment(json, &side.comment) {
                    Err(e) => Err(format!("{}: {e}", LISTING_COMMAND.join(" "))),
                    Ok(c) if c.rules == 0 => Err(format!(
                        "no counted rule {:?} in the node's table (not programmed yet?)",
                        side.comment
                    )),
                    Ok(c) => Ok(c),
                },
            };
            let (counters, error) = match r {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            };
            LiveCounters {
                direction: side.direction,
                node: side.node.clone(),
                comment: side.comment.clone(),
                counters,
                error,
            }
        })
        .collect()
}

fn isolation(model: &PolicyModel, ip: IpAddr, dir: Direction) -> String {
    let Some(key) = model.by_ip.get(&ip) else {
        return "not a pod: no policy applies".into();
    };
    let Some(pod) = model.pods.get(key) else {
        return "not a pod: no policy applies".into();
    };
    let by = match dir {
        Direction::Ingress => &pod.ingress,
        Direction::Egress => &pod.egress,
    };
    if by.is_empty() {
        format!("{key}: not isolated for {dir}")
    } else {
        let names: Vec<String> = by.iter().map(ToString::to_string).collect();
        format!(
            "{key}: isolated for {dir} by {} (give --port to see whether a rule allows it)",
            names.join(", ")
        )
    }
}

fn deciding(v: &SideVerdict) -> Vec<ObjectKey> {
    match v {
        SideVerdict::Allowed { policy, .. } => vec![policy.clone()],
        SideVerdict::Denied { isolated_by } => isolated_by.clone(),
        _ => vec![],
    }
}

/// The report for `src -> dst` (and `port` when given).
pub fn report(
    model: &PolicyModel,
    src: IpAddr,
    dst: IpAddr,
    port: Option<(u16, Protocol)>,
) -> PolicyReport {
    let Some((port, protocol)) = port else {
        return PolicyReport {
            src,
            dst,
            port: None,
            egress: isolation(model, src, Direction::Egress),
            ingress: isolation(model, dst, Direction::Ingress),
            allowed: None,
            problems: vec![],
            counted: vec![],
            live: vec![],
        };
    };
    let flow = Flow {
        src,
        dst,
        protocol,
        port,
    };
    let v = evaluate(model, &flow);
    let mut problems = vec![];
    for key in deciding(&v.egress).iter().chain(&deciding(&v.ingress)) {
        for p in model.problems.get(key).into_iter().flatten() {
            problems.push(format!("{key}: {p}"));
        }
    }
    problems.dedup();
    let with_pod = |ip: IpAddr, s: String| match model.by_ip.get(&ip) {
        Some(k) => format!("{k}: {s}"),
        None => s,
    };
    PolicyReport {
        src,
        dst,
        port: Some(format!("{port}/{protocol}")),
        egress: with_pod(src, v.egress.to_string()),
        ingress: with_pod(dst, v.ingress.to_string()),
        allowed: Some(v.allowed()),
        problems,
        counted: counted_sides(model, &flow),
        live: vec![],
    }
}

/// Text for the trace output.
pub fn render(r: &PolicyReport) -> String {
    let mut s = format!(
        "network policy {} -> {}{}:\n",
        r.src,
        r.dst,
        r.port
            .as_deref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    );
    s.push_str(&format!("  egress  (source):      {}\n", r.egress));
    s.push_str(&format!("  ingress (destination): {}\n", r.ingress));
    if let Some(a) = r.allowed {
        s.push_str(&format!(
            "  verdict: {}\n",
            if a { "allowed" } else { "denied" }
        ));
    }
    for p in &r.problems {
        s.push_str(&format!("  problem: {p}\n"));
    }
    for c in &r.live {
        s.push_str(&format!(
            "  counters (--live) {} on {}, rules \"{}\": ",
            c.direction, c.node, c.comment
        ));
        match (&c.counters, &c.error) {
            (Some(n), _) => s.push_str(&format!(
                "{} packets, {} bytes ({} nft rule{})\n",
                n.packets,
                n.bytes,
                n.rules,
                if n.rules == 1 { "" } else { "s" }
            )),
            (None, Some(e)) => s.push_str(&format!("error: {e}\n")),
            (None, None) => s.push('\n'),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]}
        }))
        .unwrap()
    }

    fn model() -> PolicyModel {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}
            ]}
        }))
        .unwrap();
        model_of(
            vec![np],
            &[
                pod("default", "web", "web", "198.18.0.1"),
                pod("default", "client", "client", "198.18.0.2"),
                pod("default", "other", "other", "198.18.0.3"),
            ],
            &[],
            BTreeMap::from([("node1".into(), vec!["198.18.1.1".parse().unwrap()])]),
        )
    }

    #[test]
    fn ports_parse() {
        assert_eq!(parse_port_proto("80"), Ok((80, Protocol::Tcp)));
        assert_eq!(parse_port_proto("53/udp"), Ok((53, Protocol::Udp)));
        assert_eq!(parse_port_proto("9/SCTP"), Ok((9, Protocol::Sctp)));
        for bad in ["0", "65536", "x/tcp", "80/icmp", "", "/tcp", "80/"] {
            assert!(parse_port_proto(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_name_the_rule_or_the_isolation() {
        let m = model();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = report(
            &m,
            ip("198.18.0.2"),
            ip("198.18.0.1"),
            Some((8080, Protocol::Tcp)),
        );
        assert_eq!(r.allowed, Some(true));
        assert_eq!(r.ingress, "default/web: allowed by default/web rule 0");
        assert_eq!(
            r.egress,
            "default/client: not isolated: no policy selects the pod"
        );
        // the broken second rule is reported with the deciding policy
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].starts_with("default/web: spec.ingress[1].from[0].ipBlock.cidr"));
        let r = report(
            &m,
            ip("198.18.0.3"),
            ip("198.18.0.1"),
            Some((8080, Protocol::Tcp)),
        );
        assert_eq!(r.allowed, Some(false));
        assert_eq!(
            r.ingress,
            "default/web: denied: isolated by default/web and no rule allows it"
        );
        let text = render(&r);
        assert!(text.contains("verdict: denied"), "{text}");
        // kubelet probes from the node
        let r = report(
            &m,
            ip("198.18.1.1"),
            ip("198.18.0.1"),
            Some((8080, Protocol::Tcp)),
        );
        assert_eq!(r.allowed, Some(true));
        assert!(r.ingress.contains("own node"), "{}", r.ingress);
        // no port: the isolation of each side
        let r = report(&m, ip("198.18.0.3"), ip("198.18.0.1"), None);
        assert_eq!(r.allowed, None);
        assert!(
            r.ingress.contains("isolated for ingress by default/web"),
            "{}",
            r.ingress
        );
        assert_eq!(r.egress, "default/other: not isolated for egress");
    }

    #[test]
    fn live_counters_come_from_the_deciding_nodes_listing() {
        let m = model();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let allowed = report(
            &m,
            ip("198.18.0.2"),
            ip("198.18.0.1"),
            Some((8080, Protocol::Tcp)),
        );
        // only the ingress side (default/web on node1) is decided by a counted rule
        assert_eq!(allowed.counted.len(), 1, "{:?}", allowed.counted);
        assert_eq!(allowed.counted[0].comment, "default/web ingress rule 0");
        assert_eq!(allowed.counted[0].node, "node1");
        let listing = r#"{"nftables": [{"rule": {"family": "inet", "table": "hybridnet_policy", "chain": "pol0_in", "handle": 9, "comment": "default/web ingress rule 0", "expr": [{"counter": {"packets": 7, "bytes": 420}}, {"accept": null}]}}]}"#;
        let mut listings = BTreeMap::from([("node1".to_string(), Ok(listing.to_string()))]);
        let mut r = allowed.clone();
        r.live = live_counters(&r.counted, &listings);
        assert_eq!(
            r.live[0].counters,
            Some(RuleCounters {
                rules: 1,
                packets: 7,
                bytes: 420
            })
        );
        let text = render(&r);
        assert!(
            text.contains("counters (--live) ingress on node1, rules \"default/web ingress rule 0\": 7 packets, 420 bytes (1 nft rule)"),
            "{text}"
        );
        // the denied flow's rule is not in that listing: said, not zero
        let denied = report(
            &m,
            ip("198.18.0.3"),
            ip("198.18.0.1"),
            Some((8080, Protocol::Tcp)),
        );
        let live = live_counters(&denied.counted, &listings);
        assert_eq!(live[0].comment, "default/web: isolated for ingress");
        assert!(
            live[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("not programmed yet")),
            "{live:?}"
        );
        // a node that could not be asked, and hostile output
        listings.insert("node1".into(), Err("kubectl exec x failed".into()));
        assert_eq!(
            live_counters(&r.counted, &listings)[0].error.as_deref(),
            Some("kubectl exec x failed")
        );
        listings.insert("node1".into(), Ok("\u{0}not json".into()));
        assert!(
            live_counters(&r.counted, &listings)[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("not JSON")),
        );
        assert!(
            live_counters(&r.counted, &BTreeMap::new())[0]
                .error
                .is_some()
        );
    }
}

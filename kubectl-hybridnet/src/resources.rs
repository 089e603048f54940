//! Table rows of `network ls|get`, `subnet ls|get` and `cluster ls`.

use hybridnet_api::multicluster::RemoteCluster;
use hybridnet_api::multicluster::status::{condition, state_of};
use hybridnet_api::v1::{Count, Network, NetworkMode, Subnet};

use crate::output::{TextCell, or_dash};

fn count_text(c: Option<&Count>) -> String {
    match c {
        Some(Count {
            total: Some(t),
            used,
            ..
        }) => format!("{}/{t}", used.unwrap_or(0)),
        _ => "-".into(),
    }
}

fn selector_text(n: &Network) -> String {
    match &n.spec.node_selector {
        Some(s) if !s.is_empty() => s
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

/// Rows of networks; `subnets` counts subnets per network from the listing (not from status).
pub fn network_table(
    networks: &[Network],
    subnets: &[Subnet],
    wide: bool,
) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let mut header = vec![
        "NAME",
        "TYPE",
        "MODE",
        "NETID",
        "SUBNETS",
        "NODES",
        "V4 USED/TOTAL",
        "V6 USED/TOTAL",
    ];
    if wide {
        header.extend(["NODE-SELECTOR", "BGP-PEERS", "LAST-V4-SUBNET"]);
    }
    let mut sorted: Vec<&Network> = networks.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let rows = sorted
        .into_iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let st = n.status.as_ref();
            let nsub = subnets.iter().filter(|s| s.spec.network == name).count();
            let mut row: Vec<TextCell> = vec![
                name.as_str().into(),
                n.spec.effective_type().as_str().into(),
                n.spec.effective_mode().as_str().into(),
                TextCell::number(
                    n.spec
                        .net_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                ),
                TextCell::number(nsub.to_string()),
                TextCell::number(
                    st.and_then(|s| s.node_list.as_ref())
                        .map(|l| l.len().to_string())
                        .unwrap_or_else(|| "-".into()),
                ),
                TextCell::number(count_text(st.and_then(|s| s.statistics.as_ref()))),
                TextCell::number(count_text(st.and_then(|s| s.ipv6_statistics.as_ref()))),
            ];
            if wide {
                row.push(selector_text(n).into());
                row.push(
                    if n.spec.effective_mode() == NetworkMode::Bgp {
                        n.spec
                            .bgp_peers()
                            .iter()
                            .map(|p| format!("{}@{}", p.asn, p.address))
                            .collect::<Vec<_>>()
                            .join(",")
                    } else {
                        "-".into()
                    }
                    .into(),
                );
                row.push(or_dash(st.and_then(|s| s.last_allocated_subnet.as_deref())).into());
            }
            row
        })
        .collect();
    (header, rows)
}

/// Rows of subnets, sorted by network then name.
pub fn subnet_table(subnets: &[Subnet], wide: bool) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let mut header = vec![
        "NAME",
        "NETWORK",
        "CIDR",
        "GATEWAY",
        "START",
        "END",
        "TOTAL",
        "USED",
        "AVAILABLE",
    ];
    if wide {
        header.extend([
            "NETID",
            "PRIVATE",
            "NAT",
            "RESERVED-IPS",
            "EXCLUDED-IPS",
            "LAST-ALLOCATED",
        ]);
    }
    let mut sorted: Vec<&Subnet> = subnets.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.spec.network, &a.metadata.name).cmp(&(&b.spec.network, &b.metadata.name))
    });
    let num =
        |v: Option<i32>| TextCell::number(v.map(|i| i.to_string()).unwrap_or_else(|| "-".into()));
    let rows = sorted
        .into_iter()
        .map(|s| {
            let r = &s.spec.range;
            let st = s.status.as_ref();
            let mut row: Vec<TextCell> = vec![
                s.metadata.name.as_deref().unwrap_or("").into(),
                s.spec.network.as_str().into(),
                r.cidr.as_str().into(),
                or_dash(r.gateway.as_deref()).into(),
                or_dash(r.start.as_deref()).into(),
                or_dash(r.end.as_deref()).into(),
                num(st.and_then(|s| s.total)),
                num(st.and_then(|s| s.used)),
                num(st.and_then(|s| s.available)),
            ];
            if wide {
                row.push(num(s.spec.net_id));
                row.push((if s.spec.is_private() { "yes" } else { "no" }).into());
                row.push(
                    (if s.spec.auto_nat_outgoing() {
                        "yes"
                    } else {
                        "no"
                    })
                    .into(),
                );
                row.push(TextCell::number(
                    r.reserved_ips.as_ref().map_or(0, |v| v.len()).to_string(),
                ));
                row.push(TextCell::number(
                    r.exclude_ips.as_ref().map_or(0, |v| v.len()).to_string(),
                ));
                row.push(or_dash(st.and_then(|s| s.last_allocated_ip.as_deref())).into());
            }
            row
        })
        .collect();
    (header, rows)
}

/// What is wrong with a remote cluster, from its conditions: the failing ones as
/// `Type: message` (the `Connected` one alone when there is no connection), `-` when none fails.
fn problems(rc: &RemoteCluster) -> String {
    let conds: Vec<_> = rc
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .collect();
    let failing: Vec<String> = conds
        .iter()
        .filter(|c| c.status == "False")
        .map(|c| {
            if c.message.is_empty() {
                c.type_.clone()
            } else {
                format!("{}: {}", c.type_, c.message.replace('\n', " "))
            }
        })
        .collect();
    if failing.is_empty() {
        "-".into()
    } else {
        failing.join("; ")
    }
}

/// How many of the checks passed, `n/4`, or `-` while none ran (no connection yet, or none).
fn checks_passed(rc: &RemoteCluster) -> String {
    let conds = rc.status.as_ref().and_then(|s| s.conditions.as_ref());
    let Some(conds) = conds else {
        return "-".into();
    };
    let known: Vec<_> = condition::CHECKS
        .iter()
        .filter_map(|t| conds.iter().find(|c| c.type_ == *t))
        .filter(|c| c.status != "Unknown")
        .collect();
    if known.is_empty() {
        return "-".into();
    }
    let passed = known.iter().filter(|c| c.status == "True").count();
    format!("{passed}/{}", condition::CHECKS.len())
}

/// Rows of `cluster ls`: name, endpoint, state (Ready / NotReady / Offline / Unknown), checks
/// passed and what fails; wide adds the remote cluster's UID and where the credentials come from.
pub fn remote_cluster_table(
    clusters: &[RemoteCluster],
    wide: bool,
) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let mut header = vec!["NAME", "ENDPOINT", "STATE", "CHECKS", "PROBLEMS"];
    if wide {
        header.extend(["UUID", "CREDENTIALS"]);
    }
    let mut sorted: Vec<&RemoteCluster> = clusters.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let rows = sorted
        .into_iter()
        .map(|rc| {
            let mut row: Vec<TextCell> = vec![
                or_dash(rc.metadata.name.as_deref()).into(),
                rc.spec.api_endpoint.as_str().into(),
                state_of(rc).as_str().into(),
                TextCell::number(checks_passed(rc)),
                problems(rc).into(),
            ];
            if wide {
                row.push(or_dash(rc.remote_uuid()).into());
                row.push(
                    match &rc.spec.credentials_secret_ref {
                        Some(r) => format!("secret {}/{}", r.namespace, r.name),
                        None => "inline".into(),
                    }
                    .into(),
                );
            }
            row
        })
        .collect();
    (header, rows)
}

/// `cluster status NAME`: the RemoteCluster, a table of its conditions and its mirrors (the
/// RemoteSubnets and RemoteVteps labelled with it).
pub fn remote_cluster_status_text(
    rc: &RemoteCluster,
    subnets: &[hybridnet_api::multicluster::RemoteSubnet],
    vteps: &[hybridnet_api::multicluster::RemoteVtep],
) -> String {
    use crate::output::{TableStyle, render_table};
    let mut o = String::new();
    let line = |o: &mut String, k: &str, v: &str| o.push_str(&format!("{k:<13}{v}\n"));
    line(&mut o, "Name:", &or_dash(rc.metadata.name.as_deref()));
    line(&mut o, "Endpoint:", &rc.spec.api_endpoint);
    line(&mut o, "State:", state_of(rc).as_str());
    line(&mut o, "UUID:", &or_dash(rc.remote_uuid()));
    let creds = match &rc.spec.credentials_secret_ref {
        Some(r) => format!("secret {}/{}", r.namespace, r.name),
        None => "inline".into(),
    };
    line(&mut o, "Credentials:", &creds);
    let conds: Vec<Vec<TextCell>> = rc
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                c.type_.as_str().into(),
                c.status.as_str().into(),
                c.reason.as_str().into(),
                c.last_transition_time.0.to_string().into(),
                or_dash(Some(c.message.as_str()).filter(|m| !m.is_empty())).into(),
            ]
        })
        .collect();
    o.push('\n');
    if conds.is_empty() {
        o.push_str("No conditions yet (the operator has not checked it).\n");
    } else {
        o.push_str(&render_table(
            &["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"],
            &conds,
            TableStyle { terminal: false },
        ));
    }
    o.push('\n');
    let mut subnets: Vec<_> = subnets.iter().collect();
    subnets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let rows: Vec<Vec<TextCell>> = subnets
        .iter()
        .map(|s| {
            vec![
                or_dash(s.metadata.name.as_deref()).into(),
                s.spec.range.cidr.as_str().into(),
                s.spec.effective_type().as_str().into(),
            ]
        })
        .collect();
    if rows.is_empty() {
        o.push_str("No RemoteSubnets.\n");
    } else {
        o.push_str(&render_table(
            &["REMOTE SUBNET", "CIDR", "TYPE"],
            &rows,
            TableStyle { terminal: false },
        ));
    }
    let mut vteps: Vec<_> = vteps.iter().collect();
    vteps.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let rows: Vec<Vec<TextCell>> = vteps
        .iter()
        .map(|v| {
            vec![
                or_dash(v.metadata.name.as_deref()).into(),
                or_dash(v.spec.ip.as_deref()).into(),
                or_dash(v.spec.mac.as_deref()).into(),
                TextCell::number(
                    v.spec
                        .endpoint_ip_list
                        .as_ref()
                        .map_or(0, Vec::len)
                        .to_string(),
                ),
            ]
        })
        .collect();
    o.push('\n');
    if rows.is_empty() {
        o.push_str("No RemoteVteps.\n");
    } else {
        o.push_str(&render_table(
            &["REMOTE VTEP", "IP", "MAC", "PODS"],
            &rows,
            TableStyle { terminal: false },
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{AddressRange, NetworkSpec, NetworkStatus, NetworkType, SubnetSpec};

    #[test]
    fn remote_cluster_status_shows_conditions_and_mirrors() {
        use hybridnet_api::multicluster::RemoteClusterSpec;
        use hybridnet_api::multicluster::mirror::{desired_remote_subnets, desired_remote_vteps};
        use hybridnet_api::multicluster::status::{Checks, Connection, remote_cluster_status};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut rc = RemoteCluster::new(
            "b",
            RemoteClusterSpec {
                api_endpoint: "https://10.0.0.2:6443".into(),
                ..Default::default()
            },
        );
        let text = remote_cluster_status_text(&rc, &[], &[]);
        assert!(text.contains("State:       Unknown"), "{text}");
        assert!(text.contains("No conditions yet"), "{text}");
        assert!(
            text.contains("No RemoteSubnets.") && text.contains("No RemoteVteps."),
            "{text}"
        );

        rc.status = Some(remote_cluster_status(
            &rc,
            &Connection::Connected {
                uuid: "u-b".into(),
                checks: Checks {
                    health: Ok(()),
                    bidirectional: Err("no way back".into()),
                    overlay_net_id: Ok(()),
                    subnet_non_cross: Ok(()),
                },
            },
            &Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap()),
        ));
        let net = Network::new(
            "init",
            NetworkSpec {
                network_type: Some(NetworkType::Overlay),
                ..Default::default()
            },
        );
        let sub = Subnet::new(
            "init",
            SubnetSpec {
                network: "init".into(),
                net_id: None,
                range: AddressRange {
                    cidr: "100.65.0.0/16".into(),
                    ..Default::default()
                },
                config: None,
            },
        );
        let subnets = desired_remote_subnets(&rc, std::slice::from_ref(&sub), &[net]);
        let info: hybridnet_api::v1::NodeInfo = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.alibaba.com/v1", "kind": "NodeInfo",
            "metadata": {"name": "node1"},
            "spec": {"vtepInfo": {"ip": "192.0.2.31", "mac": "52:54:00:00:00:31"}}
        }))
        .unwrap();
        let vteps = desired_remote_vteps(&rc, &[info], &[], &[sub]);
        let text = remote_cluster_status_text(&rc, &subnets, &vteps);
        for want in [
            "Name:        b",
            "State:       NotReady",
            "UUID:        u-b",
            "Credentials: inline",
            "BidirectionalConnection   False    CheckFail   2023-11-14T22:13:20Z   no way back",
            "b.init          100.65.0.0/16   Overlay",
            "b.node1       192.0.2.31   52:54:00:00:00:31      0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn remote_cluster_rows_show_state_checks_and_problems() {
        use hybridnet_api::multicluster::status::{Checks, Connection, remote_cluster_status};
        use hybridnet_api::multicluster::{RemoteClusterSpec, SecretRef};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(0).unwrap());
        let mk = |name: &str| {
            RemoteCluster::new(
                name,
                RemoteClusterSpec {
                    api_endpoint: format!("https://{name}.example:6443"),
                    ..Default::default()
                },
            )
        };
        let mut ready = mk("b");
        let pass = Checks {
            health: Ok(()),
            bidirectional: Ok(()),
            overlay_net_id: Ok(()),
            subnet_non_cross: Ok(()),
        };
        ready.status = Some(remote_cluster_status(
            &ready,
            &Connection::Connected {
                uuid: "u-b".into(),
                checks: pass.clone(),
            },
            &now,
        ));
        let mut not_ready = mk("c");
        not_ready.spec.credentials_secret_ref = Some(SecretRef {
            namespace: "ns".into(),
            name: "c".into(),
        });
        not_ready.status = Some(remote_cluster_status(
            &not_ready,
            &Connection::Connected {
                uuid: "u-c".into(),
                checks: Checks {
                    overlay_net_id: Err("overlay netID (VNI) 4 here,\n5 there".into()),
                    ..pass
                },
            },
            &now,
        ));
        let mut offline = mk("a");
        offline.status = Some(remote_cluster_status(
            &offline,
            &Connection::Unreachable("connection refused".into()),
            &now,
        ));
        let fresh = mk("d");
        let (h, rows) = remote_cluster_table(&[ready, not_ready, offline, fresh], true);
        assert_eq!(
            h,
            [
                "NAME",
                "ENDPOINT",
                "STATE",
                "CHECKS",
                "PROBLEMS",
                "UUID",
                "CREDENTIALS"
            ]
        );
        let text: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| c.text.clone()).collect())
            .collect();
        assert_eq!(
            text,
            [
                [
                    "a",
                    "https://a.example:6443",
                    "Offline",
                    "-",
                    "Connected: connection refused",
                    "-",
                    "inline"
                ],
                [
                    "b",
                    "https://b.example:6443",
                    "Ready",
                    "4/4",
                    "-",
                    "u-b",
                    "inline"
                ],
                [
                    "c",
                    "https://c.example:6443",
                    "NotReady",
                    "3/4",
                    "OverlayNetIDMatch: overlay netID (VNI) 4 here, 5 there",
                    "u-c",
                    "secret ns/c"
                ],
                [
                    "d",
                    "https://d.example:6443",
                    "Unknown",
                    "-",
                    "-",
                    "-",
                    "inline"
                ],
            ]
        );
    }

    #[test]
    fn rows() {
        let mut n = Network::new(
            "vlan100",
            NetworkSpec {
                node_selector: Some([("rack".to_string(), "a".to_string())].into()),
                net_id: Some(100),
                network_type: Some(NetworkType::Underlay),
                ..Default::default()
            },
        );
        n.metadata.name = Some("vlan100".into());
        n.status = Some(NetworkStatus {
            node_list: Some(vec!["n1".into(), "n2".into()]),
            statistics: Some(Count {
                total: Some(250),
                used: Some(3),
                available: Some(247),
            }),
            ..Default::default()
        });
        let mut s = Subnet::new(
            "s1",
            SubnetSpec {
                network: "vlan100".into(),
                net_id: None,
                range: AddressRange {
                    cidr: "10.1.0.0/24".into(),
                    gateway: Some("10.1.0.1".into()),
                    ..Default::default()
                },
                config: None,
            },
        );
        s.metadata.name = Some("s1".into());
        let (h, rows) = network_table(std::slice::from_ref(&n), std::slice::from_ref(&s), true);
        assert_eq!(h.len(), rows[0].len());
        let texts: Vec<&str> = rows[0].iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "vlan100", "Underlay", "VLAN", "100", "1", "2", "3/250", "-", "rack=a", "-", "-"
            ]
        );
        let (h, rows) = subnet_table(&[s], true);
        assert_eq!(h.len(), rows[0].len());
        assert_eq!(rows[0][3].text, "10.1.0.1");
        assert_eq!(rows[0][6].text, "-", "no status yet");
    }
}

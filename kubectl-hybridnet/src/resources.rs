//! Table rows of `network ls|get` and `subnet ls|get`.

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

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::v1::{AddressRange, NetworkSpec, NetworkStatus, NetworkType, SubnetSpec};

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

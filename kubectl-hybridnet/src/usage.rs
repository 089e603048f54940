//! Address usage per subnet and network, with the definitions of the Subnet status (upstream
//! `pkg/ipam/types/usage.go`): total = allocatable addresses (start..end minus gateway, excluded
//! and reserved addresses), used = IPInstances on allocatable addresses
//! (`ParsedRange::counts_as_used`, as the operator counts; reserved IPInstances of stateful pods
//! count as used), available = total - used. tests/usage_agreement.rs checks both agree.

use std::collections::BTreeMap;

use hybridnet_api::range::{ParsedRange, parse_address_range};
use hybridnet_api::v1::{IpVersion, Network, Subnet};
use serde::Serialize;

use crate::inventory::InstanceFacts;
use crate::output::TextCell;

/// The usage verdict of a subnet or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Ok,
    NearExhaustion,
    Exhausted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NearExhaustion => "near-exhaustion",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Counts of one subnet or one family of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Counts {
    pub total: u64,
    pub used: u64,
    /// IPInstances kept for stateful pods that are gone (part of `used`).
    pub reserved: u64,
    pub available: u64,
}

impl Counts {
    /// Used share in percent, one decimal; a subnet without addresses is 100% used.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        let p = (self.used as f64) * 100.0 / (self.total as f64);
        (p * 10.0).round() / 10.0
    }

    pub fn level(&self, threshold: u8) -> Level {
        if self.available == 0 {
            Level::Exhausted
        } else if self.percent() >= f64::from(threshold) {
            Level::NearExhaustion
        } else {
            Level::Ok
        }
    }

    fn add(&mut self, o: &Counts) {
        self.total += o.total;
        self.used += o.used;
        self.reserved += o.reserved;
        self.available += o.available;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetUsage {
    pub name: String,
    pub network: String,
    pub version: String,
    pub cidr: String,
    pub private: bool,
    #[serde(flatten)]
    pub counts: Counts,
    pub percent: f64,
    pub level: Level,
    /// The subnet's range is invalid (then the counts are zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUsage {
    pub name: String,
    pub version: String,
    pub subnets: usize,
    #[serde(flatten)]
    pub counts: Counts,
    pub percent: f64,
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageReport {
    pub threshold: u8,
    pub subnets: Vec<SubnetUsage>,
    pub networks: Vec<NetworkUsage>,
}

/// The counts of one subnet from its parsed range and the IPInstances naming it.
pub fn subnet_counts<'a>(
    name: &str,
    range: &ParsedRange,
    instances: impl IntoIterator<Item = &'a InstanceFacts>,
) -> Counts {
    let total = u64::try_from(range.allocatable_count()).unwrap_or(u64::MAX);
    let mut used = 0u64;
    let mut reserved = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for f in instances {
        let Some(ip) = f.ip else { continue };
        let counted = IpVersion::of(&ip) == range.version
            && range.counts_as_used(hybridnet_api::ipmath::ip_to_u128(ip));
        if f.subnet != name || !counted || !seen.insert(ip) {
            continue;
        }
        used += 1;
        if f.is_reserved() {
            reserved += 1;
        }
    }
    Counts {
        total,
        used,
        reserved,
        available: total.saturating_sub(used),
    }
}

/// Usage of every subnet (optionally of one network) and of every network per family, each list
/// sorted by used percentage, highest first, then by name.
pub fn usage_report(
    networks: &[Network],
    subnets: &[Subnet],
    instances: &[InstanceFacts],
    only_network: Option<&str>,
    threshold: u8,
) -> UsageReport {
    let mut by_subnet: BTreeMap<&str, Vec<&InstanceFacts>> = BTreeMap::new();
    for f in instances {
        by_subnet.entry(f.subnet.as_str()).or_default().push(f);
    }
    let mut subnet_rows = Vec::new();
    let mut net_counts: BTreeMap<(String, String), (usize, Counts)> = BTreeMap::new();
    for s in subnets {
        if only_network.is_some_and(|n| n != s.spec.network) {
            continue;
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        let (counts, error) = match parse_address_range(&s.spec.range, "spec.range") {
            Ok(r) => (
                subnet_counts(
                    &name,
                    &r,
                    by_subnet.get(name.as_str()).into_iter().flatten().copied(),
                ),
                None,
            ),
            Err(e) => (Counts::default(), Some(e.to_string())),
        };
        let version = s.spec.range.version.as_str().to_string();
        let e = net_counts
            .entry((s.spec.network.clone(), version.clone()))
            .or_default();
        e.0 += 1;
        e.1.add(&counts);
        subnet_rows.push(SubnetUsage {
            name,
            network: s.spec.network.clone(),
            version,
            cidr: s.spec.range.cidr.clone(),
            private: s.spec.is_private(),
            percent: counts.percent(),
            level: counts.level(threshold),
            counts,
            error,
        });
    }
    // Networks without subnets show up with zero counts (they cannot place a pod).
    for n in networks {
        let name = n.metadata.name.clone().unwrap_or_default();
        if only_network.is_some_and(|o| o != name) {
            continue;
        }
        if !net_counts.keys().any(|(k, _)| *k == name) {
            net_counts.insert((name, "4".into()), (0, Counts::default()));
        }
    }
    let mut network_rows: Vec<NetworkUsage> = net_counts
        .into_iter()
        .map(|((name, version), (n, counts))| NetworkUsage {
            name,
            version,
            subnets: n,
            percent: counts.percent(),
            level: counts.level(threshold),
            counts,
        })
        .collect();
    let by_pct = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal);
    subnet_rows.sort_by(|a, b| by_pct(a.percent, b.percent).then_with(|| a.name.cmp(&b.name)));
    network_rows.sort_by(|a, b| {
        by_pct(a.percent, b.percent)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.version.cmp(&b.version))
    });
    UsageReport {
        threshold,
        subnets: subnet_rows,
        networks: network_rows,
    }
}

fn pct_text(p: f64) -> String {
    format!("{p:.1}%")
}

fn level_cell(l: Level) -> TextCell {
    TextCell::plain(match l {
        Level::Ok => "",
        Level::NearExhaustion => "! near exhaustion",
        Level::Exhausted => "!! exhausted",
    })
    .warned(l != Level::Ok)
}

/// The columns both `ip usage` tables show after their own: the counts, then the level.
const USAGE_HEADER: [&str; 6] = ["TOTAL", "USED", "RESERVED", "AVAILABLE", "USED%", ""];

/// A row's cells for [`USAGE_HEADER`] but the last (the level, which a subnet may replace).
fn count_cells(counts: &Counts, percent: f64, level: Level) -> [TextCell; 5] {
    [
        TextCell::number(counts.total.to_string()),
        TextCell::number(counts.used.to_string()),
        TextCell::number(counts.reserved.to_string()),
        TextCell::number(counts.available.to_string()),
        TextCell::number(pct_text(percent)).warned(level != Level::Ok),
    ]
}

/// The subnet table of `ip usage`.
pub fn subnet_table(rows: &[SubnetUsage]) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let header = [&["SUBNET", "NETWORK", "CIDR"][..], &USAGE_HEADER].concat();
    let cells = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                TextCell::plain(if r.private {
                    format!("{} (private)", r.name)
                } else {
                    r.name.clone()
                }),
                r.network.as_str().into(),
                r.cidr.as_str().into(),
            ];
            row.extend(count_cells(&r.counts, r.percent, r.level));
            row.push(match &r.error {
                Some(e) => TextCell::plain(format!("invalid range: {e}")).warned(true),
                None => level_cell(r.level),
            });
            row
        })
        .collect();
    (header, cells)
}

/// The network table of `ip usage`.
pub fn network_table(rows: &[NetworkUsage]) -> (Vec<&'static str>, Vec<Vec<TextCell>>) {
    let header = [&["NETWORK", "FAMILY", "SUBNETS"][..], &USAGE_HEADER].concat();
    let cells = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.as_str().into(),
                TextCell::plain(format!("IPv{}", r.version)),
                TextCell::number(r.subnets.to_string()),
            ];
            row.extend(count_cells(&r.counts, r.percent, r.level));
            row.push(level_cell(r.level));
            row
        })
        .collect();
    (header, cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testdata::inst;
    use hybridnet_api::v1::{AddressRange, IpVersion, NetworkSpec, SubnetSpec};
    use proptest::prelude::*;

    fn subnet(
        name: &str,
        network: &str,
        cidr: &str,
        gw: Option<&str>,
        reserved: &[&str],
        exclude: &[&str],
    ) -> Subnet {
        let mut s = Subnet::new(
            name,
            SubnetSpec {
                network: network.into(),
                net_id: None,
                range: AddressRange {
                    version: if cidr.contains(':') {
                        IpVersion::V6
                    } else {
                        IpVersion::V4
                    },
                    cidr: cidr.into(),
                    gateway: gw.map(Into::into),
                    reserved_ips: (!reserved.is_empty())
                        .then(|| reserved.iter().map(|s| s.to_string()).collect()),
                    exclude_ips: (!exclude.is_empty())
                        .then(|| exclude.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
                config: None,
            },
        );
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn counts_follow_the_subnet_status_definitions() {
        // /28: 14 hosts; minus gateway .1, excluded .2, reserved .3 => total 11.
        let s = subnet(
            "s1",
            "net",
            "10.0.0.0/28",
            Some("10.0.0.1"),
            &["10.0.0.3"],
            &["10.0.0.2"],
        );
        let inst = vec![
            inst("a", "10.0.0.4", "s1", Some("p1"), Some("n1")),
            inst("a", "10.0.0.5", "s1", Some("web-0"), None), // reserved IPInstance: used
            inst("a", "10.0.0.3", "s1", Some("p3"), Some("n1")), // on a spec-reserved IP: not used
            inst("a", "10.0.0.1", "s1", Some("p4"), Some("n1")), // the gateway: outside, not counted
            inst("a", "10.0.0.6", "other", Some("p5"), Some("n1")), // another subnet
        ];
        let r = usage_report(&[], &[s], &inst, None, 90);
        let c = r.subnets[0].counts;
        assert_eq!(
            c,
            Counts {
                total: 11,
                used: 2,
                reserved: 1,
                available: 9
            }
        );
        assert_eq!(r.subnets[0].percent, 18.2);
        assert_eq!(r.networks[0].counts, c);
    }

    #[test]
    fn sorted_and_highlighted() {
        let subnets = vec![
            subnet("a", "n1", "10.1.0.0/29", None, &[], &[]), // 6 addresses
            subnet("b", "n1", "10.2.0.0/29", None, &[], &[]),
            subnet("c", "n2", "fd00:1::/125", None, &[], &[]), // 7 addresses (v6 keeps the last)
        ];
        let mut inst = Vec::new();
        for i in 1..=6 {
            inst.push(super::super::inventory::testdata::inst(
                "x",
                &format!("10.2.0.{i}"),
                "b",
                Some("p"),
                Some("n"),
            ));
        }
        inst.push(super::super::inventory::testdata::inst(
            "x",
            "10.1.0.1",
            "a",
            Some("p"),
            Some("n"),
        ));
        let mut n1 = Network::new("n1", NetworkSpec::default());
        n1.metadata.name = Some("n1".into());
        let mut empty = Network::new("empty", NetworkSpec::default());
        empty.metadata.name = Some("empty".into());
        let r = usage_report(&[n1, empty], &subnets, &inst, None, 90);
        let names: Vec<&str> = r.subnets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "c"]);
        assert_eq!(r.subnets[0].level, Level::Exhausted);
        assert_eq!(r.subnets[2].counts.total, 7);
        let nets: Vec<(&str, &str)> = r
            .networks
            .iter()
            .map(|n| (n.name.as_str(), n.version.as_str()))
            .collect();
        assert_eq!(nets, vec![("empty", "4"), ("n1", "4"), ("n2", "6")]);
        assert_eq!(
            r.networks[1].counts,
            Counts {
                total: 12,
                used: 7,
                reserved: 0,
                available: 5
            }
        );
        let (header, cells) = subnet_table(&r.subnets);
        assert_eq!(
            header,
            [
                "SUBNET",
                "NETWORK",
                "CIDR",
                "TOTAL",
                "USED",
                "RESERVED",
                "AVAILABLE",
                "USED%",
                ""
            ]
        );
        assert!(cells.iter().all(|row| row.len() == header.len()));
        let b: Vec<&str> = cells[0].iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            b[..8],
            ["b", "n1", "10.2.0.0/29", "6", "6", "0", "0", "100.0%"]
        );
        assert!(cells[0][7].warn && cells[0][7].right);
        assert!(cells[0][8].warn && cells[0][8].text.contains("exhausted"));
        assert!(!cells[1][8].warn);
        let (header, cells) = network_table(&r.networks);
        assert_eq!(
            header,
            [
                "NETWORK",
                "FAMILY",
                "SUBNETS",
                "TOTAL",
                "USED",
                "RESERVED",
                "AVAILABLE",
                "USED%",
                ""
            ]
        );
        assert!(cells.iter().all(|row| row.len() == header.len()));
        let n1: Vec<&str> = cells[1].iter().map(|c| c.text.as_str()).collect();
        assert_eq!(n1, ["n1", "IPv4", "2", "12", "7", "0", "5", "58.3%", ""]);
        let only = usage_report(&[], &subnets, &inst, Some("n2"), 90);
        assert_eq!(only.subnets.len(), 1);
    }

    #[test]
    fn near_exhaustion_threshold() {
        let c = Counts {
            total: 10,
            used: 9,
            reserved: 0,
            available: 1,
        };
        assert_eq!(c.level(90), Level::NearExhaustion);
        assert_eq!(c.level(95), Level::Ok);
        assert_eq!(Counts::default().level(90), Level::Exhausted);
    }

    proptest! {
        #[test]
        fn used_plus_available_is_total(hosts in proptest::collection::btree_set(1u8..=254, 0..60), gw in 1u8..=254, excl in proptest::collection::btree_set(1u8..=254, 0..10), resv in proptest::collection::btree_set(1u8..=254, 0..10)) {
            let ex: Vec<String> = excl.iter().map(|h| format!("10.9.0.{h}")).collect();
            let rv: Vec<String> = resv.iter().map(|h| format!("10.9.0.{h}")).collect();
            let exr: Vec<&str> = ex.iter().map(|s| s.as_str()).collect();
            let rvr: Vec<&str> = rv.iter().map(|s| s.as_str()).collect();
            let gws = format!("10.9.0.{gw}");
            let s = subnet("s", "n", "10.9.0.0/24", Some(&gws), &rvr, &exr);
            let inst: Vec<InstanceFacts> = hosts.iter().map(|h| super::super::inventory::testdata::inst("a", &format!("10.9.0.{h}"), "s", Some("p"), Some("n"))).collect();
            let r = usage_report(&[], &[s], &inst, None, 90);
            let c = r.subnets[0].counts;
            prop_assert_eq!(c.used + c.available, c.total);
            prop_assert!(c.reserved <= c.used);
            prop_assert!(c.used <= hosts.len() as u64);
            prop_assert!(r.subnets[0].percent >= 0.0 && r.subnets[0].percent <= 100.0);
            // Every counted address is one the allocator could have handed out.
            let allocatable: std::collections::BTreeSet<u8> = (1..=254u8).filter(|h| *h != gw && !excl.contains(h) && !resv.contains(h)).collect();
            prop_assert_eq!(c.total, allocatable.len() as u64);
            prop_assert_eq!(c.used, hosts.intersection(&allocatable).count() as u64);
        }
    }
}

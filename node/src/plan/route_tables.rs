//! The subnet -> routing table assignment of a node agent, published in its NodeInfo as an
//! annotation so that `kubectl hybridnet trace` plans with the table numbers the agent really
//! uses (they depend on the kernel state the agent adopted, which the API does not otherwise show).
//!
//! Wire form: compact JSON keyed by IP family, then by the subnet's canonical CIDR (the key the
//! plan itself uses), e.g. `{"4":{"10.0.0.0/24":10000},"6":{"fd00::/64":10001}}`.

use std::collections::BTreeMap;

use hybridnet_api::ipmath::Cidr;
use hybridnet_api::v1::IpVersion;

use super::DataPlanePlan;

/// NodeInfo annotation holding the agent's [`RouteTables`].
pub const ROUTE_TABLES_ANNOTATION: &str = hybridnet_api::constants::annotation::NODE_ROUTE_TABLES;

/// Upper bound on entries accepted from the annotation (far above any real node).
const MAX_ENTRIES: usize = 65_536;

/// Subnet CIDR -> routing table number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTables(pub BTreeMap<Cidr, u32>);

/// A malformed route-tables annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {ROUTE_TABLES_ANNOTATION}: {0}")]
pub struct RouteTablesError(String);

impl RouteTables {
    /// The tables a plan assigned to its subnets.
    pub fn of_plan(plan: &DataPlanePlan) -> Self {
        Self(
            plan.subnet_tables
                .iter()
                .map(|(c, t)| (*c, t.table))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The annotation value (compact JSON; families without subnets are left out).
    pub fn to_annotation(&self) -> String {
        let mut by_family: BTreeMap<&str, BTreeMap<String, u32>> = BTreeMap::new();
        for (c, t) in &self.0 {
            by_family
                .entry(family_key(c.version))
                .or_default()
                .insert(c.to_string(), *t);
        }
        // A map of strings to maps of strings to integers always serializes.
        serde_json::to_string(&by_family).unwrap_or_else(|_| "{}".to_string())
    }

    /// Parses an annotation value; every CIDR must be canonical and of the family it is filed under.
    pub fn parse_annotation(value: &str) -> Result<Self, RouteTablesError> {
        let raw: BTreeMap<String, BTreeMap<String, u32>> =
            serde_json::from_str(value).map_err(|e| {
                RouteTablesError(format!(
                    "not a JSON object of family -> {{CIDR: table number}}: {e}"
                ))
            })?;
        let mut out = BTreeMap::new();
        for (family, subnets) in raw {
            let version = match family.as_str() {
                "4" => IpVersion::V4,
                "6" => IpVersion::V6,
                other => {
                    return Err(RouteTablesError(format!(
                        "unknown IP family {other:?} (expected \"4\" or \"6\")"
                    )));
                }
            };
            for (cidr, table) in subnets {
                let c = Cidr::parse_canonical(&cidr)
                    .map_err(|e| RouteTablesError(format!("family {family}: {e}")))?;
                if c.version != version {
                    return Err(RouteTablesError(format!(
                        "{cidr} is filed under IP family {family}"
                    )));
                }
                out.insert(c, table);
                if out.len() > MAX_ENTRIES {
                    return Err(RouteTablesError(format!("more than {MAX_ENTRIES} subnets")));
                }
            }
        }
        Ok(Self(out))
    }
}

fn family_key(v: IpVersion) -> &'static str {
    match v {
        IpVersion::V4 => "4",
        IpVersion::V6 => "6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse_canonical(s).unwrap()
    }

    #[test]
    fn wire_form_is_per_family_and_compact() {
        let t = RouteTables(BTreeMap::from([
            (cidr("10.0.0.0/24"), 10001),
            (cidr("198.19.0.0/16"), 10000),
            (cidr("fd00::/64"), 10002),
        ]));
        assert_eq!(
            t.to_annotation(),
            r#"{"4":{"10.0.0.0/24":10001,"198.19.0.0/16":10000},"6":{"fd00::/64":10002}}"#
        );
        assert_eq!(RouteTables::default().to_annotation(), "{}");
        assert_eq!(
            RouteTables::parse_annotation("{}").unwrap(),
            RouteTables::default()
        );
    }

    #[test]
    fn malformed_and_hostile_values_are_rejected_with_the_annotation_named() {
        for (value, why) in [
            ("", "not a JSON object"),
            ("[]", "not a JSON object"),
            (r#"{"4":{"10.0.0.0/24":-1}}"#, "not a JSON object"),
            (r#"{"4":{"10.0.0.0/24":4294967296}}"#, "not a JSON object"),
            (r#"{"4":{"10.0.0.0/24":"10000"}}"#, "not a JSON object"),
            (r#"{"4":["10.0.0.0/24"]}"#, "not a JSON object"),
            (r#"{"5":{"10.0.0.0/24":10000}}"#, "unknown IP family \"5\""),
            (r#"{"4":{"10.0.0.1/24":10000}}"#, "not canonical"),
            (r#"{"4":{"10.0.0.0":10000}}"#, "missing /prefix"),
            (r#"{"4":{"10.0.0.0/33":10000}}"#, "prefix length 33"),
            (r#"{"6":{"10.0.0.0/24":10000}}"#, "filed under IP family 6"),
            (r#"{"4":{"fd00::/64":10000}}"#, "filed under IP family 4"),
        ] {
            let e = RouteTables::parse_annotation(value)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("annotation {ROUTE_TABLES_ANNOTATION}: ")),
                "{value}: {e}"
            );
            assert!(e.contains(why), "{value}: {e}");
        }
    }

    proptest! {
        #[test]
        fn annotation_round_trips(
            entries in proptest::collection::vec((any::<bool>(), any::<u128>(), 0u8..=128, any::<u32>()), 0..20)
        ) {
            let mut m = BTreeMap::new();
            for (v6, addr, prefix, table) in entries {
                let (version, prefix) = if v6 { (IpVersion::V6, prefix) } else { (IpVersion::V4, prefix % 33) };
                let addr = if v6 { addr } else { addr & 0xffff_ffff };
                let c = Cidr { version, network: addr, prefix };
                let c = Cidr { network: c.first(), ..c };
                m.insert(c, table);
            }
            let t = RouteTables(m);
            prop_assert_eq!(RouteTables::parse_annotation(&t.to_annotation()).unwrap(), t);
        }
    }
}

//! Exclude blocks of a (merged) subnet (upstream `pkg/daemon/route/utils.go`): the addresses of its CIDR that are not
//! pod addresses, as minimal aligned CIDR blocks. They become `throw` routes so that gateways and
//! physical hosts inside a pod CIDR are reached through the main table instead of the VXLAN device.

use hybridnet_api::ipmath::{Cidr, range_to_cidrs};
use hybridnet_api::range::ParsedRange;

/// One Subnet's contribution to a merged CIDR.
#[derive(Clone, Debug)]
pub struct RangePart {
    pub parsed: ParsedRange,
    /// `start` or `end` was given explicitly (only then the space outside [start, end] is excluded).
    pub explicit_bounds: bool,
}

/// Excluded blocks of the CIDR shared by `parts`. Overlapping allocatable spans are an error.
pub fn exclude_blocks(cidr: Cidr, parts: &[RangePart]) -> Result<Vec<Cidr>, String> {
    let mut spans: Vec<(u128, u128)> = parts
        .iter()
        .map(|p| (p.parsed.start, p.parsed.end))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(format!(
                "subnets of {cidr} have overlapping ranges ({}..{} and {}..{})",
                w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
    }
    // Excluded single addresses and ranges, as inclusive integer pairs.
    let mut excluded: Vec<(u128, u128)> = Vec::new();
    if parts.iter().any(|p| p.explicit_bounds) {
        let mut cur = cidr.first();
        for &(s, e) in &spans {
            if s > cur {
                excluded.push((cur, s - 1));
            }
            cur = e.saturating_add(1);
        }
        if let Some(&(_, e)) = spans.last()
            && e < cidr.last()
        {
            excluded.push((e + 1, cidr.last()));
        }
    }
    for p in parts {
        if let Some(g) = p.parsed.gateway {
            excluded.push((g, g));
        }
        for &x in &p.parsed.excluded {
            excluded.push((x, x));
        }
    }
    excluded.sort_unstable();
    // Merge overlapping and adjacent ranges so the CIDR split is minimal.
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (s, e) in excluded {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    Ok(merged
        .into_iter()
        .flat_map(|(s, e)| range_to_cidrs(cidr.version, s, e))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridnet_api::range::parse_address_range;
    use hybridnet_api::v1::{AddressRange, IpVersion};

    fn part(
        cidr: &str,
        start: Option<&str>,
        end: Option<&str>,
        gw: Option<&str>,
        ex: &[&str],
    ) -> RangePart {
        let r = AddressRange {
            version: if cidr.contains(':') {
                IpVersion::V6
            } else {
                IpVersion::V4
            },
            cidr: cidr.into(),
            start: start.map(Into::into),
            end: end.map(Into::into),
            gateway: gw.map(Into::into),
            reserved_ips: None,
            exclude_ips: Some(ex.iter().map(|s| s.to_string()).collect()),
        };
        RangePart {
            parsed: parse_address_range(&r, "spec.range").unwrap(),
            explicit_bounds: start.is_some() || end.is_some(),
        }
    }

    fn strs(v: Vec<Cidr>) -> Vec<String> {
        v.into_iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn spec_example() {
        let p = part(
            "192.168.3.0/24",
            Some("192.168.3.100"),
            Some("192.168.3.200"),
            Some("192.168.3.1"),
            &[],
        );
        let c = p.parsed.cidr;
        assert_eq!(
            strs(exclude_blocks(c, &[p]).unwrap()),
            [
                "192.168.3.0/26",
                "192.168.3.64/27",
                "192.168.3.96/30",
                "192.168.3.201/32",
                "192.168.3.202/31",
                "192.168.3.204/30",
                "192.168.3.208/28",
                "192.168.3.224/27"
            ]
        );
    }

    #[test]
    fn without_bounds_only_gateway_and_excludes() {
        let p = part(
            "198.18.0.0/24",
            None,
            None,
            Some("198.18.0.1"),
            &["198.18.0.2", "198.18.0.9"],
        );
        let c = p.parsed.cidr;
        assert_eq!(
            strs(exclude_blocks(c, &[p]).unwrap()),
            ["198.18.0.1/32", "198.18.0.2/32", "198.18.0.9/32"]
        );
    }

    #[test]
    fn merged_ranges_leave_gaps_excluded() {
        let a = part(
            "198.18.0.0/24",
            Some("198.18.0.10"),
            Some("198.18.0.19"),
            None,
            &[],
        );
        let b = part(
            "198.18.0.0/24",
            Some("198.18.0.40"),
            Some("198.18.0.255"),
            None,
            &[],
        );
        let c = a.parsed.cidr;
        assert_eq!(
            strs(exclude_blocks(c, &[b, a]).unwrap()),
            [
                "198.18.0.0/29",
                "198.18.0.8/31",
                "198.18.0.20/30",
                "198.18.0.24/29",
                "198.18.0.32/29"
            ]
        );
    }

    #[test]
    fn overlapping_ranges_are_an_error() {
        let a = part(
            "198.18.0.0/24",
            Some("198.18.0.10"),
            Some("198.18.0.50"),
            None,
            &[],
        );
        let b = part(
            "198.18.0.0/24",
            Some("198.18.0.40"),
            Some("198.18.0.60"),
            None,
            &[],
        );
        let c = a.parsed.cidr;
        assert!(
            exclude_blocks(c, &[a, b])
                .unwrap_err()
                .contains("overlapping")
        );
    }

    #[test]
    fn ipv6_gateway() {
        let p = part("fd00:1::/112", None, None, Some("fd00:1::1"), &[]);
        let c = p.parsed.cidr;
        assert_eq!(strs(exclude_blocks(c, &[p]).unwrap()), ["fd00:1::1/128"]);
    }
}

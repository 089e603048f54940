//! Validation and interpretation of a Subnet's address range (upstream `pkg/ipam/types/subnet.go`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::error::{FieldError, FieldErrors};
use crate::ipmath::{Cidr, ip_to_u128, parse_ip, u128_to_ip};
use crate::v1::{AddressRange, IpVersion};

/// Largest number of addresses a Subnet may hold.
pub const MAX_SUBNET_CAPACITY: u128 = 1 << 16;

/// A validated address range, addresses as integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRange {
    pub version: IpVersion,
    pub cidr: Cidr,
    /// First allocatable address.
    pub start: u128,
    /// Last allocatable address.
    pub end: u128,
    pub gateway: Option<u128>,
    /// Reserved addresses inside the CIDR (handed out only by forced assignment).
    pub reserved: BTreeSet<u128>,
    /// Excluded addresses inside the CIDR (never handed out).
    pub excluded: BTreeSet<u128>,
}

impl ParsedRange {
    /// Upstream `Contains`: in range, not the gateway, not excluded.
    pub fn contains(&self, n: u128) -> bool {
        n >= self.start && n <= self.end && Some(n) != self.gateway && !self.excluded.contains(&n)
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        IpVersion::of(&ip) == self.version && self.contains(ip_to_u128(ip))
    }

    /// Whether an address held by an IPInstance counts as `used` in the Subnet status: one the
    /// allocator could hand out ([`Self::contains`] and not reserved), so that `used` never
    /// exceeds [`Self::allocatable_count`]. A holding on a reserved or excluded address (a forced
    /// assignment, or an address reserved after it was taken) is not counted. The operator's
    /// Subnet status and `kubectl hybridnet ip usage` both count with this.
    pub fn counts_as_used(&self, n: u128) -> bool {
        self.contains(n) && !self.reserved.contains(&n)
    }

    /// Addresses in `[start, end]` minus excluded ones (the quantity limited to 65,536).
    pub fn capacity(&self) -> u128 {
        let span = self.end - self.start;
        let excluded_inside = self.excluded.range(self.start..=self.end).count() as u128;
        span.saturating_add(1).saturating_sub(excluded_inside)
    }

    /// Addresses the allocator may hand out on its own: `Contains` and not reserved. This is the
    /// Subnet `status.total` (upstream `pkg/ipam/types/usage.go`).
    pub fn allocatable_count(&self) -> u128 {
        let mut n = self.capacity();
        if let Some(g) = self.gateway
            && g >= self.start
            && g <= self.end
            && !self.excluded.contains(&g)
        {
            n -= 1;
        }
        let reserved_allocatable =
            self.reserved.iter().filter(|r| self.contains(**r)).count() as u128;
        n.saturating_sub(reserved_allocatable)
    }

    pub fn ip(&self, n: u128) -> IpAddr {
        u128_to_ip(self.version, n)
    }

    /// Whether some address lies in both ranges' `start..=end` and is excluded by neither: upstream
    /// `utils.Intersect` (pkg/utils/ip_range.go), which enumerates every address of both ranges,
    /// computed here on the intervals. The gateway and reserved addresses count, as upstream. Ranges
    /// of different families never intersect.
    pub fn intersects(&self, other: &ParsedRange) -> bool {
        if self.version != other.version {
            return false;
        }
        let (lo, hi) = (self.start.max(other.start), self.end.min(other.end));
        if lo > hi {
            return false;
        }
        // The addresses in lo..=hi that either side excludes; the interval is wider than that set
        // unless every address in it is excluded (both sets are finite lists from the spec).
        let mut excluded: BTreeSet<u128> = self.excluded.range(lo..=hi).copied().collect();
        excluded.extend(other.excluded.range(lo..=hi));
        let width = hi - lo; // number of addresses - 1, no overflow for 0..=u128::MAX
        (excluded.len() as u128) <= width
    }

    /// Whether two ranges with the same CIDR share an allocatable span (upstream: either's start or
    /// end inside the other).
    pub fn spans_overlap(&self, other: &ParsedRange) -> bool {
        self.version == other.version && self.start <= other.end && other.start <= self.end
    }
}

/// Validates `range` (found at JSON path `path`, normally `spec.range`) and resolves its defaults.
///
/// Rules: version matches the CIDR; canonical CIDR; /31, /32, /127, /128 refused; start, end,
/// gateway, reserved and excluded addresses parse, are of the family and inside the CIDR;
/// start <= end; capacity at most 65,536.
pub fn parse_address_range(range: &AddressRange, path: &str) -> Result<ParsedRange, FieldErrors> {
    let parsed = parse_range_shape(range, path)?;
    let cap = parsed.capacity();
    if cap > MAX_SUBNET_CAPACITY {
        return Err(FieldError::new(
            path.to_string(),
            format!(
                "{} holds {cap} addresses, more than the limit of {MAX_SUBNET_CAPACITY}; use a smaller CIDR or start/end",
                range.cidr
            ),
        )
        .into());
    }
    Ok(parsed)
}

/// [`parse_address_range`] without the capacity limit: for ranges nothing here allocates from
/// (a RemoteSubnet mirrors a Subnet another cluster's IPAM owns).
pub fn parse_range_shape(range: &AddressRange, path: &str) -> Result<ParsedRange, FieldErrors> {
    let mut errs = FieldErrors::default();
    let cidr = match Cidr::parse_canonical(&range.cidr) {
        Ok(c) => c,
        Err(e) => {
            errs.push(FieldError::new(format!("{path}.cidr"), e));
            return Err(errs);
        }
    };
    if cidr.version != range.version {
        errs.push(FieldError::new(
            format!("{path}.version"),
            format!(
                "\"{}\" does not match the IPv{} CIDR {}",
                range.version, cidr.version, range.cidr
            ),
        ));
        return Err(errs);
    }
    if cidr.prefix + 2 > cidr.version.bits() {
        errs.push(FieldError::new(
            format!("{path}.cidr"),
            format!(
                "{} is too small: prefix length must be at most /{}",
                range.cidr,
                cidr.version.bits() - 2
            ),
        ));
        return Err(errs);
    }

    let one = |field: &str, raw: &str, errs: &mut FieldErrors| -> Option<u128> {
        let f = format!("{path}.{field}");
        match parse_ip(raw) {
            Err(e) => {
                errs.push(FieldError::new(f, e));
                None
            }
            Ok(ip) if IpVersion::of(&ip) != cidr.version => {
                errs.push(FieldError::new(
                    f,
                    format!("{raw} is not an IPv{} address", cidr.version),
                ));
                None
            }
            Ok(ip) if !cidr.contains(ip) => {
                errs.push(FieldError::new(
                    f,
                    format!("{raw} is outside {}", range.cidr),
                ));
                None
            }
            Ok(ip) => Some(ip_to_u128(ip)),
        }
    };

    let default_start = cidr.first() + 1;
    let default_end = match cidr.version {
        IpVersion::V4 => cidr.last() - 1,
        IpVersion::V6 => cidr.last(),
    };
    // An empty string means "not set", as in upstream (its Go client writes `gateway: ""` for a
    // subnet without one: pkg/apis/networking/v1/types.go, `AddressRange`).
    let start = match range.start.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => one("start", s, &mut errs),
        None => Some(default_start),
    };
    let end = match range.end.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => one("end", s, &mut errs),
        None => Some(default_end),
    };
    let gateway = match range.gateway() {
        Some(s) => one("gateway", s, &mut errs),
        None => None,
    };
    let mut reserved = BTreeSet::new();
    for (i, s) in range.reserved_ips.iter().flatten().enumerate() {
        if let Some(n) = one(&format!("reservedIPs[{i}]"), s, &mut errs) {
            reserved.insert(n);
        }
    }
    let mut excluded = BTreeSet::new();
    for (i, s) in range.exclude_ips.iter().flatten().enumerate() {
        if let Some(n) = one(&format!("excludeIPs[{i}]"), s, &mut errs) {
            excluded.insert(n);
        }
    }
    let (Some(start), Some(end)) = (start, end) else {
        return Err(errs);
    };
    if start > end {
        errs.push(FieldError::new(
            format!("{path}.start"),
            format!(
                "{} is after end {}",
                u128_to_ip(cidr.version, start),
                u128_to_ip(cidr.version, end)
            ),
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ParsedRange {
        version: cidr.version,
        cidr,
        start,
        end,
        gateway,
        reserved,
        excluded,
    })
}

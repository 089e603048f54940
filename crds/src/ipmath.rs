//! IP arithmetic on 128-bit integers: one code path for both families, no overflow, subnets that start
//! at 0.0.0.0 work (upstream bugs of v0.3.2, v0.7.6-v0.7.8).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::v1::IpVersion;

/// The address as an unsigned integer (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `version` with integer value `n` (IPv4 takes the low 32 bits).
pub fn u128_to_ip(version: IpVersion, n: u128) -> IpAddr {
    match version {
        IpVersion::V4 => IpAddr::V4(Ipv4Addr::from((n & 0xffff_ffff) as u32)),
        IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Parses one address strictly (no whitespace, no zone, no leading zeros in IPv4 octets).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// A canonical CIDR block of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub version: IpVersion,
    /// The network address as an integer.
    pub network: u128,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n`; the address must be the network address (canonical).
    pub fn parse_canonical(s: &str) -> Result<Self, String> {
        let c = Self::parse_any(s)?;
        if c.network != c.network_of(c.network) {
            let canonical = c.network_of(c.network);
            return Err(format!(
                "{s} is not canonical: the network address is {}/{}",
                u128_to_ip(c.version, canonical),
                c.prefix
            ));
        }
        Ok(c)
    }

    /// Parses a CIDR whose address may have host bits set (e.g. an IPInstance's `10.0.0.5/24`);
    /// `network` then holds that address, not the network address.
    pub fn parse_any(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (missing /prefix)"))?;
        let ip = parse_ip(addr).map_err(|_| format!("{s:?} is not a CIDR (bad address)"))?;
        let version = IpVersion::of(&ip);
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a CIDR (bad prefix length)"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (bad prefix length)"))?;
        if prefix > version.bits() {
            return Err(format!(
                "{s:?} has prefix length {prefix}, more than {}",
                version.bits()
            ));
        }
        Ok(Self {
            version,
            network: ip_to_u128(ip),
            prefix,
        })
    }

    fn host_mask(&self) -> u128 {
        let host_bits = u32::from(self.version.bits() - self.prefix);
        if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    fn network_of(&self, n: u128) -> u128 {
        n & !self.host_mask()
    }

    /// First address (the network address).
    pub fn first(&self) -> u128 {
        self.network_of(self.network)
    }

    /// Last address (the IPv4 broadcast address).
    pub fn last(&self) -> u128 {
        self.first() | self.host_mask()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        IpVersion::of(&ip) == self.version && self.contains_u128(ip_to_u128(ip))
    }

    pub fn contains_u128(&self, n: u128) -> bool {
        n >= self.first() && n <= self.last()
    }

    /// Whether two blocks share any address.
    pub fn intersects(&self, other: &Cidr) -> bool {
        self.version == other.version
            && self.first() <= other.last()
            && other.first() <= self.last()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            u128_to_ip(self.version, self.first()),
            self.prefix
        )
    }
}

/// Splits the inclusive range `[first, last]` into the minimal list of aligned CIDR blocks
/// (used for throw routes of excluded addresses).
pub fn range_to_cidrs(version: IpVersion, first: u128, last: u128) -> Vec<Cidr> {
    let bits = u32::from(version.bits());
    let mut out = Vec::new();
    if first > last {
        return out;
    }
    let mut cur = first;
    loop {
        // Largest block aligned at `cur` that does not pass `last`.
        let align = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        let mut size_bits = align;
        while size_bits > 0 {
            let span = if size_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << size_bits) - 1
            };
            match cur.checked_add(span) {
                Some(end) if end <= last => break,
                _ => size_bits -= 1,
            }
        }
        out.push(Cidr {
            version,
            network: cur,
            prefix: (bits - size_bits) as u8,
        });
        let span = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        match cur.checked_add(span) {
            Some(end) if end < last => cur = end + 1,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_cidrs() {
        let c = Cidr::parse_canonical("10.0.0.0/24").unwrap();
        assert_eq!(c.prefix, 24);
        assert_eq!(u128_to_ip(c.version, c.last()).to_string(), "10.0.0.255");
        assert!(
            Cidr::parse_canonical("10.0.0.1/24")
                .unwrap_err()
                .contains("network address is 10.0.0.0/24")
        );
        assert!(Cidr::parse_canonical("0.0.0.0/24").is_ok());
        assert!(Cidr::parse_canonical("fd00::/120").is_ok());
        assert!(Cidr::parse_canonical("::/0").is_ok());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "fd00::/129",
            " 10.0.0.0/8",
            "010.0.0.0/8",
        ] {
            assert!(Cidr::parse_canonical(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_v6_space_has_no_overflow() {
        let c = Cidr::parse_canonical("::/0").unwrap();
        assert_eq!(c.first(), 0);
        assert_eq!(c.last(), u128::MAX);
        assert_eq!(range_to_cidrs(IpVersion::V6, 0, u128::MAX), vec![c]);
    }

    #[test]
    fn upstream_exclude_block_example() {
        // 192.168.3.0/24, gateway .1, start .100, end .200, without the gateway.
        let v = IpVersion::V4;
        let base = ip_to_u128("192.168.3.0".parse().unwrap());
        let mut blocks: Vec<String> = range_to_cidrs(v, base, base + 99)
            .into_iter()
            .chain(range_to_cidrs(v, base + 201, base + 255))
            .map(|c| c.to_string())
            .collect();
        blocks.sort();
        let mut want = vec![
            "192.168.3.0/26",
            "192.168.3.64/27",
            "192.168.3.96/30",
            "192.168.3.201/32",
            "192.168.3.202/31",
            "192.168.3.204/30",
            "192.168.3.208/28",
            "192.168.3.224/27",
        ];
        want.sort();
        assert_eq!(blocks, want);
    }
}

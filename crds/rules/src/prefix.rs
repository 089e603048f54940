//! The one IP prefix type of hybridnet: [`Cidr`], an address family, a 128-bit address and a
//! prefix length. The operator's IPAM, the node agent's plan, the BGP speaker, the CNI plugin and
//! the CLI all use it, so a prefix parses, compares and prints the same everywhere.
//!
//! One code path for both families on 128-bit integers: no overflow, and subnets that start at
//! 0.0.0.0 work (upstream bugs of v0.3.2, v0.7.6-v0.7.8). docs/architecture.md says why this is
//! our own type and not `ipnetwork`'s.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// IP version of an address range: `"4"` or `"6"` on the wire.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum IpVersion {
    #[serde(rename = "4")]
    V4,
    #[serde(rename = "6")]
    V6,
}

impl IpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "4",
            Self::V6 => "6",
        }
    }

    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// Number of address bits of this family.
    pub fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }
}

impl fmt::Display for IpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        .map_err(|_| format!("{} is not an IP address", crate::shown(s)))
}

/// A block of one family: `network` is the address as written (host bits may be set, as in an
/// interface address `10.0.0.5/24`) unless the constructor says it is canonical.
///
/// Equality and order are those of (family, address, length): IPv4 before IPv6, then by address,
/// then by length, which is the order BGP's Adj-RIB-Out and the plan's sets rely on. Build
/// canonical values ([`Cidr::parse_canonical`], [`Cidr::masked`], [`Cidr::canonical`]) where two
/// spellings of one block must compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub version: IpVersion,
    /// The address as an integer (the network address for a canonical block).
    pub network: u128,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n`; the address must be the network address (canonical).
    pub fn parse_canonical(s: &str) -> Result<Self, String> {
        let c = Self::parse_any(s)?;
        if c.network != c.first() {
            return Err(format!(
                "{s} is not canonical: the network address is {}",
                c.canonical()
            ));
        }
        Ok(c)
    }

    /// Parses a CIDR whose address may have host bits set (e.g. an IPInstance's `10.0.0.5/24`);
    /// `network` then holds that address, not the network address. The length is one to three
    /// decimal digits (no sign, no whitespace), as `ip` and the Kubernetes API accept it.
    pub fn parse_any(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{} is not a CIDR (missing /prefix)", crate::shown(s)))?;
        let ip = parse_ip(addr)
            .map_err(|_| format!("{} is not a CIDR (bad address)", crate::shown(s)))?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{} is not a CIDR (bad prefix length)",
                crate::shown(s)
            ));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{} is not a CIDR (bad prefix length)", crate::shown(s)))?;
        Self::new(ip, prefix).ok_or_else(|| {
            format!(
                "{} has prefix length {prefix}, more than {}",
                crate::shown(s),
                IpVersion::of(&ip).bits()
            )
        })
    }

    /// A route destination as BGP and `ip route` spell it: `ADDRESS/LENGTH` (host bits cleared)
    /// or a bare address (a host route).
    pub fn parse_route(s: &str) -> Result<Self, String> {
        if s.contains('/') {
            Self::parse_any(s).map(|c| c.canonical())
        } else {
            parse_ip(s).map(Self::host)
        }
    }

    /// `addr/len` with the host bits of `addr` kept; `None` when `len` exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let version = IpVersion::of(&addr);
        (len <= version.bits()).then_some(Self {
            version,
            network: ip_to_u128(addr),
            prefix: len,
        })
    }

    /// The block of `len` bits containing `addr` (host bits cleared); `None` when `len` exceeds
    /// the family's width.
    pub fn masked(addr: IpAddr, len: u8) -> Option<Self> {
        Self::new(addr, len).map(|c| c.canonical())
    }

    /// A host prefix (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        let version = IpVersion::of(&addr);
        Self {
            version,
            network: ip_to_u128(addr),
            prefix: version.bits(),
        }
    }

    /// The default route of a family (`0.0.0.0/0` or `::/0`).
    pub fn default_route(version: IpVersion) -> Self {
        Self {
            version,
            network: 0,
            prefix: 0,
        }
    }

    /// The address as written (the network address for a canonical block).
    pub fn addr(&self) -> IpAddr {
        u128_to_ip(self.version, self.network)
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.prefix
    }

    /// True for a default route (the only block with no significant bits).
    pub fn is_empty(&self) -> bool {
        self.prefix == 0
    }

    pub fn is_ipv4(&self) -> bool {
        self.version == IpVersion::V4
    }

    /// The same block with the host bits cleared.
    pub fn canonical(&self) -> Self {
        Self {
            network: self.first(),
            ..*self
        }
    }

    /// `addr/len` as an interface address is written (host bits shown); [`fmt::Display`] shows
    /// the block (`network/len`).
    pub fn interface(&self) -> InterfaceAddress {
        InterfaceAddress(*self)
    }

    fn host_mask(&self) -> u128 {
        let host_bits = u32::from(self.version.bits().saturating_sub(self.prefix));
        if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    /// First address (the network address).
    pub fn first(&self) -> u128 {
        self.network & !self.host_mask()
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

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            u128_to_ip(self.version, self.first()),
            self.prefix
        )
    }
}

/// `"10.0.0.5/24"` parses as [`Cidr::parse_any`] does (host bits kept, nothing lost).
impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse_any(s)
    }
}

/// A [`Cidr`] shown as an interface address: `10.0.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress(pub Cidr);

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.addr(), self.0.prefix)
    }
}

/// Serde for a [`Cidr`] field spelled as an interface address (`10.0.0.5/24`, host bits kept),
/// as CNI results carry `ips[].address` and `routes[].dst`:
/// `#[serde(with = "hybridnet_rules::prefix::interface_serde")]`.
pub mod interface_serde {
    use super::*;

    pub fn serialize<S: Serializer>(c: &Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&c.interface())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse_any(&s).map_err(serde::de::Error::custom)
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
    let span_of = |size_bits: u32| {
        if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        }
    };
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
            match cur.checked_add(span_of(size_bits)) {
                Some(end) if end <= last => break,
                _ => size_bits -= 1,
            }
        }
        out.push(Cidr {
            version,
            network: cur,
            prefix: (bits - size_bits) as u8,
        });
        match cur.checked_add(span_of(size_bits)) {
            Some(end) if end < last => cur = end + 1,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            "10.0.0.0/-8",
            "10.0.0.0/0008",
            "10.0.0.0/ 8",
            "x/8",
            "fd00::/129",
            " 10.0.0.0/8",
            "010.0.0.0/8",
            "10.1/16",
            "fe80::1%eth0/64",
            "",
        ] {
            assert!(Cidr::parse_canonical(bad).is_err(), "{bad}");
            assert!(Cidr::parse_any(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_values_are_cut_in_errors() {
        let long = format!("{}/8", "1".repeat(100_000));
        let e = Cidr::parse_any(&long).unwrap_err();
        assert!(e.len() < 200, "{e}");
        let e = Cidr::parse_any("a\n/8").unwrap_err();
        assert!(e.contains("\\n"), "{e}");
    }

    #[test]
    fn interface_addresses_keep_host_bits() {
        let c = Cidr::parse_any("198.18.0.5/24").unwrap();
        assert_eq!(c.interface().to_string(), "198.18.0.5/24");
        assert_eq!(c.to_string(), "198.18.0.0/24");
        assert_eq!(c.addr().to_string(), "198.18.0.5");
        assert_eq!(
            c.canonical(),
            Cidr::parse_canonical("198.18.0.0/24").unwrap()
        );
        assert_ne!(c, c.canonical());
        let h = Cidr::host("fd00::5".parse().unwrap());
        assert_eq!(h.interface().to_string(), "fd00::5/128");
        assert_eq!(Cidr::default_route(IpVersion::V6).to_string(), "::/0");
    }

    #[test]
    fn routes_parse_as_bgp_and_ip_route_write_them() {
        assert_eq!(
            Cidr::parse_route("198.18.0.5").unwrap().to_string(),
            "198.18.0.5/32"
        );
        let m = Cidr::parse_route("198.18.7.9/24").unwrap();
        assert_eq!(m.interface().to_string(), "198.18.7.0/24");
        assert!(Cidr::parse_route("198.18.0.0/").is_err());
        assert!(Cidr::parse_route("198.18.0.0/40").is_err());
        assert!(Cidr::parse_route("nonsense/8").is_err());
        assert!(Cidr::parse_route("").is_err());
    }

    #[test]
    fn lengths_beyond_the_family_are_refused() {
        assert!(Cidr::new("198.18.0.1".parse().unwrap(), 33).is_none());
        assert!(Cidr::masked("fd00::1".parse().unwrap(), 129).is_none());
        assert_eq!(
            Cidr::masked("1.2.3.4".parse().unwrap(), 0)
                .unwrap()
                .to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn order_is_family_then_address_then_length() {
        let mut v: Vec<Cidr> = [
            "fd00::/8",
            "198.18.1.0/24",
            "198.18.0.0/24",
            "198.18.0.0/16",
        ]
        .iter()
        .map(|s| Cidr::parse_canonical(s).unwrap())
        .collect();
        v.sort();
        let shown: Vec<String> = v.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            [
                "198.18.0.0/16",
                "198.18.0.0/24",
                "198.18.1.0/24",
                "fd00::/8"
            ]
        );
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

    #[test]
    fn interface_serde_round_trips_and_refuses_garbage() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Ip {
            #[serde(with = "interface_serde")]
            address: Cidr,
        }
        let ip = Ip {
            address: Cidr::parse_any("198.18.0.5/24").unwrap(),
        };
        let json = serde_json::to_string(&ip).unwrap();
        assert_eq!(json, r#"{"address":"198.18.0.5/24"}"#);
        assert_eq!(serde_json::from_str::<Ip>(&json).unwrap(), ip);
        for bad in [
            r#"{"address":"198.18.0.5"}"#,
            r#"{"address":7}"#,
            r#"{"address":"x/1"}"#,
        ] {
            assert!(serde_json::from_str::<Ip>(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn interface_form_round_trips(a in any::<u32>(), l in 0u8..=32, b in any::<u128>(), l6 in 0u8..=128) {
            for c in [Cidr::new(IpAddr::V4(a.into()), l).unwrap(), Cidr::new(IpAddr::V6(b.into()), l6).unwrap()] {
                prop_assert_eq!(Cidr::parse_any(&c.interface().to_string()).unwrap(), c);
                prop_assert_eq!(Cidr::parse_canonical(&c.to_string()).unwrap(), c.canonical());
                prop_assert!(c.contains(c.addr()));
                prop_assert_eq!(c.canonical().first(), c.first());
            }
        }

        #[test]
        fn range_blocks_cover_exactly_the_range(a in any::<u32>(), n in 0u32..5000) {
            let first = u128::from(a);
            let last = (first + u128::from(n)).min(u128::from(u32::MAX));
            let blocks = range_to_cidrs(IpVersion::V4, first, last);
            let mut next = first;
            for b in &blocks {
                prop_assert_eq!(b.first(), next);
                prop_assert_eq!(*b, b.canonical());
                next = b.last() + 1;
            }
            prop_assert_eq!(next, last + 1);
        }
    }
}

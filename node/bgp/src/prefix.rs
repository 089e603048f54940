//! IP prefixes as BGP carries them: an address with its host bits cleared and a length.
//!
//! The constructors mask host bits, so two prefixes that cover the same addresses are equal
//! and encode to the same bytes (needed for Adj-RIB-Out diffs and codec round trips).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A prefix could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {len} is longer than {max} bits")]
    LengthTooLong { len: u8, max: u8 },
    #[error("prefix {input:?} is not ADDRESS/LENGTH")]
    Syntax { input: String },
}

/// An IPv4 prefix with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// Builds a prefix, clearing the host bits of `addr`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::LengthTooLong { len, max: 32 });
        }
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }

    /// A /32 host route.
    pub fn host(addr: Ipv4Addr) -> Self {
        Self { addr, len: 32 }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the default route 0.0.0.0/0 (the only prefix with no significant bits).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An IPv6 prefix with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv6Prefix {
    /// Builds a prefix, clearing the host bits of `addr`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthTooLong { len, max: 128 });
        }
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        Ok(Self {
            addr: Ipv6Addr::from(u128::from(addr) & mask),
            len,
        })
    }

    /// A /128 host route.
    pub fn host(addr: Ipv6Addr) -> Self {
        Self { addr, len: 128 }
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the default route ::/0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

impl Prefix {
    /// Builds a prefix of the address's family, clearing host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        match addr {
            IpAddr::V4(a) => Ipv4Prefix::new(a, len).map(Prefix::V4),
            IpAddr::V6(a) => Ipv6Prefix::new(a, len).map(Prefix::V6),
        }
    }

    /// A host route (/32 or /128) for the address.
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Prefix::V4(Ipv4Prefix::host(a)),
            IpAddr::V6(a) => Prefix::V6(Ipv6Prefix::host(a)),
        }
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            Prefix::V4(p) => IpAddr::V4(p.addr()),
            Prefix::V6(p) => IpAddr::V6(p.addr()),
        }
    }

    pub fn len(&self) -> u8 {
        match self {
            Prefix::V4(p) => p.len(),
            Prefix::V6(p) => p.len(),
        }
    }

    /// True for a default route.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self, Prefix::V4(_))
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

impl From<Ipv4Prefix> for Prefix {
    fn from(p: Ipv4Prefix) -> Self {
        Prefix::V4(p)
    }
}

impl From<Ipv6Prefix> for Prefix {
    fn from(p: Ipv6Prefix) -> Self {
        Prefix::V6(p)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `ADDRESS/LENGTH`; a bare address is a host route.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax {
            input: s.to_string(),
        };
        match s.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
                let len: u8 = len.parse().map_err(|_| syntax())?;
                Prefix::new(addr, len)
            }
            None => s.parse::<IpAddr>().map(Prefix::host).map_err(|_| syntax()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clears_host_bits() {
        let p = Ipv4Prefix::new(Ipv4Addr::new(198, 18, 7, 9), 24).unwrap();
        assert_eq!(p.to_string(), "198.18.7.0/24");
        let p = Ipv6Prefix::new("fd00::1:2".parse().unwrap(), 112).unwrap();
        assert_eq!(p.to_string(), "fd00::1:0/112");
        assert_eq!(
            Ipv4Prefix::new(Ipv4Addr::new(1, 2, 3, 4), 0)
                .unwrap()
                .to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn too_long_lengths_are_rejected() {
        assert_eq!(
            Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 33),
            Err(PrefixError::LengthTooLong { len: 33, max: 32 })
        );
        assert_eq!(
            Ipv6Prefix::new(Ipv6Addr::LOCALHOST, 129),
            Err(PrefixError::LengthTooLong { len: 129, max: 128 })
        );
    }

    #[test]
    fn parse_and_display() {
        let p: Prefix = "198.18.0.5".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.0.5/32");
        let p: Prefix = "fd00::/8".parse().unwrap();
        assert_eq!(p.to_string(), "fd00::/8");
        assert!("198.18.0.0/".parse::<Prefix>().is_err());
        assert!("198.18.0.0/40".parse::<Prefix>().is_err());
        assert!("nonsense/8".parse::<Prefix>().is_err());
        assert!("".parse::<Prefix>().is_err());
    }
}

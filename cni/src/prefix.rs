//! `address/prefix-length` as CNI results spell it (`10.0.0.5/32`, `fd00::5/128`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interface address with its prefix length (host bits may be set, as in CNI results).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    /// `None` when the length exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(IpPrefix { addr, len })
    }

    /// A host prefix (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> IpPrefix {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        IpPrefix { addr, len }
    }

    /// The default route of the address's family (`0.0.0.0/0` or `::/0`).
    pub fn default_for(addr: IpAddr) -> IpPrefix {
        match addr {
            IpAddr::V4(_) => IpPrefix {
                addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                len: 0,
            },
            IpAddr::V6(_) => IpPrefix {
                addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                len: 0,
            },
        }
    }
}

/// Why a prefix string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address/prefix-length (e.g. 10.0.0.5/24)")]
pub struct PrefixParseError(pub String);

impl FromStr for IpPrefix {
    type Err = PrefixParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PrefixParseError(s.chars().take(64).collect());
        let (a, l) = s.split_once('/').ok_or_else(err)?;
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let len: u8 = l.parse().map_err(|_| err())?;
        IpPrefix::new(addr, len).ok_or_else(err)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_rejects() {
        let p: IpPrefix = "198.18.0.5/32".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.0.5/32");
        let p6: IpPrefix = "fd00::5/128".parse().unwrap();
        assert_eq!(p6.len, 128);
        for bad in [
            "198.18.0.5",
            "198.18.0.5/33",
            "fd00::1/129",
            "x/1",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/0032",
            "",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(a in any::<u32>(), l in 0u8..=32, b in any::<u128>(), l6 in 0u8..=128) {
            let p = IpPrefix::new(IpAddr::V4(a.into()), l).unwrap();
            prop_assert_eq!(p.to_string().parse::<IpPrefix>().unwrap(), p);
            let p6 = IpPrefix::new(IpAddr::V6(b.into()), l6).unwrap();
            prop_assert_eq!(p6.to_string().parse::<IpPrefix>().unwrap(), p6);
        }
    }
}

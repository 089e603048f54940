//! The MAC address type every binary uses: the operator (generated and `mac-pool` MACs), the node
//! agent (VTEP MACs, FDB and neighbour entries, pod interfaces) and the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 48-bit MAC address. `Display` prints the normalised lower-case colon form
/// (`02:12:34:ab:cd:ef`); serde uses the same text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Prefix of generated pod MACs: the locally administered, unicast OUI upstream uses
/// (`pkg/utils/mac/generator.go` upstream).
pub const GENERATED_MAC_PREFIX: [u8; 3] = [0x02, 0x12, 0x34];

impl MacAddr {
    /// The destination MAC upstream rewrites broadcast/multicast frames to on the VXLAN device; one
    /// FDB entry per remote VTEP carries it (head-end replication without an all-zero entry).
    pub const VXLAN_BROADCAST: MacAddr = MacAddr([0xff, 0xff, 0xff, 0xff, 0xff, 0xf1]);

    /// A generated pod MAC from 24 random bits (the high 8 bits of `random` are ignored).
    pub fn generated(random: u32) -> Self {
        let [_, a, b, c] = random.to_be_bytes();
        let [p0, p1, p2] = GENERATED_MAC_PREFIX;
        Self([p0, p1, p2, a, b, c])
    }

    /// Parses a MAC the way Go's `net.ParseMAC` accepts 48-bit ones: `aa:bb:cc:dd:ee:ff`,
    /// `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`, any case, two hex digits per octet.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a MAC address (expected six hex octets like 02:12:34:ab:cd:ef)")
        };
        let hex_pair = |p: &str| -> Option<u8> {
            if p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
                u8::from_str_radix(p, 16).ok()
            } else {
                None
            }
        };
        let mut out = [0u8; 6];
        let b = s.as_bytes();
        if b.len() == 17 && (b[2] == b':' || b[2] == b'-') {
            let sep = b[2];
            for (i, o) in out.iter_mut().enumerate() {
                if i < 5 && b[3 * i + 2] != sep {
                    return Err(bad());
                }
                *o = s.get(3 * i..3 * i + 2).and_then(hex_pair).ok_or_else(bad)?;
            }
        } else if b.len() == 14 && b[4] == b'.' && b[9] == b'.' {
            for g in 0..3 {
                let group = s.get(5 * g..5 * g + 4).ok_or_else(bad)?;
                out[2 * g] = group.get(..2).and_then(hex_pair).ok_or_else(bad)?;
                out[2 * g + 1] = group.get(2..).and_then(hex_pair).ok_or_else(bad)?;
            }
        } else {
            return Err(bad());
        }
        Ok(Self(out))
    }

    /// [`MacAddr::parse`], refusing what a pod interface cannot use: multicast/broadcast (least
    /// significant bit of the first octet) and all-zero.
    pub fn parse_unicast(s: &str) -> Result<Self, String> {
        let mac = Self::parse(s)?;
        if !mac.is_unicast() {
            return Err(format!(
                "{s:?} is a multicast/broadcast MAC address; a pod needs a unicast one"
            ));
        }
        if mac.is_zero() {
            return Err(format!("{s:?} is the all-zero MAC address"));
        }
        Ok(mac)
    }

    /// Locally administered bit (second-least significant bit of the first octet).
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0b10 != 0
    }

    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_normalises_like_go() {
        for ok in ["AA:bb:CC:dd:EE:f0", "aa-bb-cc-dd-ee-f0", "aabb.ccdd.eef0"] {
            assert_eq!(MacAddr::parse(ok).unwrap().to_string(), "aa:bb:cc:dd:ee:f0");
        }
        // Any 48-bit address parses; only parse_unicast refuses what a pod cannot use.
        assert_eq!(
            MacAddr::parse("ff:ff:ff:ff:ff:f1").unwrap(),
            MacAddr::VXLAN_BROADCAST
        );
    }

    #[test]
    fn parse_refuses_malformed_values() {
        for bad in [
            "",
            " aa:bb:cc:dd:ee:f0",
            "aa:bb:cc:dd:ee:f0 ",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:f0:11",
            "aa:bb-cc:dd:ee:f0",
            "aa:bb:cc:dd:ee:g0",
            "aa:bb:cc:dd:ee:+1",
            "a:b:c:d:e:f",
            "aabb.ccdd.eef",
            "aabbccddeef0",
            "éa:bb:cc:dd:ee:f",
            "aab\u{e9}.ccdd.ee0",
            "zz",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad:?} accepted");
            assert!(MacAddr::parse_unicast(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parse_unicast_refuses_what_a_pod_cannot_use() {
        for bad in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            assert!(MacAddr::parse(bad).is_ok(), "{bad:?}");
            assert!(MacAddr::parse_unicast(bad).is_err(), "{bad:?} accepted");
        }
        assert!(MacAddr::parse_unicast("02:12:34:00:00:01").is_ok());
    }

    #[test]
    fn generated_macs_are_local_unicast_with_upstream_prefix() {
        let m = MacAddr::generated(0xffab_cdef);
        assert_eq!(m.to_string(), "02:12:34:ab:cd:ef");
        assert!(m.is_locally_administered());
        assert!(m.is_unicast());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let m = MacAddr([2, 0x12, 0x34, 0, 0, 0x0a]);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"02:12:34:00:00:0a\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&j).unwrap(), m);
        assert!(serde_json::from_str::<MacAddr>("\"02:12\"").is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(m in any::<[u8; 6]>()) {
            prop_assert_eq!(MacAddr::parse(&MacAddr(m).to_string()), Ok(MacAddr(m)));
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,24}") {
            let _ = MacAddr::parse(&s);
        }
    }
}

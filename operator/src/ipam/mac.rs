//! Pod MAC addresses (behaviour spec 3.11): generated ones are locally administered unicast
//! `02:12:34:xx:xx:xx` (upstream OUI, 24 random bits); requested ones (mac-pool) are normalised to
//! lower-case colon form.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;

/// A 48-bit MAC address. `Display` prints the normalised lower-case colon form (`02:12:34:ab:cd:ef`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Prefix of generated MACs: the locally administered, unicast OUI upstream uses.
pub const GENERATED_MAC_PREFIX: [u8; 3] = [0x02, 0x12, 0x34];

impl MacAddr {
    /// A generated MAC from 24 random bits (the high 8 bits of `random` are ignored).
    pub fn generated(random: u32) -> Self {
        let [_, a, b, c] = random.to_be_bytes();
        let [p0, p1, p2] = GENERATED_MAC_PREFIX;
        Self([p0, p1, p2, a, b, c])
    }

    /// Parses a MAC the way Go's `net.ParseMAC` accepts 48-bit ones (`aa:bb:cc:dd:ee:ff`,
    /// `aa-bb-cc-dd-ee-ff`, `aabb.ccdd.eeff`, any case) and refuses values a pod cannot use:
    /// multicast/broadcast (least significant bit of the first octet) and all-zero.
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
        let mac = Self(out);
        if out[0] & 1 == 1 {
            return Err(format!(
                "{s:?} is a multicast/broadcast MAC address; a pod needs a unicast one"
            ));
        }
        if out == [0; 6] {
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

/// Source of random bits for generated MACs. Injectable so tests are deterministic.
pub type MacRandom = Box<dyn FnMut() -> u32 + Send>;

/// The default source: SipHash with per-process random keys over a counter. Not cryptographic,
/// which MACs do not need; uniqueness is checked by the caller anyway.
pub fn default_mac_random() -> MacRandom {
    let keys = RandomState::new();
    let mut counter: u64 = 0;
    Box::new(move || {
        counter = counter.wrapping_add(1);
        keys.hash_one(counter) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_like_go() {
        for ok in ["AA:bb:CC:dd:EE:f0", "aa-bb-cc-dd-ee-f0", "aabb.ccdd.eef0"] {
            assert_eq!(MacAddr::parse(ok).unwrap().to_string(), "aa:bb:cc:dd:ee:f0");
        }
    }

    #[test]
    fn parse_refuses_hostile_or_unusable_values() {
        for bad in [
            "",
            " aa:bb:cc:dd:ee:f0",
            "aa:bb:cc:dd:ee:f0 ",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:f0:11",
            "aa:bb-cc:dd:ee:f0",
            "aa:bb:cc:dd:ee:g0",
            "aa:bb:cc:dd:ee:+1",
            "aabb.ccdd.eef",
            "aabbccddeef0",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "éa:bb:cc:dd:ee:f",
            "aab\u{e9}.ccdd.ee0",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generated_macs_are_local_unicast_with_upstream_prefix() {
        let m = MacAddr::generated(0xffab_cdef);
        assert_eq!(m.to_string(), "02:12:34:ab:cd:ef");
        assert!(m.is_locally_administered());
        assert!(m.is_unicast());
    }
}

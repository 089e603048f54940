//! Parsing of the `ip-pool` and `mac-pool` pod annotations and MAC addresses.

use std::fmt;
use std::net::IpAddr;

use crate::error::FieldError;
use crate::v1::IpVersion;

/// One `ip-pool` entry: the addresses of one ordinal, at most one per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPoolEntry {
    pub addresses: Vec<IpAddr>,
}

/// Parses `ip0,ip1,...` where each entry is `ip` or `ipv4/ipv6`. `field` names the annotation in
/// errors. Fixes upstream bug 12.2 #2: every entry of a multi-entry pool is checked on its own.
pub fn parse_ip_pool(value: &str, field: &str) -> Result<Vec<IpPoolEntry>, FieldError> {
    let mut out = Vec::new();
    for (i, seg) in value.split(',').enumerate() {
        let seg = seg.trim();
        if seg.is_empty() {
            return Err(FieldError::new(
                field,
                format!("entry {i} is empty in {value:?}"),
            ));
        }
        let parts: Vec<&str> = seg.split('/').collect();
        if parts.len() > 2 {
            return Err(FieldError::new(
                field,
                format!("entry {i} {seg:?} has more than two addresses (use ipv4/ipv6)"),
            ));
        }
        let mut addresses = Vec::with_capacity(parts.len());
        for p in &parts {
            let ip: IpAddr = p.parse().map_err(|_| {
                FieldError::new(
                    field,
                    format!("entry {i} {seg:?}: {p:?} is not an IP address"),
                )
            })?;
            addresses.push(ip);
        }
        if addresses.len() == 2
            && (IpVersion::of(&addresses[0]) != IpVersion::V4
                || IpVersion::of(&addresses[1]) != IpVersion::V6)
        {
            return Err(FieldError::new(
                field,
                format!("entry {i} {seg:?} must be ipv4/ipv6 in that order"),
            ));
        }
        out.push(IpPoolEntry { addresses });
    }
    Ok(out)
}

/// A unicast MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case); refuses multicast and all-zero
    /// addresses, which a pod interface cannot use.
    pub fn parse_unicast(s: &str) -> Result<Self, String> {
        let sep = if s.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want 6 octets like 02:12:34:56:78:9a)"
            ));
        }
        let mut b = [0u8; 6];
        for (o, p) in b.iter_mut().zip(&parts) {
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("{s:?} is not a MAC address (bad octet {p:?})"));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        if b[0] & 1 == 1 {
            return Err(format!(
                "{s:?} is a multicast MAC address; a pod needs a unicast one"
            ));
        }
        if b == [0; 6] {
            return Err(format!("{s:?} is the all-zero MAC address"));
        }
        Ok(Self(b))
    }

    /// Locally administered (bit 1 of the first octet).
    pub fn is_local(&self) -> bool {
        self.0[0] & 2 == 2
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Parses `mac0,mac1,...`; every entry must be a unicast MAC.
pub fn parse_mac_pool(value: &str, field: &str) -> Result<Vec<MacAddr>, FieldError> {
    value
        .split(',')
        .enumerate()
        .map(|(i, seg)| {
            let seg = seg.trim();
            if seg.is_empty() {
                return Err(FieldError::new(
                    field,
                    format!("entry {i} is empty in {value:?}"),
                ));
            }
            MacAddr::parse_unicast(seg)
                .map_err(|e| FieldError::new(field, format!("entry {i}: {e}")))
        })
        .collect()
}

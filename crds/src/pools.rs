//! Parsing of the `ip-pool` and `mac-pool` pod annotations.

use std::net::IpAddr;

use crate::error::FieldError;
use crate::mac::MacAddr;
use crate::v1::IpVersion;

/// One `ip-pool` entry: the addresses of one ordinal, at most one per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPoolEntry {
    pub addresses: Vec<IpAddr>,
}

/// Parses `ip0,ip1,...` where each entry is `ip` or `ipv4/ipv6`. `field` names the annotation in
/// errors. Fixes an upstream bug (pkg/webhook/validating/pod.go): every entry of a multi-entry pool is checked on its own.
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

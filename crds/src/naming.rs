//! Names derived from data: IPInstance name <-> IP, label-safe pod names, host veth names, ordinals.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use md5::{Digest, Md5};

/// IPInstance name of an address (upstream `ToDNSFormat`): IPv4 dots become dashes
/// (`10.0.0.5` -> `10-0-0-5`); IPv6 is fully expanded without zero padding, colons become dashes
/// (`fe80::1` -> `fe80-0-0-0-0-0-0-1`).
pub fn ip_to_instance_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// The address an IPInstance name stands for (upstream `ToIPFormat`: seven dashes mean IPv6).
/// Returns `None` for names that are not an address.
pub fn instance_name_to_ip(name: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = name.split('-').collect();
    match parts.len() {
        4 => {
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip(&parts) {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                if p.len() > 1 && p.starts_with('0') {
                    return None;
                }
                *o = p.parse().ok()?;
            }
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        8 => {
            let mut segs = [0u16; 8];
            for (s, p) in segs.iter_mut().zip(&parts) {
                if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                *s = u16::from_str_radix(p, 16).ok()?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(segs)))
        }
        _ => None,
    }
}

/// Label value for a pod name (upstream `TransferPodNameForLabelValue`): names longer than 63
/// characters become their first 31 characters plus the MD5 hex of the rest.
pub fn pod_name_label_value(pod_name: &str) -> String {
    if pod_name.len() <= 63 {
        return pod_name.to_string();
    }
    // Pod names are DNS subdomains (ASCII), so byte 31 is a char boundary; be safe anyway.
    let cut = (0..=31)
        .rev()
        .find(|i| pod_name.is_char_boundary(*i))
        .unwrap_or(0);
    let digest = Md5::digest(&pod_name.as_bytes()[cut..]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}{}", &pod_name[..cut], hex)
}

/// Host-side veth name of a pod: `hybr` + the first 11 hex characters of SHA-1("<namespace>.<pod>").
pub fn host_veth_name(namespace: &str, pod_name: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{namespace}.{pod_name}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("hybr{}", &hex[..11])
}

/// Ordinal of a stateful pod: the number after the last `-` of its name.
pub fn stateful_ordinal(pod_name: &str) -> Option<u32> {
    let (_, suffix) = pod_name.rsplit_once('-')?;
    if suffix.is_empty() || suffix.len() > 9 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_as_upstream() {
        assert_eq!(ip_to_instance_name("10.0.0.5".parse().unwrap()), "10-0-0-5");
        assert_eq!(
            ip_to_instance_name("fe80::1".parse().unwrap()),
            "fe80-0-0-0-0-0-0-1"
        );
        assert_eq!(
            instance_name_to_ip("fe80-0-0-0-0-0-0-1"),
            Some("fe80::1".parse().unwrap())
        );
        for bad in [
            "",
            "10-0-0",
            "10-0-0-256",
            "10-0-0-05",
            "a-b-c-d",
            "1-2-3-4-5-6-7-8-9",
            "fe80-0-0-0-0-0-0-12345",
            "10-0--1",
        ] {
            assert_eq!(instance_name_to_ip(bad), None, "{bad}");
        }
    }

    #[test]
    fn long_pod_names_are_hashed_to_63() {
        let long = "a".repeat(80);
        let v = pod_name_label_value(&long);
        assert_eq!(v.len(), 63);
        assert!(v.starts_with(&"a".repeat(31)));
        assert_eq!(pod_name_label_value("web-0"), "web-0");
    }

    #[test]
    fn veth_names_fit_ifnamsiz() {
        let n = host_veth_name("default", "web-0");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("hybr"));
        assert_ne!(n, host_veth_name("default", "web-1"));
    }

    #[test]
    fn ordinals() {
        assert_eq!(stateful_ordinal("web-12"), Some(12));
        assert_eq!(stateful_ordinal("web"), None);
        assert_eq!(stateful_ordinal("web-"), None);
        assert_eq!(stateful_ordinal("web-x1"), None);
        assert_eq!(stateful_ordinal("web-99999999999"), None);
    }
}

//! The value rules of a HybridnetCluster spec that more than one binary applies: the operator
//! (`Settings::from_spec`, before it renders anything) and `kubectl hybridnet install` (before it
//! writes the object), and the CRD schema's ranges. One definition, so the plugin never writes a
//! spec the operator refuses, nor refuses one it accepts.

use std::ops::RangeInclusive;

/// `spec.cni.mtu`: from IPv4's minimum datagram size to the largest jumbo frame NICs take.
pub const MTU: RangeInclusive<i32> = MIN_MTU..=MAX_MTU;
pub const MIN_MTU: i32 = 576;
pub const MAX_MTU: i32 = 9216;
/// A VXLAN network identifier (24 bits, 0 reserved): `spec.bootstrap.vxlanID`, an overlay
/// Network's `spec.netID`.
pub const VNI: RangeInclusive<i32> = 1..=MAX_VNI;
pub const MAX_VNI: i32 = (1 << 24) - 1;
/// A TCP/UDP port: VXLAN, health, metrics and webhook ports.
pub const PORT: RangeInclusive<i32> = 1..=MAX_PORT;
pub const MAX_PORT: i32 = 65535;

/// Most expressions in `spec.webhook.additionalPodMatchExpressions` (the CRD's `maxItems`).
pub const MAX_POD_MATCH_EXPRESSIONS: usize = 16;

/// Whether `v` is a release version `MAJOR.MINOR.PATCH[-PRERELEASE]` (no leading `v`): it becomes
/// an image tag, so each number has at most 9 digits and the pre-release part at most 64 of
/// semver's characters (letters, digits, `.`, `-`), which tags accept.
pub fn is_release_version(v: &str) -> bool {
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

/// Whether `r` is an image registry and repository prefix, `host[:port][/path][/]`
/// (`docker.io/hybridnet`, `registry:5000/team/`): image names are put after it, so no scheme,
/// no digest or tag, no empty, `.` or `..` path part (a trailing `/` is allowed), and only
/// reference characters.
pub fn is_image_prefix(r: &str) -> bool {
    let trimmed = r.strip_suffix('/').unwrap_or(r);
    !trimmed.is_empty()
        && r.len() <= 255
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'))
        && trimmed
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && !trimmed.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions() {
        for ok in [
            "0.1.0",
            "1.22.333",
            "0.2.0-rc.1",
            "1.0.0-alpha-2",
            "999999999.0.0",
        ] {
            assert!(is_release_version(ok), "{ok}");
        }
        for bad in [
            "",
            "v0.1.0",
            "0.1",
            "0.1.0.0",
            "0.1.x",
            "0.1.0-",
            "0.1.0-a b",
            "0.1.0+meta",
            "1234567890.0.0",
            "0..0",
            "-1.0.0",
        ] {
            assert!(!is_release_version(bad), "{bad:?}");
        }
        assert!(is_release_version(&format!("0.1.0-{}", "a".repeat(64))));
        assert!(!is_release_version(&format!("0.1.0-{}", "a".repeat(65))));
    }

    #[test]
    fn image_prefixes() {
        for ok in [
            "docker.io/hybridnet",
            "registry.example.com:5000/net/",
            "localhost:5000",
            "a_b/c-d",
        ] {
            assert!(is_image_prefix(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "https://evil",
            "a//b",
            "/abs",
            "repo@sha256",
            "a b",
            "a/../b",
            "a/./b",
            "é",
            &"a".repeat(256),
        ] {
            assert!(!is_image_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        assert!(MTU.contains(&1500) && !MTU.contains(&575) && !MTU.contains(&9217));
        assert!(VNI.contains(&1) && VNI.contains(&16_777_215) && !VNI.contains(&0));
        assert!(!VNI.contains(&16_777_216));
        assert!(PORT.contains(&8472) && !PORT.contains(&0) && !PORT.contains(&65536));
    }
}

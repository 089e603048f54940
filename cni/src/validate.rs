//! Syntax checks for every name and path that reaches the plugin or the agent from outside.
//! Each returns a message that names the offending value (truncated) and the rule it broke.

/// Longest container id accepted (runtimes use 64 hex characters); it also has to fit, with
/// the interface name, into the host veth's alias (IFALIASZ 256).
pub const MAX_CONTAINER_ID: usize = 128;
/// Longest netns path accepted.
pub const MAX_PATH: usize = 1024;

use hybridnet_rules::shown;

/// CNI_CONTAINERID (spec 1.0): non-empty, starts alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub fn container_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("CNI_CONTAINERID is empty".into());
    }
    if id.len() > MAX_CONTAINER_ID {
        return Err(format!(
            "CNI_CONTAINERID {} is longer than {MAX_CONTAINER_ID} characters",
            shown(id)
        ));
    }
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(format!(
            "CNI_CONTAINERID {} must start with a letter or digit and contain only letters, digits, '_', '.', '-'",
            shown(id)
        ));
    }
    Ok(())
}

/// CNI_IFNAME: a Linux interface name (1-15 bytes, no `/`, `:`, whitespace, not `.`/`..`).
pub fn ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("CNI_IFNAME is empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "CNI_IFNAME {} is longer than 15 bytes (Linux IFNAMSIZ)",
            shown(name)
        ));
    }
    if name == "." || name == ".." {
        return Err(format!(
            "CNI_IFNAME {} is not a valid interface name",
            shown(name)
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(format!(
            "CNI_IFNAME {} contains {c:?}, which an interface name cannot contain",
            shown(name)
        ));
    }
    Ok(())
}

/// An absolute, normalised path (no `.`/`..` components, no NUL, no `//` tricks).
pub fn absolute_path(what: &str, p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if p.len() > MAX_PATH {
        return Err(format!("{what} is longer than {MAX_PATH} bytes"));
    }
    if p.contains('\0') {
        return Err(format!("{what} {} contains a NUL byte", shown(p)));
    }
    if !p.starts_with('/') {
        return Err(format!("{what} {} must be an absolute path", shown(p)));
    }
    if p.contains("//") {
        return Err(format!(
            "{what} {} contains an empty path component",
            shown(p)
        ));
    }
    // Split by hand: `Path::components` silently drops `.` components.
    if p[1..].split('/').any(|c| c == "." || c == "..") {
        return Err(format!(
            "{what} {} must not contain '.' or '..' components",
            shown(p)
        ));
    }
    Ok(())
}

/// Kubernetes DNS-1123 label (namespaces), the rule `hybridnet_rules::names` holds for every
/// binary; `what` names the variable.
pub fn dns_label(what: &str, s: &str) -> Result<(), String> {
    hybridnet_rules::names::dns_label(s).map_err(|e| format!("{what} {e}"))
}

/// Kubernetes DNS-1123 subdomain (pod names), as [`dns_label`].
pub fn dns_subdomain(what: &str, s: &str) -> Result<(), String> {
    hybridnet_rules::names::dns_subdomain(s).map_err(|e| format!("{what} {e}"))
}

/// Pod UID: a UUID, or the hash kubelet uses for static pods: 1-64 of `[0-9A-Za-z-]`.
pub fn pod_uid(s: &str) -> Result<(), String> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "K8S_POD_UID {} is not a pod UID (1-64 characters 0-9, a-z, A-Z, '-')",
            shown(s)
        ))
    }
}

/// Network name (spec 1.0): starts alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub fn network_name(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let ok = s.len() <= 253
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "network name {} must start with a letter or digit and contain only letters, digits, '_', '.', '-'",
            shown(s)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn container_ids() {
        assert!(
            container_id("3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755")
                .is_ok()
        );
        assert!(container_id("cnitool-x_1.2").is_ok());
        for bad in [
            "",
            "-a",
            ".a",
            "a/b",
            "../../x",
            "a b",
            "a;b",
            "ä",
            &"a".repeat(129),
        ] {
            assert!(container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ifnames() {
        for good in ["eth0", "net1", "a", "123456789012345", "e-t_h.0"] {
            assert!(ifname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1234567890123456",
            "a/b",
            "..",
            ".",
            "eth0:1",
            "et h",
            "e\nx",
            "äth0",
            "../../x",
        ] {
            assert!(ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        for good in [
            "/var/run/netns/cni-1234",
            "/proc/42/ns/net",
            "/run/hybridnet/hybridnet.sock",
        ] {
            assert!(absolute_path("p", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "relative/x",
            "/var/run/netns/../../etc/passwd",
            "/a/./b",
            "/a//b",
            "/a/.",
            "/a/..",
            "/a\0b",
            &format!("/{}", "a".repeat(1100)),
        ] {
            assert!(absolute_path("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn k8s_names() {
        assert!(dns_label("ns", "kube-system").is_ok());
        assert!(dns_subdomain("pod", "web-0.a").is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "../../x",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(dns_label("ns", bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "../../x",
            "a/b",
            "Web",
            &"a".repeat(254),
        ] {
            assert!(dns_subdomain("pod", bad).is_err(), "{bad}");
        }
        assert!(pod_uid("0b0e4b5a-3c2d-4f8e-9a7b-1c2d3e4f5a6b").is_ok());
        assert!(pod_uid("../x").is_err());
        assert!(network_name("hybridnet").is_ok());
        assert!(network_name("_x").is_err());
    }

    proptest! {
        // Whatever passes the ifname check can be used as a path component without escaping.
        #[test]
        fn valid_ifnames_are_single_safe_components(s in "\\PC{0,20}") {
            if ifname(&s).is_ok() {
                prop_assert!(!s.contains('/') && s != "." && s != ".." && s.len() <= 15);
            }
        }

        #[test]
        fn valid_subdomains_never_traverse(s in "[a-z0-9./-]{0,40}") {
            if dns_subdomain("pod", &s).is_ok() {
                prop_assert!(!s.contains('/') && !s.contains(".."));
            }
        }
    }
}

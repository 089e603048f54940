//! Kubernetes name and label checks, as the API server applies them
//! (`staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go` in kubernetes/kubernetes):
//! used by the operator (settings, `--pod-label-selector`), the CLI (flags, names) and the
//! label-selector parser, and the CNI plugin (pod name and namespace), so a value one accepts the
//! others accept too. Errors say what is wrong
//! with the value; the caller names the field.

use crate::shown;

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label_shaped(part: &str) -> bool {
    let b = part.as_bytes();
    !b.is_empty()
        && lower_alnum(b[0])
        && lower_alnum(b[b.len() - 1])
        && b.iter().all(|c| lower_alnum(*c) || *c == b'-')
}

/// A DNS-1123 label (namespace names, Service names): 1-63 characters `a-z`, `0-9`, `-`, starting
/// and ending with a letter or digit.
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.len() <= 63 && is_label_shaped(s) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a DNS-1123 label (1-63 characters a-z, 0-9, '-', starting and ending with a letter or digit)",
            shown(s)
        ))
    }
}

/// A DNS-1123 subdomain (most object names): at most 253 characters, dot-separated parts of
/// `a-z`, `0-9`, `-`, each starting and ending with a letter or digit.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(is_label_shaped) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a DNS-1123 subdomain (at most 253 characters a-z, 0-9, '-', '.', each part starting and ending with a letter or digit)",
            shown(s)
        ))
    }
}

/// The name part of a label key, and a non-empty label value: 1-63 characters `A-Za-z0-9`, `-`,
/// `_`, `.`, starting and ending with a letter or digit.
pub fn qualified_name_part(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{} characters, at most 63", s.len()));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if let Some(bad) = s
        .chars()
        .find(|c| !(alnum(*c) || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{bad:?} is not allowed (letters, digits, '-', '_', '.')"
        ));
    }
    if !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A label key: `[prefix/]name`, the prefix a DNS-1123 subdomain.
pub fn label_key(k: &str) -> Result<(), String> {
    match k.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix).map_err(|e| format!("key {}: prefix {e}", shown(k)))?;
            qualified_name_part(name).map_err(|e| format!("key name {}: {e}", shown(name)))
        }
        None => qualified_name_part(k).map_err(|e| format!("key {}: {e}", shown(k))),
    }
}

/// A label value: empty, or a name part.
pub fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    qualified_name_part(v).map_err(|e| format!("value {}: {e}", shown(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["a", "kube-system", "a1", &"a".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok}");
            assert!(dns_subdomain(ok).is_ok(), "{ok}");
        }
        for ok in ["a.b", "example.com", "x-1.y-2.z"] {
            assert!(dns_label(ok).is_err(), "{ok}");
            assert!(dns_subdomain(ok).is_ok(), "{ok}");
        }
        // Kubernetes limits a subdomain's total length, not its parts'.
        assert!(dns_subdomain(&format!("{}.b", "a".repeat(100))).is_ok());
        assert!(dns_subdomain(&"a".repeat(254)).is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        for bad in [
            "", "-a", "a-", "A", "a_b", "a..b", ".a", "a.", "a.-b", "a b", "é", "a\n", "a/b",
        ] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["app", "App_1.x", "example.com/app", "a/B-c"] {
            assert!(label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "Example.COM/a",
            "a/b/c",
            "-a",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(label_key(bad).is_err(), "{bad:?}");
        }
        for ok in ["", "v", "V_1.2-x", &"a".repeat(63)] {
            assert!(label_value(ok).is_ok(), "{ok:?}");
        }
        for bad in ["-v", "v-", "a b", "a/b", "é", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn every_label_is_a_subdomain_and_a_label_value(s in "\\PC{0,70}") {
            if dns_label(&s).is_ok() {
                prop_assert!(dns_subdomain(&s).is_ok());
                prop_assert!(label_value(&s).is_ok());
            }
        }
    }
}

//! Name and label syntax checks (Kubernetes apimachinery validation rules).

/// RFC 1123 label: lowercase alphanumerics and '-', starts and ends alphanumeric, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Label value: empty, or at most 63 of [A-Za-z0-9_.-] starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
            && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric))
}

/// Qualified name (label/annotation key): optional DNS subdomain prefix + '/' + name part.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

/// Validate an object name for a resource; returns the reason when invalid.
pub fn object_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name or generateName is required".into());
    }
    if !is_dns_subdomain(name) {
        return Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert!(is_dns_label("a-b1"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("A"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_qualified_name("example.com/app"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("/app"));
        assert!(!is_qualified_name("a b"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(object_name("Bad_Name").is_err());
        assert!(object_name("").is_err());
        assert!(object_name("good.name-1").is_ok());
    }

    proptest! {
        #[test]
        fn valid_labels_are_subdomains(s in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?") {
            prop_assert!(is_dns_label(&s));
            let sub = format!("{}.{}", s, s);
            prop_assert!(is_dns_subdomain(&sub));
            prop_assert!(is_label_value(&s));
        }
        #[test]
        fn no_panic_on_garbage(s in ".{0,80}") {
            let _ = is_qualified_name(&s);
            let _ = object_name(&s);
        }
    }
}

//! The rules of hybridnet that need nothing but serde, so that the CNI plugin (a static binary
//! that links only serde) and the BGP speaker apply the same ones as the API crate, the operator
//! and the CLI. `hybridnet-api` re-exports each module; docs/architecture.md lists where every rule lives.

#![forbid(unsafe_code)]

pub mod names;
pub mod prefix;

/// A user-supplied value for an error message: debug-quoted (control characters escaped) and cut
/// at 80 characters, so a hostile megabyte-long value does not end up in logs whole.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn values_are_quoted_escaped_and_cut() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1000);
        let s = shown(&long);
        assert!(s.chars().count() < 90 && s.ends_with("…\""), "{s}");
    }
}

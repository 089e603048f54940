//! Parsing of the flag values that are more than a plain string or number: BGP peers, label
//! selectors, address lists, timeouts. Every error names the flag and says what is expected.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hybridnet_api::ipmath::parse_ip;
use hybridnet_api::v1::BgpPeer;
use hybridnet_api::{names, selector};

/// Parses `--peer ASN@ADDRESS[,graceful-restart=SECONDS][,no-route][,allow-not-established][,password=SECRET]`.
/// `password=` takes the rest of the value (so a password may contain commas) and must come last.
pub fn parse_peer(raw: &str) -> Result<BgpPeer, String> {
    let usage = "expected ASN@ADDRESS[,graceful-restart=SECONDS][,no-route][,allow-not-established][,password=SECRET]";
    let (head, options) = match raw.split_once(',') {
        Some((h, o)) => (h, Some(o)),
        None => (raw, None),
    };
    let Some((asn_s, addr_s)) = head.split_once('@') else {
        return Err(format!("--peer {raw:?}: {usage}"));
    };
    let asn = parse_asn(asn_s.trim()).map_err(|e| format!("--peer {raw:?}: {e}"))?;
    let addr_s = addr_s.trim();
    let address: IpAddr =
        parse_ip(addr_s).map_err(|e| format!("--peer {raw:?}: peer address: {e}"))?;
    let mut peer = BgpPeer {
        asn,
        address: address.to_string(),
        ..Default::default()
    };
    let mut rest = options.unwrap_or("");
    while !rest.is_empty() {
        if let Some(pw) = rest.strip_prefix("password=") {
            if pw.is_empty() {
                return Err(format!("--peer {raw:?}: password= is empty"));
            }
            peer.password = Some(pw.to_string());
            break;
        }
        let (opt, tail) = rest.split_once(',').unwrap_or((rest, ""));
        rest = tail;
        match opt.split_once('=') {
            Some(("graceful-restart", v)) => {
                let secs: i32 = v.trim().parse().map_err(|_| {
                    format!("--peer {raw:?}: graceful-restart={v:?} is not a number of seconds")
                })?;
                if !(1..=4095).contains(&secs) {
                    return Err(format!(
                        "--peer {raw:?}: graceful-restart={secs} is outside 1..4095 seconds"
                    ));
                }
                peer.graceful_restart_seconds = Some(secs);
            }
            None if opt == "no-route" => peer.does_not_route_traffic = Some(true),
            None if opt == "allow-not-established" => peer.allow_not_established = Some(true),
            _ => {
                return Err(format!("--peer {raw:?}: unknown option {opt:?}; {usage}"));
            }
        }
    }
    Ok(peer)
}

/// An AS number as the Network CRD stores it (a positive int32: 1..2147483647).
pub fn parse_asn(s: &str) -> Result<i32, String> {
    if s.strip_prefix('-')
        .is_some_and(|d| d.parse::<u64>().is_ok())
    {
        return Err(format!("AS number {s} is negative: use 1..2147483647"));
    }
    let n: u64 = s
        .parse()
        .map_err(|_| format!("AS number {s:?} is not a number"))?;
    if n == 0 {
        return Err("AS number 0 is reserved".to_string());
    }
    i32::try_from(n).map_err(|_| {
        format!("AS number {n} does not fit the Network CRD (netID and asn are int32, at most 2147483647)")
    })
}

/// Parses `--node-selector k=v[,k=v...]` (repeatable) into an exact-match selector.
pub fn parse_node_selector(values: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for raw in values {
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!(
                    "--node-selector {part:?}: expected KEY=VALUE (an exact label match)"
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            validate_label_key(k).map_err(|e| format!("--node-selector {part:?}: {e}"))?;
            validate_label_value(v).map_err(|e| format!("--node-selector {part:?}: {e}"))?;
            if let Some(prev) = out.insert(k.to_string(), v.to_string())
                && prev != v
            {
                return Err(format!(
                    "--node-selector: label {k:?} given twice ({prev:?} and {v:?})"
                ));
            }
        }
    }
    Ok(out)
}

/// A Kubernetes label key: `[prefix/]name` (`hybridnet_api::names::label_key`).
pub fn validate_label_key(k: &str) -> Result<(), String> {
    names::label_key(k).map_err(|e| format!("label key {k:?} is invalid: {e}"))
}

/// A Kubernetes label value, may be empty (`hybridnet_api::names::label_value`).
pub fn validate_label_value(v: &str) -> Result<(), String> {
    names::label_value(v).map_err(|e| format!("label value {v:?} is invalid: {e}"))
}

/// A Linux interface name as the kernel accepts it: 1-15 bytes, no '/', ':' or white space, not
/// `.` or `..`.
pub fn validate_interface_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 15
        || s == "."
        || s == ".."
        || s.chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name {s:?} is invalid: 1-15 bytes without '/', ':' or white space"
        ));
    }
    Ok(())
}

/// A Kubernetes kind (`StatefulSet`): an upper-case letter, then letters and digits.
pub fn validate_kind(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && s.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "kind {s:?} is invalid: a Kubernetes kind such as StatefulSet (an upper-case letter, then letters and digits)"
        ))
    }
}

/// A label selector as kubectl's `-l` takes it (`hybridnet_api::selector`, the parser the
/// operator's `--pod-label-selector` uses); never empty.
pub fn validate_label_selector(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!(
            "label selector {s:?} is invalid: it is empty (it would select every pod)"
        ));
    }
    selector::parse(s).map(|_| ()).map_err(|e| e.to_string())
}

/// Splits repeatable, comma-separated address flags and checks each is an IP address.
pub fn parse_ip_list(flag: &str, values: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in values {
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ip = parse_ip(part).map_err(|e| format!("{flag} {part:?}: {e}"))?;
            let s = ip.to_string();
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// kubectl's `--request-timeout`: `0` (no timeout), a plain number of seconds, or a Go duration
/// such as `30s`, `1m30s`, `500ms`, `2h`.
pub fn parse_request_timeout(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "--request-timeout {s:?}: expected a duration such as 30s, 1m or 500ms (0 means no timeout)"
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| bad())?;
        return Ok((secs > 0).then(|| Duration::from_secs(secs)));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = value * unit_secs;
        if !part.is_finite() || part > 86_400.0 * 366.0 {
            return Err(bad());
        }
        total += Duration::from_secs_f64(part);
    }
    Ok((!total.is_zero()).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peers() {
        let p = parse_peer("65001@192.0.2.1").unwrap();
        assert_eq!((p.asn, p.address.as_str()), (65001, "192.0.2.1"));
        let p =
            parse_peer("65001@2001:db8::1,graceful-restart=120,no-route,password=a,b=c").unwrap();
        assert_eq!(p.address, "2001:db8::1");
        assert_eq!(p.graceful_restart_seconds, Some(120));
        assert_eq!(p.does_not_route_traffic, Some(true));
        assert_eq!(p.password.as_deref(), Some("a,b=c"));
        let p = parse_peer("65001@192.0.2.1,allow-not-established").unwrap();
        assert_eq!(p.allow_not_established, Some(true));
    }

    #[test]
    fn bad_peers_say_why() {
        for (raw, want) in [
            ("192.0.2.1", "expected ASN@ADDRESS"),
            ("0@192.0.2.1", "reserved"),
            ("x@192.0.2.1", "not a number"),
            ("4294967295@192.0.2.1", "int32"),
            ("65001@not-an-ip", "peer address"),
            ("65001@192.0.2.1,graceful-restart=0", "outside 1..4095"),
            (
                "65001@192.0.2.1,graceful-restart=x",
                "not a number of seconds",
            ),
            ("65001@192.0.2.1,bogus", "unknown option"),
            ("65001@192.0.2.1,password=", "empty"),
            ("65001@192.0.2.1/24", "peer address"),
        ] {
            let e = parse_peer(raw).unwrap_err();
            assert!(e.contains(want), "{raw}: {e}");
            assert!(e.contains("--peer"), "{raw}: {e}");
        }
    }

    #[test]
    fn node_selectors() {
        let s = parse_node_selector(&["rack=a,zone=z1".into(), "example.com/role=edge".into()])
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s["example.com/role"], "edge");
        for bad in [
            "rack",
            "=a",
            "ra ck=a",
            "rack=a b",
            "Bad_Prefix/x=y",
            &format!("k={}", "v".repeat(64)),
        ] {
            assert!(parse_node_selector(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(parse_node_selector(&["a=1".into(), "a=2".into()]).is_err());
        assert!(parse_node_selector(&["a=".into()]).is_ok());
    }

    #[test]
    fn ip_lists() {
        let l = parse_ip_list(
            "--reserved",
            &["10.0.0.5, 10.0.0.6".into(), "10.0.0.5".into()],
        )
        .unwrap();
        assert_eq!(l, vec!["10.0.0.5", "10.0.0.6"]);
        let e = parse_ip_list("--exclude", &["10.0.0.300".into()]).unwrap_err();
        assert!(e.starts_with("--exclude \"10.0.0.300\""), "{e}");
    }

    #[test]
    fn negative_asn_says_so() {
        assert!(parse_asn("-5").unwrap_err().contains("is negative"));
        assert!(parse_asn("-x").unwrap_err().contains("not a number"));
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "ens3", "bond0.100", "a", "abcdefghijklmno"] {
            assert!(validate_interface_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../eth0",
            "eth 0",
            "eth0:1",
            "abcdefghijklmnop",
            "eth\n0",
            "e\u{0}",
        ] {
            let e = validate_interface_name(bad).unwrap_err();
            assert!(e.contains("interface name"), "{bad}: {e}");
        }
        // Non-ASCII counts in bytes: 8 two-byte letters are 16 bytes.
        assert!(validate_interface_name("ïïïïïïïï").is_err());
    }

    #[test]
    fn kinds() {
        for ok in ["StatefulSet", "CloneSet", "X", "V1Thing"] {
            assert!(validate_kind(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "statefulSet",
            "Stateful-Set",
            "../x",
            "Ünï",
            " StatefulSet",
            &"A".repeat(64),
        ] {
            assert!(validate_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_selectors() {
        for ok in [
            "app.kubernetes.io/name=hybridnet-node",
            "a=b,c!=d",
            "a==b",
            "tier in (a, b),!canary",
            "env notin (dev),app",
            "a=",
        ] {
            assert!(validate_label_selector(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "  ", "a b", "a=b c", "a in b", "a in (b", "a)", "=b", "a=b,,c", "ü=a",
        ] {
            let e = validate_label_selector(bad).unwrap_err();
            assert!(e.contains("label selector"), "{bad}: {e}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_request_timeout("0").unwrap(), None);
        assert_eq!(
            parse_request_timeout("5").unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_request_timeout("1m30s").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_request_timeout("500ms").unwrap(),
            Some(Duration::from_millis(500))
        );
        for bad in ["", "s", "5x", "-1s", "1..5s", "99999999h"] {
            assert!(parse_request_timeout(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn peer_parsing_never_panics(s in ".{0,80}") {
            let _ = parse_peer(&s);
        }

        #[test]
        fn peer_roundtrip(asn in 1i32..=i32::MAX, a in any::<[u8; 4]>(), gr in proptest::option::of(1i32..=4095), pw in proptest::option::of("[ -~]{1,20}")) {
            let ip = std::net::Ipv4Addr::from(a);
            let mut raw = format!("{asn}@{ip}");
            if let Some(g) = gr { raw.push_str(&format!(",graceful-restart={g}")); }
            if let Some(p) = &pw { raw.push_str(&format!(",password={p}")); }
            let peer = parse_peer(&raw).unwrap();
            prop_assert_eq!(peer.asn, asn);
            prop_assert_eq!(peer.address, ip.to_string());
            prop_assert_eq!(peer.graceful_restart_seconds, gr);
            prop_assert_eq!(peer.password, pw);
        }

        #[test]
        fn timeout_parsing_never_panics(s in ".{0,30}") {
            let _ = parse_request_timeout(&s);
        }

        #[test]
        fn selector_parsing_never_panics(s in ".{0,80}") {
            let _ = parse_node_selector(std::slice::from_ref(&s));
            let _ = validate_label_selector(&s);
            let _ = validate_interface_name(&s);
            let _ = validate_kind(&s);
        }
    }
}

//! The CRD's CEL rules for `spec.cni.binDir` and `spec.cni.confDir` refuse exactly what
//! `hybridnet_api::operator::hostdir::check` refuses, with the same message: the generated YAML's
//! rules are evaluated here (they use only `self.matches('<RE2>')` and its negation; any other form
//! fails the test rather than being skipped).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use hybridnet_api::operator::hostdir;
use proptest::prelude::*;
use serde_json::Value;

/// The generated CRD, read once.
static CRD: std::sync::LazyLock<Value> = std::sync::LazyLock::new(read_crd);

fn crd() -> &'static Value {
    &CRD
}

fn read_crd() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/operator.hybridnet.io_hybridnetclusters.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn field(crd: &Value, name: &str) -> Value {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["cni"]["properties"][name]
        .clone()
}

/// One compiled rule: (negated, regex, message).
type Rule = (bool, regex::Regex, String);

fn rules(field: &Value) -> Vec<Rule> {
    field["x-kubernetes-validations"]
        .as_array()
        .expect("x-kubernetes-validations")
        .iter()
        .map(|r| {
            let rule = r["rule"].as_str().unwrap();
            let (negated, rest) = match rule.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, rule),
            };
            let re = rest
                .strip_prefix("self.matches('")
                .and_then(|s| s.strip_suffix("')"))
                .unwrap_or_else(|| panic!("a CEL form this test cannot evaluate: {rule}"));
            assert!(!re.contains('\'') && !re.contains('\\'), "{rule}");
            let message = r["message"].as_str().expect("every rule has a message");
            (negated, regex::Regex::new(re).unwrap(), message.to_string())
        })
        .collect()
}

/// What the API server answers: the message of the first failing rule (maxLength first).
fn api_server(field: &Value, rules: &[Rule], v: &str) -> Result<(), String> {
    let max = field["maxLength"]
        .as_u64()
        .expect("maxLength bounds the CEL cost");
    if v.len() as u64 > max {
        return Err("must be at most 255 bytes".into());
    }
    for (negated, re, message) in rules {
        // CEL `matches` is RE2 partial matching, as `is_match`.
        if re.is_match(v) == *negated {
            return Err(message.clone());
        }
    }
    Ok(())
}

const CORPUS: &[&str] = &[
    "/opt/cni/bin",
    "/etc/cni/net.d",
    "/var/lib/rancher/k3s/agent/etc/cni/net.d",
    "/usr/libexec/cni",
    "/home/kubernetes/bin",
    "/opt/...",
    "/opt/.hidden/bin",
    "/",
    "",
    "/etc",
    "/usr",
    "etc/cni/net.d",
    "/etc/",
    "//etc",
    "/etc//cni",
    "/etc/cni net",
    "/etc/cni\n",
    "/etc/cni\0",
    "/etc/cnié",
    "/opt/../etc",
    "/opt/cni/..",
    "/./etc/cni",
    "/proc/sys/net",
    "/sys/fs/cgroup",
    "/dev/shm",
    "/boot/efi",
    "/procfs/cni",
    "/device/cni",
];

#[test]
fn schema_rules_and_the_operators_check_agree_with_the_same_messages() {
    let crd = crd();
    for name in ["binDir", "confDir"] {
        let f = field(crd, name);
        let rules = rules(&f);
        assert_eq!(rules.len(), hostdir::CEL_RULES.len(), "{name}");
        let long = format!("/opt/{}", "a".repeat(300));
        for v in CORPUS.iter().copied().chain([long.as_str()]) {
            let want = hostdir::check(v).map_err(str::to_string);
            assert_eq!(api_server(&f, &rules, v), want, "{name} {v:?}");
        }
        for refused in ["/", "/etc", "/usr", "/opt/../etc", "/proc/sys/net", "etc"] {
            assert!(
                api_server(&f, &rules, refused).is_err(),
                "{name} {refused:?}"
            );
        }
        for fine in ["/opt/cni/bin", "/etc/cni/net.d"] {
            assert_eq!(api_server(&f, &rules, fine), Ok(()), "{name} {fine:?}");
        }
    }
}

proptest! {
    #[test]
    fn schema_and_check_agree_on_any_path_like_string(v in "[/a-z.A-Z_ \n-]{0,24}") {
        let crd = crd();
        let f = field(crd, "binDir");
        let rules = rules(&f);
        prop_assert_eq!(api_server(&f, &rules, &v), hostdir::check(&v).map_err(str::to_string));
    }

    #[test]
    fn schema_and_check_agree_on_system_prefixes(
        top in prop::sample::select(vec!["etc", "proc", "sys", "dev", "boot", "opt", "usr", "var", "..", "."]),
        rest in "(/[a-z.]{1,4}){0,3}/?",
    ) {
        let v = format!("/{top}{rest}");
        let crd = crd();
        let f = field(crd, "confDir");
        let rules = rules(&f);
        prop_assert_eq!(api_server(&f, &rules, &v), hostdir::check(&v).map_err(str::to_string));
    }
}

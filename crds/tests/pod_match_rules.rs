//! The CRD's CEL rules on `spec.webhook.additionalPodMatchExpressions` items refuse exactly what
//! `hybridnet_api::operator::podmatch::check` refuses, with the same message: the generated YAML's
//! rules are evaluated here (they use only `self.operator == '<s>'` and
//! `!(self.key in ['<s>', ...])`; any other form fails the test rather than being skipped).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use hybridnet_api::operator::podmatch;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use proptest::prelude::*;
use serde_json::Value;

static ITEMS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/operator.hybridnet.io_hybridnetclusters.yaml"
    );
    let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["webhook"]["properties"]["additionalPodMatchExpressions"]["items"]
        .clone()
});

enum Rule {
    OperatorIs(String),
    KeyNotIn(Vec<String>),
}

fn quoted(s: &str) -> String {
    let s = s.trim();
    let inner = s.strip_prefix('\'').and_then(|s| s.strip_suffix('\''));
    let inner = inner.unwrap_or_else(|| panic!("not a quoted string: {s}"));
    assert!(!inner.contains('\'') && !inner.contains('\\'), "{s}");
    inner.to_string()
}

fn rules() -> Vec<(Rule, String)> {
    ITEMS["x-kubernetes-validations"]
        .as_array()
        .expect("x-kubernetes-validations on each expression")
        .iter()
        .map(|r| {
            let rule = r["rule"].as_str().unwrap();
            let message = r["message"].as_str().expect("a message").to_string();
            let parsed = if let Some(v) = rule.strip_prefix("self.operator == ") {
                Rule::OperatorIs(quoted(v))
            } else if let Some(list) = rule
                .strip_prefix("!(self.key in [")
                .and_then(|s| s.strip_suffix("])"))
            {
                Rule::KeyNotIn(list.split(',').map(quoted).collect())
            } else {
                panic!("a CEL form this test cannot evaluate: {rule}")
            };
            (parsed, message)
        })
        .collect()
}

/// What the API server answers for one expression: the first failing rule's message.
fn api_server(r: &LabelSelectorRequirement) -> Result<(), String> {
    let max_key = ITEMS["properties"]["key"]["maxLength"].as_u64().unwrap();
    assert_eq!(max_key, podmatch::MAX_KEY_LEN);
    for (rule, message) in rules() {
        let ok = match &rule {
            Rule::OperatorIs(op) => r.operator == *op,
            Rule::KeyNotIn(keys) => !keys.contains(&r.key),
        };
        if !ok {
            return Err(message);
        }
    }
    Ok(())
}

fn req(key: &str, op: &str) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(vec!["x".into()]),
    }
}

#[test]
fn schema_rules_and_the_operators_check_agree_with_the_same_messages() {
    assert_eq!(rules().len(), podmatch::cel_rules().len());
    let mut keys = vec![
        "app",
        "k8s-app",
        "example.com/x",
        "webhook.hybridnet.io/ignore",
    ];
    keys.extend(podmatch::CONTROLLER_LABELS);
    for key in keys {
        for op in ["NotIn", "In", "Exists", "DoesNotExist", "notin", ""] {
            let r = req(key, op);
            assert_eq!(
                api_server(&r),
                podmatch::check(&r).map_err(|(_, m)| m),
                "{key} {op}"
            );
        }
    }
    // The upstream default passes; the hostile forms are refused.
    assert_eq!(api_server(&req("app", "NotIn")), Ok(()));
    for (key, op) in [
        ("app", "In"),
        ("app", "Exists"),
        ("app", "DoesNotExist"),
        ("webhook.hybridnet.io/ignore", "NotIn"),
        ("pod-template-hash", "NotIn"),
        ("controller-revision-hash", "NotIn"),
    ] {
        assert!(api_server(&req(key, op)).is_err(), "{key} {op}");
    }
}

proptest! {
    #[test]
    fn schema_and_check_agree_on_any_expression(
        key in prop_oneof![
            "[a-z./-]{0,20}",
            prop::sample::select(podmatch::CONTROLLER_LABELS.to_vec()).prop_map(str::to_string),
        ],
        op in prop_oneof!["[A-Za-z]{0,12}", prop::sample::select(vec!["NotIn", "In", "Exists", "DoesNotExist"]).prop_map(str::to_string)],
    ) {
        let r = req(&key, &op);
        prop_assert_eq!(api_server(&r), podmatch::check(&r).map_err(|(_, m)| m));
    }
}

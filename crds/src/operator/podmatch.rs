//! Which `spec.webhook.additionalPodMatchExpressions` are safe (docs/operations.md, "Pod webhook
//! exemptions"): one rule, written twice in the same words, as the CRD's CEL rules on each
//! expression (the API server refuses a bad one with the rule's message) and as [`check`] (the
//! operator's own check, which also covers objects stored before the rule existed).
//! `crds/tests/pod_match_rules.rs` evaluates the generated CRD's rules against [`check`].
//!
//! The Pod webhooks see a pod only when it matches every expression of their objectSelector
//! (upstream's charts/hybridnet/templates/webhookconfigurations.yaml puts these after the
//! `webhook.hybridnet.io/ignore` rule), so each expression says which pods *skip* the webhooks:
//! - only `NotIn` is accepted: it exempts exactly the pods labelled with one of the listed values
//!   (upstream's default `app NotIn [kube-proxy]` is one). `In` and `Exists` would exempt every pod
//!   without the label, `DoesNotExist` every pod that has it whatever its value (`app`, say: most
//!   pods), which is the webhooks switched off, not an exemption;
//! - the bypass label itself is the operator's (always rendered first, values `true`/`TRUE`), and
//!   the labels Kubernetes controllers put on every pod they create ([`CONTROLLER_LABELS`]) change
//!   with every rollout: an expression on them is refused.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use crate::constants::label;

/// Labels the workload controllers of Kubernetes set on every pod they create (ReplicaSet,
/// DaemonSet, StatefulSet, Job). Listed in the Kubernetes documentation's "Well-Known Labels,
/// Annotations and Taints".
pub const CONTROLLER_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/job-completion-index",
];

/// Longest label key (253-byte DNS prefix, `/`, 63-byte name): the schema's `maxLength`, which
/// bounds the CEL cost.
pub const MAX_KEY_LEN: u64 = 317;
/// Longest label value.
pub const MAX_VALUE_LEN: u64 = 63;
/// Most values of one expression.
pub const MAX_VALUES: u64 = 64;

/// The operator message of the CEL rule and of [`check`].
pub const OPERATOR_MESSAGE: &str = "only NotIn is accepted: In and Exists would exempt every pod without the label from the Pod webhooks, DoesNotExist every pod that has it";

/// The key message of the CEL rule and of [`check`].
pub fn key_message() -> String {
    format!(
        "must not be the bypass label {} (the operator's own rule) or a label Kubernetes controllers set on every pod ({})",
        label::WEBHOOK_IGNORE,
        CONTROLLER_LABELS.join(", ")
    )
}

fn refused_keys() -> Vec<&'static str> {
    let mut keys = vec![label::WEBHOOK_IGNORE];
    keys.extend(CONTROLLER_LABELS);
    keys
}

/// The CEL rules on one expression with their messages, in the order [`check`] applies them. Only
/// the forms `self.operator == '<s>'` and `!(self.key in ['<s>', ...])` are used.
pub fn cel_rules() -> Vec<(String, String)> {
    let list = refused_keys()
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        (
            "self.operator == 'NotIn'".to_string(),
            OPERATOR_MESSAGE.to_string(),
        ),
        (format!("!(self.key in [{list}])"), key_message()),
    ]
}

/// Which rule of [`cel_rules`] `r` breaks first, as (field under the expression, message).
pub fn check(r: &LabelSelectorRequirement) -> Result<(), (&'static str, String)> {
    if r.operator != "NotIn" {
        return Err(("operator", OPERATOR_MESSAGE.to_string()));
    }
    if refused_keys().contains(&r.key.as_str()) {
        return Err(("key", key_message()));
    }
    Ok(())
}

/// The schema of `spec.webhook.additionalPodMatchExpressions`: upstream's LabelSelectorRequirement
/// with lengths bounded (the CEL cost) and [`cel_rules`] on each item.
pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let rules: Vec<serde_json::Value> = cel_rules()
        .into_iter()
        .map(|(rule, message)| serde_json::json!({"rule": rule, "message": message}))
        .collect();
    let v = serde_json::json!({
        "type": "array",
        "nullable": true,
        "maxItems": crate::operator::values::MAX_POD_MATCH_EXPRESSIONS,
        "items": {
            "description": "A label selector requirement: pods labelled `key` with one of `values` skip the Pod webhooks.",
            "type": "object",
            "required": ["key", "operator"],
            "properties": {
                "key": {
                    "description": "The label key.",
                    "type": "string",
                    "maxLength": MAX_KEY_LEN,
                },
                "operator": {
                    "description": "Only NotIn.",
                    "type": "string",
                    "maxLength": 16,
                },
                "values": {
                    "description": "Label values; at least one.",
                    "type": "array",
                    "maxItems": MAX_VALUES,
                    "items": {"type": "string", "maxLength": MAX_VALUE_LEN},
                },
            },
            "x-kubernetes-validations": rules,
        },
    });
    // A JSON object always converts; keep the generator total anyway.
    schemars::Schema::try_from(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(vec!["x".into()]),
        }
    }

    #[test]
    fn only_not_in_on_a_user_label_passes() {
        assert_eq!(check(&req("app", "NotIn")), Ok(()));
        assert_eq!(check(&req("example.com/tier", "NotIn")), Ok(()));
        for op in ["In", "Exists", "DoesNotExist", "notin", ""] {
            assert_eq!(check(&req("app", op)).unwrap_err().0, "operator", "{op}");
        }
        for key in [label::WEBHOOK_IGNORE, "pod-template-hash", "job-name"] {
            assert_eq!(check(&req(key, "NotIn")).unwrap_err().0, "key", "{key}");
        }
    }

    #[test]
    fn the_key_rule_lists_every_refused_key() {
        let rules = cel_rules();
        for k in refused_keys() {
            assert!(rules[1].0.contains(&format!("'{k}'")), "{k}");
            assert!(rules[1].1.contains(k), "{k}");
        }
    }
}

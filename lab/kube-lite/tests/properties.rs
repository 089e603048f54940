//! Property tests of the pure parts: parsers never panic on hostile input, managedFields
//! FieldsV1 round-trips, server-side apply is idempotent and merge patches behave like RFC 7386.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use kube_lite::managed::{Scope, apply, fields_of, from_fields_v1, to_fields_v1};
use kube_lite::selector::{FieldSelector, LabelSelector};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects shaped like configurations: maps of maps with scalar leaves and keyed containers.
fn arb_config() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..4),
        prop::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{1,4}", 0..3),
        prop::collection::btree_set("[a-z]{1,3}", 0..3),
    )
        .prop_map(|(data, images, names)| {
            let containers: Vec<Value> = names.iter().map(|n| json!({"name": n, "image": images.values().next().cloned().unwrap_or_default()})).collect();
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "labels": data}, "spec": {"containers": containers}})
        })
}

proptest! {
    #[test]
    fn selector_parsers_never_panic(s in ".{0,60}") {
        let _ = LabelSelector::parse(&s);
        let _ = FieldSelector::parse(&s, "", "pods");
    }

    #[test]
    fn parsed_label_selectors_match_consistently(key in "[a-z]{1,8}", val in "[a-z0-9]{1,8}") {
        let obj = json!({"metadata": {"labels": {key.clone(): val.clone()}}});
        let sel = |s: String| LabelSelector::parse(&s).unwrap().matches(&obj);
        let (eq, ne, set, not) = (
            sel(format!("{key}={val}")),
            sel(format!("{key}!={val}")),
            sel(format!("{key} in ({val},zz)")),
            sel(format!("!{key}")),
        );
        prop_assert!(eq && !ne && set && !not);
    }

    #[test]
    fn strategic_merge_never_panics(mut target in arb_json(), patch in arb_json()) {
        let _ = kube_lite::merge::strategic_merge(&mut target, &patch);
    }

    #[test]
    fn fields_v1_roundtrips(obj in arb_json()) {
        let set = fields_of(&obj);
        prop_assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }

    #[test]
    fn apply_is_idempotent_and_keeps_applied_values(cfg in arb_config()) {
        let scope = Scope::Main { status_split: true };
        let once = apply(None, &cfg, "m", "v1", false, scope, "t").unwrap();
        let twice = apply(Some(&once), &cfg, "m", "v1", false, scope, "t").unwrap();
        prop_assert_eq!(&once, &twice);
        prop_assert_eq!(&once["spec"], &cfg["spec"]);
        prop_assert_eq!(&once["metadata"]["labels"], &cfg["metadata"]["labels"]);
    }

    #[test]
    fn merge_patch_with_itself_is_identity(obj in arb_json()) {
        // RFC 7386: applying a document without nulls as a patch to itself changes nothing
        fn strip_nulls(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect()),
                other => other.clone(),
            }
        }
        let clean = strip_nulls(&obj);
        let mut target = clean.clone();
        json_patch::merge(&mut target, &clean);
        prop_assert_eq!(target, clean);
    }
}

//! Strategic merge patch and the list semantics shared with server-side apply.
//!
//! Kubernetes knows merge keys from the Go struct tags of built-in types. We keep a table by field
//! name, which covers the lists the project patches (containers, env, volumes, ports, ...).

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListKind {
    /// Items are merged by this key.
    Map(&'static str),
    /// A set of scalars (union on merge).
    Set,
    /// Replaced as a whole.
    Atomic,
}

/// The list semantics of a field of a built-in kind, by field name and the items present.
pub fn list_kind(field: &str, items: &[Value]) -> ListKind {
    let has = |k: &str| items.iter().all(|i| i.get(k).is_some()) && !items.is_empty();
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => ListKind::Map(if field == "readinessGates" {
            "conditionType"
        } else {
            "name"
        }),
        "volumeMounts" => ListKind::Map("mountPath"),
        "volumeDevices" => ListKind::Map("devicePath"),
        "ports" => {
            if has("containerPort") {
                ListKind::Map("containerPort")
            } else if has("port") {
                ListKind::Map("port")
            } else {
                ListKind::Atomic
            }
        }
        "conditions" => {
            if has("type") {
                ListKind::Map("type")
            } else {
                ListKind::Atomic
            }
        }
        "addresses" => {
            if has("type") && items.iter().all(|i| i.get("ip").is_none()) {
                ListKind::Map("type")
            } else {
                ListKind::Atomic
            }
        }
        "taints" => ListKind::Map("key"),
        "hostAliases" => ListKind::Map("ip"),
        "ownerReferences" => ListKind::Map("uid"),
        "topologySpreadConstraints" => ListKind::Map("topologyKey"),
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
}

/// Remove `$patch`-style directives and nulls from a value that is inserted as a whole.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

/// Apply a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(pm) = patch else {
        return Err("strategic merge patch must be a JSON object".into());
    };
    if let Some(directive) = pm.get("$patch").and_then(Value::as_str) {
        match directive {
            "replace" => {
                *target = clean(patch);
                return Ok(());
            }
            "delete" => {
                *target = Value::Object(Map::new());
                return Ok(());
            }
            "merge" => {}
            other => return Err(format!("unknown patch type: {other} in map")),
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else {
        return Ok(());
    };
    if let Some(retain) = pm.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        tm.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let del: Vec<&Value> = pv
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if let Some(Value::Array(list)) = tm.get_mut(field) {
                list.retain(|x| !del.contains(&x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue; // $setElementOrder, $patch, $retainKeys handled or ordering-only
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match pv {
            Value::Object(pobj) => {
                if pobj.get("$patch").and_then(Value::as_str) == Some("delete") {
                    tm.remove(k);
                    continue;
                }
                let t = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(t, pv)?;
            }
            Value::Array(pitems) => {
                let existing: Vec<Value> = tm
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut all = existing.clone();
                all.extend(pitems.iter().filter(|i| i.get("$patch").is_none()).cloned());
                let kind = list_kind(k, &all);
                // a lone {"$patch": "replace"} item means replace the list with the others
                let replace = pitems
                    .iter()
                    .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
                let merged = if replace {
                    pitems
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .map(clean)
                        .collect()
                } else {
                    merge_list(existing, pitems, kind, true)?
                };
                tm.insert(k.clone(), Value::Array(merged));
            }
            other => {
                tm.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(
    existing: Vec<Value>,
    patch: &[Value],
    kind: ListKind,
    strategic: bool,
) -> Result<Vec<Value>, String> {
    match kind {
        ListKind::Atomic => Ok(patch.iter().map(clean).collect()),
        ListKind::Set => {
            let mut out = existing;
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Ok(out)
        }
        ListKind::Map(key) => {
            let mut out = existing;
            for p in patch {
                let Some(kv) = key_of(p, key) else {
                    return Err(format!(
                        "map: {p} does not contain declared merge key: {key}"
                    ));
                };
                let pos = out.iter().position(|e| key_of(e, key) == Some(kv));
                let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if strategic {
                            strategic_merge(&mut out[i], p)?;
                        } else {
                            apply_merge(&mut out[i], p);
                        }
                    }
                    (None, false) => out.push(clean(p)),
                }
            }
            Ok(out)
        }
    }
}

/// Merge an applied configuration into a live object (server-side apply's merge step):
/// maps merge recursively, keyed lists merge by key, sets union, other lists are replaced.
pub fn apply_merge(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied) {
        (Some(tm), Value::Object(am)) => {
            for (k, av) in am {
                match av {
                    Value::Object(_) => {
                        let t = tm.entry(k.clone()).or_insert(Value::Null);
                        if !t.is_object() {
                            *t = Value::Object(Map::new());
                        }
                        apply_merge(t, av);
                    }
                    Value::Array(items) => {
                        let existing = tm
                            .get(k)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        let mut all = existing.clone();
                        all.extend(items.iter().cloned());
                        let kind = list_kind(k, &all);
                        let merged = merge_list(existing, items, kind, false)
                            .unwrap_or_else(|_| items.clone());
                        tm.insert(k.clone(), Value::Array(merged));
                    }
                    other => {
                        tm.insert(k.clone(), other.clone());
                    }
                }
            }
        }
        _ => *target = applied.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(mut t: Value, p: Value) -> Value {
        strategic_merge(&mut t, &p).unwrap();
        t
    }

    #[test]
    fn containers_merge_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "b:1"}]}});
        let out = smp(
            pod,
            json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]},
            {"name": "c", "image": "c:1"}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]},
            {"name": "b", "image": "b:1"},
            {"name": "c", "image": "c:1"}]}})
        );
    }

    #[test]
    fn delete_directives() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"volumes": [{"name": "v1"}, {"name": "v2"}], "tolerations": [{"key": "k"}]}});
        let out = smp(
            pod,
            json!({"metadata": {"labels": {"x": null}, "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"volumes": [{"name": "v1", "$patch": "delete"}], "tolerations": [{"key": "j"}],
                     "$setElementOrder/volumes": [{"name": "v2"}]}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b"], "labels": {"y": "2"}},
            "spec": {"volumes": [{"name": "v2"}], "tolerations": [{"key": "j"}]}})
        );
    }

    #[test]
    fn replace_directives_and_sets() {
        let t =
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"selector": {"a": "1", "b": "2"}}});
        let out = smp(
            t,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"selector": {"c": "3"}}})
        );
        let t = json!({"spec": {"containers": [{"name": "a"}]}});
        let out = smp(
            t,
            json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(out, json!({"spec": {"containers": [{"name": "z"}]}}));
    }

    #[test]
    fn ports_keys_and_errors() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 80, "name": "web"}, {"port": 443}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "web"}, {"port": 443}])
        );
        let mut t = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(
            strategic_merge(&mut t, &json!({"spec": {"containers": [{"image": "x"}]}})).is_err()
        );
        assert!(strategic_merge(&mut t, &json!([1])).is_err());
        assert!(strategic_merge(&mut t, &json!({"$patch": "explode"})).is_err());
    }

    #[test]
    fn apply_merge_semantics() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "1", "args": ["x"]}], "replicas": 1}});
        apply_merge(
            &mut t,
            &json!({"spec": {"containers": [{"name": "a", "args": ["y"]}, {"name": "b"}]}}),
        );
        assert_eq!(
            t,
            json!({"spec": {"containers": [{"name": "a", "image": "1", "args": ["y"]}, {"name": "b"}], "replicas": 1}})
        );
    }
}

//! Structural schema handling for custom resources: defaulting, pruning of unknown fields
//! (or rejecting them with `fieldValidation=Strict`), and validation of types, enums, bounds,
//! lengths, item counts and required fields, as the API server does with `openAPIV3Schema`.

use serde_json::{Map, Value};

/// Unknown-field handling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unknown {
    /// Drop unknown fields silently (fieldValidation Ignore/Warn or unset).
    Prune,
    /// Report unknown fields (fieldValidation=Strict).
    Reject,
}

/// Result of processing an object against its schema.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// (field path, message) for 422 Invalid.
    pub invalid: Vec<(String, String)>,
    /// Unknown field paths (only collected in `Unknown::Reject` mode).
    pub unknown: Vec<String>,
}

fn ty(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn flag(schema: &Value, k: &str) -> bool {
    schema.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// Apply defaults, prune/reject unknown fields and validate `obj` (a whole custom resource)
/// against `schema` (the version's `openAPIV3Schema`). `metadata`, `apiVersion` and `kind` are
/// left alone at the root.
pub fn process(schema: &Value, obj: &mut Value, unknown: Unknown) -> Outcome {
    let mut out = Outcome::default();
    let Some(root) = obj.as_object_mut() else {
        out.invalid
            .push(("<root>".into(), "Invalid value: must be an object".into()));
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    apply_defaults(schema, root);
    let keys: Vec<String> = root.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(sub) => {
                if let Some(v) = root.get_mut(&k) {
                    walk(sub, v, &k, unknown, &mut out);
                }
                if root.get(&k).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                    root.remove(&k);
                }
            }
            None if preserve => {}
            None => match unknown {
                Unknown::Prune => {
                    root.remove(&k);
                }
                Unknown::Reject => out.unknown.push(k.clone()),
            },
        }
    }
    required(schema, root, "", &mut out);
    out
}

fn apply_defaults(schema: &Value, m: &mut Map<String, Value>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            if let Some(d) = sub.get("default")
                && m.get(k)
                    .is_none_or(|v| v.is_null() && !flag(sub, "nullable"))
            {
                m.insert(k.clone(), d.clone());
            }
        }
    }
}

fn required(schema: &Value, m: &Map<String, Value>, path: &str, out: &mut Outcome) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if m.get(r).is_none_or(Value::is_null) {
                let p = if path.is_empty() {
                    r.to_string()
                } else {
                    format!("{path}.{r}")
                };
                out.invalid.push((p, "Required value".into()));
            }
        }
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, unknown: Unknown, out: &mut Outcome) {
    if v.is_null() {
        // non-nullable nulls are pruned by the caller
        return;
    }
    let t = ty(schema);
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(matches!(v, Value::String(_)) || v.is_i64() || v.is_u64()) {
            out.invalid.push((
                path.into(),
                format!(
                    "Invalid value: {}: {path} in body must be of type integer-or-string",
                    show(v)
                ),
            ));
        }
        return;
    }
    let actual = value_kind(v);
    let type_ok = match t {
        "" => true,
        "number" => matches!(actual, "number" | "integer"),
        other => other == actual,
    };
    if !type_ok {
        out.invalid.push((
            path.into(),
            format!(
                "Invalid value: \"{actual}\": {path} in body must be of type {t}: \"{actual}\""
            ),
        ));
        return;
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let allowed: Vec<String> = en.iter().map(show).collect();
        out.invalid.push((
            path.into(),
            format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                allowed.join(", ")
            ),
        ));
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let excl = flag(schema, "exclusiveMinimum");
                if x < min || (excl && x == min) {
                    let op = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    out.invalid.push((
                        path.into(),
                        format!("Invalid value: {n}: {path} in body should be {op} {min}"),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let excl = flag(schema, "exclusiveMaximum");
                if x > max || (excl && x == max) {
                    let op = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    out.invalid.push((
                        path.into(),
                        format!("Invalid value: {n}: {path} in body should be {op} {max}"),
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                out.invalid.push((
                    path.into(),
                    format!(
                        "Invalid value: \"{s}\": {path} in body should be at least {min} chars long"
                    ),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                out.invalid.push((
                    path.into(),
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && n < min
            {
                out.invalid.push((
                    path.into(),
                    format!("Invalid value: {n}: {path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && n > max
            {
                out.invalid.push((
                    path.into(),
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), unknown, out);
                }
                if !flag(item_schema, "nullable") {
                    items.retain(|x| !x.is_null());
                }
            }
        }
        Value::Object(m) => {
            apply_defaults(schema, m);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let child_path = format!("{path}.{k}");
                let sub = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(a) if a.is_object() => Some(a),
                    _ => None,
                });
                match sub {
                    Some(sub) => {
                        if let Some(cv) = m.get_mut(&k) {
                            walk(sub, cv, &child_path, unknown, out);
                        }
                        if m.get(&k).is_some_and(Value::is_null) && !flag(sub, "nullable") {
                            m.remove(&k);
                        }
                    }
                    None => {
                        let allowed = preserve
                            || additional.and_then(Value::as_bool) == Some(true)
                            || (embedded
                                && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
                        if !allowed {
                            match unknown {
                                Unknown::Prune => {
                                    m.remove(&k);
                                }
                                Unknown::Reject => out.unknown.push(child_path),
                            }
                        }
                    }
                }
            }
            required(schema, m, path, out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["mode"], "properties": {
                "mode": {"type": "string", "enum": ["VLAN", "VXLAN"]},
                "netID": {"type": "integer", "minimum": 0, "maximum": 4095},
                "name": {"type": "string", "maxLength": 5},
                "port": {"x-kubernetes-int-or-string": true},
                "replicas": {"type": "integer", "default": 1},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "ratio": {"type": "number"},
                "maybe": {"type": "string", "nullable": true},
            }},
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        }})
    }

    #[test]
    fn defaults_and_pruning() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "anything": 1},
            "spec": {"mode": "VLAN", "extra": 1, "free": {"a": {"b": 1}}, "labels": {"a": "b"}, "ratio": 1, "maybe": null, "netID": null},
            "junk": true});
        let out = process(&schema(), &mut o, Unknown::Prune);
        assert_eq!(out, Outcome::default());
        assert_eq!(o["spec"]["replicas"], 1);
        assert!(o["spec"].get("extra").is_none());
        assert!(o.get("junk").is_none());
        assert_eq!(o["spec"]["free"]["a"]["b"], 1);
        assert_eq!(o["metadata"]["anything"], 1);
        assert!(o["spec"].get("maybe").is_some(), "nullable null kept");
        assert!(o["spec"].get("netID").is_none(), "non-nullable null pruned");
    }

    #[test]
    fn strict_reports_unknown_fields() {
        let mut o = json!({"spec": {"mode": "VLAN", "extra": 1}, "junk": true});
        let out = process(&schema(), &mut o, Unknown::Reject);
        assert_eq!(
            out.unknown,
            vec!["junk".to_string(), "spec.extra".to_string()]
        );
    }

    #[test]
    fn validation_errors() {
        let mut o = json!({"spec": {"mode": "GRE", "netID": 5000, "name": "toolong", "port": true,
            "tags": ["a", "b", "c"], "labels": {"a": 1}, "ratio": "x"}, "status": {"ok": "yes"}});
        let out = process(&schema(), &mut o, Unknown::Prune);
        let fields: Vec<&str> = out.invalid.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "spec.mode",
            "spec.netID",
            "spec.name",
            "spec.port",
            "spec.tags",
            "spec.labels.a",
            "spec.ratio",
            "status.ok",
        ] {
            assert!(fields.contains(&f), "{f} not in {:?}", out.invalid);
        }
        assert!(
            out.invalid
                .iter()
                .any(|(_, m)| m.contains("supported values: \"VLAN\", \"VXLAN\""))
        );
        let mut missing = json!({"spec": {}});
        let out = process(&schema(), &mut missing, Unknown::Prune);
        assert_eq!(
            out.invalid,
            vec![("spec.mode".to_string(), "Required value".to_string())]
        );
    }
}

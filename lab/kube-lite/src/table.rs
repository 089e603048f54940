//! `meta.k8s.io/v1` Table output (what `kubectl get` asks for), and simple JSONPath evaluation for
//! printer columns.

use crate::resources::{PrinterColumn, ResourceInfo};
use crate::util::{human_duration, meta, meta_str, now_secs, parse_rfc3339};
use serde_json::{Value, json};

/// Evaluate a simple JSONPath (`.a.b`, `.a[0].b`, `.a[*].b`, `.a[?(@.type=="Ready")].status`,
/// optionally wrapped in `{}`) and return the matches.
pub fn jsonpath<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut cur: Vec<&Value> = vec![obj];
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            rest = &r[end..];
            if field.is_empty() {
                continue;
            }
            cur = cur.into_iter().filter_map(|v| v.get(field)).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = find_close(r) else {
                return vec![];
            };
            let sel = &r[..end];
            rest = &r[end + 1..];
            cur = cur
                .into_iter()
                .filter_map(Value::as_array)
                .flat_map(|a| select(a, sel))
                .collect();
        } else {
            return vec![];
        }
    }
    cur
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut in_str: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (in_str, c) {
            (Some(q), c) if c == q => in_str = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => in_str = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn select<'a>(a: &'a [Value], sel: &str) -> Vec<&'a Value> {
    let sel = sel.trim();
    if sel == "*" {
        return a.iter().collect();
    }
    if let Ok(i) = sel.parse::<i64>() {
        let idx = if i < 0 { a.len() as i64 + i } else { i };
        return a.get(idx as usize).into_iter().collect();
    }
    if let Some(f) = sel.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
        // @.field op literal
        let (lhs, op, rhs) = if let Some((l, r)) = f.split_once("==") {
            (l, true, r)
        } else if let Some((l, r)) = f.split_once("!=") {
            (l, false, r)
        } else {
            return vec![];
        };
        let lhs = lhs.trim().strip_prefix('@').unwrap_or(lhs.trim());
        let rhs = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
        return a
            .iter()
            .filter(|item| {
                let v = jsonpath(item, lhs);
                let s = v.first().map(|x| scalar_string(x)).unwrap_or_default();
                (s == rhs) == op
            })
            .collect();
    }
    vec![]
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn cell(col: &PrinterColumn, obj: &Value) -> Value {
    if let Some(special) = col.json_path.strip_prefix('@') {
        return builtin_cell(special, obj);
    }
    let res = jsonpath(obj, &col.json_path);
    let Some(v) = res.first() else {
        return Value::Null;
    };
    match col.type_.as_str() {
        "integer" => v
            .as_i64()
            .map(Value::from)
            .or_else(|| v.as_f64().map(|f| json!(f as i64)))
            .unwrap_or(Value::Null),
        "number" => v.as_f64().map(Value::from).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => match v.as_str() {
            Some(s) => match parse_rfc3339(s) {
                Some(t) => json!(human_duration(now_secs() - t)),
                None => json!("<invalid>"),
            },
            None => Value::Null,
        },
        _ => {
            if res.len() > 1 {
                json!(
                    res.iter()
                        .map(|x| scalar_string(x))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else {
                match v {
                    Value::String(s) => json!(s),
                    other => json!(other.to_string()),
                }
            }
        }
    }
}

fn builtin_cell(which: &str, obj: &Value) -> Value {
    match which {
        "pod-ready" => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |a| {
                    a.iter()
                        .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
                        .count()
                });
            json!(format!("{ready}/{total}"))
        }
        "pod-status" => {
            if meta(obj).contains_key("deletionTimestamp") {
                return json!("Terminating");
            }
            let reason = obj.pointer("/status/reason").and_then(Value::as_str);
            json!(
                reason
                    .or(obj.pointer("/status/phase").and_then(Value::as_str))
                    .unwrap_or("Unknown")
            )
        }
        "pod-restarts" => {
            let n: i64 = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |a| {
                    a.iter()
                        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                        .sum()
                });
            json!(n.to_string())
        }
        "node-ready" => {
            let ready = jsonpath(obj, ".status.conditions[?(@.type==\"Ready\")].status");
            let mut s = match ready.first().and_then(|v| v.as_str()) {
                Some("True") => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                s.push_str(",SchedulingDisabled");
            }
            json!(s)
        }
        "node-roles" => {
            let roles: Vec<String> = meta(obj)
                .get("labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            json!(if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            })
        }
        // kubectl's NetworkPolicy printer: metav1.FormatLabelSelector(spec.podSelector)
        "netpol-pod-selector" => {
            let sel = obj
                .pointer("/spec/podSelector")
                .map(crate::selector::from_label_selector_object);
            json!(match sel {
                Some(Err(_)) => "<error>".to_string(),
                Some(Ok(s)) if !s.is_empty() => s.to_string(),
                _ => "<none>".to_string(),
            })
        }
        "node-internal-ip" => {
            let ip = jsonpath(obj, ".status.addresses[?(@.type==\"InternalIP\")].address");
            json!(ip.first().and_then(|v| v.as_str()).unwrap_or("<none>"))
        }
        _ => Value::Null,
    }
}

/// Column definitions for a resource version.
pub fn columns(info: &ResourceInfo, version: &str) -> Vec<PrinterColumn> {
    match info.columns.get(version) {
        Some(c) => c.clone(),
        None => vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }],
    }
}

pub fn column_definitions(cols: &[PrinterColumn]) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for c in cols {
        defs.push(json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    Value::Array(defs)
}

/// One table row.
pub fn row(cols: &[PrinterColumn], obj: &Value, include: &str) -> Value {
    let mut cells = vec![json!(meta_str(obj, "name"))];
    cells.extend(cols.iter().map(|c| cell(c, obj)));
    let mut r = json!({"cells": cells});
    match include {
        "None" => {}
        "Object" => r["object"] = obj.clone(),
        _ => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
    }
    r
}

/// A full Table.
pub fn table(
    cols: &[PrinterColumn],
    with_defs: bool,
    rows: Vec<Value>,
    rv: Option<String>,
    cont: Option<String>,
) -> Value {
    let mut md = serde_json::Map::new();
    if let Some(rv) = rv {
        md.insert("resourceVersion".into(), json!(rv));
    }
    if let Some(c) = cont {
        md.insert("continue".into(), json!(c));
    }
    let mut t =
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "rows": rows});
    t["columnDefinitions"] = if with_defs {
        column_definitions(cols)
    } else {
        json!([])
    };
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpaths() {
        let o = json!({"spec": {"size": 3, "items": [{"n": "a"}, {"n": "b"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}});
        assert_eq!(jsonpath(&o, ".spec.size"), vec![&json!(3)]);
        assert_eq!(jsonpath(&o, "{.spec.items[1].n}"), vec![&json!("b")]);
        assert_eq!(jsonpath(&o, ".spec.items[*].n").len(), 2);
        assert_eq!(jsonpath(&o, ".spec.items[-1].n"), vec![&json!("b")]);
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert!(jsonpath(&o, ".missing.x").is_empty());
        assert!(jsonpath(&o, "garbage[").is_empty());
    }

    #[test]
    fn cells() {
        let c = |t: &str, p: &str| PrinterColumn {
            name: "X".into(),
            type_: t.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: p.into(),
        };
        let o = json!({"metadata": {"name": "n", "creationTimestamp": crate::util::rfc3339(now_secs() - 150)}, "spec": {"size": 3, "on": true}});
        let r = row(
            &[
                c("integer", ".spec.size"),
                c("boolean", ".spec.on"),
                c("date", ".metadata.creationTimestamp"),
                c("string", ".spec.size"),
                c("string", ".nope"),
            ],
            &o,
            "None",
        );
        assert_eq!(r["cells"], json!(["n", 3, true, "2m30s", "3", null]));
        let node = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(builtin_cell("node-ready", &node), json!("Ready"));
        assert_eq!(builtin_cell("node-roles", &node), json!("control-plane"));
        let np = |sel: Value| json!({"spec": {"podSelector": sel}});
        assert_eq!(
            builtin_cell("netpol-pod-selector", &np(json!({}))),
            json!("<none>")
        );
        assert_eq!(
            builtin_cell(
                "netpol-pod-selector",
                &np(json!({"matchLabels": {"role": "db", "app": "x"},
                    "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["b", "a"]},
                                         {"key": "zone", "operator": "DoesNotExist"}]}))
            ),
            json!("app=x,env notin (a,b),role=db,!zone")
        );
        assert_eq!(
            builtin_cell(
                "netpol-pod-selector",
                &np(json!({"matchExpressions": [{"key": "k", "operator": "Bogus"}]}))
            ),
            json!("<error>")
        );
    }
}

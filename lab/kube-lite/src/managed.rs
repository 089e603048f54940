//! managedFields tracking and server-side apply.
//!
//! A field set is a set of paths; each path element is a FieldsV1 key: `f:<field>`,
//! `k:<json key object>` (list item by merge key), `v:<json value>` (set member), `i:<index>`.
//! A path that ends in a `k:`/`v:` element stands for the list item itself (FieldsV1 ".").

use crate::merge::{ListKind, apply_merge, list_kind};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

/// Which part of an object a request manages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// The main resource: everything but `status` when the resource has a status subresource.
    Main { status_split: bool },
    /// The `/status` subresource: only `status`.
    Status,
}

const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The part of an object that field management looks at.
pub fn managed_part(obj: &Value, scope: Scope) -> Value {
    let Some(m) = obj.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, v) in m {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("status", Scope::Status) => {
                out.insert(k.clone(), v.clone());
            }
            (_, Scope::Status) => {}
            ("status", Scope::Main { status_split: true }) => {}
            ("metadata", _) => {
                if let Some(mm) = v.as_object() {
                    let rest: Map<String, Value> = mm
                        .iter()
                        .filter(|(k, _)| !SYSTEM_META.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if !rest.is_empty() {
                        out.insert(k.clone(), Value::Object(rest));
                    }
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn key_element(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    if let Some(v) = item.get(key) {
        m.insert(key.to_string(), v.clone());
    }
    format!("k:{}", Value::Object(m))
}

/// All leaf paths (and list-item paths) of a value.
pub fn fields_of(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(format!("f:{k}"));
                match child {
                    Value::Array(items) => match list_kind(k, items) {
                        ListKind::Map(key) if !items.is_empty() => {
                            for item in items {
                                prefix.push(key_element(item, key));
                                out.insert(prefix.clone());
                                walk(item, prefix, out);
                                prefix.pop();
                            }
                        }
                        ListKind::Set if !items.is_empty() => {
                            for item in items {
                                prefix.push(format!("v:{item}"));
                                out.insert(prefix.clone());
                                prefix.pop();
                            }
                        }
                        _ => {
                            out.insert(prefix.clone());
                        }
                    },
                    _ => walk(child, prefix, out),
                }
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The value at a path, if present.
pub fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

/// Where one path element (`f:field`, `k:{key}`, `v:value`, `i:index`) points inside a value.
enum Slot<'p> {
    Field(&'p str),
    Index(usize),
}

fn slot<'p>(cur: &Value, el: &'p str) -> Option<Slot<'p>> {
    if let Some(f) = el.strip_prefix("f:") {
        return Some(Slot::Field(f));
    }
    let arr = cur.as_array()?;
    let index = if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        arr.iter().position(|item| has_key(item, &key))?
    } else if let Some(x) = el.strip_prefix("v:") {
        let want: Value = serde_json::from_str(x).ok()?;
        arr.iter().position(|item| *item == want)?
    } else {
        el.strip_prefix("i:")?.parse::<usize>().ok()?
    };
    Some(Slot::Index(index))
}

/// Whether a list item carries every field of an associative-list key.
fn has_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    match slot(cur, el)? {
        Slot::Field(f) => cur.get(f),
        Slot::Index(i) => cur.get(i),
    }
}

fn step_mut<'a>(cur: &'a mut Value, el: &str) -> Option<&'a mut Value> {
    match slot(cur, el)? {
        Slot::Field(f) => cur.get_mut(f),
        Slot::Index(i) => cur.get_mut(i),
    }
}

/// Remove the element a path points at. Returns whether something was removed.
pub fn remove_at(v: &mut Value, path: &[String]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for el in parent_path {
        match step_mut(cur, el) {
            Some(n) => cur = n,
            None => return false,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        return cur.as_object_mut().is_some_and(|m| m.remove(f).is_some());
    }
    let Some(arr) = cur.as_array_mut() else {
        return false;
    };
    let before = arr.len();
    if let Some(k) = last.strip_prefix("k:") {
        let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
            return false;
        };
        arr.retain(|item| !has_key(item, &key));
    } else if let Some(x) = last.strip_prefix("v:") {
        let Ok(want) = serde_json::from_str::<Value>(x) else {
            return false;
        };
        arr.retain(|item| *item != want);
    }
    arr.len() != before
}

/// Human path for messages: `.spec.containers[name="a"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// FieldsV1 JSON from a field set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for el in path {
            let child = node.entry(el.clone()).or_insert_with(|| json!({}));
            let Value::Object(m) = child else { break };
            node = m;
        }
    }
    // mark list items that have children with "."
    fn mark(node: &mut Map<String, Value>, prefix: &mut Path, set: &FieldSet) {
        for (k, v) in node.iter_mut() {
            prefix.push(k.clone());
            if let Value::Object(m) = v {
                if !m.is_empty() && set.contains(prefix) {
                    m.insert(".".into(), json!({}));
                }
                mark(m, prefix, set);
            }
            prefix.pop();
        }
    }
    mark(&mut root, &mut Vec::new(), set);
    Value::Object(root)
}

/// Field set from FieldsV1 JSON.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, child) in m {
            if k == "." {
                continue;
            }
            prefix.push(k.clone());
            let cm = child.as_object();
            if cm.is_none_or(|c| c.is_empty() || c.contains_key(".")) {
                out.insert(prefix.clone());
            }
            go(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

pub fn parse_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = crate::util::meta(obj)
        .get("managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    list.iter()
        .map(|e| Entry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            time: s(e, "time"),
            subresource: s(e, "subresource"),
            fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = crate::util::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn subresource_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Status => "status",
        Scope::Main { .. } => "",
    }
}

/// Record an Update by `manager`: fields that changed between `old` and `new` move to the manager.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    scope: Scope,
    now: &str,
) {
    let mut entries = old.map(parse_entries).unwrap_or_default();
    let new_part = managed_part(new, scope);
    let new_fields = fields_of(&new_part);
    let (changed, removed): (FieldSet, FieldSet) = match old {
        None => (new_fields.clone(), FieldSet::new()),
        Some(o) => {
            let old_part = managed_part(o, scope);
            let old_fields = fields_of(&old_part);
            let changed = new_fields
                .iter()
                .filter(|p| value_at(&old_part, p) != value_at(&new_part, p))
                .cloned()
                .collect();
            let removed = old_fields.difference(&new_fields).cloned().collect();
            (changed, removed)
        }
    };
    if changed.is_empty() && removed.is_empty() && old.is_some() {
        write_entries(new, &entries);
        return;
    }
    let sub = subresource_name(scope);
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: sub.to_string(),
            fields: changed,
        }),
    }
    write_entries(new, &entries);
}

/// A field owned by another manager that an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub path: Path,
}

/// Server-side apply of `applied` onto `live` (None for create). Returns the new object
/// (managedFields updated) or the conflicts when `force` is false.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    scope: Scope,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = live.map(parse_entries).unwrap_or_default();
    let sub = subresource_name(scope);
    let applied_part = managed_part(applied, scope);
    let applied_fields = fields_of(&applied_part);
    let live_part = live
        .map(|l| managed_part(l, scope))
        .unwrap_or_else(|| json!({}));

    let mut conflicts = Vec::new();
    for e in &entries {
        if e.manager == manager && e.operation == "Apply" && e.subresource == sub {
            continue;
        }
        if e.subresource != sub {
            continue;
        }
        for p in applied_fields.intersection(&e.fields) {
            let (a, l) = (value_at(&applied_part, p), value_at(&live_part, p));
            let is_item = p
                .last()
                .is_some_and(|el| el.starts_with("k:") || el.starts_with("v:"));
            if !is_item && l.is_some() && a != l {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for c in &conflicts {
        for e in entries
            .iter_mut()
            .filter(|e| e.manager == c.manager && e.subresource == sub)
        {
            e.fields.remove(&c.path);
        }
    }

    let mut new = live.cloned().unwrap_or_else(|| json!({}));
    let mut to_merge = applied_part.clone();
    if let (Some(m), Scope::Main { .. }) = (to_merge.as_object_mut(), scope) {
        // apiVersion/kind/name/namespace come from the applied object, not from managed fields
        m.remove("status");
    }
    apply_merge(&mut new, &to_merge);
    for k in ["apiVersion", "kind"] {
        if let Some(v) = applied.get(k) {
            new[k] = v.clone();
        }
    }

    // fields this manager applied before but no longer applies, and nobody else owns, are removed
    let previous: FieldSet = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply") && e.subresource == sub)
        .map(|e| &e.fields)
        .collect();
    let owned_by_others = |p: &Path| others.iter().any(|s| s.iter().any(|q| q.starts_with(p)));
    let mut stale: Vec<&Path> = previous
        .iter()
        .filter(|p| {
            !applied_fields.contains(*p) && !applied_fields.iter().any(|q| q.starts_with(p))
        })
        .collect();
    // parents first: removing a list item removes its fields too (and removing a key field first
    // would make the item unaddressable)
    stale.sort_by_key(|p| p.len());
    let mut removed: Vec<&Path> = Vec::new();
    for p in stale {
        if removed.iter().any(|r| p.starts_with(r)) || owned_by_others(p) {
            continue;
        }
        remove_at(&mut new, p);
        removed.push(p);
    }

    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub)
    {
        Some(e) => {
            e.fields = applied_fields;
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: sub.to_string(),
            fields: applied_fields,
        }),
    }
    write_entries(&mut new, &entries);
    Ok(new)
}

/// The 409 message a real API server gives for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> (String, Vec<Value>) {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with \"{}\": {}", c.manager, display_path(&c.path)))
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes = conflicts
        .iter()
        .map(|c| {
            json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": display_path(&c.path)})
        })
        .collect();
    (message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main { status_split: true };

    #[test]
    fn fields_v1_roundtrip() {
        let obj = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 2, "empty": {}}});
        let set = fields_of(&obj);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."],
            json!({})
        );
        assert_eq!(v1["f:metadata"]["f:finalizers"]["v:\"x\""], json!({}));
        assert_eq!(from_fields_v1(&v1), set);
        assert!(set.contains(&vec!["f:spec".to_string(), "f:empty".to_string()]));
    }

    #[test]
    fn apply_creates_then_conflicts_then_force() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}});
        let obj = apply(None, &cfg, "alice", "v1", false, MAIN, "t").unwrap();
        assert_eq!(obj["data"], json!({"a": "1", "b": "2"}));
        let entries = parse_entries(&obj);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].operation, "Apply");

        // bob applies a different value for a: conflict naming alice
        let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "9"}});
        let err = apply(Some(&obj), &bob, "bob", "v1", false, MAIN, "t").unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "alice".into(),
                path: vec!["f:data".into(), "f:a".into()]
            }]
        );
        assert!(
            conflict_message(&err)
                .0
                .contains("conflict with \"alice\": .data.a")
        );

        // same value: shared ownership, no conflict
        let bob_same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
        assert!(apply(Some(&obj), &bob_same, "bob", "v1", false, MAIN, "t").is_ok());

        let forced = apply(Some(&obj), &bob, "bob", "v1", true, MAIN, "t").unwrap();
        assert_eq!(forced["data"]["a"], "9");
        let alice = parse_entries(&forced)
            .into_iter()
            .find(|e| e.manager == "alice")
            .unwrap();
        assert!(
            !alice
                .fields
                .contains(&vec!["f:data".to_string(), "f:a".to_string()])
        );

        // alice stops applying b: it is removed; a is now bob's and stays
        let alice2 =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}});
        let out = apply(Some(&forced), &alice2, "alice", "v1", false, MAIN, "t").unwrap();
        assert_eq!(out["data"], json!({"a": "9"}));
    }

    #[test]
    fn update_takes_ownership() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
        let obj = apply(None, &cfg, "alice", "v1", false, MAIN, "t").unwrap();
        let mut edited = obj.clone();
        edited["data"]["a"] = json!("2");
        record_update(Some(&obj), &mut edited, "kubectl-edit", "v1", MAIN, "t");
        let entries = parse_entries(&edited);
        assert_eq!(
            entries
                .iter()
                .find(|e| e.manager == "alice")
                .map(|e| e.fields.len()),
            None
        );
        // alice re-applies a=1: conflict with the editor
        let err = apply(Some(&edited), &cfg, "alice", "v1", false, MAIN, "t").unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
    }

    #[test]
    fn status_is_separate() {
        let live = json!({"spec": {"x": 1}, "status": {"ready": false}});
        let out = apply(
            Some(&live),
            &json!({"status": {"ready": true}}),
            "ctl",
            "v1",
            false,
            Scope::Status,
            "t",
        )
        .unwrap();
        assert_eq!(out["status"]["ready"], true);
        assert_eq!(out["spec"]["x"], 1);
        assert_eq!(parse_entries(&out)[0].subresource, "status");
    }

    #[test]
    fn keyed_list_items_removed_when_unowned() {
        let cfg = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let obj = apply(None, &cfg, "m", "v1", false, MAIN, "t").unwrap();
        let cfg2 = json!({"spec": {"containers": [{"name": "a", "image": "1"}]}});
        let out = apply(Some(&obj), &cfg2, "m", "v1", false, MAIN, "t").unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "1"}])
        );
        assert_eq!(
            display_path(&[
                "f:spec".into(),
                "k:{\"name\":\"a\"}".into(),
                "f:image".into()
            ]),
            ".spec[name=\"a\"].image"
        );
    }
}

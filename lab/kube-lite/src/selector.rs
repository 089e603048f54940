//! Label selectors (equality and set based) and field selectors.

use crate::util::{labels, meta_str};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

/// A parsed label selector: all requirements must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_key(key: &str) -> Result<(), String> {
    if crate::validate::is_qualified_name(key) {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
        ))
    }
}

fn check_value(v: &str) -> Result<String, String> {
    if crate::validate::is_label_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
        ))
    }
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("found '{s}', expected: '(' value list ')'"))?;
    inner.split(',').map(|v| check_value(v.trim())).collect()
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(LabelSelector::default());
        }
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!(
                    "found ',', expected: identifier in selector \"{s}\""
                ));
            }
            let req = if let Some(k) = part.strip_prefix('!') {
                let k = k.trim();
                check_key(k)?;
                Requirement {
                    key: k.into(),
                    op: Op::NotExists,
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotEq(check_value(v.trim())?),
                }
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Eq(check_value(v.trim())?),
                }
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Eq(check_value(v.trim())?),
                }
            } else if let Some(idx) = find_word(part, "notin") {
                Requirement {
                    key: part[..idx].trim().into(),
                    op: Op::NotIn(parse_set(&part[idx + 5..])?),
                }
            } else if let Some(idx) = find_word(part, "in") {
                Requirement {
                    key: part[..idx].trim().into(),
                    op: Op::In(parse_set(&part[idx + 2..])?),
                }
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: \"{v}\""))?;
                Requirement {
                    key: k.trim().into(),
                    op: Op::Gt(n),
                }
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: \"{v}\""))?;
                Requirement {
                    key: k.trim().into(),
                    op: Op::Lt(n),
                }
            } else {
                Requirement {
                    key: part.into(),
                    op: Op::Exists,
                }
            };
            check_key(&req.key)?;
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does a label map match?
    pub fn matches_labels(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| {
            let v = get(&r.key);
            match &r.op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v.as_deref() == Some(x),
                Op::NotEq(x) => v.as_deref() != Some(x),
                Op::In(xs) => v.is_some_and(|v| xs.contains(&v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(&v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let l = labels(obj);
        self.matches_labels(&|k| {
            l.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }
}

/// The text form Kubernetes prints (`labels.Selector.String()`): requirements sorted by key,
/// set values sorted; the empty selector prints as "".
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut reqs: Vec<&Requirement> = self.0.iter().collect();
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        let set = |vs: &[String]| {
            let mut vs = vs.to_vec();
            vs.sort();
            vs.dedup();
            vs.join(",")
        };
        for (i, r) in reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let k = &r.key;
            match &r.op {
                Op::Exists => write!(f, "{k}")?,
                Op::NotExists => write!(f, "!{k}")?,
                Op::Eq(v) => write!(f, "{k}={v}")?,
                Op::NotEq(v) => write!(f, "{k}!={v}")?,
                Op::In(vs) => write!(f, "{k} in ({})", set(vs))?,
                Op::NotIn(vs) => write!(f, "{k} notin ({})", set(vs))?,
                Op::Gt(n) => write!(f, "{k}>{n}")?,
                Op::Lt(n) => write!(f, "{k}<{n}")?,
            }
        }
        Ok(())
    }
}

/// Build a label selector from a `metav1.LabelSelector` JSON object (used by webhooks).
pub fn from_label_selector_object(sel: &Value) -> Result<LabelSelector, String> {
    let mut reqs = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::Eq(v.as_str().unwrap_or("").to_string()),
            });
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::NotExists,
                other => {
                    return Err(format!(
                        "\"{other}\" is not a valid label selector operator"
                    ));
                }
            };
            reqs.push(Requirement { key, op });
        }
    }
    Ok(LabelSelector(reqs))
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find(word).map(|i| i + from) {
        let before_ok = i > 0 && bytes[i - 1].is_ascii_whitespace();
        let after = bytes.get(i + word.len()).copied();
        let after_ok = matches!(after, Some(b' ') | Some(b'('));
        if before_ok && after_ok {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// Field paths that may be used in field selectors for a resource.
pub fn supported_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("", "events") | ("events.k8s.io", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
        ],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, group: &str, plural: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut out = Vec::new();
        for part in s.split(',') {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let k = k.trim();
            if k != "metadata.name"
                && k != "metadata.namespace"
                && !supported_fields(group, plural).contains(&k)
            {
                return Err(format!("field label not supported: {k}"));
            }
            out.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let actual = field_value(obj, k);
            (actual == *v) == *eq
        })
    }
}

/// The string value of a field path for field selectors ("" when absent, bools as "true"/"false").
pub fn field_value(obj: &Value, path: &str) -> String {
    match path {
        "metadata.name" => return meta_str(obj, "name").to_string(),
        "metadata.namespace" => return meta_str(obj, "namespace").to_string(),
        _ => {}
    }
    let mut cur = obj;
    for p in path.split('.') {
        match cur.get(p) {
            Some(v) => cur = v,
            None => {
                return if path == "spec.unschedulable" || path == "spec.hostNetwork" {
                    "false".into()
                } else {
                    String::new()
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) if path == "source" => m
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_sets() {
        let p = pod(json!({"app": "web", "tier": "front", "n": "5"}));
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("tier in (front, back),app", true),
            ("n>4", true),
            ("n<4", false),
            ("example.com/x", false),
            ("", true),
        ] {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&p), want, "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors() {
        for bad in [
            "app in web",
            "a b c=d",
            "=x",
            "app=in valid",
            ",",
            "app in (a b)",
            "n>x",
            "app=web,",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}));
        let ok = |s: &str| FieldSelector::parse(s, "", "pods").unwrap().matches(&p);
        assert!(ok("spec.nodeName=n1"));
        assert!(ok("metadata.name=p,metadata.namespace=ns"));
        assert!(!ok("status.phase!=Running"));
        assert!(ok("spec.nodeName!="));
        assert!(
            FieldSelector::parse("spec.foo=x", "", "pods")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(FieldSelector::parse("spec.nodeName", "", "pods").is_err());
        assert!(FieldSelector::parse("spec.nodeName=x", "", "configmaps").is_err());
    }

    #[test]
    fn selector_objects() {
        let s = from_label_selector_object(&json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]})).unwrap();
        assert!(s.matches(&pod(json!({"a": "b"}))));
        assert!(!s.matches(&pod(json!({"a": "b", "c": "d"}))));
        assert!(
            from_label_selector_object(
                &json!({"matchExpressions": [{"key": "c", "operator": "Near"}]})
            )
            .is_err()
        );
    }
}

//! `metav1.LabelSelector` compiled for matching, with the errors an API server would have refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    Equals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Self::Equals(k, _)
            | Self::In(k, _)
            | Self::NotIn(k, _)
            | Self::Exists(k)
            | Self::DoesNotExist(k) => k,
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(k, v) => labels.get(k) == Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // As in Kubernetes: an object without the label matches `NotIn`.
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
            Self::Exists(k) => write!(f, "{k}"),
            Self::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A compiled selector: every requirement must match; no requirement matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    /// Sorted and deduplicated, so equal selectors compare equal (and share an address set).
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Compiles a `metav1.LabelSelector`; `field` names it in errors (`spec.podSelector`).
    /// Errors are what the API server's validation would have refused: an unknown operator,
    /// values with `Exists`/`DoesNotExist`, no values with `In`/`NotIn`.
    pub fn compile(sel: &LabelSelector, field: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
            let req = match e.operator.as_str() {
                "In" | "NotIn" if !has_values => {
                    return Err(format!(
                        "{at}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    ));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if has_values => {
                    return Err(format!(
                        "{at}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    ));
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(format!(
                        "{at}.operator: Unsupported value: {other:?}: supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
                    ));
                }
            };
            requirements.push(req);
        }
        requirements.sort();
        requirements.dedup();
        Ok(Self { requirements })
    }
}

/// Kubernetes' text form: requirements sorted by key, `<all>` for the empty selector.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("<all>");
        }
        let mut reqs: Vec<&Requirement> = self.requirements.iter().collect();
        reqs.sort_by(|a, b| a.key().cmp(b.key()).then(a.cmp(b)));
        for (i, r) in reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn matching_follows_kubernetes() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")]).into_iter().collect()),
            match_expressions: Some(vec![
                expr("tier", "In", Some(&["a", "b"])),
                expr("env", "NotIn", Some(&["prod"])),
                expr("team", "Exists", None),
                expr("legacy", "DoesNotExist", None),
            ]),
        };
        let s = Selector::compile(&sel, "spec.podSelector").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "x")])));
        // NotIn matches a missing label
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("tier", "b"),
            ("team", ""),
            ("env", "dev")
        ])));
        for bad in [
            labels(&[("app", "web"), ("tier", "c"), ("team", "x")]),
            labels(&[
                ("app", "web"),
                ("tier", "a"),
                ("team", "x"),
                ("env", "prod"),
            ]),
            labels(&[("app", "web"), ("tier", "a")]),
            labels(&[
                ("app", "web"),
                ("tier", "a"),
                ("team", "x"),
                ("legacy", "1"),
            ]),
            labels(&[("app", "db"), ("tier", "a"), ("team", "x")]),
        ] {
            assert!(!s.matches(&bad), "{bad:?}");
        }
        assert_eq!(
            s.to_string(),
            "app=web,env notin (prod),!legacy,team,tier in (a,b)"
        );
        let all = Selector::compile(&LabelSelector::default(), "x").unwrap();
        assert!(all.is_everything() && all.matches(&BTreeMap::new()));
        assert_eq!(all.to_string(), "<all>");
    }

    #[test]
    fn equal_selectors_compare_equal_whatever_the_spelling() {
        let a = LabelSelector {
            match_labels: Some(labels(&[("a", "1")]).into_iter().collect()),
            match_expressions: Some(vec![expr("b", "In", Some(&["y", "x", "x"]))]),
        };
        let b = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                expr("b", "In", Some(&["x", "y"])),
                expr("a", "In", Some(&["1"])),
            ]),
        };
        let (a, b) = (
            Selector::compile(&a, "a").unwrap(),
            Selector::compile(&b, "b").unwrap(),
        );
        assert_eq!(a.to_string(), "a=1,b in (x,y)");
        assert_eq!(b.to_string(), "a in (1),b in (x,y)");
    }

    #[test]
    fn invalid_selectors_are_refused_with_the_field() {
        for (e, want) in [
            (expr("k", "Bogus", None), "matchExpressions[0].operator"),
            (expr("k", "In", None), "matchExpressions[0].values"),
            (expr("k", "NotIn", Some(&[])), "matchExpressions[0].values"),
            (
                expr("k", "Exists", Some(&["v"])),
                "matchExpressions[0].values",
            ),
        ] {
            let sel = LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![e]),
            };
            let err = Selector::compile(&sel, "spec.podSelector").unwrap_err();
            assert!(
                err.starts_with(&format!("spec.podSelector.{want}")),
                "{err}"
            );
        }
    }
}

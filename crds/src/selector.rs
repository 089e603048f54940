//! The one label-selector parser: the operator's `--pod-label-selector` (upstream v0.8.9
//! `cmd/manager/main.go`: the pod controller handles only pods whose labels match) and the CLI's
//! `-l`. Kubernetes label-selector syntax: comma-separated requirements
//! `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
//! Keys and values are checked as the API server checks labels, so a selector that could never
//! match a real label is refused at start-up instead of silently selecting nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::names;

/// Longest selector accepted (a flag, not a data channel).
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Most requirements accepted.
pub const MAX_REQUIREMENTS: usize = 64;

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    DoesNotExist(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
            Self::Equals(k, v) => labels.get(k) == Some(v),
            // As in Kubernetes: a pod without the label matches `!=` and `notin`.
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Self::Exists(k) => write!(f, "{k}"),
            Self::DoesNotExist(k) => write!(f, "!{k}"),
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
        }
    }
}

/// A parsed selector; the empty selector matches every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSelector {
    requirements: Vec<Requirement>,
}

impl PodSelector {
    /// Matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a pod with `labels` is selected (every requirement holds).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a pod is selected (no labels = empty set of labels).
    pub fn matches_pod(&self, pod: &k8s_openapi::api::core::v1::Pod) -> bool {
        if self.is_everything() {
            return true;
        }
        let empty = BTreeMap::new();
        self.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
    }
}

impl fmt::Display for PodSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl std::str::FromStr for PodSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// A selector that cannot be parsed: where (character offset) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: at character {position}: {message}")]
pub struct SelectorError {
    pub selector: String,
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
    Unsupported(char),
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

/// Splits into (character offset, token).
fn lex(s: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Token::NotEq
            }
            '!' => {
                i += 1;
                Token::Not
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Token::DoubleEq
            }
            '=' => {
                i += 1;
                Token::Eq
            }
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            '<' | '>' => {
                i += 1;
                Token::Unsupported(c)
            }
            _ => {
                while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
                    i += 1;
                }
                Token::Word(chars[start..i].iter().collect())
            }
        };
        out.push((start, tok));
    }
    out
}

struct Parser<'a> {
    selector: &'a str,
    tokens: Vec<(usize, Token)>,
    at: usize,
}

impl Parser<'_> {
    fn err(&self, position: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            selector: self.selector.to_string(),
            position,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<(usize, Token)> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn end_position(&self) -> usize {
        self.selector.chars().count()
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some((p, Token::Word(w))) => {
                names::label_key(&w).map_err(|m| self.err(p, m))?;
                Ok(w)
            }
            Some((p, t)) => Err(self.err(p, format!("expected a label key, found {}", show(&t)))),
            None => Err(self.err(self.end_position(), "expected a label key, found the end")),
        }
    }

    /// The value after `=`, `==` or `!=`: a word, or empty when the requirement ends there.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek().cloned() {
            None | Some((_, Token::Comma)) => Ok(String::new()),
            Some((p, Token::Word(w))) => {
                self.at += 1;
                names::label_value(&w).map_err(|m| self.err(p, m))?;
                Ok(w)
            }
            Some((p, t)) => Err(self.err(p, format!("expected a value, found {}", show(&t)))),
        }
    }

    /// `(v1, v2, ...)`, at least one value.
    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Some((_, Token::Open)) => {}
            Some((p, t)) => return Err(self.err(p, format!("expected '(', found {}", show(&t)))),
            None => return Err(self.err(self.end_position(), "expected '(', found the end")),
        }
        let mut values = BTreeSet::new();
        loop {
            match self.next() {
                Some((p, Token::Word(w))) => {
                    names::label_value(&w).map_err(|m| self.err(p, m))?;
                    values.insert(w);
                }
                Some((p, Token::Close)) if values.is_empty() => {
                    return Err(self.err(p, "a set needs at least one value"));
                }
                Some((p, t)) => {
                    return Err(self.err(p, format!("expected a value, found {}", show(&t))));
                }
                None => return Err(self.err(self.end_position(), "unclosed '('")),
            }
            match self.next() {
                Some((_, Token::Comma)) => continue,
                Some((_, Token::Close)) => return Ok(values),
                Some((p, t)) => {
                    return Err(self.err(p, format!("expected ',' or ')', found {}", show(&t))));
                }
                None => return Err(self.err(self.end_position(), "unclosed '('")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if let Some((_, Token::Not)) = self.peek() {
            self.at += 1;
            let key = self.key()?;
            return match self.peek() {
                None | Some((_, Token::Comma)) => Ok(Requirement::DoesNotExist(key)),
                Some((p, t)) => {
                    Err(self.err(*p, format!("'!{key}' takes no operator, found {}", show(t))))
                }
            };
        }
        let key = self.key()?;
        match self.next() {
            None => Ok(Requirement::Exists(key)),
            Some((_, Token::Comma)) => {
                self.at -= 1;
                Ok(Requirement::Exists(key))
            }
            Some((_, Token::Eq | Token::DoubleEq)) => {
                Ok(Requirement::Equals(key, self.exact_value()?))
            }
            Some((_, Token::NotEq)) => Ok(Requirement::NotEquals(key, self.exact_value()?)),
            Some((_, Token::Word(w))) if w == "in" => Ok(Requirement::In(key, self.set()?)),
            Some((_, Token::Word(w))) if w == "notin" => Ok(Requirement::NotIn(key, self.set()?)),
            Some((p, Token::Unsupported(c))) => Err(self.err(
                p,
                format!("'{c}' (numeric comparison) is not supported in a label selector"),
            )),
            Some((p, t)) => Err(self.err(
                p,
                format!(
                    "expected '=', '==', '!=', 'in' or 'notin' after {key:?}, found {}",
                    show(&t)
                ),
            )),
        }
    }
}

fn show(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("{w:?}"),
        Token::Not => "'!'".into(),
        Token::Eq => "'='".into(),
        Token::DoubleEq => "'=='".into(),
        Token::NotEq => "'!='".into(),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Comma => "','".into(),
        Token::Unsupported(c) => format!("'{c}'"),
    }
}

/// Parses a label selector; empty (or only spaces) selects every pod.
pub fn parse(selector: &str) -> Result<PodSelector, SelectorError> {
    if selector.len() > MAX_SELECTOR_LEN {
        return Err(SelectorError {
            selector: selector.chars().take(64).collect::<String>() + "...",
            position: MAX_SELECTOR_LEN,
            message: format!("{} bytes, at most {MAX_SELECTOR_LEN}", selector.len()),
        });
    }
    if let Some((p, c)) = selector.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(SelectorError {
            selector: selector.to_string(),
            position: p,
            message: format!("control character {c:?}"),
        });
    }
    let mut parser = Parser {
        selector,
        tokens: lex(selector),
        at: 0,
    };
    let mut requirements = Vec::new();
    if parser.tokens.is_empty() {
        return Ok(PodSelector { requirements });
    }
    loop {
        requirements.push(parser.requirement()?);
        if requirements.len() > MAX_REQUIREMENTS {
            return Err(parser.err(0, format!("more than {MAX_REQUIREMENTS} requirements")));
        }
        match parser.next() {
            None => break,
            Some((p, Token::Comma)) => {
                if parser.peek().is_none() {
                    return Err(parser.err(p, "trailing ','"));
                }
            }
            Some((p, t)) => {
                return Err(parser.err(p, format!("expected ',' or the end, found {}", show(&t))));
            }
        }
    }
    Ok(PodSelector { requirements })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> PodSelector {
        parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn empty_selects_everything() {
        for s in ["", "   ", "\u{3000}"] {
            let p = sel(s);
            assert!(p.is_everything());
            assert!(p.matches(&labels(&[])));
            assert!(p.matches(&labels(&[("a", "b")])));
        }
    }

    #[test]
    fn every_operator_parses_and_matches_like_kubernetes() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("app", &[("app", "")], true),
            ("app", &[("other", "x")], false),
            ("!app", &[("other", "x")], true),
            ("!app", &[("app", "x")], false),
            ("app=web", &[("app", "web")], true),
            ("app==web", &[("app", "web")], true),
            ("app=web", &[("app", "db")], false),
            ("app=web", &[], false),
            ("app!=web", &[("app", "db")], true),
            ("app!=web", &[], true),
            ("app!=web", &[("app", "web")], false),
            ("app=", &[("app", "")], true),
            ("app==", &[("app", "")], true),
            ("app=", &[("app", "x")], false),
            ("tier in (a, b)", &[("tier", "b")], true),
            ("tier in (a,b)", &[("tier", "c")], false),
            ("tier in (a)", &[], false),
            ("tier notin (a,b)", &[("tier", "c")], true),
            ("tier notin (a,b)", &[], true),
            ("tier notin (a,b)", &[("tier", "a")], false),
            (
                "example.com/team in (net),!legacy, env!=prod",
                &[("example.com/team", "net"), ("env", "dev")],
                true,
            ),
            (
                "example.com/team in (net),!legacy, env!=prod",
                &[("example.com/team", "net"), ("legacy", "")],
                false,
            ),
            ("in in (in)", &[("in", "in")], true),
            ("  a = b ,  c  ", &[("a", "b"), ("c", "1")], true),
        ];
        for (s, l, want) in cases {
            assert_eq!(sel(s).matches(&labels(l)), *want, "{s:?} on {l:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "app",
            "!app",
            "app=web",
            "app!=web",
            "a in (x,y)",
            "a notin (x)",
            "k8s.io/x=y,!z,q in (1,2)",
        ] {
            let p = sel(s);
            assert_eq!(sel(&p.to_string()), p, "{s}");
        }
    }

    #[test]
    fn malformed_and_hostile_selectors_are_refused_with_position_and_reason() {
        let cases: &[(&str, &str)] = &[
            ("app=web,", "trailing ','"),
            (",app", "expected a label key, found ','"),
            ("a in ()", "at least one value"),
            ("a in (x", "unclosed '('"),
            ("a in x", "expected '('"),
            ("a in (x,)", "expected a value, found ')'"),
            ("a in ((x))", "expected a value, found '('"),
            ("a notin", "expected '(', found the end"),
            ("!a=b", "takes no operator"),
            ("!", "expected a label key, found the end"),
            ("a b", "expected '=', '==', '!=', 'in' or 'notin'"),
            ("a=b c", "expected ',' or the end"),
            ("a>1", "numeric comparison"),
            ("a<1", "numeric comparison"),
            ("a=b=c", "expected ',' or the end"),
            ("-a=b", "must start and end with a letter or digit"),
            ("a=b-", "must start and end with a letter or digit"),
            ("a/b/c=d", "not allowed"),
            ("Example.COM/a=b", "not a DNS-1123 subdomain"),
            ("/a=b", "prefix \"\" is not a DNS-1123 subdomain"),
            ("a/=b", "must not be empty"),
            ("app=wéb", "not allowed"),
            ("app=we\u{0}b", "control character"),
            ("app\n=web", "control character"),
            ("app=$(rm -rf /)", "not allowed"),
            ("a=\"b\"", "not allowed"),
            ("a;b", "not allowed"),
        ];
        for (s, want) in cases {
            match parse(s) {
                Ok(p) => panic!("{s:?} accepted as {p:?}"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains(want), "{s:?}: {text}");
                    assert!(text.contains("at character"), "{text}");
                    assert!(e.position <= s.chars().count(), "{s:?}: {e:?}");
                }
            }
        }
        let long_value = format!("a={}", "x".repeat(64));
        assert!(
            parse(&long_value)
                .unwrap_err()
                .message
                .contains("at most 63")
        );
        let long_prefix = format!("{}/a=b", "x".repeat(254));
        assert!(parse(&long_prefix).is_err());
        let huge = "a,".repeat(MAX_SELECTOR_LEN);
        let e = parse(&huge).unwrap_err();
        assert!(e.message.contains("at most 4096"), "{e}");
        assert!(
            e.to_string().len() < 300,
            "the error does not echo the whole input"
        );
        let many = (0..=MAX_REQUIREMENTS)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse(&many).unwrap_err().message.contains("requirements"));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_errors_point_inside(s in "\\PC{0,64}") {
            if let Err(e) = parse(&s) {
                prop_assert!(e.position <= s.chars().count());
            }
        }

        #[test]
        fn equality_matches_exactly_its_value(
            k in "[a-z][a-z0-9]{0,8}",
            v in "[a-z0-9]{1,8}",
            other in "[a-z0-9]{1,8}",
        ) {
            let eq = parse(&format!("{k}={v}")).unwrap();
            let ne = parse(&format!("{k}!={v}")).unwrap();
            let l = labels(&[(k.as_str(), other.as_str())]);
            prop_assert_eq!(eq.matches(&l), v == other);
            prop_assert_eq!(ne.matches(&l), v != other);
            let inn = parse(&format!("{k} in ({v})")).unwrap();
            let notin = parse(&format!("{k} notin ({v})")).unwrap();
            prop_assert_eq!(inn.matches(&l), eq.matches(&l));
            prop_assert_eq!(notin.matches(&l), ne.matches(&l));
        }
    }
}

//! kubectl's JSONPath templates (`-o jsonpath=TEMPLATE`), as a pure parser and evaluator over
//! `serde_json::Value`.
//!
//! The syntax and the printing follow kubectl's documented behaviour
//! (<https://kubernetes.io/docs/reference/kubectl/jsonpath/>, implemented in client-go's
//! `util/jsonpath/parser.go` and `jsonpath.go`):
//! - text outside `{}` is printed as it is; inside, `"..."` (or `'...'`) is a literal with Go
//!   escapes (`{"\n"}`, `{"\t"}`);
//! - `$` and `@` (the current object) are optional; `.field`, `['field']` (a quoted key may name a
//!   dotted path, `\.` keeps a dot), `..field` (recursive descent), `.*` (every member),
//!   `[n]`, `[-n]`, `[start:end:step]`, `[*]`, unions `[a,b]`, filters `[?(@.x=="v")]` with `==`,
//!   `!=`, `<`, `<=`, `>`, `>=` or mere existence `[?(@.x)]`;
//! - `{range PATH}...{end}` repeats its body for every result (an unclosed range ends at the end of
//!   the template, as in kubectl);
//! - several results of one expression are separated by one space; strings print as they are,
//!   numbers and booleans as JSON, `null` as `<nil>`, objects and arrays as compact JSON with
//!   sorted keys (as Go's encoding/json);
//! - a missing field prints nothing (kubectl's default `--allow-missing-template-keys=true`); an
//!   index out of bounds, or an index on something that is not an array, is an error.
//!
//! Not supported (refused while parsing, with a message): the regular-expression filter `=~`.
//! Hostile templates are bounded: at most [`MAX_TEMPLATE_BYTES`] bytes, [`MAX_DEPTH`] nested
//! ranges/filters, [`MAX_OUTPUT_BYTES`] of output and [`MAX_WORK`] visited values.

use std::fmt::Write as _;

use serde_json::Value;

/// Longest template accepted (kubectl has no limit; a command line rarely exceeds a few KiB).
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Deepest nesting of `{range}` blocks and filters.
pub const MAX_DEPTH: usize = 64;
/// Largest output of one evaluation.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;
/// Most values one evaluation may visit (nested ranges over recursive descent grow fast).
pub const MAX_WORK: usize = 20_000_000;

/// A template that does not parse: a usage error, with the byte offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jsonpath template: {message} (at byte {at})")]
pub struct ParseError {
    pub message: String,
    pub at: usize,
}

/// A template that parsed but cannot be applied to this data (as kubectl's "error executing
/// jsonpath").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error executing jsonpath: {0}")]
pub struct ExecError(pub String);

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name`; an empty name (`{.}`) is the current object.
    Field(String),
    /// `.*`: every member of an object or element of an array.
    Wildcard,
    /// `..`: the current value and every object or array under it.
    Recursive,
    /// `[i]`, `[a:b:c]`, `[*]`.
    Slice(Slice),
    /// `[x,y]`.
    Union(Vec<Vec<Step>>),
    /// `[?(...)]`.
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Slice {
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    /// `[i]`: the end is `i + 1`, computed after a negative `i` is resolved.
    single: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    cmp: Option<(Cmp, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Vec<Step>),
}

// ------------------------------------------------------------------ parsing

fn err<T>(message: impl Into<String>, at: usize) -> Result<T, ParseError> {
    Err(ParseError {
        message: message.into(),
        at,
    })
}

/// Where the action that starts at `open` (a `{`) ends: the index of its `}`. Quotes and
/// brackets are skipped, as kubectl's scanner does.
fn action_end(src: &str, open: usize) -> Result<usize, ParseError> {
    let bytes = src.as_bytes();
    let mut i = open + 1;
    let mut brackets = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => i = quote_end(src, i)?,
            b'[' => brackets += 1,
            b']' => brackets = brackets.saturating_sub(1),
            b'}' if brackets == 0 => return Ok(i),
            b'\n' | b'\r' => return err("unclosed action: a line break before its '}'", open),
            _ => {}
        }
        i += 1;
    }
    err("unclosed action: no '}'", open)
}

/// The index of the quote that closes the quoted string starting at `start`.
fn quote_end(src: &str, start: usize) -> Result<usize, ParseError> {
    let bytes = src.as_bytes();
    let q = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\n' | b'\r' => break,
            c if c == q => return Ok(i),
            _ => i += 1,
        }
    }
    err("unterminated quoted string", start)
}

/// Go's unquoting of a `"..."` or `'...'` literal (strconv.UnquoteChar's escapes).
fn unquote(lit: &str, at: usize) -> Result<String, ParseError> {
    let inner = &lit[1..lit.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    let bad = |what: &str| err::<String>(format!("invalid escape in {lit:?}: {what}"), at);
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return bad("a lone backslash at the end");
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '\\' | '"' | '\'' => out.push(e),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == n)
                    .and_then(char::from_u32);
                match code {
                    Some(c) => out.push(c),
                    None => return bad(&format!("\\{e}{hex}")),
                }
            }
            other => return bad(&format!("\\{other}")),
        }
    }
    Ok(out)
}

fn is_terminator(c: u8) -> bool {
    matches!(
        c,
        b' ' | b'\t' | b'\r' | b'\n' | b'.' | b',' | b'[' | b']' | b'$' | b'@' | b'{' | b'}'
    )
}

/// A path: `$`/`@` prefixes, fields, brackets, recursive descent. `base` is the byte offset of
/// `s` in the template (for error positions).
fn parse_path(s: &str, base: usize, depth: usize) -> Result<Vec<Step>, ParseError> {
    if depth > MAX_DEPTH {
        return err(format!("nested deeper than {MAX_DEPTH} levels"), base);
    }
    let b = s.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'$' | b'@' => i += 1,
            b'.' if b.get(i + 1) == Some(&b'.') => {
                if steps.last() == Some(&Step::Recursive) {
                    return err("invalid multiple recursive descent", base + i);
                }
                steps.push(Step::Recursive);
                i += 2;
                if b.get(i).is_some_and(|c| !is_terminator(*c)) {
                    i = parse_field(s, i, &mut steps);
                }
            }
            b'.' => i = parse_field(s, i + 1, &mut steps),
            b'[' => i = parse_bracket(s, i, base, depth, &mut steps)?,
            b'"' | b'\'' => {
                return err(
                    "a quoted literal must be the whole action, as {\"text\"}",
                    base + i,
                );
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let end = (i..b.len())
                    .find(|&j| is_terminator(b[j]))
                    .unwrap_or(b.len());
                let word = &s[i..end];
                return err(
                    format!(
                        "unrecognized identifier {word:?} (fields start with '.', as {{.{word}}})"
                    ),
                    base + i,
                );
            }
            _ => {
                let c = s[i..].chars().next().unwrap_or('?');
                return err(format!("unrecognized character in action: {c:?}"), base + i);
            }
        }
    }
    Ok(steps)
}

/// A field name from `start` to the next unescaped terminator; `\x` keeps `x`.
fn parse_field(s: &str, start: usize, steps: &mut Vec<Step>) -> usize {
    let b = s.as_bytes();
    let mut i = start;
    let mut name = String::new();
    while i < b.len() && !is_terminator(b[i]) {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
        }
        let c = s[i..].chars().next().unwrap_or_default();
        name.push(c);
        i += c.len_utf8();
    }
    steps.push(if name == "*" {
        Step::Wildcard
    } else {
        Step::Field(name)
    });
    i
}

/// The index of the first top-level `,` or the matching `]`/`)` etc. is found by these scans,
/// which skip quoted strings.
fn scan_to(s: &str, from: usize, stop: &[u8]) -> Result<Option<usize>, ParseError> {
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' => i = quote_end(s, i)?,
            c if stop.contains(&c) => return Ok(Some(i)),
            _ => {}
        }
        i += 1;
    }
    Ok(None)
}

fn parse_bracket(
    s: &str,
    open: usize,
    base: usize,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Result<usize, ParseError> {
    if s[open..].starts_with("[?(") {
        return parse_filter(s, open, base, depth, steps);
    }
    let close = scan_to(s, open + 1, b"]")?.ok_or_else(|| ParseError {
        message: "unterminated array: no ']'".into(),
        at: base + open,
    })?;
    let text = s[open + 1..close].trim();
    let inner_at = base + open + 1;
    // union: top-level commas
    let mut parts = Vec::new();
    let mut from = open + 1;
    while let Some(comma) = scan_to(&s[..close], from, b",")? {
        parts.push((from, comma));
        from = comma + 1;
    }
    if !parts.is_empty() {
        parts.push((from, close));
        let mut alts = Vec::new();
        for (a, z) in parts {
            let mut alt = Vec::new();
            bracket_content(s[a..z].trim(), base + a, depth + 1, &mut alt)?;
            alts.push(alt);
        }
        steps.push(Step::Union(alts));
    } else {
        bracket_content(text, inner_at, depth, steps)?;
    }
    Ok(close + 1)
}

/// One index, slice or quoted key inside `[...]`.
fn bracket_content(
    text: &str,
    at: usize,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Result<(), ParseError> {
    if depth > MAX_DEPTH {
        return err(format!("nested deeper than {MAX_DEPTH} levels"), at);
    }
    if text == "*" {
        steps.push(Step::Slice(Slice {
            start: None,
            end: None,
            step: None,
            single: false,
        }));
        return Ok(());
    }
    let tb = text.as_bytes();
    if tb.len() >= 2 && (tb[0] == b'\'' || tb[0] == b'"') && tb[tb.len() - 1] == tb[0] {
        // A quoted key names a dotted path; `\.` keeps a dot in a key.
        let key = &text[1..text.len() - 1];
        let mut i = 0;
        loop {
            i = parse_field(key, i, steps);
            if i >= key.len() {
                break;
            }
            if key.as_bytes()[i] != b'.' {
                return err(format!("invalid key {text}"), at);
            }
            i += 1;
        }
        return Ok(());
    }
    let parts: Vec<&str> = text.split(':').collect();
    if parts.is_empty() || parts.len() > 3 || text.is_empty() {
        return err(format!("invalid array index {text:?}"), at);
    }
    let mut nums = [None; 3];
    for (k, p) in parts.iter().enumerate() {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let digits = p.strip_prefix('-').unwrap_or(p);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return err(format!("invalid array index {text:?}"), at);
        }
        nums[k] = Some(p.parse::<i64>().map_err(|_| ParseError {
            message: format!("array index {p} is out of range"),
            at,
        })?);
    }
    let single = parts.len() == 1;
    if single && nums[0].is_none() {
        return err(format!("invalid array index {text:?}"), at);
    }
    steps.push(Step::Slice(Slice {
        start: nums[0],
        end: nums[1],
        step: nums[2],
        single,
    }));
    Ok(())
}

fn parse_filter(
    s: &str,
    open: usize,
    base: usize,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Result<usize, ParseError> {
    if depth + 1 > MAX_DEPTH {
        return err(
            format!("nested deeper than {MAX_DEPTH} levels"),
            base + open,
        );
    }
    let b = s.as_bytes();
    let body_start = open + 3;
    // the matching ')' (parentheses nest; quoted strings are skipped)
    let mut i = body_start;
    let mut parens = 1usize;
    let mut close = None;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' => i = quote_end(s, i)?,
            b'(' => parens += 1,
            b')' => {
                parens -= 1;
                if parens == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let Some(close) = close else {
        return err("unterminated filter: no ')'", base + open);
    };
    if b.get(close + 1) != Some(&b']') {
        return err("unclosed filter: expected ']' after ')'", base + close);
    }
    let body = &s[body_start..close];
    // the operator: the first run of !<>=~ outside quotes
    let op_at = scan_to(body, 0, b"!<>=~")?;
    let filter = match op_at {
        None => Filter {
            left: parse_path(body, base + body_start, depth + 1)?,
            cmp: None,
        },
        Some(k) => {
            let ob = body.as_bytes();
            let mut z = k;
            while z < ob.len() && b"!<>=~".contains(&ob[z]) {
                z += 1;
            }
            let cmp = match &body[k..z] {
                "==" => Cmp::Eq,
                "!=" => Cmp::Ne,
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "=~" => {
                    return err(
                        "the regular-expression filter =~ is not supported",
                        base + body_start + k,
                    );
                }
                other => {
                    return err(
                        format!("unrecognized filter operator {other:?}"),
                        base + body_start + k,
                    );
                }
            };
            let right = operand(body[z..].trim(), base + body_start + z, depth + 1)?;
            Filter {
                left: parse_path(&body[..k], base + body_start, depth + 1)?,
                cmp: Some((cmp, right)),
            }
        }
    };
    if filter.left.is_empty() && filter.cmp.is_none() {
        return err("empty filter", base + open);
    }
    steps.push(Step::Filter(Box::new(filter)));
    Ok(close + 2)
}

/// The right side of a comparison: a quoted string, a number, true/false, or a path.
fn operand(text: &str, at: usize, depth: usize) -> Result<Operand, ParseError> {
    let tb = text.as_bytes();
    match tb.first() {
        None => err("a comparison without a right side", at),
        Some(b'"' | b'\'') => {
            let end = quote_end(text, 0)?;
            if end + 1 != text.len() {
                return err(format!("unexpected text after {}", &text[..=end]), at);
            }
            Ok(Operand::Literal(Value::String(unquote(text, at)?)))
        }
        Some(c) if c.is_ascii_digit() || *c == b'-' || *c == b'+' => {
            let t = text.strip_prefix('+').unwrap_or(text);
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Operand::Literal(Value::from(i)));
            }
            match t.parse::<f64>() {
                Ok(f)
                    if f.is_finite()
                        && t.bytes().all(|c| c.is_ascii_digit() || b"-.".contains(&c)) =>
                {
                    Ok(Operand::Literal(Value::from(f)))
                }
                _ => err(format!("cannot parse number {text}"), at),
            }
        }
        _ if text == "true" || text == "false" => Ok(Operand::Literal(Value::Bool(text == "true"))),
        _ => Ok(Operand::Path(parse_path(text, at, depth)?)),
    }
}

impl Template {
    /// Parses a template (the text after `-o jsonpath=`).
    pub fn parse(src: &str) -> Result<Template, ParseError> {
        if src.len() > MAX_TEMPLATE_BYTES {
            return err(
                format!(
                    "the template is {} bytes, more than the {MAX_TEMPLATE_BYTES} accepted",
                    src.len()
                ),
                MAX_TEMPLATE_BYTES,
            );
        }
        // frames of open ranges: (range path, its body); frame 0 is the template
        let mut frames: Vec<(Vec<Step>, Vec<Node>)> = vec![(Vec::new(), Vec::new())];
        let mut i = 0;
        while i < src.len() {
            let Some(open) = src[i..].find('{').map(|k| k + i) else {
                push_text(&mut frames, &src[i..]);
                break;
            };
            if open > i {
                push_text(&mut frames, &src[i..open]);
            }
            let close = action_end(src, open)?;
            let raw = &src[open + 1..close];
            let action = raw.trim();
            let at = open + 1 + (raw.len() - raw.trim_start().len());
            i = close + 1;
            if action == "end" {
                if frames.len() == 1 {
                    return err("{end} without a {range}: nothing to end", open);
                }
                let (path, body) = frames.pop().unwrap_or_default();
                push_node(&mut frames, Node::Range(path, body));
                continue;
            }
            if let Some(rest) = action.strip_prefix("range")
                && rest
                    .bytes()
                    .next()
                    .is_none_or(|c| c != b'_' && !c.is_ascii_alphanumeric())
            {
                if frames.len() > MAX_DEPTH {
                    return err(format!("ranges nested deeper than {MAX_DEPTH}"), open);
                }
                let path = parse_path(rest, at + 5, 0)?;
                frames.push((path, Vec::new()));
                continue;
            }
            let ab = action.as_bytes();
            if ab.len() >= 2
                && (ab[0] == b'"' || ab[0] == b'\'')
                && quote_end(action, 0)? == ab.len() - 1
            {
                let text = unquote(action, at)?;
                push_node(&mut frames, Node::Text(text));
                continue;
            }
            if action == "true" || action == "false" {
                push_node(&mut frames, Node::Text(action.to_string()));
                continue;
            }
            let path = parse_path(action, at, 0)?;
            push_node(&mut frames, Node::Path(path));
        }
        // an unclosed range ends with the template (kubectl runs the rest once per item)
        while frames.len() > 1 {
            let (path, body) = frames.pop().unwrap_or_default();
            push_node(&mut frames, Node::Range(path, body));
        }
        let nodes = frames.pop().map(|f| f.1).unwrap_or_default();
        Ok(Template { nodes })
    }

    /// Applies the template to `data`.
    pub fn render(&self, data: &Value) -> Result<String, ExecError> {
        let mut ev = Eval {
            out: String::new(),
            work: 0,
        };
        ev.nodes(&self.nodes, data)?;
        Ok(ev.out)
    }
}

fn push_node(frames: &mut [(Vec<Step>, Vec<Node>)], node: Node) {
    if let Some(f) = frames.last_mut() {
        f.1.push(node);
    }
}

fn push_text(frames: &mut [(Vec<Step>, Vec<Node>)], text: &str) {
    push_node(frames, Node::Text(text.to_string()));
}

// ------------------------------------------------------------------ evaluation

struct Eval {
    out: String,
    work: usize,
}

impl Eval {
    fn charge(&mut self, n: usize) -> Result<(), ExecError> {
        self.work = self.work.saturating_add(n);
        if self.work > MAX_WORK {
            return Err(ExecError(format!(
                "the template visits more than {MAX_WORK} values"
            )));
        }
        Ok(())
    }

    fn emit(&mut self, s: &str) -> Result<(), ExecError> {
        if self.out.len() + s.len() > MAX_OUTPUT_BYTES {
            return Err(ExecError(format!(
                "the output exceeds {} MiB",
                MAX_OUTPUT_BYTES >> 20
            )));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn nodes(&mut self, nodes: &[Node], cur: &Value) -> Result<(), ExecError> {
        for n in nodes {
            match n {
                Node::Text(t) => self.emit(t)?,
                Node::Path(steps) => {
                    let results = self.path(steps, vec![cur])?;
                    let mut line = String::new();
                    for (k, v) in results.iter().enumerate() {
                        if k > 0 {
                            line.push(' ');
                        }
                        print_value(v, &mut line);
                        if line.len() > MAX_OUTPUT_BYTES {
                            break;
                        }
                    }
                    self.emit(&line)?;
                }
                Node::Range(steps, body) => {
                    for item in self.path(steps, vec![cur])? {
                        self.nodes(body, item)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn path<'a>(
        &mut self,
        steps: &[Step],
        mut cur: Vec<&'a Value>,
    ) -> Result<Vec<&'a Value>, ExecError> {
        for step in steps {
            let mut next = Vec::new();
            match step {
                Step::Field(name) if name.is_empty() => next = cur,
                Step::Field(name) => {
                    next.extend(cur.iter().filter_map(|v| v.as_object()?.get(name)));
                }
                Step::Wildcard => {
                    for v in &cur {
                        match v {
                            Value::Object(m) => next.extend(m.values()),
                            Value::Array(a) => next.extend(a.iter()),
                            _ => {}
                        }
                    }
                }
                Step::Recursive => {
                    for v in &cur {
                        // pre-order, iteratively: every object or array, starting with `v`
                        let mut stack = vec![*v];
                        while let Some(x) = stack.pop() {
                            self.charge(1)?;
                            match x {
                                Value::Object(m) => {
                                    next.push(x);
                                    stack.extend(m.values().rev());
                                }
                                Value::Array(a) => {
                                    next.push(x);
                                    stack.extend(a.iter().rev());
                                }
                                _ => {}
                            }
                        }
                    }
                }
                Step::Slice(s) => {
                    for v in &cur {
                        match v {
                            Value::Null => {}
                            Value::Array(a) => next.extend(slice(a, *s)?),
                            other => {
                                return Err(ExecError(format!(
                                    "{} is not an array and cannot be indexed",
                                    kind_of(other)
                                )));
                            }
                        }
                    }
                }
                Step::Union(alts) => {
                    for alt in alts {
                        let r = self.path(alt, cur.clone())?;
                        next.extend(r);
                    }
                }
                Step::Filter(f) => {
                    for v in &cur {
                        let items = match v {
                            Value::Array(a) => a,
                            Value::Null => continue,
                            other => {
                                return Err(ExecError(format!(
                                    "{} is not an array and cannot be filtered",
                                    kind_of(other)
                                )));
                            }
                        };
                        for item in items {
                            if self.keep(f, item)? {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            self.charge(next.len())?;
            cur = next;
        }
        Ok(cur)
    }

    fn keep(&mut self, f: &Filter, item: &Value) -> Result<bool, ExecError> {
        let lefts = self.path(&f.left, vec![item])?;
        let Some((cmp, right)) = &f.cmp else {
            return Ok(!lefts.is_empty());
        };
        let left = match lefts.as_slice() {
            [] => return Ok(false),
            [one] => *one,
            _ => return Err(ExecError("can only compare one element at a time".into())),
        };
        let rights = match right {
            Operand::Literal(v) => return compare(left, *cmp, v),
            Operand::Path(p) => self.path(p, vec![item])?,
        };
        match rights.as_slice() {
            [] => Ok(false),
            [one] => compare(left, *cmp, one),
            _ => Err(ExecError("can only compare one element at a time".into())),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// kubectl's slice rules: negative indices count from the end (without wrapping around), an
/// index outside the array is an error, an empty selection is not.
fn slice(a: &[Value], s: Slice) -> Result<impl Iterator<Item = &Value>, ExecError> {
    let len = a.len() as i64;
    let mut start = s.start.unwrap_or(0);
    if start < 0 {
        start = start.saturating_add(len);
    }
    let mut end = if s.single {
        start.saturating_add(1)
    } else {
        s.end.unwrap_or(len)
    };
    if !s.single && end < 0 {
        end = end.saturating_add(len);
    }
    let step = match s.step {
        None => 1,
        Some(st) if st > 0 => st,
        Some(_) => return Err(ExecError("step must be > 0".into())),
    };
    let (lo, hi) = if end == start {
        (0, 0)
    } else {
        if start < 0 || start >= len {
            return Err(ExecError(format!(
                "array index out of bounds: index {start}, length {len}"
            )));
        }
        if end < 0 || end > len {
            return Err(ExecError(format!(
                "array index out of bounds: index {}, length {len}",
                end - 1
            )));
        }
        if start > end {
            return Err(ExecError(format!(
                "starting index {start} is greater than ending index {end}"
            )));
        }
        (start as usize, end as usize)
    };
    Ok(a[lo..hi].iter().step_by(step as usize))
}

fn compare(left: &Value, cmp: Cmp, right: &Value) -> Result<bool, ExecError> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (left, right) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
        },
        (Value::Bool(a), Value::Bool(b)) => {
            return match cmp {
                Cmp::Eq => Ok(a == b),
                Cmp::Ne => Ok(a != b),
                _ => Err(ExecError(
                    "booleans can only be compared with == and !=".into(),
                )),
            };
        }
        _ => None,
    };
    Ok(match (cmp, ord) {
        (Cmp::Eq, o) => o == Some(Ordering::Equal),
        (Cmp::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => {
            return Err(ExecError(format!(
                "incompatible types for comparison: {} and {}",
                kind_of(left),
                kind_of(right)
            )));
        }
        (Cmp::Lt, Some(o)) => o == Ordering::Less,
        (Cmp::Le, Some(o)) => o != Ordering::Greater,
        (Cmp::Gt, Some(o)) => o == Ordering::Greater,
        (Cmp::Ge, Some(o)) => o != Ordering::Less,
    })
}

/// One result as kubectl prints it.
fn print_value(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Object(_) | Value::Array(_) => compact_json(v, out),
    }
}

/// Compact JSON with sorted keys and `<`, `>`, `&` escaped, as Go's json.Marshal writes it.
fn compact_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (k, key) in keys.into_iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                json_string(key, out);
                out.push(':');
                if let Some(x) = m.get(key) {
                    compact_json(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (k, x) in a.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                compact_json(x, out);
            }
            out.push(']');
        }
        Value::String(s) => json_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn json_string(s: &str, out: &mut String) {
    let quoted = Value::String(s.to_string()).to_string();
    for c in quoted.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The input of kubectl's documentation page.
    fn doc() -> Value {
        json!({
            "kind": "List",
            "items": [
                {"kind": "None", "metadata": {"name": "127.0.0.1", "labels": {"kubernetes.io/hostname": "127.0.0.1"}},
                 "status": {"capacity": {"cpu": "4"}, "addresses": [{"type": "LegacyHostIP", "address": "127.0.0.1"}]}},
                {"kind": "None", "metadata": {"name": "127.0.0.2"},
                 "status": {"capacity": {"cpu": "8"}, "addresses": [
                     {"type": "LegacyHostIP", "address": "127.0.0.2"},
                     {"type": "another", "address": "127.0.0.3"}]}}
            ],
            "users": [
                {"name": "myself", "user": {}},
                {"name": "e2e", "user": {"username": "admin", "password": "secret"}}
            ]
        })
    }

    fn run(t: &str) -> String {
        Template::parse(t)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .render(&doc())
            .unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    fn parse_err(t: &str) -> ParseError {
        Template::parse(t).expect_err(t)
    }

    fn exec_err(t: &str) -> ExecError {
        Template::parse(t).unwrap().render(&doc()).expect_err(t)
    }

    #[test]
    fn the_examples_of_kubectls_documentation() {
        assert_eq!(run("kind is {.kind}"), "kind is List");
        assert_eq!(run("{.kind}"), "List");
        assert_eq!(run("{['kind']}"), "List");
        assert_eq!(run("{..name}"), "127.0.0.1 127.0.0.2 myself e2e");
        assert_eq!(run("{.items[*].metadata.name}"), "127.0.0.1 127.0.0.2");
        assert_eq!(run("{.users[0].name}"), "myself");
        assert_eq!(
            run("{.items[*]['metadata.name', 'status.capacity']}"),
            r#"127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}"#
        );
        assert_eq!(run(r#"{.users[?(@.name=="e2e")].user.password}"#), "secret");
        assert_eq!(
            run("{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}"),
            r#"[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] "#
        );
        assert_eq!(run("{.items[-1].metadata.name}"), "127.0.0.2");
        assert_eq!(
            run(
                r#"{range .items[*]}{.metadata.name}{"\t"}{.status.addresses[*].address}{"\n"}{end}"#
            ),
            "127.0.0.1\t127.0.0.1\n127.0.0.2\t127.0.0.2 127.0.0.3\n"
        );
        assert_eq!(run("{$.kind}"), "List");
        assert_eq!(run("{@.kind}"), "List");
    }

    #[test]
    fn keys_with_dots_slices_and_filters() {
        assert_eq!(
            run(r"{.items[0].metadata.labels['kubernetes\.io/hostname']}"),
            "127.0.0.1"
        );
        assert_eq!(
            run(r"{.items[0].metadata.labels.kubernetes\.io/hostname}"),
            "127.0.0.1"
        );
        assert_eq!(run("{.users[0:2].name}"), "myself e2e");
        assert_eq!(run("{.users[1:].name}"), "e2e");
        assert_eq!(run("{.users[::2].name}"), "myself");
        assert_eq!(run("{.users[0,1].name}"), "myself e2e");
        assert_eq!(run("{.users[?(@.user.username)].name}"), "e2e");
        assert_eq!(run(r#"{.users[?(@.name!="e2e")].name}"#), "myself");
        assert_eq!(
            run(r#"{.items[?(@.status.capacity.cpu>"5")].metadata.name}"#),
            "127.0.0.2"
        );
        assert_eq!(run("{.items[*].status.capacity.*}"), "4 8");
        assert_eq!(run("{.users[0].user}"), "{}");
        assert_eq!(run("{.missing}{.items[*].nothing}"), "");
        assert_eq!(run("{.items[0:0]}"), "");
    }

    #[test]
    fn values_print_as_kubectl_prints_them() {
        let v = json!({"n": 42, "f": 1.5, "b": true, "z": null, "o": {"b": 1, "a": "<&>"}, "a": [1, "x"]});
        let r = |t: &str| Template::parse(t).unwrap().render(&v).unwrap();
        assert_eq!(r("{.n} {.f} {.b} {.z}"), "42 1.5 true <nil>");
        assert_eq!(r("{.o}"), r#"{"a":"\u003c\u0026\u003e","b":1}"#);
        assert_eq!(r("{.a}"), r#"[1,"x"]"#);
        assert_eq!(r(r#"{"a\"b\\c\u00e9"}"#), "a\"b\\cé");
        assert_eq!(r("{.a[?(@==1)]}"), "1");
        let nums = json!({"a": [1, 2.5, 3]});
        let r2 = |t: &str| Template::parse(t).unwrap().render(&nums).unwrap();
        assert_eq!(r2("{.a[?(@>=2)]}"), "2.5 3");
        assert_eq!(r2("{.a[?(@<3)]}"), "1 2.5");
        assert_eq!(r("{true}"), "true");
    }

    #[test]
    fn nested_ranges_and_an_unclosed_range() {
        let v = json!({"items": [{"n": "a", "xs": [1, 2]}, {"n": "b", "xs": []}, {"n": "c"}]});
        let r = |t: &str| Template::parse(t).unwrap().render(&v).unwrap();
        assert_eq!(
            r(r#"{range .items[*]}{.n}:{range .xs[*]}<{@}>{end};{end}"#),
            "a:<1><2>;b:;c:;"
        );
        assert_eq!(r("{range .items[*]}{.n}"), "abc");
        assert_eq!(r("{range .nothing[*]}x{end}done"), "done");
    }

    #[test]
    fn malformed_templates_are_refused_with_a_position() {
        for (t, want) in [
            ("{.a", "unclosed action"),
            ("x {", "unclosed action"),
            ("{.a\n}", "line break"),
            ("{end}", "without a {range}"),
            ("{.a[0}", "unclosed"),
            ("{.a[x]}", "invalid array index"),
            ("{.a[1:2:3:4]}", "invalid array index"),
            ("{.a[?(@.b==1]}", "unterminated filter"),
            ("{.a[?(@.b==1)}", "unclosed"),
            ("{.a[?(@.b==1)x]}", "unclosed filter"),
            (r#"{.a[?(@.b=~"x")]}"#, "not supported"),
            ("{.a[?(@.b=1)]}", "unrecognized filter operator"),
            (r#"{"abc}"#, "unterminated quoted string"),
            (r#"{"\q"}"#, "invalid escape"),
            ("{items}", "unrecognized identifier"),
            ("{.a #}", "unrecognized character"),
            ("{....a}", "multiple recursive descent"),
            ("{.a[99999999999999999999]}", "out of range"),
            ("{.a[?()]}", "empty filter"),
        ] {
            let e = parse_err(t);
            assert!(e.message.contains(want), "{t}: {e}");
            assert!(e.at <= t.len(), "{t}: {e}");
        }
    }

    #[test]
    fn execution_errors_name_the_problem() {
        assert!(
            exec_err("{.items[5]}")
                .0
                .contains("index out of bounds: index 5, length 2")
        );
        assert!(exec_err("{.items[-3]}").0.contains("out of bounds"));
        assert!(
            exec_err("{.kind[0]}")
                .0
                .contains("a string is not an array")
        );
        assert!(exec_err("{.users[::0]}").0.contains("step must be > 0"));
        assert!(exec_err("{.kind[?(@.a)]}").0.contains("cannot be filtered"));
        assert!(
            exec_err(r#"{.items[?(@.kind<1)]}"#)
                .0
                .contains("incompatible types")
        );
    }

    #[test]
    fn hostile_templates_are_bounded() {
        // too long
        let huge = "{.kind}".repeat(MAX_TEMPLATE_BYTES / 7 + 1);
        assert!(parse_err(&huge).message.contains("more than"));
        // long but allowed: linear work
        let many = "{.kind}".repeat(MAX_TEMPLATE_BYTES / 8);
        assert_eq!(run(&many).len(), 4 * (MAX_TEMPLATE_BYTES / 8));
        // deep nesting of ranges, filters and unions
        let deep = "{range .items[*]}".repeat(MAX_DEPTH + 1);
        assert!(parse_err(&deep).message.contains("deeper"));
        let mut f = String::from("@.a");
        for _ in 0..(MAX_DEPTH + 2) {
            f = format!("@.x[?({f})]");
        }
        assert!(
            parse_err(&format!("{{.items[?({f})]}}"))
                .message
                .contains("deeper")
        );
        let many_open = "{".repeat(100_000);
        assert!(parse_err(&many_open).message.contains("unclosed"));
        let brackets = format!("{{.a{}}}", "[".repeat(100_000));
        assert!(Template::parse(&brackets).is_err());
        // exponential evaluation is cut off
        let mut nested = json!("leaf");
        for _ in 0..10 {
            nested = json!({ "k": nested });
        }
        let boom = "{range ['k','k','k','k','k','k','k','k']}".repeat(10) + "x";
        let e = Template::parse(&boom).unwrap().render(&nested).unwrap_err();
        assert!(e.0.contains("more than") || e.0.contains("exceeds"), "{e}");
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    proptest! {
        #[test]
        fn items_names_are_joined_by_one_space(names in proptest::collection::vec(name_strategy(), 0..20)) {
            let items: Vec<Value> = names.iter().map(|n| json!({"metadata": {"name": n}})).collect();
            let list = json!({"kind": "List", "items": items});
            let t = Template::parse("{.items[*].metadata.name}").unwrap();
            prop_assert_eq!(t.render(&list).unwrap(), names.join(" "));
            let t = Template::parse(r#"{range .items[*]}{.metadata.name}{"\n"}{end}"#).unwrap();
            let want: String = names.iter().map(|n| format!("{n}\n")).collect();
            prop_assert_eq!(t.render(&list).unwrap(), want);
            for (i, n) in names.iter().enumerate() {
                let t = Template::parse(&format!("{{.items[{i}].metadata.name}}")).unwrap();
                prop_assert_eq!(&t.render(&list).unwrap(), n);
                let back = i as i64 - names.len() as i64;
                let t = Template::parse(&format!("{{.items[{back}].metadata.name}}")).unwrap();
                prop_assert_eq!(&t.render(&list).unwrap(), n);
            }
            let t = Template::parse(&format!("{{.items[{}]}}", names.len())).unwrap();
            prop_assert!(t.render(&list).is_err());
        }

        #[test]
        fn text_without_braces_is_printed_as_it_is(text in "[^{]{0,200}") {
            prop_assert_eq!(Template::parse(&text).unwrap().render(&doc()).unwrap(), text);
        }

        #[test]
        fn any_template_parses_or_is_refused_without_panicking(
            t in r#"[{}\[\]().'"@$*?=<>!,:\\ a-z0-9\n-]{0,80}"#
        ) {
            if let Ok(tpl) = Template::parse(&t) {
                let _ = tpl.render(&doc());
            }
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(t in ".{0,200}") {
            if let Ok(tpl) = Template::parse(&t) {
                let _ = tpl.render(&doc());
            }
        }

        #[test]
        fn a_field_of_any_name_is_found(key in "[a-zA-Z0-9_/-]{1,20}", val in ".{0,20}") {
            let v = json!({"m": {key.clone(): val.clone()}});
            let t = Template::parse(&format!("{{.m['{key}']}}")).unwrap();
            prop_assert_eq!(t.render(&v).unwrap(), val.clone());
            let t = Template::parse(&format!("{{.m.{key}}}")).unwrap();
            prop_assert_eq!(t.render(&v).unwrap(), val);
        }
    }
}

//! Writing results: tables on stdout (plain off a terminal), objects as kubectl prints them.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use kubectl_hybridnet::output::{self, OutputFormat, TableStyle, TextCell};

use super::connect::{Failure, Res};

pub fn style() -> TableStyle {
    TableStyle {
        terminal: std::io::stdout().is_terminal(),
    }
}

pub fn out(s: &str) -> Res<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        // `| head` closing the pipe is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::error(format!("cannot write to stdout: {e}"))),
    }
}

pub fn table(header: &[&str], rows: &[Vec<TextCell>]) -> Res<()> {
    out(&output::render_table(header, rows, style()))
}

/// A table with its header line, or without it (`--no-headers`).
pub fn table_with(header: &[&str], rows: &[Vec<TextCell>], headers: bool) -> Res<()> {
    out(&output::render_table_with(header, rows, style(), headers))
}

/// `-o jsonpath=TEMPLATE` of objects: the template is applied to what `-o json` prints (one
/// object as itself, several as a `List`), as kubectl does.
pub fn jsonpath<K: Serialize>(
    items: &[K],
    template: &kubectl_hybridnet::jsonpath::Template,
    single: bool,
) -> Res<()> {
    let doc = list_doc(items, single)?;
    let text = template
        .render(&doc)
        .map_err(|e| Failure::error(e.to_string()))?;
    out(&text)
}

fn list_doc<K: Serialize>(items: &[K], single: bool) -> Res<serde_json::Value> {
    let values = items.iter().map(object_value).collect::<Res<Vec<_>>>()?;
    Ok(if single && values.len() == 1 {
        values.into_iter().next().unwrap_or_default()
    } else {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
    })
}

fn render_err(e: output::RenderError) -> Failure {
    Failure::error(e.to_string())
}

pub fn json<T: Serialize>(v: &T) -> Res<()> {
    out(&output::to_json(v).map_err(render_err)?)
}

pub fn yaml<T: Serialize>(v: &T) -> Res<()> {
    out(&output::to_yaml(v).map_err(render_err)?)
}

/// An API object as kubectl shows it: without managedFields.
pub fn object_value<K: Serialize>(obj: &K) -> Res<serde_json::Value> {
    let mut v =
        serde_json::to_value(obj).map_err(|e| Failure::error(format!("cannot render: {e}")))?;
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("managedFields");
    }
    Ok(v)
}

/// Prints objects for `-o json|yaml|name`: one object as itself, several as a `List`.
pub fn objects<K: Serialize>(
    items: &[K],
    fmt: OutputFormat,
    kind_ref: &str,
    single: bool,
) -> Res<()> {
    let doc = list_doc(items, single)?;
    match fmt {
        OutputFormat::Json => json(&doc),
        OutputFormat::Yaml => yaml(&doc),
        OutputFormat::Name => {
            let mut s = String::new();
            for it in doc
                .get("items")
                .and_then(|i| i.as_array())
                .cloned()
                .unwrap_or_else(|| vec![doc.clone()])
            {
                let name = it
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("");
                s.push_str(&format!("{kind_ref}/{name}\n"));
            }
            out(&s)
        }
        OutputFormat::Table | OutputFormat::Wide => Err(Failure::usage(
            "internal: objects() takes json, yaml or name",
        )),
    }
}

/// Rejects output formats a command does not offer.
pub fn only(fmt: OutputFormat, allowed: &[OutputFormat], cmd: &str) -> Res<()> {
    if allowed.contains(&fmt) {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "{cmd} does not support -o {fmt}: use one of {}",
            allowed
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

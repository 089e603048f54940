//! Output formats (`-o`) and rendering: kubectl-style tables through comfy-table, stable JSON/YAML.

use std::fmt;
use std::str::FromStr;

use comfy_table::{Cell, CellAlignment, Color, ContentArrangement, Table, presets};
use serde::Serialize;

/// The `-o/--output` of a listing command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The default table.
    Table,
    /// The table with more columns.
    Wide,
    Json,
    Yaml,
    /// `kind/name` per line (kubectl's `-o name`).
    Name,
}

impl OutputFormat {
    pub const ALL: [&'static str; 5] = ["table", "wide", "json", "yaml", "name"];
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            t if t.starts_with("jsonpath") => Err(format!(
                "-o {t:?}: jsonpath templates are an output of the list commands (network, subnet and ip ls; network and subnet get): use one of {}",
                Self::ALL.join(", ")
            )),
            "" | "table" => Ok(Self::Table),
            "wide" => Ok(Self::Wide),
            "json" => Ok(Self::Json),
            "yaml" => Ok(Self::Yaml),
            "name" => Ok(Self::Name),
            other => Err(format!(
                "unknown output format {other:?}: use one of {}",
                Self::ALL.join(", ")
            )),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Table => "table",
            Self::Wide => "wide",
            Self::Json => "json",
            Self::Yaml => "yaml",
            Self::Name => "name",
        })
    }
}

/// The `-o` of a list command: a format, or kubectl's `jsonpath=TEMPLATE`.
#[derive(Debug, Clone, PartialEq)]
pub enum ListOutput {
    Format(OutputFormat),
    JsonPath(crate::jsonpath::Template),
}

impl ListOutput {
    /// The format, or `None` for a jsonpath template.
    pub fn format(&self) -> Option<OutputFormat> {
        match self {
            Self::Format(f) => Some(*f),
            Self::JsonPath(_) => None,
        }
    }
}

impl FromStr for ListOutput {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(t) = s.strip_prefix("jsonpath=") {
            if t.is_empty() {
                return Err(
                    "-o jsonpath= needs a template, as -o jsonpath='{.items[*].metadata.name}'"
                        .into(),
                );
            }
            return crate::jsonpath::Template::parse(t)
                .map(Self::JsonPath)
                .map_err(|e| e.to_string());
        }
        if s == "jsonpath" {
            return Err(
                "-o jsonpath needs a template: -o jsonpath='{.items[*].metadata.name}'".into(),
            );
        }
        if s.starts_with("jsonpath") {
            return Err(format!(
                "unknown output format {s:?}: use jsonpath=TEMPLATE or one of {}",
                OutputFormat::ALL.join(", ")
            ));
        }
        s.parse().map(Self::Format)
    }
}

/// How a table is drawn: colours and wrapping only on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStyle {
    pub terminal: bool,
}

/// A cell with an optional warning flag (rendered red on a terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextCell {
    pub text: String,
    pub warn: bool,
    pub right: bool,
}

impl TextCell {
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            warn: false,
            right: false,
        }
    }
    pub fn number(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            warn: false,
            right: true,
        }
    }
    pub fn warned(mut self, warn: bool) -> Self {
        self.warn = warn;
        self
    }
}

impl From<String> for TextCell {
    fn from(s: String) -> Self {
        Self::plain(s)
    }
}

impl From<&str> for TextCell {
    fn from(s: &str) -> Self {
        Self::plain(s)
    }
}

/// Renders a kubectl-like table: upper-case headers, columns separated by three spaces, no
/// borders, no trailing blanks. Off a terminal there is no colour and no wrapping.
pub fn render_table(header: &[&str], rows: &[Vec<TextCell>], style: TableStyle) -> String {
    render_table_with(header, rows, style, true)
}

/// [`render_table`], with the header line or without it (kubectl's `--no-headers`).
pub fn render_table_with(
    header: &[&str],
    rows: &[Vec<TextCell>],
    style: TableStyle,
    headers: bool,
) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    if style.terminal {
        table.set_content_arrangement(ContentArrangement::Dynamic);
        table.enforce_styling();
    } else {
        table.force_no_tty();
        table.set_content_arrangement(ContentArrangement::Disabled);
    }
    if headers {
        table.set_header(header.iter().map(|h| Cell::new(h.to_uppercase())));
    }
    for row in rows {
        table.add_row(row.iter().map(|c| {
            let mut cell = Cell::new(&c.text);
            if c.right {
                cell = cell.set_alignment(CellAlignment::Right);
            }
            if c.warn && style.terminal {
                cell = cell.fg(Color::Red);
            }
            cell
        }));
    }
    let n = header.len();
    for (i, col) in table.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 == n { 0 } else { 3 }));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Errors of serialising output.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot render JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot render YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser::Error),
}

/// Pretty JSON with a trailing newline (stable key order: struct field order).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, RenderError> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

/// YAML of one document.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, RenderError> {
    let s = serde_saphyr::to_string(value)?;
    Ok(if s.ends_with('\n') {
        s
    } else {
        format!("{s}\n")
    })
}

/// `-` for absent values, as kubectl prints `<none>` more verbosely.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_parses_and_rejects() {
        assert_eq!("wide".parse::<OutputFormat>(), Ok(OutputFormat::Wide));
        assert_eq!("".parse::<OutputFormat>(), Ok(OutputFormat::Table));
        let err = "xml".parse::<OutputFormat>().unwrap_err();
        assert!(err.contains("unknown output format"), "{err}");
        assert!(err.contains("json, yaml"), "{err}");
    }

    #[test]
    fn table_off_terminal_has_no_escape_codes_and_no_trailing_blanks() {
        let rows = vec![
            vec![TextCell::plain("a"), TextCell::number("95%").warned(true)],
            vec![TextCell::plain("longer-name"), TextCell::number("5%")],
        ];
        let out = render_table(&["name", "used"], &rows, TableStyle { terminal: false });
        assert!(!out.contains('\u{1b}'), "{out:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME          USED");
        assert_eq!(lines[1], "a              95%");
        assert_eq!(lines[2], "longer-name     5%");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn no_headers_drops_only_the_header_line() {
        let rows = vec![
            vec![TextCell::plain("a"), TextCell::number("1")],
            vec![TextCell::plain("bb"), TextCell::number("22")],
        ];
        let style = TableStyle { terminal: false };
        let out = render_table_with(&["name-is-long", "n"], &rows, style, false);
        assert_eq!(out, "a     1\nbb   22\n");
    }

    #[test]
    fn list_output_parses_jsonpath_and_refuses_bad_templates() {
        assert_eq!(
            "wide".parse::<ListOutput>(),
            Ok(ListOutput::Format(OutputFormat::Wide))
        );
        assert!(matches!(
            "jsonpath={.items[*].metadata.name}".parse::<ListOutput>(),
            Ok(ListOutput::JsonPath(_))
        ));
        for bad in [
            "jsonpath",
            "jsonpath=",
            "jsonpath={.a",
            "jsonpath-file=x",
            "xml",
        ] {
            assert!(bad.parse::<ListOutput>().is_err(), "{bad}");
        }
        let e = "jsonpath={.a}".parse::<OutputFormat>().unwrap_err();
        assert!(e.contains("list commands"), "{e}");
    }

    #[test]
    fn warned_cells_are_red_on_a_terminal() {
        let rows = vec![vec![TextCell::number("95%").warned(true)]];
        let out = render_table(&["used"], &rows, TableStyle { terminal: true });
        assert!(out.contains('\u{1b}'), "{out:?}");
    }

    #[test]
    fn long_cells_do_not_wrap_off_a_terminal() {
        let long = "x".repeat(400);
        let rows = vec![vec![TextCell::plain(long.clone()), TextCell::plain("y")]];
        let out = render_table(&["a", "b"], &rows, TableStyle { terminal: false });
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains(&long));
    }
}

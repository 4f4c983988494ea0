//! Printing results: a table when stdout is a terminal, JSON when it is not or when asked.

use std::io::IsTerminal as _;

use serde_json::Value;

use crate::cli::OutputFormat;

/// One labelled value of a record, for the table form.
pub type Row = (&'static str, String);

pub struct Output {
    format: OutputFormat,
}

impl Output {
    pub fn new(requested: Option<OutputFormat>) -> Self {
        let format = requested.unwrap_or(if std::io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        });
        Output { format }
    }

    pub fn is_table(&self) -> bool {
        self.format == OutputFormat::Table
    }

    /// One record: JSON object, or `label  value` lines.
    pub fn record(&self, json: &Value, rows: &[Row]) {
        match self.format {
            OutputFormat::Json => println!("{}", pretty(json)),
            OutputFormat::Table => {
                let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
                for (label, value) in rows {
                    println!("{label:<width$}  {value}");
                }
            }
        }
    }

    /// A list: JSON array, or aligned columns under a header.
    pub fn list(&self, json: &Value, header: &[&str], rows: &[Vec<String>]) {
        match self.format {
            OutputFormat::Json => println!("{}", pretty(json)),
            OutputFormat::Table => {
                let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
                for row in rows {
                    for (width, cell) in widths.iter_mut().zip(row) {
                        *width = (*width).max(cell.chars().count());
                    }
                }
                let line = |cells: &mut dyn Iterator<Item = &str>| {
                    let parts: Vec<String> = cells
                        .zip(&widths)
                        .map(|(cell, width)| format!("{cell:<width$}"))
                        .collect();
                    println!("{}", parts.join("  ").trim_end());
                };
                line(&mut header.iter().copied());
                for row in rows {
                    line(&mut row.iter().map(String::as_str));
                }
            }
        }
    }
}

fn pretty(json: &Value) -> String {
    serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string())
}

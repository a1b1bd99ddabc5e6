//! What a command prints: rows as an aligned table for people, or as JSON (`--json`) for
//! scripts, from the same `Serialize` values.

use serde::Serialize;

/// A command's result.
#[derive(Debug)]
pub struct Output {
    pub json: serde_json::Value,
    pub text: String,
}

impl Output {
    /// A message for people, and `value` for scripts.
    pub fn message(text: impl Into<String>, value: impl Serialize) -> Self {
        Self {
            json: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            text: text.into(),
        }
    }

    /// A table of `rows` (one per line; `columns` names each field shown, in order).
    pub fn table<T: Serialize>(columns: &[&str], rows: &[T]) -> Self {
        let json = serde_json::to_value(rows).unwrap_or(serde_json::Value::Null);
        let cells: Vec<Vec<String>> = match &json {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| columns.iter().map(|c| cell(item.get(c))).collect())
                .collect(),
            _ => Vec::new(),
        };
        Self {
            text: render(columns, &cells),
            json,
        }
    }

    /// Fields of one value, one per line (`name: value`), in the order given.
    pub fn record<T: Serialize>(fields: &[&str], value: &T) -> Self {
        let json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        let width = fields.iter().map(|f| f.len()).max().unwrap_or(0);
        let text = fields
            .iter()
            .map(|f| format!("{f:<width$}  {}", cell(json.get(f))))
            .collect::<Vec<_>>()
            .join("\n");
        Self { json, text }
    }

    /// Appends more text for people (JSON unchanged).
    pub fn then(mut self, text: &str) -> Self {
        if !text.is_empty() {
            if !self.text.is_empty() {
                self.text.push_str("\n\n");
            }
            self.text.push_str(text);
        }
        self
    }
}

fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => "-".into(),
        Some(serde_json::Value::String(s)) if s.is_empty() => "-".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(map)) if map.is_empty() => "-".into(),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), String::from)
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(v) => v.to_string(),
    }
}

fn render(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(columns.iter().map(|c| c.to_uppercase()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    if rows.is_empty() {
        out.push("(none)".into());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        id: u64,
        name: String,
        region: Option<String>,
    }

    #[test]
    fn tables_align_and_json_keeps_every_field() {
        let rows = [
            Row {
                id: 1,
                name: "leader".into(),
                region: Some("eu".into()),
            },
            Row {
                id: 12,
                name: "f".into(),
                region: None,
            },
        ];
        let out = Output::table(&["id", "name", "region"], &rows);
        assert_eq!(
            out.text,
            "ID  NAME    REGION\n1   leader  eu\n12  f       -"
        );
        assert_eq!(out.json[1]["id"], 12);
        assert!(out.json[1]["region"].is_null());
        let empty: [Row; 0] = [];
        assert!(Output::table(&["id"], &empty).text.ends_with("(none)"));
    }
}

//! Human and JSON output shared by the commands.

use serde::Serialize;

/// What `--json` prints: the value pretty-printed, with a final newline.
pub(super) fn json(value: &impl Serialize) -> String {
    // Invariant: the views serialize only strings, numbers, booleans, options and vectors of those, which
    // serde_json always accepts.
    let mut text = serde_json::to_string_pretty(value).expect("views serialize to JSON");
    text.push('\n');
    text
}

/// A table with a header row and columns padded to their widest cell, separated by two spaces.
pub(super) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|title| (*title).to_owned()).collect()],
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                let width = |row: &Vec<String>| row.get(column).map_or(0, |cell| cell.chars().count());
                self.rows.iter().map(width).max().unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let padded: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            text.push_str(padded.join("  ").trim_end());
            text.push('\n');
        }
        text
    }
}

/// One record as `key: value` lines with the values aligned.
pub(super) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{:<width$} {value}\n", format!("{key}:")))
        .collect()
}

/// `yes` or `no`.
pub(super) fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

/// The value, or `-` when there is none.
pub(super) fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["NAME", "HOST"]);
        table.row(vec!["main".to_owned(), "pbx.example".to_owned()]);
        table.row(vec!["a-much-longer-name".to_owned(), "10.0.0.1".to_owned()]);
        assert_eq!(
            table.render(),
            "NAME                HOST\nmain                pbx.example\na-much-longer-name  10.0.0.1\n"
        );
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("name", "main".to_owned()), ("transport", "udp".to_owned())]);
        assert_eq!(text, "name:      main\ntransport: udp\n");
    }
}

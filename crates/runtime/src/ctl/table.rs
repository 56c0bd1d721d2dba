//! machinectl-style text tables: upper-case headers, columns separated by one
//! space, every column but the last padded, empty cells shown as "-".

/// A table of text cells, printed the way systemd's format-table prints
/// `machinectl list` (without colours or terminal-width ellipsizing).
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names (printed upper-cased).
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_ascii_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are empty, extra cells are dropped.
    pub fn push(&mut self, mut row: Vec<String>) {
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True if there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table; `header` selects whether the header line is shown.
    /// Every line ends with a newline.
    pub fn render(&self, header: bool) -> String {
        let cell = |s: &str| -> String {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        let mut lines: Vec<Vec<String>> = Vec::new();
        if header {
            lines.push(self.headers.clone());
        }
        for row in &self.rows {
            lines.push(row.iter().map(|c| cell(c)).collect());
        }
        let ncol = self.headers.len();
        let mut widths = vec![0usize; ncol];
        for line in &lines {
            for (i, c) in line.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for line in &lines {
            let mut text = String::new();
            for (i, c) in line.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(c);
                if i + 1 < ncol {
                    let pad = widths[i] - c.chars().count();
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The first line of a multi-valued cell, with "…" when more were cut, as
/// machinectl shows only the first address in `list`.
pub fn first_with_ellipsis(values: &[String]) -> String {
    match values {
        [] => String::new(),
        [one] => one.clone(),
        [first, ..] => format!("{first}…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_machinectl() {
        let mut t = Table::new(&["machine", "class", "service", "os", "version", "addresses"]);
        t.push(vec![
            "web".into(),
            "container".into(),
            "netspawn".into(),
            "debian".into(),
            "12".into(),
            "10.0.0.2…".into(),
        ]);
        t.push(vec![
            "database".into(),
            "container".into(),
            "netspawn".into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        assert_eq!(
            t.render(true),
            "MACHINE  CLASS     SERVICE  OS     VERSION ADDRESSES\n\
             web      container netspawn debian 12      10.0.0.2…\n\
             database container netspawn -      -       -\n"
        );
        assert_eq!(t.render(false).lines().count(), 2);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn short_rows_are_padded_and_width_counts_chars() {
        let mut t = Table::new(&["a", "b"]);
        t.push(vec!["é".into()]);
        t.push(vec!["xy".into(), "z".into()]);
        assert_eq!(t.render(true), "A  B\né  -\nxy z\n");
    }

    #[test]
    fn ellipsis_for_more_values() {
        assert_eq!(first_with_ellipsis(&[]), "");
        assert_eq!(first_with_ellipsis(&["a".into()]), "a");
        assert_eq!(first_with_ellipsis(&["a".into(), "b".into()]), "a…");
    }
}

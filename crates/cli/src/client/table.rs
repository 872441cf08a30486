//! Plain-text tables: left-aligned columns two spaces apart, the last
//! column cut to the terminal's width.

use std::io::IsTerminal;

const GAP: usize = 2;
/// The last column keeps at least this many characters, even when the
/// others already fill the terminal (it then wraps rather than vanish).
const MIN_LAST: usize = 12;

pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; each cell is made one line of printable text.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| one_line(c)).collect());
    }

    /// The table with a trailing newline; with a `width`, every line fits
    /// in it by cutting the last column.
    pub(crate) fn render(&self, width: Option<usize>) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let fixed: usize = widths
            .iter()
            .take(columns.saturating_sub(1))
            .map(|w| w + GAP)
            .sum();
        let last_room = width.map(|w| w.saturating_sub(fixed).max(MIN_LAST));
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    match last_room {
                        Some(room) => line.push_str(&cut(cell, room)),
                        None => line.push_str(cell),
                    }
                } else {
                    let pad = widths[i] - cell.chars().count() + GAP;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The terminal's width when stdout is one; `None` when output goes to a
/// pipe or file, where nothing is cut.
pub(crate) fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
}

/// `text` cut to `room` characters, ending in `…` when cut.
pub(crate) fn cut(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(room.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// One line of text that cannot move the cursor or recolour the terminal:
/// control characters (newlines, escapes) become spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["ID", "STATUS", "REASON"]);
        t.row(vec![
            "r1".into(),
            "failed".into(),
            "task `test` failed: exit code 1".into(),
        ]);
        t.row(vec!["r22".into(), "succeeded".into(), String::new()]);
        t
    }

    #[test]
    fn columns_are_aligned_and_lines_trimmed() {
        assert_eq!(
            sample().render(None),
            "ID   STATUS     REASON\n\
             r1   failed     task `test` failed: exit code 1\n\
             r22  succeeded\n"
        );
    }

    #[test]
    fn the_last_column_is_cut_to_the_width() {
        let text = sample().render(Some(30));
        for line in text.lines() {
            assert!(line.chars().count() <= 30, "{line:?}");
        }
        assert!(text.contains("r1   failed     task `test` f…"), "{text}");
        // A narrow terminal still shows something of the last column.
        let text = sample().render(Some(5));
        assert!(text.contains("task `test`…"), "{text}");
    }

    #[test]
    fn cells_are_one_printable_line() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x\ny".into(), "\x1b[31mred".into()]);
        assert_eq!(t.render(None), "A    B\nx y   [31mred\n");
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo!", 5), "héll…");
        assert_eq!(cut("abc", 0), "…");
    }
}

//! Log lines as the server streams them: `<RFC 3339 time> <out|err> <text>`,
//! with marker lines (`--- attempt 2 ---`, `--- undo ---`) between attempts.

/// A line longer than this is cut into pieces: a task printing megabytes
/// without a newline must not make the client hold them all.
const MAX_LINE: usize = 1 << 20;

/// Splits a byte stream into lines, holding at most one partial line.
#[derive(Default)]
pub(crate) struct Splitter {
    partial: Vec<u8>,
}

impl Splitter {
    /// The lines `chunk` completes, without their line ends.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&chunk[..end]);
            lines.push(take_line(&mut self.partial));
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            lines.push(take_line(&mut self.partial));
            self.partial = rest;
        }
        lines
    }

    /// The last line, when the stream did not end with a newline.
    pub(crate) fn finish(mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| take_line(&mut self.partial))
    }
}

fn take_line(buf: &mut Vec<u8>) -> String {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

/// What a person sees of a line: the text alone, or the whole line with
/// `timestamps`. Marker lines and lines not in the log format are shown
/// whole.
pub(crate) fn shown(line: &str, timestamps: bool) -> &str {
    if timestamps {
        return line;
    }
    text_of(line).unwrap_or(line)
}

/// The text part of an output line, `None` for any other line.
fn text_of(line: &str) -> Option<&str> {
    let (time, rest) = line.split_once(' ')?;
    // Cheap shape check before the full parse, for lines that are plainly
    // not timestamped.
    if !time.as_bytes().first().is_some_and(u8::is_ascii_digit)
        || time.parse::<jiff::Timestamp>().is_err()
    {
        return None;
    }
    match rest.split_once(' ') {
        Some(("out" | "err", text)) => Some(text),
        None if rest == "out" || rest == "err" => Some(""),
        _ => None,
    }
}

/// Prefixes for several tasks' lines, padded alike: `build | `, `test  | `.
pub(crate) fn prefixes<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Vec<String> {
    let width = names
        .clone()
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0);
    names
        .into_iter()
        .map(|n| {
            let pad = width - n.chars().count();
            format!("{n}{} | ", " ".repeat(pad))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_time_and_stream_unless_asked() {
        let line = "2026-05-01T12:00:00.123Z out hello  world";
        assert_eq!(shown(line, false), "hello  world");
        assert_eq!(shown(line, true), line);
        assert_eq!(shown("2026-05-01T12:00:00Z err oops", false), "oops");
        assert_eq!(shown("2026-05-01T12:00:00Z out ", false), "");
        assert_eq!(shown("2026-05-01T12:00:00Z out", false), "");
        assert_eq!(shown("--- attempt 2 ---", false), "--- attempt 2 ---");
        assert_eq!(shown("--- undo ---", false), "--- undo ---");
        // Not the log format: shown whole rather than mangled.
        assert_eq!(shown("2026 was a year", false), "2026 was a year");
        assert_eq!(
            shown("2026-05-01T12:00:00Z warn x", false),
            "2026-05-01T12:00:00Z warn x"
        );
    }

    #[test]
    fn splits_across_chunks() {
        let mut s = Splitter::default();
        assert_eq!(s.push(b"one\ntw"), ["one"]);
        assert_eq!(s.push(b"o\r\n\nthr"), ["two", ""]);
        assert!(s.push(b"ee").is_empty());
        assert_eq!(s.finish().as_deref(), Some("three"));
        let mut s = Splitter::default();
        assert_eq!(s.push(b"x\n"), ["x"]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn cuts_endless_lines_and_survives_bad_utf8() {
        let mut s = Splitter::default();
        let lines = s.push(&vec![b'a'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(s.finish().map(|l| l.len()), Some(5));
        let mut s = Splitter::default();
        assert_eq!(s.push(b"caf\xe9\n"), ["caf\u{fffd}"]);
    }

    #[test]
    fn prefixes_are_padded_alike() {
        assert_eq!(prefixes(["build", "go"]), ["build | ", "go    | "]);
        assert!(prefixes(std::iter::empty::<&str>()).is_empty());
    }
}

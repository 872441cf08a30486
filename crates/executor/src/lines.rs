/// Longest line passed on whole; longer ones are split so that one endless
/// line (a progress bar without newlines, a binary dump) cannot grow memory.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines, keeping at most about one line of
/// unfinished input between reads.
#[derive(Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Appends `data` and hands every completed line to `emit`.
    pub(crate) fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(String)) {
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..newline]);
            data = &data[newline + 1..];
            if self.pending.last() == Some(&b'\r') {
                self.pending.pop();
            }
            self.emit_all(emit);
        }
        self.pending.extend_from_slice(data);
        // Keep one byte beyond a full chunk: it may be the '\r' of a "\r\n"
        // that the next read completes, and must then be stripped rather
        // than emitted as a line of its own.
        while self.pending.len() > MAX_LINE + 1 {
            self.emit_chunk(emit);
        }
    }

    /// Emits what is left after the stream ended: a last line without newline.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if self.pending.is_empty() {
            return;
        }
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        self.emit_all(emit);
    }

    /// Emits `pending` as one complete line (possibly in several chunks).
    fn emit_all(&mut self, emit: &mut impl FnMut(String)) {
        while self.pending.len() > MAX_LINE {
            self.emit_chunk(emit);
        }
        emit(String::from_utf8_lossy(&self.pending).into_owned());
        self.pending.clear();
    }

    fn emit_chunk(&mut self, emit: &mut impl FnMut(String)) {
        let cut = char_boundary_before(&self.pending, MAX_LINE);
        emit(String::from_utf8_lossy(&self.pending[..cut]).into_owned());
        self.pending.drain(..cut);
    }
}

/// A cut point at or just below `at` that does not split a UTF-8 sequence,
/// so a split line does not gain replacement characters. Invalid input gets
/// cut at `at`.
fn char_boundary_before(bytes: &[u8], at: usize) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| i > 0 && !bytes.get(i).copied().is_some_and(is_continuation))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, &mut |l| lines.push(l));
        }
        splitter.finish(&mut |l| lines.push(l));
        lines
    }

    #[test]
    fn splits_on_newlines_across_reads() {
        assert_eq!(
            split(&[b"a\nb", b"c\n\nd"]),
            ["a", "bc", "", "d"].map(String::from)
        );
    }

    #[test]
    fn strips_carriage_return_even_when_split_between_reads() {
        assert_eq!(split(&[b"a\r\nb\r", b"\nc\r"]), ["a", "b", "c"]);
    }

    #[test]
    fn no_trailing_empty_line() {
        assert_eq!(split(&[b"a\n"]), ["a"]);
        assert!(split(&[b""]).is_empty());
    }

    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(split(&[b"\xffok\n"]), ["\u{fffd}ok"]);
    }

    #[test]
    fn splits_long_lines_into_chunks() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        // Fed in small pieces, as pipes deliver it.
        let pieces: Vec<&[u8]> = input.chunks(4096).collect();
        let lines = split(&pieces);
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10, 4]);
        assert_eq!(lines[3], "next");
    }

    #[test]
    fn chunks_do_not_split_characters() {
        // 'é' is two bytes; with one leading byte every boundary at MAX_LINE
        // falls inside a character.
        let mut input = b"a".to_vec();
        for _ in 0..MAX_LINE {
            input.extend_from_slice("é".as_bytes());
        }
        let lines = split(&[&input]);
        assert!(lines.iter().all(|l| !l.contains('\u{fffd}')));
        assert_eq!(lines.concat().len(), input.len());
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
    }

    #[test]
    fn buffer_stays_bounded() {
        let mut splitter = LineSplitter::default();
        let chunk = vec![b'y'; 10_000];
        let mut count = 0;
        for _ in 0..100 {
            splitter.feed(&chunk, &mut |_| count += 1);
            assert!(splitter.pending.len() <= MAX_LINE + 1);
        }
        assert!(count >= 14);
    }
}

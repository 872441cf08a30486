//! Writing lines for people without dying on a closed pipe: `ganger logs
//! RUN | head` must end quietly when `head` has read enough.

use std::io::Write;

/// Standard output was closed by its reader. Commands stop at once and
/// exit successfully: what was asked for was delivered as far as wanted.
#[derive(Debug)]
pub(crate) struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for Closed {}

/// Where a command writes: stdout normally, stderr when stdout carries
/// JSON for a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    Stdout,
    Stderr,
}

impl Sink {
    /// Writes `text` and a newline as one write, so lines from tasks
    /// followed at once never interleave within a line.
    pub(crate) fn line(self, text: &str) -> Result<(), Closed> {
        let mut buf = String::with_capacity(text.len() + 1);
        buf.push_str(text);
        buf.push('\n');
        self.text(&buf)
    }

    /// Writes `text` as it is.
    pub(crate) fn text(self, text: &str) -> Result<(), Closed> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|_| Closed)
            }
            // Nothing useful can be done when stderr is gone: go on.
            Sink::Stderr => {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
                Ok(())
            }
        }
    }
}

/// Prints a value as pretty JSON on stdout, for scripts.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| anyhow::anyhow!("cannot encode the answer as JSON: {e}"))?;
    Sink::Stdout.line(&text)?;
    Ok(())
}

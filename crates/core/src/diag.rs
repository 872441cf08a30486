//! Problems found in a job file, each tied to a file, a position and a key.

use std::fmt;

use crate::yaml::Pos;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    /// The dotted key path of the offending entry, e.g. `jobs.build.tasks.test.needs[0]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one or more files. Validation collects them all
/// rather than stopping at the first, so one run of `ganger validate` shows
/// everything to fix.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
pub(crate) struct Sink {
    file: String,
    pub(crate) found: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(file: &str) -> Sink {
        Sink {
            file: file.to_owned(),
            found: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            pos,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn into_result<T>(mut self, value: T) -> Result<T, Diagnostics> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            self.found.sort_by_key(|d| d.pos);
            Err(Diagnostics(self.found))
        }
    }
}

/// "did you mean `x`?" when a known name is close to what was written.
pub(crate) fn suggestion<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    // Close enough: at most one edit per three characters (and one for short words).
    let allowed = given.chars().count().div_ceil(3).max(1);
    let best = known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), k))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance);
    match best {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => String::new(),
    }
}

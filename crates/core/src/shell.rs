//! Places interpolated values into a shell script according to where they
//! stand, so that no value can ever be run as shell code.
//!
//! Rendering marks each value `\x01<hex>\x02`; this pass walks the script
//! with a small model of shell quoting and replaces each mark:
//! - unquoted (or inside `$(…)`/backticks): the value shell-quoted, `'a b'`;
//! - inside `"…"` or an expanding heredoc: a reference `${GANGER_TPL_n}` to an
//!   environment variable holding the value (expansions are never re-parsed,
//!   so `$(…)` in a value stays text);
//! - inside `'…'`: the quote closed, the value shell-quoted, the quote reopened;
//! - inside a quoted heredoc: the value as is (nothing expands there), unless
//!   a line of it would end the heredoc;
//! - inside a `#` comment: the value shell-quoted with line breaks flattened.

use crate::template::TemplateError;

pub(crate) const MARK_START: char = '\u{1}';
pub(crate) const MARK_END: char = '\u{2}';

/// A rendered script and the variables its values travel in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub env: Vec<(String, String)>,
}

pub(crate) fn mark(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2 + 2);
    out.push(MARK_START);
    for b in value.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out.push(MARK_END);
    out
}

#[derive(Clone, Debug)]
enum Mode {
    /// Unquoted; `parens` counts `(` opened inside a `$(`.
    Plain {
        parens: usize,
        backtick: bool,
    },
    Double,
    Single,
    AnsiC,
    Comment,
    Heredoc {
        delimiter: String,
        strip_tabs: bool,
        expand: bool,
    },
}

struct Placer {
    out: String,
    env: Vec<(String, String)>,
    stack: Vec<Mode>,
    /// Heredocs declared on the current line, whose bodies start after it.
    pending: Vec<Mode>,
    word_start: bool,
}

fn error(message: String) -> TemplateError {
    TemplateError {
        line: None,
        message,
    }
}

impl Placer {
    fn mode(&self) -> &Mode {
        self.stack.last().unwrap_or(&Mode::Plain {
            parens: 0,
            backtick: false,
        })
    }

    fn bind(&mut self, value: String) -> String {
        let name = format!("GANGER_TPL_{}", self.env.len() + 1);
        self.env.push((name.clone(), value));
        format!("${{{name}}}")
    }

    fn quote(value: &str) -> Result<String, TemplateError> {
        shlex::try_quote(value)
            .map(|q| q.into_owned())
            .map_err(|_| error("a value with a NUL byte cannot be put in a shell script".into()))
    }

    fn place(&mut self, value: String) -> Result<(), TemplateError> {
        let text = match self.mode().clone() {
            Mode::Plain { .. } => Self::quote(&value)?,
            Mode::Double => self.bind(value),
            Mode::Single => format!("'{}'", Self::quote(&value)?),
            Mode::AnsiC => format!("'{}$'", Self::quote(&value)?),
            // Quoted too: should the scanner ever take code for a comment,
            // the value still cannot run.
            Mode::Comment => Self::quote(&value.replace(['\n', '\r'], " "))?,
            Mode::Heredoc { expand: true, .. } => self.bind(value),
            Mode::Heredoc {
                delimiter,
                strip_tabs,
                expand: false,
            } => {
                let ends = value.lines().any(|l| {
                    (if strip_tabs {
                        l.trim_start_matches('\t')
                    } else {
                        l
                    }) == delimiter
                });
                if ends {
                    return Err(error(format!(
                        "a value contains the line `{delimiter}`, which would end the heredoc it is put in"
                    )));
                }
                value
            }
        };
        self.out.push_str(&text);
        self.word_start = false;
        Ok(())
    }
}

fn decode(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Parses a heredoc operator after `<<`: returns the heredoc and how many
/// characters of `rest` it spans.
fn heredoc(rest: &[char]) -> Option<(Mode, usize)> {
    let mut i = 0;
    let strip_tabs = rest.first() == Some(&'-');
    if strip_tabs {
        i += 1;
    }
    while rest.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    let mut delimiter = String::new();
    let mut quoted = false;
    while let Some(&c) = rest.get(i) {
        match c {
            '\'' | '"' => {
                quoted = true;
                let close = rest[i + 1..].iter().position(|&d| d == c)? + i + 1;
                delimiter.extend(&rest[i + 1..close]);
                i = close + 1;
            }
            '\\' => {
                quoted = true;
                delimiter.extend(rest.get(i + 1));
                i += 2;
            }
            c if c.is_whitespace() || ";|&<>()".contains(c) => break,
            c => {
                delimiter.push(c);
                i += 1;
            }
        }
    }
    if delimiter.is_empty() {
        return None;
    }
    Some((
        Mode::Heredoc {
            delimiter,
            strip_tabs,
            expand: !quoted,
        },
        i,
    ))
}

/// Replaces the value marks in a rendered script.
pub(crate) fn place(rendered: &str) -> Result<Script, TemplateError> {
    let chars: Vec<char> = rendered.chars().collect();
    let mut p = Placer {
        out: String::with_capacity(rendered.len()),
        env: Vec::new(),
        stack: Vec::new(),
        pending: Vec::new(),
        word_start: true,
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == MARK_START {
            let end = chars[i..]
                .iter()
                .position(|&d| d == MARK_END)
                .map(|e| e + i)
                .ok_or_else(|| error("malformed value mark".into()))?;
            let hex: String = chars[i + 1..end].iter().collect();
            let value = decode(&hex).ok_or_else(|| error("malformed value mark".into()))?;
            p.place(value)?;
            i = end + 1;
            continue;
        }
        // Heredoc bodies are taken a line at a time.
        if let Mode::Heredoc {
            delimiter,
            strip_tabs,
            ..
        } = p.mode().clone()
        {
            if p.out.ends_with('\n') || p.out.is_empty() {
                let line_end = chars[i..]
                    .iter()
                    .position(|&d| d == '\n')
                    .map_or(chars.len(), |e| e + i);
                let line: String = chars[i..line_end].iter().collect();
                let bare = if strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if bare == delimiter && !line.contains(MARK_START) {
                    p.out.push_str(&line);
                    p.stack.pop();
                    i = line_end;
                    if let Some(next_doc) = (!p.pending.is_empty()).then(|| p.pending.remove(0)) {
                        // Another heredoc of the same command line follows.
                        if line_end < chars.len() {
                            p.out.push('\n');
                            i += 1;
                        }
                        p.stack.push(next_doc);
                    }
                    continue;
                }
            }
            p.out.push(c);
            i += 1;
            continue;
        }
        // `$(` opens a command substitution, unquoted or inside "…".
        if c == '$' && next == Some('(') && matches!(p.mode(), Mode::Plain { .. } | Mode::Double) {
            p.out.push_str("$(");
            p.stack.push(Mode::Plain {
                parens: 0,
                backtick: false,
            });
            p.word_start = true;
            i += 2;
            continue;
        }
        match (p.mode().clone(), c) {
            (Mode::Comment, '\n') => {
                p.stack.pop();
                continue;
            }
            (Mode::Comment, _) => {}
            (Mode::Single, '\'') | (Mode::Double, '"') => {
                p.stack.pop();
            }
            (Mode::Single, _) => {}
            (Mode::AnsiC | Mode::Double, '\\') => {
                p.out.push(c);
                p.out.extend(next);
                i += 2;
                continue;
            }
            (Mode::AnsiC, '\'') => {
                p.stack.pop();
            }
            (Mode::AnsiC, _) => {}
            (Mode::Double, '`') => p.stack.push(Mode::Plain {
                parens: 0,
                backtick: true,
            }),
            (Mode::Double, _) => {}
            (Mode::Plain { parens, backtick }, _) => {
                let was_word_start = p.word_start;
                // Where a `#` would start a comment: not after `{`, which
                // `${#var}` uses.
                p.word_start = c.is_whitespace() || ";|&()".contains(c);
                match c {
                    '\\' => {
                        p.out.push(c);
                        p.out.extend(next);
                        i += 2;
                        continue;
                    }
                    '\'' => p.stack.push(Mode::Single),
                    '"' => p.stack.push(Mode::Double),
                    '$' if next == Some('\'') => {
                        p.out.push_str("$'");
                        p.stack.push(Mode::AnsiC);
                        i += 2;
                        continue;
                    }
                    '`' if backtick => {
                        p.stack.pop();
                    }
                    '`' => p.stack.push(Mode::Plain {
                        parens: 0,
                        backtick: true,
                    }),
                    '(' => {
                        if let Some(Mode::Plain { parens, .. }) = p.stack.last_mut() {
                            *parens += 1;
                        }
                    }
                    ')' if parens > 0 => {
                        if let Some(Mode::Plain { parens, .. }) = p.stack.last_mut() {
                            *parens -= 1;
                        }
                    }
                    // The `)` closing a `$(`.
                    ')' if !p.stack.is_empty() && !backtick => {
                        p.stack.pop();
                    }
                    '#' if was_word_start => p.stack.push(Mode::Comment),
                    '<' if next == Some('<') && chars.get(i + 2) != Some(&'<') => {
                        if let Some((doc, len)) = heredoc(&chars[i + 2..]) {
                            p.out.extend(&chars[i..i + 2 + len]);
                            p.pending.push(doc);
                            i += 2 + len;
                            continue;
                        }
                    }
                    '\n' if !p.pending.is_empty() => {
                        p.out.push('\n');
                        let doc = p.pending.remove(0);
                        p.stack.push(doc);
                        i += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            (Mode::Heredoc { .. }, _) => {}
        }
        p.out.push(c);
        i += 1;
    }
    Ok(Script {
        text: p.out,
        env: p.env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(template: &str, value: &str) -> Script {
        let rendered = template.replace('§', &mark(value));
        place(&rendered).expect("placed")
    }

    #[test]
    fn unquoted_values_are_quoted() {
        let s = placed("echo §", "$(touch x)");
        assert_eq!(s.text, "echo '$(touch x)'");
        assert!(s.env.is_empty());
    }

    #[test]
    fn double_quoted_values_become_variables() {
        let s = placed("echo \"v=§\" >> f", "$(touch x)");
        assert_eq!(s.text, "echo \"v=${GANGER_TPL_1}\" >> f");
        assert_eq!(
            s.env,
            vec![("GANGER_TPL_1".to_owned(), "$(touch x)".to_owned())]
        );
    }

    #[test]
    fn single_quoted_values_close_and_reopen() {
        assert_eq!(placed("echo 'v=§!'", "a'b").text, "echo 'v='\"a'b\"'!'");
    }

    #[test]
    fn heredocs() {
        let s = placed("cat <<EOF\nname=§\nEOF\necho §", "`id`");
        assert_eq!(s.text, "cat <<EOF\nname=${GANGER_TPL_1}\nEOF\necho '`id`'");
        let s = placed("cat <<-'EOF'\n\tname=§\n\tEOF\n", "$x");
        assert_eq!(s.text, "cat <<-'EOF'\n\tname=$x\n\tEOF\n");
        let err = place(&"cat <<'EOF'\n§\nEOF\n".replace('§', &mark("x\nEOF\nrm -rf /")))
            .expect_err("ends heredoc");
        assert!(err.message.contains("would end the heredoc"));
    }

    #[test]
    fn comments_cannot_gain_lines() {
        assert_eq!(
            placed("# deploying §\necho ok", "v\nrm -rf /").text,
            "# deploying 'v rm -rf /'\necho ok"
        );
    }

    #[test]
    fn command_substitution_inside_double_quotes_is_unquoted() {
        assert_eq!(
            placed("echo \"$(printf %s §)\"", "a b").text,
            "echo \"$(printf %s 'a b')\""
        );
    }

    #[test]
    fn shell_length_and_arithmetic_are_left_alone() {
        let s = placed("a=(1 2)\necho ${#a[@]} $((1 + 2)) # it's §", "x");
        assert_eq!(s.text, "a=(1 2)\necho ${#a[@]} $((1 + 2)) # it's x");
        let s = placed("echo ${#a[@]} §", "; touch x");
        assert_eq!(s.text, "echo ${#a[@]} '; touch x'");
    }
}

//! Places interpolated values into a shell script so that no value can
//! ever run as shell code.
//!
//! A value never enters the script as text. Each one travels in an
//! environment variable `GANGER_TPL_n`, and the script gets the expansion
//! `${GANGER_TPL_n+"${GANGER_TPL_n}"}`: bash never parses the result of an
//! expansion as code, and this form is quoted the same unquoted, inside
//! `"…"`, in heredocs and in arithmetic (checked under bash and dash), so it
//! is never split into several arguments or globbed, whatever the context.
//! The small model of shell quoting below is needed only for single quotes,
//! where nothing expands (the quote is closed around the expansion and
//! reopened), and for quoted heredocs (a value is refused there): a misread
//! of bash's large grammar can cost exactness, not safety.
//!
//! Bash itself evaluates variables in some places: arithmetic and array
//! subscripts (`$(( v ))`, `[[ v -eq 1 ]]`), `declare -a`/`-A` array
//! assignments, indirection (`${!v}`), `test -v`, prompt expansion (`PS4`,
//! `${v@P}`), and text it runs again (`eval`, `trap`, `alias`, `mapfile -C`,
//! `bash -c`). That holds for every variable, `GANGER_PARAM_*` included; the
//! README says so.

use crate::template::TemplateError;

pub(crate) const MARK_START: char = '\u{1}';
pub(crate) const MARK_END: char = '\u{2}';

/// Largest value passed in a variable: Linux refuses a single environment
/// string over 128 KiB at exec.
const MAX_VALUE: usize = 120 * 1024;

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
    /// `$(( … ))` or `(( … ))`: `<<` is a shift there, not a heredoc;
    /// `parens` counts `(` opened inside.
    Arith {
        parens: usize,
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

    /// Passes a value in the next `GANGER_TPL_n` variable; returns its name.
    fn bind(&mut self, value: String) -> String {
        let name = format!("GANGER_TPL_{}", self.env.len() + 1);
        self.env.push((name.clone(), value));
        name
    }

    fn place(&mut self, value: String) -> Result<(), TemplateError> {
        if value.contains('\0') {
            return Err(error(
                "a value with a NUL byte cannot be put in a shell script".into(),
            ));
        }
        if value.len() > MAX_VALUE {
            return Err(error(format!(
                "a value of {} bytes is too large to pass to a script (at most {MAX_VALUE}); write it to a file and pass its path",
                value.len()
            )));
        }
        let mode = self.mode().clone();
        if let Mode::Heredoc {
            expand: false,
            delimiter,
            ..
        } = &mode
        {
            return Err(error(format!(
                "a value cannot be put inside the quoted heredoc `{delimiter}`: bash expands nothing there, so ganger cannot pass it safely; if the heredoc is read as text, unquote its delimiter (<<{delimiter}); if it is a script for another shell (bash <<'{delimiter}', ssh … <<'{delimiter}'), do not template into it: pass the value as an argument or a file"
            )));
        }
        // A backslash just before the value could escape its `$` (bash
        // halves backslashes inside backticks, which may hide in heredocs or
        // arithmetic), unpairing the quotes so the value splits. Refused
        // rather than counted: outside single quotes, no value follows a
        // backslash.
        if !matches!(mode, Mode::Single) && self.out.ends_with('\\') {
            return Err(error(
                "a value cannot follow a backslash (as in `\\{{ x }}`): a backslash could escape how ganger passes it; put the backslash into the value, or separate them (e.g. `\\\\\"{{ x }}\"`)".into(),
            ));
        }
        // `${{ x }}` means a dollar sign and then the value, not `$${…}`.
        if !matches!(mode, Mode::Single | Mode::AnsiC) && ends_with_unescaped_dollar(&self.out) {
            self.out.pop();
            self.out.push_str("\\$");
        }
        let name = self.bind(value);
        let expansion = format!("${{{name}+\"${{{name}}}\"}}");
        let text = match mode {
            Mode::Single => format!("'{expansion}'"),
            Mode::AnsiC => format!("'{expansion}$'"),
            _ => expansion,
        };
        self.out.push_str(&text);
        self.word_start = false;
        Ok(())
    }
}

/// Whether the text ends with a `$` that is not escaped by a backslash.
fn ends_with_unescaped_dollar(out: &str) -> bool {
    let Some(before) = out.strip_suffix('$') else {
        return false;
    };
    let backslashes = before.chars().rev().take_while(|&c| c == '\\').count();
    backslashes % 2 == 0
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

/// Copies a backslash and the character it escapes; a value mark is not
/// escapable text and is left to be placed. Returns the characters consumed.
fn escape(out: &mut String, next: Option<char>) -> usize {
    out.push('\\');
    match next {
        Some(n) if n != MARK_START => {
            out.push(n);
            2
        }
        _ => 1,
    }
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
            // `<<$'EOF'`: the delimiter is EOF.
            '$' if matches!(rest.get(i + 1), Some('\'' | '"')) => i += 1,
            MARK_START => return None,
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
        let unquoted = matches!(p.mode(), Mode::Plain { .. });
        // `$((` and a command-position `((` open arithmetic, where `<<` shifts.
        let arith_open = if c == '$' && next == Some('(') && chars.get(i + 2) == Some(&'(') {
            Some(3)
        } else if c == '(' && next == Some('(') && unquoted && p.word_start {
            Some(2)
        } else {
            None
        };
        if let Some(len) =
            arith_open.filter(|_| matches!(p.mode(), Mode::Plain { .. } | Mode::Double))
        {
            p.out.extend(&chars[i..i + len]);
            p.stack.push(Mode::Arith { parens: 0 });
            i += len;
            continue;
        }
        if let Mode::Arith { parens } = p.mode().clone() {
            match c {
                '(' => {
                    if let Some(Mode::Arith { parens }) = p.stack.last_mut() {
                        *parens += 1;
                    }
                }
                ')' if parens > 0 => {
                    if let Some(Mode::Arith { parens }) = p.stack.last_mut() {
                        *parens -= 1;
                    }
                }
                ')' if next == Some(')') => {
                    p.out.push_str("))");
                    p.stack.pop();
                    i += 2;
                    continue;
                }
                _ => {}
            }
            p.out.push(c);
            i += 1;
            continue;
        }
        // `<<<` is a here-string, not a heredoc.
        if unquoted && c == '<' && next == Some('<') && chars.get(i + 2) == Some(&'<') {
            p.out.push_str("<<<");
            i += 3;
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
                i += escape(&mut p.out, next);
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
                        i += escape(&mut p.out, next);
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
                    '<' if next == Some('<') => {
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
            (Mode::Heredoc { .. } | Mode::Arith { .. }, _) => {}
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

    /// The expansion of the n-th value.
    fn r(n: usize) -> String {
        format!("${{GANGER_TPL_{n}+\"${{GANGER_TPL_{n}}}\"}}")
    }

    #[test]
    fn values_travel_in_variables_whatever_the_context() {
        let s = placed("echo §", "$(touch x)");
        assert_eq!(s.text, format!("echo {}", r(1)));
        assert_eq!(
            s.env,
            vec![("GANGER_TPL_1".to_owned(), "$(touch x)".to_owned())]
        );
        assert_eq!(
            placed("echo \"v=§\"", "x").text,
            format!("echo \"v={}\"", r(1))
        );
        assert_eq!(
            placed("echo 'v=§!'", "x").text,
            format!("echo 'v='{}'!'", r(1))
        );
        assert_eq!(
            placed("echo $'v=§'", "x").text,
            format!("echo $'v='{}$''", r(1))
        );
        assert_eq!(
            placed("cat <<EOF\nname=§\nEOF\necho §", "x").text,
            format!("cat <<EOF\nname={}\nEOF\necho {}", r(1), r(2))
        );
        assert_eq!(
            placed("# deploying §\necho ok", "v\nrm").text,
            format!("# deploying {}\necho ok", r(1))
        );
        assert_eq!(
            placed("echo $((1 << §))\necho §", "2").text,
            format!("echo $((1 << {}))\necho {}", r(1), r(2))
        );
    }

    #[test]
    fn quoted_heredocs_refuse_values() {
        let err = place(&"cat <<'EOF'\n§\nEOF\n".replace('§', &mark("x"))).expect_err("refused");
        assert!(err.message.contains("quoted heredoc"), "{err}");
    }

    #[test]
    fn here_strings_and_shifts_are_not_heredocs() {
        assert_eq!(
            placed("cat <<< \"hi\"\necho §", "x").text,
            format!("cat <<< \"hi\"\necho {}", r(1))
        );
        assert_eq!(
            placed("(( n = 1 << \"2\" ))\necho §", "x").text,
            format!("(( n = 1 << \"2\" ))\necho {}", r(1))
        );
        assert_eq!(
            placed("cat <<$'EOF'\nhi\nEOF\necho §", "x").text,
            format!("cat <<$'EOF'\nhi\nEOF\necho {}", r(1))
        );
    }

    #[test]
    fn a_dollar_before_a_value_stays_a_dollar() {
        assert_eq!(
            placed("echo \"price: $§\"", "5").text,
            format!("echo \"price: \\${}\"", r(1))
        );
        assert_eq!(
            placed("echo \"\\\\$§\"", "5").text,
            format!("echo \"\\\\\\${}\"", r(1))
        );
        assert_eq!(placed("echo \\$§", "5").text, format!("echo \\${}", r(1)));
    }

    #[test]
    fn a_value_after_a_backslash_is_refused() {
        for template in [
            "echo \"C:\\§\"",
            "echo \\\\§",
            "cat <<EOF\n`echo \"\\§\"`\nEOF",
            "echo $'a\\§'",
        ] {
            let err = place(&template.replace('§', &mark("x"))).expect_err(template);
            assert!(err.message.contains("backslash"), "{err}");
        }
        // In single quotes a backslash is plain text.
        assert_eq!(
            placed("echo 'C:\\§'", "x").text,
            format!("echo 'C:\\'{}''", r(1))
        );
    }

    #[test]
    fn shell_length_is_not_a_comment() {
        assert_eq!(
            placed("echo ${#a[@]} §", "x").text,
            format!("echo ${{#a[@]}} {}", r(1))
        );
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = "x".repeat(MAX_VALUE + 1);
        let err = place(&format!("echo {}", mark(&big))).expect_err("too large");
        assert!(err.message.contains("too large"), "{err}");
    }
}

//! Jinja templates (minijinja, strict mode) in job files.
//!
//! Values interpolated into a `run` or `undo` script are shell-quoted, so a
//! parameter can never inject shell syntax; `{{ x | raw }}` opts out. Other
//! fields (`env` values, `if`, `concurrency_key`, …) render as plain text.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::syntax::SyntaxConfig;

use crate::shell::{self, Script};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// The roots a template may name; anything else is a typo.
pub const ROOTS: &[&str] = &["params", "env", "run", "job", "tasks", "secrets", "item"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A shell script: interpolated values are shell-quoted.
    Shell,
    /// Plain text: values are inserted as they are.
    Text,
    /// A condition: either a bare expression (`params.env == 'prod'`) or a
    /// template that renders `true` or `false`.
    Condition,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// 1-based line within the template, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl TemplateError {
    /// `source` is the template the error came from: an undefined value is
    /// named by the expression that read it, which minijinja only locates.
    fn from_jinja(e: &Error, source: &str) -> TemplateError {
        let message = match (e.kind(), e.detail()) {
            (_, Some(detail)) if e.kind() == ErrorKind::UndefinedError => detail.to_owned(),
            (ErrorKind::UndefinedError, None) => {
                let expr = e
                    .range()
                    .and_then(|r| source.get(r))
                    .map(str::trim)
                    .filter(|x| !x.is_empty());
                match expr {
                    Some(expr) => format!("`{expr}` is undefined"),
                    None => "undefined value".to_owned(),
                }
            }
            (kind, Some(detail)) => format!("{kind}: {detail}"),
            (kind, None) => kind.to_string(),
        };
        TemplateError {
            line: e.line(),
            message,
        }
    }
}

fn environment(flavor: Flavor) -> &'static Environment<'static> {
    static SHELL: OnceLock<Environment<'static>> = OnceLock::new();
    static TEXT: OnceLock<Environment<'static>> = OnceLock::new();
    let (cell, shell) = match flavor {
        Flavor::Shell => (&SHELL, true),
        Flavor::Text | Flavor::Condition => (&TEXT, false),
    };
    cell.get_or_init(|| {
        let mut env = Environment::new();
        // `{#` opens a Jinja comment, but shell writes it all the time
        // (`${#array[@]}`), so comments are `{## … ##}` instead.
        if let Ok(syntax) = SyntaxConfig::builder()
            .comment_delimiters("{##", "##}")
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_recursion_limit(64);
        env.add_filter("raw", |v: Value| Value::from_safe_string(v.to_string()));
        if shell {
            env.set_auto_escape_callback(|_| AutoEscape::Custom("shell".into()));
            // Values are marked here and placed by `shell::place`, which
            // knows whether they stand inside quotes, heredocs or comments.
            env.set_formatter(|out, state, value| {
                // Whatever `{% autoescape %}` a template sets: only `| raw`
                // (or `| safe`) lets text into a script.
                if value.is_safe() {
                    minijinja::escape_formatter(out, state, value)
                } else {
                    out.write_str(&shell::mark(&value.to_string()))
                        .map_err(Error::from)
                }
            });
        }
        env
    })
}

/// Whether `source` holds any Jinja syntax; anything else is plain text.
pub(crate) fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{##")
}

fn is_bare_expression(flavor: Flavor, source: &str) -> bool {
    flavor == Flavor::Condition && !is_template(source)
}

/// Compiles a template and returns the variables it reads from the outside,
/// as dotted paths (`params.branch`, `tasks.test.outputs.version`).
pub fn variables(flavor: Flavor, source: &str) -> Result<BTreeSet<String>, TemplateError> {
    let env = environment(flavor);
    let vars = if is_bare_expression(flavor, source) {
        env.compile_expression(source)
            .map_err(|e| TemplateError::from_jinja(&e, source))?
            .undeclared_variables(true)
    } else if !is_template(source) {
        return Ok(BTreeSet::new());
    } else {
        env.template_from_str(source)
            .map_err(|e| TemplateError::from_jinja(&e, source))?
            .undeclared_variables(true)
    };
    Ok(vars.into_iter().collect())
}

/// Renders a text field (not a script: see [`render_script`]).
pub fn render(flavor: Flavor, source: &str, ctx: &Value) -> Result<String, TemplateError> {
    if !is_template(source) {
        return Ok(source.to_owned());
    }
    environment(flavor)
        .render_str(source, ctx)
        .map_err(|e| TemplateError::from_jinja(&e, source))
}

/// Renders a `run` or `undo` script: every value lands where the shell can
/// only read it as data, some as variables returned in [`Script::env`].
pub fn render_script(source: &str, ctx: &Value) -> Result<Script, TemplateError> {
    if !is_template(source) {
        return Ok(Script {
            text: source.to_owned(),
            env: Vec::new(),
        });
    }
    if source.contains([shell::MARK_START, shell::MARK_END]) {
        return Err(TemplateError {
            line: None,
            message:
                "the script contains the control characters U+0001 or U+0002, which ganger reserves"
                    .into(),
        });
    }
    let rendered = environment(Flavor::Shell)
        .render_str(source, ctx)
        .map_err(|e| TemplateError::from_jinja(&e, source))?;
    shell::place(&rendered)
}

/// Evaluates an `if:` condition.
pub fn condition(source: &str, ctx: &Value) -> Result<bool, TemplateError> {
    if is_bare_expression(Flavor::Condition, source) {
        let env = environment(Flavor::Condition);
        let expr = env
            .compile_expression(source)
            .map_err(|e| TemplateError::from_jinja(&e, source))?;
        return expr
            .eval(ctx)
            .map(|v| v.is_true())
            .map_err(|e| TemplateError::from_jinja(&e, source));
    }
    let text = render(Flavor::Condition, source, ctx)?;
    match text.trim() {
        t if t.eq_ignore_ascii_case("true") => Ok(true),
        t if t.eq_ignore_ascii_case("false") || t.is_empty() => Ok(false),
        other => Err(TemplateError {
            line: None,
            message: format!("`if` rendered `{other}`; it must render `true` or `false`"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn shell_values_are_quoted_unless_raw() {
        let ctx = context! { params => context! { name => "a b; touch /tmp/x", safe => "main" } };
        let out = render_script("echo {{ params.name }} {{ params.safe }}", &ctx).expect("renders");
        assert_eq!(
            out.text,
            "echo ${GANGER_TPL_1+\"${GANGER_TPL_1}\"} ${GANGER_TPL_2+\"${GANGER_TPL_2}\"}"
        );
        assert_eq!(out.env[0].1, "a b; touch /tmp/x");
        let raw = render_script("echo {{ params.name | raw }}", &ctx).expect("renders");
        assert_eq!(raw.text, "echo a b; touch /tmp/x");
    }

    #[test]
    fn command_substitution_is_quoted() {
        let ctx = context! { params => context! { v => "$(touch /tmp/x)" } };
        let out = render_script("echo {{ params.v }}", &ctx).expect("renders");
        assert_eq!(out.text, "echo ${GANGER_TPL_1+\"${GANGER_TPL_1}\"}");
        let quoted = render_script("echo \"v={{ params.v }}\"", &ctx).expect("renders");
        assert_eq!(
            quoted.text,
            "echo \"v=${GANGER_TPL_1+\"${GANGER_TPL_1}\"}\""
        );
        let escaped = render_script(
            "{% autoescape false %}echo {{ params.v }}{% endautoescape %}",
            &ctx,
        )
        .expect("renders");
        assert_eq!(
            escaped.text, "echo ${GANGER_TPL_1+\"${GANGER_TPL_1}\"}",
            "autoescape cannot let values in as text"
        );
        assert_eq!(
            quoted.env,
            vec![("GANGER_TPL_1".to_owned(), "$(touch /tmp/x)".to_owned())]
        );
    }

    #[test]
    fn text_is_not_quoted() {
        let ctx = context! { params => context! { name => "a b" } };
        assert_eq!(
            render(Flavor::Text, "x-{{ params.name }}", &ctx).expect("renders"),
            "x-a b"
        );
    }

    #[test]
    fn strict_undefined_is_an_error() {
        let ctx = context! { params => context! {} };
        let err = render_script("echo\n{{ params.missing }}", &ctx).expect_err("undefined");
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("undefined"), "{err}");
    }

    #[test]
    fn variables_are_dotted_paths() {
        let vars = variables(
            Flavor::Shell,
            "{{ params.a }} {{ tasks.b.outputs.c }} {% for x in [1] %}{{ x }}{% endfor %}",
        )
        .expect("compiles");
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            vec!["params.a".to_owned(), "tasks.b.outputs.c".to_owned()]
        );
    }

    #[test]
    fn shell_length_syntax_is_not_a_comment() {
        let ctx = context! { params => context! { n => "3" } };
        let script = "a=(x y)\necho ${#a[@]} {{ params.n }} {## a real comment ##}";
        assert_eq!(
            render_script(script, &ctx).expect("renders").text,
            "a=(x y)\necho ${#a[@]} ${GANGER_TPL_1+\"${GANGER_TPL_1}\"} "
        );
    }

    #[test]
    fn conditions() {
        let ctx = context! { params => context! { env => "prod" } };
        assert_eq!(condition("params.env == 'prod'", &ctx), Ok(true));
        assert_eq!(condition("{{ params.env == 'dev' }}", &ctx), Ok(false));
        assert!(condition("{{ params.env }}", &ctx).is_err());
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = variables(Flavor::Shell, "echo {{ params.a ").expect_err("syntax");
        assert_eq!(err.line, Some(1));
    }
}

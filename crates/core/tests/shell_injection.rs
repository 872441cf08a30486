//! A parameter can never inject shell syntax, wherever a script puts it:
//! rendered scripts run under real bash with hostile values, and must print
//! each value exactly and run nothing else.

use std::collections::BTreeMap;
use std::process::Command;

use ganger_core::template::render_script;
use minijinja::Value;

const HOSTILE: &[&str] = &[
    "$(touch {F})",
    "`touch {F}`",
    "'; touch {F}; '",
    "\"; touch {F}; \"",
    "a b  c",
    "*",
    "$HOME",
    "back\\slash",
    "line1\ntouch {F}",
    "${IFS}touch${IFS}{F}",
    "ünïcödé ✓",
    "",
    "`;touch {F};echo `",
    "\\$(touch {F})\\",
    "\"'$(touch {F})'\"",
    "x\nEOF\ntouch {F}",
    "x -o -exec touch {F} ; -o -name x",
];

/// (template, what it prints around the value) for each place a value can stand.
const CONTEXTS: &[(&str, &str, &str)] = &[
    (
        "{% autoescape false %}printf '%s|' {{ params.v }}{% endautoescape %}",
        "",
        "|",
    ),
    ("printf '%s|' {{ params.v }}", "", "|"),
    ("printf '%s|' \"{{ params.v }}\"", "", "|"),
    ("printf '%s|' \"pre {{ params.v }} post\"", "pre ", " post|"),
    ("printf '%s|' 'pre {{ params.v }} post'", "pre ", " post|"),
    (
        "printf '%s|' \"pre $(printf %s {{ params.v }}) post\"",
        "pre ",
        " post|",
    ),
    ("printf '%s|' $'pre {{ params.v }} post'", "pre ", " post|"),
    (
        "cat <<EOF\npre {{ params.v }} post|\nEOF",
        "pre ",
        " post|\n",
    ),
    (
        "cat <<-EOF\n\tpre {{ params.v }} post|\n\tEOF",
        "pre ",
        " post|\n",
    ),
    (
        "cat <<< \"hi\" >/dev/null\nprintf '%s|' {{ params.v }}",
        "",
        "|",
    ),
    ("printf '%s|' \"${NAME:-\"{{ params.v }}\"}\"", "", "|"),
    ("printf '%s|' \"`printf %s {{ params.v }}`\"", "", "|"),
    (
        "printf '%s' $((1 << \"2\"))\nprintf '%s|' {{ params.v }}",
        "4",
        "|",
    ),
    ("printf '%s|' \"price: ${{ params.v }}\"", "price: $", "|"),
    (
        "cat <<$'EOF'\nhi\nEOF\nprintf '%s|' {{ params.v }}",
        "hi\n",
        "|",
    ),
    ("# a comment: {{ params.v }}\nprintf 'ok|'", "", "ok|"),
    ("a=(1 2)\nprintf '%s|' ${#a[@]}{{ params.v }}", "2", "|"),
    ("printf '%s|' $((1 << 2)){{ params.v }}", "4", "|"),
    ("printf '%s|' ${HOME:+\"{{ params.v }}\"}", "", "|"),
    (
        "x=1; case $x in 1) printf '%s|' {{ params.v }};; esac",
        "",
        "|",
    ),
    ("printf '%s|' \"$( (printf %s {{ params.v }}) )\"", "", "|"),
];

/// Constructs the quoting model reads imperfectly: the value may arrive
/// inexactly there, but it must never run.
const HARD_CONTEXTS: &[&str] = &[
    "b=$(cat <<EOF\nhi\nEOF)\nfind . -maxdepth 0 -name {{ params.v }}",
    "n=$[1<<3]\nfind . -maxdepth 0 -name {{ params.v }}",
    ": ${X:-a #b}; find . -maxdepth 0 -name {{ params.v }}",
    "[[ x =~ ^(#|x) ]]; find . -maxdepth 0 -name {{ params.v }}",
    "y=\"$(case a in a) find . -maxdepth 0 -name {{ params.v }};; esac)\"",
    "echo `#it's`; find . -maxdepth 0 -name \"{{ params.v }}\"",
    ": \"${X#\"'\"}\"; find . -maxdepth 0 -name \"{{ params.v }}\"",
    "printf '%s|' `printf %s {{ params.v }}`",
    "printf '%s|' \"$(case a in a) printf %s \"{{ params.v }}\";; esac)\"",
    "printf '%s|' \"$(echo ${x%)} \"{{ params.v }}\")\"",
    "echo start \\\n# don't panic\nprintf '%s|' {{ params.v }}",
    "printf '%s|' ${X:-a #b} \"{{ params.v }}\"",
    "[[ \"#\" =~ (#) ]] && printf '%s|' \"{{ params.v }}\"",
    "cat <<EOF\na\\\nEOF\n{{ params.v }}\nEOF",
    "printf '%s|' \"`printf %s \\\"{{ params.v }}\\\"`\"",
    "printf '%s|' `#it's` {{ params.v }}",
];

/// What bash printed for a rendered template, and the script it ran.
struct Ran {
    stdout: String,
    stderr: String,
    script: String,
}

fn run_bash(template: &str, value: &str) -> Ran {
    let params = BTreeMap::from([("v", value)]);
    let ctx = Value::from_pairs([("params", Value::from_pairs(params))]);
    let script = render_script(template, &ctx)
        .unwrap_or_else(|e| panic!("{template:?} with {value:?}: {e}"));
    let out = Command::new("bash")
        .args(["-eo", "pipefail", "-c", &script.text])
        .envs(script.env.iter().map(|(k, v)| (k, v)))
        .env("HOME", "/home/nobody")
        .output()
        .expect("bash runs");
    Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        script: script.text,
    }
}

#[test]
fn no_value_runs_even_where_placement_is_inexact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let witness = dir.path().join("pwned");
    let witness_str = witness.display().to_string();
    for template in HARD_CONTEXTS {
        for hostile in HOSTILE {
            let value = hostile.replace("{F}", &witness_str);
            let ran = run_bash(template, &value);
            assert!(
                !witness.exists(),
                "{template:?} with {value:?} ran code: script {:?}",
                ran.script
            );
        }
    }
}

#[test]
fn no_value_escapes_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let witness = dir.path().join("pwned");
    let witness_str = witness.display().to_string();
    for (template, before, after) in CONTEXTS {
        for hostile in HOSTILE {
            let value = hostile.replace("{F}", &witness_str);
            let ran = run_bash(template, &value);
            assert!(
                !witness.exists(),
                "{template:?} with {value:?} ran code: script {:?}",
                ran.script
            );
            let expected = if template.starts_with('#') {
                (*after).to_owned()
            } else {
                format!("{before}{value}{after}")
            };
            assert_eq!(
                ran.stdout, expected,
                "{template:?} with {value:?}: script {:?}, stderr {}",
                ran.script, ran.stderr
            );
        }
    }
}

#[test]
fn quoted_heredocs_refuse_values() {
    let ctx = Value::from_pairs([("params", Value::from_pairs([("v", "anything")]))]);
    let err = render_script("cat <<'EOF'\n{{ params.v }}\nEOF", &ctx).expect_err("refused");
    assert!(err.message.contains("quoted heredoc"), "{err}");
}

#[test]
fn values_after_a_backslash_are_refused() {
    let ctx = Value::from_pairs([(
        "params",
        Value::from_pairs([("v", "x -o -exec touch PWN ; -o -name x")]),
    )]);
    for template in [
        "find . -name \"C:\\Users\\{{ params.v }}\"",
        "cat <<EOF\n`find . -name \"\\{{ params.v }}\"`\nEOF",
        "echo $(( `find . -name \"\\{{ params.v }}\" | wc -l` ))",
        "echo \\\\{{ params.v }}",
    ] {
        let err = render_script(template, &ctx).expect_err(template);
        assert!(err.message.contains("backslash"), "{template:?}: {err}");
    }
}

//! Black-box tests of `ganger validate`: one fixture per error kind, each
//! error at its exact `file:line:col`, and every valid fixture and example
//! accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Output, examples, fixtures, ganger, output};

/// `ganger validate FILE...` run from `dir`, so messages name files as given.
fn validate(dir: &Path, files: &[&str]) -> Output {
    let mut cmd = ganger();
    cmd.current_dir(dir).arg("validate").args(files);
    output(cmd)
}

fn invalid(file: &str) -> Output {
    validate(&fixtures().join("invalid"), &[file])
}

/// One expected diagnostic: `file:line:col: path: ...fragment...`.
struct Expect<'a> {
    line: u32,
    col: u32,
    path: &'a str,
    fragment: &'a str,
}

const fn at<'a>(line: u32, col: u32, path: &'a str, fragment: &'a str) -> Expect<'a> {
    Expect {
        line,
        col,
        path,
        fragment,
    }
}

/// Asserts exit code 1 and that the diagnostics for `file` on stderr are
/// exactly `expected` (in any order).
fn assert_diagnostics(file: &str, out: &Output, expected: &[Expect<'_>]) {
    assert_eq!(out.code(), 1, "validate must exit 1\n{out}");
    let mut lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")))
        .collect();
    for e in expected {
        let prefix = if e.path.is_empty() {
            format!("{file}:{}:{}: ", e.line, e.col)
        } else {
            format!("{file}:{}:{}: {}: ", e.line, e.col, e.path)
        };
        let found = lines
            .iter()
            .position(|l| l.starts_with(&prefix) && l[prefix.len()..].contains(e.fragment));
        match found {
            Some(i) => {
                lines.remove(i);
            }
            None => panic!("expected `{prefix}...{}...`\n{out}", e.fragment),
        }
    }
    assert!(
        lines.is_empty(),
        "unexpected diagnostics: {lines:#?}\n{out}"
    );
}

#[test]
fn unknown_key() {
    let out = invalid("unknown_key.yml");
    assert_diagnostics(
        "unknown_key.yml",
        &out,
        &[at(
            7,
            9,
            "jobs.build.tasks.compile.retires",
            "unknown key `retires`",
        )],
    );
}

#[test]
fn unknown_need() {
    let out = invalid("unknown_need.yml");
    assert_diagnostics(
        "unknown_need.yml",
        &out,
        &[at(
            8,
            26,
            "jobs.build.tasks.test.needs[1]",
            "unknown task `lint`",
        )],
    );
}

#[test]
fn self_need() {
    let out = invalid("self_need.yml");
    assert_diagnostics(
        "self_need.yml",
        &out,
        &[at(
            10,
            11,
            "jobs.build.tasks.test.needs.test",
            "cannot depend on itself",
        )],
    );
}

#[test]
fn cycle() {
    let out = invalid("cycle.yml");
    assert_diagnostics(
        "cycle.yml",
        &out,
        &[at(
            9,
            17,
            "jobs.loop.tasks.b.needs[0]",
            "dependency cycle: `a` needs `c`, `c` needs `b`, `b` needs `a`",
        )],
    );
}

#[test]
fn duplicate_task() {
    let out = invalid("duplicate_task.yml");
    assert_diagnostics(
        "duplicate_task.yml",
        &out,
        &[at(
            9,
            7,
            "jobs.build.tasks.compile",
            "duplicate task `compile`",
        )],
    );
}

#[test]
fn bad_duration() {
    let out = invalid("bad_duration.yml");
    assert_diagnostics(
        "bad_duration.yml",
        &out,
        &[at(
            7,
            18,
            "jobs.build.tasks.compile.timeout",
            "is not a duration",
        )],
    );
}

#[test]
fn bad_size() {
    let out = invalid("bad_size.yml");
    assert_diagnostics(
        "bad_size.yml",
        &out,
        &[at(
            7,
            37,
            "jobs.build.tasks.compile.resources.memory",
            "`12Q` is not a size",
        )],
    );
}

#[test]
fn bad_cron() {
    let out = invalid("bad_cron.yml");
    assert_diagnostics(
        "bad_cron.yml",
        &out,
        &[at(
            4,
            15,
            "jobs.nightly.schedule",
            "invalid cron expression",
        )],
    );
}

#[test]
fn template_syntax_error() {
    let out = invalid("template_syntax.yml");
    assert_diagnostics(
        "template_syntax.yml",
        &out,
        &[at(
            8,
            14,
            "jobs.build.tasks.compile.run",
            "template does not compile",
        )],
    );
}

#[test]
fn undeclared_param() {
    let out = invalid("undeclared_param.yml");
    assert_diagnostics(
        "undeclared_param.yml",
        &out,
        &[at(
            8,
            14,
            "jobs.build.tasks.compile.run",
            "undeclared param `brnach`",
        )],
    );
}

#[test]
fn pattern_does_not_compile() {
    let out = invalid("bad_pattern.yml");
    assert_diagnostics(
        "bad_pattern.yml",
        &out,
        &[at(
            5,
            41,
            "jobs.build.params.branch.pattern",
            "pattern does not compile",
        )],
    );
}

#[test]
fn several_errors_in_one_run() {
    let out = invalid("many_errors.yml");
    assert_diagnostics(
        "many_errors.yml",
        &out,
        &[
            at(4, 5, "jobs.build.colour", "unknown key `colour`"),
            at(
                6,
                41,
                "jobs.build.params.branch.pattern",
                "pattern does not compile",
            ),
            at(
                9,
                14,
                "jobs.build.tasks.compile.run",
                "undeclared param `tag`",
            ),
            at(
                10,
                18,
                "jobs.build.tasks.compile.timeout",
                "is not a duration",
            ),
            at(
                12,
                26,
                "jobs.build.tasks.test.needs[1]",
                "unknown task `missing`",
            ),
            at(
                13,
                30,
                "jobs.build.tasks.test.resources.memory",
                "is not a size",
            ),
            at(14, 7, "jobs.build.tasks.test", "duplicate task `test`"),
            at(
                17,
                17,
                "jobs.build.tasks.deploy.needs[0]",
                "cannot depend on itself",
            ),
            at(
                18,
                14,
                "jobs.build.tasks.deploy.run",
                "template does not compile",
            ),
        ],
    );
}

#[test]
fn alias_bomb_is_refused_not_expanded() {
    // The common deadline catches an expansion; the message proves the refusal.
    let out = invalid("alias_bomb.yml");
    assert_eq!(out.code(), 1, "\n{out}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("alias_bomb.yml:"))
        .unwrap_or_else(|| panic!("no diagnostic\n{out}"));
    assert!(line.contains("more than 500000 nodes"), "\n{out}");
}

#[test]
fn oversized_file_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("jobs:\n  big:\n    tasks:\n      t:\n        run: \"true\"\n");
    let filler = format!("# {}\n", "x".repeat(1022));
    while text.len() <= 1024 * 1024 {
        text.push_str(&filler);
    }
    std::fs::write(tmp.path().join("big.yml"), &text).expect("write big.yml");
    let out = validate(tmp.path(), &["big.yml"]);
    assert_diagnostics(
        "big.yml",
        &out,
        &[at(1, 1, "", "more than the limit of 1048576 bytes")],
    );
}

#[test]
fn every_file_is_checked_and_the_exit_code_reflects_any_error() {
    let dir = fixtures();
    let out = validate(
        &dir,
        &["outputs.yml", "invalid/unknown_key.yml", "retry.yml"],
    );
    assert_diagnostics(
        "invalid/unknown_key.yml",
        &out,
        &[at(
            7,
            9,
            "jobs.build.tasks.compile.retires",
            "unknown key `retires`",
        )],
    );
}

/// `<file>: job <name>: <n> tasks` (or `1 task`) for each job, exit 0.
fn assert_valid(dir: &Path, files: &[String]) -> Output {
    assert!(!files.is_empty(), "no files in {}", dir.display());
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = validate(dir, &names);
    assert_eq!(out.code(), 0, "\n{out}");
    for f in files {
        assert!(
            out.stdout.lines().any(|l| {
                l.strip_prefix(&format!("{f}: job "))
                    .and_then(|rest| rest.split_once(": "))
                    .and_then(|(_, n)| n.strip_suffix(" tasks").or_else(|| n.strip_suffix(" task")))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            }),
            "no `{f}: job <name>: <n> tasks` line\n{out}"
        );
    }
    out
}

fn yml_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_run_fixture_is_valid() {
    let dir = fixtures();
    let out = assert_valid(&dir, &yml_files(&dir));
    // One line per job.
    for line in [
        "two_jobs.yml: job first: 1 task",
        "two_jobs.yml: job second: 1 task",
        "retry.yml: job twice: 1 task",
        "retry.yml: job once: 1 task",
        "retry.yml: job policy: 1 task",
        "needs_order.yml: job diamond: 4 tasks",
    ] {
        let plural = format!("{line}s");
        assert!(
            out.stdout.lines().any(|l| l == line || l == plural),
            "no `{line}`\n{out}"
        );
    }
}

#[test]
fn every_example_is_valid() {
    let dir = examples();
    assert_valid(&dir, &yml_files(&dir));
}

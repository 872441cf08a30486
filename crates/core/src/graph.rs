//! A job's task graph as Graphviz DOT (`ganger graph`, `GET /api/v1/jobs/{name}/graph`).
//!
//! Edges point from a dependency to its dependant, the direction work flows.
//! An edge whose condition is the default (`success`) carries no label; any
//! other condition is written on the edge (`on failure`, `on exit code 3`)
//! and the edge is dashed, so the happy path reads as solid lines.

use std::fmt::Write;

use crate::model::{Condition, Executor, Job};

/// Renders `job` as a DOT digraph. Every identifier is quoted, so task names
/// need no particular shape to produce a valid graph.
pub fn dot(job: &Job) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "digraph {} {{", quote(&job.name));
    out.push_str("  rankdir=LR;\n");
    out.push_str("  node [shape=box, style=rounded];\n");
    for task in &job.tasks {
        let _ = write!(out, "  {}", quote(&task.name));
        let mut attrs = Vec::new();
        if !matches!(task.executor, Executor::Process) {
            attrs.push(format!(
                "label={}",
                quote(&format!("{}\n({})", task.name, task.executor.name()))
            ));
        }
        if task.always {
            // Clean-up tasks run whatever happened: set them apart.
            attrs.push("peripheries=2".to_owned());
        }
        write_attrs(&mut out, &attrs);
    }
    for task in &job.tasks {
        for need in &task.needs {
            let Some(from) = job.tasks.get(need.task) else {
                // A validated job never holds a dangling edge; drawing what
                // exists beats failing a read-only view.
                continue;
            };
            let _ = write!(out, "  {} -> {}", quote(&from.name), quote(&task.name));
            let mut attrs = Vec::new();
            if need.conditions != [Condition::Success] {
                let label: Vec<String> = need.conditions.iter().map(|c| c.to_string()).collect();
                attrs.push(format!(
                    "label={}",
                    quote(&format!("on {}", label.join(", ")))
                ));
                attrs.push("style=dashed".to_owned());
            }
            write_attrs(&mut out, &attrs);
        }
    }
    out.push_str("}\n");
    out
}

fn write_attrs(out: &mut String, attrs: &[String]) {
    if !attrs.is_empty() {
        let _ = write!(out, " [{}]", attrs.join(", "));
    }
    out.push_str(";\n");
}

/// A DOT double-quoted string. Inside quotes only `"` ends the string, but
/// Graphviz gives backslash sequences meaning in labels (`\n`, `\l`, `\N`),
/// so backslashes are doubled and line breaks become `\n`.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_job_file;

    fn job(yaml: &str) -> Job {
        let mut file =
            parse_job_file("t.yml", yaml).unwrap_or_else(|e| panic!("invalid fixture:\n{e}"));
        file.jobs.remove(0)
    }

    #[test]
    fn default_edges_are_plain_and_conditions_are_labelled() {
        let job = job(r#"
jobs:
  build:
    tasks:
      checkout: { run: "true" }
      test: { needs: [checkout], run: "true" }
      broken: { needs: { test: failure }, run: "true" }
      cleanup: { needs: { test: always }, always: true, run: "true" }
"#);
        assert_eq!(
            dot(&job),
            r#"digraph "build" {
  rankdir=LR;
  node [shape=box, style=rounded];
  "checkout";
  "test";
  "broken";
  "cleanup" [peripheries=2];
  "checkout" -> "test";
  "test" -> "broken" [label="on failure", style=dashed];
  "test" -> "cleanup" [label="on always", style=dashed];
}
"#
        );
    }

    #[test]
    fn exit_code_routes_are_labelled() {
        let job = job(r#"
jobs:
  j:
    tasks:
      probe: { run: "exit 3", on_exit_code: { 3: fix } }
      fix: { run: "true" }
"#);
        let text = dot(&job);
        assert!(
            text.contains(r#""probe" -> "fix" [label="on exit code 3", style=dashed];"#),
            "{text}"
        );
    }

    #[test]
    fn several_conditions_are_joined() {
        let job = job(r#"
jobs:
  j:
    tasks:
      a: { run: "true" }
      b: { needs: { a: [failure, skipped] }, run: "true" }
"#);
        assert!(
            dot(&job).contains(r#""a" -> "b" [label="on failure, skipped", style=dashed];"#),
            "{}",
            dot(&job)
        );
    }

    #[test]
    fn quoting_escapes_what_dot_would_read() {
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote(r"a\b"), r#""a\\b""#);
        assert_eq!(quote("a\nb"), r#""a\nb""#);
        assert_eq!(quote("plain-name_1"), r#""plain-name_1""#);
    }

    #[test]
    fn a_single_task_is_a_valid_graph() {
        let job = job(r#"
jobs:
  lonely:
    tasks:
      only: { run: "true" }
"#);
        assert_eq!(
            dot(&job),
            "digraph \"lonely\" {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n  \"only\";\n}\n"
        );
    }
}

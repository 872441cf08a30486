//! How a local run shows itself: a live table on a terminal, plain lines
//! otherwise, and a summary at the end.

mod describe;
mod live;
mod plain;

use std::io::Write;
use std::path::Path;

use ganger_core::run::{RunState, RunStatus, TaskStatus};

pub(crate) use live::Live;
pub(crate) use plain::Plain;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Stdout,
    Stderr,
}

impl Target {
    pub(crate) fn write(self, text: &str) {
        // A closed pipe (e.g. `| head`) must not abort the run.
        let _ = match self {
            Target::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Target::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }
}

pub(crate) fn summary(run: &RunState, workdir: &Path, target: Target) {
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => describe::duration(f.duration_since(s)),
        _ => "0s".into(),
    };
    let mut counts: Vec<(TaskStatus, usize)> = Vec::new();
    for t in &run.tasks {
        match counts.iter_mut().find(|(s, _)| *s == t.main.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((t.main.status, 1)),
        }
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    let verdict = match run.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Queued | RunStatus::Running => "did not finish",
    };
    let mut text = format!(
        "run {} of job {} {verdict} in {took} ({})\n",
        run.id,
        run.job.name,
        counts.join(", ")
    );
    if let Some(reason) = &run.reason {
        text.push_str(&format!("  reason: {reason}\n"));
    }
    // Compensation that did not complete leaves side effects in place.
    for (t, state) in run.tasks.iter().enumerate() {
        let Some(undo) = state
            .undo
            .as_ref()
            .filter(|u| u.status.is_failure() || u.status == TaskStatus::Cancelled)
        else {
            continue;
        };
        text.push_str(&format!(
            "  undo {}: `{}`",
            undo.status.as_str(),
            run.task_name(t)
        ));
        if let Some(reason) = &undo.reason {
            text.push_str(&format!(" ({reason})"));
        }
        text.push('\n');
    }
    // Log files are created on a task's first line of output.
    let logs = workdir.join(".ganger").join("logs");
    if logs.is_dir() {
        text.push_str(&format!("  logs: {}\n", logs.display()));
    } else {
        text.push_str("  logs: none (no task printed anything)\n");
    }
    target.write(&text);
}

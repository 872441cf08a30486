//! The lines `submit --follow` prints when a run or its tasks change
//! state: `build: running`, `build: succeeded (exit 0)`. Polling sees
//! states, not transitions, so this remembers what was said and says only
//! what changed.

use std::collections::HashMap;

use ganger_api::{RunDetail, TaskRun};
use jiff::Timestamp;

use super::watch::is_terminal;
use super::when::took;

/// One line about a change of state.
pub(crate) struct Change {
    /// The task it is about; `None` for the run.
    pub(crate) task: Option<String>,
    pub(crate) line: String,
    /// The task (or its undo) ended: its log's last lines should come
    /// before this line.
    pub(crate) settles: bool,
}

impl Change {
    fn run(line: String) -> Change {
        Change {
            task: None,
            line,
            settles: false,
        }
    }

    fn task(task: &str, line: String, settles: bool) -> Change {
        Change {
            task: Some(task.to_owned()),
            line,
            settles,
        }
    }
}

/// What has been said about the run and each task.
#[derive(Default)]
pub(crate) struct States {
    run: Option<(String, Option<String>)>,
    tasks: HashMap<String, Said>,
}

#[derive(Default)]
struct Said {
    main: Option<(String, u32)>,
    undo: Option<(String, usize)>,
    /// The newest attempt whose end was accounted for.
    ended: u32,
}

impl States {
    /// Starts knowing that the run's `status` was already printed.
    pub(crate) fn shown(status: Option<String>) -> States {
        States {
            run: status.map(|s| (s, None)),
            tasks: HashMap::new(),
        }
    }

    /// What changed since the last call, one line per change.
    pub(crate) fn changes(&mut self, run: &RunDetail, now: Timestamp) -> Vec<Change> {
        let mut out = Vec::new();
        let run_state = (run.summary.status.clone(), run.waiting.clone());
        // The run's end is said by the summary that follows.
        if self.run.as_ref() != Some(&run_state) && !is_terminal(&run.summary.status) {
            let mut line = format!("run {}: {}", run.summary.id, run.summary.status);
            if let Some(waiting) = &run.waiting {
                line.push_str(&format!(" ({waiting})"));
            }
            out.push(Change::run(line));
        }
        self.run = Some(run_state);
        for t in &run.tasks {
            let said = self.tasks.entry(t.name.clone()).or_default();
            ended_attempts(t, said, &mut out);
            let shown = if t.status == "claimed" {
                "running"
            } else {
                t.status.as_str()
            };
            let key = (shown.to_owned(), t.attempt);
            if said.main.as_ref() != Some(&key) {
                said.main = Some(key);
                if let Some(text) = task_state(t, now) {
                    let settles = is_task_terminal(shown);
                    out.push(Change::task(
                        &t.name,
                        format!("{}: {text}", t.name),
                        settles,
                    ));
                }
            }
            if let Some(undo) = &t.undo {
                let key = (undo.status.clone(), undo.attempts.len());
                if said.undo.as_ref() != Some(&key) {
                    said.undo = Some(key);
                    let text = match undo.status.as_str() {
                        "pending" | "ready" => None,
                        "claimed" | "running" => Some("running".to_owned()),
                        s => Some(outcome(s, undo.exit_code, undo.reason.as_deref())),
                    };
                    if let Some(text) = text {
                        let settles = is_task_terminal(&undo.status);
                        let line = format!("{}:undo: {text}", t.name);
                        out.push(Change::task(&t.name, line, settles));
                    }
                }
            }
        }
        out
    }
}

/// An attempt retried at once is followed by the next one before a poll
/// can see its end: its failure is said from the attempt list.
fn ended_attempts(t: &TaskRun, said: &mut Said, out: &mut Vec<Change>) {
    // The newest attempt's end is the task's own state when the task ended
    // or waits out a retry delay.
    let shown_by_state = is_task_terminal(&t.status) || t.retry_at.is_some();
    for a in &t.attempts {
        if a.number <= said.ended || a.finished_at.is_none() {
            continue;
        }
        said.ended = a.number;
        if !(a.number == t.attempt && shown_by_state) {
            let line = format!(
                "{}: attempt {} {}, retrying",
                t.name,
                a.number,
                outcome(&a.status, a.exit_code, a.reason.as_deref())
            );
            out.push(Change::task(&t.name, line, false));
        }
    }
}

fn is_task_terminal(status: &str) -> bool {
    matches!(
        status,
        "succeeded" | "failed" | "timed_out" | "cancelled" | "skipped" | "lost"
    )
}

/// `succeeded (exit 0)`, `failed (exit 2)`, `timed_out: after 10s`,
/// `skipped: needs …`. A reason that only repeats the exit code is left out.
fn outcome(status: &str, exit_code: Option<i32>, reason: Option<&str>) -> String {
    let mut s = status.to_owned();
    if let Some(code) = exit_code {
        s.push_str(&format!(" (exit {code})"));
    }
    let repeats = |r: &str| exit_code.is_some_and(|c| r == format!("exit code {c}"));
    if let Some(reason) = reason.filter(|r| !r.is_empty() && !repeats(r)) {
        s.push_str(": ");
        s.push_str(reason);
    }
    s
}

/// A task's state in a line, `None` when not worth a line (waiting).
fn task_state(t: &TaskRun, now: Timestamp) -> Option<String> {
    match t.status.as_str() {
        "pending" => {
            let at = t.retry_at?;
            let last = t.attempts.last();
            let failed = outcome(
                last.map_or("failed", |a| a.status.as_str()),
                last.and_then(|a| a.exit_code),
                last.and_then(|a| a.reason.as_deref()),
            );
            // The delay itself, from the failure, when its time is known.
            let since = last.and_then(|a| a.finished_at).unwrap_or(now);
            Some(format!(
                "{failed}; retrying in {} (attempt {})",
                took(at.duration_since(since)),
                t.attempt + 1
            ))
        }
        "ready" => None,
        "claimed" | "running" if t.attempt > 1 => Some(format!("running (attempt {})", t.attempt)),
        "claimed" | "running" => Some("running".into()),
        other => Some(outcome(other, t.exit_code, t.reason.as_deref())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use ganger_api::{AttemptView, RunSummary, UndoView};

    use super::*;

    pub(crate) fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    fn lines(changes: Vec<Change>) -> Vec<String> {
        changes.into_iter().map(|c| c.line).collect()
    }

    pub(crate) fn task(name: &str, status: &str, attempt: u32) -> TaskRun {
        TaskRun {
            name: name.into(),
            status: status.into(),
            attempt,
            exit_code: None,
            reason: None,
            outputs: BTreeMap::new(),
            started_at: None,
            finished_at: None,
            retry_at: None,
            attempts: Vec::new(),
            undo: None,
        }
    }

    fn attempt(number: u32, status: &str, exit: Option<i32>) -> AttemptView {
        AttemptView {
            number,
            status: status.into(),
            exit_code: exit,
            signal: None,
            reason: exit.filter(|c| *c != 0).map(|c| format!("exit code {c}")),
            agent: None,
            started_at: Some(ts("2026-05-01T12:00:00Z")),
            finished_at: (status != "running").then(|| ts("2026-05-01T12:00:01Z")),
            progress: None,
        }
    }

    pub(crate) fn run(status: &str, tasks: Vec<TaskRun>) -> RunDetail {
        RunDetail {
            summary: RunSummary {
                id: "r1".into(),
                job: "build".into(),
                version: 2,
                status: status.into(),
                priority: 0,
                reason: None,
                created_at: ts("2026-05-01T12:00:00Z"),
                scheduled_at: None,
                started_at: Some(ts("2026-05-01T12:00:00Z")),
                finished_at: Some(ts("2026-05-01T12:00:01.5Z")),
            },
            waiting: None,
            params: BTreeMap::new(),
            tasks,
        }
    }

    #[test]
    fn changes_only_are_said() {
        let now = ts("2026-05-01T12:00:02Z");
        let mut states = States::shown(Some("queued".into()));
        let mut a = task("a", "running", 1);
        a.attempts.push(attempt(1, "running", None));
        let r = run("running", vec![a.clone(), task("b", "pending", 0)]);
        assert_eq!(
            lines(states.changes(&r, now)),
            ["run r1: running", "a: running"]
        );
        assert!(states.changes(&r, now).is_empty());

        // Attempt 1 failed and attempt 2 started between two polls.
        a.attempts[0] = attempt(1, "failed", Some(1));
        a.attempts.push(attempt(2, "running", None));
        a.attempt = 2;
        let r = run("running", vec![a.clone(), task("b", "pending", 0)]);
        assert_eq!(
            lines(states.changes(&r, now)),
            [
                "a: attempt 1 failed (exit 1), retrying",
                "a: running (attempt 2)"
            ]
        );

        a.attempts[1] = attempt(2, "succeeded", Some(0));
        a.status = "succeeded".into();
        a.exit_code = Some(0);
        let mut b = task("b", "skipped", 0);
        b.reason = Some("`a` succeeded".into());
        let r = run("succeeded", vec![a, b]);
        let changes = states.changes(&r, now);
        assert!(changes.iter().all(|c| c.settles));
        assert_eq!(
            lines(changes),
            ["a: succeeded (exit 0)", "b: skipped: `a` succeeded"]
        );
    }

    #[test]
    fn the_status_already_printed_is_not_said_again() {
        let mut states = States::shown(Some("running".into()));
        let r = run("running", vec![task("a", "pending", 0)]);
        assert!(states.changes(&r, ts("2026-05-01T12:00:00Z")).is_empty());
    }

    #[test]
    fn retry_delays_and_undos_are_said() {
        let now = ts("2026-05-01T12:00:02Z");
        let mut states = States::default();
        let mut a = task("a", "pending", 1);
        a.attempts.push(attempt(1, "failed", Some(3)));
        a.retry_at = Some(ts("2026-05-01T12:00:11Z"));
        let r = run("running", vec![a.clone()]);
        let changes = states.changes(&r, now);
        assert!(!changes[1].settles, "a retry is not the task's end");
        assert_eq!(
            lines(changes),
            [
                "run r1: running",
                "a: failed (exit 3); retrying in 10.0s (attempt 2)"
            ]
        );
        let mut s = task("s", "succeeded", 1);
        s.undo = Some(UndoView {
            status: "running".into(),
            exit_code: None,
            reason: None,
            attempts: vec![attempt(1, "running", None)],
        });
        let r = run("running", vec![a, s]);
        assert_eq!(
            lines(states.changes(&r, now)),
            ["s: succeeded", "s:undo: running"]
        );
    }

    #[test]
    fn queued_runs_say_why() {
        let mut states = States::default();
        let mut r = run("queued", vec![task("a", "pending", 0)]);
        r.waiting = Some("concurrency full (1 of 1 running)".into());
        assert_eq!(
            lines(states.changes(&r, ts("2026-05-01T12:00:00Z"))),
            ["run r1: queued (concurrency full (1 of 1 running))"]
        );
    }

    #[test]
    fn outcomes_do_not_repeat_the_exit_code() {
        assert_eq!(
            outcome("failed", Some(2), Some("exit code 2")),
            "failed (exit 2)"
        );
        assert_eq!(
            outcome("failed", Some(2), Some("routed by on_exit_code")),
            "failed (exit 2): routed by on_exit_code"
        );
        assert_eq!(
            outcome("timed_out", None, Some("after 10s")),
            "timed_out: after 10s"
        );
    }
}

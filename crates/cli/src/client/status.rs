//! `ganger status RUN`: a run's header and its task table.

use clap::Args;
use ganger_api::{AttemptView, RunDetail, TaskRun};
use jiff::Timestamp;

use super::conn::ConnArgs;
use super::out::{self, Sink};
use super::table::{Table, one_line, terminal_width};
use super::when::{ago, local, span, took};
use crate::exit;

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The run's id.
    run: String,
    /// Print the run's details as the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn main(args: StatusArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let run: RunDetail = api.get(api.url(&["runs", &args.run])).await?;
    if args.json {
        out::json(&run)?;
    } else {
        let now = Timestamp::now();
        let mut text = header(&run, now, local);
        text.push('\n');
        text.push_str(&tasks(&run, now).render(terminal_width()));
        Sink::Stdout.text(&text)?;
    }
    Ok(exit::SUCCESS)
}

/// The run's own lines. `show` writes a time (local, or fixed in tests).
fn header(run: &RunDetail, now: Timestamp, show: impl Fn(Timestamp) -> String) -> String {
    let s = &run.summary;
    let at = |t: Timestamp| format!("{} ({})", show(t), ago(t, now));
    let mut lines = vec![
        format!("run:       {}", s.id),
        format!("job:       {} (version {})", s.job, s.version),
        format!("status:    {}", s.status),
    ];
    if let Some(reason) = &s.reason {
        lines.push(format!("reason:    {}", one_line(reason)));
    }
    if let Some(waiting) = &run.waiting {
        lines.push(format!("waiting:   {}", one_line(waiting)));
    }
    if s.priority != 0 {
        lines.push(format!("priority:  {}", s.priority));
    }
    if !run.params.is_empty() {
        let params: Vec<String> = run
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", one_line(v)))
            .collect();
        lines.push(format!("params:    {}", params.join(" ")));
    }
    lines.push(format!("created:   {}", at(s.created_at)));
    if let Some(t) = s.scheduled_at {
        lines.push(format!("scheduled: {}", at(t)));
    }
    if let Some(t) = s.started_at {
        lines.push(format!("started:   {}", at(t)));
    }
    if let Some(t) = s.finished_at {
        let mut line = format!("finished:  {}", at(t));
        if let Some(start) = s.started_at {
            line.push_str(&format!(", took {}", took(t.duration_since(start))));
        }
        lines.push(line);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn tasks(run: &RunDetail, now: Timestamp) -> Table {
    let mut t = Table::new(&[
        "TASK", "STATUS", "ATTEMPT", "DURATION", "EXIT", "AGENT", "REASON",
    ]);
    for task in &run.tasks {
        t.row(row(&task.name, task, now));
        if let Some(undo) = &task.undo {
            let last = undo.attempts.last();
            t.row(vec![
                format!("{}:undo", task.name),
                status_of(&undo.status, last),
                attempt_number(last.map_or(0, |a| a.number)),
                last.and_then(|a| span(a.started_at, a.finished_at, now))
                    .unwrap_or_default(),
                exit_of(undo.exit_code, last),
                last.and_then(|a| a.agent.clone()).unwrap_or_default(),
                undo.reason.clone().unwrap_or_default(),
            ]);
        }
    }
    t
}

fn row(name: &str, task: &TaskRun, now: Timestamp) -> Vec<String> {
    let last = task.attempts.last();
    let mut reason = task.reason.clone().unwrap_or_default();
    if let Some(at) = task.retry_at.filter(|_| task.status == "pending") {
        let retry = format!("retry {}", ago(at, now));
        reason = if reason.is_empty() {
            retry
        } else {
            format!("{reason}; {retry}")
        };
    }
    vec![
        name.to_owned(),
        status_of(&task.status, last),
        attempt_number(task.attempt),
        span(task.started_at, task.finished_at, now).unwrap_or_default(),
        exit_of(task.exit_code, last),
        last.and_then(|a| a.agent.clone()).unwrap_or_default(),
        reason,
    ]
}

/// The status, with how far along the attempt said it is while it runs
/// (`running 45%`).
fn status_of(status: &str, last: Option<&AttemptView>) -> String {
    match last.and_then(|a| a.progress) {
        Some(p) if status == "running" => format!("{status} {:.0}%", p * 100.0),
        _ => status.to_owned(),
    }
}

fn attempt_number(n: u32) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

/// The exit code, or the signal that ended the last attempt.
fn exit_of(code: Option<i32>, last: Option<&AttemptView>) -> String {
    match (code, last.and_then(|a| a.signal)) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("sig {signal}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ganger_api::{RunSummary, UndoView};

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    fn attempt(n: u32, status: &str, exit: Option<i32>, signal: Option<i32>) -> AttemptView {
        AttemptView {
            number: n,
            status: status.into(),
            exit_code: exit,
            signal,
            reason: None,
            agent: Some("local".into()),
            started_at: Some(ts("2026-05-01T12:00:00Z")),
            finished_at: Some(ts("2026-05-01T12:00:02Z")),
            progress: None,
        }
    }

    fn task(name: &str, status: &str) -> TaskRun {
        TaskRun {
            name: name.into(),
            status: status.into(),
            attempt: 0,
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

    fn sample() -> RunDetail {
        let mut build = task("build", "succeeded");
        build.attempt = 1;
        build.exit_code = Some(0);
        build.started_at = Some(ts("2026-05-01T12:00:00Z"));
        build.finished_at = Some(ts("2026-05-01T12:00:02Z"));
        build.attempts.push(attempt(1, "succeeded", Some(0), None));
        build.undo = Some(UndoView {
            status: "succeeded".into(),
            exit_code: Some(0),
            reason: None,
            attempts: vec![attempt(1, "succeeded", Some(0), None)],
        });
        let mut test = task("test", "failed");
        test.attempt = 2;
        test.reason = Some("killed by signal 9".into());
        test.started_at = Some(ts("2026-05-01T12:00:00Z"));
        test.finished_at = Some(ts("2026-05-01T12:00:02Z"));
        test.attempts.push(attempt(2, "failed", None, Some(9)));
        RunDetail {
            summary: RunSummary {
                id: "r1".into(),
                job: "build".into(),
                version: 4,
                status: "failed".into(),
                priority: 0,
                reason: Some("task `test` failed".into()),
                created_at: ts("2026-05-01T12:00:00Z"),
                scheduled_at: None,
                started_at: Some(ts("2026-05-01T12:00:00Z")),
                finished_at: Some(ts("2026-05-01T12:00:03Z")),
            },
            waiting: None,
            params: [("branch".to_owned(), "main".to_owned())].into(),
            tasks: vec![build, test, task("deploy", "skipped")],
        }
    }

    #[test]
    fn header_names_everything_known() {
        let now = ts("2026-05-01T12:01:00Z");
        let text = header(&sample(), now, |t| t.to_string());
        assert_eq!(
            text,
            "run:       r1\n\
             job:       build (version 4)\n\
             status:    failed\n\
             reason:    task `test` failed\n\
             params:    branch=main\n\
             created:   2026-05-01T12:00:00Z (1m ago)\n\
             started:   2026-05-01T12:00:00Z (1m ago)\n\
             finished:  2026-05-01T12:00:03Z (57s ago), took 3.0s\n"
        );
    }

    #[test]
    fn queued_runs_say_why_they_wait() {
        let mut run = sample();
        run.summary.status = "queued".into();
        run.waiting = Some("queued behind 3 runs".into());
        let text = header(&run, ts("2026-05-01T12:01:00Z"), |t| t.to_string());
        assert!(
            text.contains("\nwaiting:   queued behind 3 runs\n"),
            "{text}"
        );
    }

    #[test]
    fn task_table_has_undo_rows_and_signals() {
        let text = tasks(&sample(), ts("2026-05-01T12:01:00Z")).render(None);
        assert_eq!(
            text,
            "TASK        STATUS     ATTEMPT  DURATION  EXIT   AGENT  REASON\n\
             build       succeeded  1        2.0s      0      local\n\
             build:undo  succeeded  1        2.0s      0      local\n\
             test        failed     2        2.0s      sig 9  local  killed by signal 9\n\
             deploy      skipped\n"
        );
    }

    #[test]
    fn a_running_attempt_shows_its_progress() {
        let mut run = sample();
        let build = &mut run.tasks[0];
        build.status = "running".into();
        build.attempts[0].progress = Some(0.45);
        build.undo = None;
        run.tasks[1].attempts[0].progress = Some(0.5);
        let text = tasks(&run, ts("2026-05-01T12:01:00Z")).render(None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("build   running 45%  1"), "{text}");
        assert!(
            lines[2].starts_with("test    failed "),
            "only while it runs: {text}"
        );
    }
}

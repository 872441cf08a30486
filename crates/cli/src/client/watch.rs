//! Watching a run on the server until it ends (`--wait`, `--follow`,
//! `logs --follow`): poll its state, and when following, stream each
//! task's log as it starts and say when tasks change state.

use std::time::Duration;

use anyhow::Context;
use ganger_api::RunDetail;
use jiff::Timestamp;
use tokio::time::Instant;

use super::follow::{Held, Logs, Style};
use super::http::Api;
use super::out::Sink;
use super::states::States;
use super::when::took;
use crate::exit;

/// Polling starts fast, for short runs, and slows down to this while
/// nothing changes.
const FIRST_POLL: Duration = Duration::from_millis(50);
const SLOWEST_POLL: Duration = Duration::from_secs(1);
/// A server that cannot be reached for this long (a restart takes less)
/// ends the watch.
const OUTAGE: Duration = Duration::from_secs(60);

/// What to show while watching.
#[derive(Clone, Debug)]
pub(crate) struct Follow {
    pub(crate) sink: Sink,
    /// Stream every task's log.
    pub(crate) logs: bool,
    /// Say when tasks (and the run) change state.
    pub(crate) states: bool,
    pub(crate) timestamps: bool,
    /// The run's status as already printed, not to be said again.
    pub(crate) shown: Option<String>,
}

/// Whether a run's status is final.
pub(crate) fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// The exit code that reports a finished run.
pub(crate) fn exit_code(status: &str) -> u8 {
    match status {
        "succeeded" => exit::SUCCESS,
        "cancelled" => exit::CANCELLED,
        _ => exit::FAILED,
    }
}

/// Watches run `id` until it ends and returns its final state. Ctrl-C
/// stops watching (the run goes on on the server) and exits 130.
pub(crate) async fn watch(
    api: &Api,
    id: &str,
    follow: Option<Follow>,
) -> anyhow::Result<RunDetail> {
    tokio::select! {
        run = watch_inner(api, id, follow) => run,
        () = interrupt() => {
            eprintln!(
                "\nganger: stopped watching run {id}; it goes on on the server \
                 (`ganger cancel {id}` stops it, `ganger status {id}` shows it)"
            );
            Err(Interrupted.into())
        }
    }
}

/// Completes at Ctrl-C; never when the signal cannot be watched.
async fn interrupt() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The user stopped watching with Ctrl-C.
#[derive(Debug)]
pub(crate) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

async fn watch_inner(api: &Api, id: &str, follow: Option<Follow>) -> anyhow::Result<RunDetail> {
    let mut delay = FIRST_POLL;
    let mut failing_since: Option<Instant> = None;
    let mut last_seen = String::new();
    let mut logs = Logs::default();
    let mut states = States::shown(follow.as_ref().and_then(|f| f.shown.clone()));
    let mut held = Held::default();
    loop {
        let run: RunDetail = match api.get(api.url(&["runs", id])).await {
            Ok(run) => {
                failing_since = None;
                run
            }
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(|| {
                    eprintln!("ganger: warning: {e}; trying again");
                    Instant::now()
                });
                if since.elapsed() > OUTAGE {
                    return Err(e).context(format!(
                        "gave up watching run {id} after {}s without an answer",
                        OUTAGE.as_secs()
                    ));
                }
                tokio::time::sleep(SLOWEST_POLL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ended = is_terminal(&run.summary.status);
        if let Some(follow) = &follow {
            show(follow, &run, ended, api, &mut logs, &mut states, &mut held).await?;
        }
        if ended {
            return Ok(run);
        }
        // Poll fast again after a change: more changes tend to follow.
        let seen = fingerprint(&run);
        delay = if seen == last_seen {
            (delay * 2).min(SLOWEST_POLL)
        } else {
            FIRST_POLL
        };
        last_seen = seen;
        tokio::time::sleep(delay).await;
    }
}

/// One poll's worth of following: state lines, new log streams, and once
/// the run `ended`, the rest of every log.
async fn show(
    follow: &Follow,
    run: &RunDetail,
    ended: bool,
    api: &Api,
    logs: &mut Logs,
    states: &mut States,
    held: &mut Held,
) -> anyhow::Result<()> {
    let style = Style {
        sink: follow.sink,
        timestamps: follow.timestamps,
    };
    logs.reap().await?;
    if follow.states {
        for change in states.changes(run, Timestamp::now()) {
            held.say(change, follow.sink, |task| {
                follow.logs && logs.busy(task, run, ended)
            })?;
        }
    }
    if ended {
        // The rest is read task by task in the job's order, rather than
        // from every stream at once.
        if follow.logs {
            // Lines held long enough first: their task's output is out.
            held.flush(follow.sink, |_| false)?;
            logs.drain(api, run, style).await?;
        }
        held.flush(follow.sink, |_| true)?;
    } else {
        if follow.logs {
            logs.start(api, run, style);
        }
        held.flush(follow.sink, |task| !logs.streaming(task))?;
    }
    Ok(())
}

/// What changes when anything worth polling fast for happens.
fn fingerprint(run: &RunDetail) -> String {
    let mut s = run.summary.status.clone();
    for t in &run.tasks {
        s.push_str(&format!(
            "|{}:{}:{}",
            t.status,
            t.attempt,
            t.undo.as_ref().map_or("", |u| u.status.as_str())
        ));
    }
    s
}

/// The closing lines of a watched run, like `ganger run`'s:
/// `run ID of job NAME succeeded in 1.2s (2 succeeded, 1 skipped)`.
pub(crate) fn summary(run: &RunDetail) -> String {
    let s = &run.summary;
    let took = match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => took(b.duration_since(a)),
        _ => "0ms".into(),
    };
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in &run.tasks {
        match counts.iter_mut().find(|(st, _)| *st == t.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((&t.status, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(st, n)| format!("{n} {st}")).collect();
    let verdict = match s.status.as_str() {
        "succeeded" => "succeeded",
        "failed" => "FAILED",
        "cancelled" => "cancelled",
        _ => "did not finish",
    };
    let mut text = format!(
        "run {} of job {} {verdict} in {took} ({})\n",
        s.id,
        s.job,
        counts.join(", ")
    );
    if let Some(reason) = &s.reason {
        text.push_str(&format!("  reason: {reason}\n"));
    }
    // Compensation that did not complete leaves side effects in place.
    for t in &run.tasks {
        if let Some(undo) = t.undo.as_ref().filter(|u| {
            matches!(
                u.status.as_str(),
                "failed" | "timed_out" | "lost" | "cancelled"
            )
        }) {
            text.push_str(&format!("  undo {}: `{}`", undo.status, t.name));
            if let Some(reason) = &undo.reason {
                text.push_str(&format!(" ({reason})"));
            }
            text.push('\n');
        }
    }
    if s.status != "succeeded" {
        text.push_str(&format!(
            "  details: ganger status {0}; output: ganger logs {0}\n",
            s.id
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use ganger_api::UndoView;

    use super::*;
    use crate::client::states::tests::{run, task};

    #[test]
    fn summary_counts_and_explains() {
        let mut a = task("a", "failed", 1);
        a.exit_code = Some(1);
        let mut s = task("s", "succeeded", 1);
        s.undo = Some(UndoView {
            status: "failed".into(),
            exit_code: Some(1),
            reason: Some("exit code 1".into()),
            attempts: Vec::new(),
        });
        let mut r = run("failed", vec![a, s, task("c", "skipped", 0)]);
        r.summary.reason = Some("task `a` failed".into());
        assert_eq!(
            summary(&r),
            "run r1 of job build FAILED in 1.5s (1 failed, 1 succeeded, 1 skipped)\n  \
             reason: task `a` failed\n  undo failed: `s` (exit code 1)\n  \
             details: ganger status r1; output: ganger logs r1\n"
        );
        assert_eq!(exit_code("failed"), exit::FAILED);
        assert_eq!(exit_code("cancelled"), exit::CANCELLED);
        assert_eq!(exit_code("succeeded"), exit::SUCCESS);
    }
}

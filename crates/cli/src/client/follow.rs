//! The logs of a followed run: one stream per task that has started,
//! opened as the poll sees tasks start, and state lines held back until
//! the lines of output they follow have been printed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use ganger_api::{AttemptView, RunDetail, TaskRun};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::http::Api;
use super::lines::prefixes;
use super::out::{Closed, Sink};
use super::states::Change;
use super::stream::{Show, task_log};

/// Once the run has ended, its logs' streams get this long to deliver
/// their last lines before what is missing is read again.
const DRAIN: Duration = Duration::from_secs(5);

/// How the lines of a followed log are shown.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    pub(crate) sink: Sink,
    pub(crate) timestamps: bool,
}

/// Whether a task has run (or runs): only then can it have output.
pub(crate) fn started(t: &TaskRun) -> bool {
    let ran = |attempts: &[AttemptView]| {
        attempts
            .iter()
            .any(|a| a.started_at.is_some() || a.status == "running")
    };
    ran(&t.attempts) || t.undo.as_ref().is_some_and(|u| ran(&u.attempts))
}

fn undo_key(t: &TaskRun) -> String {
    t.undo.as_ref().map_or(String::new(), |u| {
        format!("{}:{}", u.status, u.attempts.len())
    })
}

fn state_key(t: &TaskRun) -> String {
    format!("{}:{}:{}", t.status, t.attempt, undo_key(t))
}

/// The log streams of a followed run, by task.
#[derive(Default)]
pub(crate) struct Logs {
    tasks: HashMap<String, TaskLog>,
}

#[derive(Default)]
struct TaskLog {
    /// Lines printed so far: a stream opened again skips them.
    printed: Arc<AtomicUsize>,
    stream: Option<JoinHandle<anyhow::Result<()>>>,
    /// The task's state when a stream was last opened (`None`: never).
    opened: Option<Opened>,
    /// The last stream reached the end of the log rather than broke off.
    clean: bool,
}

struct Opened {
    state: String,
    undo: String,
}

impl TaskLog {
    /// Whether to open a stream for the task now. A followed log ends when
    /// its task ends, so after a clean end only an undo adds lines; after a
    /// broken one, the stream is opened again once the task moved on (not
    /// at every poll, which would hammer a struggling server).
    fn wants_stream(&self, t: &TaskRun) -> bool {
        if self.stream.is_some() || !started(t) {
            return false;
        }
        match &self.opened {
            None => true,
            Some(o) if self.clean => o.undo != undo_key(t),
            Some(o) => o.state != state_key(t),
        }
    }

    /// Whether the log was delivered whole, for a task that has ended.
    fn complete(&self, t: &TaskRun) -> bool {
        self.clean && self.opened.as_ref().is_some_and(|o| o.undo == undo_key(t))
    }

    fn streaming(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Collects the result of a finished stream.
    async fn reap(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(stream) = self.stream.take_if(|s| s.is_finished()) {
            self.clean = settle(name, stream.await)?;
        }
        Ok(())
    }
}

/// What a stream's end means for the watch: a closed stdout stops
/// everything; any other failure is a warning, since the log is read again
/// later. Returns whether the stream ended cleanly.
fn settle(
    name: &str,
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<bool> {
    match joined {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) if e.downcast_ref::<Closed>().is_some() => Err(e),
        Ok(Err(e)) => {
            eprintln!("ganger: warning: log of task `{name}`: {e:#}");
            Ok(false)
        }
        Err(e) => {
            eprintln!("ganger: warning: log of task `{name}`: the stream stopped: {e}");
            Ok(false)
        }
    }
}

impl Logs {
    /// Collects the streams that ended since the last poll.
    pub(crate) async fn reap(&mut self) -> anyhow::Result<()> {
        for (name, log) in &mut self.tasks {
            log.reap(name).await?;
        }
        Ok(())
    }

    /// Whether a stream of `task` is open and not done.
    pub(crate) fn streaming(&self, task: &str) -> bool {
        self.tasks.get(task).is_some_and(TaskLog::streaming)
    }

    /// Whether `task`'s log has lines yet to be printed: its stream is open
    /// or about to be, or (once the run `ended`) it is to be read again.
    pub(crate) fn busy(&self, task: &str, run: &RunDetail, ended: bool) -> bool {
        if self.streaming(task) {
            return true;
        }
        let Some(t) = run.tasks.iter().find(|t| t.name == task) else {
            return false;
        };
        match self.tasks.get(task) {
            None => started(t),
            Some(log) if ended => started(t) && !log.complete(t),
            Some(log) => log.wants_stream(t),
        }
    }

    /// Opens a stream for each task that started and has none open.
    pub(crate) fn start(&mut self, api: &Api, run: &RunDetail, style: Style) {
        let prefixes = prefixes(run.tasks.iter().map(|t| t.name.as_str()));
        for (t, prefix) in run.tasks.iter().zip(prefixes) {
            let log = self.tasks.entry(t.name.clone()).or_default();
            if !log.wants_stream(t) {
                continue;
            }
            log.opened = Some(Opened {
                state: state_key(t),
                undo: undo_key(t),
            });
            let show = Show {
                sink: style.sink,
                prefix,
                timestamps: style.timestamps,
            };
            let (api, run_id, task, printed) = (
                api.clone(),
                run.summary.id.clone(),
                t.name.clone(),
                Arc::clone(&log.printed),
            );
            log.stream = Some(tokio::spawn(async move {
                task_log(&api, &run_id, &task, true, &show, &printed).await
            }));
        }
    }

    /// After the run ended: lets the streams finish, then reads, from where
    /// it stopped and in the job's order, each log that no stream delivered
    /// whole (one never opened because the task was quick, one that broke
    /// off, an undo that began after its task's stream ended).
    pub(crate) async fn drain(
        &mut self,
        api: &Api,
        run: &RunDetail,
        style: Style,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN;
        for (name, log) in &mut self.tasks {
            if let Some(mut stream) = log.stream.take() {
                match tokio::time::timeout_at(deadline, &mut stream).await {
                    Ok(joined) => log.clean = settle(name, joined)?,
                    Err(_) => {
                        stream.abort();
                        log.clean = false;
                    }
                }
            }
        }
        let prefixes = prefixes(run.tasks.iter().map(|t| t.name.as_str()));
        for (t, prefix) in run.tasks.iter().zip(prefixes) {
            let log = self.tasks.entry(t.name.clone()).or_default();
            if !started(t) || log.complete(t) {
                continue;
            }
            let show = Show {
                sink: style.sink,
                prefix,
                timestamps: style.timestamps,
            };
            let read = task_log(api, &run.summary.id, &t.name, false, &show, &log.printed).await;
            log.clean = settle(&t.name, Ok(read))?;
        }
        Ok(())
    }
}

/// State lines held back until their task's log has been printed, so that
/// `build: succeeded` comes after build's last line of output, not before.
/// Held at most [`HOLD`]: a stream that ends late (it goes on through an
/// undo) must not keep a task's end unsaid.
#[derive(Default)]
pub(crate) struct Held {
    lines: Vec<(String, String, Instant)>,
}

const HOLD: Duration = Duration::from_millis(500);

impl Held {
    /// Prints a change, or holds it: a task's end (and whatever is said of
    /// the task after it) waits while the task's log has lines to come.
    pub(crate) fn say(
        &mut self,
        change: Change,
        sink: Sink,
        busy: impl Fn(&str) -> bool,
    ) -> Result<(), Closed> {
        let Some(task) = change.task else {
            return sink.line(&change.line);
        };
        let behind = self.lines.iter().any(|(t, _, _)| *t == task);
        if behind || (change.settles && busy(&task)) {
            self.lines.push((task, change.line, Instant::now()));
            Ok(())
        } else {
            sink.line(&change.line)
        }
    }

    /// Prints, in order, the held lines of the tasks `ready` accepts and
    /// those held long enough.
    pub(crate) fn flush(&mut self, sink: Sink, ready: impl Fn(&str) -> bool) -> Result<(), Closed> {
        let mut kept: Vec<(String, String, Instant)> = Vec::new();
        for (task, line, since) in std::mem::take(&mut self.lines) {
            let blocked = kept.iter().any(|(t, _, _)| *t == task);
            if blocked || !(ready(&task) || since.elapsed() >= HOLD) {
                kept.push((task, line, since));
            } else {
                sink.line(&line)?;
            }
        }
        self.lines = kept;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::states::tests::{task, ts};

    #[test]
    fn a_task_has_output_once_an_attempt_started() {
        let mut t = task("a", "ready", 1);
        t.attempts.push(AttemptView {
            number: 1,
            status: "ready".into(),
            exit_code: None,
            signal: None,
            reason: None,
            agent: None,
            started_at: None,
            finished_at: None,
            progress: None,
        });
        assert!(!started(&t), "dispatched, not started");
        t.attempts[0].started_at = Some(ts("2026-05-01T12:00:00Z"));
        assert!(started(&t));
    }

    #[test]
    fn a_clean_log_is_opened_again_only_for_an_undo() {
        let mut t = task("a", "succeeded", 1);
        t.attempts.push(AttemptView {
            number: 1,
            status: "succeeded".into(),
            exit_code: Some(0),
            signal: None,
            reason: None,
            agent: None,
            started_at: Some(ts("2026-05-01T12:00:00Z")),
            finished_at: Some(ts("2026-05-01T12:00:01Z")),
            progress: None,
        });
        let mut log = TaskLog::default();
        assert!(log.wants_stream(&t));
        log.opened = Some(Opened {
            state: "running:1:".into(),
            undo: undo_key(&t),
        });
        log.clean = true;
        assert!(
            !log.wants_stream(&t),
            "the task moved on, but its log is whole"
        );
        assert!(log.complete(&t));
        t.undo = Some(ganger_api::UndoView {
            status: "running".into(),
            exit_code: None,
            reason: None,
            attempts: t.attempts.clone(),
        });
        assert!(log.wants_stream(&t));
        assert!(!log.complete(&t));
        // A broken stream is opened again once the state moved on.
        log.clean = false;
        log.opened = Some(Opened {
            state: state_key(&t),
            undo: undo_key(&t),
        });
        assert!(!log.wants_stream(&t));
    }

    #[test]
    fn held_lines_keep_their_order_per_task() -> Result<(), Closed> {
        let mut held = Held::default();
        let change = |task: &str, line: &str, settles: bool| Change {
            task: Some(task.into()),
            line: line.into(),
            settles,
        };
        // Stderr is the sink: the test only looks at what is kept.
        let sink = Sink::Stderr;
        held.say(change("a", "a: succeeded", true), sink, |_| true)?;
        held.say(change("a", "a:undo: running", false), sink, |_| true)?;
        held.say(change("b", "b: running", false), sink, |_| true)?;
        assert_eq!(held.lines.len(), 2, "a's later line waits behind its end");
        held.flush(sink, |t| t != "a")?;
        assert_eq!(held.lines.len(), 2);
        held.flush(sink, |_| true)?;
        assert!(held.lines.is_empty());
        Ok(())
    }
}

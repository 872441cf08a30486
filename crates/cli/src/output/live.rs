//! The live task table shown when stdout is a terminal.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganger_core::model::TaskId;
use ganger_core::run::{Phase, RunState, TaskStatus};
use ganger_engine::Observer;
use ganger_executor::LogLine;
use jiff::Timestamp;
use tokio::task::JoinHandle;

use super::{Target, describe};

#[derive(Clone)]
struct Row {
    name: String,
    status: TaskStatus,
    undo: Option<TaskStatus>,
    attempt: u32,
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    last_line: String,
}

pub(crate) struct Live {
    rows: Mutex<Vec<Row>>,
    done: AtomicBool,
}

const FRAME: Duration = Duration::from_millis(100);

impl Live {
    pub(crate) fn new(run: &RunState) -> Live {
        let rows = run
            .job
            .tasks
            .iter()
            .map(|t| Row {
                name: t.name.clone(),
                status: TaskStatus::Pending,
                undo: None,
                attempt: 0,
                started: None,
                finished: None,
                last_line: String::new(),
            })
            .collect();
        Live {
            rows: Mutex::new(rows),
            done: AtomicBool::new(false),
        }
    }

    pub(crate) fn start_painting(self: &Arc<Self>) -> JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut drawn = 0;
            while !me.done.load(Ordering::Relaxed) {
                drawn = me.paint(drawn);
                tokio::time::sleep(FRAME).await;
            }
            me.paint(drawn);
        })
    }

    pub(crate) async fn stop_painting(&self, painter: JoinHandle<()>, _run: &RunState) {
        self.done.store(true, Ordering::Relaxed);
        let _ = painter.await;
    }

    /// Redraws the table over the previous frame; returns the lines drawn.
    fn paint(&self, previous: usize) -> usize {
        let Ok(rows) = self.rows.lock() else {
            return previous;
        };
        let (width, height) = terminal_size::terminal_size()
            .map_or((100, 30), |(w, h)| (usize::from(w.0), usize::from(h.0)));
        let room = height.saturating_sub(3).max(5);
        let mut order: Vec<&Row> = rows.iter().collect();
        let rank = |r: &Row| match r.status {
            TaskStatus::Running | TaskStatus::Claimed | TaskStatus::Ready => 0,
            TaskStatus::Failed | TaskStatus::TimedOut => 1,
            TaskStatus::Pending => 3,
            _ => 2,
        };
        if order.len() > room {
            order.sort_by_key(|r| rank(r));
        }
        let now = Timestamp::now();
        let name_w = order
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(4)
            .clamp(4, 32);
        let mut frame = String::new();
        if previous > 0 {
            let _ = write!(frame, "\x1b[{previous}F\x1b[J");
        }
        let _ = writeln!(
            frame,
            "\x1b[1m{:<name_w$}  {:<11} {:>7}  OUTPUT\x1b[0m",
            "TASK", "STATE", "TIME"
        );
        let mut lines = 1;
        for row in order.iter().take(room) {
            let time = match (row.started, row.finished) {
                (Some(s), Some(f)) => describe::duration(f.duration_since(s)),
                (Some(s), None) => describe::duration(now.duration_since(s)),
                _ => String::new(),
            };
            let mut state = row.status.as_str().to_owned();
            if row.attempt > 1 && row.status == TaskStatus::Running {
                state = format!("running #{}", row.attempt);
            }
            if let Some(undo) = row.undo {
                state = format!("undo:{}", undo.as_str());
            }
            let color = match row.status {
                TaskStatus::Succeeded => "\x1b[32m",
                TaskStatus::Failed | TaskStatus::TimedOut => "\x1b[31m",
                TaskStatus::Running => "\x1b[36m",
                TaskStatus::Cancelled | TaskStatus::Skipped => "\x1b[2m",
                _ => "",
            };
            let fixed = name_w + 2 + 11 + 1 + 7 + 2;
            let line: String = row
                .last_line
                .chars()
                .take(width.saturating_sub(fixed + 1))
                .collect();
            let name: String = row.name.chars().take(name_w).collect();
            let _ = writeln!(
                frame,
                "{name:<name_w$}  {color}{state:<11}\x1b[0m {time:>7}  {line}"
            );
            lines += 1;
        }
        if order.len() > room {
            let _ = writeln!(frame, "… and {} more tasks", order.len() - room);
            lines += 1;
        }
        Target::Stdout.write(&frame);
        lines
    }
}

impl Observer for Live {
    fn task_changed(&self, run: &RunState, task: TaskId) {
        let Ok(mut rows) = self.rows.lock() else {
            return;
        };
        let state = &run.tasks[task];
        let row = &mut rows[task];
        row.status = state.main.status;
        row.undo = state.undo.as_ref().map(|u| u.status);
        row.attempt = state.main.attempt();
        row.started = state.main.attempts.iter().find_map(|a| a.started_at);
        row.finished = state.main.current().and_then(|a| a.finished_at);
        if let Some(reason) = state
            .main
            .reason
            .as_ref()
            .filter(|_| row.status.is_terminal() && row.status != TaskStatus::Succeeded)
        {
            row.last_line = reason.clone();
        }
    }

    fn run_changed(&self, _run: &RunState) {}

    fn line(&self, task: &str, phase: Phase, line: &LogLine) {
        let Ok(mut rows) = self.rows.lock() else {
            return;
        };
        if let Some(row) = rows.iter_mut().find(|r| r.name == task) {
            row.last_line = match phase {
                Phase::Main => line.text.clone(),
                Phase::Undo => format!("undo: {}", line.text),
            };
        }
    }
}

//! Plain lines for logs and pipes: `[task] output` and `[task] == state`.

use std::collections::HashMap;
use std::sync::Mutex;

use ganger_core::model::TaskId;
use ganger_core::run::{Phase, RunState, TaskStatus};
use ganger_engine::Observer;
use ganger_executor::LogLine;

use super::Target;
use super::describe;

pub(crate) struct Plain {
    target: Target,
    said: Mutex<HashMap<(TaskId, Phase), Said>>,
}

/// What was last said about a task phase, so only changes are printed.
#[derive(Default)]
struct Said {
    /// The state shown and its attempt.
    state: Option<(TaskStatus, u32)>,
    /// The newest attempt whose end has been accounted for.
    ended: u32,
}

impl Plain {
    pub(crate) fn new(target: Target) -> Plain {
        Plain {
            target,
            said: Mutex::new(HashMap::new()),
        }
    }
}

impl Observer for Plain {
    fn task_changed(&self, run: &RunState, task: TaskId) {
        let now = jiff::Timestamp::now();
        let Ok(mut said) = self.said.lock() else {
            return;
        };
        let state = &run.tasks[task];
        for phase in [Phase::Main, Phase::Undo] {
            let exec = match phase {
                Phase::Main => &state.main,
                Phase::Undo => match &state.undo {
                    Some(undo) => undo,
                    None => continue,
                },
            };
            let label = describe::label(run.task_name(task), phase);
            let said = said.entry((task, phase)).or_default();
            // An attempt retried without a delay is followed at once by the
            // next one, so no state of the task shows its failure: say it
            // here. The newest attempt's end is the task's own state when the
            // task ended or waits out a retry delay.
            let last = exec.attempt();
            let shown_by_state = exec.status.is_terminal()
                || (exec.status == TaskStatus::Pending && state.retry_at.is_some());
            for attempt in &exec.attempts {
                if attempt.number <= said.ended || attempt.finished_at.is_none() {
                    continue;
                }
                said.ended = attempt.number;
                if !(attempt.number == last && shown_by_state) {
                    self.target.write(&format!(
                        "[{label}] == {}\n",
                        describe::retried(run, task, attempt)
                    ));
                }
            }
            // Claimed and running read the same here (see `describe::state`).
            let shown = match exec.status {
                TaskStatus::Claimed => TaskStatus::Running,
                other => other,
            };
            let current = Some((shown, last));
            if said.state == current {
                continue;
            }
            said.state = current;
            if let Some(text) = describe::state(run, task, phase, now) {
                self.target.write(&format!("[{label}] == {text}\n"));
            }
        }
    }

    fn run_changed(&self, _run: &RunState) {}

    fn line(&self, task: &str, phase: Phase, line: &LogLine) {
        self.target.write(&format!(
            "[{}] {}\n",
            describe::label(task, phase),
            line.text
        ));
    }

    fn warning(&self, task: &str, phase: Phase, text: &str) {
        self.target.write(&format!(
            "[{}] ganger: warning: {text}\n",
            describe::label(task, phase)
        ));
    }

    fn notice(&self, text: &str) {
        self.target.write(&format!("ganger: {text}\n"));
    }
}

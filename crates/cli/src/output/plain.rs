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
    /// What was last said about each task phase, so only changes are printed.
    said: Mutex<HashMap<(TaskId, Phase), (TaskStatus, u32)>>,
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
        for phase in [Phase::Main, Phase::Undo] {
            let Some((status, attempt)) = run.tasks[task].exec_status(phase) else {
                continue;
            };
            // Claimed and running read the same here (see `describe::state`).
            let shown = match status {
                TaskStatus::Claimed => TaskStatus::Running,
                other => other,
            };
            let current = (shown, attempt);
            if said.get(&(task, phase)) == Some(&current) {
                continue;
            }
            said.insert((task, phase), current);
            if let Some(text) = describe::state(run, task, phase, now) {
                self.target.write(&format!(
                    "[{}] == {text}\n",
                    describe::label(run.task_name(task), phase)
                ));
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
}

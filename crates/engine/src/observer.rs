use ganger_core::model::TaskId;
use ganger_core::run::{Phase, RunState};
use ganger_executor::LogLine;

/// Watches a run: state changes from the driver loop, output lines from
/// the tasks as they print them.
pub trait Observer: Send + Sync + 'static {
    fn task_changed(&self, run: &RunState, task: TaskId);
    fn run_changed(&self, run: &RunState);
    fn line(&self, task: &str, phase: Phase, line: &LogLine);
}

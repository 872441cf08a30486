use ganger_core::model::TaskId;
use ganger_core::run::{Phase, RunState};
use ganger_executor::LogLine;

/// Watches a run: state changes from the driver loop, output lines from
/// the tasks as they print them.
pub trait Observer: Send + Sync + 'static {
    fn task_changed(&self, run: &RunState, task: TaskId);
    fn run_changed(&self, run: &RunState);
    fn line(&self, task: &str, phase: Phase, line: &LogLine);
    /// Something about one attempt the user should know that did not change
    /// its outcome (a malformed `$GANGER_OUTPUT` line, a truncated log, a
    /// process that outlived its group). Called before the attempt's end is
    /// applied, so it precedes the task's final state.
    fn warning(&self, task: &str, phase: Phase, text: &str);
    /// A message about the run as a whole, e.g. why a cancel request was
    /// not acted on.
    fn notice(&self, text: &str);
}

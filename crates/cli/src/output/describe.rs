//! Words for states, shared by the plain and live views.

use ganger_core::model::TaskId;
use ganger_core::run::{Attempt, Phase, RunState, TaskStatus};
use ganger_core::units::format_duration;
use jiff::{SignedDuration, Timestamp};

pub(crate) fn duration(d: SignedDuration) -> String {
    let ms = d.as_millis().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A wait, written the way job files write durations: `50ms`, `1s`, `2m30s`.
/// Rounded to 10ms under a second and to 100ms above, so a delay measured a
/// moment late does not read `999ms`.
pub(crate) fn wait(d: SignedDuration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(0);
    let step = if ms < 1000 { 10 } else { 100 };
    let ms = (ms + step / 2) / step * step;
    format_duration(std::time::Duration::from_millis(ms))
}

/// The line for an attempt that failed and was tried again at once, which
/// no state of the task itself shows: `failed: exit code 1 (attempt 1 of 2), retrying`.
pub(crate) fn retried(run: &RunState, task: TaskId, attempt: &Attempt) -> String {
    let of = run.job.tasks[task].retry.attempts + 1;
    let mut s = attempt.status.as_str().to_owned();
    if let Some(reason) = &attempt.reason {
        s.push_str(": ");
        s.push_str(reason);
    }
    format!("{s} (attempt {} of {of}), retrying", attempt.number)
}

/// The label of a task's phase in output: `build` or `build:undo`.
pub(crate) fn label(name: &str, phase: Phase) -> String {
    match phase {
        Phase::Main => name.to_owned(),
        Phase::Undo => format!("{name}:undo"),
    }
}

/// A one-line account of a task's phase, or `None` when there is nothing
/// worth saying (pending, ready).
pub(crate) fn state(run: &RunState, task: TaskId, phase: Phase, now: Timestamp) -> Option<String> {
    let state = &run.tasks[task];
    let exec = match phase {
        Phase::Main => &state.main,
        Phase::Undo => state.undo.as_ref()?,
    };
    let attempt = exec.current();
    let of = run.job.tasks[task].retry.attempts + 1;
    // How long the last attempt ran, when that attempt is what ended the task
    // (not when, say, a cancel ended a wait for the next attempt).
    let took = attempt
        .filter(|a| a.status == exec.status)
        .and_then(|a| Some(duration(a.finished_at?.duration_since(a.started_at?))));
    let reason = exec.reason.as_deref().unwrap_or("");
    Some(match exec.status {
        TaskStatus::Pending => {
            let at = state.retry_at.filter(|_| phase == Phase::Main)?;
            // The delay itself, measured from the failure rather than from
            // now, when the failed attempt's end is known.
            let since = attempt.and_then(|a| a.finished_at).unwrap_or(now);
            let wait = wait(at.duration_since(since));
            let next = exec.attempt() + 1;
            format!("failed: {reason}; retrying in {wait} (attempt {next} of {of})")
        }
        TaskStatus::Ready => return None,
        // Claimed is the moment the process is being started: say it runs,
        // before its first line of output can arrive.
        TaskStatus::Claimed | TaskStatus::Running if of > 1 && phase == Phase::Main => {
            format!("running (attempt {} of {of})", exec.attempt())
        }
        TaskStatus::Claimed | TaskStatus::Running => {
            format!("running (attempt {})", exec.attempt())
        }
        TaskStatus::Succeeded => format!("succeeded in {}", took.unwrap_or_else(|| "0ms".into())),
        other => {
            let mut s = other.as_str().to_owned();
            if !reason.is_empty() {
                s.push_str(": ");
                s.push_str(reason);
            }
            let routed = exec
                .exit_code()
                .is_some_and(|c| run.job.tasks[task].routed_exit_codes.contains(&c));
            if phase == Phase::Main && routed {
                s.push_str(", routed by on_exit_code");
            }
            if let Some(t) = took {
                s.push_str(&format!(" (after {t})"));
            }
            s
        }
    })
}

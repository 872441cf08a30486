//! Runs as the API shows them.

use ganger_api as api;
use ganger_core::run::{Attempt, Exec, RunState};

use super::time::from_millis;

pub(crate) fn summary(row: &ganger_store::RunSummary) -> api::RunSummary {
    api::RunSummary {
        id: row.id.clone(),
        job: row.job.clone(),
        version: row.version,
        status: row.status.clone(),
        priority: row.priority,
        reason: row.reason.clone(),
        created_at: from_millis(row.created_at),
        scheduled_at: row.scheduled_at.map(from_millis),
        started_at: row.started_at.map(from_millis),
        finished_at: row.finished_at.map(from_millis),
    }
}

pub(crate) fn detail(
    row: &ganger_store::RunSummary,
    run: &RunState,
    waiting: Option<String>,
) -> api::RunDetail {
    let tasks = run
        .job
        .tasks
        .iter()
        .zip(&run.tasks)
        .map(|(def, state)| {
            let main = &state.main;
            api::TaskRun {
                name: def.name.clone(),
                status: main.status.as_str().to_owned(),
                attempt: main.attempt(),
                exit_code: main.exit_code(),
                reason: main.reason.clone(),
                outputs: state.outputs.clone(),
                started_at: main.attempts.iter().find_map(|a| a.started_at),
                finished_at: main.current().and_then(|a| a.finished_at),
                retry_at: state.retry_at,
                attempts: attempts(main),
                undo: state.undo.as_ref().map(|u| api::UndoView {
                    status: u.status.as_str().to_owned(),
                    exit_code: u.exit_code(),
                    reason: u.reason.clone(),
                    attempts: attempts(u),
                }),
            }
        })
        .collect();
    // The run's own clock readings are finer than the store's columns
    // (milliseconds): latency figures read from them are exact.
    let mut summary = summary(row);
    summary.created_at = run.created_at;
    summary.started_at = run.started_at.or(summary.started_at);
    summary.finished_at = run.finished_at.or(summary.finished_at);
    api::RunDetail {
        summary,
        waiting,
        params: run.params.clone(),
        tasks,
    }
}

fn attempts(exec: &Exec) -> Vec<api::AttemptView> {
    exec.attempts.iter().map(attempt).collect()
}

fn attempt(a: &Attempt) -> api::AttemptView {
    api::AttemptView {
        number: a.number,
        status: a.status.as_str().to_owned(),
        exit_code: a.exit_code,
        signal: a.signal,
        reason: a.reason.clone(),
        agent: a.agent.clone(),
        started_at: a.started_at,
        finished_at: a.finished_at,
        progress: a.progress,
    }
}

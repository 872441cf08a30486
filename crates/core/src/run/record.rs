//! The run as reported to people and scripts (`ganger run --json`, the API).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::state::{Attempt, RunState, RunStatus, TaskStatus};

#[derive(Serialize)]
pub struct RunRecord<'a> {
    pub id: &'a str,
    pub job: &'a str,
    pub status: RunStatus,
    pub reason: Option<&'a str>,
    pub params: &'a BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub tasks: Tasks<'a>,
}

/// Tasks keyed by name, in the order the job declares them.
pub struct Tasks<'a>(&'a RunState);

#[derive(Serialize)]
struct UndoRecord<'a> {
    status: TaskStatus,
    exit_code: Option<i32>,
    reason: Option<&'a str>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
}

#[derive(Serialize)]
struct TaskRecord<'a> {
    status: TaskStatus,
    attempt: u32,
    exit_code: Option<i32>,
    reason: Option<&'a str>,
    outputs: &'a BTreeMap<String, String>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    retry_at: Option<Timestamp>,
    attempts: &'a [Attempt],
    undo: Option<UndoRecord<'a>>,
}

impl Serialize for Tasks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let run = self.0;
        let mut map = serializer.serialize_map(Some(run.tasks.len()))?;
        for (def, state) in run.job.tasks.iter().zip(&run.tasks) {
            let main = &state.main;
            let record = TaskRecord {
                status: main.status,
                attempt: main.attempt(),
                exit_code: main.exit_code(),
                reason: main.reason.as_deref(),
                outputs: &state.outputs,
                started_at: main.attempts.iter().find_map(|a| a.started_at),
                finished_at: main.current().and_then(|a| a.finished_at),
                retry_at: state.retry_at,
                attempts: &main.attempts,
                undo: state.undo.as_ref().map(|u| UndoRecord {
                    status: u.status,
                    exit_code: u.exit_code(),
                    reason: u.reason.as_deref(),
                    started_at: u.current().and_then(|a| a.started_at),
                    finished_at: u.current().and_then(|a| a.finished_at),
                }),
            };
            map.serialize_entry(&def.name, &record)?;
        }
        map.end()
    }
}

impl RunState {
    pub fn record(&self) -> RunRecord<'_> {
        RunRecord {
            id: &self.id,
            job: &self.job.name,
            status: self.status,
            reason: self.reason.as_deref(),
            params: &self.params,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            tasks: Tasks(self),
        }
    }
}

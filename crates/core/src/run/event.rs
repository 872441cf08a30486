use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{ChildJobSpec, DockerSpec, HttpSpec, Resources, TaskId};

/// Which execution of a task an event or decision is about: its main work
/// or its `undo` compensation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Main,
    Undo,
}

/// How an attempt ended, as observed by whoever ran it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It could not be started or run (spawn failure, unsupported executor).
    Error(String),
    /// Its lease expired: nobody knows how it ended.
    Lost,
    /// The scheduler itself stopped it (the server was restarted while it
    /// ran in-process). It runs again at once, outside the retry budget.
    Interrupted(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The run is admitted: tasks without needs become ready.
    Start,
    /// An agent took a ready task.
    TaskClaimed {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        agent: Option<String>,
    },
    /// The task's process (or container, or call) began.
    TaskStarted {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        agent: Option<String>,
    },
    TaskFinished {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        exit: Exit,
        outputs: BTreeMap<String, String>,
    },
    /// The running attempt said how far along it is (`0.0..=1.0`). Shown,
    /// never acted on: it changes no scheduling.
    TaskProgress {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        progress: f64,
    },
    /// Stop the run. Tasks not started are cancelled, running ones killed;
    /// `always` tasks still run unless `force`.
    Cancel { reason: String, force: bool },
    /// Time passed: fire due retries and timeouts. Drivers send it at
    /// [`RunState::next_wakeup`](super::RunState::next_wakeup).
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("run has no task #{0}")]
    UnknownTask(TaskId),
    /// A report about an attempt that is no longer current (the fencing
    /// check): the reporter must stop that attempt.
    #[error(
        "task `{task}` is not at attempt {attempt} of its {phase:?} phase in a state that accepts this report"
    )]
    Stale {
        task: String,
        attempt: u32,
        phase: Phase,
    },
    #[error("the run has not started")]
    NotStarted,
    #[error("the run has already finished")]
    Finished,
    #[error("the run has not finished yet: only a failed or cancelled run can be retried")]
    Unfinished,
    #[error("the run succeeded: there is nothing to retry")]
    Succeeded,
}

/// What the driver must do after an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The task is ready: run it (or make it claimable).
    Dispatch(Box<TaskSpec>),
    /// Stop a running attempt: SIGTERM and grace, or SIGKILL when `force`.
    Kill {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        force: bool,
    },
    /// A task's state changed: persist it, show it.
    TaskChanged(TaskId),
    /// The run's own state changed (started, finished).
    RunChanged,
}

/// A task attempt with every template rendered: all an executor needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    pub task: TaskId,
    pub name: String,
    pub attempt: u32,
    pub phase: Phase,
    pub executor: ExecSpec,
    /// The job's `env`, the task's `env`, params as `GANGER_PARAM_*`, then
    /// `GANGER_RUN_ID`, `GANGER_JOB`, `GANGER_TASK`, `GANGER_ATTEMPT`. The
    /// driver puts the inherited environment underneath.
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub tags: Vec<String>,
    /// Limits for the task's processes or container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The run's params by their declared names, for the task's job
    /// endpoint (`GET $GANGER_JOB_URL`); the script reads them from `env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The task's `body`, rendered, for its job endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExecSpec {
    Process {
        script: String,
    },
    Docker {
        spec: DockerSpec,
        script: Option<String>,
    },
    Http(HttpSpec),
    Job(ChildJobSpec),
}

impl ExecSpec {
    pub fn name(&self) -> &'static str {
        match self {
            ExecSpec::Process { .. } => "process",
            ExecSpec::Docker { .. } => "docker",
            ExecSpec::Http(_) => "http",
            ExecSpec::Job(_) => "job",
        }
    }
}

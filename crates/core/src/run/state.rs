use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::event::Phase;
use crate::model::{Job, TaskId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Ready,
    Claimed,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Skipped,
    /// An attempt whose lease expired. A task never ends `lost`: the retry
    /// policy turns it into another attempt or `failed`.
    Lost,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::TimedOut
                | TaskStatus::Cancelled
                | TaskStatus::Skipped
        )
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskStatus::Ready | TaskStatus::Claimed | TaskStatus::Running
        )
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            TaskStatus::Failed | TaskStatus::TimedOut | TaskStatus::Lost
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Ready => "ready",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Lost => "lost",
        }
    }
}

/// Why a running attempt was asked to stop; decides its final status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// The task's own `timeout`.
    Timeout,
    /// The run's `timeout`.
    RunTimeout,
    Stop,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub agent: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Ended by the scheduler's own interruption (a server restart), not by
    /// the task: it does not count against the retry budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// How far along the task said it is (0.0 to 1.0), through its job
    /// endpoint: for people only, it decides nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

/// One line of execution of a task: its main work, or its undo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    pub status: TaskStatus,
    pub attempts: Vec<Attempt>,
    /// Why the task ended as it did (skipped, cancelled, failed), for people.
    pub reason: Option<String>,
    pub kill: Option<KillReason>,
    pub deadline: Option<Timestamp>,
    /// Attempts made before the run was last retried as a whole: the retry
    /// budget counts only the attempts after them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Exec {
    pub(crate) fn new() -> Exec {
        Exec {
            status: TaskStatus::Pending,
            attempts: Vec::new(),
            reason: None,
            kill: None,
            deadline: None,
            earlier_attempts: 0,
        }
    }

    /// Attempts that count against the retry budget: those since the run was
    /// last retried, less the ones the scheduler interrupted.
    pub(crate) fn counted_attempts(&self) -> u32 {
        let since = self.attempts.len().min(self.earlier_attempts as usize);
        self.attempts[since..]
            .iter()
            .filter(|a| !a.interrupted)
            .count() as u32
    }

    pub fn attempt(&self) -> u32 {
        self.attempts.last().map_or(0, |a| a.number)
    }

    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.attempts.last().and_then(|a| a.exit_code)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub main: Exec,
    pub undo: Option<Exec>,
    /// The nearest downstream tasks whose undo must finish before this
    /// one's undo starts (their own undos wait for theirs in turn).
    pub undo_after: Vec<TaskId>,
    /// How many of `undo_after` have not finished their undo yet.
    #[serde(skip)]
    pub(crate) undo_blocked: usize,
    /// The tasks whose undo waits for this one's.
    #[serde(skip)]
    pub(crate) undo_waiters: Vec<TaskId>,
    pub outputs: BTreeMap<String, String>,
    /// When a failed attempt will be tried again.
    pub retry_at: Option<Timestamp>,
}

impl TaskState {
    pub fn status(&self) -> TaskStatus {
        self.main.status
    }

    /// Status and attempt number of one phase, if that phase exists.
    pub fn exec_status(&self, phase: Phase) -> Option<(TaskStatus, u32)> {
        let exec = match phase {
            Phase::Main => &self.main,
            Phase::Undo => self.undo.as_ref()?,
        };
        Some((exec.status, exec.attempt()))
    }

    pub(crate) fn exec_mut(&mut self, phase: Phase) -> Option<&mut Exec> {
        match phase {
            Phase::Main => Some(&mut self.main),
            Phase::Undo => self.undo.as_mut(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("saved run state is not valid: {0}")]
    Json(String),
    #[error(
        "saved run {run} has {saved} tasks but its job definition has {job}: restore it with the version it started with"
    )]
    JobMismatch {
        run: String,
        saved: usize,
        job: usize,
    },
}

/// Why the run is winding down before its tasks are done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Stop {
    /// Someone cancelled the run; `force` also kills `always` tasks.
    Cancel { reason: String, force: bool },
    /// `fail_fast`: a task failed the run.
    FailFast { task: String },
    /// The run's own `timeout` passed.
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    RunDeadline,
    Retry(TaskId),
    TaskDeadline(TaskId, Phase, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) at: Timestamp,
    pub(crate) kind: TimerKind,
}

/// The whole state of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub id: String,
    #[serde(skip, default = "empty_job")]
    pub job: Arc<Job>,
    pub params: BTreeMap<String, String>,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub stop: Option<Stop>,
    /// A task failed in a way that fails the run.
    pub failing: bool,
    pub undoing: bool,
    pub tasks: Vec<TaskState>,
    /// Tasks whose main execution is not terminal yet.
    #[serde(skip)]
    pub(crate) unsettled: usize,
    /// Undo executions not terminal yet.
    #[serde(skip)]
    pub(crate) undo_unsettled: usize,
    /// For each task, how many of its needs have not settled yet: a task is
    /// examined in full only when this reaches zero (or an edge fails), so a
    /// wide barrier costs O(edges), not O(edges × needs).
    #[serde(skip)]
    pub(crate) waiting_needs: Vec<usize>,
    #[serde(skip)]
    pub(crate) timers: BTreeSet<Timer>,
    /// Tasks to re-examine because something they depend on changed.
    #[serde(skip)]
    pub(crate) dirty: Vec<(TaskId, Phase)>,
}

fn empty_job() -> Arc<Job> {
    Arc::new(Job {
        name: String::new(),
        source: String::new(),
        description: None,
        params: Vec::new(),
        env: Vec::new(),
        concurrency: None,
        concurrency_key: None,
        queue: Default::default(),
        priority: 0,
        timeout: None,
        fail_fast: false,
        schedules: Vec::new(),
        tasks: Vec::new(),
        dependants: Vec::new(),
    })
}

impl RunState {
    /// A queued run. `params` must come from [`resolve_params`](crate::params::resolve_params).
    pub fn new(
        id: String,
        job: Arc<Job>,
        params: BTreeMap<String, String>,
        now: Timestamp,
    ) -> RunState {
        let n = job.tasks.len();
        let mut run = RunState {
            id,
            job,
            params,
            status: RunStatus::Queued,
            reason: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            stop: None,
            failing: false,
            undoing: false,
            tasks: (0..n)
                .map(|_| TaskState {
                    main: Exec::new(),
                    undo: None,
                    undo_after: Vec::new(),
                    undo_blocked: 0,
                    undo_waiters: Vec::new(),
                    outputs: BTreeMap::new(),
                    retry_at: None,
                })
                .collect(),
            unsettled: 0,
            undo_unsettled: 0,
            waiting_needs: Vec::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
        };
        run.rebuild();
        run
    }

    /// The run as JSON, for a store. Everything but the job definition is
    /// kept: the definition is stored once per version, not once per run.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// A run saved by [`RunState::to_json`], reattached to its job's
    /// definition (the same version it started with).
    pub fn from_json(json: &str, job: Arc<Job>) -> Result<RunState, RestoreError> {
        let mut run: RunState =
            serde_json::from_str(json).map_err(|e| RestoreError::Json(e.to_string()))?;
        if run.tasks.len() != job.tasks.len() {
            return Err(RestoreError::JobMismatch {
                run: run.id,
                saved: run.tasks.len(),
                job: job.tasks.len(),
            });
        }
        run.job = job;
        run.rebuild();
        Ok(run)
    }

    /// Derives the bookkeeping that is not saved (counters, reverse links,
    /// timers) from the saved state, so a restored run cannot disagree with
    /// itself.
    pub(super) fn rebuild(&mut self) {
        let job = Arc::clone(&self.job);
        let main_open = |s: &RunState, t: TaskId| !s.tasks[t].main.status.is_terminal();
        let undo_open = |s: &RunState, t: TaskId| {
            s.tasks[t]
                .undo
                .as_ref()
                .is_some_and(|u| !u.status.is_terminal())
        };
        self.unsettled = (0..self.tasks.len())
            .filter(|&t| main_open(self, t))
            .count();
        self.undo_unsettled = (0..self.tasks.len())
            .filter(|&t| undo_open(self, t))
            .count();
        self.waiting_needs = job
            .tasks
            .iter()
            .map(|d| d.needs.iter().filter(|n| main_open(self, n.task)).count())
            .collect();
        for t in 0..self.tasks.len() {
            self.tasks[t].undo_waiters.clear();
        }
        for t in 0..self.tasks.len() {
            let blockers: Vec<TaskId> = self.tasks[t]
                .undo_after
                .iter()
                .copied()
                .filter(|&d| undo_open(self, d))
                .collect();
            self.tasks[t].undo_blocked = blockers.len();
            for d in blockers {
                self.tasks[d].undo_waiters.push(t);
            }
        }
        self.timers.clear();
        if self.status != RunStatus::Running {
            return;
        }
        if let (Some(timeout), Some(started)) = (job.timeout, self.started_at)
            && !matches!(self.stop, Some(Stop::Timeout))
        {
            let at = started
                .checked_add(
                    jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX),
                )
                .unwrap_or(Timestamp::MAX);
            self.timers.insert(Timer {
                at,
                kind: TimerKind::RunDeadline,
            });
        }
        for (t, state) in self.tasks.iter().enumerate() {
            if let Some(at) = state.retry_at {
                self.timers.insert(Timer {
                    at,
                    kind: TimerKind::Retry(t),
                });
            }
            for (phase, exec) in [
                (Phase::Main, Some(&state.main)),
                (Phase::Undo, state.undo.as_ref()),
            ] {
                if let Some(exec) = exec
                    && let Some(at) = exec.deadline
                    && exec.status.is_active()
                    && exec.kill.is_none()
                {
                    self.timers.insert(Timer {
                        at,
                        kind: TimerKind::TaskDeadline(t, phase, exec.attempt()),
                    });
                }
            }
        }
    }

    /// When the driver must send [`Event::Tick`](super::Event::Tick) next.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.timers.first().map(|t| t.at)
    }

    pub fn task_name(&self, task: TaskId) -> &str {
        &self.job.tasks[task].name
    }
}

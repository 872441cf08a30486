//! The transition function. Every rule about when a task runs, retries,
//! is skipped, cancelled or undone, and how a run ends, is here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::event::{Decision, Event, EventError, Exit, Phase};
use super::render;
use super::state::{
    Attempt, Exec, KillReason, RunState, RunStatus, Stop, TaskStatus, Timer, TimerKind,
};
use crate::model::{Condition, Need, TaskId};
use crate::units::format_duration;

fn after(now: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    now.checked_add(d).unwrap_or(Timestamp::MAX)
}

impl RunState {
    /// Applies one event at time `now` and returns what the driver must do.
    pub fn apply(&mut self, event: Event, now: Timestamp) -> Result<Vec<Decision>, EventError> {
        let mut out = Vec::new();
        match event {
            Event::Start => self.start(now, &mut out)?,
            Event::Cancel { reason, force } => self.cancel(reason, force, now, &mut out)?,
            Event::Tick => self.tick(now, &mut out),
            Event::TaskClaimed {
                task,
                attempt,
                phase,
                agent,
            } => {
                self.check_running()?;
                let exec = self.active_exec(task, attempt, phase, &[TaskStatus::Ready])?;
                exec.status = TaskStatus::Claimed;
                if let Some(a) = exec.attempts.last_mut() {
                    a.status = TaskStatus::Claimed;
                    a.agent = agent;
                }
                out.push(Decision::TaskChanged(task));
            }
            Event::TaskStarted {
                task,
                attempt,
                phase,
                agent,
            } => {
                self.check_running()?;
                let timeout = self.job.tasks.get(task).and_then(|t| t.timeout);
                let exec = self.active_exec(
                    task,
                    attempt,
                    phase,
                    &[TaskStatus::Ready, TaskStatus::Claimed],
                )?;
                exec.status = TaskStatus::Running;
                if let Some(a) = exec.attempts.last_mut() {
                    a.status = TaskStatus::Running;
                    a.started_at = Some(now);
                    if agent.is_some() {
                        a.agent = agent;
                    }
                }
                if let Some(t) = timeout {
                    let at = after(now, t);
                    exec.deadline = Some(at);
                    self.timers.insert(Timer {
                        at,
                        kind: TimerKind::TaskDeadline(task, phase, attempt),
                    });
                }
                out.push(Decision::TaskChanged(task));
            }
            Event::TaskProgress {
                task,
                attempt,
                phase,
                progress,
            } => {
                self.check_running()?;
                // Claimed too: the task may speak before its start is
                // reported, the two travel separately.
                let exec = self.active_exec(
                    task,
                    attempt,
                    phase,
                    &[TaskStatus::Claimed, TaskStatus::Running],
                )?;
                if let Some(a) = exec.attempts.last_mut() {
                    // Drivers check the range; a bad value is clamped
                    // rather than kept (NaN reads as nothing).
                    a.progress = (!progress.is_nan()).then(|| progress.clamp(0.0, 1.0));
                }
                out.push(Decision::TaskChanged(task));
            }
            Event::TaskFinished {
                task,
                attempt,
                phase,
                exit,
                outputs,
            } => {
                self.check_running()?;
                self.active_exec(
                    task,
                    attempt,
                    phase,
                    &[TaskStatus::Ready, TaskStatus::Claimed, TaskStatus::Running],
                )?;
                match phase {
                    Phase::Main => self.main_finished(task, exit, outputs, now, &mut out),
                    Phase::Undo => self.undo_finished(task, exit, now, &mut out),
                }
            }
        }
        self.settle(now, &mut out);
        Ok(out)
    }

    fn check_running(&self) -> Result<(), EventError> {
        match self.status {
            RunStatus::Queued => Err(EventError::NotStarted),
            RunStatus::Running => Ok(()),
            _ => Err(EventError::Finished),
        }
    }

    /// The execution an agent report is about, if the report is current:
    /// the fencing check against stale attempts.
    fn active_exec(
        &mut self,
        task: TaskId,
        attempt: u32,
        phase: Phase,
        accepted: &[TaskStatus],
    ) -> Result<&mut Exec, EventError> {
        let name = self
            .job
            .tasks
            .get(task)
            .map(|t| t.name.clone())
            .ok_or(EventError::UnknownTask(task))?;
        let exec = self.tasks[task].exec_mut(phase);
        match exec {
            Some(e) if e.attempt() == attempt && accepted.contains(&e.status) => Ok(e),
            _ => Err(EventError::Stale {
                task: name,
                attempt,
                phase,
            }),
        }
    }

    fn start(&mut self, now: Timestamp, out: &mut Vec<Decision>) -> Result<(), EventError> {
        match self.status {
            RunStatus::Queued => {}
            RunStatus::Running => return Ok(()),
            _ => return Err(EventError::Finished),
        }
        self.status = RunStatus::Running;
        self.started_at = Some(now);
        if let Some(t) = self.job.timeout {
            self.timers.insert(Timer {
                at: after(now, t),
                kind: TimerKind::RunDeadline,
            });
        }
        out.push(Decision::RunChanged);
        // The roots of a new run; in a retried run also the tasks whose
        // needs all kept their results.
        let settled: Vec<TaskId> = (0..self.tasks.len())
            .filter(|&t| {
                self.tasks[t].main.status == TaskStatus::Pending && self.waiting_needs[t] == 0
            })
            .collect();
        self.dirty
            .extend(settled.into_iter().map(|t| (t, Phase::Main)));
        Ok(())
    }

    /// Prepares a failed or cancelled run to run again: a task that
    /// succeeded keeps its result and outputs (unless compensation undid
    /// it); every other task starts over with a fresh retry budget, its
    /// attempt numbers continuing (they are fencing tokens). The run returns
    /// to `queued`: the driver admits it again and sends [`Event::Start`].
    /// Returns how many tasks will run again.
    pub fn reset_for_retry(&mut self) -> Result<usize, EventError> {
        match self.status {
            RunStatus::Failed | RunStatus::Cancelled => {}
            RunStatus::Succeeded => return Err(EventError::Succeeded),
            RunStatus::Queued | RunStatus::Running => return Err(EventError::Unfinished),
        }
        let mut again = 0;
        for state in &mut self.tasks {
            let undone = state.undo.as_ref().is_some_and(|u| !u.attempts.is_empty());
            state.undo = None;
            state.undo_after.clear();
            if state.main.status == TaskStatus::Succeeded && !undone {
                continue;
            }
            again += 1;
            let main = &mut state.main;
            main.status = TaskStatus::Pending;
            main.reason = None;
            main.kill = None;
            main.deadline = None;
            main.earlier_attempts = main.attempts.len() as u32;
            state.outputs.clear();
            state.retry_at = None;
        }
        self.status = RunStatus::Queued;
        self.reason = None;
        self.started_at = None;
        self.finished_at = None;
        self.stop = None;
        self.failing = false;
        self.undoing = false;
        self.rebuild();
        Ok(again)
    }

    fn cancel(
        &mut self,
        reason: String,
        force: bool,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) -> Result<(), EventError> {
        match self.status {
            RunStatus::Queued => {
                self.stop = Some(Stop::Cancel {
                    reason: reason.clone(),
                    force,
                });
                for t in 0..self.tasks.len() {
                    self.finish_main(t, TaskStatus::Cancelled, Some(reason.clone()), out);
                }
                self.finish(now, out);
                Ok(())
            }
            // Compensation is not interrupted by a plain cancel; a forced one stops it.
            RunStatus::Running if self.undoing && !force => Ok(()),
            RunStatus::Running => {
                self.begin_stop(Stop::Cancel { reason, force }, out);
                Ok(())
            }
            _ => Err(EventError::Finished),
        }
    }

    fn stop_reason(&self) -> String {
        match &self.stop {
            Some(Stop::Cancel { reason, .. }) => reason.clone(),
            Some(Stop::FailFast { task }) => format!("fail_fast: task `{task}` failed"),
            Some(Stop::Timeout) => "the run timed out".into(),
            None => String::new(),
        }
    }

    fn forced(&self) -> bool {
        matches!(self.stop, Some(Stop::Cancel { force: true, .. }))
    }

    /// Whether a task still runs while the run is stopping.
    fn survives_stop(&self, task: TaskId) -> bool {
        self.job.tasks[task].always && !self.forced()
    }

    fn begin_stop(&mut self, stop: Stop, out: &mut Vec<Decision>) {
        let upgrade = matches!(stop, Stop::Cancel { force: true, .. });
        match &mut self.stop {
            None => self.stop = Some(stop),
            // A second, forced cancel escalates whatever stop is under way.
            Some(Stop::Cancel { force, .. }) if upgrade => *force = true,
            Some(_) if upgrade => self.stop = Some(stop),
            Some(_) => return,
        }
        let kill_reason = if matches!(self.stop, Some(Stop::Timeout)) {
            KillReason::RunTimeout
        } else {
            KillReason::Stop
        };
        let force = self.forced();
        let mut unstarted = Vec::new();
        for t in 0..self.tasks.len() {
            for phase in [Phase::Main, Phase::Undo] {
                // Compensation is stopped only by force; `always` tasks likewise.
                let survives = match phase {
                    Phase::Main => self.survives_stop(t),
                    Phase::Undo => !force,
                };
                let Some(exec) = self.tasks[t].exec_mut(phase) else {
                    continue;
                };
                match exec.status {
                    TaskStatus::Claimed | TaskStatus::Running
                        if !survives && (exec.kill.is_none() || force) =>
                    {
                        exec.kill.get_or_insert(kill_reason);
                        out.push(Decision::Kill {
                            task: t,
                            attempt: exec.attempt(),
                            phase,
                            force,
                        });
                    }
                    // Dispatched but taken by no one yet: nothing to kill.
                    TaskStatus::Ready if !survives => unstarted.push((t, phase)),
                    TaskStatus::Pending => self.dirty.push((t, phase)),
                    _ => {}
                }
            }
        }
        let reason = self.stop_reason();
        for (t, phase) in unstarted {
            if let Some(a) = self.tasks[t]
                .exec_mut(phase)
                .and_then(|e| e.attempts.last_mut())
            {
                a.status = TaskStatus::Cancelled;
                a.reason = Some(reason.clone());
            }
            match phase {
                Phase::Main => {
                    self.finish_main(t, TaskStatus::Cancelled, Some(reason.clone()), out)
                }
                Phase::Undo => {
                    self.finish_undo(t, TaskStatus::Cancelled, Some(reason.clone()), out)
                }
            }
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Decision>) {
        while let Some(timer) = self.timers.first().copied() {
            if timer.at > now {
                break;
            }
            self.timers.pop_first();
            if self.status != RunStatus::Running {
                continue;
            }
            match timer.kind {
                TimerKind::RunDeadline => {
                    if !matches!(self.stop, Some(Stop::Timeout)) {
                        self.failing = true;
                        let limit = self.job.timeout.map(format_duration).unwrap_or_default();
                        self.reason = Some(format!("the run timed out after {limit}"));
                        self.begin_stop(Stop::Timeout, out);
                    }
                }
                TimerKind::Retry(t) => {
                    let state = &mut self.tasks[t];
                    if state.retry_at == Some(timer.at) && state.main.status == TaskStatus::Pending
                    {
                        state.retry_at = None;
                        self.dirty.push((t, Phase::Main));
                    }
                }
                TimerKind::TaskDeadline(t, phase, attempt) => {
                    let Some(exec) = self.tasks[t].exec_mut(phase) else {
                        continue;
                    };
                    if exec.attempt() == attempt
                        && exec.deadline == Some(timer.at)
                        && exec.status.is_active()
                        && exec.kill.is_none()
                    {
                        exec.kill = Some(KillReason::Timeout);
                        out.push(Decision::Kill {
                            task: t,
                            attempt,
                            phase,
                            force: false,
                        });
                    }
                }
            }
        }
    }

    fn main_finished(
        &mut self,
        t: TaskId,
        exit: Exit,
        outputs: BTreeMap<String, String>,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let def = &self.job.tasks[t];
        let routed = matches!(exit, Exit::Code(c) if def.routed_exit_codes.contains(&c));
        let (retry, timeout) = (def.retry, def.timeout);
        let exec = &mut self.tasks[t].main;
        let kill = exec.kill.take();
        exec.deadline = None;
        let status = attempt_status(&exit, kill);
        let reason = match status {
            TaskStatus::Cancelled => Some(self.stop_reason()),
            _ => describe_exit(&exit, status, kill, timeout),
        };
        let exec = &mut self.tasks[t].main;
        if let Some(a) = exec.attempts.last_mut() {
            record_exit(a, &exit, status, reason.clone(), now);
        }
        self.tasks[t].outputs = outputs;
        let interrupted = matches!(exit, Exit::Interrupted(_));
        let counted = self.tasks[t].main.counted_attempts();
        let retryable = status.is_failure()
            && !routed
            && self.stop.is_none()
            && (interrupted || counted <= retry.attempts);
        if retryable {
            let delay = if interrupted {
                Duration::ZERO
            } else {
                retry.delay_after(counted)
            };
            let state = &mut self.tasks[t];
            state.main.status = TaskStatus::Pending;
            state.main.reason = reason;
            if delay.is_zero() {
                self.dirty.push((t, Phase::Main));
            } else {
                let at = after(now, delay);
                state.retry_at = Some(at);
                self.timers.insert(Timer {
                    at,
                    kind: TimerKind::Retry(t),
                });
            }
            out.push(Decision::TaskChanged(t));
            return;
        }
        let final_status = if status == TaskStatus::Lost {
            TaskStatus::Failed
        } else {
            status
        };
        self.finish_main(t, final_status, reason, out);
    }

    /// Ends a task's main execution for good and wakes what depends on it.
    fn finish_main(
        &mut self,
        t: TaskId,
        status: TaskStatus,
        reason: Option<String>,
        out: &mut Vec<Decision>,
    ) {
        let exec = &mut self.tasks[t].main;
        if exec.status.is_terminal() {
            return;
        }
        exec.status = status;
        exec.reason = reason;
        exec.kill = None;
        exec.deadline = None;
        self.tasks[t].retry_at = None;
        self.unsettled -= 1;
        out.push(Decision::TaskChanged(t));
        if self.fails_run(t) {
            self.failing = true;
            if self.job.fail_fast && self.stop.is_none() {
                let task = self.job.tasks[t].name.clone();
                self.begin_stop(Stop::FailFast { task }, out);
            }
        }
        let job = Arc::clone(&self.job);
        for &(d, need) in &job.dependants[t] {
            self.waiting_needs[d] -= 1;
            // Examine the dependant when its last need settled, or at once
            // when this edge rules it out (it will be skipped).
            if self.waiting_needs[d] == 0
                || (!job.tasks[d].always && !self.holds(&job.tasks[d].needs[need]))
            {
                self.dirty.push((d, Phase::Main));
            }
        }
    }

    /// A task fails the run when it failed, unless it may fail or its exit
    /// code is a branch it routes through its own `on_exit_code`.
    fn fails_run(&self, t: TaskId) -> bool {
        let def = &self.job.tasks[t];
        let exec = &self.tasks[t].main;
        let routed = exec
            .exit_code()
            .is_some_and(|c| def.routed_exit_codes.contains(&c));
        exec.status.is_failure() && !def.allow_failure && !routed
    }

    fn holds(&self, need: &Need) -> bool {
        let dep = &self.tasks[need.task].main;
        let def = &self.job.tasks[need.task];
        // A routed exit code is a declared branch, not a failure to react to.
        let routed = dep
            .exit_code()
            .is_some_and(|c| def.routed_exit_codes.contains(&c));
        need.conditions.iter().any(|c| match c {
            Condition::Success => {
                dep.status == TaskStatus::Succeeded
                    || (def.allow_failure && dep.status.is_failure())
            }
            Condition::Failure => dep.status.is_failure() && !routed,
            Condition::Always => true,
            Condition::Skipped => dep.status == TaskStatus::Skipped,
            Condition::ExitCodes(codes) => dep.exit_code().is_some_and(|c| codes.contains(&c)),
        })
    }

    /// Re-examines a pending task: start it, skip it, cancel it, or wait.
    fn evaluate_main(&mut self, t: TaskId, now: Timestamp, out: &mut Vec<Decision>) {
        if self.tasks[t].main.status != TaskStatus::Pending {
            return;
        }
        // Before the retry check: a task waiting out a retry delay is not
        // started, so a stop cancels it now rather than when the delay ends.
        if self.stop.is_some() && !self.survives_stop(t) {
            let reason = self.stop_reason();
            self.finish_main(t, TaskStatus::Cancelled, Some(reason), out);
            return;
        }
        if self.tasks[t].retry_at.is_some() {
            return;
        }
        let def = &self.job.tasks[t];
        let settled = self.waiting_needs[t] == 0;
        if def.always {
            if settled {
                self.make_ready(t, now, out);
            }
            return;
        }
        let unmet = def
            .needs
            .iter()
            .find(|need| self.tasks[need.task].main.status.is_terminal() && !self.holds(need));
        if let Some(need) = unmet {
            let conditions: Vec<String> = need.conditions.iter().map(ToString::to_string).collect();
            let reason = format!(
                "needs `{}` to end with {}, but it {}",
                self.job.tasks[need.task].name,
                conditions.join(" or "),
                self.tasks[need.task].main.status.as_str()
            );
            self.finish_main(t, TaskStatus::Skipped, Some(reason), out);
        } else if settled {
            self.make_ready(t, now, out);
        }
    }

    fn make_ready(&mut self, t: TaskId, now: Timestamp, out: &mut Vec<Decision>) {
        let main = &self.tasks[t].main;
        let first = main.attempts.len() == main.earlier_attempts as usize;
        if first {
            match render::condition(self, t) {
                Ok(true) => {}
                Ok(false) => {
                    let source = self.job.tasks[t].condition.clone().unwrap_or_default();
                    self.finish_main(
                        t,
                        TaskStatus::Skipped,
                        Some(format!("`if: {source}` is false")),
                        out,
                    );
                    return;
                }
                Err(e) => return self.fail_unstarted(t, e.to_string(), now, out),
            }
        }
        let def = &self.job.tasks[t];
        if def.for_each.is_some() {
            return self.fail_unstarted(
                t,
                "for_each fan-out is not supported by this version of ganger yet".into(),
                now,
                out,
            );
        }
        let number = self.tasks[t].main.attempt() + 1;
        if def.run.is_none() && matches!(def.executor, crate::model::Executor::Process) {
            // A task with nothing to run is a join point: it succeeds at once.
            let exec = &mut self.tasks[t].main;
            exec.attempts.push(Attempt {
                number,
                status: TaskStatus::Succeeded,
                exit_code: None,
                signal: None,
                reason: None,
                agent: None,
                started_at: Some(now),
                finished_at: Some(now),
                interrupted: false,
                progress: None,
            });
            self.finish_main(t, TaskStatus::Succeeded, None, out);
            return;
        }
        match render::task_spec(self, t, number, Phase::Main) {
            Ok(spec) => {
                let exec = &mut self.tasks[t].main;
                exec.status = TaskStatus::Ready;
                exec.attempts.push(new_attempt(number));
                out.push(Decision::TaskChanged(t));
                out.push(Decision::Dispatch(Box::new(spec)));
            }
            Err(e) => self.fail_unstarted(t, e.to_string(), now, out),
        }
    }

    /// A task that cannot even start (a template error): one failed attempt, no retry.
    fn fail_unstarted(
        &mut self,
        t: TaskId,
        reason: String,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let exec = &mut self.tasks[t].main;
        let mut attempt = new_attempt(exec.attempt() + 1);
        attempt.status = TaskStatus::Failed;
        attempt.reason = Some(reason.clone());
        attempt.finished_at = Some(now);
        exec.attempts.push(attempt);
        self.finish_main(t, TaskStatus::Failed, Some(reason), out);
    }

    /// Runs when every task has settled: start compensation or finish.
    fn settle(&mut self, now: Timestamp, out: &mut Vec<Decision>) {
        if self.status != RunStatus::Running {
            self.dirty.clear();
            return;
        }
        loop {
            // In batches, first in first out, so tasks start in declaration order.
            while !self.dirty.is_empty() {
                for (t, phase) in std::mem::take(&mut self.dirty) {
                    match phase {
                        Phase::Main => self.evaluate_main(t, now, out),
                        Phase::Undo => self.evaluate_undo(t, now, out),
                    }
                }
            }
            if self.unsettled > 0 {
                return;
            }
            if !self.undoing
                && self.failing
                && !matches!(self.stop, Some(Stop::Cancel { .. }))
                && self.begin_undo()
            {
                continue;
            }
            if self.undo_unsettled == 0 {
                self.finish(now, out);
            }
            return;
        }
    }

    /// Compensation: every succeeded task with `undo`, newest first along
    /// the edges (a task's undo waits for the undos of its dependants).
    fn begin_undo(&mut self) -> bool {
        self.undoing = true;
        let n = self.tasks.len();
        let is_candidate: Vec<bool> = (0..n)
            .map(|t| {
                self.tasks[t].main.status == TaskStatus::Succeeded
                    && self.job.tasks[t].undo.is_some()
            })
            .collect();
        let candidates: Vec<TaskId> = (0..n).filter(|&t| is_candidate[t]).collect();
        // Each undo waits for the nearest undos downstream of it (through
        // tasks without undo); those wait for theirs, so the order holds
        // along every path at a cost linear in the edges walked.
        let mut seen = vec![usize::MAX; n];
        for &t in &candidates {
            let mut nearest = Vec::new();
            let mut stack: Vec<TaskId> = self.job.dependants[t].iter().map(|&(d, _)| d).collect();
            while let Some(d) = stack.pop() {
                if seen[d] == t {
                    continue;
                }
                seen[d] = t;
                if is_candidate[d] {
                    nearest.push(d);
                } else {
                    stack.extend(self.job.dependants[d].iter().map(|&(x, _)| x));
                }
            }
            for &d in &nearest {
                self.tasks[d].undo_waiters.push(t);
            }
            let state = &mut self.tasks[t];
            state.undo = Some(Exec::new());
            state.undo_blocked = nearest.len();
            state.undo_after = nearest;
            self.dirty.push((t, Phase::Undo));
        }
        self.undo_unsettled = candidates.len();
        !candidates.is_empty()
    }

    fn evaluate_undo(&mut self, t: TaskId, now: Timestamp, out: &mut Vec<Decision>) {
        if self.tasks[t]
            .undo
            .as_ref()
            .is_none_or(|u| u.status != TaskStatus::Pending)
        {
            return;
        }
        if self.forced() {
            let reason = self.stop_reason();
            return self.finish_undo(t, TaskStatus::Cancelled, Some(reason), out);
        }
        if self.tasks[t].undo_blocked > 0 {
            return;
        }
        match render::task_spec(self, t, 1, Phase::Undo) {
            Ok(spec) => {
                if let Some(undo) = self.tasks[t].undo.as_mut() {
                    undo.status = TaskStatus::Ready;
                    undo.attempts.push(new_attempt(1));
                }
                out.push(Decision::TaskChanged(t));
                out.push(Decision::Dispatch(Box::new(spec)));
            }
            Err(e) => {
                if let Some(undo) = self.tasks[t].undo.as_mut() {
                    let mut attempt = new_attempt(1);
                    attempt.status = TaskStatus::Failed;
                    attempt.finished_at = Some(now);
                    undo.attempts.push(attempt);
                }
                self.finish_undo(t, TaskStatus::Failed, Some(e.to_string()), out);
            }
        }
    }

    fn undo_finished(&mut self, t: TaskId, exit: Exit, now: Timestamp, out: &mut Vec<Decision>) {
        let timeout = self.job.tasks[t].timeout;
        let Some(exec) = self.tasks[t].undo.as_mut() else {
            return;
        };
        let kill = exec.kill.take();
        let status = match attempt_status(&exit, kill) {
            TaskStatus::Lost => TaskStatus::Failed,
            s => s,
        };
        let reason = describe_exit(&exit, status, kill, timeout);
        if let Some(a) = exec.attempts.last_mut() {
            record_exit(a, &exit, status, reason.clone(), now);
        }
        self.finish_undo(t, status, reason, out);
    }

    fn finish_undo(
        &mut self,
        t: TaskId,
        status: TaskStatus,
        reason: Option<String>,
        out: &mut Vec<Decision>,
    ) {
        let Some(exec) = self.tasks[t].undo.as_mut() else {
            return;
        };
        if exec.status.is_terminal() {
            return;
        }
        exec.status = status;
        exec.reason = reason;
        exec.deadline = None;
        self.undo_unsettled -= 1;
        out.push(Decision::TaskChanged(t));
        for w in std::mem::take(&mut self.tasks[t].undo_waiters) {
            self.tasks[w].undo_blocked -= 1;
            if self.tasks[w].undo_blocked == 0 {
                self.dirty.push((w, Phase::Undo));
            }
        }
    }

    fn finish(&mut self, now: Timestamp, out: &mut Vec<Decision>) {
        let (status, reason) = match &self.stop {
            Some(Stop::Cancel { reason, .. }) if !self.undoing => {
                (RunStatus::Cancelled, Some(reason.clone()))
            }
            _ if self.failing => (
                RunStatus::Failed,
                self.reason.clone().or_else(|| Some(self.failure_summary())),
            ),
            _ => (RunStatus::Succeeded, None),
        };
        self.status = status;
        self.reason = reason;
        self.finished_at = Some(now);
        self.timers.clear();
        out.push(Decision::RunChanged);
    }

    fn failure_summary(&self) -> String {
        let failed: Vec<String> = (0..self.tasks.len())
            .filter(|&t| self.fails_run(t))
            .map(|t| {
                let why = self.tasks[t].main.reason.as_deref().unwrap_or("failed");
                format!("`{}` ({why})", self.job.tasks[t].name)
            })
            .collect();
        format!("failed tasks: {}", failed.join(", "))
    }
}

fn new_attempt(number: u32) -> Attempt {
    Attempt {
        number,
        status: TaskStatus::Ready,
        exit_code: None,
        signal: None,
        reason: None,
        agent: None,
        started_at: None,
        finished_at: None,
        interrupted: false,
        progress: None,
    }
}

fn attempt_status(exit: &Exit, kill: Option<KillReason>) -> TaskStatus {
    match (exit, kill) {
        (_, Some(KillReason::Timeout | KillReason::RunTimeout)) => TaskStatus::TimedOut,
        (Exit::Code(0), _) => TaskStatus::Succeeded,
        (Exit::Lost, _) => TaskStatus::Lost,
        (_, Some(KillReason::Stop)) => TaskStatus::Cancelled,
        (Exit::Interrupted(_), _) => TaskStatus::Lost,
        _ => TaskStatus::Failed,
    }
}

fn describe_exit(
    exit: &Exit,
    status: TaskStatus,
    kill: Option<KillReason>,
    timeout: Option<Duration>,
) -> Option<String> {
    match (status, exit) {
        (TaskStatus::Succeeded, _) => None,
        (TaskStatus::TimedOut, _) if kill == Some(KillReason::RunTimeout) => {
            Some("stopped: the run timed out".into())
        }
        (TaskStatus::TimedOut, _) => Some(format!(
            "timed out after {}",
            timeout.map(format_duration).unwrap_or_default()
        )),
        (TaskStatus::Cancelled, _) => Some("stopped".into()),
        (_, Exit::Code(c)) => Some(format!("exit code {c}")),
        (_, Exit::Signal(s)) => Some(format!("killed by signal {s}")),
        (_, Exit::Error(e)) => Some(e.clone()),
        (_, Exit::Lost) => Some("lost: its lease expired".into()),
        (_, Exit::Interrupted(why)) => Some(format!("interrupted: {why}")),
    }
}

fn record_exit(
    a: &mut Attempt,
    exit: &Exit,
    status: TaskStatus,
    reason: Option<String>,
    now: Timestamp,
) {
    a.status = status;
    a.finished_at = Some(now);
    a.reason = reason;
    match exit {
        Exit::Code(c) => a.exit_code = Some(*c),
        Exit::Signal(s) => a.signal = Some(*s),
        Exit::Interrupted(_) => a.interrupted = true,
        Exit::Error(_) | Exit::Lost => {}
    }
}

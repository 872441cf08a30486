//! The engine actor: the one owner of live runs and admission lanes.
//!
//! Each turn takes every command that has arrived, applies them to the run
//! states through the core, fires due timers, starts runs that have room,
//! reaps expired leases, and then commits everything the turn changed in
//! one store transaction (group commit) together with the claims of
//! waiting agents. Only after that commit does anyone hear back: a reply
//! never tells of a change the store does not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ganger_api as api;
use ganger_core::admission::{Admission, Limits, Waiting};
use ganger_core::model::{Job, TaskId};
use ganger_core::run::{Decision, Event, EventError, Exit, Phase, RunState, TaskSpec, TaskStatus};
use ganger_store::{
    Batch, ClaimRequest, Claimable, Claimed, Committed, Fence, Inserted, NewRun, RunUpdate, Store,
    StoreError, TaskKey,
};
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::jobs::Catalog;
use super::lanes::{LaneKey, Lanes};
use super::logs::LogHub;
use super::time::millis;
use super::{EngineError, Want};

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// A task handed to an agent.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub key: TaskKey,
    pub attempt: u32,
    pub spec: TaskSpec,
}

/// What an agent tells about an attempt it holds.
#[derive(Clone, Debug)]
pub enum AgentReport {
    Started,
    /// How far along the attempt says it is (`0.0..=1.0`).
    Progress {
        progress: f64,
    },
    Finished {
        exit: Exit,
        outputs: BTreeMap<String, String>,
    },
}

/// An order to an agent about an attempt it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillOrder {
    pub key: TaskKey,
    pub attempt: u32,
    pub force: bool,
}

/// A submission checked by the handle (job found, params resolved), ready
/// for admission.
pub(crate) struct Submission {
    pub(crate) job: Arc<Job>,
    pub(crate) lane: LaneKey,
    pub(crate) new: NewRun,
    pub(crate) scheduled_at: Option<Timestamp>,
    pub(crate) state: RunState,
}

pub(crate) struct ClaimAsk {
    pub(crate) agent: String,
    pub(crate) labels: Vec<String>,
    pub(crate) executors: Vec<String>,
    pub(crate) want: Want,
    pub(crate) until: Instant,
}

pub(crate) enum Command {
    Submit(Box<Submission>, Reply<api::SubmitResponse>),
    /// `queued`: the run's stored state when the handle read it queued
    /// (used only if the run still waits when the command is applied).
    Cancel {
        id: String,
        queued: Option<Box<(Arc<Job>, RunState)>>,
        reply: Reply<()>,
    },
    Retry {
        lane: LaneKey,
        limits: Limits,
        priority: i32,
        seq: i64,
        state: Box<RunState>,
        reply: Reply<()>,
    },
    WaitReason {
        id: String,
        reply: oneshot::Sender<Option<String>>,
    },
    Claim(ClaimAsk, Reply<Vec<Assignment>>),
    Report {
        agent: String,
        key: TaskKey,
        attempt: u32,
        report: AgentReport,
        reply: Reply<()>,
    },
    /// The agent left: its pending claims answer empty, and no kill order
    /// waits for it any more.
    Forget(String),
    /// Agents' kill orders go here (one channel per agent).
    Attach {
        agent: String,
        kills: mpsc::UnboundedSender<KillOrder>,
    },
    /// Stop admitting and handing out work.
    Drain(oneshot::Sender<()>),
    /// Stop altogether once this turn is committed: later reports are
    /// refused, so attempts killed by the shutdown count as interrupted on
    /// the next start rather than as failed.
    Stop(oneshot::Sender<()>),
}

struct Live {
    state: RunState,
    lane: LaneKey,
    priority: i32,
    wakeup: Option<Timestamp>,
    /// Whether it holds one of its lane's running places.
    admitted: bool,
}

struct PendingClaim {
    ask: ClaimAsk,
    reply: Reply<Vec<Assignment>>,
    /// Whether the claim has been tried since the offers last changed.
    tried: bool,
}

/// What a turn owes people once its commit is done.
enum Owed {
    Submitted(
        Reply<api::SubmitResponse>,
        Result<api::SubmitResponse, EngineError>,
    ),
    Done(Reply<()>, Result<(), EngineError>),
}

pub(crate) struct Actor {
    store: Arc<dyn Store>,
    /// The leader lease every commit is checked against (replicas).
    fence: Option<Fence>,
    catalog: Arc<Catalog>,
    logs: LogHub,
    lease: Duration,
    /// No lease is reaped before this: agents get one lease after a
    /// (re)start to heartbeat again.
    reap_after: Instant,
    next_reap: Instant,
    live: HashMap<String, Live>,
    lanes: Lanes,
    timers: BTreeSet<(Timestamp, String)>,
    claims: Vec<PendingClaim>,
    kills: HashMap<String, mpsc::UnboundedSender<KillOrder>>,
    /// Agents whose pending claim must answer now (kill orders wait).
    woken: HashSet<String>,
    draining: bool,
    // What the current turn changed.
    new_runs: Vec<NewRun>,
    dirty: HashSet<String>,
    changed: BTreeSet<(String, TaskId)>,
    ready: Vec<Claimable>,
    owed: Vec<Owed>,
    offers_changed: bool,
    /// Work left for another turn at once (claims just applied, lanes with room).
    again: bool,
}

/// How often expired leases are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Commands taken per turn: bounds a turn's latency under a flood.
const TURN_COMMANDS: usize = 4096;

pub(crate) fn key_of(run: &str, task: TaskId, phase: Phase) -> TaskKey {
    TaskKey {
        run_id: run.to_owned(),
        task: task as u32,
        phase: phase_name(phase).to_owned(),
    }
}

pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Main => "main",
        Phase::Undo => "undo",
    }
}

fn phase_of(name: &str) -> Option<Phase> {
    match name {
        "main" => Some(Phase::Main),
        "undo" => Some(Phase::Undo),
        _ => None,
    }
}

fn stale(e: EventError) -> EngineError {
    EngineError::Stale(format!("{e}; stop this attempt"))
}

impl Actor {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        logs: LogHub,
        lease: Duration,
        fence: Option<Fence>,
    ) -> Actor {
        let now = Instant::now();
        Actor {
            store,
            fence,
            catalog,
            logs,
            lease,
            reap_after: now + lease,
            next_reap: now + lease,
            live: HashMap::new(),
            lanes: Lanes::default(),
            timers: BTreeSet::new(),
            claims: Vec::new(),
            kills: HashMap::new(),
            woken: HashSet::new(),
            draining: false,
            new_runs: Vec::new(),
            dirty: HashSet::new(),
            changed: BTreeSet::new(),
            ready: Vec::new(),
            owed: Vec::new(),
            offers_changed: true,
            again: true,
        }
    }

    /// Loads the unfinished runs. The in-process agent of the previous
    /// process is gone: its attempts are interrupted and run again.
    pub(crate) async fn recover(&mut self, local_agent: &str) -> Result<(), EngineError> {
        let now = Timestamp::now();
        for row in self.store.unfinished().await? {
            let s = &row.summary;
            let (_, job) = self.catalog.load(&s.job, Some(s.version)).await?;
            let lane = LaneKey {
                job: s.job.clone(),
                key: s.concurrency_key.clone(),
            };
            let limits = Limits::of(&job);
            if s.status == "queued" {
                self.lanes.add_waiting(
                    &lane,
                    limits,
                    Waiting {
                        id: s.id.clone(),
                        priority: s.priority,
                        seq: s.seq,
                        scheduled_at: s.scheduled_at.map(super::time::from_millis),
                    },
                );
                continue;
            }
            let state = RunState::from_json(&row.state_json, job)
                .map_err(|e| EngineError::Internal(format!("cannot restore run {}: {e}", s.id)))?;
            self.lanes.add_running(&lane, limits);
            self.live.insert(
                s.id.clone(),
                Live {
                    state,
                    lane,
                    priority: s.priority,
                    wakeup: None,
                    admitted: true,
                },
            );
            self.dirty.insert(s.id.clone());
        }
        for claim in self.store.claims_of(local_agent).await? {
            let key = &claim.claimable.key;
            let (Some(live), Some(phase)) = (self.live.get(&key.run_id), phase_of(&key.phase))
            else {
                continue;
            };
            let task = key.task as usize;
            let held = live
                .state
                .tasks
                .get(task)
                .and_then(|t| t.exec_status(phase));
            match held {
                Some((TaskStatus::Claimed | TaskStatus::Running, attempt))
                    if attempt == claim.claimable.attempt =>
                {
                    let event = Event::TaskFinished {
                        task,
                        attempt,
                        phase,
                        exit: Exit::Interrupted("the server stopped while it ran".into()),
                        outputs: BTreeMap::new(),
                    };
                    self.apply(&key.run_id.clone(), event, now);
                }
                _ => self.store.release(key).await?,
            }
        }
        // A remote agent's claim committed in the turn before its run
        // recorded it: record it now, so the agent's reports are its own.
        for claim in self.store.expired(i64::MAX).await? {
            let key = &claim.claimable.key;
            let (Some(live), Some(phase)) = (self.live.get(&key.run_id), phase_of(&key.phase))
            else {
                continue;
            };
            let task = key.task as usize;
            let ready = live
                .state
                .tasks
                .get(task)
                .and_then(|t| t.exec_status(phase))
                == Some((TaskStatus::Ready, claim.claimable.attempt));
            if claim.agent != local_agent && ready {
                let event = Event::TaskClaimed {
                    task,
                    attempt: claim.claimable.attempt,
                    phase,
                    agent: Some(claim.agent.clone()),
                };
                self.apply(&key.run_id.clone(), event, now);
            }
        }
        self.commit_turn(now).await
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut commands = Vec::with_capacity(64);
        loop {
            if !self.again {
                let wake = self.next_wake();
                tokio::select! {
                    n = rx.recv_many(&mut commands, TURN_COMMANDS) => if n == 0 { return },
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            self.again = false;
            while commands.len() < TURN_COMMANDS {
                match rx.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            let now = Timestamp::now();
            let stop = self.take(std::mem::take(&mut commands), now).await;
            self.tick(now).await;
            if let Err(e) = self.commit_turn(now).await {
                // The store refused a whole turn after retries (or another
                // replica took the lead): the memory is ahead of the store.
                // Starting again from the store is the only consistent way
                // on (crash-only); the owner of the engine does that.
                eprintln!("ganger: the engine stops: cannot persist its state: {e}");
                return;
            }
            if let Some(reply) = stop {
                let _ = reply.send(());
                return;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_reap;
        let at_instant = |t: Timestamp| {
            let wait = t.duration_since(Timestamp::now());
            Instant::now() + Duration::try_from(wait).unwrap_or(Duration::ZERO)
        };
        if let Some((t, _)) = self.timers.first() {
            wake = wake.min(at_instant(*t));
        }
        if let Some(t) = self.lanes.next_due() {
            wake = wake.min(at_instant(t));
        }
        for c in &self.claims {
            wake = wake.min(c.ask.until);
        }
        wake
    }

    /// Applies a turn's commands; returns the reply of a stop request.
    async fn take(
        &mut self,
        commands: Vec<Command>,
        now: Timestamp,
    ) -> Option<oneshot::Sender<()>> {
        let mut submissions = Vec::new();
        let mut stop = None;
        for command in commands {
            match command {
                Command::Submit(s, reply) => submissions.push((s, reply)),
                Command::Stop(reply) => {
                    self.draining = true;
                    stop = Some(reply);
                }
                other => {
                    // Submissions first keep their order among themselves;
                    // other commands do not depend on them.
                    self.command(other, now).await;
                }
            }
        }
        if !submissions.is_empty() {
            self.submit(submissions, now).await;
        }
        stop
    }

    async fn command(&mut self, command: Command, now: Timestamp) {
        match command {
            Command::Submit(..) | Command::Stop(_) => {}
            Command::Cancel { id, queued, reply } => {
                let result = self.cancel(&id, queued, now);
                self.owed.push(Owed::Done(reply, result));
            }
            Command::Retry {
                lane,
                limits,
                priority,
                seq,
                mut state,
                reply,
            } => {
                let result = if self.draining {
                    Err(EngineError::ShuttingDown)
                } else if self.live.contains_key(&state.id) || self.lanes.is_waiting(&state.id) {
                    Err(EngineError::Conflict(format!(
                        "run {} is already being retried",
                        state.id
                    )))
                } else {
                    match state.reset_for_retry() {
                        Ok(_) => {
                            let id = state.id.clone();
                            self.lanes.add_waiting(
                                &lane,
                                limits,
                                Waiting {
                                    id: id.clone(),
                                    priority,
                                    seq,
                                    scheduled_at: None,
                                },
                            );
                            self.live.insert(
                                id.clone(),
                                Live {
                                    state: *state,
                                    lane,
                                    priority,
                                    wakeup: None,
                                    admitted: false,
                                },
                            );
                            self.dirty.insert(id);
                            Ok(())
                        }
                        Err(e) => Err(EngineError::Conflict(format!("run {}: {e}", state.id))),
                    }
                };
                self.owed.push(Owed::Done(reply, result));
            }
            Command::WaitReason { id, reply } => {
                let _ = reply.send(self.lanes.wait_reason(&id, now));
            }
            Command::Claim(ask, reply) => {
                if self.draining {
                    let _ = reply.send(Ok(Vec::new()));
                } else {
                    self.claims.push(PendingClaim {
                        ask,
                        reply,
                        tried: false,
                    });
                }
            }
            Command::Report {
                agent,
                key,
                attempt,
                report,
                reply,
            } => {
                let result = self.report(&agent, &key, attempt, report, now);
                self.owed.push(Owed::Done(reply, result));
            }
            Command::Attach { agent, kills } => {
                self.kills.insert(agent, kills);
            }
            Command::Forget(agent) => {
                self.kills.remove(&agent);
                self.woken.insert(agent);
            }
            Command::Drain(reply) => {
                self.draining = true;
                for c in self.claims.drain(..) {
                    let _ = c.reply.send(Ok(Vec::new()));
                }
                let _ = reply.send(());
            }
        }
    }

    fn report(
        &mut self,
        agent: &str,
        key: &TaskKey,
        attempt: u32,
        report: AgentReport,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let phase = phase_of(&key.phase)
            .ok_or_else(|| EngineError::InvalidRequest(format!("unknown phase {:?}", key.phase)))?;
        if !self.live.contains_key(&key.run_id) {
            return Err(EngineError::Stale(format!(
                "run {} is not running; stop this attempt",
                key.run_id
            )));
        }
        let task = key.task as usize;
        // Fencing is by attempt and holder: an agent may speak only of the
        // attempts it was given.
        let current = self.live[&key.run_id]
            .state
            .tasks
            .get(task)
            .and_then(|t| match phase {
                Phase::Main => t.main.current(),
                Phase::Undo => t.undo.as_ref().and_then(|u| u.current()),
            });
        let held =
            current.is_some_and(|a| a.number == attempt && a.agent.as_deref() == Some(agent));
        if !held {
            return Err(EngineError::Stale(format!(
                "attempt {attempt} of {key} is not held by agent `{agent}`; stop it"
            )));
        }
        // A start sent again (its answer was lost) changes nothing.
        if matches!(report, AgentReport::Started)
            && current.is_some_and(|a| a.status == TaskStatus::Running)
        {
            return Ok(());
        }
        let event = match report {
            AgentReport::Started => Event::TaskStarted {
                task,
                attempt,
                phase,
                agent: Some(agent.to_owned()),
            },
            AgentReport::Progress { progress } => Event::TaskProgress {
                task,
                attempt,
                phase,
                progress,
            },
            AgentReport::Finished { exit, outputs } => Event::TaskFinished {
                task,
                attempt,
                phase,
                exit,
                outputs,
            },
        };
        self.try_apply(&key.run_id, event, now).map_err(stale)
    }

    fn cancel(
        &mut self,
        id: &str,
        queued: Option<Box<(Arc<Job>, RunState)>>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let event = Event::Cancel {
            reason: "cancelled by a user".into(),
            force: false,
        };
        if self.lanes.is_waiting(id) {
            // Waiting runs are not kept in memory: use the stored state the
            // handle read, or the one a retry left here.
            let state = match self.live.remove(id) {
                Some(live) => Some(live.state),
                None => queued.map(|b| b.1),
            };
            let Some(mut state) = state else {
                return Err(EngineError::Conflict(format!(
                    "run {id} changed while it was being cancelled; try again"
                )));
            };
            self.lanes.remove_waiting(id);
            let _ = state.apply(event, now);
            self.finish_offline(state);
            return Ok(());
        }
        if self.live.contains_key(id) {
            return match self.try_apply(id, event, now) {
                Ok(()) | Err(EventError::Finished) => Ok(()),
                Err(e) => Err(EngineError::Conflict(format!("run {id}: {e}"))),
            };
        }
        Err(EngineError::Conflict(format!(
            "run {id} has already finished; nothing to cancel"
        )))
    }

    /// A run that ended without being live (cancelled or replaced while it
    /// waited): persisted by this turn, kept only until then.
    fn finish_offline(&mut self, state: RunState) {
        let id = state.id.clone();
        let lane = LaneKey {
            job: state.job.name.clone(),
            key: None,
        };
        self.live.insert(
            id.clone(),
            Live {
                state,
                lane,
                priority: 0,
                wakeup: None,
                admitted: false,
            },
        );
        self.dirty.insert(id);
    }

    /// Admits the turn's submissions in order, each against its lane as it
    /// stands after the ones before. The runs are inserted by this turn's
    /// commit, together with everything their admission changed.
    async fn submit(
        &mut self,
        batch: Vec<(Box<Submission>, Reply<api::SubmitResponse>)>,
        now: Timestamp,
    ) {
        let mut keys: HashMap<String, String> = HashMap::new();
        for (s, reply) in batch {
            if self.draining {
                let _ = reply.send(Err(EngineError::ShuttingDown));
                continue;
            }
            if let Some(key) = &s.new.idempotency_key {
                // The actor is the only writer: what the store holds now,
                // plus this turn's submissions, is every key there is.
                let existing = match keys.get(key) {
                    Some(id) => Ok(Some(id.clone())),
                    None => self.store.run_for_key(key).await,
                };
                match existing {
                    Ok(Some(id)) => {
                        let response = api::SubmitResponse {
                            id,
                            status: "queued".into(),
                            existing: true,
                        };
                        self.owed.push(Owed::Submitted(reply, Ok(response)));
                        continue;
                    }
                    Ok(None) => {
                        keys.insert(key.clone(), s.new.id.clone());
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        continue;
                    }
                }
            }
            let limits = Limits::of(&s.job);
            let s = *s;
            let status = match self.lanes.admit(&s.lane, limits, s.scheduled_at, now) {
                Admission::Reject { reason } => {
                    let _ = reply.send(Err(EngineError::QueueFull(format!(
                        "job `{}` refused the run: {reason}",
                        s.job.name
                    ))));
                    continue;
                }
                Admission::Start => {
                    self.lanes.add_running(&s.lane, limits);
                    self.new_runs.push(s.new.clone());
                    self.start_live(s.state, s.lane, s.new.priority, now);
                    "running"
                }
                decision => {
                    // The store assigns the real submission order at commit.
                    let waiting = Waiting {
                        id: s.new.id.clone(),
                        priority: s.new.priority,
                        seq: i64::MAX,
                        scheduled_at: s.scheduled_at,
                    };
                    self.new_runs.push(s.new.clone());
                    if let Admission::Replace { cancel } = &decision {
                        self.lanes.remove_waiting(cancel);
                        self.replace(cancel, &s.new.id, now).await;
                    }
                    self.lanes.add_waiting(&s.lane, limits, waiting);
                    "queued"
                }
            };
            let response = api::SubmitResponse {
                id: s.new.id,
                status: status.into(),
                existing: false,
            };
            self.owed.push(Owed::Submitted(reply, Ok(response)));
        }
    }

    /// Cancels the waiting run `old` that `new` replaces.
    async fn replace(&mut self, old: &str, new: &str, now: Timestamp) {
        let state = match self.live.remove(old) {
            Some(live) => Some(live.state),
            None => self.load(old).await,
        };
        if let Some(mut state) = state {
            let _ = state.apply(
                Event::Cancel {
                    reason: format!("replaced by run {new} (queue strategy replace)"),
                    force: false,
                },
                now,
            );
            self.finish_offline(state);
        }
    }

    /// A run's state as stored, or as this turn will store it.
    async fn load(&self, id: &str) -> Option<RunState> {
        if let Some(new) = self.new_runs.iter().find(|r| r.id == id) {
            let (_, job) = self.catalog.load(&new.job, Some(new.version)).await.ok()?;
            return RunState::from_json(&new.state_json, job).ok();
        }
        let row = self.store.run(id).await.ok().flatten()?;
        let (_, job) = self
            .catalog
            .load(&row.summary.job, Some(row.summary.version))
            .await
            .ok()?;
        RunState::from_json(&row.state_json, job).ok()
    }

    fn start_live(&mut self, state: RunState, lane: LaneKey, priority: i32, now: Timestamp) {
        let id = state.id.clone();
        self.live.insert(
            id.clone(),
            Live {
                state,
                lane,
                priority,
                wakeup: None,
                admitted: true,
            },
        );
        self.apply(&id, Event::Start, now);
    }

    /// Timers, lanes with room, expired leases, and the claims to try.
    async fn tick(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.timers.pop_first() {
                if let Some(live) = self.live.get_mut(&id) {
                    live.wakeup = None;
                }
                self.apply(&id, Event::Tick, now);
            }
        }
        if !self.draining {
            for (lane, waiting) in self.lanes.take_startable(now) {
                let state = match self.live.remove(&waiting.id) {
                    Some(live) => Some(live.state),
                    None => self.load(&waiting.id).await,
                };
                match state {
                    Some(state) => self.start_live(state, lane, waiting.priority, now),
                    None => self.lanes.finished(&lane),
                }
            }
        }
        if Instant::now() >= self.next_reap {
            self.next_reap = Instant::now() + REAP_EVERY;
            self.reap(now).await;
        }
    }

    async fn reap(&mut self, now: Timestamp) {
        // Asked even while no lease may be judged yet: a failure seen
        // here defers the judging (see `store_failed`).
        let Ok(expired) = self.store.expired(millis(now)).await else {
            self.store_failed();
            return;
        };
        if Instant::now() < self.reap_after {
            return;
        }
        for claim in expired {
            // An agent whose lease ran out is silent: its pending claim must
            // not be handed the very retry of what it lost.
            self.woken.insert(claim.agent.clone());
            let key = claim.claimable.key.clone();
            let Some(phase) = phase_of(&key.phase) else {
                continue;
            };
            let event = Event::TaskFinished {
                task: key.task as usize,
                attempt: claim.claimable.attempt,
                phase,
                exit: Exit::Lost,
                outputs: BTreeMap::new(),
            };
            if self.live.contains_key(&key.run_id)
                && self.try_apply(&key.run_id, event, now).is_ok()
            {
                continue;
            }
            // Claimed but never reported as taken: offer it again.
            let _ = self.store.release(&key).await;
            self.offers_changed = true;
        }
    }

    fn apply(&mut self, id: &str, event: Event, now: Timestamp) {
        // Events the actor makes itself (start, tick) are refused only when
        // they no longer apply; there is nothing to do then.
        let _ = self.try_apply(id, event, now);
    }

    fn try_apply(&mut self, id: &str, event: Event, now: Timestamp) -> Result<(), EventError> {
        let Some(live) = self.live.get_mut(id) else {
            return Err(EventError::Finished);
        };
        let decisions = live.state.apply(event, now)?;
        self.dirty.insert(id.to_owned());
        for decision in decisions {
            self.decide(id, decision, now);
        }
        Ok(())
    }

    fn decide(&mut self, id: &str, decision: Decision, now: Timestamp) {
        let Some(live) = self.live.get(id) else {
            return;
        };
        match decision {
            Decision::Dispatch(spec) => {
                let spec_json = match serde_json::to_string(&spec) {
                    Ok(json) => json,
                    Err(e) => {
                        let (task, attempt, phase) = (spec.task, spec.attempt, spec.phase);
                        let finished = Event::TaskFinished {
                            task,
                            attempt,
                            phase,
                            exit: Exit::Error(format!("cannot encode the task for agents: {e}")),
                            outputs: BTreeMap::new(),
                        };
                        let _ = self.try_apply(id, finished, now);
                        return;
                    }
                };
                self.ready.push(Claimable {
                    key: key_of(id, spec.task, spec.phase),
                    attempt: spec.attempt,
                    priority: live.priority,
                    tags: spec.tags.clone(),
                    executor: spec.executor.name().to_owned(),
                    spec_json,
                    ready_at: millis(now),
                });
                self.offers_changed = true;
            }
            Decision::Kill {
                task,
                attempt,
                phase,
                force,
            } => {
                let state = &live.state.tasks[task];
                let exec = match phase {
                    Phase::Main => Some(&state.main),
                    Phase::Undo => state.undo.as_ref(),
                };
                let holder = exec.and_then(|e| e.current()).and_then(|a| a.agent.clone());
                if let Some(agent) = holder
                    && let Some(kills) = self.kills.get(&agent)
                {
                    let _ = kills.send(KillOrder {
                        key: key_of(id, task, phase),
                        attempt,
                        force,
                    });
                    // A remote agent hears of kills in claim answers: end
                    // its pending long poll now rather than at its timeout.
                    self.woken.insert(agent);
                }
            }
            Decision::TaskChanged(task) => {
                self.changed.insert((id.to_owned(), task));
            }
            Decision::RunChanged => {}
        }
    }

    /// Commits everything this turn changed, then tells everyone.
    async fn commit_turn(&mut self, now: Timestamp) -> Result<(), EngineError> {
        let new_ids: Vec<String> = self.new_runs.iter().map(|r| r.id.clone()).collect();
        let mut batch = Batch {
            new_runs: std::mem::take(&mut self.new_runs),
            ready: std::mem::take(&mut self.ready),
            fence: self.fence.clone(),
            ..Batch::default()
        };
        let changed = std::mem::take(&mut self.changed);
        for (id, task) in &changed {
            let (id, task) = (id.clone(), *task);
            let Some(live) = self.live.get(&id) else {
                continue;
            };
            let state = &live.state.tasks[task];
            for phase in [Phase::Main, Phase::Undo] {
                if let Some((status, _)) = state.exec_status(phase)
                    && !status.is_active()
                {
                    batch.done.push(key_of(&id, task, phase));
                }
            }
        }
        let mut finished = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(live) = self.live.get_mut(&id) else {
                continue;
            };
            let state = &live.state;
            let state_json = serde_json::to_string(state)
                .map_err(|e| EngineError::Internal(format!("cannot encode run {id}: {e}")))?;
            batch.runs.push(RunUpdate {
                id: id.clone(),
                status: state.status.as_str().to_owned(),
                started_at: state.started_at.map(millis),
                finished_at: state.finished_at.map(millis),
                reason: state.reason.clone(),
                state_json,
            });
            if state.status.is_terminal() {
                finished.push(id.clone());
            }
            let next = live.state.next_wakeup();
            if live.wakeup != next {
                if let Some(old) = live.wakeup.take() {
                    self.timers.remove(&(old, id.clone()));
                }
                if let Some(at) = next {
                    self.timers.insert((at, id.clone()));
                }
                live.wakeup = next;
            }
        }
        let lease_until = millis(now) + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let mut asked = Vec::new();
        if !self.claims.is_empty() {
            let changed = self.offers_changed || !batch.ready.is_empty();
            // The store serves claims in order: agents with free slots
            // first, then those claiming ahead.
            for ahead in [false, true] {
                for (i, c) in self.claims.iter_mut().enumerate() {
                    if c.ask.want.ahead != ahead || self.woken.contains(&c.ask.agent) {
                        continue;
                    }
                    if changed || !c.tried {
                        c.tried = true;
                        batch.claims.push(ClaimRequest {
                            agent: c.ask.agent.clone(),
                            labels: c.ask.labels.clone(),
                            executors: c.ask.executors.clone(),
                            max: c.ask.want.max,
                            now: millis(now),
                            lease_until,
                        });
                        asked.push(i);
                    }
                }
            }
        }
        self.offers_changed = false;
        let committed = self.commit_with_retries(batch).await?;
        for (id, inserted) in new_ids.iter().zip(committed.inserted) {
            if let Inserted::Created { seq } = inserted {
                self.lanes.set_seq(id, seq);
            }
        }
        let claimed = committed.claimed;
        // Followers re-read the store when woken: only now does it hold
        // the news.
        for (id, task) in &changed {
            self.logs.changed(id, *task);
        }
        self.hand_out(asked, claimed, now);
        for id in finished {
            if let Some(live) = self.live.remove(&id) {
                if let Some(at) = live.wakeup {
                    self.timers.remove(&(at, id.clone()));
                }
                if live.admitted {
                    self.lanes.finished(&live.lane);
                }
                self.logs.run_finished(&id);
                self.again = true;
            }
        }
        for owed in self.owed.drain(..) {
            match owed {
                Owed::Submitted(reply, result) => {
                    let _ = reply.send(result);
                }
                Owed::Done(reply, result) => {
                    let _ = reply.send(result);
                }
            }
        }
        let now_instant = Instant::now();
        let mut i = 0;
        while i < self.claims.len() {
            let c = &self.claims[i];
            if c.ask.until <= now_instant
                || c.reply.is_closed()
                || self.woken.contains(&c.ask.agent)
            {
                let c = self.claims.swap_remove(i);
                let _ = c.reply.send(Ok(Vec::new()));
            } else {
                i += 1;
            }
        }
        self.woken.clear();
        Ok(())
    }

    /// Heartbeats are recorded in the store: while it fails, agents'
    /// renewals are lost too, so no lease is judged before agents have had
    /// one lease length to renew against a store that answers again.
    fn store_failed(&mut self) {
        self.reap_after = self.reap_after.max(Instant::now() + self.lease);
    }

    async fn commit_with_retries(&mut self, batch: Batch) -> Result<Committed, EngineError> {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            let result = self.store.commit(batch.clone()).await;
            if result.is_err() {
                self.store_failed();
            }
            match result {
                Ok(claimed) => return Ok(claimed),
                // Another replica leads now: trying again cannot help.
                Err(e @ StoreError::Fenced { .. }) => return Err(e.into()),
                Err(e) if tries < 8 => {
                    eprintln!(
                        "ganger: storing the engine state failed, retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Applies the claims the commit made and answers those agents.
    fn hand_out(&mut self, asked: Vec<usize>, claimed: Vec<Vec<Claimed>>, now: Timestamp) {
        let mut answered = Vec::new();
        for (i, claims) in asked.into_iter().zip(claimed) {
            if claims.is_empty() {
                continue;
            }
            let agent = self.claims[i].ask.agent.clone();
            let mut out = Vec::with_capacity(claims.len());
            for c in claims {
                let key = c.claimable.key;
                let attempt = c.claimable.attempt;
                let Some(phase) = phase_of(&key.phase) else {
                    continue;
                };
                let event = Event::TaskClaimed {
                    task: key.task as usize,
                    attempt,
                    phase,
                    agent: Some(agent.clone()),
                };
                if self.try_apply(&key.run_id, event, now).is_err() {
                    // The offer went stale in this very turn (a cancel):
                    // the next turn removes or replaces its row.
                    continue;
                }
                match serde_json::from_str::<TaskSpec>(&c.claimable.spec_json) {
                    Ok(spec) => out.push(Assignment { key, attempt, spec }),
                    Err(e) => {
                        let finished = Event::TaskFinished {
                            task: key.task as usize,
                            attempt,
                            phase,
                            exit: Exit::Error(format!("stored task cannot be read: {e}")),
                            outputs: BTreeMap::new(),
                        };
                        let _ = self.try_apply(&key.run_id, finished, now);
                    }
                }
            }
            self.again = true;
            if !out.is_empty() {
                answered.push((i, out));
            }
        }
        // Answer from the back so indices stay valid.
        answered.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, out) in answered {
            let c = self.claims.swap_remove(i);
            if let Err(Ok(lost)) = c.reply.send(Ok(out)) {
                // The agent stopped waiting in this very instant: offer the
                // tasks again rather than strand them until the lease ends.
                for a in lost {
                    let finished = Event::TaskFinished {
                        task: a.key.task as usize,
                        attempt: a.attempt,
                        phase: a.spec.phase,
                        exit: Exit::Interrupted("the agent left before taking it".into()),
                        outputs: BTreeMap::new(),
                    };
                    let _ = self.try_apply(&a.key.run_id, finished, now);
                }
                self.again = true;
            }
        }
    }
}

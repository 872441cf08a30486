//! The engine behind `ganger server`: one actor owns every live run and
//! admission lane; the API, agents, timers and signals reach it as
//! commands. Every state change is committed to the store, one transaction
//! per turn, before anyone is told about it.
//!
//! Reads (run details, lists, logs) go to the store directly: it holds
//! exactly what has been committed, so a reader never sees a change that a
//! crash could take back.

mod actor;
mod agent;
mod error;
mod jobs;
mod lanes;
mod logs;
mod remote;
mod time;
mod view;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganger_api as api;
use ganger_core::admission::{self, Limits};
use ganger_core::params::resolve_params;
use ganger_core::run::RunState;
use ganger_store::{Fence, NewRun, RunFilter, RunRow, Store, TERMINAL_STATUSES, TaskKey};
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};

pub use actor::{AgentReport, Assignment, KillOrder};
pub use error::EngineError;
use ganger_agent::{Docker, ProcessRecords};
pub use ganger_core::claiming::Want;

use actor::{ClaimAsk, Command, Submission};
use jobs::Catalog;
use lanes::LaneKey;
use logs::LogHub;
use time::{millis, now_millis};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Task workspaces and logs live under `<data_dir>/runs/<run id>/`.
    pub data_dir: PathBuf,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often agents renew their leases (well under `lease`).
    pub heartbeat: Duration,
    /// SIGTERM to SIGKILL when a task is stopped.
    pub kill_grace: Duration,
    /// Per-attempt log cap in bytes.
    pub log_cap: Option<u64>,
    /// Slots of the in-process agent; `None`: no in-process agent.
    pub local_slots: Option<u32>,
    /// The environment tasks of the in-process agent start from.
    pub base_env: Vec<(String, String)>,
    /// Where the in-process agent runs `executor: docker` tasks; without
    /// it, they wait for a remote agent that has Docker.
    pub docker: Option<Docker>,
    /// The leader lease of a replica sharing its database with others:
    /// every commit is refused once another replica has taken the lead.
    pub fence: Option<Fence>,
}

/// One piece of a task's log, as `GET …/logs` streams it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEvent {
    /// Complete lines (each ending in `\n`) of one attempt's log, in the
    /// stored format `<RFC 3339 time> <out|err> <text>`.
    Lines {
        attempt: u32,
        undo: bool,
        text: String,
    },
    /// The task ended with this status; nothing follows.
    End { status: String },
}

/// A handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: EngineConfig,
    catalog: Arc<Catalog>,
    logs: LogHub,
    commands: mpsc::UnboundedSender<Command>,
    agents: Mutex<std::collections::BTreeMap<String, AgentSeen>>,
    /// Kill orders for remote agents, handed out with their next heartbeat
    /// or claim answer.
    kill_queues: Mutex<std::collections::HashMap<String, mpsc::UnboundedReceiver<KillOrder>>>,
    /// Serializes log chunk writes (see `remote::append_at`).
    log_writes: tokio::sync::Mutex<()>,
    /// Set when a shutdown begins: no new work starts.
    draining: std::sync::atomic::AtomicBool,
    /// Set at the end of a shutdown: the in-process agent kills its tasks.
    stopping: watch::Sender<bool>,
    /// Whether the in-process agent runs nothing (always true without one).
    local_idle: watch::Receiver<bool>,
    /// Set when the actor has ended: by a shutdown, or because the store
    /// refused its state (see [`Engine::ended`]).
    ended: watch::Receiver<bool>,
}

#[derive(Clone)]
struct AgentSeen {
    labels: Vec<String>,
    executors: Vec<String>,
    slots: u32,
    last_seen: Timestamp,
    draining: bool,
    /// Claims it holds that its last heartbeat did not list.
    unlisted: std::collections::HashSet<(TaskKey, u32)>,
}

/// Statuses a run can be listed by.
const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

const LOG_CHANNEL: usize = 16;

impl Engine {
    /// Recovers the unfinished runs from the store and starts the actor
    /// (and the in-process agent when configured).
    pub async fn open(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine, EngineError> {
        // A server killed with its tasks running left them running; they
        // run again as recovered attempts, so the old ones must go first.
        let records = ProcessRecords::new(config.data_dir.join("processes"));
        match records.reap() {
            Ok(0) => {}
            Ok(n) => eprintln!(
                "ganger: killed {n} task process group(s) left running by a server that died"
            ),
            Err(e) => eprintln!(
                "ganger: cannot read {}: {e}; tasks a dead server left running may still run",
                records.dir().display()
            ),
        }
        let catalog = Arc::new(Catalog::new(Arc::clone(&store)));
        let logs = LogHub::new(&config.data_dir);
        let mut actor = actor::Actor::new(
            Arc::clone(&store),
            Arc::clone(&catalog),
            logs.clone(),
            config.lease,
            config.fence.clone(),
        );
        actor.recover(agent::LOCAL_AGENT).await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (stopping, stop_rx) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        let (idle_tx, local_idle) = watch::channel(true);
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                config: config.clone(),
                catalog,
                logs: logs.clone(),
                commands,
                agents: Mutex::default(),
                kill_queues: Mutex::default(),
                log_writes: tokio::sync::Mutex::new(()),
                draining: std::sync::atomic::AtomicBool::new(false),
                stopping,
                local_idle,
                ended,
            }),
        };
        let owner = engine.clone();
        tokio::spawn(async move {
            actor.run(rx).await;
            // Whatever ended the actor, nothing more can be committed: the
            // in-process agent stops its tasks (they are interrupted, and
            // run again from the store), and the owner is told.
            owner
                .inner
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            owner.inner.stopping.send_replace(true);
            ended_tx.send_replace(true);
        });
        if let Some(slots) = config.local_slots.filter(|s| *s > 0) {
            let mut settings = ganger_agent::attempt::Settings::new(
                config.kill_grace,
                config.log_cap,
                config.base_env.clone(),
            )
            .recording(records);
            if let Some(docker) = config.docker.clone() {
                settings = settings.with_docker(docker);
            }
            settings.start_job_api().await.map_err(|e| {
                EngineError::Internal(format!(
                    "cannot start the job endpoint of the in-process agent: {e}"
                ))
            })?;
            engine.seen(
                agent::LOCAL_AGENT,
                Some((vec![], settings.executors(), slots)),
            );
            let local = agent::Local {
                slots,
                settings,
                hub: logs,
                stop: stop_rx,
                idle: idle_tx,
            };
            tokio::spawn(agent::run(engine.clone(), local));
        }
        Ok(engine)
    }

    /// Whether both handles are of one engine (not merely alike).
    pub fn same(&self, other: &Engine) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The store, for what lives beside the engine (tokens).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Validates and stores job files atomically: one invalid job stores
    /// none (`InvalidJob` with every diagnostic). `files` are (name for
    /// messages, YAML or JSON text).
    pub async fn apply(
        &self,
        files: Vec<(String, String)>,
    ) -> Result<Vec<api::JobVersion>, EngineError> {
        self.inner.catalog.apply(files).await
    }

    pub async fn jobs(&self) -> Result<Vec<api::JobSummary>, EngineError> {
        self.inner.catalog.list().await
    }

    pub async fn job(&self, name: &str) -> Result<api::JobDetail, EngineError> {
        self.inner.catalog.detail(name).await
    }

    /// The latest version of a job as a Graphviz DOT digraph.
    pub async fn graph(&self, name: &str) -> Result<String, EngineError> {
        let (_, job) = self.inner.catalog.load(name, None).await?;
        Ok(ganger_core::graph::dot(&job))
    }

    /// Admits, queues or refuses a run. Durable before it returns.
    pub async fn submit(
        &self,
        req: api::SubmitRequest,
    ) -> Result<api::SubmitResponse, EngineError> {
        if let Some(key) = &req.idempotency_key {
            if key.is_empty() || key.len() > 200 {
                return Err(EngineError::InvalidRequest(
                    "idempotency_key must be 1 to 200 characters".into(),
                ));
            }
            if let Some(id) = self.inner.store.run_for_key(key).await? {
                return self.existing(id).await;
            }
        }
        let (version, job) = self.inner.catalog.load(&req.job, None).await?;
        let given: Vec<(String, String)> = req.params.into_iter().collect();
        let params = resolve_params(&job, &given).map_err(|errors| EngineError::InvalidParams {
            job: job.name.clone(),
            details: errors.iter().map(ToString::to_string).collect(),
        })?;
        let key =
            admission::concurrency_key(&job, &params).map_err(|e| EngineError::InvalidParams {
                job: job.name.clone(),
                details: vec![format!("concurrency_key: {}", e.message)],
            })?;
        let now = Timestamp::now();
        let id = crate::new_run_id();
        let state = RunState::new(id.clone(), Arc::clone(&job), params.clone(), now);
        let state_json = serde_json::to_string(&state)
            .map_err(|e| EngineError::Internal(format!("cannot encode run {id}: {e}")))?;
        let params_json = serde_json::to_string(&params)
            .map_err(|e| EngineError::Internal(format!("cannot encode params: {e}")))?;
        let submission = Submission {
            lane: LaneKey {
                job: job.name.clone(),
                key: key.clone(),
            },
            new: NewRun {
                id,
                job: job.name.clone(),
                version,
                priority: req.priority.unwrap_or(job.priority),
                concurrency_key: key,
                idempotency_key: req.idempotency_key,
                scheduled_at: req.scheduled_at.map(millis),
                created_at: millis(now),
                params_json,
                state_json,
            },
            scheduled_at: req.scheduled_at,
            state,
            job,
        };
        self.ask(|reply| Command::Submit(Box::new(submission), reply))
            .await
    }

    async fn existing(&self, id: String) -> Result<api::SubmitResponse, EngineError> {
        let status = match self.inner.store.run(&id).await? {
            Some(row) => row.summary.status,
            None => "queued".into(),
        };
        Ok(api::SubmitResponse {
            id,
            status,
            existing: true,
        })
    }

    pub async fn runs(
        &self,
        job: Option<String>,
        status: Option<String>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<api::RunList, EngineError> {
        if let Some(s) = &status
            && !STATUSES.contains(&s.as_str())
        {
            return Err(EngineError::InvalidRequest(format!(
                "unknown status `{s}`; use one of {}",
                STATUSES.join(", ")
            )));
        }
        let page = self
            .inner
            .store
            .list_runs(RunFilter { job, status }, cursor, limit)
            .await
            .map_err(|e| match e {
                ganger_store::StoreError::InvalidCursor { .. } => EngineError::InvalidRequest(
                    format!("{e}; pass back the next_cursor of a previous page"),
                ),
                other => other.into(),
            })?;
        Ok(api::RunList {
            runs: page.items.iter().map(view::summary).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn load_run(&self, id: &str) -> Result<(RunRow, RunState), EngineError> {
        let row = self.inner.store.run(id).await?.ok_or_else(|| {
            EngineError::NotFound(format!("no run with id `{id}` (see `ganger runs`)"))
        })?;
        let state = self.restore(&row).await?;
        Ok((row, state))
    }

    async fn restore(&self, row: &RunRow) -> Result<RunState, EngineError> {
        let s = &row.summary;
        let (_, job) = self.inner.catalog.load(&s.job, Some(s.version)).await?;
        RunState::from_json(&row.state_json, job)
            .map_err(|e| EngineError::Internal(format!("cannot read run {}: {e}", s.id)))
    }

    pub async fn run(&self, id: &str) -> Result<api::RunDetail, EngineError> {
        let (row, state) = self.load_run(id).await?;
        let waiting = if row.summary.status == "queued" {
            let (tx, rx) = oneshot::channel();
            let _ = self.inner.commands.send(Command::WaitReason {
                id: id.to_owned(),
                reply: tx,
            });
            rx.await.ok().flatten()
        } else {
            None
        };
        let mut detail = view::detail(&row.summary, &state, waiting);
        self.explain_unclaimed(&state, &mut detail);
        Ok(detail)
    }

    /// A ready task that no agent online can take says what it waits for.
    fn explain_unclaimed(&self, run: &RunState, detail: &mut api::RunDetail) {
        let Ok(agents) = self.inner.agents.lock() else {
            return;
        };
        for (def, view) in run.job.tasks.iter().zip(detail.tasks.iter_mut()) {
            if view.status != "ready" {
                continue;
            }
            let executor = def.executor.name();
            let takers = agents.values().any(|a| {
                a.executors.iter().any(|e| e == executor)
                    && ganger_core::routing::tags_match(&def.tags, &a.labels)
            });
            if takers {
                continue;
            }
            let runs_it = agents
                .values()
                .any(|a| a.executors.iter().any(|e| e == executor));
            view.reason = Some(if !runs_it {
                format!("waiting for an agent that runs the `{executor}` executor")
            } else {
                format!("waiting for an agent with {}", def.tags.join(", "))
            });
        }
    }

    async fn summary(&self, id: &str) -> Result<api::RunSummary, EngineError> {
        let row = self.inner.store.run(id).await?.ok_or_else(|| {
            EngineError::NotFound(format!("no run with id `{id}` (see `ganger runs`)"))
        })?;
        Ok(view::summary(&row.summary))
    }

    pub async fn cancel(&self, id: &str) -> Result<api::RunSummary, EngineError> {
        let (row, state) = self.load_run(id).await?;
        let queued =
            (row.summary.status == "queued").then(|| Box::new((Arc::clone(&state.job), state)));
        let id_owned = id.to_owned();
        self.ask(|reply| Command::Cancel {
            id: id_owned,
            queued,
            reply,
        })
        .await?;
        self.summary(id).await
    }

    /// Re-runs the failed, cancelled and skipped tasks of a finished run.
    pub async fn retry(&self, id: &str) -> Result<api::RunSummary, EngineError> {
        let (row, state) = self.load_run(id).await?;
        if !TERMINAL_STATUSES.contains(&row.summary.status.as_str()) {
            return Err(EngineError::Conflict(format!(
                "run {id} is {}: only a finished run can be retried",
                row.summary.status
            )));
        }
        let s = row.summary;
        let lane = LaneKey {
            job: s.job.clone(),
            key: s.concurrency_key.clone(),
        };
        let limits = Limits::of(&state.job);
        self.ask(|reply| Command::Retry {
            lane,
            limits,
            priority: s.priority,
            seq: s.seq,
            state: Box::new(state),
            reply,
        })
        .await?;
        self.summary(id).await
    }

    pub async fn agents(&self) -> Result<Vec<api::AgentView>, EngineError> {
        let seen = self
            .inner
            .agents
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        let now = Timestamp::now();
        let lease = jiff::SignedDuration::try_from(self.inner.config.lease)
            .unwrap_or(jiff::SignedDuration::MAX);
        for (name, a) in seen {
            let in_use = self.inner.store.claims_of(&name).await?.len() as u32;
            // Silent for longer than a lease: its claims are being reaped.
            let silent = now.duration_since(a.last_seen) > lease;
            let state = if name != agent::LOCAL_AGENT && silent {
                "lost"
            } else if a.draining {
                "draining"
            } else {
                "online"
            };
            out.push(api::AgentView {
                name,
                state: state.into(),
                labels: a.labels,
                executors: a.executors,
                slots: a.slots,
                slots_in_use: in_use,
                last_heartbeat: a.last_seen,
            });
        }
        Ok(out)
    }

    /// A task's log from the beginning, every attempt in order; with
    /// `follow`, then live until the task ends ([`LogEvent::End`]). The
    /// channel is bounded: a slow reader slows its own reading, never the
    /// task or the server's memory.
    pub async fn logs(
        &self,
        run: &str,
        task: &str,
        follow: bool,
    ) -> Result<mpsc::Receiver<LogEvent>, EngineError> {
        let (_, state) = self.load_run(run).await?;
        let Some(task_id) = state.job.task_id(task) else {
            let names: Vec<&str> = state.job.tasks.iter().map(|t| t.name.as_str()).collect();
            return Err(EngineError::NotFound(format!(
                "run {run} has no task `{task}`; its tasks are: {}",
                names.join(", ")
            )));
        };
        let (tx, rx) = mpsc::channel(LOG_CHANNEL);
        let engine = self.clone();
        let run_id = run.to_owned();
        tokio::spawn(logs::stream(
            self.inner.logs.clone(),
            run_id.clone(),
            task_id,
            follow,
            move || {
                let engine = engine.clone();
                let run_id = run_id.clone();
                async move { engine.load_run(&run_id).await.ok().map(|(_, s)| s) }
            },
            tx,
        ));
        Ok(rx)
    }

    /// Stops admitting runs and claiming tasks; waits up to `grace` for
    /// the in-process agent's tasks to finish, then stops the engine and
    /// kills what still runs. Those attempts are interrupted: they run
    /// again on the next start, outside their retry budget.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Drain(tx)).is_ok() {
            let _ = rx.await;
        }
        let mut idle = self.inner.local_idle.clone();
        let _ = tokio::time::timeout(grace, idle.wait_for(|idle| *idle)).await;
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
        self.inner.stopping.send_replace(true);
        // Killed groups end at once; the bound only guards against a
        // process that cannot be reaped.
        let _ = tokio::time::timeout(Duration::from_secs(5), idle.wait_for(|idle| *idle)).await;
    }

    /// Completes when the engine has stopped: after [`Engine::shutdown`],
    /// or by itself when the store refused a turn (the database stayed
    /// unreachable, or another replica took the lead). Its memory is then
    /// behind nothing: a new `Engine::open` recovers from the store.
    pub async fn ended(&self) {
        let mut ended = self.inner.ended.clone();
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// Whether a shutdown has begun: agents start nothing new.
    pub fn draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ready(&self) -> bool {
        self.inner.store.jobs().await.is_ok()
    }

    // ------------------------------------------------------------ agents

    /// How often an agent should renew its leases.
    pub fn heartbeat_interval(&self) -> Duration {
        self.inner.config.heartbeat
    }

    fn seen(&self, agent: &str, info: Option<(Vec<String>, Vec<String>, u32)>) {
        if let Ok(mut agents) = self.inner.agents.lock() {
            let now = Timestamp::now();
            match (agents.get_mut(agent), info) {
                (Some(a), None) => a.last_seen = now,
                (_, Some((labels, executors, slots))) => {
                    agents.insert(
                        agent.to_owned(),
                        AgentSeen {
                            labels,
                            executors,
                            slots,
                            last_seen: now,
                            draining: false,
                            unlisted: Default::default(),
                        },
                    );
                }
                (None, None) => {}
            }
        }
    }

    /// Where kill orders for an agent's attempts go.
    pub fn attach(&self, agent: &str, kills: mpsc::UnboundedSender<KillOrder>) {
        let _ = self.inner.commands.send(Command::Attach {
            agent: agent.to_owned(),
            kills,
        });
    }

    /// Long poll: tasks this agent can run, as soon as there are any, or
    /// none after `wait`.
    pub async fn claim(
        &self,
        agent: &str,
        labels: Vec<String>,
        executors: Vec<String>,
        want: Want,
        wait: Duration,
    ) -> Result<Vec<Assignment>, EngineError> {
        self.seen(agent, None);
        let ask = ClaimAsk {
            agent: agent.to_owned(),
            labels,
            executors,
            want,
            until: tokio::time::Instant::now() + wait,
        };
        self.ask(|reply| Command::Claim(ask, reply)).await
    }

    /// An agent's news about an attempt it holds; `Stale` when the attempt
    /// is no longer current (the agent must stop it).
    pub async fn report(
        &self,
        agent: &str,
        key: &TaskKey,
        attempt: u32,
        report: AgentReport,
    ) -> Result<(), EngineError> {
        let (agent, key) = (agent.to_owned(), key.clone());
        self.ask(|reply| Command::Report {
            agent,
            key,
            attempt,
            report,
            reply,
        })
        .await
    }

    /// Like [`Engine::report`] without waiting for the answer: the report
    /// is applied after every command sent before it and before every
    /// command sent after it, and a refusal is dropped.
    pub fn report_in_order(&self, agent: &str, key: &TaskKey, attempt: u32, report: AgentReport) {
        let (reply, _) = oneshot::channel();
        let _ = self.inner.commands.send(Command::Report {
            agent: agent.to_owned(),
            key: key.clone(),
            attempt,
            report,
            reply,
        });
    }

    /// Renews the leases of every attempt the agent holds.
    pub async fn heartbeat(&self, agent: &str) -> Result<(), EngineError> {
        self.seen(agent, None);
        let until =
            now_millis() + i64::try_from(self.inner.config.lease.as_millis()).unwrap_or(i64::MAX);
        self.inner.store.renew(agent, until).await?;
        Ok(())
    }
}

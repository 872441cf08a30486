//! The loop of `ganger agent`: register, keep a claim outstanding while
//! slots are free, heartbeat, carry out kill orders, drain on shutdown.
//!
//! The loop owns the list of attempts the agent holds; each attempt runs in
//! a task of its own (see `task.rs`) that reports its output and result.
//! Only HTTP reaches the server: the agent never touches its database, so
//! it can run behind NAT with outbound connections only.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ganger_api::agent::{
    self as wire, Assigned, AttemptRef, Claim, Claimed, Deregister, Heartbeat, HeartbeatAck, Kill,
    Register, Registered,
};
use reqwest::Url;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::attempt::Settings;
use crate::backoff::{self, Backoff};
use crate::client::{Client, ClientError};
use crate::container::{DEFAULT_NETWORK, Docker};
use crate::notice::{Notice, Notices};
use crate::orphans::ProcessRecords;
use crate::task::{self, Ctx, Order, Orders, Progress, describe, escalate};
use ganger_core::claiming::Want;

/// How long running tasks get to finish on shutdown, and between SIGTERM
/// and SIGKILL when a task is stopped (DESIGN §4's `grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Per-attempt cap of the local log file (the server's default cap): past
/// it, the task's output is dropped with a notice in the log.
pub const DEFAULT_LOG_CAP: u64 = 100 << 20;
/// How long one claim waits for work on the server.
const CLAIM_WAIT_MS: u64 = 30_000;
/// A claim answered with nothing sooner than this was not a long poll
/// (a server stopping, a proxy): the next one waits a little first.
const QUICK_EMPTY: Duration = Duration::from_secs(1);
/// Heartbeats no more often than this, whatever the server asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// The heartbeat when the server names none (DESIGN §4's default).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Everything `ganger agent` is told.
#[derive(Clone)]
pub struct AgentConfig {
    /// One server, or several replicas tried in order.
    pub servers: Vec<Url>,
    /// A token with the `agent` role.
    pub token: String,
    /// The agent's name: the same name registering again is the same agent.
    pub name: String,
    /// `key=value` or bare `key`.
    pub labels: Vec<String>,
    /// Tasks run at once.
    pub slots: u32,
    /// Workspaces and log buffers live under `<workdir>/runs/<run id>/`.
    pub workdir: PathBuf,
    /// See [`DEFAULT_GRACE`].
    pub grace: Duration,
    /// See [`DEFAULT_LOG_CAP`]; `None` for no cap.
    pub log_cap: Option<u64>,
    /// The environment tasks start from (usually the agent's own; ganger's
    /// tokens are removed from it).
    pub base_env: Vec<(String, String)>,
    /// Where [`Notice`]s go.
    pub notices: Option<mpsc::UnboundedSender<Notice>>,
    /// The bridge network docker tasks join unless they name one.
    pub docker_network: String,
}

impl AgentConfig {
    /// A configuration with the defaults: no labels, one slot, workdir
    /// `./ganger-agent`, the default grace and log cap, this process's
    /// environment, no notices.
    pub fn new(servers: Vec<Url>, token: String, name: String) -> AgentConfig {
        AgentConfig {
            servers,
            token,
            name,
            labels: Vec::new(),
            slots: 1,
            workdir: PathBuf::from("ganger-agent"),
            grace: DEFAULT_GRACE,
            log_cap: Some(DEFAULT_LOG_CAP),
            base_env: std::env::vars().collect(),
            notices: None,
            docker_network: DEFAULT_NETWORK.to_owned(),
        }
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs and panics.
        f.debug_struct("AgentConfig")
            .field("servers", &self.servers)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("slots", &self.slots)
            .field("workdir", &self.workdir)
            .field("grace", &self.grace)
            .field("log_cap", &self.log_cap)
            .field("docker_network", &self.docker_network)
            .finish_non_exhaustive()
    }
}

/// Why the agent stopped other than by a drain.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration cannot work; the message says which value and how
    /// to fix it.
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot create the agent's work directory {}: {source} (pick another with --workdir or [agent] workdir)",
        path.display()
    )]
    Workdir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The server refused the token (401/403): nothing will work until the
    /// token is fixed.
    #[error(transparent)]
    Refused(ClientError),
    /// The server refused to register the agent (a bad name, labels or
    /// slots; or a server of another version).
    #[error("the server refused to register agent `{name}`: {message}")]
    NotAccepted { name: String, message: String },
}

/// Runs the agent until `shutdown` completes, then drains: no new claims,
/// running tasks get `grace` to finish and are then killed, their results
/// are delivered (for up to another `grace`), and the agent deregisters.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    run_until(config, shutdown, std::future::pending()).await
}

/// [`run`], where `kill` completing (a second signal) skips what is left
/// of the grace: running tasks are killed at once, and their results are
/// delivered if the server answers within `grace`.
pub async fn run_until(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    kill: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    check(&config)?;
    let workdir = std::path::absolute(&config.workdir).map_err(|source| AgentError::Workdir {
        path: config.workdir.clone(),
        source,
    })?;
    let runs = workdir.join("runs");
    tokio::fs::create_dir_all(&runs)
        .await
        .map_err(|source| AgentError::Workdir {
            path: runs.clone(),
            source,
        })?;
    let client =
        Client::new(config.servers.clone(), config.token.clone()).map_err(AgentError::Config)?;
    let notices = Notices::new(config.notices.clone());
    // An agent killed with tasks running left them running; the server
    // gives those attempts to someone else, so they must go first.
    let records = ProcessRecords::new(workdir.join("processes"));
    match records.reap() {
        Ok(0) => {}
        Ok(groups) => notices.send(Notice::Reaped { groups }),
        Err(source) => {
            return Err(AgentError::Workdir {
                path: records.dir().to_owned(),
                source,
            });
        }
    }
    let mut settings =
        Settings::new(config.grace, config.log_cap, config.base_env.clone()).recording(records);
    // Docker tasks come only to an agent whose engine answers; without
    // one the agent still runs processes, and says why it takes no
    // docker tasks.
    match Docker::connect(&config.docker_network, &config.name).await {
        Ok((docker, removed)) => {
            if removed > 0 {
                notices.send(Notice::ReapedContainers {
                    containers: removed,
                });
            }
            settings = settings.with_docker(docker);
        }
        Err(e) => notices.send(Notice::NoDocker {
            error: e.to_string(),
        }),
    }
    if let Err(e) = settings.start_job_api().await {
        notices.send(Notice::Warning(format!(
            "tasks get no job endpoint ($GANGER_JOB_URL): {e}"
        )));
    }
    let register = Register {
        name: config.name.clone(),
        labels: config.labels.clone(),
        slots: config.slots,
        executors: settings.executors(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };

    let mut shutdown = std::pin::pin!(shutdown);
    let mut kill = std::pin::pin!(kill);
    // Nothing runs yet: a signal now just stops.
    let registered = tokio::select! {
        r = join(&client, &register, &notices) => r?,
        () = &mut shutdown => return Ok(()),
        () = &mut kill => return Ok(()),
    };

    let (agent_id, agent_id_rx) = watch::channel(registered.agent_id.clone());
    let (progress_tx, progress) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        client,
        agent_id: agent_id_rx,
        settings,
        runs,
        progress: progress_tx,
        notices,
    });
    let agent = Agent {
        ctx,
        agent_id,
        register,
        slots: config.slots as usize,
        grace: config.grace,
        heartbeat: heartbeat_interval(&registered),
        held: HashMap::new(),
        queued: VecDeque::new(),
        busy: 0,
        draining: false,
        tasks: JoinSet::new(),
        ids: HashMap::new(),
        reachable: true,
        forgotten: false,
    };
    agent.serve(progress, shutdown, kill).await
}

/// What the server would refuse anyway, said before trying.
fn check(config: &AgentConfig) -> Result<(), AgentError> {
    let bad = |m: String| Err(AgentError::Config(m));
    if config.servers.is_empty() {
        return bad("no server given: pass --server URL (or set [agent] server in ganger.toml, or GANGER_AGENT_SERVER)".into());
    }
    if config.token.trim().is_empty() {
        return bad("no agent token given: create one on the server with `ganger token create --role agent` and pass it as GANGER_AGENT_TOKEN (or --token, or [agent] token)".into());
    }
    check_name(&config.name).map_err(AgentError::Config)?;
    if config.slots == 0 {
        return bad("slots must be at least 1".into());
    }
    for label in &config.labels {
        check_label(label).map_err(AgentError::Config)?;
    }
    Ok(())
}

/// The server's rule for agent names.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(format!(
            "agent name {name:?} must be 1 to 100 letters, digits, `_`, `.` or `-`; pick one with --name"
        ));
    }
    if name == "local" {
        return Err("the agent name `local` belongs to the server's in-process agent; pick another with --name".into());
    }
    Ok(())
}

/// A label is `key=value` or a bare `key`, without spaces or commas.
pub fn check_label(label: &str) -> Result<(), String> {
    let key = label.split_once('=').map_or(label, |(k, _)| k);
    if key.is_empty() || label.contains(|c: char| c.is_whitespace() || c == ',') {
        return Err(format!(
            "label {label:?} must be `key=value` or `key`, without spaces or commas (e.g. os=linux)"
        ));
    }
    Ok(())
}

fn heartbeat_interval(registered: &Registered) -> Duration {
    match registered.heartbeat_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms).max(MIN_HEARTBEAT),
    }
}

/// Registers, trying again while no server answers. A refused token or a
/// refused registration is final.
async fn join(
    client: &Client,
    register: &Register,
    notices: &Notices,
) -> Result<Registered, AgentError> {
    let mut backoff = Backoff::new();
    let mut said = false;
    loop {
        match client.register(register).await {
            Ok((registered, server)) => {
                notices.send(Notice::Registered {
                    server: server.as_str().trim_end_matches('/').to_owned(),
                    agent_id: registered.agent_id.clone(),
                    lease: Duration::from_millis(registered.lease_ms),
                    heartbeat: Duration::from_millis(registered.heartbeat_ms),
                });
                return Ok(registered);
            }
            Err(ClientError::Unavailable(error)) => {
                if !said {
                    said = true;
                    notices.send(Notice::Unreachable { error });
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e @ (ClientError::Unauthorized(_) | ClientError::Forbidden(_))) => {
                return Err(AgentError::Refused(e));
            }
            Err(
                ClientError::Rejected(_, message)
                | ClientError::NotRegistered(message)
                | ClientError::Stale(message),
            ) => {
                return Err(AgentError::NotAccepted {
                    name: register.name.clone(),
                    message,
                });
            }
        }
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Pending<T> = Option<Boxed<T>>;
/// A claim's answer, and how long the server took to give it.
type ClaimAnswer = (Result<Claimed, ClientError>, Duration);

/// Awaits the future if there is one; never completes otherwise.
async fn maybe<T>(pending: &mut Pending<T>) -> T {
    match pending {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Where the agent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// No new claims; running tasks finish until `until`.
    Draining {
        until: Instant,
    },
    /// Running tasks were killed; results are delivered until `until`.
    Killing {
        until: Instant,
    },
}

struct Agent {
    ctx: Arc<Ctx>,
    agent_id: watch::Sender<String>,
    register: Register,
    slots: usize,
    grace: Duration,
    heartbeat: Duration,
    /// Every attempt the agent runs, from its start until its task ends.
    held: HashMap<AttemptRef, Held>,
    /// Attempts claimed ahead (see [`Want`]), waiting for a slot.
    queued: VecDeque<Assigned>,
    /// Attempts whose processes may still run: the slots in use.
    busy: usize,
    tasks: JoinSet<AttemptRef>,
    /// Which attempt each task runs, to find it when a task panics.
    ids: HashMap<tokio::task::Id, AttemptRef>,
    /// False during an outage, so it is reported once.
    reachable: bool,
    /// The server forgot this agent: register again.
    forgotten: bool,
    /// Shutting down: heartbeats say so, and `ganger agents` shows it.
    draining: bool,
}

struct Held {
    orders: Orders,
    exited: bool,
}

impl Agent {
    async fn serve(
        mut self,
        mut progress: mpsc::UnboundedReceiver<Progress>,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        mut kill: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), AgentError> {
        let mut phase = Phase::Serving;
        let (mut shutdown_seen, mut kill_seen) = (false, false);
        // A claim is never dropped while the agent serves: one the server
        // has answered would strand its tasks until their leases expire.
        let mut claim: Pending<ClaimAnswer> = None;
        let mut claim_backoff = Backoff::new();
        let mut claim_delay = Duration::ZERO;
        let mut beat: Pending<Result<HeartbeatAck, ClientError>> = None;
        let mut beat_backoff = Backoff::up_to(self.heartbeat);
        let mut next_beat = Instant::now() + self.heartbeat;
        let mut rejoin: Pending<Result<Registered, AgentError>> = None;

        loop {
            if phase != Phase::Serving && self.tasks.is_empty() {
                break;
            }
            if self.forgotten && rejoin.is_none() {
                self.ctx.notices.send(Notice::Forgotten);
                let ctx = Arc::clone(&self.ctx);
                let register = self.register.clone();
                rejoin = Some(Box::pin(async move {
                    join(&ctx.client, &register, &ctx.notices).await
                }));
            }
            if phase == Phase::Serving {
                self.start_queued();
            }
            if phase == Phase::Serving
                && claim.is_none()
                && rejoin.is_none()
                && let Some(want) = Want::next(self.slots, self.busy, self.queued.len())
            {
                claim = Some(self.claim(want, std::mem::take(&mut claim_delay)));
            }
            let deadline = match phase {
                Phase::Serving => None,
                Phase::Draining { until } | Phase::Killing { until } => Some(until),
            };

            tokio::select! {
                (got, took) = maybe(&mut claim) => {
                    claim = None;
                    match got {
                        Ok(claimed) => {
                            self.reached();
                            if claimed.tasks.is_empty() && took < QUICK_EMPTY {
                                claim_delay = claim_backoff.next_delay();
                            } else {
                                claim_backoff.reset();
                            }
                            for order in claimed.kill {
                                self.kill_order(&order);
                            }
                            self.take(claimed.tasks);
                        }
                        Err(e) => claim_delay = self.trouble("claim", e, &mut claim_backoff)?,
                    }
                }
                () = tokio::time::sleep_until(next_beat), if beat.is_none() && rejoin.is_none() => {
                    beat = Some(self.heartbeat());
                }
                ack = maybe(&mut beat) => {
                    beat = None;
                    match ack {
                        Ok(ack) => {
                            self.reached();
                            beat_backoff.reset();
                            next_beat = Instant::now() + self.heartbeat;
                            for attempt in ack.stale {
                                self.drop_attempt(&attempt);
                            }
                            for order in ack.kill {
                                self.kill_order(&order);
                            }
                        }
                        Err(e) => {
                            let retry = self.trouble("heartbeat", e, &mut beat_backoff)?;
                            next_beat = Instant::now() + retry.min(self.heartbeat);
                        }
                    }
                }
                joined = maybe(&mut rejoin) => {
                    rejoin = None;
                    let registered = joined?;
                    self.forgotten = false;
                    // The registration's notice says the server is back.
                    self.reachable = true;
                    self.heartbeat = heartbeat_interval(&registered);
                    self.agent_id.send_replace(registered.agent_id);
                    // Renew the leases of what runs here at once.
                    next_beat = Instant::now();
                }
                Some(news) = progress.recv() => match news {
                    Progress::Exited(attempt) => self.exited(&attempt),
                    Progress::Unregistered => self.forgotten = true,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.ended(joined);
                }
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    if phase == Phase::Serving {
                        // An outstanding claim is dropped: waiting up to its
                        // 30 s would hold the drain, and what it might bring
                        // could not start anyway.
                        claim = None;
                        phase = Phase::Draining { until: Instant::now() + self.grace };
                        self.draining = true;
                        self.give_back();
                        // Tell the server at once, not at the next beat.
                        next_beat = Instant::now();
                        self.ctx.notices.send(Notice::Draining { running: self.busy, grace: self.grace });
                    }
                }
                () = &mut kill, if !kill_seen => {
                    kill_seen = true;
                    claim = None;
                    self.draining = true;
                    self.give_back();
                    if !matches!(phase, Phase::Killing { .. }) {
                        phase = self.kill_all();
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    match phase {
                        Phase::Draining { .. } => phase = self.kill_all(),
                        _ => {
                            // Results the server did not take in time are
                            // lost with the tasks; their leases expire and
                            // the server's retry policy decides.
                            self.tasks.abort_all();
                            while self.tasks.join_next().await.is_some() {}
                            break;
                        }
                    }
                }
            }
        }
        self.leave().await;
        Ok(())
    }

    /// A claim, after `delay`; with how long the server took to answer.
    fn claim(&self, want: Want, delay: Duration) -> Boxed<ClaimAnswer> {
        let ctx = Arc::clone(&self.ctx);
        let body = Claim {
            agent_id: ctx.agent_id.borrow().clone(),
            max: want.max,
            wait_ms: Some(CLAIM_WAIT_MS),
            ahead: want.ahead,
        };
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let start = Instant::now();
            let got = ctx.client.claim(&body).await;
            (got, start.elapsed())
        })
    }

    fn heartbeat(&self) -> Boxed<Result<HeartbeatAck, ClientError>> {
        let ctx = Arc::clone(&self.ctx);
        // Every attempt still held, also those whose result is on its way
        // (the lease must outlive the delivery) and those claimed ahead.
        let running = self
            .held
            .iter()
            .filter(|(_, h)| *h.orders.borrow() != Order::Drop)
            .map(|(a, _)| a.clone())
            .chain(self.queued.iter().map(|q| q.attempt.clone()))
            .collect();
        let body = Heartbeat {
            agent_id: ctx.agent_id.borrow().clone(),
            running,
            draining: self.draining,
        };
        Box::pin(async move { ctx.client.heartbeat(&body).await })
    }

    /// What an error of the loop's own calls means: when to try again, or
    /// that the agent must stop.
    fn trouble(
        &mut self,
        what: &str,
        e: ClientError,
        backoff: &mut Backoff,
    ) -> Result<Duration, AgentError> {
        match e {
            ClientError::Unavailable(error) => {
                if self.reachable {
                    self.reachable = false;
                    self.ctx.notices.send(Notice::Unreachable { error });
                }
                Ok(backoff.next_delay())
            }
            ClientError::NotRegistered(_) => {
                self.forgotten = true;
                Ok(backoff::MIN)
            }
            ClientError::Unauthorized(_) | ClientError::Forbidden(_) => Err(AgentError::Refused(e)),
            // The server will not take this message as it is; trying again
            // at the slowest pace keeps the tasks running while someone
            // looks (a server of another version, say).
            ClientError::Rejected(_, _) | ClientError::Stale(_) => {
                self.ctx.notices.send(Notice::Warning(format!(
                    "the server refused the agent's {what}: {e}; trying again in {}s",
                    backoff::MAX.as_secs()
                )));
                Ok(backoff::MAX)
            }
        }
    }

    /// A server answered: end of an outage, if there was one.
    fn reached(&mut self) {
        if !self.reachable {
            self.reachable = true;
            self.ctx.notices.send(Notice::Reconnected {
                server: self
                    .ctx
                    .client
                    .current()
                    .as_str()
                    .trim_end_matches('/')
                    .to_owned(),
            });
        }
    }

    /// Starts attempts claimed ahead while slots are free.
    fn start_queued(&mut self) {
        while self.busy < self.slots
            && let Some(assigned) = self.queued.pop_front()
        {
            let ctx = Arc::clone(&self.ctx);
            self.spawn(assigned, true, |assigned, orders| {
                Box::pin(task::execute(ctx, assigned, orders))
            });
        }
    }

    /// Runs `work` for the attempt in a task of its own. When it `runs` a
    /// process, the attempt holds a slot until it says it exited.
    fn spawn(
        &mut self,
        assigned: Assigned,
        runs: bool,
        work: impl FnOnce(Assigned, Orders) -> Boxed<AttemptRef>,
    ) {
        let attempt = assigned.attempt.clone();
        let orders: Orders = Arc::new(watch::channel(Order::Run).0);
        let handle = self.tasks.spawn(work(assigned, Arc::clone(&orders)));
        self.ids.insert(handle.id(), attempt.clone());
        self.held.insert(
            attempt,
            Held {
                orders,
                exited: !runs,
            },
        );
        if runs {
            self.busy += 1;
        }
    }

    /// Takes what a claim brought. An attempt sent twice (an answer lost
    /// and given again) is held already.
    fn take(&mut self, tasks: Vec<Assigned>) {
        for assigned in tasks {
            if !self.held.contains_key(&assigned.attempt)
                && self.queued_at(&assigned.attempt).is_none()
            {
                self.queued.push_back(assigned);
            }
        }
    }

    /// Ends an attempt claimed ahead without running it: `exit` is what
    /// the server hears.
    fn end_queued(&mut self, at: usize, exit: wire::Exit) {
        let Some(assigned) = self.queued.remove(at) else {
            return;
        };
        let ctx = Arc::clone(&self.ctx);
        self.spawn(assigned, false, |assigned, orders| {
            Box::pin(task::never_run(ctx, assigned.attempt, exit, orders))
        });
    }

    /// Shutting down: attempts claimed ahead go back to the server, to run
    /// elsewhere without counting against their retries.
    fn give_back(&mut self) {
        while !self.queued.is_empty() {
            let exit = wire::Exit {
                interrupted: Some(format!(
                    "agent `{}` stopped before starting it",
                    self.register.name
                )),
                ..wire::Exit::default()
            };
            self.end_queued(0, exit);
        }
    }

    fn queued_at(&self, attempt: &AttemptRef) -> Option<usize> {
        self.queued.iter().position(|q| &q.attempt == attempt)
    }

    fn kill_order(&mut self, order: &Kill) {
        if let Some(at) = self.queued_at(&order.attempt) {
            let exit = wire::Exit {
                error: Some("stopped before it started".into()),
                ..wire::Exit::default()
            };
            self.end_queued(at, exit);
        } else if let Some(held) = self.held.get(&order.attempt) {
            let how = if order.force {
                Order::Kill
            } else {
                Order::Stop
            };
            escalate(&held.orders, how);
        }
    }

    /// The server says the attempt is no longer this agent's.
    fn drop_attempt(&mut self, attempt: &AttemptRef) {
        if let Some(at) = self.queued_at(attempt) {
            self.queued.remove(at);
        } else if let Some(held) = self.held.get(attempt)
            && escalate(&held.orders, Order::Drop)
        {
            self.ctx.notices.send(Notice::Dropped {
                attempt: attempt.clone(),
                reason: "the server no longer assigns it to this agent".into(),
            });
        }
    }

    fn exited(&mut self, attempt: &AttemptRef) {
        if let Some(held) = self.held.get_mut(attempt)
            && !held.exited
        {
            held.exited = true;
            self.busy -= 1;
        }
    }

    fn ended(&mut self, joined: Result<(tokio::task::Id, AttemptRef), tokio::task::JoinError>) {
        let (id, attempt) = match joined {
            Ok((id, attempt)) => (id, Some(attempt)),
            Err(e) => {
                let attempt = self.ids.get(&e.id()).cloned();
                if e.is_panic() {
                    let which = attempt
                        .as_ref()
                        .map_or_else(|| "an attempt".into(), describe);
                    self.ctx.notices.send(Notice::Warning(format!(
                        "the agent's task for {which} failed: {e}; its result is lost and the server will retry it when its lease expires"
                    )));
                }
                (e.id(), attempt)
            }
        };
        self.ids.remove(&id);
        if let Some(attempt) = attempt {
            self.exited(&attempt);
            self.held.remove(&attempt);
        }
    }

    /// Kills every running task; results are delivered until the grace
    /// runs out again.
    fn kill_all(&mut self) -> Phase {
        self.ctx
            .notices
            .send(Notice::Killing { running: self.busy });
        for held in self.held.values() {
            escalate(&held.orders, Order::Halt);
        }
        Phase::Killing {
            until: Instant::now() + self.grace,
        }
    }

    async fn leave(&self) {
        let body = Deregister {
            agent_id: self.agent_id.borrow().clone(),
        };
        match self.ctx.client.deregister(&body).await {
            Ok(()) => self.ctx.notices.send(Notice::Deregistered),
            Err(e) => self.ctx.notices.send(Notice::Warning(format!(
                "could not deregister ({e}); the server lists the agent until its heartbeats stop counting"
            ))),
        }
    }
}

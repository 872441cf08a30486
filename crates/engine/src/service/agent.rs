//! The in-process agent: claims tasks through the same calls a remote
//! agent makes and runs them as processes on the server's machine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ganger_agent::attempt::{self, Settings};
use ganger_core::run::Exit;
use ganger_executor::{KillMode, LogLine, LogSink};
use ganger_store::TaskKey;
use tokio::sync::{mpsc, watch};

use super::actor::{AgentReport, Assignment};
use super::logs::LogHub;
use super::{Engine, Want};

/// The in-process agent's name in claims and attempts.
pub(crate) const LOCAL_AGENT: &str = "local";

/// How long one claim waits for work before asking again.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// Wakes log followers as the task prints.
struct Notify {
    hub: LogHub,
    run: String,
    task: usize,
}

impl LogSink for Notify {
    fn line(&self, _line: &LogLine) {
        self.hub.changed(&self.run, self.task);
    }
}

pub(crate) struct Local {
    pub(crate) slots: u32,
    pub(crate) settings: Settings,
    pub(crate) hub: LogHub,
    /// Becomes true when the engine stops: kill everything.
    pub(crate) stop: watch::Receiver<bool>,
    /// Kept true while nothing runs.
    pub(crate) idle: watch::Sender<bool>,
}

pub(crate) async fn run(engine: Engine, local: Local) {
    let Local {
        slots,
        settings,
        hub,
        mut stop,
        idle,
    } = local;
    let (kill_tx, mut kills) = mpsc::unbounded_channel();
    engine.attach(LOCAL_AGENT, kill_tx);
    let labels = vec![format!("agent={LOCAL_AGENT}")];
    let executors = settings.executors();
    let mut running: HashMap<TaskKey, (u32, watch::Sender<Option<KillMode>>)> = HashMap::new();
    // Claimed ahead (see `Want`): when a task ends, the next starts at once
    // instead of waiting for a claim to be committed.
    let mut ahead: VecDeque<Assignment> = VecDeque::new();
    let (progress_tx, mut progress) = mpsc::unbounded_channel::<Progress>();
    // Results handed to no one yet: the agent is idle only without them.
    let mut unreported = 0usize;
    let mut heartbeat = tokio::time::interval(engine.heartbeat_interval());
    // A claim stays pending across loop turns: dropping one the actor has
    // already answered would strand its tasks until their leases expire.
    let mut claim = None;
    let mut stopping = false;
    loop {
        if !engine.draining() {
            while running.len() < slots as usize
                && let Some(a) = ahead.pop_front()
            {
                let (tx, rx) = watch::channel(None);
                running.insert(a.key.clone(), (a.attempt, tx));
                unreported += 1;
                start(&engine, a, &settings, &hub, rx, progress_tx.clone());
            }
        }
        idle.send_if_modified(|idle| {
            let now = running.is_empty() && unreported == 0;
            std::mem::replace(idle, now) != now
        });
        if stopping && running.is_empty() && unreported == 0 {
            return;
        }
        if claim.is_none()
            && !stopping
            && let Some(want) = Want::next(slots as usize, running.len(), ahead.len())
        {
            let engine = engine.clone();
            let (labels, executors) = (labels.clone(), executors.clone());
            claim = Some(Box::pin(async move {
                engine
                    .claim(LOCAL_AGENT, labels, executors, want, CLAIM_WAIT)
                    .await
            }));
        }
        tokio::select! {
            got = async { claim.as_mut().expect("guarded").await }, if claim.is_some() => {
                claim = None;
                match got {
                    Ok(assignments) => ahead.extend(assignments),
                    // Shutting down or failing: wait for news instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            Some(news) = progress.recv() => match news {
                Progress::Exited(key) => {
                    running.remove(&key);
                }
                Progress::Reported => unreported -= 1,
            },
            Some(order) = kills.recv() => {
                if let Some((attempt, tx)) = running.get(&order.key)
                    && *attempt == order.attempt
                {
                    let mode = if order.force { KillMode::Immediate } else { KillMode::Graceful };
                    let _ = tx.send(Some(mode));
                } else if let Some(pos) = ahead
                    .iter()
                    .position(|a| a.key == order.key && a.attempt == order.attempt)
                {
                    // Stopped before it started: its end is all there is to say.
                    let a = ahead.remove(pos).expect("found");
                    let never = AgentReport::Finished {
                        exit: Exit::Error("stopped before it started".into()),
                        outputs: BTreeMap::new(),
                    };
                    engine.report_in_order(LOCAL_AGENT, &a.key, a.attempt, never);
                }
            }
            Ok(()) = stop.changed(), if !stopping => {
                stopping = *stop.borrow_and_update();
                if stopping {
                    claim = None;
                    // Claimed but not started: the next start offers them again.
                    ahead.clear();
                    for (_, tx) in running.values() {
                        let _ = tx.send(Some(KillMode::Immediate));
                    }
                }
            }
            _ = heartbeat.tick() => {
                if !running.is_empty() || !ahead.is_empty() {
                    let _ = engine.heartbeat(LOCAL_AGENT).await;
                }
            }
        }
    }
}

/// What an attempt's task tells the agent loop.
enum Progress {
    /// The process is gone: its slot is free (its result is on its way).
    Exited(TaskKey),
    /// The result was handed to the engine.
    Reported,
}

fn start(
    engine: &Engine,
    a: Assignment,
    settings: &Settings,
    hub: &LogHub,
    kill: watch::Receiver<Option<KillMode>>,
    progress: mpsc::UnboundedSender<Progress>,
) {
    let engine = engine.clone();
    let settings = settings.clone();
    let workdir = hub.workdir(&a.key.run_id);
    let sink = Arc::new(Notify {
        hub: hub.clone(),
        run: a.key.run_id.clone(),
        task: a.key.task as usize,
    });
    tokio::spawn(async move {
        let (key, attempt) = (a.key, a.attempt);
        // Not awaited: the engine takes commands in order, so the start is
        // applied before the end, and a short task's start and end share
        // one commit instead of waiting for one each.
        let started = {
            let engine = engine.clone();
            let key = key.clone();
            move || engine.report_in_order(LOCAL_AGENT, &key, attempt, AgentReport::Started)
        };
        let listeners = {
            let (engine, key) = (engine.clone(), key.clone());
            attempt::Listeners {
                lines: sink,
                progress: Arc::new(move |progress| {
                    let report = AgentReport::Progress { progress };
                    engine.report_in_order(LOCAL_AGENT, &key, attempt, report);
                }),
            }
        };
        let ended = attempt::run(
            a.spec,
            &key.run_id,
            &workdir,
            &settings,
            listeners,
            kill,
            started,
        )
        .await;
        // The slot frees before the result is committed, so the next claim
        // rides in the same commit as this result.
        let _ = progress.send(Progress::Exited(key.clone()));
        let finished = AgentReport::Finished {
            exit: ended.exit,
            outputs: ended.outputs,
        };
        // A refusal means the attempt is no longer current (fenced); there
        // is nothing left to do for it either way.
        let _ = engine.report(LOCAL_AGENT, &key, attempt, finished).await;
        let _ = progress.send(Progress::Reported);
    });
}

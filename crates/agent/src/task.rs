//! One assigned attempt on a remote agent, in a Tokio task of its own:
//! run the process, say it started, ship its output, deliver its result.
//!
//! The agent loop steers it through one [`Order`] channel: stop, kill, or
//! drop (the attempt is no longer this agent's: kill it and say nothing
//! more about it). The task itself escalates to drop when the server
//! answers one of its messages with 409.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ganger_api::agent::{
    self as wire, Assigned, AttemptRef, Finished, LogChunk, Progress as WireProgress, Started,
};
use ganger_core::run::{Exit, TaskSpec};
use ganger_executor::{KillMode, LogLine, LogSink};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::attempt::{self, Ended, Listeners, Settings};
use crate::backoff::Backoff;
use crate::client::{Client, ClientError};
use crate::notice::{Notice, Notices};
use crate::ship::{Shipper, Stop};
use crate::workdir::Workdir;

/// How often a running attempt's log is looked at when it prints nothing
/// that wakes the shipper.
const SHIP_TICK: Duration = Duration::from_millis(500);
/// After a line wakes the shipper, how long it waits for more: a task
/// printing a burst ships it in one chunk, not one request per line, and
/// the executor has flushed the burst to the file by then.
const COALESCE: Duration = Duration::from_millis(20);
/// Times in a row a message may meet "agent unknown" (while the loop
/// registers again) before it is given up.
const MAX_FORGOTTEN: u32 = 5;

/// What every attempt's task shares with the loop.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    /// The id the server gave this agent; replaced when it registers again.
    pub(crate) agent_id: watch::Receiver<String>,
    pub(crate) settings: Settings,
    /// `<workdir>/runs`: one directory per run below it.
    pub(crate) runs: PathBuf,
    pub(crate) progress: mpsc::UnboundedSender<Progress>,
    pub(crate) notices: Notices,
}

impl Ctx {
    fn agent_id(&self) -> String {
        self.agent_id.borrow().clone()
    }
}

/// What attempts' tasks tell the loop, besides ending.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The attempt's processes are gone: its slot is free (its output and
    /// result may still be on their way).
    Exited(AttemptRef),
    /// The server does not know this agent: register again.
    Unregistered,
}

/// What the loop wants done with an attempt. Orders only escalate (see
/// [`escalate`]): a kill is never softened into a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Order {
    Run,
    /// SIGTERM, SIGKILL after the kill grace (a cancel).
    Stop,
    /// SIGKILL now; the result is still delivered.
    Kill,
    /// The agent stops: SIGKILL now, and the result says the attempt was
    /// interrupted, so it runs again elsewhere without using a retry.
    Halt,
    /// SIGKILL now and forget it: it is no longer this agent's.
    Drop,
}

pub(crate) type Orders = Arc<watch::Sender<Order>>;

/// Raises the attempt's order to `order`; false when it already was at
/// least that.
pub(crate) fn escalate(orders: &watch::Sender<Order>, order: Order) -> bool {
    orders.send_if_modified(|current| {
        let raise = order > *current;
        if raise {
            *current = order;
        }
        raise
    })
}

/// Runs the attempt to its end and delivers what can be; returns which
/// attempt it was.
pub(crate) async fn execute(ctx: Arc<Ctx>, assigned: Assigned, orders: Orders) -> AttemptRef {
    let attempt = assigned.attempt.clone();
    let (ended, shipped) = match prepare(&ctx, assigned) {
        Ok((spec, workdir)) => supervise(&ctx, &attempt, spec, &workdir, &orders).await,
        Err(message) => {
            let _ = ctx.progress.send(Progress::Exited(attempt.clone()));
            (Some(Ended::error(message)), None)
        }
    };
    if let Some(ended) = ended
        && report(&ctx, &attempt, ended, &orders).await
        && let Some(log) = shipped
    {
        // The server holds the whole log and the result now: the local
        // copy was only the buffer, and an agent that runs for months must
        // not fill its disk with them.
        let _ = tokio::fs::remove_file(log).await;
    }
    attempt
}

/// Delivers the end of an attempt claimed ahead that never ran.
pub(crate) async fn never_run(
    ctx: Arc<Ctx>,
    attempt: AttemptRef,
    exit: wire::Exit,
    orders: Orders,
) -> AttemptRef {
    deliver_result(&ctx, &attempt, exit, BTreeMap::new(), &orders).await;
    attempt
}

/// The spec and the run's work directory, or why the attempt cannot run.
fn prepare(ctx: &Ctx, assigned: Assigned) -> Result<(TaskSpec, Workdir), String> {
    let run_id = &assigned.attempt.run_id;
    check_component("run id", run_id)?;
    let spec: TaskSpec = serde_json::from_value(assigned.spec).map_err(|e| {
        format!(
            "agent {}: cannot read the task's spec ({e}); is this agent older than the server? upgrade it",
            ctx.agent_id()
        )
    })?;
    check_component("task name", &spec.name)?;
    Ok((spec, Workdir::new(ctx.runs.join(run_id))))
}

/// Names from the server become paths on this machine: one component,
/// never `..` or hidden, whatever a (compromised) server sends.
fn check_component(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the {what} {name:?} cannot name a directory on the agent"
        ))
    }
}

/// Runs the process while shipping its output and carrying out orders.
/// Returns how it ended, unless the attempt was dropped, and its log file
/// when all of it reached the server.
async fn supervise(
    ctx: &Ctx,
    attempt: &AttemptRef,
    spec: TaskSpec,
    workdir: &Workdir,
    orders: &Orders,
) -> (Option<Ended>, Option<PathBuf>) {
    let log = workdir.log(&spec.name, spec.attempt, spec.phase);
    let (kill_tx, kill_rx) = watch::channel(None);
    let lines = Arc::new(Notify::new());
    let sink = Arc::new(Wake(Arc::clone(&lines)));
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (ended_tx, ended_rx) = watch::channel(false);
    // Only the latest progress matters: a burst is sent as its last value.
    let (progress_tx, progress_rx) = watch::channel(None);
    let listeners = Listeners {
        lines: sink,
        progress: Arc::new(move |p| {
            progress_tx.send_replace(Some(p));
        }),
    };

    let process = async {
        let started = move || {
            let _ = started_tx.send(());
        };
        let ended = attempt::run(
            spec,
            &attempt.run_id,
            workdir,
            &ctx.settings,
            listeners,
            kill_rx,
            started,
        )
        .await;
        let _ = ctx.progress.send(Progress::Exited(attempt.clone()));
        let _ = ended_tx.send(true);
        ended
    };
    let started = async {
        // An error means the process never started: nothing to say.
        if started_rx.await.is_ok() {
            report_started(ctx, attempt, orders).await;
        }
    };
    let (ended, (), (), (), shipped) = tokio::join!(
        process,
        carry_out(orders, &kill_tx, ended_rx.clone()),
        started,
        report_progress(ctx, attempt, progress_rx, ended_rx.clone(), orders),
        ship_log(ctx, attempt, log.clone(), &lines, ended_rx, orders),
    );
    let ended = match *orders.borrow() {
        Order::Drop => return (None, None),
        // Killed because the agent stops, not for anything the task did.
        Order::Halt if matches!(ended.exit, Exit::Signal(_)) => Ended {
            exit: Exit::Interrupted("the agent stopped while it ran".into()),
            ..ended
        },
        _ => ended,
    };
    (Some(ended), shipped.then_some(log))
}

/// Wakes the shipper when the task prints.
struct Wake(Arc<Notify>);

impl LogSink for Wake {
    fn line(&self, _line: &LogLine) {
        self.0.notify_one();
    }
}

/// Turns orders into kill requests to the executor until the process ends.
async fn carry_out(
    orders: &watch::Sender<Order>,
    kill: &watch::Sender<Option<KillMode>>,
    mut ended: watch::Receiver<bool>,
) {
    let mut rx = orders.subscribe();
    loop {
        let mode = match *rx.borrow_and_update() {
            Order::Run => None,
            Order::Stop => Some(KillMode::Graceful),
            Order::Kill | Order::Halt | Order::Drop => Some(KillMode::Immediate),
        };
        if mode.is_some() {
            kill.send_if_modified(|current| std::mem::replace(current, mode) != mode);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = ended.wait_for(|ended| *ended) => return,
        }
    }
}

async fn report_started(ctx: &Ctx, attempt: &AttemptRef, orders: &Orders) {
    let body = Started {
        agent_id: ctx.agent_id(),
        attempt: attempt.clone(),
    };
    match unless_dropped(orders, deliver(ctx, || ctx.client.started(&body))).await {
        None | Some(Ok(())) => {}
        Some(Err(ClientError::Stale(reason))) => drop_attempt(ctx, attempt, orders, reason),
        Some(Err(e)) => ctx.notices.send(Notice::Warning(format!(
            "{}: the server did not take the news that it started: {e}",
            describe(attempt)
        ))),
    }
}

/// Sends the task's progress to the server while the process runs, the
/// latest value each time (a value that changes while one is on its way
/// is sent next).
async fn report_progress(
    ctx: &Ctx,
    attempt: &AttemptRef,
    mut progress: watch::Receiver<Option<f64>>,
    mut ended: watch::Receiver<bool>,
    orders: &Orders,
) {
    loop {
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { return },
            _ = ended.wait_for(|ended| *ended) => return,
        }
        let Some(value) = *progress.borrow_and_update() else {
            continue;
        };
        let body = WireProgress {
            agent_id: ctx.agent_id(),
            attempt: attempt.clone(),
            progress: value,
        };
        match unless_dropped(orders, deliver(ctx, || ctx.client.progress(&body))).await {
            None => return,
            Some(Ok(())) => {}
            Some(Err(ClientError::Stale(reason))) => {
                return drop_attempt(ctx, attempt, orders, reason);
            }
            // Progress is for people: one that does not get through is
            // not worth holding the attempt for.
            Some(Err(e)) => ctx.notices.send(Notice::Warning(format!(
                "{}: the server did not take its progress: {e}",
                describe(attempt)
            ))),
        }
    }
}

/// Ships the log while the process runs, then the rest. True when the
/// server got all of it.
async fn ship_log(
    ctx: &Ctx,
    attempt: &AttemptRef,
    log: PathBuf,
    lines: &Notify,
    mut ended: watch::Receiver<bool>,
    orders: &Orders,
) -> bool {
    let mut shipper = Shipper::new(log);
    let send = |offset: u64, data: String| {
        let body = LogChunk {
            agent_id: ctx.agent_id(),
            attempt: attempt.clone(),
            offset,
            data,
        };
        async move {
            deliver(ctx, || ctx.client.log(&body))
                .await
                .map(|ack| ack.next_offset)
        }
    };
    let work = async {
        let mut complete = true;
        loop {
            // Read before shipping: once the process has ended, the file is
            // complete and this pass is the last.
            let last = *ended.borrow_and_update();
            match shipper.ship(last, &send).await {
                Ok(()) => {}
                Err(Stop::Stale(reason)) => {
                    drop_attempt(ctx, attempt, orders, reason);
                    return false;
                }
                Err(Stop::GaveUp(why)) => {
                    complete = false;
                    ctx.notices
                        .send(Notice::Warning(format!("{}: {why}", describe(attempt))));
                }
            }
            if last {
                return complete;
            }
            tokio::select! {
                () = lines.notified() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep(SHIP_TICK) => {}
                _ = ended.changed() => {}
            }
        }
    };
    unless_dropped(orders, work).await.unwrap_or(false)
}

/// Delivers the result. True when the server took it.
async fn report(ctx: &Ctx, attempt: &AttemptRef, ended: Ended, orders: &Orders) -> bool {
    for warning in &ended.warnings {
        ctx.notices
            .send(Notice::Warning(format!("{}: {warning}", describe(attempt))));
    }
    deliver_result(ctx, attempt, wire_exit(ended.exit), ended.outputs, orders).await
}

/// Sends the result until the server takes or refuses it. True when it
/// took it.
async fn deliver_result(
    ctx: &Ctx,
    attempt: &AttemptRef,
    exit: wire::Exit,
    outputs: BTreeMap<String, String>,
    orders: &Orders,
) -> bool {
    let body = Finished {
        agent_id: ctx.agent_id(),
        attempt: attempt.clone(),
        exit,
        outputs,
    };
    match unless_dropped(orders, deliver(ctx, || ctx.client.finished(&body))).await {
        None => false,
        Some(Ok(())) => true,
        Some(Err(ClientError::Stale(reason))) => {
            ctx.notices.send(Notice::Dropped {
                attempt: attempt.clone(),
                reason: format!("its result was refused: {reason}"),
            });
            false
        }
        Some(Err(e)) => {
            ctx.notices.send(Notice::Warning(format!(
                "{}: its result was not delivered: {e}",
                describe(attempt)
            )));
            false
        }
    }
}

/// The attempt is no longer this agent's: kill it, say nothing more.
fn drop_attempt(ctx: &Ctx, attempt: &AttemptRef, orders: &Orders, reason: String) {
    if escalate(orders, Order::Drop) {
        ctx.notices.send(Notice::Dropped {
            attempt: attempt.clone(),
            reason,
        });
    }
}

/// `work`, unless the attempt is dropped first.
async fn unless_dropped<T>(orders: &Orders, work: impl Future<Output = T>) -> Option<T> {
    let mut rx = orders.subscribe();
    tokio::select! {
        done = work => Some(done),
        _ = rx.wait_for(|o| *o == Order::Drop) => None,
    }
}

/// Sends one message until the server takes it or refuses it for good.
/// While no server answers, it tries again and again with backoff:
/// output and results are kept however long the outage lasts (a result
/// for a lease that moved on is then refused with 409, and dropped). A
/// server that forgot the agent has it registered again first.
pub(crate) async fn deliver<T, F, Fut>(ctx: &Ctx, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Backoff::new();
    let mut forgotten = 0;
    loop {
        match call().await {
            Err(ClientError::Unavailable(_)) => {}
            Err(ClientError::NotRegistered(message)) => {
                forgotten += 1;
                if forgotten > MAX_FORGOTTEN {
                    return Err(ClientError::NotRegistered(message));
                }
                let _ = ctx.progress.send(Progress::Unregistered);
            }
            other => return other,
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// How an attempt ended, as the protocol says it.
pub(crate) fn wire_exit(exit: Exit) -> wire::Exit {
    let error = |message: String| wire::Exit {
        error: Some(message),
        ..wire::Exit::default()
    };
    match exit {
        Exit::Code(code) => wire::Exit {
            code: Some(code),
            ..wire::Exit::default()
        },
        Exit::Signal(signal) => wire::Exit {
            signal: Some(signal),
            ..wire::Exit::default()
        },
        Exit::Error(message) => error(message),
        Exit::Interrupted(reason) => wire::Exit {
            interrupted: Some(reason),
            ..wire::Exit::default()
        },
        // The scheduler's verdict, never what an agent observes; said as
        // an error should a runner ever return it.
        Exit::Lost => error("the attempt was lost".into()),
    }
}

/// `attempt 2 of task #3 (main) of run R`, for messages.
pub(crate) fn describe(attempt: &AttemptRef) -> String {
    format!(
        "attempt {} of task #{} ({}) of run {}",
        attempt.attempt, attempt.task, attempt.phase, attempt.run_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_map_to_exactly_one_field() {
        assert_eq!(
            wire_exit(Exit::Code(3)),
            wire::Exit {
                code: Some(3),
                ..Default::default()
            }
        );
        assert_eq!(
            wire_exit(Exit::Signal(9)),
            wire::Exit {
                signal: Some(9),
                ..Default::default()
            }
        );
        assert_eq!(
            wire_exit(Exit::Error("no shell".into())),
            wire::Exit {
                error: Some("no shell".into()),
                ..Default::default()
            }
        );
        assert_eq!(
            wire_exit(Exit::Interrupted("agent stopped".into())),
            wire::Exit {
                interrupted: Some("agent stopped".into()),
                ..Default::default()
            }
        );
        let w = wire_exit(Exit::Lost);
        assert!(w.code.is_none() && w.signal.is_none() && w.error.is_some());
    }

    #[test]
    fn the_wire_exit_serializes_as_one_key() {
        let json = serde_json::to_value(wire_exit(Exit::Code(0))).expect("serializes");
        assert_eq!(json, serde_json::json!({"code": 0}));
    }

    #[test]
    fn orders_only_escalate() {
        let (tx, rx) = watch::channel(Order::Run);
        assert!(escalate(&tx, Order::Stop));
        assert!(escalate(&tx, Order::Kill));
        assert!(!escalate(&tx, Order::Stop));
        assert_eq!(*rx.borrow(), Order::Kill);
        assert!(escalate(&tx, Order::Drop));
        assert!(!escalate(&tx, Order::Kill));
        assert_eq!(*rx.borrow(), Order::Drop);
    }

    #[test]
    fn names_from_the_server_stay_one_path_component() {
        for good in ["20250101T000000-0000abcd", "build", "test-1.2_x"] {
            assert!(check_component("run id", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../etc", "a/b", ".ganger", "a\0b"] {
            assert!(check_component("run id", bad).is_err(), "{bad:?}");
        }
    }
}

//! Task logs: one file per attempt under the run's directory, written by
//! whoever runs the attempt; readers stream them from the beginning and,
//! when following, wait for news instead of polling.
//!
//! Memory stays bounded whatever a task prints: readers hold one chunk at a
//! time and a bounded channel, and the hub holds one counter per followed
//! task.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganger_core::model::TaskId;
use ganger_core::run::{Exec, Phase, RunState};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};

use super::LogEvent;
use ganger_agent::Workdir;

/// Bytes read from a log file at a time.
const CHUNK: usize = 64 * 1024;
/// A follower looks again this often even without news: a safety net for
/// writers that cannot notify (a log shipped by a remote agent before the
/// hub knew of the follower).
const RECHECK: Duration = Duration::from_secs(2);

/// One counter per followed task (run id, task), bumped on news.
type Watchers = HashMap<(String, TaskId), watch::Sender<u64>>;

/// Wakes followers of a task when its log grows or its state changes.
#[derive(Clone)]
pub(crate) struct LogHub {
    runs: PathBuf,
    watchers: Arc<Mutex<Watchers>>,
}

impl LogHub {
    pub(crate) fn new(data_dir: &std::path::Path) -> LogHub {
        LogHub {
            runs: data_dir.join("runs"),
            watchers: Arc::default(),
        }
    }

    /// Where a run's workspaces and logs live.
    pub(crate) fn workdir(&self, run: &str) -> Workdir {
        Workdir::new(self.runs.join(run))
    }

    pub(crate) fn changed(&self, run: &str, task: TaskId) {
        let Ok(watchers) = self.watchers.lock() else {
            return;
        };
        if let Some(tx) = watchers.get(&(run.to_owned(), task)) {
            tx.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn run_finished(&self, run: &str) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        watchers.retain(|(r, _), tx| {
            if r == run {
                tx.send_modify(|n| *n += 1);
            }
            r != run || tx.receiver_count() > 0
        });
    }

    fn subscribe(&self, run: &str, task: TaskId) -> Option<watch::Receiver<u64>> {
        let mut watchers = self.watchers.lock().ok()?;
        // Drop senders nobody listens to any more, so the map stays the
        // size of the current followers.
        watchers.retain(|_, tx| tx.receiver_count() > 0);
        let tx = watchers
            .entry((run.to_owned(), task))
            .or_insert_with(|| watch::channel(0).0);
        Some(tx.subscribe())
    }
}

/// The attempts of one phase whose logs may exist, in order.
fn attempts(exec: Option<&Exec>, phase: Phase) -> Vec<(Phase, u32)> {
    exec.map(|e| {
        e.attempts
            .iter()
            .filter(|a| a.started_at.is_some() || a.status.is_active())
            .map(|a| (phase, a.number))
            .collect()
    })
    .unwrap_or_default()
}

/// The task is over for a follower: its main part ended and its
/// compensation, if one was scheduled, too.
fn settled(run: &RunState, task: TaskId) -> Option<String> {
    let state = &run.tasks[task];
    let main_done = state.main.status.is_terminal();
    let undo_done = state.undo.as_ref().is_none_or(|u| u.status.is_terminal());
    (main_done && undo_done).then(|| state.main.status.as_str().to_owned())
}

/// Streams one task's log into `tx` until the current end (or, with
/// `follow`, until the task ends). `load` reads the run's committed state.
pub(crate) async fn stream<F, Fut>(
    hub: LogHub,
    run_id: String,
    task: TaskId,
    follow: bool,
    load: F,
    tx: mpsc::Sender<LogEvent>,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<RunState>>,
{
    let mut news = if follow {
        hub.subscribe(&run_id, task)
    } else {
        None
    };
    let workdir = hub.workdir(&run_id);
    let mut offsets: HashMap<(Phase, u32), u64> = HashMap::new();
    loop {
        let Some(run) = load().await else {
            return;
        };
        let name = run.task_name(task).to_owned();
        let state = &run.tasks[task];
        let done = settled(&run, task);
        let mut all = attempts(Some(&state.main), Phase::Main);
        all.extend(attempts(state.undo.as_ref(), Phase::Undo));
        for (phase, attempt) in all {
            let path = workdir.log(&name, attempt, phase);
            let offset = offsets.entry((phase, attempt)).or_insert(0);
            // Once the task has settled nothing more is written: a last
            // line without its newline is sent too.
            let partial_ok = done.is_some();
            if !send_new(&path, offset, phase, attempt, partial_ok, &tx).await {
                return;
            }
        }
        if !follow || done.is_some() {
            let status = done.unwrap_or_else(|| state.main.status.as_str().to_owned());
            let _ = tx.send(LogEvent::End { status }).await;
            return;
        }
        let Some(rx) = news.as_mut() else {
            return;
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() {
                // The hub dropped the sender: look once more, then subscribe anew.
                news = hub.subscribe(&run_id, task);
            },
            _ = tokio::time::sleep(RECHECK) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Sends what the file holds past `offset`; false when the reader left.
async fn send_new(
    path: &std::path::Path,
    offset: &mut u64,
    phase: Phase,
    attempt: u32,
    partial_ok: bool,
    tx: &mpsc::Sender<LogEvent>,
) -> bool {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return true; // nothing printed (yet)
    };
    if file.seek(SeekFrom::Start(*offset)).await.is_err() {
        return true;
    }
    let mut buf = vec![0u8; CHUNK];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let Some(end) = carry.iter().rposition(|&b| b == b'\n') else {
            if carry.len() < CHUNK {
                continue;
            }
            // A line longer than a chunk: send it in pieces.
            let text = String::from_utf8_lossy(&carry).into_owned();
            *offset += carry.len() as u64;
            carry.clear();
            if !send(tx, phase, attempt, text).await {
                return false;
            }
            continue;
        };
        let text = String::from_utf8_lossy(&carry[..=end]).into_owned();
        *offset += (end + 1) as u64;
        carry.drain(..=end);
        if !send(tx, phase, attempt, text).await {
            return false;
        }
    }
    if partial_ok && !carry.is_empty() {
        let mut text = String::from_utf8_lossy(&carry).into_owned();
        *offset += carry.len() as u64;
        text.push('\n');
        return send(tx, phase, attempt, text).await;
    }
    true
}

async fn send(tx: &mpsc::Sender<LogEvent>, phase: Phase, attempt: u32, text: String) -> bool {
    tx.send(LogEvent::Lines {
        attempt,
        undo: phase == Phase::Undo,
        text,
    })
    .await
    .is_ok()
}

//! Every process this program starts and has not yet reaped, so that a
//! signal to this program (SIGINT, SIGTERM, SIGHUP) stops them too: the
//! usual way out (an error, a panic) stops them when their owners drop.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the processes get after SIGTERM before SIGKILL, on a signal.
const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// What a tracked process is: on a signal, servers are stopped last, so
/// that agents can still deregister.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Server,
    Other,
}

static LIVE: Mutex<Vec<(Pid, Kind)>> = Mutex::new(Vec::new());

/// Set once a signal came: from then on the signal thread stops the
/// processes, and their owners leave them alone.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// `pid` is a child of this program: stop it on a signal.
pub(super) fn track(pid: Pid, kind: Kind) {
    if let Ok(mut live) = LIVE.lock() {
        live.push((pid, kind));
    }
}

/// `pid` was reaped (or is about to be by its owner).
pub(super) fn untrack(pid: Pid) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|(p, _)| *p != pid);
    }
}

/// Whether a signal came and the signal thread stops every process: an
/// owner must not signal its process then (a second SIGTERM means "now"
/// to a ganger agent), and the program must not exit before that thread.
pub(super) fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Listens for SIGINT, SIGTERM and SIGHUP on `runtime` (from then on they
/// no longer end this program at once): on one, stops every tracked process
/// (SIGTERM, SIGKILL after [`SIGNAL_GRACE`]), removes `dir` unless `keep`,
/// and exits. The signals are not blocked instead, because child processes
/// would inherit the blocked mask (std does not reset it) and so ignore the
/// SIGTERM that stops them.
pub(super) fn guard(runtime: &tokio::runtime::Runtime, dir: &Path, keep: bool) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = runtime.enter();
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    let dir: PathBuf = dir.to_owned();
    runtime.spawn(async move {
        let signal = tokio::select! {
            _ = int.recv() => Signal::SIGINT,
            _ = term.recv() => Signal::SIGTERM,
            _ = hup.recv() => Signal::SIGHUP,
        };
        // Whatever else runs may hold a worker: the rest on its own thread.
        let _ = tokio::task::spawn_blocking(move || stop_all_and_exit(signal, &dir, keep)).await;
    });
    Ok(())
}

fn stop_all_and_exit(signal: Signal, dir: &Path, keep: bool) {
    STOPPING.store(true, Ordering::SeqCst);
    let live: Vec<(Pid, Kind)> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    eprintln!(
        "ganger-bench-server: {signal}: stopping the {} process(es) started here",
        live.len()
    );
    // Agents (and the rest) first, then the servers.
    for kind in [Kind::Other, Kind::Server] {
        let pids: Vec<Pid> = live
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(p, _)| *p)
            .collect();
        for pid in &pids {
            let _ = kill(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + SIGNAL_GRACE;
        while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().filter(|p| alive(**p)) {
            eprintln!("ganger-bench-server: {pid} did not exit after SIGTERM: SIGKILL");
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }
    if keep {
        eprintln!("ganger-bench-server: kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::process::exit(128 + signal as i32);
}

/// Whether `pid` runs (a zombie, exited but not reaped, does not).
fn alive(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

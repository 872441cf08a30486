//! A started task container: its output, kill requests, and its exit.

use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error;
use bollard::query_parameters::{KillContainerOptionsBuilder, WaitContainerOptions};
use futures_util::{Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::engine_message;
use crate::logs::{Capture, ChunkCapture, LogReport};
use crate::types::{KillMode, Stream as Std};

/// The attach stream: stdout and stderr frames, demultiplexed by bollard.
pub(crate) type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, Error>> + Send>>;

/// Reads the attach stream into the log until it ends (the container
/// stopped) or `stop` fires.
pub(crate) fn pump(
    mut output: Output,
    capture: Capture,
) -> (JoinHandle<LogReport>, oneshot::Sender<()>) {
    let (stop_tx, mut stop) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut log = ChunkCapture::new(capture);
        loop {
            let frame = tokio::select! {
                frame = output.next() => frame,
                _ = &mut stop => break,
            };
            match frame {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    log.chunk(Std::Stdout, &message).await;
                }
                Some(Ok(LogOutput::StdErr { message })) => log.chunk(Std::Stderr, &message).await,
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(error)) => {
                    log.warn(format!("reading the container's output: {error}"));
                    break;
                }
                None => break,
            }
        }
        log.finish().await
    });
    (handle, stop_tx)
}

/// Waits for the log pump to reach the end of the stream, or stops it at
/// `deadline`.
pub(crate) async fn drain(
    mut logs: JoinHandle<LogReport>,
    stop: oneshot::Sender<()>,
    deadline: Instant,
) -> LogReport {
    let joined = match tokio::time::timeout_at(deadline, &mut logs).await {
        Ok(joined) => joined,
        Err(_elapsed) => {
            // Err: the pump already ended on its own.
            let _ = stop.send(());
            logs.await
        }
    };
    joined.unwrap_or_else(|error| LogReport {
        warnings: vec![format!("log capture failed: {error}")],
    })
}

/// How the container ended, as far as the engine tells.
pub(crate) struct Exit {
    /// The exit code, or what went wrong waiting for it.
    pub(crate) code: Result<i64, String>,
    /// The last signal sent by a kill request, if any.
    pub(crate) killed_with: Option<i32>,
}

/// Waits for the container to stop, delivering kill requests meanwhile: a
/// graceful kill sends SIGTERM and, after `grace`, SIGKILL; an immediate
/// one SIGKILL at once (and cuts a pending grace short).
pub(crate) async fn wait(
    docker: &Docker,
    name: &str,
    grace: Duration,
    kill: &mut watch::Receiver<Option<KillMode>>,
    warnings: &mut Vec<String>,
) -> Exit {
    let mut killer = Killer {
        docker,
        name,
        grace,
        term_sent: false,
        killed: false,
        escalate_at: None,
        last_signal: None,
    };
    // Copied out first: the watch's read guard must not live across an
    // await (it would make `run` a future that cannot move between threads).
    let mode = *kill.borrow_and_update();
    killer.request(mode, warnings).await;
    let mut requests_open = true;
    let mut wait = docker.wait_container(name, None::<WaitContainerOptions>);
    let code = loop {
        let escalate_at = killer.escalate_at;
        tokio::select! {
            status = wait.next() => break match status {
                Some(Ok(response)) => Ok(response.status_code),
                // bollard turns a non-zero exit code into this error.
                Some(Err(Error::DockerContainerWaitError { code, error })) => {
                    if !error.is_empty() {
                        warnings.push(format!("the engine reports: {error}"));
                    }
                    Ok(code)
                }
                Some(Err(error)) => Err(format!(
                    "lost track of container {name} while it ran: {}; its outcome is \
                     unknown (`docker inspect {name}` may tell)",
                    engine_message(&error)
                )),
                None => Err(format!(
                    "lost track of container {name} while it ran: the engine ended the wait \
                     without an exit code"
                )),
            },
            changed = kill.changed(), if requests_open => match changed {
                Ok(()) => {
                    let mode = *kill.borrow_and_update();
                    killer.request(mode, warnings).await;
                }
                Err(_) => requests_open = false,
            },
            () = tokio::time::sleep_until(escalate_at.unwrap_or_else(Instant::now)),
                if escalate_at.is_some() => killer.kill(warnings).await,
        }
    };
    Exit {
        code,
        killed_with: killer.last_signal,
    }
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

struct Killer<'a> {
    docker: &'a Docker,
    name: &'a str,
    grace: Duration,
    term_sent: bool,
    killed: bool,
    escalate_at: Option<Instant>,
    last_signal: Option<i32>,
}

impl Killer<'_> {
    async fn request(&mut self, mode: Option<KillMode>, warnings: &mut Vec<String>) {
        match mode {
            Some(KillMode::Graceful) if !self.term_sent && !self.killed => {
                self.term_sent = true;
                self.escalate_at = Some(Instant::now() + self.grace);
                self.send("SIGTERM", SIGTERM, warnings).await;
            }
            Some(KillMode::Immediate) if !self.killed => self.kill(warnings).await,
            _ => {}
        }
    }

    async fn kill(&mut self, warnings: &mut Vec<String>) {
        self.killed = true;
        self.escalate_at = None;
        self.send("SIGKILL", SIGKILL, warnings).await;
    }

    async fn send(&mut self, name: &str, number: i32, warnings: &mut Vec<String>) {
        self.last_signal = Some(number);
        let options = KillContainerOptionsBuilder::new().signal(name).build();
        match self.docker.kill_container(self.name, Some(options)).await {
            // 409: it is not running (any more), which is what a kill wants.
            Ok(())
            | Err(Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(error) => warnings.push(format!(
                "cannot send {name} to container {}: {}",
                self.name,
                engine_message(&error)
            )),
        }
    }
}

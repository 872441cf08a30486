use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::SpawnError;
use crate::group;
use crate::logs::{self, Capture, LogReport};
use crate::outputs;
use crate::shell::{self, INLINE_SCRIPT_MAX, Script, Shell};
use crate::types::{KillMode, LogSink, Outcome, ProcessSpec, Termination};

/// How long the group may take to die and the pipes to reach end of file
/// after the group was SIGKILLed. Only a process that left the group
/// (`setsid`) or one stuck in the kernel can use it up.
pub(crate) const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// A started attempt. Dropping it without [`RunningProcess::wait`] SIGKILLs
/// the process group, so an abandoned attempt cannot leave processes behind.
pub struct RunningProcess {
    child: Child,
    pid: u32,
    group: GroupGuard,
    kill_grace: Duration,
    output_path: PathBuf,
    logs: JoinHandle<LogReport>,
    /// Dropping it stops the log capture, which is what an abandoned
    /// attempt wants too.
    stop_logs: oneshot::Sender<()>,
}

/// Starts `spec.script` in its own process group. Must be called within a
/// Tokio runtime.
pub fn spawn(spec: ProcessSpec, sink: Arc<dyn LogSink>) -> Result<RunningProcess, SpawnError> {
    spawn_with(spec, sink, shell::shell())
}

pub(crate) fn spawn_with(
    spec: ProcessSpec,
    sink: Arc<dyn LogSink>,
    shell: &Shell,
) -> Result<RunningProcess, SpawnError> {
    validate_env(&spec.env)?;
    if spec.script.contains('\0') {
        return Err(SpawnError::NulInScript);
    }
    // Absolute, because the script runs elsewhere than the server and reads
    // these paths from its environment.
    let workspace =
        std::path::absolute(&spec.workspace).map_err(|error| SpawnError::Workspace {
            path: spec.workspace.clone(),
            error,
        })?;
    let output_path =
        std::path::absolute(&spec.output_path).map_err(|error| SpawnError::OutputFile {
            path: spec.output_path.clone(),
            error,
        })?;
    std::fs::create_dir_all(&workspace).map_err(|error| SpawnError::Workspace {
        path: workspace.clone(),
        error,
    })?;
    // The output file itself is left to the script (`>>` creates it): one
    // file creation less per task. Its directory must exist, and a stale file
    // from an earlier use of the path must not leak into this attempt.
    prepare_output(&output_path).map_err(|error| SpawnError::OutputFile {
        path: output_path.clone(),
        error,
    })?;
    // The log file is only created at the first line, so one left by an
    // earlier use of the path would pass for the output of an attempt that
    // printed nothing.
    remove_stale(&spec.log_path).map_err(|error| SpawnError::LogFile {
        path: spec.log_path.clone(),
        error,
    })?;
    let script_path;
    let script = if spec.script.len() > INLINE_SCRIPT_MAX {
        script_path = script_file_for(&output_path);
        std::fs::write(&script_path, &spec.script).map_err(|error| SpawnError::ScriptFile {
            path: script_path.clone(),
            error,
        })?;
        Script::File(&script_path)
    } else {
        Script::Inline(&spec.script)
    };

    // Spawning must stay on std's posix_spawn path (vfork-like, so its cost
    // does not grow with the server's memory, unlike fork+exec which copies
    // page tables: milliseconds for a server holding gigabytes). std falls
    // back to fork+exec on `pre_exec`, uid/gid/groups, or a bare program name
    // looked up through a replaced PATH. Hence: no pre_exec, no uid/gid, an
    // absolute shell path; process_group and current_dir are fine
    // (POSIX_SPAWN_SETPGROUP, posix_spawn_file_actions_addchdir_np).
    let mut command = Command::new(&shell.path);
    command
        .args(shell.args(&script))
        .env_clear()
        .envs(spec.env.iter().map(|(name, value)| (name, value)))
        .env("GANGER_OUTPUT", &output_path)
        .env("GANGER_WORKSPACE", &workspace)
        .current_dir(&workspace)
        // Its own group, so that kills reach every process the script
        // starts and nothing else.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shell_error = |error| SpawnError::Shell {
        shell: shell.path.clone(),
        error,
    };
    let mut child = command.spawn().map_err(shell_error)?;

    // Linux caps pids far below i32::MAX, so the conversion cannot fail in
    // practice.
    let pid = child
        .id()
        .and_then(|pid| Some((pid, i32::try_from(pid).ok()?)));
    let (Some((pid, pgid)), Some(stdout), Some(stderr)) =
        (pid, child.stdout.take(), child.stderr.take())
    else {
        // Unreachable with piped stdio and an unreaped child; the guard below
        // would not exist, so kill here rather than leak the process.
        let _ = child.start_kill();
        return Err(shell_error(io::Error::other(
            "child pipes or pid unavailable",
        )));
    };
    let group = GroupGuard {
        pgid: Pid::from_raw(pgid),
        armed: true,
    };
    let (stop_logs, stop_rx) = oneshot::channel();
    let capture = Capture {
        path: spec.log_path,
        sink,
        cap: spec.log_cap,
    };
    let logs = tokio::spawn(logs::capture(capture, stdout, stderr, stop_rx));
    Ok(RunningProcess {
        child,
        pid,
        group,
        kill_grace: spec.kill_grace,
        output_path,
        logs,
        stop_logs,
    })
}

impl RunningProcess {
    /// The shell's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Supervises until the process group is gone. `kill` delivers kill
    /// requests at any time (`None` = no request yet); a later `Immediate`
    /// overrides a pending `Graceful`. A dropped sender means no further
    /// requests, not a kill.
    ///
    /// When the leader exits on its own, what is left of the group is
    /// SIGKILLed at once. During a graceful kill, the rest of the group keeps
    /// its grace even if the leader dies first: `wait` then returns when the
    /// group is gone or, after SIGKILL, when the grace ends.
    pub async fn wait(mut self, mut kill: watch::Receiver<Option<KillMode>>) -> Outcome {
        let mut warnings = Vec::new();
        let mut killer = Killer {
            pgid: self.group.pgid,
            grace: self.kill_grace,
            term_sent: false,
            killed: false,
            escalate_at: None,
        };
        killer.request(*kill.borrow_and_update(), &mut warnings);
        let mut requests_open = true;
        let status = loop {
            let escalate_at = killer.escalate_at;
            tokio::select! {
                status = self.child.wait() => break status,
                changed = kill.changed(), if requests_open => match changed {
                    Ok(()) => killer.request(*kill.borrow_and_update(), &mut warnings),
                    Err(_) => requests_open = false,
                },
                () = tokio::time::sleep_until(escalate_at.unwrap_or_else(Instant::now)),
                    if escalate_at.is_some() => killer.kill(&mut warnings),
            }
        };

        // A graceful kill promised every process of the group its grace, not
        // just the leader: a shell dies at once on SIGTERM while the job it
        // was waiting for may still be cleaning up. So let the rest of the
        // group finish until the grace ends (or an Immediate request cuts it
        // short) before killing what is left.
        if let Some(escalate_at) = killer.grace_pending() {
            let gone = group::wait_gone(self.group.pgid, escalate_at);
            tokio::pin!(gone);
            while !killer.killed {
                tokio::select! {
                    _ = &mut gone => break,
                    changed = kill.changed(), if requests_open => match changed {
                        Ok(()) => killer.request(*kill.borrow_and_update(), &mut warnings),
                        Err(_) => requests_open = false,
                    },
                }
            }
        }

        // Whatever ended the leader, its background jobs end with it: at once
        // after a normal exit, at the end of the grace after a graceful kill.
        // The leader is already reaped, so if the group were empty its id
        // could in principle be reused; that takes a full wrap of the pid
        // space in the moments since, which is why this is still safe.
        killer.kill(&mut warnings);
        let deadline = Instant::now() + DRAIN_BOUND;
        let (gone, report) = tokio::join!(
            group::wait_gone(self.group.pgid, deadline),
            drain(self.logs, self.stop_logs, deadline),
        );
        self.group.armed = false;
        if !gone {
            warnings.push(format!(
                "processes of group {} were still alive {}s after SIGKILL",
                self.pid,
                DRAIN_BOUND.as_secs()
            ));
        }
        warnings.extend(report.warnings);

        let parsed = outputs::read(&self.output_path);
        warnings.extend(parsed.warnings);
        Outcome {
            termination: termination(status),
            outputs: parsed.outputs,
            warnings,
        }
    }
}

/// Waits for the log capture to reach end of file on both pipes, or stops it
/// at `deadline`: a process that escaped the group can hold a pipe open
/// forever and must not hold the attempt with it.
async fn drain(
    mut logs: JoinHandle<LogReport>,
    stop: oneshot::Sender<()>,
    deadline: Instant,
) -> LogReport {
    let mut escaped = None;
    let joined = match tokio::time::timeout_at(deadline, &mut logs).await {
        Ok(joined) => joined,
        Err(_elapsed) => {
            // Err means the capture already ended on its own.
            let _ = stop.send(());
            escaped = Some(format!(
                "output pipes were still open {}s after the process group was killed: \
                 a process that left the group (setsid?) may still be running; \
                 its further output was discarded",
                DRAIN_BOUND.as_secs()
            ));
            logs.await
        }
    };
    let mut report = joined.unwrap_or_else(|error| LogReport {
        warnings: vec![format!("log capture failed: {error}")],
    });
    report.warnings.extend(escaped);
    report
}

struct Killer {
    pgid: Pid,
    grace: Duration,
    term_sent: bool,
    killed: bool,
    /// When a graceful kill turns into SIGKILL.
    escalate_at: Option<Instant>,
}

impl Killer {
    fn request(&mut self, mode: Option<KillMode>, warnings: &mut Vec<String>) {
        match mode {
            Some(KillMode::Graceful) if !self.term_sent && !self.killed => {
                self.term_sent = true;
                self.send(Signal::SIGTERM, warnings);
                self.escalate_at = Some(Instant::now() + self.grace);
            }
            Some(KillMode::Immediate) if !self.killed => self.kill(warnings),
            _ => {}
        }
    }

    /// When the grace of a graceful kill ends, if one is under way (SIGTERM
    /// sent, SIGKILL not yet).
    fn grace_pending(&self) -> Option<Instant> {
        self.escalate_at.filter(|_| self.term_sent && !self.killed)
    }

    fn kill(&mut self, warnings: &mut Vec<String>) {
        self.killed = true;
        self.escalate_at = None;
        self.send(Signal::SIGKILL, warnings);
    }

    fn send(&self, signal: Signal, warnings: &mut Vec<String>) {
        if let Err(errno) = group::signal(self.pgid, signal) {
            warnings.push(format!(
                "cannot send {signal} to process group {}: {errno}",
                self.pgid
            ));
        }
    }
}

/// Owns the duty to kill the group until `wait` has done it.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            // Nothing to report to from a destructor; ESRCH is already Ok.
            let _ = group::signal(self.pgid, Signal::SIGKILL);
        }
    }
}

fn termination(status: io::Result<ExitStatus>) -> Termination {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Exited(code),
            (None, Some(signal)) => Termination::Signaled(signal),
            (None, None) => Termination::FailedToStart(format!("unexpected status: {status}")),
        },
        Err(error) => Termination::FailedToStart(format!("cannot wait for the shell: {error}")),
    }
}

pub(crate) fn validate_env(env: &[(String, String)]) -> Result<(), SpawnError> {
    for (name, value) in env {
        let reason = if name.is_empty() {
            "empty name"
        } else if name.contains('=') {
            "'=' in name"
        } else if name.contains('\0') || value.contains('\0') {
            "NUL byte"
        } else {
            continue;
        };
        return Err(SpawnError::InvalidEnv {
            name: name.clone(),
            reason,
        });
    }
    Ok(())
}

/// Makes the output file's directory and removes a leftover file.
fn prepare_output(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    remove_stale(path)
}

/// Removes a leftover log file. Nothing to remove is fine, including a path
/// under a non-directory: opening the log then fails at the first line, which
/// is a warning, not a spawn error.
fn remove_stale(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error)
            if !matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Err(error)
        }
        _ => Ok(()),
    }
}

/// `<output file>.script.sh`, so each attempt's script sits with its outputs.
fn script_file_for(output_path: &Path) -> PathBuf {
    let mut name = output_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "ganger-output".into());
    name.push(".script.sh");
    output_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogLine;

    struct Discard;

    impl LogSink for Discard {
        fn line(&self, _: &LogLine) {}
    }

    /// The fallback for hosts without bash: `sh -e` still stops at the first
    /// failing command.
    #[tokio::test]
    async fn runs_under_sh_with_errexit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ProcessSpec {
            script: "echo \"shell=$0\" >> \"$GANGER_OUTPUT\"; false; echo \"after=1\" >> \"$GANGER_OUTPUT\""
                .to_owned(),
            env: Vec::new(),
            workspace: dir.path().join("ws"),
            log_path: dir.path().join("log"),
            output_path: dir.path().join("output"),
            kill_grace: Duration::from_secs(1),
            log_cap: None,
        };
        let sh = shell::resolve(None);
        assert_eq!(sh.flags, &["-e"]);
        let running = spawn_with(spec, Arc::new(Discard), &sh).expect("spawn");
        let (_requests, kill) = watch::channel(None);
        let outcome = running.wait(kill).await;
        assert_eq!(outcome.termination, Termination::Exited(1));
        assert_eq!(
            outcome.outputs.get("shell").map(String::as_str),
            Some("/bin/sh")
        );
        assert!(!outcome.outputs.contains_key("after"));
    }
}

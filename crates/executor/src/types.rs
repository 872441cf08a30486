use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to run one attempt. The caller renders the script and
/// composes the environment; the executor adds nothing but `GANGER_OUTPUT`
/// and `GANGER_WORKSPACE`.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// The already rendered shell script.
    pub script: String,
    /// The complete environment of the child: nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory of the script; created if missing.
    pub workspace: PathBuf,
    /// Per-attempt log file. A file already there is removed at spawn; the
    /// new one is created (with its parents) at the first line, so an attempt
    /// that prints nothing leaves none.
    pub log_path: PathBuf,
    /// The `$GANGER_OUTPUT` file; created empty (with its parents) before spawn.
    pub output_path: PathBuf,
    /// Time between SIGTERM and SIGKILL on a graceful kill.
    pub kill_grace: Duration,
    /// Maximum bytes written to the log file; `None` for no limit.
    pub log_cap: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The tag used in the log file.
    pub fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogLine {
    pub at: jiff::Timestamp,
    pub stream: Stream,
    pub text: String,
}

/// Receives every captured line as it is read. Called from the log capture
/// task, so an implementation must not block for long: a slow sink slows the
/// draining of the pipes and so the task itself.
pub trait LogSink: Send + Sync + 'static {
    fn line(&self, line: &LogLine);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillMode {
    /// SIGTERM to the group, SIGKILL after the grace period.
    Graceful,
    /// SIGKILL to the group at once.
    Immediate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signaled(i32),
    FailedToStart(String),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub termination: Termination,
    pub outputs: BTreeMap<String, String>,
    /// Things the user should know that did not change the termination:
    /// malformed output lines, a truncated log, a process that escaped.
    pub warnings: Vec<String>,
}

//! What the agent tells its operator. The library prints nothing itself:
//! it sends [`Notice`]s to whoever runs it (`ganger agent` prints them on
//! stderr; tests read them).

use std::fmt;
use std::time::Duration;

use ganger_api::agent::AttemptRef;
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The server accepted the agent (at the start, or again after it
    /// forgot it).
    Registered {
        /// The server that answered.
        server: String,
        agent_id: String,
        lease: Duration,
        heartbeat: Duration,
    },
    /// No server answered; the agent keeps its tasks running and tries
    /// again. Sent once per outage.
    Unreachable { error: String },
    /// A server answers again after an outage.
    Reconnected { server: String },
    /// The server forgot this agent (it restarted): registering again.
    Forgotten,
    /// A shutdown began: no new tasks; running ones get `grace`.
    Draining { running: usize, grace: Duration },
    /// The grace ended (or a second signal came): running tasks are killed.
    Killing { running: usize },
    /// An attempt is no longer this agent's: its processes were killed
    /// and its output and result are dropped.
    Dropped { attempt: AttemptRef, reason: String },
    /// Task process groups a dead agent left running on this workdir were
    /// killed before taking work.
    Reaped { groups: usize },
    /// Containers a dead agent of this name left were removed.
    ReapedContainers { containers: usize },
    /// No Docker engine answers: the agent takes no docker tasks.
    NoDocker { error: String },
    /// The agent left the server's list and stops.
    Deregistered,
    /// Something the operator should know that changes nothing else.
    Warning(String),
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Registered {
                server, agent_id, ..
            } => write!(f, "registered with {server} as `{agent_id}`"),
            Notice::Unreachable { error } => write!(
                f,
                "cannot reach the server, retrying (running tasks go on; their output and results are kept until it answers): {error}"
            ),
            Notice::Reconnected { server } => write!(f, "{server} answers again"),
            Notice::Forgotten => f.write_str(
                "the server does not know this agent any more (it restarted?); registering again",
            ),
            Notice::Draining { running: 0, .. } => f.write_str("stopping: no task runs"),
            Notice::Draining { running, grace } => write!(
                f,
                "draining: no new tasks; waiting up to {} for {running} running (a second signal kills them at once)",
                seconds(*grace)
            ),
            Notice::Killing { running } => write!(f, "killing {running} running task(s)"),
            Notice::Dropped { attempt, reason } => write!(
                f,
                "dropped attempt {} of task #{} of run {} ({}): {reason}",
                attempt.attempt, attempt.task, attempt.run_id, attempt.phase
            ),
            Notice::Reaped { groups } => write!(
                f,
                "killed {groups} task process group(s) left running by an agent that died"
            ),
            Notice::ReapedContainers { containers } => write!(
                f,
                "removed {containers} container(s) left by an agent of this name that died"
            ),
            Notice::NoDocker { error } => {
                write!(f, "no docker tasks will run here: {error}")
            }
            Notice::Deregistered => f.write_str("deregistered; stopped"),
            Notice::Warning(text) => write!(f, "warning: {text}"),
        }
    }
}

fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Where notices go; none when nobody listens.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notices(Option<mpsc::UnboundedSender<Notice>>);

impl Notices {
    pub(crate) fn new(to: Option<mpsc::UnboundedSender<Notice>>) -> Notices {
        Notices(to)
    }

    pub(crate) fn send(&self, notice: Notice) {
        if let Some(tx) = &self.0 {
            // A listener that went away wants no more notices.
            let _ = tx.send(notice);
        }
    }
}

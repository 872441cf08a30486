//! One task attempt on this machine: a rendered [`TaskSpec`] run by the
//! process executor in its run's work directory. Shared by `ganger run`, the
//! server's in-process agent and `ganger agent`, so all three run tasks the
//! same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ganger_core::run::{ExecSpec, Exit, TaskSpec};
use ganger_executor::{KillMode, LogSink, ProcessSpec, Termination};
use tokio::sync::watch;

use crate::workdir::Workdir;

/// Variables of ganger's own that tasks must not inherit: credentials.
const WITHHELD_ENV: &[&str] = &["GANGER_TOKEN", "GANGER_AGENT_TOKEN"];

/// How attempts run on this machine.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kill_grace: Duration,
    pub log_cap: Option<u64>,
    /// The environment tasks start from, less ganger's credentials.
    base_env: Vec<(String, String)>,
}

impl Settings {
    pub fn new(
        kill_grace: Duration,
        log_cap: Option<u64>,
        base_env: Vec<(String, String)>,
    ) -> Settings {
        let base_env = base_env
            .into_iter()
            .filter(|(k, _)| !WITHHELD_ENV.contains(&k.as_str()))
            .collect();
        Settings {
            kill_grace,
            log_cap,
            base_env,
        }
    }
}

/// How an attempt ended.
pub struct Ended {
    pub exit: Exit,
    pub outputs: BTreeMap<String, String>,
    /// The executor's warnings about this attempt.
    pub warnings: Vec<String>,
}

impl Ended {
    /// An attempt that could not run at all.
    pub fn error(message: String) -> Ended {
        Ended {
            exit: Exit::Error(message),
            outputs: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }
}

/// Starts the attempt; `started` is called once its process runs. Must be
/// awaited from its own Tokio task: `posix_spawn` holds the calling thread
/// until the child has exec'd.
pub async fn run(
    spec: TaskSpec,
    workdir: &Workdir,
    settings: &Settings,
    sink: Arc<dyn LogSink>,
    kill: watch::Receiver<Option<KillMode>>,
    started: impl FnOnce(),
) -> Ended {
    let (attempt, phase) = (spec.attempt, spec.phase);
    let script = match spec.executor {
        ExecSpec::Process { script } => script,
        other => {
            return Ended::error(format!(
                "executor `{}` is not available in this version of ganger; only `process` tasks run",
                other.name()
            ));
        }
    };
    let mut env = settings.base_env.clone();
    env.extend(spec.env);
    let process = ProcessSpec {
        script,
        env,
        workspace: workdir.workspace(&spec.name),
        log_path: workdir.log(&spec.name, attempt, phase),
        output_path: workdir.output(&spec.name, attempt, phase),
        kill_grace: settings.kill_grace,
        log_cap: settings.log_cap,
    };
    match ganger_executor::spawn(process, sink) {
        Ok(child) => {
            started();
            let outcome = child.wait(kill).await;
            let exit = match outcome.termination {
                Termination::Exited(code) => Exit::Code(code),
                Termination::Signaled(sig) => Exit::Signal(sig),
                Termination::FailedToStart(msg) => Exit::Error(msg),
            };
            Ended {
                exit,
                outputs: outcome.outputs,
                warnings: outcome.warnings,
            }
        }
        Err(e) => Ended::error(e.to_string()),
    }
}

//! One task attempt on this machine: a rendered [`TaskSpec`] run by its
//! executor (a process, or a Docker container) in its run's work directory. Shared by `ganger run`, the
//! server's in-process agent and `ganger agent`, so all three run tasks the
//! same way.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganger_core::run::{ExecSpec, Exit, TaskSpec};
use ganger_executor::{KillMode, LogLine, LogSink, ProcessSpec, Stream, Termination};
use tokio::sync::watch;

use crate::container::Docker;
use crate::job_api::{JobApi, JobHandle, JobInfo, JobProgress, Report};
use crate::orphans::ProcessRecords;
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
    /// Where running process groups are recorded, to be killed should this
    /// process die before them.
    records: Option<ProcessRecords>,
    /// The Docker engine `executor: docker` tasks run on, if any.
    docker: Option<Docker>,
    /// The endpoint tasks reach at `$GANGER_JOB_URL`, if started.
    job_api: Option<JobApi>,
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
            records: None,
            docker: None,
            job_api: None,
        }
    }

    /// Starts the job endpoint tasks talk to (`$GANGER_JOB_URL`): on
    /// 127.0.0.1 for processes and, with Docker, on the host's address on
    /// the containers' network. Call it after [`Settings::with_docker`].
    /// On failure the settings stay without one (tasks then find no
    /// `GANGER_JOB_URL`).
    pub async fn start_job_api(&mut self) -> std::io::Result<()> {
        let mut listen = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)];
        listen.extend(
            self.docker
                .as_ref()
                .and_then(Docker::gateway)
                .map(|ip| SocketAddr::new(ip, 0)),
        );
        self.job_api = Some(JobApi::start(&listen).await?);
        Ok(())
    }

    /// Runs `executor: docker` tasks on `docker`.
    pub fn with_docker(self, docker: Docker) -> Settings {
        Settings {
            docker: Some(docker),
            ..self
        }
    }

    /// The executors attempts can use here, for the agent's registration.
    pub fn executors(&self) -> Vec<String> {
        let mut executors = vec!["process".to_owned()];
        if self.docker.is_some() {
            executors.push("docker".to_owned());
        }
        executors
    }

    /// Records every attempt's process group in `records`, so that the
    /// next start after a crash kills what this process left running.
    pub fn recording(self, records: ProcessRecords) -> Settings {
        Settings {
            records: Some(records),
            ..self
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

/// Who hears of an attempt while it runs.
pub struct Listeners {
    /// Every line of output, as it is read.
    pub lines: Arc<dyn LogSink>,
    /// Each progress (`0.0..=1.0`) the task reports through its job
    /// endpoint, in order. Called from the endpoint's task: must not block.
    pub progress: Arc<dyn Fn(f64) + Send + Sync>,
}

/// Starts the attempt of run `run_id`; `started` is called once its
/// process (or container) runs. Must be awaited from its own Tokio task:
/// `posix_spawn` holds the calling thread until the child has exec'd.
pub async fn run(
    spec: TaskSpec,
    run_id: &str,
    workdir: &Workdir,
    settings: &Settings,
    listeners: Listeners,
    kill: watch::Receiver<Option<KillMode>>,
    started: impl FnOnce(),
) -> Ended {
    let log_path = workdir.log(&spec.name, spec.attempt, spec.phase);
    let sink = Arc::clone(&listeners.lines);
    let notes = Arc::new(Mutex::new(Vec::new()));
    // Open while the attempt runs: dropped when this function returns.
    let job = match open_job(run_id, &spec, settings, listeners, &notes) {
        Ok(job) => job,
        Err(e) => return Ended::error(e.to_string()),
    };
    let outcome = match &spec.executor {
        ExecSpec::Process { script } => {
            let mut env = settings.base_env.clone();
            env.extend(spec.env.iter().cloned());
            if let Some(url) = job.as_ref().and_then(|j| j.url(0)) {
                env.extend(JobHandle::env(&url));
            }
            let process = ProcessSpec {
                script: script.clone(),
                env,
                workspace: workdir.workspace(&spec.name),
                log_path: log_path.clone(),
                output_path: workdir.output(&spec.name, spec.attempt, spec.phase),
                kill_grace: settings.kill_grace,
                log_cap: settings.log_cap,
            };
            match ganger_executor::spawn(process, sink) {
                Ok(child) => {
                    let recorded = settings.records.as_ref().map(|r| r.record(child.pid()));
                    started();
                    let outcome = child.wait(kill).await;
                    // The group is dead now: the record goes.
                    drop(recorded);
                    outcome
                }
                Err(e) => return Ended::error(e.to_string()),
            }
        }
        ExecSpec::Docker {
            spec: container,
            script,
        } => {
            let Some(docker) = &settings.docker else {
                return Ended::error(
                    "this agent has no Docker engine to run `executor: docker` tasks; \
                     start Docker (or set DOCKER_HOST) and restart the agent"
                        .into(),
                );
            };
            let mut container = docker.spec(
                run_id,
                &spec,
                container.clone(),
                script.clone(),
                workdir,
                settings,
            );
            // Containers reach the endpoint on their network's gateway.
            let url = docker
                .gateway()
                .and_then(|ip| job.as_ref().and_then(|j| j.url_on(ip)));
            if let Some(url) = url {
                container.env.extend(JobHandle::env(&url));
            }
            docker.engine().run(container, sink, kill, started).await
        }
        other => {
            return Ended::error(format!(
                "executor `{}` is not available in this version of ganger",
                other.name()
            ));
        }
    };
    let exit = match outcome.termination {
        Termination::Exited(code) => Exit::Code(code),
        Termination::Signaled(sig) => Exit::Signal(sig),
        Termination::FailedToStart(msg) => Exit::Error(msg),
    };
    // The progress lines wait for the executor to be done with the log:
    // it writes the file through its own handle, whose offset a line
    // written beside it would be overwritten at.
    let mut lines = std::mem::take(&mut *notes.lock().unwrap_or_else(|e| e.into_inner()));
    lines.extend(warning_lines(&outcome.warnings));
    append_lines(&log_path, &lines).await;
    // Outputs sent to the job endpoint first; `$GANGER_OUTPUT`'s lines win.
    let mut outputs = job.map(|j| j.outputs()).unwrap_or_default();
    outputs.extend(outcome.outputs);
    Ended {
        exit,
        outputs,
        warnings: outcome.warnings,
    }
}

/// Opens the attempt's job endpoint, for the executors that have one.
/// Each progress goes to `listeners`, to the live output as a
/// `[ganger] progress 45%` line, and into `notes` for the log file.
fn open_job(
    run_id: &str,
    spec: &TaskSpec,
    settings: &Settings,
    listeners: Listeners,
    notes: &Arc<Mutex<Vec<String>>>,
) -> std::io::Result<Option<JobHandle>> {
    let Some(api) = &settings.job_api else {
        return Ok(None);
    };
    if !matches!(
        spec.executor,
        ExecSpec::Process { .. } | ExecSpec::Docker { .. }
    ) {
        return Ok(None);
    }
    let notes = Arc::clone(notes);
    let report: Report = Arc::new(move |p: JobProgress| {
        let Some(progress) = p.progress else {
            return;
        };
        (listeners.progress)(progress);
        if let Some(text) = p.log_text() {
            let line = LogLine {
                at: jiff::Timestamp::now(),
                stream: Stream::Stderr,
                text,
            };
            listeners.lines.line(&line);
            notes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{:.3} err {}\n", line.at, line.text));
        }
    });
    api.register(JobInfo::new(run_id, spec), report).map(Some)
}

/// The executor's warnings as log lines.
fn warning_lines(warnings: &[String]) -> Vec<String> {
    let at = jiff::Timestamp::now();
    warnings
        .iter()
        .map(|w| format!("{at:.3} err [ganger] warning: {w}\n"))
        .collect()
}

/// Adds ganger's own lines to the end of the attempt's log, where
/// whoever reads the log sees them: the log is what reaches the server
/// from every kind of agent.
async fn append_lines(path: &std::path::Path, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let text = lines.concat();
    let appended = async {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, text.as_bytes()).await
    };
    // The warnings still reach the caller in `Ended` when the log cannot
    // be written.
    let _ = appended.await;
}

//! The local driver behind `ganger run`: the core's decisions carried out
//! with processes on this machine, `slots` at a time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ganger_agent::attempt::{self, Settings};
use ganger_agent::{Docker, Workdir};
use ganger_core::model::TaskId;
use ganger_core::run::{Decision, Event, Exit, Phase, RunState, TaskSpec};
use ganger_executor::{KillMode, LogLine, LogSink};
use jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use crate::observer::Observer;

#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub slots: usize,
    pub workdir: Workdir,
    pub kill_grace: Duration,
    pub log_cap: Option<u64>,
    /// The environment tasks start from (usually the caller's own).
    pub base_env: Vec<(String, String)>,
    /// Where `executor: docker` tasks run; without it they fail.
    pub docker: Option<Docker>,
}

/// What the loop says when a plain cancel arrives while compensation runs
/// (the core lets only a forced cancel stop `undo`).
const UNDO_NOT_CANCELLED: &str = "compensation (undo) is running and only a forced stop interrupts it; press Ctrl-C again to stop it";

/// Requests from outside the loop (signal handlers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Cancel gracefully; `force` kills everything at once. `reason` is
    /// recorded as the run's reason (the first one given wins).
    Cancel { force: bool, reason: String },
}

/// What an attempt's own task tells the loop.
enum Report {
    Started {
        task: TaskId,
        attempt: u32,
        phase: Phase,
    },
    /// The task said how far along it is, through its job endpoint.
    Progress {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        progress: f64,
    },
    Finished {
        task: TaskId,
        attempt: u32,
        phase: Phase,
        exit: Exit,
        outputs: BTreeMap<String, String>,
        /// The executor's warnings about this attempt, for the observer.
        warnings: Vec<String>,
    },
}

struct TaskLines {
    observer: Arc<dyn Observer>,
    task: String,
    phase: Phase,
}

impl LogSink for TaskLines {
    fn line(&self, line: &LogLine) {
        self.observer.line(&self.task, self.phase, line);
    }
}

struct Driver {
    run: RunState,
    config: LocalConfig,
    observer: Arc<dyn Observer>,
    ready: VecDeque<Box<TaskSpec>>,
    running: HashMap<(TaskId, Phase), watch::Sender<Option<KillMode>>>,
    reports: mpsc::UnboundedSender<Report>,
    settings: Settings,
}

/// Runs `run` to its end and returns its final state.
pub async fn run_local(
    run: RunState,
    config: LocalConfig,
    observer: Arc<dyn Observer>,
    mut control: mpsc::Receiver<Control>,
) -> RunState {
    let (reports, mut reports_rx) = mpsc::unbounded_channel();
    let mut settings = Settings::new(config.kill_grace, config.log_cap, config.base_env.clone());
    if let Some(docker) = config.docker.clone() {
        settings = settings.with_docker(docker);
    }
    if let Err(e) = settings.start_job_api().await {
        // Only tasks that use it need it: they find no $GANGER_JOB_URL.
        observer.notice(&format!("tasks get no job endpoint ($GANGER_JOB_URL): {e}"));
    }
    let mut d = Driver {
        run,
        config,
        observer,
        ready: VecDeque::new(),
        running: HashMap::new(),
        reports,
        settings,
    };
    d.apply(Event::Start);
    let mut control_open = true;
    loop {
        d.start_ready();
        if d.run.status.is_terminal() && d.running.is_empty() {
            break;
        }
        let wakeup = d.run.next_wakeup().map(|at| {
            let wait = at.duration_since(Timestamp::now());
            tokio::time::Instant::now() + Duration::try_from(wait).unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            Some(report) = reports_rx.recv() => match report {
                Report::Started { task, attempt, phase } => {
                    d.apply(Event::TaskStarted { task, attempt, phase, agent: None });
                }
                Report::Progress { task, attempt, phase, progress } => {
                    d.apply(Event::TaskProgress { task, attempt, phase, progress });
                }
                Report::Finished { task, attempt, phase, exit, outputs, warnings } => {
                    d.running.remove(&(task, phase));
                    for warning in &warnings {
                        d.observer.warning(d.run.task_name(task), phase, warning);
                    }
                    d.apply(Event::TaskFinished { task, attempt, phase, exit, outputs });
                }
            },
            c = control.recv(), if control_open => match c {
                Some(Control::Cancel { force, reason }) => d.cancel(force, reason),
                None => control_open = false,
            },
            _ = tokio::time::sleep_until(wakeup.unwrap_or_else(tokio::time::Instant::now)), if wakeup.is_some() => d.apply(Event::Tick),
        }
    }
    d.run
}

impl Driver {
    fn apply(&mut self, event: Event) {
        // Events come only from this loop's own bookkeeping, so a refusal
        // means the task is no longer current: there is nothing to do.
        if let Ok(decisions) = self.run.apply(event, Timestamp::now()) {
            self.act(decisions);
        }
    }

    fn cancel(&mut self, force: bool, reason: String) {
        if !force && self.run.undoing && !self.run.status.is_terminal() {
            // The core ignores it; say so rather than seem not to listen.
            self.observer.notice(UNDO_NOT_CANCELLED);
        }
        self.apply(Event::Cancel { reason, force });
        if force {
            // A forced stop also drops work not handed to a process yet.
            self.ready.clear();
        }
    }

    fn act(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            match decision {
                Decision::Dispatch(spec) => self.ready.push_back(spec),
                Decision::Kill {
                    task, phase, force, ..
                } => {
                    if let Some(kill) = self.running.get(&(task, phase)) {
                        let mode = if force {
                            KillMode::Immediate
                        } else {
                            KillMode::Graceful
                        };
                        let _ = kill.send(Some(mode));
                    }
                }
                Decision::TaskChanged(task) => self.observer.task_changed(&self.run, task),
                Decision::RunChanged => self.observer.run_changed(&self.run),
            }
        }
    }

    fn start_ready(&mut self) {
        while self.running.len() < self.config.slots.max(1) {
            let Some(spec) = self.ready.pop_front() else {
                return;
            };
            let current = self.run.tasks[spec.task]
                .exec_status(spec.phase)
                .is_some_and(|(status, attempt)| {
                    attempt == spec.attempt && status == ganger_core::run::TaskStatus::Ready
                });
            if current {
                self.start(spec);
            }
        }
    }

    fn start(&mut self, spec: Box<TaskSpec>) {
        let (task, attempt, phase) = (spec.task, spec.attempt, spec.phase);
        let sink = Arc::new(TaskLines {
            observer: Arc::clone(&self.observer),
            task: spec.name.clone(),
            phase,
        });
        let (kill_tx, kill_rx) = watch::channel(None);
        self.running.insert((task, phase), kill_tx);
        // Claimed from here on: a cancel arriving before the process has
        // started becomes a kill, which `wait` honours as soon as it runs.
        self.apply(Event::TaskClaimed {
            task,
            attempt,
            phase,
            agent: None,
        });
        let reports = self.reports.clone();
        let workdir = self.config.workdir.clone();
        let settings = self.settings.clone();
        let run_id = self.run.id.clone();
        // Each attempt lives in its own task: posix_spawn holds the calling
        // thread until the child has exec'd, and the loop must not wait for
        // that, or slots would start one after another instead of together.
        tokio::spawn(async move {
            let started = reports.clone();
            let started = move || {
                let _ = started.send(Report::Started {
                    task,
                    attempt,
                    phase,
                });
            };
            let progress = reports.clone();
            let listeners = attempt::Listeners {
                lines: sink,
                progress: Arc::new(move |value| {
                    let _ = progress.send(Report::Progress {
                        task,
                        attempt,
                        phase,
                        progress: value,
                    });
                }),
            };
            let ended = attempt::run(
                *spec, &run_id, &workdir, &settings, listeners, kill_rx, started,
            )
            .await;
            let _ = reports.send(Report::Finished {
                task,
                attempt,
                phase,
                exit: ended.exit,
                outputs: ended.outputs,
                warnings: ended.warnings,
            });
        });
    }
}

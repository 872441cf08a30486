//! `ganger run FILE [JOB]`: one run, now, on this machine.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ganger_agent::{DEFAULT_NETWORK, Docker};
use ganger_core::model::Executor;
use ganger_core::params::resolve_params;
use ganger_core::run::{RunState, RunStatus};
use ganger_core::units::parse_duration;
use ganger_engine::{Control, LocalConfig, Observer, Workdir, new_run_id, run_local};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::exit;
use crate::load::{Loaded, load, pick};
use crate::output::{Live, Plain, Target, summary};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The job file.
    file: PathBuf,
    /// The job to run; may be left out when the file has one job.
    job: Option<String>,
    /// A parameter, as key=value (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Tasks run at once [default: number of cores].
    #[arg(long, value_parser = parse_slots)]
    slots: Option<usize>,
    /// Directory for task workspaces, logs and outputs [default: a new temporary directory].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print the final run record as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Time between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value = "10s", value_parser = parse_grace)]
    grace: Duration,
}

/// What this version of `ganger run` cannot do, found before anything runs
/// rather than halfway through the job.
fn unsupported(job: &ganger_core::model::Job) -> Vec<String> {
    job.tasks
        .iter()
        .flat_map(|t| {
            let executor = matches!(t.executor, Executor::Http(_) | Executor::Job(_)).then(|| {
                format!("task `{}` uses executor `{}`; this version of ganger runs only `process` and `docker` tasks", t.name, t.executor.name())
            });
            let fan_out = t.for_each.is_some().then(|| format!("task `{}` uses `for_each`, which this version of ganger cannot run yet", t.name));
            executor.into_iter().chain(fan_out)
        })
        .collect()
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

fn parse_slots(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1: with no slots no task could run".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

const LOG_CAP: u64 = 100 << 20;

pub(crate) fn main(args: RunArgs) -> anyhow::Result<u8> {
    let file = match load(&args.file)? {
        Loaded::Valid(file) => file,
        Loaded::Invalid(diags) => {
            eprintln!("{diags}");
            return Ok(exit::INVALID);
        }
    };
    let job = pick(file, args.job.as_deref(), &args.file)?;
    let unsupported = unsupported(&job);
    if !unsupported.is_empty() {
        for problem in unsupported {
            eprintln!("error: {problem}");
        }
        return Ok(exit::INVALID);
    }
    let params = match resolve_params(&job, &args.params) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return Ok(exit::INVALID);
        }
    };
    let id = new_run_id();
    let root = match args.workdir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("ganger-{id}")),
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the work directory {}", root.display()))?;
    let root = std::path::absolute(&root).unwrap_or(root);
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let docker = match job
        .tasks
        .iter()
        .find(|t| matches!(t.executor, Executor::Docker(_)))
    {
        None => None,
        Some(task) => {
            // Containers are labelled with this run, so they are told
            // from those of other runs on the same engine.
            let owner = format!("ganger-run-{id}");
            match runtime.block_on(Docker::connect(DEFAULT_NETWORK, &owner)) {
                Ok((docker, _)) => Some(docker),
                Err(e) => {
                    eprintln!(
                        "error: task `{}` uses executor `docker`, but {e}",
                        task.name
                    );
                    return Ok(exit::INVALID);
                }
            }
        }
    };
    let config = LocalConfig {
        slots,
        workdir: Workdir::new(root.clone()),
        kill_grace: args.grace,
        log_cap: Some(LOG_CAP),
        base_env: std::env::vars().collect(),
        docker,
    };
    let run = RunState::new(id, Arc::new(job), params, jiff::Timestamp::now());

    let target = if args.json {
        Target::Stderr
    } else {
        Target::Stdout
    };
    let live = !args.json && std::io::stdout().is_terminal();
    let finished = runtime.block_on(async move {
        let (control_tx, control_rx) = mpsc::channel(4);
        // Installed before any task starts, so no signal finds the default
        // disposition (which would end ganger and leave tasks running).
        match Signals::install() {
            Ok(signals) => {
                tokio::spawn(signals.forward(control_tx));
            }
            Err(e) => eprintln!("ganger: warning: cannot handle signals: {e}"),
        }
        if live {
            let live = Arc::new(Live::new(&run));
            let painter = live.start_painting();
            let observer: Arc<dyn Observer> = live.clone();
            let finished = run_local(run, config, observer, control_rx).await;
            live.stop_painting(painter, &finished).await;
            finished
        } else {
            run_local(run, config, Arc::new(Plain::new(target)), control_rx).await
        }
    });
    summary(&finished, &root, target);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&finished.record())
                .context("cannot encode the run record")?
        );
    }
    Ok(match finished.status {
        RunStatus::Succeeded => exit::SUCCESS,
        RunStatus::Cancelled => exit::CANCELLED,
        _ => exit::FAILED,
    })
}

/// The signals that stop a run. Ctrl-C, SIGTERM and SIGHUP (the terminal
/// was closed) cancel gracefully, and a second one of them kills; SIGQUIT
/// (Ctrl-\) kills at once. Left to their default action, these would end
/// ganger and leave its tasks, each in its own process group, running.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    quit: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    async fn forward(mut self, control: mpsc::Sender<Control>) {
        let mut seen = 0;
        loop {
            let (name, force) = tokio::select! {
                _ = self.int.recv() => ("an interrupt", false),
                _ = self.term.recv() => ("SIGTERM", false),
                _ = self.hup.recv() => ("a hangup (the terminal was closed)", false),
                _ = self.quit.recv() => ("SIGQUIT", true),
            };
            seen += 1;
            let force = force || seen > 1;
            let reason = format!("cancelled by {name}");
            if control
                .send(Control::Cancel { force, reason })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

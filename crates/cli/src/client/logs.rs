//! `ganger logs RUN [TASK]`: a run's output, streamed from the server.

use std::sync::atomic::AtomicUsize;

use clap::Args;
use ganger_api::RunDetail;

use super::conn::ConnArgs;
use super::follow::started;
use super::lines::prefixes;
use super::out::Sink;
use super::stream::{Show, task_log};
use super::watch::{Follow, watch};
use crate::exit;

#[derive(Args)]
pub(crate) struct LogsArgs {
    /// The run's id.
    run: String,
    /// Only this task's output, unprefixed [default: every task's, each line prefixed `task | `].
    task: Option<String>,
    /// Keep printing as tasks write, until the task (or, without TASK, the run) ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Keep each line's time and stream (`2026-05-01T12:00:00Z out text`).
    #[arg(long, short = 't')]
    timestamps: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn main(args: LogsArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    if let Some(task) = &args.task {
        let show = Show {
            sink: Sink::Stdout,
            prefix: String::new(),
            timestamps: args.timestamps,
        };
        task_log(
            &api,
            &args.run,
            task,
            args.follow,
            &show,
            &AtomicUsize::new(0),
        )
        .await?;
        return Ok(exit::SUCCESS);
    }
    if args.follow {
        let follow = Follow {
            sink: Sink::Stdout,
            logs: true,
            states: false,
            timestamps: args.timestamps,
            shown: None,
        };
        watch(&api, &args.run, Some(follow)).await?;
        return Ok(exit::SUCCESS);
    }
    // Every task in the job's order, each streamed whole before the next.
    let run: RunDetail = api.get(api.url(&["runs", &args.run])).await?;
    let prefixes = prefixes(run.tasks.iter().map(|t| t.name.as_str()));
    for (t, prefix) in run.tasks.iter().zip(prefixes) {
        if !started(t) {
            continue;
        }
        let show = Show {
            sink: Sink::Stdout,
            prefix,
            timestamps: args.timestamps,
        };
        task_log(
            &api,
            &run.summary.id,
            &t.name,
            false,
            &show,
            &AtomicUsize::new(0),
        )
        .await?;
    }
    Ok(exit::SUCCESS)
}

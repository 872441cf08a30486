//! The client commands: everything that talks to a `ganger server` over
//! its HTTP API (DESIGN §4, §5). Each command is one module; they share
//! the connection (`conn`, `http`, `failover`), log streaming (`stream`, `lines`),
//! watching a run (`watch`) and output (`table`, `when`, `out`).

mod agents;
mod apply;
mod conn;
mod control;
mod exec;
mod failover;
mod follow;
mod http;
mod jobs;
mod lines;
mod logs;
mod out;
mod runs;
mod states;
mod status;
mod stream;
mod submit;
mod table;
#[cfg(test)]
mod testserver;
mod watch;
mod when;

use anyhow::Context;
use clap::Subcommand;

use crate::exit;

#[derive(Subcommand)]
pub(crate) enum ClientCommand {
    /// Upload job definitions to the server (each file is stored whole or not at all).
    Apply(apply::ApplyArgs),
    /// Start a run of a stored job.
    Submit(submit::SubmitArgs),
    /// Run one command on the server, as a run of a one-task job named `exec`.
    Exec(exec::ExecArgs),
    /// List runs, newest first.
    Runs(runs::RunsArgs),
    /// Show a run and its tasks.
    Status(status::StatusArgs),
    /// Print a run's output: one task's, or every task's.
    Logs(logs::LogsArgs),
    /// Cancel a run: running tasks are stopped, waiting ones never start.
    Cancel(control::ControlArgs),
    /// Run a finished run's failed tasks again (and what depends on them).
    Retry(control::ControlArgs),
    /// List the stored jobs, or show one job's versions.
    Jobs(jobs::JobsArgs),
    /// Print a job's task graph as DOT (Graphviz).
    Graph(jobs::GraphArgs),
    /// List the agents that run tasks.
    Agents(agents::AgentsArgs),
}

/// Runs a client command on a single-threaded runtime: a client waits on
/// the network, never on the CPU.
pub(crate) fn main(command: ClientCommand) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        match command {
            ClientCommand::Apply(args) => apply::main(args).await,
            ClientCommand::Submit(args) => submit::main(args).await,
            ClientCommand::Exec(args) => exec::main(args).await,
            ClientCommand::Runs(args) => runs::main(args).await,
            ClientCommand::Status(args) => status::main(args).await,
            ClientCommand::Logs(args) => logs::main(args).await,
            ClientCommand::Cancel(args) => control::main(args, control::Action::Cancel).await,
            ClientCommand::Retry(args) => control::main(args, control::Action::Retry).await,
            ClientCommand::Jobs(args) => jobs::main(args).await,
            ClientCommand::Graph(args) => jobs::graph(args).await,
            ClientCommand::Agents(args) => agents::main(args).await,
        }
    });
    match result {
        // The reader of stdout went away (`| head`): it had enough.
        Err(e) if e.downcast_ref::<out::Closed>().is_some() => Ok(exit::SUCCESS),
        Err(e) if e.downcast_ref::<watch::Interrupted>().is_some() => Ok(exit::CANCELLED),
        other => other,
    }
}

/// Parses `key=value` (`-p`, `--tag`).
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

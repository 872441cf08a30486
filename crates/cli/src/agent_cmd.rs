//! `ganger agent`: runs tasks for a server on this machine, connecting out
//! to it over HTTP (behind NAT, no inbound port, no database access).
//!
//! Values come from `[agent]` in ganger.toml, then `GANGER_AGENT_*`, then
//! flags (see `config.rs`). The first SIGTERM or SIGINT drains (no new
//! tasks, running ones get the grace), a second kills the running tasks at
//! once, a third exits without waiting for anything.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ganger_agent::{AgentConfig, AgentError, Notice};
use ganger_core::units::parse_duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::config;
use crate::exit;

const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

#[derive(Args)]
pub struct AgentArgs {
    /// The server's URL; several (comma-separated or repeated) are tried in
    /// order [config: agent.server; env: GANGER_AGENT_SERVER].
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    server: Vec<String>,
    /// A token with the agent role (`ganger token create --role agent`)
    /// [config: agent.token; env: GANGER_AGENT_TOKEN, then GANGER_TOKEN].
    /// Prefer the environment: a flag is visible to other users in `ps`.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// A label tasks' `tags` are matched against, `key=value` or `key`;
    /// repeat for several [config: agent.labels; env: GANGER_AGENT_LABELS].
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Tasks run at once [config: agent.slots; env: GANGER_AGENT_SLOTS;
    /// default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    slots: Option<u32>,
    /// The agent's name; the same name registering again is the same
    /// agent [config: agent.name; env: GANGER_AGENT_NAME; default: the
    /// host name].
    #[arg(long)]
    name: Option<String>,
    /// Where task workspaces and log buffers live [config: agent.workdir;
    /// env: GANGER_AGENT_WORKDIR; default: ./ganger-agent].
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// The bridge network docker tasks join unless they name one; created
    /// at start [config: agent.docker_network; env:
    /// GANGER_AGENT_DOCKER_NETWORK; default: ganger].
    #[arg(long, value_name = "NAME")]
    docker_network: Option<String>,
    /// On shutdown, how long running tasks get to finish; also the time
    /// between SIGTERM and SIGKILL when a task is stopped [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    grace: Option<Duration>,
    /// Read this configuration file instead of searching for ganger.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

pub fn main(args: AgentArgs) -> Result<u8> {
    let config = configure(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// The agent's configuration: file, environment, flags, defaults.
fn configure(args: AgentArgs) -> Result<AgentConfig> {
    let loaded = config::load(args.config.as_deref())?;
    if let Some(file) = &loaded.file {
        eprintln!("ganger agent: configuration from {}", file.display());
    }
    let mut c = loaded.agent;
    c.server
        .flag("--server", (!args.server.is_empty()).then_some(args.server));
    c.token.flag("--token", args.token.map(Some));
    c.labels
        .flag("--label", (!args.labels.is_empty()).then_some(args.labels));
    c.slots.flag("--slots", args.slots);
    c.name.flag("--name", args.name.map(Some));
    c.workdir.flag("--workdir", args.workdir.map(Some));
    c.docker_network
        .flag("--docker-network", args.docker_network);

    if c.server.value.is_empty() {
        bail!(
            "no server given: pass --server http://HOST:7070 (or set [agent] server in ganger.toml, or GANGER_AGENT_SERVER)"
        );
    }
    let servers = c
        .server
        .value
        .iter()
        .map(|s| {
            ganger_agent::parse_server(s).map_err(|e| anyhow!("{e} (from {})", c.server.source))
        })
        .collect::<Result<Vec<_>>>()?;
    let token = match c.token.value {
        Some(token) => token,
        None => std::env::var("GANGER_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "no agent token: create one on the server with `ganger token create --role agent`, then set GANGER_AGENT_TOKEN (or [agent] token, or --token)"
                )
            })?,
    };
    let name = match c.name.value {
        Some(name) => {
            ganger_agent::check_name(&name).map_err(|e| anyhow!("{e} (from {})", c.name.source))?;
            name
        }
        None => hostname()?,
    };
    for label in &c.labels.value {
        ganger_agent::check_label(label).map_err(|e| anyhow!("{e} (from {})", c.labels.source))?;
    }
    let workdir = c
        .workdir
        .value
        .unwrap_or_else(|| PathBuf::from("ganger-agent"));
    Ok(AgentConfig {
        labels: c.labels.value,
        slots: c.slots.value,
        workdir,
        grace: args.grace.unwrap_or(ganger_agent::remote::DEFAULT_GRACE),
        docker_network: c.docker_network.value,
        ..AgentConfig::new(servers, token, name)
    })
}

/// This machine's name, as an agent name.
fn hostname() -> Result<String> {
    let text = std::fs::read_to_string(HOSTNAME_FILE).with_context(|| {
        format!("cannot read the host name from {HOSTNAME_FILE}; name the agent with --name")
    })?;
    let name = text.trim().to_owned();
    ganger_agent::check_name(&name)
        .map_err(|e| anyhow!("the host name is not a usable agent name: {e}"))?;
    Ok(name)
}

async fn serve(mut config: AgentConfig) -> Result<u8> {
    // Counted, so the first signal drains, the second kills and the third
    // leaves, each waited for by whoever cares.
    let (signals_tx, signals) = watch::channel(0u32);
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::spawn(async move {
        loop {
            let which = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            let n = *signals_tx.borrow() + 1;
            match n {
                1 => {}
                2 => eprintln!("ganger agent: {which} again: killing running tasks now"),
                _ => eprintln!("ganger agent: {which} a third time: leaving without waiting"),
            }
            signals_tx.send_replace(n);
        }
    });
    let after = |count: u32| {
        let mut signals = signals.clone();
        async move {
            let _ = signals.wait_for(|n| *n >= count).await;
        }
    };

    let (notices_tx, notices) = mpsc::unbounded_channel();
    config.notices = Some(notices_tx);
    let labels = if config.labels.is_empty() {
        "no labels".to_owned()
    } else {
        format!("labels {}", config.labels.join(" "))
    };
    let registered = format!("({labels}, {} slots)", config.slots);
    let printer = tokio::spawn(print_notices(notices, config.name.clone(), registered));

    let result = tokio::select! {
        r = ganger_agent::run_until(config, after(1), after(2)) => r,
        // Dropping the agent kills whatever still runs (no process outlives
        // its owner); the server retries those tasks when their leases end.
        () = after(3) => return Ok(exit::CANCELLED),
    };
    // Every notice is out before the last word.
    let _ = printer.await;
    match result {
        Ok(()) if *signals.borrow() >= 2 => Ok(exit::CANCELLED),
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) => {
            eprintln!("ganger agent: error: {e}");
            Ok(match e {
                AgentError::Config(_)
                | AgentError::Workdir { .. }
                | AgentError::Refused(_)
                | AgentError::NotAccepted { .. } => exit::INVALID,
            })
        }
    }
}

/// Prints notices on stderr until the agent stops (and with it the last
/// sender).
async fn print_notices(mut notices: mpsc::UnboundedReceiver<Notice>, name: String, what: String) {
    while let Some(notice) = notices.recv().await {
        match notice {
            // Tests and scripts wait for this exact line.
            Notice::Registered { server, .. } => {
                eprintln!("ganger agent {name} registered with {server} {what}");
            }
            other => eprintln!("ganger agent: {other}"),
        }
    }
}

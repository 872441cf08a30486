//! `ganger server`: the API, the engine and (by default) an in-process
//! agent over one SQLite database; and `ganger token create`, which works on
//! that database directly (SQLite's WAL lets it while the server runs).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ganger_agent::Docker;
use ganger_core::units::format_duration;
use ganger_engine::{Engine, EngineConfig};
use ganger_server::token::{self, Role};
use ganger_store::{SqliteStore, Store, TokenRow};
// `net` is enabled by ganger-server, whose `serve` takes this type.
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, ServerConfig};
use crate::exit;

const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on, host:port [config: server.listen; env:
    /// GANGER_SERVER_LISTEN; default: 127.0.0.1:7070]. Port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for the database, workspaces, logs and the admin token
    /// [config: server.data; env: GANGER_SERVER_DATA; default: ./ganger-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The SQLite database file [config: server.database; env:
    /// GANGER_SERVER_DATABASE; default: <data>/ganger.db]. PostgreSQL is not
    /// supported yet.
    #[arg(long, value_name = "FILE")]
    database: Option<String>,
    /// Run no tasks here: only remote agents execute them [config:
    /// server.local_agent].
    #[arg(long)]
    no_local_agent: bool,
    /// Tasks the in-process agent runs at once [config: server.slots;
    /// default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    slots: Option<u32>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
pub struct ConfigArg {
    /// Read this configuration file instead of searching for ganger.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create(CreateArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// What the token may do: admin, operator (run and change things),
    /// viewer (read only) or agent (execute tasks).
    #[arg(long, value_name = "ROLE")]
    role: Role,
    /// A name to recognise the token by [default: <role>-<time>].
    #[arg(long)]
    name: Option<String>,
    /// The server's data directory [default: as `ganger server`].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

pub fn main(args: ServerArgs) -> Result<u8> {
    let loaded = config::load(args.config.config.as_deref())?;
    if let Some(file) = &loaded.file {
        eprintln!("ganger server: configuration from {}", file.display());
    }
    let mut config = loaded.server;
    config.listen.flag("--listen", args.listen);
    config.data.flag("--data", args.data);
    if let Some(url) = args.database {
        let file = config::parse_database_flag(&url)?;
        config.database.flag("--database", Some(file));
    }
    config
        .local_agent
        .flag("--no-local-agent", args.no_local_agent.then_some(false));
    config.slots.flag("--slots", args.slots);
    config.check()?;
    runtime()?.block_on(serve(config))
}

pub fn token_main(args: TokenArgs) -> Result<u8> {
    match args.command {
        TokenCommand::Create(args) => {
            let mut config = config::load(args.config.config.as_deref())?.server;
            config.data.flag("--data", args.data);
            runtime()?.block_on(create_token(&config, args.role, args.name))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The Docker engine of the in-process agent, when there is one and it
/// answers. Without it the server still runs; docker tasks wait for a
/// remote agent that has Docker, and say so.
async fn local_docker(config: &ServerConfig) -> Option<Docker> {
    if !config.local_agent.value {
        return None;
    }
    // Containers a server on this data directory left when it died carry
    // this owner, and go now.
    let data = std::path::absolute(&config.data.value).unwrap_or(config.data.value.clone());
    let owner = format!("server:{}", data.display());
    match Docker::connect(&config.docker_network.value, &owner).await {
        Ok((docker, removed)) => {
            if removed > 0 {
                eprintln!("ganger server: removed {removed} container(s) a server that died left");
            }
            Some(docker)
        }
        Err(e) => {
            eprintln!("ganger server: the in-process agent runs no docker tasks: {e}");
            None
        }
    }
}

async fn serve(config: ServerConfig) -> Result<u8> {
    let data = &config.data.value;
    std::fs::create_dir_all(data).with_context(|| {
        format!(
            "cannot create the data directory {} (from {})",
            data.display(),
            config.data.source
        )
    })?;
    // Bind before starting the engine: a taken port must fail the start
    // before recovered runs begin to execute.
    let listen = &config.listen;
    let listener = TcpListener::bind(listen.value.as_str())
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (from {}); is another server running there? pick another address with --listen",
                listen.value, listen.source
            )
        })?;
    let address = listener
        .local_addr()
        .context("cannot read the address the server listens on")?;

    // From here on a signal stops the server gracefully, even one that
    // arrives while the engine recovers.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let store = open_store(&config).await?;
    ensure_admin_token(&store, data).await?;
    let grace = config.grace.value;
    let docker = local_docker(&config).await;
    let engine = Engine::open(
        Arc::new(store),
        EngineConfig {
            data_dir: data.clone(),
            lease: config.lease.value,
            heartbeat: config.heartbeat.value,
            kill_grace: grace,
            log_cap: config.log_cap.value,
            local_slots: config.local_agent.value.then_some(config.slots.value),
            base_env: std::env::vars().collect(),
            docker,
        },
    )
    .await
    .context("cannot start the engine")?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(ganger_server::serve(listener, engine.clone(), async {
        let _ = stopped.await;
    }));
    // Tests and scripts wait for this exact line to know the port.
    eprintln!("ganger server listening on http://{address}");

    let which = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        ended = &mut server => {
            ended.context("the HTTP server stopped")?.context("the HTTP server failed")?;
            bail!("the HTTP server stopped without being asked to");
        }
    };
    eprintln!(
        "ganger server: {which}: shutting down; waiting up to {} for running tasks (a second signal stops at once)",
        format_duration(grace)
    );
    let _ = stop.send(());

    let drain = async {
        match tokio::time::timeout(grace, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                eprintln!("ganger server: the HTTP server failed while stopping: {e}")
            }
            Ok(Err(e)) => eprintln!("ganger server: the HTTP server task failed: {e}"),
            Err(_) => {
                eprintln!(
                    "ganger server: requests still open after the grace period; closing them"
                );
                server.abort();
            }
        }
    };
    let second_signal = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    tokio::select! {
        _ = async { tokio::join!(engine.shutdown(grace), drain) } => {
            eprintln!("ganger server: stopped");
            Ok(exit::SUCCESS)
        }
        // Returning drops the runtime and with it every task: running
        // processes are killed on drop (no process outlives its owner),
        // and the store recovers their runs at the next start.
        _ = second_signal => {
            eprintln!(
                "ganger server: second signal: stopping now; tasks still running run again at the next start"
            );
            Ok(exit::CANCELLED)
        }
    }
}

async fn open_store(config: &ServerConfig) -> Result<SqliteStore> {
    let path = config.database_path();
    SqliteStore::open(&path).await.with_context(|| {
        format!(
            "cannot open the database {} (from {})",
            path.display(),
            config.database.source
        )
    })
}

/// On first start, makes the admin token and writes it, readable by this
/// user only, where clients on this machine find it. A token file whose
/// token the database does not know (the database was replaced) is
/// registered again rather than left useless.
async fn ensure_admin_token(store: &SqliteStore, data: &Path) -> Result<()> {
    let path = data.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let existing = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the admin token {}", path.display()))?;
        let secret = existing.trim();
        if !secret.is_empty() {
            warn_if_shared(&path);
            if store.token(&token::hash(secret)).await?.is_none() {
                put_token(store, secret, Role::Admin, "admin").await?;
                eprintln!(
                    "ganger server: the admin token in {} was not in the database; registered it again",
                    path.display()
                );
            }
            return Ok(());
        }
    }
    let secret = token::generate()?;
    // Stored before written: a file naming a token the database lacks
    // would look valid and fail every request.
    put_token(store, &secret, Role::Admin, "admin").await?;
    write_private(&path, &format!("{secret}\n"))?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    eprintln!(
        "admin token written to {} (mode 0600); clients on this machine use it automatically, others set GANGER_TOKEN",
        shown.display()
    );
    Ok(())
}

fn warn_if_shared(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "ganger server: warning: {} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

/// Writes `text` to `path` with mode 0600, durably: through a temporary
/// file, fsynced, renamed over `path`, and the directory fsynced, so a
/// crash leaves either no file or the whole token.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("token.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` applies only when the file is created: a leftover
        // temporary file must not keep wider permissions.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write the admin token {}", path.display()))
}

async fn put_token(store: &dyn Store, secret: &str, role: Role, name: &str) -> Result<()> {
    store
        .put_token(TokenRow {
            hash: token::hash(secret),
            role: role.as_str().to_owned(),
            name: name.to_owned(),
            created_at: jiff::Timestamp::now().as_millisecond(),
        })
        .await
        .with_context(|| format!("cannot store the {role} token `{name}`"))
}

async fn create_token(config: &ServerConfig, role: Role, name: Option<String>) -> Result<u8> {
    let path = config.database_path();
    // Opening would create an empty database: in the wrong directory that
    // makes a token no server knows.
    if !path.exists() {
        bail!(
            "no server database at {} (data directory from {}); run this where `ganger server` keeps its data, or pass --data DIR",
            path.display(),
            config.data.source
        );
    }
    let store = open_store(config).await?;
    let name = name.unwrap_or_else(|| {
        format!(
            "{role}-{}",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        )
    });
    let secret = token::generate()?;
    put_token(&store, &secret, role, &name).await?;
    println!("{secret}");
    eprintln!(
        "created {role} token `{name}`; it is shown only now: keep it (clients pass it as GANGER_TOKEN or --token)"
    );
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_start_writes_a_private_admin_token_that_the_store_knows() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(dir.path().join("ganger.db")).await?;
        ensure_admin_token(&store, dir.path()).await?;

        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let secret = std::fs::read_to_string(&path)?;
        let row = store
            .token(&token::hash(secret.trim()))
            .await?
            .expect("the token is stored");
        assert_eq!((row.role.as_str(), row.name.as_str()), ("admin", "admin"));

        // A second start keeps the token.
        ensure_admin_token(&store, dir.path()).await?;
        assert_eq!(std::fs::read_to_string(&path)?, secret);
        Ok(())
    }

    #[tokio::test]
    async fn a_token_file_unknown_to_a_new_database_is_registered_again() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "kept-secret\n")?;
        std::fs::set_permissions(
            dir.path().join(ADMIN_TOKEN_FILE),
            std::fs::Permissions::from_mode(0o600),
        )?;
        let store = SqliteStore::open(dir.path().join("ganger.db")).await?;
        ensure_admin_token(&store, dir.path()).await?;
        assert!(store.token(&token::hash("kept-secret")).await?.is_some());
        Ok(())
    }
}

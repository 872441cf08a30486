//! `ganger server`: the API, the engine and (by default) an in-process
//! agent over one SQLite database; and `ganger token create`, which works on
//! that database directly (SQLite's WAL lets it while the server runs).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ganger_agent::Docker;
use ganger_core::units::format_duration;
use ganger_engine::{Engine, EngineConfig};
use ganger_server::Role;
use ganger_server::token::{self, Role as TokenRole};
use ganger_store::{Fence, LEADER_NAME, PgStore, SqliteStore, Store, TokenRow};
// `net` is enabled by ganger-server, whose `serve` takes this type.
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{self, Database, ServerConfig};
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
    /// The database: an SQLite file, or a PostgreSQL URL
    /// (postgres://user:password@host/db) that several replicas share
    /// [config: server.database; env: GANGER_SERVER_DATABASE; default:
    /// <data>/ganger.db].
    #[arg(long, value_name = "FILE|URL")]
    database: Option<String>,
    /// With PostgreSQL: the URL other replicas forward requests to while
    /// this one leads [config: server.advertise; default: http://<listen
    /// address>]. Set it when listening on 0.0.0.0.
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
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
    role: TokenRole,
    /// A name to recognise the token by [default: <role>-<time>].
    #[arg(long)]
    name: Option<String>,
    /// The server's data directory [default: as `ganger server`].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The server's database, as `ganger server --database`.
    #[arg(long, value_name = "FILE|URL")]
    database: Option<String>,
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
        let database = config::parse_database_flag(&url)?;
        config.database.flag("--database", Some(database));
    }
    if let Some(url) = args.advertise {
        let url = config::parse_advertise_flag(&url)?;
        config.advertise.flag("--advertise", Some(url));
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
            if let Some(url) = args.database {
                let database = config::parse_database_flag(&url)?;
                config.database.flag("--database", Some(database));
            }
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

    let db = Db::open(&config).await?;
    ensure_admin_token(db.store().as_ref(), data).await?;
    let grace = config.grace.value;
    let engine_config = EngineConfig {
        data_dir: data.clone(),
        lease: config.lease.value,
        heartbeat: config.heartbeat.value,
        kill_grace: grace,
        log_cap: config.log_cap.value,
        local_slots: config.local_agent.value.then_some(config.slots.value),
        base_env: std::env::vars().collect(),
        docker: local_docker(&config).await,
        fence: None,
    };
    let advertise = config
        .advertise
        .value
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let (roles, roles_rx) = watch::channel(Role::Unavailable {
        reason: "the server is starting".into(),
    });
    let mut first_role = roles_rx.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(ganger_server::serve_replica(listener, roles_rx, async {
        let _ = stopped.await;
    }));
    let (stop_leading, leading_stopped) = watch::channel(false);
    let mut supervisor = tokio::spawn(
        Replica {
            db,
            engine_config,
            advertise,
            leader_lease: config.leader_lease.value,
            roles,
        }
        .run(leading_stopped),
    );
    // Tests and scripts wait for this exact line to know the port, and
    // then expect answers: it comes once the replica has taken a role
    // (with SQLite: once the engine has recovered).
    // A signal meanwhile waits, and stops the server gracefully below.
    let _ = first_role.changed().await;
    eprintln!("ganger server listening on http://{address}");

    let which = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        ended = &mut server => {
            ended.context("the HTTP server stopped")?.context("the HTTP server failed")?;
            bail!("the HTTP server stopped without being asked to");
        }
        ended = &mut supervisor => {
            ended.context("the engine's supervisor failed")?;
            bail!("the engine's supervisor stopped without being asked to");
        }
    };
    eprintln!(
        "ganger server: {which}: shutting down; waiting up to {} for running tasks (a second signal stops at once)",
        format_duration(grace)
    );
    let _ = stop.send(());
    stop_leading.send_replace(true);
    let leading = async {
        match (&mut supervisor).await {
            Ok(Some(leading)) => leading.step_down(grace).await,
            Ok(None) => {}
            Err(e) => eprintln!("ganger server: the engine's supervisor failed: {e}"),
        }
    };

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
        _ = async { tokio::join!(leading, drain) } => {
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

/// The database a server runs on.
enum Db {
    /// One server; it always leads.
    Sqlite(Arc<SqliteStore>),
    /// Any number of replicas; the one holding the leader lease leads.
    Postgres(Arc<PgStore>),
}

/// Connections a replica's pool holds at most.
const PG_POOL: u32 = 16;

impl Db {
    async fn open(config: &ServerConfig) -> Result<Db> {
        match config.database() {
            Database::Sqlite(path) => {
                let store = SqliteStore::open(&path).await.with_context(|| {
                    format!(
                        "cannot open the database {} (from {})",
                        path.display(),
                        config.database.source
                    )
                })?;
                Ok(Db::Sqlite(Arc::new(store)))
            }
            Database::Postgres(url) => {
                let store = PgStore::connect(&url, PG_POOL).await.with_context(|| {
                    format!("cannot open the database (from {})", config.database.source)
                })?;
                Ok(Db::Postgres(Arc::new(store)))
            }
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Db::Sqlite(s) => Arc::clone(s) as Arc<dyn Store>,
            Db::Postgres(s) => Arc::clone(s) as Arc<dyn Store>,
        }
    }
}

/// Decides this server's role and keeps its engine: the leader runs one
/// engine per term (a term ends when the lease is lost or the engine
/// stops by itself, e.g. while the database is unreachable), the others
/// forward to it.
struct Replica {
    db: Db,
    engine_config: EngineConfig,
    /// Where other replicas forward requests while this one leads.
    advertise: String,
    leader_lease: Duration,
    roles: watch::Sender<Role>,
}

/// The engine of the term this replica leads, handed back at shutdown.
struct Leading {
    engine: Engine,
    /// `None` with SQLite, where there is no lease to give up.
    resign: Option<(Arc<PgStore>, String)>,
}

impl Leading {
    /// Drains the engine (waiting up to `grace` for in-process tasks) and
    /// gives up the lease, so another replica takes over at once.
    async fn step_down(self, grace: Duration) {
        self.engine.shutdown(grace).await;
        if let Some((pg, holder)) = self.resign
            && let Err(e) = pg.resign(LEADER_NAME, &holder).await
        {
            eprintln!(
                "ganger server: cannot give up the leader lease ({e}); another replica takes over when it runs out"
            );
        }
    }
}

/// How long a replica waits before asking the database again after it
/// failed.
const RETRY: Duration = Duration::from_secs(1);

impl Replica {
    /// Leads or follows until `stop`; returns the engine of the term
    /// running then.
    async fn run(self, mut stop: watch::Receiver<bool>) -> Option<Leading> {
        let holder = format!(
            "{} pid {} started {}",
            self.advertise,
            std::process::id(),
            jiff::Timestamp::now()
        );
        let mut said = String::new();
        loop {
            let (role, wait) = match &self.db {
                Db::Sqlite(_) => match self.lead(None).await {
                    Ok(leading) => match self.hold(leading, &mut stop, None).await {
                        Some(leading) => return Some(leading),
                        None => continue,
                    },
                    Err(reason) => (Role::Unavailable { reason }, RETRY),
                },
                Db::Postgres(pg) => {
                    match pg
                        .try_lead_named(LEADER_NAME, &holder, &self.advertise, self.leader_lease)
                        .await
                    {
                        Ok(Some(token)) => {
                            let fence = Fence {
                                name: LEADER_NAME.to_owned(),
                                token,
                            };
                            match self.lead(Some(fence)).await {
                                Ok(mut leading) => {
                                    leading.resign = Some((Arc::clone(pg), holder.clone()));
                                    eprintln!(
                                        "ganger server: this replica leads (lease token {token}); others forward to {}",
                                        self.advertise
                                    );
                                    said.clear();
                                    match self.hold(leading, &mut stop, Some((pg, &holder, token))).await {
                                        Some(leading) => return Some(leading),
                                        None => continue,
                                    }
                                }
                                Err(reason) => {
                                    // Let another replica try rather than
                                    // hold a lease with no engine behind it.
                                    let _ = pg.resign(LEADER_NAME, &holder).await;
                                    (Role::Unavailable { reason }, RETRY)
                                }
                            }
                        }
                        Ok(None) => match pg.leader(LEADER_NAME).await {
                            Ok(Some(leader)) if !leader.address.is_empty() => (
                                Role::Follower {
                                    leader: leader.address,
                                },
                                self.leader_lease / 4,
                            ),
                            Ok(_) => (
                                Role::Unavailable {
                                    reason: "no replica leads yet; one takes over when the last leader's lease runs out".into(),
                                },
                                self.leader_lease / 4,
                            ),
                            Err(e) => (Role::Unavailable { reason: unreachable(&e) }, RETRY),
                        },
                        Err(e) => (Role::Unavailable { reason: unreachable(&e) }, RETRY),
                    }
                }
            };
            let text = describe(&role);
            if text != said {
                eprintln!("ganger server: {text}");
                said = text;
            }
            self.roles.send_replace(role);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Opens an engine (recovering from the store) and makes it answer.
    async fn lead(&self, fence: Option<Fence>) -> Result<Leading, String> {
        let config = EngineConfig {
            fence,
            ..self.engine_config.clone()
        };
        match Engine::open(self.db.store(), config).await {
            Ok(engine) => {
                self.roles.send_replace(Role::Leader(engine.clone()));
                Ok(Leading {
                    engine,
                    resign: None,
                })
            }
            Err(e) => {
                eprintln!("ganger server: cannot start the engine: {e}");
                Err(format!("the engine cannot start: {e}"))
            }
        }
    }

    /// Keeps leading: renews the lease (with PostgreSQL) until it is lost,
    /// the engine stops by itself, or `stop`. Returns the term at `stop`;
    /// `None` when the term ended, its engine stopped and its tasks killed.
    async fn hold(
        &self,
        leading: Leading,
        stop: &mut watch::Receiver<bool>,
        lease: Option<(&Arc<PgStore>, &str, u64)>,
    ) -> Option<Leading> {
        let ttl = self.leader_lease;
        let mut renewed = tokio::time::Instant::now();
        let why = loop {
            tokio::select! {
                _ = tokio::time::sleep(ttl / 4), if lease.is_some() => {}
                _ = leading.engine.ended() => break "its engine stopped (the server log above says why)".to_owned(),
                _ = stop.wait_for(|s| *s) => return Some(leading),
            }
            let Some((pg, holder, token)) = lease else {
                continue;
            };
            let asked = tokio::time::Instant::now();
            match pg
                .try_lead_named(LEADER_NAME, holder, &self.advertise, ttl)
                .await
            {
                Ok(Some(t)) if t == token => renewed = asked,
                Ok(_) => break "another replica took the leader lease".to_owned(),
                // The lease still holds until `ttl` after the last renewal
                // was asked; past that, another replica may lead.
                Err(e) if asked.duration_since(renewed) + ttl / 4 >= ttl => {
                    break format!("its leader lease ran out: {}", unreachable(&e));
                }
                Err(_) => {}
            }
        };
        eprintln!("ganger server: this replica stops leading: {why}");
        self.roles.send_replace(Role::Unavailable {
            reason: format!("this replica stopped leading ({why}); retry in a moment"),
        });
        // In-process tasks are killed now: they run again, interrupted,
        // under whichever replica leads next.
        leading.engine.shutdown(Duration::ZERO).await;
        None
    }
}

fn unreachable(e: &ganger_store::StoreError) -> String {
    format!("the database does not answer: {e}")
}

fn describe(role: &Role) -> String {
    match role {
        Role::Leader(_) => "this replica leads".into(),
        Role::Follower { leader } => format!("following the leader at {leader}"),
        Role::Unavailable { reason } => format!("answering 503 for now: {reason}"),
    }
}

/// On first start, makes the admin token and writes it, readable by this
/// user only, where clients on this machine find it. A token file whose
/// token the database does not know (the database was replaced) is
/// registered again rather than left useless.
async fn ensure_admin_token(store: &dyn Store, data: &Path) -> Result<()> {
    let path = data.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let existing = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the admin token {}", path.display()))?;
        let secret = existing.trim();
        if !secret.is_empty() {
            warn_if_shared(&path);
            if store.token(&token::hash(secret)).await?.is_none() {
                put_token(store, secret, TokenRole::Admin, "admin").await?;
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
    put_token(store, &secret, TokenRole::Admin, "admin").await?;
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

async fn put_token(store: &dyn Store, secret: &str, role: TokenRole, name: &str) -> Result<()> {
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

async fn create_token(config: &ServerConfig, role: TokenRole, name: Option<String>) -> Result<u8> {
    // Opening would create an empty database: in the wrong directory that
    // makes a token no server knows.
    if let Database::Sqlite(path) = config.database()
        && !path.exists()
    {
        bail!(
            "no server database at {} (data directory from {}); run this where `ganger server` keeps its data, or pass --data DIR (or --database for PostgreSQL)",
            path.display(),
            config.data.source
        );
    }
    let store = Db::open(config).await?.store();
    let name = name.unwrap_or_else(|| {
        format!(
            "{role}-{}",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        )
    });
    let secret = token::generate()?;
    put_token(store.as_ref(), &secret, role, &name).await?;
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

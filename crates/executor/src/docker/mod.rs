//! The `docker` executor: one task attempt in a container, through the
//! Docker Engine API (over its unix socket).
//!
//! [`DockerEngine::run`] takes a [`ContainerSpec`] and returns the same
//! [`Outcome`] as a process: the exit code, the `$GANGER_OUTPUT` outputs and
//! warnings. Output is attached to (no TTY, stdout and stderr apart) and
//! goes through the same line splitting, capped log file and [`LogSink`] as
//! a process's. The task's workspace is bind-mounted at
//! [`WORKSPACE_MOUNT`], its output file at [`OUTPUT_MOUNT`].
//!
//! Invariants the rest of ganger relies on:
//!
//! - **No container, sidecar or network survives `run`.** Everything is
//!   registered by name before the request that creates it and removed
//!   (forced) when `run` ends, on every path: success, failure to start, a
//!   kill, a lost engine. Containers are not created with auto-remove,
//!   which races with reading the exit code; they are removed after it was
//!   read. A `run` future dropped half-way removes them from a background
//!   task. What an agent killed with `kill -9` leaves behind carries its
//!   label and goes at its next start: [`DockerEngine::remove_orphans`].
//! - **Everything is labelled.** Every container and network of an attempt
//!   carries `ganger.agent`, `ganger.run`, `ganger.task` and
//!   `ganger.attempt` (from [`Owner`]); containers also `ganger.role`
//!   (`task` or `service`) and sidecars `ganger.service`. Names are
//!   `ganger-<run>-<task>-<attempt>-<random>` (sidecars add
//!   `-svc-<name>`), unique even for two runs of the same attempt.
//! - **Sidecars are private to their attempt.** A task with services gets
//!   its own bridge network, on which each sidecar is reachable by its
//!   name (a network alias): two attempts that both declare `db` never
//!   see each other's. The task container also joins the shared network
//!   ([`ContainerSpec::network`]).
//! - **A task that cannot start fails before anything is created where
//!   possible** (invalid volumes, env, names: [`FailedToStart`] with every
//!   problem listed), and otherwise with a message that says what failed,
//!   where, and what to do (a missing image under `pull: never`, a failed
//!   pull, an unknown user...).
//! - **Kills reach the container.** A graceful kill sends SIGTERM, then
//!   SIGKILL after the grace; an immediate one SIGKILL. With
//!   [`ContainerSpec::init`] a tiny init is PID 1 and passes SIGTERM on to
//!   the script (a shell as PID 1 would ignore it). A kill while the image
//!   is pulled or the container prepared ends the attempt at once.
//! - **ganger never mounts the Docker socket** into a container: volumes
//!   are exactly what the user wrote (pitfalls §3.9).
//!
//! [`FailedToStart`]: crate::Termination::FailedToStart

mod cleanup;
mod config;
mod error;
mod image;
mod plan;
mod run;
mod spec;
mod supervise;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use tokio::sync::watch;

use error::DEFAULT_SOCKET;
pub use error::DockerError;
pub use spec::{
    ContainerSpec, OUTPUT_MOUNT, Owner, PullPolicy, Resources, ServiceSpec, WORKSPACE_MOUNT,
};

use crate::types::{KillMode, LogSink, Outcome};

/// How long [`DockerEngine::connect`] waits for the engine to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Label of the networks [`DockerEngine::ensure_network`] creates.
const LABEL_SHARED_NETWORK: &str = "ganger.network";

/// A connection to one Docker engine. Cheap to clone; every attempt of an
/// agent shares it.
#[derive(Clone, Debug)]
pub struct DockerEngine {
    docker: Docker,
    socket: String,
}

impl DockerEngine {
    /// Connects to the engine named by `DOCKER_HOST` (a `unix://` socket),
    /// else to `/var/run/docker.sock`, and checks within a few seconds that
    /// it answers (and which API version it speaks).
    pub async fn connect() -> Result<Self, DockerError> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => Self::connect_to(&host, " (from DOCKER_HOST)").await,
            _ => Self::connect_to(&format!("unix://{DEFAULT_SOCKET}"), "").await,
        }
    }

    /// Connects to `host`, which must be `unix:///path/to/socket`.
    pub async fn connect_with_host(host: &str) -> Result<Self, DockerError> {
        Self::connect_to(host, "").await
    }

    async fn connect_to(host: &str, origin: &'static str) -> Result<Self, DockerError> {
        let Some(socket) = host.strip_prefix("unix://") else {
            return Err(DockerError::UnsupportedHost {
                value: host.to_owned(),
            });
        };
        let socket = socket.to_owned();
        let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|error| match error {
                bollard::errors::Error::SocketNotFoundError(_) => DockerError::NoSocket {
                    socket: socket.clone(),
                    origin,
                },
                source => DockerError::Unreachable {
                    socket: socket.clone(),
                    source,
                },
            })?;
        // Speak the engine's API version when it is older than bollard's
        // (Docker 20.10 speaks 1.41): a newer one is refused outright.
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(source)) => return Err(DockerError::Unreachable { socket, source }),
            Err(_) => {
                return Err(DockerError::Timeout {
                    socket,
                    after: CONNECT_TIMEOUT,
                });
            }
        };
        Ok(DockerEngine { docker, socket })
    }

    /// The socket this engine is reached through.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Creates the bridge network `name` unless it exists. Docker 20.10 does
    /// not refuse a second network of the same name, and then refuses to use
    /// either ("ambiguous"), so when agents race to create it, each then
    /// keeps the one with the smallest id and removes the others.
    pub async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        // One at a time within this process; `dedupe` settles races with
        // other processes.
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _creating = CREATING.lock().await;
        match self.docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 400, ..
            }) => return self.dedupe_network(name).await,
            Err(source) => return Err(self.api(format!("inspect network `{name}`"), source)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            // Not an agent's: every agent of the host shares it, so
            // `remove_orphans` leaves it alone.
            labels: Some(HashMap::from([(
                LABEL_SHARED_NETWORK.to_owned(),
                "shared".to_owned(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => self.dedupe_network(name).await,
            Err(source) => Err(self.api(format!("create network `{name}`"), source)),
        }
    }

    /// The host's address on network `name` (its gateway): where a
    /// container on it reaches a service of the agent.
    pub async fn gateway(&self, name: &str) -> Result<Option<std::net::IpAddr>, DockerError> {
        let network = self
            .docker
            .inspect_network(name, None)
            .await
            .map_err(|source| self.api(format!("inspect network `{name}`"), source))?;
        let gateway = network
            .ipam
            .and_then(|ipam| ipam.config)
            .into_iter()
            .flatten()
            .filter_map(|config| config.gateway)
            .find_map(|g| g.parse().ok());
        Ok(gateway)
    }

    /// Keeps the network named `name` with the smallest id, removes others.
    async fn dedupe_network(&self, name: &str) -> Result<(), DockerError> {
        let filters = HashMap::from([("name", vec![name.to_owned()])]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|source| self.api(format!("list networks named `{name}`"), source))?;
        // The filter matches substrings.
        let mut ids: Vec<String> = networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect();
        ids.sort();
        for duplicate in ids.iter().skip(1) {
            // In use already (a container joined it by id): leave it, the
            // name stays ambiguous and the error says so at the next use.
            cleanup::remove_network(&self.docker, duplicate)
                .await
                .map_err(|source| {
                    self.api(
                        format!("remove duplicate network `{name}` ({duplicate})"),
                        source,
                    )
                })?;
        }
        Ok(())
    }

    /// Force-removes every container, and every per-attempt network,
    /// labelled `ganger.agent=<agent>`: what a previous life of this agent
    /// (killed with `kill -9`, or by a power cut) left behind. Returns how
    /// many containers and networks it removed. Call it at agent start,
    /// before claiming work: it would remove the agent's running tasks too.
    pub async fn remove_orphans(&self, agent: &str) -> Result<usize, DockerError> {
        let filters = HashMap::from([("label", vec![format!("{}={agent}", plan::LABEL_AGENT)])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| {
                self.api(format!("list the containers of agent `{agent}`"), source)
            })?;
        let mut removed = 0;
        for container in containers {
            let Some(id) = container.id else { continue };
            cleanup::remove_container(&self.docker, &id)
                .await
                .map_err(|source| self.api(format!("remove orphaned container {id}"), source))?;
            removed += 1;
        }
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|source| self.api(format!("list the networks of agent `{agent}`"), source))?;
        for network in networks {
            let Some(id) = network.id else { continue };
            cleanup::remove_network(&self.docker, &id)
                .await
                .map_err(|source| self.api(format!("remove orphaned network {id}"), source))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Runs one attempt to its end and removes everything it created. `kill`
    /// delivers kill requests at any time (`None` = no request yet; a
    /// dropped sender means no further requests, not a kill); `started` is
    /// called once the task container runs. A failure to set up or start
    /// is [`FailedToStart`], and so is losing track of the container (the
    /// engine stopped answering) since no exit code exists.
    pub async fn run(
        &self,
        spec: ContainerSpec,
        sink: Arc<dyn LogSink>,
        kill: watch::Receiver<Option<KillMode>>,
        started: impl FnOnce(),
    ) -> Outcome {
        run::run(&self.docker, spec, sink, kill, started).await
    }

    fn api(&self, action: String, source: bollard::errors::Error) -> DockerError {
        DockerError::Api {
            socket: self.socket.clone(),
            action,
            source,
        }
    }
}

/// The engine's own words for a failed request, without bollard's
/// "Docker responded with status code 500:" in front.
pub(crate) fn engine_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Agents run attempts on spawned tasks, so `run` must be `Send`.
#[allow(dead_code)]
fn run_is_send(engine: &DockerEngine, spec: ContainerSpec, sink: Arc<dyn LogSink>) {
    fn send<T: Send>(_: T) {}
    let (_requests, kill) = watch::channel(None);
    send(engine.run(spec, sink, kill, || {}));
}

//! `executor: docker` on this machine: the agent's connection to the Docker
//! engine, and a rendered task turned into the executor's container spec.

use std::net::IpAddr;

use ganger_core::model::{DockerSpec, PullPolicy, Resources};
use ganger_core::run::{Phase, TaskSpec};
use ganger_executor::{
    ContainerSpec, DockerEngine, DockerError, Owner, PullPolicy as Pull, Resources as Limits,
    ServiceSpec,
};

use crate::attempt::Settings;
use crate::workdir::Workdir;

/// The bridge network task containers join unless the agent is told
/// another (`[agent] docker_network`).
pub const DEFAULT_NETWORK: &str = "ganger";

/// A Docker engine this agent runs containers on.
#[derive(Clone, Debug)]
pub struct Docker {
    engine: DockerEngine,
    network: String,
    /// The host's address on `network`: where containers reach the agent's
    /// job endpoint.
    gateway: Option<IpAddr>,
    /// Every container carries it (`ganger.agent`): what a dead agent of
    /// this name left is found by it.
    owner: String,
}

impl Docker {
    /// Connects to the engine (`DOCKER_HOST`, or the standard socket),
    /// makes sure `network` exists, and removes the containers an agent of
    /// the same `owner` left when it died. Returns how many it removed.
    pub async fn connect(network: &str, owner: &str) -> Result<(Docker, usize), DockerError> {
        let engine = DockerEngine::connect().await?;
        engine.ensure_network(network).await?;
        let removed = engine.remove_orphans(owner).await?;
        let gateway = engine.gateway(network).await?;
        let docker = Docker {
            engine,
            network: network.to_owned(),
            gateway,
            owner: owner.to_owned(),
        };
        Ok((docker, removed))
    }

    pub(crate) fn engine(&self) -> &DockerEngine {
        &self.engine
    }

    /// The host's address on the agent's network, if the engine named one:
    /// an endpoint of the agent listening there is reachable from tasks'
    /// containers.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    /// The container of one attempt of a docker task. Its environment is
    /// the task's own: the agent's environment belongs to the host, not to
    /// the image.
    pub(crate) fn spec(
        &self,
        run_id: &str,
        task: &TaskSpec,
        docker: DockerSpec,
        script: Option<String>,
        workdir: &Workdir,
        settings: &Settings,
    ) -> ContainerSpec {
        ContainerSpec {
            image: docker.image,
            pull: pull(docker.pull),
            script,
            command: docker.command,
            entrypoint: docker.entrypoint,
            env: task.env.clone(),
            workdir: docker.workdir,
            workspace: workdir.workspace(&task.name),
            output_path: workdir.output(&task.name, task.attempt, task.phase),
            log_path: workdir.log(&task.name, task.attempt, task.phase),
            log_cap: settings.log_cap,
            kill_grace: settings.kill_grace,
            network: docker.network.unwrap_or_else(|| self.network.clone()),
            user: docker.user,
            volumes: docker.volumes,
            services: docker
                .services
                .into_iter()
                .map(|s| ServiceSpec {
                    name: s.name,
                    image: s.image,
                    env: s.env,
                    command: s.command,
                })
                .collect(),
            resources: task.resources.as_ref().map(limits).unwrap_or_default(),
            owner: Owner {
                agent: self.owner.clone(),
                run: run_id.to_owned(),
                task: task.name.clone(),
                attempt: match task.phase {
                    Phase::Main => task.attempt.to_string(),
                    Phase::Undo => format!("undo-{}", task.attempt),
                },
            },
            labels: Vec::new(),
            extra_hosts: Vec::new(),
            // A shell as PID 1 ignores SIGTERM: without an init, every
            // graceful stop would wait out the whole grace.
            init: true,
        }
    }
}

fn pull(policy: PullPolicy) -> Pull {
    match policy {
        PullPolicy::Always => Pull::Always,
        PullPolicy::IfMissing => Pull::IfMissing,
        PullPolicy::Never => Pull::Never,
    }
}

fn limits(r: &Resources) -> Limits {
    Limits {
        cpu: r.cpu,
        memory: r.memory,
        pids: r.pids,
    }
}

//! Everything an attempt created, removed at the end whatever happened.

use bollard::Docker;
use bollard::errors::Error;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use std::time::Duration;

use tokio::task::JoinSet;

/// The containers and network of one attempt, registered by name *before*
/// the request that creates them: a request cut short (a kill during
/// setup, a dropped future) may still have created the object, and the
/// name finds it. Dropped without [`Created::remove`], it removes them from
/// a background task.
pub(crate) struct Created {
    docker: Docker,
    containers: Vec<String>,
    network: Option<String>,
}

impl Created {
    pub(crate) fn new(docker: Docker) -> Self {
        Created {
            docker,
            containers: Vec::new(),
            network: None,
        }
    }

    pub(crate) fn container(&mut self, name: &str) {
        self.containers.push(name.to_owned());
    }

    pub(crate) fn network(&mut self, name: &str) {
        self.network = Some(name.to_owned());
    }

    /// Force-removes every container (with its anonymous volumes), then the
    /// network. Returns what could not be removed, as warnings that say how
    /// to do it by hand.
    pub(crate) async fn remove(mut self) -> Vec<String> {
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.take();
        remove_all(self.docker.clone(), containers, network).await
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.containers.is_empty() && self.network.is_none() {
            return;
        }
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.take();
        let docker = self.docker.clone();
        // Without a runtime (a runtime shutting down) there is nothing to
        // run the requests on; the agent's `remove_orphans` at its next
        // start finds them by label.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(remove_all(docker, containers, network));
        }
    }
}

async fn remove_all(
    docker: Docker,
    containers: Vec<String>,
    network: Option<String>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut removals = JoinSet::new();
    for name in containers {
        let docker = docker.clone();
        removals.spawn(async move {
            let result = remove_container(&docker, &name).await;
            (name, result)
        });
    }
    while let Some(joined) = removals.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(error))) => warnings.push(format!(
                "cannot remove container {name}: {error}; remove it with `docker rm -f {name}`"
            )),
            Err(error) => warnings.push(format!("container removal failed: {error}")),
        }
    }
    if let Some(name) = network
        && let Err(error) = remove_network(&docker, &name).await
    {
        warnings.push(format!(
            "cannot remove network {name}: {error}; remove it with `docker network rm {name}`"
        ));
    }
    warnings
}

/// Force-removes a container; one that is already gone is fine.
pub(crate) async fn remove_container(docker: &Docker, name: &str) -> Result<(), Error> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        // 404: never created or already gone; 409: a removal is already
        // under way (the engine finishes it).
        Err(Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        other => other,
    }
}

/// Removes a network; one that is already gone is fine. A container whose
/// removal another request started may still hold an endpoint for a moment
/// (403 "has active endpoints"), so that is retried for a bounded time.
pub(crate) async fn remove_network(docker: &Docker, name: &str) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + NETWORK_PATIENCE;
    let mut pause = Duration::from_millis(20);
    loop {
        match docker.remove_network(name).await {
            Err(Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(Error::DockerResponseServerError {
                status_code: 403 | 409,
                ..
            }) if tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// How long a network removal is retried while its last endpoints go.
const NETWORK_PATIENCE: Duration = Duration::from_secs(10);

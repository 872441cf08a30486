//! One attempt, start to end: check, prepare the host, pull, create the
//! network and sidecars, create and attach the task, start, supervise, and
//! remove everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::models::NetworkConnectRequest;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, StartContainerOptions,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::cleanup::Created;
use super::plan::Plan;
use super::spec::ContainerSpec;
use super::supervise::{self, Output};
use super::{config, engine_message, image};
use crate::logs::Capture;
use crate::process::DRAIN_BOUND;
use crate::types::{KillMode, LogSink, Outcome, Termination};

pub(crate) async fn run(
    docker: &Docker,
    spec: ContainerSpec,
    sink: Arc<dyn LogSink>,
    mut kill: watch::Receiver<Option<KillMode>>,
    started: impl FnOnce(),
) -> Outcome {
    let plan = match Plan::new(spec) {
        Ok(plan) => plan,
        Err(problems) => return failed(format!("invalid docker task: {problems}"), Vec::new()),
    };
    if let Err(message) = prepare_host(&plan) {
        return failed(message, Vec::new());
    }
    let mut created = Created::new(docker.clone());

    let output = match setup(docker, &plan, &mut created, &mut kill).await {
        Ok(output) => output,
        Err(stop) => {
            let warnings = created.remove().await;
            return match stop {
                Stop::Failed(message) => failed(message, warnings),
                Stop::Killed(mode) => killed_before_start(mode, warnings),
            };
        }
    };

    let capture = Capture {
        path: plan.spec.log_path.clone(),
        sink,
        cap: plan.spec.log_cap,
    };
    let (logs, stop_logs) = supervise::pump(output, capture);
    if let Err(error) = docker
        .start_container(&plan.name, None::<StartContainerOptions>)
        .await
    {
        let _ = stop_logs.send(());
        let mut warnings = created.remove().await;
        warnings.extend(logs.await.map(|r| r.warnings).unwrap_or_default());
        return failed(
            format!(
                "cannot start the container of image `{}`: {}",
                plan.spec.image,
                engine_message(&error)
            ),
            warnings,
        );
    }
    started();

    let mut warnings = Vec::new();
    let exit = supervise::wait(
        docker,
        &plan.name,
        plan.spec.kill_grace,
        &mut kill,
        &mut warnings,
    )
    .await;
    // The attach stream ends with the container; the bound only matters
    // if the engine misbehaves.
    let report = supervise::drain(logs, stop_logs, Instant::now() + DRAIN_BOUND).await;
    warnings.extend(report.warnings);
    let oom = oom_killed(docker, &plan.name).await;
    warnings.extend(services_that_died(docker, &plan).await);
    warnings.extend(created.remove().await);

    let termination = match exit.code {
        Ok(code) => termination(code, exit.killed_with, oom, &plan, &mut warnings),
        Err(message) => Termination::FailedToStart(message),
    };
    let parsed = crate::outputs::read(&plan.output_path);
    warnings.extend(parsed.warnings);
    Outcome {
        termination,
        outputs: parsed.outputs,
        warnings,
    }
}

enum Stop {
    Failed(String),
    Killed(KillMode),
}

impl From<String> for Stop {
    fn from(message: String) -> Self {
        Stop::Failed(message)
    }
}

/// Everything before the start of the task container. Each object is
/// registered in `created` before the request that makes it.
///
/// A kill interrupts a pull at once (nothing to clean up there), and the
/// other steps between requests: a request to create something is never
/// cut short, since the engine could finish it after the clean-up looked.
async fn setup(
    docker: &Docker,
    plan: &Plan,
    created: &mut Created,
    kill: &mut watch::Receiver<Option<KillMode>>,
) -> Result<Output, Stop> {
    let spec = &plan.spec;
    let mut images = vec![(spec.image.as_str(), "image".to_owned())];
    for service in &spec.services {
        let what = format!("service `{}`: image", service.name);
        images.push((service.image.as_str(), what));
    }
    for (image, what) in images {
        tokio::select! {
            result = image::ensure(docker, image, spec.pull, &what) => result?,
            mode = requested(kill) => return Err(Stop::Killed(mode)),
        }
    }
    let check = |kill: &mut watch::Receiver<Option<KillMode>>| match *kill.borrow_and_update() {
        Some(mode) => Err(Stop::Killed(mode)),
        None => Ok(()),
    };

    if let Some(network) = &plan.attempt_network {
        check(kill)?;
        created.network(network);
        docker
            .create_network(config::attempt_network(plan, network))
            .await
            .map_err(|error| {
                format!(
                    "cannot create the network {network} for the task's services: {}",
                    engine_message(&error)
                )
            })?;
        for (index, service) in spec.services.iter().enumerate() {
            let name = plan.service_name(index);
            let Some(body) = config::service(plan, index, network) else {
                continue;
            };
            check(kill)?;
            created.container(&name);
            let what = format!("service `{}` (image `{}`)", service.name, service.image);
            create(docker, &name, body, &what).await?;
            docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(|error| format!("cannot start {what}: {}", engine_message(&error)))?;
        }
    }

    check(kill)?;
    created.container(&plan.name);
    let what = format!("the task container (image `{}`)", spec.image);
    create(docker, &plan.name, config::task(plan), &what).await?;
    if plan.attempt_network.is_some() && !spec.network.is_empty() {
        let request = NetworkConnectRequest {
            container: plan.name.clone(),
            endpoint_config: None,
        };
        docker
            .connect_network(&spec.network, request)
            .await
            .map_err(|error| {
                format!(
                    "cannot connect the task container to network `{}`: {}",
                    spec.network,
                    engine_message(&error)
                )
            })?;
    }
    // Attached before the start, so not a byte of output is missed.
    let options = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .logs(false)
        .build();
    let attached = docker
        .attach_container(&plan.name, Some(options))
        .await
        .map_err(|error| {
            format!(
                "cannot attach to {what} to read its output: {}",
                engine_message(&error)
            )
        })?;
    Ok(attached.output)
}

async fn create(
    docker: &Docker,
    name: &str,
    body: bollard::models::ContainerCreateBody,
    what: &str,
) -> Result<(), String> {
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map(drop)
        .map_err(|error| format!("cannot create {what}: {}", engine_message(&error)))
}

/// The host side of the mounts: the workspace exists, the output file
/// exists and is empty (a bind mount needs a file to mount), no stale log.
fn prepare_host(plan: &Plan) -> Result<(), String> {
    std::fs::create_dir_all(&plan.workspace).map_err(|error| {
        format!(
            "cannot create workspace {}: {error}",
            plan.workspace.display()
        )
    })?;
    let output = &plan.output_path;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent).map_err(|error| {
            format!(
                "cannot create the directory of output file {}: {error}",
                output.display()
            )
        })?;
    }
    std::fs::File::create(output)
        .map_err(|error| format!("cannot create output file {}: {error}", output.display()))?;
    if plan.spec.user.is_some() {
        // Another user inside the container must be able to write its
        // outputs; the file sits in the attempt's own directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o666)).map_err(
            |error| {
                format!(
                    "cannot make output file {} writable for user {:?}: {error}",
                    output.display(),
                    plan.spec.user
                )
            },
        )?;
    }
    match std::fs::remove_file(&plan.spec.log_path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(format!(
            "cannot remove stale log file {}: {error}",
            plan.spec.log_path.display()
        )),
        _ => Ok(()),
    }
}

/// Resolves when a kill is requested; never when the sender is dropped
/// (that means no further requests, not a kill).
async fn requested(kill: &mut watch::Receiver<Option<KillMode>>) -> KillMode {
    loop {
        let mode = *kill.borrow_and_update();
        if let Some(mode) = mode {
            return mode;
        }
        if kill.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Docker reports a process killed by signal N as exit code 128+N. After a
/// kill of ours, or the OOM killer's, that is what it was.
fn termination(
    code: i64,
    killed_with: Option<i32>,
    oom: bool,
    plan: &Plan,
    warnings: &mut Vec<String>,
) -> Termination {
    let code = i32::try_from(code).unwrap_or(i32::MAX);
    let signal = (129..=128 + 64).contains(&code).then_some(code - 128);
    if oom {
        let limit = plan
            .spec
            .resources
            .memory
            .map_or_else(|| "the host's memory".to_owned(), |m| format!("{m} bytes"));
        warnings.push(format!(
            "the container was killed for running out of memory (limit: {limit}); raise \
             `resources.memory` or make the task use less"
        ));
    }
    match signal {
        Some(signal) if killed_with.is_some() || (oom && signal == 9) => {
            Termination::Signaled(signal)
        }
        _ => Termination::Exited(code),
    }
}

async fn oom_killed(docker: &Docker, name: &str) -> bool {
    docker
        .inspect_container(name, None)
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false)
}

/// A sidecar that stopped before the task ended is usually why the task
/// failed: say so.
async fn services_that_died(docker: &Docker, plan: &Plan) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, service) in plan.spec.services.iter().enumerate() {
        let name = plan.service_name(index);
        let Ok(inspected) = docker.inspect_container(&name, None).await else {
            continue;
        };
        let Some(state) = inspected.state else {
            continue;
        };
        if state.running == Some(false) {
            warnings.push(format!(
                "service `{}` had stopped before the task ended (exit code {}{})",
                service.name,
                state.exit_code.unwrap_or(-1),
                state
                    .error
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    warnings
}

fn failed(message: String, warnings: Vec<String>) -> Outcome {
    Outcome {
        termination: Termination::FailedToStart(message),
        outputs: BTreeMap::new(),
        warnings,
    }
}

fn killed_before_start(mode: KillMode, mut warnings: Vec<String>) -> Outcome {
    warnings.insert(
        0,
        "killed while its container was being prepared: nothing ran".to_owned(),
    );
    let signal = match mode {
        KillMode::Graceful => 15,
        KillMode::Immediate => 9,
    };
    Outcome {
        termination: Termination::Signaled(signal),
        outputs: BTreeMap::new(),
        warnings,
    }
}

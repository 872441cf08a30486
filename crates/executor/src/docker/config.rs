//! The engine-side configuration of the attempt's containers and network.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig,
};

use super::plan::{LABEL_ROLE, LABEL_SERVICE, Plan};
use super::spec::{OUTPUT_MOUNT, WORKSPACE_MOUNT};

/// The task container. It is created on the attempt's network when there is
/// one (and joins `spec.network` before it starts), else on `spec.network`.
pub(crate) fn task(plan: &Plan) -> ContainerCreateBody {
    let spec = &plan.spec;
    let mut env: Vec<String> = spec
        .env
        .iter()
        .filter(|(name, _)| name != "GANGER_OUTPUT" && name != "GANGER_WORKSPACE")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    env.push(format!("GANGER_OUTPUT={OUTPUT_MOUNT}"));
    env.push(format!("GANGER_WORKSPACE={WORKSPACE_MOUNT}"));
    let (entrypoint, cmd) = match (&spec.script, &spec.command) {
        // `sh -c SCRIPT`, behind the given entrypoint if there is one (a
        // wrapper such as `tini --` or `with-env`).
        (Some(script), _) => match &spec.entrypoint {
            Some(entrypoint) => (
                Some(entrypoint.clone()),
                Some(vec!["sh".to_owned(), "-c".to_owned(), script.clone()]),
            ),
            None => (
                Some(vec!["sh".to_owned(), "-c".to_owned()]),
                Some(vec![script.clone()]),
            ),
        },
        (None, command) => (spec.entrypoint.clone(), command.clone()),
    };
    let first_network = plan
        .attempt_network
        .clone()
        .or_else(|| (!spec.network.is_empty()).then(|| spec.network.clone()));
    let bind = |source: &std::path::Path, target: &str| Mount {
        source: Some(source.to_string_lossy().into_owned()),
        target: Some(target.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        ..Default::default()
    };
    let resources = &spec.resources;
    let host_config = HostConfig {
        // Mounts rather than `host:container` strings: a host path may hold
        // a `:`. The user's volumes go as written, as `docker run -v` takes
        // them.
        mounts: Some(vec![
            bind(&plan.workspace, WORKSPACE_MOUNT),
            bind(&plan.output_path, OUTPUT_MOUNT),
        ]),
        binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
        network_mode: first_network.clone(),
        nano_cpus: resources.cpu.map(|cpu| (cpu * 1e9).round() as i64),
        memory: resources.memory.and_then(|bytes| i64::try_from(bytes).ok()),
        pids_limit: resources.pids.and_then(|pids| i64::try_from(pids).ok()),
        extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
        // The output is read through the attach stream into the capped log:
        // a second, uncapped copy in the engine's log files could fill its
        // disk.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_owned()),
            config: None,
        }),
        init: spec.init.then_some(true),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: spec.user.clone(),
        env: Some(env),
        entrypoint,
        cmd,
        working_dir: Some(
            spec.workdir
                .clone()
                .unwrap_or_else(|| WORKSPACE_MOUNT.to_owned()),
        ),
        labels: Some(plan.labels_with(&[(LABEL_ROLE, "task")])),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(host_config),
        networking_config: first_network.map(|network| endpoint(network, None)),
        ..Default::default()
    }
}

/// Sidecar `index`, on the attempt's network under its name.
pub(crate) fn service(plan: &Plan, index: usize, network: &str) -> Option<ContainerCreateBody> {
    let service = plan.spec.services.get(index)?;
    let host_config = HostConfig {
        network_mode: Some(network.to_owned()),
        // Kept for `docker logs` while the attempt runs, bounded: nobody
        // reads it through ganger.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), "1m".to_owned()),
                ("max-file".to_owned(), "1".to_owned()),
            ])),
        }),
        ..Default::default()
    };
    Some(ContainerCreateBody {
        image: Some(service.image.clone()),
        env: Some(
            service
                .env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
        ),
        cmd: service.command.clone(),
        labels: Some(plan.labels_with(&[(LABEL_ROLE, "service"), (LABEL_SERVICE, &service.name)])),
        host_config: Some(host_config),
        networking_config: Some(endpoint(network.to_owned(), Some(service.name.clone()))),
        ..Default::default()
    })
}

/// The attempt's own bridge network.
pub(crate) fn attempt_network(plan: &Plan, name: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(plan.labels.clone()),
        ..Default::default()
    }
}

pub(crate) fn endpoint(network: String, alias: Option<String>) -> NetworkingConfig {
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network,
            EndpointSettings {
                aliases: alias.map(|alias| vec![alias]),
                ..Default::default()
            },
        )])),
    }
}

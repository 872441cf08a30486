//! Checks a [`ContainerSpec`] before anything is created, and derives the
//! names and labels of everything the attempt will create.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::spec::{ContainerSpec, OUTPUT_MOUNT, WORKSPACE_MOUNT};

/// Label keys set on every container and network of an attempt.
pub(crate) const LABEL_AGENT: &str = "ganger.agent";
pub(crate) const LABEL_RUN: &str = "ganger.run";
pub(crate) const LABEL_TASK: &str = "ganger.task";
pub(crate) const LABEL_ATTEMPT: &str = "ganger.attempt";
/// `task` or `service`, on containers.
pub(crate) const LABEL_ROLE: &str = "ganger.role";
/// A sidecar's name, on its container.
pub(crate) const LABEL_SERVICE: &str = "ganger.service";

/// Longest piece of a run or task id kept in a container name: names stay
/// readable in `docker ps` and far below Docker's limits.
const NAME_PART_MAX: usize = 24;

/// A spec that passed every check, with what it implies.
pub(crate) struct Plan {
    pub(crate) spec: ContainerSpec,
    /// Absolute host paths.
    pub(crate) workspace: PathBuf,
    pub(crate) output_path: PathBuf,
    /// `ganger-<run>-<task>-<attempt>-<random>`: the task container's name
    /// and the prefix of the attempt's other resources.
    pub(crate) name: String,
    /// The attempt's own network, when it has services.
    pub(crate) attempt_network: Option<String>,
    pub(crate) labels: HashMap<String, String>,
}

impl Plan {
    /// Checks everything that can be checked without the engine and
    /// returns every problem found, one per line.
    pub(crate) fn new(spec: ContainerSpec) -> Result<Plan, String> {
        let mut problems = Vec::new();
        check(&spec, &mut problems);
        let workspace = absolute(&spec.workspace, "workspace", &mut problems);
        let output_path = absolute(&spec.output_path, "output file", &mut problems);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let name = format!(
            "ganger-{}-{}-{}-{}",
            name_part(&spec.owner.run),
            name_part(&spec.owner.task),
            name_part(&spec.owner.attempt),
            random_suffix()
        );
        let attempt_network = (!spec.services.is_empty()).then(|| format!("{name}-net"));
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        for (key, value) in [
            (LABEL_AGENT, &spec.owner.agent),
            (LABEL_RUN, &spec.owner.run),
            (LABEL_TASK, &spec.owner.task),
            (LABEL_ATTEMPT, &spec.owner.attempt),
        ] {
            labels.insert(key.to_owned(), value.clone());
        }
        Ok(Plan {
            workspace: workspace.unwrap_or_default(),
            output_path: output_path.unwrap_or_default(),
            spec,
            name,
            attempt_network,
            labels,
        })
    }

    /// Name of the container of service `index`.
    pub(crate) fn service_name(&self, index: usize) -> String {
        let service = self
            .spec
            .services
            .get(index)
            .map_or("", |s| s.name.as_str());
        format!("{}-svc-{}", self.name, name_part(service))
    }

    /// The attempt's labels plus those of one container.
    pub(crate) fn labels_with(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut labels = self.labels.clone();
        for (key, value) in extra {
            labels.insert((*key).to_owned(), (*value).to_owned());
        }
        labels
    }
}

fn check(spec: &ContainerSpec, problems: &mut Vec<String>) {
    check_image("image", &spec.image, problems);
    if spec.script.is_some() && spec.command.is_some() {
        problems
            .push("a task gives either `run` (a script) or `command` (an argv), not both".into());
    }
    if let Some(script) = &spec.script
        && script.contains('\0')
    {
        problems.push("the script contains a NUL byte".into());
    }
    check_env("env", &spec.env, problems);
    if spec.owner.agent.is_empty() {
        problems.push(
            "the owner's agent id is empty: containers must carry `ganger.agent` so a restarted \
             agent can remove its leftovers"
                .into(),
        );
    }
    if let Some(workdir) = &spec.workdir
        && !workdir.starts_with('/')
    {
        problems.push(format!(
            "workdir {workdir:?} is not an absolute path inside the container; write e.g. \
             {WORKSPACE_MOUNT}/sub"
        ));
    }
    for volume in &spec.volumes {
        if let Err(problem) = check_volume(volume) {
            problems.push(format!("volume {volume:?}: {problem}"));
        }
    }
    for (key, _) in &spec.labels {
        if key.is_empty() || key.starts_with("ganger.") {
            problems.push(format!(
                "label {key:?}: empty keys and keys starting with `ganger.` are reserved"
            ));
        }
    }
    for host in &spec.extra_hosts {
        match host.split_once(':') {
            Some((name, address)) if !name.is_empty() && !address.is_empty() => {}
            _ => problems.push(format!(
                "extra host {host:?} is not NAME:ADDRESS (e.g. \
                 host.docker.internal:host-gateway)"
            )),
        }
    }
    check_resources(spec, problems);
    let mut seen = HashSet::new();
    for service in &spec.services {
        let what = format!("service `{}`", service.name);
        if !is_name(&service.name) {
            problems.push(format!(
                "{what}: a service name is a host name made of letters, digits, `-`, `_` and \
                 `.`, starting with a letter or digit"
            ));
        } else if !seen.insert(service.name.as_str()) {
            problems.push(format!("{what} is declared twice"));
        }
        check_image(&format!("{what}: image"), &service.image, problems);
        check_env(&format!("{what}: env"), &service.env, problems);
    }
}

fn check_image(what: &str, image: &str, problems: &mut Vec<String>) {
    if image.trim().is_empty() {
        problems.push(format!("{what} is empty; name one, e.g. `alpine:3.20`"));
    } else if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.push(format!("{what} {image:?} contains whitespace"));
    }
}

fn check_env(what: &str, env: &[(String, String)], problems: &mut Vec<String>) {
    if let Err(error) = crate::process::validate_env(env) {
        problems.push(format!("{what}: {error}"));
    }
}

fn check_resources(spec: &ContainerSpec, problems: &mut Vec<String>) {
    let resources = &spec.resources;
    if let Some(cpu) = resources.cpu
        && !(cpu.is_finite() && cpu > 0.0 && cpu <= 1e6)
    {
        problems.push(format!(
            "resources: cpu {cpu} is not a positive number of CPUs"
        ));
    }
    if let Some(memory) = resources.memory
        && !(6 * 1024 * 1024..=i64::MAX as u64).contains(&memory)
    {
        problems.push(format!(
            "resources: memory of {memory} bytes is below Docker's minimum of 6 MiB"
        ));
    }
    if let Some(pids) = resources.pids
        && !(1..=i64::MAX as u64).contains(&pids)
    {
        problems.push(format!("resources: pids {pids} must be at least 1"));
    }
}

/// `SOURCE:TARGET[:ro|rw]`, SOURCE an absolute host path or a named volume.
pub(crate) fn check_volume(volume: &str) -> Result<(), String> {
    let parts: Vec<&str> = volume.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [source, target] => (*source, *target, None),
        [source, target, mode] => (*source, *target, Some(*mode)),
        _ => {
            return Err(
                "expected SOURCE:TARGET or SOURCE:TARGET:ro|rw (e.g. /srv/cache:/cache:ro)".into(),
            );
        }
    };
    if source.is_empty() {
        return Err("the source (before the first `:`) is empty".into());
    }
    if !source.starts_with('/') && !is_name(source) {
        return Err(format!(
            "the source {source:?} is neither an absolute host path nor a volume name \
             (relative paths are not allowed: write /full/path/{source})"
        ));
    }
    if !target.starts_with('/') {
        return Err(format!(
            "the target {target:?} is not an absolute path inside the container"
        ));
    }
    let target_trimmed = target.trim_end_matches('/');
    if target_trimmed.is_empty() {
        return Err("the target cannot be `/`".into());
    }
    if target_trimmed == WORKSPACE_MOUNT || target_trimmed == OUTPUT_MOUNT {
        return Err(format!(
            "the target {target} is where ganger mounts the task's {}",
            if target_trimmed == WORKSPACE_MOUNT {
                "workspace"
            } else {
                "output file"
            }
        ));
    }
    match mode {
        None | Some("ro" | "rw") => Ok(()),
        Some(other) => Err(format!("the mode {other:?} is neither `ro` nor `rw`")),
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]*`: Docker's rule for volume and container
/// names, and a valid host name for a service.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn absolute(path: &std::path::Path, what: &str, problems: &mut Vec<String>) -> Option<PathBuf> {
    match std::path::absolute(path) {
        Ok(path) => Some(path),
        Err(error) => {
            problems.push(format!("{what} {}: {error}", path.display()));
            None
        }
    }
}

/// A piece of an id fit for a container name: characters Docker refuses
/// become `-`, and long ids are cut.
fn name_part(id: &str) -> String {
    let part: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(NAME_PART_MAX)
        .collect();
    if part.is_empty() {
        "x".to_owned()
    } else {
        part
    }
}

/// Eight hex digits, so two attempts with the same ids (a retried fencing
/// token, a test run twice) never share a name.
fn random_suffix() -> String {
    let random = getrandom::u64().unwrap_or_else(|_| {
        // No entropy source: time and pid still differ between attempts.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    format!("{:08x}", random as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        for good in [
            "/srv:/data",
            "/srv:/data:ro",
            "cache:/cache:rw",
            "/a/b:/c/d/",
        ] {
            assert_eq!(check_volume(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("relative/path:/x", "relative paths"),
            ("::", "source"),
            ("/a", "expected SOURCE:TARGET"),
            ("/a:/b:rx", "mode"),
            ("/a:b", "not an absolute path"),
            ("/a:/", "cannot be `/`"),
            ("/a:/workspace", "workspace"),
            ("/a:/b:ro:x", "expected"),
        ] {
            let error = check_volume(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn name_parts_are_docker_names() {
        assert_eq!(name_part("run/1 é"), "run-1--");
        assert_eq!(name_part(""), "x");
        assert_eq!(name_part(&"a".repeat(100)).len(), NAME_PART_MAX);
    }
}

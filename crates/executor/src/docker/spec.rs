//! What the caller asks for: one task container and its sidecars.

use std::path::PathBuf;
use std::time::Duration;

/// Where the task's workspace is mounted in the container.
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// Where the task's output file is mounted; `$GANGER_OUTPUT` names it.
pub const OUTPUT_MOUNT: &str = "/ganger/output";

/// Everything needed to run one attempt in a container. The caller renders
/// the script and composes the environment; the executor adds nothing but
/// `GANGER_OUTPUT` and `GANGER_WORKSPACE` (with their in-container paths).
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// Image reference, e.g. `alpine:3.20` (`:latest` when no tag is given).
    pub image: String,
    pub pull: PullPolicy,
    /// A script run as `sh -c SCRIPT` (the entrypoint is `sh -c` unless
    /// [`ContainerSpec::entrypoint`] is given). Exclusive with `command`.
    pub script: Option<String>,
    /// The container's argv (after the image's or the given entrypoint).
    /// Neither `script` nor `command`: the image's own command runs.
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// The complete environment inside the container: the image's own
    /// `ENV` still applies beneath it, the host's does not.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container; default [`WORKSPACE_MOUNT`].
    pub workdir: Option<String>,
    /// Host directory bind-mounted at [`WORKSPACE_MOUNT`]; created if missing.
    pub workspace: PathBuf,
    /// Host file created empty (with its parents) and mounted at
    /// [`OUTPUT_MOUNT`]; read back as the attempt's outputs.
    pub output_path: PathBuf,
    /// Per-attempt log file; as for processes, created at the first line.
    pub log_path: PathBuf,
    /// Maximum bytes written to the log file; `None` for no limit.
    pub log_cap: Option<u64>,
    /// Time between SIGTERM and SIGKILL on a graceful kill.
    pub kill_grace: Duration,
    /// Network the task container joins (see
    /// [`DockerEngine::ensure_network`](super::DockerEngine::ensure_network));
    /// empty for Docker's default bridge.
    pub network: String,
    /// `user`, `user:group`, `uid` or `uid:gid` inside the container.
    pub user: Option<String>,
    /// Extra volumes as the user wrote them: `SOURCE:TARGET[:ro|rw]`, SOURCE
    /// an absolute host path or a named volume, TARGET an absolute path.
    pub volumes: Vec<String>,
    /// Sidecars started before the task and removed after it.
    pub services: Vec<ServiceSpec>,
    pub resources: Resources,
    /// Who the containers belong to; becomes `ganger.*` labels.
    pub owner: Owner,
    /// More labels on every container and network of the attempt. Keys
    /// starting with `ganger.` are reserved and refused.
    pub labels: Vec<(String, String)>,
    /// `/etc/hosts` entries, e.g. `host.docker.internal:host-gateway` so
    /// the task can reach an endpoint of the agent.
    pub extra_hosts: Vec<String>,
    /// Run a tiny init (`docker-init`) as PID 1: it forwards SIGTERM to the
    /// script (a shell as PID 1 ignores it, so a graceful kill would always
    /// wait out the grace) and reaps zombies. Needs the engine's init
    /// binary, which standard installations ship.
    pub init: bool,
}

/// A sidecar: started before the task on the attempt's own network,
/// reachable from the task by `name`, removed after the task.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Host name the task reaches it by: letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    /// Its argv; `None` for the image's own command.
    pub command: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull before every run; fail when the pull fails.
    Always,
    /// Pull only when the image is not on this host.
    #[default]
    IfMissing,
    /// Never pull; fail when the image is not on this host.
    Never,
}

impl PullPolicy {
    /// The spelling of the job file (`pull: if-missing`).
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfMissing => "if-missing",
            PullPolicy::Never => "never",
        }
    }
}

/// Limits of the task container (sidecars are not limited).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    /// CPUs, e.g. `1.5`.
    pub cpu: Option<f64>,
    /// Bytes of memory.
    pub memory: Option<u64>,
    /// Most processes at once.
    pub pids: Option<u64>,
}

/// Who an attempt's containers belong to. Each becomes a label
/// (`ganger.agent`, `ganger.run`, `ganger.task`, `ganger.attempt`), and
/// [`DockerEngine::remove_orphans`](super::DockerEngine::remove_orphans)
/// finds an agent's leftovers by the first.
#[derive(Clone, Debug, Default)]
pub struct Owner {
    pub agent: String,
    pub run: String,
    pub task: String,
    pub attempt: String,
}

use std::time::Duration;

/// A failure of the Docker engine's housekeeping calls. Each message says
/// what failed, at which engine, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "DOCKER_HOST={value:?} is not supported: ganger talks to the Docker engine over a \
         unix socket only; set DOCKER_HOST=unix:///path/to/docker.sock or unset it for \
         {DEFAULT_SOCKET}"
    )]
    UnsupportedHost { value: String },
    /// `origin` says where the path came from, e.g. " (from DOCKER_HOST)".
    #[error(
        "no Docker engine socket at {socket}{origin}: start the engine (`systemctl start docker`) \
         or point DOCKER_HOST at its socket (unix:///path/to/docker.sock)"
    )]
    NoSocket {
        socket: String,
        origin: &'static str,
    },
    #[error(
        "cannot reach the Docker engine at {socket}: {source}; check that it runs (`docker info`) \
         and that this user may use its socket (root or the `docker` group)"
    )]
    Unreachable {
        socket: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "the Docker engine at {socket} did not answer within {}s; check that it runs \
         (`docker info`)", .after.as_secs_f64()
    )]
    Timeout { socket: String, after: Duration },
    #[error("Docker engine at {socket}: cannot {action}: {source}")]
    Api {
        socket: String,
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
}

pub(crate) const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

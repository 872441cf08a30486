use ganger_store::StoreError;

/// What the engine refuses or fails with; each variant maps to one HTTP
/// status, and every message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 422: a job file does not validate; one line per problem.
    #[error("the job definitions are invalid:\n{}", .details.join("\n"))]
    InvalidJob { details: Vec<String> },
    /// 422: parameters do not match the job's declarations.
    #[error("invalid parameters for job `{job}`:\n{}", .details.join("\n"))]
    InvalidParams { job: String, details: Vec<String> },
    /// 400: a malformed request.
    #[error("{0}")]
    InvalidRequest(String),
    /// 429: the job's queue refused the run; nothing was created.
    #[error("{0}")]
    QueueFull(String),
    /// 409: the request does not fit the run's state (retry of a running run).
    #[error("{0}")]
    Conflict(String),
    /// 409: a report about an attempt that is no longer current.
    #[error("{0}")]
    Stale(String),
    /// 503: the server is stopping.
    #[error("the server is shutting down and accepts no new work; retry against a running server")]
    ShuttingDown,
    /// 500 (503 when the database is unreachable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500: a stored state that cannot be read back.
    #[error("internal error: {0}")]
    Internal(String),
}

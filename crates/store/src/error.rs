use std::path::PathBuf;

use crate::TaskKey;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors of a backend library, boxed so the driver's error type (sqlx
/// today) does not leak into the public API and every backend can share
/// the same variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store operation can fail with. Messages name the operation
/// and the object it was working on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: BoxError,
    },

    #[error("cannot migrate the database {path} to the current schema: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: BoxError,
    },

    /// A PostgreSQL URL that cannot be used. The URL itself is not shown:
    /// it may hold a password.
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl { reason: String },

    /// The database server cannot be reached or refused the session.
    /// `target` names the host, port, database and user, never a password.
    #[error(
        "cannot connect to PostgreSQL ({target}): {source}; check that the server runs and \
         accepts connections there, and that the user, password and database are right"
    )]
    Connect {
        target: String,
        #[source]
        source: BoxError,
    },

    /// Migrating a database server (PostgreSQL) failed; `target` as in
    /// [`StoreError::Connect`].
    #[error("cannot migrate the PostgreSQL database ({target}) to the current schema: {source}")]
    MigrateServer {
        target: String,
        #[source]
        source: BoxError,
    },

    /// The database could not be reached: the connection broke or could
    /// not be made, the pool had no connection to give, or the server is
    /// shutting down or starting up. Transient: the same operation may
    /// succeed once the database is back, so callers answer "try again"
    /// instead of reporting a fault. Whether a write whose commit failed
    /// this way took effect is unknown.
    #[error("{op}: the database is unreachable: {source}; the server retries by itself")]
    Unavailable {
        op: String,
        #[source]
        source: BoxError,
    },

    /// A fenced [`Batch`](crate::Batch) (PostgreSQL) whose fencing token is
    /// no longer the leader lease's: another replica took the lease over,
    /// so this one must stop writing engine state. Nothing of the batch was
    /// written. `current` is the lease's token now (`None`: no such lease).
    #[error(
        "commit batch: this replica no longer holds the leader lease {name:?} (its token {token}, \
         {}): another replica took over, so nothing of the batch was written",
        describe_current(*.current)
    )]
    Fenced {
        name: String,
        token: u64,
        current: Option<u64>,
    },

    /// A query failed; `op` says which operation and on what.
    #[error("{op}: database error: {source}")]
    Database {
        op: String,
        #[source]
        source: BoxError,
    },

    /// The caller passed something the store refuses to keep.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },

    #[error("{op}: no run with id {id:?}")]
    RunNotFound { op: &'static str, id: String },

    /// The id is taken by a stored run, or by an earlier run of the same
    /// [`Store::insert_runs`](crate::Store::insert_runs) call.
    #[error("insert run: a run with id {id:?} already exists")]
    DuplicateRun { id: String },

    #[error("{op}: no claimable task {key}")]
    ClaimableNotFound { op: &'static str, key: TaskKey },

    #[error("put token: a token with this hash already exists (token {name:?})")]
    DuplicateToken { name: String },

    #[error("list runs: invalid page cursor {cursor:?}")]
    InvalidCursor { cursor: String },

    /// A stored value cannot be read back (out of range, malformed JSON):
    /// the database was changed by something other than this store.
    #[error("{op}: stored data is corrupt: {detail}")]
    Corrupt { op: String, detail: String },

    /// A backend broke its own contract (e.g. answered a different number
    /// of outcomes than it was given inputs): a bug in the store, not in the
    /// data or the caller.
    #[error("{op}: internal store error: {detail}")]
    Internal { op: &'static str, detail: String },

    /// A thread panicked while holding the memory store's lock; its state
    /// may be half-changed, so it is not used any more.
    #[error("{op}: the memory store is unusable after a panic in another thread")]
    Poisoned { op: &'static str },
}

impl StoreError {
    /// True when the database could not be reached ([`StoreError::Unavailable`],
    /// [`StoreError::Connect`]): a transient condition, worth retrying, not
    /// a fault of the request or of the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Connect { .. }
        )
    }
}

/// The lease's current token, for [`StoreError::Fenced`].
fn describe_current(current: Option<u64>) -> String {
    match current {
        Some(token) => format!("the lease's token is now {token}"),
        None => "the lease no longer exists".to_owned(),
    }
}

//! What the SQL backends (SQLite and PostgreSQL) share: error mapping,
//! range checks and the rows both read the same way.

use sqlx::FromRow;

use crate::error::BoxError;
use crate::{ClaimRequest, JobVersion, Result, RunRow, RunSummary, StoreError};

/// Maps a driver error to [`StoreError::Unavailable`] when the database
/// could not be reached (see [`is_connection_failure`]), else to
/// [`StoreError::Database`].
pub(crate) fn db_err(op: impl Into<String>, e: sqlx::Error) -> StoreError {
    let op = op.into();
    if is_connection_failure(&e) {
        return StoreError::Unavailable {
            op,
            source: Box::new(e) as BoxError,
        };
    }
    StoreError::Database {
        op,
        source: Box::new(e) as BoxError,
    }
}

/// True for failures of the connection rather than of the statement: the
/// socket or TLS session broke, the wire protocol went out of step (a
/// half-read answer of a dropped connection), the pool had no connection
/// to give, or PostgreSQL refused or ended the session (see
/// [`is_connection_sqlstate`]).
fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATEs are PostgreSQL's; SQLite's codes mean something else.
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|pg| is_connection_sqlstate(pg.code())),
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs for a session that cannot go on: class 08
/// (connection exception), 57P01 (admin shutdown, also what
/// `pg_terminate_backend` sends), 57P02 (crash shutdown) and 57P03 (cannot
/// connect now: starting up, shutting down, in recovery).
fn is_connection_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

pub(crate) fn corrupt(op: &str, detail: String) -> StoreError {
    StoreError::Corrupt {
        op: op.to_owned(),
        detail,
    }
}

pub(crate) fn to_u32(op: &str, column: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(op, format!("{column} = {v} is out of range")))
}

pub(crate) fn to_i32(op: &str, column: &str, v: i64) -> Result<i32> {
    i32::try_from(v).map_err(|_| corrupt(op, format!("{column} = {v} is out of range")))
}

/// A claim request that can take nothing, whatever is on offer.
pub(crate) fn claim_is_void(req: &ClaimRequest) -> bool {
    req.max == 0 || req.executors.is_empty()
}

#[derive(FromRow)]
pub(crate) struct JobRecord {
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) digest: String,
    pub(crate) created_at: i64,
}

impl JobRecord {
    pub(crate) fn into_version(self, op: &str, created: bool) -> Result<JobVersion> {
        Ok(JobVersion {
            version: to_u32(op, "jobs.version", self.version)?,
            name: self.name,
            digest: self.digest,
            created,
            created_at: self.created_at,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct RunRecord {
    id: String,
    seq: i64,
    job: String,
    version: i64,
    status: String,
    priority: i64,
    concurrency_key: Option<String>,
    idempotency_key: Option<String>,
    scheduled_at: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    reason: Option<String>,
}

impl RunRecord {
    pub(crate) fn into_summary(self, op: &str) -> Result<RunSummary> {
        Ok(RunSummary {
            version: to_u32(op, "runs.version", self.version)?,
            priority: to_i32(op, "runs.priority", self.priority)?,
            id: self.id,
            seq: self.seq,
            job: self.job,
            status: self.status,
            concurrency_key: self.concurrency_key,
            idempotency_key: self.idempotency_key,
            scheduled_at: self.scheduled_at,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            reason: self.reason,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct FullRunRecord {
    #[sqlx(flatten)]
    summary: RunRecord,
    params_json: String,
    state_json: String,
}

impl FullRunRecord {
    pub(crate) fn into_row(self, op: &str) -> Result<RunRow> {
        Ok(RunRow {
            summary: self.summary.into_summary(op)?,
            params_json: self.params_json,
            state_json: self.state_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        let broken = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        for e in [
            sqlx::Error::Io(broken()),
            sqlx::Error::Tls(Box::new(broken())),
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            let err = db_err("get run", e);
            assert!(
                matches!(err, StoreError::Unavailable { .. }) && err.is_unavailable(),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with("get run: the database is unreachable: "),
                "{msg}"
            );
            assert!(msg.ends_with("; the server retries by itself"), "{msg}");
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::InvalidArgument("x".into()),
        ] {
            let err = db_err("get run", e);
            assert!(
                matches!(err, StoreError::Database { .. }) && !err.is_unavailable(),
                "{err:?}"
            );
        }
    }

    #[test]
    fn connection_sqlstates() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "08P01", "57P01", "57P02", "57P03",
        ] {
            assert!(is_connection_sqlstate(code), "{code}");
        }
        // Statement-level failures, and other codes of class 57.
        for code in [
            "23505", "40001", "40P01", "57014", "57000", "55P03", "XX000", "",
        ] {
            assert!(!is_connection_sqlstate(code), "{code}");
        }
    }
}

//! What the SQL backends (SQLite and PostgreSQL) share: error mapping,
//! range checks and the rows both read the same way.

use sqlx::FromRow;

use crate::error::BoxError;
use crate::{ClaimRequest, JobVersion, Result, RunRow, RunSummary, StoreError};

pub(crate) fn db_err(op: impl Into<String>, e: sqlx::Error) -> StoreError {
    StoreError::Database {
        op: op.into(),
        source: Box::new(e) as BoxError,
    }
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

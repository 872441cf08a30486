//! The SQLite store (sqlx, runtime-checked queries; schema in
//! `migrations/sqlite/`). All SQL specific to SQLite lives in this module.
//!
//! Two pools share the file. Writes go through a pool of exactly one
//! connection: SQLite admits one writer at a time anyway, and queueing
//! writers in the pool (FIFO, woken at once) beats letting several
//! connections collide on the file lock, where SQLite's busy handler sleeps
//! in steps of up to 100 ms. Reads go through a small pool of read-only
//! connections, which WAL lets proceed alongside the writer. Every write
//! still starts with `BEGIN IMMEDIATE`, so it is also correct against
//! writers in other pools or processes: it takes the write lock first and
//! waits for it (busy timeout) instead of failing on a read-to-write upgrade.
//!
//! Each write step has one body, a function over the open transaction
//! (`&mut SqliteConnection`): [`Store::commit`] runs `insert_one` per new
//! run and `claim_in` per claim request, and [`Store::insert_runs`] and
//! [`Store::claim`] are `commit` of a batch holding only that part, so a
//! tick, a group of submissions and a single call share the same SQL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, Transaction};

use crate::sql::{
    FullRunRecord, JobRecord, RunRecord, claim_is_void, corrupt, db_err, is_foreign_key_violation,
    is_unique_violation, to_i32, to_u32,
};
use crate::{
    Batch, ClaimRequest, Claimable, Claimed, Committed, Inserted, JobDef, JobVersion, NewRun, Page,
    Result, RunFilter, RunRow, RunSummary, Store, StoreError, TaskKey, TokenRow, check_job_def,
    check_new_run, check_token, clamp_limit, decode_cursor, encode_cursor, tags_match,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a write waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections; the machines this targets have few cores.
const READERS: u32 = 4;

/// A [`Store`] in one SQLite file. Clones share the same pools.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database at
    /// `path` and migrates it to the current schema.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |e: sqlx::Error| StoreError::Open {
            path: path.clone(),
            source: Box::new(e),
        };
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Each commit is durable once it returns: a crash after an
            // accepted run must not lose it. WAL keeps this to one fsync per
            // commit, and group commit keeps commits few.
            .synchronous(SqliteSynchronous::Full);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // The connection is in-process; there is nothing to go stale, and
            // a ping per acquire would double the round trips.
            .test_before_acquire(false)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    // Persistent in the file; set by the writer only, since
                    // changing it needs write access.
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(open_err)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Migrate {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(base.read_only(true))
            .await
            .map_err(open_err)?;
        Ok(SqliteStore {
            writer,
            reader,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes all connections, waiting for those in use to be returned.
    /// The last one to close checkpoints the WAL into the database file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn begin_write(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_err(op, e))
    }
}

fn encode_tags(key: &TaskKey, tags: &[String]) -> Result<String> {
    // Cannot fail for a list of strings; an error rather than a fallback,
    // because a lost tag would let any agent claim the task.
    serde_json::to_string(tags).map_err(|e| StoreError::Invalid {
        what: format!("tags of task {key}"),
        reason: e.to_string(),
    })
}

fn decode_tags(op: &str, seq: i64, tags: &str) -> Result<Vec<String>> {
    serde_json::from_str(tags).map_err(|e| {
        corrupt(
            op,
            format!("claimable #{seq}: tags {tags:?} are not a JSON list: {e}"),
        )
    })
}

// Column lists as macros so queries stay `&'static str` (sqlx refuses
// dynamic SQL unless asserted safe) and never use `SELECT *`.
macro_rules! run_columns {
    () => {
        "id, seq, job, version, status, priority, concurrency_key, idempotency_key, \
         scheduled_at, created_at, started_at, finished_at, reason"
    };
}
macro_rules! claim_columns {
    () => {
        "seq, run_id, task, phase, attempt, priority, tags, executor, spec_json, ready_at, \
         agent, lease_until"
    };
}

#[derive(FromRow)]
struct ClaimRecord {
    seq: i64,
    run_id: String,
    task: i64,
    phase: String,
    attempt: i64,
    priority: i64,
    tags: String,
    executor: String,
    spec_json: String,
    ready_at: i64,
    agent: Option<String>,
    lease_until: Option<i64>,
}

impl ClaimRecord {
    /// `(priority, seq, claimed)`; `None` when the row is not claimed.
    fn into_claimed(self, op: &str) -> Result<(i32, i64, Option<Claimed>)> {
        let priority = to_i32(op, "claimables.priority", self.priority)?;
        let claimable = Claimable {
            key: TaskKey {
                task: to_u32(op, "claimables.task", self.task)?,
                run_id: self.run_id,
                phase: self.phase,
            },
            attempt: to_u32(op, "claimables.attempt", self.attempt)?,
            priority,
            tags: decode_tags(op, self.seq, &self.tags)?,
            executor: self.executor,
            spec_json: self.spec_json,
            ready_at: self.ready_at,
        };
        let claimed = match (self.agent, self.lease_until) {
            (Some(agent), Some(lease_until)) => Some(Claimed {
                claimable,
                agent,
                lease_until,
            }),
            _ => None,
        };
        Ok((priority, self.seq, claimed))
    }
}

#[derive(FromRow)]
struct TokenRecord {
    hash: String,
    role: String,
    name: String,
    created_at: i64,
}

/// Inserts one run inside the caller's write transaction (see
/// [`Batch::new_runs`]); the caller commits or, on error, rolls back.
async fn insert_one(conn: &mut SqliteConnection, run: &NewRun) -> Result<Inserted> {
    const OP: &str = "insert run";
    // Checked here, after earlier runs of the batch were written, like
    // `put_jobs`: an error rolls all of them back.
    check_new_run(run)?;
    // The unique index decides, not a prior lookup: the same statement
    // works unchanged where writers are not serialized (PostgreSQL). It also
    // sees the earlier runs of the same transaction, so a key repeated
    // within one batch answers the first run's id.
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO runs (id, job, version, status, priority, concurrency_key, \
         idempotency_key, scheduled_at, created_at, params_json, state_json) \
         VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING seq",
    )
    .bind(&run.id)
    .bind(&run.job)
    .bind(i64::from(run.version))
    .bind(run.priority)
    .bind(&run.concurrency_key)
    .bind(&run.idempotency_key)
    .bind(run.scheduled_at)
    .bind(run.created_at)
    .bind(&run.params_json)
    .bind(&run.state_json)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::DuplicateRun { id: run.id.clone() }
        } else {
            db_err(format!("{OP} {:?}", run.id), e)
        }
    })?;
    match (seq, &run.idempotency_key) {
        (Some(seq), _) => Ok(Inserted::Created { seq }),
        (None, Some(key)) => {
            let id: String = sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = ?")
                .bind(key)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_err(format!("{OP}: reading the run with key {key:?}"), e))?;
            Ok(Inserted::Existing { id })
        }
        (None, None) => Err(corrupt(
            OP,
            format!(
                "run {:?} without key was neither inserted nor refused",
                run.id
            ),
        )),
    }
}

/// The one claim path (see [`Store::claim`]), inside the caller's write
/// transaction; it sees everything the transaction wrote before it.
async fn claim_in(conn: &mut SqliteConnection, req: &ClaimRequest) -> Result<Vec<Claimed>> {
    const OP: &str = "claim";
    if claim_is_void(req) {
        return Ok(Vec::new());
    }
    let max = req.max as usize;
    // Walk the unclaimed rows in claim order (index `claimables_claim`,
    // no sort) and stop as soon as `max` match; tags are matched in
    // Rust because bare tags match any value.
    let mut picked: Vec<i64> = Vec::with_capacity(max);
    {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT seq, tags FROM claimables WHERE agent IS NULL AND ready_at <= ",
        );
        qb.push_bind(req.now).push(" AND executor IN (");
        let mut list = qb.separated(", ");
        for e in &req.executors {
            list.push_bind(e);
        }
        qb.push(") ORDER BY priority DESC, seq");
        let mut rows = qb.build_query_as::<(i64, String)>().fetch(&mut *conn);
        while let Some((seq, tags)) = rows.try_next().await.map_err(|e| db_err(OP, e))? {
            if tags_match(&decode_tags(OP, seq, &tags)?, &req.labels) {
                picked.push(seq);
                if picked.len() == max {
                    break;
                }
            }
        }
    }
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    // `agent IS NULL` again in the write itself: the guarantee that a
    // row is never taken from another agent does not rest on the lock.
    let mut qb = QueryBuilder::<Sqlite>::new("UPDATE claimables SET agent = ");
    qb.push_bind(&req.agent)
        .push(", lease_until = ")
        .push_bind(req.lease_until)
        .push(" WHERE agent IS NULL AND seq IN (");
    let mut list = qb.separated(", ");
    for seq in &picked {
        list.push_bind(*seq);
    }
    qb.push(concat!(") RETURNING ", claim_columns!()));
    let rows: Vec<ClaimRecord> = qb
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_err(format!("{OP} for agent {:?}", req.agent), e))?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        if let (priority, seq, Some(c)) = r.into_claimed(OP)? {
            claimed.push((priority, seq, c));
        }
    }
    // RETURNING has no defined order.
    claimed.sort_by_key(|(priority, seq, _)| (std::cmp::Reverse(*priority), *seq));
    Ok(claimed.into_iter().map(|(_, _, c)| c).collect())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn put_jobs(&self, defs: Vec<JobDef>, now: i64) -> Result<Vec<JobVersion>> {
        const OP: &str = "put jobs";
        let mut tx = self.begin_write(OP).await?;
        let mut out = Vec::with_capacity(defs.len());
        for (i, def) in defs.into_iter().enumerate() {
            // Checked here, after earlier definitions were written: an error
            // drops `tx`, which rolls all of them back.
            check_job_def(i, &def)?;
            let latest: Option<JobRecord> = sqlx::query_as(
                "SELECT name, version, digest, created_at FROM jobs \
                 WHERE name = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(&def.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_err(format!("{OP}: reading job {:?}", def.name), e))?;
            let next = match latest {
                Some(l) if l.digest == def.digest => {
                    out.push(l.into_version(OP, false)?);
                    continue;
                }
                Some(l) => l.version + 1,
                None => 1,
            };
            let version = to_u32(OP, "jobs.version", next)?;
            sqlx::query(
                "INSERT INTO jobs (name, version, digest, source, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&def.name)
            .bind(next)
            .bind(&def.digest)
            .bind(&def.source)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                db_err(
                    format!("{OP}: writing version {version} of job {:?}", def.name),
                    e,
                )
            })?;
            out.push(JobVersion {
                name: def.name,
                version,
                digest: def.digest,
                created: true,
                created_at: now,
            });
        }
        tx.commit().await.map_err(|e| db_err(OP, e))?;
        Ok(out)
    }

    async fn job(&self, name: &str, version: Option<u32>) -> Result<Option<(JobVersion, String)>> {
        const OP: &str = "get job";
        #[derive(FromRow)]
        struct WithSource {
            #[sqlx(flatten)]
            job: JobRecord,
            source: String,
        }
        let query = match version {
            None => sqlx::query_as::<_, WithSource>(
                "SELECT name, version, digest, created_at, source FROM jobs \
                 WHERE name = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(name),
            Some(v) => sqlx::query_as::<_, WithSource>(
                "SELECT name, version, digest, created_at, source FROM jobs \
                 WHERE name = ? AND version = ?",
            )
            .bind(name)
            .bind(i64::from(v)),
        };
        let found = query
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| db_err(format!("{OP} {name:?}"), e))?;
        found
            .map(|r| Ok((r.job.into_version(OP, false)?, r.source)))
            .transpose()
    }

    async fn jobs(&self) -> Result<Vec<JobVersion>> {
        const OP: &str = "list jobs";
        let rows: Vec<JobRecord> = sqlx::query_as(
            "SELECT name, version, digest, created_at FROM jobs AS j \
             WHERE version = (SELECT MAX(version) FROM jobs WHERE name = j.name) \
             ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(|e| db_err(OP, e))?;
        rows.into_iter()
            .map(|r| r.into_version(OP, false))
            .collect()
    }

    async fn run_for_key(&self, idempotency_key: &str) -> Result<Option<String>> {
        // Answered by the unique partial index `runs_idempotency`.
        sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = ?")
            .bind(idempotency_key)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| db_err(format!("get the run with key {idempotency_key:?}"), e))
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>> {
        const OP: &str = "get run";
        let row: Option<FullRunRecord> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            ", params_json, state_json FROM runs WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(|e| db_err(format!("{OP} {id:?}"), e))?;
        row.map(|r| r.into_row(OP)).transpose()
    }

    async fn unfinished(&self) -> Result<Vec<RunRow>> {
        const OP: &str = "list unfinished runs";
        // The WHERE clause matches the partial index `runs_unfinished`
        // textually, so the planner uses it.
        let rows: Vec<FullRunRecord> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            ", params_json, state_json FROM runs \
             WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY seq"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(|e| db_err(OP, e))?;
        rows.into_iter().map(|r| r.into_row(OP)).collect()
    }

    async fn list_runs(
        &self,
        filter: RunFilter,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<Page<RunSummary>> {
        const OP: &str = "list runs";
        let before = cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = clamp_limit(limit);
        // Only the filters given become SQL, so each query can use its
        // index (an `? IS NULL OR job = ?` form defeats the planner).
        let mut qb = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE 1 = 1"
        ));
        if let Some(job) = filter.job {
            qb.push(" AND job = ").push_bind(job);
        }
        if let Some(status) = filter.status {
            qb.push(" AND status = ").push_bind(status);
        }
        if let Some(seq) = before {
            qb.push(" AND seq < ").push_bind(seq);
        }
        // One extra row tells whether another page exists.
        qb.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<RunRecord> = qb
            .build_query_as()
            .fetch_all(&self.reader)
            .await
            .map_err(|e| db_err(OP, e))?;
        let more = rows.len() > limit as usize;
        let items = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| r.into_summary(OP))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor(last.seq)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn commit(&self, batch: Batch) -> Result<Committed> {
        const OP: &str = "commit batch";
        // Nothing to write and no claim that could take anything (agents
        // poll with such requests too): no transaction, no write lock.
        if batch.new_runs.is_empty()
            && batch.runs.is_empty()
            && batch.ready.is_empty()
            && batch.done.is_empty()
            && batch.claims.iter().all(claim_is_void)
        {
            return Ok(Committed {
                inserted: Vec::new(),
                claimed: vec![Vec::new(); batch.claims.len()],
            });
        }
        // Every error below returns early and drops `tx`, which rolls back
        // all the batch wrote before it.
        let mut tx = self.begin_write(OP).await?;
        let mut inserted = Vec::with_capacity(batch.new_runs.len());
        for run in &batch.new_runs {
            inserted.push(insert_one(&mut tx, run).await?);
        }
        for u in &batch.runs {
            let done = sqlx::query(
                "UPDATE runs SET status = ?, started_at = ?, finished_at = ?, reason = ?, \
                 state_json = ? WHERE id = ?",
            )
            .bind(&u.status)
            .bind(u.started_at)
            .bind(u.finished_at)
            .bind(&u.reason)
            .bind(&u.state_json)
            .bind(&u.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err(format!("{OP}: updating run {:?}", u.id), e))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::RunNotFound {
                    op: "commit batch: update run",
                    id: u.id.clone(),
                });
            }
        }
        for c in &batch.ready {
            // On re-offer: keep the row (and so its FIFO seq); keep the claim
            // only for the same attempt. SQLite evaluates every right-hand
            // side against the old row, so the CASEs see the old attempt.
            sqlx::query(
                "INSERT INTO claimables (run_id, task, phase, attempt, priority, tags, \
                 executor, spec_json, ready_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (run_id, task, phase) DO UPDATE SET \
                 agent = CASE WHEN attempt = excluded.attempt THEN agent END, \
                 lease_until = CASE WHEN attempt = excluded.attempt THEN lease_until END, \
                 attempt = excluded.attempt, priority = excluded.priority, \
                 tags = excluded.tags, executor = excluded.executor, \
                 spec_json = excluded.spec_json, ready_at = excluded.ready_at",
            )
            .bind(&c.key.run_id)
            .bind(i64::from(c.key.task))
            .bind(&c.key.phase)
            .bind(i64::from(c.attempt))
            .bind(c.priority)
            .bind(encode_tags(&c.key, &c.tags)?)
            .bind(&c.executor)
            .bind(&c.spec_json)
            .bind(c.ready_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::RunNotFound {
                        op: "commit batch: offer task",
                        id: c.key.run_id.clone(),
                    }
                } else {
                    db_err(format!("{OP}: offering task {}", c.key), e)
                }
            })?;
        }
        for key in &batch.done {
            sqlx::query("DELETE FROM claimables WHERE run_id = ? AND task = ? AND phase = ?")
                .bind(&key.run_id)
                .bind(i64::from(key.task))
                .bind(&key.phase)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err(format!("{OP}: removing task {key}"), e))?;
        }
        let mut claimed = Vec::with_capacity(batch.claims.len());
        for req in &batch.claims {
            claimed.push(claim_in(&mut tx, req).await?);
        }
        tx.commit().await.map_err(|e| db_err(OP, e))?;
        Ok(Committed { inserted, claimed })
    }

    async fn claims_of(&self, agent: &str) -> Result<Vec<Claimed>> {
        const OP: &str = "list claims of agent";
        // Index `claimables_agent`, then a sort of this agent's few rows.
        let rows: Vec<ClaimRecord> = sqlx::query_as(concat!(
            "SELECT ",
            claim_columns!(),
            " FROM claimables WHERE agent = ? ORDER BY priority DESC, seq"
        ))
        .bind(agent)
        .fetch_all(&self.reader)
        .await
        .map_err(|e| db_err(format!("{OP} {agent:?}"), e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.extend(r.into_claimed(OP)?.2);
        }
        Ok(out)
    }

    async fn renew(&self, agent: &str, lease_until: i64) -> Result<u64> {
        const OP: &str = "renew leases";
        let mut tx = self.begin_write(OP).await?;
        let done =
            sqlx::query("UPDATE claimables SET lease_until = MAX(lease_until, ?) WHERE agent = ?")
                .bind(lease_until)
                .bind(agent)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err(format!("{OP} of agent {agent:?}"), e))?;
        tx.commit().await.map_err(|e| db_err(OP, e))?;
        Ok(done.rows_affected())
    }

    async fn expired(&self, now: i64) -> Result<Vec<Claimed>> {
        const OP: &str = "list expired leases";
        let rows: Vec<ClaimRecord> = sqlx::query_as(concat!(
            "SELECT ",
            claim_columns!(),
            " FROM claimables WHERE agent IS NOT NULL AND lease_until < ? \
             ORDER BY lease_until, seq"
        ))
        .bind(now)
        .fetch_all(&self.reader)
        .await
        .map_err(|e| db_err(OP, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.extend(r.into_claimed(OP)?.2);
        }
        Ok(out)
    }

    async fn release(&self, key: &TaskKey) -> Result<()> {
        const OP: &str = "release claim";
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE claimables SET agent = NULL, lease_until = NULL \
             WHERE run_id = ? AND task = ? AND phase = ?",
        )
        .bind(&key.run_id)
        .bind(i64::from(key.task))
        .bind(&key.phase)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_err(format!("{OP} on task {key}"), e))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ClaimableNotFound {
                op: OP,
                key: key.clone(),
            });
        }
        tx.commit().await.map_err(|e| db_err(OP, e))
    }

    async fn put_token(&self, token: TokenRow) -> Result<()> {
        const OP: &str = "put token";
        check_token(&token)?;
        let mut tx = self.begin_write(OP).await?;
        sqlx::query("INSERT INTO tokens (hash, role, name, created_at) VALUES (?, ?, ?, ?)")
            .bind(&token.hash)
            .bind(&token.role)
            .bind(&token.name)
            .bind(token.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::DuplicateToken {
                        name: token.name.clone(),
                    }
                } else {
                    db_err(format!("{OP} {:?}", token.name), e)
                }
            })?;
        tx.commit().await.map_err(|e| db_err(OP, e))
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        const OP: &str = "get token";
        let row: Option<TokenRecord> =
            sqlx::query_as("SELECT hash, role, name, created_at FROM tokens WHERE hash = ?")
                .bind(hash)
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| db_err(OP, e))?;
        Ok(row.map(|r| TokenRow {
            hash: r.hash,
            role: r.role,
            name: r.name,
            created_at: r.created_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn scalar(store: &SqliteStore, sql: &'static str) -> String {
        let mut conn = match store.writer.acquire().await {
            Ok(c) => c,
            Err(e) => panic!("acquire: {e}"),
        };
        match sqlx::query_scalar::<_, String>(sql)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(v) => v,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    async fn plan(store: &SqliteStore, sql: &'static str) -> String {
        let rows: Vec<(i64, i64, i64, String)> =
            match sqlx::query_as(sql).fetch_all(&store.reader).await {
                Ok(r) => r,
                Err(e) => panic!("{sql}: {e}"),
            };
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn pragmas_and_query_plans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("nested/dir/g.db"))
            .await
            .expect("open");
        assert_eq!(scalar(&store, "PRAGMA journal_mode").await, "wal");
        // synchronous and foreign_keys are per connection: check the writer,
        // whose settings govern durability.
        let sync: String = scalar(
            &store,
            "SELECT CAST(synchronous AS TEXT) FROM pragma_synchronous",
        )
        .await;
        assert_eq!(sync, "2", "synchronous must be FULL (2)");
        let fk = scalar(
            &store,
            "SELECT CAST(foreign_keys AS TEXT) FROM pragma_foreign_keys",
        )
        .await;
        assert_eq!(fk, "1");

        // The claim scan walks the partial index in order: no sort step.
        let claim = plan(
            &store,
            "EXPLAIN QUERY PLAN SELECT seq, tags FROM claimables WHERE agent IS NULL \
             AND ready_at <= 5 AND executor IN ('process', 'docker') ORDER BY priority DESC, seq",
        )
        .await;
        assert!(claim.contains("claimables_claim"), "{claim}");
        assert!(!claim.contains("TEMP B-TREE"), "{claim}");

        // `claims_of` and `run_for_key` are index lookups, not scans.
        let claims_of = plan(
            &store,
            "EXPLAIN QUERY PLAN SELECT seq FROM claimables WHERE agent = 'a' \
             ORDER BY priority DESC, seq",
        )
        .await;
        assert!(claims_of.contains("claimables_agent"), "{claims_of}");
        let by_key = plan(
            &store,
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE idempotency_key = 'k'",
        )
        .await;
        assert!(by_key.contains("runs_idempotency"), "{by_key}");

        let unfinished = plan(
            &store,
            "EXPLAIN QUERY PLAN SELECT id FROM runs \
             WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY seq",
        )
        .await;
        assert!(unfinished.contains("runs_unfinished"), "{unfinished}");

        let by_job = plan(
            &store,
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE job = 'a' AND seq < 9 \
             ORDER BY seq DESC LIMIT 10",
        )
        .await;
        assert!(by_job.contains("runs_job"), "{by_job}");
        assert!(!by_job.contains("TEMP B-TREE"), "{by_job}");
        store.close().await;
    }
}

//! The PostgreSQL store (sqlx, runtime-checked queries; schema in
//! `migrations/postgres/`). All SQL specific to PostgreSQL lives in this
//! module.
//!
//! Several replicas may share one database, so unlike SQLite nothing here
//! relies on writers being serialized: every write is one `READ COMMITTED`
//! transaction whose correctness rests on row locks and unique indexes.
//!
//! - Claims lock the rows they take with `FOR UPDATE SKIP LOCKED` in the
//!   subquery that picks them ([`CLAIM_SQL`]), walking the partial index
//!   `claimables_claim` in claim order, and write `agent IS NULL` again in
//!   the update. Tags are matched in the same statement (a row that is
//!   locked must be one that is taken), with the rule of
//!   `ganger_core::routing::tags_match` restated in SQL; a test holds the
//!   two to the same answers.
//! - Exactly-once enqueue is the unique index `runs_idempotency` with
//!   `ON CONFLICT DO NOTHING`, which waits for a concurrent inserter of the
//!   same key to finish.
//! - Job versions are written under a transaction-scoped advisory lock per
//!   job name, taken in name order (no deadlock between two uploads).
//!
//! A commit that offers tasks also sends a notification on
//! [`READY_CHANNEL`] (delivered when, and only if, it commits), so the other
//! replicas' waiting claims can be served at once; [`PgStore::listen`]
//! receives them. The leader lease ([`Store::try_lead`]) and [`Store::db_now`]
//! use the database's clock. A fenced commit ([`Batch::fence`]) reads the
//! lease row `FOR SHARE` before it writes: a takeover updates that row, so
//! it waits until the commit ends, and a commit that starts after the
//! takeover sees the new token and fails. So no write of a deposed leader
//! lands after its successor took over.
//!
//! Each write step has one body, a function over the open transaction,
//! shared by [`Store::commit`], [`Store::insert_runs`] and [`Store::claim`],
//! as in the SQLite store.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder, Transaction};

use crate::sql::{
    FullRunRecord, JobRecord, RunRecord, claim_is_void, corrupt, db_err, is_foreign_key_violation,
    is_unique_violation, to_u32,
};
use crate::{
    Batch, ClaimRequest, Claimable, Claimed, Committed, Fence, Inserted, JobDef, JobVersion,
    NewRun, Page, Result, RunFilter, RunRow, RunSummary, Store, StoreError, TaskKey, TokenRow,
    check_job_def, check_new_run, check_token, clamp_limit, decode_cursor, encode_cursor,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel a commit notifies when it offers tasks. The payload is the
/// earliest `ready_at` among them (unix milliseconds, decimal).
pub const READY_CHANNEL: &str = "ganger_ready";

/// The row of the `leader` table that [`Store::try_lead`] contends for.
pub const LEADER_NAME: &str = "duties";

/// How long an operation waits for a free connection of the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The claim statement, the only one that hands out work. `$1` now, `$2`
/// executors, `$3` labels, `$4` label keys (the part of each `k=v` label
/// before its first `=`), `$5` max, `$6` agent, `$7` lease end.
///
/// The subquery reads `claimables_claim` in order (priority, then FIFO),
/// checks `ready_at` and `executor` in the index, the tags on the row, and
/// locks what it returns, skipping rows another transaction holds locked
/// (a concurrent claim, or an offer or release being written): claimers
/// never wait for each other. A tag holds when it is one of the labels, or
/// when it is bare (no `=`) and some label is `tag=…`, exactly as
/// `ganger_core::routing::tags_match`. The update then finds the picked
/// rows by primary key: `= ANY(ARRAY(subquery))` makes the subquery an
/// init plan run once, so even a generic plan (prepared statements switch
/// to one after a few runs) cannot turn the outer lookup into a hash join
/// over the whole table, as a join with a CTE of picked rows can.
pub(crate) const CLAIM_SQL: &str = "\
UPDATE claimables SET agent = $6, lease_until = $7
WHERE agent IS NULL AND seq = ANY(ARRAY(
    SELECT seq FROM claimables
    WHERE agent IS NULL AND ready_at <= $1 AND executor = ANY($2)
      AND (cardinality(tags) = 0 OR NOT EXISTS (
          SELECT 1 FROM unnest(tags) AS t(tag)
          WHERE tag <> ALL($3) AND (strpos(tag, '=') > 0 OR tag <> ALL($4))))
    ORDER BY priority DESC, seq
    LIMIT $5
    FOR UPDATE SKIP LOCKED))
RETURNING seq, run_id, task, phase, attempt, priority, tags, executor, spec_json, ready_at, \
agent, lease_until";

/// The current holder of a leader lease ([`PgStore::leader`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub holder: String,
    /// Where the holder serves, as it gave it to [`PgStore::try_lead_named`]
    /// (empty when taken through [`Store::try_lead`]).
    pub address: String,
    /// The lease's fencing token.
    pub token: u64,
}

/// A [`Store`] in a PostgreSQL database, shareable by several processes
/// (replicas). Clones share the same pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    target: String,
    notify: bool,
}

/// Where a connection goes, for messages: host and port (or socket),
/// database and user; never the password.
fn describe(o: &PgConnectOptions) -> String {
    let place = match o.get_socket() {
        Some(dir) => format!("socket directory {}", dir.display()),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    let user = o.get_username();
    // PostgreSQL's default database is the user's name.
    let db = o.get_database().unwrap_or(user);
    format!("database {db:?} on {place} as user {user:?}")
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`,
    /// with libpq's parameters such as `sslmode`, and the `PG*` environment
    /// variables for what it leaves out) with a pool of at most `pool_size`
    /// connections (at least 1), and migrates the database to the current
    /// schema (concurrent migrations from several replicas wait for each
    /// other). An operation waits up to 5 s for a free connection.
    ///
    /// Every connection is tested before an operation gets it, and one
    /// that fails the test is replaced: once the database is back after a
    /// restart or a failover, operations succeed again by themselves.
    ///
    /// Commits that offer tasks notify [`READY_CHANNEL`]; see
    /// [`PgStore::without_notify`].
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self> {
        // sqlx's parse errors name the part that is wrong, never the URL.
        let options: PgConnectOptions =
            url.parse()
                .map_err(|e: sqlx::Error| StoreError::InvalidUrl {
                    reason: e.to_string(),
                })?;
        let options = options.application_name("ganger");
        let target = describe(&options);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A ping before each use costs a round trip, but without it
            // every pooled connection the server dropped (restart,
            // failover, idle-session timeout) would fail one operation
            // before being replaced: up to a pool's worth of errors after
            // every restart. With it, they are replaced unseen.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Connect {
                target: target.clone(),
                source: Box::new(e),
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::MigrateServer {
                target: target.clone(),
                source: Box::new(e),
            })?;
        Ok(PgStore {
            pool,
            options,
            target,
            notify: true,
        })
    }

    /// The same store without the notifications on [`READY_CHANNEL`], for
    /// a single process that has no one to wake (each notifying commit
    /// takes PostgreSQL's global notification lock as it commits).
    pub fn without_notify(mut self) -> Self {
        self.notify = false;
        self
    }

    /// Host, port, database and user this store connects to (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes all connections, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts listening on [`READY_CHANNEL`] on a connection of its own
    /// (not one of the pool's). Notifications sent by commits after this
    /// returns are received, from this store and every other one on the
    /// same database.
    pub async fn listen(&self) -> Result<PgWakeups> {
        let connect_err = |e: sqlx::Error| StoreError::Connect {
            target: self.target.clone(),
            source: Box::new(e),
        };
        // A pool of one, used by the listener only to reconnect.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(self.options.clone())
            .await
            .map_err(connect_err)?;
        let mut listener = PgListener::connect_with(&pool).await.map_err(connect_err)?;
        listener
            .listen(READY_CHANNEL)
            .await
            .map_err(|e| db_err(format!("listen on channel {READY_CHANNEL}"), e))?;
        Ok(PgWakeups { listener })
    }

    /// [`Store::try_lead`] for any lease name: one row of `leader` per
    /// name, so independent duties can have independent leaders. `address`
    /// is where `holder` serves (the URL other replicas forward requests
    /// to); it is stored with every take and renewal, and read by
    /// [`PgStore::leader`].
    pub async fn try_lead_named(
        &self,
        name: &str,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Option<u64>> {
        const OP: &str = "take the leader lease";
        if holder.is_empty() {
            return Err(StoreError::Invalid {
                what: format!("leader lease {name:?}"),
                reason: "the holder is empty".into(),
            });
        }
        // One statement: the row lock taken by the insert or the update
        // serializes contenders; the WHERE of DO UPDATE is evaluated on
        // the latest committed row. now() is the database's clock.
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leader (name, holder, token, until, address) \
             VALUES ($1, $2, 1, now() + $3 * interval '1 second', $4) \
             ON CONFLICT (name) DO UPDATE SET \
             token = CASE WHEN leader.holder = excluded.holder THEN leader.token \
                          ELSE leader.token + 1 END, \
             holder = excluded.holder, until = excluded.until, address = excluded.address \
             WHERE leader.holder = excluded.holder OR leader.until <= now() \
             RETURNING token",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .bind(address)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err(format!("{OP} {name:?} for {holder:?}"), e))?;
        token.map(|t| lease_token(OP, t)).transpose()
    }

    /// The holder of the lease `name` while its lease lasts (on the
    /// database's clock); `None` when nobody took it, or the last holder
    /// resigned or let it expire. What a replica that does not lead reads to
    /// find where to forward requests.
    pub async fn leader(&self, name: &str) -> Result<Option<Leader>> {
        const OP: &str = "read the leader lease";
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT holder, address, token FROM leader WHERE name = $1 AND until > now()",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err(format!("{OP} {name:?}"), e))?;
        row.map(|(holder, address, token)| {
            Ok(Leader {
                holder,
                address,
                token: lease_token(OP, token)?,
            })
        })
        .transpose()
    }

    /// Gives up `holder`'s lease on `name`, if it holds it, so another
    /// holder can take it at once (clean shutdown). Answers whether it held
    /// it.
    pub async fn resign(&self, name: &str, holder: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leader SET until = now() - interval '1 microsecond' \
             WHERE name = $1 AND holder = $2 AND until > now()",
        )
        .bind(name)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(|e| db_err(format!("resign the leader lease {name:?} of {holder:?}"), e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(|e| db_err(op, e))
    }
}

/// A stored lease token as the API's `u64` (the schema keeps it >= 1).
fn lease_token(op: &str, token: i64) -> Result<u64> {
    u64::try_from(token).map_err(|_| corrupt(op, format!("leader.token = {token}")))
}

/// Checks inside the caller's transaction that the lease `fence.name` still
/// has the token `fence.token` ([`Batch::fence`]). The row stays locked
/// `FOR SHARE` until the transaction ends, so a takeover, which updates it,
/// waits for this transaction rather than overtaking it.
async fn check_fence(conn: &mut PgConnection, fence: &Fence) -> Result<()> {
    const OP: &str = "commit batch: check the leader lease";
    let current: Option<i64> =
        sqlx::query_scalar("SELECT token FROM leader WHERE name = $1 FOR SHARE")
            .bind(&fence.name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| db_err(format!("{OP} {:?}", fence.name), e))?;
    let current = current.map(|t| lease_token(OP, t)).transpose()?;
    if current == Some(fence.token) {
        return Ok(());
    }
    Err(StoreError::Fenced {
        name: fence.name.clone(),
        token: fence.token,
        current,
    })
}

/// Notifications that tasks were offered, from every store on the
/// database ([`PgStore::listen`]).
#[derive(Debug)]
pub struct PgWakeups {
    listener: PgListener,
}

/// What [`PgWakeups::recv`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// A commit offered tasks, the earliest ready at `ready_at` (unix ms;
    /// `None` when the payload is not a number: sent by something else).
    Ready { ready_at: Option<i64> },
    /// The connection was lost and has been made again: notifications sent
    /// meanwhile are lost, so look at the store as after a notification.
    Reconnected,
}

impl PgWakeups {
    /// Waits for the next notification. Notifications that arrive while
    /// nobody waits are buffered.
    pub async fn recv(&mut self) -> Result<Wakeup> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(Wakeup::Ready {
                ready_at: n.payload().parse().ok(),
            }),
            Ok(None) => Ok(Wakeup::Reconnected),
            Err(e) => Err(db_err(
                format!("wait for notifications on {READY_CHANNEL}"),
                e,
            )),
        }
    }
}

// Column lists as macros so queries stay `&'static str` and never use
// `SELECT *`.
// `priority` is an `integer` column, read as SQLite's integers are, into
// the row type both backends share.
macro_rules! run_columns {
    () => {
        "id, seq, job, version, status, priority::bigint AS priority, concurrency_key, \
         idempotency_key, scheduled_at, created_at, started_at, finished_at, reason"
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
    priority: i32,
    tags: Vec<String>,
    executor: String,
    spec_json: String,
    ready_at: i64,
    agent: Option<String>,
    lease_until: Option<i64>,
}

impl ClaimRecord {
    /// `(priority, seq, claimed)`; `None` when the row is not claimed.
    fn into_claimed(self, op: &str) -> Result<(i32, i64, Option<Claimed>)> {
        let claimable = Claimable {
            key: TaskKey {
                task: to_u32(op, "claimables.task", self.task)?,
                run_id: self.run_id,
                phase: self.phase,
            },
            attempt: to_u32(op, "claimables.attempt", self.attempt)?,
            priority: self.priority,
            tags: self.tags,
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
        Ok((self.priority, self.seq, claimed))
    }
}

fn claimed_rows(op: &str, rows: Vec<ClaimRecord>) -> Result<Vec<Claimed>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.extend(r.into_claimed(op)?.2);
    }
    Ok(out)
}

#[derive(FromRow)]
struct TokenRecord {
    hash: String,
    role: String,
    name: String,
    created_at: i64,
}

/// PostgreSQL text cannot hold NUL characters.
fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// Inserts one run inside the caller's transaction (see
/// [`Batch::new_runs`]); the caller commits or, on error, rolls back.
async fn insert_one(conn: &mut PgConnection, run: &NewRun) -> Result<Inserted> {
    const OP: &str = "insert run";
    check_new_run(run)?;
    // The unique index decides, not a prior lookup. When another
    // transaction inserted the same key and has not committed yet, this
    // waits for it: DO NOTHING if it commits, an insert if it rolls back.
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO runs (id, job, version, status, priority, concurrency_key, \
         idempotency_key, scheduled_at, created_at, params_json, state_json) \
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10) \
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
            // A new statement, a new snapshot: it sees the winner's row.
            let id: String = sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = $1")
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

/// The parameters `$3` and `$4` of [`CLAIM_SQL`]: the labels, and the key
/// of each `k=v` label. Values with NUL cannot be stored, so they can equal
/// no stored tag and are left out (PostgreSQL would refuse them).
fn label_params(labels: &[String]) -> (Vec<&str>, Vec<&str>) {
    let exact = labels
        .iter()
        .map(String::as_str)
        .filter(|l| !has_nul(l))
        .collect();
    let keys = labels
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !has_nul(k))
        .collect();
    (exact, keys)
}

/// The one claim path (see [`Store::claim`]), inside the caller's
/// transaction; it sees everything the transaction wrote before it.
async fn claim_in(conn: &mut PgConnection, req: &ClaimRequest) -> Result<Vec<Claimed>> {
    const OP: &str = "claim";
    if claim_is_void(req) {
        return Ok(Vec::new());
    }
    if has_nul(&req.agent) {
        return Err(StoreError::Invalid {
            what: format!("claim for agent {:?}", req.agent),
            reason: "the agent name contains a NUL character".into(),
        });
    }
    let executors: Vec<&str> = req
        .executors
        .iter()
        .map(String::as_str)
        .filter(|e| !has_nul(e))
        .collect();
    let (labels, keys) = label_params(&req.labels);
    let rows: Vec<ClaimRecord> = sqlx::query_as(CLAIM_SQL)
        .bind(req.now)
        .bind(&executors)
        .bind(&labels)
        .bind(&keys)
        .bind(i64::from(req.max))
        .bind(&req.agent)
        .bind(req.lease_until)
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

/// Notifies [`READY_CHANNEL`] inside the transaction: sent at commit,
/// dropped on rollback.
async fn notify_ready(conn: &mut PgConnection, ready_at: i64) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(READY_CHANNEL)
        .bind(ready_at.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_err(format!("notify {READY_CHANNEL}"), e))?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn put_jobs(&self, defs: Vec<JobDef>, now: i64) -> Result<Vec<JobVersion>> {
        const OP: &str = "put jobs";
        let mut tx = self.begin(OP).await?;
        // Writers of one name are serialized (the version is read, then
        // written); locks in name order, so two uploads cannot deadlock.
        let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ganger.jobs'), hashtext($1))")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err(format!("{OP}: locking job {name:?}"), e))?;
        }
        let mut out = Vec::with_capacity(defs.len());
        for (i, def) in defs.into_iter().enumerate() {
            // Checked here, after earlier definitions were written: an error
            // drops `tx`, which rolls all of them back.
            check_job_def(i, &def)?;
            let latest: Option<JobRecord> = sqlx::query_as(
                "SELECT name, version, digest, created_at FROM jobs \
                 WHERE name = $1 ORDER BY version DESC LIMIT 1",
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
                 VALUES ($1, $2, $3, $4, $5)",
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
                 WHERE name = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(name),
            Some(v) => sqlx::query_as::<_, WithSource>(
                "SELECT name, version, digest, created_at, source FROM jobs \
                 WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(i64::from(v)),
        };
        let found = query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(format!("{OP} {name:?}"), e))?;
        found
            .map(|r| Ok((r.job.into_version(OP, false)?, r.source)))
            .transpose()
    }

    async fn jobs(&self) -> Result<Vec<JobVersion>> {
        const OP: &str = "list jobs";
        let rows: Vec<JobRecord> = sqlx::query_as(
            "SELECT DISTINCT ON (name) name, version, digest, created_at FROM jobs \
             ORDER BY name, version DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(OP, e))?;
        rows.into_iter()
            .map(|r| r.into_version(OP, false))
            .collect()
    }

    async fn run_for_key(&self, idempotency_key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = $1")
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(format!("get the run with key {idempotency_key:?}"), e))
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>> {
        const OP: &str = "get run";
        let row: Option<FullRunRecord> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            ", params_json, state_json FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err(format!("{OP} {id:?}"), e))?;
        row.map(|r| r.into_row(OP)).transpose()
    }

    async fn unfinished(&self) -> Result<Vec<RunRow>> {
        const OP: &str = "list unfinished runs";
        // Implies the predicate of the partial index `runs_unfinished`.
        let rows: Vec<FullRunRecord> = sqlx::query_as(concat!(
            "SELECT ",
            run_columns!(),
            ", params_json, state_json FROM runs \
             WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY seq"
        ))
        .fetch_all(&self.pool)
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
        // Only the filters given become SQL, so each query can use its index.
        let mut qb = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE TRUE"
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
            .fetch_all(&self.pool)
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
        // poll with such requests too): no transaction.
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
        let mut tx = self.begin(OP).await?;
        // First, so that the lease is locked before anything is written.
        if let Some(fence) = &batch.fence {
            check_fence(&mut tx, fence).await?;
        }
        let mut inserted = Vec::with_capacity(batch.new_runs.len());
        for run in &batch.new_runs {
            inserted.push(insert_one(&mut tx, run).await?);
        }
        for u in &batch.runs {
            let done = sqlx::query(
                "UPDATE runs SET status = $1, started_at = $2, finished_at = $3, reason = $4, \
                 state_json = $5 WHERE id = $6",
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
            // only for the same attempt. Every right-hand side of DO UPDATE
            // sees the old row, so the CASEs compare with the old attempt.
            sqlx::query(
                "INSERT INTO claimables (run_id, task, phase, attempt, priority, tags, \
                 executor, spec_json, ready_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (run_id, task, phase) DO UPDATE SET \
                 agent = CASE WHEN claimables.attempt = excluded.attempt \
                              THEN claimables.agent END, \
                 lease_until = CASE WHEN claimables.attempt = excluded.attempt \
                                    THEN claimables.lease_until END, \
                 attempt = excluded.attempt, priority = excluded.priority, \
                 tags = excluded.tags, executor = excluded.executor, \
                 spec_json = excluded.spec_json, ready_at = excluded.ready_at",
            )
            .bind(&c.key.run_id)
            .bind(i64::from(c.key.task))
            .bind(&c.key.phase)
            .bind(i64::from(c.attempt))
            .bind(c.priority)
            .bind(&c.tags)
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
            sqlx::query("DELETE FROM claimables WHERE run_id = $1 AND task = $2 AND phase = $3")
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
        if self.notify
            && let Some(earliest) = batch.ready.iter().map(|c| c.ready_at).min()
        {
            notify_ready(&mut tx, earliest).await?;
        }
        tx.commit().await.map_err(|e| db_err(OP, e))?;
        Ok(Committed { inserted, claimed })
    }

    async fn claims_of(&self, agent: &str) -> Result<Vec<Claimed>> {
        const OP: &str = "list claims of agent";
        let rows: Vec<ClaimRecord> = sqlx::query_as(concat!(
            "SELECT ",
            claim_columns!(),
            " FROM claimables WHERE agent = $1 ORDER BY priority DESC, seq"
        ))
        .bind(agent)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(format!("{OP} {agent:?}"), e))?;
        claimed_rows(OP, rows)
    }

    async fn renew(&self, agent: &str, lease_until: i64) -> Result<u64> {
        const OP: &str = "renew leases";
        let done = sqlx::query(
            "UPDATE claimables SET lease_until = GREATEST(lease_until, $1) WHERE agent = $2",
        )
        .bind(lease_until)
        .bind(agent)
        .execute(&self.pool)
        .await
        .map_err(|e| db_err(format!("{OP} of agent {agent:?}"), e))?;
        Ok(done.rows_affected())
    }

    async fn expired(&self, now: i64) -> Result<Vec<Claimed>> {
        const OP: &str = "list expired leases";
        let rows: Vec<ClaimRecord> = sqlx::query_as(concat!(
            "SELECT ",
            claim_columns!(),
            " FROM claimables WHERE agent IS NOT NULL AND lease_until < $1 \
             ORDER BY lease_until, seq"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(OP, e))?;
        claimed_rows(OP, rows)
    }

    async fn release(&self, key: &TaskKey) -> Result<()> {
        const OP: &str = "release claim";
        let mut tx = self.begin(OP).await?;
        // `was_claimed` is read from the row before the update (a
        // self-join in the same statement sees the old version).
        let found: Option<(bool, i64)> = sqlx::query_as(
            "UPDATE claimables AS c SET agent = NULL, lease_until = NULL \
             FROM claimables AS old \
             WHERE c.run_id = $1 AND c.task = $2 AND c.phase = $3 AND old.seq = c.seq \
             RETURNING old.agent IS NOT NULL, c.ready_at",
        )
        .bind(&key.run_id)
        .bind(i64::from(key.task))
        .bind(&key.phase)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_err(format!("{OP} on task {key}"), e))?;
        let Some((was_claimed, ready_at)) = found else {
            return Err(StoreError::ClaimableNotFound {
                op: OP,
                key: key.clone(),
            });
        };
        // A released claim is on offer again: wake the claimers.
        if self.notify && was_claimed {
            notify_ready(&mut tx, ready_at).await?;
        }
        tx.commit().await.map_err(|e| db_err(OP, e))
    }

    async fn put_token(&self, token: TokenRow) -> Result<()> {
        const OP: &str = "put token";
        check_token(&token)?;
        sqlx::query("INSERT INTO tokens (hash, role, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&token.hash)
            .bind(&token.role)
            .bind(&token.name)
            .bind(token.created_at)
            .execute(&self.pool)
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
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        const OP: &str = "get token";
        let row: Option<TokenRecord> =
            sqlx::query_as("SELECT hash, role, name, created_at FROM tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_err(OP, e))?;
        Ok(row.map(|r| TokenRow {
            hash: r.hash,
            role: r.role,
            name: r.name,
            created_at: r.created_at,
        }))
    }

    async fn db_now(&self) -> Result<i64> {
        // clock_timestamp(), not now(): now() is the start of the
        // transaction, and this may run inside a long one some day.
        sqlx::query_scalar("SELECT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_err("read the database clock", e))
    }

    /// [`PgStore::try_lead_named`] of [`LEADER_NAME`] with an empty address.
    async fn try_lead(&self, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        self.try_lead_named(LEADER_NAME, holder, "", ttl).await
    }
}

/// The per-test database fixture, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/support/pgdb.rs"]
mod pgdb;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::AssertSqlSafe;

    use super::pgdb;

    /// A session the server ends answers SQLSTATE 57P01 (or just closes):
    /// either way the store reports the database as unavailable, not as a
    /// failed statement.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_terminated_session_is_unavailable() {
        let Some(db) = pgdb::TestDb::create().await else {
            return;
        };
        let store = PgStore::connect(&db.url, 1).await.expect("connect");
        let e = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&store.pool)
            .await
            .expect_err("the session ends itself");
        let err = db_err("terminate", e);
        assert!(
            matches!(err, StoreError::Unavailable { .. }) && err.is_unavailable(),
            "{err:?}"
        );
        // The pool replaces the connection by itself.
        store.db_now().await.expect("a new connection");
        store.close().await;
    }

    /// The plan of the exact claim statement, with the parameters bound as
    /// a claim binds them.
    async fn claim_plan(conn: &mut PgConnection, labels: &[String]) -> String {
        let executors = vec!["process"];
        let (labels, keys) = label_params(labels);
        let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {CLAIM_SQL}")))
            .bind(1_000_i64)
            .bind(&executors)
            .bind(&labels)
            .bind(&keys)
            .bind(1_i64)
            .bind("agent")
            .bind(2_000_i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("explain the claim statement: {e}"));
        lines.join("\n")
    }

    /// With a realistic queue (50,000 offers, a few claimed, statistics
    /// up to date), the claim statement reads the partial index
    /// `claimables_claim` in order: no sort and no scan of the table. The
    /// planner picks it on cost alone (no `enable_seqscan = off`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claim_statement_uses_the_claim_index() {
        let Some(db) = pgdb::TestDb::create().await else {
            return;
        };
        let store = PgStore::connect(&db.url, 2).await.expect("connect");
        let mut conn = store.pool.acquire().await.expect("acquire");
        for sql in [
            "INSERT INTO runs (id, job, version, status, priority, created_at, params_json, \
             state_json) VALUES ('r', 'j', 1, 'running', 0, 0, '{}', '{}')",
            "INSERT INTO claimables (run_id, task, phase, attempt, priority, tags, executor, \
             spec_json, ready_at) \
             SELECT 'r', g, 'main', 1, g % 3, CASE WHEN g % 10 = 0 THEN ARRAY['gpu'] \
             ELSE '{}'::text[] END, CASE WHEN g % 7 = 0 THEN 'docker' ELSE 'process' END, \
             '{}', g % 2000 FROM generate_series(0, 49999) AS g",
            "UPDATE claimables SET agent = 'busy', lease_until = 1 WHERE task < 500",
            "ANALYZE claimables",
        ] {
            sqlx::query(sql)
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let check = |plan: &str| {
            assert!(plan.contains("Index Scan using claimables_claim"), "{plan}");
            assert!(plan.contains("LockRows"), "{plan}");
            assert!(plan.contains("Index Scan using claimables_pkey"), "{plan}");
            assert!(!plan.contains("Sort"), "no sort: {plan}");
            assert!(!plan.contains("Seq Scan"), "no table scan: {plan}");
        };
        for labels in [Vec::new(), vec!["gpu=true".to_string()]] {
            check(&claim_plan(&mut conn, &labels).await);
        }
        // The generic plan, which a prepared statement may switch to after
        // a few runs, must be as good.
        let prepare = format!(
            "PREPARE claim_stmt (bigint, text[], text[], text[], bigint, text, bigint) AS \
             {CLAIM_SQL}"
        );
        for sql in [prepare.as_str(), "SET plan_cache_mode = force_generic_plan"] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let generic: Vec<String> = sqlx::query_scalar(
            "EXPLAIN EXECUTE claim_stmt (1000, '{process}', '{}', '{}', 1, 'agent', 2000)",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("explain the generic plan");
        check(&generic.join("\n"));
        for sql in ["DEALLOCATE claim_stmt", "RESET plan_cache_mode"] {
            sqlx::query(sql)
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // And the statement really claims through that plan.
        drop(conn);
        let got = store
            .claim(ClaimRequest {
                agent: "a".into(),
                labels: Vec::new(),
                executors: vec!["process".into()],
                max: 2,
                now: 1_000,
                lease_until: 2_000,
            })
            .await
            .expect("claim");
        let keys: Vec<(i32, u32)> = got
            .iter()
            .map(|c| (c.claimable.priority, c.claimable.key.task))
            .collect();
        // Priority 2 first (task % 3 == 2), FIFO, skipping claimed tasks
        // (< 500), docker tasks (% 7), tagged tasks (% 10) and tasks not
        // ready at 1000 (% 2000 > 1000).
        assert_eq!(keys, [(2, 503), (2, 506)]);
        store.close().await;
    }
}

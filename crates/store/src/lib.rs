//! Durable storage for ganger: the [`Store`] trait and its implementations,
//! [`MemoryStore`] (tests, `ganger run`), [`SqliteStore`] (`ganger server`
//! on one machine) and [`PgStore`] (several `ganger server` replicas on one
//! PostgreSQL database).
//!
//! The store is type-agnostic. Run states, task specs and parameters are
//! opaque JSON strings owned by the engine; the store types only the columns
//! it must query (status, priority, times, tags, leases). Times are `i64` unix
//! milliseconds, supplied by the caller, so tests and simulations control the
//! clock. [`Store::db_now`] reads the store's clock in the same unit: with
//! replicas, the database's clock is the one they share, and leases should
//! be computed from it.
//!
//! # Replicas (PostgreSQL)
//!
//! - Claims lock rows with `FOR UPDATE SKIP LOCKED`, so replicas claim from
//!   one queue without handing a task out twice and without waiting for
//!   each other.
//! - A commit that offers tasks notifies the channel [`READY_CHANNEL`];
//!   [`PgStore::listen`] receives those notifications (from every replica),
//!   so a replica with waiting agents can claim at once instead of polling.
//!   A lost listener connection is reported ([`Wakeup::Reconnected`]), since
//!   notifications sent meanwhile are gone; poll as a fallback.
//! - [`Store::try_lead`] is a leader lease with a fencing token, on the
//!   database's clock: the replica that holds it runs the periodic duties.
//!   Single-process stores always lead (token 1). [`PgStore::try_lead_named`]
//!   also records where the holder serves, and [`PgStore::leader`] tells the
//!   other replicas, so they can forward requests to it.
//! - Only the leader writes engine state, and its commits carry its lease
//!   token ([`Batch::fence`]): once another replica has taken the lease, a
//!   late commit of the old leader fails with [`StoreError::Fenced`] and
//!   writes nothing.
//! - A database that cannot be reached (restart, failover, network) is
//!   [`StoreError::is_unavailable`]; the pool tests each connection before
//!   handing it out, so the store recovers by itself once it is back.
//!
//! # Tables
//!
//! - `jobs (name, version, digest, source, created_at)`: every version of every
//!   job definition. Versions are dense per name; a new one is written only
//!   when the digest changes ([`Store::put_jobs`]).
//! - `runs (seq, id, job, version, status, priority, concurrency_key,
//!   idempotency_key, scheduled_at, created_at, started_at, finished_at,
//!   reason, params_json, state_json)`: one row per run. `seq` is assigned by
//!   the store, strictly increasing and never reused: it orders lists and
//!   backs the page cursors. `idempotency_key` is unique where present.
//! - `claimables (seq, run_id, task, phase, attempt, priority, tags, executor,
//!   spec_json, ready_at, agent, lease_until)`: the task attempts on offer to
//!   agents, keyed by [`TaskKey`]. `agent`/`lease_until` are both set while
//!   the row is claimed and both null while it is not. Rows belong to a run
//!   (deleted with it).
//! - `tokens (hash, role, name, created_at)`: API tokens by the hash of
//!   their secret.
//!
//! - `leader (name, holder, token, until, address)` (PostgreSQL only):
//!   leader leases, `until` on the database's clock, `address` where the
//!   holder serves.
//!
//! SQLite and PostgreSQL also keep sqlx's `_sqlx_migrations` table; the
//! schemas live in `crates/store/migrations/sqlite/` and
//! `crates/store/migrations/postgres/` and are applied by
//! [`SqliteStore::open`] and [`PgStore::connect`]. Both have the same tables
//! and columns; PostgreSQL stores tags as `text[]` instead of JSON text.
//!
//! # Invariants
//!
//! - **One transaction per call.** [`Store::commit`] applies all new runs,
//!   run updates, new claimables, removed claimables and claims of one
//!   engine tick together or not at all (one engine tick = one transaction,
//!   one fsync, including the runs submitted during the tick); so does
//!   [`Store::put_jobs`] for one upload. SQLite starts every write
//!   transaction with `BEGIN IMMEDIATE`, so it takes the write lock up front
//!   and waits for it (busy timeout) instead of failing on a read-to-write
//!   upgrade. PostgreSQL runs each in one `READ COMMITTED` transaction whose
//!   correctness rests on row locks and unique indexes, not on serialized
//!   writers.
//! - **One implementation per operation.** [`Store::insert_runs`] is
//!   [`Store::commit`] of a batch holding only those runs,
//!   [`Store::insert_run`] is [`Store::insert_runs`] of one run, and
//!   [`Store::claim`] is [`Store::commit`] of a batch holding only that
//!   request (provided methods). So a backend has one write path, with one
//!   insert step and one claim step, and an insert or a claim behaves the
//!   same alone or inside a tick.
//! - **A claimable is claimed by at most one agent at a time.** A claim only
//!   takes rows that are unclaimed at the moment of the write (guarded by
//!   `agent IS NULL` in the same statement), under the write lock (SQLite)
//!   or the row locks it takes (PostgreSQL). Claims end
//!   by [`Store::release`], by removal ([`Batch::done`]), or by re-offering
//!   the key with a new attempt number (see [`Batch::ready`]).
//! - **Exactly-once enqueue.** Two inserts with the same idempotency key
//!   create one run, whatever the interleaving, and whether they come in
//!   separate calls or in one call ([`Batch::new_runs`]).
//! - Nothing is half-written: an error rolls the whole call back.

mod error;
mod memory;
mod pg;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::{Result, StoreError};
pub use memory::MemoryStore;
pub use pg::{LEADER_NAME, Leader, PgStore, PgWakeups, READY_CHANNEL, Wakeup};
pub use sqlite::SqliteStore;

/// Matching claims to agents is the core's routing rule.
use ganger_core::routing::tags_match;

/// Run statuses after which a run never changes again; [`Store::unfinished`]
/// returns every run whose status is not one of these.
pub const TERMINAL_STATUSES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Largest page [`Store::list_runs`] returns; larger limits are clamped.
pub const MAX_PAGE: u32 = 1000;

/// A job definition to store: `source` is kept verbatim, `digest` decides
/// whether it is a new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDef {
    pub name: String,
    pub source: String,
    pub digest: String,
}

/// One stored version of a job definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobVersion {
    pub name: String,
    pub version: u32,
    pub digest: String,
    /// True only in the answer of [`Store::put_jobs`], for a version that
    /// call wrote; false for an unchanged definition and in every read.
    pub created: bool,
    pub created_at: i64,
}

/// A run to insert. `id` is chosen by the caller; the store assigns `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub id: String,
    pub job: String,
    pub version: u32,
    pub priority: i32,
    pub concurrency_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub scheduled_at: Option<i64>,
    pub created_at: i64,
    pub params_json: String,
    pub state_json: String,
}

/// The outcome of inserting one run ([`Batch::new_runs`],
/// [`Store::insert_runs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The run was written with this sequence number.
    Created { seq: i64 },
    /// A run with the same idempotency key exists; nothing was written.
    Existing { id: String },
}

/// A run as listed: everything but its parameters and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub id: String,
    pub seq: i64,
    pub job: String,
    pub version: u32,
    /// Starts as `"queued"`.
    pub status: String,
    pub priority: i32,
    pub concurrency_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub scheduled_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
}

/// A stored run: its summary, parameters and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    pub summary: RunSummary,
    pub params_json: String,
    pub state_json: String,
}

/// Filters of [`Store::list_runs`]; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub job: Option<String>,
    pub status: Option<String>,
}

/// One page of a list. Pass `next_cursor` back to get the next page; `None`
/// means this was the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// New values for a run's mutable columns. Every field replaces the stored
/// one (a `None` clears it): the engine owns the run and sends its whole view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunUpdate {
    pub id: String,
    pub status: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
    pub state_json: String,
}

/// Identifies one claimable: a task (by index in the run's DAG) in a phase
/// (the engine's name for e.g. the main body or the undo step).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub run_id: String,
    pub task: u32,
    pub phase: String,
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.run_id, self.task, self.phase)
    }
}

/// A task attempt on offer to agents. `attempt` is the fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimable {
    pub key: TaskKey,
    pub attempt: u32,
    pub priority: i32,
    /// Labels an agent needs: `k=v` needs label `k=v`; a bare `k` needs
    /// label `k` or any `k=…`.
    pub tags: Vec<String>,
    pub executor: String,
    pub spec_json: String,
    /// Not claimable before this time (retry delays, scheduled runs).
    pub ready_at: i64,
}

/// All changes of one engine tick, applied in one transaction by
/// [`Store::commit`], in this order: `new_runs`, then `runs`, then `ready`,
/// then `done`, then `claims`. Each part sees the effects of the parts before
/// it (a run created by `new_runs` can be updated and offered work in the
/// same batch; a claim can take a claimable offered in the same batch, not
/// one removed by it). Any error fails the whole batch: nothing is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Runs to insert with status `"queued"`, with the rules of
    /// [`Store::insert_runs`]: a run whose idempotency key is taken (by a
    /// stored run or an earlier run of this list) is not written and is
    /// answered [`Inserted::Existing`]; a taken or repeated run id is
    /// [`StoreError::DuplicateRun`] and an empty one [`StoreError::Invalid`].
    /// [`Store::commit`] answers one [`Inserted`] per run
    /// ([`Committed::inserted`]).
    pub new_runs: Vec<NewRun>,
    /// Runs to update; each must exist (stored, or created by `new_runs`).
    pub runs: Vec<RunUpdate>,
    /// Claimables to offer, inserted or replaced by key; their run must
    /// exist (stored, or created by `new_runs`). Replacing keeps the row's
    /// FIFO position. It keeps a current claim when the attempt is unchanged
    /// (an update of the same offer) and drops it when the attempt differs
    /// (a new offer, fenced by the new attempt number).
    pub ready: Vec<Claimable>,
    /// Claimables to remove (finished, cancelled); absent keys are ignored.
    pub done: Vec<TaskKey>,
    /// Claims to make, in order, each seeing the claims made by the ones
    /// before it (so two requests never get the same claimable). Same rules
    /// as [`Store::claim`]; [`Store::commit`] answers one list per request
    /// ([`Committed::claimed`]).
    pub claims: Vec<ClaimRequest>,
    /// The leader lease the writer must still hold (PostgreSQL): the
    /// commit first checks, in its transaction, that the lease's token is
    /// this one, and fails with [`StoreError::Fenced`], writing nothing,
    /// when another replica took the lease over. The check locks the lease
    /// row until the commit ends, so a takeover waits for a commit in flight
    /// instead of overtaking it. A batch that writes nothing and claims
    /// nothing is not checked. The memory and SQLite stores ignore it: they
    /// serve one server, which always leads.
    pub fence: Option<Fence>,
}

/// A leader lease and the fencing token its holder got from
/// [`Store::try_lead`] or [`PgStore::try_lead_named`] (see [`Batch::fence`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name ([`LEADER_NAME`] for [`Store::try_lead`]).
    pub name: String,
    pub token: u64,
}

impl Batch {
    /// True when the batch changes nothing and asks for nothing (whatever
    /// its fence).
    pub fn is_empty(&self) -> bool {
        self.new_runs.is_empty()
            && self.runs.is_empty()
            && self.ready.is_empty()
            && self.done.is_empty()
            && self.claims.is_empty()
    }
}

/// The answer of [`Store::commit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// One outcome per run of [`Batch::new_runs`], in order.
    pub inserted: Vec<Inserted>,
    /// One list per request of [`Batch::claims`], in order, each as
    /// [`Store::claim`] would answer.
    pub claimed: Vec<Vec<Claimed>>,
}

/// An agent asking for work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub agent: String,
    pub labels: Vec<String>,
    pub executors: Vec<String>,
    /// At most this many claimables are returned.
    pub max: u32,
    pub now: i64,
    pub lease_until: i64,
}

/// A claimable together with the claim on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub claimable: Claimable,
    pub agent: String,
    pub lease_until: i64,
}

/// An API token, stored by the hash of its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub hash: String,
    pub role: String,
    pub name: String,
    pub created_at: i64,
}

/// Persistence for the engine. Every method is one atomic operation: it
/// happens entirely or, on error, not at all.
///
/// The trait is object safe (`Arc<dyn Store>` is itself a `Store`), at the
/// cost of one boxed future per call.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores an upload of definitions atomically. Per definition, in order:
    /// when the latest version has the same digest it is returned unchanged
    /// (`created: false`), otherwise version latest+1 is written
    /// (`created: true`). A definition with an empty name or digest fails
    /// the whole call and nothing is stored.
    async fn put_jobs(&self, defs: Vec<JobDef>, now: i64) -> Result<Vec<JobVersion>>;

    /// One version of a job (`None`: the latest) with its source.
    async fn job(&self, name: &str, version: Option<u32>) -> Result<Option<(JobVersion, String)>>;

    /// The latest version of every job, by name.
    async fn jobs(&self) -> Result<Vec<JobVersion>>;

    /// Inserts runs with status `"queued"` in one transaction (group
    /// commit) and answers one [`Inserted`] per run, in order. Per run, in
    /// order: when a run with the same idempotency key exists (keys are
    /// global, not per job), including an earlier run of this call, nothing
    /// is written for it and that run's id is returned
    /// ([`Inserted::Existing`]); otherwise it is written
    /// ([`Inserted::Created`]). A run id that is taken (without such a key),
    /// by a stored run or an earlier run of this call, is
    /// [`StoreError::DuplicateRun`] and an empty id is
    /// [`StoreError::Invalid`]; either fails the whole call and nothing is
    /// written. An empty list writes nothing. The same as [`Store::commit`]
    /// of a batch holding only these runs ([`Batch::new_runs`]).
    async fn insert_runs(&self, runs: Vec<NewRun>) -> Result<Vec<Inserted>> {
        let count = runs.len();
        let batch = Batch {
            new_runs: runs,
            ..Batch::default()
        };
        counted("insert runs", count, self.commit(batch).await?.inserted)
    }

    /// [`Store::insert_runs`] of one run.
    async fn insert_run(&self, run: NewRun) -> Result<Inserted> {
        single("insert run", self.insert_runs(vec![run]).await?)
    }

    /// The id of the run with this idempotency key, if any. A read: it lets
    /// a repeated submission be answered without a write transaction.
    async fn run_for_key(&self, idempotency_key: &str) -> Result<Option<String>>;

    async fn run(&self, id: &str) -> Result<Option<RunRow>>;

    /// Runs whose status is not terminal ([`TERMINAL_STATUSES`]), oldest
    /// first: what recovery reloads.
    async fn unfinished(&self) -> Result<Vec<RunRow>>;

    /// Runs newest first, `limit` per page (clamped to 1..=[`MAX_PAGE`]).
    /// Pages are stable under concurrent inserts: a cursor continues after
    /// the last run it returned, whatever was inserted since.
    async fn list_runs(
        &self,
        filter: RunFilter,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<Page<RunSummary>>;

    /// Applies one batch in one transaction (see [`Batch`]) and returns
    /// what it inserted and claimed: one [`Inserted`] per run of
    /// [`Batch::new_runs`] and one list per request of [`Batch::claims`],
    /// in order ([`Committed`]). On error nothing is written.
    async fn commit(&self, batch: Batch) -> Result<Committed>;

    /// Claims up to `max` unclaimed claimables with `ready_at <= now`, whose
    /// executor is in `executors` and whose every tag the labels satisfy,
    /// highest priority first, then in order of first offer. Returned in
    /// that order. The same as [`Store::commit`] of a batch holding only
    /// this request.
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let batch = Batch {
            claims: vec![req],
            ..Batch::default()
        };
        single("claim", self.commit(batch).await?.claimed)
    }

    /// Every claim the agent holds, in claim order (highest priority first,
    /// then in order of first offer), expired leases included: what a
    /// restarted engine uses to find its own agent's claims and count the
    /// slots in use.
    async fn claims_of(&self, agent: &str) -> Result<Vec<Claimed>>;

    /// Sets the lease of every claim the agent holds to `lease_until`, never
    /// shortening one (a late, reordered heartbeat must not cut a lease).
    /// Returns how many claims the agent holds.
    async fn renew(&self, agent: &str, lease_until: i64) -> Result<u64>;

    /// Claims whose lease ended before `now`, by lease end.
    async fn expired(&self, now: i64) -> Result<Vec<Claimed>>;

    /// Drops the claim on a claimable, offering it again. An unknown key is
    /// [`StoreError::ClaimableNotFound`].
    async fn release(&self, key: &TaskKey) -> Result<()>;

    /// Stores a new token; an existing hash is [`StoreError::DuplicateToken`]
    /// (never silently changes a token's role).
    async fn put_token(&self, token: TokenRow) -> Result<()>;

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>>;

    /// The current time on the store's clock, in unix milliseconds like
    /// every time of this trait. With several replicas on one database, the
    /// database's clock is the one they share: deriving `now` and
    /// `lease_until` of claims and the `now` of [`Store::expired`] from it
    /// keeps leases consistent whatever the replicas' own clocks say. The
    /// provided implementation reads the local clock (single-process
    /// stores: the process's clock is the only one).
    async fn db_now(&self) -> Result<i64> {
        Ok(local_now_ms())
    }

    /// Takes or renews the leader lease for `holder`, valid for `ttl` on
    /// the store's clock, and answers its fencing token, or `None` when
    /// another holder's lease is still valid. The lease is taken when it is
    /// free or expired and renewed when `holder` holds it; the token grows
    /// whenever the holder changes, never otherwise. The leader runs the
    /// periodic duties (cron, timeouts, lease reaping); it must renew well
    /// within `ttl` and stop acting as leader once a renewal fails or `ttl`
    /// has passed since its last success. The provided implementation is
    /// for single-process stores: the one process always leads, token 1.
    async fn try_lead(&self, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        let _ = (holder, ttl);
        Ok(Some(1))
    }
}

/// The local clock in unix milliseconds (negative before 1970, saturating).
pub fn local_now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

// Forwarding impls, so `Arc<dyn Store>`, `Arc<SqliteStore>` and `Box<dyn
// Store>` can be passed wherever an `S: Store` is expected. The provided
// methods are forwarded too, so a pointer behaves exactly like its target
// even if the target overrides them.
macro_rules! forward_store {
    ($ptr:ident) => {
        #[async_trait::async_trait]
        impl<S: Store + ?Sized> Store for $ptr<S> {
            async fn put_jobs(&self, defs: Vec<JobDef>, now: i64) -> Result<Vec<JobVersion>> {
                (**self).put_jobs(defs, now).await
            }
            async fn job(
                &self,
                name: &str,
                version: Option<u32>,
            ) -> Result<Option<(JobVersion, String)>> {
                (**self).job(name, version).await
            }
            async fn jobs(&self) -> Result<Vec<JobVersion>> {
                (**self).jobs().await
            }
            async fn insert_runs(&self, runs: Vec<NewRun>) -> Result<Vec<Inserted>> {
                (**self).insert_runs(runs).await
            }
            async fn insert_run(&self, run: NewRun) -> Result<Inserted> {
                (**self).insert_run(run).await
            }
            async fn run_for_key(&self, idempotency_key: &str) -> Result<Option<String>> {
                (**self).run_for_key(idempotency_key).await
            }
            async fn run(&self, id: &str) -> Result<Option<RunRow>> {
                (**self).run(id).await
            }
            async fn unfinished(&self) -> Result<Vec<RunRow>> {
                (**self).unfinished().await
            }
            async fn list_runs(
                &self,
                filter: RunFilter,
                cursor: Option<String>,
                limit: u32,
            ) -> Result<Page<RunSummary>> {
                (**self).list_runs(filter, cursor, limit).await
            }
            async fn commit(&self, batch: Batch) -> Result<Committed> {
                (**self).commit(batch).await
            }
            async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
                (**self).claim(req).await
            }
            async fn claims_of(&self, agent: &str) -> Result<Vec<Claimed>> {
                (**self).claims_of(agent).await
            }
            async fn renew(&self, agent: &str, lease_until: i64) -> Result<u64> {
                (**self).renew(agent, lease_until).await
            }
            async fn expired(&self, now: i64) -> Result<Vec<Claimed>> {
                (**self).expired(now).await
            }
            async fn release(&self, key: &TaskKey) -> Result<()> {
                (**self).release(key).await
            }
            async fn put_token(&self, token: TokenRow) -> Result<()> {
                (**self).put_token(token).await
            }
            async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
                (**self).token(hash).await
            }
            async fn db_now(&self) -> Result<i64> {
                (**self).db_now().await
            }
            async fn try_lead(&self, holder: &str, ttl: Duration) -> Result<Option<u64>> {
                (**self).try_lead(holder, ttl).await
            }
        }
    };
}
forward_store!(Arc);
forward_store!(Box);

/// The one answer of a provided method that wraps a batch method around a
/// single input; any other count is a backend bug.
fn single<T>(op: &'static str, mut answers: Vec<T>) -> Result<T> {
    match (answers.pop(), answers.is_empty()) {
        (Some(answer), true) => Ok(answer),
        (answer, _) => Err(StoreError::Internal {
            op,
            detail: format!(
                "{} answers for one input",
                answers.len() + usize::from(answer.is_some())
            ),
        }),
    }
}

/// The answers of a provided method that wraps a batch method around
/// `inputs` inputs, one per input; any other count is a backend bug.
fn counted<T>(op: &'static str, inputs: usize, answers: Vec<T>) -> Result<Vec<T>> {
    if answers.len() == inputs {
        return Ok(answers);
    }
    Err(StoreError::Internal {
        op,
        detail: format!("{} answers for {inputs} inputs", answers.len()),
    })
}

// Cursors are opaque to clients; the prefix versions the format so it can
// change without misreading old cursors.
const CURSOR_PREFIX: &str = "r1.";

fn encode_cursor(seq: i64) -> String {
    format!("{CURSOR_PREFIX}{seq}")
}

fn decode_cursor(cursor: &str) -> Result<i64> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|seq| *seq > 0)
        .ok_or_else(|| StoreError::InvalidCursor {
            cursor: cursor.to_owned(),
        })
}

fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

fn is_terminal(status: &str) -> bool {
    TERMINAL_STATUSES.contains(&status)
}

/// Checks shared by all backends, so they reject the same inputs. Backends
/// call them at the point of writing (not up front), so a rejected input
/// late in a batch exercises the rollback of earlier writes.
fn check_job_def(index: usize, def: &JobDef) -> Result<()> {
    let reason = if def.name.is_empty() {
        "the name is empty"
    } else if def.digest.is_empty() {
        "the digest is empty"
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid {
        what: format!("job definition #{} ({:?})", index + 1, def.name),
        reason: reason.into(),
    })
}

fn check_new_run(run: &NewRun) -> Result<()> {
    if run.id.is_empty() {
        return Err(StoreError::Invalid {
            what: format!("new run of job {:?}", run.job),
            reason: "the run id is empty".into(),
        });
    }
    Ok(())
}

fn check_token(token: &TokenRow) -> Result<()> {
    if token.hash.is_empty() {
        return Err(StoreError::Invalid {
            what: format!("token {:?}", token.name),
            reason: "the hash is empty".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(42));
        for bad in ["", "42", "r1.", "r1.x", "r1.-3", "r1.0"] {
            assert!(matches!(
                decode_cursor(bad),
                Err(StoreError::InvalidCursor { .. })
            ));
        }
    }
}

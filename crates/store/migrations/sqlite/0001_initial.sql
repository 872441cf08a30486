-- ganger store, SQLite schema v1.
--
-- Times are unix milliseconds (INTEGER). States, specs and parameters are
-- opaque JSON text owned by the engine; only what the store must query is a
-- typed column. STRICT tables make SQLite reject a value of the wrong type
-- instead of silently storing it.

-- Job definitions, one row per version. Version numbers are dense per name
-- (1, 2, 3, ...): a new version is written only when the digest changes.
CREATE TABLE jobs (
    name       TEXT    NOT NULL CHECK (name <> ''),
    version    INTEGER NOT NULL CHECK (version >= 1),
    digest     TEXT    NOT NULL CHECK (digest <> ''),
    source     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT, WITHOUT ROWID;

-- Runs. `seq` is the rowid: AUTOINCREMENT so a seq is never reused, even after
-- deletions, which keeps "newest first" and list cursors stable.
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE CHECK (id <> ''),
    job             TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    concurrency_key TEXT,
    idempotency_key TEXT,
    scheduled_at    INTEGER,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    reason          TEXT,
    params_json     TEXT    NOT NULL,
    state_json      TEXT    NOT NULL
) STRICT;

-- Exactly-once enqueue: a second insert with the same key conflicts here,
-- whichever connection or process attempts it.
CREATE UNIQUE INDEX runs_idempotency ON runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- List filters. The rowid (seq) is implicitly the last column of every index,
-- so `WHERE job = ? ORDER BY seq DESC` walks this index backwards, unsorted-free.
CREATE INDEX runs_job ON runs (job);
CREATE INDEX runs_status ON runs (status);
-- Recovery reads the unfinished runs at every start; a partial index keeps that
-- proportional to the live runs, not to history. The WHERE clause must stay
-- textually identical to the one in `unfinished()` for the planner to use it.
CREATE INDEX runs_unfinished ON runs (seq)
    WHERE status NOT IN ('succeeded', 'failed', 'cancelled');

-- Claimables: task attempts offered to agents. A row is unclaimed while
-- `agent` IS NULL; claimed rows carry the agent and its lease. `seq` gives FIFO
-- order within a priority and is kept when the row is upserted again.
CREATE TABLE claimables (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task        INTEGER NOT NULL,
    phase       TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    priority    INTEGER NOT NULL,
    tags        TEXT    NOT NULL,  -- JSON array of strings, matched in Rust
    executor    TEXT    NOT NULL,
    spec_json   TEXT    NOT NULL,
    ready_at    INTEGER NOT NULL,
    agent       TEXT,
    lease_until INTEGER,
    -- A claim is both fields or neither.
    CHECK ((agent IS NULL) = (lease_until IS NULL)),
    UNIQUE (run_id, task, phase)
) STRICT;

-- Claim order over unclaimed rows only: priority first, then FIFO. ready_at
-- and executor ride along so the filter is answered from the index; they
-- cannot lead, because a range on ready_at would force a sort by priority.
CREATE INDEX claimables_claim ON claimables (priority DESC, seq, ready_at, executor)
    WHERE agent IS NULL;
-- Leases: renew by agent, reap by expiry.
CREATE INDEX claimables_agent ON claimables (agent) WHERE agent IS NOT NULL;
CREATE INDEX claimables_lease ON claimables (lease_until) WHERE agent IS NOT NULL;

-- API tokens, looked up by the hash of the secret (the secret is never stored).
CREATE TABLE tokens (
    hash       TEXT    PRIMARY KEY CHECK (hash <> ''),
    role       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

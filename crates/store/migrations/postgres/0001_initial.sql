-- ganger store, PostgreSQL schema v1. Same tables and meaning as the SQLite
-- schema (migrations/sqlite/0001_initial.sql), plus `leader`.
--
-- Times the engine passes are unix milliseconds (bigint). States, specs and
-- parameters are opaque JSON text owned by the engine (text, not jsonb: the
-- store returns them byte for byte); only what the store must query is a
-- typed column. Numbers the API holds as u32 (versions, task indexes,
-- attempts) are bigint, so every u32 fits.

-- Job definitions, one row per version. Version numbers are dense per name;
-- writers of one name are serialized by an advisory lock (see put_jobs).
CREATE TABLE jobs (
    name       text   NOT NULL CHECK (name <> ''),
    version    bigint NOT NULL CHECK (version >= 1),
    digest     text   NOT NULL CHECK (digest <> ''),
    source     text   NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (name, version)
);

-- Runs. `seq` comes from an identity sequence: never reused, even after a
-- rollback or a deletion, which keeps "newest first" and list cursors stable.
CREATE TABLE runs (
    seq             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text    NOT NULL UNIQUE CHECK (id <> ''),
    job             text    NOT NULL,
    version         bigint  NOT NULL,
    status          text    NOT NULL,
    priority        integer NOT NULL,
    concurrency_key text,
    idempotency_key text,
    scheduled_at    bigint,
    created_at      bigint  NOT NULL,
    started_at      bigint,
    finished_at     bigint,
    reason          text,
    params_json     text    NOT NULL,
    state_json      text    NOT NULL
);

-- Exactly-once enqueue: a second insert with the same key conflicts here,
-- whichever transaction or replica attempts it (ON CONFLICT ... DO NOTHING
-- waits for the first to commit or roll back).
CREATE UNIQUE INDEX runs_idempotency ON runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- List filters, walked backwards by seq without a sort.
CREATE INDEX runs_job ON runs (job, seq);
CREATE INDEX runs_status ON runs (status, seq);
-- Recovery reads the unfinished runs at every start; the WHERE clause must
-- stay identical to the one in `unfinished()` for the planner to use it.
CREATE INDEX runs_unfinished ON runs (seq)
    WHERE status NOT IN ('succeeded', 'failed', 'cancelled');

-- Claimables: task attempts offered to agents. A row is unclaimed while
-- `agent` IS NULL; claimed rows carry the agent and its lease. `seq` gives
-- FIFO order within a priority and is kept when the row is upserted again.
-- A queue table: rows are updated and deleted all the time, so autovacuum
-- visits it after 2% of its rows changed instead of the default 20%.
CREATE TABLE claimables (
    seq         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task        bigint  NOT NULL,
    phase       text    NOT NULL,
    attempt     bigint  NOT NULL,
    priority    integer NOT NULL,
    tags        text[]  NOT NULL,  -- matched in the claim statement, as core::routing
    executor    text    NOT NULL,
    spec_json   text    NOT NULL,
    ready_at    bigint  NOT NULL,
    agent       text,
    lease_until bigint,
    -- A claim is both fields or neither.
    CHECK ((agent IS NULL) = (lease_until IS NULL)),
    UNIQUE (run_id, task, phase)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Claim order over unclaimed rows only: priority first, then FIFO, so the
-- claim statement reads the first rows of this index and stops (no sort).
-- ready_at and executor are key columns so their conditions are checked in
-- the index, before a row is fetched or locked; they cannot lead, because a
-- range on ready_at would force a sort by priority.
CREATE INDEX claimables_claim ON claimables (priority DESC, seq, ready_at, executor)
    WHERE agent IS NULL;
-- Leases: renew by agent, reap by expiry.
CREATE INDEX claimables_agent ON claimables (agent) WHERE agent IS NOT NULL;
CREATE INDEX claimables_lease ON claimables (lease_until) WHERE agent IS NOT NULL;

-- API tokens, looked up by the hash of the secret (the secret is never stored).
CREATE TABLE tokens (
    hash       text   PRIMARY KEY CHECK (hash <> ''),
    role       text   NOT NULL,
    name       text   NOT NULL,
    created_at bigint NOT NULL
);

-- Leader leases for the periodic duties of replicas (cron, timeouts, lease
-- reaping). Times are the database's clock (now()), not the callers': the
-- replicas' clocks may disagree. `token` grows by one whenever the holder
-- changes: a fencing token for whatever the leader writes.
CREATE TABLE leader (
    name   text        PRIMARY KEY,
    holder text        NOT NULL CHECK (holder <> ''),
    token  bigint      NOT NULL CHECK (token >= 1),
    until  timestamptz NOT NULL
);

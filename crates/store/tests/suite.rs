//! One behavioural suite, run against every backend: the memory store, the
//! SQLite store (on a temporary file), the PostgreSQL store (a fresh
//! database per test; see `support/pgdb.rs` for how the server is found and
//! when these tests skip), and the memory store behind `Arc<dyn Store>`
//! (object safety and forwarding). Backend-specific checks (durability
//! across reopen, two processes' worth of pools on one file, notifications,
//! the leader lease and its address, fenced commits, recovery from dropped
//! connections) follow at the end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganger_store::{
    Batch, ClaimRequest, Claimable, Claimed, Committed, Fence, Inserted, JobDef, LEADER_NAME,
    Leader, MemoryStore, NewRun, PgStore, RunFilter, RunUpdate, SqliteStore, Store, StoreError,
    TaskKey, TokenRow,
};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

#[path = "support/pgdb.rs"]
mod pgdb;
use pgdb::TestDb;

// ---------------------------------------------------------------- fixtures

// Each returns the store and what must live as long as it, or `None` when
// the backend is not available here (the test then passes without running).

async fn make_memory() -> Option<(MemoryStore, ())> {
    Some((MemoryStore::new(), ()))
}

async fn make_sqlite() -> Option<(SqliteStore, TempDir)> {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SqliteStore::open(dir.path().join("ganger.db"))
        .await
        .expect("open the SQLite store");
    Some((store, dir))
}

/// Pool size of the PostgreSQL stores under test: enough for the 8
/// concurrent claimers to contend for real.
const PG_POOL: u32 = 8;

async fn make_postgres() -> Option<(PgStore, TestDb)> {
    let db = TestDb::create().await?;
    let store = PgStore::connect(&db.url, PG_POOL)
        .await
        .expect("connect to the PostgreSQL test database");
    Some((store, db))
}

async fn make_dyn_memory() -> Option<(Arc<dyn Store>, ())> {
    Some((Arc::new(MemoryStore::new()), ()))
}

macro_rules! suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;
            suite!(@cases $make;
                put_jobs_versioning,
                put_jobs_is_atomic,
                insert_run_is_idempotent,
                insert_runs_groups_new_and_existing_keys,
                failing_insert_runs_writes_nothing,
                run_for_key_finds_the_keyed_run,
                concurrent_inserts_with_one_key_create_one_run,
                runs_round_trip_and_unfinished,
                list_pages_with_cursors_across_inserts,
                list_filters,
                commit_applies_everything_or_nothing,
                commit_claims_see_the_rest_of_the_batch,
                commit_new_runs_are_seen_by_the_rest_of_the_batch,
                failing_commit_with_new_runs_writes_nothing,
                commit_new_runs_repeat_a_key_within_the_batch,
                claims_of_lists_an_agents_claims,
                claim_order_is_priority_then_fifo,
                claim_matches_tags_executors_and_time,
                concurrent_claimers_never_share_a_task,
                eight_claimers_claim_each_of_2000_tasks_once,
                leases_renew_expire_release,
                reoffer_keeps_or_drops_the_claim_by_attempt,
                tokens,
                clock_and_leader,
            );
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((store, _guard)) = $make().await else {
                    return;
                };
                super::cases::$case(Arc::new(store)).await;
            }
        )*
    };
}

suite!(memory, make_memory);
suite!(sqlite, make_sqlite);
suite!(postgres, make_postgres);
suite!(dyn_memory, make_dyn_memory);

// ----------------------------------------------------------------- helpers

fn def(name: &str, digest: &str) -> JobDef {
    JobDef {
        name: name.into(),
        source: format!("source of {name} at {digest}"),
        digest: digest.into(),
    }
}

fn new_run(id: &str, job: &str) -> NewRun {
    NewRun {
        id: id.into(),
        job: job.into(),
        version: 1,
        priority: 0,
        concurrency_key: None,
        idempotency_key: None,
        scheduled_at: None,
        created_at: 1_000,
        params_json: r#"{"p":1}"#.into(),
        state_json: r#"{"s":0}"#.into(),
    }
}

fn key(run: &str, task: u32) -> TaskKey {
    TaskKey {
        run_id: run.into(),
        task,
        phase: "main".into(),
    }
}

fn offer(run: &str, task: u32, priority: i32) -> Claimable {
    Claimable {
        key: key(run, task),
        attempt: 1,
        priority,
        tags: Vec::new(),
        executor: "process".into(),
        spec_json: format!(r#"{{"task":{task}}}"#),
        ready_at: 0,
    }
}

fn update(id: &str, status: &str) -> RunUpdate {
    RunUpdate {
        id: id.into(),
        status: status.into(),
        started_at: Some(2_000),
        finished_at: None,
        reason: None,
        state_json: format!(r#"{{"s":"{status}"}}"#),
    }
}

fn request(agent: &str, max: u32) -> ClaimRequest {
    ClaimRequest {
        agent: agent.into(),
        labels: Vec::new(),
        executors: vec!["process".into()],
        max,
        now: 10,
        lease_until: 100,
    }
}

fn tasks(claimed: &[Claimed]) -> Vec<u32> {
    claimed.iter().map(|c| c.claimable.key.task).collect()
}

async fn created(store: &impl Store, run: NewRun) -> i64 {
    match store.insert_run(run).await.expect("insert run") {
        Inserted::Created { seq } => seq,
        other => panic!("expected a new run, got {other:?}"),
    }
}

// ------------------------------------------------------------------- cases

mod cases {
    use super::*;

    pub async fn put_jobs_versioning<S: Store>(s: Arc<S>) {
        let v = s
            .put_jobs(vec![def("b", "d1"), def("a", "d1")], 10)
            .await
            .expect("first upload");
        assert_eq!(
            v.iter()
                .map(|j| (j.name.as_str(), j.version, j.created))
                .collect::<Vec<_>>(),
            [("b", 1, true), ("a", 1, true)]
        );

        let v = s
            .put_jobs(vec![def("a", "d1"), def("b", "d2")], 20)
            .await
            .expect("second upload");
        assert_eq!(
            (v[0].version, v[0].created, v[0].created_at),
            (1, false, 10)
        );
        assert_eq!((v[1].version, v[1].created, v[1].created_at), (2, true, 20));

        // The same name twice in one upload: each change is a version.
        let v = s
            .put_jobs(vec![def("c", "x"), def("c", "y"), def("c", "y")], 30)
            .await
            .expect("third upload");
        assert_eq!(
            v.iter().map(|j| (j.version, j.created)).collect::<Vec<_>>(),
            [(1, true), (2, true), (2, false)]
        );

        let (latest, source) = s.job("b", None).await.expect("get b").expect("b exists");
        assert_eq!((latest.version, latest.digest.as_str()), (2, "d2"));
        assert_eq!(source, "source of b at d2");
        assert!(!latest.created, "reads never say created");
        let (first, source) = s.job("b", Some(1)).await.expect("get b v1").expect("b v1");
        assert_eq!((first.version, source.as_str()), (1, "source of b at d1"));
        assert!(s.job("b", Some(3)).await.expect("get b v3").is_none());
        assert!(s.job("b", Some(0)).await.expect("get b v0").is_none());
        assert!(s.job("nope", None).await.expect("get nope").is_none());

        let all = s.jobs().await.expect("list jobs");
        assert_eq!(
            all.iter()
                .map(|j| (j.name.as_str(), j.version))
                .collect::<Vec<_>>(),
            [("a", 1), ("b", 2), ("c", 2)]
        );
    }

    /// The store rejects a definition with an empty name (or digest); the
    /// failing definition comes after valid ones, which must not be stored.
    pub async fn put_jobs_is_atomic<S: Store>(s: Arc<S>) {
        s.put_jobs(vec![def("x", "d1")], 10).await.expect("seed");
        let err = s
            .put_jobs(vec![def("x", "d2"), def("y", "d1"), def("", "d3")], 20)
            .await
            .expect_err("an empty name must be refused");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("job definition #3"), "{err}");
        let err = s
            .put_jobs(vec![def("y", "d1"), def("z", "")], 20)
            .await
            .expect_err("an empty digest must be refused");
        assert!(err.to_string().contains("digest"), "{err}");

        let (x, _) = s.job("x", None).await.expect("get x").expect("x exists");
        assert_eq!((x.version, x.digest.as_str()), (1, "d1"));
        assert!(s.job("y", None).await.expect("get y").is_none());
        assert_eq!(s.jobs().await.expect("list").len(), 1);
    }

    pub async fn insert_run_is_idempotent<S: Store>(s: Arc<S>) {
        let keyed = |id: &str, k: &str| NewRun {
            idempotency_key: Some(k.into()),
            ..new_run(id, "build")
        };
        let seq1 = created(&*s, keyed("r1", "k1")).await;
        assert_eq!(
            s.insert_run(keyed("r2", "k1")).await.expect("repeat"),
            Inserted::Existing { id: "r1".into() }
        );
        assert!(
            s.run("r2").await.expect("get r2").is_none(),
            "nothing written"
        );
        let seq3 = created(&*s, keyed("r3", "k2")).await;
        let seq4 = created(&*s, new_run("r4", "build")).await;
        let seq5 = created(&*s, new_run("r5", "build")).await;
        assert!(seq1 < seq3 && seq3 < seq4 && seq4 < seq5);

        let err = s
            .insert_run(new_run("r4", "build"))
            .await
            .expect_err("a duplicate id must be refused");
        assert!(
            matches!(err, StoreError::DuplicateRun { ref id } if id == "r4"),
            "{err:?}"
        );
        let err = s
            .insert_run(new_run("", "build"))
            .await
            .expect_err("an empty id must be refused");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 4);
    }

    /// One call, one transaction: new keys, stored keys, a key repeated
    /// within the call and runs without keys, answered in order.
    pub async fn insert_runs_groups_new_and_existing_keys<S: Store>(s: Arc<S>) {
        let keyed = |id: &str, k: &str| NewRun {
            idempotency_key: Some(k.into()),
            ..new_run(id, "build")
        };
        let seq0 = created(&*s, keyed("r0", "k0")).await;
        assert!(s.insert_runs(Vec::new()).await.expect("nothing").is_empty());

        let out = s
            .insert_runs(vec![
                keyed("r1", "k1"),
                keyed("r2", "k0"), // stored key
                new_run("r3", "build"),
                keyed("r4", "k1"), // key of r1, earlier in this call
                keyed("r1", "k0"), // stored key wins over the taken id
                keyed("r5", "k5"),
            ])
            .await
            .expect("insert runs");
        let seq = |i: usize| match out[i] {
            Inserted::Created { seq } => seq,
            ref other => panic!("run #{i}: expected a new run, got {other:?}"),
        };
        assert_eq!(out.len(), 6);
        assert_eq!(out[1], Inserted::Existing { id: "r0".into() });
        assert_eq!(out[3], Inserted::Existing { id: "r1".into() });
        assert_eq!(out[4], Inserted::Existing { id: "r0".into() });
        assert!(seq0 < seq(0) && seq(0) < seq(2) && seq(2) < seq(5));

        for (id, present) in [("r1", true), ("r2", false), ("r3", true), ("r4", false)] {
            assert_eq!(s.run(id).await.expect("get").is_some(), present, "{id}");
        }
        let r1 = s.run("r1").await.expect("get").expect("r1");
        assert_eq!(
            (
                r1.summary.seq,
                r1.summary.status.as_str(),
                r1.summary.idempotency_key.as_deref()
            ),
            (seq(0), "queued", Some("k1"))
        );
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 4);
        // The keys stay taken for later calls.
        assert_eq!(
            s.insert_run(keyed("r6", "k5")).await.expect("repeat"),
            Inserted::Existing { id: "r5".into() }
        );
    }

    /// A bad run anywhere in the call (a taken id, stored or earlier in the
    /// call; an empty id) fails it whole: not even its keys are taken.
    pub async fn failing_insert_runs_writes_nothing<S: Store>(s: Arc<S>) {
        let keyed = |id: &str, k: &str| NewRun {
            idempotency_key: Some(k.into()),
            ..new_run(id, "build")
        };
        let seq0 = created(&*s, new_run("r0", "build")).await;
        let bad_calls = [
            (
                vec![
                    keyed("a", "ka"),
                    new_run("b", "build"),
                    new_run("r0", "build"),
                ],
                "r0",
            ),
            (
                vec![
                    keyed("a", "ka"),
                    new_run("b", "build"),
                    new_run("a", "build"),
                ],
                "a",
            ),
        ];
        for (runs, dup) in bad_calls {
            let err = s.insert_runs(runs).await.expect_err("a taken id");
            assert!(
                matches!(err, StoreError::DuplicateRun { ref id } if id == dup),
                "{err:?}"
            );
        }
        let err = s
            .insert_runs(vec![keyed("a", "ka"), new_run("", "build")])
            .await
            .expect_err("an empty id");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");

        assert!(s.run("a").await.expect("get a").is_none());
        assert!(s.run("b").await.expect("get b").is_none());
        assert_eq!(s.run_for_key("ka").await.expect("key"), None);
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 1);
        // The same runs, minus the bad one, go in afterwards.
        let out = s
            .insert_runs(vec![keyed("a", "ka"), new_run("b", "build")])
            .await
            .expect("insert");
        assert!(
            matches!(out[..], [Inserted::Created { seq: a }, Inserted::Created { seq: b }] if seq0 < a && a < b),
            "{out:?}"
        );
    }

    pub async fn run_for_key_finds_the_keyed_run<S: Store>(s: Arc<S>) {
        assert_eq!(s.run_for_key("k").await.expect("empty store"), None);
        created(
            &*s,
            NewRun {
                idempotency_key: Some("k".into()),
                ..new_run("r1", "build")
            },
        )
        .await;
        created(&*s, new_run("r2", "build")).await;
        assert_eq!(
            s.run_for_key("k").await.expect("keyed"),
            Some("r1".to_string())
        );
        assert_eq!(s.run_for_key("r1").await.expect("an id is no key"), None);
        assert_eq!(s.run_for_key("").await.expect("empty key"), None);
        // Still the first run's after a repeated submission, and after the
        // run finished.
        s.insert_run(NewRun {
            idempotency_key: Some("k".into()),
            ..new_run("r3", "build")
        })
        .await
        .expect("repeat");
        s.commit(Batch {
            runs: vec![update("r1", "succeeded")],
            ..Batch::default()
        })
        .await
        .expect("finish");
        assert_eq!(
            s.run_for_key("k").await.expect("keyed"),
            Some("r1".to_string())
        );
    }

    pub async fn concurrent_inserts_with_one_key_create_one_run<S: Store + 'static>(s: Arc<S>) {
        const N: usize = 16;
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut handles = Vec::new();
        for i in 0..N {
            let s = s.clone();
            let barrier = barrier.clone();
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let run = NewRun {
                    idempotency_key: Some("same".into()),
                    ..new_run(&format!("run-{i}"), "build")
                };
                (format!("run-{i}"), s.insert_run(run).await.expect("insert"))
            }));
        }
        let mut winners = Vec::new();
        let mut existing = Vec::new();
        for h in handles {
            match h.await.expect("join inserter") {
                (id, Inserted::Created { .. }) => winners.push(id),
                (_, Inserted::Existing { id }) => existing.push(id),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one insert creates the run");
        assert!(existing.iter().all(|id| *id == winners[0]));
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 1);
    }

    pub async fn runs_round_trip_and_unfinished<S: Store>(s: Arc<S>) {
        let full = NewRun {
            priority: -3,
            concurrency_key: Some("main".into()),
            idempotency_key: Some("k".into()),
            scheduled_at: Some(5_000),
            version: 7,
            ..new_run("a", "deploy")
        };
        let seq = created(&*s, full.clone()).await;
        for id in ["b", "c", "d"] {
            created(&*s, new_run(id, "build")).await;
        }
        let row = s.run("a").await.expect("get a").expect("a exists");
        assert_eq!(row.summary.seq, seq);
        assert_eq!(
            (
                row.summary.job.as_str(),
                row.summary.version,
                row.summary.status.as_str(),
                row.summary.priority
            ),
            ("deploy", 7, "queued", -3)
        );
        assert_eq!(row.summary.concurrency_key.as_deref(), Some("main"));
        assert_eq!(row.summary.idempotency_key.as_deref(), Some("k"));
        assert_eq!(
            (row.summary.scheduled_at, row.summary.created_at),
            (Some(5_000), 1_000)
        );
        assert_eq!(
            (
                row.summary.started_at,
                row.summary.finished_at,
                row.summary.reason
            ),
            (None, None, None)
        );
        assert_eq!(
            (row.params_json.as_str(), row.state_json.as_str()),
            (r#"{"p":1}"#, r#"{"s":0}"#)
        );
        assert!(s.run("zz").await.expect("get zz").is_none());

        let finished = |id: &str, status: &str| RunUpdate {
            finished_at: Some(3_000),
            reason: Some("why".into()),
            ..update(id, status)
        };
        s.commit(Batch {
            runs: vec![
                finished("a", "succeeded"),
                finished("b", "failed"),
                finished("c", "cancelled"),
                update("d", "running"),
            ],
            ..Batch::default()
        })
        .await
        .expect("commit");
        let c = s.run("c").await.expect("get c").expect("c exists");
        assert_eq!(
            (
                c.summary.status.as_str(),
                c.summary.started_at,
                c.summary.finished_at,
                c.summary.reason.as_deref()
            ),
            ("cancelled", Some(2_000), Some(3_000), Some("why"))
        );
        assert_eq!(c.state_json, r#"{"s":"cancelled"}"#);
        created(&*s, new_run("e", "build")).await;
        let open: Vec<_> = s
            .unfinished()
            .await
            .expect("unfinished")
            .into_iter()
            .map(|r| (r.summary.id, r.summary.status))
            .collect();
        assert_eq!(
            open,
            [
                ("d".to_string(), "running".to_string()),
                ("e".into(), "queued".into())
            ]
        );
    }

    pub async fn list_pages_with_cursors_across_inserts<S: Store>(s: Arc<S>) {
        for i in 0..25 {
            created(&*s, new_run(&format!("r{i:02}"), "build")).await;
        }
        let first = s
            .list_runs(RunFilter::default(), None, 10)
            .await
            .expect("page 1");
        assert_eq!(first.items.len(), 10);
        assert_eq!(first.items[0].id, "r24", "newest first");
        let mut seen: Vec<String> = first.items.iter().map(|r| r.id.clone()).collect();
        let mut cursor = first.next_cursor.clone();

        // New runs arrive between pages: they must neither shift nor repeat
        // the pages still to come.
        for i in 25..30 {
            created(&*s, new_run(&format!("r{i:02}"), "build")).await;
        }
        let mut pages = 1;
        while let Some(c) = cursor {
            let page = s
                .list_runs(RunFilter::default(), Some(c), 10)
                .await
                .expect("next page");
            seen.extend(page.items.iter().map(|r| r.id.clone()));
            cursor = page.next_cursor;
            pages += 1;
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..25).rev().map(|i| format!("r{i:02}")).collect();
        assert_eq!(seen, expected, "every older run once, in order");

        // An exact multiple of the page size ends without an empty page.
        let page = s
            .list_runs(RunFilter::default(), None, 30)
            .await
            .expect("all");
        assert_eq!((page.items.len(), page.next_cursor), (30, None));
        // Limits are clamped: 0 still lists one.
        let page = s.list_runs(RunFilter::default(), None, 0).await.expect("0");
        assert_eq!(page.items.len(), 1);
        assert!(page.next_cursor.is_some());

        let err = s
            .list_runs(RunFilter::default(), Some("garbage".into()), 10)
            .await
            .expect_err("a bad cursor must be refused");
        assert!(matches!(err, StoreError::InvalidCursor { .. }), "{err:?}");
    }

    pub async fn list_filters<S: Store>(s: Arc<S>) {
        for i in 0..12 {
            let job = if i % 3 == 0 { "deploy" } else { "build" };
            created(&*s, new_run(&format!("r{i:02}"), job)).await;
        }
        s.commit(Batch {
            runs: vec![
                update("r00", "running"),
                update("r03", "running"),
                update("r04", "running"),
            ],
            ..Batch::default()
        })
        .await
        .expect("commit");
        let ids = |items: &[ganger_store::RunSummary]| -> Vec<String> {
            items.iter().map(|r| r.id.clone()).collect()
        };
        let deploys = s
            .list_runs(
                RunFilter {
                    job: Some("deploy".into()),
                    status: None,
                },
                None,
                3,
            )
            .await
            .expect("deploys");
        assert_eq!(ids(&deploys.items), ["r09", "r06", "r03"]);
        let rest = s
            .list_runs(
                RunFilter {
                    job: Some("deploy".into()),
                    status: None,
                },
                deploys.next_cursor,
                3,
            )
            .await
            .expect("deploys 2");
        assert_eq!(
            (ids(&rest.items), rest.next_cursor),
            (vec!["r00".to_string()], None)
        );

        let running = s
            .list_runs(
                RunFilter {
                    job: None,
                    status: Some("running".into()),
                },
                None,
                10,
            )
            .await
            .expect("running");
        assert_eq!(ids(&running.items), ["r04", "r03", "r00"]);
        let both = s
            .list_runs(
                RunFilter {
                    job: Some("deploy".into()),
                    status: Some("running".into()),
                },
                None,
                10,
            )
            .await
            .expect("both");
        assert_eq!(ids(&both.items), ["r03", "r00"]);
    }

    pub async fn commit_applies_everything_or_nothing<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        s.commit(Batch {
            ready: vec![offer("r", 0, 0)],
            ..Batch::default()
        })
        .await
        .expect("seed");

        // A batch with one bad part changes nothing: not the run, not the
        // claimables (neither the new one nor the removal).
        let bad_update = Batch {
            new_runs: Vec::new(),
            runs: vec![update("r", "running"), update("ghost", "running")],
            ready: vec![offer("r", 1, 0)],
            done: vec![key("r", 0)],
            claims: vec![request("a", 10)],
            fence: None,
        };
        let err = s.commit(bad_update).await.expect_err("unknown run");
        assert!(
            matches!(err, StoreError::RunNotFound { ref id, .. } if id == "ghost"),
            "{err:?}"
        );
        let bad_offer = Batch {
            new_runs: Vec::new(),
            runs: vec![update("r", "running")],
            ready: vec![offer("r", 1, 0), offer("ghost", 0, 0)],
            done: vec![key("r", 0)],
            claims: vec![request("a", 10)],
            fence: None,
        };
        let err = s.commit(bad_offer).await.expect_err("task of unknown run");
        assert!(
            matches!(err, StoreError::RunNotFound { ref id, .. } if id == "ghost"),
            "{err:?}"
        );
        assert_eq!(
            s.run("r").await.expect("get").expect("r").summary.status,
            "queued"
        );
        assert_eq!(tasks(&s.claim(request("a", 10)).await.expect("claim")), [0]);
        s.release(&key("r", 0)).await.expect("release");

        // The good batch applies all three parts, `done` after `ready`.
        s.commit(Batch {
            new_runs: Vec::new(),
            runs: vec![update("r", "running")],
            ready: vec![offer("r", 1, 0), offer("r", 2, 0), offer("r", 3, 0)],
            done: vec![key("r", 0), key("r", 3), key("r", 99)],
            claims: Vec::new(),
            fence: None,
        })
        .await
        .expect("commit");
        assert_eq!(
            s.run("r").await.expect("get").expect("r").summary.status,
            "running"
        );
        assert_eq!(
            tasks(&s.claim(request("a", 10)).await.expect("claim")),
            [1, 2]
        );
        assert_eq!(
            s.commit(Batch::default()).await.expect("empty batch"),
            Committed::default()
        );
    }

    /// Claims come last in a batch: they see its new offers (not its
    /// removals), each request sees the previous ones' claims, and a failing
    /// batch claims nothing.
    pub async fn commit_claims_see_the_rest_of_the_batch<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        s.commit(Batch {
            ready: vec![offer("r", 0, 9)],
            ..Batch::default()
        })
        .await
        .expect("seed");
        let claims_only = Batch {
            claims: vec![request("x", 1)],
            ..Batch::default()
        };
        assert!(!claims_only.is_empty(), "a claim is not an empty batch");

        let err = s
            .commit(Batch {
                runs: vec![update("ghost", "running")],
                ready: vec![offer("r", 1, 0)],
                claims: vec![request("a", 10)],
                ..Batch::default()
            })
            .await
            .expect_err("unknown run");
        assert!(matches!(err, StoreError::RunNotFound { .. }), "{err:?}");
        assert!(
            s.claims_of("a").await.expect("claims of a").is_empty(),
            "the failed batch claimed nothing"
        );

        let later = |task: u32| Claimable {
            ready_at: 11,
            ..offer("r", task, 7)
        };
        let answers = s
            .commit(Batch {
                new_runs: Vec::new(),
                runs: vec![update("r", "running")],
                ready: vec![
                    offer("r", 1, 5),
                    offer("r", 2, 0),
                    later(3),
                    offer("r", 4, 0),
                ],
                done: vec![key("r", 0), key("r", 4)],
                claims: vec![
                    request("a", 1),
                    ClaimRequest {
                        max: 0,
                        ..request("void", 10)
                    },
                    ClaimRequest {
                        executors: Vec::new(),
                        ..request("void", 10)
                    },
                    request("b", 10),
                    request("c", 10),
                ],
                fence: None,
            })
            .await
            .expect("commit")
            .claimed;
        let got: Vec<Vec<u32>> = answers.iter().map(|c| tasks(c)).collect();
        // Task 0 and 4 were removed first; task 3 is not ready at 10.
        assert_eq!(got, [vec![1], vec![], vec![], vec![2], vec![]]);
        assert_eq!(
            (answers[0][0].agent.as_str(), answers[0][0].lease_until),
            ("a", 100)
        );
        assert_eq!(answers[0][0].claimable, offer("r", 1, 5));
        assert_eq!(
            s.run("r").await.expect("get").expect("r").summary.status,
            "running"
        );
        assert_eq!(tasks(&s.claims_of("b").await.expect("claims of b")), [2]);

        // Requests that can take nothing still get their (empty) answers.
        let voids = s
            .commit(Batch {
                claims: vec![
                    ClaimRequest {
                        max: 0,
                        ..request("d", 10)
                    },
                    ClaimRequest {
                        executors: Vec::new(),
                        ..request("d", 10)
                    },
                ],
                ..Batch::default()
            })
            .await
            .expect("void claims")
            .claimed;
        assert_eq!(voids, [Vec::new(), Vec::new()]);
        // `claim` is a batch of one request, and sees the same rows.
        let on_time = ClaimRequest {
            now: 11,
            ..request("d", 10)
        };
        assert_eq!(tasks(&s.claim(on_time).await.expect("claim")), [3]);
    }

    /// One tick in one commit: runs submitted during the tick are created
    /// first, then updated, offered work and claimed by the same batch.
    pub async fn commit_new_runs_are_seen_by_the_rest_of_the_batch<S: Store>(s: Arc<S>) {
        let seq0 = created(&*s, new_run("r0", "build")).await;
        let only_runs = Batch {
            new_runs: vec![new_run("x", "build")],
            ..Batch::default()
        };
        assert!(!only_runs.is_empty(), "new runs are not an empty batch");

        let out = s
            .commit(Batch {
                new_runs: vec![
                    new_run("n1", "build"),
                    NewRun {
                        idempotency_key: Some("k2".into()),
                        ..new_run("n2", "deploy")
                    },
                ],
                runs: vec![update("n1", "running")],
                ready: vec![offer("n1", 0, 3), offer("r0", 0, 0)],
                done: Vec::new(),
                claims: vec![request("a", 1), request("b", 10)],
                fence: None,
            })
            .await
            .expect("commit");
        let seqs: Vec<i64> = out
            .inserted
            .iter()
            .map(|i| match i {
                Inserted::Created { seq } => *seq,
                other => panic!("expected a new run, got {other:?}"),
            })
            .collect();
        assert!(
            seqs.len() == 2 && seq0 < seqs[0] && seqs[0] < seqs[1],
            "{out:?}"
        );
        assert_eq!(out.claimed.len(), 2);
        assert_eq!(
            (
                out.claimed[0].len(),
                &out.claimed[0][0].claimable,
                out.claimed[0][0].agent.as_str()
            ),
            (1, &offer("n1", 0, 3), "a"),
            "the new run's offer, claimed in the same batch"
        );
        assert_eq!(
            out.claimed[1]
                .iter()
                .map(|c| c.claimable.key.clone())
                .collect::<Vec<_>>(),
            [key("r0", 0)]
        );

        let n1 = s.run("n1").await.expect("get n1").expect("n1");
        assert_eq!(
            (
                n1.summary.seq,
                n1.summary.status.as_str(),
                n1.state_json.as_str()
            ),
            (seqs[0], "running", r#"{"s":"running"}"#)
        );
        let n2 = s.run("n2").await.expect("get n2").expect("n2");
        assert_eq!(
            (n2.summary.seq, n2.summary.status.as_str()),
            (seqs[1], "queued")
        );
        assert_eq!(s.run_for_key("k2").await.expect("key"), Some("n2".into()));
        assert_eq!(
            tasks(&s.claims_of("a").await.expect("claims of a")),
            [0],
            "the claim is stored"
        );
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 3);
    }

    /// A bad new run fails the whole batch: no run, no key, no update, no
    /// claimable, no claim. A run answered `Existing` is not created, so the
    /// batch cannot refer to it by its own id.
    pub async fn failing_commit_with_new_runs_writes_nothing<S: Store>(s: Arc<S>) {
        created(
            &*s,
            NewRun {
                idempotency_key: Some("k0".into()),
                ..new_run("r0", "build")
            },
        )
        .await;
        let tick = |new_runs: Vec<NewRun>, touched: &str| Batch {
            new_runs,
            runs: vec![update("r0", "running"), update(touched, "running")],
            ready: vec![offer("r0", 0, 0), offer(touched, 0, 0)],
            done: Vec::new(),
            claims: vec![request("a", 10)],
            fence: None,
        };
        let keyed = |id: &str, k: &str| NewRun {
            idempotency_key: Some(k.into()),
            ..new_run(id, "build")
        };

        // The second new run's id is taken by a stored run.
        let err = s
            .commit(tick(vec![keyed("a", "ka"), new_run("r0", "build")], "a"))
            .await
            .expect_err("a taken id");
        assert!(
            matches!(err, StoreError::DuplicateRun { ref id } if id == "r0"),
            "{err:?}"
        );
        // The second new run repeats the first one's id.
        let err = s
            .commit(tick(vec![keyed("a", "ka"), new_run("a", "build")], "a"))
            .await
            .expect_err("a repeated id");
        assert!(
            matches!(err, StoreError::DuplicateRun { ref id } if id == "a"),
            "{err:?}"
        );
        let err = s
            .commit(tick(vec![keyed("a", "ka"), new_run("", "build")], "a"))
            .await
            .expect_err("an empty id");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        // "c" carries a stored key: answered `Existing`, never created.
        let err = s
            .commit(tick(vec![keyed("a", "ka"), keyed("c", "k0")], "c"))
            .await
            .expect_err("a run that was not created");
        assert!(
            matches!(err, StoreError::RunNotFound { ref id, .. } if id == "c"),
            "{err:?}"
        );

        for id in ["a", "c"] {
            assert!(s.run(id).await.expect("get").is_none(), "{id}");
        }
        assert_eq!(s.run_for_key("ka").await.expect("key"), None);
        let r0 = s.run("r0").await.expect("get r0").expect("r0");
        assert_eq!(r0.summary.status, "queued", "the update was rolled back");
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 1);
        assert!(s.claims_of("a").await.expect("claims of a").is_empty());
        assert!(
            s.claim(request("b", 10)).await.expect("claim").is_empty(),
            "no claimable was written"
        );

        // Without the bad run the same tick goes through.
        let out = s
            .commit(tick(vec![keyed("a", "ka"), new_run("b", "build")], "a"))
            .await
            .expect("commit");
        assert!(
            matches!(
                out.inserted[..],
                [Inserted::Created { .. }, Inserted::Created { .. }]
            ),
            "{out:?}"
        );
        assert_eq!(
            tasks(&out.claimed[0]),
            [0, 0],
            "both offers claimed in the same batch"
        );
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 3);
    }

    /// Idempotency keys inside one batch: a key repeated within the batch,
    /// or taken by a stored run, answers that run's id and writes nothing;
    /// the batch can still update and offer work to the run that holds it.
    pub async fn commit_new_runs_repeat_a_key_within_the_batch<S: Store>(s: Arc<S>) {
        let keyed = |id: &str, k: &str| NewRun {
            idempotency_key: Some(k.into()),
            ..new_run(id, "build")
        };
        created(&*s, keyed("r0", "k0")).await;
        let out = s
            .commit(Batch {
                new_runs: vec![
                    keyed("a", "k"),
                    keyed("b", "k"),  // repeats a's key
                    keyed("c", "k0"), // stored key
                    keyed("d", "kd"),
                    keyed("e", "k"), // repeats a's key again
                ],
                runs: vec![update("a", "running")],
                ready: vec![offer("a", 0, 0)],
                claims: vec![request("x", 10)],
                ..Batch::default()
            })
            .await
            .expect("commit");
        assert_eq!(out.inserted.len(), 5);
        assert!(matches!(out.inserted[0], Inserted::Created { .. }));
        assert_eq!(out.inserted[1], Inserted::Existing { id: "a".into() });
        assert_eq!(out.inserted[2], Inserted::Existing { id: "r0".into() });
        assert!(matches!(out.inserted[3], Inserted::Created { .. }));
        assert_eq!(out.inserted[4], Inserted::Existing { id: "a".into() });
        assert_eq!(
            out.claimed
                .iter()
                .map(|c| c.iter().map(|c| c.claimable.key.clone()).collect())
                .collect::<Vec<Vec<_>>>(),
            [vec![key("a", 0)]]
        );
        for (id, present) in [
            ("a", true),
            ("b", false),
            ("c", false),
            ("d", true),
            ("e", false),
        ] {
            assert_eq!(s.run(id).await.expect("get").is_some(), present, "{id}");
        }
        assert_eq!(s.run_for_key("k").await.expect("key"), Some("a".into()));
        assert_eq!(
            s.run("a").await.expect("get a").expect("a").summary.status,
            "running"
        );
        // The key stays taken for the next tick and for single inserts.
        let out = s
            .commit(Batch {
                new_runs: vec![keyed("f", "k")],
                ..Batch::default()
            })
            .await
            .expect("next tick");
        assert_eq!(out.inserted, [Inserted::Existing { id: "a".into() }]);
        assert_eq!(
            s.insert_run(keyed("g", "kd")).await.expect("single"),
            Inserted::Existing { id: "d".into() }
        );
        assert_eq!(s.unfinished().await.expect("unfinished").len(), 3);
    }

    pub async fn claims_of_lists_an_agents_claims<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        assert!(s.claims_of("a").await.expect("none yet").is_empty());
        let prios = [0, 5, 0, 5, 1];
        s.commit(Batch {
            ready: prios
                .iter()
                .enumerate()
                .map(|(i, p)| offer("r", i as u32, *p))
                .collect(),
            ..Batch::default()
        })
        .await
        .expect("offer");
        let lease = |agent: &str, max: u32, until: i64| ClaimRequest {
            lease_until: until,
            ..request(agent, max)
        };
        assert_eq!(tasks(&s.claim(lease("a", 1, 50)).await.expect("a")), [1]);
        assert_eq!(tasks(&s.claim(lease("b", 2, 60)).await.expect("b")), [3, 4]);
        assert_eq!(tasks(&s.claim(lease("a", 5, 70)).await.expect("a")), [0, 2]);
        // A later, lower-priority task raised above the others: claim order
        // follows the current priority.
        s.commit(Batch {
            ready: vec![offer("r", 2, 8)],
            ..Batch::default()
        })
        .await
        .expect("update");

        let mine = s.claims_of("a").await.expect("claims of a");
        assert_eq!(tasks(&mine), [2, 1, 0], "priority desc, then seq");
        assert!(mine.iter().all(|c| c.agent == "a"));
        assert_eq!(
            mine.iter().map(|c| c.lease_until).collect::<Vec<_>>(),
            [70, 50, 70],
            "expired or not, each with its own lease"
        );
        assert_eq!(mine[0].claimable, offer("r", 2, 8), "whole claimable");
        assert_eq!(tasks(&s.claims_of("b").await.expect("b")), [3, 4]);
        assert!(s.claims_of("nobody").await.expect("nobody").is_empty());

        s.release(&key("r", 1)).await.expect("release");
        s.commit(Batch {
            done: vec![key("r", 0)],
            ..Batch::default()
        })
        .await
        .expect("done");
        assert_eq!(tasks(&s.claims_of("a").await.expect("a after")), [2]);
    }

    pub async fn claim_order_is_priority_then_fifo<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        let prios = [0, 5, 0, 5, 1, -2, 1];
        s.commit(Batch {
            ready: prios
                .iter()
                .enumerate()
                .map(|(i, p)| offer("r", i as u32, *p))
                .collect(),
            ..Batch::default()
        })
        .await
        .expect("offer");
        let first = s.claim(request("a", 3)).await.expect("claim 3");
        assert_eq!(
            tasks(&first),
            [1, 3, 4],
            "max respected, priority then FIFO"
        );
        assert!(first.iter().all(|c| c.agent == "a" && c.lease_until == 100));
        assert_eq!(
            first[0].claimable,
            offer("r", 1, 5),
            "the claimable comes back whole"
        );
        let rest = s.claim(request("b", 100)).await.expect("claim rest");
        assert_eq!(tasks(&rest), [6, 0, 2, 5]);
        assert!(s.claim(request("c", 100)).await.expect("empty").is_empty());
        assert!(s.claim(request("c", 0)).await.expect("max 0").is_empty());
    }

    pub async fn claim_matches_tags_executors_and_time<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        let tagged = |task: u32, tags: &[&str], executor: &str, ready_at: i64| Claimable {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            executor: executor.into(),
            ready_at,
            ..offer("r", task, 0)
        };
        s.commit(Batch {
            ready: vec![
                tagged(0, &["os=linux"], "process", 0),
                tagged(1, &["gpu"], "process", 0),
                tagged(2, &["os=linux", "gpu"], "process", 0),
                tagged(3, &[], "docker", 0),
                tagged(4, &[], "process", 11), // not before now = 10
                tagged(5, &["os=mac"], "process", 0),
                tagged(6, &[], "process", 10), // ready exactly now
            ],
            ..Batch::default()
        })
        .await
        .expect("offer");
        let with = |labels: &[&str], executors: &[&str]| ClaimRequest {
            labels: labels.iter().map(|t| t.to_string()).collect(),
            executors: executors.iter().map(|t| t.to_string()).collect(),
            ..request("a", 100)
        };
        // A bare label does not satisfy `k=v`; no executors, no work.
        assert!(
            s.claim(with(&["os"], &[]))
                .await
                .expect("no executors")
                .is_empty()
        );
        assert_eq!(
            tasks(&s.claim(with(&["os"], &["process"])).await.expect("bare")),
            [6]
        );
        // `gpu=2` satisfies the bare tag `gpu`.
        assert_eq!(
            tasks(&s.claim(with(&["gpu=2"], &["process"])).await.expect("gpu")),
            [1]
        );
        assert_eq!(
            tasks(
                &s.claim(with(&["os=linux", "gpu"], &["process", "docker"]))
                    .await
                    .expect("all")
            ),
            [0, 2, 3]
        );
        // Task 4 becomes claimable when its time comes.
        assert!(
            s.claim(with(&[], &["process"]))
                .await
                .expect("early")
                .is_empty()
        );
        let later = ClaimRequest {
            now: 11,
            ..with(&[], &["process"])
        };
        assert_eq!(tasks(&s.claim(later).await.expect("on time")), [4]);
        assert_eq!(
            tasks(&s.claim(with(&["os=mac"], &["process"])).await.expect("mac")),
            [5]
        );
    }

    /// 8 agents race for 500 claimables: every claimable is claimed exactly
    /// once, by the agent that was told it got it.
    pub async fn concurrent_claimers_never_share_a_task<S: Store + 'static>(s: Arc<S>) {
        const TASKS: u32 = 500;
        const AGENTS: usize = 8;
        created(&*s, new_run("r", "build")).await;
        s.commit(Batch {
            ready: (0..TASKS).map(|t| offer("r", t, (t % 3) as i32)).collect(),
            ..Batch::default()
        })
        .await
        .expect("offer");
        let barrier = Arc::new(tokio::sync::Barrier::new(AGENTS));
        let mut handles = Vec::new();
        for a in 0..AGENTS {
            let s = s.clone();
            let barrier = barrier.clone();
            handles.push(tokio::spawn(async move {
                let agent = format!("agent-{a}");
                barrier.wait().await;
                let mut got = Vec::new();
                loop {
                    let batch = s.claim(request(&agent, 7)).await.expect("claim");
                    if batch.is_empty() {
                        break;
                    }
                    assert!(batch.len() <= 7);
                    assert!(batch.iter().all(|c| c.agent == agent));
                    got.extend(batch.into_iter().map(|c| c.claimable.key.task));
                }
                (agent, got)
            }));
        }
        let mut owner = std::collections::HashMap::new();
        let mut total = 0;
        for h in handles {
            let (agent, got) = h.await.expect("join claimer");
            total += got.len();
            for task in got {
                if let Some(other) = owner.insert(task, agent.clone()) {
                    panic!("task {task} claimed by both {other} and {agent}");
                }
            }
        }
        assert_eq!(total, TASKS as usize, "claims counted");
        assert_eq!(owner.len(), TASKS as usize, "distinct tasks claimed");
        // The store agrees on who holds what.
        let held = s.expired(i64::MAX).await.expect("all leases");
        assert_eq!(held.len(), TASKS as usize);
        for c in held {
            assert_eq!(owner.get(&c.claimable.key.task), Some(&c.agent));
        }
    }

    /// 8 agents, each a task of the multi-thread runtime, claim 1 to 5 at
    /// a time from 2,000 offers (spread over runs, with various attempts)
    /// until the queue answers empty: every offered (key, attempt) is
    /// claimed exactly once, and nothing else is.
    pub async fn eight_claimers_claim_each_of_2000_tasks_once<S: Store + 'static>(s: Arc<S>) {
        const RUNS: u32 = 4;
        const TASKS_PER_RUN: u32 = 500;
        const OFFER_BATCH: usize = 250;
        const AGENTS: u32 = 8;
        let mut offered = Vec::new();
        for r in 0..RUNS {
            let run = format!("r{r}");
            created(&*s, new_run(&run, "build")).await;
            offered.extend((0..TASKS_PER_RUN).map(|t| Claimable {
                attempt: 1 + t % 3,
                ..offer(&run, t, (t % 4) as i32)
            }));
        }
        for chunk in offered.chunks(OFFER_BATCH) {
            s.commit(Batch {
                ready: chunk.to_vec(),
                ..Batch::default()
            })
            .await
            .expect("offer");
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(AGENTS as usize));
        let mut handles = Vec::new();
        for a in 0..AGENTS {
            let s = s.clone();
            let barrier = barrier.clone();
            handles.push(tokio::spawn(async move {
                let agent = format!("claimer-{a}");
                let max = 1 + a % 5;
                barrier.wait().await;
                let mut got = Vec::new();
                loop {
                    let batch = s.claim(request(&agent, max)).await.expect("claim");
                    if batch.is_empty() {
                        break;
                    }
                    assert!(batch.len() <= max as usize, "{agent} got {}", batch.len());
                    got.extend(batch.into_iter().map(|c| {
                        assert_eq!(c.agent, agent);
                        (c.claimable.key, c.claimable.attempt)
                    }));
                }
                (agent, got)
            }));
        }
        let mut claimers: HashMap<(TaskKey, u32), Vec<String>> = HashMap::new();
        let mut total = 0;
        for h in handles {
            let (agent, got) = h.await.expect("join claimer");
            total += got.len();
            for claim in got {
                claimers.entry(claim).or_default().push(agent.clone());
            }
        }
        let mut duplicates: Vec<String> = claimers
            .iter()
            .filter(|(_, agents)| agents.len() > 1)
            .map(|((key, attempt), agents)| format!("{key} attempt {attempt} by {agents:?}"))
            .collect();
        duplicates.sort();
        assert!(
            duplicates.is_empty(),
            "{} tasks claimed more than once: {duplicates:?}",
            duplicates.len()
        );
        let offered: HashSet<(TaskKey, u32)> =
            offered.into_iter().map(|c| (c.key, c.attempt)).collect();
        let claimed: HashSet<(TaskKey, u32)> = claimers.into_keys().collect();
        let mut missing: Vec<String> = offered
            .difference(&claimed)
            .map(|(key, attempt)| format!("{key} attempt {attempt}"))
            .collect();
        missing.sort();
        assert!(missing.is_empty(), "never claimed: {missing:?}");
        let mut stray: Vec<String> = claimed
            .difference(&offered)
            .map(|(key, attempt)| format!("{key} attempt {attempt}"))
            .collect();
        stray.sort();
        assert!(stray.is_empty(), "claimed but never offered: {stray:?}");
        assert_eq!(total, offered.len(), "claims counted");
    }

    pub async fn leases_renew_expire_release<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        s.commit(Batch {
            ready: (0..4).map(|t| offer("r", t, 0)).collect(),
            ..Batch::default()
        })
        .await
        .expect("offer");
        let lease = |agent: &str, max: u32, until: i64| ClaimRequest {
            lease_until: until,
            ..request(agent, max)
        };
        assert_eq!(s.claim(lease("a", 2, 100)).await.expect("a").len(), 2);
        assert_eq!(s.claim(lease("b", 1, 120)).await.expect("b").len(), 1);

        assert_eq!(s.renew("a", 200).await.expect("renew a"), 2);
        assert_eq!(s.renew("a", 150).await.expect("renew a back"), 2);
        assert_eq!(s.renew("nobody", 500).await.expect("renew nobody"), 0);
        assert!(
            s.expired(120).await.expect("none yet").is_empty(),
            "b's lease ends at 120, not before"
        );
        let late = s.expired(121).await.expect("b expired");
        assert_eq!(
            (tasks(&late), late[0].agent.as_str(), late[0].lease_until),
            (vec![2], "b", 120)
        );
        let all = s.expired(201).await.expect("all expired");
        assert_eq!(tasks(&all), [2, 0, 1], "by lease end");
        assert!(
            all[1..]
                .iter()
                .all(|c| c.agent == "a" && c.lease_until == 200),
            "never shortened"
        );

        // Released: offered again, in its original place, to anyone.
        s.release(&key("r", 2)).await.expect("release");
        assert_eq!(tasks(&s.expired(i64::MAX).await.expect("left")), [0, 1]);
        assert_eq!(
            tasks(&s.claim(lease("c", 10, 300)).await.expect("c")),
            [2, 3]
        );
        assert_eq!(s.renew("b", 999).await.expect("b holds nothing"), 0);

        let err = s.release(&key("r", 42)).await.expect_err("unknown key");
        assert!(
            matches!(err, StoreError::ClaimableNotFound { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("r/42/main"), "{err}");
        // Releasing an unclaimed claimable is harmless.
        s.release(&key("r", 2)).await.expect("release");
        s.release(&key("r", 2)).await.expect("release again");
        // Finished tasks leave the lease table.
        s.commit(Batch {
            done: vec![key("r", 0), key("r", 1), key("r", 2), key("r", 3)],
            ..Batch::default()
        })
        .await
        .expect("done");
        assert!(s.expired(i64::MAX).await.expect("none").is_empty());
        assert!(s.claim(request("d", 10)).await.expect("none").is_empty());
    }

    pub async fn reoffer_keeps_or_drops_the_claim_by_attempt<S: Store>(s: Arc<S>) {
        created(&*s, new_run("r", "build")).await;
        s.commit(Batch {
            ready: vec![offer("r", 0, 0), offer("r", 1, 0), offer("r", 2, 0)],
            ..Batch::default()
        })
        .await
        .expect("offer");
        assert_eq!(s.claim(request("a", 1)).await.expect("claim").len(), 1);
        // Same attempt, new priority: still a's.
        s.commit(Batch {
            ready: vec![offer("r", 0, 9)],
            ..Batch::default()
        })
        .await
        .expect("update");
        let held = s.expired(i64::MAX).await.expect("held");
        assert_eq!((tasks(&held), held[0].claimable.priority), (vec![0], 9));
        // New attempt (the old one was lost): offered again, fenced.
        s.commit(Batch {
            ready: vec![Claimable {
                attempt: 2,
                ..offer("r", 0, 0)
            }],
            ..Batch::default()
        })
        .await
        .expect("re-offer");
        assert!(s.expired(i64::MAX).await.expect("none").is_empty());
        // It kept its FIFO place ahead of tasks 1 and 2.
        let again = s.claim(request("b", 1)).await.expect("claim");
        assert_eq!((tasks(&again), again[0].claimable.attempt), (vec![0], 2));
    }

    pub async fn tokens<S: Store>(s: Arc<S>) {
        let t = TokenRow {
            hash: "h1".into(),
            role: "admin".into(),
            name: "first".into(),
            created_at: 5,
        };
        s.put_token(t.clone()).await.expect("put");
        assert_eq!(s.token("h1").await.expect("get"), Some(t.clone()));
        assert_eq!(s.token("h2").await.expect("get"), None);
        let err = s
            .put_token(TokenRow {
                role: "viewer".into(),
                ..t.clone()
            })
            .await
            .expect_err("duplicate");
        assert!(matches!(err, StoreError::DuplicateToken { .. }), "{err:?}");
        assert_eq!(
            s.token("h1").await.expect("get").map(|t| t.role),
            Some("admin".into())
        );
        let err = s
            .put_token(TokenRow {
                hash: String::new(),
                ..t
            })
            .await
            .expect_err("empty hash");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
    /// Every store has a clock in unix milliseconds and a leader: the
    /// single-process stores always lead with token 1; PostgreSQL's lease
    /// has its own tests below.
    pub async fn clock_and_leader<S: Store>(s: Arc<S>) {
        let local = ganger_store::local_now_ms();
        let db = s.db_now().await.expect("db_now");
        assert!(
            (db - local).abs() < 60_000,
            "db_now {db} is not unix ms near the local clock {local}"
        );
        let later = s.db_now().await.expect("db_now again");
        assert!(later >= db, "the clock went back: {db} then {later}");
        let ttl = std::time::Duration::from_secs(30);
        let token = s.try_lead("a", ttl).await.expect("lead").expect("a leads");
        assert!(token >= 1);
        assert_eq!(
            s.try_lead("a", ttl).await.expect("renew"),
            Some(token),
            "renewing keeps the token"
        );
    }
}

// ---------------------------------------------------------- SQLite only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data/ganger.db");
    {
        let s = SqliteStore::open(&path).await.expect("open");
        s.put_jobs(vec![def("build", "d1")], 1).await.expect("jobs");
        created(
            &s,
            NewRun {
                idempotency_key: Some("k".into()),
                ..new_run("r1", "build")
            },
        )
        .await;
        s.commit(Batch {
            runs: vec![update("r1", "running")],
            ready: vec![offer("r1", 0, 3), offer("r1", 1, 0)],
            ..Batch::default()
        })
        .await
        .expect("commit");
        assert_eq!(s.claim(request("a", 1)).await.expect("claim").len(), 1);
        s.put_token(TokenRow {
            hash: "h".into(),
            role: "admin".into(),
            name: "t".into(),
            created_at: 1,
        })
        .await
        .expect("token");
        s.close().await;
    }
    let s = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(
        s.job("build", None)
            .await
            .expect("job")
            .expect("build")
            .0
            .version,
        1
    );
    let run = s.run("r1").await.expect("run").expect("r1");
    assert_eq!(
        (run.summary.status.as_str(), run.state_json.as_str()),
        ("running", r#"{"s":"running"}"#)
    );
    assert_eq!(s.unfinished().await.expect("unfinished").len(), 1);
    assert_eq!(
        s.insert_run(NewRun {
            idempotency_key: Some("k".into()),
            ..new_run("r2", "build")
        })
        .await
        .expect("insert"),
        Inserted::Existing { id: "r1".into() },
        "idempotency survives a restart"
    );
    let held = s.expired(i64::MAX).await.expect("leases");
    assert_eq!((tasks(&held), held[0].agent.as_str()), (vec![0], "a"));
    assert_eq!(tasks(&s.claim(request("b", 10)).await.expect("claim")), [1]);
    assert!(s.token("h").await.expect("token").is_some());
    // New runs continue the sequence.
    let seq = created(&s, new_run("r3", "build")).await;
    assert!(seq > run.summary.seq);
    s.close().await;
}

/// Two stores on one file (two pools, as two processes would have) contend
/// on SQLite's own lock: `BEGIN IMMEDIATE` must keep claims exclusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_stores_on_one_file_never_share_a_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ganger.db");
    let one = Arc::new(SqliteStore::open(&path).await.expect("open one"));
    let two = Arc::new(SqliteStore::open(&path).await.expect("open two"));
    created(&*one, new_run("r", "build")).await;
    one.commit(Batch {
        ready: (0..200).map(|t| offer("r", t, 0)).collect(),
        ..Batch::default()
    })
    .await
    .expect("offer");
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let mut handles = Vec::new();
    for a in 0..4 {
        let s = if a % 2 == 0 { one.clone() } else { two.clone() };
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut got = Vec::new();
            loop {
                let batch = s
                    .claim(request(&format!("agent-{a}"), 5))
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|c| c.claimable.key.task));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for h in handles {
        let got = h.await.expect("join");
        total += got.len();
        seen.extend(got);
    }
    assert_eq!((total, seen.len()), (200, 200));
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn sqlite_open_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let err = SqliteStore::open(file.join("ganger.db"))
        .await
        .expect_err("a file cannot be a directory");
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");

    // Not a database: opening (or migrating) fails and says which file.
    let err = SqliteStore::open(&file).await.expect_err("not a database");
    assert!(
        matches!(err, StoreError::Open { .. } | StoreError::Migrate { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("plain-file"), "{err}");
}

// ------------------------------------------------------ PostgreSQL only

/// Two stores on one database, as two replicas: claims through both stay
/// exclusive (row locks, SKIP LOCKED), whoever is faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_stores_on_one_database_never_share_a_task() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let one = Arc::new(PgStore::connect(&db.url, 4).await.expect("connect one"));
    let two = Arc::new(PgStore::connect(&db.url, 4).await.expect("connect two"));
    created(&*one, new_run("r", "build")).await;
    one.commit(Batch {
        ready: (0..300).map(|t| offer("r", t, (t % 2) as i32)).collect(),
        ..Batch::default()
    })
    .await
    .expect("offer");
    let barrier = Arc::new(tokio::sync::Barrier::new(6));
    let mut handles = Vec::new();
    for a in 0..6 {
        let s = if a % 2 == 0 { one.clone() } else { two.clone() };
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut got = Vec::new();
            loop {
                let batch = s
                    .claim(request(&format!("agent-{a}"), 5))
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|c| c.claimable.key.task));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for h in handles {
        let got = h.await.expect("join");
        total += got.len();
        seen.extend(got);
    }
    assert_eq!((total, seen.len()), (300, 300));
    one.close().await;
    two.close().await;
}

async fn next_wakeup(
    w: &mut ganger_store::PgWakeups,
) -> Result<ganger_store::Result<ganger_store::Wakeup>, tokio::time::error::Elapsed> {
    tokio::time::timeout(std::time::Duration::from_secs(3), w.recv()).await
}

/// A commit that offers a task wakes the listeners of every store on the
/// database, once it is committed; a rolled-back one wakes nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_offers_notify_the_other_replicas() {
    use ganger_store::Wakeup;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let writer = PgStore::connect(&db.url, 2).await.expect("connect writer");
    let reader = PgStore::connect(&db.url, 2).await.expect("connect reader");
    let mut wakeups = reader.listen().await.expect("listen");
    created(&writer, new_run("r", "build")).await;
    // A run alone offers nothing: no notification (checked below, since
    // the next one received must be the offer's).
    writer
        .commit(Batch {
            ready: vec![Claimable {
                ready_at: 7,
                ..offer("r", 0, 0)
            }],
            ..Batch::default()
        })
        .await
        .expect("offer");
    let got = next_wakeup(&mut wakeups)
        .await
        .expect("a notification within 3 s")
        .expect("recv");
    assert_eq!(got, Wakeup::Ready { ready_at: Some(7) });
    // A failing batch rolls its notification back with everything else.
    writer
        .commit(Batch {
            ready: vec![offer("r", 1, 0)],
            runs: vec![update("missing", "running")],
            ..Batch::default()
        })
        .await
        .expect_err("unknown run");
    // The reader's own commits are heard too, and a claimed task that is
    // released is on offer again.
    assert_eq!(reader.claim(request("a", 1)).await.expect("claim").len(), 1);
    reader.release(&key("r", 0)).await.expect("release");
    let got = next_wakeup(&mut wakeups)
        .await
        .expect("the release's notification within 3 s")
        .expect("recv");
    assert_eq!(got, Wakeup::Ready { ready_at: Some(7) });
    // Nothing else is pending: the failed batch sent nothing.
    assert!(
        next_wakeup(&mut wakeups).await.is_err(),
        "no notification for a rolled-back batch"
    );
    // Without notify, commits stay silent.
    let quiet = PgStore::connect(&db.url, 1)
        .await
        .expect("connect quiet")
        .without_notify();
    quiet
        .commit(Batch {
            ready: vec![offer("r", 2, 0)],
            ..Batch::default()
        })
        .await
        .expect("quiet offer");
    assert!(
        next_wakeup(&mut wakeups).await.is_err(),
        "without_notify is quiet"
    );
}

/// Two holders contend for the lease on the database's clock: one leads
/// until its lease expires unrenewed, then the other takes over with a
/// higher fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leader_lease_moves_only_when_it_expires() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let one = PgStore::connect(&db.url, 2).await.expect("connect one");
    let two = PgStore::connect(&db.url, 2).await.expect("connect two");
    let ttl = Duration::from_millis(400);

    // Both at once: exactly one wins.
    let (a, b) = tokio::join!(one.try_lead("a", ttl), two.try_lead("b", ttl));
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert!(a.is_some() != b.is_some(), "exactly one leads: {a:?} {b:?}");
    let (leader, leader_store, other, other_store, token) = match (a, b) {
        (Some(t), None) => ("a", &one, "b", &two, t),
        (None, Some(t)) => ("b", &two, "a", &one, t),
        _ => unreachable!(),
    };
    assert_eq!(token, 1, "the first holder gets token 1");

    // Renewals keep the lease (and the token) past the first ttl.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            leader_store.try_lead(leader, ttl).await.expect("renew"),
            Some(token)
        );
        assert_eq!(
            other_store.try_lead(other, ttl).await.expect("contend"),
            None,
            "a renewed lease is not taken"
        );
    }

    // No renewal for longer than the ttl: the other takes over, fenced.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let taken = other_store
        .try_lead(other, ttl)
        .await
        .expect("take over")
        .expect("the expired lease is taken");
    assert!(taken > token, "token {taken} after {token}");
    assert_eq!(
        leader_store.try_lead(leader, ttl).await.expect("late"),
        None,
        "the old leader is out"
    );

    // A clean resignation hands over at once.
    assert!(
        one.resign(ganger_store::LEADER_NAME, other)
            .await
            .expect("resign")
            || two
                .resign(ganger_store::LEADER_NAME, other)
                .await
                .expect("resign")
    );
    let back = leader_store
        .try_lead(leader, ttl)
        .await
        .expect("after resign")
        .expect("free after resignation");
    assert!(back > taken);

    // Independent names, independent leaders.
    assert_eq!(
        one.try_lead_named("other-duty", other, "", ttl)
            .await
            .expect("named"),
        Some(1)
    );
    let err = one.try_lead("", ttl).await.expect_err("empty holder");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

/// Polls until the lease `name` has lapsed on the database's clock.
async fn until_lapsed(s: &PgStore, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.leader(name).await.expect("read the leader").is_some() {
        assert!(
            Instant::now() < deadline,
            "the lease {name:?} has not lapsed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `leader` names the holder of a live lease, with the address it gave
/// and its token: nobody on a fresh database, nobody after a resignation or
/// once the lease lapsed, and the new holder after a takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leader_names_the_holder_and_its_address() {
    let Some((s, _db)) = make_postgres().await else {
        return;
    };
    let long = Duration::from_secs(60);
    let short = Duration::from_millis(500);
    assert_eq!(s.leader(LEADER_NAME).await.expect("fresh"), None);

    let a = s
        .try_lead_named(LEADER_NAME, "a", "http://a:7070", long)
        .await
        .expect("a takes")
        .expect("a leads");
    let leader = |holder: &str, address: &str, token| {
        Some(Leader {
            holder: holder.into(),
            address: address.into(),
            token,
        })
    };
    assert_eq!(
        s.leader(LEADER_NAME).await.expect("after take"),
        leader("a", "http://a:7070", a)
    );
    // A renewal stores the address it is given.
    assert_eq!(
        s.try_lead_named(LEADER_NAME, "a", "http://a:7171", long)
            .await
            .expect("a renews"),
        Some(a)
    );
    assert_eq!(
        s.leader(LEADER_NAME).await.expect("after renewal"),
        leader("a", "http://a:7171", a)
    );
    // A contender that is refused changes nothing.
    assert_eq!(
        s.try_lead_named(LEADER_NAME, "b", "http://b:7070", long)
            .await
            .expect("b contends"),
        None
    );
    assert_eq!(
        s.leader(LEADER_NAME).await.expect("after contention"),
        leader("a", "http://a:7171", a)
    );
    assert_eq!(s.leader("other-duty").await.expect("other name"), None);

    assert!(s.resign(LEADER_NAME, "a").await.expect("resign"));
    assert_eq!(s.leader(LEADER_NAME).await.expect("after resign"), None);

    // Takeover after a resignation: the new holder's address and token.
    let b = s
        .try_lead_named(LEADER_NAME, "b", "http://b:7070", short)
        .await
        .expect("b takes")
        .expect("b leads");
    assert!(b > a, "token {b} after {a}");
    assert_eq!(
        s.leader(LEADER_NAME).await.expect("after takeover"),
        leader("b", "http://b:7070", b)
    );

    // Takeover after the lease lapsed.
    until_lapsed(&s, LEADER_NAME).await;
    let c = s
        .try_lead_named(LEADER_NAME, "c", "http://c:7070", long)
        .await
        .expect("c takes")
        .expect("c leads");
    assert!(c > b, "token {c} after {b}");
    assert_eq!(
        s.leader(LEADER_NAME).await.expect("after lapse"),
        leader("c", "http://c:7070", c)
    );

    // The trait's try_lead gives no address.
    assert_eq!(s.try_lead("c", long).await.expect("trait renews"), Some(c));
    assert_eq!(
        s.leader(LEADER_NAME).await.expect("after trait renewal"),
        leader("c", "", c)
    );
}

/// A commit fenced with the lease's current token is written; once another
/// replica took the lease over, a commit with the old token fails with
/// `Fenced` and writes none of its parts, while the new leader's commits
/// go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fenced_commit_fails_after_a_takeover() {
    let Some((old_leader, db)) = make_postgres().await else {
        return;
    };
    let new_leader = PgStore::connect(&db.url, 2).await.expect("connect");
    let fence = |name: &str, token| {
        Some(Fence {
            name: name.into(),
            token,
        })
    };
    let old = old_leader
        .try_lead_named(LEADER_NAME, "old", "http://old", Duration::from_millis(500))
        .await
        .expect("take")
        .expect("old leads");
    old_leader
        .commit(Batch {
            new_runs: vec![new_run("r1", "build")],
            ready: vec![offer("r1", 0, 0)],
            fence: fence(LEADER_NAME, old),
            ..Batch::default()
        })
        .await
        .expect("commit with the current token");
    assert!(old_leader.run("r1").await.expect("read r1").is_some());

    // A token the lease never had, and a lease that does not exist.
    let err = old_leader
        .commit(Batch {
            new_runs: vec![new_run("stray", "build")],
            fence: fence(LEADER_NAME, old + 1),
            ..Batch::default()
        })
        .await
        .expect_err("wrong token");
    assert!(
        matches!(&err, StoreError::Fenced { token, current: Some(c), .. } if *token == old + 1 && *c == old),
        "{err:?}"
    );
    let err = old_leader
        .commit(Batch {
            new_runs: vec![new_run("stray", "build")],
            fence: fence("no-such-lease", 1),
            ..Batch::default()
        })
        .await
        .expect_err("no lease");
    assert!(
        matches!(&err, StoreError::Fenced { current: None, .. }),
        "{err:?}"
    );
    assert!(old_leader.run("stray").await.expect("read").is_none());

    // The old lease lapses unrenewed and another replica takes it.
    until_lapsed(&new_leader, LEADER_NAME).await;
    let new = new_leader
        .try_lead_named(LEADER_NAME, "new", "http://new", Duration::from_secs(60))
        .await
        .expect("take over")
        .expect("new leads");
    assert!(new > old);

    // The old leader's late commit, with a part of every kind: all refused.
    let err = old_leader
        .commit(Batch {
            new_runs: vec![new_run("r2", "build")],
            runs: vec![update("r1", "running")],
            ready: vec![offer("r1", 1, 0), offer("r2", 0, 0)],
            done: vec![key("r1", 0)],
            claims: vec![request("agent", 10)],
            fence: fence(LEADER_NAME, old),
        })
        .await
        .expect_err("fenced out");
    match &err {
        StoreError::Fenced {
            name,
            token,
            current,
        } => assert_eq!(
            (name.as_str(), *token, *current),
            (LEADER_NAME, old, Some(new))
        ),
        other => panic!("expected Fenced, got {other:?}"),
    }
    let msg = err.to_string();
    for part in [
        "no longer holds the leader lease",
        "another replica took over",
        "nothing of the batch was written",
    ] {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }
    assert!(!err.is_unavailable());
    // Nothing of it was written: no r2, r1 unchanged, r1/0 still offered
    // and unclaimed, r1/1 not offered.
    assert!(new_leader.run("r2").await.expect("read r2").is_none());
    let r1 = new_leader.run("r1").await.expect("read r1").expect("r1");
    assert_eq!(r1.summary.status, "queued");
    let open = new_leader
        .claim(request("check", 10))
        .await
        .expect("claim what is on offer");
    assert_eq!(
        open.iter()
            .map(|c| c.claimable.key.clone())
            .collect::<Vec<_>>(),
        [key("r1", 0)]
    );

    // The new leader's fenced commits go through.
    new_leader
        .commit(Batch {
            ready: vec![offer("r1", 1, 0)],
            fence: fence(LEADER_NAME, new),
            ..Batch::default()
        })
        .await
        .expect("the new leader commits");
    assert_eq!(
        tasks(&new_leader.claim(request("check", 10)).await.expect("claim")),
        [1]
    );
}

/// The pids of the other sessions on the admin connection's database.
async fn other_sessions(admin: &mut PgConnection) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *admin)
    .await
    .expect("list sessions")
}

/// When the server ends every session of the store (as a restart or a
/// failover does), the store's next call fails as unavailable at worst,
/// and the store recovers by itself: soon every call succeeds again, with
/// every connection of its pool replaced, and the dead connections do not
/// each fail a call first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_recovers_after_its_connections_are_killed() {
    let Some((s, db)) = make_postgres().await else {
        return;
    };
    let s = Arc::new(s);
    created(&*s, new_run("r", "build")).await;
    // Several connections in the pool, all to be killed.
    let warm = (0..PG_POOL).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.run("r").await })
    });
    for h in warm.collect::<Vec<_>>() {
        h.await.expect("join").expect("warm up");
    }

    let mut admin = PgConnection::connect(&db.url).await.expect("admin");
    let victims = other_sessions(&mut admin).await;
    assert!(!victims.is_empty(), "the store holds connections");
    for pid in &victims {
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .expect("terminate");
        assert!(killed, "terminate session {pid}");
    }
    // Wait until they are really gone, so the store meets dead connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = other_sessions(&mut admin).await;
        if !left.iter().any(|pid| victims.contains(pid)) {
            break;
        }
        assert!(Instant::now() < deadline, "sessions {left:?} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut failures = Vec::new();
    let mut recovered = false;
    for _ in 0..20 {
        match s.run("r").await {
            Ok(row) => {
                assert!(row.is_some(), "the run is still there");
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "not reported as unavailable: {e:?}");
                assert!(e.to_string().contains("the database is unreachable"), "{e}");
                failures.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(recovered, "no recovery after 20 tries: {failures:?}");
    // Without a test before each use, every dead connection would fail one
    // call before being dropped.
    assert!(
        failures.len() < victims.len(),
        "{} calls failed on {} dead connections: are connections tested before use? {failures:?}",
        failures.len(),
        victims.len()
    );
    // Every pooled connection is usable again (dead ones are replaced when
    // handed out), for reads and writes alike.
    let after = (0..2 * PG_POOL).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.commit(Batch {
                ready: vec![offer("r", i, 0)],
                ..Batch::default()
            })
            .await
        })
    });
    for h in after.collect::<Vec<_>>() {
        h.await.expect("join").expect("commit after recovery");
    }
    assert_eq!(
        s.claim(request("a", 100)).await.expect("claim").len(),
        2 * PG_POOL as usize
    );
    let _ = admin.close().await;
}

/// The suite's 8 claimers, on PostgreSQL, really contend: the pool had to
/// open several connections for calls in flight at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_eight_claimers_run_on_several_connections() {
    let Some((s, db)) = make_postgres().await else {
        return;
    };
    let s = Arc::new(s);
    cases::eight_claimers_claim_each_of_2000_tasks_once(s.clone()).await;
    // The pool opens a connection only when none is idle, and keeps idle
    // ones for minutes: their number is the peak of concurrent calls.
    let mut admin = PgConnection::connect(&db.url).await.expect("admin");
    let open = other_sessions(&mut admin).await.len();
    assert!(
        open >= 2,
        "the claimers ran on {open} connection(s) of a pool of {PG_POOL}"
    );
    let _ = admin.close().await;
}

/// The claim statement matches tags in SQL; it must agree with the core's
/// rule (`ganger_core::routing::tags_match`) on every case here, tricky
/// ones included (`=` in values, prefixes, LIKE wildcards, empty strings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_match_tags_like_the_core() {
    let Some((s, _db)) = make_postgres().await else {
        return;
    };
    let atoms = [
        "gpu", "gpu=", "gpu=true", "gpus=2", "os=linux", "os", "a=b=c", "a=b", "a", "=x", "", "%",
        "g_u", "gpu=tr%", "é=ü",
    ];
    let mut tag_sets: Vec<Vec<String>> = vec![Vec::new()];
    for (i, x) in atoms.iter().enumerate() {
        tag_sets.push(vec![x.to_string()]);
        for y in &atoms[i + 1..] {
            tag_sets.push(vec![x.to_string(), y.to_string()]);
        }
    }
    let label_sets: Vec<Vec<String>> = [
        &[][..],
        &["gpu"],
        &["gpu=true"],
        &["gpu=", "os=linux"],
        &["gpus=2", "os"],
        &["a=b=c"],
        &["a=b", "=x"],
        &[""],
        &["%=1", "g_u"],
        &["gpu=tr%", "é=ü", "a"],
        &["gpu\0=1", "os\0", "os=linux"],
    ]
    .iter()
    .map(|ls| ls.iter().map(|l| l.to_string()).collect())
    .collect();
    for (round, labels) in label_sets.iter().enumerate() {
        let run = format!("r{round}");
        created(&s, new_run(&run, "build")).await;
        s.commit(Batch {
            ready: tag_sets
                .iter()
                .enumerate()
                .map(|(t, tags)| Claimable {
                    tags: tags.clone(),
                    ..offer(&run, t as u32, 0)
                })
                .collect(),
            ..Batch::default()
        })
        .await
        .expect("offer");
        let got: HashSet<u32> = s
            .claim(ClaimRequest {
                labels: labels.clone(),
                ..request(&format!("agent-{round}"), 10_000)
            })
            .await
            .expect("claim")
            .iter()
            .map(|c| c.claimable.key.task)
            .collect();
        let want: HashSet<u32> = tag_sets
            .iter()
            .enumerate()
            .filter(|(_, tags)| ganger_core::routing::tags_match(tags, labels))
            .map(|(t, _)| t as u32)
            .collect();
        let mut diff: Vec<_> = got
            .symmetric_difference(&want)
            .map(|t| &tag_sets[*t as usize])
            .collect();
        diff.sort();
        assert!(
            diff.is_empty(),
            "labels {labels:?}: disagreement on tags {diff:?}"
        );
        // Leave nothing for the next round's claimer.
        s.commit(Batch {
            done: (0..tag_sets.len() as u32).map(|t| key(&run, t)).collect(),
            ..Batch::default()
        })
        .await
        .expect("clear");
    }
}

/// PostgreSQL text cannot hold NUL: an agent name with one is refused with
/// a clear error, and the batch writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_nul_in_an_agent_name() {
    let Some((s, _db)) = make_postgres().await else {
        return;
    };
    created(&s, new_run("r", "build")).await;
    let err = s
        .commit(Batch {
            ready: vec![offer("r", 0, 0)],
            claims: vec![request("bad\0agent", 1)],
            ..Batch::default()
        })
        .await
        .expect_err("NUL in agent");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(s.claim(request("a", 5)).await.expect("claim").is_empty());
}

/// Connection errors say where and what to check, never the password;
/// a malformed URL is not echoed (it may hold one).
#[tokio::test]
async fn postgres_connect_errors_name_the_target_not_the_password() {
    // Port 1 on loopback: nothing listens there.
    let err = PgStore::connect("postgres://ganger:s3cret-pw@127.0.0.1:1/jobs", 1)
        .await
        .expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    for part in ["127.0.0.1:1", "\"jobs\"", "\"ganger\"", "check that"] {
        assert!(msg.contains(part), "{part} missing in: {msg}");
    }
    assert!(!msg.contains("s3cret-pw"), "password leaked: {msg}");
    assert!(!format!("{err:?}").contains("s3cret-pw"), "password leaked");

    let err = PgStore::connect("postgres://u:s3cret-pw@127.0.0.1:5432/db?sslmode=bogus", 1)
        .await
        .expect_err("bad sslmode");
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

#[test]
fn test_database_urls_keep_credentials_and_parameters() {
    assert_eq!(
        pgdb::with_database("postgres://u:p@h:5/postgres?sslmode=disable", "t1"),
        "postgres://u:p@h:5/t1?sslmode=disable"
    );
    assert_eq!(pgdb::with_database("postgres://h", "t2"), "postgres://h/t2");
}

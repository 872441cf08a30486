//! The server engine against a real SQLite file and real processes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ganger_api::SubmitRequest;
use ganger_engine::{Engine, EngineConfig, EngineError, LogEvent};
use ganger_store::SqliteStore;

/// The engine's settings in these tests: a lease long enough never to run
/// out unless a test shortens it.
fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_owned(),
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(100),
        kill_grace: Duration::from_secs(5),
        log_cap: None,
        local_slots: Some(2),
        base_env: std::env::vars().collect(),
        docker: None,
        fence: None,
    }
}

/// With `GANGER_TMP` in the tasks' environment, for marker files.
fn config_with_tmp(dir: &std::path::Path, tmp: &std::path::Path) -> EngineConfig {
    let mut c = config(dir);
    c.base_env
        .push(("GANGER_TMP".into(), tmp.display().to_string()));
    c
}

async fn open(config: EngineConfig) -> Engine {
    let store = SqliteStore::open(config.data_dir.join("ganger.db"))
        .await
        .expect("open store");
    Engine::open(Arc::new(store), config)
        .await
        .expect("engine opens")
}

async fn engine(dir: &std::path::Path, slots: u32) -> Engine {
    open(EngineConfig {
        log_cap: Some(1 << 20),
        local_slots: Some(slots),
        ..config(dir)
    })
    .await
}

fn submit(job: &str) -> SubmitRequest {
    SubmitRequest {
        job: job.into(),
        ..SubmitRequest::default()
    }
}

/// Polls the run until `done` holds, for at most 30 s.
async fn wait_for(
    e: &Engine,
    id: &str,
    done: impl Fn(&ganger_api::RunDetail) -> bool,
) -> ganger_api::RunDetail {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = e.run(id).await.expect("run exists");
        if done(&run) {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {run:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn terminal(r: &ganger_api::RunDetail) -> bool {
    matches!(
        r.summary.status.as_str(),
        "succeeded" | "failed" | "cancelled"
    )
}

const JOBS: &str = r#"
jobs:
  hello:
    params:
      who: {default: world}
    tasks:
      greet: {run: 'echo "hello {{ params.who }}"; echo "v=1" >> "$GANGER_OUTPUT"'}
      after: {run: 'echo "got {{ tasks.greet.outputs.v }}"', needs: [greet]}
  flaky:
    tasks:
      a: {run: 'true'}
      b: {run: 'test -e "$GANGER_TMP/ok"', needs: [a]}
      c: {run: 'true', needs: [b]}
  one:
    concurrency: 1
    tasks:
      wait: {run: 'while [ ! -e "$GANGER_TMP/go" ]; do sleep 0.05; done'}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_flows_through_and_its_logs_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path(), 2).await;
    e.apply(vec![("jobs.yml".into(), JOBS.into())])
        .await
        .expect("valid");
    let mut req = submit("hello");
    req.params = BTreeMap::from([("who".into(), "ganger".into())]);
    let id = e.submit(req).await.expect("accepted").id;
    let run = wait_for(&e, &id, terminal).await;
    assert_eq!(run.summary.status, "succeeded", "{run:?}");
    assert_eq!(run.tasks[1].attempts[0].agent.as_deref(), Some("local"));
    let mut rx = e.logs(&id, "after", true).await.expect("logs");
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            LogEvent::Lines { text: t, .. } => text.push_str(&t),
            LogEvent::End { status } => {
                assert_eq!(status, "succeeded");
                break;
            }
        }
    }
    assert!(text.contains(" out got 1\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path(), 1).await;
    e.apply(vec![("jobs.yml".into(), JOBS.into())])
        .await
        .expect("valid");
    assert!(matches!(
        e.submit(submit("nope")).await,
        Err(EngineError::NotFound(_))
    ));
    let mut req = submit("hello");
    req.params = BTreeMap::from([("whom".into(), "x".into())]);
    assert!(matches!(
        e.submit(req).await,
        Err(EngineError::InvalidParams { .. })
    ));
    let bad = e
        .apply(vec![(
            "bad.yml".into(),
            "jobs:\n x:\n  tasks:\n   a: {run: y, needs: [zz]}\n".into(),
        )])
        .await;
    match bad {
        Err(EngineError::InvalidJob { details }) => {
            assert!(details[0].starts_with("bad.yml:4:"), "{details:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.runs(None, None, None, 10)
            .await
            .expect("list")
            .runs
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_submit_and_retry_of_what_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let e = open(config_with_tmp(dir.path(), &tmp)).await;
    e.apply(vec![("jobs.yml".into(), JOBS.into())])
        .await
        .expect("valid");
    let mut req = submit("flaky");
    req.idempotency_key = Some("k1".into());
    let first = e.submit(req.clone()).await.expect("accepted");
    let again = e.submit(req).await.expect("accepted");
    assert_eq!(first.id, again.id);
    assert!(again.existing);
    let run = wait_for(&e, &first.id, terminal).await;
    assert_eq!(run.summary.status, "failed");
    assert_eq!(run.tasks[2].status, "skipped");
    std::fs::write(tmp.join("ok"), "").expect("write");
    e.retry(&first.id).await.expect("retry");
    let run = wait_for(&e, &first.id, terminal).await;
    assert_eq!(run.summary.status, "succeeded", "{run:?}");
    assert_eq!(run.tasks[0].attempts.len(), 1, "a kept its success");
    assert_eq!(run.tasks[1].attempts.len(), 2);
    assert_eq!(
        e.runs(None, None, None, 10).await.expect("list").runs.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_queues_and_cancel_of_a_waiting_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let e = open(config_with_tmp(dir.path(), &tmp)).await;
    e.apply(vec![("jobs.yml".into(), JOBS.into())])
        .await
        .expect("valid");
    let a = e.submit(submit("one")).await.expect("a");
    let b = e.submit(submit("one")).await.expect("b");
    let c = e.submit(submit("one")).await.expect("c");
    assert_eq!(a.status, "running");
    assert_eq!(b.status, "queued");
    let rb = e.run(&b.id).await.expect("b");
    assert!(
        rb.waiting
            .as_deref()
            .is_some_and(|w| w.contains("concurrency full")),
        "{rb:?}"
    );
    let rc = e.run(&c.id).await.expect("c");
    assert!(
        rc.waiting
            .as_deref()
            .is_some_and(|w| w.contains("queued behind 1 run")),
        "{rc:?}"
    );
    let cancelled = e.cancel(&b.id).await.expect("cancel");
    assert_eq!(cancelled.status, "cancelled");
    std::fs::write(tmp.join("go"), "").expect("go");
    assert_eq!(
        wait_for(&e, &a.id, terminal).await.summary.status,
        "succeeded"
    );
    assert_eq!(
        wait_for(&e, &c.id, terminal).await.summary.status,
        "succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_interrupts_what_runs_and_the_next_start_runs_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("started");
    let job = format!(
        "jobs:\n  long:\n    tasks:\n      t: {{run: 'if [ -e {m} ]; then exit 0; fi; touch {m}; sleep 30'}}\n",
        m = marker.display()
    );
    let e = engine(dir.path(), 1).await;
    e.apply(vec![("long.yml".into(), job)])
        .await
        .expect("valid");
    let id = e.submit(submit("long")).await.expect("accepted").id;
    wait_for(&e, &id, |r| {
        r.tasks[0].status == "running" && marker.exists()
    })
    .await;
    let began = std::time::Instant::now();
    e.shutdown(Duration::from_millis(100)).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "the sleep was killed, not awaited"
    );
    assert!(matches!(
        e.submit(submit("long")).await,
        Err(EngineError::ShuttingDown)
    ));
    drop(e);
    let e = engine(dir.path(), 1).await;
    let run = wait_for(&e, &id, terminal).await;
    assert_eq!(run.summary.status, "succeeded", "{run:?}");
    let attempts = &run.tasks[0].attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, "lost");
    assert!(
        attempts[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("interrupted"))
    );
}

async fn engine_with(dir: &std::path::Path, lease: Duration, local_slots: Option<u32>) -> Engine {
    open(EngineConfig {
        lease,
        local_slots,
        ..config(dir)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_loses_the_attempt_and_fences_its_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine_with(dir.path(), Duration::from_millis(300), None).await;
    let job = "jobs:\n  j:\n    tasks:\n      t: {run: 'true', retry: 1}\n";
    e.apply(vec![("j.yml".into(), job.into())])
        .await
        .expect("valid");
    let id = e.submit(submit("j")).await.expect("accepted").id;
    let process = vec!["process".to_owned()];
    let wait = Duration::from_secs(5);
    let one = ganger_engine::Want {
        max: 1,
        ahead: false,
    };
    let first = e
        .claim("ghost", vec![], process.clone(), one, wait)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    let (key, attempt) = (first[0].key.clone(), first[0].attempt);
    e.report("ghost", &key, attempt, ganger_engine::AgentReport::Started)
        .await
        .expect("started");
    // No heartbeat: the lease runs out and the attempt is lost, then retried.
    let second = e
        .claim("other", vec![], process, one, wait)
        .await
        .expect("claim again");
    assert_eq!(
        second.len(),
        1,
        "the retry is offered once the lease expired"
    );
    assert_eq!(second[0].attempt, attempt + 1);
    let late = ganger_engine::AgentReport::Finished {
        exit: ganger_core::run::Exit::Code(0),
        outputs: BTreeMap::new(),
    };
    assert!(matches!(
        e.report("ghost", &key, attempt, late).await,
        Err(EngineError::Stale(_))
    ));
    e.report(
        "other",
        &key,
        attempt + 1,
        ganger_engine::AgentReport::Started,
    )
    .await
    .expect("started");
    let done = ganger_engine::AgentReport::Finished {
        exit: ganger_core::run::Exit::Code(0),
        outputs: BTreeMap::new(),
    };
    e.report("other", &key, attempt + 1, done)
        .await
        .expect("finished");
    let run = wait_for(&e, &id, terminal).await;
    assert_eq!(run.summary.status, "succeeded");
    let attempts = &run.tasks[0].attempts;
    assert_eq!(attempts[0].status, "lost");
    assert_eq!(attempts[0].agent.as_deref(), Some("ghost"));
    assert_eq!(attempts[1].agent.as_deref(), Some("other"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_delay_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("failed-once");
    let job = format!(
        "jobs:\n  j:\n    tasks:\n      t:\n        run: 'if [ -e {m} ]; then exit 0; fi; touch {m}; exit 1'\n        retry: {{attempts: 1, delay: 1500ms}}\n",
        m = marker.display()
    );
    let e = engine(dir.path(), 1).await;
    e.apply(vec![("j.yml".into(), job)]).await.expect("valid");
    let id = e.submit(submit("j")).await.expect("accepted").id;
    let waiting = wait_for(&e, &id, |r| r.tasks[0].retry_at.is_some()).await;
    let due = waiting.tasks[0].retry_at.expect("retry time");
    e.shutdown(Duration::from_millis(100)).await;
    drop(e);
    let e = engine(dir.path(), 1).await;
    let run = wait_for(&e, &id, terminal).await;
    assert_eq!(run.summary.status, "succeeded", "{run:?}");
    let second = run.tasks[0].attempts[1]
        .started_at
        .expect("second attempt started");
    assert!(
        second >= due,
        "the retry waited for its time: {second} < {due}"
    );
}

mod remote {
    use super::*;
    use ganger_api::agent as wire;

    fn register(name: &str, labels: &[&str]) -> wire::Register {
        wire::Register {
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            slots: 2,
            executors: vec!["process".into()],
            version: "test".into(),
        }
    }

    fn claim(agent: &str, wait_ms: u64) -> wire::Claim {
        wire::Claim {
            agent_id: agent.into(),
            max: 4,
            wait_ms: Some(wait_ms),
            ahead: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_with_a_free_slot_is_served_before_one_claiming_ahead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), Duration::from_secs(30), None).await;
        let job = "jobs:\n  j:\n    tasks:\n      t: {run: 'true'}\n";
        e.apply(vec![("j.yml".into(), job.into())])
            .await
            .expect("valid");
        for name in ["busy", "idle"] {
            e.register(register(name, &[])).await.expect("register");
        }
        let ahead = wire::Claim {
            ahead: true,
            ..claim("busy", 300)
        };
        let busy = e.agent_claim(ahead);
        let idle = e.agent_claim(claim("idle", 5_000));
        tokio::pin!(busy, idle);
        // Polled once each, both claims wait in the engine before the run
        // arrives, the one claiming ahead first.
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut busy)
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut idle)
                .await
                .is_err()
        );
        e.submit(submit("j")).await.expect("accepted");
        let got = idle.await.expect("claim");
        assert_eq!(got.tasks.len(), 1, "the agent with a free slot gets it");
        let none = busy.await.expect("claim");
        assert!(none.tasks.is_empty(), "{none:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tagged_tasks_go_only_to_matching_agents_and_say_what_they_wait_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), Duration::from_secs(30), None).await;
        let job = "jobs:\n  j:\n    tasks:\n      t: {run: 'echo hi', tags: [os=mac]}\n";
        e.apply(vec![("j.yml".into(), job.into())])
            .await
            .expect("valid");
        e.register(register("linux-1", &["os=linux"]))
            .await
            .expect("register");
        let id = e.submit(submit("j")).await.expect("accepted").id;
        let run = wait_for(&e, &id, |r| r.tasks[0].status == "ready").await;
        assert_eq!(
            run.tasks[0].reason.as_deref(),
            Some("waiting for an agent with os=mac")
        );
        let none = e.agent_claim(claim("linux-1", 100)).await.expect("claim");
        assert!(none.tasks.is_empty(), "the linux agent gets nothing");
        e.register(register("mac-1", &["os=mac", "gpu"]))
            .await
            .expect("register");
        let got = e.agent_claim(claim("mac-1", 5_000)).await.expect("claim");
        assert_eq!(got.tasks.len(), 1);
        let attempt = got.tasks[0].attempt.clone();
        assert_eq!(got.tasks[0].name, "t");
        let spec: ganger_core::run::TaskSpec =
            serde_json::from_value(got.tasks[0].spec.clone()).expect("a task spec");
        assert_eq!(spec.name, "t");
        // Only the holder may speak of the attempt.
        let foreign = wire::Started {
            agent_id: "linux-1".into(),
            attempt: attempt.clone(),
        };
        assert!(matches!(
            e.agent_started(foreign).await,
            Err(EngineError::Stale(_))
        ));
        e.agent_started(wire::Started {
            agent_id: "mac-1".into(),
            attempt: attempt.clone(),
        })
        .await
        .expect("started");
        let chunk = |offset, data: &str| wire::LogChunk {
            agent_id: "mac-1".into(),
            attempt: attempt.clone(),
            offset,
            data: data.into(),
        };
        let line = "2026-11-23T00:00:00.000Z out hi\n";
        let ack = e.agent_log(chunk(0, line)).await.expect("log");
        assert_eq!(ack.next_offset, line.len() as u64);
        let again = e.agent_log(chunk(0, line)).await.expect("resent");
        assert_eq!(again.next_offset, line.len() as u64, "stored once");
        let hb = wire::Heartbeat {
            agent_id: "mac-1".into(),
            running: vec![attempt.clone()],
            draining: false,
        };
        assert!(
            e.agent_heartbeat(hb.clone())
                .await
                .expect("heartbeat")
                .stale
                .is_empty()
        );
        let done = wire::Finished {
            agent_id: "mac-1".into(),
            attempt: attempt.clone(),
            exit: wire::Exit {
                code: Some(0),
                ..Default::default()
            },
            outputs: BTreeMap::new(),
        };
        e.agent_finished(done.clone()).await.expect("finished");
        let run = wait_for(&e, &id, terminal).await;
        assert_eq!(run.summary.status, "succeeded");
        assert_eq!(run.tasks[0].attempts[0].agent.as_deref(), Some("mac-1"));
        assert!(matches!(
            e.agent_finished(done).await,
            Err(EngineError::Stale(_))
        ));
        let stale = e.agent_heartbeat(hb).await.expect("heartbeat").stale;
        assert_eq!(stale, vec![attempt], "a finished attempt is no longer held");
        let mut rx = e.logs(&id, "t", false).await.expect("logs");
        let mut text = String::new();
        while let Some(LogEvent::Lines { text: t, .. }) = rx.recv().await {
            text.push_str(&t);
        }
        assert_eq!(text, line);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_from_the_holder_shows_in_the_run_and_stale_progress_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), Duration::from_secs(30), None).await;
        let job = "jobs:\n  j:\n    params: {who: {default: me}}\n    tasks:\n      t:\n        run: 'true'\n        body: {greet: 'hi {{ params.who }}'}\n";
        e.apply(vec![("j.yml".into(), job.into())])
            .await
            .expect("valid");
        e.register(register("a1", &[])).await.expect("register");
        e.register(register("a2", &[])).await.expect("register");
        let id = e.submit(submit("j")).await.expect("accepted").id;
        let got = e.agent_claim(claim("a1", 5_000)).await.expect("claim");
        let attempt = got.tasks[0].attempt.clone();
        // The spec carries what the task's job endpoint answers.
        let spec: ganger_core::run::TaskSpec =
            serde_json::from_value(got.tasks[0].spec.clone()).expect("a task spec");
        assert_eq!(spec.params.get("who").map(String::as_str), Some("me"));
        assert_eq!(spec.body, Some(serde_json::json!({"greet": "hi me"})));
        let progress = |agent: &str, attempt: &wire::AttemptRef, progress| wire::Progress {
            agent_id: agent.into(),
            attempt: attempt.clone(),
            progress,
        };
        // Heard before the start arrives: the two travel apart.
        e.agent_progress(progress("a1", &attempt, 0.25))
            .await
            .expect("claimed attempts may report progress");
        e.agent_started(wire::Started {
            agent_id: "a1".into(),
            attempt: attempt.clone(),
        })
        .await
        .expect("started");
        e.agent_progress(progress("a1", &attempt, 0.45))
            .await
            .expect("progress");
        let run = e.run(&id).await.expect("run");
        assert_eq!(run.tasks[0].status, "running");
        assert_eq!(run.tasks[0].attempts[0].progress, Some(0.45));
        for bad in [1.5, -0.1] {
            assert!(matches!(
                e.agent_progress(progress("a1", &attempt, bad)).await,
                Err(EngineError::InvalidRequest(_))
            ));
        }
        assert!(
            matches!(
                e.agent_progress(progress("a2", &attempt, 0.9)).await,
                Err(EngineError::Stale(_))
            ),
            "only the holder speaks of an attempt"
        );
        let old = wire::AttemptRef {
            attempt: attempt.attempt + 1,
            ..attempt.clone()
        };
        assert!(matches!(
            e.agent_progress(progress("a1", &old, 0.9)).await,
            Err(EngineError::Stale(_))
        ));
        e.agent_finished(wire::Finished {
            agent_id: "a1".into(),
            attempt: attempt.clone(),
            exit: wire::Exit {
                code: Some(0),
                ..Default::default()
            },
            outputs: BTreeMap::new(),
        })
        .await
        .expect("finished");
        let run = wait_for(&e, &id, terminal).await;
        assert_eq!(run.summary.status, "succeeded");
        assert_eq!(run.tasks[0].attempts[0].progress, Some(0.45), "kept");
        assert!(
            matches!(
                e.agent_progress(progress("a1", &attempt, 1.0)).await,
                Err(EngineError::Stale(_))
            ),
            "a finished attempt hears no more"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_departed_agent_s_open_claim_gets_no_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), Duration::from_secs(30), None).await;
        let job = "jobs:\n  j:\n    tasks:\n      t: {run: 'true'}\n";
        e.apply(vec![("j.yml".into(), job.into())])
            .await
            .expect("valid");
        e.register(register("leaver", &[])).await.expect("register");
        // One poll sends the claim to the engine (commands keep their
        // order), so it is pending before the agent leaves, which must end
        // it empty even though work then arrives.
        let mut pending = Box::pin(e.agent_claim(claim("leaver", 20_000)));
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut pending)
                .await
                .is_err()
        );
        e.deregister(wire::Deregister {
            agent_id: "leaver".into(),
        })
        .await
        .expect("leave");
        let id = e.submit(submit("j")).await.expect("accepted").id;
        let got = pending.await.expect("answered");
        assert!(got.tasks.is_empty(), "{got:?}");
        let run = e.run(&id).await.expect("run");
        assert_eq!(
            run.tasks[0].status, "ready",
            "the task still waits for an agent"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_agent_messages_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), Duration::from_secs(30), Some(1)).await;
        for bad in [
            register("", &[]),
            register("local", &[]),
            register("a b", &[]),
            register("x", &["=v"]),
        ] {
            assert!(matches!(
                e.register(bad).await,
                Err(EngineError::InvalidRequest(_))
            ));
        }
        assert!(matches!(
            e.agent_claim(claim("ghost", 10)).await,
            Err(EngineError::NotFound(_))
        ));
        let agents = e.agents().await.expect("agents");
        assert_eq!(agents.len(), 1, "only the in-process agent: {agents:?}");
    }
}

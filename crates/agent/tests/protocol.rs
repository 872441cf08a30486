//! The agent loop against a scripted fake server: real processes, real
//! HTTP, and a server that answers what each test needs (outages, stale
//! attempts, kill orders, a forgotten agent, a refused token).
//! Everything is polled with a deadline, never slept on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ganger_agent::{AgentConfig, AgentError, ClientError, Notice};
use ganger_api::agent::{
    Assigned, AttemptRef, Claim, Claimed, Finished, Heartbeat, HeartbeatAck, Kill, LogAck,
    LogChunk, Registered, Started,
};
use ganger_core::run::{ExecSpec, Phase, TaskSpec};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

const DEADLINE: Duration = Duration::from_secs(30);

/// What the fake server saw, and what it is told to answer.
#[derive(Default)]
struct Fake {
    registrations: u32,
    deregistered: bool,
    started: Vec<AttemptRef>,
    logs: HashMap<AttemptRef, Vec<u8>>,
    results: Vec<Finished>,
    /// The attempts listed by the last heartbeat.
    last_running: Option<Vec<AttemptRef>>,
    claims: Vec<Claim>,

    to_assign: VecDeque<Assigned>,
    kills: Vec<Kill>,
    stale: Vec<AttemptRef>,
    /// Answer 503 to this many results (and log chunks) first.
    outage: u32,
    /// Answer 409 to every log chunk.
    stale_logs: bool,
    /// Answer 404 to this many heartbeats first.
    forget: u32,
    /// Answer 401 to registrations.
    refuse: bool,
}

type Shared = Arc<Mutex<Fake>>;
type Answer = (StatusCode, String);

fn ok(value: impl serde::Serialize) -> Answer {
    (
        StatusCode::OK,
        serde_json::to_string(&value).expect("encodes"),
    )
}

fn error(status: StatusCode, code: &str) -> Answer {
    let body = json!({"error": {"code": code, "message": format!("fake says {code}")}});
    (status, body.to_string())
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> T {
    serde_json::from_slice(bytes).expect("the agent sends protocol messages")
}

async fn register(State(s): State<Shared>, bytes: Bytes) -> Answer {
    let _: ganger_api::agent::Register = body(&bytes);
    let mut s = s.lock().unwrap();
    if s.refuse {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    s.registrations += 1;
    ok(Registered {
        agent_id: "fake-agent".into(),
        lease_ms: 1000,
        heartbeat_ms: 100,
    })
}

async fn claim(State(s): State<Shared>, bytes: Bytes) -> Answer {
    let claim: Claim = body(&bytes);
    s.lock().unwrap().claims.push(claim.clone());
    let start = Instant::now();
    // Holds the poll up to 2 s, as a real server would up to 30 s.
    loop {
        {
            let mut s = s.lock().unwrap();
            if !s.to_assign.is_empty() || !s.kills.is_empty() {
                let n = (claim.max as usize).min(s.to_assign.len());
                let tasks = s.to_assign.drain(..n).collect();
                let kill = std::mem::take(&mut s.kills);
                return ok(Claimed { tasks, kill });
            }
        }
        if start.elapsed() > Duration::from_secs(2) {
            return ok(Claimed::default());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn heartbeat(State(s): State<Shared>, bytes: Bytes) -> Answer {
    let hb: Heartbeat = body(&bytes);
    let mut s = s.lock().unwrap();
    if s.forget > 0 {
        s.forget -= 1;
        return error(StatusCode::NOT_FOUND, "not_found");
    }
    let stale = s
        .stale
        .iter()
        .filter(|a| hb.running.contains(a))
        .cloned()
        .collect();
    s.last_running = Some(hb.running);
    let kill = std::mem::take(&mut s.kills);
    ok(HeartbeatAck { stale, kill })
}

async fn started(State(s): State<Shared>, bytes: Bytes) -> Answer {
    let st: Started = body(&bytes);
    s.lock().unwrap().started.push(st.attempt);
    ok(json!({}))
}

async fn logs(State(s): State<Shared>, bytes: Bytes) -> Answer {
    let chunk: LogChunk = body(&bytes);
    let mut s = s.lock().unwrap();
    if s.stale_logs {
        return error(StatusCode::CONFLICT, "stale_attempt");
    }
    if s.outage > 0 {
        s.outage -= 1;
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    // Stored at its offset, like the real server: never twice, no gaps.
    let log = s.logs.entry(chunk.attempt).or_default();
    let len = log.len() as u64;
    if chunk.offset <= len {
        let skip = (len - chunk.offset) as usize;
        if let Some(rest) = chunk.data.as_bytes().get(skip..) {
            log.extend_from_slice(rest);
        }
    }
    ok(LogAck {
        next_offset: log.len() as u64,
    })
}

async fn result(State(s): State<Shared>, bytes: Bytes) -> Answer {
    let f: Finished = body(&bytes);
    let mut s = s.lock().unwrap();
    if s.outage > 0 {
        s.outage -= 1;
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    s.results.push(f);
    ok(json!({}))
}

async fn deregister(State(s): State<Shared>) -> Answer {
    s.lock().unwrap().deregistered = true;
    ok(json!({}))
}

/// The fake, an agent running against it, and a way to stop the agent.
struct Harness {
    fake: Shared,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<Result<(), AgentError>>,
    notices: Arc<Mutex<Vec<Notice>>>,
}

impl Harness {
    async fn start(fake: Fake, grace: Duration) -> Harness {
        let fake = Arc::new(Mutex::new(fake));
        let app = Router::new()
            .route("/api/v1/agent/register", post(register))
            .route("/api/v1/agent/claim", post(claim))
            .route("/api/v1/agent/heartbeat", post(heartbeat))
            .route("/api/v1/agent/started", post(started))
            .route("/api/v1/agent/logs", post(logs))
            .route("/api/v1/agent/result", post(result))
            .route("/api/v1/agent/deregister", post(deregister))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().expect("tempdir");
        let server =
            ganger_agent::parse_server(&format!("127.0.0.1:{}", addr.port())).expect("address");
        let (notices_tx, mut notices_rx) = mpsc::unbounded_channel();
        let notices = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&notices);
        tokio::spawn(async move {
            while let Some(n) = notices_rx.recv().await {
                keep.lock().unwrap().push(n);
            }
        });
        let config = AgentConfig {
            slots: 2,
            workdir: dir.path().join("agent"),
            grace,
            notices: Some(notices_tx),
            labels: vec!["os=linux".into()],
            ..AgentConfig::new(vec![server], "secret".into(), "fake-agent".into())
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(ganger_agent::run(config, async {
            let _ = stopped.await;
        }));
        Harness {
            fake,
            dir,
            stop: Some(stop),
            agent,
            notices,
        }
    }

    fn assign(&self, run: &str, script: &str) -> AttemptRef {
        let assigned = assignment(run, script);
        let attempt = assigned.attempt.clone();
        self.fake.lock().unwrap().to_assign.push_back(assigned);
        attempt
    }
}

fn assignment(run: &str, script: &str) -> Assigned {
    let attempt = AttemptRef {
        run_id: run.into(),
        task: 0,
        phase: "main".into(),
        attempt: 1,
    };
    let spec = TaskSpec {
        task: 0,
        name: "t".into(),
        attempt: 1,
        phase: Phase::Main,
        executor: ExecSpec::Process {
            script: script.into(),
        },
        env: vec![],
        timeout: None,
        tags: vec![],
        params: Default::default(),
        body: None,
        resources: None,
    };
    Assigned {
        attempt,
        name: "t".into(),
        spec: serde_json::to_value(spec).expect("encodes"),
    }
}

impl Harness {
    /// Polls the fake's state until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Fake) -> bool) {
        let start = Instant::now();
        loop {
            if done(&self.fake.lock().unwrap()) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what} did not happen within {DEADLINE:?}; notices: {:?}",
                self.notices.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until_notice(&self, what: &str, matches: impl Fn(&Notice) -> bool) {
        let start = Instant::now();
        while !self.notices.lock().unwrap().iter().any(&matches) {
            assert!(
                start.elapsed() < DEADLINE,
                "no notice of {what} within {DEADLINE:?}: {:?}",
                self.notices.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn stop(mut self) -> (Shared, Result<(), AgentError>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(DEADLINE, &mut self.agent)
            .await
            .expect("the agent stops within the deadline")
            .expect("the agent's task does not panic");
        (self.fake, result)
    }
}

async fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process is gone (or a zombie waiting for its reaper).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

async fn until_gone(pid: &str) {
    let start = Instant::now();
    while !gone(pid) {
        assert!(start.elapsed() < DEADLINE, "process {pid} still runs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn log_text(fake: &Fake, attempt: &AttemptRef) -> String {
    String::from_utf8(fake.logs.get(attempt).cloned().unwrap_or_default()).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn output_and_result_arrive_even_through_an_outage() {
    let h = Harness::start(
        Fake {
            outage: 4,
            ..Fake::default()
        },
        Duration::from_secs(2),
    )
    .await;
    let a = h.assign(
        "r1",
        "echo one; echo two >&2; echo 'k=v' >> \"$GANGER_OUTPUT\"; exit 3",
    );
    h.until("the result", |f| !f.results.is_empty()).await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    let f = fake.lock().unwrap();
    assert_eq!(f.started, std::slice::from_ref(&a));
    let r = &f.results[0];
    assert_eq!(r.attempt, a);
    assert_eq!((r.exit.code, r.exit.signal), (Some(3), None));
    assert_eq!(r.outputs.get("k").map(String::as_str), Some("v"));
    // Every line, once, in the stored format, before the result.
    let log = log_text(&f, &a);
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(
        log.contains(" out one\n") && log.contains(" err two\n"),
        "{log}"
    );
    assert!(f.deregistered);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_attempt_is_killed_and_forgotten() {
    let h = Harness::start(Fake::default(), Duration::from_secs(2)).await;
    let pidfile = h.marker("pid");
    let a = h.assign(
        "r2",
        &format!("sleep 100 & echo $! > {}; wait", pidfile.display()),
    );
    let pid = wait_for_file(&pidfile).await;
    h.fake.lock().unwrap().stale.push(a.clone());
    until_gone(&pid).await;
    h.until_notice("the drop", |n| matches!(n, Notice::Dropped { .. }))
        .await;
    // The next heartbeats no longer name it, and no result is sent for it.
    h.until("a heartbeat without it", |f| {
        f.last_running.as_ref().is_some_and(Vec::is_empty)
    })
    .await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    assert!(fake.lock().unwrap().results.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_409_on_output_kills_the_attempt() {
    let h = Harness::start(
        Fake {
            stale_logs: true,
            ..Fake::default()
        },
        Duration::from_secs(2),
    )
    .await;
    let pidfile = h.marker("pid");
    h.assign(
        "r3",
        &format!(
            "sleep 100 & echo $! > {}; echo hello; wait",
            pidfile.display()
        ),
    );
    let pid = wait_for_file(&pidfile).await;
    until_gone(&pid).await;
    h.until_notice("the drop", |n| matches!(n, Notice::Dropped { .. }))
        .await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    assert!(fake.lock().unwrap().results.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_order_stops_the_task_gracefully() {
    let h = Harness::start(Fake::default(), Duration::from_secs(5)).await;
    let a = h.assign(
        "r4",
        "trap 'echo got term; exit 7' TERM; echo ready; sleep 100 & wait",
    );
    h.until("the start", |f| !f.started.is_empty()).await;
    h.until("the first line", |f| log_text(f, &a).contains("ready"))
        .await;
    h.fake.lock().unwrap().kills.push(Kill {
        attempt: a.clone(),
        force: false,
    });
    h.until("the result", |f| !f.results.is_empty()).await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    let f = fake.lock().unwrap();
    assert_eq!(f.results[0].exit.code, Some(7), "{:?}", f.results[0]);
    assert!(log_text(&f, &a).contains("got term"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_kills_what_outlives_the_grace_and_still_reports_it() {
    let h = Harness::start(Fake::default(), Duration::from_millis(300)).await;
    let a = h.assign("r5", "echo started; exec sleep 100");
    h.until("the start", |f| !f.started.is_empty()).await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    let f = fake.lock().unwrap();
    assert_eq!(f.results.len(), 1);
    assert_eq!(f.results[0].attempt, a);
    // Cut off by the agent's own stop, not by anything the task did: it
    // runs again elsewhere without using a retry.
    assert!(
        f.results[0].exit.interrupted.is_some(),
        "{:?}",
        f.results[0]
    );
    assert!(log_text(&f, &a).contains("started"));
    assert!(f.deregistered);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_agent_claims_one_task_ahead_per_slot_and_gives_them_back_when_it_stops() {
    let h = Harness::start(Fake::default(), Duration::from_millis(300)).await;
    let running: Vec<AttemptRef> = ["r1", "r2"]
        .iter()
        .map(|run| h.assign(run, "exec sleep 100"))
        .collect();
    h.until("both slots running", |f| f.started.len() == 2)
        .await;
    let queued: Vec<AttemptRef> = ["r3", "r4", "r5"]
        .iter()
        .map(|run| h.assign(run, "echo never"))
        .collect();
    // Two slots: two tasks claimed ahead, the third stays with the server.
    h.until("two tasks claimed ahead", |f| f.to_assign.len() == 1)
        .await;
    h.until("their leases renewed", |f| {
        f.last_running.as_ref().is_some_and(|r| r.len() == 4)
    })
    .await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    let f = fake.lock().unwrap();
    let ahead: Vec<&Claim> = f.claims.iter().filter(|c| c.ahead).collect();
    assert!(!ahead.is_empty(), "{:?}", f.claims);
    assert!(ahead.iter().all(|c| c.max <= 2), "{:?}", f.claims);
    assert!(
        f.claims.iter().filter(|c| !c.ahead).all(|c| c.max <= 2),
        "{:?}",
        f.claims
    );
    // Started in whichever order their tasks ran first.
    let mut started = f.started.clone();
    started.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    assert_eq!(started, running, "what waited never started");
    assert_eq!(f.results.len(), 4, "{:?}", f.results);
    for r in &f.results {
        assert!(r.exit.interrupted.is_some(), "{r:?}");
        assert!(running.contains(&r.attempt) || queued[..2].contains(&r.attempt));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_claimed_ahead_starts_when_a_slot_frees() {
    let h = Harness::start(Fake::default(), Duration::from_secs(5)).await;
    let first = h.assign("r1", "exec sleep 100");
    let second = h.assign("r2", "exec sleep 100");
    h.until("both slots running", |f| f.started.len() == 2)
        .await;
    let next = h.assign("r3", "echo third");
    h.until("the third task claimed ahead", |f| f.to_assign.is_empty())
        .await;
    assert_eq!(h.fake.lock().unwrap().started.len(), 2, "no slot is free");
    h.fake.lock().unwrap().kills.push(Kill {
        attempt: first.clone(),
        force: true,
    });
    h.until("the third task's result", |f| {
        f.results.iter().any(|r| r.attempt == next)
    })
    .await;
    h.fake.lock().unwrap().kills.push(Kill {
        attempt: second,
        force: true,
    });
    h.until("all results", |f| f.results.len() == 3).await;
    let (fake, result) = h.stop().await;
    result.expect("drains cleanly");
    let f = fake.lock().unwrap();
    let third = f.results.iter().find(|r| r.attempt == next).expect("there");
    assert_eq!(third.exit.code, Some(0), "{third:?}");
    assert!(log_text(&f, &next).contains("third"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_agent_registers_again() {
    let h = Harness::start(
        Fake {
            forget: 1,
            ..Fake::default()
        },
        Duration::from_secs(2),
    )
    .await;
    h.until("a second registration", |f| f.registrations == 2)
        .await;
    h.until_notice("forgetting", |n| *n == Notice::Forgotten)
        .await;
    let (_, result) = h.stop().await;
    result.expect("drains cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_fatal() {
    let h = Harness::start(
        Fake {
            refuse: true,
            ..Fake::default()
        },
        Duration::from_secs(2),
    )
    .await;
    let result = tokio::time::timeout(DEADLINE, h.agent)
        .await
        .expect("stops at once")
        .expect("no panic");
    assert!(
        matches!(
            result,
            Err(AgentError::Refused(ClientError::Unauthorized(_)))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_server_is_skipped_for_the_next_one() {
    // A port nobody listens on, then the fake.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address").port()
    };
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let app = Router::new()
        .route("/api/v1/agent/register", post(register))
        .route("/api/v1/agent/claim", post(claim))
        .route("/api/v1/agent/heartbeat", post(heartbeat))
        .route("/api/v1/agent/deregister", post(deregister))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let servers = [closed, port]
        .iter()
        .map(|p| ganger_agent::parse_server(&format!("http://127.0.0.1:{p}")).expect("url"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let config = AgentConfig {
        workdir: dir.path().to_owned(),
        notices: Some(notices_tx),
        ..AgentConfig::new(servers, "secret".into(), "failover".into())
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(ganger_agent::run(config, async {
        let _ = stopped.await;
    }));
    let registered = tokio::time::timeout(DEADLINE, notices.recv())
        .await
        .expect("a notice")
        .expect("the agent runs");
    match registered {
        Notice::Registered { server, .. } => {
            assert_eq!(server, format!("http://127.0.0.1:{port}"))
        }
        other => panic!("expected a registration, got {other}"),
    }
    let _ = stop.send(());
    let result = tokio::time::timeout(DEADLINE, agent)
        .await
        .expect("stops")
        .expect("no panic");
    result.expect("drains cleanly");
    assert!(fake.lock().unwrap().deregistered);
}

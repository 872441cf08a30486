//! Black-box tests of `ganger server` through its HTTP API: admission (queue
//! strategies, priorities), idempotent submission, cancellation, and what
//! bad input gets. Each test runs its own server on a temp data directory.
//! Scripts wait (bounded) for marker files; states are polled with a
//! deadline, never slept on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::DEADLINE;
use common::http::Http;
use common::process::{poll_until, process_gone, read_pid};
use common::server::Server;
use serde_json::{Value, json};

/// The API, called the way any HTTP client would, as the admin.
struct Api {
    http: Http,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            http: Http::new(server),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.http.get(path, &self.http.admin)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.http.post(path, &self.http.admin, &body)
    }

    fn apply(&self, yaml: &str) -> (u16, Value) {
        self.http
            .post_as("/api/v1/jobs", &self.http.admin, "application/yaml", yaml)
    }

    fn submit(&self, body: Value) -> String {
        let (status, v) = self.post("/api/v1/runs", body);
        assert!(status == 201 || status == 200, "{status}: {v}");
        v["id"].as_str().expect("id").to_owned()
    }

    fn run(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/v1/runs/{id}"));
        assert_eq!(status, 200, "{v}");
        v
    }

    fn wait(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let run = self.run(id);
            if done(&run) {
                return run;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "run {id} did not become {what}: {run:#}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait(id, status, |r| r["status"] == status)
    }

    fn count_runs(&self) -> usize {
        let (status, v) = self.get("/api/v1/runs?limit=1000");
        assert_eq!(status, 200, "{v}");
        v["runs"].as_array().expect("runs").len()
    }
}

fn task<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {run}"))
}

/// A job whose single task waits until `release` exists (at most two
/// minutes), after marking that it started.
fn gate_job(name: &str, dir: &Path, extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"
jobs:
  {name}:
{extra}
    tasks:
      hold:
        run: |
          touch "{d}/started-$GANGER_RUN_ID"
          for _ in $(seq 2400); do [ -e "{d}/release" ] && exit 0; sleep 0.05; done
          exit 9
"#
    )
}

#[test]
fn append_queues_in_priority_order_then_fifo() {
    let server = Server::start();
    let api = Api::new(&server);
    let dir = server.dir();
    let (status, v) = api.apply(&gate_job("one", &dir, "    concurrency: 1"));
    assert_eq!(status, 201, "{v}");
    let first = api.submit(json!({"job": "one"}));
    api.wait(&first, "running", |r| {
        task(r, "hold")["status"] == "running"
    });
    let low = api.submit(json!({"job": "one"}));
    let high = api.submit(json!({"job": "one", "priority": 5}));
    let low2 = api.submit(json!({"job": "one"}));
    let waiting = api.run(&low);
    assert_eq!(waiting["status"], "queued");
    assert_eq!(
        waiting["waiting"], "queued behind 1 run (concurrency 1, 1 running)",
        "the higher priority run is ahead: {waiting}"
    );
    std::fs::write(dir.join("release"), "").expect("release");
    for id in [&first, &high, &low, &low2] {
        api.wait_status(id, "succeeded");
    }
    let started = |id: &str| {
        api.run(id)["started_at"]
            .as_str()
            .expect("started")
            .parse::<jiff::Timestamp>()
            .expect("time")
    };
    assert!(started(&high) <= started(&low), "priority first");
    assert!(
        started(&low) <= started(&low2),
        "then first come first served"
    );
}

#[test]
fn replace_cancels_the_older_waiting_run_with_a_reason() {
    let server = Server::start();
    let api = Api::new(&server);
    let dir = server.dir();
    let limits = "    concurrency: 1\n    queue: {limit: 1, strategy: replace}";
    api.apply(&gate_job("latest", &dir, limits));
    let running = api.submit(json!({"job": "latest"}));
    api.wait(&running, "running", |r| {
        task(r, "hold")["status"] == "running"
    });
    let older = api.submit(json!({"job": "latest"}));
    let newer = api.submit(json!({"job": "latest"}));
    let replaced = api.wait_status(&older, "cancelled");
    let reason = replaced["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("replaced by run") && reason.contains(&newer),
        "{replaced}"
    );
    assert_eq!(api.run(&newer)["status"], "queued");
    std::fs::write(dir.join("release"), "").expect("release");
    api.wait_status(&newer, "succeeded");
    api.wait_status(&running, "succeeded");
}

#[test]
fn reject_answers_429_and_creates_no_run() {
    let server = Server::start();
    let api = Api::new(&server);
    let dir = server.dir();
    let limits = "    concurrency: 1\n    queue: {strategy: reject}";
    api.apply(&gate_job("solo", &dir, limits));
    let running = api.submit(json!({"job": "solo"}));
    api.wait(&running, "running", |r| {
        task(r, "hold")["status"] == "running"
    });
    let (status, v) = api.post("/api/v1/runs", json!({"job": "solo"}));
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "queue_full");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("concurrency is full")),
        "{v}"
    );
    assert_eq!(api.count_runs(), 1, "the refused run was not created");
    std::fs::write(dir.join("release"), "").expect("release");
    api.wait_status(&running, "succeeded");
}

#[test]
fn an_idempotency_key_returns_the_same_run() {
    let server = Server::start();
    let api = Api::new(&server);
    api.apply("jobs:\n  j:\n    tasks:\n      t: {run: 'true'}\n");
    let body = json!({"job": "j", "idempotency_key": "deploy-42"});
    let (first_status, first) = api.post("/api/v1/runs", body.clone());
    let (again_status, again) = api.post("/api/v1/runs", body);
    assert_eq!(first_status, 201, "{first}");
    assert_eq!(again_status, 200, "{again}");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["existing"], true);
    assert_eq!(api.count_runs(), 1);
}

#[test]
fn cancel_kills_running_processes_and_still_runs_always_tasks() {
    let server = Server::start();
    let api = Api::new(&server);
    let dir = server.dir();
    let d = dir.display();
    api.apply(&format!(
        r#"
jobs:
  stoppable:
    tasks:
      work:
        run: |
          sleep 300 &
          echo $! > "{d}/child.pid"
          touch "{d}/working"
          wait
      next: {{run: 'true', needs: [work]}}
      cleanup: {{run: 'touch "{d}/cleaned"', needs: [work], always: true}}
"#
    ));
    let id = api.submit(json!({"job": "stoppable"}));
    api.wait(&id, "working", |_| dir.join("working").exists());
    let child = read_pid(&dir.join("child.pid"));
    let (status, v) = api.post(&format!("/api/v1/runs/{id}/cancel"), json!({}));
    assert_eq!(status, 200, "{v}");
    let run = api.wait_status(&id, "cancelled");
    assert_eq!(task(&run, "work")["status"], "cancelled", "{run}");
    assert_eq!(task(&run, "next")["status"], "cancelled", "{run}");
    assert_eq!(task(&run, "cleanup")["status"], "succeeded", "{run}");
    assert!(dir.join("cleaned").exists());
    // The task's own child is gone too (its process group was killed). A
    // zombie waiting for this machine's init to reap it counts as gone.
    assert!(
        process_gone(child),
        "the task's child process {child} survived the cancel"
    );
    let (status, v) = api.post(&format!("/api/v1/runs/{id}/cancel"), json!({}));
    assert_eq!(status, 409, "cancelling a finished run: {v}");
}

#[test]
fn a_server_killed_with_tasks_running_kills_them_when_it_starts_again() {
    let mut server = Server::start();
    let dir = server.dir();
    let d = dir.display();
    server.apply(
        "orphan.yml",
        &format!(
            r#"
jobs:
  orphan:
    tasks:
      work:
        run: |
          if [ ! -e "{d}/child.pid" ]; then
            sleep 300 &
            echo $! > "{d}/child.tmp" && mv "{d}/child.tmp" "{d}/child.pid"
            wait
          fi
          echo "ran again after the restart"
"#
        ),
    );
    let id = server.submit(&["orphan"]);
    let child = read_pid(&dir.join("child.pid"));
    server.kill9();
    assert!(!process_gone(child), "a task outlives its SIGKILLed server");
    server.restart();
    // The restarted server kills it before running the task again.
    poll_until("the orphaned task process is killed", DEADLINE, || {
        process_gone(child)
    });
    let run = server.wait_status(&id, "finished", |r| r["status"] != "running");
    assert_eq!(run["status"], "succeeded", "{run:#}");
}

#[test]
fn bad_input_gets_the_right_status_and_changes_nothing() {
    let server = Server::start();
    let api = Api::new(&server);
    let (status, _) = api.apply(
        "jobs:\n  j:\n    params:\n      n: {default: '1', pattern: '^[0-9]+$'}\n    tasks:\n      t: {run: 'true'}\n",
    );
    assert_eq!(status, 201);
    let before_jobs = api.get("/api/v1/jobs").1;

    // Bad YAML and an invalid job: 422 with file:line:col, nothing stored.
    let (status, v) =
        api.apply("jobs:\n  j:\n    tasks:\n      t: {run: 'x', needs: [nope]}\n  k: [\n");
    assert!(status == 422 || status == 400, "{status}: {v}");
    assert_eq!(v["error"]["code"], "invalid_job");
    let (status, v) = api.apply(
        "jobs:\n  j:\n    tasks:\n      t: {run: 'false'}\n  bad:\n    tasks:\n      t: {run: x, needs: [zz]}\n",
    );
    assert_eq!(status, 422, "{v}");
    let details = v["error"]["details"].as_array().expect("details");
    assert!(
        details.iter().any(|d| d
            .as_str()
            .is_some_and(|d| d.contains(":7:") && d.contains("zz"))),
        "diagnostics name line and column: {v}"
    );
    assert_eq!(
        api.get("/api/v1/jobs").1,
        before_jobs,
        "one invalid job stores none of the upload"
    );

    // Unknown job, missing or invalid param, malformed JSON: no run.
    let (status, v) = api.post("/api/v1/runs", json!({"job": "nope"}));
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    let (status, v) = api.post("/api/v1/runs", json!({"job": "j", "params": {"n": "many"}}));
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_params");
    let (status, v) = api.post("/api/v1/runs", json!({"job": "j", "params": {"m": "1"}}));
    assert_eq!(status, 422, "{v}");
    let (status, v) = api
        .http
        .post_raw("/api/v1/runs", &api.http.admin, "{\"job\": \"j\",");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(api.count_runs(), 0);

    // A wrong token or none: 401, whatever the route.
    for token in ["", "not-a-token"] {
        let (status, v) = api.http.request(
            reqwest::Method::POST,
            "/api/v1/runs",
            Some(&format!("Bearer {token}")),
            Some(&json!({"job": "j"}).to_string()),
        );
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    assert_eq!(api.count_runs(), 0);
    let (status, v) = api.get("/api/v1/runs/no-such-run");
    assert_eq!(status, 404, "{v}");
}

#[test]
fn definitions_are_versioned_and_runs_keep_theirs() {
    let server = Server::start();
    let api = Api::new(&server);
    let dir = server.dir();
    let v1 = gate_job("evolving", &dir, "");
    let (_, first) = api.apply(&v1);
    assert_eq!(first["jobs"][0]["version"], 1);
    let (status, same) = api.apply(&v1);
    assert_eq!(status, 200, "unchanged: {same}");
    assert_eq!(same["jobs"][0]["created"], false);
    let old = api.submit(json!({"job": "evolving"}));
    api.wait(&old, "running", |r| task(r, "hold")["status"] == "running");
    let (_, second) = api.apply("jobs:\n  evolving:\n    tasks:\n      other: {run: 'true'}\n");
    assert_eq!(second["jobs"][0]["version"], 2);
    let new = api.submit(json!({"job": "evolving"}));
    let new_run = api.wait_status(&new, "succeeded");
    assert_eq!(new_run["version"], 2);
    std::fs::write(dir.join("release"), "").expect("release");
    let old_run = api.wait_status(&old, "succeeded");
    assert_eq!(old_run["version"], 1, "the run kept its version");
    assert_eq!(task(&old_run, "hold")["status"], "succeeded");
    let (_, detail) = api.get("/api/v1/jobs/evolving");
    assert_eq!(detail["versions"].as_array().map(Vec::len), Some(2));
}

#[test]
fn retry_reruns_only_what_failed_keeping_outputs() {
    let server = Server::start();
    let api = Api::new(&server);
    let dir = server.dir();
    let d = dir.display();
    api.apply(&format!(
        r#"
jobs:
  pipeline:
    tasks:
      build:
        run: |
          echo built >> "{d}/build.count"
          echo "artifact=app-1.tgz" >> "$GANGER_OUTPUT"
      test: {{run: 'test -e "{d}/fixed"', needs: [build]}}
      publish: {{run: 'echo "{{{{ tasks.build.outputs.artifact }}}}" > "{d}/published"', needs: [test]}}
"#
    ));
    let id = api.submit(json!({"job": "pipeline"}));
    let failed = api.wait_status(&id, "failed");
    assert_eq!(task(&failed, "publish")["status"], "skipped");
    std::fs::write(dir.join("fixed"), "").expect("fix");
    let (status, v) = api.post(&format!("/api/v1/runs/{id}/retry"), json!({}));
    assert_eq!(status, 200, "{v}");
    let run = api.wait_status(&id, "succeeded");
    assert_eq!(
        task(&run, "build")["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        task(&run, "test")["attempts"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("build.count")).expect("count"),
        "built\n",
        "build ran once"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("published")).expect("published"),
        "app-1.tgz\n",
        "the kept task's outputs flow on"
    );
    let (status, v) = api.post(&format!("/api/v1/runs/{id}/retry"), json!({}));
    assert_eq!(status, 409, "a succeeded run has nothing to retry: {v}");
}

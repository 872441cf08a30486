//! `executor: docker` through the real binaries and the real Docker engine:
//! the server's in-process agent, remote agents, `ganger run`.
//!
//! Tasks use the local image `ganger-test-busybox:latest`, built by
//! `scripts/test-image` (no registry is needed). Without a reachable engine
//! each test prints a skip line and passes, unless `GANGER_REQUIRE_DOCKER=1`
//! (set by `scripts/test` when the engine answers), which makes it fail.
//! Containers are found by their `ganger.run` label, with the docker CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::agent::{Agent, agent_token};
use common::process::poll_until;
use common::server::Server;
use common::{Case, DEADLINE, Run};
use nix::sys::signal::Signal;
use serde_json::Value;

const IMAGE: &str = "ganger-test-busybox:latest";

/// Whether the engine answers; builds the test image once. Without an
/// engine, a skip line (or a failure when Docker is required).
fn docker(test: &str) -> bool {
    let answers = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        assert!(
            std::env::var("GANGER_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "GANGER_REQUIRE_DOCKER=1 but `docker info` fails"
        );
        eprintln!("skipping {test}: no Docker engine");
        return false;
    }
    static IMAGE_BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = IMAGE_BUILT.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-image");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        panic!("the test image is needed: {e}");
    }
    true
}

/// Containers (running or not) of run `id`.
fn containers_of(id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=ganger.run={id}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `ganger run` of `job` in a job file holding `yaml`.
fn run_yaml(job: &str, yaml: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("job.yml");
    std::fs::write(&file, yaml).expect("write job");
    Case::file(file).job(job).no_dir().run()
}

fn task<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {run:#}"))
}

fn last_attempt<'a>(run: &'a Value, name: &str) -> &'a Value {
    let attempts = task(run, name)["attempts"].as_array().expect("attempts");
    attempts.last().expect("an attempt")
}

fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

#[test]
fn a_container_task_shows_its_output_exit_code_env_and_workspace() {
    if !docker("output") {
        return;
    }
    let server = Server::start();
    server.apply(
        "box.yml",
        &format!(
            r#"
jobs:
  boxed:
    env: {{ GREETING: hello }}
    tasks:
      inside:
        executor: docker
        image: {IMAGE}
        pull: never
        run: |
          echo "$GREETING from the container, task $GANGER_TASK"
          echo made-inside > /workspace/result.txt
          echo "answer=42" >> "$GANGER_OUTPUT"
      fails:
        needs: [inside]
        executor: docker
        image: {IMAGE}
        run: |
          echo "upstream said {{{{ tasks.inside.outputs.answer }}}}"
          exit 3
"#
        ),
    );
    let id = server.submit(&["boxed"]);
    let run = server.wait_status(&id, "finished", finished);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(task(&run, "inside")["status"], "succeeded", "{run:#}");
    assert_eq!(last_attempt(&run, "fails")["exit_code"], 3, "{run:#}");
    let logs = server.ok(&["logs", &id, "inside"]);
    assert!(
        logs.contains("hello from the container, task inside"),
        "{logs}"
    );
    let logs = server.ok(&["logs", &id, "fails"]);
    assert!(logs.contains("upstream said 42"), "{logs}");
    let made = server
        .tmp
        .path()
        .join("data/runs")
        .join(&id)
        .join("inside/result.txt");
    let text = std::fs::read_to_string(&made).unwrap_or_else(|e| panic!("{}: {e}", made.display()));
    assert_eq!(text.trim(), "made-inside");
    assert!(containers_of(&id).is_empty(), "{:?}", containers_of(&id));
}

#[test]
fn a_timed_out_container_is_stopped_and_removed() {
    if !docker("timeout") {
        return;
    }
    let server = Server::start();
    server.apply(
        "slow.yml",
        &format!(
            r#"
jobs:
  slow:
    tasks:
      sleeps:
        executor: docker
        image: {IMAGE}
        pull: never
        timeout: 2s
        run: echo started; sleep 300
"#
        ),
    );
    let id = server.submit(&["slow"]);
    let run = server.wait_status(&id, "finished", finished);
    assert_eq!(task(&run, "sleeps")["status"], "timed_out", "{run:#}");
    assert!(containers_of(&id).is_empty(), "{:?}", containers_of(&id));
}

#[test]
fn bad_container_tasks_fail_clearly_and_leave_nothing() {
    if !docker("bad input") {
        return;
    }
    let server = Server::start();
    server.apply(
        "bad.yml",
        r#"
jobs:
  missing:
    tasks:
      t:
        executor: docker
        image: ganger-no-such-image:1
        pull: never
        run: "true"
  volume:
    tasks:
      t:
        executor: docker
        image: ganger-test-busybox:latest
        pull: never
        volumes: ["relative/path:/x"]
        run: "true"
"#,
    );
    for (job, expected) in [("missing", "pull: never"), ("volume", "relative/path")] {
        let id = server.submit(&[job]);
        let run = server.wait_status(&id, "finished", finished);
        assert_eq!(run["status"], "failed", "{run:#}");
        let reason = last_attempt(&run, "t")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains(expected), "{job}: {reason}\n{run:#}");
        assert!(containers_of(&id).is_empty(), "{:?}", containers_of(&id));
    }
}

#[test]
fn a_docker_task_waits_for_an_agent_with_docker_and_says_so() {
    if !docker("routing") {
        return;
    }
    let server = Server::start_with(&[("GANGER_SERVER_LOCAL_AGENT", "false")]);
    let token = agent_token(&server);
    // This agent's engine does not answer: it registers for processes only.
    let mut cmd = common::agent::agent_command(&server, &token, "nodocker");
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let mut running = common::spawn(cmd);
    running.wait_for_output("no docker tasks will run here");
    running.wait_for_output("registered with");
    server.apply(
        "d.yml",
        &format!(
            "jobs:\n  d:\n    tasks:\n      t: {{executor: docker, image: {IMAGE}, run: 'true'}}\n"
        ),
    );
    let id = server.submit(&["d"]);
    let run = server.wait_status(&id, "waiting", |r| {
        task(r, "t")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("docker"))
    });
    assert_eq!(task(&run, "t")["status"], "ready", "{run:#}");
    server.ok(&["cancel", &id]);
    drop(running);
}

#[test]
fn an_agent_killed_during_a_container_task_removes_it_when_restarted() {
    if !docker("agent kill") {
        return;
    }
    let server = Server::start_with(&[
        ("GANGER_SERVER_LOCAL_AGENT", "false"),
        ("GANGER_SERVER_LEASE", "2s"),
        ("GANGER_SERVER_HEARTBEAT", "500ms"),
    ]);
    let token = agent_token(&server);
    let one = Agent::start(&server, &token, "boxer", &[]);
    server.apply(
        "long.yml",
        &format!(
            r#"
jobs:
  long:
    tasks:
      t:
        executor: docker
        image: {IMAGE}
        pull: never
        run: sleep 300
"#
        ),
    );
    let id = server.submit(&["long"]);
    poll_until("the task's container runs", DEADLINE, || {
        !containers_of(&id).is_empty()
    });
    one.signal(Signal::SIGKILL);
    let mut one = one;
    let _ = one.running.take().expect("running").wait();
    assert!(!containers_of(&id).is_empty(), "it outlives its agent");
    // The same agent started again removes what it left.
    let _again = Agent::start(&server, &token, "boxer", &[]);
    poll_until("the orphaned container is removed", DEADLINE, || {
        containers_of(&id).is_empty()
    });
    let run = server.wait_status(&id, "finished", finished);
    assert_eq!(last_attempt(&run, "t")["status"], "lost", "{run:#}");
}

#[test]
fn ganger_run_runs_container_tasks_and_passes_their_outputs_on() {
    if !docker("ganger run") {
        return;
    }
    let run = run_yaml(
        "j",
        &format!(
            r#"
jobs:
  j:
    tasks:
      build:
        executor: docker
        image: {IMAGE}
        pull: never
        resources: {{ memory: 64Mi }}
        run: |
          cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max
          echo "v=7" >> "$GANGER_OUTPUT"
      use:
        needs: [build]
        run: echo "got {{{{ tasks.build.outputs.v }}}}"
"#
        ),
    );
    run.expect_code(0);
    // Task output goes to stderr when the run's record is on stdout.
    assert!(run.out.stderr.contains("got 7"), "{run}");
    assert!(run.out.stderr.contains("67108864"), "{run}");
}

/// Sends an HTTP request with busybox's `nc` to the host and port of
/// `$GANGER_JOB_URL` (busybox's static wget cannot run here): `$1` is the
/// method, `$2` the headers (with `\r\n` escapes), `$3` the body.
const JOB_CALL: &str = r#"
call() {
  hp=$(echo "$GANGER_JOB_URL" | sed -e 's,^http://,,' -e 's,/.*$,,')
  path=$(echo "$GANGER_JOB_URL" | sed -e 's,^http://[^/]*,,')
  printf '%s %s HTTP/1.0\r\n%bcontent-length: %s\r\n\r\n%s' "$1" "$path" "$2" "${#3}" "$3" \
    | nc "${hp%:*}" "${hp##*:}"
}
"#;

#[test]
fn a_container_reports_progress_and_outputs_through_its_job_endpoint() {
    if !docker("job endpoint") {
        return;
    }
    let server = Server::start();
    let script = format!(
        "{JOB_CALL}\n\
         call GET '' '' | tail -n 1 > /workspace/job.json\n\
         call PUT 'x-foreman-job-status: running\\r\\nx-foreman-job-progress: 0.25\\r\\n' '{{\"answer\":\"42\"}}' | head -n 1\n\
         while [ ! -e /workspace/release ]; do sleep 0.05; done\n\
         call PUT 'x-ganger-job-status: completed\\r\\n' '' | head -n 1\n"
    );
    let job = serde_json::json!({
        "jobs": {"progress": {
            "params": {"who": {"default": "tester"}},
            "tasks": {
                "boxed": {
                    "executor": "docker", "image": IMAGE, "pull": "never",
                    "body": {"greet": "hi {{ params.who }}"},
                    "run": script,
                },
                "after": {"needs": ["boxed"], "run": "echo \"got {{ tasks.boxed.outputs.answer }}\""},
            },
        }},
    });
    server.apply("progress.json", &job.to_string());
    let id = server.submit(&["progress"]);
    let run = server.wait_status(&id, "progress reported", |r| {
        last_attempt(r, "boxed")["progress"] == 0.25
    });
    assert_eq!(task(&run, "boxed")["status"], "running", "{run:#}");
    let table = server.ok(&["status", &id]);
    assert!(table.contains("25%"), "{table}");
    let workspace = server.tmp.path().join("data/runs").join(&id).join("boxed");
    let job_seen = std::fs::read_to_string(workspace.join("job.json")).expect("job.json");
    let job_seen: Value = serde_json::from_str(&job_seen).expect("the job as JSON");
    assert_eq!(job_seen["body"]["greet"], "hi tester", "{job_seen}");
    assert_eq!(job_seen["task"], "boxed");
    std::fs::write(workspace.join("release"), "").expect("release");
    let run = server.wait_status(&id, "finished", finished);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(last_attempt(&run, "boxed")["progress"], 1.0, "{run:#}");
    let logs = server.ok(&["logs", &id, "after"]);
    assert!(logs.contains("got 42"), "{logs}");
}

#[test]
fn a_sidecar_declared_in_yaml_is_reachable_by_name_and_removed_after() {
    if !docker("sidecar") {
        return;
    }
    // Busybox's static build resolves names with nslookup only (Docker's
    // DNS), and speaks HTTP with nc.
    let run = run_yaml(
        "s",
        &format!(
            r#"
jobs:
  s:
    tasks:
      t:
        executor: docker
        image: {IMAGE}
        pull: never
        services:
          - name: web
            image: {IMAGE}
            command: [sh, -c, "mkdir -p /www && echo sidecar-says-hi > /www/index.html && exec httpd -f -p 8080 -h /www"]
        run: |
          for i in $(seq 200); do
            ip=$(nslookup web 2>/dev/null | sed -n 's/^Address: *\([0-9.]*\)$/\1/p' | tail -n 1)
            if [ -n "$ip" ]; then
              body=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc "$ip" 8080 2>/dev/null | tail -n 1)
              if [ -n "$body" ]; then echo "$body"; exit 0; fi
            fi
            sleep 0.1
          done
          exit 1
"#
        ),
    );
    run.expect_code(0);
    assert!(run.out.stderr.contains("sidecar-says-hi"), "{run}");
    let id = run.record["id"].as_str().expect("id").to_owned();
    assert!(containers_of(&id).is_empty(), "{:?}", containers_of(&id));
}

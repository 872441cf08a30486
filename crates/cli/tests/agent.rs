//! Black-box tests of `ganger agent` against a real `ganger server`: tasks
//! go only to agents whose labels satisfy their tags, output and results
//! come back over HTTP, SIGTERM drains, a refused token stops the agent,
//! an agent stopped past its lease is fenced off, a server killed and
//! restarted under running agents loses and doubles nothing, and bad agent
//! messages change nothing. States are polled with a deadline; task
//! scripts wait on marker files. Tasks are tagged so that the server's
//! in-process agent (which has no such labels) never takes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::DEADLINE;
use common::agent::{Agent, agent_command, agent_token, token};
use common::http::Http;
use common::process::{poll_until, process_gone, read_pid, wait_for};
use common::server::Server;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// A short lease, so that tests about leases take seconds.
const SHORT_LEASE: [(&str, &str); 2] = [
    ("GANGER_SERVER_LEASE", "2s"),
    ("GANGER_SERVER_HEARTBEAT", "500ms"),
];
/// [`SHORT_LEASE`]'s lease.
const LEASE: Duration = Duration::from_secs(2);

/// The agent named on the last attempt of `task` in a `status --json`.
fn agent_of<'a>(run: &'a Value, task: &str) -> &'a str {
    let tasks = run["tasks"].as_array().expect("tasks");
    let t = tasks
        .iter()
        .find(|t| t["name"] == task)
        .unwrap_or_else(|| panic!("no task {task} in {run:#}"));
    let attempts = t["attempts"].as_array().expect("attempts");
    attempts.last().expect("an attempt")["agent"]
        .as_str()
        .unwrap_or_else(|| panic!("no agent on {task}: {run:#}"))
}

fn finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

#[test]
fn tagged_tasks_run_only_on_the_agent_with_their_labels() {
    let server = Server::start();
    let token = agent_token(&server);
    let _east = Agent::start(&server, &token, "east", &["zone=east", "os=linux"]);
    let _west = Agent::start(&server, &token, "west", &["zone=west", "os=linux"]);
    server.apply(
        "routed.yml",
        r#"
jobs:
  routed:
    tasks:
      e1:
        run: echo "e1 says hi"; echo "where=east" >> "$GANGER_OUTPUT"
        tags: [zone=east]
      e2:
        run: echo e2
        tags: [zone=east, os=linux]
      w1:
        run: echo "w1 says hi"
        tags: [zone=west]
      w2:
        needs: [e1]
        run: echo "e1 was {{ tasks.e1.outputs.where }}"
        tags: [zone=west]
"#,
    );
    // Several runs, so a lucky draw cannot pass for routing.
    let ids: Vec<String> = (0..3).map(|_| server.submit(&["routed"])).collect();
    for id in &ids {
        let run = server.wait_status(id, "finished", finished);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        for task in ["e1", "e2"] {
            assert_eq!(agent_of(&run, task), "east", "{task}: {run:#}");
        }
        for task in ["w1", "w2"] {
            assert_eq!(agent_of(&run, task), "west", "{task}: {run:#}");
        }
        // Output and outputs came back from the agents.
        let logs = server.ok(&["logs", id]);
        assert!(logs.contains("e1 says hi"), "{logs}");
        assert!(logs.contains("w1 says hi"), "{logs}");
        assert!(logs.contains("e1 was east"), "{logs}");
    }
    let agents = server.ok(&["agents"]);
    assert!(
        agents.contains("east") && agents.contains("west"),
        "{agents}"
    );
}

#[test]
fn sigterm_lets_running_tasks_finish_then_deregisters_and_exits_0() {
    let server = Server::start();
    let token = agent_token(&server);
    let mut agent = Agent::start(&server, &token, "drainer", &["role=drain"]);
    let dir = server.dir();
    let started = dir.join("started");
    let release = dir.join("release");
    server.apply(
        "drain.yml",
        r#"
jobs:
  drain:
    params:
      dir: {}
    tasks:
      slow:
        tags: [role=drain]
        run: |
          touch "$GANGER_PARAM_DIR/started"
          while [ ! -e "$GANGER_PARAM_DIR/release" ]; do sleep 0.02; done
          echo "finished after the signal"
"#,
    );
    let dir_param = format!("dir={}", dir.display());
    let id = server.submit(&["drain", "-p", &dir_param]);
    wait_for(&started);

    agent.signal(Signal::SIGTERM);
    // The drain has begun (the agent says so) while the task still runs.
    agent.wait_for_output("draining");
    // The server lists it as draining (its next heartbeat says so).
    let start = Instant::now();
    loop {
        let agents = server.json(&["agents", "--json"]);
        let state = agents["agents"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["name"] == "drainer"))
            .map(|a| a["state"].clone());
        if state == Some(Value::from("draining")) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never listed as draining: {agents:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&release, "").expect("release the task");

    let out = agent.wait();
    assert_eq!(out.code(), 0, "{out}");
    assert!(out.stderr.contains("deregistered"), "{out}");
    // The result was delivered before the agent left.
    let run = server.json(&["status", &id, "--json"]);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let logs = server.ok(&["logs", &id]);
    assert!(logs.contains("finished after the signal"), "{logs}");
}

#[test]
fn a_refused_token_stops_the_agent_with_exit_2() {
    let server = Server::start();
    let out = common::output(agent_command(&server, "not-a-token", "refused"));
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("token"), "{out}");
}

#[test]
fn an_agent_killed_mid_task_loses_it_and_another_agent_runs_the_retry() {
    let server = Server::start_with(&SHORT_LEASE);
    let token = agent_token(&server);
    let dir = server.dir();
    let d = dir.display();
    server.apply(
        "pool.yml",
        &format!(
            r#"
jobs:
  pooled:
    tasks:
      work:
        tags: [pool=a]
        retry: 1
        run: |
          if [ "$GANGER_ATTEMPT" = 1 ]; then
            echo $$ > "{d}/first.pid"
            exec sleep 300
          fi
          echo "done on attempt $GANGER_ATTEMPT"
"#
        ),
    );
    let mut one = Agent::start(&server, &token, "one", &["pool=a"]);
    let id = server.submit(&["pooled"]);
    let pid_file = dir.join("first.pid");
    wait_for(&pid_file);
    one.signal(Signal::SIGKILL);
    let _ = one.running.take().expect("running").wait();
    let _two = Agent::start(&server, &token, "two", &["pool=a"]);
    let run = server.wait_status(&id, "finished", finished);
    // The first attempt's process outlived its agent; end it here.
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .trim()
        .parse::<i32>()
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let attempts = run["tasks"][0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{run:#}");
    assert_eq!(attempts[0]["status"], "lost", "{run:#}");
    assert_eq!(attempts[0]["agent"], "one");
    assert_eq!(attempts[1]["agent"], "two");
    let logs = server.ok(&["logs", &id, "work"]);
    assert!(logs.contains("done on attempt 2"), "{logs}");
}

// ------------------------------------------------------------- helpers

/// The task named `task` in a `status --json`.
fn task_of<'a>(run: &'a Value, task: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"] == task)
        .unwrap_or_else(|| panic!("no task {task} in {run:#}"))
}

/// Attempt `number` of `task`, if there is one yet.
fn attempt_of<'a>(run: &'a Value, task: &str, number: u64) -> Option<&'a Value> {
    task_of(run, task)["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .find(|a| a["number"] == number)
}

fn attempt_status<'a>(run: &'a Value, task: &str, number: u64) -> Option<&'a str> {
    attempt_of(run, task, number).and_then(|a| a["status"].as_str())
}

/// Polls `ganger status --json` until `done` holds: the run, or (past
/// `within`) the last one seen, for the caller to explain.
fn poll_status(
    server: &Server,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, Value> {
    let start = Instant::now();
    loop {
        let run = server.json(&["status", id, "--json"]);
        if done(&run) {
            return Ok(run);
        }
        if start.elapsed() > within {
            return Err(run);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it holds, failing after `within` with `what`.
/// Polls a task's log (`ganger logs RUN TASK`) until it contains `text`.
fn wait_for_log(server: &Server, id: &str, task: &str, text: &str) {
    let mut last = String::new();
    let start = Instant::now();
    while !last.contains(text) {
        assert!(
            start.elapsed() < DEADLINE,
            "the log of {task} in {id} did not show {text:?} within {DEADLINE:?}:\n{last}"
        );
        thread::sleep(Duration::from_millis(20));
        last = server.ok(&["logs", id, task]);
    }
}

/// Lines of a file task scripts append to (empty when it does not exist yet).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An attempt as the agent protocol names it.
fn attempt_ref(run_id: &str, task: u32, attempt: u32) -> Value {
    json!({"run_id": run_id, "task": task, "phase": "main", "attempt": attempt})
}

// ---------------------------------------------------------------- tests

#[test]
fn an_agent_stopped_past_its_lease_is_fenced_its_late_result_refused_and_its_processes_killed() {
    // One slot: while attempt 1 runs, agent a has no claim outstanding
    // (see the next test for what happens when it has).
    sigstop_past_the_lease(1);
}

/// Product bug: an agent stopped (SIGSTOP) while it has a claim pending
/// (a free slot) is handed the retry of the very attempt the server just
/// declared lost for its silence; the retry is lost in turn, and with
/// `retry: 1` the run fails although another agent is there.
#[test]
fn a_stopped_agent_with_a_free_slot_is_not_handed_the_retry_of_its_lost_attempt() {
    sigstop_past_the_lease(2);
}

/// Agent a (with `a_slots` slots) runs attempt 1 and is stopped past its
/// lease; agent b runs the retry; a is resumed after attempt 1 ended.
fn sigstop_past_the_lease(a_slots: u32) {
    let server = Server::start_with(&SHORT_LEASE);
    let token = agent_token(&server);
    let dir = server.dir();
    let d = dir.display();
    // Attempt 1 leaves a background process in its group, writes both
    // pids, prints once told to (`speak`), and waits for `release`; once
    // released it would succeed with its own output. Attempt 2 succeeds at
    // once. Output is printed only once the server has stored the attempt
    // as running, and attempt 2 prints none: a chunk sent right after a
    // claim may be refused (see `a_log_chunk_right_after_the_claim_is_taken`).
    server.apply(
        "fenced.yml",
        &format!(
            r#"
jobs:
  fenced:
    tasks:
      work:
        tags: [pool=fence]
        retry: 1
        run: |
          if [ "$GANGER_ATTEMPT" = 1 ]; then
            sleep 300 &
            echo $! > "{d}/child.tmp" && mv "{d}/child.tmp" "{d}/child.pid"
            echo $$ > "{d}/first.tmp" && mv "{d}/first.tmp" "{d}/first.pid"
            while [ ! -e "{d}/speak" ]; do sleep 0.02; done
            echo "attempt 1 started"
            while [ ! -e "{d}/release" ]; do sleep 0.02; done
            echo "attempt 1 finished late"
            echo "who=first" >> "$GANGER_OUTPUT"
            exit 0
          fi
          echo "who=second" >> "$GANGER_OUTPUT"
"#
        ),
    );
    let mut a = Agent::start_slots(&server, &token, "a", &["pool=fence"], a_slots);
    let id = server.submit(&["fenced"]);
    let first = read_pid(&dir.join("first.pid"));
    let child = read_pid(&dir.join("child.pid"));
    server.wait_status(&id, "attempt 1 running", |r| {
        attempt_status(r, "work", 1) == Some("running")
    });
    // What attempt 1 prints reaches the server.
    std::fs::write(dir.join("speak"), "").expect("let attempt 1 speak");
    wait_for_log(&server, &id, "work", "attempt 1 started");

    a.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    let run = server.wait_status(&id, "attempt 1 lost", |r| {
        attempt_status(r, "work", 1) == Some("lost")
    });
    let lost_after = stopped.elapsed();
    let one = attempt_of(&run, "work", 1).expect("attempt 1");
    assert_eq!(one["agent"], "a", "{run:#}");
    assert!(
        one["reason"].as_str().unwrap_or("").contains("lost"),
        "{run:#}"
    );
    // The lease is 2 s and the reaper looks every second; generous slack
    // for a loaded machine, but a lease that is never reaped fails.
    assert!(
        lost_after < LEASE * 5,
        "attempt 1 was lost only {lost_after:?} after its agent stopped"
    );
    eprintln!("attempt 1 was lost {lost_after:?} after its agent stopped");

    let b = Agent::start(&server, &token, "b", &["pool=fence"]);
    let run = server.wait_status(&id, "finished", finished);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        attempt_status(&run, "work", 2),
        Some("succeeded"),
        "{run:#}"
    );
    assert_eq!(
        attempt_of(&run, "work", 2).expect("attempt 2")["agent"],
        "b"
    );

    // Agent a is stopped, not its task: attempt 1 still runs.
    assert!(!process_gone(first), "attempt 1's shell ended early");
    assert!(!process_gone(child), "attempt 1's child ended early");
    std::fs::write(dir.join("release"), "").expect("release attempt 1");
    // Its shell finishes on its own (a zombie: its stopped agent cannot
    // reap it); the background child lives on in the group until the
    // agent acts.
    poll_until("attempt 1's shell exits", DEADLINE, || process_gone(first));
    assert!(
        !process_gone(child),
        "attempt 1's child ended without its agent"
    );

    a.signal(Signal::SIGCONT);
    let resumed = Instant::now();
    // The resumed agent learns (a refused result, or a heartbeat naming
    // the attempt stale) that attempt 1 is no longer its own...
    a.wait_for_output(&format!("dropped attempt 1 of task #0 of run {id}"));
    // ...and none of its processes is left.
    poll_until(
        "attempt 1's processes are gone after its agent resumed",
        Duration::from_secs(10),
        || process_gone(first) && process_gone(child),
    );
    eprintln!(
        "attempt 1's processes were gone {:?} after its agent resumed",
        resumed.elapsed()
    );
    assert!(a.alive(), "agent a exited after being resumed");

    // The same late result, said again directly: refused, for both attempts.
    let http = Http::new(&server);
    for number in [1, 2] {
        let late = json!({
            "agent_id": "a",
            "attempt": attempt_ref(&id, 0, number),
            "exit": {"code": 0},
            "outputs": {"who": "first"},
        });
        let (status, body) = http.post("/api/v1/agent/result", &token, &late);
        assert_eq!(status, 409, "a late result for attempt {number}: {body}");
        assert_eq!(body["error"]["code"], "stale_attempt", "{body}");
    }

    // The final result is attempt 2's, and only attempt 2 succeeded.
    let run = server.json(&["status", &id, "--json"]);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let work = task_of(&run, "work");
    assert_eq!(work["status"], "succeeded", "{run:#}");
    assert_eq!(work["attempt"], 2, "{run:#}");
    assert_eq!(work["outputs"]["who"], "second", "{run:#}");
    let attempts = work["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{run:#}");
    assert_eq!(
        (
            attempts[0]["status"].as_str(),
            attempts[0]["agent"].as_str()
        ),
        (Some("lost"), Some("a")),
        "{run:#}"
    );
    assert_eq!(
        (
            attempts[1]["status"].as_str(),
            attempts[1]["agent"].as_str()
        ),
        (Some("succeeded"), Some("b")),
        "{run:#}"
    );
    let succeeded = attempts
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .count();
    assert_eq!(succeeded, 1, "{run:#}");
    let logs = server.ok(&["logs", &id, "work"]);
    assert!(logs.contains("attempt 1 started"), "{logs}");
    assert!(
        !logs.contains("attempt 1 finished late"),
        "the late attempt's output was stored:\n{logs}"
    );
    let out = a.stop();
    assert_eq!(out.code(), 0, "{out}");
    eprintln!("agent a said:\n{}", out.stderr);
    drop(b);
}

#[test]
fn a_server_killed_and_restarted_under_running_agents_loses_and_doubles_nothing() {
    let mut server = Server::start_with(&SHORT_LEASE);
    let token = agent_token(&server);
    let dir = server.dir();
    let d = dir.display();
    // `second` waits for `gate`: once every slot holds one, the server is
    // killed with tasks running on both agents. Every task notes its
    // start in `starts` and its end in `ledger`.
    server.apply(
        "relay.yml",
        &format!(
            r#"
jobs:
  relay:
    tasks:
      first:
        tags: [pool=relay]
        run: |
          echo "$GANGER_RUN_ID $GANGER_TASK $GANGER_ATTEMPT" >> "{d}/starts"
          sleep 0.5
          echo "$GANGER_RUN_ID $GANGER_TASK $GANGER_ATTEMPT" >> "{d}/ledger"
      second:
        needs: [first]
        tags: [pool=relay]
        run: |
          echo "$GANGER_RUN_ID $GANGER_TASK $GANGER_ATTEMPT" >> "{d}/starts"
          while [ ! -e "{d}/gate" ]; do sleep 0.02; done
          sleep 0.3
          echo "$GANGER_RUN_ID $GANGER_TASK $GANGER_ATTEMPT" >> "{d}/ledger"
"#
        ),
    );
    // Two slots each (see agent_command).
    let mut r1 = Agent::start(&server, &token, "r1", &["pool=relay"]);
    let mut r2 = Agent::start(&server, &token, "r2", &["pool=relay"]);
    let ids: Vec<String> = (0..6).map(|_| server.submit(&["relay"])).collect();
    let (starts, ledger) = (dir.join("starts"), dir.join("ledger"));
    let seconds = |path: &Path| {
        lines(path)
            .iter()
            .filter(|l| l.contains(" second "))
            .count()
    };
    poll_until("every slot holds a gated task", DEADLINE, || {
        seconds(&starts) >= 4
    });
    // ...and the server recorded them running: the kill does not cut off
    // the answer to a `started` (see the ignored test
    // `a_resent_started_does_not_make_the_attempt_stale` for what that does).
    poll_until("the server shows 4 gated tasks running", DEADLINE, || {
        ids.iter()
            .filter(|id| {
                let run = server.json(&["status", id, "--json"]);
                attempt_status(&run, "second", 1) == Some("running")
            })
            .count()
            >= 4
    });
    let done_before = lines(&ledger).len();

    server.kill9();
    let killed = Instant::now();
    // The tasks go on without the server: released now, they finish
    // while it is down, and the agents keep their results.
    std::fs::write(dir.join("gate"), "").expect("open the gate");
    poll_until(
        "the gated tasks finish while the server is down",
        DEADLINE,
        || seconds(&ledger) >= 4,
    );
    assert!(r1.alive() && r2.alive(), "an agent exited with its server");
    // The outage outlasts a lease: the leases stored before the crash have
    // run out when the server comes back, so only the grace after a
    // restart keeps the attempts from being reaped. (A scenario length,
    // not a synchronisation.)
    let outage = LEASE + Duration::from_millis(500);
    if let Some(left) = outage.checked_sub(killed.elapsed()) {
        thread::sleep(left);
    }
    server.restart();
    let restarted = Instant::now();

    let mut runs = Vec::new();
    for id in &ids {
        match poll_status(&server, id, Duration::from_secs(30), finished) {
            Ok(run) => runs.push(run),
            Err(run) => {
                let (o1, o2) = (r1.stop(), r2.stop());
                panic!(
                    "run {id} did not finish after the restart: {run:#}\n--- agent r1 ---\n{o1}\n--- agent r2 ---\n{o2}\n--- server ---\n{}\n--- starts ---\n{}\n--- ledger ---\n{}",
                    server.log.lock().unwrap(),
                    lines(&starts).join("\n"),
                    lines(&ledger).join("\n"),
                );
            }
        }
    }
    eprintln!(
        "{done_before} tasks done before the kill; all runs finished {:?} after the restart",
        restarted.elapsed()
    );
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run:#}");
        for task in ["first", "second"] {
            let t = task_of(run, task);
            assert_eq!(t["status"], "succeeded", "{task}: {run:#}");
            let attempts = t["attempts"].as_array().expect("attempts");
            // One attempt each: none lost, failed or interrupted by the
            // restart, none run twice.
            assert_eq!(attempts.len(), 1, "{task}: {run:#}");
            assert_eq!(attempts[0]["status"], "succeeded", "{task}: {run:#}");
            let agent = attempts[0]["agent"].as_str().unwrap_or("");
            assert!(
                agent == "r1" || agent == "r2",
                "{task} ran on {agent:?}: {run:#}"
            );
        }
    }
    // Each (run, task) ran once and ended once, as attempt 1.
    for (path, what) in [(&starts, "started"), (&ledger, "ended")] {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for line in lines(path) {
            *seen.entry(line).or_default() += 1;
        }
        let mut expected = BTreeMap::new();
        for id in &ids {
            for task in ["first", "second"] {
                expected.insert(format!("{id} {task} 1"), 1);
            }
        }
        assert_eq!(seen, expected, "what {what}, and how often");
    }
    // Both agents noticed that the server forgot them, and carried on.
    for agent in [&mut r1, &mut r2] {
        agent.wait_for_output("registering again");
        assert!(agent.alive(), "an agent exited after the restart");
    }
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("the test restarts the server"), "{log}");
}

/// Every endpoint of the agent protocol.
const AGENT_ENDPOINTS: [&str; 7] = [
    "register",
    "claim",
    "heartbeat",
    "started",
    "logs",
    "result",
    "deregister",
];

#[test]
fn bad_agent_messages_get_400_401_403_or_409_and_change_nothing() {
    let server = Server::start();
    let agent = agent_token(&server);
    let viewer = token(&server, "viewer");
    let operator = token(&server, "operator");
    let http = Http::new(&server);
    let dir = server.dir();
    let d = dir.display();
    // A run whose task a real agent holds, waiting for `release`: the
    // state the bad messages must not change.
    server.apply(
        "held.yml",
        &format!(
            r#"
jobs:
  held:
    tasks:
      hold:
        tags: [pool=held]
        run: |
          touch "{d}/started"
          while [ ! -e "{d}/release" ]; do sleep 0.02; done
          echo "holder output"
          echo "who=holder" >> "$GANGER_OUTPUT"
"#
        ),
    );
    let holder = Agent::start(&server, &agent, "holder", &["pool=held"]);
    let id = server.submit(&["held"]);
    wait_for(&dir.join("started"));
    server.wait_status(&id, "running", |r| {
        attempt_status(r, "hold", 1) == Some("running")
    });
    // Another agent, over raw HTTP, with labels no task asks for.
    let register = json!({
        "name": "intruder",
        "labels": ["pool=none"],
        "slots": 1,
        "executors": ["process"],
        "version": "test",
    });
    let (status, body) = http.post("/api/v1/agent/register", &agent, &register);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent_id"], "intruder", "{body}");
    let held = attempt_ref(&id, 0, 1);
    let before = http.snapshot();

    let expect = |what: &str, (status, body): (u16, Value), code: u16| {
        assert_eq!(status, code, "{what}: {body}");
        // Every refusal says why, in the API's error shape.
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what} ({status}) says nothing: {body}"
        );
    };

    // 400: not JSON, or not JSON of the endpoint's shape.
    for endpoint in AGENT_ENDPOINTS {
        let path = format!("/api/v1/agent/{endpoint}");
        for body in ["{", "not json", "", "[]", "null", "{\"agent_id\": 7}"] {
            expect(
                &format!("{endpoint} with body {body:?}"),
                http.post_raw(&path, &agent, body),
                400,
            );
        }
    }
    // 400: an unknown field, at the top or nested.
    let unknown = [
        (
            "register",
            json!({"name": "x", "slots": 1, "executors": ["process"], "version": "t", "admin": true}),
        ),
        (
            "claim",
            json!({"agent_id": "intruder", "max": 1, "wait_ms": 0, "priority": 9}),
        ),
        (
            "heartbeat",
            json!({"agent_id": "intruder", "running": [], "extra": 1}),
        ),
        (
            "heartbeat",
            json!({"agent_id": "intruder", "running": [{"run_id": id, "task": 0, "phase": "main", "attempt": 1, "agent": "holder"}]}),
        ),
        (
            "started",
            json!({"agent_id": "intruder", "attempt": held, "pid": 1}),
        ),
        (
            "logs",
            json!({"agent_id": "intruder", "attempt": held, "offset": 0, "data": "x", "stream": "out"}),
        ),
        (
            "result",
            json!({"agent_id": "intruder", "attempt": held, "exit": {"code": 0}, "force": true}),
        ),
        (
            "result",
            json!({"agent_id": "intruder", "attempt": held, "exit": {"code": 0, "why": "x"}}),
        ),
        ("deregister", json!({"agent_id": "intruder", "now": true})),
    ];
    for (endpoint, body) in &unknown {
        expect(
            &format!("{endpoint} with an unknown field: {body}"),
            http.post(&format!("/api/v1/agent/{endpoint}"), &agent, body),
            400,
        );
    }
    // 400: well-formed JSON saying impossible things.
    let bad_phase = json!({"run_id": id, "task": 0, "phase": "cleanup", "attempt": 1});
    let invalid = [
        (
            "result",
            json!({"agent_id": "holder", "attempt": held, "exit": {}}),
        ),
        (
            "result",
            json!({"agent_id": "holder", "attempt": held, "exit": {"code": 0, "signal": 9}}),
        ),
        (
            "result",
            json!({"agent_id": "holder", "attempt": bad_phase, "exit": {"code": 0}}),
        ),
        (
            "started",
            json!({"agent_id": "holder", "attempt": bad_phase}),
        ),
        (
            "logs",
            json!({"agent_id": "holder", "attempt": bad_phase, "offset": 0, "data": "x"}),
        ),
        (
            "register",
            json!({"name": "has space", "slots": 1, "executors": ["process"], "version": "t"}),
        ),
        (
            "register",
            json!({"name": "local", "slots": 1, "executors": ["process"], "version": "t"}),
        ),
        (
            "register",
            json!({"name": "zero", "slots": 0, "executors": ["process"], "version": "t"}),
        ),
        (
            "register",
            json!({"name": "none", "slots": 1, "executors": [], "version": "t"}),
        ),
    ];
    for (endpoint, body) in &invalid {
        expect(
            &format!("{endpoint} with {body}"),
            http.post(&format!("/api/v1/agent/{endpoint}"), &agent, body),
            400,
        );
    }

    // 401: no token, a malformed header, an unknown token.
    let hb = json!({"agent_id": "intruder", "running": []}).to_string();
    for endpoint in AGENT_ENDPOINTS {
        let path = format!("/api/v1/agent/{endpoint}");
        for auth in [
            None,
            Some("Bearer"),
            Some("Basic dXNlcjpwYXNz"),
            Some(format!("Bearer {}", "0".repeat(64)).as_str()),
            Some(format!("Bearer {agent}x").as_str()),
        ] {
            expect(
                &format!("{endpoint} with Authorization {auth:?}"),
                http.request(reqwest::Method::POST, &path, auth, Some(&hb)),
                401,
            );
        }
    }
    // 403: a user's token on the agent protocol...
    for endpoint in AGENT_ENDPOINTS {
        let path = format!("/api/v1/agent/{endpoint}");
        for (role, t) in [("viewer", &viewer), ("operator", &operator)] {
            expect(
                &format!("{endpoint} with a {role} token"),
                http.post_raw(&path, t, &hb),
                403,
            );
        }
    }
    // ...and an agent's token on the rest of the API.
    let forbidden = [
        (reqwest::Method::GET, "/api/v1/runs".to_owned(), None),
        (reqwest::Method::GET, format!("/api/v1/runs/{id}"), None),
        (
            reqwest::Method::GET,
            format!("/api/v1/runs/{id}/tasks/hold/logs"),
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/runs".to_owned(),
            Some(json!({"job": "held"}).to_string()),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/runs/{id}/cancel"),
            Some("{}".to_owned()),
        ),
        (reqwest::Method::GET, "/api/v1/jobs".to_owned(), None),
        (reqwest::Method::GET, "/api/v1/agents".to_owned(), None),
    ];
    let bearer = format!("Bearer {agent}");
    for (method, path, body) in &forbidden {
        expect(
            &format!("{method} {path} with an agent token"),
            http.request(method.clone(), path, Some(&bearer), body.as_deref()),
            403,
        );
    }

    // 409: messages about an attempt the sender does not hold: another
    // agent's attempt, or a number that is not the current one.
    let stale = [
        ("started", json!({"agent_id": "intruder", "attempt": held})),
        (
            "logs",
            json!({"agent_id": "intruder", "attempt": held, "offset": 0, "data": "2026-01-01T00:00:00Z out forged\n"}),
        ),
        (
            "result",
            json!({"agent_id": "intruder", "attempt": held, "exit": {"code": 0}, "outputs": {"who": "intruder"}}),
        ),
        (
            "result",
            json!({"agent_id": "intruder", "attempt": held, "exit": {"code": 1}}),
        ),
        (
            "started",
            json!({"agent_id": "holder", "attempt": attempt_ref(&id, 0, 2)}),
        ),
        (
            "logs",
            json!({"agent_id": "holder", "attempt": attempt_ref(&id, 0, 2), "offset": 0, "data": "2026-01-01T00:00:00Z out forged\n"}),
        ),
        (
            "result",
            json!({"agent_id": "holder", "attempt": attempt_ref(&id, 0, 2), "exit": {"code": 0}}),
        ),
        (
            "result",
            json!({"agent_id": "holder", "attempt": attempt_ref(&id, 0, 0), "exit": {"code": 0}}),
        ),
    ];
    for (endpoint, body) in &stale {
        let (status, answer) = http.post(&format!("/api/v1/agent/{endpoint}"), &agent, body);
        assert_eq!(status, 409, "{endpoint} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "stale_attempt", "{answer}");
    }
    // A heartbeat naming another agent's attempt renews nothing and is
    // told the attempt is not its own.
    let hb = json!({"agent_id": "intruder", "running": [held]});
    let (status, ack) = http.post("/api/v1/agent/heartbeat", &agent, &hb);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["stale"], json!([held]), "{ack}");
    // 404: an agent the server does not know.
    for endpoint in ["claim", "heartbeat"] {
        let body = json!({"agent_id": "never-registered", "max": 1, "wait_ms": 0});
        let body = if endpoint == "heartbeat" {
            json!({"agent_id": "never-registered", "running": [held]})
        } else {
            body
        };
        expect(
            &format!("{endpoint} from an unknown agent"),
            http.post(&format!("/api/v1/agent/{endpoint}"), &agent, &body),
            404,
        );
    }

    // None of it changed any run.
    let after = http.snapshot();
    assert_eq!(before.0, after.0, "the run list changed");
    assert_eq!(before.1, after.1, "a run changed");

    // The holder's attempt is untouched: it finishes with its own result.
    std::fs::write(dir.join("release"), "").expect("release");
    let run = server.wait_status(&id, "finished", finished);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let hold = task_of(&run, "hold");
    assert_eq!(hold["outputs"]["who"], "holder", "{run:#}");
    let attempts = hold["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(attempts[0]["agent"], "holder", "{run:#}");
    let logs = server.ok(&["logs", &id, "hold"]);
    assert!(logs.contains("holder output"), "{logs}");
    assert!(
        !logs.contains("forged"),
        "a refused chunk was stored:\n{logs}"
    );
    drop(holder);
}

// ------------------------------------------------- product bugs, shown

/// Product bug: a result (or `started`) for an attempt that no agent was
/// given (the task is ready, unclaimed) is accepted from any agent token,
/// even under an agent id that never registered: the run succeeds with
/// the sender's outputs. It must be refused with 409 like any attempt the
/// sender does not hold.
#[test]
fn a_result_for_an_attempt_no_agent_was_given_is_refused() {
    let server = Server::start();
    let agent = agent_token(&server);
    let http = Http::new(&server);
    // No agent has this label: the task stays ready.
    server.apply(
        "unclaimed.yml",
        r#"
jobs:
  unclaimed:
    tasks:
      t:
        tags: [pool=nobody]
        run: echo never
"#,
    );
    let id = server.submit(&["unclaimed"]);
    server.wait_status(&id, "ready", |r| task_of(r, "t")["status"] == "ready");
    let (status, body) = http.post(
        "/api/v1/agent/register",
        &agent,
        &json!({"name": "intruder", "labels": ["pool=other"], "slots": 1,
                "executors": ["process"], "version": "test"}),
    );
    assert_eq!(status, 200, "{body}");
    let before = http.snapshot();
    for sender in ["intruder", "never-registered"] {
        let forged = json!({
            "agent_id": sender,
            "attempt": attempt_ref(&id, 0, 1),
            "exit": {"code": 0},
            "outputs": {"forged": "yes"},
        });
        let (status, body) = http.post("/api/v1/agent/result", &agent, &forged);
        let run = server.json(&["status", &id, "--json"]);
        assert_eq!(
            status, 409,
            "a result from {sender} for an attempt nobody holds was taken: {body}\n{run:#}"
        );
    }
    assert_eq!(before, http.snapshot(), "a run changed");
}

/// Product bug: `started` is not idempotent. An agent resends it when the
/// answer was lost (a server killed right after storing it, a connection
/// reset); the server then answers 409 `stale_attempt` for an attempt the
/// agent holds and runs, the agent drops it (kills it, never sends its
/// result), and as its heartbeats renew every claim it holds the task
/// stays `running` for as long as the agent lives.
#[test]
fn a_resent_started_does_not_make_the_attempt_stale() {
    let server = Server::start();
    let agent = agent_token(&server);
    let http = Http::new(&server);
    server.apply(
        "raw.yml",
        r#"
jobs:
  raw:
    tasks:
      t:
        tags: [pool=raw]
        run: echo raw
"#,
    );
    let (status, body) = http.post(
        "/api/v1/agent/register",
        &agent,
        &json!({"name": "raw", "labels": ["pool=raw"], "slots": 1,
                "executors": ["process"], "version": "test"}),
    );
    assert_eq!(status, 200, "{body}");
    let id = server.submit(&["raw"]);
    let (status, claimed) = http.post(
        "/api/v1/agent/claim",
        &agent,
        &json!({"agent_id": "raw", "max": 1, "wait_ms": 20000}),
    );
    assert_eq!(status, 200, "{claimed}");
    let attempt = claimed["tasks"][0]["attempt"].clone();
    assert_eq!(attempt["run_id"], id.as_str(), "{claimed}");
    let started = json!({"agent_id": "raw", "attempt": attempt});
    let (status, body) = http.post("/api/v1/agent/started", &agent, &started);
    assert_eq!(status, 200, "the first started: {body}");
    // The same message again, as after an answer lost on the way.
    let (status, body) = http.post("/api/v1/agent/started", &agent, &started);
    assert_eq!(status, 200, "a resent started was refused: {body}");
}

/// Product bug: an agent killed mid-task and started again under the
/// same name (a supervisor restarting it) keeps the dead attempt's lease
/// alive: every heartbeat renews all claims held under its name, also
/// those it does not list as running, so the attempt is never lost and
/// the task never retried.
#[test]
fn an_agent_restarted_under_its_name_does_not_keep_its_dead_attempt_alive() {
    let server = Server::start_with(&SHORT_LEASE);
    let token = agent_token(&server);
    let dir = server.dir();
    let d = dir.display();
    server.apply(
        "again.yml",
        &format!(
            r#"
jobs:
  again:
    tasks:
      work:
        tags: [pool=again]
        retry: 1
        run: |
          if [ "$GANGER_ATTEMPT" = 1 ]; then
            echo $$ > "{d}/first.tmp" && mv "{d}/first.tmp" "{d}/first.pid"
            exec sleep 300
          fi
          echo "done on attempt $GANGER_ATTEMPT"
"#
        ),
    );
    let mut one = Agent::start_slots(&server, &token, "one", &["pool=again"], 1);
    let id = server.submit(&["again"]);
    let first = read_pid(&dir.join("first.pid"));
    one.signal(Signal::SIGKILL);
    let _ = one.running.take().expect("running").wait();
    assert!(!process_gone(first), "a task outlives its SIGKILLed agent");
    let one_again = Agent::start_slots(&server, &token, "one", &["pool=again"], 1);
    // The agent started on the same workdir kills what its predecessor
    // left running before it takes work.
    poll_until("the orphaned task process is killed", DEADLINE, || {
        process_gone(first)
    });
    // Lost after a lease (plus the reaper's second), then retried.
    let result = poll_status(&server, &id, LEASE * 10, finished);
    let out = one_again.stop();
    let run = result.unwrap_or_else(|run| {
        panic!(
            "the run did not finish within {:?}: {run:#}\n{out}",
            LEASE * 10
        )
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(attempt_status(&run, "work", 1), Some("lost"), "{run:#}");
}

/// Product bug: a log chunk sent right after a claim is answered may be
/// refused with 409: `agent_log` checks the attempt against the run as
/// stored, and the claim reaches the stored state only with the actor's
/// next commit, after the answer went out. The agent then drops an
/// attempt it holds (kills it, never sends its result), and the task
/// stays `running`: this is what makes
/// `tagged_tasks_run_only_on_the_agent_with_their_labels` fail now and
/// then under load (its `echo` tasks ship their output at once).
#[test]
fn a_log_chunk_right_after_the_claim_is_taken() {
    let server = Server::start();
    let agent = agent_token(&server);
    let http = Http::new(&server);
    server.apply(
        "raw.yml",
        r#"
jobs:
  raw:
    tasks:
      t:
        tags: [pool=raw]
        run: echo raw
"#,
    );
    let (status, body) = http.post(
        "/api/v1/agent/register",
        &agent,
        &json!({"name": "raw", "labels": ["pool=raw"], "slots": 1,
                "executors": ["process"], "version": "test"}),
    );
    assert_eq!(status, 200, "{body}");
    // The race is narrow (one commit): tried many times.
    let mut refused = Vec::new();
    for _ in 0..100 {
        server.submit(&["raw"]);
        let (status, claimed) = http.post(
            "/api/v1/agent/claim",
            &agent,
            &json!({"agent_id": "raw", "max": 1, "wait_ms": 20000}),
        );
        assert_eq!(status, 200, "{claimed}");
        let attempt = claimed["tasks"][0]["attempt"].clone();
        let chunk = json!({"agent_id": "raw", "attempt": attempt, "offset": 0,
                           "data": "2026-01-01T00:00:00Z out raw\n"});
        let (status, body) = http.post("/api/v1/agent/logs", &agent, &chunk);
        if status != 200 {
            refused.push(format!("{status} {body}"));
        }
        let result = json!({"agent_id": "raw", "attempt": attempt, "exit": {"code": 0}});
        let (status, body) = http.post("/api/v1/agent/result", &agent, &result);
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        refused.is_empty(),
        "{} of 100 chunks sent right after their claim were refused:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

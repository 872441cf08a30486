//! Black-box tests of `ganger agent` against a real `ganger server`: tasks
//! go only to agents whose labels satisfy their tags, output and results
//! come back over HTTP, SIGTERM drains, a refused token stops the agent.
//! States are polled with a deadline; task scripts wait on marker files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::server::Server;
use common::{DEADLINE, Output, Running};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A `ganger agent` of one test, stopped (SIGTERM, bounded) when dropped.
struct Agent {
    running: Option<Running>,
}

impl Agent {
    fn start(server: &Server, token: &str, name: &str, labels: &[&str]) -> Agent {
        let mut cmd = agent_command(server, token, name);
        for label in labels {
            cmd.args(["--label", label]);
        }
        let mut running = common::spawn(cmd);
        running.wait_for_output(&format!(
            "ganger agent {name} registered with {}",
            server.addr
        ));
        Agent {
            running: Some(running),
        }
    }

    fn signal(&self, signal: Signal) {
        let running = self.running.as_ref().expect("running");
        kill(Pid::from_raw(running.pid()), signal).expect("signal the agent");
    }

    fn wait_for_output(&mut self, text: &str) {
        self.running
            .as_mut()
            .expect("running")
            .wait_for_output(text);
    }

    /// Waits for the agent to exit (up to the deadline).
    fn wait(mut self) -> Output {
        self.running.take().expect("running").wait()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(running.pid()), Signal::SIGTERM);
        let start = Instant::now();
        while matches!(running.child.try_wait(), Ok(None)) {
            if start.elapsed() > DEADLINE {
                let _ = running.child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn agent_command(server: &Server, token: &str, name: &str) -> std::process::Command {
    let mut cmd = common::ganger();
    cmd.args(["agent", "--server", &server.addr, "--name", name])
        .args(["--slots", "2", "--grace", "30s"])
        .arg("--workdir")
        .arg(server.tmp.path().join(format!("agent-{name}")))
        .env("GANGER_AGENT_TOKEN", token)
        .current_dir(server.tmp.path());
    cmd
}

fn agent_token(server: &Server) -> String {
    let data = server.tmp.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    server
        .ok(&["token", "create", "--role", "agent", "--data", data])
        .trim()
        .to_owned()
}

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

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} did not appear within {DEADLINE:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_agent_killed_mid_task_loses_it_and_another_agent_runs_the_retry() {
    let server = Server::start_with(&[
        ("GANGER_SERVER_LEASE", "2s"),
        ("GANGER_SERVER_HEARTBEAT", "500ms"),
    ]);
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

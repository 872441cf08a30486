//! Black-box tests of the client commands against a real `ganger server`
//! started on a temp data dir and port 0. Nothing waits on a timer for
//! synchronisation: state changes are polled for with a deadline, and task
//! scripts wait (bounded) for marker files the test creates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::server::Server;
use common::{output, spawn, wait_for_file};
use serde_json::Value;

const HELLO: &str = r#"
jobs:
  hello:
    description: Says hello
    params:
      name: { default: world }
    tasks:
      greet:
        run: echo "hello $GANGER_PARAM_NAME"
      after:
        needs: [greet]
        run: echo done >&2
"#;

const FAILS: &str = r#"
jobs:
  flaky:
    params:
      dir: { required: true }
    tasks:
      check:
        run: |
          echo "checking"
          test -e "$GANGER_PARAM_DIR/fixed"
"#;

const BLOCKS: &str = r#"
jobs:
  blocks:
    params:
      dir: { required: true }
    tasks:
      wait:
        run: |
          touch "$GANGER_PARAM_DIR/started"
          exec sleep 300
"#;

#[test]
fn apply_reports_versions_and_invalid_files() {
    let s = Server::start();
    assert_eq!(
        s.apply("hello.yml", HELLO),
        "job hello: version 1 (created)\n"
    );
    assert_eq!(
        s.apply("hello.yml", HELLO),
        "job hello: version 1 (unchanged)\n"
    );
    let changed = HELLO.replace("Says hello", "Says hello again");
    assert_eq!(
        s.apply("hello.yml", &changed),
        "job hello: version 2 (created)\n"
    );

    // An invalid file among several: stops there, says what was stored.
    let good = s.write("good.yml", FAILS);
    let bad = s.write(
        "bad.yml",
        "jobs:\n  broken:\n    tasks:\n      a:\n        needs: [nope]\n",
    );
    let last = s.write("last.yml", BLOCKS);
    let out = s.run(&[
        "apply",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        last.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 2, "{out}");
    assert!(
        out.stdout.contains("job flaky: version 1 (created)"),
        "{out}"
    );
    let bad_name = bad.display().to_string();
    assert!(
        out.stderr.contains(&format!("{bad_name}:5:")),
        "details name file:line:col\n{out}"
    );
    assert!(out.stderr.contains("nope"), "{out}");
    assert!(out.stderr.contains("stored before it: "), "{out}");
    assert!(out.stderr.contains("not sent: "), "{out}");
    let jobs = s.json(&["jobs", "--json"]);
    let names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"flaky") && !names.contains(&"blocks"),
        "{jobs}"
    );
}

#[test]
fn submit_wait_status_logs_and_runs() {
    let s = Server::start();
    s.apply("hello.yml", HELLO);

    let out = s.run(&["submit", "hello", "-p", "name=ganger", "--wait"]);
    assert_eq!(out.code(), 0, "{out}");
    let id = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .expect("the first line names the run")
        .to_owned();
    assert!(
        out.stdout
            .contains(&format!("run {id} of job hello succeeded in")),
        "{out}"
    );

    let run = s.json(&["status", &id, "--json"]);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["params"]["name"], "ganger");
    let status = s.ok(&["status", &id]);
    assert!(status.contains("job:       hello (version 1)"), "{status}");
    assert!(status.contains("TASK"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("greet") && l.contains("succeeded")),
        "{status}"
    );

    // One task: the text only, or with time and stream.
    assert_eq!(s.ok(&["logs", &id, "greet"]), "hello ganger\n");
    assert!(s.ok(&["logs", &id, "after", "-t"]).ends_with(" err done\n"));
    let stamped = s.ok(&["logs", &id, "greet", "--timestamps"]);
    let first = stamped.lines().next().unwrap_or_default();
    assert!(first.ends_with(" out hello ganger"), "{stamped}");
    assert!(
        first
            .split(' ')
            .next()
            .unwrap_or_default()
            .parse::<jiff::Timestamp>()
            .is_ok(),
        "{stamped}"
    );
    // Every task, prefixed, in the job's order.
    assert_eq!(s.ok(&["logs", &id]), "greet | hello ganger\nafter | done\n");
    // A finished run's log, followed, ends at once.
    assert_eq!(
        s.ok(&["logs", &id, "--follow"]),
        "greet | hello ganger\nafter | done\n"
    );

    let runs = s.ok(&["runs"]);
    assert!(runs.starts_with("ID"), "{runs}");
    assert!(
        runs.lines()
            .any(|l| l.starts_with(&id) && l.contains("succeeded")),
        "{runs}"
    );
    let list = s.json(&[
        "runs",
        "--job",
        "hello",
        "--status",
        "succeeded",
        "--all",
        "--json",
    ]);
    assert_eq!(list["runs"][0]["id"], id.as_str(), "{list}");
    let none = s.ok(&["runs", "--status", "failed"]);
    assert_eq!(none, "no runs match\n");
}

#[test]
fn submit_follow_streams_lines_and_states() {
    let s = Server::start();
    s.apply("hello.yml", HELLO);
    let out = s.run(&["submit", "hello", "--follow"]);
    assert_eq!(out.code(), 0, "{out}");
    for line in [
        "greet | hello world",
        "after | done",
        "greet: succeeded (exit 0)",
        "after: succeeded (exit 0)",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "missing {line:?}\n{out}"
        );
    }
    // Each line exactly once, however the streams were opened.
    assert_eq!(out.stdout.matches("hello world").count(), 1, "{out}");
}

#[test]
fn failed_runs_exit_1_and_retry_reruns_them() {
    let s = Server::start();
    s.apply("flaky.yml", FAILS);
    let dir = s.dir().display().to_string();
    let param = format!("dir={dir}");
    let out = s.run(&["submit", "flaky", "-p", &param, "--wait", "--json"]);
    assert_eq!(out.code(), 1, "{out}");
    let run: Value = serde_json::from_str(&out.stdout).expect("the finished run as JSON");
    assert_eq!(run["status"], "failed");
    assert!(
        out.stderr.contains("FAILED"),
        "the summary goes to stderr with --json\n{out}"
    );
    let id = run["id"].as_str().unwrap().to_owned();

    std::fs::write(s.dir().join("fixed"), "").unwrap();
    let retried = s.ok(&["retry", &id]);
    assert!(retried.starts_with(&format!("run {id}: ")), "{retried}");
    s.wait_status(&id, "succeeded", |r| r["status"] == "succeeded");
    let log = s.ok(&["logs", &id, "check"]);
    assert!(log.contains("--- attempt 2 ---"), "{log}");
    assert_eq!(log.matches("checking").count(), 2, "{log}");
}

#[test]
fn cancel_ends_a_waiting_submit_with_130() {
    let s = Server::start();
    s.apply("blocks.yml", BLOCKS);
    let param = format!("dir={}", s.dir().display());
    let mut waiter = spawn(s.client(&["submit", "blocks", "-p", &param, "--wait"]));
    wait_for_file(&s.dir().join("started"), &mut waiter);
    waiter.wait_for_output("run ");
    let id = s.json(&["runs", "--json"])["runs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = s.ok(&["cancel", &id]);
    assert!(cancelled.starts_with(&format!("run {id}: ")), "{cancelled}");
    let out = waiter.wait();
    assert_eq!(out.code(), 130, "{out}");
    assert!(out.stdout.contains("cancelled"), "{out}");
    // Cancelling again is refused with the server's reason.
    let again = s.run(&["cancel", &id]);
    assert_eq!(again.code(), 2, "{again}");
    assert!(again.stderr.starts_with("error: "), "{again}");
}

#[test]
fn scheduled_runs_wait_and_can_be_cancelled() {
    let s = Server::start();
    s.apply("hello.yml", HELLO);
    let id = s.submit(&["hello", "--at", "in 1h", "--idempotency-key", "once"]);
    // The same key names the same run.
    let again = s.ok(&[
        "submit",
        "hello",
        "--at",
        "+1h",
        "--idempotency-key",
        "once",
    ]);
    assert!(
        again.starts_with(&format!("run {id}: queued (an existing run")),
        "{again}"
    );
    let status = s.ok(&["status", &id]);
    assert!(status.contains("status:    queued"), "{status}");
    assert!(status.contains("scheduled: "), "{status}");
    let runs = s.ok(&["runs"]);
    assert!(
        runs.lines()
            .any(|l| l.starts_with(&id) && l.contains("queued")),
        "{runs}"
    );
    // Pages are followed with --all.
    let second = s.submit(&["hello", "--at", "+2h"]);
    let third = s.submit(&["hello", "--at", "+3h", "--priority", "-1"]);
    let all = s.json(&["runs", "--all", "--limit", "1", "--json"]);
    let ids: Vec<&str> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [third.as_str(), second.as_str(), id.as_str()],
        "newest first\n{all}"
    );
    let one = s.run(&["runs", "--limit", "1"]);
    assert_eq!(one.stdout.lines().count(), 2, "{one}");
    assert!(one.stderr.contains("--all"), "{one}");
    let cancelled = s.ok(&["cancel", &id]);
    assert!(
        cancelled.starts_with(&format!("run {id}: cancelled")),
        "{cancelled}"
    );
    let out = s.run(&["status", &id, "--json"]);
    let run: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(run["status"], "cancelled", "{out}");
}

#[test]
fn exec_runs_one_command_word_for_word() {
    let s = Server::start();
    let out = s.run(&[
        "exec", "--follow", "--", "printf", "%s\\n", "a  b", "$HOME", "it's",
    ]);
    assert_eq!(out.code(), 0, "{out}");
    for line in ["exec | a  b", "exec | $HOME", "exec | it's"] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "missing {line:?}\n{out}"
        );
    }
    let out = s.run(&["exec", "--wait", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code(), 1, "{out}");
    // Both runs used one stored version of the `ganger.exec` job.
    let job = s.json(&["jobs", "ganger.exec", "--json"]);
    assert_eq!(job["versions"].as_array().map(Vec::len), Some(1), "{job}");
}

#[test]
fn jobs_graph_and_agents() {
    let s = Server::start();
    s.apply("hello.yml", HELLO);
    let jobs = s.ok(&["jobs"]);
    assert!(jobs.starts_with("NAME"), "{jobs}");
    assert!(
        jobs.lines()
            .any(|l| l.starts_with("hello") && l.contains("Says hello")),
        "{jobs}"
    );
    let graph = s.ok(&["graph", "hello"]);
    assert!(graph.contains("digraph"), "{graph}");
    assert!(
        graph.contains("greet") && graph.contains("after"),
        "{graph}"
    );
    let missing = s.run(&["graph", "nope"]);
    assert_eq!(missing.code(), 2, "{missing}");
    let agents = s.ok(&["agents"]);
    assert!(agents.starts_with("NAME"), "{agents}");
    let list = s.json(&["agents", "--json"]);
    assert!(
        list["agents"].as_array().is_some_and(|a| !a.is_empty()),
        "{list}"
    );
}

#[test]
fn errors_say_what_to_do() {
    let s = Server::start();
    // A refused token names where it came from.
    let mut cmd = s.client(&["jobs"]);
    cmd.env("GANGER_TOKEN", "not-a-token");
    let out = output(cmd);
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("GANGER_TOKEN"), "{out}");
    // No token at all: the hint says how to get one.
    let mut cmd = s.client(&["jobs"]);
    cmd.env("GANGER_SERVER_DATA", s.tmp.path().join("elsewhere"));
    let out = output(cmd);
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("no token was sent"), "{out}");
    // Unknown job and bad params are the server's words, exit 2.
    let out = s.run(&["submit", "nope"]);
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("nope"), "{out}");
    s.apply("flaky.yml", FAILS);
    let out = s.run(&["submit", "flaky"]);
    assert_eq!(out.code(), 2, "a required param is missing\n{out}");
    // Nobody listening.
    let out = output({
        let mut cmd = s.client(&["runs"]);
        cmd.env("GANGER_ADDR", closed_port_addr());
        cmd
    });
    assert_eq!(out.code(), 2, "{out}");
    assert!(
        out.stderr.contains("cannot reach the ganger server at"),
        "{out}"
    );
}

/// An address where nothing listens: a port bound and released.
fn closed_port_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

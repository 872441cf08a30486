//! Black-box tests of the job endpoint (`$GANGER_JOB_URL`): a task reads
//! its job and reports progress and outputs over HTTP, with python3's
//! urllib, as a Foreman job image would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Case;
use common::agent::{Agent, agent_token};
use common::server::Server;
use serde_json::json;

const JOB: &str = r#"
jobs:
  j:
    params:
      who: {default: "wo rld"}
    tasks:
      a:
        body: {greet: "hi {{ params.who }}", n: 3}
        run: |
          python3 - <<'EOF'
          import json, os, urllib.request
          url = os.environ["GANGER_JOB_URL"]
          assert os.environ["FOREMAN_GET_JOB_ENDPOINT"] == url
          assert os.environ["FOREMAN_PUT_JOB_ENDPOINT"] == url
          http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
          job = json.load(http.open(url))
          assert job["body"] == {"greet": "hi wo rld", "n": 3}, job
          assert job["params"] == {"who": "wo rld"}, job
          assert (job["task"], job["attempt"], job["phase"]) == ("a", 1, "main"), job
          put = urllib.request.Request(
              url,
              method="PUT",
              data=json.dumps({"x": "42", "y": 1}).encode(),
              headers={"x-ganger-job-status": "running", "x-ganger-job-progress": "0.5"},
          )
          http.open(put).read()
          try:
              http.open(urllib.request.Request(url, method="PUT", headers={"x-foreman-job-progress": "1.5", "x-foreman-job-status": "running"}))
              raise SystemExit("a progress of 1.5 was accepted")
          except urllib.error.HTTPError as e:
              assert e.code == 400, e.code
          EOF
          echo "y=from-file" >> "$GANGER_OUTPUT"
      b:
        needs: [a]
        run: echo "seen=x={{ tasks.a.outputs.x }},y={{ tasks.a.outputs.y }}" >> "$GANGER_OUTPUT"
"#;

#[test]
fn a_task_reads_its_job_and_reports_progress_and_outputs() {
    let files = tempfile::tempdir().expect("tempdir");
    let file = files.path().join("job.yml");
    std::fs::write(&file, JOB).expect("write job file");
    let run = Case::file(file).no_dir().run();
    run.expect_code(0)
        .expect("succeeded", &[("a", "succeeded"), ("b", "succeeded")]);
    let a = run.task("a");
    // Outputs sent to the endpoint, overridden by `$GANGER_OUTPUT` lines.
    assert_eq!(a["outputs"], json!({"x": "42", "y": "from-file"}), "{run}");
    assert_eq!(a["attempts"][0]["progress"], json!(0.5), "{run}");
    assert_eq!(
        run.task("b")["outputs"]["seen"],
        json!("x=42,y=from-file"),
        "{run}"
    );
    let log = std::fs::read_to_string(
        run.case
            .workdir()
            .join(".ganger/logs")
            .join(log_name(&run.case.workdir(), "a")),
    )
    .expect("a's log");
    assert!(
        log.lines()
            .any(|l| l.ends_with(" err [ganger] progress 50%")),
        "{log}"
    );
}

/// The one log file of task `task` in the workdir.
fn log_name(workdir: &std::path::Path, task: &str) -> String {
    std::fs::read_dir(workdir.join(".ganger/logs"))
        .expect("logs dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(task))
        .unwrap_or_else(|| panic!("no log of {task}"))
}

#[test]
fn progress_from_a_remote_agent_shows_in_status_while_the_task_runs() {
    let server = Server::start_with(&[("GANGER_SERVER_LOCAL_AGENT", "false")]);
    let token = agent_token(&server);
    let _agent = Agent::start(&server, &token, "remote", &[]);
    let dir = server.dir();
    let gate = dir.join("release");
    server.apply(
        "slow.yml",
        &format!(
            r#"
jobs:
  slow:
    tasks:
      t:
        run: |
          python3 - <<'EOF'
          import urllib.request, os
          http = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
          put = urllib.request.Request(os.environ["GANGER_JOB_URL"], method="PUT",
              headers={{"x-ganger-job-status": "running", "x-ganger-job-progress": "0.4"}})
          http.open(put).read()
          EOF
          while [ ! -e "{}" ]; do sleep 0.05; done
"#,
            gate.display()
        ),
    );
    let id = server.submit(&["slow"]);
    let run = server.wait_status(&id, "progress shown", |r| {
        r["tasks"][0]["attempts"][0]["progress"] == json!(0.4)
    });
    assert_eq!(run["tasks"][0]["status"], "running", "{run:#}");
    assert_eq!(run["tasks"][0]["attempts"][0]["agent"], "remote", "{run:#}");
    let table = server.ok(&["status", &id]);
    assert!(table.contains("40%"), "{table}");
    std::fs::write(&gate, "").expect("release");
    let run = server.wait_status(&id, "finished", |r| r["status"] != "running");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let logs = server.ok(&["logs", &id, "t"]);
    assert!(logs.contains("[ganger] progress 40%"), "{logs}");
}

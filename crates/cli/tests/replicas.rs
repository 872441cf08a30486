//! Several `ganger server` replicas on one PostgreSQL database, with real
//! agents: any replica serves any request, a `kill -9` of the leading
//! replica hands its duties (timers, lease reaping) to another, and a
//! restart of PostgreSQL under load loses no accepted run.
//!
//! Needs a PostgreSQL server (`eval "$(scripts/postgres)"`); each test
//! makes a database of its own. Without one these tests pass after a note,
//! unless `GANGER_REQUIRE_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../store/tests/support/pgdb.rs"]
mod pgdb;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::poll_until;
use common::server::Server;
use common::{DEADLINE, Running};
use serde_json::Value;

use pgdb::TestDb;

/// Short leases keep failovers quick; what a test measures is that they
/// happen, not how fast.
const REPLICA_ENV: &[(&str, &str)] = &[
    ("GANGER_SERVER_LOCAL_AGENT", "false"),
    ("GANGER_SERVER_LEADER_LEASE", "2s"),
    ("GANGER_SERVER_LEASE", "4s"),
    ("GANGER_SERVER_HEARTBEAT", "1s"),
];

fn test_db() -> Option<TestDb> {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(TestDb::create())
}

/// A replica on `url`, once it has taken its role (`leads` or not).
fn replica(url: &str, leads: bool) -> Server {
    let mut env = REPLICA_ENV.to_vec();
    env.push(("GANGER_SERVER_DATABASE", url));
    let server = Server::start_with(&env);
    let role = if leads {
        "this replica leads"
    } else {
        "following the leader at"
    };
    wait_log(&server, role, 0);
    server
}

/// Waits until the server's log holds `text` after byte `from`; returns
/// where it was found.
fn wait_log(server: &Server, text: &str, from: usize) -> usize {
    let mut at = 0;
    poll_until(&format!("the server to say `{text}`"), DEADLINE, || {
        let log = server.log.lock().unwrap();
        match log.get(from..).and_then(|tail| tail.find(text)) {
            Some(i) => {
                at = from + i;
                true
            }
            None => false,
        }
    });
    at
}

fn log_len(server: &Server) -> usize {
    server.log.lock().unwrap().len()
}

/// A token of `role` made on the shared database.
fn token(server: &Server, url: &str, role: &str) -> String {
    server
        .ok(&["token", "create", "--role", role, "--database", url])
        .trim()
        .to_owned()
}

/// A `ganger agent` talking to `servers` (tried in order), registered.
fn agent(dir: &Path, token: &str, name: &str, servers: &[&str], labels: &[&str]) -> Running {
    let mut cmd = common::ganger();
    cmd.args(["agent", "--name", name, "--slots", "2", "--grace", "30s"])
        .arg("--server")
        .arg(servers.join(","))
        .arg("--workdir")
        .arg(dir.join(format!("agent-{name}")))
        .env("GANGER_AGENT_TOKEN", token)
        .current_dir(dir);
    for label in labels {
        cmd.args(["--label", label]);
    }
    let mut running = common::spawn(cmd);
    running.wait_for_output(&format!("ganger agent {name} registered with"));
    running
}

fn attempts(run: &Value, task: &str) -> Vec<Value> {
    run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"] == task)
        .unwrap_or_else(|| panic!("no task {task} in {run:#}"))["attempts"]
        .as_array()
        .expect("attempts")
        .clone()
}

fn finished(run: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or_default())
}

#[test]
fn a_run_submitted_on_one_replica_runs_on_an_agent_of_the_other() {
    let Some(db) = test_db() else { return };
    let a = replica(&db.url, true);
    let b = replica(&db.url, false);
    let token = token(&a, &db.url, "agent");
    let _near_a = agent(a.tmp.path(), &token, "near-a", &[&a.addr], &["site=a"]);
    let _near_b = agent(b.tmp.path(), &token, "near-b", &[&b.addr], &["site=b"]);
    a.apply(
        "jobs.yml",
        "jobs:\n  on-a:\n    tasks:\n      t: {run: 'echo on a', tags: [site=a]}\n  on-b:\n    tasks:\n      t: {run: 'echo on b', tags: [site=b]}\n",
    );

    // Submitted on the leader, run by the agent attached to the follower.
    let id = a.submit(&["on-b"]);
    let run = b.wait_status(&id, "finished", finished);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(attempts(&run, "t")[0]["agent"], "near-b", "{run:#}");

    // Submitted on the follower, run by the agent attached to the leader.
    let id = b.submit(&["on-a"]);
    let run = a.wait_status(&id, "finished", finished);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(attempts(&run, "t")[0]["agent"], "near-a", "{run:#}");
    assert!(b.ok(&["logs", &id, "t"]).contains("on a"));

    // Both replicas show every agent, wherever it is attached.
    let agents = b.json(&["agents", "--json"]);
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(
        names.contains(&"near-a") && names.contains(&"near-b"),
        "{agents:#}"
    );
}

#[test]
fn the_other_replica_takes_over_timers_and_reaping_when_the_leader_is_killed() {
    let Some(db) = test_db() else { return };
    let mut a = replica(&db.url, true);
    let b = replica(&db.url, false);
    let token = token(&a, &db.url, "agent");
    let marks = b.tmp.path().join("marks");
    std::fs::create_dir(&marks).expect("mkdir marks");
    a.apply(
        "jobs.yml",
        &format!(
            r#"
jobs:
  held:
    tasks:
      t:
        tags: [site=x]
        retry: {{attempts: 2}}
        run: |
          if [ -e {m}/held ]; then echo second; exit 0; fi
          touch {m}/held; exec sleep 300
  timed:
    tasks:
      t: {{tags: [site=y], timeout: 6s, run: 'touch {m}/timed; exec sleep 300'}}
"#,
            m = marks.display()
        ),
    );
    // `doomed` dies with the leader; `steady` knows both replicas.
    let mut doomed = agent(a.tmp.path(), &token, "doomed", &[&a.addr], &["site=x"]);
    let _steady = agent(
        b.tmp.path(),
        &token,
        "steady",
        &[&a.addr, &b.addr],
        &["site=y"],
    );
    let held = a.submit(&["held"]);
    let timed = a.submit(&["timed"]);
    common::process::wait_for(&marks.join("held"));
    common::process::wait_for(&marks.join("timed"));

    let from = log_len(&b);
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    a.kill9();
    let killed = Instant::now();
    wait_log(&b, "this replica leads", from);
    let took_over = killed.elapsed();

    // Reaping: the dead agent's lease runs out under the new leader, and
    // the attempt is lost and retried on an agent of the new leader.
    let _rescuer = agent(b.tmp.path(), &token, "rescuer", &[&b.addr], &["site=x"]);
    let run = b.wait_status(&held, "finished", finished);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let tries = attempts(&run, "t");
    assert_eq!(tries.len(), 2, "{run:#}");
    assert_eq!(tries[0]["status"], "lost", "{run:#}");
    assert_eq!(tries[1]["agent"], "rescuer", "{run:#}");

    // Timers: the timeout armed under the old leader fires under the new.
    let run = b.wait_status(&timed, "finished", finished);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(attempts(&run, "t")[0]["status"], "timed_out", "{run:#}");
    println!("the follower led {took_over:?} after the leader was killed (leader lease 2 s)");
}

/// A PostgreSQL server of the test's own, so that restarting it disturbs
/// no other test.
struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
}

impl PrivatePg {
    fn start() -> Option<PrivatePg> {
        pgdb::server_url()?;
        let dir = tempfile::Builder::new()
            .prefix("ganger-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // As root the server runs as `postgres`, which must enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut pg = PrivatePg {
            dir,
            port,
            url: String::new(),
        };
        let out = pg.script("start");
        let line = out
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("export GANGER_TEST_POSTGRES_URL="))
            .unwrap_or_else(|| panic!("scripts/postgres printed no URL:\n{out}"));
        pg.url = line.to_owned();
        Some(pg)
    }

    fn script(&self, command: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres");
        let out = Command::new(script)
            .arg(command)
            .env("GANGER_PG_DIR", self.cluster())
            .env("GANGER_PG_PORT", self.port.to_string())
            .output()
            .expect("run scripts/postgres");
        assert!(
            out.status.success(),
            "scripts/postgres {command} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cluster(&self) -> PathBuf {
        self.dir.path().join("pg")
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres");
        let _ = Command::new(script)
            .arg("stop")
            .env("GANGER_PG_DIR", self.cluster())
            .env("GANGER_PG_PORT", self.port.to_string())
            .output();
    }
}

/// Submits `job` with an idempotency key through either replica until one
/// accepts it; returns the run id and whether any try was answered 503.
fn submit_until_accepted(replicas: &[&Server], job: &str, key: &str) -> (String, bool) {
    let start = Instant::now();
    let mut saw_503 = false;
    loop {
        for r in replicas {
            let out = r.run(&["submit", job, "--idempotency-key", key, "--json"]);
            if out.code() == 0 {
                let v: Value = serde_json::from_str(&out.stdout).expect("submit --json");
                return (v["id"].as_str().expect("id").to_owned(), saw_503);
            }
            saw_503 |= out.stderr.contains("503") || out.stderr.contains("unavailable");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no replica accepted {key} within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_accepted_run_completes_across_a_postgres_restart() {
    let Some(pg) = PrivatePg::start() else { return };
    let a = replica(&pg.url, true);
    let b = replica(&pg.url, false);
    let token = token(&a, &pg.url, "agent");
    let worker = agent(a.tmp.path(), &token, "worker", &[&a.addr, &b.addr], &[]);
    a.apply(
        "jobs.yml",
        "jobs:\n  steps:\n    tasks:\n      one: {run: 'sleep 0.05'}\n      two: {run: 'echo done', needs: [one]}\n",
    );

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(submit_until_accepted(&[&a, &b], "steps", &format!("before-{i}")).0);
    }
    pg.script("stop");
    // While the database is down the replicas answer, with 503.
    let http = common::http::Http::new(&a);
    let (status, body) = http.get("/api/v1/runs", &http.admin);
    assert_eq!(status, 503, "listing runs without a database: {body}");
    let (status, body) = http.get("/readyz", "");
    assert_eq!(status, 503, "{body}");
    pg.script("start");
    let mut saw_503 = false;
    for i in 0..20 {
        let (id, got_503) = submit_until_accepted(&[&a, &b], "steps", &format!("after-{i}"));
        saw_503 |= got_503;
        ids.push(id);
    }
    let failed: Vec<Value> = ids
        .iter()
        .map(|id| a.wait_status(id, "finished", finished))
        .filter(|run| run["status"] != "succeeded")
        .collect();
    if !failed.is_empty() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        panic!(
            "{} run(s) did not succeed, e.g. {:#}\n--- agent:\n{}\n--- replica a:\n{}\n--- replica b:\n{}",
            failed.len(),
            failed[0],
            worker.wait(),
            a.log.lock().unwrap(),
            b.log.lock().unwrap()
        );
    }
    let listed = b.json(&["runs", "--json", "--limit", "100"]);
    assert_eq!(
        listed["runs"].as_array().expect("runs").len(),
        ids.len(),
        "{listed:#}"
    );
    println!("40 runs accepted around a PostgreSQL restart; a 503 seen after it: {saw_503}");
    drop(pg);
}

//! Crash safety of the real server: a mixed workload of 200 runs while the
//! server is killed with SIGKILL at random moments and restarted on the same
//! data directory. Every accepted run must end with the outcome its job
//! defines, none may go missing, and no task may succeed twice.
//!
//! Runs are submitted with idempotency keys, as a careful client would: a
//! submission whose answer was lost to a crash is sent again and cannot
//! create a second run.
//!
//! The same workload runs on one server over SQLite, and on two replicas
//! over one PostgreSQL database, killing either replica at random (the
//! leader's death hands the runs to the other; clients try both URLs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../store/tests/support/pgdb.rs"]
mod pgdb;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RUNS: usize = 200;

/// A tiny deterministic generator: the seed is printed, so a failure can be
/// replayed with `GANGER_CRASH_SEED`.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

struct Server {
    child: Child,
    url: String,
}

/// How servers are started: their database (`None`: SQLite in the data
/// directory) and data directories, one per replica.
struct Setup {
    database: Option<String>,
    data: Vec<std::path::PathBuf>,
}

fn start(setup: &Setup, replica: usize) -> Server {
    let data = &setup.data[replica];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ganger"));
    if let Some(url) = &setup.database {
        cmd.env("GANGER_SERVER_DATABASE", url)
            .env("GANGER_SERVER_LEADER_LEASE", "2s");
    }
    let mut child = cmd
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("GANGER_CONFIG")
        .env("GANGER_CRASH_DIR", data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ganger server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the server prints where it listens")
            .expect("read stderr");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

fn kill(server: &mut Server) {
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
}

fn job_file(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
jobs:
  ok:
    tasks:
      a: {{run: 'sleep 0.0$((RANDOM % 5))'}}
      b: {{run: 'echo "v=$GANGER_RUN_ID" >> "$GANGER_OUTPUT"', needs: [a]}}
      c: {{run: 'sleep 0.0$((RANDOM % 5))', needs: [a]}}
      d: {{run: 'test "{{{{ tasks.b.outputs.v }}}}" = "$GANGER_RUN_ID"', needs: [b, c]}}
  fails:
    tasks:
      a: {{run: 'true'}}
      b: {{run: 'exit 3', needs: [a]}}
      never: {{run: 'true', needs: [b]}}
      cleanup: {{run: 'true', needs: [b], always: true}}
  retries:
    tasks:
      flaky:
        run: |
          mark="{d}/flaky-$GANGER_RUN_ID"
          if [ -e "$mark" ]; then exit 0; fi
          touch "$mark"; exit 1
        retry: {{attempts: 2, delay: 50ms}}
      after: {{run: 'true', needs: [flaky]}}
"#
    )
}

fn expected(job: &str) -> &'static str {
    match job {
        "fails" => "failed",
        _ => "succeeded",
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
}

impl Client {
    async fn post(&self, url: &str, body: Value) -> Result<Value, String> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    async fn get(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_run_is_lost_across_repeated_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        database: None,
        data: vec![dir.path().join("data")],
    };
    workload(dir.path(), &setup, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_run_is_lost_across_sigkills_of_two_replicas_on_postgres() {
    let Some(db) = pgdb::TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup {
        database: Some(db.url.clone()),
        data: vec![dir.path().join("data-0"), dir.path().join("data-1")],
    };
    workload(dir.path(), &setup, 10).await;
}

/// Any replica's answer, tried in turn (a dead or leaderless one fails).
async fn post_any(
    client: &Client,
    servers: &[Server],
    path: &str,
    body: Value,
) -> Result<Value, String> {
    let mut errors = Vec::new();
    for s in servers {
        match client.post(&format!("{}{path}", s.url), body.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

async fn get_any(client: &Client, servers: &[Server], path: &str) -> Result<Value, String> {
    let mut errors = Vec::new();
    for s in servers {
        match client.get(&format!("{}{path}", s.url)).await {
            Ok(v) => return Ok(v),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

async fn workload(dir: &Path, setup: &Setup, kills_planned: usize) {
    let seed = std::env::var("GANGER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x9e37_79b9);
    println!("seed {seed}");
    let mut rng = Lcg(seed);
    let mut servers: Vec<Server> = (0..setup.data.len()).map(|i| start(setup, i)).collect();
    let token = std::fs::read_to_string(setup.data[0].join("admin.token")).expect("admin token");
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        token: token.trim().to_owned(),
    };
    let jobs = job_file(dir);
    let applied = Instant::now();
    'apply: loop {
        for s in &servers {
            let answer = client
                .http
                .post(format!("{}/api/v1/jobs", s.url))
                .bearer_auth(&client.token)
                .body(jobs.clone())
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                break 'apply;
            }
        }
        // Replicas answer 503 until one of them leads.
        assert!(
            applied.elapsed() < Duration::from_secs(60),
            "no server took the job file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Submissions and kills interleave: each round submits a few runs
    // (retrying those whose answer was lost), then kills the server after
    // a random delay and restarts it.
    let kinds = ["ok", "fails", "retries"];
    let plan: Vec<(String, &str)> = (0..RUNS)
        .map(|i| (format!("crash-{i}"), kinds[rng.next(3) as usize]))
        .collect();
    let mut accepted: BTreeMap<String, (String, &str)> = BTreeMap::new();
    let mut next = 0;
    let mut kills = 0;
    while kills < kills_planned || next < RUNS {
        let batch = (RUNS / kills_planned).max(1) + rng.next(5) as usize;
        let until = (next + batch).min(RUNS);
        while next < until {
            let (key, job) = &plan[next];
            let body = json!({"job": job, "idempotency_key": key});
            match post_any(&client, &servers, "/api/v1/runs", body).await {
                Ok(v) => {
                    let id = v["id"].as_str().expect("id").to_owned();
                    if let Some((old, _)) = accepted.insert(key.clone(), (id.clone(), job)) {
                        assert_eq!(old, id, "one key, one run");
                    }
                    next += 1;
                }
                // The server is restarting (or no replica leads yet);
                // this run is tried again.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
        if kills < kills_planned {
            let delay = Duration::from_millis(20 + rng.next(400));
            tokio::time::sleep(delay).await;
            let victim = rng.next(servers.len() as u64) as usize;
            kill(&mut servers[victim]);
            kills += 1;
            servers[victim] = start(setup, victim);
        }
    }

    // Every accepted run ends, with its job's outcome.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts = 0;
    let mut interrupted = 0;
    for (key, (id, job)) in &accepted {
        let run = loop {
            let run = match get_any(&client, &servers, &format!("/api/v1/runs/{id}")).await {
                Ok(run) => run,
                // No replica leads for a moment after a kill.
                Err(e) if e.contains("503") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => panic!("run {id} ({key}) is missing: {e}"),
            };
            let status = run["status"].as_str().unwrap_or_default().to_owned();
            if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
                break run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} ({job}) never finished: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let status = run["status"].as_str().unwrap_or_default();
        assert_eq!(status, expected(job), "run {id} of job {job}: {run}");
        *outcomes.entry(status.to_owned()).or_default() += 1;
        for task in run["tasks"].as_array().expect("tasks") {
            let tries = task["attempts"].as_array().expect("attempts");
            attempts += tries.len();
            interrupted += tries
                .iter()
                .filter(|a| {
                    a["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("interrupted"))
                })
                .count();
            let succeeded = tries.iter().filter(|a| a["status"] == "succeeded").count();
            assert!(succeeded <= 1, "task succeeded twice in run {id}: {task}");
        }
    }
    // The server holds exactly the accepted runs: none lost, none doubled.
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs?limit=100&cursor={c}"),
            None => "/api/v1/runs?limit=100".to_owned(),
        };
        let page = get_any(&client, &servers, &path).await.expect("list runs");
        listed += page["runs"].as_array().expect("runs").len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    for server in &mut servers {
        kill(server);
    }
    println!(
        "{} runs accepted, {listed} stored, {kills} SIGKILLs of {} server(s); outcomes {outcomes:?}; {attempts} attempts, {interrupted} interrupted by a crash",
        accepted.len(),
        servers.len()
    );
    assert_eq!(accepted.len(), RUNS);
    assert_eq!(listed, RUNS);
    assert!(kills >= kills_planned);
}

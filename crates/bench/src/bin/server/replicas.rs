//! The `replicas` case: the agents case's throughput through two remote
//! agents on a server on SQLite, on one replica on PostgreSQL and on two
//! replicas sharing one PostgreSQL database.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::{StatusCode, Url};

use super::agents::{self, AgentProc, median_flood, remarks_block, split_slots};
use super::{
    Args, Bench, Dist, Flood, NOOP_JOB, START_TIMEOUT, Server, Submitted, cpu_time, dist_header,
    drain, flood, server_remarks, tail,
};

/// What a replica says once it has taken its role.
const LEADS: &str = "this replica leads";
const FOLLOWS: &str = "following the leader at ";

/// The three setups measured, in the order they are interleaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// One server on SQLite.
    Sqlite,
    /// One replica on PostgreSQL.
    Pg1,
    /// Two replicas on one PostgreSQL database.
    Pg2,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::Sqlite, Setup::Pg1, Setup::Pg2];

    fn tag(self) -> &'static str {
        match self {
            Setup::Sqlite => "sqlite",
            Setup::Pg1 => "pg1",
            Setup::Pg2 => "pg2",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Setup::Sqlite => "SQLite, 1 server",
            Setup::Pg1 => "PostgreSQL, 1 replica (PG-1)",
            Setup::Pg2 => "PostgreSQL, 2 replicas (PG-2)",
        }
    }
}

// ---------------------------------------------------------------- databases

/// A database created here on the `--postgres` server, dropped (with
/// `psql`) when this is dropped.
struct PgDb {
    /// The URL of the server's maintenance database, which `psql` connects to.
    admin: String,
    name: String,
    /// The URL of the new database.
    url: String,
}

impl PgDb {
    fn create(admin: &str, name: &str) -> Result<PgDb> {
        let mut url =
            Url::parse(admin).with_context(|| format!("--postgres {admin}: not a URL"))?;
        url.set_path(&format!("/{name}"));
        psql(
            admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(admin, &format!("CREATE DATABASE {name}"))?;
        Ok(PgDb {
            admin: admin.to_owned(),
            name: name.to_owned(),
            url: url.to_string(),
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin, &sql) {
            eprintln!(
                "ganger-bench-server: dropping database {}: {e:#}",
                self.name
            );
        }
    }
}

/// `psql URL -c SQL`, failing on an error.
fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is it installed?)")?;
    ensure!(
        out.status.success(),
        "`psql -c '{sql}'` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

// ---------------------------------------------------------------- roles

/// Waits until `server`'s output holds `text`.
fn wait_for_line(server: &mut Server, text: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let out = server.output();
        if out.contains(text) {
            return Ok(());
        }
        server.check_alive(&format!("before saying `{text}`"))?;
        ensure!(
            Instant::now() < deadline,
            "server {} did not say `{text}` in {}s; its output:\n{}",
            server.name,
            START_TIMEOUT.as_secs(),
            tail(&out)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `/readyz` of `server` until it answers 200.
async fn wait_ready(server: &Server) -> Result<()> {
    let api = server.api()?;
    let url = api.url("/readyz")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match api.http.get(url.clone()).send().await {
            Ok(r) if r.status() == StatusCode::OK => return Ok(()),
            Ok(r) => format!(
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default().trim()
            ),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            Instant::now() < deadline,
            "server {} was not ready in {}s; /readyz said {last}",
            server.name,
            START_TIMEOUT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- one measurement

/// `--runs` single-task `true` runs through two remote agents (a1, a2
/// sharing `--slots`) on `setup`, timed until none is queued or running;
/// with two replicas the submissions (and clients) are split evenly
/// between them and each agent is attached to its own replica first.
async fn replicas_flood(bench: &Bench, args: &Args, i: usize, setup: Setup) -> Result<Flood> {
    let name = format!("replicas-{}-{i}", setup.tag());
    // Declared first, so dropped (the database removed) after the
    // servers and agents are stopped.
    let db = match setup {
        Setup::Sqlite => None,
        Setup::Pg1 | Setup::Pg2 => {
            let admin = args
                .postgres
                .as_deref()
                .context("the replicas case needs --postgres URL (or GANGER_TEST_POSTGRES_URL)")?;
            let db_name = format!("ganger_bench_{}_{}_{i}", std::process::id(), setup.tag());
            Some(PgDb::create(admin, &db_name)?)
        }
    };
    let mut servers = Vec::new();
    match &db {
        None => servers.push(Server::start(bench, &name, false, &[])?),
        Some(db) => {
            let env = [("GANGER_SERVER_DATABASE", db.url.as_str())];
            let mut r1 = Server::start(bench, &format!("{name}-r1"), false, &env)?;
            wait_for_line(&mut r1, LEADS)?;
            servers.push(r1);
            if setup == Setup::Pg2 {
                let mut r2 = Server::start(bench, &format!("{name}-r2"), false, &env)?;
                wait_for_line(&mut r2, FOLLOWS)?;
                servers.push(r2);
            }
        }
    }
    for s in &servers {
        wait_ready(s).await?;
    }
    // Declared after the servers, so dropped (stopped) before them.
    let mut procs = Vec::new();
    let token = bench.agent_token(&servers[0])?;
    let split = split_slots(bench.slots);
    for (k, slots) in split.iter().enumerate() {
        // Agent k is attached to replica k first (with one server, both to it).
        let mut order: Vec<&Server> = servers.iter().collect();
        order.rotate_left(k % servers.len());
        procs.push(AgentProc::start_on(
            bench,
            &order,
            &token,
            &format!("a{}", k + 1),
            *slots,
        )?);
    }
    let apis = servers
        .iter()
        .map(Server::api)
        .collect::<Result<Vec<_>>>()?;
    apis[0].apply(NOOP_JOB).await?;
    let servers_cpu =
        |servers: &[Server]| -> Result<Duration> { servers.iter().map(Server::cpu).sum() };
    let cpu0 = servers_cpu(&servers)?;
    let agents0 = agents::cpu_of(&procs)?;
    let me0 = cpu_time("/proc/self/stat")?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let parts = apis.len();
    for (k, api) in apis.iter().enumerate() {
        let runs = args.runs / parts + usize::from(k < args.runs % parts);
        let clients = (args.concurrency / parts + usize::from(k < args.concurrency % parts)).max(1);
        let api = api.clone();
        set.spawn(async move {
            if runs == 0 {
                return anyhow::Ok(Submitted {
                    ids: Vec::new(),
                    posts: Vec::new(),
                    collisions: 0,
                });
            }
            flood(&api, "noop", runs, clients).await
        });
    }
    let mut posts = Vec::with_capacity(args.runs);
    let mut collisions = 0;
    while let Some(joined) = set.join_next().await {
        let part = joined.context("a submitting task panicked")??;
        posts.extend(part.posts);
        collisions += part.collisions;
    }
    let submit = t0.elapsed();
    let polls = drain(&apis[0], Duration::from_secs(3600)).await?;
    let wall = t0.elapsed();
    let server_cpu = servers_cpu(&servers)?.saturating_sub(cpu0);
    let agent_cpu = agents::cpu_of(&procs)?.saturating_sub(agents0);
    let client_cpu = cpu_time("/proc/self/stat")?.saturating_sub(me0);
    let rss_after = servers[0].memory()?;
    let succeeded = apis[0].count("succeeded").await?;
    if succeeded != args.runs {
        bail!(
            "{}: {succeeded} of {} runs succeeded ({} failed)",
            setup.label(),
            args.runs,
            apis[0].count("failed").await?
        );
    }
    let mut remarks = Vec::new();
    for p in &mut procs {
        p.stop()?;
        // Agents have the same names in every setup: say which.
        remarks.extend(
            p.remarks()
                .into_iter()
                .map(|r| format!("{}: {r}", setup.tag())),
        );
    }
    drop(procs);
    // The followers first, so that the leader's stop is not a failover.
    for s in servers.iter_mut().rev() {
        s.stop()?;
        remarks.extend(server_remarks(s));
    }
    drop(servers);
    drop(db);
    Ok(Flood {
        wall,
        submit,
        posts,
        collisions,
        server_cpu,
        client_cpu,
        agent_cpu,
        polls,
        rss_after,
        tally: None,
        remarks,
    })
}

// ---------------------------------------------------------------- the case

pub(super) fn replicas_case(
    bench: &Bench,
    args: &Args,
    runtime: &tokio::runtime::Runtime,
) -> Result<String> {
    ensure!(
        args.postgres.is_some(),
        "the replicas case needs a PostgreSQL server: --postgres URL (or GANGER_TEST_POSTGRES_URL; \
         `eval \"$(scripts/postgres)\"` starts one)"
    );
    let mut floods: [Vec<Flood>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..args.repeat {
        let mut line = format!("  run {}:", i + 1);
        for (k, setup) in Setup::ALL.into_iter().enumerate() {
            let f = runtime.block_on(replicas_flood(bench, args, i, setup))?;
            let _ = write!(
                line,
                " {} {:.3}s (submitted in {:.3}s);",
                setup.tag(),
                f.wall.as_secs_f64(),
                f.submit.as_secs_f64()
            );
            floods[k].push(f);
        }
        eprintln!("{}", line.trim_end_matches(';'));
    }
    let medians = floods
        .iter()
        .map(|f| median_flood(f))
        .collect::<Result<Vec<_>>>()?;
    let split = split_slots(bench.slots);
    let n = args.runs as f64;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== replicas: {} single-task `true` runs via POST /api/v1/runs ({} clients) until none queued or running, \
         through 2 remote `ganger agent`s (a1 {} + a2 {} slots, servers --no-local-agent); median of {}",
        args.runs, args.concurrency, split[0], split[1], args.repeat
    );
    let _ = writeln!(
        s,
        "  PG-2: a1 --server r1,r2, a2 --server r2,r1; runs and clients split evenly between r1 (leader) and r2 (follower)"
    );
    let _ = writeln!(
        s,
        "  {:<30} {:>9} {:>9} {:>12} {:>12} {:>12} {:>10}",
        "", "wall s", "runs/s", "submitted s", "servers CPU", "agents CPU", "r1 RSS"
    );
    let _ = writeln!(
        s,
        "  {:<30} {:>9} {:>9} {:>12} {:>12} {:>12} {:>10}",
        "", "", "", "", "ms/run", "ms/run", "MiB"
    );
    for (setup, (wall, f)) in Setup::ALL.iter().zip(&medians) {
        let _ = writeln!(
            s,
            "  {:<30} {:>9.3} {:>9.0} {:>12.3} {:>12.3} {:>12.3} {:>10.1}",
            setup.label(),
            wall.as_secs_f64(),
            n / wall.as_secs_f64(),
            f.submit.as_secs_f64(),
            f.server_cpu.as_secs_f64() * 1e3 / n,
            f.agent_cpu.as_secs_f64() * 1e3 / n,
            f.rss_after.rss_mib()
        );
    }
    let base = medians[0].0.as_secs_f64().max(f64::MIN_POSITIVE);
    for (label, (wall, _)) in [("PG-1/SQLite", &medians[1]), ("PG-2/SQLite", &medians[2])] {
        let ratio = wall.as_secs_f64() / base;
        let _ = writeln!(
            s,
            "  ratio {label} {ratio:.2}x wall time ({:.2}x the runs per second); {:+.3} ms per run",
            1.0 / ratio,
            (wall.as_secs_f64() - base) * 1e3 / n
        );
    }
    s.push_str(&dist_header());
    for (setup, (_, f)) in Setup::ALL.iter().zip(&medians) {
        s.push_str(&Dist::of(&f.posts).row(&format!("POST /runs, {}", setup.tag())));
    }
    s.push_str(&super::collision_line(
        floods.iter().flatten().map(|f| f.collisions).sum(),
    ));
    s.push_str(&remarks_block(
        floods.iter().flatten().flat_map(|f| f.remarks.iter()),
    ));
    Ok(s)
}

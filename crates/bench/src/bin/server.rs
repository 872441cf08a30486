//! `ganger-bench-server`: measures `ganger server` through its HTTP API, in
//! one invocation, and prints the figures next to the DESIGN §7 targets and
//! a baseline measured in the same invocation.
//!
//! ```text
//! cargo build --release -p ganger -p ganger-bench
//! target/release/ganger-bench-server
//!     [--case latency|throughput|rss|agents|agent-latency|idle-agents|replicas|all]
//!     [--slots N] [--samples 300] [--runs 10000] [--queued 100000] [--concurrency 32]
//!     [--repeat 1] [--sim-agents 200] [--window 20] [--postgres URL]
//! ```
//!
//! Each case runs against a fresh server (`ganger server --listen
//! 127.0.0.1:0 --data <fresh dir> --slots N`, or `--no-local-agent` where
//! remote agents run the tasks) that this program starts and kills again on
//! every exit path, with the `ganger agent` processes it starts (a signal to
//! this program stops them all too):
//! - `latency`: on an idle server, one single-task `true` run at a time:
//!   submitted, then polled (every millisecond) until finished. Reported:
//!   the server's own submit→start time (the first attempt's `started_at`
//!   minus the run's `created_at`), the client's POST→seen-finished time and
//!   the POST round trip, as p50/p90/p99/max over `--samples` after
//!   `--warmup` untimed runs. DESIGN target: p50 < 3 ms, p99 < 10 ms.
//! - `throughput`: `--runs` single-task `true` runs submitted by
//!   `--concurrency` concurrent clients over keep-alive connections, timed
//!   until every run has finished (no run queued or running once all were
//!   submitted), against the same number of `bash -eo pipefail -c true` run
//!   by `xargs -P <slots>`; the two interleaved `--repeat` times, the median
//!   reported, with the ratio and the server's CPU time per run.
//! - `rss`: a job with concurrency 1 whose task sleeps; one run starts, then
//!   `--queued` more are submitted concurrently and wait. Reported: the
//!   server's VmRSS and VmHWM (`/proc/<pid>/status`) idle right after start
//!   and with every run queued, and the submission rate. DESIGN target: well
//!   under 200 MiB.
//! - `agents`: the throughput case's `--runs` runs, timed the same way,
//!   through two remote `ganger agent` processes on loopback (server
//!   `--no-local-agent`; agents `a1` and `a2` sharing the `--slots`, `a1`
//!   taking the odd one) against the in-process agent with `--slots`,
//!   interleaved `--repeat` times, medians reported with the ratio
//!   remote/in-process. Afterwards every run is read back to count its
//!   attempts and which agent ran them.
//! - `agent-latency`: the latency case's method with one remote agent (`a1`,
//!   `--slots`) on loopback and a `--no-local-agent` server, next to the
//!   same measured on a server with its in-process agent.
//! - `idle-agents`: `--sim-agents` agents simulated over HTTP by this
//!   program (no processes): each registered, then kept with a claim long
//!   poll (`wait_ms` 30000) outstanding, re-issued when it returns, and a
//!   heartbeat every `heartbeat_ms` (first ones spread over one interval).
//!   Reported: the server's CPU (utime+stime of `/proc/<pid>/stat`) as a
//!   percentage of one core and its VmRSS/VmHWM over a `--window`, against
//!   the same server idle with no agent over an equal window just before.
//! - `replicas`: the agents case's `--runs` runs through two remote agents
//!   (`a1`, `a2` sharing the `--slots`; servers `--no-local-agent`), timed
//!   the same way, in three setups: one server on SQLite (the baseline),
//!   one replica on PostgreSQL (PG-1), and two replicas on one PostgreSQL
//!   database (PG-2: `a1 --server r1,r2`, `a2 --server r2,r1`, the runs
//!   and `--concurrency` clients split evenly between r1 and r2). Each
//!   PostgreSQL setup gets a fresh database on `--postgres URL` [env
//!   GANGER_TEST_POSTGRES_URL; `eval "$(scripts/postgres)"` starts a
//!   server], created and dropped with `psql`. Flooding starts once every
//!   server answers `/readyz` 200 and, with two, r1 said it leads and r2
//!   that it follows. Interleaved `--repeat` times; medians reported with
//!   the ratios PG-1/SQLite and PG-2/SQLite and the runs per second.
//!   `all` runs it only when a PostgreSQL URL is given.
//!
//! All traffic goes to 127.0.0.1. Times are wall clock; the machine is
//! shared, so compare ratios measured in the same invocation rather than
//! absolute figures across invocations. Nothing here asserts a time.

// A binary's root looks for modules next to it: these live in server/.
#[path = "server/agents.rs"]
mod agents;
#[path = "server/children.rs"]
mod children;
#[path = "server/idle.rs"]
mod idle;
#[path = "server/replicas.rs"]
mod replicas;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use ganger_api::{AgentList, RunDetail, RunList, SubmitRequest, SubmitResponse};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};

/// DESIGN §7: submit-to-start latency through the API.
const TARGET_P50_MS: f64 = 3.0;
const TARGET_P99_MS: f64 = 10.0;
/// DESIGN §7: 10,000 independent `true` tasks within this of `xargs -P`.
const TARGET_XARGS_RATIO: f64 = 1.3;
/// DESIGN §7: 100,000 queued runs in well under this much server memory.
const TARGET_RSS_MIB: f64 = 200.0;

/// How long a server may take to print its address and write its token.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server may take after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Shutdown grace given to the servers started here (GANGER_SERVER_GRACE).
const SERVER_GRACE: &str = "2s";
/// Poll period while waiting for a batch of runs to drain.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Poll period while waiting for one run (the latency case).
const RUN_POLL: Duration = Duration::from_millis(1);
/// One run of the latency case is given up after this.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Page size when counting runs (the server's maximum).
const PAGE: usize = 1000;
/// `/proc/<pid>/stat` times are in USER_HZ, which is 100 on Linux.
const USER_HZ: f64 = 100.0;

const NOOP_JOB: &str = "jobs:\n  noop:\n    tasks:\n      t: {run: 'true'}\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Case {
    Latency,
    Throughput,
    Rss,
    Agents,
    AgentLatency,
    IdleAgents,
    Replicas,
    All,
}

#[derive(Parser, Debug)]
#[command(
    name = "ganger-bench-server",
    about = "Benchmark `ganger server` through its HTTP API: submit-to-start latency, \
             throughput against xargs -P, memory with many queued runs, remote agents and replicas"
)]
struct Args {
    /// The ganger binary [default: `ganger` next to this executable].
    #[arg(long)]
    ganger: Option<PathBuf>,
    /// Which case to run.
    #[arg(long, value_enum, default_value_t = Case::All)]
    case: Case,
    /// Slots of the server's in-process agent, and xargs -P; also the total
    /// slots of the remote agents [default: number of cores].
    #[arg(long)]
    slots: Option<usize>,
    /// Timed runs of the latency case.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Untimed runs of the latency case first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Runs of the throughput, agents and replicas cases.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Queued runs of the rss case.
    #[arg(long, default_value_t = 100_000)]
    queued: usize,
    /// Concurrent submitting clients (throughput, agents, replicas and rss cases).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Interleaved timed runs of the throughput, agents and replicas cases; the median is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Simulated agents of the idle-agents case.
    #[arg(long, default_value_t = 200)]
    sim_agents: usize,
    /// Seconds of each measuring window of the idle-agents case.
    #[arg(long, default_value_t = 20)]
    window: u64,
    /// PostgreSQL server of the replicas case, as a URL: each measurement
    /// creates a fresh database on it and drops it afterwards.
    #[arg(long, env = "GANGER_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    /// Keep the data directories and server logs (prints where).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let result = bench(Args::parse());
    // After a signal, the signal thread stops the processes and exits.
    while children::stopping() {
        std::thread::sleep(Duration::from_millis(100));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ganger-bench-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: Args) -> Result<()> {
    ensure!(args.repeat > 0, "--repeat must be at least 1");
    ensure!(args.samples > 0, "--samples must be at least 1");
    ensure!(
        args.runs > 0 && args.queued > 0 && args.concurrency > 0,
        "--runs, --queued and --concurrency must be at least 1"
    );
    let ganger = ganger_path(args.ganger.as_deref())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = args.slots.unwrap_or(cores);
    ensure!(slots > 0, "--slots must be at least 1");
    ensure!(
        args.sim_agents > 0 && args.window > 0,
        "--sim-agents and --window must be at least 1"
    );

    let tmp = tempfile::Builder::new()
        .prefix("ganger-bench-server-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = tmp.path().to_owned();
    // An empty configuration file, so that no ganger.toml of this machine
    // changes what is measured.
    let config = dir.join("ganger.toml");
    fs::write(&config, "").context("writing an empty ganger.toml")?;
    let bench = Bench {
        ganger,
        dir,
        config,
        slots,
    };
    println!(
        "ganger-bench-server: {} | slots {slots} (cores {cores}) | load average {} | {}",
        bench.ganger.display(),
        load_average(),
        bench.dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    children::guard(&runtime, &bench.dir, args.keep)?;

    let mut report = String::new();
    let result = run_cases(&bench, &args, &runtime, &mut report);
    println!("load average at the end: {}", load_average());
    if args.keep {
        // Also after a failure, to see what the servers and agents said.
        let kept = tmp.keep();
        println!("kept {}", kept.display());
        let _ = fs::write(kept.join("report.txt"), report);
    }
    result
}

/// The cases `args` selects, each printed when done and added to `report`.
fn run_cases(
    bench: &Bench,
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    report: &mut String,
) -> Result<()> {
    let all = args.case == Case::All;
    if all || args.case == Case::Latency {
        eprintln!(
            "latency: {} samples (+{} warm-up) ...",
            args.samples, args.warmup
        );
        let r = runtime.block_on(latency_case(bench, args))?;
        report.push_str(&r);
        print!("{r}");
    }
    if all || args.case == Case::Throughput {
        eprintln!(
            "throughput: {} runs, {} clients, {} repeat(s) ...",
            args.runs, args.concurrency, args.repeat
        );
        let r = throughput_case(bench, args, runtime)?;
        report.push_str(&r);
        print!("{r}");
    }
    if all || args.case == Case::Rss {
        eprintln!("rss: {} queued runs ...", args.queued);
        let r = runtime.block_on(rss_case(bench, args))?;
        report.push_str(&r);
        print!("{r}");
    }
    if all || args.case == Case::Agents {
        eprintln!(
            "agents: {} runs through 2 remote agents and through the in-process agent, {} repeat(s) ...",
            args.runs, args.repeat
        );
        let r = agents::agents_case(bench, args, runtime)?;
        report.push_str(&r);
        print!("{r}");
    }
    if all || args.case == Case::AgentLatency {
        eprintln!(
            "agent-latency: {} samples (+{} warm-up) with a remote agent, then in-process ...",
            args.samples, args.warmup
        );
        let r = runtime.block_on(agents::agent_latency_case(bench, args))?;
        report.push_str(&r);
        print!("{r}");
    }
    if all || args.case == Case::IdleAgents {
        eprintln!(
            "idle-agents: {} s idle, then {} simulated agents for {} s ...",
            args.window, args.sim_agents, args.window
        );
        let r = runtime.block_on(idle::idle_agents_case(bench, args))?;
        report.push_str(&r);
        print!("{r}");
    }
    if args.case == Case::Replicas || (all && args.postgres.is_some()) {
        eprintln!(
            "replicas: {} runs through 2 remote agents on SQLite, 1 PostgreSQL replica and 2, {} repeat(s) ...",
            args.runs, args.repeat
        );
        let r = replicas::replicas_case(bench, args, runtime)?;
        report.push_str(&r);
        print!("{r}");
    } else if all {
        eprintln!("replicas: skipped (no --postgres URL nor GANGER_TEST_POSTGRES_URL)");
    }
    Ok(())
}

/// What every case needs.
struct Bench {
    ganger: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    slots: usize,
}

impl Bench {
    /// A server with its in-process agent of [`Bench::slots`].
    fn server(&self, name: &str) -> Result<Server> {
        Server::start(self, name, true, &[])
    }

    /// A server that runs no task itself (`--no-local-agent`).
    fn server_without_agent(&self, name: &str) -> Result<Server> {
        Server::start(self, name, false, &[])
    }

    /// A token of role agent for `server` (`ganger token create --role
    /// agent`, which works on the server's database while it runs: its
    /// PostgreSQL one, else the SQLite one in its data directory).
    fn agent_token(&self, server: &Server) -> Result<String> {
        let mut cmd = Command::new(&self.ganger);
        cmd.args(["token", "create", "--role", "agent", "--name", "bench"]);
        match &server.database {
            Some(url) => cmd.args(["--database", url]),
            None => cmd.arg("--data").arg(&server.data),
        };
        let out = cmd
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .context("running `ganger token create --role agent`")?;
        ensure!(
            out.status.success(),
            "`ganger token create --role agent` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let token = String::from_utf8(out.stdout)
            .context("`ganger token create` printed a token that is not UTF-8")?
            .trim()
            .to_owned();
        ensure!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "`ganger token create --role agent` printed no single token: {token:?}"
        );
        Ok(token)
    }
}

/// The first three fields of /proc/loadavg, to tell a busy machine.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `--ganger`, or `ganger` next to this executable.
fn ganger_path(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        ensure!(p.is_file(), "--ganger {}: no such file", p.display());
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe().context("locating ganger-bench-server itself")?;
    let next = me
        .parent()
        .map(|d| d.join("ganger"))
        .context("ganger-bench-server has no parent directory")?;
    if !next.is_file() {
        bail!(
            "no ganger binary at {}: build it with `cargo build --release -p ganger` \
             (or pass --ganger PATH)",
            next.display()
        );
    }
    Ok(next)
}

// ---------------------------------------------------------------- server

/// A `ganger server` started here; stopped (SIGTERM, then SIGKILL) when
/// dropped, whatever the way out.
struct Server {
    /// The case's name for it: its data directory, log and agents are named after it.
    name: String,
    data: PathBuf,
    /// Its database when not the SQLite one in `data` (GANGER_SERVER_DATABASE).
    database: Option<String>,
    child: Child,
    pid: Pid,
    url: Url,
    token: String,
    log: PathBuf,
    /// A file a task writes its process id to: that task's process group is
    /// killed after the server, in case the server left it behind.
    sleeper_pidfile: Option<PathBuf>,
    stopped: bool,
}

impl Server {
    /// A server with its in-process agent of [`Bench::slots`] or none, and
    /// `env` added to its environment (e.g. GANGER_SERVER_DATABASE).
    fn start(bench: &Bench, name: &str, local_agent: bool, env: &[(&str, &str)]) -> Result<Server> {
        let data = bench.dir.join(format!("{name}-data"));
        let log = bench.dir.join(format!("{name}-server.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let mut cmd = Command::new(&bench.ganger);
        cmd.arg("server")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(&data);
        if local_agent {
            cmd.arg("--slots").arg(bench.slots.to_string());
        } else {
            cmd.arg("--no-local-agent");
        }
        let child = cmd
            .arg("--config")
            .arg(&bench.config)
            .env("GANGER_SERVER_GRACE", SERVER_GRACE)
            .envs(env.iter().copied())
            .current_dir(&bench.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} server", bench.ganger.display()))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("a process id out of range")?);
        children::track(pid, children::Kind::Server);
        let mut server = Server {
            name: name.to_owned(),
            data: data.clone(),
            database: env
                .iter()
                .find(|(k, _)| *k == "GANGER_SERVER_DATABASE")
                .map(|(_, v)| (*v).to_owned()),
            child,
            pid,
            url: Url::parse("http://127.0.0.1/").context("parsing a constant URL")?,
            token: String::new(),
            log,
            sleeper_pidfile: None,
            stopped: false,
        };

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = fs::read_to_string(&server.log).unwrap_or_default();
            if let Some(url) = listening_url(&text) {
                server.url = Url::parse(&url)
                    .with_context(|| format!("the server printed a bad address: {url}"))?;
                break;
            }
            server.check_alive("before listening")?;
            ensure!(
                Instant::now() < deadline,
                "the server printed no `listening on http://…` line in {}s; its output:\n{}",
                START_TIMEOUT.as_secs(),
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        ensure!(
            server.url.host_str() == Some("127.0.0.1"),
            "the server listens on {}, not 127.0.0.1",
            server.url
        );
        let token_file = data.join("admin.token");
        loop {
            if let Ok(t) = fs::read_to_string(&token_file) {
                let t = t.trim();
                if !t.is_empty() {
                    server.token = t.to_owned();
                    break;
                }
            }
            server.check_alive("before writing its admin token")?;
            ensure!(
                Instant::now() < deadline,
                "the server wrote no admin token to {}",
                token_file.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(server)
    }

    fn check_alive(&mut self, when: &str) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting for the server")? {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "the server exited ({status}) {when}; its output:\n{}",
                tail(&text)
            );
        }
        Ok(())
    }

    fn api(&self) -> Result<Api> {
        Api::new(&self.url, &self.token)
    }

    /// VmRSS and VmHWM now.
    fn memory(&self) -> Result<Memory> {
        memory_of(self.pid)
    }

    /// CPU time used so far by the server itself (all threads).
    fn cpu(&self) -> Result<Duration> {
        cpu_time(&format!("/proc/{}/stat", self.pid))
    }

    /// The server's output so far.
    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, SIGKILL after [`STOP_TIMEOUT`]; how long it took to exit.
    fn stop(&mut self) -> Result<Duration> {
        let r = self.stop_inner();
        children::untrack(self.pid);
        r
    }

    fn stop_inner(&mut self) -> Result<Duration> {
        let start = Instant::now();
        if self.stopped {
            return Ok(Duration::ZERO);
        }
        self.stopped = true;
        if children::stopping() {
            bail!("interrupted: the server is stopped by the signal thread");
        }
        let mut killed = false;
        if let Some(status) = self.child.try_wait().context("waiting for the server")? {
            self.kill_sleeper();
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "the server had exited by itself ({status}) before it was stopped; \
                 the end of its output ({}):\n{}",
                self.log.display(),
                tail(&text)
            );
        }
        let _ = kill(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self
            .child
            .try_wait()
            .context("waiting for the server")?
            .is_none()
        {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = start.elapsed();
        self.kill_sleeper();
        ensure!(
            !killed,
            "the server did not exit within {}s of SIGTERM; it was killed",
            STOP_TIMEOUT.as_secs()
        );
        Ok(took)
    }

    fn kill_sleeper(&mut self) {
        let Some(file) = self.sleeper_pidfile.take() else {
            return;
        };
        let Some(pid) = fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            return;
        };
        // Only if it is still our sleeper, not a recycled process id.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("sleep") {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop()
            && !children::stopping()
        {
            eprintln!("ganger-bench-server: stopping the server: {e:#}");
        }
    }
}

/// The URL of `ganger server listening on http://127.0.0.1:PORT`.
fn listening_url(log: &str) -> Option<String> {
    let at = log.find("listening on http://")?;
    let rest = &log[at + "listening on ".len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    // A line still being written has no newline yet: wait for it.
    if end == rest.len() {
        return None;
    }
    Some(rest[..end].trim_end_matches(['.', ',', ';']).to_owned())
}

/// The last lines of a server's output, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// VmRSS and VmHWM of a process now.
fn memory_of(pid: Pid) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in {path}"))?;
        let kib = line.trim().trim_end_matches("kB").trim();
        kib.parse::<u64>()
            .with_context(|| format!("{name} in {path} is not a number of kB: {line:?}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// utime + stime of a `/proc/<pid>/stat` file.
fn cpu_time(path: &str) -> Result<Duration> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may contain spaces.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .with_context(|| format!("{path} has no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file; `after` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .with_context(|| format!("{path} has no field {i}"))?
            .parse::<u64>()
            .with_context(|| format!("field {i} of {path} is not a number"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(total as f64 / USER_HZ))
}

#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn rss_mib(self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
    fn hwm_mib(self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

// ---------------------------------------------------------------- client

/// A client of one server over keep-alive connections. Cheap to clone.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Url,
}

impl Api {
    fn new(base: &Url, token: &str) -> Result<Api> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the admin token is not a valid header value")?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: base.clone(),
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("joining {path} to {}", self.base))
    }

    async fn apply(&self, yaml: &str) -> Result<()> {
        let url = self.url("/api/v1/jobs")?;
        let resp = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .context("POST /api/v1/jobs")?;
        checked(resp, "POST /api/v1/jobs").await?;
        Ok(())
    }

    async fn submit(&self, job: &str) -> Result<SubmitResponse> {
        let url = self.url("/api/v1/runs")?;
        let body = SubmitRequest {
            job: job.to_owned(),
            ..SubmitRequest::default()
        };
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .context("POST /api/v1/runs")?;
        let resp = checked(resp, "POST /api/v1/runs").await?;
        ensure!(
            resp.status() == StatusCode::CREATED,
            "POST /api/v1/runs answered {}, not 201",
            resp.status()
        );
        resp.json::<SubmitResponse>()
            .await
            .context("reading the answer of POST /api/v1/runs")
    }

    async fn run(&self, id: &str) -> Result<RunDetail> {
        let url = self.url(&format!("/api/v1/runs/{id}"))?;
        let what = format!("GET /api/v1/runs/{id}");
        let resp = self.http.get(url).send().await.context(what.clone())?;
        checked(resp, &what)
            .await?
            .json::<RunDetail>()
            .await
            .with_context(|| format!("reading the answer of {what}"))
    }

    async fn runs(&self, status: &str, limit: usize, cursor: Option<&str>) -> Result<RunList> {
        let mut url = self.url("/api/v1/runs")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("status", status)
                .append_pair("limit", &limit.to_string());
            if let Some(c) = cursor {
                q.append_pair("cursor", c);
            }
        }
        let what = format!("GET /api/v1/runs?status={status}");
        let resp = self.http.get(url).send().await.context(what.clone())?;
        checked(resp, &what)
            .await?
            .json::<RunList>()
            .await
            .with_context(|| format!("reading the answer of {what}"))
    }

    /// True when no run is queued or running.
    async fn drained(&self) -> Result<bool> {
        Ok(self.runs("queued", 1, None).await?.runs.is_empty()
            && self.runs("running", 1, None).await?.runs.is_empty())
    }

    /// Every run in `status`, counted page by page.
    async fn count(&self, status: &str) -> Result<usize> {
        let mut n = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.runs(status, PAGE, cursor.as_deref()).await?;
            n += page.runs.len();
            match page.next_cursor {
                Some(c) if !page.runs.is_empty() => cursor = Some(c),
                _ => return Ok(n),
            }
        }
    }
}

impl Api {
    /// `GET /api/v1/agents`.
    async fn agents(&self) -> Result<AgentList> {
        let url = self.url("/api/v1/agents")?;
        let what = "GET /api/v1/agents";
        let resp = self.http.get(url).send().await.context(what)?;
        checked(resp, what)
            .await?
            .json::<AgentList>()
            .await
            .with_context(|| format!("reading the answer of {what}"))
    }

    /// `body` POSTed as JSON to `path`; the JSON answer.
    async fn post<B, R>(&self, path: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let url = self.url(path)?;
        let what = format!("POST {path}");
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .with_context(|| what.clone())?;
        checked(resp, &what)
            .await?
            .json::<R>()
            .await
            .with_context(|| format!("reading the answer of {what}"))
    }
}

/// `resp` if its status is a success, else an error with its body.
async fn checked(resp: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(2000).collect();
    bail!("{what} answered {status}: {body}")
}

fn is_finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// What [`flood`] saw.
struct Submitted {
    /// The runs created.
    ids: Vec<String>,
    /// Each successful POST's round trip.
    posts: Vec<Duration>,
    /// Submissions refused because the server generated a run id it had
    /// already given out (a server bug), each submitted again.
    collisions: usize,
}

/// The server's answer when it generates an id that already exists.
const ID_COLLISION: &str = "already exists";
/// A submission is given up after this many id collisions in a row.
const MAX_COLLISIONS: usize = 5;

/// `n` submissions of `job` by `clients` concurrent tasks.
async fn flood(api: &Api, job: &str, n: usize, clients: usize) -> Result<Submitted> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients.min(n) {
        let api = api.clone();
        let next = Arc::clone(&next);
        let job = job.to_owned();
        set.spawn(async move {
            let mut took = Vec::new();
            let mut ids = Vec::new();
            let mut collisions = 0;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let mut tries = 0;
                loop {
                    let t = Instant::now();
                    match api.submit(&job).await {
                        Ok(r) => {
                            took.push(t.elapsed());
                            ids.push(r.id);
                            break;
                        }
                        Err(e)
                            if format!("{e:#}").contains(ID_COLLISION)
                                && tries < MAX_COLLISIONS =>
                        {
                            tries += 1;
                            collisions += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            anyhow::Ok(Submitted {
                ids,
                posts: took,
                collisions,
            })
        });
    }
    let mut all = Submitted {
        ids: Vec::with_capacity(n),
        posts: Vec::with_capacity(n),
        collisions: 0,
    };
    while let Some(joined) = set.join_next().await {
        let part = joined.context("a submitting task panicked")??;
        all.ids.extend(part.ids);
        all.posts.extend(part.posts);
        all.collisions += part.collisions;
    }
    if all.collisions > 0 {
        eprintln!(
            "  warning: {} submissions answered 500 `run id … already exists` (the server \
             gave out a run id twice) and were submitted again",
            all.collisions
        );
    }
    Ok(all)
}

/// Polls until no run is queued or running; the number of polls.
async fn drain(api: &Api, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut polls = 0;
    loop {
        polls += 1;
        if api.drained().await? {
            return Ok(polls);
        }
        ensure!(
            Instant::now() < deadline,
            "runs were still queued or running after {}s",
            timeout.as_secs()
        );
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

// ---------------------------------------------------------------- statistics

/// Milliseconds, sorted.
struct Dist(Vec<f64>);

impl Dist {
    fn new(mut ms: Vec<f64>) -> Dist {
        ms.sort_by(f64::total_cmp);
        Dist(ms)
    }

    fn of(durations: &[Duration]) -> Dist {
        Dist::new(durations.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }

    fn mean(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }

    fn row(&self, label: &str) -> String {
        format!(
            "  {label:<40} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
            self.pct(50.0),
            self.pct(90.0),
            self.pct(99.0),
            self.max(),
            self.mean()
        )
    }
}

fn dist_header() -> String {
    format!(
        "  {:<40} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "ms", "p50", "p90", "p99", "max", "mean"
    )
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let n = samples.len();
    if n == 0 {
        Duration::ZERO
    } else if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
}

fn collision_line(collisions: usize) -> String {
    if collisions == 0 {
        String::new()
    } else {
        format!(
            "  SERVER BUG: {collisions} submission(s) answered 500 `a run with id … already exists` \
             (a run id given out twice) and were submitted again\n"
        )
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "MISSES" }
}

// ---------------------------------------------------------------- cases

async fn latency_case(bench: &Bench, args: &Args) -> Result<String> {
    let mut server = bench.server("latency")?;
    let api = server.api()?;
    api.apply(NOOP_JOB).await?;
    let l = measure_latency(&server, &api, args).await?;
    server.stop()?;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== latency: {} sequential single-task `true` runs on an idle server (after {} warm-up), polled every {} ms",
        args.samples,
        args.warmup,
        RUN_POLL.as_millis()
    );
    s.push_str(&l.rows());
    s.push_str(&l.verdict());
    Ok(s)
}

/// What [`measure_latency`] saw.
struct Latency {
    /// Server: the run's created_at → its first attempt's started_at.
    to_start: Dist,
    /// Server: created_at → the run's finished_at.
    to_finish: Dist,
    /// Client: POST sent → a GET shows the run finished.
    seen: Dist,
    /// Client: the POST's round trip.
    posts: Dist,
    /// Server CPU over every run, warm-up included.
    cpu: Duration,
    runs: usize,
    gets: usize,
    wall: Duration,
    mem: Memory,
    /// Whether every created_at came with whole milliseconds.
    created_ms_only: bool,
    /// Which agent ran the timed runs' attempts, and how many.
    agents: BTreeMap<String, usize>,
}

/// The latency case's measurement on a server whose `noop` job is applied
/// and whose agents are up: `--warmup` then `--samples` single-task runs,
/// one at a time, each polled every [`RUN_POLL`] until finished.
async fn measure_latency(server: &Server, api: &Api, args: &Args) -> Result<Latency> {
    let mut to_start = Vec::new();
    let mut to_finish = Vec::new();
    let mut seen = Vec::new();
    let mut posts = Vec::new();
    let mut agents = BTreeMap::new();
    let mut gets = 0usize;
    let mut created_ms_only = true;
    let cpu0 = server.cpu()?;
    let wall0 = Instant::now();
    for i in 0..args.warmup + args.samples {
        let t0 = Instant::now();
        let id = api.submit("noop").await?.id;
        let post = t0.elapsed();
        let detail = loop {
            let d = api.run(&id).await?;
            gets += 1;
            if is_finished(&d.summary.status) {
                break d;
            }
            ensure!(
                t0.elapsed() < RUN_TIMEOUT,
                "run {id} did not finish within {}s (status {})",
                RUN_TIMEOUT.as_secs(),
                d.summary.status
            );
            tokio::time::sleep(RUN_POLL).await;
        };
        let client = t0.elapsed();
        ensure!(
            detail.summary.status == "succeeded",
            "run {id} ended {}: {:?}",
            detail.summary.status,
            detail.summary.reason
        );
        let attempt = detail
            .tasks
            .first()
            .and_then(|t| t.attempts.first())
            .with_context(|| format!("run {id} has no attempt"))?;
        let started = attempt
            .started_at
            .with_context(|| format!("run {id} has no started attempt"))?;
        let created = detail.summary.created_at;
        created_ms_only &= created.subsec_nanosecond() % 1_000_000 == 0;
        let finished = detail
            .summary
            .finished_at
            .with_context(|| format!("finished run {id} has no finished_at"))?;
        if i >= args.warmup {
            to_start.push(started.duration_since(created).as_secs_f64() * 1e3);
            to_finish.push(finished.duration_since(created).as_secs_f64() * 1e3);
            seen.push(client);
            posts.push(post);
            let agent = attempt.agent.clone().unwrap_or_else(|| "(none)".to_owned());
            *agents.entry(agent).or_insert(0) += 1;
        }
    }
    Ok(Latency {
        to_start: Dist::new(to_start),
        to_finish: Dist::new(to_finish),
        seen: Dist::of(&seen),
        posts: Dist::of(&posts),
        cpu: server.cpu()?.saturating_sub(cpu0),
        runs: args.warmup + args.samples,
        gets,
        wall: wall0.elapsed(),
        mem: server.memory()?,
        created_ms_only,
        agents,
    })
}

impl Latency {
    /// The distributions, the server's CPU, and a note on precision.
    fn rows(&self) -> String {
        let mut s = dist_header();
        s.push_str(&self.to_start.row("server submit->start (created->attempt)"));
        s.push_str(&self.to_finish.row("server submit->finished"));
        s.push_str(&self.posts.row("client POST /runs round trip"));
        s.push_str(&self.seen.row("client POST sent->seen finished"));
        let _ = writeln!(
            s,
            "  server CPU {:.2} ms per run ({} runs, {} GETs, {:.1}s wall); RSS {:.1} MiB",
            self.cpu.as_secs_f64() * 1e3 / self.runs as f64,
            self.runs,
            self.gets,
            self.wall.as_secs_f64(),
            self.mem.rss_mib()
        );
        if self.created_ms_only {
            let _ = writeln!(
                s,
                "  note: the server gives created_at to the millisecond only, so the server-side \
                 figures read up to 1 ms high (0.5 ms on average) when the other end is finer"
            );
        }
        s
    }

    /// The DESIGN targets for submit→start.
    fn verdict(&self) -> String {
        let p50 = self.to_start.pct(50.0);
        let p99 = self.to_start.pct(99.0);
        format!(
            "  DESIGN target submit->start p50 < {TARGET_P50_MS} ms: {} ({p50:.3}); p99 < {TARGET_P99_MS} ms: {} ({p99:.3})\n",
            verdict(p50 < TARGET_P50_MS),
            verdict(p99 < TARGET_P99_MS),
        )
    }
}

/// One timed ganger run of the throughput and agents cases.
struct Flood {
    wall: Duration,
    submit: Duration,
    posts: Vec<Duration>,
    collisions: usize,
    server_cpu: Duration,
    client_cpu: Duration,
    /// CPU of the remote agents' own threads (not their tasks'); zero
    /// with the in-process agent, whose work is in `server_cpu`.
    agent_cpu: Duration,
    polls: usize,
    rss_after: Memory,
    /// Every run read back, when asked for.
    tally: Option<agents::Tally>,
    /// Lines of the server's and agents' output that are not the usual
    /// start-up lines.
    remarks: Vec<String>,
}

/// `--runs` single-task runs of `true`, timed until none is queued or
/// running, on a fresh server: through its in-process agent when `remote`
/// is empty, else with `--no-local-agent` through one `ganger agent` per
/// entry of `remote` (its slots), named a1, a2, …. With `tally`, every run
/// is read back afterwards (untimed) to count attempts by agent.
async fn ganger_flood(
    bench: &Bench,
    args: &Args,
    name: &str,
    remote: &[usize],
    tally: bool,
) -> Result<Flood> {
    let mut server = if remote.is_empty() {
        bench.server(name)?
    } else {
        bench.server_without_agent(name)?
    };
    // Declared after the server, so dropped (stopped) before it.
    let mut procs = Vec::new();
    if !remote.is_empty() {
        let token = bench.agent_token(&server)?;
        for (i, slots) in remote.iter().enumerate() {
            procs.push(agents::AgentProc::start(
                bench,
                &server,
                &token,
                &format!("a{}", i + 1),
                *slots,
            )?);
        }
    }
    let api = server.api()?;
    api.apply(NOOP_JOB).await?;
    let cpu0 = server.cpu()?;
    let agents0 = agents::cpu_of(&procs)?;
    let me0 = cpu_time("/proc/self/stat")?;
    let t0 = Instant::now();
    let Submitted {
        ids,
        posts,
        collisions,
    } = flood(&api, "noop", args.runs, args.concurrency).await?;
    let submit = t0.elapsed();
    let polls = drain(&api, Duration::from_secs(3600)).await?;
    let wall = t0.elapsed();
    let server_cpu = server.cpu()?.saturating_sub(cpu0);
    let agent_cpu = agents::cpu_of(&procs)?.saturating_sub(agents0);
    let client_cpu = cpu_time("/proc/self/stat")?.saturating_sub(me0);
    let rss_after = server.memory()?;
    let succeeded = api.count("succeeded").await?;
    if succeeded != args.runs {
        let failed = api.runs("failed", 5, None).await?;
        let some: Vec<String> = failed
            .runs
            .iter()
            .map(|r| format!("{}: {}", r.id, r.reason.as_deref().unwrap_or("no reason")))
            .collect();
        bail!(
            "{succeeded} of {} runs succeeded (failed: {}; the last ones: {})",
            args.runs,
            api.count("failed").await?,
            some.join("; ")
        );
    }
    let tally = if tally {
        Some(agents::tally_runs(&api, &ids, args.concurrency).await?)
    } else {
        None
    };
    let mut remarks = Vec::new();
    for p in &mut procs {
        p.stop()?;
        remarks.extend(p.remarks());
    }
    server.stop()?;
    remarks.extend(server_remarks(&server));
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
        tally,
        remarks,
    })
}

/// Lines of a server's output other than the usual ones at start and stop,
/// each prefixed with the server's name.
fn server_remarks(server: &Server) -> Vec<String> {
    server
        .output()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !USUAL_SERVER_LINES.iter().any(|u| l.contains(u)))
        .map(|l| format!("server {}: {l}", server.name))
        .collect()
}

/// What a server started here prints when all goes well.
const USUAL_SERVER_LINES: &[&str] = &[
    "ganger server: configuration from ",
    "admin token written to ",
    "ganger server listening on http://",
    "ganger server: SIGTERM: shutting down",
    "ganger server: stopped",
    // Replicas on PostgreSQL, taking their roles.
    "ganger server: this replica leads",
    "ganger server: following the leader at ",
    "ganger server: answering 503 for now: the server is starting",
    "ganger server: answering 503 for now: no replica leads yet",
];

fn xargs_command(input: &Path, slots: usize) -> Result<Command> {
    let mut c = Command::new("xargs");
    c.args(["-0", "-n", "1", "-P", &slots.to_string()])
        .args(["bash", "-eo", "pipefail", "-c"])
        .stdin(fs::File::open(input).with_context(|| format!("opening {}", input.display()))?)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(c)
}

fn time_xargs(input: &Path, slots: usize) -> Result<Duration> {
    let mut cmd = xargs_command(input, slots)?;
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting xargs")?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("a process id out of range")?);
    children::track(pid, children::Kind::Other);
    let status = child.wait();
    children::untrack(pid);
    let status = status.context("waiting for xargs")?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "xargs failed ({status}): {cmd:?}");
    Ok(elapsed)
}

fn throughput_case(
    bench: &Bench,
    args: &Args,
    runtime: &tokio::runtime::Runtime,
) -> Result<String> {
    let input = bench.dir.join("throughput.xargs");
    fs::write(&input, "true\0".repeat(args.runs)).context("writing the xargs input")?;
    let mut floods = Vec::new();
    let mut xargs = Vec::new();
    for i in 0..args.repeat {
        let f = runtime.block_on(ganger_flood(
            bench,
            args,
            &format!("throughput-{i}"),
            &[],
            false,
        ))?;
        let x = time_xargs(&input, bench.slots)?;
        eprintln!(
            "  run {}: ganger {:.3}s (submitted in {:.3}s), xargs {:.3}s",
            i + 1,
            f.wall.as_secs_f64(),
            f.submit.as_secs_f64(),
            x.as_secs_f64()
        );
        floods.push(f);
        xargs.push(x);
    }
    let mut walls: Vec<Duration> = floods.iter().map(|f| f.wall).collect();
    let g = median(&mut walls);
    let x = median(&mut xargs);
    // The figures of the run whose wall time is the median (or nearest).
    let f = floods
        .iter()
        .min_by_key(|f| f.wall.abs_diff(g))
        .context("no throughput run")?;
    let n = args.runs as f64;
    let ratio = g.as_secs_f64() / x.as_secs_f64().max(f64::MIN_POSITIVE);
    let posts = Dist::of(&f.posts);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== throughput: {} single-task `true` runs via POST /api/v1/runs ({} clients, keep-alive) until none queued or running, vs xargs -P {} (median of {})",
        args.runs, args.concurrency, bench.slots, args.repeat
    );
    let _ = writeln!(
        s,
        "  ganger server  {:>8.3} s  {:>9.0} runs/s  (all submitted after {:.3} s = {:.0} submits/s; {} drain polls)",
        g.as_secs_f64(),
        n / g.as_secs_f64(),
        f.submit.as_secs_f64(),
        n / f.submit.as_secs_f64(),
        f.polls
    );
    let _ = writeln!(
        s,
        "  xargs -P {:<4}  {:>8.3} s  {:>9.0} runs/s",
        bench.slots,
        x.as_secs_f64(),
        n / x.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "  ratio ganger/xargs {ratio:.2}x; overhead {:.3} ms per run; DESIGN target <= {TARGET_XARGS_RATIO}x: {}",
        (g.as_secs_f64() - x.as_secs_f64()) * 1e3 / n,
        verdict(ratio <= TARGET_XARGS_RATIO)
    );
    let _ = writeln!(
        s,
        "  server CPU {:.3} s = {:.3} ms per run (its own threads, not the tasks); this client's CPU {:.3} s = {:.3} ms per run",
        f.server_cpu.as_secs_f64(),
        f.server_cpu.as_secs_f64() * 1e3 / n,
        f.client_cpu.as_secs_f64(),
        f.client_cpu.as_secs_f64() * 1e3 / n
    );
    s.push_str(&dist_header());
    s.push_str(&posts.row("POST /runs round trip under load"));
    s.push_str(&collision_line(f.collisions));
    let _ = writeln!(
        s,
        "  server memory with {} finished runs: RSS {:.1} MiB, HWM {:.1} MiB",
        args.runs,
        f.rss_after.rss_mib(),
        f.rss_after.hwm_mib()
    );
    Ok(s)
}

async fn rss_case(bench: &Bench, args: &Args) -> Result<String> {
    let mut server = bench.server("rss")?;
    let idle = server.memory()?;
    let api = server.api()?;
    let pidfile = bench.dir.join("sleeper.pid");
    server.sleeper_pidfile = Some(pidfile.clone());
    let pidfile = pidfile
        .to_str()
        .context("the temporary directory is not UTF-8")?;
    ensure!(
        !pidfile.contains(['\'', '"', '{', '}', '\\']),
        "the temporary directory's name needs quoting: {pidfile}"
    );
    let job = format!(
        "jobs:\n  q:\n    concurrency: 1\n    tasks:\n      t: {{run: 'echo $$ > {pidfile}; exec sleep 600'}}\n"
    );
    api.apply(&job).await?;
    let after_apply = server.memory()?;

    // One run that starts and holds the only place.
    let first = api.submit("q").await?.id;
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let d = api.run(&first).await?;
        if d.summary.status == "running" {
            break;
        }
        ensure!(
            !is_finished(&d.summary.status),
            "the sleeping run {first} ended {}: {:?}",
            d.summary.status,
            d.summary.reason
        );
        ensure!(Instant::now() < deadline, "run {first} did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    let Submitted {
        posts, collisions, ..
    } = flood(&api, "q", args.queued, args.concurrency).await?;
    let submit = t0.elapsed();
    let cpu = server.cpu()?.saturating_sub(cpu0);
    let full = server.memory()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = server.memory()?;
    let t1 = Instant::now();
    let queued = api.count("queued").await?;
    let listing = t1.elapsed();
    let running = api.count("running").await?;
    let after_listing = server.memory()?;
    let stop = server.stop()?;
    ensure!(
        queued == args.queued && running == 1,
        "expected {} queued runs and 1 running, found {queued} and {running}",
        args.queued
    );

    let posts = Dist::of(&posts);
    let n = args.queued as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== rss: job with concurrency 1, one run sleeping, {} more submitted by {} clients and left queued",
        args.queued, args.concurrency
    );
    let _ = writeln!(
        s,
        "  submitted in {:.3} s = {:.0} submits/s; server CPU {:.3} ms per submit",
        submit.as_secs_f64(),
        n / submit.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / n
    );
    s.push_str(&dist_header());
    s.push_str(&posts.row("POST /runs round trip (queueing)"));
    s.push_str(&collision_line(collisions));
    let row = |label: &str, m: Memory| {
        format!(
            "  {label:<44} VmRSS {:>8.1} MiB  VmHWM {:>8.1} MiB\n",
            m.rss_mib(),
            m.hwm_mib()
        )
    };
    s.push_str(&row("idle, right after start", idle));
    s.push_str(&row("after applying the job", after_apply));
    s.push_str(&row(&format!("{} queued, right after", args.queued), full));
    s.push_str(&row(&format!("{} queued, 1 s later", args.queued), settled));
    s.push_str(&row(
        &format!("after listing them ({PAGE} per page)"),
        after_listing,
    ));
    let grown = settled.rss_mib() - idle.rss_mib();
    let _ = writeln!(
        s,
        "  growth {:.1} MiB = {:.0} bytes per queued run; listing {queued} queued runs took {:.3} s; stopping the server took {:.3} s",
        grown,
        grown * 1024.0 * 1024.0 / n,
        listing.as_secs_f64(),
        stop.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "  DESIGN target well under {TARGET_RSS_MIB} MiB with 100,000 queued: {} (HWM {:.1} MiB{})",
        verdict(settled.hwm_mib() < TARGET_RSS_MIB),
        settled.hwm_mib(),
        if args.queued == 100_000 {
            String::new()
        } else {
            format!("; measured with {} queued, not 100,000", args.queued)
        }
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_url() {
        let log = "ganger server listening on http://127.0.0.1:40123\nmore\n";
        assert_eq!(
            listening_url(log).as_deref(),
            Some("http://127.0.0.1:40123")
        );
        // A line not yet complete is not read.
        assert_eq!(listening_url("listening on http://127.0.0.1:4"), None);
        assert_eq!(listening_url("starting\n"), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let d = Dist::new((1..=100).rev().map(f64::from).collect());
        assert_eq!(d.pct(50.0), 50.0);
        assert_eq!(d.pct(99.0), 99.0);
        assert_eq!(d.pct(100.0), 100.0);
        assert_eq!(d.pct(0.0), 1.0);
        assert_eq!(d.max(), 100.0);
        let one = Dist::new(vec![7.0]);
        assert_eq!(one.pct(90.0), 7.0);
    }

    #[test]
    fn reads_cpu_time_of_a_stat_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stat");
        // pid (comm with spaces) state ppid ... utime=250 stime=50
        let fields: Vec<String> = (3..=20)
            .map(|i| match i {
                14 => "250".to_owned(),
                15 => "50".to_owned(),
                _ => "0".to_owned(),
            })
            .collect();
        fs::write(&path, format!("42 (a b) {}\n", fields.join(" "))).expect("write");
        let t = cpu_time(path.to_str().expect("utf-8")).expect("parse");
        assert_eq!(t, Duration::from_secs(3));
    }
}

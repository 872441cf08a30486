//! The `idle-agents` case: many agents, simulated over HTTP by this program
//! (no processes), long-polling a server that has nothing for them; the
//! server's CPU and memory against the same server idle with no agent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ganger_api::agent::{
    Claim, Claimed, Deregister, Heartbeat, HeartbeatAck, Register, Registered,
};
use nix::unistd::Pid;
use serde::de::IgnoredAny;
use tokio::task::JoinSet;

use super::{Api, Args, Bench, Dist, Memory, Server, cpu_time, dist_header, server_remarks};

/// `wait_ms` of every simulated claim: the protocol's longest.
const CLAIM_WAIT_MS: u64 = 30_000;
/// Time given to the server after its start, and to the claims after they
/// are sent, before a window starts.
const SETTLE: Duration = Duration::from_secs(1);
/// After a refused or failed call, a simulated agent waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long outstanding claims are given to answer after their agents
/// deregister, or after the server is told to stop.
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// What the simulated agents saw, all of them together.
#[derive(Default)]
struct Stats {
    claims_sent: AtomicUsize,
    /// Claims answered 200.
    claims_answered: AtomicUsize,
    /// Answered claims that carried tasks or kill orders (none expected).
    claims_with_work: AtomicUsize,
    claims_failed: AtomicUsize,
    heartbeats: AtomicUsize,
    heartbeats_failed: AtomicUsize,
    /// Heartbeat answers naming stale attempts or kill orders (none expected).
    heartbeats_with_orders: AtomicUsize,
    /// How long each answered claim was held.
    claim_held: Mutex<Vec<Duration>>,
    heartbeat_rtt: Mutex<Vec<Duration>>,
    /// The first few errors, for the report.
    errors: Mutex<Vec<String>>,
}

/// A moment's counts, to tell what happened within a window.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    claims_sent: usize,
    claims_answered: usize,
    claims_with_work: usize,
    claims_failed: usize,
    heartbeats: usize,
    heartbeats_failed: usize,
    heartbeats_with_orders: usize,
}

impl Stats {
    fn counts(&self) -> Counts {
        let get = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        Counts {
            claims_sent: get(&self.claims_sent),
            claims_answered: get(&self.claims_answered),
            claims_with_work: get(&self.claims_with_work),
            claims_failed: get(&self.claims_failed),
            heartbeats: get(&self.heartbeats),
            heartbeats_failed: get(&self.heartbeats_failed),
            heartbeats_with_orders: get(&self.heartbeats_with_orders),
        }
    }

    fn error(&self, e: &anyhow::Error) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < 5
        {
            errors.push(format!("{e:#}"));
        }
    }
}

impl Counts {
    /// Claims sent and not yet returned.
    fn outstanding(self) -> usize {
        self.claims_sent - self.claims_answered - self.claims_failed
    }
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            claims_sent: self.claims_sent - o.claims_sent,
            claims_answered: self.claims_answered - o.claims_answered,
            claims_with_work: self.claims_with_work - o.claims_with_work,
            claims_failed: self.claims_failed - o.claims_failed,
            heartbeats: self.heartbeats - o.heartbeats,
            heartbeats_failed: self.heartbeats_failed - o.heartbeats_failed,
            heartbeats_with_orders: self.heartbeats_with_orders - o.heartbeats_with_orders,
        }
    }
}

/// How a simulated agent's last claim ended, once it was told to stop.
enum LastClaim {
    Answered,
    Failed(String),
}

/// One simulated agent's claim loop: a claim always outstanding, sent
/// again as soon as it returns, until `stop`; the last one's outcome.
async fn claims(api: Api, agent_id: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> LastClaim {
    let body = Claim {
        agent_id,
        max: 1,
        wait_ms: Some(CLAIM_WAIT_MS),
        ahead: false,
    };
    loop {
        stats.claims_sent.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let last = match api.post::<_, Claimed>("/api/v1/agent/claim", &body).await {
            Ok(c) => {
                stats.claims_answered.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut held) = stats.claim_held.lock() {
                    held.push(t.elapsed());
                }
                if !c.tasks.is_empty() || !c.kill.is_empty() {
                    stats.claims_with_work.fetch_add(1, Ordering::Relaxed);
                }
                LastClaim::Answered
            }
            Err(e) => {
                stats.claims_failed.fetch_add(1, Ordering::Relaxed);
                stats.error(&e);
                if !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                LastClaim::Failed(format!("{e:#}"))
            }
        };
        if stop.load(Ordering::Relaxed) {
            return last;
        }
    }
}

/// One simulated agent's heartbeats: every `period`, the first after
/// `offset`, until `stop`.
async fn heartbeats(
    api: Api,
    agent_id: String,
    period: Duration,
    offset: Duration,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let body = Heartbeat {
        agent_id,
        running: Vec::new(),
        draining: false,
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let t = Instant::now();
        match api
            .post::<_, HeartbeatAck>("/api/v1/agent/heartbeat", &body)
            .await
        {
            Ok(ack) => {
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut rtt) = stats.heartbeat_rtt.lock() {
                    rtt.push(t.elapsed());
                }
                if !ack.stale.is_empty() || !ack.kill.is_empty() {
                    stats.heartbeats_with_orders.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                stats.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
                stats.error(&e);
            }
        }
    }
}

/// The server over one window.
struct Window {
    wall: Duration,
    cpu: Duration,
    /// CPU as a percentage of one core, second by second.
    per_second: Vec<f64>,
    /// The largest VmRSS sampled (once a second).
    rss_max_kib: u64,
    end: Memory,
    threads: usize,
    fds: usize,
    /// This program's own CPU over the window (the simulated agents).
    client_cpu: Duration,
}

impl Window {
    fn percent(&self) -> f64 {
        self.cpu.as_secs_f64() * 100.0 / self.wall.as_secs_f64()
    }

    fn row(&self, label: &str) -> String {
        let min = self
            .per_second
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let max = self.per_second.iter().copied().fold(0.0, f64::max);
        format!(
            "  {label:<26} {:>8.2} {:>6.0}/{:<6.0} {:>9.3} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>5} {:>10.3}\n",
            self.percent(),
            min,
            max,
            self.cpu.as_secs_f64(),
            self.rss_max_kib as f64 / 1024.0,
            self.end.rss_mib(),
            self.end.hwm_mib(),
            self.threads,
            self.fds,
            self.client_cpu.as_secs_f64()
        )
    }
}

fn window_header() -> String {
    format!(
        "  {:<26} {:>8} {:>13} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5} {:>10}\n  {:<26} {:>8} {:>13} {:>9} {:>9} {:>9} {:>9} {:>7} {:>5} {:>10}\n",
        "",
        "CPU %",
        "per second",
        "CPU s",
        "max RSS",
        "VmRSS",
        "VmHWM",
        "threads",
        "fds",
        "bench CPU",
        "",
        "of 1 core",
        "min/max %",
        "",
        "MiB",
        "MiB end",
        "MiB end",
        "end",
        "end",
        "s"
    )
}

/// Watches the server for `secs` seconds.
async fn window(server: &Server, secs: u64) -> Result<Window> {
    let me0 = cpu_time("/proc/self/stat")?;
    let cpu0 = server.cpu()?;
    let t0 = tokio::time::Instant::now();
    let mut prev = (t0, cpu0);
    let mut per_second = Vec::new();
    let mut rss_max_kib = server.memory()?.rss_kib;
    for i in 1..=secs {
        tokio::time::sleep_until(t0 + Duration::from_secs(i)).await;
        let now = tokio::time::Instant::now();
        let cpu = server.cpu()?;
        per_second.push(
            cpu.saturating_sub(prev.1).as_secs_f64() * 100.0
                / now.duration_since(prev.0).as_secs_f64(),
        );
        prev = (now, cpu);
        rss_max_kib = rss_max_kib.max(server.memory()?.rss_kib);
    }
    let end = server.memory()?;
    Ok(Window {
        wall: prev.0.duration_since(t0),
        cpu: prev.1.saturating_sub(cpu0),
        per_second,
        rss_max_kib: rss_max_kib.max(end.rss_kib),
        end,
        threads: threads_of(server.pid)?,
        fds: fds_of(server.pid)?,
        client_cpu: cpu_time("/proc/self/stat")?.saturating_sub(me0),
    })
}

/// The `Threads:` of a process's status.
fn threads_of(pid: Pid) -> Result<usize> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no Threads: in {path}"))
}

/// How many files a process has open.
fn fds_of(pid: Pid) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("listing {path}"))?
        .count())
}

pub(super) async fn idle_agents_case(bench: &Bench, args: &Args) -> Result<String> {
    let n = args.sim_agents;
    let mut server = bench.server_without_agent("idle-agents")?;
    let token = bench.agent_token(&server)?;
    let agent_api = Api::new(&server.url, &token)?;
    let admin = server.api()?;
    tokio::time::sleep(SETTLE).await;
    let started = server.memory()?;

    // The server with no agent.
    let idle = window(&server, args.window).await?;

    // Registering them.
    let cpu0 = server.cpu()?;
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut heartbeat_ms = 0;
    let mut lease_ms = 0;
    for i in 0..n {
        let r: Registered = agent_api
            .post(
                "/api/v1/agent/register",
                &Register {
                    name: format!("sim-{i}"),
                    labels: Vec::new(),
                    slots: 1,
                    executors: vec!["process".to_owned()],
                    version: "bench".to_owned(),
                },
            )
            .await?;
        heartbeat_ms = r.heartbeat_ms;
        lease_ms = r.lease_ms;
        ids.push(r.agent_id);
    }
    let registering = t0.elapsed();
    let registering_cpu = server.cpu()?.saturating_sub(cpu0);
    let registered = server.memory()?;
    ensure!(
        heartbeat_ms > 0,
        "the server asked for heartbeats every 0 ms"
    );
    let period = Duration::from_millis(heartbeat_ms);

    // Their claims and heartbeats, for as long as the window and a bit.
    // Half of them deregister at the end, the other half see the server
    // stop; dropping the sets aborts their tasks, whatever the way out.
    let half = n / 2;
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut first_claims = JoinSet::new();
    let mut second_claims = JoinSet::new();
    let mut beat_tasks = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let set = if i < half {
            &mut first_claims
        } else {
            &mut second_claims
        };
        set.spawn(claims(
            agent_api.clone(),
            id.clone(),
            Arc::clone(&stats),
            Arc::clone(&stop),
        ));
        // Spread over one period, as agents started at different times are.
        let offset = period.mul_f64(i as f64 / n as f64);
        beat_tasks.spawn(heartbeats(
            agent_api.clone(),
            id.clone(),
            period,
            offset,
            Arc::clone(&stats),
            Arc::clone(&stop),
        ));
    }
    tokio::time::sleep(SETTLE).await;
    let before = stats.counts();
    let busy = window(&server, args.window).await?;
    let during = stats.counts() - before;
    // Up to the window's end: claims answered later are not its figures.
    let claim_held = Dist::of(
        &stats
            .claim_held
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    );
    let hb_rtt = Dist::of(
        &stats
            .heartbeat_rtt
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    );

    // What the server says of them.
    let list = admin.agents().await?;
    let now = jiff::Timestamp::now();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut oldest_beat = Duration::ZERO;
    for a in list.agents.iter().filter(|a| a.name.starts_with("sim-")) {
        *states.entry(a.state.clone()).or_insert(0) += 1;
        let age = now.duration_since(a.last_heartbeat).unsigned_abs();
        oldest_beat = oldest_beat.max(age);
    }

    // No more claims or heartbeats; half of them deregister with their
    // claims outstanding, the server is stopped under the other half's.
    stop.store(true, Ordering::Relaxed);
    let outstanding = stats.counts().outstanding();
    let t1 = Instant::now();
    let mut deregister_failed = Vec::new();
    for id in &ids[..half] {
        let r: Result<IgnoredAny> = agent_api
            .post(
                "/api/v1/agent/deregister",
                &Deregister {
                    agent_id: id.clone(),
                },
            )
            .await;
        if let Err(e) = r {
            deregister_failed.push(format!("{e:#}"));
        }
    }
    let deregistering = t1.elapsed();
    let after_deregister = wait_for_claims(&mut first_claims, ANSWER_WAIT).await;
    let still_out = stats.counts().outstanding();
    let stop_result = server.stop();
    let after_stop = wait_for_claims(&mut second_claims, ANSWER_WAIT).await;
    first_claims.abort_all();
    second_claims.abort_all();
    beat_tasks.abort_all();
    let mut remarks = server_remarks(&server);

    // ---------------------------------------------------------------- report
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== idle-agents: {n} agents simulated over HTTP by this program (register; claim max 1 wait_ms {CLAIM_WAIT_MS} \
         always outstanding, re-sent when it returns; heartbeat every heartbeat_ms = {heartbeat_ms} ms, lease {lease_ms} ms), \
         server --no-local-agent, {} s windows: first with no agent, then with the {n}",
        args.window
    );
    s.push_str(&window_header());
    s.push_str(&idle.row("no agent (idle)"));
    s.push_str(&busy.row(&format!("{n} agents long-polling")));
    let grown = busy.end.rss_mib() - idle.end.rss_mib();
    let _ = writeln!(
        s,
        "  server CPU {:.3} percentage points of a core more with {n} agents ({:.3} ms of CPU per second per agent); \
         VmRSS {:+.1} MiB = {:.1} KiB per agent (after start {:.1} MiB, after registering {:.1} MiB)",
        busy.percent() - idle.percent(),
        (busy.cpu.as_secs_f64()
            - idle.cpu.as_secs_f64() * busy.wall.as_secs_f64() / idle.wall.as_secs_f64())
            * 1e3
            / busy.wall.as_secs_f64()
            / n as f64,
        grown,
        grown * 1024.0 / n as f64,
        started.rss_mib(),
        registered.rss_mib()
    );
    let _ = writeln!(
        s,
        "  registering {n} one after another took {:.3} s ({:.2} ms each), server CPU {:.3} s",
        registering.as_secs_f64(),
        registering.as_secs_f64() * 1e3 / n as f64,
        registering_cpu.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "  in the window: {} claims sent, {} answered ({} with work), {} failed; {} heartbeats ({} failed, {} with stale/kill); \
         {outstanding} claims outstanding at its end",
        during.claims_sent,
        during.claims_answered,
        during.claims_with_work,
        during.claims_failed,
        during.heartbeats,
        during.heartbeats_failed,
        during.heartbeats_with_orders
    );
    let expected_beats = n as f64 * busy.wall.as_secs_f64() / period.as_secs_f64();
    // The claims went out [`SETTLE`] before the window and each comes back
    // empty after `wait_ms`, when it is sent again.
    let wait = Duration::from_millis(CLAIM_WAIT_MS);
    let rounds = (busy.wall + SETTLE).as_millis() / wait.as_millis();
    let _ = writeln!(
        s,
        "  (expected: {} claims answered empty, each after {CLAIM_WAIT_MS} ms, and as many sent again; about {expected_beats:.0} heartbeats)",
        n as u128 * rounds
    );
    let states: Vec<String> = states.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(
        s,
        "  GET /api/v1/agents at the end of the window: {} (of {} listed); oldest last_heartbeat {:.1} s ago",
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join(", ")
        },
        list.agents.len(),
        oldest_beat.as_secs_f64()
    );
    s.push_str(&dist_header());
    s.push_str(&hb_rtt.row("heartbeat round trip (until window end)"));
    if !claim_held.0.is_empty() {
        s.push_str(&claim_held.row("claim held until answered (until end)"));
    }
    let _ = writeln!(
        s,
        "  then {half} deregistered one after another ({:.3} s, {} refused): of their {half} outstanding claims, {}",
        deregistering.as_secs_f64(),
        deregister_failed.len(),
        after_deregister.describe()
    );
    let _ = writeln!(
        s,
        "  then the server was stopped with {still_out} claims outstanding: {}; of those claims, {}",
        match &stop_result {
            Ok(took) => format!("it exited {:.3} s after SIGTERM", took.as_secs_f64()),
            Err(e) => format!("STOPPING FAILED: {e:#}"),
        },
        after_stop.describe()
    );
    if let Some(e) = deregister_failed.first() {
        remarks.push(format!("deregister refused: {e}"));
    }
    if let Ok(errors) = stats.errors.lock() {
        remarks.extend(
            errors
                .iter()
                .map(|e| format!("simulated agent call failed: {e}")),
        );
    }
    if remarks.is_empty() {
        s.push_str("  the server printed nothing unusual; no call of a simulated agent failed\n");
    } else {
        let _ = writeln!(s, "  unusual ({} line(s)):", remarks.len());
        for r in remarks.iter().take(20) {
            let _ = writeln!(s, "    {r}");
        }
    }
    Ok(s)
}

/// How the outstanding claims of some simulated agents ended.
struct Ended {
    answered: usize,
    failed: usize,
    first_error: Option<String>,
    /// Still outstanding when the wait ended.
    left: usize,
    waited: Duration,
}

impl Ended {
    fn describe(&self) -> String {
        let mut s = if self.answered + self.failed == 0 {
            format!(
                "none returned within {:.0} s ({} still outstanding)",
                ANSWER_WAIT.as_secs_f64(),
                self.left
            )
        } else {
            format!(
                "{} answered and {} failed, the last after {:.3} s; {} still outstanding after {:.0} s",
                self.answered,
                self.failed,
                self.waited.as_secs_f64(),
                self.left,
                ANSWER_WAIT.as_secs_f64()
            )
        };
        if let Some(e) = &self.first_error {
            let _ = write!(s, " (first error: {e})");
        }
        s
    }
}

/// Waits up to `limit` for the claim loops of `set` to end (they were told
/// to stop: each ends when its outstanding claim returns).
async fn wait_for_claims(set: &mut JoinSet<LastClaim>, limit: Duration) -> Ended {
    let t0 = tokio::time::Instant::now();
    let mut e = Ended {
        answered: 0,
        failed: 0,
        first_error: None,
        left: 0,
        waited: Duration::ZERO,
    };
    while let Ok(Some(joined)) = tokio::time::timeout_at(t0 + limit, set.join_next()).await {
        e.waited = t0.elapsed();
        match joined {
            Ok(LastClaim::Answered) => e.answered += 1,
            Ok(LastClaim::Failed(err)) => {
                e.failed += 1;
                e.first_error.get_or_insert(err);
            }
            Err(join) => {
                e.failed += 1;
                e.first_error
                    .get_or_insert(format!("the claim task failed: {join}"));
            }
        }
    }
    e.left = set.len();
    e
}

//! The cases with `ganger agent` processes: `agents` (throughput through two
//! remote agents against the in-process one) and `agent-latency`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{
    Api, Args, Bench, Dist, Flood, Memory, NOOP_JOB, START_TIMEOUT, STOP_TIMEOUT, Server, children,
    cpu_time, dist_header, ganger_flood, measure_latency, median, memory_of, server_remarks, tail,
};

/// `--grace` of the agents started here: how long a draining agent waits
/// for its tasks (there are none when they are stopped).
const AGENT_GRACE: &str = "2s";
/// How many odd runs [`Tally`] describes.
const ODD_SHOWN: usize = 5;
/// What an agent started here prints when all goes well.
const USUAL_AGENT_LINES: &[&str] = &[
    "ganger agent: configuration from ",
    " registered with http://",
    "ganger agent: stopping: no task runs",
    "ganger agent: deregistered; stopped",
];

// ---------------------------------------------------------------- agent processes

/// A `ganger agent` started here; stopped (SIGTERM, then SIGKILL) when
/// dropped, whatever the way out.
pub(super) struct AgentProc {
    name: String,
    child: Child,
    pid: Pid,
    log: PathBuf,
    stopped: bool,
}

impl AgentProc {
    /// `ganger agent --server <server> --name <name> --slots <slots>` with an
    /// agent token (in GANGER_AGENT_TOKEN, which `ganger agent` reads like
    /// `--token` and which `ps` does not show), once it says it registered.
    pub(super) fn start(
        bench: &Bench,
        server: &Server,
        token: &str,
        name: &str,
        slots: usize,
    ) -> Result<AgentProc> {
        AgentProc::start_on(bench, &[server], token, name, slots)
    }

    /// [`AgentProc::start`] with `--server` listing every one of `servers`
    /// (replicas, tried in that order); named after the first.
    pub(super) fn start_on(
        bench: &Bench,
        servers: &[&Server],
        token: &str,
        name: &str,
        slots: usize,
    ) -> Result<AgentProc> {
        let first = servers.first().context("an agent needs a server")?;
        let urls: Vec<&str> = servers
            .iter()
            .map(|s| s.url.as_str().trim_end_matches('/'))
            .collect();
        let log = bench.dir.join(format!("{}-agent-{name}.log", first.name));
        let workdir = bench.dir.join(format!("{}-agent-{name}", first.name));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let child = Command::new(&bench.ganger)
            .arg("agent")
            .args(["--server", &urls.join(",")])
            .args(["--name", name, "--slots", &slots.to_string()])
            .args(["--grace", AGENT_GRACE])
            .arg("--workdir")
            .arg(&workdir)
            .arg("--config")
            .arg(&bench.config)
            .env("GANGER_AGENT_TOKEN", token)
            .current_dir(&bench.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} agent", bench.ganger.display()))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("a process id out of range")?);
        children::track(pid, children::Kind::Other);
        let mut agent = AgentProc {
            name: name.to_owned(),
            child,
            pid,
            log,
            stopped: false,
        };
        let ready = format!("ganger agent {name} registered with ");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = agent.output();
            if text.lines().any(|l| l.starts_with(&ready)) {
                return Ok(agent);
            }
            agent.check_alive("before registering")?;
            ensure!(
                Instant::now() < deadline,
                "agent {name} printed no `{ready}…` line in {}s; its output:\n{}",
                START_TIMEOUT.as_secs(),
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn check_alive(&mut self, when: &str) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting for an agent")? {
            bail!(
                "agent {} exited ({status}) {when}; its output:\n{}",
                self.name,
                tail(&self.output())
            );
        }
        Ok(())
    }

    /// CPU time of the agent's own threads so far (not its tasks').
    fn cpu(&self) -> Result<Duration> {
        cpu_time(&format!("/proc/{}/stat", self.pid))
    }

    fn memory(&self) -> Result<Memory> {
        memory_of(self.pid)
    }

    /// SIGTERM (the agent drains, deregisters and exits), SIGKILL after
    /// [`STOP_TIMEOUT`]; how long it took to exit.
    pub(super) fn stop(&mut self) -> Result<Duration> {
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
            bail!("interrupted: the agent is stopped by the signal thread");
        }
        if let Some(status) = self.child.try_wait().context("waiting for an agent")? {
            bail!(
                "agent {} had exited by itself ({status}) before it was stopped; the end of its output ({}):\n{}",
                self.name,
                self.log.display(),
                tail(&self.output())
            );
        }
        let _ = kill(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut status = None;
        while status.is_none() {
            status = self.child.try_wait().context("waiting for an agent")?;
            if status.is_none() && Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "agent {} did not exit within {}s of SIGTERM; it was killed. The end of its output:\n{}",
                    self.name,
                    STOP_TIMEOUT.as_secs(),
                    tail(&self.output())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = start.elapsed();
        if let Some(status) = status
            && !status.success()
        {
            bail!(
                "agent {} exited {status} after SIGTERM; the end of its output:\n{}",
                self.name,
                tail(&self.output())
            );
        }
        Ok(took)
    }

    /// Lines of the agent's output other than the usual ones.
    pub(super) fn remarks(&self) -> Vec<String> {
        self.output()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !USUAL_AGENT_LINES.iter().any(|u| l.contains(u)))
            .map(|l| format!("agent {}: {l}", self.name))
            .collect()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Err(e) = self.stop()
            && !children::stopping()
        {
            eprintln!("ganger-bench-server: stopping agent {}: {e:#}", self.name);
        }
    }
}

/// The CPU time of all of `agents` so far.
pub(super) fn cpu_of(agents: &[AgentProc]) -> Result<Duration> {
    agents.iter().map(AgentProc::cpu).sum()
}

/// The remote agents' slots: `total` shared by two, the first taking the
/// odd one; each has at least one.
pub(super) fn split_slots(total: usize) -> [usize; 2] {
    let first = total.div_ceil(2).max(1);
    [first, total.saturating_sub(first).max(1)]
}

// ---------------------------------------------------------------- reading runs back

/// Every run of a flood read back: its attempts and their agents.
pub(super) struct Tally {
    runs: usize,
    attempts: usize,
    by_agent: BTreeMap<String, usize>,
    /// Runs with more than one attempt.
    retried: usize,
    /// Runs not succeeded with exactly one succeeded attempt (counted),
    /// the first few described.
    odd: usize,
    odd_shown: Vec<String>,
}

impl Tally {
    fn line(&self) -> String {
        let agents: Vec<String> = self
            .by_agent
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        let mut s = format!(
            "{} runs, {} attempts ({}), {} run(s) with more than one attempt, {} odd",
            self.runs,
            self.attempts,
            agents.join(", "),
            self.retried,
            self.odd
        );
        for o in &self.odd_shown {
            let _ = write!(s, "\n      {o}");
        }
        s
    }
}

/// Reads every run of `ids` (by `clients` concurrent clients).
pub(super) async fn tally_runs(api: &Api, ids: &[String], clients: usize) -> Result<Tally> {
    let ids: Arc<Vec<String>> = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients.min(ids.len()).max(1) {
        let api = api.clone();
        let ids = Arc::clone(&ids);
        let next = Arc::clone(&next);
        set.spawn(async move {
            let mut part = Tally {
                runs: 0,
                attempts: 0,
                by_agent: BTreeMap::new(),
                retried: 0,
                odd: 0,
                odd_shown: Vec::new(),
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else {
                    return anyhow::Ok(part);
                };
                let d = api.run(id).await?;
                part.runs += 1;
                let attempts: Vec<_> = d.tasks.iter().flat_map(|t| t.attempts.iter()).collect();
                part.attempts += attempts.len();
                if attempts.len() > 1 {
                    part.retried += 1;
                }
                for a in &attempts {
                    let agent = a.agent.clone().unwrap_or_else(|| "(no agent)".to_owned());
                    *part.by_agent.entry(agent).or_insert(0) += 1;
                }
                let fine = d.summary.status == "succeeded"
                    && attempts.len() == 1
                    && attempts.iter().all(|a| a.status == "succeeded");
                if !fine {
                    part.odd += 1;
                    if part.odd_shown.len() < ODD_SHOWN {
                        let list: Vec<String> = attempts
                            .iter()
                            .map(|a| {
                                format!(
                                    "#{} {} on {} ({})",
                                    a.number,
                                    a.status,
                                    a.agent.as_deref().unwrap_or("-"),
                                    a.reason.as_deref().unwrap_or("")
                                )
                            })
                            .collect();
                        part.odd_shown.push(format!(
                            "run {id} {}: {}",
                            d.summary.status,
                            list.join("; ")
                        ));
                    }
                }
            }
        });
    }
    let mut all = Tally {
        runs: 0,
        attempts: 0,
        by_agent: BTreeMap::new(),
        retried: 0,
        odd: 0,
        odd_shown: Vec::new(),
    };
    while let Some(joined) = set.join_next().await {
        let part = joined.context("a reading task panicked")??;
        all.runs += part.runs;
        all.attempts += part.attempts;
        for (a, n) in part.by_agent {
            *all.by_agent.entry(a).or_insert(0) += n;
        }
        all.retried += part.retried;
        all.odd += part.odd;
        let room = ODD_SHOWN.saturating_sub(all.odd_shown.len());
        all.odd_shown.extend(part.odd_shown.into_iter().take(room));
    }
    Ok(all)
}

// ---------------------------------------------------------------- cases

pub(super) fn agents_case(
    bench: &Bench,
    args: &Args,
    runtime: &tokio::runtime::Runtime,
) -> Result<String> {
    let split = split_slots(bench.slots);
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for i in 0..args.repeat {
        let l = runtime.block_on(ganger_flood(
            bench,
            args,
            &format!("agents-local-{i}"),
            &[],
            true,
        ))?;
        let r = runtime.block_on(ganger_flood(
            bench,
            args,
            &format!("agents-remote-{i}"),
            &split,
            true,
        ))?;
        eprintln!(
            "  run {}: in-process {:.3}s (submitted in {:.3}s), 2 remote agents {:.3}s (submitted in {:.3}s)",
            i + 1,
            l.wall.as_secs_f64(),
            l.submit.as_secs_f64(),
            r.wall.as_secs_f64(),
            r.submit.as_secs_f64()
        );
        local.push(l);
        remote.push(r);
    }
    let (l_wall, l) = median_flood(&local)?;
    let (r_wall, r) = median_flood(&remote)?;
    let n = args.runs as f64;
    let ratio = r_wall.as_secs_f64() / l_wall.as_secs_f64().max(f64::MIN_POSITIVE);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== agents: {} single-task `true` runs via POST /api/v1/runs ({} clients) until none queued or running: \
         2 remote `ganger agent`s on loopback (a1 {} + a2 {} slots, server --no-local-agent) vs the in-process agent ({} slots); median of {}",
        args.runs, args.concurrency, split[0], split[1], bench.slots, args.repeat
    );
    if split[0] + split[1] != bench.slots {
        let _ = writeln!(
            s,
            "  note: --slots {} cannot be shared by two agents: the remote ones have {} in all",
            bench.slots,
            split[0] + split[1]
        );
    }
    let _ = writeln!(
        s,
        "  {:<28} {:>9} {:>9} {:>12} {:>12} {:>12} {:>10}",
        "", "wall s", "runs/s", "submitted s", "server CPU", "agents CPU", "server RSS"
    );
    let _ = writeln!(
        s,
        "  {:<28} {:>9} {:>9} {:>12} {:>12} {:>12} {:>10}",
        "", "", "", "", "ms/run", "ms/run", "MiB"
    );
    let row = |label: &str, wall: Duration, f: &Flood| {
        format!(
            "  {label:<28} {:>9.3} {:>9.0} {:>12.3} {:>12.3} {:>12.3} {:>10.1}\n",
            wall.as_secs_f64(),
            n / wall.as_secs_f64(),
            f.submit.as_secs_f64(),
            f.server_cpu.as_secs_f64() * 1e3 / n,
            f.agent_cpu.as_secs_f64() * 1e3 / n,
            f.rss_after.rss_mib()
        )
    };
    s.push_str(&row(
        &format!("in-process agent ({})", bench.slots),
        l_wall,
        l,
    ));
    s.push_str(&row(
        &format!("2 remote agents ({}+{})", split[0], split[1]),
        r_wall,
        r,
    ));
    let _ = writeln!(
        s,
        "  ratio remote/in-process {ratio:.2}x wall time ({:.2}x the runs per second); {:+.3} ms per run",
        1.0 / ratio,
        (r_wall.as_secs_f64() - l_wall.as_secs_f64()) * 1e3 / n
    );
    let _ = writeln!(
        s,
        "  this client's CPU: in-process {:.3} ms per run, remote {:.3} ms per run ({} and {} drain polls)",
        l.client_cpu.as_secs_f64() * 1e3 / n,
        r.client_cpu.as_secs_f64() * 1e3 / n,
        l.polls,
        r.polls
    );
    for (label, f) in [("in-process", l), ("remote", r)] {
        if let Some(t) = &f.tally {
            let _ = writeln!(s, "  read back, {label}: {}", t.line());
        }
    }
    s.push_str(&dist_header());
    s.push_str(&Dist::of(&l.posts).row("POST /runs round trip, in-process"));
    s.push_str(&Dist::of(&r.posts).row("POST /runs round trip, remote"));
    s.push_str(&super::collision_line(l.collisions + r.collisions));
    s.push_str(&remarks_block(
        local.iter().chain(&remote).flat_map(|f| f.remarks.iter()),
    ));
    Ok(s)
}

/// The median wall time of `floods`, and the flood nearest it.
pub(super) fn median_flood(floods: &[Flood]) -> Result<(Duration, &Flood)> {
    let mut walls: Vec<Duration> = floods.iter().map(|f| f.wall).collect();
    let m = median(&mut walls);
    let f = floods
        .iter()
        .min_by_key(|f| f.wall.abs_diff(m))
        .context("no timed run")?;
    Ok((m, f))
}

/// Unusual output of servers and agents, or a line saying there was none.
pub(super) fn remarks_block<'a>(remarks: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&String> = remarks.collect();
    if all.is_empty() {
        return "  servers and agents printed nothing unusual\n".to_owned();
    }
    let mut s = format!(
        "  unusual output of servers and agents ({} line(s)):\n",
        all.len()
    );
    for line in all.iter().take(20) {
        let _ = writeln!(s, "    {line}");
    }
    if all.len() > 20 {
        let _ = writeln!(s, "    … {} more", all.len() - 20);
    }
    s
}

pub(super) async fn agent_latency_case(bench: &Bench, args: &Args) -> Result<String> {
    let mut server = bench.server_without_agent("agent-latency")?;
    let token = bench.agent_token(&server)?;
    let mut agent = AgentProc::start(bench, &server, &token, "a1", bench.slots)?;
    let api = server.api()?;
    api.apply(NOOP_JOB).await?;
    let agent_cpu0 = agent.cpu()?;
    let remote = measure_latency(&server, &api, args).await?;
    let agent_cpu = agent.cpu()?.saturating_sub(agent_cpu0);
    let agent_mem = agent.memory()?;
    agent.stop()?;
    server.stop()?;
    let mut remarks = agent.remarks();
    remarks.extend(server_remarks(&server));
    drop(agent);
    drop(server);

    let mut server = bench.server("agent-latency-local")?;
    let api = server.api()?;
    api.apply(NOOP_JOB).await?;
    let local = measure_latency(&server, &api, args).await?;
    server.stop()?;
    remarks.extend(server_remarks(&server));

    let ran_on = |l: &super::Latency| {
        l.agents
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== agent-latency: {} sequential single-task `true` runs (after {} warm-up), polled every {} ms, \
         through one remote `ganger agent` (a1, {} slots) on loopback, server --no-local-agent",
        args.samples,
        args.warmup,
        super::RUN_POLL.as_millis(),
        bench.slots
    );
    s.push_str(&remote.rows());
    s.push_str(&remote.verdict());
    let _ = writeln!(
        s,
        "  agent a1 CPU {:.2} ms per run (its own threads); its RSS {:.1} MiB, HWM {:.1} MiB; timed runs ran on: {}",
        agent_cpu.as_secs_f64() * 1e3 / remote.runs as f64,
        agent_mem.rss_mib(),
        agent_mem.hwm_mib(),
        ran_on(&remote)
    );
    let _ = writeln!(
        s,
        "-- the same on a server with its in-process agent ({} slots), in this invocation:",
        bench.slots
    );
    s.push_str(&local.rows());
    s.push_str(&local.verdict());
    let _ = writeln!(s, "  timed runs ran on: {}", ran_on(&local));
    let ratio = |p: f64| remote.to_start.pct(p) / local.to_start.pct(p);
    let _ = writeln!(
        s,
        "  remote/in-process submit->start: p50 {:.2}x ({:+.3} ms), p99 {:.2}x ({:+.3} ms)",
        ratio(50.0),
        remote.to_start.pct(50.0) - local.to_start.pct(50.0),
        ratio(99.0),
        remote.to_start.pct(99.0) - local.to_start.pct(99.0)
    );
    s.push_str(&remarks_block(remarks.iter()));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_by_two_agents() {
        assert_eq!(split_slots(2), [1, 1]);
        assert_eq!(split_slots(3), [2, 1]);
        assert_eq!(split_slots(8), [4, 4]);
        // One slot cannot be shared: each agent has one.
        assert_eq!(split_slots(1), [1, 1]);
    }
}

//! State machine tests: scenario tests for each rule, then property tests
//! over random DAGs and random outcomes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::model::{Condition, Job, TaskId};
use crate::parse_job_file;

fn job(yaml: &str) -> Arc<Job> {
    let file = parse_job_file("test.yml", yaml).unwrap_or_else(|e| panic!("invalid fixture:\n{e}"));
    Arc::new(file.jobs.into_iter().next().expect("one job"))
}

/// Drives a run by hand: events in, decisions recorded.
struct Sim {
    run: RunState,
    now: Timestamp,
    /// Dispatched and not yet finished: (task, attempt, phase).
    inflight: Vec<(TaskId, u32, Phase)>,
    kills: Vec<(TaskId, Phase)>,
    started: Vec<(String, Phase)>,
}

impl Sim {
    fn new(yaml: &str) -> Sim {
        Sim::with_job(job(yaml))
    }

    fn with_job(job: Arc<Job>) -> Sim {
        let now = Timestamp::from_second(1_000_000).expect("valid");
        let params = crate::params::resolve_params(&job, &[]).expect("defaults suffice");
        let mut sim = Sim {
            run: RunState::new("r1".into(), job, params, now),
            now,
            inflight: Vec::new(),
            kills: Vec::new(),
            started: Vec::new(),
        };
        sim.apply(Event::Start);
        sim
    }

    fn id(&self, name: &str) -> TaskId {
        self.run.job.task_id(name).expect("task exists")
    }

    fn apply(&mut self, event: Event) {
        let decisions = self.run.apply(event, self.now).expect("event accepted");
        self.absorb(decisions);
    }

    fn absorb(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            match d {
                Decision::Dispatch(spec) => {
                    self.started.push((spec.name.clone(), spec.phase));
                    self.inflight.push((spec.task, spec.attempt, spec.phase));
                    let ev = Event::TaskStarted {
                        task: spec.task,
                        attempt: spec.attempt,
                        phase: spec.phase,
                        agent: None,
                    };
                    let more = self.run.apply(ev, self.now).expect("start accepted");
                    self.absorb(more);
                }
                Decision::Kill { task, phase, .. } => self.kills.push((task, phase)),
                Decision::TaskChanged(_) | Decision::RunChanged => {}
            }
        }
    }

    fn running(&self) -> Vec<String> {
        self.inflight
            .iter()
            .map(|(t, _, _)| self.run.task_name(*t).to_owned())
            .collect()
    }

    fn finish_phase(&mut self, name: &str, phase: Phase, exit: Exit, outputs: &[(&str, &str)]) {
        let t = self.id(name);
        let pos = self
            .inflight
            .iter()
            .position(|(x, _, p)| *x == t && *p == phase)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let (_, attempt, _) = self.inflight.remove(pos);
        let outputs = outputs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.apply(Event::TaskFinished {
            task: t,
            attempt,
            phase,
            exit,
            outputs,
        });
    }

    fn finish(&mut self, name: &str, code: i32) {
        self.finish_phase(name, Phase::Main, Exit::Code(code), &[]);
    }

    fn status(&self, name: &str) -> TaskStatus {
        self.run.tasks[self.id(name)].main.status
    }

    fn advance(&mut self, d: Duration) {
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::try_from(d).expect("small"))
            .expect("in range");
        self.apply(Event::Tick);
    }
}

#[test]
fn independent_tasks_start_together() {
    let sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: 'true'}\n   b: {run: 'true'}\n   c: {run: 'true', needs: [a]}\n",
    );
    assert_eq!(sim.running(), vec!["a", "b"]);
}

#[test]
fn needs_wait_for_success() {
    let mut sim =
        Sim::new("jobs:\n j:\n  tasks:\n   a: {run: 'true'}\n   b: {run: 'true', needs: [a]}\n");
    assert_eq!(sim.running(), vec!["a"]);
    sim.finish("a", 0);
    assert_eq!(sim.running(), vec!["b"]);
    sim.finish("b", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

#[test]
fn failure_skips_success_dependants_and_runs_failure_handlers() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: 'false'}\n   ok: {run: x, needs: [a]}\n   after_ok: {run: x, needs: [ok]}\n   on_skip: {run: x, needs: {ok: skipped}}\n   handler: {run: x, needs: {a: failure}}\n   cleanup: {run: x, needs: {a: always}}\n",
    );
    sim.finish("a", 1);
    assert_eq!(sim.status("ok"), TaskStatus::Skipped);
    assert_eq!(sim.status("after_ok"), TaskStatus::Skipped);
    let mut running = sim.running();
    running.sort();
    assert_eq!(running, vec!["cleanup", "handler", "on_skip"]);
    for t in ["handler", "cleanup", "on_skip"] {
        sim.finish(t, 0);
    }
    assert_eq!(
        sim.run.status,
        RunStatus::Failed,
        "on_failure reacts without absorbing the failure"
    );
}

#[test]
fn routed_exit_code_is_a_branch_not_a_failure() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   probe: {run: x, on_exit_code: {101: fix}, on_success: deploy, on_failure: alert}\n   fix: {run: x}\n   deploy: {run: x}\n   alert: {run: x}\n",
    );
    sim.finish("probe", 101);
    assert_eq!(sim.status("probe"), TaskStatus::Failed);
    assert_eq!(
        sim.status("alert"),
        TaskStatus::Skipped,
        "a routed code is not a failure to react to"
    );
    assert_eq!(
        sim.status("deploy"),
        TaskStatus::Skipped,
        "{:?}",
        sim.run.tasks[0].main.reason
    );
    assert_eq!(sim.running(), vec!["fix"]);
    sim.finish("fix", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

#[test]
fn unrouted_exit_code_fails_the_run() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   probe: {run: x, on_exit_code: {101: fix}}\n   fix: {run: x}\n",
    );
    sim.finish("probe", 3);
    assert_eq!(sim.status("fix"), TaskStatus::Skipped);
    assert_eq!(sim.run.status, RunStatus::Failed);
}

#[test]
fn allow_failure_counts_as_success_downstream() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   lint: {run: x, allow_failure: true}\n   build: {run: x, needs: [lint]}\n   react: {run: x, needs: {lint: failure}}\n",
    );
    sim.finish("lint", 1);
    let mut running = sim.running();
    running.sort();
    assert_eq!(running, vec!["build", "react"]);
    sim.finish("build", 0);
    sim.finish("react", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

#[test]
fn if_false_skips_and_propagates() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  params: {env: dev}\n  tasks:\n   deploy: {run: x, if: \"params.env == 'prod'\"}\n   verify: {run: x, needs: [deploy]}\n   report: {run: x, needs: {deploy: skipped}}\n",
    );
    assert_eq!(
        sim.status("deploy"),
        TaskStatus::Skipped,
        "{:?}",
        sim.run.tasks[0].main.reason
    );
    assert_eq!(sim.status("verify"), TaskStatus::Skipped);
    sim.finish("report", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

#[test]
fn retries_are_counted_exactly() {
    for (retries, expected) in [(2, RunStatus::Succeeded), (1, RunStatus::Failed)] {
        let mut sim = Sim::new(&format!(
            "jobs:\n j:\n  tasks:\n   flaky: {{run: x, retry: {retries}}}\n"
        ));
        let mut attempt = 0;
        while sim.run.status == RunStatus::Running {
            attempt += 1;
            sim.finish("flaky", if attempt < 3 { 1 } else { 0 });
        }
        assert_eq!(sim.run.status, expected, "retry: {retries}");
        assert_eq!(sim.run.tasks[0].main.attempts.len(), (retries + 1).min(3));
    }
}

#[test]
fn exponential_backoff_waits_between_attempts() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   t: {run: x, retry: {attempts: 3, delay: 10s, backoff: exponential, max_delay: 15s}}\n",
    );
    sim.finish("t", 1);
    assert!(sim.running().is_empty());
    let due = sim.run.next_wakeup().expect("retry timer");
    assert_eq!(due.duration_since(sim.now).as_secs(), 10);
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.running(), vec!["t"]);
    sim.finish("t", 1);
    let due = sim.run.next_wakeup().expect("retry timer");
    assert_eq!(
        due.duration_since(sim.now).as_secs(),
        15,
        "20s capped at max_delay"
    );
}

#[test]
fn timeout_kills_then_marks_timed_out() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   slow: {run: x, timeout: 5s}\n");
    sim.advance(Duration::from_secs(4));
    assert!(sim.kills.is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.kills, vec![(0, Phase::Main)]);
    sim.finish_phase("slow", Phase::Main, Exit::Signal(15), &[]);
    assert_eq!(sim.status("slow"), TaskStatus::TimedOut);
    assert_eq!(sim.run.status, RunStatus::Failed);
}

#[test]
fn run_timeout_stops_everything_but_always() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  timeout: 1m\n  tasks:\n   a: {run: x}\n   b: {run: x, needs: [a]}\n   clean: {run: x, always: true, needs: [b]}\n",
    );
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.kills, vec![(0, Phase::Main)]);
    sim.finish_phase("a", Phase::Main, Exit::Signal(15), &[]);
    assert_eq!(sim.status("a"), TaskStatus::TimedOut);
    assert_eq!(
        sim.run.tasks[0].main.reason.as_deref(),
        Some("stopped: the run timed out")
    );
    assert_eq!(sim.status("b"), TaskStatus::Cancelled);
    sim.finish("clean", 0);
    assert_eq!(sim.run.status, RunStatus::Failed);
    assert!(
        sim.run
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("timed out after 1m")
    );
}

#[test]
fn cancel_stops_pending_kills_running_and_still_runs_always() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: x, needs: [a]}\n   clean: {run: x, always: true, needs: [a]}\n",
    );
    sim.apply(Event::Cancel {
        reason: "by test".into(),
        force: false,
    });
    assert_eq!(sim.kills, vec![(0, Phase::Main)]);
    assert_eq!(sim.status("b"), TaskStatus::Cancelled);
    sim.finish_phase("a", Phase::Main, Exit::Signal(15), &[]);
    assert_eq!(sim.status("a"), TaskStatus::Cancelled);
    assert_eq!(sim.running(), vec!["clean"]);
    sim.finish("clean", 0);
    assert_eq!(sim.run.status, RunStatus::Cancelled);
    let err = sim.run.apply(
        Event::Cancel {
            reason: "again".into(),
            force: false,
        },
        sim.now,
    );
    assert_eq!(err, Err(EventError::Finished));
}

#[test]
fn cancel_ends_a_retry_wait_at_once() {
    let mut sim =
        Sim::new("jobs:\n j:\n  tasks:\n   t: {run: x, retry: {attempts: 3, delay: 30s}}\n");
    sim.finish("t", 1);
    assert!(sim.run.tasks[0].retry_at.is_some());
    sim.apply(Event::Cancel {
        reason: "stop".into(),
        force: false,
    });
    assert_eq!(sim.status("t"), TaskStatus::Cancelled);
    assert_eq!(
        sim.run.status,
        RunStatus::Cancelled,
        "no waiting for the retry timer"
    );
    assert_eq!(sim.run.next_wakeup(), None);
}

#[test]
fn cancel_withdraws_dispatched_tasks_nobody_took() {
    let job = job("jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: x}\n");
    let now = Timestamp::from_second(1_000_000).expect("valid");
    let mut run = RunState::new("r".into(), job, BTreeMap::new(), now);
    let dispatched = run.apply(Event::Start, now).expect("start");
    assert_eq!(
        dispatched
            .iter()
            .filter(|d| matches!(d, Decision::Dispatch(_)))
            .count(),
        2
    );
    run.apply(
        Event::TaskClaimed {
            task: 0,
            attempt: 1,
            phase: Phase::Main,
            agent: None,
        },
        now,
    )
    .expect("claim");
    let decisions = run
        .apply(
            Event::Cancel {
                reason: "stop".into(),
                force: false,
            },
            now,
        )
        .expect("cancel");
    assert!(decisions.contains(&Decision::Kill {
        task: 0,
        attempt: 1,
        phase: Phase::Main,
        force: false
    }));
    assert_eq!(
        run.tasks[1].main.status,
        TaskStatus::Cancelled,
        "ready but unclaimed: withdrawn"
    );
    let late = Event::TaskStarted {
        task: 1,
        attempt: 1,
        phase: Phase::Main,
        agent: None,
    };
    assert!(matches!(
        run.apply(late, now),
        Err(EventError::Stale { .. })
    ));
    let done = Event::TaskFinished {
        task: 0,
        attempt: 1,
        phase: Phase::Main,
        exit: Exit::Signal(15),
        outputs: BTreeMap::new(),
    };
    run.apply(done, now).expect("finish");
    assert_eq!(run.status, RunStatus::Cancelled);
}

#[test]
fn forced_cancel_kills_always_tasks_too() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x}\n   clean: {run: x, always: true, needs: [a]}\n",
    );
    sim.apply(Event::Cancel {
        reason: "first".into(),
        force: false,
    });
    sim.finish_phase("a", Phase::Main, Exit::Signal(15), &[]);
    assert_eq!(sim.running(), vec!["clean"]);
    sim.apply(Event::Cancel {
        reason: "second".into(),
        force: true,
    });
    assert!(sim.kills.contains(&(1, Phase::Main)));
    sim.finish_phase("clean", Phase::Main, Exit::Signal(9), &[]);
    assert_eq!(sim.run.status, RunStatus::Cancelled);
}

#[test]
fn fail_fast_cancels_siblings() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  fail_fast: true\n  tasks:\n   a: {run: x}\n   b: {run: x}\n   c: {run: x, needs: [b]}\n",
    );
    sim.finish("a", 1);
    assert_eq!(sim.kills, vec![(1, Phase::Main)]);
    sim.finish_phase("b", Phase::Main, Exit::Signal(15), &[]);
    assert_eq!(sim.status("c"), TaskStatus::Cancelled);
    assert_eq!(sim.run.status, RunStatus::Failed);
}

#[test]
fn outputs_flow_downstream_and_into_scripts() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: 'echo {{ tasks.a.outputs.v }}', needs: [a]}\n",
    );
    sim.finish_phase("a", Phase::Main, Exit::Code(0), &[("v", "1.2 beta")]);
    let spec = sim.run.apply(Event::Tick, sim.now).expect("tick");
    assert!(spec.is_empty());
    assert_eq!(
        sim.run.tasks[0].outputs.get("v").map(String::as_str),
        Some("1.2 beta")
    );
}

#[test]
fn undo_runs_in_reverse_order_when_the_run_fails() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x, undo: ua}\n   b: {run: x, undo: ub, needs: [a]}\n   c: {run: x, needs: [b]}\n   side: {run: x, undo: us}\n",
    );
    sim.finish("a", 0);
    sim.finish("side", 0);
    sim.finish("b", 0);
    sim.finish("c", 1);
    let undos: Vec<String> = sim
        .inflight
        .iter()
        .map(|(t, _, _)| sim.run.task_name(*t).to_owned())
        .collect();
    assert_eq!(
        undos,
        vec!["b", "side"],
        "b's undo waits for nothing; a's waits for b's"
    );
    sim.finish_phase("b", Phase::Undo, Exit::Code(0), &[]);
    assert_eq!(sim.running(), vec!["side", "a"]);
    sim.finish_phase("side", Phase::Undo, Exit::Code(0), &[]);
    sim.finish_phase("a", Phase::Undo, Exit::Code(0), &[]);
    assert_eq!(sim.run.status, RunStatus::Failed);
}

#[test]
fn no_undo_when_the_run_succeeds() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x, undo: ua}\n");
    sim.finish("a", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    assert!(sim.run.tasks[0].undo.is_none());
}

#[test]
fn stale_reports_are_refused() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x, retry: 1}\n");
    sim.finish("a", 1);
    let stale = Event::TaskFinished {
        task: 0,
        attempt: 1,
        phase: Phase::Main,
        exit: Exit::Code(0),
        outputs: BTreeMap::new(),
    };
    assert!(matches!(
        sim.run.apply(stale, sim.now),
        Err(EventError::Stale { .. })
    ));
    assert_eq!(sim.run.tasks[0].main.attempt(), 2);
}

#[test]
fn lost_attempts_are_retried_then_fail() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x, retry: 1}\n");
    sim.finish_phase("a", Phase::Main, Exit::Lost, &[]);
    assert_eq!(sim.run.tasks[0].main.attempts[0].status, TaskStatus::Lost);
    sim.finish_phase("a", Phase::Main, Exit::Lost, &[]);
    assert_eq!(sim.status("a"), TaskStatus::Failed);
    assert_eq!(
        sim.run.tasks[0].main.reason.as_deref(),
        Some("lost: its lease expired")
    );
}

#[test]
fn interrupted_attempts_run_again_outside_the_retry_budget() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x, retry: 1}\n");
    for _ in 0..3 {
        sim.finish_phase(
            "a",
            Phase::Main,
            Exit::Interrupted("server restarted".into()),
            &[],
        );
    }
    assert_eq!(sim.status("a"), TaskStatus::Running, "never out of budget");
    sim.finish("a", 1);
    assert_eq!(sim.status("a"), TaskStatus::Running, "the one real retry");
    sim.finish("a", 1);
    assert_eq!(sim.run.status, RunStatus::Failed);
    let attempts = &sim.run.tasks[0].main.attempts;
    assert_eq!(attempts.len(), 5);
    assert!(
        attempts[..3]
            .iter()
            .all(|a| a.interrupted && a.status == TaskStatus::Lost)
    );
    assert_eq!(
        attempts[0].reason.as_deref(),
        Some("interrupted: server restarted")
    );
}

#[test]
fn interrupted_while_stopping_is_cancelled() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x}\n");
    sim.apply(Event::Cancel {
        reason: "by user".into(),
        force: false,
    });
    sim.finish_phase(
        "a",
        Phase::Main,
        Exit::Interrupted("server restarted".into()),
        &[],
    );
    assert_eq!(sim.status("a"), TaskStatus::Cancelled);
    assert_eq!(sim.run.status, RunStatus::Cancelled);
}

/// Finishes a retried run's reset and start, as a driver would.
fn restart(sim: &mut Sim) -> usize {
    let again = sim.run.reset_for_retry().expect("retryable");
    assert_eq!(sim.run.status, RunStatus::Queued);
    sim.apply(Event::Start);
    again
}

#[test]
fn retry_reruns_only_what_did_not_succeed() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: x, needs: [a], retry: 1}\n   c: {run: x, needs: [b]}\n   side: {run: x}\n",
    );
    sim.finish_phase("a", Phase::Main, Exit::Code(0), &[("v", "kept")]);
    sim.finish("side", 0);
    sim.finish("b", 1);
    sim.finish("b", 1);
    assert_eq!(sim.run.status, RunStatus::Failed);
    assert_eq!(sim.status("c"), TaskStatus::Skipped);
    assert!(matches!(sim.run.reset_for_retry(), Ok(2)));
    sim.apply(Event::Start);
    assert_eq!(sim.running(), vec!["b"], "a and side keep their results");
    assert_eq!(
        sim.run.tasks[0].outputs.get("v").map(String::as_str),
        Some("kept")
    );
    sim.finish("b", 1);
    assert_eq!(sim.status("b"), TaskStatus::Running, "a fresh retry budget");
    assert_eq!(sim.run.tasks[1].main.attempt(), 4, "attempt numbers go on");
    sim.finish("b", 0);
    sim.finish("c", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    assert_eq!(sim.started.iter().filter(|(n, _)| n == "a").count(), 1);
}

#[test]
fn retry_reruns_tasks_that_compensation_undid() {
    let mut sim =
        Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x, undo: ua}\n   b: {run: x, needs: [a]}\n");
    sim.finish("a", 0);
    sim.finish("b", 1);
    sim.finish_phase("a", Phase::Undo, Exit::Code(0), &[]);
    assert_eq!(sim.run.status, RunStatus::Failed);
    assert_eq!(restart(&mut sim), 2);
    assert_eq!(sim.running(), vec!["a"]);
    assert!(sim.run.tasks[0].undo.is_none());
}

#[test]
fn retry_refuses_running_and_succeeded_runs() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x}\n");
    assert_eq!(sim.run.reset_for_retry(), Err(EventError::Unfinished));
    sim.finish("a", 0);
    assert_eq!(sim.run.reset_for_retry(), Err(EventError::Succeeded));
}

#[test]
fn a_cancelled_run_retries_its_cancelled_tasks() {
    let mut sim = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: x, needs: [a]}\n");
    sim.apply(Event::Cancel {
        reason: "by user".into(),
        force: false,
    });
    sim.finish_phase("a", Phase::Main, Exit::Signal(15), &[]);
    assert_eq!(sim.run.status, RunStatus::Cancelled);
    assert_eq!(restart(&mut sim), 2);
    sim.finish("a", 0);
    sim.finish("b", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
}

#[test]
fn join_points_succeed_at_once() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: x}\n   join: {needs: [a, b]}\n   after: {run: x, needs: [join]}\n",
    );
    sim.finish("a", 0);
    sim.finish("b", 0);
    assert_eq!(sim.status("join"), TaskStatus::Succeeded);
    assert_eq!(sim.running(), vec!["after"]);
}

#[test]
fn template_errors_fail_the_task_without_retry() {
    let mut sim = Sim::new(
        "jobs:\n j:\n  tasks:\n   a: {run: x}\n   b: {run: 'echo {{ tasks.a.outputs.missing }}', needs: [a], retry: 3}\n",
    );
    sim.finish("a", 0);
    assert_eq!(sim.status("b"), TaskStatus::Failed);
    let reason = sim.run.tasks[1].main.reason.clone().unwrap_or_default();
    assert!(reason.contains("template error in `run`"), "{reason}");
    assert_eq!(sim.run.tasks[1].main.attempts.len(), 1);
}

#[test]
fn specs_carry_params_and_the_rendered_body() {
    let sim = Sim::new(
        "jobs:\n j:\n  params: {who: {default: 'a \"b\", {c}'}}\n  tasks:\n   a:\n    run: x\n    body: {greet: 'hi {{ params.who }}', n: 2, list: ['{{ params.who }}']}\n",
    );
    let spec = render::task_spec(&sim.run, 0, 1, Phase::Main).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        spec.params,
        BTreeMap::from([("who".to_owned(), "a \"b\", {c}".to_owned())])
    );
    // A value lands inside its string: it cannot change the structure.
    assert_eq!(
        spec.body,
        Some(serde_json::json!({"greet": "hi a \"b\", {c}", "n": 2, "list": ["a \"b\", {c}"]}))
    );
    let plain = Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x}\n");
    let spec = render::task_spec(&plain.run, 0, 1, Phase::Main).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_string(&spec).expect("serializes");
    assert!(
        !json.contains("\"params\"") && !json.contains("\"body\""),
        "empty ones are left out: {json}"
    );
}

#[test]
fn http_json_values_are_rendered_as_strings() {
    let sim = Sim::new(
        "jobs:\n j:\n  params: {v: {default: '\",\"x\":\"1'}}\n  tasks:\n   a: {http: {url: 'http://h', method: POST, json: {k: '{{ params.v }}'}}}\n",
    );
    let spec = render::task_spec(&sim.run, 0, 1, Phase::Main).unwrap_or_else(|e| panic!("{e}"));
    let ExecSpec::Http(http) = spec.executor else {
        panic!("an http task")
    };
    let json: serde_json::Value =
        serde_json::from_str(http.json.as_deref().unwrap_or_default()).expect("valid JSON");
    assert_eq!(json, serde_json::json!({"k": "\",\"x\":\"1"}));
}

fn progress(task: TaskId, attempt: u32, progress: f64) -> Event {
    Event::TaskProgress {
        task,
        attempt,
        phase: Phase::Main,
        progress,
    }
}

#[test]
fn progress_is_recorded_on_the_running_attempt_and_decides_nothing() {
    let mut sim =
        Sim::new("jobs:\n j:\n  tasks:\n   a: {run: x, retry: 1}\n   b: {run: x, needs: [a]}\n");
    let before = sim.run.clone();
    let decisions = sim
        .run
        .apply(progress(0, 1, 0.45), sim.now)
        .expect("accepted");
    assert_eq!(decisions, vec![Decision::TaskChanged(0)]);
    assert_eq!(sim.run.tasks[0].main.attempts[0].progress, Some(0.45));
    assert_eq!(sim.run.tasks[0].main.status, before.tasks[0].main.status);
    assert_eq!(sim.run.tasks[1], before.tasks[1]);
    assert_eq!(sim.run.next_wakeup(), before.next_wakeup());
    // Out-of-range values are clamped, NaN clears it.
    sim.run
        .apply(progress(0, 1, 7.0), sim.now)
        .expect("accepted");
    assert_eq!(sim.run.tasks[0].main.attempts[0].progress, Some(1.0));
    sim.run
        .apply(progress(0, 1, f64::NAN), sim.now)
        .expect("accepted");
    assert_eq!(sim.run.tasks[0].main.attempts[0].progress, None);
    sim.run
        .apply(progress(0, 1, 0.5), sim.now)
        .expect("accepted");
    // It is saved with the run, and restored.
    let saved = sim.run.to_json().expect("serializes");
    let restored = RunState::from_json(&saved, sim.run.job.clone()).expect("restores");
    assert_eq!(restored.tasks[0].main.attempts[0].progress, Some(0.5));

    // Fenced like any report: not for a task that has not started, an
    // attempt that ended, or a finished run.
    let stale = |r: Result<Vec<Decision>, EventError>| matches!(r, Err(EventError::Stale { .. }));
    assert!(stale(sim.run.apply(progress(1, 1, 0.5), sim.now)));
    sim.finish("a", 1);
    assert!(stale(sim.run.apply(progress(0, 1, 0.5), sim.now)));
    assert_eq!(
        sim.run.tasks[0].main.attempts[0].progress,
        Some(0.5),
        "kept once ended"
    );
    assert_eq!(
        sim.run.tasks[0].main.attempts[1].progress, None,
        "a new attempt starts afresh"
    );
    sim.run
        .apply(progress(0, 2, 0.1), sim.now)
        .expect("the retry's own");
    sim.finish("a", 0);
    sim.finish("b", 0);
    assert_eq!(sim.run.status, RunStatus::Succeeded);
    assert_eq!(
        sim.run.apply(progress(1, 1, 0.5), sim.now),
        Err(EventError::Finished)
    );
}

// ---- property tests ----

#[derive(Clone, Debug)]
struct GenTask {
    needs: Vec<(usize, u8)>,
    always: bool,
    allow_failure: bool,
    undo: bool,
    retry: u32,
    retry_delay: bool,
}

fn gen_job() -> impl Strategy<Value = Vec<GenTask>> {
    (1usize..8).prop_flat_map(|n| {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let needs = proptest::collection::vec((0..i.max(1), 0u8..5), 0..=i.min(3));
                let flags = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
                (needs, flags, 0u32..3).prop_map(
                    move |(needs, (always, allow_failure, undo, retry_delay), retry)| GenTask {
                        needs: if i == 0 { Vec::new() } else { needs },
                        always,
                        allow_failure,
                        undo,
                        retry,
                        retry_delay,
                    },
                )
            })
            .collect();
        tasks
    })
}

fn yaml_of(tasks: &[GenTask]) -> String {
    let mut s = String::from("jobs:\n j:\n  tasks:\n");
    for (i, t) in tasks.iter().enumerate() {
        let delay = if t.retry_delay { "10s" } else { "0s" };
        s.push_str(&format!(
            "   t{i}:\n    run: x\n    retry: {{attempts: {}, delay: {delay}}}\n    always: {}\n    allow_failure: {}\n",
            t.retry, t.always, t.allow_failure
        ));
        if t.undo {
            s.push_str("    undo: u\n");
        }
        let mut seen = BTreeSet::new();
        let needs: Vec<_> = t.needs.iter().filter(|(d, _)| seen.insert(*d)).collect();
        if !needs.is_empty() {
            s.push_str("    needs:\n");
            for (d, c) in needs {
                let cond = [
                    "success",
                    "failure",
                    "always",
                    "skipped",
                    "{exit_codes: [3]}",
                ][*c as usize];
                s.push_str(&format!("     t{d}: {cond}\n"));
            }
        }
    }
    s
}

#[derive(Clone, Debug)]
enum Step {
    Finish {
        pick: usize,
        code: i32,
    },
    /// A running attempt reports progress: it must change nothing else.
    Progress {
        pick: usize,
        progress: f64,
    },
    Cancel {
        force: bool,
    },
    Tick,
}

fn gen_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            8 => (any::<usize>(), prop_oneof![Just(0), Just(1), Just(3)]).prop_map(|(pick, code)| Step::Finish { pick, code }),
            // Binary fractions, so a saved and restored run reads the same.
            2 => (any::<usize>(), prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(1.0)]).prop_map(|(pick, progress)| Step::Progress { pick, progress }),
            1 => any::<bool>().prop_map(|force| Step::Cancel { force }),
            1 => Just(Step::Tick),
        ],
        0..200,
    )
}

/// Drives a random run with random steps, checking the rules at every step;
/// with `restore`, the run is saved and restored after every step. Returns
/// the final state as JSON.
fn drive_and_check(
    tasks: Vec<GenTask>,
    steps: Vec<Step>,
    restore: bool,
) -> Result<String, TestCaseError> {
    let job = job(&yaml_of(&tasks));
    let n = job.tasks.len();
    let mut sim = Sim::with_job(job.clone());
    let mut terminal_seen: Vec<Option<TaskStatus>> = vec![None; n];
    let mut undo_done_order: Vec<TaskId> = Vec::new();
    let mut undo_started: Vec<TaskId> = Vec::new();
    let check = |sim: &Sim, terminal_seen: &mut Vec<Option<TaskStatus>>| {
        for (t, seen) in terminal_seen.iter_mut().enumerate() {
            let status = sim.run.tasks[t].main.status;
            if let Some(prev) = seen {
                prop_assert_eq!(*prev, status, "a terminal task changed state");
            } else if status.is_terminal() {
                *seen = Some(status);
            }
        }
        Ok(())
    };
    let mut steps = steps.into_iter();
    // Random steps, then finish everything still running until the run ends.
    for _ in 0..10_000 {
        if sim.run.status.is_terminal() {
            break;
        }
        let step = steps.next().unwrap_or(Step::Finish { pick: 0, code: 0 });
        match step {
            Step::Finish { pick, code } => {
                if sim.inflight.is_empty() {
                    sim.advance(Duration::from_secs(3600));
                    continue;
                }
                let (t, attempt, phase) = sim.inflight.remove(pick % sim.inflight.len());
                // Rule: a task starts only once its needs allow it.
                if phase == Phase::Main && attempt == 1 {
                    let def = &job.tasks[t];
                    for need in &def.needs {
                        let dep = sim.run.tasks[need.task].main.status;
                        prop_assert!(
                            dep.is_terminal(),
                            "t{} ran before t{} settled",
                            t,
                            need.task
                        );
                    }
                }
                if phase == Phase::Undo {
                    undo_started.push(t);
                }
                let decisions = sim.run.apply(
                    Event::TaskFinished {
                        task: t,
                        attempt,
                        phase,
                        exit: Exit::Code(code),
                        outputs: BTreeMap::new(),
                    },
                    sim.now,
                );
                let decisions = decisions.expect("current attempt accepted");
                if phase == Phase::Undo {
                    undo_done_order.push(t);
                }
                sim.absorb(decisions);
            }
            Step::Progress { pick, progress } => {
                let Some(&(task, attempt, phase)) =
                    sim.inflight.get(pick % sim.inflight.len().max(1))
                else {
                    continue;
                };
                let statuses: Vec<TaskStatus> =
                    sim.run.tasks.iter().map(|t| t.main.status).collect();
                let wakeup = sim.run.next_wakeup();
                let event = Event::TaskProgress {
                    task,
                    attempt,
                    phase,
                    progress,
                };
                // A stopping run may have killed it already: then it is
                // refused, and changes nothing either.
                if let Ok(decisions) = sim.run.apply(event, sim.now) {
                    prop_assert_eq!(decisions, vec![Decision::TaskChanged(task)]);
                }
                let after: Vec<TaskStatus> = sim.run.tasks.iter().map(|t| t.main.status).collect();
                prop_assert_eq!(statuses, after, "progress changed a task's status");
                prop_assert_eq!(wakeup, sim.run.next_wakeup(), "progress moved a timer");
            }
            Step::Cancel { force } => {
                let r = sim.run.apply(
                    Event::Cancel {
                        reason: "test".into(),
                        force,
                    },
                    sim.now,
                );
                if let Ok(d) = r {
                    sim.absorb(d);
                }
                // A stopped run waits only for what still runs and for
                // retries of `always` tasks: never for anything else.
                let forced = matches!(sim.run.stop, Some(Stop::Cancel { force: true, .. }));
                let waiting = sim
                    .run
                    .tasks
                    .iter()
                    .enumerate()
                    .any(|(i, t)| t.retry_at.is_some() && job.tasks[i].always && !forced);
                if sim.inflight.is_empty() && !waiting {
                    prop_assert!(
                        sim.run.status.is_terminal(),
                        "cancelled run idles in {:?}",
                        sim.run.status
                    );
                }
            }
            Step::Tick => sim.advance(Duration::from_secs(3600)),
        }
        check(&sim, &mut terminal_seen)?;
        if restore {
            // As after a crash: the run continues from what a store kept.
            let saved = sim.run.to_json().expect("serializes");
            sim.run = RunState::from_json(&saved, job.clone()).expect("restores");
        }
    }
    prop_assert!(
        sim.run.status.is_terminal(),
        "run did not terminate: {:?}",
        sim.run.status
    );
    for t in 0..n {
        prop_assert!(
            sim.run.tasks[t].main.status.is_terminal(),
            "t{} not terminal",
            t
        );
    }
    // Undo order: a task's undo finishes after the undos of its descendants.
    for (i, &t) in undo_done_order.iter().enumerate() {
        for d in job.descendants(t) {
            if let Some(j) = undo_done_order.iter().position(|&x| x == d) {
                prop_assert!(
                    j < i,
                    "undo of t{} finished before undo of its descendant t{}",
                    t,
                    d
                );
            }
        }
    }
    // Undo only for succeeded tasks of failed runs.
    for &t in &undo_started {
        prop_assert_eq!(sim.run.tasks[t].main.status, TaskStatus::Succeeded);
        prop_assert_eq!(sim.run.status, RunStatus::Failed);
    }
    Ok(sim.run.to_json().expect("serializes"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_run_terminates_and_respects_its_rules(tasks in gen_job(), steps in gen_steps()) {
        drive_and_check(tasks, steps, false)?;
    }

    #[test]
    fn saving_and_restoring_a_run_changes_nothing(tasks in gen_job(), steps in gen_steps()) {
        let uninterrupted = drive_and_check(tasks.clone(), steps.clone(), false)?;
        let restored = drive_and_check(tasks, steps, true)?;
        prop_assert_eq!(uninterrupted, restored);
    }

    #[test]
    fn dispatch_only_when_conditions_hold(tasks in gen_job(), codes in proptest::collection::vec(prop_oneof![Just(0), Just(1), Just(3)], 64)) {
        let job = job(&yaml_of(&tasks));
        let mut sim = Sim::with_job(job.clone());
        let mut codes = codes.into_iter().cycle();
        while let Some(&(t, attempt, phase)) = sim.inflight.first() {
            if phase == Phase::Main && attempt == 1 && !job.tasks[t].always {
                for need in &job.tasks[t].needs {
                    let dep = &sim.run.tasks[need.task].main;
                    let allow = job.tasks[need.task].allow_failure;
                    let holds = need.conditions.iter().any(|c| match c {
                        Condition::Success => dep.status == TaskStatus::Succeeded || (allow && dep.status.is_failure()),
                        Condition::Failure => dep.status.is_failure(),
                        Condition::Always => true,
                        Condition::Skipped => dep.status == TaskStatus::Skipped,
                        Condition::ExitCodes(cs) => dep.exit_code().is_some_and(|c| cs.contains(&c)),
                    });
                    prop_assert!(holds, "t{} dispatched though its need on t{} does not hold", t, need.task);
                }
            }
            sim.inflight.remove(0);
            let code = codes.next().unwrap_or(0);
            let d = sim.run.apply(Event::TaskFinished { task: t, attempt, phase, exit: Exit::Code(code), outputs: BTreeMap::new() }, sim.now).expect("accepted");
            sim.absorb(d);
            if sim.inflight.is_empty() && !sim.run.status.is_terminal() {
                sim.advance(Duration::from_secs(3600));
            }
        }
        prop_assert!(sim.run.status.is_terminal());
    }
}

//! Black-box tests of `ganger run`: one fixture per scheduling rule, asserted
//! through the `--json` run record, exit codes and files the scripts write.
//! Nothing here waits on a timer for synchronisation: concurrency is proven
//! by tasks waiting (bounded) for each other's marker files, and signals are
//! sent once a marker shows the task has started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Case, Run, position, wait_for_file};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

fn interrupt(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("send SIGINT to ganger");
}

/// The keys of the record's `tasks` object in the order they were printed
/// (serde_json's `Value` would sort them).
fn task_order(json_text: &str) -> Vec<String> {
    struct Top(Vec<String>);
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    impl<'de> serde::Deserialize<'de> for Top {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Top;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a run record")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                    let mut tasks = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        if k == "tasks" {
                            tasks = map.next_value::<Keys>()?.0;
                        } else {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(Top(tasks))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Top>(json_text)
        .expect("run record")
        .0
}

fn attempts(run: &Run, task: &str) -> Vec<(String, Value)> {
    run.task(task)["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("`{task}` has no attempts array\n{run}"))
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap_or("?").to_owned(),
                a["exit_code"].clone(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- ordering

#[test]
fn independent_tasks_start_in_parallel() {
    let run = Case::new("parallel.yml").arg("--slots").arg("2").run();
    run.expect_code(0).expect(
        "succeeded",
        &[("left", "succeeded"), ("right", "succeeded")],
    );
}

#[test]
fn needs_order_is_respected() {
    let run = Case::new("needs_order.yml").arg("--slots").arg("2").run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("a", "succeeded"),
            ("b", "succeeded"),
            ("c", "succeeded"),
            ("d", "succeeded"),
        ],
    );
    let trace = run.trace();
    assert_eq!(trace.len(), 8, "each task ran once\n{run}");
    for (up, down) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")] {
        assert!(
            position(&trace, &format!("end {up}")) < position(&trace, &format!("start {down}")),
            "`{down}` started before `{up}` ended\n{run}"
        );
    }
}

#[test]
fn record_lists_tasks_in_declaration_order() {
    let run = Case::new("needs_order.yml").run();
    run.expect_code(0);
    assert_eq!(task_order(&run.out.stdout), ["d", "b", "a", "c"], "\n{run}");
    assert_eq!(run.record["job"], "diamond");
    assert_eq!(run.record["reason"], Value::Null);
    assert_eq!(run.record["params"]["dir"], run.dir().display().to_string());
    for key in ["id", "created_at", "started_at", "finished_at"] {
        assert!(run.record[key].is_string(), "`{key}` missing\n{run}");
    }
}

// -------------------------------------------------------------- conditions

#[test]
fn condition_success() {
    let run = Case::new("cond_success.yml").no_dir().run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("ok", "succeeded"),
            ("bad", "failed"),
            ("after_ok", "succeeded"),
            ("after_bad", "skipped"),
            ("after_both_list_form", "skipped"),
        ],
    );
}

#[test]
fn condition_failure_reacts_without_absorbing() {
    let run = Case::new("cond_failure.yml").no_dir().run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("ok", "succeeded"),
            ("bad", "failed"),
            ("on_bad", "succeeded"),
            ("on_ok", "skipped"),
        ],
    );
}

#[test]
fn condition_always() {
    let run = Case::new("cond_always.yml").no_dir().run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("ok", "succeeded"),
            ("bad", "failed"),
            ("gate", "skipped"),
            ("after_ok", "succeeded"),
            ("after_bad", "succeeded"),
            ("after_gate", "succeeded"),
        ],
    );
}

#[test]
fn condition_skipped_and_skip_propagation() {
    let run = Case::new("cond_skipped.yml").no_dir().run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("gate", "skipped"),
            ("ran", "succeeded"),
            ("when_gate_skipped", "succeeded"),
            ("when_gate_succeeded", "skipped"),
            ("when_ran_skipped", "skipped"),
            ("downstream_of_skipped", "skipped"),
        ],
    );
}

#[test]
fn condition_exit_codes() {
    let run = Case::new("cond_exit_codes.yml").no_dir().run();
    // `needs: {probe: {exit_codes: [3]}}` reacts to the code; only the task's
    // own `on_exit_code` makes it a declared branch, so the run still fails.
    run.expect_code(1).expect(
        "failed",
        &[
            ("probe", "failed"),
            ("on_three", "succeeded"),
            ("on_four_or_five", "skipped"),
        ],
    );
    assert_eq!(run.task("probe")["exit_code"], 3, "\n{run}");
}

// ------------------------------------------------------------ on_* sugar

#[test]
fn on_success_routes_a_zero_exit() {
    let run = Case::new("sugar.yml").no_dir().param("code", "0").run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("probe", "succeeded"),
            ("deploy", "succeeded"),
            ("fix", "skipped"),
            ("cleanup", "skipped"),
        ],
    );
}

#[test]
fn on_exit_code_routes_a_declared_code_and_the_run_succeeds() {
    let run = Case::new("sugar.yml").no_dir().param("code", "101").run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("probe", "failed"),
            ("fix", "succeeded"),
            ("deploy", "skipped"),
            // A routed code is the branch taken, not a failure to react to.
            ("cleanup", "skipped"),
        ],
    );
    assert_eq!(run.task("probe")["exit_code"], 101, "\n{run}");
}

#[test]
fn on_failure_routes_an_unrouted_code_and_the_run_fails() {
    let run = Case::new("sugar.yml").no_dir().param("code", "7").run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("probe", "failed"),
            ("cleanup", "succeeded"),
            ("deploy", "skipped"),
            ("fix", "skipped"),
        ],
    );
    assert_eq!(run.task("probe")["exit_code"], 7, "\n{run}");
}

// ---------------------------------------------------------------------- if

#[test]
fn if_false_skips_and_if_true_runs() {
    let run = Case::new("if.yml").no_dir().run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("prod_only", "skipped"),
            ("dev_only", "succeeded"),
            ("after_prod", "skipped"),
        ],
    );
    let run = Case::new("if.yml").no_dir().param("env", "prod").run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("prod_only", "succeeded"),
            ("dev_only", "skipped"),
            ("after_prod", "succeeded"),
        ],
    );
}

// ---------------------------------------------------- allow_failure, always

#[test]
fn allow_failure_does_not_fail_the_run() {
    let run = Case::new("allow_failure.yml").no_dir().run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("flaky", "failed"),
            ("next", "succeeded"),
            ("on_flaky_failure", "succeeded"),
        ],
    );
    assert_eq!(run.task("flaky")["exit_code"], 4, "\n{run}");
}

#[test]
fn always_runs_after_a_failure() {
    let run = Case::new("always.yml").job("after_failure").run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("build", "failed"),
            ("test", "skipped"),
            ("cleanup", "succeeded"),
        ],
    );
    assert!(run.dir().join("cleaned").exists(), "\n{run}");
}

#[test]
fn always_runs_after_a_cancel_and_exit_is_130() {
    let case = Case::new("always.yml")
        .job("after_cancel")
        .arg("--grace")
        .arg("1s");
    let mut ganger = case.spawn();
    wait_for_file(&case.dir().join("work.started"), &mut ganger);
    interrupt(ganger.pid());
    let out = ganger.wait();
    let run = Run::new(case, out);
    run.expect_code(130).expect(
        "cancelled",
        &[
            ("work", "cancelled"),
            ("later", "cancelled"),
            ("cleanup", "succeeded"),
        ],
    );
    assert!(run.dir().join("cleaned").exists(), "\n{run}");
    assert!(!run.dir().join("later.ran").exists(), "\n{run}");
}

#[test]
fn a_second_interrupt_kills_what_the_first_let_finish() {
    let case = Case::new("cancel.yml").arg("--grace").arg("1s");
    let mut ganger = case.spawn();
    wait_for_file(&case.dir().join("work.started"), &mut ganger);
    interrupt(ganger.pid());
    // The first Ctrl-C lets the `always` clean-up start...
    wait_for_file(&case.dir().join("cleanup.started"), &mut ganger);
    // ...the second one stops it too.
    interrupt(ganger.pid());
    let out = ganger.wait();
    let run = Run::new(case, out);
    run.expect_code(130).expect(
        "cancelled",
        &[("work", "cancelled"), ("cleanup", "cancelled")],
    );
}

// ----------------------------------------------------------------- retries

#[test]
fn retry_2_succeeds_on_attempt_3() {
    let run = Case::new("retry.yml").job("twice").run();
    run.expect_code(0)
        .expect("succeeded", &[("flaky", "succeeded")]);
    let flaky = run.task("flaky");
    assert_eq!(flaky["attempt"], 3, "\n{run}");
    assert_eq!(flaky["exit_code"], 0, "\n{run}");
    assert_eq!(
        attempts(&run, "flaky"),
        [
            ("failed".to_owned(), json!(1)),
            ("failed".to_owned(), json!(1)),
            ("succeeded".to_owned(), json!(0)),
        ],
        "\n{run}"
    );
    let numbers: Vec<&Value> = flaky["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["number"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2), &json!(3)], "\n{run}");
    assert_eq!(
        run.trace(),
        ["attempt 1 run 1", "attempt 2 run 2", "attempt 3 run 3"],
        "GANGER_ATTEMPT counts attempts\n{run}"
    );
    // One log per attempt, holding that attempt's output.
    let logs = run.case.workdir().join(".ganger/logs");
    for n in 1..=3 {
        let log = std::fs::read_to_string(logs.join(format!("flaky.{n}.log"))).unwrap_or_default();
        assert!(
            log.ends_with(&format!(" out try {n}\n")),
            "attempt {n} log: {log:?}\n{run}"
        );
    }
}

#[test]
fn retry_1_fails_after_2_attempts() {
    let run = Case::new("retry.yml").job("once").run();
    run.expect_code(1).expect("failed", &[("flaky", "failed")]);
    assert_eq!(run.task("flaky")["attempt"], 2, "\n{run}");
    assert_eq!(
        attempts(&run, "flaky"),
        [
            ("failed".to_owned(), json!(1)),
            ("failed".to_owned(), json!(1)),
        ],
        "\n{run}"
    );
    assert_eq!(run.lines("count"), ["2"], "exactly two runs\n{run}");
}

#[test]
fn retry_policy_with_backoff_stops_at_first_success() {
    let run = Case::new("retry.yml").job("policy").run();
    run.expect_code(0)
        .expect("succeeded", &[("flaky", "succeeded")]);
    assert_eq!(run.task("flaky")["attempt"], 3, "\n{run}");
    assert_eq!(run.task("flaky")["retry_at"], Value::Null, "\n{run}");
    assert_eq!(run.lines("count"), ["3"], "\n{run}");
}

// ----------------------------------------------------------------- timeout

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let run = Case::new("timeout.yml").arg("--grace").arg("1s").run();
    run.expect_code(1).expect(
        "failed",
        &[("spawner", "timed_out"), ("check", "succeeded")],
    );
    let spawner = run.task("spawner");
    assert_eq!(spawner["attempt"], 1, "\n{run}");
    assert_eq!(spawner["attempts"][0]["status"], "timed_out", "\n{run}");
    let pids: Vec<i32> = run
        .lines("pids")
        .iter()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 5, "the script recorded every child\n{run}");
    // Checked inside the run, by the task that runs once `spawner` ended...
    assert!(run.dir().join("checked").exists(), "\n{run}");
    assert_eq!(
        run.lines("alive"),
        Vec::<String>::new(),
        "children outlived their timed-out task\n{run}"
    );
    // ...and after ganger exited.
    let survivors: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "still alive: {survivors:?}\n{run}");
}

// ----------------------------------------------------------------- outputs

#[test]
fn outputs_pass_downstream() {
    let run = Case::new("outputs.yml").no_dir().run();
    run.expect_code(0).expect(
        "succeeded",
        &[("producer", "succeeded"), ("consumer", "succeeded")],
    );
    assert_eq!(
        run.task("producer")["outputs"],
        json!({"version": "1.2.3", "greeting": "hello world"}),
        "\n{run}"
    );
    assert_eq!(
        run.task("consumer")["outputs"],
        json!({"seen": "hello world", "tag": "v1.2.3"}),
        "\n{run}"
    );
}

// --------------------------------------------------------------- injection

#[test]
fn param_values_never_execute() {
    for (i, template) in [
        "$(touch {})",
        "; touch {}",
        "`touch {}`",
        "' ; touch {} ; '",
        "\" ; touch {} ; \"",
        "x && touch {} #",
        "$(touch {}) {{ 7 * 7 }}",
    ]
    .into_iter()
    .enumerate()
    {
        let case = Case::new("inject.yml");
        let target = case.dir().join(format!("pwned-{i}"));
        let value = template.replace("{}", &target.display().to_string());
        let run = case.param("value", &value).run();
        run.expect_code(0)
            .expect("succeeded", &[("echo", "succeeded")]);
        assert!(
            !target.exists(),
            "the value `{value}` was executed as shell\n{run}"
        );
        assert_eq!(
            run.lines("templated"),
            std::slice::from_ref(&value),
            "\n{run}"
        );
        assert_eq!(run.lines("env"), std::slice::from_ref(&value), "\n{run}");
        assert!(
            run.out
                .stderr
                .lines()
                .any(|l| l == format!("[echo] {value}")),
            "the value is echoed literally as a progress line on stderr\n{run}"
        );
        assert_eq!(run.record["params"]["value"], value.as_str(), "\n{run}");
    }
}

// -------------------------------------------------------------------- undo

#[test]
fn undo_runs_in_reverse_order_when_a_later_task_fails() {
    let run = Case::new("undo.yml").run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("a", "succeeded"),
            ("b", "succeeded"),
            ("no_undo", "succeeded"),
            ("c", "failed"),
            ("skipped_undo", "skipped"),
        ],
    );
    let trace = run.trace();
    assert_eq!(trace.len(), 6, "\n{run}");
    assert_eq!(trace[0], "do a", "\n{run}");
    assert_eq!(trace[3], "fail c", "\n{run}");
    assert_eq!(trace[4..], ["undo b", "undo a"], "newest first\n{run}");
    assert_eq!(run.task("a")["undo"]["status"], "succeeded", "\n{run}");
    assert_eq!(run.task("b")["undo"]["status"], "succeeded", "\n{run}");
    for never in ["no_undo", "c", "skipped_undo"] {
        assert_eq!(run.task(never)["undo"], Value::Null, "`{never}`\n{run}");
    }
    assert!(
        run.out.stderr.lines().any(|l| l == "[b:undo] undoing b"),
        "undo output is labelled\n{run}"
    );
    let log = run.case.workdir().join(".ganger/logs/b.undo.log");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.lines().any(|l| is_log_line(l, "out", "undoing b")),
        "undo log:\n{log}\n{run}"
    );
}

#[test]
fn undo_does_not_run_when_the_run_succeeds() {
    let run = Case::new("undo_success.yml").run();
    run.expect_code(0)
        .expect("succeeded", &[("a", "succeeded"), ("b", "succeeded")]);
    assert_eq!(run.trace(), ["do a", "do b"], "\n{run}");
    assert_eq!(run.task("a")["undo"], Value::Null, "\n{run}");
}

// --------------------------------------------------------------- fail_fast

#[test]
fn fail_fast_cancels_running_and_pending_tasks() {
    let run = Case::new("fail_fast.yml")
        .arg("--slots")
        .arg("2")
        .arg("--grace")
        .arg("1s")
        .run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("boom", "failed"),
            ("slow", "cancelled"),
            ("after_slow", "cancelled"),
        ],
    );
    assert_eq!(run.task("boom")["exit_code"], 1, "\n{run}");
    assert!(!run.dir().join("after_slow.ran").exists(), "\n{run}");
}

// ---------------------------------------------------------- template error

#[test]
fn a_template_error_fails_the_task_without_running_it() {
    let run = Case::new("template_error.yml").run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("up", "succeeded"),
            ("broken", "failed"),
            ("after", "skipped"),
        ],
    );
    let broken = run.task("broken");
    assert_eq!(
        broken["attempt"], 1,
        "a template error is not retried\n{run}"
    );
    let reason = broken["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("template"), "reason: {reason}\n{run}");
    assert!(!run.dir().join("broken.ran").exists(), "\n{run}");
}

// ------------------------------------------------------------------ params

#[test]
fn params_are_checked_before_anything_runs() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("version", "1"), ("nope", "x")], "no param `nope`"),
        (&[("branch", "dev")], "param `version` is required"),
        (
            &[("version", "1"), ("branch", "Main_1")],
            "does not match the pattern",
        ),
    ];
    for (params, message) in cases {
        let mut case = Case::new("params.yml");
        for (k, v) in params {
            case = case.param(k, v);
        }
        let run = case.run();
        run.expect_code(2);
        assert!(
            run.out.stderr.contains(message),
            "expected `{message}`\n{run}"
        );
        assert!(!run.dir().join("ran").exists(), "a task ran\n{run}");
    }
    let run = Case::new("params.yml").param("version", "1.0").run();
    run.expect_code(0);
    assert_eq!(
        run.record["params"],
        json!({"dir": run.dir().display().to_string(), "branch": "main", "version": "1.0"}),
        "defaults are filled in\n{run}"
    );
}

#[test]
fn an_invalid_file_is_exit_2_with_positions() {
    let run = Case::file(common::fixture("invalid/cycle.yml"))
        .no_dir()
        .run();
    run.expect_code(2);
    assert!(
        run.out
            .stderr
            .contains(":9:17: jobs.loop.tasks.b.needs[0]: dependency cycle"),
        "\n{run}"
    );
}

#[test]
fn job_selection() {
    // Several jobs: the job must be named.
    let run = Case::new("two_jobs.yml").no_dir().run();
    run.expect_code(2);
    let run = Case::new("two_jobs.yml").no_dir().job("nope").run();
    run.expect_code(2);
    assert!(run.out.stderr.contains("nope"), "\n{run}");
    let run = Case::new("two_jobs.yml").no_dir().job("second").run();
    run.expect_code(0);
    assert_eq!(run.record["job"], "second");
}

// ------------------------------------------------- environment and output

/// `<RFC3339 UTC with milliseconds> <stream> <text>`.
fn is_log_line(line: &str, stream: &str, text: &str) -> bool {
    let Some((ts, rest)) = line.split_once(' ') else {
        return false;
    };
    let b = ts.as_bytes();
    let shape = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && ts
            .bytes()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit());
    shape && rest == format!("{stream} {text}")
}

#[test]
fn task_environment_workspace_logs_and_plain_output() {
    let case = Case::new("env.yml").plain();
    let mut cmd = case.command();
    cmd.env("CALLER_VAR", "caller")
        .env("GANGER_TOKEN", "secret");
    let out = common::output(cmd);
    let run = Run::new(case, out);
    run.expect_code(0);
    let env: BTreeMap<String, String> = run
        .lines("env")
        .into_iter()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let workspace = run
        .case
        .workdir()
        .join("show")
        .canonicalize()
        .expect("workspace");
    let canon = |p: &str| Path::new(p).canonicalize().ok();
    assert_eq!(canon(&env["pwd"]), Some(workspace.clone()), "cwd\n{run}");
    assert_eq!(canon(&env["workspace"]), Some(workspace), "\n{run}");
    assert!(!env["run_id"].is_empty(), "\n{run}");
    assert_eq!(env["job"], "env");
    assert_eq!(env["task"], "show");
    assert_eq!(env["attempt"], "1");
    assert_eq!(env["from_job"], "job");
    assert_eq!(env["overridden"], "task", "task env overrides job env");
    assert_eq!(
        env["from_caller"], "caller",
        "the caller's env is passed on"
    );
    assert_eq!(env["token"], "unset", "GANGER_TOKEN is not passed on");
    assert_eq!(env["who"], "world");

    let stdout: Vec<&str> = run.out.stdout.lines().collect();
    assert!(stdout.contains(&"[show] hello world"), "\n{run}");
    assert!(stdout.contains(&"[show] == running (attempt 1)"), "\n{run}");
    assert!(
        stdout.iter().any(|l| l.starts_with("[show] == succeeded")),
        "\n{run}"
    );
    let both = format!("{}\n{}", run.out.stdout, run.out.stderr);
    assert!(
        both.lines().any(|l| l == "[show] oops"),
        "stderr lines too\n{run}"
    );

    let log = run.case.workdir().join(".ganger/logs/show.1.log");
    let log = std::fs::read_to_string(&log).expect("the attempt's log file");
    assert!(
        log.lines().any(|l| is_log_line(l, "out", "hello world")),
        "log:\n{log}"
    );
    assert!(
        log.lines().any(|l| is_log_line(l, "err", "oops")),
        "log:\n{log}"
    );
}

#[test]
fn plain_output_shows_failures() {
    let run = Case::new("cond_failure.yml").no_dir().plain().run();
    run.expect_code(1);
    assert!(
        run.out
            .stdout
            .lines()
            .any(|l| l.starts_with("[bad] == failed: exit code 1")),
        "\n{run}"
    );
}

// ------------------------------------------------------- executor warnings

#[test]
fn executor_warnings_are_shown_before_the_final_state() {
    let run = Case::new("warnings.yml").no_dir().plain().run();
    run.expect_code(0);
    let lines: Vec<&str> = run.out.stdout.lines().collect();
    let warning = lines
        .iter()
        .position(|l| {
            l.starts_with("[bad_output] ganger: warning: output file line 1:")
                && l.contains("\"not a pair\"")
        })
        .unwrap_or_else(|| panic!("no warning naming the line\n{run}"));
    let done = lines
        .iter()
        .position(|l| l.starts_with("[bad_output] == succeeded"))
        .unwrap_or_else(|| panic!("no final state\n{run}"));
    assert!(warning < done, "the warning comes first\n{run}");
    assert!(
        !lines.iter().any(|l| l.contains("line 2")),
        "only the bad line is named\n{run}"
    );

    // With --json the warning goes to stderr with the rest of the progress,
    // and the good line still became an output.
    let run = Case::new("warnings.yml").no_dir().run();
    run.expect_code(0);
    assert_eq!(run.task("bad_output")["outputs"], json!({"good": "yes"}));
    assert!(
        run.out
            .stderr
            .lines()
            .any(|l| l.starts_with("[bad_output] ganger: warning: ") && l.contains("not a pair")),
        "\n{run}"
    );
}

// ----------------------------------------------------------------- signals

fn pid_file(case: &Case) -> i32 {
    std::fs::read_to_string(case.dir().join("pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn sighup_cancels_like_ctrl_c_and_leaves_no_process() {
    let case = Case::new("signals.yml").arg("--grace").arg("1s");
    let mut ganger = case.spawn();
    wait_for_file(&case.dir().join("work.started"), &mut ganger);
    let pid = pid_file(&case);
    assert!(alive(pid), "the task's child runs");
    kill(Pid::from_raw(ganger.pid()), Signal::SIGHUP).expect("send SIGHUP to ganger");
    let out = ganger.wait();
    let run = Run::new(case, out);
    // Graceful: the `always` clean-up still runs.
    run.expect_code(130).expect(
        "cancelled",
        &[("work", "cancelled"), ("cleanup", "succeeded")],
    );
    assert!(!alive(pid), "the task's child outlived ganger\n{run}");
    assert!(
        run.record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("hangup")),
        "\n{run}"
    );
}

#[test]
fn sigquit_stops_at_once() {
    let case = Case::new("signals.yml").arg("--grace").arg("1s");
    let mut ganger = case.spawn();
    wait_for_file(&case.dir().join("work.started"), &mut ganger);
    let pid = pid_file(&case);
    kill(Pid::from_raw(ganger.pid()), Signal::SIGQUIT).expect("send SIGQUIT to ganger");
    let out = ganger.wait();
    let run = Run::new(case, out);
    // Forced: not even the `always` clean-up runs.
    run.expect_code(130).expect(
        "cancelled",
        &[("work", "cancelled"), ("cleanup", "cancelled")],
    );
    assert!(!run.dir().join("cleanup.ran").exists(), "\n{run}");
    assert!(!alive(pid), "the task's child outlived ganger\n{run}");
}

// ------------------------------------------------------- retries, plainly

#[test]
fn plain_output_shows_an_attempt_retried_at_once() {
    let run = Case::new("retry.yml").job("once").plain().run();
    run.expect_code(1);
    let lines: Vec<&str> = run
        .out
        .stdout
        .lines()
        .filter(|l| l.starts_with("[flaky] =="))
        .collect();
    assert_eq!(lines.len(), 4, "\n{run}");
    assert_eq!(lines[0], "[flaky] == running (attempt 1 of 2)", "\n{run}");
    assert_eq!(
        lines[1], "[flaky] == failed: exit code 1 (attempt 1 of 2), retrying",
        "\n{run}"
    );
    assert_eq!(lines[2], "[flaky] == running (attempt 2 of 2)", "\n{run}");
    assert!(
        lines[3].starts_with("[flaky] == failed: exit code 1 (after "),
        "\n{run}"
    );
}

#[test]
fn plain_output_shows_the_retry_delay_as_configured() {
    let run = Case::new("retry.yml").job("delayed").plain().run();
    run.expect_code(1);
    assert!(
        run.out
            .stdout
            .lines()
            .any(|l| l == "[flaky] == failed: exit code 1; retrying in 1s (attempt 2 of 2)"),
        "\n{run}"
    );
    let run = Case::new("retry.yml").job("policy").plain().run();
    run.expect_code(0);
    let waits: Vec<&str> = run
        .out
        .stdout
        .lines()
        .filter_map(|l| l.split_once("retrying in ").map(|(_, w)| w))
        .collect();
    assert_eq!(
        waits,
        ["50ms (attempt 2 of 5)", "100ms (attempt 3 of 5)"],
        "exponential backoff\n{run}"
    );
}

// ------------------------------------------------------------ compensation

#[test]
fn the_summary_names_a_failed_undo() {
    let run = Case::new("undo_outcomes.yml")
        .no_dir()
        .job("undo_fails")
        .plain()
        .run();
    run.expect_code(1);
    let summary: Vec<&str> = run
        .out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("run "))
        .collect();
    assert!(
        summary.contains(&"  undo failed: `left` (exit code 3)"),
        "\n{run}"
    );
    assert!(
        !summary.iter().any(|l| l.contains("`right`")),
        "a successful undo is not listed\n{run}"
    );
}

#[test]
fn ctrl_c_during_undo_says_why_it_is_ignored() {
    let case = Case::new("undo_outcomes.yml").job("undo_waits").plain();
    let mut ganger = case.spawn();
    wait_for_file(&case.dir().join("undo.started"), &mut ganger);
    interrupt(ganger.pid());
    ganger.wait_for_output("ganger: compensation (undo) is running");
    std::fs::write(case.dir().join("release"), "").expect("release the undo");
    let out = ganger.wait();
    let run = Run::new(case, out);
    // The interrupt changed nothing: the undo finished and the run failed.
    run.expect_code(1);
    let stdout = &run.out.stdout;
    assert!(
        stdout.lines().any(|l| l
            == "ganger: compensation (undo) is running and only a forced stop interrupts it; \
                press Ctrl-C again to stop it"),
        "\n{run}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("[a:undo] == succeeded")),
        "\n{run}"
    );
}

// -------------------------------------------------------------- arguments

#[test]
fn zero_slots_are_rejected() {
    let run = Case::new("parallel.yml").arg("--slots").arg("0").run();
    run.expect_code(2);
    assert!(run.out.stderr.contains("--slots"), "\n{run}");
    assert!(!run.dir().join("left.started").exists(), "\n{run}");
}

// ----------------------------------------------------------------- summary

#[test]
fn the_summary_names_the_logs_only_when_there_are_some() {
    let run = Case::new("undo_success.yml").plain().run();
    run.expect_code(0);
    assert!(
        run.out
            .stdout
            .lines()
            .any(|l| l == "  logs: none (no task printed anything)"),
        "\n{run}"
    );
    let run = Case::new("env.yml").plain().run();
    run.expect_code(0);
    let logs = format!(
        "  logs: {}",
        run.case.workdir().join(".ganger/logs").display()
    );
    assert!(run.out.stdout.lines().any(|l| l == logs), "\n{run}");
}

#[test]
fn executors_this_version_cannot_run_are_refused_before_anything_runs() {
    let run = Case::new("unsupported.yml").run();
    run.expect_code(2);
    assert!(
        run.out
            .stderr
            .contains("task `package` uses executor `http`"),
        "\n{run}"
    );
    assert!(!run.dir().join("ran").exists(), "a task ran\n{run}");
}

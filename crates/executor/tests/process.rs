//! Runs real processes through the executor. Nothing here sleeps to
//! synchronise: tests wait on files, pids and the executor's own return.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganger_executor::{
    KillMode, LogLine, LogSink, Outcome, ProcessSpec, RunningProcess, SpawnError, Stream,
    Termination, spawn,
};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::time::Instant;

/// Upper bound for anything a test waits for; far above what a healthy run
/// needs, only there so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Collect(Mutex<Vec<LogLine>>);

impl LogSink for Collect {
    fn line(&self, line: &LogLine) {
        self.0.lock().expect("sink lock").push(line.clone());
    }
}

impl Collect {
    fn lines(&self) -> Vec<LogLine> {
        self.0.lock().expect("sink lock").clone()
    }

    fn texts(&self, stream: Stream) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text)
            .collect()
    }
}

struct Fixture {
    dir: TempDir,
    sink: Arc<Collect>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            sink: Arc::default(),
        }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("runs/r1/ws")
    }

    fn spec(&self, script: &str) -> ProcessSpec {
        ProcessSpec {
            script: script.to_owned(),
            env: vec![(
                "PATH".to_owned(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned()),
            )],
            workspace: self.workspace(),
            log_path: self.dir.path().join("runs/r1/logs/attempt-1.log"),
            output_path: self.dir.path().join("runs/r1/attempt-1/output"),
            kill_grace: Duration::from_secs(10),
            log_cap: None,
        }
    }

    fn start(&self, spec: ProcessSpec) -> RunningProcess {
        spawn(spec, self.sink.clone()).expect("spawn")
    }

    async fn run(&self, script: &str) -> Outcome {
        self.run_spec(self.spec(script)).await
    }

    async fn run_spec(&self, spec: ProcessSpec) -> Outcome {
        let (_requests, kill) = watch::channel(None);
        bounded(self.start(spec).wait(kill)).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.spec("").log_path).expect("log file")
    }

    /// Waits until a file in the workspace holds `lines` complete lines and
    /// returns them.
    async fn lines_in(&self, name: &str, lines: usize) -> Vec<String> {
        let path = self.workspace().join(name);
        wait_until(|| {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|text| text.ends_with('\n') && text.lines().count() == lines)
                .map(|text| text.lines().map(str::to_owned).collect())
        })
        .await
    }
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out")
}

/// Polls a condition; the executor offers no notification for files a
/// script writes.
async fn wait_until<T>(mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Alive = /proc/<pid> exists and is not a zombie.
fn alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .expect("stat state");
    state != "Z"
}

/// Live (non-zombie) members of process group `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between read_dir and this read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[i + 1..].split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X") {
            members.push(pid);
        }
    }
    members
}

fn assert_all_dead(pids: &[String]) {
    assert!(!pids.is_empty());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_reach_file_and_sink_in_order() {
    let fx = Fixture::new();
    let outcome = fx
        .run("for i in $(seq 1 200); do echo \"o$i\"; echo \"e$i\" >&2; done; printf 'tail'")
        .await;
    assert_eq!(outcome.termination, Termination::Exited(0));

    let expected_out: Vec<String> = (1..=200)
        .map(|i| format!("o{i}"))
        .chain(["tail".to_owned()])
        .collect();
    let expected_err: Vec<String> = (1..=200).map(|i| format!("e{i}")).collect();
    assert_eq!(fx.sink.texts(Stream::Stdout), expected_out);
    assert_eq!(fx.sink.texts(Stream::Stderr), expected_err);

    // The file holds the same lines in the same order as the sink saw them.
    let log = fx.log();
    let sink = fx.sink.lines();
    assert_eq!(log.lines().count(), sink.len());
    for (file_line, line) in log.lines().zip(&sink) {
        let (at, rest) = file_line.split_once(' ').expect("timestamp");
        let (tag, text) = rest.split_once(' ').expect("tag");
        // e.g. 2026-11-23T05:12:01.123Z
        assert_eq!(at.len(), 24, "{at}");
        assert_eq!(&at[19..20], ".");
        assert!(at.ends_with('Z'));
        assert_eq!(at, format!("{:.3}", line.at));
        at.parse::<jiff::Timestamp>().expect("RFC 3339");
        let stream_tag = match line.stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        assert_eq!(tag, stream_tag);
        assert_eq!(text, line.text);
    }
    // The unterminated last line is still written, newline added.
    assert!(log.contains(" out tail\n"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_are_normalised() {
    let fx = Fixture::new();
    let outcome = fx
        .run("printf 'a\\r\\nb\\n'; printf '\\377x\\n'; head -c 70000 /dev/zero | tr '\\0' y")
        .await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    let out = fx.sink.texts(Stream::Stdout);
    assert_eq!(out[..3], ["a", "b", "\u{fffd}x"]);
    assert_eq!(out[3], "y".repeat(64 * 1024));
    assert_eq!(out[4], "y".repeat(70000 - 64 * 1024));
    assert_eq!(out.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_is_exactly_the_given_one() {
    let fx = Fixture::new();
    let mut spec =
        fx.spec("tr '\\0' '\\n' < /proc/$$/environ; echo \"cwd=$(pwd)\" >> \"$GANGER_OUTPUT\"");
    spec.env.push(("FOO".to_owned(), "bar baz".to_owned()));
    let output_path = spec.output_path.clone();
    let outcome = fx.run_spec(spec).await;
    assert_eq!(outcome.termination, Termination::Exited(0));

    let mut names = Vec::new();
    for line in fx.sink.texts(Stream::Stdout) {
        let (name, value) = line.split_once('=').expect("NAME=value");
        match name {
            "FOO" => assert_eq!(value, "bar baz"),
            "GANGER_WORKSPACE" => assert_eq!(Path::new(value), fx.workspace()),
            "GANGER_OUTPUT" => assert_eq!(Path::new(value), output_path),
            _ => {}
        }
        names.push(name.to_owned());
    }
    names.sort();
    assert_eq!(names, ["FOO", "GANGER_OUTPUT", "GANGER_WORKSPACE", "PATH"]);
    // The workspace was created and is the script's working directory.
    assert_eq!(
        Path::new(&outcome.outputs["cwd"]),
        fx.workspace().canonicalize().expect("workspace")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_propagates() {
    let fx = Fixture::new();
    assert_eq!(fx.run("exit 3").await.termination, Termination::Exited(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn errexit_and_pipefail() {
    let fx = Fixture::new();
    assert_eq!(
        fx.run("false; echo after").await.termination,
        Termination::Exited(1)
    );
    let fx2 = Fixture::new();
    assert_eq!(
        fx2.run("false | true; echo after").await.termination,
        Termination::Exited(1)
    );
    assert!(fx.sink.lines().is_empty() && fx2.sink.lines().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_are_parsed_even_on_failure() {
    let fx = Fixture::new();
    let outcome = fx
        .run(
            r#"
            echo "a=1" >> "$GANGER_OUTPUT"
            echo "b=x=y" >> "$GANGER_OUTPUT"
            echo "not a pair" >> "$GANGER_OUTPUT"
            echo "a=2" >> "$GANGER_OUTPUT"
            echo "" >> "$GANGER_OUTPUT"
            echo "9x=1" >> "$GANGER_OUTPUT"
            echo "c= spaced " >> "$GANGER_OUTPUT"
            exit 4
            "#,
        )
        .await;
    assert_eq!(outcome.termination, Termination::Exited(4));
    let outputs: Vec<(&str, &str)> = outcome
        .outputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(outputs, [("a", "2"), ("b", "x=y"), ("c", " spaced ")]);
    assert_eq!(outcome.warnings.len(), 2, "{:?}", outcome.warnings);
    assert!(outcome.warnings[0].contains("line 3"));
    assert!(outcome.warnings[1].contains("line 6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_kill_reaches_background_jobs() {
    let fx = Fixture::new();
    let running =
        fx.start(fx.spec("sleep 300 & echo $! > pids; sleep 300 & echo $! >> pids; wait"));
    let pids = fx.lines_in("pids", 2).await;
    // Requested before `wait` is even called: it must still be honoured.
    let (requests, kill) = watch::channel(None);
    requests.send_replace(Some(KillMode::Graceful));
    let outcome = bounded(running.wait(kill)).await;
    assert_eq!(outcome.termination, Termination::Signaled(15));
    assert_all_dead(&pids);
}

#[tokio::test(flavor = "multi_thread")]
async fn background_jobs_die_with_a_normal_exit() {
    let fx = Fixture::new();
    // One job holds the output pipes, one does not: neither may survive.
    let outcome = fx
        .run("sleep 300 & echo $! > pids; sleep 300 >/dev/null 2>&1 & echo $! >> pids; exit 0")
        .await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_all_dead(&fx.lines_in("pids", 2).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ignored_is_followed_by_sigkill_after_grace() {
    let fx = Fixture::new();
    let mut spec = fx.spec("trap '' TERM; sleep 300 & echo $! > pids; wait");
    spec.kill_grace = Duration::from_millis(200);
    let running = fx.start(spec);
    let (requests, kill) = watch::channel(None);
    let waiting = tokio::spawn(running.wait(kill));
    let pids = fx.lines_in("pids", 1).await;

    let sent = Instant::now();
    requests.send_replace(Some(KillMode::Graceful));
    let outcome = bounded(waiting).await.expect("join");
    assert!(sent.elapsed() >= Duration::from_millis(200));
    assert_eq!(outcome.termination, Termination::Signaled(9));
    assert_all_dead(&pids);
}

/// A script whose leader dies on SIGTERM at once while the job it waits for
/// traps SIGTERM, takes a while to clean up and writes MARKER when done. The
/// job writes its pid to `pids` once its trap is installed.
fn trapping_job(cleanup: &str) -> String {
    format!(
        "bash -c 'trap \"{cleanup}\" TERM; echo $$ > pids; \
         while true; do sleep 0.1; done'\necho after\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn grace_outlives_a_leader_that_dies_first() {
    let fx = Fixture::new();
    let grace = Duration::from_secs(5);
    let mut spec = fx.spec(&trapping_job("sleep 1; echo flushed > MARKER; exit 0"));
    spec.kill_grace = grace;
    let running = fx.start(spec);
    let leader = running.pid();
    let (requests, kill) = watch::channel(None);
    let waiting = tokio::spawn(running.wait(kill));
    let mut pids = fx.lines_in("pids", 1).await;

    let sent = Instant::now();
    requests.send_replace(Some(KillMode::Graceful));
    let outcome = bounded(waiting).await.expect("join");
    // The shell died of the SIGTERM; its job used its grace to finish, and
    // `wait` returned once the group was gone, not at the end of the grace.
    assert_eq!(outcome.termination, Termination::Signaled(15));
    assert_eq!(
        std::fs::read_to_string(fx.workspace().join("MARKER")).expect("MARKER written"),
        "flushed\n"
    );
    assert!(sent.elapsed() < grace, "{:?}", sent.elapsed());
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_eq!(group_members(leader), Vec::<String>::new());
    pids.push(leader.to_string());
    assert_all_dead(&pids);
}

#[tokio::test(flavor = "multi_thread")]
async fn grace_after_the_leader_died_ends_in_sigkill() {
    let fx = Fixture::new();
    let grace = Duration::from_millis(300);
    let mut spec = fx.spec(&trapping_job(""));
    spec.kill_grace = grace;
    let running = fx.start(spec);
    let leader = running.pid();
    let (requests, kill) = watch::channel(None);
    let waiting = tokio::spawn(running.wait(kill));
    let pids = fx.lines_in("pids", 1).await;

    let sent = Instant::now();
    requests.send_replace(Some(KillMode::Graceful));
    let outcome = bounded(waiting).await.expect("join");
    assert!(sent.elapsed() >= grace, "{:?}", sent.elapsed());
    assert_eq!(outcome.termination, Termination::Signaled(15));
    assert_eq!(group_members(leader), Vec::<String>::new());
    assert_all_dead(&pids);
}

#[tokio::test(flavor = "multi_thread")]
async fn immediate_cuts_short_the_grace_of_a_dead_leader() {
    let fx = Fixture::new();
    let mut spec = fx.spec(&trapping_job("sleep 300; echo flushed > MARKER"));
    spec.kill_grace = Duration::from_secs(3600);
    let running = fx.start(spec);
    let leader = running.pid();
    let (requests, kill) = watch::channel(None);
    let waiting = tokio::spawn(running.wait(kill));
    let pids = fx.lines_in("pids", 1).await;

    requests.send_replace(Some(KillMode::Graceful));
    // The leader is gone (a zombie until `wait` reaps it) while its job sits
    // in its trap: `wait` is now in the grace that follows the leader.
    let leader_pid = leader.to_string();
    wait_until(|| (!alive(&leader_pid)).then_some(())).await;
    assert!(!waiting.is_finished());
    requests.send_replace(Some(KillMode::Immediate));
    let outcome = bounded(waiting).await.expect("join");
    assert_eq!(outcome.termination, Termination::Signaled(15));
    assert!(!fx.workspace().join("MARKER").exists());
    assert_eq!(group_members(leader), Vec::<String>::new());
    assert_all_dead(&pids);
}

#[tokio::test(flavor = "multi_thread")]
async fn immediate_kill() {
    let fx = Fixture::new();
    let running = fx.start(fx.spec("sleep 300 & echo $! > pids; wait"));
    let (requests, kill) = watch::channel(None);
    let waiting = tokio::spawn(running.wait(kill));
    let pids = fx.lines_in("pids", 1).await;
    requests.send_replace(Some(KillMode::Immediate));
    let outcome = bounded(waiting).await.expect("join");
    assert_eq!(outcome.termination, Termination::Signaled(9));
    assert_all_dead(&pids);
}

#[tokio::test(flavor = "multi_thread")]
async fn immediate_overrides_pending_graceful() {
    let fx = Fixture::new();
    let mut spec = fx.spec("trap '' TERM; sleep 300 & echo $! > pids; wait");
    spec.kill_grace = Duration::from_secs(3600);
    let running = fx.start(spec);
    let (requests, kill) = watch::channel(None);
    let waiting = tokio::spawn(running.wait(kill));
    let pids = fx.lines_in("pids", 1).await;
    requests.send_replace(Some(KillMode::Graceful));
    requests.send_replace(Some(KillMode::Immediate));
    // Far below the hour of grace: the Immediate request did it.
    let outcome = bounded(waiting).await.expect("join");
    assert_eq!(outcome.termination, Termination::Signaled(9));
    assert_all_dead(&pids);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_handle_kills_the_group() {
    let fx = Fixture::new();
    let running = fx.start(fx.spec("sleep 300 & echo $! > pids; wait"));
    let mut pids = fx.lines_in("pids", 1).await;
    pids.push(running.pid().to_string());
    drop(running);
    wait_until(|| pids.iter().all(|pid| !alive(pid)).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn log_cap_truncates_and_the_task_completes() {
    let fx = Fixture::new();
    let cap = 64 * 1024;
    let mut spec = fx.spec("seq 1 300000; echo done >&2");
    spec.log_cap = Some(cap);
    let outcome = fx.run_spec(spec).await;
    // `seq` finishing means the pipes were drained past the cap.
    assert_eq!(outcome.termination, Termination::Exited(0));

    let log = fx.log();
    let notice = format!("[ganger] log truncated: cap of {cap} bytes reached");
    let last = log.lines().last().expect("a line");
    assert!(last.ends_with(&format!(" err {notice}")), "{last}");
    assert!(log.len() as u64 <= cap + last.len() as u64 + 1);
    assert!(log.len() as u64 > cap - 100);
    assert_eq!(
        outcome.warnings,
        [format!("log truncated: cap of {cap} bytes reached")]
    );
    // The sink saw what the file holds, the notice included, and nothing
    // after it.
    let sink = fx.sink.lines();
    assert_eq!(sink.len(), log.lines().count());
    assert_eq!(sink.last().map(|l| l.text.as_str()), Some(notice.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn spawn_errors_name_the_path() {
    let fx = Fixture::new();
    let blocker = fx.dir.path().join("blocker");
    std::fs::write(&blocker, "a file, not a directory").expect("write");

    let mut spec = fx.spec("true");
    spec.workspace = blocker.join("ws");
    let error = spawn(spec, fx.sink.clone()).err().expect("must fail");
    assert!(matches!(error, SpawnError::Workspace { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&*blocker.join("ws").to_string_lossy()),
        "{error}"
    );

    // The log file is opened at the first line, so a bad log path does not
    // stop the task: its lines still reach the sink, and a warning names the path.
    let mut spec = fx.spec("echo still-seen");
    spec.log_path = blocker.join("attempt.log");
    let running = spawn(spec, fx.sink.clone()).expect("a bad log path is not a spawn error");
    let (_requests, kill) = tokio::sync::watch::channel(None);
    let outcome = running.wait(kill).await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(fx.sink.texts(Stream::Stdout), vec!["still-seen"]);
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("blocker/attempt.log")),
        "{:?}",
        outcome.warnings
    );

    let mut spec = fx.spec("true");
    spec.env.push(("A=B".to_owned(), "x".to_owned()));
    let error = spawn(spec, fx.sink.clone()).err().expect("must fail");
    assert!(error.to_string().contains("A=B"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_log_of_an_earlier_run_is_removed() {
    let fx = Fixture::new();
    let spec = fx.spec("true");
    let log_path = spec.log_path.clone();
    std::fs::create_dir_all(log_path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&log_path, "2020-01-01T00:00:00.000Z out earlier run\n").expect("write");
    let outcome = fx.run_spec(spec).await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    // Nothing printed, so no log file: certainly not the earlier one.
    assert!(!log_path.exists(), "stale log survived");

    // A log path that cannot be removed is a spawn error naming it.
    let spec = fx.spec("true");
    std::fs::create_dir_all(spec.log_path.join("sub")).expect("mkdir");
    let error = spawn(spec.clone(), fx.sink.clone())
        .err()
        .expect("must fail");
    assert!(matches!(error, SpawnError::LogFile { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&*spec.log_path.to_string_lossy()),
        "{error}"
    );
    assert!(spec.log_path.join("sub").is_dir());
}

#[tokio::test(flavor = "multi_thread")]
async fn large_script_runs_from_a_file() {
    let fx = Fixture::new();
    let script = format!("# {}\necho big-ok\necho \"$0\"\n", "x".repeat(120 * 1024));
    let outcome = fx.run(&script).await;
    assert_eq!(outcome.termination, Termination::Exited(0));
    let out = fx.sink.texts(Stream::Stdout);
    assert_eq!(out[0], "big-ok");
    assert!(out[1].ends_with("output.script.sh"), "{}", out[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn escaped_process_cannot_hang_wait() {
    let fx = Fixture::new();
    // setsid leaves the group but keeps the inherited stdout pipe. The
    // script waits for the pid file so the job has left the group before
    // the group kill that follows the exit.
    let running = fx.start(fx.spec(
        "setsid sh -c 'echo $$ > pids; exec sleep 300' & \
         until [ -s pids ]; do sleep 0.01; done; echo hi",
    ));
    let (_requests, kill) = watch::channel(None);
    let outcome = bounded(running.wait(kill)).await;
    let pids = fx.lines_in("pids", 1).await;
    for pid in &pids {
        // Clean up what the executor by design could not reach.
        let pid = nix::unistd::Pid::from_raw(pid.parse().expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(fx.sink.texts(Stream::Stdout), ["hi"]);
    assert!(
        outcome.warnings.iter().any(|w| w.contains("setsid")),
        "{:?}",
        outcome.warnings
    );
}

//! Shared helpers for the black-box tests: run the built `ganger` binary on a
//! fixture, with a deadline so a hang fails the test instead of the CI job.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod agent;
pub mod http;
pub mod process;
pub mod server;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long any single `ganger` invocation may take before the test gives up.
/// Generous: this is a hang detector, not a timing assertion.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub fn ganger() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ganger"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("GANGER_TOKEN");
    cmd
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// What a finished `ganger` process left behind.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("ganger died by a signal: {:?}\n{self}", self.status))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A started `ganger` whose output is drained in the background.
pub struct Running {
    pub child: Child,
    stdout: Drained,
    stderr: Drained,
}

/// A pipe read to its end in the background; what arrived so far can be
/// looked at while it runs.
struct Drained {
    so_far: Arc<Mutex<Vec<u8>>>,
    reader: thread::JoinHandle<()>,
}

impl Drained {
    fn new(mut r: impl Read + Send + 'static) -> Drained {
        let so_far = Arc::new(Mutex::new(Vec::new()));
        let buf = Arc::clone(&so_far);
        let reader = thread::spawn(move || {
            let mut chunk = [0; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        Drained { so_far, reader }
    }

    fn so_far(&self) -> String {
        String::from_utf8_lossy(&self.so_far.lock().unwrap()).into_owned()
    }

    fn join(self) -> String {
        let _ = self.reader.join();
        String::from_utf8_lossy(&self.so_far.lock().unwrap()).into_owned()
    }
}

pub fn spawn(mut cmd: Command) -> Running {
    let mut child = cmd.spawn().expect("start ganger");
    let stdout = Drained::new(child.stdout.take().expect("piped stdout"));
    let stderr = Drained::new(child.stderr.take().expect("piped stderr"));
    Running {
        child,
        stdout,
        stderr,
    }
}

impl Running {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Waits for the process, killing it (and failing) past [`DEADLINE`].
    pub fn wait(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let out = Output {
                    status: self.child.wait().expect("wait"),
                    stdout: self.stdout.join(),
                    stderr: self.stderr.join(),
                };
                panic!("ganger did not finish within {DEADLINE:?}; killed it\n{out}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: self.stdout.join(),
            stderr: self.stderr.join(),
        }
    }

    /// Polls until ganger has printed `text` on stdout or stderr (up to
    /// [`DEADLINE`]): for waiting on what ganger says, like [`wait_for_file`].
    pub fn wait_for_output(&mut self, text: &str) {
        let start = Instant::now();
        loop {
            // Checked before reading what arrived: once ganger exited and both
            // pipes are read to their end, the text can no longer come.
            let drained = self.stdout.reader.is_finished() && self.stderr.reader.is_finished();
            let (out, err) = (self.stdout.so_far(), self.stderr.so_far());
            if out.contains(text) || err.contains(text) {
                return;
            }
            if drained && let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "ganger exited ({status:?}) without printing {text:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "ganger did not print {text:?} within {DEADLINE:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn output(cmd: Command) -> Output {
    spawn(cmd).wait()
}

/// Polls until `path` exists (up to [`DEADLINE`]): for waiting on markers that
/// task scripts create, never as a substitute for synchronisation.
pub fn wait_for_file(path: &Path, running: &mut Running) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            panic!(
                "ganger exited ({status:?}) before {} appeared",
                path.display()
            );
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} did not appear within {DEADLINE:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One `ganger run` of a fixture: a fresh temp dir holds the workdir
/// (`work/`) and the directory handed to scripts as `-p dir=...` (`dir/`).
pub struct Case {
    pub tmp: TempDir,
    file: PathBuf,
    job: Option<String>,
    args: Vec<String>,
    dir_param: bool,
    json: bool,
}

impl Case {
    pub fn new(fixture_name: &str) -> Case {
        Case::file(fixture(fixture_name))
    }

    pub fn file(file: PathBuf) -> Case {
        let tmp = tempfile::Builder::new()
            .prefix("ganger-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(tmp.path().join("dir")).expect("mkdir dir");
        Case {
            tmp,
            file,
            job: None,
            args: Vec::new(),
            dir_param: true,
            json: true,
        }
    }

    pub fn job(mut self, job: &str) -> Case {
        self.job = Some(job.to_owned());
        self
    }

    pub fn param(mut self, key: &str, value: &str) -> Case {
        self.args.push("-p".into());
        self.args.push(format!("{key}={value}"));
        self
    }

    pub fn arg(mut self, arg: &str) -> Case {
        self.args.push(arg.to_owned());
        self
    }

    /// Do not pass `-p dir=...` (for jobs that do not declare it).
    pub fn no_dir(mut self) -> Case {
        self.dir_param = false;
        self
    }

    /// Plain progress lines on stdout instead of the JSON record.
    pub fn plain(mut self) -> Case {
        self.json = false;
        self
    }

    /// The directory scripts get as `$GANGER_PARAM_DIR`.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("dir")
    }

    pub fn workdir(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    pub fn command(&self) -> Command {
        let mut cmd = ganger();
        cmd.arg("run").arg(&self.file);
        if let Some(job) = &self.job {
            cmd.arg(job);
        }
        cmd.arg("--workdir").arg(self.workdir());
        if self.json {
            cmd.arg("--json");
        }
        if self.dir_param {
            cmd.arg("-p").arg(format!("dir={}", self.dir().display()));
        }
        cmd.args(&self.args);
        cmd
    }

    pub fn spawn(&self) -> Running {
        spawn(self.command())
    }

    pub fn run(self) -> Run {
        let out = output(self.command());
        Run::new(self, out)
    }
}

/// A finished run: the process output and, with `--json`, the run record.
pub struct Run {
    pub case: Case,
    pub out: Output,
    pub record: Value,
}

impl Run {
    pub fn new(case: Case, out: Output) -> Run {
        let record = if case.json && !out.stdout.trim().is_empty() {
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
                panic!("stdout is not one JSON document ({e})\n{out}");
            })
        } else {
            Value::Null
        };
        Run { case, out, record }
    }

    pub fn code(&self) -> i32 {
        self.out.code()
    }

    /// Asserts the exit code, showing everything on failure.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code(), code, "unexpected exit code\n{self}");
        self
    }

    pub fn status(&self) -> &str {
        self.record["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no run status\n{self}"))
    }

    pub fn task(&self, name: &str) -> &Value {
        let t = &self.record["tasks"][name];
        assert!(t.is_object(), "no task `{name}` in the record\n{self}");
        t
    }

    pub fn task_status(&self, name: &str) -> &str {
        self.task(name)["status"]
            .as_str()
            .unwrap_or_else(|| panic!("task `{name}` has no status\n{self}"))
    }

    /// Asserts the run status and each `(task, status)`.
    pub fn expect(&self, run: &str, tasks: &[(&str, &str)]) -> &Run {
        assert_eq!(self.status(), run, "run status\n{self}");
        for (name, status) in tasks {
            assert_eq!(
                self.task_status(name),
                *status,
                "status of `{name}`\n{self}"
            );
        }
        self
    }

    pub fn dir(&self) -> PathBuf {
        self.case.dir()
    }

    /// Lines the scripts appended to `dir/<name>`.
    pub fn lines(&self, name: &str) -> Vec<String> {
        match std::fs::read_to_string(self.dir().join(name)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn trace(&self) -> Vec<String> {
        self.lines("trace")
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.out)?;
        let trace = self.trace();
        if !trace.is_empty() {
            write!(f, "\n--- trace ---\n{}", trace.join("\n"))?;
        }
        Ok(())
    }
}

/// Index of `line` in `trace`, failing with the whole trace when absent.
pub fn position(trace: &[String], line: &str) -> usize {
    trace
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("`{line}` not in trace:\n{}", trace.join("\n")))
}

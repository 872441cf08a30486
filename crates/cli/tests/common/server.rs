//! A real `ganger server` for one test: its own data directory and port,
//! stopped (SIGTERM, then SIGKILL past the deadline) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use super::{DEADLINE, Output, output};

/// A server of its own for one test, stopped when dropped.
pub struct Server {
    pub tmp: TempDir,
    pub addr: String,
    pub child: Child,
    /// Everything the server printed on stderr so far (every incarnation,
    /// see [`Server::restart`]), for failure messages.
    pub log: Arc<Mutex<String>>,
    /// The extra environment, for restarts.
    env: Vec<(String, String)>,
}

const LISTENING: &str = "ganger server listening on ";

/// Starts `ganger server` on `<dir>/data`, listening on `listen`; returns
/// the process and its URL (from the "listening on" line). Its stderr is
/// read to its end into `log` in the background.
fn spawn_server(
    dir: &Path,
    listen: &str,
    env: &[(String, String)],
    log: &Arc<Mutex<String>>,
) -> (Child, String) {
    let mut cmd = super::ganger();
    cmd.arg("server")
        .arg("--listen")
        .arg(listen)
        .arg("--data")
        .arg(dir.join("data"))
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null());
    let mut child = cmd.spawn().expect("start ganger server");
    let stderr = child.stderr.take().expect("piped stderr");
    // Reads stderr to its end (a full pipe would block the server),
    // handing over the address from the "listening on" line.
    let (tx, rx) = mpsc::channel();
    let keep = Arc::clone(log);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some((_, addr)) = line.split_once(LISTENING) {
                let _ = tx.send(addr.trim().to_owned());
            }
            let mut log = keep.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not say where it listens within {DEADLINE:?}:\n{}",
                log.lock().unwrap()
            );
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with extra environment (`GANGER_SERVER_LEASE`, …).
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("ganger-client-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(tmp.path().join("dir")).expect("mkdir dir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, addr) = spawn_server(tmp.path(), "127.0.0.1:0", &env, &log);
        Server {
            tmp,
            addr,
            child,
            log,
            env,
        }
    }

    /// Kills the server at once (SIGKILL: a crash, nothing is shut down)
    /// and waits for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again after it stopped ([`Server::kill9`]): the
    /// same data directory, the same address (clients and agents keep their
    /// URL) and the same environment.
    pub fn restart(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "restart needs the old server stopped first (kill9)"
        );
        let listen = self
            .addr
            .strip_prefix("http://")
            .unwrap_or(&self.addr)
            .to_owned();
        self.log
            .lock()
            .unwrap()
            .push_str("--- the test restarts the server ---\n");
        let (child, addr) = spawn_server(self.tmp.path(), &listen, &self.env, &self.log);
        self.child = child;
        assert_eq!(
            addr,
            self.addr,
            "the restarted server listens elsewhere:\n{}",
            self.log.lock().unwrap()
        );
    }

    /// The directory scripts get as `$GANGER_PARAM_DIR`.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("dir")
    }

    /// A client command. The token comes from the server's admin token
    /// file, found through GANGER_SERVER_DATA as a user's shell would.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut cmd = super::ganger();
        cmd.env("GANGER_ADDR", &self.addr)
            .env("GANGER_SERVER_DATA", self.tmp.path().join("data"))
            .current_dir(self.tmp.path())
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        output(self.client(args))
    }

    /// Runs a command that must succeed, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code(), 0, "ganger {args:?} failed\n{out}");
        out.stdout
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("ganger {args:?} printed no JSON ({e}):\n{stdout}"))
    }

    /// Writes a job file into the test's directory and applies it.
    pub fn apply(&self, name: &str, yaml: &str) -> String {
        let path = self.write(name, yaml);
        self.ok(&["apply", path.to_str().expect("utf-8 path")])
    }

    pub fn write(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, yaml).expect("write job file");
        path
    }

    /// Submits and returns the run id (from `--json`).
    pub fn submit(&self, args: &[&str]) -> String {
        let mut all = vec!["submit", "--json"];
        all.extend_from_slice(args);
        self.json(&all)["id"].as_str().expect("an id").to_owned()
    }

    /// Polls `ganger status --json` until `done` holds (up to DEADLINE).
    pub fn wait_status(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let run = self.json(&["status", id, "--json"]);
            if done(&run) {
                return run;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "run {id} did not become {what} within {DEADLINE:?}: {run:#}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets the server stop its tasks and shut down; SIGKILL
        // only when it does not within the deadline.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                if !thread::panicking() {
                    panic!(
                        "the server did not stop on SIGTERM within {DEADLINE:?}:\n{}",
                        self.log.lock().unwrap()
                    );
                }
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

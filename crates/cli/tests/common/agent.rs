//! `ganger agent` processes for black-box tests.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::server::Server;
use super::{DEADLINE, Output, Running};

/// A `ganger agent` of one test, stopped (SIGTERM, bounded) when dropped.
pub struct Agent {
    pub running: Option<Running>,
}

impl Agent {
    /// An agent with two slots, registered.
    pub fn start(server: &Server, token: &str, name: &str, labels: &[&str]) -> Agent {
        Agent::start_slots(server, token, name, labels, 2)
    }

    pub fn start_slots(
        server: &Server,
        token: &str,
        name: &str,
        labels: &[&str],
        slots: u32,
    ) -> Agent {
        let mut cmd = agent_command_slots(server, token, name, slots);
        for label in labels {
            cmd.args(["--label", label]);
        }
        let mut running = super::spawn(cmd);
        running.wait_for_output(&format!(
            "ganger agent {name} registered with {}",
            server.addr
        ));
        Agent {
            running: Some(running),
        }
    }

    pub fn signal(&self, signal: Signal) {
        let running = self.running.as_ref().expect("running");
        kill(Pid::from_raw(running.pid()), signal).expect("signal the agent");
    }

    pub fn wait_for_output(&mut self, text: &str) {
        self.running
            .as_mut()
            .expect("running")
            .wait_for_output(text);
    }

    /// Waits for the agent to exit (up to the deadline).
    pub fn wait(mut self) -> Output {
        self.running.take().expect("running").wait()
    }

    /// Whether the agent process is still there (it did not exit).
    pub fn alive(&mut self) -> bool {
        let running = self.running.as_mut().expect("running");
        matches!(running.child.try_wait(), Ok(None))
    }

    /// Stops the agent (SIGCONT in case it was stopped, then SIGTERM) and
    /// returns what it printed.
    pub fn stop(mut self) -> Output {
        let running = self.running.take().expect("running");
        let pid = Pid::from_raw(running.pid());
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        running.wait()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        // A stopped agent would not see the SIGTERM.
        let _ = kill(Pid::from_raw(running.pid()), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(running.pid()), Signal::SIGTERM);
        let start = Instant::now();
        while matches!(running.child.try_wait(), Ok(None)) {
            if start.elapsed() > DEADLINE {
                let _ = running.child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn agent_command(server: &Server, token: &str, name: &str) -> std::process::Command {
    agent_command_slots(server, token, name, 2)
}

pub fn agent_command_slots(
    server: &Server,
    token: &str,
    name: &str,
    slots: u32,
) -> std::process::Command {
    let mut cmd = super::ganger();
    let slots = slots.to_string();
    cmd.args(["agent", "--server", &server.addr, "--name", name])
        .args(["--slots", &slots, "--grace", "30s"])
        .arg("--workdir")
        .arg(server.tmp.path().join(format!("agent-{name}")))
        .env("GANGER_AGENT_TOKEN", token)
        .current_dir(server.tmp.path());
    cmd
}

pub fn agent_token(server: &Server) -> String {
    token(server, "agent")
}

/// A new token of `role`, made on the server's data directory.
pub fn token(server: &Server, role: &str) -> String {
    let data = server.tmp.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    server
        .ok(&["token", "create", "--role", role, "--data", data])
        .trim()
        .to_owned()
}

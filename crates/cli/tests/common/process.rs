//! Processes that tasks start, seen from outside: pid files, liveness.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::DEADLINE;

/// Waits for `path` to exist.
pub fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} did not appear within {DEADLINE:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `check` until it holds; fails the test after `within`.
pub fn poll_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pid a task script wrote (atomically, by rename) into `path`.
pub fn read_pid(path: &Path) -> i32 {
    wait_for(path);
    let text = std::fs::read_to_string(path).expect("read pid file");
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{} holds no pid ({e}): {text:?}", path.display()))
}

/// The state letter of a process (`R`, `S`, `Z`, …), or None when it is
/// gone from /proc.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().next()?.chars().next()
}

/// A process that runs no code any more: gone, or a zombie.
pub fn process_gone(pid: i32) -> bool {
    matches!(proc_state(pid), None | Some('Z' | 'X'))
}

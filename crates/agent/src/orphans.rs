//! Process groups left running by an agent that died.
//!
//! A task's script leads its own process group, so a SIGKILLed agent (or
//! server) leaves its tasks running: `posix_spawn` offers no parent-death
//! signal. Each running attempt's group is therefore recorded in a file of
//! its own, and the next agent started on the same directory kills the
//! groups still there before it takes work.
//!
//! A record names the group's leader with its boot and start time, so a
//! pid reused since by an unrelated process is not signalled. A group
//! whose leader is gone but whose members live on is killed: the kernel
//! gives out no pid that still names a process group, so it is ours unless
//! a stranger took that pid after our group died and left a group of its
//! own behind, which is too unlikely to keep orphans alive for.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The directory of records; one file per running attempt's process group.
#[derive(Clone, Debug)]
pub struct ProcessRecords {
    dir: PathBuf,
}

/// A recorded process group; the record is removed when this is dropped,
/// once the group is dead.
#[derive(Debug)]
pub(crate) struct Recorded {
    path: Option<PathBuf>,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the kernel says of a process, enough to tell it from a later one
/// with the same pid.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    boot: String,
    start: u64,
}

impl ProcessRecords {
    pub fn new(dir: PathBuf) -> ProcessRecords {
        ProcessRecords { dir }
    }

    /// Records the group led by `pid`. Where the kernel cannot tell who
    /// `pid` is (no `/proc`), nothing is recorded: a group that could not
    /// be told from a stranger's is never killed later.
    pub(crate) fn record(&self, pid: u32) -> Recorded {
        let Some(identity) = identity(pid) else {
            return Recorded { path: None };
        };
        let path = self.dir.join(pid.to_string());
        let text = format!("{} {}\n", identity.boot, identity.start);
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::write(&path, text));
        Recorded {
            path: written.ok().map(|()| path),
        }
    }

    /// Kills every recorded group that still runs and clears the records;
    /// returns how many groups were killed. Called before the agent takes
    /// work, so every record there is a dead agent's.
    pub fn reap(&self) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut killed = 0;
        for entry in entries {
            let path = entry?.path();
            if reap_one(&path) {
                killed += 1;
            }
            std::fs::remove_file(&path)?;
        }
        Ok(killed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Kills the group a record names, if it is still the one recorded.
fn reap_one(path: &Path) -> bool {
    let Some(pid) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|pid| *pid > 1)
    else {
        return false;
    };
    let Some(recorded) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| parse_record(&text))
    else {
        return false;
    };
    if current_boot().as_deref() != Some(recorded.boot.as_str()) {
        // The machine restarted since: nothing of ours can run.
        return false;
    }
    match identity(pid.unsigned_abs()) {
        // The leader still runs: it must be the one recorded.
        Some(now) if now != recorded => return false,
        // The leader is gone; members of its group may live on, and no
        // other process can hold that group id.
        _ => {}
    }
    killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
}

fn parse_record(text: &str) -> Option<Identity> {
    let mut words = text.split_whitespace();
    let boot = words.next()?.to_owned();
    let start = words.next()?.parse().ok()?;
    Some(Identity { boot, start })
}

fn current_boot() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The boot and the start time (clock ticks since boot) of `pid`.
fn identity(pid: u32) -> Option<Identity> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Identity {
        boot: current_boot()?,
        start: start_time(&stat)?,
    })
}

/// Field 22 of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are
/// counted after its last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces() {
        let stat = "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 987654 1000 1 18446744073709551615";
        assert_eq!(start_time(stat), Some(987_654));
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn records_parse_back() {
        let id = Identity {
            boot: "b0".into(),
            start: 12,
        };
        assert_eq!(parse_record("b0 12\n"), Some(id));
        assert_eq!(parse_record("b0"), None);
    }

    #[test]
    fn this_process_has_an_identity_on_linux() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(identity(std::process::id()).is_some());
        }
    }
}

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::Instant;

/// Sends `signal` to every process of the group. A group that is already
/// gone is the desired state, not an error.
pub(crate) fn signal(pgid: Pid, signal: Signal) -> Result<(), Errno> {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno),
    }
}

/// Waits until no live process is left in the group, or `deadline`.
/// Returns whether the group is gone.
///
/// A killed process lingers as a zombie until its parent reaps it, and an
/// orphan's parent is init (or a subreaper), which may be slow to reap or,
/// in a container whose PID 1 is not an init, never reap at all. A zombie
/// holds no resources and runs no code, so it counts as gone.
pub(crate) async fn wait_gone(pgid: Pid, deadline: Instant) -> bool {
    let mut delay = Duration::from_millis(1);
    loop {
        if matches!(killpg(pgid, None), Err(Errno::ESRCH)) {
            return true;
        }
        let raw = pgid.as_raw();
        // /proc reads are cheap but still blocking file system calls.
        let only_zombies = tokio::task::spawn_blocking(move || only_zombies_left(raw))
            .await
            .unwrap_or(false);
        if only_zombies {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Polling: the kernel offers no notification for "group empty".
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Whether every process in group `pgid` is a zombie, from /proc. Answers
/// false when /proc cannot tell, so the caller falls back to waiting.
fn only_zombies_left(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between read_dir and this read; then it is no
        // member any more.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat)
            && pgrp == pgid
            && !matches!(state, 'Z' | 'X')
        {
            return false;
        }
    }
    true
}

/// State and process group from a /proc/<pid>/stat line. The command name
/// (field 2) is in parentheses and may itself contain spaces and ')', so
/// parsing starts after the last ')'.
pub(crate) fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "1234 (a) b (c)) S 1 777 777 0 -1 4194304";
        assert_eq!(parse_stat(stat), Some(('S', 777)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_seen_in_its_group() {
        let own = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let (state, pgrp) = parse_stat(&own).expect("parse");
        assert_ne!(state, 'Z');
        assert!(!only_zombies_left(pgrp));
    }
}

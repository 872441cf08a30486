//! The live task table shown when stdout is a terminal.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ganger_core::model::TaskId;
use ganger_core::run::{Phase, RunState, TaskStatus};
use ganger_engine::Observer;
use ganger_executor::LogLine;
use jiff::Timestamp;
use tokio::task::JoinHandle;

use super::{Target, describe};

#[derive(Clone)]
struct Row {
    name: String,
    status: TaskStatus,
    undo: Option<TaskStatus>,
    attempt: u32,
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    last_line: String,
}

pub(crate) struct Live {
    rows: Mutex<Vec<Row>>,
    /// A message about the run, shown under the table.
    notice: Mutex<Option<String>>,
    done: AtomicBool,
}

const FRAME: Duration = Duration::from_millis(100);

impl Live {
    pub(crate) fn new(run: &RunState) -> Live {
        let rows = run
            .job
            .tasks
            .iter()
            .map(|t| Row {
                name: t.name.clone(),
                status: TaskStatus::Pending,
                undo: None,
                attempt: 0,
                started: None,
                finished: None,
                last_line: String::new(),
            })
            .collect();
        Live {
            rows: Mutex::new(rows),
            notice: Mutex::new(None),
            done: AtomicBool::new(false),
        }
    }

    pub(crate) fn start_painting(self: &Arc<Self>) -> JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut drawn = 0;
            while !me.done.load(Ordering::Relaxed) {
                drawn = me.paint(drawn);
                tokio::time::sleep(FRAME).await;
            }
            me.paint(drawn);
        })
    }

    pub(crate) async fn stop_painting(&self, painter: JoinHandle<()>, _run: &RunState) {
        self.done.store(true, Ordering::Relaxed);
        let _ = painter.await;
    }

    /// Redraws the table over the previous frame; returns the lines drawn.
    fn paint(&self, previous: usize) -> usize {
        let Ok(rows) = self.rows.lock() else {
            return previous;
        };
        let (width, height) = terminal_size::terminal_size()
            .map_or((100, 30), |(w, h)| (usize::from(w.0), usize::from(h.0)));
        let room = height.saturating_sub(3).max(5);
        let mut order: Vec<&Row> = rows.iter().collect();
        let rank = |r: &Row| match r.status {
            TaskStatus::Running | TaskStatus::Claimed | TaskStatus::Ready => 0,
            TaskStatus::Failed | TaskStatus::TimedOut => 1,
            TaskStatus::Pending => 3,
            _ => 2,
        };
        if order.len() > room {
            order.sort_by_key(|r| rank(r));
        }
        let now = Timestamp::now();
        let name_w = order
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(4)
            .clamp(4, 32);
        let mut frame = String::new();
        if previous > 0 {
            let _ = write!(frame, "\x1b[{previous}F\x1b[J");
        }
        let _ = writeln!(
            frame,
            "\x1b[1m{:<name_w$}  {:<11} {:>7}  OUTPUT\x1b[0m",
            "TASK", "STATE", "TIME"
        );
        let mut lines = 1;
        for row in order.iter().take(room) {
            let time = match (row.started, row.finished) {
                (Some(s), Some(f)) => describe::duration(f.duration_since(s)),
                (Some(s), None) => describe::duration(now.duration_since(s)),
                _ => String::new(),
            };
            let mut state = row.status.as_str().to_owned();
            if row.attempt > 1 && row.status == TaskStatus::Running {
                state = format!("running #{}", row.attempt);
            }
            if let Some(undo) = row.undo {
                state = format!("undo:{}", undo.as_str());
            }
            let color = match row.status {
                TaskStatus::Succeeded => "\x1b[32m",
                TaskStatus::Failed | TaskStatus::TimedOut => "\x1b[31m",
                TaskStatus::Running => "\x1b[36m",
                TaskStatus::Cancelled | TaskStatus::Skipped => "\x1b[2m",
                _ => "",
            };
            let fixed = name_w + 2 + 11 + 1 + 7 + 2;
            let line: String = row
                .last_line
                .chars()
                .take(width.saturating_sub(fixed + 1))
                .collect();
            let name: String = row.name.chars().take(name_w).collect();
            let _ = writeln!(
                frame,
                "{name:<name_w$}  {color}{state:<11}\x1b[0m {time:>7}  {line}"
            );
            lines += 1;
        }
        if order.len() > room {
            let _ = writeln!(frame, "… and {} more tasks", order.len() - room);
            lines += 1;
        }
        if let Some(notice) = self.notice.lock().ok().as_deref().and_then(Option::as_ref) {
            let notice: String = notice.chars().take(width.saturating_sub(1)).collect();
            let _ = writeln!(frame, "\x1b[33m{notice}\x1b[0m");
            lines += 1;
        }
        Target::Stdout.write(&frame);
        lines
    }
}

impl Observer for Live {
    fn task_changed(&self, run: &RunState, task: TaskId) {
        let Ok(mut rows) = self.rows.lock() else {
            return;
        };
        let state = &run.tasks[task];
        let row = &mut rows[task];
        row.status = state.main.status;
        row.undo = state.undo.as_ref().map(|u| u.status);
        row.attempt = state.main.attempt();
        row.started = state.main.attempts.iter().find_map(|a| a.started_at);
        row.finished = state.main.current().and_then(|a| a.finished_at);
        if let Some(reason) = state
            .main
            .reason
            .as_ref()
            .filter(|_| row.status.is_terminal() && row.status != TaskStatus::Succeeded)
        {
            row.last_line = printable(reason);
        }
    }

    fn run_changed(&self, _run: &RunState) {}

    fn line(&self, task: &str, phase: Phase, line: &LogLine) {
        self.set_last_line(task, phase, printable(&line.text));
    }

    fn warning(&self, task: &str, phase: Phase, text: &str) {
        self.set_last_line(task, phase, format!("ganger: warning: {}", printable(text)));
    }

    fn notice(&self, text: &str) {
        if let Ok(mut notice) = self.notice.lock() {
            *notice = Some(printable(text));
        }
    }
}

impl Live {
    fn set_last_line(&self, task: &str, phase: Phase, text: String) {
        let Ok(mut rows) = self.rows.lock() else {
            return;
        };
        if let Some(row) = rows.iter_mut().find(|r| r.name == task) {
            row.last_line = match phase {
                Phase::Main => text,
                Phase::Undo => format!("undo: {text}"),
            };
        }
    }
}

/// What a terminal would show of one line of task output, without anything
/// that could move the cursor, recolour or retitle the table: after a
/// carriage return only the text that overwrote the line, escape sequences
/// (CSI, OSC and the like) dropped, tabs as spaces, and no other control
/// characters.
fn printable(text: &str) -> String {
    let text = text.trim_end_matches('\r');
    let text = text.rsplit('\r').next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            // C1 CSI, the one-character form of `ESC [`.
            '\u{9b}' => skip_csi(&mut chars),
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips what follows an ESC, the ESC itself already read.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        // Strings ended by BEL or ST (`ESC \`): OSC, DCS, SOS, PM, APC.
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
        }
        // `ESC ( B` and the like: intermediate bytes, then one final byte.
        Some(' '..='/') => {
            while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
            chars.next();
        }
        // A two-character sequence (`ESC 7`, `ESC M`, ...), or a lone ESC.
        _ => {}
    }
}

/// Skips a control sequence's parameters and intermediates up to and
/// including its final byte (`@` to `~`).
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('@'..='~').contains(&c) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_drops_what_moves_or_colours() {
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(printable("10%\r50%\r100% done"), "100% done");
        assert_eq!(printable("crlf line\r"), "crlf line");
        assert_eq!(
            printable("\x1b[1;31mred\x1b[0m and \x1b[2Kclear"),
            "red and clear"
        );
        assert_eq!(printable("\x1b]0;title\x07after"), "after");
        assert_eq!(
            printable("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"),
            "link"
        );
        assert_eq!(printable("\x1b(Bcharset \x1b7saved"), "charset saved");
        assert_eq!(
            printable("bell\x07 back\x08 tab\there \u{9b}31mc1"),
            "bell back tab here c1"
        );
        assert_eq!(printable("\x1b[31"), "");
        assert_eq!(printable("ünïcødé ✓"), "ünïcødé ✓");
    }
}

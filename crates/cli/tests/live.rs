//! The live task table, shown when stdout is a terminal: `ganger run` is
//! given a pseudo-terminal and everything it draws is read back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::Read;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};

/// Runs a fixture with stdout on a terminal 250 columns wide; returns the
/// exit code and every byte drawn.
fn run_on_terminal(fixture: &str) -> (i32, String) {
    let size = Winsize {
        ws_row: 40,
        ws_col: 250,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(&size, None).expect("open a pseudo-terminal");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::ganger();
    cmd.arg("run")
        .arg(common::fixture(fixture))
        .arg("--workdir")
        .arg(tmp.path())
        .stdout(Stdio::from(pty.slave));
    let mut master = File::from(pty.master);
    let (tx, rx) = mpsc::channel();
    // Reads until every copy of the terminal's other end is closed, which
    // is when ganger (and whatever it started) has exited.
    thread::spawn(move || {
        let mut drawn = Vec::new();
        let mut chunk = [0; 8192];
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 {
                break;
            }
            drawn.extend_from_slice(&chunk[..n]);
        }
        let _ = tx.send(drawn);
    });
    let mut child = cmd.spawn().expect("start ganger");
    // Ours is the last copy of the terminal's other end besides ganger's.
    drop(cmd);
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > common::DEADLINE {
            let _ = child.kill();
            panic!("ganger did not finish within {:?}", common::DEADLINE);
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr.join().unwrap_or_default();
    let drawn = rx
        .recv_timeout(common::DEADLINE)
        .expect("the terminal closes once ganger exits");
    let drawn = String::from_utf8_lossy(&drawn).into_owned();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("ganger died by a signal: {status:?}\n{drawn:?}\n{stderr}"));
    (code, format!("{drawn}\n--- stderr ---\n{stderr}"))
}

#[test]
fn the_table_shows_output_without_control_characters() {
    let (code, drawn) = run_on_terminal("live.yml");
    assert_eq!(code, 0, "{drawn:?}");
    assert!(drawn.contains("TASK"), "a table was drawn: {drawn:?}");
    // What a terminal would show after the carriage return, minus the
    // colour, the bell and the window-title sequence.
    assert!(drawn.contains("step 2 red done"), "{drawn:?}");
    for raw in ["step 1", "\x1b[31mred", "\x07", "\x1b]0;", "title"] {
        assert!(
            !drawn.contains(raw),
            "{raw:?} reached the terminal: {drawn:?}"
        );
    }
}

#[test]
fn the_table_shows_an_executor_warning_as_the_last_line() {
    let (code, drawn) = run_on_terminal("live.yml");
    assert_eq!(code, 0, "{drawn:?}");
    assert!(
        drawn.contains("ganger: warning: output file line 1: expected key=value"),
        "{drawn:?}"
    );
    assert!(drawn.contains("\"not a pair\""), "{drawn:?}");
}

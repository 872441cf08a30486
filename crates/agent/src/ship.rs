//! Ships an attempt's log file to the server as it grows.
//!
//! The file that [`crate::attempt::run`] writes is the buffer: bounded by
//! the log cap, on disk, and there whether or not the server is reachable.
//! The shipper remembers one number, the offset up to which the server has
//! the log, and sends what follows in chunks of whole lines. The server
//! answers with its log's length, and that is where the next chunk starts:
//! a chunk lost in transit, or sent twice, costs nothing.

use std::future::Future;
use std::io::SeekFrom;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::client::ClientError;

/// The most a chunk carries. Lines are at most 64 KiB (the executor splits
/// longer ones), so a chunk holds at least a few whole lines; and even
/// escaped as JSON at its worst (6 bytes a control character) a chunk stays
/// under the server's 2 MiB body limit.
pub(crate) const MAX_CHUNK: usize = 256 << 10;

/// Answers in a row that accepted nothing before the shipper gives up:
/// a server that keeps asking for the same offset will not take more.
const MAX_STUCK: u32 = 3;

/// Why shipping stopped for good.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The attempt is no longer this agent's (409): stop everything.
    Stale(String),
    /// The log cannot be shipped (unreadable, refused); the attempt goes
    /// on without it.
    GaveUp(String),
}

#[derive(Debug)]
pub(crate) struct Shipper {
    path: PathBuf,
    /// How much of the log the server holds, by its last answer.
    offset: u64,
    stuck: u32,
    given_up: bool,
}

impl Shipper {
    pub(crate) fn new(path: PathBuf) -> Shipper {
        Shipper {
            path,
            offset: 0,
            stuck: 0,
            given_up: false,
        }
    }

    /// Sends every whole line the file holds beyond what the server has;
    /// with `last` (the process has ended and the file is complete), the
    /// rest too. `send(offset, data)` delivers one chunk, retrying while
    /// the server is unavailable, and returns the server's `next_offset`.
    /// After [`Stop::GaveUp`] later calls send nothing.
    pub(crate) async fn ship<F, Fut>(&mut self, last: bool, mut send: F) -> Result<(), Stop>
    where
        F: FnMut(u64, String) -> Fut,
        Fut: Future<Output = Result<u64, ClientError>>,
    {
        while !self.given_up {
            let buf = match read_at(&self.path, self.offset, MAX_CHUNK).await {
                Ok(buf) => buf,
                Err(e) => {
                    return self.give_up(format!(
                        "cannot read the log file {}: {e}; the rest of this attempt's output is not sent",
                        self.path.display()
                    ));
                }
            };
            let full = buf.len() == MAX_CHUNK;
            let text = match sendable(&buf, full, last) {
                Some(text) => text,
                None => {
                    return self.give_up(format!(
                        "the log file {} holds bytes that are not UTF-8 at offset {}; the rest of this attempt's output is not sent",
                        self.path.display(),
                        self.offset
                    ));
                }
            };
            if text.is_empty() {
                return Ok(());
            }
            let (start, sent) = (self.offset, text.len() as u64);
            let next = match send(start, text.to_owned()).await {
                Ok(next) => next,
                Err(ClientError::Stale(message)) => return Err(Stop::Stale(message)),
                Err(e) => {
                    return self.give_up(format!(
                        "the server refused this attempt's output at offset {start}: {e}"
                    ));
                }
            };
            if next <= start {
                self.stuck += 1;
                if self.stuck >= MAX_STUCK {
                    return self.give_up(format!(
                        "the server keeps asking for output from offset {next} and stores none of what is sent; the rest of this attempt's output is not sent"
                    ));
                }
            } else {
                self.stuck = 0;
            }
            self.offset = next;
            // Everything read was taken and it was not a full chunk: the
            // file holds nothing more now; no need to read it again.
            if !full && next == start + sent && sent == buf.len() as u64 {
                return Ok(());
            }
        }
        Ok(())
    }

    fn give_up(&mut self, why: String) -> Result<(), Stop> {
        self.given_up = true;
        Err(Stop::GaveUp(why))
    }
}

/// Up to `max` bytes of the file from `offset`. A file not there yet is
/// empty: the executor creates it at the first line.
async fn read_at(path: &PathBuf, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    file.take(max as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// What of `buf` (the log from the shipping offset) to send now: every
/// whole line; a line longer than a chunk (`full`) in pieces; and once the
/// file is complete (`last`) everything. Never half a UTF-8 character:
/// `data` is a string. `None` when `buf` starts with bytes that are not
/// UTF-8 (which the executor, writing strings, never produces).
pub(crate) fn sendable(buf: &[u8], full: bool, last: bool) -> Option<&str> {
    let cut = match buf.iter().rposition(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        None if full || last => buf.len(),
        None => 0,
    };
    let taken = &buf[..cut];
    match std::str::from_utf8(taken) {
        Ok(text) => Some(text),
        Err(e) if e.valid_up_to() > 0 => std::str::from_utf8(&taken[..e.valid_up_to()]).ok(),
        // A character cut at the end of the file (a write broken off by a
        // full disk): nothing more will come, nothing is left to send.
        Err(e) if e.error_len().is_none() => Some(""),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn only_whole_lines_go_while_the_task_runs() {
        assert_eq!(sendable(b"", false, false), Some(""));
        assert_eq!(sendable(b"a\nb\npart", false, false), Some("a\nb\n"));
        assert_eq!(sendable(b"partial", false, false), Some(""));
        // Once the file is complete, the unfinished last line goes too.
        assert_eq!(sendable(b"a\npartial", false, true), Some("a\n"));
        assert_eq!(sendable(b"partial", false, true), Some("partial"));
    }

    #[test]
    fn a_line_longer_than_a_chunk_goes_in_pieces_on_character_boundaries() {
        let mut line = "x".repeat(MAX_CHUNK - 1).into_bytes();
        line.extend_from_slice("é".as_bytes()); // two bytes: one past the chunk
        let buf = &line[..MAX_CHUNK];
        assert_eq!(
            sendable(buf, true, false).map(str::len),
            Some(MAX_CHUNK - 1)
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_stop_the_shipping() {
        assert_eq!(sendable(b"\xff\xfe\n", false, false), None);
        assert_eq!(sendable(b"ok\n\xff\n", false, false), Some("ok\n"));
        // A character cut off at the end of a complete file is dropped.
        assert_eq!(sendable(b"\xc3", false, true), Some(""));
    }

    /// A fake server log: stores at offsets like the server (a resent part
    /// is not stored twice, a gap stores nothing) and answers its length.
    #[derive(Clone, Default)]
    struct ServerLog(Arc<Mutex<Vec<u8>>>);

    impl ServerLog {
        fn send(&self, offset: u64, data: String) -> Result<u64, ClientError> {
            let mut log = self.0.lock().expect("not poisoned");
            let len = log.len() as u64;
            if offset <= len {
                let skip = (len - offset) as usize;
                if let Some(rest) = data.as_bytes().get(skip..) {
                    log.extend_from_slice(rest);
                }
            }
            Ok(log.len() as u64)
        }

        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
        }
    }

    fn never(_: u64, _: String) -> std::future::Ready<Result<u64, ClientError>> {
        panic!("nothing should be sent")
    }

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.1.log");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[tokio::test]
    async fn lines_are_shipped_once_as_the_file_grows() {
        let (_dir, path) = file_with("one\ntw");
        let server = ServerLog::default();
        let mut shipper = Shipper::new(path.clone());
        let send = |o, d| std::future::ready(server.send(o, d));
        shipper.ship(false, send).await.expect("ships");
        assert_eq!(server.text(), "one\n");

        std::fs::write(&path, "one\ntwo\nthree").expect("write");
        shipper.ship(false, send).await.expect("ships");
        assert_eq!(server.text(), "one\ntwo\n");
        shipper.ship(true, send).await.expect("ships");
        assert_eq!(server.text(), "one\ntwo\nthree");
        // Nothing new: nothing sent.
        let calls = Mutex::new(0);
        shipper
            .ship(true, |o, d| {
                *calls.lock().expect("not poisoned") += 1;
                std::future::ready(server.send(o, d))
            })
            .await
            .expect("ships");
        assert_eq!(*calls.lock().expect("not poisoned"), 0);
    }

    #[tokio::test]
    async fn a_missing_file_is_an_empty_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut shipper = Shipper::new(dir.path().join("none.log"));
        assert_eq!(shipper.ship(true, never).await, Ok(()));
    }

    #[tokio::test]
    async fn chunks_hold_at_most_max_chunk_bytes_of_whole_lines() {
        let line = format!("{}\n", "y".repeat(1000));
        let text = line.repeat(1000); // ~1 MB
        let (_dir, path) = file_with(&text);
        let server = ServerLog::default();
        let sizes = Mutex::new(Vec::new());
        Shipper::new(path)
            .ship(false, |o, d: String| {
                sizes.lock().expect("not poisoned").push(d.len());
                assert!(d.ends_with('\n'));
                std::future::ready(server.send(o, d))
            })
            .await
            .expect("ships");
        assert_eq!(server.text(), text);
        let sizes = sizes.into_inner().expect("not poisoned");
        assert!(sizes.iter().all(|s| *s <= MAX_CHUNK), "{sizes:?}");
        assert_eq!(sizes.len(), text.len().div_ceil(MAX_CHUNK / 1001 * 1001));
    }

    #[tokio::test]
    async fn the_server_s_next_offset_decides_where_the_next_chunk_starts() {
        let (_dir, path) = file_with("aaaa\nbbbb\ncccc\n");
        // The server already has the first line (an earlier chunk whose
        // answer was lost): it answers with its length, and the shipper
        // carries on from there without sending the line twice.
        let server = ServerLog::default();
        server.send(0, "aaaa\n".into()).expect("stores");
        let offsets = Mutex::new(Vec::new());
        let mut shipper = Shipper::new(path);
        shipper
            .ship(true, |o, d| {
                offsets.lock().expect("not poisoned").push(o);
                std::future::ready(server.send(o, d))
            })
            .await
            .expect("ships");
        assert_eq!(server.text(), "aaaa\nbbbb\ncccc\n");
        assert_eq!(*offsets.lock().expect("not poisoned"), [0]);

        // A server that lost the tail (restored from an older copy) asks
        // for it again, and gets it.
        let (_dir2, path) = file_with("aaaa\nbbbb\n");
        let server = ServerLog::default();
        let mut shipper = Shipper::new(path.clone());
        shipper
            .ship(true, |o, d| std::future::ready(server.send(o, d)))
            .await
            .expect("ships");
        server.0.lock().expect("not poisoned").truncate(5);
        std::fs::write(&path, "aaaa\nbbbb\ncccc\n").expect("write");
        shipper
            .ship(true, |o, d| std::future::ready(server.send(o, d)))
            .await
            .expect("ships");
        assert_eq!(server.text(), "aaaa\nbbbb\ncccc\n");
    }

    #[tokio::test]
    async fn a_server_that_stores_nothing_makes_the_shipper_give_up_not_spin() {
        let (_dir, path) = file_with("line\n");
        let mut shipper = Shipper::new(path);
        let result = shipper.ship(true, |_, _| std::future::ready(Ok(0))).await;
        assert!(matches!(result, Err(Stop::GaveUp(_))), "{result:?}");
        // And stays quiet afterwards.
        assert_eq!(shipper.ship(true, never).await, Ok(()));
    }

    #[tokio::test]
    async fn a_stale_answer_stops_the_shipping() {
        let (_dir, path) = file_with("line\n");
        let result = Shipper::new(path)
            .ship(false, |_, _| {
                std::future::ready(Err(ClientError::Stale("fenced".into())))
            })
            .await;
        assert_eq!(result, Err(Stop::Stale("fenced".into())));
    }
}

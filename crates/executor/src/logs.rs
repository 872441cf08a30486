use std::path::PathBuf;
use std::sync::Arc;

use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::oneshot;

use crate::lines::LineSplitter;
use crate::types::{LogLine, LogSink, Stream};

/// Bytes asked for per pipe read. Small: every task pays for these buffers,
/// and most print little; a chatty task just reads more often.
const READ_CHUNK: usize = 8 * 1024;

/// Write buffer of the log file, allocated only once a task prints.
const LOG_BUFFER: usize = 64 * 1024;

/// What the capture learnt that the outcome should mention.
#[derive(Debug, Default)]
pub(crate) struct LogReport {
    pub(crate) warnings: Vec<String>,
}

/// The log file, opened at the first line: most tasks of a large fan-out
/// print nothing, and creating a file costs more than running `true`.
enum LogFile {
    Unopened,
    Open(BufWriter<File>),
    /// It could not be written; the sink still gets every line.
    Lost,
}

/// Writes captured lines to the log file (up to the cap) and to the sink.
struct LogWriter {
    file: LogFile,
    path: PathBuf,
    sink: Arc<dyn LogSink>,
    cap: Option<u64>,
    written: u64,
    truncated: bool,
    warnings: Vec<String>,
}

impl LogWriter {
    fn new(capture: Capture) -> Self {
        LogWriter {
            file: LogFile::Unopened,
            path: capture.path,
            sink: capture.sink,
            cap: capture.cap,
            written: 0,
            truncated: false,
            warnings: Vec::new(),
        }
    }

    async fn line(&mut self, stream: Stream, text: String) {
        if self.truncated {
            return;
        }
        let line = LogLine {
            at: jiff::Timestamp::now(),
            stream,
            text,
        };
        let formatted = format_line(&line);
        if let Some(cap) = self.cap
            && self.written.saturating_add(formatted.len() as u64) > cap
        {
            self.truncate(cap).await;
            return;
        }
        self.write(formatted.as_bytes()).await;
        self.sink.line(&line);
    }

    async fn truncate(&mut self, cap: u64) {
        self.truncated = true;
        let message = format!("log truncated: cap of {cap} bytes reached");
        let notice = LogLine {
            at: jiff::Timestamp::now(),
            // The notice is ganger's, not the task's, so it goes with the
            // diagnostics: readers of the file see one consistent format.
            stream: Stream::Stderr,
            text: format!("[ganger] {message}"),
        };
        self.write(format_line(&notice).as_bytes()).await;
        self.sink.line(&notice);
        self.warnings.push(message);
    }

    async fn write(&mut self, bytes: &[u8]) {
        if let LogFile::Unopened = self.file {
            match open(&self.path).await {
                Ok(file) => self.file = LogFile::Open(BufWriter::with_capacity(LOG_BUFFER, file)),
                Err(error) => return self.lose_file(error),
            }
        }
        let LogFile::Open(file) = &mut self.file else {
            return;
        };
        match file.write_all(bytes).await {
            Ok(()) => self.written += bytes.len() as u64,
            Err(error) => self.lose_file(error),
        }
    }

    async fn flush(&mut self) {
        if let LogFile::Open(file) = &mut self.file
            && let Err(error) = file.flush().await
        {
            self.lose_file(error);
        }
    }

    /// A full disk must not fail the task or stall its pipes: the sink still
    /// gets every line, only the file stops.
    fn lose_file(&mut self, error: std::io::Error) {
        self.file = LogFile::Lost;
        self.warnings.push(format!(
            "log file {} is incomplete: {error}",
            self.path.display()
        ));
    }
}

/// `<RFC 3339 UTC, milliseconds> <out|err> <text>\n`
fn format_line(line: &LogLine) -> String {
    format!("{:.3} {} {}\n", line.at, line.stream.tag(), line.text)
}

/// Creates (or truncates) the log file, with its parent directories.
async fn open(path: &std::path::Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await?;
    }
    File::create(path).await
}

pub(crate) struct Capture {
    pub(crate) path: PathBuf,
    pub(crate) sink: Arc<dyn LogSink>,
    pub(crate) cap: Option<u64>,
}

/// Reads both pipes concurrently until both reach end of file or `stop`
/// fires (or its sender is dropped), then flushes what is left.
pub(crate) async fn capture(
    capture: Capture,
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    mut stop: oneshot::Receiver<()>,
) -> LogReport {
    let mut writer = LogWriter::new(capture);
    let mut out = PipeState::new(Stream::Stdout);
    let mut err = PipeState::new(Stream::Stderr);
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let mut lines = Vec::new();

    while out.open || err.open {
        // `read` is cancel-safe: the branch that loses the race has read
        // nothing, so no output is lost.
        tokio::select! {
            result = stdout.read(&mut out_buf), if out.open => {
                out.consume(result, &out_buf, &mut lines, &mut writer.warnings);
            }
            result = stderr.read(&mut err_buf), if err.open => {
                err.consume(result, &err_buf, &mut lines, &mut writer.warnings);
            }
            _ = &mut stop => break,
        }
        for (stream, text) in lines.drain(..) {
            writer.line(stream, text).await;
        }
        // Once per read rather than per line: followers of the file see
        // output promptly, at one write per pipe read.
        writer.flush().await;
    }

    for pipe in [&mut out, &mut err] {
        pipe.finish(&mut lines);
    }
    for (stream, text) in lines.drain(..) {
        writer.line(stream, text).await;
    }
    writer.flush().await;
    LogReport {
        warnings: writer.warnings,
    }
}

/// Captures output that arrives as chunks tagged with their stream (the
/// Docker attach protocol multiplexes stdout and stderr over one connection)
/// rather than as two pipes: the same line splitting, log file, cap and sink
/// as [`capture`].
pub(crate) struct ChunkCapture {
    writer: LogWriter,
    out: LineSplitter,
    err: LineSplitter,
    lines: Vec<(Stream, String)>,
}

impl ChunkCapture {
    pub(crate) fn new(capture: Capture) -> Self {
        ChunkCapture {
            writer: LogWriter::new(capture),
            out: LineSplitter::default(),
            err: LineSplitter::default(),
            lines: Vec::new(),
        }
    }

    /// Splits `bytes` into lines of `stream`, writes the completed ones and
    /// flushes, once per chunk as [`capture`] does once per read.
    pub(crate) async fn chunk(&mut self, stream: Stream, bytes: &[u8]) {
        let (splitter, lines) = match stream {
            Stream::Stdout => (&mut self.out, &mut self.lines),
            Stream::Stderr => (&mut self.err, &mut self.lines),
        };
        splitter.feed(bytes, &mut |text| lines.push((stream, text)));
        self.write_pending().await;
    }

    /// Something the outcome should mention, such as a broken stream.
    pub(crate) fn warn(&mut self, warning: String) {
        self.writer.warnings.push(warning);
    }

    /// Writes the unfinished last line of each stream and flushes.
    pub(crate) async fn finish(mut self) -> LogReport {
        let lines = &mut self.lines;
        self.out
            .finish(&mut |text| lines.push((Stream::Stdout, text)));
        self.err
            .finish(&mut |text| lines.push((Stream::Stderr, text)));
        self.write_pending().await;
        LogReport {
            warnings: self.writer.warnings,
        }
    }

    async fn write_pending(&mut self) {
        for (stream, text) in self.lines.drain(..) {
            self.writer.line(stream, text).await;
        }
        self.writer.flush().await;
    }
}

struct PipeState {
    stream: Stream,
    open: bool,
    splitter: LineSplitter,
}

impl PipeState {
    fn new(stream: Stream) -> Self {
        PipeState {
            stream,
            open: true,
            splitter: LineSplitter::default(),
        }
    }

    fn consume(
        &mut self,
        result: std::io::Result<usize>,
        buf: &[u8],
        lines: &mut Vec<(Stream, String)>,
        warnings: &mut Vec<String>,
    ) {
        let stream = self.stream;
        match result {
            Ok(0) => self.finish(lines),
            Ok(n) => self
                .splitter
                .feed(&buf[..n], &mut |text| lines.push((stream, text))),
            Err(error) => {
                warnings.push(format!("reading {}: {error}", stream.tag()));
                self.finish(lines);
            }
        }
    }

    fn finish(&mut self, lines: &mut Vec<(Stream, String)>) {
        let stream = self.stream;
        self.open = false;
        self.splitter.finish(&mut |text| lines.push((stream, text)));
    }
}

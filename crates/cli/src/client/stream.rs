//! Streaming one task's log from the server to the terminal, line by line:
//! never the whole log in memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::http::Api;
use super::lines::{Splitter, shown};
use super::out::Sink;

/// How to show the lines of one task's log.
#[derive(Clone, Debug)]
pub(crate) struct Show {
    pub(crate) sink: Sink,
    /// Put before each line (`build | `), or empty.
    pub(crate) prefix: String,
    pub(crate) timestamps: bool,
}

/// Streams a task's log (to its current end, or with `follow` until the
/// task ends). `printed` counts the lines shown so far: a stream opened
/// again for the same task skips that many, so a log read in several
/// pieces shows each line once.
pub(crate) async fn task_log(
    api: &Api,
    run: &str,
    task: &str,
    follow: bool,
    show: &Show,
    printed: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut url = api.url(&["runs", run, "tasks", task, "logs"]);
    if follow {
        url.query_pairs_mut().append_pair("follow", "true");
    }
    let mut response = api.open(url).await?;
    let skip = printed.load(Ordering::Relaxed);
    let mut seen = 0usize;
    let mut emit = |line: &str| -> anyhow::Result<()> {
        seen += 1;
        if seen > skip {
            show.sink
                .line(&format!("{}{}", show.prefix, shown(line, show.timestamps)))?;
            printed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    };
    let mut splitter = Splitter::default();
    while let Some(chunk) = api.chunk(&mut response).await? {
        for line in splitter.push(chunk.as_ref()) {
            emit(&line)?;
        }
    }
    if let Some(line) = splitter.finish() {
        emit(&line)?;
    }
    Ok(())
}

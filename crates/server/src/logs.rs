//! A task's log as an HTTP body: plain text, or Server-Sent Events.
//!
//! Both stream from the engine's bounded channel one chunk at a time, so a
//! log of any size costs the server one chunk of memory per reader, and a
//! slow reader only slows its own stream.

use std::convert::Infallible;
use std::future::Future;

use axum::body::{Body, Bytes};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use ganger_api::sse;
use ganger_engine::LogEvent;
use tokio::sync::mpsc;

/// The log as `text/plain`: the stored lines as they are, with a line
/// `--- attempt N ---` (or `--- undo ---`) where another attempt's output
/// begins. Ends with the task (when followed), the channel, or `stop`.
pub(crate) fn plain(
    rx: mpsc::Receiver<LogEvent>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Body {
    let chunks = stream::unfold(
        (rx, Sections::default()),
        |(mut rx, mut sections)| async move {
            match rx.recv().await? {
                LogEvent::Lines {
                    attempt,
                    undo,
                    text,
                } => {
                    let mut chunk = sections.header(attempt, undo).unwrap_or_default();
                    chunk.push_str(&text);
                    Some((Ok::<_, Infallible>(Bytes::from(chunk)), (rx, sections)))
                }
                LogEvent::End { .. } => None,
            }
        },
    );
    Body::from_stream(chunks.take_until(Box::pin(stop)))
}

/// The log as Server-Sent Events: event `line` per line (the same lines,
/// headers included, as [`plain`]), then event `end` with the task's final
/// status when it ended while followed.
pub(crate) fn events(
    rx: mpsc::Receiver<LogEvent>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    let batches = stream::unfold(Some((rx, Sections::default())), |state| async move {
        let (mut rx, mut sections) = state?;
        match rx.recv().await? {
            LogEvent::Lines {
                attempt,
                undo,
                text,
            } => {
                let header = sections.header(attempt, undo);
                let events: Vec<Event> = header
                    .iter()
                    .flat_map(|h| h.lines())
                    .chain(text.lines())
                    .map(line_event)
                    .collect();
                Some((events, Some((rx, sections))))
            }
            LogEvent::End { status } => {
                let end = Event::default().event(sse::END).data(one_line(&status));
                Some((vec![end], None))
            }
        }
    });
    let events = batches
        .flat_map(|batch| stream::iter(batch.into_iter().map(Ok)))
        .take_until(Box::pin(stop));
    // Comments every 15 s keep proxies from closing a quiet followed log.
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn line_event(line: &str) -> Event {
    Event::default().event(sse::LINE).data(one_line(line))
}

/// SSE cannot carry a carriage return inside data (axum panics on one):
/// a progress bar's `\r` becomes a space.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Tracks which attempt's output the stream is in, to announce a change.
#[derive(Default)]
struct Sections {
    current: Option<(u32, bool)>,
}

impl Sections {
    /// The line to write before a chunk of `attempt` (of the undo step when
    /// `undo`), if it starts a new section. The first attempt's output needs
    /// no header when it comes first: most tasks run once.
    fn header(&mut self, attempt: u32, undo: bool) -> Option<String> {
        let previous = self.current.replace((attempt, undo));
        if previous == Some((attempt, undo)) {
            return None;
        }
        if undo {
            let retried_undo = matches!(previous, Some((_, true))) || attempt > 1;
            return Some(if retried_undo {
                format!("--- undo attempt {attempt} ---\n")
            } else {
                "--- undo ---\n".to_owned()
            });
        }
        if previous.is_none() && attempt <= 1 {
            return None;
        }
        Some(format!("--- attempt {attempt} ---\n"))
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    fn lines(attempt: u32, undo: bool, text: &str) -> LogEvent {
        LogEvent::Lines {
            attempt,
            undo,
            text: text.to_owned(),
        }
    }

    async fn channel(events: Vec<LogEvent>) -> mpsc::Receiver<LogEvent> {
        let (tx, rx) = mpsc::channel(events.len().max(1));
        for e in events {
            tx.send(e).await.expect("receiver alive");
        }
        rx
    }

    async fn text(body: Body) -> String {
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[test]
    fn headers_mark_every_new_attempt_but_a_leading_first() {
        let mut s = Sections::default();
        assert_eq!(s.header(1, false), None);
        assert_eq!(s.header(1, false), None);
        assert_eq!(s.header(2, false).as_deref(), Some("--- attempt 2 ---\n"));
        assert_eq!(s.header(1, true).as_deref(), Some("--- undo ---\n"));
        assert_eq!(
            s.header(2, true).as_deref(),
            Some("--- undo attempt 2 ---\n")
        );

        let mut s = Sections::default();
        assert_eq!(s.header(3, false).as_deref(), Some("--- attempt 3 ---\n"));
    }

    #[tokio::test]
    async fn plain_text_streams_lines_with_attempt_headers() {
        let rx = channel(vec![
            lines(1, false, "t out a\n"),
            lines(2, false, "t out b\nt err c\n"),
            lines(1, true, "t out undone\n"),
            LogEvent::End {
                status: "failed".into(),
            },
        ])
        .await;
        assert_eq!(
            text(plain(rx, std::future::pending())).await,
            "t out a\n--- attempt 2 ---\nt out b\nt err c\n--- undo ---\nt out undone\n"
        );
    }

    #[tokio::test]
    async fn sse_sends_one_event_per_line_then_the_end() {
        let rx = channel(vec![
            lines(1, false, "t out a\nt out b\r\n"),
            lines(2, false, "t out c\rd\n"),
            LogEvent::End {
                status: "succeeded".into(),
            },
        ])
        .await;
        let body = text(
            events(rx, std::future::pending())
                .into_response()
                .into_body(),
        )
        .await;
        assert_eq!(
            body,
            "event: line\ndata: t out a\n\n\
             event: line\ndata: t out b\n\n\
             event: line\ndata: --- attempt 2 ---\n\n\
             event: line\ndata: t out c d\n\n\
             event: end\ndata: succeeded\n\n"
        );
    }

    #[tokio::test]
    async fn stop_ends_a_followed_stream() {
        // The sender stays open, as for a task still running.
        let (tx, rx) = mpsc::channel(4);
        tx.send(lines(1, false, "t out a\n")).await.expect("send");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let body = plain(rx, async move {
            let _ = stop_rx.await;
        });
        let reader = tokio::spawn(text(body));
        stop_tx.send(()).expect("reader alive");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the stream ended at stop")
            .expect("reader task");
        // Whether the first chunk got out before the stop is a race; the
        // stream ending is what matters.
        assert!(got.is_empty() || got == "t out a\n", "{got:?}");
        drop(tx);
    }
}

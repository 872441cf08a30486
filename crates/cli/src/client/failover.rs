//! The pure part of talking to several server replicas: in which order
//! they are tried, which failures move on to the next one, and when the
//! whole list is tried again.
//!
//! A request goes to the server that answered last (the preferred one)
//! first. A failure that says nothing was done (no connection could be
//! made, or `503`: the replica has no leader or no database) moves on to
//! the next server; a failure after which the request may have been acted
//! on (the connection broke off, no answer in time, a proxy's `502`/`504`)
//! moves on only for requests that may be sent twice. When no server
//! could answer and one of them said `503` with `Retry-After`, the list is
//! tried again a little later: a replica takes over within seconds when
//! the leader dies.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Waits between rounds are at most this (and at most `Retry-After`).
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(2);
/// … and at least this, so `Retry-After: 0` is no busy loop.
const SHORTEST_WAIT: Duration = Duration::from_millis(200);
/// Rounds are tried again for this long from the first try, then given up.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(30);

/// Whether a request may reach the server twice without harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Reads, and writes that are idempotent (a submission with an
    /// idempotency key, storing a job file).
    Safe,
    /// Sent again only when it surely was not acted on.
    Unsafe,
}

/// How one try failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made: the request was not sent.
    NotSent,
    /// The server, or a proxy before it, answered that it cannot serve
    /// (`502`, `503`, `504`). `retry_after` is the `Retry-After` of a `503`.
    Unavailable {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// The exchange broke off or timed out after the request may have
    /// been sent.
    Lost,
}

impl Failure {
    /// The failure an answer with `status` is, when it is one that is worth
    /// trying another server for.
    pub(crate) fn of_answer(status: StatusCode, headers: &HeaderMap) -> Option<Failure> {
        match status {
            StatusCode::SERVICE_UNAVAILABLE => Some(Failure::Unavailable {
                status,
                retry_after: headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(retry_after),
            }),
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Some(Failure::Unavailable {
                status,
                retry_after: None,
            }),
            _ => None,
        }
    }

    /// Whether the next server may be tried after this failure.
    pub(crate) fn fails_over(&self, replay: Replay) -> bool {
        match self {
            // Nothing was done: the request was not sent, or refused whole.
            Failure::NotSent => true,
            Failure::Unavailable { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                true
            }
            // A proxy's 502/504 or a broken exchange: the server may have
            // acted on the request.
            Failure::Unavailable { .. } | Failure::Lost => replay == Replay::Safe,
        }
    }
}

/// The servers to try, by index into the list of `count`: the preferred
/// one first, then the others in the order given, wrapping around.
pub(crate) fn order(preferred: usize, count: usize) -> impl Iterator<Item = usize> {
    let first = if count == 0 { 0 } else { preferred % count };
    (0..count).map(move |i| (first + i) % count)
}

/// After a round in which every server failed (each in a way that fails
/// over): how long to wait before trying them all again, or `None` to give
/// up. Another round is worth it only when a server said `503` with
/// `Retry-After` (it is up and expects to serve soon), and only while
/// `elapsed` since the first try, with the wait, stays within
/// [`RETRY_FOR`].
pub(crate) fn next_round(failures: &[Failure], elapsed: Duration) -> Option<Duration> {
    let wait = failures
        .iter()
        .filter_map(|f| match f {
            Failure::Unavailable {
                status,
                retry_after: Some(after),
            } if *status == StatusCode::SERVICE_UNAVAILABLE => Some(*after),
            _ => None,
        })
        .min()?
        .clamp(SHORTEST_WAIT, LONGEST_WAIT);
    (elapsed + wait <= RETRY_FOR).then_some(wait)
}

/// A `Retry-After` value: seconds, or an HTTP date, which is taken as the
/// longest wait between rounds rather than read.
fn retry_after(value: &str) -> Duration {
    value
        .trim()
        .parse::<u64>()
        .map_or(LONGEST_WAIT, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn unavailable(after: Option<u64>) -> Failure {
        Failure::Unavailable {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_preferred_server_goes_first_then_the_rest_in_turn() {
        assert_eq!(order(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(order(1, 3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(order(5, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(order(0, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(order(0, 0).count(), 0);
    }

    #[test]
    fn only_failures_that_did_nothing_fail_over_unsafe_requests() {
        let gateway = Failure::Unavailable {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
        };
        for f in [Failure::NotSent, unavailable(None), unavailable(Some(1))] {
            assert!(f.fails_over(Replay::Safe), "{f:?}");
            assert!(f.fails_over(Replay::Unsafe), "{f:?}");
        }
        for f in [Failure::Lost, gateway] {
            assert!(f.fails_over(Replay::Safe), "{f:?}");
            assert!(!f.fails_over(Replay::Unsafe), "{f:?}");
        }
    }

    #[test]
    fn answers_that_fail_over() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Failure::of_answer(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Some(unavailable(None))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(
            Failure::of_answer(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Some(unavailable(Some(1)))
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            Failure::of_answer(StatusCode::SERVICE_UNAVAILABLE, &headers),
            Some(unavailable(Some(2)))
        );
        for status in [StatusCode::BAD_GATEWAY, StatusCode::GATEWAY_TIMEOUT] {
            assert!(Failure::of_answer(status, &headers).is_some());
        }
        // Final answers: the request was judged, by a server that works.
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert_eq!(Failure::of_answer(status, &headers), None, "{status}");
        }
    }

    #[test]
    fn rounds_repeat_after_a_503_with_retry_after_for_a_while() {
        let zero = Duration::ZERO;
        // Nobody said when to come back: give up at once.
        assert_eq!(next_round(&[Failure::NotSent], zero), None);
        assert_eq!(next_round(&[unavailable(None)], zero), None);
        assert_eq!(next_round(&[Failure::Lost], zero), None);
        assert_eq!(next_round(&[], zero), None);
        // The smaller of Retry-After and 2s, and not less than 200ms.
        assert_eq!(
            next_round(&[unavailable(Some(1))], zero),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            next_round(&[unavailable(Some(30))], zero),
            Some(LONGEST_WAIT)
        );
        assert_eq!(
            next_round(&[unavailable(Some(0))], zero),
            Some(SHORTEST_WAIT)
        );
        assert_eq!(
            next_round(&[unavailable(Some(5)), unavailable(Some(1))], zero),
            Some(Duration::from_secs(1))
        );
        // A dead leader refuses connections while a replica says 503 until
        // it takes over: worth another round.
        assert_eq!(
            next_round(&[Failure::NotSent, unavailable(Some(2))], zero),
            Some(LONGEST_WAIT)
        );
        // Bounded in time.
        assert_eq!(
            next_round(&[unavailable(Some(2))], Duration::from_secs(28)),
            Some(LONGEST_WAIT)
        );
        assert_eq!(
            next_round(&[unavailable(Some(2))], Duration::from_secs(29)),
            None
        );
    }
}

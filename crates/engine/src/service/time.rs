//! The store keeps times as unix milliseconds; the core and the API use
//! timestamps.

use jiff::Timestamp;

pub(crate) fn now_millis() -> i64 {
    Timestamp::now().as_millisecond()
}

pub(crate) fn millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// Out-of-range values (a corrupt row) read as the epoch rather than fail
/// a whole listing.
pub(crate) fn from_millis(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

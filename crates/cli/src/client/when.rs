//! Times for people: `3m ago`, `1.2s`, local dates, and `--at` values.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use ganger_core::units::parse_duration;

/// How long ago `then` was, in the largest unit that fits: `12s ago`,
/// `3m ago`, `5h ago`, `2d ago`; a time ahead reads `in 3m`.
pub(crate) fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs();
    let span = coarse(secs.unsigned_abs());
    if secs < 0 {
        format!("in {span}")
    } else if secs == 0 {
        "just now".into()
    } else {
        format!("{span} ago")
    }
}

fn coarse(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A duration as `ganger run` shows it: `340ms`, `1.2s`, `2m05s`, `1h02m`.
pub(crate) fn took(d: SignedDuration) -> String {
    let ms = d.as_millis().max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// How long something ran: to its end, or to `now` while it runs.
pub(crate) fn span(
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    let started = started?;
    Some(took(finished.unwrap_or(now).duration_since(started)))
}

/// A time in the local time zone, to the second: `2026-05-01 14:03:07 CEST`.
pub(crate) fn local(t: Timestamp) -> String {
    in_zone(t, &TimeZone::system())
}

fn in_zone(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Parses `--at`: an RFC 3339 time, or a delay from `now` written `+5m`
/// or `in 5m`.
pub(crate) fn parse_at(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let text = text.trim();
    let delay = text
        .strip_prefix('+')
        .or_else(|| text.strip_prefix("in "))
        .map(str::trim);
    if let Some(delay) = delay {
        let d = parse_duration(delay).map_err(|e| format!("{e}"))?;
        let d = SignedDuration::try_from(d).map_err(|_| format!("`{delay}` is too far ahead"))?;
        return now
            .checked_add(d)
            .map_err(|_| format!("`{delay}` is too far ahead"));
    }
    text.parse::<Timestamp>().map_err(|_| {
        format!(
            "`{text}` is not a time; write an RFC 3339 time (2026-05-01T14:00:00Z, \
             2026-05-01T16:00:00+02:00) or a delay (+5m, in 1h30m)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn ago_picks_the_largest_unit() {
        let now = t("2026-05-01T12:00:00Z");
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(t("2026-05-01T11:59:48Z"), now), "12s ago");
        assert_eq!(ago(t("2026-05-01T11:57:00Z"), now), "3m ago");
        assert_eq!(ago(t("2026-05-01T07:00:00Z"), now), "5h ago");
        assert_eq!(ago(t("2026-04-28T12:00:00Z"), now), "3d ago");
        assert_eq!(ago(t("2026-05-01T12:05:00Z"), now), "in 5m");
    }

    #[test]
    fn took_reads_like_ganger_run() {
        let ms = SignedDuration::from_millis;
        assert_eq!(took(ms(340)), "340ms");
        assert_eq!(took(ms(1234)), "1.2s");
        assert_eq!(took(ms(125_000)), "2m05s");
        assert_eq!(took(ms(3_720_000)), "1h02m");
        assert_eq!(took(ms(-5)), "0ms");
    }

    #[test]
    fn at_takes_rfc3339_or_a_delay() {
        let now = t("2026-05-01T12:00:00Z");
        assert_eq!(parse_at("+5m", now), Ok(t("2026-05-01T12:05:00Z")));
        assert_eq!(parse_at("in 1h30m", now), Ok(t("2026-05-01T13:30:00Z")));
        assert_eq!(
            parse_at("2026-05-01T16:00:00+02:00", now),
            Ok(t("2026-05-01T14:00:00Z"))
        );
        let e = parse_at("tomorrow", now).err().unwrap_or_default();
        assert!(e.contains("RFC 3339") && e.contains("+5m"), "{e}");
        assert!(parse_at("+5 parsecs", now).is_err());
    }

    #[test]
    fn local_times_show_their_zone() {
        assert_eq!(
            in_zone(t("2026-05-01T12:00:00Z"), &TimeZone::UTC),
            "2026-05-01 12:00:00 UTC"
        );
    }
}

//! Just enough of `Accept` (RFC 9110 §12.5.1) to pick a representation:
//! which media ranges the client takes, ignoring those with `q=0`.

use axum::http::{HeaderMap, header};

/// Whether the client accepts `media` (`type/subtype`). No `Accept` header
/// accepts everything.
pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let mut ranges = ranges(headers).peekable();
    if ranges.peek().is_none() {
        return true;
    }
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    ranges.any(|range| {
        range == "*/*"
            || range.eq_ignore_ascii_case(media)
            || range
                .strip_suffix("/*")
                .is_some_and(|k| k.eq_ignore_ascii_case(kind))
    })
}

/// Whether the client names `media` itself (not through a wildcard).
pub(crate) fn names(headers: &HeaderMap, media: &str) -> bool {
    ranges(headers).any(|range| range.eq_ignore_ascii_case(media))
}

/// The media ranges of every `Accept` header with a non-zero quality.
fn ranges(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let range = parts.next()?.trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!range.is_empty() && !refused).then_some(range)
        })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn no_header_accepts_anything() {
        assert!(accepts(&HeaderMap::new(), "text/vnd.graphviz"));
        assert!(!names(&HeaderMap::new(), "text/event-stream"));
    }

    #[test]
    fn wildcards_and_exact_types_match() {
        assert!(accepts(&accept("*/*"), "text/vnd.graphviz"));
        assert!(accepts(&accept("text/*"), "text/vnd.graphviz"));
        assert!(accepts(
            &accept("image/svg+xml, text/vnd.graphviz;q=0.5"),
            "text/vnd.graphviz"
        ));
        assert!(!accepts(&accept("image/svg+xml"), "text/vnd.graphviz"));
        assert!(names(&accept("text/event-stream"), "text/event-stream"));
        assert!(!names(&accept("*/*"), "text/event-stream"));
    }

    #[test]
    fn zero_quality_refuses() {
        assert!(!accepts(
            &accept("text/vnd.graphviz;q=0, image/svg+xml"),
            "text/vnd.graphviz"
        ));
        assert!(!names(
            &accept("text/event-stream; q=0"),
            "text/event-stream"
        ));
    }
}

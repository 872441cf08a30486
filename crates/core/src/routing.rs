//! Routing: which agents may run a task. One rule, used by every store
//! backend when it hands out claims and by the engine when it says what a
//! ready task waits for.

/// Whether an agent with `labels` satisfies every tag: `k=v` needs label
/// `k=v`; a bare `k` needs label `k` or any `k=…`.
pub fn tags_match(tags: &[String], labels: &[String]) -> bool {
    tags.iter().all(|tag| {
        labels.iter().any(|label| {
            if label == tag {
                return true;
            }
            // A bare tag (no '=') matches any value of that label.
            !tag.contains('=')
                && label
                    .strip_prefix(tag.as_str())
                    .is_some_and(|rest| rest.starts_with('='))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tag_matching() {
        assert!(tags_match(&[], &[]));
        assert!(tags_match(&v(&["os=linux"]), &v(&["os=linux", "gpu"])));
        assert!(!tags_match(&v(&["os=linux"]), &v(&["os=mac"])));
        assert!(!tags_match(&v(&["os=linux"]), &v(&["os"])));
        assert!(tags_match(&v(&["gpu"]), &v(&["gpu=true"])));
        assert!(tags_match(&v(&["gpu"]), &v(&["gpu"])));
        assert!(!tags_match(&v(&["gpu"]), &v(&["gpus=2"])));
        assert!(!tags_match(&v(&["gpu", "os=linux"]), &v(&["gpu"])));
    }
}

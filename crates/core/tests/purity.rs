//! Architecture invariant: **the core does no I/O**. It must not depend on
//! an async runtime, a database, a network or process crate, and its source
//! must not touch files, processes, sockets, the environment or the clock.
//! This test fails the build the moment that changes.

use std::path::{Path, PathBuf};

/// Every dependency the core may have: pure computation only. Adding one
/// here is a design decision, to be made in review.
const ALLOWED_DEPENDENCIES: &[&str] = &[
    "croner",
    "jiff",
    "minijinja",
    "regex",
    "saphyr-parser",
    "serde",
    "serde_json",
    "shlex",
    "strsim",
    "thiserror",
];

/// Source patterns that mean I/O (or reading the clock, which is an input).
const FORBIDDEN_IN_SOURCE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread",
    "std::io::",
    "tokio",
    "sqlx",
    "SystemTime",
    "Instant::now",
    "Timestamp::now",
    "Zoned::now",
    "TimeZone::system",
    "TimeZone::get",
    "File::",
    "Command::",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            // Only the library's own dependencies count; dev-dependencies
            // (proptest) never reach users.
            in_deps = line == "[dependencies]"
                || line.starts_with("[dependencies.")
                || line.starts_with("[target.") && line.ends_with(".dependencies]");
            continue;
        }
        if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            // `serde.workspace = true` names `serde`.
            let name = name.trim().trim_matches('"');
            names.push(name.split('.').next().unwrap_or(name).to_owned());
        }
    }
    names
}

#[test]
fn core_depends_only_on_pure_crates() {
    let manifest = std::fs::read_to_string(manifest_dir().join("Cargo.toml"))
        .expect("core manifest is readable");
    let names = dependency_names(&manifest);
    assert!(
        names.contains(&"minijinja".to_owned()),
        "the manifest parser found no dependencies: {names:?}"
    );
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !ALLOWED_DEPENDENCIES.contains(&n.as_str()))
        .collect();
    assert!(
        foreign.is_empty(),
        "crates/core must stay pure (no tokio, sqlx, network, process or file crates), but it depends on {foreign:?}; \
         put I/O in crates/engine or crates/executor, or extend ALLOWED_DEPENDENCIES after review"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("source dir is readable")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_source_does_no_io() {
    let mut files = Vec::new();
    rust_files(&manifest_dir().join("src"), &mut files);
    assert!(
        files.len() > 5,
        "expected the core's source files, found {files:?}"
    );
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source file is readable");
        // Test modules may use what they like; only shipped code is checked.
        let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in shipped.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for pattern in FORBIDDEN_IN_SOURCE {
                if code.contains(pattern) {
                    found.push(format!(
                        "{}:{}: `{pattern}` in: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "crates/core must do no I/O and read no clock:\n{}",
        found.join("\n")
    );
}

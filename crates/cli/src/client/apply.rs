//! `ganger apply FILE...`: upload job files. The server validates each
//! file and stores it whole or not at all; the files are sent one by one,
//! and the first one refused stops the rest.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use ganger_api::{ApplyResponse, JobVersion};
use ganger_core::yaml::Limits;
use reqwest::StatusCode;

use super::conn::ConnArgs;
use super::http::{Api, ApiError};
use super::out::{self, Sink};
use crate::exit;

#[derive(Args)]
pub(crate) struct ApplyArgs {
    /// Job files to upload.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the server's answers as JSON (one `ApplyResponse` per file, in a list).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn main(args: ApplyArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let mut stored: Vec<&Path> = Vec::new();
    let mut answers = Vec::new();
    for (i, path) in args.files.iter().enumerate() {
        let not_sent = &args.files[i + 1..];
        let result = upload(&api, path).await;
        match result {
            Ok(answer) => {
                if !args.json {
                    for job in &answer.jobs {
                        Sink::Stdout.line(&describe(job))?;
                    }
                }
                answers.push(answer);
                stored.push(path);
            }
            Err(e) => {
                match e.downcast_ref::<ApiError>() {
                    // An invalid file: its problems, one per line, as
                    // `ganger validate` prints them.
                    Some(ApiError::Refused {
                        status,
                        code,
                        message,
                        details,
                        ..
                    }) if *status == StatusCode::UNPROCESSABLE_ENTITY
                        || code == ganger_api::code::INVALID_JOB =>
                    {
                        eprintln!("error: {message}");
                        for d in details {
                            eprintln!("{d}");
                        }
                    }
                    _ => eprintln!("error: {}: {e:#}", path.display()),
                }
                eprint!("{}", partial(&stored, path, not_sent));
                if args.json {
                    out::json(&answers)?;
                }
                return Ok(exit::INVALID);
            }
        }
    }
    if args.json {
        out::json(&answers)?;
    }
    Ok(exit::SUCCESS)
}

async fn upload(api: &Api, path: &Path) -> anyhow::Result<ApplyResponse> {
    let text = read(path)?;
    let name = path.display().to_string();
    Ok(api.post_yaml(api.url(&["jobs"]), &name, text).await?)
}

/// Reads a job file, refusing one larger than the server would take
/// without reading it whole.
fn read(path: &Path) -> anyhow::Result<String> {
    let limit = Limits::default().max_bytes;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open job file {}", path.display()))?;
    let mut text = String::new();
    file.take(limit as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| {
            format!(
                "cannot read job file {} (is it UTF-8 text?)",
                path.display()
            )
        })?;
    if text.len() > limit {
        anyhow::bail!(
            "job file {} is larger than {limit} bytes, the most a job file may hold; split it",
            path.display()
        );
    }
    Ok(text)
}

/// `job build: version 3 (created)`.
fn describe(job: &JobVersion) -> String {
    let what = if job.created { "created" } else { "unchanged" };
    format!("job {}: version {} ({what})", job.name, job.version)
}

/// What was and was not stored when an upload stopped at `failed`.
fn partial(stored: &[&Path], failed: &Path, not_sent: &[PathBuf]) -> String {
    let list = |paths: &mut dyn Iterator<Item = &Path>| {
        paths
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("{} was not stored", failed.display());
    if !stored.is_empty() {
        text.push_str(&format!(
            "; stored before it: {}",
            list(&mut stored.iter().copied())
        ));
    }
    if !not_sent.is_empty() {
        text.push_str(&format!(
            "; not sent: {}",
            list(&mut not_sent.iter().map(PathBuf::as_path))
        ));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_created_or_unchanged() {
        let mut job = JobVersion {
            name: "build".into(),
            version: 3,
            digest: "d".into(),
            created: true,
            created_at: jiff::Timestamp::UNIX_EPOCH,
        };
        assert_eq!(describe(&job), "job build: version 3 (created)");
        job.created = false;
        assert_eq!(describe(&job), "job build: version 3 (unchanged)");
    }

    #[test]
    fn says_what_was_stored_when_stopped() {
        let a = Path::new("a.yml");
        let b = Path::new("b.yml");
        assert_eq!(partial(&[], a, &[]), "a.yml was not stored\n");
        assert_eq!(
            partial(&[a], b, &[PathBuf::from("c.yml"), PathBuf::from("d.yml")]),
            "b.yml was not stored; stored before it: a.yml; not sent: c.yml, d.yml\n"
        );
    }

    #[test]
    fn refuses_oversized_files_without_reading_them_whole() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("big.yml");
        std::fs::write(&path, vec![b'#'; Limits::default().max_bytes + 10])?;
        let e = read(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("larger than"), "{e}");
        let e = read(&dir.path().join("missing.yml"))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("cannot open job file"), "{e}");
        Ok(())
    }
}

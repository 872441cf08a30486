//! Reading job files from disk.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use ganger_core::model::{Job, JobFile};
use ganger_core::yaml::Limits;
use ganger_core::{Diagnostics, parse_job_file};

pub(crate) enum Loaded {
    Valid(JobFile),
    Invalid(Diagnostics),
}

/// Reads and validates one file. I/O problems are errors; problems in the
/// file's content are diagnostics.
pub(crate) fn load(path: &Path) -> anyhow::Result<Loaded> {
    let limit = Limits::default().max_bytes;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open job file {}", path.display()))?;
    let mut text = String::new();
    // Read one byte past the limit so an oversized file is refused by the
    // parser without being read whole.
    file.take(limit as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| {
            format!(
                "cannot read job file {} (is it UTF-8 text?)",
                path.display()
            )
        })?;
    Ok(match parse_job_file(&path.display().to_string(), &text) {
        Ok(jobs) => Loaded::Valid(jobs),
        Err(diags) => Loaded::Invalid(diags),
    })
}

/// The job to run: the one named, or the only one in the file.
pub(crate) fn pick(file: JobFile, name: Option<&str>, path: &Path) -> anyhow::Result<Job> {
    let names: Vec<String> = file.jobs.iter().map(|j| j.name.clone()).collect();
    match name {
        Some(name) => match file.jobs.into_iter().find(|j| j.name == name) {
            Some(job) => Ok(job),
            None => bail!(
                "{} has no job `{name}`; it defines: {}",
                path.display(),
                names.join(", ")
            ),
        },
        None if file.jobs.len() == 1 => {
            Ok(file.jobs.into_iter().next().context("file has no job")?)
        }
        None => bail!(
            "{} defines several jobs ({}); name the one to run: ganger run {} <JOB>",
            path.display(),
            names.join(", "),
            path.display()
        ),
    }
}

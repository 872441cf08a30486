//! `ganger jobs [JOB]` and `ganger graph JOB`: the stored definitions.

use anyhow::bail;
use clap::Args;
use ganger_api::{JobDetail, JobList, JobSummary};
use jiff::Timestamp;

use super::conn::ConnArgs;
use super::out::{self, Sink};
use super::table::{Table, terminal_width};
use super::when::ago;
use crate::exit;

#[derive(Args)]
pub(crate) struct JobsArgs {
    /// Show this job's versions instead of listing every job.
    job: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Args)]
pub(crate) struct GraphArgs {
    /// The job.
    job: String,
    /// Ask the server for SVG instead of DOT.
    #[arg(long)]
    svg: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn main(args: JobsArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let now = Timestamp::now();
    if let Some(name) = &args.job {
        let job: JobDetail = api.get(api.url(&["jobs", name])).await?;
        if args.json {
            out::json(&job)?;
        } else {
            Sink::Stdout.text(&versions(&job, now).render(terminal_width()))?;
        }
        return Ok(exit::SUCCESS);
    }
    let list: JobList = api.get(api.url(&["jobs"])).await?;
    if args.json {
        out::json(&list)?;
    } else if list.jobs.is_empty() {
        Sink::Stdout.line("no jobs yet; upload some with `ganger apply FILE`")?;
    } else {
        Sink::Stdout.text(&jobs(&list.jobs, now).render(terminal_width()))?;
    }
    Ok(exit::SUCCESS)
}

pub(crate) async fn graph(args: GraphArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let accept = if args.svg {
        "image/svg+xml"
    } else {
        "text/vnd.graphviz, text/plain"
    };
    let (kind, mut text) = api
        .get_text(api.url(&["jobs", &args.job, "graph"]), accept)
        .await?;
    if args.svg && !kind.starts_with("image/svg") {
        bail!(
            "the server sent `{kind}` rather than SVG; it may not render SVG: \
             run `ganger graph {0}` for DOT and render it with `dot -Tsvg`",
            args.job
        );
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Sink::Stdout.text(&text)?;
    Ok(exit::SUCCESS)
}

fn jobs(jobs: &[JobSummary], now: Timestamp) -> Table {
    let mut t = Table::new(&["NAME", "VERSION", "TASKS", "UPDATED", "DESCRIPTION"]);
    for j in jobs {
        t.row(vec![
            j.name.clone(),
            j.version.to_string(),
            j.tasks.len().to_string(),
            ago(j.updated_at, now),
            j.description.clone().unwrap_or_default(),
        ]);
    }
    t
}

fn versions(job: &JobDetail, now: Timestamp) -> Table {
    let mut t = Table::new(&["JOB", "VERSION", "CREATED", "DIGEST"]);
    for v in &job.versions {
        t.row(vec![
            v.name.clone(),
            v.version.to_string(),
            ago(v.created_at, now),
            v.digest.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_rows_count_tasks() {
        let now: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap_or_default();
        let job = JobSummary {
            name: "build".into(),
            version: 3,
            description: Some("Build and test\none branch".into()),
            tasks: vec!["checkout".into(), "test".into()],
            updated_at: "2026-05-01T10:00:00Z".parse().unwrap_or_default(),
        };
        assert_eq!(
            jobs(&[job], now).render(None),
            "NAME   VERSION  TASKS  UPDATED  DESCRIPTION\n\
             build  3        2      2h ago   Build and test one branch\n"
        );
    }
}

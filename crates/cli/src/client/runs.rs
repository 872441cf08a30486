//! `ganger runs`: the runs, newest first, one page or (`--all`) every page.

use clap::Args;
use ganger_api::{RunList, RunSummary};
use jiff::Timestamp;

use super::conn::ConnArgs;
use super::http::Api;
use super::out::{self, Sink};
use super::table::{Table, terminal_width};
use super::when::{ago, span};
use crate::exit;

/// Runs per page when none is asked for.
const PAGE: u32 = 20;
/// Runs per page with `--all` and no `--limit`.
const ALL_PAGE: u32 = 200;

#[derive(Args)]
pub(crate) struct RunsArgs {
    /// Only runs of this job.
    #[arg(long, value_name = "JOB")]
    job: Option<String>,
    /// Only runs in this state.
    #[arg(long, value_name = "STATUS", value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
    status: Option<String>,
    /// Runs to list (with --all: runs per request) [default: 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Every matching run, following the pages to the end.
    #[arg(long)]
    all: bool,
    /// Print the API's JSON (with --all, every run in one list).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn main(args: RunsArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let page_size = args.limit.unwrap_or(if args.all { ALL_PAGE } else { PAGE });
    let mut runs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = page(&api, &args, page_size, cursor.as_deref()).await?;
        runs.extend(page.runs);
        // A cursor that does not move would page forever.
        if page.next_cursor.is_some() && page.next_cursor == cursor {
            anyhow::bail!("the server sent the same page cursor twice; cannot list further");
        }
        cursor = page.next_cursor;
        if !args.all || cursor.is_none() {
            break;
        }
    }
    if args.json {
        out::json(&RunList {
            runs,
            next_cursor: cursor,
        })?;
        return Ok(exit::SUCCESS);
    }
    if runs.is_empty() {
        let filtered = args.job.is_some() || args.status.is_some();
        Sink::Stdout.line(if filtered {
            "no runs match"
        } else {
            "no runs yet"
        })?;
        return Ok(exit::SUCCESS);
    }
    Sink::Stdout.text(&table(&runs, Timestamp::now()).render(terminal_width()))?;
    if cursor.is_some() {
        eprintln!("(more runs: --all lists them all, --limit N shows more)");
    }
    Ok(exit::SUCCESS)
}

async fn page(
    api: &Api,
    args: &RunsArgs,
    limit: u32,
    cursor: Option<&str>,
) -> anyhow::Result<RunList> {
    let mut url = api.url(&["runs"]);
    {
        let mut q = url.query_pairs_mut();
        if let Some(job) = &args.job {
            q.append_pair("job", job);
        }
        if let Some(status) = &args.status {
            q.append_pair("status", status);
        }
        q.append_pair("limit", &limit.to_string());
        if let Some(cursor) = cursor {
            q.append_pair("cursor", cursor);
        }
    }
    Ok(api.get(url).await?)
}

fn table(runs: &[RunSummary], now: Timestamp) -> Table {
    let mut t = Table::new(&["ID", "JOB", "STATUS", "CREATED", "DURATION", "REASON"]);
    for r in runs {
        let duration = span(r.started_at, r.finished_at, now).unwrap_or_default();
        let mut reason = r.reason.clone().unwrap_or_default();
        if let Some(at) = r
            .scheduled_at
            .filter(|at| reason.is_empty() && r.status == "queued" && *at > now)
        {
            reason = format!("scheduled {}", ago(at, now));
        }
        t.row(vec![
            r.id.clone(),
            format!("{} v{}", r.job, r.version),
            r.status.clone(),
            ago(r.created_at, now),
            duration,
            reason,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    fn summary(id: &str, status: &str) -> RunSummary {
        RunSummary {
            id: id.into(),
            job: "build".into(),
            version: 2,
            status: status.into(),
            priority: 0,
            reason: None,
            created_at: ts("2026-05-01T11:57:00Z"),
            scheduled_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn rows_say_age_duration_and_reason() {
        let now = ts("2026-05-01T12:00:00Z");
        let mut done = summary("r2", "failed");
        done.started_at = Some(ts("2026-05-01T11:57:01Z"));
        done.finished_at = Some(ts("2026-05-01T11:57:03.5Z"));
        done.reason = Some("task `test` failed".into());
        let mut later = summary("r1", "queued");
        later.scheduled_at = Some(ts("2026-05-01T12:05:00Z"));
        let text = table(&[done, later], now).render(None);
        assert_eq!(
            text,
            "ID  JOB       STATUS  CREATED  DURATION  REASON\n\
             r2  build v2  failed  3m ago   2.5s      task `test` failed\n\
             r1  build v2  queued  3m ago             scheduled in 5m\n"
        );
    }
}

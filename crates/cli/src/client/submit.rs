//! `ganger submit JOB`: start a run of a stored job, and with `--wait` or
//! `--follow` watch it to its end.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;
use ganger_api::{SubmitRequest, SubmitResponse};
use jiff::Timestamp;

use super::conn::ConnArgs;
use super::http::{Api, Replay};
use super::key_value;
use super::out::{self, Sink};
use super::watch::{Follow, exit_code, summary, watch};
use super::when::parse_at;
use crate::exit;

#[derive(Args)]
pub(crate) struct SubmitArgs {
    /// The job to run.
    job: String,
    /// A parameter, as key=value (repeatable).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
    params: Vec<(String, String)>,
    #[command(flatten)]
    watch: WatchArgs,
    /// Higher runs first when runs wait for room [default: the job's].
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Start no earlier than this: an RFC 3339 time, or a delay like +5m or "in 1h".
    #[arg(long, value_name = "TIME", value_parser = at_from_now)]
    at: Option<Timestamp>,
    /// Submitting again with the same key returns the first run instead of starting another.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `--wait`, `--follow` and `--json`, shared with `ganger exec`.
#[derive(Args, Clone, Copy, Debug)]
pub(crate) struct WatchArgs {
    /// Wait for the run to end; exit 0 when it succeeded, 1 when it failed, 130 when cancelled.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Like --wait, and print the tasks' output and state changes meanwhile.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// Print JSON for scripts: the submitted run, or with --wait the finished run's details.
    #[arg(long)]
    pub(crate) json: bool,
}

fn at_from_now(s: &str) -> Result<Timestamp, String> {
    parse_at(s, Timestamp::now())
}

pub(crate) async fn main(args: SubmitArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let request = SubmitRequest {
        job: args.job,
        params: params(args.params)?,
        priority: args.priority,
        scheduled_at: args.at,
        idempotency_key: args.idempotency_key,
    };
    let answer = send(&api, request).await?;
    report(&api, &answer, args.watch).await
}

/// Submits a run exactly once, though the request may be sent to several
/// servers (one that broke off may have stored it): without a key of the
/// user's, the submission carries one made for this invocation. A run
/// found by that key is the one this invocation started, not an earlier one.
pub(crate) async fn send(api: &Api, mut request: SubmitRequest) -> anyhow::Result<SubmitResponse> {
    let own_key = request.idempotency_key.is_none();
    if own_key {
        request.idempotency_key = Some(invocation_key());
    }
    let mut answer: SubmitResponse = api.post(api.url(&["runs"]), &request, Replay::Safe).await?;
    if own_key {
        answer.existing = false;
    }
    Ok(answer)
}

/// An idempotency key for one invocation: 128 random bits (from the time
/// and process id, should the system's random source fail).
fn invocation_key() -> String {
    match ganger_server::token::generate() {
        Ok(random) => format!("ganger-cli-{}", &random[..32]),
        Err(_) => format!(
            "ganger-cli-{}-{}",
            Timestamp::now().as_nanosecond(),
            std::process::id()
        ),
    }
}

/// Parameters as a map; a key given twice is a mistake, not an override.
fn params(pairs: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v).is_some() {
            bail!("param `{k}` is given twice; give each -p key once");
        }
    }
    Ok(map)
}

/// Says what was submitted, and with `--wait`/`--follow` watches the run
/// and returns its outcome as the exit code.
pub(crate) async fn report(
    api: &Api,
    answer: &SubmitResponse,
    how: WatchArgs,
) -> anyhow::Result<u8> {
    let watching = how.wait || how.follow;
    // With --json, stdout carries one JSON document: the submission, or
    // the finished run when watching. Everything for people goes to stderr.
    let people = if how.json { Sink::Stderr } else { Sink::Stdout };
    if how.json && !watching {
        out::json(answer)?;
    } else {
        let mut line = format!("run {}: {}", answer.id, answer.status);
        if answer.existing {
            line.push_str(" (an existing run with this idempotency key; nothing new was started)");
        }
        people.line(&line)?;
    }
    if !watching {
        return Ok(exit::SUCCESS);
    }
    let follow = how.follow.then_some(Follow {
        sink: people,
        logs: true,
        states: true,
        timestamps: false,
        shown: Some(answer.status.clone()),
    });
    let run = watch(api, &answer.id, follow).await?;
    people.text(&summary(&run))?;
    if how.json {
        out::json(&run)?;
    }
    Ok(exit_code(&run.summary.status))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SubmitArgs,
    }

    #[test]
    fn parses_the_documented_flags() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "submit",
            "build",
            "-p",
            "branch=main",
            "--param",
            "v=1=2",
            "--follow",
            "--priority",
            "-3",
            "--at",
            "+5m",
            "--idempotency-key",
            "k",
            "--json",
        ])?;
        let a = cli.args;
        assert_eq!(a.job, "build");
        assert_eq!(
            a.params,
            [("branch".into(), "main".into()), ("v".into(), "1=2".into())]
        );
        assert!(a.watch.follow && a.watch.json && !a.watch.wait);
        assert_eq!(a.priority, Some(-3));
        assert!(a.at.is_some_and(|t| t > Timestamp::now()));
        assert_eq!(a.idempotency_key.as_deref(), Some("k"));
        assert!(Cli::try_parse_from(["submit", "build", "-p", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["submit", "build", "--at", "soon"]).is_err());
        Ok(())
    }

    #[tokio::test]
    async fn each_submission_carries_an_idempotency_key() -> anyhow::Result<()> {
        use crate::client::testserver::{Reply, TestServer};

        // The first server took the submission but broke off before its
        // answer; the second finds the run by the key.
        let lost = TestServer::start(|_| Reply::HangUp).await?;
        let found = TestServer::start(|_| {
            Reply::json(200, r#"{"id":"r1","status":"queued","existing":true}"#)
        })
        .await?;
        let cli = Cli::try_parse_from([
            "submit",
            "build",
            "--addr",
            &format!("{},{}", lost.addr, found.addr),
        ])?;
        let api = cli.args.conn.connect()?;
        let request = SubmitRequest {
            job: "build".into(),
            ..SubmitRequest::default()
        };
        let answer = send(&api, request.clone()).await?;
        assert!(!answer.existing, "the run this invocation started");
        let key = |server: &TestServer, i: usize| -> Option<String> {
            let sent = server.requests.lock().ok()?.get(i)?.clone();
            let body: serde_json::Value =
                serde_json::from_str(sent.split("\r\n\r\n").nth(1)?).ok()?;
            body["idempotency_key"].as_str().map(str::to_owned)
        };
        let first = key(&lost, 0).unwrap_or_default();
        assert!(
            first.starts_with("ganger-cli-") && first.len() == 43,
            "{first}"
        );
        assert_eq!(
            key(&found, 0),
            Some(first.clone()),
            "the same key on each try"
        );
        // Another invocation, another key; a key of the user's is kept, and
        // so is what the server says of it.
        let answer = send(&api, request.clone()).await?;
        assert!(key(&found, 1).is_some_and(|k| k != first));
        assert!(!answer.existing);
        let mine = SubmitRequest {
            idempotency_key: Some("deploy-42".into()),
            ..request
        };
        let answer = send(&api, mine).await?;
        assert_eq!(key(&found, 2).as_deref(), Some("deploy-42"));
        assert!(answer.existing);
        Ok(())
    }

    #[test]
    fn a_param_given_twice_is_refused() {
        let twice = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert!(params(twice).is_err());
        let once = vec![("a".into(), "1".into())];
        assert_eq!(
            params(once)
                .ok()
                .and_then(|m| m.get("a").cloned())
                .as_deref(),
            Some("1")
        );
    }
}

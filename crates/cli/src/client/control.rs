//! `ganger cancel RUN` and `ganger retry RUN`.

use clap::Args;
use ganger_api::RunSummary;

use super::conn::ConnArgs;
use super::out::{self, Sink};
use super::watch::is_terminal;
use crate::exit;

#[derive(Args)]
pub(crate) struct ControlArgs {
    /// The run's id.
    run: String,
    /// Print the run's new state as the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Clone, Copy)]
pub(crate) enum Action {
    Cancel,
    Retry,
}

pub(crate) async fn main(args: ControlArgs, action: Action) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let verb = match action {
        Action::Cancel => "cancel",
        Action::Retry => "retry",
    };
    let run: RunSummary = api.post_empty(api.url(&["runs", &args.run, verb])).await?;
    if args.json {
        out::json(&run)?;
    } else {
        Sink::Stdout.line(&describe(&run, action))?;
    }
    Ok(exit::SUCCESS)
}

/// `run ID: cancelled (cancelled by a user)`.
fn describe(run: &RunSummary, action: Action) -> String {
    let mut line = format!("run {}: {}", run.id, run.status);
    if let Some(reason) = run.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" ({reason})"));
    }
    // A running run ends once its tasks have been stopped, which takes up
    // to their kill grace: say so rather than seem to have done nothing.
    if matches!(action, Action::Cancel) && !is_terminal(&run.status) {
        line.push_str(&format!(
            "; cancelling: its tasks are being stopped (`ganger status {}` shows when it ends)",
            run.id
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_the_new_status_and_why() {
        let mut run = RunSummary {
            id: "r1".into(),
            job: "build".into(),
            version: 1,
            status: "running".into(),
            priority: 0,
            reason: None,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            scheduled_at: None,
            started_at: None,
            finished_at: None,
        };
        assert_eq!(describe(&run, Action::Retry), "run r1: running");
        assert!(describe(&run, Action::Cancel).starts_with("run r1: running; cancelling: "));
        run.status = "cancelled".into();
        run.reason = Some("cancelled by a user".into());
        assert_eq!(
            describe(&run, Action::Cancel),
            "run r1: cancelled (cancelled by a user)"
        );
    }
}

//! `ganger agents`: the agents, their labels and slots.

use clap::Args;
use ganger_api::{AgentList, AgentView};
use jiff::Timestamp;

use super::conn::ConnArgs;
use super::out::{self, Sink};
use super::table::{Table, terminal_width};
use super::when::ago;
use crate::exit;

#[derive(Args)]
pub(crate) struct AgentsArgs {
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn main(args: AgentsArgs) -> anyhow::Result<u8> {
    let api = args.conn.connect()?;
    let list: AgentList = api.get(api.url(&["agents"])).await?;
    if args.json {
        out::json(&list)?;
    } else if list.agents.is_empty() {
        Sink::Stdout.line("no agents; start one with `ganger agent --server URL`")?;
    } else {
        Sink::Stdout.text(&table(&list.agents, Timestamp::now()).render(terminal_width()))?;
    }
    Ok(exit::SUCCESS)
}

fn table(agents: &[AgentView], now: Timestamp) -> Table {
    // Labels last: the column that may be long, and is cut to fit.
    let mut t = Table::new(&["NAME", "STATE", "SLOTS", "LAST HEARTBEAT", "LABELS"]);
    for a in agents {
        t.row(vec![
            a.name.clone(),
            a.state.clone(),
            format!("{}/{}", a.slots_in_use, a.slots),
            ago(a.last_heartbeat, now),
            a.labels.join(","),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_slots_in_use_of_total() {
        let now: Timestamp = "2026-05-01T12:00:00Z".parse().unwrap_or_default();
        let agent = AgentView {
            name: "local".into(),
            state: "online".into(),
            labels: vec!["os=linux".into(), "gpu".into()],
            executors: vec!["process".into()],
            slots: 8,
            slots_in_use: 3,
            last_heartbeat: "2026-05-01T11:59:55Z".parse().unwrap_or_default(),
        };
        assert_eq!(
            table(&[agent], now).render(None),
            "NAME   STATE   SLOTS  LAST HEARTBEAT  LABELS\n\
             local  online  3/8    5s ago          os=linux,gpu\n"
        );
    }
}
